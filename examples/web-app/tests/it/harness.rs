//! A stand-in for `tessera serve` and `store-api` on one loopback port,
//! the web app on another, and browsers that keep their cookies.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cookie::Cookie;
use serde_json::{json, Map, Value};
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, JwkSet, NumericDate, SigningKey};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

pub const CLIENT_ID: &str = "shop";

const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The provider and the store API the web app talks to.
pub struct Provider {
    pub url: String,
    mock: Arc<Mock>,
}

struct Mock {
    issuer: String,
    key: SigningKey,
    /// The claims of the ID token the next code is exchanged for.
    id_claims: Mutex<Map<String, Value>>,
    /// Tokens issued so far: `access-N` and `refresh-N` are the N-th.
    issued: AtomicUsize,
    /// The store API refuses access tokens numbered below this (expired).
    valid_from: AtomicUsize,
    /// `refresh_token` grants asked for, good or not.
    refresh_grants: AtomicUsize,
    /// Refresh tokens not used yet. As `tessera serve` with its default
    /// `refresh_grace` of 0 s, a used one is refused (there: its family
    /// revoked).
    unused_refresh: Mutex<HashSet<String>>,
    /// How long a `refresh_token` grant takes to answer.
    refresh_delay: Mutex<Duration>,
    /// How long an `authorization_code` grant takes to answer (once it
    /// has issued its tokens).
    code_delay: Mutex<Duration>,
    /// While set, a `refresh_token` grant waits for a permit of `release`.
    hold_refresh: AtomicBool,
    release: Semaphore,
    /// Tokens revoked at `/revoke`, in order.
    revoked: Mutex<Vec<String>>,
    /// While set, the key set answers 503.
    keys_down: AtomicBool,
    /// Another key in the set, of another algorithm (as the provider's key
    /// for access tokens is), and whether ID tokens are signed with it.
    other_key: SigningKey,
    id_tokens_by_other_key: AtomicBool,
    /// While set, userinfo answers 503.
    userinfo_down: AtomicBool,
    /// While set, `authorization_code` grants get this answer instead of
    /// tokens.
    code_answer: Mutex<Option<(StatusCode, String)>>,
}

