//! The revocation feed: a local HTTP server plays the issuer (OpenID
//! metadata, a token endpoint, a feed of server-sent events it scripts).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tessera_guard::revocation::Revocation;
use tessera_guard::{Guard, Rejection, RevocationFeed, WhenUnreachable};
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, KeySet, NumericDate, SigningKey};

const AUD: &str = "store-api";
const SECRET: &str = "feed secret: with spaces & symbols";

#[derive(Default)]
struct Script {
    events: Vec<(u64, String)>,
    /// Answer 503 to the feed (and drop open streams).
    down: bool,
    /// Bumped to drop every open stream.
    generation: u64,
    /// The `Last-Event-ID` of each connection (`None`: none sent).
    cursors: Vec<Option<String>>,
    /// The last event's digest each connection sent.
    digests: Vec<Option<String>>,
    /// The next connection ends after this many events, before `ready`.
    cut_after: Option<usize>,
    /// The next connection is accepted and never answered.
    hang_next: bool,
    /// Token responses are padded past 64 KiB.
    huge_tokens: bool,
    /// The token endpoint and the feed moved under `/moved/` (the metadata
    /// says so); the old paths answer 404.
    moved: bool,
    tokens_issued: u64,
    /// Each stream begins with byte-order marks, the first cut across
    /// two writes.
    byte_order_marks: bool,
    /// The feed answers 503 with this `Retry-After` (seconds).
    busy: Option<u64>,
    /// Once moved, the old feed answers this instead of 404 (a proxy in
    /// front of an address the issuer has left).
    old_status: Option<u16>,
    /// The open stream sends `reset` once, after `ready` (a server, or
    /// a proxy replaying one, that starts over mid-stream).
    reset_live: bool,
    /// The feed answers 400 to any request with a `Last-Event-ID`.
    refuse_cursors: bool,
    /// The next connection begins with a `reset`, cursor or not (a proxy
    /// replaying a stream).
    reset_first: bool,
    /// Requests the feed and the metadata have had.
    feed_requests: u64,
    metadata_requests: u64,
}

#[derive(Clone)]
struct Issuer {
    script: Arc<Mutex<Script>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    base: String,
}

impl Issuer {
    async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Issuer {
            script: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
            base,
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(metadata))
            .route("/token", post(old_token_endpoint))
            .route("/feed", get(old_feed))
            .route("/moved/token", post(token_endpoint))
            .route("/moved/feed", get(serve_feed))
            .with_state(issuer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        issuer
    }

    fn change(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
        self.changed.send_modify(|n| *n += 1);
    }

    fn revoke(&self, revocation: Revocation) {
        self.publish(serde_json::to_string(&revocation).unwrap());
    }

    /// Append an event's data as it is.
    fn publish(&self, data: String) {
        self.change(|s| {
            let id = s.events.len() as u64 + 1;
            s.events.push((id, data));
        });
    }

    fn cursors(&self) -> Vec<Option<String>> {
        self.script.lock().unwrap().cursors.clone()
    }
}

async fn metadata(State(i): State<Issuer>) -> impl IntoResponse {
    i.script.lock().unwrap().metadata_requests += 1;
    let at = if i.script.lock().unwrap().moved {
        format!("{}/moved", i.base)
    } else {
        i.base.clone()
    };
    // OpenID metadata only, as many issuers publish.
    axum::Json(json!({
        "issuer": i.base,
        "token_endpoint": format!("{at}/token"),
        "jwks_uri": format!("{}/jwks", i.base),
        "revocation_feed_endpoint": format!("{at}/feed"),
    }))
}

async fn old_token_endpoint(
    State(i): State<Issuer>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    if i.script.lock().unwrap().moved {
        return StatusCode::NOT_FOUND.into_response();
    }
    token_endpoint(State(i), headers, body).await
}

async fn old_feed(State(i): State<Issuer>, headers: HeaderMap) -> axum::response::Response {
    let (moved, old_status) = {
        let s = i.script.lock().unwrap();
        (s.moved, s.old_status)
    };
    if moved {
        let status = old_status.map_or(StatusCode::NOT_FOUND, |s| StatusCode::from_u16(s).unwrap());
        return status.into_response();
    }
    serve_feed(State(i), headers).await
}

async fn token_endpoint(
    State(i): State<Issuer>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|b| String::from_utf8(base64_decode(b)).unwrap_or_default());
    // RFC 6749 §2.3.1: both parts form-encoded, then Basic.
    let expected = format!(
        "rs1:{}",
        form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>()
    );
    if basic.as_deref() != Some(expected.as_str())
        || !body.contains("grant_type=client_credentials")
        || !body.contains("scope=revocations%3Aread")
    {
        return (StatusCode::UNAUTHORIZED, "{}").into_response();
    }
    let (n, huge) = {
        let mut s = i.script.lock().unwrap();
        s.tokens_issued += 1;
        (s.tokens_issued, s.huge_tokens)
    };
    let mut answer = json!({ "access_token": format!("feed-token-{n}"), "token_type": "Bearer", "expires_in": 300 });
    if huge {
        // Well-formed, and a good token but for its size.
        answer["padding"] = json!("x".repeat(65 * 1024));
    }
    axum::Json(answer).into_response()
}

