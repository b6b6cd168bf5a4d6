//! Batch mode: commands from scripts (stdin, or `-f FILE`s), received
//! frames to stdout.
//!
//! Encoded frames pile up in one buffer that is written when the script
//! has nothing more buffered (or the buffer is large), so a 100,000-line
//! script costs a handful of writes while a slow pipe still sends each line
//! at once.
//!
//! How a run ends depends on the server:
//! - With receipts (a pmchat server), every message line is recorded in the
//!   [`Ledger`] before it is written, each refusal
//!   is reported against its line (`SOURCE:LINE: text`), and at the end of
//!   input the client leaves as soon as every line is accounted for.
//! - Without (a v1 server), the client half-closes at the end of input and
//!   keeps printing until the server closes the connection (it does so once
//!   every frame we sent has been routed and every error about them
//!   delivered) or the drain timeout passes.
//!
//! With `--follow` it keeps the connection open instead; with
//! `--reconnect` as well, a lost connection is not the end (see
//! [`super::reconnect`]): the script reads on where it was.

use crate::exit_codes::Status;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncBufReadExt, BufReader};
use smol::{Timer, Unblock};

use super::connection::{receive, Received};
use super::negotiation::{await_login, login_channel, Login, Negotiation};
use super::output::Output;
use super::receipts::{unconfirmed_notice, Ledger, Origin, Sent, WINDOW};
use super::render::Renderer;
use super::script_line::{encode_line, Flow};
use super::state::ChatState;
use super::wire::ClientWire;
use super::Greeting;
use crate::net::transport::Transport;
use crate::wire::v1::Limits;

/// Settings for one batch run.
pub struct BatchOptions {
    /// Keep receiving after the end of input.
    pub follow: bool,
    /// Where the inbox cursor is kept (with --follow and a state
    /// directory).
    pub cursor: Option<super::cursor::CursorFile>,
    /// Leave once the log is replayed.
    pub until_caught_up: bool,
    /// `--exec CMD`.
    pub exec: Option<String>,
    /// A lost connection will be reconnected: say nothing about it here.
    pub reconnect: bool,
    /// This connection is a reconnection: a name still held (by our own
    /// stale session, most likely) is a reason to try again, not to stop.
    pub retry_taken: bool,
    /// How long to wait for the server to close after the end of input
    /// (without receipts), or at most between two receipts (with them).
    pub drain_timeout: Duration,
    /// How frames are shown.
    pub renderer: Renderer,
    /// With `--count`: messages still to print before leaving, shared by
    /// every connection of the run.
    pub messages_left: Option<Arc<AtomicU64>>,
}

/// How long `--until-caught-up --exec` waits for the command to get
/// through what was received before it leaves anyway (the cursor stays
/// before what it did not get to).
const EXEC_DRAIN: Duration = Duration::from_secs(3600);

/// Bytes of encoded frames gathered before a write even if the script
/// still has lines buffered.
const SEND_BUFFER: usize = 64 * 1024;

/// How the sending half ended.
enum SendEnd {
    /// The drain timeout passed after the end of input.
    DrainTimedOut,
    /// Every line was accounted for by the server's receipts.
    Settled,
    /// SIGINT or SIGTERM in `--follow` mode.
    Interrupted,
    /// The server did not confirm the login in time; nothing was sent.
    LoginUnanswered(String),
}

/// How a run on one connection ended.
pub enum Ended {
    /// Done: exit with this status.
    Done(Status),
    /// The connection was lost (or, reconnecting, the name was still
    /// held); the notice says how. `logged_in_for`: how long the
    /// connection lasted after its login was confirmed, if it was.
    Lost {
        status: Status,
        notice: String,
        logged_in_for: Option<Duration>,
    },
}

/// The script: its sources in order, read across connections.
pub struct Script {
    sources: VecDeque<Source>,
    /// Line number within the front source.
    line: u64,
    /// With `--to`: every line is a message to this user, verbatim.
    peer: Option<String>,
}

/// One script file.
struct Source {
    /// As errors show it: the path given, or `<stdin>`.
    name: Arc<str>,
    reader: BufReader<Unblock<Box<dyn io::Read + Send>>>,
}

