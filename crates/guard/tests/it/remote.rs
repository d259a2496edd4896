//! Remote JWKS: a local HTTP server plays the authorization server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tessera_guard::{Guard, Rejection, RemoteJwks};
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, JwkSet, NumericDate, SigningKey};

pub(super) const AUD: &str = "store-api";

#[derive(Default)]
struct Served {
    jwks: String,
    cache_control: Option<String>,
    status: u16,
    delay: Duration,
    issuer_override: Option<String>,
    /// The key set moved to `/moved/jwks.json` (the metadata says so) and
    /// `/jwks.json` answers 404, or, with `left_behind`, these keys.
    moved: bool,
    left_behind: Option<String>,
    /// The metadata answers 503.
    metadata_down: bool,
    /// The RFC 8414 metadata names no `jwks_uri`; the OpenID Connect
    /// metadata, served only then, does.
    split_metadata: bool,
}

#[derive(Clone)]
struct Shared {
    served: Arc<Mutex<Served>>,
    fetches: Arc<AtomicUsize>,
    base: String,
}

struct JwksServer {
    shared: Shared,
}

impl JwksServer {
    async fn start(keys: &[&SigningKey]) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            served: Arc::new(Mutex::new(Served {
                jwks: jwks(keys),
                status: 200,
                ..Served::default()
            })),
            fetches: Arc::new(AtomicUsize::new(0)),
            base,
        };
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route("/moved/jwks.json", get(serve_moved_jwks))
            .route(
                "/.well-known/oauth-authorization-server",
                get(serve_metadata),
            )
            .route(
                "/.well-known/openid-configuration",
                get(serve_openid_metadata),
            )
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { shared }
    }

    fn url(&self) -> String {
        format!("{}/jwks.json", self.shared.base)
    }

    fn set(&self, change: impl FnOnce(&mut Served)) {
        change(&mut self.shared.served.lock().unwrap());
    }

    fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(s): State<Shared>) -> axum::response::Response {
    let (moved, left_behind) = {
        let served = s.served.lock().unwrap();
        (served.moved, served.left_behind.clone())
    };
    if moved {
        s.fetches.fetch_add(1, Ordering::SeqCst);
        return match left_behind {
            Some(old) => old.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    serve_moved_jwks(State(s)).await
}

async fn serve_moved_jwks(State(s): State<Shared>) -> axum::response::Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    let (body, cache, status, delay) = {
        let served = s.served.lock().unwrap();
        (
            served.jwks.clone(),
            served.cache_control.clone(),
            served.status,
            served.delay,
        )
    };
    tokio::time::sleep(delay).await;
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    if let Some(cache) = cache {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cache.parse().unwrap());
    }
    response
}

async fn serve_metadata(State(s): State<Shared>) -> axum::response::Response {
    let (issuer, moved, down) = {
        let served = s.served.lock().unwrap();
        (
            served.issuer_override.clone(),
            served.moved,
            served.metadata_down,
        )
    };
    if down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let issuer = issuer.unwrap_or_else(|| s.base.clone());
    if s.served.lock().unwrap().split_metadata {
        return axum::Json(
            json!({ "issuer": issuer, "token_endpoint": format!("{}/token", s.base) }),
        )
        .into_response();
    }
    let path = if moved {
        "/moved/jwks.json"
    } else {
        "/jwks.json"
    };
    axum::Json(json!({ "issuer": issuer, "jwks_uri": format!("{}{path}", s.base) })).into_response()
}

