//! Command-line options of `chat-client`; the doc comments are `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::command::describe_name_error;
use super::wire::ClientWire;
use crate::args::{parse_duration, ColorChoice};
use crate::wire::v1::validate_username;

/// A scriptable, line-oriented client for pmchat servers (and any v1 server).
///
/// With a terminal on stdin it is an interactive editor (history, tab
/// completion, incoming messages above the prompt); otherwise it reads
/// commands from stdin as a script. Received messages are printed on stdout
/// as `from: content`, one per line; errors go to stderr as
/// `chat-client: error: TEXT`.
#[derive(Debug, Parser)]
#[command(
    group(clap::ArgGroup::new("following").args(["follow", "until_caught_up", "exec"]).multiple(true)),
    name = "chat-client",
    version,
    after_long_help = "\
Commands:
  send <user> <message>   the message is the rest of the line, verbatim
  reply <message>         answer whoever last messaged you
  who                     list who is online (pmchat servers only)
  help                    list the commands
  reconnect               connect again after the connection was lost (the editor)
  exit, quit              leave
IRC habits work too: /msg <user> <message>, /who, /quit, and /query <user>
(every line that is not a command goes to <user>; /query alone ends it).

Registered names: the password comes from --password-file FILE, else the
PMCHAT_PASSWORD environment variable, else (in the editor, when the server
asks for one) a prompt that does not echo. Never from an argument.

Receipts: a pmchat server accounts for every message a script sends. A
refused one is reported against its line on stderr, `<stdin>:5: 'dave' is not
connected`, and the client leaves as soon as every line is accounted for.
Accepted means queued to the connected recipient, not read by them.

Exit status:
  0  scripts: everything was sent and accepted, and no error was received;
     the editor: you left (exit, quit, Ctrl-D)
  1  a line was rejected here or refused by the server, the server reported
     an error, or the connection was lost
     (the editor: you left after the connection was lost)
  2  usage error
  3  could not connect, the server refused the username or the password,
     or it is not a chat server

Examples:
  chat-client localhost 9000 alice
  chat-client localhost 9000 alice < script.txt
  chat-client localhost 9000 alice -f monday.txt -f tuesday.txt
  chat-client localhost 9000 alice send bob hello there
  echo 'hi bob' | chat-client localhost 9000 alice --to bob
  chat-client localhost 9000 alice --follow --count 1 < /dev/null
  chat-client localhost 9000 alice --follow --reconnect < /dev/null | grep --line-buffered '^bob:'"
)]
pub struct ClientArgs {
    /// Server host name or IP address [default: PMCHAT_HOST], or the name
    /// of a server in the config file (then PORT and USERNAME come from it).
    #[arg(value_name = "HOST")]
    host_arg: Option<String>,

    /// Server port [default: PMCHAT_PORT].
    #[arg(value_name = "PORT")]
    port_arg: Option<String>,

    /// Your username [default: PMCHAT_USER]: printable ASCII without spaces
    /// or ':', at most as long as the server allows (32 bytes by default;
    /// the protocol's maximum is 255, and the server decides).
    #[arg(value_name = "USERNAME")]
    username_arg: Option<String>,

    /// The server's host, once resolved ([`ClientArgs::resolve`]).
    #[arg(skip)]
    pub host: String,
    /// The server's port, once resolved.
    #[arg(skip)]
    pub port: u16,
    /// The username, once resolved.
    #[arg(skip)]
    pub username: String,

