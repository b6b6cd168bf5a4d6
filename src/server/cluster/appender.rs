//! Appending to registered users' logs on Redis Streams: senders' routers
//! hand entries over ([`Cluster::log_append`]), gathered per owner into
//! runs; the appender sends each run as one call of the append script
//! (`keys::append_script`), several calls in flight on the one
//! connection, so that Redis sees one command per run of an owner's
//! entries, not per entry. Redis numbers a run's entries contiguously; the
//! senders wait on the run's [`RunOutcome`] for their receipts, and the
//! feeders watching the log, here or on the node where the owner is
//! logged in, are told it grew.
//!
//! One node's entries for one owner reach Redis in the order they were
//! handed over (one connection, answers in order); entries from several
//! nodes interleave, numbered in the order Redis ran them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_listener::{listener, Event};
use redis::Value;
use smol::future::FutureExt;

use super::batch::Record;
use super::commands::Commands;
use super::keys::{log_key, log_meta_key};
use super::log::LogUnavailable;
use super::Cluster;
use crate::store::Direction;

/// Bytes of entries gathered and not yet sent: past it, senders wait.
const GATHER_BYTES: usize = 8 << 20;
/// The most entries one call of the script appends.
const RUN_ENTRIES: u32 = 256;
/// Script calls on their way at once.
const APPEND_DEPTH: usize = 8;

/// What became of one run of entries: the number Redis gave its first
/// entry, or a failure. Its entries' senders wait on it.
pub(crate) struct RunOutcome {
    owner: Box<str>,
    result: Mutex<Option<Result<u64, LogUnavailable>>>,
    settled: Event,
}

