//! Logging in to a registered name: the password check, kept off the I/O
//! threads, and the back-off that slows down guessing.
//!
//! A login to a name in the accounts file goes through [`authenticate`]
//! before the name is claimed in the registry:
//!
//! 1. The first frame after the handshake must be a HELLO listing the
//!    `password` feature; anything else (a v1 client's first message, a
//!    client without passwords, silence for [`FIRST_FRAME_WAIT`]) gets
//!    `'NAME' is a registered name; log in with a client that supports
//!    passwords`. pmchat's client sends its HELLO with its username, so a
//!    silent peer is one that will not send it.
//! 2. The next frame must be AUTH. An empty password is "a password is
//!    required"; a password over plain TCP is refused unless the server
//!    allows it (`--allow-plaintext-passwords`), without being checked.
//! 3. The attempt waits out the back-off that earlier failures for this
//!    name or from this address earned ([`GuessThrottle`]), unless AUTH carries
//!    a valid device token for the name ([`super::device`]); then the hash is
//!    checked on the [`Verifier`] thread. A full verifier queue refuses the
//!    login at once rather than queueing without bound. When this takes
//!    time, the client is told PENDING with the longest it may take
//!    ([`super::pending`]), and a check not done by then is refused as
//!    busy.
//!
//! The password itself is never logged, and dropped as soon as it was
//! checked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use smol::future::FutureExt;
use smol::Timer;
use tracing::{info, warn};

use super::accounts::{verify_password, Accounts};
use super::device::DeviceTokens;
use super::pending::bounded_login_step;
use super::refusal::Step;
use super::wire::{starts_gob, InputDecoder, Wire};
use super::Shared;
use crate::net::transport::Transport;
use crate::runtime::until;
use crate::wire::framing::FrameReader;
use crate::wire::texts::{Code, ErrorText};
use crate::wire::v1::{self, ClientFrame, PendingReason};

/// What a HELLO asked for, kept after its frame left the read buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HelloRequest {
    /// The online list, then presence events.
    pub(crate) presence: bool,
    /// An AUTH frame follows.
    pub(crate) password: bool,
    /// ACCEPTED and REFUSED for every message.
    pub(crate) receipts: bool,
    /// Errors and refusals with their codes.
    pub(crate) codes: bool,
    /// The user's log (`--store`): messages as ENTRY frames, replayed
    /// after `after` (or after the owner's mark) first.
    pub(crate) inbox: bool,
    /// `after=ID`: the cursor of the client's device.
    pub(crate) after: Option<u64>,
    /// `after_time=MS`: replay what was logged from then on instead.
    pub(crate) after_time: Option<u64>,
    /// With receipts, STORED for messages stored for later.
    pub(crate) stored: bool,
    /// The `keys` extension (a registered name only).
    pub(crate) keys: bool,
    /// Sealed content (with `codes`).
    pub(crate) sealed: bool,
}

impl HelloRequest {
    /// Reads a HELLO's space-separated feature list; unknown features are
    /// ignored, as the extension rules say.
    pub(crate) fn parse(features: &[u8]) -> HelloRequest {
        let mut request = HelloRequest::default();
        for feature in features.split(|&b| b == b' ') {
            match feature {
                f if f == v1::FEATURE_PRESENCE.as_bytes() => request.presence = true,
                f if f == v1::FEATURE_PASSWORD.as_bytes() => request.password = true,
                f if f == v1::FEATURE_RECEIPTS.as_bytes() => request.receipts = true,
                f if f == v1::FEATURE_CODES.as_bytes() => request.codes = true,
                f if f == v1::FEATURE_INBOX.as_bytes() => request.inbox = true,
                f if f == v1::FEATURE_STORED.as_bytes() => request.stored = true,
                f if f == v1::FEATURE_KEYS.as_bytes() => request.keys = true,
                f if f == v1::FEATURE_SEALED.as_bytes() => request.sealed = true,
                f => {
                    let number = |key: &str| {
                        let value = f.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
                        std::str::from_utf8(value).ok()?.parse().ok()
                    };
                    if let Some(after) = number(v1::HELLO_AFTER) {
                        request.after = Some(after);
                    }
                    if let Some(time) = number(v1::HELLO_AFTER_TIME) {
                        request.after_time = Some(time);
                    }
                }
            }
        }
        request
    }
}

