//! The device tokens this client was given (see the server's
//! `device` module): one per server and name, kept in the state
//! directory (`device-tokens`, 0600, in a 0700 directory) as
//! `SERVER NAME TOKEN` lines, and sent back in AUTH at the next login to
//! that server, so that someone else guessing the name's password does not
//! lock this device out.

use std::path::PathBuf;

/// Where one server's token for one name is kept.
#[derive(Clone, Debug)]
pub struct TokenStore {
    path: PathBuf,
    /// `HOST:PORT`.
    server: String,
    name: String,
}

/// The longest token file read: a line per server and name.
const MAX_FILE: u64 = 1 << 20;

impl TokenStore {
    /// The store in `state_dir` for `name` on `server` (`HOST:PORT`).
    pub fn new(state_dir: PathBuf, server: String, name: String) -> TokenStore {
        TokenStore {
            path: state_dir.join("device-tokens"),
            server,
            name,
        }
    }

    fn lines(&self) -> Vec<String> {
        use std::io::Read;
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut text = String::new();
        if file.take(MAX_FILE).read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        text.lines().map(str::to_string).collect()
    }

    fn is_ours(&self, line: &str) -> bool {
        let mut words = line.split(' ');
        words.next() == Some(self.server.as_str()) && words.next() == Some(self.name.as_str())
    }

    /// The token kept for this server and name, if any.
    pub fn load(&self) -> Option<String> {
        self.lines()
            .iter()
            .find(|line| self.is_ours(line))
            .and_then(|line| line.split(' ').nth(2))
            .filter(|token| {
                token.len() <= crate::wire::v1::MAX_DEVICE_TOKEN
                    && token.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .map(str::to_string)
    }

    /// Keeps `token` for this server and name (replacing an older one).
    /// A token that cannot be kept only costs the next login its
    /// exemption: the error is returned for a notice, nothing more.
    pub fn save(&self, token: &str) -> std::io::Result<()> {
        if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        let mut text = String::new();
        for line in self.lines().iter().filter(|line| !self.is_ours(line)) {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!("{} {} {token}\n", self.server, self.name));
        super::private_file::write(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_per_server_and_name_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pmchat-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let alice = TokenStore::new(dir.clone(), "host:1".into(), "alice".into());
        let bob = TokenStore::new(dir.clone(), "host:1".into(), "bob".into());
        let elsewhere = TokenStore::new(dir.clone(), "host:2".into(), "alice".into());
        assert_eq!(alice.load(), None);
        alice.save("00aa").unwrap();
        bob.save("00bb").unwrap();
        alice.save("00cc").unwrap();
        assert_eq!(alice.load().as_deref(), Some("00cc"));
        assert_eq!(bob.load().as_deref(), Some("00bb"));
        assert_eq!(elsewhere.load(), None);
        let mode = std::fs::metadata(dir.join("device-tokens"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
