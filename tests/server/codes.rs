//! Refusals carry a stable code to clients that ask for codes, and v1
//! peers get the same texts, byte for byte, as before.

use crate::common::{Frame, RawClient, ServerProcess};
use crate::eqnice;

/// Opcode of a coded ERROR frame.
const CODED_ERROR: u16 = 9;
/// Opcode of REFUSED.
const REFUSED: u16 = 7;
/// Opcode of WELCOME.
const WELCOME: u16 = 2;

/// A logged-in raw client whose HELLO asked for `features`, past WELCOME.
fn extended(server: &ServerProcess, name: &str, features: &str) -> RawClient {
    let mut client = server.connect(name);
    client.hello(features);
    let (opcode, _, limits) = client.pair_frame();
    eqnice!(WELCOME, opcode);
    assert!(
        String::from_utf8_lossy(&limits).contains("codes") == features.contains("codes"),
        "WELCOME lists codes only when asked: {}",
        String::from_utf8_lossy(&limits)
    );
    client
}

#[test]
fn a_refused_message_carries_its_code_to_a_client_that_asked_and_v1_gets_its_old_bytes() {
    let mut server = ServerProcess::start(&[]);
    let mut coded = extended(&server, "alice", "pmchat/1 codes");
    coded.send("nobody", "hi");
    eqnice!(
        (
            CODED_ERROR,
            b"not-connected".to_vec(),
            b"'nobody' is not connected\n".to_vec()
        ),
        coded.pair_frame()
    );
    // Receipts: the code follows the ordinal in REFUSED.
    let mut receipts = extended(&server, "carol", "pmchat/1 receipts codes");
    receipts.send("nobody", "hi");
    let mut first = 1u64.to_be_bytes().to_vec();
    first.extend_from_slice(b"not-connected");
    eqnice!(
        (REFUSED, first, b"'nobody' is not connected\n".to_vec()),
        receipts.pair_frame()
    );
    // A v1 peer and an extension client that did not ask: the captured
    // bytes of the original server.
    let mut plain = server.login("dave");
    plain.send("nobody", "hello");
    eqnice!(Frame::err("'nobody' is not connected\n"), plain.frame());
    let mut unasked = extended(&server, "erin", "pmchat/1 receipts");
    unasked.send("nobody", "hi");
    eqnice!(
        (
            REFUSED,
            1u64.to_be_bytes().to_vec(),
            b"'nobody' is not connected\n".to_vec()
        ),
        unasked.pair_frame()
    );
    server.wait_online("erin");
}

#[test]
fn a_login_refused_at_once_is_refused_with_its_code() {
    let mut server = ServerProcess::start(&[]);
    let _bob = server.login("bob");
    // The HELLO comes with the handshake, as pmchat's client sends it:
    // the refusal is coded although no session was made.
    let mut second = RawClient::open(server.port);
    second.handshake(b"bob");
    second.hello("pmchat/1 codes");
    eqnice!(
        (
            CODED_ERROR,
            b"name-taken".to_vec(),
            b"Username is taken\n".to_vec()
        ),
        second.pair_frame()
    );
    second.expect_closed();
    // Without codes: the original bytes.
    let mut third = RawClient::open(server.port);
    third.handshake(b"bob");
    third.hello("pmchat/1 presence");
    eqnice!(Frame::err("Username is taken\n"), third.frame());
}

#[test]
fn the_operator_kick_reaches_a_coded_client_as_kicked() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = extended(&server, "bob", "pmchat/1 codes");
    server.console("kick bob");
    eqnice!("kicked 'bob'", server.stdout_line());
    let (opcode, code, _) = bob.pair_frame();
    eqnice!((CODED_ERROR, b"kicked".to_vec()), (opcode, code));
    bob.expect_closed();
}
