//! Regressions from the hardening review, through the real `chat-client`:
//! floods, hostile servers, dead pipes, names and limits, time stamps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    client_command, message, run_client, spawn_follower, spawn_piped, Follower, ServerProcess,
    TIMEOUT,
};
use crate::eqnice;

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Bounds every `--follow` receiver must stay within, whatever it is sent.
const FOLLOWER_RSS_LIMIT_KIB: u64 = 32 * 1024;

#[test]
fn json_output_escapes_bidi_overrides_and_line_separators() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &["--json"]);
    let mut mallory = server.login("mallory");
    // bob's JSON first shows mallory joining.
    let _joined = bob.line();
    mallory.send(
        "bob",
        "pay \u{202e}0015\u{202c} now\u{2028}second\u{2066}x\u{2069}",
    );
    let line = bob.line();
    for raw in ['\u{202e}', '\u{202c}', '\u{2028}', '\u{2066}', '\u{2069}'] {
        assert!(!line.contains(raw), "raw {raw:?} in {line:?}");
    }
    for escaped in ["\\u202e", "\\u202c", "\\u2028", "\\u2066", "\\u2069"] {
        assert!(line.contains(escaped), "no {escaped} in {line:?}");
    }
    // Still the same string once parsed.
    let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    eqnice!(
        "pay \u{202e}0015\u{202c} now\u{2028}second\u{2066}x\u{2069}",
        value["content"].as_str().unwrap()
    );
}

/// Floods `bob` with 2 KiB messages from a raw client until `stop`.
fn flood(server: &mut ServerProcess, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let mut flooder = server.login("flooder");
    thread::spawn(move || {
        let frame = message(b"bob", &[b'f'; 2048]);
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 32)
            .collect();
        while !stop.load(Ordering::SeqCst) {
            if flooder.stream.write_all(&batch).is_err() {
                break;
            }
        }
    })
}

