//! The operator's handle on a running server: what the console (and, in
//! time, a control socket) may ask of it. Every call returns without
//! waiting on a worker; one that needs the cluster is spawned where the
//! cluster's connection lives and answered on a channel.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{accounts, tls, Shared};
use crate::wire::texts::{Code, ErrorText};

/// The longest the console waits for the cluster to answer one of its
/// commands: every cluster command is bounded by the Redis timeout (2 s),
/// a connection not there yet by as much again.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// A cheap handle for controlling a running server (the console uses it).
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

/// What the console's `cluster` shows.
pub struct ClusterState {
    /// This node's id.
    pub node: String,
    /// Other nodes known to be live.
    pub live_nodes: usize,
    /// Records read from Redis that broke a rule and were dropped.
    pub rejected: u64,
}

/// A registered name, as the console's `accounts` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub online: bool,
    /// Messages kept in its history (with `--store`).
    pub stored: Option<u64>,
}

impl ServerHandle {
    pub(super) fn new(shared: Arc<Shared>) -> ServerHandle {
        ServerHandle { shared }
    }

    /// The cluster's state as this node sees it; `None` without
    /// `--cluster`.
    pub fn cluster(&self) -> Option<ClusterState> {
        let cluster = self.shared.cluster.as_ref()?;
        Some(ClusterState {
            node: cluster.node_id().to_string(),
            live_nodes: cluster.live_nodes(),
            rejected: cluster.rejected(),
        })
    }

    /// Online usernames, sorted.
    pub fn online(&self) -> Vec<String> {
        self.shared.registry.names()
    }

    /// The worker thread `name`'s session runs on, if `name` is online.
    pub fn worker_of(&self, name: &str) -> Option<usize> {
        self.shared.registry.get(name.as_bytes())?.worker()
    }

    /// Disconnects `name` with an error frame saying so (asking the node
    /// that holds it, in a cluster); false if nobody by that name is online.
    pub fn kick(&self, name: &str) -> bool {
        // A registered name may have sessions on several nodes too.
        let mut elsewhere = match &self.shared.cluster {
            Some(cluster) => cluster.device_nodes(name),
            None => Vec::new(),
        };
        if let Some(node) = self.shared.registry.remote_node(name.as_bytes()) {
            if !elsewhere.contains(&node) {
                elsewhere.push(node);
            }
        }
        let mut kicked = false;
        for node in elsewhere {
            let (owned, holder) = (name.to_string(), Arc::clone(&node));
            let asked = self
                .on_cluster(move |shared| async move {
                    shared.cluster.as_ref()?.kick(&holder, &owned).await.ok()
                })
                .is_some();
            if asked {
                info!(
                    user = name,
                    node = &*node,
                    "asked the node holding it to kick it"
                );
            }
            kicked |= asked;
        }
        let Some(session) = self.shared.registry.get(name.as_bytes()) else {
            return kicked;
        };
        // Every device of the name: the next stands for it once the
        // one before is removed.
        let mut session = session;
        loop {
            self.shared.registry.remove(&session);
            if session.close_with_error(&ErrorText::of(Code::Kicked)) {
                info!(peer = %session.peer(), user = name, "kicked by the operator");
            }
            match self.shared.registry.get(name.as_bytes()) {
                Some(next) if !Arc::ptr_eq(&next, &session) => session = next,
                _ => return true,
            }
        }
    }

    /// Keeps `name` out for `duration` (`None`: until [`ServerHandle::unban`]),
    /// on every node of a cluster, and disconnects it if it is online.
    /// Returns whether it was online; `Err` when the ban could not reach
    /// the cluster's Redis (this node keeps it out all the same).
    ///
    /// In a cluster the ban lives in Redis only, so that any node's
    /// operator can lift it; without Redis it cannot be set (`Err`).
    pub fn ban(&self, name: &str, duration: Option<Duration>) -> Result<bool, String> {
        match &self.shared.cluster {
            Some(_) => {
                let owned = name.to_string();
                self.on_cluster(move |shared| async move {
                    shared.cluster.as_ref()?.ban(&owned, duration).await.ok()
                })
                .ok_or_else(|| "not banned: the cluster's Redis is unreachable".to_string())?;
            }
            None => self
                .shared
                .bans
                .ban(name, duration, std::time::Instant::now()),
        }
        info!(user = name, ?duration, "banned by the operator");
        Ok(self.kick(name))
    }

    /// Runs `work` on the background thread, where the cluster's
    /// connection lives, and waits for its answer on the calling thread
    /// (the console's) without running an executor there. `None` without a
    /// cluster, when `work` answers `None`, or when no answer came within
    /// [`ANSWER_WAIT`].
    fn on_cluster<T, F>(&self, work: impl FnOnce(Arc<Shared>) -> F) -> Option<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Option<T>> + Send + 'static,
    {
        self.shared.cluster.as_ref()?;
        let future = work(Arc::clone(&self.shared));
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        crate::net::background::spawn(async move {
            let _ = answer.send(future.await);
        })
        .detach();
        answered.recv_timeout(ANSWER_WAIT).ok().flatten()
    }

