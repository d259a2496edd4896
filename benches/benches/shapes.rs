//! Real-world token shapes (issue 16): a Keycloak-like access token (22
//! claims with `realm_access` and `resource_access`, ~1.2 KB as HS256)
//! and a ~4 KB token (one custom claim of 79 strings), HS256 and RS256,
//! signed and verified by tessera-jose, jsonwebtoken and jwt-simple into
//! the same typed claims, issuer and audience checked by all, against
//! the bare aws-lc-rs operation over the same signing input.
//!
//! tessera is measured three times when verifying: with its per-thread
//! header cache hit (one issuer, one key: the common case) and missed (the
//! tokens cycle through forty `kid`s, more than the cache holds), and
//! with `jwt::verify_borrowed` into a twin of the claims type whose
//! strings borrow from the decoded payload.
//!
//! `cd benches && cargo bench --bench shapes`

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use jwt_simple::prelude::{self as simple, MACLike as _};
use serde::{Deserialize, Serialize};
use tessera_jose::jws::KeySource;
use tessera_jose::{jwt, Algorithm, Claims, NumericDate, SigningKey, Validation};

use common::{bench_key, raw, simple_options, BenchKey, SignFn, VerifyFn, SECRET};

const ISSUER: &str = "https://sso.example.com/realms/shop";
const AUDIENCE: &str = "orders-api";
const SUBJECT: &str = "f1b3c1e2-8d4a-4c55-9b3e-2a7d9c0e6f11";
const JTI: &str = "onrtac:4e8a7f0c-2b7d-4a51-9c3e-1f6d8b2a9e47";

#[derive(Clone, Serialize, Deserialize, PartialEq)]
struct Roles {
    roles: Vec<String>,
}

/// What a Keycloak access token carries beyond the registered claims.
#[derive(Clone, Serialize, Deserialize)]
struct Keycloak {
    auth_time: i64,
    typ: String,
    azp: String,
    session_state: String,
    acr: String,
    #[serde(rename = "allowed-origins")]
    allowed_origins: Vec<String>,
    realm_access: Roles,
    resource_access: BTreeMap<String, Roles>,
    scope: String,
    sid: String,
    email_verified: bool,
    name: String,
    preferred_username: String,
    given_name: String,
    family_name: String,
    email: String,
}

/// `Roles`, borrowing from the decoded payload.
#[derive(Deserialize)]
struct RolesRef<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    roles: Vec<&'a str>,
}

/// `Keycloak`, borrowing: what `jwt::verify_borrowed` can build.
#[derive(Deserialize)]
#[allow(dead_code)]
struct KeycloakRef<'a> {
    auth_time: i64,
    typ: &'a str,
    azp: &'a str,
    session_state: &'a str,
    acr: &'a str,
    #[serde(rename = "allowed-origins", borrow)]
    allowed_origins: Vec<&'a str>,
    #[serde(borrow)]
    realm_access: RolesRef<'a>,
    #[serde(borrow)]
    resource_access: BTreeMap<&'a str, RolesRef<'a>>,
    scope: &'a str,
    sid: &'a str,
    email_verified: bool,
    name: &'a str,
    preferred_username: &'a str,
    given_name: &'a str,
    family_name: &'a str,
    email: &'a str,
}

/// `Large`, borrowing.
#[derive(Deserialize)]
#[allow(dead_code)]
struct LargeRef<'a> {
    client_id: &'a str,
    scope: &'a str,
    #[serde(borrow)]
    groups: Vec<&'a str>,
}

/// The ~4 KB token's custom part.
#[derive(Clone, Serialize, Deserialize)]
struct Large {
    client_id: String,
    scope: String,
    groups: Vec<String>,
}

