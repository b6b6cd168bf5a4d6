//! What a session's client speaks after the handshake: pmchat v1 (with its
//! negotiated extensions) or the original Go programs' gob stream.
//!
//! The wire decides how this session's input is decoded (into the
//! [`ClientFrame`]s the session's reader acts on, by [`InputDecoder`]) and
//! how every
//! frame *to* this session is encoded ([`Wire`]). Senders encode into a
//! recipient's queue with the recipient's wire, so two sessions on
//! different wires talk to each other.
//!
//! The two are told apart by the first byte after the handshake: a v1
//! frame always starts with `0x00` (the high byte of its opcode), a gob
//! stream never does (it starts with a non-zero length). Until that byte
//! arrives a session is spoken to in `--default-wire` (v1 unless told
//! otherwise, so a v1 peer that only listens is served exactly as before);
//! no byte sequence serves both, so a silent original gob client needs
//! `--default-wire gob`.
//!
//! **Adding a wire**: add a variant to [`Wire`] with its encodings, a
//! state to [`InputDecoder`] that yields [`ClientFrame`]s, and a way to
//! recognise it from the first bytes. A wire without the extensions
//! answers `false` to [`Wire::extensions`] and is never sent WELCOME,
//! ONLINE or PRESENCE.

use crate::wire::framing::Decoder;
use crate::wire::gob::{self, GobDecoder, GobError, GobMessage};
use crate::wire::texts::{ErrorText, SEALED_NOTICE};
use crate::wire::v1::{self, ClientDecoder, ClientFrame, Decoded, FrameError, Limits};

/// The wire one session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// pmchat v1, with the negotiated extensions.
    V1,
    /// pmchat v1 whose client negotiated `codes`: errors and refusals
    /// carry their code.
    Coded,
    /// pmchat v1 with `codes` and `sealed`: sealed content (end-to-end
    /// encrypted envelopes) comes through as it is.
    Sealed,
    /// `encoding/gob` values of the original programs' `Message` struct.
    Gob,
}

impl Wire {
    /// The wire of a v1 session whose HELLO asked for `codes` and
    /// `sealed` as said (`sealed` only counts with `codes`).
    pub(crate) fn of_hello(codes: bool, sealed: bool) -> Wire {
        match (codes, sealed) {
            (true, true) => Wire::Sealed,
            (true, false) => Wire::Coded,
            (false, _) => Wire::V1,
        }
    }

    /// What this session is shown of `content`: sealed content only if
    /// it asked for it, else a notice in its place (a v1 or gob peer never
    /// sees ciphertext as text).
    pub(crate) fn shown(self, content: &[u8]) -> &[u8] {
        if self != Wire::Sealed && v1::is_sealed(content) {
            return SEALED_NOTICE.as_bytes();
        }
        content
    }

    /// Encoded size of a message from `from` to this session's user `to`.
    pub(crate) fn message_len(self, to: &[u8], from: &[u8], content: &[u8]) -> usize {
        let content = self.shown(content);
        match self {
            Wire::V1 | Wire::Coded | Wire::Sealed => v1::message_frame_len(from, content),
            Wire::Gob => gob::message_len(&delivery(to, from, content)),
        }
    }

    /// Appends a message from `from` to this session's user `to`. Both
    /// names fit: a username is at most 255 bytes and content came from a
    /// 16-bit length field.
    pub(crate) fn encode_message(self, to: &[u8], from: &[u8], content: &[u8], out: &mut Vec<u8>) {
        let content = self.shown(content);
        match self {
            Wire::V1 | Wire::Coded | Wire::Sealed => {
                let _ = v1::encode_message(from, content, out);
            }
            Wire::Gob => gob::encode_message(&delivery(to, from, content), out),
        }
    }

    /// An encoded error frame with `error`'s text: on gob,
    /// `Message{Content: text, Error: true}`, as the original server
    /// sends; with codes, the code beside it.
    pub(crate) fn error_frame(self, error: &ErrorText) -> Vec<u8> {
        let text = error.text();
        let mut frame = Vec::with_capacity(v1::MESSAGE_HEADER_LEN + v1::MAX_WORD + text.len());
        match self {
            Wire::V1 => v1::encode_error(text, &mut frame),
            Wire::Coded | Wire::Sealed => {
                v1::encode_coded_error(error.code().as_str(), text, &mut frame)
            }
            Wire::Gob => gob::encode_error(text, &mut frame),
        }
        frame
    }

    /// The code a refusal carries to this session, if it negotiated codes.
    pub(crate) fn code_of(self, error: &ErrorText) -> Option<&'static str> {
        matches!(self, Wire::Coded | Wire::Sealed).then(|| error.code().as_str())
    }

    /// True if the client may negotiate the extensions (HELLO).
    pub(crate) fn extensions(self) -> bool {
        match self {
            Wire::V1 | Wire::Coded | Wire::Sealed => true,
            Wire::Gob => false,
        }
    }

    /// The wire whose streams start with `first`.
    pub(crate) fn starting_with(first: u8) -> Wire {
        if first == 0 {
            Wire::V1
        } else {
            Wire::Gob
        }
    }
}

fn delivery<'a>(to: &'a [u8], from: &'a [u8], content: &'a [u8]) -> GobMessage<'a> {
    GobMessage {
        to,
        from,
        content,
        error: false,
    }
}

