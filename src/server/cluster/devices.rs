//! Registered names with sessions on several nodes (`--cluster` with
//! `--accounts`, where every session of a registered name is fed from its
//! log): a name's devices are counted per node in one hash in Redis
//! (`keys::devices_key`), so that `--max-devices` holds across nodes; a
//! node announces the name (`+NODE NAME`) with its first device there
//! and withdraws it with its last. Each node keeps, from those
//! announcements, which other nodes have devices of each name: where the
//! hints that a log grew go (see `watch`), and who still has the name
//! when one node's last device leaves.

use std::collections::HashMap;
use std::sync::Arc;

use super::commands::Commands;
use super::keys::{devices_key, names_key, node_key};
use super::{ClaimError, Cluster};

/// Forgets the nodes `ARGV[3..]` (dead), then adds a device of node
/// `ARGV[1]` to the devices of `KEYS[1]` unless they number `ARGV[2]`
/// already. 1 if added.
fn claim_script() -> redis::Script {
    redis::Script::new(
        "for i = 3, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
         local total = 0
         for _, count in ipairs(redis.call('HVALS', KEYS[1])) do
           total = total + (tonumber(count) or 0)
         end
         if total >= tonumber(ARGV[2]) then return 0 end
         redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
         return 1",
    )
}

/// Takes one device of node `ARGV[1]` from the devices of `KEYS[1]`;
/// how many it has left there.
fn release_script() -> redis::Script {
    redis::Script::new(
        "local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
         if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
         return left",
    )
}

/// Which other nodes have devices of which names.
#[derive(Default)]
pub(super) struct DeviceNodes {
    names: std::sync::Mutex<HashMap<Box<str>, Vec<Arc<str>>>>,
}

