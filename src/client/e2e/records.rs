//! What a device publishes through the server's `keys` extension, and
//! how a claimer checks it: every record is signed with the device's
//! Ed25519 key (vodozemac's), and the identity binds that key and the
//! device's Curve25519 key to the user's name, so that the server (or
//! whoever writes its store or Redis) can withhold keys but not forge
//! them. Which Ed25519 key is the right one for a user is settled by
//! [`super::pins`] (trust on first use).
//!
//! Layouts, in the records' bytes:
//! - identity: `ed25519 (32) curve25519 (32) signature (64)`, signed over
//!   `pmchat-e2e/1 identity NAME \0 curve25519`;
//! - one-time or fallback key: `curve25519 (32) signature (64)`, signed
//!   over `pmchat-e2e/1 key curve25519`.

use vodozemac::olm::Account;
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};

const IDENTITY_LABEL: &[u8] = b"pmchat-e2e/1 identity ";
const KEY_LABEL: &[u8] = b"pmchat-e2e/1 key ";
const KEY_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;

/// Why a record was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("a key record has the wrong length")]
    Length,
    #[error("a key is not a valid public key")]
    Key,
    #[error("a key's signature does not hold")]
    Signature,
}

/// A device's checked identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Signs the device's keys; what a user's devices are pinned by.
    pub ed25519: Ed25519PublicKey,
    /// The device's Diffie-Hellman key; its base64 is the device id.
    pub curve25519: Curve25519PublicKey,
}

impl Identity {
    /// The id the device publishes under (its Curve25519 key, base64).
    pub fn device_id(&self) -> String {
        self.curve25519.to_base64()
    }

    /// Reads and checks `name`'s identity record.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Identity, RecordError> {
        if bytes.len() != 2 * KEY_LEN + SIGNATURE_LEN {
            return Err(RecordError::Length);
        }
        let (ed, rest) = bytes.split_at(KEY_LEN);
        let (curve, signature) = rest.split_at(KEY_LEN);
        let ed25519 = Ed25519PublicKey::from_slice(ed.try_into().map_err(|_| RecordError::Length)?)
            .map_err(|_| RecordError::Key)?;
        let curve25519 = Curve25519PublicKey::from_slice(curve).map_err(|_| RecordError::Key)?;
        let signature =
            Ed25519Signature::from_slice(signature).map_err(|_| RecordError::Signature)?;
        ed25519
            .verify(&identity_message(name, &curve25519), &signature)
            .map_err(|_| RecordError::Signature)?;
        Ok(Identity {
            ed25519,
            curve25519,
        })
    }

    /// Reads a one-time or fallback key record of this device, checking
    /// its signature.
    pub fn key(&self, bytes: &[u8]) -> Result<Curve25519PublicKey, RecordError> {
        if bytes.len() != KEY_LEN + SIGNATURE_LEN {
            return Err(RecordError::Length);
        }
        let (key, signature) = bytes.split_at(KEY_LEN);
        let key = Curve25519PublicKey::from_slice(key).map_err(|_| RecordError::Key)?;
        let signature =
            Ed25519Signature::from_slice(signature).map_err(|_| RecordError::Signature)?;
        self.ed25519
            .verify(&key_message(&key), &signature)
            .map_err(|_| RecordError::Signature)?;
        Ok(key)
    }
}

fn identity_message(name: &str, curve25519: &Curve25519PublicKey) -> Vec<u8> {
    let mut message = IDENTITY_LABEL.to_vec();
    message.extend_from_slice(name.as_bytes());
    message.push(0);
    message.extend_from_slice(curve25519.as_bytes());
    message
}

fn key_message(key: &Curve25519PublicKey) -> Vec<u8> {
    let mut message = KEY_LABEL.to_vec();
    message.extend_from_slice(key.as_bytes());
    message
}

/// `account`'s identity record for `name`.
pub fn identity_record(account: &Account, name: &str) -> Vec<u8> {
    let curve25519 = account.curve25519_key();
    let signature = account.sign(identity_message(name, &curve25519));
    let mut record = account.ed25519_key().as_bytes().to_vec();
    record.extend_from_slice(curve25519.as_bytes());
    record.extend_from_slice(&signature.to_bytes());
    record
}

/// A signed record of `key`, one of `account`'s one-time or fallback keys.
pub fn key_record(account: &Account, key: &Curve25519PublicKey) -> Vec<u8> {
    let signature = account.sign(key_message(key));
    let mut record = key.as_bytes().to_vec();
    record.extend_from_slice(&signature.to_bytes());
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_check_out_for_their_name_and_no_other() {
        let account = Account::new();
        let record = identity_record(&account, "alice");
        let identity = Identity::parse("alice", &record).unwrap();
        assert_eq!(identity.curve25519, account.curve25519_key());
        assert_eq!(identity.ed25519, account.ed25519_key());
        // Replayed under another name: the signature binds the name.
        assert_eq!(
            Identity::parse("mallory", &record),
            Err(RecordError::Signature)
        );
        // A bit flipped anywhere.
        for at in [0, 40, 100] {
            let mut bad = record.clone();
            bad[at] ^= 1;
            assert!(Identity::parse("alice", &bad).is_err(), "bit at {at}");
        }
        assert_eq!(
            Identity::parse("alice", &record[1..]),
            Err(RecordError::Length)
        );
    }

    #[test]
    fn a_key_is_accepted_only_with_its_device_signature() {
        let mut account = Account::new();
        account.generate_one_time_keys(1);
        let key = *account.one_time_keys().values().next().unwrap();
        let record = key_record(&account, &key);
        let identity = Identity::parse("alice", &identity_record(&account, "alice")).unwrap();
        assert_eq!(identity.key(&record), Ok(key));
        // Signed by another device: refused.
        let other = Account::new();
        let forged = key_record(&other, &key);
        assert_eq!(identity.key(&forged), Err(RecordError::Signature));
    }
}
