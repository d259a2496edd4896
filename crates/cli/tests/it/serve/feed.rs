//! The revocation feed end to end: two `tessera serve` on one PostgreSQL
//! database, the store API subscribed through one of them, revocations
//! made at the other.

use std::collections::HashMap;
use std::process::{Command as Process, Stdio};

use super::*;

/// A port nothing listens on now (for an instance that must come back on
/// the same address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tessera serve --listen ADDR ARGS` in `dir`.
fn start_at(dir: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
    let child = Process::new(binary())
        .current_dir(dir)
        .args(["serve", "--listen", listen])
        .args(args)
        .envs(env.iter().copied())
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    listening(child, "tessera: listening ")
}

/// The store API subscribed to `issuer`'s feed as `client`.
fn store_api_with_feed(
    dir: &Path,
    name: &str,
    issuer: &str,
    client: (&str, &str),
    policy: &[&str],
) -> Server {
    let bin = store_api_binary();
    let db = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    let child = Process::new(bin)
        .args(["--listen", "127.0.0.1:0", "--database-url", &db])
        .args(["--issuer", issuer, "--audience", "store-api"])
        .args(["--revocation-client-id", client.0])
        .args(policy)
        .env("STORE_API_REVOCATION_CLIENT_SECRET", client.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    listening(child, "store-api: listening ")
}

fn feed_status(api: &str) -> Value {
    let (_, body) = get(api, "/healthz");
    serde_json::from_str::<Value>(&body).unwrap()["revocation_feed"].clone()
}

/// A browser with a cookie jar, following redirects on its own.
struct Browser {
    agent: ureq::Agent,
    jar: HashMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
            jar: HashMap::new(),
        }
    }

    fn keep(&mut self, response: &ureq::http::Response<ureq::Body>) {
        for value in response.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.jar.insert(k.to_owned(), v.to_owned());
        }
    }

    fn cookies(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// (status, Location, body)
    fn get(&mut self, url: &str) -> (u16, String, String) {
        let mut response = self
            .agent
            .get(url)
            .header("Cookie", &self.cookies())
            .call()
            .unwrap();
        self.keep(&response);
        let location = header_of(&response, "location");
        (
            response.status().as_u16(),
            location,
            response.body_mut().read_to_string().unwrap(),
        )
    }

    fn post(&mut self, url: &str, form: &[(&str, &str)]) -> (u16, String) {
        let response = self
            .agent
            .post(url)
            .header("Cookie", &self.cookies())
            .send_form(form.iter().copied())
            .unwrap();
        self.keep(&response);
        (response.status().as_u16(), header_of(&response, "location"))
    }
}

fn header_of(response: &ureq::http::Response<ureq::Body>, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

const REDIRECT: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "a-verifier-of-more-than-43-characters-for-pkce-0123456789";

/// Alice signs in through `base` with the code flow; (access token, sid).
fn sign_in(base: &str, client_id: &str) -> (String, String) {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes());
    let challenge = base64_simd::URL_SAFE_NO_PAD.encode_to_string(digest.as_ref());
    let mut b = Browser::new();
    let mut url = format!(
        "{base}/oauth2/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20items%3Aread&state=s1&nonce=n1&code_challenge={challenge}&code_challenge_method=S256",
        "http%3A%2F%2F127.0.0.1%3A9%2Fcb"
    );
    let code = loop {
        let (status, location, html) = b.get(&url);
        if status == 200 {
            // The login page.
            let form = [
                ("request", hidden(&html, "request")),
                ("csrf_token", hidden(&html, "csrf_token")),
                ("username", "alice".to_owned()),
                ("password", "correct horse".to_owned()),
            ];
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, location) = b.post(&format!("{base}/login"), &pairs);
            assert_eq!(status, 303);
            url = location;
        } else {
            assert!(status == 303 || status == 302, "{status}: {html}");
            url = location;
        }
        if !url.starts_with("http") {
            url = format!("{base}{url}");
        }
        if let Some(query) = url.strip_prefix(&format!("{REDIRECT}?")) {
            let params: HashMap<String, String> = query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            break params["code"].clone();
        }
    };
    let (status, tokens) = post(
        base,
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    );
    assert_eq!(status, 200, "{tokens}");
    let access = field(&tokens, "access_token");
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64_simd::URL_SAFE_NO_PAD
            .decode_to_vec(payload.as_bytes())
            .unwrap(),
    )
    .unwrap();
    (access, field(&claims, "sid"))
}

/// Call the admin API of `base` with `token`; the status.
fn admin_api(base: &str, method: &str, path: &str, token: &str) -> u16 {
    api(base, method, path, token, None)
}

