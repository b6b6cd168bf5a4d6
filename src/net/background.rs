//! The background thread, `…/bg`: work that belongs to no connection (the
//! cluster's connection loop, the drivers of its Redis connections, its
//! backlogs and appends, the console's questions to the cluster).
//!
//! It is a worker of its own ([`super::workers`]: one run queue, one epoll)
//! rather than an executor under async-io's `block_on`, so that a socket
//! opened on it ([`super::socket::Socket::adopt`], as the Redis connections'
//! are) wakes this thread and nothing else. Under async-io, whichever
//! thread held the reactor (most often async-io's own fallback thread)
//! woke first on a push from Redis and then woke this one: two wake-ups
//! and a context switch on every message that crossed nodes. Timers stay
//! on async-io's reactor, as the workers' do.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use async_task::Task;

use super::workers::Workers;

/// The background worker, started on first use; it runs until the process
/// ends. `None` when its thread could not be started.
fn background() -> Option<&'static Arc<Workers>> {
    static BACKGROUND: OnceLock<Option<Arc<Workers>>> = OnceLock::new();
    BACKGROUND
        .get_or_init(|| match Workers::start_named(1, |_| "bg".to_owned()) {
            Ok(workers) => Some(workers),
            Err(e) => {
                // Said loudly, once; the work then runs on smol's executor.
                tracing::error!("could not start the background thread: {e}");
                None
            }
        })
        .as_ref()
}

/// Runs `future` on the background thread (see the module docs); dropping
/// the task cancels it.
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    match background() {
        Some(workers) => workers.spawn_on(0, future),
        None => smol::spawn(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_the_named_background_thread_and_sockets_opened_there_join_it() {
        crate::runtime::set_program("pmchat");
        let (listener, port) = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            (listener, port)
        };
        let answer = smol::block_on(spawn(async move {
            let name = std::thread::current().name().map(str::to_owned);
            let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let socket = super::super::socket::Socket::adopt(stream).expect("adopt");
            (
                name,
                matches!(socket, super::super::socket::Socket::Worker(_)),
            )
        }));
        drop(listener);
        assert!(answer.0.is_some_and(|name| name.ends_with("/bg")));
        assert!(
            answer.1,
            "a socket opened on the background thread is its own"
        );
    }
}
