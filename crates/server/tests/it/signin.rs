//! Sign-in for people through the real pages, driven over HTTP with a
//! cookie jar: authorization code + PKCE, OpenID Connect, consent,
//! logout; and the attacks on each step.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;
use tessera_server::store::clients::{self, GrantType, NewClient};
use tessera_server::store::{sessions, Scopes};

use crate::{both_backends, Backend, Harness, Reply, ISSUER, KEEP};

const REDIRECT: &str = "https://app.example.com/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A browser: cookies kept between requests.
#[derive(Default)]
struct Browser {
    cookies: HashMap<String, String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, reply: &Reply) {
        for set in reply.headers.get_all(header::SET_COOKIE) {
            let text = set.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
    }

    async fn get(&mut self, h: &Harness, path: &str) -> Reply {
        let reply = h
            .send(
                Request::get(path)
                    .header(header::COOKIE, self.cookie_header())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        self.keep(&reply);
        reply
    }

    /// Post the login form of `page` (a login page) as `username`.
    async fn log_in_on(
        &mut self,
        h: &Harness,
        page: &Reply,
        username: &str,
        password: &str,
    ) -> Reply {
        let (request, csrf) = (
            hidden(&page.text, "request"),
            hidden(&page.text, "csrf_token"),
        );
        self.log_in_form(h, &request, &csrf, username, password)
            .await
    }

    /// Post the login form of pending request `request`.
    async fn log_in_form(
        &mut self,
        h: &Harness,
        request: &str,
        csrf: &str,
        username: &str,
        password: &str,
    ) -> Reply {
        self.post(
            h,
            "/login",
            &[
                ("request", request),
                ("csrf_token", csrf),
                ("username", username),
                ("password", password),
            ],
        )
        .await
    }

    async fn post(&mut self, h: &Harness, path: &str, form: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let reply = h
            .send(
                Request::post(path)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::COOKIE, self.cookie_header())
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        self.keep(&reply);
        reply
    }
}

fn location(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
    reply.headers[header::LOCATION].to_str().unwrap().to_owned()
}

fn query_of(url: &str) -> HashMap<String, String> {
    // Absolute, or a path of this server.
    let url = url::Url::parse("https://auth.invalid/")
        .unwrap()
        .join(url)
        .unwrap();
    url.query_pairs().into_owned().collect()
}

/// The value of hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    attribute_after(page, &format!("name=\"{name}\" value=\""))
}

/// The `href` of the link with `id`.
fn link(page: &str, id: &str) -> String {
    attribute_after(page, &format!("id=\"{id}\" href=\""))
}

/// The attribute value that `marker` (ending in its opening quote) begins,
/// as a browser reads it: the entities the templates escape with undone.
fn attribute_after(page: &str, marker: &str) -> String {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {page}"))
        + marker.len();
    page[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn authorize_url(client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "openid profile email orders:read")
        .append_pair("state", "st-1")
        .append_pair("nonce", "n-1")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("/oauth2/authorize?{}", q.finish())
}

struct Setup {
    client_id: String,
    secret: String,
}

async fn setup(h: &Harness, name: &str, first_party: bool) -> Setup {
    let added = clients::add(
        &h.db,
        NewClient {
            name: name.into(),
            grants: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: Scopes::parse("openid profile email offline_access orders:read").unwrap(),
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec!["https://app.example.com/bye".into()],
            first_party,
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    h.user("alice", "correct horse", "orders:read").await;
    tessera_server::store::users::set_profile(
        &h.db,
        "alice",
        &tessera_server::store::users::Profile {
            name: Some("Alice Liddell".into()),
            email: Some("alice@example.com".into()),
            email_verified: Some(true),
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    Setup {
        client_id: added.client_id,
        secret: added.client_secret.unwrap().to_string(),
    }
}

/// Log in through the page; returns where the login sent the browser.
async fn log_in(h: &Harness, b: &mut Browser, url: &str, password: &str) -> Reply {
    let to_login = location(&b.get(h, url).await);
    assert!(to_login.starts_with("/login?request="), "{to_login}");
    let page = b.get(h, &to_login).await;
    assert_eq!(page.status, StatusCode::OK);
    b.post(
        h,
        "/login",
        &[
            ("request", &hidden(&page.text, "request")),
            ("csrf_token", &hidden(&page.text, "csrf_token")),
            ("username", "alice"),
            ("password", password),
        ],
    )
    .await
}

/// Alice logs in, with her password, for an authorization request of
/// `s`'s: where the login sent the browser.
async fn alice_logs_in(h: &Harness, b: &mut Browser, s: &Setup) -> Reply {
    log_in(h, b, &authorize_url(&s.client_id, &[]), "correct horse").await
}

/// A browser signed in through the pages to the first-party client `s`,
/// and the code it got.
async fn signed_in_code(h: &Harness, s: &Setup) -> (Browser, String) {
    let mut b = Browser::default();
    let back = location(
        &log_in(
            h,
            &mut b,
            &authorize_url(&s.client_id, &[]),
            "correct horse",
        )
        .await,
    );
    let code = query_of(&back)["code"].clone();
    (b, code)
}

/// A refresh with `token`, by the client `s`.
async fn refresh_with(h: &Harness, s: &Setup, token: &str) -> Reply {
    h.post(
        "/oauth2/token",
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
        Some((&s.client_id, &s.secret)),
    )
    .await
}

/// A code for the third-party client `s`: Alice logs in and consents.
async fn consented_code(h: &Harness, s: &Setup) -> String {
    let mut b = Browser::default();
    let to_consent = location(&alice_logs_in(h, &mut b, s).await);
    let consent = b.get(h, &to_consent).await;
    let back = location(&decide(h, &mut b, &consent, "allow").await);
    query_of(&back)["code"].clone()
}

/// A code for `s` from a silent authorization in the signed-in browser
/// `b`.
async fn silent_code(h: &Harness, b: &mut Browser, s: &Setup) -> String {
    let silent = location(
        &b.get(h, &authorize_url(&s.client_id, &[("prompt", "none")]))
            .await,
    );
    query_of(&silent)["code"].clone()
}

/// `GET /oauth2/userinfo` with `token` as the bearer token.
async fn bearer_userinfo(h: &Harness, token: &str) -> Reply {
    h.send(
        Request::get("/oauth2/userinfo")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// Answer the consent page `consent` with `decision` (`allow` or
/// `deny`), as the person's browser `b`.
async fn decide(h: &Harness, b: &mut Browser, consent: &Reply, decision: &str) -> Reply {
    b.post(
        h,
        "/consent",
        &[
            ("request", &hidden(&consent.text, "request")),
            ("csrf_token", &hidden(&consent.text, "csrf_token")),
            ("decision", decision),
        ],
    )
    .await
}

async fn exchange(h: &Harness, s: &Setup, code: &str, verifier: &str) -> Reply {
    h.post(
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        Some((&s.client_id, &s.secret)),
    )
    .await
}

fn claims(token: &str) -> Value {
    let (_, payload) = tessera_jose::dangerous::decode_unverified_claims(token).unwrap();
    Value::Object(payload)
}

/// The consent page words a scope as the operator wrote it in
/// `[pages.scopes]` (an API's own scope, or a built-in one reworded),
/// escaped like everything else shown; scopes without wording keep the
/// built-in text.
async fn the_consent_page_words_scopes_as_the_operator_wrote_them(backend: Backend) {
    use tessera_server::config::ScopeWords;
    let Some(h) = Harness::with(backend, |c| {
        c.pages.scopes.insert(
            "orders:read".into(),
            ScopeWords {
                title: "See your <b>orders</b>".into(),
                detail: "Dates & totals".into(),
            },
        );
        c.pages.scopes.insert(
            "email".into(),
            ScopeWords {
                title: "Read your e-mail address".into(),
                detail: String::new(),
            },
        );
    })
    .await
    else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    let after_login = alice_logs_in(&h, &mut b, &s).await;
    let consent = b.get(&h, &location(&after_login)).await;
    assert_eq!(consent.status, StatusCode::OK);
    let text = &consent.text;
    assert!(text.contains("See your &lt;b&gt;orders&lt;"), "{text}");
    assert!(text.contains("Dates &amp; totals"), "{text}");
    assert!(!text.contains("<b>orders"), "{text}");
    assert!(text.contains("Read your e-mail address"), "{text}");
    assert!(!text.contains("See your email address"), "{text}");
    assert!(
        !text.contains("orders:read”"),
        "the built-in wording: {text}"
    );
    // Not reworded: the built-in text.
    assert!(text.contains("See your profile"), "{text}");
    h.finish().await;
}

async fn code_flow_with_consent_id_token_userinfo_and_logout(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop <script>alert(1)</script>", false).await;
    let mut b = Browser::default();
    let after_login = alice_logs_in(&h, &mut b, &s).await;
    let to_consent = location(&after_login);
    assert!(to_consent.starts_with("/consent?request="), "{to_consent}");
    let consent = b.get(&h, &to_consent).await;
    assert_eq!(consent.status, StatusCode::OK);
    // Escaped, never markup; and the strict headers.
    assert!(
        consent.text.contains("Shop &lt;script&gt;"),
        "{}",
        consent.text
    );
    assert!(!consent.text.contains("<script>alert"));
    let csp = consent.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(consent.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(consent.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(consent.headers[header::REFERRER_POLICY], "no-referrer");
    // No opener policy: an app that signs in in a popup keeps its link
    // to it.
    assert!(!consent.headers.contains_key("cross-origin-opener-policy"));
    assert!(consent.text.contains("name=\"decision\" value=\"allow\""));
    let back = location(&decide(&h, &mut b, &consent, "allow").await);
    assert!(back.starts_with(REDIRECT), "{back}");
    let q = query_of(&back);
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], ISSUER);
    let code = q["code"].clone();

    let tokens = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    let access = tokens.str("access_token");
    let id_token = tokens.str("id_token");
    // No offline_access asked, not first-party: no refresh token.
    assert!(tokens.json.get("refresh_token").is_none());
    // The ID token verifies with the JWKS, RS256, with every claim.
    let jwks = tessera_jose::JwkSet::from_json(&h.app.keys.jwks_json()).unwrap();
    let keys = tessera_jose::KeySet::from_jwks(&jwks).unwrap();
    let verified = tessera_jose::jwt::verify::<Value>(
        &id_token,
        &keys,
        &tessera_jose::Validation::new()
            .issuer(ISSUER)
            .audience(&s.client_id)
            .typ("JWT"),
    )
    .unwrap();
    assert_eq!(verified.header.alg, tessera_jose::Algorithm::RS256);
    let idc = claims(&id_token);
    let atc = claims(&access);
    assert_eq!(idc["sub"], atc["sub"], "the same sub in both");
    assert_eq!(idc["nonce"], "n-1");
    assert!(idc["sid"].is_string() && idc["auth_time"].is_i64());
    assert_eq!(
        idc["at_hash"],
        tessera_server::signin::id_token::at_hash(tessera_jose::Algorithm::RS256, &access)
    );
    assert!(
        idc.get("email").is_none(),
        "profile claims come from userinfo"
    );
    // userinfo: the claims of the granted scopes.
    let info = bearer_userinfo(&h, &access).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text);
    assert_eq!(info.json["sub"], atc["sub"]);
    assert_eq!(info.json["email"], "alice@example.com");
    assert_eq!(info.json["email_verified"], true);
    assert_eq!(info.json["name"], "Alice Liddell");
    assert_eq!(info.json["preferred_username"], "alice");
    // A remembered consent: the next authorization is silent (prompt=none).
    let silent = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
            .await,
    );
    assert!(query_of(&silent).contains_key("code"), "{silent}");
    // The same request POSTed from the client's site: SameSite=Lax keeps
    // the cookies off a cross-site POST, so it is sent back as a GET,
    // which carries them (and is silent again).
    let silent_url = authorize_url(&s.client_id, &[("prompt", "none")]);
    let form: Vec<(String, String)> =
        form_urlencoded::parse(silent_url.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cross_site = Browser::default()
        .post(&h, "/oauth2/authorize", &form)
        .await;
    assert_eq!(cross_site.status, StatusCode::SEE_OTHER);
    let back = location(&cross_site);
    assert!(back.starts_with("/oauth2/authorize?"), "{back}");
    assert_eq!(query_of(&back), query_of(&silent_url));
    let silent = location(&b.get(&h, &back).await);
    assert!(query_of(&silent).contains_key("code"), "{silent}");
    // RP-initiated logout with the ID token of this session, POSTed from
    // the client's site: sent back as a GET, ending nothing yet.
    let sid = idc["sid"].as_str().unwrap();
    let posted = Browser::default()
        .post(
            &h,
            "/oauth2/logout",
            &[
                ("id_token_hint", &id_token),
                ("post_logout_redirect_uri", "https://app.example.com/bye"),
                ("state", "bye-1"),
            ],
        )
        .await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    let logout = location(&posted);
    assert!(logout.starts_with("/oauth2/logout?"), "{logout}");
    assert!(sessions::by_sid(&h.db, sid).await.unwrap().is_some());
    // The browser, with its cookies: no page, back to the registered URI
    // with the state; the session is over.
    let gone = location(&b.get(&h, &logout).await);
    assert_eq!(gone, "https://app.example.com/bye?state=bye-1");
    assert!(sessions::by_sid(&h.db, idc["sid"].as_str().unwrap())
        .await
        .unwrap()
        .is_none());
    let again = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
            .await,
    );
    assert_eq!(query_of(&again)["error"], "login_required");
    h.finish().await;
}

async fn code_replay_revokes_what_it_issued(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    let first = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let access = first.str("access_token");
    // The first use's holder (perhaps the attacker who intercepted the
    // code) refreshes before the replay: that access token goes too.
    let refreshed = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &first.str("refresh_token")),
            ],
            Some((&s.client_id, &s.secret)),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    let (refresh, later) = (
        refreshed.str("refresh_token"),
        refreshed.str("access_token"),
    );
    let second = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(second.error(), "invalid_grant");
    // Presented again and again (a second later): recorded once, by the
    // first replay (its mark, its audit event); the others only read.
    let marked = || async {
        let hash = tessera_server::secret::token_digest(&code);
        let rows: Vec<(Option<i64>,)> = match &h.db {
            tessera_server::Db::Sqlite { writer, .. } => {
                sqlx::query_as("SELECT replayed_at FROM authorization_codes WHERE code_hash = $1")
                    .bind(hash)
                    .fetch_all(writer)
                    .await
            }
            tessera_server::Db::Postgres(pool) => {
                sqlx::query_as("SELECT replayed_at FROM authorization_codes WHERE code_hash = $1")
                    .bind(hash)
                    .fetch_all(pool)
                    .await
            }
        }
        .unwrap();
        rows.first().and_then(|(at,)| *at)
    };
    let first_mark = marked().await;
    assert!(first_mark.is_some());
    h.next_second().await;
    for _ in 0..3 {
        let again = exchange(&h, &s, &code, VERIFIER).await;
        assert_eq!(again.error(), "invalid_grant");
    }
    assert_eq!(marked().await, first_mark);
    // Audit events are written in order: one pushed after the replays (of
    // a kind nothing else here writes) is written after theirs.
    h.app
        .audit
        .push(tessera_server::store::audit::Event::new("backup_written"));
    crate::wait_for_audit(&h, "backup_written", 1).await;
    crate::wait_for_audit(&h, "code_replayed", 1).await;
    // The refresh token and the access token of the first use are dead.
    let refreshed = refresh_with(&h, &s, &refresh).await;
    assert_eq!(refreshed.error(), "invalid_grant", "{}", refreshed.text);
    for (which, token) in [("first", &access), ("refreshed", &later)] {
        let info = bearer_userinfo(&h, token).await;
        assert_eq!(
            info.status,
            StatusCode::UNAUTHORIZED,
            "the {which} access token"
        );
    }
    h.finish().await;
}

/// A client allowed refresh tokens whose sign-in issued none (a
/// third-party client asking without `offline_access`): the code recorded
/// the family it would have started, and a replay revoked only that
/// family, which did not exist, leaving the first access token live.
#[tokio::test]
async fn a_replayed_code_that_issued_no_refresh_token_revokes_its_access_token() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(h) = Harness::new(backend).await else {
            continue;
        };
        let s = setup(&h, "Shop", false).await;
        let code = consented_code(&h, &s).await;
        let first = exchange(&h, &s, &code, VERIFIER).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert!(first.json.get("refresh_token").is_none(), "{}", first.text);
        let access = first.str("access_token");
        let userinfo = || async { bearer_userinfo(&h, &access).await.status };
        assert_eq!(userinfo().await, StatusCode::OK);
        assert_eq!(
            exchange(&h, &s, &code, VERIFIER).await.error(),
            "invalid_grant"
        );
        assert_eq!(userinfo().await, StatusCode::UNAUTHORIZED, "{backend:?}");
        h.finish().await;
    }
}

/// A code replayed after its refresh family was revoked without an event
/// (`/oauth2/revoke` past the client's allowance, which leaves the
/// family's access tokens live) still revokes them: the family's event
/// is appended because the first use started a family, not because the
/// replay was the one to revoke it.
#[tokio::test]
async fn a_replay_reaches_a_family_revoked_before_without_its_event() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(h) = Harness::with(backend, |c| c.client_revocations = 1).await else {
            continue;
        };
        let s = setup(&h, "Shop", true).await;
        let (_browser, code) = signed_in_code(&h, &s).await;
        let first = exchange(&h, &s, &code, VERIFIER).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        let client = Some((s.client_id.as_str(), s.secret.as_str()));
        let refresh = &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first.str("refresh_token")),
        ];
        let refreshed = h.post("/oauth2/token", refresh, client).await;
        let (later, next) = (
            refreshed.str("access_token"),
            refreshed.str("refresh_token"),
        );
        let hr = &h;
        let userinfo = |token: String| async move { bearer_userinfo(hr, &token).await.status };
        // The allowance spent on the first access token; the refresh
        // token's revocation past it revokes the family, and its access
        // tokens live on.
        let revoke = |token: String| async move {
            hr.post("/oauth2/revoke", &[("token", token.as_str())], client)
                .await
                .status
        };
        assert_eq!(revoke(first.str("access_token")).await, StatusCode::OK);
        assert_eq!(revoke(next).await, StatusCode::OK);
        assert_eq!(userinfo(later.clone()).await, StatusCode::OK);
        assert_eq!(
            exchange(&h, &s, &code, VERIFIER).await.error(),
            "invalid_grant"
        );
        assert_eq!(
            userinfo(later).await,
            StatusCode::UNAUTHORIZED,
            "{backend:?}"
        );
        h.finish().await;
    }
}

