//! Several `chat-server` nodes on one real `redis-server` acting as one
//! server: delivery across nodes, one namespace, leases, kick from another
//! node, and Redis going away and coming back.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    client_command, run_client, Follower, Frame, RawClient, RedisUnderTest, ServerProcess, TIMEOUT,
};
use crate::eqnice;

/// `count` nodes on the Redis at `url`.
fn nodes(url: &str, count: usize) -> Vec<ServerProcess> {
    nodes_with(url, count, &[])
}

/// `count` nodes on the Redis at `url`, started with `extra` options.
fn nodes_with(url: &str, count: usize, extra: &[&str]) -> Vec<ServerProcess> {
    let mut args = vec!["--cluster", url];
    args.extend_from_slice(extra);
    (0..count).map(|_| ServerProcess::start(&args)).collect()
}

/// The lease the tests that wait one out give their nodes: what they test
/// is that a lease runs out, not how long the default one lasts.
pub(crate) const SHORT_LEASE: Duration = Duration::from_secs(2);

/// Nodes whose leases last [`SHORT_LEASE`].
pub(crate) fn short_lease_nodes(url: &str, count: usize) -> Vec<ServerProcess> {
    nodes_with(url, count, &["--cluster-lease", "2s"])
}

crate::on_both!(
    messages_cross_nodes_both_ways_in_order,
    not_connected_means_no_node_holds_the_name,
    a_name_has_exactly_one_holder_under_a_20_way_race_across_nodes,
    who_presence_and_the_console_cover_every_node,
    the_console_of_one_node_kicks_a_user_of_another,
    a_killed_node_frees_its_names_within_the_lease,
    a_remote_non_reader_is_dropped_by_its_own_node_and_the_senders_node_stays_bounded,
    every_client_kind_works_across_nodes,
    a_node_cut_off_past_its_lease_hands_over_names_taken_meanwhile,
    a_ban_on_one_node_keeps_the_name_out_of_every_node,
    a_sender_follows_a_user_who_moves_between_nodes,
    a_burst_to_two_remote_users_arrives_whole_and_in_order_after_its_sender_left;
    without_redis_local_users_go_on_and_the_rest_is_refused_until_it_returns,
    redis_restarting_mid_traffic_delivers_nothing_twice_and_traffic_resumes,
);

/// A sender keeps the way to a user on another node while nothing changes;
/// the user moving to a third node, or to the sender's, must not leave it
/// sending to the old one.
fn a_sender_follows_a_user_who_moves_between_nodes(url: &str) {
    let mut nodes = nodes(url, 3);
    let mut alice = nodes[0].login("alice");
    let bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    let mut bob = bob;
    for i in 0..3 {
        alice.send("bob", &format!("to node 1, {i}"));
        eqnice!(Frame::msg("alice", &format!("to node 1, {i}")), bob.frame());
    }
    drop(bob);
    nodes[0].wait_offline("bob");
    let mut bob = nodes[2].login("bob");
    nodes[0].wait_online("bob");
    alice.send("bob", "to node 2");
    eqnice!(Frame::msg("alice", "to node 2"), bob.frame());
    drop(bob);
    nodes[0].wait_offline("bob");
    let mut bob = nodes[0].login("bob");
    alice.send("bob", "on alice's node");
    eqnice!(Frame::msg("alice", "on alice's node"), bob.frame());
}

/// A sender's messages to a user on another node are gathered over its
/// read batch and queued together: each recipient's stay in order across
/// switches between recipients (and a message too large to gather with
/// others), and none is lost when the sender closes the moment it has
/// written them.
fn a_burst_to_two_remote_users_arrives_whole_and_in_order_after_its_sender_left(url: &str) {
    let mut nodes = nodes_with(url, 2, &["--max-message-bytes", "30000"]);
    let mut bob = nodes[1].login("bob");
    let mut carol = nodes[1].login("carol");
    nodes[0].wait_online("bob");
    nodes[0].wait_online("carol");
    let mut alice = nodes[0].login("alice");
    let large = "x".repeat(20_000);
    let content = |i: usize| match i {
        777 => format!("{i} {large}"),
        _ => i.to_string(),
    };
    let to = |i: usize| if (i / 100) % 2 == 0 { "bob" } else { "carol" };
    let mut burst = Vec::new();
    for i in 0..3000 {
        burst.extend(crate::common::message(
            to(i).as_bytes(),
            content(i).as_bytes(),
        ));
    }
    alice.write(&burst);
    drop(alice);
    for i in 0..3000 {
        let reader = if to(i) == "bob" { &mut bob } else { &mut carol };
        eqnice!(Frame::msg("alice", &content(i)), reader.frame());
    }
}

