//! An encrypted message as it travels: the content of an ordinary
//! message (text, so that every server, store and wire carries it as it
//! carries any line), one per recipient device:
//!
//! `pmchat-e2e/1 TO FROM TYPE CIPHERTEXT [IDENTITY]`
//!
//! `TO` and `FROM` are device ids (Curve25519 keys, base64), `TYPE` is
//! Olm's message type (`0` a pre-key message that starts a session, `1` a
//! normal one) and `CIPHERTEXT` its bytes in base64. A pre-key message
//! also carries the sender device's signed identity record (base64, see
//! [`super::records`]), so that its recipient can tell, without asking
//! the server, that the device is the sender's. Anything that starts
//! with the prefix and does not parse is reported as a broken envelope,
//! never shown as text.

use vodozemac::olm::OlmMessage;
use vodozemac::{base64_decode, base64_encode, Curve25519PublicKey};

/// What every envelope starts with.
pub const PREFIX: &str = "pmchat-e2e/1 ";

/// One device's copy of an encrypted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub to: Curve25519PublicKey,
    pub from: Curve25519PublicKey,
    pub message: OlmMessage,
    /// The sender device's identity record (pre-key messages).
    pub identity: Option<Vec<u8>>,
}

/// Why a message that claims to be an envelope is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a broken encrypted message")]
pub struct BrokenEnvelope;

/// True if `content` claims to be an envelope.
pub fn is_envelope(content: &[u8]) -> bool {
    content.starts_with(PREFIX.as_bytes())
}

impl Envelope {
    /// The message content.
    pub fn to_text(&self) -> String {
        let (kind, bytes) = self.message.to_parts();
        let mut text = format!(
            "{PREFIX}{} {} {kind} {}",
            self.to.to_base64(),
            self.from.to_base64(),
            base64_encode(bytes)
        );
        if let Some(identity) = &self.identity {
            text.push(' ');
            text.push_str(&base64_encode(identity));
        }
        text
    }

    /// Reads a message content that [`is_envelope`].
    pub fn parse(content: &[u8]) -> Result<Envelope, BrokenEnvelope> {
        let text = std::str::from_utf8(content).map_err(|_| BrokenEnvelope)?;
        let rest = text.strip_prefix(PREFIX).ok_or(BrokenEnvelope)?;
        let fields: Vec<&str> = rest.split(' ').collect();
        let (to, from, kind, ciphertext, identity) = match fields.as_slice() {
            [to, from, kind, ciphertext] => (to, from, kind, ciphertext, None),
            [to, from, kind, ciphertext, identity] if *kind == "0" => {
                (to, from, kind, ciphertext, Some(identity))
            }
            _ => return Err(BrokenEnvelope),
        };
        let key = |b64: &str| Curve25519PublicKey::from_base64(b64).map_err(|_| BrokenEnvelope);
        let kind: usize = match *kind {
            "0" => 0,
            "1" => 1,
            _ => return Err(BrokenEnvelope),
        };
        let bytes = base64_decode(ciphertext).map_err(|_| BrokenEnvelope)?;
        let identity = match identity {
            Some(b64) => Some(base64_decode(b64).map_err(|_| BrokenEnvelope)?),
            None => None,
        };
        Ok(Envelope {
            to: key(to)?,
            from: key(from)?,
            message: OlmMessage::from_parts(kind, &bytes).map_err(|_| BrokenEnvelope)?,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vodozemac::olm::{Account, SessionConfig};

    #[test]
    fn an_envelope_round_trips_and_garbage_is_broken() {
        let alice = Account::new();
        let mut bob = Account::new();
        bob.generate_one_time_keys(1);
        let key = *bob.one_time_keys().values().next().unwrap();
        let mut session = alice
            .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), key)
            .unwrap();
        let envelope = Envelope {
            to: bob.curve25519_key(),
            from: alice.curve25519_key(),
            message: session.encrypt("hi").unwrap(),
            identity: Some(b"signed identity".to_vec()),
        };
        let text = envelope.to_text();
        assert!(is_envelope(text.as_bytes()));
        assert_eq!(Envelope::parse(text.as_bytes()), Ok(envelope));
        for broken in [
            "pmchat-e2e/1 ",
            "pmchat-e2e/1 a b 0 AAAA",
            "pmchat-e2e/1 x x 7 x",
            &text.replace(" 0 ", " 9 "),
            &format!("{text} extra"),
            &text[..text.len() - 5],
        ] {
            assert_eq!(
                Envelope::parse(broken.as_bytes()),
                Err(BrokenEnvelope),
                "{broken}"
            );
        }
        assert!(!is_envelope(b"hello"));
    }
}
