//! Refusing a connection that never got a session (a full server, a taken
//! or banned name, a failed login): one error frame in the client's wire,
//! then a close that lets the frame arrive.

use std::time::Duration;

use super::wire::Wire;
use crate::runtime::timeout;
use crate::transport::Transport;
use crate::wire::texts::ErrorText;

/// Sends one error frame to a client that never got a session, then closes.
pub(crate) async fn reject(
    transport: &Transport,
    wire: Wire,
    error: &ErrorText,
    linger_for: Duration,
) {
    let frame = wire.error_frame(error);
    let sent = timeout(linger_for, transport.write_all(&frame)).await;
    if matches!(sent, Some(Ok(()))) {
        transport.shutdown_write().await;
        linger(transport, linger_for).await;
    }
}

/// Discards input until the client closes or `limit` passes. Closing a
/// socket with unread input makes the kernel send a reset, which can destroy
/// the error frame we just sent before the client reads it.
pub(super) async fn linger(transport: &Transport, limit: Duration) {
    let _ = timeout(limit, transport.discard_input()).await;
}
