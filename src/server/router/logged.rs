//! The Redis side of a sender's routing across nodes (`--cluster` with
//! `--accounts`): a message to a registered name is appended to its
//! owner's log on Redis Streams, and reaches the owner's sessions, on
//! whatever node, from there (see `stream_inbox`); never queued to them
//! directly. A registered sender's messages are appended to its own log
//! as sent. The sender hears of each message once Redis has it: STORED
//! for one kept for an owner with no session anywhere (to a client that
//! asked), ACCEPTED for the others, REFUSED (`store-unavailable`) when
//! Redis could not take it.

use super::receipts::Receipts;
use super::{Router, SenderClosed};
use crate::sanitize::Escaped;
use crate::server::cluster::Appended;
use crate::server::stream_inbox::StreamInboxes;
use crate::store::Direction;
use crate::wire::texts::{Code, ErrorText};

/// What a sender's router remembers for the logs in Redis.
#[derive(Default)]
pub(super) struct LogRoute {
    /// Messages handed to the appender and not reported yet: ordinal,
    /// where their outcome will be, and whether they were kept for later
    /// (no session of the owner anywhere).
    pending: Vec<(u64, Appended, bool)>,
    /// Whether the sender's name is registered, as of a version of the
    /// accounts.
    mine: Option<(bool, u64)>,
    /// The previous recipient and whether it is registered, as of a
    /// version of the accounts.
    last: Option<(Box<[u8]>, bool, u64)>,
}

impl LogRoute {
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// Where a message to a possibly registered name went.
pub(super) enum ToLog {
    /// Not a registered name: routed as without the logs.
    NotRegistered,
    /// Appended (or on its way): its receipt comes when Redis has it.
    Appended,
    /// Redis cannot take it now.
    Unavailable,
    /// The appender has no room now (or Redis is away): see
    /// [`Router::route_to_log_waiting`].
    Full,
}

impl Router<'_> {
    /// Appends a message to `to`'s log if `to` is a registered name and
    /// the appender has room now. Synchronous, so that the path of every
    /// message carries no room for waiting (see [`Router::route_to_log_waiting`]).
    pub(super) fn route_to_log(
        &mut self,
        logs: &StreamInboxes,
        to: &[u8],
        content: &[u8],
    ) -> ToLog {
        let version = logs.accounts_version();
        let route = &mut self.store.get_or_insert_with(Box::default).logged;
        let registered = match &route.last {
            Some((name, registered, seen)) if **name == *to && *seen == version => *registered,
            _ => {
                let registered = logs.registered(to);
                route.last = Some((to.into(), registered, version));
                registered
            }
        };
        let (true, Ok(owner)) = (registered, std::str::from_utf8(to)) else {
            return ToLog::NotRegistered;
        };
        let direction = self.log_direction(to);
        match logs
            .cluster()
            .try_log_append(owner, direction, self.me.name().as_bytes(), content)
        {
            Some(appended) => {
                self.appended(logs, appended, direction, to, content);
                ToLog::Appended
            }
            None => ToLog::Full,
        }
    }

    /// [`Router::route_to_log`] for a message that found no room (or Redis
    /// away): waits for room as for a full queue. Boxed and out of line,
    /// like `history`.
    #[inline(never)]
    pub(super) fn route_to_log_waiting<'b>(
        &'b mut self,
        logs: &'b StreamInboxes,
        to: &'b [u8],
        content: &'b [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ToLog> + Send + 'b>> {
        Box::pin(async move {
            let Ok(owner) = std::str::from_utf8(to) else {
                return ToLog::NotRegistered;
            };
            self.flush();
            let direction = self.log_direction(to);
            let patience = self.shared.config.slow_consumer_timeout;
            let me = self.me.name().as_bytes();
            let appended = logs
                .cluster()
                .log_append(owner, direction, me, content, patience)
                .await;
            match appended {
                Ok(appended) => {
                    self.appended(logs, appended, direction, to, content);
                    ToLog::Appended
                }
                Err(_) => ToLog::Unavailable,
            }
        })
    }

    /// Received while a session of `to` is on some node, else stored.
    fn log_direction(&mut self, to: &[u8]) -> Direction {
        match self.lookup(to).is_some() || self.shared.registry.remote_node(to).is_some() {
            true => Direction::Received,
            false => Direction::Stored,
        }
    }

    /// Remembers an appended message for its receipt, and appends the
    /// sender's own copy.
    fn appended(
        &mut self,
        logs: &StreamInboxes,
        appended: Appended,
        direction: Direction,
        to: &[u8],
        content: &[u8],
    ) {
        let ordinal = self.ordinal;
        if let Some(route) = &mut self.store {
            let stored = direction == Direction::Stored;
            route.logged.pending.push((ordinal, appended, stored));
        }
        self.log_sent_to_redis(logs, to, content);
    }

    /// Appends a copy of a message the sender sent to `to` to the sender's
    /// own log, if its name is registered. A copy Redis cannot take now is
    /// missing from history and the other devices; the message itself went.
    pub(super) fn log_sent_to_redis(&mut self, logs: &StreamInboxes, to: &[u8], content: &[u8]) {
        let version = logs.accounts_version();
        let me = self.me.name();
        let route = &mut self.store.get_or_insert_with(Box::default).logged;
        let registered = match route.mine {
            Some((registered, seen)) if seen == version => registered,
            _ => {
                let registered = logs.registered(me.as_bytes());
                route.mine = Some((registered, version));
                registered
            }
        };
        if registered {
            let _ = logs
                .cluster()
                .try_log_append(me, Direction::Sent, to, content);
        }
    }

    /// Waits until Redis has dealt with the messages handed to the
    /// appender since the last report, then reports them in order (see
    /// the module doc).
    pub(super) async fn settle_logged(&mut self) -> Result<(), SenderClosed> {
        let Some(route) = &mut self.store else {
            return Ok(());
        };
        let pending = std::mem::take(&mut route.logged.pending);
        let stored_receipts = route.stored_receipts && self.receipts;
        let mut receipts = Receipts::new(self.accounted, self.receipts, stored_receipts);
        for (ordinal, appended, stored) in pending {
            if appended.settled().await.is_ok() {
                if stored {
                    receipts.stored(ordinal);
                }
                continue;
            }
            let error =
                ErrorText::new(Code::StoreUnavailable, Escaped(appended.owner().as_bytes()));
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
