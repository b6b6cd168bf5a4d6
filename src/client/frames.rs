//! What the client makes of the frames a server sends: where they go (a
//! [`Sink`]), and what the login negotiation (HELLO, PENDING, WELCOME, the
//! presence snapshot) learns from them. Pure bookkeeping over frames
//! already decoded: the socket and the receiving loop are
//! [`super::connection`].

use std::future::Future;
use std::io;
use std::time::Duration;

use super::e2e::envelope::is_envelope;
use super::e2e::session::{E2e, Opened};
use super::negotiation::{tell, Login, Negotiation, MAX_PENDING, MAX_PENDING_WAIT};
use super::receipts::Sent;
use super::state::{ChatState, MAX_ONLINE_USERS};
use crate::clock::Stamp;
use crate::wire::v1::{self, PendingReason, ServerFrame};

/// Pending output past which the receiving loop has its [`Sink`] write out
/// even while more frames are waiting: a sender that never pauses must not
/// grow the client.
pub const FLUSH_AT: usize = 64 * 1024;

/// Where received frames go.
pub trait Sink {
    /// Sets the receive time of the frames that follow (`--timestamps`).
    fn set_stamp(&mut self, stamp: Stamp);
    /// True if frames should be time-stamped.
    fn wants_stamps(&self) -> bool;
    /// A message from `from`.
    fn message(&mut self, from: &[u8], content: &[u8]);
    /// A message from `from` with `--e2e`'s mark (see
    /// [`super::render::Renderer::message_marked`]). By default, as any.
    fn message_marked(&mut self, from: &[u8], content: &[u8], _e2e: bool) {
        self.message(from, content);
    }
    /// An error reported by the server, with its code (empty from a
    /// server without codes).
    fn error(&mut self, code: &[u8], text: &[u8]);
    /// The answer to a `who`: the online users, sorted.
    fn online(&mut self, names: &[String]);
    /// A presence event.
    fn presence(&mut self, joined: bool, name: &[u8]);
    /// The server accepted a message we sent (receipts).
    fn accepted(&mut self, sent: &Sent);
    /// The server refused a message we sent, for the reason in `code`
    /// (empty from a server without codes) and `text`.
    fn refused(&mut self, sent: &Sent, code: &[u8], text: &[u8]);
    /// A message of the user's log (feature `inbox`). By default an
    /// incoming one is shown as a message, a copy of one sent from
    /// another device not at all.
    fn entry(&mut self, entry: &LogEntry<'_>) {
        if !entry.sent {
            self.message(entry.peer, entry.content);
        }
    }
    /// The server stored a message we sent for its recipient, who is not
    /// connected (receipts with `stored`). By default, as accepted.
    fn stored(&mut self, sent: &Sent) {
        self.accepted(sent);
    }
    /// The log was replayed (`replayed` messages); live ones follow.
    fn caught_up(&mut self, _replayed: u64) {}
    /// An entry of the answer to our `history`.
    fn history_entry(&mut self, _entry: &LogEntry<'_>) {}
    /// The end of the answer to our `history`: `count` entries came.
    fn history_end(&mut self, _count: u64) {}
    /// True when the session has shown all it was asked for
    /// (`--until-caught-up`, once the log was replayed).
    fn finished(&self) -> bool {
        false
    }
    /// Bytes rendered and not yet written.
    fn pending(&self) -> usize;
    /// Writes what is pending, waiting while the destination is full.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>>;
    /// Completes when the destination went away (stdout closed).
    fn gone(&self) -> impl Future<Output = ()> + 'static;
}

/// A message of the user's log, as an ENTRY frame carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// Its id: the cursor.
    pub id: u64,
    /// When the server logged it, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Sent by one of the user's (other) devices to `peer`, not received
    /// from `peer`.
    pub sent: bool,
    pub peer: &'a [u8],
    pub content: &'a [u8],
    /// With `--e2e`: decrypted (`true`), or plain from a user whose keys
    /// are pinned (`false`).
    pub e2e: Option<bool>,
}

