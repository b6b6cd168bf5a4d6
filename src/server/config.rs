//! Server settings, independent of how they were given (flags, tests).

use std::sync::Arc;
use std::time::Duration;

use super::accounts::Accounts;
use super::tls::ServerTls;
use super::wire::Wire;
use crate::wire::v1::Limits;

/// Everything a running server needs to know; built from the command line
/// by [`super::cli::ServerArgs::config`] or directly by tests.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size limits checked on every header a client sends.
    pub limits: Limits,
    /// Connections allowed at once (logged in or still handshaking); one more
    /// is told `server is full` and closed.
    pub max_clients: usize,
    /// How long a new connection may take to send its handshake.
    pub handshake_timeout: Duration,
    /// How long the body of a frame may take once its header has arrived.
    pub frame_timeout: Duration,
    /// How long a sender waits for room in a full recipient queue before the
    /// recipient is disconnected as a slow consumer.
    pub slow_consumer_timeout: Duration,
    /// Bytes of encoded frames one session may have waiting to be written.
    pub queue_bytes: usize,
    /// How long queued frames may take to flush when a connection or the
    /// whole server closes.
    pub flush_timeout: Duration,
    /// How long input is read and discarded after an error frame, so the
    /// close does not turn into a reset that destroys the error in flight.
    pub linger: Duration,
    /// TLS, if enabled: connections that open with a TLS handshake get it.
    pub tls: Option<Arc<ServerTls>>,
    /// Refuse plain (non-TLS) connections.
    pub require_tls: bool,
    /// Registered names and their password hashes, if any.
    pub accounts: Option<Arc<Accounts>>,
    /// Refuse names that are not registered.
    pub registered_only: bool,
    /// The store of messages that wait (`--store`), already open.
    pub store: Option<Arc<crate::store::Store>>,
    /// How much of each registered user's log is kept, in the store or,
    /// with `--cluster`, in Redis.
    pub retention: crate::store::Retention,
    /// Sessions a registered name fed from its inbox may have at once.
    pub max_devices: usize,
    /// Check passwords sent over plain TCP too (normally refused unseen).
    pub allow_plaintext_passwords: bool,
    /// The Redis that makes this node one of several (`--cluster`).
    pub cluster: Option<String>,
    /// The CA that signed Redis's certificate (`--cluster-ca`).
    pub cluster_ca: Option<std::path::PathBuf>,
    /// The nodes' shared secret (`--cluster-key-file`).
    pub cluster_key_file: Option<std::path::PathBuf>,
    /// Replicas that must have a stored message before its sender hears
    /// so (`--cluster-wait`).
    pub cluster_wait: u32,
    /// How long a node's names outlive it (`--cluster-lease`).
    pub cluster_lease: std::time::Duration,
    /// What a connection that has sent nothing after its username is
    /// spoken to in (`--default-wire`).
    pub default_wire: Wire,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            max_clients: 10_000,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            slow_consumer_timeout: Duration::from_secs(5),
            queue_bytes: 256 * 1024,
            flush_timeout: Duration::from_secs(2),
            linger: Duration::from_secs(1),
            tls: None,
            require_tls: false,
            accounts: None,
            registered_only: false,
            store: None,
            retention: crate::store::Retention::default(),
            max_devices: 8,
            allow_plaintext_passwords: false,
            cluster: None,
            cluster_key_file: None,
            cluster_wait: 0,
            cluster_lease: super::cluster::LEASE,
            cluster_ca: None,
            default_wire: Wire::V1,
        }
    }
}
