//! The queue between the `redis` crate's connection, which hands over this
//! node's pushes (subscribed messages, disconnections), and the task that
//! acts on them, bounded in bytes. With one Redis, the inbox and the
//! presence channel come on a subscription of the node's own instead
//! (`subscription`), and only the hint channels come through here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use tracing::warn;

/// Bytes of batches received from Redis and not yet handled past which
/// further ones are dropped (and logged): a node that cannot keep up with
/// what the others send it must not grow without bound. Redis applies the
/// same rule to a slow subscriber (its pub/sub output buffer limit, 32 MiB,
/// disconnects it).
pub(crate) const INBOUND_BYTES: usize = 64 << 20;

/// Where the Redis client hands this node's pushes, counted in bytes.
pub(super) struct Inbound {
    sender: async_channel::Sender<PushInfo>,
    /// Bytes queued and not yet taken.
    pending: Arc<AtomicUsize>,
}

/// The other end of an [`Inbound`].
pub(super) struct InboundQueue {
    receiver: async_channel::Receiver<PushInfo>,
    pending: Arc<AtomicUsize>,
}

impl Inbound {
    pub(super) fn new() -> (Inbound, InboundQueue) {
        let (sender, receiver) = async_channel::unbounded();
        let pending = Arc::new(AtomicUsize::new(0));
        let queue = InboundQueue {
            receiver,
            pending: Arc::clone(&pending),
        };
        (Inbound { sender, pending }, queue)
    }

    /// Queues a push unless [`INBOUND_BYTES`] are waiting already.
    pub(super) fn push(&self, info: PushInfo) -> Result<(), ()> {
        let size = push_size(&info);
        let waiting = self.pending.load(Ordering::Relaxed);
        if waiting + size > INBOUND_BYTES && info.kind != PushKind::Disconnection {
            warn!("cluster: {size} bytes from Redis dropped: this node is {waiting} bytes behind");
            return Ok(());
        }
        self.pending.fetch_add(size, Ordering::Relaxed);
        self.sender.try_send(info).map_err(|_| ())
    }
}

impl InboundQueue {
    /// True when a push is already queued.
    pub(super) fn waiting(&self) -> bool {
        !self.receiver.is_empty()
    }

    /// The next push; `None` once the connection is gone.
    pub(super) async fn next(&self) -> Option<PushInfo> {
        let info = self.receiver.recv().await.ok()?;
        self.pending.fetch_sub(push_size(&info), Ordering::Relaxed);
        Some(info)
    }
}

/// The bytes a push holds.
fn push_size(info: &PushInfo) -> usize {
    info.data
        .iter()
        .map(|value| match value {
            Value::BulkString(bytes) => bytes.len(),
            _ => 0,
        })
        .sum()
}
