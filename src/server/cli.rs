//! Command-line options of `chat-server`; the doc comments are `--help`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};

use super::config::Config;
use super::tls::{self, SelfSigned, ServerTls, TlsError, TlsFiles};
use super::wire::Wire;
use crate::args::{parse_duration, ColorChoice};
use crate::logging::LogFormat;
use crate::wire::v1::Limits;

/// A private-message chat server speaking the pmchat v1 protocol.
///
/// Clients connect with a unique username; every direct message is routed
/// through the server to its recipient. The first line on stdout is
/// `listening on ADDR:PORT`. Logs go to stderr.
#[derive(Debug, Parser)]
#[command(
    group(ArgGroup::new("tls_source").args(["tls_cert", "tls_self_signed"])),
    name = "chat-server",
    override_usage = "chat-server [OPTIONS] <PORT>\n       chat-server passwd <FILE> <NAME>\n       chat-server admin [--json] <PATH> <COMMAND>...",
    version,
    after_long_help = "\
Console commands (typed on stdin):
  users            list who is online
  kick NAME        disconnect NAME with an error frame saying so
  ban NAME [DUR]   keep NAME out (30m, 2h, 7d…; until unbanned without DUR),
                   disconnecting it if online; on every node with --cluster
  unban NAME       let NAME log in again
  accounts         list the registered names, online or not
  reload-tls       read the TLS certificate and key again (also on SIGHUP)
  reload-accounts  read the accounts file again (also on SIGHUP); --force
                   loads one that unregisters most names
  history export NAME
                   print NAME's stored history as JSON lines
  stats            what the server counts (the numbers --metrics serves)
  help             list the console commands
  exit             shut down (same as SIGINT or SIGTERM)
End of stdin does not stop the server. With --admin-socket PATH,
`chat-server admin PATH COMMAND` runs the same commands.

Wires: v1 clients and gob clients (the original Go programs' wire) share
the port; the first bytes after the handshake tell them apart, and
--default-wire says what a client that has sent nothing yet is spoken to in.

TLS: plain and TLS clients share the port; a connection that opens with a
TLS handshake gets TLS. --tls-self-signed DIR sets up a local CA in DIR
(clients: chat-client --tls --tls-ca DIR/ca.pem).

Registered names: chat-server passwd FILE NAME sets NAME's password in
FILE; start the server with --accounts FILE. Clients log in to a
registered name with --password-file FILE or PMCHAT_PASSWORD, over TLS.

Exit status: 0 after a clean shutdown, 1 when the server cannot start
(for example the port is in use), 2 for a usage error."
)]
pub struct ServerArgs {
    /// TCP port to listen on; 0 picks a free port (see the first stdout line).
    pub port: u16,

    /// Address or host name to listen on (`::` for all IPv6 and IPv4
    /// addresses, `localhost` for this machine only).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    pub bind: String,

    /// Worker threads, each owning the connections handed to it [default:
    /// number of available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Most connections at once; one more is told `server is full`.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_clients: usize,

