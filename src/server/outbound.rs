//! A session's bounded queue of encoded frames waiting to be written.
//!
//! Producers (other sessions' readers, the console) encode each frame once,
//! straight into the queue's byte buffer. Whoever writes swaps the whole
//! buffer out and writes it with one call, so under load many frames share
//! a syscall and no frame is ever allocated on its own.
//!
//! Two kinds of writer take turns, never both at once (`busy`): a sender's
//! reader, which after routing a batch of frames writes an idle
//! recipient's queue straight to its connection ([`OutboundQueue::flush_direct`],
//! no task hop and no thread wake-up on the common path), and the session's
//! writer task, which takes over whatever the connection could not accept
//! at once and waits for it to drain. A connection that can take bytes
//! without sending them all (TLS, which encrypts into its own buffer) says
//! so, and the writer task then pushes out what it holds.
//!
//! The queue is bounded in bytes. A producer that finds it
//! full waits for room (backpressure) with a deadline; what happens after the
//! deadline is the caller's decision (`router` for a local sender, which
//! disconnects the recipient as a slow consumer; `cluster/drain` for
//! messages from other nodes).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use event_listener::{listener, Event};

use super::stats::{Hot, Stats};
use crate::net::socket::Written;
use crate::net::transport::Transport;
use crate::runtime::until;

/// Largest emptied buffer kept for the next frames; a bigger one (after a
/// burst) is freed at once rather than pinned.
const KEEP_BUFFER: usize = 64 * 1024;

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The session is closing or closed; it takes no more frames.
    Closed,
    /// The queue stayed full until the deadline.
    Full,
}

/// Where a queue is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Accepting frames.
    Open,
    /// No new frames; what is queued is still written, then the writer stops.
    Draining,
    /// No new frames and whatever was queued has been dropped.
    Aborted,
}

#[derive(Debug)]
struct State {
    /// Encoded frames, in order, not yet taken by the writer.
    bytes: Vec<u8>,
    phase: Phase,
    /// Someone (the writer task or a direct flush) is writing a batch taken
    /// from this queue; nobody else may write until it is done.
    busy: bool,
    /// A frame was queued since the last [`OutboundQueue::trim_idle`].
    used: bool,
    /// The writer task's last batch buffer, emptied, handed back so that
    /// the next batch reuses it and [`OutboundQueue::trim_idle`] can free it.
    spare: Vec<u8>,
    /// A direct write left bytes inside the connection (encrypted, not yet
    /// sent): the writer task must flush it even with nothing queued.
    unflushed: bool,
}

/// A bounded, closable byte queue. Many producers (senders' readers, the
/// console, the registry); two consumers that take turns (a sender's
/// reader writing directly, and the session's writer task).
#[derive(Debug)]
pub struct OutboundQueue {
    state: Mutex<State>,
    /// Wakes the writer when the queue turns non-empty or closes.
    data_ready: Event,
    /// Wakes producers waiting for room after the writer took a batch.
    room: Event,
    /// Wakes whoever waits for the session to close (its reader).
    closed: Event,
    /// Most bytes queued at once (a single frame larger than this is still
    /// accepted into an empty queue, so it can never wait forever).
    max_bytes: usize,
    /// Where the bytes written are counted.
    stats: Arc<Stats>,
}

impl OutboundQueue {
    /// An empty open queue with the given bounds, counting on its own.
    #[cfg(test)]
    pub fn new(max_bytes: usize) -> Self {
        OutboundQueue::counted(max_bytes, Arc::new(Stats::new(0)))
    }

    /// An empty open queue with the given bounds, whose writes are counted
    /// in `stats` (once per write, never per frame).
    pub(crate) fn counted(max_bytes: usize, stats: Arc<Stats>) -> Self {
        OutboundQueue {
            state: Mutex::new(State {
                bytes: Vec::new(),
                phase: Phase::Open,
                busy: false,
                used: false,
                spare: Vec::new(),
                unflushed: false,
            }),
            data_ready: Event::new(),
            room: Event::new(),
            closed: Event::new(),
            max_bytes,
            stats,
        }
    }

