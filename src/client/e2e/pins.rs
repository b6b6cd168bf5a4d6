//! Trust on first use, as SSH does it: the first time this device sees a
//! user's device, its signing key is pinned (in `pins`, 0600, in the
//! state directory); a new device of a known user is pinned and
//! announced; a known device whose signing key changed holds every
//! message to that user until `trust NAME`. `verify NAME` prints a
//! safety code both sides compute from both users' pinned keys, to
//! compare over another channel.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::records::Identity;

/// The largest pins file read.
const MAX_PINS: u64 = 4 << 20;

/// What a device's identity is to this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The user's first device seen: pinned.
    First,
    /// Pinned already, the same key.
    Known,
    /// Another device of a known user: pinned, and to be announced.
    NewDevice,
    /// A known device with another signing key: the user is held.
    Changed,
}

/// The pinned keys.
#[derive(Debug, Default)]
pub struct Pins {
    path: PathBuf,
    /// Name → device id → signing key (base64).
    pinned: BTreeMap<String, BTreeMap<String, String>>,
    /// Users whose messages are held until `trust`.
    held: BTreeSet<String>,
}

impl Pins {
    /// The pins kept at `path` (none yet if it does not exist; a damaged
    /// line is skipped, which at worst makes a device new again).
    pub fn load(path: &Path) -> std::io::Result<Pins> {
        let mut pins = Pins {
            path: path.to_path_buf(),
            ..Pins::default()
        };
        let mut text = String::new();
        match std::fs::File::open(path) {
            Ok(file) => {
                file.take(MAX_PINS).read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pins),
            Err(e) => return Err(e),
        }
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["pin", name, device, key] => {
                    pins.pinned
                        .entry(name.to_string())
                        .or_default()
                        .insert(device.to_string(), key.to_string());
                }
                ["held", name] => {
                    pins.held.insert(name.to_string());
                }
                _ => {}
            }
        }
        Ok(pins)
    }

    /// Writes the pins (0600, atomically).
    pub fn save(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for (name, devices) in &self.pinned {
            for (device, key) in devices {
                text.push_str(&format!("pin {name} {device} {key}\n"));
            }
        }
        for name in &self.held {
            text.push_str(&format!("held {name}\n"));
        }
        crate::client::private_file::write(&self.path, text.as_bytes())
    }

    /// Checks `name`'s device `identity` against the pins, pinning what
    /// is new and holding `name` if a known device's key changed.
    pub fn check(&mut self, name: &str, identity: &Identity) -> Seen {
        let device = identity.device_id();
        let key = identity.ed25519.to_base64();
        let known_user = self.pinned.contains_key(name);
        let devices = self.pinned.entry(name.to_string()).or_default();
        match devices.get(&device) {
            Some(pinned) if *pinned == key => Seen::Known,
            Some(_) => {
                self.held.insert(name.to_string());
                Seen::Changed
            }
            None => {
                devices.insert(device, key);
                if known_user {
                    Seen::NewDevice
                } else {
                    Seen::First
                }
            }
        }
    }

    /// True if `device` is pinned as one of `name`'s.
    pub fn knows(&self, name: &str, device: &str) -> bool {
        self.pinned
            .get(name)
            .is_some_and(|devices| devices.contains_key(device))
    }

    /// The ids of `name`'s pinned devices.
    pub fn devices_of(&self, name: &str) -> Vec<String> {
        self.pinned
            .get(name)
            .map(|devices| devices.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// True while `name`'s messages are held (a changed key).
    pub fn is_held(&self, name: &str) -> bool {
        self.held.contains(name)
    }

    /// `trust NAME`: pins `identities` as `name`'s devices, in place of
    /// what was pinned, and releases the hold.
    pub fn trust(&mut self, name: &str, identities: &[Identity]) {
        let devices = identities
            .iter()
            .map(|identity| (identity.device_id(), identity.ed25519.to_base64()))
            .collect();
        self.pinned.insert(name.to_string(), devices);
        self.held.remove(name);
    }

    /// `name`'s pinned signing keys (base64), sorted.
    pub fn keys_of(&self, name: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .pinned
            .get(name)
            .map(|devices| devices.values().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

/// The safety code of two users' keys: the same whichever side computes
/// it (the pairs are sorted), six groups of five digits from a SHA-256
/// (ring's) of both names and their sorted signing keys.
pub fn safety_code(a: (&str, &[String]), b: (&str, &[String])) -> String {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut input = b"pmchat-e2e/1 safety".to_vec();
    for (name, keys) in [first, second] {
        input.push(0);
        input.extend_from_slice(name.as_bytes());
        for key in keys {
            input.push(b' ');
            input.extend_from_slice(key.as_bytes());
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let bytes = digest.as_ref();
    let groups: Vec<String> = bytes
        .chunks(5)
        .take(6)
        .map(|chunk| {
            let number = chunk.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
            format!("{:05}", number % 100_000)
        })
        .collect();
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::e2e::device::Device;

    #[test]
    fn first_use_is_pinned_a_new_device_announced_a_changed_key_held_until_trusted() {
        let dir = std::env::temp_dir().join(format!("pmchat-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("pins");
        let mut pins = Pins::load(&path).unwrap();
        let (phone, laptop) = (Device::new(), Device::new());
        assert_eq!(pins.check("bob", &phone.identity()), Seen::First);
        assert_eq!(pins.check("bob", &phone.identity()), Seen::Known);
        assert_eq!(pins.check("bob", &laptop.identity()), Seen::NewDevice);
        pins.save().unwrap();

        // The same device id with another signing key.
        let mut pins = Pins::load(&path).unwrap();
        let mut impostor = Device::new().identity();
        impostor.curve25519 = phone.identity().curve25519;
        assert_eq!(pins.check("bob", &impostor), Seen::Changed);
        assert!(pins.is_held("bob"));
        pins.save().unwrap();
        let mut pins = Pins::load(&path).unwrap();
        assert!(pins.is_held("bob"), "the hold survives a restart");
        pins.trust("bob", &[impostor]);
        assert!(!pins.is_held("bob"));
        assert_eq!(pins.check("bob", &impostor), Seen::Known);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn both_sides_compute_the_same_safety_code() {
        let alice = vec!["A1".to_string()];
        let bob = vec!["B1".to_string(), "B2".to_string()];
        let one = safety_code(("alice", &alice), ("bob", &bob));
        let other = safety_code(("bob", &bob), ("alice", &alice));
        assert_eq!(one, other);
        assert_eq!(one.len(), 6 * 5 + 5);
        let changed = safety_code(("alice", &alice), ("bob", &bob[..1]));
        assert_ne!(one, changed);
    }
}
