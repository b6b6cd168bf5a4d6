//! The inboxes of registered users (`--store`): every message to or from
//! a registered name goes into its owner's log, and each of the owner's
//! devices that asked for `inbox` is fed from it.
//!
//! # Live or catching up, without gaps or duplicates
//! A device is either *live* (new entries are pushed into its queue as
//! they are logged) or *catching up* (its feeder, [`feed`], reads the
//! committed log after the device's cursor and queues that). Both happen
//! under the inbox's lock, which is also where each entry of the log gets
//! its id ([`Inbox::deliver`]): so a device goes live only when its feeder
//! has queued every entry the store has dealt with and no entry of the
//! owner is newer than that ([`Inbox::try_go_live`]); from then on every
//! entry is pushed to it, in id order, by whoever logs it. A live device
//! whose queue is full is not a slow consumer: it falls back to catching
//! up, at its own pace, from the entry that did not fit.
//!
//! # Execution contexts
//! `deliver` runs on the sender's worker (its router) and never waits;
//! a device's feeder is part of the device's own connection task and
//! reads the store through `smol::unblock` (the store's reads block).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use event_listener::{listener, Event};
use tracing::warn;

use super::accounts::Accounts;
use super::mailbox::Mailbox;
use super::outbound::PushError;
use super::stats::Hot;
use crate::store::{Direction, Entry, Store, Unavailable};
use crate::wire::v1;

/// Entries read from the store per page while catching up.
const PAGE: usize = 256;

/// Every registered user's inbox, made on first use.
pub(crate) struct Inboxes {
    store: Arc<Store>,
    accounts: Arc<Accounts>,
    users: Mutex<HashMap<Box<str>, Arc<Inbox>>>,
}

impl Inboxes {
    pub(crate) fn new(store: Arc<Store>, accounts: Arc<Accounts>) -> Self {
        Inboxes {
            store,
            accounts,
            users: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The accounts' version (see [`Accounts::version`]): an answer of
    /// [`Inboxes::get`] holds while it stays the same.
    pub(crate) fn accounts_version(&self) -> u64 {
        self.accounts.version()
    }

    /// The inbox of `name`, if it is a registered name now. Kept for the
    /// server's life once made (at most one per account): every entry of
    /// a log must pass through the one inbox that numbers it.
    pub(crate) fn get(&self, name: &[u8]) -> Option<Arc<Inbox>> {
        let name = std::str::from_utf8(name).ok()?;
        self.accounts.table().hash_of(name)?;
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inbox) = users.get(name) {
            return Some(Arc::clone(inbox));
        }
        let inbox = Arc::new(Inbox {
            name: name.into(),
            state: Mutex::new(InboxState::default()),
        });
        users.insert(name.into(), Arc::clone(&inbox));
        Some(inbox)
    }
}

/// One registered user's inbox.
pub(crate) struct Inbox {
    name: Box<str>,
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    /// The id of the newest entry logged through this inbox.
    last_id: u64,
    /// The newest id a device that left had been sent.
    mark: u64,
    devices: Vec<Device>,
}

struct Device {
    mailbox: Arc<Mailbox>,
    live: bool,
    /// The id of the newest entry queued for this device.
    sent_up_to: u64,
    /// Wakes the device's feeder when it falls behind.
    behind: Arc<Event>,
}

/// Where a logged message went.
pub(crate) struct Logged {
    /// Its id in the recipient's log.
    pub(crate) id: u64,
    /// Queued for at least one of the recipient's devices.
    pub(crate) live: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Logs a message from `from` to this inbox's owner and queues it for
    /// every live device; queues that need a write go into `flush`.
    /// `elsewhere`: a session of the owner not fed from the inbox takes it
    /// too (it is logged as received, not stored).
    pub(crate) fn deliver(
        &self,
        store: &Store,
        ts_ms: u64,
        from: &[u8],
        content: &[u8],
        elsewhere: bool,
        flush: &mut Vec<Arc<Mailbox>>,
    ) -> Result<Logged, Unavailable> {
        let mut state = self.lock();
        let live = elsewhere || state.devices.iter().any(|d| d.live);
        let direction = if live {
            Direction::Received
        } else {
            Direction::Stored
        };
        let id = store.append(&self.name, ts_ms, direction, from, content)?;
        state.last_id = id;
        let queued = push_live(&mut state, None, id, ts_ms, direction, from, content, flush);
        Ok(Logged {
            id,
            live: queued || elsewhere,
        })
    }

    /// Logs a copy of a message the owner sent to `to` from the device
    /// `sender`, and queues it for the owner's other live devices.
    pub(crate) fn log_sent(
        &self,
        store: &Store,
        ts_ms: u64,
        sender: &Arc<Mailbox>,
        to: &[u8],
        content: &[u8],
        flush: &mut Vec<Arc<Mailbox>>,
    ) -> Result<(), Unavailable> {
        let mut state = self.lock();
        let id = store.append(&self.name, ts_ms, Direction::Sent, to, content)?;
        state.last_id = id;
        push_live(
            &mut state,
            Some(sender),
            id,
            ts_ms,
            Direction::Sent,
            to,
            content,
            flush,
        );
        Ok(())
    }

