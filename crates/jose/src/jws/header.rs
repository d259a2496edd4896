//! The JWS protected header (RFC 7515 §4).

use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::error::Input;
use crate::json;
use crate::json::scan::{self, Kind};
use crate::key::SigningKey;
use crate::Error;

/// Header parameters registered by RFC 7515 and RFC 7516. `crit` may not
/// name them (RFC 7515 §4.1.11).
const REGISTERED: [&str; 16] = [
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc",
    "zip", "epk", "apu", "apv",
];

/// A JWS protected header.
///
/// `alg` is typed: a header with an unknown algorithm (or `none`) never
/// parses. Members other than `alg`, `typ`, `cty`, `kid` and `crit` (for
/// example `jku`, `x5c`, an embedded `jwk`, or application members) are
/// kept in [`Header::extra`] as they appeared; none of them is ever used to
/// find or trust a key.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Header {
    /// The signature algorithm.
    pub alg: Algorithm,
    /// `typ`: the media type of the whole token (`JWT`, `at+jwt`, …).
    pub typ: Option<String>,
    /// `cty`: the media type of the payload.
    pub cty: Option<String>,
    /// `kid`: which key signed the token.
    pub kid: Option<String>,
    /// `crit`: extensions the recipient must understand.
    pub crit: Option<Vec<String>>,
    /// Every other member.
    pub extra: Map<String, Value>,
}

impl Header {
    /// A header with only `alg`.
    pub fn new(alg: Algorithm) -> Header {
        Header {
            alg,
            typ: None,
            cty: None,
            kid: None,
            crit: None,
            extra: Map::new(),
        }
    }

    /// A header for tokens signed by `key`: its algorithm and `kid`.
    pub fn for_key(key: &SigningKey) -> Header {
        Header {
            kid: key.kid().map(str::to_owned),
            ..Header::new(key.algorithm())
        }
    }

    /// Set `typ`.
    #[must_use]
    pub fn typ(mut self, typ: impl Into<String>) -> Header {
        self.typ = Some(typ.into());
        self
    }

    /// Set `cty`.
    #[must_use]
    pub fn cty(mut self, cty: impl Into<String>) -> Header {
        self.cty = Some(cty.into());
        self
    }

    /// Set `kid`.
    #[must_use]
    pub fn kid(mut self, kid: impl Into<String>) -> Header {
        self.kid = Some(kid.into());
        self
    }

