//! Answering a login at once when its outcome takes time.
//!
//! A client that sent HELLO is owed an answer promptly: without one it
//! cannot tell a pmchat server still working on the login (a password
//! check waiting out a back-off, a name being claimed while Redis is away)
//! from something that will never answer. When such work is not done
//! within [`PENDING_AFTER`], the server writes PENDING with the longest it
//! will take, and then keeps that promise: the work is cut off at the bound
//! and the caller refuses the login.
//!
//! Runs on the connection's own task, before the session exists, so
//! nothing else writes to the socket yet.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use crate::net::transport::Transport;
use crate::runtime::{timeout, until};
use crate::wire::v1::{self, PendingReason};

/// How long login work may take before the client is told it is pending:
/// a claim, or a password check without back-off, is done well within it
/// (argon2 at its default cost takes tens of milliseconds), so only logins
/// that really wait send the extra frame, and still well within a client's
/// 2 s `--hello-timeout`.
pub(crate) const PENDING_AFTER: Duration = Duration::from_millis(250);

/// Runs `work` for at most `bound`. If the client asked for the
/// extensions (`asked`: it sent HELLO) and the work is still going after
/// [`PENDING_AFTER`], tells it PENDING for `reason` with the time left.
/// `None` when the bound passed first.
pub(crate) async fn bounded_login_step<T>(
    transport: &Transport,
    asked: bool,
    reason: PendingReason,
    bound: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let deadline = Instant::now() + bound;
    let mut work = pin!(work);
    if !asked {
        return until(deadline, work).await;
    }
    if let Some(done) = timeout(PENDING_AFTER.min(bound), work.as_mut()).await {
        return Some(done);
    }
    let mut frame = Vec::new();
    v1::encode_pending(
        reason,
        deadline.saturating_duration_since(Instant::now()),
        &mut frame,
    );
    // A client that is gone shows up at the next read; the work goes on
    // bounded either way.
    let _ = until(deadline, transport.write_all(&frame)).await;
    until(deadline, work).await
}
