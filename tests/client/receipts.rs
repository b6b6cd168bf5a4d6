//! Receipts: every script line accounted for, refusals against their
//! lines, exits as soon as everything is accounted for; `-f` files; and
//! `--follow --reconnect` across a server restart.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    client_command, lines_of, run_client, spawn_follower, spawn_piped, ChildGuard, Follower, Frame,
    ServerProcess, TIMEOUT,
};
use crate::eqnice;

#[test]
fn two_lines_to_absent_users_are_reported_by_number_without_waiting_for_a_timeout() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let script = "send bob one\nsend dave two\nsend bob three\nsend erin four\nsend bob five\n";
    let started = Instant::now();
    let run = run_client(
        {
            let mut c = client_command(server.port, "alice");
            c.args(["--drain-timeout", "30s"]);
            c
        },
        script.as_bytes(),
    );
    let took = started.elapsed();
    eqnice!(
        "<stdin>:2: 'dave' is not connected\n<stdin>:4: 'erin' is not connected\n",
        run.stderr
    );
    eqnice!(1, run.status);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for line in ["one", "three", "five"] {
        eqnice!(format!("alice: {line}"), bob.line());
    }
}

#[test]
fn all_accepted_exits_0_at_once() {
    let mut server = ServerProcess::start(&[]);
    let _bob = Follower::start(&mut server, "bob", &[]);
    let started = Instant::now();
    let run = run_client(
        {
            let mut c = client_command(server.port, "alice");
            c.args(["--drain-timeout", "30s"]);
            c
        },
        b"send bob hi\n# a comment\nsend bob again\n",
    );
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn json_receipts_say_what_became_of_every_line() {
    let mut server = ServerProcess::start(&[]);
    let _bob = Follower::start(&mut server, "bob", &[]);
    let run = run_client(
        {
            let mut c = client_command(server.port, "alice");
            c.args(["--json", "--receipts"]);
            c
        },
        b"send bob hi\nsend dave there\n\nsend bob \"quoted\"\n",
    );
    eqnice!(1, run.status);
    let receipts: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("\"line\""))
        .collect();
    eqnice!(
        vec![
            r#"{"type":"accepted","line":1,"to":"bob","source":"<stdin>"}"#,
            r#"{"type":"refused","line":2,"to":"dave","code":"not-connected","text":"'dave' is not connected","source":"<stdin>"}"#,
            r#"{"type":"accepted","line":4,"to":"bob","source":"<stdin>"}"#,
        ],
        receipts
    );
    // The object is the report: nothing on stderr.
    eqnice!("", run.stderr);
    // Without --receipts, JSON output keeps the error object it always had.
    let run = run_client(
        {
            let mut c = client_command(server.port, "carol");
            c.arg("--json");
            c
        },
        b"send dave there\n",
    );
    assert!(
        run.stdout.contains(
            r#"{"type":"error","code":"not-connected","text":"'dave' is not connected","line":1,"to":"dave","source":"<stdin>"}"#
        ),
        "{}",
        run.stdout
    );
    eqnice!("", run.stderr);
    assert!(!run.stdout.contains("accepted"), "{}", run.stdout);
}

#[test]
fn receipts_without_json_is_a_usage_error() {
    let run = run_client(
        {
            let mut c = client_command(1, "alice");
            c.arg("--receipts");
            c
        },
        b"",
    );
    eqnice!(2, run.status);
}

#[test]
fn a_user_who_leaves_mid_script_turns_the_rest_of_the_lines_to_them_into_refusals() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = server.login("bob");
    let mut alice = spawn_piped(client_command(server.port, "alice"));
    server.wait_online("alice");
    let mut stdin = alice.0.stdin.take().unwrap();
    let stderr = lines_of(alice.0.stderr.take().unwrap());
    stdin
        .write_all(b"send bob 1\nsend bob 2\n# bob leaves now\n")
        .unwrap();
    eqnice!(Frame::msg("alice", "1"), bob.frame());
    eqnice!(Frame::msg("alice", "2"), bob.frame());
    drop(bob);
    server.wait_offline("bob");
    stdin.write_all(b"send bob 3\n\nsend bob 5\n").unwrap();
    drop(stdin);
    eqnice!(Some(1), alice.wait().code());
    let lines: Vec<String> = stderr.iter().collect();
    eqnice!(
        vec![
            "<stdin>:4: 'bob' is not connected".to_string(),
            "<stdin>:6: 'bob' is not connected".to_string()
        ],
        lines
    );
}

