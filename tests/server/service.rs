//! Running the server as a service (#26): JSON logs for log shippers.

use crate::common::*;
use crate::eqnice;

#[test]
fn json_logs_are_one_object_a_line() {
    let mut server = ServerProcess::start(&["--log-format", "json", "-v"]);
    let mut alice = server.login("alice");
    server.wait_online("alice");
    alice.finish();
    server.close_console();
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let log = server.stderr();
    // Whole lines only: the collecting thread may be mid-line.
    let whole = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
    let lines: Vec<&str> = whole.lines().collect();
    assert!(lines.len() >= 3, "too few log lines: {log}");
    for line in lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object["level"].is_string(), "no level: {line}");
        assert!(object["timestamp"].is_string(), "no timestamp: {line}");
        assert!(
            object["fields"]["message"].is_string(),
            "no message: {line}"
        );
    }
}

/// `chat-server ARGS…` started as systemd starts it with socket
/// activation: `fd` as descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` its
/// own pid (set by the shell that then becomes it).
fn activated(fd: std::os::fd::RawFd, args: &[&str]) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_chat-server"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; it only copies a descriptor the
    // parent keeps open to where systemd puts the first socket.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// The next notification the server sent, as text.
fn notification(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn under_systemd_it_serves_the_socket_passed_and_says_ready_reloading_stopping() {
    let dir = TempDir::new("systemd");
    let notify_path = dir.0.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    use std::os::fd::AsRawFd;
    // A port and an address the server must not bind: it has its socket.
    let mut command = activated(listener.as_raw_fd(), &["1", "--bind", "192.0.2.1"]);
    command.env("NOTIFY_SOCKET", &notify_path);
    let mut server = ServerProcess::spawn(command);
    assert_eq!(server.port, port, "it announces the socket it was given");
    assert_eq!(notification(&notify), "READY=1\n");
    // Only the server accepts from here on.
    drop(listener);

    let mut alice = RawClient::open(port);
    alice.handshake(b"alice");
    let mut bob = RawClient::open(port);
    bob.handshake(b"bob");
    server.wait_online("alice");
    server.wait_online("bob");
    alice.send("bob", "through the socket systemd made");
    assert_eq!(
        bob.frame(),
        Frame::msg("alice", "through the socket systemd made")
    );

    server.signal("HUP");
    let reloading = notification(&notify);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(notification(&notify), "READY=1\n");
    assert!(server.is_running(), "SIGHUP reloads, it does not stop");

    server.signal("TERM");
    assert_eq!(notification(&notify), "STOPPING=1\n");
    assert!(server.wait_exit().success());
}

#[test]
fn a_socket_that_is_not_listening_is_refused_not_served() {
    let dir = TempDir::new("systemd-bad");
    let notify_path = dir.0.join("notify");
    let _notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    // A bound TCP socket nobody called listen() on.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    use std::os::fd::AsRawFd;
    let mut command = activated(socket.as_raw_fd(), &["0"]);
    command.env("NOTIFY_SOCKET", &notify_path);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "it never says it listens");
}

