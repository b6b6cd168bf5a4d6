//! This device's side of Olm: its vodozemac `Account` (identity, one-time
//! and fallback keys) and its sessions with other devices, keyed by their
//! Curve25519 key. Encrypting to a device without a session needs the key
//! a CLAIM handed out for it; decrypting a pre-key message makes the
//! session. Every primitive is vodozemac's.

use std::collections::HashMap;

use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};
use vodozemac::Curve25519PublicKey;

use super::envelope::Envelope;
use super::records::{self, Identity};

/// A session's pre-key messages carry this device's identity record in
/// the first of every this many (see [`Device::introduce`]).
const INTRODUCE_EVERY: u32 = 32;

/// Sessions kept per other device: a new one (after the other side lost
/// its state, or both started one at once) does not lose the last few.
const SESSIONS_PER_DEVICE: usize = 4;

/// Why a message could not be encrypted or decrypted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("no session with that device, and no key to start one")]
    NoKey,
    #[error("the device's key cannot start a session")]
    BadKey,
    #[error("this message is for another device")]
    NotForUs,
    #[error("the message does not decrypt (tampered with, or from a session this device lost)")]
    Undecryptable,
}

/// This device's account and sessions.
pub struct Device {
    account: Account,
    /// By the other device's Curve25519 key (its base64 in the vault).
    sessions: HashMap<[u8; 32], Vec<Session>>,
    /// Per device, pre-key messages sealed in its newest session since
    /// this run began (see [`Device::introduce`]).
    introduced: HashMap<[u8; 32], u32>,
}

impl Default for Device {
    fn default() -> Self {
        Device::new()
    }
}

impl Device {
    /// A new device: fresh identity keys.
    pub fn new() -> Device {
        Device {
            account: Account::new(),
            sessions: HashMap::new(),
            introduced: HashMap::new(),
        }
    }

    /// This device's identity.
    pub fn identity(&self) -> Identity {
        Identity {
            ed25519: self.account.ed25519_key(),
            curve25519: self.account.curve25519_key(),
        }
    }

    /// Its identity record for `name`, to publish.
    pub fn identity_record(&self, name: &str) -> Vec<u8> {
        records::identity_record(&self.account, name)
    }

    /// `count` fresh one-time keys, signed, to publish (marked published
    /// here: a key the server never got is simply never used).
    pub fn one_time_records(&mut self, count: usize) -> Vec<Vec<u8>> {
        self.account.generate_one_time_keys(count);
        let records = self
            .account
            .one_time_keys()
            .values()
            .map(|key| records::key_record(&self.account, key))
            .collect();
        self.account.mark_keys_as_published();
        records
    }

    /// A fresh fallback key, signed, to publish.
    pub fn fallback_record(&mut self) -> Vec<u8> {
        self.account.generate_fallback_key();
        let key = self.account.fallback_key().values().next().copied();
        self.account.mark_keys_as_published();
        key.map(|key| records::key_record(&self.account, &key))
            .unwrap_or_default()
    }

    /// True if a session with `their` device exists.
    pub fn has_session(&self, their: &Curve25519PublicKey) -> bool {
        self.sessions
            .get(their.as_bytes())
            .is_some_and(|list| !list.is_empty())
    }

    /// Encrypts `plaintext` for `their` device, in its newest session, or
    /// in a new one from `claimed`, the key a CLAIM handed out for it.
    pub fn encrypt(
        &mut self,
        their: &Identity,
        claimed: Option<Curve25519PublicKey>,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        let id = their.curve25519.to_bytes();
        if !self.has_session(&their.curve25519) {
            let key = claimed.ok_or(CryptoError::NoKey)?;
            let session = self
                .account
                .create_outbound_session(SessionConfig::version_1(), their.curve25519, key)
                .map_err(|_| CryptoError::BadKey)?;
            self.sessions.entry(id).or_default().push(session);
            self.introduced.remove(&id);
        }
        let session = self
            .sessions
            .get_mut(&id)
            .and_then(|list| list.last_mut())
            .ok_or(CryptoError::NoKey)?;
        let message = session
            .encrypt(plaintext)
            .map_err(|_| CryptoError::BadKey)?;
        Ok(Envelope {
            to: their.curve25519,
            from: self.account.curve25519_key(),
            message,
            identity: None,
        })
    }

    /// Called for each pre-key message sealed for `their` device: true if
    /// it should carry this device's identity record, which its recipient
    /// pins the device from and then knows it without. That is the first
    /// in its newest session this run (or since
    /// [`Device::forget_introductions`]), then one in every
    /// [`INTRODUCE_EVERY`], so that a reader that started after the first
    /// (a device reading the log from a later point) can still tell whose
    /// device this is. Pre-key messages used to carry it every time until
    /// the other side answers, which a one-way stream never does; the
    /// record is a tenth of a 1 KiB message.
    pub fn introduce(&mut self, their: &Curve25519PublicKey) -> bool {
        let sealed = self.introduced.entry(their.to_bytes()).or_default();
        let introduce = *sealed % INTRODUCE_EVERY == 0;
        *sealed = sealed.wrapping_add(1);
        introduce
    }

    /// Every device is introduced again (a message was refused: the one
    /// that carried the record may have been it).
    pub fn forget_introductions(&mut self) {
        self.introduced.clear();
    }