fn messages_cross_nodes_both_ways_in_order(url: &str) {
    let mut nodes = nodes(url, 3);
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    let mut carol = nodes[2].login("carol");
    // Each node sees the others' users before anyone sends.
    for node in &mut nodes {
        for name in ["alice", "bob", "carol"] {
            node.wait_online(name);
        }
    }
    for i in 0..500 {
        alice.send("bob", &format!("a{i}"));
        carol.send("bob", &format!("c{i}"));
    }
    bob.send("alice", "back");
    let (mut from_alice, mut from_carol) = (0, 0);
    for _ in 0..1000 {
        match bob.frame() {
            Frame::Message { from, content } if from == b"alice" => {
                eqnice!(format!("a{from_alice}").into_bytes(), content);
                from_alice += 1;
            }
            Frame::Message { from, content } if from == b"carol" => {
                eqnice!(format!("c{from_carol}").into_bytes(), content);
                from_carol += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eqnice!(Frame::msg("bob", "back"), alice.frame());
    // A message between two users of one node stays on it.
    let mut dave = nodes[0].login("dave");
    alice.send("dave", "local");
    eqnice!(Frame::msg("alice", "local"), dave.frame());
}

fn not_connected_means_no_node_holds_the_name(url: &str) {
    let mut nodes = nodes(url, 2);
    let mut alice = nodes[0].login("alice");
    let bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    alice.send("nobody", "hi");
    eqnice!(Frame::err("'nobody' is not connected\n"), alice.frame());
    drop(bob);
    nodes[0].wait_offline("bob");
    alice.send("bob", "gone?");
    eqnice!(Frame::err("'bob' is not connected\n"), alice.frame());
}

fn a_name_has_exactly_one_holder_under_a_20_way_race_across_nodes(url: &str) {
    let nodes = nodes(url, 3);
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let start = Arc::new(Barrier::new(20));
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let (port, start) = (ports[i % ports.len()], Arc::clone(&start));
            thread::spawn(move || {
                let mut client = RawClient::open(port);
                start.wait();
                client.handshake(b"racer");
                // The loser hears at once; the winner hears nothing.
                client
                    .stream
                    .set_read_timeout(Some(Duration::from_millis(1500)))
                    .unwrap();
                let mut head = [0u8; 1];
                let lost = std::io::Read::read(&mut client.stream, &mut head).is_ok();
                (lost, client)
            })
        })
        .collect();
    let outcomes: Vec<(bool, RawClient)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let winners = outcomes.iter().filter(|(lost, _)| !lost).count();
    eqnice!(1, winners);
}

fn who_presence_and_the_console_cover_every_node(url: &str) {
    let mut nodes = nodes(url, 2);
    let mut watcher = nodes[0].connect("watcher");
    // HELLO asking for presence: WELCOME, the online list, then events.
    let features = b"pmchat/1 presence";
    let mut hello = vec![0, 2, 0, 0, 0, features.len() as u8];
    hello.extend_from_slice(features);
    watcher.write(&hello);
    let head = watcher.read_exact(6);
    eqnice!(2, head[1]);
    let skip = u16::from_be_bytes([head[2], head[3]]) + u16::from_be_bytes([head[4], head[5]]);
    watcher.read_exact(usize::from(skip));
    let online = watcher.pair_frame();
    eqnice!((3, b"end".to_vec(), b"watcher".to_vec()), online);
    let _bob = nodes[1].login("bob");
    eqnice!(
        (4, b"joined".to_vec(), b"bob".to_vec()),
        watcher.pair_frame()
    );
    nodes[0].wait_online("bob");
    nodes[1].wait_online("watcher");
    eqnice!(
        vec!["bob".to_string(), "watcher".to_string()],
        nodes[1].users()
    );
    // WHO on one node lists the other's users.
    watcher.write(&[0, 3, 0, 0, 0, 0]);
    eqnice!(
        (3, b"end".to_vec(), b"bob\nwatcher".to_vec()),
        watcher.pair_frame()
    );
}

/// Reads one extension frame: opcode and its two fields.
fn the_console_of_one_node_kicks_a_user_of_another(url: &str) {
    let mut nodes = nodes(url, 2);
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    nodes[0].console("kick bob");
    eqnice!("kicked 'bob'", nodes[0].stdout_line());
    eqnice!(
        Frame::err("you were disconnected by the server operator\n"),
        bob.frame()
    );
    bob.expect_closed();
    nodes[0].wait_offline("bob");
}

fn a_killed_node_frees_its_names_within_the_lease(url: &str) {
    let mut nodes = short_lease_nodes(url, 2);
    let _dave = nodes[1].login("dave");
    nodes[0].wait_online("dave");
    nodes[1].signal("KILL");
    let killed = Instant::now();
    // Taken until the lease runs out, then free on the other node.
    let mut again = loop {
        let mut attempt = nodes[0].connect("dave");
        attempt
            .stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        if std::io::Read::read(&mut attempt.stream, &mut byte).is_err() {
            break attempt;
        }
        assert!(killed.elapsed() < TIMEOUT, "dave never became free");
        thread::sleep(Duration::from_millis(100));
    };
    let freed = killed.elapsed();
    // Renewed five times per lease: the last renewal was at most a fifth
    // of it before the kill. The bound above is the polling's.
    assert!(
        freed >= SHORT_LEASE * 4 / 5 && freed <= SHORT_LEASE * 3,
        "freed after {freed:?}"
    );
    again.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    again.send("dave", "mine now");
    eqnice!(Frame::msg("dave", "mine now"), again.frame());
}

fn without_redis_local_users_go_on_and_the_rest_is_refused_until_it_returns(
    redis: &mut impl RedisUnderTest,
) {
    let mut nodes = nodes(&redis.url(), 2);
    let mut alice = nodes[0].login("alice");
    let mut carol = nodes[0].login("carol");
    let _bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    redis.stop();
    // Local users keep chatting.
    alice.send("carol", "still here");
    eqnice!(Frame::msg("alice", "still here"), carol.frame());
    // Once the node has noticed: no logins, no messages to other nodes.
    // (One sent before it noticed is refused when it fails to go out.)
    alice
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        alice.send("bob", "anyone?");
        let mut head = [0u8; 4];
        if std::io::Read::read_exact(&mut alice.stream, &mut head).is_ok() {
            let text = alice.read_exact(usize::from(u16::from_be_bytes([head[2], head[3]])));
            eqnice!(
                "'bob' is unreachable right now\n",
                String::from_utf8_lossy(&text)
            );
            break;
        }
        assert!(Instant::now() < deadline, "never refused");
    }
    alice.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut late = nodes[0].connect("late");
    match late.frame() {
        Frame::Error(text) => assert!(text.starts_with("service unavailable"), "{text}"),
        other => panic!("unexpected {other:?}"),
    }
    // Redis comes back (empty: it kept nothing): the nodes claim their
    // names again, and messages cross once more.
    redis.restart();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        alice.send("bob", "back?");
        alice
            .stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut alice.stream, &mut byte) {
            // Silence: delivered.
            Err(_) => break,
            Ok(_) => {
                // The rest of an error frame; try again shortly.
                alice.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let rest = alice.read_exact(3);
                let len = u16::from_be_bytes([rest[1], rest[2]]);
                alice.read_exact(usize::from(len));
            }
        }
        assert!(Instant::now() < deadline, "messages never crossed again");
        thread::sleep(Duration::from_millis(200));
    }
    alice.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Nobody else could take alice's name meanwhile, and it is still hers.
    let mut impostor = nodes[1].connect("alice");
    eqnice!(Frame::err("Username is taken\n"), impostor.frame());
}

