//! The store's writer thread: one transaction, one fsync, for whatever
//! was appended while the previous one was being written.

// redb's error is large; it is returned once per failed commit, on the
// writer's own thread, never per message.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use redb::{Durability, ReadableTable, Table, WriteTransaction};
use tracing::warn;

use super::chunk;
use super::entry::{pending_entries, value_ts};
use super::{
    log_key, now_ms, owner_keys, Retention, Store, COUNTS, LOG, MARKS, META, OWNERS, PRUNE_EVERY,
    RESERVE,
};

/// Owners' numbers in the log's keys, as committed (see [`super::OWNERS`]):
/// the writer's own cache, so that an entry costs no lookup in the file.
type OwnerNumbers = HashMap<Box<str>, u64>;

/// Runs until [`Store::close`]: see the module doc of [`super`].
pub(super) fn run(store: &Store) {
    let mut batch = Vec::new();
    let mut marks = Vec::new();
    let mut last_prune = Instant::now();
    let mut owners = OwnerNumbers::new();
    loop {
        let (first, last, reserved) = {
            let mut pending = store.lock_pending();
            while pending.buf.is_empty() && pending.marks.is_empty() {
                if store.stopping.load(Ordering::Acquire) {
                    return;
                }
                let wait = PRUNE_EVERY.saturating_sub(last_prune.elapsed());
                let (next, timed_out) = store
                    .wake
                    .wait_timeout(pending, wait)
                    .unwrap_or_else(|p| p.into_inner());
                pending = next;
                if timed_out.timed_out() {
                    break;
                }
            }
            std::mem::swap(&mut batch, &mut pending.buf);
            std::mem::swap(&mut marks, &mut pending.marks);
            let first = pending_entries(&batch).next().map(|e| e.id);
            (first, pending.next_id - 1, pending.reserved)
        };
        let prune = last_prune.elapsed() >= PRUNE_EVERY;
        if prune {
            last_prune = Instant::now();
        }
        // A reservation well ahead of what was handed out, written with
        // the entries that use it up.
        let reserve = (last + RESERVE / 2 > reserved).then_some(last + RESERVE);
        match commit(store, &batch, &marks, reserve, prune, &mut owners) {
            Ok(()) => {
                if let Some(reserved) = reserve {
                    store.lock_pending().reserved = reserved;
                }
            }
            Err(e) => {
                warn!(store = %store.path.display(), "cannot write to the store: {e}");
                if let Some(first) = first {
                    store.note_failure(first, last);
                }
                // After a failed write redb refuses everything until it is
                // opened again; what it had committed is intact (numbers
                // given to new owners in the failed batch were not).
                owners.clear();
                store.reopen();
            }
        }
        batch.clear();
        marks.clear();
        store.done.store(last, Ordering::Release);
        store.done_moved.notify(usize::MAX);
    }
}

/// Writes one batch in one durable transaction.
fn commit(
    store: &Store,
    batch: &[u8],
    marks: &[(Box<str>, u64)],
    reserve: Option<u64>,
    prune: bool,
    owners: &mut OwnerNumbers,
) -> Result<(), redb::Error> {
    let Ok(db) = store.db() else {
        // Closed after a failure and not reopened yet: try again now.
        if !store.reopen() {
            return Err(redb::Error::PreviousIo);
        }
        return commit(store, batch, marks, reserve, prune, owners);
    };
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    insert_entries(&txn, batch, store.retention, owners)?;
    if !marks.is_empty() {
        let mut table = txn.open_table(MARKS)?;
        for (owner, id) in marks {
            table.insert(&**owner, id)?;
        }
    }
    if let Some(reserved) = reserve {
        txn.open_table(META)?.insert("reserved", reserved)?;
    }
    if prune {
        prune_old(&txn, store.retention, owners)?;
    }
    txn.commit()?;
    Ok(())
}

/// Inserts the batch's entries, a chunk per run of one owner's entries
/// (see [`super::chunk`]), and drops what each log holds past
/// `--history-max`.
fn insert_entries(
    txn: &WriteTransaction,
    batch: &[u8],
    retention: Retention,
    owners: &mut OwnerNumbers,
) -> Result<(), redb::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut log = txn.open_table(LOG)?;
    let mut counts = txn.open_table(COUNTS)?;
    // Per owner: its number and how many entries it got.
    let mut added: HashMap<&str, (u64, u64)> = HashMap::new();
    // The chunk being filled: its owner, the owner's number, its first id
    // and how many entries it holds.
    let mut open: Option<(&str, u64, u64, usize)> = None;
    let mut bytes = Vec::with_capacity(chunk::MAX_BYTES + 256);
    for entry in pending_entries(batch) {
        let fits = open.is_some_and(|(owner, _, _, n)| {
            owner == entry.owner && n < chunk::MAX_ENTRIES && bytes.len() < chunk::MAX_BYTES
        });
        if !fits {
            if let Some((owner, number, first, n)) = open.take() {
                log.insert(log_key(number, first), bytes.as_slice())?;
                added.entry(owner).or_insert((number, 0)).1 += n as u64;
                bytes.clear();
            }
            let number = match added.get(entry.owner) {
                Some(&(number, _)) => number,
                None => owner_number(txn, owners, entry.owner)?,
            };
            open = Some((entry.owner, number, entry.id, 0));
        }
        chunk::push(&mut bytes, entry.id, entry.value);
        if let Some((_, _, _, n)) = &mut open {
            *n += 1;
        }
    }
    if let Some((owner, number, first, n)) = open {
        log.insert(log_key(number, first), bytes.as_slice())?;
        added.entry(owner).or_insert((number, 0)).1 += n as u64;
    }
    for (owner, (number, added)) in added {
        let count = counts.get(owner)?.map_or(0, |v| v.value()) + added;
        let excess = count.saturating_sub(retention.max_entries);
        let dropped = match excess {
            0 => 0,
            excess => trim_front(&mut log, number, excess, |_| true)?,
        };
        counts.insert(owner, count - dropped)?;
    }
    Ok(())
}

