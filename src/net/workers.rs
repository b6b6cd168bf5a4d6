//! The server's worker threads: thread-per-core, each worker with its own
//! run queue and its own epoll instance, and the connections handed to it
//! once, when they are accepted.
//!
//! **Why.** One executor shared by all threads (smol's) pays for every
//! wake-up it cannot keep on one thread: an event taken by one thread for a
//! task another thread runs costs a futex wake and a context switch, and
//! each wait for readiness re-arms the socket in the shared epoll
//! (one-shot mode). Under load that is amortised over big batches; at
//! 10,000 msgs/s it is most of the server's CPU per message.
//!
//! **The model.** Worker `i` owns:
//! - a run queue of tasks. A task is scheduled only on its own worker; a
//!   wake from another thread pushes to that queue and writes the worker's
//!   eventfd only if the worker is asleep in `epoll_wait`, so a busy worker
//!   is never interrupted and a sleeping one at most once per sleep;
//! - an epoll instance where its sockets are registered once, edge-
//!   triggered, for reading and writing: no re-arming, ever. An event sets
//!   the socket's ready flag and wakes the task waiting for it, which runs
//!   on this thread;
//! - its sessions: a connection accepted (on the caller's thread, with
//!   async-io) is handed to the next worker in turn and registered there;
//!   its reader and writer tasks live on that worker for good.
//!
//! Timers (timeouts, back-off) stay on async-io's reactor: they are rare on
//! the message path, and a timer that fires wakes its task like any other
//! cross-thread wake.
//!
//! **The path of one message**, alice on worker 0 to bob on worker 1, when
//! nothing is queued: worker 0 returns from `epoll_wait` with alice's socket
//! readable → runs alice's reader task → reads, decodes, looks bob up →
//! encodes the frame into bob's queue → at the end of the read batch writes
//! bob's queue to bob's socket itself (the direct write) → waits for
//! alice's socket again → `epoll_wait`. Worker 1 is not woken at all. Only
//! when bob's socket is full does bob's writer task take over: scheduled on
//! worker 1, which is woken through its eventfd if it sleeps.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use async_task::{Runnable, Task};
use concurrent_queue::ConcurrentQueue;
use rustix::event::epoll;
use rustix::event::epoll::EventFlags as E;
use rustix::event::{eventfd, EventfdFlags};
use slab::Slab;
use smol::io::{AsyncRead, AsyncWrite};
use tracing::warn;

/// Tasks a worker runs before it looks at its sockets again, so that under
/// load new input is picked up between batches of work.
const RUN_BUDGET: usize = 64;

/// Events taken from epoll per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// The epoll key of a worker's eventfd (sockets use their slab index).
const WAKE_KEY: u64 = u64::MAX;

/// A pool of worker threads; see the module docs.
pub struct Workers {
    workers: Vec<Arc<Worker>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The worker the next connection goes to.
    next: AtomicUsize,
}

/// One worker's shared state (its thread runs [`Worker::run`]).
struct Worker {
    index: usize,
    epoll: OwnedFd,
    /// Written to wake the worker from `epoll_wait`.
    wake: OwnedFd,
    /// Tasks ready to run, from any thread.
    queue: ConcurrentQueue<Runnable>,
    /// The worker is in, or about to enter, a blocking `epoll_wait`: a task
    /// scheduled from another thread must wake it.
    sleeping: AtomicBool,
    /// Readiness of the sockets registered here, by epoll key.
    sources: Mutex<Slab<Arc<Readiness>>>,
    stop: AtomicBool,
}

