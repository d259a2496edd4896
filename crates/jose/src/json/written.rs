//! Writing JSON with `serde_json` and checking it against the verifier's
//! rules while it is written, at the cost of what can go wrong there.
//!
//! `serde_json`'s writer only emits RFC 8259 text: numbers as Rust formats
//! them, strings escaped the one way it escapes them, valid UTF-8. What a
//! `Serialize` implementation can still get wrong is the structure: a name
//! written twice in one object (a `#[serde(flatten)]` field repeating a
//! registered claim, a custom map) and nesting deeper than a verifier
//! allows. So [`written`] writes through a formatter that watches exactly
//! that: it keeps the names of each open object (as written, in one
//! buffer) and a 256-bit filter of them per object, compares each new
//! name only with the earlier ones when the filter says it may repeat
//! one, and counts depth. No second pass. Anything it does not follow (a
//! name written with an escape or as a number, an object of more than [`MAX_NAMES`] names, text
//! passed through `serde_json::value::RawValue`) and anything it finds
//! wrong send the whole text to the strict scanner, which decides and
//! reports exactly as it does for a verifier. It also notes which
//! registered claim names the top-level object has, so that signing
//! reads those a custom part wrote (not the typed fields) as a verifier
//! would.

use std::cell::Cell;
use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

use crate::error::{Error, Input};

use super::scan::HARD_MAX_DEPTH;

/// Names compared one by one in an object, at most; an object with more
/// goes to the strict scanner.
const MAX_NAMES: usize = 32;

/// The registered claim names (RFC 7519 §4.1), one bit each, as
/// [`written`] reports the top-level names it wrote.
const REGISTERED: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// The bit of a registered claim name in [`REGISTERED`] (0: not one).
fn registered_bit(name: &[u8]) -> u8 {
    // All seven are three bytes long: one comparison for any other name.
    if name.len() != 3 {
        return 0;
    }
    REGISTERED
        .iter()
        .position(|r| r.as_bytes() == name)
        .map_or(0, |i| 1 << i)
}

/// `value` as compact JSON, held to the strict scanner's rules (see the
/// module docs), and which registered claim names (bits of
/// [`REGISTERED`]) its top-level object has.
pub(crate) fn written<T: Serialize + ?Sized>(
    value: &T,
    input: Input,
) -> Result<(Vec<u8>, u8), Error> {
    // The watch's buffers are kept from one call to the next on each
    // thread, and the text starts with room for the last one written
    // there: a signer writes one shape of claims again and again.
    // (A thread whose locals are being torn down gets a fresh watch.)
    let (mut watch, room) = REUSED.try_with(Cell::take).unwrap_or_default();
    watch.reset();
    let mut out = Vec::with_capacity(room.clamp(MIN_ROOM, MAX_ROOM));
    let written = value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, &mut watch,
    ));
    // A text left unfinished (an error some `Serialize` swallowed) is not
    // trusted either.
    let suspect = watch.suspect || watch.depth != 0 || watch.in_name || !watch.objects.is_empty();
    let registered = watch.registered;
    let room = out.len().next_power_of_two();
    if watch.kept_bytes() <= MAX_ROOM {
        let _ = REUSED.try_with(|cell| cell.set((watch, room)));
    }
    written.map_err(|e| Error::Serialize {
        input,
        reason: e.to_string(),
    })?;
    if suspect {
        super::check(&out, input, usize::MAX)?;
    }
    Ok((out, registered))
}

/// The first text of a thread gets this much room.
const MIN_ROOM: usize = 512;
/// No text starts with more room than this, nor is a watch kept whose
/// buffers hold more.
const MAX_ROOM: usize = 64 * 1024;

thread_local! {
    /// Each thread's watch (its buffers' capacity) and the room its last
    /// text needed.
    static REUSED: Cell<(Watch, usize)> = Cell::new((Watch::default(), MIN_ROOM));
}

