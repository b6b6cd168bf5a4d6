//! Every text a server sends to explain a refusal or an error, in one
//! catalogue, each with a stable [`Code`].
//!
//! A client decides on the code, never on the words: the words are for
//! people and may change; a code never does. Clients that negotiated the
//! `codes` extension get both (an ERROR frame with the code beside the
//! text, REFUSED with the code after its ordinal); v1 and gob peers get
//! the text alone, byte for byte what they always got.
//!
//! A peer on a wire without codes (an original v1 or gob server, or ours
//! talking gob) is understood by [`Code::of_text`], which reads a text
//! back through the same templates that wrote it; nothing else in pmchat
//! looks at the words of an error.

use std::fmt::Display;

/// What a refusal or an error is about, as a word that never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The username is held by someone else.
    NameTaken,
    /// The operator banned the name.
    Banned,
    /// The username breaks the rules (empty, too long, a bad byte).
    InvalidName,
    /// The server takes TLS connections only.
    TlsRequired,
    /// A password came over plain TCP, which the server does not accept.
    PasswordsNeedTls,
    /// The server cannot reach its cluster just now.
    Unavailable,
    /// Too many logins are waiting for a password check.
    LoginsBusy,
    /// A registered name, asked for by a client that cannot send a
    /// password.
    PasswordUnsupported,
    /// A registered name, and no password came.
    PasswordRequired,
    /// The password was wrong.
    WrongPassword,
    /// The server accepts registered names only.
    NotRegistered,
    /// The server has no room for another connection.
    ServerFull,
    /// Something expected did not arrive in time.
    Timeout,
    /// A frame broke the protocol; the connection cannot go on.
    Protocol,
    /// The recipient is not connected.
    NotConnected,
    /// The message is not valid UTF-8.
    NotUtf8,
    /// The recipient was disconnected for not reading.
    SlowConsumer,
    /// The recipient's node cannot be reached just now.
    Unreachable,
    /// The recipient, on another node, is not reading fast enough.
    NotReading,
    /// Another login took the name while this server was cut off.
    NameLost,
    /// The operator disconnected this session.
    Kicked,
    /// The server is stopping.
    ShuttingDown,
    /// The recipient is not connected and the store cannot take the
    /// message just now (a full disk, a disk not keeping up).
    StoreUnavailable,
    /// A registered name is logged in on `--max-devices` devices already.
    TooManyDevices,
}

/// Each code with its word and the template of its text, where `{}`
/// stands for the detail (a name, a duration, an error's description).
const CATALOGUE: &[(Code, &str, &str)] = &[
    (Code::NameTaken, "name-taken", "Username is taken\n"),
    (Code::Banned, "banned", "'{}' is banned from this server\n"),
    (Code::InvalidName, "invalid-name", "invalid username{}\n"),
    (
        Code::TlsRequired,
        "tls-required",
        "this server accepts TLS connections only (chat-client --tls)\n",
    ),
    (
        Code::PasswordsNeedTls,
        "passwords-need-tls",
        "passwords are accepted over TLS only (chat-client --tls); the password was not checked\n",
    ),
    (
        Code::Unavailable,
        "unavailable",
        "service unavailable: the server cannot reach its cluster; try again in a moment\n",
    ),
    (
        Code::LoginsBusy,
        "logins-busy",
        "too many logins are being checked; try again in a moment\n",
    ),
    (
        Code::PasswordUnsupported,
        "password-unsupported",
        "'{}' is a registered name; log in with a client that supports passwords\n",
    ),
    (
        Code::PasswordRequired,
        "password-required",
        "'{}' is a registered name: a password is required\n",
    ),
    (
        Code::WrongPassword,
        "wrong-password",
        "wrong password for '{}'\n",
    ),
    (
        Code::NotRegistered,
        "not-registered",
        "'{}' is not a registered name, and this server accepts registered names only\n",
    ),
    (Code::ServerFull, "server-full", "server is full\n"),
    (Code::Timeout, "timeout", "{} within {}\n"),
    (Code::Protocol, "protocol", "{}\n"),
    (
        Code::NotConnected,
        "not-connected",
        "'{}' is not connected\n",
    ),
    (
        Code::NotUtf8,
        "not-utf8",
        "message to '{}' is not valid UTF-8; not delivered\n",
    ),
    (
        Code::SlowConsumer,
        "slow-consumer",
        "'{}' was disconnected for not reading fast enough; message not delivered\n",
    ),
    (
        Code::Unreachable,
        "unreachable",
        "'{}' is unreachable right now\n",
    ),
    (
        Code::NotReading,
        "not-reading",
        "'{}' is not reading fast enough; message not delivered\n",
    ),
    (
        Code::NameLost,
        "name-lost",
        "'{}' was taken by another login while this server could not reach its cluster\n",
    ),
    (
        Code::Kicked,
        "kicked",
        "you were disconnected by the server operator\n",
    ),
    (
        Code::ShuttingDown,
        "shutting-down",
        "server is shutting down\n",
    ),
    (
        Code::StoreUnavailable,
        "store-unavailable",
        "cannot store messages right now; message to '{}' not delivered\n",
    ),
    (
        Code::TooManyDevices,
        "too-many-devices",
        "'{}' is logged in on as many devices as this server allows\n",
    ),
];

