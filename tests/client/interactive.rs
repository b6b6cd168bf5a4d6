//! Interactive mode in a pseudo-terminal: prompt, completion, messages
//! arriving mid-line, history, and leaving when the server goes away.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use expectrl::session::OsSession;
use expectrl::Expect;

use crate::common::{Frame, ServerProcess};
use crate::eqnice;

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pmchat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `chat-client` as `name` in a pseudo-terminal, history in `dir`.
pub fn repl(server: &ServerProcess, name: &str, dir: &TempDir) -> OsSession {
    let mut session = spawn_repl(server, name, dir);
    session.expect(format!("{name}> ")).expect("the prompt");
    session
}

/// Like [`repl`], without waiting for the prompt.
pub fn spawn_repl(server: &ServerProcess, name: &str, dir: &TempDir) -> OsSession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
    command
        .args(["127.0.0.1", &server.port.to_string(), name])
        .arg("--history-file")
        .arg(dir.0.join("history"))
        .env("TERM", "xterm")
        .env("NO_COLOR", "1");
    let mut session = OsSession::spawn(command).expect("spawn in a pty");
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session
}

#[test]
fn the_prompt_shows_the_username() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("prompt");
    let mut alice = repl(&server, "alice", &dir);
    alice.send_line("help").unwrap();
    alice.expect("send <user> <message>").unwrap();
}

#[test]
fn tab_completes_a_known_username() {
    let mut server = ServerProcess::start(&[]);
    let dir = TempDir::new("complete");
    let mut bob = server.login("bob");
    let mut alice = repl(&server, "alice", &dir);
    server.wait_online("alice");
    bob.send("alice", "hello");
    alice.expect("bob: hello").unwrap();
    alice.send("send b").unwrap();
    alice.send("\t").unwrap();
    alice.expect("send bob ").unwrap();
    alice.send("completed\r").unwrap();
    eqnice!(Frame::msg("alice", "completed"), bob.frame());
}

#[test]
fn a_message_arriving_mid_line_is_printed_above_and_the_line_survives() {
    let mut server = ServerProcess::start(&[]);
    let dir = TempDir::new("midline");
    let mut bob = server.login("bob");
    let mut alice = repl(&server, "alice", &dir);
    server.wait_online("alice");
    alice.send("send bob half").unwrap();
    alice.expect("send bob half").unwrap();
    bob.send("alice", "interrupting");
    alice.expect("bob: interrupting").unwrap();
    // The editor repaints the prompt and the half-typed text below it.
    alice.expect("alice> send bob half").unwrap();
    alice.send(" done\r").unwrap();
    eqnice!(Frame::msg("alice", "half done"), bob.frame());
}

#[test]
fn history_persists_across_runs() {
    let mut server = ServerProcess::start(&[]);
    let dir = TempDir::new("history");
    let mut carol = server.login("carol");
    {
        let mut alice = repl(&server, "alice", &dir);
        alice.send_line("send carol first run").unwrap();
        eqnice!(Frame::msg("alice", "first run"), carol.frame());
        // Ctrl-D on an empty line leaves.
        alice.send("\x04").unwrap();
        alice.expect(expectrl::Eof).unwrap();
    }
    let mut alice = repl(&server, "alice", &dir);
    // Before anything is sent in this run, completion knows carol from the
    // history file.
    alice.send("send c\t").unwrap();
    alice.expect("send carol ").unwrap();
    alice.send("again\r").unwrap();
    eqnice!(Frame::msg("alice", "again"), carol.frame());
    // Up arrow twice recalls the line from the first run.
    alice.send("\x1b[A").unwrap();
    alice.expect("send carol again").unwrap();
    alice.send("\x1b[A").unwrap();
    alice.expect("send carol first run").unwrap();
    alice.send("\r").unwrap();
    eqnice!(Frame::msg("alice", "first run"), carol.frame());
}

#[test]
fn the_client_exits_by_itself_when_the_server_shuts_down() {
    let mut server = ServerProcess::start(&[]);
    let dir = TempDir::new("shutdown");
    let mut alice = repl(&server, "alice", &dir);
    server.wait_online("alice");
    alice.send("half typed").unwrap();
    server.console("exit");
    alice.expect("error: server is shutting down").unwrap();
    alice.expect(expectrl::Eof).unwrap();
    let status = alice.get_process().wait().unwrap();
    assert!(format!("{status:?}").contains(", 1)"), "{status:?}");
}
