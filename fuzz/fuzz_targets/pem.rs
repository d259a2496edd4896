//! Any string as a PEM key, for every algorithm.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_jose::{Algorithm, SigningKey, VerifyingKey};

fuzz_target!(|text: &str| {
    for alg in Algorithm::all() {
        let _ = VerifyingKey::from_pem(alg, text);
        if let Ok(key) = SigningKey::from_pem(alg, text) {
            let _ = key.to_jwk();
        }
    }
});