fn a_remote_non_reader_is_dropped_by_its_own_node_and_the_senders_node_stays_bounded(url: &str) {
    let mut sender_node = ServerProcess::start(&["--cluster", url]);
    let mut reader_node = ServerProcess::start(&[
        "--cluster",
        url,
        "--slow-consumer-timeout",
        "500ms",
        "--queue-bytes",
        "66048",
    ]);
    let mut bob = reader_node.login("bob");
    let mut carol = reader_node.login("carol");
    let alice = sender_node.login("alice");
    sender_node.wait_online("bob");
    sender_node.wait_online("carol");
    // alice floods bob, who never reads, from a thread of her own.
    let flooding = crate::common::flood(alice.stream.try_clone().unwrap(), b"bob");
    bob.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Nothing read: bob's node disconnects him once his queue stayed full.
    reader_node.wait_offline("bob");
    bob.drain_until_closed();
    // The others on his node are unaffected.
    let mut dave = sender_node.login("dave");
    dave.send("carol", "still fine");
    eqnice!(Frame::msg("dave", "still fine"), carol.frame());
    let _ = alice.stream.shutdown(std::net::Shutdown::Both);
    let _ = flooding.join();
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", sender_node.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap();
    // The flood was far more than this: what waited for Redis was bounded.
    assert!(rss_kib < 64 * 1024, "sender's node RSS {rss_kib} KiB");
}

