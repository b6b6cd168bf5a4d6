//! End-to-end encryption for one run of the client (`--e2e`): the device
//! and its vault, the pins, and the two conversations with the server it
//! needs beside messages, KEYS (answered KEY-COUNT) and CLAIM (answered
//! DEVICE-KEYS frames and KEYS-END). The receiving thread hands those
//! answers over here; the sending side waits for them.
//!
//! Both sides use the device (a mutex: the receiving thread decrypts
//! while the sending side encrypts; neither holds it across a wait; the
//! device is always locked before the pins). The vault is written before
//! sealed messages are written to the socket (a key never seals twice)
//! and once per read batch of decrypted ones (a run that stops before
//! then reads them again from the log, which the older sessions still
//! decrypt).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use vodozemac::Curve25519PublicKey;

use super::claims::Claims;
pub use super::claims::Recipient;
use super::device::Device;
use super::envelope::{is_envelope, Envelope};
use super::pins::{Pins, Seen};
use super::records::Identity;
use super::vault::Vault;
use crate::wire::v1::keys;

/// One-time keys the server should hold for this device: topped up to
/// this when fewer are left at login.
const ONE_TIME_KEYS: u64 = 50;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where publishing this device's keys stands.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Publishing {
    /// Before WELCOME.
    NotYet,
    /// The identity (and fallback key) sent, its KEY-COUNT awaited.
    Identity,
    /// One-time keys sent, their KEY-COUNT awaited.
    OneTime,
    /// Done (or not granted, or failed).
    Done,
}

/// True if the server, holding `held` one-time keys of this device,
/// should get more.
fn needs_top_up(held: u64) -> bool {
    held < ONE_TIME_KEYS / 2
}

/// A claim's answer as it came: `(device id, records)` per device.
type Claim = Vec<(Vec<u8>, Vec<u8>)>;

/// What became of an incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Not an envelope: shown as it came (marked, when from a user whose
    /// keys are pinned).
    Plain { pinned: bool },
    /// An envelope for this device, decrypted.
    Text(Vec<u8>),
    /// An envelope for another device of this user: not ours to show.
    NotForThisDevice,
    /// An envelope that cannot be read, and why: reported, never shown.
    Failed(String),
}

/// The e2e state of one client run.
pub struct E2e {
    name: String,
    vault: Vault,
    device: Mutex<Device>,
    pins: Mutex<Pins>,
    /// WELCOME granted `keys`.
    active: AtomicBool,
    /// WELCOME granted `sealed`: envelopes go as sealed content, not text.
    sealed: AtomicBool,
    /// This device's identity record for `name` (signed once).
    identity_record: Vec<u8>,
    /// Sessions changed (by sealing or decrypting) since the vault was
    /// last written.
    dirty: AtomicBool,
    /// Where publishing this device's keys stands (see [`Publishing`]),
    /// as the receiving side sees the answers: a run that ends once the
    /// log is replayed waits for it.
    publishing: std::sync::atomic::AtomicU8,
    /// `--allow-plaintext`: a user without keys is sent plain messages.
    allow_plaintext: bool,
    counts: (async_channel::Sender<u64>, async_channel::Receiver<u64>),
    claims: (async_channel::Sender<Claim>, async_channel::Receiver<Claim>),
    /// DEVICE-KEYS of the claim being answered.
    claiming: Mutex<Claim>,
    /// Recipients claimed this run, and when.
    recipients: Mutex<Claims>,
}

impl std::fmt::Debug for E2e {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2e")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl E2e {
    /// Opens (or starts) `name`'s device for `server` in `dir` (the
    /// client's state directory), its vault unlocked by `password`.
    pub fn open(
        dir: &Path,
        server: &str,
        name: &str,
        password: &[u8],
        allow_plaintext: bool,
    ) -> Result<E2e, String> {
        let place = dir.join("e2e").join(server.replace([':', '/'], "_"));
        let (vault, device) = Vault::open(&place.join(format!("{name}.vault")), password)
            .map_err(|e| e.to_string())?;
        let pins = Pins::load(&place.join(format!("{name}.pins")))
            .map_err(|e| format!("cannot read the pinned keys: {e}"))?;
        Ok(E2e {
            name: name.to_string(),
            vault,
            identity_record: device.identity_record(name),
            device: Mutex::new(device),
            pins: Mutex::new(pins),
            active: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            publishing: std::sync::atomic::AtomicU8::new(Publishing::NotYet as u8),
            allow_plaintext,
            counts: async_channel::bounded(4),
            claims: async_channel::bounded(4),
            claiming: Mutex::new(Vec::new()),
            recipients: Mutex::new(Claims::default()),
        })
    }