/// A message with `--e2e`: decrypted, marked, or reported unreadable.
fn open_e2e(e2e: &E2e, from: &[u8], content: &[u8], sink: &mut impl Sink) {
    match e2e.open_message(&String::from_utf8_lossy(from), content) {
        Opened::Plain { pinned: false } => sink.message(from, content),
        Opened::Plain { pinned: true } => sink.message_marked(from, content, false),
        Opened::Text(text) => sink.message_marked(from, &text, true),
        Opened::NotForThisDevice => {}
        Opened::Failed(why) => unreadable(from, &why, sink),
    }
}

/// Reports an encrypted message that cannot be read: never its text.
fn unreadable(from: &[u8], why: &str, sink: &mut impl Sink) {
    let text = format!(
        "an encrypted message from '{}' cannot be read: {why}\n",
        crate::sanitize::escape(from)
    );
    sink.error(b"e2e-unreadable", text.as_bytes());
}

/// What the receiving side makes of each frame, and what it remembers
/// between frames.
pub(super) struct FrameHandler {
    negotiation: Negotiation,
    /// The last frame was an error (which then explains a close).
    pub(super) after_error: bool,
    /// Nothing valid arrived yet: garbage now means "not a chat server".
    pub(super) first: bool,
    /// ONLINE pages collected so far, and what they are for.
    online: Vec<String>,
    collecting: Collecting,
    /// WELCOME arrived and asked-for presence: the next list is the
    /// snapshot that completes the login.
    awaiting_snapshot: bool,
}

impl FrameHandler {
    pub(super) fn new(negotiation: Negotiation) -> Self {
        FrameHandler {
            negotiation,
            after_error: false,
            first: true,
            online: Vec::new(),
            collecting: Collecting::Nothing,
            awaiting_snapshot: false,
        }
    }

