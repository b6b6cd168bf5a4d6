//! Draining backlogs: a message from another node that found its local
//! recipient's queue full waits in the recipient's backlog (`backlog`),
//! drained in order by a task of its own, for the slow-consumer timeout.

use super::backlog::{session_key, Backlog, Joined, Waiting};
use super::batch::Record;
use super::pause::{BACKLOG_BYTES, PAUSE_AT};
use super::Cluster;
use crate::server::mailbox::Mailbox;
use crate::server::outbound::PushError;
use crate::wire::texts::{Code, ErrorText};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl Cluster {
    /// Queues a message behind `session`'s backlog if it has one.
    pub(super) fn join_backlog(
        &self,
        session: &Arc<Mailbox>,
        waiting: impl FnOnce() -> Waiting,
    ) -> Joined {
        // Almost always: no lock and no hashing per message when nobody is
        // behind. Backlogs start and end on the thread that delivers (the
        // server's background thread), so the count is never stale here.
        if self.backlog_count.load(Ordering::Acquire) == 0 {
            return Joined::NoBacklog;
        }
        let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(backlog) = backlogs.get_mut(&session_key(session)) else {
            return Joined::NoBacklog;
        };
        let waiting = waiting();
        if backlog.bytes + waiting.frame.len() > BACKLOG_BYTES.max(self.local.queue_bytes) {
            return Joined::Refused;
        }
        backlog.bytes += waiting.frame.len();
        let pause = backlog.bytes > PAUSE_AT && !backlog.paused.contains(&waiting.origin);
        if pause {
            backlog.paused.push(Arc::clone(&waiting.origin));
        }
        backlog.frames.push_back(waiting);
        if pause {
            Joined::QueuedPause
        } else {
            Joined::Queued
        }
    }

    /// Starts a backlog for `session`, whose queue is full, with `first`,
    /// and the task that feeds it into the queue as room appears.
    pub(super) fn start_backlog(self: &Arc<Self>, session: Arc<Mailbox>, first: Waiting) {
        let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        backlogs.insert(
            session_key(&session),
            Backlog {
                bytes: first.frame.len(),
                frames: VecDeque::from([first]),
                paused: Vec::new(),
            },
        );
        self.backlog_count.store(backlogs.len(), Ordering::Release);
        drop(backlogs);
        let cluster = Arc::clone(self);
        crate::net::background::spawn(async move {
            cluster.drain_backlog(&session).await;
        })
        .detach();
    }

    /// Feeds `session`'s backlog into its queue, each message waiting up to
    /// the slow-consumer timeout for room; a recipient that never makes room
    /// is disconnected as a slow consumer, and the senders of what was still
    /// waiting are told.
    async fn drain_backlog(&self, session: &Arc<Mailbox>) {
        let key = session_key(session);
        loop {
            let next = {
                let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
                let Some(backlog) = backlogs.get_mut(&key) else {
                    return;
                };
                match backlog.frames.pop_front() {
                    Some(next) => {
                        backlog.bytes -= next.frame.len();
                        Ok(next)
                    }
                    None => {
                        let removed = backlogs.remove(&key).map(|b| b.paused);
                        self.backlog_count.store(backlogs.len(), Ordering::Release);
                        Err(removed)
                    }
                }
            };
            let next = match next {
                Ok(next) => next,
                Err(paused) => {
                    // Caught up: the nodes told to pause go on.
                    self.resume_senders(session, paused.unwrap_or_default())
                        .await;
                    return;
                }
            };
            let deadline = Instant::now() + self.local.slow_consumer_timeout;
            let frame = &next.frame;
            let pushed = session
                .outbound()
                .push(frame.len(), deadline, |out| out.extend_from_slice(frame))
                .await;
            if pushed.is_ok() {
                continue;
            }
            let mut dropped = vec![next];
            let mut paused = Vec::new();
            let removed = {
                let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
                let removed = backlogs.remove(&key);
                self.backlog_count.store(backlogs.len(), Ordering::Release);
                removed
            };
            if let Some(backlog) = removed {
                dropped.extend(backlog.frames);
                paused = backlog.paused;
            }
            // Their next messages are refused at once, without waiting.
            self.resume_senders(session, paused).await;
            let limit = self.local.slow_consumer_timeout;
            if pushed == Err(PushError::Full)
                && session.disconnect_slow(format_args!(
                    "outbound queue stayed full for {limit:?} (messages from another node)"
                ))
            {
                self.local.registry.remove(session);
            }
            let error = ErrorText::new(Code::SlowConsumer, session.name());
            self.refuse(dropped, &error).await;
            return;
        }
    }

    /// Tells the nodes in `paused` that `session`'s user may be sent to
    /// again.
    async fn resume_senders(&self, session: &Mailbox, paused: Vec<Arc<str>>) {
        let go = Record::Go {
            name: session.name().as_bytes(),
        };
        for node in paused {
            let _ = self
                .send(&node, &go, std::time::Duration::from_secs(1))
                .await;
        }
    }

    /// Tells the senders of `dropped` (on whichever node) that their
    /// messages were not delivered, because of `error`.
    pub(super) async fn refuse(&self, dropped: Vec<Waiting>, error: &ErrorText) {
        for waiting in dropped {
            let record = Record::Error {
                to: &waiting.from,
                code: error.code().to_byte(),
                text: error.text().as_bytes(),
            };
            let patience = self.local.slow_consumer_timeout;
            let _ = self.send(&waiting.origin, &record, patience).await;
        }
    }
}
