//! The inter-node batch format: what goes through a node's inbox channel
//! is the sending node's id, then records, each a kind byte and its fields
//! (see [`Record`]).

/// One record of an inbox batch.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record<'a> {
    /// `M`: a message for `to` on the receiving node.
    Message {
        to: &'a [u8],
        from: &'a [u8],
        content: &'a [u8],
    },
    /// `E`: an error for the sending node's user `to`.
    Error { to: &'a [u8], text: &'a [u8] },
    /// `K`: the operator of another node kicked `name`.
    Kick { name: &'a [u8] },
}

pub(super) fn put_short(out: &mut Vec<u8>, field: &[u8]) {
    // Names are at most 255 bytes: validated before they get here.
    out.push(field.len().min(255) as u8);
    out.extend_from_slice(&field[..field.len().min(255)]);
}

pub(super) fn put_long(out: &mut Vec<u8>, field: &[u8]) {
    let len = field.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&field[..len]);
}

impl Record<'_> {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Message { to, from, content } => {
                out.push(b'M');
                put_short(out, to);
                put_short(out, from);
                put_long(out, content);
            }
            Record::Error { to, text } => {
                out.push(b'E');
                put_short(out, to);
                put_long(out, text);
            }
            Record::Kick { name } => {
                out.push(b'K');
                put_short(out, name);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Record::Message { to, from, content } => {
                1 + 1 + to.len() + 1 + from.len() + 2 + content.len()
            }
            Record::Error { to, text } => 1 + 1 + to.len() + 2 + text.len(),
            Record::Kick { name } => 1 + 1 + name.len(),
        }
    }
}

/// Reads a batch: the sending node's id, then its records. Stops at the
/// first malformed record (only a foreign publisher could send one).
pub(super) fn decode_batch(batch: &[u8]) -> Option<(&[u8], Vec<Record<'_>>)> {
    let mut rest = batch;
    let origin = take_short(&mut rest)?;
    let mut records = Vec::new();
    while let Some(record) = decode_record(&mut rest) {
        records.push(record);
    }
    Some((origin, records))
}

/// The record at the front of `rest`; `None` at the end or at garbage.
pub(super) fn decode_record<'a>(rest: &mut &'a [u8]) -> Option<Record<'a>> {
    let (&kind, tail) = rest.split_first()?;
    *rest = tail;
    Some(match kind {
        b'M' => Record::Message {
            to: take_short(rest)?,
            from: take_short(rest)?,
            content: take_long(rest)?,
        },
        b'E' => Record::Error {
            to: take_short(rest)?,
            text: take_long(rest)?,
        },
        b'K' => Record::Kick {
            name: take_short(rest)?,
        },
        _ => return None,
    })
}

pub(super) fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (field, tail) = (rest.get(..n)?, rest.get(n..)?);
    *rest = tail;
    Some(field)
}

pub(super) fn take_short<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(*take(rest, 1)?.first()?);
    take(rest, len)
}

pub(super) fn take_long<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take(rest, 2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    take(rest, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_batches_round_trip_and_stop_at_garbage() {
        let mut batch = Vec::new();
        put_short(&mut batch, b"node1");
        let records = [
            Record::Message {
                to: b"bob",
                from: b"alice",
                content: "hé".as_bytes(),
            },
            Record::Error {
                to: b"alice",
                text: b"'carol' is not connected\n",
            },
            Record::Kick { name: b"dave" },
        ];
        for record in &records {
            let before = batch.len();
            record.encode(&mut batch);
            assert_eq!(batch.len() - before, record.len());
        }
        let (origin, decoded) = decode_batch(&batch).unwrap();
        assert_eq!(origin, b"node1");
        assert_eq!(decoded, records);
        // A truncated record and an unknown kind end the batch.
        batch.extend_from_slice(b"M\x05bo");
        assert_eq!(decode_batch(&batch).unwrap().1.len(), 3);
        batch.truncate(batch.len() - 4);
        batch.push(b'Z');
        assert_eq!(decode_batch(&batch).unwrap().1.len(), 3);
        assert!(decode_batch(b"\x09short").is_none());
    }
}
