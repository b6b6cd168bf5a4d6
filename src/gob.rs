//! The gob wire of the original Go programs: after the v1 handshake, a
//! stream of `encoding/gob` values of
//!
//! ```go
//! type Message struct { To string; From string; Content string; Error bool }
//! ```
//!
//! A sans-IO codec, like [`crate::protocol`]'s: it works on byte slices,
//! never allocates while decoding, and checks every length against the
//! [`Limits`] before it looks at what follows.
//!
//! # The wire, as far as this struct needs it
//! - A stream is a sequence of gob messages: `uvarint length`, then that
//!   many bytes: a signed type id and a payload.
//! - A negative id defines a type: the payload is a `wireType` (itself a
//!   gob struct) whose `StructT` names the struct's fields and their type
//!   ids. A positive id carries a value of a type defined before.
//! - Unsigned integers below 128 are one byte; larger ones are a byte
//!   holding the negated byte count, then the bytes, big-endian. Signed
//!   integers are shifted left one bit, complemented when negative, with
//!   the sign in bit 0. Strings are a length and the bytes; bools are 0/1.
//! - A struct value is a list of (field-number delta, value) pairs ending
//!   with a 0 delta; zero values (empty strings, false) are left out.
//!
//! # What is accepted
//! A definition of a struct whose fields are a subset of `To`, `From`,
//! `Content` (strings) and `Error` (bool), in any order, as gob allows
//! between compatible types; values of that struct; the definition once per
//! stream (Go's normal use) or before every value (the original client,
//! which makes a new encoder per message). Anything else (other types, a
//! value of an undefined type, a malformed or overlong message) is a
//! [`GobError`], and the connection cannot go on.
//!
//! # What is sent
//! [`encode_message`] writes the type definition before every value,
//! because the original programs read each message with a fresh decoder.

use crate::framing::{Decoded, Decoder, Limits};

/// The type definition of `Message` exactly as Go's encoder writes it,
/// length prefix included: type id -65, struct `Message` with id 65 and
/// fields `To`, `From`, `Content` (string, id 6) and `Error` (bool, id 1).
pub const MESSAGE_TYPE_DEFINITION: &[u8] = &[
    0x3b, 0xff, 0x81, 0x03, 0x01, 0x01, 0x07, b'M', b'e', b's', b's', b'a', b'g', b'e', 0x01, 0xff,
    0x82, 0x00, 0x01, 0x04, 0x01, 0x02, b'T', b'o', 0x01, 0x0c, 0x00, 0x01, 0x04, b'F', b'r', b'o',
    b'm', 0x01, 0x0c, 0x00, 0x01, 0x07, b'C', b'o', b'n', b't', b'e', b'n', b't', 0x01, 0x0c, 0x00,
    0x01, 0x05, b'E', b'r', b'r', b'o', b'r', 0x01, 0x02, 0x00, 0x00, 0x00,
];

/// The type id our encoder gives `Message` (the first user type id).
const MESSAGE_TYPE_ID: u64 = 65;
/// gob's predefined type ids of the field types we accept.
const BOOL_TYPE_ID: u64 = 1;
const STRING_TYPE_ID: u64 = 6;
/// `wireType`'s field number for a struct definition.
const WIRE_TYPE_STRUCT: u64 = 2;

/// Longest type definition accepted (Go's for `Message` is 60 bytes; the
/// room is for longer struct names from other compatible encoders).
pub const MAX_TYPE_DEFINITION: usize = 1024;
/// Longest `From` accepted: the protocol's bound on any username.
const FROM_LIMIT: usize = u8::MAX as usize;
/// Most bytes a uvarint takes (the count byte and 8 value bytes).
const MAX_UVARINT: usize = 9;

/// One `Message` value, borrowed from the read buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GobMessage<'a> {
    pub to: &'a [u8],
    pub from: &'a [u8],
    pub content: &'a [u8],
    pub error: bool,
}

/// What one gob message on the stream was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GobFrame<'a> {
    /// A type definition: nothing to act on, the decoder learned the
    /// field layout.
    Definition,
    /// A `Message` value.
    Message(GobMessage<'a>),
}

