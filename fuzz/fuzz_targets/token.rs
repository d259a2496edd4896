//! Any string as a token: verification and unverified decoding must
//! return, never panic, and never accept without the key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_jose::{dangerous, jwt, Algorithm, SigningKey, Validation};

fuzz_target!(|token: &str| {
    let key = SigningKey::hmac(Algorithm::HS256, &[7u8; 32])
        .unwrap()
        .verifying_key()
        .unwrap();
    let validation = Validation::new()
        .any_issuer()
        .any_audience()
        .allow_missing_exp();
    let _ = dangerous::decode_unverified_claims(token);
    // No fuzzer finds an HMAC-SHA256 under a key it never sees: a token
    // accepted here was accepted without the key (an empty or truncated
    // signature, `alg: none`, another algorithm...).
    if let Ok(verified) = jwt::verify::<serde_json::Value>(token, &key, &validation) {
        panic!(
            "accepted without the key: {token:?} ({:?})",
            verified.header.alg
        );
    }
});
