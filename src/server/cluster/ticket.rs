//! What became of the batches sent to one other node, for the senders
//! with receipts waiting on them, and the window of bytes in flight to it.
//!
//! A batch is settled when the publisher learns it could not be published
//! (Redis failed, or nobody listens on that node's inbox), when Redis took
//! a batch that asked for no acknowledgement, or, for one that did (it
//! holds a message from a sender with receipts, or is large), when the
//! receiving node acknowledges it (see `batch`), naming the records it
//! refused. A batch still unsettled when Redis is lost, when its node is
//! gone, or [`ACK_WAIT`] after it was published, counts as not delivered.
//!
//! The bytes of batches on their way to the other node are the window:
//! those handed to Redis whose `PUBLISH` is not answered yet (the
//! publisher keeps several in flight) and those published and waiting for
//! an acknowledgement. Past [`WINDOW_BYTES`] the publisher takes nothing
//! more from
//! that outbox, so its senders wait as for a full queue, and a receiving
//! node that falls behind slows its senders down instead of piling up
//! what they send.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_listener::Event;

use super::batch::Refusals;
use crate::wire::texts::{Code, ErrorText};

/// Settled batches remembered with an outcome other than "all delivered",
/// for tickets that ask late; older ones count as not delivered.
const OUTCOMES_KEPT: usize = 1024;
/// Bytes of published batches one node may have waiting for another's
/// acknowledgement.
pub const WINDOW_BYTES: usize = 4 << 20;
/// A batch of at least this many bytes asks for an acknowledgement (so
/// that it counts in the window); smaller ones only if a sender with
/// receipts waits on them.
pub const ACK_BATCH_BYTES: usize = 64 << 10;
/// How long an acknowledgement may take before its batch counts as lost.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// The outcomes of one outbox's batches.
#[derive(Default)]
pub(super) struct Acks {
    state: Mutex<AckState>,
    /// Fires when a batch settles.
    pub(super) settled: Event,
}

#[derive(Default)]
struct AckState {
    /// The publisher reported on every batch numbered below this.
    reported: u64,
    /// Published batches waiting for the receiving node's
    /// acknowledgement, oldest first: number, bytes, when published.
    awaiting: VecDeque<(u64, usize, Instant)>,
    /// Their bytes.
    in_flight: usize,
    /// Bytes of batches taken for publishing whose `PUBLISH` was not
    /// answered yet: on their way as much as those awaiting an
    /// acknowledgement, so they count in the window too.
    unanswered: usize,
    /// Settled batches whose outcome is not "all delivered", oldest
    /// first.
    outcomes: VecDeque<(u64, Settled)>,
    /// Batches below this that are not in `outcomes` were forgotten.
    forgotten_below: u64,
}

/// What became of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Every record reached the receiving node.
    Delivered,
    /// The batch did not reach it (or nobody knows any more).
    Lost,
    /// It reached it, and these records (index, why) were refused.
    Refused(Arc<[(u32, ErrorText)]>),
}

impl Settled {
    /// What became of record `index`: `None` delivered; `Some(None)` not
    /// delivered, no reason known; `Some(Some(error))` refused for
    /// `error`.
    pub(crate) fn refusal(&self, index: u32) -> Option<Option<&ErrorText>> {
        match self {
            Settled::Delivered => None,
            Settled::Lost => Some(None),
            Settled::Refused(refused) => refused
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, error)| Some(error)),
        }
    }
}

