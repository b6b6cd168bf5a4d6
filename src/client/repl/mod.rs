//! Interactive mode: a rustyline editor on this thread, the network on
//! another.
//!
//! `readline` blocks, so the socket is served by its own thread running a
//! small smol loop: a writer task fed through a channel by the editor, and
//! the receiving loop, which prints incoming frames above the prompt through
//! rustyline's external printer without disturbing the half-typed line.
//! When the connection is lost, the network thread says why and offers to
//! connect again; Enter on an empty line (or `reconnect`) does, with a new
//! network thread, and the editor goes on with its line and history.
//!
//! Both threads print only whole lines, each with one `write`, so output
//! from the two never mixes within a line (a terminal serialises whole
//! writes); lines that are not messages start with `* `.
//!
//! History is appended, never rewritten, so several clients can share one
//! file. Names offered by completion from earlier runs come from a
//! per-server list beside it (`HISTORY.recipients`, lines of `SERVER NAME`):
//! a name used on one server is not offered on another.

mod complete;
mod history;
mod line;
mod network;
mod sealed_line;

use crate::exit_codes::Status;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use async_channel::Sender;
use rustyline::config::{Behavior, Config};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Editor, Event, EventContext, EventHandler, ExternalPrinter,
    KeyEvent, RepeatCount,
};

use super::negotiation::{await_login, login_channel, pending_notice, Login, Negotiation};
use super::receipts::unconfirmed_notice;
use super::render::{Renderer, NOTICE_MARK};
use super::state::ChatState;
use super::wire::ClientWire;
use super::Greeting;

use crate::net::transport::Transport;
use complete::ChatHelper;
use history::{append_history, load_history, Recipients};
use line::{handle_line, Handled, LineContext};
use network::{network, ReplSink};

/// Most history entries kept.
const HISTORY_SIZE: usize = 1000;

/// Lines a paste may hold before the editor asks whether to send them.
const PASTE_WITHOUT_ASKING: usize = 5;

/// What Ctrl-C at an empty prompt says.
pub const HOW_TO_LEAVE: &str = "to leave, type exit or press Ctrl-D";

/// What the editor offers when the connection is lost.
pub const RECONNECT_OFFER: &str =
    "not connected: press Enter (or type reconnect) to connect again, or exit to leave";

/// Connects again for the editor: a new connection and the greeting to
/// send on it, or why there is none.
pub type Reconnect<'a> = &'a dyn Fn() -> Result<(Transport, Greeting), String>;

/// Settings for one interactive session.
pub struct ReplOptions {
    /// Our username (for the prompt).
    pub username: String,
    /// `HOST:PORT`, for the greeting.
    pub server: String,
    /// History file, if any.
    pub history: Option<PathBuf>,
    /// How long to wait for the server after `exit`.
    pub drain_timeout: Duration,
    /// Show users joining and leaving.
    pub show_presence: bool,
    /// How frames are shown.
    pub renderer: Renderer,
    /// The first login said how to get help; reconnections do not again.
    pub greeted: AtomicBool,
    /// Lines that are not commands go to this user (`--to`) from the start.
    pub peer: Option<String>,
    /// A refusal for want of a password is not shown: the editor asks for
    /// one next.
    pub asks_password: bool,
}

/// The names messaged, whichever thread holds them (a poisoned lock only
/// means a thread panicked mid-append; the set is still usable).
pub(super) fn lock(recipients: &Mutex<Recipients>) -> std::sync::MutexGuard<'_, Recipients> {
    recipients.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prints a notice line from the editor's thread: marked, one write.
fn notice(text: &str) {
    crate::err_line!("{NOTICE_MARK}{text}");
}

/// Prints a local error line from the editor's thread.
fn local_error(text: &str) {
    crate::err_line!("{NOTICE_MARK}error: {text}");
}

