//! What the network side learns and the command side needs: who last wrote
//! to us, which usernames we know, what the server negotiated, and how the
//! session is going (for the exit status).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::receipts::Ledger;
use super::wire::ClientWire;
use crate::wire::texts::Code;
use crate::wire::v1::{validate_username, Limits};

/// Most usernames remembered from what the server says (senders, and those
/// we messaged); the oldest is forgotten first. A hostile server could
/// otherwise make the client remember millions of names.
pub const MAX_KNOWN_USERS: usize = 1024;
/// Most names kept in the online list (presence snapshot and events, and a
/// `who` answer); further names are dropped.
pub const MAX_ONLINE_USERS: usize = 65_536;

/// True for a name worth remembering: a valid username of any length the
/// protocol allows. Anything else can only come from a broken or hostile
/// server, and is shown but not kept.
pub fn rememberable(name: &str) -> bool {
    validate_username(name.as_bytes(), usize::from(u8::MAX)).is_ok()
}

/// Shared between the receiving task and the REPL or batch loop.
#[derive(Debug, Default)]
pub struct ChatState {
    /// Sender of the most recent message, the target of `reply`.
    last_sender: Mutex<Option<String>>,
    /// Usernames seen this session (messaged us or messaged by us).
    known_users: RwLock<KnownUsers>,
    /// Recipients found in the history file.
    history_users: RwLock<BTreeSet<String>>,
    /// Who is online, kept current by presence events; `None` without
    /// presence (a v1 server, or not asked for).
    online: RwLock<Option<BTreeSet<String>>>,
    /// The server answered HELLO: extension frames may be sent.
    extended: AtomicBool,
    /// Limits for local checks: v1's, or the server's from WELCOME.
    limits: RwLock<Limits>,
    /// A line was rejected or the server reported an error (exit status 1).
    failed: AtomicBool,
    /// The server refused our username or had no room (exit status 3).
    login_refused: AtomicBool,
    /// The refusal was that the name is taken.
    name_taken: AtomicBool,
    /// The refusal was the server's momentary trouble (its cluster is
    /// unreachable, too many logins are being checked).
    try_later: AtomicBool,
    /// The last error text the server sent, escaped.
    last_error: Mutex<String>,
    /// The server refused the login because the name is registered and no
    /// password came with it (the editor can then ask for one).
    password_required: AtomicBool,
    /// The server refused the login because the password was wrong.
    wrong_password: AtomicBool,
    /// WELCOME said the login was proved with a password.
    authenticated: AtomicBool,
    /// WELCOME granted receipts: every message sent goes in `ledger`.
    receipts: AtomicBool,
    /// WELCOME granted the inbox: messages come as log entries.
    inbox: AtomicBool,
    /// `history` requests whose answers have not ended yet (like
    /// `who_pending`).
    history_pending: AtomicU32,
    /// Messages sent and not yet accounted for, with receipts.
    ledger: Ledger,
    /// The wire this session speaks.
    wire: ClientWire,
    /// `who` requests sent and not yet answered: ONLINE pages are accepted
    /// only in answer to one (or as the presence snapshot).
    who_pending: AtomicU32,
    /// Where a device token from WELCOME is kept, if anywhere.
    tokens: Mutex<Option<super::device::TokenStore>>,
    /// End-to-end encryption (`--e2e`).
    e2e: Mutex<Option<Arc<super::e2e::session::E2e>>>,
}

/// A bounded set of names that forgets the oldest first.
#[derive(Debug, Default)]
struct KnownUsers {
    names: BTreeSet<String>,
    order: VecDeque<String>,
}

impl KnownUsers {
    fn insert(&mut self, name: &str) {
        if self.names.contains(name) {
            return;
        }
        if self.order.len() >= MAX_KNOWN_USERS {
            if let Some(oldest) = self.order.pop_front() {
                self.names.remove(&oldest);
            }
        }
        self.names.insert(name.to_string());
        self.order.push_back(name.to_string());
    }
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

