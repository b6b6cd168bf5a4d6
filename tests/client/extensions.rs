//! Negotiated extensions: v1 peers never see them, our client falls back on
//! v1 servers, confirmed login, `who` and presence.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::common::{
    client_command, hex, message, run_client, Follower, Frame, RawClient, ServerProcess,
};
use crate::eqnice;

#[test]
fn a_raw_v1_client_never_sees_an_extension_frame() {
    let mut server = ServerProcess::start(&[]);
    let mut v1 = server.login("v1");
    // Presence watchers come and go around it.
    let watcher = Follower::start(&mut server, "watcher", &["--json"]);
    let run = run_client(
        {
            let mut c = client_command(server.port, "passerby");
            c.arg("--json");
            c
        },
        b"send v1 hello from an extended client\nwho\n",
    );
    eqnice!(0, run.status);
    drop(watcher);
    let _late = server.login("late");
    // Exactly the v1 bytes, in order, and nothing else before them.
    let content = b"hello from an extended client";
    let mut expected = hex("000000080000");
    expected[5] = content.len() as u8;
    expected.extend_from_slice(b"passerby");
    expected.extend_from_slice(content);
    eqnice!(expected.clone(), v1.read_exact(expected.len()));
    v1.send("v1", "marker");
    eqnice!(Frame::msg("v1", "marker"), v1.frame());
    v1.expect_silence(Duration::from_millis(200));
    // WHO without HELLO is an unknown opcode, as it is to a v1 server.
    v1.write(&[0, 3, 0, 0, 0, 0]);
    eqnice!(Frame::err("unknown opcode 3\n"), v1.frame());
}

/// A minimal v1-only server: one user named `echo` who answers every
/// message; anything else (HELLO included) is `'NAME' is not connected`.
fn v1_only_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            thread::spawn(move || serve_v1(stream));
        }
    });
    port
}

