//! Encoding `Message` values, with their type definition, in gob.

use super::*;

/// Appends gob's unsigned integer encoding of `n`.
pub(super) fn put_uint(n: u64, out: &mut Vec<u8>) {
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
pub(super) fn uint_len(n: u64) -> usize {
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
