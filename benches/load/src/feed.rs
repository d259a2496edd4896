//! The revocation feed's figures (issue 15):
//!
//! 1. **Revocation → refusal across instances.** Two `tessera serve` on
//!    one PostgreSQL database (A and B, B's URL the issuer); a guard in
//!    this process subscribed through B. For each event: a token of A's
//!    is verified (and so cached) by the guard, revoked at A, and the
//!    guard is asked until it refuses; the time from sending the
//!    revocation to the first refusal.
//! 2. **Memory per 100,000 live revocations**, in the guard (bytes
//!    allocated for its set, counted by this process's allocator) and in
//!    `tessera serve` (its resident size before and after 100,000 events
//!    are appended to the log and read).
//! 3. **Guard throughput with the feed on and off**: `Guard::verify` of a
//!    repeated token (the cached path every request of a client takes),
//!    and with the cache off, on every core for a few seconds, the two
//!    guards alternating; the feed holds the 100,000 revocations.
//!
//! ```sh
//! cargo build --release -p tessera-cli
//! cd benches/load && TESSERA_LOAD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release --bin feed-load [-- EVENTS [SECONDS]]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_guard::{Guard, RemoteJwks, RevocationFeed};

mod common;
use common::{admin, agent, post, rss_kib, tessera_bin, Server};

/// Counts the bytes this process holds, for the guard's memory figure.
struct Counting;

