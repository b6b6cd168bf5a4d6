//! `chat-bench`: a load generator speaking v1 to any chat server.
//!
//! - [`throughput`]: sender → receiver pairs, as fast as a window allows.
//! - [`latency`]: a fixed aggregate rate, one-way latency percentiles.
//! - [`conns`]: many idle connections, and the server's memory for them.
//! - [`stored`]: messages to offline registered names on a server with
//!   `--store`, counted once stored; [`durable`]: the same workload on
//!   Redis Streams and NATS JetStream.
//! - [`crypto`]: the client's end-to-end encryption on one core, no
//!   server.
//!
//! The generator must not be the bottleneck: frames are built from a
//! pre-encoded template (only the sequence digits change), written and read
//! in large buffers, on a small smol executor. Each run reports its own CPU
//! time next to the server's (with `--pid`), so a reader can tell which side
//! was saturated. The human summary goes to stderr, one JSON object to
//! stdout.

mod conns;
mod crypto;
mod durable;
mod latency;
pub mod peers;
mod report;
mod stored;
mod throughput;

use crate::exit_codes::Status;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use smol::{Async, Executor, Timer};

use crate::args::parse_duration;
use crate::client::wire::ClientWire;
use crate::net::transport::{connect_tls, Transport};
use crate::wire::framing::FrameReader;
use crate::wire::v1::{self, ServerFrame};

/// Load generator and benchmark for pmchat and other v1 chat servers.
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub case: Case,
}

/// The benchmark to run.
#[derive(Debug, Subcommand)]
pub enum Case {
    /// Sender → receiver pairs sending as fast as the window allows.
    Throughput(ThroughputArgs),
    /// Messages at a fixed aggregate rate; one-way latency percentiles.
    Latency(LatencyArgs),
    /// Many idle logged-in connections; the server's memory per connection.
    Conns(ConnsArgs),
    /// Senders to registered names nobody is logged in to, on a server with
    /// --store: messages stored (committed and fsynced) per second.
    Stored(StoredArgs),
    /// The client's end-to-end encryption, no server: messages encrypted
    /// by one device, carried as sealed envelopes and decrypted by another,
    /// on one core.
    Crypto(crypto::CryptoArgs),
}

/// Options every case shares.
#[derive(Debug, Args)]
pub struct Common {
    /// Server address.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,

    /// Where the receivers connect (throughput and latency), when it is not
    /// --addr: another node of a cluster, to measure messages crossing
    /// nodes.
    #[arg(long, value_name = "HOST:PORT")]
    pub receiver_addr: Option<String>,

    /// The server's process id, to report its CPU time and memory.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Generator threads [default: number of available cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Give up waiting for messages after this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Connect with TLS (throughput and latency), verifying the server
    /// against the system's roots, or --tls-ca.
    #[arg(long)]
    pub tls: bool,

    /// Trust only the CA certificates in this PEM file; implies --tls.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// The wire the generated clients speak (throughput and latency): v1,
    /// or gob, as the original Go client sends it (a type definition with
    /// every message).
    #[arg(long, value_name = "WIRE", value_enum, default_value_t = ClientWire::V1)]
    pub wire: ClientWire,
}

/// Where the generator connects, and how.
#[derive(Clone)]
pub(crate) struct Target {
    /// The server's address.
    pub(crate) addr: SocketAddr,
    /// Where the receivers connect (`addr` unless told otherwise).
    pub(crate) receiver_addr: SocketAddr,
    /// TLS settings and the name to verify, when TLS is asked for.
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    /// What the generated clients speak.
    pub(crate) wire: ClientWire,
}

