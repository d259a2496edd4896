//! tessera-guard's per-request verification against the raw signature
//! check: `Guard::verify` with its cache off (a full check: header,
//! signature, claims, the AccessToken) and on (a repeated token), and
//! aws-lc-rs verifying the same ES256 signature over the same input.
//!
//! `cd benches && cargo bench --bench guard`

use std::time::Duration;

use aws_lc_rs::signature as sig;
use criterion::{criterion_group, criterion_main, Criterion};
use tessera_guard::Guard;
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, KeySet, NumericDate, SigningKey};

fn bench(c: &mut Criterion) {
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let claims = Claims::new()
        .issuer("https://auth.example.com")
        .subject("alice")
        .audience("store-api")
        .expires_at(NumericDate::now().plus(Duration::from_secs(3600)))
        .jwt_id("j-1");
    let token = jwt::sign_with_header(&Header::for_key(&key).typ("at+jwt"), &claims, &key).unwrap();
    let guard = |cache: usize| {
        let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
        Guard::builder("https://auth.example.com", "store-api", keys)
            .cache_size(cache)
            .build()
            .unwrap()
    };
    let (uncached, cached) = (guard(0), guard(1000));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // The floor: the same signature over the same signing input.
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = tessera_jose::b64::decode(signature).unwrap();
    let spki = key.verifying_key().unwrap().to_spki_der().unwrap();
    let point = &spki[spki.len() - 65..];
    let public = sig::ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point).unwrap();

    let mut group = c.benchmark_group("guard ES256");
    group.bench_function("Guard::verify, cache off", |b| {
        b.iter(|| assert!(rt.block_on(uncached.verify(&token)).is_ok()))
    });
    group.bench_function("Guard::verify, cached", |b| {
        b.iter(|| assert!(rt.block_on(cached.verify(&token)).is_ok()))
    });
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let validation = tessera_jose::Validation::new()
        .issuer("https://auth.example.com")
        .audience("store-api")
        .typ("at+jwt");
    group.bench_function("jwt::verify (tessera-jose)", |b| {
        b.iter(|| {
            assert!(jwt::verify::<serde_json::Map<String, serde_json::Value>>(
                &token,
                &keys,
                &validation
            )
            .is_ok())
        })
    });
    group.bench_function("aws-lc-rs raw verify", |b| {
        b.iter(|| assert!(public.verify_sig(input.as_bytes(), &signature).is_ok()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
