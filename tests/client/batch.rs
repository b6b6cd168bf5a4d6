//! Batch mode: scripts on stdin, output on stdout, exit statuses.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::common::{
    client_command, lines_of, run_client, spawn_follower, spawn_piped, Follower, Frame,
    ServerProcess, TIMEOUT,
};
use crate::eqnice;

#[test]
fn a_script_is_delivered_in_order_to_a_follower() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let mut script = String::from("# greetings\n\n");
    for i in 0..1000 {
        script.push_str(&format!("send bob line {i}  with  spaces \n"));
    }
    let run = run_client(client_command(server.port, "alice"), script.as_bytes());
    eqnice!(0, run.status);
    eqnice!("", run.stderr);
    for i in 0..1000 {
        eqnice!(format!("alice: line {i}  with  spaces "), bob.line());
    }
    eqnice!(0, bob.stop());
}

#[test]
fn reply_answers_the_last_sender() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = server.login("bob");
    let mut alice = spawn_piped(client_command(server.port, "alice"));
    server.wait_online("alice");
    bob.send("alice", "ping");
    let stdout = lines_of(alice.0.stdout.take().unwrap());
    eqnice!("bob: ping", stdout.recv_timeout(TIMEOUT).expect("a line"));
    let mut stdin = alice.0.stdin.take().unwrap();
    stdin.write_all(b"reply pong\n").unwrap();
    drop(stdin);
    eqnice!(Frame::msg("alice", "pong"), bob.frame());
    eqnice!(Some(0), alice.wait().code());
}

#[test]
fn reply_with_nobody_to_answer_is_a_rejected_line() {
    let server = ServerProcess::start(&[]);
    let run = run_client(client_command(server.port, "alice"), b"reply hi\n");
    eqnice!(1, run.status);
    eqnice!(
        "<stdin>:1: nobody has sent you a message yet; nothing to reply to\n",
        run.stderr
    );
}

#[test]
fn bad_lines_are_reported_with_line_numbers_and_later_lines_still_go_out() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let long = "x".repeat(2049);
    let script = format!(
        "send bob first\nfrobnicate\nsend bob\nsend héllo hi\nsend bob {long}\nsend bob last\n"
    );
    let run = run_client(client_command(server.port, "alice"), script.as_bytes());
    eqnice!(1, run.status);
    eqnice!(
        "<stdin>:2: unknown command 'frobnicate' (try 'help')\n\
         <stdin>:3: usage: send <user> <message>\n\
         <stdin>:4: bad recipient 'héllo': byte 0xc3 at position 1 is not allowed \
         (printable ASCII without spaces only)\n\
         <stdin>:5: message is too long: 2049 bytes (limit 2048)\n",
        run.stderr
    );
    eqnice!("alice: first", bob.line());
    eqnice!("alice: last", bob.line());
}

#[test]
fn exit_status_0_when_everything_went_out() {
    let mut server = ServerProcess::start(&[]);
    let _bob = Follower::start(&mut server, "bob", &[]);
    let run = run_client(
        client_command(server.port, "alice"),
        b"send bob hi\nexit\nsend bob never\n",
    );
    eqnice!(0, run.status);
}

#[test]
fn exit_status_1_and_the_refusal_against_its_line() {
    let server = ServerProcess::start(&[]);
    let run = run_client(
        client_command(server.port, "alice"),
        b"send carol are you there\n",
    );
    eqnice!(1, run.status);
    eqnice!("<stdin>:1: 'carol' is not connected\n", run.stderr);
}

#[test]
fn exit_status_2_for_usage_errors() {
    let run = run_client(client_command(1, "bad name"), b"");
    eqnice!(2, run.status);
    let run = run_client(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_chat-client"));
            c.args(["localhost", "not-a-port", "alice"]);
            c
        },
        b"",
    );
    eqnice!(2, run.status);
}

