//! Admission: everything between an accepted socket and a logged-in
//! session, in one place.
//!
//! A new connection goes through these steps, in order, on its worker:
//!
//! 1. **capacity**: a full server (`--max-clients`) refuses it at once;
//! 2. **sniff**: on a server with TLS, its first bytes say whether it opens
//!    a TLS handshake (then it is done) or is plain TCP (refused under
//!    `--require-tls`);
//! 3. **handshake**: the username, within the handshake timeout counted
//!    from the accept;
//! 4. **bans**: a banned name goes no further;
//! 5. **password**: a registered name proves it ([`super::auth`]); an
//!    unregistered one is refused under `--registered-only`;
//! 6. **claim**: in a cluster, the name is claimed on every node;
//! 7. **insert**: the name enters this node's registry, unless it is taken.
//!
//! [`admit`] returns [`Admission::Admitted`] with what the session needs,
//! [`Admission::Refused`] with what to tell the client and in which wire,
//! or [`Admission::Gone`] when the client left. No step writes a refusal:
//! the server's connection task ([`super::Server`]) sends the one there
//! is, or hands the admitted connection to [`super::connection`].

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use tracing::{debug, info, warn};

use super::auth::{authenticate, Proven};
use super::cluster::ClaimError;
use super::mailbox::Mailbox;
use super::pending::bounded_login_step;
use super::refusal::{Refusal, Step};
use super::registry::DeviceRefused;
use super::wire::{refusal_wire, InputDecoder, Wire};
use super::{tls, ConnectionSlot, Shared};
use crate::net::socket::Socket;
use crate::net::transport::Transport;
use crate::runtime::{timeout, until};
use crate::wire::framing::FrameReader;
use crate::wire::texts::{Code, ErrorText};
use crate::wire::v1::{self, ClientFrame, HandshakeDecoder, PendingReason, UsernameError};

/// How admitting a connection ended.
pub(crate) enum Admission<'a> {
    /// Logged in: the name is in the registry. Boxed: a future keeps its
    /// arguments for its whole life, and the connection's is long.
    Admitted(Box<Admitted<'a>>),
    /// Refused: the client is owed `refusal` on `transport`.
    Refused(Transport, Refusal),
    /// The client left (or the socket failed) before it could be told.
    Gone,
}

/// A logged-in connection, ready for its session.
pub(crate) struct Admitted<'a> {
    pub(crate) transport: Transport,
    pub(crate) mailbox: Arc<Mailbox>,
    /// Positioned at the first frame after the handshake (and, for a
    /// registered name, after its HELLO and AUTH).
    pub(crate) input: FrameReader<InputDecoder>,
    /// Set for a registered name: the HELLO to answer, the device token.
    pub(crate) proven: Option<Proven>,
    /// Counts this connection against `--max-clients` while it lives.
    pub(crate) _slot: ConnectionSlot<'a>,
}

/// Runs the steps of admission (see the module doc) for one connection.
pub(crate) async fn admit(shared: &Shared, stream: TcpStream, peer: SocketAddr) -> Admission<'_> {
    let socket = match Socket::adopt(stream) {
        Ok(socket) => socket,
        Err(e) => {
            warn!(%peer, "cannot take the connection: {e}");
            return Admission::Gone;
        }
    };
    let max_clients = shared.live.max_clients.load(Ordering::Relaxed);
    let Some(slot) = shared.connections.try_open(max_clients) else {
        info!(%peer, "rejected: server is full");
        let error = ErrorText::of(Code::ServerFull);
        return refused(Transport::plain(socket), Wire::V1, error);
    };
    info!(%peer, "connected");
    // One handshake timeout for everything before the username: the TLS
    // handshake (or telling plain from TLS) and the name.
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let transport = match &shared.config.tls {
        None => Transport::plain(socket),
        // Boxed: without TLS, a connection's admission carries no room
        // for the TLS handshake's state.
        Some(tls) => match Box::pin(sniff(shared, tls, socket, peer, deadline)).await {
            Sniffed::Tls(transport) => transport,
            Sniffed::Plain(transport) if !shared.config.require_tls => transport,
            Sniffed::Plain(transport) => {
                info!(%peer, "rejected: not TLS");
                return refused(transport, Wire::V1, ErrorText::of(Code::TlsRequired));
            }
            Sniffed::Gone => return Admission::Gone,
        },
    };
    let (name, mut input) = match handshake(shared, &transport, peer, deadline).await {
        Step::Passed(login) => login,
        Step::Refused(refusal) => return Admission::Refused(transport, refusal),
        Step::Gone => return Admission::Gone,
    };
    match log_in(shared, &transport, peer, name, &mut input).await {
        Step::Passed((mailbox, proven)) => Admission::Admitted(Box::new(Admitted {
            transport,
            mailbox,
            input,
            proven,
            _slot: slot,
        })),
        Step::Refused(refusal) => Admission::Refused(transport, refusal),
        Step::Gone => Admission::Gone,
    }
}

