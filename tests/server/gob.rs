//! The original Go programs' gob wire through the real server: their
//! captured bytes, gob and v1 users messaging each other, refusals in gob,
//! and hostile gob input.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use pmchat::wire::framing::Decoder;
use pmchat::wire::gob::{self, GobDecoder, GobFrame, GobMessage, MESSAGE_TYPE_DEFINITION};
use pmchat::wire::v1::{Decoded, Limits};

use crate::common::{hex, Frame, RawClient, ServerProcess};
use crate::eqnice;

/// The bytes captured from the original Go programs.
fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../vectors/gob-vectors.json")).unwrap()
}

fn case(case: usize, field: &str) -> Vec<u8> {
    hex(vectors()["cases"][case][field].as_str().unwrap())
}

/// A gob peer at the byte level, reading with a real gob decoder.
struct GobClient {
    stream: TcpStream,
    decoder: GobDecoder,
    buf: Vec<u8>,
}

/// A received `Message`, owned.
#[derive(Debug, PartialEq, Eq)]
struct Received {
    to: String,
    from: String,
    content: String,
    error: bool,
}

fn delivered(to: &str, from: &str, content: &str) -> Received {
    Received {
        to: to.into(),
        from: from.into(),
        content: content.into(),
        error: false,
    }
}

fn error(text: &str) -> Received {
    Received {
        to: String::new(),
        from: String::new(),
        content: text.into(),
        error: true,
    }
}

impl GobClient {
    /// Connects and sends the v1 handshake (the gob wire's too).
    fn login(port: u16, name: &str) -> GobClient {
        let mut raw = RawClient::open(port);
        raw.handshake(name.as_bytes());
        GobClient {
            stream: raw.stream,
            decoder: GobDecoder::new(Limits::default()),
            buf: Vec::new(),
        }
    }

    /// Logs in and makes sure the server knows this is a gob peer before
    /// anyone messages it: a message to nobody, answered in gob.
    fn ready(server: &mut ServerProcess, name: &str) -> GobClient {
        let mut client = GobClient::login(server.port, name);
        client.send("nobody", "");
        eqnice!(error("'nobody' is not connected\n"), client.message());
        client
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Sends `Message{To: to, Content: content}` as the original client
    /// does: type definition first.
    fn send(&mut self, to: &str, content: &str) {
        let mut bytes = Vec::new();
        gob::encode_message(
            &GobMessage {
                to: to.as_bytes(),
                content: content.as_bytes(),
                ..GobMessage::default()
            },
            &mut bytes,
        );
        self.write(&bytes);
    }

    /// Reads raw bytes until `n` have arrived.
    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading: {e}"),
        }
    }

    /// The next `Message` value (type definitions are read on the way).
    fn message(&mut self) -> Received {
        loop {
            match self
                .decoder
                .decode(&self.buf)
                .expect("valid gob from the server")
            {
                Decoded::Frame(GobFrame::Definition, used) => {
                    self.buf.drain(..used);
                }
                Decoded::Frame(GobFrame::Message(m), used) => {
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    let received = Received {
                        to: text(m.to),
                        from: text(m.from),
                        content: text(m.content),
                        error: m.error,
                    };
                    self.buf.drain(..used);
                    return received;
                }
                Decoded::Incomplete { .. } => self.fill(),
            }
        }
    }

    /// Reads what is left until the server closes the connection.
    fn rest_until_closed(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return rest,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return rest,
                Err(e) => panic!("expected close, got {e}"),
            }
        }
    }
}

#[test]
fn the_original_clients_bytes_reach_a_v1_user() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = server.login("bob");
    // The captured stream: handshake as alice, "send bob hello there",
    // "send carol second".
    let mut alice = RawClient::open(server.port);
    alice.write(&case(1, "client_to_server_hex"));
    eqnice!(Frame::msg("alice", "hello there"), bob.frame());
    // carol is not connected: the error comes back in gob, byte for byte
    // what the original server sends.
    let expected = gob_error_bytes("'carol' is not connected\n");
    let mut got = vec![0u8; expected.len()];
    alice.stream.read_exact(&mut got).unwrap();
    eqnice!(expected, got);
}

fn gob_error_bytes(text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    gob::encode_error(text, &mut bytes);
    bytes
}

