//! Sign and verify a typical access token with tessera-jose, jsonwebtoken
//! (aws-lc-rs backend) and jwt-simple (BoringSSL backend), and the raw
//! aws-lc-rs operation on the same signing input as the floor.
//!
//! Every library verifies the very same token, with its issuer and
//! audience checked, into the same typed claims.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::{hmac, rand};
use criterion::{criterion_group, criterion_main, Criterion};
use jwt_simple::prelude::{self as simple, MACLike as _};
use serde::{Deserialize, Serialize};
use tessera_jose::{jwt, Algorithm, Claims, NumericDate, SigningKey, Validation};

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "https://api.example.com";

#[derive(Clone, Serialize, Deserialize)]
struct Access {
    client_id: String,
    scope: String,
}

/// The same claims as jsonwebtoken wants them: one flat struct.
#[derive(Serialize, Deserialize)]
struct Flat {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    jti: String,
    client_id: String,
    scope: String,
}

fn access() -> Access {
    Access {
        client_id: "s6BhdRkqt3".into(),
        scope: "openid profile items:read items:write".into(),
    }
}

fn tessera_claims() -> Claims<Access> {
    let now = NumericDate::now();
    Claims::with_custom(access())
        .issuer(ISSUER)
        .subject("5ba552d67")
        .audience(AUDIENCE)
        .issued_at(now)
        .expires_at(now.plus(Duration::from_secs(900)))
        .jwt_id("dbe39bf3a3ba4238a513f51d6e1691c4")
}

fn flat_claims() -> Flat {
    let c = tessera_claims();
    Flat {
        iss: ISSUER.into(),
        sub: "5ba552d67".into(),
        aud: AUDIENCE.into(),
        exp: c.exp.map(NumericDate::seconds).unwrap_or_default(),
        iat: c.iat.map(NumericDate::seconds).unwrap_or_default(),
        jti: "dbe39bf3a3ba4238a513f51d6e1691c4".into(),
        client_id: c.custom.client_id,
        scope: c.custom.scope,
    }
}

fn simple_claims() -> simple::JWTClaims<Access> {
    simple::Claims::with_custom_claims(access(), simple::Duration::from_secs(900))
        .with_issuer(ISSUER)
        .with_subject("5ba552d67")
        .with_audience(AUDIENCE)
        .with_jwt_id("dbe39bf3a3ba4238a513f51d6e1691c4")
}

fn simple_options() -> simple::VerificationOptions {
    simple::VerificationOptions {
        allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
        allowed_audiences: Some(HashSet::from([AUDIENCE.to_owned()])),
        ..Default::default()
    }
}

type SignFn = Box<dyn Fn() -> String>;
type VerifyFn = Box<dyn Fn(&str) -> bool>;
type RawSignFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;
type RawVerifyFn = Box<dyn Fn(&[u8], &[u8]) -> bool>;

/// One algorithm's contenders.
struct Contenders {
    sign: Vec<(&'static str, SignFn)>,
    verify: Vec<(&'static str, VerifyFn)>,
    raw_sign: RawSignFn,
    raw_verify: RawVerifyFn,
}

fn contenders(alg: Algorithm) -> Contenders {
    let key = if alg == Algorithm::HS256 {
        SigningKey::hmac(alg, &[0x5a; 32]).unwrap()
    } else {
        SigningKey::generate(alg).unwrap()
    }
    .with_kid("bench");
    let vk = key.verifying_key().unwrap();
    let private_pem = key.to_pkcs8_pem().ok().map(|p| p.to_string());
    let public_pem = key.to_public_pem().ok();
    let validation = Validation::new().issuer(ISSUER).audience(AUDIENCE);

    // tessera
    let t_key = key.clone();
    let mut sign: Vec<(&'static str, SignFn)> = vec![(
        "tessera",
        Box::new(move || jwt::sign(&tessera_claims(), &t_key).unwrap()),
    )];
    let mut verify: Vec<(&'static str, VerifyFn)> = vec![(
        "tessera",
        Box::new(move |token| jwt::verify::<Access>(token, &vk, &validation).is_ok()),
    )];

