//! Throughput: N sender → receiver pairs; each sender sends M messages with
//! at most W in flight; receivers check sender, content and order.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use event_listener::{listener, Event};

use smol::Executor;

use super::report::{Report, Usage};
use super::Target;
use super::{
    await_registered, get_hex, login, login_receiver, FrameTemplate, OrderCheck, ThroughputArgs,
};
use crate::client::wire::ClientWire;
use crate::net::transport::Transport;
use crate::wire::framing::FrameReader;
use crate::wire::v1::{self, ServerFrame};

/// Bytes of frames per sender write.
const WRITE_BATCH: usize = 64 * 1024;

/// What the far end of a sender tells it: its receiver here, its
/// receipts reader in the `stored` case.
#[derive(Default)]
pub(super) struct Progress {
    /// Messages received (or otherwise accounted for) so far.
    pub(super) received: AtomicU64,
    /// Wakes the sender when `received` moves.
    pub(super) moved: Event,
}

/// A receiver's final counts.
#[derive(Default)]
struct Tally {
    received: u64,
    ordering_errors: u64,
    error_frames: u64,
}

/// Runs the case.
pub async fn run(
    ex: &Arc<Executor<'static>>,
    target: &Target,
    args: &ThroughputArgs,
) -> io::Result<Report> {
    if args.sealed && target.wire != ClientWire::V1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--sealed needs the v1 wire",
        ));
    }
    let tag = std::process::id() % 100_000;
    let names: Vec<(String, String)> = (0..args.pairs)
        .map(|i| (format!("t{tag}s{i}"), format!("t{tag}r{i}")))
        .collect();
    let timeout = args.common.timeout;
    // Receivers first, each proven registered, then the senders.
    let hello = |features: &[&str]| {
        let mut hello = Vec::new();
        let features = std::iter::once(v1::FEATURE_BASE)
            .chain(features.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        v1::encode_hello(&features, &mut hello)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok::<_, io::Error>(hello)
    };
    let sealed_features = [v1::FEATURE_CODES, v1::FEATURE_SEALED];
    let mut sender_features = Vec::new();
    if args.receipts {
        sender_features.push(v1::FEATURE_RECEIPTS);
    }
    if args.sealed {
        sender_features.extend(sealed_features);
    }
    let mut pairs = Vec::new();
    for (sender, receiver) in &names {
        let r = login_receiver(target, receiver).await?;
        if args.sealed {
            r.write_all(&hello(&sealed_features)?).await?;
        }
        let s = login(target, sender).await?;
        if !sender_features.is_empty() {
            s.write_all(&hello(&sender_features)?).await?;
        }
        pairs.push((s, r));
    }
    // What each message carries, and where its sequence number goes.
    let (content, slots_at) = match args.sealed {
        true => (
            super::crypto::one_way_envelope(usize::from(args.size)).map_err(io::Error::other)?,
            super::crypto::SEALED_SLOTS_AT,
        ),
        false => (vec![b'x'; usize::from(args.size)], 0),
    };
    for ((s, r), (sender, receiver)) in pairs.iter().zip(&names) {
        await_registered(r, receiver, target.wire, timeout).await?;
        await_registered(s, sender, target.wire, timeout).await?;
    }
    target.settle().await;

    let usage = Usage::start(args.common.pid);
    let started = Instant::now();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let sender_errors = Arc::new(AtomicU64::new(0));
    for ((s, r), (sender, receiver)) in pairs.into_iter().zip(names) {
        let progress = Arc::new(Progress::default());
        let wire = target.wire;
        receivers.push(ex.spawn(receive(
            r,
            (sender, slots_at),
            args.messages,
            wire,
            Arc::clone(&progress),
        )));
        ex.spawn(count_errors(s.clone(), wire, Arc::clone(&sender_errors)))
            .detach();
        let template = FrameTemplate::with_content(&receiver, &content, slots_at, wire);
        senders.push(ex.spawn(send(s, template, args.messages, args.window, progress)));
    }
    let mut tally = Tally::default();
    let deadline = Instant::now() + timeout;
    for receiver in receivers {
        if let Some(Ok(t)) = crate::runtime::until(deadline, receiver).await {
            tally.received += t.received;
            tally.ordering_errors += t.ordering_errors;
            tally.error_frames += t.error_frames;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(senders);
    let sender_errors = sender_errors.load(Ordering::Relaxed);
    let mut report = report(args, &tally, sender_errors, elapsed);
    report.int("content_bytes", content.len() as u64);
    if args.sealed {
        report.line(format!(
            "each a sealed envelope of {} bytes ({} bytes of plaintext)",
            content.len(),
            args.size
        ));
    }
    usage.finish(&mut report);
    Ok(report)
}

/// The report of one run.
fn report(args: &ThroughputArgs, tally: &Tally, sender_errors: u64, elapsed: f64) -> Report {
    let expected = args.messages * args.pairs as u64;
    let error_frames = tally.error_frames + sender_errors;
    let complete = tally.received == expected;
    let rate = tally.received as f64 / elapsed;
    let mb = rate * f64::from(args.size) / 1e6;
    let mut report = Report::new("throughput");
    report.ok = complete && tally.ordering_errors == 0 && error_frames == 0;
    report.int("pairs", args.pairs as u64);
    report.int("messages", args.messages);
    report.int("size", u64::from(args.size));
    report.int("window", args.window);
    report.flag("receipts", args.receipts);
    report.flag("sealed", args.sealed);
    report.int("delivered", tally.received);
    report.float("elapsed_s", elapsed);
    report.float("msgs_per_s", rate);
    report.float("mb_per_s", mb);
    report.int("ordering_errors", tally.ordering_errors);
    report.int("error_frames", error_frames);
    report.flag("complete", complete);
    report.line(format!(
        "throughput: {} pairs x {} messages of {} bytes (window {}{})",
        args.pairs,
        args.messages,
        args.size,
        args.window,
        if args.receipts { ", receipts" } else { "" }
    ));
    report.line(format!(
        "delivered {}/{} in {elapsed:.3} s: {rate:.0} msgs/s, {mb:.1} MB/s of content",
        tally.received, expected
    ));
    report.line(format!(
        "ordering errors {}, error frames {}, {}",
        tally.ordering_errors,
        error_frames,
        if complete {
            "all arrived"
        } else {
            "INCOMPLETE"
        }
    ));
    report
}

/// Sends `messages` copies of `template` numbered 0.., keeping at most
/// `window` in flight.
pub(super) async fn send(
    stream: Transport,
    template: FrameTemplate,
    messages: u64,
    window: u64,
    progress: Arc<Progress>,
) -> io::Result<()> {
    let per_write = (WRITE_BATCH / template.len()).max(1) as u64;
    let mut batch = Vec::with_capacity(WRITE_BATCH + template.len());
    let mut sent = 0;
    while sent < messages {
        let room = loop {
            let in_flight = sent - progress.received.load(Ordering::Acquire);
            if in_flight < window {
                break window - in_flight;
            }
            listener!(progress.moved => moved);
            if sent - progress.received.load(Ordering::Acquire) < window {
                continue;
            }
            moved.await;
        };
        let n = room.min(messages - sent).min(per_write);
        batch.clear();
        for seq in sent..sent + n {
            template.push(&mut batch, &[seq]);
        }
        stream.write_all(&batch).await?;
        sent += n;
    }
    Ok(())
}

/// Reads a sender's socket to count error frames and refusals (and so
/// that the server never sees it as a slow consumer); receipts that accept
/// are read and dropped.
async fn count_errors(stream: Transport, wire: ClientWire, errors: Arc<AtomicU64>) {
    let mut input = FrameReader::new(wire.decoder());
    while let Ok(n) = stream.read(&mut input).await {
        if n == 0 {
            return;
        }
        while let Ok(Some(frame)) = input.next_frame() {
            if matches!(
                frame,
                ServerFrame::Error { .. } | ServerFrame::Refused { .. }
            ) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Receives `messages` from `sender`, checking name and order (the
/// sequence number from byte `slots_at` of the content).
async fn receive(
    stream: Transport,
    (sender, slots_at): (String, usize),
    messages: u64,
    wire: ClientWire,
    progress: Arc<Progress>,
) -> io::Result<Tally> {
    // Large reads: many small frames per syscall.
    let mut input = FrameReader::with_read_size(wire.decoder(), 256 * 1024);
    let mut order = OrderCheck::default();
    let mut tally = Tally::default();
    while tally.received < messages {
        if stream.read(&mut input).await? == 0 {
            break;
        }
        loop {
            match input.next_frame() {
                Ok(Some(frame)) => match frame {
                    ServerFrame::Message { from, content } => {
                        if from == sender.as_bytes() {
                            order.arrived(content.get(slots_at..).and_then(get_hex));
                        } else {
                            order.errors += 1;
                        }
                        tally.received += 1;
                    }
                    // The answer to a HELLO asking for sealed content.
                    ServerFrame::Welcome { .. } => {}
                    _ => tally.error_frames += 1,
                },
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        progress.received.store(tally.received, Ordering::Release);
        progress.moved.notify(usize::MAX);
    }
    tally.ordering_errors = order.errors;
    Ok(tally)
}
