//! Acting on a batch from another node: messages into local recipients'
//! queues, errors to local senders, kicks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::info;

use super::backlog::{Joined, Waiting};
use super::batch::{decode_batch, put_refusal, Record, Records, Refusals};
use super::key::split_tag;
use super::keys::node_key;
use super::trust::{valid_content, valid_error_text, valid_name, valid_node_id};
use super::Cluster;
use crate::sanitize::Escaped;
use crate::server::mailbox::flush_all;
use crate::server::mailbox::Mailbox;
use crate::server::outbound::PushError;
use crate::server::registry::{same_name, Registry};
use crate::wire::texts::{Code, ErrorText};
use crate::wire::v1::Limits;

impl Cluster {
    /// True when `node` holds a lease in Redis now.
    async fn has_lease(&self, node: &[u8]) -> bool {
        let (Some(mut connection), Ok(node)) = (self.connection(), std::str::from_utf8(node))
        else {
            return false;
        };
        let alive: redis::RedisResult<i64> = redis::cmd("EXISTS")
            .arg(node_key(node))
            .query_async(&mut connection)
            .await;
        alive == Ok(1)
    }

    /// True when `seq` is newer than every batch accepted from `origin` so
    /// far (and records it): the numbers one node sends another only grow.
    fn first_time(&self, origin: &Arc<str>, seq: u64) -> bool {
        let mut latest = self.latest_batch.lock().unwrap_or_else(|e| e.into_inner());
        match latest.get(origin) {
            Some(&last) if seq <= last => false,
            _ => {
                latest.insert(Arc::clone(origin), seq);
                true
            }
        }
    }

    /// Acts on a batch from another node's outbox; acknowledges it if a
    /// sender with receipts waits on it.
    pub(super) async fn deliver(self: &Arc<Self>, payload: &[u8]) {
        let body = match &self.key {
            None => payload,
            Some(key) => match split_tag(payload) {
                Some((body, tag)) if key.verify(body, tag) => body,
                _ => {
                    self.reject("a batch without a valid signature");
                    return;
                }
            },
        };
        let Some(batch) = decode_batch(body) else {
            self.reject("a batch without a header");
            return;
        };
        if batch.destination != self.node.as_bytes() {
            self.reject("a batch for another node");
            return;
        }
        if !valid_node_id(batch.origin) {
            self.reject("a batch from an invalid node id");
            return;
        }
        // A node not seen yet (it may have joined since the last reading
        // of the directory) counts as live until its lease is checked, as
        // long as fewer than MAX_NODES are tracked. With the key, its lease
        // is checked first: a batch of a node that died, published again,
        // must not bring it back.
        if self.key.is_some()
            && self.live_node(batch.origin).is_none()
            && !self.has_lease(batch.origin).await
        {
            self.reject("a batch from a node without a lease");
            return;
        }
        let Some(origin) = self.note_live(batch.origin) else {
            self.reject("a batch from one node too many");
            return;
        };
        if self.key.is_some() && !self.first_time(&origin, batch.seq) {
            self.reject("a batch published again (a replay)");
            return;
        }
        let limits = &self.local.limits;
        let patience = self.local.slow_consumer_timeout;
        let mut touched: Vec<Arc<Mailbox>> = Vec::new();
        // The acknowledgement's list of refused records, if one is owed.
        let mut refusals: Option<Vec<u8>> = batch.wants_ack.then(Vec::new);
        let mut names = CheckedNames::default();
        let mut recipients = Recipients::default();
        let mut records = batch.records;
        // A run of messages to one recipient (and, past it, the record that
        // ended it, read already): into its queue together if it fits.
        let mut run = Run::default();
        let mut ended_run = None;
        while let Some((index, record)) = ended_run.take().or_else(|| records.next()) {
            if !valid_record(limits, &record, &mut names) {
                self.reject("a record that breaks the limits");
                continue;
            }
            match record {
                Record::Message { to, .. } => {
                    // Borrowed from the batch's table: no reference count
                    // touched per message (its line is shared with the
                    // recipient's own worker).
                    let Some(session) = recipients.get(&self.local.registry, to) else {
                        let error = ErrorText::new(Code::NotConnected, Escaped(to));
                        let refused = Delivered::Refused(error);
                        self.answer(&origin, &mut refusals, index, &record, refused)
                            .await;
                        continue;
                    };
                    run.start(index, &record);
                    ended_run = extend_run(&mut run, &mut records, limits, &mut names);
                    if let Some(needs_write) = self.deliver_run(session, &run) {
                        if needs_write {
                            touched.push(Arc::clone(session));
                        }
                        continue;
                    }
                    // One at a time: what does not fit waits behind a
                    // backlog, in order.
                    for (index, record) in run.records() {
                        let Record::Message { from, content, .. } = record else {
                            continue;
                        };
                        match self.deliver_message(&origin, session, from, content) {
                            Delivered::Queued => touched.push(Arc::clone(session)),
                            delivered => {
                                self.answer(&origin, &mut refusals, index, &record, delivered)
                                    .await
                            }
                        }
                    }
                }
                Record::Error { to, code, text } => {
                    if let Some(session) = self.local.registry.get(to) {
                        // Both checked by `valid_record`.
                        let code = Code::from_byte(code).unwrap_or(Code::NotConnected);
                        let text = String::from_utf8_lossy(text).into_owned();
                        let frame = session.wire().error_frame(&ErrorText::carried(code, text));
                        if let Ok(true) = session
                            .outbound()
                            .try_push_deferred(frame.len(), |out| out.extend_from_slice(&frame))
                        {
                            touched.push(session);
                        }
                    }
                }
                Record::Kick { name } => {
                    // Every device of the name here: the next stands for
                    // it once the one before is removed.
                    let mut kicked: Option<Arc<Mailbox>> = None;
                    while let Some(session) = self.local.registry.get(name) {
                        if kicked.as_ref().is_some_and(|k| Arc::ptr_eq(k, &session)) {
                            break;
                        }
                        self.local.registry.remove(&session);
                        if session.close_with_error(&ErrorText::of(Code::Kicked)) {
                            info!(
                                user = session.name(),
                                "kicked by the operator of another node"
                            );
                        }
                        kicked = Some(session);
                    }
                }
                Record::Ack { seq, refusals } => {
                    self.acknowledged(&origin, seq, Refusals(refusals));
                }
                Record::Pause { name } => self.paused.pause(name),
                Record::Go { name } => self.paused.resume(name),
            }
        }
        if !records.garbage().is_empty() {
            self.reject("a batch with a malformed record");
        }
        flush_all(&mut touched);
        if let Some(refusals) = refusals {
            let ack = Record::Ack {
                seq: batch.seq,
                refusals: &refusals,
            };
            let _ = self.send(&origin, &ack, patience).await;
        }
    }

