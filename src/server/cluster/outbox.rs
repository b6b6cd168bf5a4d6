//! Messages for other nodes: the bounded outbox gathering one node's next
//! batch, the ticket a forwarded message gets, and a sender's messages
//! staged for an outbox (handed on by `staged`). The publisher that sends
//! each outbox's contents as one batch is `publish`.
//!
//! A message counts as handed on only once its batch is settled (see
//! `ticket`): a sender with receipts hears ACCEPTED only for messages that
//! reached the recipient's node, and REFUSED for the rest. A batch that
//! could not be published (Redis failed, or nobody listens on that node's
//! inbox any more) is refused to its senders without receipts as error
//! frames.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use event_listener::{listener, Event};

use super::batch::{put_series_entry, series_head_len, want_ack};
use super::keys::SERIES_FORMAT;
use super::ticket::{Acks, Settled, ACK_BATCH_BYTES};

/// Bytes of messages waiting for one other node before senders wait.
pub const OUTBOX_BYTES: usize = 1 << 20;

/// A message could not be handed on to another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unreachable;

/// Messages waiting for one other node.
#[derive(Default)]
pub(super) struct Outbox {
    /// The batch being gathered.
    pub(super) gathering: Mutex<Gathering>,
    /// Fires when the publisher took the batch.
    pub(super) room: Event,
    /// What became of the batches taken.
    pub(super) acks: Acks,
    /// Set when the node this outbox is for is gone: nothing more is
    /// queued here.
    pub(super) closed: AtomicBool,
    /// The batch format that node reads, from its lease (see
    /// `keys::BATCH_FORMAT`); 0 until it is read.
    format: AtomicU32,
}

/// The batch being gathered.
#[derive(Default)]
pub(super) struct Gathering {
    /// The header, then records.
    pub(super) batch: Vec<u8>,
    /// Its number: how many batches were taken before it.
    pub(super) seq: u64,
    /// Records in it.
    pub(super) records: u32,
    /// A sender with receipts waits on it.
    pub(super) wants_ack: bool,
    /// Where its header's flags are.
    pub(super) flags: usize,
    /// The buffer of a batch published before, for the next one: a batch
    /// of a flood grows to a megabyte, and a fresh one would be faulted
    /// in page by page again. Dropped when the publisher idles.
    pub(super) spare: Option<Vec<u8>>,
}

impl Gathering {
    /// Takes the batch, if it has records, leaving the next one empty.
    pub(super) fn take(&mut self) -> Option<(Vec<u8>, u64, bool)> {
        if self.batch.is_empty() {
            return None;
        }
        // A large batch is acknowledged too, so that it counts in the
        // window.
        if self.wants_ack || self.batch.len() >= ACK_BATCH_BYTES {
            want_ack(&mut self.batch, self.flags);
            self.wants_ack = true;
        }
        let next = self.spare.take().unwrap_or_default();
        let taken = (
            std::mem::replace(&mut self.batch, next),
            self.seq,
            self.wants_ack,
        );
        self.seq += 1;
        self.records = 0;
        self.wants_ack = false;
        Some(taken)
    }
}

impl Outbox {
    /// An outbox whose batches are numbered from `first` on.
    pub(super) fn starting_at(first: u64) -> Outbox {
        Outbox {
            gathering: Mutex::new(Gathering {
                seq: first,
                ..Gathering::default()
            }),
            acks: Acks::starting_at(first),
            ..Outbox::default()
        }
    }

    /// The batch format its node reads; 0 while not known.
    pub(super) fn format(&self) -> u32 {
        self.format.load(Ordering::Relaxed)
    }

    pub(super) fn set_format(&self, format: u32) {
        self.format.store(format, Ordering::Relaxed);
    }

    /// Its node reads series (until that is known, each message goes as
    /// a record of its own, which every node reads).
    pub(super) fn reads_series(&self) -> bool {
        self.format() >= SERIES_FORMAT
    }

    /// Keeps `batch`'s buffer, published, for the next batch.
    pub(super) fn recycle(&self, mut batch: Vec<u8>) {
        // Not one that grew past the bound by a lot (an odd record).
        if batch.capacity() <= 2 * OUTBOX_BYTES {
            batch.clear();
            self.lock().spare = Some(batch);
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Gathering> {
        self.gathering.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a forwarded message went: its batch and its place in it.
pub(crate) struct Ticket {
    pub(super) outbox: Arc<Outbox>,
    pub(super) seq: u64,
    /// The record's index in its batch.
    pub(crate) index: u32,
}

impl Ticket {
    /// What became of the ticket's batch, waiting until `deadline` at
    /// most; a batch still unsettled then counts as lost (the sender is
    /// told it was not delivered: it may yet be, but it is never lost
    /// silently).
    pub(crate) async fn settled(&self, deadline: Instant) -> Settled {
        loop {
            if let Some(settled) = self.outbox.acks.outcome(self.seq) {
                return settled;
            }
            listener!(self.outbox.acks.settled => wake);
            if let Some(settled) = self.outbox.acks.outcome(self.seq) {
                return settled;
            }
            if crate::runtime::until(deadline, wake).await.is_none() {
                return Settled::Lost;
            }
        }
    }

    /// True when `other` waits for the same batch.
    pub(crate) fn same_batch(&self, other: &Ticket) -> bool {
        Arc::ptr_eq(&self.outbox, &other.outbox) && self.seq == other.seq
    }
}

/// Where one sender's messages to one user on another node go: the node
/// and its outbox, looked up once and used for as long as the registry
/// stays at `generation` (any login, logout or directory change moves it).
pub(crate) struct Route {
    pub(crate) to: Box<[u8]>,
    pub(super) node: Arc<str>,
    pub(super) outbox: Arc<Outbox>,
    pub(crate) generation: u64,
}

/// Why a message was not handed on to another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Redis is unreachable, or that node's outbox stayed full.
    Unreachable,
    /// The recipient's node asked for a pause that outlasted the sender's
    /// patience: the recipient is not reading.
    NotReading,
}

/// Records queued together (see `Cluster::append`).
pub(super) struct Records {
    /// Their bytes.
    pub(super) len: usize,
    pub(super) count: u32,
    /// One of them is from a sender with receipts.
    pub(super) receipts: bool,
}

/// Bytes a sender stages before handing them on, however long its read
/// batch: a few hundred small messages, one lock.
pub(crate) const STAGED_BYTES: usize = 16 << 10;

/// One sender's staged messages, all to one recipient, encoded as a
/// series' entries (its head is written when they are handed on).
#[derive(Default)]
pub(crate) struct Staged {
    pub(super) bytes: Vec<u8>,
    count: u32,
}

impl Staged {
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many messages are staged.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Forgets the staged messages (refused to their sender).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    /// Encodes a message's `content` after the others.
    pub(super) fn push(&mut self, content: &[u8]) {
        put_series_entry(&mut self.bytes, content);
        self.count += 1;
    }

    /// What the staged messages take in a batch as a series from `from`
    /// to `to`: one record.
    pub(super) fn records(&self, to: &[u8], from: &[u8]) -> Records {
        Records {
            len: series_head_len(to, from) + self.bytes.len(),
            count: 1,
            receipts: false,
        }
    }
}
