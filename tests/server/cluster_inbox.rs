//! Messages that wait, across nodes (`--cluster` with `--accounts`):
//! registered users' logs on Redis Streams, replayed to a device on
//! whichever node it logs in on, through the real binaries, on one Redis
//! and on a Redis Cluster.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::io::Read;

use crate::common::{
    client_command, lines_of, run_client, Frame, RawClient, RedisProcess, RedisUnderTest,
    RoundRobinRelay, ServerProcess, TempDir, TIMEOUT,
};
use crate::store::{
    accounts, accounts_of, caught_up, entry, log_in, ordinal, stored_through, OP_ACCEPTED,
    OP_REFUSED, OP_STORED,
};

/// `count` nodes on the Redis at `url`, sharing the accounts in `dir`.
fn nodes(url: &str, dir: &TempDir, count: usize) -> Vec<ServerProcess> {
    nodes_with(url, accounts(&dir.0), count, &[])
}

/// `count` nodes on the Redis at `url` with the accounts file `accounts`
/// and `extra` options.
pub(crate) fn nodes_with(
    url: &str,
    accounts: std::path::PathBuf,
    count: usize,
    extra: &[&str],
) -> Vec<ServerProcess> {
    let mut args = vec![
        "--cluster",
        url,
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
    ];
    args.extend_from_slice(extra);
    (0..count).map(|_| ServerProcess::start(&args)).collect()
}

crate::on_both!(
    a_message_to_an_offline_name_is_replayed_on_another_node,
    messages_to_many_offline_names_are_each_stored_once_for_their_own_owner,
    a_follower_moving_between_nodes_20_times_during_a_flood_prints_every_message_once_in_order,
    devices_of_one_name_on_two_nodes_each_get_every_message_and_the_limit_holds_across_nodes,
    history_export_and_purge_and_the_console_work_on_logs_in_redis,
    a_session_that_did_not_ask_for_its_inbox_gets_plain_messages_from_another_node,
    ;
    with_the_key_an_entry_written_into_a_log_by_someone_else_is_never_shown,
);

fn a_message_to_an_offline_name_is_replayed_on_another_node(url: &str) {
    let dir = TempDir::new("cluster-inbox-offline");
    let mut nodes = nodes(url, &dir, 2);
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    alice.send("bob", "while you were away");
    alice.send("bob", "and another");
    stored_through(&mut alice, 2);
    // Not a registered name, and nobody holds it: refused as before.
    alice.send("carol", "hi");
    let (opcode, a, _) = alice.pair_frame();
    assert_eq!((opcode, ordinal(&a)), (OP_REFUSED, 3));
    assert_eq!(&a[8..], b"not-connected");

    let mut bob = log_in(&nodes[1], "bob", "inbox");
    let first = entry(&mut bob);
    let second = entry(&mut bob);
    assert_eq!(
        (first.direction, first.peer.as_str(), first.content.as_str()),
        (b's', "alice", "while you were away")
    );
    assert_eq!(second.content, "and another");
    assert!(second.id > first.id);
    assert_eq!(caught_up(&mut bob), 2);
    // Live now, from the other node: numbered after them, received.
    nodes[0].wait_online("bob");
    alice.send("bob", "live");
    let live = entry(&mut bob);
    assert_eq!((live.direction, live.content.as_str()), (b'r', "live"));
    assert!(live.id > second.id);
    let (opcode, a, _) = alice.pair_frame();
    assert_eq!((opcode, a.len()), (OP_ACCEPTED, 0));
    drop(bob);
    nodes[1].wait_offline("bob");
    nodes[0].wait_offline("bob");

    // A device without a cursor starts where the last one left, on any
    // node: nothing is replayed twice.
    let mut bob = log_in(&nodes[0], "bob", "inbox");
    assert_eq!(caught_up(&mut bob), 0);
    bob.expect_silence(Duration::from_millis(300));
    drop(bob);
    nodes[0].wait_offline("bob");
    nodes[1].wait_offline("bob");
    // With a cursor, what came after it.
    let mut bob = log_in(&nodes[1], "bob", &format!("inbox after={}", first.id));
    assert_eq!(entry(&mut bob).content, "and another");
    assert_eq!(entry(&mut bob).content, "live");
    assert_eq!(caught_up(&mut bob), 2);
    bob.expect_silence(Duration::from_millis(300));

    // Alice's own log holds what she sent, for her other devices.
    drop(alice);
    nodes[0].wait_offline("alice");
    nodes[1].wait_offline("alice");
    let mut alice = log_in(&nodes[1], "alice", "inbox after=0");
    let sent: Vec<(u8, String, String)> = (0..3)
        .map(|_| {
            let e = entry(&mut alice);
            (e.direction, e.peer, e.content)
        })
        .collect();
    assert_eq!(
        sent,
        [
            (b'o', "bob".into(), "while you were away".into()),
            (b'o', "bob".into(), "and another".into()),
            (b'o', "bob".into(), "live".into()),
        ]
    );
    assert_eq!(caught_up(&mut alice), 3);
}