impl Target {
    fn new(common: &Common) -> Result<Target, String> {
        let addr = resolve(&common.addr).map_err(|e| e.to_string())?;
        let receiver_addr = match &common.receiver_addr {
            Some(other) => resolve(other).map_err(|e| e.to_string())?,
            None => addr,
        };
        let tls = if common.tls || common.tls_ca.is_some() {
            let config = crate::net::tls::tls_client_config(common.tls_ca.as_deref())?;
            // The host as given: its name (or address) must be in the
            // server's certificate.
            let host = common
                .addr
                .rsplit_once(':')
                .map_or(common.addr.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            Some((config, host))
        } else {
            None
        };
        Ok(Target {
            addr,
            receiver_addr,
            tls,
            wire: common.wire,
        })
    }
}

/// `chat-bench stored`.
#[derive(Debug, Args)]
pub struct StoredArgs {
    #[command(flatten)]
    pub common: Common,
    /// The accounts file the server was started with (`--accounts`): the
    /// recipients' names are written into it (what it held is replaced).
    #[arg(long, value_name = "FILE", required_unless_present = "peer")]
    pub accounts_file: Option<std::path::PathBuf>,
    /// Drive this other server with the same workload instead: XADD to
    /// Redis Streams, or publications to a NATS JetStream file stream,
    /// each counted once acknowledged.
    #[arg(long, value_name = "PEER", value_enum)]
    pub peer: Option<durable::DurablePeer>,
    /// Senders, each to a recipient of its own.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Content bytes per message (at least 16: the sequence number).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(16..))]
    pub size: u16,
    /// Messages in flight (sent, not yet accounted for) per sender.
    #[arg(long, default_value_t = 16_384)]
    pub window: u64,
}

/// `chat-bench throughput`.
#[derive(Debug, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sender → receiver pairs.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Content bytes per message (at least 16: the sequence number).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(16..))]
    pub size: u16,
    /// Messages in flight (sent, not yet received) per pair.
    #[arg(long, default_value_t = 4096)]
    pub window: u64,
    /// Senders ask for receipts (pmchat servers, v1 wire) and read them:
    /// the cost of receipts on the hot path.
    #[arg(long)]
    pub receipts: bool,
    /// Each message is the sealed envelope of SIZE bytes of plaintext, as
    /// `chat-client --e2e` sends it in a one-way stream (an Olm pre-key
    /// message, made once), instead of SIZE bytes of text; senders and
    /// receivers ask for `sealed` (pmchat servers, v1 wire). The server
    /// does no cryptography: this measures what the envelope's size costs.
    #[arg(long)]
    pub sealed: bool,
}

/// `chat-bench latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sender → receiver pairs.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Aggregate messages per second over all pairs.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// How long to send.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Content bytes per message (at least 32: sequence and timestamp).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(32..))]
    pub size: u16,
    /// Receive by busy-polling on a dedicated thread (costs a core), so the
    /// generator's own wake-up latency stays out of the figures.
    #[arg(long, conflicts_with = "peer")]
    pub spin: bool,
    /// Drive another server at --addr with the same workload instead of
    /// pmchat: nats (core publish/subscribe) or redis (PUBLISH and
    /// SUBSCRIBE), each pair on a subject of its own.
    #[arg(long, value_name = "PEER", value_enum)]
    pub peer: Option<peers::Peer>,
}

/// `chat-bench conns`.
#[derive(Debug, Args)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle connections to hold.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// How long to hold them once all are up (after the burst, if any).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Before the hold, every connection sends this many messages to itself
    /// and reads them back, so the hold measures what a session keeps after
    /// a burst.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub burst: usize,
    /// Content bytes of each burst message.
    #[arg(long, value_name = "BYTES", default_value_t = 2048,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub burst_size: u16,
}

/// Runs the chosen case; returns the exit status (0 when every message
/// arrived in order).
pub fn run(args: BenchArgs) -> Status {
    let common = match &args.case {
        // No server: run here, on this thread.
        Case::Crypto(crypto) => return finish(crypto::run(crypto)),
        Case::Throughput(a) => &a.common,
        Case::Latency(a) => &a.common,
        Case::Conns(a) => &a.common,
        Case::Stored(a) => &a.common,
    };
    let target = match Target::new(common) {
        Ok(target) => target,
        Err(e) => {
            crate::err_line!("chat-bench: {e}");
            return Status::Usage;
        }
    };
    if target.tls.is_some() && matches!(args.case, Case::Conns(_)) {
        crate::err_line!(
            "chat-bench: conns measures plain connections; --tls is for throughput and latency"
        );
        return Status::Usage;
    }
    let threads = common
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let executor = Arc::new(Executor::new());
    let ex = Arc::clone(&executor);
    let outcome = crate::runtime::block_on_threads(&executor, threads, async move {
        match &args.case {
            Case::Throughput(a) => throughput::run(&ex, &target, a).await,
            Case::Latency(a) => latency::run(&ex, &target, a).await,
            Case::Conns(a) => conns::run(&ex, target.addr, a).await,
            Case::Stored(a) => match a.peer {
                Some(peer) => durable::run(&ex, target.addr, peer, a).await,
                None => stored::run(&ex, &target, a).await,
            },
            Case::Crypto(_) => Err(io::Error::other("answered above")),
        }
    });
    finish(outcome.map_err(|e| e.to_string()))
}

