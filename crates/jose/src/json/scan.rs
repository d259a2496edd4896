//! The strict scanner: checks a JSON text without building it.
//!
//! It follows the grammar of RFC 8259 to the byte (no comments, no
//! trailing commas, no leading zeros, no bare control characters, no lone
//! surrogates in `\u` escapes, no number that overflows to infinity), checks
//! every object at every depth for repeated member names (comparing names
//! after unescaping) and bounds nesting. It builds nothing: for the members
//! of the top-level object it hands out the member name and the exact text
//! of its value, and whoever needs a value builds it from that text
//! (`json::de` walks it, with `serde_json` for what involves a choice).
//! Checking and building stay apart, and the invariant that matters
//! holds: the scanner only ever narrows. Everything it accepts,
//! `serde_json` accepts too, and each member's text it hands out reads
//! back as the same value (`accepts_what_serde_json_writes`,
//! `never_accepts_what_serde_json_refuses`, the grammar table below, and
//! the `claims_json` fuzz target). Values are built from that text: the
//! registered claims and header members by this crate's readers, the
//! caller's type by `json::de`, whose result always equals
//! `serde_json::from_slice` on the whole text.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::error::{Error, Input};

/// Nesting is never deeper than this, whatever the caller's limit, so the
/// scanner's recursion stays bounded. It is `serde_json`'s own limit (127
/// nested arrays or objects), so nothing the scanner accepts is refused
/// for depth when a value is built.
pub(crate) const HARD_MAX_DEPTH: usize = 127;

/// The JSON type of a value the scanner passed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string; `escaped` if it holds any backslash escape.
    String {
        escaped: bool,
    },
    /// A number; `integer` if it has neither fraction nor exponent.
    Number {
        integer: bool,
    },
    Bool,
    Null,
    Array,
    Object,
}

/// One member of the top-level object.
pub(crate) struct Member<'a> {
    /// The name, unescaped.
    pub(crate) name: Cow<'a, str>,
    /// The name's literal as written (with its quotes and escapes) when
    /// it holds escapes; empty otherwise.
    pub(crate) escaped_name: &'a str,
    pub(crate) kind: Kind,
    /// The value's JSON text exactly as written (a string with its quotes).
    pub(crate) raw: &'a str,
}

impl<'a> Member<'a> {
    /// The value as a string, if it is one.
    pub(crate) fn as_str(&self) -> Option<Cow<'a, str>> {
        match self.kind {
            Kind::String { escaped: false } => {
                self.raw.get(1..self.raw.len() - 1).map(Cow::Borrowed)
            }
            Kind::String { escaped: true } => unescape(self.raw).map(Cow::Owned),
            _ => None,
        }
    }
}

/// A checked string literal (with its quotes) as the text it stands for.
fn unescape(raw: &str) -> Option<String> {
    serde_json::from_str(raw).ok()
}

/// Check `bytes` as one JSON object and call `each` for its members, in
/// order; the text, as checked UTF-8. The object sits at depth 0; a
/// container at depth `d` needs `d < max_depth`.
pub(crate) fn object<'a>(
    bytes: &'a [u8],
    input: Input,
    max_depth: usize,
    mut each: impl FnMut(Member<'a>) -> Result<(), Error>,
) -> Result<&'a str, Error> {
    let mut s = Scanner::new(bytes, input, max_depth)?;
    s.skip_ws();
    if s.peek() != Some(b'{') {
        return Err(s.syntax("expected a JSON object"));
    }
    s.members(0, &mut |s, name, escaped_name, raw_at| {
        let kind = s.value(1)?;
        let raw = &s.text[raw_at..s.pos];
        each(Member {
            name,
            escaped_name,
            kind,
            raw,
        })
    })?;
    s.end()?;
    Ok(s.text)
}

/// Check `bytes` as one JSON value of any type.
pub(crate) fn value(bytes: &[u8], input: Input, max_depth: usize) -> Result<Kind, Error> {
    let mut s = Scanner::new(bytes, input, max_depth)?;
    s.skip_ws();
    let kind = s.value(0)?;
    s.end()?;
    Ok(kind)
}