/// How stdin is named in errors.
pub const STDIN_NAME: &str = "<stdin>";
/// How the command given on the command line is named in errors.
pub const COMMAND_NAME: &str = "<command>";

impl Script {
    /// Opens every file (`-`: stdin) now, so that a missing one is an
    /// error before anything is sent; no files: stdin.
    pub fn open(files: &[PathBuf]) -> Result<Script, String> {
        let reader = |read: Box<dyn io::Read + Send>| {
            BufReader::with_capacity(SEND_BUFFER, Unblock::with_capacity(SEND_BUFFER, read))
        };
        let stdin = || Source {
            name: STDIN_NAME.into(),
            reader: reader(Box::new(io::stdin())),
        };
        let mut sources = VecDeque::new();
        if files.is_empty() {
            sources.push_back(stdin());
        }
        for path in files {
            if path.as_os_str() == "-" {
                sources.push_back(stdin());
                continue;
            }
            let file =
                File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            sources.push_back(Source {
                name: path.display().to_string().into(),
                reader: reader(Box::new(file)),
            });
        }
        Ok(Script {
            sources,
            line: 0,
            peer: None,
        })
    }

    /// A script of one line: the command given after the username.
    pub fn command(line: String) -> Script {
        let reader = Box::new(io::Cursor::new(line.into_bytes())) as Box<dyn io::Read + Send>;
        Script {
            sources: VecDeque::from([Source {
                name: COMMAND_NAME.into(),
                reader: BufReader::new(Unblock::new(reader)),
            }]),
            line: 0,
            peer: None,
        }
    }

    /// Every line of this script is a message to `peer` (`--to`).
    pub fn to(mut self, peer: Option<String>) -> Script {
        self.peer = peer;
        self
    }

    /// Reads the next line into `line` (cleared first); `None` at the end
    /// of the last source. A source that cannot be read is reported and
    /// skipped.
    async fn next_line(&mut self, line: &mut Vec<u8>, state: &ChatState) -> Option<()> {
        loop {
            let source = self.sources.front_mut()?;
            line.clear();
            match source.reader.read_until(b'\n', line).await {
                Ok(0) => {}
                Ok(_) => {
                    self.line += 1;
                    return Some(());
                }
                Err(e) => {
                    crate::err_line!("chat-client: cannot read {}: {e}", source.name);
                    state.fail();
                }
            }
            self.sources.pop_front();
            self.line = 0;
        }
    }

    /// True if the front source has nothing buffered: reading on may wait.
    fn nothing_buffered(&self) -> bool {
        self.sources
            .front()
            .is_none_or(|source| source.reader.buffer().is_empty())
    }

    /// The front source's name.
    fn source(&self) -> Arc<str> {
        self.sources
            .front()
            .map_or_else(|| STDIN_NAME.into(), |source| Arc::clone(&source.name))
    }
}

