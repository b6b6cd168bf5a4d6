//! Messages for other nodes: one bounded outbox per node, and the
//! publisher that sends each outbox's contents as one batch.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_listener::{listener, Event};

use super::batch::{decode_batch, put_short, Record};
use super::commands::Commands;
use super::delivery::flush_all;
use super::keys::inbox;
use super::{unreachable_text, Cluster, Unreachable, OUTBOX_BYTES};
use crate::server::Shared;

/// Messages waiting for one other node.
#[derive(Default)]
pub(super) struct Outbox {
    /// The batch being gathered: the header, then records.
    batch: Mutex<Vec<u8>>,
    /// Fires when the publisher took the batch.
    pub(super) room: Event,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Cluster {
    /// The outbox for `node`. Every cross-node message asks, from every
    /// worker: a read lock, except the first time a node is seen.
    fn outbox(&self, node: &Arc<str>) -> Arc<Outbox> {
        let known = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(outbox) = known.get(node) {
            return Arc::clone(outbox);
        }
        drop(known);
        let mut outboxes = self.outboxes.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(outboxes.entry(Arc::clone(node)).or_default())
    }

    /// Queues `record` for `node`, waiting up to `patience` while its
    /// outbox is full.
    pub(super) async fn send(
        &self,
        node: &Arc<str>,
        record: &Record<'_>,
        patience: Duration,
    ) -> Result<(), Unreachable> {
        if !self.available() {
            return Err(Unreachable);
        }
        let outbox = self.outbox(node);
        let len = record.len();
        // Only a full outbox needs a deadline.
        let mut deadline = None;
        loop {
            {
                let mut batch = outbox.lock();
                if batch.is_empty() || batch.len() + len <= OUTBOX_BYTES {
                    let first = batch.is_empty();
                    if first {
                        put_short(&mut batch, self.node.as_bytes());
                    }
                    record.encode(&mut batch);
                    drop(batch);
                    if first {
                        self.ready.notify(1);
                    }
                    return Ok(());
                }
            }
            listener!(outbox.room => room);
            if outbox.lock().len() + len <= OUTBOX_BYTES {
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + patience);
            if crate::runtime::until(deadline, room).await.is_none() || !self.available() {
                return Err(Unreachable);
            }
        }
    }

    /// Hands a message for `to`, held by `node`, to that node, waiting up
    /// to `patience` for room.
    pub(crate) async fn forward(
        &self,
        node: &Arc<str>,
        to: &[u8],
        from: &[u8],
        content: &[u8],
        patience: Duration,
    ) -> Result<(), Unreachable> {
        self.send(node, &Record::Message { to, from, content }, patience)
            .await
    }

    /// Asks `node` to disconnect its user `name`.
    pub(crate) async fn kick(&self, node: &Arc<str>, name: &str) -> Result<(), Unreachable> {
        let kick = Record::Kick {
            name: name.as_bytes(),
        };
        self.send(node, &kick, Duration::from_secs(1)).await
    }

    /// Waits for outboxes with records and publishes each as one batch.
    pub(super) async fn publish_ready(
        &self,
        shared: &Shared,
        connection: &mut Commands,
    ) -> redis::RedisResult<()> {
        let ready: Vec<(Arc<str>, Vec<u8>, Arc<Outbox>)> = loop {
            listener!(self.ready => wake);
            let taken = self.take_batches();
            if !taken.is_empty() {
                break taken;
            }
            wake.await;
        };
        for (node, batch, outbox) in ready {
            outbox.room.notify(usize::MAX);
            let published: redis::RedisResult<i64> = connection
                .publish(&inbox(&node))
                .arg(&batch)
                .query_async(connection)
                .await;
            if let Err(e) = published {
                // Nothing is lost silently: each sender hears of each
                // message that did not go out.
                refuse_batch(shared, &batch);
                return Err(e);
            }
        }
        Ok(())
    }

    fn take_batches(&self) -> Vec<(Arc<str>, Vec<u8>, Arc<Outbox>)> {
        let outboxes = self.outboxes.read().unwrap_or_else(|e| e.into_inner());
        outboxes
            .iter()
            .filter_map(|(node, outbox)| {
                let batch = std::mem::take(&mut *outbox.lock());
                (!batch.is_empty()).then(|| (Arc::clone(node), batch, Arc::clone(outbox)))
            })
            .collect()
    }
}

/// Tells the senders of the messages in a batch that could not be
/// published that they were not delivered.
fn refuse_batch(shared: &Shared, batch: &[u8]) {
    let Some((_, records)) = decode_batch(batch) else {
        return;
    };
    let mut touched = Vec::new();
    for record in records {
        let Record::Message { to, from, .. } = record else {
            continue;
        };
        let Some(sender) = shared.registry.get(from) else {
            continue;
        };
        let text = unreachable_text(to);
        let frame = sender.wire().error_frame(&text);
        if let Ok(true) = sender
            .outbound()
            .try_push_deferred(frame.len(), |out| out.extend_from_slice(&frame))
        {
            touched.push(sender);
        }
    }
    flush_all(&mut touched);
}