#[test]
fn exit_status_3_when_the_username_is_taken() {
    let mut server = ServerProcess::start(&[]);
    let _alice = server.login("alice");
    let run = run_client(client_command(server.port, "alice"), b"send alice hi\n");
    eqnice!(3, run.status);
    eqnice!("chat-client: error: Username is taken\n", run.stderr);
}

#[test]
fn exit_status_3_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = run_client(client_command(port, "alice"), b"");
    eqnice!(3, run.status);
    eqnice!(
        format!("chat-client: cannot connect to 127.0.0.1:{port}: connection refused\n"),
        run.stderr
    );
}

#[test]
fn control_characters_from_a_raw_sender_are_escaped() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let mut mallory = server.login("mallory");
    mallory.send("bob", "\x1b[31mred\nmallory: fake\r\x07");
    eqnice!("mallory: \\x1b[31mred\\nmallory: fake\\r\\x07", bob.line());
}

#[test]
fn json_output_parses_back() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &["--json"]);
    let mut alice = server.login("alice");
    // JSON output includes presence events.
    let value: serde_json::Value = serde_json::from_str(&bob.line()).expect("valid JSON");
    eqnice!(
        serde_json::json!({"type": "presence", "event": "joined", "user": "alice"}),
        value
    );
    alice.send("bob", "quote \" backslash \\ newline \n é");
    let line = bob.line();
    let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    eqnice!(
        serde_json::json!({
            "type": "message",
            "from": "alice",
            "content": "quote \" backslash \\ newline \n é"
        }),
        value
    );
    let run = run_client(
        {
            let mut c = client_command(server.port, "carol");
            c.arg("--json");
            c
        },
        b"send nobody hi\n",
    );
    let value: serde_json::Value = serde_json::from_str(run.stdout.trim_end()).expect("valid JSON");
    // Once, on stdout, saying which line it was.
    eqnice!(
        serde_json::json!({
            "type": "error",
            "code": "not-connected",
            "text": "'nobody' is not connected",
            "line": 1,
            "to": "nobody",
            "source": "<stdin>"
        }),
        value
    );
    eqnice!("", run.stderr);
}

#[test]
fn no_colour_when_piped_unless_forced() {
    let mut server = ServerProcess::start(&[]);
    let plain = Follower::start(&mut server, "plain", &[]);
    let forced = Follower::start(&mut server, "forced", &["--color", "always"]);
    let run = run_client(
        client_command(server.port, "alice"),
        b"send plain hi\nsend forced hi\nsend nobody hi\n",
    );
    eqnice!("alice: hi", plain.line());
    assert!(
        forced.line().contains("\x1b["),
        "--color always must colour"
    );
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
}

#[test]
fn a_broken_stdout_pipe_is_a_normal_exit() {
    let mut server = ServerProcess::start(&[]);
    let mut listener = spawn_follower(server.port, "bob", &[], Stdio::piped(), Stdio::piped());
    server.wait_online("bob");
    // Close the read end of bob's stdout, like `| head -n 0` would.
    drop(listener.0.stdout.take());
    let mut alice = server.login("alice");
    for i in 0..50 {
        alice.send("bob", &format!("message {i}"));
    }
    eqnice!(Some(0), listener.wait().code());
}

#[test]
fn a_follower_piped_into_head_logs_out_when_head_exits_without_another_message() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = spawn_follower(server.port, "bob", &[], Stdio::piped(), Stdio::piped());
    server.wait_online("bob");
    let mut alice = server.login("alice");
    alice.send("bob", "the one line head wants");
    // `| head -1`: one line read, then the reader is gone.
    let mut stdout = BufReader::new(bob.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("a line");
    eqnice!("alice: the one line head wants\n", line);
    drop(stdout);
    // No further message: the name is released all the same.
    server.wait_offline("bob");
    eqnice!(Some(0), bob.wait().code());
}