    /// Longest username and recipient name, in bytes (1-255).
    #[arg(long, value_name = "BYTES", default_value_t = 32,
          value_parser = clap::value_parser!(u8).range(1..))]
    pub max_username_bytes: u8,

    /// Longest message content, in bytes (1-65535).
    #[arg(long, value_name = "BYTES", default_value_t = 2048,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_message_bytes: u16,

    /// Close connections that have not sent their username within this time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Close a connection that sent part of a frame (even one header byte)
    /// but not all of it within this time.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub frame_timeout: Duration,

    /// How long a sender waits for a recipient whose queue is full before
    /// that recipient is disconnected as a slow consumer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub slow_consumer_timeout: Duration,

    /// Bytes of outgoing frames queued per client before senders must wait
    /// (at least 65536 + 512, so any one frame fits).
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u64).range(66_048..=1 << 30))]
    pub queue_bytes: u64,

    /// PEM certificate chain (leaf first) for TLS on the same port; needs
    /// --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, RSA or EC) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// TLS with a self-signed CA and certificate for localhost, kept in DIR
    /// (created on first use); clients trust DIR/ca.pem. For local use.
    #[arg(long, value_name = "DIR")]
    pub tls_self_signed: Option<PathBuf>,

    /// Refuse plain connections with an error frame (needs TLS).
    #[arg(long, requires = "tls_source")]
    pub require_tls: bool,

    /// Registered names: a file of `name:hash` lines (argon2id PHC hashes,
    /// made with `chat-server passwd`). A registered name is given only to
    /// a client that sends its password; re-read when it changes and on
    /// SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub accounts: Option<PathBuf>,

    /// Refuse names that are not in the accounts file.
    #[arg(long, requires = "accounts")]
    pub registered_only: bool,

    /// Keep messages for registered names in FILE (created if missing; a
    /// file that is not a store is an error, never replaced): a message to
    /// a registered name with nobody logged in to it is stored and
    /// delivered at its next login, and every message to or from a
    /// registered name is kept as its history.
    #[arg(
        long,
        value_name = "FILE",
        requires = "accounts",
        conflicts_with = "cluster"
    )]
    pub store: Option<PathBuf>,

    /// Sessions one registered name may have at once with --store (its
    /// devices): each gets every message to the name and a copy of what
    /// the others send. Unregistered names stay unique.
    #[arg(long, value_name = "N", default_value_t = 8, requires = "accounts",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_devices: u16,

    /// Messages of history kept per registered name; the oldest go first.
    #[arg(long, value_name = "N", default_value_t = 10_000, requires = "accounts",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max: u64,

    /// Days of history kept; older messages go.
    #[arg(long, value_name = "DAYS", default_value_t = 30, requires = "accounts",
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub history_days: u64,

    /// Check passwords sent over plain TCP too (by default they are refused
    /// unchecked: only TLS keeps them secret). For trusted networks only.
    #[arg(long, requires = "accounts")]
    pub allow_plaintext_passwords: bool,

    /// Be one node of several acting as one server, through the Redis at
    /// URL: redis://HOST:PORT, or redis+cluster://HOST:PORT,HOST:PORT,...
    /// for a Redis Cluster, or redis+unix:///PATH; rediss:// and
    /// rediss+cluster:// for TLS to Redis. A user and password go in the
    /// URL (redis://USER:PASSWORD@HOST:PORT). One namespace of users across
    /// every node started with the same URL, messages routed to whichever
    /// node holds the recipient. A node's names are free 5 s after it dies.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,

    /// A secret shared by every node (at least 32 bytes; `head -c 48
    /// /dev/urandom | base64 > FILE` makes one): each signs what it puts in
    /// Redis with it, and acts only on what carries a valid signature, so
    /// whoever can write to Redis without the key cannot forge messages,
    /// users, kicks or bans. Every node needs the same key.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_key_file: Option<std::path::PathBuf>,

    /// How long a node's names outlive it: a node that dies (or is cut
    /// off from Redis) frees its names within this, and renews its lease
    /// five times as often. Every node should use the same value.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_lease, requires = "cluster")]
    pub cluster_lease: Duration,

    /// With --accounts: tell a sender its message to a registered name is
    /// stored only once N of Redis's replicas have it too (Redis's WAIT,
    /// up to 1 s; with fewer, the message is refused as not stored). 0:
    /// once Redis itself answered. See the README on what each Redis
    /// persistence setting guarantees.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "cluster",
          value_parser = clap::value_parser!(u32).range(0..=16))]
    pub cluster_wait: u32,

    /// With rediss://: trust only the CA certificates in this PEM file for
    /// Redis's certificate (default: the system's trusted roots).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_ca: Option<std::path::PathBuf>,

    /// More log output: -v turns on debug logs (among them each routed
    /// message, with its content), -vv trace logs too.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log output (-q warnings only, -qq errors only, -qqq nothing).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// What to speak to a client that has sent nothing yet after its
    /// username: v1, or gob for the original Go client, which sends
    /// nothing until its user types. A client's first bytes decide for
    /// good; pmchat's own client sends them at once, so it works either way.
    #[arg(long, value_name = "WIRE", value_enum, default_value_t = DefaultWire::V1)]
    pub default_wire: DefaultWire,

    /// Read options from a TOML file, under the same names as these flags
    /// (`max-clients = 500`, `require-tls = true`); a flag given here
    /// wins. SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Take the console's commands on a Unix socket at PATH too, created
    /// with mode 0600 and removed at exit: `chat-server admin PATH
    /// COMMAND` runs one.
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (for example
    /// 127.0.0.1:9090; keep it off public addresses): connections, logins
    /// by outcome, messages routed, refused by code, stored and replayed,
    /// bytes, slow consumers, queues, Redis, memory and descriptors.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Colour the log and console output.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// How log lines on stderr are written: text, or json (one object a
    /// line: timestamp, level, fields with the message; for log shippers).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The wire of a connection that has sent nothing yet (`--default-wire`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DefaultWire {
    /// pmchat v1.
    V1,
    /// The original Go programs' gob stream.
    Gob,
}

