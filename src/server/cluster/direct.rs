//! A worker's own write of a batch on the publish link, when the publisher
//! waits with nothing on its way (the rules are in `flight`).

use std::time::Instant;

use super::flight::Wrote;
use super::keys::inbox;
use super::publish::PUBLISH_DEPTH;
use super::publish_link::put_publish;
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
        // Up to as many batches as the publisher keeps on their way, their
        // answers not read yet: at a steady trickle the next message must
        // not wait for the background thread to wake for the last one's.
        if !shared.idle || shared.sent.len() >= PUBLISH_DEPTH {
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
            put_publish(&mut head, channel.as_bytes(), body + tag.len());
            match shared.write_command(socket.get_ref(), [&head, &taken.batch, tag, b"\r\n"]) {
                Wrote::Whole => {}
                // Begun: the publisher ends it before anything else (or
                // fails the link, and with it this batch).
                Wrote::Begun => whole = false,
                Wrote::Nothing => {
                    // Nothing went: the publisher sends it as its own.
                    whole = false;
                    shared.unsent.push(taken);
                    continue;
                }
            }
            shared.sent.push((taken, Instant::now()));
        }
        shared.head = head;
        // What a worker left unwritten goes before anything else: the
        // publisher's (woken by the caller) to write.
        shared.idle = whole;
        whole
    }
}
