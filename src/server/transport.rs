//! The byte stream under a session: plain TCP today.
//!
//! A session reads and writes only through [`Transport`]: non-blocking
//! reads into a [`FrameReader`], waiting for input, whole-batch writes,
//! half-close, and discarding input before a close.
//!
//! **Adding a transport** (TLS, say): add a variant and implement these
//! methods for it. [`Transport::direct`] is the one choice to make: plain
//! TCP hands out its socket so that a sender's reader can write an idle
//! recipient's queue straight to it (the fast path, see
//! [`super::outbound`]); a stream whose writes need exclusive state (a TLS
//! session) returns `None` there, and every write then goes through the
//! session's own writer task.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Weak};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

use crate::framing::{Decoder, FrameReader};

/// One connection's byte stream; cheap to clone (the writer task holds a
/// clone).
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    /// Plain TCP.
    Tcp(Arc<Async<TcpStream>>),
}

impl Transport {
    /// A plain TCP connection.
    pub(crate) fn tcp(stream: Async<TcpStream>) -> Self {
        // Chat messages are small and latency matters more than packet
        // count; batching already happens in the queues.
        let _ = stream.get_ref().set_nodelay(true);
        Transport::Tcp(Arc::new(stream))
    }

    /// Reads once without waiting; `WouldBlock` when nothing is there,
    /// `Ok(0)` at end of input.
    pub(crate) fn try_read<D: Decoder>(&self, reader: &mut FrameReader<D>) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => reader.read_from(stream.get_ref()),
        }
    }

    /// Reads once, waiting for input; `Ok(0)` at end of input.
    pub(crate) async fn read<D: Decoder>(&self, reader: &mut FrameReader<D>) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => reader.fill_from(&**stream).await,
        }
    }

    /// Waits until a read would not block.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => stream.readable().await,
        }
    }

    /// Writes all of `bytes`, waiting for room.
    pub(crate) async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => (&**stream).write_all(bytes).await,
        }
    }

    /// Ends the write side (the peer reads end of input).
    pub(crate) fn shutdown_write(&self) {
        match self {
            Transport::Tcp(stream) => {
                let _ = stream.get_ref().shutdown(Shutdown::Write);
            }
        }
    }

    /// Reads and drops input until the peer closes or the read fails.
    pub(crate) async fn discard_input(&self) {
        // On the heap: an array here would make every connection's future
        // 4 KiB bigger for its whole life.
        let mut sink = vec![0u8; 4096];
        match self {
            Transport::Tcp(stream) => {
                while let Ok(n) = (&**stream).read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        }
    }

    /// The socket for direct writes by other sessions' readers, if this
    /// transport allows them. Weak: a session cached by others after it
    /// ended must not keep its socket open.
    pub(crate) fn direct(&self) -> Option<Weak<Async<TcpStream>>> {
        match self {
            Transport::Tcp(stream) => Some(Arc::downgrade(stream)),
        }
    }
}
