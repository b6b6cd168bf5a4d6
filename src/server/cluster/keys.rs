//! The key schema in Redis, the scripts that act on it atomically, and
//! node ids.

/// The channel every node announces its users' arrivals and departures on.
pub(super) const PRESENCE_CHANNEL: &str = "pmchat:presence";

pub(super) fn name_key(name: &str) -> String {
    format!("pmchat:name:{name}")
}

/// A ban on a name, set by any node's operator, with the ban's duration as
/// its time to live.
pub(super) fn ban_key(name: &str) -> String {
    format!("pmchat:ban:{name}")
}

/// What a node's lease holds: the batch format it reads (see `batch`), so
/// that nodes of two versions can share a cluster while it is upgraded.
/// 1: a record per message (every pmchat before series, whose leases held
/// 1); 2: series too.
pub(super) const BATCH_FORMAT: u32 = 2;

/// The first format with series.
pub(super) const SERIES_FORMAT: u32 = 2;

/// The format a lease's value says its node reads: the first one for a
/// value that is not a number.
pub(super) fn format_of(lease: &str) -> u32 {
    lease.parse::<u32>().unwrap_or(1).max(1)
}

pub(super) fn node_key(node: &str) -> String {
    format!("pmchat:node:{node}")
}

/// The set of live nodes' ids.
pub(super) const NODES_KEY: &str = "pmchat:nodes";

/// The set of name keys a node holds: the directory, and what to clean up
/// after it dies.
pub(super) fn names_key(node: &str) -> String {
    format!("pmchat:names:{node}")
}

pub(super) fn inbox(node: &str) -> String {
    format!("pmchat:inbox:{node}")
}

/// A registered user's conversation log, a stream whose entries Redis
/// numbers (`XADD … *`: its clock's milliseconds, then a sequence). The
/// hash tag keeps a user's keys in one slot of a Redis Cluster.
pub(crate) fn log_key(name: &str) -> String {
    format!("pmchat:log:{{{name}}}")
}

/// The channel that says a registered name's log grew: published in the
/// pipeline that appends to the log (the hash tag puts it in the log's
/// slot, which a Redis Cluster pipeline needs), subscribed to by every
/// node with a device of the name.
pub(crate) fn hint_channel(name: &str) -> String {
    format!("{HINT_PREFIX}{{{name}}}")
}

/// What every hint channel's name starts with.
pub(super) const HINT_PREFIX: &str = "pmchat:hint:";

/// The name a hint channel stands for.
pub(super) fn hinted_name(channel: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(channel)
        .ok()?
        .strip_prefix(HINT_PREFIX)?;
    name.strip_prefix('{')?.strip_suffix('}')
}

/// The owner's mark (`m`): how far the owner's devices had been sent.
pub(crate) fn log_meta_key(name: &str) -> String {
    format!("pmchat:logmeta:{{{name}}}")
}

/// A registered name's devices' public keys (see `device_keys`).
pub(super) fn device_keys_key(name: &str) -> String {
    format!("pmchat:keys:{{{name}}}")
}

/// How many sessions of a registered name each node has (see `devices`).
pub(super) fn devices_key(name: &str) -> String {
    format!("pmchat:devices:{{{name}}}")
}

/// Bits of an entry's number that hold the sequence of its stream id; the
/// milliseconds take the 44 above them (until the year 2527).
const SEQUENCE_BITS: u32 = 20;

/// The number a client sees (ENTRY, cursors) for the stream id `ms-seq`;
/// `None` for one out of range (only a Redis writer could make one: an
/// entry takes a millisecond's millionth only if Redis appended a million
/// to one log within it).
pub(crate) fn entry_number(stream_id: &str) -> Option<u64> {
    let (ms, seq) = stream_id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    if ms >= 1 << (64 - SEQUENCE_BITS) || seq >= 1 << SEQUENCE_BITS {
        return None;
    }
    Some(ms << SEQUENCE_BITS | seq)
}

/// The stream id of an entry's number.
pub(crate) fn stream_id(number: u64) -> String {
    format!(
        "{}-{}",
        number >> SEQUENCE_BITS,
        number & ((1 << SEQUENCE_BITS) - 1)
    )
}

/// The time (ms) an entry's number says it was appended.
pub(crate) fn entry_time(number: u64) -> u64 {
    number >> SEQUENCE_BITS
}

/// The number just before any entry appended at `ms` or later: a cursor
/// that replays from `ms` on.
pub(crate) fn before_time(ms: u64) -> u64 {
    (ms.min((1 << (64 - SEQUENCE_BITS)) - 1) << SEQUENCE_BITS).saturating_sub(1)
}

/// Moves the mark in `KEYS[1]` (a log's meta) on to `ARGV[1]`, never back.
pub(super) fn mark_script() -> redis::Script {
    redis::Script::new(
        "if tonumber(redis.call('HGET', KEYS[1], 'm') or '0') < tonumber(ARGV[1]) then
           redis.call('HSET', KEYS[1], 'm', ARGV[1])
         end
         return 1",
    )
}

/// A random node id: 16 hex digits.
pub(super) fn new_node_id() -> String {
    let mut bytes = [0u8; 8];
    // A failure leaves zeros; the pid and the time still tell nodes apart.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64);
    let id = u64::from_be_bytes(bytes) ^ stamp ^ u64::from(std::process::id());
    format!("{id:016x}")
}

/// Sets the name `KEYS[1]` to the node `ARGV[2]` if its holder is still
/// `ARGV[1]` (empty: nobody). 1 if set.
pub(super) fn swap_script() -> redis::Script {
    redis::Script::new(
        "local holder = redis.call('GET', KEYS[1]) or ''
         if holder ~= ARGV[1] then return 0 end
         redis.call('SET', KEYS[1], ARGV[2])
         return 1",
    )
}

/// Deletes the name `KEYS[1]` only if the node `ARGV[1]` holds it. 1 if
/// deleted.
pub(super) fn release_script() -> redis::Script {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           return redis.call('DEL', KEYS[1])
         end
         return 0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_numbers_keep_the_stream_order_and_go_back_to_their_ids() {
        let a = entry_number("1733550000000-0").unwrap();
        let b = entry_number("1733550000000-7").unwrap();
        let c = entry_number("1733550000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(stream_id(b), "1733550000000-7");
        assert_eq!(entry_time(c), 1733550000001);
        assert!(before_time(1733550000001) < c && before_time(1733550000001) >= b);
        assert_eq!(entry_number("1-2-3"), None);
        assert_eq!(entry_number("17335500000000000000-0"), None);
        assert_eq!(entry_number("1-1048576"), None);
        assert_eq!(entry_number("x-0"), None);
        assert_eq!(before_time(0), 0);
    }

    #[test]
    fn a_hint_channel_names_its_log_and_shares_its_slot() {
        assert_eq!(hint_channel("bob"), "pmchat:hint:{bob}");
        assert_eq!(hinted_name(b"pmchat:hint:{bob}"), Some("bob"));
        assert_eq!(hinted_name(b"pmchat:inbox:0123"), None);
        assert_eq!(hinted_name(b"pmchat:hint:bob"), None);
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(new_node_id(), new_node_id());
        assert_eq!(new_node_id().len(), 16);
    }
}
