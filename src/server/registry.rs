//! Who is online: username → session.
//!
//! The lock is a plain `RwLock` held only for a map operation, never across
//! an `.await`. Readers look recipients up here only on a miss in their own
//! small cache (see `router`), so routing does not contend on it.
//!
//! The registry also tells presence watchers (sessions that asked for
//! `presence` in HELLO) who joins and leaves. Events are queued while the
//! lock is held, so every watcher sees its snapshot first and then each
//! change exactly once, in order. With no watchers this costs nothing.
//!
//! In a cluster (`--cluster`) it also mirrors who is online on the other
//! nodes, name → node, as the cluster module learns it: lookups, `who`,
//! presence and the console see everyone, while only local sessions can be
//! reached directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::mailbox::Mailbox;
use crate::wire::v1;

/// The name is held by another session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("username is taken")]
pub struct NameTaken;

/// Why a device of a registered name was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRefused {
    /// The name is held by a session not fed from its inbox.
    #[error("username is taken")]
    Taken,
    /// The name has `--max-devices` sessions already.
    #[error("too many devices")]
    TooMany,
}

/// The online list.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Inner>,
    /// Bumped by every change (each write lock): a sender that found a
    /// user on another node keeps using what it found while this stays
    /// the same, without a lookup per message.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Logged-in sessions by username.
    sessions: HashMap<Box<str>, Arc<Mailbox>>,
    /// A registered name's further devices (`--store`: sessions fed from
    /// its inbox), beside the one in `sessions`, which stands for the
    /// name: presence, `who` and lookups see one user.
    devices: HashMap<Box<str>, Vec<Arc<Mailbox>>>,
    /// Sessions that receive joined/left events.
    watchers: Vec<Arc<Mailbox>>,
    /// Set at shutdown, when everyone leaving at once is not news.
    quiet: bool,
    /// Users online on other nodes of the cluster: name → node id.
    remote: HashMap<Box<str>, Arc<str>>,
}

impl Inner {
    /// Every name online, here or on another node, sorted.
    fn all_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sessions
            .keys()
            .chain(self.remote.keys())
            .map(|k| k.to_string())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The shared id of `node`, so that its names do not each hold a copy.
    fn node_id(&self, node: &str) -> Arc<str> {
        self.remote
            .values()
            .find(|known| ***known == *node)
            .map_or_else(|| node.into(), Arc::clone)
    }

    /// Queues a PRESENCE event to every watcher, encoded once. A watcher
    /// whose queue is full is not reading at all: it is disconnected as a
    /// slow consumer rather than allowed to grow without bound.
    fn announce(&self, joined: bool, name: &str) {
        if self.watchers.is_empty() || self.quiet {
            return;
        }
        let mut frame = Vec::new();
        if v1::encode_presence(joined, name.as_bytes(), &mut frame).is_err() {
            return;
        }
        for watcher in &self.watchers {
            let pushed = watcher
                .outbound()
                .try_push(frame.len(), |out| out.extend_from_slice(&frame));
            if pushed == Err(super::outbound::PushError::Full) {
                // Its session removes it from the registry as it ends.
                watcher.disconnect_slow(format_args!("presence events not read"));
            }
        }
    }
}

