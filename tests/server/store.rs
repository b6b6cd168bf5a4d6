//! Messages that wait (`--store`): offline delivery to registered names,
//! stored receipts, catch-up from a cursor, and a store file that is not
//! one, through the real binary and raw frames.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};

pub(crate) use crate::common::TempDir;
use crate::common::{RawClient, ServerProcess, TIMEOUT};

const OP_HELLO: u16 = 2;
pub(crate) const OP_ACCEPTED: u16 = 6;
pub(crate) const OP_REFUSED: u16 = 7;
const OP_ENTRY: u16 = 10;
pub(crate) const OP_STORED: u16 = 11;
const OP_CAUGHT_UP: u16 = 12;

/// `alice` and `bob` registered (password `pw`), hashed at a tiny cost.
pub(crate) fn accounts(dir: &Path) -> PathBuf {
    accounts_of(dir, &["alice", "bob"])
}

/// `names` registered (password `pw`), hashed at a tiny cost.
pub(crate) fn accounts_of(dir: &Path, names: &[&str]) -> PathBuf {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"pmchat-test-salt").unwrap();
    let mut text = String::new();
    for name in names {
        let hash = argon.hash_password(b"pw", &salt).unwrap();
        text.push_str(&format!("{name}:{hash}\n"));
    }
    let path = dir.join("accounts");
    std::fs::write(&path, text).unwrap();
    path
}

/// A server with the accounts and the store in `dir`.
pub(crate) fn server(dir: &Path) -> ServerProcess {
    server_with(dir, &[])
}

