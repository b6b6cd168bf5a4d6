//! The chat client: connect, then run the REPL or a batch script.
//!
//! - [`cli`]: command-line options.
//! - [`command`]: the command language, shared by both modes.
//! - [`connection`]: connecting and the receiving loop.
//! - [`output`]: rendering of received frames (plain, JSON, colour).
//! - [`state`]: what the receiving side tells the command side.
//! - [`batch`]: scripts from stdin.
//! - [`repl`]: the interactive editor.

mod batch;
pub mod cli;
mod command;
mod connection;
mod output;
mod repl;
mod state;

use std::io::{self, IsTerminal};
use std::sync::Arc;

use crate::exit_codes::Status;
use crate::protocol;
use cli::ClientArgs;
use connection::Received;
use output::Renderer;
use state::ChatState;

/// Runs the client as the command line asks; returns the exit status.
pub fn run(args: ClientArgs) -> Status {
    let interactive = args.interactive || (!args.batch && io::stdin().is_terminal());
    let renderer = Renderer {
        json: args.json,
        color_stdout: args.color.enabled_for(&io::stdout()),
        color_stderr: args.color.enabled_for(&io::stderr()),
        timestamps: args.timestamps,
        mark_notices: interactive,
    };
    let security = if args.tls || args.tls_ca.is_some() {
        connection::Security::Tls {
            ca: args.tls_ca.clone(),
        }
    } else {
        connection::Security::Plain
    };
    let stream = match smol::block_on(connection::open(
        &args.host,
        args.port,
        args.connect_timeout,
        &security,
    )) {
        Ok(stream) => stream,
        Err(e) => {
            crate::err_line!("chat-client: {e}");
            return Status::NotConnected;
        }
    };
    // The REPL wants presence for completion; a batch run only shows it
    // in JSON.
    let presence = interactive || args.json;
    let hello = match greeting(&args.username, presence) {
        Ok(hello) => hello,
        Err(e) => {
            crate::err_line!("chat-client: {e}");
            return Status::Usage;
        }
    };
    let state = Arc::new(ChatState::default());
    let login = Greeting {
        bytes: hello,
        presence,
        timeout: args.hello_timeout,
    };
    if interactive {
        let options = repl::ReplOptions {
            history: args.history_path(),
            server: format!("{}:{}", args.host, args.port),
            username: args.username,
            drain_timeout: args.drain_timeout,
            show_presence: !args.no_presence,
            renderer,
        };
        repl::run(stream, login, options, state)
    } else {
        let options = batch::BatchOptions {
            follow: args.follow,
            drain_timeout: args.drain_timeout,
            renderer,
        };
        batch::run(stream, login, options, &state)
    }
}

/// The first bytes we send, and how to wait for the answer.
pub struct Greeting {
    /// The v1 handshake followed by HELLO.
    pub bytes: Vec<u8>,
    /// HELLO asked for presence.
    pub presence: bool,
    /// How long to wait for an answer before assuming a v1 server.
    pub timeout: std::time::Duration,
}

/// The v1 handshake for `username`, then a HELLO asking for our features.
fn greeting(username: &str, presence: bool) -> Result<Vec<u8>, protocol::FieldTooLong> {
    let mut bytes = Vec::new();
    protocol::encode_handshake(username.as_bytes(), &mut bytes)?;
    let mut features = protocol::FEATURE_BASE.to_string();
    if presence {
        features.push(' ');
        features.push_str(protocol::FEATURE_PRESENCE);
    }
    protocol::encode_hello(&features, &mut bytes)?;
    Ok(bytes)
}

/// What to tell the user about how the connection ended, if anything.
/// `expected` is true when we had finished and were waiting for the close.
pub(crate) fn close_notice(received: &Received, expected: bool) -> Option<String> {
    match received {
        // The error line already said why.
        Received::Closed { after_error: true } => None,
        Received::Closed { after_error: false } => {
            (!expected).then(|| "connection closed by server".to_string())
        }
        Received::Failed(e) => Some(format!("connection lost: {e}")),
        Received::Protocol(e) => Some(format!("the server sent an invalid frame: {e}")),
        Received::NotChat { error, start } => Some(format!(
            "the server does not look like a pmchat/v1 server: its first bytes \
             (\"{start}\") are not a v1 frame ({error})"
        )),
        Received::OutputGone => None,
    }
}

/// The exit status for a session that ended with `received` (`None`: we
/// stopped waiting first).
pub(crate) fn exit_status(
    state: &ChatState,
    received: Option<&Received>,
    expected: bool,
) -> Status {
    if state.login_refused() || matches!(received, Some(Received::NotChat { .. })) {
        return Status::NotConnected;
    }
    let lost = match received {
        Some(Received::Closed { .. }) => !expected,
        Some(Received::Failed(_) | Received::Protocol(_) | Received::NotChat { .. }) => true,
        Some(Received::OutputGone) | None => false,
    };
    if lost || state.failed() {
        Status::Failure
    } else {
        Status::Success
    }
}

/// The notice for a server that did not answer HELLO in time.
pub(crate) fn silent_server_notice(timeout: std::time::Duration) -> String {
    format!(
        "the server did not answer HELLO within {}; assuming a v1 server \
         (login not confirmed, no 'who', no presence)",
        crate::args::format_duration(timeout)
    )
}
