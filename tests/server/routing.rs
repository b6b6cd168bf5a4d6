//! Routing: delivery, errors to the sender, ordering, byte exactness.

use crate::common::{hex, message, Frame, RawClient, ServerProcess};
use crate::eqnice;
use std::time::Duration;

#[test]
fn message_is_delivered_byte_exact_with_the_senders_name() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    // The frames the original client sent and the original server delivered.
    alice.write(&hex("00000003000b626f6268656c6c6f207468657265"));
    let expected = hex("00000005000b616c69636568656c6c6f207468657265");
    eqnice!(expected.clone(), bob.read_exact(expected.len()));
}

#[test]
fn a_user_may_message_itself() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    alice.send("alice", "note to self");
    eqnice!(Frame::msg("alice", "note to self"), alice.frame());
}

#[test]
fn unknown_recipient_gets_the_v1_error_and_the_sender_stays() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.send("nobody", "hi");
    let expected = hex("0001001a276e6f626f647927206973206e6f7420636f6e6e65637465640a");
    eqnice!(expected.clone(), alice.read_exact(expected.len()));
    alice.send("bob", "still here");
    eqnice!(Frame::msg("alice", "still here"), bob.frame());
}

#[test]
fn recipient_name_with_control_bytes_is_escaped_in_the_error() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    alice.write(&message(b"\x1b[31m", b"x"));
    eqnice!(Frame::err("'\\x1b[31m' is not connected\n"), alice.frame());
}

#[test]
fn invalid_utf8_content_is_refused_and_the_connection_kept() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.write(&message(b"bob", b"\xff\xfe"));
    eqnice!(
        Frame::err("message to 'bob' is not valid UTF-8; not delivered\n"),
        alice.frame()
    );
    alice.send("bob", "fine");
    eqnice!(Frame::msg("alice", "fine"), bob.frame());
}

#[test]
fn ten_thousand_messages_arrive_in_order() {
    let mut server = ServerProcess::start(&[]);
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let mut script = Vec::new();
    for i in 0..10_000 {
        script.extend(message(b"bob", format!("message {i}").as_bytes()));
    }
    let writer = std::thread::spawn(move || {
        alice.write(&script);
        alice
    });
    for i in 0..10_000 {
        eqnice!(Frame::msg("alice", &format!("message {i}")), bob.frame());
    }
    writer.join().unwrap();
}

#[test]
fn maximum_sizes_and_multibyte_utf8_are_byte_exact() {
    let mut server = ServerProcess::start(&[]);
    let long_name = "n".repeat(31) + "~";
    let mut sender = server.login(&long_name);
    let mut receiver = server.login("receiver-with-a-32-byte-name-xyz");
    // 2048 bytes exactly, mixing 1-, 2-, 3- and 4-byte characters.
    let mut content = String::new();
    while content.len() + 10 <= 2048 {
        content.push_str("aé€🌍");
    }
    while content.len() < 2048 {
        content.push('z');
    }
    assert_eq!(content.len(), 2048);
    sender.send("receiver-with-a-32-byte-name-xyz", &content);
    eqnice!(Frame::msg(&long_name, &content), receiver.frame());
}

#[test]
fn a_client_writing_one_byte_at_a_time_is_understood() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = server.login("bob");
    let mut slow = RawClient::open(server.port);
    let mut bytes = vec![4];
    bytes.extend_from_slice(b"slow");
    bytes.extend(message(b"bob", "héllo".as_bytes()));
    bytes.extend(message(b"bob", b"again"));
    for byte in bytes {
        slow.write(&[byte]);
        std::thread::sleep(Duration::from_millis(2));
    }
    eqnice!(Frame::msg("slow", "héllo"), bob.frame());
    eqnice!(Frame::msg("slow", "again"), bob.frame());
}

#[test]
fn handshake_and_several_frames_in_one_write() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = server.login("bob");
    let mut burst = RawClient::open(server.port);
    let mut bytes = vec![5];
    bytes.extend_from_slice(b"burst");
    for i in 0..5 {
        bytes.extend(message(b"bob", format!("m{i}").as_bytes()));
    }
    bytes.extend(message(b"burst", b"to me"));
    burst.write(&bytes);
    for i in 0..5 {
        eqnice!(Frame::msg("burst", &format!("m{i}")), bob.frame());
    }
    eqnice!(Frame::msg("burst", "to me"), burst.frame());
}

#[test]
fn end_of_input_still_delivers_the_errors_for_the_last_messages() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = server.login("bob");
    let mut batch = server.login("batch");
    let mut bytes = Vec::new();
    for i in 0..50 {
        bytes.extend(message(b"ghost", format!("{i}").as_bytes()));
    }
    bytes.extend(message(b"bob", b"last words"));
    batch.write(&bytes);
    batch.finish();
    for _ in 0..50 {
        eqnice!(Frame::err("'ghost' is not connected\n"), batch.frame());
    }
    batch.expect_closed();
    eqnice!(Frame::msg("batch", "last words"), bob.frame());
    // It left the online list.
    eqnice!(vec!["bob".to_string()], server.users());
}