fn serve_v1(mut stream: TcpStream) {
    let mut len = [0u8; 1];
    if stream.read_exact(&mut len).is_err() {
        return;
    }
    let mut name = vec![0; len[0] as usize];
    if stream.read_exact(&mut name).is_err() {
        return;
    }
    loop {
        let mut header = [0u8; 6];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        // The original ignores the opcode: every frame is a message.
        let to_len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let content_len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let mut body = vec![0; to_len + content_len];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let (to, content) = body.split_at(to_len);
        let reply = if to == b"echo" {
            let mut frame = vec![0, 0, 0, 4];
            frame.extend_from_slice(&(content.len() as u16).to_be_bytes());
            frame.extend_from_slice(b"echo");
            frame.extend_from_slice(content);
            frame
        } else {
            let text = format!("'{}' is not connected\n", String::from_utf8_lossy(to));
            let mut frame = vec![0, 1];
            frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
            frame.extend_from_slice(text.as_bytes());
            frame
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

#[test]
fn our_client_falls_back_silently_on_a_v1_server() {
    let port = v1_only_server();
    let run = run_client(client_command(port, "alice"), b"send echo hello v1\n");
    eqnice!("", run.stderr);
    eqnice!("echo: hello v1\n", run.stdout);
    eqnice!(0, run.status);
    let run = run_client(
        client_command(port, "alice"),
        b"who\nsend echo still works\n",
    );
    eqnice!(
        "<stdin>:1: who is not supported by this server\n",
        run.stderr
    );
    eqnice!("echo: still works\n", run.stdout);
    eqnice!(1, run.status);
}

#[test]
fn against_a_v1_server_a_script_ends_as_it_always_did() {
    let port = v1_only_server();
    let run = run_client(
        {
            let mut c = client_command(port, "alice");
            c.args(["--drain-timeout", "300ms"]);
            c
        },
        b"send dave anyone\nsend echo still here\n",
    );
    // No receipts: the error frame as it comes, and the drain timeout.
    eqnice!("chat-client: error: 'dave' is not connected\n", run.stderr);
    eqnice!("echo: still here\n", run.stdout);
    eqnice!(1, run.status);
}

#[test]
fn a_taken_name_sends_nothing_and_exits_3() {
    let mut server = ServerProcess::start(&[]);
    let _alice = server.login("alice");
    let mut bob = server.login("bob");
    let run = run_client(
        client_command(server.port, "alice"),
        b"send bob must not arrive\n",
    );
    eqnice!(3, run.status);
    eqnice!("chat-client: error: Username is taken\n", run.stderr);
    bob.expect_silence(Duration::from_millis(300));
}

#[test]
fn who_lists_the_online_users_sorted() {
    let mut server = ServerProcess::start(&[]);
    let _carol = server.login("carol");
    let _bob = server.login("bob");
    let run = run_client(client_command(server.port, "alice"), b"who\n");
    eqnice!(0, run.status);
    eqnice!("alice\nbob\ncarol\n", run.stdout);
    // The console agrees (alice has left by now).
    eqnice!(vec!["bob".to_string(), "carol".to_string()], server.users());
    let run = run_client(
        {
            let mut c = client_command(server.port, "dave");
            c.arg("--json");
            c
        },
        b"who\n",
    );
    let value: serde_json::Value = serde_json::from_str(run.stdout.trim_end()).unwrap();
    eqnice!(
        serde_json::json!({"type": "online", "users": ["bob", "carol", "dave"]}),
        value
    );
}

#[test]
fn who_pages_five_thousand_users() {
    let mut server = ServerProcess::start(&[]);
    let names: Vec<String> = (0..5000)
        .map(|i| format!("user-{i:04}-with-a-longer-name"))
        .collect();
    let mut clients = Vec::new();
    for name in &names {
        let mut client = RawClient::open(server.port);
        client.handshake(name.as_bytes());
        clients.push(client);
    }
    // Logins are served concurrently: the last name online does not mean
    // every other one is yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.users().len() < 5000 {
        assert!(
            std::time::Instant::now() < deadline,
            "not all 5000 logged in"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eqnice!(5000, server.users().len());
    let run = run_client(client_command(server.port, "zz-asker"), b"who\n");
    eqnice!(0, run.status);
    let listed: Vec<&str> = run.stdout.lines().collect();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.push("zz-asker");
    eqnice!(5001, listed.len());
    assert!(listed == expected, "the list differs");
    // The reply needed several frames: 5001 names do not fit one field.
    assert!(expected.iter().map(|n| n.len() + 1).sum::<usize>() > 65535);
}

#[test]
fn presence_keeps_repl_completion_current() {
    use crate::interactive::{repl, TempDir};
    use expectrl::Expect;
    let mut server = ServerProcess::start(&[]);
    let dir = TempDir::new("presence");
    let mut alice = repl(&server, "alice", &dir);
    let mut bob = server.login("bob");
    // Marked as a notice: no message line can start with `* `.
    alice.expect("* bob joined").unwrap();
    alice.send("send b\t").unwrap();
    alice.expect("send bob ").unwrap();
    alice.send("hi bob\r").unwrap();
    eqnice!(Frame::msg("alice", "hi bob"), bob.frame());
    drop(bob);
    alice.expect("* bob left").unwrap();
    // Now `b` completes to nothing: the line stays `send bz`.
    alice.send("send b\tz hi\r").unwrap();
    alice.expect("'bz' is not connected").unwrap();
}

#[test]
fn a_confirmed_login_shows_how_many_are_online() {
    use crate::interactive::{spawn_repl, TempDir};
    use expectrl::Expect;
    let mut server = ServerProcess::start(&[]);
    let _bob = server.login("bob");
    let dir = TempDir::new("confirmed");
    let mut alice = spawn_repl(&server, "alice", &dir);
    alice.expect("* connected as alice (2 online)").unwrap();
    alice.expect("alice> ").unwrap();
    alice.send_line("who").unwrap();
    alice.expect("* 2 online: alice, bob").unwrap();
}

#[test]
fn an_invalid_hello_is_a_protocol_error() {
    let mut server = ServerProcess::start(&[]);
    let mut client = server.login("odd");
    client.write(&message(b"x", b"")[..2]);
    client.write(&[0, 1, 0, 0]);
    // opcode 0, to_len 1, content_len 0 ... then a HELLO with a first field.
    client.write(b"x");
    client.write(&[0, 2, 0, 1, 0, 0]);
    eqnice!(Frame::err("'x' is not connected\n"), client.frame());
    eqnice!(
        Frame::err("malformed HELLO frame: its first field must be empty\n"),
        client.frame()
    );
    client.expect_closed();
}
