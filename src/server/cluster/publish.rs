//! Forwarding to other nodes: queueing a message in its node's outbox
//! (`outbox`), and the publisher that sends each outbox's contents as one
//! `PUBLISH`, pipelined, within the window of unacknowledged bytes.

use super::batch::{put_header, Record};
use super::commands::{Commands, REDIS_TIMEOUT};
use super::flight::{refuse_batch, Flight, Taken};
use super::keys::inbox;
use super::outbox::{Forward, Outbox, Records, Route, Ticket, Unreachable, OUTBOX_BYTES};
use super::publish_link::PublishLink;
use super::Cluster;
use crate::server::registry::Registry;
use event_listener::listener;
use smol::future::FutureExt;
use smol::Timer;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// PUBLISH commands on their way at once: enough that Redis always has the
/// next batch while this node waits for the last one's answer.
pub(super) const PUBLISH_DEPTH: usize = 4;

/// How often the publisher looks at the time: whether the oldest answer on
/// the link is late, whether it has been idle for [`SPARES_KEPT`].
const TICK: Duration = Duration::from_millis(250);

/// Idle for this long, the publisher frees the outboxes' spare buffers.
const SPARES_KEPT: Duration = Duration::from_secs(1);

/// Where the publisher sends its batches.
pub(super) enum PublishOn<'a> {
    /// The crate's connection: on a Redis Cluster, where the crate knows
    /// which shard holds a channel.
    Commands(&'a Commands),
    /// A connection of this node's own, to one Redis (see `publish_link`).
    Link(PublishLink),
}

/// Where the answer to a batch's PUBLISH will come from.
enum Answer {
    /// Taken, not sent yet.
    Unsent,
    /// The task that sent it on the crate's connection and waits.
    Task(smol::Task<redis::RedisResult<i64>>),
    /// The publish link, in order; the publisher gives up on it
    /// [`REDIS_TIMEOUT`] after it was sent (within a [`TICK`]).
    Link { sent: Instant },
}

/// The batches taken and not yet answered, oldest first, each with where
/// its answer comes from. A batch is in here from the moment it is taken,
/// so that whatever stops the publisher, its senders hear of it.
struct InFlight<'a> {
    registry: &'a Registry,
    batches: VecDeque<(Taken, Answer)>,
}

impl InFlight<'_> {
    /// Sends every batch not sent yet on its way; an error if the link
    /// failed (they stay here, and are refused with the rest).
    async fn send(&mut self, cluster: &Cluster, on: &mut PublishOn<'_>) -> redis::RedisResult<()> {
        for (taken, answer) in self.batches.iter_mut() {
            if matches!(answer, Answer::Unsent) {
                taken.outbox.room.notify(usize::MAX);
                *answer = send_one(cluster, on, taken).await?;
            }
        }
        Ok(())
    }
}

/// Sends `taken` on its way.
async fn send_one(
    cluster: &Cluster,
    on: &mut PublishOn<'_>,
    taken: &mut Taken,
) -> redis::RedisResult<Answer> {
    let body = taken.batch.len();
    let tag = cluster.key.as_ref().map(|key| key.sign(&taken.batch));
    let tag = tag.as_ref().map_or(&[][..], |tag| &tag[..]);
    let channel = inbox(&taken.node);
    match on {
        PublishOn::Commands(connection) => {
            let mut command = connection.publish(&channel);
            taken.batch.extend_from_slice(tag);
            command.arg(&taken.batch);
            taken.batch.truncate(body);
            let mut connection = (*connection).clone();
            let stats = Arc::clone(&cluster.local.stats);
            // A task, so that the command is sent now (the connection is
            // multiplexed: answers come back in order) and waited for
            // later.
            Ok(Answer::Task(crate::net::background::spawn(async move {
                let sent = Instant::now();
                let answer = command.query_async::<i64>(&mut connection).await;
                stats.publishes.observe(body, sent.elapsed());
                answer
            })))
        }
        PublishOn::Link(link) => {
            let sent = Instant::now();
            link.publish(channel.as_bytes(), &taken.batch, tag).await?;
            Ok(Answer::Link { sent })
        }
    }
}

