//! End-to-end encryption through the real binaries (#27): `--e2e`
//! clients exchange messages the server routes and stores without
//! reading them.

use std::path::Path;
use std::time::Duration;

use crate::accounts::accounts_file;
use crate::common::{
    client_command, key_records, lines_of, pair, run_client, ClientOutput, RawClient,
    ServerProcess, TIMEOUT,
};
use crate::interactive::TempDir;

const SECRET: &str = "the eagle lands at noon";
/// What a sealed envelope (the binary form a server that grants `sealed`
/// carries) starts with.
const SEALED: &[u8] = b"\xffpe\x01";
/// What a session that cannot read sealed content is shown instead.
const NOTICE: &str =
    "[an end-to-end encrypted message, which this client cannot read: chat-client --e2e can]";

fn server(dir: &Path) -> ServerProcess {
    server_at(dir, 0)
}

/// The server on `port` (0: any): a restarted server keeps its port, and
/// clients keep their devices per server address.
fn server_at(dir: &Path, port: u16) -> ServerProcess {
    let accounts = accounts_file(dir, &[("alice", "pw"), ("bob", "pw")]);
    let store = dir.join("store.redb");
    // -v: the server logs every message it routes, content included.
    ServerProcess::start_at(
        "127.0.0.1",
        port,
        &[
            "--accounts",
            accounts.to_str().unwrap(),
            "--allow-plaintext-passwords",
            "--store",
            store.to_str().unwrap(),
            "-v",
        ],
    )
}

/// `chat-client … NAME --e2e` with its password, its state in `dir`.
fn e2e_client(server: &ServerProcess, dir: &Path, name: &str) -> std::process::Command {
    e2e_device(server.port, dir, name, name)
}

/// `chat-client 127.0.0.1 PORT NAME --e2e` with its password, as the
/// device whose state is `dir/state-DEVICE`.
fn e2e_device(port: u16, dir: &Path, name: &str, device: &str) -> std::process::Command {
    let mut command = client_command(port, name);
    command
        .env("PMCHAT_PASSWORD", "pw")
        .env("XDG_STATE_HOME", dir.join(format!("state-{device}")))
        .args(["--allow-plaintext-password", "--e2e"]);
    command
}

/// The device `device` of `name`, once: publishes its keys, prints what
/// waited for it, leaves.
fn device_catches_up(
    server: &ServerProcess,
    dir: &Path,
    (name, device): (&str, &str),
    extra: &[&str],
) -> ClientOutput {
    let mut command = e2e_device(server.port, dir, name, device);
    command.args(["--follow", "--until-caught-up"]).args(extra);
    run_client(command, b"")
}

fn send(server: &ServerProcess, dir: &Path, lines: &str) -> ClientOutput {
    run_client(e2e_client(server, dir, "alice"), lines.as_bytes())
}

/// bob, once: publishes his keys, prints what waited for him, leaves.
fn bob_catches_up(server: &ServerProcess, dir: &Path, extra: &[&str]) -> ClientOutput {
    let out = device_catches_up(server, dir, ("bob", "bob"), extra);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    out
}