fn roles(names: &[&str]) -> Roles {
    Roles {
        roles: names.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn keycloak() -> Keycloak {
    Keycloak {
        auth_time: 1_796_000_000,
        typ: "Bearer".into(),
        azp: "shop-frontend".into(),
        session_state: "7c1f0a2e-5b3d-4e8f-a9c6-0d2b4e6f8a1c".into(),
        acr: "1".into(),
        allowed_origins: vec!["https://shop.example.com".into()],
        realm_access: roles(&[
            "default-roles-shop",
            "offline_access",
            "uma_authorization",
            "customer",
        ]),
        resource_access: BTreeMap::from([
            (
                "orders-api".to_owned(),
                roles(&["orders:read", "orders:write"]),
            ),
            (
                "account".to_owned(),
                roles(&["manage-account", "manage-account-links", "view-profile"]),
            ),
        ]),
        scope: "openid email profile orders".into(),
        sid: "7c1f0a2e-5b3d-4e8f-a9c6-0d2b4e6f8a1c".into(),
        email_verified: true,
        name: "Alice Liddell".into(),
        preferred_username: "alice".into(),
        given_name: "Alice".into(),
        family_name: "Liddell".into(),
        email: "alice@example.com".into(),
    }
}

fn large() -> Large {
    Large {
        client_id: "reporting-service".into(),
        scope: "reports:read reports:write".into(),
        groups: (0..79)
            .map(|i| format!("/org/example/department-{i:02}/readers"))
            .collect(),
    }
}

/// The registered claims and a custom part, flat, as jsonwebtoken wants
/// them (its users write one struct; flatten is what jwt-simple does).
#[derive(Serialize, Deserialize)]
struct Flat<C> {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(flatten)]
    custom: C,
}

/// One shape: its custom claims.
trait Shape: Clone + Serialize + for<'de> Deserialize<'de> + 'static {
    const NAME: &'static str;
    /// The shape's twin whose strings borrow from the decoded payload.
    type Borrowed<'a>: Deserialize<'a>;
    fn make() -> Self;
    /// `jwt::verify_borrowed` into the borrowing twin.
    fn verify_borrowed(
        token: &str,
        keys: &dyn KeySource,
        v: &Validation,
        buf: &mut Vec<u8>,
    ) -> bool {
        jwt::verify_borrowed::<Self::Borrowed<'_>>(token, keys, v, buf).is_ok()
    }
}

impl Shape for Keycloak {
    const NAME: &'static str = "keycloak";
    type Borrowed<'a> = KeycloakRef<'a>;
    fn make() -> Self {
        keycloak()
    }
}

impl Shape for Large {
    const NAME: &'static str = "4kb";
    type Borrowed<'a> = LargeRef<'a>;
    fn make() -> Self {
        large()
    }
}

fn tessera_claims<C: Shape>() -> Claims<C> {
    let now = NumericDate::now();
    Claims::with_custom(C::make())
        .issuer(ISSUER)
        .subject(SUBJECT)
        .audience(AUDIENCE)
        .issued_at(now)
        .not_before(now)
        .expires_at(now.plus(Duration::from_secs(300)))
        .jwt_id(JTI)
}

fn flat_claims<C: Shape>() -> Flat<C> {
    let now = NumericDate::now().seconds();
    Flat {
        iss: ISSUER.into(),
        sub: SUBJECT.into(),
        aud: AUDIENCE.into(),
        exp: now + 300,
        iat: now,
        nbf: now,
        jti: JTI.into(),
        custom: C::make(),
    }
}

fn simple_claims<C: Shape>() -> simple::JWTClaims<C> {
    simple::Claims::with_custom_claims(C::make(), simple::Duration::from_secs(300))
        .with_issuer(ISSUER)
        .with_subject(SUBJECT)
        .with_audience(AUDIENCE)
        .with_jwt_id(JTI)
}

