//! A message typed in the editor with `--e2e`: sealed for every device of
//! its recipient (and the sender's other devices), the recipient's keys
//! claimed through the network thread the first time; to a user without
//! keys, the editor asks before sending it unencrypted. Also the editor's
//! `trust` and `verify`, and this device's keys published after login.
//!
//! These wait for the server's answers (a claim, a KEY-COUNT) on the
//! editor's own thread, bounded by [`WAIT`]: the network thread, which
//! reads them, never waits for the editor.

use std::io::{BufRead, Write};
use std::time::Duration;

use async_channel::Sender;

use super::{local_error, notice};
use crate::client::e2e::session::E2e;
use crate::client::receipts::{Origin, Sent};
use crate::client::script_line::KeysCommand;
use crate::client::sealed::{self, Out, Sealed};
use crate::client::state::ChatState;

/// The longest the editor waits for an answer from the server.
const WAIT: Duration = Duration::from_secs(10);

/// Publishes this device's keys after login (a failure is said, and
/// messages are then refused as they cannot be sealed for us).
pub(super) fn publish(e2e: &E2e, frames: &Sender<Vec<u8>>) {
    if let Err(e) = smol::block_on(sealed::publish(Out::Channel(frames), e2e, WAIT)) {
        local_error(&format!("end-to-end encryption is off: {e}"));
    }
}

/// `trust USER` or `verify USER`.
pub(super) fn keys_command(e2e: &E2e, frames: &Sender<Vec<u8>>, command: KeysCommand, user: &str) {
    let done = sealed::keys_command(Out::Channel(frames), e2e, command, user, WAIT);
    if let Err(e) = smol::block_on(done) {
        local_error(&e);
    }
}

/// Seals and sends `message` to `to`; false if it was not sent (said).
pub(super) fn send(
    e2e: &E2e,
    state: &ChatState,
    frames: &Sender<Vec<u8>>,
    to: &str,
    message: &str,
) -> bool {
    let limits = state.limits();
    let sealed = sealed::seal(Out::Channel(frames), e2e, to, message, &limits, WAIT);
    let contents = match smol::block_on(sealed) {
        Err(why) => {
            local_error(&why);
            return false;
        }
        Ok(Sealed::Envelopes(envelopes)) => envelopes,
        Ok(Sealed::Plain) => vec![message.as_bytes().to_vec()],
        Ok(Sealed::NoKeys) => {
            if !ask(&format!(
                "{to} has published no keys: send this message unencrypted? [y/N] "
            )) {
                notice("not sent");
                return false;
            }
            vec![message.as_bytes().to_vec()]
        }
    };
    // Never on the wire before the sessions that sealed it are on disk.
    e2e.checkpoint();
    state.know(to);
    for (i, content) in contents.iter().enumerate() {
        let mut frame = Vec::new();
        if let Err(e) = state
            .wire()
            .encode_message(to.as_bytes(), content, &mut frame)
        {
            local_error(&e.to_string());
            return false;
        }
        if state.receipts() {
            // One line, one echo: the other envelopes are copies.
            let text: Box<str> = message.into();
            let origin = match i {
                0 => Origin::Typed { text },
                _ => Origin::Copy { text },
            };
            state.ledger().record(Sent {
                to: to.into(),
                origin,
            });
        }
        // A closed channel means the network thread is ending the process.
        let _ = frames.send_blocking(frame);
    }
    true
}

/// Asks a yes-or-no question on the terminal; only `y` or `yes` is yes.
fn ask(question: &str) -> bool {
    let mut err = std::io::stderr();
    let _ = err
        .write_all(question.as_bytes())
        .and_then(|()| err.flush());
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
