//! The public keys registered users' devices publish for end-to-end
//! encryption (the `keys` extension), as the server keeps them: per
//! device, its identity record, the one-time keys not handed out yet
//! (each handed out once), and its fallback key.
//!
//! [`DeviceKeys`] and its rules are pure, and shared by the memory
//! directory of a server without `--store` and by the store, which keeps
//! each device under `NAME \0 DEVICE` in its own table and applies a
//! publish or a claim in one write transaction: a one-time key handed out
//! is gone from the file before anyone hears of it.

use std::collections::VecDeque;

use redb::{ReadableTable, TableDefinition};

use super::{now_ms, Store, StoreError};
use crate::wire::v1::keys::{self, Record};

/// `NAME \0 DEVICE` to a [`DeviceKeys`], encoded.
pub(super) const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");

/// Devices with keys kept per name: publishing one more forgets the one
/// that published longest ago.
pub const MAX_DEVICES: usize = 32;
/// One-time keys kept per device; more are dropped (the count the device
/// is told says so).
pub const MAX_ONE_TIME: usize = 100;

/// One device's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceKeys {
    pub identity: Vec<u8>,
    pub one_time: VecDeque<Vec<u8>>,
    pub fallback: Option<Vec<u8>>,
    /// When it last published (ms since the epoch): the oldest goes first.
    pub published_ms: u64,
}

/// Why a publish was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("a device publishes its identity before its keys")]
    NoIdentity,
    #[error("the key store cannot be used just now")]
    Unavailable,
}

/// One device's answer to a claim: its identity, and the key handed out
/// for it (a one-time key, else the fallback key, else none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub device: Vec<u8>,
    pub identity: Vec<u8>,
    pub key: Option<(u8, Vec<u8>)>,
}

impl DeviceKeys {
    /// This device after publishing `records` (already checked by
    /// [`keys::records`]).
    pub fn published(
        existing: Option<DeviceKeys>,
        records: &[Record<'_>],
        now: u64,
    ) -> Result<DeviceKeys, PublishError> {
        let mut device = existing.unwrap_or_default();
        for record in records {
            match record.kind {
                keys::IDENTITY => device.identity = record.bytes.to_vec(),
                keys::FALLBACK => device.fallback = Some(record.bytes.to_vec()),
                _ => {
                    if device.one_time.len() < MAX_ONE_TIME {
                        device.one_time.push_back(record.bytes.to_vec());
                    }
                }
            }
        }
        if device.identity.is_empty() {
            return Err(PublishError::NoIdentity);
        }
        device.published_ms = now;
        Ok(device)
    }

    /// Hands out one key: the oldest one-time key (gone for good), else
    /// the fallback key (kept); none to a claimer that `knows` the device
    /// (it has a session with it already).
    pub fn claim(&mut self, device: &[u8], knows: bool) -> Claimed {
        let key = match knows {
            true => None,
            false => match self.one_time.pop_front() {
                Some(key) => Some((keys::ONE_TIME, key)),
                None => self.fallback.clone().map(|key| (keys::FALLBACK, key)),
            },
        };
        Claimed {
            device: device.to_vec(),
            identity: self.identity.clone(),
            key,
        }
    }

    /// The bytes the store keeps.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.published_ms.to_be_bytes());
        push_field(&self.identity, &mut out);
        push_field(self.fallback.as_deref().unwrap_or_default(), &mut out);
        out.extend_from_slice(&(self.one_time.len() as u16).to_be_bytes());
        for key in &self.one_time {
            push_field(key, &mut out);
        }
        out
    }

    /// What [`DeviceKeys::encode`] wrote; `None` for anything else (a
    /// damaged record is dropped, never trusted).
    pub fn decode(bytes: &[u8]) -> Option<DeviceKeys> {
        let mut rest = bytes;
        let published_ms = u64::from_be_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let identity = take_field(&mut rest)?.to_vec();
        let fallback = take_field(&mut rest)?;
        let fallback = (!fallback.is_empty()).then(|| fallback.to_vec());
        let count = u16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
        let mut one_time = VecDeque::new();
        for _ in 0..count {
            one_time.push_back(take_field(&mut rest)?.to_vec());
        }
        (rest.is_empty() && !identity.is_empty()).then_some(DeviceKeys {
            identity,
            one_time,
            fallback,
            published_ms,
        })
    }
}

