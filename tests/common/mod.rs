//! Helpers shared by the integration tests: a `chat-server` child process on
//! an ephemeral port, and a raw v1 client that speaks bytes.
//!
//! Every wait is bounded (a test fails, it never hangs) and every child
//! process is killed when its handle drops, even on a failed assertion.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single expected event may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Like `assert_eq!`, but labels both sides so a failure reads clearly.
#[macro_export]
macro_rules! eqnice {
    ($expected:expr, $got:expr) => {{
        let expected = $expected;
        let got = $got;
        if expected != got {
            panic!(
                "\n\nexpected:\n{:?}\n\ngot:\n{:?}\n\n(at {}:{})\n",
                expected,
                got,
                file!(),
                line!()
            );
        }
    }};
}

/// A running `chat-server`; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// The port from the `listening on ADDR:PORT` line.
    pub port: u16,
    stdin: Option<ChildStdin>,
    /// Lines the server prints on stdout, read by a helper thread so that
    /// waiting for one can time out.
    stdout: Receiver<String>,
    /// Everything the server logged so far.
    stderr: Arc<Mutex<String>>,
    /// The thread collecting stderr; it ends when the server does.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `chat-server 0 ARGS…` and waits for its first line.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_on("127.0.0.1", args)
    }

    /// Starts `chat-server 0 --bind ADDR ARGS…` and waits for its first line.
    pub fn start_on(bind: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_at(bind, 0, args)
    }

    /// Starts `chat-server PORT --bind ADDR ARGS…` (a server coming back
    /// on the port another had) and waits for its first line.
    pub fn start_at(bind: &str, port: u16, args: &[&str]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command
            .arg(port.to_string())
            .args(["--bind", bind])
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ServerProcess::spawn(command)
    }

    /// Starts a `chat-server` command set up by the caller (port 0, all
    /// three standard streams piped) and waits for its first line.
    pub fn spawn(mut command: Command) -> ServerProcess {
        let mut child = command.spawn().expect("spawn chat-server");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        let stderr_reader = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let stdin = child.stdin.take();
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let first = stdout.recv_timeout(TIMEOUT);
        let mut server = ServerProcess {
            child,
            port: 0,
            stdin,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let first = first.unwrap_or_else(|_| {
            // Everything it said before it died (or was killed) is in once
            // the collecting thread has seen the end of its stderr.
            let _ = server.child.kill();
            let _ = server.child.wait();
            if let Some(reader) = server.stderr_reader.take() {
                let _ = reader.join();
            }
            panic!("no 'listening on' line; stderr: {}", server.stderr())
        });
        server.port = first
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        server
    }

    /// A raw client logged in as `name` (the handshake has been sent; v1
    /// has no acknowledgement, so the server may not have processed it yet).
    pub fn connect(&self, name: &str) -> RawClient {
        let mut client = RawClient::open(self.port);
        client.handshake(name.as_bytes());
        client
    }

    /// Connects `name` and waits until the server lists it online, so a
    /// following message to it cannot race its login.
    pub fn login(&mut self, name: &str) -> RawClient {
        let client = self.connect(name);
        self.wait_online(name);
        client
    }

    /// Waits until the console's `users` lists `name`.
    pub fn wait_online(&mut self, name: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if self.users().iter().any(|n| n == name) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("{name} never came online; log:\n{}", self.stderr());
    }

    /// Types `line` on the server's console.
    pub fn console(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("console already closed");
        writeln!(stdin, "{line}").expect("write to console");
        stdin.flush().expect("flush console");
    }

    /// Closes the server's stdin (end of console input).
    pub fn close_console(&mut self) {
        self.stdin = None;
    }

    /// Reads one line the server printed on stdout.
    pub fn stdout_line(&mut self) -> String {
        self.stdout
            .recv_timeout(TIMEOUT)
            .expect("a line on the server's stdout")
    }

    /// Runs `cluster` on the console: this node's id, how many other nodes
    /// it counts as live, how many records from Redis it dropped.
    pub fn cluster_state(&mut self) -> (String, usize, u64) {
        self.console("cluster");
        let node = self.stdout_line();
        let node = node
            .trim()
            .strip_prefix("node ")
            .expect("node ID")
            .to_string();
        let number = |line: String| -> u64 {
            line.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        };
        let live = number(self.stdout_line()) as usize;
        let dropped = number(self.stdout_line());
        (node, live, dropped)
    }

    /// Runs `users` on the console and returns the names.
    pub fn users(&mut self) -> Vec<String> {
        self.console("users");
        let header = self.stdout_line();
        let count: usize = header
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected users header {header:?}"));
        (0..count)
            .map(|_| self.stdout_line().trim().to_string())
            .collect()
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the console's `users` no longer lists `name`.
    pub fn wait_offline(&mut self, name: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if !self.users().iter().any(|n| n == name) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("{name} never went offline; log:\n{}", self.stderr());
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, name: &str) {
        send_signal(self.child.id(), name);
    }

    /// Waits for the process to exit, failing after `TIMEOUT`; then all
    /// it logged is in [`ServerProcess::stderr`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_within(&mut self.child, "chat-server");
        // Its stderr ends with it: the collecting thread has it all once
        // it has seen the end.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// What the server logged so far, once it holds `needle`: the thread
    /// collecting stderr may be behind the server's other output on a
    /// loaded machine. Fails after `TIMEOUT`.
    pub fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "{needle:?} never logged:\n{log}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line on a helper thread; receive with a bound.
pub fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A frame received from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Message { from: Vec<u8>, content: Vec<u8> },
    Error(String),
}

impl Frame {
    /// A message frame, for comparisons.
    pub fn msg(from: &str, content: &str) -> Frame {
        Frame::Message {
            from: from.into(),
            content: content.into(),
        }
    }

    /// An error frame, for comparisons.
    pub fn err(text: &str) -> Frame {
        Frame::Error(text.into())
    }
}

/// A v1 client working at the byte level, with every read bounded in time.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    /// Connects without a handshake.
    pub fn open(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient { stream }
    }

    /// Sends a v1 handshake.
    pub fn handshake(&mut self, name: &[u8]) {
        let mut bytes = vec![name.len() as u8];
        bytes.extend_from_slice(name);
        self.write(&bytes);
    }

    /// Sends raw bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Sends a v1 message frame.
    pub fn send(&mut self, to: &str, content: &str) {
        self.write(&message(to.as_bytes(), content.as_bytes()));
    }

    /// Reads exactly `n` bytes, failing on timeout or close.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        buf
    }

    /// Reads one frame.
    pub fn frame(&mut self) -> Frame {
        let head = self.read_exact(4);
        let opcode = u16::from_be_bytes([head[0], head[1]]);
        match opcode {
            0 => {
                let from_len = u16::from_be_bytes([head[2], head[3]]) as usize;
                let len = self.read_exact(2);
                let content_len = u16::from_be_bytes([len[0], len[1]]) as usize;
                let from = self.read_exact(from_len);
                let content = self.read_exact(content_len);
                Frame::Message { from, content }
            }
            1 => {
                let text_len = u16::from_be_bytes([head[2], head[3]]) as usize;
                Frame::Error(String::from_utf8(self.read_exact(text_len)).expect("utf-8 error"))
            }
            other => panic!("unexpected opcode {other}"),
        }
    }

    /// Reads one frame of the extensions' shape: (opcode, a, b).
    pub fn pair_frame(&mut self) -> (u16, Vec<u8>, Vec<u8>) {
        let head = self.read_exact(6);
        let a = self.read_exact(usize::from(u16::from_be_bytes([head[2], head[3]])));
        let b = self.read_exact(usize::from(u16::from_be_bytes([head[4], head[5]])));
        (u16::from_be_bytes([head[0], head[1]]), a, b)
    }

    /// The next frame of the extensions' shape that is not CAUGHT-UP (an
    /// inbox device gets one at login, and again after falling behind).
    pub fn pair_frame_past_caught_up(&mut self) -> (u16, Vec<u8>, Vec<u8>) {
        loop {
            let frame = self.pair_frame();
            if frame.0 != 12 {
                return frame;
            }
        }
    }

    /// Sends a HELLO asking for `features`.
    pub fn hello(&mut self, features: &str) {
        let mut frame = vec![0, 2, 0, 0];
        frame.extend_from_slice(&(features.len() as u16).to_be_bytes());
        frame.extend_from_slice(features.as_bytes());
        self.write(&frame);
    }

    /// Asserts the server closes the connection (EOF or reset) within the
    /// timeout, without sending anything more.
    pub fn expect_closed(&mut self) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(_) => panic!("expected close, got byte {:#04x}", byte[0]),
            Err(e) => panic!("expected close, got {e}"),
        }
    }

    /// Reads and discards everything until the server closes the
    /// connection (EOF or reset), failing after `TIMEOUT`.
    pub fn drain_until_closed(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        let mut sink = vec![0u8; 1 << 16];
        loop {
            assert!(
                Instant::now() < deadline,
                "the server never closed the connection"
            );
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("reading until closed: {e}"),
            }
        }
    }

    /// Asserts an orderly close (FIN, not a reset) with nothing more sent.
    pub fn expect_eof(&mut self) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            other => panic!("expected an orderly close, got {other:?}"),
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    }

    /// Shuts down the write side (end of input), keeping the read side.
    pub fn finish(&mut self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown write");
    }
}

