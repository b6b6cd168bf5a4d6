//! The cross-node side of a sender's routing: the kept route (a message
//! to the same user on another node as the last, without a lookup), the
//! path that hands a message to another node's outbox, waiting when it
//! must, and the receipts of messages sent there, once their batches
//! settle. Reached only on a cluster, and its waiting only boxed, so that
//! a single node's sessions carry none of its state; what it remembers
//! between messages is [`super::cross_node::CrossNode`].

use std::sync::Arc;
use std::time::Instant;

use super::{Router, SenderClosed};
use crate::sanitize::Escaped;
use crate::server::cluster::{Cluster, Forward};
use crate::server::registry::same_name;
use crate::wire::texts::{Code, ErrorText};
use crate::wire::v1;

/// How long a sender with receipts waits for a batch sent to another node
/// to be settled (acknowledged by that node, or known lost) before its
/// messages are reported as not delivered (they may still be: never lost
/// silently). Redis failing settles them sooner; this bounds a receiving
/// node that is alive but far behind, and stays under the client's
/// default `--drain-timeout` (2 s of silence between receipts).
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

impl Router<'_> {
    /// Hands a message for `to`, held on `node`, to that node of `cluster`: at once if
    /// its outbox has room and no pause holds it, else waiting up to the
    /// slow-consumer timeout; refused to the sender if it cannot go. The
    /// route found is kept while the registry stays at `generation`.
    pub(super) async fn route_across(
        &mut self,
        cluster: &Cluster,
        node: Arc<str>,
        to: &[u8],
        content: &[u8],
        generation: u64,
    ) -> Result<(), SenderClosed> {
        // What this sender staged goes first: it was sent first.
        self.hand_on_staged().await?;
        let me = self.me.name().as_bytes();
        let patience = self.shared.config.slow_consumer_timeout;
        let receipts = self.receipts;
        let route = cluster.route(&node, to, generation);
        let sent = route
            .as_ref()
            .map(|route| cluster.forward_on(route, me, content, receipts));
        let forwarded = match sent {
            None => Err(Forward::Unreachable),
            Some(Err(None)) => {
                self.flush();
                cluster
                    .forward(&node, to, me, content, receipts, patience)
                    .await
                    .map(Some)
            }
            Some(done) => done.map_err(|e| e.unwrap_or(Forward::Unreachable)),
        };
        let error = match forwarded {
            Ok(ticket) => {
                let cross = self.cross.get_or_insert_with(Box::default);
                if let Some(ticket) = ticket.filter(|_| self.receipts) {
                    cross.add(self.ordinal, to, ticket);
                }
                cross.route = route;
                return Ok(());
            }
            Err(Forward::Unreachable) => Code::Unreachable,
            Err(Forward::NotReading) => Code::NotReading,
        };
        drop(node);
        self.refuse(&ErrorText::new(error, Escaped(to))).await
    }

    /// Sends a message to the user on another node the last message went
    /// to, while nobody logged in or out anywhere: no lookup at all. True
    /// if it went (or was staged); false if something stands in the way
    /// (no room, a pause, Redis away) or there is no such route, and the
    /// full path waits or refuses. Inline: the path of almost every
    /// message across nodes.
    #[inline]
    pub(super) fn send_on_kept_route(&mut self, to: &[u8], content: &[u8]) -> bool {
        let (Some(cluster), Some(cross)) = (&self.shared.cluster, &mut self.cross) else {
            return false;
        };
        let Some(route) = &cross.route else {
            return false;
        };
        if !same_name(&route.to, to) || route.generation != self.shared.registry.generation() {
            return false;
        }
        let me = self.me.name().as_bytes();
        if !self.receipts && cluster.stages_for(route) {
            // Into the outbox with the rest of this read batch's, under
            // one lock.
            let staged = &mut cross.staged;
            return cluster.stage(route, content, staged)
                || (cluster.hand_on(route, me, staged, false).is_ok()
                    && cluster.stage(route, content, staged));
        }
        // With receipts, or to a node that does not read series (nothing
        // is staged for it then): a record of its own.
        match cluster.forward_on(route, me, content, self.receipts) {
            Ok(ticket) => {
                if let Some(ticket) = ticket {
                    cross.add(self.ordinal, to, ticket);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Hands the messages this sender staged for another node to its
    /// outbox if that can be done now (or whatever the room, `force`d):
    /// `true` when none are left staged.
    pub(super) fn hand_on_staged_now(&mut self, force: bool) -> bool {
        let (Some(cluster), Some(cross)) = (&self.shared.cluster, &mut self.cross) else {
            return true;
        };
        let me = self.me.name().as_bytes();
        match &cross.route {
            Some(route) => cluster.hand_on(route, me, &mut cross.staged, force).is_ok(),
            None => cross.staged.is_empty(),
        }
    }

    /// Hands the messages this sender staged for another node to its
    /// outbox, waiting up to the slow-consumer timeout for room; refuses
    /// each of them to the sender if they cannot go.
    pub(super) async fn hand_on_staged(&mut self) -> Result<(), SenderClosed> {
        if self.hand_on_staged_now(false) {
            return Ok(());
        }
        // Write out what this batch routed so far before waiting.
        self.flush();
        let shared = self.shared;
        let (Some(cluster), Some(cross)) = (&shared.cluster, &mut self.cross) else {
            return Ok(());
        };
        let Some(route) = &cross.route else {
            return Ok(());
        };
        let patience = shared.config.slow_consumer_timeout;
        let me = self.me.name().as_bytes();
        let error = match cluster
            .hand_on_waiting(route, me, &mut cross.staged, patience)
            .await
        {
            Ok(()) => return Ok(()),
            Err(Forward::Unreachable) => Code::Unreachable,
            Err(Forward::NotReading) => Code::NotReading,
        };
        let (to, count) = (route.to.clone(), cross.staged.count());
        cross.staged.clear();
        for _ in 0..count {
            self.refuse(&ErrorText::new(error, Escaped(&to))).await?;
        }
        Ok(())
    }

    /// True when messages sent to other nodes wait for their batches to
    /// settle. [`Router::confirm_forwarded`] is then awaited boxed: waiting
    /// on other nodes is rare, and its state must not grow every session's
    /// future (an idle connection's memory).
    pub(super) fn has_unconfirmed(&self) -> bool {
        self.cross.as_ref().is_some_and(|u| !u.messages.is_empty())
    }

    /// Waits until Redis acknowledged (or failed) the batches of the
    /// messages sent to other nodes since the last check, and reports the
    /// ones not published as REFUSED, each after an ACCEPTED for what came
    /// before it.
    pub(super) async fn confirm_forwarded(&mut self) -> Result<(), SenderClosed> {
        let Some(mut unconfirmed) = self.cross.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + CONFIRM_WAIT;
        let mut settled = Vec::with_capacity(unconfirmed.tickets.len());
        for ticket in unconfirmed.tickets.drain(..) {
            settled.push(ticket.settled(deadline).await);
        }
        let mut frames = Vec::new();
        for (ordinal, batch, index, name) in unconfirmed.messages.drain(..) {
            let error = match settled[batch].refusal(index) {
                None => continue,
                Some(Some(error)) => error.clone(),
                Some(None) => ErrorText::new(Code::Unreachable, Escaped(&unconfirmed.names[name])),
            };
            if ordinal - 1 > self.accounted {
                v1::encode_accepted(ordinal - 1, &mut frames);
            }
            self.shared.stats.refused(error.code());
            let code = self.me.wire().code_of(&error);
            v1::encode_refused(ordinal, code, error.text(), &mut frames);
            self.accounted = ordinal;
        }
        unconfirmed.names.clear();
        self.cross = Some(unconfirmed);
        if frames.is_empty() {
            return Ok(());
        }
        self.reply(&frames).await
    }
}
