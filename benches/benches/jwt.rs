//! Sign and verify a typical access token with tessera-jose, jsonwebtoken
//! (aws-lc-rs backend) and jwt-simple (BoringSSL backend), and the raw
//! aws-lc-rs operation on the same signing input as the floor.
//!
//! Every library verifies the very same token, with its issuer and
//! audience checked, into the same typed claims; tessera also with
//! `jwt::verify_borrowed`, its custom claims borrowing from the payload.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use jwt_simple::prelude::{self as simple, MACLike as _};
use serde::{Deserialize, Serialize};
use tessera_jose::{jwt, Algorithm, Claims, NumericDate, Validation};

use common::{
    bench_key, raw, simple_options, BenchKey, RawSignFn, RawVerifyFn, SignFn, VerifyFn, SECRET,
};

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "https://api.example.com";

#[derive(Clone, Serialize, Deserialize)]
struct Access {
    client_id: String,
    scope: String,
}

/// `Access`, borrowing: what `jwt::verify_borrowed` can build (the
/// registered claims borrow too).
#[derive(Deserialize)]
#[allow(dead_code)]
struct AccessRef<'a> {
    client_id: &'a str,
    scope: &'a str,
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

/// One algorithm's contenders.
struct Contenders {
    sign: Vec<(&'static str, SignFn)>,
    verify: Vec<(&'static str, VerifyFn)>,
    raw_sign: RawSignFn,
    raw_verify: RawVerifyFn,
}

fn contenders(alg: Algorithm) -> Contenders {
    let bench = bench_key(alg);
    let (jt_alg, enc, dec) = bench.jsonwebtoken();
    let BenchKey {
        key,
        public: vk,
        private_pem,
        public_pem,
    } = bench;
    let validation = Validation::new().issuer(ISSUER).audience(AUDIENCE);

    // tessera
    let t_key = key.clone();
    let mut sign: Vec<(&'static str, SignFn)> = vec![(
        "tessera",
        Box::new(move || jwt::sign(&tessera_claims(), &t_key).unwrap()),
    )];
    let (b_key, b_validation) = (vk.clone(), validation.clone());
    let buffer = std::cell::RefCell::new(Vec::new());
    let mut verify: Vec<(&'static str, VerifyFn)> = vec![
        (
            "tessera",
            Box::new(move |token| jwt::verify::<Access>(token, &vk, &validation).is_ok()),
        ),
        (
            "tessera borrowed",
            Box::new(move |token| {
                jwt::verify_borrowed::<AccessRef<'_>>(
                    token,
                    &b_key,
                    &b_validation,
                    &mut buffer.borrow_mut(),
                )
                .is_ok()
            }),
        ),
    ];

    // jsonwebtoken
    use jsonwebtoken as jt;
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
                    .verify_token::<Access>(token, Some(simple_options(ISSUER, AUDIENCE)))
                    .is_ok()
            });
            (s, v)
        }};
    }
    let (s, v): (SignFn, VerifyFn) = match alg {
        Algorithm::HS256 => {
            let key = simple::HS256Key::from_bytes(&SECRET).with_key_id("bench");
            let verify_key = key.clone();
            (
                Box::new(move || key.authenticate(simple_claims()).unwrap()),
                Box::new(move |token| {
                    verify_key
                        .verify_token::<Access>(token, Some(simple_options(ISSUER, AUDIENCE)))
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

    let (raw_sign, raw_verify) = raw(&key);
    Contenders {
        sign,
        verify,
        raw_sign,
        raw_verify,
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