fn refused(transport: Transport, wire: Wire, error: ErrorText) -> Admission<'static> {
    Admission::Refused(transport, Refusal { wire, error })
}

/// What a connection's first bytes said, on a server with TLS on.
enum Sniffed {
    /// It opened with a TLS handshake, which succeeded.
    Tls(Transport),
    /// It did not open with a TLS handshake.
    Plain(Transport),
    /// The TLS handshake failed or did not end in time, or the client left.
    Gone,
}

/// Tells a TLS connection from a plain one by its first bytes, and does
/// the TLS handshake, both by `deadline`.
async fn sniff(
    shared: &Shared,
    tls: &tls::ServerTls,
    stream: Socket,
    peer: SocketAddr,
    deadline: Instant,
) -> Sniffed {
    let opens_tls = until(deadline, first_bytes_say_tls(&stream))
        .await
        .unwrap_or(false);
    if !opens_tls {
        return Sniffed::Plain(Transport::plain(stream));
    }
    match until(deadline, tls.accept(stream)).await {
        Some(Ok(transport)) => Sniffed::Tls(transport),
        Some(Err(e)) => {
            info!(%peer, "TLS handshake failed: {e}");
            Sniffed::Gone
        }
        None => {
            let limit = shared.config.handshake_timeout;
            info!(%peer, "TLS handshake not completed within {limit:?}");
            Sniffed::Gone
        }
    }
}

/// Waits for the first two bytes (or the end of input) and says whether
/// they open a TLS handshake.
async fn first_bytes_say_tls(stream: &Socket) -> bool {
    let mut first = [0u8; 2];
    loop {
        match stream.peek(&mut first).await {
            Ok(n) if n >= 2 => return tls::starts_tls(&first),
            // One byte so far: only a 0x16 could still be either, and it
            // waits for more input, not on a timer (a stalled peer costs
            // nothing while it stalls).
            Ok(1) if tls::may_start_tls(first[0]) => stream.more_input().await,
            _ => return false,
        }
    }
}

/// How the handshake phase failed.
enum HandshakeEnd {
    Invalid(UsernameError),
    TimedOut,
    Shutdown,
    /// Input ended or failed: nobody to tell.
    Gone,
}

/// Reads the handshake by `deadline`. Passes with the name and the
/// reader, positioned at the first frame after the handshake; a refusal is
/// in the default wire, since the client has sent nothing else yet.
async fn handshake(
    shared: &Shared,
    transport: &Transport,
    peer: SocketAddr,
    deadline: Instant,
) -> Step<(Box<str>, FrameReader<InputDecoder>)> {
    let limits = shared.config.limits;
    let mut input = FrameReader::new(HandshakeDecoder { limits });
    let handshake = async {
        until(deadline, read_handshake(transport, &mut input))
            .await
            .unwrap_or(Err(HandshakeEnd::TimedOut))
    }
    .or(async {
        shared.shutdown.wait().await;
        Err(HandshakeEnd::Shutdown)
    })
    .await;
    let error = match handshake {
        Ok(name) => return Step::Passed((name, input.switch(InputDecoder::v1(limits)))),
        Err(HandshakeEnd::Invalid(e)) => ErrorText::invalid_name(&e),
        Err(HandshakeEnd::TimedOut) => {
            ErrorText::timeout("no username received", shared.config.handshake_timeout)
        }
        Err(HandshakeEnd::Shutdown) => ErrorText::of(Code::ShuttingDown),
        Err(HandshakeEnd::Gone) => {
            debug!(%peer, "left before logging in");
            return Step::Gone;
        }
    };
    info!(%peer, "rejected: {}", error.text().trim_end());
    Step::refused(shared.config.default_wire, error)
}

