//! RFC 7515 Appendix A, RFC 8037, RFC 7638 and the RFC 7520 cookbook.

use std::path::Path;

use serde_json::Value;
use tessera_jose::jws::{self, VerifyOptions};
use tessera_jose::{b64, jwt, Algorithm, Error, FixedClock, Jwk, NumericDate, Validation};

use crate::vectors;

fn jwk_of(value: &Value) -> Jwk {
    Jwk::from_json(&value.to_string()).unwrap()
}

#[test]
fn rfc_examples_verify_and_none_does_not() {
    let Some(dir) = vectors::dir() else { return };
    let doc = vectors::load(&dir, "rfc-examples.json");
    let mut ran = 0;
    for example in doc["examples"].as_array().unwrap() {
        let id = example["id"].as_str().unwrap();
        let token = example["jws_compact"].as_str().unwrap();
        let must_verify = example["must_verify"].as_bool().unwrap();
        let outcome = match Algorithm::from_name(example["alg"].as_str().unwrap()) {
            Ok(alg) => {
                let key = jwk_of(&example["jwk"]).to_verifying_key_for(alg).unwrap();
                jws::verify(token, &key, &VerifyOptions::new()).map(|v| v.payload().to_vec())
            }
            Err(e) => Err(e),
        };
        if must_verify {
            let payload = outcome.unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(
                payload,
                example["payload_utf8"].as_str().unwrap().as_bytes(),
                "{id}"
            );
        } else {
            // RFC 7515 A.5 (alg none): must be refused, with a clear reason.
            let err = outcome.expect_err(id);
            assert!(
                matches!(
                    err,
                    Error::UnsupportedAlgorithm { .. } | Error::Malformed { .. }
                ),
                "{id}: {err}"
            );
        }
        ran += 1;
    }
    println!("rfc-examples.json: ran {ran} JWS examples");
    assert_eq!(ran, 6);
}

#[test]
fn rfc7515_a1_as_a_jwt_with_a_pinned_clock() {
    let Some(dir) = vectors::dir() else { return };
    let doc = vectors::load(&dir, "rfc-examples.json");
    let a1 = &doc["examples"][0];
    assert_eq!(a1["id"], "rfc7515-A.1");
    let key = jwk_of(&a1["jwk"])
        .to_verifying_key_for(Algorithm::HS256)
        .unwrap();
    let token = a1["jws_compact"].as_str().unwrap();
    let clock = FixedClock::new(NumericDate::from_seconds(1_300_819_000));
    let validation = Validation::new()
        .issuer("joe")
        .any_audience()
        .clock(clock.clone());
    let verified = jwt::verify::<serde_json::Value>(token, &key, &validation).unwrap();
    assert_eq!(
        verified.claims.exp,
        Some(NumericDate::from_seconds(1_300_819_380))
    );
    assert_eq!(verified.claims.custom["http://example.com/is_root"], true);
    // Past exp + leeway it is refused, and the error says by how much.
    clock.set(NumericDate::from_seconds(1_300_819_380 + 61));
    let err = jwt::verify::<serde_json::Value>(token, &key, &validation).unwrap_err();
    match &err {
        Error::Expired { exp, leeway, .. } => {
            assert_eq!(exp.seconds(), 1_300_819_380);
            assert_eq!(*leeway, 60);
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        err.to_string(),
        "token expired at 2011-03-22T18:43:00Z, 1 minute ago (leeway 60s)"
    );
}

#[test]
fn rfc7638_and_rfc8037_thumbprints() {
    let Some(dir) = vectors::dir() else { return };
    let doc = vectors::load(&dir, "rfc-examples.json");
    let mut ran = 0;
    for example in doc["thumbprints"].as_array().unwrap() {
        assert_eq!(example["hash"], "SHA-256");
        let jwk = jwk_of(&example["jwk"]);
        assert_eq!(
            jwk.thumbprint().unwrap(),
            example["thumbprint_b64u"].as_str().unwrap()
        );
        ran += 1;
    }
    println!("rfc-examples.json: ran {ran} thumbprints");
    assert_eq!(ran, 2);
}

#[test]
fn rfc9068_header_and_claims_validate_as_an_access_token() {
    let Some(dir) = vectors::dir() else { return };
    let doc = vectors::load(&dir, "rfc-examples.json");
    let info = &doc["informational"][0];
    // The RFC publishes no key: sign its header and claims with our own.
    let key = tessera_jose::SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("RjEwOwOA");
    let header = jws::Header::for_key(&key).typ(info["header"]["typ"].as_str().unwrap());
    let token = jws::sign(&header, info["claims"].to_string().as_bytes(), &key).unwrap();
    let validation = Validation::new()
        .issuer("https://authorization-server.example.com/")
        .audience("https://rs.example.com/")
        .typ("at+jwt")
        .require("client_id")
        .require("jti")
        .clock(FixedClock::new(NumericDate::from_seconds(1_618_354_100)));
    let verified =
        jwt::verify::<Value>(token.as_str(), &key.verifying_key().unwrap(), &validation).unwrap();
    assert_eq!(verified.header.typ.as_deref(), Some("at+JWT"));
    assert_eq!(verified.claims.custom["scope"], "openid profile reademail");
    let plain_jwt = validation.typ("JWT");
    assert!(matches!(
        jwt::verify::<Value>(&token, &key.verifying_key().unwrap(), &plain_jwt),
        Err(Error::InvalidType { .. })
    ));
}

/// One cookbook JWS file: the compact output verifies with the input key;
/// where signing is deterministic, our signature over the same signing
/// input is byte-for-byte the published one.
fn run_cookbook_jws(dir: &Path, file: &str) -> bool {
    let doc = vectors::load(dir, file);
    let Some(compact) = doc["output"]["compact"].as_str() else {
        return false;
    };
    let alg = Algorithm::from_name(doc["input"]["alg"].as_str().unwrap()).unwrap();
    let jwk = jwk_of(&doc["input"]["key"]);
    let key = jwk.to_verifying_key_for(alg).unwrap();
    let payload = doc["input"]["payload"].as_str().unwrap();
    let signing_input = doc["signing"]["sig-input"].as_str().unwrap();
    if compact.contains("..") {
        // RFC 7520 §4.5, detached content: verify over the reattached payload.
        let (head, sig) = compact.split_once("..").unwrap();
        let attached = format!("{head}.{}.{sig}", b64::encode(payload));
        jws::verify(&attached, &key, &VerifyOptions::new())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            jws::verify(compact, &key, &VerifyOptions::new()).is_err(),
            "{file}"
        );
    } else {
        let verified = jws::verify(compact, &key, &VerifyOptions::new())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(verified.payload(), payload.as_bytes(), "{file}");
    }
    if doc["reproducible"] == true {
        let signing = jwk.to_signing_key_for(alg).unwrap();
        let sig = signing.sign(signing_input.as_bytes()).unwrap();
        assert_eq!(
            b64::encode(sig),
            doc["signing"]["sig"].as_str().unwrap(),
            "{file}"
        );
    }
    true
}

