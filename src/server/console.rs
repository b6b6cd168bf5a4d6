//! The operator's console: commands typed on the server's stdin.
//!
//! It runs on a plain thread (stdin reads block) and talks to the server
//! only through a [`ServerHandle`]. End of input ends the console, not the
//! server, so the server can run as a daemon with stdin closed.

use std::io::{BufRead, Write};

use owo_colors::OwoColorize;
use tracing::debug;

use super::bans::parse_ban_duration;
use super::ServerHandle;

/// A name typed at the console, escaped before it is echoed back: typed
/// escape sequences must not drive the operator's terminal.
fn escaped(name: &str) -> String {
    crate::sanitize::escape(name.as_bytes())
}

/// One parsed console line.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleCommand<'a> {
    /// Shut the server down.
    Exit,
    /// List online users.
    Users,
    /// Disconnect a user.
    Kick(&'a str),
    /// Keep a user out, for a while (`None`: until unbanned).
    Ban(&'a str, Option<std::time::Duration>),
    /// Let a banned user in again.
    Unban(&'a str),
    /// Read the TLS certificate again.
    ReloadTls,
    /// List registered names.
    Accounts,
    /// Read the accounts file again (`--force`: even if it unregisters
    /// most names).
    ReloadAccounts { force: bool },
    /// Show the cluster's state.
    Cluster,
    /// List the commands.
    Help,
    /// A blank line.
    Nothing,
    /// Anything else, with a hint of what went wrong.
    Invalid(String),
}

/// Parses one console line.
pub fn parse(line: &str) -> ConsoleCommand<'_> {
    let mut words = line.split_whitespace();
    let Some(command) = words.next() else {
        return ConsoleCommand::Nothing;
    };
    let rest: Vec<&str> = words.collect();
    match (command, rest.as_slice()) {
        ("exit" | "quit", []) => ConsoleCommand::Exit,
        ("users", []) => ConsoleCommand::Users,
        ("help", []) => ConsoleCommand::Help,
        ("cluster", []) => ConsoleCommand::Cluster,
        ("reload-tls", []) => ConsoleCommand::ReloadTls,
        ("accounts", []) => ConsoleCommand::Accounts,
        ("reload-accounts", []) => ConsoleCommand::ReloadAccounts { force: false },
        ("reload-accounts", ["--force"]) => ConsoleCommand::ReloadAccounts { force: true },
        ("kick", [name]) => ConsoleCommand::Kick(name),
        ("kick", _) => ConsoleCommand::Invalid("usage: kick NAME".into()),
        ("ban", [name]) => ConsoleCommand::Ban(name, None),
        ("ban", [name, duration]) => match parse_ban_duration(duration) {
            Ok(duration) => ConsoleCommand::Ban(name, Some(duration)),
            Err(why) => ConsoleCommand::Invalid(why),
        },
        ("ban", _) => ConsoleCommand::Invalid("usage: ban NAME [DURATION]".into()),
        ("unban", [name]) => ConsoleCommand::Unban(name),
        ("unban", _) => ConsoleCommand::Invalid("usage: unban NAME".into()),
        (
            "exit" | "quit" | "users" | "help" | "reload-tls" | "accounts" | "reload-accounts"
            | "cluster",
            _,
        ) => ConsoleCommand::Invalid(format!("'{command}' takes no arguments")),
        _ => ConsoleCommand::Invalid(format!(
            "unknown command '{}' (try 'help')",
            escaped(command)
        )),
    }
}

const HELP: &str = "\
commands:
  users            list who is online
  kick NAME        disconnect NAME
  ban NAME [DUR]   keep NAME out (for 30m, 2h, 7d…; until unbanned without)
  unban NAME       let NAME in again
  accounts         list the registered names, online or not
  reload-tls       read the TLS certificate and key again
  reload-accounts  read the accounts file again (--force: even one that
                   unregisters most names)
  cluster          this node's id, the other live nodes, and how many
                   records read from Redis were dropped as invalid
  help             show this list
  exit             shut the server down";

/// Starts the console on its own thread, reading plain lines from `stdin`
/// until it ends (a terminal goes to `terminal`'s editor instead: see
/// [`super::start_console`]).
pub(super) fn spawn(handle: ServerHandle, color: bool) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(crate::runtime::thread_name("con"))
        .spawn(move || run(std::io::stdin().lock(), std::io::stdout(), &handle, color))
        .map(drop)
}

/// What a console line asks for.
pub(crate) enum Reply {
    /// The server is shutting down: stop reading.
    Exit,
    /// A blank line.
    Nothing,
    /// Text to show the operator.
    Text(String),
}

/// Executes console lines from `input` until it ends or says `exit`.
pub fn run(mut input: impl BufRead, mut out: impl Write, handle: &ServerHandle, color: bool) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                debug!("console input ended; the server keeps running");
                return;
            }
            Ok(_) => {}
        }
        let reply = match execute(&String::from_utf8_lossy(&line), handle, color) {
            Reply::Exit => return,
            Reply::Nothing => continue,
            Reply::Text(reply) => reply,
        };
        // The console's output going away is no reason to stop serving.
        let _ = writeln!(out, "{reply}").and_then(|()| out.flush());
    }
}