#[test]
fn a_million_lines_are_all_accounted_for() {
    const LINES: usize = 1_000_000;
    let mut server = ServerProcess::start(&[]);
    // bob reads and counts whatever arrives.
    let mut bob = server.login("bob");
    let counter = thread::spawn(move || {
        let mut total = 0usize;
        let mut chunk = vec![0; 1 << 16];
        let want = LINES * (6 + 5 + 7);
        while total < want {
            match bob.stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    });
    let mut script = Vec::with_capacity(LINES * 17);
    for i in 0..LINES {
        writeln!(script, "send bob {i:07}").unwrap();
    }
    let started = Instant::now();
    let run = run_client(client_command(server.port, "alice"), &script);
    let took = started.elapsed();
    eqnice!("", run.stderr);
    // Exit status 0 means the server accepted every line.
    eqnice!(0, run.status);
    eqnice!(LINES * 18, counter.join().unwrap());
    eprintln!("1,000,000 lines with receipts (debug build): {took:?}");
}

#[test]
fn a_raw_v1_client_never_sees_a_receipt() {
    let mut server = ServerProcess::start(&[]);
    let _bob = server.login("bob");
    let mut v1 = server.login("v1");
    v1.send("bob", "hi");
    v1.send("dave", "hi");
    v1.send("bob", "again");
    eqnice!(Frame::err("'dave' is not connected\n"), v1.frame());
    v1.expect_silence(Duration::from_millis(300));
}

#[test]
fn script_files_run_in_order_and_errors_name_them() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let dir = std::env::temp_dir().join(format!("pmchat-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join("first.txt");
    let second = dir.join("second.txt");
    std::fs::write(&first, "send bob from first\nsend dave nobody\n").unwrap();
    std::fs::write(&second, "frobnicate\nsend bob from second\n").unwrap();
    let run = run_client(
        {
            let mut c = client_command(server.port, "alice");
            c.arg("-f")
                .arg(&first)
                .arg("--file")
                .arg("-")
                .arg("-f")
                .arg(&second);
            c
        },
        b"send bob from stdin\n",
    );
    // A local error is reported at once, a refusal when its receipt comes:
    // the two may come in either order.
    let mut errors: Vec<&str> = run.stderr.lines().collect();
    errors.sort_unstable();
    let mut expected = [
        format!("{}:2: 'dave' is not connected", first.display()),
        format!(
            "{}:1: unknown command 'frobnicate' (try 'help')",
            second.display()
        ),
    ];
    expected.sort_unstable();
    eqnice!(expected.to_vec(), errors);
    eqnice!(1, run.status);
    for line in ["from first", "from stdin", "from second"] {
        eqnice!(format!("alice: {line}"), bob.line());
    }
    let missing = dir.join("missing.txt");
    let run = run_client(
        {
            let mut c = client_command(server.port, "carol");
            c.arg("-f").arg(&missing);
            c
        },
        b"",
    );
    eqnice!(2, run.status);
    assert!(run.stderr.contains("missing.txt"), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `NAME --follow --reconnect`, logged in, with its stdout and stderr
/// lines.
fn reconnecting_listener(
    server: &mut ServerProcess,
    name: &str,
) -> (ChildGuard, Receiver<String>, Receiver<String>) {
    let mut listener = spawn_follower(
        server.port,
        name,
        &["--reconnect"],
        Stdio::piped(),
        Stdio::piped(),
    );
    let stdout = lines_of(listener.0.stdout.take().unwrap());
    let stderr = lines_of(listener.0.stderr.take().unwrap());
    server.wait_online(name);
    (listener, stdout, stderr)
}

#[test]
fn a_reconnecting_listener_keeps_receiving_across_a_server_restart() {
    let mut server = ServerProcess::start(&[]);
    let port = server.port;
    let (_listener, stdout, stderr) = reconnecting_listener(&mut server, "bob");
    let mut alice = server.login("alice");
    alice.send("bob", "before the restart");
    eqnice!(
        "alice: before the restart",
        stdout.recv_timeout(TIMEOUT).unwrap()
    );
    drop(alice);
    drop(server);
    // Down for a moment: the listener retries, one line per attempt.
    thread::sleep(Duration::from_millis(700));
    let mut server = ServerProcess::start_at("127.0.0.1", port, &[]);
    server.wait_online("bob");
    let mut alice = server.login("alice");
    alice.send("bob", "after the restart");
    eqnice!(
        "alice: after the restart",
        stdout.recv_timeout(TIMEOUT).unwrap()
    );
    // Nothing but whole message lines on stdout.
    assert!(stdout.try_recv().is_err());
    let log: Vec<String> = stderr.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("reconnecting in")), "{log:?}");
    assert!(log.iter().any(|l| l.ends_with("reconnected")), "{log:?}");
    assert!(
        log.iter().all(|l| l.starts_with("chat-client: ")),
        "{log:?}"
    );
}

#[test]
fn a_reconnecting_listener_waits_while_its_name_is_still_held() {
    let mut server = ServerProcess::start(&[]);
    let port = server.port;
    let (listener, stdout, stderr) = reconnecting_listener(&mut server, "bob");
    // Frozen while the server restarts and someone else (standing in for
    // a stale session of its own) takes the name.
    let pid = listener.0.id().to_string();
    let signal = |name: &str| {
        assert!(std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    drop(server);
    let mut server = ServerProcess::start_at("127.0.0.1", port, &[]);
    let stale = server.login("bob");
    signal("-CONT");
    let taken = stderr.recv_timeout(TIMEOUT).unwrap();
    assert!(taken.contains("reconnecting in"), "{taken}");
    let taken = stderr.recv_timeout(TIMEOUT).unwrap();
    assert!(taken.contains("still taken"), "{taken}");
    drop(stale);
    server.wait_offline("bob");
    server.wait_online("bob");
    let mut alice = server.login("alice");
    alice.send("bob", "you are back");
    eqnice!("alice: you are back", stdout.recv_timeout(TIMEOUT).unwrap());
}

#[test]
fn a_reconnect_notice_says_what_happened_and_waits_in_tenths_of_a_second() {
    let mut server = ServerProcess::start(&[]);
    let (_listener, _stdout, stderr) = reconnecting_listener(&mut server, "bob");
    server.console("kick bob");
    let notice = loop {
        let line = stderr.recv_timeout(TIMEOUT).expect("a notice");
        if line.contains("reconnecting in") {
            break line;
        }
    };
    let (why, wait) = notice
        .strip_prefix("chat-client: ")
        .and_then(|rest| rest.split_once("; reconnecting in "))
        .unwrap_or_else(|| panic!("{notice}"));
    eqnice!(
        "the server closed the connection: you were disconnected by the server operator",
        why
    );
    // `0.2s (attempt 1)`: seconds with one decimal, as the README shows.
    let (seconds, attempt) = wait.split_once(' ').unwrap();
    eqnice!("(attempt 1)", attempt);
    let seconds = seconds.strip_suffix('s').unwrap();
    let (whole, tenths) = seconds.split_once('.').unwrap();
    assert!(
        whole.parse::<u32>().is_ok() && tenths.len() == 1,
        "{notice}"
    );
}

#[test]
fn sigterm_stops_a_listener_waiting_to_reconnect() {
    let mut server = ServerProcess::start(&[]);
    let (mut listener, _stdout, stderr) = reconnecting_listener(&mut server, "bob");
    drop(server);
    let line = stderr.recv_timeout(TIMEOUT).unwrap();
    assert!(line.contains("reconnecting in"), "{line}");
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &listener.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    eqnice!(Some(0), listener.wait().code());
}

#[test]
fn reconnect_needs_follow() {
    let run = run_client(
        {
            let mut c = client_command(1, "alice");
            c.arg("--reconnect");
            c
        },
        b"",
    );
    eqnice!(2, run.status);
}

#[test]
fn a_banned_name_stays_out_even_with_reconnect_until_unbanned() {
    let mut server = ServerProcess::start(&[]);
    let (mut bob, _stdout, stderr) = reconnecting_listener(&mut server, "bob");
    server.console("ban bob");
    // Kicked, back at once, refused: a ban is not something to retry.
    eqnice!(Some(3), bob.wait().code());
    // Its stderr says why (the pipe's lines may still be on their way).
    let mut said = Vec::new();
    while !said
        .iter()
        .any(|l| l == "chat-client: error: 'bob' is banned from this server")
    {
        match stderr.recv_timeout(TIMEOUT) {
            Ok(line) => said.push(line),
            Err(_) => panic!("never said it was banned: {said:?}"),
        }
    }
    let run = run_client(client_command(server.port, "bob"), b"");
    eqnice!(3, run.status);
    server.console("unban bob");
    let run = run_client(client_command(server.port, "bob"), b"");
    eqnice!(0, run.status);
    // A ban for a while ends by itself.
    server.console("ban carol 300ms");
    let run = run_client(client_command(server.port, "carol"), b"");
    eqnice!(3, run.status);
    thread::sleep(Duration::from_millis(400));
    let run = run_client(client_command(server.port, "carol"), b"");
    eqnice!(0, run.status);
}

#[test]
fn a_server_that_logs_in_and_drops_at_once_does_not_reset_the_back_off() {
    // Logs every connection in (WELCOME), then closes it at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(6) {
            let Ok(mut stream) = stream else { continue };
            let mut greeting = [0u8; 256];
            let _ = stream.read(&mut greeting);
            let mut welcome = vec![0, 2, 0, 4, 0, 0];
            welcome.extend_from_slice(b"evil");
            let _ = stream.write_all(&welcome);
        }
    });
    let mut listener = spawn_follower(port, "bob", &["--reconnect"], Stdio::null(), Stdio::piped());
    let stderr = lines_of(listener.0.stderr.take().unwrap());
    let attempts: Vec<String> = (0..3)
        .map(|_| loop {
            let line = stderr.recv_timeout(TIMEOUT).expect("a reconnect notice");
            if line.contains("reconnecting in") {
                break line;
            }
        })
        .collect();
    for (i, line) in attempts.iter().enumerate() {
        assert!(
            line.ends_with(&format!("(attempt {})", i + 1)),
            "{attempts:?}"
        );
    }
}
