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
//!   for [`LEASE`] and renewed every [`RENEW_EVERY`]: one command a second
//!   per node, however many users it has. `pmchat:name:NAME` holds the id
//!   of the node whose session has the name; a claim reads the holder,
//!   checks the holder's lease, and swaps the name only if the holder is
//!   still the one it read (a compare-and-set script), so it succeeds when
//!   no live node holds the name, and of two nodes racing for a name
//!   exactly one wins. A node that
//!   dies (kill -9) stops renewing, so its names are free again within
//!   [`LEASE`]; the nodes that notice forget its users and delete its keys
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
//! records, each a kind byte and its fields (see [`Record`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use event_listener::{listener, Event};
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use smol::future::FutureExt;
use smol::Timer;
use tracing::{debug, info, warn};

use super::redis_io::NodeConnection;
use super::router::{not_connected_text, slow_consumer_text};
use super::session::{Session, KICKED};
use super::Shared;
use crate::sanitize::Escaped;

/// How long a node's lease (and so its names) lasts without renewal: a
/// node that dies frees its names within this.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often a node renews its lease and checks the other nodes'.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Bytes of messages waiting for one other node before senders wait.
pub const OUTBOX_BYTES: usize = 1 << 20;
/// The channel every node announces its users' arrivals and departures on.
const PRESENCE_CHANNEL: &str = "pmchat:presence";
/// How long a connection attempt or a command may take before Redis counts
/// as unreachable.
pub(super) const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The error text for a message to another node while Redis is
/// unreachable or that node's outbox stayed full.
pub fn unreachable_text(name: &[u8]) -> String {
    format!("'{}' is unreachable right now\n", Escaped(name))
}

/// The error text for a session whose name another node took while this
/// one could not reach Redis.
pub fn name_lost_text(name: &str) -> String {
    format!("'{name}' was taken by another login while this server could not reach its cluster\n")
}

fn name_key(name: &str) -> String {
    format!("pmchat:name:{name}")
}

/// A ban on a name, set by any node's operator, with the ban's duration as
/// its time to live.
fn ban_key(name: &str) -> String {
    format!("pmchat:ban:{name}")
}

fn node_key(node: &str) -> String {
    format!("pmchat:node:{node}")
}

/// The set of live nodes' ids.
const NODES_KEY: &str = "pmchat:nodes";

/// The set of name keys a node holds: the directory, and what to clean up
/// after it dies.
fn names_key(node: &str) -> String {
    format!("pmchat:names:{node}")
}

fn inbox(node: &str) -> String {
    format!("pmchat:inbox:{node}")
}

/// Why a name could not be claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Another session, on any node, holds it.
    Taken,
    /// The operator of some node banned it.
    Banned,
    /// Redis cannot be reached.
    Unavailable,
}

/// A message could not be handed on to another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unreachable;

/// Messages waiting for one other node.
#[derive(Default)]
struct Outbox {
    /// The batch being gathered: the header, then records.
    batch: Mutex<Vec<u8>>,
    /// Fires when the publisher took the batch.
    room: Event,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the cluster's Redis is.
enum Backend {
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
enum Commands {
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
    fn publish(&self, channel: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(match self {
            Commands::Single(_) => "PUBLISH",
            Commands::Sharded(_) => "SPUBLISH",
        });
        cmd.arg(channel);
        cmd
    }

    /// Subscribes this connection to `channel`; messages come as pushes.
    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Commands::Single(c) => c.subscribe(channel).await,
            Commands::Sharded(c) => c.ssubscribe(channel).await,
        }
    }
}

/// This node's part in the cluster.
pub(crate) struct Cluster {
    /// This node's id, random per start.
    node: Arc<str>,
    backend: Backend,
    /// The connection for commands; `None` while Redis is unreachable.
    commands: RwLock<Option<Commands>>,
    /// Messages for other nodes, by node id.
    outboxes: RwLock<HashMap<Arc<str>, Arc<Outbox>>>,
    /// Fires when an outbox got its first record.
    ready: Event,
    /// Fires when Redis becomes reachable.
    reachable: Event,
    /// The claim's compare-and-set, compiled once (its hash is sent, not
    /// its text).
    swap_script: redis::Script,
    /// Messages from other nodes waiting for room in full local queues, by
    /// recipient session (its address: a session with a backlog is kept
    /// alive by the task draining it, so the address stays its own).
    backlogs: Mutex<HashMap<usize, Backlog>>,
}

