//! Registered users' inboxes across nodes (`--cluster` with
//! `--accounts`): each user's log is a Redis Stream that every node
//! appends to and reads from (see `cluster::log`), so a device may log in
//! on any node and find what was sent to it on any other.
//!
//! # Catching up and going live, without gaps or duplicates
//! A device's feeder only ever replays the log after its cursor, in the
//! log's own order: numbers are given out by Redis, contiguous per user,
//! so nothing can slip in behind a cursor. Being live is replaying as soon
//! as the log grows: the node that appended tells the feeders watching
//! the log, here or on the owner's node (see `cluster::watch`), and the
//! feeder reads what is new. A hint lost (an outbox full, Redis away)
//! only delays a line until the feeder's next look, every
//! [`LOOK_EVERY`] or when Redis is reachable again.
//!
//! # Execution contexts
//! The feeder is part of its device's connection task, on the device's
//! worker; its reads go through the cluster's Redis connection, whose
//! driver runs on the server's background thread.

use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt;
use tracing::warn;

use super::accounts::Accounts;
use super::cluster::Cluster;
use super::inbox::{count_replayed, queue_encoded, queue_entry, write_out, Start};
use super::mailbox::Mailbox;
use crate::store::Direction;
use crate::wire::v1;

/// Entries read per page while catching up.
const PAGE: usize = 1000;
/// How often a live feeder looks at its log without a hint.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How long a feeder waits before reading again after Redis failed it.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Registered users' inboxes on the cluster's Redis.
pub(crate) struct StreamInboxes {
    cluster: Arc<Cluster>,
    accounts: Arc<Accounts>,
}

impl StreamInboxes {
    pub(crate) fn new(cluster: Arc<Cluster>, accounts: Arc<Accounts>) -> Self {
        StreamInboxes { cluster, accounts }
    }

    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// True if `name` is a registered name now.
    pub(crate) fn registered(&self, name: &[u8]) -> bool {
        std::str::from_utf8(name).is_ok_and(|name| self.accounts.table().hash_of(name).is_some())
    }

    /// The accounts' version: an answer of [`StreamInboxes::registered`]
    /// holds while it stays the same.
    pub(crate) fn accounts_version(&self) -> u64 {
        self.accounts.version()
    }
}

/// Feeds one device from its owner's log: replays from `start`, sends
/// CAUGHT-UP when it reaches the end, then replays whatever is added.
/// Returns when the session closes, or when a slow device is
/// disconnected.
///
/// A session of a registered name that did not ask for its inbox (`plain`)
/// is fed too, from where the log was when it logged in, with what is
/// sent to the name as plain messages: senders never queue to a
/// registered name directly, wherever its sessions are.
pub(crate) async fn feed(
    inboxes: &StreamInboxes,
    mailbox: &Arc<Mailbox>,
    start: Start,
    patience: Duration,
) {
    let plain = !mailbox.is_inbox();
    let cluster = &inboxes.cluster;
    let owner = mailbox.name();
    let watched = cluster.watch_log(owner);
    let mut leave = Leave {
        cluster: Arc::clone(cluster),
        owner: owner.into(),
        cursor: 0,
        plain,
    };
    leave.cursor = loop {
        let found = match start {
            Start::After(cursor) => Ok(cursor),
            Start::AfterTime(ms) => Ok(cluster.log_before_time(ms)),
            Start::Mark => cluster.log_mark(owner).await,
        };
        match found {
            Ok(cursor) => break cursor,
            Err(_) => {
                if !pause_or_close(mailbox, RETRY_AFTER).await {
                    return;
                }
            }
        }
    };
    let mut replayed: Option<u64> = (!plain).then_some(0);
    loop {
        // Looked at before the read: growth after it wakes the wait below.
        event_listener::listener!(watched.grew => grew);
        let page = match cluster.log_after(owner, leave.cursor, PAGE).await {
            Ok(page) => page,
            Err(_) => {
                warn!(user = owner, "cannot read the log in Redis; trying again");
                if !pause_or_close(mailbox, RETRY_AFTER).await {
                    return;
                }
                continue;
            }
        };
        // What was sent to the session (a plain one is not sent what the
        // name sent elsewhere), for the count.
        let mut shown = 0;
        for entry in &page {
            let skipped = plain && entry.direction == Direction::Sent;
            let queued = match plain {
                false => queue_entry(mailbox, entry, patience).await,
                // What the name sent elsewhere is not for it.
                true if entry.direction == Direction::Sent => true,
                true => {
                    let (wire, name) = (mailbox.wire(), owner.as_bytes());
                    let (peer, content) = (entry.peer.as_bytes(), &entry.content[..]);
                    let len = wire.message_len(name, peer, content);
                    let encode = |out: &mut Vec<u8>| wire.encode_message(name, peer, content, out);
                    queue_encoded(mailbox, len, encode, patience).await
                }
            };
            if !queued {
                return;
            }
            leave.cursor = entry.id;
            if let Some(count) = &mut replayed {
                *count += 1;
            }
            shown += usize::from(!skipped);
        }
        count_replayed(mailbox, shown);
        if page.len() == PAGE {
            write_out(mailbox);
            continue;
        }
        if let Some(count) = replayed.take() {
            let mut frame = Vec::with_capacity(v1::MESSAGE_HEADER_LEN + 8);
            v1::encode_caught_up(count, &mut frame);
            // A few bytes past the bound at most: the replay waited for room.
            let _ = mailbox.outbound().push_unbounded(&frame);
        }
        write_out(mailbox);
        if watched.newest() > leave.cursor {
            continue;
        }
        let closed = async {
            mailbox.outbound().wait_closed().await;
            true
        };
        let woken = async {
            grew.await;
            false
        };
        let looked = async {
            smol::Timer::after(LOOK_EVERY).await;
            false
        };
        if woken.or(closed).or(looked).await {
            return;
        }
    }
}

/// Waits `pause`; false if the session closed meanwhile.
async fn pause_or_close(mailbox: &Mailbox, pause: Duration) -> bool {
    let closed = async {
        mailbox.outbound().wait_closed().await;
        false
    };
    let waited = async {
        smol::Timer::after(pause).await;
        true
    };
    closed.or(waited).await
}

/// A feeder's watch and cursor. However the feeder ends (its session
/// closed, or it was cancelled with its connection's task), the watch
/// ends and how far the device got becomes its owner's mark: where a
/// device that asks for nothing in particular starts.
struct Leave {
    cluster: Arc<Cluster>,
    owner: Box<str>,
    /// The number of the newest entry queued for the device.
    cursor: u64,
    /// A session not fed from its inbox, which moves no mark.
    plain: bool,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.cluster.unwatch_log(&self.owner);
        if self.cursor > 0 && !self.plain {
            let (cluster, owner, cursor) =
                (Arc::clone(&self.cluster), self.owner.clone(), self.cursor);
            // On the background thread, with the Redis drivers: a drop
            // cannot wait.
            crate::net::background::spawn(async move {
                cluster.set_log_mark(&owner, cursor).await;
            })
            .detach();
        }
    }
}