#[test]
fn rfc7520_cookbook_jws() {
    let Some(dir) = vectors::dir() else { return };
    let mut compact = 0;
    let mut json_only = 0;
    for entry in std::fs::read_dir(dir.join("rfc7520/jws")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if run_cookbook_jws(&dir, &format!("rfc7520/jws/{name}")) {
            compact += 1;
        } else {
            json_only += 1;
        }
    }
    assert!(run_cookbook_jws(
        &dir,
        "jose-cookbook-extra/curve25519/jws.json"
    ));
    println!(
        "rfc7520 cookbook: ran {} compact JWS examples (+ RFC 8037 Ed25519); {json_only} exist only in JSON serialization, which Tessera does not accept",
        compact
    );
    assert_eq!(compact, 5);
}

#[test]
fn rfc7520_cookbook_jwks() {
    let Some(dir) = vectors::dir() else { return };
    let load = |name: &str| jwk_of(&vectors::load(&dir, &format!("rfc7520/jwk/{name}")));
    // Private keys reduce to exactly the published public keys.
    for (private, public) in [
        ("3_2.ec_private_key.json", "3_1.ec_public_key.json"),
        ("3_4.rsa_private_key.json", "3_3.rsa_public_key.json"),
    ] {
        let private = load(private);
        let public = load(public);
        assert_eq!(private.to_public().unwrap(), public);
        let alg = match private.kty.as_str() {
            "EC" => private.algorithm().unwrap(),
            _ => Algorithm::RS256,
        };
        let signing = private.to_signing_key_for(alg).unwrap();
        let exported = signing.verifying_key().unwrap().to_public_jwk().unwrap();
        assert_eq!(exported.n, public.n);
        assert_eq!(exported.x, public.x);
        assert_eq!(exported.thumbprint().unwrap(), public.thumbprint().unwrap());
        // Export of the private key gives back the same members.
        let again = signing.to_jwk().unwrap();
        assert_eq!(again.d, private.d);
        assert_eq!(again.p, private.p);
        // JSON round trip is lossless.
        assert_eq!(Jwk::from_json(&private.to_json()).unwrap(), private);
    }
    let mac = load("3_5.symmetric_key_mac_computation.json");
    assert_eq!(
        mac.to_verifying_key().unwrap().algorithm(),
        Algorithm::HS256
    );
    // An encryption key (alg A256GCM) is no signing key.
    let enc = load("3_6.symmetric_key_encryption.json");
    assert!(matches!(
        enc.to_verifying_key(),
        Err(Error::UnsupportedAlgorithm { .. })
    ));
    assert!(matches!(
        enc.to_verifying_key_for(Algorithm::HS256),
        Err(Error::UnsupportedAlgorithm { .. })
    ));
    println!("rfc7520 cookbook: ran 6 JWK files");
}