impl Code {
    fn entry(self) -> &'static (Code, &'static str, &'static str) {
        // Every code has exactly one entry (a unit test checks it).
        CATALOGUE
            .iter()
            .find(|(code, ..)| *code == self)
            .unwrap_or(&CATALOGUE[0])
    }

    /// Every code, in the catalogue's order.
    pub fn all() -> impl Iterator<Item = Code> {
        CATALOGUE.iter().map(|(code, ..)| *code)
    }

    /// The word on the wire, such as `not-connected`.
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    /// The code a word names; `None` for a word this version does not
    /// know (a newer server's).
    pub fn parse(word: &[u8]) -> Option<Code> {
        CATALOGUE
            .iter()
            .find(|(_, w, _)| w.as_bytes() == word)
            .map(|(code, ..)| *code)
    }

    /// The code whose template wrote `text`, for a peer on a wire that
    /// carries no codes. Texts with free-form details (timeouts, protocol
    /// errors) are not recognised.
    pub fn of_text(text: &[u8]) -> Option<Code> {
        CATALOGUE.iter().find_map(|&(code, _, template)| {
            let recognised = match template.split_once("{}") {
                None => text == template.as_bytes(),
                Some(("", _)) => false,
                Some((_, after)) if after.contains("{}") => false,
                Some((before, after)) => {
                    text.len() >= before.len() + after.len()
                        && text.starts_with(before.as_bytes())
                        && text.ends_with(after.as_bytes())
                }
            };
            recognised.then_some(code)
        })
    }

    /// One byte for the inter-node format (the catalogue's order, which
    /// nodes of one version share).
    pub fn to_byte(self) -> u8 {
        let at = CATALOGUE.iter().position(|(code, ..)| *code == self);
        at.map_or(0, |at| at as u8)
    }

    /// The code [`Code::to_byte`] wrote.
    pub fn from_byte(byte: u8) -> Option<Code> {
        CATALOGUE.get(usize::from(byte)).map(|(code, ..)| *code)
    }

    /// True if a server refuses a login with this code (the client exits
    /// 3 for it).
    pub fn refuses_login(self) -> bool {
        matches!(
            self,
            Code::NameTaken
                | Code::Banned
                | Code::InvalidName
                | Code::TlsRequired
                | Code::PasswordsNeedTls
                | Code::LoginsBusy
                | Code::PasswordUnsupported
                | Code::PasswordRequired
                | Code::WrongPassword
                | Code::NotRegistered
                | Code::ServerFull
                | Code::TooManyDevices
        )
    }

    /// True if the same login may well succeed in a moment.
    pub fn try_later(self) -> bool {
        matches!(self, Code::Unavailable | Code::LoginsBusy)
    }
}

