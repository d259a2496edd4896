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
    if let Ok(verified) = jwt::verify::<serde_json::Value>(token, &key, &validation) {
        // Only a token MAC'd with the key can get here: re-verify it.
        assert!(jwt::verify::<serde_json::Value>(token, &key, &validation).is_ok());
        assert_eq!(verified.header.alg, Algorithm::HS256);
    }
});
