//! Runtime helpers the binaries share: naming threads after their
//! program, running an executor on several threads, binding a listener,
//! and bounding a future in time.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::{Async, Executor, Timer};
use socket2::{Domain, Socket, Type};
use tracing::warn;

/// The program whose threads these are (`chat-server`, `chat-client`,
/// `chat-bench`); set once by its `main`.
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Says which program this process is, for its threads' names.
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// The name for one of this program's threads: `chat-server/w1`,
/// `chat-client/net`. Short roles: Linux keeps 15 bytes of a thread's
/// name, what `top -H` and `ps -L` show.
pub fn thread_name(role: &str) -> String {
    format!("{}/{role}", PROGRAM.get().copied().unwrap_or("pmchat"))
}

/// Runs `future` until it completes or `limit` passes; `None` on time-out.
pub async fn timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    until(Instant::now() + limit, future).await
}

/// Runs `future` until it completes or `deadline` passes; `None` on
/// time-out.
pub async fn until<T>(deadline: Instant, future: impl Future<Output = T>) -> Option<T> {
    async { Some(future.await) }
        .or(async {
            Timer::at(deadline).await;
            None
        })
        .await
}

/// Runs `future` to completion on `executor`, with `threads` threads in all
/// (this one included) working on the executor's tasks.
///
/// The future runs as a task of its own: the calling thread's `block_on`
/// future is polled on every wake-up of that thread, and an accept loop
/// there would retry `accept` (and a signal stream its pipe) each time.
pub fn block_on_threads<T: Send + 'static>(
    executor: &Arc<Executor<'static>>,
    threads: usize,
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    let (stop, stopped) = async_channel::bounded::<()>(1);
    for i in 1..threads.max(1) {
        let executor = Arc::clone(executor);
        let stopped = stopped.clone();
        let spawned = std::thread::Builder::new()
            .name(thread_name(&format!("w{i}")))
            .spawn(move || smol::block_on(executor.run(stopped.recv())));
        if let Err(e) = spawned {
            warn!("could not start worker thread {i}: {e}");
        }
    }
    let task = executor.spawn(future);
    let result = smol::block_on(executor.run(task));
    // Dropping the sender ends every worker's `recv`.
    drop(stop);
    result
}

/// Binds a listening socket with a deep accept queue: the standard
/// library's 128 overflows when thousands of clients connect at once (each
/// overflow costs a client a one-second SYN retransmission). The kernel
/// caps the backlog at `net.core.somaxconn`.
pub fn bind(addr: SocketAddr) -> std::io::Result<Async<TcpListener>> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As the standard library does: a restarted server can bind at once
    // while the old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `::` accepts IPv4 too, as documented for --bind.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(65_535)?;
    Async::new(TcpListener::from(socket))
}

/// The two ends of a fresh loopback TCP connection: (connecting, accepted).
#[cfg(test)]
pub(crate) fn loopback_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let connecting =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    (connecting, accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_gives_up_and_lets_quick_futures_finish() {
        smol::block_on(async {
            assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Some(7));
            let never = std::future::pending::<()>();
            assert_eq!(timeout(Duration::from_millis(10), never).await, None);
        });
    }

    #[test]
    fn binds_port_zero_with_a_real_port() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(listener.get_ref().local_addr().unwrap().port(), 0);
    }
}
