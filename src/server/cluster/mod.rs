//! Several nodes acting as one server, through Redis (`--cluster URL`):
//! one Redis (`redis://HOST:PORT`) or a Redis Cluster
//! (`redis+cluster://HOST:PORT,HOST:PORT,…`, sharded pub/sub, and every
//! command on a single key, so that it goes to the one shard holding it).
//!
//! Every node keeps its own sessions, registry and routing exactly as a
//! single server does; Redis holds only what the nodes must agree on and
//! carries only what crosses between them:
//!
//! - **Nodes hold leases, names follow them.** `pmchat:node:ID` is set
//!   for its lease (`--cluster-lease`, [`LEASE`] by default) and renewed
//!   five times per lease: one command a second per node at the default,
//!   however many users it has. `pmchat:name:NAME` holds the id
//!   of the node whose session has the name; a claim reads the holder,
//!   checks the holder's lease, and swaps the name only if the holder is
//!   still the one it read (a compare-and-set script), so it succeeds when
//!   no live node holds the name, and of two nodes racing for a name
//!   exactly one wins. A node that
//!   dies (kill -9) stops renewing, so its names are free again within
//!   its lease; the nodes that notice forget its users and delete its keys
//!   (each node keeps the set of its name keys, `pmchat:names:ID`).
//! - **The directory.** Each node mirrors who is online elsewhere in its
//!   [`Registry`](super::registry::Registry) (name → node), loaded when it
//!   connects from the set of live nodes (`pmchat:nodes`) and each node's
//!   set of names (`pmchat:names:ID`), no `SCAN` (which on a Redis Cluster
//!   would visit every shard), and kept current by the `pmchat:presence`
//!   channel (`+NODE NAME`, `-NODE NAME`). So "not connected", `who`,
//!   presence events and the console's `users` cover every node without a
//!   round trip to Redis per message.
//! - **A message to a user on another node** is encoded into a bounded
//!   outbox for that node ([`OUTBOX_BYTES`]); one publisher task sends each
//!   outbox's contents as one `PUBLISH` (`SPUBLISH` on a Redis Cluster) to
//!   `pmchat:inbox:NODE`, however many messages it holds, so Redis sees one
//!   command per batch, not per message. One outbox per node and one
//!   publisher keep one sender's messages to one recipient in order. A
//!   full outbox makes the sender wait, as a full local queue does, and
//!   then refuse with `'bob' is unreachable right now`. The receiving node
//!   puts each message into its recipient's queue; one that finds the queue
//!   full waits, in order with those after it, in a bounded backlog drained
//!   by a task of its own, so the recipient's own slow-consumer rule
//!   applies without holding up anyone else. A recipient that left in
//!   between is reported back to the sender. Messages between two users on
//!   one node never touch Redis.
//! - **Redis unreachable.** The node keeps routing among its own users,
//!   refuses new logins (`service unavailable`) and messages to other nodes
//!   (`'bob' is unreachable right now`), logs it and reconnects with
//!   back-off. Back (or on finding that its own lease ran out while it was
//!   stopped), it claims again every name it holds; a session whose name
//!   another node took meanwhile is told and closed.
//!
//! What goes through an inbox is a batch: the sending node's id, then
//! records, each a kind byte and its fields (see `batch`).
//!
//! # Parts
//! - `keys`: the key schema in Redis, its scripts, node ids.
//! - `commands`: the Redis connection (one Redis or a Redis Cluster).
//! - `link`: the connection loop (connect, join, serve, reconnect).
//! - `names`: this node's lease, claims and releases of names.
//! - `directory`: who is online on the other nodes.
//! - `inbound`: the bounded queue of what the `redis` crate's connection
//!   pushed to this node; `subscription` the connection this node reads
//!   its inbox and the presence channel on when Redis is one server (RESP
//!   of its own: a batch is delivered from the buffer it was read into).
//! - `batch`: the inter-node batch format.
//! - `outbox`: a batch for another node being gathered, and the ticket a
//!   forwarded message gets (data only: no `Cluster`).
//! - `publish`: forwarding into outboxes, and the publisher;
//!   `publish_link` the connection it publishes on when Redis is one
//!   server (RESP of its own: no copy of a batch); `staged` hands a
//!   sender's messages gathered over its read batch to the outbox under
//!   one lock; `flight` a batch taken from an outbox and what a worker
//!   shares with the publisher, and `direct` the worker's own write of a
//!   batch when the publisher is idle on a plain link.
//! - `delivery`: acting on a batch from another node.
//! - `backlog`: messages from other nodes waiting for a full local queue
//!   (data only); `drain` empties them.
//! - With `--accounts`, registered users' logs on Redis Streams: `log`
//!   (reading them), `appender` (the pipelined appends, each ending with
//!   a hint), `outcome` (what senders wait on; data only), `watch` (this
//!   node's feeders and the hints they hear), `devices` (a name's
//!   sessions on several nodes), `tool` (`chat-server history` on
//!   Redis).

