//! The store's side of a sender's routing (`--store`): a message to a
//! registered name goes through its owner's inbox (logged, queued to the
//! devices that read it live, or kept for later), a registered sender's
//! messages are logged as sent, and messages kept for later are reported
//! once the store has committed them: STORED (or, to a client that did
//! not ask for it, covered by ACCEPTED), or refused if the commit failed.
//! Reached only with `--store`, and boxed, so that sessions of a server
//! without a store carry none of its state.

use std::sync::Arc;

use super::receipts::Receipts;
use super::{Router, SenderClosed, ACK_EVERY};
use crate::sanitize::Escaped;
use crate::server::inbox::{Inbox, Inboxes};
use crate::store::now_ms;
use crate::wire::texts::{Code, ErrorText};
use crate::wire::v1;

/// The most bytes of entries one HISTORY answer carries.
const HISTORY_PAGE_BYTES: usize = 1 << 20;

/// What a sender's router remembers for the store.
#[derive(Default)]
pub(super) struct StoreRoute {
    /// Messages kept for later and not reported yet: ordinal, id, and
    /// the recipient's inbox (for its name).
    pending: Vec<(u64, u64, Arc<Inbox>)>,
    /// The sender's own inbox, if its name is registered (looked up once).
    mine: Option<Option<Arc<Inbox>>>,
    /// The previous recipient and its inbox (`None`: not registered).
    last: Option<RecipientInbox>,
    /// The client asked for STORED.
    pub(super) stored_receipts: bool,
    /// Per conversation asked for (`""`: all), the oldest id HISTORY
    /// answered with on this connection: a request with `before` 0 goes
    /// on from there, so pages asked for back to back need no answer in
    /// between.
    history_oldest: std::collections::HashMap<Box<[u8]>, u64>,
    /// Across nodes, what the logs in Redis need.
    pub(super) logged: super::logged::LogRoute,
}

/// A recipient's name and its inbox, if it is registered, as of a version
/// of the accounts.
type RecipientInbox = (Box<[u8]>, Option<Arc<Inbox>>, u64);

/// Where a message to a possibly registered name went.
pub(super) enum ToInbox {
    /// Not a registered name: routed as without a store.
    NotRegistered,
    /// Logged; a session of the recipient that is not fed from its inbox
    /// takes it the usual way.
    Plain,
    /// Logged, and queued to a device or kept for later.
    Done,
    /// The store cannot take it.
    Unavailable,
}