#[test]
fn a_flooded_follower_writes_as_it_goes_and_stays_small() {
    let mut server = ServerProcess::start(&["-q"]);
    let mut bob = spawn_follower(server.port, "bob", &[], Stdio::piped(), Stdio::null());
    server.wait_online("bob");
    let mut stdout = bob.0.stdout.take().unwrap();
    let lines_read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&lines_read);
    thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            counter.fetch_add(newlines, Ordering::SeqCst);
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(&mut server, Arc::clone(&stop));
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(3) {
        if let Some((rss, _)) = memory_kib(bob.0.id()) {
            peak = peak.max(rss);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let (_, hwm) = memory_kib(bob.0.id()).expect("bob is still running");
    stop.store(true, Ordering::SeqCst);
    drop(server);
    let _ = flooder.join();
    assert!(
        lines_read.load(Ordering::SeqCst) > 0,
        "nothing was written while the flood went on"
    );
    assert!(
        hwm.max(peak) < FOLLOWER_RSS_LIMIT_KIB,
        "peak RSS {} KiB",
        hwm.max(peak)
    );
}

#[test]
fn a_follower_whose_stdout_blocks_stops_reading_and_stays_small() {
    let mut server = ServerProcess::start(&["-q", "--slow-consumer-timeout", "500ms"]);
    let mut bob = spawn_follower(
        server.port,
        "bob",
        &["--drain-timeout", "300ms"],
        Stdio::piped(),
        Stdio::null(),
    );
    server.wait_online("bob");
    // Nobody reads bob's stdout: the pipe fills and stays full.
    let _stdout = bob.0.stdout.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(&mut server, Arc::clone(&stop));
    // The server's slow-consumer rule ends it, not the client's memory.
    server.wait_offline("bob");
    let (_, hwm) = memory_kib(bob.0.id()).expect("bob is still running");
    stop.store(true, Ordering::SeqCst);
    let _ = flooder.join();
    assert!(hwm < FOLLOWER_RSS_LIMIT_KIB, "peak RSS {hwm} KiB");
    // Even stuck on its stdout, it still obeys SIGTERM.
    let status = Command::new("kill")
        .args(["-TERM", &bob.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    bob.wait();
}

#[test]
fn a_dead_stderr_does_not_abort_a_script() {
    let mut server = ServerProcess::start(&[]);
    let bob = Follower::start(&mut server, "bob", &[]);
    let mut alice = spawn_piped(client_command(server.port, "alice"));
    drop(alice.0.stderr.take());
    let mut stdin = alice.0.stdin.take().unwrap();
    stdin
        .write_all(b"frobnicate\nsend nobody hi\nsend bob after the bad lines\n")
        .unwrap();
    drop(stdin);
    eqnice!("alice: after the bad lines", bob.line());
    // A line was rejected and the server reported an error: status 1, not
    // a panic's 101.
    eqnice!(Some(1), alice.wait().code());
}

#[test]
fn names_with_a_colon_are_refused_locally() {
    let server = ServerProcess::start(&[]);
    let run = run_client(client_command(server.port, "bob:"), b"");
    eqnice!(2, run.status);
    assert!(run.stderr.contains("':' at position 3"), "{}", run.stderr);
    let run = run_client(client_command(server.port, "alice"), b"send bob: hi\n");
    eqnice!(1, run.status);
    eqnice!(
        "<stdin>:1: bad recipient 'bob:': ':' at position 3 is not allowed \
         (it would make 'name: message' lines ambiguous)\n",
        run.stderr
    );
}

#[test]
fn the_servers_limits_apply_to_the_username_too() {
    let mut server = ServerProcess::start(&["--max-username-bytes", "64"]);
    let long = "l".repeat(40);
    let bob = Follower::start(&mut server, &long, &[]);
    let run = run_client(
        client_command(server.port, &"a".repeat(50)),
        format!("send {long} from a long name\n").as_bytes(),
    );
    eqnice!("", run.stderr);
    eqnice!(0, run.status);
    eqnice!(format!("{}: from a long name", "a".repeat(50)), bob.line());
    // Over the server's limit: the server says so, exit 3.
    let run = run_client(client_command(server.port, &"a".repeat(65)), b"");
    eqnice!(3, run.status);
    eqnice!(
        "chat-client: error: invalid username: 65 bytes long (limit 64)\n",
        run.stderr
    );
}

/// A one-connection fake server: reads the client's handshake, HELLO and AUTH,
/// then runs `script` on the connection.
pub(crate) fn fake_server(script: impl FnOnce(TcpStream) + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut len = [0u8; 1];
            if stream.read_exact(&mut len).is_err() {
                return;
            }
            let mut rest = vec![0u8; len[0] as usize + 6];
            if stream.read_exact(&mut rest).is_err() {
                return;
            }
            let features = u16::from_be_bytes([rest[rest.len() - 2], rest[rest.len() - 1]]);
            let mut features = vec![0u8; features as usize];
            if stream.read_exact(&mut features).is_err() {
                return;
            }
            // The HELLO lists `password`, so an AUTH follows (empty here).
            let mut auth = [0u8; 6];
            if stream.read_exact(&mut auth).is_err() {
                return;
            }
            assert_eq!(auth, [0, 5, 0, 0, 0, 0], "an empty AUTH after HELLO");
            script(stream);
        }
    });
    port
}

pub(crate) fn pair(opcode: u16, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut frame = opcode.to_be_bytes().to_vec();
    frame.extend_from_slice(&(a.len() as u16).to_be_bytes());
    frame.extend_from_slice(&(b.len() as u16).to_be_bytes());
    frame.extend_from_slice(a);
    frame.extend_from_slice(b);
    frame
}

fn welcome() -> Vec<u8> {
    pair(2, b"evil/1", b"max_username=32 max_message=2048")
}