/// What a session that did not ask for sealed content (a v1 or gob peer)
/// is shown in place of an end-to-end encrypted message: never its
/// ciphertext as text.
pub const SEALED_NOTICE: &str =
    "[an end-to-end encrypted message, which this client cannot read: chat-client --e2e can]";

/// A text a server sends, with its code: made only from the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorText {
    code: Code,
    text: String,
}

impl ErrorText {
    /// The text of `code` with `detail` in its place (ignored by texts
    /// without one).
    pub fn new(code: Code, detail: impl Display) -> ErrorText {
        let template = code.entry().2;
        let text = match template.split_once("{}") {
            Some((before, after)) => format!("{before}{detail}{after}"),
            None => template.to_string(),
        };
        ErrorText { code, text }
    }

    /// The text of a code that has no detail.
    pub fn of(code: Code) -> ErrorText {
        ErrorText::new(code, "")
    }

    /// The text for something that did not arrive (`what`) within `limit`.
    pub fn timeout(what: &str, limit: std::time::Duration) -> ErrorText {
        ErrorText {
            code: Code::Timeout,
            text: format!("{what} within {limit:?}\n"),
        }
    }

    /// The text for a username that breaks the rules, as `error` describes
    /// it.
    pub fn invalid_name(error: &impl Display) -> ErrorText {
        let described = error.to_string();
        let detail = described
            .strip_prefix("invalid username")
            .unwrap_or(&described);
        ErrorText::new(Code::InvalidName, detail)
    }

    /// The text for a frame that broke the protocol, as `error` describes
    /// it.
    pub fn protocol(error: &impl Display) -> ErrorText {
        ErrorText::new(Code::Protocol, error)
    }

    /// Rebuilds a text that crossed between nodes with its code.
    pub fn carried(code: Code, text: String) -> ErrorText {
        ErrorText { code, text }
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The words, ending with `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_entry_a_distinct_word_and_a_byte() {
        for (i, &(code, word, _)) in CATALOGUE.iter().enumerate() {
            assert_eq!(code.entry().1, word);
            assert_eq!(Code::parse(word.as_bytes()), Some(code));
            assert_eq!(Code::from_byte(code.to_byte()), Some(code));
            assert_eq!(CATALOGUE.iter().filter(|e| e.0 == code).count(), 1);
            assert_eq!(CATALOGUE.iter().filter(|e| e.1 == word).count(), 1, "{i}");
        }
        assert_eq!(Code::parse(b"from-a-newer-server"), None);
        assert_eq!(Code::from_byte(200), None);
    }

    #[test]
    fn the_original_programs_texts_are_unchanged() {
        assert_eq!(ErrorText::of(Code::NameTaken).text(), "Username is taken\n");
        assert_eq!(
            ErrorText::new(Code::NotConnected, "nobody").text(),
            "'nobody' is not connected\n"
        );
    }

    #[test]
    fn texts_read_back_to_their_codes() {
        let cases = [
            ErrorText::of(Code::NameTaken),
            ErrorText::new(Code::Banned, "eve"),
            ErrorText::new(Code::InvalidName, ": it is empty"),
            ErrorText::new(Code::PasswordRequired, "alice"),
            ErrorText::new(Code::PasswordUnsupported, "alice"),
            ErrorText::new(Code::WrongPassword, "alice"),
            ErrorText::new(Code::NotRegistered, "bob"),
            ErrorText::of(Code::LoginsBusy),
            ErrorText::of(Code::ServerFull),
            ErrorText::new(Code::NotConnected, "bob"),
            ErrorText::new(Code::SlowConsumer, "bob"),
            ErrorText::new(Code::Unreachable, "bob"),
            ErrorText::of(Code::Kicked),
        ];
        for error in cases {
            assert_eq!(
                Code::of_text(error.text().as_bytes()),
                Some(error.code()),
                "{error:?}"
            );
        }
        assert_eq!(Code::of_text(b"unknown opcode 9\n"), None);
        assert_eq!(
            Code::of_text(b"'' is not connected\n"),
            Some(Code::NotConnected)
        );
    }
}