/// Runs the script over `transport`, after the handshake and HELLO in
/// `greeting`.
pub fn run(
    transport: Transport,
    greeting: Greeting,
    options: BatchOptions,
    state: &ChatState,
    script: &mut Script,
) -> Ended {
    smol::block_on(async {
        let mut output = Output::new(options.renderer);
        output.follow_log(options.cursor, options.until_caught_up);
        // Set once the whole script has been handed to the socket:
        // --until-caught-up ends once the log is replayed and the script
        // is out with every line accounted for, whichever comes last.
        let script_sent = Arc::new(AtomicBool::new(false));
        let caught_up = output.end_after_script(Arc::clone(&script_sent));
        if let Some(command) = options.exec {
            output.exec(super::exec::Exec::new(command));
        }
        // Following, SIGINT and SIGTERM end the run cleanly (what was
        // received is written, the cursor kept) from the start, not only
        // once the script is sent: messages may be printed before that.
        let signal = options.follow.then(crate::signals::termination);
        let logged_in = Cell::new(None);
        let (told, outcome) = login_channel();
        let negotiation = Negotiation {
            quiet_name_taken: options.retry_taken,
            ..Negotiation::new(told, &greeting)
        };
        let messages_left = options.messages_left.as_deref();
        let receiving =
            async { Ok(receive(&transport, &mut output, state, negotiation, messages_left).await) };
        let sending = async {
            // Nothing of the script goes out before the login is confirmed
            // (or a v1 server is recognised): a refused name sends nothing.
            // A script just waits: its stderr is for what went wrong.
            let login = match transport.write_all(&greeting.bytes).await {
                Ok(()) => await_login(&outcome, greeting.timeout, |_, _| {}).await,
                Err(_) => None,
            };
            match login {
                // The server closed the connection; the receiver says why.
                None | Some(Login::Pending(..)) => std::future::pending::<()>().await,
                Some(Login::Silent { pending }) => {
                    let notice =
                        super::silent_server_notice(greeting.timeout, state.wire(), pending);
                    // On v1 our HELLO asked for receipts (and perhaps sent a
                    // password): only a pmchat server fits, and one that does
                    // not confirm the login gets nothing of the script.
                    if state.wire() == ClientWire::V1 {
                        if !options.reconnect {
                            crate::err_line!("chat-client: {notice}");
                        }
                        state.login_unanswered();
                        return Err(SendEnd::LoginUnanswered(notice));
                    }
                    crate::err_line!("chat-client: {notice}");
                }
                Some(Login::Extended) => {
                    if let Some(notice) = super::password_notice(state, &greeting) {
                        crate::err_line!("chat-client: {notice}");
                    }
                    if options.until_caught_up && !state.inbox() {
                        crate::err_line!(
                            "chat-client: the server keeps no messages for this name \
                             (that needs a registered name on a server with --store, or --cluster and --accounts)"
                        );
                        state.fail();
                        return Err(SendEnd::DrainTimedOut);
                    }
                }
                Some(Login::V1) => {}
            }
            logged_in.set(Some(std::time::Instant::now()));
            if options.retry_taken {
                crate::err_line!("chat-client: reconnected");
            }
            let sender = ScriptSender {
                transport: &transport,
                limits: state.limits(),
                state,
                ledger: state.receipts().then(|| state.ledger()),
                pace: greeting.pace,
                silence: options.drain_timeout,
            };
            // A failed write means the server went away; the receiver will
            // read why, so wait for it (bounded) rather than end here.
            if sender.send(script).await.is_err() {
                Timer::after(options.drain_timeout).await;
                return Err(SendEnd::DrainTimedOut);
            }
            script_sent.store(true, Ordering::SeqCst);
            if options.follow {
                if options.until_caught_up {
                    if let Some(ledger) = sender.ledger {
                        if !ledger.wait_below(1, options.drain_timeout).await {
                            return Err(SendEnd::DrainTimedOut);
                        }
                    }
                    // Caught up before the last receipt came: the receiver,
                    // waiting for more, does not end the run, so this does.
                    if caught_up.load(Ordering::SeqCst) && !state.awaits_answers() {
                        return Err(SendEnd::Settled);
                    }
                }
                let signal = signal.unwrap_or_else(crate::signals::termination);
                return Err(wait_for_signal(signal).await);
            }
            if let Some(ledger) = sender.ledger {
                // The drain timeout bounds the silence between receipts,
                // not the whole wait: a long script may take longer.
                if !ledger.wait_below(1, options.drain_timeout).await {
                    return Err(SendEnd::DrainTimedOut);
                }
                if !state.awaits_answers() {
                    return Err(SendEnd::Settled);
                }
            }
            transport.shutdown_write().await;
            Timer::after(options.drain_timeout).await;
            Err(SendEnd::DrainTimedOut)
        };
        let ended = receiving.or(sending).await;
        let expected = script_sent.load(Ordering::SeqCst) && !options.follow;
        report_unconfirmed(state, &mut output);
        let received = ended.as_ref().ok();
        let unanswered = match &ended {
            Err(SendEnd::LoginUnanswered(notice)) => Some(notice.clone()),
            _ => None,
        };
        let lost = !expected
            && match received {
                Some(Received::Closed { .. } | Received::Failed(_) | Received::Protocol(_)) => {
                    !state.login_refused() || (options.retry_taken && state.login_retryable())
                }
                // Reconnecting, a server that does not answer is retried.
                None => unanswered.is_some() && options.reconnect,
                _ => false,
            };
        let notice = received.and_then(|r| super::close_notice(r, expected));
        if let Some(notice) = notice.as_ref().filter(|_| !(lost && options.reconnect)) {
            output.notice(notice);
        }
        // Whatever was received is written before we go, unless stdout
        // stays blocked for longer than we would wait for the server.
        // --until-caught-up --exec: every message received is run before
        // the run counts as caught up.
        let bound = match options.until_caught_up && output.has_exec() {
            true => EXEC_DRAIN,
            false => options.drain_timeout,
        };
        output.finish(bound).await;
        if output.exec_failed() {
            state.fail();
        }
        let status = super::exit_status(state, received, expected);
        if lost {
            let notice = match notice.or(unanswered) {
                _ if state.name_taken() => {
                    "the name is still taken (by our previous session, most likely)".into()
                }
                Some(notice) => notice,
                // The close followed an error frame, which says why.
                None if !state.last_error().is_empty() => {
                    format!("the server closed the connection: {}", state.last_error())
                }
                None => "connection closed by server".into(),
            };
            Ended::Lost {
                status,
                notice,
                logged_in_for: logged_in.get().map(|at| at.elapsed()),
            }
        } else {
            Ended::Done(status)
        }
    })
}

