//! The `keys` extension: a registered user's devices publish the public
//! keys end-to-end encryption needs (an identity, one-time keys, a
//! fallback key), and a sender claims one key per device of a user.
//!
//! The server keeps these as opaque records: what a key means, and
//! whether its signature holds, is for the clients (they hold the
//! cryptography; the server only keeps and hands out). A record is
//! `kind (u8) len (u16) bytes`, one after another in a frame's second
//! field:
//!
//! | kind | what | bytes |
//! |---|---|---|
//! | `i` | the device's identity (its keys and their signature) | 1 to [`MAX_IDENTITY`] |
//! | `o` | a one-time key (signed), handed out once | 1 to [`MAX_KEY`] |
//! | `f` | the fallback key (signed), handed out when no one-time key is left | 1 to [`MAX_KEY`] |

use super::{encode_pair, OP_KEYS, OP_KEYS_END, OP_KEY_COUNT};

/// Record kinds.
pub const IDENTITY: u8 = b'i';
pub const ONE_TIME: u8 = b'o';
pub const FALLBACK: u8 = b'f';

/// The longest device id (the first field of KEYS and DEVICE-KEYS).
pub const MAX_DEVICE_ID: usize = 64;
/// The longest identity record.
pub const MAX_IDENTITY: usize = 1024;
/// The longest one-time or fallback key record.
pub const MAX_KEY: usize = 256;
/// One-time keys one KEYS frame may carry.
pub const MAX_KEYS_PER_FRAME: usize = 100;
/// Device ids a CLAIM may name as known (a name has at most this many
/// devices on the server).
pub const MAX_KNOWN: usize = 32;
/// The longest second field of a CLAIM: [`MAX_KNOWN`] device ids, one a
/// line.
pub const MAX_CLAIM_KNOWN: usize = MAX_KNOWN * (MAX_DEVICE_ID + 1);

/// One record of a KEYS or DEVICE-KEYS frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub bytes: &'a [u8],
}

/// Why a frame's records are not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRecords(pub &'static str);

/// The records of `field`, checked: known kinds, lengths within the
/// limits, at most one identity and one fallback key, at most
/// [`MAX_KEYS_PER_FRAME`] one-time keys, nothing left over.
pub fn records(field: &[u8]) -> Result<Vec<Record<'_>>, BadRecords> {
    let mut found = Vec::new();
    let (mut identities, mut fallbacks, mut one_time) = (0, 0, 0);
    let mut rest = field;
    while !rest.is_empty() {
        let [kind, hi, lo, tail @ ..] = rest else {
            return Err(BadRecords("a record is cut short"));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if len == 0 || len > tail.len() {
            return Err(BadRecords("a record's length is wrong"));
        }
        let (bytes, after) = tail.split_at(len);
        let limit = match *kind {
            IDENTITY => {
                identities += 1;
                MAX_IDENTITY
            }
            ONE_TIME => {
                one_time += 1;
                MAX_KEY
            }
            FALLBACK => {
                fallbacks += 1;
                MAX_KEY
            }
            _ => return Err(BadRecords("a record of an unknown kind")),
        };
        if len > limit {
            return Err(BadRecords("a record is too long"));
        }
        if identities > 1 || fallbacks > 1 || one_time > MAX_KEYS_PER_FRAME {
            return Err(BadRecords("too many records of one kind"));
        }
        found.push(Record { kind: *kind, bytes });
        rest = after;
    }
    Ok(found)
}

/// Appends one record to a field being built.
pub fn push_record(kind: u8, bytes: &[u8], field: &mut Vec<u8>) {
    field.push(kind);
    // Records are bounded by the limits above, far under 64 KiB.
    field.extend_from_slice(&(bytes.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    field.extend_from_slice(bytes);
}

/// Appends KEYS: `device` publishes `records` (built with [`push_record`]).
pub fn encode_keys(device: &[u8], records: &[u8], out: &mut Vec<u8>) -> bool {
    encode_pair(OP_KEYS, device, records, out).is_ok()
}

/// Appends CLAIM: one key per device of `name`, except the devices in
/// `known` (ids the claimer has sessions with already), which are listed
/// with their identity alone; no key of theirs is used up. At most
/// [`MAX_KNOWN`] of them are sent.
pub fn encode_claim<S: AsRef<[u8]>>(name: &[u8], known: &[S], out: &mut Vec<u8>) -> bool {
    let mut field = Vec::new();
    for id in known.iter().take(MAX_KNOWN) {
        let id = id.as_ref();
        if id.is_empty() || id.len() > MAX_DEVICE_ID || id.contains(&b'\n') {
            continue;
        }
        if !field.is_empty() {
            field.push(b'\n');
        }
        field.extend_from_slice(id);
    }
    encode_pair(super::OP_CLAIM, name, &field, out).is_ok()
}

/// The device ids of a CLAIM's second field (checked by the decoder to be
/// at most [`MAX_CLAIM_KNOWN`] bytes; empty lines are skipped).
pub fn known_devices(field: &[u8]) -> impl Iterator<Item = &[u8]> {
    field
        .split(|&b| b == b'\n')
        .filter(|id| !id.is_empty())
        .take(MAX_KNOWN)
}

/// Appends KEY-COUNT: the server holds `count` one-time keys of `device`.
pub fn encode_key_count(device: &[u8], count: u64, out: &mut Vec<u8>) {
    // A device id is at most 64 bytes: both fields fit.
    let _ = encode_pair(OP_KEY_COUNT, device, &count.to_be_bytes(), out);
}

/// Appends DEVICE-KEYS: one device's identity and the key claimed for it.
pub fn encode_device_keys(device: &[u8], records: &[u8], out: &mut Vec<u8>) {
    // Bounded by the limits above: an identity and one key.
    let _ = encode_pair(super::OP_DEVICE_KEYS, device, records, out);
}

/// Appends KEYS-END: `devices` DEVICE-KEYS frames of `name` came before.
pub fn encode_keys_end(name: &[u8], devices: u64, out: &mut Vec<u8>) {
    // A name is at most 255 bytes: both fields fit.
    let _ = encode_pair(OP_KEYS_END, name, &devices.to_be_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut field = Vec::new();
        push_record(IDENTITY, b"me", &mut field);
        push_record(ONE_TIME, b"k1", &mut field);
        push_record(ONE_TIME, b"k2", &mut field);
        push_record(FALLBACK, b"fb", &mut field);
        let parsed = records(&field).unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(
            parsed[2],
            Record {
                kind: ONE_TIME,
                bytes: b"k2"
            }
        );
        assert_eq!(records(b"").unwrap(), vec![]);
    }

    #[test]
    fn hostile_records_are_refused() {
        // Cut short, zero length, past the end, unknown kind.
        assert!(records(b"i\x00").is_err());
        assert!(records(b"i\x00\x00").is_err());
        assert!(records(b"i\x00\x05abc").is_err());
        assert!(records(b"x\x00\x01a").is_err());
        // Two identities; a key over its limit.
        let mut two = Vec::new();
        push_record(IDENTITY, b"a", &mut two);
        push_record(IDENTITY, b"b", &mut two);
        assert!(records(&two).is_err());
        let mut long = Vec::new();
        push_record(ONE_TIME, &[7; MAX_KEY + 1], &mut long);
        assert!(records(&long).is_err());
        let mut many = Vec::new();
        for _ in 0..=MAX_KEYS_PER_FRAME {
            push_record(ONE_TIME, b"k", &mut many);
        }
        assert!(records(&many).is_err());
    }
}