impl Registry {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        let inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Under the lock: a reader that saw the old generation looked up
        // before this change, and will look again.
        self.generation.fetch_add(1, Ordering::Release);
        inner
    }

    /// The registry's generation: it changes whenever anything in it does
    /// (see [`Registry::remote_node`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `session` under its name unless the name is held.
    pub fn insert(&self, session: &Arc<Mailbox>) -> Result<(), NameTaken> {
        let mut inner = self.write();
        if inner.sessions.contains_key(session.name()) {
            return Err(NameTaken);
        }
        inner
            .sessions
            .insert(session.name().into(), Arc::clone(session));
        // A name another node held until its lease ran out is listed
        // already: no news.
        if inner.remote.remove(session.name()).is_none() {
            inner.announce(true, session.name());
        }
        Ok(())
    }

    /// Adds a session fed from its inbox: as [`Registry::insert`] for
    /// the name's first, then as a further device of the name, up to `max`
    /// in all. The name joins with its first device and leaves with its
    /// last. `log_fed`: every session of the name is fed from its log
    /// (across nodes), whether it asked for its inbox or not, so any may
    /// join.
    pub fn insert_device(
        &self,
        session: &Arc<Mailbox>,
        max: usize,
        log_fed: bool,
    ) -> Result<(), DeviceRefused> {
        let mut inner = self.write();
        let name = session.name();
        let holder_is_device = inner
            .sessions
            .get(name)
            .map(|holder| log_fed || (holder.is_inbox() && session.is_inbox()));
        match holder_is_device {
            None => {
                drop(inner);
                return self.insert(session).map_err(|_| DeviceRefused::Taken);
            }
            Some(false) => return Err(DeviceRefused::Taken),
            Some(true) => {}
        }
        let devices = inner.devices.entry(name.into()).or_default();
        if 1 + devices.len() >= max {
            return Err(DeviceRefused::TooMany);
        }
        devices.push(Arc::clone(session));
        Ok(())
    }

    /// Removes `session`, but only if its name still maps to it (a new
    /// session with the same name must not be evicted by an old one). A
    /// name with further devices stays online: one of them stands for it.
    pub fn remove(&self, session: &Arc<Mailbox>) {
        let mut inner = self.write();
        inner.watchers.retain(|w| !Arc::ptr_eq(w, session));
        let name = session.name();
        if !inner
            .sessions
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            if let Some(devices) = inner.devices.get_mut(name) {
                devices.retain(|d| !Arc::ptr_eq(d, session));
                if devices.is_empty() {
                    inner.devices.remove(name);
                }
            }
            return;
        }
        let next = inner.devices.get_mut(name).and_then(Vec::pop);
        if inner.devices.get(name).is_some_and(Vec::is_empty) {
            inner.devices.remove(name);
        }
        match next {
            Some(next) => {
                inner.sessions.insert(name.into(), next);
            }
            None => {
                inner.sessions.remove(name);
                inner.announce(false, name);
            }
        }
    }

    /// Makes `session` a presence watcher: queues `welcome`, then the
    /// current online list, then (later) every change.
    pub fn watch(&self, session: &Arc<Mailbox>, welcome: &[u8]) {
        let mut inner = self.write();
        if inner.watchers.iter().any(|w| Arc::ptr_eq(w, session)) {
            return;
        }
        let mut frames = welcome.to_vec();
        v1::encode_online(&inner.all_names(), &mut frames);
        // Bounded by the number of users, not by anything a peer sends.
        if session.outbound().push_unbounded(&frames).is_ok() {
            inner.watchers.push(Arc::clone(session));
        }
    }

    /// Stops presence events (at shutdown).
    pub fn go_quiet(&self) {
        self.write().quiet = true;
    }

    /// The session logged in as `name`, if any.
    pub fn get(&self, name: &[u8]) -> Option<Arc<Mailbox>> {
        let name = std::str::from_utf8(name).ok()?;
        self.read().sessions.get(name).cloned()
    }

    /// Calls `f` on every logged-in session, under the read lock (so `f`
    /// must be quick and must not touch the registry).
    pub(crate) fn for_each(&self, f: impl FnMut(&Arc<Mailbox>)) {
        let inner = self.read();
        inner
            .sessions
            .values()
            .chain(inner.devices.values().flatten())
            .for_each(f);
    }

    /// Online usernames, here and on the cluster's other nodes, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().all_names()
    }

    /// The names of this node's own sessions.
    pub(crate) fn local_names(&self) -> Vec<String> {
        self.read().sessions.keys().map(|k| k.to_string()).collect()
    }

    /// The node that holds `name`, if another node does.
    pub(crate) fn remote_node(&self, name: &[u8]) -> Option<Arc<str>> {
        let name = std::str::from_utf8(name).ok()?;
        self.read().remote.get(name).cloned()
    }

    /// `name` logged in on `node`.
    pub(crate) fn remote_joined(&self, name: &str, node: &str) {
        let mut inner = self.write();
        if inner.sessions.contains_key(name) {
            return;
        }
        let node = inner.node_id(node);
        if inner.remote.insert(name.into(), node).is_none() {
            inner.announce(true, name);
        }
    }

    /// `name` left `node` (if it was there).
    pub(crate) fn remote_left(&self, name: &str, node: &str) {
        let mut inner = self.write();
        if inner.remote.get(name).is_some_and(|held| **held == *node) {
            inner.remote.remove(name);
            inner.announce(false, name);
        }
    }

    /// Replaces the whole picture of the other nodes (read from Redis);
    /// watchers hear only what changed. Returns how many names were added,
    /// dropped or moved to another node: the drift it repaired.
    pub(crate) fn replace_remote(&self, directory: Vec<(String, String)>) -> usize {
        let mut inner = self.write();
        let old = std::mem::take(&mut inner.remote);
        let mut drift = 0;
        // One shared id per node (a lookup per name in the directory being
        // built would make this quadratic).
        let mut ids: HashMap<String, Arc<str>> = HashMap::new();
        for (name, node) in directory {
            if inner.sessions.contains_key(name.as_str()) {
                continue;
            }
            let node = match ids.get(&node) {
                Some(id) => Arc::clone(id),
                None => {
                    let id: Arc<str> = node.as_str().into();
                    ids.insert(node, Arc::clone(&id));
                    id
                }
            };
            match old.get(name.as_str()) {
                None => {
                    drift += 1;
                    inner.announce(true, &name);
                }
                Some(before) if **before != *node => drift += 1,
                Some(_) => {}
            }
            inner.remote.insert(name.into(), node);
        }
        for name in old.keys() {
            if !inner.remote.contains_key(name) {
                drift += 1;
                inner.announce(false, name);
            }
        }
        drift
    }

    /// The other nodes that hold names.
    pub(crate) fn remote_nodes(&self) -> Vec<Arc<str>> {
        let mut nodes: Vec<Arc<str>> = Vec::new();
        for node in self.read().remote.values() {
            if !nodes.iter().any(|known| Arc::ptr_eq(known, node)) {
                nodes.push(Arc::clone(node));
            }
        }
        nodes
    }

    /// Forgets every name held by `node` (it died); returns how many.
    pub(crate) fn forget_node(&self, node: &str) -> usize {
        let mut inner = self.write();
        let gone: Vec<Box<str>> = inner
            .remote
            .iter()
            .filter(|(_, held)| ***held == *node)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            inner.remote.remove(name);
            inner.announce(false, name);
        }
        gone.len()
    }
}

