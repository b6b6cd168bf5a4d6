//! Appending to registered users' logs on Redis Streams: senders' routers
//! hand entries over ([`Cluster::log_append`]), gathered per owner into
//! runs (a copy into a buffer, on the sender's worker); the appender
//! sends everything gathered as one pipeline of `XADD`s (and one `XTRIM`
//! per run for the age limit), several pipelines in flight on the one
//! connection, so that Redis reads many entries per write and, with
//! `appendfsync always`, syncs once for all of them. Redis numbers the
//! entries; their senders wait on their run's [`RunOutcome`] for their
//! receipts, and the feeders watching the log, here or on the node where
//! the owner is logged in, are told it grew.
//!
//! One node's entries for one owner reach Redis in the order they were
//! handed over (one connection, answers in order); entries from several
//! nodes interleave, numbered in the order Redis ran them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_listener::{listener, Event};
use redis::Value;
use smol::future::FutureExt;
use tracing::warn;

use super::commands::Commands;
use super::keys::{entry_number, hint_channel, log_key};
use super::outcome::{Appended, LogUnavailable, RunOutcome};
use super::Cluster;
use crate::store::Direction;

/// Bytes of entries gathered and not yet sent: past it, senders wait.
const GATHER_BYTES: usize = 1 << 20;
/// Bytes of entries on their way to Redis at once.
const FLIGHT_BYTES: usize = 8 << 20;
/// How long `WAIT` (`--cluster-wait`) waits for the replicas, in ms:
/// within the connection's answer timeout.
const WAIT_MS: u64 = 1000;
/// Connections the appender spreads the logs over (an owner's always on
/// the same one, which keeps its entries in order).
pub(super) const APPEND_CONNECTIONS: usize = 4;

/// One owner's entries, gathered: each a direction byte, the peer (a
/// length byte first) and the content (four length bytes first).
struct Run {
    entries: Vec<u8>,
    count: usize,
    outcome: Arc<RunOutcome>,
}

