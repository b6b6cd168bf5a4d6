//! The chat server: accept loop, shared state and shutdown.
//!
//! Event flow, one way only: socket → a session's reader decodes a frame →
//! its router looks the recipient up in the [`Registry`] (cached per
//! sender) → the frame is encoded once into the recipient's bounded
//! [`outbound::OutboundQueue`] → at the end of the read batch the sender's
//! reader writes that queue to the recipient's socket itself when nobody is
//! writing it (the direct write), else the recipient's writer task does.
//! There is no central router task: every session routes its own messages.
//! Each session lives on one worker thread ([`crate::net::workers`]), handed
//! over once when it is accepted; the accept loop, the housekeeping and the
//! timers run on the caller's thread, under async-io.
//!
//! Modules:
//! - connections: `admission` (every step from an accepted socket to a
//!   logged-in session, and the one place a refusal is sent), `connection`
//!   (a logged-in connection's read and write loops), `refusal` (what a
//!   refused login is told, and how), `wire` (what a
//!   connection speaks, and whether its errors carry codes; the byte
//!   stream under it is [`crate::net::transport`]), `tls` (certificates and the
//!   accept step; `certificate` reads their dates);
//! - logins: `accounts` (registered names: the file and its hashes),
//!   `auth` (the password check and its back-off, before a registered
//!   name is claimed; `device` the tokens that exempt a known device from
//!   that back-off), `pending` (telling a client its login is being worked
//!   on), `bans` (names kept out);
//! - routing: `mailbox` (what others need to reach a logged-in user: the
//!   `Mailbox` type), `router` (one sender's routing; `router/across` the
//!   cross-node side, boxed), `registry` (who is
//!   online, presence), `outbound` (the bounded queue);
//! - operating: `config`/`cli` (settings; `config_file` the `--config`
//!   TOML file and its re-reading), `handle` (what the operator may
//!   ask of a running server), `console` (the operator on stdin;
//!   `terminal` when it is a terminal; `commands` what both it and the
//!   control socket run), `stats` (what the server counts),
//!   `metrics` (`--metrics`: Prometheus's text at `GET /metrics`),
//!   `admin` (`--admin-socket`: the console's commands on a Unix socket);
//! - `cluster` (several nodes as one server, through Redis:
//!   `cluster/mod.rs` lists its parts), `redis_io` (the sockets under its
//!   Redis connections).
//!
//! The texts of every error a client is sent, with their codes, are
//! [`crate::wire::texts`].
//!
//! [`Server::run`] takes its listener and its shutdown signal from the
//! caller, so tests and the binary alike bind where they want (port 0
//! included) and stop it when they want.

pub mod accounts;
mod admin;
mod admission;
mod auth;
pub mod bans;
mod certificate;
pub mod cli;
mod cluster;
pub mod commands;
pub mod config;
pub mod config_file;
mod connection;
pub mod console;
mod device;
mod handle;
mod inbox;
mod keys;
mod mailbox;
mod metrics;
mod outbound;
mod pending;
mod redis_io;
mod refusal;
mod registry;
mod router;
pub mod stats;
mod stream_inbox;
mod terminal;
#[cfg(test)]
mod testing;
pub mod tls;
mod wire;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_listener::{listener, Event};
use smol::future::FutureExt;
use smol::{Async, Timer};
use tracing::{info, warn};

use crate::net::workers::Workers;
pub use admin::{request as admin_request, AdminReply, AdminSocket};
use admission::Admission;
pub use config::Config;
pub use handle::{Account, ClusterState, ServerHandle};
pub use metrics::{MetricsEndpoint, Snapshot};
use registry::Registry;
pub use terminal::restore as restore_terminal;
pub use terminal::start as start_console;
pub use wire::Wire;

/// State every connection task shares.
pub(crate) struct Shared {
    /// Settings, fixed for the server's life.
    pub(crate) config: Config,
    /// Who is online.
    pub(crate) registry: Arc<Registry>,
    /// Runs the sessions: each connection is handed to one worker.
    pub(crate) workers: Arc<Workers>,
    /// Fires once when the server begins to stop.
    pub(crate) shutdown: ShutdownSignal,
    /// Open connections, for `--max-clients` and for waiting at shutdown.
    connections: ConnectionCount,
    /// Registered names: the accounts, the password checker, the back-off.
    pub(crate) auth: Option<auth::AuthState>,
    /// This node's part in a cluster (`--cluster`).
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    /// Names the operator keeps out.
    pub(crate) bans: bans::Bans,
    /// Registered users' inboxes, with `--store`.
    pub(crate) inboxes: Option<inbox::Inboxes>,
    /// Registered users' inboxes on the cluster's Redis, with `--cluster`
    /// and `--accounts`.
    pub(crate) stream_inboxes: Option<stream_inbox::StreamInboxes>,
    /// What the server counts (`--metrics`, `stats`).
    pub(crate) stats: Arc<stats::Stats>,
    /// The settings a re-read config file may change while it runs.
    pub(crate) live: LiveSettings,
    /// Registered devices' public keys (the `keys` extension), with
    /// `--accounts` on a single node.
    pub(crate) keys: Option<keys::KeyDirectory>,
}

