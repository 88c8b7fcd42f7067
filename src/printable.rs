//! Untrusted text made safe for line-oriented output: the text-format log and the CLI's
//! tables. Logins, device IDs and other strings from Dovecot's peers may hold a newline (which
//! would forge a log line), an ANSI escape (which would rewrite the admin's terminal) or
//! invisible characters; here they become visible escapes. Not for JSON (serde escapes) nor
//! for the messages Dovecot forwards (`wire::sanitize_message` reduces those to ASCII).

use std::borrow::Cow;
use std::fmt;

/// `text` with every character that is not printable written as an escape: `\n`, `\r`, `\t`,
/// `\u{1b}` for ESC and other control characters, `\u{202e}` for invisible or direction-
/// changing ones, and `\\` for a backslash, so the escaped form is never ambiguous. Printable
/// text (any script) is unchanged and borrowed.
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        // Writing to a String cannot fail.
        let _ = push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\\' => out.write_str("\\\\"),
        ' '..='~' => out.write_char(c),
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if c.is_control() || !is_printable(c) => write!(out, "\\u{{{:x}}}", u32::from(c)),
        c => out.write_char(c),
    }
}

/// Whether Rust's own `Debug` would show `c` as itself when it follows another character:
/// false for format characters (bidirectional overrides, zero-width spaces), line and
/// paragraph separators, unassigned and private-use code points. Combining marks stay.
fn is_printable(c: char) -> bool {
    let mut buffer = [b'a'; 5];
    let length = c.encode_utf8(&mut buffer[1..]).len();
    let Ok(pair) = std::str::from_utf8(&buffer[..1 + length]) else { return false };
    let mut shown = pair.escape_debug().skip(1);
    shown.next() == Some(c) && shown.next().is_none()
}

/// A `fmt::Write` that escapes what is written through it, for formatters that write a
/// value straight into their output (the log's field formatter).
pub struct Escaping<'a, W: fmt::Write + ?Sized>(pub &'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        match escape(text) {
            Cow::Borrowed(text) => self.0.write_str(text),
            Cow::Owned(text) => self.0.write_str(&text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_unchanged_and_everything_else_becomes_a_visible_escape() {
        assert!(matches!(escape("alice@example.com"), Cow::Borrowed(_)));
        assert_eq!(escape("j\u{fc}rgen@b\u{fc}cher.example"), "j\u{fc}rgen@b\u{fc}cher.example");
        assert_eq!(escape("alice\nINFO forged line"), "alice\\nINFO forged line");
        assert_eq!(escape("\u{1b}[2J\u{1b}]0;owned\u{7}"), "\\u{1b}[2J\\u{1b}]0;owned\\u{7}");
        assert_eq!(escape("a\r\tb\u{0}\u{7f}\u{85}"), "a\\r\\tb\\u{0}\\u{7f}\\u{85}");
        assert_eq!(escape("evil\u{202e}gnp.exe\u{200b}"), "evil\\u{202e}gnp.exe\\u{200b}");
        assert_eq!(escape("line\u{2028}sep"), "line\\u{2028}sep");
        assert_eq!(escape("DOMAIN\\user\\n"), "DOMAIN\\\\user\\\\n", "a backslash is never mistaken for an escape");
        assert_eq!(escape("e\u{301}"), "e\u{301}", "combining marks stay");
    }

    #[test]
    fn the_escaping_writer_escapes_what_is_formatted_through_it() {
        use std::fmt::Write;
        let mut out = String::new();
        write!(Escaping(&mut out), "login={}", "a\nb").unwrap();
        assert_eq!(out, "login=a\\nb");
    }
}