mod appender;
mod backlog;
mod batch;
mod commands;
mod delivery;
mod device_keys;
mod devices;
mod direct;
mod directory;
mod drain;
mod flight;
mod inbound;
mod key;
mod keys;
mod link;
mod log;
mod names;
mod outbox;
mod outcome;
mod pause;
mod publish;
mod publish_link;
mod signed;
mod staged;
mod subscription;
mod ticket;
mod tool;
mod trust;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use event_listener::{listener, Event};
use tracing::warn;

use self::backlog::Backlog;
use self::commands::{Backend, Commands};
use self::keys::{ban_key, names_key, new_node_id, node_key, swap_script, NODES_KEY};
use self::outbox::Outbox;
use super::registry::Registry;
use crate::wire::v1::Limits;

use self::commands::REDIS_TIMEOUT;
pub(crate) use self::key::ClusterKey;
#[cfg(doc)]
use self::outbox::OUTBOX_BYTES;
pub(crate) use self::outbox::{Forward, Route, Staged, Ticket, Unreachable};
pub(crate) use self::outcome::Appended;
/// How long a node's lease (and so its names) lasts without renewal, by
/// default (`--cluster-lease`): a node that dies frees its names within
/// this.
pub const LEASE: Duration = Duration::from_secs(5);
/// How many times a node renews its lease (and checks the other nodes')
/// within one lease.
const RENEWALS_PER_LEASE: u32 = 5;

/// Why a name could not be claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Another session, on any node, holds it.
    Taken,
    /// The operator of some node banned it.
    Banned,
    /// Redis cannot be reached.
    Unavailable,
    /// A registered name has `--max-devices` sessions across the nodes.
    TooMany,
}

/// What the cluster uses of the node it belongs to, handed over when the
/// node starts: the registry it mirrors the directory into and delivers
/// through, and the rules it applies to what other nodes send.
pub(crate) struct Local {
    /// Who is online, here and (as the directory) elsewhere.
    pub(crate) registry: Arc<Registry>,
    /// What a valid name is, for names read from Redis.
    pub(crate) limits: Limits,
    /// How long a message from another node may wait for room in a full
    /// local queue before its recipient counts as a slow consumer.
    pub(crate) slow_consumer_timeout: Duration,
    /// A local recipient's queue limit, which its backlog may reach.
    pub(crate) queue_bytes: usize,
    /// How much of each registered user's log is kept (`--history-max`,
    /// `--history-days`).
    pub(crate) retention: crate::store::Retention,
    /// Replicas that must have an entry before its sender hears it is
    /// stored (`--cluster-wait`; 0: Redis's own answer will do).
    pub(crate) wait_replicas: u32,
    /// What the server counts (here: the publish batches).
    pub(crate) stats: Arc<crate::server::stats::Stats>,
}

