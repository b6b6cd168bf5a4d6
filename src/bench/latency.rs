//! Latency: an aggregate rate spread over N pairs; each message carries its
//! send time, and receivers record one-way latency in an HDR histogram.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use smol::{Executor, Timer};

use super::peers::Peer;
use super::report::{Report, Usage};
use super::Target;
use super::{
    await_registered, get_hex, login, login_receiver, put_hex, FrameTemplate, LatencyArgs,
};
use crate::client::wire::{ClientWire, ServerWireDecoder};
use crate::net::transport::Transport;
use crate::wire::framing::FrameReader;
use crate::wire::v1::ServerFrame;

/// Latencies, in nanoseconds: 1 ns to 60 s at three significant figures.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Percentiles of `histogram` in microseconds: p50, p90, p99, p99.9, max.
pub fn percentiles_us(histogram: &Histogram<u64>) -> [f64; 5] {
    let us = |ns: u64| ns as f64 / 1000.0;
    [
        us(histogram.value_at_quantile(0.50)),
        us(histogram.value_at_quantile(0.90)),
        us(histogram.value_at_quantile(0.99)),
        us(histogram.value_at_quantile(0.999)),
        us(histogram.max()),
    ]
}

/// One pair's shared counters.
struct Pair {
    sent: AtomicU64,
    received: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
}

impl Default for Pair {
    fn default() -> Self {
        Pair {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            latencies: Mutex::new(new_histogram()),
        }
    }
}

/// Records one message's latency as of `now` (nanoseconds since the
/// origin), from the send time stamped in its content.
fn record_latency(latencies: &mut Histogram<u64>, now: u64, content: &[u8]) {
    if let Some(stamp) = content.get(16..).and_then(get_hex) {
        let _ = latencies.record(now.saturating_sub(stamp).max(1));
    }
}

/// Lets what is in flight arrive: waits until every pair received what it
/// sent, for at most 2 s.
async fn wait_for_in_flight(pairs: &[Arc<Pair>]) {
    let drain_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < drain_until
        && pairs
            .iter()
            .any(|p| p.received.load(Ordering::Acquire) < p.sent.load(Ordering::Acquire))
    {
        Timer::after(Duration::from_millis(10)).await;
    }
}

/// Runs the case.
pub async fn run(
    ex: &Arc<Executor<'static>>,
    target: &Target,
    args: &LatencyArgs,
) -> io::Result<Report> {
    if let Some(peer) = args.peer {
        return run_peer(ex, peer, target.addr, args).await;
    }
    let tag = std::process::id() % 100_000;
    let timeout = args.common.timeout;
    let mut streams = Vec::new();
    for i in 0..args.pairs {
        let (sender, receiver) = (format!("l{tag}s{i}"), format!("l{tag}r{i}"));
        let r = login_receiver(target, &receiver).await?;
        let s = login(target, &sender).await?;
        await_registered(&r, &receiver, target.wire, timeout).await?;
        await_registered(&s, &sender, target.wire, timeout).await?;
        streams.push((s, r, receiver));
    }
    target.settle().await;
    let origin = Instant::now();
    let usage = Usage::start(args.common.pid);
    let per_pair = args.rate as f64 / args.pairs as f64;
    let end = origin + args.duration;
    let mut pairs = Vec::new();
    let mut tasks = Vec::new();
    let mut spinning = Vec::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (s, r, receiver) in streams {
        let pair = Arc::new(Pair::default());
        if args.spin {
            spinning.push((r.into_tcp()?, Arc::clone(&pair)));
        } else {
            ex.spawn(receive(r, origin, Arc::clone(&pair), target.wire))
                .detach();
        }
        let template = FrameTemplate::new(&receiver, usize::from(args.size), target.wire);
        tasks.push(ex.spawn(send(s, template, origin, end, per_pair, Arc::clone(&pair))));
        pairs.push(pair);
    }
    let spinner = (!spinning.is_empty()).then(|| {
        let stop = Arc::clone(&stop);
        let wire = target.wire;
        std::thread::spawn(move || spin_receive(spinning, origin, wire, &stop))
    });
    let mut streams_kept = Vec::new();
    for task in tasks {
        streams_kept.push(task.await?);
    }
    wait_for_in_flight(&pairs).await;

    stop.store(true, Ordering::Release);
    if let Some(spinner) = spinner {
        let _ = spinner.join();
    }
    let mut report = report(args, &pairs);
    usage.finish(&mut report);
    drop(streams_kept);
    Ok(report)
}