/// Floods `to` with 2 KiB v1 messages through `writer` on a thread of
/// its own: far more than loopback socket buffers and a queue hold. Stops
/// at the first failed write, once the server is done with the sender.
pub fn flood(mut writer: TcpStream, to: &'static [u8]) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let batch = message(to, &[b'z'; 2048]).repeat(64);
        for _ in 0..2000 {
            if writer.write_all(&batch).is_err() {
                break;
            }
        }
    })
}

/// Encodes a client → server message frame.
pub fn message(to: &[u8], content: &[u8]) -> Vec<u8> {
    pair(0, to, content)
}

/// A frame of the message's (and the extensions') shape: opcode, the two
/// fields' lengths, the fields.
pub fn pair(opcode: u16, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = opcode.to_be_bytes().to_vec();
    out.extend_from_slice(&(a.len() as u16).to_be_bytes());
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

/// The records of a `keys` frame: `(kind, bytes)` each.
pub fn key_records(list: &[(u8, &[u8])]) -> Vec<u8> {
    let mut field = Vec::new();
    for (kind, bytes) in list {
        field.push(*kind);
        field.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        field.extend_from_slice(bytes);
    }
    field
}

/// Decodes a hex string (test vectors).
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// What a finished `chat-client` run produced.
#[derive(Debug)]
pub struct ClientOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A `chat-client HOST PORT NAME` command with a predictable environment.
pub fn client_command(port: u16, name: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
    command
        .args(["127.0.0.1", &port.to_string(), name])
        .env_remove("NO_COLOR")
        .env("HOME", std::env::temp_dir())
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PMCHAT_HOST")
        .env_remove("PMCHAT_PORT")
        .env_remove("PMCHAT_USER");
    command
}

/// Runs `command` with `stdin` as its input, bounded by `TIMEOUT`.
pub fn run_client(command: Command, stdin: &[u8]) -> ClientOutput {
    let mut child = spawn_piped(command);
    let mut input = child.0.stdin.take().expect("stdin");
    let script = stdin.to_vec();
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&script);
    });
    let mut out = child.0.stdout.take().expect("stdout");
    let mut err = child.0.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = out.read_to_end(&mut text);
        text
    });
    let err_reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = err.read_to_end(&mut text);
        text
    });
    let status = child.wait();
    let _ = feeder.join();
    ClientOutput {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits for the process to exit, failing after `TIMEOUT`.
    pub fn wait(&mut self) -> ExitStatus {
        wait_within(&mut self.0, "chat-client")
    }
}

