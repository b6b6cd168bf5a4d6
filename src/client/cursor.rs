//! The inbox cursor of this device: the id of the last message of the
//! user's log it printed, one file per server and name in the state
//! directory (`cursors/`, 0700; each file 0600), so that `--follow`
//! resumes where it stopped, neither missing nor repeating a message.
//!
//! The cursor moves only after the message's line was written to stdout
//! (see `stdout`, which moves it once per write): a crash between the two
//! repeats the messages of that write, never loses one; a clean stop
//! repeats none. The file holds the id as 20 digits and a newline, rewritten
//! in place with one `pwrite`, so it is never seen half written.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::PathBuf;

/// Where one server's cursor for one name is kept.
#[derive(Debug)]
pub struct CursorFile {
    path: PathBuf,
    file: Option<File>,
}

/// Bytes of the file: 20 digits and a newline.
const LEN: usize = 21;

impl CursorFile {
    /// The cursor in `state_dir` for `name` on `server` (`HOST:PORT`).
    pub fn new(state_dir: PathBuf, server: &str, name: &str) -> CursorFile {
        let file = format!(
            "{}-{}",
            crate::hex::encode(server.as_bytes()),
            crate::hex::encode(name.as_bytes())
        );
        CursorFile {
            path: state_dir.join("cursors").join(file),
            file: None,
        }
    }

    /// The cursor kept, if any (a file that does not hold one counts as
    /// none: the server then starts where this name's last device left).
    pub fn load(&self) -> Option<u64> {
        let mut bytes = [0; LEN];
        let file = File::open(&self.path).ok()?;
        let read = file.read_at(&mut bytes, 0).ok()?;
        std::str::from_utf8(&bytes[..read])
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Moves the cursor to `id`.
    pub fn save(&mut self, id: u64) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                if let Some(dir) = self.path.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&self.path)?;
                self.file.insert(file)
            }
        };
        let text = format!("{id:020}\n");
        file.write_all_at(text.as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_kept_per_server_and_name_and_rewritten_in_place() {
        let dir = std::env::temp_dir().join(format!("pmchat-cursor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut alice = CursorFile::new(dir.clone(), "localhost:9000", "alice");
        let bob = CursorFile::new(dir.clone(), "localhost:9000", "bob");
        assert_eq!(alice.load(), None);
        alice.save(123_456).unwrap();
        alice.save(7).unwrap();
        assert_eq!(alice.load(), Some(7));
        assert_eq!(bob.load(), None);
        assert_eq!(
            CursorFile::new(dir.clone(), "localhost:9000", "alice").load(),
            Some(7)
        );
        let mode = std::fs::metadata(&alice.path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
