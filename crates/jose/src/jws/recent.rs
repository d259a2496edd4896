//! Headers this thread has parsed lately, by their exact encoded text.
//!
//! An issuer signs all its tokens under one header (`alg`, `typ`, `kid`),
//! byte for byte, so a verifier sees the same header segment over and
//! over. Parsing it is a pure function of that text and the depth limit,
//! so the result of the last few parses is kept and handed out again,
//! shared (an immutable `Arc`, so no token can change another's header):
//! decoding, the strict scan and the copy are skipped, nothing else is. Only
//! headers that parsed are kept, only short ones (the usual ~60
//! characters; at most [`MAX_LEN`]), a few per thread, and the key is the
//! whole segment compared exactly, so a header differing in any byte is
//! parsed afresh.

use std::cell::RefCell;
use std::sync::Arc;

use super::Header;
use crate::b64;
use crate::error::Input;
use crate::Error;

/// Headers kept per thread (tokens of a few issuers, or a key rotation).
const KEPT: usize = 4;

/// Longest encoded header kept.
const MAX_LEN: usize = 256;

struct Entry {
    encoded: Box<str>,
    max_depth: usize,
    header: Arc<Header>,
}

struct Recent {
    entries: [Option<Entry>; KEPT],
    /// The slot the next new header takes.
    next: usize,
}

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            entries: [const { None }; KEPT],
            next: 0,
        })
    };
}

/// Decode and strictly parse an encoded header segment.
fn parse(encoded: &str, max_depth: usize) -> Result<Header, Error> {
    b64::with_decoded::<256, _>(encoded, Input::Header, |bytes| {
        Header::parse(bytes, max_depth)
    })
}

/// The header `encoded` holds, parsed with `max_depth`: an earlier result
/// for the same text and limit, shared, or a fresh parse.
pub(super) fn header(encoded: &str, max_depth: usize) -> Result<Arc<Header>, Error> {
    if encoded.len() > MAX_LEN {
        return parse(encoded, max_depth).map(Arc::new);
    }
    let kept = RECENT.try_with(|recent| {
        let recent = recent.try_borrow().ok()?;
        recent
            .entries
            .iter()
            .flatten()
            .find(|e| e.max_depth == max_depth && *e.encoded == *encoded)
            .map(|e| Arc::clone(&e.header))
    });
    if let Ok(Some(header)) = kept {
        return Ok(header);
    }
    let header = Arc::new(parse(encoded, max_depth)?);
    // A thread being torn down keeps nothing; that is all.
    let _ = RECENT.try_with(|recent| {
        if let Ok(mut recent) = recent.try_borrow_mut() {
            let slot = recent.next;
            recent.entries[slot] = Some(Entry {
                encoded: encoded.into(),
                max_depth,
                header: Arc::clone(&header),
            });
            recent.next = (slot + 1) % KEPT;
        }
    });
    Ok(header)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(json: &str) -> String {
        b64::encode(json)
    }

    #[test]
    fn a_kept_header_is_the_same_header() {
        let text = encoded(r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","x":{"y":[1]}}"#);
        let first = header(&text, 8).unwrap();
        let again = header(&text, 8).unwrap();
        assert_eq!(first, again);
        assert!(Arc::ptr_eq(&first, &again), "the kept header is shared");
        assert_eq!(again.kid.as_deref(), Some("k1"));
        assert_eq!(again.extra["x"], serde_json::json!({"y": [1]}));
    }

    #[test]
    fn the_depth_limit_is_part_of_the_key() {
        let text = encoded(r#"{"alg":"ES256","x":{"y":[1]}}"#);
        assert!(header(&text, 8).is_ok());
        assert!(matches!(header(&text, 2), Err(Error::TooDeep { .. })));
        assert!(header(&text, 8).is_ok());
    }

    #[test]
    fn failures_are_never_kept() {
        let bad = encoded(r#"{"alg":"none"}"#);
        for _ in 0..2 {
            assert!(header(&bad, 8).is_err());
        }
        let repeated = encoded(r#"{"alg":"HS256","alg":"HS256"}"#);
        for _ in 0..2 {
            assert!(matches!(
                header(&repeated, 8),
                Err(Error::DuplicateMember { .. })
            ));
        }
    }

    #[test]
    fn long_headers_are_parsed_every_time() {
        let long = encoded(&format!(
            r#"{{"alg":"ES256","kid":"{}"}}"#,
            "k".repeat(MAX_LEN)
        ));
        assert!(long.len() > MAX_LEN);
        let first = header(&long, 8).unwrap();
        assert_eq!(first.kid.as_ref().map(String::len), Some(MAX_LEN));
        assert!(!Arc::ptr_eq(&first, &header(&long, 8).unwrap()));
        RECENT.with_borrow(|recent| {
            assert!(recent
                .entries
                .iter()
                .flatten()
                .all(|e| e.encoded.len() <= MAX_LEN));
        });
    }

    proptest! {
        /// Whatever the order in which headers come (more of them than
        /// are kept, with two depth limits), every answer is the one a
        /// fresh parse gives.
        #[test]
        fn answers_match_a_fresh_parse(order in prop::collection::vec((0usize..7, any::<bool>()), 1..40)) {
            let headers = [
                r#"{"alg":"HS256"}"#,
                r#"{"alg":"HS256","typ":"JWT"}"#,
                r#"{"alg":"ES256","kid":"a","typ":"at+jwt"}"#,
                r#"{"alg":"ES256","kid":"b","typ":"at+jwt"}"#,
                r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#,
                r#"{"alg":"RS256","n":{"d":{"e":[]}}}"#,
                r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
            ]
            .map(encoded);
            for (i, shallow) in order {
                let depth = if shallow { 2 } else { 8 };
                let fresh = parse(&headers[i], depth);
                let got = header(&headers[i], depth);
                match (got, fresh) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(&*a, &b),
                    (Err(a), Err(b)) => prop_assert_eq!(a.code(), b.code()),
                    (a, b) => prop_assert!(false, "{:?} against {:?}", a, b),
                }
            }
        }
    }
}
