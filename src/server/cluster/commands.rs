//! The Redis connection a node uses for commands and subscriptions, on one
//! Redis or on a Redis Cluster.

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::Value;

use crate::server::redis_io::NodeConnection;

pub(super) use crate::server::redis_io::REDIS_TIMEOUT;

/// Where the cluster's Redis is.
pub(super) enum Backend {
    /// One Redis server (`redis://HOST:PORT`).
    Single(redis::ConnectionInfo),
    /// A Redis Cluster (`redis+cluster://HOST:PORT,HOST:PORT,…`): the
    /// nodes to start from.
    Sharded(Vec<String>),
}

/// A connection for commands, carrying this node's subscriptions too
/// (RESP3 pushes). Channels are sharded on a Redis Cluster (`SPUBLISH`,
/// `SSUBSCRIBE`), so that a batch travels to the one shard that holds its
/// channel, not to every node of the cluster.
#[derive(Clone)]
pub(super) enum Commands {
    Single(NodeConnection),
    Sharded(ClusterConnection<NodeConnection>),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Sharded(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Sharded(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Sharded(c) => c.get_db(),
        }
    }
}

impl Commands {
    /// The publish command for this Redis's channels.
    pub(super) fn publish(&self, channel: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(match self {
            Commands::Single(_) => "PUBLISH",
            Commands::Sharded(_) => "SPUBLISH",
        });
        cmd.arg(channel);
        cmd
    }

    /// Subscribes this connection to `channel`; messages come as pushes.
    pub(super) async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Commands::Single(c) => c.subscribe(channel).await,
            Commands::Sharded(c) => c.ssubscribe(channel).await,
        }
    }

    /// Ends a subscription of [`Commands::subscribe`].
    pub(super) async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Commands::Single(c) => c.unsubscribe(channel).await,
            Commands::Sharded(c) => c.sunsubscribe(channel).await,
        }
    }
}
