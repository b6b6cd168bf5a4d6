//! The inter-node batch format: what goes through a node's inbox channel
//! is a header (the sending node's id, the receiving node's, and the
//! batch's number), then records, each a kind byte and its fields (see
//! [`Record`]), then, with the cluster key, the signature of all that (see
//! `key`).
//!
//! The messages a sender without receipts sends one recipient in a row go
//! as one series (`S`): the two names once, then each message's content
//! (see [`put_series_head`]). Read, a series is its messages, one
//! [`Record::Message`] each, sharing the series' index in the batch: for a
//! flood of short messages the names were most of each record's bytes,
//! through Redis twice and both nodes' parsing. A node that did not know a
//! kind would stop reading the batch at it (see [`Records::garbage`]), so
//! a node sends series only to nodes whose lease says they read them
//! (`keys::BATCH_FORMAT`; pmchat before series wrote 1 there).
//!
//! The numbers of the batches one node sends another only grow (a node's
//! id is new at every start), so that with the key a batch captured in
//! Redis and published again is refused as a replay. A batch holding a message from a sender with
//! receipts (`R`) is answered with an acknowledgement (`A`) naming its
//! number and the records in it that were refused at once, so that the
//! sender's node reports ACCEPTED only for messages that reached the
//! recipient's node, and REFUSED, with the reason, for the others.

use crate::server::registry::same_name;
use crate::wire::texts::ErrorText;

/// One record of an inbox batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Record<'a> {
    /// `M`, or `R` when the sender asked for receipts: a message for `to`
    /// on the receiving node.
    Message {
        to: &'a [u8],
        from: &'a [u8],
        content: &'a [u8],
        receipts: bool,
    },
    /// `E`: an error for the sending node's user `to`, with its code (as
    /// [`crate::wire::texts::Code::to_byte`] writes it).
    Error {
        to: &'a [u8],
        code: u8,
        text: &'a [u8],
    },
    /// `K`: the operator of another node kicked `name`.
    Kick { name: &'a [u8] },
    /// `A`: the receiving node acted on batch `seq` of this node; the `R`
    /// records in it that it refused, as [`Refusals`].
    Ack { seq: u64, refusals: &'a [u8] },
    /// `P`: the receiving node's user `name` is behind: hold messages to
    /// it (see `pause`).
    Pause { name: &'a [u8] },
    /// `G`: `name` caught up: go on.
    Go { name: &'a [u8] },
}

/// The header: the sending node's id, the receiving node's, the batch's
/// number and its flags (0: see [`ACK_WANTED`], set later with
/// [`want_ack`]). Returns where the flags are.
pub(super) fn put_header(out: &mut Vec<u8>, origin: &[u8], destination: &[u8], seq: u64) -> usize {
    put_short(out, origin);
    put_short(out, destination);
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(0);
    out.len() - 1
}

/// The header flag asking the receiving node to acknowledge the batch.
pub(super) const ACK_WANTED: u8 = 1;

/// Sets [`ACK_WANTED`] in a batch whose flags are at `flags`.
pub(super) fn want_ack(batch: &mut [u8], flags: usize) {
    if let Some(byte) = batch.get_mut(flags) {
        *byte |= ACK_WANTED;
    }
}

/// Writes the head of a series (`S`): messages without receipts from
/// `from` to `to`, whose contents, each written by
/// [`put_series_entry`], take `len` bytes after it. At least one.
pub(super) fn put_series_head(out: &mut Vec<u8>, to: &[u8], from: &[u8], len: usize) {
    out.push(b'S');
    put_short(out, to);
    put_short(out, from);
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// The bytes [`put_series_head`] writes.
pub(super) fn series_head_len(to: &[u8], from: &[u8]) -> usize {
    1 + 1 + to.len() + 1 + from.len() + 4
}

/// Writes one message of a series: its content.
pub(super) fn put_series_entry(out: &mut Vec<u8>, content: &[u8]) {
    put_long(out, content);
}

/// The bytes [`put_series_entry`] writes.
pub(super) fn series_entry_len(content: &[u8]) -> usize {
    2 + content.len()
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

/// Adds the refusal of record `index` of a batch, because of `error`, to
/// an acknowledgement's list.
pub(super) fn put_refusal(out: &mut Vec<u8>, index: u32, error: &ErrorText) {
    out.extend_from_slice(&index.to_be_bytes());
    out.push(error.code().to_byte());
    put_long(out, error.text().as_bytes());
}

/// The refusals an acknowledgement carries: (record index, code byte,
/// error text).
pub(super) struct Refusals<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Refusals<'a> {
    type Item = (u32, u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let index = take(&mut self.0, 4)?;
        let index = u32::from_be_bytes([index[0], index[1], index[2], index[3]]);
        let code = take(&mut self.0, 1)?[0];
        Some((index, code, take_long(&mut self.0)?))
    }
}

impl Record<'_> {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Message {
                to,
                from,
                content,
                receipts,
            } => {
                out.push(if *receipts { b'R' } else { b'M' });
                put_short(out, to);
                put_short(out, from);
                put_long(out, content);
            }
            Record::Error { to, code, text } => {
                out.push(b'E');
                put_short(out, to);
                out.push(*code);
                put_long(out, text);
            }
            Record::Kick { name } => {
                out.push(b'K');
                put_short(out, name);
            }
            Record::Pause { name } => {
                out.push(b'P');
                put_short(out, name);
            }
            Record::Go { name } => {
                out.push(b'G');
                put_short(out, name);
            }
            Record::Ack { seq, refusals } => {
                out.push(b'A');
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&(refusals.len() as u32).to_be_bytes());
                out.extend_from_slice(refusals);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Record::Message {
                to, from, content, ..
            } => 1 + 1 + to.len() + 1 + from.len() + 2 + content.len(),
            Record::Error { to, text, .. } => 1 + 1 + to.len() + 1 + 2 + text.len(),
            Record::Kick { name } | Record::Pause { name } | Record::Go { name } => {
                1 + 1 + name.len()
            }
            Record::Ack { refusals, .. } => 1 + 8 + 4 + refusals.len(),
        }
    }
}

