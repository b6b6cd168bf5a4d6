//! Integration tests of `chat-server`, through the real binary and raw v1
//! bytes on ephemeral ports.

mod common;

#[path = "server/certificates.rs"]
mod certificates;
#[path = "server/cluster.rs"]
mod cluster;
#[path = "server/cluster_attacks.rs"]
mod cluster_attacks;
#[path = "server/cluster_failover.rs"]
mod cluster_failover;
#[path = "server/cluster_inbox.rs"]
mod cluster_inbox;
#[path = "server/cluster_key.rs"]
mod cluster_key;
#[path = "server/cluster_versions.rs"]
mod cluster_versions;
#[path = "server/codes.rs"]
mod codes;
#[path = "server/gob.rs"]
mod gob;
#[path = "server/hardening.rs"]
mod hardening;
#[path = "server/in_process.rs"]
mod in_process;
#[path = "server/keys.rs"]
mod keys;
#[path = "server/lifecycle.rs"]
mod lifecycle;
#[path = "server/limits.rs"]
mod limits;
#[path = "server/routing.rs"]
mod routing;
#[path = "server/sealed.rs"]
mod sealed;
#[path = "server/service.rs"]
mod service;
#[path = "server/store.rs"]
mod store;