fn a_session_that_did_not_ask_for_its_inbox_gets_plain_messages_from_another_node(url: &str) {
    let dir = TempDir::new("cluster-inbox-plain");
    let mut nodes = nodes(url, &dir, 2);
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    alice.send("bob", "stored, not for a plain session");
    let (opcode, _, _) = alice.pair_frame();
    assert_eq!(opcode, OP_STORED);
    let mut bob = log_in(&nodes[1], "bob", "codes");
    nodes[0].wait_online("bob");
    alice.send("bob", "hello bob");
    assert_eq!(bob.frame(), Frame::msg("alice", "hello bob"));
    let (opcode, a, _) = alice.pair_frame();
    assert_eq!((opcode, a.len()), (OP_ACCEPTED, 0));
    // What bob sends reaches alice as a plain message too.
    bob.send("alice", "hi alice");
    assert_eq!(alice.frame(), Frame::msg("bob", "hi alice"));
    bob.expect_silence(Duration::from_millis(300));
}

fn messages_to_many_offline_names_are_each_stored_once_for_their_own_owner(url: &str) {
    // Enough owners that their logs spread over every connection the
    // appender uses, their entries interleaved in one sender's stream.
    let owners: Vec<String> = (0..24).map(|i| format!("owner{i}")).collect();
    let mut names: Vec<&str> = owners.iter().map(String::as_str).collect();
    names.push("alice");
    let dir = TempDir::new("cluster-inbox-many");
    let nodes = nodes_with(url, accounts_of(&dir.0, &names), 2, &[]);
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    const EACH: usize = 40;
    for round in 0..EACH {
        for owner in &owners {
            alice.send(owner, &format!("{owner} {round}"));
        }
    }
    let total = (owners.len() * EACH) as u64;
    let mut stored = 0;
    while stored < total {
        let (opcode, a, b) = alice.pair_frame();
        assert_eq!(opcode, OP_STORED, "every message stored");
        assert_eq!(ordinal(&a), stored + 1);
        stored = ordinal(&b);
    }
    for owner in &owners {
        let mut device = log_in(&nodes[1], owner, "inbox after=0");
        let mut previous = 0;
        for round in 0..EACH {
            let got = entry(&mut device);
            assert_eq!(
                (got.peer.as_str(), got.content),
                ("alice", format!("{owner} {round}"))
            );
            assert!(got.id > previous);
            previous = got.id;
        }
        assert_eq!(caught_up(&mut device), EACH as u64);
    }
}

/// `chat-client` for `name` (password `pw`) on `port`, with its state in
/// `dir`.
fn client(port: u16, dir: &Path, name: &str) -> Command {
    let mut command = client_command(port, name);
    command
        .env("PMCHAT_PASSWORD", "pw")
        .env("XDG_STATE_HOME", dir.join(format!("state-{name}")))
        .arg("--allow-plaintext-password");
    command
}