fn redis_restarting_mid_traffic_delivers_nothing_twice_and_traffic_resumes(
    redis: &mut impl RedisUnderTest,
) {
    let mut nodes = nodes(&redis.url(), 2);
    let alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    // alice sends numbered messages every 2 ms until told to stop; her
    // replies (refusals) are read and dropped on a thread of their own.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writer = alice.stream.try_clone().unwrap();
    let reader = alice.stream.try_clone().unwrap();
    // alice's refusals: while the nodes find each other again, bob is
    // "unreachable right now", never "not connected" (he never left).
    let refusals = thread::spawn(move || {
        let mut reader = RawClient { stream: reader };
        let mut not_connected = 0;
        while let Ok(frame) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.frame()))
        {
            if matches!(frame, Frame::Error(text) if text.contains("not connected")) {
                not_connected += 1;
            }
        }
        not_connected
    });
    // How many alice has sent, and the highest number bob has seen (0
    // until he sees one past the first).
    let sent_so_far = Arc::new(AtomicU32::new(0));
    let highest_seen = Arc::new(AtomicU32::new(0));
    let sending = {
        let stop = Arc::clone(&stop);
        let sent_so_far = Arc::clone(&sent_so_far);
        thread::spawn(move || {
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let frame = crate::common::message(b"bob", sent.to_string().as_bytes());
                if std::io::Write::write_all(&mut writer, &frame).is_err() {
                    break;
                }
                sent += 1;
                sent_so_far.store(sent, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    let highest = Arc::clone(&highest_seen);
    let bob_socket = bob.stream.try_clone().unwrap();
    let receiving = thread::spawn(move || {
        // Quiet while Redis is away and the nodes come back (see below);
        // the end is bob's socket shut down.
        bob.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(frame) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bob.frame()))
        {
            match frame {
                Frame::Message { content, .. } => {
                    let n = String::from_utf8(content).unwrap().parse::<u32>().unwrap();
                    highest.fetch_max(n, Ordering::Relaxed);
                    seen.push(n);
                }
                other => panic!("bob got {other:?}"),
            }
        }
        seen
    });
    thread::sleep(Duration::from_millis(400));
    redis.stop();
    thread::sleep(Duration::from_millis(1000));
    redis.restart();
    // Traffic flows again once both nodes are back: each retries with a
    // back-off that reaches `MAX_DELAY` (5 s), after an attempt that may
    // wait `REDIS_TIMEOUT` (2 s) on a Redis Cluster still forming, so
    // the bound is 10 s; then it flows for a while.
    let restarted_at = sent_so_far.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while highest_seen.load(Ordering::Relaxed) <= restarted_at && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = sending.join().unwrap();
    // What is on its way arrives, then bob stops reading.
    thread::sleep(Duration::from_millis(300));
    bob_socket.shutdown(std::net::Shutdown::Both).unwrap();
    let seen = receiving.join().unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order or twice: {seen:?}"
    );
    let before = seen.iter().filter(|&&n| n < 100).count();
    let after = seen.iter().filter(|&&n| n > restarted_at).count();
    assert!(
        before > 0 && after > 0,
        "sent {sent} ({restarted_at} before the restart), bob saw {seen:?}"
    );
    alice.stream.shutdown(std::net::Shutdown::Both).unwrap();
    eqnice!(0, refusals.join().unwrap());
}