impl Provider {
    pub async fn start() -> Provider {
        Provider::start_at(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    /// [`Provider::start`] on `listener`.
    pub async fn start_at(listener: tokio::net::TcpListener) -> Provider {
        let url = format!("http://{}", listener.local_addr().unwrap());
        // What the app is registered for (and `tessera serve`'s default).
        let key = SigningKey::generate(Algorithm::RS256)
            .unwrap()
            .with_thumbprint_kid()
            .unwrap();
        let mock = Arc::new(Mock {
            issuer: url.clone(),
            key,
            id_claims: Mutex::default(),
            issued: AtomicUsize::new(0),
            valid_from: AtomicUsize::new(0),
            refresh_grants: AtomicUsize::new(0),
            unused_refresh: Mutex::default(),
            refresh_delay: Mutex::new(Duration::ZERO),
            code_delay: Mutex::new(Duration::ZERO),
            hold_refresh: AtomicBool::new(false),
            release: Semaphore::new(0),
            revoked: Mutex::default(),
            keys_down: AtomicBool::new(false),
            other_key: SigningKey::generate(Algorithm::ES256)
                .unwrap()
                .with_thumbprint_kid()
                .unwrap(),
            id_tokens_by_other_key: AtomicBool::new(false),
            userinfo_down: AtomicBool::new(false),
            code_answer: Mutex::default(),
        });
        let routes = Router::new()
            .route("/.well-known/openid-configuration", get(metadata))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/userinfo", get(userinfo))
            .route("/items", get(items))
            .with_state(Arc::clone(&mock));
        tokio::spawn(async move { axum::serve(listener, routes).await });
        Provider { url, mock }
    }

    /// End every refresh token issued so far (the person signed out at
    /// the provider, and no back-channel logout reached the app).
    pub fn end_refresh_tokens(&self) {
        self.mock.unused_refresh.lock().unwrap().clear();
    }

    /// The tokens revoked so far, waiting up to a second for `n` of them
    /// (the app revokes in the background).
    pub async fn revoked(&self, n: usize) -> Vec<String> {
        for _ in 0..100 {
            if self.mock.revoked.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.mock.revoked.lock().unwrap().clone()
    }

    /// `refresh_token` grants the token endpoint has had.
    pub fn refresh_grants(&self) -> usize {
        self.mock.refresh_grants.load(Ordering::SeqCst)
    }

    /// Make userinfo answer 503 (`true`) or answer again.
    pub fn userinfo_down(&self, down: bool) {
        self.mock.userinfo_down.store(down, Ordering::SeqCst);
    }

    /// Answer `authorization_code` grants with `status` and `body`.
    pub fn answer_code_exchanges(&self, status: StatusCode, body: String) {
        *self.mock.code_answer.lock().unwrap() = Some((status, body));
    }

    /// Make each `authorization_code` grant take this long (once its
    /// tokens are issued).
    pub fn delay_code_exchanges(&self, delay: Duration) {
        *self.mock.code_delay.lock().unwrap() = delay;
    }

    /// Make each `refresh_token` grant take this long.
    pub fn delay_refreshes(&self, delay: Duration) {
        *self.mock.refresh_delay.lock().unwrap() = delay;
    }

    /// Hold every `refresh_token` grant until [`Provider::release_refresh`].
    pub fn hold_refreshes(&self) {
        self.mock.hold_refresh.store(true, Ordering::SeqCst);
    }

    /// Answer `refresh_token` grants at once again.
    pub fn hold_refreshes_no_more(&self) {
        self.mock.hold_refresh.store(false, Ordering::SeqCst);
    }

    /// Let one held `refresh_token` grant answer.
    pub fn release_refresh(&self) {
        self.mock.release.add_permits(1);
    }

    /// Tokens issued so far (one per code or refresh grant answered).
    pub fn issued(&self) -> usize {
        self.mock.issued.load(Ordering::SeqCst)
    }

    /// The access tokens issued so far expire: the store API answers 401.
    pub fn expire_access_tokens(&self) {
        let issued = self.mock.issued.load(Ordering::SeqCst);
        self.mock.valid_from.store(issued, Ordering::SeqCst);
    }

    /// Sign ID tokens with the set's ES256 key from now on.
    pub fn sign_id_tokens_with_another_algorithm(&self) {
        self.mock
            .id_tokens_by_other_key
            .store(true, Ordering::SeqCst);
    }

    /// A logout token signed by a key of its own, with a `kid`, that the
    /// key set does not hold.
    pub fn logout_token_signed_by_an_unpublished_key(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> String {
        let unpublished = SigningKey::generate(Algorithm::RS256)
            .unwrap()
            .with_thumbprint_kid()
            .unwrap();
        let published = self.logout_token(sid, sub, true);
        let (_, claims) = tessera_jose::dangerous::decode_unverified_claims(&published).unwrap();
        let header = Header::for_key(&unpublished).typ("logout+jwt");
        jwt::sign_with_header(&header, &Claims::with_custom(claims), &unpublished).unwrap()
    }

    /// A logout token for `sid` and `sub`, its claims then changed by
    /// `edit`, signed by the published key.
    pub fn logout_token_edited(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> String {
        let published = self.logout_token(sid, sub, true);
        let (_, mut claims) =
            tessera_jose::dangerous::decode_unverified_claims(&published).unwrap();
        edit(&mut claims);
        let header = Header::for_key(&self.mock.key).typ("logout+jwt");
        jwt::sign_with_header(&header, &Claims::with_custom(claims), &self.mock.key).unwrap()
    }

    /// The key set answers 503 while `down`.
    pub fn keys_down(&self, down: bool) {
        self.mock.keys_down.store(down, Ordering::SeqCst);
    }

    /// A logout token naming `sid` and `sub`, with `events` unless not.
    pub fn logout_token(&self, sid: Option<&str>, sub: Option<&str>, events: bool) -> String {
        let events = events.then(|| json!({ LOGOUT_EVENT: {} }));
        self.logout_token_with_events(sid, sub, events)
    }

    /// A logout token naming `sid` and `sub`, with `events` as given.
    pub fn logout_token_with_events(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
        events: Option<Value>,
    ) -> String {
        let mut custom = Map::new();
        if let Some(sid) = sid {
            custom.insert("sid".into(), sid.into());
        }
        if let Some(events) = events {
            custom.insert("events".into(), events);
        }
        let mut claims = Claims::with_custom(custom)
            .issuer(&self.mock.issuer)
            .audience(CLIENT_ID)
            .valid_for(Duration::from_secs(120))
            .random_jwt_id()
            .unwrap();
        if let Some(sub) = sub {
            claims = claims.subject(sub);
        }
        let header = Header::for_key(&self.mock.key).typ("logout+jwt");
        jwt::sign_with_header(&header, &claims, &self.mock.key).unwrap()
    }
}

async fn metadata(State(mock): State<Arc<Mock>>) -> Json<Value> {
    let url = &mock.issuer;
    Json(json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/authorize"),
        "token_endpoint": format!("{url}/token"),
        "userinfo_endpoint": format!("{url}/userinfo"),
        "end_session_endpoint": format!("{url}/logout"),
        "revocation_endpoint": format!("{url}/revoke"),
        "jwks_uri": format!("{url}/jwks"),
    }))
}

async fn jwks(State(mock): State<Arc<Mock>>) -> Response {
    if mock.keys_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let set = JwkSet::new(
        [&mock.key, &mock.other_key]
            .map(|k| k.verifying_key().unwrap().to_public_jwk().unwrap())
            .to_vec(),
    );
    ([(header::CONTENT_TYPE, "application/json")], set.to_json()).into_response()
}

async fn token(
    State(mock): State<Arc<Mock>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            if let Some((status, body)) = mock.code_answer.lock().unwrap().clone() {
                return (status, body).into_response();
            }
            let claims = mock.id_claims.lock().unwrap().clone();
            let key = if mock.id_tokens_by_other_key.load(Ordering::SeqCst) {
                &mock.other_key
            } else {
                &mock.key
            };
            let id_token = jwt::sign(&Claims::with_custom(claims), key).unwrap();
            let mut tokens = mock.issue();
            tokens["id_token"] = id_token.into();
            let delay = *mock.code_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            Json(tokens).into_response()
        }
        Some("refresh_token") => {
            mock.refresh_grants.fetch_add(1, Ordering::SeqCst);
            // Rotated at once, as a provider commits the rotation before
            // it answers: an answer that does not arrive has rotated all
            // the same.
            let sent = form.get("refresh_token").cloned().unwrap_or_default();
            let unused = mock.unused_refresh.lock().unwrap().remove(&sent);
            let rotated = unused.then(|| mock.issue());
            let delay = *mock.refresh_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if mock.hold_refresh.load(Ordering::SeqCst) {
                mock.release.acquire().await.unwrap().forget();
            }
            match rotated {
                Some(tokens) => Json(tokens).into_response(),
                None => (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "error": "invalid_grant" })),
                )
                    .into_response(),
            }
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "unsupported_grant_type" })),
        )
            .into_response(),
    }
}

