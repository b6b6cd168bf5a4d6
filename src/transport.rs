//! The byte stream under a connection: plain TCP, or TLS over TCP. The
//! server's sessions and the client use the same type.
//!
//! A connection reads and writes only through [`Transport`]: non-blocking
//! reads into a [`FrameReader`], waiting for input, whole-batch writes,
//! writes that never wait ([`Transport::write_now`], the server's fast
//! path: a sender's reader writes an idle recipient's queue straight to
//! its connection), half-close, and discarding input before a close.
//!
//! **Adding a transport**: add a variant and implement these methods for
//! it, and [`WeakTransport`] for the handle other sessions keep.
//!
//! TLS streams are split into a read half and a write half (each locked
//! only for one poll), so the reader and the writers never wait for each
//! other. A write that must not wait takes the write half only if nobody
//! holds it, and leaves what the socket cannot take yet encrypted inside
//! the TLS session for the next writer to flush.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use futures_rustls::TlsStream;
use smol::io::{split, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use smol::lock::Mutex;
use smol::Async;

use crate::wire::framing::{Decoder, FrameReader};
use crate::workers::WorkerStream;

/// One connection's byte stream; cheap to clone (a writer task holds a
/// clone).
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    /// Plain TCP.
    Tcp(Arc<Socket>),
    /// TLS over TCP, client or server side.
    Tls(Arc<TlsConnection>),
}

/// A TCP socket and whoever tracks its readiness: async-io's reactor (the
/// client, the benchmark, the server's tests), or the server worker it was
/// handed to ([`crate::workers`]).
#[derive(Debug)]
pub(crate) enum Socket {
    Reactor(Async<TcpStream>),
    Worker(WorkerStream),
}

impl Socket {
    /// For a server connection: registered with the worker this thread is,
    /// or left with async-io's reactor off the workers.
    pub(crate) fn adopt(stream: TcpStream) -> io::Result<Socket> {
        if crate::workers::current_index().is_none() {
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

/// A connection that does not keep its socket open: what other sessions
/// keep to write to a recipient that may have gone meanwhile.
#[derive(Clone, Debug)]
pub(crate) enum WeakTransport {
    Tcp(Weak<Socket>),
    Tls(Weak<TlsConnection>),
}

impl WeakTransport {
    /// The connection, if it is still open.
    pub(crate) fn upgrade(&self) -> Option<Transport> {
        match self {
            WeakTransport::Tcp(stream) => stream.upgrade().map(Transport::Tcp),
            WeakTransport::Tls(tls) => tls.upgrade().map(Transport::Tls),
        }
    }
}

/// What [`Transport::write_now`] did.
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

/// A TLS session over a shared socket.
#[derive(Debug)]
pub(crate) struct TlsConnection {
    socket: Arc<Socket>,
    reader: Mutex<ReadHalf<TlsStream<SharedSocket>>>,
    writer: Mutex<WriteHalf<TlsStream<SharedSocket>>>,
}

/// A socket that the TLS layer and the transport both hold, read through a
/// buffer: rustls asks for 4 KiB at a time, and without the buffer a busy
/// TLS connection would cost a `read` syscall per 4 KiB instead of per
/// 32 KiB. The buffer is freed when the socket has nothing more to read,
/// so an idle TLS connection keeps none, while a busy one reuses it.
#[derive(Debug)]
pub(crate) struct SharedSocket {
    socket: Arc<Socket>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// Bytes read from a TLS connection's socket per syscall.
const TLS_READ_CHUNK: usize = 32 * 1024;

impl SharedSocket {
    pub(crate) fn new(socket: Arc<Socket>) -> Self {
        SharedSocket {
            socket,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }
}

impl AsyncRead for SharedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.start == this.end {
            if out.len() >= TLS_READ_CHUNK {
                return Pin::new(&mut &*this.socket).poll_read(cx, out);
            }
            if this.buf.is_empty() {
                this.buf = vec![0; TLS_READ_CHUNK];
            }
            let n = match Pin::new(&mut &*this.socket).poll_read(cx, &mut this.buf) {
                Poll::Ready(Ok(n)) => n,
                Poll::Pending => {
                    // Nothing to read: the connection is (for now) idle.
                    this.buf = Vec::new();
                    return Poll::Pending;
                }
                other => return other,
            };
            this.start = 0;
            this.end = n;
        }
        let n = out.len().min(this.end - this.start);
        out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for SharedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.socket).poll_write(cx, buf)
    }

    /// rustls hands over its queued records as one vector: one `writev`
    /// for them all, not one `write` per 16 KiB record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.socket).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.socket).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.socket).poll_close(cx)
    }
}

impl Transport {
    /// A plain TCP connection on async-io's reactor.
    pub(crate) fn tcp(stream: Async<TcpStream>) -> Self {
        Transport::plain(Socket::Reactor(stream))
    }