/// The answer to the oldest batch in flight, `answer`.
async fn answered(
    on: &mut PublishOn<'_>,
    answer: &mut Answer,
    stats: &crate::server::stats::Stats,
    bytes: usize,
) -> redis::RedisResult<i64> {
    match (answer, on) {
        (Answer::Task(task), _) => task.await,
        (Answer::Link { sent }, PublishOn::Link(link)) => {
            let answer = link.published().await;
            stats.publishes.observe(bytes, sent.elapsed());
            answer
        }
        // Not made: a batch is sent before its answer is awaited, and a
        // link's answers come with the link.
        (Answer::Unsent, _) | (Answer::Link { .. }, PublishOn::Commands(_)) => {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a batch's answer without its PUBLISH",
            )))
        }
    }
}

/// What woke an idle publisher.
enum Woke {
    /// Records queued, or room in a window.
    Ready,
    /// The link may be read: an answer to a worker's batch, or its end.
    Readable,
    /// The tick (see [`TICK`]).
    Tick,
}

/// Ends the workers' direct writes however the publisher stops.
struct Grounded<'a>(&'a Cluster);

impl Drop for Grounded<'_> {
    fn drop(&mut self) {
        self.0.flight().ground(&self.0.local.registry);
    }
}

impl Drop for InFlight<'_> {
    /// Batches still unanswered when the publisher stops (Redis failed, or
    /// the connection loop ended) may or may not have gone out: their
    /// senders are told they were not delivered, never left to wonder.
    fn drop(&mut self) {
        for (taken, _) in self.batches.drain(..) {
            taken.lost(self.registry);
        }
    }
}

impl Cluster {
    /// The outbox for `node`, if it is live. Every cross-node message
    /// asks, from every worker: a read lock, except the first time a node
    /// is seen.
    fn outbox(&self, node: &Arc<str>) -> Option<Arc<Outbox>> {
        let known = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(outbox) = known.get(node) {
            return Some(Arc::clone(outbox));
        }
        drop(known);
        // Not for a node id nobody vouched for: what a forged one costs is
        // bounded by the live set.
        let node = self.live_node(node.as_bytes())?;
        let mut outboxes = self.outboxes.write().unwrap_or_else(|e| e.into_inner());
        let first = self.batches.load(Ordering::Relaxed);
        let outbox = outboxes.entry(node).or_insert_with(|| {
            // Records of one message each until the node's format is read.
            self.format_wanted.notify(1);
            Arc::new(Outbox::starting_at(first))
        });
        Some(Arc::clone(outbox))
    }

    /// Queues `record` for `node` if its outbox has room now; returns
    /// where it went. `Err(None)`: the outbox is full (try [`Cluster::send`],
    /// which waits); `Err(Some(Unreachable))`: it never will be.
    pub(super) fn try_send(
        &self,
        node: &Arc<str>,
        record: &Record<'_>,
    ) -> Result<Ticket, Option<Unreachable>> {
        let outbox = self.outbox(node).ok_or(Some(Unreachable))?;
        let (seq, index) = self.try_send_to(&outbox, node, record)?;
        Ok(Ticket { outbox, seq, index })
    }

    /// Queues `record` in `outbox` (for `node`) if there is room: where it
    /// went, as its batch's number and its index in it.
    fn try_send_to(
        &self,
        outbox: &Outbox,
        node: &Arc<str>,
        record: &Record<'_>,
    ) -> Result<(u64, u32), Option<Unreachable>> {
        let receipts = matches!(record, Record::Message { receipts: true, .. });
        let records = Records {
            len: record.len(),
            count: 1,
            receipts,
        };
        self.append(outbox, node, records, false, |out| record.encode(out))
    }