impl Acks {
    /// The outcomes of batches numbered from `first` on.
    pub(super) fn starting_at(first: u64) -> Acks {
        let acks = Acks::default();
        let mut state = acks.lock();
        state.reported = first;
        state.forgotten_below = first;
        drop(state);
        acks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The publisher took batch `seq` of `bytes` to publish; it counts in
    /// the window from now on. One that asks for an acknowledgement
    /// awaits it from now on, too: the acknowledgement comes on another
    /// connection than Redis's answer to the `PUBLISH`, and may well come
    /// first.
    pub(super) fn taken(&self, seq: u64, bytes: usize, wants_ack: bool) {
        let mut state = self.lock();
        if wants_ack {
            state.awaiting.push_back((seq, bytes, Instant::now()));
            state.in_flight += bytes;
        } else {
            state.unanswered += bytes;
        }
    }

    /// The publisher's report on batch `seq` of `bytes`, taken before
    /// ([`Acks::taken`]): `published` by Redis to at least one subscriber;
    /// `wants_ack`: it asked for an acknowledgement, which alone settles
    /// it.
    pub(super) fn published(&self, seq: u64, bytes: usize, published: bool, wants_ack: bool) {
        let mut state = self.lock();
        state.reported = state.reported.max(seq + 1);
        if !wants_ack {
            state.unanswered = state.unanswered.saturating_sub(bytes);
        }
        if !published {
            if let Some(position) = state.awaiting.iter().position(|&(s, _, _)| s == seq) {
                state.awaiting.remove(position);
                state.in_flight -= bytes;
            }
            state.remember(seq, Settled::Lost);
        }
        drop(state);
        self.settled.notify(usize::MAX);
    }

    /// The receiving node acknowledged batch `seq`, refusing `refusals`.
    pub(super) fn acknowledged(&self, seq: u64, refusals: Refusals<'_>) {
        let mut state = self.lock();
        let Some(position) = state.awaiting.iter().position(|&(s, _, _)| s == seq) else {
            return;
        };
        if let Some((_, bytes, _)) = state.awaiting.remove(position) {
            state.in_flight -= bytes;
        }
        // Codes and texts were checked with the batch (`valid_record`).
        let refused: Vec<(u32, ErrorText)> = refusals
            .filter_map(|(index, code, text)| {
                let text = String::from_utf8_lossy(text).into_owned();
                Some((index, ErrorText::carried(Code::from_byte(code)?, text)))
            })
            .collect();
        if !refused.is_empty() {
            state.remember(seq, Settled::Refused(refused.into()));
        }
        drop(state);
        self.settled.notify(usize::MAX);
    }

    /// Every batch still waiting for an acknowledgement counts as lost
    /// (Redis failed, or the receiving node is gone), and so does every
    /// batch numbered below `taken` the publisher never reported on.
    pub(super) fn lose_unsettled(&self, taken: u64) {
        let mut state = self.lock();
        let awaiting: Vec<(u64, usize, Instant)> = state.awaiting.drain(..).collect();
        state.in_flight = 0;
        for (seq, _, _) in awaiting {
            state.remember(seq, Settled::Lost);
        }
        for seq in state.reported..taken {
            state.remember(seq, Settled::Lost);
        }
        state.reported = state.reported.max(taken);
        drop(state);
        self.settled.notify(usize::MAX);
    }

    /// True when the window is full: more than [`WINDOW_BYTES`] on their
    /// way (taken and not answered, or published and not yet
    /// acknowledged). Batches waiting longer than [`ACK_WAIT`] count as
    /// lost first.
    pub(super) fn window_full(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let mut expired = false;
        while let Some(&(seq, bytes, at)) = state.awaiting.front() {
            if now.duration_since(at) < ACK_WAIT {
                break;
            }
            state.awaiting.pop_front();
            state.in_flight -= bytes;
            state.remember(seq, Settled::Lost);
            expired = true;
        }
        let full = state.in_flight + state.unanswered >= WINDOW_BYTES;
        drop(state);
        if expired {
            self.settled.notify(usize::MAX);
        }
        full
    }

    /// What became of batch `seq`, if known.
    pub(super) fn outcome(&self, seq: u64) -> Option<Settled> {
        let state = self.lock();
        if seq >= state.reported || state.awaiting.iter().any(|&(s, _, _)| s == seq) {
            return None;
        }
        if let Some((_, settled)) = state.outcomes.iter().find(|(s, _)| *s == seq) {
            return Some(settled.clone());
        }
        if seq < state.forgotten_below {
            return Some(Settled::Lost);
        }
        Some(Settled::Delivered)
    }
}

impl AckState {
    fn remember(&mut self, seq: u64, settled: Settled) {
        if self.outcomes.len() == OUTCOMES_KEPT {
            if let Some((oldest, _)) = self.outcomes.pop_front() {
                self.forgotten_below = self.forgotten_below.max(oldest + 1);
            }
        }
        self.outcomes.push_back((seq, settled));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(acks: &Acks, seq: u64) -> Option<Settled> {
        acks.outcome(seq)
    }

    #[test]
    fn a_batch_settles_by_its_report_or_its_acknowledgement() {
        let acks = Acks::default();
        assert_eq!(None, outcome(&acks, 0));
        // Published, nobody with receipts: delivered at once.
        acks.taken(0, 10, false);
        acks.published(0, 10, true, false);
        assert_eq!(Some(Settled::Delivered), outcome(&acks, 0));
        // Published with receipts waiting: only the acknowledgement counts,
        // and a later batch settling does not settle it.
        acks.taken(1, 10, true);
        acks.taken(2, 10, false);
        acks.published(1, 10, true, true);
        acks.published(2, 10, true, false);
        assert_eq!(None, outcome(&acks, 1));
        assert_eq!(Some(Settled::Delivered), outcome(&acks, 2));
        let mut refusals = Vec::new();
        let x = ErrorText::new(Code::NotConnected, "x");
        super::super::batch::put_refusal(&mut refusals, 4, &x);
        acks.acknowledged(1, Refusals(&refusals));
        let settled = outcome(&acks, 1).unwrap();
        assert_eq!(Some(Some(&x)), settled.refusal(4));
        assert_eq!(None, settled.refusal(3));
        // Not published; and lost with Redis while waiting.
        acks.taken(3, 10, true);
        acks.taken(4, WINDOW_BYTES, true);
        acks.published(3, 10, false, true);
        acks.published(4, WINDOW_BYTES, true, true);
        assert!(acks.window_full(Instant::now()));
        acks.lose_unsettled(6);
        for seq in [3, 4, 5] {
            assert_eq!(Some(Settled::Lost), outcome(&acks, seq), "batch {seq}");
        }
        assert!(!acks.window_full(Instant::now()));
        // An acknowledgement that never comes frees the window in time.
        acks.taken(6, WINDOW_BYTES, true);
        acks.published(6, WINDOW_BYTES, true, true);
        assert!(acks.window_full(Instant::now()));
        assert!(!acks.window_full(Instant::now() + ACK_WAIT));
        assert_eq!(Some(Settled::Lost), outcome(&acks, 6));
    }

    /// The regression: with several PUBLISH commands in flight, the bytes
    /// not yet answered were outside the window, so a slow recipient's
    /// node received more than its backlog holds before its pause took
    /// effect, and refused messages of a sender that was only fast.
    #[test]
    fn batches_not_yet_answered_by_redis_count_in_the_window() {
        let acks = Acks::starting_at(0);
        let batch = WINDOW_BYTES / 4;
        for seq in 0..4 {
            assert!(!acks.window_full(Instant::now()));
            acks.taken(seq, batch, seq % 2 == 1);
        }
        assert!(acks.window_full(Instant::now()));
        // Answered without an acknowledgement owed: off the window.
        acks.published(0, batch, true, false);
        assert!(!acks.window_full(Instant::now()));
        // Answered and owing one: still on it until acknowledged.
        acks.taken(4, batch, true);
        acks.published(1, batch, true, true);
        assert!(acks.window_full(Instant::now()));
        acks.acknowledged(1, Refusals(&[]));
        assert!(!acks.window_full(Instant::now()));
        // Not published: off it too.
        acks.published(2, batch, true, false);
        acks.published(3, batch, false, true);
        acks.published(4, batch, false, true);
        assert_eq!(Some(Settled::Lost), outcome(&acks, 4));
        acks.taken(5, WINDOW_BYTES - 1, false);
        assert!(!acks.window_full(Instant::now()));
    }

    /// The regression: the receiving node's acknowledgement comes on the
    /// subscription, Redis's answer to the PUBLISH on the command
    /// connection, and the acknowledgement may come first. It was ignored
    /// then, and the batch held its window until ACK_WAIT passed, stalling
    /// every sender to that node for seconds.
    #[test]
    fn an_acknowledgement_before_redis_answers_the_publish_counts() {
        let acks = Acks::starting_at(0);
        acks.taken(0, WINDOW_BYTES, true);
        assert!(acks.window_full(Instant::now()));
        let mut refusals = Vec::new();
        let x = ErrorText::new(Code::NotConnected, "x");
        super::super::batch::put_refusal(&mut refusals, 2, &x);
        acks.acknowledged(0, Refusals(&refusals));
        assert!(!acks.window_full(Instant::now()));
        // Not settled until the publisher reports on it.
        assert_eq!(None, outcome(&acks, 0));
        acks.published(0, WINDOW_BYTES, true, true);
        assert!(!acks.window_full(Instant::now()));
        let settled = outcome(&acks, 0).unwrap();
        assert_eq!(Some(Some(&x)), settled.refusal(2));
        assert_eq!(None, settled.refusal(1));
    }
}
