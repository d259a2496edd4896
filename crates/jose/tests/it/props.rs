//! Property tests: sign/verify round trips for every algorithm, and no
//! single-character change to a token survives verification.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;
use tessera_jose::{jwt, Algorithm, Claims, NumericDate, SigningKey, Validation};

fn keys() -> &'static Vec<SigningKey> {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        Algorithm::all()
            .map(|alg| SigningKey::generate(alg).unwrap())
            .collect()
    })
}

fn validation() -> Validation {
    Validation::new().issuer("iss").any_audience()
}

fn claims(sub: String, extra: BTreeMap<String, String>) -> Claims<BTreeMap<String, String>> {
    Claims::with_custom(extra)
        .issuer("iss")
        .subject(sub)
        .expires_at(NumericDate::now().plus(std::time::Duration::from_secs(600)))
}

// Custom member names that cannot collide with registered claims.
fn extra_claims() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("x_[a-z0-9]{1,8}", any::<String>(), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(alg in 0usize..Algorithm::all().count(), sub in any::<String>(), extra in extra_claims()) {
        let key = &keys()[alg];
        let claims = claims(sub, extra);
        let token = jwt::sign(&claims, key).unwrap();
        let vk = key.verifying_key().unwrap();
        let got = jwt::verify::<BTreeMap<String, Value>>(&token, &vk, &validation()).unwrap();
        prop_assert_eq!(got.claims.sub, claims.sub);
        for (name, value) in &claims.custom {
            prop_assert_eq!(got.claims.custom.get(name), Some(&Value::String(value.clone())));
        }
        prop_assert_eq!(got.header.alg, key.algorithm());
    }

    #[test]
    fn any_single_change_is_refused(alg in 0usize..Algorithm::all().count(), at in any::<prop::sample::Index>(), to in "[A-Za-z0-9_.=+/ -]") {
        let key = &keys()[alg];
        let token = jwt::sign(&claims("alice".into(), BTreeMap::new()), key).unwrap();
        let i = at.index(token.len());
        let replacement = to.chars().next().unwrap();
        prop_assume!(token.as_bytes()[i] as char != replacement);
        let mut tampered = token.clone();
        tampered.replace_range(i..=i, &replacement.to_string());
        let vk = key.verifying_key().unwrap();
        prop_assert!(jwt::verify::<Value>(&tampered, &vk, &validation()).is_err());
    }
}