/// Failed attempts before the back-off starts.
const FREE_FAILURES: u32 = 3;
/// The first back-off; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest back-off.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most source addresses tracked at once; past it the stalest is dropped,
/// so a flood from many addresses cannot grow the table without bound
/// (the per-name count, bounded by the accounts file, still applies).
const MAX_ADDRESSES: usize = 65_536;

/// Failed attempts against one name or from one address.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
    /// When the latest attempt's check was scheduled to start (names
    /// only): the next one starts its own delay after it.
    latest_check: Instant,
}

/// How long an attempt waits after `failures` earlier ones.
fn delay_after(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(doublings) => FIRST_DELAY
            .saturating_mul(1u32 << doublings.min(16))
            .min(MAX_DELAY),
    }
}

/// Back-off per name and per source address.
///
/// An attempt counts as a failure from the moment it starts
/// ([`GuessThrottle::begin`]) until it succeeds. The checks of one name's
/// attempts are spaced out, each its delay after the previous one was
/// scheduled, however many connections carry them: a hundred guesses sent
/// at once are checked in turn, on the schedule, and those that would wait
/// longer than [`MAX_DELAY`] for their turn are refused at once, unchecked.
#[derive(Debug, Default)]
pub(crate) struct GuessThrottle {
    table: Mutex<BackoffTable>,
}

#[derive(Debug, Default)]
struct BackoffTable {
    names: HashMap<Box<str>, Failures>,
    addresses: HashMap<IpAddr, Failures>,
}

impl GuessThrottle {
    /// Counts an attempt; returns how long it must wait before its
    /// password is checked, or `None` (not counted) when its turn would
    /// come more than [`MAX_DELAY`] from now: enough of this name's
    /// attempts are waiting already.
    pub(crate) fn begin(&self, name: &str, address: IpAddr, now: Instant) -> Option<Duration> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.addresses.contains_key(&address) && table.addresses.len() >= MAX_ADDRESSES {
            table.forget_stale(now);
            if table.addresses.len() >= MAX_ADDRESSES {
                table.drop_stalest_address();
            }
        }
        let by_address = table.addresses.get(&address).map_or(0, |f| f.count);
        let by_name = table.names.entry(name.into()).or_insert(fresh(now));
        let delay = delay_after(by_name.count.max(by_address));
        let check = by_name.latest_check.max(now) + delay;
        if check.duration_since(now) > MAX_DELAY {
            return None;
        }
        by_name.latest_check = check;
        bump(by_name, now);
        bump(table.addresses.entry(address).or_insert(fresh(now)), now);
        Some(check.duration_since(now))
    }

    /// The attempt proved the name: the name starts afresh, and the
    /// address is no longer charged for this attempt.
    pub(crate) fn succeeded(&self, name: &str, address: IpAddr) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.names.remove(name);
        if let Some(failures) = table.addresses.get_mut(&address) {
            failures.count = failures.count.saturating_sub(1);
        }
    }

    /// Failed attempts on record for `name` and from `address`.
    pub(crate) fn failures(&self, name: &str, address: IpAddr) -> (u32, u32) {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        (
            table.names.get(name).map_or(0, |f| f.count),
            table.addresses.get(&address).map_or(0, |f| f.count),
        )
    }

    /// Forgets failures older than [`FORGET_AFTER`].
    pub(crate) fn forget_stale(&self, now: Instant) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_stale(now);
    }
}

fn fresh(now: Instant) -> Failures {
    Failures {
        count: 0,
        last: now,
        latest_check: now,
    }
}

