//! `--metrics ADDR`: the server's counters and gauges in Prometheus's text
//! format at `GET /metrics`, encoded by prometheus-client (the Prometheus
//! project's Rust client), and [`Snapshot`], the same numbers for the
//! control socket's `stats`.
//!
//! Nothing here is on the hot path: the counters are written where things
//! happen ([`super::stats`]), and a scrape reads them, sums the workers'
//! slots and walks the registry for the queued bytes. The endpoint runs on
//! a thread of its own (`met`), each request on a short-lived thread of
//! its own (at most [`MAX_REQUESTS`] at once; more are closed unanswered),
//! reading at most [`MAX_REQUEST_BYTES`] within [`REQUEST_TIMEOUT`]: a
//! client that trickles or floods it costs a thread for a few seconds,
//! never the server. No metric has a per-user label.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

use super::stats::Counts;
use super::Shared;

/// Requests served at once; one more is closed unanswered.
const MAX_REQUESTS: usize = 4;
/// The longest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a request may take to arrive, and its answer to be taken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the server counts and measures, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The counters.
    pub counts: Counts,
    /// Connections open now.
    pub connections_open: u64,
    /// Names online on this node.
    pub users_online: u64,
    /// Sessions on this node by wire: v1, gob.
    pub sessions_v1: u64,
    pub sessions_gob: u64,
    /// Bytes queued for clients, not yet written.
    pub queued_bytes: u64,
    /// Password checks waiting for the checker thread.
    pub password_checks_waiting: u64,
    /// With `--cluster`: whether Redis answers, and the other live nodes.
    pub redis_reachable: Option<bool>,
    pub live_nodes: Option<u64>,
    /// Resident memory and open descriptors of the process.
    pub rss_bytes: Option<u64>,
    pub open_files: Option<u64>,
    pub open_files_limit: Option<u64>,
}

/// Reads everything now.
pub(crate) fn snapshot(shared: &Shared) -> Snapshot {
    let (mut queued, mut v1, mut gob) = (0u64, 0u64, 0u64);
    shared.registry.for_each(|session| {
        queued += session.outbound().queued() as u64;
        match session.wire() {
            super::Wire::Gob => gob += 1,
            super::Wire::V1 | super::Wire::Coded | super::Wire::Sealed => v1 += 1,
        }
    });
    Snapshot {
        counts: shared.stats.read(),
        connections_open: shared.open_connections() as u64,
        users_online: shared.registry.names().len() as u64,
        sessions_v1: v1,
        sessions_gob: gob,
        queued_bytes: queued,
        password_checks_waiting: shared
            .auth
            .as_ref()
            .map_or(0, |auth| auth.checks_waiting() as u64),
        redis_reachable: shared.cluster.as_ref().map(|c| c.redis_reachable()),
        live_nodes: shared.cluster.as_ref().map(|c| c.live_nodes() as u64),
        rss_bytes: crate::sys::rss_kib(std::process::id()).map(|kib| kib * 1024),
        open_files: crate::sys::open_files(),
        open_files_limit: crate::sys::open_files_limit(),
    }
}

/// The collector a scrape runs: reads a [`Snapshot`] and encodes it.
struct ServerCollector(Arc<Shared>);

impl std::fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)
}

