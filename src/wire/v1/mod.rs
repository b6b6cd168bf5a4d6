//! The pmchat v1 wire protocol: frames, limits and a sans-IO codec
//! ([`decode`]'s functions read frames in place, [`encode`]'s append them
//! to a buffer).
//!
//! Everything here works on byte slices: decoding never touches a socket and
//! never allocates, so it can be unit-tested and fuzzed in isolation.
//! [`crate::wire::framing::FrameReader`] pairs a decoder from here
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
//! | REFUSED | server → client | 7 | `u64` ordinal, then the code with `codes` | error text (ends with `\n`) |
//! | PENDING | server → client | 8 | reason word | `u64` milliseconds to wait at most |
//! | ERROR (coded) | server → client | 9 | code, e.g. `not-connected` | error text (ends with `\n`) |
//!
//! Codes (HELLO feature `codes`): a client that lists it gets every error
//! as a coded ERROR frame and every REFUSED with the code after its
//! ordinal, from the moment the server has read that HELLO (a login
//! refused at once is refused coded too). The codes and their texts are
//! [`crate::wire::texts`]' catalogue; a client decides on the code and
//! shows the text.
//!
//! Receipts (HELLO feature `receipts`, granted when WELCOME's limits list
//! `receipts`): the server numbers the message frames it reads from the
//! client after login, 1, 2, 3…, and accounts for each one, in order.
//! ACCEPTED *n* says every message up to *n* not refused before it was
//! accepted: queued to a connected recipient's session (not yet read by the
//! person), on this server or, in a cluster, on the recipient's node, which
//! acknowledged it. It comes once per read batch (later for messages to
//! other nodes: once their batch is acknowledged), not per message. REFUSED *n*
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
pub use crate::wire::framing::{Decoded, Limits};

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
/// Opcode of a coded error frame (server → client, feature `codes`).
pub const OP_CODED_ERROR: u16 = 9;

/// Opcode of ENTRY (server → client, feature `inbox`): a message to or
/// from the user, with its id in the user's log and the time it was
/// logged.
pub const OP_ENTRY: u16 = 10;
/// Opcode of STORED (server → client, receipts with feature `stored`):
/// messages `first..=last` were stored for recipients not connected.
pub const OP_STORED: u16 = 11;
/// Opcode of CAUGHT-UP (server → client, feature `inbox`): everything the
/// log held after the device's cursor has been sent; live entries follow.
pub const OP_CAUGHT_UP: u16 = 12;
/// Opcode of HISTORY (client → server, with the inbox): a page of the
/// user's log before an id, with one peer or all.
pub const OP_HISTORY: u16 = 10;
/// Opcode of a HISTORY answer's entries (server → client): ENTRY's layout,
/// but history, not news (no cursor moves for it).
pub const OP_HISTORY_ENTRY: u16 = 13;
/// Opcode of the end of a HISTORY answer (server → client).
pub const OP_HISTORY_END: u16 = 14;
/// Opcode of KEYS (client → server, feature `keys`): a device publishes
/// its public keys (see [`keys`]).
pub const OP_KEYS: u16 = 15;
/// Opcode of KEY-COUNT (server → client): one-time keys the server holds
/// for a device, after its KEYS.
pub const OP_KEY_COUNT: u16 = 15;
/// Opcode of CLAIM (client → server, feature `keys`): one key per device
/// of a user.
pub const OP_CLAIM: u16 = 16;
/// Opcode of DEVICE-KEYS (server → client): one device's keys, answering
/// CLAIM.
pub const OP_DEVICE_KEYS: u16 = 16;
/// Opcode of KEYS-END (server → client): the end of a CLAIM's answer.
pub const OP_KEYS_END: u16 = 17;
/// Most entries one HISTORY asks for.
pub const MAX_HISTORY_PAGE: u16 = 1000;
/// Bytes of HISTORY's second field: the id to page back from, the count.
pub const HISTORY_REQUEST_LEN: usize = 10;