    /// Acts on what became of message `index` of a batch from `origin`
    /// (`record`) when it was not simply queued: a pause asked of its
    /// node, or a refusal told to its sender (in the acknowledgement
    /// owed, `refusals`, for a sender with receipts).
    async fn answer(
        self: &Arc<Self>,
        origin: &Arc<str>,
        refusals: &mut Option<Vec<u8>>,
        index: usize,
        record: &Record<'_>,
        delivered: Delivered,
    ) {
        let Record::Message {
            to, from, receipts, ..
        } = *record
        else {
            return;
        };
        let patience = self.local.slow_consumer_timeout;
        let error = match delivered {
            Delivered::Waiting | Delivered::Queued => return,
            Delivered::WaitingPause => {
                let _ = self
                    .send(origin, &Record::Pause { name: to }, patience)
                    .await;
                return;
            }
            Delivered::Refused(error) => error,
        };
        match refusals {
            Some(list) if receipts => put_refusal(list, index as u32, &error),
            _ => {
                let record = Record::Error {
                    to: from,
                    code: error.code().to_byte(),
                    text: error.text().as_bytes(),
                };
                let _ = self.send(origin, &record, patience).await;
            }
        }
    }

    /// Puts a run of valid messages to `session` into its queue at once,
    /// if no backlog stands in the way and all of them fit: whether the
    /// queue needs a write. `None`: they go one at a time instead.
    fn deliver_run(&self, session: &Mailbox, run: &Run<'_>) -> Option<bool> {
        if run.messages.len() < 2 || self.backlog_count.load(Ordering::Acquire) != 0 {
            return None;
        }
        let (wire, name) = (session.wire(), session.name().as_bytes());
        let messages = || {
            run.messages
                .iter()
                .map(|message| (message.from, message.content))
        };
        let len = messages()
            .map(|(from, content)| wire.message_len(name, from, content))
            .sum();
        let encode = |out: &mut Vec<u8>| {
            for (from, content) in messages() {
                wire.encode_message(name, from, content, out);
            }
        };
        match session.outbound().try_push_run(len, encode) {
            Ok(needs_write) => Some(needs_write),
            // As one at a time: what goes to a closed queue is dropped.
            Err(PushError::Closed) => Some(false),
            Err(PushError::Full) => None,
        }
    }