/// OpenID Connect's metadata: only with `split_metadata`.
async fn serve_openid_metadata(State(s): State<Shared>) -> axum::response::Response {
    if !s.served.lock().unwrap().split_metadata {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(json!({ "issuer": s.base, "jwks_uri": format!("{}/jwks.json", s.base) }))
        .into_response()
}

pub(super) fn jwks(keys: &[&SigningKey]) -> String {
    JwkSet::new(
        keys.iter()
            .map(|k| k.verifying_key().unwrap().to_public_jwk().unwrap())
            .collect(),
    )
    .to_json()
}

pub(super) fn key() -> SigningKey {
    SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap()
}

pub(super) fn token(key: &SigningKey, iss: &str) -> String {
    let claims = Claims::new()
        .issuer(iss)
        .subject("alice")
        .audience(AUD)
        .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
    jwt::sign_with_header(&Header::for_key(key).typ("at+jwt"), &claims, key).unwrap()
}

pub(super) const ISS: &str = "https://auth.tessera.test";

pub(super) fn guard(remote: RemoteJwks) -> Guard {
    // No verified-token cache: every call below asks the key cache.
    Guard::builder(ISS, AUD, remote)
        .cache_size(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn keys_are_fetched_once_and_kept_for_max_age() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.cache_control = Some("public, max-age=1".into()));
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_secs(1), Duration::from_secs(60))
            .cooldown(Duration::from_millis(100)),
    );
    for _ in 0..3 {
        g.verify(&token(&a, ISS)).await.unwrap();
    }
    assert_eq!(server.fetches(), 1, "cached");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    g.verify(&token(&a, ISS)).await.unwrap();
    assert_eq!(server.fetches(), 2, "refetched after max-age");

    // A huge max-age is clamped to the upper bound.
    let b = key();
    let server = JwksServer::start(&[&b]).await;
    server.set(|s| s.cache_control = Some("max-age=999999".into()));
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_millis(10), Duration::from_secs(1))
            .cooldown(Duration::ZERO),
    );
    g.verify(&token(&b, ISS)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    g.verify(&token(&b, ISS)).await.unwrap();
    assert_eq!(server.fetches(), 2);

    // No upper bound, and the largest max-age there is: kept, no panic.
    let c = key();
    let server = JwksServer::start(&[&c]).await;
    server.set(|s| s.cache_control = Some(format!("max-age={}", u64::MAX)));
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_millis(10), Duration::MAX)
            .cooldown(Duration::ZERO),
    );
    for _ in 0..2 {
        g.verify(&token(&c, ISS)).await.unwrap();
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_key_set_publishing_a_secret_key_is_refused() {
    // A misconfigured issuer publishes its HMAC key: anyone could sign
    // tokens with it, so none is accepted. (A set mixing secret and public
    // keys is refused by `KeySet` already; this one holds only the secret.)
    let secret = [7u8; 32];
    let hmac = SigningKey::hmac(Algorithm::HS256, &secret)
        .unwrap()
        .with_kid("shared");
    let server = JwksServer::start(&[]).await;
    let only_secret = json!({"keys": [
        {"kty": "oct", "alg": "HS256", "kid": "shared", "k": tessera_jose::b64::encode(secret)},
    ]});
    server.set(|s| s.jwks = only_secret.to_string());
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    let refused = g.verify(&token(&hmac, ISS)).await.unwrap_err();
    assert!(matches!(refused, Rejection::KeysUnavailable), "{refused:?}");
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_key_set_publishing_a_private_key_is_refused() {
    // The issuer publishes its private signing key with the public part:
    // tokens signed with it are not accepted, nor those of the set's
    // other, well-published keys (the issuer is misconfigured).
    let (leaked, fine) = (key(), key());
    let server = JwksServer::start(&[]).await;
    let public = fine.verifying_key().unwrap().to_public_jwk().unwrap();
    let set = json!({"keys": [leaked.to_jwk().unwrap(), public]});
    server.set(|s| s.jwks = set.to_string());
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    for signer in [&leaked, &fine] {
        let refused = g.verify(&token(signer, ISS)).await.unwrap_err();
        assert!(matches!(refused, Rejection::KeysUnavailable), "{refused:?}");
    }
}

/// A key set of more keys than an issuer publishes (100 at most) is
/// refused whole: each key is parsed on a runtime thread, and a hostile
/// issuer's half-megabyte set holds thousands.
#[tokio::test]
async fn a_key_set_of_too_many_keys_is_refused() {
    let keys: Vec<SigningKey> = (0..101).map(|_| key()).collect();
    let server = JwksServer::start(&[]).await;
    server.set(|s| s.jwks = jwks(&keys.iter().collect::<Vec<_>>()));
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    let refused = g.verify(&token(&keys[0], ISS)).await.unwrap_err();
    assert!(matches!(refused, Rejection::KeysUnavailable), "{refused:?}");
    // A hundred are taken.
    server.set(|s| s.jwks = jwks(&keys[..100].iter().collect::<Vec<_>>()));
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    g.verify(&token(&keys[0], ISS)).await.unwrap();
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_per_cooldown() {
    let (a, b, c) = (key(), key(), key());
    let server = JwksServer::start(&[&a]).await;
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cooldown(Duration::from_secs(1)),
    );
    g.verify(&token(&a, ISS)).await.unwrap();
    assert_eq!(server.fetches(), 1);
    // The server rotates in key b; a token signed by b arrives after the
    // cooldown: one refetch finds it.
    server.set(|s| s.jwks = jwks(&[&a, &b]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    g.verify(&token(&b, ISS)).await.unwrap();
    assert_eq!(server.fetches(), 2);
    // Unknown kids within the cooldown do not reach the server.
    for _ in 0..20 {
        let refused = g.verify(&token(&c, ISS)).await.unwrap_err();
        assert!(matches!(refused, Rejection::InvalidToken { .. }));
    }
    assert_eq!(server.fetches(), 2, "no fetch storm from forged kids");
}

/// A key set with nothing usable in it, fetched for an unknown `kid`
/// while the keys are fresh (a bad deploy at the issuer), does not end
/// those keys: they serve to their max-age, and the set is asked for
/// again after the cooldown, when a good one takes over. Past their
/// max-age the empty set stands: that is how an issuer withdraws every
/// key, and keys it withdrew must not serve on.
#[tokio::test]
async fn a_key_set_with_no_usable_key_ends_no_fresh_keys_and_withdraws_stale_ones() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.cache_control = Some("max-age=2".into()));
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_secs(1), Duration::from_secs(60))
            .cooldown(Duration::ZERO),
    );
    g.verify(&token(&a, ISS)).await.unwrap();
    let claims = Claims::new()
        .issuer(ISS)
        .subject("alice")
        .audience(AUD)
        .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
    let unnamed = Header::new(Algorithm::ES256).typ("at+jwt");
    let no_kid = jwt::sign_with_header(&unnamed, &claims, &a).unwrap();
    let stranger = key();
    for empty in [
        r#"{"keys":[]}"#.to_owned(),
        json!({"keys": [{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}]})
            .to_string(),
    ] {
        server.set(|s| s.jwks = empty.clone());
        let before = server.fetches();
        // An unknown kid has the set fetched while a's keys are fresh.
        assert!(g.verify(&token(&stranger, ISS)).await.is_err());
        assert_eq!(server.fetches(), before + 1, "the set was asked for");
        g.verify(&token(&a, ISS))
            .await
            .unwrap_or_else(|e| panic!("{empty}: {e:?}"));
        g.verify(&no_kid).await.unwrap();
    }
    // Past their max-age, the empty set is the issuer's word (whatever
    // max-age it comes with).
    server.set(|s| s.cache_control = Some("max-age=60".into()));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(g.verify(&token(&a, ISS)).await.is_err(), "withdrawn");
    assert!(g.verify(&no_kid).await.is_err(), "withdrawn");
    // A good set again: it takes over as soon as the bounds allow, also
    // for a token without a `kid`, which asks for no refetch itself.
    let b = key();
    server.set(|s| s.jwks = jwks(&[&b]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b_no_kid = jwt::sign_with_header(&unnamed, &claims, &b).unwrap();
    g.verify(&b_no_kid).await.unwrap();
    g.verify(&token(&b, ISS)).await.unwrap();
}

#[tokio::test]
async fn failures_keep_the_last_good_keys() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.cache_control = Some("max-age=1".into()));
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_secs(1), Duration::from_secs(60))
            .cooldown(Duration::ZERO),
    );
    g.verify(&token(&a, ISS)).await.unwrap();
    server.set(|s| s.status = 500);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    g.verify(&token(&a, ISS))
        .await
        .expect("stale keys keep serving");
    assert_eq!(server.fetches(), 2, "the refetch was tried");

    // Without any good keys, requests get 503, not 401, and a failing
    // server is not asked again before the cooldown.
    let before = server.fetches();
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    for _ in 0..5 {
        assert_eq!(
            g.verify(&token(&a, ISS)).await.unwrap_err(),
            Rejection::KeysUnavailable
        );
    }
    assert_eq!(server.fetches(), before + 1);
}

