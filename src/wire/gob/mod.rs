//! The gob wire of the original Go programs: after the v1 handshake, a
//! stream of `encoding/gob` values of
//!
//! ```go
//! type Message struct { To string; From string; Content string; Error bool }
//! ```
//!
//! A sans-IO codec, like [`crate::wire::v1`]'s: it works on byte slices,
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

use crate::wire::framing::{Decoded, Decoder, Limits};

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

mod encode;
mod read;

pub use encode::*;
use read::{definition, Cursor};

#[cfg(test)]
mod tests;