/// Waits for `child` to exit, failing the test after `TIMEOUT`.
fn wait_within(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit in time");
        thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with stdin, stdout and stderr all piped.
pub fn spawn_piped(mut command: Command) -> ChildGuard {
    ChildGuard(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chat-client"),
    )
}

/// Starts `chat-client … NAME --follow EXTRA…` with stdin empty and the
/// given stdout and stderr.
pub fn spawn_follower(
    port: u16,
    name: &str,
    extra: &[&str],
    stdout: Stdio,
    stderr: Stdio,
) -> ChildGuard {
    ChildGuard(
        client_command(port, name)
            .arg("--follow")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn a follower"),
    )
}

/// A `chat-client … --follow` listener whose stdout lines can be awaited.
pub struct Follower {
    pub child: ChildGuard,
    lines: Receiver<String>,
}

impl Follower {
    /// Starts `name` as a follower and waits until the server lists it.
    pub fn start(server: &mut ServerProcess, name: &str, extra: &[&str]) -> Follower {
        let mut child = spawn_follower(server.port, name, extra, Stdio::piped(), Stdio::null());
        let lines = lines_of(child.0.stdout.take().expect("stdout"));
        server.wait_online(name);
        Follower { child, lines }
    }

    /// The next stdout line.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(TIMEOUT)
            .expect("a line from the follower")
    }

    /// Stops it with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().code().unwrap_or(-1)
    }
}

