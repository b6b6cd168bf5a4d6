//! The client's command language, shared by the REPL and batch mode.
//!
//! `send <user> <message>`: the message is everything after the single space
//! that follows the user, kept verbatim. Checks happen here, before anything
//! is sent, with the same rules the server applies.

use crate::sanitize::escape;
use crate::wire::v1::{validate_username, Limits, UsernameError};

/// One parsed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Send `message` to `to`.
    Send { to: &'a str, message: &'a str },
    /// Send `message` to whoever last sent us a message.
    Reply { message: &'a str },
    /// List who is online (needs a server with extensions).
    Who,
    /// Print the command list.
    Help,
    /// Connect again after the connection was lost (the editor only).
    Reconnect,
    /// Stop reading commands.
    Exit,
    /// `/query USER`: send every line that is not a command to `USER`;
    /// `/query` alone: back to commands (the editor only).
    Query { to: Option<&'a str> },
    /// `history [USER] [N]`: the N messages (default 20) before those
    /// shown last, with USER only if given (needs the inbox).
    History { peer: Option<&'a str>, count: u16 },
    /// `trust USER` (`--e2e`): pin USER's devices as they are now, and
    /// send to USER again after a changed key held it.
    Trust { user: &'a str },
    /// `verify USER` (`--e2e`): the safety code of USER's and our keys,
    /// to compare with USER over another channel.
    Verify { user: &'a str },
}

/// What `trust` and `verify` say without `--e2e`.
pub const E2E_ONLY: &str = "trust and verify are for end-to-end encryption: run with --e2e";

/// Messages `history` shows when not told how many.
pub const HISTORY_PAGE: u16 = 20;

/// What `history` says without the inbox.
pub const HISTORY_UNSUPPORTED: &str = "history needs the inbox: a registered name on a server \
     that keeps messages (chat-server --store), in the editor or with --follow";

/// The answer to `who` on a server without extensions.
pub const WHO_UNSUPPORTED: &str = "who is not supported by this server";
/// The same on the gob wire, which has no extensions at all.
pub const WHO_UNSUPPORTED_ON_GOB: &str = "who is not supported on the gob wire";

/// Why a line was refused; nothing is sent for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The first word is not a command.
    #[error("unknown command '{0}' (try 'help')")]
    Unknown(String),
    /// `send` without a user and a message.
    #[error("usage: send <user> <message>")]
    SendUsage,
    /// `reply` without a message.
    #[error("usage: reply <message>")]
    ReplyUsage,
    /// The recipient breaks the username rules.
    #[error("bad recipient '{name}': {reason}")]
    Recipient { name: String, reason: String },
    /// Nothing after the recipient.
    #[error("message is empty")]
    EmptyMessage,
    /// The content is over the server's limit.
    #[error("message is too long: {len} bytes (limit {limit})")]
    TooLong { len: usize, limit: usize },
    /// `help`, `exit` or `quit` followed by something.
    #[error("'{0}' takes no arguments")]
    NoArguments(&'static str),
    /// `/query` with more than a name.
    #[error("usage: /query [<user>]")]
    QueryUsage,
    /// `history` with something else than a name and a count.
    #[error("usage: history [<user>] [<count, 1 to 1000>]")]
    HistoryUsage,
    /// `trust` or `verify` without exactly one name.
    #[error("usage: {0} <user>")]
    UserUsage(&'static str),
}

/// The commands, for `help` and for completion.
pub const COMMANDS: [&str; 14] = [
    "send",
    "reply",
    "who",
    "history",
    "trust",
    "verify",
    "help",
    "reconnect",
    "exit",
    "quit",
    "/msg",
    "/who",
    "/quit",
    "/query",
];

/// What `/query` says in a script.
pub const QUERY_IN_SCRIPTS: &str =
    "/query works in the editor; a script sends every line to one user with --to USER";

/// What `reconnect` says in a script.
pub const RECONNECT_IN_SCRIPTS: &str =
    "reconnect works in the editor; a script reconnects with --follow --reconnect";

/// The text `help` prints.
pub const HELP: &str = "\
commands:
  send <user> <message>   send a private message (the rest of the line, verbatim)
  reply <message>         answer whoever last messaged you
  who                     list who is online (pmchat servers only)
  history [user] [n]      the n messages (20) before those shown last, with user
                          only if given (a registered name, chat-server --store)
  trust <user>            (--e2e) accept <user>'s devices as they are now
  verify <user>           (--e2e) the safety code to compare with <user>
  help                    show this list
  reconnect               connect again after the connection was lost (the editor)
  exit, quit              leave (batch scripts end here too)
  /msg, /who, /quit       the IRC spellings of send, who and quit
  /query <user>           send every line that is not a command to <user>
  /query                  back to commands";

/// [`HELP`] with every line starting with `prefix` (`* ` in the editor,
/// `chat-client: ` on a script's stderr), in one string for one write.
pub fn help_text(prefix: &str) -> String {
    HELP.lines()
        .map(|line| format!("{prefix}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses one line (without its line terminator). Blank lines and lines
/// whose first non-blank character is `#` give `Ok(None)`.
pub fn parse<'a>(line: &'a str, limits: &Limits) -> Result<Option<Command<'a>>, CommandError> {
    let line = line.trim_start();
    if line.trim_end().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (word, rest) = match line.split_once(' ') {
        Some((word, rest)) => (word, Some(rest)),
        None => (line, None),
    };
    let no_arguments = |name: &'static str, command: Command<'a>| match rest {
        Some(rest) if !rest.trim().is_empty() => Err(CommandError::NoArguments(name)),
        _ => Ok(Some(command)),
    };
    match word.trim_end() {
        // `/msg` is the IRC spelling of `send`.
        "send" | "/msg" => {
            let (to, message) = rest
                .and_then(|rest| rest.split_once(' '))
                .ok_or(CommandError::SendUsage)?;
            check_recipient(to, limits)?;
            check_message(message, limits)?;
            Ok(Some(Command::Send { to, message }))
        }
        "reply" => {
            let message = rest.ok_or(CommandError::ReplyUsage)?;
            check_message(message, limits)?;
            Ok(Some(Command::Reply { message }))
        }
        "who" | "/who" => no_arguments("who", Command::Who),
        "history" | "/history" => parse_history(rest, limits),
        word @ ("trust" | "verify") => {
            let user = rest
                .map(str::trim)
                .filter(|r| !r.is_empty() && !r.contains(' '));
            let user = user.ok_or(CommandError::UserUsage(if word == "trust" {
                "trust"
            } else {
                "verify"
            }))?;
            check_recipient(user, limits)?;
            Ok(Some(if word == "trust" {
                Command::Trust { user }
            } else {
                Command::Verify { user }
            }))
        }
        "help" => no_arguments("help", Command::Help),
        "reconnect" => no_arguments("reconnect", Command::Reconnect),
        "exit" => no_arguments("exit", Command::Exit),
        "quit" | "/quit" => no_arguments("quit", Command::Exit),
        "/query" => match rest.map(str::trim).filter(|rest| !rest.is_empty()) {
            None => Ok(Some(Command::Query { to: None })),
            Some(to) if to.contains(' ') => Err(CommandError::QueryUsage),
            Some(to) => {
                check_recipient(to, limits)?;
                Ok(Some(Command::Query { to: Some(to) }))
            }
        },
        other => Err(CommandError::Unknown(escape(other.as_bytes()))),
    }
}

/// `history [USER] [N]`'s arguments.
fn parse_history<'a>(
    rest: Option<&'a str>,
    limits: &Limits,
) -> Result<Option<Command<'a>>, CommandError> {
    let words: Vec<&str> = rest.unwrap_or_default().split_whitespace().collect();
    let count = |word: &str| {
        word.parse::<u16>()
            .ok()
            .filter(|n| (1..=crate::wire::v1::MAX_HISTORY_PAGE).contains(n))
            .ok_or(CommandError::HistoryUsage)
    };
    let numeric = |word: &str| word.bytes().all(|b| b.is_ascii_digit());
    let (peer, count) = match words.as_slice() {
        [] => (None, HISTORY_PAGE),
        [n] if numeric(n) => (None, count(n)?),
        [peer] => (Some(*peer), HISTORY_PAGE),
        [peer, n] => (Some(*peer), count(n)?),
        _ => return Err(CommandError::HistoryUsage),
    };
    if let Some(peer) = peer {
        check_recipient(peer, limits)?;
    }
    Ok(Some(Command::History { peer, count }))
}

/// Parses a line typed while talking to `peer` (`--to`, `/query`): a line
/// starting with `/` is a command, any other is a message to `peer`,
/// verbatim (a blank line sends nothing).
pub fn parse_for<'a>(
    line: &'a str,
    limits: &Limits,
    peer: Option<&'a str>,
) -> Result<Option<Command<'a>>, CommandError> {
    match peer {
        Some(to) if !line.trim_start().starts_with('/') => message_to(to, line, limits),
        _ => parse(line, limits),
    }
}

/// A script line under `--to`: the whole line is a message to `to`,
/// verbatim; a blank line sends nothing.
pub fn message_to<'a>(
    to: &'a str,
    line: &'a str,
    limits: &Limits,
) -> Result<Option<Command<'a>>, CommandError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    check_message(line, limits)?;
    Ok(Some(Command::Send { to, message: line }))
}

