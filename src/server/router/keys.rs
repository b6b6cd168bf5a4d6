//! A sender's side of the `keys` extension: KEYS (publish this device's
//! keys, answered with KEY-COUNT) and CLAIM (one key per device of a
//! user, answered with DEVICE-KEYS frames and KEYS-END). Out of line and
//! boxed, as HISTORY is: the reading loop carries no room for them.

use std::future::Future;
use std::pin::Pin;

use super::{Router, SenderClosed};
use crate::wire::v1::keys::{self, Record};

type Boxed<'b> = Pin<Box<dyn Future<Output = Result<(), SenderClosed>> + Send + 'b>>;

impl Router<'_> {
    /// Answers KEYS: `device` of this session's name publishes `records`
    /// (checked). A publish the directory refuses (keys before any
    /// identity, a store that cannot write) is answered with a count of 0.
    #[inline(never)]
    pub(crate) fn publish_keys<'b>(
        &'b mut self,
        device: &'b [u8],
        records: Vec<Record<'b>>,
    ) -> Boxed<'b> {
        Box::pin(async move {
            let Some(directory) = &self.shared.keys else {
                return Ok(());
            };
            let name = self.me.name();
            let left = match directory.publish(name, device, &records).await {
                Ok(left) => left,
                Err(e) => {
                    tracing::info!(user = name, "keys not published: {e}");
                    0
                }
            };
            let mut frame = Vec::new();
            keys::encode_key_count(device, left, &mut frame);
            self.reply(&frame).await
        })
    }

    /// Answers CLAIM: one key per device of `name` but those in `known`
    /// (none for a name without keys, or when the directory cannot be
    /// read).
    #[inline(never)]
    pub(crate) fn claim_keys<'b>(&'b mut self, name: &'b [u8], known: &'b [u8]) -> Boxed<'b> {
        Box::pin(async move {
            let Some(directory) = &self.shared.keys else {
                return Ok(());
            };
            let known = keys::known_devices(known).map(<[u8]>::to_vec).collect();
            let claimed = match std::str::from_utf8(name) {
                Ok(name) => directory.claim(name, known).await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let mut frames = Vec::new();
            for device in &claimed {
                let mut records = Vec::new();
                keys::push_record(keys::IDENTITY, &device.identity, &mut records);
                if let Some((kind, key)) = &device.key {
                    keys::push_record(*kind, key, &mut records);
                }
                keys::encode_device_keys(&device.device, &records, &mut frames);
            }
            keys::encode_keys_end(name, claimed.len() as u64, &mut frames);
            self.reply(&frames).await
        })
    }
}
