//! The sockets under this node's Redis connections (`--cluster`), opened
//! here rather than by the `redis` crate, so that reading a push costs what
//! the push holds.
//!
//! The crate's smol adapter hands its socket the whole free part of the
//! connection's read buffer on every read, zeroing it first (its `poll_read`
//! calls `ReadBuf::initialize_unfilled`, and the codec above presents that
//! space as fresh each time). The buffer grows to the largest push the
//! connection has carried, an inbox batch of up to
//! `OUTBOX_BYTES` (see `cluster::outbox`), and never shrinks: after
//! a burst of cross-node traffic every later read, even of one 60-byte
//! message, zeroed a megabyte or more first. That was 61% of a receiving
//! node's CPU at 10,000 msgs/s, and the cross-node p99 went from about
//! 250 µs to 0.7–1 ms.
//! [`RedisStream`] reads into a scratch buffer of its own, initialised once,
//! and copies only the bytes that came.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisError, RedisFuture, RedisResult, Value,
};
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use smol::Task;
use tokio::io::ReadBuf;

use crate::net::socket::Socket;

/// How long a connection attempt or a command may take before Redis counts
/// as unreachable.
pub(super) const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes one read takes from the socket at most: enough that a flood of
/// 1 MiB batches costs a few dozen reads each.
const SCRATCH_BYTES: usize = 64 << 10;

/// A socket as the `redis` crate's codec reads it: through a reused,
/// initialised scratch buffer, never by zeroing the codec's free space.
pub(super) struct RedisStream<S> {
    socket: S,
    scratch: Box<[u8]>,
}

impl<S> RedisStream<S> {
    pub(super) fn new(socket: S) -> RedisStream<S> {
        RedisStream {
            socket,
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
        }
    }
}

impl<S: AsyncRead + Unpin> tokio::io::AsyncRead for RedisStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = buf.remaining().min(this.scratch.len());
        if room == 0 {
            return Poll::Ready(Ok(()));
        }
        let read = ready!(Pin::new(&mut this.socket).poll_read(cx, &mut this.scratch[..room]))?;
        buf.put_slice(&this.scratch[..read]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> tokio::io::AsyncWrite for RedisStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_close(cx)
    }
}

/// TLS to Redis (`rediss://`), for every connection this process opens to
/// it, a Redis Cluster's shards included (the cluster client opens those
/// through [`NodeConnection`] with addresses it learned, which carry no
/// TLS setting of their own): one cluster per process.
static REDIS_TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Makes every Redis connection use TLS with `config`.
pub(super) fn use_tls(config: Arc<rustls::ClientConfig>) {
    let _ = REDIS_TLS.set(config);
}

/// A byte stream to Redis: TCP, TLS over TCP, or a Unix socket.
pub(super) trait RedisSocket: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> RedisSocket for S {}

/// A socket to Redis, as [`open_socket`] opened it.
pub(super) enum Opened {
    /// Plain TCP: it may be shared (see `cluster::flight`).
    Plain(Socket),
    /// TLS over TCP, or a Unix socket.
    Other(Box<dyn RedisSocket>),
}

/// Opens a socket to the Redis at `info`: TLS when [`use_tls`] was called.
/// Not bounded in time: callers bound it with their handshake.
pub(super) async fn connect_socket(info: &ConnectionInfo) -> RedisResult<Box<dyn RedisSocket>> {
    Ok(match open_socket(info).await? {
        Opened::Plain(socket) => Box::new(socket),
        Opened::Other(socket) => socket,
    })
}

/// [`connect_socket`], saying whether the socket is plain TCP.
pub(super) async fn open_socket(info: &ConnectionInfo) -> RedisResult<Opened> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let socket = TcpStream::connect((host.as_str(), *port)).await?;
            // A lone message must not wait for the acknowledgement of the
            // one before it.
            socket.set_nodelay(true)?;
            // Connected: on the background thread (a worker), the socket
            // joins its epoll, so that a push from Redis wakes that thread
            // alone (see `net::background`); elsewhere it stays with
            // async-io.
            let socket = Socket::adopt(into_std(socket)?)?;
            match REDIS_TLS.get() {
                None => Ok(Opened::Plain(socket)),
                Some(tls) => {
                    // The host's name (or address) must be in Redis's
                    // certificate.
                    let name = rustls_pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    let connector = futures_rustls::TlsConnector::from(Arc::clone(tls));
                    Ok(Opened::Other(Box::new(
                        connector.connect(name, socket).await?,
                    )))
                }
            }
        }
        ConnectionAddr::Unix(path) => Ok(Opened::Other(Box::new(
            smol::net::unix::UnixStream::connect(path).await?,
        ))),
        other => Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "unsupported Redis address (TCP or a Unix socket, without TLS)",
            other.to_string(),
        ))),
    }
}

