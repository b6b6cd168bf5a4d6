//! Interactive mode: a rustyline editor on this thread, the network on
//! another.
//!
//! `readline` blocks, so the socket is served by its own thread running a
//! small smol loop: a writer task fed through a channel by the editor, and
//! the receiving loop, which prints incoming frames above the prompt through
//! rustyline's external printer without disturbing the half-typed line.
//! When the server closes the connection, the network thread says why,
//! restores the terminal and exits at once, without waiting for Enter.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
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
use rustyline::{Context, Editor, ExternalPrinter, Helper, Highlighter, Hinter, Validator};
use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use smol::{Async, Timer};

use super::command::{self, Command, COMMANDS};
use super::connection::{await_login, receive, Login, Negotiation, Sink};
use super::output::{Output, Renderer, Stream};
use super::state::ChatState;
use super::Greeting;
use crate::protocol::{self, Limits};

/// Most history entries kept.
const HISTORY_SIZE: usize = 1000;

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
        if let Some(partial) = before.strip_prefix("send ") {
            if !partial.contains(' ') {
                let users = self.state.users_starting_with(partial);
                return Ok((5, users.iter().map(|u| pair(u)).collect()));
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
}

impl ReplSink {
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
                Stream::Stderr => self.plain.notice(line.trim_end_matches('\n')),
            }
        }
    }

    fn notice(&mut self, text: &str) {
        self.route(Stream::Stderr, format!("{text}\n"));
    }
}

impl Sink for ReplSink {
    fn message(&mut self, from: &[u8], content: &[u8]) {
        let mut line = String::new();
        let stream = self.renderer.message(from, content, &mut line);
        self.route(stream, line);
    }

    fn error(&mut self, text: &[u8]) {
        let mut line = String::new();
        let stream = self.renderer.error(text, &mut line);
        self.route(stream, line);
    }

    fn online(&mut self, names: &[String]) {
        let mut line = String::new();
        let stream = self.renderer.online(names, true, &mut line);
        self.route(stream, line);
    }

    fn presence(&mut self, joined: bool, name: &[u8]) {
        let mut line = String::new();
        if let Some(stream) = self
            .renderer
            .presence(joined, name, self.show_presence, &mut line)
        {
            self.route(stream, line);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.for_printer.is_empty() {
            let text = std::mem::take(&mut self.for_printer);
            if let Some(printer) = self.printer.as_mut() {
                if printer
                    .print(text.trim_end_matches('\n').to_string())
                    .is_err()
                {
                    eprint!("{text}");
                }
            }
        }
        self.plain.flush()
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
            eprintln!("chat-client: cannot configure the editor: {e}");
            return crate::exit_codes::FAILURE;
        }
    };
    let mut editor: Editor<ChatHelper, FileHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("chat-client: cannot start the line editor: {e}");
            return crate::exit_codes::FAILURE;
        }
    };
    editor.set_helper(Some(ChatHelper::new(Arc::clone(&state))));
    if let Some(path) = &options.history {
        load_history(&mut editor, path, &state);
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
            eprintln!("chat-client: cannot start the network thread: {e}");
            return crate::exit_codes::FAILURE;
        }
    };

    match smol::block_on(await_login(&outcome, greeting.timeout)) {
        Some(Login::Extended) => match state.online_count() {
            Some(n) => eprintln!("connected as {} ({n} online)", options.username),
            None => eprintln!("connected as {}", options.username),
        },
        Some(Login::V1) => eprintln!(
            "connected to {} as {} (a v1 server: login not confirmed, no online list)",
            options.server, options.username
        ),
        // The server closed the connection: the network thread says why
        // and ends the process.
        None => return network.join().unwrap_or(crate::exit_codes::FAILURE),
    }
    eprintln!("type 'help' for commands");
    let prompt = format!("{}> ", options.username);
    loop {
        match editor.readline(&prompt) {
            Ok(line) => {
                if let Some(path) = &options.history {
                    // `exit` would only ever be recalled by mistake.
                    if !matches!(line.trim(), "" | "exit" | "quit") {
                        let _ = editor.add_history_entry(line.as_str());
                        save_history(&mut editor, path);
                    }
                }
                if !handle_line(&line, &state, &frames) {
                    break;
                }
            }
            // Ctrl-C: the editor has already dropped the line.
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("chat-client: cannot read input: {e}");
                state.fail();
                break;
            }
        }
    }
    repl_done.store(true, Ordering::SeqCst);
    drop(frames);
    network.join().unwrap_or(crate::exit_codes::FAILURE)
}

/// Acts on one typed line; false means "leave".
fn handle_line(line: &str, state: &ChatState, frames: &Sender<Vec<u8>>) -> bool {
    let (to, message) = match command::parse(line, &state.limits()) {
        Ok(None) => return true,
        Ok(Some(Command::Exit)) => return false,
        Ok(Some(Command::Help)) => {
            eprintln!("{}", command::HELP);
            return true;
        }
        Ok(Some(Command::Who)) => {
            if state.extended() {
                let mut frame = Vec::new();
                protocol::encode_who(&mut frame);
                let _ = frames.send_blocking(frame);
            } else {
                eprintln!("error: {}", command::WHO_UNSUPPORTED);
                state.fail();
            }
            return true;
        }
        Ok(Some(Command::Send { to, message })) => (to.to_string(), message),
        Ok(Some(Command::Reply { message })) => match state.last_sender() {
            Some(to) => (to, message),
            None => {
                eprintln!("error: nobody has sent you a message yet; nothing to reply to");
                state.fail();
                return true;
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            state.fail();
            return true;
        }
    };
    let mut frame = Vec::new();
    if let Err(e) = protocol::encode_message(to.as_bytes(), message.as_bytes(), &mut frame) {
        eprintln!("error: {e}");
        state.fail();
        return true;
    }
    state.know(&to);
    // A closed channel means the network thread is ending the process.
    let _ = frames.send_blocking(frame);
    true
}

fn load_history(editor: &mut Editor<ChatHelper, FileHistory>, path: &Path, state: &ChatState) {
    match editor.load_history(path) {
        Ok(()) => {}
        // No history yet is the normal first run.
        Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("chat-client: cannot read history {}: {e}", path.display()),
    }
    for entry in editor.history().iter() {
        if let Some(to) = recipient_in(entry) {
            state.know_from_history(to);
        }
    }
}

/// The recipient of a `send` history line, if it names a valid one.
pub fn recipient_in(entry: &str) -> Option<&str> {
    match command::parse(entry, &Limits::default()) {
        Ok(Some(Command::Send { to, .. })) => Some(to),
        _ => None,
    }
}

fn save_history(editor: &mut Editor<ChatHelper, FileHistory>, path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = editor.save_history(path) {
        eprintln!("chat-client: cannot save history {}: {e}", path.display());
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
        let _ = sink.flush();
        let status = super::exit_status(state, received.as_ref(), expected);
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
    fn history_lines_name_recipients() {
        assert_eq!(recipient_in("send bob hi there"), Some("bob"));
        assert_eq!(recipient_in("reply hi"), None);
        assert_eq!(recipient_in("send bad\u{7}name hi"), None);
    }
}