/// Runs a `--follow` client against a fake server that sends WELCOME,
/// then whatever `flood` writes, then a message `evil: done`; asserts the
/// client's peak RSS stayed under the limit.
fn assert_small_after(flood: impl FnOnce(&mut TcpStream) + Send + 'static) {
    let port = fake_server(|mut stream| {
        let _ = stream.write_all(&welcome());
        flood(&mut stream);
        let _ = stream.write_all(&pair(0, b"evil", b"done"));
        thread::sleep(TIMEOUT);
    });
    let mut client = spawn_follower(port, "victim", &[], Stdio::piped(), Stdio::null());
    let stdout = BufReader::new(client.0.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads on after the last line: a reader that went away would make
    // the client leave (its stdout closed) before its memory is read.
    thread::spawn(move || {
        for line in stdout.split(b'\n') {
            let Ok(line) = line else { break };
            if line == b"evil: done" {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the last line never came");
    let (_, hwm) = memory_kib(client.0.id()).expect("the client is running");
    assert!(hwm < FOLLOWER_RSS_LIMIT_KIB, "peak RSS {hwm} KiB");
}

#[test]
fn unsolicited_online_pages_are_not_kept() {
    assert_small_after(|stream| {
        let names: Vec<u8> = (0..6000)
            .flat_map(|i| format!("name{i:05}\n").into_bytes())
            .collect();
        let page = pair(3, b"more", &names[..names.len() - 1]);
        let pages: Vec<u8> = page
            .iter()
            .copied()
            .cycle()
            .take(page.len() * 100)
            .collect();
        for _ in 0..10 {
            if stream.write_all(&pages).is_err() {
                return;
            }
        }
    });
}

#[test]
fn thousands_of_long_sender_names_are_not_kept() {
    assert_small_after(|stream| {
        for i in 0..1000 {
            let name = format!("{i:06}{}", "n".repeat(60_000));
            if stream.write_all(&pair(0, name.as_bytes(), b"hi")).is_err() {
                return;
            }
        }
    });
}

#[test]
fn something_that_is_not_a_chat_server_is_named_and_exits_3() {
    let port = fake_server(|mut stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<!DOCTYPE html>",
        );
    });
    let run = run_client(client_command(port, "alice"), b"send bob hi\n");
    eqnice!(3, run.status);
    assert!(
        run.stderr
            .contains("does not look like a pmchat/v1 server: its first bytes (\"HTTP/1.1"),
        "{}",
        run.stderr
    );
}

/// True for `HH:MM:SS`.
fn is_clock(text: &str) -> bool {
    text.len() == 8
        && text.char_indices().all(|(i, c)| match i {
            2 | 5 => c == ':',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn timestamps_prefix_plain_lines_and_join_json_objects() {
    let mut server = ServerProcess::start(&[]);
    let plain = Follower::start(&mut server, "plain", &["--timestamps"]);
    let json = Follower::start(&mut server, "json", &["--timestamps", "--json"]);
    let mut alice = server.login("alice");
    // json first sees alice join: its object has a time too.
    let joined: serde_json::Value = serde_json::from_str(&json.line()).unwrap();
    assert!(joined["ts"].is_string(), "{joined}");
    alice.send("plain", "hi");
    alice.send("json", "hi");
    let line = plain.line();
    let (clock, rest) = line.split_once(' ').unwrap();
    assert!(is_clock(clock), "{line:?}");
    eqnice!("alice: hi", rest);
    let value: serde_json::Value = serde_json::from_str(&json.line()).unwrap();
    let ts = value["ts"].as_str().unwrap();
    // RFC 3339: 2026-11-29T07:05:36.123+01:00
    assert_eq!(ts.len(), 29, "{ts}");
    assert_eq!(&ts[4..5], "-");
    assert_eq!(&ts[10..11], "T");
    assert!(is_clock(&ts[11..19]), "{ts}");
    assert!(ts[23..].starts_with(['+', '-']), "{ts}");
    eqnice!("hi", value["content"].as_str().unwrap());
}

#[test]
fn timestamps_mark_messages_only_and_every_stderr_line_says_who_wrote_it() {
    let mut server = ServerProcess::start(&[]);
    let _bob = server.login("bob");
    let mut command = client_command(server.port, "alice");
    command.arg("--timestamps");
    let run = run_client(command, b"who\nsend dave hi\nhelp\nbogus\n");
    // `who` answers on stdout without a time: a name per line.
    eqnice!("alice\nbob\n", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.contains(&"<stdin>:2: 'dave' is not connected"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"<stdin>:4: unknown command 'bogus' (try 'help')"),
        "{lines:?}"
    );
    for line in &lines {
        assert!(
            line.starts_with("chat-client: ") || line.starts_with("<stdin>:"),
            "{line:?}"
        );
        assert!(!is_clock(line.split(' ').next().unwrap()), "{line:?}");
    }
}
