//! The pmchat v1 wire protocol: frames, limits, a sans-IO codec and a
//! reusable read buffer.
//!
//! Everything here works on byte slices: decoding never touches a socket and
//! never allocates, so it can be unit-tested and fuzzed in isolation.
//! [`crate::framing::FrameReader`] pairs a decoder from here
//! ([`HandshakeDecoder`], [`ClientDecoder`], [`ServerDecoder`]) with a
//! buffer and a byte stream.
//!
//! All integers are big-endian.
//!
//! | frame | direction | layout |
//! |---|---|---|
//! | handshake | client → server | `u8 name_len`, name |
//! | message | client → server | `u16 0`, `u16 to_len`, `u16 content_len`, to, content |
//! | message | server → client | `u16 0`, `u16 from_len`, `u16 content_len`, from, content |
//! | error | server → client | `u16 1`, `u16 text_len`, text (ends with `\n`) |
//!
//! Extensions, negotiated so that v1 peers never see them (a session gets
//! no frame with opcode ≥ 2 unless it sent HELLO first). Every extension
//! frame has the v1 message header shape, `u16 opcode`, `u16 len_a`,
//! `u16 len_b`, a, b, so a v1 server stays in frame sync:
//!
//! | frame | direction | opcode | a | b |
//! |---|---|---|---|---|
//! | HELLO | client → server | 2 | empty | features, e.g. `pmchat/1 presence` |
//! | WELCOME | server → client | 2 | server name/version | limits, `max_username=32 max_message=2048` |
//! | WHO | client → server | 3 | empty | empty |
//! | ONLINE | server → client | 3 | `more` or `end` | usernames separated by `\n` |
//! | PRESENCE | server → client | 4 | `joined` or `left` | username |
//! | AUTH | client → server | 5 | device token, or empty | password (may be empty: "I have none") |
//! | ACCEPTED | server → client | 6 | empty | `u64` ordinal |
//! | REFUSED | server → client | 7 | `u64` ordinal | error text (ends with `\n`) |
//!
//! Receipts (HELLO feature `receipts`, granted when WELCOME's limits list
//! `receipts`): the server numbers the message frames it reads from the
//! client after login, 1, 2, 3…, and accounts for each one, in order.
//! ACCEPTED *n* says every message up to *n* not refused before it was
//! accepted: queued to a connected recipient's session (not yet read by the
//! person). It comes once per read batch, not per message. REFUSED *n*
//! says message *n* was not delivered and why, with the text an error
//! frame would have carried; ACCEPTED for the messages before it always
//! comes first, so receipts arrive in message order. A session with
//! receipts gets REFUSED instead of those error frames.
//!
//! AUTH follows HELLO at once, and only when HELLO lists the `password`
//! feature; a WELCOME answering a login proved with a password says
//! `auth=password` among its limits, and `token=HEX`: a device token the
//! client keeps and sends back in AUTH's first field at its next login to
//! that server, where it exempts the login from the back-off other
//! devices' failures put on the name (the password is still checked). A registered name (`--accounts`) is
//! given only to a login that proves it; see [`crate::server`] for the
//! order of checks. A v1 server answers AUTH like HELLO, with
//! `'' is not connected`, and never sees the password as a name.
//!
//! A decoder checks every header against the [`Limits`] *before* it looks at
//! the body, so a peer can never make us buffer more than one maximum-sized
//! frame.

// The decoding vocabulary every wire shares lives in `framing`, below this
// module and `gob`; v1's users find it here too.
pub use crate::framing::{Decoded, Limits};

/// Opcode of a message frame (both directions).
pub const OP_MESSAGE: u16 = 0;
/// Opcode of an error frame (server → client).
pub const OP_ERROR: u16 = 1;

