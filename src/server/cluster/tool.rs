//! `chat-server history export|purge URL NAME`: a registered name's log in
//! the cluster's Redis, read or deleted by the operator from outside any
//! node (as `--store`'s file is by `chat-server history export|purge
//! FILE NAME`). The tool connects as a node would, but joins nothing: no
//! lease, no names, no subscriptions acted on.

use std::io::Write;
use std::sync::Arc;

use super::inbound::Inbound;
use super::{Cluster, Local, LEASE};
use crate::wire::v1::Limits;

impl Cluster {
    /// Exports `name`'s log in the Redis at `url` (as given to `--cluster`)
    /// to `out`, or with `purge` deletes it; how many entries.
    pub(crate) fn history_in_redis(
        url: &str,
        name: &str,
        purge: bool,
        out: &mut impl Write,
    ) -> Result<u64, String> {
        let local = Local {
            registry: Arc::default(),
            // The widest a node may be configured with: every entry any node
            // could have written is read.
            limits: Limits {
                max_username: u8::MAX,
                max_message: u16::MAX,
            },
            slow_consumer_timeout: std::time::Duration::ZERO,
            queue_bytes: 0,
            retention: crate::store::Retention::default(),
            wait_replicas: 0,
            stats: Arc::new(crate::server::stats::Stats::new(0)),
        };
        let cluster = Cluster::new(url, None, None, LEASE, local)?;
        // On the program's main thread: the connection's driver runs on the
        // background thread, as a node's does.
        smol::block_on(async {
            let (pushed, _pushes) = Inbound::new();
            let connection = cluster
                .connect(pushed)
                .await
                .map_err(|e| format!("cannot reach Redis: {e}"))?;
            cluster.set_connection(Some(connection));
            match purge {
                true => cluster
                    .log_purge(name)
                    .await
                    .map_err(|_| "Redis failed while reading the log".to_string()),
                false => cluster.export_log(name, out).await,
            }
        })
    }

    /// Writes `name`'s log to `out` as JSON lines, oldest first (the
    /// format of `chat-server history export`); how many entries.
    pub(crate) async fn export_log(&self, name: &str, out: &mut impl Write) -> Result<u64, String> {
        const PAGE: usize = 1000;
        let (mut cursor, mut written, mut line) = (0, 0, String::new());
        loop {
            let page = self
                .log_after(name, cursor, PAGE)
                .await
                .map_err(|_| "Redis failed while reading the log".to_string())?;
            for entry in &page {
                line.clear();
                crate::store::entry_json(entry, &mut line);
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                written += 1;
                cursor = entry.id;
            }
            if page.len() < PAGE {
                return Ok(written);
            }
        }
    }
}
