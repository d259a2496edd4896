//! Any bytes as a claims set: the strict scanner may refuse what
//! serde_json accepts (repeated names, depth), never the other way round,
//! and what both accept reads the same, whether built as a JSON map or
//! handed to the caller's type by `jwt::verify`.
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
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
});