/// HISTORY's request: up to `max` entries before id `before` (0: the
/// newest, or where the previous page ended). The decoder checked its
/// length; anything else reads as an empty request.
pub fn history_request(request: &[u8]) -> (u64, u16) {
    match (request.get(..8), request.get(8..10)) {
        (Some(before), Some(max)) => (
            u64::from_be_bytes(before.try_into().unwrap_or_default()),
            u16::from_be_bytes([max[0], max[1]]),
        ),
        _ => (0, 0),
    }
}

/// Bytes before the peer's name in ENTRY's first field: id, time,
/// direction.
pub const ENTRY_HEAD_LEN: usize = 17;

/// Longest code in a coded ERROR or a REFUSED, and longest reason word in
/// PENDING.
pub const MAX_WORD: usize = 32;

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
/// Feature: errors and refusals carry a stable code beside their text.
pub const FEATURE_CODES: &str = "codes";

/// Feature: the user's log, with `after=ID` (replay what came after
/// that id first) or without (replay what came after the last id any of
/// the user's devices was sent); messages then come as ENTRY frames.
pub const FEATURE_INBOX: &str = "inbox";
/// The HELLO word that carries an inbox cursor: `after=ID`.
pub const HELLO_AFTER: &str = "after";
/// The HELLO word that starts the replay at a time instead:
/// `after_time=MS` (milliseconds since the Unix epoch).
pub const HELLO_AFTER_TIME: &str = "after_time";
/// Feature: a registered user's devices publish keys and claim others'
/// (see [`keys`]).
pub const FEATURE_KEYS: &str = "keys";
/// Feature: with receipts, STORED says which messages were stored for a
/// recipient not connected (without it, ACCEPTED covers them).
pub const FEATURE_STORED: &str = "stored";
/// Feature (with `codes`): message content may be sealed, the binary
/// envelope of an end-to-end encrypted message (see [`SEALED_MARK`]); the
/// server carries it as it is, and only to sessions that asked for it.
pub const FEATURE_SEALED: &str = "sealed";
/// The first byte of sealed content: never the first byte of UTF-8 text,
/// so sealed content and text cannot be mistaken for each other.
pub const SEALED_MARK: u8 = 0xFF;

/// True if `content` is sealed (starts with [`SEALED_MARK`]).
pub fn is_sealed(content: &[u8]) -> bool {
    content.first() == Some(&SEALED_MARK)
}

