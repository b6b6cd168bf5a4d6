//! `chat-bench crypto`: the client's end-to-end encryption on one core,
//! no server: one device encrypts each message for another, into the
//! sealed envelope a server carries, and the other parses and decrypts
//! it (the work a message costs its two clients), in sessions already
//! started, as a conversation's messages after its first. Also the
//! envelope `chat-bench throughput --sealed` sends.

use std::time::Instant;

use super::report::{Report, Usage};
use crate::client::e2e::device::Device;
use crate::client::e2e::envelope::Envelope;
use crate::client::e2e::records::Identity;

/// `chat-bench crypto`.
#[derive(Debug, clap::Args)]
pub struct CryptoArgs {
    /// Messages to encrypt and decrypt.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub size: u16,
}

/// Where `chat-bench throughput --sealed` stamps its sequence numbers in
/// an envelope: over the recipient device's key, which the server does not
/// read (only the recipient's client would).
pub const SEALED_SLOTS_AT: usize = 5;

/// The sealed envelope of `size` bytes of plaintext as a one-way stream
/// sends it after a session's first message: a pre-key message (the other
/// side never answered), without the sender's identity record.
pub fn one_way_envelope(size: usize) -> Result<Vec<u8>, String> {
    let alice = Device::new();
    let mut bob = Device::new();
    let bob_identity =
        Identity::parse("bob", &bob.identity_record("bob")).map_err(|e| e.to_string())?;
    let record = bob.one_time_records(1).remove(0);
    let key = bob_identity.key(&record).map_err(|e| e.to_string())?;
    let mut alice = alice;
    alice
        .encrypt(&bob_identity, Some(key), b"first")
        .map_err(|e| e.to_string())?;
    let envelope = alice
        .encrypt(&bob_identity, None, &vec![b'x'; size])
        .map_err(|e| e.to_string())?;
    Ok(envelope.to_sealed())
}

/// Runs the case on the calling thread.
pub fn run(args: &CryptoArgs) -> Result<Report, String> {
    let mut alice = Device::new();
    let mut bob = Device::new();
    // The session starts as a first message would: with a claimed key.
    let bob_identity =
        Identity::parse("bob", &bob.identity_record("bob")).map_err(|e| e.to_string())?;
    let record = bob.one_time_records(1).remove(0);
    let key = bob_identity.key(&record).map_err(|e| e.to_string())?;
    let first = alice
        .encrypt(&bob_identity, Some(key), b"hello")
        .map_err(|e| e.to_string())?;
    bob.decrypt(&first).map_err(|e| e.to_string())?;
    let alice_identity = alice.identity();
    let reply = bob
        .encrypt(&alice_identity, None, b"hi")
        .map_err(|e| e.to_string())?;
    alice.decrypt(&reply).map_err(|e| e.to_string())?;

    // Each message differs, as a conversation's do: its number in its last
    // bytes, written into one buffer (making test data is not the work
    // being measured, nor is checking it).
    let mut text = vec![b'x'; usize::from(args.size)];
    let stamp = |text: &mut [u8], n: u64| {
        let stamp = n.to_be_bytes();
        let at = text.len().saturating_sub(stamp.len());
        let len = text.len() - at;
        text[at..].copy_from_slice(&stamp[stamp.len() - len..]);
    };
    let usage = Usage::start(None);
    // The sender's half, then the receiver's, timed apart.
    let started = Instant::now();
    let mut carried = Vec::with_capacity(usize::try_from(args.messages).unwrap_or(0));
    for n in 0..args.messages {
        stamp(&mut text, n);
        let envelope = alice
            .encrypt(&bob_identity, None, &text)
            .map_err(|e| e.to_string())?;
        carried.push(envelope.to_sealed());
    }
    let encrypting = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut ok = true;
    for (n, sealed) in carried.iter().enumerate() {
        let parsed = Envelope::parse(sealed).map_err(|e| e.to_string())?;
        let opened = bob.decrypt(&parsed).map_err(|e| e.to_string())?;
        stamp(&mut text, n as u64);
        ok &= opened == text;
    }
    let decrypting = started.elapsed().as_secs_f64();
    let elapsed = encrypting + decrypting;
    let rate = args.messages as f64 / elapsed;
    let mut report = Report::new("crypto");
    report.ok = ok;
    report.int("messages", args.messages);
    report.int("size", u64::from(args.size));
    report.float("msgs_per_s", rate);
    let per = |seconds: f64| seconds * 1e6 / args.messages as f64;
    report.float("encrypt_us", per(encrypting));
    report.float("decrypt_us", per(decrypting));
    report.line(format!(
        "crypto: {} messages of {} B encrypted, carried sealed and decrypted on one core \
         in {elapsed:.2} s: {rate:.0} msgs/s (encrypt {:.1} µs, decrypt {:.1} µs each){}",
        args.messages,
        args.size,
        per(encrypting),
        per(decrypting),
        if ok {
            ""
        } else {
            " (SOME DID NOT DECRYPT TO THEIR TEXT)"
        }
    ));
    usage.finish(&mut report);
    Ok(report)
}