impl Router<'_> {
    /// Logs a message to `to`, if `to` is a registered name, and queues
    /// it for `to`'s devices that read their inbox.
    pub(super) fn route_to_inbox(
        &mut self,
        inboxes: &Inboxes,
        to: &[u8],
        content: &[u8],
    ) -> ToInbox {
        let route = self.store.get_or_insert_with(Box::default);
        // Registered or not, until the accounts change.
        let version = inboxes.accounts_version();
        let inbox = match &route.last {
            Some((name, inbox, seen)) if **name == *to && *seen == version => inbox.clone(),
            _ => {
                let inbox = inboxes.get(to);
                route.last = Some((to.into(), inbox.clone(), version));
                inbox
            }
        };
        let Some(inbox) = inbox else {
            return ToInbox::NotRegistered;
        };
        let plain = self.lookup(to).is_some_and(|session| !session.is_inbox());
        let ts = now_ms();
        let me = self.me.name().as_bytes();
        let logged = inbox.deliver(inboxes.store(), ts, me, content, plain, &mut self.to_flush);
        let Ok(logged) = logged else {
            return ToInbox::Unavailable;
        };
        if plain {
            return ToInbox::Plain;
        }
        if !logged.live {
            let ordinal = self.ordinal;
            if let Some(route) = &mut self.store {
                route.pending.push((ordinal, logged.id, inbox));
            }
        }
        self.log_sent_at(inboxes, ts, to, content);
        ToInbox::Done
    }

    /// Logs a message the sender sent to `to` in the sender's own log, if
    /// its name is registered, for its other devices and its history.
    #[inline(never)]
    pub(super) fn log_sent(&mut self, inboxes: &Inboxes, to: &[u8], content: &[u8]) {
        self.log_sent_at(inboxes, now_ms(), to, content);
    }

    fn log_sent_at(&mut self, inboxes: &Inboxes, ts: u64, to: &[u8], content: &[u8]) {
        let route = self.store.get_or_insert_with(Box::default);
        let mine = route
            .mine
            .get_or_insert_with(|| inboxes.get(self.me.name().as_bytes()));
        if let Some(mine) = mine {
            // A copy the store cannot take now is missing from history and
            // the other devices; the message itself went.
            let _ = mine.log_sent(
                inboxes.store(),
                ts,
                self.me,
                to,
                content,
                &mut self.to_flush,
            );
        }
    }

    /// Answers HISTORY: up to `max` entries of the sender's log before id
    /// `before` (0: before the previous page of that conversation on this
    /// connection, or the newest), with `peer` only unless it is empty,
    /// then HISTORY-END with how many came. A page stops short of
    /// [`HISTORY_PAGE_BYTES`]; the client pages on from the oldest it got.
    ///
    /// Boxed and out of line: the reading loop that awaits it is the hot
    /// path of every message and carries no room for this.
    #[inline(never)]
    pub(crate) fn history<'b>(
        &'b mut self,
        peer: &'b [u8],
        before: u64,
        max: u16,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SenderClosed>> + Send + 'b>>
    {
        Box::pin(self.history_page(peer, before, max))
    }

    async fn history_page(
        &mut self,
        peer: &[u8],
        before: u64,
        max: u16,
    ) -> Result<(), SenderClosed> {
        let owner: Box<str> = self.me.name().into();
        let route = self.store.get_or_insert_with(Box::default);
        let before = match before {
            0 => route.history_oldest.get(peer).copied().unwrap_or(u64::MAX),
            before => before,
        };
        let conversation: Box<[u8]> = peer.into();
        let peer = (!peer.is_empty()).then(|| String::from_utf8_lossy(peer).into_owned());
        let max = usize::from(max.min(v1::MAX_HISTORY_PAGE));
        // A log that cannot be read answers an empty page.
        let page = if let Some(logs) = &self.shared.stream_inboxes {
            let read = logs
                .cluster()
                .log_before(&owner, peer.as_deref(), before, max);
            read.await.unwrap_or_default()
        } else if let Some(inboxes) = &self.shared.inboxes {
            let store = Arc::clone(inboxes.store());
            let read = smol::unblock(move || store.before(&owner, peer.as_deref(), before, max));
            read.await.unwrap_or_default()
        } else {
            return Ok(());
        };
        let mut frames = Vec::new();
        let mut sent = 0;
        // Newest first within the byte budget, then oldest first on the
        // wire, as the log reads.
        let wire = self.me.wire();
        let mut from = page.len();
        let mut bytes = 0;
        while from > 0 {
            let entry = &page[from - 1];
            bytes += v1::entry_len(entry.peer.as_bytes(), wire.shown(&entry.content));
            if bytes > HISTORY_PAGE_BYTES && from < page.len() {
                break;
            }
            from -= 1;
        }
        for entry in &page[from..] {
            v1::encode_history_entry(
                entry.id,
                entry.ts_ms,
                entry.direction.wire_byte(),
                entry.peer.as_bytes(),
                wire.shown(&entry.content),
                &mut frames,
            );
            sent += 1;
        }
        v1::encode_history_end(sent, &mut frames);
        if let (Some(oldest), Some(route)) = (page.get(from), &mut self.store) {
            route.history_oldest.insert(conversation, oldest.id);
        }
        self.reply(&frames).await
    }

    /// True if messages kept for later wait to be reported; `unaccounted`
    /// and `idle` as in [`Router::finish_batch`].
    pub(super) fn stored_to_settle(&self, idle: bool, unaccounted: u64) -> bool {
        self.store.as_ref().is_some_and(|route| {
            let pending = route.pending.len() + route.logged.pending_len();
            pending > 0 && (idle || unaccounted >= ACK_EVERY || pending as u64 >= ACK_EVERY)
        })
    }

    /// Waits until the store has dealt with the messages kept for later
    /// since the last report, then reports them in order: STORED for those
    /// committed (to a client that asked; for others the next ACCEPTED
    /// covers them), REFUSED (or an error frame) for those that were not.
    pub(super) async fn settle_stored(&mut self) -> Result<(), SenderClosed> {
        if self
            .store
            .as_ref()
            .is_some_and(|route| route.logged.has_pending())
        {
            return self.settle_logged().await;
        }
        let (Some(inboxes), Some(route)) = (&self.shared.inboxes, &mut self.store) else {
            return Ok(());
        };
        let Some(&(_, last_id, _)) = route.pending.last() else {
            return Ok(());
        };
        let store = inboxes.store();
        store.wait_done(last_id).await;
        let stored_receipts = route.stored_receipts && self.receipts;
        let mut receipts = Receipts::new(self.accounted, self.receipts, stored_receipts);
        for (ordinal, id, inbox) in route.pending.drain(..) {
            if !store.failed(id) {
                receipts.stored(ordinal);
                continue;
            }
            let error = ErrorText::new(Code::StoreUnavailable, Escaped(inbox.name().as_bytes()));
            self.shared.stats.refused(error.code());
            receipts.refused(ordinal, self.me.wire(), &error);
        }
        let (accounted, frames) = receipts.finish();
        self.accounted = accounted;
        if frames.is_empty() {
            return Ok(());
        }
        self.reply(&frames).await
    }
}
