//! Building the caller's type from an object the scanner has checked,
//! without checking it a second time.
//!
//! The scanner already knows where every top-level member starts and
//! ends, its name and its JSON type; `jwt::read` notes each ([`Span`]: the
//! name and value text, borrowed). [`build`] hands those to the caller's
//! `Deserialize` as a serde map: names straight from the text, members the
//! type ignores skipped without a look, and values walked ([`Walk`]):
//! plain strings handed out borrowed, `true`, `false` and `null` read,
//! arrays and objects followed element by element without checks (the
//! scanner made them), and integers of up to 18 digits read directly when
//! a type asks for a number. Everything else is given to `serde_json`
//! over its own text: strings with escapes, floats, enums, every number a
//! type reads through `deserialize_any` (`serde_json::Value`, untagged
//! enums, `flatten`), a number asked for as a `char`…
//!
//! Where a type reads something in a way `serde_json` answers on its own
//! terms (a name as a number, an array or object left half read, a key
//! read twice without its value) or gets any error at all (which a type
//! may swallow where `serde_json`, stopped midway, would fail later), the
//! type is built by `serde_json` from the whole text instead. So the
//! result is always exactly what `serde_json::from_slice` gives.

use std::borrow::Cow;
use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Error;

use super::scan::{Kind, Member};

/// One top-level member: all `build` needs of it, in 40 bytes, so that a
/// token's members fit in one small allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span<'a> {
    /// The name when it is plain; its literal (quotes included) when it
    /// holds escapes.
    name: &'a str,
    name_escaped: bool,
    value: &'a str,
    /// The value is a string without escapes.
    plain: bool,
}

impl<'a> Span<'a> {
    pub(crate) fn of(member: &Member<'a>) -> Span<'a> {
        let (name, name_escaped) = match member.name {
            Cow::Borrowed(name) => (name, false),
            Cow::Owned(_) => (member.escaped_name, true),
        };
        Span {
            name,
            name_escaped,
            value: member.raw,
            plain: member.kind == Kind::String { escaped: false },
        }
    }
}

/// Build `T` from `text`, a JSON object the scanner accepted, whose
/// top-level members are `spans` (in order).
pub(crate) fn build<'a, T: Deserialize<'a>>(text: &'a str, spans: &[Span<'a>]) -> Result<T, Error> {
    let whole = Cell::new(false);
    let fast = T::deserialize(Top {
        text,
        spans,
        whole: &whole,
    });
    // Any error, too: where it arose, serde_json may have answered
    // another (`from_slice`, not `from_str`: serde_json 1.0.154 reads a
    // non-ASCII name as a bool key off a char boundary from a `str`).
    if whole.get() || fast.is_err() {
        return serde_json::from_slice(text.as_bytes());
    }
    fast
}

/// Hand `visitor` to `serde_json` over `text`, which must hold one value.
fn by_serde_json<'a, R>(
    text: &'a [u8],
    read: impl FnOnce(&mut serde_json::Deserializer<serde_json::de::SliceRead<'a>>) -> Result<R, Error>,
) -> Result<R, Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = read(&mut de)?;
    de.end()?;
    Ok(value)
}

/// `serde_json` answers these requests, over `self.text()`.
macro_rules! by_serde_json {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'a>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            by_serde_json(self.text(), |de| de.$method($($arg,)* visitor))
        }
    )*};
}

/// The whole object.
struct Top<'a, 'm> {
    text: &'a str,
    spans: &'m [Span<'a>],
    /// Set when `serde_json` must build the type from the whole text.
    whole: &'m Cell<bool>,
}

impl<'a> Top<'a, '_> {
    fn text(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut entries = Entries {
            spans: self.spans.iter(),
            value: None,
            whole: self.whole,
        };
        let value = visitor.visit_map(&mut entries)?;
        // serde_json refuses a map its visitor left half read (a member
        // not asked for, or a name whose value was not); let it say so.
        if entries.spans.len() > 0 || entries.value.is_some() {
            self.whole.set(true);
        }
        Ok(value)
    }
}

impl<'a> de::Deserializer<'a> for Top<'a, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.map(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.map(visitor)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.map(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    by_serde_json! {
        deserialize_bool(); deserialize_i8(); deserialize_i16(); deserialize_i32();
        deserialize_i64(); deserialize_i128(); deserialize_u8(); deserialize_u16();
        deserialize_u32(); deserialize_u64(); deserialize_u128(); deserialize_f32();
        deserialize_f64(); deserialize_char(); deserialize_str(); deserialize_string();
        deserialize_bytes(); deserialize_byte_buf(); deserialize_option(); deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }
}

