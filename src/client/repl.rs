//! Interactive mode: a rustyline editor on this thread, the network on
//! another.
//!
//! `readline` blocks, so the socket is served by its own thread running a
//! small smol loop: a writer task fed through a channel by the editor, and
//! the receiving loop, which prints incoming frames above the prompt through
//! rustyline's external printer without disturbing the half-typed line.
//! When the server closes the connection, the network thread says why,
//! restores the terminal and exits at once, without waiting for Enter.
//!
//! Both threads print only whole lines, each with one `write`, so output
//! from the two never mixes within a line (a terminal serialises whole
//! writes); lines that are not messages start with `* `.
//!
//! History is appended, never rewritten, so several clients can share one
//! file. Names offered by completion from earlier runs come from a
//! per-server list beside it (`HISTORY.recipients`, lines of `SERVER NAME`):
//! a name used on one server is not offered on another.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use rustyline::completion::{Completer, Pair};
use rustyline::config::{Behavior, Config};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Context, Editor, Event, EventContext, EventHandler,
    ExternalPrinter, Helper, Highlighter, Hinter, KeyEvent, RepeatCount, Validator,
};
use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use smol::{Async, Timer};

use super::command::{self, Command, COMMANDS};
use super::connection::{await_login, receive, Login, Negotiation, Sink};
use super::output::{Output, Renderer, Stream, NOTICE_MARK};
use super::state::{rememberable, ChatState, MAX_KNOWN_USERS};
use super::Greeting;
use crate::clock::Stamp;
use crate::protocol;

/// Most history entries kept.
const HISTORY_SIZE: usize = 1000;

/// What Ctrl-C at an empty prompt says.
pub const HOW_TO_LEAVE: &str = "to leave, type exit or press Ctrl-D";

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
}

/// Prints a notice line from the editor's thread: marked, one write.
fn notice(text: &str) {
    crate::err_line!("{NOTICE_MARK}{text}");
}

/// Prints a local error line from the editor's thread.
fn local_error(text: &str) {
    crate::err_line!("{NOTICE_MARK}error: {text}");
}

/// Tab completion: command names, then usernames after `send `.
#[derive(Helper, Hinter, Highlighter, Validator)]
pub struct ChatHelper {
    /// Where the known usernames live; the network side adds to it.
    state: Arc<ChatState>,
}

impl ChatHelper {
    /// A helper completing from `state`.
    pub fn new(state: Arc<ChatState>) -> Self {
        ChatHelper { state }
    }
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let pair = |text: &str| Pair {
            display: text.to_string(),
            replacement: format!("{text} "),
        };
        if !before.contains(' ') {
            let names = COMMANDS.iter().filter(|c| c.starts_with(before));
            return Ok((0, names.map(|c| pair(c)).collect()));
        }
        for verb in ["send ", "/msg "] {
            if let Some(partial) = before.strip_prefix(verb) {
                if !partial.contains(' ') {
                    let users = self.state.users_starting_with(partial);
                    return Ok((verb.len(), users.iter().map(|u| pair(u)).collect()));
                }
            }
        }
        Ok((pos, Vec::new()))
    }
}

/// The terminal's settings from before the editor changed them, so that an
/// exit from the network thread (while `readline` holds the terminal in raw
/// mode) leaves a usable shell behind.
struct SavedTerminal {
    /// Keeps the descriptor open; `None` means stdin.
    tty: Option<File>,
    settings: libc::termios,
}

impl SavedTerminal {
    fn save() -> Option<SavedTerminal> {
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok();
        let fd = tty.as_ref().map_or(libc::STDIN_FILENO, |t| t.as_raw_fd());
        // SAFETY: termios is plain data, filled in by tcgetattr on success.
        let mut settings: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open for the duration of the call.
        if unsafe { libc::tcgetattr(fd, &mut settings) } != 0 {
            return None;
        }
        Some(SavedTerminal { tty, settings })
    }