thread_local! {
    /// The worker this thread is, if it is one.
    static CURRENT: RefCell<Option<Arc<Worker>>> = const { RefCell::new(None) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding these locks; a poisoned one holds
    // consistent data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workers {
    /// Starts `count` worker threads (at least one), named `…/w0`, `…/w1`.
    pub fn start(count: usize) -> io::Result<Arc<Workers>> {
        Workers::start_named(count, |index| format!("w{index}"))
    }

    /// Starts `count` worker threads (at least one), worker `i` named
    /// after its program and `role(i)`.
    pub(crate) fn start_named(
        count: usize,
        role: impl Fn(usize) -> String,
    ) -> io::Result<Arc<Workers>> {
        let mut workers = Vec::new();
        for index in 0..count.max(1) {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            epoll::add(
                &epoll,
                &wake,
                epoll::EventData::new_u64(WAKE_KEY),
                epoll::EventFlags::IN | epoll::EventFlags::ET,
            )?;
            workers.push(Arc::new(Worker {
                index,
                epoll,
                wake,
                queue: ConcurrentQueue::unbounded(),
                sleeping: AtomicBool::new(false),
                sources: Mutex::new(Slab::new()),
                stop: AtomicBool::new(false),
            }));
        }
        let mut threads = Vec::new();
        for worker in &workers {
            let worker = Arc::clone(worker);
            let thread = std::thread::Builder::new()
                .name(crate::runtime::thread_name(&role(worker.index)))
                .spawn(move || worker.run());
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    let started = Workers {
                        workers,
                        threads: Mutex::new(threads),
                        next: AtomicUsize::new(0),
                    };
                    started.stop();
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(Workers {
            workers,
            threads: Mutex::new(threads),
            next: AtomicUsize::new(0),
        }))
    }

    /// The worker whose turn it is. Each round of hand-outs starts one
    /// worker further, so that connections opened in a fixed pattern (one
    /// to listen, one to send) do not all of one kind land on one worker.
    fn next_index(&self) -> usize {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        next + next / self.workers.len()
    }

    /// How many worker threads there are.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Runs `future` on the next worker in turn, to its end.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.spawn_on(self.next_index(), future).detach();
    }

    /// Runs `future` on worker `index` (modulo the count); dropping the
    /// handle cancels it.
    pub fn spawn_on<T: Send + 'static>(
        &self,
        index: usize,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        spawn_on(&self.workers[index % self.workers.len()], future)
    }

    /// Runs `future` on the worker this thread is, or on the next worker
    /// in turn when this thread is none (a session's writer task joins its
    /// reader); dropping the handle cancels it.
    pub fn spawn_here<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        match current() {
            Some(worker) => spawn_on(&worker, future),
            None => self.spawn_on(self.next_index(), future),
        }
    }

    /// Stops every worker (their tasks are dropped) and waits for their
    /// threads to end.
    pub fn stop(&self) {
        for worker in &self.workers {
            worker.stop.store(true, Ordering::SeqCst);
            worker.notify();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        let me = std::thread::current().id();
        // A worker that stops the pool (dropping its last handle) ends
        // with the others; it cannot wait for itself.
        for thread in threads.into_iter().filter(|t| t.thread().id() != me) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker the calling thread is, if it is one.
fn current() -> Option<Arc<Worker>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// The worker the calling thread is, as an index, if it is one.
pub fn current_index() -> Option<usize> {
    CURRENT.with(|current| current.borrow().as_ref().map(|worker| worker.index))
}

fn spawn_on<T: Send + 'static>(
    worker: &Arc<Worker>,
    future: impl Future<Output = T> + Send + 'static,
) -> Task<T> {
    // Weak: a task must not keep its worker alive (the worker holds its
    // tasks); a task woken after its worker stopped is dropped.
    let owner = Arc::downgrade(worker);
    let schedule = move |runnable: Runnable| {
        if let Some(worker) = Weak::upgrade(&owner) {
            worker.schedule(runnable);
        }
    };
    let (runnable, task) = async_task::Builder::new()
        .propagate_panic(true)
        .spawn(move |_| future, schedule);
    runnable.schedule();
    task
}

impl Worker {
    fn schedule(&self, runnable: Runnable) {
        if self.queue.push(runnable).is_err() {
            return; // Closed: the worker has stopped.
        }
        // Pairs with the fence in `run`: either the worker sees this task
        // before it sleeps, or this sees it sleeping and wakes it.
        fence(Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.notify();
        }
    }

    /// Wakes the worker from `epoll_wait` (or makes the next one return).
    fn notify(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    fn run(self: Arc<Self>) {
        CURRENT.with(|current| *current.borrow_mut() = Some(Arc::clone(&self)));
        let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
        let zero = rustix::event::Timespec::default();
        while !self.stop.load(Ordering::SeqCst) {
            for _ in 0..RUN_BUDGET {
                match self.queue.pop() {
                    // A task that panics is reported through its (detached)
                    // handle, not here: the worker goes on.
                    Ok(runnable) => {
                        runnable.run();
                    }
                    Err(_) => break,
                }
            }
            let mut block = false;
            if self.queue.is_empty() {
                self.sleeping.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                block = self.queue.is_empty() && !self.stop.load(Ordering::SeqCst);
                if !block {
                    self.sleeping.store(false, Ordering::SeqCst);
                }
            }
            events.clear();
            let timeout = if block { None } else { Some(&zero) };
            let waited = epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout,
            );
            self.sleeping.store(false, Ordering::SeqCst);
            if let Err(e) = waited {
                if e != rustix::io::Errno::INTR {
                    warn!("worker {}: epoll_wait failed: {e}", self.index);
                }
                continue;
            }
            for event in &events {
                let key = event.data.u64();
                if key == WAKE_KEY {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(&self.wake, &mut count);
                    continue;
                }
                let flags = event.flags;
                let readable = Edge {
                    fired: flags.intersects(E::IN | E::RDHUP | E::HUP | E::ERR),
                    for_good: flags.intersects(E::RDHUP | E::HUP | E::ERR),
                };
                let writable = Edge {
                    fired: flags.intersects(E::OUT | E::HUP | E::ERR),
                    for_good: flags.intersects(E::HUP | E::ERR),
                };
                let source = usize::try_from(key)
                    .ok()
                    .and_then(|key| lock(&self.sources).get(key).cloned());
                if let Some(source) = source {
                    source.fire(readable, writable);
                }
            }
        }
        self.queue.close();
        while let Ok(runnable) = self.queue.pop() {
            drop(runnable);
        }
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

const READ: usize = 0;
const WRITE: usize = 1;

/// Whether a socket may be read or written, and who waits for it.
#[derive(Default)]
struct Readiness {
    directions: Mutex<[Direction; 2]>,
}

struct Direction {
    /// An edge came since the last wait consumed one: try the operation.
    ready: bool,
    /// The peer closed (or the socket failed): every operation from now on
    /// ends at once, so every wait does too. An edge-triggered socket says
    /// so only once, and a read that returned data may not have reached
    /// the end yet.
    for_good: bool,
    waker: Option<Waker>,
}

/// What one epoll event says about one direction.
#[derive(Clone, Copy)]
struct Edge {
    fired: bool,
    for_good: bool,
}

impl Readiness {
    fn poll(&self, direction: usize, cx: &mut Context<'_>) -> Poll<()> {
        let mut directions = lock(&self.directions);
        let slot = &mut directions[direction];
        if std::mem::take(&mut slot.ready) || slot.for_good {
            return Poll::Ready(());
        }
        let previous = match &slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            _ => slot.waker.replace(cx.waker().clone()),
        };
        drop(directions);
        // Someone else waited this way: wake it too, so that nobody is
        // forgotten (it checks again and registers again).
        if let Some(previous) = previous {
            previous.wake();
        }
        Poll::Pending
    }

    fn fire(&self, readable: Edge, writable: Edge) {
        let mut wake = [None, None];
        {
            let mut directions = lock(&self.directions);
            for (direction, edge) in [(READ, readable), (WRITE, writable)] {
                let slot = &mut directions[direction];
                if edge.fired {
                    slot.ready = true;
                    slot.for_good |= edge.for_good;
                    wake[direction] = slot.waker.take();
                }
            }
        }
        for waker in wake.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl Default for Direction {
    fn default() -> Self {
        // Ready until an operation says otherwise: data that arrived
        // before the socket was registered is read at once.
        Direction {
            ready: true,
            for_good: false,
            waker: None,
        }
    }
}

/// A TCP socket registered with the worker it lives on.
pub(crate) struct WorkerStream {
    stream: TcpStream,
    readiness: Arc<Readiness>,
    key: usize,
    worker: Arc<Worker>,
}

impl std::fmt::Debug for WorkerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerStream")
            .field("stream", &self.stream)
            .field("worker", &self.worker.index)
            .finish_non_exhaustive()
    }
}

impl WorkerStream {
    /// Registers `stream` with the worker this thread is; an error on any
    /// other thread.
    pub(crate) fn register(stream: TcpStream) -> io::Result<WorkerStream> {
        let worker = current().ok_or_else(|| io::Error::other("not on a worker thread"))?;
        stream.set_nonblocking(true)?;
        let readiness = Arc::new(Readiness::default());
        let key = lock(&worker.sources).insert(Arc::clone(&readiness));
        let added = epoll::add(
            &worker.epoll,
            &stream,
            epoll::EventData::new_u64(key as u64),
            epoll::EventFlags::IN
                | epoll::EventFlags::OUT
                | epoll::EventFlags::RDHUP
                | epoll::EventFlags::ET,
        );
        if let Err(e) = added {
            lock(&worker.sources).remove(key);
            return Err(e.into());
        }
        Ok(WorkerStream {
            stream,
            readiness,
            key,
            worker,
        })
    }

    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// Waits until a read may find input (or the end of it).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.readiness.poll(READ, cx)).await;
        Ok(())
    }

    /// Like `TcpStream::peek`, waiting for input.
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.peek(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// Runs a non-blocking operation, waiting in `direction` while it
    /// would block.
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        direction: usize,
        mut op: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match op(&self.stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.readiness.poll(direction, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

impl Drop for WorkerStream {
    fn drop(&mut self) {
        // Before the socket closes (the field drops after this), so that
        // its key is never reused while epoll still knows it.
        let _ = epoll::delete(&self.worker.epoll, &self.stream);
        lock(&self.worker.sources).remove(self.key);
    }
}

impl AsyncRead for &WorkerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, READ, |mut stream| stream.read(buf))
    }
}

impl AsyncWrite for &WorkerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, WRITE, |mut stream| stream.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, WRITE, |mut stream| stream.write_vectored(bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::loopback_pair as pair;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use std::time::Duration;

    #[test]
    fn tasks_run_on_their_worker_and_wake_across_workers() {
        let workers = Workers::start(2).unwrap();
        let (to_main, from_workers) = std::sync::mpsc::channel();
        let (ping, pinged) = async_channel::bounded::<usize>(1);
        let reply = to_main.clone();
        // Worker 1 waits for a message that worker 0 sends: a wake across.
        workers
            .spawn_on(1, async move {
                let value = pinged.recv().await.unwrap();
                reply.send((current_index(), value)).unwrap();
            })
            .detach();
        workers
            .spawn_on(0, async move {
                ping.send(current_index().unwrap()).await.unwrap();
            })
            .detach();
        let got = from_workers.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, (Some(1), 0));
        workers.stop();
    }

    #[test]
    fn a_registered_socket_reads_and_writes_in_both_directions() {
        let workers = Workers::start(1).unwrap();
        let (mine, mut theirs) = pair();
        let (done, finished) = std::sync::mpsc::channel();
        workers.spawn(async move {
            let stream = WorkerStream::register(mine).unwrap();
            let mut buf = [0u8; 5];
            (&stream).read_exact(&mut buf).await.unwrap();
            // Far more than the socket buffers hold: the write waits for
            // room, woken by edges as the peer reads.
            let big = vec![7u8; 16 << 20];
            (&stream).write_all(&big).await.unwrap();
            (&stream).close().await.unwrap();
            done.send(buf).unwrap();
        });
        theirs.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 16 << 20);
        assert_eq!(
            finished.recv_timeout(Duration::from_secs(10)).unwrap(),
            *b"hello"
        );
    }

    #[test]
    fn the_end_of_input_is_seen_after_a_read_that_took_the_last_data() {
        let workers = Workers::start(1).unwrap();
        let (mine, mut theirs) = pair();
        // Data and the end of input arrive before the socket is read:
        // one read takes the data, and the edge that said "end" came
        // before it. The wait that follows must still end.
        theirs.write_all(b"last").unwrap();
        theirs.shutdown(Shutdown::Write).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        workers.spawn(async move {
            let stream = WorkerStream::register(mine).unwrap();
            smol::Timer::after(Duration::from_millis(50)).await;
            stream.readable().await.unwrap();
            let mut buf = [0u8; 64];
            let n = (&stream).read(&mut buf).await.unwrap();
            let waited = crate::runtime::timeout(Duration::from_secs(5), stream.readable()).await;
            let end = (&stream).read(&mut buf).await.unwrap();
            done.send((n, waited.is_some(), end)).unwrap();
        });
        let got = finished.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, (4, true, 0));
    }

    #[test]
    fn registering_off_a_worker_is_an_error() {
        let (mine, _theirs) = pair();
        assert!(WorkerStream::register(mine).is_err());
    }
}