fn a_follower_moving_between_nodes_20_times_during_a_flood_prints_every_message_once_in_order(
    url: &str,
) {
    let dir = TempDir::new("cluster-inbox-flood");
    // History enough for the whole flood: a follower stopped for a moment
    // must find everything it missed.
    let history = ["--history-max", "1000000"];
    let mut nodes = nodes_with(url, accounts(&dir.0), 2, &history);
    // One address for the follower, as behind a load balancer: each run
    // lands on the other node, and its cursor (kept per address) goes on.
    let relay = RoundRobinRelay::start(nodes.iter().map(|n| n.port).collect());
    const TOTAL: usize = 20_000;
    const RESTARTS: usize = 20;
    let script: String = (0..TOTAL).map(|i| format!("send bob m{i}\n")).collect();
    let (port, flood_dir) = (nodes[0].port, dir.0.clone());
    let flood = std::thread::spawn(move || {
        run_client(client(port, &flood_dir, "alice"), script.as_bytes())
    });
    let mut printed: Vec<String> = Vec::new();
    let deadline = Instant::now() + TIMEOUT * 12;
    let mut runs = 0;
    while printed.len() < TOTAL || runs < RESTARTS {
        runs += 1;
        let mut command = client(relay.port, &dir.0, "bob");
        command
            .arg("--follow")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let node = (runs - 1) % nodes.len();
        if printed.len() < TOTAL {
            // At least one line first: a SIGTERM before the client is up
            // would end it by the signal (and prove nothing).
            let want = if runs < RESTARTS {
                printed.len() + 1
            } else {
                TOTAL
            };
            while printed.len() < want {
                assert!(
                    Instant::now() < deadline,
                    "{} of {TOTAL} printed in run {runs}",
                    printed.len()
                );
                if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                    printed.push(line);
                }
            }
        } else {
            nodes[node].wait_online("bob");
        }
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "run {runs}: {status:?}");
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            printed.push(line);
        }
        for node in &mut nodes {
            node.wait_offline("bob");
        }
    }
    let sent = flood.join().unwrap();
    assert_eq!(sent.status, 0, "stderr: {}", sent.stderr);
    assert_eq!(printed.len(), TOTAL, "nothing twice");
    for (i, line) in printed.iter().enumerate() {
        assert_eq!(*line, format!("alice: m{i}"), "in order");
    }
}

