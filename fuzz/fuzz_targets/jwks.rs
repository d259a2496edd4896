//! Any string as a JWK set, turned into a verifying key set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_jose::{Algorithm, JwkSet, KeySet};

fuzz_target!(|text: &str| {
    if let Ok(set) = JwkSet::from_json(text) {
        if let Ok(keys) = KeySet::from_jwks_allowing(&set, &[Algorithm::RS256, Algorithm::HS256]) {
            let _ = keys.select(Some("k"), Algorithm::RS256);
            let _ = keys.select(None, Algorithm::ES256);
        }
        let _ = set.to_public().map(|public| public.to_json());
    }
});
