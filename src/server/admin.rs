//! `--admin-socket PATH`: the console's commands on a Unix socket, for
//! `chat-server admin PATH COMMAND…` (and scripts, systemd units, an
//! operator without the server's terminal).
//!
//! Who may use it is who may open the socket: it is created with mode
//! 0600 (under a umask that allows nothing else, so it is never reachable
//! by others, not even for an instant), owned by the server's user, and
//! removed at exit. An existing file at PATH is replaced only if it is a
//! socket nobody answers on (a previous run's, left by a crash); anything
//! else is an error, never deleted.
//!
//! The exchange is one line each way, then the answer's body: the client
//! sends `text COMMAND…` or `json COMMAND…`; the server answers `done`,
//! `failed` or `usage` on a line of its own, then the command's output,
//! and closes. Connections are served one at a time on the `adm` thread,
//! each bounded in size and time, so a client that never finishes its
//! line holds the socket for [`REQUEST_TIMEOUT`] at most.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::commands::{self, Outcome};
use super::ServerHandle;

/// The longest request line.
const MAX_REQUEST: u64 = 4096;
/// How long a request may take to arrive, and its answer to be taken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket, bound; removed when dropped (if it is still the
/// file this server made).
pub struct AdminSocket {
    path: PathBuf,
    /// The socket file's device and inode, to recognise it at removal.
    identity: (u64, u64),
    listener: Option<UnixListener>,
}

impl AdminSocket {
    /// Creates the socket at `path`, mode 0600.
    pub fn bind(path: &Path) -> Result<AdminSocket, String> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(format!("{shown}: another server answers on it"));
                }
                // A socket nobody answers on: a previous run's.
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot replace the stale socket {shown}: {e}"))?;
            }
            Ok(_) => return Err(format!("{shown} exists and is not a socket")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        // The umask is the process's: set only while binding, at start,
        // before any thread that creates files runs.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old);
        let listener = bound.map_err(|e| format!("cannot create {shown}: {e}"))?;
        // Belt and braces: the mode is exactly 0600 whatever the umask did.
        let identity = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::symlink_metadata(path))
            .map(|meta| (meta.dev(), meta.ino()));
        match identity {
            Ok(identity) => Ok(AdminSocket {
                path: path.to_path_buf(),
                identity,
                listener: Some(listener),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(format!("cannot set the mode of {shown}: {e}"))
            }
        }
    }

    /// Serves commands on a thread of its own until the process ends.
    pub fn spawn(&mut self, handle: ServerHandle) -> std::io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name(crate::runtime::thread_name("adm"))
            .spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(e) = serve(stream, &handle) {
                                debug!("control socket: {e}");
                            }
                        }
                        Err(e) => {
                            warn!("control socket: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map(drop)
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        // Only the file this server made: one another process put there
        // since is not ours to delete.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reads one request, runs it, answers.
fn serve(stream: UnixStream, handle: &ServerHandle) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let mut out = &stream;
    let Some(line) = line.strip_suffix('\n') else {
        return out.write_all(b"usage\nthe request was cut short or too long\n");
    };
    let (json, command) = match line.split_once(' ') {
        Some(("json", command)) => (true, command),
        Some(("text", command)) => (false, command),
        _ => return out.write_all(b"usage\nnot a request (text|json COMMAND...)\n"),
    };
    let parsed = commands::parse(command);
    let Some(answer) = commands::run(parsed, handle, false) else {
        return out.write_all(b"usage\nno command\n");
    };
    let status = match answer.outcome {
        Outcome::Done => "done",
        Outcome::Failed => "failed",
        Outcome::Usage => "usage",
    };
    if answer.outcome != Outcome::Usage {
        // What an operator did through the socket is in the log, as a
        // console line would be in the terminal's scrollback.
        let word = command.split_whitespace().next().unwrap_or("");
        info!(command = word, outcome = status, "control socket");
    }
    let body = if json { answer.json } else { answer.text };
    out.write_all(format!("{status}\n{body}\n").as_bytes())?;
    out.flush()
}

/// What `chat-server admin` got back.
pub struct AdminReply {
    pub outcome: Outcome,
    pub body: String,
}

/// Sends `command` to the server at `path` and reads its answer
/// (`chat-server admin`).
pub fn request(path: &Path, command: &[String], json: bool) -> Result<AdminReply, String> {
    let shown = path.display();
    let line = command.join(" ");
    if line.contains('\n') {
        return Err("a command is one line".into());
    }
    let mut stream = UnixStream::connect(path)
        .map_err(|e| format!("cannot reach the server at {shown}: {e}"))?;
    // A command that waits for the cluster takes up to 10 s.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let format = if json { "json" } else { "text" };
    stream
        .write_all(format!("{format} {line}\n").as_bytes())
        .map_err(|e| format!("cannot send to {shown}: {e}"))?;
    // Bounded: a history export is the largest answer, and a server (or
    // whatever answers there) must not fill this process's memory.
    let mut answer = String::new();
    (&stream)
        .take(256 << 20)
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer from {shown}: {e}"))?;
    let (status, body) = answer
        .split_once('\n')
        .ok_or_else(|| format!("no answer from {shown}"))?;
    let outcome = match status {
        "done" => Outcome::Done,
        "failed" => Outcome::Failed,
        "usage" => Outcome::Usage,
        _ => {
            return Err(format!(
                "{shown} answered something else than a chat-server"
            ))
        }
    };
    Ok(AdminReply {
        outcome,
        body: body.trim_end_matches('\n').to_string(),
    })
}