/// The same, with `extra` options.
pub(crate) fn server_with(dir: &Path, extra: &[&str]) -> ServerProcess {
    let accounts = accounts(dir);
    let store = dir.join("store.redb");
    let mut args = vec![
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
        "--store",
        store.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// One entry of a user's log, as ENTRY carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) direction: u8,
    pub(crate) peer: String,
    pub(crate) content: String,
}

/// Logs in a registered name with `features` (and `password`, AUTH),
/// and reads its WELCOME.
pub(crate) fn log_in(server: &ServerProcess, name: &str, features: &str) -> RawClient {
    let mut client = server.connect(name);
    client.hello(&format!("pmchat/1 password {features}"));
    let mut auth = vec![0, 5, 0, 0, 0, 2];
    auth.extend_from_slice(b"pw");
    client.write(&auth);
    let (opcode, _, limits) = client.pair_frame();
    assert_eq!(opcode, OP_HELLO, "expected WELCOME");
    let limits = String::from_utf8(limits).unwrap();
    for feature in features.split(' ').filter(|f| !f.contains('=')) {
        assert!(
            limits.split(' ').any(|w| w == feature),
            "{feature} not in {limits}"
        );
    }
    client
}

pub(crate) fn entry(client: &mut RawClient) -> Entry {
    let (opcode, a, b) = client.pair_frame();
    assert_eq!(opcode, OP_ENTRY, "expected ENTRY, got opcode {opcode}");
    Entry {
        id: u64::from_be_bytes(a[..8].try_into().unwrap()),
        direction: a[16],
        peer: String::from_utf8(a[17..].to_vec()).unwrap(),
        content: String::from_utf8(b).unwrap(),
    }
}

/// The next ENTRY, past any CAUGHT-UP.
pub(crate) fn next_entry(client: &mut RawClient) -> Entry {
    loop {
        let (opcode, a, b) = client.pair_frame();
        if opcode == OP_CAUGHT_UP {
            continue;
        }
        assert_eq!(opcode, OP_ENTRY, "expected ENTRY, got opcode {opcode}");
        return Entry {
            id: u64::from_be_bytes(a[..8].try_into().unwrap()),
            direction: a[16],
            peer: String::from_utf8(a[17..].to_vec()).unwrap(),
            content: String::from_utf8(b).unwrap(),
        };
    }
}

/// Reads CAUGHT-UP: how many entries were replayed.
pub(crate) fn caught_up(client: &mut RawClient) -> u64 {
    let (opcode, a, b) = client.pair_frame();
    assert_eq!((opcode, a.len()), (OP_CAUGHT_UP, 0), "expected CAUGHT-UP");
    ordinal(&b)
}

/// Reads STORED receipts for messages 1 to `last`: one frame for them
/// all, or several in a row (the server may read them in more than one
/// batch).
pub(crate) fn stored_through(client: &mut RawClient, last: u64) {
    let mut next = 1;
    while next <= last {
        let (opcode, a, b) = client.pair_frame();
        assert_eq!((opcode, ordinal(&a)), (OP_STORED, next));
        next = ordinal(&b) + 1;
    }
    assert_eq!(next, last + 1);
}

pub(crate) fn ordinal(field: &[u8]) -> u64 {
    u64::from_be_bytes(field[..8].try_into().unwrap())
}

#[test]
fn a_message_to_a_registered_name_nobody_holds_is_stored_and_replayed_at_its_login() {
    let dir = TempDir::new("store-offline");
    let mut server = server(&dir.0);
    let mut alice = log_in(&server, "alice", "receipts codes stored");
    alice.send("bob", "while you were away");
    alice.send("bob", "and another");
    stored_through(&mut alice, 2);
    // Not a registered name: refused as before.
    alice.send("carol", "hi");
    let (opcode, a, _) = alice.pair_frame();
    assert_eq!((opcode, ordinal(&a)), (OP_REFUSED, 3));
    assert_eq!(&a[8..], b"not-connected");

    let mut bob = log_in(&server, "bob", "inbox");
    let first = entry(&mut bob);
    let second = entry(&mut bob);
    assert_eq!(
        (first.direction, first.peer.as_str(), first.content.as_str()),
        (b's', "alice", "while you were away")
    );
    assert_eq!(second.content, "and another");
    assert!(first.id < second.id);
    assert_eq!(caught_up(&mut bob), 2);
    // Live now: the next one comes at once, numbered after them.
    alice.send("bob", "live");
    let live = entry(&mut bob);
    assert_eq!((live.direction, live.content.as_str()), (b'r', "live"));
    assert!(live.id > second.id);
    let (opcode, a, _) = alice.pair_frame();
    assert_eq!((opcode, a.len()), (OP_ACCEPTED, 0));
    drop(bob);
    server.wait_offline("bob");

    // A device without a cursor of its own starts where the last one
    // left: nothing is replayed twice.
    let mut bob = log_in(&server, "bob", "inbox");
    assert_eq!(caught_up(&mut bob), 0);
    bob.expect_silence(Duration::from_millis(300));
    // With a cursor, what came after it.
    drop(bob);
    server.wait_offline("bob");
    let mut bob = log_in(&server, "bob", &format!("inbox after={}", first.id));
    assert_eq!(entry(&mut bob).content, "and another");
    assert_eq!(entry(&mut bob).content, "live");
    assert_eq!(caught_up(&mut bob), 2);
    bob.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_v1_sender_to_an_offline_registered_name_sees_no_error() {
    let dir = TempDir::new("store-v1-sender");
    let mut server = server(&dir.0);
    let mut carol = server.login("carol");
    carol.send("bob", "from v1");
    carol.send("dave", "nobody");
    assert_eq!(
        carol.frame(),
        crate::common::Frame::err("'dave' is not connected\n")
    );
    let mut bob = log_in(&server, "bob", "inbox");
    let got = entry(&mut bob);
    assert_eq!(
        (got.peer.as_str(), got.content.as_str()),
        ("carol", "from v1")
    );
}

#[test]
fn stored_messages_survive_a_restart_and_a_kill_9() {
    let dir = TempDir::new("store-restart");
    // The cursor of bob's device: exact across restarts (a device without
    // one starts from a mark written when a device leaves, which a killed
    // server may not have written).
    let mut cursor = 0;
    for kill in [false, true] {
        let mut server = server(&dir.0);
        let mut alice = log_in(&server, "alice", "receipts stored");
        alice.send(
            "bob",
            if kill {
                "before kill -9"
            } else {
                "before SIGTERM"
            },
        );
        let (opcode, ..) = alice.pair_frame();
        assert_eq!(opcode, OP_STORED);
        if kill {
            server.signal("KILL");
        } else {
            server.signal("TERM");
        }
        server.wait_exit();
        drop(alice);
        let server = self::server(&dir.0);
        let mut bob = log_in(&server, "bob", &format!("inbox after={cursor}"));
        let got = entry(&mut bob);
        assert_eq!(
            got.content,
            if kill {
                "before kill -9"
            } else {
                "before SIGTERM"
            }
        );
        cursor = got.id;
        assert_eq!(caught_up(&mut bob), 1);
        bob.expect_silence(Duration::from_millis(300));
    }
}

#[test]
fn a_device_resuming_from_its_cursor_during_a_flood_misses_nothing_and_repeats_nothing() {
    let dir = TempDir::new("store-flood");
    let mut server = server(&dir.0);
    const TOTAL: usize = 20_000;
    let port = server.port;
    let sender = std::thread::spawn(move || {
        let mut alice = RawClient::open(port);
        alice.handshake(b"alice");
        alice.hello("pmchat/1 password");
        alice.write(&[0, 5, 0, 0, 0, 2, b'p', b'w']);
        let _welcome = alice.pair_frame();
        for i in 0..TOTAL {
            alice.send("bob", &format!("m{i}"));
            if i % 500 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        alice
    });
    let mut cursor = 0u64;
    let mut seen = 0usize;
    let deadline = Instant::now() + TIMEOUT * 3;
    // Each login reads a few hundred messages and leaves, resuming from
    // the id of the last one it read.
    while seen < TOTAL {
        assert!(Instant::now() < deadline, "only {seen} of {TOTAL} arrived");
        let mut bob = log_in(&server, "bob", &format!("inbox after={cursor}"));
        for _ in 0..(TOTAL - seen).min(700) {
            let got = next_entry(&mut bob);
            assert_eq!(got.content, format!("m{seen}"), "after id {cursor}");
            assert!(got.id > cursor);
            cursor = got.id;
            seen += 1;
        }
        // One session per name: the next login waits until this one is
        // gone.
        drop(bob);
        server.wait_offline("bob");
    }
    drop(sender.join().unwrap());
}

#[test]
fn a_file_that_is_not_a_store_is_refused_at_start_and_left_as_it_is() {
    let dir = TempDir::new("store-corrupt");
    let accounts = accounts(&dir.0);
    let store = dir.0.join("store.redb");
    let junk = b"not a store at all\n".repeat(200);
    std::fs::write(&store, &junk).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["0", "--bind", "127.0.0.1", "--accounts"])
        .arg(&accounts)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "it announced a port");
    assert_eq!(std::fs::read(&store).unwrap(), junk);
}

#[test]
fn a_store_in_use_by_another_server_is_refused_at_start() {
    let dir = TempDir::new("store-locked");
    let _first = server(&dir.0);
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["0", "--bind", "127.0.0.1", "--accounts"])
        .arg(dir.0.join("accounts"))
        .arg("--store")
        .arg(dir.0.join("store.redb"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "it announced a port");
}

#[test]
fn history_export_and_purge_work_on_a_closed_store_and_the_console_counts() {
    let dir = TempDir::new("store-export");
    let mut server = server(&dir.0);
    let mut alice = log_in(&server, "alice", "receipts stored");
    alice.send("bob", "for \"bob\"");
    alice.send("bob", "again");
    // Both stored: in one receipt, or (committed apart) in two.
    stored_through(&mut alice, 2);
    server.console("accounts");
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("bob")) {
        lines.push(server.stdout_line());
    }
    let bob = lines.iter().find(|l| l.contains("bob")).unwrap();
    assert!(bob.ends_with(" 2 stored"), "{bob}");
    // Refused while the server has it open.
    let store = dir.0.join("store.redb");
    let history = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .arg("history")
            .args(args)
            .output()
            .unwrap()
    };
    let busy = history(&["export", store.to_str().unwrap(), "bob"]);
    assert_eq!(busy.status.code(), Some(1));
    server.signal("TERM");
    server.wait_exit();

    let export = history(&["export", store.to_str().unwrap(), "bob"]);
    assert_eq!(export.status.code(), Some(0));
    let text = String::from_utf8(export.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("\"dir\":\"in\",\"peer\":\"alice\",\"content\":\"for \\\"bob\\\"\""));
    // alice's own log has the copies she sent.
    let sent = history(&["export", store.to_str().unwrap(), "alice"]);
    assert!(String::from_utf8(sent.stdout)
        .unwrap()
        .contains("\"dir\":\"out\",\"peer\":\"bob\""));
    assert_eq!(
        history(&["purge", store.to_str().unwrap(), "bob"])
            .status
            .code(),
        Some(0)
    );
    let after = history(&["export", store.to_str().unwrap(), "bob"]);
    assert!(after.stdout.is_empty());
    let missing = history(&["export", dir.0.join("nothing").to_str().unwrap(), "bob"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn two_devices_of_one_name_get_every_message_and_each_others_sent_copies() {
    let dir = TempDir::new("store-devices");
    let accounts = accounts(&dir.0);
    let store = dir.0.join("store.redb");
    let mut server = ServerProcess::start(&[
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
        "--store",
        store.to_str().unwrap(),
        "--max-devices",
        "2",
    ]);
    // A presence watcher: bob joins with his first device, leaves with
    // his last.
    let mut carol = server.connect("carol");
    carol.hello("pmchat/1 presence");
    assert_eq!(carol.pair_frame().0, OP_HELLO);
    assert_eq!(carol.pair_frame().0, 3, "the online list");
    let mut first = log_in(&server, "bob", "inbox");
    assert_eq!(caught_up(&mut first), 0);
    assert_eq!(carol.pair_frame(), (4, b"joined".to_vec(), b"bob".to_vec()));
    let mut second = log_in(&server, "bob", "inbox");
    assert_eq!(caught_up(&mut second), 0);
    // A third is one too many.
    let mut third = server.connect("bob");
    third.hello("pmchat/1 password inbox");
    third.write(&[0, 5, 0, 0, 0, 2, b'p', b'w']);
    assert_eq!(
        third.frame(),
        crate::common::Frame::err("'bob' is logged in on as many devices as this server allows\n")
    );
    third.expect_closed();

    let mut alice = log_in(&server, "alice", "receipts");
    assert_eq!(
        carol.pair_frame(),
        (4, b"joined".to_vec(), b"alice".to_vec())
    );
    alice.send("bob", "to both");
    assert_eq!(alice.pair_frame().0, OP_ACCEPTED);
    for device in [&mut first, &mut second] {
        let got = entry(device);
        assert_eq!((got.direction, got.content.as_str()), (b'r', "to both"));
    }
    // What one device sends, the other sees as sent; the sender does not
    // get its own copy.
    first.send("alice", "from the first");
    assert_eq!(
        alice.frame(),
        crate::common::Frame::msg("bob", "from the first")
    );
    let copy = entry(&mut second);
    assert_eq!(
        (copy.direction, copy.peer.as_str(), copy.content.as_str()),
        (b'o', "alice", "from the first")
    );
    first.expect_silence(Duration::from_millis(200));
    // Still online while one device is.
    drop(first);
    carol.expect_silence(Duration::from_millis(300));
    assert!(server.users().iter().any(|n| n == "bob"));
    drop(second);
    assert_eq!(carol.pair_frame(), (4, b"left".to_vec(), b"bob".to_vec()));
}

/// Sets the file-size limit (`RLIMIT_FSIZE`) of a running process.
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit for the call to read, and a null
    // old-limit pointer asks for nothing back.
    let done = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn a_full_disk_refuses_stored_messages_clearly_live_ones_go_on_and_it_recovers() {
    let dir = TempDir::new("store-full-disk");
    let mut server = server(&dir.0);
    let store = dir.0.join("store.redb");
    // The disk is "full" a little past what the store holds now.
    let size = std::fs::metadata(&store).unwrap().len();
    limit_file_size(server.pid(), Some(size + 256 * 1024));
    let mut carol = server.login("carol");
    let mut alice = log_in(&server, "alice", "receipts codes stored");
    let content = "x".repeat(1000);
    let mut stored = 0;
    let mut refused = None;
    let mut ordinal = 0;
    while refused.is_none() {
        assert!(ordinal < 20_000, "the limit never bit");
        for _ in 0..50 {
            alice.send("bob", &content);
        }
        ordinal += 50;
        // Every one of them accounted for: stored or refused, in order.
        let mut accounted = ordinal - 50;
        while accounted < ordinal {
            let (opcode, a, b) = alice.pair_frame();
            match opcode {
                OP_STORED => {
                    let (first, last) = (ordinal_of(&a), ordinal_of(&b));
                    assert_eq!(first, accounted + 1);
                    stored += last - first + 1;
                    accounted = last;
                }
                OP_REFUSED => {
                    assert_eq!(ordinal_of(&a), accounted + 1);
                    assert_eq!(&a[8..], b"store-unavailable");
                    assert!(String::from_utf8_lossy(&b).contains("cannot store messages right now"));
                    refused.get_or_insert(accounted + 1);
                    accounted += 1;
                }
                OP_ACCEPTED => accounted = ordinal_of(&b).max(accounted),
                other => panic!("unexpected opcode {other}"),
            }
        }
    }
    assert!(stored > 0, "nothing was stored before the limit");
    // Live delivery goes on.
    alice.send("carol", "still here");
    assert_eq!(alice.pair_frame().0, OP_ACCEPTED);
    assert_eq!(
        carol.frame(),
        crate::common::Frame::msg("alice", "still here")
    );
    // Space returns: storing works again.
    limit_file_size(server.pid(), None);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        alice.send("bob", "after");
        let (opcode, _, _) = alice.pair_frame();
        if opcode == OP_STORED {
            break;
        }
        assert_eq!(opcode, OP_REFUSED);
        assert!(Instant::now() < deadline, "storing never recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Everything whose receipt said stored arrives.
    let mut bob = log_in(&server, "bob", "inbox");
    let mut got = 0;
    loop {
        let (opcode, _, b) = bob.pair_frame();
        if opcode == OP_CAUGHT_UP {
            break;
        }
        assert_eq!(opcode, OP_ENTRY);
        got += 1;
        if got > stored {
            assert_eq!(b, b"after");
        }
    }
    assert_eq!(got, stored + 1);
}

fn ordinal_of(field: &[u8]) -> u64 {
    ordinal(field)
}

#[test]
fn a_name_registered_while_a_sender_is_connected_gets_its_messages_stored() {
    let dir = TempDir::new("store-registered-later");
    let server = server(&dir.0);
    let mut alice = log_in(&server, "alice", "receipts stored");
    alice.send("dave", "before");
    let (opcode, a, _) = alice.pair_frame();
    assert_eq!((opcode, ordinal(&a)), (OP_REFUSED, 1));
    // dave is registered: the server reads the accounts again within a
    // second, and the same sender's next message to dave is stored.
    let text = std::fs::read_to_string(dir.0.join("accounts")).unwrap();
    let bob = text.lines().find(|l| l.starts_with("bob:")).unwrap();
    let dave = bob.replacen("bob:", "dave:", 1);
    let updated = dir.0.join("accounts.new");
    std::fs::write(&updated, format!("{text}{dave}\n")).unwrap();
    std::fs::rename(&updated, dir.0.join("accounts")).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut ordinal_now = 1;
    loop {
        ordinal_now += 1;
        alice.send("dave", "after");
        let (opcode, a, _) = alice.pair_frame();
        assert_eq!(ordinal(&a), ordinal_now);
        if opcode == OP_STORED {
            break;
        }
        assert_eq!(opcode, OP_REFUSED);
        assert!(
            Instant::now() < deadline,
            "dave's messages were never stored"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_server_killed_during_a_flood_keeps_every_message_it_said_was_stored() {
    let dir = TempDir::new("store-kill-flood");
    // History enough for the whole flood: retention must not be what
    // drops a message here.
    let keep_all = ["--history-max", "1000000"];
    let mut server = server_with(&dir.0, &keep_all);
    let port = server.port;
    // alice floods bob (offline) and records which messages came back
    // STORED; the server is killed with SIGKILL in the middle.
    let flood = std::thread::spawn(move || {
        let mut alice = RawClient::open(port);
        alice.handshake(b"alice");
        alice.hello("pmchat/1 password receipts stored");
        alice.write(&[0, 5, 0, 0, 0, 2, b'p', b'w']);
        assert_eq!(alice.pair_frame().0, OP_HELLO);
        let writer = alice.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let mut writer = writer;
            for i in 0..200_000 {
                let frame = crate::common::message(b"bob", format!("m{i}").as_bytes());
                if std::io::Write::write_all(&mut writer, &frame).is_err() {
                    return;
                }
            }
        });
        let mut stored = std::collections::BTreeSet::new();
        loop {
            let mut head = [0u8; 6];
            if std::io::Read::read_exact(&mut alice.stream, &mut head).is_err() {
                break;
            }
            let len_a = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let len_b = usize::from(u16::from_be_bytes([head[4], head[5]]));
            let mut body = vec![0u8; len_a + len_b];
            if std::io::Read::read_exact(&mut alice.stream, &mut body).is_err() {
                break;
            }
            if u16::from_be_bytes([head[0], head[1]]) == OP_STORED {
                let (first, last) = (ordinal(&body[..8]), ordinal(&body[8..]));
                stored.extend(first..=last);
            }
        }
        let _ = sender.join();
        stored
    });
    // Let some be stored, then kill it.
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::metadata(dir.0.join("store.redb")).map_or(0, |m| m.len()) < 4 << 20 {
        assert!(Instant::now() < deadline, "nothing was stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("KILL");
    server.wait_exit();
    let stored = flood.join().unwrap();
    assert!(!stored.is_empty(), "no STORED receipt before the kill");

    // Every message whose receipt said stored arrives after the restart,
    // none twice.
    let server = server_with(&dir.0, &keep_all);
    let mut bob = log_in(&server, "bob", "inbox after=0");
    let mut seen = std::collections::BTreeSet::new();
    let mut last_id = 0;
    loop {
        let (opcode, a, b) = bob.pair_frame();
        if opcode == OP_CAUGHT_UP {
            break;
        }
        assert_eq!(opcode, OP_ENTRY);
        let id = ordinal(&a[..8]);
        assert!(id > last_id, "ids out of order");
        last_id = id;
        let text = String::from_utf8(b).unwrap();
        let n: u64 = text.trim_start_matches('m').parse().unwrap();
        assert!(seen.insert(n + 1), "message {text} twice");
    }
    let missing: Vec<_> = stored.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "stored but lost: {missing:?} of {}",
        stored.len()
    );
}
