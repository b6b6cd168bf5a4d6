//! The chat client: connect, then run the REPL or a batch script.
//!
//! - [`cli`]: command-line options.
//! - [`config`]: the config file and environment that fill them in.
//! - [`command`]: the command language, shared by both modes.
//! - [`connection`]: connecting and the receiving loop.
//! - [`frames`]: what each server frame means for the output (a `Sink`)
//!   and for the login's negotiation.
//! - [`render`]: how a received frame is shown (plain, JSON, colour).
//! - [`output`]: the rendered lines on their way to stdout and stderr.
//! - [`stdout`]: the threads that own stdout: its writer, and the watcher
//!   that notices its reader left while nothing is written.
//! - [`state`]: what the receiving side tells the command side.
//! - [`receipts`]: messages in flight until the server accounts for them.
//! - `cursor`: the inbox cursor (`--follow` on a server with `--store`),
//!   kept per server and name in the state directory.
//! - `exec`: `--exec CMD`, each message handed to a command, effectively
//!   once.
//! - `device`: the device tokens servers gave this client, kept per server
//!   and name in the state directory; `private_file` how such files are
//!   written (0600, atomically).
//! - [`wire`]: v1 or the original programs' gob, encoded and decoded.
//! - [`batch`]: scripts from stdin or files; [`sealed`] its `--e2e`
//!   side (keys published at login, each `send` sealed per device).
//! - [`e2e`]: end-to-end encryption's core (Olm, vodozemac).
//! - [`reconnect`]: `--follow --reconnect`.
//! - [`repl`]: the interactive editor.

mod batch;
pub mod cli;
mod command;
pub mod config;
mod connection;
mod cursor;
mod device;
pub mod e2e;
mod exec;
mod frames;
mod negotiation;
mod output;
mod private_file;
mod receipts;
mod reconnect;
mod render;
mod repl;
mod script_line;
mod sealed;
mod state;
mod stdout;
pub mod wire;

use std::io::{self, IsTerminal};
use std::sync::Arc;

use crate::exit_codes::Status;
use crate::wire::v1;
use cli::ClientArgs;
use connection::Received;
use render::Renderer;
use state::ChatState;
use wire::ClientWire;

