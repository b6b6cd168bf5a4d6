//! The client's side of receipts: which sent messages the server has not
//! accounted for yet, and what each one was (a script line, or a message
//! typed in the editor), so that an ACCEPTED or REFUSED can be reported
//! against it.
//!
//! Messages are numbered from 1 in the order they are written, exactly as
//! the server numbers the message frames it reads (see [`crate::wire::v1`]),
//! so the oldest unaccounted message is always the front of one queue and
//! a receipt costs a pop, whatever the script's length. Only messages are
//! numbered: `who` is not.
//!
//! The queue is bounded by [`WINDOW`]: a sender that gets that far ahead of
//! the server's receipts waits for them, so a server that never answers
//! costs memory for a window, not for the whole script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::runtime::timeout;

/// Most messages in flight (sent, not yet accounted for).
pub const WINDOW: usize = 1 << 16;

/// Where a sent message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Line `number` of a script, `source` being its file name or
    /// `<stdin>`.
    Line { source: Arc<str>, number: u64 },
    /// Typed in the editor: its text, shown once accepted (`→ bob: text`)
    /// and, shortened, in a refusal.
    Typed { text: Box<str> },
    /// Another envelope of a message typed in the editor (`--e2e`: one
    /// per device): shown only if refused.
    Copy { text: Box<str> },
}

/// Characters of a typed message a refusal quotes.
const PREVIEW_CHARS: usize = 24;

/// The start of `message`, for telling apart messages in flight.
pub fn preview(message: &str) -> std::borrow::Cow<'_, str> {
    match message.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => format!("{}…", message[..end].trim_end()).into(),
        None => message.into(),
    }
}

/// A message sent and not yet accounted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its recipient. Shared: a script's lines to one user share one name.
    pub to: Arc<str>,
    /// Where it came from.
    pub origin: Origin,
}

/// Messages sent and not yet accounted for, oldest first.
#[derive(Debug)]
pub struct Ledger {
    queue: Mutex<Queue>,
    /// Signalled whenever a receipt accounts for something (or the
    /// connection ended), for a sender waiting for room or for the end.
    progress: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Sent>,
    /// Ordinal of `pending`'s front (or of the next message, when empty).
    front: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                front: 1,
            }),
            progress: async_channel::bounded(1),
        }
    }
}

impl Ledger {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn progressed(&self) {
        let _ = self.progress.0.try_send(());
    }

    /// Records a message about to be written; returns how many are now in
    /// flight.
    pub fn record(&self, sent: Sent) -> usize {
        let mut queue = self.queue();
        queue.pending.push_back(sent);
        queue.pending.len()
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue().pending.len()
    }

    /// ACCEPTED `through`: hands every message up to it to `accepted`, in
    /// order. Ordinals not in flight are ignored (a confused server's).
    pub fn accepted(&self, through: u64, mut accepted: impl FnMut(&Sent)) {
        let mut queue = self.queue();
        let mut any = false;
        while queue.front <= through {
            let Some(sent) = queue.pending.pop_front() else {
                break;
            };
            queue.front += 1;
            accepted(&sent);
            any = true;
        }
        drop(queue);
        if any {
            self.progressed();
        }
    }

    /// REFUSED `ordinal`: the message it names, if it is in flight. Any
    /// before it (which the server should have accepted first) go to
    /// `accepted`.
    pub fn refused(&self, ordinal: u64, accepted: impl FnMut(&Sent)) -> Option<Sent> {
        let before = ordinal.checked_sub(1)?;
        self.accepted(before, accepted);
        let mut queue = self.queue();
        if queue.front != ordinal {
            return None;
        }
        let sent = queue.pending.pop_front()?;
        queue.front += 1;
        drop(queue);
        self.progressed();
        Some(sent)
    }

    /// STORED `first..=last`: hands those messages, if in flight, to
    /// `stored`, in order (the caller accounts for any before `first`
    /// first, with [`Ledger::accepted`]).
    pub fn stored(&self, first: u64, last: u64, mut stored: impl FnMut(&Sent)) {
        let mut queue = self.queue();
        let mut any = false;
        while queue.front >= first && queue.front <= last {
            let Some(sent) = queue.pending.pop_front() else {
                break;
            };
            queue.front += 1;
            stored(&sent);
            any = true;
        }
        drop(queue);
        if any {
            self.progressed();
        }
    }

