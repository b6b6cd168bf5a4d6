//! What one script line becomes: a frame in the output buffer (a
//! message, a `who`, a `history`), a line to seal first (`--e2e`), the
//! end of the script, or a refusal with its reason.

use std::borrow::Cow;

use super::command::{self, Command};
use super::render::PROGRAM_MARK;
use super::state::ChatState;
use crate::wire::v1::{self, Limits};

/// `trust` or `verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeysCommand {
    Trust,
    Verify,
}

/// What the script does after a line.
pub(super) enum Flow<'a> {
    /// A message to this user was encoded.
    Sent(Cow<'a, str>),
    /// A message to this user is to be sealed (`--e2e`).
    Seal(Cow<'a, str>, &'a str),
    /// `trust` or `verify` this user (`--e2e`).
    Keys(KeysCommand, &'a str),
    /// Nothing to send (or a `who`).
    Continue,
    Exit,
}

/// Appends the frame for one script line to `out`; `Err` says why the line
/// was refused.
pub(super) fn encode_line<'a>(
    text: &'a str,
    limits: &Limits,
    state: &ChatState,
    peer: Option<&'a str>,
    sealing: bool,
    out: &mut Vec<u8>,
) -> Result<Flow<'a>, String> {
    let parsed = match peer {
        Some(peer) => command::message_to(peer, text, limits),
        None => command::parse(text, limits),
    };
    let (to, message) = match parsed.map_err(|e| e.to_string())? {
        None => return Ok(Flow::Continue),
        Some(Command::Exit) => return Ok(Flow::Exit),
        Some(Command::Help) => {
            crate::err_line!("{}", command::help_text(PROGRAM_MARK));
            return Ok(Flow::Continue);
        }
        Some(Command::Reconnect) => return Err(command::RECONNECT_IN_SCRIPTS.into()),
        Some(Command::Trust { user }) if sealing => {
            return Ok(Flow::Keys(KeysCommand::Trust, user))
        }
        Some(Command::Verify { user }) if sealing => {
            return Ok(Flow::Keys(KeysCommand::Verify, user))
        }
        Some(Command::Trust { .. } | Command::Verify { .. }) => {
            return Err(command::E2E_ONLY.into())
        }
        Some(Command::Query { .. }) => return Err(command::QUERY_IN_SCRIPTS.into()),
        Some(Command::Who) => match state.who_unsupported() {
            Some(why) => return Err(why.to_string()),
            None => {
                v1::encode_who(out);
                state.who_sent();
                return Ok(Flow::Continue);
            }
        },
        Some(Command::History { peer, count }) => {
            if !state.inbox() {
                return Err(command::HISTORY_UNSUPPORTED.into());
            }
            let peer = peer.unwrap_or_default();
            state.history_requested();
            // A checked name and a fixed-size request: it fits.
            let _ = v1::encode_history(peer.as_bytes(), 0, count, out);
            return Ok(Flow::Continue);
        }
        // Borrowed: a million-line script allocates nothing per line.
        Some(Command::Send { to, message }) => (Cow::Borrowed(to), message),
        Some(Command::Reply { message }) => {
            let to = state
                .last_sender()
                .ok_or("nobody has sent you a message yet; nothing to reply to")?;
            (Cow::Owned(to), message)
        }
    };
    if sealing {
        return Ok(Flow::Seal(to, message));
    }
    state
        .wire()
        .encode_message(to.as_bytes(), message.as_bytes(), out)
        .map(|()| Flow::Sent(to))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        text: &str,
        state: &ChatState,
        peer: Option<&str>,
    ) -> (Result<String, String>, Vec<u8>) {
        let mut out = Vec::new();
        let flow = encode_line(text, &Limits::default(), state, peer, false, &mut out);
        let flow = flow.map(|flow| match flow {
            Flow::Sent(to) => format!("sent {to}"),
            Flow::Continue => "continue".into(),
            Flow::Exit => "exit".into(),
            Flow::Seal(to, message) => format!("seal {to} {message}"),
            Flow::Keys(command, user) => format!("{command:?} {user}"),
        });
        (flow, out)
    }

    #[test]
    fn a_send_line_is_encoded_as_one_frame_and_names_its_recipient() {
        let state = ChatState::default();
        let (flow, out) = encode("send bob hello there", &state, None);
        assert_eq!(Ok("sent bob".to_string()), flow);
        let mut expected = Vec::new();
        v1::encode_message(b"bob", b"hello there", &mut expected).unwrap();
        assert_eq!(expected, out);
    }

    #[test]
    fn with_to_every_line_is_a_message_verbatim() {
        let state = ChatState::default();
        let (flow, out) = encode("send carol not a command", &state, Some("bob"));
        assert_eq!(Ok("sent bob".to_string()), flow);
        let mut expected = Vec::new();
        v1::encode_message(b"bob", b"send carol not a command", &mut expected).unwrap();
        assert_eq!(expected, out);
    }

    #[test]
    fn lines_that_cannot_be_sent_are_refused_with_a_reason_and_encode_nothing() {
        let state = ChatState::default();
        for line in ["reply nobody yet", "reconnect", "send", "frobnicate bob"] {
            let (flow, out) = encode(line, &state, None);
            assert!(flow.is_err(), "{line}: {flow:?}");
            assert!(out.is_empty(), "{line}");
        }
        // Too long for the server's limits.
        let long = format!("send bob {}", "x".repeat(70_000));
        let (flow, out) = encode(&long, &state, None);
        assert!(flow.is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn blank_lines_continue_and_exit_ends_the_script() {
        let state = ChatState::default();
        assert_eq!(Ok("continue".to_string()), encode("", &state, None).0);
        assert_eq!(Ok("exit".to_string()), encode("exit", &state, None).0);
        // A reply goes to whoever wrote last.
        state.received_from("dave");
        assert_eq!(
            Ok("sent dave".to_string()),
            encode("reply hi", &state, None).0
        );
    }
}
