//! Project Wycheproof: primitive signature vectors through our keys, and
//! the whole-JWS and keyset vectors through our verification pipeline.

use std::path::Path;

use serde_json::Value;
use tessera_jose::jws::{self, VerifyOptions};
use tessera_jose::{Algorithm, Error, Jwk, JwkSet, KeySet, PemKind, VerifyingKey};

use crate::vectors::{self, Tally};

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn groups(doc: &Value) -> &Vec<Value> {
    doc["testGroups"].as_array().expect("testGroups")
}

fn tests(group: &Value) -> &Vec<Value> {
    group["tests"].as_array().expect("tests")
}

/// Record one outcome against the vector's expectation.
fn expect(file: &str, test: &Value, accepted: bool, tally: &mut Tally) {
    let id = &test["tcId"];
    match test["result"].as_str() {
        Some("valid") => {
            assert!(
                accepted,
                "{file} tcId {id} ({}) is valid but was rejected",
                test["comment"]
            );
            tally.valid += 1;
        }
        Some("invalid") => {
            assert!(
                !accepted,
                "{file} tcId {id} ({}) is invalid but was accepted",
                test["comment"]
            );
            tally.invalid += 1;
        }
        Some("acceptable") => tally.acceptable += 1,
        other => panic!("{file} tcId {id}: unknown result {other:?}"),
    }
}

/// Signature vectors verified with a key read from the group's SPKI DER,
/// and, where the group has one, also with the key read from its JWK.
fn run_signature_file(dir: &Path, file: &str, alg: Algorithm) {
    let doc = vectors::load(dir, file);
    let mut tally = Tally::default();
    for group in groups(&doc) {
        let der = hex(&group["publicKeyDer"]);
        let key = VerifyingKey::from_der(alg, PemKind::PublicKey, &der)
            .unwrap_or_else(|e| panic!("{file}: key rejected: {e}"));
        let jwk_key = group
            .get("publicKeyJwk")
            .or_else(|| group.get("keyJwk"))
            .map(|jwk| {
                let mut jwk = Jwk::from_map(jwk.as_object().unwrap().clone()).unwrap();
                jwk.alg = None;
                jwk.to_verifying_key_for(alg).unwrap()
            });
        for test in tests(group) {
            let msg = hex(&test["msg"]);
            let sig = hex(&test["sig"]);
            let accepted = key.verify(&msg, &sig).is_ok();
            if let Some(jwk_key) = &jwk_key {
                assert_eq!(
                    jwk_key.verify(&msg, &sig).is_ok(),
                    accepted,
                    "{file} {}",
                    test["tcId"]
                );
            }
            expect(file, test, accepted, &mut tally);
        }
    }
    tally.finish(file, &doc);
}

#[test]
fn ecdsa_p1363() {
    let Some(dir) = vectors::dir() else { return };
    for (file, alg) in [
        (
            "wycheproof/ecdsa_secp256r1_sha256_p1363_test.json",
            Algorithm::ES256,
        ),
        (
            "wycheproof/ecdsa_secp384r1_sha384_p1363_test.json",
            Algorithm::ES384,
        ),
        (
            "wycheproof/ecdsa_secp521r1_sha512_p1363_test.json",
            Algorithm::ES512,
        ),
    ] {
        run_signature_file(&dir, file, alg);
    }
}

#[test]
fn ed25519() {
    let Some(dir) = vectors::dir() else { return };
    run_signature_file(&dir, "wycheproof/ed25519_test.json", Algorithm::EdDSA);
}

#[test]
fn rsa_pkcs1_v15() {
    let Some(dir) = vectors::dir() else { return };
    for (file, alg) in [
        (
            "wycheproof/rsa_signature_2048_sha256_test.json",
            Algorithm::RS256,
        ),
        (
            "wycheproof/rsa_signature_2048_sha384_test.json",
            Algorithm::RS384,
        ),
        (
            "wycheproof/rsa_signature_2048_sha512_test.json",
            Algorithm::RS512,
        ),
        (
            "wycheproof/rsa_signature_3072_sha384_test.json",
            Algorithm::RS384,
        ),
        (
            "wycheproof/rsa_signature_4096_sha512_test.json",
            Algorithm::RS512,
        ),
    ] {
        run_signature_file(&dir, file, alg);
    }
}

#[test]
fn rsa_pss() {
    let Some(dir) = vectors::dir() else { return };
    for (file, alg, sha, salt) in [
        (
            "wycheproof/rsa_pss_2048_sha256_mgf1_32_test.json",
            Algorithm::PS256,
            "SHA-256",
            32,
        ),
        (
            "wycheproof/rsa_pss_2048_sha384_mgf1_48_test.json",
            Algorithm::PS384,
            "SHA-384",
            48,
        ),
        (
            "wycheproof/rsa_pss_4096_sha512_mgf1_64_test.json",
            Algorithm::PS512,
            "SHA-512",
            64,
        ),
    ] {
        let doc = vectors::load(&dir, file);
        for group in groups(&doc) {
            // JWS fixes the PSS profile: MGF1 with the same hash, salt = hash size.
            assert_eq!(group["sha"], sha, "{file}");
            assert_eq!(group["mgfSha"], sha, "{file}");
            assert_eq!(group["sLen"], salt, "{file}");
        }
        run_signature_file(&dir, file, alg);
    }
}

