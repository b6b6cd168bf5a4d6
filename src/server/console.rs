//! The operator's console: commands typed on the server's stdin.
//!
//! It runs on a plain thread (stdin reads block) and talks to the server
//! only through a [`ServerHandle`]. End of input ends the console, not the
//! server, so the server can run as a daemon with stdin closed.

use std::io::{BufRead, Write};

use tracing::debug;

use super::commands::{self, Command};
use super::ServerHandle;

/// Starts the console on its own thread, reading plain lines from `stdin`
/// until it ends (a terminal goes to `terminal`'s editor instead: see
/// [`super::start_console`]).
pub(super) fn spawn(handle: ServerHandle, color: bool) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(crate::runtime::thread_name("con"))
        .spawn(move || run(std::io::stdin().lock(), std::io::stdout(), &handle, color))
        .map(drop)
}

/// What a console line asks for.
pub(crate) enum Reply {
    /// The server is shutting down: stop reading.
    Exit,
    /// A blank line.
    Nothing,
    /// Text to show the operator.
    Text(String),
}

/// Executes console lines from `input` until it ends or says `exit`.
pub fn run(mut input: impl BufRead, mut out: impl Write, handle: &ServerHandle, color: bool) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                debug!("console input ended; the server keeps running");
                return;
            }
            Ok(_) => {}
        }
        let reply = match execute(&String::from_utf8_lossy(&line), handle, color) {
            Reply::Exit => return,
            Reply::Nothing => continue,
            Reply::Text(reply) => reply,
        };
        // The console's output going away is no reason to stop serving.
        let _ = writeln!(out, "{reply}").and_then(|()| out.flush());
    }
}

/// Executes one console line.
pub(crate) fn execute(text: &str, handle: &ServerHandle, color: bool) -> Reply {
    let command = commands::parse(text);
    let exit = command == Command::Exit;
    match commands::run(command, handle, color) {
        // The console ends with the server; nothing to say.
        Some(_) if exit => Reply::Exit,
        Some(answer) => Reply::Text(answer.text),
        None => Reply::Nothing,
    }
}