#[test]
fn follower_exits_when_the_server_shuts_down() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = spawn_follower(server.port, "bob", &[], Stdio::null(), Stdio::piped());
    server.wait_online("bob");
    server.console("exit");
    let stderr = lines_of(bob.0.stderr.take().unwrap());
    eqnice!(
        "chat-client: error: server is shutting down",
        stderr.recv_timeout(TIMEOUT).expect("a line")
    );
    eqnice!(Some(1), bob.wait().code());
}

#[test]
fn a_command_after_the_username_sends_one_message_and_exits_on_its_receipt() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let mut command = client_command(server.port, "alice");
    command.args(["send", "bob", "hello", "there"]);
    let run = run_client(command, b"");
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
    eqnice!("alice: hello there", bob.line());
    let mut command = client_command(server.port, "alice");
    command.args(["send", "zed", "anyone?"]);
    let run = run_client(command, b"");
    eqnice!("<command>:1: 'zed' is not connected\n", run.stderr);
    eqnice!(1, run.status);
}

#[test]
fn to_sends_every_line_verbatim_to_one_user() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let mut command = client_command(server.port, "alice");
    command.args(["--to", "bob"]);
    let run = run_client(command, b"hi bob\n\n  send carol not a command\nexit\n");
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
    eqnice!("alice: hi bob", bob.line());
    eqnice!("alice:   send carol not a command", bob.line());
    eqnice!("alice: exit", bob.line());
}

#[test]
fn count_ends_a_follower_after_that_many_messages_and_releases_the_name() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = spawn_follower(
        server.port,
        "bob",
        &["--count", "2"],
        Stdio::piped(),
        Stdio::piped(),
    );
    server.wait_online("bob");
    let mut alice = server.login("alice");
    for text in ["one", "two", "three"] {
        alice.send("bob", text);
    }
    let lines = lines_of(bob.0.stdout.take().unwrap());
    eqnice!(Some(0), bob.wait().code());
    let printed: Vec<String> = lines.iter().collect();
    eqnice!(vec!["alice: one", "alice: two"], printed);
    server.wait_offline("bob");
}

#[test]
fn a_server_named_in_the_config_file_or_the_environment_needs_no_retyping() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let dir = std::env::temp_dir().join(format!("pmchat-config-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("pmchat")).unwrap();
    std::fs::write(
        dir.join("pmchat/client.toml"),
        format!(
            "default = \"here\"\n[servers.here]\nhost = \"127.0.0.1\"\nport = {}\nname = \"alice\"\n",
            server.port
        ),
    )
    .unwrap();
    let bare = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
        command
            .env("HOME", std::env::temp_dir())
            .env("XDG_CONFIG_HOME", &dir)
            .env_remove("PMCHAT_HOST")
            .env_remove("PMCHAT_PORT")
            .env_remove("PMCHAT_USER");
        command
    };
    // `chat-client here send …`: the named server, then a command.
    let mut named = bare();
    named.args(["here", "send", "bob", "by name"]);
    let run = run_client(named, b"");
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
    eqnice!("alice: by name", bob.line());
    // `chat-client` alone: the default server, a script on stdin.
    let run = run_client(bare(), b"send bob by default\n");
    eqnice!(0, run.status);
    eqnice!("alice: by default", bob.line());
    // The environment, with the command line winning where both speak.
    let mut from_env = bare();
    from_env
        .env("XDG_CONFIG_HOME", dir.join("nowhere"))
        .env("PMCHAT_HOST", "127.0.0.1")
        .env("PMCHAT_PORT", server.port.to_string())
        .env("PMCHAT_USER", "carol");
    let run = run_client(from_env, b"send bob from the environment\n");
    eqnice!(0, run.status);
    eqnice!("carol: from the environment", bob.line());
    // A mistake in the file is a usage error naming it.
    std::fs::write(dir.join("pmchat/client.toml"), "[servers.here]\nhots = 1\n").unwrap();
    let run = run_client(bare(), b"");
    eqnice!(2, run.status);
    assert!(run.stderr.contains("client.toml"), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