/// Whether two names (short) are equal, without a call to `memcmp`: a
/// sender's router compares the recipient with the last one for every
/// message, and a receiving node two names for every message of a run;
/// the call was most of the comparison's cost.
#[inline]
pub(crate) fn same_name(a: &[u8], b: &[u8]) -> bool {
    fn ends<const N: usize>(a: &[u8], b: &[u8]) -> bool {
        a.first_chunk::<N>() == b.first_chunk::<N>() && a.last_chunk::<N>() == b.last_chunk::<N>()
    }
    if a.len() != b.len() {
        return false;
    }
    // Two overlapping words cover every byte.
    match a.len() {
        0..=3 => a == b,
        4..=7 => ends::<4>(a, b),
        8..=16 => ends::<8>(a, b),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{queued, session, shared, Out};
    use super::*;

    #[test]
    fn names_compare_as_bytes_do_at_every_length() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + i as u8).collect();
            assert!(same_name(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same_name(&a, &b), "length {n}, byte {at}");
            }
            assert!(!same_name(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn a_taken_name_is_refused_and_only_its_holder_can_free_it() {
        let shared = shared();
        let (bob, _c1) = session(&shared, "bob");
        let (impostor, _c2) = session(&shared, "bob");
        assert_eq!(shared.registry.insert(&bob), Ok(()));
        assert_eq!(shared.registry.insert(&impostor), Err(NameTaken));
        // The refused session leaving must not evict the holder.
        shared.registry.remove(&impostor);
        assert!(shared
            .registry
            .get(b"bob")
            .is_some_and(|s| Arc::ptr_eq(&s, &bob)));
        shared.registry.remove(&bob);
        assert!(shared.registry.get(b"bob").is_none());
        assert_eq!(shared.registry.insert(&impostor), Ok(()));
    }

    #[test]
    fn devices_of_a_name_join_once_leave_with_the_last_and_are_bounded() {
        let shared = shared();
        let (watcher, _c0) = session(&shared, "carol");
        shared.registry.insert(&watcher).unwrap();
        shared.registry.watch(&watcher, b"");
        let devices: Vec<_> = (0..3).map(|_| session(&shared, "bob")).collect();
        for (device, _) in &devices {
            device.set_inbox();
        }
        let (plain, _c4) = session(&shared, "bob");
        assert_eq!(
            shared.registry.insert_device(&devices[0].0, 2, false),
            Ok(())
        );
        assert_eq!(
            shared.registry.insert_device(&devices[1].0, 2, false),
            Ok(())
        );
        assert_eq!(
            shared.registry.insert_device(&devices[2].0, 2, false),
            Err(DeviceRefused::TooMany)
        );
        // A session not fed from the inbox cannot join the devices.
        assert_eq!(
            shared.registry.insert_device(&plain, 2, false),
            Err(DeviceRefused::Taken)
        );
        let mut seen = 0;
        shared.registry.for_each(|_| seen += 1);
        assert_eq!(seen, 3, "carol and both of bob's devices");
        // The first leaves: the second stands for the name, no news.
        shared.registry.remove(&devices[0].0);
        assert!(shared
            .registry
            .get(b"bob")
            .is_some_and(|s| Arc::ptr_eq(&s, &devices[1].0)));
        shared.registry.remove(&devices[1].0);
        assert!(shared.registry.get(b"bob").is_none());
        let events: Vec<_> = queued(&watcher)
            .into_iter()
            .filter(|out| matches!(out, Out::Presence(..)))
            .collect();
        assert_eq!(
            events,
            [
                Out::Presence(true, "bob".into()),
                Out::Presence(false, "bob".into())
            ]
        );
    }

    #[test]
    fn names_are_listed_sorted() {
        let shared = shared();
        let sessions: Vec<_> = ["carol", "alice", "bob"]
            .iter()
            .map(|name| session(&shared, name))
            .collect();
        for (s, _) in &sessions {
            shared.registry.insert(s).unwrap();
        }
        assert_eq!(shared.registry.names(), ["alice", "bob", "carol"]);
    }

    #[test]
    fn a_watcher_sees_its_snapshot_then_every_change_in_order() {
        let shared = shared();
        let (alice, _c1) = session(&shared, "alice");
        let (watcher, _c2) = session(&shared, "watcher");
        let (bob, _c3) = session(&shared, "bob");
        shared.registry.insert(&alice).unwrap();
        shared.registry.insert(&watcher).unwrap();
        let mut welcome = Vec::new();
        v1::encode_pair(v1::OP_HELLO, b"test", b"", &mut welcome).unwrap();
        shared.registry.watch(&watcher, &welcome);
        shared.registry.insert(&bob).unwrap();
        shared.registry.remove(&alice);
        assert_eq!(
            queued(&watcher),
            [
                Out::Welcome,
                Out::Online(true, vec!["alice".into(), "watcher".into()]),
                Out::Presence(true, "bob".into()),
                Out::Presence(false, "alice".into()),
            ]
        );
        // Others never get presence.
        assert_eq!(queued(&bob), []);
        // At shutdown everyone leaving is not news.
        shared.registry.go_quiet();
        shared.registry.remove(&bob);
        assert_eq!(queued(&watcher), []);
    }

    #[test]
    fn names_on_other_nodes_are_listed_announced_and_forgotten_with_their_node() {
        let shared = shared();
        let (alice, _c1) = session(&shared, "alice");
        shared.registry.insert(&alice).unwrap();
        shared.registry.watch(&alice, b"");
        shared.registry.remote_joined("bob", "node-b");
        shared.registry.remote_joined("carol", "node-c");
        // A name held here is never mirrored as remote.
        shared.registry.remote_joined("alice", "node-b");
        assert_eq!(shared.registry.names(), ["alice", "bob", "carol"]);
        assert_eq!(
            shared.registry.remote_node(b"bob").as_deref(),
            Some("node-b")
        );
        assert!(shared.registry.remote_node(b"alice").is_none());
        // A departure from the wrong node changes nothing.
        shared.registry.remote_left("bob", "node-c");
        assert_eq!(shared.registry.forget_node("node-b"), 1);
        shared
            .registry
            .replace_remote(vec![("dave".into(), "node-c".into())]);
        assert_eq!(shared.registry.names(), ["alice", "dave"]);
        assert_eq!(
            queued(&alice),
            [
                Out::Online(true, vec!["alice".into()]),
                Out::Presence(true, "bob".into()),
                Out::Presence(true, "carol".into()),
                Out::Presence(false, "bob".into()),
                Out::Presence(true, "dave".into()),
                Out::Presence(false, "carol".into()),
            ]
        );
    }

    #[test]
    fn a_watcher_that_does_not_read_is_disconnected_not_buffered_forever() {
        let shared = super::super::testing::shared_with(super::super::Config {
            queue_bytes: 1024,
            ..Default::default()
        });
        let (watcher, _c) = session(&shared, "watcher");
        shared.registry.insert(&watcher).unwrap();
        shared.registry.watch(&watcher, b"");
        let mut others = Vec::new();
        for i in 0..200 {
            let (s, c) = session(&shared, &format!("user-{i:05}"));
            shared.registry.insert(&s).unwrap();
            others.push((s, c));
            if watcher.outbound().is_closed() {
                break;
            }
        }
        assert!(watcher.outbound().is_aborted());
    }
}
