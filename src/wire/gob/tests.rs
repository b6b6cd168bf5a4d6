//! The gob codec against the original programs' bytes.

use super::*;
use crate::wire::v1::tests::hex;
use proptest::prelude::*;

/// The bytes captured from the original Go programs (a copy of the
/// project's shared gob-vectors.json).
fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../tests/vectors/gob-vectors.json")).unwrap()
}

/// `cases[case][field]`, decoded.
fn case(case: usize, field: &str) -> Vec<u8> {
    hex(vectors()["cases"][case][field].as_str().unwrap())
}

/// `encoder_examples[n].hex`, decoded.
fn example(n: usize) -> Vec<u8> {
    hex(vectors()["encoder_examples"][n]["hex"].as_str().unwrap())
}

fn message<'a>(to: &'a str, from: &'a str, content: &'a str, error: bool) -> GobMessage<'a> {
    GobMessage {
        to: to.as_bytes(),
        from: from.as_bytes(),
        content: content.as_bytes(),
        error,
    }
}

/// Every message value in `stream`, decoded to the end.
fn decode_all(stream: &[u8]) -> Result<Vec<(String, String, String, bool)>, GobError> {
    let mut decoder = GobDecoder::new(Limits::default());
    let mut rest = stream;
    let mut out = Vec::new();
    while !rest.is_empty() {
        match decoder.decode(rest)? {
            Decoded::Frame(frame, used) => {
                if let GobFrame::Message(m) = frame {
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    out.push((text(m.to), text(m.from), text(m.content), m.error));
                }
                rest = &rest[used..];
            }
            Decoded::Incomplete { .. } => return Err(GobError::Truncated("stream")),
        }
    }
    Ok(out)
}

fn owned(to: &str, from: &str, content: &str, error: bool) -> (String, String, String, bool) {
    (to.into(), from.into(), content.into(), error)
}

#[test]
fn the_type_definition_is_the_one_go_writes() {
    assert_eq!(MESSAGE_TYPE_DEFINITION, &case(2, "bob_received_hex")[..60]);
}

#[test]
fn captured_client_streams_decode_after_the_handshake() {
    let stream = case(0, "client_to_server_hex");
    assert_eq!(&stream[..6], b"\x05alice");
    assert_eq!(
        decode_all(&stream[6..]).unwrap(),
        [owned("bob", "", "hi", false)]
    );
    let stream = case(1, "client_to_server_hex");
    assert_eq!(
        decode_all(&stream[6..]).unwrap(),
        [
            owned("bob", "", "hello there", false),
            owned("carol", "", "second", false)
        ]
    );
    assert_eq!(
        decode_all(&example(3)).unwrap(),
        [
            owned("bob", "", "one", false),
            owned("bob", "", "two", false)
        ]
    );
    assert_eq!(
        decode_all(&case(3, "alice_sent_hex")).unwrap(),
        [owned("carol", "", "anyone?", false)]
    );
}

#[test]
fn deliveries_and_errors_are_byte_identical_to_the_original_server() {
    let sent = decode_all(&case(2, "alice_sent_hex")).unwrap();
    assert_eq!(sent, [owned("bob", "", "hi bob", false)]);
    let mut out = Vec::new();
    encode_message(&message("bob", "alice", "hi bob", false), &mut out);
    assert_eq!(out, case(2, "bob_received_hex"));
    assert_eq!(
        out.len(),
        message_len(&message("bob", "alice", "hi bob", false))
    );

    for (text, expected) in [
        ("'carol' is not connected\n", case(3, "alice_received_hex")),
        ("Username is taken\n", case(4, "received_hex")),
    ] {
        out.clear();
        encode_error(text, &mut out);
        assert_eq!(out, expected, "{text:?}");
    }
}

#[test]
fn encoder_examples_match_go() {
    let mut out = Vec::new();
    encode_message(&message("bob", "", "hi", false), &mut out);
    assert_eq!(out, example(0));
    out.clear();
    encode_message(&message("", "alice", "hello bob", false), &mut out);
    assert_eq!(out, example(1));
    out.clear();
    encode_message(&message("bob", "", "", false), &mut out);
    assert_eq!(out, example(2));
    out.clear();
    out.extend_from_slice(MESSAGE_TYPE_DEFINITION);
    encode_value(&message("bob", "", "one", false), &mut out);
    encode_value(&message("bob", "", "two", false), &mut out);
    assert_eq!(out, example(3));
}

#[test]
fn the_known_definition_parses_to_the_layout_it_is_known_as() {
    let body = &MESSAGE_TYPE_DEFINITION[1..];
    let mut cursor = Cursor::new(body);
    let id = cursor.int().unwrap();
    assert_eq!(id, -65);
    assert_eq!(definition(&mut cursor, 65).unwrap(), Layout::GO);
    cursor.finish().unwrap();
}

