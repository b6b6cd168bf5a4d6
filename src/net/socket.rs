//! A TCP socket and whoever tracks its readiness: async-io's reactor (the
//! client, the benchmark, the server's in-process tests) or the server
//! worker the socket was handed to ([`super::workers`]; the background
//! thread is one, [`super::background`]). Everything above
//! reads and writes it through [`super::transport::Transport`].

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use smol::io::{AsyncRead, AsyncWrite};
use smol::Async;

use super::workers::WorkerStream;

/// A TCP socket and whoever tracks its readiness: async-io's reactor (the
/// client, the benchmark, the server's tests), or the server worker it was
/// handed to ([`super::workers`]).
#[derive(Debug)]
pub(crate) enum Socket {
    Reactor(Async<TcpStream>),
    Worker(WorkerStream),
}

impl Socket {
    /// For a server connection (or one of the background thread's):
    /// registered with the worker this thread is, or left with async-io's
    /// reactor off the workers.
    pub(crate) fn adopt(stream: TcpStream) -> io::Result<Socket> {
        if super::workers::current_index().is_none() {
            return Ok(Socket::Reactor(Async::new(stream)?));
        }
        Ok(Socket::Worker(WorkerStream::register(stream)?))
    }

    pub(crate) fn get_ref(&self) -> &TcpStream {
        match self {
            Socket::Reactor(stream) => stream.get_ref(),
            Socket::Worker(stream) => stream.get_ref(),
        }
    }

    /// Waits until a read may find input.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Socket::Reactor(stream) => stream.readable().await,
            Socket::Worker(stream) => stream.readable().await,
        }
    }

    /// Waits until more input than is buffered now may have arrived. A
    /// worker's readiness is edge-triggered: it fires only when new data
    /// comes. async-io's fires again at once while anything is unread, so
    /// off the workers (the server's in-process tests) this polls on a
    /// timer instead.
    pub(crate) async fn more_input(&self) {
        match self {
            Socket::Reactor(_) => {
                smol::Timer::after(std::time::Duration::from_millis(5)).await;
            }
            Socket::Worker(stream) => {
                let _ = stream.readable().await;
            }
        }
    }

    /// Like `TcpStream::peek`, waiting for input.
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Reactor(stream) => stream.peek(buf).await,
            Socket::Worker(stream) => stream.peek(buf).await,
        }
    }
}

impl AsyncRead for &Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match *self {
            Socket::Reactor(stream) => Pin::new(&mut &*stream).poll_read(cx, buf),
            Socket::Worker(stream) => Pin::new(&mut &*stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for &Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match *self {
            Socket::Reactor(stream) => Pin::new(&mut &*stream).poll_write(cx, buf),
            Socket::Worker(stream) => Pin::new(&mut &*stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match *self {
            Socket::Reactor(stream) => Pin::new(&mut &*stream).poll_write_vectored(cx, bufs),
            Socket::Worker(stream) => Pin::new(&mut &*stream).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {
            Socket::Reactor(stream) => Pin::new(&mut &*stream).poll_flush(cx),
            Socket::Worker(stream) => Pin::new(&mut &*stream).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {
            Socket::Reactor(stream) => Pin::new(&mut &*stream).poll_close(cx),
            Socket::Worker(stream) => Pin::new(&mut &*stream).poll_close(cx),
        }
    }
}

/// An owned socket reads and writes as a shared one does (for streams
/// that want to own theirs: the Redis connections, TLS over them).
impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.get_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.get_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.get_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.get_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.get_mut()).poll_close(cx)
    }
}

/// What a write that never waits did ([`super::transport::Transport::write_now`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    /// Bytes taken from the front of the batch; the connection delivers
    /// them from now on.
    pub(crate) taken: usize,
    /// Some of them are still inside the connection (TLS records waiting
    /// for room on the socket): a later write, even of nothing, must flush
    /// them.
    pub(crate) unflushed: bool,
}
