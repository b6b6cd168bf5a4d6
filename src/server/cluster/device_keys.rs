//! The key directory of the `keys` extension across nodes: every node
//! publishes and claims in one hash per registered name in Redis
//! (`keys::device_keys_key`, one slot per name), each publish and each
//! claim one script, so that a one-time key is handed out once however
//! many nodes claim at the same moment. Fields, per device:
//! `i:DEVICE` its identity record, `f:DEVICE` its fallback key,
//! `t:DEVICE` when it last published (ms), `o:DEVICE` its one-time keys
//! (each a 16-bit length and the key), `n:DEVICE` how many.
//!
//! The records are opaque here as on a single node: clients sign and
//! check them, so a Redis writer can withhold keys but not forge one.

use crate::store::keys::{Claimed, PublishError, MAX_DEVICES, MAX_ONE_TIME};
use crate::wire::v1::keys::{self, Record};

use super::keys::device_keys_key;
use super::Cluster;

/// KEYS[1] the name's hash; ARGV: device, identity (or empty), fallback
/// (or empty), now (ms), the most devices, the most one-time keys, then
/// the one-time keys. The count of one-time keys kept, or -1 when the
/// device has no identity.
fn publish_script() -> redis::Script {
    redis::Script::new(
        "local h, d = KEYS[1], ARGV[1]
         local new = redis.call('HEXISTS', h, 't:' .. d) == 0
         if ARGV[2] ~= '' then redis.call('HSET', h, 'i:' .. d, ARGV[2]) end
         if redis.call('HEXISTS', h, 'i:' .. d) == 0 then return -1 end
         if ARGV[3] ~= '' then redis.call('HSET', h, 'f:' .. d, ARGV[3]) end
         if new then
           local times = {}
           local fields = redis.call('HGETALL', h)
           for i = 1, #fields, 2 do
             if string.sub(fields[i], 1, 2) == 't:' then
               table.insert(times, {tonumber(fields[i + 1]), string.sub(fields[i], 3)})
             end
           end
           table.sort(times, function(a, b) return a[1] < b[1] end)
           local over = #times + 1 - tonumber(ARGV[5])
           for i = 1, over do
             local old = times[i][2]
             redis.call('HDEL', h, 'i:' .. old, 'f:' .. old, 't:' .. old, 'o:' .. old, 'n:' .. old)
           end
         end
         redis.call('HSET', h, 't:' .. d, ARGV[4])
         local n = tonumber(redis.call('HGET', h, 'n:' .. d) or '0')
         local blob = redis.call('HGET', h, 'o:' .. d) or ''
         for i = 7, #ARGV do
           if n < tonumber(ARGV[6]) then
             blob = blob .. struct.pack('>H', #ARGV[i]) .. ARGV[i]
             n = n + 1
           end
         end
         redis.call('HSET', h, 'o:' .. d, blob, 'n:' .. d, n)
         return n",
    )
}

/// KEYS[1] the name's hash; ARGV the devices the claimer knows. For each
/// device, its id, identity, the kind of key handed out (`o`, `f` or
/// empty: none to a known device) and the key; the one-time key handed
/// out is gone.
fn claim_script() -> redis::Script {
    redis::Script::new(
        "local h = KEYS[1]
         local known = {}
         for i = 1, #ARGV do known[ARGV[i]] = true end
         local out = {}
         local fields = redis.call('HGETALL', h)
         for i = 1, #fields, 2 do
           if string.sub(fields[i], 1, 2) == 'i:' then
             local d = string.sub(fields[i], 3)
             local blob = redis.call('HGET', h, 'o:' .. d) or ''
             local kind, key = '', ''
             if known[d] then
               -- a session exists: its identity alone
             elseif #blob >= 2 then
               local len = struct.unpack('>H', blob)
               key = string.sub(blob, 3, 2 + len)
               kind = 'o'
               redis.call('HSET', h, 'o:' .. d, string.sub(blob, 3 + len),
                          'n:' .. d, tonumber(redis.call('HGET', h, 'n:' .. d) or '1') - 1)
             else
               local fallback = redis.call('HGET', h, 'f:' .. d)
               if fallback then kind, key = 'f', fallback end
             end
             table.insert(out, d)
             table.insert(out, fields[i + 1])
             table.insert(out, kind)
             table.insert(out, key)
           end
         end
         return out",
    )
}

impl Cluster {
    /// `name`'s `device` publishes `records` (checked); how many one-time
    /// keys Redis now keeps for it.
    pub(crate) async fn publish_device_keys(
        &self,
        name: &str,
        device: &[u8],
        records: &[Record<'_>],
    ) -> Result<u64, PublishError> {
        let mut connection = self.connection().ok_or(PublishError::Unavailable)?;
        let field = |kind: u8| {
            records
                .iter()
                .find(|r| r.kind == kind)
                .map_or(&[][..], |r| r.bytes)
        };
        let script = publish_script();
        let mut invocation = script.key(device_keys_key(name));
        invocation
            .arg(device)
            .arg(field(keys::IDENTITY))
            .arg(field(keys::FALLBACK))
            .arg(crate::store::now_ms())
            .arg(MAX_DEVICES)
            .arg(MAX_ONE_TIME);
        for record in records.iter().filter(|r| r.kind == keys::ONE_TIME) {
            invocation.arg(record.bytes);
        }
        let kept: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| {
                self.lost(e);
                PublishError::Unavailable
            })?;
        u64::try_from(kept).map_err(|_| PublishError::NoIdentity)
    }

    /// One key per device of `name` but those in `known`; `None` when
    /// Redis cannot be asked.
    pub(crate) async fn claim_device_keys(
        &self,
        name: &str,
        known: &[Vec<u8>],
    ) -> Option<Vec<Claimed>> {
        let mut connection = self.connection()?;
        let script = claim_script();
        let mut invocation = script.key(device_keys_key(name));
        for device in known {
            invocation.arg(device.as_slice());
        }
        let flat: Vec<Vec<u8>> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.lost(e))
            .ok()?;
        // What Redis holds is checked like anything read from it: within
        // the limits a publish could have written, or dropped.
        Some(
            flat.chunks_exact(4)
                .filter(|device| {
                    !device[0].is_empty()
                        && device[0].len() <= keys::MAX_DEVICE_ID
                        && !device[1].is_empty()
                        && device[1].len() <= keys::MAX_IDENTITY
                        && device[3].len() <= keys::MAX_KEY
                })
                .map(|device| Claimed {
                    device: device[0].clone(),
                    identity: device[1].clone(),
                    key: match device[2].as_slice() {
                        b"o" if !device[3].is_empty() => Some((keys::ONE_TIME, device[3].clone())),
                        b"f" if !device[3].is_empty() => Some((keys::FALLBACK, device[3].clone())),
                        _ => None,
                    },
                })
                .collect(),
        )
    }
}
