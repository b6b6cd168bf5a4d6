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
use smol::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use smol::Async;

use super::socket::{Socket, Written};
use super::tls::{SharedSocket, TlsConnection};
use crate::wire::framing::{Decoder, FrameReader};

/// One connection's byte stream; cheap to clone (a writer task holds a
/// clone).
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    /// Plain TCP.
    Tcp(Arc<Socket>),
    /// TLS over TCP, client or server side.
    Tls(Arc<TlsConnection>),
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
        Transport::Tls(Arc::new(TlsConnection::new(socket, stream)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::Limits;
    use crate::wire::v1::HandshakeDecoder;
    use std::time::Duration;

    fn reader() -> FrameReader<HandshakeDecoder> {
        FrameReader::new(HandshakeDecoder {
            limits: Limits::default(),
        })
    }

    /// A plain transport on one end of a loopback connection, and the
    /// other end as a blocking socket.
    fn plain_pair() -> (Transport, TcpStream) {
        let (client, server) = crate::runtime::loopback_pair();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (Transport::tcp(Async::new(server).unwrap()), client)
    }

    #[test]
    fn a_read_without_input_would_block_and_the_end_of_input_reads_zero() {
        let (transport, mut peer) = plain_pair();
        let mut input = reader();
        let nothing = transport.try_read(&mut input).unwrap_err();
        assert_eq!(io::ErrorKind::WouldBlock, nothing.kind());
        peer.write_all(b"\x05alice").unwrap();
        smol::block_on(transport.readable()).unwrap();
        assert_eq!(6, transport.try_read(&mut input).unwrap());
        assert_eq!(b"\x05alice", input.buffered());
        peer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(0, smol::block_on(transport.read(&mut input)).unwrap());
    }

    #[test]
    fn a_write_that_must_not_wait_takes_what_the_socket_takes_and_no_more() {
        let (transport, mut peer) = plain_pair();
        // Far more than a loopback socket's buffers hold.
        let bytes = vec![7u8; 64 << 20];
        let written = transport.write_now(&bytes).unwrap();
        assert!(written.taken > 0 && written.taken < bytes.len());
        assert!(!written.unflushed, "plain TCP keeps nothing back");
        // What it took arrives, in order; the rest was never sent.
        let mut received = vec![0u8; written.taken];
        peer.read_exact(&mut received).unwrap();
        assert!(received.iter().all(|&b| b == 7));
        smol::block_on(transport.shutdown_write());
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{} bytes past what was taken", rest.len());
    }

    #[test]
    fn a_socket_shared_or_under_tls_is_not_handed_out_for_busy_polling() {
        let (transport, _peer) = plain_pair();
        let other = transport.clone();
        assert!(transport.into_tcp().is_err(), "still shared");
        assert!(other.into_tcp().is_ok());
    }

    #[test]
    fn a_weak_handle_does_not_keep_a_closed_connection() {
        let (transport, _peer) = plain_pair();
        let weak = transport.downgrade();
        assert!(weak.upgrade().is_some());
        drop(transport);
        assert!(weak.upgrade().is_none());
    }

    /// A TLS connection over loopback: the server's transport, the
    /// client's.
    fn tls_pair() -> (Transport, Transport) {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server_config =
            rustls::ServerConfig::builder_with_provider(super::super::tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![der.clone()], private)
                .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client_config =
            rustls::ClientConfig::builder_with_provider(super::super::tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let (client, server) = crate::runtime::loopback_pair();
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(server_config));
        smol::block_on(async {
            let socket = Arc::new(Socket::Reactor(Async::new(server).unwrap()));
            let accepting = acceptor.accept(SharedSocket::new(Arc::clone(&socket)));
            let connecting = connect_tls(
                Async::new(client).unwrap(),
                "localhost",
                Arc::new(client_config),
            );
            let (accepted, connected) = smol::future::zip(accepting, connecting).await;
            let server = Transport::tls(socket, TlsStream::Server(accepted.unwrap()));
            (server, connected.unwrap())
        })
    }

    #[test]
    fn tls_carries_a_batch_both_ways_and_a_direct_write_is_read_whole() {
        let (server, client) = tls_pair();
        smol::block_on(async {
            client.write_all(b"\x05alice").await.unwrap();
            let mut input = reader();
            while input.buffered().len() < 6 {
                server.read(&mut input).await.unwrap();
            }
            assert_eq!(b"\x05alice", input.buffered());
            // The server's fast path: a write that never waits.
            let written = server.write_now(b"\x00\x03bob").unwrap();
            assert_eq!(5, written.taken);
            if written.unflushed {
                server.write_all(&[]).await.unwrap();
            }
            let mut input = reader();
            while input.buffered().len() < 5 {
                client.read(&mut input).await.unwrap();
            }
            assert_eq!(b"\x00\x03bob", input.buffered());
            // A half-close says close_notify, then end of input.
            server.shutdown_write().await;
            assert_eq!(0, client.read(&mut input).await.unwrap());
        });
    }

    #[test]
    fn tls_carries_a_burst_larger_than_any_read_buffer_intact() {
        let (server, client) = tls_pair();
        let burst: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        smol::block_on(async {
            let sending = async {
                client.write_all(&burst).await.unwrap();
                client.shutdown_write().await;
            };
            let receiving = async {
                let mut received = Vec::new();
                let mut input = reader();
                loop {
                    let n = server.read(&mut input).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    received.extend_from_slice(input.buffered());
                    input = reader();
                }
                received
            };
            let ((), received) = smol::future::zip(sending, receiving).await;
            assert!(received == burst, "{} bytes, not the burst", received.len());
        });
    }
}