#[test]
fn registered_users_exchange_encrypted_messages_the_server_never_reads() {
    let dir = TempDir::new("e2e-exchange");
    let mut server = server(&dir.0);
    // bob's device publishes its keys.
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    // Stored for bob, encrypted.
    let out = send(&server, &dir.0, &format!("send bob {SECRET}\n"));
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let out = bob_catches_up(&server, &dir.0, &[]);
    assert_eq!(
        out.stdout,
        format!("alice: {SECRET}\n"),
        "stderr: {}",
        out.stderr
    );

    // Across a server restart, in JSON.
    let port = server.port;
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let mut server = server_at(&dir.0, port);
    let out = send(&server, &dir.0, "send bob second secret\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let server = server_at(&dir.0, port);
    let out = bob_catches_up(&server, &dir.0, &["--json"]);
    let line: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(line["from"], "alice");
    assert_eq!(line["content"], "second secret");
    assert_eq!(line["e2e"], true);

    // Live, to a follower.
    let mut follower = e2e_client(&server, &dir.0, "bob");
    follower
        .arg("--follow")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut follower = crate::common::ChildGuard(follower.spawn().unwrap());
    let lines = lines_of(follower.0.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let out = send(&server, &dir.0, "send bob live and private\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(
        lines.recv_timeout(TIMEOUT).unwrap(),
        "alice: live and private"
    );
    drop(follower);

    // Nothing of the text in the server's log or its store: all of both,
    // once it has stopped.
    let mut server = server;
    server.console("exit");
    server.wait_exit();
    let log = server.stderr();
    for text in [SECRET, "second secret", "live and private"] {
        assert!(!log.contains(text), "the server logged {text:?}");
    }
    let store = std::fs::read(dir.0.join("store.redb")).unwrap();
    for text in [SECRET, "second secret", "live and private"] {
        assert!(
            !store.windows(text.len()).any(|w| w == text.as_bytes()),
            "the store holds {text:?}"
        );
    }
    assert!(holds(&store, SEALED), "the store holds the envelopes");
}

#[test]
fn an_e2e_sender_refuses_a_user_without_keys_unless_allowed() {
    let dir = TempDir::new("e2e-no-keys");
    let mut server = server(&dir.0);
    let mut dave = server.login("dave");
    let out = send(&server, &dir.0, "send dave are you there?\n");
    assert_eq!(out.status, 1, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("no keys"), "{}", out.stderr);
    dave.expect_silence(Duration::from_millis(300));
    let mut command = e2e_client(&server, &dir.0, "alice");
    command.arg("--allow-plaintext");
    let out = run_client(command, b"send dave in the clear\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(
        dave.frame(),
        crate::common::Frame::msg("alice", "in the clear")
    );
}

#[test]
fn a_broken_envelope_is_reported_and_never_printed() {
    let dir = TempDir::new("e2e-broken");
    let mut server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let mut mallory: RawClient = server.login("mallory");
    mallory.send("bob", "pmchat-e2e/1 not an envelope at all");
    // And in the sealed form, from a session that may send it.
    let mut sealer = server.connect("sealer");
    sealer.hello("pmchat/1 codes sealed");
    assert_eq!(sealer.pair_frame().0, 2, "WELCOME");
    let mut broken = SEALED.to_vec();
    broken.extend_from_slice(b"\x01 not an envelope either");
    sealer.write(&crate::common::message(b"bob", &broken));
    std::thread::sleep(Duration::from_millis(300));
    let out = bob_catches_up(&server, &dir.0, &[]);
    assert_eq!(out.stdout, "", "nothing printed as text");
    assert_eq!(
        out.stderr.matches("cannot be read").count(),
        2,
        "{}",
        out.stderr
    );
}

#[test]
fn e2e_needs_a_password_and_a_script() {
    let dir = TempDir::new("e2e-usage");
    let server = server(&dir.0);
    let mut command = client_command(server.port, "alice");
    command
        .env("XDG_STATE_HOME", dir.0.join("state"))
        .arg("--e2e");
    let out = run_client(command, b"send bob hi\n");
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("password"), "{}", out.stderr);
}

#[test]
fn a_second_device_of_the_recipient_reads_the_message_too() {
    let dir = TempDir::new("e2e-two-devices");
    let server = server(&dir.0);
    // bob's phone and laptop: two state directories, two devices.
    let laptop = |extra: &[&str]| device_catches_up(&server, &dir.0, ("bob", "bob-laptop"), extra);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    assert_eq!(laptop(&[]).stdout, "");
    let out = send(&server, &dir.0, "send bob to both of you\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(
        bob_catches_up(&server, &dir.0, &[]).stdout,
        "alice: to both of you\n"
    );
    // The laptop had seen nothing yet (no cursor of its own), and the
    // phone moved the name's mark past it: the whole log, then.
    let out = laptop(&["--since", "all"]);
    assert_eq!(
        out.stdout, "alice: to both of you\n",
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn both_sides_verify_the_same_safety_code() {
    let dir = TempDir::new("e2e-verify");
    let server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let out = send(&server, &dir.0, "send bob hello\nverify bob\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let alice_code = out.stdout.trim().rsplit(": ").next().unwrap().to_string();
    let mut command = e2e_client(&server, &dir.0, "bob");
    command.args(["--follow", "--until-caught-up"]);
    let out = run_client(command, b"");
    assert_eq!(out.stdout, "alice: hello\n");
    let out = run_client(e2e_client(&server, &dir.0, "bob"), b"verify alice\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let bob_code = out.stdout.trim().rsplit(": ").next().unwrap().to_string();
    assert_eq!(alice_code.len(), 35, "{alice_code:?}");
    assert_eq!(alice_code, bob_code);
}

/// Publishes, as `name` through a raw connection, an identity for the
/// device `curve25519` signed with another signing key: what a server or
/// a Redis writer swapping a user's key would hand out.
fn publish_forged_identity(server: &ServerProcess, name: &str, curve25519: &[u8]) {
    use vodozemac::olm::Account;
    let forger = Account::new();
    let mut message = b"pmchat-e2e/1 identity ".to_vec();
    message.extend_from_slice(name.as_bytes());
    message.push(0);
    message.extend_from_slice(curve25519);
    let signature = forger.sign(&message);
    let mut identity = forger.ed25519_key().as_bytes().to_vec();
    identity.extend_from_slice(curve25519);
    identity.extend_from_slice(&signature.to_bytes());
    let mut raw = raw_login(server, name);
    let device = vodozemac::base64_encode(curve25519);
    let records = key_records(&[(b'i', &identity)]);
    raw.write(&pair(15, device.as_bytes(), &records));
    let (opcode, _, _) = raw.pair_frame_past_caught_up();
    assert_eq!(opcode, 15, "KEY-COUNT");
}

/// A raw registered login asking for `keys`.
fn raw_login(server: &ServerProcess, name: &str) -> RawClient {
    let mut client = server.connect(name);
    client.hello("pmchat/1 password keys");
    client.write(&[0, 5, 0, 0, 0, 2, b'p', b'w']);
    let (opcode, _, limits) = client.pair_frame();
    assert_eq!(opcode, 2, "WELCOME");
    assert!(String::from_utf8(limits).unwrap().contains("keys"));
    client
}

#[test]
fn a_changed_device_key_holds_messages_until_trust() {
    let dir = TempDir::new("e2e-changed");
    let server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let out = send(&server, &dir.0, "send bob first\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    // bob's device id (his Curve25519 key), as a claim shows it.
    let mut carol = raw_login(&server, "alice");
    carol.write(&pair(16, b"bob", b""));
    let (opcode, device, _) = carol.pair_frame_past_caught_up();
    assert_eq!(opcode, 16, "DEVICE-KEYS");
    drop(carol);
    let curve = vodozemac::base64_decode(std::str::from_utf8(&device).unwrap()).unwrap();
    publish_forged_identity(&server, "bob", &curve);

    let out = send(&server, &dir.0, "send bob second\n");
    assert_eq!(out.status, 1, "held: stderr {}", out.stderr);
    assert!(
        out.stderr.contains("CHANGED"),
        "said loudly: {}",
        out.stderr
    );
    // Held across runs until trusted.
    let out = send(&server, &dir.0, "send bob third\n");
    assert_eq!(out.status, 1, "stderr: {}", out.stderr);
    let out = send(&server, &dir.0, "trust bob\nsend bob fourth\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let out = bob_catches_up(&server, &dir.0, &[]);
    assert_eq!(
        out.stdout, "alice: first\nalice: fourth\n",
        "stderr: {}",
        out.stderr
    );
}

/// A TCP relay to `backend` that keeps every byte it carries, both ways.
struct RecordingRelay {
    port: u16,
    carried: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RecordingRelay {
    fn start(backend: u16) -> RecordingRelay {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let carried = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = std::sync::Arc::clone(&carried);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", backend)) else {
                    return;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let record = std::sync::Arc::clone(&record);
                    std::thread::spawn(move || {
                        let mut chunk = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut chunk) {
                            if n == 0 || to.write_all(&chunk[..n]).is_err() {
                                break;
                            }
                            record.lock().unwrap().extend_from_slice(&chunk[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        RecordingRelay { port, carried }
    }

    fn carried(&self) -> Vec<u8> {
        self.carried.lock().unwrap().clone()
    }
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_relay_between_client_and_server_never_carries_the_text() {
    let dir = TempDir::new("e2e-relay");
    let server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let relay = RecordingRelay::start(server.port);
    let alice = e2e_device(relay.port, &dir.0, "alice", "alice");
    let out = run_client(alice, format!("send bob {SECRET}\n").as_bytes());
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let carried = relay.carried();
    assert!(holds(&carried, SEALED), "the envelope went through");
    assert!(!holds(&carried, SECRET.as_bytes()), "the text did not");
    assert_eq!(
        bob_catches_up(&server, &dir.0, &[]).stdout,
        format!("alice: {SECRET}\n")
    );
}

#[test]
fn across_nodes_redis_keeps_only_envelopes() {
    crate::require_redis!();
    let redis = crate::common::RedisProcess::start();
    let dir = TempDir::new("e2e-redis");
    let accounts = accounts_file(&dir.0, &[("alice", "pw"), ("bob", "pw")]);
    let args = [
        "--cluster",
        &redis.url(),
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
    ];
    // alice and bob on two nodes of one namespace.
    let a = ServerProcess::start(&args);
    let b = ServerProcess::start(&args);
    assert_eq!(bob_catches_up(&b, &dir.0, &[]).stdout, "");
    let out = send(&a, &dir.0, &format!("send bob {SECRET}\n"));
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(
        bob_catches_up(&b, &dir.0, &[]).stdout,
        format!("alice: {SECRET}\n")
    );
    let log =
        crate::common::redis_command(redis.port, &[b"XRANGE", b"pmchat:log:{bob}", b"-", b"+"]);
    assert!(holds(&log, SEALED), "bob's log holds the envelope");
    assert!(!holds(&log, SECRET.as_bytes()), "and not the text");
    let one_time_keys = || {
        let keys = crate::common::redis_command(redis.port, &[b"HGETALL", b"pmchat:keys:{bob}"]);
        assert!(holds(&keys, b"i:"), "bob's keys are in Redis");
        // RESP: `$LEN`, `n:DEVICE`, `$LEN`, the count.
        let lines: Vec<&[u8]> = keys.split(|&b| b == b'\n').collect();
        let at = lines.iter().position(|l| l.starts_with(b"n:")).unwrap();
        String::from_utf8_lossy(lines[at + 2]).trim().to_string()
    };
    // 50 published, one handed out to alice's first message.
    assert_eq!(one_time_keys(), "49");
    // A second run of alice's: her session with bob's device goes on, and
    // its claim uses up none of his one-time keys.
    let out = send(&a, &dir.0, "send bob once more\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(bob_catches_up(&b, &dir.0, &[]).stdout, "alice: once more\n");
    assert_eq!(one_time_keys(), "49");
}

#[test]
fn the_senders_other_devices_read_what_it_sent() {
    let dir = TempDir::new("e2e-own-devices");
    let server = server(&dir.0);
    // alice's laptop: a second device of hers, which shows what her
    // phone sends as sent copies.
    let laptop =
        |extra: &[&str]| device_catches_up(&server, &dir.0, ("alice", "alice-laptop"), extra);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    assert_eq!(laptop(&[]).stdout, "");
    let out = send(&server, &dir.0, "send bob from my phone\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(
        bob_catches_up(&server, &dir.0, &[]).stdout,
        "alice: from my phone\n",
        "bob reads his copy only"
    );
    let out = laptop(&["--since", "all"]);
    assert_eq!(
        out.stdout, "→ bob: from my phone\n",
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn a_client_without_e2e_never_shows_ciphertext_as_text() {
    let dir = TempDir::new("e2e-plain-reader");
    let server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let out = send(&server, &dir.0, &format!("send bob {SECRET}\n"));
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    // bob on a client without --e2e.
    let mut plain = client_command(server.port, "bob");
    plain
        .env("PMCHAT_PASSWORD", "pw")
        .env("XDG_STATE_HOME", dir.0.join("state-bob-plain"))
        .args([
            "--allow-plaintext-password",
            "--follow",
            "--until-caught-up",
        ])
        .args(["--since", "all"]);
    let out = run_client(plain, b"");
    assert_eq!(out.stdout, "", "nothing printed as text");
    assert!(out.stderr.contains("--e2e"), "{}", out.stderr);
}

#[test]
fn in_the_editor_messages_are_sealed_and_plaintext_needs_a_yes() {
    use expectrl::Expect;
    let dir = TempDir::new("e2e-editor");
    let mut server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let mut dave = server.login("dave");
    let mut command = e2e_client(&server, &dir.0, "alice");
    command
        .env_remove("HOME")
        .env("HOME", dir.0.join("home-alice"));
    let mut alice = crate::interactive::spawn_in_pty(command, &dir);
    alice.expect("alice> ").unwrap();
    alice.send_line("send bob sealed in the editor").unwrap();
    // Echoed as sent once the server accepted it.
    alice.expect("→ bob: sealed in the editor").unwrap();
    alice.send_line("send dave in the clear?").unwrap();
    alice
        .expect("send this message unencrypted? [y/N]")
        .unwrap();
    alice.send_line("n").unwrap();
    alice.expect("not sent").unwrap();
    dave.expect_silence(Duration::from_millis(300));
    alice.send_line("send dave in the clear!").unwrap();
    alice.expect("[y/N]").unwrap();
    alice.send_line("y").unwrap();
    assert_eq!(
        dave.frame(),
        crate::common::Frame::msg("alice", "in the clear!")
    );
    alice.send_line("exit").unwrap();
    alice.expect(expectrl::Eof).unwrap();
    let out = bob_catches_up(&server, &dir.0, &[]);
    assert_eq!(
        out.stdout, "alice: sealed in the editor\n",
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn history_never_shows_ciphertext() {
    let dir = TempDir::new("e2e-history");
    let mut server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let out = send(&server, &dir.0, &format!("send bob {SECRET}\n"));
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let mut dave = server.login("dave");
    dave.send("bob", "plain and simple");
    std::thread::sleep(Duration::from_millis(300));
    let mut command = e2e_client(&server, &dir.0, "bob");
    command
        .args(["--follow", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = crate::common::ChildGuard(command.spawn().unwrap());
    let lines = lines_of(child.0.stdout.take().unwrap());
    let mut input = child.0.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, b"history\n").unwrap();
    let mut shown = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(1500)) {
        shown.push(line);
    }
    let history: Vec<&String> = shown
        .iter()
        .filter(|line| line.starts_with("{\"type\":\"history\""))
        .collect();
    assert_eq!(history.len(), 1, "{shown:?}");
    assert!(history[0].contains("plain and simple"), "{shown:?}");
    assert!(
        shown.iter().all(|line| !line.contains("pmchat-e2e/1")),
        "no ciphertext: {shown:?}"
    );
}

#[test]
fn a_v1_session_of_the_recipient_is_shown_a_notice_never_the_ciphertext() {
    let dir = TempDir::new("e2e-v1-peer");
    let mut server = server(&dir.0);
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    // bob again, from a client that knows nothing of sealed content.
    let mut bob = server.connect("bob");
    bob.hello("pmchat/1 password");
    bob.write(&[0, 5, 0, 0, 0, 2, b'p', b'w']);
    assert_eq!(bob.pair_frame().0, 2, "WELCOME");
    server.wait_online("bob");
    let out = send(&server, &dir.0, &format!("send bob {SECRET}\n"));
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(bob.frame(), crate::common::Frame::msg("alice", NOTICE));
}

/// A client's stderr lines, as they come.
fn stderr_lines(child: &mut crate::common::ChildGuard) -> std::sync::mpsc::Receiver<String> {
    lines_of(child.0.stderr.take().unwrap())
}

#[test]
fn a_refused_first_message_does_not_leave_the_next_ones_unreadable() {
    // No store: a message to bob while he is away is refused.
    let dir = TempDir::new("e2e-refused-first");
    let accounts = accounts_file(&dir.0, &[("alice", "pw"), ("bob", "pw")]);
    let mut server = ServerProcess::start(&[
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
    ]);
    let follow_bob = |server: &mut ServerProcess| {
        let mut bob = crate::common::spawn_piped({
            let mut command = e2e_client(server, &dir.0, "bob");
            command.arg("--follow");
            command
        });
        let lines = lines_of(bob.0.stdout.take().unwrap());
        server.wait_online("bob");
        // Its keys published.
        std::thread::sleep(Duration::from_millis(500));
        (bob, lines)
    };
    let (bob, _) = follow_bob(&mut server);
    drop(bob);
    server.wait_offline("bob");

    let mut alice = crate::common::spawn_piped(e2e_client(&server, &dir.0, "alice"));
    let errors = stderr_lines(&mut alice);
    let mut input = alice.0.stdin.take().unwrap();
    // The first message of alice's session with bob's device, the one
    // that says whose device it is, is refused...
    std::io::Write::write_all(&mut input, b"send bob one\n").unwrap();
    let refusal = errors.recv_timeout(TIMEOUT).unwrap();
    assert!(refusal.contains("not connected"), "{refusal}");
    // ...so the next one says it again, and bob reads it.
    let (_bob, lines) = follow_bob(&mut server);
    std::io::Write::write_all(&mut input, b"send bob two\n").unwrap();
    drop(input);
    assert_eq!(lines.recv_timeout(TIMEOUT).unwrap(), "alice: two");
    assert_eq!(alice.wait().code(), Some(1), "line 1 was refused");
}

#[test]
fn a_device_added_while_the_sender_runs_is_sealed_for_once_it_wrote() {
    let dir = TempDir::new("e2e-new-device");
    let mut server = server(&dir.0);
    // bob's phone publishes its keys, then follows.
    assert_eq!(bob_catches_up(&server, &dir.0, &[]).stdout, "");
    let mut phone = crate::common::spawn_piped({
        let mut command = e2e_client(&server, &dir.0, "bob");
        command.arg("--follow");
        command
    });
    let phone_lines = lines_of(phone.0.stdout.take().unwrap());
    server.wait_online("bob");

    // alice runs on: her first message is sealed for the phone alone.
    let mut alice = crate::common::spawn_piped(e2e_client(&server, &dir.0, "alice"));
    let alice_lines = lines_of(alice.0.stdout.take().unwrap());
    let mut input = alice.0.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, b"send bob one\n").unwrap();
    assert_eq!(phone_lines.recv_timeout(TIMEOUT).unwrap(), "alice: one");

    // bob's new laptop writes to alice, who reads it...
    let mut laptop = e2e_device(server.port, &dir.0, "bob", "bob-laptop");
    laptop.args(["--follow", "--until-caught-up"]);
    let out = run_client(laptop, b"send alice hello from the laptop\n");
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(
        alice_lines.recv_timeout(TIMEOUT).unwrap(),
        "bob: hello from the laptop"
    );
    // ...and seals her next message for it too, still running.
    std::io::Write::write_all(&mut input, b"send bob two\n").unwrap();
    drop(input);
    assert_eq!(alice.wait().code(), Some(0));
    // (The phone also has a copy of what the laptop sent.)
    assert_eq!(
        phone_lines.recv_timeout(TIMEOUT).unwrap(),
        "→ alice: hello from the laptop"
    );
    assert_eq!(phone_lines.recv_timeout(TIMEOUT).unwrap(), "alice: two");
    let out = device_catches_up(&server, &dir.0, ("bob", "bob-laptop"), &["--since", "all"]);
    assert_eq!(out.stdout, "alice: two\n", "stderr: {}", out.stderr);
}