/// Counts one more attempt; returns the count before it.
fn bump(failures: &mut Failures, now: Instant) -> u32 {
    let before = failures.count;
    failures.count = failures.count.saturating_add(1);
    failures.last = now;
    before
}

impl BackoffTable {
    fn forget_stale(&mut self, now: Instant) {
        let live = |f: &mut Failures| now.duration_since(f.last) < FORGET_AFTER && f.count > 0;
        self.names.retain(|_, f| live(f));
        self.addresses.retain(|_, f| live(f));
    }

    fn drop_stalest_address(&mut self) {
        let stalest = self
            .addresses
            .iter()
            .min_by_key(|(_, f)| f.last)
            .map(|(address, _)| *address);
        if let Some(address) = stalest {
            self.addresses.remove(&address);
        }
    }
}

/// Logins waiting for the verifier before new ones are refused.
const VERIFY_QUEUE: usize = 32;
/// The longest a password check may take once its back-off is over,
/// queue included (a full queue takes about 2 s here); the PENDING frame
/// promises an answer within the back-off plus this.
const VERIFY_BOUND: Duration = Duration::from_secs(10);
/// How long a login to a registered name waits for the client's first
/// frame. pmchat's client sends HELLO and AUTH with its username, so
/// they are normally there already; a v1 or gob peer that stays silent is
/// refused after this rather than after the whole handshake timeout.
pub(crate) const FIRST_FRAME_WAIT: Duration = Duration::from_secs(1);

/// One password to check against one hash.
struct Check {
    hash: Box<str>,
    password: Vec<u8>,
    verdict: async_channel::Sender<bool>,
}

/// The password checker: one thread with a bounded queue, so however many
/// logins arrive, argon2 takes at most one core and the I/O threads none.
#[derive(Debug)]
pub(crate) struct Verifier {
    checks: async_channel::Sender<Check>,
}

/// The verifier cannot take another check now.
#[derive(Debug)]
pub(crate) struct Busy;

impl Verifier {
    /// Starts the verifier thread; it ends when the verifier is dropped.
    /// If the thread cannot be started, every check is refused as busy
    /// (and that is logged): logins to registered names fail, nothing else.
    pub(crate) fn start() -> Verifier {
        let (checks, queue) = async_channel::bounded::<Check>(VERIFY_QUEUE);
        let started = std::thread::Builder::new()
            .name(crate::runtime::thread_name("pwd"))
            .spawn(move || {
                while let Ok(mut check) = queue.recv_blocking() {
                    let ok = verify_password(&check.hash, &check.password);
                    check.password.fill(0);
                    let _ = check.verdict.try_send(ok);
                }
            });
        if let Err(e) = started {
            tracing::error!(
                "cannot start the password checker: {e}; registered names cannot log in"
            );
        }
        Verifier { checks }
    }

    /// Checks `password` against `hash` on the verifier thread.
    pub(crate) async fn verify(&self, hash: Box<str>, password: Vec<u8>) -> Result<bool, Busy> {
        let (verdict, answer) = async_channel::bounded(1);
        let check = Check {
            hash,
            password,
            verdict,
        };
        if let Err(refused) = self.checks.try_send(check) {
            refused.into_inner().password.fill(0);
            return Err(Busy);
        }
        // The thread always answers; a closed channel means it died.
        answer.recv().await.map_err(|_| Busy)
    }
}

/// The server's account state: the file, the checker, the back-off, the
/// device tokens.
#[derive(Debug)]
pub(crate) struct AuthState {
    pub(crate) accounts: Arc<Accounts>,
    verifier: Verifier,
    pub(crate) backoff: GuessThrottle,
    tokens: DeviceTokens,
}

impl AuthState {
    /// Password checks waiting for the checker thread.
    pub(crate) fn checks_waiting(&self) -> usize {
        self.verifier.checks.len()
    }
}

/// A login proved with its password: its HELLO, still to be answered, and
/// the device token to give it.
pub(crate) struct Proven {
    pub(crate) hello: HelloRequest,
    pub(crate) token: Option<String>,
}

