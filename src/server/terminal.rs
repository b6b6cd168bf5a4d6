//! The console on a terminal: a line editor (history, arrow keys), used
//! only while the server owns the terminal's foreground.
//!
//! A server started with `&` in an interactive shell would be stopped by
//! the terminal (SIGTTIN) at its first read, and then serve nobody and
//! ignore SIGTERM. So terminal stops are ignored (a background read then
//! fails instead), the console waits while in the background, says so
//! once on stderr, and comes back with `fg`.
//!
//! The editor runs on the console's own thread. It puts the terminal in
//! raw mode while it reads, with signals left on (Ctrl-C is SIGINT, Ctrl-Z
//! suspends); Ctrl-D ends the console (the server goes on), and
//! [`restore`] puts the terminal back when the server exits while a read
//! is under way.

use std::sync::OnceLock;
use std::time::Duration;

use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tracing::debug;

use super::console::{execute, Reply};
use super::ServerHandle;

/// Starts the operator's console on stdin: this line editor, used only in
/// the foreground when stdin is a terminal, plain lines otherwise.
pub fn start(handle: ServerHandle, color: bool) -> std::io::Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        spawn(handle, color)
    } else {
        super::console::spawn(handle, color)
    }
}

/// How often a console in the background checks whether it is back.
const FOREGROUND_POLL: Duration = Duration::from_millis(500);
/// Console lines remembered for the arrow keys.
const HISTORY_SIZE: usize = 500;

/// The terminal's settings before the editor touched them.
static SAVED: OnceLock<rustix::termios::Termios> = OnceLock::new();

/// Starts the console on the terminal on stdin.
pub(super) fn spawn(handle: ServerHandle, color: bool) -> std::io::Result<()> {
    ignore_terminal_stops();
    if let Ok(settings) = rustix::termios::tcgetattr(std::io::stdin()) {
        let _ = SAVED.set(settings);
    }
    std::thread::Builder::new()
        .name(crate::runtime::thread_name("con"))
        .spawn(move || edit(&handle, color))
        .map(drop)
}

/// Puts the terminal back as it was, in case the server exits while the
/// editor has it in raw mode.
pub fn restore() {
    if let Some(settings) = SAVED.get() {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            settings,
        );
    }
}

/// Reads and executes console lines until `exit`, Ctrl-C or Ctrl-D.
fn edit(handle: &ServerHandle, color: bool) {
    // Signals stay on: Ctrl-C shuts down as SIGINT always did, and Ctrl-Z
    // suspends, so `bg` can send the server to the background.
    let config = Config::builder()
        .enable_signals(true)
        .auto_add_history(false)
        .max_history_size(HISTORY_SIZE)
        .and_then(|config| config.history_ignore_dups(true))
        .map(|config| config.build());
    let editor = config.and_then(DefaultEditor::with_config);
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(e) => {
            crate::err_line!("chat-server: the console has no line editor ({e}); it is off");
            return;
        }
    };
    let mut told = false;
    loop {
        wait_for_foreground(&mut told);
        match editor.readline("") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                match execute(&line, handle, color) {
                    Reply::Exit => return,
                    Reply::Nothing => {}
                    // The console's output going away is no reason to stop.
                    Reply::Text(reply) => {
                        let _ = crate::out_line!("{reply}");
                    }
                }
            }
            // Ctrl-C, should it arrive as a key: what SIGINT means.
            Err(ReadlineError::Interrupted) => {
                handle.shutdown();
                return;
            }
            Err(ReadlineError::Eof) => {
                debug!("console input ended; the server keeps running");
                return;
            }
            // Sent to the background during the read (SIGTTIN is ignored,
            // so the read fails instead of stopping us).
            Err(_) if !in_foreground() => {}
            Err(e) => {
                debug!("console input failed: {e}; the server keeps running");
                return;
            }
        }
    }
}

/// Makes background reads from (and writes to) the terminal fail or pass
/// instead of stopping the whole process.
fn ignore_terminal_stops() {
    for signal in [libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no
        // handler code, so it cannot race anything running in a handler;
        // it is done before the console thread starts reading.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}

/// True if this process's group owns the terminal on stdin.
fn in_foreground() -> bool {
    match rustix::termios::tcgetpgrp(std::io::stdin()) {
        Ok(owner) => owner == rustix::process::getpgrp(),
        // No controlling terminal after all: nothing to fear.
        Err(_) => true,
    }
}

/// Waits while the server is in the background, saying so once.
fn wait_for_foreground(told: &mut bool) {
    while !in_foreground() {
        if !std::mem::replace(told, true) {
            crate::err_line!(
                "chat-server: running in the background of a terminal: the console is off \
                 (bring the server to the foreground with fg to use it)"
            );
        }
        std::thread::sleep(FOREGROUND_POLL);
    }
}