/// Opcode of HELLO (client → server) and WELCOME (server → client).
pub const OP_HELLO: u16 = 2;
/// Opcode of WHO (client → server) and ONLINE (server → client).
pub const OP_WHO: u16 = 3;
/// Opcode of PRESENCE (server → client).
pub const OP_PRESENCE: u16 = 4;
/// Opcode of AUTH (client → server): the password, right after HELLO.
pub const OP_AUTH: u16 = 5;
/// Opcode of ACCEPTED (server → client, receipts).
pub const OP_ACCEPTED: u16 = 6;
/// Opcode of REFUSED (server → client, receipts).
pub const OP_REFUSED: u16 = 7;
/// Opcode of PENDING (server → client): the login is being worked on.
pub const OP_PENDING: u16 = 8;

/// Bytes of an ordinal in ACCEPTED and REFUSED.
const ORDINAL_LEN: usize = 8;
/// Encoded size of an ACCEPTED frame.
pub const ACCEPTED_LEN: usize = MESSAGE_HEADER_LEN + ORDINAL_LEN;

/// Why a login is pending, as PENDING's first field says it: a stable
/// word the client decides on (and words it for people itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingReason {
    /// The password is being checked (after any back-off earlier failures
    /// earned).
    Password,
    /// The name is being claimed across the cluster's nodes.
    Cluster,
}

impl PendingReason {
    /// The word on the wire.
    pub fn code(self) -> &'static str {
        match self {
            PendingReason::Password => "password",
            PendingReason::Cluster => "cluster",
        }
    }

    /// The reason a word names; `None` for a word this version does not
    /// know (a newer server's), which a client treats as a plain wait.
    pub fn from_code(code: &[u8]) -> Option<PendingReason> {
        match code {
            b"password" => Some(PendingReason::Password),
            b"cluster" => Some(PendingReason::Cluster),
            _ => None,
        }
    }
}

/// Longest feature list a HELLO may carry.
pub const MAX_HELLO: usize = 1024;

/// Features our client asks for and our server offers.
pub const FEATURE_BASE: &str = "pmchat/1";
/// Feature: the online list, then joined/left events.
pub const FEATURE_PRESENCE: &str = "presence";
/// Feature: an AUTH frame follows this HELLO.
pub const FEATURE_PASSWORD: &str = "password";
/// Feature: ACCEPTED and REFUSED account for every message sent; a
/// WELCOME granting it lists the word among its limits.
pub const FEATURE_RECEIPTS: &str = "receipts";

/// Longest password an AUTH frame may carry.
pub const MAX_PASSWORD: usize = 1024;
/// Longest device token in AUTH, in bytes.
pub const MAX_DEVICE_TOKEN: usize = 128;
/// The WELCOME word that carries a device token: `token=HEX`.
pub const WELCOME_TOKEN: &str = "token";

/// What a WELCOME adds to its limits when the login was proved with a
/// password.
pub const WELCOME_AUTHENTICATED: &str = "auth=password";

/// The text a v1 server answers a HELLO with (a message to the empty name).
pub const V1_HELLO_ANSWER: &[u8] = b"'' is not connected\n";

/// Bytes before the names in a message frame: opcode and two lengths.
pub const MESSAGE_HEADER_LEN: usize = 6;
/// Bytes before the text in an error frame: opcode and one length.
pub const ERROR_HEADER_LEN: usize = 4;

/// Largest server → client frame: two 16-bit fields after the header, the
/// most a client ever needs to buffer.
pub const MAX_SERVER_FRAME: usize = MESSAGE_HEADER_LEN + 2 * u16::MAX as usize;

/// The error text v1 clients expect when their username is held by someone.
pub const USERNAME_TAKEN: &str = "Username is taken\n";

/// The error text for a login to a name the operator banned.
pub fn banned_text(name: &str) -> String {
    format!("'{name}' is banned from this server\n")
}

/// The error text for a plain connection to a server that requires TLS.
pub const REQUIRES_TLS: &str = "this server accepts TLS connections only (chat-client --tls)\n";

/// The error text for a password sent over a plain connection to a server
/// that accepts passwords over TLS only.
pub const PASSWORDS_NEED_TLS: &str =
    "passwords are accepted over TLS only (chat-client --tls); the password was not checked\n";