static HELD: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn start_at(dir: &Path, listen: &str, issuer: &str, url: &str) -> Server {
    let mut child = Command::new(tessera_bin())
        .current_dir(dir)
        .args(["serve", "--listen", listen, "--issuer", issuer])
        .env("TESSERA_DATABASE_URL", url)
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("tessera: listening ")
                .map(|r| format!("http://{}", r.split_whitespace().next().unwrap()))
        })
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `Guard::verify` of `token` on `threads` threads for `secs`: calls/s.
fn throughput(rt: &tokio::runtime::Runtime, guard: &Guard, token: &str, secs: f64) -> f64 {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (guard, token, stop, count) =
                (guard.clone(), token.to_owned(), stop.clone(), count.clone());
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        assert!(handle.block_on(guard.verify(&token)).is_ok());
                    }
                    n += 64;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args.get(1).map_or(200, |a| a.parse().unwrap());
    let secs: f64 = args.get(2).map_or(3.0, |a| a.parse().unwrap());
    let base_url = std::env::var("TESSERA_LOAD_DATABASE_URL")
        .expect("set TESSERA_LOAD_DATABASE_URL to a PostgreSQL database");
    let schema = format!("feedload_{}", std::process::id());
    let psql = |sql: &str| {
        let ok = Command::new("psql")
            .args([base_url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .status()
            .unwrap();
        assert!(ok.success(), "psql {sql}");
    };
    psql(&format!("CREATE SCHEMA {schema}"));
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{sep}options=-c%20search_path%3D{schema}");
    std::env::set_var("TESSERA_LOAD_DATABASE_URL", &url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b_listen = format!("127.0.0.1:{port}");
    let issuer = format!("http://{b_listen}");
    let client = |name: &str, scope: &str| {
        let v: Value = serde_json::from_str(&admin(
            d,
            &["client", "add", name, "--scope", scope, "--audience", "store-api", "--json"],
            None,
        ))
        .unwrap();
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    };
    let (feed_id, feed_secret) = client("feed", "revocations:read");
    let (svc, svc_secret) = client("svc", "items:read");
    let a = start_at(d, "127.0.0.1:0", &issuer, &url);
    let b = start_at(d, &b_listen, &issuer, &url);
    let http = agent();
    let token = || {
        let v = post(
            &http,
            &format!("{}/oauth2/token", a.base),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &svc),
                ("client_secret", &svc_secret),
            ],
        );
        v["access_token"].as_str().unwrap().to_owned()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (guard, plain) = rt.block_on(async {
        let feed = RevocationFeed::builder(&issuer, &feed_id, feed_secret.clone().into())
            .start()
            .unwrap();
        let guard = Guard::builder(&issuer, "store-api", RemoteJwks::discover(&issuer).unwrap())
            .revocations(feed)
            .build()
            .unwrap();
        let plain = Guard::builder(&issuer, "store-api", RemoteJwks::discover(&issuer).unwrap())
            .build()
            .unwrap();
        (guard, plain)
    });

    // 1. Revocation at A → refusal by the guard subscribed through B.
    let mut latencies = Vec::with_capacity(events);
    for _ in 0..events {
        let t = token();
        assert!(rt.block_on(guard.verify(&t)).is_ok());
        let sent = Instant::now();
        let r = http
            .post(format!("{}/oauth2/revoke", a.base))
            .send_form([
                ("token", t.as_str()),
                ("client_id", svc.as_str()),
                ("client_secret", svc_secret.as_str()),
            ])
            .unwrap();
        assert_eq!(r.status(), 200);
        while rt.block_on(guard.verify(&t)).is_ok() {
            std::thread::sleep(Duration::from_micros(200));
            assert!(sent.elapsed() < Duration::from_secs(30), "never refused");
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "revocation at A -> refusal through B, {events} events: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );

    // 2. Memory per 100,000 live revocations.
    let feed = guard.revocations().unwrap();
    let held_before = HELD.load(Ordering::Relaxed);
    let rss_before = rss_kib(b.child.id());
    let count_before = feed.status().revocations;
    psql(&format!(
        "INSERT INTO {schema}.revocation_events (kind, value, issued_before, keep_until, created_at) \
         SELECT 'token', substr(md5(i::text), 1, 22), NULL, extract(epoch from now())::bigint + 3600, \
         extract(epoch from now())::bigint FROM generate_series(1, 100000) i; \
         NOTIFY tessera_revocations"
    ));
    let waited = Instant::now();
    while feed.status().revocations < count_before + 100_000 {
        std::thread::sleep(Duration::from_millis(50));
        assert!(waited.elapsed() < Duration::from_secs(120), "not all arrived");
    }
    let arrived = waited.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let guard_bytes = HELD.load(Ordering::Relaxed) - held_before;
    let server_kib = rss_kib(b.child.id()).saturating_sub(rss_before);
    println!(
        "100,000 revocations: in the guard {:.1} MiB held ({} bytes each), in tessera serve +{:.1} MiB resident; all at the guard {:.2} s after the insert",
        guard_bytes as f64 / 1048576.0,
        guard_bytes / 100_000,
        server_kib as f64 / 1024.0,
        arrived.as_secs_f64(),
    );

    // 3. Throughput, feed on (100,000 revocations held) and off,
    // alternating.
    let t = token();
    let uncached = |with_feed: bool| {
        let keys = rt.block_on(async {
            let g = Guard::builder(&issuer, "store-api", RemoteJwks::discover(&issuer).unwrap())
                .cache_size(0);
            if with_feed {
                g.revocations(guard.revocations().unwrap().clone())
            } else {
                g
            }
            .build()
            .unwrap()
        });
        keys
    };
    let (uncached_on, uncached_off) = (uncached(true), uncached(false));
    for g in [&guard, &plain, &uncached_on, &uncached_off] {
        assert!(rt.block_on(g.verify(&t)).is_ok());
    }
    let mut rows = Vec::new();
    for (name, on, off) in [
        ("cached (a repeated token)", &guard, &plain),
        ("cache off (every signature)", &uncached_on, &uncached_off),
    ] {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            without.push(throughput(&rt, off, &t, secs));
            with.push(throughput(&rt, on, &t, secs));
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        rows.push((name, best(&without), best(&with), with, without));
    }
    for (name, off, on, with, without) in rows {
        println!(
            "Guard::verify, {name}: feed off {off:.0}/s, feed on {on:.0}/s ({:.1} % of off); runs off {:?}, on {:?}",
            on / off * 100.0,
            without.iter().map(|x| *x as u64).collect::<Vec<_>>(),
            with.iter().map(|x| *x as u64).collect::<Vec<_>>(),
        );
    }
    drop((a, b));
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}
