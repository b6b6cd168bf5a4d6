//! Acting on a batch from another node: messages into local recipients'
//! queues, errors to local senders, kicks.

use std::sync::Arc;

use tracing::info;

use super::backlog::{not_reading_text, Joined, Waiting};
use super::batch::{decode_batch, Record};
use super::Cluster;
use crate::server::outbound::PushError;
use crate::server::router::not_connected_text;
use crate::server::session::{Session, KICKED};
use crate::server::Shared;

impl Cluster {
    /// Acts on a batch from another node's outbox.
    pub(super) async fn deliver(&self, shared: &Arc<Shared>, batch: &[u8]) {
        let Some((origin, records)) = decode_batch(batch) else {
            return;
        };
        let origin: Arc<str> = String::from_utf8_lossy(origin).into();
        let mut touched: Vec<Arc<Session>> = Vec::new();
        for record in records {
            match record {
                Record::Message { to, from, content } => {
                    let Some(session) = shared.registry.get(to) else {
                        let text = not_connected_text(to);
                        let error = Record::Error {
                            to: from,
                            text: text.as_bytes(),
                        };
                        let patience = shared.config.slow_consumer_timeout;
                        let _ = self.send(&origin, &error, patience).await;
                        continue;
                    };
                    let (wire, name) = (session.wire(), session.name().as_bytes());
                    let len = wire.message_len(name, from, content);
                    let encode = |out: &mut Vec<u8>| wire.encode_message(name, from, content, out);
                    let waiting = || Waiting {
                        frame: {
                            let mut frame = Vec::with_capacity(len);
                            encode(&mut frame);
                            frame
                        },
                        origin: Arc::clone(&origin),
                        from: from.into(),
                    };
                    // Behind the messages already waiting for it, if any:
                    // order is kept, and this task never waits.
                    match self.join_backlog(shared, &session, waiting) {
                        Joined::Queued => continue,
                        Joined::Refused(refused) => {
                            self.refuse(shared, refused, &not_reading_text(session.name()))
                                .await;
                            continue;
                        }
                        Joined::NoBacklog => {}
                    }
                    match session.outbound().try_push_deferred(len, encode) {
                        Ok(true) => touched.push(session),
                        Ok(false) | Err(PushError::Closed) => {}
                        // Its own node's rule, without holding up the
                        // others: the message waits for room (in order, with
                        // those that follow it) for the slow-consumer
                        // timeout, on a task of its own.
                        Err(PushError::Full) => {
                            let first = waiting();
                            self.start_backlog(shared, Arc::clone(&session), first);
                        }
                    }
                }
                Record::Error { to, text } => {
                    if let Some(session) = shared.registry.get(to) {
                        let frame = session.wire().error_frame(&String::from_utf8_lossy(text));
                        if let Ok(true) = session
                            .outbound()
                            .try_push_deferred(frame.len(), |out| out.extend_from_slice(&frame))
                        {
                            touched.push(session);
                        }
                    }
                }
                Record::Kick { name } => {
                    if let Some(session) = shared.registry.get(name) {
                        shared.registry.remove(&session);
                        if session.close_with_error(KICKED) {
                            info!(
                                user = session.name(),
                                "kicked by the operator of another node"
                            );
                        }
                    }
                }
            }
        }
        flush_all(&mut touched);
    }
}

/// Writes every queue a delivery made non-empty.
pub(super) fn flush_all(sessions: &mut Vec<Arc<Session>>) {
    for session in sessions.drain(..) {
        match session.connection() {
            Some(connection) => session.outbound().flush_direct(&connection),
            None => session.outbound().wake_writer(),
        }
    }
}