/// True if `content` is text (UTF-8). Checked for every message routed:
/// ASCII (almost every message) is seen a word at a time, inline; only the
/// rest takes the full UTF-8 check, a call that costs more than the check
/// itself on a short message.
#[inline]
pub fn is_text(content: &[u8]) -> bool {
    content.is_ascii() || std::str::from_utf8(content).is_ok()
}

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
    /// A page of the user's log, with `peer` only unless it is empty;
    /// `request` (10 bytes, checked) says which: see
    /// [`history_request`]. Two slices, like a message: with a `u64` and
    /// a `u16` instead, every decoded frame was copied through a stalled
    /// 16-byte load, which cost about a tenth of the throughput between
    /// 100 pairs.
    History { peer: &'a [u8], request: &'a [u8] },
    /// A device publishes its keys: `records` unchecked (see
    /// [`keys::records`]).
    Keys { device: &'a [u8], records: &'a [u8] },
    /// A claim of one key per device of `name`, but for the devices in
    /// `known` (see [`keys::known_devices`]).
    Claim { name: &'a [u8], known: &'a [u8] },
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
    /// An error report; the text normally ends with `\n`. The code is
    /// empty in a v1 error frame (see [`crate::wire::texts::Code`]).
    Error { code: &'a [u8], text: &'a [u8] },
    /// The answer to HELLO: who the server is and its limits.
    Welcome { server: &'a [u8], limits: &'a [u8] },
    /// One page of the online list; `last` on the final page.
    Online { last: bool, names: &'a [u8] },
    /// A user joined (`joined`) or left.
    Presence { joined: bool, name: &'a [u8] },
    /// Every message up to `through` not refused was accepted.
    Accepted { through: u64 },
    /// Message `ordinal` was refused, for the reason in `text` (and
    /// `code`, empty unless `codes` was negotiated).
    Refused {
        ordinal: u64,
        code: &'a [u8],
        text: &'a [u8],
    },
    /// The login is being worked on (`reason`, a word: see
    /// [`PendingReason`]); WELCOME or a refusal follows within `wait_ms`
    /// milliseconds.
    Pending { reason: &'a [u8], wait_ms: u64 },
    /// A message in the user's log: `direction` is `r` (received live),
    /// `s` (stored while no device was connected) or `o` (sent by one of
    /// the user's devices to `peer`).
    Entry {
        id: u64,
        ts_ms: u64,
        direction: u8,
        peer: &'a [u8],
        content: &'a [u8],
    },
    /// Messages `first..=last` were stored (durably) for recipients not
    /// connected.
    Stored { first: u64, last: u64 },
    /// The replay of the log is complete: `replayed` entries were sent
    /// since the device logged in (or fell behind).
    CaughtUp { replayed: u64 },
    /// One entry of a HISTORY answer (ENTRY's fields).
    HistoryEntry {
        id: u64,
        ts_ms: u64,
        direction: u8,
        peer: &'a [u8],
        content: &'a [u8],
    },
    /// The end of a HISTORY answer: `count` entries came.
    HistoryEnd { count: u64 },
    /// The server holds `count` one-time keys of `device`.
    KeyCount { device: &'a [u8], count: u64 },
    /// One device's keys, answering CLAIM: records (see [`keys`]).
    DeviceKeys { device: &'a [u8], records: &'a [u8] },
    /// The end of a CLAIM's answer: `devices` DEVICE-KEYS came for `name`.
    KeysEnd { name: &'a [u8], devices: u64 },
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
    /// The peer speaks the gob wire ([`crate::wire::gob`]) and broke it. Boxed:
    /// v1 errors stay small.
    #[error(transparent)]
    Gob(Box<crate::wire::gob::GobError>),
    /// A frame that may be sent once per connection came again.
    #[error("{0} sent twice: extensions are negotiated once per connection")]
    Repeated(&'static str),
}

impl From<crate::wire::gob::GobError> for FrameError {
    fn from(error: crate::wire::gob::GobError) -> Self {
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

/// The handshake, for a [`crate::wire::framing::FrameReader`] on the server.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeDecoder {
    /// The name limit.
    pub limits: Limits,
}

impl crate::wire::framing::Decoder for HandshakeDecoder {
    type Frame<'a> = &'a [u8];
    type Error = UsernameError;

    fn max_frame(&self) -> usize {
        1 + usize::from(u8::MAX)
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<&'a [u8]>, UsernameError> {
        decode_handshake(buf, &self.limits)
    }
}

/// Client → server frames, for a [`crate::wire::framing::FrameReader`] on the
/// server.
#[derive(Clone, Copy, Debug)]
pub struct ClientDecoder {
    /// Limits every header is checked against.
    pub limits: Limits,
}

impl crate::wire::framing::Decoder for ClientDecoder {
    type Frame<'a> = ClientFrame<'a>;
    type Error = FrameError;

    fn max_frame(&self) -> usize {
        self.limits.max_client_frame()
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<ClientFrame<'a>>, FrameError> {
        decode_client_frame(buf, &self.limits)
    }
}

/// Server → client frames, for a [`crate::wire::framing::FrameReader`] in a
/// client (ours, or the benchmark's).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerDecoder;

impl crate::wire::framing::Decoder for ServerDecoder {
    type Frame<'a> = ServerFrame<'a>;
    type Error = FrameError;

    fn max_frame(&self) -> usize {
        MAX_SERVER_FRAME
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<ServerFrame<'a>>, FrameError> {
        decode_server_frame(buf)
    }
}

mod decode;
mod encode;
pub mod keys;

pub use decode::*;
pub use encode::*;

#[cfg(test)]
pub(crate) mod tests;
