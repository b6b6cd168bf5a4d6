//! What a line typed in the editor does: a command, or a message handed
//! to the network thread (recorded in the ledger first, with receipts).

use async_channel::Sender;

use super::{local_error, notice, RECONNECT_OFFER};
use crate::client::command::{self, Command};
use crate::client::receipts::{Origin, Sent};
use crate::client::render::{Renderer, NOTICE_MARK};
use crate::client::script_line::KeysCommand;
use crate::client::state::ChatState;
use crate::wire::v1;

/// What a typed line did.
pub(super) enum Handled {
    /// Nothing more to do.
    Done,
    /// A message went to `to`.
    Sent { to: String },
    /// The user wants to connect again.
    Reconnect,
    /// The user wants to leave.
    Leave,
}

/// What a typed line acts on.
pub(super) struct LineContext<'a> {
    pub(super) state: &'a ChatState,
    /// Where frames for the network thread go.
    pub(super) frames: &'a Sender<Vec<u8>>,
    /// There is no connection to send on.
    pub(super) lost: bool,
    /// How our own messages are echoed.
    pub(super) echo: &'a Renderer,
}

/// Acts on one typed line. `peer` is who lines that are not commands go
/// to (`--to`, `/query`), changed by `/query`.
pub(super) fn handle_line(line: &str, peer: &mut Option<String>, cx: &LineContext<'_>) -> Handled {
    let LineContext {
        state,
        frames,
        lost,
        echo,
    } = *cx;
    let parsed = command::parse_for(line, &state.limits(), peer.as_deref());
    if lost
        && matches!(
            parsed,
            Ok(Some(
                Command::Send { .. }
                    | Command::Reply { .. }
                    | Command::Who
                    | Command::History { .. }
            ))
        )
    {
        local_error("not connected; nothing was sent");
        notice(RECONNECT_OFFER);
        return Handled::Done;
    }
    let (to, message) = match parsed {
        Ok(None) => return Handled::Done,
        Ok(Some(Command::Exit)) => return Handled::Leave,
        Ok(Some(Command::Reconnect)) => return Handled::Reconnect,
        Ok(Some(Command::Query { to })) => {
            match to {
                Some(to) => notice(&format!(
                    "talking to {to}: every line that is not a command goes to {to} \
                     (/query alone ends it)"
                )),
                None if peer.is_some() => notice("back to commands"),
                None => {}
            }
            *peer = to.map(str::to_string);
            return Handled::Done;
        }
        Ok(Some(Command::Help)) => {
            crate::err_line!("{}", command::help_text(NOTICE_MARK));
            return Handled::Done;
        }
        Ok(Some(command @ (Command::Trust { .. } | Command::Verify { .. }))) => {
            match (state.e2e().filter(|e2e| e2e.is_active()), command) {
                (Some(e2e), Command::Trust { user }) => {
                    super::sealed_line::keys_command(&e2e, frames, KeysCommand::Trust, user);
                }
                (Some(e2e), Command::Verify { user }) => {
                    super::sealed_line::keys_command(&e2e, frames, KeysCommand::Verify, user);
                }
                _ => local_error(command::E2E_ONLY),
            }
            return Handled::Done;
        }
        Ok(Some(Command::Who)) => {
            match state.who_unsupported() {
                Some(why) => local_error(why),
                None => {
                    let mut frame = Vec::new();
                    v1::encode_who(&mut frame);
                    state.who_sent();
                    let _ = frames.send_blocking(frame);
                }
            }
            return Handled::Done;
        }
        Ok(Some(Command::History { peer, count })) => {
            if !state.inbox() {
                local_error(command::HISTORY_UNSUPPORTED);
                return Handled::Done;
            }
            let peer = peer.unwrap_or_default();
            state.history_requested();
            let mut frame = Vec::new();
            // A checked name and a fixed-size request: it fits.
            let _ = v1::encode_history(peer.as_bytes(), 0, count, &mut frame);
            let _ = frames.send_blocking(frame);
            return Handled::Done;
        }
        Ok(Some(Command::Send { to, message })) => (to.to_string(), message),
        Ok(Some(Command::Reply { message })) => match state.last_sender() {
            Some(to) => (to, message),
            None => {
                local_error("nobody has sent you a message yet; nothing to reply to");
                return Handled::Done;
            }
        },
        Err(e) => {
            local_error(&e.to_string());
            return Handled::Done;
        }
    };
    if let Some(e2e) = state.e2e().filter(|e2e| e2e.is_active()) {
        if !super::sealed_line::send(&e2e, state, frames, &to, message) {
            return Handled::Done;
        }
        return sent(state, echo, to, message);
    }
    let mut frame = Vec::new();
    let wire = state.wire();
    if let Err(e) = wire.encode_message(to.as_bytes(), message.as_bytes(), &mut frame) {
        local_error(&e.to_string());
        return Handled::Done;
    }
    state.know(&to);
    if state.receipts() {
        // Recorded before it is handed on, so the ledger's order is the
        // order the network thread writes in.
        state.ledger().record(Sent {
            to: to.as_str().into(),
            origin: Origin::Typed {
                text: message.into(),
            },
        });
    }
    // A closed channel means the network thread is ending the process.
    let _ = frames.send_blocking(frame);
    sent(state, echo, to, message)
}

/// A message handed on: without receipts nothing will say it was
/// accepted, so it is echoed as sent now.
fn sent(state: &ChatState, echo: &Renderer, to: String, message: &str) -> Handled {
    if !state.receipts() {
        let mut line = String::new();
        echo.own_message(&to, message, None, &mut line);
        crate::err_line!("{}", line.trim_end_matches('\n'));
    }
    Handled::Sent { to }
}