/// Prints a case's report (or why it failed); its exit status.
fn finish(outcome: Result<report::Report, String>) -> Status {
    match outcome {
        Ok(report) => {
            crate::err_line!("{}", report.human());
            let _ = crate::out_line!("{}", report.json());
            if report.ok {
                Status::Success
            } else {
                Status::Failure
            }
        }
        Err(e) => {
            crate::err_line!("chat-bench: {e}");
            Status::Failure
        }
    }
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
}

/// How long the nodes of a cluster get to learn of each other's users
/// before senders on one send to receivers on another.
const CLUSTER_SETTLE: Duration = Duration::from_millis(500);

impl Target {
    /// True when receivers are on another node than senders.
    pub(crate) fn crosses_nodes(&self) -> bool {
        self.addr != self.receiver_addr
    }

    /// With receivers on another node: waits until the senders' node has
    /// surely heard of them (presence travels through Redis in well under
    /// a millisecond; this leaves a wide margin).
    pub(crate) async fn settle(&self) {
        if self.crosses_nodes() {
            Timer::after(CLUSTER_SETTLE).await;
        }
    }
}

/// A connected, logged-in v1 client (a sender, at `--addr`).
pub(crate) async fn login(target: &Target, name: &str) -> io::Result<Transport> {
    login_at(target, target.addr, name).await
}

/// A connected, logged-in v1 receiver, at `--receiver-addr`.
pub(crate) async fn login_receiver(target: &Target, name: &str) -> io::Result<Transport> {
    login_at(target, target.receiver_addr, name).await
}

async fn login_at(target: &Target, addr: SocketAddr, name: &str) -> io::Result<Transport> {
    let stream = Async::<TcpStream>::connect(addr).await?;
    let transport = match &target.tls {
        None => Transport::tcp(stream),
        Some((config, host)) => connect_tls(stream, host, Arc::clone(config)).await?,
    };
    let mut hello = Vec::new();
    v1::encode_handshake(name.as_bytes(), &mut hello)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    transport.write_all(&hello).await?;
    Ok(transport)
}

