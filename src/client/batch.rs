//! Batch mode: commands from stdin (a file or a pipe), received frames to
//! stdout.
//!
//! Encoded frames pile up in one buffer that is written when stdin has
//! nothing more buffered (or the buffer is large), so a 100,000-line script
//! costs a handful of writes while a slow pipe still sends each line at
//! once. At the end of input the client half-closes and keeps printing until
//! the server closes the connection (it does so once every frame we sent
//! has been routed and every error about them delivered) or the drain
//! timeout passes. With `--follow` it keeps the connection open instead.

use crate::exit_codes::Status;
use std::borrow::Cow;
use std::cell::Cell;
use std::io;
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncBufReadExt, BufReader};
use smol::{Timer, Unblock};

use super::command::{self, Command};
use super::connection::{await_login, receive, Login, Negotiation};
use super::output::{Output, Renderer};
use super::state::ChatState;
use super::Greeting;
use crate::protocol::{self, Limits};
use crate::transport::Transport;

/// Settings for one batch run.
pub struct BatchOptions {
    /// Keep receiving after the end of input.
    pub follow: bool,
    /// How long to wait for the server to close after the end of input.
    pub drain_timeout: Duration,
    /// How frames are shown.
    pub renderer: Renderer,
}

/// Bytes of encoded frames gathered before a write even if stdin still has
/// lines buffered.
const SEND_BUFFER: usize = 64 * 1024;

/// How the sending half ended.
enum Sent {
    /// The drain timeout passed after the end of input.
    DrainTimedOut,
    /// SIGINT or SIGTERM in `--follow` mode.
    Interrupted,
}

/// Runs a script from stdin over `transport`, after the handshake and HELLO
/// in `greeting`. Returns the exit status.
pub fn run(
    transport: Transport,
    greeting: Greeting,
    options: BatchOptions,
    state: &ChatState,
) -> Status {
    smol::block_on(async {
        let mut output = Output::new(options.renderer);
        // Set once the whole script has been handed to the socket.
        let input_done = Cell::new(false);
        let (told, outcome) = async_channel::bounded(1);
        let negotiation = Negotiation {
            outcome: Some(told),
            presence: greeting.presence,
            v1_answers: greeting.v1_answers,
        };
        let receiving = async { Ok(receive(&transport, &mut output, state, negotiation).await) };
        let sending = async {
            // Nothing of the script goes out before the login is confirmed
            // (or a v1 server is recognised): a refused name sends nothing.
            let login = match transport.write_all(&greeting.bytes).await {
                Ok(()) => await_login(&outcome, greeting.timeout).await,
                Err(_) => None,
            };
            match login {
                // The server closed the connection; the receiver says why.
                None => std::future::pending::<()>().await,
                Some(Login::Silent) => {
                    crate::err_line!(
                        "chat-client: {}",
                        super::silent_server_notice(greeting.timeout, state.wire())
                    );
                }
                Some(Login::Extended) => {
                    if let Some(notice) = super::password_notice(state, &greeting) {
                        crate::err_line!("chat-client: {notice}");
                    }
                }
                Some(Login::V1) => {}
            }
            // A failed write means the server went away; the receiver will
            // read why, so wait for it (bounded) rather than end here.
            let _ = send_script(&transport, &state.limits(), state, greeting.pace).await;
            input_done.set(true);
            if options.follow {
                return Err(wait_for_signal().await);
            }
            transport.shutdown_write().await;
            Timer::after(options.drain_timeout).await;
            Err(Sent::DrainTimedOut)
        };
        let ended = receiving.or(sending).await;
        let expected = input_done.get() && !options.follow;
        if let Some(notice) = ended
            .as_ref()
            .ok()
            .and_then(|r| super::close_notice(r, expected))
        {
            output.notice(&notice);
        }
        // Whatever was received is written before we go, unless stdout
        // stays blocked for longer than we would wait for the server.
        output.finish(options.drain_timeout).await;
        super::exit_status(state, ended.as_ref().ok(), expected)
    })
}

/// Reads, checks and sends every command on stdin until its end or `exit`.
async fn send_script(
    transport: &Transport,
    limits: &Limits,
    state: &ChatState,
    pace: Duration,
) -> io::Result<()> {
    let stdin = Unblock::with_capacity(SEND_BUFFER, io::stdin());
    let mut script = BufReader::with_capacity(SEND_BUFFER, stdin);
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        // Send what we have before stdin may make us wait, so a slow pipe
        // sends each line at once.
        if out.len() >= SEND_BUFFER || (!out.is_empty() && script.buffer().is_empty()) {
            transport.write_all(&out).await?;
            out.clear();
        }
        line.clear();
        match script.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                crate::err_line!("chat-client: cannot read stdin: {e}");
                state.fail();
                break;
            }
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let flow = std::str::from_utf8(text)
            .map_err(|_| "line is not valid UTF-8".to_string())
            .and_then(|text| encode_line(text, limits, state, &mut out));
        match flow {
            // Paced: each message goes out alone, then a pause.
            Ok(Flow::Continue) if !pace.is_zero() && !out.is_empty() => {
                transport.write_all(&out).await?;
                out.clear();
                Timer::after(pace).await;
            }
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => break,
            Err(why) => {
                crate::err_line!("<stdin>:{number}: {why}");
                state.fail();
            }
        }
    }
    transport.write_all(&out).await
}

/// What the script does after a line.
enum Flow {
    Continue,
    Exit,
}

/// Appends the frame for one script line to `out`; `Err` says why the line
/// was refused.
fn encode_line(
    text: &str,
    limits: &Limits,
    state: &ChatState,
    out: &mut Vec<u8>,
) -> Result<Flow, String> {
    let (to, message) = match command::parse(text, limits).map_err(|e| e.to_string())? {
        None => return Ok(Flow::Continue),
        Some(Command::Exit) => return Ok(Flow::Exit),
        Some(Command::Help) => {
            crate::err_line!("{}", command::HELP);
            return Ok(Flow::Continue);
        }
        Some(Command::Who) => match state.who_unsupported() {
            Some(why) => return Err(why.to_string()),
            None => {
                protocol::encode_who(out);
                state.who_sent();
                return Ok(Flow::Continue);
            }
        },
        // Borrowed: a million-line script allocates nothing per line.
        Some(Command::Send { to, message }) => (Cow::Borrowed(to), message),
        Some(Command::Reply { message }) => {
            let to = state
                .last_sender()
                .ok_or("nobody has sent you a message yet; nothing to reply to")?;
            (Cow::Owned(to), message)
        }
    };
    state
        .wire()
        .encode_message(to.as_bytes(), message.as_bytes(), out)
        .map(|()| Flow::Continue)
        .map_err(|e| e.to_string())
}

async fn wait_for_signal() -> Sent {
    match crate::signals::termination() {
        Ok(signal) => signal.await,
        Err(e) => {
            crate::err_line!("chat-client: cannot watch for signals: {e}");
            std::future::pending::<()>().await;
        }
    }
    Sent::Interrupted
}