/// Settings that may change while the server runs (SIGHUP with
/// `--config`), read where they apply: the rest of [`Config`] is fixed.
pub(crate) struct LiveSettings {
    /// `--max-clients`: new connections past it are refused (open ones
    /// stay).
    pub(crate) max_clients: AtomicUsize,
    /// `--registered-only`: new logins to other names are refused (open
    /// sessions stay).
    pub(crate) registered_only: AtomicBool,
}

/// What `chat-server history` does to a registered name's log in a
/// cluster's Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAction {
    /// Writes the log as JSON lines, oldest first.
    Export,
    /// Deletes the log.
    Purge,
}

/// `chat-server history export|purge URL NAME`: exports `name`'s log in
/// the Redis at `url` (as given to `--cluster`) to `out`, or deletes it;
/// how many entries.
pub fn history_in_redis(
    url: &str,
    name: &str,
    action: LogAction,
    out: &mut impl std::io::Write,
) -> Result<u64, String> {
    cluster::Cluster::history_in_redis(url, name, action == LogAction::Purge, out)
}

impl Shared {
    /// Connections open now (logged in or still being admitted).
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.open.load(Ordering::Acquire)
    }

    /// True if registered names have inboxes, in the store or in Redis.
    pub(crate) fn has_inboxes(&self) -> bool {
        self.inboxes.is_some() || self.stream_inboxes.is_some()
    }
}

/// A one-shot broadcast: "stop now".
#[derive(Default)]
pub(crate) struct ShutdownSignal {
    triggered: AtomicBool,
    event: Event,
}

impl ShutdownSignal {
    pub(crate) fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub(crate) async fn wait(&self) {
        while !self.triggered.load(Ordering::SeqCst) {
            listener!(self.event => fired);
            if self.triggered.load(Ordering::SeqCst) {
                return;
            }
            fired.await;
        }
    }
}

/// Counts open connections and says when the last one is gone.
#[derive(Default)]
struct ConnectionCount {
    open: AtomicUsize,
    drained: Event,
}

/// One counted connection; dropping it uncounts it.
struct ConnectionSlot<'a>(&'a ConnectionCount);

impl ConnectionCount {
    fn try_open(&self, max: usize) -> Option<ConnectionSlot<'_>> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self))
    }

    async fn wait_drained(&self) {
        while self.open.load(Ordering::Acquire) > 0 {
            listener!(self.drained => drained);
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify(usize::MAX);
            release_free_memory();
        }
    }
}

/// How often idle sessions' outbound buffers are handed back: a buffer
/// unused for one whole period is freed, so a session that went quiet after
/// a burst is back to its small fixed size within two periods.
const TRIM_PERIOD: Duration = Duration::from_millis(400);
/// How often the TLS certificate's expiry is looked at again.
const CERTIFICATE_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Hands freed memory back to the system: when the last connection is gone,
/// and after idle sessions gave their buffers back. glibc keeps freed heap
/// pages otherwise, and the RSS of a server that once held many busy
/// connections would never come down.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Backs off and rate-limits the log while `accept` keeps failing (for
/// example at the open-files limit): the first failure is logged at once,
/// later ones as one line with a count per [`ACCEPT_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct AcceptFailures {
    /// Failures in a row, for the back-off.
    streak: u32,
    /// Failures not yet logged.
    unreported: u64,
    /// When the last log line about failures was written.
    last_logged: Option<std::time::Instant>,
}

/// At most one log line about failed accepts per interval.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// First and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));

