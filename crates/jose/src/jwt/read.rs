//! One strict pass over a verified payload that yields both the typed
//! registered claims and the caller's own claims type.
//!
//! The caller's type is deserialized through a tap on the top-level
//! object: every member name is checked for repeats and for the required
//! list; the registered claims (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//! `jti`) are read and type-checked by us, then replayed to the caller's
//! type, so it still sees them if it declares them; every other value goes
//! to the caller through the strict layer of [`crate::json::StrictSeed`],
//! which checks nesting depth and repeated names at every level.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::SeqDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::claims::{Audience, Claim, Got, Number, Registered, Slot};
use crate::error::Part;
use crate::json::{give_name, Ctx, SeenKeys, StrictMap};
use crate::Error;

/// What one pass over the payload yields.
pub(crate) struct Read<T> {
    pub(crate) registered: Registered,
    /// For each required claim name, whether the payload has it.
    pub(crate) found: Vec<bool>,
    pub(crate) custom: T,
}

/// Read `payload` (a JSON object) in one strict pass.
pub(crate) fn read_claims<T: DeserializeOwned>(
    payload: &[u8],
    max_depth: usize,
    required: &[String],
) -> Result<Read<T>, Error> {
    let starts_with_object = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !starts_with_object {
        return Err(Error::Json {
            part: Part::Payload,
            reason: "the claims set must be a JSON object".to_owned(),
        });
    }
    let ctx = Ctx::new(Part::Payload, max_depth);
    let mut state = State {
        registered: Registered::default(),
        found: vec![false; required.len()],
        required,
    };
    let seed = TopSeed {
        ctx: &ctx,
        state: &mut state,
        marker: PhantomData::<T>,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let custom = seed
        .deserialize(&mut de)
        .and_then(|custom| de.end().map(|()| custom))
        .map_err(|e| classify(&ctx, e))?;
    Ok(Read {
        registered: state.registered,
        found: state.found,
        custom,
    })
}

/// Our own recorded reason first; then malformed JSON; then a payload
/// that is sound but does not fit the caller's type.
fn classify(ctx: &Ctx, e: serde_json::Error) -> Error {
    if e.classify() == serde_json::error::Category::Data {
        ctx.error_or(e, |e| Error::InvalidClaims {
            reason: e.to_string(),
        })
    } else {
        ctx.error(e)
    }
}

struct State<'r> {
    registered: Registered,
    found: Vec<bool>,
    required: &'r [String],
}

struct TopSeed<'c, 's, 'r, T> {
    ctx: &'c Ctx,
    state: &'s mut State<'r>,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for TopSeed<'_, '_, '_, T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(Top {
            inner: d,
            ctx: self.ctx,
            state: self.state,
        })
    }
}

/// Presents the payload object to the caller's type, whatever it asks for.
struct Top<'c, 's, 'r, D> {
    inner: D,
    ctx: &'c Ctx,
    state: &'s mut State<'r>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Top<'_, '_, '_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(TopVisitor {
            inner: visitor,
            ctx: self.ctx,
            state: self.state,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct TopVisitor<'c, 's, 'r, V> {
    inner: V,
    ctx: &'c Ctx,
    state: &'s mut State<'r>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for TopVisitor<'_, '_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Tap {
            map: StrictMap {
                inner: map,
                ctx: self.ctx,
                depth: 1,
                seen: SeenKeys::default(),
            },
            state: self.state,
            pending: None,
        })
    }
}

