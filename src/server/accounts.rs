//! Registered names: the accounts file, its password hashes, and the
//! `chat-server passwd` rewrite.
//!
//! The file holds one `name:hash` per line, like htpasswd: the hash is an
//! argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). Blank lines
//! and lines starting with `#` are ignored. A file that does not parse is
//! refused as a whole, with the line that is wrong: at start-up the server
//! does not start, on a reload it keeps the accounts it had.
//!
//! The server holds the parsed table behind a lock that is taken only to
//! look a name up at login or to swap in a reloaded table; routing never
//! touches it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use tracing::{info, warn};

use crate::wire::v1::{validate_username, UsernameError};

/// Why an accounts file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A line is not `name:hash` with a valid name and an argon2id hash.
    #[error("{path}:{line}: {why}")]
    Invalid {
        path: PathBuf,
        line: usize,
        why: String,
    },
    /// The new version would unregister most names at once (an emptied or
    /// truncated file): not loaded unless forced.
    #[error(
        "{path} would unregister {removed} of the {before} registered names \
         ({after} left); not loaded: check the file, then reload-accounts --force"
    )]
    Shrinks {
        path: PathBuf,
        before: usize,
        after: usize,
        removed: usize,
    },
}

/// What a reload changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// Names registered now.
    pub count: usize,
    /// Names that were not registered before.
    pub added: usize,
    /// Names that are no longer registered.
    pub removed: usize,
    /// The first of them (at most [`REMOVED_LISTED`]), sorted.
    pub removed_names: Vec<String>,
}

/// Unregistered names a reload lists by name.
pub const REMOVED_LISTED: usize = 100;

/// Registered names and their PHC hashes, as parsed from one version of
/// the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AccountTable {
    hashes: BTreeMap<Box<str>, Box<str>>,
}

impl AccountTable {
    /// Parses the file's text; `path` is only for error messages. Names are
    /// checked against the protocol's own username rules (at most 255
    /// bytes; the server's `--max-username-bytes` applies at login).
    pub fn parse(text: &str, path: &Path) -> Result<AccountTable, AccountsError> {
        let mut hashes = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let invalid = |why: String| AccountsError::Invalid {
                path: path.to_path_buf(),
                line: index + 1,
                why,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(invalid("expected 'name:hash'".into()));
            };
            check_name(name).map_err(|e| invalid(e.to_string()))?;
            check_hash(hash).map_err(invalid)?;
            if hashes.insert(name.into(), hash.into()).is_some() {
                return Err(invalid(format!("'{name}' is listed twice")));
            }
        }
        Ok(AccountTable { hashes })
    }

    /// The PHC hash registered for `name`, if any.
    pub fn hash_of(&self, name: &str) -> Option<&str> {
        self.hashes.get(name).map(|hash| &**hash)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(|name| &**name)
    }

    /// How many names are registered.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True if no name is registered.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// A name as the accounts file may hold it.
fn check_name(name: &str) -> Result<(), UsernameError> {
    validate_username(name.as_bytes(), usize::from(u8::MAX))
}

/// A hash as the accounts file may hold it: an argon2id PHC string.
fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC password hash ({e})"))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "hash algorithm '{}' is not supported (argon2id only; use chat-server passwd)",
            parsed.algorithm
        ));
    }
    // Without these the name would refuse every password, silently.
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("the hash has no salt or no hash part (use chat-server passwd)".into());
    }
    argon2::Params::try_from(&parsed)
        .map_err(|e| format!("the hash's argon2 parameters are not usable ({e})"))?;
    Ok(())
}

