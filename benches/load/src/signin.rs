//! Sign-in for people under load, on loopback, load generator included.
//!
//! - **Silent SSO**: browsers with a live session and a remembered consent
//!   each loop `GET /oauth2/authorize` (a 303 with a code) and the code's
//!   exchange at the token endpoint (PKCE, client_secret_basic): complete
//!   code exchanges per second.
//! - **Full login**: authorize → login page → `POST /login` (Argon2id) →
//!   code → token, against the machine's raw Argon2id rate with the same
//!   parameters measured in the same run, while `/healthz` is probed.
//!
//! ```sh
//! cargo build --release -p tessera-cli
//! cd benches/load && cargo run --release --bin signin-load [-- SECONDS [BROWSERS]]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{admin, start};

/// RFC 7636, Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example.com/callback";

/// A browser: one connection, its cookies, no redirects followed.
struct Browser {
    agent: ureq::Agent,
    cookies: HashMap<String, String>,
}

struct Reply {
    status: u16,
    location: String,
    body: String,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .max_redirects_will_error(false)
                .build()
                .into(),
            cookies: HashMap::new(),
        }
    }

    fn cookie(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &mut ureq::http::Response<ureq::Body>) -> Reply {
        for set in r.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (k, v) = text.split(';').next().unwrap().split_once('=').unwrap();
            self.cookies.insert(k.to_owned(), v.to_owned());
        }
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Reply {
            status: r.status().as_u16(),
            location,
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&mut self, url: &str) -> Reply {
        let mut r = self
            .agent
            .get(url)
            .header("cookie", &self.cookie())
            .call()
            .unwrap();
        self.keep(&mut r)
    }

    fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Reply {
        let mut r = self
            .agent
            .post(url)
            .header("cookie", &self.cookie())
            .send_form(form.iter().copied())
            .unwrap();
        self.keep(&mut r)
    }
}

fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap() + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

fn code_of(location: &str) -> Option<String> {
    let query = location.split_once('?')?.1;
    form_urlencoded_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v)
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/").replace("%3A", ":")))
        .collect()
}

struct Client {
    id: String,
    secret: String,
}

fn authorize_url(base: &str, client: &Client) -> String {
    format!(
        "{base}/oauth2/authorize?response_type=code&client_id={}&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback\
         &scope=openid+profile&state=s&nonce=n&code_challenge={CHALLENGE}&code_challenge_method=S256",
        client.id
    )
}

