//! Staying connected: `--follow --reconnect` in batch mode, and the back-off
//! both it and the editor's `reconnect` use.
//!
//! When the connection is lost (the server stopped, the network dropped)
//! the client waits, connects again and logs in again under the same name,
//! as `nats sub` and `websocat --autoreconnect` do. The waits grow
//! exponentially from [`FIRST_DELAY`] to [`MAX_DELAY`], each drawn at
//! random from its upper half so that many listeners cut off together do
//! not come back together; a connection that logs in starts the sequence
//! again. Each attempt is one line on stderr; stdout only ever gets whole
//! message lines.
//!
//! A reconnection may find the name still held, by our own previous session
//! that the server has not noticed is gone (a dropped network leaves it
//! open until a write to it fails): that refusal is retried like a failed
//! connection. On the first connection it stays an error, exit status 3.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt;

use super::batch::{self, BatchOptions, Ended, Script};
use super::cli::ClientArgs;
use super::connection::{self, Security};
use super::output::Renderer;
use super::state::ChatState;
use super::Greeting;
use crate::exit_codes::Status;
use crate::transport::Transport;

/// The first wait before reconnecting.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Capped exponential back-off with jitter.
#[derive(Debug)]
pub struct Backoff {
    /// The upper bound of the next wait.
    ceiling: Duration,
    /// Attempts since the last success.
    pub attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            ceiling: FIRST_DELAY,
            attempt: 0,
        }
    }
}

impl Backoff {
    /// The next wait: between half the ceiling and the ceiling, which then
    /// doubles up to [`MAX_DELAY`].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(MAX_DELAY);
        self.attempt += 1;
        let half = ceiling / 2;
        half + half.mul_f64(random_fraction())
    }

    /// A connection succeeded: the next loss starts from the first delay.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// A number in [0, 1) that differs between processes and calls (the
/// standard library's randomly keyed hasher; jitter needs no more).
fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What a batch run needs to connect (again).
pub struct Connector<'a> {
    pub args: &'a ClientArgs,
    pub security: &'a Security,
    pub renderer: Renderer,
    /// Builds the greeting for each connection.
    pub greeting: &'a dyn Fn() -> Greeting,
}

impl Connector<'_> {
    async fn open(&self) -> Result<Transport, connection::ConnectError> {
        let args = self.args;
        connection::open(&args.host, args.port, args.connect_timeout, self.security).await
    }

    /// Runs the script over `transport` (already connected, logging in
    /// with `state`), and with `--reconnect` over every connection after
    /// it, until the run is done. Returns the exit status.
    pub fn run(&self, transport: Transport, state: &Arc<ChatState>, script: &mut Script) -> Status {
        let args = self.args;
        // SIGINT/SIGTERM between connections (while waiting or connecting)
        // ends the run as it does while following. Watched from the start:
        // a handler, once installed, stays.
        let mut stopped = match args.reconnect.then(crate::signals::termination) {
            Some(Ok(signal)) => Some(Box::pin(signal)),
            Some(Err(e)) => {
                crate::err_line!("chat-client: cannot watch for signals: {e}");
                None
            }
            None => None,
        };
        let mut backoff = Backoff::default();
        let mut failed = false;
        let mut transport = transport;
        let mut state = Arc::clone(state);
        let mut reconnecting = false;
        loop {
            let options = BatchOptions {
                follow: args.follow,
                reconnect: args.reconnect,
                retry_taken: reconnecting,
                drain_timeout: args.drain_timeout,
                renderer: self.renderer,
            };
            let ended = batch::run(transport, (self.greeting)(), options, &state, script);
            let (mut notice, logged_in) = match ended {
                Ended::Done(status) => {
                    let failed = failed || state.failed();
                    return match status {
                        Status::Success if failed => Status::Failure,
                        status => status,
                    };
                }
                Ended::Lost { status, .. } if !args.reconnect => return status,
                Ended::Lost {
                    notice, logged_in, ..
                } => (notice, logged_in),
            };
            if logged_in {
                failed |= state.failed();
                backoff.reset();
            }
            let next = async {
                loop {
                    let delay = backoff.next_delay();
                    crate::err_line!(
                        "chat-client: {notice}; reconnecting in {} (attempt {})",
                        crate::args::format_duration(delay),
                        backoff.attempt
                    );
                    smol::Timer::after(delay).await;
                    match self.open().await {
                        Ok(transport) => return Some(transport),
                        Err(e) => notice = e.to_string(),
                    }
                }
            };
            let interrupted = async {
                match stopped.as_mut() {
                    Some(signal) => signal.await,
                    None => std::future::pending().await,
                }
                None
            };
            transport = match smol::block_on(next.or(interrupted)) {
                Some(transport) => transport,
                None if failed => return Status::Failure,
                None => return Status::Success,
            };
            state = Arc::new(ChatState::with_wire(args.wire));
            reconnecting = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_its_cap_with_jitter_and_starts_again_after_a_success() {
        let mut backoff = Backoff::default();
        let mut ceiling = FIRST_DELAY;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(MAX_DELAY);
        }
        assert_eq!(backoff.attempt, 10);
        assert!(backoff.next_delay() >= MAX_DELAY / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST_DELAY);
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let delays: std::collections::BTreeSet<_> =
            (0..20).map(|_| Backoff::default().next_delay()).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