/// Sends `stream` a message to itself and waits for it: proof that the
/// server has registered the name (v1 has no login acknowledgement).
/// On the gob wire this first message is also what tells the server the
/// client speaks gob.
pub(crate) async fn await_registered(
    stream: &Transport,
    name: &str,
    wire: ClientWire,
    timeout: Duration,
) -> io::Result<()> {
    let mut ping = Vec::new();
    wire.encode_message(name.as_bytes(), b"ping", &mut ping)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut input = FrameReader::new(wire.decoder());
    let deadline = std::time::Instant::now() + timeout;
    loop {
        stream.write_all(&ping).await?;
        // Our own name may not be registered yet: then the server says we
        // are "not connected"; try again shortly.
        let answer = async {
            loop {
                match input.next_frame() {
                    // WELCOME and receipts, for a client that asked.
                    Ok(Some(ServerFrame::Welcome { .. } | ServerFrame::Accepted { .. })) => {
                        continue
                    }
                    Ok(Some(frame)) => {
                        return Ok(
                            matches!(frame, ServerFrame::Message { from, .. } if from == name.as_bytes()),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
                if stream.read(&mut input).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        let answer = crate::runtime::until(deadline, answer)
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))?;
        if answer {
            return Ok(());
        }
        Timer::after(Duration::from_millis(5)).await;
    }
}

/// Writes `value` as 16 lowercase hex digits into `out`.
pub fn put_hex(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().take(16).enumerate() {
        *byte = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Reads 16 hex digits written by [`put_hex`].
pub fn get_hex(digits: &[u8]) -> Option<u64> {
    let digits = digits.get(..16)?;
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// A pre-encoded message frame to one recipient whose content starts with
/// slots for 16-hex-digit numbers; copies of it differ only in those slots.
#[derive(Clone, Debug)]
pub(crate) struct FrameTemplate {
    /// The encoded frame.
    bytes: Vec<u8>,
    /// Offset of the content within `bytes`.
    content_at: usize,
}

impl FrameTemplate {
    /// A frame to `to` on `wire` with `size` bytes of content (padding is
    /// `x`).
    pub fn new(to: &str, size: usize, wire: ClientWire) -> Self {
        FrameTemplate::with_content(to, &vec![b'x'; size], 0, wire)
    }

    /// A frame to `to` on `wire` with `content`, its slots from byte
    /// `slots_at` of the content on.
    pub fn with_content(to: &str, content: &[u8], slots_at: usize, wire: ClientWire) -> Self {
        let mut bytes = Vec::new();
        // Names and sizes come from our own arguments, within the limits.
        let _ = wire.encode_message(to.as_bytes(), content, &mut bytes);
        // The content is the last field; gob ends the struct with a 0.
        let trailer = match wire {
            ClientWire::V1 => 0,
            ClientWire::Gob => 1,
        };
        FrameTemplate {
            content_at: bytes.len() - trailer - content.len() + slots_at,
            bytes,
        }
    }

    /// Encoded length of one frame.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends a copy with `numbers` written into the content's first slots.
    pub fn push(&self, out: &mut Vec<u8>, numbers: &[u64]) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        for (i, number) in numbers.iter().enumerate() {
            let at = start + self.content_at + 16 * i;
            put_hex(&mut out[at..at + 16], *number);
        }
    }
}

/// Checks that one sender's messages arrive in order.
#[derive(Debug, Default)]
pub struct OrderCheck {
    /// The sequence number expected next.
    pub next: u64,
    /// Messages that were not the one expected.
    pub errors: u64,
}

impl OrderCheck {
    /// Records the arrival of `seq`.
    pub fn arrived(&mut self, seq: Option<u64>) {
        match seq {
            Some(seq) if seq == self.next => self.next += 1,
            Some(seq) => {
                self.errors += 1;
                self.next = seq + 1;
            }
            None => self.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::v1::Decoded;

    #[test]
    fn template_frames_decode_with_their_numbers() {
        let template = FrameTemplate::new("r0", 40, ClientWire::V1);
        let mut out = Vec::new();
        template.push(&mut out, &[7, u64::MAX]);
        template.push(&mut out, &[8, 0]);
        assert_eq!(out.len(), 2 * template.len());
        let Ok(Decoded::Frame(ServerFrame::Message { from, content }, used)) =
            v1::decode_server_frame(&out)
        else {
            panic!("not a message frame");
        };
        assert_eq!(from, b"r0");
        assert_eq!(content.len(), 40);
        assert_eq!(get_hex(content), Some(7));
        assert_eq!(get_hex(&content[16..]), Some(u64::MAX));
        assert_eq!(&content[32..], b"xxxxxxxx");
        assert!(std::str::from_utf8(content).is_ok());
        let Ok(Decoded::Frame(ServerFrame::Message { content, .. }, _)) =
            v1::decode_server_frame(&out[used..])
        else {
            panic!("second frame");
        };
        assert_eq!(get_hex(content), Some(8));
    }

    #[test]
    fn order_check_counts_gaps_and_repeats() {
        let mut check = OrderCheck::default();
        for seq in [0, 1, 2, 4, 5, 5, 6] {
            check.arrived(Some(seq));
        }
        check.arrived(None);
        assert_eq!(check.errors, 3);
        assert_eq!(check.next, 7);
    }

    #[test]
    fn hex_round_trips() {
        let mut digits = [0u8; 16];
        for value in [0, 1, 0xdead_beef, u64::MAX] {
            put_hex(&mut digits, value);
            assert_eq!(get_hex(&digits), Some(value));
        }
        assert_eq!(get_hex(b"zz"), None);
    }
}