    /// The client config file [default: $XDG_CONFIG_HOME/pmchat/client.toml,
    /// else ~/.config/pmchat/client.toml]: named servers with host, port,
    /// name, tls, tls_ca, password_file and e2e, and `default` (see the man
    /// page).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// One command to run instead of a script, like `redis-cli`:
    /// `send bob hello there` sends one message, waits for the server to
    /// account for it and exits (0 accepted, 1 refused); `who` lists who is
    /// online. Everything after the username is the command.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        conflicts_with_all = ["files", "interactive", "follow"]
    )]
    pub command: Vec<String>,

    /// Send every line to USER, verbatim, as `nc` or `websocat` would: every
    /// script line (blank lines skipped), or every editor line that does
    /// not start with `/` (like `/query USER`).
    #[arg(long, value_name = "USER", value_parser = parse_username)]
    pub to: Option<String>,

    /// Interactive editor even if stdin is not a terminal (on a terminal it
    /// is the default, except with --until-caught-up, --exec or --count).
    #[arg(long, conflicts_with = "batch")]
    pub interactive: bool,

    /// Read commands from stdin as a script even if it is a terminal.
    #[arg(long)]
    pub batch: bool,

    /// Read the script from FILE instead of stdin (implies batch mode).
    /// Repeatable: the files run in order, on one connection; `-` is
    /// stdin. Errors about a line name its file: `FILE:LINE: …`.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "interactive"
    )]
    pub files: Vec<PathBuf>,

    /// After the end of input keep receiving until the server closes the
    /// connection or SIGINT/SIGTERM arrives.
    #[arg(long, conflicts_with = "interactive")]
    pub follow: bool,

    /// With --follow (or --exec, --until-caught-up, which imply it): exit
    /// after N messages have been printed (or run), logging out cleanly,
    /// like `nats sub --count`.
    #[arg(long, value_name = "N", requires = "following",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// With --follow on a server that keeps messages for registered names
    /// (chat-server --store): where to start the replay of your log
    /// instead of your cursor (the id of the last message this device
    /// printed, kept in the state directory): after message id CURSOR (as
    /// --json shows it), `all` for everything the server keeps, or a
    /// duration (`90m`, `2d`) for what came in that long ago since.
    #[arg(long, value_name = "CURSOR|all|DURATION", requires = "following", value_parser = parse_since)]
    pub since: Option<Since>,

    /// Print what the server kept for you after your cursor (or --since),
    /// then exit 0, moving the cursor: for cron jobs. A script's lines
    /// (stdin, --file) are sent too, and the run ends only once each is
    /// accounted for. Implies --follow; exit status 1 if the server keeps
    /// no messages for the name. On a terminal, as with --exec and
    /// --count, no editor: nothing is read from it (unless --batch).
    #[arg(long, conflicts_with = "interactive")]
    pub until_caught_up: bool,

    /// Run CMD (through sh -c) for each message instead of printing it:
    /// the content on its stdin, the sender, id and time in PMCHAT_FROM,
    /// PMCHAT_ID and PMCHAT_TS. On a server that keeps messages the cursor
    /// moves past a message only once CMD exited 0 for it, so each is
    /// processed effectively once across restarts; a failing CMD is run
    /// again with back-off, and after 5 failures the client stops with
    /// exit status 1, the next run starting with that message. Implies
    /// --follow.
    #[arg(long, value_name = "CMD", conflicts_with_all = ["interactive", "json"])]
    pub exec: Option<String>,

    /// With --follow: when the connection is lost (the server restarted,
    /// the network dropped), connect again with capped exponential back-off
    /// and jitter, log in again under the same name (waiting while our
    /// stale session still holds it), and go on. Each attempt is one line
    /// on stderr.
    #[arg(long, requires = "follow")]
    pub reconnect: bool,

    /// At the end of input, how long to wait for the server to deliver the
    /// outcome of what was sent before giving up. Against a server with
    /// receipts (pmchat) the client leaves as soon as every line is
    /// accounted for, and this bounds only the silence between receipts.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long to wait for the server's answer to our login (HELLO),
    /// beyond what a server that says the login is pending asks for. No
    /// answer means the login failed: nothing is sent, exit status 3.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub hello_timeout: Duration,

    /// Do not show users joining and leaving in the interactive editor.
    #[arg(long)]
    pub no_presence: bool,

    /// Connect with TLS, verifying the server's certificate and host name
    /// against the system's trusted roots (or --tls-ca). A certificate that
    /// does not verify is an error (exit 3), never a fall-back to plain.
    #[arg(long)]
    pub tls: bool,

    /// Trust only the CA certificates in this PEM file (for example the
    /// ca.pem written by a chat-server with a self-signed certificate).
    /// Implies --tls.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// The wire to speak: pmchat's v1 (with its extensions when the server
    /// has them), or gob, the wire of the original Go programs (no `who`,
    /// no presence, no passwords).
    #[arg(long, value_name = "WIRE", value_enum, default_value_t = ClientWire::V1)]
    pub wire: ClientWire,

    /// Pause after each message sent, so that each arrives on its own
    /// [default: 0, or 20ms with --wire gob: the original gob server loses
    /// messages that arrive together].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub send_interval: Option<Duration>,

    /// Log in to a registered name with the password in the first line of
    /// FILE (see also PMCHAT_PASSWORD). Sent over TLS only, unless
    /// --allow-plaintext-password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// End-to-end encryption (a registered name, with its password): each
    /// message is encrypted (Olm) for every device of its recipient, so
    /// the server routes and stores only ciphertext; messages received are
    /// decrypted. Refuses to send to a user without keys unless
    /// --allow-plaintext (the editor asks each time).
    #[arg(long)]
    pub e2e: bool,

    /// With --e2e: send to a user who has published no keys (a v1 peer, an
    /// unregistered name, a client without --e2e) unencrypted.
    #[arg(long, requires = "e2e")]
    pub allow_plaintext: bool,

    /// Send the password over a plain (unencrypted) connection too. Anyone
    /// on the path can read it: for trusted networks only.
    #[arg(long)]
    pub allow_plaintext_password: bool,

    /// How long to wait for the TCP connection (and again for the TLS
    /// handshake).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Print one JSON object per line instead of plain text.
    #[arg(long)]
    pub json: bool,

    /// With --json: also print an object for every message the server
    /// accounts for, {"type":"accepted",…} or {"type":"refused",…,"code":…,
    /// "text":…}, with the script line it came from (servers with receipts).
    #[arg(long, requires = "json")]
    pub receipts: bool,

    /// Start every received message with its local receive time (HH:MM:SS);
    /// with --json, add an RFC 3339 "ts" field to every object.
    #[arg(long)]
    pub timestamps: bool,

    /// Colour usernames and errors.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Interactive history file, appended to [default:
    /// $XDG_STATE_HOME/pmchat/history, else ~/.local/state/pmchat/history].
    /// The names messaged on each server are kept beside it, in
    /// PATH.recipients.
    #[arg(long, value_name = "PATH", conflicts_with = "no_history")]
    pub history_file: Option<PathBuf>,

    /// Keep no interactive history.
    #[arg(long)]
    pub no_history: bool,
}

