//! The store of messages that wait (`chat-server --store FILE`): every
//! registered user's conversation log, durable, in one redb file.
//!
//! # How an entry gets to disk
//! [`Store::append`] gives the entry its id (the cursor: one counter for
//! the whole store, so ids increase along every log) and copies it into
//! the pending buffer, both under one short lock: the order of the buffer
//! is the order of the ids. The writer thread (`pmchat-store`, the only
//! context that writes the file) swaps the buffer out, inserts everything
//! in it in one transaction and commits it with an fsync
//! (`Durability::Immediate`): one fsync for whatever arrived meanwhile
//! (group commit). It then publishes [`Store::done`], the highest id the
//! store has dealt with, committed or failed ([`Store::failed`] tells
//! which), and wakes whoever waits for it ([`Store::wait_done`]).
//!
//! # Ids survive a crash without repeating
//! Live messages carry their id before it is committed; a `kill -9` may
//! lose those not committed yet, and a restarted store must never hand
//! their ids out again (a client that saw one has its cursor past it).
//! So ids are reserved ahead on disk ([`RESERVE`] at a time, the next
//! reservation written in the same transaction as the entries), a store
//! opens at its reservation, and an id past the reservation is never given
//! out: [`Store::append`] refuses instead.
//!
//! Readers ([`Store::after`], [`Store::before`], ...) are blocking calls
//! meant for `smol::unblock` or plain threads: redb's read transactions
//! see the last commit and never wait for the writer.

mod chunk;
mod entry;
pub mod keys;
mod read;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use event_listener::{listener, Event};
use redb::{Database, DatabaseError, ReadableTable, TableDefinition};

pub use entry::{now_ms, Direction, Entry};
pub(crate) use read::entry_json;

/// The logs: [`log_key`]`(owner's number, first id)` to a chunk of
/// entries (see [`chunk`]), each `ts, direction, peer, content`. An integer key: compared without decoding, the hot loop of
/// every insert (a `(&str, u64)` key spent a sixth of the writer's time
/// checking UTF-8).
const LOG: TableDefinition<u128, &[u8]> = TableDefinition::new("log");
/// Each owner's number in [`LOG`]'s keys, from 1.
const OWNERS: TableDefinition<&str, u64> = TableDefinition::new("owners");
/// Entries kept per owner.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
/// Per owner, the id up to which some device of the owner was sent
/// everything: where a device without a cursor of its own starts.
const MARKS: TableDefinition<&str, u64> = TableDefinition::new("marks");
/// `reserved`: ids below it may have been handed out; `owners`: the
/// highest owner number given.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Ids reserved ahead on disk.
const RESERVE: u64 = 1 << 20;
/// Bytes of entries waiting for the writer past which appends are refused
/// (the disk is not keeping up): memory stays bounded.
const MAX_PENDING: usize = 32 << 20;
/// Failed id ranges remembered for receipts that have not asked yet.
const MAX_FAILURES: usize = 1024;
/// How often the writer drops entries past `--history-days`.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Why a store cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: the store is in use by another process")]
    Locked { path: PathBuf },
    #[error("{path}: not a pmchat store, or damaged ({detail}); it was left as it is")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("the store: {0}")]
    Read(String),
}

/// Why an entry was not appended: the store cannot take it just now (the
/// disk is not keeping up, or its reservation of ids ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// How much history each log keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Entries per user; the oldest go first.
    pub max_entries: u64,
    /// Age in days; older entries go.
    pub max_days: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_entries: 10_000,
            max_days: 30,
        }
    }
}

/// What the appenders hand the writer.
struct Pending {
    /// Entries, in id order (see `entry::encode_pending`).
    buf: Vec<u8>,
    /// The next id to hand out.
    next_id: u64,
    /// Ids from here on are not reserved on disk yet.
    reserved: u64,
    /// Marks to write: `(owner, id)`.
    marks: Vec<(Box<str>, u64)>,
}