/// The error text for a login while a cluster node cannot reach Redis.
pub const SERVICE_UNAVAILABLE: &str =
    "service unavailable: the server cannot reach its cluster; try again in a moment\n";

/// The error text when more logins are waiting for a password check than
/// the server lets wait.
pub const LOGINS_BUSY: &str = "too many logins are being checked; try again in a moment\n";

/// The error text for a peer that cannot send a password (v1, or a client
/// without the `password` feature) asking for a registered name.
pub fn registered_name_text(name: &str) -> String {
    format!("'{name}' is a registered name; log in with a client that supports passwords\n")
}

/// The error text for a login to a registered name that came without a
/// password.
pub fn password_required_text(name: &str) -> String {
    format!("'{name}' is a registered name: a password is required\n")
}

/// The error text for a login with the wrong password.
pub fn wrong_password_text(name: &str) -> String {
    format!("wrong password for '{name}'\n")
}

/// The error text for an unregistered name on a `--registered-only` server.
pub fn not_registered_text(name: &str) -> String {
    format!("'{name}' is not a registered name, and this server accepts registered names only\n")
}

/// How a server refused a login over accounts and passwords, read back
/// from its error text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRefusal {
    /// The name is registered and no password came with the login.
    PasswordRequired,
    /// The password sent was wrong.
    WrongPassword,
    /// Any other refusal to do with names and passwords.
    Other,
}

/// Recognises the refusals above; `None` for any other text.
pub fn auth_refusal(text: &[u8]) -> Option<AuthRefusal> {
    let text = std::str::from_utf8(text).ok()?;
    if text.starts_with('\'') && text.ends_with("' is a registered name: a password is required\n")
    {
        return Some(AuthRefusal::PasswordRequired);
    }
    if text.starts_with("wrong password for '") && text.ends_with("'\n") {
        return Some(AuthRefusal::WrongPassword);
    }
    let other = text == PASSWORDS_NEED_TLS
        || text == LOGINS_BUSY
        || text.ends_with("' is a registered name; log in with a client that supports passwords\n")
        || text.ends_with(
            "' is not a registered name, and this server accepts registered names only\n",
        );
    other.then_some(AuthRefusal::Other)
}

impl Limits {
    /// Longest client → server frame these limits allow, header included
    /// (a message, a HELLO with its longest feature list, or an AUTH with
    /// the longest password).
    pub fn max_client_frame(&self) -> usize {
        let message = usize::from(self.max_username) + usize::from(self.max_message);
        MESSAGE_HEADER_LEN + message.max(MAX_HELLO).max(MAX_PASSWORD)
    }
}

/// A frame sent by a client, borrowed from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// A direct message to `to`.
    Message { to: &'a [u8], content: &'a [u8] },
    /// Extension negotiation, with the features the client wants.
    Hello { features: &'a [u8] },
    /// A request for the online list.
    Who,
    /// The password that proves the login (empty: the client has none).
    Auth {
        /// A device token the server issued, or empty.
        token: &'a [u8],
        password: &'a [u8],
    },
}

