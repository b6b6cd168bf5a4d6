//! Idle connections: hold K logged-in connections, check the server still
//! routes, and measure its memory per connection (with `--pid`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::io::AsyncWriteExt;
use smol::{Async, Executor, Timer};
use socket2::{Domain, Socket, Type};

use super::report::{Report, Usage};
use super::{await_registered, ConnsArgs};
use crate::client::wire::ClientWire;
use crate::net::transport::Transport;
use crate::sys;
use crate::wire::framing::FrameReader;
use crate::wire::v1;

/// Connections opened at once.
const CONCURRENCY: usize = 256;
/// Connections per loopback source address (the ephemeral port range has
/// about 28,000 ports per source address and destination).
const PER_SOURCE: usize = 10_000;
/// Connections checked for liveness once all are up.
const PROBES: usize = 100;

/// Runs the case.
pub async fn run(
    ex: &Arc<Executor<'static>>,
    addr: SocketAddr,
    args: &ConnsArgs,
) -> io::Result<Report> {
    let limit = sys::raise_open_files_limit()?;
    if (limit as usize) < args.count + 64 {
        return Err(io::Error::other(format!(
            "open files limit {limit} is too low for {} connections",
            args.count
        )));
    }
    let tag = std::process::id() % 100_000;
    let pid = args.common.pid;
    let rss_before = pid.and_then(sys::rss_kib);
    let usage = Usage::start(pid);
    let started = Instant::now();
    let mut streams: Vec<Transport> = Vec::with_capacity(args.count);
    for chunk_start in (0..args.count).step_by(CONCURRENCY) {
        let chunk_end = (chunk_start + CONCURRENCY).min(args.count);
        let tasks: Vec<_> = (chunk_start..chunk_end)
            .map(|i| ex.spawn(open(addr, i, format!("c{tag}-{i}"))))
            .collect();
        for task in tasks {
            streams.push(Transport::tcp(task.await?));
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let streams = Arc::new(streams);
    let mut report = Report::new("conns");
    // Liveness: a spread of connections each get their own message back.
    let step = (args.count / PROBES).max(1);
    let mut live = 0;
    for i in (0..args.count).step_by(step) {
        let name = format!("c{tag}-{i}");
        await_registered(&streams[i], &name, ClientWire::V1, args.common.timeout).await?;
        live += 1;
    }
    if args.burst > 0 {
        burst_all(ex, &streams, tag, args).await?;
        report.line(format!(
            "conns: each connection sent itself {} × {} bytes and read them back",
            args.burst, args.burst_size
        ));
    }
    Timer::after(args.hold).await;
    let rss_held = pid.and_then(sys::rss_kib);
    usage.finish(&mut report);
    drop(streams);
    // Give the server a moment to notice every close.
    Timer::after(Duration::from_secs(2)).await;
    let rss_after = pid.and_then(sys::rss_kib);

    report.int("count", args.count as u64);
    report.float("connect_s", connect_s);
    report.int("live_checks", live);
    report.line(format!(
        "conns: {} idle connections up in {connect_s:.2} s; {live} liveness checks passed",
        args.count
    ));
    if let (Some(before), Some(held), Some(after)) = (rss_before, rss_held, rss_after) {
        let per_conn = (held.saturating_sub(before) * 1024) as f64 / args.count as f64;
        report.int("rss_before_kib", before);
        report.int("rss_held_kib", held);
        report.int("rss_after_kib", after);
        report.float("bytes_per_conn", per_conn);
        report.line(format!(
            "server RSS: {before} KiB before, {held} KiB with them ({per_conn:.0} bytes each), {after} KiB after they left"
        ));
    }
    Ok(report)
}

/// Has every connection send itself a burst and read it back, a chunk of
/// connections at a time.
async fn burst_all(
    ex: &Arc<Executor<'static>>,
    streams: &Arc<Vec<Transport>>,
    tag: u32,
    args: &ConnsArgs,
) -> io::Result<()> {
    for chunk_start in (0..args.count).step_by(CONCURRENCY) {
        let chunk_end = (chunk_start + CONCURRENCY).min(args.count);
        let tasks: Vec<_> = (chunk_start..chunk_end)
            .map(|i| {
                let streams = Arc::clone(streams);
                let name = format!("c{tag}-{i}");
                let (count, size, timeout) = (args.burst, args.burst_size, args.common.timeout);
                ex.spawn(async move { burst(&streams[i], &name, count, size, timeout).await })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
    }
    Ok(())
}

/// Sends `count` messages of `size` bytes to ourselves and reads them all
/// back.
async fn burst(
    stream: &Transport,
    name: &str,
    count: usize,
    size: u16,
    timeout: Duration,
) -> io::Result<()> {
    await_registered(stream, name, ClientWire::V1, timeout).await?;
    let content = vec![b'b'; usize::from(size)];
    let mut frames = Vec::new();
    for _ in 0..count {
        v1::encode_message(name.as_bytes(), &content, &mut frames)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    stream.write_all(&frames).await?;
    let mut input = FrameReader::new(ClientWire::V1.decoder());
    let read_back = async {
        let mut left = count;
        while left > 0 {
            if stream.read(&mut input).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            while let Ok(Some(_)) = input.next_frame() {
                left = left.saturating_sub(1);
            }
        }
        Ok(())
    };
    crate::runtime::timeout(timeout, read_back)
        .await
        .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
}

/// Opens connection `i`, from its own loopback source address when the
/// server is on loopback, and logs in as `name`.
async fn open(addr: SocketAddr, i: usize, name: String) -> io::Result<Async<TcpStream>> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let IpAddr::V4(ip) = addr.ip() {
        if ip.is_loopback() {
            // A fresh range of source addresses per run: the previous
            // run's ports may still be in TIME_WAIT.
            let run = (std::process::id() % 250) as u8;
            let source = Ipv4Addr::new(127, 1 + run, (i / PER_SOURCE) as u8, 1);
            socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
        }
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = Async::new(TcpStream::from(socket))?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    let mut hello = Vec::new();
    v1::encode_handshake(name.as_bytes(), &mut hello)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    (&stream).write_all(&hello).await?;
    Ok(stream)
}
