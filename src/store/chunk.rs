//! Chunks: consecutive entries of one log kept in one value of the store,
//! under the key of the first. The writer makes one chunk of each run of
//! entries a batch holds for one owner (up to [`MAX_ENTRIES`] or
//! [`MAX_BYTES`]), so a B-tree insert carries tens of messages instead of
//! one: the insert, not the disk, was the cost of every stored message.
//!
//! Layout: for each entry, `id u64, len u32, value` (the value as
//! `entry::decode_value` reads it), ids increasing.

/// Most entries in one chunk.
pub(super) const MAX_ENTRIES: usize = 64;
/// Bytes past which a chunk takes no further entry.
pub(super) const MAX_BYTES: usize = 16 * 1024;

/// Bytes before an entry's value in a chunk.
const HEAD: usize = 12;

/// Appends an entry to a chunk.
pub(super) fn push(chunk: &mut Vec<u8>, id: u64, value: &[u8]) {
    chunk.extend_from_slice(&id.to_be_bytes());
    chunk.extend_from_slice(&(value.len() as u32).to_be_bytes());
    chunk.extend_from_slice(value);
}

/// A chunk's entries: where each starts in the chunk, its id and its
/// value. A chunk the writer did not write ends the iteration where it
/// stops making sense, rather than panicking.
pub(super) fn entries(chunk: &[u8]) -> impl DoubleEndedIterator<Item = (usize, u64, &[u8])> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(head) = chunk.get(at..at + HEAD) {
        let id = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(head[8..].try_into().unwrap_or_default()) as usize;
        let Some(value) = chunk.get(at + HEAD..at + HEAD + len) else {
            break;
        };
        found.push((at, id, value));
        at += HEAD + len;
    }
    found.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_with_their_offsets_and_a_cut_chunk_stops_early() {
        let mut chunk = Vec::new();
        push(&mut chunk, 5, b"five");
        push(&mut chunk, 9, b"");
        push(&mut chunk, 12, b"twelve");
        let all: Vec<_> = entries(&chunk).collect();
        assert_eq!(
            all,
            [
                (0, 5, b"five".as_slice()),
                (16, 9, b"".as_slice()),
                (28, 12, b"twelve".as_slice())
            ]
        );
        assert_eq!(entries(&chunk).next_back().map(|e| e.1), Some(12));
        assert_eq!(entries(&chunk[..chunk.len() - 1]).count(), 2);
        assert_eq!(entries(&chunk[..5]).count(), 0);
    }
}
