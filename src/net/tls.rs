//! TLS over a [`Socket`], for both sides: the session a [`Transport`]
//! reads and writes (split into halves so that the reader and the writers
//! never wait for each other), the buffered socket under rustls, and the
//! client's settings and handshake. The server's certificates and its
//! accept step are `server::tls`.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_rustls::TlsStream;
use smol::io::{split, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use smol::lock::Mutex;

use super::socket::Socket;
use super::socket::Written;
use crate::wire::framing::{Decoder, FrameReader};

/// A TLS session over a shared socket.
#[derive(Debug)]
pub(crate) struct TlsConnection {
    pub(super) socket: Arc<Socket>,
    pub(super) reader: Mutex<ReadHalf<TlsStream<SharedSocket>>>,
    writer: Mutex<WriteHalf<TlsStream<SharedSocket>>>,
}

/// A socket that the TLS layer and the transport both hold, read through a
/// buffer: rustls asks for 4 KiB at a time, and without the buffer a busy
/// TLS connection would cost a `read` syscall per 4 KiB instead of per
/// 32 KiB. The buffer is freed when the socket has nothing more to read,
/// so an idle TLS connection keeps none. It is sized to what arrives: a
/// wake for one message allocates (and zeroes) [`TLS_READ_FIRST`], and it
/// doubles, up to [`TLS_READ_CHUNK`], for each read that fills it, where a
/// busy connection keeps it.
#[derive(Debug)]
pub(crate) struct SharedSocket {
    socket: Arc<Socket>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled the buffer: more is likely waiting.
    filled: bool,
}

/// Bytes read from a TLS connection's socket by the first read after it
/// was idle: what rustls asks for at a time.
const TLS_READ_FIRST: usize = 4 * 1024;
/// The most bytes read from a TLS connection's socket per syscall.
const TLS_READ_CHUNK: usize = 32 * 1024;

impl SharedSocket {
    pub(crate) fn new(socket: Arc<Socket>) -> Self {
        SharedSocket {
            socket,
            buf: Vec::new(),
            start: 0,
            end: 0,
            filled: false,
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
                this.buf = vec![0; TLS_READ_FIRST];
            } else if this.filled && this.buf.len() < TLS_READ_CHUNK {
                // Zeroes only the new part.
                this.buf.resize((this.buf.len() * 2).min(TLS_READ_CHUNK), 0);
            }
            let n = match Pin::new(&mut &*this.socket).poll_read(cx, &mut this.buf) {
                Poll::Ready(Ok(n)) => n,
                Poll::Pending => {
                    // Nothing to read: the connection is (for now) idle.
                    this.buf = Vec::new();
                    this.filled = false;
                    return Poll::Pending;
                }
                other => return other,
            };
            this.filled = n == this.buf.len();
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

impl TlsConnection {
    pub(super) fn new(socket: Arc<Socket>, stream: TlsStream<SharedSocket>) -> Self {
        let (reader, writer) = split(stream);
        TlsConnection {
            socket,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        }
    }

    pub(super) async fn read<D: Decoder>(&self, reader: &mut FrameReader<D>) -> io::Result<usize> {
        reader.fill_from(&mut *self.reader.lock().await).await
    }

    pub(super) async fn read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.lock().await.read(buf).await
    }

    pub(super) async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut writer = self.writer.lock().await;
        writer.write_all(bytes).await?;
        // TLS buffers records: push them out now.
        writer.flush().await
    }

    pub(super) fn write_now(&self, bytes: &[u8]) -> io::Result<Written> {
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

    pub(super) async fn close(&self) {
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
