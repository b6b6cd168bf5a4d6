//! Escaping of untrusted text before it reaches a terminal or a log.
//!
//! Message content and names come from peers. Printed raw, a `\r` or `\n`
//! could forge a line that seems to come from someone else, and an escape
//! sequence could recolour the terminal, set the clipboard (OSC 52) or plant
//! a link (OSC 8). Every character that can steer a terminal is therefore
//! shown as a visible escape instead: `\n`, `\r`, `\t`, `\x1b`, `\u{9b}`.

use std::fmt;

/// True for characters that must never reach a terminal raw: C0 controls,
/// DEL, C1 controls, Unicode line/paragraph separators and bidirectional
/// overrides (which can reorder what a line appears to say).
pub fn is_dangerous(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}'
        | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `c`, escaped if it is [`is_dangerous`].
pub fn write_escaped_char(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if (c as u32) < 0x80 && is_dangerous(c) => write!(out, "\\x{:02x}", c as u32),
        c if is_dangerous(c) => write!(out, "\\u{{{:x}}}", c as u32),
        c => out.write_char(c),
    }
}

/// Appends `text` to `out` with dangerous characters escaped; invalid UTF-8
/// becomes U+FFFD.
pub fn push_escaped(out: &mut String, text: &[u8]) {
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            // Writing into a String cannot fail.
            let _ = write_escaped_char(out, c);
        }
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// Returns `text` escaped as by [`push_escaped`].
pub fn escape(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

/// Displays peer bytes for logs and error texts: dangerous characters
/// escaped, and invalid UTF-8 shown byte by byte as `\xNN` so an operator
/// sees exactly what was sent.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                write_escaped_char(f, c)?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_cannot_forge_a_second_line() {
        assert_eq!(escape(b"hi\nmallory: fake"), "hi\\nmallory: fake");
    }

    #[test]
    fn carriage_return_cannot_overwrite_the_line() {
        assert_eq!(escape(b"harmless\rbob: evil"), "harmless\\rbob: evil");
    }

    #[test]
    fn csi_colour_sequence_is_shown_not_run() {
        assert_eq!(escape(b"\x1b[31mred"), "\\x1b[31mred");
    }

    #[test]
    fn osc52_clipboard_write_is_neutralised() {
        assert_eq!(
            escape(b"\x1b]52;c;ZXZpbA==\x07"),
            "\\x1b]52;c;ZXZpbA==\\x07"
        );
    }

    #[test]
    fn osc8_hyperlink_is_neutralised() {
        assert_eq!(
            escape(b"\x1b]8;;http://x\x1b\\click\x1b]8;;\x1b\\"),
            "\\x1b]8;;http://x\\x1b\\click\\x1b]8;;\\x1b\\"
        );
    }

    #[test]
    fn c1_csi_and_del_are_escaped() {
        assert_eq!(escape("\u{9b}31m\x7f".as_bytes()), "\\u{9b}31m\\x7f");
    }

    #[test]
    fn bidi_override_cannot_reverse_text() {
        assert_eq!(escape("a\u{202e}b".as_bytes()), "a\\u{202e}b");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        assert_eq!(escape(b"ok\xff\xfeok"), "ok\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn log_display_shows_invalid_bytes_exactly() {
        assert_eq!(
            Escaped(b"a\nb\x1b[31m\xff").to_string(),
            "a\\nb\\x1b[31m\\xff"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        let text = "héllo 🌍  two  spaces \\ back";
        assert_eq!(escape(text.as_bytes()), text);
    }
}