/// Input that cannot be the gob wire of `Message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GobError {
    /// The length prefix is longer than any acceptable message.
    #[error("gob message of {len} bytes is over the limit of {limit}")]
    TooLong { len: u64, limit: usize },
    /// An unsigned integer with a byte count gob does not allow.
    #[error("gob: malformed integer")]
    BadInteger,
    /// A message whose length prefix is zero.
    #[error("gob: empty message")]
    Empty,
    /// Something inside a message runs past its end.
    #[error("gob: message ends inside its {0}")]
    Truncated(&'static str),
    /// Bytes left over after a complete value or definition.
    #[error("gob: {0} trailing byte(s) after a complete message")]
    Trailing(usize),
    /// A type definition this wire does not carry.
    #[error("gob: unsupported type definition: {0}")]
    UnsupportedType(String),
    /// A value of a type that was not defined on this stream.
    #[error("gob: value of undefined type id {0}")]
    UndefinedType(i64),
    /// A value that breaks the struct's layout.
    #[error("gob: malformed Message value: {0}")]
    BadValue(&'static str),
    /// A field longer than the server's limits.
    #[error("gob: {field} of {len} bytes is over the limit of {limit}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
}

/// One of `Message`'s fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    To,
    From,
    Content,
    Error,
}

impl Field {
    fn named(name: &[u8]) -> Option<Field> {
        match name {
            b"To" => Some(Field::To),
            b"From" => Some(Field::From),
            b"Content" => Some(Field::Content),
            b"Error" => Some(Field::Error),
            _ => None,
        }
    }

    fn type_id(self) -> u64 {
        match self {
            Field::Error => BOOL_TYPE_ID,
            _ => STRING_TYPE_ID,
        }
    }
}

/// The peer's `Message` struct: its type id and its fields in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    id: u64,
    fields: [Option<Field>; 4],
    count: usize,
}

impl Layout {
    /// `Message` as Go defines it: id 65, fields in declaration order.
    const GO: Layout = Layout {
        id: MESSAGE_TYPE_ID,
        fields: [
            Some(Field::To),
            Some(Field::From),
            Some(Field::Content),
            Some(Field::Error),
        ],
        count: 4,
    };
}

/// Decodes the gob stream of one peer; it remembers the type definition
/// the peer sent.
#[derive(Clone, Debug)]
pub struct GobDecoder {
    limits: Limits,
    layout: Option<Layout>,
}

impl GobDecoder {
    /// A decoder for a fresh stream, checking fields against `limits`.
    pub fn new(limits: Limits) -> Self {
        GobDecoder {
            limits,
            layout: None,
        }
    }

    /// Longest message body a peer may announce: the definition, or a value
    /// with every field at its limit.
    fn max_body(&self) -> usize {
        let name = usize::from(self.limits.max_username);
        let content = usize::from(self.limits.max_message);
        // Type id, three string fields (delta, length, bytes), the bool
        // field, the end mark.
        let value = MAX_UVARINT + 3 * (1 + MAX_UVARINT) + name + FROM_LIMIT + content + 2 + 1;
        value.max(MAX_TYPE_DEFINITION)
    }
}

impl Decoder for GobDecoder {
    type Frame<'a> = GobFrame<'a>;
    type Error = GobError;

    fn max_frame(&self) -> usize {
        MAX_UVARINT + self.max_body()
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<GobFrame<'a>>, GobError> {
        let mut prefix = Cursor::new(buf);
        let len = match prefix.uint() {
            Ok(len) => len,
            // The prefix itself has not arrived in full.
            Err(GobError::Truncated(_)) => {
                return Ok(Decoded::Incomplete {
                    header_complete: false,
                })
            }
            Err(e) => return Err(e),
        };
        let limit = self.max_body();
        if len > limit as u64 {
            return Err(GobError::TooLong { len, limit });
        }
        if len == 0 {
            return Err(GobError::Empty);
        }
        // Checked against the limit above.
        let start = prefix.at;
        let end = start + len as usize;
        let Some(body) = buf.get(start..end) else {
            return Ok(Decoded::Incomplete {
                header_complete: true,
            });
        };
        let frame = self.decode_body(body)?;
        Ok(Decoded::Frame(frame, end))
    }
}