    fn restore(&self) {
        let fd = self
            .tty
            .as_ref()
            .map_or(libc::STDIN_FILENO, |t| t.as_raw_fd());
        // SAFETY: `fd` is open and `settings` came from tcgetattr.
        unsafe {
            libc::tcsetattr(fd, libc::TCSANOW, &self.settings);
        }
    }
}

/// Received frames in interactive mode: above the prompt through the
/// external printer when stdout is that terminal, plain stdout otherwise.
struct ReplSink {
    renderer: Renderer,
    /// Prints above the prompt; `None` unless stdin and stdout are terminals
    /// (or the editor uses /dev/tty).
    printer: Option<Box<dyn ExternalPrinter + Send>>,
    /// Messages go to the printer (stdout is the terminal it draws on).
    messages_to_printer: bool,
    /// Text waiting for the printer, printed in one go at a flush.
    for_printer: String,
    /// Plain stdout and stderr, when the printer is not theirs.
    plain: Output,
    /// Show presence events as notices.
    show_presence: bool,
    /// Receive time of the frames being rendered (with `--timestamps`).
    stamp: Option<Stamp>,
}

impl ReplSink {
    fn stamp(&self) -> Option<&Stamp> {
        self.stamp.as_ref()
    }

    fn route(&mut self, stream: Stream, line: String) {
        let to_printer = match stream {
            Stream::Stdout => self.messages_to_printer,
            Stream::Stderr => self.printer.is_some(),
        };
        if to_printer {
            self.for_printer.push_str(&line);
        } else {
            match stream {
                Stream::Stdout => self.plain.raw_stdout(&line),
                Stream::Stderr => self.plain.raw_stderr(&line),
            }
        }
    }

    fn notice(&mut self, text: &str) {
        let mut line = String::new();
        self.renderer.notice(text, &mut line);
        self.route(Stream::Stderr, line);
    }

    /// Hands what is pending for the terminal to the printer: whole lines,
    /// newline included, so even when the editor is not reading (and the
    /// printer writes straight to the terminal) nothing the editor draws
    /// next can land on, or erase, the same line.
    fn print_pending(&mut self) {
        if self.for_printer.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.for_printer);
        let printed = match self.printer.as_mut() {
            Some(printer) => printer.print(text.clone()).is_ok(),
            None => false,
        };
        if !printed {
            let _ = io::stderr().write_all(text.as_bytes());
        }
    }
}

impl Sink for ReplSink {
    fn set_stamp(&mut self, stamp: Stamp) {
        self.stamp = Some(stamp);
    }

    fn wants_stamps(&self) -> bool {
        self.renderer.timestamps
    }

    fn message(&mut self, from: &[u8], content: &[u8]) {
        let mut line = String::new();
        let stream = self
            .renderer
            .message(from, content, self.stamp(), &mut line);
        self.route(stream, line);
    }

    fn error(&mut self, text: &[u8]) {
        let mut line = String::new();
        let stream = self.renderer.error(text, self.stamp(), &mut line);
        self.route(stream, line);
    }

    fn online(&mut self, names: &[String]) {
        let mut line = String::new();
        let stream = self.renderer.online(names, true, self.stamp(), &mut line);
        self.route(stream, line);
    }

    fn presence(&mut self, joined: bool, name: &[u8]) {
        let mut line = String::new();
        if let Some(stream) =
            self.renderer
                .presence(joined, name, self.show_presence, self.stamp(), &mut line)
        {
            self.route(stream, line);
        }
    }

    fn pending(&self) -> usize {
        self.for_printer.len() + self.plain.pending()
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        self.print_pending();
        self.plain.flush()
    }

    fn gone(&self) -> impl Future<Output = ()> + 'static {
        self.plain.gone()
    }
}

