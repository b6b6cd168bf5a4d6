//! Routing one sender's frames: messages into recipients' queues, and the
//! answers to HELLO and WHO.
//!
//! Each session's reader owns one [`Router`]. It looks recipients up in
//! the [`super::Registry`] only on a miss in its own small cache, encodes
//! each message once, with the recipient's [`super::wire::Wire`], straight
//! into the recipient's [`OutboundQueue`](super::outbound::OutboundQueue), and at the end of a read batch
//! writes every queue it made non-empty directly to its socket (one write
//! per recipient per batch) when nobody else is writing it.
//!
//! With receipts (see [`crate::wire::v1`]) the router numbers the sender's
//! messages and accounts for each: a refusal at once, as REFUSED, after an
//! ACCEPTED for the messages before it; the accepted ones together, one
//! ACCEPTED, when the reader runs out of input or every [`ACK_EVERY`]
//! messages, in the same write as everything else the batch queued for
//! the sender.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

mod across;
mod cross_node;
mod keys;
mod logged;
mod receipts;
mod stored;

use self::cross_node::CrossNode;
use super::auth::HelloRequest;
use super::mailbox::Mailbox;
use super::outbound::PushError;
use super::registry::same_name;
use super::stats::Hot;
use super::Shared;
use crate::sanitize::Escaped;
use crate::wire::texts::{Code, ErrorText};
use crate::wire::v1;

/// The sending session's own session ended while it was routing.
pub(crate) struct SenderClosed;

/// Routes one sender's messages, caching recipients so that the registry
/// lock is rarely taken.
pub(crate) struct Router<'a> {
    shared: &'a Shared,
    /// The sending session (for `from` and for error replies).
    me: &'a Arc<Mailbox>,
    /// Recipient of the previous message: usually also the next one's.
    last: Option<Arc<Mailbox>>,
    /// Recipients seen recently, by name.
    cache: HashMap<Box<[u8]>, Arc<Mailbox>>,
    /// The client negotiated extensions with HELLO, so it may be sent
    /// frames with opcodes of 2 and above.
    pub(crate) extended: bool,
    /// HELLO announced an AUTH frame that has not come yet.
    pub(crate) auth_expected: bool,
    /// Recipients whose idle queues got frames in this batch; written at
    /// the end of the batch by [`Router::flush`].
    to_flush: Vec<Arc<Mailbox>>,
    /// The client asked for receipts.
    receipts: bool,
    /// The session negotiated `keys` (a registered name, proven).
    pub(crate) keys: bool,
    /// Message frames read since login: the ordinal of the latest.
    ordinal: u64,
    /// How many of them [`Stats`](super::stats::Stats) was told of, and
    /// the slot of this worker it counts them in.
    counted: u64,
    slot: usize,
    /// The highest ordinal the client was told about.
    accounted: u64,
    /// Messages to other nodes: the route of the last one and, with
    /// receipts, those whose batch Redis has not acknowledged yet (no
    /// ACCEPTED covers them before it has). Boxed, made on the first such
    /// message: most senders never have one, and an idle connection's
    /// memory counts.
    cross: Option<Box<CrossNode>>,
    /// With `--store`: what the store's side of routing remembers. Boxed,
    /// made on the first message, like `cross`.
    store: Option<Box<stored::StoreRoute>>,
}

impl Drop for Router<'_> {
    fn drop(&mut self) {
        // Cancelled mid-batch (the session is closing): what it staged for
        // other nodes goes whatever the outbox's room (unless Redis or the
        // node is gone, when there is nobody left to tell: as for a
        // message already in the outbox), and the writers write.
        self.hand_on_staged_now(true);
        for session in self.to_flush.drain(..) {
            session.outbound().wake_writer();
        }
    }
}

/// Messages a client with receipts may have unaccounted for while it keeps
/// the reader busy; past it, a read batch ends with an ACCEPTED even if
/// more input is waiting. Well under a client's window (pmchat's is
/// 65,536), and a client with a smaller one stops sending, which makes the
/// reader idle and answer at once.
pub(crate) const ACK_EVERY: u64 = 8192;