/// The members, as a serde map.
struct Entries<'a, 'm> {
    spans: std::slice::Iter<'m, Span<'a>>,
    /// The text of the value whose name was read last, and whether it is
    /// a plain string.
    value: Option<(&'a str, bool)>,
    whole: &'m Cell<bool>,
}

impl<'a> MapAccess<'a> for Entries<'a, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.value.is_some() {
            // Two names without the value between: serde_json refuses.
            self.whole.set(true);
            return Err(Error::custom("a map key asked for before the last value"));
        }
        let Some(span) = self.spans.next() else {
            return Ok(None);
        };
        let name = if span.name_escaped {
            Walk::new(span.name, self.whole).name()?
        } else {
            Cow::Borrowed(span.name)
        };
        self.value = Some((span.value, span.plain));
        seed.deserialize(Name {
            name: &name,
            whole: self.whole,
        })
        .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'a>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let (text, plain) = self
            .value
            .take()
            .ok_or_else(|| Error::custom("a map value asked for before its key"))?;
        let mut walk = Walk::new(text, self.whole);
        walk.plain = plain;
        let value = seed.deserialize(&mut walk)?;
        if walk.pos != text.len() {
            return walk.give_up();
        }
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.spans.len())
    }
}

/// A member name. Types read names as strings; anything else (a name as
/// a number, a bool, an enum…) is `serde_json`'s to answer, for the whole
/// object.
struct Name<'a, 'm> {
    name: &'m Cow<'a, str>,
    whole: &'m Cell<bool>,
}

impl<'a> Name<'a, '_> {
    fn string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.name {
            Cow::Borrowed(name) => visitor.visit_borrowed_str(name),
            Cow::Owned(name) => visitor.visit_str(name),
        }
        // An error a type swallows: see `flag_errors`.
        .inspect_err(|_| self.whole.set(true))
    }
}

macro_rules! whole_object {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'a>>(self, $(_: $ty,)* _: V) -> Result<V::Value, Error> {
            self.whole.set(true);
            Err(Error::custom("serde_json reads this map key"))
        }
    )*};
}

impl<'a> de::Deserializer<'a> for Name<'a, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.string(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.string(visitor)
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    whole_object! {
        deserialize_bool(); deserialize_i8(); deserialize_i16(); deserialize_i32();
        deserialize_i64(); deserialize_i128(); deserialize_u8(); deserialize_u16();
        deserialize_u32(); deserialize_u64(); deserialize_u128(); deserialize_f32();
        deserialize_f64(); deserialize_char(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_option(); deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }
}

/// A value inside the checked text, read as `serde_json` would read it:
/// plain strings handed out borrowed, arrays and objects walked here (the
/// scanner has checked them, so walking needs no checks), small integers
/// read here, and every other value (floats, literals a type asks for by
/// type, strings with escapes, enums) given to `serde_json` over its own
/// text. Where a type reads a container in a way `serde_json` would refuse
/// (an array or object left half read, a name asked for as a number), or
/// meets any error, the whole object goes to `serde_json` instead.
struct Walk<'a, 'm> {
    text: &'a str,
    pos: usize,
    whole: &'m Cell<bool>,
    /// The text is one string without escapes (known from the scan).
    plain: bool,
}

/// What `Walk` does not answer itself goes to `serde_json`, over the text
/// of the value at hand.
macro_rules! walk_by_serde_json {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'a>>(mut self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            by_serde_json(self.skip().as_bytes(), |de| de.$method($($arg,)* visitor))
        }
    )*};
}

/// Numbers: plain integers of up to 18 digits are read here and handed
/// to the visitor as `serde_json` hands them (`u64` when not negative,
/// `i64` when negative, whatever the type asked for); anything else goes
/// to `serde_json`.
macro_rules! walk_integers {
    ($($method:ident;)*) => {$(
        fn $method<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
            let text = self.skip();
            match small_integer(text) {
                Some(Integer::NonNegative(n)) => visitor.visit_u64(n),
                Some(Integer::Negative(n)) => visitor.visit_i64(n),
                None => by_serde_json(text.as_bytes(), |de| de.$method(visitor)),
            }
        }
    )*};
}