/// A token signed by a key the cached set does not know, while the key
/// set cannot be fetched (an issuer that revoked its key and signs with a
/// new one at once, during an outage of its JWKS): 503, so that the
/// client tries again, not 401, which would have it drop a good token.
/// Once the set is fetched again, the token verifies; a `kid` still
/// unknown to a set fetched without trouble is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_kid_while_the_keys_cannot_be_fetched_is_503() {
    let (a, b) = (key(), key());
    let server = JwksServer::start(&[&a]).await;
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cooldown(Duration::ZERO),
    );
    g.verify(&token(&a, ISS)).await.unwrap();
    server.set(|s| s.status = 500);
    assert_eq!(
        g.verify(&token(&b, ISS)).await.unwrap_err(),
        Rejection::KeysUnavailable
    );
    // The known key goes on with the last good set meanwhile.
    g.verify(&token(&a, ISS)).await.unwrap();
    server.set(|s| {
        s.status = 200;
        s.jwks = jwks(&[&a, &b]);
    });
    g.verify(&token(&b, ISS)).await.unwrap();
    let forged = key();
    assert!(matches!(
        g.verify(&token(&forged, ISS)).await.unwrap_err(),
        Rejection::InvalidToken { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_simultaneous_requests_cause_one_fetch() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.delay = Duration::from_millis(300));
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    let t = token(&a, ISS);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (g, t) = (g.clone(), t.clone());
            tokio::spawn(async move { g.verify(&t).await.is_ok() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(server.fetches(), 1);
}

/// Requests cancelled while the keys are fetched (a client gone, a
/// timeout layer) neither abort the fetch nor start another: the next
/// request uses what the one fetch found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_neither_abort_nor_repeat_the_fetch() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.delay = Duration::from_millis(500));
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    for i in 0..10 {
        let other = key();
        // Each with a kid of its own, which the cache cannot answer for.
        let t = if i == 0 {
            token(&a, ISS)
        } else {
            token(&other, ISS)
        };
        let given_up = tokio::time::timeout(Duration::from_millis(20), g.verify(&t)).await;
        assert!(
            given_up.is_err(),
            "the fetch takes longer than the request waits"
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    g.verify(&token(&a, ISS))
        .await
        .expect("the keys the first request's fetch found");
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn slow_and_oversized_documents_are_refused() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.delay = Duration::from_secs(3));
    let slow = RemoteJwks::url(server.url())
        .unwrap()
        .limits(Duration::from_millis(300), 64 * 1024)
        .unwrap();
    assert_eq!(
        guard(slow).verify(&token(&a, ISS)).await.unwrap_err(),
        Rejection::KeysUnavailable
    );
    server.set(|s| {
        s.delay = Duration::ZERO;
        s.jwks = format!("{{\"keys\":[],\"padding\":\"{}\"}}", "x".repeat(100 * 1024));
    });
    let small = RemoteJwks::url(server.url())
        .unwrap()
        .limits(Duration::from_secs(5), 64 * 1024)
        .unwrap();
    assert_eq!(
        guard(small).verify(&token(&a, ISS)).await.unwrap_err(),
        Rejection::KeysUnavailable
    );
}

#[tokio::test]
async fn discovery_follows_the_issuers_metadata() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    let issuer = server.shared.base.clone();
    let g = Guard::builder(&issuer, AUD, RemoteJwks::discover(&issuer).unwrap())
        .build()
        .unwrap();
    g.verify(&token(&a, &issuer)).await.unwrap();
    assert_eq!(server.fetches(), 1);
    // Metadata that claims another issuer is not trusted (RFC 8414 §3.3).
    server.set(|s| s.issuer_override = Some("https://evil.example".into()));
    let g = Guard::builder(&issuer, AUD, RemoteJwks::discover(&issuer).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        g.verify(&token(&a, &issuer)).await.unwrap_err(),
        Rejection::KeysUnavailable
    );
}

#[tokio::test]
async fn a_jwks_uri_that_stops_answering_is_discovered_again() {
    // The issuer moves its key set (a new CDN path) and the old URL
    // answers 404: the guard asks the metadata again instead of retrying
    // the old URL until its keys go past max_stale.
    let (a, b) = (key(), key());
    let server = JwksServer::start(&[&a]).await;
    let issuer = server.shared.base.clone();
    let remote = RemoteJwks::discover(&issuer)
        .unwrap()
        .cooldown(Duration::from_millis(100));
    let g = Guard::builder(&issuer, AUD, remote)
        .cache_size(0)
        .build()
        .unwrap();
    g.verify(&token(&a, &issuer)).await.unwrap();
    server.set(|s| {
        s.moved = true;
        s.jwks = jwks(&[&a, &b]);
    });
    // A token of the new key, once per cooldown: the old URL fails once,
    // then the metadata names the new one.
    let mut accepted = false;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if g.verify(&token(&b, &issuer)).await.is_ok() {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the moved key set was never found");
}

/// The same when the old URL goes on answering with the old keys (a CDN's
/// copy, a path left up): a token of a key the set does not have sends the
/// guard back to the metadata, which names the new URL.
#[tokio::test]
async fn a_jwks_uri_left_behind_with_old_keys_is_discovered_again() {
    let (a, b) = (key(), key());
    let server = JwksServer::start(&[&a]).await;
    let issuer = server.shared.base.clone();
    let remote = RemoteJwks::discover(&issuer)
        .unwrap()
        .cooldown(Duration::from_millis(100));
    let g = Guard::builder(&issuer, AUD, remote)
        .cache_size(0)
        .build()
        .unwrap();
    g.verify(&token(&a, &issuer)).await.unwrap();
    server.set(|s| {
        s.moved = true;
        s.left_behind = Some(jwks(&[&a]));
        s.jwks = jwks(&[&a, &b]);
    });
    let mut accepted = false;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if g.verify(&token(&b, &issuer)).await.is_ok() {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the moved key set was never found");
    g.verify(&token(&a, &issuer)).await.unwrap();
}

/// A guard over `server`'s metadata that fetches the keys for every
/// token: stale at once, never served stale, no cooldown, no token cache.
fn fetching_every_time(server: &JwksServer) -> (Guard, String) {
    server.set(|s| s.cache_control = Some("max-age=0".into()));
    let issuer = server.shared.base.clone();
    let remote = RemoteJwks::discover(&issuer)
        .unwrap()
        .cache_bounds(Duration::ZERO, Duration::from_secs(60))
        .max_stale(Duration::ZERO)
        .cooldown(Duration::ZERO);
    let g = Guard::builder(&issuer, AUD, remote)
        .cache_size(0)
        .build()
        .unwrap();
    (g, issuer)
}

/// A token with a made-up `kid` sends the next fetch to the metadata
/// first, but a metadata outage then does not stop the keys: the address
/// known still serves them.
#[tokio::test]
async fn a_made_up_kid_during_a_metadata_outage_keeps_the_keys() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    let (g, issuer) = fetching_every_time(&server);
    g.verify(&token(&a, &issuer)).await.unwrap();
    server.set(|s| s.metadata_down = true);
    let stranger = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("made-up");
    assert!(g.verify(&token(&stranger, &issuer)).await.is_err());
    let fetched = server.fetches();
    g.verify(&token(&a, &issuer))
        .await
        .expect("the known address still serves");
    assert!(server.fetches() > fetched, "fetched again");
}

/// A key set that failed once is asked again at the address known when
/// the metadata is down meanwhile: it used to be forgotten after one
/// failed fetch, and with the metadata down no key was ever fetched again
/// (every request 503 once the keys went stale).
#[tokio::test]
async fn a_key_set_that_failed_once_is_asked_again_while_the_metadata_is_down() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    let (g, issuer) = fetching_every_time(&server);
    g.verify(&token(&a, &issuer)).await.unwrap();
    server.set(|s| s.status = 502);
    assert!(g.verify(&token(&a, &issuer)).await.is_err());
    server.set(|s| {
        s.status = 200;
        s.metadata_down = true;
    });
    let fetched = server.fetches();
    g.verify(&token(&a, &issuer))
        .await
        .expect("the key set is fetched from the address known");
    assert!(server.fetches() > fetched, "fetched again");
}

/// RFC 8414 metadata need not name a `jwks_uri`: what it leaves out is
/// taken from the issuer's OpenID Connect metadata.
#[tokio::test]
async fn a_key_set_named_only_in_the_openid_metadata_is_found() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.split_metadata = true);
    let issuer = server.shared.base.clone();
    let g = Guard::builder(&issuer, AUD, RemoteJwks::discover(&issuer).unwrap())
        .build()
        .unwrap();
    g.verify(&token(&a, &issuer))
        .await
        .expect("keys found through the OpenID Connect metadata");
}