    pub(super) fn handle(
        &mut self,
        frame: ServerFrame<'_>,
        sink: &mut impl Sink,
        state: &ChatState,
    ) {
        self.first = false;
        self.after_error = matches!(frame, ServerFrame::Error { .. });
        match frame {
            ServerFrame::Message { from, content } => {
                state.received_from(&String::from_utf8_lossy(from));
                match state.e2e().filter(|e2e| e2e.is_active()) {
                    Some(e2e) => open_e2e(&e2e, from, content, sink),
                    // Ciphertext is never shown as text.
                    None if is_envelope(content) => {
                        unreadable(from, "it is encrypted (chat-client --e2e reads it)", sink);
                    }
                    None => sink.message(from, content),
                }
            }
            // A v1 server's answers to HELLO and AUTH: swallowed.
            ServerFrame::Error { text, .. }
                if self.negotiation.v1_answers > 0 && text == v1::V1_HELLO_ANSWER =>
            {
                self.negotiation.v1_answers -= 1;
                self.after_error = false;
                tell(&mut self.negotiation.outcome, Login::V1);
            }
            ServerFrame::Error { code, text } => {
                // Before the login was confirmed, any error is its refusal.
                let during_login = self
                    .negotiation
                    .outcome
                    .as_ref()
                    .is_some_and(|outcome| !outcome.is_closed());
                state.server_error(code, text, during_login);
                let quiet = (self.negotiation.quiet_name_taken && state.login_retryable())
                    || (self.negotiation.quiet_password_required && state.password_required());
                if !quiet {
                    sink.error(code, text);
                }
            }
            ServerFrame::Pending { reason, wait_ms } => {
                let negotiation = &mut self.negotiation;
                if let Some(outcome) = &negotiation.outcome {
                    if negotiation.pending < MAX_PENDING {
                        negotiation.pending += 1;
                        let wait = Duration::from_millis(wait_ms).min(MAX_PENDING_WAIT);
                        let reason = PendingReason::from_code(reason);
                        let _ = outcome.try_send(Login::Pending(reason, wait));
                    }
                }
            }
            ServerFrame::Welcome { limits, .. } => {
                self.negotiation.v1_answers = 0;
                state.set_extended(
                    v1::parse_limits(limits),
                    v1::welcome_authenticated(limits),
                    v1::lists_word(limits, v1::FEATURE_RECEIPTS),
                );
                state.set_inbox(v1::lists_word(limits, v1::FEATURE_INBOX));
                if let Some(e2e) = state.e2e() {
                    e2e.set_active(v1::lists_word(limits, v1::FEATURE_KEYS));
                    e2e.set_sealed(v1::lists_word(limits, v1::FEATURE_SEALED));
                }
                if let Some(token) = v1::welcome_value(limits, v1::WELCOME_TOKEN) {
                    state.device_token_issued(token);
                }
                if self.negotiation.presence {
                    self.awaiting_snapshot = true;
                } else {
                    tell(&mut self.negotiation.outcome, Login::Extended);
                }
            }
            ServerFrame::Online { last, names } => self.online_page(last, names, sink, state),
            // Answers to the `keys` extension, for --e2e (ignored
            // without it).
            ServerFrame::KeyCount { count, .. } => {
                if let Some(e2e) = state.e2e() {
                    e2e.key_count(count);
                }
            }
            ServerFrame::DeviceKeys { device, records } => {
                if let Some(e2e) = state.e2e() {
                    e2e.device_keys(device, records);
                }
            }
            ServerFrame::KeysEnd { .. } => {
                if let Some(e2e) = state.e2e() {
                    e2e.keys_end();
                }
            }
            ServerFrame::Presence { joined, name } => {
                state.presence(joined, &String::from_utf8_lossy(name));
                sink.presence(joined, name);
            }
            ServerFrame::Entry {
                id,
                ts_ms,
                direction,
                peer,
                content,
            } => {
                let sent = direction == b'o';
                if !sent {
                    state.received_from(&String::from_utf8_lossy(peer));
                }
                let e2e = state.e2e().filter(|e2e| e2e.is_active());
                // A copy of what another of our devices sent was sealed
                // by that device, in our name.
                let opened = e2e.as_ref().map(|e2e| {
                    let sender = match sent {
                        true => e2e.name().to_string(),
                        false => String::from_utf8_lossy(peer).into_owned(),
                    };
                    e2e.open_message(&sender, content)
                });
                let (content, mark) = match &opened {
                    None if is_envelope(content) => {
                        if !sent {
                            unreadable(peer, "it is encrypted (chat-client --e2e reads it)", sink);
                        }
                        return;
                    }
                    None => (content, None),
                    Some(Opened::Plain { pinned }) => (content, pinned.then_some(false)),
                    Some(Opened::Text(text)) => (&text[..], Some(true)),
                    // A copy for another device of this user (or of what
                    // another device sent): not this device's to show.
                    Some(Opened::NotForThisDevice) => return,
                    Some(Opened::Failed(why)) => {
                        if !sent {
                            unreadable(peer, why, sink);
                        }
                        return;
                    }
                };
                let entry = LogEntry {
                    id,
                    ts_ms,
                    sent,
                    peer,
                    content,
                    e2e: mark,
                };
                sink.entry(&entry);
            }
            ServerFrame::Stored { first, last } => {
                // Those before `first` were accepted (the server accounts
                // in order), then `first..=last` were stored.
                if let Some(before) = first.checked_sub(1) {
                    state.ledger().accepted(before, |sent| sink.accepted(sent));
                }
                state.ledger().stored(first, last, |sent| sink.stored(sent));
            }
            ServerFrame::CaughtUp { replayed } => sink.caught_up(replayed),
            ServerFrame::HistoryEntry {
                id,
                ts_ms,
                direction,
                peer,
                content,
            } => {
                // An encrypted message cannot be read again: Olm uses each
                // key once, when it arrives. Never shown as text.
                if is_envelope(content) {
                    return;
                }
                let entry = LogEntry {
                    id,
                    ts_ms,
                    sent: direction == b'o',
                    peer,
                    content,
                    e2e: None,
                };
                sink.history_entry(&entry);
            }
            ServerFrame::HistoryEnd { count } => {
                state.history_ended();
                sink.history_end(count);
            }
            ServerFrame::Accepted { through } => {
                state.ledger().accepted(through, |sent| sink.accepted(sent));
            }
            ServerFrame::Refused {
                ordinal,
                code,
                text,
            } => {
                state.fail();
                if let Some(e2e) = state.e2e() {
                    // What was refused may have introduced this device.
                    e2e.refused();
                }
                match state.ledger().refused(ordinal, |sent| sink.accepted(sent)) {
                    Some(sent) => sink.refused(&sent, code, text),
                    // Not a message of ours in flight: shown as it is.
                    None => sink.error(code, text),
                }
            }
        }
    }

