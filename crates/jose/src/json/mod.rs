//! Strict JSON for untrusted headers, payloads and keys.
//!
//! `serde_json` alone keeps the last of two members with one name, and
//! recurses as deep as its own limit allows. Here every object, at every
//! depth, is checked for repeated member names (RFC 7515 §5.2 lets a
//! verifier reject them, RFC 8725 §3.1 asks it to), and nesting is bounded
//! by a caller-chosen depth. Failures come back as structured [`Error`]s.
//!
//! Checking and building are apart: [`scan`] checks a text in one pass
//! without building anything, then `serde_json` builds only what is needed
//! from text the scanner has accepted; [`de`] hands the caller's type the
//! top-level members the scan found, so a payload is not read twice.

use serde_json::{Map, Value};

use crate::error::{Error, Input};

pub(crate) mod de;
pub(crate) mod scan;
pub(crate) mod written;

/// Parse `bytes` as one strict JSON object.
pub(crate) fn object(
    bytes: &[u8],
    input: Input,
    max_depth: usize,
) -> Result<Map<String, Value>, Error> {
    scan::object(bytes, input, max_depth, |_| Ok(()))?;
    build(bytes, input)
}

/// Build a value from text the scanner has accepted.
pub(crate) fn build<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    input: Input,
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Json {
        input,
        reason: e.to_string(),
    })
}

/// Check that `bytes` is one strict JSON value, without building it.
pub(crate) fn check(bytes: &[u8], input: Input, max_depth: usize) -> Result<(), Error> {
    scan::value(bytes, input, max_depth).map(drop)
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
                check(doc.as_bytes(), Input::Payload, 16),
                object(doc.as_bytes(), Input::Payload, 16).map(|_| ()),
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
        assert!(check(deep.as_bytes(), Input::Payload, 5).is_ok());
        assert!(matches!(
            check(deep.as_bytes(), Input::Payload, 4),
            Err(Error::TooDeep { max: 4, .. })
        ));
        let objects = r#"{"a":{"b":{"c":{}}}}"#;
        assert!(object(objects.as_bytes(), Input::Header, 4).is_ok());
        assert!(matches!(
            object(objects.as_bytes(), Input::Header, 3),
            Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn garbage_is_a_json_error() {
        for bad in ["", "{", "{} x", "{\"a\":}", "[1,]", "\"\\ud800\""] {
            assert!(
                matches!(
                    check(bad.as_bytes(), Input::Header, 8),
                    Err(Error::Json { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            object(b"[1]", Input::Header, 8),
            Err(Error::Json { .. })
        ));
    }
}