    /// Queues `records`, which `encode` writes, in `outbox` (for `node`) if
    /// there is room, or whatever the room when `force`d (for a sender
    /// that cannot wait any more): the batch's number and the first one's
    /// index in it.
    pub(super) fn append(
        &self,
        outbox: &Outbox,
        node: &Arc<str>,
        records: Records,
        force: bool,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(u64, u32), Option<Unreachable>> {
        if !self.available() {
            return Err(Some(Unreachable));
        }
        if outbox.closed.load(Ordering::Relaxed) {
            return Err(Some(Unreachable));
        }
        let mut gathering = outbox.lock();
        let first = gathering.batch.is_empty();
        if !first && !force && gathering.batch.len() + records.len > OUTBOX_BYTES {
            return Err(None);
        }
        if first {
            let seq = gathering.seq;
            gathering.flags = put_header(
                &mut gathering.batch,
                self.node.as_bytes(),
                node.as_bytes(),
                seq,
            );
        }
        encode(&mut gathering.batch);
        let (seq, index) = (gathering.seq, gathering.records);
        gathering.records += records.count;
        gathering.wants_ack |= records.receipts;
        drop(gathering);
        if first && !self.publish_directly() {
            self.ready.notify(1);
        }
        Ok((seq, index))
    }

    /// The way to `to` on `node`, for a sender to keep while the registry
    /// stays at `generation`; `None` if `node` is no longer live.
    pub(crate) fn route(&self, node: &Arc<str>, to: &[u8], generation: u64) -> Option<Route> {
        Some(Route {
            to: to.into(),
            node: Arc::clone(node),
            outbox: self.outbox(node)?,
            generation,
        })
    }

    /// Hands a message to the user and node `route` leads to at once if
    /// nothing stands in the way: no pause for it, room in the outbox.
    /// `Err(None)`: something does; [`Cluster::forward`] waits for it.
    /// Synchronous, so that the path of almost every message adds nothing
    /// to a session's future; no lookup of the node or its outbox. A ticket
    /// only for a sender with receipts (the others do not wait on one).
    pub(crate) fn forward_on(
        &self,
        route: &Route,
        from: &[u8],
        content: &[u8],
        receipts: bool,
    ) -> Result<Option<Ticket>, Option<Forward>> {
        if self.paused.any() && self.paused.is_paused(&route.to) {
            return Err(None);
        }
        let message = Record::Message {
            to: &route.to,
            from,
            content,
            receipts,
        };
        let (seq, index) = self
            .try_send_to(&route.outbox, &route.node, &message)
            .map_err(|e| e.map(|Unreachable| Forward::Unreachable))?;
        Ok(receipts.then(|| Ticket {
            outbox: Arc::clone(&route.outbox),
            seq,
            index,
        }))
    }

    /// Queues `record` for `node`, waiting up to `patience` while its
    /// outbox is full; returns where it went.
    pub(super) async fn send(
        &self,
        node: &Arc<str>,
        record: &Record<'_>,
        patience: Duration,
    ) -> Result<Ticket, Unreachable> {
        // Only a full outbox needs a deadline.
        let mut deadline = None;
        loop {
            match self.try_send(node, record) {
                Ok(ticket) => return Ok(ticket),
                Err(Some(unreachable)) => return Err(unreachable),
                Err(None) => {}
            }
            let Some(outbox) = self.outbox(node) else {
                return Err(Unreachable);
            };
            listener!(outbox.room => room);
            if outbox.lock().batch.len() + record.len() <= OUTBOX_BYTES {
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + patience);
            if crate::runtime::until(deadline, room).await.is_none() || !self.available() {
                return Err(Unreachable);
            }
        }
    }

    /// Hands a message for `to`, held by `node`, to that node, waiting up
    /// to `patience` for room (and for a pause to end). `receipts`: the
    /// sender waits on the returned ticket.
    pub(crate) async fn forward(
        &self,
        node: &Arc<str>,
        to: &[u8],
        from: &[u8],
        content: &[u8],
        receipts: bool,
        patience: Duration,
    ) -> Result<Ticket, Forward> {
        // A recipient whose node asked for a pause is waited for, as a full
        // local queue is.
        if !self.paused.wait(to, Instant::now() + patience).await {
            return Err(Forward::NotReading);
        }
        let message = Record::Message {
            to,
            from,
            content,
            receipts,
        };
        self.send(node, &message, patience)
            .await
            .map_err(|Unreachable| Forward::Unreachable)
    }

    /// Asks `node` to disconnect its user `name`.
    pub(crate) async fn kick(&self, node: &Arc<str>, name: &str) -> Result<(), Unreachable> {
        let kick = Record::Kick {
            name: name.as_bytes(),
        };
        self.send(node, &kick, Duration::from_secs(1))
            .await
            .map(drop)
    }

    /// Another node acknowledged batch `seq` of ours.
    pub(super) fn acknowledged(&self, node: &str, seq: u64, refusals: super::batch::Refusals<'_>) {
        let outbox = self
            .outboxes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned();
        if let Some(outbox) = outbox {
            outbox.acks.acknowledged(seq, refusals);
            // Room in its window, perhaps: the publisher looks again.
            self.ready.notify(1);
        }
    }

    /// Publishes each outbox's records as one batch, for as long as the
    /// connection lasts: up to [`PUBLISH_DEPTH`] batches are on their way
    /// at once (Redis answers them in order on the one connection), so the
    /// next batch goes out while the last one's answer is still coming.
    /// Returns when Redis fails; every batch that had not been answered is
    /// then refused to its senders, as it is when this is cancelled.
    pub(super) async fn publish(&self, mut on: PublishOn<'_>) -> redis::RedisResult<()> {
        let mut flight = InFlight {
            registry: &self.local.registry,
            batches: VecDeque::new(),
        };
        // Workers may write to a plain link themselves while this waits
        // with nothing on its way (see `flight`); whatever stops this ends
        // that, and refuses what they wrote and this had not seen.
        let _grounded = Grounded(self);
        // The socket workers may write to, whose answers wake this.
        let shared_socket = match &on {
            PublishOn::Link(link) => link.shared_socket(),
            PublishOn::Commands(_) => None,
        };
        self.flight().socket = shared_socket.clone();
        let stats = &self.local.stats;
        // One timer for the life of the publisher, not one per batch: each
        // timer armed wakes async-io's reactor thread, which at a few
        // thousand messages a second was two wake-ups of another thread
        // per message. It bounds the wait for an answer (within a tick of
        // the deadline) and tells an idle spell.
        let mut tick = Timer::after(TICK);
        let mut busy = Instant::now();
        loop {
            // Listening before looking: records queued after the look wake
            // this.
            listener!(self.ready => wake);
            let room = flight.batches.len() < PUBLISH_DEPTH;
            // What workers wrote comes first, then what they left, then
            // what is queued now; none of them writes meanwhile.
            let (rest, taken) = {
                let mut shared = self.flight();
                shared.idle = false;
                let shared = &mut *shared;
                let sent = shared.sent.drain(..);
                let sent = sent.map(|(taken, sent)| (taken, Answer::Link { sent }));
                let unsent = shared.unsent.drain(..).map(|taken| (taken, Answer::Unsent));
                flight.batches.extend(sent.chain(unsent));
                let rest = std::mem::take(&mut shared.rest);
                let taken = if room {
                    self.take_batches()
                } else {
                    VecDeque::new()
                };
                (rest, taken)
            };
            if !rest.is_empty() {
                if let PublishOn::Link(link) = &mut on {
                    link.write_rest(&rest).await?;
                }
            }
            let unsent = flight
                .batches
                .iter()
                .any(|(_, answer)| matches!(answer, Answer::Unsent));
            if !taken.is_empty() || unsent {
                busy = Instant::now();
                let taken = taken.into_iter().map(|taken| (taken, Answer::Unsent));
                flight.batches.extend(taken);
                flight.send(self, &mut on).await?;
                continue;
            }
            let Some((taken, answer)) = flight.batches.front_mut() else {
                // Nothing on its way: a worker may write the next batch
                // itself, and its answer wakes this. A full window empties
                // as acknowledgements come (they wake this), or as they
                // fail to come in time. Idle for a second, the outboxes'
                // spare buffers go back.
                {
                    let mut shared = self.flight();
                    if !shared.sent.is_empty() || !shared.unsent.is_empty() {
                        continue;
                    }
                    shared.idle = true;
                }
                let answer_coming = async {
                    match &shared_socket {
                        Some(socket) => {
                            let _ = socket.readable().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let woke = async {
                    wake.await;
                    Woke::Ready
                }
                .or(async {
                    answer_coming.await;
                    Woke::Readable
                })
                .or(async {
                    (&mut tick).await;
                    Woke::Tick
                })
                .await;
                match woke {
                    Woke::Ready => {}
                    // An answer to a worker's batch, or the link closed:
                    // with nothing written, Redis has nothing to say, and
                    // a link at its end is read as such (it would stay
                    // readable for good).
                    Woke::Readable => {
                        // Under the lock, and no longer idle: a worker's
                        // answer must not be read here as one to nothing.
                        let mut shared = self.flight();
                        shared.idle = false;
                        if shared.sent.is_empty() && shared.unsent.is_empty() {
                            if let PublishOn::Link(link) = &mut on {
                                link.nothing_to_read()?;
                            }
                        }
                    }
                    Woke::Tick => {
                        tick.set_after(TICK);
                        if busy.elapsed() >= SPARES_KEPT {
                            self.drop_spares();
                        }
                    }
                }
                continue;
            };
            let bytes = taken.batch.len();
            let late = matches!(answer, Answer::Link { sent } if sent.elapsed() >= REDIS_TIMEOUT);
            // The oldest answer, or (with room for more) new records, or
            // the next tick (to look at the time).
            let answered = if late {
                Some(Err(super::publish_link::timed_out()))
            } else {
                let answer = answered(&mut on, answer, stats, bytes);
                let woken = async {
                    if room {
                        wake.await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                let ticked = async {
                    (&mut tick).await;
                    tick.set_after(TICK);
                };
                async { Some(answer.await) }
                    .or(async {
                        woken.or(ticked).await;
                        None
                    })
                    .await
            };
            let Some(published) = answered else {
                continue;
            };
            busy = Instant::now();
            let Some((taken, _)) = flight.batches.pop_front() else {
                continue;
            };
            let body = taken.batch.len();
            match published {
                Ok(receivers) if receivers > 0 => {
                    taken
                        .outbox
                        .acks
                        .published(taken.seq, body, true, taken.wants_ack);
                    taken.outbox.recycle(taken.batch);
                }
                // Nobody listens on that node's inbox (it is gone, or has
                // not subscribed again since Redis came back): the batch
                // is lost unless its senders are told.
                Ok(_) => taken.lost(&self.local.registry),
                Err(e) => {
                    // Nothing is lost silently: each sender hears of each
                    // message that did not go out, this batch's and those
                    // still in flight (dropping `flight` tells them).
                    taken.lost(&self.local.registry);
                    return Err(e);
                }
            }
        }
    }

    /// The state a worker's direct write shares with the publisher.
    pub(super) fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frees the buffers the outboxes keep for their next batches.
    fn drop_spares(&self) {
        let outboxes = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        for outbox in outboxes.values() {
            outbox.lock().spare = None;
        }
    }

    /// Refuses everything waiting in every outbox, and every batch still
    /// waiting for an acknowledgement: Redis is unreachable, so none of it
    /// will go out, or be acknowledged, on this connection.
    pub(super) fn fail_outboxes(&self) {
        for taken in self.take_batches() {
            taken.outbox.room.notify(usize::MAX);
            taken.lost(&self.local.registry);
        }
        let outboxes = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        for outbox in outboxes.values() {
            let taken = outbox.lock().seq;
            outbox.acks.lose_unsettled(taken);
        }
    }

    /// Drops the outbox of `node` (gone), refusing what waited in it.
    pub(super) fn drop_outbox(&self, node: &str) {
        let removed = self
            .outboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        let Some(outbox) = removed else {
            return;
        };
        outbox.closed.store(true, Ordering::Relaxed);
        let mut gathering = outbox.lock();
        let left = gathering.take();
        let taken = gathering.seq;
        drop(gathering);
        outbox.room.notify(usize::MAX);
        if let Some((batch, _, _)) = left {
            refuse_batch(&self.local.registry, &batch);
        }
        outbox.acks.lose_unsettled(taken);
    }

    pub(super) fn take_batches(&self) -> VecDeque<Taken> {
        let outboxes = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        outboxes
            .iter()
            .filter_map(|(node, outbox)| {
                // Its node is behind on what it was sent: its senders wait.
                if outbox.acks.window_full(now) {
                    return None;
                }
                let (batch, seq, wants_ack) = outbox.lock().take()?;
                outbox.acks.taken(seq, batch.len(), wants_ack);
                self.batches.fetch_max(seq + 1, Ordering::Relaxed);
                Some(Taken {
                    node: Arc::clone(node),
                    batch,
                    seq,
                    wants_ack,
                    outbox: Arc::clone(outbox),
                })
            })
            .collect()
    }
}
