//! The v1 codec against the original programs' bytes and its own rules.

use super::*;

/// Bytes from a hex string (test vectors).
pub(crate) fn hex(s: &str) -> Vec<u8> {
    crate::hex::decode(s.as_bytes()).expect("a test vector in hex")
}
// Vectors captured from the original implementation (the project's
// shared v1-vectors.json).
const V_HANDSHAKE_ALICE: &str = "05616c696365";
const V_SEND_BOB_HELLO: &str = "00000003000b626f6268656c6c6f207468657265";
const V_SEND_BOB_UNICODE: &str =
    "000000030018626f6268c3a96c6c6f20f09f8c8d202074776f2020737061636573";
const V_DELIVER_FROM_ALICE: &str = "00000005000b616c69636568656c6c6f207468657265";
const V_NOT_CONNECTED: &str = "0001001a276e6f626f647927206973206e6f7420636f6e6e65637465640a";
const V_TAKEN: &str = "00010012557365726e616d652069732074616b656e0a";

#[test]
fn v1_vectors_encode_byte_exact() {
    let mut out = Vec::new();
    encode_handshake(b"alice", &mut out).unwrap();
    assert_eq!(out, hex(V_HANDSHAKE_ALICE));

    out.clear();
    encode_message(b"bob", b"hello there", &mut out).unwrap();
    assert_eq!(out, hex(V_SEND_BOB_HELLO));

    out.clear();
    encode_message(b"bob", "héllo 🌍  two  spaces".as_bytes(), &mut out).unwrap();
    assert_eq!(out, hex(V_SEND_BOB_UNICODE));

    out.clear();
    encode_message(b"alice", b"hello there", &mut out).unwrap();
    assert_eq!(out, hex(V_DELIVER_FROM_ALICE));

    out.clear();
    encode_error("'nobody' is not connected\n", &mut out);
    assert_eq!(out, hex(V_NOT_CONNECTED));

    out.clear();
    encode_error("Username is taken\n", &mut out);
    assert_eq!(out, hex(V_TAKEN));
}

#[test]
fn v1_vectors_decode() {
    let limits = Limits::default();
    let bytes = hex(V_HANDSHAKE_ALICE);
    assert_eq!(
        decode_handshake(&bytes, &limits).unwrap(),
        Decoded::Frame(&b"alice"[..], 6)
    );
    let bytes = hex(V_SEND_BOB_UNICODE);
    assert_eq!(
        decode_client_frame(&bytes, &limits).unwrap(),
        Decoded::Frame(
            ClientFrame::Message {
                to: b"bob",
                content: "héllo 🌍  two  spaces".as_bytes()
            },
            bytes.len()
        )
    );
    let bytes = hex(V_DELIVER_FROM_ALICE);
    assert_eq!(
        decode_server_frame(&bytes).unwrap(),
        Decoded::Frame(
            ServerFrame::Message {
                from: b"alice",
                content: b"hello there"
            },
            bytes.len()
        )
    );
    let bytes = hex(V_NOT_CONNECTED);
    assert_eq!(
        decode_server_frame(&bytes).unwrap(),
        Decoded::Frame(
            ServerFrame::Error {
                code: b"",
                text: b"'nobody' is not connected\n"
            },
            bytes.len()
        )
    );
}