/// This node's part in the cluster.
pub(crate) struct Cluster {
    /// This node's id, random per start.
    node: Arc<str>,
    /// What it uses of this node.
    local: Local,
    backend: Backend,
    /// The connection for commands; `None` while Redis is unreachable.
    commands: RwLock<Option<Commands>>,
    /// Whether `commands` holds a connection, for the path of every
    /// message to another node: a load of a line every worker only reads,
    /// where the lock's read would bounce its counter between cores.
    connected: AtomicBool,
    /// Messages for other nodes, by node id.
    outboxes: RwLock<HashMap<Arc<str>, Arc<Outbox>>>,
    /// Fires when an outbox got its first record.
    ready: Event,
    /// Fires when an outbox was made for a node whose batch format is not
    /// known yet (read from its lease by `learn_formats`).
    format_wanted: Event,
    /// What a worker writing a batch to Redis itself shares with the
    /// publisher (see `flight`).
    flight: Mutex<flight::Flight>,
    /// Fires when Redis becomes reachable.
    reachable: Event,
    /// The claim's compare-and-set, compiled once (its hash is sent, not
    /// its text).
    swap_script: redis::Script,
    /// How long this node's lease lasts without renewal
    /// (`--cluster-lease`).
    lease: Duration,
    /// Messages from other nodes waiting for room in full local queues, by
    /// recipient session (its address: a session with a backlog is kept
    /// alive by the task draining it, so the address stays its own).
    backlogs: Mutex<HashMap<usize, Backlog>>,
    /// How many backlogs there are, kept with the map: zero on the path of
    /// almost every message, which then takes no lock for them.
    backlog_count: AtomicUsize,
    /// Presence events heard while the directory is being read from Redis
    /// (`None` when it is not).
    loading: Mutex<Option<Vec<Box<[u8]>>>>,
    /// Until when, after Redis came back, the directory may still lack
    /// users whose nodes have not reconnected yet: a miss then means
    /// "unreachable right now", not "not connected".
    settling_until: Mutex<Option<Instant>>,
    /// The other nodes known to be live (a lease in Redis, or announced
    /// since the last check): at most [`MAX_NODES`]. Only these get an
    /// outbox, and only their batches are acted on.
    live: RwLock<HashSet<Arc<str>>>,
    /// Records read from Redis that broke a rule and were dropped.
    rejected: AtomicU64,
    /// The cluster key, if the nodes share one (`--cluster-key-file`).
    key: Option<ClusterKey>,
    /// One more than the highest batch number used so far: a new outbox
    /// numbers its batches from here, so that the numbers a node sends
    /// another only grow, even after its outbox was dropped and made anew.
    batches: AtomicU64,
    /// With the key: the number of the latest batch accepted from each
    /// live node; an older or repeated one is a replay.
    latest_batch: Mutex<HashMap<Arc<str>, u64>>,
    /// Recipients on other nodes whose senders here must wait.
    paused: pause::Paused,
    /// Entries for registered users' logs, gathered for the appender.
    appends: appender::Appends,
    /// The logs this node's feeders watch.
    watches: watch::Watches,
    /// Which other nodes have sessions of which names.
    device_nodes: devices::DeviceNodes,
    /// The registered names with devices on this node, and how many each.
    devices_here: Mutex<HashMap<Box<str>, usize>>,
}

/// The most other nodes one node keeps track of: what a Redis writer
/// inventing node ids can make it hold is bounded.
pub const MAX_NODES: usize = 1024;

impl Cluster {
    /// How often this node renews its lease and checks the other nodes'.
    fn renew_every(&self) -> Duration {
        self.lease / RENEWALS_PER_LEASE
    }

