//! The key directory of the `keys` extension: where the public keys of
//! registered users' devices are kept, behind one seam. With `--store`
//! they are in the store (durable: a one-time key handed out stays handed
//! out across restarts); without it, in memory for the server's life
//! (devices publish again at their next login); across nodes
//! (`--cluster`), in Redis, where every node publishes and claims.
//!
//! Only sessions of registered names proven by a password (or a device
//! token) negotiate `keys`: an unregistered name can be taken by anyone,
//! who would publish their own keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::cluster::Cluster;
use crate::store::keys::{Claimed, DeviceKeys, PublishError, MAX_DEVICES};
use crate::store::{now_ms, Store};
use crate::wire::v1::keys::Record;

/// Each name's devices and their keys, in memory.
type Names = HashMap<Box<str>, BTreeMap<Vec<u8>, DeviceKeys>>;

/// Where keys are kept.
pub(crate) enum KeyDirectory {
    /// For the server's life: name → device → keys.
    Memory(Mutex<Names>),
    /// In the store's `keys` table.
    Store(Arc<Store>),
    /// In the cluster's Redis, shared by every node.
    Redis(Arc<Cluster>),
}

impl KeyDirectory {
    /// `name`'s `device` publishes `records` (checked); how many one-time
    /// keys are now kept for it.
    pub(crate) async fn publish(
        &self,
        name: &str,
        device: &[u8],
        records: &[Record<'_>],
    ) -> Result<u64, PublishError> {
        match self {
            KeyDirectory::Memory(names) => {
                let mut names = names.lock().unwrap_or_else(|e| e.into_inner());
                let devices = names.entry(name.into()).or_default();
                let existing = devices.remove(device);
                let new_device = existing.is_none();
                // Only a device with no identity yet can be refused: a
                // refusal leaves nothing to put back.
                let published = DeviceKeys::published(existing, records, now_ms())?;
                while new_device && devices.len() >= MAX_DEVICES {
                    let oldest = devices
                        .iter()
                        .min_by_key(|(_, keys)| keys.published_ms)
                        .map(|(id, _)| id.clone());
                    match oldest {
                        Some(oldest) => devices.remove(&oldest),
                        None => break,
                    };
                }
                let left = published.one_time.len() as u64;
                devices.insert(device.to_vec(), published);
                Ok(left)
            }
            KeyDirectory::Store(store) => {
                let store = Arc::clone(store);
                let (name, device) = (name.to_string(), device.to_vec());
                let owned: Vec<(u8, Vec<u8>)> =
                    records.iter().map(|r| (r.kind, r.bytes.to_vec())).collect();
                smol::unblock(move || {
                    let records: Vec<Record<'_>> = owned
                        .iter()
                        .map(|(kind, bytes)| Record { kind: *kind, bytes })
                        .collect();
                    store.publish_keys(&name, &device, &records)
                })
                .await
            }
            KeyDirectory::Redis(cluster) => {
                cluster.publish_device_keys(name, device, records).await
            }
        }
    }

    /// One key per device of `name` (one-time keys handed out for good),
    /// but none for the devices in `known`, which the claimer has sessions
    /// with; `None` if the directory cannot be read just now.
    pub(crate) async fn claim(&self, name: &str, known: Vec<Vec<u8>>) -> Option<Vec<Claimed>> {
        match self {
            KeyDirectory::Memory(names) => {
                let mut names = names.lock().unwrap_or_else(|e| e.into_inner());
                let Some(devices) = names.get_mut(name) else {
                    return Some(Vec::new());
                };
                Some(
                    devices
                        .iter_mut()
                        .map(|(device, keys)| keys.claim(device, known.iter().any(|k| k == device)))
                        .collect(),
                )
            }
            KeyDirectory::Store(store) => {
                let (store, name) = (Arc::clone(store), name.to_string());
                smol::unblock(move || store.claim_keys(&name, &known).ok()).await
            }
            KeyDirectory::Redis(cluster) => cluster.claim_device_keys(name, &known).await,
        }
    }
}
