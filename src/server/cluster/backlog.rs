//! Messages from other nodes waiting, in order, for room in a local
//! recipient's full queue: the cross-node side of the slow-consumer rule.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::server::mailbox::Mailbox;

/// A message from another node waiting for room in a local recipient's
/// queue.
pub(super) struct Waiting {
    /// Encoded in the recipient's wire.
    pub(super) frame: Vec<u8>,
    /// The sender's node and name, to tell it if the message is dropped.
    pub(super) origin: Arc<str>,
    pub(super) from: Box<[u8]>,
}

/// Messages from other nodes waiting, in order, for one recipient whose
/// queue is full; at most `pause::BACKLOG_BYTES` (or `--queue-bytes`, if more)
/// of them.
#[derive(Default)]
pub(super) struct Backlog {
    pub(super) frames: VecDeque<Waiting>,
    pub(super) bytes: usize,
    /// The nodes told to pause for this recipient, to be told to go on.
    pub(super) paused: Vec<Arc<str>>,
}

/// What `Cluster::join_backlog` (in `drain`) did.
pub(super) enum Joined {
    /// The recipient has no backlog: deliver as usual.
    NoBacklog,
    /// Queued behind the backlog.
    Queued,
    /// Queued, and the backlog passed `pause::PAUSE_AT`: the sender's node
    /// must be told to pause.
    QueuedPause,
    /// The backlog is full too: not delivered.
    Refused,
}

/// A session's backlog key: its address.
pub(super) fn session_key(session: &Arc<Mailbox>) -> usize {
    Arc::as_ptr(session) as usize
}