    /// WELCOME said whether `keys` was granted.
    pub fn set_active(&self, granted: bool) {
        self.active.store(granted, Ordering::SeqCst);
        let stage = if granted {
            Publishing::Identity
        } else {
            Publishing::Done
        };
        self.publishing.store(stage as u8, Ordering::SeqCst);
    }

    /// WELCOME said whether `sealed` was granted.
    pub fn set_sealed(&self, granted: bool) {
        self.sealed.store(granted, Ordering::SeqCst);
    }

    /// A message was refused: the next one to each device carries this
    /// device's identity again (see [`Device::introduce`]).
    pub fn refused(&self) {
        lock(&self.device).forget_introductions();
    }

    /// True while this device's keys are on their way to the server.
    pub fn is_publishing(&self) -> bool {
        let stage = self.publishing.load(Ordering::SeqCst);
        stage == Publishing::Identity as u8 || stage == Publishing::OneTime as u8
    }

    /// Publishing failed (no answer): nothing more to wait for.
    pub fn publishing_failed(&self) {
        self.publishing
            .store(Publishing::Done as u8, Ordering::SeqCst);
    }

    /// True with `--allow-plaintext`.
    pub fn allows_plaintext(&self) -> bool {
        self.allow_plaintext
    }

    /// True once the server granted `keys`.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    fn save(&self, device: &Device) {
        if let Err(e) = self.vault.save(device) {
            crate::err_line!("chat-client: cannot save the encryption keys: {e}");
        }
    }

    // The receiving thread's side.

    /// KEY-COUNT came: after the identity, a top-up follows when the
    /// server holds too few one-time keys (the sending side decides the
    /// same way, by [`needs_top_up`]).
    pub fn key_count(&self, count: u64) {
        let next = match self.publishing.load(Ordering::SeqCst) {
            stage if stage == Publishing::Identity as u8 && needs_top_up(count) => {
                Publishing::OneTime
            }
            _ => Publishing::Done,
        };
        self.publishing.store(next as u8, Ordering::SeqCst);
        let _ = self.counts.0.try_send(count);
    }

    /// A DEVICE-KEYS came.
    pub fn device_keys(&self, device: &[u8], records: &[u8]) {
        let mut claiming = lock(&self.claiming);
        if claiming.len() < crate::store::keys::MAX_DEVICES {
            claiming.push((device.to_vec(), records.to_vec()));
        }
    }

    /// KEYS-END came: the claim is complete.
    pub fn keys_end(&self) {
        let devices = std::mem::take(&mut *lock(&self.claiming));
        let _ = self.claims.0.try_send(devices);
    }

    /// What to make of `content` from `from`.
    pub fn open_message(&self, from: &str, content: &[u8]) -> Opened {
        if !is_envelope(content) {
            let pinned = !lock(&self.pins).keys_of(from).is_empty();
            return Opened::Plain { pinned };
        }
        let Ok(envelope) = Envelope::parse(content) else {
            return Opened::Failed("a broken encrypted message".into());
        };
        let mut device = lock(&self.device);
        if envelope.to != device.identity().curve25519 {
            return Opened::NotForThisDevice;
        }
        // Who sent it: a device pinned for `from`, or one whose signed
        // identity (in a first message) names `from`.
        let sender = envelope.from.to_base64();
        {
            let mut pins = lock(&self.pins);
            match &envelope.identity {
                Some(record) => {
                    let identity = match Identity::parse(from, record) {
                        Ok(identity) if identity.curve25519 == envelope.from => identity,
                        _ => {
                            return Opened::Failed(format!(
                                "its sender is not a device of '{from}'"
                            ))
                        }
                    };
                    match pins.check(from, &identity) {
                        Seen::Changed => {
                            let _ = pins.save();
                            return Opened::Failed(format!(
                                "a device key of '{from}' changed; its messages are held until \
                                 `trust {from}`"
                            ));
                        }
                        Seen::First | Seen::NewDevice => {
                            let _ = pins.save();
                        }
                        Seen::Known => {}
                    }
                }
                None if pins.knows(from, &sender) => {}
                None => {
                    return Opened::Failed(format!(
                        "from a device of '{from}' this device does not know"
                    ))
                }
            }
            if pins.is_held(from) {
                return Opened::Failed(format!(
                    "a device key of '{from}' changed; its messages are held until `trust {from}`"
                ));
            }
        }
        match device.decrypt(&envelope) {
            Ok(plaintext) => {
                // A device of `from` this run has not sealed for yet (a
                // new one): the next message to `from` is sealed for it.
                lock(&self.recipients).heard_from(from, &envelope.from);
                // Written once per read batch (see `checkpoint`): a run
                // that stops before then reads these again from the log,
                // which the older sessions still decrypt.
                self.dirty.store(true, Ordering::SeqCst);
                Opened::Text(plaintext)
            }
            Err(e) => Opened::Failed(e.to_string()),
        }
    }

    /// Writes the vault if decrypting changed the sessions since.
    pub fn checkpoint(&self) {
        if self.dirty.swap(false, Ordering::SeqCst) {
            self.save(&lock(&self.device));
        }
    }

    // The sending side's.

    /// KEYS with this device's identity and fallback key.
    pub fn identity_frame(&self, out: &mut Vec<u8>) {
        let mut device = lock(&self.device);
        let mut records = Vec::new();
        keys::push_record(
            keys::IDENTITY,
            &device.identity_record(&self.name),
            &mut records,
        );
        keys::push_record(keys::FALLBACK, &device.fallback_record(), &mut records);
        self.save(&device);
        keys::encode_keys(device.identity().device_id().as_bytes(), &records, out);
    }

    /// KEYS with one-time keys, when the server holds fewer than it should
    /// (`held`); nothing otherwise.
    pub fn top_up_frame(&self, held: u64, out: &mut Vec<u8>) -> bool {
        if !needs_top_up(held) {
            return false;
        }
        let mut device = lock(&self.device);
        let wanted = usize::try_from(ONE_TIME_KEYS - held).unwrap_or(0);
        let mut records = Vec::new();
        for record in device.one_time_records(wanted) {
            keys::push_record(keys::ONE_TIME, &record, &mut records);
        }
        self.save(&device);
        keys::encode_keys(device.identity().device_id().as_bytes(), &records, out)
    }

    /// The next KEY-COUNT, or `None` after `wait`.
    pub async fn next_count(&self, wait: std::time::Duration) -> Option<u64> {
        crate::runtime::timeout(wait, self.counts.1.recv())
            .await?
            .ok()
    }

    /// True if `to`'s devices and ours were claimed recently enough
    /// (sealing for `to` asks the server nothing).
    pub fn has_claimed(&self, to: &str) -> bool {
        let now = Instant::now();
        let recipients = lock(&self.recipients);
        recipients.get(to, now).is_some()
            && (to == self.name || recipients.get(&self.name, now).is_some())
    }

    /// `to`'s devices if claimed recently enough (see [`Claims`]).
    pub fn known(&self, to: &str) -> Option<Recipient> {
        lock(&self.recipients).get(to, Instant::now()).cloned()
    }

    /// The ids of `to`'s pinned devices this device has a session with:
    /// a CLAIM names them, so that none of their one-time keys is used up
    /// for nothing.
    pub fn known_devices(&self, to: &str) -> Vec<String> {
        // The device before the pins, as everywhere.
        let device = lock(&self.device);
        let pins = lock(&self.pins);
        pins.devices_of(to)
            .into_iter()
            .filter(|id| {
                Curve25519PublicKey::from_base64(id).is_ok_and(|key| device.has_session(&key))
            })
            .collect()
    }

    /// Takes the answer of a CLAIM for `to` (sent by the caller), checks
    /// and pins its devices; `None` if none came within `wait`.
    pub async fn claimed(&self, to: &str, wait: std::time::Duration) -> Option<Recipient> {
        let answer = crate::runtime::timeout(wait, self.claims.1.recv())
            .await?
            .ok()?;
        let mut recipient = Recipient {
            devices: Vec::new(),
            notices: Vec::new(),
        };
        // The device before the pins, as everywhere (no lock order cycle).
        let me = lock(&self.device).identity();
        let mut pins = lock(&self.pins);
        for (_, records) in &answer {
            let Ok(records) = keys::records(records) else {
                recipient
                    .notices
                    .push(format!("'{to}' has a device with broken keys; skipped"));
                continue;
            };
            let identity = records
                .iter()
                .find(|r| r.kind == keys::IDENTITY)
                .and_then(|r| Identity::parse(to, r.bytes).ok());
            let Some(identity) = identity else {
                recipient.notices.push(format!(
                    "'{to}' has a device whose keys do not check out; skipped"
                ));
                continue;
            };
            if identity == me {
                continue;
            }
            match pins.check(to, &identity) {
                Seen::NewDevice => recipient.notices.push(format!(
                    "{to} has a new device: {}",
                    identity.ed25519.to_base64()
                )),
                Seen::Changed => recipient.notices.push(format!(
                    "A DEVICE KEY OF {to} CHANGED: messages to {to} are held until `trust {to}`"
                )),
                Seen::First | Seen::Known => {}
            }
            let key = records
                .iter()
                .find(|r| r.kind == keys::ONE_TIME || r.kind == keys::FALLBACK)
                .and_then(|r| identity.key(r.bytes).ok());
            recipient.devices.push((identity, key));
        }
        if let Err(e) = pins.save() {
            recipient
                .notices
                .push(format!("cannot save the pinned keys: {e}"));
        }
        lock(&self.recipients).insert(to, recipient.clone(), Instant::now());
        Some(recipient)
    }

    /// This user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `trust NAME`: `recipient`'s devices, as a fresh claim found them,
    /// become NAME's pinned devices, and messages to NAME go out again.
    pub fn trust(&self, name: &str, recipient: &Recipient) {
        let identities: Vec<Identity> = recipient
            .devices
            .iter()
            .map(|(identity, _)| *identity)
            .collect();
        let mut pins = lock(&self.pins);
        pins.trust(name, &identities);
        if let Err(e) = pins.save() {
            crate::err_line!("chat-client: cannot save the pinned keys: {e}");
        }
        lock(&self.recipients).insert(name, recipient.clone(), Instant::now());
    }

    /// `verify NAME`: the safety code of this user's devices (this one
    /// and those pinned for our name) and NAME's pinned devices.
    pub fn safety_code(&self, name: &str) -> String {
        let own = lock(&self.device).identity().ed25519.to_base64();
        let pins = lock(&self.pins);
        let mut mine = pins.keys_of(&self.name);
        if !mine.contains(&own) {
            mine.push(own);
            mine.sort();
        }
        let theirs = pins.keys_of(name);
        super::pins::safety_code((&self.name, &mine), (name, &theirs))
    }

    /// True while messages to `to` are held (a changed key).
    pub fn is_held(&self, to: &str) -> bool {
        lock(&self.pins).is_held(to)
    }

    /// Encrypts `plaintext` for each of `recipient`'s devices: the
    /// envelopes, as message contents.
    /// The caller writes them only after [`E2e::checkpoint`]: a key must
    /// never seal twice.
    pub fn seal(&self, recipient: &Recipient, plaintext: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let sealed = self.sealed.load(Ordering::SeqCst);
        let mut device = lock(&self.device);
        let mut envelopes = Vec::with_capacity(recipient.devices.len());
        for (identity, key) in &recipient.devices {
            let mut envelope = device
                .encrypt(identity, *key, plaintext)
                .map_err(|e| e.to_string())?;
            if matches!(envelope.message, vodozemac::olm::OlmMessage::PreKey(_))
                && device.introduce(&identity.curve25519)
            {
                // A session's first message (and one in every so many)
                // says whose device sent it (signed, for our name).
                envelope.identity = Some(self.identity_record.clone());
            }
            envelopes.push(envelope.encode(sealed));
        }
        self.dirty.store(true, Ordering::SeqCst);
        Ok(envelopes)
    }
}
