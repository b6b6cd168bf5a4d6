//! JSON string literals for the line-oriented JSON the binaries print
//! (`chat-client --json`, `chat-bench`'s report).

/// Appends `text` as a JSON string literal; invalid UTF-8 becomes U+FFFD.
///
/// Besides what JSON requires, every character that could steer a
/// terminal or reorder a line (other C0/C1 controls, DEL, line separators,
/// bidi overrides; see [`crate::sanitize::is_dangerous`]) is written as a
/// `\uXXXX` escape, so even `jq -r` output of a string stays inert.
pub fn push_string(out: &mut String, text: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(text).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if crate::sanitize::is_dangerous(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_and_line_separators_are_escaped() {
        let mut out = String::new();
        push_string(
            &mut out,
            "a\u{202e}b\u{2066}c\u{2028}d\u{2029}e\u{202a}f\u{2069}".as_bytes(),
        );
        assert_eq!(out, "\"a\\u202eb\\u2066c\\u2028d\\u2029e\\u202af\\u2069\"");
    }

    #[test]
    fn quotes_controls_and_invalid_utf8() {
        let mut out = String::new();
        push_string(&mut out, "q\"\\\n\x1b é".as_bytes());
        push_string(&mut out, b"a\xffb");
        assert_eq!(out, "\"q\\\"\\\\\\n\\u001b \u{e9}\"\"a\u{fffd}b\"");
    }
}
