//! Flow control across nodes: the recipients on other nodes whose
//! backlogs are filling, which senders here wait for as they would for a
//! full local queue.
//!
//! A node whose local recipient has more than [`PAUSE_AT`] of other nodes'
//! messages waiting for its queue tells each node that sent them to pause
//! (`P` records), and tells them to go on (`G`) once it has caught up. A
//! sender here with a message for a paused recipient waits, up to the
//! slow-consumer timeout, as for a full local queue; a recipient that
//! reads, however slowly, is never refused for being remote. A pause ends
//! by itself after [`PAUSE_LASTS`], in case its `G` was lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use event_listener::{listener, Event};

/// Bytes waiting for one recipient past which its senders' nodes are told
/// to pause.
pub const PAUSE_AT: usize = 1 << 20;
/// Bytes of other nodes' messages that may wait for one recipient's queue:
/// what arrives between a pause and its taking effect (an outbox, what is
/// in Redis and in transit) fits several times over. Past it, a message is
/// refused as not read fast enough.
pub const BACKLOG_BYTES: usize = 8 << 20;
/// How long a pause lasts without a `G`.
const PAUSE_LASTS: Duration = Duration::from_secs(10);

/// Recipients on other nodes that asked for a pause, by name.
#[derive(Default)]
pub(super) struct Paused {
    /// How many: zero on the path of almost every message, checked first.
    count: AtomicUsize,
    until: Mutex<HashMap<Box<[u8]>, Instant>>,
    /// Fires when a pause ends.
    resumed: Event,
}

impl Paused {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<[u8]>, Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name`'s node asks its senders here to pause.
    pub(super) fn pause(&self, name: &[u8]) {
        self.pause_at(name, Instant::now());
    }

    /// [`Paused::pause`] as of `now`: the clock is the caller's, so that
    /// a test can see a pause run out without waiting for it.
    fn pause_at(&self, name: &[u8], now: Instant) {
        let mut until = self.lock();
        until.insert(name.into(), now + PAUSE_LASTS);
        self.count.store(until.len(), Ordering::Relaxed);
    }

    /// `name`'s node has caught up (or `name` left).
    pub(super) fn resume(&self, name: &[u8]) {
        let mut until = self.lock();
        if until.remove(name).is_some() {
            self.count.store(until.len(), Ordering::Relaxed);
            drop(until);
            self.resumed.notify(usize::MAX);
        }
    }

    /// True if any recipient is paused: one load.
    pub(super) fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// True while `name` is paused.
    pub(super) fn is_paused(&self, name: &[u8]) -> bool {
        self.is_paused_at(name, Instant::now())
    }

    /// [`Paused::is_paused`] as of `now`.
    fn is_paused_at(&self, name: &[u8], now: Instant) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut until = self.lock();
        match until.get(name) {
            Some(&end) if now < end => true,
            Some(_) => {
                until.remove(name);
                self.count.store(until.len(), Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Waits until `name` is not paused; false if it still is at
    /// `deadline`.
    pub(super) async fn wait(&self, name: &[u8], deadline: Instant) -> bool {
        loop {
            if !self.is_paused(name) {
                return true;
            }
            listener!(self.resumed => resumed);
            if !self.is_paused(name) {
                return true;
            }
            // Wake at the pause's own end too, in case its `G` was lost.
            let wake = self
                .lock()
                .get(name)
                .copied()
                .unwrap_or(deadline)
                .min(deadline);
            if crate::runtime::until(wake, resumed).await.is_none() && Instant::now() >= deadline {
                return !self.is_paused(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_holds_until_resumed_and_costs_nothing_without_one() {
        let paused = Paused::default();
        assert!(!paused.is_paused(b"bob"));
        paused.pause(b"bob");
        assert!(paused.is_paused(b"bob"));
        assert!(!paused.is_paused(b"carol"));
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!smol::block_on(paused.wait(b"bob", soon)));
        paused.resume(b"bob");
        assert!(smol::block_on(paused.wait(b"bob", soon)));
        assert_eq!(paused.count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_pause_whose_go_on_was_lost_ends_by_itself() {
        let paused = Paused::default();
        let start = Instant::now();
        paused.pause_at(b"bob", start);
        assert!(paused.is_paused_at(b"bob", start + PAUSE_LASTS - Duration::from_millis(1)));
        assert!(!paused.is_paused_at(b"bob", start + PAUSE_LASTS));
        // Forgotten once seen to have run out: the next message pays one
        // load again, not a lock.
        assert!(!paused.any());
    }
}
