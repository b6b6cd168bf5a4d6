//! How received frames are shown: plain lines or JSON, escaped, coloured
//! only where asked, optionally time-stamped. [`Renderer`] turns a frame
//! into its line; [`super::output::Output`] gathers the lines for the
//! bounded writer that takes them to stdout ([`super::stdout`]).
//!
//! A message is always exactly one line. Its content is escaped (see
//! [`crate::sanitize`]) so no sender can forge a line or steer the terminal;
//! `--json` shows content JSON-escaped, with the same dangerous characters
//! as `\uXXXX`. Usernames cannot contain `:` or spaces, so `name: ` starts
//! only message lines; in the editor every other line (notices, errors, the
//! online list) starts with `* `, which no message line can.

use owo_colors::OwoColorize;

use super::frames::LogEntry;
use super::receipts::{preview, Origin, Sent};
use crate::clock::Stamp;
use crate::json::push_string;
use crate::sanitize::push_escaped;

/// How each received frame becomes text.
#[derive(Clone, Copy, Debug, Default)]
pub struct Renderer {
    /// One JSON object per line instead of `from: content`.
    pub json: bool,
    /// Colour usernames on stdout.
    pub color_stdout: bool,
    /// Colour `error:` on stderr.
    pub color_stderr: bool,
    /// Start every line with the receive time (`HH:MM:SS `), and give every
    /// JSON object a `"ts"`.
    pub timestamps: bool,
    /// Mark every line that is not a message with `* ` (the editor, where
    /// notices and messages share one terminal).
    pub mark_notices: bool,
    /// With `json`: an `accepted` or `refused` object for every message
    /// the server accounts for (`--receipts`).
    pub receipts: bool,
}

/// Where a rendered line belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Marker that starts every editor line that is not a message.
pub const NOTICE_MARK: &str = "* ";
/// What starts every other line the client writes to stderr.
pub const PROGRAM_MARK: &str = "chat-client: ";

impl Renderer {
    /// Starts a JSON object of `kind`, with its `"ts"` when asked.
    fn json_start(&self, kind: &str, stamp: Option<&Stamp>, out: &mut String) {
        out.push_str("{\"type\":\"");
        out.push_str(kind);
        out.push('"');
        if let Some(stamp) = stamp.filter(|_| self.timestamps) {
            out.push_str(",\"ts\":\"");
            out.push_str(&stamp.rfc3339);
            out.push('"');
        }
    }

    /// Starts a plain line. A message (`notice` false) gets its receive
    /// time with `--timestamps`; nothing else does. A notice gets the mark
    /// in the editor.
    fn line_start(&self, notice: bool, stamp: Option<&Stamp>, out: &mut String) {
        if notice {
            if self.mark_notices {
                out.push_str(NOTICE_MARK);
            }
        } else if let Some(stamp) = stamp.filter(|_| self.timestamps) {
            out.push_str(&stamp.clock);
            out.push(' ');
        }
    }

    /// Starts a line of our own on stderr: `* ` in the editor, the
    /// program's name elsewhere, as every stderr line of a script run
    /// starts (except a script line's own `SOURCE:LINE:`).
    fn stderr_start(&self, out: &mut String) {
        out.push_str(if self.mark_notices {
            NOTICE_MARK
        } else {
            PROGRAM_MARK
        });
    }

    /// Appends the line for a message (with its `\n`) to `out`.
    pub fn message(
        &self,
        from: &[u8],
        content: &[u8],
        stamp: Option<&Stamp>,
        out: &mut String,
    ) -> Stream {
        self.message_marked(from, content, None, stamp, out)
    }

    /// [`Renderer::message`] with `--e2e`'s mark: `Some(true)` decrypted
    /// (JSON `"e2e":true`; the text line as any), `Some(false)` sent
    /// unencrypted by a user whose keys are pinned (JSON `"e2e":false`,
    /// `bob (unencrypted): …`).
    pub fn message_marked(
        &self,
        from: &[u8],
        content: &[u8],
        e2e: Option<bool>,
        stamp: Option<&Stamp>,
        out: &mut String,
    ) -> Stream {
        if self.json {
            self.json_start("message", stamp, out);
            out.push_str(",\"from\":");
            push_string(out, from);
            out.push_str(",\"content\":");
            push_string(out, content);
            push_e2e(e2e, out);
            out.push_str("}\n");
        } else {
            self.line_start(false, stamp, out);
            self.message_body_marked(from, content, e2e, out);
        }
        Stream::Stdout
    }

