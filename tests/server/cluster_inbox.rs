//! Messages that wait, across nodes (`--cluster` with `--accounts`):
//! registered users' logs on Redis Streams, replayed to a device on
//! whichever node it logs in on, through the real binaries, on one Redis
//! and on a Redis Cluster.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    client_command, lines_of, run_client, Frame, RoundRobinRelay, ServerProcess, TempDir, TIMEOUT,
};
use crate::store::{
    accounts, accounts_of, caught_up, entry, log_in, ordinal, OP_ACCEPTED, OP_REFUSED, OP_STORED,
};

/// `count` nodes on the Redis at `url`, sharing the accounts in `dir`.
fn nodes(url: &str, dir: &TempDir, count: usize) -> Vec<ServerProcess> {
    nodes_with(url, accounts(&dir.0), count, &[])
}

/// `count` nodes on the Redis at `url` with the accounts file `accounts`
/// and `extra` options.
fn nodes_with(
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
    a_session_that_did_not_ask_for_its_inbox_gets_plain_messages_from_another_node,
    ;
);

fn a_message_to_an_offline_name_is_replayed_on_another_node(url: &str) {
    let dir = TempDir::new("cluster-inbox-offline");
    let mut nodes = nodes(url, &dir, 2);
    let mut alice = log_in(&nodes[0], "alice", "receipts codes stored");
    alice.send("bob", "while you were away");
    alice.send("bob", "and another");
    let (opcode, a, b) = alice.pair_frame();
    assert_eq!((opcode, ordinal(&a), ordinal(&b)), (OP_STORED, 1, 2));
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
