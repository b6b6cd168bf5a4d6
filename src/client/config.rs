//! Defaults without retyping: the client's config file and environment.
//!
//! `$XDG_CONFIG_HOME/pmchat/client.toml` (else `~/.config/pmchat/…`, or
//! `--config FILE`) names servers:
//!
//! ```toml
//! default = "work"            # what `chat-client` alone connects to
//!
//! [servers.work]
//! host = "chat.example.com"
//! port = 9000
//! name = "alice"              # the username
//! tls = true                  # verify against the system's roots
//! tls_ca = "~/work-ca.pem"    # or trust only this CA (implies TLS)
//! password_file = "~/.pmchat-password"
//! e2e = true                  # end-to-end encryption, as --e2e
//! ```
//!
//! so `chat-client work` connects; a command may follow
//! (`chat-client work send bob hi`). Without a server name, `HOST`, `PORT`
//! and `USERNAME` come from the command line, else from `PMCHAT_HOST`,
//! `PMCHAT_PORT` and `PMCHAT_USER`. Options on the command line always win
//! over the file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The largest config file read: a few named servers fit many times over,
/// and a file that is not one (a device, a huge log) is not read whole.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The server that `chat-client` with no arguments connects to.
    pub default: Option<String>,
    /// Named servers.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerEntry>,
}

/// One named server.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub host: String,
    pub port: u16,
    /// The username to log in with.
    pub name: Option<String>,
    /// Connect with TLS, verifying against the system's roots.
    #[serde(default)]
    pub tls: bool,
    /// Trust only this CA (implies TLS).
    pub tls_ca: Option<PathBuf>,
    /// The password's file, as `--password-file`.
    pub password_file: Option<PathBuf>,
    /// End-to-end encryption by default, as `--e2e`.
    #[serde(default)]
    pub e2e: bool,
}

/// Where the config file is looked for by default.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|home| home.join(".config")))?;
    Some(base.join("pmchat/client.toml"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

/// `~/…` in a path from the file means the home directory.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

impl ConfigFile {
    /// Reads `path`; `required` says a missing file is an error (it was
    /// named with `--config`) rather than no config at all.
    pub fn load(path: &Path, required: bool) -> Result<ConfigFile, String> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(ConfigFile::default())
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(format!(
                "{} is larger than {MAX_CONFIG_BYTES} bytes; not a client config",
                path.display()
            ));
        }
        ConfigFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        let mut config: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(default) = &config.default {
            if !config.servers.contains_key(default) {
                return Err(format!(
                    "default = \"{default}\" names no [servers.{default}]"
                ));
            }
        }
        for entry in config.servers.values_mut() {
            entry.tls_ca = entry.tls_ca.as_deref().map(expand_home);
            entry.password_file = entry.password_file.as_deref().map(expand_home);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_servers_and_a_default_are_read() {
        let config = ConfigFile::parse(
            "default = \"work\"\n[servers.work]\nhost = \"chat.example.com\"\nport = 9000\n\
             name = \"alice\"\ntls_ca = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        let work = &config.servers["work"];
        assert_eq!(work.host, "chat.example.com");
        assert_eq!(work.port, 9000);
        assert_eq!(work.name.as_deref(), Some("alice"));
        assert_eq!(work.tls_ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(config.default.as_deref(), Some("work"));
        assert!(!work.e2e, "off unless asked");
        let config =
            ConfigFile::parse("[servers.a]\nhost = \"h\"\nport = 1\ne2e = true\n").unwrap();
        assert!(config.servers["a"].e2e);
        assert!(ConfigFile::parse("[servers.a]\nhost = \"h\"\nport = 1\ne2e = \"yes\"\n").is_err());
    }

    #[test]
    fn mistakes_are_reported_not_ignored() {
        let typo = ConfigFile::parse("[servers.a]\nhost = \"h\"\nport = 1\nnmae = \"x\"\n");
        assert!(typo.unwrap_err().contains("nmae"));
        assert!(ConfigFile::parse("[servers.a]\nhost = \"h\"\nport = 70000\n").is_err());
        assert!(
            ConfigFile::parse("default = \"b\"\n[servers.a]\nhost = \"h\"\nport = 1\n").is_err()
        );
    }
}