enum Integer {
    NonNegative(u64),
    Negative(i64),
}

/// `text` as an integer, if it is one of at most 18 digits (which always
/// fits), as the scanner has checked it (no leading zeros, no `+`).
fn small_integer(text: &str) -> Option<Integer> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits
        .bytes()
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    Some(if negative {
        // serde_json reads `-0` as a float.
        if n == 0 {
            return None;
        }
        Integer::Negative(0i64.checked_sub_unsigned(n)?)
    } else {
        Integer::NonNegative(n)
    })
}

impl<'a, 'm> Walk<'a, 'm> {
    fn new(text: &'a str, whole: &'m Cell<bool>) -> Walk<'a, 'm> {
        Walk {
            text,
            pos: 0,
            whole,
            plain: false,
        }
    }

    fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.pos).copied().unwrap_or(0)
    }

    fn skip_ws(&mut self) {
        while let b' ' | b'\t' | b'\n' | b'\r' = self.peek() {
            self.pos += 1;
        }
    }

    /// Give up: `serde_json` builds the type from the whole object.
    fn give_up<T>(&self) -> Result<T, Error> {
        self.whole.set(true);
        Err(Error::custom("serde_json reads this object"))
    }

    /// Past the string literal that starts here; true if it holds escapes.
    fn string_end(&mut self) -> bool {
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        self.pos += 1;
        loop {
            self.pos = super::scan::plain_run(bytes, self.pos);
            match bytes.get(self.pos) {
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(_) => {
                    self.pos += 1;
                    return escaped;
                }
                None => return escaped,
            }
        }
    }

    /// Up to the next element or member of the container being read
    /// (past its `,`); false at its `close`, which is left to be read.
    fn next_item(&mut self, first: &mut bool, close: u8) -> Result<bool, Error> {
        self.skip_ws();
        match self.peek() {
            b if b == close => return Ok(false),
            b',' if !*first => {
                self.pos += 1;
                self.skip_ws();
            }
            _ if *first => {}
            _ => return self.give_up(),
        }
        *first = false;
        Ok(true)
    }

    /// The member name whose literal starts here, unescaped; past it.
    fn name(&mut self) -> Result<Cow<'a, str>, Error> {
        let start = self.pos;
        let escaped = self.string_end();
        let literal = self.text.get(start..self.pos).unwrap_or_default();
        if escaped {
            serde_json::from_str::<String>(literal).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(
                literal
                    .get(1..literal.len().saturating_sub(1))
                    .unwrap_or_default(),
            ))
        }
    }

    /// Past the value that starts here; its text.
    fn skip(&mut self) -> &'a str {
        let start = self.pos;
        match self.peek() {
            b'"' => {
                self.string_end();
            }
            b'[' | b'{' => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        b'"' => {
                            self.string_end();
                            continue;
                        }
                        b'[' | b'{' => depth += 1,
                        b']' | b'}' => depth = depth.saturating_sub(1),
                        0 => break,
                        _ => {}
                    }
                    self.pos += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r' | 0
                ) {
                    self.pos += 1;
                }
            }
        }
        self.text.get(start..self.pos).unwrap_or_default()
    }

    /// A string, borrowed when it is plain; `serde_json`'s `method` for
    /// anything else.
    fn string<V: Visitor<'a>>(
        &mut self,
        visitor: V,
        method: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::SliceRead<'a>>,
            V,
        ) -> Result<V::Value, Error>,
    ) -> Result<V::Value, Error> {
        if self.plain && self.pos == 0 {
            if let Some(plain) = self.text.get(1..self.text.len().saturating_sub(1)) {
                self.pos = self.text.len();
                return visitor.visit_borrowed_str(plain);
            }
        }
        if self.peek() == b'"' {
            let start = self.pos;
            if !self.string_end() {
                if let Some(plain) = self.text.get(start + 1..self.pos - 1) {
                    return visitor.visit_borrowed_str(plain);
                }
            }
            self.pos = start;
        }
        by_serde_json(self.skip().as_bytes(), |de| method(de, visitor))
    }

    /// The array that starts here.
    fn seq<V: Visitor<'a>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        self.pos += 1;
        let value = visitor.visit_seq(Elements {
            walk: &mut *self,
            first: true,
        })?;
        self.skip_ws();
        if self.peek() != b']' {
            // Elements left unread: serde_json refuses that.
            return self.give_up();
        }
        self.pos += 1;
        Ok(value)
    }

    /// The object that starts here.
    fn map<V: Visitor<'a>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        self.pos += 1;
        let mut members = Members {
            walk: &mut *self,
            first: true,
            value_due: false,
        };
        let value = visitor.visit_map(&mut members)?;
        let value_due = members.value_due;
        self.skip_ws();
        if value_due || self.peek() != b'}' {
            return self.give_up();
        }
        self.pos += 1;
        Ok(value)
    }
}