/// What the formatter keeps while the text is written.
#[derive(Default)]
struct Watch {
    /// The names of the open objects, one after another, as written.
    names: Vec<u8>,
    /// Where each of those names ends in `names`.
    ends: Vec<usize>,
    /// For each open object, where its names start in `ends`, and a
    /// filter of its names: one bit of 256 per name ([`filter_bit`]). A
    /// name whose bit is clear repeats none of them.
    objects: Vec<(usize, [u64; 4])>,
    depth: usize,
    /// Inside a member name.
    in_name: bool,
    /// Where the name being written starts in `names`.
    name_start: usize,
    /// The text needs the strict scanner.
    suspect: bool,
    /// The registered claim names of the top-level object (bits of
    /// [`REGISTERED`]).
    registered: u8,
}

/// The filter word and bit of a name: from its length and its first and
/// last (up to) eight bytes, so two equal names always share it.
fn filter_bit(name: &[u8]) -> (usize, u64) {
    let word = |bytes: &[u8]| {
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    };
    let n = name.len().min(8);
    let (head, tail) = (word(&name[..n]), word(&name[name.len() - n..]));
    let mixed =
        (head ^ tail.rotate_left(29) ^ name.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let bit = (mixed >> 56) as usize;
    (bit >> 6, 1 << (bit & 63))
}

impl Watch {
    /// The bytes its buffers hold on to.
    fn kept_bytes(&self) -> usize {
        self.names.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.objects.capacity() * std::mem::size_of::<(usize, [u64; 4])>()
    }

    /// Ready for a new text, keeping the buffers' capacity.
    fn reset(&mut self) {
        self.names.clear();
        self.ends.clear();
        self.objects.clear();
        self.depth = 0;
        self.in_name = false;
        self.name_start = 0;
        self.suspect = false;
        self.registered = 0;
    }

    fn open(&mut self) {
        self.depth += 1;
        if self.depth > HARD_MAX_DEPTH {
            self.suspect = true;
        }
    }

    /// Where the names of the object whose first name is `ends[first]`
    /// start in `names`.
    fn object_start(&self, first: usize) -> usize {
        first.checked_sub(1).map_or(0, |i| self.ends[i])
    }

    /// A name ended: compare it with the others of its object that the
    /// filter cannot tell it apart from.
    fn named(&mut self) {
        self.in_name = false;
        let Some(&(first, filter)) = self.objects.last() else {
            self.suspect = true;
            return;
        };
        if self.objects.len() == 1 {
            self.registered |= registered_bit(&self.names[self.name_start..]);
        }
        let earlier = &self.ends[first..];
        if earlier.len() >= MAX_NAMES {
            self.suspect = true;
        }
        if self.suspect {
            // The strict scanner decides; nothing more to compare or keep
            // (a map of a million names costs no more than its text).
            self.names.truncate(self.name_start);
            return;
        }
        let name = &self.names[self.name_start..];
        let (word, bit) = filter_bit(name);
        if filter[word] & bit != 0 {
            let mut start = self.object_start(first);
            for &end in earlier {
                if &self.names[start..end] == name {
                    self.suspect = true;
                }
                start = end;
            }
        }
        if let Some((_, filter)) = self.objects.last_mut() {
            filter[word] |= bit;
        }
        self.ends.push(self.names.len());
    }
}

/// A value written inside a name (a number or boolean key): not followed.
macro_rules! not_in_names {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: $ty) -> io::Result<()> {
            self.suspect |= self.in_name;
            CompactFormatter.$method(writer, value)
        }
    )*};
}