/// The durable conversation logs. See the module doc.
pub struct Store {
    path: PathBuf,
    /// The database; `None` while the writer reopens it after a failed
    /// write (redb refuses everything after one until it is reopened).
    db: RwLock<Option<Database>>,
    pending: Mutex<Pending>,
    /// Wakes the writer.
    wake: Condvar,
    /// Every id up to this one is committed or failed.
    done: AtomicU64,
    /// Notified whenever `done` moves.
    done_moved: Event,
    /// Id ranges whose commit failed, newest last.
    failures: Mutex<VecDeque<(u64, u64)>>,
    retention: Retention,
    stopping: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path`, creating it if the file does not exist
    /// or is empty, and starts its writer thread. Anything else that is not
    /// a store is an error: a file is never replaced.
    pub fn open(path: &Path, retention: Retention) -> Result<Arc<Store>, StoreError> {
        let io = |detail: String| StoreError::Io {
            path: path.to_owned(),
            detail,
        };
        let db = match open_database(path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                })
            }
            // redb says "invalid data" of a file that is not one of its own.
            Err(DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(io(e.to_string()))
            }
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })
            }
        };
        // The tables, and a reservation of ids past everything handed out
        // before (see the module doc).
        #[allow(clippy::result_large_err)] // Once, at start.
        let start = (|| -> Result<u64, redb::Error> {
            let txn = db.begin_write()?;
            let start = {
                let mut meta = txn.open_table(META)?;
                let reserved = meta.get("reserved")?.map_or(1, |v| v.value()).max(1);
                meta.insert("reserved", reserved + RESERVE)?;
                reserved
            };
            txn.open_table(LOG)?;
            txn.open_table(OWNERS)?;
            txn.open_table(COUNTS)?;
            txn.open_table(MARKS)?;
            txn.commit()?;
            Ok(start)
        })()
        .map_err(|e| match e {
            redb::Error::Io(e) => io(e.to_string()),
            e => StoreError::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
            },
        })?;
        let store = Arc::new(Store {
            path: path.to_owned(),
            db: RwLock::new(Some(db)),
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                next_id: start,
                reserved: start + RESERVE,
                marks: Vec::new(),
            }),
            wake: Condvar::new(),
            done: AtomicU64::new(start - 1),
            done_moved: Event::new(),
            failures: Mutex::new(VecDeque::new()),
            retention,
            stopping: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let writer = {
            let store = Arc::clone(&store);
            std::thread::Builder::new()
                .name("pmchat-store".into())
                .spawn(move || writer::run(&store))
                .map_err(|e| io(format!("cannot start the store's writer: {e}")))?
        };
        *store.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
        Ok(store)
    }

    /// The database, for one read or one transaction: held, it keeps the
    /// writer from reopening it underneath.
    fn db(&self) -> Result<Db<'_>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(StoreError::Read(
                "the store is being reopened after a failed write".into(),
            ));
        }
        Ok(Db(guard))
    }

    /// Closes and opens the database again after a failed write; false
    /// if it cannot be opened yet (the next batch tries again).
    fn reopen(&self) -> bool {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Dropped first: it holds the file's lock.
        *slot = None;
        match open_database(&self.path) {
            Ok(db) => {
                *slot = Some(db);
                true
            }
            Err(e) => {
                tracing::warn!(store = %self.path.display(), "cannot reopen the store yet: {e}");
                false
            }
        }
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an entry to `owner`'s log, logged at `ts_ms` ([`now_ms`]),
    /// and returns its id; it is
    /// durable once [`Store::done`] reaches the id and
    /// [`Store::failed`] says it did not fail. Names are at most 255 bytes
    /// and `content` at most 65535 (the wire's limits).
    pub fn append(
        &self,
        owner: &str,
        ts_ms: u64,
        direction: Direction,
        peer: &[u8],
        content: &[u8],
    ) -> Result<u64, Unavailable> {
        let mut pending = self.lock_pending();
        if pending.next_id >= pending.reserved || pending.buf.len() >= MAX_PENDING {
            return Err(Unavailable);
        }
        let id = pending.next_id;
        pending.next_id += 1;
        let was_empty = pending.buf.is_empty();
        entry::encode_pending(&mut pending.buf, owner, id, ts_ms, direction, peer, content);
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(id)
    }

    /// Records that some device of `owner` was sent everything up to
    /// `id` (written with the next commit).
    pub fn set_mark(&self, owner: &str, id: u64) {
        let mut pending = self.lock_pending();
        pending.marks.push((owner.into(), id));
        drop(pending);
        self.wake.notify_one();
    }

    /// The highest id the writer has dealt with: every entry up to it is
    /// committed, or its commit failed.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Waits until [`Store::done`] reaches `id`.
    pub async fn wait_done(&self, id: u64) {
        loop {
            if self.done() >= id {
                return;
            }
            listener!(self.done_moved => moved);
            if self.done() >= id {
                return;
            }
            moved.await;
        }
    }

    /// True if the entry `id`, which [`Store::done`] has passed, was not
    /// committed. An id older than the failures remembered counts as
    /// committed only if no failure was forgotten since: the list is long
    /// enough for receipts, which ask within moments.
    pub fn failed(&self, id: u64) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .iter()
            .any(|&(first, last)| (first..=last).contains(&id))
    }

    fn note_failure(&self, first: u64, last: u64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() == MAX_FAILURES {
            failures.pop_front();
        }
        failures.push_back((first, last));
    }

    /// Commits what is pending and stops the writer; appends after this
    /// are never written.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

/// The key of entry `id` in the log of owner number `owner`.
fn log_key(owner: u64, id: u64) -> u128 {
    (u128::from(owner) << 64) | u128::from(id)
}

/// Every key of owner number `owner`'s log.
fn owner_keys(owner: u64) -> std::ops::RangeInclusive<u128> {
    log_key(owner, 0)..=log_key(owner, u64::MAX)
}

/// Opens (or creates) the database file.
fn open_database(path: &Path) -> Result<Database, DatabaseError> {
    Database::builder().set_cache_size(16 << 20).create(path)
}

/// A read guard on an open database (see [`Store::db`]).
struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        match self.0.as_ref() {
            Some(db) => db,
            // `Store::db` makes a `Db` only of an open database, and the
            // guard keeps it open.
            None => unreachable!("a Db guard on a closed database"),
        }
    }
}

/// Reads `owner`'s mark, if one was ever set.
#[allow(clippy::result_large_err)] // Mapped at once by its one caller.
fn read_mark(db: &Database, owner: &str) -> Result<Option<u64>, redb::Error> {
    let txn = db.begin_read()?;
    let marks = txn.open_table(MARKS)?;
    let mark = marks.get(owner)?.map(|v| v.value());
    Ok(mark)
}

#[cfg(test)]
mod tests;
