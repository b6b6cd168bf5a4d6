//! Reading the logs back: pages after a cursor (catch-up), pages before
//! one (history), counts, export; and purging a log. Blocking calls: see
//! the module doc of [`super`].

use std::io::Write;

use redb::{ReadableTable, ReadableTableMetadata};

use super::entry::{decode_value, value_ts, Direction, Entry};
use super::{key_id, log_key, owner_keys, read_mark, Store, StoreError, COUNTS, LOG, OWNERS};

fn read_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

/// `owner`'s number in the log's keys; `None`: nothing was ever logged
/// for it.
fn owner_number(txn: &redb::ReadTransaction, owner: &str) -> Result<Option<u64>, StoreError> {
    let owners = txn.open_table(OWNERS).map_err(read_error)?;
    let number = owners.get(owner).map_err(read_error)?.map(|v| v.value());
    Ok(number)
}

impl Store {
    /// Up to `max` of `owner`'s entries with ids in `after+1 ..= up_to`,
    /// oldest first.
    pub fn after(
        &self,
        owner: &str,
        after: u64,
        up_to: u64,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        let db = self.db()?;
        let txn = db.begin_read().map_err(read_error)?;
        let Some(number) = owner_number(&txn, owner)? else {
            return Ok(Vec::new());
        };
        let log = txn.open_table(LOG).map_err(read_error)?;
        let range = log_key(number, after + 1)..=log_key(number, up_to);
        let mut entries = Vec::new();
        for item in log.range(range).map_err(read_error)? {
            let (key, value) = item.map_err(read_error)?;
            if let Some(entry) = decode_value(key_id(key.value()), value.value()) {
                entries.push(entry);
            }
            if entries.len() >= max {
                break;
            }
        }
        Ok(entries)
    }

    /// Up to `max` of `owner`'s entries with ids below `before`, with
    /// `peer` only if given, newest last (the page just before the cursor).
    pub fn before(
        &self,
        owner: &str,
        peer: Option<&str>,
        before: u64,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(read_error)?;
        let mut entries = Vec::new();
        let Some(number) = owner_number(&txn, owner)?.filter(|_| before > 0) else {
            return Ok(entries);
        };
        let log = txn.open_table(LOG).map_err(read_error)?;
        let range = log_key(number, 0)..=log_key(number, before - 1);
        for item in log.range(range).map_err(read_error)?.rev() {
            let (key, value) = item.map_err(read_error)?;
            let Some(entry) = decode_value(key_id(key.value()), value.value()) else {
                continue;
            };
            if peer.is_some_and(|peer| entry.peer != peer) {
                continue;
            }
            entries.push(entry);
            if entries.len() >= max {
                break;
            }
        }
        entries.reverse();
        Ok(entries)
    }

    /// The id of `owner`'s newest committed entry, 0 if none.
    pub fn last_id(&self, owner: &str) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(read_error)?;
        let Some(number) = owner_number(&txn, owner)? else {
            return Ok(0);
        };
        let log = txn.open_table(LOG).map_err(read_error)?;
        let mut range = log.range(owner_keys(number)).map_err(read_error)?;
        match range.next_back() {
            Some(item) => Ok(key_id(item.map_err(read_error)?.0.value())),
            None => Ok(0),
        }
    }

    /// The id of `owner`'s newest entry logged before `ts_ms`, 0 if none:
    /// a replay after it starts at that time.
    pub fn last_before(&self, owner: &str, ts_ms: u64) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(read_error)?;
        let Some(number) = owner_number(&txn, owner)? else {
            return Ok(0);
        };
        let log = txn.open_table(LOG).map_err(read_error)?;
        for item in log.range(owner_keys(number)).map_err(read_error)?.rev() {
            let (key, value) = item.map_err(read_error)?;
            if value_ts(value.value()).is_some_and(|ts| ts < ts_ms) {
                return Ok(key_id(key.value()));
            }
        }
        Ok(0)
    }

    /// `owner`'s mark (see [`Store::set_mark`]), if one was ever set.
    pub fn mark(&self, owner: &str) -> Result<Option<u64>, StoreError> {
        read_mark(&*self.db()?, owner).map_err(read_error)
    }

    /// Entries kept for `owner`.
    pub fn count(&self, owner: &str) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(read_error)?;
        let counts = txn.open_table(COUNTS).map_err(read_error)?;
        let count = counts
            .get(owner)
            .map_err(read_error)?
            .map_or(0, |v| v.value());
        Ok(count)
    }

    /// Entries kept in all.
    pub fn total(&self) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(read_error)?;
        let log = txn.open_table(LOG).map_err(read_error)?;
        log.len().map_err(read_error)
    }

    /// Writes `owner`'s log as JSON lines, oldest first: `id`, `ts` (ms
    /// since the epoch), `dir` (`in` or `out`), `peer`, `content`. How many.
    pub fn export(&self, owner: &str, out: &mut impl Write) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(read_error)?;
        let mut written = 0;
        let Some(number) = owner_number(&txn, owner)? else {
            return Ok(written);
        };
        let log = txn.open_table(LOG).map_err(read_error)?;
        let mut line = String::new();
        for item in log.range(owner_keys(number)).map_err(read_error)? {
            let (key, value) = item.map_err(read_error)?;
            let Some(entry) = decode_value(key_id(key.value()), value.value()) else {
                continue;
            };
            line.clear();
            entry_json(&entry, &mut line);
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(read_error)?;
            written += 1;
        }
        Ok(written)
    }

    /// Removes every entry of `owner`'s log; how many went.
    pub fn purge(&self, owner: &str) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(read_error)?;
        let purged = {
            let number = txn
                .open_table(OWNERS)
                .map_err(read_error)?
                .get(owner)
                .map_err(read_error)?
                .map(|v| v.value());
            let mut log = txn.open_table(LOG).map_err(read_error)?;
            let Some(number) = number else {
                drop(log);
                txn.abort().map_err(read_error)?;
                return Ok(0);
            };
            let purged = log
                .extract_from_if(owner_keys(number), |_, _| true)
                .map_err(read_error)?
                .count() as u64;
            txn.open_table(COUNTS)
                .map_err(read_error)?
                .remove(owner)
                .map_err(read_error)?;
            purged
        };
        txn.commit().map_err(read_error)?;
        Ok(purged)
    }
}

/// One entry as a JSON object, for export.
pub(super) fn entry_json(entry: &Entry, out: &mut String) {
    use std::fmt::Write as _;
    let dir = match entry.direction {
        Direction::Sent => "out",
        Direction::Received | Direction::Stored => "in",
    };
    let _ = write!(
        out,
        "{{\"id\":{},\"ts\":{},\"dir\":\"{dir}\",\"peer\":",
        entry.id, entry.ts_ms
    );
    crate::json::push_string(out, entry.peer.as_bytes());
    out.push_str(",\"content\":");
    crate::json::push_string(out, &entry.content);
    out.push('}');
}
