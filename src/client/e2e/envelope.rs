//! An encrypted message as it travels, one per recipient device, in one
//! of two forms: sealed (binary) to a server that granted the `sealed`
//! extension, text to one that did not (and as older clients wrote it).
//!
//! Sealed (see docs/protocol.md): `ff 'p' 'e' 01`, a flags byte
//! ([`PRE_KEY`], [`WITH_IDENTITY`]), the recipient device's Curve25519 key
//! (32 bytes), the sender device's (32 bytes; not in a pre-key message,
//! which carries it itself), with [`WITH_IDENTITY`] the identity record's
//! length (`u16`) and bytes, then Olm's message bytes.
//!
//! Text: `pmchat-e2e/1 TO FROM TYPE CIPHERTEXT [IDENTITY]`, the device
//! ids and the ciphertext in base64, `TYPE` Olm's message type (`0` a
//! pre-key message that starts a session, `1` a normal one).
//!
//! A pre-key message may carry the sender device's signed identity record
//! (see [`super::records`]), so that its recipient can tell, without
//! asking the server, that the device is the sender's; the sender adds it
//! until its recipient can be expected to know the device (see
//! [`super::device::Device::introduce`]). Anything that claims to be an
//! envelope and does not parse is reported as a broken envelope, never
//! shown as text.

use vodozemac::olm::OlmMessage;
use vodozemac::{base64_decode, base64_encode, Curve25519PublicKey};

use crate::wire::v1;

/// What every text envelope starts with.
pub const PREFIX: &str = "pmchat-e2e/1 ";
/// What every sealed envelope starts with.
pub const SEALED_PREFIX: [u8; 4] = [v1::SEALED_MARK, b'p', b'e', 1];
/// Flag: a pre-key message.
const PRE_KEY: u8 = 1;
/// Flag: the sender device's identity record follows the keys.
const WITH_IDENTITY: u8 = 2;
/// Bytes of a Curve25519 key.
const KEY_LEN: usize = 32;

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

/// True if `content` claims to be an envelope (sealed content always
/// does).
pub fn is_envelope(content: &[u8]) -> bool {
    v1::is_sealed(content) || content.starts_with(PREFIX.as_bytes())
}

impl Envelope {
    /// The message content: sealed if the server carries sealed content,
    /// else text.
    pub fn encode(&self, sealed: bool) -> Vec<u8> {
        match sealed {
            true => self.to_sealed(),
            false => self.to_text().into_bytes(),
        }
    }

    /// The sealed form.
    pub fn to_sealed(&self) -> Vec<u8> {
        let (kind, bytes) = self.message.to_parts();
        let identity = self.identity.as_deref().unwrap_or_default();
        let mut flags = 0;
        if kind == 0 {
            flags |= PRE_KEY;
        }
        // A record longer than a length field (never one of ours) is left
        // out rather than cut.
        let identity_len = u16::try_from(identity.len()).ok().filter(|&n| n > 0);
        if identity_len.is_some() {
            flags |= WITH_IDENTITY;
        }
        let mut out = Vec::with_capacity(
            SEALED_PREFIX.len() + 1 + 2 * KEY_LEN + 2 + identity.len() + bytes.len(),
        );
        out.extend_from_slice(&SEALED_PREFIX);
        out.push(flags);
        out.extend_from_slice(self.to.as_bytes());
        if kind != 0 {
            out.extend_from_slice(self.from.as_bytes());
        }
        if let Some(len) = identity_len {
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(identity);
        }
        out.extend_from_slice(&bytes);
        out
    }

    /// The text form.
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

