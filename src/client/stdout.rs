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

use super::cursor::CursorFile;
use super::exec::{Exec, Job};
use crate::runtime::timeout;

/// Chunks handed to the stdout thread and not yet written; with
/// [`FLUSH_AT`](super::frames::FLUSH_AT) this bounds what a blocked stdout can make us hold.
const STDOUT_CHUNKS: usize = 2;

/// Text for stdout, and where in it each log entry's line ends, with the
/// entry's id: the cursor moves past each once its line is written.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    pub(super) text: String,
    pub(super) marks: Vec<(usize, u64)>,
    /// With `--exec`: the messages for the command, after `text`.
    pub(super) jobs: Vec<Job>,
}

/// Standard output through a thread of its own, so a blocked reader (a
/// full pipe) stalls only the caller that waits for room, never the
/// thread's other tasks, and a dead one is reported as `BrokenPipe`.
pub(super) struct StdoutWriter {
    chunks: Option<async_channel::Sender<Chunk>>,
    /// Closed when the thread has ended (written everything, or failed).
    finished: async_channel::Receiver<()>,
    /// The last write failed: stdout is gone.
    broken: Arc<AtomicBool>,
    /// `--exec`'s command kept failing: the thread stopped.
    exec_failed: Arc<AtomicBool>,
    /// The thread runs `--exec`'s command.
    exec: bool,
}

impl StdoutWriter {
    /// Starts the thread; with a `cursor`, it moves the cursor past the
    /// log entries of each chunk once the chunk is written.
    /// With `exec`, it also runs the command for each job, moving the
    /// cursor past a message once the command exited 0 for it.
    pub(super) fn start(
        mut cursor: Option<CursorFile>,
        exec: Option<Exec>,
    ) -> io::Result<StdoutWriter> {
        let (chunks, queued) = async_channel::bounded::<Chunk>(STDOUT_CHUNKS);
        let (done, finished) = async_channel::bounded::<()>(1);
        let broken = Arc::new(AtomicBool::new(false));
        let exec_failed = Arc::new(AtomicBool::new(false));
        let (failed, gave_up) = (Arc::clone(&broken), Arc::clone(&exec_failed));
        let has_exec = exec.is_some();
        std::thread::Builder::new()
            .name(crate::runtime::thread_name("out"))
            .spawn(move || {
                let _done = done;
                let mut stdout = io::stdout();
                while let Ok(chunk) = queued.recv_blocking() {
                    if write_chunk(&mut stdout, &chunk, &mut cursor).is_err() {
                        failed.store(true, Ordering::SeqCst);
                        return;
                    }
                    let Some(exec) = &exec else { continue };
                    for job in &chunk.jobs {
                        if job.run {
                            if let Err(e) = exec.run(job) {
                                crate::err_line!("chat-client: {e}");
                                gave_up.store(true, Ordering::SeqCst);
                                failed.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                        if let (Some(file), Some(id)) = (cursor.as_mut(), job.id) {
                            if let Err(e) = file.save(id) {
                                crate::err_line!("chat-client: cannot keep the inbox cursor: {e}");
                                cursor = None;
                            }
                        }
                    }
                }
            })?;
        Ok(StdoutWriter {
            chunks: Some(chunks),
            finished,
            broken,
            exec_failed,
            exec: has_exec,
        })
    }

    /// True if the thread runs `--exec`'s command.
    pub(super) fn has_exec(&self) -> bool {
        self.exec
    }

    /// True if `--exec`'s command kept failing and the thread stopped.
    pub(super) fn exec_failed(&self) -> bool {
        self.exec_failed.load(Ordering::SeqCst)
    }

    /// Hands `chunk` to the thread, waiting while it is behind.
    pub(super) async fn write(&mut self, chunk: Chunk) -> io::Result<()> {
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

/// Writes a chunk, then moves the cursor past its last log entry: the
/// cursor never moves past a line not written, and one write and one
/// cursor update per chunk (not per line) keep a replay of a million
/// messages fast. A crash between the two repeats that chunk's entries at
/// the next start; a clean stop (SIGTERM, SIGINT) repeats nothing. A cursor
/// that cannot be kept is reported once and dropped (the next run then
/// repeats what this one printed).
fn write_chunk(
    stdout: &mut io::Stdout,
    chunk: &Chunk,
    cursor: &mut Option<CursorFile>,
) -> io::Result<()> {
    stdout.write_all(chunk.text.as_bytes())?;
    stdout.flush()?;
    if let (Some(file), Some(&(_, id))) = (cursor.as_mut(), chunk.marks.last()) {
        if let Err(e) = file.save(id) {
            crate::err_line!("chat-client: cannot keep the inbox cursor: {e}");
            *cursor = None;
        }
    }
    Ok(())
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