/// Bytes of batches received from Redis and not yet handled past which
/// further ones are dropped (and logged): a node that cannot keep up with
/// what the others send it must not grow without bound. Redis applies the
/// same rule to a slow subscriber (its pub/sub output buffer limit, 32 MiB,
/// disconnects it).
pub const INBOUND_BYTES: usize = 64 << 20;

/// Where the Redis client hands this node's pushes, counted in bytes.
struct Inbound {
    sender: async_channel::Sender<PushInfo>,
    /// Bytes queued and not yet taken.
    pending: Arc<AtomicUsize>,
}

/// The other end of an [`Inbound`].
struct InboundQueue {
    receiver: async_channel::Receiver<PushInfo>,
    pending: Arc<AtomicUsize>,
}

impl Inbound {
    fn new() -> (Inbound, InboundQueue) {
        let (sender, receiver) = async_channel::unbounded();
        let pending = Arc::new(AtomicUsize::new(0));
        let queue = InboundQueue {
            receiver,
            pending: Arc::clone(&pending),
        };
        (Inbound { sender, pending }, queue)
    }

    /// Queues a push unless [`INBOUND_BYTES`] are waiting already.
    fn push(&self, info: PushInfo) -> Result<(), ()> {
        let size = push_size(&info);
        let waiting = self.pending.load(Ordering::Relaxed);
        if waiting + size > INBOUND_BYTES && info.kind != PushKind::Disconnection {
            warn!("cluster: {size} bytes from Redis dropped: this node is {waiting} bytes behind");
            return Ok(());
        }
        self.pending.fetch_add(size, Ordering::Relaxed);
        self.sender.try_send(info).map_err(|_| ())
    }
}

impl InboundQueue {
    /// True when a push is already queued.
    fn waiting(&self) -> bool {
        !self.receiver.is_empty()
    }

    /// The next push; `None` once the connection is gone.
    async fn next(&self) -> Option<PushInfo> {
        let info = self.receiver.recv().await.ok()?;
        self.pending.fetch_sub(push_size(&info), Ordering::Relaxed);
        Some(info)
    }
}

/// The bytes a push holds.
fn push_size(info: &PushInfo) -> usize {
    info.data
        .iter()
        .map(|value| match value {
            Value::BulkString(bytes) => bytes.len(),
            _ => 0,
        })
        .sum()
}

/// A message from another node waiting for room in a local recipient's
/// queue.
struct Waiting {
    /// Encoded in the recipient's wire.
    frame: Vec<u8>,
    /// The sender's node and name, to tell it if the message is dropped.
    origin: Arc<str>,
    from: Box<[u8]>,
}

/// Messages from other nodes waiting, in order, for one recipient whose
/// queue is full; at most `--queue-bytes` of them.
#[derive(Default)]
struct Backlog {
    frames: VecDeque<Waiting>,
    bytes: usize,
}

/// What [`Cluster::join_backlog`] did.
enum Joined {
    /// The recipient has no backlog: deliver as usual.
    NoBacklog,
    /// Queued behind the backlog.
    Queued,
    /// The backlog is full too: not delivered.
    Refused(Vec<Waiting>),
}

/// A session's backlog key: its address.
fn session_key(session: &Arc<Session>) -> usize {
    Arc::as_ptr(session) as usize
}

/// The error text for a message dropped because its recipient, on another
/// node, has not read what is already waiting for it.
fn not_reading_text(name: &str) -> String {
    format!("'{name}' is not reading fast enough; message not delivered\n")
}

/// One record of an inbox batch.
#[derive(Debug, PartialEq, Eq)]
enum Record<'a> {
    /// `M`: a message for `to` on the receiving node.
    Message {
        to: &'a [u8],
        from: &'a [u8],
        content: &'a [u8],
    },
    /// `E`: an error for the sending node's user `to`.
    Error { to: &'a [u8], text: &'a [u8] },
    /// `K`: the operator of another node kicked `name`.
    Kick { name: &'a [u8] },
}

fn put_short(out: &mut Vec<u8>, field: &[u8]) {
    // Names are at most 255 bytes: validated before they get here.
    out.push(field.len().min(255) as u8);
    out.extend_from_slice(&field[..field.len().min(255)]);
}

