//! Sealed content (the `sealed` extension, #27): the binary envelopes of
//! end-to-end encrypted messages go through as they are between sessions
//! that asked for them, and never reach anyone else as text.

use crate::common::*;
use crate::store::{log_in, server_with};

/// Opcodes of the extension frames the tests read.
const WELCOME: u16 = 2;
const CODED_ERROR: u16 = 9;
const OP_ENTRY: u16 = 10;

/// What a session that did not ask for sealed content is shown instead.
const NOTICE: &[u8] =
    b"[an end-to-end encrypted message, which this client cannot read: chat-client --e2e can]";

/// Sealed content: the mark, then bytes that are no text at all.
fn sealed() -> Vec<u8> {
    let mut content = vec![0xff, 0x00, 0x0a, 0xfe, 0xc0];
    content.extend((0..=255u8).cycle().take(1200));
    content
}

/// The next frame `client` reads is `content` from alice.
fn expect_from_alice(client: &mut RawClient, content: &[u8]) {
    assert_eq!(
        client.frame(),
        Frame::Message {
            from: b"alice".to_vec(),
            content: content.to_vec()
        }
    );
}

/// A logged-in client whose HELLO asked for `features`, past WELCOME.
fn extended(server: &ServerProcess, name: &str, features: &str) -> (RawClient, String) {
    let mut client = server.connect(name);
    client.hello(features);
    let (opcode, _, limits) = client.pair_frame();
    assert_eq!(opcode, WELCOME);
    (client, String::from_utf8(limits).unwrap())
}

#[test]
fn sealed_content_reaches_a_sealed_session_byte_for_byte_and_a_v1_peer_only_as_a_notice() {
    let mut server = ServerProcess::start(&[]);
    let (mut alice, limits) = extended(&server, "alice", "pmchat/1 codes sealed");
    assert!(limits.split(' ').any(|w| w == "sealed"), "{limits}");
    let (mut bob, _) = extended(&server, "bob", "pmchat/1 codes sealed");
    let mut carol = server.login("carol");
    server.wait_online("carol");

    alice.write(&message(b"bob", &sealed()));
    expect_from_alice(&mut bob, &sealed());
    // A v1 peer: never the ciphertext as text.
    alice.write(&message(b"carol", &sealed()));
    expect_from_alice(&mut carol, NOTICE);
    // Text still goes to both as it is.
    alice.send("carol", "plain");
    assert_eq!(carol.frame(), Frame::msg("alice", "plain"));
}

#[test]
fn sealed_content_from_a_session_that_did_not_ask_is_refused_as_not_text() {
    let mut server = ServerProcess::start(&[]);
    // `sealed` counts only with `codes`; WELCOME does not grant it alone.
    let (mut dave, limits) = extended(&server, "dave", "pmchat/1 sealed");
    assert!(!limits.split(' ').any(|w| w == "sealed"), "{limits}");
    let (mut erin, _) = extended(&server, "erin", "pmchat/1 codes");
    let (mut bob, _) = extended(&server, "bob", "pmchat/1 codes sealed");
    server.wait_online("bob");
    dave.write(&message(b"bob", &sealed()));
    assert_eq!(
        dave.frame(),
        Frame::err("message to 'bob' is not valid UTF-8; not delivered\n")
    );
    erin.write(&message(b"bob", &sealed()));
    let (opcode, code, _) = erin.pair_frame();
    assert_eq!((opcode, code), (CODED_ERROR, b"not-utf8".to_vec()));
    // Nothing reached bob: the next thing he gets is this.
    erin.send("bob", "after");
    assert_eq!(bob.frame(), Frame::msg("erin", "after"));
}

#[test]
fn a_stored_sealed_message_is_replayed_as_it_is_to_a_sealed_device_and_as_a_notice_to_others() {
    let dir = TempDir::new("sealed-store");
    let server = server_with(&dir.0, &[]);
    let mut alice = log_in(&server, "alice", "codes sealed");
    // bob is offline: stored.
    alice.write(&message(b"bob", &sealed()));
    alice.send("bob", "plain");
    for (features, first) in [
        ("codes sealed inbox after=0", sealed()),
        ("codes inbox after=0", NOTICE.to_vec()),
    ] {
        let mut bob = log_in(&server, "bob", features);
        let mut contents = Vec::new();
        while contents.len() < 2 {
            let (opcode, _, content) = bob.pair_frame_past_caught_up();
            assert_eq!(opcode, OP_ENTRY, "{features}");
            contents.push(content);
        }
        assert_eq!(contents, [first, b"plain".to_vec()], "{features}");
    }
}

#[test]
fn sealed_content_crosses_nodes_whole_and_reaches_a_v1_peer_there_only_as_a_notice() {
    crate::require_redis!();
    let redis = RedisProcess::start();
    let mut nodes = crate::cluster_attacks::nodes(&redis.url(), 2);
    let (mut alice, _) = extended(&nodes[0], "alice", "pmchat/1 codes sealed");
    let (mut bob, _) = extended(&nodes[1], "bob", "pmchat/1 codes sealed");
    let mut carol = nodes[1].login("carol");
    for name in ["bob", "carol"] {
        nodes[0].wait_online(name);
    }
    alice.write(&message(b"bob", &sealed()));
    expect_from_alice(&mut bob, &sealed());
    alice.write(&message(b"carol", &sealed()));
    expect_from_alice(&mut carol, NOTICE);
}
