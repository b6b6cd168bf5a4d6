//! SIGINT and SIGTERM as a future, for clean shutdowns; SIGHUP as a
//! stream, for reloading.

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

/// SIGHUP, one event per signal.
pub struct Hangups(Signals);

impl Hangups {
    /// Installs a SIGHUP handler now: from here on SIGHUP no longer ends
    /// the process.
    pub fn new() -> std::io::Result<Hangups> {
        Signals::new([Signal::Hup]).map(Hangups)
    }

    /// Waits for the next SIGHUP.
    pub async fn next(&mut self) {
        let _ = self.0.next().await;
    }
}
