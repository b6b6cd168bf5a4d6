//! The trust boundary with Redis: whatever a node reads from it (batches
//! from other nodes, presence events, the directory) is checked as strictly
//! as a client's frame before anything acts on it. Anyone who can write to
//! Redis can publish on the nodes' channels: a record that breaks a rule
//! (a name no client could log in with, content that is not UTF-8 or is
//! over the limit, an error text with control characters) is dropped and
//! counted, never delivered.

use crate::wire::v1::{is_sealed, is_text, validate_username, Limits};

/// Longest error text a node sends another (they are short, server-made).
pub(super) const MAX_ERROR_TEXT: usize = 1024;

/// A node id: 16 lowercase hex digits (see `keys::new_node_id`).
pub(super) fn valid_node_id(id: &[u8]) -> bool {
    id.len() == 16 && id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A name a client could have logged in with.
pub(super) fn valid_name(limits: &Limits, name: &[u8]) -> bool {
    validate_username(name, usize::from(limits.max_username)).is_ok()
}

/// Message content a client could have sent: text, or sealed content
/// (opaque: only its recipient's client can tell whether it opens).
pub(super) fn valid_content(limits: &Limits, content: &[u8]) -> bool {
    content.len() <= usize::from(limits.max_message) && (is_sealed(content) || is_text(content))
}

/// An error text as nodes send them: UTF-8, bounded, one line (the final
/// newline aside), no control characters.
pub(super) fn valid_error_text(text: &[u8]) -> bool {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    text.len() <= MAX_ERROR_TEXT
        && std::str::from_utf8(body).is_ok_and(|body| !body.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_redis_writer_could_forge_is_refused() {
        let limits = Limits::default();
        assert!(valid_node_id(b"0123456789abcdef"));
        assert!(!valid_node_id(b"0123456789ABCDEF"));
        assert!(!valid_node_id(b"short"));
        assert!(valid_name(&limits, b"alice"));
        for forged in [&b"al:ice"[..], b"\x1b[2Jeve", b"", &[b'a'; 33], b"bob\xff"] {
            assert!(!valid_name(&limits, forged), "{forged:?}");
        }
        assert!(valid_content(&limits, "hé".as_bytes()));
        assert!(!valid_content(&limits, b"\xfe\xff"));
        assert!(valid_content(&limits, b"\xff\xfe sealed"));
        assert!(!valid_content(&limits, &[b'x'; 60_000]));
        assert!(valid_error_text(b"'bob' is not connected\n"));
        assert!(!valid_error_text(
            b"'bob' is\x1b]52;c;AAAA\x07 not connected\n"
        ));
        assert!(!valid_error_text(b"two\nlines\n"));
        assert!(!valid_error_text(&[b'x'; 5000]));
    }
}
