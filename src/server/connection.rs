//! One logged-in connection, from admission ([`super::admission`]) to
//! close: its read loop and its write loop.
//!
//! The connection's own task reads: a [`FrameReader`] decodes frames in
//! place from a reused buffer and a [`Router`] routes each message straight
//! into the recipient's [`OutboundQueue`](super::outbound::OutboundQueue), then writes the queues it made
//! non-empty directly to their sockets if nobody is writing them. A second
//! task per session, the writer, takes over whatever a socket could not
//! accept at once. The queue's `busy` flag keeps the two from writing at the
//! same time, and no lock is held across an `.await`.
//!
//! A session speaks to a [`Wire`] (how its frames are encoded and decoded)
//! and a [`Transport`] (the byte stream), both chosen per connection; the
//! modules `wire` and `transport` say how a new one is added. Every session
//! reads v1 first; if the very first bytes after the handshake are a gob
//! stream (they do not start with `0x00`, which v1 refuses), the reading
//! loop goes on with gob's decoder, on the same buffer. Until a client has
//! sent anything, frames to it are encoded in `--default-wire`.
//!
//! Closing is always the same dance, whoever starts it: leave the online
//! list, let the writer flush what is queued (bounded by the flush timeout),
//! shut down the write side, and, if we are the ones ending the connection,
//! read and discard input for a moment so a reset does not destroy the last
//! error frame on its way out.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::{self, FutureExt};
use tracing::{debug, info, warn};

use super::admission::Admitted;
use super::auth::{HelloRequest, Proven};
use super::mailbox::Mailbox;
use super::refusal::linger;
use super::router::Router;
use super::stats::Hot;
use super::wire::{starts_gob, InputDecoder, Wire};
use super::Shared;
use crate::net::transport::Transport;
use crate::runtime::{timeout, until};
use crate::wire::framing::Decoder;
use crate::wire::framing::FrameReader;
use crate::wire::texts::{Code, ErrorText};
use crate::wire::v1::{self, keys, ClientFrame, FrameError};

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

impl ReadEnd {
    /// Why, for the log.
    fn describe(&self) -> String {
        match self {
            ReadEnd::PeerClosed => "client closed the connection".into(),
            ReadEnd::Protocol(e) => format!("protocol error: {e}"),
            ReadEnd::FrameTimeout => "frame timed out".into(),
            ReadEnd::Io(e) => format!("i/o error: {e}"),
            ReadEnd::Closed => "closed by the server".into(),
            ReadEnd::Shutdown => "server shutting down".into(),
        }
    }
}

/// Serves a logged-in connection until it is closed.
pub(crate) async fn serve(shared: &Shared, admitted: Box<Admitted<'_>>) {
    let Admitted {
        transport,
        mailbox: session,
        mut input,
        proven,
        _slot,
    } = *admitted;
    let peer = session.peer();
    let writer = shared
        .workers
        .spawn_here(write_loop(transport.clone(), Arc::clone(&session)));
    // A session fed from its inbox: its feeder runs beside the reader, in
    // this task. Polled after the reader (`or` polls in order), which
    // queues WELCOME on its first poll: the replay comes after it.
    let start = match proven.as_ref().map(|p| p.hello) {
        Some(hello) => match (hello.after, hello.after_time) {
            (Some(after), _) => super::inbox::Start::After(after),
            (None, Some(time)) => super::inbox::Start::AfterTime(time),
            (None, None) => super::inbox::Start::Mark,
        },
        None => super::inbox::Start::Mark,
    };
    let log_fed = proven.is_some();
    let feeder = async {
        if let (Some(logs), true) = (&shared.stream_inboxes, log_fed) {
            let patience = shared.config.slow_consumer_timeout;
            Box::pin(super::stream_inbox::feed(logs, &session, start, patience)).await;
        } else if let (Some(inboxes), true) = (&shared.inboxes, session.is_inbox()) {
            if let Some(inbox) = inboxes.get(session.name().as_bytes()) {
                let patience = shared.config.slow_consumer_timeout;
                // Boxed: sessions without an inbox carry no room for it.
                Box::pin(super::inbox::feed(
                    inboxes, inbox, &session, start, patience,
                ))
                .await;
            }
        }
        // The session is closing; `wait_closed` below ends it.
        future::pending::<ReadEnd>().await
    };
    let end = read_loop(shared, &transport, &mut input, &session, proven)
        .or(feeder)
        .or(async {
            session.outbound().wait_closed().await;
            ReadEnd::Closed
        })
        .or(async {
            shared.shutdown.wait().await;
            ReadEnd::Shutdown
        })
        .await;

    shared.registry.remove(&session);
    if let Some(cluster) = &shared.cluster {
        match shared.stream_inboxes.is_some() && log_fed {
            true => cluster.release_device(session.name()).await,
            false => cluster.release(session.name()).await,
        }
    }
    let we_end_it = match &end {
        ReadEnd::PeerClosed => {
            session.outbound().close(None);
            false
        }
        ReadEnd::Protocol(e) => {
            session.close_with_error(&ErrorText::protocol(e));
            true
        }
        ReadEnd::FrameTimeout => {
            let limit = shared.config.frame_timeout;
            session.close_with_error(&ErrorText::timeout("frame not received in full", limit));
            true
        }
        ReadEnd::Io(_) => {
            session.outbound().abort();
            false
        }
        ReadEnd::Closed => true,
        ReadEnd::Shutdown => {
            session.close_with_error(&ErrorText::of(Code::ShuttingDown));
            true
        }
    };
    info!(%peer, user = session.name(), "disconnected: {}", end.describe());

    // The writer flushes what is queued and shuts down the write side. An
    // aborted queue (slow consumer, failed socket) has nothing worth
    // waiting for: its writer may be stuck on a full socket.
    if session.outbound().is_aborted() {
        writer.cancel().await;
        return;
    }
    let limit = shared.config.flush_timeout;
    if timeout(limit, writer).await.is_none() {
        warn!(%peer, user = session.name(), "could not flush within {limit:?}; closing");
    } else if we_end_it {
        linger(&transport, shared.config.linger).await;
    }
}

