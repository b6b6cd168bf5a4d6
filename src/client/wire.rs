//! What the client speaks: pmchat v1 with its negotiated extensions (the
//! default), or the original Go programs' gob wire (`--wire gob`).
//!
//! Everything above this module (commands, output, batch, the editor)
//! works the same on both: messages are encoded here, and the server's
//! frames are decoded here into the v1 [`ServerFrame`]s the receiving loop
//! understands. The gob wire has no extensions: no `who`, no presence, no
//! passwords.

use crate::wire::framing::Decoder;
use crate::wire::gob::{self, GobDecoder, GobMessage};
use crate::wire::v1::{
    self, Decoded, FieldTooLong, FrameError, Limits, ServerDecoder, ServerFrame,
};

/// A wire the client can speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientWire {
    /// pmchat v1, with extensions when the server has them.
    #[default]
    V1,
    /// `encoding/gob` values of the original Go programs' `Message`.
    Gob,
}

impl ClientWire {
    /// Appends a message to `to`.
    pub fn encode_message(
        self,
        to: &[u8],
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FieldTooLong> {
        match self {
            ClientWire::V1 => v1::encode_message(to, content, out),
            ClientWire::Gob => {
                // Each message carries its type definition: the original
                // server reads every message with a fresh decoder.
                gob::encode_message(
                    &GobMessage {
                        to,
                        content,
                        ..GobMessage::default()
                    },
                    out,
                );
                Ok(())
            }
        }
    }

    /// A decoder for what a server of this wire sends.
    pub fn decoder(self) -> ServerWireDecoder {
        match self {
            ClientWire::V1 => ServerWireDecoder::V1(ServerDecoder),
            // A server may send names and content up to the protocol's
            // field sizes; our own limits are not its.
            ClientWire::Gob => ServerWireDecoder::Gob(GobDecoder::new(Limits {
                max_username: u8::MAX,
                max_message: u16::MAX,
            })),
        }
    }
}

/// Decodes a server's frames into v1 [`ServerFrame`]s, on either wire.
#[derive(Clone, Debug)]
pub enum ServerWireDecoder {
    V1(ServerDecoder),
    Gob(GobDecoder),
}

impl Decoder for ServerWireDecoder {
    type Frame<'a> = ServerFrame<'a>;
    type Error = FrameError;

    fn max_frame(&self) -> usize {
        match self {
            ServerWireDecoder::V1(v1) => v1.max_frame(),
            ServerWireDecoder::Gob(gob) => gob.max_frame(),
        }
    }

    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<ServerFrame<'a>>, FrameError> {
        let gob = match self {
            ServerWireDecoder::V1(v1) => return v1.decode(buf),
            ServerWireDecoder::Gob(gob) => gob,
        };
        // A definition waits in the buffer with the value that follows it
        // (the server sends both in one write; the client has no frame
        // timeout).
        Ok(match gob.next_message(buf)? {
            Decoded::Frame(message, used) if message.error => Decoded::Frame(
                ServerFrame::Error {
                    code: b"",
                    text: message.content,
                },
                used,
            ),
            Decoded::Frame(message, used) => Decoded::Frame(
                ServerFrame::Message {
                    from: message.from,
                    content: message.content,
                },
                used,
            ),
            Decoded::Incomplete { header_complete } => Decoded::Incomplete { header_complete },
        })
    }
}

/// What a gob client sends right after its handshake: an empty `Message`
/// (its type definition and a value with no fields). Any gob server reads
/// it as a message to the empty name and answers `'' is not connected`,
/// which confirms the login (a taken name is answered instead with
/// `Username is taken`); pmchat's server also learns from it at once that
/// this client speaks gob.
pub fn gob_announcement() -> Vec<u8> {
    let mut out = Vec::new();
    gob::encode_message(&GobMessage::default(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gob_deliveries_and_errors_become_v1_frames() {
        let mut stream = Vec::new();
        let delivery = GobMessage {
            to: b"bob",
            from: b"alice",
            content: b"hi",
            error: false,
        };
        gob::encode_message(&delivery, &mut stream);
        let first = stream.len();
        let error = GobMessage {
            content: b"'carol' is not connected\n",
            error: true,
            ..GobMessage::default()
        };
        gob::encode_message(&error, &mut stream);
        let mut decoder = ClientWire::Gob.decoder();
        assert_eq!(
            decoder.decode(&stream).unwrap(),
            Decoded::Frame(
                ServerFrame::Message {
                    from: b"alice",
                    content: b"hi"
                },
                first
            )
        );
        assert_eq!(
            decoder.decode(&stream[first..]).unwrap(),
            Decoded::Frame(
                ServerFrame::Error {
                    code: b"",
                    text: b"'carol' is not connected\n"
                },
                stream.len() - first
            )
        );
        // A definition alone waits for its value.
        assert!(matches!(
            decoder.decode(&stream[..gob::MESSAGE_TYPE_DEFINITION.len()]),
            Ok(Decoded::Incomplete { .. })
        ));
    }

    #[test]
    fn the_announcement_is_an_empty_message() {
        let announcement = gob_announcement();
        assert_eq!(
            &announcement[gob::MESSAGE_TYPE_DEFINITION.len()..],
            [0x03, 0xff, 0x82, 0x00]
        );
    }
}
