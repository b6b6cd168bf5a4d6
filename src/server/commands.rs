//! The operator's commands, whoever types them: parsed from one line and
//! run against a [`ServerHandle`], answered as text (the console's words)
//! and as JSON (the control socket's `--json`), with whether it worked.
//!
//! The console ([`super::console`]) and the control socket
//! ([`super::admin`]) both run them here, on their own plain threads: a
//! command may wait (for the cluster's Redis, for the store), and nothing
//! here runs on a worker.

use owo_colors::OwoColorize;

use super::bans::parse_ban_duration;
use super::ServerHandle;
use crate::json::push_string;

/// A name typed by the operator, escaped before it is echoed back: typed
/// escape sequences must not drive the operator's terminal.
fn escaped(name: &str) -> String {
    crate::sanitize::escape(name.as_bytes())
}

/// One parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
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
    /// Show what the server counts.
    Stats,
    /// Print a registered name's history as JSON lines.
    HistoryExport(&'a str),
    /// List the commands.
    Help,
    /// A blank line.
    Nothing,
    /// Anything else, with a hint of what went wrong.
    Invalid(String),
}

/// Parses one command line.
pub fn parse(line: &str) -> Command<'_> {
    let mut words = line.split_whitespace();
    let Some(command) = words.next() else {
        return Command::Nothing;
    };
    let rest: Vec<&str> = words.collect();
    match (command, rest.as_slice()) {
        ("exit" | "quit", []) => Command::Exit,
        ("users", []) => Command::Users,
        ("help", []) => Command::Help,
        ("cluster", []) => Command::Cluster,
        ("stats", []) => Command::Stats,
        ("reload-tls", []) => Command::ReloadTls,
        ("accounts", []) => Command::Accounts,
        ("reload-accounts", []) => Command::ReloadAccounts { force: false },
        ("reload-accounts", ["--force"]) => Command::ReloadAccounts { force: true },
        ("kick", [name]) => Command::Kick(name),
        ("kick", _) => Command::Invalid("usage: kick NAME".into()),
        ("ban", [name]) => Command::Ban(name, None),
        ("ban", [name, duration]) => match parse_ban_duration(duration) {
            Ok(duration) => Command::Ban(name, Some(duration)),
            Err(why) => Command::Invalid(why),
        },
        ("ban", _) => Command::Invalid("usage: ban NAME [DURATION]".into()),
        ("unban", [name]) => Command::Unban(name),
        ("unban", _) => Command::Invalid("usage: unban NAME".into()),
        ("history", ["export", name]) => Command::HistoryExport(name),
        ("history", _) => Command::Invalid("usage: history export NAME".into()),
        (
            "exit" | "quit" | "users" | "help" | "reload-tls" | "accounts" | "reload-accounts"
            | "cluster" | "stats",
            _,
        ) => Command::Invalid(format!("'{command}' takes no arguments")),
        _ => Command::Invalid(format!(
            "unknown command '{}' (try 'help')",
            escaped(command)
        )),
    }
}

pub(crate) const HELP: &str = "\
commands:
  users            list who is online
  kick NAME        disconnect NAME
  ban NAME [DUR]   keep NAME out (for 30m, 2h, 7d…; until unbanned without)
  unban NAME       let NAME in again
  accounts         list the registered names, online or not
  reload-tls       read the TLS certificate and key again
  reload-accounts  read the accounts file again (--force: even one that
                   unregisters most names)
  history export NAME
                   print NAME's stored history as JSON lines
  stats            what the server counts (as --metrics serves it)
  cluster          this node's id, the other live nodes, and how many
                   records read from Redis were dropped as invalid
  help             show this list
  exit             shut the server down";

/// Whether a command did what it was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Done,
    /// It could not be done (nobody by that name online, a reload that
    /// failed, no accounts file…).
    Failed,
    /// The line was not a command.
    Usage,
}