/// Runs the interactive session over `stream`, after the handshake and
/// HELLO in `greeting`. Returns the exit status; exits the process itself
/// if the server closes the connection first.
pub fn run(
    stream: Async<TcpStream>,
    greeting: Greeting,
    options: ReplOptions,
    state: Arc<ChatState>,
) -> i32 {
    let stdin_is_terminal = io::stdin().is_terminal();
    let mut builder = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)
        .and_then(|b| b.max_history_size(HISTORY_SIZE));
    if stdin_is_terminal {
        // Prompt and editing on the terminal even when stdout is a pipe.
        builder = builder.map(|b| b.behavior(Behavior::PreferTerm));
    }
    let config = match builder {
        Ok(builder) => builder.build(),
        Err(e) => {
            crate::err_line!("chat-client: cannot configure the editor: {e}");
            return crate::exit_codes::FAILURE;
        }
    };
    let mut editor: Editor<ChatHelper, FileHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            crate::err_line!("chat-client: cannot start the line editor: {e}");
            return crate::exit_codes::FAILURE;
        }
    };
    editor.set_helper(Some(ChatHelper::new(Arc::clone(&state))));
    let ctrl_c = CtrlC::default();
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(ctrl_c.clone())),
    );
    let mut recipients = options
        .history
        .as_deref()
        .map(|path| Recipients::open(path, &options.server));
    if let Some(path) = &options.history {
        load_history(&mut editor, path);
    }
    if let Some(recipients) = &recipients {
        for name in &recipients.names {
            state.know_from_history(name);
        }
    }

    let printer = editor
        .create_external_printer()
        .ok()
        .map(|p| Box::new(p) as Box<dyn ExternalPrinter + Send>);
    let sink = ReplSink {
        renderer: options.renderer,
        messages_to_printer: printer.is_some() && io::stdout().is_terminal(),
        printer,
        for_printer: String::new(),
        plain: Output::new(options.renderer),
        show_presence: options.show_presence,
        stamp: None,
    };
    let (frames, outgoing) = async_channel::unbounded::<Vec<u8>>();
    // The handshake goes first; the channel is open, so this cannot fail.
    let _ = frames.send_blocking(greeting.bytes);
    let (told, outcome) = async_channel::bounded(1);
    let negotiation = Negotiation {
        outcome: Some(told),
        presence: greeting.presence,
    };
    let repl_done = Arc::new(AtomicBool::new(false));
    let network = {
        let state = Arc::clone(&state);
        let repl_done = Arc::clone(&repl_done);
        let terminal = SavedTerminal::save();
        let drain = options.drain_timeout;
        thread::Builder::new()
            .name("pmchat-network".into())
            .spawn(move || {
                network(
                    stream,
                    outgoing,
                    (sink, negotiation),
                    &state,
                    &repl_done,
                    drain,
                    terminal,
                )
            })
    };
    let network = match network {
        Ok(handle) => handle,
        Err(e) => {
            crate::err_line!("chat-client: cannot start the network thread: {e}");
            return crate::exit_codes::FAILURE;
        }
    };

    match smol::block_on(await_login(&outcome, greeting.timeout)) {
        Some(Login::Extended) => match state.online_count() {
            Some(n) => notice(&format!("connected as {} ({n} online)", options.username)),
            None => notice(&format!("connected as {}", options.username)),
        },
        Some(Login::V1) => notice(&format!(
            "connected to {} as {} (a v1 server: login not confirmed, no online list)",
            options.server, options.username
        )),
        Some(Login::Silent) => notice(&format!(
            "connected to {} as {}; {}",
            options.server,
            options.username,
            super::silent_server_notice(greeting.timeout)
        )),
        // The server closed the connection: the network thread says why
        // and ends the process.
        None => return network.join().unwrap_or(crate::exit_codes::FAILURE),
    }
    notice("type 'help' for commands");
    let prompt = format!("{}> ", options.username);
    loop {
        match editor.readline(&prompt) {
            Ok(line) => {
                if let Some(path) = &options.history {
                    // `exit` would only ever be recalled by mistake.
                    if !matches!(line.trim(), "" | "exit" | "quit" | "/quit") {
                        let _ = editor.add_history_entry(line.as_str());
                        append_history(&mut editor, path);
                    }
                }
                match handle_line(&line, &state, &frames) {
                    Handled::Leave => break,
                    Handled::Sent { to } => {
                        if let Some(recipients) = &mut recipients {
                            recipients.used(&to);
                        }
                    }
                    Handled::Done => {}
                }
            }
            // Ctrl-C: the editor has already dropped the line; at an empty
            // prompt, people pressing it usually want out.
            Err(ReadlineError::Interrupted) => {
                if ctrl_c.at_empty_prompt() {
                    notice(HOW_TO_LEAVE);
                }
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                crate::err_line!("chat-client: cannot read input: {e}");
                state.fail();
                break;
            }
        }
    }
    repl_done.store(true, Ordering::SeqCst);
    drop(frames);
    network.join().unwrap_or(crate::exit_codes::FAILURE)
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

