//! What a sender remembers about its messages to other nodes, made on
//! its first such message: the route of the last one, the messages staged
//! for it, and the messages sent with receipts whose batches have not
//! settled yet.

use crate::server::cluster::{Route, Staged, Ticket};

/// A sender's state for messages to other nodes: made on its first such
/// message. The messages sent with receipts whose batches are not yet
/// known to be published (cleared, not freed, after each check: no
/// allocation per message once warm), and the route of the last one.
#[derive(Default)]
pub(super) struct CrossNode {
    /// Where the last message to another node went, reused while the
    /// registry does not change.
    pub(super) route: Option<Route>,
    /// Messages to the route's user (from a sender without receipts) not
    /// yet in its node's outbox: they go in together, under one lock, at
    /// the end of the read batch or sooner (see `cluster::staged`).
    pub(super) staged: Staged,
    /// The distinct batches they went into.
    pub(super) tickets: Vec<Ticket>,
    /// Each message: its ordinal, its batch (an index into `tickets`), its
    /// index in that batch and its recipient's name (a range of `names`).
    pub(super) messages: Vec<(u64, usize, u32, std::ops::Range<usize>)>,
    pub(super) names: Vec<u8>,
}

impl CrossNode {
    /// Message `ordinal` to `to` went into `ticket`'s batch.
    pub(super) fn add(&mut self, ordinal: u64, to: &[u8], ticket: Ticket) {
        let index = ticket.index;
        let same = self
            .tickets
            .last()
            .is_some_and(|last| last.same_batch(&ticket));
        if !same {
            self.tickets.push(ticket);
        }
        let start = self.names.len();
        self.names.extend_from_slice(to);
        let batch = self.tickets.len() - 1;
        self.messages
            .push((ordinal, batch, index, start..self.names.len()));
    }
}