impl AuthState {
    pub(crate) fn new(accounts: Arc<Accounts>, tokens: DeviceTokens) -> AuthState {
        AuthState {
            accounts,
            verifier: Verifier::start(),
            backoff: GuessThrottle::default(),
            tokens,
        }
    }
}

/// The owned gist of a frame read during login.
enum LoginFrame {
    Hello(HelloRequest),
    /// A device token (may be empty) and the password.
    Auth(Vec<u8>, Vec<u8>),
    /// The client speaks gob, which has no passwords.
    Gob,
    Other,
}

/// Why no login frame came.
enum NoFrame {
    TimedOut,
    /// Input ended, failed or broke the protocol: nobody to tell, or
    /// nothing worth telling beyond the refusal.
    Gone,
    Invalid(ErrorText),
}

async fn next_login_frame(
    transport: &Transport,
    input: &mut FrameReader<InputDecoder>,
    deadline: Instant,
) -> Result<LoginFrame, NoFrame> {
    loop {
        match input.next_frame() {
            Ok(Some(ClientFrame::Hello { features })) => {
                return Ok(LoginFrame::Hello(HelloRequest::parse(features)))
            }
            Ok(Some(ClientFrame::Auth { token, password })) => {
                return Ok(LoginFrame::Auth(token.to_vec(), password.to_vec()))
            }
            Ok(Some(_)) => return Ok(LoginFrame::Other),
            Ok(None) => {}
            Err(e) => {
                if starts_gob(input.buffered()) {
                    return Ok(LoginFrame::Gob);
                }
                return Err(NoFrame::Invalid(ErrorText::protocol(&e)));
            }
        }
        match until(deadline, transport.read(input)).await {
            None => return Err(NoFrame::TimedOut),
            Some(Ok(0) | Err(_)) => return Err(NoFrame::Gone),
            Some(Ok(_)) => {}
        }
    }
}