#[test]
fn revocations_made_at_one_instance_reach_an_api_subscribed_through_another() {
    let Some(pg) = PgSchema::new("feed", "the revocation feed across instances") else {
        return;
    };
    let url = pg.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let master = "q6sFQ0y1mJmQ4f3xk0PEXW0ZCb8oN3b0nq7yWg1M0aQ";
    let env = [
        ("TESSERA_MASTER_KEY", master),
        ("TESSERA_DATABASE_URL", url.as_str()),
    ];
    // B listens where the issuer says; A is another instance of it.
    let b_listen = format!("127.0.0.1:{}", free_port());
    let issuer = format!("http://{b_listen}");
    let flags = ["--issuer", issuer.as_str()];
    let a = start(d, &flags, &env);
    let mut b = start_at(d, &b_listen, &flags, &env);

    let client = |name: &str, extra: &[&str]| {
        let mut args = vec!["client", "add", name, "--json"];
        args.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&admin(d, &args, None, &env)).unwrap();
        (
            field(&v, "client_id"),
            v["client_secret"].as_str().unwrap_or("").to_owned(),
        )
    };
    let feed_client = client("store-api feed", &["--scope", "revocations:read"]);
    let items = ["--scope", "items:read", "--audience", "store-api"];
    let (svc, svc_secret) = client("svc", &items);
    let (doomed, doomed_secret) = client("doomed", &items);
    let (ops, ops_secret) = client("ops", &["--scope", "tessera:admin"]);
    let (web, _) = client(
        "web",
        &[
            "--public",
            "--first-party",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            REDIRECT,
            "--scope",
            "openid",
            "--scope",
            "items:read",
            "--audience",
            "store-api",
        ],
    );
    admin(
        d,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--scope",
            "items:read",
        ],
        Some("correct horse\n"),
        &env,
    );
    let token_at = |base: &str, id: &str, secret: &str| {
        let (status, v) = post(
            base,
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ],
        );
        assert_eq!(status, 200, "{v}");
        field(&v, "access_token")
    };
    let ops_token = token_at(&a.base, &ops, &ops_secret);

    // The store API subscribes through B; a strict twin refuses once the
    // feed has been away for a second.
    let feed = (feed_client.0.as_str(), feed_client.1.as_str());
    let store = store_api_with_feed(d, "store", &issuer, feed, &[]);
    let strict = store_api_with_feed(
        d,
        "strict",
        &issuer,
        feed,
        &[
            "--revocations-when-unreachable",
            "refuse",
            "--revocations-unreachable-after-secs",
            "1",
        ],
    );
    for api_base in [&store.base, &strict.base] {
        wait_until("the store API is current", || {
            feed_status(api_base)["current"] == true
        });
    }
    let items_status = |token: &str| api(&store.base, "GET", "/items", token, None);

    // 1. An access token revoked at A.
    let revoked = token_at(&a.base, &svc, &svc_secret);
    let kept = token_at(&a.base, &svc, &svc_secret);
    assert_eq!(items_status(&revoked), 200);
    let (status, _) = post(
        &a.base,
        "/oauth2/revoke",
        &[
            ("token", &revoked),
            ("client_id", &svc),
            ("client_secret", &svc_secret),
        ],
    );
    assert_eq!(status, 200);
    wait_until("the revoked token is refused", || {
        items_status(&revoked) == 401
    });
    assert_eq!(items_status(&kept), 200, "other tokens keep working");

    // 2. A session ended at A (the admin API).
    let (in_session, sid) = sign_in(&a.base, &web);
    assert_eq!(items_status(&in_session), 200);
    assert_eq!(
        admin_api(
            &a.base,
            "DELETE",
            &format!("/admin/sessions/{sid}"),
            &ops_token
        ),
        204
    );
    wait_until("the session's token is refused", || {
        items_status(&in_session) == 401
    });

    // 3. A user disabled at A.
    let (alices, _) = sign_in(&a.base, &web);
    assert_eq!(items_status(&alices), 200);
    assert_eq!(
        admin_api(&a.base, "POST", "/admin/users/alice/disable", &ops_token),
        204
    );
    wait_until("the disabled user's token is refused", || {
        items_status(&alices) == 401
    });
    assert_eq!(items_status(&kept), 200);

    // 4. A client deleted at A.
    let doomed_token = token_at(&a.base, &doomed, &doomed_secret);
    assert_eq!(items_status(&doomed_token), 200);
    assert_eq!(
        admin_api(
            &a.base,
            "DELETE",
            &format!("/admin/clients/{doomed}"),
            &ops_token
        ),
        204
    );
    wait_until("the deleted client's token is refused", || {
        items_status(&doomed_token) == 401
    });
    assert_eq!(items_status(&kept), 200);

    // 5. B goes away; a revocation at A meanwhile; B comes back on the
    // same address: the subscriber resumes and misses nothing. The strict
    // API refuses while the feed is away, the default one serves.
    let before = feed_status(&store.base)["last_event_id"].as_i64().unwrap();
    assert_eq!(api(&strict.base, "GET", "/items", &kept, None), 200);
    drop(b);
    let while_away = token_at(&a.base, &svc, &svc_secret);
    assert_eq!(items_status(&while_away), 200);
    let (status, _) = post(
        &a.base,
        "/oauth2/revoke",
        &[
            ("token", &while_away),
            ("client_id", &svc),
            ("client_secret", &svc_secret),
        ],
    );
    assert_eq!(status, 200);
    wait_until("the strict API refuses without its feed", || {
        api(&strict.base, "GET", "/items", &kept, None) == 503
    });
    assert_eq!(items_status(&kept), 200, "the default policy keeps serving");
    assert_eq!(feed_status(&store.base)["current"], false);
    b = start_at(d, &b_listen, &flags, &env);
    wait_until("the revocation made while B was away is applied", || {
        items_status(&while_away) == 401
    });
    let after = feed_status(&store.base)["last_event_id"].as_i64().unwrap();
    assert!(after > before, "resumed after {before}, now {after}");
    wait_until("the strict API serves again", || {
        api(&strict.base, "GET", "/items", &kept, None) == 200
    });
    // Everything revoked before is still refused after the reconnection.
    for token in [&revoked, &in_session, &alices, &doomed_token] {
        assert_eq!(items_status(token), 401);
    }
    assert_eq!(items_status(&kept), 200);

    // The API tells clients where to get a token (RFC 9728).
    let (status, body) = get(&store.base, "/.well-known/oauth-protected-resource");
    assert_eq!(status, 200);
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["authorization_servers"][0], issuer.as_str());
    assert_eq!(metadata["resource"], store.base.as_str());

    drop((a, b, store, strict));
}