/// Log in through the pages (consenting the first time); the code.
fn log_in(base: &str, b: &mut Browser, client: &Client) -> String {
    let r = b.get(&authorize_url(base, client));
    assert_eq!(r.status, 303, "{}", r.body);
    let page = b.get(&format!("{base}{}", r.location));
    let r = b.post(
        &format!("{base}/login"),
        &[
            ("request", &hidden(&page.body, "request")),
            ("csrf_token", &hidden(&page.body, "csrf_token")),
            ("username", "alice"),
            ("password", "correct horse battery"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    if r.location.starts_with("/consent") {
        let page = b.get(&format!("{base}{}", r.location));
        let r = b.post(
            &format!("{base}/consent"),
            &[
                ("request", &hidden(&page.body, "request")),
                ("csrf_token", &hidden(&page.body, "csrf_token")),
                ("decision", "allow"),
            ],
        );
        return code_of(&r.location).unwrap();
    }
    code_of(&r.location).unwrap()
}

/// Exchange `code`: whether an ID token came back.
fn exchange(agent: &ureq::Agent, base: &str, client: &Client, code: &str) -> bool {
    let mut r = agent
        .post(&format!("{base}/oauth2/token"))
        .send_form([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", &client.id),
            ("client_secret", &client.secret),
        ])
        .unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or_default();
    v["id_token"].is_string()
}

#[derive(Default)]
struct Outcome {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn outcome(mut all: Vec<Duration>, elapsed: f64, errors: u64) -> Outcome {
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    Outcome {
        rate: all.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors,
    }
}

/// Each browser loops `step` until `secs` pass; timings of the good ones.
fn drive(browsers: Vec<Browser>, secs: u64, step: impl Fn(&mut Browser) -> bool + Sync) -> Outcome {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for mut b in browsers {
            let (latencies, errors, step) = (Arc::clone(&latencies), &errors, &step);
            s.spawn(move || {
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if step(&mut b) {
                        mine.push(t.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let all = latencies.lock().unwrap().clone();
    outcome(all, started.elapsed().as_secs_f64(), errors.into_inner())
}

/// Argon2id hashes per second with the server's parameters (m=19456 KiB,
/// t=2, p=1), one thread per core, for `secs`.
fn raw_argon2(secs: u64) -> f64 {
    use argon2::{Algorithm, Argon2, Params, Version};
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let argon = Argon2::new(
                    Algorithm::Argon2id,
                    Version::V0x13,
                    Params::new(19456, 2, 1, Some(32)).unwrap(),
                );
                let mut out = [0u8; 32];
                while Instant::now() < deadline {
                    argon
                        .hash_password_into(b"correct horse battery", b"saltsaltsaltsalt", &mut out)
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    done.into_inner() as f64 / started.elapsed().as_secs_f64()
}

/// Probe `/healthz` at 200 requests per second while `running`.
fn probe(base: &str, running: &AtomicBool) -> Outcome {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut all = Vec::new();
    let mut errors = 0;
    let started = Instant::now();
    while running.load(Ordering::Relaxed) {
        let t = Instant::now();
        match agent.get(&format!("{base}/healthz")).call() {
            Ok(r) if r.status() == 200 => all.push(t.elapsed()),
            _ => errors += 1,
        }
        std::thread::sleep(Duration::from_millis(5).saturating_sub(t.elapsed()));
    }
    outcome(all, started.elapsed().as_secs_f64(), errors)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(10, |s| s.parse().unwrap());
    let browsers: usize = args.next().map_or(64, |s| s.parse().unwrap());
    // ID_TOKEN_ALG=ES256 signs ID tokens with the access tokens' curve
    // instead of OpenID Connect's default RS256.
    let alg = std::env::var("ID_TOKEN_ALG").unwrap_or_else(|_| "RS256".into());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The login limits count attempts per client address and successes
    // per user, and the load generator is one address and a few users;
    // each session is issued thousands of codes a second: all off for
    // this run.
    std::fs::write(
        d.join("tessera.toml"),
        "[logins]\nmax_failures = 0\n[sessions]\ncodes_per_minute = 0\n\
         [keys]\nid_token_algorithms = [\"RS256\", \"ES256\"]\n",
    )
    .unwrap();
    std::env::set_var("TESSERA_CONFIG", d.join("tessera.toml"));
    let added: Value = serde_json::from_str(&admin(
        d,
        &[
            "client", "add", "shop", "--grant", "authorization_code", "--redirect-uri", REDIRECT,
            "--scope", "openid", "--scope", "profile", "--id-token-alg", &alg, "--json",
        ],
        None,
    ))
    .unwrap();
    let client = Client {
        id: added["client_id"].as_str().unwrap().to_owned(),
        secret: added["client_secret"].as_str().unwrap().to_owned(),
    };
    admin(
        d,
        &["user", "add", "alice", "--password-stdin"],
        Some("correct horse battery\n"),
    );
    let (server, _) = start(d);
    let base = server.base.clone();

    // Silent SSO: every browser logs in (and consents) once, then loops.
    let mut signed_in: Vec<Browser> = (0..browsers).map(|_| Browser::new()).collect();
    std::thread::scope(|s| {
        for b in signed_in.iter_mut() {
            let (base, client) = (&base, &client);
            s.spawn(move || {
                let code = log_in(base, b, client);
                assert!(exchange(&b.agent.clone(), base, client, &code));
            });
        }
    });
    let silent_secs = if std::env::var("ONLY").as_deref() == Ok("login") { 1 } else { secs };
    let silent = drive(signed_in, silent_secs, |b| {
        let r = b.get(&authorize_url(&base, &client));
        match code_of(&r.location) {
            Some(code) => exchange(&b.agent.clone(), &base, &client, &code),
            None => false,
        }
    });

    if std::env::var("ONLY").as_deref() == Ok("silent") {
        println!(
            "silent SSO: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            silent.rate, silent.p50_ms, silent.p99_ms, silent.errors
        );
        return;
    }
    // Full logins (fresh browsers, remembered consent) beside a probe;
    // the raw hash rate on the same cores with nothing else running, half
    // the time before and half after (this VM's speed drifts).
    let raw_before = raw_argon2(secs.div_ceil(2));
    let running = AtomicBool::new(true);
    let (full, health) = std::thread::scope(|s| {
        let probe = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            probe(&base, &running)
        });
        let fresh: Vec<Browser> = (0..browsers).map(|_| Browser::new()).collect();
        let full = drive(fresh, secs, |b| {
            b.cookies.clear();
            let code = log_in(&base, b, &client);
            exchange(&b.agent.clone(), &base, &client, &code)
        });
        running.store(false, Ordering::Relaxed);
        (full, probe.join().unwrap())
    });
    drop(server);
    let raw = (raw_before + raw_argon2(secs.div_ceil(2))) / 2.0;

    println!("SQLite; ID tokens {alg}; {browsers} browsers, {secs} s per scenario; server and load generator on the same 2 cores.\n");
    println!("| scenario | per second | p50 ms | p99 ms | errors | target |");
    println!("|---|---:|---:|---:|---:|---|");
    let row = |name: &str, o: &Outcome, target: &str| {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {target} |",
            o.rate, o.p50_ms, o.p99_ms, o.errors
        );
    };
    row("silent SSO: authorize (303 + code) and its exchange", &silent, "≥ 5,000 exchanges/s");
    row("full login: authorize, login page, POST (Argon2id), code, token", &full, "≥ 90 % of raw Argon2id");
    row("/healthz during the logins (200/s probe)", &health, "p99 ≤ 10 ms");
    println!(
        "| raw Argon2id (m=19456, t=2, p=1), one thread per core | {raw:.1} | | | | |"
    );
    println!();
    println!(
        "Full logins at {:.0} % of the raw Argon2id rate.",
        100.0 * full.rate / raw
    );
}
