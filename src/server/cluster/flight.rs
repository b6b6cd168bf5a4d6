//! Batches on their way to another node: a batch the publisher (or a
//! worker) took from an outbox, what becomes of one that does not go out,
//! and the state a worker and the publisher share on the publish link.
//!
//! **The direct write.** When the publisher has nothing on its way on a
//! plain TCP link to one Redis (`publish_link`), a worker that queues the
//! first records of a batch writes the `PUBLISH` itself, without waiting,
//! as a sender writes to an idle local recipient: the background thread is
//! not woken to send it, only (later) to read Redis's answer. The rules:
//! - a worker writes only while [`Flight::idle`] is set, under the
//!   [`Flight`] lock: one writer at a time, and the publisher's own writes
//!   never interleave with a worker's. Workers may write several batches
//!   so (up to the publisher's depth) before the publisher has read the
//!   first one's answer; a worker that leaves a batch unwritten, or
//!   written in part, clears `idle`;
//! - whatever a worker wrote is in [`Flight::sent`] before the lock is
//!   released, oldest first, so the publisher expects the answers in
//!   order; what it took and could not write is in [`Flight::unsent`],
//!   and the end of a command it could not finish in [`Flight::rest`],
//!   which the publisher writes before anything else;
//! - the publisher sets `idle` only while it waits with nothing on its
//!   way, and takes everything above into its own flight when it wakes
//!   (an answer arriving wakes it: it waits for the link to be readable).

use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use super::batch::{decode_batch, Record};
use super::outbox::Outbox;
use crate::net::socket::Socket;
use crate::sanitize::Escaped;
use crate::server::mailbox::flush_all;
use crate::server::registry::Registry;
use crate::wire::texts::{Code, ErrorText};

/// A batch taken from an outbox.
pub(super) struct Taken {
    pub(super) node: Arc<str>,
    pub(super) batch: Vec<u8>,
    pub(super) seq: u64,
    pub(super) wants_ack: bool,
    pub(super) outbox: Arc<Outbox>,
}

impl Taken {
    /// The batch did not go out: its senders are told.
    pub(super) fn lost(self, registry: &Registry) {
        let bytes = self.batch.len();
        self.outbox
            .acks
            .published(self.seq, bytes, false, self.wants_ack);
        refuse_batch(registry, &self.batch);
    }
}

/// What a worker and the publisher share on the publish link (see the
/// module docs).
#[derive(Default)]
pub(super) struct Flight {
    /// The link's socket, while the publisher runs on a plain TCP link.
    pub(super) socket: Option<Arc<Socket>>,
    /// The publisher waits with nothing on its way: a worker may write.
    pub(super) idle: bool,
    /// Batches a worker wrote, oldest first, each with when it was
    /// written.
    pub(super) sent: Vec<(Taken, Instant)>,
    /// Batches a worker took and did not write (the socket was full).
    pub(super) unsent: Vec<Taken>,
    /// The end of the last command a worker began and could not finish.
    pub(super) rest: Vec<u8>,
    /// Where a worker puts a command's head together (reused).
    pub(super) head: Vec<u8>,
}

impl Flight {
    /// The link is gone (or the publisher stopped): no worker writes any
    /// more, and what was written or taken and not handed to the
    /// publisher is refused to its senders.
    pub(super) fn ground(&mut self, registry: &Registry) {
        self.socket = None;
        self.idle = false;
        self.rest.clear();
        for (taken, _) in self.sent.drain(..) {
            taken.lost(registry);
        }
        for taken in self.unsent.drain(..) {
            taken.lost(registry);
        }
    }
}

/// How much of a command a worker's write put on the link.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wrote {
    /// All of it.
    Whole,
    /// Its start: the rest is in [`Flight::rest`], for the publisher.
    Begun,
    /// None of it (the socket was full, or failed).
    Nothing,
}

impl Flight {
    /// Writes one command, `parts` one after the other, to `socket`
    /// without waiting; what the socket does not take of a command it
    /// began goes to [`Flight::rest`].
    pub(super) fn write_command<const N: usize>(
        &mut self,
        socket: &TcpStream,
        parts: [&[u8]; N],
    ) -> Wrote {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let written = write_now(socket, parts).unwrap_or(0);
        if written == 0 && total > 0 {
            return Wrote::Nothing;
        }
        if written == total {
            return Wrote::Whole;
        }
        put_rest(&mut self.rest, &parts, written);
        Wrote::Begun
    }
}