/// A decoded batch.
pub(super) struct Batch<'a> {
    pub(super) origin: &'a [u8],
    pub(super) destination: &'a [u8],
    /// The sending node waits for an acknowledgement.
    pub(super) wants_ack: bool,
    pub(super) seq: u64,
    /// Its records, read as they are asked for (no list of them is made:
    /// a batch of a flood holds tens of thousands).
    pub(super) records: Records<'a>,
}

/// The records of a batch, in order, up to the first malformed one, each
/// with its index in the batch; a series as its messages.
#[derive(Clone)]
pub(super) struct Records<'a> {
    rest: &'a [u8],
    read: usize,
    /// The series being read: its messages not read yet.
    series: Option<Series<'a>>,
}

/// A series' names and its messages' contents (checked whole when its
/// head was read).
#[derive(Clone, Copy)]
struct Series<'a> {
    to: &'a [u8],
    from: &'a [u8],
    entries: &'a [u8],
}

impl<'a> Series<'a> {
    fn next(&mut self) -> Option<Record<'a>> {
        Some(Record::Message {
            to: self.to,
            from: self.from,
            content: take_long(&mut self.entries)?,
            receipts: false,
        })
    }
}

/// What one record's bytes hold.
enum Decoded<'a> {
    One(Record<'a>),
    Series(Series<'a>),
}

impl<'a> Records<'a> {
    /// What follows the first malformed record (only a foreign publisher
    /// could send one), once the records are read; empty for a
    /// well-formed batch.
    pub(super) fn garbage(&self) -> &'a [u8] {
        self.rest
    }

    /// The sender and the index of the series being read, if it goes to
    /// `to` and has messages left: they can be taken by
    /// [`Records::next_in_series`] without a record made for each.
    pub(super) fn series_to(&self, to: &[u8]) -> Option<(&'a [u8], usize)> {
        let series = self.series.as_ref()?;
        (!series.entries.is_empty() && same_name(series.to, to))
            .then(|| (series.from, self.read - 1))
    }

    /// The content of the next message of the series being read; `None`
    /// at its end (the next record is then read as usual).
    pub(super) fn next_in_series(&mut self) -> Option<&'a [u8]> {
        take_long(&mut self.series.as_mut()?.entries)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (usize, Record<'a>);

    fn next(&mut self) -> Option<(usize, Record<'a>)> {
        if let Some(series) = &mut self.series {
            if let Some(message) = series.next() {
                return Some((self.read - 1, message));
            }
            self.series = None;
        }
        let mut rest = self.rest;
        let record = match decode_record(&mut rest)? {
            Decoded::One(record) => record,
            Decoded::Series(mut series) => {
                // Not empty: checked when decoded.
                let first = series.next()?;
                self.series = Some(series);
                first
            }
        };
        self.rest = rest;
        self.read += 1;
        Some((self.read - 1, record))
    }
}

/// Reads a batch's header; its records are read as they are asked for.
/// `None` without a whole header.
pub(super) fn decode_batch(batch: &[u8]) -> Option<Batch<'_>> {
    let mut rest = batch;
    let origin = take_short(&mut rest)?;
    let destination = take_short(&mut rest)?;
    let seq = take_u64(&mut rest)?;
    let flags = *take(&mut rest, 1)?.first()?;
    Some(Batch {
        origin,
        destination,
        wants_ack: flags & ACK_WANTED != 0,
        seq,
        records: Records {
            rest,
            read: 0,
            series: None,
        },
    })
}