    /// A node for the Redis at `url` (`redis://HOST:PORT`); nothing is
    /// connected until [`Cluster::run`].
    pub(crate) fn new(
        url: &str,
        key: Option<ClusterKey>,
        ca: Option<&std::path::Path>,
        lease: Duration,
        local: Local,
    ) -> Result<Cluster, String> {
        let bad = |e: redis::RedisError| format!("bad --cluster URL: {e}");
        // TLS to Redis is ours to set up (the crate's own needs a TLS
        // stack of its own): the URL is read as its plain form.
        let (url, tls) = match url.strip_prefix("rediss") {
            Some(rest) if rest.starts_with("://") || rest.starts_with("+cluster://") => {
                (format!("redis{rest}"), true)
            }
            _ => (url.to_string(), false),
        };
        if tls {
            let config =
                crate::net::tls::tls_client_config(ca).map_err(|e| format!("TLS to Redis: {e}"))?;
            super::redis_io::use_tls(config);
        } else if ca.is_some() {
            return Err("--cluster-ca needs a rediss:// URL".into());
        }
        let url = url.as_str();
        let backend = match url.strip_prefix("redis+cluster://") {
            Some(nodes) => {
                let nodes: Vec<String> = nodes
                    .split(',')
                    .filter(|node| !node.is_empty())
                    .map(|node| format!("redis://{node}"))
                    .collect();
                for node in &nodes {
                    redis::IntoConnectionInfo::into_connection_info(node.as_str()).map_err(bad)?;
                }
                if nodes.is_empty() {
                    return Err("bad --cluster URL: redis+cluster:// names no node".into());
                }
                Backend::Sharded(nodes)
            }
            None => {
                let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(bad)?;
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                Backend::Single(info.set_redis_settings(settings))
            }
        };
        Ok(Cluster {
            node: new_node_id().into(),
            local,
            backend,
            commands: RwLock::new(None),
            connected: AtomicBool::new(false),
            outboxes: RwLock::new(HashMap::new()),
            ready: Event::new(),
            format_wanted: Event::new(),
            flight: Mutex::new(flight::Flight::default()),
            reachable: Event::new(),
            backlogs: Mutex::new(HashMap::new()),
            backlog_count: AtomicUsize::new(0),
            loading: Mutex::new(None),
            settling_until: Mutex::new(None),
            live: RwLock::new(HashSet::new()),
            rejected: AtomicU64::new(0),
            key,
            batches: AtomicU64::new(0),
            latest_batch: Mutex::new(HashMap::new()),
            paused: pause::Paused::default(),
            appends: appender::Appends::default(),
            watches: watch::Watches::default(),
            device_nodes: devices::DeviceNodes::default(),
            devices_here: Mutex::new(HashMap::new()),
            swap_script: swap_script(),
            lease,
        })
    }

