//! Reporting, in order, what became of messages whose fate was settled
//! later than their routing (kept in the store, or appended in Redis):
//! STORED for runs of consecutive ordinals kept for later (to a client
//! that asked for them), REFUSED (or, without receipts, an error frame)
//! for those that could not be kept, and before either an ACCEPTED for
//! the messages before it that nothing reported yet.

use crate::server::wire::Wire;
use crate::wire::texts::ErrorText;
use crate::wire::v1;

/// The frames of one report, being written.
pub(super) struct Receipts {
    frames: Vec<u8>,
    /// A run of consecutive ordinals stored, not written yet.
    run: Option<(u64, u64)>,
    /// The highest ordinal the client was told about.
    accounted: u64,
    receipts: bool,
    stored_receipts: bool,
}

impl Receipts {
    /// A report to a client told about ordinals up to `accounted`;
    /// `receipts`: it asked for receipts; `stored_receipts`: for STORED
    /// too.
    pub(super) fn new(accounted: u64, receipts: bool, stored_receipts: bool) -> Self {
        Receipts {
            frames: Vec::new(),
            run: None,
            accounted,
            receipts,
            stored_receipts,
        }
    }

    /// Message `ordinal` was kept for later.
    pub(super) fn stored(&mut self, ordinal: u64) {
        if !self.stored_receipts {
            return;
        }
        self.run = match self.run {
            Some((first, last)) if last + 1 == ordinal => Some((first, ordinal)),
            Some((first, last)) => {
                v1::encode_stored(first, last, &mut self.frames);
                self.accounted = last;
                Some((ordinal, ordinal))
            }
            None => Some((ordinal, ordinal)),
        };
        if ordinal - 1 > self.accounted && self.run == Some((ordinal, ordinal)) {
            v1::encode_accepted(ordinal - 1, &mut self.frames);
            self.accounted = ordinal - 1;
        }
    }

    /// Message `ordinal` could not be kept, because of `error`.
    pub(super) fn refused(&mut self, ordinal: u64, wire: Wire, error: &ErrorText) {
        self.end_run();
        if self.receipts {
            if ordinal - 1 > self.accounted {
                v1::encode_accepted(ordinal - 1, &mut self.frames);
            }
            v1::encode_refused(ordinal, wire.code_of(error), error.text(), &mut self.frames);
            self.accounted = ordinal;
        } else {
            self.frames.extend_from_slice(&wire.error_frame(error));
        }
    }

    fn end_run(&mut self) {
        if let Some((first, last)) = self.run.take() {
            v1::encode_stored(first, last, &mut self.frames);
            self.accounted = last;
        }
    }

    /// The ordinal the client was told about up to, and the frames that
    /// tell it.
    pub(super) fn finish(mut self) -> (u64, Vec<u8>) {
        self.end_run();
        (self.accounted, self.frames)
    }
}