/// Allow and Deny sent at once for one pending request (two tabs): Allow
/// is held where it writes the consent (PostgreSQL: the table locked by
/// another session), Deny answers meanwhile. Whichever answer the client
/// got, the consent remembered agrees with it: told `access_denied`, the
/// client gets no code from its next silent request. Before, Allow wrote
/// the consent before its code, after Deny had told the client no, and
/// the next `prompt=none` request got a code.
#[tokio::test]
async fn a_consent_denied_in_another_tab_meanwhile_is_not_remembered() {
    use sqlx::Connection;
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    let to_consent = location(&alice_logs_in(&h, &mut b, &s).await);
    let consent = b.get(&h, &to_consent).await;
    let mut holder = sqlx::PgConnection::connect(&h.test_db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE consents IN EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut allowing = Browser {
        cookies: b.cookies.clone(),
    };
    let allow = decide(&h, &mut allowing, &consent, "allow");
    let deny = async {
        // Once Allow is past its first check and waiting.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let denied = decide(&h, &mut b, &consent, "deny").await;
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        denied
    };
    let (allowed, denied) = tokio::join!(allow, deny);
    let told_no = denied.headers.get(header::LOCATION).is_some_and(|l| {
        query_of(l.to_str().unwrap())
            .get("error")
            .map(String::as_str)
            == Some("access_denied")
    });
    let got_code = allowed
        .headers
        .get(header::LOCATION)
        .is_some_and(|l| query_of(l.to_str().unwrap()).contains_key("code"));
    assert!(
        told_no != got_code,
        "one answer: denied {told_no}, code {got_code}"
    );
    let silent = b
        .get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
        .await;
    let silent = query_of(&location(&silent));
    if told_no {
        assert_eq!(
            silent.get("error").map(String::as_str),
            Some("consent_required"),
            "{silent:?}"
        );
    } else {
        assert!(silent.contains_key("code"), "{silent:?}");
    }
    h.finish().await;
}

/// A rotated refresh token presented again (reuse) takes its family's
/// session before the family and the revocation log's lock (PostgreSQL),
/// as a logout and a replayed code take them: the other way round, a
/// reuse holding its family and waiting for the log's lock, and a code of
/// the same session replayed past its allowance, holding the log's lock
/// and ending the session's families, waited for each other.
#[tokio::test]
async fn reuse_takes_the_session_before_its_family() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let tessera_server::Db::Postgres(pool) = &h.db else {
        unreachable!("a PostgreSQL database")
    };
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    let first = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let refresh = |token: String| {
        let (h, s) = (&h, &s);
        async move { refresh_with(h, s, &token).await }
    };
    let old = first.str("refresh_token");
    let next = refresh(old.clone()).await.str("refresh_token");
    // Its successor used: the old token again is reuse, not a retry.
    assert_eq!(refresh(next).await.status, StatusCode::OK);
    let mut holding = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sessions FOR NO KEY UPDATE")
        .execute(&mut *holding)
        .await
        .unwrap();
    let done = AtomicBool::new(false);
    let reuse = async {
        let answer = refresh(old).await;
        done.store(true, Ordering::SeqCst);
        answer
    };
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let waited = !done.load(Ordering::SeqCst);
        holding.commit().await.unwrap();
        waited
    };
    let (answer, waited) = tokio::join!(reuse, release);
    assert!(waited, "the reuse did not wait for the session");
    assert_eq!(answer.error(), "invalid_grant", "{}", answer.text);
    h.finish().await;
}

/// Two tabs on the login page; the person signs in in one, then comes
/// back to the other (or reloads it): it goes on from the session, as the
/// authorization endpoint would, not ask for the password again. A
/// request that asks for a login (`prompt=login`) still gets the form.
async fn a_login_page_of_a_browser_signed_in_meanwhile_goes_on(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let tab_a = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let tab_b = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("login_hint", "alice")]))
            .await,
    );
    let forced = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("prompt", "login")]))
            .await,
    );
    assert!(tab_b.starts_with("/login?request="), "{tab_b}");
    let page = b.get(&h, &tab_a).await;
    let back = b.log_in_on(&h, &page, "alice", "correct horse").await;
    assert!(query_of(&location(&back)).contains_key("code"));
    let onward = b.get(&h, &tab_b).await;
    assert_eq!(onward.status, StatusCode::SEE_OTHER, "{}", onward.text);
    let answer = query_of(&location(&onward));
    assert_eq!(answer["state"], "st-1");
    let tokens = exchange(&h, &s, &answer["code"], VERIFIER).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    // The same page again: answered already.
    let again = b.get(&h, &tab_b).await;
    assert!(again.text.contains("Already done"), "{}", again.text);
    // prompt=login: the form, whatever the session.
    let form = b.get(&h, &forced).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text.contains("name=\"password\""), "{}", form.text);
    h.finish().await;
}

both_backends!(a_login_page_of_a_browser_signed_in_meanwhile_goes_on);

/// The Allow of a consent page grants the scopes the page showed, never
/// more: a scope given to the user after the page was shown (an admin's
/// change meanwhile) makes the form out of date (403), and the page shown
/// again names it. Before, the Allow granted it, and remembered it for
/// later silent requests, unseen.
async fn a_consent_grants_only_what_its_page_showed(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    h.execute("UPDATE users SET scopes = '' WHERE username = 'alice'", &[])
        .await;
    let mut b = Browser::default();
    let to_consent = location(&alice_logs_in(&h, &mut b, &s).await);
    let consent = b.get(&h, &to_consent).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.text);
    assert!(!consent.text.contains("orders:read"), "{}", consent.text);
    h.execute(
        "UPDATE users SET scopes = 'orders:read' WHERE username = 'alice'",
        &[],
    )
    .await;
    let stale = decide(&h, &mut b, &consent, "allow").await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN, "{}", stale.text);
    assert!(stale.headers.get(header::LOCATION).is_none());
    let again = b.get(&h, &to_consent).await;
    assert!(again.text.contains("orders:read"), "{}", again.text);
    let back = location(&decide(&h, &mut b, &again, "allow").await);
    let code = query_of(&back)["code"].clone();
    let tokens = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    assert!(
        tokens.str("scope").contains("orders:read"),
        "{}",
        tokens.text
    );
    h.finish().await;
}

both_backends!(a_consent_grants_only_what_its_page_showed);

/// A consent sent after its session ended (another tab's logout, the idle
/// time) offers one click on: the same request, at the login page; after
/// the login the person is asked again and the application gets its code
/// with its own state. Before, the page said to start over at the
/// application.
async fn a_consent_sent_after_its_session_ended_leads_to_the_login(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    let to_consent = location(&alice_logs_in(&h, &mut b, &s).await);
    assert!(to_consent.starts_with("/consent"), "{to_consent}");
    let consent = b.get(&h, &to_consent).await;
    let started = sessions::of_browser(&h.db, &b.cookies["__Host-tessera-browser"])
        .await
        .unwrap();
    for (sid, _) in &started {
        sessions::end(
            &h.db,
            sid,
            "test",
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
    }
    let late = decide(&h, &mut b, &consent, "allow").await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST, "{}", late.text);
    let again = link(&late.text, "action");
    assert!(again.starts_with("/login?request="), "{again}");
    let page = b.get(&h, &again).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let asked = b.log_in_on(&h, &page, "alice", "correct horse").await;
    let to_consent = location(&asked);
    assert!(to_consent.starts_with("/consent"), "{to_consent}");
    let consent = b.get(&h, &to_consent).await;
    let allowed = decide(&h, &mut b, &consent, "allow").await;
    let answer = query_of(&location(&allowed));
    assert_eq!(answer["state"], "st-1");
    let tokens = exchange(&h, &s, &answer["code"], VERIFIER).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    h.finish().await;
}

both_backends!(a_consent_sent_after_its_session_ended_leads_to_the_login);

/// A username typed with spaces around it (a phone keyboard's, a paste)
/// logs in: no username has them, and "wrong username or password"
/// cost the person one of their tries.
async fn a_username_with_spaces_around_it_logs_in(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    let back = b.log_in_on(&h, &page, " alice  ", "correct horse").await;
    assert!(
        query_of(&location(&back)).contains_key("code"),
        "{}",
        back.text
    );
    h.finish().await;
}

both_backends!(a_username_with_spaces_around_it_logs_in);

/// Replays of many codes of one session at once, past the allowance:
/// each ends the session (revoking its other codes' families) while the
/// others revoke their own. Each locks the session before any family, so
/// none waits for another in a cycle: every one is answered
/// `invalid_grant`, none 503 (a deadlock the database broke).
async fn replays_of_one_sessions_codes_at_once_are_all_refused(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.client_revocations = 1).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (mut b, code) = signed_in_code(&h, &s).await;
    let mut codes = vec![code];
    for _ in 0..7 {
        codes.push(silent_code(&h, &mut b, &s).await);
    }
    for code in &codes {
        let first = exchange(&h, &s, code, VERIFIER).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    }
    for round in 0..3 {
        let replays: Vec<_> = codes
            .iter()
            .map(|code| exchange(&h, &s, code, VERIFIER))
            .collect();
        for replay in futures_util::future::join_all(replays).await {
            assert_eq!(
                replay.error(),
                "invalid_grant",
                "round {round}: {}",
                replay.text
            );
        }
    }
    h.finish().await;
}

both_backends!(replays_of_one_sessions_codes_at_once_are_all_refused);

/// A client that replays codes in a loop (a silent authorize, the code's
/// exchange, its replay) would add a revocation event a round, kept by
/// every guard. Within the allowance a replayed code's token is revoked
/// by itself; past it the session ends, which refuses all its tokens with
/// one event and gives no more codes without a login. Many replays of one
/// code (a thief's) count once, and add its token's event and, since a
/// refresh token came with it, its family's.
async fn replayed_codes_past_the_allowance_end_the_session(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.client_revocations = 1).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (mut b, code) = signed_in_code(&h, &s).await;
    let userinfo = |access: String| {
        let h = &h;
        async move { bearer_userinfo(h, &access).await.status }
    };
    let log = h.app.access.revoked();
    let before = log.since(0, 100).events.len();
    // Three codes of the session, all exchanged.
    let mut tokens = vec![(
        code.clone(),
        exchange(&h, &s, &code, VERIFIER).await.str("access_token"),
    )];
    for _ in 0..2 {
        let code = silent_code(&h, &mut b, &s).await;
        let access = exchange(&h, &s, &code, VERIFIER).await.str("access_token");
        tokens.push((code, access));
    }
    // The first code replayed twenty times at once: its token's event and
    // its family's, one count, the session lives.
    let replays: Vec<_> = (0..20)
        .map(|_| exchange(&h, &s, &tokens[0].0, VERIFIER))
        .collect();
    for replay in futures_util::future::join_all(replays).await {
        assert_eq!(replay.error(), "invalid_grant");
    }
    assert_eq!(
        userinfo(tokens[0].1.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(userinfo(tokens[1].1.clone()).await, StatusCode::OK);
    let events = log.since(0, 100).events;
    assert_eq!(events.len(), before + 2, "the token's and family's events");
    assert!(events[before].json.contains("\"kind\":\"token\""));
    assert!(events[before + 1].json.contains("\"kind\":\"family\""));
    // The second code's replay is past the allowance: the session ends.
    assert_eq!(
        exchange(&h, &s, &tokens[1].0, VERIFIER).await.error(),
        "invalid_grant"
    );
    // The third's adds nothing: its token is refused with the session.
    assert_eq!(
        exchange(&h, &s, &tokens[2].0, VERIFIER).await.error(),
        "invalid_grant"
    );
    for (_, access) in &tokens {
        assert_eq!(userinfo(access.clone()).await, StatusCode::UNAUTHORIZED);
    }
    let events = log.since(0, 100).events;
    assert_eq!(events.len(), before + 3, "and one session event");
    assert!(events.last().unwrap().json.contains("\"kind\":\"session\""));
    let again = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
            .await,
    );
    assert_eq!(query_of(&again)["error"], "login_required");
    h.finish().await;
}

/// A code still in flight when its session ends (a logout, an admin's
/// `session end`, a password change) starts nothing: otherwise whoever
/// holds it would get a refresh token that outlives the logout.
async fn a_code_of_an_ended_session_is_refused(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    let listed = sessions::list(&h.db, Some("alice"), h.app.config.sessions, 100)
        .await
        .unwrap();
    let [session] = listed.as_slice() else {
        panic!("one session: {}", listed.len());
    };
    // A session past its idle time is not live, and not listed as live.
    let no_idle = sessions::SessionPolicy {
        idle: 0,
        ..h.app.config.sessions
    };
    assert!(sessions::list(&h.db, Some("alice"), no_idle, 100)
        .await
        .unwrap()
        .is_empty());
    sessions::end(
        &h.db,
        &session.sid,
        "logout",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .unwrap();
    let refused = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(refused.error(), "invalid_grant", "{}", refused.text);
    // A code of a live session still works.
    let (_browser, code) = signed_in_code(&h, &s).await;
    let tokens = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    h.finish().await;
}

async fn pkce_and_code_binding_attacks_fail(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let other = setup_other(&h).await;
    let mut b = Browser::default();
    // plain PKCE, a missing challenge, response_type=token: refused at the client.
    let plain = authorize_url(&s.client_id, &[])
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let r = b.get(&h, &plain).await;
    assert_eq!(query_of(&location(&r))["error"], "invalid_request");
    let no_pkce = format!(
        "/oauth2/authorize?response_type=code&client_id={}&redirect_uri={}&state=x",
        s.client_id, "https%3A%2F%2Fapp.example.com%2Fcallback"
    );
    assert_eq!(
        query_of(&location(&b.get(&h, &no_pkce).await))["error"],
        "invalid_request"
    );
    let token = b
        .get(
            &h,
            &authorize_url(&s.client_id, &[("response_type", "token")]),
        )
        .await;
    // A repeated parameter is invalid_request (RFC 6749 §3.1), at the
    // redirect URI since the client and the URI are good (§4.1.2.1).
    let back = query_of(&location(&token));
    assert_eq!(back["error"], "invalid_request");
    assert!(!back.contains_key("code") && !back.contains_key("access_token"));
    let token = b
        .get(
            &h,
            &authorize_url(&s.client_id, &[]).replace("response_type=code", "response_type=token"),
        )
        .await;
    assert_eq!(
        query_of(&location(&token))["error"],
        "unsupported_response_type"
    );
    // Unregistered and near-miss redirect URIs: an error page, never a redirect.
    for uri in [
        "https://evil.example.com/callback",
        "https://app.example.com/callback/",
        "https://app.example.com/callback?x=1",
        "https://app.example.com.evil.com/callback",
    ] {
        let url = authorize_url(&s.client_id, &[]).replace(
            "redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback",
            &format!(
                "redirect_uri={}",
                form_urlencoded::byte_serialize(uri.as_bytes()).collect::<String>()
            ),
        );
        let r = b.get(&h, &url).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.headers.get(header::LOCATION).is_none(), "{uri}");
    }
    let unknown = b.get(&h, &authorize_url("nobody", &[])).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.headers.get(header::LOCATION).is_none());
    // A good code, presented without its verifier (as by someone who
    // intercepted it) or to another redirect URI: refused, and neither
    // spends it nor, once it is spent, revokes what it issued.
    let back = location(&alice_logs_in(&h, &mut b, &s).await);
    let code = query_of(&back)["code"].clone();
    // Another client cannot use it (and does not spend it).
    let stolen = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some((&other.client_id, &other.secret)),
        )
        .await;
    assert_eq!(stolen.error(), "invalid_grant");
    let missing = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
            Some((&s.client_id, &s.secret)),
        )
        .await;
    assert_eq!(missing.error(), "invalid_request");
    // Without redirect_uri, which every authorization request names
    // (RFC 6749 §4.1.3): a parameter missing, not a code that is wrong.
    let unnamed = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
            ],
            Some((&s.client_id, &s.secret)),
        )
        .await;
    assert_eq!(unnamed.error(), "invalid_request", "{}", unnamed.text);
    assert!(unnamed.text.contains("redirect_uri"), "{}", unnamed.text);
    const WRONG: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
    let elsewhere = |code: &str| {
        let code = code.to_owned();
        let (id, secret) = (s.client_id.clone(), s.secret.clone());
        let h = &h;
        async move {
            h.post(
                "/oauth2/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", "https://app.example.com/other"),
                    ("code_verifier", VERIFIER),
                ],
                Some((&id, &secret)),
            )
            .await
        }
    };
    let wrong = exchange(&h, &s, &code, WRONG).await;
    assert_eq!(wrong.error(), "invalid_grant");
    assert!(wrong.text.contains("code_verifier"), "{}", wrong.text);
    let malformed = exchange(&h, &s, &code, "short").await;
    assert_eq!(malformed.error(), "invalid_grant");
    let moved = elsewhere(&code).await;
    assert_eq!(moved.error(), "invalid_grant");
    assert!(moved.text.contains("redirect_uri"), "{}", moved.text);
    let tokens = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    let rs = h.client(&[GrantType::ClientCredentials], "openid").await;
    let access = tokens.str("access_token");
    assert!(exchange(&h, &s, &code, WRONG).await.error() == "invalid_grant");
    assert!(elsewhere(&code).await.error() == "invalid_grant");
    assert!(
        h.active(&access, (&rs.0, &rs.1)).await,
        "revoked without the verifier"
    );
    // The client itself presenting it again is a replay: revoked.
    assert_eq!(
        exchange(&h, &s, &code, VERIFIER).await.error(),
        "invalid_grant"
    );
    assert!(!h.active(&access, (&rs.0, &rs.1)).await);
    h.finish().await;
}

