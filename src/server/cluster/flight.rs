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
//!   [`Flight`] lock, and clears it: one writer at a time, and the
//!   publisher's own writes never interleave with a worker's;
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
    /// Batches a worker wrote, oldest first: each with its length before
    /// the signature and when it was written.
    pub(super) sent: Vec<(Taken, usize, Instant)>,
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
        for (taken, _, _) in self.sent.drain(..) {
            taken.lost(registry);
        }
        for taken in self.unsent.drain(..) {
            taken.lost(registry);
        }
    }
}

/// Writes as much of `slices` to `socket` as it takes now, without
/// waiting: the bytes written (fewer than all when the socket is full or
/// failed; an error only when nothing was).
pub(super) fn write_now(socket: &TcpStream, slices: &[&[u8]]) -> io::Result<usize> {
    let mut slices: Vec<IoSlice<'_>> = slices.iter().map(|s| IoSlice::new(s)).collect();
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
        let written = write_now(&ours, &[b"*3\r\n", b"", b"PUBLISH"]).unwrap();
        assert_eq!(written, 11);
        // Nobody reads: the socket fills, and a write stops short (or,
        // full to the byte, takes nothing and says so), never waits.
        let big = vec![b'x'; 1 << 20];
        let mut stopped_short = false;
        for _ in 0..1024 {
            match write_now(&ours, &[&big]) {
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
}