    /// Set `crit`.
    #[must_use]
    pub fn crit<I, S>(mut self, names: I) -> Header
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.crit = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Add an extra member. Registered names are refused when the token is
    /// signed.
    #[must_use]
    pub fn member(mut self, name: impl Into<String>, value: impl Into<Value>) -> Header {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Any member by name (typed members included, as JSON).
    pub fn get(&self, name: &str) -> Option<Value> {
        match name {
            "alg" => Some(Value::from(self.alg.as_str())),
            "typ" => self.typ.clone().map(Value::from),
            "cty" => self.cty.clone().map(Value::from),
            "kid" => self.kid.clone().map(Value::from),
            "crit" => self.crit.clone().map(Value::from),
            other => self.extra.get(other).cloned(),
        }
    }

    /// Parse decoded header bytes strictly.
    pub(crate) fn parse(bytes: &[u8], max_depth: usize) -> Result<Header, Error> {
        let mut header = Header::new(Algorithm::HS256);
        header.read(bytes, max_depth)?;
        Ok(header)
    }

    /// Parse decoded header bytes strictly into `self`, reusing the memory
    /// of its `typ`, `cty` and `kid` strings. On success every field holds
    /// what the bytes say, as [`Header::parse`] would give it; on failure
    /// `self` holds a mix of old and new members and must not be read as
    /// any token's header.
    pub(crate) fn read(&mut self, bytes: &[u8], max_depth: usize) -> Result<(), Error> {
        let mut alg = None;
        let (mut typ, mut cty, mut kid) = (false, false, false);
        let mut crit = None;
        self.extra.clear();
        scan::object(bytes, Input::Header, max_depth, |member| {
            let text = |name| {
                member
                    .as_str()
                    .ok_or_else(|| invalid(name, "must be a string"))
            };
            match &*member.name {
                "alg" => alg = Some(Algorithm::from_name(&text("alg")?)?),
                "typ" => typ = put(&mut self.typ, &text("typ")?),
                "cty" => cty = put(&mut self.cty, &text("cty")?),
                "kid" => kid = put(&mut self.kid, &text("kid")?),
                "crit" => {
                    let list = (member.kind == Kind::Array)
                        .then(|| serde_json::from_str::<Vec<String>>(member.raw).ok())
                        .flatten();
                    crit =
                        Some(list.ok_or_else(|| invalid("crit", "must be an array of strings"))?);
                }
                _ => {
                    let value = json::build(member.raw.as_bytes(), Input::Header)?;
                    self.extra.insert(member.name.into_owned(), value);
                }
            }
            Ok(())
        })?;
        self.alg = alg.ok_or_else(|| invalid("alg", "missing"))?;
        for (seen, slot) in [
            (typ, &mut self.typ),
            (cty, &mut self.cty),
            (kid, &mut self.kid),
        ] {
            if !seen {
                *slot = None;
            }
        }
        self.crit = crit;
        Ok(())
    }

    /// Check that the header can be written into a token.
    pub(crate) fn check_for_signing(&self) -> Result<(), Error> {
        if let Some(name) = self
            .extra
            .keys()
            .find(|k| matches!(k.as_str(), "alg" | "typ" | "cty" | "kid" | "crit"))
        {
            return Err(invalid(
                name,
                "set it through its own field, not as an extra member",
            ));
        }
        if self.extra.contains_key("b64") {
            // A verifier that implements RFC 7797 would read the payload
            // unencoded, and this one refuses the member.
            return Err(invalid(
                "b64",
                "unencoded payloads (RFC 7797) are not supported",
            ));
        }
        if let Some(crit) = &self.crit {
            self.check_crit_shape(crit)?;
        }
        Ok(())
    }

    /// RFC 7515 §4.1.11 checks, then: every critical extension must be
    /// one the caller declared it understands.
    pub(crate) fn check_crit(&self, understood: &[String]) -> Result<(), Error> {
        if self.extra.contains_key("b64") {
            return Err(invalid(
                "b64",
                "unencoded payloads (RFC 7797) are not supported",
            ));
        }
        let Some(crit) = &self.crit else {
            return Ok(());
        };
        self.check_crit_shape(crit)?;
        for name in crit {
            if !understood.iter().any(|u| u == name) {
                return Err(Error::UnknownCritical { name: name.clone() });
            }
        }
        Ok(())
    }

    fn check_crit_shape(&self, crit: &[String]) -> Result<(), Error> {
        if crit.is_empty() {
            return Err(invalid("crit", "must not be empty"));
        }
        for (i, name) in crit.iter().enumerate() {
            if REGISTERED.contains(&name.as_str()) {
                return Err(invalid(
                    "crit",
                    &format!("must not name the registered member {name:?}"),
                ));
            }
            if crit[..i].contains(name) {
                return Err(invalid("crit", &format!("names {name:?} twice")));
            }
            if !self.extra.contains_key(name) {
                return Err(invalid(
                    "crit",
                    &format!("names {name:?}, which the header lacks"),
                ));
            }
        }
        Ok(())
    }
}

/// Set `slot` to `value`, in the string it holds if any; true.
fn put(slot: &mut Option<String>, value: &str) -> bool {
    match slot {
        Some(held) => {
            held.clear();
            held.push_str(value);
        }
        None => *slot = Some(value.to_owned()),
    }
    true
}

fn invalid(member: &str, reason: &str) -> Error {
    Error::InvalidHeader {
        member: member.to_owned(),
        reason: reason.to_owned(),
    }
}

impl serde::Serialize for Header {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("alg", self.alg.as_str())?;
        if let Some(typ) = &self.typ {
            map.serialize_entry("typ", typ)?;
        }
        if let Some(kid) = &self.kid {
            map.serialize_entry("kid", kid)?;
        }
        if let Some(cty) = &self.cty {
            map.serialize_entry("cty", cty)?;
        }
        if let Some(crit) = &self.crit {
            map.serialize_entry("crit", crit)?;
        }
        for (name, value) in &self.extra {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Header, Error> {
        Header::parse(text.as_bytes(), 8)
    }

    #[test]
    fn parses_typed_and_extra_members() {
        let h =
            parse(r#"{"alg":"ES256","kid":"k","typ":"at+jwt","x5c":["AA"],"custom":{"a":[1]}}"#)
                .unwrap();
        assert_eq!(h.alg, Algorithm::ES256);
        assert_eq!(h.kid.as_deref(), Some("k"));
        assert_eq!(h.typ.as_deref(), Some("at+jwt"));
        assert_eq!(h.get("custom"), Some(serde_json::json!({"a":[1]})));
        let again = parse(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(again, h);
    }

    #[test]
    fn refuses_bad_headers() {
        let cases = [
            (r#"{"alg":"none"}"#, "ERR_UNSUPPORTED_ALG"),
            (r#"{"alg":"HS256","alg":"HS256"}"#, "ERR_DUPLICATE_MEMBER"),
            (
                r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
                "ERR_DUPLICATE_MEMBER",
            ),
            (r#"{"kid":"a"}"#, "ERR_INVALID_HEADER"),
            (r#"{"alg":["HS256"]}"#, "ERR_INVALID_HEADER"),
            (r#"{"alg":"HS256","kid":7}"#, "ERR_INVALID_HEADER"),
            (r#"{"alg":"HS256","typ":null}"#, "ERR_INVALID_HEADER"),
            (r#"{"alg":"HS256","crit":"exp"}"#, "ERR_INVALID_HEADER"),
            (r#"{"alg":"HS256","crit":[1]}"#, "ERR_INVALID_HEADER"),
            (
                r#"{"alg":"HS256","x":{"y":{"z":{"w":{"v":{"u":{"t":{"s":1}}}}}}}}"#,
                "ok",
            ),
            (
                r#"{"alg":"HS256","x":{"y":{"z":{"w":{"v":{"u":{"t":{"s":[1]}}}}}}}}"#,
                "ERR_TOO_DEEP",
            ),
            (r#"["alg"]"#, "ERR_JSON"),
            (r#"{"alg":"HS256"} "#, "ok"),
        ];
        for (text, code) in cases {
            match parse(text) {
                Ok(_) => assert_eq!(code, "ok", "{text} parsed"),
                Err(e) => assert_eq!(e.code(), code, "{text}: {e}"),
            }
        }
    }

    #[test]
    fn crit_rules() {
        let understood = vec!["exp-ext".to_owned()];
        let ok = parse(r#"{"alg":"HS256","crit":["exp-ext"],"exp-ext":1}"#).unwrap();
        ok.check_crit(&understood).unwrap();
        for (text, code) in [
            (
                r#"{"alg":"HS256","crit":["other"],"other":1}"#,
                "ERR_UNKNOWN_CRIT",
            ),
            (r#"{"alg":"HS256","crit":[]}"#, "ERR_INVALID_HEADER"),
            (
                r#"{"alg":"HS256","crit":["kid"],"kid":"a"}"#,
                "ERR_INVALID_HEADER",
            ),
            (
                r#"{"alg":"HS256","crit":["exp-ext"]}"#,
                "ERR_INVALID_HEADER",
            ),
            (
                r#"{"alg":"HS256","crit":["exp-ext","exp-ext"],"exp-ext":1}"#,
                "ERR_INVALID_HEADER",
            ),
            (
                r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
                "ERR_INVALID_HEADER",
            ),
            (r#"{"alg":"HS256","b64":false}"#, "ERR_INVALID_HEADER"),
        ] {
            let err = parse(text).unwrap().check_crit(&understood).unwrap_err();
            assert_eq!(err.code(), code, "{text}: {err}");
        }
    }
}
