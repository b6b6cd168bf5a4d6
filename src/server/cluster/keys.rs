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

/// A registered user's conversation log, a stream whose entries are
/// numbered `N-0` by a counter of the user's own (see [`append_script`]).
/// The hash tag keeps a user's keys in one slot of a Redis Cluster.
pub(crate) fn log_key(name: &str) -> String {
    format!("pmchat:log:{{{name}}}")
}

/// The log's counter (`n`), the time of its newest entry (`t`) and its
/// owner's mark (`m`): how far the owner's devices had been sent.
pub(crate) fn log_meta_key(name: &str) -> String {
    format!("pmchat:logmeta:{{{name}}}")
}

/// Appends entries to the log `KEYS[1]` (meta `KEYS[2]`): `ARGV[1]` the
/// most entries kept, `ARGV[2]` the oldest time kept (ms; 0: any), then
/// three arguments per entry (direction byte, peer, content). The entries
/// get the next numbers of the log's counter, contiguous, and the time of
/// Redis's clock (never before the newest entry's). Returns the first
/// number and the time.
///
/// A counter lost while its log was kept resumes after the log's newest
/// entry. A time cut is looked for only when the counter passes a multiple
/// of 64, and trims from the front.
pub(super) fn append_script() -> redis::Script {
    redis::Script::new(APPEND)
}

const APPEND: &str = "
local count = (#ARGV - 2) / 3
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local newest = tonumber(redis.call('HGET', KEYS[2], 't') or '0')
if now < newest then now = newest end
local last = redis.call('HINCRBY', KEYS[2], 'n', count)
if last == count then
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if top then
    local kept = tonumber(string.match(top[1], '^(%d+)'))
    last = redis.call('HINCRBY', KEYS[2], 'n', kept)
  end
end
local first = last - count + 1
for i = 0, count - 1 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], string.format('%d-0', first + i),
    't', now, 'd', ARGV[3 + 3 * i], 'p', ARGV[4 + 3 * i], 'c', ARGV[5 + 3 * i])
end
redis.call('HSET', KEYS[2], 't', now)
local cut = tonumber(ARGV[2])
if cut > 0 and math.floor(last / 64) ~= math.floor((first - 1) / 64) then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 64)
  local keep = nil
  for _, e in ipairs(oldest) do
    local ts = 0
    for j = 1, #e[2], 2 do if e[2][j] == 't' then ts = tonumber(e[2][j + 1]) end end
    if ts >= cut then keep = e[1] break end
  end
  if keep then redis.call('XTRIM', KEYS[1], 'MINID', keep)
  elseif #oldest > 0 then redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', tonumber(string.match(oldest[#oldest][1], '^(%d+)')) + 1)) end
end
return {first, now}
";

/// The number of the newest entry of the log `KEYS[1]` logged before
/// `ARGV[1]` (ms), found by halving (the numbers between the oldest and
/// the newest entry are all there, in time order); one less than the
/// oldest if none is, 0 for an empty log.
pub(super) fn last_before_script() -> redis::Script {
    redis::Script::new(
        "local function num(e) return tonumber(string.match(e[1], '^(%d+)')) end
         local function ts(e)
           for j = 1, #e[2], 2 do if e[2][j] == 't' then return tonumber(e[2][j + 1]) end end
           return 0
         end
         local ms = tonumber(ARGV[1])
         local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
         if not first then return 0 end
         if ts(first) >= ms then return num(first) - 1 end
         local lo = num(first)
         local hi = num(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1])
         while lo < hi do
           local mid = math.floor((lo + hi + 1) / 2)
           local e = redis.call('XRANGE', KEYS[1], mid, mid)[1]
           if e and ts(e) < ms then lo = mid else hi = mid - 1 end
         end
         return lo",
    )
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
    fn node_ids_differ() {
        assert_ne!(new_node_id(), new_node_id());
        assert_eq!(new_node_id().len(), 16);
    }
}