fn push_field(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u16::from_be_bytes(take(rest, 2)?.try_into().ok()?);
    take(rest, usize::from(len))
}

/// The store's key for `name`'s `device`; with an empty device, the
/// prefix of all of `name`'s.
fn key_of(name: &str, device: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + device.len());
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(device);
    key
}

/// The end (exclusive) of `name`'s keys.
fn end_of(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(1);
    key
}

fn read_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

impl Store {
    /// Applies `name`'s `device` publishing `records`, durably; how many
    /// one-time keys the store now holds for it. Blocks: call it off the
    /// workers (`smol::unblock`).
    pub fn publish_keys(
        &self,
        name: &str,
        device: &[u8],
        records: &[Record<'_>],
    ) -> Result<u64, PublishError> {
        let publish = || -> Result<Result<u64, PublishError>, StoreError> {
            let db = self.db()?;
            let txn = db.begin_write().map_err(read_error)?;
            let left = {
                let mut table = txn.open_table(KEYS).map_err(read_error)?;
                let key = key_of(name, device);
                let existing = table
                    .get(key.as_slice())
                    .map_err(read_error)?
                    .and_then(|value| DeviceKeys::decode(value.value()));
                let new_device = existing.is_none();
                let device_keys = match DeviceKeys::published(existing, records, now_ms()) {
                    Ok(keys) => keys,
                    Err(e) => return Ok(Err(e)),
                };
                if new_device {
                    // Room for it: the device that published longest ago
                    // goes.
                    let prefix = key_of(name, b"");
                    let end = end_of(name);
                    let mut devices: Vec<(u64, Vec<u8>)> = table
                        .range(prefix.as_slice()..end.as_slice())
                        .map_err(read_error)?
                        .filter_map(Result::ok)
                        .map(|(k, v)| {
                            let published =
                                DeviceKeys::decode(v.value()).map_or(0, |d| d.published_ms);
                            (published, k.value().to_vec())
                        })
                        .collect();
                    devices.sort();
                    while devices.len() >= MAX_DEVICES {
                        let (_, oldest) = devices.remove(0);
                        table.remove(oldest.as_slice()).map_err(read_error)?;
                    }
                }
                table
                    .insert(key.as_slice(), device_keys.encode().as_slice())
                    .map_err(read_error)?;
                device_keys.one_time.len() as u64
            };
            txn.commit().map_err(read_error)?;
            Ok(Ok(left))
        };
        publish().unwrap_or(Err(PublishError::Unavailable))
    }

    /// Hands out one key per device of `name` but those in `known`,
    /// durably (see [`DeviceKeys::claim`]). Blocks: call it off the
    /// workers.
    pub fn claim_keys(&self, name: &str, known: &[Vec<u8>]) -> Result<Vec<Claimed>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(read_error)?;
        let claimed = {
            let mut table = txn.open_table(KEYS).map_err(read_error)?;
            let prefix = key_of(name, b"");
            let end = end_of(name);
            let found: Vec<(Vec<u8>, Option<DeviceKeys>)> = table
                .range(prefix.as_slice()..end.as_slice())
                .map_err(read_error)?
                .filter_map(Result::ok)
                .map(|(k, v)| (k.value().to_vec(), DeviceKeys::decode(v.value())))
                .collect();
            let mut claimed = Vec::new();
            for (key, device_keys) in found {
                let Some(mut device_keys) = device_keys else {
                    // Damaged: gone, never handed out.
                    table.remove(key.as_slice()).map_err(read_error)?;
                    continue;
                };
                let device = &key[prefix.len()..];
                let taken = device_keys.claim(device, known.iter().any(|k| k == device));
                if taken
                    .key
                    .as_ref()
                    .is_some_and(|(kind, _)| *kind == keys::ONE_TIME)
                {
                    table
                        .insert(key.as_slice(), device_keys.encode().as_slice())
                        .map_err(read_error)?;
                }
                claimed.push(taken);
            }
            claimed
        };
        txn.commit().map_err(read_error)?;
        Ok(claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, bytes: &[u8]) -> Record<'_> {
        Record { kind, bytes }
    }

