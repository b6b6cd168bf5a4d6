//! One client connection, from handshake to close.
//!
//! The connection's own task reads: it decodes frames in place from a reused
//! buffer and routes each message straight into the recipient's
//! [`OutboundQueue`]. At the end of each read batch it writes the queues it
//! made non-empty directly to their sockets if nobody is writing them; a
//! second task per session, the writer, takes over whatever a socket could
//! not accept at once. The queue's `busy` flag keeps the two from writing at
//! the same time, and no lock is held across an `.await`.
//!
//! Closing is always the same dance, whoever starts it: leave the online
//! list, let the writer flush what is queued (bounded by the flush timeout),
//! shut down the write side, and, if we are the ones ending the connection,
//! read and discard input for a moment so a reset does not destroy the last
//! error frame on its way out.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use smol::future::{self, FutureExt};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};
use tracing::{debug, info, warn};

use super::outbound::{OutboundQueue, PushError};
use super::Shared;
use crate::protocol::{self, ClientFrame, Decoded, FrameError, ReadBuffer, UsernameError};
use crate::sanitize::Escaped;

/// Error text sent to every client when the server stops.
pub const SHUTTING_DOWN: &str = "server is shutting down\n";
/// Error text sent to a client the operator kicked.
pub const KICKED: &str = "you were disconnected by the server operator\n";

/// A logged-in user: what other sessions need to reach it.
#[derive(Debug)]
pub struct Session {
    /// Registered username; the `from` of every message this user sends.
    name: Box<str>,
    /// Remote address, for logs.
    peer: SocketAddr,
    /// Frames waiting to be written to this user.
    outbound: OutboundQueue,
    /// The connection, for direct flushes by senders' readers. Weak: other
    /// sessions may cache this one after it ended and must not keep its
    /// socket open (the connection task and the writer own it).
    socket: Weak<Async<TcpStream>>,
}

impl Session {
    fn new(
        name: Box<str>,
        peer: SocketAddr,
        socket: Weak<Async<TcpStream>>,
        shared: &Shared,
    ) -> Self {
        Session {
            name,
            peer,
            outbound: OutboundQueue::new(shared.config.queue_bytes, shared.config.queue_frames),
            socket,
        }
    }

    /// The username.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Frames waiting to be written to this user.
    pub(crate) fn outbound(&self) -> &OutboundQueue {
        &self.outbound
    }

    /// Ends the session after a last error frame with `text`; frames already
    /// queued are still written first. False if it was already closing.
    pub fn close_with_error(&self, text: &str) -> bool {
        let mut frame = Vec::with_capacity(protocol::ERROR_HEADER_LEN + text.len());
        protocol::encode_error(text, &mut frame);
        self.outbound.close(Some(&frame))
    }
}

/// How the reading side of a session ended.
#[derive(Debug)]
enum ReadEnd {
    /// The client shut down its write side (or closed).
    PeerClosed,
    /// The client broke the protocol.
    Protocol(FrameError),
    /// A frame begun was not completed in time.
    FrameTimeout,
    /// The socket failed.
    Io(io::Error),
    /// Someone else closed the session: kick, slow consumer, write failure.
    Closed,
    /// The server is shutting down.
    Shutdown,
}

/// How the handshake phase failed.
enum HandshakeEnd {
    Invalid(UsernameError),
    TimedOut,
    Shutdown,
    /// Input ended or failed: nobody to tell.
    Gone,
}