#[tokio::test]
async fn a_withdrawn_key_ends_its_cached_tokens() {
    let (a, b) = (key(), key());
    let server = JwksServer::start(&[&a, &b]).await;
    let remote = RemoteJwks::url(server.url())
        .unwrap()
        .cache_bounds(Duration::from_millis(300), Duration::from_millis(500))
        .cooldown(Duration::from_millis(100));
    // The verified-token cache is on (the default).
    let g = Guard::builder(ISS, AUD, remote).build().unwrap();
    let t = token(&a, ISS);
    g.verify(&t).await.unwrap();
    g.verify(&t).await.unwrap();
    assert_eq!(server.fetches(), 1);
    server.set(|s| s.jwks = jwks(&[&b]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        matches!(g.verify(&t).await, Err(Rejection::InvalidToken { .. })),
        "a cached token must not outlive its key"
    );
    g.verify(&token(&b, ISS)).await.unwrap();
}

#[tokio::test]
async fn a_cached_token_ends_with_its_key_whatever_its_kid() {
    // The keys a verification really used, not the kid a header names: a
    // token without a kid (one ES256 key published), and new material put
    // under the kid of the old.
    let bare = |k: SigningKey| {
        let mut jwk = k.verifying_key().unwrap().to_public_jwk().unwrap();
        jwk.kid = None;
        (k, jwk)
    };
    let ((a, a_jwk), (b, b_jwk)) = (
        bare(SigningKey::generate(Algorithm::ES256).unwrap()),
        bare(SigningKey::generate(Algorithm::ES256).unwrap()),
    );
    let (old, new) = (
        SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("k1"),
        SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("k1"),
    );
    for (signer, first, then, successor) in [
        (&a, JwkSet::new(vec![a_jwk]), JwkSet::new(vec![b_jwk]), &b),
        (
            &old,
            JwkSet::from_json(&jwks(&[&old])).unwrap(),
            JwkSet::from_json(&jwks(&[&new])).unwrap(),
            &new,
        ),
    ] {
        let server = JwksServer::start(&[]).await;
        server.set(|s| s.jwks = first.to_json());
        let remote = RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_millis(300), Duration::from_millis(500))
            .cooldown(Duration::from_millis(100));
        let g = Guard::builder(ISS, AUD, remote).build().unwrap();
        let t = token(signer, ISS);
        g.verify(&t).await.unwrap();
        g.verify(&t).await.unwrap();
        assert_eq!(
            server.fetches(),
            1,
            "the second verification is a cache hit"
        );
        server.set(|s| s.jwks = then.to_json());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            matches!(g.verify(&t).await, Err(Rejection::InvalidToken { .. })),
            "a cached token must not outlive its key ({:?})",
            signer.kid()
        );
        g.verify(&token(successor, ISS)).await.unwrap();
    }
}

