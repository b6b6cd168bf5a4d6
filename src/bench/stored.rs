//! Stored: N senders each send M messages to a registered name nobody is
//! logged in to, on a server with `--store`; a message counts once its
//! STORED receipt arrived, which the server sends only after the message
//! is committed and fsynced. The recipients' names are written into the
//! accounts file the server reads (`--accounts-file`), which it picks up
//! within a second.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::Executor;

use super::report::{Report, Usage};
use super::{login, throughput, FrameTemplate, StoredArgs, Target};
use crate::client::wire::ClientWire;
use crate::net::transport::Transport;
use crate::wire::framing::FrameReader;
use crate::wire::v1::{self, ServerFrame};

/// What a sender's receipt reader tells it (the sender waits on
/// `window`: messages accounted for, stored, accepted or refused) and the
/// summary.
#[derive(Default)]
struct Progress {
    window: Arc<throughput::Progress>,
    stored: AtomicU64,
    refused: AtomicU64,
}

/// Runs the case.
pub async fn run(
    ex: &Arc<Executor<'static>>,
    target: &Target,
    args: &StoredArgs,
) -> io::Result<Report> {
    // The same names at every run: a server refuses a reload of its
    // accounts that would unregister most names.
    let tag = std::process::id() % 100_000;
    let recipients: Vec<String> = (0..args.pairs)
        .map(|i| format!("bench-stored-{i}"))
        .collect();
    let Some(accounts) = &args.accounts_file else {
        return Err(io::Error::other("--accounts-file FILE is needed"));
    };
    write_accounts(accounts, &recipients)?;
    let mut senders = Vec::new();
    for i in 0..args.pairs {
        let s = login(target, &format!("t{tag}w{i}")).await?;
        let mut hello = Vec::new();
        let features = format!(
            "{} {} {}",
            v1::FEATURE_BASE,
            v1::FEATURE_RECEIPTS,
            v1::FEATURE_STORED
        );
        v1::encode_hello(&features, &mut hello)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        s.write_all(&hello).await?;
        senders.push(s);
    }
    // The server reads the accounts file again within a second of a
    // change: until it has, a message to a recipient is refused.
    let mut probes = Vec::new();
    for (s, to) in senders.iter().zip(&recipients) {
        probes.push(await_storing(s, to, args.common.timeout).await?);
    }

    let usage = Usage::start(args.common.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut progress = Vec::new();
    for ((s, to), probes) in senders.into_iter().zip(&recipients).zip(probes) {
        let p = Arc::new(Progress::default());
        let reader = read_receipts(s.clone(), probes, args.messages, Arc::clone(&p));
        tasks.push(ex.spawn(reader));
        let template = FrameTemplate::new(to, usize::from(args.size), ClientWire::V1);
        let window = Arc::clone(&p.window);
        ex.spawn(throughput::send(
            s,
            template,
            args.messages,
            args.window,
            window,
        ))
        .detach();
        progress.push(p);
    }
    let deadline = Instant::now() + args.common.timeout;
    for task in tasks {
        let _ = crate::runtime::until(deadline, task).await;
    }
    let stored: u64 = progress
        .iter()
        .map(|p| p.stored.load(Ordering::Relaxed))
        .sum();
    let refused: u64 = progress
        .iter()
        .map(|p| p.refused.load(Ordering::Relaxed))
        .sum();
    let mut report = summary(
        args,
        started,
        stored,
        refused,
        "to offline registered names ",
        "stored (fsynced)",
    );
    usage.finish(&mut report);
    Ok(report)
}

/// The case's report, for pmchat's store and the durable peers alike:
/// `kept` messages acknowledged as kept and `refused` refused since
/// `started`. `to` says where they went, `kept_as` what counted them.
pub(super) fn summary(
    args: &StoredArgs,
    started: Instant,
    kept: u64,
    refused: u64,
    to: &str,
    kept_as: &str,
) -> Report {
    let elapsed = started.elapsed().as_secs_f64();
    let expected = args.messages * args.pairs as u64;
    let rate = kept as f64 / elapsed;
    let mut report = Report::new("stored");
    report.ok = kept == expected && refused == 0;
    report.int("pairs", args.pairs as u64);
    report.int("messages", args.messages);
    report.int("size", u64::from(args.size));
    report.int("window", args.window);
    report.int("stored", kept);
    report.int("delivered", kept);
    report.int("refused", refused);
    report.float("elapsed_s", elapsed);
    report.float("msgs_per_s", rate);
    report.float("mb_per_s", rate * f64::from(args.size) / 1e6);
    report.line(format!(
        "stored: {} senders x {} messages of {} bytes {to}(window {})",
        args.pairs, args.messages, args.size, args.window
    ));
    report.line(format!(
        "{kept_as} {kept}/{expected} in {elapsed:.3} s: {rate:.0} msgs/s, {refused} refused"
    ));
    report
}

/// Writes the accounts file: the recipients, all with one throwaway
/// password (nobody logs in to them).
fn write_accounts(path: &Path, names: &[String]) -> io::Result<()> {
    let hash = crate::server::accounts::hash_password(b"unused").map_err(io::Error::other)?;
    let mut text = String::from("# written by chat-bench stored\n");
    for name in names {
        text.push_str(&format!("{name}:{hash}\n"));
    }
    let temporary = path.with_extension("chat-bench-tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// Sends one message to `to` until it comes back STORED (the server has
/// the accounts and a store); the probes are not counted. How many were
/// sent: the ordinals they took.
async fn await_storing(stream: &Transport, to: &str, timeout: Duration) -> io::Result<u64> {
    let mut probe = Vec::new();
    v1::encode_message(to.as_bytes(), b"probe", &mut probe)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut input = FrameReader::new(ClientWire::V1.decoder());
    let deadline = Instant::now() + timeout;
    let mut ordinal = 0;
    loop {
        stream.write_all(&probe).await?;
        ordinal += 1;
        loop {
            let frame = loop {
                if let Ok(Some(frame)) = input.next_frame() {
                    break frame;
                }
                let read = crate::runtime::until(deadline, stream.read(&mut input)).await;
                match read {
                    Some(Ok(n)) if n > 0 => {}
                    _ => return Err(io::Error::new(io::ErrorKind::TimedOut, "no store answered")),
                }
            };
            match frame {
                ServerFrame::Stored { last, .. } if last == ordinal => return Ok(ordinal),
                ServerFrame::Refused { ordinal: n, .. } if n == ordinal => break,
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the server never stored a message: does it run with --store and --accounts FILE?",
            ));
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Reads a sender's receipts until its `messages`, numbered after the
/// `probes`, are accounted for.
async fn read_receipts(
    stream: Transport,
    probes: u64,
    messages: u64,
    progress: Arc<Progress>,
) -> io::Result<()> {
    let mut input = FrameReader::new(ClientWire::V1.decoder());
    let mut accounted = 0;
    while accounted < messages {
        if stream.read(&mut input).await? == 0 {
            break;
        }
        while let Ok(Some(frame)) = input.next_frame() {
            let (last, stored, refused) = match frame {
                ServerFrame::Stored { first, last } => (last, last - first + 1, 0),
                ServerFrame::Refused { ordinal, .. } => (ordinal, 0, 1),
                ServerFrame::Accepted { through } => (through, 0, 0),
                _ => continue,
            };
            accounted = accounted.max(last.saturating_sub(probes));
            progress.stored.fetch_add(stored, Ordering::Relaxed);
            progress.refused.fetch_add(refused, Ordering::Relaxed);
        }
        progress.window.received.store(accounted, Ordering::Release);
        progress.window.moved.notify(usize::MAX);
    }
    Ok(())
}