async fn read_handshake(
    transport: &Transport,
    input: &mut FrameReader<HandshakeDecoder>,
) -> Result<Box<str>, HandshakeEnd> {
    loop {
        match input.next_frame() {
            // Validated as printable ASCII, so this cannot fail.
            Ok(Some(name)) => {
                return std::str::from_utf8(name)
                    .map(Box::from)
                    .map_err(|_| HandshakeEnd::Gone)
            }
            Ok(None) => {}
            Err(e) => return Err(HandshakeEnd::Invalid(e)),
        }
        match transport.read(input).await {
            Ok(0) | Err(_) => return Err(HandshakeEnd::Gone),
            Ok(_) => {}
        }
    }
}

/// Steps 4 to 7 for the name `name`: bans, password, claim, insert.
/// Passes with the mailbox now in the registry and, for a registered
/// name, its proof.
async fn log_in(
    shared: &Shared,
    transport: &Transport,
    peer: SocketAddr,
    name: Box<str>,
    input: &mut FrameReader<InputDecoder>,
) -> Step<(Arc<Mailbox>, Option<Proven>)> {
    // A banned name is refused before anything costs more.
    if shared.bans.is_banned(&name, Instant::now()) {
        info!(%peer, user = &*name, "rejected: banned");
        let error = ErrorText::new(Code::Banned, &name);
        return refused_in_their_wire(shared, transport, input, error).await;
    }
    let mut proven = None;
    if let Some(auth) = &shared.auth {
        if auth.accounts.table().hash_of(&name).is_some() {
            // Boxed: the password check's state is large, and logins to
            // free names must not carry room for it.
            let checked = Box::pin(authenticate(shared, auth, transport, peer, &name, input));
            match checked.await {
                Step::Passed(login) => proven = Some(login),
                Step::Refused(refusal) => return Step::Refused(refusal),
                Step::Gone => return Step::Gone,
            }
        } else if shared.live.registered_only.load(Ordering::Relaxed) {
            info!(%peer, user = &*name, "rejected: not a registered name");
            let error = ErrorText::new(Code::NotRegistered, &name);
            return refused_in_their_wire(shared, transport, input, error).await;
        }
    }
    let mailbox = Arc::new(Mailbox::new(name, peer, transport, shared));
    // A client's first bytes usually come with its handshake: then its
    // wire is known before anyone can message it. One that has sent
    // nothing is spoken to in the default wire until it does.
    mailbox.set_wire(match (&proven, input.buffered().first()) {
        (Some(p), _) => Wire::of_hello(p.hello.codes, p.hello.sealed),
        (None, Some(&first)) => Wire::starting_with(first),
        (None, None) => shared.config.default_wire,
    });
    // A registered name that asked for its inbox is fed from it (granted
    // in WELCOME).
    if shared.has_inboxes() && proven.as_ref().is_some_and(|p| p.hello.inbox) {
        mailbox.set_inbox();
    }
    // Across nodes every session of a registered name is fed from its log;
    // one that did not ask for its inbox from where the log is now, before
    // the name is claimed and senders see it online.
    if let (Some(logs), Some(proven)) = (&shared.stream_inboxes, &mut proven) {
        if !proven.hello.inbox {
            match logs.cluster().log_last_id(mailbox.name()).await {
                Ok(last) => proven.hello.after = Some(last),
                Err(_) => {
                    let error = ErrorText::of(Code::Unavailable);
                    info!(%peer, user = mailbox.name(), "rejected: {}", error.text().trim_end());
                    return refused_after_login(shared, transport, input, &mailbox, true, error)
                        .await;
                }
            }
        }
    }
    // Across nodes every session of a registered name is fed from its log,
    // so it may have sessions on several nodes: devices, up to
    // --max-devices across them.
    let log_fed = shared.stream_inboxes.is_some() && proven.is_some();
    // In a cluster the name is claimed across every node first; a client
    // that sent HELLO hears at once if that takes a while.
    if let Some(cluster) = &shared.cluster {
        let held_here = shared.registry.get(mailbox.name().as_bytes()).is_some();
        let asked = proven.is_some() || sent_hello(input, shared.config.limits);
        let max = shared.config.max_devices;
        let claimed = match held_here {
            true if !log_fed => Err(ClaimError::Taken),
            // Boxed, like the password check: a single node's logins
            // carry no room for the claim's state.
            _ => Box::pin(bounded_login_step(
                transport,
                asked,
                PendingReason::Cluster,
                CLAIM_BOUND,
                async {
                    match log_fed {
                        true => cluster.claim_device(mailbox.name(), max).await,
                        false => cluster.claim(mailbox.name()).await,
                    }
                },
            ))
            .await
            .unwrap_or(Err(ClaimError::Unavailable)),
        };
        if let Err(refused) = claimed {
            let error = match refused {
                ClaimError::Taken => ErrorText::of(Code::NameTaken),
                ClaimError::Banned => ErrorText::new(Code::Banned, mailbox.name()),
                ClaimError::Unavailable => ErrorText::of(Code::Unavailable),
                ClaimError::TooMany => ErrorText::new(Code::TooManyDevices, mailbox.name()),
            };
            info!(%peer, user = mailbox.name(), "rejected: {}", error.text().trim_end());
            return refused_after_login(
                shared,
                transport,
                input,
                &mailbox,
                proven.is_some(),
                error,
            )
            .await;
        }
    }
    // A registered name fed from its inbox may have several devices.
    let inserted = match mailbox.is_inbox() || log_fed {
        // Across nodes the claim counted every node's devices.
        true if log_fed => shared.registry.insert_device(&mailbox, usize::MAX, true),
        true => shared
            .registry
            .insert_device(&mailbox, shared.config.max_devices, false),
        false => shared
            .registry
            .insert(&mailbox)
            .map_err(|_| DeviceRefused::Taken),
    };
    if let Err(refused) = inserted {
        let error = match refused {
            DeviceRefused::Taken => ErrorText::of(Code::NameTaken),
            DeviceRefused::TooMany => ErrorText::new(Code::TooManyDevices, mailbox.name()),
        };
        info!(%peer, user = mailbox.name(), "rejected: {}", error.text().trim_end());
        return refused_after_login(shared, transport, input, &mailbox, proven.is_some(), error)
            .await;
    }
    info!(
        %peer,
        user = mailbox.name(),
        tls = transport.is_tls(),
        password = proven.is_some(),
        "logged in"
    );
    Step::Passed((mailbox, proven))
}