/// Checks a recipient name with the server's username rules.
pub fn check_recipient(name: &str, limits: &Limits) -> Result<(), CommandError> {
    validate_username(name.as_bytes(), usize::from(limits.max_username)).map_err(|e| {
        CommandError::Recipient {
            name: escape(name.as_bytes()),
            reason: describe_name_error(&e),
        }
    })
}

/// A name error without the "invalid username" prefix of the server's text.
pub fn describe_name_error(error: &UsernameError) -> String {
    match error {
        UsernameError::Empty => "it is empty".into(),
        UsernameError::TooLong { len, limit } => format!("{len} bytes long (limit {limit})"),
        UsernameError::InvalidByte { byte, position } => format!(
            "byte 0x{byte:02x} at position {position} is not allowed (printable ASCII without spaces only)"
        ),
        UsernameError::Colon { position } => format!(
            "':' at position {position} is not allowed (it would make 'name: message' lines ambiguous)"
        ),
    }
}

/// Checks message content: not empty, within the byte limit.
pub fn check_message(message: &str, limits: &Limits) -> Result<(), CommandError> {
    let limit = usize::from(limits.max_message);
    if message.is_empty() {
        Err(CommandError::EmptyMessage)
    } else if message.len() > limit {
        Err(CommandError::TooLong {
            len: message.len(),
            limit,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Option<Command<'_>>, CommandError> {
        parse(line, &Limits::default())
    }

    #[test]
    fn a_peer_takes_every_line_but_commands() {
        let limits = Limits::default();
        assert_eq!(
            parse_for("  hello there ", &limits, Some("bob")),
            Ok(Some(Command::Send {
                to: "bob",
                message: "  hello there "
            }))
        );
        assert_eq!(parse_for("   ", &limits, Some("bob")), Ok(None));
        assert_eq!(
            parse_for("/msg carol hi", &limits, Some("bob")),
            Ok(Some(Command::Send {
                to: "carol",
                message: "hi"
            }))
        );
        assert_eq!(
            parse_for("/query", &limits, Some("bob")),
            Ok(Some(Command::Query { to: None }))
        );
        assert_eq!(
            p("/query carol"),
            Ok(Some(Command::Query { to: Some("carol") }))
        );
        assert_eq!(p("/query a b"), Err(CommandError::QueryUsage));
        // A script under --to sends even lines that look like commands.
        assert_eq!(
            message_to("bob", "exit", &limits),
            Ok(Some(Command::Send {
                to: "bob",
                message: "exit"
            }))
        );
    }

    #[test]
    fn send_keeps_the_message_verbatim() {
        assert_eq!(
            p("send bob  two  spaces and trailing  "),
            Ok(Some(Command::Send {
                to: "bob",
                message: " two  spaces and trailing  "
            }))
        );
        assert_eq!(
            p("send bob héllo 🌍"),
            Ok(Some(Command::Send {
                to: "bob",
                message: "héllo 🌍"
            }))
        );
    }

    #[test]
    fn send_needs_a_user_and_a_message() {
        assert_eq!(p("send"), Err(CommandError::SendUsage));
        assert_eq!(p("send bob"), Err(CommandError::SendUsage));
        assert_eq!(p("send bob "), Err(CommandError::EmptyMessage));
        assert!(matches!(
            p("send  bob hi"),
            Err(CommandError::Recipient { .. })
        ));
    }

    #[test]
    fn recipient_rules_match_the_server() {
        let long = format!("send {} hi", "a".repeat(33));
        assert!(matches!(p(&long), Err(CommandError::Recipient { .. })));
        let err = p("send b\u{7f}b hi").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad recipient 'b\\x7fb': byte 0x7f at position 1 is not allowed (printable ASCII without spaces only)"
        );
    }

    #[test]
    fn length_is_counted_in_utf8_bytes() {
        let fits = format!("send bob {}", "é".repeat(1024));
        assert!(p(&fits).is_ok());
        let over = format!("send bob {}", "é".repeat(1025));
        assert_eq!(
            p(&over),
            Err(CommandError::TooLong {
                len: 2050,
                limit: 2048
            })
        );
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            p("reply ok then"),
            Ok(Some(Command::Reply { message: "ok then" }))
        );
        assert_eq!(p("reply"), Err(CommandError::ReplyUsage));
        assert_eq!(p("help"), Ok(Some(Command::Help)));
        assert_eq!(p("who"), Ok(Some(Command::Who)));
        let history = |peer, count| Ok(Some(Command::History { peer, count }));
        assert_eq!(p("history"), history(None, HISTORY_PAGE));
        assert_eq!(p("history 50"), history(None, 50));
        assert_eq!(p("history bob"), history(Some("bob"), HISTORY_PAGE));
        assert_eq!(p("history bob 7"), history(Some("bob"), 7));
        assert_eq!(p("history bob 0"), Err(CommandError::HistoryUsage));
        assert_eq!(p("history bob 1001"), Err(CommandError::HistoryUsage));
        assert_eq!(p("history bob 7 more"), Err(CommandError::HistoryUsage));
        assert_eq!(p("exit"), Ok(Some(Command::Exit)));
        assert_eq!(p("quit "), Ok(Some(Command::Exit)));
        assert_eq!(p("exit now"), Err(CommandError::NoArguments("exit")));
        assert_eq!(p("dance bob"), Err(CommandError::Unknown("dance".into())));
    }

    #[test]
    fn irc_aliases() {
        assert_eq!(
            p("/msg bob hi there"),
            Ok(Some(Command::Send {
                to: "bob",
                message: "hi there"
            }))
        );
        assert_eq!(p("/who"), Ok(Some(Command::Who)));
        assert_eq!(p("/quit"), Ok(Some(Command::Exit)));
        assert_eq!(p("/msg bob"), Err(CommandError::SendUsage));
        assert_eq!(p("/join x"), Err(CommandError::Unknown("/join".into())));
    }

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        assert_eq!(p(""), Ok(None));
        assert_eq!(p("   "), Ok(None));
        assert_eq!(p("# send bob hi"), Ok(None));
        assert_eq!(p("  # note"), Ok(None));
    }

    #[test]
    fn unknown_command_cannot_inject_escapes() {
        assert_eq!(
            p("\x1b[2Jboom"),
            Err(CommandError::Unknown("\\x1b[2Jboom".into()))
        );
    }
}

#[cfg(test)]
mod e2e_commands {
    use super::*;

    #[test]
    fn trust_and_verify_take_one_user() {
        let limits = Limits::default();
        assert_eq!(
            parse("trust bob", &limits),
            Ok(Some(Command::Trust { user: "bob" }))
        );
        assert_eq!(
            parse("verify bob ", &limits),
            Ok(Some(Command::Verify { user: "bob" }))
        );
        assert_eq!(
            parse("trust", &limits),
            Err(CommandError::UserUsage("trust"))
        );
        assert_eq!(
            parse("verify a b", &limits),
            Err(CommandError::UserUsage("verify"))
        );
        assert!(parse("trust bad:name", &limits).is_err());
    }
}