fn every_client_kind_works_across_nodes(url: &str) {
    let mut nodes = nodes(url, 2);
    // On the second node: a gob client and a v1 client with extensions.
    let gopher = Follower::start(&mut nodes[1], "gopher", &["--wire", "gob"]);
    let modern = Follower::start(&mut nodes[1], "modern", &[]);
    nodes[0].wait_online("gopher");
    nodes[0].wait_online("modern");
    // On the first: a raw v1 client.
    let mut oldtimer = nodes[0].login("oldtimer");
    nodes[1].wait_online("oldtimer");
    oldtimer.send("gopher", "to the gob wire");
    oldtimer.send("modern", "to an extended client");
    eqnice!("oldtimer: to the gob wire", gopher.line());
    eqnice!("oldtimer: to an extended client", modern.line());
    // And back, from a gob client on the second node.
    let mut command = client_command(nodes[1].port, "gob2");
    command.args(["--wire", "gob"]);
    let run = run_client(command, b"send oldtimer from the gob wire\n");
    eqnice!(0, run.status);
    eqnice!(Frame::msg("gob2", "from the gob wire"), oldtimer.frame());
}

#[test]
fn on_a_redis_cluster_a_batch_travels_to_one_shard_only() {
    crate::require_redis!();
    let redis = crate::common::RedisClusterProcess::start();
    let mut nodes = nodes(&redis.url(), 2);
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    for i in 0..100 {
        alice.send("bob", &format!("{i}"));
    }
    for i in 0..100 {
        eqnice!(Frame::msg("alice", &format!("{i}")), bob.frame());
    }
    // Sharded publishes only: a plain PUBLISH would be broadcast to every
    // node of the Redis Cluster.
    eqnice!(vec![0, 0, 0], redis.calls("publish"));
    assert!(redis.calls("spublish").iter().sum::<u64>() > 0);
}

fn a_node_cut_off_past_its_lease_hands_over_names_taken_meanwhile(url: &str) {
    let mut nodes = short_lease_nodes(url, 2);
    let mut alice = nodes[0].login("alice");
    nodes[1].wait_online("alice");
    // Frozen past its lease: to the others it is dead.
    nodes[0].signal("STOP");
    thread::sleep(SHORT_LEASE * 3 / 2);
    let mut again = nodes[1].login("alice");
    nodes[0].signal("CONT");
    // Back, it finds its lease gone and the name taken: its session is
    // told and closed; the new one stays.
    match alice.frame() {
        Frame::Error(text) => assert!(text.contains("was taken by another login"), "{text}"),
        other => panic!("unexpected {other:?}"),
    }
    alice.drain_until_closed();
    again.send("alice", "still mine");
    eqnice!(Frame::msg("alice", "still mine"), again.frame());
}

/// Frozen (SIGSTOP), Redis keeps its connections open and answers
/// nothing: a message already written to it in a `PUBLISH` must still be
/// accounted for, refused to its sender once the answer is overdue,
/// never left waiting or dropped without a word.
#[test]
fn a_message_published_to_a_frozen_redis_is_refused_to_its_sender_in_time() {
    crate::require_redis!();
    let redis = crate::common::RedisProcess::start();
    let mut nodes = nodes(&redis.url(), 2);
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    alice.send("bob", "before");
    eqnice!(Frame::msg("alice", "before"), bob.frame());
    redis.signal("STOP");
    let sent = Instant::now();
    alice.send("bob", "into a frozen Redis");
    eqnice!(
        Frame::err("'bob' is unreachable right now\n"),
        alice.frame()
    );
    // Within the publisher's patience for an answer (2 s) and its tick,
    // with room for a loaded machine.
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "{:?}",
        sent.elapsed()
    );
    redis.signal("CONT");
}

/// With one Redis a node reads its inbox on a connection of its own.
/// Redis dropping that connection alone (as it drops a subscriber past
/// its pub/sub output buffer limit) must not leave the node deaf to the
/// other nodes: it reconnects, and their messages reach its users again.
#[test]
fn a_node_whose_subscription_redis_drops_hears_the_other_nodes_again() {
    use std::io::Write;
    crate::require_redis!();
    let redis = crate::common::RedisProcess::start();
    let mut nodes = nodes(&redis.url(), 2);
    let alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    let mut writer = alice.stream.try_clone().unwrap();
    writer
        .write_all(&crate::common::message(b"bob", b"before"))
        .unwrap();
    eqnice!(Frame::msg("alice", "before"), bob.frame());
    // alice is told bob is unreachable while the nodes come back: read
    // and dropped.
    let mut replies = RawClient {
        stream: alice.stream.try_clone().unwrap(),
    };
    thread::spawn(move || {
        while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replies.frame())).is_ok() {}
    });
    let killed = redis.command(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]);
    assert!(
        killed.starts_with(b":") && killed != b":0\r\n",
        "{}",
        String::from_utf8_lossy(&killed)
    );
    // The node's back-off starts at 0.2 s: well within 10 s.
    bob.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        assert!(
            Instant::now() < deadline,
            "bob heard nothing from alice's node since Redis dropped the subscriptions"
        );
        let content = format!("after {n}");
        writer
            .write_all(&crate::common::message(b"bob", content.as_bytes()))
            .unwrap();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bob.frame())) {
            Ok(Frame::Message { content, .. }) if content.starts_with(b"after") => break,
            Ok(other) => panic!("bob got {other:?}"),
            // Nothing within 300 ms: not back yet.
            Err(_) => {}
        }
    }
    alice.stream.shutdown(std::net::Shutdown::Both).unwrap();
}