/// Puts into `out` what follows the first `written` bytes of `parts`
/// taken one after the other.
fn put_rest(out: &mut Vec<u8>, parts: &[&[u8]], written: usize) {
    let mut skip = written;
    for part in parts {
        let from = skip.min(part.len());
        out.extend_from_slice(&part[from..]);
        skip -= from;
    }
}

/// Writes as much of `slices` to `socket` as it takes now, without
/// waiting: the bytes written (fewer than all when the socket is full or
/// failed; an error only when nothing was).
fn write_now<const N: usize>(socket: &TcpStream, slices: [&[u8]; N]) -> io::Result<usize> {
    let mut slices = slices.map(IoSlice::new);
    let mut rest = &mut slices[..];
    let mut written = 0;
    while !rest.is_empty() {
        let mut socket = socket;
        match socket.write_vectored(rest) {
            Ok(0) => break,
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if written > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Tells the senders without receipts of the messages in a batch that
/// could not be published that they were not delivered (those with
/// receipts hear it as REFUSED, through the ticket their router holds).
pub(super) fn refuse_batch(registry: &Registry, batch: &[u8]) {
    let Some(batch) = decode_batch(batch) else {
        return;
    };
    let mut touched = Vec::new();
    for (_, record) in batch.records {
        let Record::Message {
            to,
            from,
            receipts: false,
            ..
        } = record
        else {
            continue;
        };
        let Some(sender) = registry.get(from) else {
            continue;
        };
        let error = ErrorText::new(Code::Unreachable, Escaped(to));
        let frame = sender.wire().error_frame(&error);
        if let Ok(true) = sender
            .outbound()
            .try_push_deferred(frame.len(), |out| out.extend_from_slice(&frame))
        {
            touched.push(sender);
        }
    }
    flush_all(&mut touched);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_does_not_wait_takes_what_the_socket_takes_and_says_how_much() {
        let (ours, theirs) = crate::runtime::loopback_pair();
        ours.set_nonblocking(true).unwrap();
        let written = write_now(&ours, [b"*3\r\n", b"", b"PUBLISH"]).unwrap();
        assert_eq!(written, 11);
        // Nobody reads: the socket fills, and a write stops short (or,
        // full to the byte, takes nothing and says so), never waits.
        let big = vec![b'x'; 1 << 20];
        let mut stopped_short = false;
        for _ in 0..1024 {
            match write_now(&ours, [&big]) {
                Ok(n) if n == big.len() => {}
                Ok(_) => stopped_short = true,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    stopped_short = true;
                }
            }
            if stopped_short {
                break;
            }
        }
        assert!(stopped_short, "a socket that never fills");
        drop(theirs);
    }

    #[test]
    fn a_command_the_socket_takes_in_part_leaves_exactly_its_end_for_the_publisher() {
        let parts: [&[u8]; 5] = [b"*3\r\n$7\r\nPUBLISH\r\n", b"", b"batch", b"tag", b"\r\n"];
        let command = parts.concat();
        for written in 0..=command.len() {
            let mut rest = Vec::new();
            put_rest(&mut rest, &parts, written);
            assert_eq!(rest, &command[written..], "after {written} bytes");
        }
    }

    #[test]
    fn a_command_to_a_full_socket_is_left_whole_or_in_part_never_lost() {
        let (ours, theirs) = crate::runtime::loopback_pair();
        ours.set_nonblocking(true).unwrap();
        let mut flight = Flight::default();
        let parts: [&[u8]; 2] = [b"PUBLISH ", b"x"];
        assert_eq!(flight.write_command(&ours, parts), Wrote::Whole);
        let filler = vec![0u8; 64 << 10];
        while matches!(write_now(&ours, [&filler]), Ok(n) if n > 0) {}
        let big = vec![b'y'; 1 << 20];
        match flight.write_command(&ours, [b"PUBLISH ", &big]) {
            Wrote::Whole => panic!("a full socket took a megabyte"),
            Wrote::Begun => assert!(!flight.rest.is_empty() && flight.rest.len() <= big.len()),
            Wrote::Nothing => assert!(flight.rest.is_empty()),
        }
        drop(theirs);
    }
}