    /// `from: content` and the newline, escaped, the name coloured where
    /// asked (and marked `(unencrypted)` where `--e2e` says so).
    fn message_body_marked(
        &self,
        from: &[u8],
        content: &[u8],
        e2e: Option<bool>,
        out: &mut String,
    ) {
        if self.color_stdout {
            let mut name = String::new();
            push_escaped(&mut name, from);
            out.push_str(&name.bold().cyan().to_string());
        } else {
            push_escaped(out, from);
        }
        if e2e == Some(false) {
            out.push_str(" (unencrypted)");
        }
        out.push_str(": ");
        push_escaped(out, content);
        out.push('\n');
    }

    /// Appends the line for a message of the user's log: as a message
    /// (`from: content`), or `→ to: content` for a copy of one sent from
    /// another device; with `--timestamps`, the time the server logged it.
    /// JSON always carries its `id` (the cursor) and the server's `ts`:
    /// `{"type":"message","id":7,"ts":…,"from":…,"content":…}`, or
    /// `"type":"sent"` with `"to"`.
    pub fn entry(&self, entry: &LogEntry<'_>, out: &mut String) {
        self.log_line(entry, false, out);
    }

    /// Appends a line of a `history` answer: as [`Renderer::entry`], always
    /// with its time; JSON `"type":"history"` with `"from"` or `"to"`.
    pub fn history(&self, entry: &LogEntry<'_>, out: &mut String) {
        self.log_line(entry, true, out);
    }

    fn log_line(&self, entry: &LogEntry<'_>, history: bool, out: &mut String) {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.ts_ms);
        let logged = Stamp::at(time);
        if self.json {
            use std::fmt::Write as _;
            let kind = match (history, entry.sent) {
                (true, _) => "history",
                (false, true) => "sent",
                (false, false) => "message",
            };
            let _ = write!(
                out,
                "{{\"type\":\"{kind}\",\"id\":{},\"ts\":\"{}\"",
                entry.id, logged.rfc3339
            );
            out.push_str(if entry.sent { ",\"to\":" } else { ",\"from\":" });
            push_string(out, entry.peer);
            out.push_str(",\"content\":");
            push_string(out, entry.content);
            push_e2e(entry.e2e, out);
            out.push_str("}\n");
        } else {
            if history {
                out.push_str(&logged.clock);
                out.push(' ');
            } else {
                self.line_start(false, Some(&logged), out);
            }
            if entry.sent {
                out.push_str("→ ");
            }
            self.message_body_marked(entry.peer, entry.content, entry.e2e, out);
        }
    }

    /// Appends the line for a server error to `out`; its trailing newline
    /// is dropped. JSON shows its code, when the server gave one.
    pub fn error(
        &self,
        code: &[u8],
        text: &[u8],
        stamp: Option<&Stamp>,
        out: &mut String,
    ) -> Stream {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        if self.json {
            self.json_start("error", stamp, out);
            Self::json_code(code, out);
            out.push_str(",\"text\":");
            push_string(out, text);
            out.push_str("}\n");
            Stream::Stdout
        } else {
            self.stderr_start(out);
            self.label(out, "error");
            push_escaped(out, text);
            out.push('\n');
            Stream::Stderr
        }
    }

    /// Appends the report of a message the server accepted: an `accepted`
    /// object with `--json --receipts`, nothing otherwise.
    pub fn accepted(&self, sent: &Sent, stamp: Option<&Stamp>, out: &mut String) -> bool {
        if !(self.json && self.receipts) {
            return false;
        }
        self.json_start("accepted", stamp, out);
        Self::json_sent(sent, out);
        Self::json_source(sent, out);
        out.push_str("}\n");
        true
    }

    /// Appends the report of a message the server stored for a recipient
    /// who is not connected: a `stored` object with `--json --receipts`,
    /// nothing otherwise.
    pub fn stored(&self, sent: &Sent, stamp: Option<&Stamp>, out: &mut String) -> bool {
        if !(self.json && self.receipts) {
            return false;
        }
        self.json_start("stored", stamp, out);
        Self::json_sent(sent, out);
        Self::json_source(sent, out);
        out.push_str("}\n");
        true
    }

    /// Appends the editor's echo of a message we sent, once the server
    /// accepted it: `→ bob: text`, dim when colouring, so a conversation
    /// reads top to bottom. Nothing for a script line.
    pub fn own_message(&self, to: &str, text: &str, stamp: Option<&Stamp>, out: &mut String) {
        self.line_start(false, stamp, out);
        let mut line = String::from("→ ");
        push_escaped(&mut line, to.as_bytes());
        line.push_str(": ");
        push_escaped(&mut line, text.as_bytes());
        if self.color_stderr {
            out.push_str(&line.dimmed().to_string());
        } else {
            out.push_str(&line);
        }
        out.push('\n');
    }

