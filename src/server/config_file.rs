//! `--config FILE`: the server's options in a TOML file, under the same
//! names as the flags (`max-clients = 500`, `tls-cert = "/etc/…"`,
//! `require-tls = true`, `verbose = 1`).
//!
//! The file is turned into the flags it stands for, checked one by one
//! against the very definitions `--help` is made of (so a file takes
//! exactly what the command line takes), and placed before the command
//! line's own arguments: a flag given on the command line wins. An
//! unknown key, a value of the wrong kind or one the option refuses is an
//! error naming the file and its line. `PORT` is not an option and stays
//! on the command line.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory};
use toml::de::{DeTable, DeValue};

use tracing::{info, warn};

use super::cli::ServerArgs;
use super::ServerHandle;

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Options that only make sense on the command line.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

/// A server config file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// The flags it stands for, in the file's order.
    args: Vec<OsString>,
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(format!("{shown} is larger than {MAX_CONFIG_BYTES} bytes"));
        }
        let args = to_args(&text).map_err(|(line, why)| format!("{shown}:{line}: {why}"))?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            args,
        })
    }

    /// The flags the file stands for.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }
}

/// The line (from 1) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The flags `text` stands for; an error with its line.
fn to_args(text: &str) -> Result<Vec<OsString>, (usize, String)> {
    let table = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |span| line_of(text, span.start));
        (line, e.message().to_string())
    })?;
    let command = ServerArgs::command();
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    // The file's order, for errors and for the flags alike.
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut args = Vec::new();
    for (key, value) in entries {
        let line = line_of(text, key.span().start);
        let name = key.get_ref().as_ref();
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(name) && !NOT_IN_FILE.contains(&name))
            .ok_or_else(|| (line, format!("unknown option '{name}'")))?;
        let flag = OsString::from(format!("--{name}"));
        let line = line_of(text, value.span().start);
        match (arg.get_action(), value.get_ref()) {
            (ArgAction::SetTrue, DeValue::Boolean(on)) => {
                if *on {
                    args.push(flag);
                }
            }
            (ArgAction::SetTrue, _) => {
                return Err((line, format!("'{name}' is true or false")));
            }
            (ArgAction::Count, DeValue::Integer(n)) => {
                let count: u8 = n
                    .as_str()
                    .parse()
                    .ok()
                    .filter(|&n| n <= 3)
                    .ok_or_else(|| (line, format!("'{name}' is a count from 0 to 3")))?;
                args.extend((0..count).map(|_| flag.clone()));
            }
            (ArgAction::Count, _) => {
                return Err((line, format!("'{name}' is a count from 0 to 3")));
            }
            (_, value) => {
                let text = match value {
                    DeValue::String(s) => s.to_string(),
                    // Underscores are TOML's digit separators.
                    DeValue::Integer(n) => n.as_str().replace('_', ""),
                    DeValue::Float(f) => f.as_str().replace('_', ""),
                    DeValue::Boolean(_) | DeValue::Datetime(_) => {
                        return Err((line, format!("'{name}' takes a string or a number")));
                    }
                    DeValue::Array(_) | DeValue::Table(_) => {
                        return Err((line, format!("'{name}' takes one value")));
                    }
                };
                // Checked now, by the option's own parser, to name the
                // line; the options are checked again as a whole (what
                // one needs of another) with the command line.
                let alone = [
                    OsString::from("chat-server"),
                    OsString::from("0"),
                    flag.clone(),
                    OsString::from(&text),
                ];
                if let Err(e) = command.clone().try_get_matches_from(alone) {
                    use clap::error::ErrorKind;
                    if matches!(
                        e.kind(),
                        ErrorKind::InvalidValue | ErrorKind::ValueValidation
                    ) {
                        return Err((line, format!("'{name}': {}", clap_reason(&e))));
                    }
                }
                args.push(flag);
                args.push(text.into());
            }
        }
    }
    Ok(args)
}

/// Options a re-read file changes while the server runs; any other
/// change waits for a restart (and is logged as such).
const LIVE: &[&str] = &["max-clients", "registered-only"];

/// Reads the config file again on SIGHUP: applies what may change live
/// and logs what needs a restart. Compared with the file the server
/// started with, so a pending restart is said at every re-read.
pub struct Rereader {
    argv: Vec<OsString>,
    started: ConfigFile,
}

impl Rereader {
    /// For a server started with `argv` (its whole command line) and
    /// `started`, the file it read then.
    pub fn new(argv: Vec<OsString>, started: ConfigFile) -> Rereader {
        Rereader { argv, started }
    }