/// Runs the case against another server (`--peer`): each pair's receiver
/// subscribes to a subject of its own, its sender publishes to it.
async fn run_peer(
    ex: &Arc<Executor<'static>>,
    peer: Peer,
    addr: std::net::SocketAddr,
    args: &LatencyArgs,
) -> io::Result<Report> {
    let tag = std::process::id() % 100_000;
    let mut streams = Vec::new();
    for i in 0..args.pairs {
        let subject = format!("pmbench.{tag}.{i}");
        let receiver = peer.subscriber(addr, &subject).await?;
        let sender = peer.publisher(addr).await?;
        streams.push((sender, receiver, subject));
    }
    let origin = Instant::now();
    let usage = Usage::start(args.common.pid);
    let per_pair = args.rate as f64 / args.pairs as f64;
    let end = origin + args.duration;
    let mut pairs = Vec::new();
    let mut tasks = Vec::new();
    for (mut sender, mut receiver, subject) in streams {
        let pair = Arc::new(Pair::default());
        let receiving = Arc::clone(&pair);
        ex.spawn(async move {
            let mut received = 0;
            receiver
                .receive(|payload| {
                    let now = origin.elapsed().as_nanos() as u64;
                    let mut latencies = receiving
                        .latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    record_latency(&mut latencies, now, payload);
                    received += 1;
                    receiving.received.store(received, Ordering::Release);
                })
                .await
        })
        .detach();
        // Redis answers every PUBLISH: read and dropped.
        ex.spawn(sender.discard_replies()?).detach();
        let mut payload = vec![b'x'; usize::from(args.size)];
        let sending = Arc::clone(&pair);
        tasks.push(ex.spawn(async move {
            let started = Instant::now();
            let mut batch = Vec::new();
            let mut sent: u64 = 0;
            while Instant::now() < end {
                let due = ((Instant::now() - started).as_secs_f64() * per_pair) as u64 + 1;
                if due > sent {
                    batch.clear();
                    let stamp = origin.elapsed().as_nanos() as u64;
                    for seq in sent..due {
                        put_hex(&mut payload[..16], seq);
                        put_hex(&mut payload[16..32], stamp);
                        peer.encode_publish(&subject, &payload, &mut batch);
                    }
                    sender.write_all(&batch).await?;
                    sent = due;
                    sending.sent.store(sent, Ordering::Release);
                }
                Timer::at(started + Duration::from_secs_f64(sent as f64 / per_pair)).await;
            }
            io::Result::Ok(sender)
        }));
        pairs.push(pair);
    }
    let mut kept = Vec::new();
    for task in tasks {
        kept.push(task.await?);
    }
    wait_for_in_flight(&pairs).await;
    let mut report = report(args, &pairs);
    report.line(format!("peer: {peer:?}"));
    usage.finish(&mut report);
    drop(kept);
    Ok(report)
}

/// The report of one run, from every pair's counts and latencies.
fn report(args: &LatencyArgs, pairs: &[Arc<Pair>]) -> Report {
    let mut all = new_histogram();
    let (mut sent, mut received) = (0, 0);
    for pair in pairs {
        sent += pair.sent.load(Ordering::Acquire);
        received += pair.received.load(Ordering::Acquire);
        if let Ok(h) = pair.latencies.lock() {
            let _ = all.add(&*h);
        }
    }
    let lost = sent.saturating_sub(received);
    let [p50, p90, p99, p999, max] = percentiles_us(&all);
    let achieved = sent as f64 / args.duration.as_secs_f64();
    let mut report = Report::new("latency");
    report.ok = lost == 0 && received > 0;
    report.int("pairs", args.pairs as u64);
    report.int("rate", args.rate);
    report.float("achieved_rate", achieved);
    report.int("size", u64::from(args.size));
    report.int("sent", sent);
    report.int("received", received);
    report.int("lost", lost);
    report.float("p50_us", p50);
    report.float("p90_us", p90);
    report.float("p99_us", p99);
    report.float("p999_us", p999);
    report.float("max_us", max);
    report.line(format!(
        "latency: {} pairs at {} msgs/s ({achieved:.0} achieved) for {:?}, {} bytes",
        args.pairs, args.rate, args.duration, args.size
    ));
    report.line(format!(
        "one-way µs: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}"
    ));
    report.line(format!("sent {sent}, received {received}, lost {lost}"));
    report
}

