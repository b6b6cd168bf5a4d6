//! Helpers for the server's in-process unit tests: real sessions on real
//! loopback sockets, and a way to read what was queued for one.

use std::net::TcpStream;
use std::sync::Arc;

use smol::Async;

use super::config::Config;
use super::mailbox::Mailbox;
use super::{Server, Shared};
use crate::net::transport::Transport;
use crate::wire::v1::{self, Decoded, ServerFrame};

/// The state a running server shares, without running it.
pub(crate) fn shared() -> Arc<Shared> {
    shared_with(Config::default())
}

/// The same with these settings.
pub(crate) fn shared_with(config: Config) -> Arc<Shared> {
    let workers = crate::net::workers::Workers::start(1).expect("a worker thread");
    Arc::clone(&Server::new(config, workers).expect("a server").shared)
}

/// A session named `name` on a real connection; the returned stream is the
/// client's end (kept so the socket stays open).
pub(crate) fn session(shared: &Shared, name: &str) -> (Arc<Mailbox>, TcpStream) {
    let (client, server_end) = crate::runtime::loopback_pair();
    let peer = server_end.peer_addr().expect("peer");
    let transport = Transport::tcp(Async::new(server_end).expect("register"));
    let session = Mailbox::for_test(name, peer, &transport, shared);
    (Arc::new(session), client)
}

/// A decoded server → client frame, owned, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    Message(String, String),
    Error(String),
    Welcome,
    Online(bool, Vec<String>),
    Presence(bool, String),
    Accepted(u64),
    Refused(u64, String),
    Pending(String, u64),
    /// ENTRY: id, direction, peer, content.
    Entry(u64, u8, String, String),
    /// STORED: first, last.
    Stored(u64, u64),
    /// CAUGHT-UP: entries replayed.
    CaughtUp(u64),
    /// HISTORY-END: entries in the page.
    HistoryEnd(u64),
    KeyCount(u64),
    DeviceKeys(String, Vec<u8>),
    KeysEnd(u64),
}

/// Everything queued for `session` and not yet written, decoded.
pub(crate) fn queued(session: &Mailbox) -> Vec<Out> {
    let mut bytes = Vec::new();
    if let Some(true) = smol::block_on(crate::runtime::timeout(
        std::time::Duration::from_millis(50),
        session.outbound().next_batch(&mut bytes),
    )) {
        session.outbound().finish_write(&mut Vec::new());
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while let Ok(Decoded::Frame(frame, used)) = v1::decode_server_frame(rest) {
        frames.push(match frame {
            ServerFrame::Message { from, content } => Out::Message(text(from), text(content)),
            ServerFrame::Error { text: t, .. } => Out::Error(text(t)),
            ServerFrame::Welcome { .. } => Out::Welcome,
            ServerFrame::Online { last, names } => Out::Online(
                last,
                names
                    .split(|&b| b == b'\n')
                    .filter(|n| !n.is_empty())
                    .map(text)
                    .collect(),
            ),
            ServerFrame::Presence { joined, name } => Out::Presence(joined, text(name)),
            ServerFrame::Accepted { through } => Out::Accepted(through),
            ServerFrame::Refused {
                ordinal, text: t, ..
            } => Out::Refused(ordinal, text(t)),
            ServerFrame::Pending { reason, wait_ms } => Out::Pending(text(reason), wait_ms),
            ServerFrame::Entry {
                id,
                direction,
                peer,
                content,
                ..
            } => Out::Entry(id, direction, text(peer), text(content)),
            ServerFrame::Stored { first, last } => Out::Stored(first, last),
            ServerFrame::CaughtUp { replayed } => Out::CaughtUp(replayed),
            ServerFrame::HistoryEntry {
                id,
                direction,
                peer,
                content,
                ..
            } => Out::Entry(id, direction, text(peer), text(content)),
            ServerFrame::HistoryEnd { count } => Out::HistoryEnd(count),
            ServerFrame::KeyCount { count, .. } => Out::KeyCount(count),
            ServerFrame::DeviceKeys { device, records } => {
                Out::DeviceKeys(text(device), records.to_vec())
            }
            ServerFrame::KeysEnd { devices, .. } => Out::KeysEnd(devices),
        });
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "a partial frame was queued");
    frames
}
