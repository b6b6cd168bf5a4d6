//! Leases and claims: this node's lease, which keeps its names; claiming,
//! releasing and announcing a name; claiming them all again after an
//! outage.

use tracing::warn;

use super::commands::Commands;
use super::keys::{
    ban_key, name_key, names_key, node_key, release_script, NODES_KEY, PRESENCE_CHANNEL,
};
use super::{ClaimError, Cluster};
use crate::wire::texts::{Code, ErrorText};

impl Cluster {
    /// Claims `name` for this node, atomically across all of them, and
    /// tells the others. `name` must not be held by a local session (the
    /// caller checks): the claim succeeds when no live node holds it.
    pub(crate) async fn claim(&self, name: &str) -> Result<(), ClaimError> {
        let mut connection = self.connection_unless_banned(name).await?;
        let claimed = self
            .claim_on(&mut connection, name)
            .await
            .map_err(|e| self.lost(e))?;
        if !claimed {
            return Err(ClaimError::Taken);
        }
        self.announce(&mut connection, '+', name).await;
        Ok(())
    }

    /// The command connection (waiting a moment for one), if `name` is not
    /// banned: the first step of every claim.
    pub(super) async fn connection_unless_banned(
        &self,
        name: &str,
    ) -> Result<Commands, ClaimError> {
        let mut connection = self
            .connection_soon()
            .await
            .ok_or(ClaimError::Unavailable)?;
        let ban: Option<String> = redis::cmd("GET")
            .arg(ban_key(name))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.lost(e))?;
        if ban.is_some_and(|value| self.genuine_ban(name, &value)) {
            return Err(ClaimError::Banned);
        }
        Ok(connection)
    }

    /// Claims `name` unless a live node other than this one holds it: the
    /// holder is read, its lease checked, and the name swapped only if the
    /// holder is still the one read (so of two nodes racing, one wins).
    /// Each command touches one key, as a Redis Cluster requires.
    pub(super) async fn claim_on(
        &self,
        connection: &mut Commands,
        name: &str,
    ) -> redis::RedisResult<bool> {
        let key = name_key(name);
        let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(connection).await?;
        // A value that is not a genuine holder's (forged without the
        // cluster key) holds nothing.
        let holder_node = holder
            .as_deref()
            .and_then(|value| self.holder_node(name, value));
        if let Some(node) = holder_node.filter(|node| *node != &*self.node) {
            let alive: i64 = redis::cmd("EXISTS")
                .arg(node_key(node))
                .query_async(connection)
                .await?;
            if alive == 1 {
                return Ok(false);
            }
        }
        let swapped: i64 = self
            .swap_script
            .key(&key)
            .arg(holder.unwrap_or_default())
            .arg(self.holder_value(name))
            .invoke_async(connection)
            .await?;
        if swapped == 1 {
            let _: i64 = redis::cmd("SADD")
                .arg(names_key(&self.node))
                .arg(self.member(name))
                .query_async(connection)
                .await?;
        }
        Ok(swapped == 1)
    }

    /// Gives `name` up, if this node still holds it, and tells the others.
    pub(crate) async fn release(&self, name: &str) {
        let Some(mut connection) = self.connection() else {
            // Freed when this node's lease runs out, or claimed again when
            // Redis is back.
            return;
        };
        let released: Result<i64, _> = release_script()
            .key(name_key(name))
            .arg(self.holder_value(name))
            .invoke_async(&mut connection)
            .await;
        let _: redis::RedisResult<i64> = redis::cmd("SREM")
            .arg(names_key(&self.node))
            .arg(self.member(name))
            .query_async(&mut connection)
            .await;
        match released {
            Ok(1) => self.announce(&mut connection, '-', name).await,
            Ok(_) => {}
            Err(e) => {
                self.lost(e);
            }
        }
    }

    pub(super) async fn announce(&self, connection: &mut Commands, sign: char, name: &str) {
        let event = self.presence_text(sign == '+', name);
        let published: Result<i64, _> = connection
            .publish(PRESENCE_CHANNEL)
            .arg(event)
            .query_async(connection)
            .await;
        if let Err(e) = published {
            self.lost(e);
        }
    }

    /// Renews this node's lease, which keeps every name it holds: one
    /// command a second, however many users the node has. False if the
    /// lease had run out (this node was stopped, or cut off, for longer
    /// than its lease): its names may have been claimed elsewhere since.
    pub(super) async fn renew(&self, connection: &mut Commands) -> redis::RedisResult<bool> {
        let before: Option<String> = redis::cmd("SET")
            .arg(node_key(&self.node))
            .arg(self.lease_value())
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .arg("GET")
            .query_async(connection)
            .await?;
        Ok(before.is_some())
    }

    /// Lists this node among the live ones and claims again every name its
    /// sessions hold, after connecting
    /// (Redis may have restarted empty, or this node's lease may have run
    /// out while it could not reach Redis), and tells the other nodes about
    /// them again (they may have lost track); closes the sessions whose
    /// names another node took meanwhile.
    pub(super) async fn reclaim(&self, connection: &mut Commands) -> redis::RedisResult<()> {
        // Listed among the live nodes first, so that others load its names.
        let _: i64 = redis::cmd("SADD")
            .arg(NODES_KEY)
            .arg(&*self.node)
            .query_async(connection)
            .await?;
        let devices = self.devices_here();
        for (name, count) in &devices {
            self.recount_devices(connection, name, *count).await?;
            let event = self.presence_text(true, name);
            let _: i64 = connection
                .publish(PRESENCE_CHANNEL)
                .arg(event)
                .query_async(connection)
                .await?;
        }
        for name in self.local.registry.local_names() {
            if devices.iter().any(|(device, _)| *device == name) {
                continue;
            }
            let claimed = self.claim_on(connection, &name).await?;
            if claimed {
                let event = self.presence_text(true, &name);
                let _: i64 = connection
                    .publish(PRESENCE_CHANNEL)
                    .arg(event)
                    .query_async(connection)
                    .await?;
            } else if let Some(session) = self.local.registry.get(name.as_bytes()) {
                warn!(
                    user = name.as_str(),
                    "cluster: name taken by another node meanwhile"
                );
                self.local.registry.remove(&session);
                session.close_with_error(&ErrorText::new(Code::NameLost, &name));
            }
            if !claimed {
                // No longer this node's: out of its set, so that no node
                // reading the directory finds the name on two nodes.
                let _: i64 = redis::cmd("SREM")
                    .arg(names_key(&self.node))
                    .arg(self.member(&name))
                    .query_async(connection)
                    .await?;
            }
        }
        Ok(())
    }
}