impl GobDecoder {
    /// The next `Message` value in `buf`, with the type definitions before
    /// it read on the way (a definition waits in the buffer for the value
    /// sent with it); the bytes used count the definitions too.
    pub fn next_message<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<GobMessage<'a>>, GobError> {
        let mut offset = 0;
        loop {
            match self.decode(&buf[offset..])? {
                Decoded::Frame(GobFrame::Definition, used) => offset += used,
                Decoded::Frame(GobFrame::Message(message), used) => {
                    return Ok(Decoded::Frame(message, offset + used))
                }
                Decoded::Incomplete { header_complete } => {
                    return Ok(Decoded::Incomplete {
                        header_complete: header_complete || offset > 0,
                    })
                }
            }
        }
    }

    fn decode_body<'a>(&mut self, body: &'a [u8]) -> Result<GobFrame<'a>, GobError> {
        // The definition every Go encoder of `Message` sends (and the
        // original client sends with every message): known without parsing.
        if body == &MESSAGE_TYPE_DEFINITION[1..] {
            self.layout = Some(Layout::GO);
            return Ok(GobFrame::Definition);
        }
        let mut cursor = Cursor::new(body);
        let id = cursor.int()?;
        if id < 0 {
            let layout = definition(&mut cursor, id.unsigned_abs())?;
            cursor.finish()?;
            self.layout = Some(layout);
            return Ok(GobFrame::Definition);
        }
        let layout = match self.layout {
            Some(layout) if layout.id == id.unsigned_abs() => layout,
            _ => return Err(GobError::UndefinedType(id)),
        };
        let message = self.value(&mut cursor, &layout)?;
        cursor.finish()?;
        Ok(GobFrame::Message(message))
    }

    fn value<'a>(
        &self,
        cursor: &mut Cursor<'a>,
        layout: &Layout,
    ) -> Result<GobMessage<'a>, GobError> {
        let mut message = GobMessage::default();
        // The field after the last one decoded: a delta of 1 means it.
        let mut next: u64 = 0;
        loop {
            let delta = cursor.uint()?;
            if delta == 0 {
                return Ok(message);
            }
            let number = next
                .checked_add(delta - 1)
                .filter(|&n| n < layout.count as u64)
                .ok_or(GobError::BadValue("field number out of range"))?;
            next = number + 1;
            // Below `layout.count`, which is at most 4.
            match layout.fields[number as usize] {
                Some(Field::Error) => match cursor.uint()? {
                    0 => message.error = false,
                    1 => message.error = true,
                    _ => return Err(GobError::BadValue("a bool that is neither 0 nor 1")),
                },
                Some(Field::To) => message.to = self.string(cursor, "To", self.name_limit())?,
                // A sender's claimed From is ignored by a server, so it is
                // held only to the protocol's own bound on names.
                Some(Field::From) => message.from = self.string(cursor, "From", FROM_LIMIT)?,
                Some(Field::Content) => {
                    let limit = usize::from(self.limits.max_message);
                    message.content = self.string(cursor, "Content", limit)?;
                }
                None => return Err(GobError::BadValue("field number out of range")),
            }
        }
    }

    fn name_limit(&self) -> usize {
        usize::from(self.limits.max_username)
    }

    fn string<'a>(
        &self,
        cursor: &mut Cursor<'a>,
        field: &'static str,
        limit: usize,
    ) -> Result<&'a [u8], GobError> {
        let len = cursor.uint()?;
        if len > limit as u64 {
            return Err(GobError::FieldTooLong {
                field,
                len: usize::try_from(len).unwrap_or(usize::MAX),
                limit,
            });
        }
        cursor.bytes(len as usize, "string")
    }
}

