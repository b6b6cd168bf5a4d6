//! A logged-in user's mailbox: what other sessions (and other nodes'
//! deliveries, the console, the registry) need to reach it: its name, the
//! wire its frames are encoded in, its bounded outbound queue, and a weak
//! handle on its connection for direct writes. The connection's own tasks,
//! which fill and drain it, are in `connection`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use super::outbound::OutboundQueue;
use super::wire::Wire;
use super::Shared;
use crate::net::transport::{Transport, WeakTransport};
use crate::wire::texts::ErrorText;

/// A logged-in user: what other sessions need to reach it.
#[derive(Debug)]
pub struct Mailbox {
    /// Registered username; the `from` of every message this user sends.
    name: Box<str>,
    /// Remote address, for logs.
    peer: SocketAddr,
    /// How frames to this user are encoded ([`Wire`] as a byte): set by
    /// the session's own reader, when its first bytes or its HELLO say so.
    wire: AtomicU8,
    /// Frames waiting to be written to this user.
    outbound: OutboundQueue,
    /// Fed from its owner's inbox (`--store`, HELLO with `inbox`): senders
    /// never queue to it directly, the inbox does, in id order.
    inbox: AtomicBool,
    /// The worker thread the session runs on (`None` off the workers, in
    /// unit tests).
    worker: Option<usize>,
    /// The connection, for direct flushes by senders' readers. Weak: other
    /// sessions may cache this one after it ended and must not keep its
    /// socket open.
    connection: WeakTransport,
}

impl Mailbox {
    pub(super) fn new(
        name: Box<str>,
        peer: SocketAddr,
        transport: &Transport,
        shared: &Shared,
    ) -> Self {
        Mailbox {
            name,
            peer,
            wire: AtomicU8::new(Wire::V1 as u8),
            outbound: OutboundQueue::counted(shared.config.queue_bytes, Arc::clone(&shared.stats)),
            inbox: AtomicBool::new(false),
            worker: crate::net::workers::current_index(),
            connection: transport.downgrade(),
        }
    }

    /// A session for the server's unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(
        name: &str,
        peer: SocketAddr,
        transport: &Transport,
        shared: &Shared,
    ) -> Self {
        Mailbox::new(name.into(), peer, transport, shared)
    }

    /// The username.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// How frames to this user are encoded.
    pub(crate) fn wire(&self) -> Wire {
        match self.wire.load(Ordering::Relaxed) {
            w if w == Wire::Gob as u8 => Wire::Gob,
            w if w == Wire::Coded as u8 => Wire::Coded,
            w if w == Wire::Sealed as u8 => Wire::Sealed,
            _ => Wire::V1,
        }
    }

    /// The client turned out to speak `wire` (or, having sent nothing
    /// yet, is taken to).
    pub(super) fn set_wire(&self, wire: Wire) {
        self.wire.store(wire as u8, Ordering::Relaxed);
    }

    /// True if the session is fed from its owner's inbox.
    pub(crate) fn is_inbox(&self) -> bool {
        self.inbox.load(Ordering::Relaxed)
    }

    /// Makes the session one fed from its owner's inbox: before it is in
    /// the registry, where senders could find it.
    pub(super) fn set_inbox(&self) {
        self.inbox.store(true, Ordering::Relaxed);
    }

    /// Frames waiting to be written to this user.
    pub(crate) fn outbound(&self) -> &OutboundQueue {
        &self.outbound
    }

    /// The worker thread the session runs on.
    pub(crate) fn worker(&self) -> Option<usize> {
        self.worker
    }

    /// The connection, for a direct write, if it is still open.
    pub(crate) fn connection(&self) -> Option<Transport> {
        self.connection.upgrade()
    }

    /// Ends the session after a last error frame with `error`; frames
    /// already queued are still written first. False if it was already
    /// closing.
    pub fn close_with_error(&self, error: &ErrorText) -> bool {
        self.outbound.close(Some(&self.wire().error_frame(error)))
    }

    /// Disconnects this user for not reading: what is queued is dropped
    /// (its socket is full, so no last frame would get through), and the
    /// connection's tasks end. The one slow-consumer path, whoever found
    /// the queue full: a local sender (`router`), messages from another
    /// node (`cluster/drain`), presence events (`registry`). `waiting` says
    /// what stayed unread, for the log. False if it was already closing;
    /// the caller then has nothing more to do, else it takes the name out
    /// of the registry if it holds it there.
    pub(crate) fn disconnect_slow(&self, waiting: std::fmt::Arguments<'_>) -> bool {
        if !self.outbound.abort() {
            return false;
        }
        self.outbound.stats().slow_consumer();
        tracing::warn!(peer = %self.peer, user = self.name(), "disconnected slow consumer: {waiting}");
        true
    }
}

/// Writes every queue a delivery made non-empty: directly when nobody is
/// writing it, else by waking its writer.
pub(crate) fn flush_all(sessions: &mut Vec<Arc<Mailbox>>) {
    for session in sessions.drain(..) {
        match session.connection() {
            Some(connection) => session.outbound().flush_direct(&connection),
            None => session.outbound().wake_writer(),
        }
    }
}