    /// Bytes queued now, not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.lock().bytes.len()
    }

    /// Where this queue counts.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the byte buffer in a
        // state worse than a truncated frame, and no code here panics.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one frame of `len` bytes written by `encode`, if there is
    /// room, and wakes the writer task if it was idle.
    pub fn try_push(&self, len: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), PushError> {
        if self.try_push_deferred(len, encode)? {
            self.wake_writer();
        }
        Ok(())
    }

    /// Queues one frame like [`OutboundQueue::try_push`], but leaves the
    /// writing to the caller: `Ok(true)` means the queue was idle and the
    /// caller must later call [`OutboundQueue::flush_direct`] or
    /// [`OutboundQueue::wake_writer`].
    pub fn try_push_deferred(
        &self,
        len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<bool, PushError> {
        let mut state = self.lock();
        if state.phase != Phase::Open {
            return Err(PushError::Closed);
        }
        let was_empty = state.bytes.is_empty();
        if !was_empty && state.bytes.len() + len > self.max_bytes {
            return Err(PushError::Full);
        }
        encode(&mut state.bytes);
        state.used = true;
        // A busy writer picks new frames up when it is done; otherwise only
        // the first frame after a drain needs someone to write it.
        Ok(was_empty && !state.busy)
    }

    /// Queues several frames, `len` bytes in all, written by `encode`, under
    /// one lock, if all of them fit within the bound (never over it, even
    /// on an empty queue: a caller falls back to one frame at a time, so
    /// that as many fit as would one by one). `Ok(true)` as for
    /// [`OutboundQueue::try_push_deferred`].
    pub fn try_push_run(
        &self,
        len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<bool, PushError> {
        let mut state = self.lock();
        if state.phase != Phase::Open {
            return Err(PushError::Closed);
        }
        if state.bytes.len() + len > self.max_bytes {
            return Err(PushError::Full);
        }
        let was_empty = state.bytes.is_empty();
        encode(&mut state.bytes);
        state.used = true;
        Ok(was_empty && !state.busy)
    }

    /// Wakes the writer task to write what is queued.
    pub fn wake_writer(&self) {
        self.data_ready.notify(1);
    }

    /// Writes what is queued straight to `connection` without blocking,
    /// unless a writer is already busy. What the connection does not take
    /// at once is left (in order) for the writer task, which is woken for it.
    pub(crate) fn flush_direct(&self, connection: &Transport) {
        let mut state = self.lock();
        if state.busy || state.bytes.is_empty() || state.phase == Phase::Aborted {
            return;
        }
        state.busy = true;
        let mut batch = std::mem::take(&mut state.bytes);
        drop(state);
        self.room.notify(usize::MAX);

        let result = connection.write_now(&batch);
        if let Ok(written) = &result {
            self.stats
                .add(self.stats.slot(), Hot::BytesOut, written.taken as u64);
        }

        let mut state = self.lock();
        state.busy = false;
        let Ok(Written {
            taken: written,
            unflushed,
        }) = result
        else {
            drop(state);
            self.abort();
            return;
        };
        if state.phase == Phase::Aborted {
            return;
        }
        state.unflushed |= unflushed;
        if written < batch.len() {
            // The rest goes first, then whatever was queued meanwhile.
            batch.drain(..written);
            batch.extend_from_slice(&state.bytes);
            state.bytes = batch;
        } else if state.bytes.is_empty() && batch.capacity() <= KEEP_BUFFER {
            // Keep the allocation for the next frames.
            batch.clear();
            state.bytes = batch;
        }
        let hand_over = !state.bytes.is_empty() || state.unflushed || state.phase != Phase::Open;
        drop(state);
        if hand_over {
            self.wake_writer();
        }
    }

    /// Frees the buffer kept for the next frames if the queue is empty and
    /// nothing was queued since the previous call; returns the bytes freed.
    ///
    /// Writers keep the buffer after writing it out (allocating one per batch
    /// would cost under load); a periodic call of this hands it back once the
    /// session has been quiet for a whole period, so a burst does not pin
    /// memory for the rest of an idle session's life.
    pub fn trim_idle(&self) -> usize {
        let mut state = self.lock();
        if std::mem::take(&mut state.used) || state.busy || !state.bytes.is_empty() {
            return 0;
        }
        let freed = state.bytes.capacity() + state.spare.capacity();
        if freed > 0 {
            state.bytes = Vec::new();
            state.spare = Vec::new();
        }
        freed
    }

    /// Queues pre-encoded `frames` past the bounds. Only
    /// for what the server itself must say in one piece, with a size bounded
    /// by the server, never by a peer (a presence snapshot).
    pub fn push_unbounded(&self, frames: &[u8]) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.phase != Phase::Open {
            return Err(PushError::Closed);
        }
        let idle = state.bytes.is_empty() && !state.busy;
        state.bytes.extend_from_slice(frames);
        drop(state);
        if idle {
            self.wake_writer();
        }
        Ok(())
    }

    /// Like [`OutboundQueue::try_push`], but waits for room until `deadline`.
    pub async fn push(
        &self,
        len: usize,
        deadline: Instant,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), PushError> {
        let mut encode = Some(encode);
        loop {
            // `encode` is only consumed on success, which ends the loop.
            let result = self.try_push(len, |out| {
                if let Some(encode) = encode.take() {
                    encode(out)
                }
            });
            if result != Err(PushError::Full) {
                return result;
            }
            listener!(self.room => room);
            // Room may have appeared between the failed try and listening.
            let result = self.try_push(len, |out| {
                if let Some(encode) = encode.take() {
                    encode(out)
                }
            });
            if result != Err(PushError::Full) {
                return result;
            }
            if until(deadline, room).await.is_none() {
                return Err(PushError::Full);
            }
        }
    }

    /// Stops taking frames; `last` (typically an error frame telling the
    /// client why) is queued past the bounds, and everything queued is still
    /// written. Returns false if the queue was already closed.
    pub fn close(&self, last: Option<&[u8]>) -> bool {
        let mut state = self.lock();
        if state.phase != Phase::Open {
            return false;
        }
        if let Some(frame) = last {
            state.bytes.extend_from_slice(frame);
        }
        state.phase = Phase::Draining;
        drop(state);
        self.notify_closed();
        true
    }

    /// Stops taking frames and drops everything queued (the peer is gone or
    /// too slow). Returns false if the queue was already aborted.
    pub fn abort(&self) -> bool {
        let mut state = self.lock();
        if state.phase == Phase::Aborted {
            return false;
        }
        state.phase = Phase::Aborted;
        state.bytes = Vec::new();
        drop(state);
        self.notify_closed();
        true
    }

    fn notify_closed(&self) {
        self.data_ready.notify(usize::MAX);
        self.room.notify(usize::MAX);
        self.closed.notify(usize::MAX);
    }

    /// True once [`abort`](Self::abort) was called: nothing is left to write.
    pub fn is_aborted(&self) -> bool {
        self.lock().phase == Phase::Aborted
    }

    /// True once [`close`](Self::close) or [`abort`](Self::abort) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().phase != Phase::Open
    }

    /// Waits until the queue is closed or aborted.
    pub async fn wait_closed(&self) {
        loop {
            if self.is_closed() {
                return;
            }
            listener!(self.closed => closed);
            if self.is_closed() {
                return;
            }
            closed.await;
        }
    }

    /// For the writer: waits for frames and moves all of them into `batch`
    /// (which must be empty), marking the queue busy until
    /// [`OutboundQueue::finish_write`]. Returns false when the queue is
    /// closed and nothing is left to write.
    pub async fn next_batch(&self, batch: &mut Vec<u8>) -> bool {
        loop {
            if let Some(more) = self.take(batch) {
                return more;
            }
            listener!(self.data_ready => ready);
            if let Some(more) = self.take(batch) {
                return more;
            }
            ready.await;
        }
    }

    /// For the writer: the batch taken by [`OutboundQueue::next_batch`] has
    /// been written; others may write again. The emptied buffer is kept for
    /// the next batch unless it grew large.
    pub fn finish_write(&self, batch: &mut Vec<u8>) {
        self.stats
            .add(self.stats.slot(), Hot::BytesOut, batch.len() as u64);
        let mut spare = std::mem::take(batch);
        spare.clear();
        let mut state = self.lock();
        state.busy = false;
        if spare.capacity() <= KEEP_BUFFER && state.spare.capacity() == 0 {
            state.spare = spare;
        }
    }

    /// Swaps the queued bytes into `batch`; `None` means "nothing yet, wait".
    fn take(&self, batch: &mut Vec<u8>) -> Option<bool> {
        let mut state = self.lock();
        if state.phase == Phase::Aborted {
            return Some(false);
        }
        if state.busy {
            // A direct flush is writing; it wakes us if it leaves anything.
            return None;
        }
        // Bytes a direct write left inside the connection need a write
        // even with nothing queued: an empty batch flushes them.
        let unflushed = std::mem::take(&mut state.unflushed);
        if state.bytes.is_empty() && !unflushed {
            return match state.phase {
                Phase::Open => None,
                _ => Some(false),
            };
        }
        std::mem::swap(batch, &mut state.bytes);
        state.busy = true;
        // The writer handed its last buffer back as the spare: producers
        // fill that one next instead of growing a new one.
        if state.bytes.capacity() == 0 {
            state.bytes = std::mem::take(&mut state.spare);
        }
        drop(state);
        self.room.notify(usize::MAX);
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    /// A plain connection to write to, and the socket that reads it.
    fn connection() -> (Transport, TcpStream) {
        let (writer, reader) = crate::runtime::loopback_pair();
        (Transport::tcp(smol::Async::new(writer).unwrap()), reader)
    }

    fn frame(byte: u8, len: usize) -> impl FnOnce(&mut Vec<u8>) {
        move |out: &mut Vec<u8>| out.extend(std::iter::repeat_n(byte, len))
    }

    #[test]
    fn bounded_by_bytes() {
        let queue = OutboundQueue::new(10);
        assert_eq!(queue.try_push(6, frame(1, 6)), Ok(()));
        assert_eq!(queue.try_push(6, frame(2, 6)), Err(PushError::Full));
        assert_eq!(queue.try_push(2, frame(3, 2)), Ok(()));
        assert_eq!(queue.try_push(2, frame(4, 2)), Ok(()));
        assert_eq!(queue.try_push(1, frame(5, 1)), Err(PushError::Full));
    }

    #[test]
    fn a_run_goes_in_whole_or_not_at_all_and_never_over_the_bound() {
        let queue = OutboundQueue::new(10);
        assert_eq!(queue.try_push_run(12, frame(1, 12)), Err(PushError::Full));
        assert_eq!(queue.try_push_run(6, frame(2, 6)), Ok(true));
        assert_eq!(queue.try_push_run(6, frame(3, 6)), Err(PushError::Full));
        assert_eq!(queue.try_push_run(4, frame(4, 4)), Ok(false));
        let mut batch = Vec::new();
        assert_eq!(queue.take(&mut batch), Some(true));
        assert_eq!(batch, [[2; 6].as_slice(), &[4; 4]].concat());
        queue.close(None);
        assert_eq!(queue.try_push_run(1, frame(5, 1)), Err(PushError::Closed));
    }

    #[test]
    fn oversized_frame_fits_an_empty_queue() {
        let queue = OutboundQueue::new(4);
        assert_eq!(queue.try_push(100, frame(1, 100)), Ok(()));
    }

    #[test]
    fn writer_takes_everything_in_order_then_sees_close() {
        let queue = OutboundQueue::new(100);
        queue.try_push(2, frame(1, 2)).unwrap();
        queue.try_push(1, frame(2, 1)).unwrap();
        assert!(queue.close(Some(&[9])));
        assert_eq!(queue.try_push(1, frame(3, 1)), Err(PushError::Closed));
        let mut batch = Vec::new();
        assert!(smol::block_on(queue.next_batch(&mut batch)));
        assert_eq!(batch, [1, 1, 2, 9]);
        batch.clear();
        queue.finish_write(&mut batch);
        assert!(!smol::block_on(queue.next_batch(&mut batch)));
    }

    #[test]
    fn direct_flush_writes_in_order_and_hands_the_rest_to_the_writer() {
        use std::io::Read;
        let (writer, mut reader) = connection();
        let queue = OutboundQueue::new(1 << 20);
        assert_eq!(queue.try_push_deferred(3, frame(1, 3)), Ok(true));
        // Not idle any more: the first push already made someone responsible.
        assert_eq!(queue.try_push_deferred(2, frame(2, 2)), Ok(false));
        queue.flush_direct(&writer);
        let mut got = [0u8; 5];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(got, [1, 1, 1, 2, 2]);
        assert_eq!(queue.try_push_deferred(1, frame(3, 1)), Ok(true));

        // Far more than the socket buffers hold: the rest is left queued,
        // in order, for the writer task.
        let big = 64 << 20;
        let queue = OutboundQueue::new(big);
        queue.try_push_deferred(big, frame(7, big)).unwrap();
        queue.flush_direct(&writer);
        let mut rest = Vec::new();
        assert!(smol::block_on(queue.next_batch(&mut rest)));
        assert!(!rest.is_empty() && rest.len() < big);
        assert!(rest.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_busy_writer_blocks_direct_flushes() {
        let (socket, _reader) = connection();
        let queue = OutboundQueue::new(100);
        queue.try_push(1, frame(1, 1)).unwrap();
        let mut batch = Vec::new();
        assert!(smol::block_on(queue.next_batch(&mut batch)));
        // The writer task holds the batch: a new frame waits for it.
        assert_eq!(queue.try_push_deferred(1, frame(2, 1)), Ok(false));
        queue.flush_direct(&socket);
        queue.finish_write(&mut batch);
        batch.clear();
        assert!(smol::block_on(queue.next_batch(&mut batch)));
        assert_eq!(batch, [2]);
    }

    #[test]
    fn an_idle_queue_gives_its_buffer_back_after_a_quiet_period() {
        let (socket, _peer) = connection();
        let queue = OutboundQueue::new(1 << 20);
        for _ in 0..16 {
            queue.try_push_deferred(2048, frame(1, 2048)).unwrap();
        }
        queue.flush_direct(&socket);
        // Used during this period: kept for the next frames.
        assert_eq!(queue.trim_idle(), 0);
        // Quiet for a whole period: handed back.
        assert!(queue.trim_idle() >= 16 * 2048);
        assert_eq!(queue.trim_idle(), 0);
        // Still works afterwards.
        assert_eq!(queue.try_push_deferred(3, frame(2, 3)), Ok(true));
        assert_eq!(queue.trim_idle(), 0);
        assert_eq!(queue.trim_idle(), 0, "never frees queued frames");
    }

    #[test]
    fn abort_drops_what_was_queued() {
        let queue = OutboundQueue::new(100);
        queue.try_push(2, frame(1, 2)).unwrap();
        assert!(queue.abort());
        let mut batch = Vec::new();
        assert!(!smol::block_on(queue.next_batch(&mut batch)));
        assert!(batch.is_empty());
    }

    #[test]
    fn full_push_times_out_then_succeeds_after_a_drain() {
        let queue = OutboundQueue::new(4);
        queue.try_push(4, frame(1, 4)).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            smol::block_on(queue.push(4, soon, frame(2, 4))),
            Err(PushError::Full)
        );
        let mut batch = Vec::new();
        smol::block_on(async {
            let waiter = queue.push(4, Instant::now() + Duration::from_secs(10), frame(3, 4));
            let drain = async {
                smol::Timer::after(Duration::from_millis(10)).await;
                assert!(queue.next_batch(&mut batch).await);
            };
            let (pushed, ()) = smol::future::zip(waiter, drain).await;
            assert_eq!(pushed, Ok(()));
        });
        assert_eq!(batch, [1; 4]);
    }
}
