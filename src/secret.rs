//! Passwords from a person or a pipe: read without echo, never from the
//! command line (where `ps` would show them).
//!
//! On a terminal the prompt goes to stderr and the typed characters are not
//! shown: the terminal is put in a non-canonical, no-echo mode for the one
//! line and restored afterwards, also when the user presses Ctrl-C (which
//! then cancels instead of killing the process with echo left off).
//! From a pipe, one line is read.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;

use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex};

/// The permission bits of `path` when it is a regular file that users
/// other than its owner can read (a password file, a key, the accounts
/// file): the caller warns. `None` when it is private or not a file.
pub fn readable_by_others(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).ok()?;
    let mode = metadata.permissions().mode() & 0o777;
    (metadata.is_file() && mode & 0o044 != 0).then_some(mode)
}

/// Longest password accepted from a person or a file, in bytes.
pub const MAX_PASSWORD_INPUT: usize = crate::wire::v1::MAX_PASSWORD;

/// Why no password was read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Ctrl-C at the prompt.
    #[error("cancelled")]
    Cancelled,
    /// End of input before a password.
    #[error("no password given (end of input)")]
    NoInput,
    /// An empty line.
    #[error("the password is empty")]
    Empty,
    /// Longer than a password may be.
    #[error("the password is longer than {MAX_PASSWORD_INPUT} bytes")]
    TooLong,
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// True if a password would be read from a person at a terminal.
pub fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

/// Reads one password from stdin: from a terminal after `prompt` (on
/// stderr) without echo, else one line from the pipe.
pub fn read_password(prompt: &str) -> Result<Vec<u8>, SecretError> {
    let password = if stdin_is_terminal() {
        read_hidden(prompt)?
    } else {
        read_line(io::stdin().lock())?
    };
    check(password)
}

/// Reads the password in `path`: its first line, without the line end.
pub fn read_password_file(path: &std::path::Path) -> Result<Vec<u8>, SecretError> {
    let file = std::fs::File::open(path)?;
    check(read_line(io::BufReader::new(
        file.take(MAX_PASSWORD_INPUT as u64 + 3),
    ))?)
}

/// A password given in an environment variable (bytes, as given).
pub fn password_from_env(variable: &str) -> Result<Option<Vec<u8>>, SecretError> {
    match std::env::var_os(variable) {
        None => Ok(None),
        Some(value) => {
            use std::os::unix::ffi::OsStringExt;
            check(value.into_vec()).map(Some)
        }
    }
}

fn check(password: Vec<u8>) -> Result<Vec<u8>, SecretError> {
    if password.is_empty() {
        Err(SecretError::Empty)
    } else if password.len() > MAX_PASSWORD_INPUT {
        Err(SecretError::TooLong)
    } else {
        Ok(password)
    }
}

/// One line, without `\n` or `\r\n`.
fn read_line(mut input: impl BufRead) -> Result<Vec<u8>, SecretError> {
    let mut line = Vec::new();
    if input.read_until(b'\n', &mut line)? == 0 {
        return Err(SecretError::NoInput);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Terminal settings put back when dropped.
struct Restore<'a, Fd: AsFd> {
    fd: &'a Fd,
    saved: termios::Termios,
}

impl<Fd: AsFd> Drop for Restore<'_, Fd> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}

/// Reads a line from the terminal on stdin without showing it.
fn read_hidden(prompt: &str) -> Result<Vec<u8>, SecretError> {
    let stdin = io::stdin();
    let saved = termios::tcgetattr(&stdin).map_err(io::Error::from)?;
    let mut quiet = saved.clone();
    // Byte by byte, no echo, and Ctrl-C arrives as a byte, so the settings
    // are restored whatever the user does.
    quiet
        .local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
    quiet.special_codes[SpecialCodeIndex::VMIN] = 1;
    quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
    let mut stderr = io::stderr();
    let line = {
        // Quiet before the prompt shows: whatever is typed once it is
        // visible is kept (only type-ahead from before it is dropped).
        termios::tcsetattr(&stdin, OptionalActions::Flush, &quiet).map_err(io::Error::from)?;
        let _restore = Restore {
            fd: &stdin,
            saved: saved.clone(),
        };
        let _ = write!(stderr, "{prompt}");
        let _ = stderr.flush();
        edit_hidden(stdin.lock(), saved.special_codes[SpecialCodeIndex::VERASE])
    };
    let _ = writeln!(stderr);
    line
}

/// The line editing a terminal would have done: Enter ends, Backspace
/// erases, Ctrl-U clears, Ctrl-C cancels, Ctrl-D on an empty line is the
/// end of input.
/// `erase` is the terminal's own erase character.
fn edit_hidden(mut input: impl Read, erase: u8) -> Result<Vec<u8>, SecretError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if input.read(&mut byte)? == 0 {
            return if line.is_empty() {
                Err(SecretError::NoInput)
            } else {
                Ok(line)
            };
        }
        match byte[0] {
            b'\n' | b'\r' => return Ok(line),
            0x03 => return Err(SecretError::Cancelled),
            0x04 if line.is_empty() => return Err(SecretError::NoInput),
            0x15 => line.clear(),
            0x7f | 0x08 => {
                line.pop();
            }
            b if b == erase => {
                line.pop();
            }
            b => {
                if line.len() > MAX_PASSWORD_INPUT {
                    return Err(SecretError::TooLong);
                }
                line.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piped_password_is_its_first_line_without_the_line_end() {
        assert_eq!(read_line(&b"hunter2\r\nnext\n"[..]).unwrap(), b"hunter2");
        assert_eq!(read_line(&b"no newline"[..]).unwrap(), b"no newline");
        assert!(matches!(read_line(&b""[..]), Err(SecretError::NoInput)));
        assert!(matches!(check(Vec::new()), Err(SecretError::Empty)));
        assert!(matches!(
            check(vec![b'x'; MAX_PASSWORD_INPUT + 1]),
            Err(SecretError::TooLong)
        ));
    }

    #[test]
    fn hidden_typing_is_edited_like_a_terminal_line() {
        let typed = b"pax\x7fss\x15secret word\r";
        assert_eq!(edit_hidden(&typed[..], 0x7f).unwrap(), b"secret word");
        assert_eq!(edit_hidden(&b"ab#c\n"[..], b'#').unwrap(), b"ac");
        assert!(matches!(
            edit_hidden(&b"abc\x03"[..], 0x7f),
            Err(SecretError::Cancelled)
        ));
        assert!(matches!(
            edit_hidden(&b"\x04"[..], 0x7f),
            Err(SecretError::NoInput)
        ));
    }
}
