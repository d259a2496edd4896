//! Building the caller's type from an object the scanner has checked,
//! without reading it a second time.
//!
//! The scanner already knows where every top-level member starts and
//! ends, its name unescaped and its JSON type. [`build`] hands those to the
//! caller's `Deserialize` as a serde map: names straight from the scan,
//! plain string values borrowed as they are, members the type ignores
//! skipped without a look, and every other value (numbers, arrays, nested
//! objects, strings with escapes) given to `serde_json` over its own text.
//!
//! `serde_json` stays the only reader of JSON values; this module only
//! walks a list. Where a type asks for something of the top-level object
//! that `serde_json` answers in its own way (a name as a number, say, or
//! the object as a sequence), the type is built by `serde_json` from the
//! whole text instead, so the result is always exactly what
//! `serde_json::from_slice` gives.

use std::borrow::Cow;
use std::cell::Cell;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Error as _, MapAccess, Visitor};
use serde_json::Error;

use super::scan::{Kind, Member};

/// Build `T` from `text`, a JSON object the scanner accepted, whose
/// top-level members are `members` (in order).
pub(crate) fn build<T: DeserializeOwned>(text: &[u8], members: &[Member<'_>]) -> Result<T, Error> {
    let whole = Cell::new(false);
    let fast = T::deserialize(Top {
        text,
        members,
        whole: &whole,
    });
    if whole.get() {
        return serde_json::from_slice(text);
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
    text: &'a [u8],
    members: &'m [Member<'a>],
    /// Set when `serde_json` must build the type from the whole text.
    whole: &'m Cell<bool>,
}

impl<'a> Top<'a, '_> {
    fn text(&self) -> &'a [u8] {
        self.text
    }

    fn map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut entries = Entries {
            members: self.members.iter(),
            value: None,
            whole: self.whole,
        };
        let value = visitor.visit_map(&mut entries)?;
        // serde_json refuses a map its visitor left half read (a member
        // not asked for, or a name whose value was not); let it say so.
        if entries.members.len() > 0 || entries.value.is_some() {
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
    members: std::slice::Iter<'m, Member<'a>>,
    value: Option<&'m Member<'a>>,
    whole: &'m Cell<bool>,
}

impl<'a> MapAccess<'a> for Entries<'a, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(member) = self.members.next() else {
            return Ok(None);
        };
        self.value = Some(member);
        seed.deserialize(Name {
            name: &member.name,
            whole: self.whole,
        })
        .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'a>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let member = self
            .value
            .take()
            .ok_or_else(|| Error::custom("a map value asked for before its key"))?;
        seed.deserialize(Value { member })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
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

/// A member value.
struct Value<'a, 'm> {
    member: &'m Member<'a>,
}

impl<'a> Value<'a, '_> {
    fn text(&self) -> &'a [u8] {
        self.member.raw.as_bytes()
    }

    /// The string without its quotes, if it is one without escapes.
    fn plain(&self) -> Option<&'a str> {
        let raw = self.member.raw;
        match self.member.kind {
            Kind::String { escaped: false } => raw.get(1..raw.len() - 1),
            _ => None,
        }
    }
}

/// Plain strings are handed out borrowed, as `serde_json` hands them out;
/// anything else goes to `serde_json` over the value's text.
macro_rules! plain_or_serde_json {
    ($($method:ident;)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.plain() {
                Some(plain) => visitor.visit_borrowed_str(plain),
                None => by_serde_json(self.text(), |de| de.$method(visitor)),
            }
        }
    )*};
}

impl<'a> de::Deserializer<'a> for Value<'a, '_> {
    type Error = Error;

    plain_or_serde_json! {
        deserialize_any; deserialize_str; deserialize_string; deserialize_identifier;
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.member.kind {
            Kind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        // The scanner has checked it; serde_json would only skip it.
        visitor.visit_unit()
    }

    by_serde_json! {
        deserialize_bool(); deserialize_i8(); deserialize_i16(); deserialize_i32();
        deserialize_i64(); deserialize_i128(); deserialize_u8(); deserialize_u16();
        deserialize_u32(); deserialize_u64(); deserialize_u128(); deserialize_f32();
        deserialize_f64(); deserialize_char(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
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

    /// `build` over `text`, which the scanner must accept.
    fn ours<T: DeserializeOwned>(text: &[u8]) -> Result<T, Error> {
        let mut members = Vec::new();
        scan::object(text, Input::Payload, 16, |m| {
            members.push(m);
            Ok(())
        })
        .unwrap();
        build(text, &members)
    }

    /// Both succeed with equal values, or both fail.
    fn same<T: DeserializeOwned + PartialEq + Debug>(text: &[u8]) -> Result<(), String> {
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

    /// Every kind of target the tests try, on one text.
    fn all_same(text: &[u8]) -> Result<(), String> {
        same::<Json>(text)?;
        same::<Typed>(text)?;
        same::<Closed>(text)?;
        same::<Flat>(text)?;
        same::<Either>(text)?;
        same::<Tagged>(text)?;
        same::<Option<Typed>>(text)?;
        same::<HashMap<String, String>>(text)?;
        same::<BTreeMap<u32, Json>>(text)?;
        same::<BTreeMap<bool, Json>>(text)?;
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
        let text = br#"{"a":"plain"}"#;
        let mut members = Vec::new();
        scan::object(text, Input::Payload, 4, |m| {
            members.push(m);
            Ok(())
        })
        .unwrap();
        let whole = Cell::new(false);
        let borrowed = Borrows::deserialize(Top {
            text,
            members: &members,
            whole: &whole,
        })
        .unwrap();
        assert!(matches!(borrowed.a, std::borrow::Cow::Borrowed("plain")));
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