/// Logs `name` in on `server` as [`log_in`] does, trying again while the
/// node cannot admit it yet (Redis away, or the node not reconnected).
fn log_in_when_ready(server: &ServerProcess, name: &str, features: &str) -> RawClient {
    let deadline = Instant::now() + TIMEOUT * 3;
    loop {
        let mut client = server.connect(name);
        client.hello(&format!("pmchat/1 password {features}"));
        let mut auth = vec![0, 5, 0, 0, 0, 2];
        auth.extend_from_slice(b"pw");
        client.write(&auth);
        // WELCOME, after any PENDING; anything else is a refusal.
        loop {
            match read_pair(&mut client) {
                Some((2, _, _)) => return client,
                Some((8, _, _)) => continue,
                _ => break,
            }
        }
        assert!(Instant::now() < deadline, "{name} could not log in");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One frame of the extensions' shape, or `None` once the connection
/// ends (or says nothing for [`TIMEOUT`]).
pub(crate) fn read_pair(client: &mut RawClient) -> Option<(u16, Vec<u8>, Vec<u8>)> {
    let mut head = [0; 6];
    client.stream.read_exact(&mut head).ok()?;
    let mut a = vec![0; usize::from(u16::from_be_bytes([head[2], head[3]]))];
    client.stream.read_exact(&mut a).ok()?;
    let mut b = vec![0; usize::from(u16::from_be_bytes([head[4], head[5]]))];
    client.stream.read_exact(&mut b).ok()?;
    Some((u16::from_be_bytes([head[0], head[1]]), a, b))
}

/// Every entry of `name`'s log from the start, read on `server` up to
/// CAUGHT-UP: their contents, in order.
pub(crate) fn whole_log(server: &ServerProcess, name: &str) -> Vec<String> {
    let mut device = log_in_when_ready(server, name, "inbox after=0");
    let mut contents = Vec::new();
    loop {
        let (opcode, _, b) = read_pair(&mut device).expect("the log, then CAUGHT-UP");
        match opcode {
            10 => contents.push(String::from_utf8(b).unwrap()),
            12 => return contents,
            other => panic!("unexpected opcode {other}"),
        }
    }
}

fn devices_of_one_name_on_two_nodes_each_get_every_message_and_the_limit_holds_across_nodes(
    url: &str,
) {
    let dir = TempDir::new("cluster-inbox-devices");
    let mut nodes = nodes_with(url, accounts(&dir.0), 2, &["--max-devices", "2"]);
    let mut phone = log_in(&nodes[0], "bob", "inbox codes");
    assert_eq!(caught_up(&mut phone), 0);
    let mut laptop = log_in(&nodes[1], "bob", "inbox codes");
    assert_eq!(caught_up(&mut laptop), 0);
    // A third, on either node, is one too many.
    for node in &nodes {
        let mut third = node.connect("bob");
        third.hello("pmchat/1 password codes inbox");
        let mut auth = vec![0, 5, 0, 0, 0, 2];
        auth.extend_from_slice(b"pw");
        third.write(&auth);
        let (opcode, a, _) = read_pair(&mut third).expect("a refusal");
        assert_eq!(opcode, 9, "a coded error");
        assert_eq!(&a[..], b"too-many-devices");
    }
    nodes[0].wait_online("bob");
    nodes[1].wait_online("bob");
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    alice.send("bob", "to every device");
    let (opcode, _, _) = alice.pair_frame();
    assert_eq!(opcode, OP_ACCEPTED, "received, not stored: bob is online");
    for device in [&mut phone, &mut laptop] {
        let got = entry(device);
        assert_eq!(
            (got.direction, got.peer.as_str(), got.content.as_str()),
            (b'r', "alice", "to every device")
        );
    }
    // What one device sends, the other sees as sent.
    phone.send("alice", "from the phone");
    assert_eq!(alice.frame(), Frame::msg("bob", "from the phone"));
    let copy = entry(&mut laptop);
    assert_eq!(
        (copy.direction, copy.peer.as_str(), copy.content.as_str()),
        (b'o', "alice", "from the phone")
    );
    // One device leaving keeps the name online; a new one fits again.
    drop(laptop);
    std::thread::sleep(Duration::from_millis(300));
    nodes[0].wait_online("bob");
    let mut tablet = log_in_when_ready(&nodes[1], "bob", "inbox codes");
    assert_eq!(read_pair(&mut tablet).map(|f| f.0), Some(12));
}

fn history_export_and_purge_and_the_console_work_on_logs_in_redis(url: &str) {
    let dir = TempDir::new("cluster-inbox-export");
    let mut nodes = nodes(url, &dir, 1);
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    alice.send("bob", "first");
    alice.send("bob", "second \"quoted\"");
    stored_through(&mut alice, 2);
    nodes[0].console("accounts");
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("bob")) {
        lines.push(nodes[0].stdout_line());
    }
    let bob = lines.iter().find(|l| l.contains("bob")).unwrap();
    assert!(bob.ends_with(" 2 stored"), "{bob}");
    let history = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .arg("history")
            .args(args)
            .output()
            .unwrap()
    };
    let export = history(&["export", url, "bob"]);
    assert!(export.status.success(), "{export:?}");
    let text = String::from_utf8(export.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains(r#""dir":"in","peer":"alice","content":"first""#),
        "{text}"
    );
    assert!(
        lines[1].contains(r#""content":"second \"quoted\"""#),
        "{text}"
    );
    // Alice's own log holds them as sent.
    let export = history(&["export", url, "alice"]);
    assert_eq!(String::from_utf8(export.stdout).unwrap().lines().count(), 2);
    let purge = history(&["purge", url, "bob"]);
    assert!(purge.status.success(), "{purge:?}");
    assert!(String::from_utf8_lossy(&purge.stderr).contains("2 message(s)"));
    let export = history(&["export", url, "bob"]);
    assert!(export.status.success());
    assert!(export.stdout.is_empty());
    // Nothing listens there: a clear failure.
    let port = crate::common::free_port();
    let unreachable = history(&["export", &format!("redis://127.0.0.1:{port}"), "bob"]);
    assert_eq!(unreachable.status.code(), Some(1));
}

#[test]
fn a_device_connected_through_a_redis_restart_gets_what_comes_after() {
    crate::require_redis!();
    let data = TempDir::new("cluster-inbox-restart");
    let mut redis = RedisProcess::start_durable(&data.0);
    let dir = TempDir::new("cluster-inbox-restart-nodes");
    let mut nodes = nodes(&redis.url(), &dir, 2);
    let mut bob = log_in(&nodes[1], "bob", "inbox codes");
    assert_eq!(caught_up(&mut bob), 0);
    nodes[0].wait_online("bob");
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    alice.send("bob", "before");
    assert_eq!(entry(&mut bob).content, "before");
    let (opcode, _, b) = alice.pair_frame();
    assert_eq!((opcode, ordinal(&b)), (OP_ACCEPTED, 1));
    redis.restart();
    // Once the nodes are back, what alice sends reaches bob's device,
    // which stayed connected to its node throughout.
    let deadline = Instant::now() + TIMEOUT * 2;
    let mut ordinal_sent = 1;
    loop {
        ordinal_sent += 1;
        alice.send("bob", &format!("after {ordinal_sent}"));
        let (opcode, a, b) = alice.pair_frame();
        if opcode == OP_ACCEPTED || opcode == OP_STORED {
            assert_eq!(ordinal(&b), ordinal_sent);
            break;
        }
        assert_eq!((opcode, &a[8..]), (OP_REFUSED, &b"store-unavailable"[..]));
        assert!(
            Instant::now() < deadline,
            "Redis never came back for the nodes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = entry(&mut bob);
    assert_eq!(got.content, format!("after {ordinal_sent}"));
}

fn with_the_key_an_entry_written_into_a_log_by_someone_else_is_never_shown(
    redis: &mut impl RedisUnderTest,
) {
    let dir = TempDir::new("cluster-inbox-forged");
    let key = crate::cluster_key::key_file("a secret shared by the nodes, long enough to count");
    let extra = ["--cluster-key-file", key.to_str().unwrap()];
    let mut nodes = nodes_with(&redis.url(), accounts(&dir.0), 1, &extra);
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    alice.send("bob", "genuine");
    let (opcode, _, _) = alice.pair_frame();
    assert_eq!(opcode, OP_STORED);
    // Whoever can write to Redis, without the key: an entry that looks
    // like one from alice, in bob's log.
    let mut forged = vec![b's', 5];
    forged.extend_from_slice(b"alicesend me your password");
    let added = redis.command(&[b"XADD", b"pmchat:log:{bob}", b"*", b"e", &forged]);
    assert!(
        added.starts_with(b"$"),
        "{}",
        String::from_utf8_lossy(&added)
    );
    let log = whole_log(&nodes[0], "bob");
    assert_eq!(log, ["genuine"]);
    let (_, _, dropped) = nodes[0].cluster_state();
    assert!(dropped >= 1, "the forged entry is counted as dropped");
}
