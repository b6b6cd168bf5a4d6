//! Running under systemd: readiness notifications (`NOTIFY_SOCKET`) and
//! socket activation (`LISTEN_FDS`), through the `sd-notify` crate.
//!
//! Every function here is a no-op when the service manager set nothing, so
//! a server started by hand pays one environment lookup per state change.
//! A notification that cannot be sent is logged and ignored: the server
//! serves either way, and systemd's own timeout says what went wrong.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};

use sd_notify::NotifyState;
use smol::Async;
use tracing::{debug, warn};

/// The listening socket systemd passed (socket activation), if it passed
/// one to this process; an error when what it passed cannot be served
/// (several sockets, not a listening TCP socket).
pub fn inherited_listener() -> Result<Option<Async<TcpListener>>, String> {
    // LISTEN_PID names this process, so a child started later (none is)
    // would not take the descriptors for its own.
    let fds: Vec<i32> = sd_notify::listen_fds()
        .map_err(|e| format!("cannot read LISTEN_FDS: {e}"))?
        .collect();
    let fd = match fds.as_slice() {
        [] => return Ok(None),
        [fd] => *fd,
        more => {
            return Err(format!(
                "systemd passed {} sockets; chat-server listens on one (one ListenStream=)",
                more.len()
            ))
        }
    };
    // SAFETY: LISTEN_FDS and LISTEN_PID say the service manager passed
    // descriptor `fd` to this process for it to own; nothing else in the
    // program knows of it, so this is its one owner.
    let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    match socket.is_listener() {
        Ok(true) => {}
        Ok(false) => return Err("the socket systemd passed is not listening".into()),
        Err(e) => {
            return Err(format!(
                "the descriptor systemd passed is not a socket: {e}"
            ))
        }
    }
    if socket.r#type().ok() != Some(socket2::Type::STREAM) {
        return Err("the socket systemd passed is not a stream socket".into());
    }
    let listener = TcpListener::from(socket);
    if let Err(e) = listener.local_addr() {
        return Err(format!(
            "the socket systemd passed is not a TCP socket: {e}"
        ));
    }
    Async::new(listener)
        .map(Some)
        .map_err(|e| format!("cannot use the socket systemd passed: {e}"))
}

/// Tells the service manager the server is listening.
pub fn ready() {
    send(&[NotifyState::Ready], "READY=1");
}

/// Tells the service manager a reload started; [`ready`] says it ended.
pub fn reloading() {
    // Type=notify-reload wants the time the reload began beside it.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now], "RELOADING=1"),
        Err(_) => send(&[NotifyState::Reloading], "RELOADING=1"),
    }
}

/// Tells the service manager the server is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping], "STOPPING=1");
}

fn send(states: &[NotifyState], what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(states) {
        Ok(()) => debug!("told the service manager {what}"),
        Err(e) => warn!("cannot tell the service manager {what}: {e}"),
    }
}
