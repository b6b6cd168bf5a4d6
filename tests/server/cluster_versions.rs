//! A cluster being upgraded one node at a time: each node's lease holds
//! the batch format it reads, and a node sends another only what that one
//! reads. The other node here exists only in Redis, as a node of that
//! format leaves it, and its inbox is read off Redis directly. With the
//! cluster key, a format past the first counts only if that node signed
//! it.

use std::thread;
use std::time::{Duration, Instant};

use crate::cluster_key::{capture, key_file};
use crate::common::{RedisUnderTest, ServerProcess, TIMEOUT};

crate::on_both!(;
    a_node_whose_lease_says_format_1_never_gets_a_series,
    a_node_whose_lease_says_format_2_gets_series,
    with_the_key_a_format_2_lease_nobody_signed_gets_no_series,
    with_the_key_a_signed_format_2_lease_gets_series,
    with_the_key_a_node_signs_the_format_its_lease_announces,
);

/// The cluster key of the tests that use one.
const SECRET: &str = "the cluster key of an upgrade, long enough to count";

/// `data` signed with [`SECRET`], in hex, as a node signs what it writes.
fn signed(data: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    pmchat::hex::encode(ring::hmac::sign(&key, data.as_bytes()).as_ref())
}

/// The other node's id.
const OTHER: &str = "00000000000000aa";

/// A node, with alice on it, and another that holds bob and whose lease
/// holds `format`.
fn a_node_beside_one_of_format(redis: &impl RedisUnderTest, format: &str) -> ServerProcess {
    a_node_beside(redis, format, false)
}

/// [`a_node_beside_one_of_format`] with `lease` as the other's lease
/// value; `keyed`: both with the cluster key [`SECRET`] (the other's name
/// and its holder signed as a node signs them).
fn a_node_beside(redis: &impl RedisUnderTest, lease: &str, keyed: bool) -> ServerProcess {
    let lease_key = format!("pmchat:node:{OTHER}");
    let names = format!("pmchat:names:{OTHER}");
    let (holder, member) = match keyed {
        false => (OTHER.to_string(), "pmchat:name:bob".to_string()),
        true => {
            let holder = format!("{OTHER} {}", signed(&format!("name:bob:{OTHER}")));
            let member = format!("pmchat:name:bob {holder}");
            (holder, member)
        }
    };
    redis.command(&[
        b"SET",
        lease_key.as_bytes(),
        lease.as_bytes(),
        b"PX",
        b"600000",
    ]);
    redis.command(&[b"SADD", b"pmchat:nodes", OTHER.as_bytes()]);
    redis.command(&[b"SET", b"pmchat:name:bob", holder.as_bytes()]);
    redis.command(&[b"SADD", names.as_bytes(), member.as_bytes()]);
    let key = keyed.then(|| key_file(SECRET));
    let url = redis.url();
    let mut args = vec!["--cluster", &url];
    if let Some(key) = &key {
        args.extend(["--cluster-key-file", key.to_str().unwrap()]);
    }
    let mut node = ServerProcess::start(&args);
    node.wait_online("bob");
    node
}

/// The kind of the first record of the next batch the node publishes to
/// the other one's inbox, after alice sends bob `content`.
fn first_record_kind(
    redis: &impl RedisUnderTest,
    alice: &mut crate::common::RawClient,
    content: &str,
) -> u8 {
    let captured = capture(redis, &format!("pmchat:inbox:{OTHER}"));
    // Let the subscription take hold before the message.
    thread::sleep(Duration::from_millis(100));
    alice.send("bob", content);
    let batch = captured.join().expect("a batch for the other node");
    // The header: the two node ids (each a length byte and the id), the
    // batch's number (8 bytes) and its flags (1).
    let destination = 1 + usize::from(batch[0]);
    let records = destination + 1 + usize::from(batch[destination]) + 8 + 1;
    batch[records]
}

fn a_node_whose_lease_says_format_1_never_gets_a_series(redis: &mut impl RedisUnderTest) {
    let node = a_node_beside_one_of_format(redis, "1");
    never_a_series(redis, node);
}

fn a_node_whose_lease_says_format_2_gets_series(redis: &mut impl RedisUnderTest) {
    let node = a_node_beside_one_of_format(redis, "2");
    series_soon(redis, node);
}

/// A Redis writer without the key setting a node's lease to format 2
/// would have the others send it series, which a node of format 1 cannot
/// read.
fn with_the_key_a_format_2_lease_nobody_signed_gets_no_series(redis: &mut impl RedisUnderTest) {
    let node = a_node_beside(redis, "2", true);
    never_a_series(redis, node);
}

fn with_the_key_a_signed_format_2_lease_gets_series(redis: &mut impl RedisUnderTest) {
    let lease = format!("2 {}", signed(&format!("lease:{OTHER}:2")));
    let node = a_node_beside(redis, &lease, true);
    series_soon(redis, node);
}

/// What the other nodes check above, from the side that writes it.
fn with_the_key_a_node_signs_the_format_its_lease_announces(redis: &mut impl RedisUnderTest) {
    let key = key_file(SECRET);
    let url = redis.url();
    let _node = ServerProcess::start(&[
        "--cluster",
        &url,
        "--cluster-key-file",
        key.to_str().unwrap(),
    ]);
    // Its id, the one member of the set of live nodes, then its lease.
    let bulk = |reply: Vec<u8>| {
        let text = String::from_utf8(reply).unwrap();
        text.lines().last().unwrap_or_default().to_string()
    };
    let deadline = Instant::now() + TIMEOUT;
    let node = loop {
        let node = bulk(redis.command(&[b"SMEMBERS", b"pmchat:nodes"]));
        if node.len() == OTHER.len() {
            break node;
        }
        assert!(Instant::now() < deadline, "the node never listed itself");
        thread::sleep(Duration::from_millis(20));
    };
    let lease_key = format!("pmchat:node:{node}");
    let lease = loop {
        let lease = redis.command(&[b"GET", lease_key.as_bytes()]);
        if lease.starts_with(b"$") && !lease.starts_with(b"$-1") {
            break bulk(lease);
        }
        assert!(Instant::now() < deadline, "the node never wrote its lease");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(lease, format!("2 {}", signed(&format!("lease:{node}:2"))));
}

/// alice on `node` sends the other node's bob five messages, each a
/// record of its own.
fn never_a_series(redis: &impl RedisUnderTest, mut node: ServerProcess) {
    let mut alice = node.login("alice");
    // Past the reading of the other node's format, and past the first
    // message, after which a sender's next ones would be staged.
    for n in 0..5 {
        let kind = first_record_kind(redis, &mut alice, &format!("message {n}"));
        assert_eq!(kind, b'M', "message {n}: {:?}", kind as char);
        thread::sleep(Duration::from_millis(100));
    }
}

/// alice on `node` sends the other node's bob messages until one goes in
/// a series, which must be soon.
fn series_soon(redis: &impl RedisUnderTest, mut node: ServerProcess) {
    let mut alice = node.login("alice");
    // The first goes as a record of its own (the format is read when the
    // node first sends there); a series follows soon.
    let since = Instant::now();
    for n in 0.. {
        let kind = first_record_kind(redis, &mut alice, &format!("message {n}"));
        if kind == b'S' {
            break;
        }
        assert_eq!(kind, b'M', "message {n}: {:?}", kind as char);
        assert!(since.elapsed() < TIMEOUT, "no series after {n} messages");
    }
}