impl ServerArgs {
    /// The address to listen on: `--bind` as an IP address, or the first
    /// address its host name resolves to.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        if let Ok(ip) = self.bind.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        (self.bind.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve --bind {}: {e}", self.bind))?
            .next()
            .ok_or_else(|| format!("--bind {} resolves to no address", self.bind))
    }

    /// The address `--metrics` names, resolved; `None` without it.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        let Some(addr) = &self.metrics else {
            return Ok(None);
        };
        addr.to_socket_addrs()
            .map_err(|e| format!("cannot resolve --metrics {addr}: {e}"))?
            .next()
            .map(Some)
            .ok_or_else(|| format!("--metrics {addr} resolves to no address"))
    }

    /// The server settings these options describe.
    pub fn config(&self) -> Config {
        let queue_bytes = usize::try_from(self.queue_bytes).unwrap_or(usize::MAX);
        Config {
            limits: Limits {
                max_username: self.max_username_bytes,
                max_message: self.max_message_bytes,
            },
            max_clients: self.max_clients,
            handshake_timeout: self.handshake_timeout,
            frame_timeout: self.frame_timeout,
            slow_consumer_timeout: self.slow_consumer_timeout,
            queue_bytes,
            require_tls: self.require_tls,
            registered_only: self.registered_only,
            max_devices: usize::from(self.max_devices),
            retention: self.retention(),
            allow_plaintext_passwords: self.allow_plaintext_passwords,
            cluster: self.cluster.clone(),
            cluster_key_file: self.cluster_key_file.clone(),
            cluster_lease: self.cluster_lease,
            cluster_wait: self.cluster_wait,
            cluster_ca: self.cluster_ca.clone(),
            default_wire: match self.default_wire {
                DefaultWire::V1 => Wire::V1,
                DefaultWire::Gob => Wire::Gob,
            },
            ..Config::default()
        }
    }

    /// How much history `--store` keeps.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            max_entries: self.history_max,
            max_days: self.history_days,
        }
    }

    /// The TLS settings asked for, loaded (and, for --tls-self-signed,
    /// created): `None` without TLS.
    pub fn tls(&self) -> Result<Option<(ServerTls, Option<SelfSigned>)>, TlsError> {
        if let Some(dir) = &self.tls_self_signed {
            let set = tls::self_signed(dir)?;
            return Ok(Some((ServerTls::load(set.files.clone())?, Some(set))));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((
                ServerTls::load(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })?,
                None,
            ))),
            _ => Ok(None),
        }
    }

    /// Log level offset: positive is more verbose.
    pub fn verbosity(&self) -> i8 {
        i8::try_from(self.verbose).unwrap_or(i8::MAX) - i8::try_from(self.quiet).unwrap_or(i8::MAX)
    }
}

/// Reads or deletes a registered name's history in a store file (made by
/// `chat-server --store FILE`), while no server has it open, or in the
/// Redis of a cluster (the URL given to --cluster), while the nodes run.
#[derive(Debug, Parser)]
#[command(
    name = "chat-server history",
    override_usage = "chat-server history export <FILE|URL> <NAME>\n       chat-server history purge <FILE|URL> <NAME>",
    after_long_help = "\
Examples:
  chat-server history export messages.redb bob > bob.jsonl
  chat-server history purge messages.redb bob
  chat-server history export redis://127.0.0.1:6379 bob > bob.jsonl

Exit status: 0 on success, 1 if the store cannot be opened (in use by a
running server, or not a store) or Redis cannot be reached, 2 for a
usage error."
)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub action: HistoryAction,
}