    /// The command connection, if Redis is reachable.
    fn connection(&self) -> Option<Commands> {
        self.commands
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_connection(&self, connection: Option<Commands>) {
        let reachable = connection.is_some();
        let mut commands = self.commands.write().unwrap_or_else(|e| e.into_inner());
        *commands = connection;
        self.connected.store(reachable, Ordering::Release);
        drop(commands);
        if reachable {
            self.reachable.notify(usize::MAX);
            // What the feeders missed while Redis was away is in the logs.
            self.watches.wake_all();
        }
    }

    /// The command connection, waiting up to [`REDIS_TIMEOUT`] for one: a
    /// login that comes while the node is still joining (or Redis just
    /// blinked) waits a moment rather than being refused.
    async fn connection_soon(&self) -> Option<Commands> {
        let deadline = Instant::now() + REDIS_TIMEOUT;
        loop {
            if let Some(connection) = self.connection() {
                return Some(connection);
            }
            listener!(self.reachable => reachable);
            if let Some(connection) = self.connection() {
                return Some(connection);
            }
            crate::runtime::until(deadline, reachable).await?;
        }
    }

    /// True while the directory is being rebuilt after Redis came back
    /// (the other nodes reconnect in their own time): a name missing from
    /// it may be on a node that has not announced it again yet.
    pub(crate) fn settling(&self) -> bool {
        self.settling_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Starts the window of [`Cluster::settling`]: every live node renews
    /// its lease within its lease time and retries Redis at least every
    /// [`crate::backoff::MAX_DELAY`], and claims and announces its names
    /// when it reconnects.
    fn start_settling(&self) {
        let until = Instant::now() + self.lease + crate::backoff::MAX_DELAY;
        *self
            .settling_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    /// The shared id of `node` if it is live.
    fn live_node(&self, node: &[u8]) -> Option<Arc<str>> {
        let node = std::str::from_utf8(node).ok()?;
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    /// Counts `node` as live (it announced a user or sent a batch) until
    /// its lease is next checked, unless [`MAX_NODES`] are tracked
    /// already; its shared id.
    fn note_live(&self, node: &[u8]) -> Option<Arc<str>> {
        if let Some(known) = self.live_node(node) {
            return Some(known);
        }
        let node = std::str::from_utf8(node).ok()?;
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = live.get(node) {
            return Some(Arc::clone(known));
        }
        if live.len() >= MAX_NODES {
            return None;
        }
        let node: Arc<str> = node.into();
        live.insert(Arc::clone(&node));
        Some(node)
    }

    /// Drops something read from Redis that broke a rule: counted, and
    /// logged the first time and every 10,000th.
    fn reject(&self, what: &str) {
        let count = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        if count == 1 || count % 10_000 == 0 {
            warn!("cluster: dropped {what} read from Redis ({count} dropped so far)");
        }
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node
    }

    /// Redis answers (the command connection is up).
    pub(crate) fn redis_reachable(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// How many other nodes are known to be live.
    pub(crate) fn live_nodes(&self) -> usize {
        self.live.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Records read from Redis and dropped so far.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// True while Redis is reachable.
    pub(crate) fn available(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// A command failed. A broken or silent connection makes Redis
    /// unreachable until the connection task connects again; any other
    /// error is this command's alone.
    fn lost(&self, error: redis::RedisError) -> ClaimError {
        let broken = error.is_io_error() || error.is_connection_dropped() || error.is_timeout();
        if broken && self.available() {
            warn!("cluster: Redis failed: {error}");
            self.set_connection(None);
        } else if !broken {
            warn!("cluster: Redis refused a command: {error}");
        }
        ClaimError::Unavailable
    }

    /// Bans `name` on every node for `duration` (`None`: until lifted).
    pub(crate) async fn ban(
        &self,
        name: &str,
        duration: Option<Duration>,
    ) -> Result<(), Unreachable> {
        let mut connection = self.connection_soon().await.ok_or(Unreachable)?;
        let mut set = redis::cmd("SET");
        set.arg(ban_key(name)).arg(self.ban_value(name));
        if let Some(duration) = duration {
            set.arg("PX").arg(duration.as_millis().max(1) as u64);
        }
        let done: redis::RedisResult<()> = set.query_async(&mut connection).await;
        done.map_err(|e| {
            self.lost(e);
            Unreachable
        })
    }

    /// Lifts `name`'s ban on every node; true if it had one.
    pub(crate) async fn unban(&self, name: &str) -> Result<bool, Unreachable> {
        let mut connection = self.connection_soon().await.ok_or(Unreachable)?;
        let removed: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(ban_key(name))
            .query_async(&mut connection)
            .await;
        removed.map(|n| n == 1).map_err(|e| {
            self.lost(e);
            Unreachable
        })
    }

    /// Leaves the cluster at shutdown: gives up every name and this node's
    /// own lease at once, rather than letting them run out.
    pub(crate) async fn leave(&self) {
        for name in self.local.registry.local_names() {
            self.release(&name).await;
        }
        if let Some(mut connection) = self.connection() {
            for key in [node_key(&self.node), names_key(&self.node)] {
                let _: redis::RedisResult<i64> = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut connection)
                    .await;
            }
            let _: redis::RedisResult<i64> = redis::cmd("SREM")
                .arg(NODES_KEY)
                .arg(&*self.node)
                .query_async(&mut connection)
                .await;
        }
    }
}