    /// Adds a device, catching up; its feeder is woken through the event.
    fn attach(&self, mailbox: &Arc<Mailbox>, cursor: u64) -> Arc<Event> {
        let behind = Arc::new(Event::new());
        self.lock().devices.push(Device {
            mailbox: Arc::clone(mailbox),
            live: false,
            sent_up_to: cursor,
            behind: Arc::clone(&behind),
        });
        behind
    }

    /// Makes the device live if its feeder, having queued everything up
    /// to `cursor` and found nothing more up to `done`, has caught up with
    /// the log (see the module doc).
    /// It then queues CAUGHT-UP (saying `replayed` entries came before),
    /// under the lock, so that no live entry can come before it.
    fn try_go_live(&self, mailbox: &Arc<Mailbox>, cursor: u64, done: u64, replayed: u64) -> bool {
        let mut state = self.lock();
        if state.last_id > done {
            return false;
        }
        if let Some(device) = find(&mut state.devices, mailbox) {
            device.live = true;
            device.sent_up_to = cursor;
        }
        let mut frame = Vec::with_capacity(v1::MESSAGE_HEADER_LEN + 8);
        v1::encode_caught_up(replayed, &mut frame);
        // A few bytes past the bound at most: the replay waited for room.
        let _ = mailbox.outbound().push_unbounded(&frame);
        true
    }

    /// A device that fell behind: where its feeder goes on from. `None`
    /// while it is live.
    fn behind(&self, mailbox: &Arc<Mailbox>) -> Option<u64> {
        let mut state = self.lock();
        let device = find(&mut state.devices, mailbox)?;
        (!device.live).then_some(device.sent_up_to)
    }

    fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    /// The newest id a device that left (since the server started) had
    /// been sent.
    fn mark(&self) -> u64 {
        self.lock().mark
    }

    /// Removes a device; the owner's mark, moved on to the newest id it
    /// was sent.
    fn detach(&self, mailbox: &Arc<Mailbox>) -> Option<u64> {
        let mut state = self.lock();
        let at = state
            .devices
            .iter()
            .position(|d| Arc::ptr_eq(&d.mailbox, mailbox))?;
        let sent_up_to = state.devices.swap_remove(at).sent_up_to;
        state.mark = state.mark.max(sent_up_to);
        Some(state.mark)
    }
}

fn find<'a>(devices: &'a mut [Device], mailbox: &Arc<Mailbox>) -> Option<&'a mut Device> {
    devices
        .iter_mut()
        .find(|d| Arc::ptr_eq(&d.mailbox, mailbox))
}

/// Queues an entry for every live device but `except`; true if one took
/// it. A device whose queue is full falls behind (its feeder is woken).
#[allow(clippy::too_many_arguments)]
fn push_live(
    state: &mut InboxState,
    except: Option<&Arc<Mailbox>>,
    id: u64,
    ts_ms: u64,
    direction: Direction,
    peer: &[u8],
    content: &[u8],
    flush: &mut Vec<Arc<Mailbox>>,
) -> bool {
    let mut queued = false;
    for device in state.devices.iter_mut().filter(|d| d.live) {
        if except.is_some_and(|except| Arc::ptr_eq(except, &device.mailbox)) {
            continue;
        }
        let content = device.mailbox.wire().shown(content);
        let len = v1::entry_len(peer, content);
        let encode = |out: &mut Vec<u8>| {
            v1::encode_entry(id, ts_ms, direction.wire_byte(), peer, content, out)
        };
        match device.mailbox.outbound().try_push_deferred(len, encode) {
            Ok(needs_write) => {
                device.sent_up_to = id;
                queued = true;
                if needs_write {
                    flush.push(Arc::clone(&device.mailbox));
                }
            }
            Err(PushError::Full) => {
                device.live = false;
                device.behind.notify(1);
            }
            // Its feeder detaches it.
            Err(PushError::Closed) => device.live = false,
        }
    }
    queued
}

/// Where a device's replay of the log starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    /// After this id: the device's cursor (`after=`).
    After(u64),
    /// With what was logged from this time on (`after_time=`, ms).
    AfterTime(u64),
    /// After the owner's mark: what no device of the owner was sent.
    Mark,
}