/// A frame sent by a server, borrowed from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    /// A message from the registered user `from`.
    Message { from: &'a [u8], content: &'a [u8] },
    /// An error report; the text normally ends with `\n`.
    Error { text: &'a [u8] },
    /// The answer to HELLO: who the server is and its limits.
    Welcome { server: &'a [u8], limits: &'a [u8] },
    /// One page of the online list; `last` on the final page.
    Online { last: bool, names: &'a [u8] },
    /// A user joined (`joined`) or left.
    Presence { joined: bool, name: &'a [u8] },
    /// Every message up to `through` not refused was accepted.
    Accepted { through: u64 },
    /// Message `ordinal` was refused, for the reason in `text`.
    Refused { ordinal: u64, text: &'a [u8] },
    /// The login is being worked on (`reason`, a word: see
    /// [`PendingReason`]); WELCOME or a refusal follows within `wait_ms`
    /// milliseconds.
    Pending { reason: &'a [u8], wait_ms: u64 },
}

/// A frame that breaks the protocol; the connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The opcode is not one this side understands.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// The recipient name is longer than the username limit.
    #[error("recipient name too long: {len} bytes (limit {limit})")]
    NameTooLong { len: usize, limit: usize },
    /// The content is longer than the message limit.
    #[error("message too long: {len} bytes (limit {limit})")]
    ContentTooLong { len: usize, limit: usize },
    /// An extension frame whose fields do not fit its opcode.
    #[error("malformed {frame} frame: {why}")]
    Malformed {
        frame: &'static str,
        why: &'static str,
    },
    /// A frame that is valid only at another point of the conversation.
    #[error("unexpected {frame} frame: {why}")]
    Unexpected {
        frame: &'static str,
        why: &'static str,
    },
    /// The peer speaks the gob wire ([`crate::gob`]) and broke it. Boxed:
    /// v1 errors stay small.
    #[error(transparent)]
    Gob(Box<crate::gob::GobError>),
    /// A frame that may be sent once per connection came again.
    #[error("{0} sent twice: extensions are negotiated once per connection")]
    Repeated(&'static str),
}

impl From<crate::gob::GobError> for FrameError {
    fn from(error: crate::gob::GobError) -> Self {
        FrameError::Gob(Box::new(error))
    }
}

/// Why a username is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Zero bytes long.
    #[error("invalid username: it is empty")]
    Empty,
    /// Longer than the limit.
    #[error("invalid username: {len} bytes long (limit {limit})")]
    TooLong { len: usize, limit: usize },
    /// Contains a byte outside printable ASCII, such as a space.
    #[error(
        "invalid username: byte 0x{byte:02x} at position {position} is not allowed \
         (printable ASCII without spaces only)"
    )]
    InvalidByte { byte: u8, position: usize },
    /// Contains `:`, which would make `name: text` output lines ambiguous.
    #[error(
        "invalid username: ':' at position {position} is not allowed \
         (it would make 'name: message' lines ambiguous)"
    )]
    Colon { position: usize },
}

/// A field too long for its length prefix; only a caller's bug or unchecked
/// user input can cause it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field of {len} bytes does not fit its {max}-byte length prefix")]
pub struct FieldTooLong {
    /// Length of the offending field.
    pub len: usize,
    /// Largest length the prefix can carry.
    pub max: usize,
}