/// The record at the front of `rest`; `None` at the end or at garbage.
fn decode_record<'a>(rest: &mut &'a [u8]) -> Option<Decoded<'a>> {
    let (&kind, tail) = rest.split_first()?;
    *rest = tail;
    if kind == b'S' {
        let (to, from) = (take_short(rest)?, take_short(rest)?);
        let len = take(rest, 4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let entries = take(rest, usize::try_from(len).ok()?)?;
        // Whole messages, at least one: a series is read as it is
        // delivered, and a malformed one must end the batch before any
        // of it is.
        let mut walk = entries;
        if walk.is_empty() {
            return None;
        }
        while !walk.is_empty() {
            take_long(&mut walk)?;
        }
        return Some(Decoded::Series(Series { to, from, entries }));
    }
    Some(Decoded::One(match kind {
        b'M' | b'R' => Record::Message {
            to: take_short(rest)?,
            from: take_short(rest)?,
            content: take_long(rest)?,
            receipts: kind == b'R',
        },
        b'E' => Record::Error {
            to: take_short(rest)?,
            code: take(rest, 1)?[0],
            text: take_long(rest)?,
        },
        b'K' => Record::Kick {
            name: take_short(rest)?,
        },
        b'P' => Record::Pause {
            name: take_short(rest)?,
        },
        b'G' => Record::Go {
            name: take_short(rest)?,
        },
        b'A' => {
            let seq = take_u64(rest)?;
            let len = take(rest, 4)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            Record::Ack {
                seq,
                refusals: take(rest, usize::try_from(len).ok()?)?,
            }
        }
        _ => return None,
    }))
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (field, tail) = (rest.get(..n)?, rest.get(n..)?);
    *rest = tail;
    Some(field)
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(take(rest, 8)?.try_into().ok()?))
}

fn take_short<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(*take(rest, 1)?.first()?);
    take(rest, len)
}

