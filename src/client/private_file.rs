//! Files of the client's state directory that only their owner may read
//! (device tokens, the e2e vault and pins), written whole and atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path`, mode 0600, its directory made (0700) if
/// missing: to a new file beside it, synced, then renamed over the old
/// one, so that a crash leaves one or the other, never half of each.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut temporary = path.as_os_str().to_os_string();
    temporary.push(format!(".{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
