//! Known attacks on JWT libraries, each tried and required to fail with
//! the error that names it.

use serde_json::json;
use tessera_jose::jws::{self, Header, KeySource, Limits, VerifyOptions};
use tessera_jose::{
    b64, jwt, Algorithm, Claims, Error, Jwk, JwkSet, KeySet, SigningKey, Validation, VerifyingKey,
};

fn validation() -> Validation {
    Validation::new().issuer("https://issuer").audience("api")
}

fn claims() -> Claims {
    Claims::new()
        .issuer("https://issuer")
        .audience("api")
        .subject("alice")
        .valid_for(std::time::Duration::from_secs(600))
}

/// A compact token from raw header and payload JSON, MAC'd with `secret`
/// (for forging tokens the library itself would refuse to produce).
fn forge_hs256(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64::encode(tag.as_ref()))
}

fn code<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    result.expect_err("the attack succeeded").code()
}

/// The error code of verifying `token` as a JWT with the usual rules.
fn verify_code(token: &str, keys: &(impl KeySource + ?Sized)) -> &'static str {
    code(jwt::verify::<serde_json::Value>(token, keys, &validation()))
}

#[test]
fn alg_none_in_every_spelling_is_refused() {
    let key = SigningKey::generate(Algorithm::HS256)
        .unwrap()
        .verifying_key()
        .unwrap();
    let payload = b64::encode(r#"{"iss":"https://issuer","aud":"api","exp":9999999999}"#);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64::encode(format!(r#"{{"alg":"{alg}"}}"#));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.AAAA"),
        ] {
            let err = jwt::verify::<serde_json::Value>(&token, &key, &validation()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnsupportedAlgorithm { .. } | Error::Malformed { .. }
                ),
                "{alg}: {err}"
            );
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the attacker MACs a token with the server's
    // public key bytes and sets alg HS256.
    let rsa = SigningKey::generate(Algorithm::RS256).unwrap();
    let public = rsa.verifying_key().unwrap();
    let pem = public.to_public_pem().unwrap();
    let forged = forge_hs256(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        r#"{"iss":"https://issuer","aud":"api","sub":"admin","exp":9999999999}"#,
        pem.as_bytes(),
    );
    // With the RSA key: the key decides, HS256 is not RS256.
    assert_eq!(verify_code(&forged, &public), "ERR_ALG_MISMATCH");
    // Through a key set: no HS256 key exists in it.
    let set = KeySet::new(vec![public.clone()]).unwrap();
    assert_eq!(verify_code(&forged, &set), "ERR_NO_MATCHING_KEY");
    // And the PEM bytes cannot even be made into an HMAC key.
    assert_eq!(
        code(VerifyingKey::hmac(Algorithm::HS256, pem.as_bytes())),
        "ERR_INVALID_KEY"
    );
    // Nor the JWK text.
    let jwk = public.to_public_jwk().unwrap().to_json();
    assert_eq!(
        code(VerifyingKey::hmac(Algorithm::HS256, jwk.as_bytes())),
        "ERR_INVALID_KEY"
    );
}

#[test]
fn mixed_symmetric_and_asymmetric_key_sets_are_refused() {
    let ec = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .verifying_key()
        .unwrap();
    let hs = SigningKey::generate(Algorithm::HS256)
        .unwrap()
        .verifying_key()
        .unwrap();
    assert_eq!(
        code(KeySet::new(vec![ec.clone(), hs.clone()])),
        "ERR_MIXED_KEY_SET"
    );
    let token = jwt::sign(&claims(), &SigningKey::generate(Algorithm::HS256).unwrap()).unwrap();
    assert_eq!(
        code(jwt::verify::<serde_json::Value>(
            &token,
            &vec![ec, hs],
            &validation()
        )),
        "ERR_MIXED_KEY_SET"
    );
}