async fn serve_feed(State(i): State<Issuer>, headers: HeaderMap) -> axum::response::Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !bearer.starts_with("Bearer feed-token-") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let cursor = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let digest = headers
        .get(tessera_guard::revocation::LAST_EVENT_DIGEST)
        .map(|v| v.to_str().unwrap().to_owned());
    let busy = {
        let mut s = i.script.lock().unwrap();
        s.feed_requests += 1;
        s.busy
    };
    if let Some(secs) = busy {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, secs.to_string())],
        )
            .into_response();
    }
    if cursor.is_some() && i.script.lock().unwrap().refuse_cursors {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let hang = std::mem::take(&mut i.script.lock().unwrap().hang_next);
    if hang {
        std::future::pending::<()>().await;
    }
    let generation = {
        let mut s = i.script.lock().unwrap();
        if s.down {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        s.cursors.push(cursor.clone());
        s.digests.push(digest.clone());
        s.generation
    };
    let mut after: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
    // As the server does: a cursor whose event here is another one (or
    // none) starts over.
    let start_over = digest.as_ref().is_some_and(|d| {
        let s = i.script.lock().unwrap();
        !s.events
            .iter()
            .any(|(id, data)| *id == after && tessera_guard::revocation::event_digest(data) == *d)
    });
    if start_over {
        after = 0;
    }
    let marks = i.script.lock().unwrap().byte_order_marks;
    let changes = i.changed.subscribe();
    let budget = i
        .script
        .lock()
        .unwrap()
        .cut_after
        .take()
        .unwrap_or(usize::MAX);
    let reset_first = std::mem::take(&mut i.script.lock().unwrap().reset_first);
    let reset = futures_util::stream::iter(
        (start_over || reset_first)
            .then(|| Ok::<_, Infallible>(Event::default().event("reset").data("{}"))),
    );
    let state = (i, changes, after, false, generation, budget);
    let stream = futures_util::stream::unfold(
        state,
        |(i, mut changes, mut after, mut ready, generation, mut budget)| async move {
            loop {
                if budget == 0 {
                    return None;
                }
                let (next, dropped, reset) = {
                    let mut s = i.script.lock().unwrap();
                    let next = s.events.iter().find(|(id, _)| *id > after).cloned();
                    let reset = ready && std::mem::take(&mut s.reset_live);
                    (next, s.down || s.generation != generation, reset)
                };
                if dropped {
                    return None;
                }
                if reset {
                    let event = Event::default().event("reset").data("{}");
                    return Some((Ok(event), (i, changes, after, ready, generation, budget)));
                }
                if let Some((id, data)) = next {
                    after = id;
                    budget -= 1;
                    let event = Event::default()
                        .event("revocation")
                        .id(id.to_string())
                        .data(data);
                    let state = (i, changes, after, ready, generation, budget);
                    return Some((Ok::<_, Infallible>(event), state));
                }
                if !ready {
                    ready = true;
                    let event = Event::default().event("ready").data("{}");
                    return Some((Ok(event), (i, changes, after, ready, generation, budget)));
                }
                changes.borrow_and_update();
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    let response = Sse::new(futures_util::StreamExt::chain(reset, stream)).into_response();
    if !marks {
        return response;
    }
    let (parts, body) = response.into_parts();
    let marks = futures_util::stream::iter([
        Ok::<_, axum::Error>(axum::body::Bytes::from_static(b"\xEF")),
        Ok(axum::body::Bytes::from_static(b"\xBB\xBF\xEF\xBB\xBF")),
    ]);
    let body = futures_util::StreamExt::chain(marks, body.into_data_stream());
    axum::response::Response::from_parts(parts, axum::body::Body::from_stream(body))
}

fn base64_decode(text: &str) -> Vec<u8> {
    base64_simd::STANDARD
        .decode_to_vec(text)
        .unwrap_or_default()
}

fn key() -> SigningKey {
    SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap()
}

fn token(key: &SigningKey, iss: &str, jti: &str, sub: &str) -> String {
    let claims = Claims::new()
        .issuer(iss)
        .subject(sub)
        .audience(AUD)
        .jwt_id(jti)
        .issued_at(NumericDate::now())
        .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
    jwt::sign_with_header(&Header::for_key(key).typ("at+jwt"), &claims, key).unwrap()
}

fn guard(issuer: &Issuer, key: &SigningKey, feed: RevocationFeed) -> Guard {
    let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
    Guard::builder(&issuer.base, AUD, keys)
        .revocations(feed)
        .build()
        .unwrap()
}

fn feed(issuer: &Issuer) -> tessera_guard::RevocationFeedBuilder {
    RevocationFeed::builder(&issuer.base, "rs1", SECRET.to_owned().into())
}

/// Poll `check` for up to fifteen seconds (a reconnection may wait out a
/// backoff of up to 5 s first).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A guard on `issuer`'s feed (as `feed` sets it up) that refuses every
/// token once the feed is unreachable for 300 ms, when it does (waited
/// for).
async fn once_refusing(
    issuer: &Issuer,
    key: &SigningKey,
    feed: tessera_guard::RevocationFeedBuilder,
) -> Guard {
    let g = guard(
        issuer,
        key,
        feed.unreachable_after(Duration::from_millis(300))
            .when_unreachable(WhenUnreachable::Refuse)
            .start()
            .unwrap(),
    );
    let fresh = token(key, &issuer.base, "fresh", "alice");
    eventually("tokens are refused", async || {
        g.verify(&fresh).await.err() == Some(Rejection::RevocationsUnavailable)
    })
    .await;
    g
}

fn revoked(rejection: &Rejection) -> bool {
    matches!(rejection, Rejection::InvalidToken { .. })
}

#[tokio::test]
async fn revoked_tokens_are_refused_even_when_cached_and_others_pass() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    // A revocation from before the guard started comes with the backlog.
    issuer.revoke(Revocation::Token {
        jti: "old".into(),
        until,
    });
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    let old = token(&key, &issuer.base, "old", "alice");
    let rejection = g.verify(&old).await.unwrap_err();
    assert!(revoked(&rejection), "{rejection:?}");
    assert_eq!(g.revocations().unwrap().status().revocations, 1);

    let t1 = token(&key, &issuer.base, "j1", "alice");
    let t2 = token(&key, &issuer.base, "j2", "alice");
    let bob = token(&key, &issuer.base, "j3", "bob");
    for t in [&t1, &t2, &bob] {
        g.verify(t).await.unwrap();
    }
    // t1 is in the verified-token cache now; revoking it must still work.
    issuer.revoke(Revocation::Token {
        jti: "j1".into(),
        until,
    });
    eventually("t1 is refused", async || g.verify(&t1).await.is_err()).await;
    g.verify(&t2).await.unwrap();
    // Every token of bob issued up to now.
    issuer.revoke(Revocation::User {
        sub: "bob".into(),
        issued_before: NumericDate::now().seconds(),
        until,
    });
    eventually("bob's token is refused", async || {
        g.verify(&bob).await.is_err()
    })
    .await;
    g.verify(&t2).await.unwrap();
    let status = g.revocations().unwrap().status();
    assert!(status.current);
    assert_eq!(status.last_event_id, Some(3));
    // The secret is never shown.
    let shown = format!("{:?} {:?}", feed(&issuer), g);
    assert!(!shown.contains(SECRET), "{shown}");
}

/// An event this guard cannot read (a newer server's, an identifier past
/// the bound) is skipped and counted, loudly; the events after it are
/// applied, in the backlog and live. It used to fail the connection, and
/// every reconnection failed on it again: no revocation after it was
/// ever applied, and a guard started afterwards never synchronized.
#[tokio::test]
async fn an_unreadable_event_is_skipped_and_the_feed_goes_on() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    let revoke = |jti: &str| {
        issuer.revoke(Revocation::Token {
            jti: jti.into(),
            until,
        })
    };
    revoke("j1");
    issuer.publish(format!(r#"{{"kind":"token","jti":"x","until":{until}.5}}"#));
    revoke(&"k".repeat(tessera_guard::MAX_IDENTIFIER_LEN + 1));
    revoke("j3");
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    for jti in ["j1", "j3"] {
        let rejection = g
            .verify(&token(&key, &issuer.base, jti, "alice"))
            .await
            .unwrap_err();
        assert!(revoked(&rejection), "{jti}: {rejection:?}");
    }
    issuer.publish(r#"{"kind":"user","sub":"bob"}"#.to_owned());
    revoke("j5");
    let j5 = token(&key, &issuer.base, "j5", "alice");
    eventually("j5 is refused", async || g.verify(&j5).await.is_err()).await;
    g.verify(&token(&key, &issuer.base, "j6", "bob"))
        .await
        .unwrap();
    let status = g.revocations().unwrap().status();
    assert!(status.current, "{status:?}");
    assert_eq!(status.last_event_id, Some(6));
    assert_eq!(status.unreadable_events, 3, "{status:?}");
}

/// Under `Refuse`, a revocation the guard cannot read must not let its
/// token through: the feed fails on it, and past the bound every token is
/// refused, as for a feed that cannot be reached.
#[tokio::test]
async fn an_unreadable_event_fails_a_feed_that_refuses() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    issuer.revoke(Revocation::Token {
        jti: "j1".into(),
        until,
    });
    issuer.publish(format!(r#"{{"kind":"token","jti":"x","until":{until}.5}}"#));
    let g = once_refusing(&issuer, &key(), feed(&issuer)).await;
    let status = g.revocations().unwrap().status();
    assert!(status.refusing && !status.current, "{status:?}");
    assert_eq!(status.unreadable_events, 0);
}

/// A key revoked at the issuer (it leaked): every token it verifies is
/// refused, cached ones and those without a `kid` too, whatever their
/// `iat` (whoever holds the key signs what they like); tokens of the
/// issuer's other key pass.
/// The event-stream format allows a byte-order mark before the first
/// event; the parser panicked on one, which ended the feed's task for
/// good: no revocation was applied after it, whatever the policy.
#[tokio::test]
async fn a_feed_that_begins_with_a_byte_order_mark_is_read() {
    let issuer = Issuer::start().await;
    issuer.change(|s| s.byte_order_marks = true);
    let until = NumericDate::now().seconds() + 600;
    issuer.revoke(Revocation::Token {
        jti: "old".into(),
        until,
    });
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    let old = token(&key, &issuer.base, "old", "alice");
    let rejection = g.verify(&old).await.unwrap_err();
    assert!(revoked(&rejection), "{rejection:?}");
    let fresh = token(&key, &issuer.base, "j1", "alice");
    g.verify(&fresh).await.unwrap();
    issuer.revoke(Revocation::Token {
        jti: "j1".into(),
        until,
    });
    eventually("j1 is refused", async || g.verify(&fresh).await.is_err()).await;
    assert!(g.revocations().unwrap().status().current);
}

#[tokio::test]
async fn tokens_of_a_revoked_key_are_refused_whatever_they_claim() {
    let issuer = Issuer::start().await;
    let (leaked, other) = (key(), key());
    let keys = KeySet::new(vec![
        leaked.verifying_key().unwrap(),
        other.verifying_key().unwrap(),
    ])
    .unwrap();
    let g = Guard::builder(&issuer.base, AUD, keys)
        .revocations(feed(&issuer).start().unwrap())
        .build()
        .unwrap();
    let cached = token(&leaked, &issuer.base, "j1", "alice");
    let fine = token(&other, &issuer.base, "j2", "alice");
    for t in [&cached, &fine] {
        g.verify(t).await.unwrap();
    }
    issuer.revoke(Revocation::Key {
        kid: leaked.kid().unwrap().to_owned(),
        until: NumericDate::now().seconds() + 600,
    });
    eventually("the leaked key's token is refused", async || {
        g.verify(&cached).await.is_err()
    })
    .await;
    let forged = token(&leaked, &issuer.base, "j3", "admin");
    assert!(revoked(&g.verify(&forged).await.unwrap_err()));
    g.verify(&fine).await.unwrap();
    // Without a kid, the key is the one that verifies it: a guard whose
    // set holds the leaked key alone chooses it, and refuses the token.
    let alone = Guard::builder(
        &issuer.base,
        AUD,
        KeySet::new(vec![leaked.verifying_key().unwrap()]).unwrap(),
    )
    .revocations(feed(&issuer).start().unwrap())
    .build()
    .unwrap();
    let claims = Claims::new()
        .issuer(&issuer.base)
        .subject("admin")
        .audience(AUD)
        .issued_at(NumericDate::now())
        .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
    let no_kid = jwt::sign_with_header(
        &Header::new(Algorithm::ES256).typ("at+jwt"),
        &claims,
        &leaked,
    )
    .unwrap();
    eventually("the kid-less token is refused", async || {
        alone.verify(&no_kid).await.is_err()
    })
    .await;
    assert!(revoked(&alone.verify(&no_kid).await.unwrap_err()));
}

#[tokio::test]
async fn an_oversized_token_response_is_refused_and_retried() {
    // The token endpoint's answer is read up to 64 KiB, not for as long
    // as the issuer (or someone on its path) keeps sending.
    let issuer = Issuer::start().await;
    issuer.change(|s| s.huge_tokens = true);
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    eventually("two tokens were asked for", async || {
        issuer.script.lock().unwrap().tokens_issued >= 2
    })
    .await;
    assert!(!g.revocations().unwrap().status().current);
    assert!(issuer.cursors().is_empty(), "the feed was never opened");
    issuer.change(|s| s.huge_tokens = false);
    eventually("the feed is current", async || {
        g.revocations().unwrap().status().current
    })
    .await;
}

#[tokio::test]
async fn moved_endpoints_are_discovered_again() {
    for old_status in [None, Some(502), Some(503)] {
        moved_endpoints_are_discovered_again_whatever_the_old_address_says(old_status).await;
    }
}

async fn moved_endpoints_are_discovered_again_whatever_the_old_address_says(
    old_status: Option<u16>,
) {
    // The issuer moves its token endpoint and feed and drops the open
    // stream: the guard asks the metadata again rather than retrying the
    // old URLs for ever, also when a proxy left at the old address answers
    // 502, or 503 (busy, for ever).
    let issuer = Issuer::start().await;
    issuer.change(|s| s.old_status = old_status);
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    eventually("the feed is current", async || {
        g.revocations().unwrap().status().current
    })
    .await;
    issuer.change(|s| {
        s.moved = true;
        s.generation += 1;
    });
    let t = token(&key, &issuer.base, "j1", "alice");
    issuer.revoke(Revocation::Token {
        jti: "j1".into(),
        until: NumericDate::now().seconds() + 600,
    });
    eventually("t is refused through the moved feed", async || {
        g.verify(&t).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn a_feed_that_never_answers_is_left_for_another_attempt() {
    // A frozen instance behind a balancer: the connection is accepted and
    // the request never answered. The guard gives up on it after the idle
    // timeout and connects again, instead of waiting for ever.
    let issuer = Issuer::start().await;
    issuer.change(|s| s.hang_next = true);
    let key = key();
    let g = guard(
        &issuer,
        &key,
        feed(&issuer)
            .idle_timeout(Duration::from_millis(500))
            .start()
            .unwrap(),
    );
    eventually("the feed is current", async || {
        g.revocations().unwrap().status().current
    })
    .await;
    assert_eq!(issuer.cursors().len(), 1, "answered on the second attempt");
    let t = token(&key, &issuer.base, "j1", "alice");
    issuer.revoke(Revocation::Token {
        jti: "j1".into(),
        until: NumericDate::now().seconds() + 600,
    });
    eventually("t is refused", async || g.verify(&t).await.is_err()).await;
}

#[tokio::test]
async fn a_dropped_connection_resumes_after_the_last_event() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    let t1 = token(&key, &issuer.base, "j1", "alice");
    let t2 = token(&key, &issuer.base, "j2", "alice");
    issuer.revoke(Revocation::Token {
        jti: "j1".into(),
        until,
    });
    eventually("t1 is refused", async || g.verify(&t1).await.is_err()).await;
    // The connection drops, and a revocation happens meanwhile.
    issuer.change(|s| {
        s.down = true;
        s.generation += 1;
    });
    issuer.revoke(Revocation::Token {
        jti: "j2".into(),
        until,
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    issuer.change(|s| s.down = false);
    eventually("t2 is refused", async || g.verify(&t2).await.is_err()).await;
    assert!(g.verify(&t1).await.is_err(), "what was known stays known");
    let cursors = issuer.cursors();
    assert_eq!(
        cursors.first(),
        Some(&None),
        "a first connection sends no cursor"
    );
    assert_eq!(
        cursors.last(),
        Some(&Some("1".to_owned())),
        "the reconnection resumed after the last event seen"
    );
    // … and named that event, so a restored log can tell it apart.
    let (data, digests) = {
        let s = issuer.script.lock().unwrap();
        (s.events[0].1.clone(), s.digests.clone())
    };
    assert_eq!(digests.first(), Some(&None));
    assert_eq!(
        digests.last(),
        Some(&Some(tessera_guard::revocation::event_digest(&data)))
    );
}

/// A feed that answers it is busy (503 with `Retry-After`) is left alone
/// that long, and its endpoints stand: before, every guard came back
/// within a quarter of a second, asking the metadata again each time,
/// three requests for one refusal, on an issuer already overloaded.
#[tokio::test]
async fn a_busy_feed_is_left_alone_as_long_as_it_asks() {
    let issuer = Issuer::start().await;
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    let t = token(&key, &issuer.base, "j1", "alice");
    g.verify(&t).await.unwrap();
    eventually("the feed is current", async || {
        g.revocations().unwrap().status().current
    })
    .await;
    // Busy, and every open stream dropped.
    issuer.change(|s| {
        s.busy = Some(3);
        s.generation += 1;
    });
    eventually("the busy feed was asked", async || {
        issuer.script.lock().unwrap().feed_requests >= 2
    })
    .await;
    let (feed_then, metadata_then) = {
        let s = issuer.script.lock().unwrap();
        (s.feed_requests, s.metadata_requests)
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        issuer.script.lock().unwrap().feed_requests,
        feed_then,
        "asked again before Retry-After"
    );
    // Busy without a wait to ask for: asked again at the backoff's pace,
    // at the same address, without reading the metadata again...
    issuer.change(|s| s.busy = Some(0));
    eventually("the feed was asked again", async || {
        issuer.script.lock().unwrap().feed_requests > feed_then
    })
    .await;
    assert_eq!(
        issuer.script.lock().unwrap().metadata_requests,
        metadata_then,
        "discovered again"
    );
    // ...until a few busy answers in a row: then the metadata is read
    // again (a proxy in front of an address the issuer has left answers
    // 503 for ever).
    eventually("the metadata was read again", async || {
        issuer.script.lock().unwrap().metadata_requests > metadata_then
    })
    .await;
    // Free again: the feed is read again once the wait is over.
    issuer.change(|s| s.busy = None);
    eventually("the feed is current again", async || {
        issuer.script.lock().unwrap().feed_requests > feed_then
            && g.revocations().unwrap().status().current
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_feed_follows_the_stated_policy() {
    let issuer = Issuer::start().await;
    let key = key();
    let t = token(&key, &issuer.base, "j1", "alice");
    issuer.change(|s| s.down = true);

    // Never reached: by default the guard serves (after a short wait for
    // the first synchronization) and reports it.
    let serving = guard(
        &issuer,
        &key,
        feed(&issuer)
            .first_sync_wait(Duration::from_millis(200))
            .start()
            .unwrap(),
    );
    serving.verify(&t).await.unwrap();
    assert_eq!(serving.revocations().unwrap().status().stale_for, None);
    // Never reached past the bound: refused under the default policy too.
    // It knows no revocation to go on enforcing (a wrong secret or scope
    // would otherwise let every revoked token through, for good).
    let never = guard(
        &issuer,
        &key,
        feed(&issuer)
            .first_sync_wait(Duration::from_millis(200))
            .unreachable_after(Duration::from_secs(1))
            .start()
            .unwrap(),
    );
    never.verify(&t).await.unwrap();
    assert!(!never.revocations().unwrap().status().refusing);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        never.verify(&t).await.unwrap_err(),
        Rejection::RevocationsUnavailable
    );
    assert!(
        never.revocations().unwrap().status().refusing,
        "not said to health checks"
    );
    // Refusing: a guard that never synchronized refuses at once.
    let strict = guard(
        &issuer,
        &key,
        feed(&issuer)
            .first_sync_wait(Duration::from_millis(200))
            .unreachable_after(Duration::from_secs(1))
            .when_unreachable(WhenUnreachable::Refuse)
            .start()
            .unwrap(),
    );
    assert_eq!(
        strict.verify(&t).await.unwrap_err(),
        Rejection::RevocationsUnavailable
    );

    // Up: both serve. Down again: the strict one serves within the
    // bound, then refuses with 503; the default one keeps serving.
    issuer.change(|s| s.down = false);
    eventually("the strict guard serves", async || {
        strict.verify(&t).await.is_ok()
    })
    .await;
    issuer.change(|s| {
        s.down = true;
        s.generation += 1;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    strict.verify(&t).await.unwrap();
    assert!(!strict.revocations().unwrap().status().current);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let refused = strict.verify(&t).await.unwrap_err();
    assert_eq!(refused, Rejection::RevocationsUnavailable);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let answer = axum::response::IntoResponse::into_response(refused);
    assert_eq!(answer.headers()[header::RETRY_AFTER], "5");
    serving.verify(&t).await.unwrap();
    // Back: served again.
    issuer.change(|s| s.down = false);
    eventually("the strict guard serves again", async || {
        strict.verify(&t).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_feed_gone_silent_is_not_trusted_past_its_bound() {
    // The connection stays open but nothing comes (packets dropped on
    // the way, no reset): the bound runs from the last event, not from
    // when the connection is given up (the idle timeout, far later).
    let issuer = Issuer::start().await;
    let key = key();
    let t = token(&key, &issuer.base, "j1", "alice");
    // (This issuer would send a heartbeat every 200 ms when quiet; it
    // sends none at all.)
    let strict = guard(
        &issuer,
        &key,
        feed(&issuer)
            .unreachable_after(Duration::from_millis(1500))
            .issuer_heartbeat(Duration::from_millis(200))
            .idle_timeout(Duration::from_secs(20))
            .when_unreachable(WhenUnreachable::Refuse)
            .start()
            .unwrap(),
    );
    eventually("the feed is current", async || {
        strict.revocations().unwrap().status().current
    })
    .await;
    strict.verify(&t).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let status = strict.revocations().unwrap().status();
    assert!(!status.current, "{status:?}");
    assert!(
        status
            .stale_for
            .is_some_and(|s| s >= Duration::from_millis(1500)),
        "{status:?}"
    );
    assert_eq!(
        strict.verify(&t).await.unwrap_err(),
        Rejection::RevocationsUnavailable
    );
    // A sign of life on the same connection: current again.
    issuer.revoke(Revocation::Token {
        jti: "other".into(),
        until: 4_000_000_000,
    });
    eventually("the strict guard serves again", async || {
        strict.verify(&t).await.is_ok()
    })
    .await;
    assert!(strict.revocations().unwrap().status().current);
    assert_eq!(
        issuer.script.lock().unwrap().cursors.len(),
        1,
        "one connection"
    );
}

#[tokio::test]
async fn a_quiet_feed_is_current_between_heartbeats_whatever_the_bound() {
    // A bound shorter than the issuer's heartbeat (10 s by default): the
    // connection is quiet and healthy, and must not count as unreachable
    // between heartbeats.
    let issuer = Issuer::start().await;
    let key = key();
    let t = token(&key, &issuer.base, "j1", "alice");
    let strict = guard(
        &issuer,
        &key,
        feed(&issuer)
            .unreachable_after(Duration::from_millis(300))
            .when_unreachable(WhenUnreachable::Refuse)
            .start()
            .unwrap(),
    );
    eventually("the feed is current", async || {
        strict.revocations().unwrap().status().current
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(strict.revocations().unwrap().status().current);
    strict.verify(&t).await.unwrap();
}

#[tokio::test]
async fn a_feed_whose_task_is_gone_is_not_trusted_past_its_bound() {
    // The subscription runs on a runtime that then shuts down (the task
    // is gone, as after a panic): nothing keeps the set current, and the
    // guard must not go on calling it current.
    let issuer = Issuer::start().await;
    let key = key();
    let t = token(&key, &issuer.base, "j1", "alice");
    let elsewhere = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let started = {
        let _entered = elsewhere.enter();
        feed(&issuer)
            .unreachable_after(Duration::from_millis(1500))
            .when_unreachable(WhenUnreachable::Refuse)
            .start()
            .unwrap()
    };
    let strict = guard(&issuer, &key, started);
    eventually("the feed is current", async || {
        strict.revocations().unwrap().status().current
    })
    .await;
    strict.verify(&t).await.unwrap();
    tokio::task::spawn_blocking(move || drop(elsewhere))
        .await
        .unwrap();
    assert!(!strict.revocations().unwrap().status().current);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        strict.verify(&t).await.unwrap_err(),
        Rejection::RevocationsUnavailable
    );
}

#[tokio::test]
async fn a_feed_of_another_issuer_is_refused() {
    let issuer = Issuer::start().await;
    let keys = KeySet::new(vec![key().verifying_key().unwrap()]).unwrap();
    let built = Guard::builder("https://login.other.example", AUD, keys)
        .revocations(feed(&issuer).start().unwrap())
        .build();
    assert!(
        matches!(&built, Err(tessera_jose::Error::InvalidConfig { reason }) if reason.contains("login.other.example")),
        "{:?}",
        built.err()
    );
}

#[tokio::test]
async fn every_outage_is_reported_not_only_the_first() {
    // Logs go to this test's thread, where its runtime runs the feed.
    let logged = crate::Logged::default();
    let _logging = logged.capture();
    let issuer = Issuer::start().await;
    let key = key();
    let g = guard(
        &issuer,
        &key,
        feed(&issuer)
            .unreachable_after(Duration::from_millis(300))
            .start()
            .unwrap(),
    );
    for outage in 1..=2 {
        eventually("the feed is current", async || {
            g.revocations().unwrap().status().current
        })
        .await;
        issuer.change(|s| {
            s.down = true;
            s.generation += 1;
        });
        // Both, in whichever order they come: the bound may pass before
        // the first failed attempt is told (a loaded machine).
        eventually("the outage is reported", async || {
            logged.count("unreachable beyond its bound") == outage
                && logged.count("unreachable; retrying") == outage
        })
        .await;
        issuer.change(|s| s.down = false);
    }
}

#[tokio::test]
async fn a_backlog_cut_short_is_fetched_again_in_full() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    for jti in ["a", "b", "c"] {
        issuer.revoke(Revocation::Token {
            jti: jti.into(),
            until,
        });
    }
    // A kind this version does not know is skipped, not fatal.
    issuer.publish(r#"{"kind":"device","device_id":"d1","until":1}"#.into());
    issuer.revoke(Revocation::Token {
        jti: "d".into(),
        until,
    });
    // The first connection ends after two events, before `ready`.
    issuer.change(|s| s.cut_after = Some(2));
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    for jti in ["a", "b", "c", "d"] {
        let t = token(&key, &issuer.base, jti, "alice");
        eventually("every revocation of the backlog applies", async || {
            g.verify(&t).await.is_err()
        })
        .await;
    }
    let cursors = issuer.cursors();
    assert!(
        cursors.iter().all(Option::is_none),
        "a backlog never completed is not resumed from its middle: {cursors:?}"
    );
    assert_eq!(g.revocations().unwrap().status().last_event_id, Some(5));
    g.verify(&token(&key, &issuer.base, "e", "alice"))
        .await
        .unwrap();
}

/// The issuer's log is restored from a backup and grows back past the
/// guard's cursor with other events: the guard's cursor names an event
/// the log no longer has, the issuer starts it over, and it holds exactly
/// the restored log.
#[tokio::test]
async fn a_restored_log_grown_past_the_cursor_starts_the_guard_over() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    for jti in ["a", "b"] {
        issuer.revoke(Revocation::Token {
            jti: jti.into(),
            until,
        });
    }
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    let (a, b, c) = (
        token(&key, &issuer.base, "a", "alice"),
        token(&key, &issuer.base, "b", "alice"),
        token(&key, &issuer.base, "c", "alice"),
    );
    eventually("b is refused", async || g.verify(&b).await.is_err()).await;
    // The restore, while the guard is away: a log with only `a`, which
    // then grows back to two events with `c`.
    issuer.change(|s| {
        s.down = true;
        s.generation += 1;
        s.events.truncate(1);
    });
    issuer.revoke(Revocation::Token {
        jti: "c".into(),
        until,
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    issuer.change(|s| s.down = false);
    eventually("c, under the guard's old cursor, is refused", async || {
        g.verify(&c).await.is_err()
    })
    .await;
    assert!(g.verify(&a).await.is_err(), "a is in the restored log");
    g.verify(&b)
        .await
        .expect("b went with the log it came from");
    assert_eq!(issuer.cursors().last(), Some(&Some("2".to_owned())));
    assert_eq!(g.revocations().unwrap().status().last_event_id, Some(2));
}

/// A guard following an issuer's feed, once it refuses the token of `a`
/// (revoked before it started): with its key, the tokens of `a` and `b`
/// (`b` not revoked), and how long revocations live.
struct Following {
    g: Guard,
    key: SigningKey,
    a: String,
    b: String,
    until: i64,
}

async fn following_with_a_revoked(issuer: &Issuer) -> Following {
    let until = NumericDate::now().seconds() + 600;
    issuer.revoke(Revocation::Token {
        jti: "a".into(),
        until,
    });
    let key = key();
    let g = guard(issuer, &key, feed(issuer).start().unwrap());
    let (a, b) = (
        token(&key, &issuer.base, "a", "alice"),
        token(&key, &issuer.base, "b", "alice"),
    );
    eventually("a is refused", async || g.verify(&a).await.is_err()).await;
    Following {
        g,
        key,
        a,
        b,
        until,
    }
}

/// A `reset` on a live stream, after `ready`: the guard reads the log
/// again from the start, and what comes after is applied. Before, the
/// events after it were staged for a second `ready` that never came,
/// while heartbeats went on calling the set current: revocations stopped
/// being applied, silently.
#[tokio::test]
async fn a_reset_after_ready_reads_the_log_again() {
    let issuer = Issuer::start().await;
    let Following { g, a, b, until, .. } = following_with_a_revoked(&issuer).await;
    issuer.change(|s| s.reset_live = true);
    issuer.revoke(Revocation::Token {
        jti: "b".into(),
        until,
    });
    eventually("b, revoked after the reset, is refused", async || {
        g.verify(&b).await.is_err()
    })
    .await;
    assert!(g.verify(&a).await.is_err(), "a stays refused");
    // Read again from the start: a connection without a cursor.
    let cursors = issuer.cursors();
    assert_eq!(cursors.len(), 2, "{cursors:?}");
    assert_eq!(cursors[1], None, "{cursors:?}");
    assert_eq!(g.revocations().unwrap().status().last_event_id, Some(2));
}

/// A feed that refuses the guard's cursor (400) is read again from the
/// start, rather than sent the same cursor for ever, added to the set in
/// force.
#[tokio::test]
async fn a_refused_cursor_is_dropped() {
    let issuer = Issuer::start().await;
    let Following { g, a, b, until, .. } = following_with_a_revoked(&issuer).await;
    // The stream drops; the next connection's cursor is refused.
    issuer.change(|s| {
        s.refuse_cursors = true;
        s.generation += 1;
    });
    issuer.revoke(Revocation::Token {
        jti: "b".into(),
        until,
    });
    eventually("b is refused", async || g.verify(&b).await.is_err()).await;
    assert!(g.verify(&a).await.is_err(), "a stays refused");
    assert_eq!(issuer.cursors().last(), Some(&None));
    assert!(g.revocations().unwrap().status().current);
}

/// A feed that has never synchronized (the issuer comes up after this
/// API) is said to be unreachable beyond its bound once the bound has
/// passed, not at its first failure.
#[tokio::test]
async fn a_feed_down_from_the_start_is_reported_past_its_bound() {
    let logged = crate::Logged::default();
    let _logging = logged.capture();
    let issuer = Issuer::start().await;
    issuer.change(|s| s.down = true);
    let key = key();
    let g = guard(
        &issuer,
        &key,
        feed(&issuer)
            .unreachable_after(Duration::from_secs(3))
            .start()
            .unwrap(),
    );
    eventually("the first failure is told", async || {
        logged.count("unreachable; retrying") == 1
    })
    .await;
    assert_eq!(logged.count("beyond its bound"), 0);
    eventually("the bound is reported", async || {
        logged.count("beyond its bound") == 1
    })
    .await;
    assert!(!g.revocations().unwrap().status().current);
}

/// The log read again after a reset on a live stream is added to the set
/// in force, not put in its place: a backlog that is older (a proxy
/// replaying a stream, an instance a moment behind) takes back no
/// revocation already applied.
#[tokio::test]
async fn a_log_read_again_takes_back_no_revocation() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    for jti in ["a", "b"] {
        issuer.revoke(Revocation::Token {
            jti: jti.into(),
            until,
        });
    }
    let key = key();
    let g = guard(&issuer, &key, feed(&issuer).start().unwrap());
    let (a, b) = (
        token(&key, &issuer.base, "a", "alice"),
        token(&key, &issuer.base, "b", "alice"),
    );
    eventually("b is refused", async || g.verify(&b).await.is_err()).await;
    // The stream starts over, and the log it is read from again has lost
    // `b` (and begins with a reset of its own, as a replayed stream
    // might).
    issuer.change(|s| {
        s.events.truncate(1);
        s.reset_live = true;
        s.reset_first = true;
    });
    issuer.revoke(Revocation::Token {
        jti: "c".into(),
        until,
    });
    let c = token(&key, &issuer.base, "c", "alice");
    // `c` comes after the reset: once it is refused, the log read again
    // is in force.
    eventually("c is refused", async || g.verify(&c).await.is_err()).await;
    assert_eq!(issuer.cursors().len(), 2, "read again once");
    assert!(g.verify(&a).await.is_err());
    assert!(g.verify(&b).await.is_err(), "b stays refused");
    // And at the next connection too, made from the cursor it reached.
    issuer.change(|s| s.generation += 1);
    issuer.revoke(Revocation::Token {
        jti: "d".into(),
        until,
    });
    let d = token(&key, &issuer.base, "d", "alice");
    eventually("d is refused", async || g.verify(&d).await.is_err()).await;
    assert_eq!(issuer.cursors().len(), 3);
    assert!(g.verify(&b).await.is_err(), "b still refused");
}

/// A log read again that is empty (everything in it expired, or a proxy's
/// replay of nothing) leaves the cursor at its start; the connection after
/// it, without a cursor, adds to the set in force as well, rather than
/// replacing it as a guard's very first connection does.
#[tokio::test]
async fn an_empty_log_read_again_takes_back_nothing_either() {
    let issuer = Issuer::start().await;
    let Following {
        g, key, a, until, ..
    } = following_with_a_revoked(&issuer).await;
    // Reset on the live stream, and the log read again is empty.
    issuer.change(|s| {
        s.events.clear();
        s.reset_live = true;
    });
    eventually("the log was read again", async || {
        issuer.cursors().len() == 2 && g.revocations().unwrap().status().last_event_id.is_none()
    })
    .await;
    assert!(g.verify(&a).await.is_err(), "a stays refused");
    // The next connection: no cursor to send.
    issuer.change(|s| s.generation += 1);
    eventually("connected again", async || issuer.cursors().len() == 3).await;
    issuer.revoke(Revocation::Token {
        jti: "b".into(),
        until,
    });
    let b = token(&key, &issuer.base, "b", "alice");
    eventually("b is refused", async || g.verify(&b).await.is_err()).await;
    assert!(g.verify(&a).await.is_err(), "a still refused");
}

/// A log larger than `max_revocations` is not read on past it: memory stays
/// bounded, and the feed counts as unreachable, so the guard does what
/// its policy says (here: refuses, past the bound).
#[tokio::test]
async fn a_log_larger_than_the_bound_is_not_held() {
    let issuer = Issuer::start().await;
    let until = NumericDate::now().seconds() + 600;
    for jti in ["a", "b", "c"] {
        issuer.revoke(Revocation::Token {
            jti: jti.into(),
            until,
        });
    }
    let g = once_refusing(&issuer, &key(), feed(&issuer).max_revocations(2)).await;
    let status = g.revocations().unwrap().status();
    assert!(!status.current && status.revocations <= 2, "{status:?}");
}

/// At the bound, what has expired goes first: a burst of revocations ends
/// with its tokens' lives, and the guard goes on, not stopped for good at
/// the event that found the set full.
#[tokio::test]
async fn a_full_set_makes_room_by_forgetting_what_expired() {
    let issuer = Issuer::start().await;
    let soon = NumericDate::now().seconds() + 1;
    for jti in ["a", "b"] {
        issuer.revoke(Revocation::Token {
            jti: jti.into(),
            until: soon,
        });
    }
    let key = key();
    let g = guard(
        &issuer,
        &key,
        feed(&issuer).max_revocations(2).start().unwrap(),
    );
    eventually("the feed is current", async || {
        g.revocations().unwrap().status().current
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    issuer.revoke(Revocation::Token {
        jti: "c".into(),
        until: NumericDate::now().seconds() + 600,
    });
    let c = token(&key, &issuer.base, "c", "alice");
    eventually("c is refused", async || g.verify(&c).await.is_err()).await;
    let status = g.revocations().unwrap().status();
    assert!(status.current, "{status:?}");
    assert_eq!(status.last_event_id, Some(3));
}
