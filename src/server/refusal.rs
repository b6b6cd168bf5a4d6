//! Refusing a connection that never got a session (a full server, a taken
//! or banned name, a failed login): one error frame in the client's wire,
//! then a close that lets the frame arrive.
//!
//! The steps of a login ([`super::admission`], [`super::auth`]) decide;
//! they never write a refusal themselves. Each returns a [`Step`], and
//! the one place that sends a [`Refusal`] is the connection's task in
//! [`super::Server`].

use std::time::Duration;

use super::wire::Wire;
use crate::net::transport::Transport;
use crate::runtime::timeout;
use crate::wire::texts::ErrorText;

/// A login refused: what to tell the client, and in which wire.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) wire: Wire,
    pub(crate) error: ErrorText,
}

/// How one step of a login ended.
#[derive(Debug)]
pub(crate) enum Step<T> {
    /// The step passed; the login goes on with what it found.
    Passed(T),
    /// The step refused the login; the client is told why, then closed.
    Refused(Refusal),
    /// The connection is over (input ended or failed): nobody to tell.
    Gone,
}

impl<T> Step<T> {
    /// A refusal of `error` in `wire`.
    pub(crate) fn refused(wire: Wire, error: ErrorText) -> Step<T> {
        Step::Refused(Refusal { wire, error })
    }
}

impl Refusal {
    /// Sends the error frame to a client that never got a session, then
    /// closes.
    pub(crate) async fn send(&self, transport: &Transport, linger_for: Duration) {
        let frame = self.wire.error_frame(&self.error);
        let sent = timeout(linger_for, transport.write_all(&frame)).await;
        if matches!(sent, Some(Ok(()))) {
            transport.shutdown_write().await;
            linger(transport, linger_for).await;
        }
    }
}

/// Discards input until the client closes or `limit` passes. Closing a
/// socket with unread input makes the kernel send a reset, which can destroy
/// the error frame we just sent before the client reads it.
pub(super) async fn linger(transport: &Transport, limit: Duration) {
    let _ = timeout(limit, transport.discard_input()).await;
}