#[test]
fn embedded_jwk_jku_and_x5u_are_never_trusted() {
    // The attacker signs with their own key and points at it from the header.
    let server = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("server");
    let attacker = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("server");
    let attacker_jwk =
        serde_json::to_value(attacker.verifying_key().unwrap().to_public_jwk().unwrap()).unwrap();
    let header = Header::for_key(&attacker)
        .member("jwk", attacker_jwk)
        .member("jku", "https://attacker.example/jwks.json")
        .member("x5u", "https://attacker.example/cert.pem");
    let forged = jwt::sign_with_header(&header, &claims(), &attacker).unwrap();
    let keys = KeySet::new(vec![server.verifying_key().unwrap()]).unwrap();
    assert_eq!(verify_code(&forged, &keys), "ERR_INVALID_SIGNATURE");
}

#[test]
fn kid_pointing_at_another_key_finds_nothing() {
    let a = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("a");
    let b = SigningKey::generate(Algorithm::ES384)
        .unwrap()
        .with_kid("b");
    let keys = KeySet::new(vec![a.verifying_key().unwrap(), b.verifying_key().unwrap()]).unwrap();
    // A token signed by a, claiming b's kid: b is ES384, token ES256.
    let header = Header::for_key(&a).kid("b");
    let token = jwt::sign_with_header(&header, &claims(), &a).unwrap();
    assert_eq!(verify_code(&token, &keys), "ERR_NO_MATCHING_KEY");
    // Path-traversal or SQL-ish kids are just strings that match nothing.
    for kid in ["../../dev/null", "' OR 1=1 --", ""] {
        let token = jwt::sign_with_header(&Header::for_key(&a).kid(kid), &claims(), &a).unwrap();
        assert_eq!(verify_code(&token, &keys), "ERR_NO_MATCHING_KEY");
    }
}

#[test]
fn ambiguous_key_choice_is_refused() {
    let a = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("same");
    let b = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("same");
    let keys = KeySet::new(vec![a.verifying_key().unwrap(), b.verifying_key().unwrap()]).unwrap();
    let token = jwt::sign(&claims(), &a).unwrap();
    assert_eq!(verify_code(&token, &keys), "ERR_AMBIGUOUS_KEY");
    // No kid and two candidate keys: ambiguous too.
    let unnamed = jwt::sign_with_header(&Header::new(Algorithm::ES256), &claims(), &a).unwrap();
    assert_eq!(verify_code(&unnamed, &keys), "ERR_AMBIGUOUS_KEY");
}

/// A JWK set that lists one key twice, member for member (merged from two
/// sources during a rotation), has one key under that `kid`, not an
/// ambiguous choice; two different keys under one `kid` stay ambiguous.
#[test]
fn a_key_listed_twice_is_one_key() {
    let a = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("same");
    let b = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("same");
    let jwk = |k: &SigningKey| k.verifying_key().unwrap().to_public_jwk().unwrap();
    let twice = JwkSet::new(vec![jwk(&a), jwk(&a)]);
    let keys = KeySet::from_jwks(&twice).unwrap();
    assert_eq!(keys.keys().len(), 1);
    let token = jwt::sign(&claims(), &a).unwrap();
    jwt::verify::<serde_json::Value>(&token, &keys, &validation()).unwrap();
    let two = JwkSet::new(vec![jwk(&a), jwk(&b), jwk(&a)]);
    let keys = KeySet::from_jwks(&two).unwrap();
    assert_eq!(keys.keys().len(), 2);
    assert_eq!(verify_code(&token, &keys), "ERR_AMBIGUOUS_KEY");
}

