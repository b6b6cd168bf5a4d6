//! What the network side learns and the command side needs: who last wrote
//! to us, which usernames we know, and how the session is going (for the
//! exit status).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

/// Shared between the receiving task and the REPL or batch loop.
#[derive(Debug, Default)]
pub struct ChatState {
    /// Sender of the most recent message, the target of `reply`.
    last_sender: Mutex<Option<String>>,
    /// Usernames seen this session or in history, for tab completion.
    known_users: RwLock<BTreeSet<String>>,
    /// A line was rejected or the server reported an error (exit status 1).
    failed: AtomicBool,
    /// The server refused our username or had no room (exit status 3).
    login_refused: AtomicBool,
}

impl ChatState {
    /// Records an incoming message's sender.
    pub fn received_from(&self, from: &str) {
        let mut last = self.last_sender.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(from) {
            *last = Some(from.to_string());
            drop(last);
            self.know(from);
        }
    }

    /// Whom `reply` goes to.
    pub fn last_sender(&self) -> Option<String> {
        self.last_sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a username to the completion set.
    pub fn know(&self, name: &str) {
        let known = self.known_users.read().unwrap_or_else(|e| e.into_inner());
        if known.contains(name) {
            return;
        }
        drop(known);
        self.known_users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    /// Known usernames starting with `prefix`, sorted.
    pub fn users_starting_with(&self, prefix: &str) -> Vec<String> {
        let known = self.known_users.read().unwrap_or_else(|e| e.into_inner());
        known
            .range(prefix.to_string()..)
            .take_while(|name| name.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Marks the session as failed (exit status 1).
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// True once anything failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Records a server error text, noticing login refusals.
    pub fn server_error(&self, text: &[u8]) {
        self.fail();
        if is_login_refusal(text) {
            self.login_refused.store(true, Ordering::Relaxed);
        }
    }

    /// True if the server refused the login.
    pub fn login_refused(&self) -> bool {
        self.login_refused.load(Ordering::Relaxed)
    }
}

/// Error texts with which a server refuses a login (v1 sends no other sign).
pub fn is_login_refusal(text: &[u8]) -> bool {
    text == crate::protocol::USERNAME_TAKEN.as_bytes()
        || text.starts_with(b"invalid username")
        || text == b"server is full\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_prefixes() {
        let state = ChatState::default();
        for name in ["bob", "bobby", "alice", "bo"] {
            state.know(name);
        }
        assert_eq!(state.users_starting_with("bo"), ["bo", "bob", "bobby"]);
        assert_eq!(state.users_starting_with("c"), Vec::<String>::new());
        assert_eq!(state.users_starting_with("").len(), 4);
    }

    #[test]
    fn reply_goes_to_the_last_sender() {
        let state = ChatState::default();
        assert_eq!(state.last_sender(), None);
        state.received_from("carol");
        state.received_from("dave");
        assert_eq!(state.last_sender().as_deref(), Some("dave"));
        assert_eq!(state.users_starting_with("c"), ["carol"]);
    }

    #[test]
    fn login_refusals_are_recognised() {
        assert!(is_login_refusal(b"Username is taken\n"));
        assert!(is_login_refusal(b"invalid username: it is empty\n"));
        assert!(!is_login_refusal(b"'bob' is not connected\n"));
    }
}
