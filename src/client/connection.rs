//! The client's side of the socket: connecting, and the receiving loop that
//! turns server frames into output.
//!
//! Sending is done by whoever owns the write side (the batch loop or the
//! REPL's writer task), always one writer at a time, so frames are never
//! interleaved.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use smol::future::FutureExt;
use smol::{Async, Timer};

use super::output::Output;
use super::state::ChatState;
use crate::protocol::{self, Decoded, FrameError, ReadBuffer, ServerFrame};

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
        let attempt = Async::<TcpStream>::connect(addr)
            .or(async {
                Timer::after(timeout).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await;
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

/// Where received frames go.
pub trait Sink {
    /// A message from `from`.
    fn message(&mut self, from: &[u8], content: &[u8]);
    /// An error reported by the server.
    fn error(&mut self, text: &[u8]);
    /// The answer to a `who`: the online users, sorted.
    fn online(&mut self, names: &[String]);
    /// A presence event.
    fn presence(&mut self, joined: bool, name: &[u8]);
    /// No further frame is immediately waiting: show what is pending.
    fn flush(&mut self) -> io::Result<()>;
}

impl Sink for Output {
    fn message(&mut self, from: &[u8], content: &[u8]) {
        Output::message(self, from, content);
    }

    fn error(&mut self, text: &[u8]) {
        Output::error(self, text);
    }

    fn online(&mut self, names: &[String]) {
        Output::online(self, names);
    }

    fn presence(&mut self, joined: bool, name: &[u8]) {
        Output::presence(self, joined, name);
    }

    fn flush(&mut self) -> io::Result<()> {
        Output::flush(self)
    }
}

/// How the receiving loop ended.
#[derive(Debug)]
pub enum Received {
    /// The server closed the connection. `after_error` says whether the
    /// last frame was an error, which then explains the close.
    Closed { after_error: bool },
    /// The connection failed.
    Failed(io::Error),
    /// The server sent something that is not v1.
    Protocol(FrameError),
    /// Our stdout went away (`| head`): a normal end.
    OutputGone,
}

/// How the server answered our HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// WELCOME (and, if asked, the presence snapshot) arrived.
    Extended,
    /// A v1 server answered `'' is not connected`.
    V1,
}

/// The receiving side's view of the HELLO exchange.
pub struct Negotiation {
    /// Told the outcome once it is known; `None` once it was told (or when
    /// no HELLO was sent).
    pub outcome: Option<async_channel::Sender<Login>>,
    /// We asked for presence, so the first ONLINE list after WELCOME is the
    /// snapshot, not an answer to `who`.
    pub presence: bool,
}

/// Reads frames until the server closes the connection, handing each to
/// `sink` and flushing the sink whenever the socket has nothing more ready.
pub async fn receive(
    stream: &Async<TcpStream>,
    sink: &mut impl Sink,
    state: &ChatState,
    mut negotiation: Negotiation,
) -> Received {
    let mut input = ReadBuffer::new(protocol::MAX_SERVER_FRAME);
    let mut after_error = false;
    // ONLINE pages collected so far, and whether they are the snapshot.
    let mut online: Vec<String> = Vec::new();
    let mut awaiting_snapshot = false;
    loop {
        loop {
            match protocol::decode_server_frame(input.data()) {
                Ok(Decoded::Frame(frame, used)) => {
                    after_error = matches!(frame, ServerFrame::Error { .. });
                    match frame {
                        ServerFrame::Message { from, content } => {
                            state.received_from(&String::from_utf8_lossy(from));
                            sink.message(from, content);
                        }
                        // A v1 server's answer to HELLO: swallowed.
                        ServerFrame::Error { text }
                            if negotiation.outcome.is_some()
                                && text == protocol::V1_HELLO_ANSWER =>
                        {
                            after_error = false;
                            tell(&mut negotiation.outcome, Login::V1);
                        }
                        ServerFrame::Error { text } => {
                            state.server_error(text);
                            sink.error(text);
                        }
                        ServerFrame::Welcome { limits, .. } => {
                            state.set_extended(protocol::parse_limits(limits));
                            if negotiation.presence {
                                awaiting_snapshot = true;
                            } else {
                                tell(&mut negotiation.outcome, Login::Extended);
                            }
                        }
                        ServerFrame::Online { last, names } => {
                            online.extend(
                                names
                                    .split(|&b| b == b'\n')
                                    .filter(|n| !n.is_empty())
                                    .map(|n| String::from_utf8_lossy(n).into_owned()),
                            );
                            if last {
                                online.sort_unstable();
                                if awaiting_snapshot {
                                    awaiting_snapshot = false;
                                    state.set_online(&online);
                                    tell(&mut negotiation.outcome, Login::Extended);
                                } else {
                                    sink.online(&online);
                                }
                                online.clear();
                            }
                        }
                        ServerFrame::Presence { joined, name } => {
                            state.presence(joined, &String::from_utf8_lossy(name));
                            sink.presence(joined, name);
                        }
                    }
                    input.consume(used);
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    let _ = sink.flush();
                    return Received::Protocol(e);
                }
            }
        }
        match stream.get_ref().read(input.unfilled()) {
            Ok(0) => {
                return match sink.flush() {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Received::OutputGone,
                    _ => Received::Closed { after_error },
                };
            }
            Ok(n) => input.filled(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more right now: show what we have, then wait.
                if let Err(e) = sink.flush() {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Received::OutputGone;
                    }
                }
                input.release();
                if let Err(e) = stream.readable().await {
                    return Received::Failed(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = sink.flush();
                return Received::Failed(e);
            }
        }
    }
}

fn tell(outcome: &mut Option<async_channel::Sender<Login>>, login: Login) {
    if let Some(outcome) = outcome.take() {
        let _ = outcome.try_send(login);
    }
}

/// Waits for the outcome of HELLO: the receiving side's verdict, or v1 if
/// nothing came within `timeout` (some servers never answer). `None` means
/// the receiving side ended first (the server closed the connection).
pub async fn await_login(
    outcome: &async_channel::Receiver<Login>,
    timeout: Duration,
) -> Option<Login> {
    async { outcome.recv().await.ok() }
        .or(async {
            Timer::after(timeout).await;
            Some(Login::V1)
        })
        .await
}
