//! Registered users' logs on Redis Streams (`--cluster` with
//! `--accounts`): reading them back. Each user's log is one stream
//! (`keys::log_key`) whose entries Redis numbers as it appends them: the
//! stream id, as one number (`keys::entry_number`), is the cursor a client
//! keeps, the same on every node and across restarts, and says when the
//! entry was appended. Appending is the appender's (`appender`).
//!
//! What is read from Redis is checked like everything else that comes from
//! it (see `trust`): an entry with a bad number, time, direction, peer or
//! content is dropped and counted, never shown.

use redis::Value;

use super::appender::signed_entry;
use super::key::TAG_LEN;
use super::keys::{
    before_time, entry_number, entry_time, log_key, log_meta_key, mark_script, stream_id,
};
use super::outcome::LogUnavailable;
use super::trust::{valid_content, valid_name};
use super::Cluster;
use crate::store::{Direction, Entry};

/// Entries read per command when a read has to skip (history filtered by
/// peer).
const SCAN_PAGE: usize = 1000;

impl Cluster {
    /// Up to `max` entries of `owner`'s log after number `cursor`, oldest
    /// first.
    pub(crate) async fn log_after(
        &self,
        owner: &str,
        cursor: u64,
        max: usize,
    ) -> Result<Vec<Entry>, LogUnavailable> {
        let mut connection = self.connection().ok_or(LogUnavailable)?;
        let read: redis::RedisResult<Value> = redis::cmd("XRANGE")
            .arg(log_key(owner))
            .arg(format!("({}", stream_id(cursor)))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut connection)
            .await;
        let read = read.map_err(|e| self.log_lost(e))?;
        Ok(self.entries(owner, read))
    }

    /// Up to `max` entries of `owner`'s log before number `before`, with
    /// `peer` only if given, oldest first (the newest `max` of them).
    pub(crate) async fn log_before(
        &self,
        owner: &str,
        peer: Option<&str>,
        before: u64,
        max: usize,
    ) -> Result<Vec<Entry>, LogUnavailable> {
        let mut connection = self.connection().ok_or(LogUnavailable)?;
        let key = log_key(owner);
        let mut found: Vec<Entry> = Vec::new();
        let mut below = before;
        // Bounded: at most as many entries as the log keeps are looked at.
        let mut budget = self
            .local
            .retention
            .max_entries
            .saturating_add(SCAN_PAGE as u64);
        while found.len() < max && below > 1 && budget > 0 {
            let want = if peer.is_some() {
                SCAN_PAGE
            } else {
                max - found.len()
            };
            let read: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
                .arg(&key)
                .arg(format!("{}-0", below - 1))
                .arg("-")
                .arg("COUNT")
                .arg(want)
                .query_async(&mut connection)
                .await;
            let read = read.map_err(|e| self.log_lost(e))?;
            let page = self.entries(owner, read);
            let Some(oldest) = page.last() else {
                break;
            };
            below = oldest.id;
            budget = budget.saturating_sub(page.len() as u64);
            let short = page.len() < want;
            for entry in page {
                if found.len() < max && peer.is_none_or(|peer| entry.peer == peer) {
                    found.push(entry);
                }
            }
            if short {
                break;
            }
        }
        found.reverse();
        Ok(found)
    }

    /// The cursor that replays `owner`'s log from `ms` on: the entries'
    /// numbers say when they were appended.
    pub(crate) fn log_before_time(&self, ms: u64) -> u64 {
        before_time(ms)
    }

    /// The number of the newest entry of `owner`'s log (0: none yet).
    pub(crate) async fn log_last_id(&self, owner: &str) -> Result<u64, LogUnavailable> {
        let mut connection = self.connection_soon().await.ok_or(LogUnavailable)?;
        let read: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
            .arg(log_key(owner))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await;
        let read = read.map_err(|e| self.log_lost(e))?;
        Ok(self
            .entries(owner, read)
            .first()
            .map_or(0, |entry| entry.id))
    }

    /// How far `owner`'s devices had been sent when the last one left.
    pub(crate) async fn log_mark(&self, owner: &str) -> Result<u64, LogUnavailable> {
        let mut connection = self.connection().ok_or(LogUnavailable)?;
        let mark: redis::RedisResult<Option<u64>> = redis::cmd("HGET")
            .arg(log_meta_key(owner))
            .arg("m")
            .query_async(&mut connection)
            .await;
        mark.map(Option::unwrap_or_default)
            .map_err(|e| self.log_lost(e))
    }

    /// Moves `owner`'s mark on to `id` (never back).
    pub(crate) async fn set_log_mark(&self, owner: &str, id: u64) {
        let Some(mut connection) = self.connection() else {
            return;
        };
        let set: redis::RedisResult<i64> = mark_script()
            .key(log_meta_key(owner))
            .arg(id)
            .invoke_async(&mut connection)
            .await;
        if let Err(e) = set {
            self.lost(e);
        }
    }

    /// How many entries `owner`'s log holds.
    pub(crate) async fn log_count(&self, owner: &str) -> Result<u64, LogUnavailable> {
        let mut connection = self.connection().ok_or(LogUnavailable)?;
        let count: redis::RedisResult<u64> = redis::cmd("XLEN")
            .arg(log_key(owner))
            .query_async(&mut connection)
            .await;
        count.map_err(|e| self.log_lost(e))
    }

    /// Deletes `owner`'s log and its mark; how many entries it held.
    pub(crate) async fn log_purge(&self, owner: &str) -> Result<u64, LogUnavailable> {
        let count = self.log_count(owner).await?;
        let mut connection = self.connection().ok_or(LogUnavailable)?;
        let deleted: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(log_key(owner))
            .arg(log_meta_key(owner))
            .query_async(&mut connection)
            .await;
        deleted.map(|_| count).map_err(|e| self.log_lost(e))
    }

    /// A command on a log failed: as [`Cluster::lost`] has it.
    fn log_lost(&self, error: redis::RedisError) -> LogUnavailable {
        self.lost(error);
        LogUnavailable
    }

    /// The entries of an `XRANGE`/`XREVRANGE` answer, in its order; those
    /// that break a rule are dropped (and counted).
    fn entries(&self, owner: &str, read: Value) -> Vec<Entry> {
        let Value::Array(items) = read else {
            self.reject("a log read that is not a list");
            return Vec::new();
        };
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            match self.entry(owner, item) {
                Some(entry) => entries.push(entry),
                None => self.reject("a log entry that breaks a rule"),
            }
        }
        entries
    }

    fn entry(&self, owner: &str, item: Value) -> Option<Entry> {
        let Value::Array(mut pair) = item else {
            return None;
        };
        if pair.len() != 2 {
            return None;
        }
        let fields = pair.pop()?;
        let id = match pair.pop()? {
            Value::BulkString(id) => id,
            Value::SimpleString(id) => id.into_bytes(),
            _ => return None,
        };
        let id = entry_number(std::str::from_utf8(&id).ok()?).filter(|&id| id > 0)?;
        let Value::Array(fields) = fields else {
            return None;
        };
        let mut fields = fields.into_iter();
        let (Some(Value::BulkString(name)), Some(Value::BulkString(value)), None) =
            (fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        if name != b"e" {
            return None;
        }
        // As `appender::encode_entry_value` writes it: with the cluster
        // key, signed for this log (what a Redis writer without the key
        // puts there is dropped).
        let value = match &self.key {
            None => &value[..],
            Some(key) => {
                let (body, tag) = value.split_at_checked(value.len().checked_sub(TAG_LEN)?)?;
                if !key.verify(&signed_entry(owner, body), tag) {
                    return None;
                }
                body
            }
        };
        let (&direction, rest) = value.split_first()?;
        let (&peer_len, rest) = rest.split_first()?;
        let (peer, content) = rest.split_at_checked(usize::from(peer_len))?;
        if !valid_name(&self.local.limits, peer) || !valid_content(&self.local.limits, content) {
            return None;
        }
        Some(Entry {
            id,
            ts_ms: entry_time(id),
            direction: Direction::from_wire_byte(direction)?,
            peer: String::from_utf8(peer.to_vec()).ok()?,
            content: content.to_vec(),
        })
    }
}