#[test]
fn deliveries_and_errors_are_byte_identical_to_the_original_server() {
    let mut server = ServerProcess::start(&[]);
    let mut bob = GobClient::ready(&mut server, "bob");
    let mut alice = GobClient::ready(&mut server, "alice");
    alice.write(&case(2, "alice_sent_hex"));
    let expected = case(2, "bob_received_hex");
    let got = bob.read_exact(expected.len());
    eqnice!(expected, got);
    alice.write(&case(3, "alice_sent_hex"));
    let expected = case(3, "alice_received_hex");
    let got = alice.read_exact(expected.len());
    eqnice!(expected, got);

    // A second alice, on gob, is told her name is taken, in gob.
    let mut taken = RawClient::open(server.port);
    taken.write(&case(0, "client_to_server_hex"));
    let expected = case(4, "received_hex");
    let got = taken.read_exact(expected.len());
    eqnice!(expected, got);
    taken.expect_closed();
}

#[test]
fn with_default_wire_gob_a_silent_original_client_receives_and_is_refused_in_gob() {
    let mut server = ServerProcess::start(&["--default-wire", "gob"]);
    // The original client sends only its handshake until its user types.
    let mut bob = RawClient::open(server.port);
    bob.handshake(b"bob");
    server.wait_online("bob");
    let mut alice = server.login("alice");
    alice.send("bob", "hi bob");
    let expected = case(2, "bob_received_hex");
    let got = bob.read_exact(expected.len());
    eqnice!(expected, got);
    // A second silent bob is told the name is taken, in gob.
    let mut taken = RawClient::open(server.port);
    taken.handshake(b"bob");
    let expected = case(4, "received_hex");
    let got = taken.read_exact(expected.len());
    eqnice!(expected, got);
    taken.expect_closed();
    // v1 peers that speak first, and pmchat's client, are served in v1.
    let mut carol = server.connect("carol");
    carol.send("alice", "v1 still");
    eqnice!(Frame::msg("carol", "v1 still"), alice.frame());
    let run = crate::common::run_client(
        crate::common::client_command(server.port, "dave"),
        b"send alice from the client\n",
    );
    eqnice!(0, run.status);
    eqnice!(Frame::msg("dave", "from the client"), alice.frame());
}

#[test]
fn gob_and_v1_users_message_each_other_both_ways() {
    let mut server = ServerProcess::start(&[]);
    let mut gopher = GobClient::ready(&mut server, "gopher");
    let mut rusty = server.login("rusty");
    rusty.send("gopher", "hello from v1 ✓");
    eqnice!(
        delivered("gopher", "rusty", "hello from v1 ✓"),
        gopher.message()
    );
    gopher.send("rusty", "hello from gob");
    eqnice!(Frame::msg("gopher", "hello from gob"), rusty.frame());
    // A claimed sender is ignored: the server knows who sent it.
    let mut forged = Vec::new();
    gob::encode_message(
        &GobMessage {
            to: b"rusty",
            from: b"admin",
            content: b"trust me",
            error: false,
        },
        &mut forged,
    );
    gopher.write(&forged);
    eqnice!(Frame::msg("gopher", "trust me"), rusty.frame());
    // One definition for the whole stream, as Go's own encoder sends it,
    // works as well as one per message.
    let mut stream = Vec::new();
    for content in ["one", "two"] {
        gob::encode_value(
            &GobMessage {
                to: b"rusty",
                content: content.as_bytes(),
                ..GobMessage::default()
            },
            &mut stream,
        );
    }
    gopher.write(&stream);
    eqnice!(Frame::msg("gopher", "one"), rusty.frame());
    eqnice!(Frame::msg("gopher", "two"), rusty.frame());
    // Both are listed like anyone else.
    eqnice!(
        vec!["gopher".to_string(), "rusty".to_string()],
        server.users()
    );
}

#[test]
fn kick_and_shutdown_reach_a_gob_user_in_gob() {
    let mut server = ServerProcess::start(&[]);
    let mut kicked = GobClient::ready(&mut server, "kicked");
    let mut stays = GobClient::ready(&mut server, "stays");
    server.console("kick kicked");
    eqnice!(
        error("you were disconnected by the server operator\n"),
        kicked.message()
    );
    eqnice!(0, kicked.rest_until_closed().len());
    server.console("exit");
    eqnice!(error("server is shutting down\n"), stays.message());
}