impl Formatter for &mut Watch {
    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open();
        self.objects.push((self.ends.len(), [0; 4]));
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.suspect |= self.in_name;
        self.in_name = false;
        self.depth = self.depth.saturating_sub(1);
        match self.objects.pop() {
            Some((first, _)) => {
                let start = self.object_start(first);
                self.ends.truncate(first);
                self.names.truncate(start);
            }
            None => self.suspect = true,
        }
        writer.write_all(b"}")
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open();
        writer.write_all(b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        writer.write_all(b"]")
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        // A name begun and never ended: its key failed, and a `Serialize`
        // swallowed the error and went on.
        self.suspect |= self.in_name;
        self.in_name = true;
        self.name_start = self.names.len();
        CompactFormatter.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.named();
        Ok(())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if self.in_name {
            self.names.extend_from_slice(fragment.as_bytes());
        }
        writer.write_all(fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        self.suspect |= self.in_name;
        CompactFormatter.write_char_escape(writer, char_escape)
    }

    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        self.suspect = true;
        writer.write_all(fragment.as_bytes())
    }

    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        value: &str,
    ) -> io::Result<()> {
        self.suspect = true;
        writer.write_all(value.as_bytes())
    }

    not_in_names!(
        write_bool: bool,
        write_i8: i8, write_i16: i16, write_i32: i32, write_i64: i64, write_i128: i128,
        write_u8: u8, write_u16: u16, write_u32: u32, write_u64: u64, write_u128: u128,
        write_f32: f32, write_f64: f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    fn to_vec<T: Serialize + ?Sized>(value: &T, input: Input) -> Result<Vec<u8>, Error> {
        written(value, input).map(|(text, _)| text)
    }

    /// A map written with the entries it is given, even repeated ones, as
    /// a `Serialize` impl can.
    struct Entries(Vec<(String, Value)>);

    impl Serialize for Entries {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(None)?;
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }

    fn entries(pairs: &[(&str, Value)]) -> Entries {
        Entries(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    /// What signing did before: write, then the strict scanner.
    fn slow<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        super::super::check(&bytes, Input::Payload, usize::MAX).map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    fn same<T: Serialize>(value: &T) {
        let fast = to_vec(value, Input::Payload).map_err(|e| e.to_string());
        assert_eq!(fast, slow(value));
    }

    /// Whether writing `value` needs the strict scanner.
    fn suspect<T: Serialize>(value: &T) -> bool {
        let mut out = Vec::new();
        let mut watch = Watch::default();
        value
            .serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, &mut watch,
            ))
            .unwrap();
        watch.suspect
    }

    #[test]
    fn the_verdict_and_the_text_are_the_strict_scanners() {
        let flat_dup = entries(&[("exp", json!(1)), ("iss", json!("a")), ("exp", json!(2))]);
        let nested_dup = json!({"a": {"b": 1}, "c": [{"d": 1}]});
        let deep = (0..200).fold(json!(0), |v, _| json!([v]));
        let wide: BTreeMap<String, i32> = (0..100).map(|i| (i.to_string(), i)).collect();
        let numbered: BTreeMap<i32, i32> = BTreeMap::from([(1, 1), (2, 2)]);
        same(&flat_dup);
        same(&json!({"iss": "x", "exp": 1, "aud": ["a", "b"], "n": null, "f": -1.5}));
        same(&nested_dup);
        same(&entries(&[(
            "a",
            serde_json::to_value(entries(&[])).unwrap(),
        )]));
        same(&json!({"a": [{"c": 1}, {"c": 1}]}));
        same(&json!({"deep": deep}));
        same(&wide);
        same(&numbered);
        same(&json!({"quote\"": 1, "line\n": 2, "s": "\u{1}"}));
        // A repeat inside a nested object, and in an object in an array.
        let inner = serde_json::to_value(json!({})).unwrap();
        let nested = Entries(vec![("a".into(), inner.clone()), ("b".into(), json!([1]))]);
        same(&nested);
        struct Nested;
        impl Serialize for Nested {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("a", &entries(&[("x", json!(1)), ("x", json!(2))]))?;
                map.serialize_entry("b", &[entries(&[("y", json!(1)), ("y", json!(1))])])?;
                map.end()
            }
        }
        same(&Nested);
        assert!(to_vec(&Nested, Input::Payload).is_err());
        assert!(to_vec(&flat_dup, Input::Payload).is_err());
        // Sibling objects may reuse names; the common shapes need no scan.
        let claims = json!({"iss": "https://a", "aud": ["x"], "exp": 17,
            "realm_access": {"roles": ["a"]}, "resource_access": {"x": {"roles": ["a"]}, "y": {"roles": ["b"]}},
            "s": "\u{1f}\n"});
        assert!(!suspect(&claims));
        same(&claims);
        assert!(suspect(&flat_dup));
        assert!(
            suspect(&numbered),
            "a number written as a name goes to the scanner"
        );
    }

    #[test]
    fn the_filter_only_skips_names_that_cannot_repeat() {
        // Two different names that share a filter bit are compared, and
        // found different.
        let names: Vec<String> = (0..300).map(|i| format!("claim{i}")).collect();
        let (a, b) = names
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                names[i + 1..]
                    .iter()
                    .find(|b| filter_bit(b.as_bytes()) == filter_bit(a.as_bytes()))
                    .map(|b| (a.clone(), b.clone()))
            })
            .unwrap();
        let shared = entries(&[(a.as_str(), json!(1)), (b.as_str(), json!(2))]);
        assert!(!suspect(&shared));
        same(&shared);
        // Every repeat is found, whatever sits between.
        for len in [0, 1, 7, 8, 9, 16, 17, 40] {
            let name = "n".repeat(len);
            let doc = entries(&[
                (name.as_str(), json!(1)),
                ("x", json!({"y": 1})),
                (name.as_str(), json!(2)),
            ]);
            assert!(suspect(&doc), "{len}");
            assert!(to_vec(&doc, Input::Payload).is_err(), "{len}");
        }
    }

    #[test]
    fn a_thread_reuses_its_watch_with_nothing_left_over() {
        let dup = entries(&[("exp", json!(1)), ("exp", json!(2))]);
        let deep = (0..200).fold(json!(0), |v, _| json!([v]));
        let large = json!({"big": "x".repeat(100_000), "exp": 1});
        for _ in 0..3 {
            assert!(to_vec(&dup, Input::Payload).is_err());
            assert!(to_vec(&json!({"deep": deep}), Input::Payload).is_err());
            // A text left half written by a failing Serialize impl.
            assert!(to_vec(&Failing, Input::Payload).is_err());
            for doc in [
                json!({"exp": 1}),
                large.clone(),
                json!({"iss": "a", "exp": 2}),
            ] {
                let text = to_vec(&doc, Input::Payload).unwrap();
                assert_eq!(text, serde_json::to_vec(&doc).unwrap());
            }
        }
    }

    #[test]
    fn a_thread_keeps_no_large_watch() {
        // A million empty names: `names` stays empty, the other buffers
        // do not.
        let many = Entries((0..1_000_000).map(|_| (String::new(), json!(0))).collect());
        assert!(to_vec(&many, Input::Payload).is_err());
        let kept = REUSED.with(|cell| {
            let (watch, room) = cell.take();
            let bytes = watch.kept_bytes();
            cell.set((watch, room));
            bytes
        });
        assert!(kept <= MAX_ROOM, "{kept} bytes kept");
    }

    /// Fails halfway through an object, inside a name.
    struct Failing;

    impl Serialize for Failing {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error as _, SerializeMap};
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("exp", &1)?;
            map.serialize_key("partial")?;
            Err(S::Error::custom("no value"))
        }
    }

    /// Swallows the error of a key that cannot be a name, and goes on.
    struct Swallowing {
        last: bool,
    }

    impl Serialize for Swallowing {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("iss", "x")?;
            let _ = map.serialize_key(&[0u8]);
            if !self.last {
                map.serialize_entry("a", &1)?;
            }
            map.end()
        }
    }

    #[test]
    fn a_swallowed_key_error_is_not_trusted() {
        for last in [false, true] {
            let written = to_vec(&Swallowing { last }, Input::Payload);
            assert!(written.is_err(), "{:?}", written.map(String::from_utf8));
        }
        // The thread's next text is written as usual.
        assert_eq!(
            to_vec(&serde_json::json!({"a": 1}), Input::Payload).unwrap(),
            br#"{"a":1}"#
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-c\\\\\"\u{1}é]{0,3}", inner), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_writing_then_scanning(
            v in value(),
            extra in prop::collection::vec(("[a-c]{0,2}", value()), 0..6),
        ) {
            // Objects whose names may repeat, around any value.
            let mut pairs = vec![("v".to_owned(), v)];
            pairs.extend(extra);
            let doc = Entries(pairs);
            let fast = to_vec(&doc, Input::Payload).map_err(|e| e.to_string());
            prop_assert_eq!(fast, slow(&doc));
        }
    }
}