/// Runs the client as the command line asks; returns the exit status.
pub fn run(args: ClientArgs) -> Status {
    // --until-caught-up, --exec and --count are for runs nobody attends:
    // on a terminal too they act on what arrives and exit as they say,
    // reading no commands from it (unless --batch), not the editor.
    let unattended = args.until_caught_up || args.exec.is_some() || args.count.is_some();
    let on_terminal = !args.batch
        && args.files.is_empty()
        && args.command.is_empty()
        && io::stdin().is_terminal();
    let interactive = args.interactive || (on_terminal && !unattended);
    let renderer = Renderer {
        json: args.json,
        color_stdout: args.color.enabled_for(&io::stdout()),
        color_stderr: args.color.enabled_for(&io::stderr()),
        timestamps: args.timestamps,
        mark_notices: interactive,
        receipts: args.receipts,
    };
    let security = if args.tls || args.tls_ca.is_some() {
        connection::Security::Tls {
            ca: args.tls_ca.clone(),
        }
    } else {
        connection::Security::Plain
    };
    let mut password = match given_password(&args) {
        Ok(password) => password,
        Err(e) => {
            crate::err_line!("chat-client: {e}");
            return Status::Usage;
        }
    };
    if args.wire == ClientWire::Gob && args.password_file.is_some() {
        crate::err_line!("chat-client: the gob wire has no passwords (--password-file needs v1)");
        return Status::Usage;
    }
    if args.wire == ClientWire::Gob {
        // A password in the environment is meant for v1 logins.
        password = None;
    }
    let e2e = match e2e_for(&args, password.as_deref()) {
        Ok(e2e) => e2e,
        Err(e) => {
            crate::err_line!("chat-client: {e}");
            return Status::Usage;
        }
    };
    // Opened before connecting: a script that cannot be read sends nothing.
    let opened = match () {
        _ if !args.command.is_empty() => Some(Ok(batch::Script::command(args.command.join(" ")))),
        _ if interactive => None,
        _ if on_terminal => Some(Ok(batch::Script::command(String::new()))),
        _ => Some(batch::Script::open(&args.files)),
    };
    let mut script = match opened {
        None => None,
        Some(Ok(script)) => Some(script.to(args.to.clone())),
        Some(Err(e)) => {
            crate::err_line!("chat-client: {e}");
            return Status::Usage;
        }
    };
    let encrypted = matches!(security, connection::Security::Tls { .. });
    // The editor asks for the password itself once the server wants one
    // (so that refusal is no error to show), and lets a typed one be
    // typed again after a mistake.
    let may_ask = interactive
        && crate::secret::stdin_is_terminal()
        && (encrypted || args.allow_plaintext_password);
    let mut typed = 0;
    loop {
        let state = Arc::new(ChatState::with_wire(args.wire));
        if let Some(e2e) = &e2e {
            state.use_e2e(Arc::clone(e2e));
        }
        if let Some(dir) = args.state_dir() {
            let server = format!("{}:{}", args.host, args.port);
            state.keep_tokens_in(device::TokenStore::new(dir, server, args.username.clone()));
        }
        // A password goes only where nobody on the path can read it, unless
        // the user says the path is trusted.
        let withheld = password.is_some() && !encrypted && !args.allow_plaintext_password;
        let sent = password.as_deref().filter(|_| !withheld);
        let asks = may_ask && sent.is_none();
        let status = connect_and_run(
            &args,
            &security,
            renderer,
            sent,
            asks,
            &state,
            script.as_mut(),
        );
        let mistyped = typed > 0 && typed < PASSWORD_TRIES && state.wrong_password();
        let wanted = state.password_required() && sent.is_none();
        if !(wanted || mistyped) {
            return status;
        }
        if withheld {
            crate::err_line!(
                "chat-client: the password was not sent over a plain connection; \
                 connect with --tls (or, on a trusted network, --allow-plaintext-password)"
            );
            return status;
        }
        // The editor asks, once the server said a password is needed.
        if !(interactive && crate::secret::stdin_is_terminal()) {
            crate::err_line!(
                "chat-client: give the password with --password-file FILE or PMCHAT_PASSWORD"
            );
            return status;
        }
        if !encrypted && !args.allow_plaintext_password {
            crate::err_line!(
                "chat-client: not asking for the password over a plain connection; \
                 connect with --tls (or, on a trusted network, --allow-plaintext-password)"
            );
            return status;
        }
        let prompt = match typed {
            0 => format!("Password for {}: ", args.username),
            n => format!(
                "Password for {} (try {} of {PASSWORD_TRIES}): ",
                args.username,
                n + 1
            ),
        };
        match crate::secret::read_password(&prompt) {
            Ok(given) => {
                password = Some(given);
                typed += 1;
            }
            Err(e) => {
                crate::err_line!("chat-client: no password: {e}");
                return status;
            }
        }
    }
}

/// The e2e state `--e2e` asks for: a registered name's device, its keys
/// in the state directory under the password.
fn e2e_for(
    args: &ClientArgs,
    password: Option<&[u8]>,
) -> Result<Option<Arc<e2e::session::E2e>>, String> {
    if !args.e2e {
        return Ok(None);
    }
    if args.wire == ClientWire::Gob {
        return Err("--e2e needs the v1 wire".into());
    }
    let password = password.ok_or(
        "--e2e needs a registered name and its password (--password-file or PMCHAT_PASSWORD): \
         the keys are kept under it",
    )?;
    let dir = args
        .state_dir()
        .ok_or("--e2e needs a state directory (set XDG_STATE_HOME or HOME)")?;
    let server = format!("{}:{}", args.host, args.port);
    e2e::session::E2e::open(
        &dir,
        &server,
        &args.username,
        password,
        args.allow_plaintext,
    )
    .map(|e2e| Some(Arc::new(e2e)))
}

