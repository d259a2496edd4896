//! tessera-guard's cost over HTTP: the same small route unprotected,
//! behind `GuardLayer` with the verified-token cache (the default), and
//! behind it with the cache off, under `oha` at 64 connections with one
//! ES256 token reused as a real client reuses it.
//!
//! ```sh
//! cd benches/load && cargo run --release --bin guard-load [-- SECONDS [CONNECTIONS]]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tessera_guard::{AccessToken, Guard, GuardLayer};
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, KeySet, NumericDate, SigningKey};

async fn open() -> &'static str {
    "{\"items\":[]}"
}

async fn protected(_token: AccessToken) -> &'static str {
    "{\"items\":[]}"
}

fn rps(url: &str, token: &str, secs: u64, conns: usize) -> (f64, f64) {
    let out = Command::new("oha")
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &format!("{secs}s"),
            "-c",
            &conns.to_string(),
        ])
        .args(["-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .expect("oha is installed (cargo install oha)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = v["statusCodeDistribution"]["200"].as_u64().unwrap_or(0) as f64;
    let all: f64 = v["statusCodeDistribution"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|n| n.as_u64())
        .sum::<u64>() as f64;
    assert!(
        ok > 0.0 && ok == all,
        "every response must be 200: {}",
        v["statusCodeDistribution"]
    );
    (
        v["summary"]["requestsPerSec"].as_f64().unwrap(),
        v["latencyPercentiles"]["p99"].as_f64().unwrap() * 1e3,
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(10, |s| s.parse().unwrap());
    let conns: usize = args.next().map_or(64, |s| s.parse().unwrap());
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let claims = Claims::new()
        .issuer("https://auth.example.com")
        .subject("alice")
        .audience("store-api")
        .expires_at(NumericDate::now().plus(Duration::from_secs(3600)));
    let token = jwt::sign_with_header(&Header::for_key(&key).typ("at+jwt"), &claims, &key).unwrap();
    let guard = |cache: usize| {
        let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
        Guard::builder("https://auth.example.com", "store-api", keys)
            .cache_size(cache)
            .build()
            .unwrap()
    };
    let app = Router::new()
        .route("/open", get(open))
        .nest(
            "/cached",
            Router::new()
                .route("/items", get(protected))
                .layer(GuardLayer::new(guard(10_000))),
        )
        .nest(
            "/uncached",
            Router::new()
                .route("/items", get(protected))
                .layer(GuardLayer::new(guard(0))),
        );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (open_rps, open_p99) = rps(&format!("{base}/open"), &token, secs, conns);
    let (cached_rps, cached_p99) = rps(&format!("{base}/cached/items"), &token, secs, conns);
    let (uncached_rps, uncached_p99) = rps(&format!("{base}/uncached/items"), &token, secs, conns);
    println!("{conns} connections, {secs} s each, server and oha on the same cores; one ES256 token reused.\n");
    println!("| route | req/s | p99 ms | share of unprotected |");
    println!("|---|---:|---:|---:|");
    println!("| unprotected | {open_rps:.0} | {open_p99:.2} | 100 % |");
    println!("| GuardLayer, verified-token cache (default) | {cached_rps:.0} | {cached_p99:.2} | {:.0} % |", 100.0 * cached_rps / open_rps);
    println!("| GuardLayer, cache off (a signature check per request) | {uncached_rps:.0} | {uncached_p99:.2} | {:.0} % |", 100.0 * uncached_rps / open_rps);
}
