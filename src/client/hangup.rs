//! Noticing that whoever reads our stdout went away while we have nothing
//! to write: `chat-client … --follow | head -1` must log out when `head`
//! exits, not at the next message, whose write would be the first to fail.
//!
//! One thread per process waits in `poll(2)` on stdout asking for no
//! events at all: the kernel still reports an error (a pipe whose reader
//! closed) or a hang-up (a terminal gone), and nothing else ever wakes it,
//! so the wait costs nothing while stdout is fine. Regular files and
//! `/dev/null` never report either; the thread then just sleeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use event_listener::{listener, Event};
use rustix::event::{PollFd, PollFlags};

/// Set by the watcher thread when stdout's reader is gone.
static GONE: AtomicBool = AtomicBool::new(false);
/// Notified when [`GONE`] is set.
static GONE_EVENT: Event = Event::new();

/// Starts the watcher thread, once per process. If it cannot be started, a
/// hang-up is noticed at the next write instead, as without it.
fn start_watcher() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("pmchat-stdout-watch".into())
            .spawn(watch);
    });
}

/// The watcher thread: waits until stdout reports an error or a hang-up.
fn watch() {
    let stdout = std::io::stdout();
    loop {
        let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {
                let seen = fds[0].revents();
                // No stdout at all (closed before we started): nothing to
                // watch, and nothing a reader could have left.
                if seen.contains(PollFlags::NVAL) {
                    return;
                }
                if seen.intersects(PollFlags::ERR | PollFlags::HUP) {
                    break;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            // Cannot watch: say nothing, as if stdout stayed fine.
            Err(_) => return,
        }
    }
    GONE.store(true, Ordering::SeqCst);
    GONE_EVENT.notify(usize::MAX);
}

/// Completes when stdout's reader has gone away (never, if it does not).
pub(crate) fn stdout_gone() -> impl std::future::Future<Output = ()> + 'static {
    start_watcher();
    async {
        loop {
            if GONE.load(Ordering::SeqCst) {
                return;
            }
            listener!(GONE_EVENT => gone);
            if GONE.load(Ordering::SeqCst) {
                return;
            }
            gone.await;
        }
    }
}