    /// Decrypts an envelope for this device: in a session with its
    /// sender's device, or (a pre-key message) in a new one.
    pub fn decrypt(&mut self, envelope: &Envelope) -> Result<Vec<u8>, CryptoError> {
        if envelope.to != self.account.curve25519_key() {
            return Err(CryptoError::NotForUs);
        }
        let id = envelope.from.to_bytes();
        if let Some(list) = self.sessions.get_mut(&id) {
            // Newest first; the one that works moves to the end (a
            // session is a few KiB: not moved when it is there already,
            // as it is for every message of a conversation but its first).
            for at in (0..list.len()).rev() {
                if let Ok(plaintext) = list[at].decrypt(&envelope.message) {
                    if at + 1 != list.len() {
                        let session = list.remove(at);
                        list.push(session);
                    }
                    return Ok(plaintext);
                }
            }
        }
        let OlmMessage::PreKey(pre_key) = &envelope.message else {
            return Err(CryptoError::Undecryptable);
        };
        let created = self
            .account
            .create_inbound_session(SessionConfig::version_1(), envelope.from, pre_key)
            .map_err(|_| CryptoError::Undecryptable)?;
        let list = self.sessions.entry(id).or_default();
        list.push(created.session);
        if list.len() > SESSIONS_PER_DEVICE {
            list.remove(0);
        }
        Ok(created.plaintext)
    }

    /// The account and sessions, each pickled and encrypted with `key`
    /// (vodozemac's pickle encryption): `(account, [(device, session)])`.
    pub fn pickle(&self, key: &[u8; 32]) -> (String, Vec<(String, String)>) {
        let account = self.account.pickle().encrypt(key);
        let sessions = self
            .sessions
            .iter()
            .flat_map(|(device, list)| {
                let device = Curve25519PublicKey::from_bytes(*device).to_base64();
                list.iter()
                    .map(move |session| (device.clone(), session.pickle().encrypt(key)))
            })
            .collect();
        (account, sessions)
    }

    /// What [`Device::pickle`] wrote; `None` if `key` is not the one it
    /// was written with (a wrong password) or the text is damaged.
    pub fn unpickle(
        key: &[u8; 32],
        account: &str,
        sessions: &[(String, String)],
    ) -> Option<Device> {
        let account = Account::from_pickle(AccountPickle::from_encrypted(account, key).ok()?);
        let mut device = Device {
            account,
            sessions: HashMap::new(),
            introduced: HashMap::new(),
        };
        for (id, pickle) in sessions {
            let id = Curve25519PublicKey::from_base64(id).ok()?.to_bytes();
            let session = Session::from_pickle(SessionPickle::from_encrypted(pickle, key).ok()?);
            device.sessions.entry(id).or_default().push(session);
        }
        Some(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_introduces_its_device_first_then_every_so_often_and_after_a_refusal() {
        let mut device = Device::new();
        let them = Device::new().identity().curve25519;
        let introduced: Vec<bool> = (0..70).map(|_| device.introduce(&them)).collect();
        let at: Vec<usize> = (0..70).filter(|&i| introduced[i]).collect();
        assert_eq!(at, [0, 32, 64]);
        device.forget_introductions();
        assert!(device.introduce(&them));
        assert!(!device.introduce(&them));
    }

    /// `device`'s first one-time key, as a claim would hand it out.
    fn claimed(device: &mut Device, name: &str) -> (Identity, Curve25519PublicKey) {
        let identity = Identity::parse(name, &device.identity_record(name)).unwrap();
        let record = device.one_time_records(1).remove(0);
        (identity, identity.key(&record).unwrap())
    }

    #[test]
    fn two_devices_talk_both_ways_and_a_tampered_message_fails() {
        let mut alice = Device::new();
        let mut bob = Device::new();
        let (bob_identity, key) = claimed(&mut bob, "bob");
        let first = alice
            .encrypt(&bob_identity, Some(key), b"hello bob")
            .unwrap();
        assert!(matches!(first.message, OlmMessage::PreKey(_)));
        // Through its text form, as the server carries it.
        let first = Envelope::parse(first.to_text().as_bytes()).unwrap();
        assert_eq!(bob.decrypt(&first).unwrap(), b"hello bob");
        let alice_identity = alice.identity();
        let reply = bob.encrypt(&alice_identity, None, b"hi alice").unwrap();
        assert_eq!(alice.decrypt(&reply).unwrap(), b"hi alice");
        let second = alice.encrypt(&bob_identity, None, b"again").unwrap();
        assert!(matches!(second.message, OlmMessage::Normal(_)));
        // A flipped bit in the ciphertext: refused, never shown.
        let text = second.to_text();
        let mut bytes = text.into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        if let Ok(tampered) = Envelope::parse(&bytes) {
            assert_eq!(bob.decrypt(&tampered), Err(CryptoError::Undecryptable));
        }
        assert_eq!(bob.decrypt(&second).unwrap(), b"again");
        // A copy for another device.
        let mut carol = Device::new();
        assert_eq!(carol.decrypt(&second), Err(CryptoError::NotForUs));
    }

    #[test]
    fn without_a_session_or_a_key_nothing_is_encrypted() {
        let mut alice = Device::new();
        let bob = Device::new();
        assert_eq!(
            alice.encrypt(&bob.identity(), None, b"x").map(drop),
            Err(CryptoError::NoKey)
        );
    }

    #[test]
    fn a_pickled_device_comes_back_only_with_its_key() {
        let mut alice = Device::new();
        let mut bob = Device::new();
        let (bob_identity, key) = claimed(&mut bob, "bob");
        let first = alice.encrypt(&bob_identity, Some(key), b"one").unwrap();
        bob.decrypt(&first).unwrap();
        let (account, sessions) = bob.pickle(&[7; 32]);
        assert!(Device::unpickle(&[8; 32], &account, &sessions).is_none());
        let mut bob = Device::unpickle(&[7; 32], &account, &sessions).unwrap();
        assert_eq!(bob.identity(), bob_identity);
        let second = alice.encrypt(&bob_identity, None, b"two").unwrap();
        assert_eq!(bob.decrypt(&second).unwrap(), b"two");
    }
}
