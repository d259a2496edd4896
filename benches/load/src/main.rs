//! Load test of `tessera serve` on loopback, load generator included.
//!
//! Fixed-body scenarios run under `oha` (install: `cargo install oha`);
//! refresh rotations, whose body changes on every request, run under a
//! driver in this file. Prints a Markdown table for docs/benchmarks.md.
//!
//! ```sh
//! cargo build --release -p tessera-cli
//! cd benches/load && cargo run --release [-- SECONDS [CONNECTIONS]]
//! ```
//! This is the package's default binary; the others (`guard-load`,
//! `signin-load`, `feed-load`, `argon2-memory`) run with `--bin NAME`.
//! Set `TESSERA_LOAD_DATABASE_URL=postgres://…` to load PostgreSQL instead
//! of SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{admin, agent, env_args, post, rss_kib, start};

#[derive(Default)]
struct Outcome {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Run oha and read its JSON summary.
fn oha(args: &[&str]) -> Outcome {
    let out = Command::new("oha")
        .args(["--no-tui", "--output-format", "json"])
        .args(args)
        .output()
        .expect("oha is installed (cargo install oha)");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("oha output: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let ok = v["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
    let all: u64 = v["statusCodeDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    // Requests cut off when the run's time is up are not errors.
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("aborted due to deadline"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Outcome {
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0) * ok as f64 / all.max(1) as f64,
        p50_ms: v["latencyPercentiles"]["p50"].as_f64().unwrap_or(f64::NAN) * 1e3,
        p99_ms: v["latencyPercentiles"]["p99"].as_f64().unwrap_or(f64::NAN) * 1e3,
        errors: errors + (all - ok),
    }
}

/// `connections` sessions rotating their refresh tokens for `secs`.
fn refresh_load(base: &str, web: &str, connections: usize, secs: u64) -> Outcome {
    let url = format!("{base}/oauth2/token");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0u64));
    // Log every session in first, one after another, so the measured
    // window holds only rotations.
    let login_agent = agent();
    let sessions: Vec<String> = (0..connections)
        .map(|_| {
            let login = post(
                &login_agent,
                &url,
                &[
                    ("grant_type", "password"),
                    ("client_id", web),
                    ("username", "alice"),
                    ("password", "correct horse battery"),
                ],
            );
            login["refresh_token"]
                .as_str()
                .unwrap_or_else(|| panic!("login: {login}"))
                .to_owned()
        })
        .collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for token in sessions {
            let (url, latencies, errors) = (&url, Arc::clone(&latencies), Arc::clone(&errors));
            s.spawn(move || {
                let agent = agent();
                let mut token = token;
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let v = post(
                        &agent,
                        url,
                        &[
                            ("grant_type", "refresh_token"),
                            ("client_id", web),
                            ("refresh_token", &token),
                        ],
                    );
                    match v["refresh_token"].as_str() {
                        Some(next) => {
                            token = next.to_owned();
                            mine.push(t.elapsed());
                        }
                        None => {
                            *errors.lock().unwrap() += 1;
                            break;
                        }
                    }
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let errors = *errors.lock().unwrap();
    Outcome {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(10, |s| s.parse().unwrap());
    let conns: usize = args.next().map_or(64, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The login limits hold one user to five password checks at once and
    // thirty logins in five minutes, and the load generator is one
    // address: off, so that the password scenario saturates the hashers.
    // The refresh sessions are all one user's, held to 120 rotations a
    // minute by default: a limit that is on (its cost is measured) and
    // that they never reach, as thousands of users each within theirs.
    std::fs::write(
        d.join("tessera.toml"),
        "[logins]\nmax_failures = 0\n[tokens]\nrefreshes_per_minute = 100000000\n",
    )
    .unwrap();
    std::env::set_var("TESSERA_CONFIG", d.join("tessera.toml"));
    let backend = if env_args().is_empty() {
        "SQLite"
    } else {
        "PostgreSQL"
    };

    let cc: Value = serde_json::from_str(&admin(
        d,
        &["client", "add", "load", "--scope", "read", "--json"],
        None,
    ))
    .unwrap();
    // `-a=…`: a client id may begin with '-', which oha would take for a flag.
    let cc_auth = format!(
        "{}:{}",
        cc["client_id"].as_str().unwrap(),
        cc["client_secret"].as_str().unwrap()
    );
    let web: Value = serde_json::from_str(&admin(
        d,
        &[
            "client",
            "add",
            "web",
            "--grant",
            "password",
            "--grant",
            "refresh_token",
            "--public",
            "--scope",
            "read",
            "--json",
        ],
        None,
    ))
    .unwrap();
    let web = web["client_id"].as_str().unwrap().to_owned();
    admin(
        d,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--scope",
            "read",
        ],
        Some("correct horse battery\n"),
    );

    let (server, first_start) = start(d);
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(server.child.id());
    let base = server.base.clone();
    let token_url = format!("{base}/oauth2/token");
    let cc_auth_arg = format!("-a={cc_auth}");
    let token = post(
        &agent(),
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", cc["client_id"].as_str().unwrap()),
            ("client_secret", cc["client_secret"].as_str().unwrap()),
        ],
    )["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let z = format!("{secs}s");
    let c = conns.to_string();
    let form = "application/x-www-form-urlencoded";
    // ONLY=client_credentials|introspection|jwks|refresh runs one scenario
    // (for profiling) and prints its line.
    let only = std::env::var("ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let run = |name: &str, args: &[&str]| {
        if wanted(name) {
            oha(args)
        } else {
            Outcome::default()
        }
    };
    // A client-authenticated form POST, as the token and introspection
    // endpoints take it.
    let post = |name: &str, body: &str, url: &str| {
        run(
            name,
            &[
                "-z",
                &z,
                "-c",
                &c,
                "-m",
                "POST",
                "-T",
                form,
                &cc_auth_arg,
                "-d",
                body,
                url,
            ],
        )
    };
    let cc_run = post(
        "client_credentials",
        "grant_type=client_credentials",
        &token_url,
    );
    let introspect_body = format!("token={token}");
    let intro = post(
        "introspection",
        &introspect_body,
        &format!("{base}/oauth2/introspect"),
    );
    let jwks = run(
        "jwks",
        &["-z", &z, "-c", &c, &format!("{base}/.well-known/jwks.json")],
    );
    let refresh = if wanted("refresh") {
        refresh_load(&base, &web, conns, secs)
    } else {
        Outcome::default()
    };
    if let Some(name) = &only {
        let o = [
            ("client_credentials", &cc_run),
            ("introspection", &intro),
            ("jwks", &jwks),
            ("refresh", &refresh),
        ]
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("ONLY={name}: not a scenario"));
        println!(
            "{name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            o.rps, o.p50_ms, o.p99_ms
        );
        return;
    }
    let busy_rss = rss_kib(server.child.id());

    // Password logins saturate the hashers; /healthz is probed meanwhile.
    let password_body = format!(
        "grant_type=password&client_id={web}&username=alice&password=correct+horse+battery"
    );
    let pw = {
        let (z, c, url, body) = (
            z.clone(),
            c.clone(),
            token_url.clone(),
            password_body.clone(),
        );
        std::thread::spawn(move || {
            oha(&[
                "-z", &z, "-c", &c, "-m", "POST", "-T", form, "-d", &body, &url,
            ])
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let probe_secs = format!("{}s", secs.saturating_sub(1).max(1));
    let health = oha(&[
        "-z",
        &probe_secs,
        "-c",
        "2",
        "-q",
        "200",
        &format!("{base}/healthz"),
    ]);
    let pw = pw.join().unwrap();

    // Start to ready on the existing database.
    drop(server);
    let (server, restart) = start(d);
    drop(server);

    println!("Backend: {backend}; {conns} connections, {secs} s per scenario; server and load generator on the same 2 cores.\n");
    println!("| scenario | req/s | p50 ms | p99 ms | errors | target |");
    println!("|---|---:|---:|---:|---:|---|");
    let row = |name: &str, o: &Outcome, target: &str| {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {target} |",
            o.rps, o.p50_ms, o.p99_ms, o.errors
        );
    };
    row("client_credentials", &cc_run, "≥ 15,000 req/s, p99 ≤ 10 ms");
    row("introspection (access token)", &intro, "≥ 20,000 req/s");
    row("JWKS", &jwks, "≥ 40,000 req/s");
    row("refresh (rotation)", &refresh, "≥ 2,000 req/s");
    row("password (Argon2id)", &pw, "saturated");
    row(
        "/healthz during password saturation",
        &health,
        "p99 ≤ 10 ms",
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---:|---|");
    println!(
        "| idle RSS | {:.1} MiB | ≤ 20 MB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| RSS after the runs | {:.1} MiB | |",
        busy_rss as f64 / 1024.0
    );
    println!(
        "| first start to ready (new database) | {:.0} ms | |",
        first_start.as_secs_f64() * 1e3
    );
    println!(
        "| start to ready (existing database) | {:.0} ms | ≤ 200 ms |",
        restart.as_secs_f64() * 1e3
    );
}