/// Checks a username (or recipient name) against the rules: 1..=`limit`
/// bytes of printable ASCII without spaces (0x21..=0x7E), and no `:`.
///
/// The colon is pmchat's own rule on top of v1's: clients print messages as
/// `name: text`, so a name holding `:` could forge another sender's line
/// (`bob:` sending `x` prints `bob:: x`, which `grep '^bob:'` matches).
pub fn validate_username(name: &[u8], limit: usize) -> Result<(), UsernameError> {
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    if name.len() > limit {
        return Err(UsernameError::TooLong {
            len: name.len(),
            limit,
        });
    }
    match name.iter().position(|b| !(0x21..=0x7e).contains(b)) {
        Some(position) => Err(UsernameError::InvalidByte {
            byte: name[position],
            position,
        }),
        None => match name.iter().position(|&b| b == b':') {
            Some(position) => Err(UsernameError::Colon { position }),
            None => Ok(()),
        },
    }
}

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
fn header(buf: &[u8]) -> Option<(u16, usize, usize)> {
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
    if !matches!(opcode, OP_MESSAGE | OP_HELLO | OP_WHO | OP_AUTH) {
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
        return Ok(Decoded::Frame(ServerFrame::Error { text }, end));
    }
    if !matches!(
        opcode,
        OP_MESSAGE | OP_HELLO | OP_WHO | OP_PRESENCE | OP_ACCEPTED | OP_REFUSED | OP_PENDING
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
        OP_REFUSED if len_a != ORDINAL_LEN => {
            return Err(FrameError::Malformed {
                frame: "REFUSED",
                why: "its first field must be an 8-byte ordinal",
            })
        }
        OP_PENDING if len_b != ORDINAL_LEN || len_a > MAX_PENDING_REASON => {
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
            ordinal: ordinal(a),
            text: b,
        },
        OP_PENDING => ServerFrame::Pending {
            reason: a,
            wait_ms: ordinal(b),
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

fn u16_len(field: &[u8]) -> Result<[u8; 2], FieldTooLong> {
    u16::try_from(field.len())
        .map(u16::to_be_bytes)
        .map_err(|_| FieldTooLong {
            len: field.len(),
            max: usize::from(u16::MAX),
        })
}

/// Appends a handshake for `name` to `out`.
pub fn encode_handshake(name: &[u8], out: &mut Vec<u8>) -> Result<(), FieldTooLong> {
    let len = u8::try_from(name.len()).map_err(|_| FieldTooLong {
        len: name.len(),
        max: usize::from(u8::MAX),
    })?;
    out.push(len);
    out.extend_from_slice(name);
    Ok(())
}

/// Appends a frame of the shared shape (`u16 opcode`, `u16 len_a`,
/// `u16 len_b`, a, b) to `out`.
pub fn encode_pair(opcode: u16, a: &[u8], b: &[u8], out: &mut Vec<u8>) -> Result<(), FieldTooLong> {
    let len_a = u16_len(a)?;
    let len_b = u16_len(b)?;
    out.reserve(MESSAGE_HEADER_LEN + a.len() + b.len());
    out.extend_from_slice(&opcode.to_be_bytes());
    out.extend_from_slice(&len_a);
    out.extend_from_slice(&len_b);
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    Ok(())
}

/// Appends a message frame to `out`. The layout is the same both ways: a
/// client puts the recipient in `name`, the server puts the sender.
pub fn encode_message(name: &[u8], content: &[u8], out: &mut Vec<u8>) -> Result<(), FieldTooLong> {
    encode_pair(OP_MESSAGE, name, content, out)
}

/// Appends a HELLO asking for `features` (space-separated).
pub fn encode_hello(features: &str, out: &mut Vec<u8>) -> Result<(), FieldTooLong> {
    encode_pair(OP_HELLO, b"", features.as_bytes(), out)
}

/// Appends an AUTH frame carrying `password` (empty: none) and a device
/// token from an earlier login (empty: none).
pub fn encode_auth(token: &[u8], password: &[u8], out: &mut Vec<u8>) -> Result<(), FieldTooLong> {
    if password.len() > MAX_PASSWORD {
        return Err(FieldTooLong {
            len: password.len(),
            max: MAX_PASSWORD,
        });
    }
    if token.len() > MAX_DEVICE_TOKEN {
        return Err(FieldTooLong {
            len: token.len(),
            max: MAX_DEVICE_TOKEN,
        });
    }
    encode_pair(OP_AUTH, token, password, out)
}

/// Appends a WHO request.
pub fn encode_who(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, OP_WHO as u8, 0, 0, 0, 0]);
}

/// Appends the ONLINE pages listing `names`, each page's name list within a
/// 16-bit field; an empty list is one empty final page.
pub fn encode_online<S: AsRef<str>>(names: &[S], out: &mut Vec<u8>) {
    let mut page = Vec::new();
    let mut iter = names.iter().peekable();
    loop {
        page.clear();
        while let Some(name) = iter.peek() {
            let name = name.as_ref().as_bytes();
            let extra = name.len() + usize::from(!page.is_empty());
            if !page.is_empty() && page.len() + extra > usize::from(u16::MAX) {
                break;
            }
            if !page.is_empty() {
                page.push(b'\n');
            }
            page.extend_from_slice(name);
            iter.next();
        }
        let marker: &[u8] = if iter.peek().is_none() {
            b"end"
        } else {
            b"more"
        };
        // A page is cut at 65535 bytes and a username is at most 255.
        let _ = encode_pair(OP_WHO, marker, &page, out);
        if iter.peek().is_none() {
            return;
        }
    }
}

/// Appends a PRESENCE event.
pub fn encode_presence(joined: bool, name: &[u8], out: &mut Vec<u8>) -> Result<(), FieldTooLong> {
    let kind: &[u8] = if joined { b"joined" } else { b"left" };
    encode_pair(OP_PRESENCE, kind, name, out)
}

/// Appends ACCEPTED: every message up to `through` not refused was
/// accepted.
pub fn encode_accepted(through: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&accepted_frame(through));
}

