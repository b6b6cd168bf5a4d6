//! Decoding v1 frames from the front of a byte slice, without copying.

use super::*;

fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Decodes the handshake (`u8 len`, name) from the front of `buf`.
///
/// A length over the limit is refused before the name is read; the name is
/// then checked with [`validate_username`].
pub fn decode_handshake<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Decoded<&'a [u8]>, UsernameError> {
    let Some(&len) = buf.first() else {
        return Ok(Decoded::Incomplete {
            header_complete: false,
        });
    };
    let len = usize::from(len);
    let limit = usize::from(limits.max_username);
    if len == 0 {
        return Err(UsernameError::Empty);
    }
    if len > limit {
        return Err(UsernameError::TooLong { len, limit });
    }
    let Some(name) = buf.get(1..1 + len) else {
        return Ok(Decoded::Incomplete {
            header_complete: true,
        });
    };
    validate_username(name, limit)?;
    Ok(Decoded::Frame(name, 1 + len))
}

/// Reads the shared header (`u16 opcode`, `u16 len_a`, `u16 len_b`).
pub(super) fn header(buf: &[u8]) -> Option<(u16, usize, usize)> {
    (buf.len() >= MESSAGE_HEADER_LEN).then(|| {
        (
            be16(buf, 0),
            usize::from(be16(buf, 2)),
            usize::from(be16(buf, 4)),
        )
    })
}

/// Splits the two fields after a header, or says the body is incomplete.
fn fields(buf: &[u8], len_a: usize, len_b: usize) -> Option<(&[u8], &[u8], usize)> {
    let end = MESSAGE_HEADER_LEN + len_a + len_b;
    let body = buf.get(MESSAGE_HEADER_LEN..end)?;
    let (a, b) = body.split_at(len_a);
    Some((a, b, end))
}

/// Decodes one client → server frame from the front of `buf`.
pub fn decode_client_frame<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Decoded<ClientFrame<'a>>, FrameError> {
    if buf.len() < 2 {
        return Ok(Decoded::Incomplete {
            header_complete: false,
        });
    }
    let opcode = be16(buf, 0);
    if !matches!(
        opcode,
        OP_MESSAGE | OP_HELLO | OP_WHO | OP_AUTH | OP_HISTORY | OP_KEYS | OP_CLAIM
    ) {
        return Err(FrameError::UnknownOpcode(opcode));
    }
    let Some((_, len_a, len_b)) = header(buf) else {
        return Ok(Decoded::Incomplete {
            header_complete: false,
        });
    };
    match opcode {
        OP_MESSAGE => {
            let name_limit = usize::from(limits.max_username);
            if len_a > name_limit {
                return Err(FrameError::NameTooLong {
                    len: len_a,
                    limit: name_limit,
                });
            }
            let content_limit = usize::from(limits.max_message);
            if len_b > content_limit {
                return Err(FrameError::ContentTooLong {
                    len: len_b,
                    limit: content_limit,
                });
            }
        }
        OP_HELLO => {
            if len_a != 0 {
                return Err(FrameError::Malformed {
                    frame: "HELLO",
                    why: "its first field must be empty",
                });
            }
            if len_b > MAX_HELLO {
                return Err(FrameError::Malformed {
                    frame: "HELLO",
                    why: "feature list over 1024 bytes",
                });
            }
        }
        OP_AUTH => {
            if len_a > MAX_DEVICE_TOKEN {
                return Err(FrameError::Malformed {
                    frame: "AUTH",
                    why: "device token over 128 bytes",
                });
            }
            if len_b > MAX_PASSWORD {
                return Err(FrameError::Malformed {
                    frame: "AUTH",
                    why: "password over 1024 bytes",
                });
            }
        }
        OP_HISTORY => {
            if len_a > usize::from(limits.max_username) || len_b != HISTORY_REQUEST_LEN {
                return Err(FrameError::Malformed {
                    frame: "HISTORY",
                    why: "it must carry a name and a 10-byte page request",
                });
            }
        }
        OP_KEYS => {
            if len_a == 0 || len_a > keys::MAX_DEVICE_ID {
                return Err(FrameError::Malformed {
                    frame: "KEYS",
                    why: "its device id must be 1 to 64 bytes",
                });
            }
        }
        OP_CLAIM => {
            if len_a == 0
                || len_a > usize::from(limits.max_username)
                || len_b > keys::MAX_CLAIM_KNOWN
            {
                return Err(FrameError::Malformed {
                    frame: "CLAIM",
                    why: "it must carry a name and at most 32 known device ids",
                });
            }
        }
        _ => {
            if len_a != 0 || len_b != 0 {
                return Err(FrameError::Malformed {
                    frame: "WHO",
                    why: "its fields must be empty",
                });
            }
        }
    }
    let Some((a, b, end)) = fields(buf, len_a, len_b) else {
        return Ok(Decoded::Incomplete {
            header_complete: true,
        });
    };
    let frame = match opcode {
        OP_MESSAGE => ClientFrame::Message { to: a, content: b },
        OP_HELLO => ClientFrame::Hello { features: b },
        OP_AUTH => ClientFrame::Auth {
            token: a,
            password: b,
        },
        OP_HISTORY => ClientFrame::History {
            peer: a,
            request: b,
        },
        OP_KEYS => ClientFrame::Keys {
            device: a,
            records: b,
        },
        OP_CLAIM => ClientFrame::Claim { name: a, known: b },
        _ => ClientFrame::Who,
    };
    Ok(Decoded::Frame(frame, end))
}