/// `owner`'s number, given now if it has none.
fn owner_number(
    txn: &WriteTransaction,
    owners: &mut OwnerNumbers,
    owner: &str,
) -> Result<u64, redb::Error> {
    if let Some(&number) = owners.get(owner) {
        return Ok(number);
    }
    let mut table = txn.open_table(OWNERS)?;
    let known = table.get(owner)?.map(|v| v.value());
    let number = match known {
        Some(number) => number,
        None => {
            let mut meta = txn.open_table(META)?;
            let number = meta.get("owners")?.map_or(0, |v| v.value()) + 1;
            meta.insert("owners", number)?;
            table.insert(owner, number)?;
            number
        }
    };
    owners.insert(owner.into(), number);
    Ok(number)
}

/// Removes up to `most` of owner number `owner`'s oldest entries,
/// stopping at the first whose value `drop` does not accept; how many went.
/// Whole chunks go; of the chunk where it stops, what is left is kept
/// under the key of its new first entry.
fn trim_front(
    log: &mut Table<u128, &[u8]>,
    owner: u64,
    most: u64,
    mut drop: impl FnMut(&[u8]) -> bool,
) -> Result<u64, redb::Error> {
    let mut dropped = 0;
    let mut whole = Vec::new();
    let mut rest: Option<(u128, u64, Vec<u8>)> = None;
    for item in log.range(owner_keys(owner))? {
        let (key, value) = item?;
        let bytes = value.value();
        let mut stop = None;
        for (at, id, entry) in chunk::entries(bytes) {
            if dropped >= most || !drop(entry) {
                stop = Some((at, id));
                break;
            }
            dropped += 1;
        }
        match stop {
            None => whole.push(key.value()),
            Some((0, _)) => break,
            Some((at, id)) => {
                rest = Some((key.value(), id, bytes[at..].to_vec()));
                break;
            }
        }
    }
    for key in whole {
        log.remove(key)?;
    }
    if let Some((old, first, bytes)) = rest {
        log.remove(old)?;
        log.insert(log_key(owner, first), bytes.as_slice())?;
    }
    Ok(dropped)
}

/// Drops entries older than `--history-days` from every log.
fn prune_old(
    txn: &WriteTransaction,
    retention: Retention,
    owners: &mut OwnerNumbers,
) -> Result<(), redb::Error> {
    let cutoff = now_ms().saturating_sub(retention.max_days.saturating_mul(86_400_000));
    let mut log = txn.open_table(LOG)?;
    let mut counts = txn.open_table(COUNTS)?;
    let logs: Vec<(String, u64)> = counts
        .iter()?
        .filter_map(|item| item.ok())
        .map(|(owner, count)| (owner.value().to_owned(), count.value()))
        .collect();
    for (owner, count) in logs {
        let old = |value: &[u8]| value_ts(value).is_some_and(|ts| ts < cutoff);
        let number = owner_number(txn, owners, &owner)?;
        let dropped = trim_front(&mut log, number, count, old)?;
        if dropped > 0 {
            counts.insert(owner.as_str(), count - dropped)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, Store};
    use super::*;

    #[test]
    fn entries_older_than_history_days_go_at_the_prune_and_newer_ones_stay() {
        let dir = std::env::temp_dir().join(format!("pmchat-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let retention = Retention {
            max_entries: 1000,
            max_days: 30,
        };
        let store = Store::open(&dir.join("store.redb"), retention).unwrap();
        let day = 86_400_000;
        let now = now_ms();
        let mut last = 0;
        for (age_days, text) in [
            (40, "old"),
            (31, "older than 30 days"),
            (29, "recent"),
            (0, "now"),
        ] {
            last = store
                .append(
                    "bob",
                    now - age_days * day,
                    Direction::Stored,
                    b"alice",
                    text.as_bytes(),
                )
                .unwrap();
        }
        smol::block_on(store.wait_done(last));
        {
            let db = store.db().unwrap();
            let txn = db.begin_write().unwrap();
            prune_old(&txn, retention, &mut OwnerNumbers::new()).unwrap();
            txn.commit().unwrap();
        }
        let kept: Vec<_> = store
            .after("bob", 0, u64::MAX, 10)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.content).unwrap())
            .collect();
        assert_eq!(kept, ["recent", "now"]);
        assert_eq!(store.count("bob").unwrap(), 2);
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
