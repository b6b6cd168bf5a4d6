//! How received frames are shown: plain lines or JSON, escaped, coloured
//! only where asked.
//!
//! A message is always exactly one line. Its content is escaped (see
//! [`crate::sanitize`]) so no sender can forge a line or steer the terminal;
//! `--json` shows content raw but JSON-escaped.

use std::io::{self, Write};

use owo_colors::OwoColorize;

use crate::sanitize::push_escaped;

/// How each received frame becomes text.
#[derive(Clone, Copy, Debug)]
pub struct Renderer {
    /// One JSON object per line instead of `from: content`.
    pub json: bool,
    /// Colour usernames on stdout.
    pub color_stdout: bool,
    /// Colour `error:` on stderr.
    pub color_stderr: bool,
}

/// Where a rendered line belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Renderer {
    /// Appends the line for a message (with its `\n`) to `out`.
    pub fn message(&self, from: &[u8], content: &[u8], out: &mut String) -> Stream {
        if self.json {
            out.push_str("{\"type\":\"message\",\"from\":");
            push_json_string(out, from);
            out.push_str(",\"content\":");
            push_json_string(out, content);
            out.push_str("}\n");
        } else {
            if self.color_stdout {
                let mut name = String::new();
                push_escaped(&mut name, from);
                out.push_str(&name.bold().cyan().to_string());
            } else {
                push_escaped(out, from);
            }
            out.push_str(": ");
            push_escaped(out, content);
            out.push('\n');
        }
        Stream::Stdout
    }

    /// Appends the line for a server error to `out`; its trailing newline
    /// is dropped.
    pub fn error(&self, text: &[u8], out: &mut String) -> Stream {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        if self.json {
            out.push_str("{\"type\":\"error\",\"text\":");
            push_json_string(out, text);
            out.push_str("}\n");
            Stream::Stdout
        } else {
            self.label(out, "error");
            push_escaped(out, text);
            out.push('\n');
            Stream::Stderr
        }
    }

    /// Appends the answer to `who`: one name per line, or one line
    /// `N online: a, b` when `compact` (the REPL); JSON: one object.
    pub fn online(&self, names: &[String], compact: bool, out: &mut String) -> Stream {
        if self.json {
            out.push_str("{\"type\":\"online\",\"users\":[");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, name.as_bytes());
            }
            out.push_str("]}\n");
            return Stream::Stdout;
        }
        if compact {
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
        out: &mut String,
    ) -> Option<Stream> {
        let event = if joined { "joined" } else { "left" };
        if self.json {
            out.push_str(&format!(
                "{{\"type\":\"presence\",\"event\":\"{event}\",\"user\":"
            ));
            push_json_string(out, name);
            out.push_str("}\n");
            return Some(Stream::Stdout);
        }
        if !notice {
            return None;
        }
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

/// Appends `text` as a JSON string literal; invalid UTF-8 becomes U+FFFD.
pub fn push_json_string(out: &mut String, text: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(text).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Other controls (C0, DEL, C1), line separators and bidi
            // overrides are escaped too, so even `jq -r` output of a string
            // stays inert on a terminal and cannot reorder a line.
            c if crate::sanitize::is_dangerous(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Buffered standard output and error for received frames: lines pile up in
/// memory and are written when the caller calls [`Output::flush`], which it
/// does as soon as no further frame is immediately waiting.
pub struct Output {
    /// How frames are shown.
    pub renderer: Renderer,
    /// Pending stdout text.
    stdout: String,
    /// Pending stderr text.
    stderr: String,
}

impl Output {
    /// Empty buffers.
    pub fn new(renderer: Renderer) -> Self {
        Output {
            renderer,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    /// Queues a message line.
    pub fn message(&mut self, from: &[u8], content: &[u8]) {
        self.renderer.message(from, content, &mut self.stdout);
    }

    /// Queues an error line.
    pub fn error(&mut self, text: &[u8]) {
        let mut line = String::new();
        match self.renderer.error(text, &mut line) {
            Stream::Stdout => self.stdout.push_str(&line),
            Stream::Stderr => self.stderr.push_str(&line),
        }
    }

    /// Queues the answer to `who`, one name per line (JSON: one object).
    pub fn online(&mut self, names: &[String]) {
        let mut text = String::new();
        match self.renderer.online(names, false, &mut text) {
            Stream::Stdout => self.stdout.push_str(&text),
            Stream::Stderr => self.stderr.push_str(&text),
        }
    }

    /// Queues a presence event; plain batch output shows none.
    pub fn presence(&mut self, joined: bool, name: &[u8]) {
        let mut text = String::new();
        if self.renderer.presence(joined, name, false, &mut text) == Some(Stream::Stdout) {
            self.stdout.push_str(&text);
        }
    }

    /// Queues an already rendered stdout line.
    pub fn raw_stdout(&mut self, line: &str) {
        self.stdout.push_str(line);
    }

    /// Queues a local notice for stderr (`--json` leaves these as text).
    pub fn notice(&mut self, text: &str) {
        self.stderr.push_str(text);
        self.stderr.push('\n');
    }

    /// True when nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }

    /// Writes what is pending. A broken stdout pipe comes back as
    /// `ErrorKind::BrokenPipe`; the caller treats it as a normal end.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.stderr.is_empty() {
            // Errors about stderr have nowhere to be reported.
            let _ = io::stderr().write_all(self.stderr.as_bytes());
            self.stderr.clear();
        }
        if !self.stdout.is_empty() {
            let mut stdout = io::stdout().lock();
            stdout.write_all(self.stdout.as_bytes())?;
            stdout.flush()?;
            self.stdout.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Renderer = Renderer {
        json: false,
        color_stdout: false,
        color_stderr: false,
    };
    const JSON: Renderer = Renderer {
        json: true,
        color_stdout: false,
        color_stderr: false,
    };

    #[test]
    fn plain_message_is_one_escaped_line() {
        let mut out = String::new();
        PLAIN.message(b"bob", b"hi\nmallory: fake\x1b[31m", &mut out);
        assert_eq!(out, "bob: hi\\nmallory: fake\\x1b[31m\n");
    }

    #[test]
    fn plain_error_drops_the_trailing_newline() {
        let mut out = String::new();
        assert_eq!(
            PLAIN.error(b"'carol' is not connected\n", &mut out),
            Stream::Stderr
        );
        assert_eq!(out, "error: 'carol' is not connected\n");
    }

    #[test]
    fn json_lines() {
        let mut out = String::new();
        JSON.message(b"bob", "q\"\\\n\x1b é".as_bytes(), &mut out);
        assert_eq!(
            out,
            "{\"type\":\"message\",\"from\":\"bob\",\"content\":\"q\\\"\\\\\\n\\u001b é\"}\n"
        );
        out.clear();
        assert_eq!(
            JSON.error(b"'carol' is not connected\n", &mut out),
            Stream::Stdout
        );
        assert_eq!(
            out,
            "{\"type\":\"error\",\"text\":\"'carol' is not connected\"}\n"
        );
    }

    #[test]
    fn json_escapes_bidi_overrides_and_line_separators() {
        let mut out = String::new();
        push_json_string(
            &mut out,
            "a\u{202e}b\u{2066}c\u{2028}d\u{2029}e\u{202a}f\u{2069}".as_bytes(),
        );
        assert_eq!(out, "\"a\\u202eb\\u2066c\\u2028d\\u2029e\\u202af\\u2069\"");
    }

    #[test]
    fn json_replaces_invalid_utf8() {
        let mut out = String::new();
        push_json_string(&mut out, b"a\xffb");
        assert_eq!(out, "\"a\u{fffd}b\"");
    }

    #[test]
    fn colour_only_when_asked() {
        let mut out = String::new();
        let colored = Renderer {
            color_stdout: true,
            ..PLAIN
        };
        colored.message(b"bob", b"hi", &mut out);
        assert!(out.contains('\x1b'));
        assert!(out.ends_with(": hi\n"));
    }
}
