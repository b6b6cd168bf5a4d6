//! What a session's client speaks after the handshake: v1 today.
//!
//! The wire decides how this session's input is decoded (into the
//! [`ClientFrame`](crate::protocol::ClientFrame)s the router understands)
//! and how every frame *to* this session is encoded. Senders encode into a
//! recipient's queue with the recipient's wire, so two sessions on
//! different wires can talk.
//!
//! **Adding a wire** (the Go programs' gob stream, say): add a variant, a
//! [`crate::framing::Decoder`] whose frames are
//! [`ClientFrame`](crate::protocol::ClientFrame)s, the encodings below, and
//! a way to recognise it per connection in `session` (v1 frames always
//! start with `0x00`). A wire without the extensions answers `false` to
//! [`Wire::extensions`] and is never sent WELCOME, ONLINE or PRESENCE.

use crate::protocol;

/// The wire one session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// pmchat v1, with the negotiated extensions.
    V1,
}

impl Wire {
    /// Encoded size of a message to this session.
    pub(crate) fn message_len(self, from: &[u8], content: &[u8]) -> usize {
        match self {
            Wire::V1 => protocol::message_frame_len(from, content),
        }
    }

    /// Appends a message from `from` to `out`. Both fields fit: a username
    /// is at most 255 bytes and content came from a 16-bit length field.
    pub(crate) fn encode_message(self, from: &[u8], content: &[u8], out: &mut Vec<u8>) {
        match self {
            Wire::V1 => {
                let _ = protocol::encode_message(from, content, out);
            }
        }
    }

    /// An encoded error frame with `text` (which ends with `\n`).
    pub(crate) fn error_frame(self, text: &str) -> Vec<u8> {
        match self {
            Wire::V1 => {
                let mut frame = Vec::with_capacity(protocol::ERROR_HEADER_LEN + text.len());
                protocol::encode_error(text, &mut frame);
                frame
            }
        }
    }

    /// True if the client may negotiate the extensions (HELLO).
    pub(crate) fn extensions(self) -> bool {
        match self {
            Wire::V1 => true,
        }
    }
}