/// `Walk` as the deserializer its callers see: every error it returns
/// (from `serde_json`, from a visitor, from its own structure) also sends
/// the whole object to `serde_json`, since a type may swallow an error
/// (a lenient field that falls back to a default) where `serde_json`,
/// having stopped midway, would then fail.
macro_rules! flag_errors {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'a>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            let whole = self.whole;
            Reading(self).$method($($arg,)* visitor).inspect_err(|_| whole.set(true))
        }
    )*};
}

impl<'a> de::Deserializer<'a> for &mut Walk<'a, '_> {
    type Error = Error;

    flag_errors! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_option(); deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier(); deserialize_ignored_any();
    }
}

/// The reading itself, behind [`flag_errors`].
struct Reading<'w, 'a, 'm>(&'w mut Walk<'a, 'm>);

impl<'a, 'm> std::ops::Deref for Reading<'_, 'a, 'm> {
    type Target = Walk<'a, 'm>;
    fn deref(&self) -> &Walk<'a, 'm> {
        self.0
    }
}

impl std::ops::DerefMut for Reading<'_, '_, '_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
    }
}

impl<'a> de::Deserializer<'a> for Reading<'_, 'a, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        match self.peek() {
            b'"' => self.string(visitor, |de, v| de.deserialize_any(v)),
            b'[' => self.seq(visitor),
            b'{' => self.map(visitor),
            b't' => {
                self.pos += 4;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.pos += 5;
                visitor.visit_bool(false)
            }
            b'n' => {
                self.pos += 4;
                visitor.visit_unit()
            }
            _ => by_serde_json(self.skip().as_bytes(), |de| de.deserialize_any(visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        self.string(visitor, |de, v| de.deserialize_str(v))
    }

    fn deserialize_string<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        self.string(visitor, |de, v| de.deserialize_string(v))
    }