    /// The connection ended: every message in flight is taken out (it may
    /// or may not have been delivered), and numbering starts again at 1 for
    /// the next connection.
    pub fn abandon(&self) -> Vec<Sent> {
        let mut queue = self.queue();
        queue.front = 1;
        let lost = queue.pending.drain(..).collect();
        drop(queue);
        self.progressed();
        lost
    }

    /// Waits until fewer than `limit` messages are in flight. False if
    /// `silence` passed without any receipt.
    pub async fn wait_below(&self, limit: usize, silence: Duration) -> bool {
        while self.in_flight() >= limit.max(1) {
            if timeout(silence, self.progress.1.recv()).await.is_none() {
                return false;
            }
        }
        true
    }
}

/// What to say about messages still in flight when a connection ended:
/// they may or may not have been delivered. `None` when there were none.
pub fn unconfirmed_notice(lost: &[Sent]) -> Option<String> {
    let (first, last) = (lost.first()?, lost.last()?);
    let at = |sent: &Sent| match &sent.origin {
        Origin::Line { source, number } => format!("{source}:{number}"),
        Origin::Typed { text } | Origin::Copy { text } => {
            format!("your message to {}: \"{}\"", sent.to, preview(text))
        }
    };
    let which = match lost.len() {
        1 => at(first),
        n => format!("{n} messages, {} to {}", at(first), at(last)),
    };
    Some(format!(
        "not confirmed by the server before the connection ended \
         (may or may not have been delivered): {which}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(number: u64, to: &str) -> Sent {
        Sent {
            to: to.into(),
            origin: Origin::Line {
                source: "<stdin>".into(),
                number,
            },
        }
    }

    fn numbers(sent: &[Sent]) -> Vec<u64> {
        sent.iter()
            .map(|s| match s.origin {
                Origin::Line { number, .. } => number,
                Origin::Typed { .. } | Origin::Copy { .. } => 0,
            })
            .collect()
    }

    #[test]
    fn receipts_account_for_messages_in_order() {
        let ledger = Ledger::default();
        // Script lines 1..=5, line 3 being a comment (no message).
        for number in [1, 2, 4, 5, 6] {
            ledger.record(line(number, "bob"));
        }
        let mut accepted = Vec::new();
        ledger.accepted(1, |s| accepted.push(s.clone()));
        let refused = ledger.refused(3, |s| accepted.push(s.clone()));
        assert_eq!(numbers(&accepted), [1, 2]);
        assert_eq!(refused, Some(line(4, "bob")));
        ledger.accepted(5, |s| accepted.push(s.clone()));
        assert_eq!(numbers(&accepted), [1, 2, 5, 6]);
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn a_confused_servers_receipts_account_for_nothing_twice() {
        let ledger = Ledger::default();
        ledger.record(line(1, "bob"));
        let mut accepted = 0;
        // Refusing what was never sent, or a message already accounted for.
        assert_eq!(ledger.refused(7, |_| accepted += 1), None);
        assert_eq!(accepted, 1);
        assert_eq!(ledger.refused(1, |_| accepted += 1), None);
        assert_eq!(ledger.refused(0, |_| accepted += 1), None);
        ledger.accepted(u64::MAX, |_| accepted += 1);
        assert_eq!(accepted, 1);
    }

    #[test]
    fn a_lost_connection_hands_back_what_was_in_flight_and_numbering_restarts() {
        let ledger = Ledger::default();
        ledger.record(line(1, "bob"));
        ledger.record(line(2, "bob"));
        ledger.accepted(1, |_| {});
        assert_eq!(numbers(&ledger.abandon()), [2]);
        ledger.record(line(3, "bob"));
        assert_eq!(ledger.refused(1, |_| {}), Some(line(3, "bob")));
    }

    #[test]
    fn a_sender_waits_for_room_and_gives_up_on_a_silent_server() {
        let ledger = Ledger::default();
        ledger.record(line(1, "bob"));
        ledger.record(line(2, "bob"));
        assert!(!smol::block_on(
            ledger.wait_below(2, Duration::from_millis(20))
        ));
        ledger.accepted(1, |_| {});
        assert!(smol::block_on(
            ledger.wait_below(2, Duration::from_millis(20))
        ));
    }
}
