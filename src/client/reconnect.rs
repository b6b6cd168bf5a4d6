//! Staying connected: `--follow --reconnect` in batch mode.
//!
//! When the connection is lost (the server stopped, the network dropped)
//! the client waits, connects again and logs in again under the same name,
//! as `nats sub` and `websocat --autoreconnect` do, waiting by a
//! [`Backoff`]; a connection that stays logged in for 10 s starts it
//! again. Each attempt is
//! one line on stderr; stdout only ever gets whole message lines.
//!
//! A reconnection may find the name still held, by our own previous session
//! that the server has not noticed is gone (a dropped network leaves it
//! open until a write to it fails): that refusal is retried like a failed
//! connection. On the first connection it stays an error, exit status 3.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use smol::future::FutureExt;

use super::batch::{self, BatchOptions, Ended, Script};
use super::cli::ClientArgs;
use super::connection::{self, Security};
use super::render::Renderer;
use super::state::ChatState;
use super::Greeting;
use crate::backoff::Backoff;
use crate::exit_codes::Status;
use crate::net::transport::Transport;

/// How long a connection must stay up after its login before a loss
/// starts the back-off from its first wait again.
const STAYED_UP: std::time::Duration = std::time::Duration::from_secs(10);

/// What a batch run needs to connect (again).
pub struct Connector<'a> {
    pub args: &'a ClientArgs,
    pub security: &'a Security,
    pub renderer: Renderer,
    /// Builds the greeting for each connection.
    pub greeting: &'a dyn Fn() -> Greeting,
    /// The inbox cursor's file, for each connection (with --follow).
    pub cursor: &'a dyn Fn() -> Option<super::cursor::CursorFile>,
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
        let messages_left = args.count.map(|count| Arc::new(AtomicU64::new(count)));
        loop {
            let options = BatchOptions {
                cursor: (self.cursor)(),
                until_caught_up: args.until_caught_up,
                exec: args.exec.clone(),
                follow: args.follow,
                reconnect: args.reconnect,
                retry_taken: reconnecting,
                drain_timeout: args.drain_timeout,
                renderer: self.renderer,
                messages_left: messages_left.clone(),
            };
            let ended = batch::run(transport, (self.greeting)(), options, &state, script);
            let (mut notice, logged_in_for) = match ended {
                Ended::Done(status) => {
                    let failed = failed || state.failed();
                    return match status {
                        Status::Success if failed => Status::Failure,
                        status => status,
                    };
                }
                Ended::Lost { status, .. } if !args.reconnect => return status,
                Ended::Lost {
                    notice,
                    logged_in_for,
                    ..
                } => (notice, logged_in_for),
            };
            if let Some(lasted) = logged_in_for {
                failed |= state.failed();
                // Only a connection that held starts the waits afresh: a
                // server that logs us in and drops us at once must not
                // be hammered at the shortest wait.
                if lasted >= STAYED_UP {
                    backoff.reset();
                }
            }
            let next = async {
                loop {
                    let delay = backoff.next_delay();
                    crate::err_line!(
                        "chat-client: {notice}; reconnecting in {} (attempt {})",
                        crate::args::format_wait(delay),
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
