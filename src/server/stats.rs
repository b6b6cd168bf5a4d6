//! What the server counts, for `--metrics` and the control socket's
//! `stats`: one [`Stats`] per server, written where things happen, read
//! only when someone asks.
//!
//! The counts of the hot path (messages routed, bytes read and written)
//! are kept per worker thread, each in a cache line of its own that only
//! that thread writes, and added once per read batch or per write, never
//! per frame: a scrape sums the slots. Everything else is rare (a login,
//! a refusal, a slow consumer) and goes to plain shared counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::wire::texts::Code;

/// One worker's counts, alone in its cache line so that two workers
/// counting never contend for it.
#[derive(Default)]
#[repr(align(128))]
struct WorkerSlot {
    routed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    stored: AtomicU64,
    replayed: AtomicU64,
}

/// A count of the hot path, as [`Stats::add`] takes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hot {
    /// Messages a sender's router handled (delivered, stored or refused).
    Routed,
    /// Bytes read from clients.
    BytesIn,
    /// Bytes written to clients.
    BytesOut,
    /// Messages handed to the store or the cluster's logs.
    Stored,
    /// Stored messages sent to a device from its log.
    Replayed,
}

/// How many codes the catalogue has, at most (checked by a test).
const CODES: usize = 32;

/// The server's counters.
pub(crate) struct Stats {
    /// One slot per worker thread, and a last one for every other thread.
    workers: Box<[WorkerSlot]>,
    /// Connections accepted: plain, TLS.
    accepted: [AtomicU64; 2],
    /// Logins that succeeded.
    logins_ok: AtomicU64,
    /// Logins refused, by the code they were refused with.
    logins_refused: [AtomicU64; CODES],
    /// Messages refused to their sender, by code.
    refused: [AtomicU64; CODES],
    /// Recipients disconnected for not reading.
    slow_consumers: AtomicU64,
    /// Batches published to other nodes, and their bytes and round trips.
    pub(crate) publishes: Histograms,
}

/// The cluster's publish batches: their sizes and round trips, as
/// prometheus-client histograms (each observation takes their lock once,
/// on the cluster's thread, per batch).
#[derive(Clone, Debug)]
pub(crate) struct Histograms {
    pub(crate) bytes: Histogram,
    pub(crate) seconds: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            // 256 B to 4 MiB.
            bytes: Histogram::new(exponential_buckets(256.0, 4.0, 8)),
            // 100 µs to about 1.6 s.
            seconds: Histogram::new(exponential_buckets(0.000_1, 4.0, 8)),
        }
    }
}

impl Histograms {
    /// One batch of `bytes` published, answered after `took`.
    pub(crate) fn observe(&self, bytes: usize, took: Duration) {
        self.bytes.observe(bytes as f64);
        self.seconds.observe(took.as_secs_f64());
    }
}

/// The counters as read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub routed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub stored: u64,
    pub replayed: u64,
    pub accepted_plain: u64,
    pub accepted_tls: u64,
    pub logins_ok: u64,
    /// Refused logins by code, only codes seen.
    pub logins_refused: Vec<(Code, u64)>,
    /// Refused messages by code, only codes seen.
    pub refused: Vec<(Code, u64)>,
    pub slow_consumers: u64,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

impl Stats {
    /// Counters for a server with `workers` worker threads.
    pub(crate) fn new(workers: usize) -> Stats {
        Stats {
            workers: (0..=workers).map(|_| WorkerSlot::default()).collect(),
            accepted: Default::default(),
            logins_ok: AtomicU64::new(0),
            logins_refused: Default::default(),
            refused: Default::default(),
            slow_consumers: AtomicU64::new(0),
            publishes: Histograms::default(),
        }
    }

    /// The slot the calling thread counts in: its worker's, or the
    /// shared last one. Looked up once per connection, not per count.
    pub(crate) fn slot(&self) -> usize {
        crate::net::workers::current_index()
            .filter(|&index| index + 1 < self.workers.len())
            .unwrap_or(self.workers.len() - 1)
    }

    /// Adds `n` to a hot-path count in `slot` (from [`Stats::slot`]).
    #[inline]
    pub(crate) fn add(&self, slot: usize, what: Hot, n: u64) {
        let Some(slot) = self.workers.get(slot) else {
            return;
        };
        let counter = match what {
            Hot::Routed => &slot.routed,
            Hot::BytesIn => &slot.bytes_in,
            Hot::BytesOut => &slot.bytes_out,
            Hot::Stored => &slot.stored,
            Hot::Replayed => &slot.replayed,
        };
        // Only this slot's thread writes it (others add to the last one,
        // atomically): a relaxed add, no ordering needed for a count.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A connection was accepted, over TLS or not.
    pub(crate) fn accepted(&self, tls: bool) {
        self.accepted[usize::from(tls)].fetch_add(1, Ordering::Relaxed);
    }

    /// A login ended: `None` if it succeeded, else its refusal's code.
    pub(crate) fn login(&self, refused: Option<Code>) {
        match refused {
            None => &self.logins_ok,
            Some(code) => &self.logins_refused[usize::from(code.to_byte()) % CODES],
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A message was refused to its sender with `code`.
    pub(crate) fn refused(&self, code: Code) {
        self.refused[usize::from(code.to_byte()) % CODES].fetch_add(1, Ordering::Relaxed);
    }

    /// A recipient was disconnected for not reading.
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter, summed over the workers.
    pub fn read(&self) -> Counts {
        let sum = |field: fn(&WorkerSlot) -> &AtomicU64| -> u64 {
            self.workers
                .iter()
                .map(|slot| field(slot).load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add)
        };
        let by_code = |counters: &[AtomicU64; CODES]| -> Vec<(Code, u64)> {
            Code::all()
                .map(|code| {
                    let count =
                        counters[usize::from(code.to_byte()) % CODES].load(Ordering::Relaxed);
                    (code, count)
                })
                .filter(|(_, count)| *count > 0)
                .collect()
        };
        Counts {
            routed: sum(|slot| &slot.routed),
            bytes_in: sum(|slot| &slot.bytes_in),
            bytes_out: sum(|slot| &slot.bytes_out),
            stored: sum(|slot| &slot.stored),
            replayed: sum(|slot| &slot.replayed),
            accepted_plain: self.accepted[0].load(Ordering::Relaxed),
            accepted_tls: self.accepted[1].load(Ordering::Relaxed),
            logins_ok: self.logins_ok.load(Ordering::Relaxed),
            logins_refused: by_code(&self.logins_refused),
            refused: by_code(&self.refused),
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_counter_of_its_own() {
        assert!(Code::all().count() <= CODES);
    }

    #[test]
    fn counts_from_every_slot_are_summed() {
        let stats = Stats::new(2);
        stats.add(0, Hot::Routed, 5);
        stats.add(1, Hot::Routed, 7);
        stats.add(stats.slot(), Hot::Routed, 1);
        stats.add(99, Hot::Routed, 1000);
        stats.refused(Code::NotConnected);
        stats.refused(Code::NotConnected);
        stats.login(None);
        stats.login(Some(Code::WrongPassword));
        let counts = stats.read();
        assert_eq!(counts.routed, 13);
        assert_eq!(counts.refused, vec![(Code::NotConnected, 2)]);
        assert_eq!(counts.logins_ok, 1);
        assert_eq!(counts.logins_refused, vec![(Code::WrongPassword, 1)]);
    }
}
