//! What became of entries handed to the appender (`appender`), for the
//! senders waiting on them: data only, no `Cluster`.

use std::sync::{Arc, Mutex};

use event_listener::{listener, Event};

/// Redis cannot be reached, or did not answer as a log would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogUnavailable;

/// What became of one run of entries: in Redis, or not. Its entries'
/// senders wait on it.
pub(crate) struct RunOutcome {
    pub(super) owner: Box<str>,
    result: Mutex<Option<Result<(), LogUnavailable>>>,
    settled: Event,
}

impl RunOutcome {
    /// A run of `owner`'s entries, not settled yet.
    pub(super) fn new(owner: &str) -> Self {
        RunOutcome {
            owner: owner.into(),
            result: Mutex::new(None),
            settled: Event::new(),
        }
    }

    pub(super) fn settle(&self, result: Result<(), LogUnavailable>) {
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(result);
            drop(slot);
            self.settled.notify(usize::MAX);
        }
    }

    fn get(&self) -> Option<Result<(), LogUnavailable>> {
        *self.result.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One entry handed to the appender: where its outcome will be.
pub(crate) struct Appended {
    pub(super) run: Arc<RunOutcome>,
}

impl Appended {
    /// The log's owner.
    pub(crate) fn owner(&self) -> &str {
        &self.run.owner
    }

    /// Waits until Redis has the entry, or cannot take it.
    pub(crate) async fn settled(&self) -> Result<(), LogUnavailable> {
        loop {
            if let Some(result) = self.run.get() {
                return result;
            }
            listener!(self.run.settled => settled);
            if let Some(result) = self.run.get() {
                return result;
            }
            settled.await;
        }
    }
}