    /// Lifts `name`'s ban (everywhere, in a cluster); false if it had none.
    pub fn unban(&self, name: &str) -> Result<bool, String> {
        let lifted = match &self.shared.cluster {
            Some(_) => {
                let owned = name.to_string();
                self.on_cluster(move |shared| async move {
                    shared.cluster.as_ref()?.unban(&owned).await.ok()
                })
                .ok_or_else(|| "the cluster's Redis is unreachable; try again".to_string())?
            }
            None => self.shared.bans.unban(name, std::time::Instant::now()),
        };
        if lifted {
            info!(user = name, "ban lifted by the operator");
        }
        Ok(lifted)
    }

    /// Reads the TLS certificate and key again, for new connections;
    /// `None` when TLS is off.
    pub fn reload_tls(&self) -> Option<Result<(), tls::TlsError>> {
        let tls = self.shared.config.tls.as_ref()?;
        let reloaded = tls.reload();
        match &reloaded {
            Ok(()) => info!("TLS certificate reloaded"),
            Err(e) => warn!("TLS certificate not reloaded: {e}"),
        }
        Some(reloaded)
    }

    /// Reads the accounts file again; `None` without `--accounts`. On error
    /// the accounts stay as they were; `force` loads a version that
    /// unregisters most names at once (see [`accounts::Accounts::reload`]).
    pub fn reload_accounts(
        &self,
        force: bool,
    ) -> Option<Result<accounts::Reloaded, accounts::AccountsError>> {
        let auth = self.shared.auth.as_ref()?;
        let reloaded = auth.accounts.reload(force);
        let why = if force { "forced" } else { "asked to" };
        accounts::log_reload(&reloaded, why, self.shared.config.store.as_deref());
        Some(reloaded)
    }

    /// Registered names, sorted, each with whether it is online now;
    /// `None` without `--accounts`.
    pub fn accounts(&self) -> Option<Vec<Account>> {
        let auth = self.shared.auth.as_ref()?;
        let table = auth.accounts.table();
        let store = self.shared.config.store.as_ref();
        let names: Vec<String> = table.names().map(str::to_string).collect();
        // Across nodes the logs are in Redis: counted there, all at once,
        // on the background thread (the console waits for the answer).
        let in_redis: Option<Vec<Option<u64>>> = match &self.shared.stream_inboxes {
            Some(_) => {
                let asked = names.clone();
                self.on_cluster(move |shared| async move {
                    let cluster = shared.cluster.as_ref()?;
                    let mut counts = Vec::with_capacity(asked.len());
                    for name in &asked {
                        counts.push(cluster.log_count(name).await.ok());
                    }
                    Some(counts)
                })
            }
            None => None,
        };
        Some(
            names
                .iter()
                .enumerate()
                .map(|(i, name)| Account {
                    name: name.clone(),
                    online: self.shared.registry.get(name.as_bytes()).is_some(),
                    // Read on the console's thread; a store that cannot
                    // be read shows no count.
                    stored: match &in_redis {
                        Some(counts) => counts.get(i).copied().flatten(),
                        None => store.and_then(|store| store.count(name).ok()),
                    },
                })
                .collect(),
        )
    }

    /// `name`'s stored history as JSON lines, oldest first (the format
    /// of `chat-server history export`), from the store or, across
    /// nodes, from Redis.
    pub fn export_history(&self, name: &str) -> Result<String, String> {
        let mut out = Vec::new();
        if let Some(store) = &self.shared.config.store {
            store.export(name, &mut out).map_err(|e| e.to_string())?;
        } else if self.shared.stream_inboxes.is_some() {
            // Read where the cluster's connection lives, as the console's
            // other questions to the cluster are.
            let owned = name.to_string();
            out = self
                .on_cluster(move |shared| async move {
                    let mut lines = Vec::new();
                    let cluster = shared.cluster.as_ref()?;
                    cluster.export_log(&owned, &mut lines).await.ok()?;
                    Some(lines)
                })
                .ok_or("the cluster's Redis is unreachable; try again")?;
        } else {
            return Err(
                "no stored history (start the server with --store, or --cluster and --accounts)"
                    .into(),
            );
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    /// Changes the settings that may change while the server runs (a
    /// re-read config file): `--max-clients` and `--registered-only`,
    /// for new connections and logins.
    pub fn set_live(&self, max_clients: usize, registered_only: bool) {
        let live = &self.shared.live;
        let registered_only = registered_only && self.shared.auth.is_some();
        live.max_clients
            .store(max_clients, std::sync::atomic::Ordering::Relaxed);
        live.registered_only
            .store(registered_only, std::sync::atomic::Ordering::Relaxed);
    }

    /// Everything the server counts and measures, now (`stats`).
    pub fn stats(&self) -> super::Snapshot {
        super::metrics::snapshot(&self.shared)
    }

    /// Starts a shutdown, as `exit` on the console or SIGTERM does.
    pub fn shutdown(&self) {
        self.shared.shutdown.trigger();
    }
}
