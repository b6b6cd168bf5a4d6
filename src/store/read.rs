//! Reading the logs back: pages after a cursor (catch-up), pages before
//! one (history), counts, export; and purging a log. Blocking calls: see
//! the module doc of [`super`].

use std::io::Write;

use redb::ReadableTable;

use super::entry::{decode_value, value_ts, Direction, Entry};
use super::{chunk, log_key, owner_keys, read_mark, Store, StoreError, COUNTS, LOG, OWNERS};

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
        // From the chunk holding `after + 1`, if one does.
        let start = log
            .range(log_key(number, 0)..=log_key(number, after + 1))
            .map_err(read_error)?
            .next_back()
            .transpose()
            .map_err(read_error)?
            .map_or(log_key(number, 0), |(key, _)| key.value());
        let mut entries = Vec::new();
        'chunks: for item in log
            .range(start..=log_key(number, up_to))
            .map_err(read_error)?
        {
            let (_, value) = item.map_err(read_error)?;
            for (_, id, bytes) in chunk::entries(value.value()) {
                if id <= after {
                    continue;
                }
                if id > up_to || entries.len() >= max {
                    break 'chunks;
                }
                if let Some(entry) = decode_value(id, bytes) {
                    entries.push(entry);
                }
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
        let range = log_key(number, 0)..log_key(number, before);
        'chunks: for item in log.range(range).map_err(read_error)?.rev() {
            let (_, value) = item.map_err(read_error)?;
            for (_, id, bytes) in chunk::entries(value.value()).rev() {
                if id >= before {
                    continue;
                }
                let Some(entry) = decode_value(id, bytes) else {
                    continue;
                };
                if peer.is_some_and(|peer| entry.peer != peer) {
                    continue;
                }
                entries.push(entry);
                if entries.len() >= max {
                    break 'chunks;
                }
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
            Some(item) => {
                let (_, value) = item.map_err(read_error)?;
                let last = chunk::entries(value.value()).next_back().map_or(0, |e| e.1);
                Ok(last)
            }
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
            let (_, value) = item.map_err(read_error)?;
            for (_, id, bytes) in chunk::entries(value.value()).rev() {
                if value_ts(bytes).is_some_and(|ts| ts < ts_ms) {
                    return Ok(id);
                }
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
            let (_, value) = item.map_err(read_error)?;
            for (_, id, bytes) in chunk::entries(value.value()) {
                let Some(entry) = decode_value(id, bytes) else {
                    continue;
                };
                line.clear();
                entry_json(&entry, &mut line);
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(read_error)?;
                written += 1;
            }
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
                .filter_map(Result::ok)
                .map(|(_, value)| chunk::entries(value.value()).count() as u64)
                .sum();
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
pub(crate) fn entry_json(entry: &Entry, out: &mut String) {
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
    if crate::wire::v1::is_sealed(&entry.content) {
        // End-to-end encrypted: its bytes as they are, in hex (they are
        // not text, and only its recipient's device could open them).
        out.push_str(",\"sealed\":\"");
        out.push_str(&crate::hex::encode(&entry.content));
        out.push_str("\"}");
        return;
    }
    out.push_str(",\"content\":");
    crate::json::push_string(out, &entry.content);
    out.push('}');
}
