//! A worker's own write of a batch on the publish link, when the publisher
//! waits with nothing on its way (the rules are in `flight`).

use std::time::Instant;

use super::flight::write_now;
use super::keys::inbox;
use super::publish_link::put_command;
use super::Cluster;

impl Cluster {
    /// Writes the batches queued now to Redis from the calling thread, if
    /// the publisher waits on a plain link with nothing on its way (see
    /// `flight`): `true` when the publisher need not be woken to send them.
    /// Never waits: a batch the socket does not take whole is left to the
    /// publisher.
    pub(super) fn publish_directly(&self) -> bool {
        let Ok(mut shared) = self.flight.try_lock() else {
            return false;
        };
        if !shared.idle {
            return false;
        }
        let Some(socket) = shared.socket.clone() else {
            return false;
        };
        let batches = self.take_batches();
        if batches.is_empty() {
            // Nothing it may take (a window full): the publisher looks
            // again when it is woken.
            return false;
        }
        shared.idle = false;
        let mut head = std::mem::take(&mut shared.head);
        let mut whole = true;
        for taken in batches {
            taken.outbox.room.notify(usize::MAX);
            if !whole {
                shared.unsent.push(taken);
                continue;
            }
            let body = taken.batch.len();
            let tag = self.key.as_ref().map(|key| key.sign(&taken.batch));
            let tag = tag.as_ref().map_or(&[][..], |tag| &tag[..]);
            let channel = inbox(&taken.node);
            put_command(
                &mut head,
                &[b"PUBLISH", channel.as_bytes()],
                Some(body + tag.len()),
            );
            let parts: [&[u8]; 4] = [&head, &taken.batch, tag, b"\r\n"];
            let total: usize = parts.iter().map(|part| part.len()).sum();
            let written = write_now(socket.get_ref(), &parts).unwrap_or(0);
            if written == 0 {
                // Nothing went: the publisher sends it as its own.
                whole = false;
                shared.unsent.push(taken);
                continue;
            }
            if written < total {
                // Begun: the publisher ends it before anything else (or
                // fails the link, and with it this batch).
                whole = false;
                let mut skip = written;
                for part in parts {
                    let from = skip.min(part.len());
                    shared.rest.extend_from_slice(&part[from..]);
                    skip -= from;
                }
            }
            shared.sent.push((taken, body, Instant::now()));
        }
        shared.head = head;
        whole
    }
}