/// Serves one accepted connection until it is closed.
pub(crate) async fn serve(shared: Arc<Shared>, stream: Async<TcpStream>, peer: SocketAddr) {
    let stream = Arc::new(stream);
    let mut input = ReadBuffer::new(shared.config.limits.max_client_frame());

    let handshake = read_handshake(&stream, &mut input, &shared)
        .or(async {
            Timer::after(shared.config.handshake_timeout).await;
            Err(HandshakeEnd::TimedOut)
        })
        .or(async {
            shared.shutdown.wait().await;
            Err(HandshakeEnd::Shutdown)
        })
        .await;
    let name = match handshake {
        Ok(name) => name,
        Err(end) => {
            let text = match end {
                HandshakeEnd::Invalid(e) => format!("{e}\n"),
                HandshakeEnd::TimedOut => format!(
                    "no username received within {:?}\n",
                    shared.config.handshake_timeout
                ),
                HandshakeEnd::Shutdown => SHUTTING_DOWN.to_string(),
                HandshakeEnd::Gone => {
                    debug!(%peer, "left before logging in");
                    return;
                }
            };
            info!(%peer, "rejected: {}", text.trim_end());
            reject(&stream, &text, shared.config.linger).await;
            return;
        }
    };

    let session = Arc::new(Session::new(name, peer, Arc::downgrade(&stream), &shared));
    if shared.registry.insert(&session).is_err() {
        info!(%peer, user = session.name(), "rejected: username is taken");
        reject(&stream, protocol::USERNAME_TAKEN, shared.config.linger).await;
        return;
    }
    info!(%peer, user = session.name(), "logged in");

    let writer = shared
        .executor
        .spawn(write_loop(Arc::clone(&stream), Arc::clone(&session)));
    let end = read_loop(&shared, &stream, &mut input, &session)
        .or(async {
            session.outbound.wait_closed().await;
            ReadEnd::Closed
        })
        .or(async {
            shared.shutdown.wait().await;
            ReadEnd::Shutdown
        })
        .await;

    shared.registry.remove(&session);
    let we_end_it = match &end {
        ReadEnd::PeerClosed => {
            session.outbound.close(None);
            false
        }
        ReadEnd::Protocol(e) => {
            session.close_with_error(&format!("{e}\n"));
            true
        }
        ReadEnd::FrameTimeout => {
            session.close_with_error(&format!(
                "frame not received in full within {:?}\n",
                shared.config.frame_timeout
            ));
            true
        }
        ReadEnd::Io(_) => {
            session.outbound.abort();
            false
        }
        ReadEnd::Closed => true,
        ReadEnd::Shutdown => {
            session.close_with_error(SHUTTING_DOWN);
            true
        }
    };
    info!(%peer, user = session.name(), "disconnected: {}", describe(&end));

    // The writer flushes what is queued and shuts down the write side. An
    // aborted queue (slow consumer, failed socket) has nothing worth
    // waiting for: its writer may be stuck on a full socket.
    if session.outbound.is_aborted() {
        writer.cancel().await;
        return;
    }
    let flushed = async {
        writer.await;
        true
    }
    .or(async {
        Timer::after(shared.config.flush_timeout).await;
        false
    })
    .await;
    if !flushed {
        warn!(%peer, user = session.name(), "could not flush within {:?}; closing", shared.config.flush_timeout);
    } else if we_end_it {
        linger(&stream, shared.config.linger).await;
    }
}

fn describe(end: &ReadEnd) -> String {
    match end {
        ReadEnd::PeerClosed => "client closed the connection".into(),
        ReadEnd::Protocol(e) => format!("protocol error: {e}"),
        ReadEnd::FrameTimeout => "frame timed out".into(),
        ReadEnd::Io(e) => format!("i/o error: {e}"),
        ReadEnd::Closed => "closed by the server".into(),
        ReadEnd::Shutdown => "server shutting down".into(),
    }
}

async fn read_handshake(
    stream: &Async<TcpStream>,
    input: &mut ReadBuffer,
    shared: &Shared,
) -> Result<Box<str>, HandshakeEnd> {
    loop {
        match protocol::decode_handshake(input.data(), &shared.config.limits) {
            Ok(Decoded::Frame(name, used)) => {
                // Validated as printable ASCII, so this cannot fail.
                let name = std::str::from_utf8(name).map_err(|_| HandshakeEnd::Gone)?;
                let name = Box::from(name);
                input.consume(used);
                return Ok(name);
            }
            Ok(Decoded::Incomplete { .. }) => {}
            Err(e) => return Err(HandshakeEnd::Invalid(e)),
        }
        match protocol::fill(&mut &*stream, input).await {
            Ok(0) | Err(_) => return Err(HandshakeEnd::Gone),
            Ok(_) => {}
        }
    }
}