/// True if the Redis tests can run here: `redis-server` (the Debian
/// package) is installed. Without it they pass as skipped, after one line
/// on the terminal saying so, so that `cargo test` passes on a fresh
/// machine; with `PMCHAT_TEST_REDIS=1` (which `.ci/run` sets) its absence
/// fails them instead.
pub fn redis_available() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if found {
        return true;
    }
    assert!(
        std::env::var_os("PMCHAT_TEST_REDIS").is_none_or(|v| v != "1"),
        "PMCHAT_TEST_REDIS=1, and redis-server is not installed \
         (apt-get install -y redis-server)"
    );
    static TOLD: std::sync::Once = std::sync::Once::new();
    TOLD.call_once(|| {
        // Straight to the terminal: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "skipping the Redis tests: redis-server is not installed \
             (apt-get install -y redis-server; PMCHAT_TEST_REDIS=1 makes this an error)"
        );
    });
    false
}

/// Returns from the test at once when [`redis_available`] says the Redis
/// tests cannot run here.
#[macro_export]
macro_rules! require_redis {
    () => {
        if !$crate::common::redis_available() {
            return;
        }
    };
}

/// A `redis-server` of its own (the Debian package) on a free port, with
/// persistence off; stopped on drop.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    /// Options beyond the port and persistence, for a restart.
    extra: Vec<String>,
}

/// A Redis a test can stop and start again: one server, or a Redis
/// Cluster.
pub trait RedisUnderTest {
    /// What `--cluster` is given.
    fn url(&self) -> String;
    /// Stops it (kill -9: no goodbyes).
    fn stop(&mut self);
    /// Starts it again where it was, empty (persistence is off), and waits
    /// until it serves.
    fn restart(&mut self);
    /// Runs one command (on the master that holds its key or channel) and
    /// returns the raw RESP reply.
    fn command(&self, args: &[&[u8]]) -> Vec<u8>;
    /// Publishes `payload` on `channel` as the nodes do (PUBLISH, or
    /// SPUBLISH on a Redis Cluster), as anyone who can write to Redis can.
    fn publish(&self, channel: &str, payload: &[u8]) -> Vec<u8>;
    /// The ports a subscriber may have to try, and the command that
    /// subscribes as the nodes do (SUBSCRIBE, or SSUBSCRIBE on the master
    /// that holds the channel's slot).
    fn subscription(&self) -> (Vec<u16>, &'static str);
}

/// Sends signal `name` (`STOP`, `CONT`, `TERM`…) to process `pid` with
/// kill(1).
fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Sends one RESP command to the Redis on `port`; its raw reply.
pub fn redis_command(port: u16, args: &[&[u8]]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).expect("ask redis");
    let mut reply = vec![0u8; 1 << 16];
    let n = stream.read(&mut reply).expect("redis answers");
    reply.truncate(n);
    reply
}

