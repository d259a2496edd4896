//! tessera-guard through axum routers, without sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{header, Request, StatusCode};
use serde_json::json;
use tessera_guard::{AccessToken, Guard, GuardLayer, RequireScope};
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, KeySet, NumericDate, SigningKey};
use tower::ServiceExt;

mod feed;
mod remote;
mod trust;

/// What the code under test logs, kept for the test to read.
#[derive(Clone, Default)]
struct Logged(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logged {
    fn count(&self, message: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(message)
            .count()
    }

    /// Log to this one for as long as the guard returned lives, on this
    /// thread (where a current-thread test runtime runs everything).
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        // tracing caches, per log statement and for every thread, whether
        // anyone listens. While only one dispatcher is alive, it asks only
        // the thread at hand: another test's thread, with no subscriber,
        // reaching a statement first (or rebuilding the cache) made it
        // silent for this test's thread too, and a message said once was
        // lost. A second dispatcher kept alive for the whole run makes it
        // ask every live one.
        static ALWAYS_TWO: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        ALWAYS_TWO
            .get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let writer = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        )
    }
}

const ISS: &str = "https://auth.tessera.test";
const AUD: &str = "store-api";

struct Fixture {
    key: SigningKey,
    app: Router,
}

async fn me(token: AccessToken) -> String {
    format!(
        "{} via {}",
        token.subject().unwrap_or("-"),
        token.client_id().unwrap_or("-")
    )
}

fn fixture_with(
    configure: impl FnOnce(tessera_guard::GuardBuilder) -> tessera_guard::GuardBuilder,
) -> Fixture {
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let guard = configure(Guard::builder(ISS, AUD, keys)).build().unwrap();
    let app = Router::new()
        .route("/me", get(me))
        .route(
            "/items",
            get(me).layer(RequireScope::any(["items:read", "items:write"])),
        )
        .route(
            "/admin",
            get(me).layer(RequireScope::all(["items:write", "admin"])),
        )
        .layer(GuardLayer::new(guard))
        .merge(Router::new().route("/unguarded", get(me)));
    Fixture { key, app }
}

fn fixture() -> Fixture {
    fixture_with(|b| b)
}

fn claims(scope: &str) -> Claims<serde_json::Value> {
    claims_with(json!({ "client_id": "web", "scope": scope })).jwt_id("j-1")
}

/// Good claims (issuer, subject, audience, times) around `custom`.
fn claims_with(custom: serde_json::Value) -> Claims<serde_json::Value> {
    Claims::with_custom(custom)
        .issuer(ISS)
        .subject("alice")
        .audience(AUD)
        .issued_at(NumericDate::now())
        .expires_at(NumericDate::now().plus(Duration::from_secs(300)))
}

fn sign(key: &SigningKey, claims: &Claims<serde_json::Value>) -> String {
    jwt::sign_with_header(&Header::for_key(key).typ("at+jwt"), claims, key).unwrap()
}