/// Recipients remembered per sender before the cache is reset.
const RECIPIENT_CACHE: usize = 256;

impl<'a> Router<'a> {
    pub(crate) fn new(shared: &'a Shared, me: &'a Arc<Mailbox>) -> Self {
        Router {
            shared,
            me,
            last: None,
            cache: HashMap::new(),
            extended: false,
            auth_expected: false,
            to_flush: Vec::new(),
            receipts: false,
            keys: false,
            ordinal: 0,
            accounted: 0,
            counted: 0,
            slot: shared.stats.slot(),
            cross: None,
            store: None,
        }
    }

    /// Ends a read batch: tells a client with receipts that the messages
    /// since the last receipt were accepted, when it matters, then writes
    /// every queue the batch made non-empty. `idle`: the reader is about
    /// to wait for input, so the client is waiting for receipts (or has
    /// nothing more to send); otherwise receipts wait until
    /// [`ACK_EVERY`] messages are unaccounted for, so that a client
    /// sending flat out gets one for many read batches, not one for each.
    pub(crate) async fn finish_batch(&mut self, idle: bool) -> Result<(), SenderClosed> {
        if !self.hand_on_staged_now(false) {
            Box::pin(self.hand_on_staged()).await?;
        }
        // Counted once per read batch, not per message.
        let routed = self.ordinal - self.counted;
        if routed > 0 {
            self.counted = self.ordinal;
            self.shared.stats.add(self.slot, Hot::Routed, routed);
        }
        let unaccounted = self.ordinal - self.accounted;
        if self.receipts
            && unaccounted > 0
            && (idle || unaccounted >= ACK_EVERY)
            && self.has_unconfirmed()
        {
            Box::pin(self.confirm_forwarded()).await?;
        }
        if self.stored_to_settle(idle, self.ordinal - self.accounted) {
            Box::pin(self.settle_stored()).await?;
        }
        let unaccounted = self.ordinal - self.accounted;
        if self.receipts && unaccounted > 0 && (idle || unaccounted >= ACK_EVERY) {
            self.accounted = self.ordinal;
            self.reply(&v1::accepted_frame(self.ordinal)).await?;
        }
        self.flush();
        Ok(())
    }

    /// The slot of this worker its counts go to.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    /// Writes every queue this batch made non-empty straight to its socket.
    pub(crate) fn flush(&mut self) {
        self.hand_on_staged_now(false);
        for session in self.to_flush.drain(..) {
            match session.connection() {
                Some(connection) => session.outbound().flush_direct(&connection),
                None => session.outbound().wake_writer(),
            }
        }
    }

    /// Queues a frame for `session` without waiting; an idle queue is
    /// remembered for the end-of-batch flush.
    fn push_now(
        &mut self,
        session: &Arc<Mailbox>,
        len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), PushError> {
        if session.outbound().try_push_deferred(len, encode)? {
            self.to_flush.push(Arc::clone(session));
        }
        Ok(())
    }

