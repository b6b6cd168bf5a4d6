//! The client's side of the socket: connecting, and the receiving loop that
//! turns server frames into output.
//!
//! Sending is done by whoever owns the write side (the batch loop or the
//! REPL's writer task), always one writer at a time, so frames are never
//! interleaved.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smol::future::FutureExt;
use smol::Async;

use crate::runtime;

use super::receipts::Sent;
use super::state::{ChatState, MAX_ONLINE_USERS};
use crate::clock::Stamp;
use crate::net::tls::tls_client_config;
use crate::net::transport::{connect_tls, Transport};
use crate::sanitize::escape;
use crate::wire::framing::FrameReader;
use crate::wire::v1::{self, FrameError, PendingReason, ServerFrame};

/// Why we could not get a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    /// Every address refused or timed out.
    #[error("cannot connect to {host}:{port}: {reason}")]
    Connect {
        host: String,
        port: u16,
        reason: String,
    },
    /// The TLS settings could not be loaded.
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    /// The TLS handshake failed: a certificate that does not verify, a name
    /// that does not match, or a server that does not speak TLS.
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
}

/// How to secure a connection.
#[derive(Clone, Debug, Default)]
pub enum Security {
    /// Plain TCP.
    #[default]
    Plain,
    /// TLS, verifying the server against the system's roots, or only
    /// against the CA certificates in this PEM file.
    Tls { ca: Option<std::path::PathBuf> },
}

/// Connects to `host:port` as `security` asks, within `timeout` for the
/// TCP connection and again for the TLS handshake.
pub async fn open(
    host: &str,
    port: u16,
    timeout: Duration,
    security: &Security,
) -> Result<Transport, ConnectError> {
    let stream = connect(host, port, timeout).await?;
    let Security::Tls { ca } = security else {
        return Ok(Transport::tcp(stream));
    };
    let config = tls_client_config(ca.as_deref()).map_err(ConnectError::TlsSetup)?;
    let failed = |reason: String| ConnectError::Tls {
        host: host.to_string(),
        reason,
    };
    match runtime::timeout(timeout, connect_tls(stream, host, config)).await {
        Some(Ok(transport)) => Ok(transport),
        // What a plain server's answer to a ClientHello looks like.
        Some(Err(e)) if answered_in_clear(&e) => Err(failed(format!(
            "{e} (the server does not seem to speak TLS)"
        ))),
        Some(Err(e)) if unknown_issuer(&e) => Err(failed(format!(
            "{e}: no CA this client trusts signed the server's certificate. Give the \
             server's CA with --tls-ca FILE (a chat-server started with \
             --tls-self-signed DIR keeps it in DIR/ca.pem and prints its SHA-256 \
             fingerprint when it starts: compare it before trusting the file)"
        ))),
        Some(Err(e)) => Err(failed(e.to_string())),
        None => Err(failed(format!("no answer within {timeout:?}"))),
    }
}

/// The rustls error under a failed handshake, if that is what failed it.
fn tls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// True if a handshake failed because the answer was not a TLS record.
fn answered_in_clear(error: &io::Error) -> bool {
    matches!(
        tls_error(error),
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    )
}

/// True if a handshake failed because no trusted CA signed the
/// certificate: an issuer we do not know, or one we know by name whose key
/// did not sign it (another `--tls-self-signed` CA has the same name).
fn unknown_issuer(error: &io::Error) -> bool {
    matches!(
        tls_error(error),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
        ))
    )
}

/// Connects to `host:port`, trying each resolved address in turn.
pub async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Async<TcpStream>, ConnectError> {
    let target = (host.to_string(), port);
    let addrs: Vec<SocketAddr> = smol::unblock(move || target.to_socket_addrs())
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    let mut reason = String::from("no address found");
    for addr in addrs {
        let attempt = runtime::timeout(timeout, Async::<TcpStream>::connect(addr))
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()));
        match attempt {
            Ok(stream) => {
                // Interactive messages should leave at once; batches are
                // already coalesced into large writes.
                let _ = stream.get_ref().set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => reason = e.kind().to_string(),
        }
    }
    Err(ConnectError::Connect {
        host: host.to_string(),
        port,
        reason,
    })
}

/// Pending output past which the receiving loop has its [`Sink`] write out
/// even while more frames are waiting: a sender that never pauses must not
/// grow the client.
pub const FLUSH_AT: usize = 64 * 1024;