/// Proves a login to the registered name `name`, or says why it is
/// refused. Passes with the HELLO the login came with, still to be
/// answered, and a fresh device token.
pub(crate) async fn authenticate(
    shared: &Shared,
    auth: &AuthState,
    transport: &Transport,
    peer: SocketAddr,
    name: &str,
    input: &mut FrameReader<InputDecoder>,
) -> Step<Proven> {
    let steps = async {
        let deadline = Instant::now() + shared.config.handshake_timeout;
        let first_deadline = Instant::now() + FIRST_FRAME_WAIT.min(shared.config.handshake_timeout);
        let hello = match next_login_frame(transport, input, first_deadline).await {
            Ok(LoginFrame::Hello(hello)) if hello.password => hello,
            Err(NoFrame::Gone) => return Step::Gone,
            first => {
                info!(%peer, user = name, "rejected: registered name, no password offered");
                let wire = match first {
                    Ok(LoginFrame::Gob) => Wire::Gob,
                    Ok(LoginFrame::Hello(hello)) if hello.codes => Wire::Coded,
                    // Silent: told in the wire such clients speak here.
                    Err(NoFrame::TimedOut) => shared.config.default_wire,
                    _ => Wire::V1,
                };
                return Step::refused(wire, ErrorText::new(Code::PasswordUnsupported, name));
            }
        };
        let (token, password) = match next_login_frame(transport, input, deadline).await {
            Ok(LoginFrame::Auth(token, password)) => (token, password),
            Err(NoFrame::Gone) => return Step::Gone,
            Err(NoFrame::Invalid(error)) => return refusal(&hello, error),
            _ => {
                let error =
                    ErrorText::protocol(&"expected AUTH right after a HELLO listing 'password'");
                return refusal(&hello, error);
            }
        };
        if password.is_empty() {
            info!(%peer, user = name, "rejected: registered name, no password");
            return refusal(&hello, ErrorText::new(Code::PasswordRequired, name));
        }
        if !transport.is_tls() && !shared.config.allow_plaintext_passwords {
            warn!(%peer, user = name, "rejected: password sent over plain TCP (not checked)");
            return refusal(&hello, ErrorText::of(Code::PasswordsNeedTls));
        }
        let Some(hash) = auth.accounts.table().hash_of(name).map(Box::<str>::from) else {
            // Unregistered by a reload meanwhile: the name is free again.
            return Step::Passed(Proven { hello, token: None });
        };
        // A device that proved this name before skips the back-off other
        // devices' failures earned it.
        let trusted =
            !token.is_empty() && auth.tokens.valid(&token, name, &hash, SystemTime::now());
        let wait = if trusted {
            Some(Duration::ZERO)
        } else {
            auth.backoff.begin(name, peer.ip(), Instant::now())
        };
        let Some(wait) = wait else {
            warn!(%peer, user = name, "rejected: too many attempts waiting for this name");
            return refusal(&hello, ErrorText::of(Code::LoginsBusy));
        };
        if !wait.is_zero() {
            info!(%peer, user = name, "login delayed {wait:?} after earlier failures");
        }
        let check = async {
            Timer::after(wait).await;
            auth.verifier.verify(hash.clone(), password).await
        };
        let bound = wait + VERIFY_BOUND;
        let checked = bounded_login_step(transport, true, PendingReason::Password, bound, check)
            .await
            .unwrap_or(Err(Busy));
        match checked {
            Ok(true) => {
                if !trusted {
                    auth.backoff.succeeded(name, peer.ip());
                }
                let token = auth.tokens.issue(name, &hash, SystemTime::now());
                Step::Passed(Proven {
                    hello,
                    token: Some(token),
                })
            }
            Ok(false) => {
                if trusted {
                    auth.tokens.failed(&token);
                }
                let (for_name, from_address) = auth.backoff.failures(name, peer.ip());
                warn!(
                    %peer,
                    user = name,
                    failures_for_name = for_name,
                    failures_from_address = from_address,
                    "wrong password"
                );
                refusal(&hello, ErrorText::new(Code::WrongPassword, name))
            }
            Err(Busy) => {
                warn!(%peer, user = name, "rejected: too many logins waiting for a password check");
                refusal(&hello, ErrorText::of(Code::LoginsBusy))
            }
        }
    };
    steps
        .or(async {
            shared.shutdown.wait().await;
            // The wire is v1 here: a gob client is refused at its first
            // frame, before it can wait for anything.
            Step::refused(Wire::V1, ErrorText::of(Code::ShuttingDown))
        })
        .await
}

