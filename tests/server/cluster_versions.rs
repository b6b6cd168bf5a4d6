//! A cluster being upgraded one node at a time: each node's lease holds
//! the batch format it reads, and a node sends another only what that one
//! reads. The other node here exists only in Redis, as a node of that
//! format leaves it, and its inbox is read off Redis directly.

use std::thread;
use std::time::{Duration, Instant};

use crate::cluster_key::capture;
use crate::common::{RedisUnderTest, ServerProcess, TIMEOUT};

crate::on_both!(;
    a_node_whose_lease_says_format_1_never_gets_a_series,
    a_node_whose_lease_says_format_2_gets_series,
);

/// The other node's id.
const OTHER: &str = "00000000000000aa";

/// A node, with alice on it, and another that holds bob and whose lease
/// holds `format`.
fn a_node_beside_one_of_format(redis: &impl RedisUnderTest, format: &str) -> ServerProcess {
    let lease = format!("pmchat:node:{OTHER}");
    let names = format!("pmchat:names:{OTHER}");
    redis.command(&[
        b"SET",
        lease.as_bytes(),
        format.as_bytes(),
        b"PX",
        b"600000",
    ]);
    redis.command(&[b"SADD", b"pmchat:nodes", OTHER.as_bytes()]);
    redis.command(&[b"SET", b"pmchat:name:bob", OTHER.as_bytes()]);
    redis.command(&[b"SADD", names.as_bytes(), b"pmchat:name:bob"]);
    let mut node = ServerProcess::start(&["--cluster", &redis.url()]);
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
    let mut node = a_node_beside_one_of_format(redis, "1");
    let mut alice = node.login("alice");
    // Past the reading of the other node's format, and past the first
    // message, after which a sender's next ones would be staged.
    for n in 0..5 {
        let kind = first_record_kind(redis, &mut alice, &format!("message {n}"));
        assert_eq!(kind, b'M', "message {n}: {:?}", kind as char);
        thread::sleep(Duration::from_millis(100));
    }
}

fn a_node_whose_lease_says_format_2_gets_series(redis: &mut impl RedisUnderTest) {
    let mut node = a_node_beside_one_of_format(redis, "2");
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
