//! Key formats: PEM/DER import and export, interop with OpenSSL-made keys
//! and signatures (see tests/data/README.md).

use tessera_jose::{Algorithm, Error, Jwk, SigningKey, VerifyingKey};

fn data(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn data_bytes(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(path).unwrap()
}

#[test]
fn openssl_signatures_verify_with_every_public_format() {
    let message = data_bytes("message.txt");
    for (alg, publics, sig) in [
        (
            Algorithm::RS256,
            &[
                "rsa2048-spki.pem",
                "rsa2048-pkcs1-public.pem",
                "rsa2048-pkcs1.pem",
                "rsa2048-pkcs8.pem",
            ][..],
            "rsa2048-rs256.sig",
        ),
        (
            Algorithm::PS256,
            &["rsa2048-spki.pem", "rsa2048-pkcs8.pem"][..],
            "rsa2048-ps256.sig",
        ),
        (
            Algorithm::ES256,
            &["p256-spki.pem", "p256-sec1-with-params.pem"][..],
            "p256-es256.sig",
        ),
        (
            Algorithm::EdDSA,
            &["ed25519-spki.pem", "ed25519-pkcs8.pem"][..],
            "ed25519.sig",
        ),
    ] {
        let signature = data_bytes(sig);
        for file in publics {
            let key =
                VerifyingKey::from_pem(alg, &data(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            key.verify(&message, &signature)
                .unwrap_or_else(|e| panic!("{alg} {file}: {e}"));
            assert!(key.verify(b"other message", &signature).is_err());
        }
    }
}

#[test]
fn every_private_format_loads_signs_and_exports() {
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa2048-pkcs1.pem", "rsa2048-spki.pem"),
        (Algorithm::PS512, "rsa2048-pkcs8.pem", "rsa2048-spki.pem"),
        (
            Algorithm::ES256,
            "p256-sec1-with-params.pem",
            "p256-spki.pem",
        ),
        (Algorithm::ES384, "p384-pkcs8.pem", "p384-spki.pem"),
        (Algorithm::ES512, "p521-pkcs8.pem", "p521-spki.pem"),
        (Algorithm::ES512, "p521-sec1.pem", "p521-spki.pem"),
        (Algorithm::EdDSA, "ed25519-pkcs8.pem", "ed25519-spki.pem"),
    ] {
        let key =
            SigningKey::from_pem(alg, &data(private)).unwrap_or_else(|e| panic!("{private}: {e}"));
        let sig = key.sign(b"hello").unwrap();
        let public_key = VerifyingKey::from_pem(alg, &data(public)).unwrap();
        public_key.verify(b"hello", &sig).unwrap();
        // Exported public PEM is the same SPKI OpenSSL wrote.
        assert_eq!(
            key.to_public_pem().unwrap().trim(),
            data(public).trim(),
            "{private}"
        );
        // PKCS#8 export reloads to the same key.
        let reloaded = SigningKey::from_pem(alg, &key.to_pkcs8_pem().unwrap()).unwrap();
        public_key
            .verify(b"again", &reloaded.sign(b"again").unwrap())
            .unwrap();
        // JWK export reloads too, and its thumbprint matches the public key's.
        let jwk = Jwk::from_json(&key.to_jwk().unwrap().to_json()).unwrap();
        let from_jwk = jwk.to_signing_key().unwrap();
        public_key
            .verify(b"jwk", &from_jwk.sign(b"jwk").unwrap())
            .unwrap();
        assert_eq!(jwk.thumbprint().unwrap(), public_key.thumbprint().unwrap());
    }
}

#[test]
fn keys_refuse_the_wrong_algorithm_or_format() {
    let rsa = data("rsa2048-pkcs8.pem");
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256] {
        assert!(SigningKey::from_pem(alg, &rsa).is_err(), "{alg}");
    }
    let p384 = data("p384-pkcs8.pem");
    let err = SigningKey::from_pem(Algorithm::ES256, &p384).unwrap_err();
    assert!(err.to_string().contains("P-384"), "{err}");
    assert!(VerifyingKey::from_pem(Algorithm::ES256, &data("p384-spki.pem")).is_err());
    let err = SigningKey::from_pem(Algorithm::RS256, &data("rsa2048-spki.pem")).unwrap_err();
    assert!(err.to_string().contains("public key cannot sign"), "{err}");
    let err = SigningKey::from_pem(Algorithm::RS256, &data("rsa1024.pem")).unwrap_err();
    assert!(matches!(err, Error::WeakKey { .. }), "{err}");
    for junk in [
        "",
        "hello",
        "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        assert!(
            VerifyingKey::from_pem(Algorithm::RS256, junk).is_err(),
            "{junk:?}"
        );
    }
}

#[test]
fn rsa_sizes_and_generation() {
    for bits in [2048, 3072] {
        let key = SigningKey::generate_rsa(Algorithm::PS256, bits).unwrap();
        let jwk = key.verifying_key().unwrap().to_public_jwk().unwrap();
        assert_eq!(jwk.n.unwrap().len() * 8, bits);
    }
    assert!(SigningKey::generate_rsa(Algorithm::RS256, 1024).is_err());
    assert!(SigningKey::generate_rsa(Algorithm::ES256, 2048).is_err());
}

