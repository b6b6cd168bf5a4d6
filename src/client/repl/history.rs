//! The editor's history file (appended, never rewritten) and the
//! per-server list of names messaged, beside it.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;

use super::complete::ChatHelper;
use crate::client::state::{rememberable, MAX_KNOWN_USERS};

/// Reads the history file; a missing one is the normal first run.
pub(super) fn load_history(editor: &mut Editor<ChatHelper, FileHistory>, path: &Path) {
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
pub(super) fn append_history(editor: &mut Editor<ChatHelper, FileHistory>, path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = create_private_dir(dir);
    }
    if let Err(e) = editor.append_history(path) {
        crate::err_line!("chat-client: cannot save history {}: {e}", path.display());
    }
}

/// Creates the state directory (and its parents) readable by us only.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
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
            let _ = create_private_dir(dir);
        }
        // Who you talk to is nobody else's business: 0600, like the
        // history itself.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .ok();
        if let Some(file) = &file {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_remembered_per_server() {
        let dir = std::env::temp_dir().join(format!("pmchat-recipients-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let history = dir.join("history");
        let mut one = Recipients::open(&history, "Host-A:9000");
        one.used("carol");
        let mut path = history.clone().into_os_string();
        path.push(".recipients");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
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
}