/// The password from --password-file, else from PMCHAT_PASSWORD (an empty
/// variable counts as unset).
fn given_password(args: &ClientArgs) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = &args.password_file {
        warn_if_others_can_read(path);
        return crate::secret::read_password_file(path)
            .map(Some)
            .map_err(|e| format!("cannot read a password from {}: {e}", path.display()));
    }
    match crate::secret::password_from_env(PASSWORD_VARIABLE) {
        Ok(password) => Ok(password),
        Err(crate::secret::SecretError::Empty) => Ok(None),
        Err(e) => Err(format!("{PASSWORD_VARIABLE}: {e}")),
    }
}

/// Says so when a password file can be read by other users than its
/// owner: anyone on the machine could log in with it.
fn warn_if_others_can_read(path: &std::path::Path) {
    if let Some(mode) = crate::secret::readable_by_others(path) {
        crate::err_line!(
            "chat-client: warning: {} can be read by other users (mode {mode:o}); \
             chmod 600 it",
            path.display()
        );
    }
}

/// Passwords the editor lets a person type for one login.
const PASSWORD_TRIES: u32 = 3;

/// The environment variable a password may come from.
pub const PASSWORD_VARIABLE: &str = "PMCHAT_PASSWORD";

/// One connection: connect, log in with `password` (if any), run the REPL
/// or (given a `script`) the script, reconnecting as asked.
fn connect_and_run(
    args: &ClientArgs,
    security: &connection::Security,
    renderer: Renderer,
    password: Option<&[u8]>,
    asks_password: bool,
    state: &Arc<ChatState>,
    script: Option<&mut batch::Script>,
) -> Status {
    let interactive = script.is_none();
    let stream = match smol::block_on(connection::open(
        &args.host,
        args.port,
        args.connect_timeout,
        security,
    )) {
        Ok(stream) => stream,
        Err(e) => {
            crate::err_line!("chat-client: {e}");
            return Status::NotConnected;
        }
    };
    // The REPL wants presence for completion; a batch run only shows it
    // in JSON.
    let presence = (interactive || args.json) && args.wire == ClientWire::V1;
    // `inbox`: with --follow, ask for the log, starting where these
    // words say (empty: where the name's last device left).
    let login = |inbox: Option<&str>| {
        // Read at every login: a reconnection sends the token the last
        // login was given.
        let token = password.and(state.device_token());
        greeting(
            &args.username,
            args.wire,
            Features {
                presence,
                keys: args.e2e,
            },
            password,
            token.as_deref(),
            inbox,
        )
        .map(|bytes| Greeting {
            presence,
            password_sent: password.is_some(),
            timeout: args.hello_timeout,
            pace: args.send_interval(),
            ..bytes
        })
    };
    // Checked once: every later greeting is the same but for where the
    // inbox starts.
    if let Err(e) = login(None) {
        crate::err_line!("chat-client: {e}");
        return Status::Usage;
    }
    let server = format!("{}:{}", args.host, args.port);
    let cursor_file = || {
        let dir = args.state_dir().filter(|_| args.follow)?;
        Some(cursor::CursorFile::new(dir, &server, &args.username))
    };
    // --since applies to the first connection; reconnections go on from
    // the cursor.
    let since = std::cell::Cell::new(args.since);
    let inbox_start = || {
        let saved = cursor_file().and_then(|file| file.load());
        match (since.take(), saved) {
            (Some(since), _) => inbox_words(since),
            (None, Some(cursor)) => format!("{}={cursor}", v1::HELLO_AFTER),
            (None, None) => String::new(),
        }
    };
    // The editor asks for the inbox too, without a cursor of its own: it
    // shows what came while none of the name's devices was connected.
    let greeting = || {
        let start = match () {
            _ if args.follow => Some(inbox_start()),
            _ if interactive => Some(String::new()),
            _ => None,
        };
        login(start.as_deref()).unwrap_or_default()
    };
    match script {
        None => {
            let options = repl::ReplOptions {
                history: args.history_path(),
                server: format!("{}:{}", args.host, args.port),
                username: args.username.clone(),
                drain_timeout: args.drain_timeout,
                show_presence: !args.no_presence,
                renderer,
                greeted: Default::default(),
                peer: args.to.clone(),
                asks_password,
            };
            let reconnect = || {
                let stream = smol::block_on(connection::open(
                    &args.host,
                    args.port,
                    args.connect_timeout,
                    security,
                ))
                .map_err(|e| e.to_string())?;
                Ok((stream, greeting()))
            };
            repl::run(stream, greeting(), options, Arc::clone(state), &reconnect)
        }
        Some(script) => {
            let connector = reconnect::Connector {
                args,
                security,
                renderer,
                greeting: &greeting,
                cursor: &cursor_file,
            };
            connector.run(stream, state, script)
        }
    }
}