#[derive(Default)]
struct Gathering {
    runs: Vec<Run>,
    /// The run of each owner, by index in `runs`.
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
    /// Pipelines a shard could not take (see [`Cluster::append_failed`]).
    failures: AtomicU64,
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
        let len = 1 + 1 + peer.len() + 4 + content.len();
        if gathering.bytes > 0 && gathering.bytes + len > GATHER_BYTES {
            return None;
        }
        let was_empty = gathering.runs.is_empty();
        let at = match gathering.open.get(owner) {
            Some(&at) => at,
            None => {
                gathering.runs.push(Run {
                    entries: Vec::new(),
                    count: 0,
                    outcome: Arc::new(RunOutcome::new(owner)),
                });
                let at = gathering.runs.len() - 1;
                gathering.open.insert(owner.into(), at);
                at
            }
        };
        gathering.bytes += len;
        let run = &mut gathering.runs[at];
        // Names are at most 255 bytes and content under 64 KiB: both
        // checked before routing.
        run.entries.push(direction.wire_byte());
        run.entries.push(peer.len() as u8);
        run.entries.extend_from_slice(peer);
        run.entries
            .extend_from_slice(&(content.len() as u32).to_be_bytes());
        run.entries.extend_from_slice(content);
        run.count += 1;
        let appended = Appended {
            run: Arc::clone(&run.outcome),
        };
        drop(gathering);
        if was_empty {
            self.appends.ready.notify(1);
        }
        Some(appended)
    }

    /// The pipelines that append `runs`, each with the connection it goes
    /// on: per run, an `XADD` per entry, then an `XTRIM` to the most
    /// entries kept and one of what is older than the age kept. One
    /// pipeline per connection on one Redis; on a Redis Cluster one per
    /// run, since a pipeline there goes to one shard (a run's keys share a
    /// slot).
    fn pipelines_for(&self, runs: &[Run], sharded: bool) -> Vec<(usize, redis::Pipeline, usize)> {
        let retention = &self.local.retention;
        let cutoff = crate::store::now_ms()
            .saturating_sub(retention.max_days.saturating_mul(86_400_000))
            .max(1);
        let mut pipelines: Vec<(usize, redis::Pipeline, usize)> = Vec::new();
        let mut value = Vec::new();
        for run in runs {
            let owner = &run.outcome.owner;
            let on = connection_of(owner);
            let at = match pipelines.iter().position(|(c, _, _)| *c == on && !sharded) {
                Some(at) => at,
                None => {
                    let mut pipeline = redis::pipe();
                    pipeline.ignore_errors();
                    pipelines.push((on, pipeline, 0));
                    pipelines.len() - 1
                }
            };
            pipelines[at].2 += 1;
            let pipeline = &mut pipelines[at].1;
            let key = log_key(owner);
            for (direction, peer, content) in GatheredEntries(&run.entries) {
                value.clear();
                encode_entry_value(direction, peer, content, &mut value);
                if let Some(key) = &self.key {
                    let tag = key.sign(&signed_entry(owner, &value));
                    value.extend_from_slice(&tag);
                }
                pipeline
                    .cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("e")
                    .arg(&value[..]);
            }
            pipeline
                .cmd("XTRIM")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(retention.max_entries);
            pipeline
                .cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg("~")
                .arg(format!("{cutoff}-0"));
            // After the entries, in the log's slot: a node that hears it
            // finds them there.
            pipeline
                .cmd(if sharded { "SPUBLISH" } else { "PUBLISH" })
                .arg(hint_channel(owner))
                .arg("");
        }
        let wait = self.local.wait_replicas;
        if wait > 0 {
            for (_, pipeline, _) in &mut pipelines {
                pipeline.cmd("WAIT").arg(wait).arg(WAIT_MS);
            }
        }
        pipelines
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

    /// Sends what is gathered, for as long as the connection lasts: a
    /// pipeline per append connection (per run on a Redis Cluster), each
    /// settling its own runs when Redis answers it, so that a shard slow
    /// to answer (a master failing) holds up only its own names. At most
    /// [`FLIGHT_BYTES`] of entries are on their way at once. Returns when
    /// one Redis fails; a pipeline still unanswered then settles when its
    /// connection gives up on it.
    pub(super) async fn append_runs(
        self: &Arc<Self>,
        connections: &[Commands],
    ) -> redis::RedisResult<()> {
        let flight = Arc::new(Flight::default());
        let sharded = matches!(connections.first(), Some(Commands::Sharded(_)));
        // Runs whose name has a pipeline on its way (Redis Cluster only).
        let mut held = Held(Vec::new());
        loop {
            listener!(self.appends.ready => wake);
            listener!(flight.landed => landed);
            if let Some(e) = flight
                .broken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                return Err(e);
            }
            if flight.bytes.load(Ordering::Acquire) >= FLIGHT_BYTES {
                landed.await;
                continue;
            }
            // Held back first: they are older than what was gathered since.
            // While they fill a gathering's worth, nothing more is taken:
            // senders wait, as for a full gathering.
            let held_bytes: usize = held.0.iter().map(|run| run.entries.len()).sum();
            let mut runs = std::mem::take(&mut held.0);
            if held_bytes < GATHER_BYTES {
                runs.extend(self.take_runs());
            }
            if sharded {
                // On a Redis Cluster a pipeline to a master that failed
                // may be redirected to the new one after a later pipeline
                // went there directly: one pipeline per name at a time
                // keeps each log in the order its entries were sent.
                let mut busy = flight.owners.lock().unwrap_or_else(|e| e.into_inner());
                let (ready, wait): (Vec<Run>, Vec<Run>) = runs
                    .into_iter()
                    .partition(|run| busy.insert(run.outcome.owner.clone()));
                drop(busy);
                runs = ready;
                held.0 = wait;
            }
            if runs.is_empty() {
                wake.or(landed).await;
                continue;
            }
            // An owner's runs always on its connection, in order.
            runs.sort_by_cached_key(|run| connection_of(&run.outcome.owner));
            let mut runs = runs.into_iter();
            for (on, pipeline, count) in self.pipelines_for(runs.as_slice(), sharded) {
                let group: Vec<(Arc<RunOutcome>, usize, usize)> = runs
                    .by_ref()
                    .take(count)
                    .map(|r| (r.outcome, r.count, r.entries.len()))
                    .collect();
                let bytes: usize = group.iter().map(|(_, _, bytes)| bytes).sum();
                let owners: Vec<Box<str>> = match sharded {
                    true => group.iter().map(|(o, _, _)| o.owner.clone()).collect(),
                    false => Vec::new(),
                };
                flight.bytes.fetch_add(bytes, Ordering::AcqRel);
                let mut connection = connections[on % connections.len()].clone();
                let (cluster, flight) = (Arc::clone(self), Arc::clone(&flight));
                crate::net::background::spawn(async move {
                    let answer = pipeline.query_async::<Vec<Value>>(&mut connection).await;
                    let group: Vec<(Arc<RunOutcome>, usize)> =
                        group.into_iter().map(|(o, c, _)| (o, c)).collect();
                    match answer {
                        Ok(replies) => cluster.settle_group(group, replies),
                        Err(e) => {
                            for (outcome, _) in &group {
                                outcome.settle(Err(LogUnavailable));
                            }
                            let dropped =
                                e.is_io_error() || e.is_connection_dropped() || e.is_timeout();
                            if dropped && !sharded {
                                *flight.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                            } else {
                                // On a Redis Cluster one shard failing (a
                                // master down until its replica takes over)
                                // is that shard's: the connection finds the
                                // new master itself, and the others go on.
                                cluster.append_failed(&e);
                            }
                        }
                    }
                    if sharded {
                        let mut busy = flight.owners.lock().unwrap_or_else(|e| e.into_inner());
                        for owner in &owners {
                            busy.remove(owner);
                        }
                    }
                    flight.bytes.fetch_sub(bytes, Ordering::AcqRel);
                    flight.landed.notify(usize::MAX);
                })
                .detach();
            }
        }
    }

    /// A shard of a Redis Cluster could not take a pipeline: logged the
    /// first time and every 1,000th (a failover fails many in a row).
    fn append_failed(&self, error: &redis::RedisError) {
        let count = self.appends.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if count == 1 || count % 1000 == 0 {
            warn!(
                "cluster: Redis could not take messages to store ({count} times so far): {error}"
            );
        }
    }

    /// Settles the runs of one pipeline from its replies: per run, its
    /// `XADD`s, then its two `XTRIM`s and its hint; with `--cluster-wait`,
    /// last, `WAIT`'s count of replicas.
    fn settle_group(&self, group: Vec<(Arc<RunOutcome>, usize)>, replies: Vec<Value>) {
        let wait = self.local.wait_replicas;
        let replicated = wait == 0
            || matches!(replies.last(), Some(Value::Int(reached)) if *reached >= i64::from(wait));
        if !replicated {
            warn!(
                "cluster: Redis has fewer replicas than --cluster-wait {wait} asks: \
                 the messages are refused as not stored"
            );
        }
        let mut replies = replies.into_iter();
        for (outcome, count) in group {
            let mut newest = None;
            let mut failed = false;
            for reply in replies.by_ref().take(count) {
                match appended_number(&reply) {
                    Some(number) => newest = Some(number),
                    None => failed = true,
                }
            }
            // Its two XTRIMs and its hint: their failure costs nothing
            // stored.
            let _trimmed_and_hinted = (replies.next(), replies.next(), replies.next());
            if failed {
                self.reject("an XADD answer that is not a stream id");
            }
            outcome.settle(match failed || !replicated {
                true => Err(LogUnavailable),
                false => Ok(()),
            });
            // Appended all the same: the feeders replay what is there.
            if let Some(newest) = newest {
                self.log_grew(&outcome.owner, newest);
            }
        }
    }

    /// `owner`'s log has entries up to `id`: the feeders here that watch
    /// it are told at once (those on other nodes by the hint published
    /// with the entries).
    fn log_grew(&self, owner: &str, id: u64) {
        self.watches.heard(owner.as_bytes(), id);
    }

    /// Starts watching `owner`'s log for a feeder on this node, and, for
    /// the log's first here, its hint channel.
    pub(crate) fn watch_log(self: &Arc<Self>, owner: &str) -> Arc<super::watch::Watched> {
        let (watched, first) = self.watches.watch(owner);
        if first {
            self.hint_subscription(owner, true);
        }
        watched
    }

    /// Ends a watch of [`Cluster::watch_log`].
    pub(crate) fn unwatch_log(self: &Arc<Self>, owner: &str) {
        if self.watches.unwatch(owner) {
            self.hint_subscription(owner, false);
        }
    }

    /// Subscribes to (or leaves) `owner`'s hint channel, on the background
    /// thread. Without Redis now, the connection loop subscribes to every
    /// watched log's channel when it connects.
    fn hint_subscription(self: &Arc<Self>, owner: &str, subscribe: bool) {
        let Some(mut connection) = self.connection() else {
            return;
        };
        let channel = hint_channel(owner);
        let cluster = Arc::clone(self);
        crate::net::background::spawn(async move {
            let done = match subscribe {
                true => connection.subscribe(&channel).await,
                false => connection.unsubscribe(&channel).await,
            };
            if let Err(e) = done {
                cluster.lost(e);
            }
        })
        .detach();
    }
}

