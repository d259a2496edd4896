//! Where the fixed cost of a verification goes (a profiling aid).
use std::hint::black_box;
use std::time::Instant;

use serde::Deserialize;
use tessera_jose::jws::{self, Limits, VerifyOptions};
use tessera_jose::{jwt, Algorithm, Claims, NoCustomClaims, NumericDate, SigningKey, Validation};

#[derive(Deserialize)]
#[allow(dead_code)]
struct Access {
    client_id: String,
    scope: String,
}

/// `Access`, borrowing from the decoded payload (`jwt::verify_borrowed`).
#[derive(Deserialize)]
#[allow(dead_code)]
struct AccessRef<'a> {
    client_id: &'a str,
    scope: &'a str,
}

fn time<R>(name: &str, mut f: impl FnMut() -> R) {
    if let Ok(only) = std::env::var("ONLY") {
        if !name.contains(&only) {
            return;
        }
    }
    for _ in 0..20_000 {
        black_box(f());
    }
    let n = 300_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    println!(
        "{name:40} {:>8.0} ns",
        start.elapsed().as_nanos() as f64 / n as f64
    );
}

fn main() {
    let key = SigningKey::hmac(Algorithm::HS256, &[0x5a; 32])
        .unwrap()
        .with_kid("bench");
    let vk = key.verifying_key().unwrap();
    let now = NumericDate::now();
    let claims = Claims::with_custom(serde_json::json!({"client_id":"s6BhdRkqt3","scope":"openid profile items:read items:write"}))
        .issuer("https://auth.example.com").subject("5ba552d67").audience("https://api.example.com")
        .issued_at(now).expires_at(now.plus(std::time::Duration::from_secs(900))).jwt_id("dbe39bf3a3ba4238a513f51d6e1691c4");
    let token = jwt::sign(&claims, &key).unwrap();
    println!("token {} bytes", token.len());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = tessera_jose::b64::decode(sig).unwrap();
    let payload_b64 = input.split('.').nth(1).unwrap();
    let payload = tessera_jose::b64::decode(payload_b64).unwrap();
    let v = Validation::new()
        .issuer("https://auth.example.com")
        .audience("https://api.example.com");
    let opts = VerifyOptions::new();
    let limits = Limits::default();
    time("raw hmac verify", || {
        vk.verify(input.as_bytes(), &sig).is_ok()
    });
    time("b64 decode payload", || {
        tessera_jose::b64::decode(payload_b64)
    });
    time("Unverified::parse (header)", || {
        jws::Unverified::parse(&token, &limits).is_ok()
    });
    time("jws::verify (no claims)", || {
        jws::verify(&token, &vk, &opts).is_ok()
    });
    time("jwt::verify<NoCustomClaims>", || {
        jwt::verify::<NoCustomClaims>(&token, &vk, &v).is_ok()
    });
    time("jwt::verify<Access>", || {
        jwt::verify::<Access>(&token, &vk, &v).is_ok()
    });
    let mut buffer = Vec::new();
    time("jwt::verify_borrowed<AccessRef>", || {
        jwt::verify_borrowed::<AccessRef<'_>>(&token, &vk, &v, &mut buffer).is_ok()
    });
    // Header-cache misses: tokens under many kids, more than a thread
    // keeps (16), verified through a key set that knows them all; and
    // under eight, which a thread keeps since 2026-12-03 (before, it kept
    // four, and every one of these missed).
    for (kids, row) in [
        (40, "verify_borrowed, 40 kids cycled (missed)"),
        (8, "verify_borrowed, 8 kids cycled"),
    ] {
        let kids: Vec<SigningKey> = (0..kids)
            .map(|i| key.clone().with_kid(format!("k{i}")))
            .collect();
        let tokens: Vec<String> = kids
            .iter()
            .map(|k| jwt::sign(&claims, k).unwrap())
            .collect();
        let set =
            tessera_jose::KeySet::new(kids.iter().map(|k| k.verifying_key().unwrap()).collect())
                .unwrap();
        let mut next = 0;
        time(row, || {
            next = (next + 1) % tokens.len();
            jwt::verify_borrowed::<AccessRef<'_>>(&tokens[next], &set, &v, &mut buffer).is_ok()
        });
        time(
            &format!("verify_borrowed, {} kids, one token", tokens.len()),
            || jwt::verify_borrowed::<AccessRef<'_>>(&tokens[0], &set, &v, &mut buffer).is_ok(),
        );
    }
    time("serde_json Access from payload", || {
        serde_json::from_slice::<Access>(&payload).is_ok()
    });
    time("serde_json IgnoredAny over payload", || {
        serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok()
    });
    time("NumericDate::now", NumericDate::now);
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let ed_input = token.rsplit_once('.').unwrap().0.as_bytes().to_vec();
    time("EdDSA raw sign (via key.sign)", || {
        ed.sign(&ed_input).unwrap()
    });
    time("EdDSA jwt::sign", || jwt::sign(&claims, &ed).unwrap());
    time("HS256 jwt::sign", || jwt::sign(&claims, &key).unwrap());
    time("serde_json claims to_vec", || {
        serde_json::to_vec(&claims).unwrap()
    });
}