/// Messages still in flight when the connection ended may or may not have
/// been delivered: say so, once, with the lines they came from.
fn report_unconfirmed(state: &ChatState, output: &mut Output) {
    if let Some(text) = unconfirmed_notice(&state.ledger().abandon()) {
        state.fail();
        output.notice(&text);
    }
}

/// What sends a script's lines on one connection.
struct ScriptSender<'a> {
    transport: &'a Transport,
    limits: Limits,
    state: &'a ChatState,
    /// With receipts: where each message is recorded before it is written.
    ledger: Option<&'a Ledger>,
    /// The pause after each message.
    pace: Duration,
    /// With receipts, how long to wait for one when the window is full.
    silence: Duration,
}

impl ScriptSender<'_> {
    /// Writes `out`; with --e2e, the sessions that sealed it are on disk
    /// first (a run that stops after a write and before a save would seal
    /// again with keys already used).
    async fn write(&self, out: &[u8]) -> io::Result<()> {
        if let Some(e2e) = self.state.e2e() {
            e2e.checkpoint();
        }
        self.transport.write_all(out).await
    }

    /// Reads, checks and sends every command until the end of the script
    /// or `exit`.
    async fn send(&self, script: &mut Script) -> io::Result<()> {
        let mut out = Vec::new();
        let mut line = Vec::new();
        // --e2e: this device's keys first.
        let e2e = self.state.e2e().filter(|e2e| e2e.is_active());
        if let Some(e2e) = &e2e {
            let out = super::sealed::Out::Socket(self.transport);
            if let Err(e) = super::sealed::publish(out, e2e, self.silence).await {
                crate::err_line!("chat-client: end-to-end encryption is off: {e}");
                self.state.fail();
                return Ok(());
            }
        } else if self.state.e2e().is_some() {
            crate::err_line!(
                "chat-client: the server offers no end-to-end encryption to this login \
                 (it needs a registered name proven by its password); nothing sent"
            );
            self.state.fail();
            return Ok(());
        }
        // The previous line's recipient: a script's lines to one user
        // share one name in the ledger.
        let mut last_to: Option<Arc<str>> = None;
        loop {
            // Send what we have before the script may make us wait, so a
            // slow pipe sends each line at once.
            if out.len() >= SEND_BUFFER || (!out.is_empty() && script.nothing_buffered()) {
                self.write(&out).await?;
                out.clear();
            }
            if script.next_line(&mut line, self.state).await.is_none() {
                break;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let peer = script.peer.as_deref();
            let sealing = e2e.is_some();
            let flow = std::str::from_utf8(text)
                .map_err(|_| "line is not valid UTF-8".to_string())
                .and_then(|text| {
                    encode_line(text, &self.limits, self.state, peer, sealing, &mut out)
                });
            let flow = match (flow, &e2e) {
                (Ok(Flow::Seal(to, message)), Some(e2e)) => {
                    // What came before goes first when a claim may wait.
                    if !e2e.has_claimed(&to) {
                        self.write(&out).await?;
                        out.clear();
                    }
                    let sealed = super::sealed::seal_line(
                        self.transport,
                        self.state,
                        e2e,
                        (&to, message),
                        &self.limits,
                        self.silence,
                        &mut out,
                    );
                    sealed.await.map(|copies| (Flow::Sent(to), copies))
                }
                (Ok(Flow::Keys(command, user)), Some(e2e)) => {
                    self.write(&out).await?;
                    out.clear();
                    let done = super::sealed::keys_command(
                        super::sealed::Out::Socket(self.transport),
                        e2e,
                        command,
                        user,
                        self.silence,
                    );
                    done.await.map(|()| (Flow::Continue, 1))
                }
                (flow, _) => flow.map(|flow| (flow, 1)),
            };
            match flow {
                Ok((Flow::Sent(to), copies)) => {
                    if let Some(ledger) = self.ledger {
                        let to = match last_to.take() {
                            Some(last) if *last == *to => last,
                            _ => Arc::from(&*to),
                        };
                        last_to = Some(Arc::clone(&to));
                        let origin = Origin::Line {
                            source: script.source(),
                            number: script.line,
                        };
                        // An envelope per device: each accounted for.
                        for _ in 1..copies {
                            ledger.record(Sent {
                                to: Arc::clone(&to),
                                origin: origin.clone(),
                            });
                        }
                        if ledger.record(Sent { to, origin }) >= WINDOW {
                            self.write(&out).await?;
                            out.clear();
                            if !ledger.wait_below(WINDOW / 2, self.silence).await {
                                crate::err_line!(
                                    "chat-client: the server confirmed none of the last {} \
                                     messages within {}; stopping",
                                    ledger.in_flight(),
                                    crate::args::format_duration(self.silence)
                                );
                                self.state.fail();
                                return Ok(());
                            }
                        }
                    }
                    // Paced: each message goes out alone, then a pause.
                    if !self.pace.is_zero() {
                        self.write(&out).await?;
                        out.clear();
                        Timer::after(self.pace).await;
                    }
                }
                Ok((Flow::Continue | Flow::Seal(..) | Flow::Keys(..), _)) => {}
                Ok((Flow::Exit, _)) => break,
                Err(why) => {
                    crate::err_line!("{}:{}: {why}", script.source(), script.line);
                    self.state.fail();
                }
            }
        }
        self.write(&out).await
    }
}