    // jsonwebtoken
    use jsonwebtoken as jt;
    let jt_alg = match alg {
        Algorithm::HS256 => jt::Algorithm::HS256,
        Algorithm::RS256 => jt::Algorithm::RS256,
        Algorithm::PS256 => jt::Algorithm::PS256,
        Algorithm::ES256 => jt::Algorithm::ES256,
        Algorithm::ES384 => jt::Algorithm::ES384,
        _ => jt::Algorithm::EdDSA,
    };
    let (enc, dec) = match alg {
        Algorithm::HS256 => (
            jt::EncodingKey::from_secret(&[0x5a; 32]),
            jt::DecodingKey::from_secret(&[0x5a; 32]),
        ),
        Algorithm::RS256 | Algorithm::PS256 => (
            jt::EncodingKey::from_rsa_pem(private_pem.as_deref().unwrap().as_bytes()).unwrap(),
            jt::DecodingKey::from_rsa_pem(public_pem.as_deref().unwrap().as_bytes()).unwrap(),
        ),
        Algorithm::ES256 | Algorithm::ES384 => (
            jt::EncodingKey::from_ec_pem(private_pem.as_deref().unwrap().as_bytes()).unwrap(),
            jt::DecodingKey::from_ec_pem(public_pem.as_deref().unwrap().as_bytes()).unwrap(),
        ),
        _ => (
            jt::EncodingKey::from_ed_pem(private_pem.as_deref().unwrap().as_bytes()).unwrap(),
            jt::DecodingKey::from_ed_pem(public_pem.as_deref().unwrap().as_bytes()).unwrap(),
        ),
    };
    let mut jt_header = jt::Header::new(jt_alg);
    jt_header.kid = Some("bench".into());
    sign.push((
        "jsonwebtoken",
        Box::new(move || jt::encode(&jt_header, &flat_claims(), &enc).unwrap()),
    ));
    let mut jt_validation = jt::Validation::new(jt_alg);
    jt_validation.set_issuer(&[ISSUER]);
    jt_validation.set_audience(&[AUDIENCE]);
    verify.push((
        "jsonwebtoken",
        Box::new(move |token| jt::decode::<Flat>(token, &dec, &jt_validation).is_ok()),
    ));

    // jwt-simple
    macro_rules! simple_pair {
        ($pair:ty, $public:ty) => {{
            // Each key family has its own traits; the prelude brings them all.
            use jwt_simple::prelude::*;
            let pair = <$pair>::from_pem(private_pem.as_deref().unwrap())
                .unwrap()
                .with_key_id("bench");
            let public = <$public>::from_pem(public_pem.as_deref().unwrap()).unwrap();
            let s: SignFn = Box::new(move || pair.sign(simple_claims()).unwrap());
            let v: VerifyFn = Box::new(move |token| {
                public
                    .verify_token::<Access>(token, Some(simple_options()))
                    .is_ok()
            });
            (s, v)
        }};
    }
    let (s, v): (SignFn, VerifyFn) = match alg {
        Algorithm::HS256 => {
            let key = simple::HS256Key::from_bytes(&[0x5a; 32]).with_key_id("bench");
            let verify_key = key.clone();
            (
                Box::new(move || key.authenticate(simple_claims()).unwrap()),
                Box::new(move |token| {
                    verify_key
                        .verify_token::<Access>(token, Some(simple_options()))
                        .is_ok()
                }),
            )
        }
        Algorithm::RS256 => simple_pair!(simple::RS256KeyPair, simple::RS256PublicKey),
        Algorithm::PS256 => simple_pair!(simple::PS256KeyPair, simple::PS256PublicKey),
        Algorithm::ES256 => simple_pair!(simple::ES256KeyPair, simple::ES256PublicKey),
        Algorithm::ES384 => simple_pair!(simple::ES384KeyPair, simple::ES384PublicKey),
        _ => simple_pair!(simple::Ed25519KeyPair, simple::Ed25519PublicKey),
    };
    sign.push(("jwt-simple", s));
    verify.push(("jwt-simple", v));