/// Runs the interactive session over `transport`, after the handshake and
/// HELLO in `greeting`; `reconnect` makes the next connection when the user
/// asks for one. Returns the exit status.
pub fn run(
    transport: Transport,
    greeting: Greeting,
    options: ReplOptions,
    state: Arc<ChatState>,
    reconnect: Reconnect<'_>,
) -> Status {
    let (mut editor, ctrl_c) = match build_editor(&state) {
        Ok(built) => built,
        Err(e) => {
            crate::err_line!("chat-client: cannot start the line editor: {e}");
            return Status::Failure;
        }
    };
    let recipients = options
        .history
        .as_deref()
        .map(|path| Recipients::open(path, &options.server));
    if let Some(path) = &options.history {
        load_history(&mut editor, path);
    }
    for name in recipients.iter().flat_map(|r| &r.names) {
        state.know_from_history(name);
    }
    // Shared with the network thread, which records a name once a message
    // to it is accepted.
    let recipients = recipients.map(|r| Arc::new(Mutex::new(r)));

    let link = match Link::start(
        &mut editor,
        transport,
        greeting,
        &options,
        &state,
        &recipients,
    ) {
        Ok(link) => link,
        Err(e) => {
            crate::err_line!("chat-client: cannot start the network thread: {e}");
            return Status::Failure;
        }
    };
    // Otherwise the server closed the connection during the login: the
    // network thread says why and has the status.
    if !link.editing {
        return link.finish();
    }
    let mut session = Session {
        editor: &mut editor,
        ctrl_c: &ctrl_c,
        recipients: &recipients,
        state: &state,
        link,
        reconnect,
    };
    session.edit(&options);
    session.link.phase.editing_done();
    session.link.finish()
}

/// One connection as the editor sees it: where typed frames go, and the
/// network thread serving it.
struct Link {
    frames: Sender<Vec<u8>>,
    phase: Arc<Phase>,
    network: thread::JoinHandle<Status>,
    /// The login was confirmed and the editor may send.
    editing: bool,
}

impl Link {
    /// Starts a network thread for `transport`, sends the greeting and
    /// waits for the login, saying how it went.
    fn start(
        editor: &mut Editor<ChatHelper, FileHistory>,
        transport: Transport,
        mut greeting: Greeting,
        options: &ReplOptions,
        state: &Arc<ChatState>,
        recipients: &Option<Arc<Mutex<Recipients>>>,
    ) -> io::Result<Link> {
        let printer = editor
            .create_external_printer()
            .ok()
            .map(|p| Box::new(p) as Box<dyn ExternalPrinter + Send>);
        let sink = ReplSink::new(
            options.renderer,
            printer,
            options.show_presence,
            recipients.clone(),
        );
        let (frames, outgoing) = async_channel::unbounded::<Vec<u8>>();
        // The handshake goes first; the channel is open, so this cannot fail.
        let _ = frames.send_blocking(std::mem::take(&mut greeting.bytes));
        let (told, outcome) = login_channel();
        let negotiation = Negotiation {
            quiet_password_required: options.asks_password,
            ..Negotiation::new(told, &greeting)
        };
        let phase = Arc::new(Phase::default());
        let network = {
            let state = Arc::clone(state);
            let phase = Arc::clone(&phase);
            let timing = (options.drain_timeout, greeting.pace);
            thread::Builder::new()
                .name(crate::runtime::thread_name("net"))
                .spawn(move || {
                    network(
                        transport,
                        outgoing,
                        (sink, negotiation),
                        &state,
                        &phase,
                        timing,
                    )
                })?
        };
        let pending = |reason, wait| notice(&pending_notice(reason, wait));
        let login = smol::block_on(await_login(&outcome, greeting.timeout, pending));
        let editing = greet(login, options, state, &greeting) && phase.start_editing();
        if let Some(e2e) = state.e2e().filter(|e2e| e2e.is_active() && editing) {
            sealed_line::publish(&e2e, &frames);
        }
        Ok(Link {
            frames,
            phase,
            network,
            editing,
        })
    }

    /// Ends the connection (if still open) and returns its status.
    fn finish(self) -> Status {
        drop(self.frames);
        self.network.join().unwrap_or(Status::Failure)
    }
}

/// The editor, configured, with completion and the Ctrl-C handler.
fn build_editor(
    state: &Arc<ChatState>,
) -> rustyline::Result<(Editor<ChatHelper, FileHistory>, CtrlC)> {
    let mut config = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .max_history_size(HISTORY_SIZE)?;
    if io::stdin().is_terminal() {
        // Prompt and editing on the terminal even when stdout is a pipe.
        config = config.behavior(Behavior::PreferTerm);
    }
    let mut editor = Editor::with_config(config.build())?;
    editor.set_helper(Some(ChatHelper::new(Arc::clone(state))));
    let ctrl_c = CtrlC::default();
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(ctrl_c.clone())),
    );
    Ok((editor, ctrl_c))
}

/// Where the session is, as both threads see it: which of them ends it
/// decides who reports the end and how.
#[derive(Debug, Default)]
pub(super) struct Phase(AtomicU8);

impl Phase {
    const LOGIN: u8 = 0;
    const EDITING: u8 = 1;
    const DONE: u8 = 2;
    const ENDED_BEFORE_EDITING: u8 = 3;
    const LOST: u8 = 4;