/// Where received frames go.
pub trait Sink {
    /// Sets the receive time of the frames that follow (`--timestamps`).
    fn set_stamp(&mut self, stamp: Stamp);
    /// True if frames should be time-stamped.
    fn wants_stamps(&self) -> bool;
    /// A message from `from`.
    fn message(&mut self, from: &[u8], content: &[u8]);
    /// An error reported by the server, with its code (empty from a
    /// server without codes).
    fn error(&mut self, code: &[u8], text: &[u8]);
    /// The answer to a `who`: the online users, sorted.
    fn online(&mut self, names: &[String]);
    /// A presence event.
    fn presence(&mut self, joined: bool, name: &[u8]);
    /// The server accepted a message we sent (receipts).
    fn accepted(&mut self, sent: &Sent);
    /// The server refused a message we sent, for the reason in `code`
    /// (empty from a server without codes) and `text`.
    fn refused(&mut self, sent: &Sent, code: &[u8], text: &[u8]);
    /// Bytes rendered and not yet written.
    fn pending(&self) -> usize;
    /// Writes what is pending, waiting while the destination is full.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>>;
    /// Completes when the destination went away (stdout closed).
    fn gone(&self) -> impl Future<Output = ()> + 'static;
}

/// How the receiving loop ended.
#[derive(Debug)]
pub enum Received {
    /// The server closed the connection. `after_error` says whether the
    /// last frame was an error, which then explains the close.
    Closed { after_error: bool },
    /// The connection failed.
    Failed(io::Error),
    /// The server sent something that is not its wire.
    Protocol(FrameError),
    /// The very first bytes were not a v1 frame: whatever answered is not a
    /// chat server (an HTTP server, say). `start` is what it sent, escaped.
    NotChat { error: FrameError, start: String },
    /// Our stdout went away (`| head`): a normal end.
    OutputGone,
    /// As many messages as asked for (`--count`) were printed: a normal end.
    Enough,
}

/// How the server answered our HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// WELCOME (and, if asked, the presence snapshot) arrived.
    Extended,
    /// A v1 server answered `'' is not connected`.
    V1,
    /// No answer within the HELLO timeout, or within what PENDING
    /// promised (`pending`: a pmchat server said it was working on it).
    Silent { pending: bool },
    /// Not an outcome: the server is working on the login and will answer
    /// within this long ([`await_login`] waits on).
    Pending(Option<PendingReason>, Duration),
}

/// PENDING frames heeded per login: a server that keeps sending them is
/// not believed forever.
const MAX_PENDING: usize = 8;
/// The longest one PENDING may make us wait, whatever it says.
const MAX_PENDING_WAIT: Duration = Duration::from_secs(120);

/// The channel on which the receiving side tells the login's outcome:
/// room for every PENDING heeded and the outcome, so nothing is dropped.
pub fn login_channel() -> (async_channel::Sender<Login>, async_channel::Receiver<Login>) {
    async_channel::bounded(MAX_PENDING + 1)
}

/// The receiving side's view of the HELLO exchange.
pub struct Negotiation {
    /// Told the outcome once it is known; `None` once it was told (or when
    /// no HELLO was sent).
    pub outcome: Option<async_channel::Sender<Login>>,
    /// We asked for presence, so the first ONLINE list after WELCOME is the
    /// snapshot, not an answer to `who`.
    pub presence: bool,
    /// `'' is not connected` errors still to be read as a v1 server's
    /// answers to our login frames (HELLO, AUTH) rather than shown.
    pub v1_answers: u8,
    /// A refusal because the name is taken is not shown: the caller will
    /// try again (reconnecting while our stale session holds the name).
    pub quiet_name_taken: bool,
    /// A refusal for want of a password is not shown: the caller asks for
    /// one and logs in again.
    pub quiet_password_required: bool,
    /// PENDING frames heeded so far.
    pub pending: usize,
}

impl Negotiation {
    /// The negotiation of a login that tells `outcome`.
    pub fn new(outcome: async_channel::Sender<Login>, greeting: &super::Greeting) -> Self {
        Negotiation {
            outcome: Some(outcome),
            presence: greeting.presence,
            v1_answers: greeting.v1_answers,
            quiet_name_taken: false,
            quiet_password_required: false,
            pending: 0,
        }
    }
}