async fn setup_other(h: &Harness) -> Setup {
    let added = clients::add(
        &h.db,
        NewClient {
            name: "other".into(),
            grants: vec![GrantType::AuthorizationCode],
            scopes: Scopes::parse("openid").unwrap(),
            redirect_uris: vec![REDIRECT.into()],
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    Setup {
        client_id: added.client_id,
        secret: added.client_secret.unwrap().to_string(),
    }
}

/// `phone` and `address`, standard scopes this server does not offer, are
/// left out of the grant (Core §3.1.2.1: not understood, ignored); a
/// scope the client was not registered for is still refused.
async fn standard_scopes_not_offered_are_left_out_and_unknown_ones_refused(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let url = authorize_url(&s.client_id, &[])
        .replace("scope=openid+profile", "scope=openid+phone+address+profile");
    let back = location(&log_in(&h, &mut b, &url, "correct horse").await);
    let tokens = exchange(&h, &s, &query_of(&back)["code"], VERIFIER).await;
    let granted = tokens.str("scope");
    assert!(granted.contains("openid"), "{granted}");
    assert!(
        !granted.contains("phone") && !granted.contains("address"),
        "{granted}"
    );
    let refused = location(
        &b.get(
            &h,
            &authorize_url(&s.client_id, &[])
                .replace("scope=openid+profile", "scope=openid+admin+profile"),
        )
        .await,
    );
    assert_eq!(query_of(&refused)["error"], "invalid_scope", "{refused}");
    h.finish().await;
}

/// A public client registered (before the rule at registration) with an
/// admin scope and a loopback redirect URI gets no code for the admin
/// scopes: any program on the device could take it at that port. Its
/// other scopes are served.
async fn a_public_client_with_an_open_redirect_gets_no_admin_code(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let added = clients::add(
        &h.db,
        NewClient {
            name: "admin tool".into(),
            grants: vec![GrantType::AuthorizationCode],
            scopes: Scopes::parse("openid tessera:admin").unwrap(),
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            public: true,
            first_party: true,
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let url = |scope: &str| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &added.client_id)
            .append_pair("redirect_uri", "http://127.0.0.1:5555/cb")
            .append_pair("scope", scope)
            .append_pair("state", "st-1")
            .append_pair("code_challenge", CHALLENGE)
            .append_pair("code_challenge_method", "S256");
        format!("/oauth2/authorize?{}", q.finish())
    };
    let mut b = Browser::default();
    let refused = b.get(&h, &url("openid tessera:admin")).await;
    let back = location(&refused);
    assert!(back.starts_with("http://127.0.0.1:5555/cb?"), "{back}");
    assert_eq!(query_of(&back)["error"], "invalid_scope", "{back}");
    // Without the admin scope: on to the login page.
    let served = b.get(&h, &url("openid")).await;
    let next = location(&served);
    assert!(!next.contains("error="), "{next}");
    h.finish().await;
}

/// An `id_token_hint` at the authorization endpoint names the user the
/// relying party expects: a browser signed in as someone else gets
/// `login_required` under `prompt=none` and the login page otherwise; a
/// hint this server did not issue is `invalid_request`.
async fn an_id_token_hint_naming_another_user_needs_a_login(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    h.user("bob", "battery staple", "orders:read").await;
    // Bob's ID token, from his own browser.
    let mut bobs = Browser::default();
    let to_login = location(&bobs.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = bobs.get(&h, &to_login).await;
    let back = location(&bobs.log_in_on(&h, &page, "bob", "battery staple").await);
    let bob_id_token = exchange(&h, &s, &query_of(&back)["code"], VERIFIER)
        .await
        .str("id_token");
    // Alice's browser, and her own ID token.
    let (mut b, code) = signed_in_code(&h, &s).await;
    let alice_id_token = exchange(&h, &s, &code, VERIFIER).await.str("id_token");
    let with = |hint: &str, prompt: Option<&str>| {
        let mut extra = vec![("id_token_hint", hint.to_owned())];
        if let Some(p) = prompt {
            extra.push(("prompt", p.to_owned()));
        }
        let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        authorize_url(&s.client_id, &pairs)
    };
    let own = location(&b.get(&h, &with(&alice_id_token, Some("none"))).await);
    assert!(query_of(&own).contains_key("code"), "{own}");
    let other = location(&b.get(&h, &with(&bob_id_token, Some("none"))).await);
    assert_eq!(query_of(&other)["error"], "login_required", "{other}");
    // Without prompt=none, the login page; Alice logs in there, where Bob
    // was expected: no code for her, an error for the client (Core
    // §3.1.2.1).
    let to_login = location(&b.get(&h, &with(&bob_id_token, None)).await);
    let page = b.get(&h, &to_login).await;
    let (request, csrf) = (
        hidden(&page.text, "request"),
        hidden(&page.text, "csrf_token"),
    );
    let wrong = location(
        &b.log_in_form(&h, &request, &csrf, "alice", "correct horse")
            .await,
    );
    assert_eq!(query_of(&wrong)["error"], "login_required", "{wrong}");
    assert!(!query_of(&wrong).contains_key("code"));
    // The same form again, as Bob this time: the request has had its
    // answer, and no code follows the error.
    let again = b
        .log_in_form(&h, &request, &csrf, "bob", "battery staple")
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{:?}", again.headers);
    assert!(again.text.contains("Already done"));
    // Not an ID token of this server for this client.
    let last = if alice_id_token.ends_with('A') {
        "B"
    } else {
        "A"
    };
    let forged = format!("{}{last}", &alice_id_token[..alice_id_token.len() - 1]);
    let access = exchange(&h, &s, &query_of(&own)["code"], VERIFIER)
        .await
        .str("access_token");
    for bad in [forged.as_str(), "not-a-token", access.as_str()] {
        let r = location(&b.get(&h, &with(bad, None)).await);
        assert_eq!(query_of(&r)["error"], "invalid_request", "{r}");
        assert_eq!(query_of(&r)["state"], "st-1");
    }
    h.finish().await;
}

/// An `id_token_hint` signed under a key this server no longer publishes
/// (an ID token from before a key rotation, which a relying party keeps
/// for its whole session and sends with `prompt=none` to renew silently)
/// asks for a login: `login_required` under `prompt=none`, the login page
/// otherwise, and whoever logs in gets the code. It was `invalid_request`,
/// a hard error for every relying party after each rotation. Who it
/// names, unverified, is never compared: a hint forged under an unknown
/// `kid` gets the same answer whichever user it names, so it cannot tell
/// a client whether the browser's user is the one it guessed. One not
/// shaped as this server's ID token for this client is still
/// `invalid_request`.
async fn an_id_token_hint_whose_key_is_gone_asks_for_a_login(backend: Backend) {
    use tessera_jose::{Algorithm, Claims, SigningKey};
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (mut b, code) = signed_in_code(&h, &s).await;
    let id_token = exchange(&h, &s, &code, VERIFIER).await.str("id_token");
    let (header, claims) = tessera_jose::dangerous::decode_unverified_claims(&id_token).unwrap();
    let alice = claims["sub"].as_str().unwrap().to_owned();
    let with = |hint: &str, silent: bool| {
        let mut extra = vec![("id_token_hint", hint)];
        if silent {
            extra.push(("prompt", "none"));
        }
        authorize_url(&s.client_id, &extra)
    };
    // With its key published, the hint names Alice: a code at once.
    let renewed = location(&b.get(&h, &with(&id_token, true)).await);
    assert!(query_of(&renewed).contains_key("code"), "{renewed}");
    // The key that signed it is taken out (a revocation: the quickest way
    // to a key that is no longer published).
    h.app
        .keys
        .revoke(
            header.kid.as_deref().unwrap(),
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
    assert!(!h
        .app
        .keys
        .jwks_json()
        .contains(header.kid.as_deref().unwrap()));
    let silently = location(&b.get(&h, &with(&id_token, true)).await);
    assert_eq!(query_of(&silently)["error"], "login_required", "{silently}");
    // Interactively: the login page, and Alice's login gets the code.
    let to_login = location(&b.get(&h, &with(&id_token, false)).await);
    assert!(to_login.starts_with("/login?"), "{to_login}");
    let page = b.get(&h, &to_login).await;
    let back = location(&b.log_in_on(&h, &page, "alice", "correct horse").await);
    assert!(query_of(&back).contains_key("code"), "{back}");
    // Forged under a kid never published: the same answer whoever it
    // names, the signed-in user or not.
    let forger = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("never-published");
    let forge = |sub: &str, iss: &str, aud: &str| {
        tessera_jose::jwt::sign(
            &Claims::new().issuer(iss).subject(sub).audience(aud),
            &forger,
        )
        .unwrap()
    };
    for sub in [alice.as_str(), "someone-else"] {
        let r = location(
            &b.get(&h, &with(&forge(sub, crate::ISSUER, &s.client_id), true))
                .await,
        );
        assert_eq!(query_of(&r)["error"], "login_required", "{sub}: {r}");
        assert!(!query_of(&r).contains_key("code"));
    }
    for (iss, aud) in [
        ("https://elsewhere.example", s.client_id.as_str()),
        (crate::ISSUER, "another-client"),
    ] {
        let r = location(&b.get(&h, &with(&forge(&alice, iss, aud), true)).await);
        assert_eq!(query_of(&r)["error"], "invalid_request", "{iss} {aud}: {r}");
    }
    h.finish().await;
}

/// A sign-in that was waiting at the login page when the client's
/// redirect URI was taken out of its registration sends no code there.
async fn a_redirect_uri_removed_during_a_sign_in_gets_no_code(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    h.execute(
        "UPDATE clients SET redirect_uris = 'https://elsewhere.example/cb' WHERE client_id = $1",
        &[&s.client_id],
    )
    .await;
    h.app.clients.forget(&s.client_id);
    let r = b.log_in_on(&h, &page, "alice", "correct horse").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.headers.get(header::LOCATION).is_none());
    assert!(r.text.contains("registration changed"), "{}", r.text);
    h.finish().await;
}

/// A scope taken from the client while a sign-in waits at the login page
/// gets no code, and a code issued before a scope was taken away is not
/// exchanged: either way the client would have been granted, for the
/// token's whole life, a scope it had lost (an admin console demoted
/// keeping `tessera:admin`). Changed in the row itself, so that no
/// cut-off of the client's tokens is written to hide it.
async fn a_scope_taken_from_the_client_during_a_sign_in_is_not_granted(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let demote = || async {
        h.execute(
            "UPDATE clients SET scopes = 'openid profile email offline_access' WHERE client_id = $1",
            &[&s.client_id],
        )
        .await;
        h.app.clients.forget(&s.client_id);
    };
    // A code issued before, exchanged after.
    let (_, code) = signed_in_code(&h, &s).await;
    demote().await;
    let refused = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert_eq!(refused.error(), "invalid_grant");
    assert!(refused.json.get("access_token").is_none());
    // A sign-in waiting at the login page meanwhile.
    h.execute(
        "UPDATE clients SET scopes = 'openid profile email offline_access orders:read' WHERE client_id = $1",
        &[&s.client_id],
    )
    .await;
    h.app.clients.forget(&s.client_id);
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    demote().await;
    let r = b.log_in_on(&h, &page, "alice", "correct horse").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.headers.get(header::LOCATION).is_none());
    assert!(r.text.contains("registration changed"), "{}", r.text);
    h.finish().await;
}

/// The pages' form posts refuse a query beside their body (what a proxy
/// or a log reads in the address would not be what is answered), and a
/// body past the limit sent without a declared length (in chunks) is 413,
/// as one with a declared length is, not a 400 page.
async fn page_forms_refuse_a_query_and_say_too_large(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    let request = hidden(&page.text, "request");
    let csrf = hidden(&page.text, "csrf_token");
    let fields = [
        ("request", request.as_str()),
        ("csrf_token", csrf.as_str()),
        ("username", "alice"),
        ("password", "correct horse"),
    ];
    for path in [
        "/login?username=mallory",
        "/consent?decision=allow",
        "/logout?state=x",
    ] {
        let r = b.post(&h, path, &fields).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert!(r.text.contains("not in the address"), "{path}: {}", r.text);
        assert!(r.headers.get(header::SET_COOKIE).is_none(), "{path}");
    }
    let padding = "x".repeat(20 * 1024);
    let mut large = fields.to_vec();
    large.push(("padding", padding.as_str()));
    for path in ["/login", "/consent"] {
        let r = b.post(&h, path, &large).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            r.text
        );
    }
    // The form as it should be still signs in.
    let r = b.post(&h, "/login", &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    h.finish().await;
}

async fn login_csrf_fixation_and_limits(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 2).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    assert!(page.text.contains("name=\"username\"") && page.text.contains("name=\"password\""));
    let request = hidden(&page.text, "request");
    let csrf = hidden(&page.text, "csrf_token");
    // No CSRF token, or another's: 403, nobody logged in.
    for token in ["", "forged"] {
        let r = b
            .log_in_form(&h, &request, token, "alice", "correct horse")
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{token:?}");
    }
    // Another browser (an attacker's cookie jar) with this form's values.
    let mut attacker = Browser::default();
    let r = attacker
        .log_in_form(&h, &request, &csrf, "alice", "correct horse")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    // A wrong password: the same words for a wrong user.
    let wrong = b.log_in_form(&h, &request, &csrf, "alice", "nope").await;
    assert!(wrong.text.contains("Wrong username or password."));
    let unknown = b.log_in_form(&h, &request, &csrf, "mallory", "nope").await;
    assert!(unknown.text.contains("Wrong username or password."));
    let twice = b.log_in_form(&h, &request, &csrf, "alice", "nope").await;
    assert!(twice.text.contains("Wrong username or password."));
    let limited = b
        .log_in_form(&h, &request, &csrf, "alice", "correct horse")
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    // Rounded up: a client back when told is not refused again (the wait
    // is the window less the few milliseconds since the first failure).
    let retry_after: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after >= h.app.config.login_window.as_secs(),
        "{retry_after}"
    );
    // Counted, though the pages answer 200 (a dashboard sees stuffing).
    let metrics = h.get("/metrics").await.text;
    for reason in ["invalid_credentials", "login_rate_limited"] {
        assert!(
            metrics.contains(&format!(
                "tessera_sign_in_failures_total{{reason=\"{reason}\"}}"
            )),
            "{metrics}"
        );
    }
    h.finish().await;

    // Session fixation: a session cookie planted before the login is
    // not the one after it.
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    b.cookies
        .insert("__Host-tessera-session".into(), "A".repeat(43));
    alice_logs_in(&h, &mut b, &s).await;
    let after = b.cookies.get("__Host-tessera-session").cloned();
    assert!(after.is_some_and(|c| c != "A".repeat(43)));
    h.finish().await;
}

