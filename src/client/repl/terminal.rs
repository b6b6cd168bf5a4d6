//! The terminal's settings from before the editor changed them, so that an
//! exit from the network thread (while `readline` holds the terminal in raw
//! mode) leaves a usable shell behind.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};

use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, Termios};

/// Saved terminal settings.
pub(super) struct SavedTerminal {
    /// The controlling terminal (`/dev/tty`), else a duplicate of stdin.
    tty: OwnedFd,
    settings: Termios,
}

impl SavedTerminal {
    /// Saves the current settings of the controlling terminal (or of stdin);
    /// `None` when there is no terminal.
    pub(super) fn save() -> Option<SavedTerminal> {
        let tty = match OpenOptions::new().read(true).write(true).open("/dev/tty") {
            Ok(tty) => OwnedFd::from(tty),
            Err(_) => std::io::stdin().as_fd().try_clone_to_owned().ok()?,
        };
        let settings = tcgetattr(&tty).ok()?;
        Some(SavedTerminal { tty, settings })
    }

    /// Puts the saved settings back.
    pub(super) fn restore(&self) {
        let _ = tcsetattr(&self.tty, OptionalActions::Now, &self.settings);
    }
}
