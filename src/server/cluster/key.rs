//! The cluster key (`--cluster-key-file FILE`): a secret shared by the
//! nodes, with which each signs what it puts in Redis for the others
//! (HMAC-SHA-256, from `ring`): every inter-node batch, every presence
//! event, the value of every name it holds and its entries in its set of
//! names, and bans. A node with the key acts only on what carries a valid
//! signature, so whoever can write to Redis without the key cannot forge
//! messages, errors, kicks, acknowledgements or users, nor squat or ban a
//! name. Batches also carry their destination and a number that must
//! grow, so one captured in Redis cannot be delivered again or elsewhere.
//!
//! What the key does not hide: who talks to whom and when, message sizes,
//! and, since batches are signed, not encrypted, their content. Anyone who
//! can write to Redis can still delete keys (and so log users out or deny
//! service) and replay an old presence event (repaired within the
//! directory's reconciliation bound).

use std::path::Path;

use ring::hmac;
use tracing::warn;

/// Bytes of a signature on a batch.
pub(super) const TAG_LEN: usize = 32;
/// The shortest key accepted.
const MIN_KEY: usize = 32;

/// The shared secret, ready to sign and verify.
pub(crate) struct ClusterKey(hmac::Key);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// Reads the key from `path`: its bytes, without trailing whitespace,
    /// at least 32 of them. Warns if other users can read the file.
    pub(crate) fn load(path: &Path) -> Result<ClusterKey, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read --cluster-key-file {}: {e}", path.display()))?;
        let secret = bytes.trim_ascii_end();
        if secret.len() < MIN_KEY {
            return Err(format!(
                "--cluster-key-file {}: {} bytes; a cluster key needs at least {MIN_KEY} \
                 (head -c 48 /dev/urandom | base64 > FILE makes one)",
                path.display(),
                secret.len()
            ));
        }
        if let Some(mode) = crate::secret::readable_by_others(path) {
            warn!(
                "--cluster-key-file {} can be read by other users (mode {mode:o}): \
                 chmod 600 it",
                path.display()
            );
        }
        Ok(ClusterKey::new(secret))
    }

    /// A key from its secret bytes.
    pub(crate) fn new(secret: &[u8]) -> ClusterKey {
        ClusterKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The signature of `data`.
    pub(crate) fn sign(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(hmac::sign(&self.0, data).as_ref());
        tag
    }

    /// True when `tag` is `data`'s signature (in constant time).
    pub(super) fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, data, tag).is_ok()
    }

    /// A secret for another purpose, derived from the cluster key.
    pub(crate) fn derive(&self, purpose: &[u8]) -> [u8; TAG_LEN] {
        self.sign(purpose)
    }

    /// The signature of `data`, in hex: for text values in Redis.
    pub(super) fn sign_hex(&self, data: &[u8]) -> String {
        crate::hex::encode(&self.sign(data))
    }

    /// True when `hex` is the hex signature of `data`.
    pub(super) fn verify_hex(&self, data: &[u8], hex: &str) -> bool {
        crate::hex::decode(hex.as_bytes()).is_some_and(|tag| self.verify(data, &tag))
    }
}

/// Splits a signed batch into its body and its signature; `None` if it is
/// too short to hold one.
pub(super) fn split_tag(batch: &[u8]) -> Option<(&[u8], &[u8])> {
    batch
        .len()
        .checked_sub(TAG_LEN)
        .map(|body| batch.split_at(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_data_and_its_key() {
        let key = ClusterKey::new(&[7; 32]);
        let tag = key.sign(b"batch");
        assert!(key.verify(b"batch", &tag));
        assert!(!key.verify(b"batcH", &tag));
        assert!(!ClusterKey::new(&[8; 32]).verify(b"batch", &tag));
        let hex = key.sign_hex(b"name:bob:node");
        assert!(key.verify_hex(b"name:bob:node", &hex));
        assert!(!key.verify_hex(b"name:eve:node", &hex));
        assert!(!key.verify_hex(b"name:bob:node", "zz"));
        let mut signed = b"body".to_vec();
        signed.extend_from_slice(&tag);
        assert_eq!(split_tag(&signed), Some((&b"body"[..], &tag[..])));
        assert_eq!(split_tag(b"short"), None);
    }
}
