//! Start-up, console, signals and shutdown.

use std::process::{Command, Stdio};

use crate::common::{Frame, ServerProcess};
use crate::eqnice;

#[test]
fn console_exit_tells_every_client_and_exits_zero() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    server.console("exit");
    eqnice!(Frame::err("server is shutting down\n"), alice.frame());
    eqnice!(Frame::err("server is shutting down\n"), bob.frame());
    alice.expect_closed();
    assert!(server.wait_exit().success());
}

#[test]
fn sigterm_shuts_down_like_exit() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    server.signal("TERM");
    eqnice!(Frame::err("server is shutting down\n"), alice.frame());
    alice.expect_closed();
    assert!(server.wait_exit().success());
}

#[test]
fn sigint_shuts_down_like_exit() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    server.signal("INT");
    eqnice!(Frame::err("server is shutting down\n"), alice.frame());
    assert!(server.wait_exit().success());
}

#[test]
fn kick_disconnects_with_an_error_frame() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    server.console("kick bob");
    eqnice!("kicked 'bob'", server.stdout_line());
    eqnice!(
        Frame::err("you were disconnected by the server operator\n"),
        bob.frame()
    );
    bob.expect_closed();
    eqnice!(vec!["alice".to_string()], server.users());
    alice.send("bob", "hello?");
    eqnice!(Frame::err("'bob' is not connected\n"), alice.frame());
    server.console("kick nobody");
    eqnice!("'nobody' is not online", server.stdout_line());
}

#[test]
fn users_lists_who_is_online_sorted() {
    let mut server = ServerProcess::start(&[]);
    eqnice!(Vec::<String>::new(), server.users());
    let _carol = server.login("carol");
    let _alice = server.login("alice");
    eqnice!(
        vec!["alice".to_string(), "carol".to_string()],
        server.users()
    );
}

#[test]
fn unknown_console_command_prints_a_hint() {
    let mut server = ServerProcess::start(&[]);
    server.console("dance");
    eqnice!("unknown command 'dance' (try 'help')", server.stdout_line());
}