impl RedisUnderTest for RedisProcess {
    fn url(&self) -> String {
        RedisProcess::url(self)
    }

    fn stop(&mut self) {
        RedisProcess::stop(self);
    }

    fn restart(&mut self) {
        RedisProcess::stop(self);
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        *self = RedisProcess::spawn(self.port, &extra);
    }

    fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        redis_command(self.port, args)
    }

    fn publish(&self, channel: &str, payload: &[u8]) -> Vec<u8> {
        self.command(&[b"PUBLISH", channel.as_bytes(), payload])
    }

    fn subscription(&self) -> (Vec<u16>, &'static str) {
        (vec![self.port], "SUBSCRIBE")
    }
}

impl RedisUnderTest for RedisClusterProcess {
    fn url(&self) -> String {
        RedisClusterProcess::url(self)
    }

    fn stop(&mut self) {
        for master in &mut self.masters {
            master.stop();
        }
    }

    /// Each master comes back with its cluster configuration file, so the
    /// cluster forms again with the same slots.
    fn restart(&mut self) {
        for master in &mut self.masters {
            master.restart();
        }
        self.wait_until_ok("the Redis Cluster never came back");
    }

    fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        self.masters
            .iter()
            .map(|master| redis_command(master.port, args))
            .find(|reply| !reply.starts_with(b"-MOVED"))
            .expect("one master holds the slot")
    }

    fn publish(&self, channel: &str, payload: &[u8]) -> Vec<u8> {
        self.command(&[b"SPUBLISH", channel.as_bytes(), payload])
    }

    fn subscription(&self) -> (Vec<u16>, &'static str) {
        (self.masters.iter().map(|m| m.port).collect(), "SSUBSCRIBE")
    }
}

impl RedisProcess {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisProcess {
        RedisProcess::start_on(free_port())
    }

    /// Starts one on `port` (again, after [`RedisProcess::stop`]).
    pub fn start_on(port: u16) -> RedisProcess {
        RedisProcess::spawn(port, &[])
    }

    /// Starts one on a free port with `extra` options (a password, a Unix
    /// socket).
    pub fn start_with(extra: &[&str]) -> RedisProcess {
        RedisProcess::spawn(free_port(), extra)
    }

    /// Starts one with an append-only file in `dir`, synced at every
    /// write: a restart keeps what it had.
    pub fn start_durable(dir: &std::path::Path) -> RedisProcess {
        let dir = dir.to_str().expect("a UTF-8 directory");
        RedisProcess::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            dir,
        ])
    }

    /// Starts one on `port` with `extra` options.
    fn spawn(port: u16, extra: &[&str]) -> RedisProcess {
        // A directory of its own: a replica's full sync writes an RDB
        // file, which every Redis started later in the same directory
        // would load.
        let dir = std::env::temp_dir().join(format!("pmchat-redis-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().expect("a UTF-8 temporary directory")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the cluster tests need the \
                     Debian package redis-server (apt-get install -y redis-server)"
                )
            });
        let redis = RedisProcess {
            child: Some(child),
            port,
            extra: extra.iter().map(|e| e.to_string()).collect(),
        };
        let deadline = Instant::now() + TIMEOUT;
        while !redis.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many times this server ran `command` (INFO commandstats).
    pub fn calls(&self, command: &str) -> u64 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        stream
            .write_all(b"INFO commandstats\r\n")
            .expect("ask redis");
        let mut reply = vec![0u8; 1 << 16];
        let n = stream.read(&mut reply).expect("redis answers");
        let text = String::from_utf8_lossy(&reply[..n]).into_owned();
        let prefix = format!("cmdstat_{command}:calls=");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    }

    /// True once `CLUSTER INFO` says the cluster is ok.
    fn cluster_ok(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = vec![0u8; 4096];
        stream.write_all(b"CLUSTER INFO\r\n").is_ok()
            && matches!(stream.read(&mut reply), Ok(n)
                if String::from_utf8_lossy(&reply[..n]).contains("cluster_state:ok"))
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        // One with a password answers too, by asking for it.
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    }

    /// Sends it a signal with kill(1) (`STOP` freezes it: connections stay
    /// open and nothing is answered).
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("a running redis-server");
        send_signal(child.id(), name);
    }

    /// Stops it (kill -9: no goodbyes) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
        let dir =
            std::env::temp_dir().join(format!("pmchat-redis-{}-{}", std::process::id(), self.port));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A Redis Cluster of three masters (no replicas), each a `redis-server`