/// RFC 7009: the client authenticated (Basic, as the app does), the
/// token recorded and no longer usable.
async fn revoke(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> StatusCode {
    if !headers.contains_key(header::AUTHORIZATION) {
        return StatusCode::UNAUTHORIZED;
    }
    let Some(token) = form.get("token") else {
        return StatusCode::BAD_REQUEST;
    };
    mock.unused_refresh.lock().unwrap().remove(token);
    mock.revoked.lock().unwrap().push(token.clone());
    StatusCode::OK
}

impl Mock {
    fn issue(&self) -> Value {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let refresh = format!("refresh-{n}");
        self.unused_refresh.lock().unwrap().insert(refresh.clone());
        json!({
            "access_token": format!("access-{n}"),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": 900,
        })
    }
}

/// Userinfo about whoever the last ID token named.
async fn userinfo(State(mock): State<Arc<Mock>>) -> Response {
    if mock.userinfo_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let sub = mock.id_claims.lock().unwrap().get("sub").cloned();
    Json(
        json!({ "sub": sub.unwrap_or_else(|| "alice".into()), "name": "Alice", "email": "alice@example.com" }),
    )
    .into_response()
}

/// The store API: items for an access token that has not expired.
async fn items(State(mock): State<Arc<Mock>>, headers: HeaderMap) -> Response {
    let number = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer access-"))
        .and_then(|n| n.parse::<usize>().ok());
    match number {
        Some(n) if n >= mock.valid_from.load(Ordering::SeqCst) => {
            Json(json!({ "items": ["tea"] })).into_response()
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The web app on a loopback port.
pub struct Shop {
    pub url: String,
    pub issuer: String,
    provider: Arc<Mock>,
    /// Follows no redirect, keeps no cookie.
    pub client: reqwest::Client,
}

impl Shop {
    /// `GET path`, with no cookie: the answer as it came.
    pub async fn raw_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// The web app for `provider`, reached at `base` (default: where it
    /// listens).
    pub async fn start(provider: &Provider, base: Option<&str>, limits: web_app::Limits) -> Shop {
        Shop::listening(provider, base, limits, tessera_listen::Limits::default()).await
    }

    /// [`Shop::start`], served as the binary serves it, with `listening`
    /// (a short request timeout, say).
    pub async fn listening(
        provider: &Provider,
        base: Option<&str>,
        limits: web_app::Limits,
        listening: tessera_listen::Limits,
    ) -> Shop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = web_app::WebApp::discover(web_app::Settings {
            base: base.unwrap_or(&url).to_owned(),
            limits,
            ..settings(&provider.url)
        })
        .await
        .unwrap();
        tokio::spawn(tessera_listen::serve(
            listener,
            web_app::router(app),
            listening,
            std::future::pending(),
        ));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Shop {
            url,
            issuer: provider.url.clone(),
            provider: Arc::clone(&provider.mock),
            client,
        }
    }

    /// The origin the web app's pages are on.
    pub fn origin(&self) -> String {
        self.url.clone()
    }

    pub fn browser(&self) -> Browser<'_> {
        Browser {
            shop: self,
            cookies: Mutex::default(),
        }
    }
}

/// An answer of the web app.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub set_cookies: Vec<Cookie<'static>>,
    pub body: String,
}

impl Page {
    pub fn set_cookie(&self, name: &str) -> &Cookie<'static> {
        self.set_cookies
            .iter()
            .find(|c| c.name() == name)
            .unwrap_or_else(|| panic!("no Set-Cookie {name}: {self:?}"))
    }

    /// A query parameter of the `Location` header.
    pub fn location_param(&self, name: &str) -> String {
        let location = url::Url::parse(self.location.as_deref().unwrap()).unwrap();
        location
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {location}"))
    }
}