async fn prompt_none_and_logout_attacks(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    let r = b
        .get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
        .await;
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], ISSUER);
    // Logged in but never consented: consent_required.
    let to_consent = location(&alice_logs_in(&h, &mut b, &s).await);
    assert!(to_consent.starts_with("/consent"));
    let r = b
        .get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
        .await;
    assert_eq!(query_of(&location(&r))["error"], "consent_required");
    // Deny: access_denied at the client.
    let consent = b.get(&h, &to_consent).await;
    let denied = location(&decide(&h, &mut b, &consent, "deny").await);
    assert_eq!(query_of(&denied)["error"], "access_denied");
    // Back to the page, and Allow this time: the client was told no, and
    // gets no code after it; the page is gone too.
    let allowed = decide(&h, &mut b, &consent, "allow").await;
    assert_eq!(
        allowed.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        allowed.headers
    );
    assert!(allowed.text.contains("Already done"));
    let page = b.get(&h, &to_consent).await;
    assert!(page.text.contains("Already done"), "{}", page.text);
    // Logout to an unregistered URI: no redirect, and the URI is nowhere
    // on the page; the person may still sign out (a confirmation page,
    // whatever the hint), and the session stands until they do.
    let evil = b
        .get(&h, &format!("/oauth2/logout?client_id={}&post_logout_redirect_uri=https%3A%2F%2Fevil.example.com%2F", s.client_id))
        .await;
    assert_eq!(evil.status, StatusCode::OK, "{}", evil.text);
    assert!(evil.text.contains("Sign out?"));
    assert!(!evil.text.contains("evil.example.com"), "{}", evil.text);
    assert!(evil.headers.get(header::LOCATION).is_none());
    let confirm = b
        .get(&h, &format!("/oauth2/logout?client_id={}", s.client_id))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.text.contains("Sign out?"));
    // A client that no longer exists: the person may still sign out, and
    // its URI, which nothing can vouch for, is not followed.
    let gone = b
        .get(&h, "/oauth2/logout?client_id=deleted-client&post_logout_redirect_uri=https%3A%2F%2Fevil.example.com%2F&state=x")
        .await;
    assert_eq!(gone.status, StatusCode::OK);
    assert!(gone.text.contains("Sign out?"));
    assert!(gone.headers.get(header::LOCATION).is_none());
    assert!(!gone.text.contains("evil.example.com"), "{}", gone.text);
    // An id_token_hint this server cannot read (its key removed since,
    // say, or forged) does not keep the person from signing out: they
    // confirm, and a URI nothing vouches for is not followed.
    for extra in ["", &format!("&client_id={}", s.client_id)] {
        let unread = b
            .get(
                &h,
                &format!("/oauth2/logout?id_token_hint=eyJhbGciOiJSUzI1NiJ9.e30.c2ln&post_logout_redirect_uri=https%3A%2F%2Fevil.example.com%2F&state=x{extra}"),
            )
            .await;
        assert_eq!(unread.status, StatusCode::OK, "{}", unread.text);
        assert!(unread.text.contains("Sign out?"));
        assert!(!unread.text.contains("evil.example.com"), "{}", unread.text);
        assert!(unread.headers.get(header::LOCATION).is_none());
    }
    assert_eq!(
        sessions::list(&h.db, Some("alice"), h.app.config.sessions, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    // The confirmation needs its CSRF token.
    let forged = b.post(&h, "/logout", &[("decision", "logout")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let done = b
        .post(
            &h,
            "/logout",
            &[
                ("csrf_token", &hidden(&confirm.text, "csrf_token")),
                ("decision", "logout"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(
        sessions::list(&h.db, Some("alice"), h.app.config.sessions, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The form sent again once the cookie is gone (Back, a double click
    // whose first answer was dropped): the person goes where the
    // application asked, if it registered that, not to a dead end; an
    // address it did not register is still refused.
    let mut after = Browser::default();
    let again = [
        ("decision", "logout"),
        ("client_id", s.client_id.as_str()),
        ("post_logout_redirect_uri", "https://app.example.com/bye"),
        ("state", "st-9"),
    ];
    let sent = after.post(&h, "/logout", &again).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.text);
    assert_eq!(location(&sent), "https://app.example.com/bye?state=st-9");
    // And it touches no cookie: a form posted from another site carries
    // none either (SameSite=Lax), and removing the session cookie from
    // there would sign the browser out.
    assert!(sent.headers.get(header::SET_COOKIE).is_none());
    let page = after.post(&h, "/logout", &[("decision", "logout")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.headers.get(header::SET_COOKIE).is_none());
    let mut elsewhere = again;
    elsewhere[2] = ("post_logout_redirect_uri", "https://evil.example.com/");
    let refused = after.post(&h, "/logout", &elsewhere).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.headers.get(header::LOCATION).is_none());
    h.finish().await;
}

/// The logout confirmation page. "Stay signed in" goes back to the
/// application that asked (it has signed the person out on its side),
/// and the session stands; before, the person was left on a page that
/// said to close it. And the page still signs out after a login in
/// another tab (`prompt=login`) gave the browser a new session cookie:
/// its CSRF token was the old cookie's, and "Sign out" answered 403.
async fn a_logout_page_outlives_a_login_in_another_tab_and_staying_goes_back(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let first = alice_logs_in(&h, &mut b, &s).await;
    assert!(query_of(&location(&first)).contains_key("code"));
    let live = |h: &Harness| {
        let db = h.db.clone();
        let policy = h.app.config.sessions;
        async move {
            sessions::list(&db, Some("alice"), policy, 100)
                .await
                .unwrap()
                .len()
        }
    };
    let logout = format!(
        "/oauth2/logout?client_id={}&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2Fbye&state=st-5",
        s.client_id
    );
    let page = b.get(&h, &logout).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Sign out?"));
    let fields = [
        "csrf_token",
        "client_id",
        "post_logout_redirect_uri",
        "state",
    ]
    .map(|name| (name, hidden(&page.text, name)));
    let form = |decision: &'static str| -> Vec<(&str, &str)> {
        fields
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain([("decision", decision)])
            .collect()
    };
    let stayed = b.post(&h, "/logout", &form("stay")).await;
    assert_eq!(stayed.status, StatusCode::SEE_OTHER, "{}", stayed.text);
    assert_eq!(location(&stayed), "https://app.example.com/bye?state=st-5");
    assert!(stayed.headers.get(header::SET_COOKIE).is_none());
    assert_eq!(live(&h).await, 1, "staying ends nothing");
    // Another tab: the application asks for a fresh login.
    let before = b.cookies.clone();
    let again = log_in(
        &h,
        &mut b,
        &authorize_url(&s.client_id, &[("prompt", "login")]),
        "correct horse",
    )
    .await;
    assert!(query_of(&location(&again)).contains_key("code"));
    assert_ne!(b.cookies, before, "a new session cookie");
    // The first tab's page signs out whatever session is this browser's.
    let out = form("logout");
    let done = b.post(&h, "/logout", &out).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(location(&done), "https://app.example.com/bye?state=st-5");
    assert_eq!(live(&h).await, 0, "every session of the browser ended");
    // The token is the browser's: another browser's page does not do.
    let mut other = Browser::default();
    log_in(
        &h,
        &mut other,
        &authorize_url(&s.client_id, &[]),
        "correct horse",
    )
    .await;
    let forged = other.post(&h, "/logout", &out).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(live(&h).await, 1);
    h.finish().await;
}

/// What a sign-in got: its session, and its client's tokens.
struct SignedIn {
    sid: String,
    refresh: String,
    id_token: String,
}

/// Two logins of `user` sent from one browser at the same moment (two
/// tabs, a double click on "Sign in"): each starts a session, and the
/// browser keeps the cookie of the first. Returns it, and what each
/// login got (the second one's session is the one the browser lost).
async fn two_logins_at_once(
    h: &Harness,
    s: &Setup,
    user: &str,
    password: &str,
) -> (Browser, [SignedIn; 2]) {
    let mut b = Browser::default();
    let mut pages = Vec::new();
    for _tab in 0..2 {
        let to_login = location(&b.get(h, &authorize_url(&s.client_id, &[])).await);
        let page = b.get(h, &to_login).await;
        pages.push((
            hidden(&page.text, "request"),
            hidden(&page.text, "csrf_token"),
        ));
    }
    let mut other_tab = Browser {
        cookies: b.cookies.clone(),
    };
    let (first, second) = tokio::join!(
        b.log_in_form(h, &pages[0].0, &pages[0].1, user, password),
        other_tab.log_in_form(h, &pages[1].0, &pages[1].1, user, password),
    );
    let mut got = Vec::new();
    for reply in [first, second] {
        let code = query_of(&location(&reply))["code"].clone();
        let tokens = exchange(h, s, &code, VERIFIER).await;
        assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
        let id_token = tokens.str("id_token");
        got.push(SignedIn {
            sid: claims(&id_token)["sid"].as_str().unwrap().to_owned(),
            refresh: tokens.str("refresh_token"),
            id_token,
        });
    }
    let [a, b_] = <[SignedIn; 2]>::try_from(got).ok().unwrap();
    assert_ne!(a.sid, b_.sid, "one session for both logins");
    (b, [a, b_])
}

/// A logout ends the browser's sessions however long they went unused:
/// past the idle time a session no longer signs anyone in, but the refresh
/// tokens of its apps live on. Before, a logout in a browser that had not
/// come back for twelve hours found no session, said "signed out", and
/// ended nothing: another app of the session went on refreshing, on a
/// shared computer for the next person.
async fn a_logout_ends_sessions_gone_idle(backend: Backend) {
    a_logout_ends_sessions_gone_stale(backend, "UPDATE sessions SET last_seen = 1".to_owned())
        .await;
}

/// And past their absolute end (`sessions.absolute`, 7 days by default),
/// as long as refresh tokens of their apps live (`tokens.session_max`, 90
/// days): before, a person who signed out of an app on the eighth day was
/// told "signed out" while the app's refresh token went on for months.
async fn a_logout_ends_sessions_past_their_end(backend: Backend) {
    let ended = tessera_server::store::now() - 120;
    a_logout_ends_sessions_gone_stale(
        backend,
        format!("UPDATE sessions SET expires_at = {ended}, last_seen = {ended}"),
    )
    .await;
}

/// A session past its end that a refresh token issued in it keeps
/// (offline access) is not one the person is signed in by, and listings
/// leave it out; asked for (`offline=true`), it is listed, marked, so
/// that an admin can find it and end it. Before, only the audit trail or
/// an ID token named it.
async fn offline_sessions_are_listed_when_asked_for(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_b, [kept, other]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    let ended = tessera_server::store::now() - 120;
    h.execute(
        &format!("UPDATE sessions SET expires_at = {ended}, last_seen = {ended} WHERE sid = $1"),
        &[&other.sid],
    )
    .await;
    let (id, secret) = h
        .client(&[GrantType::ClientCredentials], "tessera:admin")
        .await;
    let admin = h.client_credentials_token(&id, &secret).await;
    let list = |query: &'static str| {
        let admin = admin.clone();
        let h = &h;
        async move {
            let r = h
                .send(
                    Request::get(format!("/admin/sessions?user=alice{query}"))
                        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.json
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["sid"].as_str().unwrap().to_owned(),
                        s["signed_in"] == true,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("").await, [(kept.sid.clone(), true)]);
    assert_eq!(list("&offline=false").await, [(kept.sid.clone(), true)]);
    let mut all = list("&offline=true").await;
    all.sort();
    let mut expected = vec![(kept.sid.clone(), true), (other.sid.clone(), false)];
    expected.sort();
    assert_eq!(all, expected);
    // Ended, it is listed no more, and its refresh token is dead.
    let ended = h
        .send(
            Request::delete(format!("/admin/sessions/{}", other.sid))
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT, "{}", ended.text);
    assert_eq!(list("&offline=true").await, [(kept.sid.clone(), true)]);
    let refreshed = refresh_with(&h, &s, &other.refresh).await;
    assert_eq!(refreshed.error(), "invalid_grant", "{}", refreshed.text);
    h.finish().await;
}

/// Two sessions of one browser, made stale by `stale` (SQL), then a
/// logout with the ID token of one of them: both end, and the other's
/// refresh token with it.
async fn a_logout_ends_sessions_gone_stale(backend: Backend, stale: String) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (mut b, [kept, other]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    h.execute(&stale, &[]).await;
    let gone = b
        .get(
            &h,
            &format!("/oauth2/logout?id_token_hint={}", kept.id_token),
        )
        .await;
    assert!(!gone.text.contains("Sign out?"), "{}", gone.text);
    for sid in [&kept.sid, &other.sid] {
        let ended = "SELECT COUNT(*) FROM sessions WHERE sid = $1 AND ended_at IS NOT NULL";
        assert_eq!(
            h.count(ended, &[sid]).await,
            1,
            "session {sid} outlived the logout"
        );
        assert!(sessions::by_sid(&h.db, sid).await.unwrap().is_none());
    }
    let refreshed = refresh_with(&h, &s, &other.refresh).await;
    assert_eq!(refreshed.error(), "invalid_grant", "{}", refreshed.text);
    h.finish().await;
}

/// A login page that cannot go on says why: a browser that did not keep
/// the sign-in's cookie is told that cookies are needed, and a sign-in
/// past its 30 minutes that it took too long; before, both were told it
/// "expired, or was started in another browser".
async fn a_dead_sign_in_says_why(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    let id = hidden(&page.text, "request");
    let mut cookieless = Browser::default();
    let blocked = cookieless.get(&h, &to_login).await;
    assert_eq!(blocked.status, StatusCode::BAD_REQUEST);
    assert!(
        blocked.text.contains("did not keep the sign-in"),
        "{}",
        blocked.text
    );

    let browser = b
        .cookies
        .iter()
        .find(|(name, _)| name.ends_with("tessera-browser"))
        .map(|(_, value)| value.clone())
        .unwrap();
    let master = h.app.keys.master();
    let now = tessera_server::store::now();
    let pending = tessera_server::signin::pending::open(&master, &id, &browser, now).unwrap();
    let old = now - tessera_server::signin::pending::LIFETIME - 1;
    let stale =
        tessera_server::signin::pending::seal(&master, &browser, &pending.request, None, None, old)
            .unwrap();
    let late = b.get(&h, &format!("/login?request={stale}")).await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST);
    assert!(late.text.contains("took too long"), "{}", late.text);
    // Not a dead end: "Start again" is the same request sealed afresh,
    // and signing in there answers the application as it asked.
    let again = link(&late.text, "action");
    assert!(again.starts_with("/login?request="), "{again}");
    assert_ne!(again, format!("/login?request={stale}"));
    let page = b.get(&h, &again).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let signed_in = b.log_in_on(&h, &page, "alice", "correct horse").await;
    let back = query_of(&location(&signed_in));
    assert_eq!(back["state"], "st-1");
    assert!(back.contains_key("code"), "{back:?}");
    // Answered once: the stale page started again after that is done.
    let late_again = b.get(&h, &format!("/login?request={stale}")).await;
    let page = b.get(&h, &link(&late_again.text, "action")).await;
    assert!(page.text.contains("Already done"), "{}", page.text);
    // Another browser's sign-in is still "another browser".
    let mut other = Browser::default();
    other.get(&h, &authorize_url(&s.client_id, &[])).await;
    let theirs = other.get(&h, &format!("/login?request={stale}")).await;
    assert!(theirs.text.contains("another browser"), "{}", theirs.text);
    h.finish().await;
}

/// Two logins sent from one browser at once leave two sessions, and the
/// browser keeps one cookie. A logout there ends both, confirmed or by
/// an `id_token_hint` naming either (it ended only the cookie's, and the
/// other session's app kept its refresh tokens and heard of no logout:
/// RP-Initiated Logout 1.0 §2, Back-Channel Logout 1.0 §2.7); and
/// another user's login in that browser ends both too.
async fn a_logout_ends_the_sessions_of_logins_sent_at_once(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    h.user("bob", "battery staple", "orders:read").await;
    let live = |sid: String| {
        let h = &h;
        async move { sessions::by_sid(&h.db, &sid).await.unwrap().is_some() }
    };
    let refreshes = |refresh: String| {
        let (h, s) = (&h, &s);
        async move { refresh_with(h, s, &refresh).await.status == StatusCode::OK }
    };

    // A browser whose session cookie was lost (a login's answer that
    // never reached it, after the session had a new cookie): its logout
    // asks, then ends the session started in it.
    let (mut b, _) = signed_in_code(&h, &s).await;
    let started = sessions::of_browser(&h.db, &b.cookies["__Host-tessera-browser"])
        .await
        .unwrap();
    let [(sid, _)] = started.as_slice() else {
        panic!("{started:?}")
    };
    let sid = sid.clone();
    assert!(b.cookies.remove("__Host-tessera-session").is_some());
    let confirm = b.get(&h, "/oauth2/logout").await;
    assert!(confirm.text.contains("Sign out?"), "{}", confirm.text);
    let done = b
        .post(
            &h,
            "/logout",
            &[
                ("csrf_token", &hidden(&confirm.text, "csrf_token")),
                ("decision", "logout"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert!(!live(sid).await, "the session outlived the logout");

    // A hint naming this session, with an address the client did not
    // register: asked, not ended at once, and the address is not taken.
    let (mut b, [kept, _]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    let asked = b
        .get(
            &h,
            &format!(
                "/oauth2/logout?id_token_hint={}&post_logout_redirect_uri=https%3A%2F%2Fevil.example.com%2F",
                kept.id_token
            ),
        )
        .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.text);
    assert!(asked.text.contains("Sign out?"), "{}", asked.text);
    assert!(!asked.text.contains("evil.example.com"));
    assert!(live(kept.sid.clone()).await);

    // Confirmed on the page, without a hint.
    let (mut b, [kept, lost]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    assert!(live(kept.sid.clone()).await && live(lost.sid.clone()).await);
    let confirm = b.get(&h, "/oauth2/logout").await;
    assert!(confirm.text.contains("Sign out?"), "{}", confirm.text);
    let done = b
        .post(
            &h,
            "/logout",
            &[
                ("csrf_token", &hidden(&confirm.text, "csrf_token")),
                ("decision", "logout"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(!live(kept.sid.clone()).await);
    assert!(
        !live(lost.sid.clone()).await,
        "the other login's session outlived the logout"
    );
    assert!(!refreshes(lost.refresh).await);

    // A hint naming the session whose cookie the browser lost: no page,
    // both end.
    let (mut b, [kept, lost]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    let gone = b
        .get(
            &h,
            &format!("/oauth2/logout?id_token_hint={}", lost.id_token),
        )
        .await;
    assert!(!gone.text.contains("Sign out?"), "asked to confirm");
    assert!(!live(kept.sid).await && !live(lost.sid).await);
    assert!(!refreshes(lost.refresh).await);

    // Bob logs in where both of Alice's sessions are: both end.
    let (mut b, [kept, lost]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    let to_login = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("prompt", "login")]))
            .await,
    );
    let page = b.get(&h, &to_login).await;
    let bobs = b.log_in_on(&h, &page, "bob", "battery staple").await;
    assert!(query_of(&location(&bobs)).contains_key("code"));
    assert!(!live(kept.sid).await);
    assert!(
        !live(lost.sid).await,
        "alice's other session outlived bob's login"
    );

    // A hint naming a session of another user started in this browser
    // (Bob's, here while Alice is signed in) asks before anything ends.
    let (mut b, [alices, _]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    let mut bobs_browser = Browser::default();
    let to_login = location(
        &bobs_browser
            .get(&h, &authorize_url(&s.client_id, &[]))
            .await,
    );
    let page = bobs_browser.get(&h, &to_login).await;
    let back = location(
        &bobs_browser
            .log_in_on(&h, &page, "bob", "battery staple")
            .await,
    );
    let bobs_id_token = exchange(&h, &s, &query_of(&back)["code"], VERIFIER)
        .await
        .str("id_token");
    let bobs_sid = claims(&bobs_id_token)["sid"].as_str().unwrap().to_owned();
    let browser = b
        .cookies
        .iter()
        .find(|(name, _)| name.ends_with("tessera-browser"))
        .map(|(_, value)| value.clone())
        .unwrap();
    let moved = "UPDATE sessions SET browser_hash = $1 WHERE sid = $2";
    let digest = tessera_server::secret::token_digest(&browser);
    let rows = match h.db.write() {
        tessera_server::db::Pool::Sqlite(p) => sqlx::query(moved)
            .bind(&digest)
            .bind(&bobs_sid)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
        tessera_server::db::Pool::Postgres(p) => sqlx::query(moved)
            .bind(&digest)
            .bind(&bobs_sid)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(rows, 1);
    let asked = b
        .get(&h, &format!("/oauth2/logout?id_token_hint={bobs_id_token}"))
        .await;
    assert!(asked.text.contains("Sign out?"), "{}", asked.text);
    assert!(live(alices.sid).await && live(bobs_sid).await);
    h.finish().await;
}

async fn discovery_names_what_is_there(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let m = h.get("/.well-known/openid-configuration").await.json;
    assert_eq!(
        m["authorization_endpoint"],
        format!("{ISSUER}/oauth2/authorize")
    );
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert!(m["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .contains(&"RS256".into()));
    assert!(m["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&"authorization_code".into()));
    // The JWKS holds the access-token key and the ID-token key.
    let jwks: Value = serde_json::from_str(&h.app.keys.jwks_json()).unwrap();
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["alg"].as_str())
        .collect();
    assert!(
        algs.contains(&"ES256") && algs.contains(&"RS256"),
        "{algs:?}"
    );
    h.finish().await;
}

both_backends!(
    a_dead_sign_in_says_why,
    the_consent_page_words_scopes_as_the_operator_wrote_them,
    a_logout_ends_sessions_gone_idle,
    a_logout_ends_sessions_past_their_end,
    code_flow_with_consent_id_token_userinfo_and_logout,
    standard_scopes_not_offered_are_left_out_and_unknown_ones_refused,
    code_replay_revokes_what_it_issued,
    a_logout_ends_the_sessions_of_logins_sent_at_once,
    replayed_codes_past_the_allowance_end_the_session,
    pkce_and_code_binding_attacks_fail,
    login_csrf_fixation_and_limits,
    page_forms_refuse_a_query_and_say_too_large,
    offline_sessions_are_listed_when_asked_for,
    a_redirect_uri_removed_during_a_sign_in_gets_no_code,
    a_scope_taken_from_the_client_during_a_sign_in_is_not_granted,
    an_id_token_hint_naming_another_user_needs_a_login,
    an_id_token_hint_whose_key_is_gone_asks_for_a_login,
    prompt_none_and_logout_attacks,
    a_logout_page_outlives_a_login_in_another_tab_and_staying_goes_back,
    discovery_names_what_is_there,
    query_parameters_are_read_as_strictly_as_forms,
);

/// A query is read by the form body's rules: a broken escape, or escapes
/// that spell no UTF-8, get an error page, the same in a `GET` as in a
/// `POST` (decoded leniently, `%FF` and `%FE` both arrived as U+FFFD and
/// were sent back to the client as such). A parameter given twice is
/// answered at the redirect URI when that is safe (it got an error page).
async fn query_parameters_are_read_as_strictly_as_forms(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let good = b.get(&h, &authorize_url(&s.client_id, &[])).await;
    assert_eq!(good.status, StatusCode::SEE_OTHER);
    for bad in ["%FF", "%zz", "%"] {
        let url = format!("{}&extra={bad}", authorize_url(&s.client_id, &[]));
        let r = b.get(&h, &url).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.headers);
        assert!(r.headers.get(header::LOCATION).is_none());
        let posted = h
            .send(
                Request::post("/oauth2/authorize")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::COOKIE, b.cookie_header())
                    .body(Body::from(url.split_once('?').unwrap().1.to_owned()))
                    .unwrap(),
            )
            .await;
        assert_eq!(posted.status, StatusCode::BAD_REQUEST, "POST {bad}");
        let logout = b
            .get(
                &h,
                &format!("/oauth2/logout?client_id={}&state={bad}", s.client_id),
            )
            .await;
        assert_eq!(logout.status, StatusCode::BAD_REQUEST, "logout {bad}");
    }
    // The text of a parameter's name is not put on this server's pages
    // (a link could show whatever it likes there), nor at the client.
    let lure = "Your+account+is+locked.+Call+%2B1-555-0100";
    let logout = b
        .get(&h, &format!("/oauth2/logout?{lure}=1&{lure}=1"))
        .await;
    assert_eq!(logout.status, StatusCode::BAD_REQUEST);
    assert!(!logout.text.contains("locked"), "{}", logout.text);
    assert!(logout.text.contains("A parameter given more than once"));
    let url = format!("{}&{lure}=1&{lure}=2", authorize_url(&s.client_id, &[]));
    let back = query_of(&location(&b.get(&h, &url).await));
    assert!(!back["error_description"].contains("locked"), "{back:?}");
    // A parameter name of the protocol's is named.
    let named = b.get(&h, "/oauth2/logout?state=a&state=b").await;
    assert!(named.text.contains("Parameter state given more than once"));
    // A POST's parameters are its form body alone: a query beside it, or
    // a body of another type, is refused rather than ignored or read.
    let form = authorize_url(&s.client_id, &[])
        .split_once('?')
        .unwrap()
        .1
        .to_owned();
    for (path, content_type) in [
        (
            "/oauth2/authorize?client_id=other",
            "application/x-www-form-urlencoded",
        ),
        ("/oauth2/authorize", "text/plain"),
        (
            "/oauth2/logout?state=x",
            "application/x-www-form-urlencoded",
        ),
        ("/logout", "text/plain"),
        ("/login", "text/plain"),
        ("/consent", "multipart/form-data; boundary=x"),
    ] {
        let posted = h
            .send(
                Request::post(path)
                    .header(header::CONTENT_TYPE, content_type)
                    .header(header::COOKIE, b.cookie_header())
                    .body(Body::from(form.clone()))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            posted.status,
            StatusCode::BAD_REQUEST,
            "{path} {content_type}"
        );
        assert!(posted.headers.get(header::LOCATION).is_none());
    }
    // The logout's state travels in an address too: bounded as the
    // authorization request's is. Past the bound it is not sent on, and
    // the person still may sign out (signed out here, or asked).
    let long = b
        .get(
            &h,
            &format!(
                "/oauth2/logout?client_id={}&state={}",
                s.client_id,
                "s".repeat(1025)
            ),
        )
        .await;
    assert_eq!(long.status, StatusCode::OK, "{}", long.text);
    assert!(!long.text.contains(&"s".repeat(1025)));
    assert!(long.headers.get(header::LOCATION).is_none());
    // A parameter given twice (RFC 6749 §3.1) is invalid_request at the
    // redirect URI (§4.1.2.1: the client and the URI are good), without
    // the state when that is the one given twice; but a client_id, a
    // redirect_uri or a response_mode given twice is never redirected.
    for (twice, state) in [("scope=openid", Some("st-1")), ("state=st-2", None)] {
        let url = format!("{}&{twice}", authorize_url(&s.client_id, &[]));
        let back = query_of(&location(&b.get(&h, &url).await));
        assert_eq!(back["error"], "invalid_request", "{twice}: {back:?}");
        assert!(back["error_description"].contains("more than once"));
        assert_eq!(back.get("state").map(String::as_str), state, "{twice}");
        assert_eq!(back["iss"], ISSUER);
        assert!(!back.contains_key("code"));
    }
    for twice in [
        format!("client_id={}", s.client_id),
        "redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback".to_owned(),
        "response_mode=query&response_mode=query".to_owned(),
    ] {
        let url = format!("{}&{twice}", authorize_url(&s.client_id, &[]));
        let r = b.get(&h, &url).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{twice}: {:?}",
            r.headers
        );
        assert!(r.headers.get(header::LOCATION).is_none());
    }
    // What the request sent comes back in error_description only as RFC
    // 6749 §4.1.2.1 allows it: printable ASCII, no `"` or `\`, bounded.
    let spoof = format!(
        "\"Your account is locked: call +1 555\" \u{e9}\\ {}",
        "x".repeat(400)
    );
    let url = authorize_url(&s.client_id, &[]).replace(
        "response_type=code",
        &format!(
            "response_type={}",
            form_urlencoded::byte_serialize(spoof.as_bytes()).collect::<String>()
        ),
    );
    let back = query_of(&location(&b.get(&h, &url).await));
    assert_eq!(back["error"], "unsupported_response_type");
    let description = &back["error_description"];
    assert!(
        description
            .chars()
            .all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\'),
        "{description}"
    );
    assert!(description.len() <= 256, "{}", description.len());
    h.finish().await;
}

async fn prompt_max_age_login_hint_and_form_post(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    // login_hint fills in the username.
    let to_login = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("login_hint", "alice")]))
            .await,
    );
    let page = b.get(&h, &to_login).await;
    assert!(page.text.contains("value=\"alice\""), "{}", page.text);
    alice_logs_in(&h, &mut b, &s).await;
    // With a session: a code at once; prompt=login and an exceeded max_age
    // ask for the password again; max_age that holds does not.
    let silent = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    assert!(query_of(&silent).contains_key("code"));
    let first = exchange(&h, &s, &query_of(&silent)["code"], VERIFIER).await;
    let first_refresh = first.str("refresh_token");
    let first_sid = claims(&first.str("id_token"))["sid"].clone();
    let again = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("prompt", "login")]))
            .await,
    );
    assert!(again.starts_with("/login"), "{again}");
    let fresh = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("max_age", "3600")]))
            .await,
    );
    assert!(query_of(&fresh).contains_key("code"), "{fresh}");
    // Any number of seconds: one past 2^64 holds as well; what is not a
    // number is refused.
    let huge = [("max_age", "99999999999999999999999")];
    let huge = location(&b.get(&h, &authorize_url(&s.client_id, &huge)).await);
    assert!(query_of(&huge).contains_key("code"), "{huge}");
    for bad in ["-1", "1e3", " 5", "5s"] {
        let url = authorize_url(&s.client_id, &[("max_age", bad)]);
        let refused = query_of(&location(&b.get(&h, &url).await));
        assert_eq!(refused["error"], "invalid_request", "max_age {bad:?}");
    }
    // A HEAD acts on nothing: no code (the login page of a browser signed
    // in meanwhile issues one), and the session lives on.
    for path in [
        to_login.clone(),
        authorize_url(&s.client_id, &[]),
        format!("/oauth2/logout?id_token_hint={}", first.str("id_token")),
    ] {
        let head = h
            .send(
                Request::head(path.as_str())
                    .header(header::COOKIE, b.cookie_header())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert!(head.headers.get(header::LOCATION).is_none(), "{path}");
    }
    let still = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    assert!(query_of(&still).contains_key("code"), "{still}");
    // max_age=0 is prompt=login, even within the login's own second.
    let zero = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("max_age", "0")]))
            .await,
    );
    assert!(zero.starts_with("/login"), "{zero}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stale = location(
        &b.get(&h, &authorize_url(&s.client_id, &[("max_age", "0")]))
            .await,
    );
    assert!(stale.starts_with("/login"), "{stale}");
    // prompt=login and max_age=0 answered by a fresh login: a code, whose
    // ID token says when.
    let url = authorize_url(&s.client_id, &[("prompt", "login")]);
    let back = location(&log_in(&h, &mut b, &url, "correct horse").await);
    let tokens = exchange(&h, &s, &query_of(&back)["code"], VERIFIER).await;
    let auth_time = claims(&tokens.str("id_token"))["auth_time"]
        .as_i64()
        .unwrap();
    assert!((tessera_server::store::now() - auth_time).abs() <= 2);
    // The same person logging in again goes on in the same session: what
    // it issued before (another app's refresh token) still works.
    assert_eq!(claims(&tokens.str("id_token"))["sid"], first_sid);
    let refreshed = refresh_with(&h, &s, &first_refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    // form_post: a page that posts the code to the redirect URI, with the
    // one script allowed by its hash and a button without it.
    let posted = b
        .get(
            &h,
            &authorize_url(&s.client_id, &[("response_mode", "form_post")]),
        )
        .await;
    assert_eq!(posted.status, StatusCode::OK);
    // The URI as an attribute, escaped (minijinja writes '/' as &#x2f;).
    let action = REDIRECT.replace('/', "&#x2f;");
    assert!(
        posted.text.contains(&format!("action=\"{action}\"")),
        "{}",
        posted.text
    );
    assert!(
        posted.text.contains("name=\"code\"")
            && posted.text.contains("name=\"state\" value=\"st-1\"")
    );
    assert!(posted.text.contains("name=\"iss\""));
    assert!(posted.text.contains("<button"));
    let csp = posted.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'sha256-") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    // Its POST says where it comes from (an `Origin`, not `null`), and
    // nothing more.
    assert_eq!(posted.headers[header::REFERRER_POLICY], "origin");
    // An unsupported response_mode is an error at the client, in the query.
    let bad = b
        .get(
            &h,
            &authorize_url(&s.client_id, &[("response_mode", "fragment")]),
        )
        .await;
    assert_eq!(query_of(&location(&bad))["error"], "invalid_request");
    h.finish().await;
}