/// of its own with persistence off, made into a cluster with
/// `redis-cli --cluster create`; stopped on drop.
pub struct RedisClusterProcess {
    masters: Vec<RedisProcess>,
    /// With [`RedisClusterProcess::start_replicated`]: one per master.
    replicas: Vec<RedisProcess>,
    dir: std::path::PathBuf,
}

impl RedisClusterProcess {
    /// Waits until every master says the cluster is ok; panics with
    /// `failure` if that takes longer than [`TIMEOUT`].
    fn wait_until_ok(&self, failure: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.masters.iter().all(|m| m.cluster_ok()) {
            assert!(Instant::now() < deadline, "{failure}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start() -> RedisClusterProcess {
        RedisClusterProcess::start_with(|_| Vec::new())
    }

    /// Starts one whose masters also take `extra(i)` options.
    pub fn start_with(extra: impl Fn(usize) -> Vec<String>) -> RedisClusterProcess {
        RedisClusterProcess::create(3, 0, extra)
    }

    /// Three masters and a replica of each, each node with an append-only
    /// file of its own synced at every write.
    pub fn start_replicated() -> RedisClusterProcess {
        RedisClusterProcess::create(6, 1, durable_node)
    }

    /// Three masters, each with an append-only file of its own synced at
    /// every write: a restart keeps what they had.
    pub fn start_durable() -> RedisClusterProcess {
        RedisClusterProcess::create(3, 0, durable_node)
    }

    /// Kills master `i` (kill -9); its replica takes over within the
    /// cluster's node timeout. Its port.
    pub fn kill_master(&mut self, i: usize) -> u16 {
        self.masters[i].stop();
        self.masters[i].port
    }

    /// Sends master `i` a signal with kill(1) (`STOP` freezes it).
    pub fn signal_master(&self, i: usize, name: &str) {
        self.masters[i].signal(name);
    }

    /// The master that holds `key` (which must exist).
    pub fn master_holding(&self, key: &str) -> usize {
        self.masters
            .iter()
            .position(|m| redis_command(m.port, &[b"EXISTS", key.as_bytes()]) == b":1\r\n")
            .expect("a master holding the key")
    }

    /// Starts the master killed with [`RedisClusterProcess::kill_master`]
    /// again: it comes back from its configuration file as a replica of
    /// the node that took over.
    pub fn revive_master(&mut self, i: usize) {
        self.masters[i].restart();
    }

    fn create(
        count: usize,
        replicas: usize,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> RedisClusterProcess {
        let dir = std::env::temp_dir().join(format!(
            "pmchat-redis-cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster");
        let nodes: Vec<RedisProcess> = (0..count)
            .map(|i| {
                let port = free_cluster_port();
                let conf = dir.join(format!("nodes-{i}.conf"));
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().expect("a UTF-8 path"),
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    dir.to_str().expect("a UTF-8 path"),
                ]
                .map(String::from)
                .to_vec();
                args.extend(extra(i));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                RedisProcess::spawn(port, &args)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(created.success(), "redis-cli --cluster create failed");
        let (masters, replicas): (Vec<RedisProcess>, Vec<RedisProcess>) =
            nodes.into_iter().partition(|node| {
                redis_command(node.port, &[b"ROLE"]).starts_with(b"*3\r\n$6\r\nmaster")
            });
        let cluster = RedisClusterProcess {
            masters,
            replicas,
            dir,
        };
        cluster.wait_until_ok("the Redis Cluster never became ok");
        if !cluster.replicas.is_empty() {
            let deadline = Instant::now() + TIMEOUT;
            while !cluster.replicas.iter().all(|r| {
                String::from_utf8_lossy(&redis_command(r.port, &[b"INFO", b"replication"]))
                    .contains("master_link_status:up")
            }) {
                assert!(Instant::now() < deadline, "the replicas never synced");
                thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// How many times each master ran `command` (from INFO commandstats).
    pub fn calls(&self, command: &str) -> Vec<u64> {
        self.masters.iter().map(|m| m.calls(command)).collect()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .masters
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisClusterProcess {
    fn drop(&mut self) {
        for node in self.masters.iter_mut().chain(&mut self.replicas) {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster node's options for an append-only file of its own
/// (node `i`, in the cluster's directory), synced at every write.
fn durable_node(i: usize) -> Vec<String> {
    [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--appendfilename",
        &format!("node-{i}.aof"),
        "--appenddirname",
        &format!("aof-{i}"),
    ]
    .map(String::from)
    .to_vec()
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A free port whose cluster bus port (10000 above it) exists and is free
/// too, as a Redis Cluster node needs.
fn free_cluster_port() -> u16 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let port = free_port();
        let bus_free = port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok();
        if bus_free {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "no free port pair for a Redis Cluster node"
        );
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: a port picked for one
    // purpose (a Redis TLS port) and not yet bound must not be picked
    // again for another (a Redis node's own port) before it is.
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Runs each case twice: on one Redis, and on a three-master Redis Cluster
/// (sharded pub/sub, one key per command). Cases listed after `;` are
/// given the Redis itself, to stop and restart.
#[macro_export]
macro_rules! on_both {
    ($($case:ident),* $(,)?; $($outage:ident),* $(,)?) => {
        $crate::on_backend!(on_one_redis, RedisProcess; $($case),*; $($outage),*);
        $crate::on_backend!(on_a_redis_cluster, RedisClusterProcess; $($case),*; $($outage),*);
    };
}

/// One half of [`on_both`]: a module of tests, each on a fresh `$redis`.
#[macro_export]
macro_rules! on_backend {
    ($module:ident, $redis:ident; $($case:ident),*; $($outage:ident),*) => {
        mod $module {
            $(#[test]
            fn $case() {
                $crate::require_redis!();
                let redis = $crate::common::$redis::start();
                super::$case(&redis.url());
            })*
            $(#[test]
            fn $outage() {
                $crate::require_redis!();
                super::$outage(&mut $crate::common::$redis::start());
            })*
        }
    };
}

/// A directory of its own under the system's temporary directory,
/// removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Its own even when two tests running at once give the same tag (a
    /// test `on_both!` runs on one Redis and on a Redis Cluster at once):
    /// numbered within the process.
    pub fn new(tag: &str) -> TempDir {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pmchat-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP relay on an ephemeral port that hands each new connection to the
/// next of its backends in turn, as a load balancer in front of several
/// nodes would: a client that reconnects to one address lands on another
/// node each time. Its threads end with their connections.
pub struct RoundRobinRelay {
    pub port: u16,
}

impl RoundRobinRelay {
    pub fn start(backends: Vec<u16>) -> RoundRobinRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a relay");
        let port = listener.local_addr().expect("its address").port();
        thread::spawn(move || {
            for (turn, client) in listener.incoming().enumerate() {
                let Ok(client) = client else {
                    continue;
                };
                let backend = backends[turn % backends.len()];
                let Ok(server) = TcpStream::connect(("127.0.0.1", backend)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                        let _ = from.shutdown(Shutdown::Read);
                    });
                }
            }
        });
        RoundRobinRelay { port }
    }
}