#[test]
fn end_of_stdin_leaves_the_server_running() {
    // Started with stdin at its end already: the console reads end of input
    // at once, while the server starts.
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args(["0", "--bind", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = ServerProcess::spawn(command);
    let mut alice = server.connect("alice");
    alice.send("alice", "still serving");
    eqnice!(Frame::msg("alice", "still serving"), alice.frame());
    assert!(server.is_running());
}

#[test]
fn port_in_use_is_one_clear_line_and_a_failure_status() {
    let server = ServerProcess::start(&[]);
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--bind", "127.0.0.1", &server.port.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "chat-server: cannot listen on 127.0.0.1:{}",
            server.port
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_arguments_are_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--max-clients", "many", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn bind_takes_a_host_name_and_an_unknown_one_is_one_clear_line() {
    let server = ServerProcess::start_on("localhost", &[]);
    let stream = std::net::TcpStream::connect(("localhost", server.port)).expect("connect");
    assert!(stream.peer_addr().unwrap().ip().is_loopback());
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--bind", "no-such-host.invalid", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("chat-server: cannot resolve --bind no-such-host.invalid"),
        "{stderr}"
    );
}

#[test]
fn ipv6_any_address_works() {
    // `::` may be unavailable in a sandbox without IPv6; skip quietly then.
    let probe = std::net::TcpListener::bind("[::1]:0");
    if probe.is_err() {
        return;
    }
    drop(probe);
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args(["--bind", "::", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let server = ServerProcess::spawn(command);
    // Both families reach it.
    for (host, name) in [("::1", "via-v6"), ("127.0.0.1", "via-v4")] {
        let stream = std::net::TcpStream::connect((host, server.port)).expect(host);
        stream
            .set_read_timeout(Some(crate::common::TIMEOUT))
            .unwrap();
        let mut client = crate::common::RawClient { stream };
        client.handshake(name.as_bytes());
        client.send(name, "both");
        eqnice!(Frame::msg(name, "both"), client.frame());
    }
}

#[test]
fn a_server_started_in_the_background_of_an_interactive_shell_serves_and_stops() {
    use expectrl::Expect;
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!("pmchat-background-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (out, err) = (dir.join("out"), dir.join("err"));
    // An interactive shell in a terminal, with job control, as a person
    // runs the README's recipe.
    let mut shell = Command::new("bash");
    shell
        .args(["--norc", "--noprofile", "-i"])
        .env("PS1", "shell$ ")
        .env("TERM", "xterm");
    let mut shell = expectrl::session::OsSession::spawn(shell).expect("bash in a pty");
    shell.set_expect_timeout(Some(Duration::from_secs(20)));
    shell.expect("shell$ ").expect("the prompt");
    shell
        .send_line(format!(
            "{} 0 --bind 127.0.0.1 > {} 2> {} &",
            env!("CARGO_BIN_EXE_chat-server"),
            out.display(),
            err.display()
        ))
        .unwrap();
    shell.expect("shell$ ").expect("the prompt again");
    let deadline = Instant::now() + crate::common::TIMEOUT;
    let port: u16 = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .next()
            .and_then(|line| line.rsplit(':').next())
            .and_then(|port| port.parse().ok())
        {
            break port;
        }
        assert!(Instant::now() < deadline, "no 'listening on' line");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The console is off, said once, and the server goes on serving.
    let deadline = Instant::now() + crate::common::TIMEOUT;
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("background")
    {
        assert!(Instant::now() < deadline, "nothing said about the console");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut bob = crate::common::RawClient::open(port);
    bob.handshake(b"bob");
    let mut alice = crate::common::RawClient::open(port);
    alice.handshake(b"alice");
    // Until bob is in, alice hears he is not; then the message arrives.
    let deadline = Instant::now() + crate::common::TIMEOUT;
    loop {
        alice.send("bob", "from the background");
        bob.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut head = [0u8; 2];
        if std::io::Read::read_exact(&mut bob.stream, &mut head).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the server never delivered");
    }
    // The job is running, not stopped, and SIGTERM ends it.
    shell.send_line("jobs -l").unwrap();
    let jobs = shell.expect("shell$ ").expect("the jobs listing");
    let listing = String::from_utf8_lossy(jobs.before()).into_owned();
    assert!(listing.contains("Running"), "{listing}");
    assert!(!listing.contains("Stopped"), "{listing}");
    shell.send_line("kill %1; wait %1; echo status=$?").unwrap();
    shell
        .expect("status=0")
        .expect("a clean exit after SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_console_on_a_terminal_edits_lines_and_recalls_them_with_the_arrow_keys() {
    use expectrl::Expect;
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args(["0", "--bind", "127.0.0.1", "-q"])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1");
    let mut console = expectrl::session::OsSession::spawn(command).expect("a pty");
    console.set_expect_timeout(Some(std::time::Duration::from_secs(20)));
    console.expect("listening on").unwrap();
    console.send("kick nobody\r").unwrap();
    console.expect("'nobody' is not online").unwrap();
    // Up arrow: the same line again, not its escape code.
    console.send("\x1b[A\r").unwrap();
    let again = console.expect("'nobody' is not online").unwrap();
    let between = String::from_utf8_lossy(again.before()).into_owned();
    assert!(!between.contains("unknown command"), "{between:?}");
    // Ctrl-C stops the server as SIGINT does.
    console.send("\x03").unwrap();
    console.expect(expectrl::Eof).unwrap();
}

#[test]
fn console_replies_escape_what_was_typed() {
    let mut server = ServerProcess::start(&[]);
    server.console("kick \x1b]0;owned\x07");
    let reply = server.stdout_line();
    eqnice!("'\\x1b]0;owned\\x07' is not online", reply.trim_end());
    server.console("\x1b[2Jwipe");
    let reply = server.stdout_line();
    eqnice!(
        "unknown command '\\x1b[2Jwipe' (try 'help')",
        reply.trim_end()
    );
}