    /// A plain TCP connection.
    pub(crate) fn plain(socket: Socket) -> Self {
        // Chat messages are small and latency matters more than packet
        // count; batching already happens in the queues.
        let _ = socket.get_ref().set_nodelay(true);
        Transport::Tcp(Arc::new(socket))
    }

    /// A TLS connection whose handshake is done; `socket` is the one under
    /// `stream`.
    pub(crate) fn tls(socket: Arc<Socket>, stream: TlsStream<SharedSocket>) -> Self {
        let (reader, writer) = split(stream);
        Transport::Tls(Arc::new(TlsConnection {
            socket,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        }))
    }

    /// True for TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// True when a read that did not fill its buffer means nothing more is
    /// waiting, so the reader may wait for readiness instead of reading
    /// again: plain TCP. Not TLS, whose layer may hold records already
    /// taken from the socket, which readiness would never announce.
    pub(crate) fn short_read_drains(&self) -> bool {
        matches!(self, Transport::Tcp(_))
    }

    /// Reads once without waiting; `WouldBlock` when nothing is there,
    /// `Ok(0)` at end of input.
    pub(crate) fn try_read<D: Decoder>(&self, reader: &mut FrameReader<D>) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => reader.read_from(stream.get_ref()),
            Transport::Tls(tls) => match tls.reader.try_lock() {
                Some(mut half) => reader.read_from(PollOnce(&mut *half)),
                None => Err(io::ErrorKind::WouldBlock.into()),
            },
        }
    }

    /// Reads once, waiting for input; `Ok(0)` at end of input.
    pub(crate) async fn read<D: Decoder>(&self, reader: &mut FrameReader<D>) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => reader.fill_from(&**stream).await,
            // TLS arms are boxed here and below: their futures are large,
            // and a plain connection's futures must not carry room for them.
            Transport::Tls(tls) => Box::pin(tls.read(reader)).await,
        }
    }

    /// Waits until a read may find input. For TLS, after a read that found
    /// nothing, the session holds no plaintext and only new bytes on the
    /// socket can make progress.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => stream.readable().await,
            Transport::Tls(tls) => tls.socket.readable().await,
        }
    }

    /// Writes all of `bytes`, waiting for room.
    pub(crate) async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => (&**stream).write_all(bytes).await,
            Transport::Tls(tls) => Box::pin(tls.write_all(bytes)).await,
        }
    }

    /// Ends the write side (the peer reads end of input); TLS first says
    /// so with a close_notify alert.
    pub(crate) async fn shutdown_write(&self) {
        match self {
            Transport::Tcp(stream) => {
                let _ = stream.get_ref().shutdown(Shutdown::Write);
            }
            Transport::Tls(tls) => Box::pin(tls.close()).await,
        }
    }

    /// Reads and drops input until the peer closes or the read fails.
    pub(crate) async fn discard_input(&self) {
        // On the heap: an array here would make every connection's future
        // 4 KiB bigger for its whole life.
        let mut sink = vec![0u8; 4096];
        loop {
            let read = match self {
                Transport::Tcp(stream) => (&**stream).read(&mut sink).await,
                Transport::Tls(tls) => Box::pin(tls.read_raw(&mut sink)).await,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        }
    }

    /// The plain socket, for a caller that polls it by hand (the
    /// benchmark's busy-polling receiver); an error for TLS, or while
    /// another handle to the socket is alive.
    pub(crate) fn into_tcp(self) -> io::Result<TcpStream> {
        match self {
            Transport::Tcp(stream) => match Arc::try_unwrap(stream) {
                Ok(Socket::Reactor(stream)) => stream.into_inner(),
                Ok(Socket::Worker(_)) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a server worker's socket stays with its worker",
                )),
                Err(_) => Err(io::Error::other("the socket is still shared")),
            },
            Transport::Tls(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "busy polling (--spin) needs a plain connection, not TLS",
            )),
        }
    }

    /// A handle for other sessions' readers, which write to this
    /// connection directly; weak, so that a session kept in their caches
    /// after it ended does not keep its socket open.
    pub(crate) fn downgrade(&self) -> WeakTransport {
        match self {
            Transport::Tcp(stream) => WeakTransport::Tcp(Arc::downgrade(stream)),
            Transport::Tls(tls) => WeakTransport::Tls(Arc::downgrade(tls)),
        }
    }

    /// Writes as much of `bytes` as can go without waiting. Never waits:
    /// a TLS session whose write half is in use by another writer takes
    /// nothing. An error means the connection is broken.
    pub(crate) fn write_now(&self, bytes: &[u8]) -> io::Result<Written> {
        match self {
            Transport::Tcp(stream) => {
                let mut taken = 0;
                while taken < bytes.len() {
                    match stream.get_ref().write(&bytes[taken..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => taken += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(Written {
                    taken,
                    unflushed: false,
                })
            }
            Transport::Tls(tls) => tls.write_now(bytes),
        }
    }
}

impl TlsConnection {
    async fn read<D: Decoder>(&self, reader: &mut FrameReader<D>) -> io::Result<usize> {
        reader.fill_from(&mut *self.reader.lock().await).await
    }

    async fn read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.lock().await.read(buf).await
    }

    async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut writer = self.writer.lock().await;
        writer.write_all(bytes).await?;
        // TLS buffers records: push them out now.
        writer.flush().await
    }

    fn write_now(&self, bytes: &[u8]) -> io::Result<Written> {
        let Some(mut writer) = self.writer.try_lock() else {
            return Ok(Written {
                taken: 0,
                unflushed: false,
            });
        };
        // Polled once with a waker that does nothing: whoever writes next
        // (the connection's writer task, woken for what is left) registers
        // a real one.
        let mut cx = Context::from_waker(Waker::noop());
        let mut taken = 0;
        while taken < bytes.len() {
            // The TLS layer encrypts into its own buffer (bounded) and
            // sends what the socket takes; `Pending` means both are full.
            match Pin::new(&mut *writer).poll_write(&mut cx, &bytes[taken..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => taken += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        let unflushed = match Pin::new(&mut *writer).poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => false,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => true,
        };
        Ok(Written { taken, unflushed })
    }

    async fn close(&self) {
        let _ = self.writer.lock().await.close().await;
        let _ = self.socket.get_ref().shutdown(Shutdown::Write);
    }
}

/// The rustls client settings: roots from `ca` or from the system.
pub(crate) fn tls_client_config(
    ca: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("no certificate in {}", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted certificates found on this system (use --tls-ca)".into());
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// Runs the client side of a TLS handshake with `host` (its name, or its
/// address, must be in the server's certificate).
pub(crate) async fn connect_tls(
    stream: Async<TcpStream>,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<Transport> {
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let _ = stream.get_ref().set_nodelay(true);
    let socket = Arc::new(Socket::Reactor(stream));
    let connector = futures_rustls::TlsConnector::from(config);
    let tls = connector
        .connect(name, SharedSocket::new(Arc::clone(&socket)))
        .await?;
    Ok(Transport::tls(socket, TlsStream::Client(tls)))
}

/// rustls' ring provider with AES-128-GCM preferred: as safe as AES-256
/// for this use and about a third cheaper per byte, which chat traffic
/// pays on every message (both sides use it, so either's preference wins).
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// Reads an async reader as a non-blocking `std::io::Read`: one poll;
/// `WouldBlock` when it is not ready. The caller then waits for
/// [`Transport::readable`], which registers the real waker.
struct PollOnce<'a, R>(&'a mut R);

impl<R: AsyncRead + Unpin> Read for PollOnce<'_, R> {
    /// Fills as much of `buf` as can be had without waiting. The TLS layer
    /// hands out one record's plaintext per poll; taking every record that
    /// is ready in one call lets the reader route a whole buffer of frames
    /// per batch, as it does on plain TCP.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut filled = 0;
        while filled < buf.len() {
            match Pin::new(&mut *self.0).poll_read(&mut cx, &mut buf[filled..]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => filled += n,
                // What was read is returned first; the error comes back at
                // the next call.
                Poll::Ready(Err(_)) | Poll::Pending if filled > 0 => break,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
        Ok(filled)
    }
}