/// Runs the appender holds back (see [`Cluster::append_runs`]). The
/// appender is dropped when the connection loop ends (a master failing
/// ends it at once): what it held never reaches Redis, and its senders,
/// who wait for its outcome, are told so.
struct Held(Vec<Run>);

impl Drop for Held {
    fn drop(&mut self) {
        for run in self.0.drain(..) {
            run.outcome.settle(Err(LogUnavailable));
        }
    }
}

/// The appender's pipelines on their way.
#[derive(Default)]
struct Flight {
    /// Bytes of entries sent and not answered yet.
    bytes: AtomicUsize,
    /// Fires when a pipeline was answered (or failed).
    landed: Event,
    /// A connection to one Redis broke: the appender stops, and the node
    /// reconnects.
    broken: Mutex<Option<redis::RedisError>>,
    /// On a Redis Cluster, the names with a pipeline on its way.
    owners: Mutex<std::collections::HashSet<Box<str>>>,
}

/// The number of the entry an `XADD` appended, from its answer.
fn appended_number(reply: &Value) -> Option<u64> {
    match reply {
        Value::BulkString(id) => entry_number(std::str::from_utf8(id).ok()?),
        Value::SimpleString(id) => entry_number(id),
        _ => None,
    }
}

/// The connection (of [`APPEND_CONNECTIONS`]) `owner`'s entries go on.
fn connection_of(owner: &str) -> usize {
    // FNV-1a: any spread will do, the same every time.
    let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % APPEND_CONNECTIONS as u64) as usize
}