/// What a command answers.
#[derive(Debug)]
pub struct Answer {
    pub outcome: Outcome,
    /// The console's words.
    pub text: String,
    /// The same as one JSON object (or JSON lines, for an export).
    pub json: String,
}

fn done(text: String, json: String) -> Answer {
    Answer {
        outcome: Outcome::Done,
        text,
        json,
    }
}

fn failed(text: String) -> Answer {
    let mut json = String::from("{\"error\":");
    push_string(&mut json, text.as_bytes());
    json.push('}');
    Answer {
        outcome: Outcome::Failed,
        text,
        json,
    }
}

fn json_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut json = String::from("[");
    for (i, name) in names.enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_string(&mut json, name.as_bytes());
    }
    json.push(']');
    json
}

/// Runs one parsed command; `None` for a blank line. `color` colours
/// names in the text.
pub fn run(command: Command<'_>, handle: &ServerHandle, color: bool) -> Option<Answer> {
    let bold = |name: &str| {
        if color {
            name.bold().to_string()
        } else {
            name.to_string()
        }
    };
    let quoted = |name: &str| {
        let mut json = String::new();
        push_string(&mut json, name.as_bytes());
        json
    };
    Some(match command {
        Command::Nothing => return None,
        Command::Exit => {
            handle.shutdown();
            done(
                "shutting down".to_string(),
                "{\"shutting_down\":true}".into(),
            )
        }
        Command::Help => done(HELP.to_string(), {
            let mut json = String::from("{\"help\":");
            push_string(&mut json, HELP.as_bytes());
            json + "}"
        }),
        Command::Invalid(why) => Answer {
            outcome: Outcome::Usage,
            ..failed(why)
        },
        Command::Users => {
            let names = handle.online();
            let mut text = format!("{} online", names.len());
            for name in &names {
                text.push_str("\n  ");
                text.push_str(&bold(name));
            }
            let json = format!(
                "{{\"online\":{}}}",
                json_names(names.iter().map(String::as_str))
            );
            done(text, json)
        }
        Command::Cluster => match handle.cluster() {
            None => failed("not in a cluster (start the server with --cluster URL)".into()),
            Some(state) => done(
                format!(
                    "node {}\n  {} other live node(s)\n  {} record(s) from Redis dropped as invalid",
                    state.node, state.live_nodes, state.rejected
                ),
                format!(
                    "{{\"node\":{},\"live_nodes\":{},\"rejected\":{}}}",
                    quoted(&state.node),
                    state.live_nodes,
                    state.rejected
                ),
            ),
        },
        Command::Stats => {
            let snapshot = handle.stats();
            done(super::metrics::as_text(&snapshot), super::metrics::as_json(&snapshot))
        }
        Command::ReloadTls => match handle.reload_tls() {
            None => failed("TLS is not enabled".into()),
            Some(Ok(())) => done(
                "TLS certificate reloaded".into(),
                "{\"reloaded\":true}".into(),
            ),
            Some(Err(e)) => failed(format!("TLS certificate not reloaded: {e}")),
        },
        Command::Accounts => match handle.accounts() {
            None => failed("no accounts file (start the server with --accounts FILE)".into()),
            Some(accounts) => {
                let online = accounts.iter().filter(|a| a.online).count();
                let mut text = format!("{} registered, {online} online", accounts.len());
                let mut json = String::from("{\"accounts\":[");
                for (i, account) in accounts.iter().enumerate() {
                    text.push_str("\n  ");
                    text.push_str(&bold(&account.name));
                    if account.online {
                        text.push_str(" (online)");
                    }
                    if let Some(stored) = account.stored {
                        text.push_str(&format!(" {stored} stored"));
                    }
                    if i > 0 {
                        json.push(',');
                    }
                    let stored = account.stored.map_or("null".into(), |n| n.to_string());
                    json.push_str(&format!(
                        "{{\"name\":{},\"online\":{},\"stored\":{stored}}}",
                        quoted(&account.name),
                        account.online
                    ));
                }
                json.push_str("]}");
                done(text, json)
            }
        },
        Command::ReloadAccounts { force } => match handle.reload_accounts(force) {
            None => failed("no accounts file (start the server with --accounts FILE)".into()),
            Some(Ok(reloaded)) => done(
                format!(
                    "accounts reloaded: {} registered name(s), {} added, {} removed",
                    reloaded.count, reloaded.added, reloaded.removed
                ),
                format!(
                    "{{\"reloaded\":true,\"registered\":{},\"added\":{},\"removed\":{}}}",
                    reloaded.count, reloaded.added, reloaded.removed
                ),
            ),
            Some(Err(e)) => failed(format!(
                "accounts not reloaded (keeping the previous ones): {e}"
            )),
        },
        Command::Ban(name, duration) => {
            let how_long = duration.map_or_else(
                || "until unbanned".to_string(),
                |d| format!("for {}", crate::args::format_wait(d)),
            );
            let seconds = duration.map_or("null".into(), |d| d.as_secs().to_string());
            match handle.ban(name, duration) {
                Ok(online) => done(
                    if online {
                        format!("banned '{}' {how_long} (disconnected)", escaped(name))
                    } else {
                        format!("banned '{}' {how_long}", escaped(name))
                    },
                    format!(
                        "{{\"banned\":{},\"seconds\":{seconds},\"disconnected\":{online}}}",
                        quoted(name)
                    ),
                ),
                Err(why) => failed(why),
            }
        }
        Command::Unban(name) => match handle.unban(name) {
            Ok(true) => done(
                format!("'{}' may log in again", escaped(name)),
                format!("{{\"unbanned\":{}}}", quoted(name)),
            ),
            Ok(false) => failed(format!("'{}' was not banned", escaped(name))),
            Err(why) => failed(why),
        },
        Command::Kick(name) => {
            if handle.kick(name) {
                done(
                    format!("kicked '{}'", escaped(name)),
                    format!("{{\"kicked\":{}}}", quoted(name)),
                )
            } else {
                failed(format!("'{}' is not online", escaped(name)))
            }
        }
        Command::HistoryExport(name) => match handle.export_history(name) {
            // JSON lines either way: `chat-server history export`'s format.
            Ok(lines) => done(lines.trim_end().to_string(), lines.trim_end().to_string()),
            Err(why) => failed(why),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("exit\n"), Command::Exit);
        assert_eq!(parse("  users "), Command::Users);
        assert_eq!(parse("kick bob"), Command::Kick("bob"));
        assert_eq!(parse(""), Command::Nothing);
        assert_eq!(parse("help"), Command::Help);
        assert_eq!(parse("stats"), Command::Stats);
        assert_eq!(parse("reload-tls"), Command::ReloadTls);
        assert_eq!(parse("accounts"), Command::Accounts);
        assert_eq!(
            parse("reload-accounts"),
            Command::ReloadAccounts { force: false }
        );
        assert_eq!(
            parse("reload-accounts --force"),
            Command::ReloadAccounts { force: true }
        );
        assert!(matches!(parse("accounts x"), Command::Invalid(_)));
        assert!(matches!(parse("kick"), Command::Invalid(_)));
        assert!(matches!(parse("kick a b"), Command::Invalid(_)));
        assert_eq!(parse("ban bob"), Command::Ban("bob", None));
        assert_eq!(
            parse("ban bob 2h"),
            Command::Ban("bob", Some(std::time::Duration::from_secs(7200)))
        );
        assert!(matches!(parse("ban bob soon"), Command::Invalid(_)));
        assert_eq!(parse("unban bob"), Command::Unban("bob"));
        assert_eq!(parse("history export bob"), Command::HistoryExport("bob"));
        assert!(matches!(parse("history purge bob"), Command::Invalid(_)));
        assert_eq!(
            parse("dance"),
            Command::Invalid("unknown command 'dance' (try 'help')".into())
        );
    }
}