/// Reads and routes frames until the input ends or breaks the protocol.
///
/// The session reads v1 until its very first bytes, which v1 refuses,
/// turn out to start a gob stream; then it reads on as gob, with the same
/// buffer.
async fn read_loop(
    shared: &Shared,
    transport: &Transport,
    input: &mut FrameReader<InputDecoder>,
    session: &Arc<Mailbox>,
    proven: Option<Proven>,
) -> ReadEnd {
    let mut router = Router::new(shared, session);
    // Nothing decoded yet: a v1 error now may mean the client speaks gob
    // (not after a password login, which already spoke v1).
    let mut first = proven.is_none();
    // A registered name's HELLO was read while its password was checked.
    if let Some(proven) = proven {
        if router
            .hello(proven.hello, Some(proven.token))
            .await
            .is_err()
        {
            return ReadEnd::Closed;
        }
    }
    // Set while part of a frame (even one byte of its header) has arrived
    // but not all of it: a client may pause between frames for as long as
    // it likes, never inside one.
    let mut frame_deadline: Option<Instant> = None;
    let mut reads = Reads::default();
    loop {
        loop {
            // Bound first, so that the frame's borrow of the buffer ends
            // before the error arm looks at the buffer again.
            let next = input.next_frame();
            let frame = match next {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    if first && starts_gob(input.buffered()) {
                        debug!(user = session.name(), "speaks gob");
                        session.set_wire(Wire::Gob);
                        input.set_decoder(InputDecoder::gob(shared.config.limits));
                        first = false;
                        continue;
                    }
                    return ReadEnd::Protocol(e);
                }
            };
            // The first frame decoded as v1: a session taken for gob while
            // silent (--default-wire gob) speaks v1 after all.
            if first {
                session.set_wire(Wire::V1);
            }
            // Inline, not a helper: a helper's future would add its
            // arguments to every connection's state for its whole life.
            let routed = match frame {
                ClientFrame::Message { to, content } => router.route(to, content).await,
                // One negotiation per connection: a second HELLO could only
                // mean a confused or hostile client.
                ClientFrame::Hello { .. } if router.extended => {
                    return ReadEnd::Protocol(FrameError::Repeated("HELLO"));
                }
                // A wire without the extensions has no HELLO at all.
                ClientFrame::Hello { .. } if !session.wire().extensions() => {
                    return ReadEnd::Protocol(FrameError::UnknownOpcode(v1::OP_HELLO));
                }
                ClientFrame::Hello { features } => {
                    router.hello(HelloRequest::parse(features), None).await
                }
                // The password for a name that is not registered: unused.
                ClientFrame::Auth { .. } if router.auth_expected => {
                    router.auth_expected = false;
                    Ok(())
                }
                ClientFrame::Auth { .. } => {
                    return ReadEnd::Protocol(FrameError::Unexpected {
                        frame: "AUTH",
                        why: "it may only follow a HELLO listing 'password'",
                    });
                }
                // WHO is an extension: a session that did not negotiate
                // gets v1 behaviour, an unknown opcode.
                ClientFrame::Who if !router.extended => {
                    return ReadEnd::Protocol(FrameError::UnknownOpcode(v1::OP_WHO));
                }
                ClientFrame::Who => router.who().await,
                // History is the user's log: a session fed from it only.
                ClientFrame::History { .. } if !session.is_inbox() => {
                    return ReadEnd::Protocol(FrameError::Unexpected {
                        frame: "HISTORY",
                        why: "it needs the inbox (a registered name on a server with --store, or --cluster and --accounts)",
                    });
                }
                // Keys are for sessions that negotiated them.
                ClientFrame::Keys { .. } | ClientFrame::Claim { .. } if !router.keys => {
                    return ReadEnd::Protocol(FrameError::Unexpected {
                        frame: "KEYS",
                        why:
                            "it needs the keys feature (a registered name, proven by its password)",
                    });
                }
                ClientFrame::Keys { device, records } => match keys::records(records) {
                    Ok(records) => router.publish_keys(device, records).await,
                    Err(keys::BadRecords(why)) => {
                        return ReadEnd::Protocol(FrameError::Malformed { frame: "KEYS", why });
                    }
                },
                ClientFrame::Claim { name, known } => router.claim_keys(name, known).await,
                // Boxed: sessions that never ask carry no room for it.
                ClientFrame::History { peer, request } => {
                    let (before, max) = v1::history_request(request);
                    router.history(peer, before, max).await
                }
            };
            if routed.is_err() {
                return ReadEnd::Closed;
            }
            frame_deadline = None;
            first = false;
        }
        if input.mid_frame() && frame_deadline.is_none() {
            frame_deadline = Some(Instant::now() + shared.config.frame_timeout);
        }
        // Everything this buffer held is routed: write it out, one write
        // per recipient (with receipts, perhaps an ACCEPTED for the sender).
        if router.finish_batch(false).await.is_err() {
            return ReadEnd::Closed;
        }
        match reads.next(transport, input) {
            Ok(0) => {
                if input.mid_frame() {
                    debug!(user = session.name(), "input ended inside a frame");
                }
                // The last receipts go out before the close.
                let _ = router.finish_batch(true).await;
                return ReadEnd::PeerClosed;
            }
            Ok(read) => {
                // Once per read (a syscall), never per frame.
                shared.stats.add(router.slot(), Hot::BytesIn, read as u64);
                // A client that never lets the socket run dry must not keep
                // this worker thread from its other tasks.
                if reads.count % 16 == 0 {
                    future::yield_now().await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more to read for now: whatever is unaccounted for
                // is answered before waiting.
                if router.finish_batch(true).await.is_err() {
                    return ReadEnd::Closed;
                }
                if let Err(end) = wait_for_input(transport, input, frame_deadline).await {
                    return end;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return ReadEnd::Io(e),
        }
    }
}

/// The reader's reads: the socket is tried directly, and readiness is
/// registered only when it is empty, so under load each buffer of frames
/// costs one syscall.
#[derive(Default)]
struct Reads {
    /// Reads so far (wrapping), for yielding now and then.
    count: u32,
    /// The last read did not fill the buffer, so it most likely emptied the
    /// socket: skip the read that would only say EAGAIN and wait for
    /// readiness (if data arrived in between, readiness fires at once).
    /// Only where the transport allows it
    /// ([`Transport::short_read_drains`]).
    short: bool,
}

impl Reads {
    fn next<D: Decoder>(
        &mut self,
        transport: &Transport,
        input: &mut FrameReader<D>,
    ) -> io::Result<usize> {
        if std::mem::take(&mut self.short) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = transport.try_read(input)?;
        self.short = !input.last_read_filled() && transport.short_read_drains();
        self.count = self.count.wrapping_add(1);
        Ok(n)
    }
}

/// Waits until the socket has input: for as long as it takes between
/// frames, until `frame_deadline` inside one.
async fn wait_for_input<D: Decoder>(
    transport: &Transport,
    input: &mut FrameReader<D>,
    frame_deadline: Option<Instant>,
) -> Result<(), ReadEnd> {
    // An idle connection holds no read buffer.
    input.release();
    let ready = match frame_deadline {
        None => transport.readable().await,
        Some(deadline) => wait_for_rest_of_frame(transport, input, deadline).await,
    };
    match ready {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(ReadEnd::FrameTimeout),
        Err(e) => Err(ReadEnd::Io(e)),
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
async fn wait_for_rest_of_frame<D: Decoder>(
    transport: &Transport,
    input: &mut FrameReader<D>,
    deadline: Instant,
) -> io::Result<()> {
    let timed_out = || io::Error::from(io::ErrorKind::TimedOut);
    let shrink_at = (Instant::now() + SHRINK_PARTIAL_AFTER).min(deadline);
    if let Some(ready) = until(shrink_at, transport.readable()).await {
        return ready;
    }
    if shrink_at >= deadline {
        return Err(timed_out());
    }
    input.shrink();
    until(deadline, transport.readable())
        .await
        .unwrap_or_else(|| Err(timed_out()))
}

/// Writes this session's queue to the transport until the queue is closed.
async fn write_loop(transport: Transport, session: Arc<Mailbox>) {
    let mut batch = Vec::new();
    while session.outbound().next_batch(&mut batch).await {
        if let Err(e) = transport.write_all(&batch).await {
            debug!(user = session.name(), "write failed: {e}");
            session.outbound().abort();
            return;
        }
        // The buffer goes back to the queue, where the next batch reuses
        // it and an idle session's trim frees it.
        session.outbound().finish_write(&mut batch);
    }
    transport.shutdown_write().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::admission::{admit, Admission};
    use crate::server::testing;
    use std::io::{Read, Write};

    /// Serves one connection in-process, from admission to close, whose
    /// client sends `sends` and then (if `close`) ends its input; returns
    /// everything the client received until the server closed.
    fn serve_one(shared: &Shared, sends: &'static [u8], close: bool) -> Vec<u8> {
        let (mut client, server_end) = crate::runtime::loopback_pair();
        let peer = server_end.peer_addr().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let talking = std::thread::spawn(move || {
            client.write_all(sends).unwrap();
            if close {
                client.shutdown(std::net::Shutdown::Write).unwrap();
            }
            let mut received = Vec::new();
            client.read_to_end(&mut received).unwrap();
            received
        });
        smol::block_on(async {
            match admit(shared, server_end, peer).await {
                Admission::Admitted(admitted) => serve(shared, admitted).await,
                _ => panic!("not admitted"),
            }
        });
        talking.join().unwrap()
    }

    #[test]
    fn a_client_that_breaks_the_protocol_is_told_why_and_closed() {
        let shared = testing::shared();
        // Opcode 0x7f is no frame of v1's.
        let received = serve_one(&shared, b"\x05alice\x00\x7f\x00\x00\x00\x00", false);
        let (frame, _) = match v1::decode_server_frame(&received) {
            Ok(v1::Decoded::Frame(frame, used)) => (frame, used),
            other => panic!("not a frame: {other:?} in {received:?}"),
        };
        assert!(matches!(frame, v1::ServerFrame::Error { .. }), "{frame:?}");
        assert!(shared.registry.get(b"alice").is_none(), "still online");
    }

    #[test]
    fn a_client_that_closes_is_sent_nothing_and_leaves_the_registry() {
        let shared = testing::shared();
        let received = serve_one(&shared, b"\x05alice", true);
        assert!(received.is_empty(), "{received:?}");
        assert!(shared.registry.get(b"alice").is_none(), "still online");
    }

    #[test]
    fn a_message_to_nobody_is_answered_with_not_connected_in_the_sender_wire() {
        let shared = testing::shared();
        let received = serve_one(&shared, b"\x05alice\x00\x00\x00\x03\x00\x02bobhi", true);
        match v1::decode_server_frame(&received) {
            Ok(v1::Decoded::Frame(v1::ServerFrame::Error { text, .. }, used)) => {
                let shown = String::from_utf8_lossy(text);
                assert_eq!(Some(Code::NotConnected), Code::of_text(text), "{shown}");
                assert_eq!(used, received.len(), "one frame, then the close");
            }
            other => panic!("not an error frame: {other:?}"),
        }
    }

    #[test]
    fn a_client_that_speaks_gob_is_read_and_answered_in_gob() {
        let shared = testing::shared();
        // The gob client's first message (type definitions, then a value),
        // as the original client sent it: to nobody, so it is refused.
        let mut sends = b"\x05alice".to_vec();
        let message = crate::wire::gob::GobMessage {
            to: b"bob",
            content: b"hi",
            ..Default::default()
        };
        crate::wire::gob::encode_message(&message, &mut sends);
        let sends: &'static [u8] = Box::leak(sends.into_boxed_slice());
        let received = serve_one(&shared, sends, true);
        assert!(!received.is_empty());
        assert_ne!(0, received[0], "a gob stream, not a v1 frame");
    }
}
