//! The directory: who is online on the other nodes, loaded from Redis and
//! kept current by the presence channel; nodes whose lease ran out are
//! forgotten.
//!
//! Presence events are at most once (a node cut off, paused or restarted
//! misses some), so the directory is also read again from Redis every
//! [`RECONCILE_EVERY`], after this node's lease lapsed and after every
//! reconnection: any drift is repaired within that bound. Events heard
//! while a reading is under way are applied again on top of it, so a
//! reading never undoes a newer event.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::listener;
use smol::future::FutureExt;
use smol::Timer;
use tracing::{info, warn};

use super::commands::Commands;
use super::keys::{devices_key, names_key, node_key, release_script, NODES_KEY};
use super::outbox::Outbox;
use super::trust::{valid_name, valid_node_id};
use super::{Cluster, MAX_NODES};

/// How often each node reads the whole directory again from Redis: the
/// bound on how long any drift from a missed presence event lasts. It costs
/// one `SMEMBERS` per live node.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// Presence events remembered while a reading is under way; past it the
/// next reading repairs what was not replayed.
const HEARD_WHILE_LOADING: usize = 65_536;

impl Cluster {
    /// Acts on an event from the presence channel.
    pub(super) fn presence_event(&self, event: &[u8]) {
        if let Some(heard) = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            if heard.len() < HEARD_WHILE_LOADING {
                heard.push(event.into());
            }
        }
        self.apply_presence(event);
    }

    /// Reads the directory from Redis and replaces the registry's picture
    /// of the other nodes with it, then applies again the presence events
    /// heard meanwhile (they may be newer than what was read).
    pub(super) async fn load_directory(&self, connection: &mut Commands) -> redis::RedisResult<()> {
        *self.loading.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
        let read = self.read_directory(connection).await;
        let heard = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        let (live, directory) = read?;
        self.replace_live(live);
        let directory: Vec<(String, String)> = directory
            .into_iter()
            .filter(|(name, node)| {
                let valid = valid_name(&self.local.limits, name.as_bytes())
                    && valid_node_id(node.as_bytes());
                if !valid {
                    self.reject("a directory entry with an invalid name");
                }
                valid
            })
            .collect();
        let nodes: Vec<(String, Arc<str>)> = directory
            .iter()
            .map(|(name, node): &(String, String)| (name.clone(), Arc::from(node.as_str())))
            .collect();
        self.device_nodes.replace(&nodes);
        let drift = self.local.registry.replace_remote(directory);
        for event in heard {
            self.apply_presence(&event);
        }
        if drift > 0 {
            warn!("cluster: directory repaired from Redis: {drift} name(s) were out of date");
        }
        Ok(())
    }
}

impl Cluster {
    /// The live nodes are `live` (read from Redis), at most
    /// [`MAX_NODES`]; the outboxes of the others are dropped.
    fn replace_live(&self, live: Vec<String>) {
        let live: HashSet<Arc<str>> = live
            .into_iter()
            .filter(|node| valid_node_id(node.as_bytes()))
            .take(MAX_NODES)
            .map(Arc::from)
            .collect();
        let gone: Vec<Arc<str>> = {
            let mut known = self.live.write().unwrap_or_else(|e| e.into_inner());
            let gone = known.difference(&live).cloned().collect();
            *known = live;
            gone
        };
        for node in gone {
            self.drop_outbox(&node);
        }
    }

    /// Forgets `node`, which has no lease any more: its names, its outbox.
    fn forget(&self, node: &str) -> usize {
        self.live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        self.latest_batch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        self.drop_outbox(node);
        self.device_nodes.forget(node);
        self.local.registry.forget_node(node)
    }