/// Optional features a greeting asks for.
#[derive(Clone, Copy, Default)]
struct Features {
    /// The online list and presence events.
    presence: bool,
    /// Keys for end-to-end encryption (`--e2e`).
    keys: bool,
}

/// The first bytes we send, and how to wait for the answer.
#[derive(Default)]
pub struct Greeting {
    /// The v1 handshake followed by HELLO and AUTH (v1), or by the gob
    /// announcement (gob).
    pub bytes: Vec<u8>,
    /// HELLO asked for presence.
    pub presence: bool,
    /// AUTH carried a password.
    pub password_sent: bool,
    /// `'' is not connected` answers that are a v1 (or gob) server's
    /// answers to our greeting, to be swallowed.
    pub v1_answers: u8,
    /// How long to wait for an answer before assuming a v1 server.
    pub timeout: std::time::Duration,
    /// The pause between writes that must arrive separately.
    pub pace: std::time::Duration,
}

/// The greeting for `username` on `wire`.
///
/// v1: the handshake, then a HELLO asking for our features and the AUTH
/// that HELLO announces, with `password` or empty (a server then says if
/// the name needs one); a v1 server answers HELLO and AUTH each with
/// `'' is not connected`. Gob: the handshake, then the announcement of
/// [`wire::gob_announcement`], answered the same way. Both go in one write:
/// pmchat's server then knows the client's wire before anyone can message
/// it, and a server that loses the announcement (the original one may:
/// it reads the handshake and each message with separate readers) only
/// leaves the login unconfirmed.
fn greeting(
    username: &str,
    wire: ClientWire,
    features: Features,
    password: Option<&[u8]>,
    token: Option<&str>,
    inbox: Option<&str>,
) -> Result<Greeting, v1::FieldTooLong> {
    let mut bytes = Vec::new();
    v1::encode_handshake(username.as_bytes(), &mut bytes)?;
    if wire == ClientWire::Gob {
        bytes.extend_from_slice(&wire::gob_announcement());
        return Ok(Greeting {
            bytes,
            v1_answers: 1,
            ..Greeting::default()
        });
    }
    let Features { presence, keys } = features;
    let mut features = v1::FEATURE_BASE.to_string();
    if presence {
        features.push(' ');
        features.push_str(v1::FEATURE_PRESENCE);
    }
    if keys {
        features.push(' ');
        features.push_str(v1::FEATURE_KEYS);
    }
    features.push(' ');
    features.push_str(v1::FEATURE_PASSWORD);
    features.push(' ');
    features.push_str(v1::FEATURE_RECEIPTS);
    features.push(' ');
    features.push_str(v1::FEATURE_CODES);
    // Sealed content is always understood: with --e2e opened, without
    // it reported as encrypted, never shown.
    features.push(' ');
    features.push_str(v1::FEATURE_SEALED);
    features.push(' ');
    features.push_str(v1::FEATURE_STORED);
    if let Some(start) = inbox {
        features.push(' ');
        features.push_str(v1::FEATURE_INBOX);
        if !start.is_empty() {
            features.push(' ');
            features.push_str(start);
        }
    }
    v1::encode_hello(&features, &mut bytes)?;
    let token = token.unwrap_or_default().as_bytes();
    v1::encode_auth(token, password.unwrap_or_default(), &mut bytes)?;
    Ok(Greeting {
        bytes,
        v1_answers: 2,
        ..Greeting::default()
    })
}

