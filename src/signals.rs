//! SIGINT and SIGTERM as a future, for clean shutdowns.

use std::future::Future;

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;

/// Installs SIGINT and SIGTERM handlers now (so a signal that arrives
/// before the future is polled is not lost) and returns a future that
/// completes at the first of them.
pub fn termination() -> std::io::Result<impl Future<Output = ()>> {
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    Ok(async move {
        let _ = signals.next().await;
    })
}