/// An entry's one field in its stream (`e`): the direction byte, the
/// peer's length and the peer, then the content. One field, so that
/// Redis parses, stores and logs to its append-only file as little as
/// it can per entry.
pub(super) fn encode_entry_value(direction: u8, peer: &[u8], content: &[u8], out: &mut Vec<u8>) {
    out.push(direction);
    out.push(peer.len() as u8);
    out.extend_from_slice(peer);
    out.extend_from_slice(content);
}

/// What the cluster key signs for an entry of `owner`'s log: the log's
/// name with the entry, so that an entry signed for one log is refused in
/// another.
pub(super) fn signed_entry(owner: &str, value: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(5 + owner.len() + value.len());
    signed.extend_from_slice(b"log:");
    signed.extend_from_slice(owner.as_bytes());
    signed.push(0);
    signed.extend_from_slice(value);
    signed
}

/// The entries of a run's buffer: direction byte, peer, content.
struct GatheredEntries<'a>(&'a [u8]);

impl<'a> Iterator for GatheredEntries<'a> {
    type Item = (u8, &'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&direction, rest) = self.0.split_first()?;
        let (&peer_len, rest) = rest.split_first()?;
        let (peer, rest) = rest.split_at_checked(usize::from(peer_len))?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let (content, rest) = rest.split_at_checked(u32::from_be_bytes(*len) as usize)?;
        self.0 = rest;
        Some((direction, peer, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_entries_read_back_as_written() {
        let mut buffer = Vec::new();
        for (direction, peer, content) in [(b's', &b"alice"[..], &b"hi"[..]), (b'o', b"bob", b"")] {
            buffer.push(direction);
            buffer.push(peer.len() as u8);
            buffer.extend_from_slice(peer);
            buffer.extend_from_slice(&(content.len() as u32).to_be_bytes());
            buffer.extend_from_slice(content);
        }
        let read: Vec<_> = GatheredEntries(&buffer).collect();
        assert_eq!(
            read,
            [
                (b's', &b"alice"[..], &b"hi"[..]),
                (b'o', &b"bob"[..], &b""[..])
            ]
        );
        assert_eq!(GatheredEntries(&buffer[..buffer.len() - 1]).count(), 1);
    }
}
