//! Encoding v1 frames onto the end of a buffer, and reading WELCOME's
//! words back.

use super::*;

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
    let opcode = opcode.to_be_bytes();
    // The head in one piece: every message delivered is encoded here, and
    // each piece appended costs its own check of the room left.
    let head = [opcode[0], opcode[1], len_a[0], len_a[1], len_b[0], len_b[1]];
    out.reserve(MESSAGE_HEADER_LEN + a.len() + b.len());
    out.extend_from_slice(&head);
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

/// Appends STORED: messages `first..=last` were stored.
pub fn encode_stored(first: u64, last: u64, out: &mut Vec<u8>) {
    // Both fields fit: 8 bytes each.
    let _ = encode_pair(OP_STORED, &first.to_be_bytes(), &last.to_be_bytes(), out);
}

/// Appends CAUGHT-UP: `replayed` entries were replayed, live ones follow.
pub fn encode_caught_up(replayed: u64, out: &mut Vec<u8>) {
    // Both fields fit: empty and 8 bytes.
    let _ = encode_pair(OP_CAUGHT_UP, b"", &replayed.to_be_bytes(), out);
}

/// Encoded size of an ENTRY frame.
pub fn entry_len(peer: &[u8], content: &[u8]) -> usize {
    MESSAGE_HEADER_LEN + ENTRY_HEAD_LEN + peer.len() + content.len()
}

/// Appends ENTRY: a message of the user's log (see
/// [`super::ServerFrame::Entry`]). `peer` is a name (at most 255 bytes)
/// and `content` within the 16-bit limit, as everything the store keeps.
pub fn encode_entry(
    id: u64,
    ts_ms: u64,
    direction: u8,
    peer: &[u8],
    content: &[u8],
    out: &mut Vec<u8>,
) {
    encode_entry_as(OP_ENTRY, id, ts_ms, direction, peer, content, out);
}

/// Appends an entry of a HISTORY answer (ENTRY's layout).
pub fn encode_history_entry(
    id: u64,
    ts_ms: u64,
    direction: u8,
    peer: &[u8],
    content: &[u8],
    out: &mut Vec<u8>,
) {
    encode_entry_as(OP_HISTORY_ENTRY, id, ts_ms, direction, peer, content, out);
}

/// Appends the end of a HISTORY answer: `count` entries came.
pub fn encode_history_end(count: u64, out: &mut Vec<u8>) {
    // Both fields fit: empty and 8 bytes.
    let _ = encode_pair(OP_HISTORY_END, b"", &count.to_be_bytes(), out);
}

/// Appends HISTORY: up to `max` entries of the log before id `before`
/// (0: the newest), with `peer` only unless it is empty.
pub fn encode_history(
    peer: &[u8],
    before: u64,
    max: u16,
    out: &mut Vec<u8>,
) -> Result<(), FieldTooLong> {
    let mut request = [0; HISTORY_REQUEST_LEN];
    request[..8].copy_from_slice(&before.to_be_bytes());
    request[8..].copy_from_slice(&max.to_be_bytes());
    encode_pair(OP_HISTORY, peer, &request, out)
}

#[allow(clippy::too_many_arguments)]
fn encode_entry_as(
    opcode: u16,
    id: u64,
    ts_ms: u64,
    direction: u8,
    peer: &[u8],
    content: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&opcode.to_be_bytes());
    out.extend_from_slice(&((ENTRY_HEAD_LEN + peer.len()) as u16).to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.push(direction);
    out.extend_from_slice(peer);
    out.extend_from_slice(content);
}

/// Appends REFUSED: message `ordinal` was not delivered, because of `text`
/// (cut to fit a frame, like [`encode_error`]'s), with `code` after the
/// ordinal when the client negotiated codes.
pub fn encode_refused(ordinal: u64, code: Option<&str>, text: &str, out: &mut Vec<u8>) {
    let text = &text.as_bytes()[..text_fit(text)];
    let mut a = [0; ORDINAL_LEN + MAX_WORD];
    a[..ORDINAL_LEN].copy_from_slice(&ordinal.to_be_bytes());
    let code = code.unwrap_or("").as_bytes();
    let code = &code[..code.len().min(MAX_WORD)];
    a[ORDINAL_LEN..ORDINAL_LEN + code.len()].copy_from_slice(code);
    // Both fields fit: at most 40 bytes, and a text cut to a 16-bit length.
    let _ = encode_pair(OP_REFUSED, &a[..ORDINAL_LEN + code.len()], text, out);
}

/// Appends a coded error frame (feature `codes`): `code` beside `text`,
/// which is cut like [`encode_error`]'s.
pub fn encode_coded_error(code: &str, text: &str, out: &mut Vec<u8>) {
    let text = &text.as_bytes()[..text_fit(text)];
    let code = &code.as_bytes()[..code.len().min(MAX_WORD)];
    // Both fields fit: a short word and a text cut to a 16-bit length.
    let _ = encode_pair(OP_CODED_ERROR, code, text, out);
}

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
    lists_word(text, WELCOME_AUTHENTICATED)
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

/// True if a space-separated list (a HELLO's features, a WELCOME's
/// limits) holds `word`, such as [`FEATURE_RECEIPTS`] for a granted feature.
pub fn lists_word(text: &[u8], word: &str) -> bool {
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
