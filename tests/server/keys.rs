//! The `keys` extension (#27): registered devices publish their public
//! keys; a claim hands out one key per device, each one-time key once.

use crate::common::*;
use crate::store::{accounts, log_in, server_with};

const OP_KEYS: u16 = 15;
const OP_CLAIM: u16 = 16;
const OP_DEVICE_KEYS: u16 = 16;
const OP_KEYS_END: u16 = 17;

/// Publishes and reads KEY-COUNT.
fn publish(client: &mut RawClient, device: &str, list: &[(u8, &[u8])]) -> u64 {
    client.write(&pair(OP_KEYS, device.as_bytes(), &key_records(list)));
    let (opcode, a, b) = client.pair_frame_past_caught_up();
    assert_eq!((opcode, a), (15, device.as_bytes().to_vec()), "KEY-COUNT");
    u64::from_be_bytes(b.try_into().unwrap())
}

/// Claims `name`'s keys: `(device, records)` per device.
fn claim(client: &mut RawClient, name: &str) -> Vec<(String, Vec<u8>)> {
    claim_knowing(client, name, "")
}

/// Claims `name`'s keys as a claimer with sessions with the devices
/// `known` (ids, one a line) already.
fn claim_knowing(client: &mut RawClient, name: &str, known: &str) -> Vec<(String, Vec<u8>)> {
    client.write(&pair(OP_CLAIM, name.as_bytes(), known.as_bytes()));
    let mut devices = Vec::new();
    loop {
        let (opcode, a, b) = client.pair_frame_past_caught_up();
        match opcode {
            OP_DEVICE_KEYS => devices.push((String::from_utf8(a).unwrap(), b)),
            OP_KEYS_END => {
                assert_eq!(a, name.as_bytes());
                assert_eq!(
                    u64::from_be_bytes(b.try_into().unwrap()),
                    devices.len() as u64
                );
                return devices;
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
}

#[test]
fn each_one_time_key_is_handed_out_once_then_the_fallback_even_across_a_restart() {
    let dir = TempDir::new("keys-store");
    let mut server = server_with(&dir.0, &[]);
    // Two devices of alice: each fed from her inbox.
    let mut phone = log_in(&server, "alice", "keys inbox");
    let mut laptop = log_in(&server, "alice", "keys inbox");
    let published = [
        (b'i', &b"phone identity"[..]),
        (b'o', b"otk-1"),
        (b'o', b"otk-2"),
        (b'f', b"fallback"),
    ];
    assert_eq!(publish(&mut phone, "phone", &published), 2);
    assert_eq!(
        publish(&mut laptop, "laptop", &[(b'i', b"laptop identity")]),
        0
    );

    let mut bob = log_in(&server, "bob", "keys");
    // A claimer with a session with the phone already: its identity
    // alone, and none of its keys used up (otk-1 comes next).
    assert_eq!(
        claim_knowing(&mut bob, "alice", "phone"),
        vec![
            (
                "laptop".to_string(),
                key_records(&[(b'i', b"laptop identity")])
            ),
            (
                "phone".to_string(),
                key_records(&[(b'i', b"phone identity")])
            ),
        ]
    );
    let first = claim(&mut bob, "alice");
    assert_eq!(
        first,
        vec![
            (
                "laptop".to_string(),
                key_records(&[(b'i', b"laptop identity")])
            ),
            (
                "phone".to_string(),
                key_records(&[(b'i', b"phone identity"), (b'o', b"otk-1")])
            ),
        ]
    );
    assert_eq!(
        claim(&mut bob, "alice")[1].1,
        key_records(&[(b'i', b"phone identity"), (b'o', b"otk-2")])
    );
    assert_eq!(
        claim(&mut bob, "alice")[1].1,
        key_records(&[(b'i', b"phone identity"), (b'f', b"fallback")])
    );
    // A name with no keys: an empty answer.
    assert!(claim(&mut bob, "carol").is_empty());

    // The keys outlive the server; the one-time keys stay handed out.
    drop((phone, laptop, bob));
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let server = server_with(&dir.0, &[]);
    let mut bob = log_in(&server, "bob", "keys");
    assert_eq!(
        claim(&mut bob, "alice")[1].1,
        key_records(&[(b'i', b"phone identity"), (b'f', b"fallback")])
    );
}

#[test]
fn without_a_store_keys_live_in_memory() {
    let dir = TempDir::new("keys-memory");
    let accounts = accounts(&dir.0);
    let server = ServerProcess::start(&[
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
    ]);
    let mut alice = log_in(&server, "alice", "keys");
    assert_eq!(publish(&mut alice, "a1", &[(b'i', b"id"), (b'o', b"k")]), 1);
    let mut bob = log_in(&server, "bob", "keys");
    // A claimer that has a session with a1 already: its identity alone,
    // and no key used up.
    assert_eq!(
        claim_knowing(&mut bob, "alice", "a0\na1"),
        vec![("a1".into(), key_records(&[(b'i', b"id")]))]
    );
    assert_eq!(
        claim(&mut bob, "alice"),
        vec![("a1".into(), key_records(&[(b'i', b"id"), (b'o', b"k")]))]
    );
    assert_eq!(
        claim(&mut bob, "alice"),
        vec![("a1".into(), key_records(&[(b'i', b"id")]))]
    );
}

#[test]
fn an_unregistered_name_gets_no_keys_and_cannot_publish_any() {
    let dir = TempDir::new("keys-unregistered");
    let server = server_with(&dir.0, &[]);
    let mut mallory = server.connect("mallory");
    mallory.hello("pmchat/1 keys");
    let (opcode, _, limits) = mallory.pair_frame();
    assert_eq!(opcode, 2, "WELCOME");
    assert!(!String::from_utf8(limits)
        .unwrap()
        .split(' ')
        .any(|w| w == "keys"));
    // Publishing under alice's name, or anyone's, is a protocol error.
    mallory.write(&pair(OP_KEYS, b"evil", &key_records(&[(b'i', b"forged")])));
    assert!(matches!(mallory.frame(), Frame::Error(_)));
    mallory.drain_until_closed();
    let mut bob = log_in(&server, "bob", "keys");
    assert!(claim(&mut bob, "alice").is_empty());
}

#[test]
fn hostile_key_records_close_the_connection() {
    let dir = TempDir::new("keys-hostile");
    let server = server_with(&dir.0, &[]);
    for bad in [
        &b"i\x00\x05abc"[..], // longer than the field
        b"x\x00\x01a",        // an unknown kind
        b"i\x00\x00",         // empty
    ] {
        let mut alice = log_in(&server, "alice", "keys");
        alice.write(&pair(OP_KEYS, b"d", bad));
        assert!(matches!(alice.frame(), Frame::Error(_)), "{bad:?}");
        alice.drain_until_closed();
    }
    // Keys before any identity are not kept.
    let mut alice = log_in(&server, "alice", "keys");
    assert_eq!(publish(&mut alice, "d", &[(b'o', b"k")]), 0);
    let mut bob = log_in(&server, "bob", "keys");
    assert!(claim(&mut bob, "alice").is_empty());
}

crate::on_both!(
    across_nodes_each_one_time_key_is_handed_out_once_to_concurrent_claimers,
    ;
);

fn across_nodes_each_one_time_key_is_handed_out_once_to_concurrent_claimers(url: &str) {
    let dir = TempDir::new("keys-cluster");
    let accounts = crate::store::accounts_of(&dir.0, &["alice", "bob", "carol"]);
    let args = [
        "--cluster",
        url,
        "--accounts",
        accounts.to_str().unwrap(),
        "--allow-plaintext-passwords",
    ];
    let a = ServerProcess::start(&args);
    let b = ServerProcess::start(&args);
    let mut alice = log_in(&a, "alice", "keys");
    let published = [
        (b'i', &b"alice identity"[..]),
        (b'o', b"otk-1"),
        (b'o', b"otk-2"),
        (b'f', b"fallback"),
    ];
    assert_eq!(publish(&mut alice, "phone", &published), 2);
    // Published again: the keys add up, the identity stays one.
    assert_eq!(publish(&mut alice, "phone", &[(b'o', b"otk-3")]), 3);
    // A claimer that has a session with the phone: none of its keys.
    assert_eq!(
        claim_knowing(&mut alice, "alice", "phone"),
        vec![("phone".into(), key_records(&[(b'i', b"alice identity")]))]
    );

    // Three claimers on two nodes at once: three different keys.
    let claimers: Vec<_> = [(&a, "bob"), (&b, "carol"), (&b, "alice")]
        .into_iter()
        .map(|(node, name)| log_in(node, name, "keys"))
        .collect();
    let handles: Vec<_> = claimers
        .into_iter()
        .map(|mut client| std::thread::spawn(move || claim(&mut client, "alice")))
        .collect();
    let mut keys: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|handle| {
            let devices = handle.join().unwrap();
            assert_eq!(devices.len(), 1);
            assert_eq!(devices[0].0, "phone");
            devices[0].1.clone()
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            key_records(&[(b'i', b"alice identity"), (b'o', b"otk-1")]),
            key_records(&[(b'i', b"alice identity"), (b'o', b"otk-2")]),
            key_records(&[(b'i', b"alice identity"), (b'o', b"otk-3")]),
        ]
    );
    let mut bob = log_in(&b, "bob", "keys");
    assert_eq!(
        claim(&mut bob, "alice"),
        vec![(
            "phone".into(),
            key_records(&[(b'i', b"alice identity"), (b'f', b"fallback")])
        )]
    );
    assert!(claim(&mut bob, "carol").is_empty());
}