/// What `chat-server history` does.
#[derive(Debug, clap::Subcommand)]
pub enum HistoryAction {
    /// Print NAME's history as JSON lines, oldest first: id, ts
    /// (milliseconds since the epoch), dir (in or out), peer, content.
    Export {
        /// The store file (as given to --store), or the cluster's Redis
        /// URL (as given to --cluster).
        file: PathBuf,
        name: String,
    },
    /// Delete NAME's history (its messages not yet delivered with it).
    Purge {
        /// The store file (as given to --store), or the cluster's Redis
        /// URL (as given to --cluster).
        file: PathBuf,
        name: String,
    },
}

/// Runs one console command on a running server, through its
/// --admin-socket.
#[derive(Debug, Parser)]
#[command(
    name = "chat-server admin",
    bin_name = "chat-server admin",
    override_usage = "chat-server admin [--json] <PATH> <COMMAND>...",
    after_long_help = "\
Commands: users, kick NAME, ban NAME [DURATION], unban NAME, accounts,
reload-tls, reload-accounts [--force], history export NAME, stats,
cluster, help, exit (the console's, with the same output).

Examples:
  chat-server admin /run/pmchat/admin.sock users
  chat-server admin --json /run/pmchat/admin.sock stats

Exit status: 0 when the command worked, 1 when it did not (nobody by that
name online, a reload that failed, the server unreachable), 2 for a usage
error (an unknown command included)."
)]
pub struct AdminArgs {
    /// Print the answer as JSON (one object; JSON lines for an export).
    #[arg(long)]
    pub json: bool,
    /// The server's control socket (its --admin-socket).
    pub socket: PathBuf,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Sets a registered name's password in an accounts file.
///
/// The password is read from stdin without echo: twice on a terminal (to
/// catch typos), one line from a pipe. Never give it as an argument. The
/// file is created if missing and rewritten atomically with mode 0600; the
/// other lines stay as they are. A server running with --accounts FILE
/// picks the change up within a second.
#[derive(Debug, Parser)]
#[command(
    name = "chat-server passwd",
    bin_name = "chat-server passwd",
    version,
    after_long_help = "\
Example:
  chat-server passwd accounts alice          (asks twice)
  printf '%s\\n' \"$PW\" | chat-server passwd accounts alice

Exit status: 0 when the password was set, 1 when it was not (unreadable
or invalid file, mismatched entries, empty password), 2 for a usage error."
)]
pub struct PasswdArgs {
    /// The accounts file (as given to --accounts).
    pub file: PathBuf,
    /// The name to register or whose password to change.
    pub name: String,
}

/// A `--cluster-lease`: long enough that renewing it five times as often
/// costs Redis little and survives a slow command, short enough to matter.
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if lease < Duration::from_millis(500) || lease > Duration::from_secs(3600) {
        return Err("a lease must be between 500ms and 1h".into());
    }
    Ok(lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_too_short_to_renew_or_too_long_to_matter_is_refused() {
        assert_eq!(Ok(Duration::from_secs(2)), parse_lease("2s"));
        assert_eq!(Ok(Duration::from_millis(500)), parse_lease("500ms"));
        assert!(parse_lease("100ms").is_err());
        assert!(parse_lease("2h").is_err());
        assert!(parse_lease("soon").is_err());
    }
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        ServerArgs::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_protocol() {
        let args = ServerArgs::parse_from(["chat-server", "0"]);
        let config = args.config();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.max_clients, 10_000);
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
    }

    #[test]
    fn bind_takes_host_names() {
        let args = ServerArgs::parse_from(["chat-server", "9000", "--bind", "localhost"]);
        let addr = args.listen_addr().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 9000);
        let args = ServerArgs::parse_from(["chat-server", "0", "--bind", "::1"]);
        assert_eq!(args.listen_addr().unwrap(), "[::1]:0".parse().unwrap());
        let args = ServerArgs::parse_from(["chat-server", "0", "--bind", "no such host!"]);
        assert!(args.listen_addr().is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert!(ServerArgs::try_parse_from(["s", "0", "--max-username-bytes", "256"]).is_err());
        assert!(ServerArgs::try_parse_from(["s", "0", "--max-message-bytes", "65536"]).is_err());
        assert!(ServerArgs::try_parse_from(["s", "0", "--max-username-bytes", "0"]).is_err());
    }
}