#[test]
fn every_prefix_of_a_frame_is_incomplete() {
    let limits = Limits::default();
    let bytes = hex(V_SEND_BOB_HELLO);
    for cut in 0..bytes.len() {
        match decode_client_frame(&bytes[..cut], &limits).unwrap() {
            Decoded::Incomplete { header_complete } => {
                assert_eq!(header_complete, cut >= MESSAGE_HEADER_LEN, "cut {cut}")
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn oversized_header_is_refused_before_the_body_arrives() {
    let limits = Limits::default();
    // Header only: to_len 33, no body at all.
    let header = [0, 0, 0, 33, 0, 1];
    assert_eq!(
        decode_client_frame(&header, &limits),
        Err(FrameError::NameTooLong { len: 33, limit: 32 })
    );
    let header = [0, 0, 0, 3, 0x08, 0x01];
    assert_eq!(
        decode_client_frame(&header, &limits),
        Err(FrameError::ContentTooLong {
            len: 2049,
            limit: 2048
        })
    );
    // An unknown opcode is known after two bytes.
    assert_eq!(
        decode_client_frame(&[0, 7], &limits),
        Err(FrameError::UnknownOpcode(7))
    );
}

#[test]
fn extension_frames_round_trip() {
    let limits = Limits::default();
    let mut out = Vec::new();
    encode_hello("pmchat/1 presence", &mut out).unwrap();
    assert_eq!(&out[..6], &[0, 2, 0, 0, 0, 17]);
    assert_eq!(
        decode_client_frame(&out, &limits).unwrap(),
        Decoded::Frame(
            ClientFrame::Hello {
                features: b"pmchat/1 presence"
            },
            out.len()
        )
    );
    out.clear();
    encode_who(&mut out);
    assert_eq!(
        decode_client_frame(&out, &limits).unwrap(),
        Decoded::Frame(ClientFrame::Who, 6)
    );
    out.clear();
    encode_presence(false, b"bob", &mut out).unwrap();
    assert_eq!(
        decode_server_frame(&out).unwrap(),
        Decoded::Frame(
            ServerFrame::Presence {
                joined: false,
                name: b"bob"
            },
            out.len()
        )
    );
    assert_eq!(
        parse_limits(
            format_limits(&Limits {
                max_username: 9,
                max_message: 70
            })
            .as_bytes()
        ),
        Limits {
            max_username: 9,
            max_message: 70
        }
    );
}

#[test]
fn receipts_round_trip_byte_exact() {
    let mut out = Vec::new();
    encode_accepted(0x0102, &mut out);
    assert_eq!(out, hex("0006000000080000000000000102"));
    assert_eq!(out.len(), ACCEPTED_LEN);
    assert_eq!(
        decode_server_frame(&out).unwrap(),
        Decoded::Frame(ServerFrame::Accepted { through: 0x0102 }, ACCEPTED_LEN)
    );
    out.clear();
    encode_refused(5, None, "'dave' is not connected\n", &mut out);
    assert_eq!(&out[..14], &hex("0007000800180000000000000005")[..]);
    assert_eq!(
        decode_server_frame(&out).unwrap(),
        Decoded::Frame(
            ServerFrame::Refused {
                ordinal: 5,
                code: b"",
                text: b"'dave' is not connected\n"
            },
            out.len()
        )
    );
    assert!(lists_word(b"max_username=32 receipts", FEATURE_RECEIPTS));
    assert!(!lists_word(
        b"max_username=32 receipts=no",
        FEATURE_RECEIPTS
    ));
}

#[test]
fn a_receipt_with_a_wrong_sized_ordinal_is_refused_from_its_header() {
    for frame in [
        "0006000000070000000000000001",
        "000600010008",
        "000700040003",
    ] {
        assert!(
            matches!(
                decode_server_frame(&hex(frame)),
                Err(FrameError::Malformed { .. })
            ),
            "{frame}"
        );
    }
}

#[test]
fn pending_round_trips_as_the_readme_shows_it() {
    let mut out = Vec::new();
    encode_pending(
        PendingReason::Password,
        std::time::Duration::from_millis(11_000),
        &mut out,
    );
    assert_eq!(
        out,
        hex("000800080008" /* header */)
            .into_iter()
            .chain(*b"password")
            .chain(11_000u64.to_be_bytes())
            .collect::<Vec<u8>>()
    );
    let Ok(Decoded::Frame(ServerFrame::Pending { reason, wait_ms }, used)) =
        decode_server_frame(&out)
    else {
        panic!("not a PENDING frame");
    };
    assert_eq!(
        (PendingReason::from_code(reason), wait_ms, used),
        (Some(PendingReason::Password), 11_000, out.len())
    );
    // A wait that is not 8 bytes, or a reason longer than a word, is
    // refused from the header.
    for frame in ["000800000004", "000800210008"] {
        assert!(
            matches!(
                decode_server_frame(&hex(frame)),
                Err(FrameError::Malformed { .. })
            ),
            "{frame}"
        );
    }
}

#[test]
fn a_v1_server_sees_hello_as_a_message_to_the_empty_name() {
    // The shape that keeps v1 servers in frame sync.
    let mut out = Vec::new();
    encode_hello("pmchat/1", &mut out).unwrap();
    let (opcode, to_len, content_len) = header(&out).unwrap();
    assert_eq!(
        (opcode, to_len, content_len, out.len()),
        (2, 0, 8, MESSAGE_HEADER_LEN + 8)
    );
}

#[test]
fn auth_carries_the_password_in_the_field_a_v1_server_never_echoes() {
    // A v1 server reads AUTH as a message to the empty name, so its
    // answer (`'' is not connected`) cannot quote the password.
    let mut out = Vec::new();
    encode_auth(b"", b"s3cret pass", &mut out).unwrap();
    assert_eq!(&out[..6], [0, 5, 0, 0, 0, 11]);
    assert_eq!(
        decode_client_frame(&out, &Limits::default()).unwrap(),
        Decoded::Frame(
            ClientFrame::Auth {
                token: b"",
                password: b"s3cret pass"
            },
            out.len()
        )
    );
    assert!(encode_auth(b"", &[b'x'; MAX_PASSWORD + 1], &mut out).is_err());
    // A device token rides in the first field.
    let mut out = Vec::new();
    encode_auth(b"00ff", b"pw", &mut out).unwrap();
    assert!(matches!(
        decode_client_frame(&out, &Limits::default()).unwrap(),
        Decoded::Frame(
            ClientFrame::Auth {
                token: b"00ff",
                password: b"pw"
            },
            _
        )
    ));
    assert!(encode_auth(&[b'0'; MAX_DEVICE_TOKEN + 1], b"pw", &mut out).is_err());
    assert_eq!(
        welcome_value(b"max_message=2048 auth=password token=00ff", WELCOME_TOKEN),
        Some(&b"00ff"[..])
    );
    assert_eq!(welcome_value(b"auth=password token=", WELCOME_TOKEN), None);
}

#[test]
fn auth_with_an_oversized_token_or_password_is_refused_from_its_header() {
    let limits = Limits::default();
    // 129 bytes of token.
    assert!(matches!(
        decode_client_frame(&[0, 5, 0, 129, 0, 0], &limits),
        Err(FrameError::Malformed { frame: "AUTH", .. })
    ));
    // 0x0401 = 1025 bytes, with no body sent at all.
    assert!(matches!(
        decode_client_frame(&[0, 5, 0, 0, 4, 1], &limits),
        Err(FrameError::Malformed { frame: "AUTH", .. })
    ));
}

#[test]
fn coded_errors_and_refusals_round_trip_and_v1_errors_have_no_code() {
    let mut out = Vec::new();
    encode_coded_error("not-connected", "'bob' is not connected\n", &mut out);
    encode_refused(7, Some("slow-consumer"), "slow\n", &mut out);
    encode_refused(8, None, "plain\n", &mut out);
    encode_error("Username is taken\n", &mut out);
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while let Ok(Decoded::Frame(frame, used)) = decode_server_frame(rest) {
        frames.push(frame);
        rest = &rest[used..];
    }
    assert_eq!(
        frames,
        [
            ServerFrame::Error {
                code: b"not-connected",
                text: b"'bob' is not connected\n"
            },
            ServerFrame::Refused {
                ordinal: 7,
                code: b"slow-consumer",
                text: b"slow\n"
            },
            ServerFrame::Refused {
                ordinal: 8,
                code: b"",
                text: b"plain\n"
            },
            ServerFrame::Error {
                code: b"",
                text: b"Username is taken\n"
            },
        ]
    );
    // A coded error needs a code, and a code fits 32 bytes.
    let mut bad = Vec::new();
    encode_pair(OP_CODED_ERROR, b"", b"text\n", &mut bad).unwrap();
    assert!(decode_server_frame(&bad).is_err());
    bad.clear();
    encode_pair(OP_REFUSED, &[0; 41], b"text\n", &mut bad).unwrap();
    assert!(decode_server_frame(&bad).is_err());
}

#[test]
fn welcome_says_whether_the_login_was_proved() {
    assert!(welcome_authenticated(
        b"max_username=32 max_message=2048 auth=password"
    ));
    assert!(!welcome_authenticated(b"max_username=32 max_message=2048"));
    assert!(!welcome_authenticated(b"auth=passwordless"));
}

#[test]
fn online_list_is_paged_under_the_field_limit() {
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("user-{i:05}-{}", "x".repeat(20)))
        .collect();
    let mut out = Vec::new();
    encode_online(&names, &mut out);
    let mut rest = &out[..];
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let Decoded::Frame(ServerFrame::Online { last, names }, used) =
            decode_server_frame(rest).unwrap()
        else {
            panic!("not an ONLINE frame");
        };
        pages += 1;
        seen.extend(
            names
                .split(|&b| b == b'\n')
                .map(|n| String::from_utf8(n.to_vec()).unwrap()),
        );
        rest = &rest[used..];
        if last {
            break;
        }
    }
    assert!(rest.is_empty());
    assert!(pages > 1);
    assert_eq!(seen, names);
    out.clear();
    encode_online::<&str>(&[], &mut out);
    assert_eq!(out, [0, 3, 0, 3, 0, 0, b'e', b'n', b'd']);
}

#[test]
fn extension_headers_are_checked_before_their_bodies() {
    let limits = Limits::default();
    assert!(decode_client_frame(&[0, 2, 0, 1, 0, 0], &limits).is_err());
    assert!(decode_client_frame(&[0, 2, 0, 0, 0x10, 0], &limits).is_err());
    assert!(decode_client_frame(&[0, 3, 0, 0, 0, 1], &limits).is_err());
    assert_eq!(
        decode_client_frame(&[0, 4], &limits),
        Err(FrameError::UnknownOpcode(4))
    );
}

#[test]
fn handshake_rules() {
    let limits = Limits::default();
    assert_eq!(decode_handshake(&[0], &limits), Err(UsernameError::Empty));
    assert_eq!(
        decode_handshake(&[33], &limits),
        Err(UsernameError::TooLong { len: 33, limit: 32 })
    );
    assert_eq!(
        decode_handshake(b"\x03a b", &limits),
        Err(UsernameError::InvalidByte {
            byte: b' ',
            position: 1
        })
    );
    assert_eq!(
        decode_handshake(b"\x03ab", &limits),
        Ok(Decoded::Incomplete {
            header_complete: true
        })
    );
    assert!(validate_username(b"\x7f", 32).is_err());
    assert!(validate_username("é".as_bytes(), 32).is_err());
    assert!(validate_username(b"!~", 32).is_ok());
    assert_eq!(
        validate_username(b"bob2:", 32),
        Err(UsernameError::Colon { position: 4 })
    );
}

#[test]
fn error_text_is_cut_to_fit_a_frame() {
    let text = "é".repeat(40_000);
    let mut out = Vec::new();
    encode_error(&text, &mut out);
    let Decoded::Frame(ServerFrame::Error { text, .. }, _) = decode_server_frame(&out).unwrap()
    else {
        panic!("not an error frame")
    };
    assert!(text.len() <= 65535);
    assert!(std::str::from_utf8(text).is_ok());
}

#[test]
fn key_frames_round_trip_and_their_bounds_hold() {
    let limits = Limits::default();
    let mut records = Vec::new();
    keys::push_record(keys::IDENTITY, b"id", &mut records);
    let mut out = Vec::new();
    assert!(keys::encode_keys(b"dev", &records, &mut out));
    assert!(keys::encode_claim(
        b"bob",
        &["d1", "", "d\n2", "d3"],
        &mut out
    ));
    let Ok(Decoded::Frame(ClientFrame::Keys { device, records: r }, used)) =
        decode_client_frame(&out, &limits)
    else {
        panic!("not KEYS")
    };
    assert_eq!((device, r), (&b"dev"[..], &records[..]));
    assert_eq!(
        decode_client_frame(&out[used..], &limits),
        Ok(Decoded::Frame(
            ClientFrame::Claim {
                name: b"bob",
                known: b"d1\nd3"
            },
            out.len() - used
        ))
    );
    assert_eq!(
        keys::known_devices(b"d1\n\nd3\n").collect::<Vec<_>>(),
        [&b"d1"[..], b"d3"]
    );
    // A device id of 0 or 65 bytes, a CLAIM without a name or with more
    // than 32 device ids' worth: refused at the header, before the body
    // arrives.
    let too_many = (keys::MAX_CLAIM_KNOWN + 1) as u16;
    for header in [
        [0, 15, 0, 0, 0, 1],
        [0, 15, 0, 65, 0, 0],
        [0, 16, 0, 3, (too_many >> 8) as u8, too_many as u8],
        [0, 16, 0, 0, 0, 0],
    ] {
        assert!(
            matches!(
                decode_client_frame(&header, &limits),
                Err(FrameError::Malformed { .. })
            ),
            "{header:?}"
        );
    }
    let mut answers = Vec::new();
    keys::encode_key_count(b"dev", 3, &mut answers);
    keys::encode_device_keys(b"dev", &records, &mut answers);
    keys::encode_keys_end(b"bob", 1, &mut answers);
    let mut rest = &answers[..];
    let mut seen = Vec::new();
    while let Ok(Decoded::Frame(frame, used)) = decode_server_frame(rest) {
        seen.push(format!("{frame:?}"));
        rest = &rest[used..];
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(matches!(
        decode_server_frame(&[0, 15, 0, 3, 0, 7]),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn text_is_any_utf8_and_nothing_else() {
    assert!(is_text(b""));
    assert!(is_text(b"plain ascii, as almost every message"));
    assert!(is_text("h\u{e9} \u{1f600}".as_bytes()));
    assert!(!is_text(b"\xfe\xff"));
    assert!(!is_text(b"ascii then a lone continuation byte \x80"));
    assert!(!is_text(&[SEALED_MARK, b'p', b'e', 1]));
}