    #[test]
    fn one_time_keys_are_handed_out_once_then_the_fallback() {
        let records = [
            record(keys::IDENTITY, b"id"),
            record(keys::ONE_TIME, b"k1"),
            record(keys::ONE_TIME, b"k2"),
            record(keys::FALLBACK, b"fb"),
        ];
        let mut device = DeviceKeys::published(None, &records, 5).unwrap();
        // A claimer that knows the device gets its identity alone.
        let known = device.claim(b"d", true);
        assert_eq!((known.key, known.identity), (None, b"id".to_vec()));
        let claimed: Vec<_> = (0..4).map(|_| device.claim(b"d", false).key).collect();
        assert_eq!(
            claimed,
            vec![
                Some((keys::ONE_TIME, b"k1".to_vec())),
                Some((keys::ONE_TIME, b"k2".to_vec())),
                Some((keys::FALLBACK, b"fb".to_vec())),
                Some((keys::FALLBACK, b"fb".to_vec())),
            ]
        );
        assert_eq!(
            DeviceKeys::published(None, &[record(keys::ONE_TIME, b"k")], 1),
            Err(PublishError::NoIdentity)
        );
    }

    #[test]
    fn the_encoding_round_trips_and_damage_is_dropped() {
        let records = [record(keys::IDENTITY, b"id"), record(keys::ONE_TIME, b"k1")];
        let device = DeviceKeys::published(None, &records, 7).unwrap();
        let bytes = device.encode();
        assert_eq!(DeviceKeys::decode(&bytes), Some(device));
        for cut in 0..bytes.len() {
            assert_eq!(DeviceKeys::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(DeviceKeys::decode(&longer), None);
    }

    #[test]
    fn the_store_keeps_keys_and_hands_each_one_time_key_out_once() {
        let dir = std::env::temp_dir().join(format!("pmchat-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        {
            let store = Store::open(&path, super::super::Retention::default()).unwrap();
            let records = [
                record(keys::IDENTITY, b"id-a"),
                record(keys::ONE_TIME, b"k1"),
            ];
            assert_eq!(store.publish_keys("bob", b"a", &records), Ok(1));
            let records = [
                record(keys::IDENTITY, b"id-b"),
                record(keys::FALLBACK, b"fb"),
            ];
            assert_eq!(store.publish_keys("bob", b"b", &records), Ok(0));
            // Another name's keys are its own.
            assert_eq!(
                store.publish_keys("bobby", b"c", &[record(keys::IDENTITY, b"x")]),
                Ok(0)
            );
            let claimed = store.claim_keys("bob", &[]).unwrap();
            assert_eq!(claimed.len(), 2);
            assert_eq!(claimed[0].key, Some((keys::ONE_TIME, b"k1".to_vec())));
            assert_eq!(claimed[1].key, Some((keys::FALLBACK, b"fb".to_vec())));
            store.close();
        }
        // Across a restart: k1 stays handed out.
        let store = Store::open(&path, super::super::Retention::default()).unwrap();
        let claimed = store.claim_keys("bob", &[]).unwrap();
        assert_eq!(claimed[0].identity, b"id-a");
        assert_eq!(claimed[0].key, None);
        assert!(store.claim_keys("nobody", &[]).unwrap().is_empty());
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_name_keeps_at_most_max_devices() {
        let dir = std::env::temp_dir().join(format!("pmchat-keys-max-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("s.redb"), super::super::Retention::default()).unwrap();
        for i in 0..MAX_DEVICES + 3 {
            let device = format!("d{i:03}");
            store
                .publish_keys("bob", device.as_bytes(), &[record(keys::IDENTITY, b"id")])
                .unwrap();
        }
        assert_eq!(store.claim_keys("bob", &[]).unwrap().len(), MAX_DEVICES);
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
