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

/// Largest server frame: two 16-bit fields after the header.
const MAX_SERVER_FRAME: usize = protocol::MESSAGE_HEADER_LEN + 2 * u16::MAX as usize;

/// Reads frames until the server closes the connection, handing each to
/// `sink` and flushing the sink whenever the socket has nothing more ready.
pub async fn receive(
    stream: &Async<TcpStream>,
    sink: &mut impl Sink,
    state: &ChatState,
) -> Received {
    let mut input = ReadBuffer::new(MAX_SERVER_FRAME);
    let mut after_error = false;
    loop {
        loop {
            match protocol::decode_server_frame(input.data()) {
                Ok(Decoded::Frame(frame, used)) => {
                    match frame {
                        ServerFrame::Message { from, content } => {
                            after_error = false;
                            state.received_from(&String::from_utf8_lossy(from));
                            sink.message(from, content);
                        }
                        ServerFrame::Error { text } => {
                            after_error = true;
                            state.server_error(text);
                            sink.error(text);
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