/// HELLO's words for where the replay of the log starts, as `--since`
/// says.
fn inbox_words(since: cli::Since) -> String {
    match since {
        cli::Since::All => format!("{}=0", v1::HELLO_AFTER),
        cli::Since::Cursor(cursor) => format!("{}={cursor}", v1::HELLO_AFTER),
        cli::Since::Ago(ago) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let from = now.saturating_sub(ago).as_millis();
            format!("{}={from}", v1::HELLO_AFTER_TIME)
        }
    }
}

/// What to say once the login is confirmed about how it was proved, if
/// anything: a password that was not needed is worth knowing about.
pub(crate) fn password_notice(state: &ChatState, greeting: &Greeting) -> Option<&'static str> {
    (greeting.password_sent && state.extended() && !state.authenticated())
        .then_some("the name is not registered on this server; logged in without the password")
}

/// What to tell the user about how the connection ended, if anything.
/// `expected` is true when we had finished and were waiting for the close.
pub(crate) fn close_notice(received: &Received, expected: bool) -> Option<String> {
    match received {
        // The error line already said why.
        Received::Closed { after_error: true } => None,
        Received::Closed { after_error: false } => {
            (!expected).then(|| "connection closed by server".to_string())
        }
        Received::Failed(e) => Some(format!("connection lost: {e}")),
        Received::Protocol(e) => Some(format!("the server sent an invalid frame: {e}")),
        Received::NotChat { error, start } => Some(format!(
            "the server does not look like a pmchat/v1 server: its first bytes \
             (\"{start}\") are not a v1 frame ({error})"
        )),
        Received::OutputGone | Received::Enough => None,
    }
}

/// The exit status for a session that ended with `received` (`None`: we
/// stopped waiting first).
pub(crate) fn exit_status(
    state: &ChatState,
    received: Option<&Received>,
    expected: bool,
) -> Status {
    if state.login_refused() || matches!(received, Some(Received::NotChat { .. })) {
        return Status::NotConnected;
    }
    let lost = match received {
        Some(Received::Closed { .. }) => !expected,
        Some(Received::Failed(_) | Received::Protocol(_) | Received::NotChat { .. }) => true,
        Some(Received::OutputGone | Received::Enough) | None => false,
    };
    if lost || state.failed() {
        Status::Failure
    } else {
        Status::Success
    }
}

/// The notice for a server that did not answer the greeting in time
/// (`pending`: after saying it was working on it).
pub(crate) fn silent_server_notice(
    timeout: std::time::Duration,
    wire: ClientWire,
    pending: bool,
) -> String {
    let timeout = crate::args::format_duration(timeout);
    match wire {
        ClientWire::V1 if pending => {
            "the server said the login was pending but did not finish it in time; \
             nothing was sent"
                .to_string()
        }
        ClientWire::V1 => format!(
            "the server did not answer the login within {timeout} (a pmchat or v1 server \
             answers at once; see --hello-timeout); nothing was sent"
        ),
        ClientWire::Gob => {
            format!("the server did not answer the login within {timeout}; going on unconfirmed")
        }
    }
}