/// An issuer no one here wrote, as Auth0 and Entra ID are: OpenID Connect
/// Discovery only, its identifier as given (a trailing slash, or a path).
async fn openid_only_issuer(keys: &[&SigningKey], path: &str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = format!("{base}{path}");
    let served = (issuer.clone(), format!("{base}/keys"), jwks(keys));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let trimmed = path.trim_end_matches('/').to_owned();
    let app = Router::new()
        .route(
            "/.well-known/oauth-authorization-server/hangs",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                axum::http::StatusCode::NOT_FOUND
            }),
        )
        .route(
            &format!("{trimmed}/.well-known/openid-configuration"),
            get({
                let served = served.clone();
                move || async move {
                    axum::Json(json!({ "issuer": served.0, "jwks_uri": served.1 })).into_response()
                }
            }),
        )
        .route(
            "/keys",
            get(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                served.2.clone().into_response()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (issuer, calls)
}

#[tokio::test]
async fn issuers_with_only_openid_metadata_a_trailing_slash_or_a_path_are_discovered() {
    let a = key();
    for path in ["/", "", "/tenant/v2.0"] {
        let (issuer, calls) = openid_only_issuer(&[&a], path).await;
        let g = Guard::builder(&issuer, AUD, RemoteJwks::discover(&issuer).unwrap())
            .build()
            .unwrap();
        g.verify(&token(&a, &issuer))
            .await
            .unwrap_or_else(|e| panic!("{issuer}: {e:?}"));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{issuer}");
        // The identifier is compared exactly: with or without the slash is
        // another issuer.
        let other = if issuer.ends_with('/') {
            issuer.trim_end_matches('/').to_owned()
        } else {
            format!("{issuer}/")
        };
        assert!(g.verify(&token(&a, &other)).await.is_err(), "{other}");
    }
}

/// An issuer whose RFC 8414 path hangs (a firewall's tarpit) instead of
/// answering 404, and which publishes OpenID Connect metadata: its keys
/// are found. Before, the RFC 8414 request spent the whole budget, the
/// OpenID Connect document was never asked, and every request got 503.
#[tokio::test]
async fn a_metadata_path_that_hangs_does_not_hide_the_other() {
    let a = key();
    // (The host answers this issuer's RFC 8414 path only after a minute.)
    let (issuer, calls) = openid_only_issuer(&[&a], "/hangs").await;
    let remote = RemoteJwks::discover(&issuer)
        .unwrap()
        .limits(Duration::from_millis(700), 512 * 1024)
        .unwrap();
    let g = Guard::builder(&issuer, AUD, remote).build().unwrap();
    g.verify(&token(&a, &issuer))
        .await
        .unwrap_or_else(|e| panic!("{issuer}: {e:?}"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rsa_keys_published_without_alg_verify_rs256_tokens() {
    // As Entra ID publishes them: kty RSA, a kid, no alg.
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let mut jwk = rsa.verifying_key().unwrap().to_public_jwk().unwrap();
    jwk.alg = None;
    let server = JwksServer::start(&[]).await;
    server.set(|s| s.jwks = JwkSet::new(vec![jwk]).to_json());
    let g = guard(RemoteJwks::url(server.url()).unwrap());
    g.verify(&token(&rsa, ISS)).await.unwrap();
    // The choice is the verifier's: told PS256 only, an RS256 token fails.
    let ps_only = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .algorithms_for_keys_without_alg([Algorithm::PS256]),
    );
    assert!(ps_only.verify(&token(&rsa, ISS)).await.is_err());
}

/// An issuer slow to answer a refresh holds up the one request that
/// refreshes; the others go on with the stale keys meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_refresh_holds_up_one_request_not_all() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.cache_control = Some("max-age=1".into()));
    let g = Arc::new(guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_secs(1), Duration::from_secs(60))
            .cooldown(Duration::ZERO),
    ));
    g.verify(&token(&a, ISS)).await.unwrap();
    server.set(|s| s.delay = Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refreshing = tokio::spawn({
        let (g, t) = (Arc::clone(&g), token(&a, ISS));
        async move { g.verify(&t).await.is_ok() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        g.verify(&token(&a, ISS)).await.unwrap();
    }
    assert!(
        !refreshing.is_finished(),
        "the others were served while the refresh was under way"
    );
    assert!(refreshing.await.unwrap());
    assert_eq!(server.fetches(), 2, "one refresh");
}

/// When refreshes keep failing, the last good keys serve for `max_stale`
/// past their freshness, then requests get 503: a key the issuer has
/// withdrawn is not accepted for ever by making its JWKS unreachable.
#[tokio::test]
async fn stale_keys_serve_no_longer_than_max_stale() {
    let a = key();
    let server = JwksServer::start(&[&a]).await;
    server.set(|s| s.cache_control = Some("max-age=1".into()));
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::from_secs(1), Duration::from_secs(60))
            .cooldown(Duration::ZERO)
            .max_stale(Duration::from_secs(2)),
    );
    g.verify(&token(&a, ISS)).await.unwrap();
    server.set(|s| s.status = 500);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    g.verify(&token(&a, ISS))
        .await
        .expect("stale within max_stale");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        g.verify(&token(&a, ISS)).await.unwrap_err(),
        Rejection::KeysUnavailable
    );
}