/// Reads a `wireType` defining type `id`: it must be a struct whose
/// fields are some of `Message`'s.
fn definition(cursor: &mut Cursor<'_>, id: u64) -> Result<Layout, GobError> {
    let unsupported = |why: &str| GobError::UnsupportedType(why.to_string());
    // wireType: exactly one field set, StructT.
    if cursor.uint()? != WIRE_TYPE_STRUCT + 1 {
        return Err(unsupported("only a struct can be a Message"));
    }
    let mut layout = Layout {
        id,
        fields: [None; 4],
        count: 0,
    };
    let mut defined_id = None;
    let mut field: u64 = 0;
    // StructType: CommonType (field 0), Field []*fieldType (field 1).
    loop {
        let delta = cursor.uint()?;
        if delta == 0 {
            break;
        }
        field = field
            .checked_add(delta)
            .ok_or_else(|| unsupported("field number overflow"))?;
        match field {
            1 => defined_id = common_type(cursor)?,
            2 => fields(cursor, &mut layout)?,
            _ => return Err(unsupported("unknown StructType field")),
        }
    }
    if cursor.uint()? != 0 {
        return Err(unsupported("more than one kind of type in one definition"));
    }
    if defined_id != Some(id) {
        return Err(unsupported("the struct's id does not match its definition"));
    }
    Ok(layout)
}

/// Reads a CommonType (Name string, Id int); returns the id, if given.
fn common_type(cursor: &mut Cursor<'_>) -> Result<Option<u64>, GobError> {
    let mut id = None;
    let mut field = 0u64;
    loop {
        let delta = cursor.uint()?;
        if delta == 0 {
            return Ok(id);
        }
        field = field.saturating_add(delta);
        match field {
            1 => {
                let len = cursor.uint()?;
                cursor.bytes(usize::try_from(len).unwrap_or(usize::MAX), "type name")?;
            }
            2 => id = u64::try_from(cursor.int()?).ok(),
            _ => {
                return Err(GobError::UnsupportedType(
                    "unknown CommonType field".to_string(),
                ))
            }
        }
    }
}

/// Reads the struct's field list into `layout`.
fn fields(cursor: &mut Cursor<'_>, layout: &mut Layout) -> Result<(), GobError> {
    let count = cursor.uint()?;
    if count > layout.fields.len() as u64 {
        return Err(GobError::UnsupportedType(format!(
            "a struct of {count} fields (Message has 4)"
        )));
    }
    for slot in 0..count as usize {
        let (name, type_id) = field_type(cursor)?;
        let known = Field::named(name).ok_or_else(|| {
            GobError::UnsupportedType(format!(
                "field '{}' is not one of To, From, Content, Error",
                crate::sanitize::Escaped(name)
            ))
        })?;
        if type_id != known.type_id() {
            return Err(GobError::UnsupportedType(format!(
                "field '{}' has type id {type_id}",
                crate::sanitize::Escaped(name)
            )));
        }
        if layout.fields[..slot].contains(&Some(known)) {
            return Err(GobError::UnsupportedType(format!(
                "field '{}' appears twice",
                crate::sanitize::Escaped(name)
            )));
        }
        layout.fields[slot] = Some(known);
    }
    layout.count = count as usize;
    Ok(())
}

/// Reads a fieldType (Name string, Id int).
fn field_type<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a [u8], u64), GobError> {
    let mut name: &[u8] = b"";
    let mut id = 0;
    let mut field = 0u64;
    loop {
        let delta = cursor.uint()?;
        if delta == 0 {
            return Ok((name, id));
        }
        field = field.saturating_add(delta);
        match field {
            1 => {
                let len = cursor.uint()?;
                name = cursor.bytes(usize::try_from(len).unwrap_or(usize::MAX), "field name")?;
            }
            2 => id = u64::try_from(cursor.int()?).unwrap_or(0),
            _ => {
                return Err(GobError::UnsupportedType(
                    "unknown fieldType field".to_string(),
                ))
            }
        }
    }
}