#[test]
fn hostile_gob_input_is_refused_and_the_server_serves_on() {
    let mut server = ServerProcess::start(&[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // 2^40 bytes announced.
        ("huge length", vec![0xfb, 0x01, 0x00, 0x00, 0x00, 0x00]),
        // A definition of a slice type, then a value of it.
        ("not a struct", vec![0x04, 0xff, 0x81, 0x02, 0x00]),
        // A value before any definition.
        ("undefined type", vec![0x03, 0xff, 0x82, 0x00]),
        // A struct of 10,000 fields: refused from its length alone.
        ("10,000 fields", ten_thousand_fields()),
        // A recursive struct: its field To is of its own type.
        ("recursive type", recursive_definition()),
        // A client claiming to send an error.
        ("Error: true", gob_error_bytes("forged\n")),
    ];
    for (what, bytes) in cases {
        let mut peer = GobClient::login(server.port, "hostile");
        peer.write(&bytes);
        let reply = peer.message();
        assert!(
            reply.error && reply.content.starts_with("gob"),
            "{what}: {reply:?}"
        );
        peer.rest_until_closed();
        server.wait_offline("hostile");
    }
    // A truncated stream: the rest never comes, the peer leaves.
    let mut peer = GobClient::login(server.port, "truncated");
    peer.write(&MESSAGE_TYPE_DEFINITION[..20]);
    drop(peer);
    server.wait_offline("truncated");
    // Still serving.
    let mut a = server.login("a");
    let mut b = GobClient::ready(&mut server, "b");
    a.send("b", "still here");
    eqnice!(delivered("b", "a", "still here"), b.message());
    let rss = pmchat::sys::rss_kib(server.pid()).expect("server RSS");
    assert!(rss < 64 * 1024, "server RSS {rss} KiB");
}

/// Go's definition of `Message` with the type of `To` changed from string
/// (id 6) to the struct itself (id 65).
fn recursive_definition() -> Vec<u8> {
    let mut bytes = MESSAGE_TYPE_DEFINITION.to_vec();
    // ... 01 02 'T' 'o' 01 0c 00 ...: the 0c after "To" is its type id.
    let at = bytes.windows(2).position(|w| w == b"To").unwrap() + 3;
    assert_eq!(bytes[at], 0x0c);
    bytes[at] = 0xff;
    bytes.insert(at + 1, 0x82);
    bytes[0] += 1;
    bytes
}

/// A definition of `Message` with 10,000 fields.
fn ten_thousand_fields() -> Vec<u8> {
    let mut body = vec![0xff, 0x81, 0x03, 0x01, 0x01, 0x07];
    body.extend_from_slice(b"Message");
    body.extend_from_slice(&[0x01, 0xff, 0x82, 0x00, 0x01, 0xfe, 0x27, 0x10]);
    for i in 0..10_000 {
        let name = format!("F{i}");
        body.push(0x01);
        body.push(name.len() as u8);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(&[0x01, 0x0c, 0x00]);
    }
    body.extend_from_slice(&[0x00, 0x00]);
    let len = body.len() as u32;
    let mut out = vec![0xfc];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_gob_peer_asking_for_a_registered_name_is_refused_in_gob() {
    let dir = std::env::temp_dir().join(format!("pmchat-gob-accounts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let accounts = dir.join("accounts");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["passwd", accounts.to_str().unwrap(), "alice"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"pw\n")?;
            child.wait()
        })
        .unwrap();
    assert!(made.success());
    let mut server = ServerProcess::start(&["--accounts", accounts.to_str().unwrap()]);
    let mut impostor = RawClient::open(server.port);
    impostor.write(&case(0, "client_to_server_hex"));
    let expected = gob_error_bytes(
        "'alice' is a registered name; log in with a client that supports passwords\n",
    );
    let got = impostor.read_exact(expected.len());
    eqnice!(expected, got);
    impostor.expect_closed();
    // A free name on gob is served.
    let _carol = GobClient::ready(&mut server, "carol");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_gob_user_that_does_not_read_is_a_slow_consumer_like_any_other() {
    let mut server =
        ServerProcess::start(&["--slow-consumer-timeout", "300ms", "--queue-bytes", "70000"]);
    // `sleepy` speaks gob and never reads again.
    let mut sleepy = GobClient::ready(&mut server, "sleepy");
    let mut alice = server.login("alice");
    let flood = crate::common::flood(alice.stream.try_clone().unwrap(), b"sleepy");
    let text = "'sleepy' was disconnected for not reading fast enough; message not delivered\n";
    eqnice!(Frame::err(text), alice.frame());
    server.wait_offline("sleepy");
    sleepy.rest_until_closed();
    drop(alice);
    let _ = flood.join();
}

#[test]
fn a_gob_user_messaging_an_offline_registered_name_sees_no_error_and_it_is_stored() {
    use crate::store::{entry, log_in, server, TempDir};
    let dir = TempDir::new("store-gob-sender");
    let mut server = server(&dir.0);
    let mut gopher = GobClient::ready(&mut server, "gopher");
    gopher.send("bob", "kept for bob");
    // The next thing the gob user hears is about this one, not the first.
    gopher.send("nobody", "lost");
    eqnice!(error("'nobody' is not connected\n"), gopher.message());
    let mut bob = log_in(&server, "bob", "inbox");
    let got = entry(&mut bob);
    eqnice!(
        ("gopher", "kept for bob"),
        (got.peer.as_str(), got.content.as_str())
    );
}