#[test]
fn a_redis_with_a_password_is_reached_over_tcp_and_over_its_unix_socket() {
    crate::require_redis!();
    let socket = std::env::temp_dir().join(format!("pmchat-redis-{}.sock", std::process::id()));
    let socket = socket.to_str().expect("a UTF-8 path");
    let redis = crate::common::RedisProcess::start_with(&[
        "--requirepass",
        "s3cret",
        "--unixsocket",
        socket,
    ]);
    // Both in database 2: the names are keys, so nodes must agree on it.
    let over_tcp = format!("redis://:s3cret@127.0.0.1:{}/2", redis.port);
    let over_unix = format!("redis+unix://{socket}?db=2&pass=s3cret");
    let mut nodes = [
        ServerProcess::start(&["--cluster", &over_tcp]),
        ServerProcess::start(&["--cluster", &over_unix]),
    ];
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    nodes[1].wait_online("alice");
    alice.send("bob", "over tcp, then the socket");
    eqnice!(
        Frame::msg("alice", "over tcp, then the socket"),
        bob.frame()
    );
    bob.send("alice", "and back");
    eqnice!(Frame::msg("bob", "and back"), alice.frame());
    // One namespace across both ways in.
    let mut impostor = nodes[1].connect("alice");
    eqnice!(Frame::err("Username is taken\n"), impostor.frame());
    drop(redis);
    let _ = std::fs::remove_file(socket);
}

#[test]
fn a_wrong_redis_password_refuses_logins_as_service_unavailable() {
    crate::require_redis!();
    let redis = crate::common::RedisProcess::start_with(&["--requirepass", "s3cret"]);
    let url = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let node = ServerProcess::start(&["--cluster", &url]);
    match node.connect("alice").frame() {
        Frame::Error(text) => assert!(text.starts_with("service unavailable"), "{text}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_redis_that_accepts_and_never_answers_counts_as_unreachable() {
    // A "Redis" that takes connections and never says a word: the node's
    // hello must time out and be tried again later, not hang for good.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("its address").port();
    let (accepted, attempts) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
            if accepted.send(()).is_err() {
                break;
            }
        }
    });
    let url = format!("redis://127.0.0.1:{port}");
    let node = ServerProcess::start(&["--cluster", &url]);
    match node.connect("alice").frame() {
        Frame::Error(text) => assert!(text.starts_with("service unavailable"), "{text}"),
        other => panic!("unexpected {other:?}"),
    }
    for attempt in 1..=2 {
        if attempts.recv_timeout(TIMEOUT).is_err() {
            panic!("connection attempt {attempt} to the silent Redis never came");
        }
    }
}

fn a_ban_on_one_node_keeps_the_name_out_of_every_node(url: &str) {
    let mut nodes = nodes(url, 2);
    let _bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    // Banned on node 0 while online on node 1: disconnected there.
    nodes[0].console("ban bob");
    nodes[1].wait_offline("bob");
    for node in &nodes {
        let run = run_client(client_command(node.port, "bob"), b"");
        eqnice!(3, run.status);
        eqnice!(
            "chat-client: error: 'bob' is banned from this server\n",
            run.stderr
        );
    }
    nodes[1].console("unban bob");
    // Lifted once the console says so (a client started before that could
    // still find the ban).
    nodes[1].stdout_line();
    for node in &nodes {
        let run = run_client(client_command(node.port, "bob"), b"");
        eqnice!(0, run.status);
    }
}