    /// Reads the file again and applies it to `handle`'s server; an error
    /// leaves the running settings as they are.
    pub fn reread(&self, handle: &ServerHandle) {
        let shown = self.started.path.display();
        let new = match ConfigFile::load(&self.started.path) {
            Ok(new) => new,
            Err(e) => {
                warn!("config not re-read, the running settings stay: {e}");
                return;
            }
        };
        let args = match parse(&self.argv, Some(&new)) {
            Ok(args) => args,
            Err(e) => {
                let why = clap_reason(&e);
                warn!("config {shown} not re-read, the running settings stay: {why}");
                return;
            }
        };
        handle.set_live(args.max_clients, args.registered_only);
        for name in changed(&self.argv, &self.started, &new) {
            if LIVE.contains(&name.as_str()) {
                info!("{name} changed in {shown}: applied to new connections");
            } else {
                warn!("{name} changed in {shown}: it takes effect at the next restart");
            }
        }
    }
}

/// A clap error's first line, without its `error: ` prefix.
fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid value");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The path `--config` names in `argv`, if any (`--config FILE` or
/// `--config=FILE`).
pub fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            return None;
        }
        if word == "--config" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.to_str().and_then(|w| w.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// Parses `argv` (the program's name first) with `file`'s flags before
/// its own: the options the server runs with.
pub fn parse(argv: &[OsString], file: Option<&ConfigFile>) -> Result<ServerArgs, clap::Error> {
    let all = match file {
        Some(file) => merged(argv, file),
        None => argv.to_vec(),
    };
    let matches = ServerArgs::command()
        .args_override_self(true)
        .try_get_matches_from(all)?;
    <ServerArgs as clap::FromArgMatches>::from_arg_matches(&matches)
}

/// The options whose values differ between two parses (by their long
/// names): what a re-read config file changed.
pub fn changed(argv: &[OsString], old: &ConfigFile, new: &ConfigFile) -> Vec<String> {
    let command = ServerArgs::command().args_override_self(true);
    let (Ok(before), Ok(after)) = (
        command.clone().try_get_matches_from(merged(argv, old)),
        command.clone().try_get_matches_from(merged(argv, new)),
    ) else {
        return Vec::new();
    };
    command
        .get_arguments()
        .filter(|arg| {
            let id = arg.get_id().as_str();
            match arg.get_action() {
                ArgAction::Count => before.get_count(id) != after.get_count(id),
                ArgAction::SetTrue => before.get_flag(id) != after.get_flag(id),
                _ => {
                    let raw = |m: &clap::ArgMatches| -> Vec<OsString> {
                        m.get_raw(id)
                            .map(|values| values.map(OsString::from).collect())
                            .unwrap_or_default()
                    };
                    raw(&before) != raw(&after)
                }
            }
        })
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .collect()
}

/// `argv` (the program's name first) with the file's flags put before the
/// command line's own, so that those win.
pub fn merged(argv: &[OsString], file: &ConfigFile) -> Vec<OsString> {
    let mut all = Vec::with_capacity(argv.len() + file.args.len());
    all.extend(argv.first().cloned());
    all.extend(file.args.iter().cloned());
    all.extend(argv.iter().skip(1).cloned());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Result<Vec<String>, (usize, String)> {
        to_args(text).map(|args| {
            args.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn options_become_the_flags_of_the_same_name() {
        let text = "max-clients = 500\nrequire-tls = false\nregistered-only = true\n\
                    handshake-timeout = \"2s\"\nverbose = 2\nqueue-bytes = 1_048_576\n";
        assert_eq!(
            args(text).unwrap(),
            [
                "--max-clients",
                "500",
                "--registered-only",
                "--handshake-timeout",
                "2s",
                "--verbose",
                "--verbose",
                "--queue-bytes",
                "1048576",
            ]
        );
    }

    #[test]
    fn errors_name_their_line() {
        let (line, why) = args("max-clients = 5\n\nmax-clinets = 6\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(why.contains("max-clinets"), "{why}");
        let (line, why) = args("bind = \"::\"\nmax-username-bytes = 300\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(why.contains("max-username-bytes"), "{why}");
        assert_eq!(args("require-tls = \"yes\"\n").unwrap_err().0, 1);
        assert_eq!(args("\n\ncolor = [\"never\"]\n").unwrap_err().0, 3);
        assert_eq!(args("a = \n").unwrap_err().0, 1, "a TOML syntax error");
        assert_eq!(args("config = \"x\"\n").unwrap_err().0, 1);
        assert_eq!(args("default-wire = \"telex\"\n").unwrap_err().0, 1);
    }

    #[test]
    fn the_command_line_wins() {
        let file = ConfigFile {
            path: PathBuf::new(),
            args: vec!["--max-clients".into(), "5".into()],
        };
        let argv: Vec<OsString> = ["chat-server", "0", "--max-clients", "7"]
            .map(OsString::from)
            .to_vec();
        let all = merged(&argv, &file);
        let matches = ServerArgs::command()
            .args_override_self(true)
            .try_get_matches_from(all)
            .unwrap();
        assert_eq!(matches.get_one::<usize>("max_clients"), Some(&7));
        assert_eq!(
            config_path(&["x".into(), "--config=a.toml".into()]),
            Some("a.toml".into())
        );
        assert_eq!(
            config_path(&["x".into(), "--config".into(), "b".into()]),
            Some("b".into())
        );
    }
}