/// Reads and routes frames until the input ends or breaks the protocol.
async fn read_loop(
    shared: &Shared,
    stream: &Async<TcpStream>,
    input: &mut ReadBuffer,
    session: &Arc<Session>,
) -> ReadEnd {
    let limits = shared.config.limits;
    let mut router = Router::new(shared, session);
    // Set while part of a frame (even one byte of its header) has arrived
    // but not all of it: a client may pause between frames for as long as
    // it likes, never inside one.
    let mut frame_deadline: Option<Instant> = None;
    let mut reads: u32 = 0;
    let mut short_read = false;
    loop {
        loop {
            match protocol::decode_client_frame(input.data(), &limits) {
                Ok(Decoded::Frame(frame, used)) => {
                    frame_deadline = None;
                    let handled = match frame {
                        ClientFrame::Message { to, content } => router.route(to, content).await,
                        // One negotiation per connection: a second HELLO
                        // could only mean a confused or hostile client.
                        ClientFrame::Hello { .. } if router.extended => {
                            return ReadEnd::Protocol(FrameError::Repeated("HELLO"))
                        }
                        ClientFrame::Hello { features } => router.hello(features).await,
                        // WHO is an extension: a session that did not
                        // negotiate gets v1 behaviour, an unknown opcode.
                        ClientFrame::Who if !router.extended => {
                            return ReadEnd::Protocol(FrameError::UnknownOpcode(protocol::OP_WHO))
                        }
                        ClientFrame::Who => router.who().await,
                    };
                    if handled.is_err() {
                        return ReadEnd::Closed;
                    }
                    input.consume(used);
                }
                Ok(Decoded::Incomplete { .. }) => {
                    if !input.is_empty() && frame_deadline.is_none() {
                        frame_deadline = Some(Instant::now() + shared.config.frame_timeout);
                    }
                    break;
                }
                Err(e) => return ReadEnd::Protocol(e),
            }
        }
        // Everything this buffer held is routed: write it out, one write
        // per recipient.
        router.flush();
        // Try the socket directly and only register for readiness when it
        // is empty: under load this is one syscall per buffer of frames.
        let mut room = 0;
        let attempt = if short_read {
            short_read = false;
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            let buf = input.unfilled();
            room = buf.len();
            stream.get_ref().read(buf)
        };
        match attempt {
            Ok(0) => {
                if !input.is_empty() {
                    debug!(user = session.name(), "input ended inside a frame");
                }
                return ReadEnd::PeerClosed;
            }
            Ok(n) => {
                // A read that did not fill the buffer most likely emptied
                // the socket: skip the read that would only say EAGAIN and
                // wait for readiness after routing (if data did arrive in
                // between, readiness fires at once).
                short_read = n < room;
                input.filled(n);
                reads = reads.wrapping_add(1);
                // A client that never lets the socket run dry must not keep
                // this worker thread from its other tasks.
                if reads % 16 == 0 {
                    future::yield_now().await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // An idle connection holds no read buffer.
                input.release();
                let ready = match frame_deadline {
                    None => stream.readable().await,
                    Some(deadline) => wait_for_rest_of_frame(stream, input, deadline).await,
                };
                match ready {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return ReadEnd::FrameTimeout,
                    Err(e) => return ReadEnd::Io(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return ReadEnd::Io(e),
        }
    }
}

/// How long a client may pause inside a frame before its read buffer is
/// shrunk to the few bytes it sent (the frame timeout still applies).
const SHRINK_PARTIAL_AFTER: Duration = Duration::from_millis(500);

/// Waits for the rest of a frame until `deadline` (then `TimedOut`). A
/// pause of more than [`SHRINK_PARTIAL_AFTER`] shrinks the read buffer:
/// a client that stops mid-frame is not owed a full-size buffer, but one
/// whose reads merely end mid-frame under load should not lose its buffer
/// at every pause either.
async fn wait_for_rest_of_frame(
    stream: &Async<TcpStream>,
    input: &mut ReadBuffer,
    deadline: Instant,
) -> io::Result<()> {
    let timed_out = || -> io::Result<()> { Err(io::ErrorKind::TimedOut.into()) };
    let shrink_at = (Instant::now() + SHRINK_PARTIAL_AFTER).min(deadline);
    let first = async { Some(stream.readable().await) }
        .or(async {
            Timer::at(shrink_at).await;
            None
        })
        .await;
    if let Some(ready) = first {
        return ready;
    }
    if shrink_at >= deadline {
        return timed_out();
    }
    input.shrink();
    stream
        .readable()
        .or(async {
            Timer::at(deadline).await;
            timed_out()
        })
        .await
}

/// Writes this session's queue to the socket until the queue is closed.
async fn write_loop(stream: Arc<Async<TcpStream>>, session: Arc<Session>) {
    let mut batch = Vec::new();
    while session.outbound.next_batch(&mut batch).await {
        if let Err(e) = (&*stream).write_all(&batch).await {
            debug!(user = session.name(), "write failed: {e}");
            session.outbound.abort();
            return;
        }
        // The buffer goes back to the queue, where the next batch reuses
        // it and an idle session's trim frees it.
        session.outbound.finish_write(&mut batch);
    }
    let _ = stream.get_ref().shutdown(Shutdown::Write);
}

/// Sends one error frame to a client that never got a session, then closes.
pub(crate) async fn reject(stream: &Async<TcpStream>, text: &str, linger_for: Duration) {
    let mut frame = Vec::new();
    protocol::encode_error(text, &mut frame);
    let sent = async { (&*stream).write_all(&frame).await.is_ok() }
        .or(async {
            Timer::after(linger_for).await;
            false
        })
        .await;
    if sent {
        let _ = stream.get_ref().shutdown(Shutdown::Write);
        linger(stream, linger_for).await;
    }
}

/// Discards input until the client closes or `limit` passes. Closing a
/// socket with unread input makes the kernel send a reset, which can destroy
/// the error frame we just sent before the client reads it.
async fn linger(stream: &Async<TcpStream>, limit: Duration) {
    // On the heap: an array here would make every connection's future 4 KiB
    // bigger for its whole life.
    let mut sink = vec![0u8; 4096];
    async {
        while let Ok(n) = (&*stream).read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
    .or(async {
        Timer::after(limit).await;
    })
    .await;
}

/// The sending session's own session ended while it was routing.
struct SenderClosed;

/// Routes one sender's messages, caching recipients so that the registry
/// lock is rarely taken.
struct Router<'a> {
    shared: &'a Shared,
    /// The sending session (for `from` and for error replies).
    me: &'a Arc<Session>,
    /// Recipient of the previous message: usually also the next one's.
    last: Option<Arc<Session>>,
    /// Recipients seen recently, by name.
    cache: HashMap<Box<[u8]>, Arc<Session>>,
    /// The client negotiated extensions with HELLO, so it may be sent
    /// frames with opcodes of 2 and above.
    extended: bool,
    /// Recipients whose idle queues got frames in this batch; written at
    /// the end of the batch by [`Router::flush`].
    to_flush: Vec<Arc<Session>>,
}

impl Drop for Router<'_> {
    fn drop(&mut self) {
        // Cancelled mid-batch (the session is closing): the writers write.
        for session in self.to_flush.drain(..) {
            session.outbound.wake_writer();
        }
    }
}

/// Recipients remembered per sender before the cache is reset.
const RECIPIENT_CACHE: usize = 256;

impl<'a> Router<'a> {
    fn new(shared: &'a Shared, me: &'a Arc<Session>) -> Self {
        Router {
            shared,
            me,
            last: None,
            cache: HashMap::new(),
            extended: false,
            to_flush: Vec::new(),
        }
    }

    /// Writes every queue this batch made non-empty straight to its socket.
    fn flush(&mut self) {
        for session in self.to_flush.drain(..) {
            match session.socket.upgrade() {
                Some(socket) => session.outbound.flush_direct(socket.get_ref()),
                None => session.outbound.wake_writer(),
            }
        }
    }

    /// Queues a frame for `session` without waiting; an idle queue is
    /// remembered for the end-of-batch flush.
    fn push_now(
        &mut self,
        session: &Arc<Session>,
        len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), PushError> {
        if session.outbound.try_push_deferred(len, encode)? {
            self.to_flush.push(Arc::clone(session));
        }
        Ok(())
    }

    /// Answers HELLO with WELCOME (and, if asked, the online list followed
    /// by presence events).
    async fn hello(&mut self, features: &[u8]) -> Result<(), SenderClosed> {
        self.extended = true;
        let features = String::from_utf8_lossy(features);
        let presence = features
            .split_whitespace()
            .any(|f| f == protocol::FEATURE_PRESENCE);
        let server = concat!("pmchat-server/", env!("CARGO_PKG_VERSION"));
        let limits = protocol::format_limits(&self.shared.config.limits);
        let mut welcome = Vec::new();
        // Both fields are short server-made strings.
        let _ = protocol::encode_pair(
            protocol::OP_HELLO,
            server.as_bytes(),
            limits.as_bytes(),
            &mut welcome,
        );
        debug!(user = self.me.name(), %features, "negotiated extensions");
        if presence {
            self.shared.registry.watch(self.me, &welcome);
            return Ok(());
        }
        self.reply(&welcome).await
    }

    /// Answers WHO with the online list.
    async fn who(&mut self) -> Result<(), SenderClosed> {
        let mut frames = Vec::new();
        protocol::encode_online(&self.shared.registry.names(), &mut frames);
        self.reply(&frames).await
    }

    fn lookup(&mut self, to: &[u8]) -> Option<Arc<Session>> {
        if let Some(last) = &self.last {
            if last.name.as_bytes() == to {
                return Some(Arc::clone(last));
            }
        }
        let found = match self.cache.get(to) {
            Some(hit) => Arc::clone(hit),
            None => {
                let fresh = self.shared.registry.get(to)?;
                if self.cache.len() >= RECIPIENT_CACHE {
                    self.cache.clear();
                }
                self.cache.insert(to.into(), Arc::clone(&fresh));
                fresh
            }
        };
        self.last = Some(Arc::clone(&found));
        Some(found)
    }

    fn forget(&mut self, to: &[u8]) {
        self.last = None;
        self.cache.remove(to);
    }

    async fn route(&mut self, to: &[u8], content: &[u8]) -> Result<(), SenderClosed> {
        if std::str::from_utf8(content).is_err() {
            let text = format!(
                "message to '{}' is not valid UTF-8; not delivered\n",
                Escaped(to)
            );
            return self.reply_error(&text).await;
        }
        let me = self.me.name.as_bytes();
        let len = protocol::message_frame_len(me, content);
        // Both fields fit their prefixes: a username is at most 255 bytes
        // and the content came from a 16-bit length field.
        let encode = |out: &mut Vec<u8>| {
            let _ = protocol::encode_message(me, content, out);
        };
        // Two attempts: a cached recipient may have left, and someone new
        // may hold the name by now.
        for _ in 0..2 {
            let Some(recipient) = self.lookup(to) else {
                break;
            };
            let pushed = match self.push_now(&recipient, len, encode) {
                Err(PushError::Full) => {
                    // Write out what this batch routed so far before waiting.
                    self.flush();
                    let deadline = Instant::now() + self.shared.config.slow_consumer_timeout;
                    recipient.outbound.push(len, deadline, encode).await
                }
                other => other,
            };
            match pushed {
                Ok(()) => {
                    debug!(
                        "{} -> {}: {}",
                        self.me.name,
                        recipient.name,
                        Escaped(content)
                    );
                    return Ok(());
                }
                Err(PushError::Closed) => self.forget(to),
                Err(PushError::Full) => {
                    self.forget(to);
                    self.disconnect_slow(&recipient);
                    let text = format!(
                        "'{}' was disconnected for not reading fast enough; message not delivered\n",
                        recipient.name
                    );
                    return self.reply_error(&text).await;
                }
            }
        }
        let text = format!("'{}' is not connected\n", Escaped(to));
        self.reply_error(&text).await
    }

    fn disconnect_slow(&self, session: &Arc<Session>) {
        if session.outbound.abort() {
            self.shared.registry.remove(session);
            warn!(
                peer = %session.peer, user = session.name(),
                "disconnected slow consumer: outbound queue stayed full for {:?}",
                self.shared.config.slow_consumer_timeout
            );
        }
    }

    /// Queues an error frame for the sender itself.
    async fn reply_error(&mut self, text: &str) -> Result<(), SenderClosed> {
        let mut frame = Vec::with_capacity(protocol::ERROR_HEADER_LEN + text.len());
        protocol::encode_error(text, &mut frame);
        self.reply(&frame).await
    }

    /// Queues encoded frames for the sender itself, waiting for room like
    /// any other frame: a sender that never reads its replies is a slow
    /// consumer too. A reply larger than the queue goes into an empty one.
    async fn reply(&mut self, frames: &[u8]) -> Result<(), SenderClosed> {
        let encode = |out: &mut Vec<u8>| out.extend_from_slice(frames);
        let me = self.me;
        let pushed = match self.push_now(me, frames.len(), encode) {
            Err(PushError::Full) => {
                self.flush();
                let deadline = Instant::now() + self.shared.config.slow_consumer_timeout;
                me.outbound.push(frames.len(), deadline, encode).await
            }
            other => other,
        };
        match pushed {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SenderClosed),
            Err(PushError::Full) => {
                self.disconnect_slow(self.me);
                Err(SenderClosed)
            }
        }
    }
}