/// An Ed25519 key listed under both its names (`EdDSA` and RFC 9864's
/// `Ed25519`, as a publisher moving to the new name may) is one key: it
/// verifies tokens under either name. Before, the two listings counted as
/// two keys, and every token of that `kid` was refused as ambiguous. A
/// skipped key under the same `kid` that names either still makes the
/// choice ambiguous for tokens under both names.
#[test]
fn an_ed25519_key_under_both_names_is_one_key() {
    let key = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_kid("ed");
    let eddsa = key.verifying_key().unwrap().to_public_jwk().unwrap();
    let mut ed25519 = eddsa.clone();
    ed25519.alg = Some("Ed25519".into());
    let renamed = SigningKey::from_der(
        Algorithm::Ed25519,
        tessera_jose::PemKind::PrivateKey,
        key.to_pkcs8_der().unwrap().expose(),
    )
    .unwrap()
    .with_kid("ed");
    let tokens = [
        jwt::sign(&claims(), &key).unwrap(),
        jwt::sign(&claims(), &renamed).unwrap(),
    ];
    for listed in [
        vec![eddsa.clone(), ed25519.clone()],
        vec![ed25519.clone(), eddsa.clone()],
    ] {
        let keys = KeySet::from_jwks(&JwkSet::new(listed)).unwrap();
        for token in &tokens {
            jwt::verify::<serde_json::Value>(token, &keys, &validation()).unwrap();
        }
    }
    for name in ["EdDSA", "Ed25519"] {
        let mut broken = serde_json::to_value(&eddsa).unwrap();
        broken["alg"] = json!(name);
        broken["x"] = json!("AAAA");
        let doc = json!({ "keys": [serde_json::to_value(&eddsa).unwrap(), broken] });
        let keys = KeySet::from_jwks(&JwkSet::from_json(&doc.to_string()).unwrap()).unwrap();
        assert_eq!(keys.skipped().len(), 1, "{name}");
        for token in &tokens {
            assert_eq!(verify_code(token, &keys), "ERR_AMBIGUOUS_KEY", "{name}");
        }
    }
}