/// A key set that refuses tokens it looks like it should verify is
/// reported once, at warn, when it arrives: two keys under one `kid` (every
/// token signed under it is ambiguous), or no usable key at all. The same
/// key listed twice is one key, and verifies.
#[tokio::test]
async fn a_key_set_that_refuses_its_own_tokens_is_reported_once() {
    let logged = crate::Logged::default();
    let _logging = logged.capture();
    let a = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("k1");
    let b = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("k1");
    let server = JwksServer::start(&[&a, &a]).await;
    // Fetched again for every token.
    server.set(|s| s.cache_control = Some("max-age=0".into()));
    let g = guard(
        RemoteJwks::url(server.url())
            .unwrap()
            .cache_bounds(Duration::ZERO, Duration::from_secs(60))
            .cooldown(Duration::ZERO),
    );
    g.verify(&token(&a, ISS)).await.unwrap();
    assert_eq!(logged.count("several keys under one kid"), 0);
    server.set(|s| s.jwks = jwks(&[&a, &b]));
    for _ in 0..3 {
        let refused = g.verify(&token(&a, ISS)).await.unwrap_err();
        assert!(
            matches!(refused, Rejection::InvalidToken { .. }),
            "{refused:?}"
        );
    }
    assert_eq!(logged.count("several keys under one kid"), 1);
    server.set(|s| s.jwks = r#"{"keys":[]}"#.into());
    assert!(g.verify(&token(&a, ISS)).await.is_err());
    assert_eq!(logged.count("has no usable key: its tokens are refused"), 1);
}

/// A key published with an `issuer` member (Microsoft Entra ID's `common`
/// key set gives each key `https://login.microsoftonline.com/{tenantid}/v2.0`)
/// verifies that issuer's tokens only, a template's tenant being the
/// token's `tid`: a token naming another issuer the guard accepts is
/// refused when such a key signed it, and accepted when a key without
/// the member, or one published for that issuer, did.
#[tokio::test]
async fn a_key_published_for_one_issuer_vouches_for_no_other() {
    const ENTRA: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
    const OTHER: &str = "https://other.example";
    let (entra, other, free, odd) = (key(), key(), key(), key());
    let mut set: serde_json::Value =
        serde_json::from_str(&jwks(&[&entra, &other, &free, &odd])).unwrap();
    set["keys"][0]["issuer"] = json!(ENTRA);
    set["keys"][1]["issuer"] = json!(OTHER);
    set["keys"][3]["issuer"] = json!(["not", "a string"]);
    let server = JwksServer::start(&[]).await;
    server.set(|s| s.jwks = set.to_string());
    let g = Guard::builder(ENTRA, AUD, RemoteJwks::url(server.url()).unwrap())
        .also_issuer("https://sts.windows.net/{tenantid}/")
        .also_issuer(OTHER)
        .cache_size(0)
        .build()
        .unwrap();
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let entra_iss = format!("https://login.microsoftonline.com/{tenant}/v2.0");
    let signed = |key: &SigningKey, iss: &str, tid: Option<&str>| {
        let mut custom = json!({"aud": AUD});
        if let Some(tid) = tid {
            custom["tid"] = json!(tid);
        }
        let claims = Claims::with_custom(custom)
            .issuer(iss)
            .subject("alice")
            .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
        jwt::sign_with_header(&Header::for_key(key).typ("at+jwt"), &claims, key).unwrap()
    };
    for (what, token) in [
        (
            "Entra's key, its tenant",
            signed(&entra, &entra_iss, Some(tenant)),
        ),
        // Entra ID's v1 tokens, signed with the keys of its v2 issuer.
        (
            "Entra's key, a v1 token",
            signed(
                &entra,
                &format!("https://sts.windows.net/{tenant}/"),
                Some(tenant),
            ),
        ),
        ("the other issuer's key", signed(&other, OTHER, None)),
        (
            "a key bound to no issuer, Entra",
            signed(&free, &entra_iss, Some(tenant)),
        ),
        (
            "a key bound to no issuer, the other",
            signed(&free, OTHER, None),
        ),
    ] {
        let verified = g.verify(&token).await;
        assert!(verified.is_ok(), "{what}: {verified:?}");
    }
    for (what, token) in [
        (
            "Entra's key, another issuer",
            signed(&entra, OTHER, Some(tenant)),
        ),
        (
            "the other issuer's key, Entra",
            signed(&other, &entra_iss, Some(tenant)),
        ),
        (
            "the other issuer's key, a v1 token",
            signed(
                &other,
                &format!("https://sts.windows.net/{tenant}/"),
                Some(tenant),
            ),
        ),
        ("a key whose issuer is no string", signed(&odd, OTHER, None)),
    ] {
        let refused = g.verify(&token).await;
        assert!(
            matches!(refused, Err(Rejection::InvalidToken { .. })),
            "{what}: {refused:?}"
        );
    }
}