/// Executes one console line.
pub(crate) fn execute(text: &str, handle: &ServerHandle, color: bool) -> Reply {
    let reply = match parse(text) {
        ConsoleCommand::Exit => {
            handle.shutdown();
            return Reply::Exit;
        }
        ConsoleCommand::Nothing => return Reply::Nothing,
        ConsoleCommand::Help => HELP.to_string(),
        ConsoleCommand::Invalid(why) => why,
        ConsoleCommand::Users => {
            let names = handle.online();
            let mut reply = format!("{} online", names.len());
            for name in names {
                reply.push_str("\n  ");
                if color {
                    reply.push_str(&name.bold().to_string());
                } else {
                    reply.push_str(&name);
                }
            }
            reply
        }
        ConsoleCommand::Cluster => match handle.cluster() {
            None => "not in a cluster (start the server with --cluster URL)".to_string(),
            Some(state) => format!(
                "node {}\n  {} other live node(s)\n  {} record(s) from Redis dropped as invalid",
                state.node, state.live_nodes, state.rejected
            ),
        },
        ConsoleCommand::ReloadTls => match handle.reload_tls() {
            None => "TLS is not enabled".to_string(),
            Some(Ok(())) => "TLS certificate reloaded".to_string(),
            Some(Err(e)) => format!("TLS certificate not reloaded: {e}"),
        },
        ConsoleCommand::Accounts => match handle.accounts() {
            None => "no accounts file (start the server with --accounts FILE)".to_string(),
            Some(accounts) => {
                let online = accounts.iter().filter(|a| a.online).count();
                let mut reply = format!("{} registered, {online} online", accounts.len());
                for account in accounts {
                    reply.push_str("\n  ");
                    if color {
                        reply.push_str(&account.name.bold().to_string());
                    } else {
                        reply.push_str(&account.name);
                    }
                    if account.online {
                        reply.push_str(" (online)");
                    }
                    if let Some(stored) = account.stored {
                        reply.push_str(&format!(" {stored} stored"));
                    }
                }
                reply
            }
        },
        ConsoleCommand::ReloadAccounts { force } => match handle.reload_accounts(force) {
            None => "no accounts file (start the server with --accounts FILE)".to_string(),
            Some(Ok(reloaded)) => format!(
                "accounts reloaded: {} registered name(s), {} added, {} removed",
                reloaded.count, reloaded.added, reloaded.removed
            ),
            Some(Err(e)) => format!("accounts not reloaded (keeping the previous ones): {e}"),
        },
        ConsoleCommand::Ban(name, duration) => {
            let how_long = duration.map_or_else(
                || "until unbanned".to_string(),
                |d| format!("for {}", crate::args::format_wait(d)),
            );
            match handle.ban(name, duration) {
                Ok(true) => format!("banned '{}' {how_long} (disconnected)", escaped(name)),
                Ok(false) => format!("banned '{}' {how_long}", escaped(name)),
                Err(why) => why,
            }
        }
        ConsoleCommand::Unban(name) => match handle.unban(name) {
            Ok(true) => format!("'{}' may log in again", escaped(name)),
            Ok(false) => format!("'{}' was not banned", escaped(name)),
            Err(why) => why,
        },
        ConsoleCommand::Kick(name) => {
            if handle.kick(name) {
                format!("kicked '{}'", escaped(name))
            } else {
                format!("'{}' is not online", escaped(name))
            }
        }
    };
    Reply::Text(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("exit\n"), ConsoleCommand::Exit);
        assert_eq!(parse("  users "), ConsoleCommand::Users);
        assert_eq!(parse("kick bob"), ConsoleCommand::Kick("bob"));
        assert_eq!(parse(""), ConsoleCommand::Nothing);
        assert_eq!(parse("help"), ConsoleCommand::Help);
        assert_eq!(parse("reload-tls"), ConsoleCommand::ReloadTls);
        assert_eq!(parse("accounts"), ConsoleCommand::Accounts);
        assert_eq!(
            parse("reload-accounts"),
            ConsoleCommand::ReloadAccounts { force: false }
        );
        assert_eq!(
            parse("reload-accounts --force"),
            ConsoleCommand::ReloadAccounts { force: true }
        );
        assert!(matches!(parse("accounts x"), ConsoleCommand::Invalid(_)));
        assert!(matches!(parse("kick"), ConsoleCommand::Invalid(_)));
        assert!(matches!(parse("kick a b"), ConsoleCommand::Invalid(_)));
        assert_eq!(parse("ban bob"), ConsoleCommand::Ban("bob", None));
        assert_eq!(
            parse("ban bob 2h"),
            ConsoleCommand::Ban("bob", Some(std::time::Duration::from_secs(7200)))
        );
        assert!(matches!(parse("ban bob soon"), ConsoleCommand::Invalid(_)));
        assert_eq!(parse("unban bob"), ConsoleCommand::Unban("bob"));
        assert_eq!(
            parse("dance"),
            ConsoleCommand::Invalid("unknown command 'dance' (try 'help')".into())
        );
    }
}