#[test]
fn long_integers_round_trip() {
    for n in [0, 1, 127, 128, 255, 256, 65_535, 1 << 40, u64::MAX] {
        let mut out = Vec::new();
        put_uint(n, &mut out);
        assert_eq!(out.len(), uint_len(n));
        assert_eq!(Cursor::new(&out).uint().unwrap(), n);
    }
    assert_eq!(Cursor::new(&[0xff, 0x82]).int().unwrap(), 65);
    assert_eq!(Cursor::new(&[0xff, 0x81]).int().unwrap(), -65);
}

/// A definition of a struct with these (name, type id) fields.
fn definition_with(fields: &[(&str, u8)]) -> Vec<u8> {
    let mut body = vec![0xff, 0x81, 0x03, 0x01, 0x01, 0x07];
    body.extend_from_slice(b"Message");
    body.extend_from_slice(&[0x01, 0xff, 0x82, 0x00, 0x01]);
    put_uint(fields.len() as u64, &mut body);
    for (name, id) in fields {
        body.push(0x01);
        put_uint(name.len() as u64, &mut body);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(&[0x01, id << 1, 0x00]);
    }
    body.extend_from_slice(&[0x00, 0x00]);
    let mut out = Vec::new();
    put_uint(body.len() as u64, &mut out);
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_compatible_struct_in_another_order_or_a_subset_is_accepted() {
    let mut stream = definition_with(&[("Content", 6), ("To", 6)]);
    // Content "yo", To "bob": fields 0 and 1 of the peer's struct.
    stream.extend_from_slice(&[0x0c, 0xff, 0x82, 0x01, 0x02, b'y', b'o', 0x01, 0x03]);
    stream.extend_from_slice(b"bob");
    stream.push(0x00);
    assert_eq!(
        decode_all(&stream).unwrap(),
        [owned("bob", "", "yo", false)]
    );
}

#[test]
fn other_types_are_refused_with_a_clear_error() {
    for (fields, why) in [
        (
            &[("To", 6), ("Priority", 2)][..],
            "'Priority' is not one of",
        ),
        (&[("To", 2)][..], "'To' has type id 2"),
        (&[("To", 6), ("To", 6)][..], "appears twice"),
    ] {
        let error = decode_all(&definition_with(fields))
            .unwrap_err()
            .to_string();
        assert!(error.contains(why), "{error}");
    }
    // A slice type (wireType field 1), not a struct.
    let error = decode_all(&[0x04, 0xff, 0x81, 0x02, 0x00]).unwrap_err();
    assert!(matches!(error, GobError::UnsupportedType(_)), "{error}");
    // A value before any definition.
    assert_eq!(
        decode_all(&[0x03, 0xff, 0x82, 0x00]),
        Err(GobError::UndefinedType(65))
    );
}

#[test]
fn a_huge_length_is_refused_from_the_prefix_alone() {
    let mut decoder = GobDecoder::new(Limits::default());
    // 2^40 bytes announced, nothing of it sent.
    assert!(matches!(
        decoder.decode(&[0xfb, 0x01, 0x00, 0x00, 0x00, 0x00]),
        Err(GobError::TooLong { .. })
    ));
    // A definition of 10,000 fields cannot fit the limit.
    let many: Vec<(String, u8)> = (0..10_000).map(|i| (format!("F{i}"), 6)).collect();
    let many: Vec<(&str, u8)> = many.iter().map(|(n, id)| (n.as_str(), *id)).collect();
    assert!(matches!(
        decoder.decode(&definition_with(&many)),
        Err(GobError::TooLong { .. })
    ));
    assert!(decoder.max_frame() < 4 * 1024);
}

#[test]
fn fields_over_the_limits_are_refused() {
    let mut stream = MESSAGE_TYPE_DEFINITION.to_vec();
    let long = "x".repeat(40);
    encode_value(&message(&long, "", "hi", false), &mut stream);
    assert!(matches!(
        decode_all(&stream),
        Err(GobError::FieldTooLong { field: "To", .. })
    ));
}

#[test]
fn truncated_streams_wait_for_more_and_never_overrun() {
    let stream = case(1, "client_to_server_hex");
    let stream = &stream[6..];
    let mut decoder = GobDecoder::new(Limits::default());
    for cut in 0..60 {
        assert!(matches!(
            decoder.decode(&stream[..cut]),
            Ok(Decoded::Incomplete { .. })
        ));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut decoder = GobDecoder::new(Limits::default());
        let mut rest = &bytes[..];
        while let Ok(Decoded::Frame(_, used)) = decoder.decode(rest) {
            prop_assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }
    }

    #[test]
    fn mutated_vectors_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = case(1, "client_to_server_hex")[6..].to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let end = cut.index(bytes.len() + 1);
        let mut decoder = GobDecoder::new(Limits::default());
        let mut rest = &bytes[..end];
        while let Ok(Decoded::Frame(_, used)) = decoder.decode(rest) {
            prop_assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }
    }
}
