//! The connection loop: connect to Redis, subscribe, join, then serve the
//! inbox, the presence channel, the publisher and the leases until Redis
//! fails; reconnect with back-off.

use std::sync::Arc;
use std::time::Instant;

use redis::{PushInfo, PushKind, Value};
use smol::future::FutureExt;
use smol::Timer;
use tracing::{debug, info, warn};

use super::appender::APPEND_CONNECTIONS;
use super::commands::{Backend, Commands, REDIS_TIMEOUT};
use super::directory::RECONCILE_EVERY;
use super::inbound::Inbound;
use super::keys::{hint_channel, hinted_name, inbox, PRESENCE_CHANNEL};
use super::publish::PublishOn;
use super::publish_link::PublishLink;
use super::subscription::Subscription;
use super::Cluster;
use crate::server::redis_io::NodeConnection;

impl Cluster {
    /// Keeps this node in the cluster until the server stops: connects,
    /// loads the directory, then serves the inbox, the presence channel,
    /// the publisher and the leases; reconnects with back-off whenever
    /// Redis fails.
    pub(crate) async fn run(self: &Arc<Self>) {
        let mut backoff = crate::backoff::Backoff::default();
        loop {
            match self.serve(&mut backoff).await {
                Ok(()) => {}
                Err(e) if backoff.attempt == 0 => {
                    let why = if refused_credentials(&e) {
                        "Redis refused this node's password (the one in --cluster's URL)"
                    } else {
                        "Redis unreachable"
                    };
                    warn!("cluster: {why}: {e}; local users go on, logins wait");
                }
                Err(e) => debug!("cluster: still unreachable: {e}"),
            }
            self.set_connection(None);
            // What waited for this connection will not go out on it.
            self.fail_outboxes();
            self.fail_appends();
            let delay = backoff.next_delay();
            debug!("cluster: reconnecting in {delay:?}");
            Timer::after(delay).await;
        }
    }

    /// Connections for the appender alone (see `appender`): with
    /// `appendfsync always` Redis syncs once per turn of its loop, in
    /// which it reads a bounded amount from each connection; entries
    /// spread over several connections share a sync.
    async fn append_connections(&self) -> redis::RedisResult<Vec<Commands>> {
        let mut connections = Vec::with_capacity(APPEND_CONNECTIONS);
        for _ in 0..APPEND_CONNECTIONS {
            connections.push(match &self.backend {
                Backend::Single(info) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_response_timeout(Some(REDIS_TIMEOUT));
                    Commands::Single(NodeConnection::open(info, config).await?)
                }
                Backend::Sharded(nodes) => {
                    let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                        .use_protocol(redis::ProtocolVersion::RESP3)
                        .connection_timeout(REDIS_TIMEOUT)
                        .response_timeout(REDIS_TIMEOUT)
                        // An XADD is not idempotent: sent again after its
                        // answer was lost (a master failing), it would be
                        // appended twice. Refused instead; the next
                        // pipeline finds the new master.
                        .retries(0)
                        .build()?;
                    // As in `connect`.
                    Commands::Sharded(client.get_async_generic_connection().await?)
                }
            });
        }
        Ok(connections)
    }

    /// A connection to this cluster's Redis whose pushes (subscribed
    /// messages, disconnections) go to `pushed`. Bounded: a Redis that stops
    /// answering must not hold a login (or the lease) forever; it counts as
    /// unreachable instead.
    pub(super) async fn connect(&self, pushed: Inbound) -> redis::RedisResult<Commands> {
        let push = move |info: PushInfo| pushed.push(info);
        match &self.backend {
            Backend::Single(info) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_push_sender(push);
                Ok(Commands::Single(NodeConnection::open(info, config).await?))
            }
            Backend::Sharded(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(push)
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .build()?;
                // Each shard's connection is a `NodeConnection`, read as
                // the single Redis's is, on our own socket. This
                // constructor is public but `#[doc(hidden)]`: Cargo.toml
                // pins redis to exactly 1.8.1 for it, so that `cargo
                // update` cannot move it under us. (It spares each read the
                // zeroing of a fresh buffer that the smol adapter's
                // `AsyncRead` does; until the adapter keeps its buffer, the
                // pin stays.)
                let connection = client.get_async_generic_connection().await?;
                Ok(Commands::Sharded(connection))
            }
        }
    }

    /// One connection's worth of [`Cluster::run`]; returns when Redis
    /// fails.
    async fn serve(
        self: &Arc<Self>,
        backoff: &mut crate::backoff::Backoff,
    ) -> redis::RedisResult<()> {
        let (pushed, pushes) = Inbound::new();
        let mut connection = self.connect(pushed).await?;
        if backoff.attempt > 0 {
            // Redis may have restarted empty: the other nodes' users come
            // back as their nodes reconnect. Before the directory is read
            // again, so that no router sees it without the window.
            self.start_settling();
        }
        // This node's inbox and the presence channel: on a subscription of
        // our own when Redis is one server (see `subscription`), on the
        // crate's connection otherwise. Either way, subscribed before the
        // directory is read.
        let inbox = inbox(&self.node);
        let subscription = match &self.backend {
            Backend::Single(info) => {
                Some(Subscription::open(info, &[&inbox, PRESENCE_CHANNEL]).await?)
            }
            Backend::Sharded(_) => {
                connection.subscribe(&inbox).await?;
                connection.subscribe(PRESENCE_CHANNEL).await?;
                None
            }
        };
        // The logs this node's feeders watch (see `watch`).
        for owner in self.watches.owners() {
            connection.subscribe(&hint_channel(&owner)).await?;
        }
        // Ours first (names held through an outage are kept or lost), and
        // said again, for nodes that lost track of them; then everyone
        // else's.
        let _ = self.renew(&mut connection).await?;
        self.reclaim(&mut connection).await?;
        self.load_directory(&mut connection).await?;
        self.set_connection(Some(connection.clone()));
        if backoff.attempt > 0 {
            // The window runs from the directory's reading on.
            self.start_settling();
            info!("cluster: Redis reachable again");
        } else {
            info!(node = &*self.node, "cluster: joined");
            self.log_persistence(&mut connection).await;
        }
        backoff.reset();
        let pushed = async {
            while let Some(push) = pushes.next().await {
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        let [Value::BulkString(channel), Value::BulkString(payload)] =
                            &push.data[..]
                        else {
                            continue;
                        };
                        self.on_message(channel, payload).await;
                        // Behind on a flood, every await above can finish
                        // at once and this loop would never give the
                        // thread up: the backlog tasks (which disconnect a
                        // slow consumer on time), the publisher and the
                        // Redis drivers share it. Idle, the next push is
                        // not there yet and the loop waits anyway.
                        if pushes.waiting() {
                            smol::future::yield_now().await;
                        }
                    }
                    PushKind::Disconnection => break,
                    _ => {}
                }
            }
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the subscription ended",
            )))
        };
        let subscribed = async {
            let Some(mut subscription) = subscription else {
                return smol::future::pending().await;
            };
            loop {
                let message = subscription.next().await?;
                self.on_message(message.channel, message.payload).await;
                // As above: a message read without waiting is a flood.
                if !subscription.waited() {
                    smol::future::yield_now().await;
                }
            }
        };
        let inbound = pushed.or(subscribed);
        let leases = async {
            let mut connection = connection.clone();
            let mut reconciled = Instant::now();
            loop {
                let due = Instant::now() + self.renew_every();
                self.learn_formats_until(&mut connection, due).await?;
                let lapsed = !self.renew(&mut connection).await?;
                if lapsed {
                    // Other nodes may have taken its names, and forgotten
                    // it: it joins again.
                    warn!("cluster: this node's lease ran out; claiming its names again");
                    self.reclaim(&mut connection).await?;
                }
                self.check_nodes(&mut connection).await?;
                // After a lapse the presence events of the pause are of no
                // use (the names this node held and lost are on other nodes
                // now); and every while, whatever was missed.
                if lapsed || reconciled.elapsed() >= RECONCILE_EVERY {
                    self.load_directory(&mut connection).await?;
                    reconciled = Instant::now();
                }
                // A command that timed out marked Redis unreachable; it
                // answers again.
                if !self.available() {
                    info!("cluster: Redis answers again");
                    self.set_connection(Some(connection.clone()));
                }
            }
        };
        let publishing = match &self.backend {
            Backend::Single(info) => PublishOn::Link(PublishLink::open(info).await?),
            Backend::Sharded(_) => PublishOn::Commands(&connection),
        };
        let publisher = self.publish(publishing);
        let appending = self.append_connections().await?;
        let appender = self.append_runs(&appending);
        inbound.or(leases).or(publisher).or(appender).await
    }
}