async fn prompt_consent_asks_again_and_remembers_more(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    // The consent page's form, allowing.
    let allow = |page: Reply| {
        vec![
            ("request".to_owned(), hidden(&page.text, "request")),
            ("csrf_token".to_owned(), hidden(&page.text, "csrf_token")),
            ("decision".to_owned(), "allow".to_owned()),
        ]
    };
    let narrow = authorize_url(&s.client_id, &[])
        .replace("scope=openid+profile+email+orders%3Aread", "scope=openid");
    let to_consent = location(&log_in(&h, &mut b, &narrow, "correct horse").await);
    let page = b.get(&h, &to_consent).await;
    let form = allow(page);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    location(&b.post(&h, "/consent", &pairs).await);
    // The same scopes: remembered. More scopes: asked again.
    let same = location(&b.get(&h, &narrow).await);
    assert!(query_of(&same).contains_key("code"), "{same}");
    let more = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    assert!(more.starts_with("/consent"), "{more}");
    // prompt=consent asks even for what was allowed.
    let forced = location(&b.get(&h, &format!("{narrow}&prompt=consent")).await);
    assert!(forced.starts_with("/consent"), "{forced}");
    // A consent page submitted twice issues no second code: the second
    // gets the first one's answer again.
    let page = b.get(&h, &forced).await;
    let form = allow(page);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let first = b.post(&h, "/consent", &pairs).await;
    assert!(query_of(&location(&first)).contains_key("code"));
    let second = b.post(&h, "/consent", &pairs).await;
    assert_eq!(location(&second), location(&first));
    h.finish().await;
}