    /// Checks the lease of every node tracked (live, or holding names in
    /// the directory) and forgets those whose lease ran out (they died).
    pub(super) async fn check_nodes(&self, connection: &mut Commands) -> redis::RedisResult<()> {
        let mut nodes = self.local.registry.remote_nodes();
        for node in self.live.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if !nodes.contains(node) {
                nodes.push(Arc::clone(node));
            }
        }
        for node in nodes {
            let alive: i64 = redis::cmd("EXISTS")
                .arg(node_key(&node))
                .query_async(connection)
                .await?;
            if alive == 0 {
                let forgotten = self.forget(&node);
                if forgotten > 0 {
                    info!(
                        node = &*node,
                        "cluster: node gone; {forgotten} name(s) freed"
                    );
                }
                self.clean_up_after(&node, connection).await?;
            }
        }
        Ok(())
    }

    /// Until `due` (the next renewal of the lease), reads the batch format
    /// of each node newly sent to as soon as its outbox is made: until
    /// then its messages go one record each.
    pub(super) async fn learn_formats_until(
        &self,
        connection: &mut Commands,
        due: Instant,
    ) -> redis::RedisResult<()> {
        loop {
            listener!(self.format_wanted => wanted);
            self.learn_formats(connection).await?;
            let renewing = async {
                Timer::at(due).await;
                true
            };
            let woken = async {
                wanted.await;
                false
            };
            if renewing.or(woken).await {
                return Ok(());
            }
        }
    }

    /// Reads from its lease the batch format of each node whose outbox
    /// does not know it yet (one made since the last call). A node
    /// without a lease is gone (`check_nodes` forgets it): the first
    /// format, which every node reads, until then.
    async fn learn_formats(&self, connection: &mut Commands) -> redis::RedisResult<()> {
        let unknown: Vec<(Arc<str>, Arc<Outbox>)> = self
            .outboxes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, outbox)| outbox.format() == 0)
            .map(|(node, outbox)| (Arc::clone(node), Arc::clone(outbox)))
            .collect();
        for (node, outbox) in unknown {
            let lease: Option<String> = redis::cmd("GET")
                .arg(node_key(&node))
                .query_async(connection)
                .await?;
            outbox.set_format(lease.map_or(1, |value| self.lease_format(&node, &value)));
        }
        Ok(())
    }

    /// Acts on `+NODE NAME` or `-NODE NAME` from the presence channel.
    fn apply_presence(&self, event: &[u8]) {
        let Some(event) = self.verified_presence(event) else {
            self.reject("a presence event without a valid signature");
            return;
        };
        let Some((joined, node, name)) = parse_presence(event) else {
            self.reject("a malformed presence event");
            return;
        };
        if node == &*self.node {
            return;
        }
        if !valid_node_id(node.as_bytes()) || !valid_name(&self.local.limits, name.as_bytes()) {
            self.reject("a presence event with an invalid node id or name");
            return;
        }
        if joined {
            let Some(node) = self.note_live(node.as_bytes()) else {
                self.reject("a presence event from one node too many");
                return;
            };
            self.device_nodes.joined(name, &node);
            self.local.registry.remote_joined(name, &node);
        } else {
            self.local.registry.remote_left(name, node);
            // Still on another node (a registered name's devices): online.
            if let Some(other) = self.device_nodes.left(name, node) {
                self.local.registry.remote_joined(name, &other);
            }
        }
    }
}

/// `+NODE NAME` or `-NODE NAME`: joined, node, name.
fn parse_presence(event: &[u8]) -> Option<(bool, &str, &str)> {
    let event = std::str::from_utf8(event).ok()?;
    let (joined, rest) = match event.split_at_checked(1) {
        Some(("+", rest)) => (true, rest),
        Some(("-", rest)) => (false, rest),
        _ => return None,
    };
    let (node, name) = rest.split_once(' ')?;
    Some((joined, node, name))
}

impl Cluster {
    /// Reads the live nodes, and every name another live node holds, from
    /// the set of nodes and each node's set of names (no `SCAN`: on a Redis
    /// Cluster that would have to visit every shard). Entries that are not
    /// genuine (without the cluster key's signature, when there is one)
    /// are dropped and counted.
    async fn read_directory(
        &self,
        connection: &mut Commands,
    ) -> redis::RedisResult<(Vec<String>, Vec<(String, String)>)> {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(NODES_KEY)
            .query_async(connection)
            .await?;
        let mut directory = Vec::new();
        let mut live = Vec::new();
        for node in nodes
            .iter()
            .filter(|node| **node != *self.node)
            .take(MAX_NODES)
        {
            let alive: i64 = redis::cmd("EXISTS")
                .arg(node_key(node))
                .query_async(connection)
                .await?;
            if alive == 0 {
                continue;
            }
            live.push(node.clone());
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(names_key(node))
                .query_async(connection)
                .await?;
            for member in &members {
                match self.member_name(node, member) {
                    Some(name) => directory.push((name.to_string(), node.clone())),
                    None => self.reject("a name entry without a valid signature"),
                }
            }
        }
        Ok((live, directory))
    }

    /// Deletes the keys of `node`, which died: the names it held (only
    /// those still its own), its set of names, its place among the nodes.
    /// Every node that noticed does this; it is idempotent.
    async fn clean_up_after(
        &self,
        node: &str,
        connection: &mut Commands,
    ) -> redis::RedisResult<()> {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(names_key(node))
            .query_async(connection)
            .await?;
        for member in members {
            let key = Cluster::member_key(&member);
            let Some(name) = key.strip_prefix("pmchat:name:") else {
                continue;
            };
            let _: i64 = release_script()
                .key(key)
                .arg(self.holder_value_of(name, node))
                .invoke_async(connection)
                .await?;
            let _: i64 = redis::cmd("HDEL")
                .arg(devices_key(name))
                .arg(node)
                .query_async(connection)
                .await?;
        }
        let _: i64 = redis::cmd("DEL")
            .arg(names_key(node))
            .query_async(connection)
            .await?;
        let _: i64 = redis::cmd("SREM")
            .arg(NODES_KEY)
            .arg(node)
            .query_async(connection)
            .await?;
        Ok(())
    }
}