    /// Answers HELLO with WELCOME (and, if asked, the online list followed
    /// by presence events). `authenticated`: the login proved a registered
    /// name with its password (and its AUTH frame was read with it), with
    /// the device token to give it, if any.
    pub(crate) async fn hello(
        &mut self,
        request: HelloRequest,
        authenticated: Option<Option<String>>,
    ) -> Result<(), SenderClosed> {
        let (authenticated, token) = match authenticated {
            Some(token) => (true, token),
            None => (false, None),
        };
        self.extended = true;
        self.auth_expected = request.password && !authenticated;
        self.receipts = request.receipts;
        // `sealed` counts only with `codes` (`Wire::of_hello`).
        let wire = super::wire::Wire::of_hello(request.codes, request.sealed);
        if request.codes {
            self.me.set_wire(wire);
        }
        let server = concat!("pmchat-server/", env!("CARGO_PKG_VERSION"));
        let mut limits = v1::format_limits(&self.shared.config.limits);
        if authenticated {
            limits.push(' ');
            limits.push_str(v1::WELCOME_AUTHENTICATED);
        }
        if let Some(token) = token {
            limits.push_str(&format!(" {}={token}", v1::WELCOME_TOKEN));
        }
        if request.receipts {
            limits.push(' ');
            limits.push_str(v1::FEATURE_RECEIPTS);
        }
        if request.codes {
            limits.push(' ');
            limits.push_str(v1::FEATURE_CODES);
        }
        if wire == super::wire::Wire::Sealed {
            limits.push(' ');
            limits.push_str(v1::FEATURE_SEALED);
        }
        if request.inbox && self.me.is_inbox() {
            limits.push(' ');
            limits.push_str(v1::FEATURE_INBOX);
        }
        if request.keys && authenticated && self.shared.keys.is_some() {
            limits.push(' ');
            limits.push_str(v1::FEATURE_KEYS);
            self.keys = true;
        }
        if request.stored && request.receipts && self.shared.has_inboxes() {
            limits.push(' ');
            limits.push_str(v1::FEATURE_STORED);
            self.store.get_or_insert_with(Box::default).stored_receipts = true;
        }
        let mut welcome = Vec::new();
        // Both fields are short server-made strings.
        let _ = v1::encode_pair(
            v1::OP_HELLO,
            server.as_bytes(),
            limits.as_bytes(),
            &mut welcome,
        );
        debug!(user = self.me.name(), ?request, "negotiated extensions");
        if request.presence {
            self.shared.registry.watch(self.me, &welcome);
            return Ok(());
        }
        self.reply(&welcome).await
    }

    /// Answers WHO with the online list.
    pub(crate) async fn who(&mut self) -> Result<(), SenderClosed> {
        let mut frames = Vec::new();
        v1::encode_online(&self.shared.registry.names(), &mut frames);
        self.reply(&frames).await
    }

    fn lookup(&mut self, to: &[u8]) -> Option<Arc<Mailbox>> {
        if let Some(last) = &self.last {
            if same_name(last.name().as_bytes(), to) {
                return Some(Arc::clone(last));
            }
        }
        let found = match self.cache.get(to) {
            Some(hit) => Arc::clone(hit),
            None => {
                let fresh = self.shared.registry.get(to)?;
                if self.cache.len() >= RECIPIENT_CACHE {
                    self.cache.clear();
                }
                self.cache.insert(to.into(), Arc::clone(&fresh));
                fresh
            }
        };
        self.last = Some(Arc::clone(&found));
        Some(found)
    }

    fn forget(&mut self, to: &[u8]) {
        self.last = None;
        self.cache.remove(to);
    }