    /// Adds a username to the completion set (bounded; see
    /// [`MAX_KNOWN_USERS`]). Names that are not valid usernames are ignored.
    pub fn know(&self, name: &str) {
        let known = self.known_users.read().unwrap_or_else(|e| e.into_inner());
        if known.names.contains(name) || !rememberable(name) {
            return;
        }
        drop(known);
        self.known_users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
    }

    /// Number of names remembered from this session.
    #[cfg(test)]
    pub fn known_count(&self) -> usize {
        self.known_users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .names
            .len()
    }

    /// Adds a recipient found in the history file.
    pub fn know_from_history(&self, name: &str) {
        self.history_users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    /// Completion candidates starting with `prefix`, sorted: history
    /// recipients plus, with presence, exactly the online users, and
    /// without it everyone seen this session.
    pub fn users_starting_with(&self, prefix: &str) -> Vec<String> {
        let mut names = BTreeSet::new();
        let mut add = |set: &BTreeSet<String>| {
            names.extend(
                set.range(prefix.to_string()..)
                    .take_while(|name| name.starts_with(prefix))
                    .cloned(),
            );
        };
        add(&self.history_users.read().unwrap_or_else(|e| e.into_inner()));
        match &*self.online.read().unwrap_or_else(|e| e.into_inner()) {
            Some(online) => add(online),
            None => add(&self
                .known_users
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .names),
        }
        names.into_iter().collect()
    }

    /// Records the online list (presence snapshot).
    pub fn set_online(&self, names: &[String]) {
        *self.online.write().unwrap_or_else(|e| e.into_inner()) = Some(
            names
                .iter()
                .filter(|n| rememberable(n))
                .take(MAX_ONLINE_USERS)
                .cloned()
                .collect(),
        );
    }

    /// Applies a presence event.
    pub fn presence(&self, joined: bool, name: &str) {
        if let Some(online) = self
            .online
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            if !joined {
                online.remove(name);
            } else if online.len() < MAX_ONLINE_USERS && rememberable(name) {
                online.insert(name.to_string());
            }
        }
    }

    /// A `who` request is on its way to the server.
    pub fn who_sent(&self) {
        self.who_pending.fetch_add(1, Ordering::SeqCst);
    }

    /// An ONLINE list arrived: true if it answers a `who` of ours (which
    /// is then no longer pending), false if nobody asked for it.
    pub fn who_answered(&self) -> bool {
        self.who_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// True while a `who` answer is expected.
    pub fn who_expected(&self) -> bool {
        self.who_pending.load(Ordering::SeqCst) > 0
    }

    /// Number of users online, when presence is on.
    pub fn online_count(&self) -> Option<usize> {
        self.online
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(BTreeSet::len)
    }

    /// Forgets what the previous connection negotiated, before the editor
    /// connects again: names seen and the reply target stay.
    pub fn new_connection(&self) {
        *self.online.write().unwrap_or_else(|e| e.into_inner()) = None;
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = Limits::default();
        for flag in [
            &self.extended,
            &self.login_refused,
            &self.name_taken,
            &self.try_later,
            &self.password_required,
            &self.wrong_password,
            &self.authenticated,
            &self.receipts,
        ] {
            flag.store(false, Ordering::SeqCst);
        }
        self.who_pending.store(0, Ordering::SeqCst);
    }

    /// State for a session on `wire`.
    pub fn with_wire(wire: ClientWire) -> Self {
        ChatState {
            wire,
            ..ChatState::default()
        }
    }

    /// Encrypts and decrypts with `e2e` (`--e2e`).
    pub fn use_e2e(&self, e2e: Arc<super::e2e::session::E2e>) {
        *self.e2e.lock().unwrap_or_else(|e| e.into_inner()) = Some(e2e);
    }

    /// The e2e state, with `--e2e`.
    pub fn e2e(&self) -> Option<Arc<super::e2e::session::E2e>> {
        self.e2e.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The wire this session speaks.
    pub fn wire(&self) -> ClientWire {
        self.wire
    }

    /// Why `who` cannot be sent, if it cannot.
    pub fn who_unsupported(&self) -> Option<&'static str> {
        match (self.wire, self.extended()) {
            (ClientWire::Gob, _) => Some(super::command::WHO_UNSUPPORTED_ON_GOB),
            (ClientWire::V1, false) => Some(super::command::WHO_UNSUPPORTED),
            (ClientWire::V1, true) => None,
        }
    }

    /// Keeps device tokens from WELCOME in `store`.
    pub fn keep_tokens_in(&self, store: super::device::TokenStore) {
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// The device token kept for this server and name, if any.
    pub fn device_token(&self) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()?
            .load()
    }

    /// WELCOME gave this device a token: kept for the next login. One that
    /// cannot be kept is no reason to stop (the next login is merely not
    /// exempt from the name's back-off).
    pub fn device_token_issued(&self, token: &[u8]) {
        let Ok(token) = std::str::from_utf8(token) else {
            return;
        };
        if let Some(store) = &*self.tokens.lock().unwrap_or_else(|e| e.into_inner()) {
            if let Err(e) = store.save(token) {
                crate::err_line!("chat-client: cannot keep the device token: {e}");
            }
        }
    }

    /// Records a WELCOME: extensions are on, these are the limits, whether
    /// the login was proved with a password, and whether receipts are on.
    pub fn set_extended(&self, limits: Limits, authenticated: bool, receipts: bool) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = limits;
        self.authenticated.store(authenticated, Ordering::SeqCst);
        self.receipts.store(receipts, Ordering::SeqCst);
        self.extended.store(true, Ordering::SeqCst);
    }

