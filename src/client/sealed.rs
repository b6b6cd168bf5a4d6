//! A script's sending side of `--e2e`: this device's keys published at
//! login, and each `send` line sealed into one envelope per device of its
//! recipient (claiming the recipient's keys the first time), or refused
//! with its reason: a user without keys (unless `--allow-plaintext`), a
//! user held for a changed key, an envelope over the server's limit.

use std::time::Duration;

use super::e2e::session::{E2e, Recipient};
use super::script_line::KeysCommand;
use super::state::ChatState;
use crate::net::transport::Transport;

/// Where this module's frames go: the socket (a script's sender writes
/// it), or the editor's channel to its network thread.
#[derive(Clone, Copy)]
pub enum Out<'a> {
    Socket(&'a Transport),
    Channel(&'a async_channel::Sender<Vec<u8>>),
}

impl Out<'_> {
    async fn write(&self, frame: Vec<u8>) -> Result<(), String> {
        match self {
            Out::Socket(transport) => transport.write_all(&frame).await.map_err(|e| e.to_string()),
            Out::Channel(frames) => frames
                .send(frame)
                .await
                .map_err(|_| "the connection is closed".to_string()),
        }
    }
}
use crate::wire::v1::{self, keys, Limits};

/// What became of a `send` line.
pub enum Sealed {
    /// One message content per device of the recipient.
    Envelopes(Vec<Vec<u8>>),
    /// The recipient has no keys, and `--allow-plaintext` says send it.
    Plain,
    /// The recipient has no keys, and nothing says send it in the clear.
    NoKeys,
}

/// Why a line to a user without keys is not sent.
pub fn no_keys(to: &str) -> String {
    format!(
        "'{to}' has published no keys (not a registered user with an --e2e client); \
         not sent (--allow-plaintext sends such messages unencrypted)"
    )
}

/// Publishes this device's identity and fallback key, then tops up its
/// one-time keys; each KEYS answered within `wait`.
pub async fn publish(out: Out<'_>, e2e: &E2e, wait: Duration) -> Result<(), String> {
    let published = publish_keys(out, e2e, wait).await;
    if published.is_err() {
        e2e.publishing_failed();
    }
    published
}

async fn publish_keys(out: Out<'_>, e2e: &E2e, wait: Duration) -> Result<(), String> {
    let mut frame = Vec::new();
    e2e.identity_frame(&mut frame);
    out.write(std::mem::take(&mut frame)).await?;
    let held = e2e
        .next_count(wait)
        .await
        .ok_or("the server did not take this device's keys")?;
    if e2e.top_up_frame(held, &mut frame) {
        out.write(frame).await?;
        e2e.next_count(wait)
            .await
            .ok_or("the server did not take this device's one-time keys")?;
    }
    Ok(())
}

/// Seals `message` for `to`'s devices, claiming their keys on
/// `transport` the first time; `Err` says why the line is not sent.
pub async fn seal(
    out: Out<'_>,
    e2e: &E2e,
    to: &str,
    message: &str,
    limits: &Limits,
    wait: Duration,
) -> Result<Sealed, String> {
    let recipient = match e2e.known(to) {
        Some(recipient) => recipient,
        None => claim(out, e2e, to, wait).await?,
    };
    if e2e.is_held(to) {
        return Err(format!(
            "a device key of '{to}' changed: messages to {to} are held until `trust {to}`"
        ));
    }
    if recipient.devices.is_empty() {
        if e2e.allows_plaintext() {
            return Ok(Sealed::Plain);
        }
        return Ok(Sealed::NoKeys);
    }
    // The sender's own other devices get a copy too, sent the same way:
    // to `to`, so that it is logged as sent to `to` for them, and every
    // device reads only the envelope for it.
    let me = e2e.name().to_string();
    let own = match (me == to, e2e.known(&me)) {
        (true, _) => None,
        (false, Some(own)) => Some(own),
        (false, None) => Some(claim(out, e2e, &me, wait).await?),
    };
    let mut envelopes = e2e.seal(&recipient, message.as_bytes())?;
    if let Some(own) = own.filter(|own| !own.devices.is_empty()) {
        envelopes.extend(e2e.seal(&own, message.as_bytes())?);
    }
    let limit = usize::from(limits.max_message);
    if envelopes.iter().any(|envelope| envelope.len() > limit) {
        return Err(format!(
            "too long to send encrypted: the server takes {limit} bytes a message, \
             and encryption adds about 200 bytes (about 350 to a device's first message)"
        ));
    }
    Ok(Sealed::Envelopes(envelopes))
}

/// `trust USER` or `verify USER`.
pub async fn keys_command(
    out: Out<'_>,
    e2e: &E2e,
    command: KeysCommand,
    user: &str,
    wait: Duration,
) -> Result<(), String> {
    // The devices as they are now, asked of the server afresh.
    let recipient = claim(out, e2e, user, wait).await?;
    match command {
        KeysCommand::Trust => {
            e2e.trust(user, &recipient);
            crate::err_line!(
                "* trusted {} device(s) of {user}; messages to {user} go out again",
                recipient.devices.len()
            );
        }
        KeysCommand::Verify => {
            // Both users' devices: this user's other devices too.
            let me = e2e.name().to_string();
            if me != user {
                claim(out, e2e, &me, wait).await?;
            }
            let _ = crate::out_line!("safety code of {me} and {user}: {}", e2e.safety_code(user));
        }
    }
    Ok(())
}

/// Claims `to`'s keys and checks them (new devices said on stderr).
async fn claim(out: Out<'_>, e2e: &E2e, to: &str, wait: Duration) -> Result<Recipient, String> {
    let mut frame = Vec::new();
    if !keys::encode_claim(to.as_bytes(), &e2e.known_devices(to), &mut frame) {
        return Err("name too long".into());
    }
    out.write(frame).await?;
    let recipient = e2e
        .claimed(to, wait)
        .await
        .ok_or_else(|| format!("the server did not answer for '{to}''s keys"))?;
    for notice in &recipient.notices {
        crate::err_line!("* {notice}");
    }
    Ok(recipient)
}

/// Seals a `send` line `(to, message)` into `out`: how many messages it
/// became (one per device of `to`, or one plain with
/// `--allow-plaintext`); `Err` says why the line is not sent.
pub async fn seal_line(
    transport: &Transport,
    state: &ChatState,
    e2e: &E2e,
    (to, message): (&str, &str),
    limits: &Limits,
    wait: Duration,
    out: &mut Vec<u8>,
) -> Result<usize, String> {
    match seal(Out::Socket(transport), e2e, to, message, limits, wait).await? {
        Sealed::Envelopes(envelopes) => {
            for envelope in &envelopes {
                v1::encode_message(to.as_bytes(), envelope, out).map_err(|e| e.to_string())?;
            }
            Ok(envelopes.len())
        }
        Sealed::NoKeys => Err(no_keys(to)),
        Sealed::Plain => {
            state
                .wire()
                .encode_message(to.as_bytes(), message.as_bytes(), out)
                .map_err(|e| e.to_string())?;
            Ok(1)
        }
    }
}