impl Cluster {
    /// Acts on a message of a subscribed channel: a batch for this node,
    /// a presence event, or a hint that a watched log grew.
    async fn on_message(self: &Arc<Self>, channel: &[u8], payload: &[u8]) {
        if channel == PRESENCE_CHANNEL.as_bytes() {
            self.presence_event(payload);
        } else if let Some(owner) = hinted_name(channel) {
            self.watches.poke(owner);
        } else {
            self.deliver(payload).await;
        }
    }

    /// Says at start what Redis keeps of what it is given (the README's
    /// "Durability" says what each setting guarantees), where the node
    /// may ask (`CONFIG` is an admin command, which the recommended ACL
    /// user lacks).
    async fn log_persistence(&self, connection: &mut Commands) {
        let mut settings = Vec::new();
        for name in ["appendonly", "appendfsync"] {
            let got: redis::RedisResult<Value> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(connection)
                .await;
            match got
                .as_ref()
                .ok()
                .and_then(|value| config_value(value, name))
            {
                Some(value) => settings.push(format!("{name} {value}")),
                None => {
                    info!("cluster: Redis's persistence settings cannot be read here (CONFIG GET refused); see the README on durability");
                    return;
                }
            }
        }
        if settings.first().is_some_and(|s| s == "appendonly no") {
            warn!("cluster: Redis has appendonly no: stored messages are lost if it restarts (see the README on durability)");
        } else {
            info!("cluster: Redis persistence: {}", settings.join(", "));
        }
    }
}

/// The value of `name` in a `CONFIG GET` answer (a map in RESP3, pairs in
/// RESP2; on a Redis Cluster, the first shard's).
fn config_value(value: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v).or_else(|| config_value(v, name))),
        Value::Array(items) => match items.iter().position(|v| text(v).as_deref() == Some(name)) {
            Some(at) => items.get(at + 1).and_then(text),
            None => items.iter().find_map(|v| config_value(v, name)),
        },
        _ => None,
    }
}

/// True when Redis answered, but not to this node's password (or lack of
/// one): retrying helps only once the operator fixes one side.
fn refused_credentials(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}