/// A consent page that waited past the request's `max_age` asks for the
/// password again, shown or submitted, when the session's login was made
/// before the request; the login that answers it leads back to consent and
/// to a code whose `auth_time` is fresh. A login made for the request
/// answers its `max_age` however long the consent page waits (no loop).
async fn a_consent_that_outwaits_max_age_asks_for_a_login(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    let allow = |page: &Reply| {
        [
            ("request", hidden(&page.text, "request")),
            ("csrf_token", hidden(&page.text, "csrf_token")),
            ("decision", "allow".to_owned()),
        ]
    };
    // A login made for a request with max_age=1, whose consent waits 2 s:
    // allowed, a code.
    let url = authorize_url(&s.client_id, &[("max_age", "1")]);
    let to_consent = location(&log_in(&h, &mut b, &url, "correct horse").await);
    assert!(to_consent.starts_with("/consent"), "{to_consent}");
    let page = b.get(&h, &to_consent).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let form = allow(&page);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let back = location(&b.post(&h, "/consent", &pairs).await);
    assert!(query_of(&back).contains_key("code"), "{back}");

    // The same session, a new request with max_age=3 that it meets now;
    // its consent page waits past it.
    let url = authorize_url(&s.client_id, &[("max_age", "3"), ("prompt", "consent")]);
    let to_consent = location(&b.get(&h, &url).await);
    assert!(to_consent.starts_with("/consent"), "{to_consent}");
    let page = b.get(&h, &to_consent).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    // Shown again, or allowed: the login page, for the same request.
    let shown = location(&b.get(&h, &to_consent).await);
    assert!(shown.starts_with("/login?request="), "{shown}");
    let form = allow(&page);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let to_login = location(&b.post(&h, "/consent", &pairs).await);
    assert!(to_login.starts_with("/login?request="), "{to_login}");
    // Logging in again leads back to consent, then to a fresh auth_time.
    let login = b.get(&h, &to_login).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let again = b.log_in_on(&h, &login, "alice", "correct horse").await;
    let to_consent = location(&again);
    assert!(to_consent.starts_with("/consent"), "{to_consent}");
    let page = b.get(&h, &to_consent).await;
    let form = allow(&page);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let back = location(&b.post(&h, "/consent", &pairs).await);
    let tokens = exchange(&h, &s, &query_of(&back)["code"], VERIFIER).await;
    let auth_time = claims(&tokens.str("id_token"))["auth_time"]
        .as_i64()
        .unwrap();
    assert!(tessera_server::store::now() - auth_time <= 2, "{auth_time}");

    // A login made for the request holds its max_age for two minutes, not
    // for as long as the consent page stays open (the login moved back
    // in the database instead of waiting).
    let url = authorize_url(
        &s.client_id,
        &[("max_age", "1"), ("prompt", "login consent")],
    );
    let to_consent = location(&log_in(&h, &mut b, &url, "correct horse").await);
    assert!(to_consent.starts_with("/consent"), "{to_consent}");
    let page = b.get(&h, &to_consent).await;
    h.execute("UPDATE sessions SET auth_time = auth_time - 121", &[])
        .await;
    let form = allow(&page);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let to_login = location(&b.post(&h, "/consent", &pairs).await);
    assert!(to_login.starts_with("/login?request="), "{to_login}");
    h.finish().await;
}