    /// Puts one message from another node into its recipient's queue (or
    /// behind its backlog).
    fn deliver_message(
        self: &Arc<Self>,
        origin: &Arc<str>,
        session: &Arc<Mailbox>,
        from: &[u8],
        content: &[u8],
    ) -> Delivered {
        let (wire, name) = (session.wire(), session.name().as_bytes());
        let len = wire.message_len(name, from, content);
        let encode = |out: &mut Vec<u8>| wire.encode_message(name, from, content, out);
        let waiting = || Waiting {
            frame: {
                let mut frame = Vec::with_capacity(len);
                encode(&mut frame);
                frame
            },
            origin: Arc::clone(origin),
            from: from.into(),
        };
        // Behind the messages already waiting for it, if any: order is
        // kept, and this task never waits.
        match self.join_backlog(session, waiting) {
            Joined::Queued => return Delivered::Waiting,
            Joined::QueuedPause => return Delivered::WaitingPause,
            Joined::Refused => {
                return Delivered::Refused(ErrorText::new(Code::NotReading, Escaped(name)))
            }
            Joined::NoBacklog => {}
        }
        match session.outbound().try_push_deferred(len, encode) {
            Ok(true) => Delivered::Queued,
            Ok(false) | Err(PushError::Closed) => Delivered::Waiting,
            // Its own node's rule, without holding up the others: the
            // message waits for room (in order, with those that follow it)
            // for the slow-consumer timeout, on a task of its own.
            Err(PushError::Full) => {
                let first = waiting();
                self.start_backlog(Arc::clone(session), first);
                Delivered::Waiting
            }
        }
    }
}

/// A run of valid messages to one recipient, consecutive in their batch:
/// what goes into its queue under one lock. Kept compact (the recipient
/// once, each message's fields in 40 bytes): it is filled and read once
/// per message.
#[derive(Default)]
struct Run<'a> {
    to: &'a [u8],
    messages: Vec<RunMessage<'a>>,
}

#[derive(Clone, Copy)]
struct RunMessage<'a> {
    from: &'a [u8],
    content: &'a [u8],
    /// Its record's index in the batch: the messages of a series share
    /// one, so it is not the run's first plus its place in the run.
    index: u32,
    receipts: bool,
}

impl<'a> RunMessage<'a> {
    fn new(index: usize, from: &'a [u8], content: &'a [u8], receipts: bool) -> Self {
        RunMessage {
            from,
            content,
            // A batch is bounded far below 4 G records.
            index: index as u32,
            receipts,
        }
    }

    /// The record it came as, to `to`.
    fn record(&self, to: &'a [u8]) -> Record<'a> {
        Record::Message {
            to,
            from: self.from,
            content: self.content,
            receipts: self.receipts,
        }
    }
}

impl<'a> Run<'a> {
    /// Starts a run with `record` (a valid message), message `index` of
    /// its batch.
    fn start(&mut self, index: usize, record: &Record<'a>) {
        self.messages.clear();
        if let Record::Message {
            to,
            from,
            content,
            receipts,
        } = *record
        {
            self.to = to;
            self.messages
                .push(RunMessage::new(index, from, content, receipts));
        }
    }