/// Member names seen so far in one object. Objects in tokens are small and
/// their names plain: the first names are kept as a fingerprint (the
/// length and the first seven bytes, exact for short names like `exp`) and
/// where they sit in the text, in arrays that need no allocation and no
/// drop. A name with escapes, or a thirty-third name, moves them all to a
/// set.
struct Seen<'a> {
    prints: [u64; INLINE_NAMES],
    at: [(u32, u32); INLINE_NAMES],
    len: usize,
    set: Option<HashSet<Cow<'a, str>>>,
}

const INLINE_NAMES: usize = 32;

/// The length (capped at 255) in the low byte, then up to seven bytes of
/// the name that starts at `start` in `text`: two names of at most seven
/// bytes are equal exactly when their fingerprints are.
fn fingerprint(text: &[u8], start: usize, len: usize) -> u64 {
    let n = len.min(7);
    // One load where the text goes on for eight bytes (a name is always
    // followed by its quote and more), masked to the name's bytes.
    let head = match text.get(start..start + 8).map(<[u8; 8]>::try_from) {
        Some(Ok(word)) => u64::from_le_bytes(word) & ((1u64 << (8 * n)) - 1),
        _ => text
            .get(start..start + n)
            .unwrap_or_default()
            .iter()
            .rev()
            .fold(0, |acc, &b| acc << 8 | u64::from(b)),
    };
    head << 8 | len.min(255) as u64
}

impl<'a> Seen<'a> {
    fn new() -> Seen<'a> {
        Seen {
            prints: [0; INLINE_NAMES],
            at: [(0, 0); INLINE_NAMES],
            len: 0,
            set: None,
        }
    }

    /// Record a name of `text`, plain ones by where they sit; false if the
    /// object already has it.
    fn insert(&mut self, text: &'a str, name: Cow<'a, str>, start: usize) -> bool {
        let plain = matches!(name, Cow::Borrowed(_));
        if self.set.is_none() && plain && self.len < INLINE_NAMES {
            let bytes = name.as_bytes();
            let print = fingerprint(text.as_bytes(), start, bytes.len());
            let exact = bytes.len() <= 7;
            for i in 0..self.len {
                if self.prints[i] == print {
                    let (s, e) = self.at[i];
                    if exact || text.as_bytes().get(s as usize..e as usize) == Some(bytes) {
                        return false;
                    }
                }
            }
            let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(start + bytes.len())) else {
                return self.set(text).insert(name);
            };
            self.prints[self.len] = print;
            self.at[self.len] = (s, e);
            self.len += 1;
            return true;
        }
        self.set(text).insert(name)
    }

    fn set(&mut self, text: &'a str) -> &mut HashSet<Cow<'a, str>> {
        let (at, len) = (&self.at, self.len);
        self.set.get_or_insert_with(|| {
            at[..len]
                .iter()
                .filter_map(|&(s, e)| text.get(s as usize..e as usize))
                .map(Cow::Borrowed)
                .collect()
        })
    }
}

/// Called for each member of an object with the unescaped name, its
/// literal if it holds escapes (else empty) and the offset where the value
/// starts; it must scan the value.
type OnMember<'f, 'a> =
    dyn FnMut(&mut Scanner<'a>, Cow<'a, str>, &'a str, usize) -> Result<(), Error> + 'f;

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    input: Input,
    max_depth: usize,
}

/// Bytes a string scan must stop at: the closing quote, a backslash, and
/// the control characters JSON forbids inside strings.
static STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Flags (in its high bit) each byte of `word` (little-endian) that is a
/// quote, a backslash or below 0x20, by the classic test for a zero byte:
/// the lowest flag is always exact; flags above it may be spurious.
fn needs_look(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGHS;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    below(quote, 1) | below(backslash, 1) | below(word, 0x20)
}