/// True if the client's buffered input starts with a HELLO: it speaks the
/// extensions and may be told PENDING.
fn sent_hello(input: &FrameReader<InputDecoder>, limits: v1::Limits) -> bool {
    matches!(
        v1::decode_client_frame(input.buffered(), &limits),
        Ok(v1::Decoded::Frame(ClientFrame::Hello { .. }, _))
    )
}

/// The longest a cluster claim may take before the login is refused as
/// unavailable: the wait for Redis to come back and a few commands.
const CLAIM_BOUND: Duration = Duration::from_secs(5);

/// How long a refused login waits for the client's first bytes to learn
/// which wire to refuse it in. pmchat's clients (v1 and gob) send theirs
/// with the handshake; a peer that sends nothing is refused in v1.
const REFUSAL_WIRE_WAIT: Duration = Duration::from_millis(250);

/// Refuses a login after the handshake with `error`, in the wire the
/// client's first bytes choose, the default wire (`--default-wire`) if
/// none come within [`REFUSAL_WIRE_WAIT`].
/// Refuses a connection whose wire may be known already: a registered
/// name's client negotiated it at HELLO (and with `codes`, gets the
/// refusal's code); any other as [`refused_in_their_wire`].
async fn refused_after_login<T>(
    shared: &Shared,
    transport: &Transport,
    input: &mut FrameReader<InputDecoder>,
    mailbox: &Mailbox,
    proven: bool,
    error: ErrorText,
) -> Step<T> {
    match proven {
        true => Step::refused(mailbox.wire(), error),
        false => refused_in_their_wire(shared, transport, input, error).await,
    }
}

