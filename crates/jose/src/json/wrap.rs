//! A strict layer between serde_json and any `Deserialize` type.
//!
//! [`StrictSeed`] wraps a caller's seed so that, while the caller's type is
//! being built, every object it passes through is checked for repeated
//! member names and every container for the depth limit, exactly like
//! [`super::Skip`] does. Values the caller ignores are still walked and
//! checked. This lets one pass both check and deserialize an untrusted
//! payload.

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::{Ctx, KeySeed, SeenKeys};

/// Wraps a seed: the value it reads sits at `depth`.
pub(crate) struct StrictSeed<'c, S> {
    pub(crate) seed: S,
    pub(crate) ctx: &'c Ctx,
    pub(crate) depth: usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(StrictDe {
            inner: d,
            ctx: self.ctx,
            depth: self.depth,
        })
    }
}

struct StrictDe<'c, D> {
    inner: D,
    ctx: &'c Ctx,
    depth: usize,
}

impl<'c, D> StrictDe<'c, D> {
    fn wrap<V>(&self, visitor: V) -> StrictVisitor<'c, V> {
        StrictVisitor {
            inner: visitor,
            ctx: self.ctx,
            depth: self.depth,
        }
    }
}

/// Forward `deserialize_*` methods to the inner deserializer with the
/// visitor wrapped.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let wrapped = self.wrap(visitor);
            self.inner.$method($($arg,)* wrapped)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for StrictDe<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_seq(), deserialize_map(),
        deserialize_identifier(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    /// Ignored values are walked in full: they must be sound too.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let wrapped = self.wrap(visitor);
        self.inner.deserialize_any(wrapped)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

struct StrictVisitor<'c, V> {
    inner: V,
    ctx: &'c Ctx,
    depth: usize,
}