    fn deserialize_identifier<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        self.string(visitor, |de, v| de.deserialize_identifier(v))
    }

    fn deserialize_option<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        if self.peek() == b'n' {
            self.pos += 4;
            visitor.visit_none()
        } else {
            visitor.visit_some(self.0)
        }
    }

    fn deserialize_seq<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        match self.peek() {
            b'[' => self.seq(visitor),
            _ => by_serde_json(self.skip().as_bytes(), |de| de.deserialize_seq(visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.peek() {
            b'[' => self.seq(visitor),
            _ => by_serde_json(self.skip().as_bytes(), |de| {
                de.deserialize_tuple(len, visitor)
            }),
        }
    }

    fn deserialize_map<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        match self.peek() {
            b'{' => self.map(visitor),
            _ => by_serde_json(self.skip().as_bytes(), |de| de.deserialize_map(visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.peek() {
            b'{' => self.map(visitor),
            _ => by_serde_json(self.skip().as_bytes(), |de| {
                de.deserialize_struct(name, fields, visitor)
            }),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value, Error> {
        // The scanner has checked it; serde_json would only skip it. A
        // walk's text is one member's value: at its start, skipping is
        // jumping to its end.
        if self.pos == 0 {
            self.pos = self.text.len();
        } else {
            self.skip();
        }
        visitor.visit_unit()
    }

    walk_integers! {
        deserialize_i8; deserialize_i16; deserialize_i32; deserialize_i64;
        deserialize_u8; deserialize_u16; deserialize_u32; deserialize_u64;
        deserialize_f32; deserialize_f64;
    }

    walk_by_serde_json! {
        deserialize_bool(); deserialize_i128(); deserialize_u128();
        deserialize_char(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }
}

/// The elements of an array `Walk` reads.
struct Elements<'w, 'a, 'm> {
    walk: &'w mut Walk<'a, 'm>,
    first: bool,
}

impl<'a> de::SeqAccess<'a> for Elements<'_, 'a, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if !self.walk.next_item(&mut self.first, b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.walk).map(Some)
    }
}

/// The members of an object `Walk` reads.
struct Members<'w, 'a, 'm> {
    walk: &'w mut Walk<'a, 'm>,
    first: bool,
    /// A name was read and its value not yet.
    value_due: bool,
}

impl<'a> MapAccess<'a> for Members<'_, 'a, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.value_due {
            return self.walk.give_up();
        }
        let walk = &mut *self.walk;
        if !walk.next_item(&mut self.first, b'}')? {
            return Ok(None);
        }
        let name = walk.name()?;
        walk.skip_ws();
        if walk.peek() != b':' {
            return walk.give_up();
        }
        walk.pos += 1;
        walk.skip_ws();
        self.value_due = true;
        seed.deserialize(Name {
            name: &name,
            whole: walk.whole,
        })
        .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'a>>(&mut self, seed: S) -> Result<S::Value, Error> {
        if !self.value_due {
            return self.walk.give_up();
        }
        self.value_due = false;
        seed.deserialize(&mut *self.walk)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Debug;

    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::Value as Json;

    use super::*;
    use crate::error::Input;
    use crate::json::scan;

    /// `text`, which the scanner must accept, and its members' spans.
    fn scanned(text: &[u8]) -> (&str, Vec<Span<'_>>) {
        let mut spans = Vec::new();
        let text = scan::object(text, Input::Payload, 16, |m| {
            spans.push(Span::of(&m));
            Ok(())
        })
        .unwrap();
        (text, spans)
    }

    /// `build` over `text`, which the scanner must accept.
    fn ours<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, Error> {
        let (text, spans) = scanned(text);
        build(text, &spans)
    }

    /// Both succeed with equal values, or both fail.
    fn same<T: serde::de::DeserializeOwned + PartialEq + Debug>(text: &[u8]) -> Result<(), String> {
        let theirs = serde_json::from_slice::<T>(text);
        match (ours::<T>(text), theirs) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            (Err(_), Err(_)) => Ok(()),
            (a, b) => Err(format!(
                "{}: {} gives {a:?}, serde_json {b:?}",
                String::from_utf8_lossy(text),
                std::any::type_name::<T>()
            )),
        }
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Shape {
        Circle { r: u32 },
        Pair(u8, u8),
        Unit,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        a: Option<i64>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Typed {
        a: Option<String>,
        b: Option<u64>,
        c: Option<Vec<i32>>,
        d: Option<Inner>,
        e: Option<f64>,
        f: Option<bool>,
        g: Option<Shape>,
        h: Option<char>,
        #[serde(rename = "x-y", alias = "1")]
        xy: Option<i8>,
        #[serde(default)]
        v: Json,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Closed {
        a: String,
        #[serde(default)]
        b: i64,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Flat {
        a: Option<String>,
        #[serde(flatten)]
        rest: BTreeMap<String, Json>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Either {
        Closed(Closed),
        Typed(Typed),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "a")]
    enum Tagged {
        X { b: u64 },
        Y {},
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Unit;

    /// A type that swallows errors: a field that falls back to 0.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Lenient {
        #[serde(default, deserialize_with = "lenient")]
        a: u8,
        #[serde(default, deserialize_with = "lenient")]
        c: u8,
    }

    fn lenient<'de, D: de::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        Ok(u8::deserialize(d).unwrap_or(0))
    }

    /// A type that asks for two keys before the first value.
    #[derive(Debug, PartialEq)]
    struct TwoKeys(Vec<String>);

    impl<'de> Deserialize<'de> for TwoKeys {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<TwoKeys, D::Error> {
            struct Keys;
            impl<'de> Visitor<'de> for Keys {
                type Value = TwoKeys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TwoKeys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        keys.push(key);
                        if let Some(second) = map.next_key::<String>()? {
                            keys.push(second);
                        }
                        map.next_value::<de::IgnoredAny>()?;
                    }
                    Ok(TwoKeys(keys))
                }
            }
            d.deserialize_map(Keys)
        }
    }

    /// Containers inside members: read by `Walk`, not by `serde_json`.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Nested {
        a: Option<Vec<String>>,
        b: Option<BTreeMap<String, Vec<Option<String>>>>,
        c: Option<(i32, i32)>,
        d: Option<Closed>,
        e: Option<BTreeMap<u32, Json>>,
        f: Option<Vec<FirstOnly>>,
        g: Option<Vec<Shape>>,
        h: Option<HashMap<String, (bool, Option<f64>)>>,
        v: Option<Vec<Inner>>,
    }

    /// Every kind of target the tests try, on one text.
    fn all_same(text: &[u8]) -> Result<(), String> {
        same::<Json>(text)?;
        same::<Typed>(text)?;
        same::<Nested>(text)?;
        same::<BTreeMap<String, Nested>>(text)?;
        same::<Closed>(text)?;
        same::<Flat>(text)?;
        same::<Either>(text)?;
        same::<Tagged>(text)?;
        same::<Option<Typed>>(text)?;
        same::<HashMap<String, String>>(text)?;
        same::<BTreeMap<u32, Json>>(text)?;
        same::<BTreeMap<bool, Json>>(text)?;
        same::<Lenient>(text)?;
        same::<BTreeMap<String, Vec<Lenient>>>(text)?;
        same::<TwoKeys>(text)?;
        same::<(i32, i32)>(text)?;
        same::<String>(text)?;
        same::<Unit>(text)?;
        same::<()>(text)?;
        same::<serde::de::IgnoredAny>(text).map(drop)
    }

    #[test]
    fn builds_what_serde_json_builds() {
        for text in [
            r#"{}"#,
            r#"{"a":"plain","b":7,"c":[1,-2],"d":{"a":null},"e":1.5e3,"f":true}"#,
            r#"{"a":"esc\"aped \u00e9","g":"Unit","h":"x","x-y":-8}"#,
            r#"{"\u0061":"name escaped","1":3,"v":{"k":[{}]}}"#,
            r#"{"g":{"Circle":{"r":2}},"b":null,"h":"xy"}"#,
            r#"{"g":{"Pair":[1,2]},"a":7}"#,
            r#"{"a":"X","b":18446744073709551615}"#,
            r#"{"a":"Y","c":[1.5]}"#,
            r#"{"1":"one","22":"two"}"#,
            r#"{"true":1,"false":[]}"#,
            r#"{"b":-1}"#,
            r#"{"b":1e2}"#,
            r#"{"a":"closed","b":-9007199254740993}"#,
            r#"{"a":"closed","z":0}"#,
            r#"{"a":["x","y\"z"],"b":{"k":["v",null],"\u006b2":[]},"c":[1,2]}"#,
            r#"{ "a" : [ "x" , "y" ] , "b" : { "k" : [ ] } , "c" : [ -1 , 2e0 ] }"#,
            r#"{"c":[1,2,3]}"#,
            r#"{"c":[1]}"#,
            r#"{"d":{"a":"x","z":1}}"#,
            r#"{"d":{"a":"x","b":3}}"#,
            r#"{"e":{"7":{"x":[]},"8":null}}"#,
            r#"{"e":{"x":1}}"#,
            r#"{"f":[{"a":1,"b":2}]}"#,
            r#"{"f":[{"a":1},{}]}"#,
            r#"{"g":["Unit",{"Circle":{"r":1}},{"Pair":[1,2]}]}"#,
            r#"{"g":[{"Circle":{"r":1,"s":2}}]}"#,
            r#"{"h":{"p":[true,null],"q":[false,1.25]}}"#,
            r#"{"h":{"p":[true]}}"#,
            r#"{"v":[{"a":1},{"a":null},{},{"b":[{"c":"d"}]}]}"#,
            r#"{"x":{"a":["x"],"v":[{"a":2}]},"y":{"c":[3,4]}}"#,
            r#"{"c":[-0,0],"v":[{"a":-0},{"a":999999999999999999},{"a":-999999999999999999}]}"#,
            r#"{"c":[2147483648,-2147483649],"v":[{"a":9223372036854775808}]}"#,
            r#"{"v":[{"a":1.0}],"h":{"p":[true,-0],"q":[false,7]}}"#,
            r#"{"a":[1,2],"c":3}"#,
            r#"{"a":{"x":1},"c":300}"#,
            r#"{"x":[{"a":[1,2]},{"a":3}],"y":[{"c":"s"}]}"#,
            r#"{"a":1,"b":2}"#,
            r#"{"e":{"é":1},"b":{"\u00e9":true}}"#,
        ] {
            all_same(text.as_bytes()).unwrap();
        }
    }

    /// A type that reads only the first entry of the object.
    #[derive(Debug, PartialEq)]
    struct FirstOnly(String);

    impl<'de> Deserialize<'de> for FirstOnly {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<FirstOnly, D::Error> {
            struct First;
            impl<'de> Visitor<'de> for First {
                type Value = FirstOnly;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FirstOnly, A::Error> {
                    let key: Option<String> = map.next_key()?;
                    Ok(FirstOnly(key.unwrap_or_default()))
                }
            }
            d.deserialize_map(First)
        }
    }

    #[test]
    fn types_that_read_differently_get_serde_json_answers() {
        // A map read in part: serde_json refuses it, and so do we.
        assert!(serde_json::from_slice::<FirstOnly>(br#"{"a":1,"b":2}"#).is_err());
        assert!(ours::<FirstOnly>(br#"{"a":1,"b":2}"#).is_err());
        same::<FirstOnly>(br#"{"a":1}"#).unwrap();
        // Names as numbers are serde_json's to parse.
        let numbers: BTreeMap<u32, String> = ours(br#"{"7":"seven","10":"ten"}"#).unwrap();
        assert_eq!(numbers[&7], "seven");
        assert!(ours::<BTreeMap<u32, String>>(br#"{"x":"y"}"#).is_err());
        // Strings are borrowed from the text where serde_json borrows them.
        #[derive(Deserialize)]
        struct Borrows<'a> {
            #[serde(borrow)]
            a: std::borrow::Cow<'a, str>,
        }
        let (borrowed, _) = walked::<Borrows>(br#"{"a":"plain"}"#);
        assert!(matches!(
            borrowed.unwrap().a,
            std::borrow::Cow::Borrowed("plain")
        ));
    }

    /// `Top` over `text`; the value and whether `serde_json` had to read
    /// the whole object.
    fn walked<'a, T: Deserialize<'a>>(text: &'a [u8]) -> (Result<T, Error>, bool) {
        let (text, spans) = scanned(text);
        let whole = Cell::new(false);
        let built = T::deserialize(Top {
            text,
            spans: &spans,
            whole: &whole,
        });
        (built, whole.get())
    }

    #[test]
    fn containers_are_walked_not_handed_to_serde_json() {
        let text = br#"{"a":["x","y"],"b":{"k":["v",null]},"c":[1,2],"g":["Unit"],"v":[{"a":1}]}"#;
        let (nested, whole) = walked::<Nested>(text);
        assert!(!whole, "serde_json read the whole object");
        assert_eq!(
            nested.unwrap(),
            serde_json::from_slice::<Nested>(text).unwrap()
        );
        let (_, whole) = walked::<Json>(text);
        assert!(!whole);
        // What serde_json would refuse or read its own way goes to it whole.
        for (text, ok) in [
            (&br#"{"c":[1,2,3]}"#[..], false),
            (br#"{"e":{"7":1}}"#, true),
            (br#"{"f":[{"a":1,"b":2}]}"#, false),
        ] {
            let (_, whole) = walked::<Nested>(text);
            assert!(whole, "{}", String::from_utf8_lossy(text));
            assert_eq!(ours::<Nested>(text).is_ok(), ok);
        }
    }

    fn json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            (-300i64..300).prop_map(Json::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Json::from),
            any::<String>().prop_map(Json::from),
            prop::sample::select(vec!["Unit", "X", "Y", "closed", "x", "é", "a\"b"])
                .prop_map(Json::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::from),
                prop::collection::btree_map(name(), inner, 0..4)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "a", "b", "c", "d", "e", "f", "g", "h", "v", "x-y", "1", "42", "true", "Circle",
                "r",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ]
    }

    proptest! {
        /// Over objects of every shape and many target types, `build` and
        /// `serde_json::from_slice` agree: same value, or both refuse.
        #[test]
        fn agrees_with_serde_json(
            members in prop::collection::btree_map(name(), json(), 0..8),
            pretty in any::<bool>(),
            escape_a in any::<bool>(),
        ) {
            let object = Json::Object(members.into_iter().collect());
            let mut text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            if escape_a {
                // The same names, written with escapes.
                text = text.replace("\"a\":", "\"\\u0061\":");
            }
            prop_assert_eq!(all_same(text.as_bytes()), Ok(()));
        }
    }
}
