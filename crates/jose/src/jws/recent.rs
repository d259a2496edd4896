//! Headers this thread has parsed lately, by their exact encoded text.
//!
//! An issuer signs all its tokens under one header (`alg`, `typ`, `kid`),
//! byte for byte, so a verifier sees the same header segment over and
//! over. Parsing it is a pure function of that text and the depth limit,
//! so the result of the last few parses is kept and handed out again,
//! shared (an immutable `Arc`, so no token can change another's header):
//! decoding, the strict scan and the copy are skipped, nothing else is. Only
//! headers that parsed are kept, only short ones (the usual ~60
//! characters; at most [`MAX_LEN`]), [`KEPT`] per thread (a service that
//! trusts several issuers, each rotating its keys), and the key is the
//! whole segment compared exactly, so a header differing in any byte is
//! parsed afresh.
//!
//! A new header takes the place of the oldest one not used since the
//! cache last went round its slots (a second chance, the "clock"): the
//! header a service sees on every token stays kept while one-off headers
//! (a tenant seen once, forged tokens under made-up `kid`s) come and go.
//! Where no token still holds the header it replaces, its memory (the
//! `Arc` and the `typ`, `cty` and `kid` strings; the cache's copy of the
//! text is reused too) is kept for the next new header, so a service that
//! sees more headers than are kept allocates and frees less for each
//! token. A header that does not parse replaces nothing; one that parses
//! does, before the token's signature is checked (as the header's own
//! parse always came first).

use std::cell::RefCell;
use std::sync::Arc;

use super::Header;
use crate::alg::Algorithm;
use crate::b64;
use crate::error::Input;
use crate::Error;

/// Headers kept per thread.
const KEPT: usize = 16;

/// Longest encoded header kept.
const MAX_LEN: usize = 256;

struct Entry {
    /// [`print`] of `encoded`: compared first, so a lookup reads the text
    /// of at most the entries whose print matches.
    print: u64,
    encoded: String,
    max_depth: usize,
    header: Arc<Header>,
    /// Handed out since the cache last passed this slot looking for one
    /// to replace.
    used: bool,
}

struct Recent {
    entries: [Option<Entry>; KEPT],
    /// The slot the next new header takes.
    next: usize,
    /// The slot last handed out: most threads see one header, so it is
    /// compared before any print is made.
    last: usize,
    /// A header no token holds, whose memory the next parse reuses.
    spare: Option<Arc<Header>>,
}

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            entries: [const { None }; KEPT],
            next: 0,
            last: 0,
            spare: None,
        })
    };
}