fn bench_shape<C: Shape>(c: &mut Criterion, alg: Algorithm) {
    let bench = bench_key(alg);
    let (jt_alg, enc, dec) = bench.jsonwebtoken();
    let BenchKey {
        key,
        public: vk,
        private_pem,
        public_pem,
    } = bench;
    let validation = Validation::new().issuer(ISSUER).audience(AUDIENCE);

    let t_key = key.clone();
    let mut sign: Vec<(&str, SignFn)> = vec![(
        "tessera",
        Box::new(move || jwt::sign(&tessera_claims::<C>(), &t_key).unwrap()),
    )];
    let t_vk = vk.clone();
    let t_validation = validation.clone();
    let (b_vk, b_validation) = (vk.clone(), validation.clone());
    let buffer = std::cell::RefCell::new(Vec::new());
    let mut verify: Vec<(&str, VerifyFn)> = vec![
        (
            "tessera",
            Box::new(move |token| jwt::verify::<C>(token, &t_vk, &t_validation).is_ok()),
        ),
        (
            "tessera, borrowed claims",
            Box::new(move |token| {
                C::verify_borrowed(token, &b_vk, &b_validation, &mut buffer.borrow_mut())
            }),
        ),
    ];

    use jsonwebtoken as jt;
    let mut jt_header = jt::Header::new(jt_alg);
    jt_header.kid = Some("bench".into());
    sign.push((
        "jsonwebtoken",
        Box::new(move || jt::encode(&jt_header, &flat_claims::<C>(), &enc).unwrap()),
    ));
    let mut jt_validation = jt::Validation::new(jt_alg);
    jt_validation.set_issuer(&[ISSUER]);
    jt_validation.set_audience(&[AUDIENCE]);
    verify.push((
        "jsonwebtoken",
        Box::new(move |token| jt::decode::<Flat<C>>(token, &dec, &jt_validation).is_ok()),
    ));

    let (s, v): (SignFn, VerifyFn) = if alg == Algorithm::HS256 {
        let key = simple::HS256Key::from_bytes(&SECRET).with_key_id("bench");
        let verify_key = key.clone();
        (
            Box::new(move || key.authenticate(simple_claims::<C>()).unwrap()),
            Box::new(move |token| {
                verify_key
                    .verify_token::<C>(token, Some(simple_options(ISSUER, AUDIENCE)))
                    .is_ok()
            }),
        )
    } else {
        use jwt_simple::prelude::*;
        let pair = RS256KeyPair::from_pem(private_pem.as_deref().unwrap())
            .unwrap()
            .with_key_id("bench");
        let public = RS256PublicKey::from_pem(public_pem.as_deref().unwrap()).unwrap();
        (
            Box::new(move || pair.sign(simple_claims::<C>()).unwrap()),
            Box::new(move |token| {
                public
                    .verify_token::<C>(token, Some(simple_options(ISSUER, AUDIENCE)))
                    .is_ok()
            }),
        )
    };
    sign.push(("jwt-simple", s));
    verify.push(("jwt-simple", v));

    // The floor.
    let token = (sign[0].1)();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = tessera_jose::b64::decode(signature).unwrap();
    let (raw_sign, raw_verify) = raw(&key);
    for (name, v) in &verify {
        assert!(v(&token), "{name} refused the {} {alg} token", C::NAME);
    }
    assert!(raw_verify(input.as_bytes(), &signature));

    // Header-cache misses: forty kids (the same key material under each),
    // more than a thread keeps (16), and a key set that knows them all, as
    // a service seeing many keys has.
    let kids: Vec<SigningKey> = (0..40)
        .map(|i| key.clone().with_kid(format!("k{i}")))
        .collect();
    let missing: Vec<String> = kids
        .iter()
        .map(|k| jwt::sign(&tessera_claims::<C>(), k).unwrap())
        .collect();
    let set = tessera_jose::KeySet::new(kids.iter().map(|k| k.verifying_key().unwrap()).collect())
        .unwrap();
    for t in &missing {
        assert!(jwt::verify::<C>(t, &set, &validation).is_ok());
    }

    let label = format!("{}-{alg} ({} B)", C::NAME, token.len());
    let mut group = c.benchmark_group(format!("sign {label}"));
    for (name, s) in &sign {
        group.bench_function(*name, |b| b.iter(|| black_box(s())));
    }
    group.bench_function("aws-lc-rs raw", |b| {
        b.iter(|| black_box(raw_sign(black_box(input.as_bytes()))))
    });
    group.finish();

    let mut group = c.benchmark_group(format!("verify {label}"));
    for (name, v) in &verify {
        group.bench_function(*name, |b| b.iter(|| assert!(v(black_box(&token)))));
    }
    let mut next = 0usize;
    group.bench_function("tessera, header cache missed", |b| {
        b.iter(|| {
            next = (next + 1) % missing.len();
            assert!(jwt::verify::<C>(black_box(&missing[next]), &set, &validation).is_ok())
        })
    });
    let mut buffer = Vec::new();
    group.bench_function("tessera, borrowed claims, header cache missed", |b| {
        b.iter(|| {
            next = (next + 1) % missing.len();
            assert!(C::verify_borrowed(
                black_box(&missing[next]),
                &set,
                &validation,
                &mut buffer
            ))
        })
    });
    group.bench_function("aws-lc-rs raw", |b| {
        b.iter(|| {
            assert!(raw_verify(
                black_box(input.as_bytes()),
                black_box(&signature)
            ))
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    for alg in [Algorithm::HS256, Algorithm::RS256] {
        bench_shape::<Keycloak>(c, alg);
        bench_shape::<Large>(c, alg);
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
