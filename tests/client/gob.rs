//! `chat-client --wire gob`: against a minimal server that reads the way
//! the original Go server does, and against pmchat's own server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pmchat::wire::framing::Decoder;
use pmchat::wire::gob::{self, GobDecoder, GobFrame, GobMessage};
use pmchat::wire::v1::{Decoded, Limits};

use crate::common::{client_command, run_client, Follower, ServerProcess};
use crate::eqnice;

/// What the minimal server saw.
#[derive(Debug, Default)]
struct Seen {
    /// (to, content) of every message it read.
    messages: Vec<(String, String)>,
    /// Reads that held more than one message: the original server loses
    /// everything after the first.
    lost: usize,
}

/// A one-connection gob server that reads like the original one: the
/// handshake, then each message with a fresh decoder over whatever one
/// read returned (anything after the first message in it is lost). It
/// answers an empty recipient with `'' is not connected` and echoes every
/// other message back to the sender.
fn original_style_server() -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done, seen) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut len = [0u8; 1];
        stream.read_exact(&mut len).unwrap();
        let mut name = vec![0u8; len[0] as usize];
        stream.read_exact(&mut name).unwrap();
        let mut result = Seen::default();
        let mut chunk = vec![0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Some((message, used)) = first_message(&chunk[..n]) else {
                continue;
            };
            if used < n {
                result.lost += 1;
            }
            let (to, content) = message;
            let reply = if to.is_empty() {
                GobReply::error("'' is not connected\n")
            } else {
                GobReply::delivery(&name, to.as_bytes(), format!("echo: {content}").as_bytes())
            };
            result.messages.push((to, content));
            if stream.write_all(&reply).is_err() {
                break;
            }
        }
        let _ = done.send(result);
    });
    (port, seen)
}

/// The first message in `bytes` (a fresh decoder: definition, then value)
/// and how many bytes it took.
fn first_message(bytes: &[u8]) -> Option<((String, String), usize)> {
    let mut decoder = GobDecoder::new(Limits::default());
    let mut at = 0;
    loop {
        match decoder.decode(&bytes[at..]).ok()? {
            Decoded::Frame(GobFrame::Definition, used) => at += used,
            Decoded::Frame(GobFrame::Message(m), used) => {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                return Some(((text(m.to), text(m.content)), at + used));
            }
            Decoded::Incomplete { .. } => return None,
        }
    }
}

struct GobReply;

impl GobReply {
    fn error(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        gob::encode_error(text, &mut out);
        out
    }

    fn delivery(to: &[u8], from: &[u8], content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        gob::encode_message(
            &GobMessage {
                to,
                from,
                content,
                error: false,
            },
            &mut out,
        );
        out
    }
}

fn gob_client(port: u16, name: &str) -> std::process::Command {
    let mut command = client_command(port, name);
    command.args(["--wire", "gob", "--drain-timeout", "300ms"]);
    command
}

#[test]
fn a_gob_script_reaches_a_server_that_reads_like_the_original() {
    let (port, seen) = original_style_server();
    let run = run_client(
        gob_client(port, "alice"),
        b"send bob one\nsend carol two \xc3\xa9\nsend bob three\n",
    );
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
    // Every echo came back, each a plain line.
    eqnice!(
        "bob: echo: one\ncarol: echo: two é\nbob: echo: three\n",
        run.stdout
    );
    let seen = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    // The announcement, then the three messages, none lost to a read that
    // held two.
    eqnice!(4, seen.messages.len());
    eqnice!(("".to_string(), "".to_string()), seen.messages[0].clone());
    eqnice!(0, seen.lost);
}

#[test]
fn gob_and_v1_clients_talk_through_pmchat() {
    let mut server = ServerProcess::start(&[]);
    let gopher = Follower::start(&mut server, "gopher", &["--wire", "gob", "--json"]);
    let rusty = Follower::start(&mut server, "rusty", &[]);
    let run = run_client(
        client_command(server.port, "carol"),
        b"send gopher hi gopher\n",
    );
    eqnice!(0, run.status);
    let line: serde_json::Value = serde_json::from_str(&gopher.line()).unwrap();
    eqnice!(
        serde_json::json!({"type": "message", "from": "carol", "content": "hi gopher"}),
        line
    );
    let mut command = gob_client(server.port, "dave");
    command.args(["--send-interval", "0"]);
    let run = run_client(command, b"send rusty hi rusty\nsend nobody x\nwho\n");
    eqnice!(1, run.status);
    eqnice!("dave: hi rusty", rusty.line());
    eqnice!(
        "<stdin>:3: who is not supported on the gob wire\nchat-client: error: 'nobody' is not connected\n",
        sorted_lines(&run.stderr)
    );
}

/// `text`'s lines sorted (two sources write stderr: local checks and the
/// server's errors).
fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_taken_name_on_the_gob_wire_exits_3() {
    let mut server = ServerProcess::start(&[]);
    let _holder = server.login("alice");
    let run = run_client(gob_client(server.port, "alice"), b"send bob hi\n");
    eqnice!(3, run.status);
    eqnice!("chat-client: error: Username is taken\n", run.stderr);
    // Passwords need v1.
    let mut command = gob_client(server.port, "bob");
    command.args(["--password-file", "/dev/null"]);
    eqnice!(2, run_client(command, b"").status);
}

#[test]
fn the_editor_works_on_the_gob_wire() {
    use expectrl::Expect;
    let server = ServerProcess::start(&[]);
    let dir = crate::interactive::TempDir::new("gob-repl");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_chat-client"));
    command.args([
        "127.0.0.1",
        &server.port.to_string(),
        "gopher",
        "--wire",
        "gob",
    ]);
    let mut session = crate::interactive::spawn_in_pty(command, &dir);
    session.expect("gob wire").unwrap();
    session.expect("gopher> ").unwrap();
    session.send_line("send gopher hello me").unwrap();
    session.expect("gopher: hello me").unwrap();
    session.send_line("who").unwrap();
    session
        .expect("who is not supported on the gob wire")
        .unwrap();
    session.send_line("exit").unwrap();
}

#[test]
fn a_gob_user_shows_in_presence_and_who_like_anyone() {
    let mut server = ServerProcess::start(&[]);
    let watcher = Follower::start(&mut server, "watcher", &["--json"]);
    let gopher = Follower::start(&mut server, "gopher", &["--wire", "gob"]);
    let joined: serde_json::Value = serde_json::from_str(&watcher.line()).unwrap();
    eqnice!(
        serde_json::json!({"type": "presence", "event": "joined", "user": "gopher"}),
        joined
    );
    let run = run_client(client_command(server.port, "asker"), b"who\n");
    eqnice!("asker\ngopher\nwatcher\n", run.stdout);
    eqnice!(0, gopher.stop());
    // asker came and went in between.
    let events: Vec<serde_json::Value> = (0..3)
        .map(|_| serde_json::from_str(&watcher.line()).unwrap())
        .collect();
    let left = serde_json::json!({"type": "presence", "event": "left", "user": "gopher"});
    assert!(events.contains(&left), "{events:?}");
}