/// A port nobody listens on now (for a server option that takes one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `port`: the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of one series in Prometheus text, e.g.
/// `pmchat_messages_refused_total{code="not-connected"}`.
fn series(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[test]
fn metrics_move_with_the_traffic() {
    let metrics = free_port();
    let mut server = ServerProcess::start(&["--metrics", &format!("127.0.0.1:{metrics}")]);
    let (status, before) = http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(series(&before, "pmchat_messages_routed_total"), Some(0.0));

    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    // A second login to a name taken: refused, and counted by its code.
    let mut impostor = server.connect("bob");
    eqnice!(Frame::err("Username is taken\n"), impostor.frame());
    for i in 0..100 {
        alice.send("bob", &format!("message {i}"));
    }
    for i in 0..100 {
        assert_eq!(bob.frame(), Frame::msg("alice", &format!("message {i}")));
    }
    for _ in 0..3 {
        alice.send("nobody", "hello?");
        assert!(matches!(alice.frame(), Frame::Error(_)));
    }

    let (_, after) = http_get(metrics, "/metrics");
    let value = |name: &str| series(&after, name).unwrap_or_else(|| panic!("no {name}:\n{after}"));
    assert_eq!(value("pmchat_messages_routed_total"), 103.0);
    assert_eq!(
        value(r#"pmchat_messages_refused_total{code="not-connected"}"#),
        3.0
    );
    assert_eq!(value(r#"pmchat_logins_total{outcome="ok"}"#), 2.0);
    assert_eq!(value(r#"pmchat_logins_total{outcome="name-taken"}"#), 1.0);
    assert_eq!(
        value(r#"pmchat_connections_accepted_total{transport="tcp"}"#),
        3.0
    );
    assert_eq!(value("pmchat_users_online"), 2.0);
    assert_eq!(value(r#"pmchat_sessions{wire="v1"}"#), 2.0);
    assert_eq!(value(r#"pmchat_sessions{wire="gob"}"#), 0.0);
    assert!(value("pmchat_received_bytes_total") >= 103.0 * 10.0);
    assert!(value("pmchat_sent_bytes_total") >= 100.0 * 10.0);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_open_fds") > 0.0);
    assert_eq!(value("pmchat_slow_consumers_total"), 0.0);
    // No per-user label anywhere.
    assert!(
        !after.contains("alice") && !after.contains("bob"),
        "{after}"
    );

    assert_eq!(http_get(metrics, "/").0, "HTTP/1.1 404 Not Found");
}

/// `chat-server admin [--json] SOCKET WORDS…`: exit code, stdout.
fn admin(socket: &std::path::Path, json: bool, words: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command.arg("admin");
    if json {
        command.arg("--json");
    }
    let output = command.arg(socket).args(words).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn the_control_socket_runs_the_console_commands_and_says_whether_they_worked() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = TempDir::new("admin");
    let socket = dir.0.join("admin.sock");
    let accounts = crate::store::accounts_of(&dir.0, &["carol"]);
    let mut server = ServerProcess::start(&[
        "--admin-socket",
        socket.to_str().unwrap(),
        "--accounts",
        accounts.to_str().unwrap(),
    ]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });

    let _alice = server.login("alice");
    let mut bob = server.login("bob");
    assert_eq!(
        admin(&socket, false, &["users"]),
        (0, "2 online\n  alice\n  bob\n".into())
    );
    assert_eq!(
        admin(&socket, true, &["users"]),
        (0, "{\"online\":[\"alice\",\"bob\"]}\n".into())
    );

    assert_eq!(admin(&socket, false, &["kick", "bob"]).0, 0);
    assert!(matches!(bob.frame(), Frame::Error(_)));
    server.wait_offline("bob");
    // Nobody by that name online: it did not work.
    assert_eq!(admin(&socket, false, &["kick", "bob"]).0, 1);

    assert_eq!(admin(&socket, false, &["ban", "mallory", "1h"]).0, 0);
    let mut mallory = server.connect("mallory");
    match mallory.frame() {
        Frame::Error(text) => assert!(text.contains("banned"), "{text}"),
        other => panic!("{other:?}"),
    }

    // A reload that works, then one that does not.
    let (code, json) = admin(&socket, true, &["reload-accounts"]);
    assert_eq!(code, 0, "{json}");
    assert!(
        json.starts_with("{\"reloaded\":true,\"registered\":1"),
        "{json}"
    );
    std::fs::write(&accounts, "not an accounts file\n").unwrap();
    assert_eq!(admin(&socket, false, &["reload-accounts"]).0, 1);
    assert_eq!(admin(&socket, false, &["reload-tls"]).0, 1, "TLS is off");

    let (code, stats) = admin(&socket, true, &["stats"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["users_online"], 1);
    assert_eq!(stats["logins_refused"]["banned"], 1);

    // Not a command: a usage error.
    assert_eq!(admin(&socket, false, &["dance"]).0, 2);

    assert_eq!(admin(&socket, false, &["exit"]).0, 0);
    assert!(server.wait_exit().success());
    assert!(!socket.exists(), "the socket is removed at exit");
    assert_eq!(admin(&socket, false, &["users"]).0, 1, "nobody answers");
}

#[test]
fn another_user_cannot_use_the_control_socket() {
    let dir = TempDir::new("admin-other");
    // The other user must be able to reach the directory, so that only
    // the socket's own mode stops them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.0.join("admin.sock");
    let mut server = ServerProcess::start(&["--admin-socket", socket.to_str().unwrap()]);
    let _alice = server.login("alice");
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot run as another user; checked only the mode");
        return;
    }
    use std::os::unix::process::CommandExt;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["admin", socket.to_str().unwrap(), "kick", "alice"])
        // nobody
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ermission denied"),
        "{output:?}"
    );
    assert_eq!(
        server.users(),
        vec!["alice".to_string()],
        "alice is still there"
    );
}

#[test]
fn a_file_at_the_control_socket_path_is_never_replaced() {
    let dir = TempDir::new("admin-file");
    let path = dir.0.join("admin.sock");
    std::fs::write(&path, "precious").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["0", "--admin-socket", path.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn the_control_socket_exports_a_history_from_the_store() {
    let dir = TempDir::new("admin-history");
    let socket = dir.0.join("admin.sock");
    let mut server =
        crate::store::server_with(&dir.0, &["--admin-socket", socket.to_str().unwrap()]);
    // To a registered name nobody is logged in to: stored.
    let mut dave = server.login("dave");
    dave.send("alice", "kept for later");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let lines = loop {
        let (code, lines) = admin(&socket, false, &["history", "export", "alice"]);
        assert_eq!(code, 0);
        if !lines.is_empty() || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let entry: serde_json::Value = serde_json::from_str(lines.trim_end()).unwrap();
    assert_eq!(entry["peer"], "dave");
    assert_eq!(entry["content"], "kept for later");
    assert_eq!(entry["dir"], "in");
    // Nothing to export without a store: it did not work.
    let plain = dir.0.join("plain.sock");
    let _other = ServerProcess::start(&["--admin-socket", plain.to_str().unwrap()]);
    assert_eq!(admin(&plain, false, &["history", "export", "alice"]).0, 1);
}

/// `chat-server 0 --bind 127.0.0.1 ARGS…` with a notify socket at
/// `notify` (to hear when a reload is done).
fn start_notifying(notify: &std::path::Path, args: &[&str]) -> ServerProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args(["0", "--bind", "127.0.0.1"])
        .args(args)
        .env("NOTIFY_SOCKET", notify)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    ServerProcess::spawn(command)
}

/// True if a new connection is refused as `server is full` (one that is
/// let in hears nothing, and leaves).
fn is_full(port: u16) -> bool {
    use std::io::Read;
    let mut client = RawClient::open(port);
    client.handshake(b"probe");
    client
        .stream
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut first = [0u8; 1];
    match client.stream.read(&mut first) {
        // Something came: the refusal.
        Ok(1) => {
            client.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            let rest = client.read_exact(3);
            let text = client.read_exact(usize::from(u16::from_be_bytes([rest[1], rest[2]])));
            assert_eq!((first[0], rest[0]), (0, 1), "an error frame");
            assert_eq!(text, b"server is full\n");
            true
        }
        Ok(_) => panic!("closed without a word"),
        Err(_) => false,
    }
}

#[test]
fn a_config_file_sets_options_the_command_line_wins_and_sighup_rereads_it() {
    let dir = TempDir::new("config");
    let notify_path = dir.0.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();
    let config = dir.0.join("server.toml");
    std::fs::write(&config, "# one client at a time\nmax-clients = 1\n").unwrap();
    let path = config.to_str().unwrap();

    let mut server = start_notifying(&notify_path, &["--config", path]);
    assert_eq!(notification(&notify), "READY=1\n");
    let _alice = server.login("alice");
    assert!(is_full(server.port), "max-clients = 1 from the file");

    // A flag on the command line wins over the file.
    let mut wider = ServerProcess::start(&["--config", path, "--max-clients", "2"]);
    let _bob = wider.login("bob");
    assert!(!is_full(wider.port));

    // SIGHUP: the file is read again, and max-clients changes live.
    std::fs::write(&config, "max-clients = 3\n").unwrap();
    server.signal("HUP");
    assert!(notification(&notify).starts_with("RELOADING=1"));
    assert_eq!(notification(&notify), "READY=1\n");
    let _carol = server.login("carol");
    // Three now: alice, carol, and one more.
    assert!(!is_full(server.port));

    // A file broken since: the running settings stay.
    std::fs::write(&config, "max-clients = \"many\"\n").unwrap();
    server.signal("HUP");
    assert!(notification(&notify).starts_with("RELOADING=1"));
    assert_eq!(notification(&notify), "READY=1\n");
    let _dave = server.login("dave");
    assert!(is_full(server.port), "still three");
    assert!(server.is_running());
}

#[test]
fn config_file_errors_name_their_line() {
    let dir = TempDir::new("config-errors");
    let config = dir.0.join("server.toml");
    for (text, line) in [
        ("max-clients = 10\n\nmax-clinets = 5\n", 3),
        ("bind = \"::\"\nmax-username-bytes = 300\n", 2),
        ("require-tls = \"yes\"\n", 1),
        ("\n\nthreads = [1, 2]\n", 3),
        ("queue-bytes = \n", 1),
    ] {
        std::fs::write(&config, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["0", "--config", config.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{text:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let at = format!("{}:{line}: ", config.display());
        assert!(stderr.contains(&at), "{text:?}: wanted {at:?} in {stderr}");
        assert!(output.stdout.is_empty(), "it never starts");
    }
}

#[test]
fn metrics_across_nodes_show_redis_and_the_publish_batches() {
    crate::require_redis!();
    let redis = RedisProcess::start();
    let metrics = free_port();
    let mut a = ServerProcess::start(&[
        "--cluster",
        &redis.url(),
        "--metrics",
        &format!("127.0.0.1:{metrics}"),
    ]);
    let mut b = ServerProcess::start(&["--cluster", &redis.url()]);
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    // alice's node knows where bob is, then her message crosses.
    a.wait_online("bob");
    alice.send("bob", "across");
    assert_eq!(bob.frame(), Frame::msg("alice", "across"));

    // The batch's round trip is observed once Redis answered its PUBLISH,
    // which may be after bob's node delivered it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let scrape = loop {
        let (_, scrape) = http_get(metrics, "/metrics");
        let observed = series(&scrape, "pmchat_cluster_publish_seconds_count").unwrap_or(0.0);
        if observed >= 1.0 || std::time::Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let value =
        |name: &str| series(&scrape, name).unwrap_or_else(|| panic!("no {name}:\n{scrape}"));
    assert_eq!(value("pmchat_redis_up"), 1.0);
    assert_eq!(value("pmchat_cluster_live_nodes"), 1.0);
    assert!(value("pmchat_cluster_publish_bytes_count") >= 1.0);
    assert!(value("pmchat_cluster_publish_seconds_count") >= 1.0);
    assert!(value("pmchat_cluster_publish_seconds_sum") > 0.0);
}