/// Reads gob's integers and byte strings from one message body.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    fn uint(&mut self) -> Result<u64, GobError> {
        let &first = self
            .buf
            .get(self.at)
            .ok_or(GobError::Truncated("integer"))?;
        if first < 0x80 {
            self.at += 1;
            return Ok(u64::from(first));
        }
        // The negated byte count: 0xff is 1 byte, 0xf8 is 8.
        let count = usize::from(first.wrapping_neg());
        if count == 0 || count > 8 {
            return Err(GobError::BadInteger);
        }
        let bytes = self
            .buf
            .get(self.at + 1..self.at + 1 + count)
            .ok_or(GobError::Truncated("integer"))?;
        self.at += 1 + count;
        Ok(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    }

    fn int(&mut self) -> Result<i64, GobError> {
        let u = self.uint()?;
        let magnitude = (u >> 1) as i64;
        Ok(if u & 1 == 1 { !magnitude } else { magnitude })
    }

    fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], GobError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or(GobError::Truncated(what))?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn finish(&self) -> Result<(), GobError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            n => Err(GobError::Trailing(n)),
        }
    }
}

/// Appends gob's unsigned integer encoding of `n`.
fn put_uint(n: u64, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let bytes = n.to_be_bytes();
    let skip = (n.leading_zeros() / 8) as usize;
    out.push((8 - skip as u8).wrapping_neg());
    out.extend_from_slice(&bytes[skip..]);
}

/// Bytes [`put_uint`] writes for `n`.
fn uint_len(n: u64) -> usize {
    if n < 0x80 {
        1
    } else {
        1 + 8 - (n.leading_zeros() / 8) as usize
    }
}

/// The value's body length (type id and fields, without the length
/// prefix).
fn value_len(message: &GobMessage<'_>) -> usize {
    let string = |s: &[u8]| {
        if s.is_empty() {
            0
        } else {
            1 + uint_len(s.len() as u64) + s.len()
        }
    };
    let id = uint_len(MESSAGE_TYPE_ID << 1);
    id + string(message.to)
        + string(message.from)
        + string(message.content)
        + if message.error { 2 } else { 0 }
        + 1
}

/// Bytes [`encode_message`] appends for `message`.
// Out of line: the v1 hot path that dispatches on the wire stays small.
#[inline(never)]
pub fn message_len(message: &GobMessage<'_>) -> usize {
    let body = value_len(message);
    MESSAGE_TYPE_DEFINITION.len() + uint_len(body as u64) + body
}

/// Appends `message` as the original programs send it: the type definition,
/// then the value.
#[inline(never)]
pub fn encode_message(message: &GobMessage<'_>, out: &mut Vec<u8>) {
    out.reserve(message_len(message));
    out.extend_from_slice(MESSAGE_TYPE_DEFINITION);
    encode_value(message, out);
}

/// Appends an error as the original server sends it:
/// `Message{Content: text, Error: true}`, with its type definition.
pub fn encode_error(text: &str, out: &mut Vec<u8>) {
    encode_message(
        &GobMessage {
            content: text.as_bytes(),
            error: true,
            ..GobMessage::default()
        },
        out,
    );
}

/// Appends only the value of `message` (for a stream whose type definition
/// was already sent).
pub fn encode_value(message: &GobMessage<'_>, out: &mut Vec<u8>) {
    put_uint(value_len(message) as u64, out);
    put_uint(MESSAGE_TYPE_ID << 1, out);
    let mut last = -1i64;
    let mut field = |number: i64, out: &mut Vec<u8>| {
        put_uint((number - last) as u64, out);
        last = number;
    };
    for (number, text) in [(0, message.to), (1, message.from), (2, message.content)] {
        if !text.is_empty() {
            field(number, out);
            put_uint(text.len() as u64, out);
            out.extend_from_slice(text);
        }
    }
    if message.error {
        field(3, out);
        out.push(1);
    }
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::hex;
    use proptest::prelude::*;

    /// The bytes captured from the original Go programs (a copy of the
    /// project's shared gob-vectors.json).
    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/vectors/gob-vectors.json")).unwrap()
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
}