/// Decodes one server → client frame from the front of `buf`.
///
/// Every field is bounded by its 16-bit length prefix, so a client needs no
/// further limits to stay within 64 KiB per field.
pub fn decode_server_frame(buf: &[u8]) -> Result<Decoded<ServerFrame<'_>>, FrameError> {
    if buf.len() < 2 {
        return Ok(Decoded::Incomplete {
            header_complete: false,
        });
    }
    let opcode = be16(buf, 0);
    if opcode == OP_ERROR {
        if buf.len() < ERROR_HEADER_LEN {
            return Ok(Decoded::Incomplete {
                header_complete: false,
            });
        }
        let end = ERROR_HEADER_LEN + usize::from(be16(buf, 2));
        let Some(text) = buf.get(ERROR_HEADER_LEN..end) else {
            return Ok(Decoded::Incomplete {
                header_complete: true,
            });
        };
        let frame = ServerFrame::Error { code: b"", text };
        return Ok(Decoded::Frame(frame, end));
    }
    if !matches!(
        opcode,
        OP_MESSAGE
            | OP_HELLO
            | OP_WHO
            | OP_PRESENCE
            | OP_ACCEPTED
            | OP_REFUSED
            | OP_PENDING
            | OP_CODED_ERROR
            | OP_ENTRY
            | OP_STORED
            | OP_CAUGHT_UP
            | OP_HISTORY_ENTRY
            | OP_HISTORY_END
            | OP_KEY_COUNT
            | OP_DEVICE_KEYS
            | OP_KEYS_END
    ) {
        return Err(FrameError::UnknownOpcode(opcode));
    }
    let Some((_, len_a, len_b)) = header(buf) else {
        return Ok(Decoded::Incomplete {
            header_complete: false,
        });
    };
    match opcode {
        OP_ACCEPTED if len_a != 0 || len_b != ORDINAL_LEN => {
            return Err(FrameError::Malformed {
                frame: "ACCEPTED",
                why: "it must carry an empty field and an 8-byte ordinal",
            })
        }
        OP_REFUSED if !(ORDINAL_LEN..=ORDINAL_LEN + MAX_WORD).contains(&len_a) => {
            return Err(FrameError::Malformed {
                frame: "REFUSED",
                why: "its first field must be an 8-byte ordinal and a code of at most 32 bytes",
            })
        }
        OP_CODED_ERROR if len_a == 0 || len_a > MAX_WORD => {
            return Err(FrameError::Malformed {
                frame: "ERROR",
                why: "its code must be 1 to 32 bytes",
            })
        }
        OP_ENTRY | OP_HISTORY_ENTRY if len_a < ENTRY_HEAD_LEN => {
            return Err(FrameError::Malformed {
                frame: "ENTRY",
                why: "its first field must hold an id, a time and a direction",
            })
        }
        OP_HISTORY_END if len_a != 0 || len_b != ORDINAL_LEN => {
            return Err(FrameError::Malformed {
                frame: "HISTORY-END",
                why: "it must carry an empty field and an 8-byte count",
            })
        }
        OP_STORED if len_a != ORDINAL_LEN || len_b != ORDINAL_LEN => {
            return Err(FrameError::Malformed {
                frame: "STORED",
                why: "it must carry two 8-byte ordinals",
            })
        }
        OP_CAUGHT_UP if len_a != 0 || len_b != ORDINAL_LEN => {
            return Err(FrameError::Malformed {
                frame: "CAUGHT-UP",
                why: "it must carry an empty field and an 8-byte count",
            })
        }
        OP_KEY_COUNT | OP_KEYS_END if len_b != ORDINAL_LEN => {
            return Err(FrameError::Malformed {
                frame: "KEY-COUNT",
                why: "its second field must be an 8-byte count",
            })
        }
        OP_PENDING if len_b != ORDINAL_LEN || len_a > MAX_WORD => {
            return Err(FrameError::Malformed {
                frame: "PENDING",
                why: "it must carry a reason word of at most 32 bytes and an 8-byte wait",
            })
        }
        _ => {}
    }
    let Some((a, b, end)) = fields(buf, len_a, len_b) else {
        return Ok(Decoded::Incomplete {
            header_complete: true,
        });
    };
    let frame = match opcode {
        OP_MESSAGE => ServerFrame::Message {
            from: a,
            content: b,
        },
        OP_HELLO => ServerFrame::Welcome {
            server: a,
            limits: b,
        },
        OP_ACCEPTED => ServerFrame::Accepted {
            through: ordinal(b),
        },
        OP_REFUSED => ServerFrame::Refused {
            ordinal: ordinal(&a[..ORDINAL_LEN]),
            code: &a[ORDINAL_LEN..],
            text: b,
        },
        OP_CODED_ERROR => ServerFrame::Error { code: a, text: b },
        OP_PENDING => ServerFrame::Pending {
            reason: a,
            wait_ms: ordinal(b),
        },
        OP_ENTRY => ServerFrame::Entry {
            id: ordinal(&a[..8]),
            ts_ms: ordinal(&a[8..16]),
            direction: a[16],
            peer: &a[ENTRY_HEAD_LEN..],
            content: b,
        },
        OP_CAUGHT_UP => ServerFrame::CaughtUp {
            replayed: ordinal(b),
        },
        OP_HISTORY_ENTRY => ServerFrame::HistoryEntry {
            id: ordinal(&a[..8]),
            ts_ms: ordinal(&a[8..16]),
            direction: a[16],
            peer: &a[ENTRY_HEAD_LEN..],
            content: b,
        },
        OP_HISTORY_END => ServerFrame::HistoryEnd { count: ordinal(b) },
        OP_KEY_COUNT => ServerFrame::KeyCount {
            device: a,
            count: ordinal(b),
        },
        OP_DEVICE_KEYS => ServerFrame::DeviceKeys {
            device: a,
            records: b,
        },
        OP_KEYS_END => ServerFrame::KeysEnd {
            name: a,
            devices: ordinal(b),
        },
        OP_STORED => ServerFrame::Stored {
            first: ordinal(a),
            last: ordinal(b),
        },
        OP_WHO => match a {
            b"more" => ServerFrame::Online {
                last: false,
                names: b,
            },
            b"end" => ServerFrame::Online {
                last: true,
                names: b,
            },
            _ => {
                return Err(FrameError::Malformed {
                    frame: "ONLINE",
                    why: "first field must be 'more' or 'end'",
                })
            }
        },
        _ => match a {
            b"joined" => ServerFrame::Presence {
                joined: true,
                name: b,
            },
            b"left" => ServerFrame::Presence {
                joined: false,
                name: b,
            },
            _ => {
                return Err(FrameError::Malformed {
                    frame: "PRESENCE",
                    why: "first field must be 'joined' or 'left'",
                })
            }
        },
    };
    Ok(Decoded::Frame(frame, end))
}

/// Reads an 8-byte ordinal whose length the header already checked.
fn ordinal(field: &[u8]) -> u64 {
    let mut bytes = [0; ORDINAL_LEN];
    bytes.copy_from_slice(field);
    u64::from_be_bytes(bytes)
}