/// Feeds one device of `inbox` from the log: catches up from `start`,
/// goes live, and catches up again whenever it falls behind. Returns when
/// the session closes, or when a slow device is disconnected.
pub(crate) async fn feed(
    inboxes: &Inboxes,
    inbox: Arc<Inbox>,
    mailbox: &Arc<Mailbox>,
    start: Start,
    patience: std::time::Duration,
) {
    let store = Arc::clone(inboxes.store());
    let mut cursor = match start {
        Start::After(cursor) => cursor,
        Start::AfterTime(ms) => {
            let (store, name) = (Arc::clone(&store), inbox.name.clone());
            smol::unblock(move || store.last_before(&name, ms))
                .await
                .unwrap_or(0)
        }
        Start::Mark => {
            let (store, name) = (Arc::clone(&store), inbox.name.clone());
            let kept = smol::unblock(move || store.mark(&name))
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            // A device that left moments ago moved the mark in memory
            // before the store has it on disk.
            kept.max(inbox.mark())
        }
    };
    let behind = inbox.attach(mailbox, cursor);
    let _detach = Detach {
        store: &store,
        inbox: &inbox,
        mailbox,
    };
    loop {
        // Catching up.
        let mut replayed = 0;
        loop {
            let done = store.done();
            let page = {
                let (store, name) = (Arc::clone(&store), inbox.name.clone());
                smol::unblock(move || store.after(&name, cursor, done, PAGE)).await
            };
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    warn!(user = mailbox.name(), "cannot read the store: {e}");
                    mailbox.outbound().close(None);
                    return;
                }
            };
            for entry in &page {
                if !queue_entry(mailbox, entry, patience).await {
                    return;
                }
                cursor = entry.id;
                replayed += 1;
            }
            count_replayed(mailbox, page.len());
            if page.len() == PAGE {
                write_out(mailbox);
                continue;
            }
            let live = inbox.try_go_live(mailbox, cursor, done, replayed);
            write_out(mailbox);
            if live {
                break;
            }
            store.wait_done(inbox.last_id()).await;
        }
        // Live, until it falls behind or closes.
        loop {
            listener!(*behind => fell);
            if let Some(at) = inbox.behind(mailbox) {
                cursor = at;
                break;
            }
            let closed = async {
                mailbox.outbound().wait_closed().await;
                true
            };
            if smol::future::or(
                async {
                    fell.await;
                    false
                },
                closed,
            )
            .await
            {
                return;
            }
        }
    }
}

/// Queues one entry of the log, waiting for room like any sender; false
/// if the session is gone (or was just disconnected as a slow consumer).
pub(super) async fn queue_entry(
    mailbox: &Mailbox,
    entry: &Entry,
    patience: std::time::Duration,
) -> bool {
    let content = mailbox.wire().shown(&entry.content);
    let len = v1::entry_len(entry.peer.as_bytes(), content);
    let encode = |out: &mut Vec<u8>| {
        v1::encode_entry(
            entry.id,
            entry.ts_ms,
            entry.direction.wire_byte(),
            entry.peer.as_bytes(),
            content,
            out,
        )
    };
    queue_encoded(mailbox, len, encode, patience).await
}

/// Queues `len` bytes that `encode` writes, waiting for room for up to
/// `patience`, as [`queue_entry`] does.
pub(super) async fn queue_encoded(
    mailbox: &Mailbox,
    len: usize,
    encode: impl Fn(&mut Vec<u8>) + Copy,
    patience: std::time::Duration,
) -> bool {
    match mailbox.outbound().try_push_deferred(len, encode) {
        // Written at the end of the page.
        Ok(_) => {}
        Err(PushError::Closed) => return false,
        Err(PushError::Full) => {
            write_out(mailbox);
            let deadline = Instant::now() + patience;
            match mailbox.outbound().push(len, deadline, encode).await {
                Ok(()) => {}
                Err(PushError::Closed) => return false,
                Err(PushError::Full) => {
                    mailbox.disconnect_slow(format_args!(
                        "stored messages stayed unread for {patience:?}"
                    ));
                    return false;
                }
            }
        }
    }
    true
}

/// Counts `entries` replayed to `mailbox` from its log: once per page,
/// not per entry.
pub(super) fn count_replayed(mailbox: &Mailbox, entries: usize) {
    let stats = mailbox.outbound().stats();
    stats.add(stats.slot(), Hot::Replayed, entries as u64);
}

/// Writes what is queued for `mailbox`: directly when nobody is writing
/// it, else by waking its writer.
pub(super) fn write_out(mailbox: &Mailbox) {
    match mailbox.connection() {
        Some(connection) => mailbox.outbound().flush_direct(&connection),
        None => mailbox.outbound().wake_writer(),
    }
}

/// Takes a device out of its inbox when its feeder ends, however it ends,
/// and records how far it got as the owner's mark.
struct Detach<'a> {
    store: &'a Store,
    inbox: &'a Inbox,
    mailbox: &'a Arc<Mailbox>,
}

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        if let Some(mark) = self.inbox.detach(self.mailbox) {
            self.store.set_mark(&self.inbox.name, mark);
        }
    }
}
