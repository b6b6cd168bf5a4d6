//! Device tokens: what keeps a guessing flood on a name from locking its
//! owner out (OWASP's "device cookies").
//!
//! A login proved with its password gets a token in its WELCOME
//! (`token=HEX`), which the client keeps in its state directory and sends
//! back in AUTH at its next login. A login that presents a valid token for
//! its name skips the back-off the name has earned (the password is still
//! checked); logins from devices without one share the name's back-off, as
//! before. A token is its issue time and a signature (HMAC-SHA-256) over
//! the name, the time and the name's current password hash, so a token
//! stays valid for [`TOKEN_LIFETIME`] and until the password changes, and
//! the server keeps no list of them. A token that comes with wrong
//! passwords [`TOKEN_FAILURES`] times is ignored from then on (a stolen
//! token does not make guessing fast).
//!
//! The signing secret lives beside the accounts file (`FILE.device-key`,
//! created 0600 at the first start), so tokens survive restarts; with
//! `--cluster-key-file` it is derived from the cluster key instead, so
//! that every node accepts every node's tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use tracing::warn;

/// How long a token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Wrong passwords a token may come with before it is ignored.
pub const TOKEN_FAILURES: u32 = 3;
/// Tokens with failures remembered at most; past it the table starts over
/// (those tokens get [`TOKEN_FAILURES`] more tries: bounded, and rare).
const FAILURES_KEPT: usize = 65_536;
/// Bytes of signature kept in a token.
const SIGNATURE: usize = 16;

/// Issues and checks device tokens.
pub(crate) struct DeviceTokens {
    key: hmac::Key,
    /// Wrong passwords per token signature.
    failures: Mutex<HashMap<[u8; SIGNATURE], u32>>,
}

impl std::fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTokens(..)")
    }
}

/// Where the signing secret for the accounts file at `accounts` lives.
pub(crate) fn key_path(accounts: &Path) -> PathBuf {
    let mut path = accounts.as_os_str().to_owned();
    path.push(".device-key");
    PathBuf::from(path)
}

impl DeviceTokens {
    /// Tokens signed with `secret`.
    pub(crate) fn new(secret: &[u8]) -> DeviceTokens {
        DeviceTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Tokens signed with the secret in `path`, made (32 random bytes, hex,
    /// 0600) if the file does not exist. A secret that cannot be kept is
    /// made for this run only, with a warning: tokens then end with it.
    pub(crate) fn load_or_create(path: &Path) -> DeviceTokens {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().len() >= 32 => {
                return DeviceTokens::new(text.trim().as_bytes())
            }
            Ok(_) => warn!(
                "{}: too short; making a new device-token key",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot read {}: {e}; making a new one", path.display()),
        }
        let secret = random_hex();
        if let Err(e) = write_private(path, &secret) {
            warn!(
                "cannot keep the device-token key in {}: {e}; device tokens last until \
                 this server stops",
                path.display()
            );
        }
        DeviceTokens::new(secret.as_bytes())
    }

    fn signature(&self, name: &str, issued: u64, hash: &str) -> [u8; SIGNATURE] {
        let mut context = hmac::Context::with_key(&self.key);
        for part in [b"device-token\0", name.as_bytes(), b"\0"] {
            context.update(part);
        }
        context.update(&issued.to_be_bytes());
        context.update(hash.as_bytes());
        let mut signature = [0u8; SIGNATURE];
        signature.copy_from_slice(&context.sign().as_ref()[..SIGNATURE]);
        signature
    }

    /// A token for `name`, whose password hash is `hash`, issued `now`.
    pub(crate) fn issue(&self, name: &str, hash: &str, now: SystemTime) -> String {
        let issued = seconds(now);
        let mut token = issued.to_be_bytes().to_vec();
        token.extend_from_slice(&self.signature(name, issued, hash));
        crate::hex::encode(&token)
    }

    /// True when `token` was issued for `name` with its password hash
    /// still `hash`, is within its lifetime, and has not come with too many
    /// wrong passwords.
    pub(crate) fn valid(&self, token: &[u8], name: &str, hash: &str, now: SystemTime) -> bool {
        let Some((issued, signature)) = decode(token) else {
            return false;
        };
        let age = seconds(now).saturating_sub(issued);
        if age > TOKEN_LIFETIME.as_secs() || issued > seconds(now) + 300 {
            return false;
        }
        let expected = self.signature(name, issued, hash);
        // Compared in constant time: the signature is a secret until it
        // matches.
        let differs = expected
            .iter()
            .zip(signature)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return false;
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(&signature).copied().unwrap_or(0) < TOKEN_FAILURES
    }

    /// `token` came with a wrong password.
    pub(crate) fn failed(&self, token: &[u8]) {
        let Some((_, signature)) = decode(token) else {
            return;
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= FAILURES_KEPT && !failures.contains_key(&signature) {
            failures.clear();
        }
        *failures.entry(signature).or_insert(0) += 1;
    }
}

/// A token's issue time and signature; `None` if it is not one.
fn decode(token: &[u8]) -> Option<(u64, [u8; SIGNATURE])> {
    if token.len() != 2 * (8 + SIGNATURE) {
        return None;
    }
    let bytes = crate::hex::decode(token)?;
    let issued = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let signature = bytes[8..].try_into().ok()?;
    Some((issued, signature))
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 32 random bytes, in hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // A failure leaves zeros only if the system's generator fails, which
    // ring reports; the time then still varies the key per start.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes[..8].copy_from_slice(&seconds(SystemTime::now()).to_be_bytes());
    }
    crate::hex::encode(&bytes)
}

/// Writes `text` to a new file at `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_for_its_name_and_password_until_it_expires_or_fails() {
        let tokens = DeviceTokens::new(b"a secret of the test, long enough");
        let now = SystemTime::now();
        let token = tokens.issue("alice", "$argon2id$hash-1", now);
        let token = token.as_bytes();
        assert!(tokens.valid(token, "alice", "$argon2id$hash-1", now));
        assert!(!tokens.valid(token, "bob", "$argon2id$hash-1", now));
        // A new password ends every token.
        assert!(!tokens.valid(token, "alice", "$argon2id$hash-2", now));
        assert!(!tokens.valid(token, "alice", "$argon2id$hash-1", now + TOKEN_LIFETIME * 2));
        assert!(!tokens.valid(b"00", "alice", "$argon2id$hash-1", now));
        let mut forged = token.to_vec();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert!(!tokens.valid(&forged, "alice", "$argon2id$hash-1", now));
        // Wrong passwords with it: ignored after a few.
        for _ in 0..TOKEN_FAILURES {
            assert!(tokens.valid(token, "alice", "$argon2id$hash-1", now));
            tokens.failed(token);
        }
        assert!(!tokens.valid(token, "alice", "$argon2id$hash-1", now));
    }
}