    /// Appends the report of a message the server refused with `text`:
    /// a `refused` object with `--json --receipts`, an `error` object with
    /// the line with `--json` alone; otherwise, for a script
    /// line, `SOURCE:LINE: text` (the form of local errors), and for a
    /// typed message the error with the recipient and the start of the
    /// message.
    pub fn refused(
        &self,
        sent: &Sent,
        code: &[u8],
        text: &[u8],
        stamp: Option<&Stamp>,
        out: &mut String,
    ) -> Stream {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        if self.json && self.receipts {
            self.json_start("refused", stamp, out);
            Self::json_sent(sent, out);
            Self::json_code(code, out);
            out.push_str(",\"text\":");
            push_string(out, text);
            Self::json_source(sent, out);
            out.push_str("}\n");
            return Stream::Stdout;
        }
        // Plain JSON: the error object it always had, saying which line.
        if self.json {
            self.json_start("error", stamp, out);
            Self::json_code(code, out);
            out.push_str(",\"text\":");
            push_string(out, text);
            Self::json_sent(sent, out);
            Self::json_source(sent, out);
            out.push_str("}\n");
            return Stream::Stdout;
        }
        self.line_start(true, stamp, out);
        match &sent.origin {
            Origin::Line { source, number } => {
                push_escaped(out, source.as_bytes());
                out.push_str(&format!(":{number}: "));
                push_escaped(out, text);
            }
            Origin::Typed { text: typed } | Origin::Copy { text: typed } => {
                self.label(out, "error");
                push_escaped(out, text);
                out.push_str(" (your message to ");
                push_escaped(out, sent.to.as_bytes());
                out.push_str(": \"");
                push_escaped(out, preview(typed).as_bytes());
                out.push_str("\")");
            }
        }
        out.push('\n');
        Stream::Stderr
    }

    /// The `code` field of an error or refusal object, when the server
    /// gave a code.
    fn json_code(code: &[u8], out: &mut String) {
        if !code.is_empty() {
            out.push_str(",\"code\":");
            push_string(out, code);
        }
    }

    /// The fields of a receipt object that say which message it is about.
    fn json_sent(sent: &Sent, out: &mut String) {
        match &sent.origin {
            Origin::Line { number, .. } => {
                out.push_str(&format!(",\"line\":{number},\"to\":"));
                push_string(out, sent.to.as_bytes());
            }
            Origin::Typed { text } | Origin::Copy { text } => {
                out.push_str(",\"to\":");
                push_string(out, sent.to.as_bytes());
                out.push_str(",\"preview\":");
                push_string(out, preview(text).as_bytes());
            }
        }
    }

    /// The script a receipt object's line is in, last so that the object
    /// starts the same whatever the file.
    fn json_source(sent: &Sent, out: &mut String) {
        if let Origin::Line { source, .. } = &sent.origin {
            out.push_str(",\"source\":");
            push_string(out, source.as_bytes());
        }
    }

    /// Appends the answer to `who`: one name per line, or one line
    /// `N online: a, b` when `compact` (the REPL); JSON: one object.
    pub fn online(
        &self,
        names: &[String],
        compact: bool,
        stamp: Option<&Stamp>,
        out: &mut String,
    ) -> Stream {
        if self.json {
            self.json_start("online", stamp, out);
            out.push_str(",\"users\":[");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(out, name.as_bytes());
            }
            out.push_str("]}\n");
            return Stream::Stdout;
        }
        if compact {
            self.line_start(true, stamp, out);
            out.push_str(&format!("{} online: ", names.len()));
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_escaped(out, name.as_bytes());
            }
            out.push('\n');
            return Stream::Stderr;
        }
        for name in names {
            push_escaped(out, name.as_bytes());
            out.push('\n');
        }
        Stream::Stdout
    }

    /// Appends a presence event: JSON, or a quiet notice when `notice`;
    /// `None` when plain output shows no presence.
    pub fn presence(
        &self,
        joined: bool,
        name: &[u8],
        notice: bool,
        stamp: Option<&Stamp>,
        out: &mut String,
    ) -> Option<Stream> {
        let event = if joined { "joined" } else { "left" };
        if self.json {
            self.json_start("presence", stamp, out);
            out.push_str(&format!(",\"event\":\"{event}\",\"user\":"));
            push_string(out, name);
            out.push_str("}\n");
            return Some(Stream::Stdout);
        }
        if !notice {
            return None;
        }
        self.line_start(true, stamp, out);
        let mut line = String::new();
        push_escaped(&mut line, name);
        line.push(' ');
        line.push_str(event);
        if self.color_stderr {
            out.push_str(&line.dimmed().to_string());
        } else {
            out.push_str(&line);
        }
        out.push('\n');
        Some(Stream::Stderr)
    }

    /// Appends a local notice line (`connected as …`, a connection's end):
    /// marked in the editor, the program's name elsewhere, never
    /// time-stamped or JSON.
    pub fn notice(&self, text: &str, out: &mut String) {
        self.stderr_start(out);
        out.push_str(text);
        out.push('\n');
    }

    /// Appends `label: ` in red when stderr is coloured.
    pub fn label(&self, out: &mut String, label: &str) {
        if self.color_stderr {
            out.push_str(&label.red().bold().to_string());
        } else {
            out.push_str(label);
        }
        out.push_str(": ");
    }
}

