//! Any bytes as a claims set: the strict scanner may refuse what
//! serde_json accepts (repeated names, depth), never the other way round,
//! and what both accept reads the same, whether built as a JSON map or
//! handed to the caller's type by `jwt::verify` or `jwt::verify_borrowed`
//! (then both ways: the same value, or both an error).
#![no_main]
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use tessera_jose::jws::{self, Header};
use tessera_jose::{b64, dangerous, jwt, Algorithm, SigningKey, Validation};

fuzz_target!(|payload: &[u8]| {
    let token = format!("eyJhbGciOiJIUzI1NiJ9.{}.c2ln", b64::encode(payload));
    let ours = dangerous::decode_unverified_claims(&token).map(|(_, claims)| claims);
    let theirs = serde_json::from_slice::<Value>(payload);
    match (ours, &theirs) {
        (Ok(claims), Ok(value)) => assert_eq!(&Value::Object(claims), value),
        (Ok(claims), Err(e)) => panic!("accepted {claims:?}, serde_json says {e}"),
        (Err(_), _) => {}
    }

    // Through verification, into types read through serde's map interface.
    let Ok(key) = SigningKey::hmac(Algorithm::HS256, &[7; 32]) else {
        return;
    };
    let (Ok(token), Ok(public)) = (
        jws::sign(&Header::new(Algorithm::HS256), payload, &key),
        key.verifying_key(),
    ) else {
        return;
    };
    let validation = Validation::new()
        .any_issuer()
        .any_audience()
        .allow_missing_exp();
    if let Ok(verified) = jwt::verify::<Value>(&token, &public, &validation) {
        assert_eq!(Some(&verified.claims.custom), theirs.as_ref().ok());
    }
    if let Ok(verified) = jwt::verify::<HashMap<String, String>>(&token, &public, &validation) {
        let direct = serde_json::from_slice::<HashMap<String, String>>(payload);
        assert_eq!(Some(&verified.claims.custom), direct.as_ref().ok());
    }

    // Where the payload passed the strict scan and the registered claims'
    // rules, typed and borrowing builds answer exactly as serde_json does,
    // both ways: the same value, or both an error.
    if jwt::verify::<tessera_jose::NoCustomClaims>(&token, &public, &validation).is_err() {
        return;
    }
    let ours = jwt::verify::<Nested>(&token, &public, &validation).map(|t| t.claims.custom);
    let direct = serde_json::from_slice::<Nested>(payload);
    match (&ours, &direct) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("Nested: ours {ours:?}, serde_json {direct:?}"),
    }
    let mut buffer = Vec::new();
    let ours = jwt::verify_borrowed::<Borrowing<'_>>(&token, &public, &validation, &mut buffer)
        .map(|t| t.claims.custom);
    let direct = serde_json::from_slice::<Borrowing<'_>>(payload);
    match (&ours, &direct) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("Borrowing: ours {ours:?}, serde_json {direct:?}"),
    }
});

/// Containers inside members, read by the walked build.
#[derive(Debug, PartialEq, Deserialize)]
struct Nested {
    a: Option<Vec<String>>,
    b: Option<BTreeMap<String, Vec<Option<i64>>>>,
    c: Option<(i32, f64)>,
    d: Option<BTreeMap<u8, bool>>,
    e: Option<Vec<Value>>,
}

/// The same through `verify_borrowed`.
#[derive(Debug, PartialEq, Deserialize)]
struct Borrowing<'a> {
    #[serde(borrow)]
    a: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    b: Option<BTreeMap<Cow<'a, str>, Vec<Option<u64>>>>,
    s: Option<&'a str>,
}