fn take_long<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take(rest, 2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    take(rest, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::texts::Code;

    #[test]
    fn inbox_batches_round_trip_and_stop_at_garbage() {
        let mut batch = Vec::new();
        let flags = put_header(&mut batch, b"node1", b"node2", 7);
        want_ack(&mut batch, flags);
        let mut refusals = Vec::new();
        let carol = ErrorText::new(Code::NotConnected, "carol");
        put_refusal(&mut refusals, 3, &carol);
        let records = [
            Record::Message {
                to: b"bob",
                from: b"alice",
                content: "hé".as_bytes(),
                receipts: false,
            },
            Record::Message {
                to: b"bob",
                from: b"carol",
                content: b"with receipts",
                receipts: true,
            },
            Record::Error {
                to: b"alice",
                code: Code::NotConnected.to_byte(),
                text: b"'carol' is not connected\n",
            },
            Record::Kick { name: b"dave" },
            Record::Pause { name: b"bob" },
            Record::Go { name: b"bob" },
            Record::Ack {
                seq: 41,
                refusals: &refusals,
            },
        ];
        for record in &records {
            let before = batch.len();
            record.encode(&mut batch);
            assert_eq!(batch.len() - before, record.len());
        }
        let decoded = decode_batch(&batch).unwrap();
        assert_eq!(
            (decoded.origin, decoded.destination, decoded.seq),
            (&b"node1"[..], &b"node2"[..], 7)
        );
        assert!(decoded.wants_ack);
        let mut read = decoded.records.clone();
        assert_eq!(read.by_ref().map(|(_, r)| r).collect::<Vec<_>>(), records);
        assert!(read.garbage().is_empty());
        assert_eq!(
            Refusals(&refusals).collect::<Vec<_>>(),
            vec![(3, carol.code().to_byte(), carol.text().as_bytes())]
        );
        // A truncated record and an unknown kind end the batch.
        batch.extend_from_slice(b"M\x05bo");
        let mut read = decode_batch(&batch).unwrap().records;
        assert_eq!(read.by_ref().count(), records.len());
        assert_eq!(read.garbage(), b"M\x05bo");
        batch.truncate(batch.len() - 4);
        batch.push(b'Z');
        assert_eq!(decode_batch(&batch).unwrap().records.count(), records.len());
        assert!(decode_batch(b"\x05node1\x05node2\x00\x00\x00\x00\x00\x00\x00\x07").is_none());
    }

    /// A batch with a message, a series of three from carol to bob, then
    /// a message with receipts.
    fn batch_with_a_series() -> Vec<u8> {
        let mut batch = Vec::new();
        put_header(&mut batch, b"node1", b"node2", 9);
        let message = |content: &'static [u8], receipts| Record::Message {
            to: b"bob",
            from: b"alice",
            content,
            receipts,
        };
        message(b"before", false).encode(&mut batch);
        let mut entries = Vec::new();
        for content in [&b"one"[..], b"", b"three"] {
            put_series_entry(&mut entries, content);
            assert_eq!(series_entry_len(content), 2 + content.len());
        }
        let before = batch.len();
        put_series_head(&mut batch, b"bob", b"carol", entries.len());
        assert_eq!(batch.len() - before, series_head_len(b"bob", b"carol"));
        batch.extend_from_slice(&entries);
        message(b"after", true).encode(&mut batch);
        batch
    }

    #[test]
    fn a_series_reads_as_its_messages_under_one_index() {
        let batch = batch_with_a_series();
        let read: Vec<_> = decode_batch(&batch).unwrap().records.collect();
        let message = |from: &'static [u8], content: &'static [u8], receipts| Record::Message {
            to: b"bob",
            from,
            content,
            receipts,
        };
        assert_eq!(
            read,
            vec![
                (0, message(b"alice", b"before", false)),
                (1, message(b"carol", b"one", false)),
                (1, message(b"carol", b"", false)),
                (1, message(b"carol", b"three", false)),
                // Counted as the sending node counts it: one record.
                (2, message(b"alice", b"after", true)),
            ]
        );
    }

    #[test]
    fn a_malformed_series_ends_the_batch_before_any_of_it_is_read() {
        let whole = batch_with_a_series();
        // The series' head starts after the header (6 + 6 + 8 + 1 bytes)
        // and the first record (1 + 4 + 6 + 2 + 6); its length field is
        // after the kind and the two names.
        let series = 21 + 19;
        let len_at = series + 1 + 4 + 6;
        assert_eq!(whole[series], b'S');
        let read = |batch: &[u8]| {
            let mut records = decode_batch(batch).unwrap().records;
            let count = records.by_ref().count();
            (count, records.garbage().len())
        };
        assert_eq!(read(&whole), (5, 0));
        // Its length one short (the last content cut) or one long (the
        // next record's kind taken in): neither is whole messages.
        for delta in [-1i32, 1] {
            let mut batch = whole.clone();
            let len = u32::from_be_bytes(batch[len_at..len_at + 4].try_into().unwrap());
            let len = (len as i32 + delta) as u32;
            batch[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            assert_eq!(read(&batch), (1, whole.len() - series), "{delta}");
        }
        // Empty.
        let mut batch = whole[..series].to_vec();
        put_series_head(&mut batch, b"bob", b"carol", 0);
        assert_eq!(read(&batch), (1, series_head_len(b"bob", b"carol")));
        // Longer than what is left.
        let mut batch = whole[..series].to_vec();
        put_series_head(&mut batch, b"bob", b"carol", 100);
        put_series_entry(&mut batch, b"short");
        assert_eq!(read(&batch), (1, batch.len() - series));
    }
}