/// `,"e2e":true` or `,"e2e":false` when `--e2e` marks it.
fn push_e2e(e2e: Option<bool>, out: &mut String) {
    match e2e {
        Some(true) => out.push_str(",\"e2e\":true"),
        Some(false) => out.push_str(",\"e2e\":false"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Renderer = Renderer {
        json: false,
        color_stdout: false,
        color_stderr: false,
        timestamps: false,
        mark_notices: false,
        receipts: false,
    };
    const JSON: Renderer = Renderer {
        json: true,
        ..PLAIN
    };

    #[test]
    fn plain_message_is_one_escaped_line() {
        let mut out = String::new();
        PLAIN.message(b"bob", b"hi\nmallory: fake\x1b[31m", None, &mut out);
        assert_eq!(out, "bob: hi\\nmallory: fake\\x1b[31m\n");
    }

    #[test]
    fn plain_error_drops_the_trailing_newline() {
        let mut out = String::new();
        assert_eq!(
            PLAIN.error(
                b"not-connected",
                b"'carol' is not connected\n",
                None,
                &mut out
            ),
            Stream::Stderr
        );
        assert_eq!(out, "chat-client: error: 'carol' is not connected\n");
    }

    #[test]
    fn json_lines() {
        let mut out = String::new();
        JSON.message(b"bob", "q\"\\\n\x1b é".as_bytes(), None, &mut out);
        assert_eq!(
            out,
            "{\"type\":\"message\",\"from\":\"bob\",\"content\":\"q\\\"\\\\\\n\\u001b é\"}\n"
        );
        out.clear();
        assert_eq!(
            JSON.error(
                b"not-connected",
                b"'carol' is not connected\n",
                None,
                &mut out
            ),
            Stream::Stdout
        );
        assert_eq!(
            out,
            "{\"type\":\"error\",\"code\":\"not-connected\",\"text\":\"'carol' is not connected\"}\n"
        );
        out.clear();
        JSON.error(b"", b"Username is taken\n", None, &mut out);
        assert_eq!(out, "{\"type\":\"error\",\"text\":\"Username is taken\"}\n");
    }

    #[test]
    fn editor_notices_are_marked_and_cannot_pass_for_messages() {
        let repl = Renderer {
            mark_notices: true,
            ..PLAIN
        };
        let mut out = String::new();
        repl.presence(true, b"bob", true, None, &mut out);
        repl.error(
            b"shutting-down",
            b"server is shutting down\n",
            None,
            &mut out,
        );
        repl.online(&["a".into(), "b".into()], true, None, &mut out);
        repl.notice("connected as zed (2 online)", &mut out);
        repl.message(b"error", b"server is shutting down", None, &mut out);
        assert_eq!(
            out,
            "* bob joined\n* error: server is shutting down\n* 2 online: a, b\n\
             * connected as zed (2 online)\nerror: server is shutting down\n"
        );
    }

    #[test]
    fn timestamps_prefix_plain_lines_and_join_json_objects() {
        let stamp = Stamp {
            clock: "07:05:36".into(),
            rfc3339: "2026-11-29T07:05:36.123+00:00".into(),
        };
        let mut out = String::new();
        let plain = Renderer {
            timestamps: true,
            ..PLAIN
        };
        plain.message(b"bob", b"hi", Some(&stamp), &mut out);
        assert_eq!(out, "07:05:36 bob: hi\n");
        out.clear();
        let json = Renderer {
            timestamps: true,
            ..JSON
        };
        json.presence(false, b"bob", false, Some(&stamp), &mut out);
        assert_eq!(
            out,
            "{\"type\":\"presence\",\"ts\":\"2026-11-29T07:05:36.123+00:00\",\
             \"event\":\"left\",\"user\":\"bob\"}\n"
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let mut out = String::new();
        let colored = Renderer {
            color_stdout: true,
            ..PLAIN
        };
        colored.message(b"bob", b"hi", None, &mut out);
        assert!(out.contains('\x1b'));
        assert!(out.ends_with(": hi\n"));
    }
}