    pub(crate) async fn route(&mut self, to: &[u8], content: &[u8]) -> Result<(), SenderClosed> {
        // Counted whether or not receipts are on: one add is cheaper than
        // a branch to skip it.
        self.ordinal += 1;
        // Sealed content (binary) from a session that asked to send it;
        // text from anyone.
        let readable = match v1::is_sealed(content) {
            true => self.me.wire() == super::wire::Wire::Sealed,
            false => v1::is_text(content),
        };
        if !readable {
            let error = ErrorText::new(Code::NotUtf8, Escaped(to));
            return self.refuse(&error).await;
        }
        // With a store, a registered recipient's inbox first.
        if let Some(inboxes) = &self.shared.inboxes {
            match self.route_to_inbox(inboxes, to, content) {
                stored::ToInbox::NotRegistered | stored::ToInbox::Plain => {}
                stored::ToInbox::Done => {
                    self.shared.stats.add(self.slot, Hot::Stored, 1);
                    return Ok(());
                }
                stored::ToInbox::Unavailable => {
                    let error = ErrorText::new(Code::StoreUnavailable, Escaped(to));
                    return self.refuse(&error).await;
                }
            }
        } else if let Some(logs) = &self.shared.stream_inboxes {
            let mut logged = self.route_to_log(logs, to, content);
            if let logged::ToLog::Full = logged {
                logged = self.route_to_log_waiting(logs, to, content).await;
            }
            match logged {
                logged::ToLog::NotRegistered => {}
                logged::ToLog::Appended => {
                    self.shared.stats.add(self.slot, Hot::Stored, 1);
                    return Ok(());
                }
                logged::ToLog::Unavailable | logged::ToLog::Full => {
                    let error = ErrorText::new(Code::StoreUnavailable, Escaped(to));
                    return self.refuse(&error).await;
                }
            }
        }
        if self.send_on_kept_route(to, content) {
            return Ok(());
        }
        let me = self.me.name().as_bytes();
        // Read before the lookups: a change after them moves it, and the
        // route found is not kept past that.
        let generation = self.shared.registry.generation();
        // Two attempts: a cached recipient may have left, and someone new
        // may hold the name by now.
        for _ in 0..2 {
            let Some(recipient) = self.lookup(to) else {
                break;
            };
            // Encoded once, in the recipient's wire, straight into its queue.
            let (wire, name) = (recipient.wire(), recipient.name().as_bytes());
            let len = wire.message_len(name, me, content);
            let encode = |out: &mut Vec<u8>| wire.encode_message(name, me, content, out);
            let pushed = match self.push_now(&recipient, len, encode) {
                Err(PushError::Full) => {
                    // Write out what this batch routed so far before waiting.
                    self.flush();
                    let deadline = Instant::now() + self.shared.config.slow_consumer_timeout;
                    recipient.outbound().push(len, deadline, encode).await
                }
                other => other,
            };
            match pushed {
                Ok(()) => {
                    if let Some(inboxes) = &self.shared.inboxes {
                        self.log_sent(inboxes, to, content);
                    } else if let Some(logs) = &self.shared.stream_inboxes {
                        self.log_sent_to_redis(logs, to, content);
                    }
                    debug!(
                        "{} -> {}: {}",
                        self.me.name(),
                        recipient.name(),
                        Logged(content)
                    );
                    return Ok(());
                }
                Err(PushError::Closed) => self.forget(to),
                Err(PushError::Full) => {
                    self.forget(to);
                    self.disconnect_slow(&recipient);
                    return self
                        .refuse(&ErrorText::new(Code::SlowConsumer, recipient.name()))
                        .await;
                }
            }
        }
        // On another node of the cluster? Boxed: a single node's sessions
        // carry no room in their futures for the cross-node path's state,
        // and on a cluster only a message that misses the cached route
        // (above) takes this allocation.
        let shared = self.shared;
        if let Some(cluster) = &shared.cluster {
            if let Some(node) = shared.registry.remote_node(to) {
                let across = self.route_across(cluster, node, to, content, generation);
                return Box::pin(across).await;
            }
            // Redis came back moments ago: the recipient's node may not
            // have announced it again yet.
            if cluster.settling() {
                let error = ErrorText::new(Code::Unreachable, Escaped(to));
                return self.refuse(&error).await;
            }
        }
        self.refuse(&ErrorText::new(Code::NotConnected, Escaped(to)))
            .await
    }

    /// Tells the sender that its latest message was not delivered: an
    /// error frame, or with receipts an ACCEPTED for the messages before it
    /// (if any are unaccounted) and a REFUSED naming it.
    async fn refuse(&mut self, error: &ErrorText) -> Result<(), SenderClosed> {
        self.shared.stats.refused(error.code());
        if !self.receipts {
            return self.reply_error(error).await;
        }
        // Receipts go out in order: those before it first.
        if self.has_unconfirmed() {
            Box::pin(self.confirm_forwarded()).await?;
        }
        if self.stored_to_settle(true, 0) {
            Box::pin(self.settle_stored()).await?;
        }
        let mut frames = Vec::new();
        let refused = self.ordinal;
        if refused - 1 > self.accounted {
            v1::encode_accepted(refused - 1, &mut frames);
        }
        let code = self.me.wire().code_of(error);
        v1::encode_refused(refused, code, error.text(), &mut frames);
        self.accounted = refused;
        self.reply(&frames).await
    }