/// The wire to refuse a login in, from the client's first bytes after its
/// handshake (`input`): gob, v1 with codes when they are a HELLO asking
/// for them, plain v1; with no bytes, `default` (`--default-wire`).
pub(crate) fn refusal_wire(input: &[u8], limits: &Limits, default: Wire) -> Wire {
    let Some(&first) = input.first() else {
        return default;
    };
    match v1::decode_client_frame(input, limits) {
        Ok(Decoded::Frame(ClientFrame::Hello { features }, _))
            if v1::lists_word(features, v1::FEATURE_CODES) =>
        {
            Wire::Coded
        }
        _ => Wire::starting_with(first),
    }
}

/// True if a session whose first bytes after the handshake are `input`
/// speaks gob: a v1 frame could not start with them.
pub(crate) fn starts_gob(input: &[u8]) -> bool {
    input
        .first()
        .is_some_and(|&first| Wire::starting_with(first) == Wire::Gob)
}

/// Decodes a client's input after the handshake into the
/// [`ClientFrame`]s the session acts on: v1 until the session's first
/// bytes say gob (see [`starts_gob`]), then gob, whose `Message` values are
/// the v1 messages they amount to. One type for both, so that the session's
/// reading loop, and the routing inlined into it, is compiled once, and
/// the v1 path is the v1 decoder itself.
#[derive(Clone, Debug)]
pub(crate) enum InputDecoder {
    V1(ClientDecoder),
    /// Boxed: every connection's state holds an `InputDecoder`, and v1
    /// ones must not carry room for gob's.
    Gob(Box<GobDecoder>),
}

impl InputDecoder {
    /// The decoder a session starts with.
    pub(crate) fn v1(limits: Limits) -> Self {
        InputDecoder::V1(ClientDecoder { limits })
    }

    /// The decoder for a session that speaks gob.
    pub(crate) fn gob(limits: Limits) -> Self {
        InputDecoder::Gob(Box::new(GobDecoder::new(limits)))
    }

    /// The next gob `Message` as a v1 message. The claimed sender is
    /// dropped: the server knows who sent it. Out of line: the v1 path
    /// stays small.
    #[inline(never)]
    fn decode_gob<'a>(
        gob: &mut GobDecoder,
        buf: &'a [u8],
    ) -> Result<Decoded<ClientFrame<'a>>, FrameError> {
        match gob.next_message(buf)? {
            Decoded::Frame(message, _) if message.error => {
                Err(GobError::BadValue("a client may not send Error: true").into())
            }
            Decoded::Frame(message, used) => {
                let frame = ClientFrame::Message {
                    to: message.to,
                    content: message.content,
                };
                Ok(Decoded::Frame(frame, used))
            }
            Decoded::Incomplete { header_complete } => Ok(Decoded::Incomplete { header_complete }),
        }
    }
}

impl Decoder for InputDecoder {
    type Frame<'a> = ClientFrame<'a>;
    type Error = FrameError;

    fn max_frame(&self) -> usize {
        match self {
            InputDecoder::V1(v1) => v1.max_frame(),
            // A definition and the value sent with it.
            InputDecoder::Gob(gob) => 2 * gob.max_frame(),
        }
    }

    #[inline]
    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<ClientFrame<'a>>, FrameError> {
        match self {
            InputDecoder::V1(v1) => v1.decode(buf),
            InputDecoder::Gob(gob) => Self::decode_gob(gob, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::texts::Code;

    #[test]
    fn the_first_byte_tells_gob_from_v1() {
        let mut frame = Vec::new();
        v1::encode_message(b"bob", b"hi", &mut frame).unwrap();
        assert!(!starts_gob(&frame));
        let mut stream = Vec::new();
        gob::encode_message(&delivery(b"bob", b"mallory", b"hi"), &mut stream);
        assert!(starts_gob(&stream));
        assert!(!starts_gob(b""));
    }

    #[test]
    fn a_gob_message_is_the_v1_message_it_amounts_to() {
        let mut input = InputDecoder::gob(Limits::default());
        let mut stream = Vec::new();
        gob::encode_message(&delivery(b"bob", b"mallory", b"hi"), &mut stream);
        // The claimed sender is gone; the definition is read on the way.
        assert_eq!(
            input.decode(&stream).unwrap(),
            Decoded::Frame(
                ClientFrame::Message {
                    to: b"bob",
                    content: b"hi"
                },
                stream.len()
            )
        );
        // A definition alone waits for its value.
        assert!(matches!(
            input.decode(&stream[..gob::MESSAGE_TYPE_DEFINITION.len()]),
            Ok(Decoded::Incomplete { .. })
        ));
    }

    #[test]
    fn a_client_claiming_to_send_an_error_breaks_the_wire() {
        let mut input = InputDecoder::gob(Limits::default());
        let mut stream = Vec::new();
        gob::encode_error("fake\n", &mut stream);
        assert!(matches!(input.decode(&stream), Err(FrameError::Gob(_))));
    }

    #[test]
    fn gob_errors_are_what_the_original_server_sends() {
        let frame = Wire::Gob.error_frame(&ErrorText::of(Code::NameTaken));
        assert_eq!(&frame[..60], gob::MESSAGE_TYPE_DEFINITION);
        assert_eq!(
            &frame[60..],
            b"\x19\xff\x82\x03\x12Username is taken\n\x01\x01\x00"
        );
        let len = Wire::Gob.message_len(b"bob", b"alice", b"hi bob");
        let mut out = Vec::new();
        Wire::Gob.encode_message(b"bob", b"alice", b"hi bob", &mut out);
        assert_eq!(out.len(), len);
    }
}
