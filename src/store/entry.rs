//! One entry of a user's conversation log, and the two byte layouts it
//! has: in the pending buffer (owner first, for the writer to route it to
//! its log) and as a value in the store (the owner and id are the key).

use std::time::{SystemTime, UNIX_EPOCH};

/// Which way a logged message went, seen from the log's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To the owner, while one of the owner's devices was reading.
    Received,
    /// To the owner, while none of the owner's devices was reading: kept
    /// for later.
    Stored,
    /// From the owner (a copy for the owner's other devices and history).
    Sent,
}

impl Direction {
    /// The byte that stands for it, in the store and in ENTRY frames.
    pub fn wire_byte(self) -> u8 {
        match self {
            Direction::Received => b'r',
            Direction::Stored => b's',
            Direction::Sent => b'o',
        }
    }

    pub fn from_wire_byte(byte: u8) -> Option<Direction> {
        match byte {
            b'r' => Some(Direction::Received),
            b's' => Some(Direction::Stored),
            b'o' => Some(Direction::Sent),
            _ => None,
        }
    }
}

/// An entry read back from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The cursor: increases along every log.
    pub id: u64,
    /// When the server logged it, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub direction: Direction,
    /// The other side: the sender of an incoming message, the recipient
    /// of a sent one.
    pub peer: String,
    pub content: Vec<u8>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends an entry to the pending buffer: `owner_len u8, owner, id u64,
/// ts u64, direction u8, peer_len u8, peer, content_len u16, content`.
/// Names are at most 255 bytes and content at most 65535 (the wire's own
/// limits), so the lengths fit.
pub(super) fn encode_pending(
    out: &mut Vec<u8>,
    owner: &str,
    id: u64,
    ts_ms: u64,
    direction: Direction,
    peer: &[u8],
    content: &[u8],
) {
    out.push(owner.len() as u8);
    out.extend_from_slice(owner.as_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.push(direction.wire_byte());
    out.push(peer.len() as u8);
    out.extend_from_slice(peer);
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(content);
}

/// One entry of the pending buffer, borrowed: its owner, its id and its
/// value as the store keeps it.
pub(super) struct PendingEntry<'a> {
    pub(super) owner: &'a str,
    pub(super) id: u64,
    pub(super) value: &'a [u8],
}

/// Splits the pending buffer into its entries. The buffer is only ever
/// written by [`encode_pending`], so a malformed one is a bug: it ends the
/// iteration rather than panicking.
pub(super) fn pending_entries(mut buf: &[u8]) -> impl Iterator<Item = PendingEntry<'_>> {
    std::iter::from_fn(move || {
        let (&owner_len, rest) = buf.split_first()?;
        let owner = std::str::from_utf8(rest.get(..usize::from(owner_len))?).ok()?;
        let rest = &rest[usize::from(owner_len)..];
        let id = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let value_start = &rest[8..];
        // ts, direction, peer_len, peer, content_len, content.
        let peer_len = usize::from(*value_start.get(9)?);
        let content_len_at = 10 + peer_len;
        let content_len = usize::from(u16::from_be_bytes(
            value_start
                .get(content_len_at..content_len_at + 2)?
                .try_into()
                .ok()?,
        ));
        let value_len = content_len_at + 2 + content_len;
        let value = value_start.get(..value_len)?;
        buf = &value_start[value_len..];
        Some(PendingEntry { owner, id, value })
    })
}

/// Reads a stored value back (`ts u64, direction u8, peer_len u8, peer,
/// content_len u16, content`); `None` if it is not one.
pub(super) fn decode_value(id: u64, value: &[u8]) -> Option<Entry> {
    let ts_ms = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let direction = Direction::from_wire_byte(*value.get(8)?)?;
    let peer_len = usize::from(*value.get(9)?);
    let peer = std::str::from_utf8(value.get(10..10 + peer_len)?).ok()?;
    let content = value.get(10 + peer_len + 2..)?;
    Some(Entry {
        id,
        ts_ms,
        direction,
        peer: peer.to_owned(),
        content: content.to_vec(),
    })
}

/// The timestamp of a stored value, for retention by age.
pub(super) fn value_ts(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_entries_come_back_as_the_values_the_store_keeps() {
        let mut buf = Vec::new();
        encode_pending(&mut buf, "bob", 7, 1000, Direction::Stored, b"alice", b"hi");
        encode_pending(&mut buf, "alice", 8, 1001, Direction::Sent, b"bob", b"");
        let entries: Vec<_> = pending_entries(&buf).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].owner, entries[0].id), ("bob", 7));
        assert_eq!(
            decode_value(7, entries[0].value),
            Some(Entry {
                id: 7,
                ts_ms: 1000,
                direction: Direction::Stored,
                peer: "alice".into(),
                content: b"hi".to_vec(),
            })
        );
        let sent = decode_value(8, entries[1].value).unwrap();
        assert_eq!(
            (sent.direction, sent.peer.as_str()),
            (Direction::Sent, "bob")
        );
        assert!(sent.content.is_empty());
        assert_eq!(value_ts(entries[1].value), Some(1001));
    }

    #[test]
    fn a_truncated_buffer_or_value_is_not_read_past_its_end() {
        let mut buf = Vec::new();
        encode_pending(&mut buf, "bob", 7, 1000, Direction::Stored, b"alice", b"hi");
        for cut in 0..buf.len() {
            assert_eq!(pending_entries(&buf[..cut]).count(), 0);
        }
        assert_eq!(decode_value(1, b"short"), None);
        assert_eq!(decode_value(1, &[0; 10]), None);
    }
}
