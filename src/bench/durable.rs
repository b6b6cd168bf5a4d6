//! The `stored` case on other servers, so that pmchat's store is read
//! against peers measured in the same run: Redis Streams (`XADD`, each
//! acknowledged by its entry id; how durable depends on the server's
//! `appendfsync`) and NATS JetStream (a publication to a file-backed
//! stream, acknowledged by the server; nats-server syncs its files on
//! its own schedule, not per acknowledgement, unless configured to).
//! Each sender writes to a stream of its own, as fast as its window of
//! unacknowledged messages allows; a message counts once acknowledged.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use event_listener::{listener, Event};
use smol::io::AsyncWriteExt;
use smol::Executor;

use super::peers::{resp_command, Peer};
use super::report::{Report, Usage};
use super::StoredArgs;

/// A durable peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DurablePeer {
    /// redis-server: XADD to a stream per sender.
    RedisStreams,
    /// nats-server -js: publications to a file-backed JetStream stream.
    Jetstream,
}

/// Bytes of commands per write.
const WRITE_BATCH: usize = 64 * 1024;

#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    refused: AtomicU64,
    moved: Event,
}

/// Runs the case against `peer` at `addr`.
pub async fn run(
    ex: &Arc<Executor<'static>>,
    addr: SocketAddr,
    peer: DurablePeer,
    args: &StoredArgs,
) -> io::Result<Report> {
    if peer == DurablePeer::Jetstream {
        create_stream(addr).await?;
    }
    let mut connections = Vec::new();
    for i in 0..args.pairs {
        let stream = match peer {
            DurablePeer::RedisStreams => Peer::Redis.publisher(addr).await?,
            DurablePeer::Jetstream => {
                Peer::Nats
                    .subscriber(addr, &format!("_INBOX.bench.{i}"))
                    .await?
            }
        };
        connections.push(stream);
    }
    let usage = Usage::start(args.common.pid);
    let started = Instant::now();
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    for (i, mut stream) in connections.into_iter().enumerate() {
        let p = Arc::new(Progress::default());
        let writer = stream.writer()?;
        let counts = Arc::clone(&p);
        let messages = args.messages;
        readers.push(ex.spawn(async move {
            while counts.acked.load(Ordering::Relaxed) + counts.refused.load(Ordering::Relaxed)
                < messages
            {
                let Ok(reply) = stream.next_message().await else {
                    break;
                };
                // JetStream says why it did not store a message in the
                // acknowledgement's JSON.
                let field = reply.windows(8).any(|w| w == b"\"error\":");
                let counter = if field {
                    &counts.refused
                } else {
                    &counts.acked
                };
                counter.fetch_add(1, Ordering::Relaxed);
                counts.moved.notify(usize::MAX);
            }
        }));
        let command = encode(peer, i, usize::from(args.size));
        ex.spawn(send(
            writer,
            command,
            args.messages,
            args.window,
            Arc::clone(&p),
        ))
        .detach();
        progress.push(p);
    }
    let deadline = Instant::now() + args.common.timeout;
    for reader in readers {
        let _ = crate::runtime::until(deadline, reader).await;
    }
    let acked: u64 = progress
        .iter()
        .map(|p| p.acked.load(Ordering::Relaxed))
        .sum();
    let refused: u64 = progress
        .iter()
        .map(|p| p.refused.load(Ordering::Relaxed))
        .sum();
    let to = format!("to {peer:?} ");
    let mut report = super::stored::summary(args, started, acked, refused, &to, "acknowledged");
    usage.finish(&mut report);
    Ok(report)
}

/// One sender's command, the same every time: `XADD bench.stored.I * c
/// PAYLOAD`, or a JetStream publication to `bench.stored.I` whose
/// acknowledgement comes to the sender's own inbox.
fn encode(peer: DurablePeer, i: usize, size: usize) -> Vec<u8> {
    let subject = format!("bench.stored.{i}");
    let payload = vec![b'x'; size];
    let mut out = Vec::new();
    match peer {
        DurablePeer::RedisStreams => resp_command(
            &[b"XADD", subject.as_bytes(), b"*", b"c", &payload],
            &mut out,
        ),
        DurablePeer::Jetstream => {
            out.extend_from_slice(format!("PUB {subject} _INBOX.bench.{i} {size}\r\n").as_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Creates the file-backed stream every sender publishes to (an existing
/// one from an earlier run is used as it is).
async fn create_stream(addr: SocketAddr) -> io::Result<()> {
    let mut control = Peer::Nats.subscriber(addr, "_INBOX.bench.create").await?;
    let config = br#"{"name":"BENCH","subjects":["bench.stored.>"],"storage":"file"}"#;
    let mut request = format!(
        "PUB $JS.API.STREAM.CREATE.BENCH _INBOX.bench.create {}\r\n",
        config.len()
    )
    .into_bytes();
    request.extend_from_slice(config);
    request.extend_from_slice(b"\r\n");
    control.write_all(&request).await?;
    let reply = control.next_message().await?;
    let text = String::from_utf8_lossy(&reply);
    // 10058: the stream exists already (an earlier run).
    if text.contains("\"error\"") && !text.contains("10058") {
        return Err(io::Error::other(format!(
            "nats-server did not create the stream (does it run with -js?): {text}"
        )));
    }
    Ok(())
}

/// Writes `messages` copies of `command`, keeping at most `window`
/// unacknowledged.
async fn send(
    mut writer: smol::Async<std::net::TcpStream>,
    command: Vec<u8>,
    messages: u64,
    window: u64,
    progress: Arc<Progress>,
) -> io::Result<()> {
    let per_write = (WRITE_BATCH / command.len()).max(1) as u64;
    let mut batch = Vec::with_capacity(WRITE_BATCH + command.len());
    let mut sent = 0;
    let done = |p: &Progress| p.acked.load(Ordering::Acquire) + p.refused.load(Ordering::Acquire);
    while sent < messages {
        let room = loop {
            let in_flight = sent - done(&progress);
            if in_flight < window {
                break window - in_flight;
            }
            listener!(progress.moved => moved);
            if sent - done(&progress) < window {
                continue;
            }
            moved.await;
        };
        let n = room.min(messages - sent).min(per_write);
        batch.clear();
        for _ in 0..n {
            batch.extend_from_slice(&command);
        }
        writer.write_all(&batch).await?;
        sent += n;
    }
    Ok(())
}
