//! Any bytes as a claims set: the strict scanner may refuse what
//! serde_json accepts (repeated names, depth), never the other way round,
//! and what both accept reads the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_jose::{b64, dangerous};

fuzz_target!(|payload: &[u8]| {
    let token = format!("eyJhbGciOiJIUzI1NiJ9.{}.c2ln", b64::encode(payload));
    let ours = dangerous::decode_unverified_claims(&token).map(|(_, claims)| claims);
    let theirs = serde_json::from_slice::<serde_json::Value>(payload);
    match (ours, theirs) {
        (Ok(claims), Ok(value)) => assert_eq!(serde_json::Value::Object(claims), value),
        (Ok(claims), Err(e)) => panic!("accepted {claims:?}, serde_json says {e}"),
        (Err(_), _) => {}
    }
});