/// The environment variables that stand in for HOST, PORT and USERNAME.
pub const HOST_VARIABLE: &str = "PMCHAT_HOST";
/// See [`HOST_VARIABLE`].
pub const PORT_VARIABLE: &str = "PMCHAT_PORT";
/// See [`HOST_VARIABLE`].
pub const USER_VARIABLE: &str = "PMCHAT_USER";

/// Checks the username against the protocol's own maximum only: the
/// server's limit is not known before login, and the server says if the
/// name is too long for it.
fn parse_username(name: &str) -> Result<String, String> {
    let limit = usize::from(u8::MAX);
    validate_username(name.as_bytes(), limit)
        .map(|()| name.to_string())
        .map_err(|e| describe_name_error(&e))
}

/// The send interval `--wire gob` uses unless told otherwise.
pub const GOB_SEND_INTERVAL: Duration = Duration::from_millis(20);

impl ClientArgs {
    /// Fills in the server and the username: a server named in the config
    /// file (its words after it are the command), else HOST, PORT and
    /// USERNAME as given, each missing one from its environment variable,
    /// else the file's `default` server. Options given on the command line
    /// win over the file's. `Err` is a usage error.
    pub fn resolve(mut self) -> Result<ClientArgs, String> {
        let (path, required) = match &self.config {
            Some(path) => (Some(path.clone()), true),
            None => (super::config::default_path(), false),
        };
        let config = match &path {
            Some(path) => super::config::ConfigFile::load(path, required)?,
            None => super::config::ConfigFile::default(),
        };
        let mut words: Vec<String> = [
            self.host_arg.take(),
            self.port_arg.take(),
            self.username_arg.take(),
        ]
        .into_iter()
        .flatten()
        .chain(std::mem::take(&mut self.command))
        .collect();
        let nothing_given = words.is_empty() && env(HOST_VARIABLE).is_none();
        let named = match words.first() {
            Some(first) => config.servers.get(first).inspect(|_| {
                words.remove(0);
            }),
            None if nothing_given => config.default.as_ref().and_then(|d| config.servers.get(d)),
            None => None,
        };
        if let Some(entry) = named {
            self.host = entry.host.clone();
            self.port = entry.port;
            let name = entry.name.clone().or_else(|| env(USER_VARIABLE));
            self.username =
                name.ok_or("the config file's server has no name, and PMCHAT_USER is not set")?;
            self.command = words;
            if self.tls_ca.is_none() {
                self.tls_ca = entry.tls_ca.clone();
            }
            self.tls |= entry.tls;
            self.e2e |= entry.e2e;
            if self.password_file.is_none() {
                self.password_file = entry.password_file.clone();
            }
        } else {
            let mut words = words.into_iter();
            let mut next = |variable: &str, what: &str| {
                words.next().or_else(|| env(variable)).ok_or_else(|| {
                    format!(
                        "no {what} given: chat-client HOST PORT USERNAME, {HOST_VARIABLE}/\
                         {PORT_VARIABLE}/{USER_VARIABLE}, or a server named in the config file"
                    )
                })
            };
            self.host = next(HOST_VARIABLE, "HOST")?;
            let port = next(PORT_VARIABLE, "PORT")?;
            self.username = next(USER_VARIABLE, "USERNAME")?;
            self.port = port
                .parse()
                .map_err(|_| format!("'{port}' is not a port (0 to 65535)"))?;
            self.command = words.collect();
        }
        self.username = parse_username(&self.username)?;
        self.follow |= self.until_caught_up || self.exec.is_some();
        let alone = self.follow || self.interactive || !self.files.is_empty();
        if !self.command.is_empty() && alone {
            return Err(
                "a COMMAND after the username runs alone: no --follow, --interactive or --file"
                    .into(),
            );
        }
        Ok(self)
    }