impl AcceptFailures {
    /// Records a failure; returns how long to pause before the next try.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.streak = self.streak.saturating_add(1);
        self.unreported += 1;
        let now = std::time::Instant::now();
        match self.last_logged {
            None => {
                warn!("accept failed: {error}; retrying with back-off");
                self.unreported = 0;
                self.last_logged = Some(now);
            }
            Some(at) if now.duration_since(at) >= ACCEPT_LOG_INTERVAL => {
                warn!(
                    "accept failed {} more time(s) in the last {:?}: {error}",
                    self.unreported,
                    now.duration_since(at)
                );
                self.unreported = 0;
                self.last_logged = Some(now);
            }
            Some(_) => {}
        }
        let (first, longest) = ACCEPT_BACKOFF;
        first
            .saturating_mul(1 << self.streak.min(16).saturating_sub(1))
            .min(longest)
    }

    /// An accept succeeded: the next failure starts a new episode.
    fn recovered(&mut self) {
        if self.last_logged.is_none() {
            return;
        }
        if self.unreported > 0 {
            warn!(
                "accept failed {} more time(s) before it recovered",
                self.unreported
            );
        }
        info!("accepting connections again");
        *self = AcceptFailures::default();
    }
}

/// A chat server, ready to [`run`](Server::run) on a listener.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// A server with these settings whose sessions run on `workers`; an
    /// error only for a `--cluster` URL that does not parse or a
    /// `--cluster-key-file` that cannot be used.
    pub fn new(config: Config, workers: Arc<Workers>) -> Result<Self, String> {
        let key = config
            .cluster_key_file
            .as_deref()
            .map(cluster::ClusterKey::load)
            .transpose()?;
        let auth = config.accounts.as_ref().map(|accounts| {
            // Every node accepts every node's device tokens: with the
            // cluster key, their secret comes from it.
            let tokens = match &key {
                Some(key) => device::DeviceTokens::new(&key.derive(b"device tokens")),
                None => device::DeviceTokens::load_or_create(&device::key_path(accounts.path())),
            };
            auth::AuthState::new(Arc::clone(accounts), tokens)
        });
        let registry = Arc::new(Registry::default());
        let stats = Arc::new(stats::Stats::new(workers.count()));
        let live = LiveSettings {
            max_clients: AtomicUsize::new(config.max_clients),
            registered_only: AtomicBool::new(config.registered_only),
        };
        let cluster = config
            .cluster
            .as_deref()
            .map(|url| {
                let local = cluster::Local {
                    registry: Arc::clone(&registry),
                    limits: config.limits,
                    slow_consumer_timeout: config.slow_consumer_timeout,
                    queue_bytes: config.queue_bytes,
                    retention: config.retention,
                    wait_replicas: config.cluster_wait,
                    stats: Arc::clone(&stats),
                };
                let lease = config.cluster_lease;
                let ca = config.cluster_ca.as_deref();
                cluster::Cluster::new(url, key, ca, lease, local).map(Arc::new)
            })
            .transpose()?;
        let inboxes = match (&config.store, &config.accounts) {
            (Some(store), Some(accounts)) => {
                Some(inbox::Inboxes::new(Arc::clone(store), Arc::clone(accounts)))
            }
            _ => None,
        };
        let stream_inboxes = match (&cluster, &config.accounts) {
            (Some(cluster), Some(accounts)) => Some(stream_inbox::StreamInboxes::new(
                Arc::clone(cluster),
                Arc::clone(accounts),
            )),
            _ => None,
        };
        let keys = match (&config.accounts, &config.store, &cluster) {
            (None, ..) => None,
            (Some(_), _, Some(cluster)) => Some(keys::KeyDirectory::Redis(Arc::clone(cluster))),
            (Some(_), Some(store), None) => Some(keys::KeyDirectory::Store(Arc::clone(store))),
            (Some(_), None, None) => Some(keys::KeyDirectory::Memory(Default::default())),
        };
        Ok(Server {
            shared: Arc::new(Shared {
                keys,
                inboxes,
                stream_inboxes,
                auth,
                config,
                registry,
                workers,
                shutdown: ShutdownSignal::default(),
                connections: ConnectionCount::default(),
                cluster,
                bans: bans::Bans::default(),
                stats,
                live,
            }),
        })
    }

    /// Binds `addr` for `--metrics` (its thread starts with
    /// [`MetricsEndpoint::spawn`]).
    pub fn metrics_endpoint(&self, addr: SocketAddr) -> std::io::Result<MetricsEndpoint> {
        MetricsEndpoint::bind(addr, Arc::clone(&self.shared))
    }

    /// A handle for listing and kicking users and for stopping the server.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::new(Arc::clone(&self.shared))
    }

    /// Accepts connections until `shutdown` completes (or a handle asks to
    /// stop), then tells every client, flushes and closes within the flush
    /// timeout.
    pub async fn run(self, listener: Async<TcpListener>, shutdown: impl Future<Output = ()>) {
        let shared = &self.shared;
        let accept_loop = async {
            let mut failures = AcceptFailures::default();
            loop {
                // The plain socket, not registered with async-io: the
                // worker it goes to registers it with its own epoll.
                match listener.read_with(|listener| listener.accept()).await {
                    Ok((stream, peer)) => {
                        failures.recovered();
                        self.hand_to_worker(stream, peer);
                    }
                    Err(e) => {
                        // Typically out of file descriptors: the pending
                        // connection stays queued and the listener stays
                        // readable, so retrying at once would spin. Back
                        // off; the existing clients keep working.
                        let pause = failures.failed(&e);
                        Timer::after(pause).await;
                    }
                }
            }
        };
        let housekeeping = async {
            let mut ticks: u32 = 0;
            let mut certificate_checked = std::time::Instant::now();
            loop {
                Timer::after(TRIM_PERIOD).await;
                ticks = ticks.wrapping_add(1);
                // Once a day: a certificate about to expire is said again.
                if certificate_checked.elapsed() >= CERTIFICATE_CHECK_EVERY {
                    certificate_checked = std::time::Instant::now();
                    if let Some(tls) = &shared.config.tls {
                        tls.warn_if_expiring();
                    }
                }
                if let Some(auth) = &shared.auth {
                    // A stat per period: `chat-server passwd` takes effect
                    // within half a second, without a signal.
                    if let Some(reloaded) = auth.accounts.reload_if_changed() {
                        let store = shared.config.store.as_deref();
                        accounts::log_reload(&reloaded, "changed on disk", store);
                    }
                    if ticks % 25 == 0 {
                        auth.backoff.forget_stale(std::time::Instant::now());
                    }
                }
                let mut freed = 0;
                shared
                    .registry
                    .for_each(|session| freed += session.outbound().trim_idle());
                if freed > 0 {
                    release_free_memory();
                }
            }
        };
        // On the background thread, where the Redis connections' drivers
        // run too: a message crossing nodes then wakes one thread fewer on
        // each side. Dropped (cancelled) at shutdown.
        let in_cluster = shared
            .cluster
            .clone()
            .map(|cluster| crate::net::background::spawn(async move { cluster.run().await }));
        accept_loop
            .or(housekeeping)
            .or(shutdown)
            .or(shared.shutdown.wait())
            .await;
        crate::systemd::stopping();
        drop(in_cluster);
        drop(listener);
        shared.registry.go_quiet();
        let open = shared.connections.open.load(Ordering::Acquire);
        info!("shutting down; closing {open} connection(s)");
        shared.shutdown.trigger();
        let drained = crate::runtime::timeout(
            shared.config.flush_timeout,
            shared.connections.wait_drained(),
        );
        if drained.await.is_none() {
            warn!(
                "{} connection(s) still open after {:?}; closing them",
                shared.connections.open.load(Ordering::Acquire),
                shared.config.flush_timeout
            );
        }
        if let Some(cluster) = &shared.cluster {
            let leaving = crate::runtime::timeout(shared.config.flush_timeout, cluster.leave());
            if leaving.await.is_none() {
                warn!("cluster: could not give the names up in time; their leases run out");
            }
        }
        info!("stopped");
    }

    /// Hands a new connection to the next worker, where it is admitted
    /// and then lives until it closes.
    fn hand_to_worker(&self, stream: TcpStream, peer: SocketAddr) {
        let shared = Arc::clone(&self.shared);
        self.shared.workers.spawn(async move {
            // Built in a block of its own, so that nothing of admission
            // (its boxed state, its outcome) stays in this task's future
            // while the connection is served.
            let serving = {
                // Boxed: the state of admission's steps is large.
                let admission = Box::pin(admission::admit(&shared, stream, peer)).await;
                match admission {
                    Admission::Admitted(admitted) => {
                        shared.stats.accepted(admitted.transport.is_tls());
                        shared.stats.login(None);
                        connection::serve(&shared, admitted)
                    }
                    // The one place a refusal is sent.
                    Admission::Refused(transport, refusal) => {
                        shared.stats.accepted(transport.is_tls());
                        shared.stats.login(Some(refusal.error.code()));
                        refusal.send(&transport, shared.config.linger).await;
                        return;
                    }
                    Admission::Gone => return,
                }
            };
            serving.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_up_to_a_second() {
        let mut failures = AcceptFailures::default();
        let error = std::io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..10).map(|_| failures.failed(&error)).collect();
        assert_eq!(pauses[0], Duration::from_millis(20));
        assert_eq!(pauses[1], Duration::from_millis(40));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pauses[9], Duration::from_secs(1));
        // Logged once so far; the other nine wait for the interval.
        assert_eq!(failures.unreported, 9);
        failures.recovered();
        assert_eq!(failures.failed(&error), Duration::from_millis(20));
    }
}
