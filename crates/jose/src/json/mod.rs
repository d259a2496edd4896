//! Strict JSON for untrusted headers, payloads and keys.
//!
//! `serde_json` alone keeps the last of two members with one name, and
//! recurses as deep as its own limit allows. Here every object, at every
//! depth, is checked for repeated member names (RFC 7515 §5.2 lets a
//! verifier reject them, RFC 8725 §3.1 asks it to), and nesting is bounded
//! by a caller-chosen depth. Failures come back as structured [`Error`]s.
//!
//! The seeds here drive `serde_json`'s parser directly, so a check costs one
//! pass and allocates nothing for values it only has to skip.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{Error, Part};

mod wrap;
pub(crate) use wrap::{give_name, StrictMap};

/// State shared by the seeds of one parse: where we are, the depth limit,
/// and the structured error that explains a serde failure.
pub(crate) struct Ctx {
    pub(crate) part: Part,
    pub(crate) max_depth: usize,
    slot: RefCell<Option<Error>>,
}

impl Ctx {
    pub(crate) fn new(part: Part, max_depth: usize) -> Ctx {
        Ctx {
            part,
            max_depth,
            slot: RefCell::new(None),
        }
    }

    /// Record `err` as the reason and return a serde error to unwind with.
    pub(crate) fn fail<E: de::Error>(&self, err: Error) -> E {
        let mut slot = self.slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(err);
        }
        E::custom("rejected")
    }

    /// The structured error for a failed parse: the recorded reason if a
    /// seed gave one, otherwise serde_json's own message.
    pub(crate) fn error(&self, e: serde_json::Error) -> Error {
        self.slot
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Error::Json {
                part: self.part,
                reason: e.to_string(),
            })
    }

    /// Like [`Ctx::error`], with another fallback than a JSON error.
    pub(crate) fn error_or(
        &self,
        e: serde_json::Error,
        fallback: impl FnOnce(serde_json::Error) -> Error,
    ) -> Error {
        self.slot.borrow_mut().take().unwrap_or_else(|| fallback(e))
    }

    pub(crate) fn too_deep<E: de::Error>(&self) -> E {
        self.fail(Error::TooDeep {
            part: self.part,
            max: self.max_depth,
        })
    }

    pub(crate) fn duplicate<E: de::Error>(&self, name: &str) -> E {
        self.fail(Error::DuplicateMember {
            part: self.part,
            name: name.to_owned(),
        })
    }
}

/// Run `seed` over all of `bytes` (no trailing data allowed).
pub(crate) fn parse<'de, S>(bytes: &'de [u8], ctx: &Ctx, seed: S) -> Result<S::Value, Error>
where
    S: DeserializeSeed<'de>,
{
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = seed.deserialize(&mut de).map_err(|e| ctx.error(e))?;
    de.end().map_err(|e| ctx.error(e))?;
    Ok(value)
}

/// Member names seen so far in one object. Objects in tokens are small:
/// the first names live in inline arrays (no allocation), compared first by
/// a fingerprint that packs the length and the first seven bytes (exact
/// for short names like `exp`); past that, a hash set takes over.
pub(crate) struct SeenKeys<'de> {
    prints: [u64; INLINE_KEYS],
    names: [Cow<'de, str>; INLINE_KEYS],
    len: usize,
    set: Option<std::collections::HashSet<Cow<'de, str>>>,
}

const INLINE_KEYS: usize = 16;

impl Default for SeenKeys<'_> {
    fn default() -> Self {
        SeenKeys {
            prints: [0; INLINE_KEYS],
            names: std::array::from_fn(|_| Cow::Borrowed("")),
            len: 0,
            set: None,
        }
    }
}

/// Length (mod 256) in the low byte, then up to seven bytes of the name.
fn fingerprint(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut print = bytes.len() as u64 & 0xff;
    for (i, &b) in bytes.iter().take(7).enumerate() {
        print |= u64::from(b) << (8 * (i + 1));
    }
    print
}

impl<'de> SeenKeys<'de> {
    /// Record a name; false if it was already there.
    pub(crate) fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(set) = &mut self.set {
            return set.insert(key);
        }
        let print = fingerprint(&key);
        let exact = key.len() <= 7;
        for i in 0..self.len {
            if self.prints[i] == print && (exact || self.names[i] == key) {
                return false;
            }
        }
        if self.len < INLINE_KEYS {
            self.prints[self.len] = print;
            self.names[self.len] = key;
            self.len += 1;
        } else {
            let mut set: std::collections::HashSet<_> =
                self.names.iter_mut().map(std::mem::take).collect();
            set.insert(key);
            self.set = Some(set);
        }
        true
    }
}

/// A member name, borrowed from the input when it has no escapes.
pub(crate) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Skips one JSON value, checking every object in it for repeated names and
/// the nesting depth. `depth` is the depth of the value being read.
pub(crate) struct Skip<'c> {
    pub(crate) ctx: &'c Ctx,
    pub(crate) depth: usize,
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.ctx.max_depth {
            return Err(self.ctx.too_deep());
        }
        let inner = self.depth + 1;
        while seq
            .next_element_seed(Skip {
                ctx: self.ctx,
                depth: inner,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= self.ctx.max_depth {
            return Err(self.ctx.too_deep());
        }
        let inner = self.depth + 1;
        let mut seen = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !seen.insert(key.clone()) {
                return Err(self.ctx.duplicate(&key));
            }
            map.next_value_seed(Skip {
                ctx: self.ctx,
                depth: inner,
            })?;
        }
        Ok(())
    }
}

