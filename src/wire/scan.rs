//! A single-pass reader for the body Dovecot actually sends: one flat JSON object of plain
//! strings and booleans, with at most a small nested `attrs` object (reference §2.4). It
//! fills `RawAttempt` in one walk over the bytes, borrowing every string.
//!
//! It is not a JSON parser and never the only one: it answers only when it is sure serde_json
//! would give the same attempt, and gives up (returns `None`) on anything unusual — a `\u`
//! escape, a number, a repeated field, a control character, invalid UTF-8, deep nesting. (The
//! short escapes are read: Dovecot 2.4 quotes the mail app's IMAP ID, `"\"name\" \"K-9\""`,
//! in most IMAP logins.) The caller then
//! parses with serde_json, which also words the error for a bad body. Under `cfg(fuzzing)` every
//! answer is checked against serde_json.

use std::borrow::Cow;

use super::RawAttempt;

/// Deeper values than this in an ignored attribute are left to serde_json.
const MAX_DEPTH: u32 = 8;
/// Bytes first set aside for a string with escapes.
const ESCAPED_CAPACITY: usize = 64;

/// The attempt in `body`, or `None` when serde_json must decide.
pub(super) fn scan(body: &[u8]) -> Option<RawAttempt<'_>> {
    let mut reader = Reader { body, at: 0, ascii: body.is_ascii() };
    let mut raw = RawAttempt::default();
    // One bit per known attribute: serde refuses a repeated one, so the scan gives up on it.
    let mut seen = 0u16;
    reader.skip_space();
    reader.expect(b'{')?;
    reader.skip_space();
    if reader.peek()? == b'}' {
        reader.at += 1;
    } else {
        loop {
            let key = reader.string()?;
            reader.skip_space();
            reader.expect(b':')?;
            reader.skip_space();
            let slot = match key {
                "login" => Slot::Text(&mut raw.login, 0),
                "pwhash" => Slot::Text(&mut raw.pwhash, 1),
                "remote" => Slot::Text(&mut raw.remote, 2),
                "real_remote" => Slot::Text(&mut raw.real_remote, 3),
                "device_id" => Slot::Text(&mut raw.device_id, 4),
                "protocol" => Slot::Text(&mut raw.protocol, 5),
                "session_id" => Slot::Text(&mut raw.session_id, 6),
                "fail_type" => Slot::Text(&mut raw.fail_type, 7),
                "success" => Slot::Flag(&mut raw.success, 8),
                "policy_reject" => Slot::Flag(&mut raw.policy_reject, 9),
                "tls" => Slot::Flag(&mut raw.tls, 10),
                _ => Slot::Ignored,
            };
            match slot {
                Slot::Text(field, bit) => {
                    mark(&mut seen, bit)?;
                    *field = if reader.literal(b"null") { None } else { Some(reader.text()?) };
                }
                Slot::Flag(field, bit) => {
                    mark(&mut seen, bit)?;
                    *field = if reader.literal(b"true") {
                        Some(true)
                    } else if reader.literal(b"false") {
                        Some(false)
                    } else if reader.literal(b"null") {
                        None
                    } else {
                        return None;
                    };
                }
                Slot::Ignored => reader.skip_value(0)?,
            }
            reader.skip_space();
            match reader.next()? {
                b',' => reader.skip_space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    reader.skip_space();
    (reader.at == body.len()).then_some(raw)
}

/// Where a known attribute's value goes, and its bit in `seen`.
enum Slot<'s, 'a> {
    Text(&'s mut Option<Cow<'a, str>>, u16),
    Flag(&'s mut Option<bool>, u16),
    Ignored,
}

/// How many bytes of `text` come before its first quote, backslash or control character.
/// Eight bytes at a time: a body is about 250 bytes of strings, and a byte-by-byte search was
/// the larger part of reading it (docs/BENCHMARKS.md, issue 21).
fn plain_run(text: &[u8]) -> Option<usize> {
    let mut words = text.chunks_exact(8);
    let mut offset = 0;
    for word in words.by_ref() {
        let stops = stop_bytes(u64::from_le_bytes(word.try_into().ok()?));
        if stops != 0 {
            return Some(offset + (stops.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words.remainder().iter().position(|&b| is_stop(b)).map(|at| offset + at)
}

fn is_stop(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// A set high bit in the lowest byte of `word` that is a stop (`is_stop`), and possibly in
/// higher ones (the subtractions borrow across bytes only above the first match): the
/// classic "has a zero byte" and "has a byte below n" tricks.
fn stop_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    has_zero(word ^ (ONES * u64::from(b'"'))) | has_zero(word ^ (ONES * u64::from(b'\\'))) | below_space
}

fn mark(seen: &mut u16, bit: u16) -> Option<()> {
    let mask = 1 << bit;
    if *seen & mask != 0 {
        return None;
    }
    *seen |= mask;
    Some(())
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
    /// The whole body is ASCII (Dovecot's usually is): then every slice of it is UTF-8, and
    /// the strings need no check of their own.
    ascii: bool,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// JSON's four whitespace bytes, and nothing else.
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `word` (`true`, `false`, `null`) when it comes next.
    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.body[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// How many bytes from the reading position up to the next quote, backslash or control
    /// character: the run a string copies or borrows whole (`None` when the body ends first).
    fn plain_run(&self) -> Option<usize> {
        plain_run(self.body.get(self.at..)?)
    }

    /// A string without escapes or control characters, borrowed from the body.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + self.plain_run()?;
        if self.body[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        let bytes = &self.body[start..end];
        if self.ascii {
            // SAFETY: every byte of the body is ASCII, so any slice of it is valid UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).ok()
        }
    }

    /// A string value: borrowed from the body, or unescaped into a copy when it has the short
    /// escapes (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`) as serde_json would.
    fn text(&mut self) -> Option<Cow<'a, str>> {
        let start = self.at;
        if let Some(plain) = self.string() {
            return Some(Cow::Borrowed(plain));
        }
        self.at = start;
        self.expect(b'"')?;
        // Room for a mail app's IMAP ID (Dovecot 2.4 quotes it: `\"name\" \"K-9 Mail\" ...`,
        // most IMAP logins), so the copy is allocated once instead of growing four times.
        let mut text = Vec::with_capacity(ESCAPED_CAPACITY);
        loop {
            let run = self.plain_run()?;
            text.extend_from_slice(&self.body[self.at..self.at + run]);
            self.at += run;
            match self.next()? {
                b'"' => break,
                b'\\' => text.push(match self.next()? {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    _ => return None,
                }),
                // A control character (the run stopped only at these three).
                _ => return None,
            }
        }
        if self.ascii {
            // SAFETY: runs of an ASCII body and the ASCII bytes the escapes stand for.
            Some(Cow::Owned(unsafe { String::from_utf8_unchecked(text) }))
        } else {
            String::from_utf8(text).ok().map(Cow::Owned)
        }
    }

    /// An ignored attribute's value: strings, literals, and objects or arrays of them.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true").then_some(()),
            b'f' => self.literal(b"false").then_some(()),
            b'n' => self.literal(b"null").then_some(()),
            open @ (b'{' | b'[') if depth < MAX_DEPTH => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.at += 1;
                self.skip_space();
                if self.peek()? == close {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.skip_space();
                        self.expect(b':')?;
                        self.skip_space();
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_space();
                    match self.next()? {
                        b',' => self.skip_space(),
                        byte if byte == close => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan answers for `body` exactly as serde_json does, or leaves it to serde_json.
    fn check(body: &str, scanned: bool) {
        let scan = scan(body.as_bytes());
        assert_eq!(scan.is_some(), scanned, "scanned {body}");
        if let Some(scan) = scan {
            let serde: RawAttempt<'_> = serde_json::from_str(body).expect("serde_json accepts what the scan accepts");
            assert_eq!(scan, serde, "{body}");
        }
    }

    #[test]
    fn dovecot_bodies_are_read_in_one_pass_and_agree_with_serde() {
        check(
            r#"{"device_id":"","login":"testuser","protocol":"imap","pwhash":"0f96","remote":"127.0.0.1","session_id":"VmEkE9lgRrh/AAAB","tls":false}"#,
            true,
        );
        check(
            r#"{"device_id":"","login":"t","protocol":"pop3","pwhash":"0350","remote":"127.0.0.1","session_id":"AXp","success":false,"policy_reject":true,"tls":true}"#,
            true,
        );
        check(
            r#"{"attrs":{"foo":"bar","orig":"TestUser","sub/lport":"10143"},"login":"testuser","real_remote":"127.0.0.1","zz_mech":"PLAIN","fail_type":"credentials"}"#,
            true,
        );
        check(" {\n\t\"login\" : \"a\" ,\r\n \"success\":null , \"remote\":null } \n", true);
        check(r#"{}"#, true);
        check(r#"{"x":[],"y":{},"z":[true,false,null,"s",{"a":["b"]}]}"#, true);
        check(r#"{"login":"jürgen@bücher.example"}"#, true);
        check(r#"{"unknown":"x","unknown":"y"}"#, true);
        // The mail app's IMAP ID as Dovecot 2.4 quotes it, and every short escape.
        check(r#"{"device_id":"\"name\" \"K-9 Mail\" \"version\" \"6.712\"","login":"a"}"#, true);
        check(r#"{"login":"a\\b\/c\bd\fe\nf\rg\th"}"#, true);
        // Escapes in a body that is not all ASCII: the copy is checked as UTF-8.
        check(r#"{"device_id":"\"name\" \"Aperçu Mail\"","login":"jürgen"}"#, true);
        check(r#"{"device_id":"\"é\"\"","login":"ü\\"}"#, true);
        // Longer than the copy's first allocation.
        check(&format!(r#"{{"device_id":"{}","login":"a"}}"#, r#"\"name\" "#.repeat(40)), true);
        let (escaped, plain) = (r#"{"device_id":"\"x\""}"#, r#"{"device_id":"x"}"#);
        assert!(matches!(scan(escaped.as_bytes()).unwrap().device_id, Some(Cow::Owned(ref d)) if d == "\"x\""));
        assert!(matches!(scan(plain.as_bytes()).unwrap().device_id, Some(Cow::Borrowed("x"))));
    }

    #[test]
    fn the_word_search_stops_where_a_byte_search_would() {
        let by_bytes = |text: &[u8]| text.iter().position(|&b| is_stop(b));
        // Every byte value at every position of a word and of the tail, after plain bytes
        // (and after bytes that make the subtractions borrow: 0x00 and 0x01 next to it).
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    for filler in [b'a', 0xff, 0x80, 0x21, 0x23, 0x5d] {
                        let mut text = vec![filler; len];
                        text[at] = byte;
                        assert_eq!(plain_run(&text), by_bytes(&text), "{byte:#x} at {at} of {len} after {filler:#x}");
                        if at + 1 < len {
                            text[at + 1] = 0x01;
                            assert_eq!(plain_run(&text), by_bytes(&text), "{byte:#x} at {at} then 0x01");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        // An escape, a number, a repeat, a wrong type: serde_json decides (and words the error).
        check(r#"{"device_id":"\u0041"}"#, false);
        check(r#"{"device_id":"\x"}"#, false);
        check(r#"{"login\u0041":"a"}"#, false);
        check(r#"{"login\"":"a"}"#, false);
        check(r#"{"port":143}"#, false);
        check(r#"{"login":"a","login":"b"}"#, false);
        check(r#"{"tls":null,"tls":true}"#, false);
        check(r#"{"login":5}"#, false);
        check(r#"{"success":"false"}"#, false);
        check(r#"{"a":[[[[[[[[[["deep"]]]]]]]]]]}"#, false);
        // And what serde_json refuses, the scan never accepts.
        for refused in [
            "",
            "{",
            "[1]",
            "{\"login\":\"a\",}",
            "{\"login\":\"a\"} x",
            "{\"login\":\"a\"}{}",
            "{\"login\":\"tab\there\"}",
            "{\"login\" \"a\"}",
            "{\"a\":tru}",
            "{\"a\":[\"x\",]}",
            "{\"a\":{\"b\"}}",
            "\u{feff}{}",
        ] {
            check(refused, false);
            assert!(serde_json::from_str::<RawAttempt<'_>>(refused).is_err(), "{refused:?}");
        }
        assert!(scan(b"{\"login\":\"\xff\"}").is_none());
    }
}