fn put_long(out: &mut Vec<u8>, field: &[u8]) {
    let len = field.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&field[..len]);
}

impl Record<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Message { to, from, content } => {
                out.push(b'M');
                put_short(out, to);
                put_short(out, from);
                put_long(out, content);
            }
            Record::Error { to, text } => {
                out.push(b'E');
                put_short(out, to);
                put_long(out, text);
            }
            Record::Kick { name } => {
                out.push(b'K');
                put_short(out, name);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Record::Message { to, from, content } => {
                1 + 1 + to.len() + 1 + from.len() + 2 + content.len()
            }
            Record::Error { to, text } => 1 + 1 + to.len() + 2 + text.len(),
            Record::Kick { name } => 1 + 1 + name.len(),
        }
    }
}

/// Reads a batch: the sending node's id, then its records. Stops at the
/// first malformed record (only a foreign publisher could send one).
fn decode_batch(batch: &[u8]) -> Option<(&[u8], Vec<Record<'_>>)> {
    let mut rest = batch;
    let origin = take_short(&mut rest)?;
    let mut records = Vec::new();
    while let Some(record) = decode_record(&mut rest) {
        records.push(record);
    }
    Some((origin, records))
}

/// The record at the front of `rest`; `None` at the end or at garbage.
fn decode_record<'a>(rest: &mut &'a [u8]) -> Option<Record<'a>> {
    let (&kind, tail) = rest.split_first()?;
    *rest = tail;
    Some(match kind {
        b'M' => Record::Message {
            to: take_short(rest)?,
            from: take_short(rest)?,
            content: take_long(rest)?,
        },
        b'E' => Record::Error {
            to: take_short(rest)?,
            text: take_long(rest)?,
        },
        b'K' => Record::Kick {
            name: take_short(rest)?,
        },
        _ => return None,
    })
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (field, tail) = (rest.get(..n)?, rest.get(n..)?);
    *rest = tail;
    Some(field)
}

fn take_short<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(*take(rest, 1)?.first()?);
    take(rest, len)
}

fn take_long<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take(rest, 2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    take(rest, len)
}

/// A random node id: 16 hex digits.
fn new_node_id() -> String {
    let mut bytes = [0u8; 8];
    // A failure leaves zeros; the pid and the time still tell nodes apart.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64);
    let id = u64::from_be_bytes(bytes) ^ stamp ^ u64::from(std::process::id());
    format!("{id:016x}")
}

