//! Who is online: username → session.
//!
//! The lock is a plain `RwLock` held only for a map operation, never across
//! an `.await`. Readers look recipients up here only on a miss in their own
//! small cache (see `session::Recipients`), so routing does not contend on it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::session::Session;

/// The name is held by another session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("username is taken")]
pub struct NameTaken;

/// The online list.
#[derive(Debug, Default)]
pub struct Registry {
    /// Logged-in sessions by username.
    sessions: RwLock<HashMap<Box<str>, Arc<Session>>>,
}

impl Registry {
    /// Adds `session` under its name unless the name is held.
    pub fn insert(&self, session: &Arc<Session>) -> Result<(), NameTaken> {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        if sessions.contains_key(session.name()) {
            return Err(NameTaken);
        }
        sessions.insert(session.name().into(), Arc::clone(session));
        Ok(())
    }

    /// Removes `session`, but only if its name still maps to it (a new
    /// session with the same name must not be evicted by an old one).
    /// Returns true if it was online.
    pub fn remove(&self, session: &Arc<Session>) -> bool {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        match sessions.get(session.name()) {
            Some(current) if Arc::ptr_eq(current, session) => {
                sessions.remove(session.name());
                true
            }
            _ => false,
        }
    }

    /// The session logged in as `name`, if any.
    pub fn get(&self, name: &[u8]) -> Option<Arc<Session>> {
        let name = std::str::from_utf8(name).ok()?;
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        sessions.get(name).cloned()
    }

    /// Online usernames, sorted.
    pub fn names(&self) -> Vec<String> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = sessions.keys().map(|k| k.to_string()).collect();
        names.sort_unstable();
        names
    }

    /// Every online session (for broadcasting a shutdown).
    pub fn all(&self) -> Vec<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        sessions.values().cloned().collect()
    }

    /// Number of users online.
    pub fn len(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// True when nobody is online.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