/// An ACCEPTED frame, without a buffer to put it in.
pub fn accepted_frame(through: u64) -> [u8; ACCEPTED_LEN] {
    let mut frame = [0; ACCEPTED_LEN];
    frame[1] = OP_ACCEPTED as u8;
    frame[5] = ORDINAL_LEN as u8;
    frame[MESSAGE_HEADER_LEN..].copy_from_slice(&through.to_be_bytes());
    frame
}

/// Appends REFUSED: message `ordinal` was not delivered, because of `text`
/// (cut to fit a frame, like [`encode_error`]'s).
pub fn encode_refused(ordinal: u64, text: &str, out: &mut Vec<u8>) {
    let text = &text.as_bytes()[..text_fit(text)];
    // Both fields fit: an 8-byte ordinal, a text cut to a 16-bit length.
    let _ = encode_pair(OP_REFUSED, &ordinal.to_be_bytes(), text, out);
}

/// Longest reason word a PENDING frame may carry.
const MAX_PENDING_REASON: usize = 32;

/// Appends PENDING: the login is being worked on for `reason`, and its
/// outcome follows within `wait` (rounded up to whole milliseconds).
pub fn encode_pending(reason: PendingReason, wait: std::time::Duration, out: &mut Vec<u8>) {
    let ms = u64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
    // Both fields fit: a short word and an 8-byte count.
    let _ = encode_pair(OP_PENDING, reason.code().as_bytes(), &ms.to_be_bytes(), out);
}

/// Server limits as WELCOME states them: `max_username=N max_message=M`.
pub fn format_limits(limits: &Limits) -> String {
    format!(
        "max_username={} max_message={}",
        limits.max_username, limits.max_message
    )
}

/// True if a WELCOME's limits field says the login was proved with a
/// password.
pub fn welcome_authenticated(text: &[u8]) -> bool {
    welcome_lists(text, WELCOME_AUTHENTICATED)
}

/// The value of `key=VALUE` in a WELCOME's limits field, such as the
/// device token ([`WELCOME_TOKEN`]).
pub fn welcome_value<'a>(text: &'a [u8], key: &str) -> Option<&'a [u8]> {
    text.split(|&b| b == b' ').find_map(|word| {
        word.strip_prefix(key.as_bytes())?
            .strip_prefix(b"=")
            .filter(|value| !value.is_empty())
    })
}

/// True if a WELCOME's limits field lists `word`, such as
/// [`FEATURE_RECEIPTS`] for a granted feature.
pub fn welcome_lists(text: &[u8], word: &str) -> bool {
    text.split(|&b| b == b' ').any(|w| w == word.as_bytes())
}

/// Reads limits back from a WELCOME; unknown keys are ignored and missing
/// ones keep the v1 defaults.
pub fn parse_limits(text: &[u8]) -> Limits {
    let mut limits = Limits::default();
    for pair in String::from_utf8_lossy(text).split_whitespace() {
        match pair.split_once('=') {
            Some(("max_username", n)) => {
                if let Ok(n) = n.parse() {
                    limits.max_username = n;
                }
            }
            Some(("max_message", n)) => {
                if let Ok(n) = n.parse() {
                    limits.max_message = n;
                }
            }
            _ => {}
        }
    }
    limits
}