/// A counter with one label, one series per value.
fn labelled(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in series {
        let labels = [(label, *value)];
        let metric = family.encode_family(&labels)?;
        ConstCounter::new(*count).encode(metric)?;
    }
    Ok(())
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = snapshot(&self.0);
        let counts = &now.counts;
        let e = &mut encoder;
        labelled(
            e,
            "pmchat_connections_accepted",
            "Connections that reached a login or a refusal, by transport.",
            "transport",
            &[("tcp", counts.accepted_plain), ("tls", counts.accepted_tls)],
        )?;
        gauge(
            e,
            "pmchat_connections_open",
            "Connections open now.",
            now.connections_open,
        )?;
        gauge(
            e,
            "pmchat_users_online",
            "Names logged in on this node.",
            now.users_online,
        )?;
        let mut family = e.encode_descriptor(
            "pmchat_sessions",
            "Logged-in sessions on this node, by wire.",
            None,
            MetricType::Gauge,
        )?;
        for (wire, count) in [("v1", now.sessions_v1), ("gob", now.sessions_gob)] {
            let labels = [("wire", wire)];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX)).encode(metric)?;
        }
        let mut logins = vec![("ok", counts.logins_ok)];
        logins.extend(counts.logins_refused.iter().map(|(c, n)| (c.as_str(), *n)));
        labelled(
            e,
            "pmchat_logins",
            "Logins by outcome: ok, or the code they were refused with.",
            "outcome",
            &logins,
        )?;
        counter(
            e,
            "pmchat_messages_routed",
            "Messages read from senders and routed (delivered, stored or refused).",
            counts.routed,
        )?;
        let refused: Vec<(&str, u64)> = counts
            .refused
            .iter()
            .map(|(code, n)| (code.as_str(), *n))
            .collect();
        labelled(
            e,
            "pmchat_messages_refused",
            "Messages refused to their sender, by code.",
            "code",
            &refused,
        )?;
        counter(
            e,
            "pmchat_messages_stored",
            "Messages kept for registered names (the store or Redis).",
            counts.stored,
        )?;
        counter(
            e,
            "pmchat_messages_replayed",
            "Stored messages sent to a device from its log.",
            counts.replayed,
        )?;
        counter(
            e,
            "pmchat_received_bytes",
            "Bytes read from logged-in clients.",
            counts.bytes_in,
        )?;
        counter(
            e,
            "pmchat_sent_bytes",
            "Bytes written to clients.",
            counts.bytes_out,
        )?;
        counter(
            e,
            "pmchat_slow_consumers",
            "Clients disconnected for not reading.",
            counts.slow_consumers,
        )?;
        gauge(
            e,
            "pmchat_outbound_queued_bytes",
            "Bytes queued for clients, not yet written.",
            now.queued_bytes,
        )?;
        gauge(
            e,
            "pmchat_password_checks_waiting",
            "Password checks (argon2) waiting for the checker thread.",
            now.password_checks_waiting,
        )?;
        if let Some(up) = now.redis_reachable {
            gauge(
                e,
                "pmchat_redis_up",
                "1 while the cluster's Redis answers.",
                u64::from(up),
            )?;
        }
        if let Some(nodes) = now.live_nodes {
            gauge(
                e,
                "pmchat_cluster_live_nodes",
                "Other nodes known to be live.",
                nodes,
            )?;
        }
        if let Some(rss) = now.rss_bytes {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss,
            )?;
        }
        if let Some(open) = now.open_files {
            gauge(e, "process_open_fds", "Open file descriptors.", open)?;
        }
        if let Some(limit) = now.open_files_limit {
            gauge(
                e,
                "process_max_fds",
                "The most file descriptors the process may open.",
                limit,
            )?;
        }
        Ok(())
    }
}

/// The metrics endpoint, bound.
pub struct MetricsEndpoint {
    listener: TcpListener,
    registry: Arc<Registry>,
}