impl Cluster {
    /// A node for the Redis at `url` (`redis://HOST:PORT`); nothing is
    /// connected until [`Cluster::run`].
    pub(crate) fn new(url: &str) -> Result<Cluster, String> {
        let bad = |e: redis::RedisError| format!("bad --cluster URL: {e}");
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
            backend,
            commands: RwLock::new(None),
            outboxes: RwLock::new(HashMap::new()),
            ready: Event::new(),
            reachable: Event::new(),
            backlogs: Mutex::new(HashMap::new()),
            swap_script: swap_script(),
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
        *self.commands.write().unwrap_or_else(|e| e.into_inner()) = connection;
        if reachable {
            self.reachable.notify(usize::MAX);
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

    /// True while Redis is reachable.
    pub(crate) fn available(&self) -> bool {
        self.commands
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Claims `name` for this node, atomically across all of them, and
    /// tells the others. `name` must not be held by a local session (the
    /// caller checks): the claim succeeds when no live node holds it.
    pub(crate) async fn claim(&self, name: &str) -> Result<(), ClaimError> {
        let mut connection = self
            .connection_soon()
            .await
            .ok_or(ClaimError::Unavailable)?;
        let banned: i64 = redis::cmd("EXISTS")
            .arg(ban_key(name))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.lost(e))?;
        if banned == 1 {
            return Err(ClaimError::Banned);
        }
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

    /// Claims `name` unless a live node other than this one holds it: the
    /// holder is read, its lease checked, and the name swapped only if the
    /// holder is still the one read (so of two nodes racing, one wins).
    /// Each command touches one key, as a Redis Cluster requires.
    async fn claim_on(&self, connection: &mut Commands, name: &str) -> redis::RedisResult<bool> {
        let key = name_key(name);
        let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(connection).await?;
        if let Some(holder) = holder.as_deref().filter(|holder| *holder != &*self.node) {
            let alive: i64 = redis::cmd("EXISTS")
                .arg(node_key(holder))
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
            .arg(&*self.node)
            .invoke_async(connection)
            .await?;
        if swapped == 1 {
            let _: i64 = redis::cmd("SADD")
                .arg(names_key(&self.node))
                .arg(&key)
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
            .arg(&*self.node)
            .invoke_async(&mut connection)
            .await;
        let _: redis::RedisResult<i64> = redis::cmd("SREM")
            .arg(names_key(&self.node))
            .arg(name_key(name))
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

    async fn announce(&self, connection: &mut Commands, sign: char, name: &str) {
        let event = format!("{sign}{} {name}", self.node);
        let published: Result<i64, _> = connection
            .publish(PRESENCE_CHANNEL)
            .arg(event)
            .query_async(connection)
            .await;
        if let Err(e) = published {
            self.lost(e);
        }
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

    /// The outbox for `node`. Every cross-node message asks, from every
    /// worker: a read lock, except the first time a node is seen.
    fn outbox(&self, node: &Arc<str>) -> Arc<Outbox> {
        let known = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(outbox) = known.get(node) {
            return Arc::clone(outbox);
        }
        drop(known);
        let mut outboxes = self.outboxes.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(outboxes.entry(Arc::clone(node)).or_default())
    }

    /// Queues `record` for `node`, waiting up to `patience` while its
    /// outbox is full.
    async fn send(
        &self,
        node: &Arc<str>,
        record: &Record<'_>,
        patience: Duration,
    ) -> Result<(), Unreachable> {
        if !self.available() {
            return Err(Unreachable);
        }
        let outbox = self.outbox(node);
        let len = record.len();
        // Only a full outbox needs a deadline.
        let mut deadline = None;
        loop {
            {
                let mut batch = outbox.lock();
                if batch.is_empty() || batch.len() + len <= OUTBOX_BYTES {
                    let first = batch.is_empty();
                    if first {
                        put_short(&mut batch, self.node.as_bytes());
                    }
                    record.encode(&mut batch);
                    drop(batch);
                    if first {
                        self.ready.notify(1);
                    }
                    return Ok(());
                }
            }
            listener!(outbox.room => room);
            if outbox.lock().len() + len <= OUTBOX_BYTES {
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + patience);
            if crate::runtime::until(deadline, room).await.is_none() || !self.available() {
                return Err(Unreachable);
            }
        }
    }

    /// Hands a message for `to`, held by `node`, to that node, waiting up
    /// to `patience` for room.
    pub(crate) async fn forward(
        &self,
        node: &Arc<str>,
        to: &[u8],
        from: &[u8],
        content: &[u8],
        patience: Duration,
    ) -> Result<(), Unreachable> {
        self.send(node, &Record::Message { to, from, content }, patience)
            .await
    }

    /// Bans `name` on every node for `duration` (`None`: until lifted).
    pub(crate) async fn ban(
        &self,
        name: &str,
        duration: Option<Duration>,
    ) -> Result<(), Unreachable> {
        let mut connection = self.connection_soon().await.ok_or(Unreachable)?;
        let mut set = redis::cmd("SET");
        set.arg(ban_key(name)).arg(1);
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

    /// Asks `node` to disconnect its user `name`.
    pub(crate) async fn kick(&self, node: &Arc<str>, name: &str) -> Result<(), Unreachable> {
        let kick = Record::Kick {
            name: name.as_bytes(),
        };
        self.send(node, &kick, Duration::from_secs(1)).await
    }

    /// Keeps this node in the cluster until the server stops: connects,
    /// loads the directory, then serves the inbox, the presence channel,
    /// the publisher and the leases; reconnects with back-off whenever
    /// Redis fails.
    pub(crate) async fn run(&self, shared: &Arc<Shared>) {
        let mut backoff = crate::backoff::Backoff::default();
        loop {
            match self.serve(shared, &mut backoff).await {
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
            let delay = backoff.next_delay();
            debug!("cluster: reconnecting in {delay:?}");
            Timer::after(delay).await;
        }
    }

    /// A connection to this cluster's Redis whose pushes (subscribed
    /// messages, disconnections) go to `pushed`. Bounded: a Redis that stops
    /// answering must not hold a login (or the lease) forever; it counts as
    /// unreachable instead.
    async fn connect(&self, pushed: Inbound) -> redis::RedisResult<Commands> {
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
                // the single Redis's is (the crate's generic constructor,
                // public though left out of its docs).
                let connection = client.get_async_generic_connection().await?;
                Ok(Commands::Sharded(connection))
            }
        }
    }

    /// One connection's worth of [`Cluster::run`]; returns when Redis
    /// fails.
    async fn serve(
        &self,
        shared: &Arc<Shared>,
        backoff: &mut crate::backoff::Backoff,
    ) -> redis::RedisResult<()> {
        let (pushed, pushes) = Inbound::new();
        let mut connection = self.connect(pushed).await?;
        connection.subscribe(&inbox(&self.node)).await?;
        connection.subscribe(PRESENCE_CHANNEL).await?;
        // Ours first (names held through an outage are kept or lost), and
        // said again, for nodes that lost track of them; then everyone
        // else's.
        let _ = self.renew(&mut connection).await?;
        self.reclaim(shared, &mut connection).await?;
        load_directory(shared, &self.node, &mut connection).await?;
        self.set_connection(Some(connection.clone()));
        if backoff.attempt > 0 {
            info!("cluster: Redis reachable again");
        } else {
            info!(node = &*self.node, "cluster: joined");
        }
        backoff.reset();
        let inbound = async {
            while let Some(push) = pushes.next().await {
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        let [Value::BulkString(channel), Value::BulkString(payload)] =
                            &push.data[..]
                        else {
                            continue;
                        };
                        if channel == PRESENCE_CHANNEL.as_bytes() {
                            presence_event(shared, &self.node, payload);
                        } else {
                            self.deliver(shared, payload).await;
                        }
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
        let leases = async {
            let mut connection = connection.clone();
            loop {
                Timer::after(RENEW_EVERY).await;
                if !self.renew(&mut connection).await? {
                    // Other nodes may have taken its names, and forgotten
                    // it: it joins again.
                    warn!("cluster: this node's lease ran out; claiming its names again");
                    self.reclaim(shared, &mut connection).await?;
                }
                check_nodes(shared, &mut connection).await?;
                // A command that timed out marked Redis unreachable; it
                // answers again.
                if !self.available() {
                    info!("cluster: Redis answers again");
                    self.set_connection(Some(connection.clone()));
                }
            }
        };
        let publisher = async {
            let mut connection = connection.clone();
            loop {
                self.publish_ready(shared, &mut connection).await?;
            }
        };
        inbound.or(leases).or(publisher).await
    }

    /// Renews this node's lease, which keeps every name it holds: one
    /// command a second, however many users the node has. False if the
    /// lease had run out (this node was stopped, or cut off, for longer
    /// than [`LEASE`]): its names may have been claimed elsewhere since.
    async fn renew(&self, connection: &mut Commands) -> redis::RedisResult<bool> {
        let before: Option<String> = redis::cmd("SET")
            .arg(node_key(&self.node))
            .arg(1)
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
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
    async fn reclaim(&self, shared: &Shared, connection: &mut Commands) -> redis::RedisResult<()> {
        // Listed among the live nodes first, so that others load its names.
        let _: i64 = redis::cmd("SADD")
            .arg(NODES_KEY)
            .arg(&*self.node)
            .query_async(connection)
            .await?;
        for name in shared.registry.local_names() {
            if self.claim_on(connection, &name).await? {
                let event = format!("+{} {name}", self.node);
                let _: i64 = connection
                    .publish(PRESENCE_CHANNEL)
                    .arg(event)
                    .query_async(connection)
                    .await?;
            } else if let Some(session) = shared.registry.get(name.as_bytes()) {
                warn!(
                    user = name.as_str(),
                    "cluster: name taken by another node meanwhile"
                );
                shared.registry.remove(&session);
                session.close_with_error(&name_lost_text(&name));
            }
        }
        Ok(())
    }

    /// Waits for outboxes with records and publishes each as one batch.
    async fn publish_ready(
        &self,
        shared: &Shared,
        connection: &mut Commands,
    ) -> redis::RedisResult<()> {
        let ready: Vec<(Arc<str>, Vec<u8>, Arc<Outbox>)> = loop {
            listener!(self.ready => wake);
            let taken = self.take_batches();
            if !taken.is_empty() {
                break taken;
            }
            wake.await;
        };
        for (node, batch, outbox) in ready {
            outbox.room.notify(usize::MAX);
            let published: redis::RedisResult<i64> = connection
                .publish(&inbox(&node))
                .arg(&batch)
                .query_async(connection)
                .await;
            if let Err(e) = published {
                // Nothing is lost silently: each sender hears of each
                // message that did not go out.
                refuse_batch(shared, &batch);
                return Err(e);
            }
        }
        Ok(())
    }

    fn take_batches(&self) -> Vec<(Arc<str>, Vec<u8>, Arc<Outbox>)> {
        let outboxes = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        outboxes
            .iter()
            .filter_map(|(node, outbox)| {
                let batch = std::mem::take(&mut *outbox.lock());
                (!batch.is_empty()).then(|| (Arc::clone(node), batch, Arc::clone(outbox)))
            })
            .collect()
    }

    /// Acts on a batch from another node's outbox.
    async fn deliver(&self, shared: &Arc<Shared>, batch: &[u8]) {
        let Some((origin, records)) = decode_batch(batch) else {
            return;
        };
        let origin: Arc<str> = String::from_utf8_lossy(origin).into();
        let mut touched: Vec<Arc<Session>> = Vec::new();
        for record in records {
            match record {
                Record::Message { to, from, content } => {
                    let Some(session) = shared.registry.get(to) else {
                        let text = not_connected_text(to);
                        let error = Record::Error {
                            to: from,
                            text: text.as_bytes(),
                        };
                        let patience = shared.config.slow_consumer_timeout;
                        let _ = self.send(&origin, &error, patience).await;
                        continue;
                    };
                    let (wire, name) = (session.wire(), session.name().as_bytes());
                    let len = wire.message_len(name, from, content);
                    let encode = |out: &mut Vec<u8>| wire.encode_message(name, from, content, out);
                    let waiting = || Waiting {
                        frame: {
                            let mut frame = Vec::with_capacity(len);
                            encode(&mut frame);
                            frame
                        },
                        origin: Arc::clone(&origin),
                        from: from.into(),
                    };
                    // Behind the messages already waiting for it, if any:
                    // order is kept, and this task never waits.
                    match self.join_backlog(shared, &session, waiting) {
                        Joined::Queued => continue,
                        Joined::Refused(refused) => {
                            self.refuse(shared, refused, &not_reading_text(session.name()))
                                .await;
                            continue;
                        }
                        Joined::NoBacklog => {}
                    }
                    match session.outbound().try_push_deferred(len, encode) {
                        Ok(true) => touched.push(session),
                        Ok(false) | Err(super::outbound::PushError::Closed) => {}
                        // Its own node's rule, without holding up the
                        // others: the message waits for room (in order, with
                        // those that follow it) for the slow-consumer
                        // timeout, on a task of its own.
                        Err(super::outbound::PushError::Full) => {
                            let first = waiting();
                            self.start_backlog(shared, Arc::clone(&session), first);
                        }
                    }
                }
                Record::Error { to, text } => {
                    if let Some(session) = shared.registry.get(to) {
                        let frame = session.wire().error_frame(&String::from_utf8_lossy(text));
                        if let Ok(true) = session
                            .outbound()
                            .try_push_deferred(frame.len(), |out| out.extend_from_slice(&frame))
                        {
                            touched.push(session);
                        }
                    }
                }
                Record::Kick { name } => {
                    if let Some(session) = shared.registry.get(name) {
                        shared.registry.remove(&session);
                        if session.close_with_error(KICKED) {
                            info!(
                                user = session.name(),
                                "kicked by the operator of another node"
                            );
                        }
                    }
                }
            }
        }
        flush_all(&mut touched);
    }

    /// Queues a message behind `session`'s backlog if it has one.
    fn join_backlog(
        &self,
        shared: &Shared,
        session: &Arc<Session>,
        waiting: impl FnOnce() -> Waiting,
    ) -> Joined {
        let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(backlog) = backlogs.get_mut(&session_key(session)) else {
            return Joined::NoBacklog;
        };
        let waiting = waiting();
        if backlog.bytes + waiting.frame.len() > shared.config.queue_bytes {
            return Joined::Refused(vec![waiting]);
        }
        backlog.bytes += waiting.frame.len();
        backlog.frames.push_back(waiting);
        Joined::Queued
    }

    /// Starts a backlog for `session`, whose queue is full, with `first`,
    /// and the task that feeds it into the queue as room appears.
    fn start_backlog(&self, shared: &Arc<Shared>, session: Arc<Session>, first: Waiting) {
        let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        backlogs.insert(
            session_key(&session),
            Backlog {
                bytes: first.frame.len(),
                frames: VecDeque::from([first]),
            },
        );
        drop(backlogs);
        let shared = Arc::clone(shared);
        smol::spawn(async move {
            if let Some(cluster) = &shared.cluster {
                cluster.drain_backlog(&shared, &session).await;
            }
        })
        .detach();
    }

    /// Feeds `session`'s backlog into its queue, each message waiting up to
    /// the slow-consumer timeout for room; a recipient that never makes room
    /// is disconnected as a slow consumer, and the senders of what was still
    /// waiting are told.
    async fn drain_backlog(&self, shared: &Shared, session: &Arc<Session>) {
        let key = session_key(session);
        loop {
            let next = {
                let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
                let Some(backlog) = backlogs.get_mut(&key) else {
                    return;
                };
                match backlog.frames.pop_front() {
                    Some(next) => {
                        backlog.bytes -= next.frame.len();
                        next
                    }
                    None => {
                        backlogs.remove(&key);
                        return;
                    }
                }
            };
            let deadline = Instant::now() + shared.config.slow_consumer_timeout;
            let frame = &next.frame;
            let pushed = session
                .outbound()
                .push(frame.len(), deadline, |out| out.extend_from_slice(frame))
                .await;
            if pushed.is_ok() {
                continue;
            }
            let mut dropped = vec![next];
            if let Some(backlog) = self
                .backlogs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key)
            {
                dropped.extend(backlog.frames);
            }
            if pushed == Err(super::outbound::PushError::Full) && session.outbound().abort() {
                shared.registry.remove(session);
                warn!(
                    user = session.name(),
                    "disconnected slow consumer: outbound queue stayed full for {:?} \
                     (messages from another node)",
                    shared.config.slow_consumer_timeout
                );
            }
            self.refuse(shared, dropped, &slow_consumer_text(session.name()))
                .await;
            return;
        }
    }

    /// Tells the senders of `dropped` (on whichever node) that their
    /// messages were not delivered, because of `text`.
    async fn refuse(&self, shared: &Shared, dropped: Vec<Waiting>, text: &str) {
        for waiting in dropped {
            let error = Record::Error {
                to: &waiting.from,
                text: text.as_bytes(),
            };
            let patience = shared.config.slow_consumer_timeout;
            let _ = self.send(&waiting.origin, &error, patience).await;
        }
    }

    /// Leaves the cluster at shutdown: gives up every name and this node's
    /// own lease at once, rather than letting them run out.
    pub(crate) async fn leave(&self, shared: &Shared) {
        for name in shared.registry.local_names() {
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

/// Tells the senders of the messages in a batch that could not be
/// published that they were not delivered.
fn refuse_batch(shared: &Shared, batch: &[u8]) {
    let Some((_, records)) = decode_batch(batch) else {
        return;
    };
    let mut touched = Vec::new();
    for record in records {
        let Record::Message { to, from, .. } = record else {
            continue;
        };
        let Some(sender) = shared.registry.get(from) else {
            continue;
        };
        let text = unreachable_text(to);
        let frame = sender.wire().error_frame(&text);
        if let Ok(true) = sender
            .outbound()
            .try_push_deferred(frame.len(), |out| out.extend_from_slice(&frame))
        {
            touched.push(sender);
        }
    }
    flush_all(&mut touched);
}

/// Writes every queue a delivery made non-empty.
fn flush_all(sessions: &mut Vec<Arc<Session>>) {
    for session in sessions.drain(..) {
        match session.connection() {
            Some(connection) => session.outbound().flush_direct(&connection),
            None => session.outbound().wake_writer(),
        }
    }
}

/// `+NODE NAME` or `-NODE NAME` from the presence channel.
fn presence_event(shared: &Shared, me: &str, event: &[u8]) {
    let Ok(event) = std::str::from_utf8(event) else {
        return;
    };
    let (joined, rest) = match event.split_at_checked(1) {
        Some(("+", rest)) => (true, rest),
        Some(("-", rest)) => (false, rest),
        _ => return,
    };
    let Some((node, name)) = rest.split_once(' ') else {
        return;
    };
    if node == me {
        return;
    }
    if joined {
        shared.registry.remote_joined(name, node);
    } else {
        shared.registry.remote_left(name, node);
    }
}

/// Reads every name held by another live node into the registry's
/// directory, from the set of nodes and each node's set of names (no
/// `SCAN`: on a Redis Cluster that would have to visit every shard).
async fn load_directory(
    shared: &Shared,
    me: &str,
    connection: &mut Commands,
) -> redis::RedisResult<()> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(NODES_KEY)
        .query_async(connection)
        .await?;
    let mut directory = Vec::new();
    for node in nodes.iter().filter(|node| *node != me) {
        let alive: i64 = redis::cmd("EXISTS")
            .arg(node_key(node))
            .query_async(connection)
            .await?;
        if alive == 0 {
            continue;
        }
        let keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(names_key(node))
            .query_async(connection)
            .await?;
        directory.extend(keys.iter().filter_map(|key| {
            let name = key.strip_prefix("pmchat:name:")?;
            Some((name.to_string(), node.clone()))
        }));
    }
    shared.registry.replace_remote(directory);
    Ok(())
}

/// Forgets the names of nodes whose own lease ran out (they died).
async fn check_nodes(shared: &Shared, connection: &mut Commands) -> redis::RedisResult<()> {
    for node in shared.registry.remote_nodes() {
        let alive: i64 = redis::cmd("EXISTS")
            .arg(node_key(&node))
            .query_async(connection)
            .await?;
        if alive == 0 {
            let forgotten = shared.registry.forget_node(&node);
            info!(
                node = &*node,
                "cluster: node gone; {forgotten} name(s) freed"
            );
            // Its keys, which would otherwise wait for a claim to replace
            // them (every node that noticed does this; it is idempotent).
            let keys: Vec<String> = redis::cmd("SMEMBERS")
                .arg(names_key(&node))
                .query_async(connection)
                .await?;
            for key in keys {
                let _: i64 = release_script()
                    .key(key)
                    .arg(&*node)
                    .invoke_async(connection)
                    .await?;
            }
            for (command, key) in [("DEL", names_key(&node)), ("SREM", NODES_KEY.to_string())] {
                let mut cmd = redis::cmd(command);
                cmd.arg(key);
                if command == "SREM" {
                    cmd.arg(&*node);
                }
                let _: i64 = cmd.query_async(connection).await?;
            }
        }
    }
    Ok(())
}

/// Sets the name `KEYS[1]` to the node `ARGV[2]` if its holder is still `ARGV[1]`
/// (empty: nobody). 1 if set.
/// True when Redis answered, but not to this node's password (or lack of
/// one): retrying helps only once the operator fixes one side.
fn refused_credentials(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}

fn swap_script() -> redis::Script {
    redis::Script::new(
        "local holder = redis.call('GET', KEYS[1]) or ''
         if holder ~= ARGV[1] then return 0 end
         redis.call('SET', KEYS[1], ARGV[2])
         return 1",
    )
}

/// Deletes the name `KEYS[1]` only if the node `ARGV[1]` holds it. 1 if
/// deleted.
fn release_script() -> redis::Script {
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
    fn inbox_batches_round_trip_and_stop_at_garbage() {
        let mut batch = Vec::new();
        put_short(&mut batch, b"node1");
        let records = [
            Record::Message {
                to: b"bob",
                from: b"alice",
                content: "hé".as_bytes(),
            },
            Record::Error {
                to: b"alice",
                text: b"'carol' is not connected\n",
            },
            Record::Kick { name: b"dave" },
        ];
        for record in &records {
            let before = batch.len();
            record.encode(&mut batch);
            assert_eq!(batch.len() - before, record.len());
        }
        let (origin, decoded) = decode_batch(&batch).unwrap();
        assert_eq!(origin, b"node1");
        assert_eq!(decoded, records);
        // A truncated record and an unknown kind end the batch.
        batch.extend_from_slice(b"M\x05bo");
        assert_eq!(decode_batch(&batch).unwrap().1.len(), 3);
        batch.truncate(batch.len() - 4);
        batch.push(b'Z');
        assert_eq!(decode_batch(&batch).unwrap().1.len(), 3);
        assert!(decode_batch(b"\x09short").is_none());
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(new_node_id(), new_node_id());
        assert_eq!(new_node_id().len(), 16);
    }
}