    /// Its messages as the records they came as, with their indexes.
    fn records(&self) -> impl Iterator<Item = (usize, Record<'a>)> + '_ {
        self.messages
            .iter()
            .map(|message| (message.index as usize, message.record(self.to)))
    }
}

/// Adds to `run` (a valid message, alone) the valid messages to the same
/// recipient that follow it in `records`, up to [`MAX_RUN`] in all; returns
/// the record that ended the run, read already, if any.
fn extend_run<'a>(
    run: &mut Run<'a>,
    records: &mut Records<'a>,
    limits: &Limits,
    names: &mut CheckedNames<'a>,
) -> Option<(usize, Record<'a>)> {
    let to = run.to;
    // Checked already: the recipient, and the sender of the message
    // before (usually the same all along).
    let mut last_from = run.messages.first()?.from;
    while run.messages.len() < MAX_RUN {
        // The rest of a series to the same recipient: its sender checked
        // once, its messages taken without a record made for each.
        if let Some((from, index)) = records.series_to(to) {
            if same_name(from, last_from) || names.valid(limits, from) {
                last_from = from;
                while run.messages.len() < MAX_RUN {
                    let Some(content) = records.next_in_series() else {
                        break;
                    };
                    let message = RunMessage::new(index, from, content, false);
                    if !valid_content(limits, content) {
                        return Some((index, message.record(to)));
                    }
                    run.messages.push(message);
                }
                continue;
            }
        }
        let (index, record) = records.next()?;
        let Record::Message {
            to: other,
            from,
            content,
            receipts,
        } = record
        else {
            return Some((index, record));
        };
        let same = same_name(other, to)
            && (same_name(from, last_from) || names.valid(limits, from))
            && valid_content(limits, content);
        if !same {
            return Some((index, record));
        }
        last_from = from;
        run.messages
            .push(RunMessage::new(index, from, content, receipts));
    }
    None
}

/// The most messages put into one queue under one lock: the recipient's
/// worker waits for that lock to write.
const MAX_RUN: usize = 256;

/// What became of one message from another node.
enum Delivered {
    /// In the recipient's queue, which needs a write.
    Queued,
    /// In the queue (already being written) or waiting in its backlog.
    Waiting,
    /// Waiting in a backlog that passed the pause threshold: the sender's
    /// node is to be told to pause.
    WaitingPause,
    /// Not delivered, for this reason.
    Refused(ErrorText),
}

/// The recipients a batch reached, so that a batch (the same few hundred
/// recipients at most, each many times) looks each up in the registry once
/// rather than once per message: a small table by a cheap hash of the
/// name, a collision replacing the older entry. It lives for one batch: a
/// session that closes meanwhile is found closed when its queue is pushed
/// to.
struct Recipients {
    slots: [Option<Arc<Mailbox>>; RECIPIENT_SLOTS],
}

impl Default for Recipients {
    fn default() -> Self {
        Recipients {
            slots: std::array::from_fn(|_| None),
        }
    }
}

/// Slots in a batch's table of recipients (a power of two).
const RECIPIENT_SLOTS: usize = 64;

impl Recipients {
    fn get(&mut self, registry: &Registry, to: &[u8]) -> Option<&Arc<Mailbox>> {
        // FNV-1a: a few cycles a byte on names of a few bytes.
        let hash = to.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let slot = &mut self.slots[hash as usize & (RECIPIENT_SLOTS - 1)];
        if slot.as_ref().is_none_or(|m| m.name().as_bytes() != to) {
            *slot = Some(registry.get(to)?);
        }
        slot.as_ref()
    }
}

/// The last two names of a batch found valid: a batch is mostly the same
/// few senders and recipients, and each is checked once, not per message.
#[derive(Default)]
struct CheckedNames<'a> {
    recent: [&'a [u8]; 2],
}

impl<'a> CheckedNames<'a> {
    fn valid(&mut self, limits: &Limits, name: &'a [u8]) -> bool {
        if !name.is_empty() && self.recent.contains(&name) {
            return true;
        }
        if !valid_name(limits, name) {
            return false;
        }
        self.recent = [name, self.recent[0]];
        true
    }
}

/// True when every field of `record` is one a client or a node could have
/// sent.
fn valid_record<'a>(limits: &Limits, record: &Record<'a>, names: &mut CheckedNames<'a>) -> bool {
    match *record {
        Record::Message {
            to, from, content, ..
        } => names.valid(limits, to) && names.valid(limits, from) && valid_content(limits, content),
        Record::Error { to, code, text } => {
            names.valid(limits, to) && Code::from_byte(code).is_some() && valid_error_text(text)
        }
        Record::Kick { name } | Record::Pause { name } | Record::Go { name } => {
            names.valid(limits, name)
        }
        Record::Ack { refusals, .. } => Refusals(refusals)
            .all(|(_, code, text)| Code::from_byte(code).is_some() && valid_error_text(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(to: &'a [u8], content: &'a [u8]) -> Record<'a> {
        Record::Message {
            to,
            from: b"alice",
            content,
            receipts: false,
        }
    }

    /// Where the run that starts at `records[start]` ends, read from a
    /// batch of `records`.
    fn end_of_run(records: &[Record<'_>], start: usize) -> usize {
        let mut body = Vec::new();
        crate::server::cluster::batch::put_header(&mut body, b"node1", b"node2", 0);
        for record in records {
            record.encode(&mut body);
        }
        let mut read = decode_batch(&body).unwrap().records;
        let (index, first) = read.nth(start).unwrap();
        let mut run = Run::default();
        run.start(index, &first);
        let limits = Limits::default();
        extend_run(&mut run, &mut read, &limits, &mut CheckedNames::default());
        start + run.messages.len()
    }

    #[test]
    fn a_run_ends_at_another_recipient_or_another_kind_of_record() {
        let records = [
            message(b"bob", b"1"),
            message(b"bob", b"2"),
            message(b"carol", b"3"),
            message(b"bob", b"4"),
            Record::Go { name: b"bob" },
            message(b"bob", b"5"),
        ];
        assert_eq!(end_of_run(&records, 0), 2);
        assert_eq!(end_of_run(&records, 2), 3);
        assert_eq!(end_of_run(&records, 3), 4);
        assert_eq!(end_of_run(&records, 5), 6);
    }

    #[test]
    fn a_record_that_breaks_the_limits_is_never_part_of_a_run() {
        let too_long = vec![b'x'; usize::from(Limits::default().max_message) + 1];
        let records = [
            message(b"bob", b"1"),
            message(b"bob", &too_long),
            message(b"bob", b"3"),
            message(b"bob", b"4"),
        ];
        assert_eq!(end_of_run(&records, 0), 1);
        assert_eq!(end_of_run(&records, 2), 4);
    }

    #[test]
    fn a_run_across_a_series_keeps_each_records_index_for_its_refusal() {
        use crate::server::cluster::batch::{put_header, put_series_entry, put_series_head};
        // carol's series of three (record 0), then dave's message with
        // receipts (record 1): one run to bob. A refusal of dave's must
        // name record 1, the one his node's ticket holds.
        let mut body = Vec::new();
        put_header(&mut body, b"node1", b"node2", 0);
        let mut entries = Vec::new();
        for content in [b"1", b"2", b"3"] {
            put_series_entry(&mut entries, content);
        }
        put_series_head(&mut body, b"bob", b"carol", entries.len());
        body.extend_from_slice(&entries);
        Record::Message {
            to: b"bob",
            from: b"dave",
            content: b"4",
            receipts: true,
        }
        .encode(&mut body);
        let mut read = decode_batch(&body).unwrap().records;
        let (index, first) = read.next().unwrap();
        let mut run = Run::default();
        run.start(index, &first);
        let limits = Limits::default();
        assert!(extend_run(&mut run, &mut read, &limits, &mut CheckedNames::default()).is_none());
        let indexes: Vec<_> = run
            .records()
            .map(|(index, record)| match record {
                Record::Message { from, .. } => (index, from),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            indexes,
            vec![
                (0, &b"carol"[..]),
                (0, b"carol"),
                (0, b"carol"),
                (1, b"dave")
            ]
        );
    }

    #[test]
    fn a_message_of_a_series_that_breaks_the_limits_ends_the_run_and_the_series_goes_on() {
        use crate::server::cluster::batch::{put_header, put_series_entry, put_series_head};
        let too_long = vec![b'x'; usize::from(Limits::default().max_message) + 1];
        let mut body = Vec::new();
        put_header(&mut body, b"node1", b"node2", 0);
        let mut entries = Vec::new();
        for content in [&b"1"[..], &too_long, b"3", b"4"] {
            put_series_entry(&mut entries, content);
        }
        put_series_head(&mut body, b"bob", b"carol", entries.len());
        body.extend_from_slice(&entries);
        message(b"bob", b"5").encode(&mut body);
        let limits = Limits::default();
        let mut names = CheckedNames::default();
        let mut read = decode_batch(&body).unwrap().records;
        let contents = |run: &Run<'_>| -> Vec<Vec<u8>> {
            run.messages.iter().map(|m| m.content.to_vec()).collect()
        };
        let (index, first) = read.next().unwrap();
        let mut run = Run::default();
        run.start(index, &first);
        let ended = extend_run(&mut run, &mut read, &limits, &mut names);
        assert_eq!(contents(&run), vec![b"1".to_vec()]);
        let Some((0, Record::Message { content, .. })) = ended else {
            panic!("the run ended at something else");
        };
        assert_eq!(content, &too_long[..]);
        // What follows it in the series, then alice's message: one run.
        let (index, next) = read.next().unwrap();
        run.start(index, &next);
        assert!(extend_run(&mut run, &mut read, &limits, &mut names).is_none());
        assert_eq!(
            contents(&run),
            vec![b"3".to_vec(), b"4".to_vec(), b"5".to_vec()],
        );
        let indexes: Vec<_> = run.records().map(|(index, _)| index).collect();
        assert_eq!(indexes, vec![0, 0, 1]);
    }

    #[test]
    fn a_run_is_at_most_max_run_messages_long() {
        let records = vec![message(b"bob", b"x"); MAX_RUN + 10];
        assert_eq!(end_of_run(&records, 0), MAX_RUN);
        assert_eq!(end_of_run(&records, MAX_RUN), MAX_RUN + 10);
    }
}