/// A 64-bit digest of an encoded header (the multiply-rotate fold of
/// rustc's FxHash, eight bytes at a time). Not a defence against anything:
/// equal prints only say the texts are worth comparing.
fn print(encoded: &str) -> u64 {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut words = encoded.as_bytes().chunks_exact(8);
    let mut hash = encoded.len() as u64;
    for word in words.by_ref() {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(bytes)).wrapping_mul(SEED);
    }
    let mut tail = [0; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    (hash.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(SEED)
}

/// Decode and strictly parse an encoded header segment into `header`.
fn read(header: &mut Header, encoded: &str, max_depth: usize) -> Result<(), Error> {
    b64::with_decoded::<256, _>(encoded, Input::Header, |bytes| {
        header.read(bytes, max_depth)
    })
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
    // A thread being torn down, or a borrow already taken (nothing here
    // calls back in, so it never is), parses without the cache.
    RECENT
        .try_with(|recent| {
            recent
                .try_borrow_mut()
                .ok()
                .map(|mut recent| recent.header(encoded, max_depth))
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| parse(encoded, max_depth).map(Arc::new))
}

impl Recent {
    fn header(&mut self, encoded: &str, max_depth: usize) -> Result<Arc<Header>, Error> {
        if let Some(Some(entry)) = self.entries.get_mut(self.last) {
            if entry.encoded == encoded && entry.max_depth == max_depth {
                entry.used = true;
                return Ok(Arc::clone(&entry.header));
            }
        }
        let print = print(encoded);
        let kept = self.entries.iter_mut().enumerate().find_map(|(i, e)| {
            let e = e.as_mut()?;
            (e.print == print && e.max_depth == max_depth && e.encoded == encoded).then_some((i, e))
        });
        if let Some((i, entry)) = kept {
            entry.used = true;
            self.last = i;
            return Ok(Arc::clone(&entry.header));
        }
        let mut fresh = self
            .spare
            .take()
            .unwrap_or_else(|| Arc::new(Header::new(Algorithm::HS256)));
        let parsed = match Arc::get_mut(&mut fresh) {
            // The spare is only ever a header no one else holds.
            Some(spare) => read(spare, encoded, max_depth),
            None => parse(encoded, max_depth).map(|header| fresh = Arc::new(header)),
        };
        if let Err(e) = parsed {
            self.spare = Some(fresh);
            return Err(e);
        }
        let slot = self.victim();
        self.next = (slot + 1) % KEPT;
        self.last = slot;
        // The replaced entry lends its copy of the text, and its header
        // when no token holds it.
        let mut text = match self.entries[slot].take() {
            Some(mut old) => {
                if Arc::get_mut(&mut old.header).is_some() {
                    self.spare = Some(old.header);
                }
                old.encoded.clear();
                old.encoded
            }
            None => String::new(),
        };
        text.push_str(encoded);
        self.entries[slot] = Some(Entry {
            print,
            encoded: text,
            max_depth,
            header: Arc::clone(&fresh),
            used: false,
        });
        Ok(fresh)
    }

    /// The slot a new header takes: from [`Recent::next`] on, the first
    /// free one or one not used since it was last passed; those used are
    /// passed, and lose their mark. All used: the one `next` names.
    fn victim(&mut self) -> usize {
        let mut slot = self.next;
        for _ in 0..KEPT {
            match &mut self.entries[slot] {
                Some(entry) if entry.used => {
                    entry.used = false;
                    slot = (slot + 1) % KEPT;
                }
                _ => break,
            }
        }
        slot
    }
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

    /// More headers than a thread keeps, of every shape (with and without
    /// each typed member, with extra members, and some that do not parse),
    /// each distinct, so new headers are read into the memory of old ones.
    fn many_headers() -> Vec<String> {
        let shapes = [
            r#"{"alg":"HS256","kid":"K"}"#,
            r#"{"alg":"HS256","typ":"JWT","x":"K"}"#,
            r#"{"alg":"ES256","kid":"K","typ":"at+jwt","cty":"c"}"#,
            r#"{"alg":"EdDSA","crit":["exp"],"exp":"K"}"#,
            r#"{"alg":"RS256","kid":"K","n":{"d":{"e":[]}}}"#,
            r#"{"alg":"HS256","kid":"K","kid":"b"}"#,
            r#"{"alg":"none","kid":"K"}"#,
            r#"{"typ":"JWT","kid":"K"}"#,
            r#"{"alg":"HS384","y":"K"}"#,
        ];
        (0..KEPT * 2)
            .map(|i| encoded(&shapes[i % shapes.len()].replace('K', &i.to_string())))
            .collect()
    }

    #[test]
    fn a_header_a_token_holds_is_never_changed() {
        let text = encoded(r#"{"alg":"ES256","typ":"at+jwt","kid":"held"}"#);
        let held = header(&text, 8).unwrap();
        let others: Vec<String> = (0..KEPT)
            .map(|i| encoded(&format!(r#"{{"alg":"HS256","kid":"{i}"}}"#)))
            .collect();
        for other in &others {
            header(other, 8).unwrap();
        }
        // Replaced by the last of the others, and neither kept nor lent
        // for the next header's parse.
        assert_eq!(Arc::strong_count(&held), 1);
        for other in many_headers().iter().cycle().take(KEPT * 6) {
            let _ = header(other, 8);
        }
        assert_eq!(*held, parse(&text, 8).unwrap());
    }

    #[test]
    fn a_header_that_does_not_parse_replaces_nothing() {
        let good: Vec<String> = (0..KEPT)
            .map(|i| encoded(&format!(r#"{{"alg":"HS256","kid":"{i}"}}"#)))
            .collect();
        let first: Vec<Arc<Header>> = good.iter().map(|t| header(t, 8).unwrap()).collect();
        for i in 0..KEPT * 2 {
            let bad = encoded(&format!(r#"{{"alg":"none","kid":"{i}"}}"#));
            assert!(header(&bad, 8).is_err());
        }
        for (text, first) in good.iter().zip(&first) {
            assert!(Arc::ptr_eq(first, &header(text, 8).unwrap()), "still kept");
        }
    }

    #[test]
    fn the_header_seen_on_every_token_outlives_one_off_headers() {
        let hot = encoded(r#"{"alg":"ES256","typ":"at+jwt","kid":"hot"}"#);
        let first = header(&hot, 8).unwrap();
        for i in 0..KEPT * 4 {
            let once = encoded(&format!(r#"{{"alg":"HS256","kid":"once-{i}"}}"#));
            header(&once, 8).unwrap();
            if i % 4 == 3 {
                assert!(Arc::ptr_eq(&first, &header(&hot, 8).unwrap()), "after {i}");
            }
        }
    }

    #[test]
    fn a_replaced_header_no_one_holds_lends_its_memory() {
        let long_kid = "k".repeat(100);
        let mut headers: Vec<String> = (0..=KEPT + 1)
            .map(|i| encoded(&format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{i}"}}"#)))
            .collect();
        headers[0] = encoded(&format!(r#"{{"alg":"HS256","kid":"{long_kid}"}}"#));
        for text in &headers[..=KEPT] {
            header(text, 8).unwrap();
        }
        // The header after the one that replaced the oldest is read into
        // the oldest one's memory: its short `kid` sits in the long one's
        // string.
        let reused = header(&headers[KEPT + 1], 8).unwrap();
        assert_eq!(*reused, parse(&headers[KEPT + 1], 8).unwrap());
        let kid = reused.kid.as_ref().unwrap();
        assert!(kid.capacity() >= long_kid.len(), "{}", kid.capacity());
    }

    proptest! {
        /// Whatever the order in which headers come (more of them than
        /// are kept, with two depth limits), every answer is the one a
        /// fresh parse gives.
        #[test]
        fn answers_match_a_fresh_parse(order in prop::collection::vec((0..KEPT * 2, any::<bool>()), 1..200)) {
            let headers = many_headers();
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