/// A refusal after `hello`: everything after the first frame is v1 (a gob
/// client was refused at its first frame), coded if the HELLO asked.
fn refusal<T>(hello: &HelloRequest, error: ErrorText) -> Step<T> {
    let wire = if hello.codes { Wire::Coded } else { Wire::V1 };
    Step::refused(wire, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn hello_features_are_read_word_by_word() {
        assert_eq!(
            HelloRequest::parse(b"pmchat/1 presence password"),
            HelloRequest {
                presence: true,
                password: true,
                ..HelloRequest::default()
            }
        );
        assert!(HelloRequest::parse(b"pmchat/1 receipts").receipts);
        let inbox = HelloRequest::parse(b"pmchat/1 inbox after=42 stored");
        assert!(inbox.inbox && inbox.stored);
        assert_eq!(inbox.after, Some(42));
        assert_eq!(HelloRequest::parse(b"inbox after=x").after, None);
        assert_eq!(HelloRequest::parse(b"inbox after").after, None);
        assert_eq!(
            HelloRequest::parse(b"inbox after_time=5").after_time,
            Some(5)
        );
        assert_eq!(HelloRequest::parse(b"inbox after_time=5").after, None);
        assert_eq!(
            HelloRequest::parse(b"pmchat/1 passwords"),
            HelloRequest::default()
        );
    }

    #[test]
    fn the_fifth_guess_waits_and_the_delay_doubles_up_to_a_cap() {
        let backoff = GuessThrottle::default();
        let mut now = Instant::now();
        let mut delays = Vec::new();
        // One attempt at a time, each after the previous one's check.
        for _ in 0..12 {
            let delay = backoff.begin("alice", HOME, now).unwrap();
            delays.push(delay);
            now += delay + Duration::from_millis(1);
        }
        assert_eq!(delays[..3], [Duration::ZERO; 3]);
        assert_eq!(delays[3], FIRST_DELAY);
        assert_eq!(delays[4], FIRST_DELAY * 2);
        assert_eq!(delays[11], MAX_DELAY);
    }

    #[test]
    fn attempts_at_once_are_checked_in_turn_and_the_rest_refused_unchecked() {
        let backoff = GuessThrottle::default();
        let now = Instant::now();
        let ms = Duration::from_millis;
        let turns: Vec<Option<Duration>> =
            (0..10).map(|_| backoff.begin("alice", HOME, now)).collect();
        let expected = [0, 0, 0, 500, 1500, 3500, 7500, 15_500].map(|t| Some(ms(t)));
        assert_eq!(turns[..8], expected);
        // The next turn would be 31.5 s away: refused, and not counted.
        assert_eq!(turns[8..], [None, None]);
        assert_eq!(backoff.failures("alice", HOME).0, 8);
        // Once the queue has moved on, a turn is given again.
        let later = now + ms(16_000);
        assert_eq!(backoff.begin("alice", HOME, later), Some(ms(16_000)));
    }

    #[test]
    fn guessing_many_names_from_one_address_is_slowed_too() {
        let backoff = GuessThrottle::default();
        let now = Instant::now();
        for name in ["a", "b", "c", "d"] {
            backoff.begin(name, HOME, now);
        }
        assert_eq!(backoff.begin("e", HOME, now), Some(FIRST_DELAY * 2));
        // Another address guessing a fresh name is not slowed.
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(backoff.begin("f", elsewhere, now), Some(Duration::ZERO));
    }

    #[test]
    fn success_clears_the_name_and_uncharges_the_address() {
        let backoff = GuessThrottle::default();
        let now = Instant::now();
        for _ in 0..3 {
            backoff.begin("alice", HOME, now);
        }
        backoff.begin("alice", HOME, now);
        backoff.succeeded("alice", HOME);
        assert_eq!(backoff.failures("alice", HOME), (0, 3));
    }

    #[test]
    fn stale_failures_are_forgotten() {
        let backoff = GuessThrottle::default();
        let then = Instant::now();
        for _ in 0..5 {
            backoff.begin("alice", HOME, then);
        }
        backoff.forget_stale(then + FORGET_AFTER);
        assert_eq!(backoff.failures("alice", HOME), (0, 0));
    }

    #[test]
    fn the_address_table_is_bounded() {
        let backoff = GuessThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            backoff.begin(&format!("n{i}"), IpAddr::V4(i.into()), now);
        }
        let table = backoff.table.lock().unwrap();
        assert_eq!(table.addresses.len(), MAX_ADDRESSES);
    }

    #[test]
    fn a_full_verifier_queue_refuses_instead_of_growing() {
        smol::block_on(async {
            let verifier = Verifier::start();
            // A hash that costs a few milliseconds, so the queue fills up.
            use argon2::password_hash::{PasswordHasher, SaltString};
            let params = argon2::Params::new(4096, 1, 1, None).unwrap();
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            let hash = argon.hash_password(b"pw", &salt).unwrap().to_string();
            let checks: Vec<_> = (0..VERIFY_QUEUE + 16)
                .map(|_| verifier.verify(hash.as_str().into(), b"guess".to_vec()))
                .collect();
            let mut busy = 0;
            let mut wrong = 0;
            for check in checks {
                match smol::future::poll_once(Box::pin(check)).await {
                    Some(Err(Busy)) => busy += 1,
                    Some(Ok(_)) => wrong += 1,
                    None => {}
                }
            }
            assert!(busy >= 8, "busy {busy}, answered {wrong}");
        });
    }
}
