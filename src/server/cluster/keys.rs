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
    fn node_ids_differ() {
        assert_ne!(new_node_id(), new_node_id());
        assert_eq!(new_node_id().len(), 16);
    }
}