    fn disconnect_slow(&self, session: &Arc<Mailbox>) {
        let limit = self.shared.config.slow_consumer_timeout;
        if session.disconnect_slow(format_args!("outbound queue stayed full for {limit:?}")) {
            self.shared.registry.remove(session);
        }
    }

    /// Queues an error frame for the sender itself.
    async fn reply_error(&mut self, error: &ErrorText) -> Result<(), SenderClosed> {
        let frame = self.me.wire().error_frame(error);
        self.reply(&frame).await
    }

    /// Queues encoded frames for the sender itself, waiting for room like
    /// any other frame: a sender that never reads its replies is a slow
    /// consumer too. A reply larger than the queue goes into an empty one.
    async fn reply(&mut self, frames: &[u8]) -> Result<(), SenderClosed> {
        let encode = |out: &mut Vec<u8>| out.extend_from_slice(frames);
        let me = self.me;
        let pushed = match self.push_now(me, frames.len(), encode) {
            Err(PushError::Full) => {
                self.flush();
                let deadline = Instant::now() + self.shared.config.slow_consumer_timeout;
                me.outbound().push(frames.len(), deadline, encode).await
            }
            other => other,
        };
        match pushed {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SenderClosed),
            Err(PushError::Full) => {
                self.disconnect_slow(self.me);
                Err(SenderClosed)
            }
        }
    }
}

/// A message's content as `-v` logs it: escaped text, or for sealed
/// content only its size (its bytes mean nothing to anyone reading logs).
struct Logged<'a>(&'a [u8]);

impl std::fmt::Display for Logged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match v1::is_sealed(self.0) {
            true => write!(f, "[sealed, {} bytes]", self.0.len()),
            false => Escaped(self.0).fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{queued, session, shared, Out};
    use super::*;

    fn out_message(from: &str, content: &str) -> Out {
        Out::Message(from.into(), content.into())
    }

    /// Logged-in sessions with these names (and their clients' ends).
    fn online(shared: &Shared, names: &[&str]) -> Vec<(Arc<Mailbox>, std::net::TcpStream)> {
        names
            .iter()
            .map(|name| {
                let (s, c) = session(shared, name);
                shared.registry.insert(&s).unwrap();
                (s, c)
            })
            .collect()
    }

    #[test]
    fn a_message_lands_in_the_recipients_queue_once_with_the_senders_name() {
        let shared = shared();
        let users = online(&shared, &["alice", "bob"]);
        let (alice, bob) = (&users[0].0, &users[1].0);
        let mut router = Router::new(&shared, alice);
        smol::block_on(async {
            assert!(router.route(b"bob", b"hi").await.is_ok());
            assert!(router.route(b"bob", "é 🌍".as_bytes()).await.is_ok());
        });
        // Not flushed yet: the batch is still being routed.
        assert_eq!(
            queued(bob),
            [out_message("alice", "hi"), out_message("alice", "é 🌍")]
        );
        assert_eq!(queued(alice), []);
    }

    #[test]
    fn the_sender_is_told_when_a_recipient_is_not_connected() {
        let shared = shared();
        let users = online(&shared, &["alice"]);
        let alice = &users[0].0;
        let mut router = Router::new(&shared, alice);
        smol::block_on(async {
            router.route(b"nobody", b"hi").await.ok();
            router.route(b"alice", b"\xff").await.ok();
        });
        assert_eq!(
            queued(alice),
            [
                Out::Error("'nobody' is not connected\n".into()),
                Out::Error("message to 'alice' is not valid UTF-8; not delivered\n".into()),
            ]
        );
    }

    /// A router for `me` after a HELLO asking for receipts.
    fn with_receipts<'a>(shared: &'a Shared, me: &'a Arc<Mailbox>) -> Router<'a> {
        let mut router = Router::new(shared, me);
        let receipts = HelloRequest {
            receipts: true,
            ..HelloRequest::default()
        };
        assert!(smol::block_on(router.hello(receipts, None)).is_ok());
        router
    }