    let der = key.to_pkcs8_der().ok().map(|d| d.expose().to_vec());
    let (raw_sign, raw_verify) = raw(alg, der);
    Contenders {
        sign,
        verify,
        raw_sign,
        raw_verify,
    }
}

/// The bare aws-lc-rs operation, with keys parsed once, as the floor.
fn raw(alg: Algorithm, der: Option<Vec<u8>>) -> (RawSignFn, RawVerifyFn) {
    match alg {
        Algorithm::HS256 => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &[0x5a; 32]);
            let k2 = key.clone();
            (
                Box::new(move |m| hmac::sign(&key, m).as_ref().to_vec()),
                Box::new(move |m, s| hmac::verify(&k2, m, s).is_ok()),
            )
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            let pair = sig::RsaKeyPair::from_pkcs8(der.as_deref().unwrap()).unwrap();
            let (enc, params): (&'static dyn sig::RsaEncoding, &'static sig::RsaParameters) =
                if alg == Algorithm::RS256 {
                    (&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256)
                } else {
                    (&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256)
                };
            let public = sig::ParsedPublicKey::new(params, pair.public_key().as_ref()).unwrap();
            let rng = rand::SystemRandom::new();
            (
                Box::new(move |m| {
                    let mut out = vec![0; pair.public_modulus_len()];
                    pair.sign(enc, &rng, m, &mut out).unwrap();
                    out
                }),
                Box::new(move |m, s| public.verify_sig(m, s).is_ok()),
            )
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let (signing, verifying) = if alg == Algorithm::ES256 {
                (
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &sig::ECDSA_P256_SHA256_FIXED,
                )
            } else {
                (
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                    &sig::ECDSA_P384_SHA384_FIXED,
                )
            };
            let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der.as_deref().unwrap()).unwrap();
            let public = sig::ParsedPublicKey::new(verifying, pair.public_key().as_ref()).unwrap();
            let rng = rand::SystemRandom::new();
            (
                Box::new(move |m| pair.sign(&rng, m).unwrap().as_ref().to_vec()),
                Box::new(move |m, s| public.verify_sig(m, s).is_ok()),
            )
        }
        _ => {
            let pair =
                sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.as_deref().unwrap()).unwrap();
            let public =
                sig::ParsedPublicKey::new(&sig::ED25519, pair.public_key().as_ref()).unwrap();
            (
                Box::new(move |m| pair.sign(m).as_ref().to_vec()),
                Box::new(move |m, s| public.verify_sig(m, s).is_ok()),
            )
        }
    }
}

fn bench(c: &mut Criterion) {
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let contenders = contenders(alg);
        // The one token every library verifies.
        let token = (contenders.sign[0].1)();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = tessera_jose::b64::decode(signature).unwrap();
        for (name, verify) in &contenders.verify {
            assert!(verify(&token), "{name} refused the {alg} token");
        }
        assert!((contenders.raw_verify)(input.as_bytes(), &signature));

        let mut group = c.benchmark_group(format!("sign-{alg}"));
        for (name, sign) in &contenders.sign {
            group.bench_function(*name, |b| b.iter(|| black_box(sign())));
        }
        group.bench_function("aws-lc-rs raw", |b| {
            b.iter(|| black_box((contenders.raw_sign)(black_box(input.as_bytes()))))
        });
        group.finish();

        let mut group = c.benchmark_group(format!("verify-{alg}"));
        for (name, verify) in &contenders.verify {
            group.bench_function(*name, |b| b.iter(|| assert!(verify(black_box(&token)))));
        }
        group.bench_function("aws-lc-rs raw", |b| {
            b.iter(|| {
                assert!((contenders.raw_verify)(
                    black_box(input.as_bytes()),
                    black_box(&signature)
                ))
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