async fn backchannel_logout_is_retried_until_acknowledged(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    // A client endpoint that fails its first delivery and keeps the rest.
    let calls = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let (c, r) = (Arc::clone(&calls), Arc::clone(&received));
    let receiver = axum::Router::new().route(
        "/bc",
        axum::routing::post(move |body: String| {
            let (c, r) = (Arc::clone(&c), Arc::clone(&r));
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                r.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let s = backchannel_client(&h, &format!("http://127.0.0.1:{port}/bc")).await;
    h.user("alice", "correct horse", "").await;
    let mut b = Browser::default();
    let url = authorize_url(&s.client_id, &[])
        .replace("scope=openid+profile+email+orders%3Aread", "scope=openid");
    let back = location(&log_in(&h, &mut b, &url, "correct horse").await);
    let tokens = exchange(&h, &s, &query_of(&back)["code"], VERIFIER).await;
    let sid = claims(&tokens.str("id_token"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    // The access token carries the session, so ending the session
    // revokes it (here, and on the revocation feed).
    let access = tokens.str("access_token");
    assert_eq!(claims(&access)["sid"], sid.as_str());
    let userinfo = |token: String| {
        let h = &h;
        async move { bearer_userinfo(h, &token).await.status }
    };
    assert_eq!(userinfo(access.clone()).await, StatusCode::OK);
    sessions::end(
        &h.db,
        &sid,
        "test",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .unwrap();
    h.app.access.revoked().sync(&h.db).await.unwrap();
    assert_eq!(userinfo(access).await, StatusCode::UNAUTHORIZED);

    let http = tessera_server::signin::backchannel::http_client().unwrap();
    let deliver = || tessera_server::signin::backchannel::deliver_due(h.app.deliver(), &http);
    assert_eq!(deliver().await.unwrap(), 0, "the first attempt is refused");
    assert_eq!(
        deliver().await.unwrap(),
        0,
        "not due again before its backoff"
    );
    // Its backoff over (moved forward here rather than waited for).
    let waiting = tessera_server::store::logouts::due(&h.db, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].attempts, 1);
    h.execute(
        "UPDATE logout_deliveries SET next_attempt_at = 0 WHERE id = $1",
        &[&waiting[0].id],
    )
    .await;
    assert_eq!(deliver().await.unwrap(), 1);
    assert_eq!(
        tessera_server::store::logouts::waiting(&h.db)
            .await
            .unwrap(),
        0
    );
    // The token the client got: a logout token for this session.
    let body = received.lock().unwrap()[0].clone();
    let token = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .unwrap()
        .1
        .into_owned();
    let jwks = tessera_jose::JwkSet::from_json(&h.app.keys.jwks_json()).unwrap();
    let keys = tessera_jose::KeySet::from_jwks(&jwks).unwrap();
    let verified = tessera_jose::jwt::verify::<Value>(
        &token,
        &keys,
        &tessera_jose::Validation::new()
            .issuer(ISSUER)
            .audience(&s.client_id)
            .typ("logout+jwt")
            .require("jti"),
    )
    .unwrap();
    assert_eq!(verified.claims.custom["sid"], sid.as_str());
    assert!(
        verified.claims.custom["events"]["http://schemas.openid.net/event/backchannel-logout"]
            .is_object()
    );
    assert!(verified.claims.custom.get("nonce").is_none());
    h.finish().await;
}

/// A client that answers 400 (Back-Channel Logout §2.8: "the logout
/// failed") is sent the logout three times, not for a day; one that is
/// unreachable (503) is still retried. The metric counts each outcome
/// apart.
async fn a_logout_the_client_answers_400_is_given_up_after_three_attempts(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (refused_got, down_got) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let refusing = logout_receiver(StatusCode::BAD_REQUEST, None, Arc::clone(&refused_got)).await;
    let down = logout_receiver(StatusCode::SERVICE_UNAVAILABLE, None, Arc::clone(&down_got)).await;
    let refusing = backchannel_client(&h, &refusing).await;
    let down = backchannel_client(&h, &down).await;
    let alice = h.user("alice", "correct horse", "").await;
    ended_session_with(&h, &alice, &refusing.client_id).await;
    ended_session_with(&h, &alice, &down.client_id).await;
    let http = tessera_server::signin::backchannel::http_client().unwrap();
    for _ in 0..5 {
        tessera_server::signin::backchannel::deliver_due(h.app.deliver(), &http)
            .await
            .unwrap();
        // Each backoff over at once.
        h.execute("UPDATE logout_deliveries SET next_attempt_at = 0", &[])
            .await;
    }
    assert_eq!(refused_got.load(Ordering::SeqCst), 3);
    assert_eq!(down_got.load(Ordering::SeqCst), 5);
    let waiting = tessera_server::store::logouts::due(&h.db, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1, "only the unreachable client's");
    assert_eq!(waiting[0].client_id, down.client_id);
    // The metric tells the two apart, and counts the logout given up
    // (the 503s were counted as "refused", and giving up not at all).
    let metrics = h.get("/metrics").await.text;
    for outcome in ["refused", "failed_status", "given_up"] {
        assert!(
            metrics.contains(&format!(
                "tessera_backchannel_logouts_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome}: {metrics}"
        );
    }
    h.finish().await;
}

/// A session of `user_id` in which `client_id` got a code, ended: one
/// back-channel delivery queued per client of the session that asked.
async fn ended_session_with(h: &Harness, user_id: &str, client_id: &str) {
    let (_, session) = h.start_session(user_id, h.app.config.sessions).await;
    sessions::add_client(&h.db, &session.sid, client_id)
        .await
        .unwrap();
    sessions::end(
        &h.db,
        &session.sid,
        "test",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .unwrap();
}

/// A receiver of logout tokens at `/bc`, answering with `answer` once
/// `release` lets it (at once when `None`); counts what it got.
async fn logout_receiver(
    answer: StatusCode,
    release: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    got: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    let receiver = axum::Router::new().route(
        "/bc",
        axum::routing::post(move |_body: String| {
            let (release, got) = (release.clone(), std::sync::Arc::clone(&got));
            async move {
                if let Some(release) = release {
                    drop(release.acquire().await.unwrap());
                }
                got.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                answer
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    format!("http://127.0.0.1:{port}/bc")
}

/// A client whose endpoint does not answer holds up no other client's
/// logouts: they are sent side by side, not one after another behind
/// its timeouts.
async fn a_silent_backchannel_client_holds_up_no_other(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    // The slow client's endpoint answers only after the healthy one got
    // its token: one after another, each of its deliveries would time out
    // first (5 s each) and the healthy one would come last.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (slow_got, healthy_got) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let slow_uri = logout_receiver(
        StatusCode::OK,
        Some(Arc::clone(&release)),
        Arc::clone(&slow_got),
    )
    .await;
    let healthy = {
        let (release, got) = (Arc::clone(&release), Arc::clone(&healthy_got));
        let receiver = axum::Router::new().route(
            "/bc",
            axum::routing::post(move |_body: String| {
                let (release, got) = (Arc::clone(&release), Arc::clone(&got));
                async move {
                    got.fetch_add(1, Ordering::SeqCst);
                    release.add_permits(1000);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, receiver).await });
        format!("http://127.0.0.1:{port}/bc")
    };
    let slow = backchannel_client(&h, &slow_uri).await;
    let fine = backchannel_client(&h, &healthy).await;
    let alice = h.user("alice", "correct horse", "").await;
    for _ in 0..4 {
        ended_session_with(&h, &alice, &slow.client_id).await;
    }
    // The healthy client's logout comes due after the slow ones.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ended_session_with(&h, &alice, &fine.client_id).await;
    let delivered = one_delivery_round(&h).await;
    assert_eq!(healthy_got.load(Ordering::SeqCst), 1);
    assert_eq!(
        (delivered, slow_got.load(Ordering::SeqCst)),
        (5, 4),
        "the slow client's deliveries were answered once the healthy one was in, none timed out"
    );
    h.finish().await;
}

/// A client whose endpoint fails, with a flood of logouts queued before
/// another client's one: the other client's logout is delivered in the
/// same round, and the failing client's other due logouts wait with the
/// one that failed, each counting an attempt. Before, the oldest fifty
/// filled every round, and the other logout waited behind the whole
/// flood.
async fn a_failing_backchannel_client_takes_a_share_of_a_round(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (failing_got, healthy_got) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failing_uri = logout_receiver(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        Arc::clone(&failing_got),
    )
    .await;
    let healthy_uri = logout_receiver(StatusCode::OK, None, Arc::clone(&healthy_got)).await;
    let failing = backchannel_client(&h, &failing_uri).await;
    let healthy = backchannel_client(&h, &healthy_uri).await;
    let alice = h.user("alice", "correct horse", "").await;
    for _ in 0..60 {
        ended_session_with(&h, &alice, &failing.client_id).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ended_session_with(&h, &alice, &healthy.client_id).await;
    let delivered = one_delivery_round(&h).await;
    assert_eq!((delivered, healthy_got.load(Ordering::SeqCst)), (1, 1));
    // The round is filled: its 49 other places go to the failing client.
    assert_eq!(failing_got.load(Ordering::SeqCst), 49);
    // Its other 11 wait with those that failed.
    let now = tessera_server::store::now();
    let due = tessera_server::store::logouts::due(&h.db, now, 100)
        .await
        .unwrap();
    assert!(due.is_empty(), "{} due", due.len());
    let waiting = tessera_server::store::logouts::due(&h.db, now + 60, 100)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 60);
    assert!(waiting.iter().all(|d| d.attempts == 1), "{waiting:?}");
    h.finish().await;
}

/// An endpoint that answers one logout with an error of its own (a 404:
/// the session unknown to it) holds up none of its client's other
/// logouts: only a failing endpoint (unreachable, a 5xx, a 429) puts them
/// off. Before, any answer but 200, 204 or 400 put every due logout of
/// the client off to the failed one's backoff, up to 4 h, charging each
/// an attempt it never made. And any 2xx acknowledges.
async fn one_refused_backchannel_logout_holds_up_no_other(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (refusing_got, accepting_got) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let refusing_uri =
        logout_receiver(StatusCode::NOT_FOUND, None, Arc::clone(&refusing_got)).await;
    let accepting_uri =
        logout_receiver(StatusCode::ACCEPTED, None, Arc::clone(&accepting_got)).await;
    let refusing = backchannel_client(&h, &refusing_uri).await;
    let accepting = backchannel_client(&h, &accepting_uri).await;
    let alice = h.user("alice", "correct horse", "").await;
    for _ in 0..60 {
        ended_session_with(&h, &alice, &refusing.client_id).await;
    }
    ended_session_with(&h, &alice, &accepting.client_id).await;
    let delivered = one_delivery_round(&h).await;
    assert_eq!((delivered, accepting_got.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(refusing_got.load(Ordering::SeqCst), 49);
    // The eleven not tried are due still, and never counted an attempt.
    let now = tessera_server::store::now();
    let due = tessera_server::store::logouts::due(&h.db, now, 100)
        .await
        .unwrap();
    assert_eq!(due.len(), 11, "{due:?}");
    assert!(due.iter().all(|d| d.attempts == 0), "{due:?}");
    h.finish().await;
}

/// Two instances delivering at once: each delivery is attempted once
/// per round and counted once, not once per instance.
async fn instances_take_each_backchannel_delivery_once(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let got = Arc::new(AtomicUsize::new(0));
    // Refuses every delivery, a little slowly, so that rounds overlap.
    let slowly = Arc::new(tokio::sync::Semaphore::new(0));
    let uri = logout_receiver(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(Arc::clone(&slowly)),
        Arc::clone(&got),
    )
    .await;
    let client = backchannel_client(&h, &uri).await;
    let alice = h.user("alice", "correct horse", "").await;
    for _ in 0..3 {
        ended_session_with(&h, &alice, &client.client_id).await;
    }
    let http = tessera_server::signin::backchannel::http_client().unwrap();
    let round = || tessera_server::signin::backchannel::deliver_due(h.app.deliver(), &http);
    let opener = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        slowly.add_permits(1000);
    };
    let (first, second, ()) = tokio::join!(round(), round(), opener);
    assert_eq!((first.unwrap(), second.unwrap()), (0, 0));
    assert_eq!(got.load(Ordering::SeqCst), 3, "each delivery sent once");
    let waiting = tessera_server::store::logouts::due(&h.db, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 3);
    assert!(waiting.iter().all(|d| d.attempts == 1), "{waiting:?}");
    // A delivery taken is not taken again until its lease ends, and then is.
    let at = tessera_server::store::now() + 3600;
    let claim = |limit| tessera_server::store::logouts::claim(&h.db, at, at + 60, limit);
    assert_eq!(claim(2).await.unwrap().len(), 2, "no more than the limit");
    assert_eq!(claim(10).await.unwrap().len(), 1);
    assert!(claim(10).await.unwrap().is_empty());
    let taken_over = tessera_server::store::logouts::claim(&h.db, at + 60, at + 120, 10)
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 3);
    // The attempt whose lease ran out reports late: the one that took the
    // delivery over reports it, not both.
    let retry = |held_until| {
        tessera_server::store::logouts::retry_at(&h.db, &taken_over[0].id, held_until, at + 500)
    };
    assert!(
        !retry(at + 60).await.unwrap(),
        "a lease that ran out reported"
    );
    assert!(retry(at + 120).await.unwrap());
    let attempts = tessera_server::store::logouts::due(&h.db, i64::MAX, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == taken_over[0].id)
        .unwrap()
        .attempts;
    assert_eq!(attempts, 2, "the attempt counted once");
    h.finish().await;
}

/// A first-party client for `openid`, told of logouts at `uri`.
/// One round of the back-channel deliveries due: how many were delivered.
async fn one_delivery_round(h: &Harness) -> usize {
    let http = tessera_server::signin::backchannel::http_client().unwrap();
    tessera_server::signin::backchannel::deliver_due(h.app.deliver(), &http)
        .await
        .unwrap()
}

async fn backchannel_client(h: &Harness, uri: &str) -> Setup {
    let added = clients::add(
        &h.db,
        NewClient {
            name: "bc".into(),
            grants: vec![GrantType::AuthorizationCode],
            scopes: Scopes::parse("openid").unwrap(),
            redirect_uris: vec![REDIRECT.into()],
            backchannel_logout_uri: Some(uri.into()),
            first_party: true,
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    Setup {
        client_id: added.client_id,
        secret: added.client_secret.unwrap().to_string(),
    }
}

async fn operators_templates_and_theme_are_used(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("login.html"),
        "<!doctype html><html lang=\"{{ lang }}\"><title>Connexion</title><h1>Connexion à {{ product }}</h1>\
         <p>{{ client_name }}</p>{% if error_code %}<p>[{{ error_code }}]</p>{% endif %}<form method=post action=/login>\
         <input type=hidden name=\"request\" value=\"{{ request_id }}\"><input type=hidden name=\"csrf_token\" value=\"{{ csrf_token }}\">\
         <input name=username><input name=password type=password><button>Entrer</button></form></html>",
    )
    .unwrap();
    let templates = dir.path().to_owned();
    let Some(h) = Harness::with(backend, move |c| {
        c.pages.product_name = "Acme <Corp>".into();
        c.pages.lang = "fr".into();
        c.pages.accent = "#aa0000".into();
        c.pages.templates = Some(templates);
    })
    .await
    else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    assert!(
        page.text.contains("Connexion à Acme &lt;Corp&gt;"),
        "{}",
        page.text
    );
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert!(page.text.contains("<html lang=\"fr\">"), "{}", page.text);
    // A built-in page, not replaced, stays English, and says so.
    let built_in = b.get(&h, "/login?request=gone").await;
    assert!(
        built_in.text.contains("<html lang=\"en\">"),
        "{}",
        built_in.text
    );
    // A template in another language words an error by its key.
    let wrong = b
        .post(
            &h,
            "/login",
            &[
                ("request", &hidden(&page.text, "request")),
                ("csrf_token", &hidden(&page.text, "csrf_token")),
                ("username", "alice"),
                ("password", "not it"),
            ],
        )
        .await;
    assert!(wrong.text.contains("[wrong_credentials]"), "{}", wrong.text);
    // The built-in templates not replaced stay; the theme's colour is in
    // the stylesheet.
    let css = h.get("/assets/tessera.css").await;
    assert!(css.text.contains("--accent: #aa0000"));
    let back = location(&alice_logs_in(&h, &mut b, &s).await);
    assert!(query_of(&back).contains_key("code"));
    h.finish().await;
}

/// Answers of the sign-in routes that no page template makes (axum's
/// 405, a rejected query) still may not be framed, sniffed or cached.
async fn every_answer_of_the_sign_in_routes_carries_the_strict_headers(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    for (status, reply) in [
        (StatusCode::METHOD_NOT_ALLOWED, h.get("/logout").await),
        (
            StatusCode::BAD_REQUEST,
            h.get("/login?request=a&request=b").await,
        ),
    ] {
        assert_eq!(reply.status, status, "{}", reply.text);
        let csp = reply.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
        // The issuer is https: browsers are told to come back over https.
        assert_eq!(
            reply.headers[header::STRICT_TRANSPORT_SECURITY],
            "max-age=31536000"
        );
    }
    // A page's own policy stays.
    let css = h.get("/assets/tessera.css").await;
    assert_eq!(css.status, StatusCode::OK);
    h.finish().await;
}

both_backends!(
    a_public_client_with_an_open_redirect_gets_no_admin_code,
    every_answer_of_the_sign_in_routes_carries_the_strict_headers,
    prompt_max_age_login_hint_and_form_post,
    a_consent_that_outwaits_max_age_asks_for_a_login,
    prompt_consent_asks_again_and_remembers_more,
    backchannel_logout_is_retried_until_acknowledged,
    a_logout_the_client_answers_400_is_given_up_after_three_attempts,
    a_silent_backchannel_client_holds_up_no_other,
    a_failing_backchannel_client_takes_a_share_of_a_round,
    one_refused_backchannel_logout_holds_up_no_other,
    instances_take_each_backchannel_delivery_once,
    operators_templates_and_theme_are_used,
);

async fn a_code_presented_twice_at_once_is_spent_once(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    // Several exchanges of one code in flight together (one group of the
    // code writer, or several): one gets tokens, the others invalid_grant,
    // and what the winner got is revoked (the code was used twice).
    let (a, b2, c) = tokio::join!(
        exchange(&h, &s, &code, VERIFIER),
        exchange(&h, &s, &code, VERIFIER),
        exchange(&h, &s, &code, VERIFIER)
    );
    let replies = [a, b2, c];
    let winners: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert!(winners.len() <= 1, "{replies:?}");
    assert!(
        replies
            .iter()
            .filter(|r| r.error() == "invalid_grant")
            .count()
            >= 2
    );
    for winner in winners {
        let refreshed = h
            .post(
                "/oauth2/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &winner.str("refresh_token")),
                ],
                Some((&s.client_id, &s.secret)),
            )
            .await;
        assert_eq!(refreshed.error(), "invalid_grant", "{}", refreshed.text);
        let info = h
            .send(
                Request::get("/oauth2/userinfo")
                    .header(
                        header::AUTHORIZATION,
                        format!("Bearer {}", winner.str("access_token")),
                    )
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(info.status, StatusCode::UNAUTHORIZED);
    }
    h.finish().await;
}

both_backends!(
    a_code_presented_twice_at_once_is_spent_once,
    a_code_of_an_ended_session_is_refused
);

async fn disabling_deleting_or_repassing_a_user_ends_their_sessions(backend: Backend) {
    use tessera_server::store::{logouts, users};
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let added = backchannel_client(&h, "https://app.example.com/bc").await;
    h.user("alice", "correct horse", "").await;
    let url = authorize_url(&added.client_id, &[])
        .replace("scope=openid+profile+email+orders%3Aread", "scope=openid");
    let sign_in = || async {
        let mut b = Browser::default();
        let back = location(&log_in(&h, &mut b, &url, "correct horse").await);
        assert!(query_of(&back).contains_key("code"));
        b
    };
    let live = || async {
        sessions::list(&h.db, Some("alice"), h.app.config.sessions, 100)
            .await
            .unwrap()
            .len()
    };

    let mut b = sign_in().await;
    assert_eq!(live().await, 1);
    users::set_disabled(
        &h.db,
        "alice",
        true,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert_eq!(live().await, 0);
    assert_eq!(
        logouts::waiting(&h.db).await.unwrap(),
        1,
        "the client is told"
    );
    // The browser's session is over: prompt=none says so.
    let none = location(&b.get(&h, &format!("{url}&prompt=none")).await);
    assert_eq!(query_of(&none)["error"], "login_required");

    users::set_disabled(
        &h.db,
        "alice",
        false,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    sign_in().await;
    let hash = h.hash("a new password").await;
    users::set_password(
        &h.db,
        "alice",
        &hash,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert_eq!(live().await, 0);
    assert_eq!(logouts::waiting(&h.db).await.unwrap(), 2);

    users::set_password(
        &h.db,
        "alice",
        &h.hash("correct horse").await,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    sign_in().await;
    users::delete(
        &h.db,
        "alice",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert_eq!(
        logouts::waiting(&h.db).await.unwrap(),
        3,
        "told before the sessions went"
    );
    h.finish().await;
}

both_backends!(disabling_deleting_or_repassing_a_user_ends_their_sessions);

async fn pending_requests_cost_no_storage_and_are_answered_once(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    // Many authorization requests without a session: each gets its login
    // page, and none writes a row.
    let mut b = Browser::default();
    let mut first = String::new();
    for i in 0..20 {
        let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
        assert!(to_login.starts_with("/login?request="));
        if i == 0 {
            first = to_login;
        }
    }
    let count = |table: &'static str| {
        let db = h.db.clone();
        async move {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            match &db {
                tessera_server::Db::Sqlite { reader, .. } => {
                    sqlx::query_as::<_, (i64,)>(&sql)
                        .fetch_one(reader)
                        .await
                        .unwrap()
                        .0
                }
                tessera_server::Db::Postgres(pool) => {
                    sqlx::query_as::<_, (i64,)>(&sql)
                        .fetch_one(pool)
                        .await
                        .unwrap()
                        .0
                }
            }
        }
    };
    assert_eq!(count("authorization_codes").await, 0);
    assert_eq!(count("sessions").await, 0);
    // The first one's pages, to the end: login, consent, a code.
    let page = b.get(&h, &first).await;
    let to_consent = location(&b.log_in_on(&h, &page, "alice", "correct horse").await);
    let consent = b.get(&h, &to_consent).await;
    let allowed = decide(&h, &mut b, &consent, "allow").await;
    assert!(query_of(&location(&allowed)).contains_key("code"));
    // Answered: its login page and its consent page say so, and cannot
    // issue a second code.
    for page in [&first, &to_consent] {
        let again = b.get(&h, page).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{page}");
        assert!(again.text.contains("Already done"), "{}", again.text);
    }
    assert_eq!(count("authorization_codes").await, 1);
    h.finish().await;
}

both_backends!(pending_requests_cost_no_storage_and_are_answered_once);

async fn an_issuer_with_a_trailing_slash_is_kept_as_written(backend: Backend) {
    let slashed = format!("{ISSUER}/");
    let issuer = slashed.clone();
    let Some(h) = Harness::with(backend, move |c| {
        *c = tessera_server::Config::resolve(tessera_server::Overrides {
            data_dir: Some(c.data_dir.clone()),
            database_url: Some(c.database_url.clone()),
            issuer: Some(issuer),
            ..tessera_server::Overrides::default()
        })
        .unwrap();
    })
    .await
    else {
        return;
    };
    let m = h.get("/.well-known/openid-configuration").await.json;
    assert_eq!(m["issuer"], slashed.as_str());
    assert_eq!(m["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    assert_eq!(m["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "").await;
    let token = h.client_credentials_token(&id, &secret).await;
    assert_eq!(claims(&token)["iss"], slashed.as_str());
    // A code flow's `iss` response parameter and ID token say the same.
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    let tokens = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(claims(&tokens.str("id_token"))["iss"], slashed.as_str());
    h.finish().await;
}

both_backends!(an_issuer_with_a_trailing_slash_is_kept_as_written);

/// An exchange dropped while its code is being spent (the request
/// timeout; here another connection holds the write lock or the code's
/// row) leaves the code usable: the claim is not made once its caller
/// has gone, or, made, it is released. The client's retry gets its
/// tokens, and nothing is revoked. Before, the release was armed only
/// once the claim had returned: the retry was a replay, which revokes
/// what the session had.
async fn an_exchange_dropped_while_its_code_is_spent_can_be_retried(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    let lock = "SELECT code_hash FROM authorization_codes WHERE code_hash = $1 FOR UPDATE";
    let dropped = h
        .dropped_while_held(
            (lock, &tessera_server::secret::token_digest(&code)),
            exchange(&h, &s, &code, VERIFIER),
        )
        .await;
    assert!(dropped.is_err(), "answered while blocked: {dropped:?}");
    // Whatever the dropped exchange left running settles: the code is
    // unspent (never claimed, or released).
    let unspent = format!(
        "SELECT COUNT(*) FROM authorization_codes WHERE used_at IS NULL AND code_hash = {}",
        if matches!(backend, Backend::Sqlite) {
            "unhex($1)"
        } else {
            "decode($1, 'hex')"
        }
    );
    let hex: String = tessera_server::secret::token_digest(&code)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut settled = false;
    for _ in 0..100 {
        if h.count(&unspent, &[&hex]).await == 1 {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(settled, "the code stayed spent");
    let retry = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    let refreshed = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &retry.str("refresh_token")),
            ],
            Some((&s.client_id, &s.secret)),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    h.finish().await;
}

both_backends!(an_exchange_dropped_while_its_code_is_spent_can_be_retried);

/// A replay that lands while the first exchange of a code runs, for a
/// client that gets no refresh token, makes that exchange fail too: it
/// used to answer 200 with an access token the replay had just revoked
/// and an ID token nothing revokes (with a refresh family, the exchange
/// already looked for the replay's mark). The replay landing between the
/// claim and the answer is played by a trigger that marks the code
/// replayed as it is spent.
async fn a_replay_during_an_exchange_without_refresh_fails_it(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    // Not first-party, and no `offline_access` asked for: no family.
    let s = setup(&h, "Shop", false).await;
    let code = consented_code(&h, &s).await;
    if h.db.is_postgres() {
        h.execute(
            "CREATE FUNCTION replayed_as_spent() RETURNS trigger AS $$ \
             BEGIN NEW.replayed_at := NEW.used_at; RETURN NEW; END $$ LANGUAGE plpgsql",
            &[],
        )
        .await;
        h.execute(
            "CREATE TRIGGER replayed_as_spent BEFORE UPDATE ON authorization_codes FOR EACH ROW \
             WHEN (OLD.used_at IS NULL AND NEW.used_at IS NOT NULL) \
             EXECUTE FUNCTION replayed_as_spent()",
            &[],
        )
        .await;
    } else {
        h.execute(
            "CREATE TRIGGER replayed_as_spent AFTER UPDATE OF used_at ON authorization_codes \
             WHEN OLD.used_at IS NULL AND NEW.used_at IS NOT NULL \
             BEGIN UPDATE authorization_codes SET replayed_at = NEW.used_at \
             WHERE code_hash = NEW.code_hash; END",
            &[],
        )
        .await;
    }
    let first = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(first.status, StatusCode::BAD_REQUEST, "{}", first.text);
    assert_eq!(first.json["error"], "invalid_grant", "{}", first.text);
    assert!(first.json.get("id_token").is_none());
    h.finish().await;
}

both_backends!(a_replay_during_an_exchange_without_refresh_fails_it);

/// A replay is recorded in the transaction that revokes what the code's
/// first use issued. One cut short (the process killed, the database
/// gone) leaves the code unmarked and nothing revoked, and a later replay
/// revokes all; never a mark with the first use's tokens still live (the
/// mark committed first, and the revocations after it, each on its own,
/// so a replay cut short in between revoked nothing, and no later replay
/// was needed to look again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_cut_short_leaves_no_mark_without_its_revocations() {
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    let first = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let refresh = first.str("refresh_token");
    let tessera_server::db::Pool::Postgres(pool) = h.db.write() else {
        unreachable!("a PostgreSQL database")
    };
    let digest = tessera_server::secret::token_digest(&code);
    let state = || async {
        let (family, jti, replayed): (String, String, Option<i64>) = sqlx::query_as(
            "SELECT family_id, access_jti, replayed_at FROM authorization_codes \
             WHERE code_hash = $1",
        )
        .bind(&digest)
        .fetch_one(pool)
        .await
        .unwrap();
        let (revoked,): (Option<i64>,) =
            sqlx::query_as("SELECT revoked_at FROM refresh_families WHERE id = $1")
                .bind(&family)
                .fetch_one(pool)
                .await
                .unwrap();
        // The first use's token, by itself or (with a refresh family,
        // as here) by its family.
        let (logged,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM revocation_events \
             WHERE (kind = 'token' AND value = $1) OR (kind = 'family' AND value = $2)",
        )
        .bind(&jti)
        .bind(&family)
        .fetch_one(pool)
        .await
        .unwrap();
        (family, replayed.is_some(), revoked.is_some(), logged > 0)
    };
    let (family, ..) = state().await;

    // The replay is cut short while it waits for the family's row.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM refresh_families WHERE id = $1 FOR UPDATE")
        .bind(&family)
        .execute(&mut *holder)
        .await
        .unwrap();
    let cut = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        exchange(&h, &s, &code, VERIFIER),
    )
    .await;
    assert!(cut.is_err(), "the replay did not wait for the family's row");
    holder.commit().await.unwrap();
    // Whatever the cut replay left running ends before the row is free.
    let mut after = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM refresh_families WHERE id = $1 FOR UPDATE")
        .bind(&family)
        .execute(&mut *after)
        .await
        .unwrap();
    after.rollback().await.unwrap();
    let (_, marked, revoked, logged) = state().await;
    assert!(
        !marked,
        "a replay not answered left its mark (family revoked: {revoked}, token logged: {logged})"
    );
    assert!(!revoked && !logged);

    // The replay again, answered: all revoked.
    let replay = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(replay.error(), "invalid_grant");
    let (_, marked, revoked, logged) = state().await;
    assert!(marked && revoked && logged);
    let refreshed = refresh_with(&h, &s, &refresh).await;
    assert_eq!(refreshed.error(), "invalid_grant", "{}", refreshed.text);
    h.finish().await;
}

/// A replay that marks its code while the first use is storing its
/// refresh family, and commits after the first use looked for the mark,
/// still leaves no live family: the first use's look waits for the
/// replay's transaction (the replay looked for the family before it was
/// stored, and the first use read no mark yet, so neither revoked it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_racing_the_first_use_leaves_no_live_family() {
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_browser, code) = signed_in_code(&h, &s).await;
    let tessera_server::db::Pool::Postgres(pool) = h.db.write() else {
        unreachable!("a PostgreSQL database")
    };
    let digest = tessera_server::secret::token_digest(&code);
    let (sid,): (String,) =
        sqlx::query_as("SELECT sid FROM authorization_codes WHERE code_hash = $1")
            .bind(&digest)
            .fetch_one(pool)
            .await
            .unwrap();
    // Held: the first use, before it stores its family (it reads the
    // session with FOR SHARE); the replay, once it has marked the code and
    // looked for the family (it then waits for the revocation log).
    let mut session_held = pool.begin().await.unwrap();
    sqlx::query("SELECT sid FROM sessions WHERE sid = $1 FOR UPDATE")
        .bind(&sid)
        .execute(&mut *session_held)
        .await
        .unwrap();
    let mut log_held = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(7368756)")
        .execute(&mut *log_held)
        .await
        .unwrap();
    let spent = || async {
        let (used,): (Option<i64>,) =
            sqlx::query_as("SELECT used_at FROM authorization_codes WHERE code_hash = $1")
                .bind(&digest)
                .fetch_one(pool)
                .await
                .unwrap();
        used.is_some()
    };
    let first = exchange(&h, &s, &code, VERIFIER);
    let replay = async {
        while !spent().await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        exchange(&h, &s, &code, VERIFIER).await
    };
    let control = async {
        while !spent().await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The replay marks the code and looks for the family meanwhile.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        session_held.commit().await.unwrap();
        // The first use stores its family and looks for the mark.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        log_held.commit().await.unwrap();
    };
    let (first, replay, ()) = tokio::join!(first, replay, control);
    assert_eq!(replay.error(), "invalid_grant", "{}", replay.text);
    let (family,): (Option<String>,) =
        sqlx::query_as("SELECT family_id FROM authorization_codes WHERE code_hash = $1")
            .bind(&digest)
            .fetch_one(pool)
            .await
            .unwrap();
    let (revoked,): (Option<i64>,) =
        sqlx::query_as("SELECT revoked_at FROM refresh_families WHERE id = $1")
            .bind(family.unwrap())
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        revoked.is_some(),
        "the first use's family is live after the replay (first use answered {}: {})",
        first.status,
        first.text
    );
    assert_ne!(first.status, StatusCode::OK, "{}", first.text);
    h.finish().await;
}

/// A form sent twice (a double click on "Sign in" or "Allow": the browser
/// drops the first answer and shows the second) gets the same answer
/// again: the same code (the login form: for the same user, whose
/// password is checked again, in a session of its own); the sign-in goes
/// on, where it got an "Already done" page and the application heard
/// nothing. Deny after Allow, another user, or a code exchanged get the
/// page.
async fn a_form_sent_twice_gets_the_same_answer(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    // The consent page (a client that asks).
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    let to_consent = location(&alice_logs_in(&h, &mut b, &s).await);
    let consent = b.get(&h, &to_consent).await;
    let form = [
        ("request", hidden(&consent.text, "request")),
        ("csrf_token", hidden(&consent.text, "csrf_token")),
        ("decision", "allow".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = location(&b.post(&h, "/consent", &form).await);
    let second = location(&b.post(&h, "/consent", &form).await);
    assert_eq!(first, second, "a second click got another answer");
    // Deny after Allow changes nothing and is not told the code.
    let mut deny = form.clone();
    deny[2] = ("decision", "deny");
    let denied = b.post(&h, "/consent", &deny).await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert!(denied.text.contains("Already done") && !denied.text.contains("code="));
    let code = query_of(&first)["code"].clone();
    let exchanged = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.text);
    let third = b.post(&h, "/consent", &form).await;
    assert_eq!(third.status, StatusCode::BAD_REQUEST);
    assert!(third.text.contains("Already done"));

    // Deny twice (a double click, the first answer dropped): the
    // application hears the refusal the second time too, with its state;
    // Allow after it is not given a code.
    let asked = authorize_url(&s.client_id, &[("prompt", "consent")]);
    let to_consent = location(&b.get(&h, &asked).await);
    let consent = b.get(&h, &to_consent).await;
    let form = [
        ("request", hidden(&consent.text, "request")),
        ("csrf_token", hidden(&consent.text, "csrf_token")),
        ("decision", "deny".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = location(&b.post(&h, "/consent", &form).await);
    let second = location(&b.post(&h, "/consent", &form).await);
    assert_eq!(query_of(&first)["error"], "access_denied", "{first}");
    assert_eq!(
        first, second,
        "the second Deny was not told to the application"
    );
    let mut allow = form.clone();
    allow[2] = ("decision", "allow");
    let allowed = b.post(&h, "/consent", &allow).await;
    assert_eq!(allowed.status, StatusCode::BAD_REQUEST);
    assert!(allowed.text.contains("Already done") && !allowed.text.contains("code="));

    // The login page of a first-party client, sent twice: one after the
    // other (the first answer and its cookie dropped), then at once. Each
    // login has a session of its own (the browser keeps the cookie of the
    // answer it shows), and both are this browser's.
    let s = setup_first_party(&h).await;
    h.user("bob", "battery staple", "orders:read").await;
    for at_once in [false, true] {
        let elsewhere = sessions::list(&h.db, Some("alice"), h.app.config.sessions, 100)
            .await
            .unwrap()
            .len();
        let mut b = Browser::default();
        let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
        let page = b.get(&h, &to_login).await;
        let (request, csrf) = (
            hidden(&page.text, "request"),
            hidden(&page.text, "csrf_token"),
        );
        let mut dropped = Browser {
            cookies: b.cookies.clone(),
        };
        let (first, second) = if at_once {
            tokio::join!(
                dropped.log_in_form(&h, &request, &csrf, "alice", "correct horse"),
                b.log_in_form(&h, &request, &csrf, "alice", "correct horse"),
            )
        } else {
            let first = dropped
                .log_in_form(&h, &request, &csrf, "alice", "correct horse")
                .await;
            let second = b
                .log_in_form(&h, &request, &csrf, "alice", "correct horse")
                .await;
            (first, second)
        };
        assert_eq!(location(&first), location(&second), "at once: {at_once}");
        // The browser kept the second answer's cookie: it is signed in.
        let silent = location(
            &b.get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
                .await,
        );
        assert!(
            query_of(&silent).contains_key("code"),
            "at once: {at_once}: {silent}"
        );
        let code = query_of(&location(&second))["code"].clone();
        let exchanged = exchange(&h, &s, &code, VERIFIER).await;
        assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.text);
        // A logout in this browser, with the code's ID token, ends every
        // session the two logins started.
        let hint = exchanged.str("id_token");
        b.get(&h, &format!("/oauth2/logout?id_token_hint={hint}"))
            .await;
        let live = sessions::list(&h.db, Some("alice"), h.app.config.sessions, 100)
            .await
            .unwrap();
        assert_eq!(live.len(), elsewhere, "at once: {at_once}: {live:?}");
    }
    // Sent again with a wrong password, or as someone else: no code.
    let mut b = Browser::default();
    let to_login = location(&b.get(&h, &authorize_url(&s.client_id, &[])).await);
    let page = b.get(&h, &to_login).await;
    let (request, csrf) = (
        hidden(&page.text, "request"),
        hidden(&page.text, "csrf_token"),
    );
    let alices = b
        .log_in_form(&h, &request, &csrf, "alice", "correct horse")
        .await;
    assert!(query_of(&location(&alices)).contains_key("code"));
    let wrong = b
        .log_in_form(&h, &request, &csrf, "alice", "not her password")
        .await;
    assert!(wrong.headers.get(header::LOCATION).is_none());
    assert!(wrong.text.contains("Wrong username or password"));
    let bob = b
        .log_in_form(&h, &request, &csrf, "bob", "battery staple")
        .await;
    assert_eq!(bob.status, StatusCode::BAD_REQUEST, "{:?}", bob.headers);
    assert!(bob.text.contains("Already done"));
    h.finish().await;
}

/// A first-party client (no consent page) beside `setup`'s.
async fn setup_first_party(h: &Harness) -> Setup {
    let added = clients::add(
        &h.db,
        NewClient {
            name: "Own app".into(),
            grants: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: Scopes::parse("openid profile email offline_access orders:read").unwrap(),
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    Setup {
        client_id: added.client_id,
        secret: added.client_secret.unwrap().to_string(),
    }
}

both_backends!(a_form_sent_twice_gets_the_same_answer);

both_backends!(
    a_user_is_issued_so_many_codes_a_minute,
    denials_count_with_the_codes
);

/// A signed-in browser (or a script with its cookie) looping silent
/// requests is issued `sessions.codes_per_minute` codes, then told
/// `temporarily_unavailable` at the redirect URI, with its `state`; its
/// session stands. Before, each loop stored a code row kept an hour,
/// thousands a second. The allowance is the user's: a new session (a
/// login without the cookie) does not start another.
async fn a_user_is_issued_so_many_codes_a_minute(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.codes_per_user = 3).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    // The login's code is the first of three.
    let (mut b, _code) = signed_in_code(&h, &s).await;
    let silent = authorize_url(&s.client_id, &[("prompt", "none")]);
    for _ in 0..2 {
        let issued = query_of(&location(&b.get(&h, &silent).await));
        assert!(issued.contains_key("code"), "{issued:?}");
    }
    let refused = query_of(&location(&b.get(&h, &silent).await));
    assert_eq!(refused["error"], "temporarily_unavailable", "{refused:?}");
    assert_eq!(refused["state"], "st-1");
    assert!(!refused.contains_key("code"));
    // Another browser, the same person: logged in, but no fresh allowance.
    let mut other = Browser::default();
    let back = log_in(
        &h,
        &mut other,
        &authorize_url(&s.client_id, &[]),
        "correct horse",
    )
    .await;
    let back = query_of(&location(&back));
    assert_eq!(back["error"], "temporarily_unavailable", "{back:?}");
    assert!(!back.contains_key("code"));
    h.finish().await;
}

/// A refused request is stored as a code is (answered once): denying
/// consent again and again counts against the same allowance, or a
/// signed-in script would fill the table with refusals instead.
async fn denials_count_with_the_codes(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.codes_per_user = 2).await else {
        return;
    };
    let s = setup(&h, "Shop", false).await;
    let mut b = Browser::default();
    let url = authorize_url(&s.client_id, &[]);
    let mut to_consent = location(&log_in(&h, &mut b, &url, "correct horse").await);
    let mut answers = Vec::new();
    for _ in 0..3 {
        assert!(to_consent.starts_with("/consent"), "{to_consent}");
        let consent = b.get(&h, &to_consent).await;
        let denied = decide(&h, &mut b, &consent, "deny").await;
        answers.push(query_of(&location(&denied))["error"].clone());
        to_consent = location(&b.get(&h, &url).await);
    }
    assert_eq!(
        answers,
        ["access_denied", "access_denied", "temporarily_unavailable"]
    );
    h.finish().await;
}

both_backends!(a_code_whose_exchange_failed_can_be_presented_again);

/// A code exchange that spent its code and then failed (here: a cut-off
/// stamped by a clock ahead of this instance's, which the token endpoint
/// cannot wait out, 503) releases the code: the client's retry is
/// answered, not taken for a replay that revokes what the session had.
/// The released code is still used once: presented after the retry, it is
/// a replay.
async fn a_code_whose_exchange_failed_can_be_presented_again(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_b, code) = signed_in_code(&h, &s).await;
    let alice = tessera_server::store::users::find(&h.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    // Six seconds ahead: past the five the endpoint waits.
    h.cut_beyond_the_wait(&alice).await;
    let failed = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(
        (failed.status, failed.error()),
        (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        "{}",
        failed.text
    );
    crate::wait_for_audit(&h, "code_released", 1).await;
    // The refresh family the failed exchange started, which nobody holds
    // a token of, is revoked.
    let released = h
        .count(
            "SELECT COUNT(*) FROM refresh_families WHERE revoked_reason = $1",
            &[tessera_server::store::codes::RELEASED],
        )
        .await;
    assert_eq!(released, 1);
    // The retry, once the cut has passed: tokens, and they work.
    let retry = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    let refreshed = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &retry.str("refresh_token")),
            ],
            Some((&s.client_id, &s.secret)),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    // Spent by the retry: once more is a replay, which revokes it all.
    let replay = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(replay.error(), "invalid_grant", "{}", replay.text);
    assert!(replay.text.contains("already used"), "{}", replay.text);
    h.finish().await;
}

both_backends!(a_login_that_fails_after_renewing_the_session_still_sets_its_cookie);

/// A login again in the same session (`prompt=login`) renews the session
/// under a new cookie before the code is issued; when issuing it fails
/// (here the database refuses new codes), the error page still carries
/// the new cookie. Before, the browser kept the old one, which no longer
/// named the session: it looked signed out while the renewed session, and
/// what it had issued, lived on out of reach of its logout.
async fn a_login_that_fails_after_renewing_the_session_still_sets_its_cookie(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (mut b, _code) = signed_in_code(&h, &s).await;
    h.refuse("no_codes", "BEFORE INSERT ON authorization_codes")
        .await;
    let before = b.cookies.clone();
    let failed = log_in(
        &h,
        &mut b,
        &authorize_url(&s.client_id, &[("prompt", "login")]),
        "correct horse",
    )
    .await;
    assert!(failed.status.is_server_error(), "{}", failed.status);
    assert_ne!(b.cookies, before, "the renewed session's cookie was set");
    h.execute(
        match backend {
            Backend::Sqlite => "DROP TRIGGER no_codes",
            Backend::Postgres => "DROP TRIGGER no_codes ON authorization_codes",
        },
        &[],
    )
    .await;
    // The browser is signed in, in the renewed session.
    let silent = b
        .get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
        .await;
    let back = query_of(&location(&silent));
    assert!(back.contains_key("code"), "{back:?}");
    h.finish().await;
}

both_backends!(a_logout_that_fails_part_way_ends_everything_when_tried_again);

/// A logout ends the browser's other sessions first and its current one
/// last: when ending one of the others fails, the current session is
/// still there, so trying again ends them all. Before, the current one
/// went first; the retry found no session, said "signed out", and the
/// other session lived on, its refresh tokens with it.
async fn a_logout_that_fails_part_way_ends_everything_when_tried_again(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (mut b, [kept, other]) = two_logins_at_once(&h, &s, "alice", "correct horse").await;
    let refuse_end: Vec<String> = match backend {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER no_end BEFORE UPDATE OF ended_at ON sessions \
             WHEN NEW.sid = '{}' BEGIN SELECT RAISE(ABORT, 'not now'); END",
            other.sid
        )],
        Backend::Postgres => vec![
            format!(
                "CREATE FUNCTION no_end() RETURNS trigger AS $$ BEGIN \
                 IF NEW.sid = '{}' THEN RAISE EXCEPTION 'not now'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql",
                other.sid
            ),
            "CREATE TRIGGER no_end BEFORE UPDATE ON sessions \
             FOR EACH ROW EXECUTE FUNCTION no_end()"
                .into(),
        ],
    };
    for sql in &refuse_end {
        h.execute(sql, &[]).await;
    }
    let logout = format!("/oauth2/logout?id_token_hint={}", kept.id_token);
    let failed = b.get(&h, &logout).await;
    assert!(failed.status.is_server_error(), "{}", failed.status);
    h.execute(
        match backend {
            Backend::Sqlite => "DROP TRIGGER no_end",
            Backend::Postgres => "DROP TRIGGER no_end ON sessions",
        },
        &[],
    )
    .await;
    let done = b.get(&h, &logout).await;
    assert!(done.text.contains("You are signed out"), "{}", done.text);
    for sid in [&kept.sid, &other.sid] {
        assert!(
            sessions::by_sid(&h.db, sid).await.unwrap().is_none(),
            "session {sid} outlived the logout"
        );
    }
    h.finish().await;
}

both_backends!(a_code_is_sent_when_the_idle_clock_cannot_be_restarted);

/// Recording a session's use (its idle clock) comes after its code is
/// stored, and failing to record it does not throw the code away: the
/// client gets it. Before, the person saw an error page instead.
async fn a_code_is_sent_when_the_idle_clock_cannot_be_restarted(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (mut b, _code) = signed_in_code(&h, &s).await;
    // Last used two minutes ago: this use would be recorded.
    let ago = (tessera_server::store::now() - 120).to_string();
    h.execute(&format!("UPDATE sessions SET last_seen = {ago}"), &[])
        .await;
    let refuse: &[&str] = match backend {
        Backend::Sqlite => &[
            "CREATE TRIGGER no_touch BEFORE UPDATE OF last_seen ON sessions \
             BEGIN SELECT RAISE(ABORT, 'not now'); END",
        ],
        Backend::Postgres => &[
            "CREATE FUNCTION no_touch() RETURNS trigger AS $$ BEGIN \
             IF NEW.last_seen <> OLD.last_seen THEN RAISE EXCEPTION 'not now'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER no_touch BEFORE UPDATE ON sessions \
             FOR EACH ROW EXECUTE FUNCTION no_touch()",
        ],
    };
    for sql in refuse {
        h.execute(sql, &[]).await;
    }
    let silent = b
        .get(&h, &authorize_url(&s.client_id, &[("prompt", "none")]))
        .await;
    let back = query_of(&location(&silent));
    assert!(back.contains_key("code"), "{back:?}");
    let tokens = exchange(&h, &s, &back["code"], VERIFIER).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    h.finish().await;
}

both_backends!(a_replayed_code_is_not_released);

/// A code replayed (and what it issued revoked) is not released by its
/// first exchange's take-back: the replay stands.
async fn a_replayed_code_is_not_released(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let s = setup(&h, "Shop", true).await;
    let (_b, code) = signed_in_code(&h, &s).await;
    let first = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let jti = claims(&first.str("access_token"))["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(replay.error(), "invalid_grant", "{}", replay.text);
    let digest = tessera_server::secret::token_digest(&code);
    let released = tessera_server::store::codes::release(&h.db, &digest, &jti)
        .await
        .unwrap();
    assert!(!released);
    let again = exchange(&h, &s, &code, VERIFIER).await;
    assert_eq!(again.error(), "invalid_grant", "{}", again.text);
    h.finish().await;
}
