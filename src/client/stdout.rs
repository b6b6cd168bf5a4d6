//! Standard output, owned by threads of its own: the writer, so a blocked
//! reader (a full pipe) stalls only the caller that waits for room and a
//! dead one is reported as `BrokenPipe`; and a watcher, so a reader that
//! went away is noticed while we have nothing to write.
//!
//! `chat-client … --follow | head -1` must log out when `head` exits, not
//! at the next message, whose write would be the first to fail. One thread
//! per process waits in `poll(2)` on stdout asking for no events at all:
//! the kernel still reports an error (a pipe whose reader closed) or a
//! hang-up (a terminal gone), and nothing else ever wakes it, so the wait
//! costs nothing while stdout is fine. Regular files and `/dev/null` never
//! report either; the thread then just sleeps.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use event_listener::{listener, Event};
use rustix::event::{PollFd, PollFlags};

use crate::runtime::timeout;

/// Chunks handed to the stdout thread and not yet written; with
/// [`FLUSH_AT`](super::frames::FLUSH_AT) this bounds what a blocked stdout can make us hold.
const STDOUT_CHUNKS: usize = 2;

/// Standard output through a thread of its own, so a blocked reader (a
/// full pipe) stalls only the caller that waits for room, never the
/// thread's other tasks, and a dead one is reported as `BrokenPipe`.
pub(super) struct StdoutWriter {
    chunks: Option<async_channel::Sender<String>>,
    /// Closed when the thread has ended (written everything, or failed).
    finished: async_channel::Receiver<()>,
    /// The last write failed: stdout is gone.
    broken: Arc<AtomicBool>,
}

impl StdoutWriter {
    pub(super) fn start() -> io::Result<StdoutWriter> {
        let (chunks, queued) = async_channel::bounded::<String>(STDOUT_CHUNKS);
        let (done, finished) = async_channel::bounded::<()>(1);
        let broken = Arc::new(AtomicBool::new(false));
        let failed = Arc::clone(&broken);
        std::thread::Builder::new()
            .name(crate::runtime::thread_name("out"))
            .spawn(move || {
                let _done = done;
                let mut stdout = io::stdout();
                while let Ok(chunk) = queued.recv_blocking() {
                    if stdout
                        .write_all(chunk.as_bytes())
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        failed.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })?;
        Ok(StdoutWriter {
            chunks: Some(chunks),
            finished,
            broken,
        })
    }

    /// Hands `chunk` to the thread, waiting while it is behind.
    pub(super) async fn write(&mut self, chunk: String) -> io::Result<()> {
        let gone = || io::Error::from(io::ErrorKind::BrokenPipe);
        if self.broken.load(Ordering::SeqCst) {
            return Err(gone());
        }
        let Some(chunks) = &self.chunks else {
            return Err(gone());
        };
        chunks.send(chunk).await.map_err(|_| gone())
    }

    /// Completes when stdout has failed (the thread ended without being
    /// asked to).
    pub(super) fn gone(&self) -> impl std::future::Future<Output = ()> + 'static {
        let finished = self.finished.clone();
        let broken = Arc::clone(&self.broken);
        async move {
            let _ = finished.recv().await;
            if !broken.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Lets the thread write what it has, for at most `bound`; true if it
    /// did, and stdout never failed.
    pub(super) async fn finish(&mut self, bound: Duration) -> bool {
        self.chunks = None;
        let done = timeout(bound, self.finished.recv()).await.is_some();
        done && !self.broken.load(Ordering::SeqCst)
    }
}

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
            .name(crate::runtime::thread_name("outw"))
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