/// A browser: it keeps the cookies the web app sets.
pub struct Browser<'a> {
    shop: &'a Shop,
    pub cookies: Mutex<HashMap<String, String>>,
}

impl Browser<'_> {
    pub async fn get(&self, path: &str) -> Page {
        self.send(self.shop.client.get(format!("{}{path}", self.shop.url)))
            .await
    }

    pub async fn post(&self, path: &str) -> Page {
        self.send(self.shop.client.post(format!("{}{path}", self.shop.url)))
            .await
    }

    /// POST as a form does from a page of `origin`, in a browser that
    /// says where the request comes from (`Sec-Fetch-Site: site`).
    pub async fn post_fetched(&self, path: &str, origin: &str, site: &str) -> Page {
        self.send(
            self.shop
                .client
                .post(format!("{}{path}", self.shop.url))
                .header("origin", origin)
                .header("sec-fetch-site", site),
        )
        .await
    }

    /// POST as a form on a page of `origin` does.
    pub async fn post_from(&self, path: &str, origin: &str) -> Page {
        self.send(
            self.shop
                .client
                .post(format!("{}{path}", self.shop.url))
                .header("origin", origin),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let cookies = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookies.is_empty() {
            request
        } else {
            request.header(header::COOKIE, cookies)
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<Cookie<'static>> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| Cookie::parse(v.to_str().unwrap().to_owned()).unwrap())
            .collect();
        {
            let mut jar = self.cookies.lock().unwrap();
            for c in &set_cookies {
                if c.max_age() == Some(cookie::time::Duration::ZERO) {
                    jar.remove(c.name());
                } else {
                    jar.insert(c.name().to_owned(), c.value().to_owned());
                }
            }
        }
        let body = response.text().await.unwrap();
        Page {
            status,
            location,
            set_cookies,
            body,
        }
    }

    /// Start a sign-in, and come back from the provider with an ID token
    /// of these claims: `iss`, `aud`, `sub` (alice), `sid` (`sid-1`), the
    /// nonce, `iat` and `exp`, changed by `edit`. The callback's answer.
    pub async fn sign_in(&self, edit: impl FnOnce(&mut Map<String, Value>)) -> Page {
        let login = self.get("/login").await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{login:?}");
        self.come_back(&login, edit).await
    }

    /// Come back from the provider for the sign-in `login` started (the
    /// answer of `GET /login`), as [`Browser::sign_in`] does.
    pub async fn come_back(
        &self,
        login: &Page,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> Page {
        let now = NumericDate::now().seconds();
        let mut claims = json!({
            "iss": self.shop.issuer,
            "aud": CLIENT_ID,
            "sub": "alice",
            "sid": "sid-1",
            "nonce": login.location_param("nonce"),
            "iat": now,
            "exp": now + 300,
        });
        let claims = claims.as_object_mut().unwrap();
        edit(claims);
        *self.shop.provider.id_claims.lock().unwrap() = claims.clone();
        let state = login.location_param("state");
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", "the code")
            .append_pair("state", &state)
            .append_pair("iss", &self.shop.issuer)
            .finish();
        self.get(&format!("/callback?{query}")).await
    }

    /// Whether the home page shows someone signed in.
    pub async fn signed_in(&self) -> bool {
        let home = self.get("/").await;
        assert_eq!(home.status, StatusCode::OK, "{home:?}");
        match (
            home.body.contains(r#"id="signed-in""#),
            home.body.contains(r#"id="signed-out""#),
        ) {
            (true, false) => true,
            (false, true) => false,
            _ => panic!("neither signed in nor out: {}", home.body),
        }
    }
}

/// The web app answers the provider's back-channel logout POST, every
/// answer `no-store` (Back-Channel Logout 1.0 §2.8).
pub async fn backchannel_logout(shop: &Shop, logout_token: &str) -> StatusCode {
    let answer = shop
        .client
        .post(format!("{}/backchannel", shop.url))
        .form(&[("logout_token", logout_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()[header::CACHE_CONTROL], "no-store");
    answer.status()
}

/// The web app's settings for the provider (and store API) at `url`.
pub fn settings(url: &str) -> web_app::Settings {
    web_app::Settings {
        issuer: url.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret: Zeroizing::new("the secret".into()),
        base: "http://127.0.0.1:4000".into(),
        store_api: url.to_owned(),
        allow_plain_http: false,
        limits: web_app::Limits::default(),
    }
}

/// A provider and the web app with its default limits.
pub async fn provider_and_shop() -> (Provider, Shop) {
    let provider = Provider::start().await;
    let shop = Shop::start(&provider, None, web_app::Limits::default()).await;
    (provider, shop)
}
