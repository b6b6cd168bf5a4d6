//! Bad input: names, oversized headers, timeouts, slow consumers, capacity.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::{message, Frame, RawClient, ServerProcess};
use crate::eqnice;

fn rejected_name(name: &[u8], expected: &str) {
    let server = ServerProcess::start(&[]);
    let mut client = RawClient::open(server.port);
    let mut bytes = vec![name.len() as u8];
    bytes.extend_from_slice(name);
    client.write(&bytes);
    eqnice!(Frame::err(expected), client.frame());
    client.expect_closed();
}

#[test]
fn empty_username_is_rejected() {
    rejected_name(b"", "invalid username: it is empty\n");
}

#[test]
fn too_long_username_is_rejected() {
    rejected_name(&[b'a'; 33], "invalid username: 33 bytes long (limit 32)\n");
}

#[test]
fn username_with_a_space_is_rejected() {
    rejected_name(
        b"al ice",
        "invalid username: byte 0x20 at position 2 is not allowed (printable ASCII without spaces only)\n",
    );
}

#[test]
fn username_with_a_control_byte_is_rejected() {
    rejected_name(
        b"bob\x1b",
        "invalid username: byte 0x1b at position 3 is not allowed (printable ASCII without spaces only)\n",
    );
}

#[test]
fn taken_username_is_refused_and_the_holder_unaffected() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = server.login("bob");
    let mut alice = server.login("alice");
    let mut second = server.connect("bob");
    // Byte-exact v1 vector.
    eqnice!(
        crate::common::hex("00010012557365726e616d652069732074616b656e0a"),
        second.read_exact(22)
    );
    second.expect_closed();
    alice.send("bob", "you are still you");
    eqnice!(Frame::msg("alice", "you are still you"), bob.frame());
}

#[test]
fn name_is_free_again_after_its_holder_disconnects() {
    let mut server = ServerProcess::start(&[]);
    let bob = server.login("bob");
    drop(bob);
    server.wait_offline("bob");
    let mut bob_again = server.login("bob");
    bob_again.send("bob", "mine now");
    eqnice!(Frame::msg("bob", "mine now"), bob_again.frame());
}

#[test]
fn a_rejected_client_that_keeps_writing_still_gets_the_error() {
    let mut server = ServerProcess::start(&[]);
    let _bob = server.login("bob");
    let mut second = server.connect("bob");
    // Keep writing well past the rejection; the server must not reset the
    // connection before the error frame can be read.
    let junk = message(b"alice", &[b'x'; 1000]);
    for _ in 0..200 {
        if second.stream.write_all(&junk).is_err() {
            break;
        }
    }
    eqnice!(Frame::err("Username is taken\n"), second.frame());
    // An orderly close, not a reset that could have eaten the error.
    second.expect_eof();
}

fn oversize_header(header: &[u8], expected: &str) {
    let mut server = ServerProcess::start(&[]);
    let mut bystander = server.login("bystander");
    let mut bad = server.login("bad");
    bad.write(header);
    eqnice!(Frame::err(expected), bad.frame());
    bad.expect_closed();
    // Others never notice.
    bystander.send("bystander", "unaffected");
    eqnice!(Frame::msg("bystander", "unaffected"), bystander.frame());
}

#[test]
fn oversize_recipient_header_closes_without_reading_the_body() {
    oversize_header(
        &[0, 0, 0xff, 0xff, 0, 1],
        "recipient name too long: 65535 bytes (limit 32)\n",
    );
}

#[test]
fn oversize_content_header_closes_without_reading_the_body() {
    oversize_header(
        &[0, 0, 0, 3, 0x08, 0x01],
        "message too long: 2049 bytes (limit 2048)\n",
    );
}

#[test]
fn unknown_opcode_closes_the_connection() {
    oversize_header(&[0, 9, 0, 0, 0, 0], "unknown opcode 9\n");
}

#[test]
fn configured_limits_apply() {
    let mut server =
        ServerProcess::start(&["--max-message-bytes", "10", "--max-username-bytes", "4"]);
    let mut abcd = server.login("abcd");
    abcd.send("abcd", "0123456789");
    eqnice!(Frame::msg("abcd", "0123456789"), abcd.frame());
    abcd.write(&[0, 0, 0, 4, 0, 11]);
    eqnice!(
        Frame::err("message too long: 11 bytes (limit 10)\n"),
        abcd.frame()
    );
    let mut long = server.connect("abcde");
    eqnice!(
        Frame::err("invalid username: 5 bytes long (limit 4)\n"),
        long.frame()
    );
}

#[test]
fn handshake_timeout_closes_silent_connections() {
    let server = ServerProcess::start(&["--handshake-timeout", "300ms"]);
    let mut silent = RawClient::open(server.port);
    let started = Instant::now();
    eqnice!(
        Frame::err("no username received within 300ms\n"),
        silent.frame()
    );
    silent.expect_closed();
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_frame_body_that_never_arrives_times_out() {
    let mut server = ServerProcess::start(&["--frame-timeout", "300ms"]);
    let mut client = server.login("stall");
    client.write(&[0, 0, 0, 3, 0, 10, b'b']);
    eqnice!(
        Frame::err("frame not received in full within 300ms\n"),
        client.frame()
    );
    client.expect_closed();
}

#[test]
fn idle_logged_in_users_are_not_timed_out() {
    let mut server =
        ServerProcess::start(&["--handshake-timeout", "200ms", "--frame-timeout", "200ms"]);
    let mut idle = server.login("idle");
    idle.expect_silence(Duration::from_millis(600));
    idle.send("idle", "awake");
    eqnice!(Frame::msg("idle", "awake"), idle.frame());
}

#[test]
fn a_slow_consumer_is_disconnected_and_the_sender_told() {
    let mut server =
        ServerProcess::start(&["--slow-consumer-timeout", "300ms", "--queue-bytes", "70000"]);
    // `sleepy` never reads; its socket buffers and then its queue fill up.
    let mut sleepy = server.login("sleepy");
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let flood = crate::common::flood(alice.stream.try_clone().unwrap(), b"sleepy");
    let text = "'sleepy' was disconnected for not reading fast enough; message not delivered\n";
    eqnice!(Frame::err(text), alice.frame());
    server.wait_offline("sleepy");
    // Others kept chatting; sleepy is gone from the list.
    bob.send("bob", "still fine");
    eqnice!(Frame::msg("bob", "still fine"), bob.frame());
    assert!(!server.users().contains(&"sleepy".to_string()));
    // Its connection is really closed: once it reads what was in flight,
    // it sees the end.
    sleepy.drain_until_closed();
    drop(alice);
    let _ = flood.join();
}

#[test]
fn one_client_over_the_maximum_is_told_the_server_is_full() {
    let mut server = ServerProcess::start(&["--max-clients", "2"]);
    let _a = server.login("a");
    let _b = server.login("b");
    let mut c = RawClient::open(server.port);
    eqnice!(Frame::err("server is full\n"), c.frame());
    c.expect_closed();
}