/// The connected socket under `socket`, no longer async-io's.
fn into_std(socket: TcpStream) -> io::Result<std::net::TcpStream> {
    let shared: Arc<smol::Async<std::net::TcpStream>> = socket.into();
    Arc::try_unwrap(shared)
        .map_err(|_| io::Error::other("the socket is shared"))?
        .into_inner()
}

/// A connection to one Redis server over a [`RedisStream`]: the crate's
/// multiplexed connection, with the task that drives it, which stops when
/// the last clone is dropped (as the crate's own connections do).
#[derive(Clone)]
pub(super) struct NodeConnection {
    connection: MultiplexedConnection,
    _driver: Arc<Task<()>>,
}

impl NodeConnection {
    /// Connects to the Redis at `info` with `config` (pushes, response
    /// timeout), given [`REDIS_TIMEOUT`] to connect and say hello.
    pub(super) async fn open(
        info: &ConnectionInfo,
        config: AsyncConnectionConfig,
    ) -> RedisResult<NodeConnection> {
        let handshake = async {
            let socket = connect_socket(info).await?;
            NodeConnection::over(socket, info, config).await
        };
        let late = async {
            smol::Timer::after(REDIS_TIMEOUT).await;
            Err(RedisError::from(io::Error::new(
                io::ErrorKind::TimedOut,
                "Redis did not answer in time",
            )))
        };
        smol::future::or(handshake, late).await
    }

    /// Says hello over `socket` and starts the driver.
    async fn over<S>(
        socket: S,
        info: &ConnectionInfo,
        config: AsyncConnectionConfig,
    ) -> RedisResult<NodeConnection>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stream = RedisStream::new(socket);
        let (connection, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, config).await?;
        Ok(NodeConnection {
            connection,
            _driver: Arc::new(crate::net::background::spawn(driver)),
        })
    }

    /// Subscribes to `channel`; its messages come as pushes.
    pub(super) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        self.connection.subscribe(channel).await
    }

    /// Ends a subscription of [`NodeConnection::subscribe`].
    pub(super) async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        self.connection.unsubscribe(channel).await
    }
}

impl ConnectionLike for NodeConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        self.connection.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.connection.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.connection.get_db()
    }
}

/// How a Redis Cluster connection opens its connection to each shard.
impl redis::cluster_async::Connect for NodeConnection {
    fn connect_with_config<'a, T>(info: T, config: AsyncConnectionConfig) -> RedisFuture<'a, Self>
    where
        T: IntoConnectionInfo + Send + 'a,
    {
        Box::pin(async move { NodeConnection::open(&info.into_connection_info()?, config).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::Cursor;
    use tokio::io::AsyncRead as _;

    /// Reads what `stream` gives into a buffer with `free` bytes of
    /// uninitialised space, as the crate's codec does.
    fn read_into(stream: &mut RedisStream<Cursor<Vec<u8>>>, free: usize) -> Vec<u8> {
        read_counting_zeroed(stream, free).0
    }

    /// As [`read_into`], with how many bytes of the space were initialised
    /// (written or zeroed) by the read.
    fn read_counting_zeroed(
        stream: &mut RedisStream<Cursor<Vec<u8>>>,
        free: usize,
    ) -> (Vec<u8>, usize) {
        let mut space = vec![std::mem::MaybeUninit::uninit(); free];
        let mut buf = ReadBuf::uninit(&mut space);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(stream).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => (buf.filled().to_vec(), buf.initialized().len()),
            other => panic!("read did not complete: {other:?}"),
        }
    }

    #[test]
    fn a_small_push_in_a_huge_buffer_reads_only_what_came() {
        let mut stream = RedisStream::new(Cursor::new(b"+OK\r\n".to_vec()));
        let (got, initialised) = read_counting_zeroed(&mut stream, 8 << 20);
        assert_eq!(got, b"+OK\r\n", "expected the 5 bytes sent, got {got:?}");
        assert_eq!(initialised, 5, "the read zeroed the buffer's free space");
    }

    #[test]
    fn a_push_larger_than_the_scratch_comes_in_pieces_in_order() {
        let sent: Vec<u8> = (0..SCRATCH_BYTES * 3 + 17).map(|i| i as u8).collect();
        let mut stream = RedisStream::new(Cursor::new(sent.clone()));
        let mut got = Vec::new();
        loop {
            let piece = read_into(&mut stream, 1 << 20);
            assert!(piece.len() <= SCRATCH_BYTES);
            if piece.is_empty() {
                break;
            }
            got.extend_from_slice(&piece);
        }
        assert!(got == sent, "bytes came out changed or reordered");
    }

    #[test]
    fn a_buffer_smaller_than_the_scratch_is_not_overrun() {
        let mut stream = RedisStream::new(Cursor::new(b"$5\r\nhello\r\n".to_vec()));
        assert_eq!(read_into(&mut stream, 4), b"$5\r\n");
        assert_eq!(read_into(&mut stream, 64), b"hello\r\n");
        assert_eq!(read_into(&mut stream, 64), b"");
    }
}