impl RunOutcome {
    fn settle(&self, result: Result<u64, LogUnavailable>) {
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(result);
            drop(slot);
            self.settled.notify(usize::MAX);
        }
    }

    fn get(&self) -> Option<Result<u64, LogUnavailable>> {
        *self.result.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One entry handed to the appender: where its outcome will be.
pub(crate) struct Appended {
    run: Arc<RunOutcome>,
    index: u32,
}

impl Appended {
    /// The log's owner.
    pub(crate) fn owner(&self) -> &str {
        &self.run.owner
    }

    /// Waits until Redis has the entry (its number) or cannot take it.
    pub(crate) async fn settled(&self) -> Result<u64, LogUnavailable> {
        loop {
            if let Some(result) = self.run.get() {
                return result.map(|first| first + u64::from(self.index));
            }
            listener!(self.run.settled => settled);
            if let Some(result) = self.run.get() {
                return result.map(|first| first + u64::from(self.index));
            }
            settled.await;
        }
    }
}

/// A run being gathered: the script call, built as entries come.
struct Run {
    command: redis::Cmd,
    entries: u32,
    outcome: Arc<RunOutcome>,
}

#[derive(Default)]
struct Gathering {
    runs: Vec<Run>,
    /// The open run of each owner, by index in `runs`.
    open: HashMap<Box<str>, usize>,
    bytes: usize,
}

/// The entries gathered for the appender.
#[derive(Default)]
pub(super) struct Appends {
    gathering: Mutex<Gathering>,
    /// Fires when entries were gathered into an empty gathering.
    ready: Event,
    /// Fires when the appender took what was gathered.
    room: Event,
}

impl Appends {
    fn lock(&self) -> std::sync::MutexGuard<'_, Gathering> {
        self.gathering.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Cluster {
    /// Hands an entry for `owner`'s log to the appender, waiting up to
    /// `patience` for room; `Err` if Redis is unreachable (or stays too
    /// slow).
    pub(crate) async fn log_append(
        &self,
        owner: &str,
        direction: Direction,
        peer: &[u8],
        content: &[u8],
        patience: Duration,
    ) -> Result<Appended, LogUnavailable> {
        let mut deadline = None;
        loop {
            if !self.available() {
                return Err(LogUnavailable);
            }
            listener!(self.appends.room => room);
            if let Some(appended) = self.try_log_append(owner, direction, peer, content) {
                return Ok(appended);
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + patience);
            crate::runtime::until(deadline, room)
                .await
                .ok_or(LogUnavailable)?;
        }
    }

    /// [`Cluster::log_append`] if there is room now and Redis is
    /// reachable, without waiting; `None` otherwise.
    pub(crate) fn try_log_append(
        &self,
        owner: &str,
        direction: Direction,
        peer: &[u8],
        content: &[u8],
    ) -> Option<Appended> {
        if !self.available() {
            return None;
        }
        let mut gathering = self.appends.lock();
        let len = owner.len() + peer.len() + content.len() + 16;
        if gathering.bytes > 0 && gathering.bytes + len > GATHER_BYTES {
            return None;
        }
        let was_empty = gathering.runs.is_empty();
        let open = gathering
            .open
            .get(owner)
            .copied()
            .filter(|&at| gathering.runs[at].entries < RUN_ENTRIES);
        let at = match open {
            Some(at) => at,
            None => {
                let run = self.new_run(owner);
                gathering.runs.push(run);
                let at = gathering.runs.len() - 1;
                gathering.open.insert(owner.into(), at);
                at
            }
        };
        gathering.bytes += len;
        let run = &mut gathering.runs[at];
        run.command
            .arg(&[direction.wire_byte()][..])
            .arg(peer)
            .arg(content);
        let appended = Appended {
            run: Arc::clone(&run.outcome),
            index: run.entries,
        };
        run.entries += 1;
        drop(gathering);
        if was_empty {
            self.appends.ready.notify(1);
        }
        Some(appended)
    }

    fn new_run(&self, owner: &str) -> Run {
        let retention = &self.local.retention;
        let cutoff = crate::store::now_ms()
            .saturating_sub(retention.max_days.saturating_mul(86_400_000))
            .max(1);
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.append_script.get_hash())
            .arg(2)
            .arg(log_key(owner))
            .arg(log_meta_key(owner))
            .arg(retention.max_entries)
            .arg(cutoff);
        Run {
            command,
            entries: 0,
            outcome: Arc::new(RunOutcome {
                owner: owner.into(),
                result: Mutex::new(None),
                settled: Event::new(),
            }),
        }
    }

    fn take_runs(&self) -> Vec<Run> {
        let mut gathering = self.appends.lock();
        let taken = std::mem::take(&mut *gathering);
        drop(gathering);
        self.appends.room.notify(usize::MAX);
        taken.runs
    }

    /// Everything gathered fails: Redis is unreachable.
    pub(super) fn fail_appends(&self) {
        for run in self.take_runs() {
            run.outcome.settle(Err(LogUnavailable));
        }
    }

    /// Sends the gathered runs, up to [`APPEND_DEPTH`] at once, for as
    /// long as the connection lasts; returns when Redis fails (every run
    /// not answered then fails too, as when this is cancelled).
    pub(super) async fn append_runs(&self, connection: &Commands) -> redis::RedisResult<()> {
        let mut flight = RunsInFlight(VecDeque::new());
        loop {
            listener!(self.appends.ready => wake);
            let room = flight.0.len() < APPEND_DEPTH;
            if room {
                let runs = self.take_runs();
                if !runs.is_empty() {
                    for run in runs {
                        let mut connection = connection.clone();
                        let script = self.append_script.clone();
                        let command = run.command;
                        let answer = crate::runtime::spawn_background(async move {
                            let answer = command.query_async::<Value>(&mut connection).await;
                            match answer {
                                // Not in this Redis's cache (it restarted,
                                // or a replica took over): loaded, then
                                // once more.
                                Err(e)
                                    if e.kind()
                                        == redis::ErrorKind::Server(
                                            redis::ServerErrorKind::NoScript,
                                        ) =>
                                {
                                    script.load_async(&mut connection).await?;
                                    command.query_async::<Value>(&mut connection).await
                                }
                                other => other,
                            }
                        });
                        flight.0.push_back((run.outcome, run.entries, answer));
                    }
                    continue;
                }
            }
            let Some((_, _, answer)) = flight.0.front_mut() else {
                wake.await;
                continue;
            };
            let answered = if room {
                async { Some(answer.await) }
                    .or(async {
                        wake.await;
                        None
                    })
                    .await
            } else {
                Some(answer.await)
            };
            let Some(answer) = answered else {
                continue;
            };
            let Some((outcome, entries, _)) = flight.0.pop_front() else {
                continue;
            };
            match answer.map(|answer| first_number(&answer)) {
                Ok(Some(first)) => {
                    outcome.settle(Ok(first));
                    self.log_grew(&outcome.owner, first + u64::from(entries) - 1);
                }
                Ok(None) => {
                    self.reject("an append answer that is not two numbers");
                    outcome.settle(Err(LogUnavailable));
                }
                Err(e) => {
                    outcome.settle(Err(LogUnavailable));
                    let broken = e.is_io_error() || e.is_connection_dropped() || e.is_timeout();
                    if broken {
                        return Err(e);
                    }
                    self.lost(e);
                }
            }
        }
    }

    /// `owner`'s log has entries up to `id`: the feeders here that watch
    /// it are told, and so is the node `owner` is logged in on, if another.
    fn log_grew(&self, owner: &str, id: u64) {
        self.watches.heard(owner.as_bytes(), id);
        if let Some(node) = self.local.registry.remote_node(owner.as_bytes()) {
            let hint = Record::Logged {
                name: owner.as_bytes(),
                id,
            };
            // A hint that finds no room is made up for by the feeder's
            // next look (see `watch`).
            let _ = self.try_send(&node, &hint);
        }
    }

    /// Starts watching `owner`'s log for a feeder on this node.
    pub(crate) fn watch_log(&self, owner: &str) -> Arc<super::watch::Watched> {
        self.watches.watch(owner)
    }

    /// Ends a watch of [`Cluster::watch_log`].
    pub(crate) fn unwatch_log(&self, owner: &str) {
        self.watches.unwatch(owner);
    }
}

/// The script calls sent and not yet answered, oldest first.
#[allow(clippy::type_complexity)]
struct RunsInFlight(VecDeque<(Arc<RunOutcome>, u32, smol::Task<redis::RedisResult<Value>>)>);

impl Drop for RunsInFlight {
    /// Runs still unanswered when the appender stops may or may not be in
    /// Redis: their senders are told they were not stored, never left to
    /// wonder.
    fn drop(&mut self) {
        for (outcome, _, _) in self.0.drain(..) {
            outcome.settle(Err(LogUnavailable));
        }
    }
}

/// The first number of an append script's answer (`{first, time}`).
fn first_number(answer: &Value) -> Option<u64> {
    let Value::Array(items) = answer else {
        return None;
    };
    match items.first()? {
        Value::Int(first) if *first > 0 => Some(*first as u64),
        _ => None,
    }
}