#[test]
fn tampering_with_any_segment_is_caught() {
    for alg in Algorithm::all() {
        let key = SigningKey::generate(alg).unwrap();
        let vk = key.verifying_key().unwrap();
        let token = jwt::sign(&claims(), &key).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let evil_payload =
            b64::encode(r#"{"iss":"https://issuer","aud":"api","sub":"admin","exp":9999999999}"#);
        let swapped = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
        assert_eq!(verify_code(&swapped, &vk), "ERR_INVALID_SIGNATURE", "{alg}");
        let stripped = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(verify_code(&stripped, &vk), "ERR_MALFORMED", "{alg}");
        let truncated = &token[..token.len() - 4];
        assert!(
            jwt::verify::<serde_json::Value>(truncated, &vk, &validation()).is_err(),
            "{alg}"
        );
    }
}

#[test]
fn non_canonical_base64_in_any_segment_is_refused() {
    let secret = [9u8; 32];
    let key = VerifyingKey::hmac(Algorithm::HS256, &secret).unwrap();
    // "AB" decodes leniently to the byte "AB" would: trailing bits set.
    let header = b64::encode(r#"{"alg":"HS256"}"#);
    let input = format!("{header}.AB");
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        input.as_bytes(),
    );
    let token = format!("{input}.{}", b64::encode(mac.as_ref()));
    assert_eq!(
        code(jws::verify(&token, &key, &VerifyOptions::new())),
        "ERR_BASE64"
    );
    let good = forge_hs256(r#"{"alg":"HS256"}"#, r#"{"a":1}"#, &secret);
    jws::verify(&good, &key, &VerifyOptions::new()).unwrap();
    for (from, to) in [("-", "+"), ("_", "/")] {
        if good.contains(from) {
            assert_eq!(
                code(jws::verify(
                    &good.replacen(from, to, 1),
                    &key,
                    &VerifyOptions::new()
                )),
                "ERR_BASE64"
            );
        }
    }
    assert_eq!(
        code(jws::verify(
            &format!("{good}="),
            &key,
            &VerifyOptions::new()
        )),
        "ERR_BASE64"
    );
    assert_eq!(
        code(jws::verify(
            &good.replacen('.', " .", 1),
            &key,
            &VerifyOptions::new()
        )),
        "ERR_BASE64"
    );
}

#[test]
fn duplicate_claims_cannot_smuggle_a_second_value() {
    // Parser differential: one library reads the first "exp", another the last.
    let secret = [3u8; 32];
    let key = VerifyingKey::hmac(Algorithm::HS256, &secret).unwrap();
    let token = forge_hs256(
        r#"{"alg":"HS256"}"#,
        r#"{"iss":"https://issuer","aud":"api","exp":1,"exp":9999999999}"#,
        &secret,
    );
    assert_eq!(verify_code(&token, &key), "ERR_DUPLICATE_MEMBER");
    let token = forge_hs256(
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"exp":9999999999}"#,
        &secret,
    );
    assert_eq!(verify_code(&token, &key), "ERR_DUPLICATE_MEMBER");
    let nested = forge_hs256(
        r#"{"alg":"HS256"}"#,
        r#"{"iss":"https://issuer","aud":"api","exp":9999999999,"roles":{"admin":false,"admin":true}}"#,
        &secret,
    );
    assert_eq!(verify_code(&nested, &key), "ERR_DUPLICATE_MEMBER");
}

#[test]
fn resource_exhaustion_is_bounded() {
    let secret = [4u8; 32];
    let key = VerifyingKey::hmac(Algorithm::HS256, &secret).unwrap();
    let huge = "A".repeat(20_000);
    assert_eq!(
        code(jws::verify(
            &format!("{huge}.{huge}.{huge}"),
            &key,
            &VerifyOptions::new()
        )),
        "ERR_TOKEN_TOO_LARGE"
    );
    let deep = format!(
        r#"{{"iss":"https://issuer","aud":"api","exp":9999999999,"x":{}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let token = forge_hs256(r#"{"alg":"HS256"}"#, &deep, &secret);
    assert_eq!(verify_code(&token, &key), "ERR_TOO_DEEP");
    // Limits are configurable, and checked before decoding.
    let small = validation().limits(Limits::default().max_payload_len(16));
    let ok = jwt::sign(
        &claims(),
        &SigningKey::hmac(Algorithm::HS256, &secret).unwrap(),
    )
    .unwrap();
    assert_eq!(
        code(jwt::verify::<serde_json::Value>(&ok, &key, &small)),
        "ERR_TOKEN_TOO_LARGE"
    );
    // A signature longer than any algorithm's (RSA-8192: 1,024 bytes) is
    // refused before it is decoded.
    let (input, _) = ok.rsplit_once('.').unwrap();
    for len in [1_025, 4_000] {
        let long = format!("{input}.{}", b64::encode(vec![7u8; len]));
        assert_eq!(
            code(jwt::verify::<serde_json::Value>(&long, &key, &validation())),
            "ERR_BASE64",
            "{len}"
        );
    }
    // Many dots, or none.
    for shape in ["a.b.c.d", "abc", "a.b", "..", "...", ""] {
        assert_eq!(
            code(jws::verify(shape, &key, &VerifyOptions::new())),
            "ERR_MALFORMED",
            "{shape:?}"
        );
    }
}

#[test]
fn unknown_critical_extensions_are_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let header = Header::for_key(&key)
        .member("https://example/ext", true)
        .crit(["https://example/ext"]);
    let token = jwt::sign_with_header(&header, &claims(), &key).unwrap();
    let vk = key.verifying_key().unwrap();
    assert_eq!(verify_code(&token, &vk), "ERR_UNKNOWN_CRIT");
    // Declared as understood, it passes.
    jwt::verify::<serde_json::Value>(&token, &vk, &validation().critical(["https://example/ext"]))
        .unwrap();
}

#[test]
fn allow_list_is_checked_before_the_key() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let token = jwt::sign(&claims(), &key).unwrap();
    let only_eddsa = validation().algorithms([Algorithm::EdDSA]);
    let err = jwt::verify::<serde_json::Value>(&token, &key.verifying_key().unwrap(), &only_eddsa)
        .unwrap_err();
    assert_eq!(err.code(), "ERR_ALG_NOT_ALLOWED");
    assert_eq!(
        err.to_string(),
        "algorithm ES256 is not allowed (allowed: EdDSA)"
    );
}

#[test]
fn signature_failure_says_nothing_more() {
    let key = SigningKey::generate(Algorithm::HS256).unwrap();
    let other = SigningKey::generate(Algorithm::HS256)
        .unwrap()
        .verifying_key()
        .unwrap();
    let token = jwt::sign(&claims(), &key).unwrap();
    let err = jwt::verify::<serde_json::Value>(&token, &other, &validation()).unwrap_err();
    assert!(matches!(err, Error::InvalidSignature));
    assert_eq!(err.to_string(), "invalid signature");
}