    /// The pause after each message sent.
    pub fn send_interval(&self) -> Duration {
        self.send_interval.unwrap_or(match self.wire {
            ClientWire::V1 => Duration::ZERO,
            ClientWire::Gob => GOB_SEND_INTERVAL,
        })
    }

    /// Where interactive history lives, or `None` without history.
    pub fn history_path(&self) -> Option<PathBuf> {
        if self.no_history {
            return None;
        }
        if let Some(path) = &self.history_file {
            return Some(path.clone());
        }
        Some(self.state_dir()?.join("history"))
    }

    /// The client's state directory: `$XDG_STATE_HOME/pmchat`, else
    /// `~/.local/state/pmchat` (history, recipients, device tokens).
    pub fn state_dir(&self) -> Option<PathBuf> {
        let state_dir = std::env::var_os("XDG_STATE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|home| !home.is_empty())
                    .map(|home| PathBuf::from(home).join(".local/state"))
            })?;
        Some(state_dir.join("pmchat"))
    }
}

/// Where `--since` starts the replay of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Everything the server keeps.
    All,
    /// After this message id.
    Cursor(u64),
    /// What was logged within this long before now.
    Ago(Duration),
}

fn parse_since(text: &str) -> Result<Since, String> {
    if text == "all" {
        return Ok(Since::All);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Since::Cursor)
            .map_err(|_| format!("'{text}' is not a message id"));
    }
    let hours = |n: &str, per: u64| n.parse::<u64>().ok().map(|n| Duration::from_secs(n * per));
    let age = match text.as_bytes().last() {
        Some(b'h') => {
            hours(&text[..text.len() - 1], 3600).ok_or_else(|| "not a number of hours".into())
        }
        Some(b'd') => {
            hours(&text[..text.len() - 1], 86_400).ok_or_else(|| "not a number of days".into())
        }
        _ => parse_duration(text),
    };
    age.map(Since::Ago)
        .map_err(|e| format!("'{text}' is not a message id, 'all' or a duration ({e})"))
}

/// A non-empty environment variable.
fn env(variable: &str) -> Option<String> {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        ClientArgs::command().debug_assert();
    }

    /// Parses and resolves without any config file.
    fn resolved(words: &[&str]) -> Result<ClientArgs, String> {
        let mut args = vec!["c", "--config", "/dev/null"];
        args.extend_from_slice(words);
        ClientArgs::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .resolve()
    }

    #[test]
    fn bad_usernames_are_usage_errors() {
        for name in ["", "two words", &"a".repeat(256), "tab\there", "bob:"] {
            assert!(resolved(&["localhost", "9000", name]).is_err(), "{name:?}");
        }
        assert!(resolved(&["::1", "9000", "alice"]).is_ok());
        // Longer than the default limit: the server decides.
        let long = "a".repeat(255);
        assert!(resolved(&["::1", "9000", &long]).is_ok());
        assert!(resolved(&["::1", "port", "alice"]).is_err());
    }

    #[test]
    fn everything_after_the_username_is_one_command() {
        let args = resolved(&["::1", "9000", "alice", "send", "bob", "-v", "hi"]).unwrap();
        assert_eq!(args.command, ["send", "bob", "-v", "hi"]);
        let args = resolved(&["--to", "bob", "::1", "9000", "alice"]).unwrap();
        assert_eq!(args.to.as_deref(), Some("bob"));
        assert!(ClientArgs::try_parse_from(["c", "::1", "9000", "alice", "--count", "1"]).is_err());
    }
}