/// What a typed line did.
enum Handled {
    /// Nothing more to do.
    Done,
    /// A message went to `to`.
    Sent { to: String },
    /// The user wants to leave.
    Leave,
}

/// Acts on one typed line.
fn handle_line(line: &str, state: &ChatState, frames: &Sender<Vec<u8>>) -> Handled {
    let (to, message) = match command::parse(line, &state.limits()) {
        Ok(None) => return Handled::Done,
        Ok(Some(Command::Exit)) => return Handled::Leave,
        Ok(Some(Command::Help)) => {
            crate::err_line!("{}", command::HELP);
            return Handled::Done;
        }
        Ok(Some(Command::Who)) => {
            if state.extended() {
                let mut frame = Vec::new();
                protocol::encode_who(&mut frame);
                state.who_sent();
                let _ = frames.send_blocking(frame);
            } else {
                local_error(command::WHO_UNSUPPORTED);
            }
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
    let mut frame = Vec::new();
    if let Err(e) = protocol::encode_message(to.as_bytes(), message.as_bytes(), &mut frame) {
        local_error(&e.to_string());
        return Handled::Done;
    }
    state.know(&to);
    // A closed channel means the network thread is ending the process.
    let _ = frames.send_blocking(frame);
    Handled::Sent { to }
}

fn load_history(editor: &mut Editor<ChatHelper, FileHistory>, path: &Path) {
    match editor.load_history(path) {
        Ok(()) => {}
        // No history yet is the normal first run.
        Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => crate::err_line!("chat-client: cannot read history {}: {e}", path.display()),
    }
}

/// Adds the lines typed since the last call to the history file, merging
/// with what other clients appended meanwhile (rustyline locks the file and
/// never drops their lines).
fn append_history(editor: &mut Editor<ChatHelper, FileHistory>, path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = editor.append_history(path) {
        crate::err_line!("chat-client: cannot save history {}: {e}", path.display());
    }
}

/// The names messaged on one server in earlier runs, for completion, kept
/// in `HISTORY.recipients` as `SERVER NAME` lines. Only new names are
/// appended (one short write each, so concurrent clients do not clobber
/// each other).
pub struct Recipients {
    /// The file, `None` if it could not be opened for appending.
    file: Option<File>,
    /// Which server's names these are (`host:port`, host lower-cased).
    server: String,
    /// Names already known for this server.
    pub names: BTreeSet<String>,
}

impl Recipients {
    /// Reads the names recorded for `server` beside `history`.
    pub fn open(history: &Path, server: &str) -> Recipients {
        let mut path = history.as_os_str().to_owned();
        path.push(".recipients");
        let path = PathBuf::from(path);
        let server = server.to_ascii_lowercase();
        let mut names = BTreeSet::new();
        if let Ok(file) = File::open(&path) {
            // The newest names count most: keep the last ones read.
            let mut order = std::collections::VecDeque::new();
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                let Some((on, name)) = line.split_once(' ') else {
                    continue;
                };
                if on == server && rememberable(name) && names.insert(name.to_string()) {
                    order.push_back(name.to_string());
                    if order.len() > MAX_KNOWN_USERS {
                        if let Some(oldest) = order.pop_front() {
                            names.remove(&oldest);
                        }
                    }
                }
            }
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        Recipients {
            file,
            server,
            names,
        }
    }

    /// Records that `name` was messaged on this server.
    pub fn used(&mut self, name: &str) {
        if self.names.contains(name) || !rememberable(name) {
            return;
        }
        self.names.insert(name.to_string());
        if let Some(file) = &mut self.file {
            let line = format!("{} {name}\n", self.server);
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// The network thread: writes what the editor sends, prints what arrives.
fn network(
    stream: Async<TcpStream>,
    outgoing: Receiver<Vec<u8>>,
    (mut sink, negotiation): (ReplSink, Negotiation),
    state: &ChatState,
    repl_done: &AtomicBool,
    drain: Duration,
    terminal: Option<SavedTerminal>,
) -> i32 {
    smol::block_on(async {
        let receiving = async { Some(receive(&stream, &mut sink, state, negotiation).await) };
        let sending = async {
            if write_frames(&stream, &outgoing).await.is_ok() {
                let _ = stream.get_ref().shutdown(Shutdown::Write);
            }
            Timer::after(drain).await;
            None
        };
        let received = receiving.or(sending).await;
        let expected = repl_done.load(Ordering::SeqCst);
        if let Some(notice) = received
            .as_ref()
            .and_then(|r| super::close_notice(r, expected))
        {
            sink.notice(&notice);
        }
        sink.print_pending();
        sink.plain.finish(drain).await;
        // The user ending the session is a success, whatever went wrong
        // along the way; the server ending it is not.
        let status = if expected && !state.login_refused() {
            crate::exit_codes::SUCCESS
        } else {
            super::exit_status(state, received.as_ref(), expected)
        };
        if !expected {
            // The editor is blocked in `readline` with the terminal in raw
            // mode; give the printer a moment to show the last lines, then
            // put the terminal back and leave.
            if sink.printer.is_some() {
                thread::sleep(Duration::from_millis(100));
            }
            if let Some(terminal) = &terminal {
                terminal.restore();
                let _ = writeln!(io::stderr());
            }
            std::process::exit(status);
        }
        status
    })
}

/// Writes frames from the editor, coalescing whatever is queued.
async fn write_frames(stream: &Async<TcpStream>, outgoing: &Receiver<Vec<u8>>) -> io::Result<()> {
    let mut batch = Vec::new();
    while let Ok(frame) = outgoing.recv().await {
        batch.extend_from_slice(&frame);
        while let Ok(more) = outgoing.try_recv() {
            batch.extend_from_slice(&more);
        }
        (&*stream).write_all(&batch).await?;
        batch.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    fn complete(helper: &ChatHelper, line: &str) -> (usize, Vec<String>) {
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, pairs) = helper.complete(line, line.len(), &ctx).unwrap();
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn completes_commands_then_usernames() {
        let state = Arc::new(ChatState::default());
        state.know("bob");
        state.know("bobby");
        state.know("carol");
        let helper = ChatHelper::new(state);
        assert_eq!(complete(&helper, "se"), (0, vec!["send ".to_string()]));
        assert_eq!(
            complete(&helper, "send bo"),
            (5, vec!["bob ".to_string(), "bobby ".to_string()])
        );
        assert_eq!(complete(&helper, "send bob hel"), (12, vec![]));
        assert_eq!(complete(&helper, "reply b"), (7, vec![]));
    }

    #[test]
    fn recipients_are_remembered_per_server() {
        let dir = std::env::temp_dir().join(format!("pmchat-recipients-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let history = dir.join("history");
        let mut one = Recipients::open(&history, "Host-A:9000");
        one.used("carol");
        one.used("carol");
        one.used("bad name");
        let mut two = Recipients::open(&history, "host-b:9000");
        two.used("dave");
        assert_eq!(
            Vec::from_iter(Recipients::open(&history, "host-a:9000").names),
            ["carol"]
        );
        assert_eq!(
            Vec::from_iter(Recipients::open(&history, "host-b:9000").names),
            ["dave"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn completion_after_msg_offers_usernames() {
        let state = Arc::new(ChatState::default());
        state.know("bob");
        let helper = ChatHelper::new(state);
        assert_eq!(complete(&helper, "/msg b"), (5, vec!["bob ".to_string()]));
    }
}