async fn refused_in_their_wire<T>(
    shared: &Shared,
    transport: &Transport,
    input: &mut FrameReader<InputDecoder>,
    error: ErrorText,
) -> Step<T> {
    if input.buffered().is_empty() {
        let _ = timeout(REFUSAL_WIRE_WAIT, transport.read(input)).await;
    }
    let config = &shared.config;
    let wire = refusal_wire(input.buffered(), &config.limits, config.default_wire);
    Step::refused(wire, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::Config;
    use crate::server::testing;
    use std::io::Write;

    /// Runs admission for a connection whose client sends `sends` and
    /// then, if `close`, ends its input; returns how admission ended.
    fn admit_with<'a>(shared: &'a Shared, sends: &[u8], close: bool) -> Admission<'a> {
        let (mut client, server_end) = crate::runtime::loopback_pair();
        let peer = server_end.peer_addr().unwrap();
        client.write_all(sends).unwrap();
        if close {
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // Kept open until admission is done (a refusal writes to it).
        let admitted = smol::block_on(admit(shared, server_end, peer));
        drop(client);
        admitted
    }

    fn refusal(admission: Admission<'_>) -> (Wire, Code) {
        match admission {
            Admission::Refused(_, refusal) => (refusal.wire, refusal.error.code()),
            Admission::Admitted(a) => panic!("admitted {}", a.mailbox.name()),
            Admission::Gone => panic!("gone"),
        }
    }

    #[test]
    fn a_free_name_is_admitted_into_the_registry_in_the_wire_it_sent() {
        let shared = testing::shared();
        let admission = admit_with(&shared, b"\x05alice\x00\x00\x00\x03\x00\x02bobhi", false);
        match admission {
            Admission::Admitted(admitted) => {
                assert_eq!("alice", admitted.mailbox.name());
                assert!(shared.registry.get(b"alice").is_some());
                assert_eq!(Wire::V1, admitted.mailbox.wire());
                assert!(admitted.proven.is_none());
                // The reader starts at the first frame after the name.
                assert_eq!(b"\x00\x00\x00\x03\x00\x02bobhi", admitted.input.buffered());
            }
            _ => panic!("refused"),
        };
    }

    #[test]
    fn a_taken_name_is_refused_in_the_wire_of_the_first_bytes_after_it() {
        let shared = testing::shared();
        let (holder, _client) = testing::session(&shared, "alice");
        shared.registry.insert(&holder).unwrap();
        let v1 = admit_with(&shared, b"\x05alice\x00\x00\x00\x03\x00\x02bobhi", false);
        assert_eq!((Wire::V1, Code::NameTaken), refusal(v1));
        // A HELLO asking for codes: refused with one.
        let mut hello = b"\x05alice".to_vec();
        crate::wire::v1::encode_hello("pmchat/1 codes", &mut hello).unwrap();
        let coded = admit_with(&shared, &hello, false);
        assert_eq!((Wire::Coded, Code::NameTaken), refusal(coded));
    }

    #[test]
    fn a_banned_name_is_refused_before_anything_else() {
        let shared = testing::shared();
        shared.bans.ban("mallory", None, Instant::now());
        let admission = admit_with(&shared, b"\x07mallory", true);
        assert_eq!(Code::Banned, refusal(admission).1);
        assert!(shared.registry.get(b"mallory").is_none());
    }

    #[test]
    fn an_invalid_name_is_refused_in_the_default_wire() {
        let shared = testing::shared();
        let admission = admit_with(&shared, b"\x03a b", false);
        assert_eq!((Wire::V1, Code::InvalidName), refusal(admission));
    }

    #[test]
    fn a_client_that_leaves_before_its_name_is_gone_and_told_nothing() {
        let shared = testing::shared();
        assert!(matches!(
            admit_with(&shared, b"\x05al", true),
            Admission::Gone
        ));
    }

    #[test]
    fn a_full_server_refuses_before_reading_anything() {
        let shared = testing::shared_with(Config {
            max_clients: 0,
            ..Config::default()
        });
        let admission = admit_with(&shared, b"", false);
        assert_eq!((Wire::V1, Code::ServerFull), refusal(admission));
    }

    #[test]
    fn an_unregistered_name_is_refused_when_only_registered_ones_may_log_in() {
        let dir = std::env::temp_dir().join(format!("pmchat-admission-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("accounts");
        std::fs::write(&path, "").unwrap();
        let accounts = crate::server::accounts::Accounts::load(&path).unwrap();
        let shared = testing::shared_with(Config {
            accounts: Some(Arc::new(accounts)),
            registered_only: true,
            ..Config::default()
        });
        let admission = admit_with(&shared, b"\x05alice", true);
        assert_eq!(Code::NotRegistered, refusal(admission).1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