async fn wait_for_signal(
    signal: std::io::Result<impl std::future::Future<Output = ()>>,
) -> SendEnd {
    match signal {
        Ok(signal) => signal.await,
        Err(e) => {
            crate::err_line!("chat-client: cannot watch for signals: {e}");
            std::future::pending::<()>().await;
        }
    }
    SendEnd::Interrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_script_file_is_an_error_before_anything_is_sent() {
        let missing = PathBuf::from("/nonexistent/pmchat/script");
        let error = Script::open(&[missing]).err().expect("an error");
        assert!(error.contains("/nonexistent/pmchat/script"), "{error}");
    }

    #[test]
    fn script_lines_are_read_in_order_across_sources_with_their_numbers() {
        let state = ChatState::default();
        let mut script = Script::command("send bob one\nsend bob two".into());
        smol::block_on(async {
            let mut line = Vec::new();
            script.next_line(&mut line, &state).await.unwrap();
            assert_eq!(b"send bob one\n", &line[..]);
            assert_eq!(1, script.line);
            assert_eq!(COMMAND_NAME, &*script.source());
            script.next_line(&mut line, &state).await.unwrap();
            assert_eq!(b"send bob two", &line[..]);
            assert_eq!(2, script.line);
            assert!(script.next_line(&mut line, &state).await.is_none());
        });
    }
}
