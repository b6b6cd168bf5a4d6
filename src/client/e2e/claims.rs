//! The devices of each user this run seals messages for, as the last
//! claim found them, and when that list is too old to seal with: a user
//! who adds a device (a new laptop) while this client runs gets messages
//! there too, from the first one sealed after the list went stale, or at
//! once after the new device wrote to us, without this client being
//! restarted. A claim names the devices this device already has sessions
//! with, so asking again uses up one-time keys of new devices only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vodozemac::Curve25519PublicKey;

use super::records::Identity;

/// How long a claim's list of a user's devices is sealed for before the
/// next message to the user asks the server again.
pub const FRESH_FOR: Duration = Duration::from_secs(30);

/// A recipient's devices, as a claim found them.
#[derive(Clone, Debug)]
pub struct Recipient {
    /// Its devices that checked out, each with the key handed out for it.
    pub devices: Vec<(Identity, Option<Curve25519PublicKey>)>,
    /// Lines about them for the user (a new device, a bad record).
    pub notices: Vec<String>,
}

impl Recipient {
    fn has_device(&self, key: &Curve25519PublicKey) -> bool {
        self.devices
            .iter()
            .any(|(identity, _)| identity.curve25519 == *key)
    }
}

/// The claims of one run, by user name.
#[derive(Debug, Default)]
pub struct Claims {
    by_name: HashMap<String, (Recipient, Instant)>,
}

impl Claims {
    /// `name`'s devices, if claimed less than [`FRESH_FOR`] before `now`.
    pub fn get(&self, name: &str, now: Instant) -> Option<&Recipient> {
        self.by_name
            .get(name)
            .filter(|(_, at)| now.saturating_duration_since(*at) < FRESH_FOR)
            .map(|(recipient, _)| recipient)
    }

    /// `name`'s devices as a claim answered at `now`.
    pub fn insert(&mut self, name: &str, recipient: Recipient, now: Instant) {
        self.by_name.insert(name.to_string(), (recipient, now));
    }

    /// A message came from `name`'s device `device`: a device the list
    /// does not have makes it stale (the next message to `name` asks the
    /// server again, and is sealed for that device too).
    pub fn heard_from(&mut self, name: &str, device: &Curve25519PublicKey) {
        if self
            .by_name
            .get(name)
            .is_some_and(|(recipient, _)| !recipient.has_device(device))
        {
            self.by_name.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::e2e::device::Device;

    fn recipient_of(devices: &[&Device], name: &str) -> Recipient {
        Recipient {
            devices: devices
                .iter()
                .map(|device| {
                    let identity = Identity::parse(name, &device.identity_record(name)).unwrap();
                    (identity, None)
                })
                .collect(),
            notices: Vec::new(),
        }
    }

    #[test]
    fn a_users_devices_are_claimed_again_once_the_list_is_stale() {
        let phone = Device::new();
        let mut claims = Claims::default();
        let start = Instant::now();
        claims.insert("bob", recipient_of(&[&phone], "bob"), start);
        let just_fresh = start + FRESH_FOR - Duration::from_millis(1);
        assert_eq!(claims.get("bob", just_fresh).unwrap().devices.len(), 1);
        assert!(claims.get("bob", start + FRESH_FOR).is_none());
        assert!(claims.get("carol", start).is_none());
    }

    #[test]
    fn a_message_from_a_device_not_on_the_list_makes_it_stale() {
        let (phone, laptop) = (Device::new(), Device::new());
        let mut claims = Claims::default();
        let now = Instant::now();
        claims.insert("bob", recipient_of(&[&phone], "bob"), now);
        // From a device on the list, or from another user: kept.
        claims.heard_from("bob", &phone.identity().curve25519);
        claims.heard_from("carol", &laptop.identity().curve25519);
        assert!(claims.get("bob", now).is_some());
        // From bob's new laptop: bob's devices are asked for again.
        claims.heard_from("bob", &laptop.identity().curve25519);
        assert!(claims.get("bob", now).is_none());
    }
}