impl DeviceNodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Arc<str>>>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name` is on `node`.
    pub(super) fn joined(&self, name: &str, node: &Arc<str>) {
        let mut names = self.lock();
        let nodes = names.entry(name.into()).or_default();
        if !nodes.iter().any(|n| n == node) {
            nodes.push(Arc::clone(node));
        }
    }

    /// `name` left `node`; another node that still has it, if any.
    pub(super) fn left(&self, name: &str, node: &str) -> Option<Arc<str>> {
        let mut names = self.lock();
        let nodes = names.get_mut(name)?;
        nodes.retain(|n| **n != *node);
        let other = nodes.first().cloned();
        if nodes.is_empty() {
            names.remove(name);
        }
        other
    }

    /// Forgets `node` (it died).
    pub(super) fn forget(&self, node: &str) {
        self.lock().retain(|_, nodes| {
            nodes.retain(|n| **n != *node);
            !nodes.is_empty()
        });
    }

    /// Replaces the picture with `directory` (name, node), read from Redis.
    pub(super) fn replace(&self, directory: &[(String, Arc<str>)]) {
        let mut names = self.lock();
        names.clear();
        for (name, node) in directory {
            let nodes = names.entry(name.as_str().into()).or_default();
            if !nodes.iter().any(|n| n == node) {
                nodes.push(Arc::clone(node));
            }
        }
    }

    /// The other nodes with sessions of `name`.
    pub(super) fn of(&self, name: &str) -> Vec<Arc<str>> {
        self.lock().get(name).cloned().unwrap_or_default()
    }
}

impl Cluster {
    /// Claims a device of the registered `name` on this node, up to `max`
    /// across every node; tells the others if it is the name's first here.
    pub(crate) async fn claim_device(&self, name: &str, max: usize) -> Result<(), ClaimError> {
        let mut connection = self.connection_unless_banned(name).await?;
        let added = self
            .add_device(&mut connection, name, max)
            .await
            .map_err(|e| self.lost(e))?;
        if !added {
            return Err(ClaimError::TooMany);
        }
        let first_here = {
            let mut here = self.devices_here.lock().unwrap_or_else(|e| e.into_inner());
            let count = here.entry(name.into()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first_here {
            let _: redis::RedisResult<i64> = redis::cmd("SADD")
                .arg(names_key(&self.node))
                .arg(self.member(name))
                .query_async(&mut connection)
                .await;
            self.announce(&mut connection, '+', name).await;
        }
        Ok(())
    }

    /// Adds a device of `name` on this node unless `max` are counted,
    /// forgetting first the nodes counted whose lease ran out.
    async fn add_device(
        &self,
        connection: &mut Commands,
        name: &str,
        max: usize,
    ) -> redis::RedisResult<bool> {
        let key = devices_key(name);
        let counted: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(connection)
            .await?;
        let mut dead = Vec::new();
        for node in counted.keys().filter(|node| **node != *self.node) {
            let alive: i64 = redis::cmd("EXISTS")
                .arg(node_key(node))
                .query_async(connection)
                .await?;
            if alive == 0 {
                dead.push(node.clone());
            }
        }
        let added: i64 = claim_script()
            .key(&key)
            .arg(&*self.node)
            .arg(max)
            .arg(dead)
            .invoke_async(connection)
            .await?;
        Ok(added == 1)
    }

    /// Gives one device of `name` on this node up; with its last one here,
    /// this node withdraws the name.
    pub(crate) async fn release_device(&self, name: &str) {
        let last_here = {
            let mut here = self.devices_here.lock().unwrap_or_else(|e| e.into_inner());
            match here.get_mut(name) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    here.remove(name);
                    true
                }
                None => return,
            }
        };
        let Some(mut connection) = self.connection() else {
            // Counted until this node's lease runs out, or set right when
            // Redis is back.
            return;
        };
        let released: redis::RedisResult<i64> = release_script()
            .key(devices_key(name))
            .arg(&*self.node)
            .invoke_async(&mut connection)
            .await;
        if let Err(e) = released {
            self.lost(e);
            return;
        }
        if last_here {
            let _: redis::RedisResult<i64> = redis::cmd("SREM")
                .arg(names_key(&self.node))
                .arg(self.member(name))
                .query_async(&mut connection)
                .await;
            self.announce(&mut connection, '-', name).await;
        }
    }

    /// The names with devices on this node, and how many each.
    pub(super) fn devices_here(&self) -> Vec<(String, usize)> {
        let here = self.devices_here.lock().unwrap_or_else(|e| e.into_inner());
        here.iter()
            .map(|(name, count)| (name.to_string(), *count))
            .collect()
    }

    /// After an outage: counts this node's `count` devices of `name` again
    /// and lists the name among this node's (Redis may have restarted
    /// empty).
    pub(super) async fn recount_devices(
        &self,
        connection: &mut Commands,
        name: &str,
        count: usize,
    ) -> redis::RedisResult<()> {
        let _: i64 = redis::cmd("HSET")
            .arg(devices_key(name))
            .arg(&*self.node)
            .arg(count)
            .query_async(connection)
            .await?;
        let _: i64 = redis::cmd("SADD")
            .arg(names_key(&self.node))
            .arg(self.member(name))
            .query_async(connection)
            .await?;
        Ok(())
    }

    /// The other nodes with sessions of `name` (for the hints that its log
    /// grew).
    pub(crate) fn device_nodes(&self, name: &str) -> Vec<Arc<str>> {
        self.device_nodes.of(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_stays_elsewhere_until_its_last_node_leaves() {
        let nodes = DeviceNodes::default();
        let (b, c): (Arc<str>, Arc<str>) = ("node-b".into(), "node-c".into());
        nodes.joined("alice", &b);
        nodes.joined("alice", &c);
        nodes.joined("alice", &c);
        assert_eq!(nodes.of("alice").len(), 2);
        assert_eq!(nodes.left("alice", "node-c").as_deref(), Some("node-b"));
        assert_eq!(nodes.left("alice", "node-b"), None);
        assert!(nodes.of("alice").is_empty());
        nodes.joined("bob", &b);
        nodes.forget("node-b");
        assert!(nodes.of("bob").is_empty());
        nodes.replace(&[("carol".into(), Arc::clone(&c))]);
        assert_eq!(nodes.of("carol").len(), 1);
    }
}