    /// The editor is about to start; false if the connection already
    /// ended (then the network thread has the exit status).
    fn start_editing(&self) -> bool {
        self.0
            .compare_exchange(
                Self::LOGIN,
                Self::EDITING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// The user left the editor: the close that follows is expected.
    fn editing_done(&self) {
        self.0.store(Self::DONE, Ordering::SeqCst);
    }

    /// True once the user left the editor.
    pub(super) fn done(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::DONE
    }

    /// The connection was lost while editing; the editor may connect
    /// again.
    pub(super) fn lost(&self) {
        let _ = self.0.compare_exchange(
            Self::EDITING,
            Self::LOST,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The connection ended, whenever it did: the editor may connect again.
    fn mark_lost(&self) {
        self.0.store(Self::LOST, Ordering::SeqCst);
    }

    /// True once the connection was lost while editing.
    fn is_lost(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::LOST
    }

    /// The connection ended: true if the editor never started (and now
    /// never will), so the ending can be left to the main thread instead of
    /// ending the process from under a running editor.
    pub(super) fn end_before_editing(&self) -> bool {
        self.0
            .compare_exchange(
                Self::LOGIN,
                Self::ENDED_BEFORE_EDITING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }
}

/// Says how the login went; false if the server closed the connection.
fn greet(
    login: Option<Login>,
    options: &ReplOptions,
    state: &ChatState,
    greeting: &Greeting,
) -> bool {
    let (server, name) = (&options.server, &options.username);
    let wait = greeting.timeout;
    let proved = if state.authenticated() {
        ", password accepted"
    } else {
        ""
    };
    match login {
        Some(Login::Extended) => {
            match state.online_count() {
                Some(n) => notice(&format!("connected as {name} ({n} online{proved})")),
                None if proved.is_empty() => notice(&format!("connected as {name}")),
                None => notice(&format!("connected as {name} (password accepted)")),
            }
            if let Some(text) = super::password_notice(state, greeting) {
                notice(text);
            }
        }
        Some(Login::V1) if state.wire() == ClientWire::Gob => notice(&format!(
            "connected to {server} as {name} (gob wire: no online list)"
        )),
        Some(Login::V1) => notice(&format!(
            "connected to {server} as {name} (a v1 server: login not confirmed, no online list)"
        )),
        Some(Login::Silent { pending }) if state.wire() == ClientWire::Gob => notice(&format!(
            "connected to {server} as {name}; {}",
            super::silent_server_notice(wait, state.wire(), pending)
        )),
        // Our HELLO asked for receipts: only a pmchat server fits, and one
        // that does not confirm the login is not one to type into.
        Some(Login::Silent { pending }) => {
            notice(&super::silent_server_notice(wait, state.wire(), pending));
            state.login_unanswered();
            return false;
        }
        None | Some(Login::Pending(..)) => return false,
    }
    if !options.greeted.swap(true, Ordering::Relaxed) {
        notice("type 'help' for commands");
    }
    true
}

/// What the editing loop works with.
struct Session<'a> {
    editor: &'a mut Editor<ChatHelper, FileHistory>,
    ctrl_c: &'a CtrlC,
    recipients: &'a Option<Arc<Mutex<Recipients>>>,
    state: &'a Arc<ChatState>,
    /// The current connection.
    link: Link,
    reconnect: Reconnect<'a>,
}

impl Session<'_> {
    /// Reads and acts on lines until the user leaves.
    fn edit(&mut self, options: &ReplOptions) {
        let mut peer = options.peer.clone();
        loop {
            // Talking to one user, the prompt says whom.
            let prompt = match &peer {
                Some(to) => format!("{}→{to}> ", options.username),
                None => format!("{}> ", options.username),
            };
            match self.editor.readline(&prompt) {
                // A paste of several lines comes as one: each line is a
                // command of its own, as in irssi, and many need a yes.
                Ok(line) if line.contains(['\n', '\r']) => {
                    let lines: Vec<&str> = line
                        .split(['\n', '\r'])
                        .filter(|line| !line.trim().is_empty())
                        .collect();
                    if lines.len() > PASTE_WITHOUT_ASKING && !self.confirm_paste(lines.len()) {
                        notice("nothing of the paste was sent");
                        continue;
                    }
                    for line in lines {
                        if self.act_on(line, options, &mut peer) {
                            return;
                        }
                    }
                }
                Ok(line) => {
                    if self.act_on(&line, options, &mut peer) {
                        return;
                    }
                }
                // Ctrl-C: the editor has already dropped the line; at an
                // empty prompt, people pressing it usually want out.
                Err(ReadlineError::Interrupted) => {
                    if self.ctrl_c.at_empty_prompt() {
                        notice(HOW_TO_LEAVE);
                    }
                }
                Err(ReadlineError::Eof) => return,
                Err(e) => {
                    crate::err_line!("chat-client: cannot read input: {e}");
                    self.state.fail();
                    return;
                }
            }
        }
    }

    /// Asks before a paste of `count` lines goes out.
    fn confirm_paste(&mut self, count: usize) -> bool {
        let question = format!("{NOTICE_MARK}send {count} pasted lines? [y/N] ");
        matches!(
            self.editor.readline(&question).as_deref().map(str::trim),
            Ok("y" | "Y" | "yes")
        )
    }

    /// Acts on one line as typed; true when the user leaves.
    fn act_on(&mut self, line: &str, options: &ReplOptions, peer: &mut Option<String>) -> bool {
        if let Some(path) = &options.history {
            // `exit` would only ever be recalled by mistake.
            if !matches!(line.trim(), "" | "exit" | "quit" | "/quit") {
                let _ = self.editor.add_history_entry(line);
                append_history(self.editor, path);
            }
        }
        let lost = self.link.phase.is_lost();
        let handled = if lost && line.trim().is_empty() {
            Handled::Reconnect
        } else {
            let cx = LineContext {
                state: self.state,
                frames: &self.link.frames,
                lost,
                echo: &options.renderer,
            };
            handle_line(line, peer, &cx)
        };
        match handled {
            Handled::Leave => return true,
            Handled::Reconnect if !lost => notice("already connected"),
            Handled::Reconnect => self.connect_again(options),
            // With receipts the name is remembered once the message is
            // accepted (by the network thread).
            Handled::Sent { to } if !self.state.receipts() => {
                if let Some(recipients) = self.recipients {
                    lock(recipients).used(&to);
                }
            }
            Handled::Sent { .. } => {}
            Handled::Done => {}
        }
        false
    }
}

impl Session<'_> {
    /// Replaces the lost connection with a new one, logging in again.
    fn connect_again(&mut self, options: &ReplOptions) {
        notice(&format!("connecting to {}…", options.server));
        let (transport, greeting) = match (self.reconnect)() {
            Ok(connection) => connection,
            Err(e) => {
                local_error(&e);
                notice(RECONNECT_OFFER);
                return;
            }
        };
        self.state.new_connection();
        // Typed after the network thread took stock of what was in flight.
        if let Some(text) = unconfirmed_notice(&self.state.ledger().abandon()) {
            notice(&text);
        }
        let link = match Link::start(
            self.editor,
            transport,
            greeting,
            options,
            self.state,
            self.recipients,
        ) {
            Ok(link) => link,
            Err(e) => {
                local_error(&format!("cannot start the network thread: {e}"));
                return;
            }
        };
        let old = std::mem::replace(&mut self.link, link);
        old.finish();
        if !self.link.editing {
            // Refused (the name may still be held by our stale session):
            // the network thread said why; Enter tries again.
            self.link.phase.mark_lost();
            notice(RECONNECT_OFFER);
        }
    }
}

/// Remembers whether Ctrl-C was pressed on an empty line.
#[derive(Clone, Default)]
struct CtrlC(Arc<AtomicBool>);

impl CtrlC {
    fn at_empty_prompt(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        self.0.store(ctx.line().is_empty(), Ordering::SeqCst);
        Some(Cmd::Interrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_ends_before_the_editor_starts_is_ended_by_the_main_thread() {
        let phase = Phase::default();
        assert!(phase.end_before_editing());
        assert!(!phase.start_editing(), "the editor must not start");
        assert!(!phase.done());
    }

    #[test]
    fn a_connection_lost_while_editing_lets_the_editor_connect_again() {
        let phase = Phase::default();
        assert!(phase.start_editing());
        assert!(!phase.end_before_editing(), "the editor is running");
        phase.lost();
        assert!(phase.is_lost());
        assert!(!phase.done());
    }

    #[test]
    fn a_close_after_the_user_left_the_editor_is_expected_not_lost() {
        let phase = Phase::default();
        assert!(phase.start_editing());
        phase.editing_done();
        // The network thread sees the close: not a loss.
        phase.lost();
        assert!(phase.done());
        assert!(!phase.is_lost());
    }

    #[test]
    fn a_lost_connection_marked_before_editing_still_counts_as_lost() {
        let phase = Phase::default();
        phase.mark_lost();
        assert!(phase.is_lost());
        assert!(!phase.start_editing());
    }
}
