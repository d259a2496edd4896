//! Any string as a JWK: parsing, key conversion and re-serialization.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_jose::Jwk;

fuzz_target!(|text: &str| {
    if let Ok(jwk) = Jwk::from_json(text) {
        let _ = jwk.thumbprint();
        let _ = jwk.to_verifying_key();
        let _ = jwk.to_signing_key();
        // What we write, we read back unchanged.
        assert_eq!(Jwk::from_json(&jwk.to_json()).unwrap(), jwk);
    }
});
