//! Messages a sender without receipts sends to a user on another node,
//! gathered in the sender's own buffer while its read batch is routed and
//! put into the node's outbox together, under one lock. Every worker's
//! senders share that outbox: taking its lock for each message, the two
//! workers of a flood spent a fifth of the sending node's time passing the
//! lock and the batch's last cache lines back and forth.
//!
//! A sender's staged messages all go to the user its kept route leads to,
//! in order, and are handed on as one series (see `batch`): the names
//! once. They reach the outbox before anything else the sender sends
//! there (the router hands them on before any other path to another node,
//! at the end of each read batch, and before it waits).

use std::time::{Duration, Instant};

use event_listener::listener;

use super::batch::{put_series_head, series_entry_len, series_head_len};
use super::outbox::{Forward, Route, Staged, Unreachable, OUTBOX_BYTES, STAGED_BYTES};
use super::Cluster;

impl Cluster {
    /// Whether messages without receipts to `route`'s node are staged
    /// and handed on as a series: that node reads series (see
    /// `keys::BATCH_FORMAT`). Otherwise each goes as a record of its own
    /// ([`Cluster::forward_on`]).
    pub(crate) fn stages_for(&self, route: &Route) -> bool {
        route.outbox.reads_series()
    }

    /// Stages a message to `route`'s user in `staged`, if nothing stands
    /// in the way now (Redis reachable, the node live, no pause for the
    /// user) and `staged` has room; `false` otherwise, and nothing is
    /// staged. Only for a node that reads series: the caller checked
    /// [`Cluster::stages_for`].
    pub(crate) fn stage(&self, route: &Route, content: &[u8], staged: &mut Staged) -> bool {
        // One message alone is staged whatever its size.
        if (!staged.is_empty() && staged.bytes.len() + series_entry_len(content) > STAGED_BYTES)
            || !self.available()
            || route
                .outbox
                .closed
                .load(std::sync::atomic::Ordering::Relaxed)
            || (self.paused.any() && self.paused.is_paused(&route.to))
        {
            return false;
        }
        staged.push(content);
        true
    }

    /// Hands what `staged` holds, sent by `from`, to `route`'s outbox at
    /// once, if there is room (whatever the room when `force`d: a sender
    /// going away); emptied on success. `Err(None)`: no room (see
    /// [`Cluster::hand_on_waiting`]); `Err(Some)`: it never will go, and
    /// `staged` keeps the messages for their refusal.
    pub(crate) fn hand_on(
        &self,
        route: &Route,
        from: &[u8],
        staged: &mut Staged,
        force: bool,
    ) -> Result<(), Option<Forward>> {
        if staged.is_empty() {
            return Ok(());
        }
        let records = staged.records(&route.to, from);
        let bytes = &staged.bytes;
        self.append(&route.outbox, &route.node, records, force, |out| {
            put_series_head(out, &route.to, from, bytes.len());
            out.extend_from_slice(bytes)
        })
        .map_err(|e| e.map(|Unreachable| Forward::Unreachable))?;
        staged.clear();
        Ok(())
    }

    /// [`Cluster::hand_on`], waiting up to `patience` for room and for a
    /// pause of the user to end. On `Err`, `staged` keeps the messages.
    pub(crate) async fn hand_on_waiting(
        &self,
        route: &Route,
        from: &[u8],
        staged: &mut Staged,
        patience: Duration,
    ) -> Result<(), Forward> {
        let deadline = Instant::now() + patience;
        if !self.paused.wait(&route.to, deadline).await {
            return Err(Forward::NotReading);
        }
        loop {
            match self.hand_on(route, from, staged, false) {
                Ok(()) => return Ok(()),
                Err(Some(why)) => return Err(why),
                Err(None) => {}
            }
            listener!(route.outbox.room => room);
            let len = series_head_len(&route.to, from) + staged.bytes.len();
            if route.outbox.lock().batch.len() + len <= OUTBOX_BYTES {
                continue;
            }
            if crate::runtime::until(deadline, room).await.is_none() || !self.available() {
                return Err(Forward::Unreachable);
            }
        }
    }
}