#[test]
fn hmac() {
    let Some(dir) = vectors::dir() else { return };
    for (file, alg, bits) in [
        ("wycheproof/hmac_sha256_test.json", Algorithm::HS256, 256),
        ("wycheproof/hmac_sha384_test.json", Algorithm::HS384, 384),
        ("wycheproof/hmac_sha512_test.json", Algorithm::HS512, 512),
    ] {
        let doc = vectors::load(&dir, file);
        let mut tally = Tally::default();
        for group in groups(&doc) {
            let key_bits = group["keySize"].as_u64().unwrap();
            let tag_bits = group["tagSize"].as_u64().unwrap();
            for test in tests(group) {
                let key = hex(&test["key"]);
                let msg = hex(&test["msg"]);
                let tag = hex(&test["tag"]);
                let made = VerifyingKey::hmac(alg, &key);
                if key_bits < bits {
                    // RFC 7518 §3.2: such keys must not be used for JWS.
                    assert!(
                        matches!(made, Err(Error::WeakKey { .. })),
                        "{file} {}",
                        test["tcId"]
                    );
                    tally.not_applicable += 1;
                } else if tag_bits < bits {
                    // JWS uses the whole tag: a truncated one must never verify.
                    assert!(
                        made.unwrap().verify(&msg, &tag).is_err(),
                        "{file} {}",
                        test["tcId"]
                    );
                    tally.not_applicable += 1;
                } else {
                    expect(
                        file,
                        test,
                        made.unwrap().verify(&msg, &tag).is_ok(),
                        &mut tally,
                    );
                }
            }
        }
        assert!(tally.valid > 0 && tally.invalid > 0, "{file}: {tally:?}");
        tally.finish(file, &doc);
    }
}

/// Vectors where our outcome differs from the file's, each with the
/// outcome that must come back instead and why. `"accepted"` marks vectors
/// whose token is byte-identical to one the same file calls valid.
const JWS_DEVIATIONS: [(u64, &str, &str); 8] = [
    (346, "ERR_NO_MATCHING_KEY", "the JWK says alg PS256; a PS384 token must not use it (DESIGN.md: the key decides the algorithm)"),
    (350, "ERR_NO_MATCHING_KEY", "the JWK says alg PS256; a PS384 token must not use it (DESIGN.md: the key decides the algorithm)"),
    (347, "ERR_NO_MATCHING_KEY", "the JWK says alg \"ES521\", which is no algorithm: the key is unusable"),
    (351, "ERR_NO_MATCHING_KEY", "the JWK says alg \"ES521\", which is no algorithm: the key is unusable"),
    (372, "ERR_BASE64", "'?' inside a base64url segment: strict base64url refuses it"),
    (373, "ERR_INVALID_SIGNATURE", "'?' inside the payload segment: the MAC is checked over the bytes received, before the payload is decoded, and fails"),
    (367, "accepted", "the token is byte-identical to tcId 357 (valid); the padding it is named for is not in the file"),
    (370, "accepted", "the token is byte-identical to tcId 357 (valid); the padding it is named for is not in the file"),
];

/// A group's keys as a verifying key set: `public` if given, else
/// `private` (HMAC); a single JWK or `{"keys": [...]}`.
fn group_keys(group: &Value) -> Result<KeySet, Error> {
    let keys = group.get("public").unwrap_or(&group["private"]);
    let set = if keys.get("keys").is_some() {
        keys.clone()
    } else {
        serde_json::json!({ "keys": [keys] })
    };
    KeySet::from_jwks(&JwkSet::from_json(&set.to_string())?)
}

fn tokens_by_id(doc: &Value, id: u64) -> &str {
    groups(doc)
        .iter()
        .flat_map(tests)
        .find(|t| t["tcId"] == id)
        .and_then(|t| t["jws"].as_str())
        .expect("tcId present")
}

fn run_jws_file(dir: &Path, file: &str, deviations: &[(u64, &str, &str)]) {
    let doc = vectors::load(dir, file);
    let mut tally = Tally::default();
    for group in groups(&doc) {
        let keys = group_keys(group);
        for test in tests(group) {
            let token = test["jws"].as_str().unwrap();
            let outcome = match &keys {
                Ok(keys) => jws::verify(token, keys, &VerifyOptions::new()).map(|_| ()),
                Err(e) => Err(Error::InvalidKey {
                    reason: e.to_string(),
                }),
            };
            let id = test["tcId"].as_u64().unwrap();
            if let Some((_, code, why)) = deviations.iter().find(|(tc, _, _)| *tc == id) {
                if *code == "accepted" {
                    assert_eq!(token, tokens_by_id(&doc, 357), "{file} tcId {id}");
                    outcome.unwrap_or_else(|e| panic!("{file} tcId {id}: {e}"));
                } else {
                    let err = outcome.expect_err("a documented deviation was accepted");
                    assert_eq!(err.code(), *code, "{file} tcId {id}: {err}");
                }
                let outcome = if *code == "accepted" {
                    "accepted"
                } else {
                    "rejected"
                };
                println!(
                    "{file} tcId {id}: marked {}, {outcome} by design: {why}",
                    test["result"]
                );
                tally.deviations += 1;
                continue;
            }
            expect(file, test, outcome.is_ok(), &mut tally);
        }
    }
    tally.finish(file, &doc);
}

#[test]
fn json_web_signature() {
    let Some(dir) = vectors::dir() else { return };
    run_jws_file(
        &dir,
        "wycheproof/json_web_signature_test.json",
        &JWS_DEVIATIONS,
    );
}

#[test]
fn json_web_key() {
    let Some(dir) = vectors::dir() else { return };
    run_jws_file(&dir, "wycheproof/json_web_key_test.json", &[]);
}