    /// Collects an ONLINE page; the last one completes the list. Only the
    /// snapshot and answers to our own `who` are kept (up to
    /// [`MAX_ONLINE_USERS`] names); anything else is read and dropped.
    fn online_page(&mut self, last: bool, names: &[u8], sink: &mut impl Sink, state: &ChatState) {
        if self.collecting == Collecting::Nothing {
            self.collecting = if self.awaiting_snapshot {
                Collecting::Snapshot
            } else if state.who_expected() {
                Collecting::Answer
            } else {
                Collecting::Unasked
            };
        }
        if self.collecting != Collecting::Unasked {
            let room = MAX_ONLINE_USERS.saturating_sub(self.online.len());
            self.online.extend(
                names
                    .split(|&b| b == b'\n')
                    .filter(|n| !n.is_empty())
                    .take(room)
                    .map(|n| String::from_utf8_lossy(n).into_owned()),
            );
        }
        if !last {
            return;
        }
        let mut online = std::mem::take(&mut self.online);
        online.sort_unstable();
        match std::mem::replace(&mut self.collecting, Collecting::Nothing) {
            Collecting::Snapshot => {
                self.awaiting_snapshot = false;
                state.set_online(&online);
                tell(&mut self.negotiation.outcome, Login::Extended);
            }
            Collecting::Answer => {
                state.who_answered();
                sink.online(&online);
            }
            Collecting::Unasked | Collecting::Nothing => {}
        }
    }
}