macro_rules! pass {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StrictVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    pass! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char),
        visit_str(&str), visit_borrowed_str(&'de str), visit_string(String),
        visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(StrictDe {
            inner: d,
            ctx: self.ctx,
            depth: self.depth,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(StrictDe {
            inner: d,
            ctx: self.ctx,
            depth: self.depth,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.depth >= self.ctx.max_depth {
            return Err(self.ctx.too_deep());
        }
        self.inner.visit_seq(StrictSeq {
            inner: seq,
            ctx: self.ctx,
            depth: self.depth + 1,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        if self.depth >= self.ctx.max_depth {
            return Err(self.ctx.too_deep());
        }
        self.inner.visit_map(StrictMap {
            inner: map,
            ctx: self.ctx,
            depth: self.depth + 1,
            seen: SeenKeys::default(),
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(StrictEnum {
            inner: data,
            ctx: self.ctx,
            depth: self.depth,
        })
    }
}

struct StrictSeq<'c, A> {
    inner: A,
    ctx: &'c Ctx,
    depth: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(StrictSeed {
            seed,
            ctx: self.ctx,
            depth: self.depth,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A map whose keys are checked for repeats before the caller sees them.
pub(crate) struct StrictMap<'c, 'de, A> {
    pub(crate) inner: A,
    pub(crate) ctx: &'c Ctx,
    /// Depth of the values.
    pub(crate) depth: usize,
    pub(crate) seen: SeenKeys<'de>,
}

impl<'de, A: MapAccess<'de>> StrictMap<'_, 'de, A> {
    /// The next member name, refused if it repeats an earlier one.
    pub(crate) fn next_name(&mut self) -> Result<Option<std::borrow::Cow<'de, str>>, A::Error> {
        let Some(key) = self.inner.next_key_seed(KeySeed)? else {
            return Ok(None);
        };
        if !self.seen.insert(key.clone()) {
            return Err(self.ctx.duplicate(&key));
        }
        Ok(Some(key))
    }
}

/// Hand a member name to the caller's key seed.
pub(crate) fn give_name<'de, K, E>(seed: K, key: std::borrow::Cow<'de, str>) -> Result<K::Value, E>
where
    K: DeserializeSeed<'de>,
    E: de::Error,
{
    match key {
        std::borrow::Cow::Borrowed(name) => {
            seed.deserialize(BorrowedStrDeserializer::<E>::new(name))
        }
        std::borrow::Cow::Owned(name) => seed.deserialize(StringDeserializer::<E>::new(name)),
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<'_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.next_name()? {
            Some(key) => give_name(seed, key).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(StrictSeed {
            seed,
            ctx: self.ctx,
            depth: self.depth,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct StrictEnum<'c, A> {
    inner: A,
    ctx: &'c Ctx,
    depth: usize,
}

impl<'c, 'de, A: EnumAccess<'de>> EnumAccess<'de> for StrictEnum<'c, A> {
    type Error = A::Error;
    type Variant = StrictVariant<'c, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.inner.variant_seed(StrictSeed {
            seed,
            ctx: self.ctx,
            depth: self.depth,
        })?;
        Ok((
            value,
            StrictVariant {
                inner: variant,
                ctx: self.ctx,
                depth: self.depth,
            },
        ))
    }
}

struct StrictVariant<'c, A> {
    inner: A,
    ctx: &'c Ctx,
    depth: usize,
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for StrictVariant<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(StrictSeed {
            seed,
            ctx: self.ctx,
            depth: self.depth,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            StrictVisitor {
                inner: visitor,
                ctx: self.ctx,
                depth: self.depth,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            StrictVisitor {
                inner: visitor,
                ctx: self.ctx,
                depth: self.depth,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::Value;

    use super::super::parse;
    use super::*;
    use crate::error::{Error, Part};

    fn strict<T: for<'de> Deserialize<'de>>(text: &str, depth: usize) -> Result<T, Error> {
        let ctx = Ctx::new(Part::Payload, depth);
        parse(
            text.as_bytes(),
            &ctx,
            StrictSeed {
                seed: std::marker::PhantomData::<T>,
                ctx: &ctx,
                depth: 0,
            },
        )
    }

    #[derive(Debug, Deserialize, PartialEq)]
    enum Shape {
        Circle { r: u32 },
        Pair(u32, u32),
        Wrapped(BTreeMap<String, u32>),
        Unit,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Doc {
        name: String,
        shape: Option<Shape>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn passes_values_through() {
        let doc: Doc = strict(
            r#"{"name":"a","shape":{"Circle":{"r":2}},"tags":["x"],"other":{"z":[1,{}]}}"#,
            8,
        )
        .unwrap();
        assert_eq!(doc.shape, Some(Shape::Circle { r: 2 }));
        let doc: Doc = strict(r#"{"name":"a","shape":"Unit"}"#, 8).unwrap();
        assert_eq!(doc.shape, Some(Shape::Unit));
        let doc: Doc = strict(r#"{"name":"a","shape":{"Pair":[1,2]}}"#, 8).unwrap();
        assert_eq!(doc.shape, Some(Shape::Pair(1, 2)));
        let value: Value = strict(r#"{"a":[1,2.5,"s",null,true,{"b":{}}]}"#, 8).unwrap();
        assert_eq!(value["a"][5]["b"], serde_json::json!({}));
    }

    #[test]
    fn checks_reach_every_level_even_ignored_ones() {
        for doc in [
            r#"{"name":"a","name":"b"}"#,
            r#"{"name":"a","other":{"z":1,"z":2}}"#,
            r#"{"name":"a","other":[{"z":1,"z":2}]}"#,
            r#"{"name":"a","shape":{"Wrapped":{"k":1,"k":2}}}"#,
            r#"{"name":"a","shape":{"Circle":{"r":1,"r":2}}}"#,
        ] {
            assert!(
                matches!(strict::<Doc>(doc, 8), Err(Error::DuplicateMember { .. })),
                "{doc}"
            );
        }
        assert!(matches!(
            strict::<Value>(r#"{"a":{"b":1,"b":1}}"#, 8),
            Err(Error::DuplicateMember { .. })
        ));
        let deep = r#"{"name":"a","other":[[[[[[1]]]]]]}"#;
        assert!(strict::<Doc>(deep, 8).is_ok());
        assert!(matches!(strict::<Doc>(deep, 6), Err(Error::TooDeep { .. })));
    }
}