    /// Reads a message content that [`is_envelope`], in either form.
    pub fn parse(content: &[u8]) -> Result<Envelope, BrokenEnvelope> {
        if v1::is_sealed(content) {
            return Envelope::parse_sealed(content);
        }
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

impl Envelope {
    fn parse_sealed(content: &[u8]) -> Result<Envelope, BrokenEnvelope> {
        let rest = content
            .strip_prefix(&SEALED_PREFIX[..])
            .ok_or(BrokenEnvelope)?;
        let (&flags, rest) = rest.split_first().ok_or(BrokenEnvelope)?;
        if flags & !(PRE_KEY | WITH_IDENTITY) != 0 || flags == WITH_IDENTITY {
            return Err(BrokenEnvelope);
        }
        let key = |bytes: &[u8]| Curve25519PublicKey::from_slice(bytes).map_err(|_| BrokenEnvelope);
        let pre_key = flags & PRE_KEY != 0;
        let (to, rest) = rest.split_at_checked(KEY_LEN).ok_or(BrokenEnvelope)?;
        let (from, mut rest) = match pre_key {
            true => (None, rest),
            false => {
                let (from, rest) = rest.split_at_checked(KEY_LEN).ok_or(BrokenEnvelope)?;
                (Some(key(from)?), rest)
            }
        };
        let mut identity = None;
        if flags & WITH_IDENTITY != 0 {
            let (len, after) = rest.split_at_checked(2).ok_or(BrokenEnvelope)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let (record, after) = after.split_at_checked(len).ok_or(BrokenEnvelope)?;
            identity = Some(record.to_vec());
            rest = after;
        }
        let message =
            OlmMessage::from_parts(usize::from(!pre_key), rest).map_err(|_| BrokenEnvelope)?;
        let from = match (&message, from) {
            (OlmMessage::PreKey(message), None) => message.identity_key(),
            (OlmMessage::Normal(_), Some(from)) => from,
            _ => return Err(BrokenEnvelope),
        };
        Ok(Envelope {
            to: key(to)?,
            from,
            message,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vodozemac::olm::{Account, Session, SessionConfig};

    /// alice's and bob's accounts and alice's session with bob, as a
    /// claimed one-time key starts it.
    fn started() -> (Account, Account, Session) {
        let alice = Account::new();
        let mut bob = Account::new();
        bob.generate_one_time_keys(1);
        let key = *bob.one_time_keys().values().next().unwrap();
        let session = alice
            .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), key)
            .unwrap();
        (alice, bob, session)
    }

    #[test]
    fn an_envelope_round_trips_and_garbage_is_broken() {
        let (alice, bob, mut session) = started();
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

    #[test]
    fn a_sealed_envelope_round_trips_with_and_without_identity_and_garbage_is_broken() {
        let (alice, mut bob, mut session) = started();
        let mut envelope = Envelope {
            to: bob.curve25519_key(),
            from: alice.curve25519_key(),
            message: session.encrypt("hi").unwrap(),
            identity: Some(b"signed identity".to_vec()),
        };
        for _ in 0..2 {
            let sealed = envelope.encode(true);
            assert!(v1::is_sealed(&sealed) && is_envelope(&sealed));
            assert_eq!(Envelope::parse(&sealed), Ok(envelope.clone()));
            // No longer than the text form's ciphertext alone.
            assert!(sealed.len() < envelope.to_text().len() * 3 / 4);
            envelope.identity = None;
        }
        let sealed = envelope.to_sealed();
        let mut unknown_flag = sealed.clone();
        unknown_flag[4] |= 4;
        let mut identity_without_pre_key = sealed.clone();
        identity_without_pre_key[4] = WITH_IDENTITY;
        let mut claims_identity = sealed.clone();
        claims_identity[4] |= WITH_IDENTITY;
        claims_identity.truncate(4 + 1 + 32 + 1);
        for broken in [
            &[0xff][..],
            &sealed[..4],
            &sealed[..40],
            &sealed[..37],
            &unknown_flag,
            &identity_without_pre_key,
            &claims_identity,
            b"\xff other",
        ] {
            assert!(is_envelope(broken));
            assert_eq!(Envelope::parse(broken), Err(BrokenEnvelope), "{broken:?}");
        }

        // Once bob answers, a normal message, which names its sender.
        let OlmMessage::PreKey(pre_key) = &envelope.message else {
            panic!("a one-way stream sends pre-key messages");
        };
        let mut created = bob
            .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), pre_key)
            .unwrap();
        let reply = created.session.encrypt("hello").unwrap();
        session.decrypt(&reply).unwrap();
        let normal = Envelope {
            to: bob.curve25519_key(),
            from: alice.curve25519_key(),
            message: session.encrypt("again").unwrap(),
            identity: None,
        };
        assert!(matches!(normal.message, OlmMessage::Normal(_)));
        let sealed = normal.to_sealed();
        assert_eq!(Envelope::parse(&sealed), Ok(normal));
        assert_eq!(Envelope::parse(&sealed[..4 + 1 + 40]), Err(BrokenEnvelope));
    }
}