/// Builds a `serde_json::Value` with the same checks as [`Skip`].
pub(crate) struct ValueSeed<'c> {
    pub(crate) ctx: &'c Ctx,
    pub(crate) depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= self.ctx.max_depth {
            return Err(self.ctx.too_deep());
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed {
            ctx: self.ctx,
            depth: self.depth + 1,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        if self.depth >= self.ctx.max_depth {
            return Err(self.ctx.too_deep());
        }
        read_members(self.ctx, self.depth + 1, map, |_, _| Ok(false)).map(Value::Object)
    }
}

/// Read the members of one object into a map, refusing repeated names.
///
/// `special` sees each name first and may consume its value itself
/// (returning `true`); the rest are built as strict values at `depth`.
pub(crate) fn read_members<'de, A, F>(
    ctx: &Ctx,
    depth: usize,
    mut map: A,
    mut special: F,
) -> Result<Map<String, Value>, A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Result<bool, A::Error>,
{
    let mut out = Map::new();
    let mut seen = SeenKeys::default();
    while let Some(key) = map.next_key_seed(KeySeed)? {
        if !seen.insert(key.clone()) {
            return Err(ctx.duplicate(&key));
        }
        if special(&key, &mut map)? {
            continue;
        }
        let value = map.next_value_seed(ValueSeed { ctx, depth })?;
        out.insert(key.into_owned(), value);
    }
    Ok(out)
}

/// Parse `bytes` as one strict JSON object.
pub(crate) fn object(
    bytes: &[u8],
    part: Part,
    max_depth: usize,
) -> Result<Map<String, Value>, Error> {
    let ctx = Ctx::new(part, max_depth);
    match parse(
        bytes,
        &ctx,
        ValueSeed {
            ctx: &ctx,
            depth: 0,
        },
    )? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::Json {
            part,
            reason: "expected a JSON object".to_owned(),
        }),
    }
}

/// Check that `bytes` is one strict JSON value, without building it.
pub(crate) fn check(bytes: &[u8], part: Part, max_depth: usize) -> Result<(), Error> {
    let ctx = Ctx::new(part, max_depth);
    parse(
        bytes,
        &ctx,
        Skip {
            ctx: &ctx,
            depth: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        for (doc, name) in [
            (r#"{"a":1,"a":2}"#, "a"),
            (r#"{"a":{"b":1,"b":1}}"#, "b"),
            (r#"{"a":[{"c":1},{"c":1,"c":2}]}"#, "c"),
            (r#"{"\u0061":1,"a":2}"#, "a"),
        ] {
            for result in [
                check(doc.as_bytes(), Part::Payload, 16),
                object(doc.as_bytes(), Part::Payload, 16).map(|_| ()),
            ] {
                match result {
                    Err(Error::DuplicateMember { name: n, .. }) => assert_eq!(n, name),
                    other => panic!("{doc}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}1{}", "[".repeat(5), "]".repeat(5));
        assert!(check(deep.as_bytes(), Part::Payload, 5).is_ok());
        assert!(matches!(
            check(deep.as_bytes(), Part::Payload, 4),
            Err(Error::TooDeep { max: 4, .. })
        ));
        let objects = r#"{"a":{"b":{"c":{}}}}"#;
        assert!(object(objects.as_bytes(), Part::Header, 4).is_ok());
        assert!(matches!(
            object(objects.as_bytes(), Part::Header, 3),
            Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn fingerprints_never_confuse_names() {
        let mut seen = SeenKeys::default();
        for name in [
            "exp", "exq", "ex", "expe", "abcdefg", "abcdefgh", "abcdefgi", "", "é",
        ] {
            assert!(seen.insert(Cow::Borrowed(name)), "{name}");
        }
        for name in ["exp", "abcdefgh", "abcdefgi", "", "é"] {
            assert!(!seen.insert(Cow::Owned(name.to_owned())), "{name}");
        }
    }

    #[test]
    fn many_members_switch_to_a_set() {
        let mut doc = String::from("{");
        for i in 0..40 {
            doc.push_str(&format!("\"k{i}\":{i},"));
        }
        doc.push_str("\"k3\":0}");
        assert!(matches!(
            check(doc.as_bytes(), Part::Payload, 4),
            Err(Error::DuplicateMember { name, .. }) if name == "k3"
        ));
    }

    #[test]
    fn garbage_is_a_json_error() {
        for bad in ["", "{", "{} x", "{\"a\":}", "[1,]", "\"\\ud800\""] {
            assert!(
                matches!(
                    check(bad.as_bytes(), Part::Header, 8),
                    Err(Error::Json { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            object(b"[1]", Part::Header, 8),
            Err(Error::Json { .. })
        ));
    }
}
