//! Where a device's Olm state lives between runs: one file per server
//! and name in the state directory, mode 0600, holding the account and
//! its sessions pickled and encrypted (vodozemac's pickle encryption)
//! under a key derived from the user's password with argon2id and a
//! random salt kept beside it. The file alone reveals nothing; losing it
//! (or the password changing) means a new device.
//!
//! Layout, one item a line: `pmchat-e2e-vault 1`, `salt HEX`,
//! `account PICKLE`, then `session DEVICE PICKLE` for each session.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::device::Device;

/// The largest vault read (sessions are a few KiB each).
const MAX_VAULT: u64 = 16 << 20;
const MAGIC: &str = "pmchat-e2e-vault 1";

/// Why a vault cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: not a pmchat key vault, or damaged")]
    Damaged(PathBuf),
    #[error("{0}: the password does not open it (changed since it was made?)")]
    WrongPassword(PathBuf),
    #[error("cannot derive the vault's key: {0}")]
    Derive(String),
}

/// The key a password and salt give, by argon2id at `params`.
fn derive(password: &[u8], salt: &[u8], params: argon2::Params) -> Result<[u8; 32], VaultError> {
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(password, salt, &mut key)
        .map_err(|e| VaultError::Derive(e.to_string()))?;
    Ok(key)
}

/// A vault file and the key that opens it.
pub struct Vault {
    path: PathBuf,
    salt: [u8; 16],
    key: [u8; 32],
}

impl Vault {
    /// Opens the vault at `path` with `password`, or makes a new device
    /// (and, at the first [`Vault::save`], its file) when there is none.
    pub fn open(path: &Path, password: &[u8]) -> Result<(Vault, Device), VaultError> {
        Vault::open_with(path, password, argon2::Params::default())
    }

    /// [`Vault::open`] with other argon2 costs (tests).
    pub fn open_with(
        path: &Path,
        password: &[u8],
        params: argon2::Params,
    ) -> Result<(Vault, Device), VaultError> {
        let io = |e| VaultError::Io(path.to_path_buf(), e);
        let damaged = || VaultError::Damaged(path.to_path_buf());
        let mut text = String::new();
        match std::fs::File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut salt = [0u8; 16];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
                    .map_err(|_| VaultError::Derive("no randomness".into()))?;
                let key = derive(password, &salt, params)?;
                let vault = Vault {
                    path: path.to_path_buf(),
                    salt,
                    key,
                };
                return Ok((vault, Device::new()));
            }
            Err(e) => return Err(io(e)),
            Ok(file) => {
                file.take(MAX_VAULT).read_to_string(&mut text).map_err(io)?;
            }
        }
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(damaged());
        }
        let salt = lines
            .next()
            .and_then(|line| line.strip_prefix("salt "))
            .and_then(|hex| crate::hex::decode(hex.as_bytes()))
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
            .ok_or_else(damaged)?;
        let account = lines
            .next()
            .and_then(|line| line.strip_prefix("account "))
            .ok_or_else(damaged)?;
        let mut sessions = Vec::new();
        for line in lines {
            let mut words = line
                .strip_prefix("session ")
                .ok_or_else(damaged)?
                .split(' ');
            let (Some(device), Some(pickle), None) = (words.next(), words.next(), words.next())
            else {
                return Err(damaged());
            };
            sessions.push((device.to_string(), pickle.to_string()));
        }
        let key = derive(password, &salt, params)?;
        let device = Device::unpickle(&key, account, &sessions)
            .ok_or_else(|| VaultError::WrongPassword(path.to_path_buf()))?;
        let vault = Vault {
            path: path.to_path_buf(),
            salt,
            key,
        };
        Ok((vault, device))
    }

    /// Writes `device`'s state (0600, atomically: a crash leaves the old
    /// state or the new one).
    pub fn save(&self, device: &Device) -> Result<(), VaultError> {
        let io = |e| VaultError::Io(self.path.clone(), e);
        let (account, sessions) = device.pickle(&self.key);
        let mut text = format!(
            "{MAGIC}\nsalt {}\naccount {account}\n",
            crate::hex::encode(&self.salt)
        );
        for (device, pickle) in sessions {
            text.push_str(&format!("session {device} {pickle}\n"));
        }
        crate::client::private_file::write(&self.path, text.as_bytes()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> argon2::Params {
        argon2::Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn a_vault_keeps_the_device_for_its_password_only() {
        let dir = std::env::temp_dir().join(format!("pmchat-vault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("e2e").join("alice");
        let (vault, device) = Vault::open_with(&path, b"pw", cheap()).unwrap();
        let identity = device.identity();
        vault.save(&device).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing of the keys in the clear.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&identity.curve25519.to_base64()));

        let (_, again) = Vault::open_with(&path, b"pw", cheap()).unwrap();
        assert_eq!(again.identity(), identity);
        assert!(matches!(
            Vault::open_with(&path, b"wrong", cheap()),
            Err(VaultError::WrongPassword(_))
        ));
        std::fs::write(&path, "not a vault\n").unwrap();
        assert!(matches!(
            Vault::open_with(&path, b"pw", cheap()),
            Err(VaultError::Damaged(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
