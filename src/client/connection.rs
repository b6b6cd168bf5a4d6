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

use super::frames::{FrameHandler, Sink, FLUSH_AT};
use super::negotiation::Negotiation;
use super::state::ChatState;
use crate::clock::Stamp;
use crate::net::tls::tls_client_config;
use crate::net::transport::{connect_tls, Transport};
use crate::sanitize::escape;
use crate::wire::framing::FrameReader;
use crate::wire::v1::{FrameError, ServerFrame};

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

/// Keeps what decrypting the frames so far did to the --e2e sessions: once
/// per read batch, not once per message.
fn checkpoint(state: &ChatState) {
    if let Some(e2e) = state.e2e() {
        e2e.checkpoint();
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
                    let message = matches!(
                        frame,
                        ServerFrame::Message { .. }
                            | ServerFrame::Entry {
                                direction: b'r' | b's',
                                ..
                            }
                    );
                    frames.handle(frame, sink, state);
                    if (message && counted_down(messages_left))
                        || (sink.finished() && settled(state))
                    {
                        checkpoint(state);
                        return match sink.flush().await {
                            Err(e) => output_failed(e),
                            Ok(()) => Received::Enough,
                        };
                    }
                }
                Ok(None) => {
                    checkpoint(state);
                    break;
                }
                Err(error) => {
                    checkpoint(state);
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

/// True when a run that ends once the log is replayed may end: its keys
/// reached the server (--e2e), its script's lines are accounted for and
/// its `who` and `history` answered.
fn settled(state: &ChatState) -> bool {
    let publishing = state.e2e().is_some_and(|e2e| e2e.is_publishing());
    !publishing && state.ledger().in_flight() == 0 && !state.awaits_answers()
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

/// A failed write to our own stdout: a closed pipe is a normal end; other
/// failures end the session too (there is nowhere to show messages).
fn output_failed(error: io::Error) -> Received {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Received::OutputGone
    } else {
        Received::Failed(error)
    }
}