/// The top-level members, seen by us before the caller.
struct Tap<'c, 'de, 's, 'r, A> {
    map: StrictMap<'c, 'de, A>,
    state: &'s mut State<'r>,
    pending: Option<(Slot, Got)>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Tap<'_, 'de, '_, '_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.map.next_name()? else {
            return Ok(None);
        };
        if let Some(i) = self.state.required.iter().position(|r| *r == *key) {
            self.state.found[i] = true;
        }
        if let Some((slot, name, kind)) = Slot::of(&key) {
            let ctx = self.map.ctx;
            let got = self.map.inner.next_value_seed(Claim { ctx, name, kind })?;
            self.pending = Some((slot, got));
        }
        give_name(seed, key).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        match self.pending.take() {
            Some((slot, got)) => {
                let value = seed.deserialize(Replay::<A::Error> {
                    got: &got,
                    marker: PhantomData,
                })?;
                self.state.registered.store(slot, got);
                Ok(value)
            }
            None => self.map.next_value_seed(seed),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A registered claim we already read, given again to the caller's type.
struct Replay<'g, E> {
    got: &'g Got,
    marker: PhantomData<E>,
}

impl<'de, E: de::Error> Deserializer<'de> for Replay<'_, E> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        match self.got {
            Got::Str(s) | Got::Aud(Audience::One(s)) => visitor.visit_str(s),
            Got::Date(_, Number::Int(v)) => visitor.visit_i64(*v),
            Got::Date(_, Number::UInt(v)) => visitor.visit_u64(*v),
            Got::Date(_, Number::Float(v)) => visitor.visit_f64(*v),
            Got::Aud(Audience::Many(all)) => {
                let mut seq = SeqDeserializer::new(all.iter().map(String::as_str));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, E> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::Value;

    use super::*;
    use crate::jwt::NoCustomClaims;
    use crate::NumericDate;

    #[derive(Debug, Deserialize)]
    struct Mine {
        sub: String,
        exp: Option<i64>,
        nbf: Option<f64>,
        aud: Vec<String>,
        scope: String,
        #[serde(default)]
        extra: BTreeMap<String, Value>,
    }

    #[test]
    fn registered_claims_are_read_once_and_replayed() {
        let payload =
            br#"{"sub":"alice","exp":10,"nbf":1.5,"aud":["a","b"],"scope":"s","extra":{"k":[1]}}"#;
        let read = read_claims::<Mine>(payload, 8, &["scope".to_owned()]).unwrap();
        assert_eq!(read.custom.sub, "alice");
        assert_eq!(read.custom.exp, Some(10));
        assert_eq!(read.custom.nbf, Some(1.5));
        assert_eq!(read.custom.aud, ["a", "b"]);
        assert_eq!(read.custom.scope, "s");
        assert_eq!(read.custom.extra["k"], serde_json::json!([1]));
        assert_eq!(read.registered.sub.as_deref(), Some("alice"));
        assert_eq!(read.registered.nbf, Some(NumericDate::from_seconds(1)));
        assert_eq!(read.found, [true]);
        // Value sees everything.
        let all = read_claims::<Value>(payload, 8, &[]).unwrap();
        assert_eq!(all.custom["aud"], serde_json::json!(["a", "b"]));
        assert_eq!(all.custom["exp"], 10);
    }

    #[test]
    fn strictness_holds_whatever_the_caller_reads() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"exp":1,"exp":2}"#, "ERR_DUPLICATE_MEMBER"),
            (br#"{"x":{"y":1,"y":2}}"#, "ERR_DUPLICATE_MEMBER"),
            (br#"{"exp":"1"}"#, "ERR_INVALID_CLAIM_TYPE"),
            (br#"{"x":[[[[[[[[1]]]]]]]]}"#, "ERR_TOO_DEEP"),
            (br#"{"x":1} {}"#, "ERR_JSON"),
        ];
        for (payload, code) in cases {
            let err = read_claims::<NoCustomClaims>(payload, 8, &[])
                .err()
                .unwrap();
            assert_eq!(err.code(), code, "{}", String::from_utf8_lossy(payload));
            let err = read_claims::<Value>(payload, 8, &[]).err().unwrap();
            assert_eq!(err.code(), code, "{}", String::from_utf8_lossy(payload));
        }
        assert_eq!(
            read_claims::<Mine>(br#"{"sub":1}"#, 8, &[])
                .err()
                .unwrap()
                .code(),
            "ERR_INVALID_CLAIM_TYPE"
        );
        let err = read_claims::<Mine>(br#"{"sub":"a","aud":[],"scope":7}"#, 8, &[])
            .err()
            .unwrap();
        assert_eq!(err.code(), "ERR_INVALID_CLAIMS", "{err}");
        for not_object in [&b"[1]"[..], b"1", b"\"x\"", b"", b"null"] {
            assert_eq!(
                read_claims::<Value>(not_object, 8, &[])
                    .err()
                    .unwrap()
                    .code(),
                "ERR_JSON"
            );
        }
    }
}