/// The offset of the first byte at or after `pos` that a string scan must
/// stop at (see [`STOP`]), or the end of `bytes`. Eight bytes at a time:
/// the lowest flagged byte of a word is the first one that needs a look.
#[inline(always)]
pub(crate) fn plain_run(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let flags = needs_look(u64::from_le_bytes(word));
        if flags != 0 {
            return pos + (flags.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while bytes.get(pos).is_some_and(|&b| !STOP[usize::from(b)]) {
        pos += 1;
    }
    pos
}

impl<'a> Scanner<'a> {
    fn new(bytes: &'a [u8], input: Input, max_depth: usize) -> Result<Scanner<'a>, Error> {
        let text = std::str::from_utf8(bytes).map_err(|e| Error::Json {
            input,
            reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        })?;
        Ok(Scanner {
            text,
            bytes,
            pos: 0,
            input,
            max_depth: max_depth.min(HARD_MAX_DEPTH),
        })
    }

    #[cold]
    fn syntax(&self, what: &str) -> Error {
        let reason = if self.pos >= self.bytes.len() {
            format!("{what}, found the end of the text")
        } else {
            format!("{what} at byte {}", self.pos)
        };
        Error::Json {
            input: self.input,
            reason,
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Only whitespace may follow the value.
    fn end(&mut self) -> Result<(), Error> {
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.syntax("trailing characters after the JSON value"))
        }
    }

    fn enter(&self, depth: usize) -> Result<(), Error> {
        if depth >= self.max_depth {
            Err(Error::TooDeep {
                input: self.input,
                max: self.max_depth,
            })
        } else {
            Ok(())
        }
    }

    /// One value at `depth`, starting at the current byte (no whitespace
    /// before it).
    fn value(&mut self, depth: usize) -> Result<Kind, Error> {
        match self.peek() {
            Some(b'{') => {
                self.members(depth, &mut |s, _, _, _| s.value(depth + 1).map(drop))?;
                Ok(Kind::Object)
            }
            Some(b'[') => {
                self.array(depth)?;
                Ok(Kind::Array)
            }
            Some(b'"') => {
                let escaped = self.string()?;
                Ok(Kind::String { escaped })
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(|integer| Kind::Number { integer }),
            Some(b't') => self.literal("true").map(|()| Kind::Bool),
            Some(b'f') => self.literal("false").map(|()| Kind::Bool),
            Some(b'n') => self.literal("null").map(|()| Kind::Null),
            _ => Err(self.syntax("expected a JSON value")),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), Error> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax("expected a JSON value"))
        }
    }

    /// An object at `depth` (the current byte is `{`). For each member,
    /// `member` is called as [`OnMember`] says.
    fn members(&mut self, depth: usize, member: &mut OnMember<'_, 'a>) -> Result<(), Error> {
        self.enter(depth)?;
        self.pos += 1;
        let mut seen = Seen::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a member name"));
            }
            let start = self.pos;
            let escaped = self.string()?;
            let literal = if escaped {
                &self.text[start..self.pos]
            } else {
                ""
            };
            let name = self.name(start, escaped)?;
            if !seen.insert(self.text, name.clone(), start + 1) {
                return Err(Error::DuplicateMember {
                    input: self.input,
                    name: name.into_owned(),
                });
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value_start = self.pos;
            member(self, name, literal, value_start)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("expected ',' or '}'")),
            }
        }
    }

    /// The name whose literal spans `start..self.pos`.
    fn name(&self, start: usize, escaped: bool) -> Result<Cow<'a, str>, Error> {
        let raw = &self.text[start..self.pos];
        if escaped {
            unescape(raw)
                .map(Cow::Owned)
                .ok_or_else(|| self.syntax("unreadable member name"))
        } else {
            Ok(Cow::Borrowed(&self.text[start + 1..self.pos - 1]))
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Error> {
        self.enter(depth)?;
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(depth + 1)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("expected ',' or ']'")),
            }
        }
    }

    /// A string literal (the current byte is its opening quote); true if
    /// it holds escapes. The text is valid UTF-8 already, so only quotes,
    /// escapes and control characters need a look. Inlined, with the
    /// plain-byte skip, into its two callers (member names and values):
    /// strings are most of a token's bytes, and the call cost showed
    /// (~40 ns of an HS256 verification); escapes and errors stay out of
    /// line.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, Error> {
        self.pos += 1;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(self.syntax("control character in a string")),
                None => return Err(self.syntax("unterminated string")),
            }
        }
    }

    #[inline(always)]
    fn skip_plain(&mut self) {
        self.pos = plain_run(self.bytes, self.pos);
    }

    /// One escape (the current byte is its backslash). A `\u` escape of a
    /// high surrogate must be followed by one of a low surrogate; a low
    /// surrogate alone is refused.
    #[cold]
    fn escape(&mut self) -> Result<(), Error> {
        self.pos += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.bytes[self.pos..].starts_with(b"\\u") {
                            self.pos += 2;
                            if (0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                return Ok(());
                            }
                        }
                        Err(self.syntax("lone surrogate in a \\u escape"))
                    }
                    0xDC00..=0xDFFF => Err(self.syntax("lone surrogate in a \\u escape")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.syntax("invalid escape")),
        }
    }

    fn hex4(&mut self) -> Result<u16, Error> {
        let mut unit = 0u16;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.syntax("invalid \\u escape")),
            };
            unit = unit << 4 | u16::from(digit);
            self.pos += 1;
        }
        Ok(unit)
    }

    /// A number; true if it is an integer. A number too large for a double
    /// is refused, as `serde_json` refuses it.
    fn number(&mut self) -> Result<bool, Error> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
            integer = false;
        }
        // Up to 18 digits always fit an i64 or u64; longer ones may not,
        // and then only a finite double is accepted.
        if !integer || self.pos - start > 18 {
            let literal = &self.text[start..self.pos];
            // Near the largest double, serde_json's own conversion (not
            // correctly rounded) can overflow where Rust's does not: there
            // it decides, so the scanner never accepts what it refuses.
            let finite = literal.parse::<f64>().is_ok_and(|v| {
                v.is_finite() && (v.abs() < 1e308 || serde_json::from_str::<f64>(literal).is_ok())
            });
            if !finite {
                self.pos = start;
                return Err(self.syntax("number out of range"));
            }
        }
        Ok(integer)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn members(text: &str, depth: usize) -> Result<Vec<(String, Kind, String)>, Error> {
        let mut out = Vec::new();
        object(text.as_bytes(), Input::Payload, depth, |m| {
            out.push((m.name.into_owned(), m.kind, m.raw.to_owned()));
            Ok(())
        })?;
        Ok(out)
    }

    fn accepts(text: &str) -> bool {
        value(text.as_bytes(), Input::Payload, 16).is_ok()
    }

    #[test]
    fn hands_out_top_level_members_as_written() {
        let got = members(
            " {\"a\" : \"x\\n\", \"b\":[1, {\"c\":null}],\"\\u0064\":-1.5e3,\"e\":true,\"f\":0}\n",
            8,
        )
        .unwrap();
        let expect = [
            ("a", Kind::String { escaped: true }, "\"x\\n\""),
            ("b", Kind::Array, "[1, {\"c\":null}]"),
            ("d", Kind::Number { integer: false }, "-1.5e3"),
            ("e", Kind::Bool, "true"),
            ("f", Kind::Number { integer: true }, "0"),
        ];
        assert_eq!(got.len(), expect.len());
        for ((name, kind, raw), (n, k, r)) in got.iter().zip(expect) {
            assert_eq!((name.as_str(), *kind, raw.as_str()), (n, k, r));
        }
        let mut strings = Vec::new();
        object(
            br#"{"p":"plain","q":"tab\tand \u00e9"}"#,
            Input::Header,
            4,
            |m| {
                strings.push(m.as_str().map(Cow::into_owned));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            strings,
            [Some("plain".to_owned()), Some("tab\tand é".to_owned())]
        );
    }

    #[test]
    fn follows_rfc_8259_to_the_byte() {
        for good in [
            "0",
            "-0",
            "1.5",
            "-0.0e-0",
            "1E+2",
            "123456789012345678901234567890",
            "\"\"",
            "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"\\ud83d\\ude00\"",
            "\"é😀\"",
            "[]",
            "{}",
            " [ 1 , [ ] , { } ] ",
            "true",
            "false",
            "null",
            "1e-400",
            "1e308",
            "-1.5e308",
        ] {
            assert!(accepts(good), "{good}");
            assert!(serde_json::from_str::<Value>(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            "01",
            "-",
            "+1",
            "1.",
            ".5",
            "1e",
            "1e+",
            "0x10",
            "NaN",
            "Infinity",
            "1e400",
            "-1e400",
            // Rust rounds these to the largest double; serde_json's own
            // conversion overflows.
            "1.7976931348623158e308",
            "-1.7976931348623158e308",
            "17976931348623158e292",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800x\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "\"a",
            "\"a\tb\"",
            "\"\u{1}\"",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":1}}",
            "[1]]",
            "tru",
            "nul",
            "True",
            "1 2",
            "/*c*/1",
            "[1]\u{0}",
            "\u{feff}1",
            "\u{a0}1",
        ] {
            assert!(!accepts(bad), "{bad:?}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            value(b"\"\xff\"", Input::Payload, 4),
            Err(Error::Json { .. })
        ));
        assert!(matches!(
            object(b"[1]", Input::Payload, 4, |_| Ok(())),
            Err(Error::Json { .. })
        ));
    }

    #[test]
    fn repeated_names_are_compared_unescaped() {
        for (doc, name) in [
            (r#"{"a":1,"b":{"a":1},"a":2}"#, "a"),
            (r#"{"\u0061":1,"a":2}"#, "a"),
            (r#"{"x":[{"\/":1,"/":2}]}"#, "/"),
            (r#"{"é":1,"\u00e9":2}"#, "é"),
        ] {
            match members(doc, 8) {
                Err(Error::DuplicateMember { name: n, .. }) => assert_eq!(n, name, "{doc}"),
                other => panic!("{doc}: {other:?}"),
            }
        }
        // The same name in sibling or nested objects is not a repeat.
        assert!(members(r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#, 8).is_ok());
    }

    #[test]
    fn depth_is_bounded_and_never_past_the_hard_limit() {
        let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(members(&nested(3), 4).is_ok());
        assert!(matches!(
            members(&nested(4), 4),
            Err(Error::TooDeep { max: 4, .. })
        ));
        assert!(matches!(
            members("{}", 0),
            Err(Error::TooDeep { max: 0, .. })
        ));
        // The hard limit is serde_json's: 127 levels read, 128 refused by
        // both.
        let levels = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(value(levels(127).as_bytes(), Input::Payload, usize::MAX).is_ok());
        assert!(serde_json::from_str::<Value>(&levels(127)).is_ok());
        assert!(value(levels(128).as_bytes(), Input::Payload, usize::MAX).is_err());
        assert!(serde_json::from_str::<Value>(&levels(128)).is_err());
        // A limit past the hard one is the hard one: no deep recursion.
        let deep = "[".repeat(100_000);
        assert!(matches!(
            value(deep.as_bytes(), Input::Payload, usize::MAX),
            Err(Error::TooDeep {
                max: HARD_MAX_DEPTH,
                ..
            })
        ));
    }

    #[test]
    fn fingerprints_never_confuse_names() {
        let text =
            r#"{"exp":0,"exq":0,"ex":0,"expe":0,"abcdefg":0,"abcdefgh":0,"abcdefgi":0,"":0,"é":0}"#;
        assert!(members(text, 4).is_ok());
        // A long name that starts like a short one, its length 256 more.
        let long = format!(r#"{{"abcdefg":0,"abcdefg{}":0}}"#, "x".repeat(256));
        assert!(members(&long, 4).is_ok());
        for repeat in [
            "exp",
            "abcdefgh",
            "abcdefgi",
            "",
            "é",
            "\\u00e9",
            "abcdefg\\u0069",
        ] {
            let doc = text.replace('}', &format!(",\"{repeat}\":1}}"));
            assert!(
                matches!(members(&doc, 4), Err(Error::DuplicateMember { .. })),
                "{doc}"
            );
        }
    }

    #[test]
    fn fingerprints_read_only_the_name() {
        let text = b"abcdefghij";
        for len in 0..=7 {
            let mut want = [0u8; 8];
            want[1..=len].copy_from_slice(&text[..len]);
            let want = u64::from_le_bytes(want) | len as u64;
            // From a long text (one load) and from one that ends with the
            // name (byte by byte).
            assert_eq!(fingerprint(text, 0, len), want, "{len}");
            assert_eq!(fingerprint(&text[..len], 0, len), want, "{len}");
        }
        assert_eq!(fingerprint(text, 0, 300) & 0xff, 255);
    }

    #[test]
    fn many_members_switch_to_a_set() {
        let mut doc = String::from("{");
        for i in 0..40 {
            doc.push_str(&format!("\"k{i}\":{i},"));
        }
        let unique = format!("{doc}\"k40\":0}}");
        assert_eq!(members(&unique, 4).unwrap().len(), 41);
        for late in ["k3", "k39", "\\u006b7"] {
            let doc = format!("{doc}\"{late}\":0}}");
            assert!(
                matches!(members(&doc, 4), Err(Error::DuplicateMember { .. })),
                "{doc}"
            );
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The word-at-a-time test finds the same first byte as the table.
        #[test]
        fn words_are_looked_at_like_bytes(word in any::<u64>(), at in 0usize..8, byte in any::<u8>()) {
            let mut bytes = word.to_le_bytes();
            bytes[at] = byte;
            let by_table = bytes.iter().position(|&b| STOP[usize::from(b)]);
            let flags = needs_look(u64::from_le_bytes(bytes));
            let by_word = (flags != 0).then(|| (flags.trailing_zeros() / 8) as usize);
            prop_assert_eq!(by_word, by_table);
        }

        /// Every JSON text serde_json writes (compact or pretty, so with
        /// escapes and whitespace) is accepted, and each top-level member
        /// comes out with its name and its value's exact text.
        #[test]
        fn accepts_what_serde_json_writes(v in json()) {
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                prop_assert!(accepts(&text), "{}", text);
                // Compared with serde_json's reading of the whole text (its
                // default float parsing does not round-trip every double).
                if let Value::Object(map) = serde_json::from_str::<Value>(&text).unwrap() {
                    let got = members(&text, 16).unwrap();
                    prop_assert_eq!(got.len(), map.len());
                    for (name, _, raw) in got {
                        let parsed: Value = serde_json::from_str(&raw).unwrap();
                        prop_assert_eq!(Some(&parsed), map.get(&name));
                    }
                }
            }
        }

        /// Arbitrary bytes: an answer, never a panic, and no acceptance
        /// serde_json would refuse.
        #[test]
        fn arbitrary_bytes_get_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..64), depth in 0usize..4) {
            if value(&bytes, Input::Payload, depth).is_ok() {
                prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            }
            let mut wrapped = b"{\"k\":".to_vec();
            wrapped.extend_from_slice(&bytes);
            wrapped.push(b'}');
            if object(&wrapped, Input::Payload, depth + 1, |_| Ok(())).is_ok() {
                prop_assert!(serde_json::from_slice::<Value>(&wrapped).is_ok());
            }
        }

        /// Whatever the scanner accepts, serde_json accepts too: the
        /// scanner only ever narrows what gets parsed.
        #[test]
        fn never_accepts_what_serde_json_refuses(
            v in json(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                b"{}[]\",:\\/ -+.0123456789eEabfnrtu\x01\x7f".to_vec())), 1..4),
        ) {
            let mut text = serde_json::to_vec(&v).unwrap();
            for (at, op, byte) in edits {
                let i = at.index(text.len() + 1);
                match op {
                    0 => text.insert(i, byte),
                    1 if i < text.len() => { text.remove(i); }
                    _ if i < text.len() => text[i] = byte,
                    _ => text.push(byte),
                }
            }
            if value(&text, Input::Payload, 16).is_ok() {
                prop_assert!(serde_json::from_slice::<Value>(&text).is_ok(), "{}", String::from_utf8_lossy(&text));
            }
        }
    }
}