async fn call(app: &Router, path: &str, authorization: &[&str]) -> (StatusCode, String, String) {
    let mut request = Request::get(path);
    for value in authorization {
        request = request.header(header::AUTHORIZATION, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, challenge, String::from_utf8(body.to_vec()).unwrap())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler() {
    let f = fixture();
    let token = sign(&f.key, &claims("items:read"));
    let (status, _, body) = call(&f.app, "/me", &[&bearer(&token)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alice via web"));
    // The scheme is case-insensitive (RFC 7235).
    let (status, _, _) = call(&f.app, "/me", &[&format!("bearer {token}")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn missing_and_malformed_headers() {
    let f = fixture();
    let token = sign(&f.key, &claims(""));
    let (status, challenge, _) = call(&f.app, "/me", &[]).await;
    assert_eq!(
        (status, challenge.as_str()),
        (StatusCode::UNAUTHORIZED, "Bearer")
    );
    // Another scheme, with credentials or without: as if none was sent
    // (RFC 6750 §3.1), not a malformed bearer token.
    for other in ["Basic YTpi", "Negotiate"] {
        let (status, challenge, _) = call(&f.app, "/me", &[other]).await;
        assert_eq!(
            (status, challenge.as_str()),
            (StatusCode::UNAUTHORIZED, "Bearer"),
            "{other}"
        );
    }
    let two = bearer(&token);
    for headers in [
        vec!["Bearer"],
        vec!["Bearer "],
        vec!["Bearer a b"],
        vec![two.as_str(), two.as_str()],
    ] {
        let (status, challenge, _) = call(&f.app, "/me", &headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_request\""),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn invalid_tokens_are_refused_without_detail() {
    let f = fixture();
    let stranger = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid(f.key.kid().unwrap());
    let public_as_secret = f
        .key
        .verifying_key()
        .unwrap()
        .to_public_jwk()
        .unwrap()
        .to_json();
    let mut tampered = sign(&f.key, &claims("items:read"));
    tampered.insert(
        tampered.len() - 3,
        if tampered.ends_with('A') { 'B' } else { 'A' },
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong audience",
            sign(&f.key, &claims("").audience("other-api")),
        ),
        (
            "wrong issuer",
            sign(&f.key, &claims("").issuer("https://evil.example")),
        ),
        ("typ JWT", jwt::sign(&claims(""), &f.key).unwrap()),
        ("another key with our kid", sign(&stranger, &claims(""))),
        ("tampered", tampered),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64("{\"alg\":\"none\",\"typ\":\"at+jwt\"}"),
                b64("{\"sub\":\"alice\"}")
            ),
        ),
        (
            "HS256 keyed with the public key",
            match SigningKey::hmac(Algorithm::HS256, public_as_secret.as_bytes()) {
                Ok(hmac) => sign(&hmac, &claims("")),
                Err(_) => format!("{}.{}.AAAA", b64("{\"alg\":\"HS256\"}"), b64("{}")),
            },
        ),
        ("garbage", "not-a-token".into()),
    ];
    for (name, token) in cases {
        let (status, challenge, _) = call(&f.app, "/me", &[&bearer(&token)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            challenge,
            "Bearer error=\"invalid_token\", error_description=\"the access token is invalid\"",
            "{name}: every invalid token gets the same answer"
        );
    }
    let expired = claims("").expires_at(NumericDate::now().minus(Duration::from_secs(3600)));
    let (status, challenge, _) = call(&f.app, "/me", &[&bearer(&sign(&f.key, &expired))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.contains("the access token expired"),
        "{challenge}"
    );
}

fn b64(text: &str) -> String {
    tessera_jose::b64::encode(text.as_bytes())
}

#[tokio::test]
async fn routes_require_their_scopes() {
    let f = fixture();
    let reader = sign(&f.key, &claims("items:read"));
    let writer = sign(&f.key, &claims("items:write admin"));
    let nobody = sign(&f.key, &claims("profile"));
    assert_eq!(
        call(&f.app, "/items", &[&bearer(&reader)]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&f.app, "/items", &[&bearer(&writer)]).await.0,
        StatusCode::OK,
        "any of"
    );
    let (status, challenge, _) = call(&f.app, "/items", &[&bearer(&nobody)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        challenge,
        "Bearer error=\"insufficient_scope\", scope=\"items:read items:write\""
    );
    assert_eq!(
        call(&f.app, "/admin", &[&bearer(&writer)]).await.0,
        StatusCode::OK
    );
    let (status, challenge, _) = call(&f.app, "/admin", &[&bearer(&reader)]).await;
    assert_eq!(
        (status, challenge.as_str()),
        (
            StatusCode::FORBIDDEN,
            "Bearer error=\"insufficient_scope\", scope=\"items:write admin\""
        )
    );
    // No token at all is 401 before any scope is looked at.
    assert_eq!(
        call(&f.app, "/admin", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Scopes and the client as other issuers write them: `scp` as a string
/// (Microsoft Entra ID) or an array (Okta), `scope` as an array, the
/// client as `azp` (Keycloak). `scope` wins when a token has both.
#[tokio::test]
async fn scopes_and_clients_as_other_issuers_write_them() {
    let f = fixture();
    let with = |custom: serde_json::Value| {
        let claims = Claims::with_custom(custom)
            .issuer(ISS)
            .subject("alice")
            .audience(AUD)
            .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
        sign(&f.key, &claims)
    };
    for custom in [
        json!({ "scp": "items:write admin" }),
        json!({ "scp": ["items:write", "admin"] }),
        json!({ "scope": ["admin", "items:write"] }),
    ] {
        let token = with(custom.clone());
        assert_eq!(
            call(&f.app, "/admin", &[&bearer(&token)]).await.0,
            StatusCode::OK,
            "{custom}"
        );
    }
    let both = with(json!({ "scope": "items:read", "scp": "items:write admin" }));
    assert_eq!(
        call(&f.app, "/admin", &[&bearer(&both)]).await.0,
        StatusCode::FORBIDDEN
    );
    let odd = with(json!({ "scp": 5, "scope": null }));
    assert_eq!(
        call(&f.app, "/items", &[&bearer(&odd)]).await.0,
        StatusCode::FORBIDDEN
    );
    let keycloak = with(json!({ "azp": "shop" }));
    let (status, _, body) = call(&f.app, "/me", &[&bearer(&keycloak)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alice via shop"));
}

/// Issuers that write their tokens otherwise: AWS Cognito (no `aud`, the
/// client in `client_id`, `token_use` telling access from ID tokens),
/// Google (its name written two ways), Okta's `cid` and Entra ID v1's
/// `appid` for the client, and an `exp` with a fraction.
#[tokio::test]
async fn tokens_of_issuers_that_write_them_otherwise() {
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("k1");
    let keys = || KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let token = |iss: &str, custom: serde_json::Value| {
        let claims = Claims::with_custom(custom)
            .issuer(iss)
            .subject("alice")
            .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
        jwt::sign(&claims, &key).unwrap()
    };
    let cognito = Guard::builder(ISS, "", keys())
        .typ(None)
        .any_audience()
        .clients(["app-1"])
        .build()
        .unwrap();
    let access = json!({"client_id": "app-1", "token_use": "access", "scope": "items:read"});
    let verified = cognito.verify(&token(ISS, access)).await.unwrap();
    assert_eq!(verified.client_id(), Some("app-1"));
    for (what, custom) in [
        (
            "another client's",
            json!({"client_id": "app-2", "token_use": "access"}),
        ),
        (
            "one naming no client",
            json!({"token_use": "access", "scope": "a"}),
        ),
        ("an ID token", json!({"aud": "app-1", "token_use": "id"})),
        (
            "an ID token naming its client",
            json!({"azp": "app-1", "token_use": "id"}),
        ),
    ] {
        assert!(cognito.verify(&token(ISS, custom)).await.is_err(), "{what}");
    }
    let google = Guard::builder("https://accounts.google.com", AUD, keys())
        .also_issuer("accounts.google.com")
        .typ(None)
        .build()
        .unwrap();
    for iss in ["https://accounts.google.com", "accounts.google.com"] {
        let custom = json!({"aud": AUD, "azp": "web"});
        assert!(google.verify(&token(iss, custom)).await.is_ok(), "{iss}");
    }
    let elsewhere = token("https://accounts.google.com.example", json!({"aud": AUD}));
    assert!(google.verify(&elsewhere).await.is_err());
    let any = Guard::builder(ISS, AUD, keys()).typ(None).build().unwrap();
    for (claim, client) in [("cid", "okta-app"), ("appid", "entra-v1-app")] {
        let custom = json!({"aud": AUD, claim: client});
        let verified = any.verify(&token(ISS, custom)).await.unwrap();
        assert_eq!(verified.client_id(), Some(client), "{claim}");
    }
    // A fraction of a second in exp: valid, and cached to its expiry.
    let exp = NumericDate::now().plus(Duration::from_secs(300)).seconds() as f64 + 0.5;
    let claims = Claims::with_custom(json!({"aud": AUD, "exp": exp})).issuer(ISS);
    let fractional = jwt::sign(&claims, &key).unwrap();
    let verified = any.verify(&fractional).await.unwrap();
    assert_eq!(
        verified.expires_at().map(NumericDate::seconds),
        Some(exp.floor() as i64)
    );
    assert_eq!(any.cached_tokens(), 3, "the two clients' and this one");
}

/// A scope requirement no token could meet, or whose challenge clients
/// could not read, is a mistake found when the routes are built.
#[test]
fn scope_requirements_must_be_scope_tokens() {
    let no_scope: [&str; 0] = [];
    for bad in [
        std::panic::catch_unwind(|| RequireScope::any(no_scope)),
        std::panic::catch_unwind(|| RequireScope::all(["a\"b"])),
        std::panic::catch_unwind(|| RequireScope::any(["ok", "two words"])),
        std::panic::catch_unwind(|| RequireScope::any([""])),
        std::panic::catch_unwind(|| RequireScope::any(["caf\u{e9}"])),
    ] {
        assert!(bad.is_err());
    }
    RequireScope::any(["items:read", "https://api.example/write"]);
}

#[tokio::test]
async fn the_extractor_never_hands_out_an_unchecked_token() {
    let f = fixture();
    let token = sign(&f.key, &claims("items:read"));
    let (status, _, _) = call(&f.app, "/unguarded", &[&bearer(&token)]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "outside the layer there is no verified token"
    );
}

/// A cache full of live tokens makes room by dropping some of them, not
/// all: emptied whole, a client minting tokens in a loop sent every
/// client's tokens back through a full verification each time it filled.
#[tokio::test]
async fn a_full_cache_keeps_most_of_what_it_holds() {
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let guard = Guard::builder(ISS, AUD, keys)
        .cache_size(16)
        .build()
        .unwrap();
    for i in 0..16 {
        let token = sign(&key, &claims("").jwt_id(format!("j-{i}").as_str()));
        guard.verify(&token).await.unwrap();
    }
    assert_eq!(guard.cached_tokens(), 16);
    let one_more = sign(&key, &claims("").jwt_id("j-16"));
    guard.verify(&one_more).await.unwrap();
    // An eighth made room: 16 - 3 + 1.
    assert_eq!(guard.cached_tokens(), 14);
}

#[tokio::test]
async fn cached_tokens_never_outlive_their_expiry() {
    let f = fixture_with(|b| b.leeway(Duration::ZERO).cache_size(1));
    let short = claims("").expires_at(NumericDate::now().plus(Duration::from_secs(2)));
    let short = sign(&f.key, &short);
    let other = sign(&f.key, &claims("").jwt_id("j-2"));
    assert_eq!(
        call(&f.app, "/me", &[&bearer(&short)]).await.0,
        StatusCode::OK
    );
    // A second token pushes the first out of a one-entry cache; both
    // still verify.
    assert_eq!(
        call(&f.app, "/me", &[&bearer(&other)]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&f.app, "/me", &[&bearer(&short)]).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, challenge, _) = call(&f.app, "/me", &[&bearer(&short)]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "served from the cache after exp"
    );
    assert!(challenge.contains("expired"));
}

#[tokio::test]
async fn custom_claims_and_configuration() {
    #[derive(serde::Deserialize)]
    struct Mine {
        client_id: String,
        sub: String,
    }
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let too_lenient = Guard::builder(ISS, AUD, keys.clone())
        .leeway(Duration::from_secs(3600))
        .build();
    assert!(
        too_lenient.is_err(),
        "a leeway over 300 s is refused when built"
    );
    let only_es = Guard::builder(ISS, AUD, keys.clone())
        .algorithms([Algorithm::ES256])
        .build()
        .unwrap();
    let token = sign(&key, &claims("a b"));
    assert!(
        only_es.verify(&token).await.is_err(),
        "EdDSA is not on the allow-list"
    );
    let guard = Guard::builder(ISS, AUD, keys).build().unwrap();
    let verified = guard.verify(&token).await.unwrap();
    let mine: Mine = verified.claims_as().unwrap();
    assert_eq!(
        (mine.client_id.as_str(), mine.sub.as_str()),
        ("web", "alice")
    );
    assert_eq!(verified.scopes().collect::<Vec<_>>(), ["a", "b"]);
    let plain_jwt = jwt::sign(&claims(""), &key).unwrap();
    let any_typ = Guard::builder(
        ISS,
        AUD,
        KeySet::new(vec![key.verifying_key().unwrap()]).unwrap(),
    )
    .typ(None)
    .build()
    .unwrap();
    assert!(any_typ.verify(&plain_jwt).await.is_ok());
    assert!(
        guard.verify(&plain_jwt).await.is_err(),
        "at+jwt is required by default"
    );
    let guard_of_typ = |typ: &str, not_access_tokens: bool| {
        let builder = Guard::builder(
            ISS,
            AUD,
            KeySet::new(vec![key.verifying_key().unwrap()]).unwrap(),
        )
        .typ(Some(typ));
        match not_access_tokens {
            true => builder.not_access_tokens().build().unwrap(),
            false => builder.build().unwrap(),
        }
    };
    let (jwt_typ, id_tokens) = (guard_of_typ("JWT", false), guard_of_typ("JWT", true));
    // Without at+jwt, tokens that show they are of another kind, with the
    // same issuer and audience (an app and its API as one client), are
    // refused: ID tokens, logout tokens, Keycloak's by its typ claim.
    for (member, value) in [
        ("nonce", json!("n-1")),
        ("at_hash", json!("x")),
        ("c_hash", json!("x")),
        (
            "events",
            json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
        ),
        ("typ", json!("ID")),
        ("typ", json!("Refresh")),
        // AWS Cognito's ID tokens: no nonce, no at_hash; only this.
        ("token_use", json!("id")),
        ("token_use", json!(["access"])),
    ] {
        let other = claims_with(json!({ "client_id": "web", member: value }));
        let token = jwt::sign(&other, &key).unwrap();
        assert!(
            any_typ.verify(&token).await.is_err(),
            "a token with {member} passed as an access token"
        );
        // A `typ` required other than at+jwt (an ID token's is often
        // `JWT` too) refuses them as well: it was taken for "checked".
        assert!(
            jwt_typ.verify(&token).await.is_err(),
            "a token with {member} passed a guard requiring typ JWT"
        );
        // A guard that checks such tokens themselves takes them.
        assert!(
            id_tokens.verify(&token).await.is_ok(),
            "a token with {member} refused where ID tokens are checked"
        );
    }
    // A token bound to its client's key (DPoP), presented as a bearer
    // token: refused, with at+jwt as without.
    let bound = claims_with(json!({
        "client_id": "web",
        "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
    }));
    assert!(guard.verify(&sign(&key, &bound)).await.is_err());
    assert!(any_typ
        .verify(&jwt::sign(&bound, &key).unwrap())
        .await
        .is_err());
    // Keycloak's access tokens say typ Bearer, and may carry the sign-in's
    // nonce beside their scope: served.
    let bearer = claims_with(
        json!({ "client_id": "web", "typ": "Bearer", "nonce": "n-1", "scope": "openid" }),
    );
    let token = jwt::sign(&bearer, &key).unwrap();
    assert!(any_typ.verify(&token).await.is_ok());
}

/// A key provider (here a closure over a key ring that rotates), an
/// explicit any-audience waiver, and RFC 6750 errors with JSON bodies.
#[tokio::test]
async fn a_key_provider_and_an_explicit_audience_waiver() {
    use std::sync::{Arc, RwLock};
    let old = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let new = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let ring = Arc::new(RwLock::new(Arc::new(
        KeySet::new(vec![old.verifying_key().unwrap()]).unwrap(),
    )));
    let current = Arc::clone(&ring);
    let provider = move |_kid: Option<&str>| {
        let keys = Arc::clone(&current.read().unwrap());
        async move { Ok::<_, tessera_guard::KeysUnavailable>(keys) }
    };
    let guard = Guard::builder(ISS, "unused", tessera_guard::Keys::provider(provider))
        .any_audience()
        .cache_size(0)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/me", get(me).layer(RequireScope::any(["admin"])))
        .layer(GuardLayer::new(guard));
    let for_api = |key: &SigningKey, aud: &str| sign(key, &claims("admin").audience(aud));
    // Any audience, since it was waived.
    for aud in ["store-api", ISS] {
        let (status, _, body) = call(&app, "/me", &[&bearer(&for_api(&old, aud))]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "alice via web"));
    }
    // The provider's answer changes: a key it no longer gives fails.
    *ring.write().unwrap() = Arc::new(KeySet::new(vec![new.verifying_key().unwrap()]).unwrap());
    let (status, challenge, body) = call(&app, "/me", &[&bearer(&for_api(&old, AUD))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "invalid_token");
    let (status, _, _) = call(&app, "/me", &[&bearer(&for_api(&new, AUD))]).await;
    assert_eq!(status, StatusCode::OK);
    // Insufficient scope: 403 with a JSON body; no token: a bare challenge
    // and no error information (RFC 6750 §3.1).
    let reader = sign(&new, &claims("profile"));
    let (status, _, body) = call(&app, "/me", &[&bearer(&reader)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    let (status, challenge, body) = call(&app, "/me", &[]).await;
    assert_eq!(
        (status, challenge.as_str(), body.as_str()),
        (StatusCode::UNAUTHORIZED, "Bearer", "")
    );
}

#[tokio::test]
async fn challenges_name_the_resource_metadata_and_the_document_is_served() {
    let resource = tessera_guard::ProtectedResource::new("https://api.tessera.test/store", ISS)
        .unwrap()
        .scopes(["items:read", "items:write"]);
    let url = resource.metadata_url();
    assert_eq!(
        url,
        "https://api.tessera.test/.well-known/oauth-protected-resource/store"
    );
    let f = fixture_with(|b| b.resource_metadata(url.clone()));
    let named = format!("resource_metadata=\"{url}\"");

    // No token: a bare challenge with the parameter (RFC 9728 §5.1).
    let (status, challenge, _) = call(&f.app, "/me", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, format!("Bearer {named}"));
    // A bad token, and a token without the scope (RequireScope's 403).
    let (status, challenge, _) = call(&f.app, "/me", &["Bearer x.y.z"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\"") && challenge.ends_with(&named),
        "{challenge}"
    );
    let token = sign(&f.key, &claims("other"));
    let (status, challenge, _) = call(&f.app, "/items", &[&bearer(&token)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        challenge.contains("insufficient_scope") && challenge.ends_with(&named),
        "{challenge}"
    );
    // Without the setting, challenges are as before.
    let (_, challenge, _) = call(&fixture().app, "/me", &[]).await;
    assert_eq!(challenge, "Bearer");

    // The document, at the path RFC 9728 §3.1 gives, outside the guard.
    let app: Router = resource.router();
    let response = app
        .oneshot(
            Request::get("/.well-known/oauth-protected-resource/store")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        document,
        json!({
            "resource": "https://api.tessera.test/store",
            "authorization_servers": [ISS],
            "scopes_supported": ["items:read", "items:write"],
            "bearer_methods_supported": ["header"],
        })
    );
    // A URL that could break the challenge's quoting is refused.
    assert!(Guard::builder(ISS, AUD, KeySet::new(vec![]).unwrap())
        .resource_metadata("https://x/\"")
        .build()
        .is_err());
}

/// Keys discovered from one issuer's metadata for a guard of another's
/// tokens: refused when the guard is built, not found at the first
/// request (the metadata's issuer is checked against the discovered one,
/// which was never compared with the guard's).
#[test]
fn keys_of_another_issuer_make_no_guard() {
    let keys = tessera_guard::RemoteJwks::discover("https://login.other.example").unwrap();
    let refused = Guard::builder(ISS, AUD, keys).build().unwrap_err();
    assert!(
        refused.to_string().contains("login.other.example"),
        "{refused}"
    );
    // A trailing slash apart: another issuer (RFC 8414 §3.3), whose keys
    // would never be had.
    let keys = tessera_guard::RemoteJwks::discover(format!("{ISS}/")).unwrap();
    assert!(Guard::builder(ISS, AUD, keys).build().is_err());
    let keys = tessera_guard::RemoteJwks::discover(ISS).unwrap();
    assert!(Guard::builder(ISS, AUD, keys).build().is_ok());
}

/// A multi-tenant issuer (Microsoft Entra ID's `common` metadata names
/// `https://login.microsoftonline.com/{tenantid}/v2.0`): a token passes
/// when its `iss` is the template with its own `tid` put in, the tenant a
/// GUID; the v1 issuer as a second template, and an exact issuer beside
/// them, work the same. Another tenant's name, a `tid` that is not a
/// GUID (which could bend the name), no `tid`, or another host are
/// refused; such an issuer cannot be discovered.
#[tokio::test]
async fn a_tenant_template_issuer_takes_each_tokens_own_tenant() {
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("k1");
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    let guard = Guard::builder(
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        AUD,
        keys,
    )
    .also_issuer("https://sts.windows.net/{tenantid}/")
    .also_issuer(ISS)
    .typ(None)
    .build()
    .unwrap();
    let token = |iss: &str, tid: Option<&str>| {
        let mut custom = json!({"aud": AUD, "scp": "items.read"});
        if let Some(tid) = tid {
            custom["tid"] = json!(tid);
        }
        let claims = Claims::with_custom(custom)
            .issuer(iss)
            .subject("alice")
            .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
        jwt::sign(&claims, &key).unwrap()
    };
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let other = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";
    for (iss, tid) in [
        (
            format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            Some(tenant),
        ),
        (format!("https://sts.windows.net/{tenant}/"), Some(tenant)),
        (ISS.to_owned(), None),
    ] {
        let verified = guard.verify(&token(&iss, tid)).await;
        assert!(verified.is_ok(), "{iss}: {verified:?}");
    }
    for (what, iss, tid) in [
        (
            "another tenant's name",
            format!("https://login.microsoftonline.com/{other}/v2.0"),
            Some(tenant),
        ),
        (
            "no tid",
            format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            None,
        ),
        (
            "a tid that is not a GUID",
            "https://login.microsoftonline.com/x/y/v2.0".to_owned(),
            Some("x/y"),
        ),
        (
            "the template itself",
            "https://login.microsoftonline.com/{tenantid}/v2.0".to_owned(),
            Some("{tenantid}"),
        ),
        (
            "another host",
            format!("https://login.microsoftonline.com.example/{tenant}/v2.0"),
            Some(tenant),
        ),
        ("no issuer", String::new(), Some(tenant)),
    ] {
        let signed = if iss.is_empty() {
            let claims = Claims::with_custom(json!({"aud": AUD, "tid": tid}))
                .subject("alice")
                .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
            jwt::sign(&claims, &key).unwrap()
        } else {
            token(&iss, tid)
        };
        assert!(guard.verify(&signed).await.is_err(), "{what}");
    }
    let discovered =
        tessera_guard::RemoteJwks::discover("https://login.microsoftonline.com/{tenantid}/v2.0")
            .unwrap();
    let refused = Guard::builder(
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        AUD,
        discovered,
    )
    .build()
    .unwrap_err();
    assert!(refused.to_string().contains("RemoteJwks::url"), "{refused}");
}