/// Appends an error frame to `out`. A text longer than a frame can carry is
/// cut at a character boundary, so this never fails.
pub fn encode_error(text: &str, out: &mut Vec<u8>) {
    let text = &text.as_bytes()[..text_fit(text)];
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    // `end` was clamped to u16::MAX above.
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
}

/// How much of `text` fits a 16-bit length field, cut at a character
/// boundary.
fn text_fit(text: &str) -> usize {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Encoded size of a message frame with these fields.
pub fn message_frame_len(name: &[u8], content: &[u8]) -> usize {
    MESSAGE_HEADER_LEN + name.len() + content.len()
}

/// The handshake, for a [`crate::framing::FrameReader`] on the server.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeDecoder {
    /// The name limit.
    pub limits: Limits,
}

impl crate::framing::Decoder for HandshakeDecoder {
    type Frame<'a> = &'a [u8];
    type Error = UsernameError;

    fn max_frame(&self) -> usize {
        1 + usize::from(u8::MAX)
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<&'a [u8]>, UsernameError> {
        decode_handshake(buf, &self.limits)
    }
}

/// Client → server frames, for a [`crate::framing::FrameReader`] on the
/// server.
#[derive(Clone, Copy, Debug)]
pub struct ClientDecoder {
    /// Limits every header is checked against.
    pub limits: Limits,
}

impl crate::framing::Decoder for ClientDecoder {
    type Frame<'a> = ClientFrame<'a>;
    type Error = FrameError;

    fn max_frame(&self) -> usize {
        self.limits.max_client_frame()
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<ClientFrame<'a>>, FrameError> {
        decode_client_frame(buf, &self.limits)
    }
}

/// Server → client frames, for a [`crate::framing::FrameReader`] in a
/// client (ours, or the benchmark's).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerDecoder;

impl crate::framing::Decoder for ServerDecoder {
    type Frame<'a> = ServerFrame<'a>;
    type Error = FrameError;

    fn max_frame(&self) -> usize {
        MAX_SERVER_FRAME
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<ServerFrame<'a>>, FrameError> {
        decode_server_frame(buf)
    }
}

/// Bytes from a hex string (test vectors).
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        encode_error(USERNAME_TAKEN, &mut out);
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
        encode_refused(5, "'dave' is not connected\n", &mut out);
        assert_eq!(&out[..14], &hex("0007000800180000000000000005")[..]);
        assert_eq!(
            decode_server_frame(&out).unwrap(),
            Decoded::Frame(
                ServerFrame::Refused {
                    ordinal: 5,
                    text: b"'dave' is not connected\n"
                },
                out.len()
            )
        );
        assert!(welcome_lists(b"max_username=32 receipts", FEATURE_RECEIPTS));
        assert!(!welcome_lists(
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
    fn auth_refusals_are_recognised_and_nothing_else_is() {
        assert_eq!(
            auth_refusal(password_required_text("alice").as_bytes()),
            Some(AuthRefusal::PasswordRequired)
        );
        assert_eq!(
            auth_refusal(wrong_password_text("alice").as_bytes()),
            Some(AuthRefusal::WrongPassword)
        );
        for text in [
            registered_name_text("alice"),
            not_registered_text("bob"),
            PASSWORDS_NEED_TLS.to_string(),
            LOGINS_BUSY.to_string(),
        ] {
            assert_eq!(
                auth_refusal(text.as_bytes()),
                Some(AuthRefusal::Other),
                "{text}"
            );
        }
        assert_eq!(auth_refusal(b"'bob' is not connected\n"), None);
        assert_eq!(auth_refusal(USERNAME_TAKEN.as_bytes()), None);
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
        let Decoded::Frame(ServerFrame::Error { text }, _) = decode_server_frame(&out).unwrap()
        else {
            panic!("not an error frame")
        };
        assert!(text.len() <= 65535);
        assert!(std::str::from_utf8(text).is_ok());
    }
}