#[test]
fn thumbprint_kid_is_stable_and_shared() {
    let key = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let kid = key.kid().unwrap().to_owned();
    assert_eq!(kid.len(), 43);
    assert_eq!(key.verifying_key().unwrap().thumbprint().unwrap(), kid);
    assert_eq!(key.to_jwk().unwrap().thumbprint().unwrap(), kid);
    let hmac = SigningKey::hmac(Algorithm::HS256, &[5u8; 32])
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    assert_eq!(hmac.kid().unwrap().len(), 43);
}

#[test]
fn an_ed25519_key_answers_to_eddsa_and_ed25519_and_nothing_else() {
    use tessera_jose::jws::Header;
    use tessera_jose::{jwt, Claims, JwkSet, KeySet, NoCustomClaims, Validation};
    let key = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let claims = Claims::new().issuer("c").subject("c").audience("a");
    // The same key material under its fully-specified name.
    let renamed = SigningKey::from_der(
        Algorithm::Ed25519,
        tessera_jose::PemKind::PrivateKey,
        key.to_pkcs8_der().unwrap().expose(),
    )
    .unwrap()
    .with_kid(key.kid().unwrap());
    let named = |alg: Algorithm| {
        // The same key's signature under each name (RFC 8037, RFC 9864).
        let signer = if alg == Algorithm::EdDSA {
            &key
        } else {
            &renamed
        };
        jwt::sign_with_header(&Header::for_key(signer), &claims, signer)
            .unwrap_or_else(|e| panic!("{alg}: {e}"))
    };
    let validation = Validation::new()
        .issuer("c")
        .audience("a")
        .allow_missing_exp();
    // A JWK that says EdDSA, one that says Ed25519, one that says nothing.
    for written in [Some("EdDSA"), Some("Ed25519"), None] {
        let mut jwk = key.verifying_key().unwrap().to_public_jwk().unwrap();
        jwk.alg = written.map(str::to_owned);
        let keys = KeySet::from_jwks(&JwkSet::new(vec![jwk])).unwrap();
        for alg in [Algorithm::EdDSA, Algorithm::Ed25519] {
            jwt::verify::<NoCustomClaims>(&named(alg), &keys, &validation)
                .unwrap_or_else(|e| panic!("JWK alg {written:?}, token {alg}: {e}"));
        }
        // An allow-list still decides: Ed25519 only refuses EdDSA.
        let strict = validation.clone().algorithms([Algorithm::Ed25519]);
        assert!(jwt::verify::<NoCustomClaims>(&named(Algorithm::EdDSA), &keys, &strict).is_err());
    }
    // Named Ed25519 from the start: signs and verifies as itself.
    let fully = SigningKey::generate(Algorithm::Ed25519).unwrap();
    let token = jwt::sign(&claims, &fully).unwrap();
    assert!(token.starts_with(&tessera_jose::b64::encode(r#"{"alg":"Ed25519""#)[..20]));
    let keys = KeySet::new(vec![fully.verifying_key().unwrap()]).unwrap();
    jwt::verify::<NoCustomClaims>(&token, &keys, &validation).unwrap();
}

/// An RSA JWK written with a zero byte before its modulus or exponent
/// (RFC 7518 §6.3.1.1 asks for the fewest octets; Java's
/// `BigInteger.toByteArray` adds one) is the same key, with the same
/// RFC 7638 thumbprint as its canonical form.
#[test]
fn rsa_jwk_leading_zero_bytes_are_read_canonically() {
    let key = SigningKey::generate(Algorithm::RS256).unwrap();
    let canonical = key.verifying_key().unwrap().to_public_jwk().unwrap();
    let mut text: serde_json::Value = serde_json::from_str(&canonical.to_json()).unwrap();
    for name in ["n", "e"] {
        let mut bytes = tessera_jose::b64::decode(text[name].as_str().unwrap()).unwrap();
        bytes.insert(0, 0);
        text[name] = tessera_jose::b64::encode(bytes).into();
    }
    let padded = Jwk::from_json(&text.to_string()).unwrap();
    assert_eq!(
        padded.thumbprint().unwrap(),
        canonical.thumbprint().unwrap()
    );
    assert_eq!(padded.n, canonical.n);
    assert_eq!(padded.e, canonical.e);
}

/// A JWK inside the caller's own types is read as strictly as
/// `Jwk::from_json` reads one: a member written twice is refused.
#[test]
fn a_jwk_deserialized_with_serde_refuses_repeated_members() {
    let twice = r#"{"kty":"EC","crv":"P-256","alg":"ES256","alg":"RS256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    let err = serde_json::from_str::<Jwk>(twice).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let once = twice.replace(r#""alg":"RS256","#, "");
    let jwk: Jwk = serde_json::from_str(&once).unwrap();
    assert_eq!(jwk.alg.as_deref(), Some("ES256"));
}

/// A certificate given as an HMAC secret (a JWK's `x5c` member, base64
/// DER, copied from the issuer's key set; or the DER itself) is the
/// issuer's public key: refused, as a PEM or SPKI one is.
#[test]
fn a_certificate_is_refused_as_an_hmac_secret() {
    let pem = data("rsa2048-cert.pem");
    let x5c: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64_simd::STANDARD.decode_to_vec(&x5c).unwrap();
    for (what, secret) in [
        ("x5c", x5c.into_bytes()),
        ("DER", der),
        ("PEM", pem.into_bytes()),
    ] {
        let refused = VerifyingKey::hmac(Algorithm::HS256, &secret);
        assert!(matches!(refused, Err(Error::InvalidKey { .. })), "{what}");
    }
}