/// Sends at `rate` messages per second until `end`, each stamped with its
/// send time (nanoseconds since `origin`). Returns the stream so it stays
/// open while the last messages arrive.
async fn send(
    stream: Transport,
    template: FrameTemplate,
    origin: Instant,
    end: Instant,
    rate: f64,
    pair: Arc<Pair>,
) -> io::Result<Transport> {
    let started = Instant::now();
    let mut batch = Vec::new();
    let mut sent: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(stream);
        }
        let due = ((now - started).as_secs_f64() * rate) as u64 + 1;
        if due > sent {
            batch.clear();
            let stamp = origin.elapsed().as_nanos() as u64;
            for seq in sent..due {
                template.push(&mut batch, &[seq, stamp]);
            }
            stream.write_all(&batch).await?;
            sent = due;
            pair.sent.store(sent, Ordering::Release);
        }
        let next = started + Duration::from_secs_f64(sent as f64 / rate);
        Timer::at(next).await;
    }
}

/// Records the latency of every message that arrives.
async fn receive(
    stream: Transport,
    origin: Instant,
    pair: Arc<Pair>,
    wire: ClientWire,
) -> io::Result<()> {
    let mut input = FrameReader::new(wire.decoder());
    let mut received = 0;
    loop {
        if stream.read(&mut input).await? == 0 {
            return Ok(());
        }
        received += record_latencies(&mut input, origin, &pair);
        pair.received.store(received, Ordering::Release);
    }
}

/// Records the latency of every whole message in `input`, as of now;
/// returns how many there were.
fn record_latencies(
    input: &mut FrameReader<ServerWireDecoder>,
    origin: Instant,
    pair: &Pair,
) -> u64 {
    let now = origin.elapsed().as_nanos() as u64;
    let mut latencies = pair.latencies.lock().unwrap_or_else(|e| e.into_inner());
    let mut count = 0;
    while let Ok(Some(frame)) = input.next_frame() {
        if let ServerFrame::Message { content, .. } = frame {
            record_latency(&mut latencies, now, content);
            count += 1;
        }
    }
    count
}

/// Receives on every stream by busy-polling non-blocking reads on one
/// thread, so that the generator's own wake-up latency stays out of the
/// measurement (at the price of a core).
fn spin_receive(
    streams: Vec<(std::net::TcpStream, Arc<Pair>)>,
    origin: Instant,
    wire: ClientWire,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut inputs: Vec<_> = streams
        .iter()
        .map(|_| FrameReader::new(wire.decoder()))
        .collect();
    let mut counts = vec![0u64; streams.len()];
    while !stop.load(Ordering::Acquire) {
        for (i, (stream, pair)) in streams.iter().enumerate() {
            let input = &mut inputs[i];
            if !matches!(input.read_from(stream), Ok(n) if n > 0) {
                continue;
            }
            counts[i] += record_latencies(input, origin, pair);
            pair.received.store(counts[i], Ordering::Release);
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let mut h = new_histogram();
        for ns in 1..=1000u64 {
            h.record(ns * 1000).unwrap();
        }
        let [p50, p90, p99, p999, max] = percentiles_us(&h);
        assert!((p50 - 500.0).abs() < 1.0, "{p50}");
        assert!((p90 - 900.0).abs() < 1.0, "{p90}");
        assert!((p99 - 990.0).abs() < 1.0, "{p99}");
        assert!((p999 - 999.0).abs() < 1.0, "{p999}");
        assert!((max - 1000.0).abs() < 1.0, "{max}");
    }
}
