//! Who on this node waits for which user's log to grow: the feeders of
//! the devices logged in here. The appender tells them when it appended
//! to a log they watch, and the node that appended publishes on the log's
//! hint channel (`keys::hint_channel`) in the pipeline that appends, which
//! this node subscribes to while it watches the log; a feeder then reads
//! the log after its cursor. A hint only: the log itself is what a feeder
//! replays, so a hint lost or out of order delays a line (until the
//! feeder's next look), never loses or repeats one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use event_listener::Event;

/// One watched log.
#[derive(Default)]
pub(crate) struct Watched {
    /// The newest entry number heard of.
    newest: AtomicU64,
    /// Fires when `newest` grows.
    pub(crate) grew: Event,
}

impl Watched {
    pub(crate) fn newest(&self) -> u64 {
        self.newest.load(Ordering::Acquire)
    }

    fn heard(&self, id: u64) {
        if self.newest.fetch_max(id, Ordering::AcqRel) < id {
            self.grew.notify(usize::MAX);
        }
    }
}

/// Watched logs by owner, with how many feeders watch each.
type Logs = HashMap<Box<str>, (Arc<Watched>, usize)>;

/// The logs watched on this node.
#[derive(Default)]
pub(super) struct Watches {
    logs: Mutex<Logs>,
}

impl Watches {
    fn lock(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching `owner`'s log; true for its first watch here.
    pub(super) fn watch(&self, owner: &str) -> (Arc<Watched>, bool) {
        let mut logs = self.lock();
        let (watched, count) = logs.entry(owner.into()).or_default();
        *count += 1;
        (Arc::clone(watched), *count == 1)
    }

    /// Stops one watch of `owner`'s log; true if it was the last here.
    pub(super) fn unwatch(&self, owner: &str) -> bool {
        let mut logs = self.lock();
        if let Some((_, count)) = logs.get_mut(owner) {
            *count -= 1;
            if *count == 0 {
                logs.remove(owner);
                return true;
            }
        }
        false
    }

    /// `owner`'s log grew, to what number is not said (a hint from
    /// another node): its feeders look.
    pub(super) fn poke(&self, owner: &str) {
        if let Some((watched, _)) = self.lock().get(owner) {
            watched.grew.notify(usize::MAX);
        }
    }

    /// The logs watched here.
    pub(super) fn owners(&self) -> Vec<String> {
        self.lock().keys().map(|k| k.to_string()).collect()
    }

    /// `owner`'s log has entries up to `id`; true if anyone here watches
    /// it.
    pub(super) fn heard(&self, owner: &[u8], id: u64) -> bool {
        let Ok(owner) = std::str::from_utf8(owner) else {
            return false;
        };
        let watched = self.lock().get(owner).map(|(w, _)| Arc::clone(w));
        match watched {
            Some(watched) => {
                watched.heard(id);
                true
            }
            None => false,
        }
    }

    /// Wakes every feeder (Redis is back: what they missed meanwhile is in
    /// the logs).
    pub(super) fn wake_all(&self) {
        for (watched, _) in self.lock().values() {
            watched.grew.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_hears_growth_until_its_last_watcher_leaves() {
        let watches = Watches::default();
        let (watched, first) = watches.watch("alice");
        let (again, second) = watches.watch("alice");
        assert!(Arc::ptr_eq(&watched, &again) && first && !second);
        assert!(watches.heard(b"alice", 7));
        assert_eq!(watched.newest(), 7);
        // Out of order: the newest stays.
        assert!(watches.heard(b"alice", 5));
        assert_eq!(watched.newest(), 7);
        assert!(!watches.heard(b"bob", 1));
        assert!(!watches.unwatch("alice"));
        assert!(watches.heard(b"alice", 8));
        assert_eq!(watches.owners(), ["alice"]);
        assert!(watches.unwatch("alice"));
        assert!(!watches.heard(b"alice", 9));
    }
}