/// Reads frames until the server closes the connection, handing each to
/// `sink` and flushing the sink whenever the socket has nothing more ready
/// or [`FLUSH_AT`] bytes are pending. A flush that waits (stdout is full)
/// stops the reading too, so a flood is held back by the server's
/// slow-consumer rule instead of growing this process.
///
/// With `messages_left` (`--count`), each message printed counts it down,
/// and the loop ends ([`Received::Enough`]) once it reaches zero and the
/// last one is written.
pub async fn receive(
    transport: &Transport,
    sink: &mut impl Sink,
    state: &ChatState,
    negotiation: Negotiation,
    messages_left: Option<&AtomicU64>,
) -> Received {
    let mut input = FrameReader::new(state.wire().decoder());
    let mut frames = FrameHandler::new(negotiation);
    loop {
        loop {
            match input.next_frame() {
                Ok(Some(frame)) => {
                    let message = matches!(frame, ServerFrame::Message { .. });
                    frames.handle(frame, sink, state);
                    if message && counted_down(messages_left) {
                        return match sink.flush().await {
                            Err(e) => output_failed(e),
                            Ok(()) => Received::Enough,
                        };
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = sink.flush().await;
                    if frames.first {
                        let start = input.buffered();
                        let start = escape(&start[..start.len().min(24)]);
                        return Received::NotChat { error, start };
                    }
                    return Received::Protocol(error);
                }
            }
            if sink.pending() >= FLUSH_AT {
                if let Err(e) = sink.flush().await {
                    return output_failed(e);
                }
            }
        }
        match transport.try_read(&mut input) {
            Ok(0) => {
                return match sink.flush().await {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Received::OutputGone,
                    _ => Received::Closed {
                        after_error: frames.after_error,
                    },
                };
            }
            Ok(_) => {
                if sink.wants_stamps() {
                    sink.set_stamp(Stamp::now());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more right now: show what we have, then wait.
                if let Err(e) = sink.flush().await {
                    return output_failed(e);
                }
                input.release();
                if let Err(end) = wait_readable(transport, sink.gone()).await {
                    return end;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = sink.flush().await;
                return Received::Failed(e);
            }
        }
    }
}

/// Counts one message against `--count`; true when it was the last one
/// wanted.
fn counted_down(messages_left: Option<&AtomicU64>) -> bool {
    messages_left.is_some_and(|left| {
        let before = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .unwrap_or(0);
        before <= 1
    })
}

/// Waits until the socket has input, or says why the session ends: the
/// socket failed, or stdout went away while we waited.
async fn wait_readable(
    transport: &Transport,
    output_gone: impl Future<Output = ()>,
) -> Result<(), Received> {
    async { transport.readable().await.map_err(Received::Failed) }
        .or(async {
            output_gone.await;
            Err(Received::OutputGone)
        })
        .await
}

/// What the receiving side makes of each frame, and what it remembers
/// between frames.
struct FrameHandler {
    negotiation: Negotiation,
    /// The last frame was an error (which then explains a close).
    after_error: bool,
    /// Nothing valid arrived yet: garbage now means "not a chat server".
    first: bool,
    /// ONLINE pages collected so far, and what they are for.
    online: Vec<String>,
    collecting: Collecting,
    /// WELCOME arrived and asked-for presence: the next list is the
    /// snapshot that completes the login.
    awaiting_snapshot: bool,
}

impl FrameHandler {
    fn new(negotiation: Negotiation) -> Self {
        FrameHandler {
            negotiation,
            after_error: false,
            first: true,
            online: Vec::new(),
            collecting: Collecting::Nothing,
            awaiting_snapshot: false,
        }
    }

    fn handle(&mut self, frame: ServerFrame<'_>, sink: &mut impl Sink, state: &ChatState) {
        self.first = false;
        self.after_error = matches!(frame, ServerFrame::Error { .. });
        match frame {
            ServerFrame::Message { from, content } => {
                state.received_from(&String::from_utf8_lossy(from));
                sink.message(from, content);
            }
            // A v1 server's answers to HELLO and AUTH: swallowed.
            ServerFrame::Error { text, .. }
                if self.negotiation.v1_answers > 0 && text == v1::V1_HELLO_ANSWER =>
            {
                self.negotiation.v1_answers -= 1;
                self.after_error = false;
                tell(&mut self.negotiation.outcome, Login::V1);
            }
            ServerFrame::Error { code, text } => {
                // Before the login was confirmed, any error is its refusal.
                let during_login = self
                    .negotiation
                    .outcome
                    .as_ref()
                    .is_some_and(|outcome| !outcome.is_closed());
                state.server_error(code, text, during_login);
                let quiet = (self.negotiation.quiet_name_taken && state.login_retryable())
                    || (self.negotiation.quiet_password_required && state.password_required());
                if !quiet {
                    sink.error(code, text);
                }
            }
            ServerFrame::Pending { reason, wait_ms } => {
                let negotiation = &mut self.negotiation;
                if let Some(outcome) = &negotiation.outcome {
                    if negotiation.pending < MAX_PENDING {
                        negotiation.pending += 1;
                        let wait = Duration::from_millis(wait_ms).min(MAX_PENDING_WAIT);
                        let reason = PendingReason::from_code(reason);
                        let _ = outcome.try_send(Login::Pending(reason, wait));
                    }
                }
            }
            ServerFrame::Welcome { limits, .. } => {
                self.negotiation.v1_answers = 0;
                state.set_extended(
                    v1::parse_limits(limits),
                    v1::welcome_authenticated(limits),
                    v1::lists_word(limits, v1::FEATURE_RECEIPTS),
                );
                if let Some(token) = v1::welcome_value(limits, v1::WELCOME_TOKEN) {
                    state.device_token_issued(token);
                }
                if self.negotiation.presence {
                    self.awaiting_snapshot = true;
                } else {
                    tell(&mut self.negotiation.outcome, Login::Extended);
                }
            }
            ServerFrame::Online { last, names } => self.online_page(last, names, sink, state),
            ServerFrame::Presence { joined, name } => {
                state.presence(joined, &String::from_utf8_lossy(name));
                sink.presence(joined, name);
            }
            ServerFrame::Accepted { through } => {
                state.ledger().accepted(through, |sent| sink.accepted(sent));
            }
            ServerFrame::Refused {
                ordinal,
                code,
                text,
            } => {
                state.fail();
                match state.ledger().refused(ordinal, |sent| sink.accepted(sent)) {
                    Some(sent) => sink.refused(&sent, code, text),
                    // Not a message of ours in flight: shown as it is.
                    None => sink.error(code, text),
                }
            }
        }
    }

    /// Collects an ONLINE page; the last one completes the list. Only the
    /// snapshot and answers to our own `who` are kept (up to
    /// [`MAX_ONLINE_USERS`] names); anything else is read and dropped.
    fn online_page(&mut self, last: bool, names: &[u8], sink: &mut impl Sink, state: &ChatState) {
        if self.collecting == Collecting::Nothing {
            self.collecting = if self.awaiting_snapshot {
                Collecting::Snapshot
            } else if state.who_expected() {
                Collecting::Answer
            } else {
                Collecting::Unasked
            };
        }
        if self.collecting != Collecting::Unasked {
            let room = MAX_ONLINE_USERS.saturating_sub(self.online.len());
            self.online.extend(
                names
                    .split(|&b| b == b'\n')
                    .filter(|n| !n.is_empty())
                    .take(room)
                    .map(|n| String::from_utf8_lossy(n).into_owned()),
            );
        }
        if !last {
            return;
        }
        let mut online = std::mem::take(&mut self.online);
        online.sort_unstable();
        match std::mem::replace(&mut self.collecting, Collecting::Nothing) {
            Collecting::Snapshot => {
                self.awaiting_snapshot = false;
                state.set_online(&online);
                tell(&mut self.negotiation.outcome, Login::Extended);
            }
            Collecting::Answer => {
                state.who_answered();
                sink.online(&online);
            }
            Collecting::Unasked | Collecting::Nothing => {}
        }
    }
}

/// What the ONLINE pages being received are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Collecting {
    /// No list in progress.
    Nothing,
    /// The presence snapshot that completes the login.
    Snapshot,
    /// The answer to our `who`.
    Answer,
    /// Nobody asked: read and dropped.
    Unasked,
}

/// A failed write to our own stdout: a closed pipe is a normal end; other
/// failures end the session too (there is nowhere to show messages).
fn output_failed(error: io::Error) -> Received {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Received::OutputGone
    } else {
        Received::Failed(error)
    }
}

fn tell(outcome: &mut Option<async_channel::Sender<Login>>, login: Login) {
    if let Some(outcome) = outcome.take() {
        let _ = outcome.try_send(login);
    }
}

/// Waits for the outcome of HELLO: the receiving side's verdict, or
/// [`Login::Silent`] if nothing came within `timeout`. A PENDING from the
/// server moves the deadline to what it promised plus `timeout`, and is
/// handed to `pending` (to tell the user); never returned. `None` means the
/// receiving side ended first (the server closed the connection).
pub async fn await_login(
    outcome: &async_channel::Receiver<Login>,
    timeout: Duration,
    mut pending: impl FnMut(Option<PendingReason>, Duration),
) -> Option<Login> {
    let mut deadline = std::time::Instant::now() + timeout;
    let mut told_pending = false;
    loop {
        match runtime::until(deadline, outcome.recv()).await {
            Some(Ok(Login::Pending(reason, wait))) => {
                told_pending = true;
                deadline = std::time::Instant::now() + wait + timeout;
                pending(reason, wait);
            }
            Some(told) => return told.ok(),
            None => {
                // Whatever comes later is no longer the login's answer.
                outcome.close();
                return Some(Login::Silent {
                    pending: told_pending,
                });
            }
        }
    }
}

/// What a PENDING means, for people.
pub fn pending_notice(reason: Option<PendingReason>, wait: Duration) -> String {
    let what = match reason {
        Some(PendingReason::Password) => "checking the password (slowed down after failed logins)",
        Some(PendingReason::Cluster) => "claiming the name across its cluster",
        None => "working on the login",
    };
    format!(
        "the server is {what}; waiting up to {}",
        crate::args::format_wait(wait)
    )
}