    #[test]
    fn receipts_account_for_every_message_in_order_and_replace_error_frames() {
        let shared = shared();
        let users = online(&shared, &["alice", "bob"]);
        let (alice, bob) = (&users[0].0, &users[1].0);
        let mut router = with_receipts(&shared, alice);
        smol::block_on(async {
            // One read batch: accepted, accepted, refused, accepted.
            for to in ["bob", "bob", "dave", "bob"] {
                assert!(router.route(to.as_bytes(), b"hi").await.is_ok());
            }
            assert!(router.finish_batch(true).await.is_ok());
            // A batch that only refuses needs no ACCEPTED after it.
            assert!(router.route(b"dave", b"\xff").await.is_ok());
            assert!(router.finish_batch(true).await.is_ok());
            // Nothing read, nothing to account for.
            assert!(router.finish_batch(true).await.is_ok());
        });
        assert_eq!(queued(bob).len(), 3);
        assert_eq!(
            queued(alice),
            [
                Out::Welcome,
                Out::Accepted(2),
                Out::Refused(3, "'dave' is not connected\n".into()),
                Out::Accepted(4),
                Out::Refused(
                    5,
                    "message to 'dave' is not valid UTF-8; not delivered\n".into()
                ),
            ]
        );
    }

    #[test]
    fn a_busy_reader_answers_every_ack_every_messages_and_an_idle_one_at_once() {
        let shared = shared();
        let users = online(&shared, &["alice", "bob"]);
        let (alice, bob) = (&users[0].0, &users[1].0);
        let mut router = with_receipts(&shared, alice);
        smol::block_on(async {
            assert!(router.route(b"bob", b"hi").await.is_ok());
            // More input is waiting: no receipt for one message yet.
            assert!(router.finish_batch(false).await.is_ok());
        });
        assert_eq!(queued(alice), [Out::Welcome]);
        smol::block_on(async {
            for _ in 1..ACK_EVERY {
                assert!(router.route(b"bob", b"hi").await.is_ok());
            }
            assert!(router.finish_batch(false).await.is_ok());
            assert!(router.route(b"bob", b"hi").await.is_ok());
            assert!(router.finish_batch(true).await.is_ok());
        });
        assert_eq!(
            queued(alice),
            [Out::Accepted(ACK_EVERY), Out::Accepted(ACK_EVERY + 1)]
        );
        drop(queued(bob));
    }

    #[test]
    fn without_receipts_the_sender_gets_only_error_frames() {
        let shared = shared();
        let users = online(&shared, &["alice", "bob"]);
        let alice = &users[0].0;
        let mut router = Router::new(&shared, alice);
        smol::block_on(async {
            assert!(router.hello(HelloRequest::default(), None).await.is_ok());
            for to in ["bob", "dave", "bob"] {
                assert!(router.route(to.as_bytes(), b"hi").await.is_ok());
            }
            assert!(router.finish_batch(true).await.is_ok());
        });
        assert_eq!(
            queued(alice),
            [Out::Welcome, Out::Error("'dave' is not connected\n".into())]
        );
    }

    #[test]
    fn a_cached_recipient_that_left_is_looked_up_again() {
        let shared = shared();
        let users = online(&shared, &["alice", "bob"]);
        let (alice, bob) = (&users[0].0, &users[1].0);
        let mut router = Router::new(&shared, alice);
        smol::block_on(router.route(b"bob", b"first")).ok();
        // bob leaves (his queue closes) and a new bob logs in.
        shared.registry.remove(bob);
        bob.outbound().close(None);
        let (new_bob, _c3) = session(&shared, "bob");
        shared.registry.insert(&new_bob).unwrap();
        smol::block_on(router.route(b"bob", b"second")).ok();
        assert_eq!(queued(&new_bob), [out_message("alice", "second")]);
        assert_eq!(queued(alice), []);
    }

    #[test]
    fn who_answers_with_the_online_list() {
        let shared = shared();
        let users = online(&shared, &["bob", "alice"]);
        let alice = &users[1].0;
        let mut router = Router::new(&shared, alice);
        smol::block_on(router.who()).ok();
        assert_eq!(
            queued(alice),
            [Out::Online(true, vec!["alice".into(), "bob".into()])]
        );
    }
}