impl MetricsEndpoint {
    /// Binds `addr` for a server's metrics (before the server announces it
    /// listens, so a port in use is an error at start).
    pub(crate) fn bind(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let mut registry = Registry::default();
        if shared.cluster.is_some() {
            let publishes = shared.stats.publishes.clone();
            registry.register(
                "pmchat_cluster_publish_bytes",
                "Sizes of the batches published to other nodes.",
                publishes.bytes,
            );
            registry.register(
                "pmchat_cluster_publish_seconds",
                "Round trips of the batches published to other nodes.",
                publishes.seconds,
            );
        }
        registry.register_collector(Box::new(ServerCollector(shared)));
        Ok(MetricsEndpoint {
            listener,
            registry: Arc::new(registry),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves scrapes on a thread of its own, for the rest of the process.
    pub fn spawn(self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(crate::runtime::thread_name("met"))
            .spawn(move || self.serve())
            .map(drop)
    }

    fn serve(self) {
        let active = Arc::new(AtomicUsize::new(0));
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else {
                // Out of descriptors, most likely: the server's own
                // connections matter more; try again shortly.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_REQUESTS {
                active.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let (registry, done) = (Arc::clone(&self.registry), Arc::clone(&active));
            let spawned = std::thread::Builder::new()
                .name(crate::runtime::thread_name("met"))
                .spawn(move || {
                    if let Err(e) = answer(stream, &registry) {
                        debug!("metrics request: {e}");
                    }
                    done.fetch_sub(1, Ordering::AcqRel);
                });
            if let Err(e) = spawned {
                active.fetch_sub(1, Ordering::AcqRel);
                warn!("cannot answer a metrics request: {e}");
            }
        }
    }
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST_BYTES {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", "");
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    match (method, path) {
        (b"GET", Some(b"/metrics")) => {
            let mut body = String::new();
            if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
                return respond(&mut stream, "500 Internal Server Error", "", "");
            }
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
        }
        (b"GET", Some(_)) => respond(&mut stream, "404 Not Found", "", ""),
        _ => respond(&mut stream, "405 Method Not Allowed", "", ""),
    }
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    let kind = if kind.is_empty() { "text/plain" } else { kind };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// `(label, value)` lines of a snapshot, the numbers `stats` shows; a
/// `None` value is one this server does not have (no cluster).
fn fields(now: &Snapshot) -> Vec<(&'static str, Option<u64>)> {
    let c = &now.counts;
    vec![
        ("connections_open", Some(now.connections_open)),
        ("connections_accepted_tcp", Some(c.accepted_plain)),
        ("connections_accepted_tls", Some(c.accepted_tls)),
        ("users_online", Some(now.users_online)),
        ("sessions_v1", Some(now.sessions_v1)),
        ("sessions_gob", Some(now.sessions_gob)),
        ("logins_ok", Some(c.logins_ok)),
        ("messages_routed", Some(c.routed)),
        ("messages_stored", Some(c.stored)),
        ("messages_replayed", Some(c.replayed)),
        ("received_bytes", Some(c.bytes_in)),
        ("sent_bytes", Some(c.bytes_out)),
        ("slow_consumers", Some(c.slow_consumers)),
        ("outbound_queued_bytes", Some(now.queued_bytes)),
        ("password_checks_waiting", Some(now.password_checks_waiting)),
        ("redis_up", now.redis_reachable.map(u64::from)),
        ("cluster_live_nodes", now.live_nodes),
        ("resident_memory_bytes", now.rss_bytes),
        ("open_fds", now.open_files),
    ]
}

/// A snapshot as the console shows it: one `name value` line each, the
/// refusals by code after.
pub(crate) fn as_text(now: &Snapshot) -> String {
    let mut text = String::new();
    for (name, value) in fields(now) {
        if let Some(value) = value {
            text.push_str(&format!("{name:<26}{value}\n"));
        }
    }
    for (what, by_code) in [
        ("logins_refused", &now.counts.logins_refused),
        ("messages_refused", &now.counts.refused),
    ] {
        for (code, count) in by_code {
            text.push_str(&format!(
                "{:<26}{count}\n",
                format!("{what} {}", code.as_str())
            ));
        }
    }
    text.trim_end().to_string()
}

/// A snapshot as one JSON object (the refusals as objects by code).
pub(crate) fn as_json(now: &Snapshot) -> String {
    let mut json = String::from("{");
    for (name, value) in fields(now) {
        if let Some(value) = value {
            json.push_str(&format!("\"{name}\":{value},"));
        }
    }
    for (what, by_code) in [
        ("logins_refused", &now.counts.logins_refused),
        ("messages_refused", &now.counts.refused),
    ] {
        json.push_str(&format!("\"{what}\":{{"));
        let codes: Vec<String> = by_code
            .iter()
            .map(|(code, count)| format!("\"{}\":{count}", code.as_str()))
            .collect();
        json.push_str(&codes.join(","));
        json.push_str("},");
    }
    json.pop();
    json.push('}');
    json
}