/// What the ONLINE pages being received are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Collecting {
    /// No list in progress.
    Nothing,
    /// The presence snapshot that completes the login.
    Snapshot,
    /// The answer to our `who`.
    Answer,
    /// Nobody asked: read and dropped.
    Unasked,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::negotiation::login_channel;

    /// Everything a handler hands to its sink, as text.
    #[derive(Default)]
    struct Recorded(Vec<String>);

    impl Sink for Recorded {
        fn set_stamp(&mut self, _: Stamp) {}
        fn wants_stamps(&self) -> bool {
            false
        }
        fn message(&mut self, from: &[u8], content: &[u8]) {
            let (from, content) = (
                String::from_utf8_lossy(from),
                String::from_utf8_lossy(content),
            );
            self.0.push(format!("message {from}: {content}"));
        }
        fn error(&mut self, code: &[u8], text: &[u8]) {
            let (code, text) = (String::from_utf8_lossy(code), String::from_utf8_lossy(text));
            self.0.push(format!("error {code} {}", text.trim_end()));
        }
        fn online(&mut self, names: &[String]) {
            self.0.push(format!("online {}", names.join(",")));
        }
        fn presence(&mut self, joined: bool, name: &[u8]) {
            self.0.push(format!(
                "presence {joined} {}",
                String::from_utf8_lossy(name)
            ));
        }
        fn accepted(&mut self, sent: &Sent) {
            self.0.push(format!("accepted {sent:?}"));
        }
        fn refused(&mut self, sent: &Sent, _: &[u8], _: &[u8]) {
            self.0.push(format!("refused {sent:?}"));
        }
        fn pending(&self) -> usize {
            0
        }
        async fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        #[allow(clippy::manual_async_fn)]
        fn gone(&self) -> impl Future<Output = ()> + 'static {
            async {}
        }
    }

    /// A handler for a login that asked for `presence` (and expects
    /// `v1_answers` answers from a v1 server), with an empty sink and
    /// state, and where it tells the login's outcome.
    fn handler(
        presence: bool,
        v1_answers: u8,
    ) -> (
        FrameHandler,
        Recorded,
        ChatState,
        async_channel::Receiver<Login>,
    ) {
        let (outcome, told) = login_channel();
        let negotiation = Negotiation {
            outcome: Some(outcome),
            presence,
            v1_answers,
            quiet_name_taken: false,
            quiet_password_required: false,
            pending: 0,
        };
        let frames = FrameHandler::new(negotiation);
        (frames, Recorded::default(), ChatState::default(), told)
    }

    fn online(last: bool, names: &'static [u8]) -> ServerFrame<'static> {
        ServerFrame::Online { last, names }
    }

    #[test]
    fn an_online_list_nobody_asked_for_is_read_and_dropped() {
        let (mut frames, mut sink, state, _told) = handler(false, 0);
        frames.handle(online(false, b"mallory\neve"), &mut sink, &state);
        frames.handle(online(true, b"trudy"), &mut sink, &state);
        assert!(sink.0.is_empty(), "{:?}", sink.0);
        assert!(state.users_starting_with("mal").is_empty());
    }

    #[test]
    fn the_presence_snapshot_after_welcome_completes_the_login() {
        let (mut frames, mut sink, state, told) = handler(true, 0);
        frames.handle(
            ServerFrame::Welcome {
                server: b"pmchat",
                limits: b"",
            },
            &mut sink,
            &state,
        );
        assert!(told.try_recv().is_err(), "told before the snapshot");
        frames.handle(online(false, b"bob\nalice"), &mut sink, &state);
        assert!(told.try_recv().is_err(), "told before the last page");
        frames.handle(online(true, b"carol"), &mut sink, &state);
        assert_eq!(Ok(Login::Extended), told.try_recv());
        assert_eq!(Some(3), state.online_count());
        // The snapshot is the state's, not output.
        assert!(sink.0.is_empty(), "{:?}", sink.0);
    }

    #[test]
    fn a_server_that_keeps_saying_pending_is_not_believed_forever() {
        let (mut frames, mut sink, state, told) = handler(false, 0);
        for _ in 0..MAX_PENDING + 5 {
            let frame = ServerFrame::Pending {
                reason: b"password",
                wait_ms: u64::MAX,
            };
            frames.handle(frame, &mut sink, &state);
        }
        let mut heeded = 0;
        while let Ok(login) = told.try_recv() {
            assert_eq!(
                Login::Pending(Some(PendingReason::Password), MAX_PENDING_WAIT),
                login
            );
            heeded += 1;
        }
        assert_eq!(MAX_PENDING, heeded);
    }

    #[test]
    fn a_v1_servers_answers_to_the_login_frames_are_swallowed() {
        let (mut frames, mut sink, state, told) = handler(false, 2);
        for _ in 0..2 {
            let frame = ServerFrame::Error {
                code: b"",
                text: v1::V1_HELLO_ANSWER,
            };
            frames.handle(frame, &mut sink, &state);
        }
        assert_eq!(Ok(Login::V1), told.try_recv());
        assert!(sink.0.is_empty(), "{:?}", sink.0);
        assert!(!frames.after_error);
        // A third one is a real error, and shown.
        let frame = ServerFrame::Error {
            code: b"",
            text: v1::V1_HELLO_ANSWER,
        };
        frames.handle(frame, &mut sink, &state);
        assert_eq!(1, sink.0.len());
        assert!(frames.after_error);
    }

    #[test]
    fn messages_go_to_the_sink_and_make_their_sender_the_one_to_reply_to() {
        let (mut frames, mut sink, state, _told) = handler(false, 0);
        let frame = ServerFrame::Message {
            from: b"bob",
            content: b"hi",
        };
        frames.handle(frame, &mut sink, &state);
        assert_eq!(vec!["message bob: hi".to_string()], sink.0);
        assert_eq!(Some("bob".to_string()), state.last_sender());
        assert!(!frames.first);
    }
}