#[test]
fn weak_keys_are_refused_wherever_they_come_from() {
    assert_eq!(
        code(SigningKey::hmac(Algorithm::HS512, &[1u8; 63])),
        "ERR_WEAK_KEY"
    );
    assert_eq!(
        code(SigningKey::hmac(Algorithm::HS256, &[])),
        "ERR_WEAK_KEY"
    );
    let short =
        JwkSet::from_json(&json!({"keys":[{"kty":"oct","alg":"HS256","k":"c2hvcnQ"}]}).to_string())
            .unwrap();
    let set = KeySet::from_jwks(&short).unwrap();
    assert!(set.keys().is_empty());
    assert!(
        set.skipped()[0].reason.contains("at least 32 bytes"),
        "{:?}",
        set.skipped()
    );
}

#[test]
fn jwks_with_unsupported_keys_still_loads_the_rest() {
    let ec = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("good");
    let good = serde_json::to_value(ec.verifying_key().unwrap().to_public_jwk().unwrap()).unwrap();
    let doc = json!({"keys": [
        {"kty": "OKP", "crv": "X25519", "kid": "kex", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
        {"kty": "FOO", "kid": "future"},
        "not an object",
        {"kty": "RSA", "kid": "rsa-no-alg", "n": "AQAB", "e": "AQAB"},
        good,
    ]});
    let jwks = JwkSet::from_json(&doc.to_string()).unwrap();
    assert_eq!(jwks.keys.len(), 3);
    assert_eq!(jwks.skipped().len(), 2);
    let set = KeySet::from_jwks(&jwks).unwrap();
    assert_eq!(set.keys().len(), 1);
    assert_eq!(set.skipped().len(), 4, "{:?}", set.skipped());
    let kids: Vec<_> = set
        .skipped()
        .iter()
        .map(|s| s.kid.clone().unwrap_or_default())
        .collect();
    assert_eq!(kids, ["future", "", "kex", "rsa-no-alg"]);
    let token = jwt::sign(&claims(), &ec).unwrap();
    jwt::verify::<serde_json::Value>(&token, &set, &validation()).unwrap();
    // The document itself must be sound.
    assert_eq!(
        code(JwkSet::from_json(r#"{"keys":[],"keys":[]}"#)),
        "ERR_DUPLICATE_MEMBER"
    );
    assert_eq!(code(JwkSet::from_json(r#"{"keys":{}}"#)), "ERR_INVALID_KEY");
}

/// A key published under a signing key's `kid` makes the choice
/// ambiguous when it could have signed too (the token must not be
/// verified by whichever came first), but an encryption key under the
/// same `kid` could not have: it no longer blocks every token of that
/// `kid` (with `AmbiguousKey`, which refetching never mended).
#[test]
fn a_skipped_key_under_the_same_kid_blocks_it_only_if_it_could_have_signed() {
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("k1");
    let signing =
        serde_json::to_value(rsa.verifying_key().unwrap().to_public_jwk().unwrap()).unwrap();
    let token = jwt::sign(&claims(), &rsa).unwrap();
    let twin = |extra: serde_json::Value| {
        let mut twin = signing.clone();
        let twin_map = twin.as_object_mut().unwrap();
        twin_map.remove("alg");
        twin_map.remove("use");
        for (k, v) in extra.as_object().unwrap() {
            twin_map.insert(k.clone(), v.clone());
        }
        let doc = json!({ "keys": [signing.clone(), twin] });
        KeySet::from_jwks(&JwkSet::from_json(&doc.to_string()).unwrap()).unwrap()
    };
    for not_for_signatures in [
        json!({ "use": "enc" }),
        json!({ "use": "enc", "alg": "RSA-OAEP-256" }),
        json!({ "key_ops": ["encrypt", "wrapKey"] }),
    ] {
        let keys = twin(not_for_signatures.clone());
        assert_eq!(keys.skipped().len(), 1, "{not_for_signatures}");
        jwt::verify::<serde_json::Value>(&token, &keys, &validation())
            .unwrap_or_else(|e| panic!("{not_for_signatures}: {e}"));
    }
    for could_have_signed in [
        json!({}),
        json!({ "use": "sig" }),
        json!({ "key_ops": ["verify"] }),
    ] {
        let keys = twin(could_have_signed.clone());
        assert_eq!(
            verify_code(&token, &keys),
            "ERR_AMBIGUOUS_KEY",
            "{could_have_signed}"
        );
    }
}

#[test]
fn keys_without_alg_serve_only_the_callers_allow_list() {
    // Azure-style JWKS: RSA keys without "alg".
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("r1");
    let mut jwk = rsa.verifying_key().unwrap().to_public_jwk().unwrap();
    jwk.alg = None;
    let set = JwkSet::new(vec![jwk]);
    // Without an allow-list the key is not guessed into use.
    let none = KeySet::from_jwks(&set).unwrap();
    assert!(none.keys().is_empty());
    assert!(
        none.skipped()[0].reason.contains("without \"alg\""),
        "{:?}",
        none.skipped()
    );
    // With one, each allowed RSA algorithm gets the key; others do not.
    let keys = KeySet::from_jwks_allowing(
        &set,
        &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256],
    )
    .unwrap();
    assert_eq!(keys.keys().len(), 2);
    let token = jwt::sign(&claims(), &rsa).unwrap();
    jwt::verify::<serde_json::Value>(&token, &keys, &validation()).unwrap();
    let pss = SigningKey::from_der(
        Algorithm::PS256,
        tessera_jose::PemKind::PrivateKey,
        rsa.to_pkcs8_der().unwrap().expose(),
    )
    .unwrap()
    .with_kid("r1");
    jwt::verify::<serde_json::Value>(&jwt::sign(&claims(), &pss).unwrap(), &keys, &validation())
        .unwrap();
    let rs512 = SigningKey::from_der(
        Algorithm::RS512,
        tessera_jose::PemKind::PrivateKey,
        rsa.to_pkcs8_der().unwrap().expose(),
    )
    .unwrap()
    .with_kid("r1");
    assert_eq!(
        verify_code(&jwt::sign(&claims(), &rs512).unwrap(), &keys),
        "ERR_NO_MATCHING_KEY"
    );
}

#[test]
fn header_size_is_bounded_before_decoding() {
    let key = SigningKey::generate(Algorithm::HS256).unwrap();
    let vk = key.verifying_key().unwrap();
    let big = Header::for_key(&key).member("x5c", vec!["A".repeat(2000); 3]);
    let token = jwt::sign_with_header(&big, &claims(), &key).unwrap();
    // Fits the default limits (x5c chains are legitimately large)...
    jwt::verify::<serde_json::Value>(&token, &vk, &validation()).unwrap();
    // ...and a tighter header limit refuses it, naming the part.
    let tight = validation().limits(Limits::default().max_header_len(1024));
    let err = jwt::verify::<serde_json::Value>(&token, &vk, &tight).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PartTooLarge {
                input: tessera_jose::Input::Header,
                max: 1024,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_secret_without_alg_serves_the_hmac_sizes_it_is_long_enough_for() {
    // A 32-byte secret published without "alg", loaded for every HMAC
    // size: too short for HS384 and HS512, which must not make it an
    // ambiguous key for the HS256 tokens it signs.
    let key = SigningKey::generate(Algorithm::HS256)
        .unwrap()
        .with_kid("k");
    let mut jwk = key.to_jwk().unwrap();
    jwk.alg = None;
    let set = JwkSet::new(vec![jwk]);
    let keys = KeySet::from_jwks_allowing(
        &set,
        &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    )
    .unwrap();
    assert_eq!(keys.keys().len(), 1);
    assert_eq!(keys.skipped().len(), 2, "{:?}", keys.skipped());
    jwt::verify::<serde_json::Value>(&jwt::sign(&claims(), &key).unwrap(), &keys, &validation())
        .unwrap();
}

#[test]
fn a_published_rsa_key_with_primes_but_no_d_is_refused_as_private() {
    // Either prime factors the modulus: a set publishing `p` (or any CRT
    // value) without `d` publishes the private key all the same.
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("r1");
    let private = rsa.to_jwk().unwrap();
    for member in ["p", "q", "dp", "dq", "qi"] {
        let mut value: serde_json::Value = serde_json::from_str(&private.to_json()).unwrap();
        let object = value.as_object_mut().unwrap();
        let kept = object.remove(member).unwrap();
        for other in ["d", "p", "q", "dp", "dq", "qi"] {
            object.remove(other);
        }
        object.insert(member.to_owned(), kept);
        let jwk = Jwk::from_json(&value.to_string()).unwrap();
        assert!(jwk.is_private(), "{member}");
        let set = JwkSet::new(vec![jwk]);
        assert_eq!(code(set.check_published()), "ERR_INVALID_KEY", "{member}");
    }
    let public = rsa.verifying_key().unwrap().to_public_jwk().unwrap();
    assert!(!public.is_private());
    JwkSet::new(vec![public]).check_published().unwrap();
}

/// A private key the set could not read (a malformed member beside its
/// primes, padded base64, a kind of key not supported) is published all
/// the same: the set is refused whole, as for one that parsed.
#[test]
fn a_published_secret_that_could_not_be_read_is_refused_too() {
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("r1");
    let public = rsa.verifying_key().unwrap().to_public_jwk().unwrap();
    let public: serde_json::Value = serde_json::from_str(&public.to_json()).unwrap();
    let mut private: serde_json::Value =
        serde_json::from_str(&rsa.to_jwk().unwrap().to_json()).unwrap();
    private["kid"] = json!("r1-private");
    private["x5c"] = json!("MIIC");
    let oct = json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0cw=="});
    let unknown = json!({"kty": "X448", "d": "AAAA", "x": "AAAA"});
    for secret in [private, oct, unknown] {
        let text = json!({"keys": [public.clone(), secret.clone()]}).to_string();
        let set = JwkSet::from_json(&text).unwrap();
        assert_eq!(set.keys.len(), 1, "{secret}");
        assert_eq!(set.skipped().len(), 1, "{secret}");
        assert_eq!(code(set.check_published()), "ERR_INVALID_KEY", "{secret}");
    }
    // A public key that could not be read is only skipped.
    let odd = json!({"kty": "RSA", "kid": "r2", "n": "AQAB", "e": "AQAB=="});
    let set = JwkSet::from_json(&json!({"keys": [public, odd]}).to_string()).unwrap();
    assert_eq!(set.skipped().len(), 1);
    set.check_published().unwrap();
}

/// A multi-prime RSA key (`oth`) is refused, not read with its other
/// primes kept as unknown members (copied with the key, never wiped).
#[test]
fn a_multi_prime_rsa_key_is_refused() {
    let rsa = SigningKey::generate(Algorithm::RS256).unwrap();
    let mut value: serde_json::Value =
        serde_json::from_str(&rsa.to_jwk().unwrap().to_json()).unwrap();
    value["oth"] = json!([{"r": "AQAB", "d": "AQAB", "t": "AQAB"}]);
    let refused = Jwk::from_json(&value.to_string());
    assert_eq!(code(refused.map(|_| ())), "ERR_UNSUPPORTED_KEY");
}

/// A token's `Debug` output shows its header, never the token: it is a
/// bearer credential, and `{:?}` ends up in logs.
#[test]
fn an_unverified_tokens_debug_output_holds_no_token() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let token = jwt::sign(&claims(), &key).unwrap();
    let unverified = jws::Unverified::parse(&token, &Limits::default()).unwrap();
    let shown = format!("{unverified:?}");
    for segment in token.split('.').skip(1) {
        assert!(!shown.contains(segment), "{shown}");
    }
    assert!(shown.contains("ES256"), "{shown}");
}

/// A private JWK's text (and a set's) is written into a buffer of its
/// exact size: a buffer grown as the text is written leaves each smaller
/// copy of the secrets behind in freed memory.
#[test]
fn a_private_jwks_text_is_written_once_at_its_size() {
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("r1");
    let jwk = rsa.to_jwk().unwrap();
    let set = JwkSet::new(vec![jwk.clone(), jwk.clone()]);
    for text in [
        jwk.to_json(),
        jwk.to_json_pretty(),
        set.to_json(),
        set.to_json_pretty(),
    ] {
        assert_eq!(text.capacity(), text.len());
        assert!(text.contains("\"d\""), "{text}");
    }
    assert_eq!(Jwk::from_json(&jwk.to_json()).unwrap(), jwk);
    assert_eq!(JwkSet::from_json(&set.to_json()).unwrap(), set);
}