    /// Records a `history` request (the server pages on from where its
    /// last answer for that conversation ended).
    pub fn history_requested(&self) {
        self.history_pending.fetch_add(1, Ordering::SeqCst);
    }

    /// True while a `history` answer is awaited.
    pub fn history_expected(&self) -> bool {
        self.history_pending.load(Ordering::SeqCst) > 0
    }

    /// A `who` or a `history` of the script is not answered yet.
    pub fn awaits_answers(&self) -> bool {
        self.who_expected() || self.history_expected()
    }

    /// A `history` answer ended.
    pub fn history_ended(&self) {
        let _ = self
            .history_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Records whether WELCOME granted the inbox.
    pub fn set_inbox(&self, granted: bool) {
        self.inbox.store(granted, Ordering::SeqCst);
    }

    /// True if the server feeds this session from the user's log.
    pub fn inbox(&self) -> bool {
        self.inbox.load(Ordering::SeqCst)
    }

    /// True if the server said the login was proved with a password.
    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::SeqCst)
    }

    /// The server accounts for every message: record each in
    /// [`ChatState::ledger`] before it is written.
    pub fn receipts(&self) -> bool {
        self.receipts.load(Ordering::SeqCst)
    }

    /// Messages sent and not yet accounted for.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// True if the server asked for a password we did not send.
    pub fn password_required(&self) -> bool {
        self.password_required.load(Ordering::Relaxed)
    }

    /// True if the server refused the password we sent.
    pub fn wrong_password(&self) -> bool {
        self.wrong_password.load(Ordering::Relaxed)
    }

    /// True if the server negotiated extensions.
    pub fn extended(&self) -> bool {
        self.extended.load(Ordering::SeqCst)
    }

    /// Limits for local checks.
    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the session as failed (exit status 1).
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// True once anything failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Records a server error, noticing login refusals: any error
    /// `during_login` (before the login was confirmed), and those whose
    /// code says so. The code decides ([`error_code`]); the text is kept
    /// to be shown.
    pub fn server_error(&self, code: &[u8], text: &[u8], during_login: bool) {
        self.fail();
        let code = error_code(code, text);
        if during_login || code.is_some_and(Code::refuses_login) {
            self.login_refused.store(true, Ordering::Relaxed);
        }
        if code == Some(Code::NameTaken) {
            self.name_taken.store(true, Ordering::Relaxed);
        }
        if code.is_some_and(Code::try_later) {
            self.try_later.store(true, Ordering::Relaxed);
        }
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        last.clear();
        last.push_str(&crate::sanitize::escape(
            text.strip_suffix(b"\n").unwrap_or(text),
        ));
        match code {
            Some(Code::PasswordRequired) => {
                self.password_required.store(true, Ordering::Relaxed);
            }
            Some(Code::WrongPassword) => {
                self.wrong_password.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// True if the server refused the login.
    pub fn login_refused(&self) -> bool {
        self.login_refused.load(Ordering::Relaxed)
    }

    /// True if the server refused the login because the name is taken.
    pub fn name_taken(&self) -> bool {
        self.name_taken.load(Ordering::Relaxed)
    }

    /// True if the login was refused for a reason that may pass: the name
    /// is taken (by our own stale session, when reconnecting), or the
    /// server could not serve logins for a moment.
    pub fn login_retryable(&self) -> bool {
        self.name_taken() || self.try_later.load(Ordering::Relaxed)
    }

    /// The login was not confirmed in time: counts as refused (exit 3).
    pub fn login_unanswered(&self) {
        self.fail();
        self.login_refused.store(true, Ordering::Relaxed);
    }

    /// The last error the server sent, escaped, without its newline.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What an error is about: its code, from a server that negotiated codes
/// (an unknown code, a newer server's, is `None`: shown, not acted on);
/// from one on a wire without codes (an original v1 or gob server, or
/// ours talking gob), the catalogue's reading of its text.
pub fn error_code(code: &[u8], text: &[u8]) -> Option<Code> {
    if code.is_empty() {
        Code::of_text(text)
    } else {
        Code::parse(code)
    }
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
    fn with_presence_completion_offers_exactly_online_and_history_users() {
        let state = ChatState::default();
        state.know("bob-seen");
        state.know_from_history("bob-history");
        state.set_online(&["bob".to_string(), "alice".to_string()]);
        assert_eq!(state.users_starting_with("bob"), ["bob", "bob-history"]);
        state.presence(false, "bob");
        state.presence(true, "bobby");
        assert_eq!(state.users_starting_with("bob"), ["bob-history", "bobby"]);
        assert_eq!(state.online_count(), Some(2));
    }

    #[test]
    fn remembered_names_are_bounded_and_forget_the_oldest() {
        let state = ChatState::default();
        for i in 0..MAX_KNOWN_USERS + 10 {
            state.know(&format!("user{i}"));
        }
        assert_eq!(state.known_count(), MAX_KNOWN_USERS);
        assert!(state.users_starting_with("user0").is_empty());
        assert_eq!(state.users_starting_with("user1033"), ["user1033"]);
        // Not a username: shown by the caller, never kept.
        state.know(&"x".repeat(300));
        state.know("bad name");
        assert_eq!(state.known_count(), MAX_KNOWN_USERS);
    }

    #[test]
    fn online_pages_are_accepted_only_when_asked_for() {
        let state = ChatState::default();
        assert!(!state.who_answered());
        state.who_sent();
        assert!(state.who_expected());
        assert!(state.who_answered());
        assert!(!state.who_answered());
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
    fn login_refusals_are_recognised_by_code_and_from_uncoded_texts() {
        let refuses =
            |code: &[u8], text: &[u8]| error_code(code, text).is_some_and(Code::refuses_login);
        assert!(refuses(b"", b"Username is taken\n"));
        assert!(refuses(b"", b"invalid username: it is empty\n"));
        assert!(!refuses(b"", b"'bob' is not connected\n"));
        // With a code, the words do not matter.
        assert!(refuses(b"wrong-password", b"anything at all\n"));
        assert!(!refuses(b"not-connected", b"Username is taken\n"));
        assert!(!refuses(b"from-a-newer-server", b"Username is taken\n"));
    }
}