/// What identifies one version of the file on disk: a change to any of
/// these means it was rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> io::Result<FileStamp> {
        let meta = fs::metadata(path)?;
        Ok(FileStamp {
            inode: meta.ino(),
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// The accounts file a server was started with: the current table, and
/// what is needed to notice a change.
#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    table: RwLock<Arc<AccountTable>>,
    /// Bumped whenever `table` is replaced: what was learnt from one
    /// table (a name registered or not) holds while this stays the same.
    version: std::sync::atomic::AtomicU64,
    /// The version last read (even if it did not parse, so a bad file is
    /// reported once, not at every check).
    seen: Mutex<Option<FileStamp>>,
}

impl Accounts {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Accounts, AccountsError> {
        let stamp = FileStamp::of(path).ok();
        let table = read_table(path)?;
        Ok(Accounts {
            path: path.to_path_buf(),
            table: RwLock::new(Arc::new(table)),
            version: std::sync::atomic::AtomicU64::new(0),
            seen: Mutex::new(stamp),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes whenever the table does.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The accounts as last read.
    pub fn table(&self) -> Arc<AccountTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the file again; on error the accounts stay as they were. A
    /// version that would unregister every name, or more than half of
    /// them, is refused ([`AccountsError::Shrinks`]) unless `force`: an
    /// emptied or truncated file must not free registered names for anyone
    /// to take. Each version is looked at once: a refused one is not tried
    /// again until the file changes (or the operator forces it).
    pub fn reload(&self, force: bool) -> Result<Reloaded, AccountsError> {
        let stamp = FileStamp::of(&self.path).ok();
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        let table = read_table(&self.path)?;
        let old = self.table();
        let removed = old.names().filter(|n| table.hash_of(n).is_none()).count();
        let added = table.names().filter(|n| old.hash_of(n).is_none()).count();
        let (before, after) = (old.len(), table.len());
        if !force && before > 0 && (after == 0 || removed * 2 > before) {
            return Err(AccountsError::Shrinks {
                path: self.path.clone(),
                before,
                after,
                removed,
            });
        }
        let removed_names = old
            .names()
            .filter(|n| table.hash_of(n).is_none())
            .take(REMOVED_LISTED)
            .map(str::to_string)
            .collect();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(Reloaded {
            count: after,
            added,
            removed,
            removed_names,
        })
    }

    /// Reloads (unforced) if the file changed on disk since it was last
    /// read; `None` when it did not (or cannot be looked at now: a rewrite
    /// in progress is picked up at a later check).
    pub fn reload_if_changed(&self) -> Option<Result<Reloaded, AccountsError>> {
        let stamp = FileStamp::of(&self.path).ok()?;
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == Some(stamp) {
            return None;
        }
        Some(self.reload(false))
    }
}

fn read_table(path: &Path) -> Result<AccountTable, AccountsError> {
    let text = fs::read_to_string(path).map_err(|source| AccountsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    AccountTable::parse(&text, path)
}

/// Hashes `password` with argon2id (the crate's default cost) and a fresh
/// random salt, as a PHC string.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// True if `password` matches the PHC string `hash`. The cost is the one
/// recorded in the hash; this blocks for as long as it takes (tens of
/// milliseconds at the default cost), so the server calls it off its I/O
/// threads.
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Why `chat-server passwd` could not update the file.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// The name is not one a client could log in with.
    #[error("{0}")]
    Name(#[from] UsernameError),
    /// The existing file does not parse; it is left alone.
    #[error("{0}")]
    Existing(AccountsError),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// Writing the new file failed; the old one is untouched.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Sets `name`'s password in the accounts file at `path` (created if
/// missing): the other lines, comments included, stay as they are. The new
/// file is written beside the old one with mode 0600, synced and renamed
/// over it, so a server reading it sees the old or the new version, never
/// half of one. Runs of `chat-server passwd` at once take turns through an
/// advisory lock on `PATH.lock`, so none loses another's entry. A path that
/// is a symbolic link updates the file it points to. Returns true if the
/// name was already registered.
pub fn set_password(path: &Path, name: &str, password: &[u8]) -> Result<bool, PasswdError> {
    check_name(name)?;
    // Hashed before the lock: it takes the longest and needs no file.
    let hash = hash_password(password).map_err(PasswdError::Hash)?;
    let target;
    let path = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            target = fs::canonicalize(path).map_err(|source| PasswdError::Write {
                path: path.to_path_buf(),
                source,
            })?;
            target.as_path()
        }
        _ => path,
    };
    let _lock = lock_beside(path).map_err(|source| PasswdError::Write {
        path: lock_path(path),
        source,
    })?;
    let old = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(PasswdError::Existing(AccountsError::Read {
                path: path.to_path_buf(),
                source,
            }))
        }
    };
    AccountTable::parse(&old, path).map_err(PasswdError::Existing)?;
    let (text, existed) = with_entry(&old, name, &hash);
    write_atomically(path, text.as_bytes()).map_err(|source| PasswdError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(existed)
}

/// The lock file beside the accounts file `path`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive advisory lock beside `path`, waiting for whoever
/// holds it; released when the returned file is dropped (or the process
/// ends). The lock file stays: removing it would let two runs lock two
/// different files.
fn lock_beside(path: &Path) -> io::Result<fs::File> {
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path(path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(lock)
}

/// The file's text with `name`'s line replaced (or appended).
fn with_entry(old: &str, name: &str, hash: &str) -> (String, bool) {
    let mut text = String::with_capacity(old.len() + name.len() + hash.len() + 2);
    let mut existed = false;
    for line in old.lines() {
        let is_entry = line
            .split_once(':')
            .is_some_and(|(n, _)| n == name && !line.starts_with('#'));
        if is_entry {
            existed = true;
            text.push_str(&format!("{name}:{hash}\n"));
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    if !existed {
        text.push_str(&format!("{name}:{hash}\n"));
    }
    (text, existed)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Logs what a reload of the accounts file (`why`: who asked) did. With
/// a store, each name no longer registered gets a line offering to purge
/// what the store keeps for it (its history stays until then).
pub(crate) fn log_reload(
    reloaded: &Result<Reloaded, AccountsError>,
    why: &str,
    store: Option<&crate::store::Store>,
) {
    match reloaded {
        Ok(Reloaded {
            count,
            added,
            removed,
            removed_names,
        }) => {
            info!(
                "accounts reloaded ({why}): {count} registered name(s), {added} added, {removed} removed"
            );
            for name in removed_names {
                let Some(store) = store else { break };
                let kept = store.count(name).unwrap_or(0);
                if kept > 0 {
                    warn!(
                        "'{name}' is no longer registered; the store keeps its {kept} message(s) \
                         until `chat-server history purge {} {name}` (with the server stopped)",
                        store.path().display()
                    );
                }
            }
        }
        Err(e) => warn!("accounts not reloaded ({why}), keeping the previous ones: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AccountTable, AccountsError> {
        AccountTable::parse(text, Path::new("accounts"))
    }

    /// A real hash at a tiny cost, so tests stay fast.
    fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let argon = Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn parses_names_hashes_comments_and_blank_lines() {
        let hash = cheap_hash("pw");
        let table = parse(&format!("# team\n\nalice:{hash}\r\nbob:{hash}\n")).unwrap();
        assert_eq!(table.names().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(table.hash_of("alice"), Some(hash.as_str()));
        assert_eq!(table.hash_of("carol"), None);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let hash = cheap_hash("pw");
        let cases = [
            (format!("alice:{hash}\nbob\n"), 2, "expected 'name:hash'"),
            (format!("\nal ice:{hash}\n"), 2, "invalid username"),
            ("alice:plaintext\n".to_string(), 1, "not a PHC"),
            (format!("alice:{hash}\nalice:{hash}\n"), 2, "listed twice"),
            // A hash without its hash part would refuse every password.
            (
                "bob:$argon2id$garbage\n".to_string(),
                1,
                "no salt or no hash",
            ),
            (
                format!("alice:{hash}\nbob:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ\n"),
                2,
                "no salt or no hash",
            ),
        ];
        for (text, line, why) in cases {
            match parse(&text) {
                Err(AccountsError::Invalid {
                    line: l, why: w, ..
                }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(w.contains(why), "expected {why:?} in {w:?}");
                }
                other => panic!("expected an error for {text:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_reload_that_unregisters_most_names_waits_for_force() {
        let dir = std::env::temp_dir().join(format!("pmchat-shrink-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("accounts");
        let hash = cheap_hash("pw");
        let entries = |names: &[&str]| {
            let text: String = names.iter().map(|n| format!("{n}:{hash}\n")).collect();
            fs::write(&path, text).unwrap();
        };
        entries(&["a", "b", "c", "d"]);
        let accounts = Accounts::load(&path).unwrap();
        // Emptied: refused, and the names stay registered.
        entries(&[]);
        assert!(matches!(
            accounts.reload(false),
            Err(AccountsError::Shrinks {
                before: 4,
                after: 0,
                removed: 4,
                ..
            })
        ));
        assert_eq!(accounts.table().len(), 4);
        // Half gone is allowed, with what changed counted.
        entries(&["a", "b", "e"]);
        let reloaded = accounts.reload(false).unwrap();
        assert_eq!(
            (reloaded.count, reloaded.added, reloaded.removed),
            (3, 1, 2)
        );
        // More than half gone needs force.
        entries(&["a"]);
        assert!(accounts.reload(false).is_err());
        assert_eq!(accounts.reload(true).unwrap().count, 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_algorithms_are_refused() {
        let hash = cheap_hash("pw").replace("$argon2id$", "$argon2i$");
        let error = parse(&format!("alice:{hash}\n")).unwrap_err().to_string();
        assert!(error.contains("argon2id only"), "{error}");
    }

    #[test]
    fn verifies_the_right_password_only() {
        let hash = cheap_hash("correct horse");
        assert!(verify_password(&hash, b"correct horse"));
        assert!(!verify_password(&hash, b"correct horse "));
        assert!(!verify_password(&hash, b""));
        assert!(!verify_password("not a hash", b"correct horse"));
    }

    #[test]
    fn an_entry_is_replaced_in_place_and_the_rest_kept() {
        let old = "# admins\nalice:OLD\nbob:B\n";
        assert_eq!(
            with_entry(old, "alice", "NEW"),
            ("# admins\nalice:NEW\nbob:B\n".to_string(), true)
        );
        assert_eq!(
            with_entry(old, "carol", "C"),
            ("# admins\nalice:OLD\nbob:B\ncarol:C\n".to_string(), false)
        );
        // A commented-out entry is not the entry.
        assert!(!with_entry("#alice:X\n", "alice", "N").1);
    }

    #[test]
    fn set_password_writes_a_private_file_that_verifies() {
        let dir = std::env::temp_dir().join(format!("pmchat-accounts-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("accounts");
        let _ = fs::remove_file(&path);
        assert!(!set_password(&path, "alice", b"first").unwrap());
        assert!(set_password(&path, "alice", b"second").unwrap());
        assert!(!set_password(&path, "bob", b"third").unwrap());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let accounts = Accounts::load(&path).unwrap();
        let table = accounts.table();
        assert!(verify_password(table.hash_of("alice").unwrap(), b"second"));
        assert!(!verify_password(table.hash_of("alice").unwrap(), b"first"));
        assert!(verify_password(table.hash_of("bob").unwrap(), b"third"));
        assert!(matches!(
            set_password(&path, "no:colon", b"x"),
            Err(PasswdError::Name(UsernameError::Colon { .. }))
        ));
        // Nothing left behind beside it but the (empty) lock file.
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["accounts", "accounts.lock"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
