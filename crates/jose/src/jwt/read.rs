//! Reading a verified payload: the strict scan, then the caller's type.
//!
//! The scanner checks the whole claims set (grammar, repeated names at
//! every depth, nesting) and hands us the top-level members: we note which
//! required claims are there and read and type-check the registered ones
//! (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`) from their text. Only
//! then, and only if the claims are valid, the caller's type is built from
//! the members the scan kept ([`crate::json::de`]): exactly what
//! `serde_json` would build from the text, the top level not read again
//! (nested values are walked once more, without checks). It
//! sees the registered claims too, read the same way.

use serde::Deserialize;

use super::claims::Registered;
use crate::error::Input;
use crate::json::de::{self, Span};
use crate::json::scan;
use crate::Error;

/// What the scan of a payload yields.
pub(crate) struct Read<'a> {
    pub(crate) registered: Registered<'a>,
    /// For each required claim name, whether the payload has it.
    pub(crate) found: Vec<bool>,
    /// The payload as text.
    text: &'a str,
    /// The top-level members, in order.
    spans: Vec<Span<'a>>,
}

/// Check `payload` strictly and read its registered claims.
pub(crate) fn registered<'a>(
    payload: &'a [u8],
    max_depth: usize,
    required: &[String],
) -> Result<Read<'a>, Error> {
    let mut registered = Registered::default();
    let mut found = vec![false; required.len()];
    // Room for the members of most tokens in one allocation (40 bytes a
    // member, under the largest size glibc keeps in its per-thread cache).
    let mut spans = Vec::with_capacity(24);
    let text = scan::object(payload, Input::Payload, max_depth, |member| {
        if let Some(i) = required.iter().position(|r| *r == *member.name) {
            found[i] = !matches!(member.kind, scan::Kind::Null);
        }
        registered.read(&member)?;
        spans.push(Span::of(&member));
        Ok(())
    })?;
    Ok(Read {
        registered,
        found,
        text,
        spans,
    })
}

/// Build the caller's type from a payload [`registered`] accepted. A
/// payload that does not fit the type is [`Error::InvalidClaims`].
pub(crate) fn custom<'a, T: Deserialize<'a>>(read: &Read<'a>) -> Result<T, Error> {
    de::build(read.text, &read.spans).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::InvalidClaims {
            reason: e.to_string(),
        },
        _ => Error::Json {
            input: Input::Payload,
            reason: e.to_string(),
        },
    })
}

/// Both steps, for tests.
#[cfg(test)]
fn read_claims<'a, T: serde::de::DeserializeOwned>(
    payload: &'a [u8],
    max_depth: usize,
    required: &[String],
) -> Result<(Read<'a>, T), Error> {
    let read = registered(payload, max_depth, required)?;
    let custom = custom(&read)?;
    Ok((read, custom))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::Value;

    use super::*;
    use crate::NoCustomClaims;
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
        let (read, custom) = read_claims::<Mine>(payload, 8, &["scope".to_owned()]).unwrap();
        assert_eq!(custom.sub, "alice");
        assert_eq!(custom.exp, Some(10));
        assert_eq!(custom.nbf, Some(1.5));
        assert_eq!(custom.aud, ["a", "b"]);
        assert_eq!(custom.scope, "s");
        assert_eq!(custom.extra["k"], serde_json::json!([1]));
        assert_eq!(read.registered.sub.as_deref(), Some("alice"));
        // A fractional "not before" rounds up: not reached before 1.5.
        assert_eq!(read.registered.nbf, Some(NumericDate::from_seconds(2)));
        assert_eq!(read.found, [true]);
        // Value sees everything.
        let (_, all) = read_claims::<Value>(payload, 8, &[]).unwrap();
        assert_eq!(all["aud"], serde_json::json!(["a", "b"]));
        assert_eq!(all["exp"], 10);
    }

    #[derive(Debug, Deserialize, PartialEq)]
    enum Shape {
        Circle { r: u32 },
        Pair(u32, u32),
        Unit,
    }

    #[derive(Debug, Deserialize)]
    struct Doc {
        shape: Option<Shape>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn any_serde_type_reads_the_checked_payload() {
        for (payload, shape) in [
            (
                r#"{"shape":{"Circle":{"r":2}},"tags":["x"]}"#,
                Some(Shape::Circle { r: 2 }),
            ),
            (
                r#"{"shape":"Unit","other":{"z":[1,{}]}}"#,
                Some(Shape::Unit),
            ),
            (r#"{"shape":{"Pair":[1,2]}}"#, Some(Shape::Pair(1, 2))),
            (r#"{"shape":null}"#, None),
        ] {
            let (_, doc) = read_claims::<Doc>(payload.as_bytes(), 8, &[]).unwrap();
            assert_eq!(doc.shape, shape, "{payload}");
            assert_eq!(doc.tags.len(), usize::from(payload.contains("tags")));
        }
        // Members the type never reads are checked all the same.
        for payload in [
            r#"{"shape":"Unit","other":{"z":1,"z":2}}"#,
            r#"{"shape":{"Circle":{"r":1,"r":2}}}"#,
            r#"{"tags":[],"other":[{"z":1,"z":2}]}"#,
        ] {
            let err = read_claims::<Doc>(payload.as_bytes(), 8, &[])
                .err()
                .unwrap();
            assert_eq!(err.code(), "ERR_DUPLICATE_MEMBER", "{payload}");
        }
        let deep = r#"{"other":[[[[[[1]]]]]]}"#;
        assert!(read_claims::<Doc>(deep.as_bytes(), 8, &[]).is_ok());
        let err = read_claims::<Doc>(deep.as_bytes(), 6, &[]).err().unwrap();
        assert_eq!(err.code(), "ERR_TOO_DEEP");
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
