//! A server-side web application that signs people in through an OpenID
//! Provider (here `tessera serve`) with the authorization code flow: PKCE
//! (S256), `state`, `nonce`, the `iss` of RFC 9207, and the ID token
//! verified with `tessera-guard` (the issuer's JWKS, `typ: JWT`, this
//! client as audience). It shows who is signed in, calls `store-api` with
//! the access token (refreshing it when it expires), and logs out both
//! ways: RP-initiated (a redirect to the provider) and back-channel (the
//! provider POSTs a logout token here).
//!
//! Sessions live in memory, each for at most [`Limits::session_lifetime`]
//! and [`Limits::idle_timeout`] unused, their number bounded;
//! the browser holds a random id in an `HttpOnly`, `SameSite=Lax` cookie,
//! which keeps other sites from triggering the POST buttons; the buttons
//! also refuse a form posted from another origin (another host of the
//! same site), as `Sec-Fetch-Site`, else `Origin`, says. Served over HTTPS (an `https` base URL), the cookies are also
//! `Secure` and carry the `__Host-` prefix.

mod sessions;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tessera_guard::{Guard, Keys, RemoteJwks};
use zeroize::Zeroizing;

pub use sessions::Limits;
use sessions::{Session, Sessions, SpentLogins};

/// What the app needs to know.
#[derive(Clone)]
pub struct Settings {
    /// The provider's issuer URL.
    pub issuer: String,
    /// This app's client id.
    pub client_id: String,
    /// This app's client secret.
    pub client_secret: Zeroizing<String>,
    /// Where browsers reach this app: scheme, host and port only
    /// (`http://127.0.0.1:4000`, or `https://shop.example.com` behind a
    /// proxy that terminates TLS). The redirect URI is this plus
    /// `/callback`; an `https` base makes the cookies `Secure`, with the
    /// `__Host-` prefix.
    pub base: String,
    /// The store API.
    pub store_api: String,
    /// Fetch the provider's keys over plain HTTP even from another host
    /// (by default only over HTTPS or from a loopback address).
    pub allow_plain_http: bool,
    /// How long sign-ins and sessions last.
    pub limits: Limits,
}

/// The provider's endpoints, from its discovery document.
struct Endpoints {
    authorization: String,
    token: String,
    userinfo: String,
    end_session: String,
    /// Where refresh tokens no session will use again are revoked (RFC
    /// 7009), if the provider has one.
    revocation: Option<String>,
}

/// The algorithm this app's ID tokens (and logout tokens) are signed
/// with: the one it is registered for, RS256 by default (OpenID Connect
/// Core §3.1.3.7 step 7). Another algorithm of a key in the provider's
/// set (one that signs access tokens, say) is refused.
const ID_TOKEN_ALG: tessera_jose::Algorithm = tessera_jose::Algorithm::RS256;

/// How long a request to the token endpoint may take: longer than the
/// provider may take to answer (30 s for `tessera serve`). A refresh the
/// app stopped waiting for may have rotated the token all the same, and
/// the next refresh, with the old token, would then look like theft to
/// the provider, which ends the whole grant. (Refreshes run in tasks of
/// their own, so the app's own request timeout does not cut them short:
/// see `fresh_tokens`.)
const TOKEN_TIMEOUT: Duration = Duration::from_secs(40);

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("base", &self.base)
            .field("store_api", &self.store_api)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WebApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebApp")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The app's state.
pub struct WebApp {
    settings: Settings,
    endpoints: Endpoints,
    http: reqwest::Client,
    id_tokens: Guard,
    logout_tokens: Guard,
    /// The provider's key set, which both guards verify with.
    provider_keys: Arc<RemoteJwks>,
    cookies: Cookies,
    /// This app's origin as browsers write it in `Origin`.
    origin: String,
    /// Signs the sign-in cookie: a key of this process (a restart only
    /// makes the sign-ins under way start again).
    login_key: tessera_jose::SigningKey,
    /// Makes each sign-in's PKCE verifier from its `state`, so that the
    /// verifier is stored nowhere, the cookie included.
    pkce_key: aws_lc_rs::hmac::Key,
    spent: Mutex<SpentLogins>,
    sessions: Mutex<Sessions>,
    /// Code exchanges under way ([`Limits::code_exchanges_at_once`]).
    exchanges: Arc<tokio::sync::Semaphore>,
    pages: minijinja::Environment<'static>,
}

/// This app's two cookies: the sign-in under way (its `state`) and the
/// session id. Both are `HttpOnly`, `SameSite=Lax`, `Path=/`, without
/// `Domain`. Served over HTTPS they are also `Secure` (never sent over
/// plain HTTP) and named with the `__Host-` prefix, which browsers accept
/// only on a cookie set that way by a secure origin: neither a plain-HTTP
/// page nor another host of the domain can plant or overwrite them. Over
/// plain HTTP (a developer's loopback) a browser would drop a `Secure`
/// cookie, so neither applies.
#[derive(Clone, Copy)]
struct Cookies {
    secure: bool,
}

impl Cookies {
    fn login(self) -> &'static str {
        if self.secure {
            "__Host-web-app-login"
        } else {
            "web-app-login"
        }
    }

    fn session(self) -> &'static str {
        if self.secure {
            "__Host-web-app-session"
        } else {
            "web-app-session"
        }
    }

    /// `Set-Cookie` for `name`; `value: None` removes it.
    fn set(self, name: &str, value: Option<&str>) -> HeaderValue {
        let mut c = Cookie::build((name.to_owned(), value.unwrap_or_default().to_owned()))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .path("/");
        if value.is_none() {
            c = c.max_age(cookie::time::Duration::ZERO);
        }
        // The values are base64url and the names fixed: always a valid
        // header value.
        HeaderValue::try_from(c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
    }
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Example shop</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#111827}
button,a.button{font:inherit;font-weight:600;padding:.6rem 1rem;border-radius:8px;border:1px solid #d1d5db;background:#fff;cursor:pointer;text-decoration:none;color:inherit;display:inline-block}
.primary{background:#1d4ed8;color:#fff;border-color:#1d4ed8}
pre{background:#f3f4f6;padding:1rem;border-radius:8px;overflow:auto}
form{display:inline}
</style></head><body>
<h1>Example shop</h1>
{% if user %}
<p id="signed-in">Signed in as <strong>{{ user.name }}</strong> ({{ user.email }}).</p>
<p><form method="post" action="/items"><button class="primary" id="load-items">Load items from store-api</button></form>
<form method="post" action="/refresh"><button id="refresh">Refresh tokens</button></form>
<form method="post" action="/logout"><button id="logout">Sign out</button></form></p>
{% if items %}<h2>Items</h2><pre id="items">{{ items }}</pre>{% endif %}
{% if message %}<p id="message">{{ message }}</p>{% endif %}
{% else %}
<p id="signed-out">You are not signed in.</p>
<p><a class="button primary" id="sign-in" href="/login">Sign in</a></p>
{% if message %}<p id="message">{{ message }}</p>{% endif %}
{% endif %}
</body></html>
"#;

/// 32 random bytes, base64url; a 500 when the system generator fails
/// (never a guessable value instead).
#[allow(clippy::result_large_err)]
fn random() -> Result<String, Response> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no random numbers from the system",
        )
    })?;
    Ok(tessera_jose::b64::encode(bytes))
}

fn cookie_of(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::try_from(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Refuse `url` unless it is `https`, or plain `http` to this host (or
/// anywhere, when `allow_plain_http`): the app sends its secret and its
/// users' tokens there. The guard's own rule for keys.
fn in_the_clear_refused(url: &str, allow_plain_http: bool) -> anyhow::Result<()> {
    tessera_guard::check_transport(url, allow_plain_http)
        .map_err(|e| anyhow::anyhow!("{e} (the web app's --allow-plain-http)"))
}

/// The base URL as the redirect URI is built from it: `http` or `https`, a
/// host and maybe a port; no path, query or fragment (the app's routes are
/// at the root). Kept as written, without a trailing `/`: the provider
/// compares redirect URIs exactly.
fn checked_base(base: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(base).map_err(|e| anyhow::anyhow!("the base URL {base}: {e}"))?;
    let root_only = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !root_only {
        anyhow::bail!("the base URL {base}: give http(s)://host[:port], nothing after it");
    }
    Ok(base.trim_end_matches('/').to_owned())
}

/// The most of a name or an email address kept in a session and shown:
/// userinfo answers may be 256 KiB ([`MAX_ANSWER`]), and the sessions'
/// memory bound counts on small ones.
const MAX_SHOWN: usize = 200;

/// `text` as kept and shown: its first [`MAX_SHOWN`] characters.
fn shown(text: &str) -> String {
    text.chars().take(MAX_SHOWN).collect()
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

/// The most of an answer read from the provider or the store API
/// (metadata, tokens, userinfo, items): the timeouts alone let a
/// misbehaving upstream hand over gigabytes, all held in memory.
const MAX_ANSWER: usize = 256 * 1024;

/// The body of `response`, at most [`MAX_ANSWER`] bytes of it.
async fn body_of(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("an answer longer than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The body of `response` as JSON, at most [`MAX_ANSWER`] bytes of it.
async fn json_of(response: reqwest::Response) -> Result<Value, String> {
    let body = body_of(response).await?;
    serde_json::from_slice(&body).map_err(|e| format!("an answer that is not JSON ({e})"))
}

/// OpenID Connect Core §3.1.3.7, steps 3 to 5 (errata set 2): the ID
/// token must not be for any audience this app does not trust, and it
/// trusts none but itself: every `aud` value must be this client (the
/// guard has checked that one is). An `azp`, where given, must name this
/// client too.
fn audience_checked(claims: &Map<String, Value>, client_id: &str) -> Result<(), &'static str> {
    let ours = |aud: &Value| aud.as_str() == Some(client_id);
    let only_ours = match claims.get("aud") {
        Some(Value::Array(audiences)) => !audiences.is_empty() && audiences.iter().all(ours),
        Some(aud) => ours(aud),
        None => false,
    };
    if !only_ours {
        return Err("the ID token is also for another audience (aud)");
    }
    match claims.get("azp") {
        None => Ok(()),
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        Some(_) => Err("the ID token's azp is not this app"),
    }
}

/// OpenID Connect Core §3.1.3.8: an `at_hash`, where given, is the left
/// half of the access token's hash under the hash of the ID token's
/// algorithm ([`ID_TOKEN_ALG`]), in base64url: the access token came with
/// this ID token.
fn access_token_hash_checked(
    claims: &Map<String, Value>,
    access_token: &str,
) -> Result<(), &'static str> {
    let Some(at_hash) = claims.get("at_hash") else {
        return Ok(());
    };
    let expected = tessera_jose::jwt::half_hash(ID_TOKEN_ALG, access_token);
    if at_hash.as_str() == Some(expected.as_str()) {
        Ok(())
    } else {
        Err("the ID token's at_hash is not the access token's")
    }
}

impl WebApp {
    /// [`WebApp::discover`], again and again while the provider cannot be
    /// reached or answers 5xx (it is starting too, or restarting: the app
    /// and its provider are often started together), waiting half a
    /// second, then twice as long each time, up to 30 s. Any other
    /// failure (a 404, another issuer's metadata, a URL refused) is the
    /// configuration's, and ends the wait at once: a process that exited
    /// on the first would be restarted into the same wait by its
    /// supervisor, again and again.
    pub async fn discover_when_reachable(settings: Settings) -> anyhow::Result<Arc<WebApp>> {
        let mut wait = Duration::from_millis(500);
        loop {
            match WebApp::discover(settings.clone()).await {
                Err(e) if unreachable(&e) => {
                    tracing::warn!(
                        error = %e,
                        issuer = %settings.issuer,
                        "the provider cannot be reached: trying again in {} ms",
                        wait.as_millis()
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                done => return done,
            }
        }
    }

    /// Read the provider's discovery document and set up the verifiers.
    pub async fn discover(mut settings: Settings) -> anyhow::Result<Arc<WebApp>> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        settings.base = checked_base(&settings.base)?;
        // The app's own address too: on plain http elsewhere than
        // loopback its cookies lose `Secure` and the `__Host-` prefix, so
        // a sibling subdomain or the network can plant a session id.
        for url in [&settings.base, &settings.issuer, &settings.store_api] {
            in_the_clear_refused(url, settings.allow_plain_http)?;
        }
        // Proxies as the environment names them, but never for loopback:
        // plain HTTP is allowed there only (`in_the_clear_refused`), and
        // reqwest's own reading of `HTTP_PROXY` would send it, client
        // secret, codes and tokens, to the proxy over the network.
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        for proxy in tessera_guard::environment_proxies() {
            http = http.proxy(proxy);
        }
        let http = http.build()?;
        let meta = http
            .get(format!(
                "{}/.well-known/openid-configuration",
                settings.issuer
            ))
            .send()
            .await?
            .error_for_status()?;
        let meta = json_of(meta).await.map_err(anyhow::Error::msg)?;
        let field = |name: &str| {
            meta[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("the provider's metadata has no {name}"))
        };
        if field("issuer")? != settings.issuer {
            anyhow::bail!("the metadata's issuer is not {}", settings.issuer);
        }
        let endpoints = Endpoints {
            authorization: field("authorization_endpoint")?,
            token: field("token_endpoint")?,
            userinfo: field("userinfo_endpoint")?,
            end_session: field("end_session_endpoint")?,
            revocation: field("revocation_endpoint").ok(),
        };
        // The secret goes to the token and revocation endpoints, access
        // tokens to userinfo, people to the authorization and logout
        // pages, and the keys that make ID tokens come from the key set:
        // a provider reached over TLS names only TLS endpoints.
        let jwks_uri = field("jwks_uri")?;
        for url in [
            &endpoints.token,
            &endpoints.userinfo,
            &endpoints.authorization,
            &endpoints.end_session,
            &jwks_uri,
        ]
        .into_iter()
        .chain(&endpoints.revocation)
        {
            in_the_clear_refused(url, settings.allow_plain_http)?;
            if settings.issuer.starts_with("https://") && !url.starts_with("https://") {
                anyhow::bail!("{url}: not https, as the provider {} is", settings.issuer);
            }
        }
        // ID tokens and logout tokens: the issuer's keys, this client as
        // audience, and each its own `typ`.
        let mut keys = RemoteJwks::url(jwks_uri)?;
        if settings.allow_plain_http {
            keys = keys.allow_plain_http()?;
        }
        let keys = Arc::new(keys);
        let id_tokens = Guard::builder(
            &settings.issuer,
            &settings.client_id,
            Keys::Remote(Arc::clone(&keys)),
        )
        .typ(Some("JWT"))
        .not_access_tokens()
        .algorithms([ID_TOKEN_ALG])
        .build()?;
        let logout_tokens = Guard::builder(
            &settings.issuer,
            &settings.client_id,
            Keys::Remote(Arc::clone(&keys)),
        )
        .typ(Some("logout+jwt"))
        .not_access_tokens()
        .algorithms([ID_TOKEN_ALG])
        .build()?;
        let mut pages = minijinja::Environment::new();
        pages.add_template("page.html", PAGE)?;
        Ok(Arc::new(WebApp {
            cookies: Cookies {
                secure: url::Url::parse(&settings.base).is_ok_and(|u| u.scheme() == "https"),
            },
            origin: url::Url::parse(&settings.base)?
                .origin()
                .ascii_serialization(),
            login_key: tessera_jose::SigningKey::generate(tessera_jose::Algorithm::HS256)?,
            pkce_key: aws_lc_rs::hmac::Key::generate(
                aws_lc_rs::hmac::HMAC_SHA256,
                &SystemRandom::new(),
            )
            .map_err(|_| anyhow::anyhow!("no random numbers from the system"))?,
            spent: Mutex::new(SpentLogins::new(&settings.limits)),
            sessions: Mutex::new(Sessions::new(&settings.limits)),
            exchanges: Arc::new(tokio::sync::Semaphore::new(
                settings.limits.code_exchanges_at_once.max(1),
            )),
            settings,
            endpoints,
            http,
            id_tokens,
            logout_tokens,
            provider_keys: keys,
            pages,
        }))
    }

    /// The signed-out page, for a session ended here because its tokens
    /// could not be refreshed, and its cookie removed.
    fn signed_out_after(&self, why: &str) -> Response {
        let mut r = self.page(
            None,
            None,
            Some(&format!(
                "Your session has ended ({why}). Please sign in again."
            )),
        );
        r.headers_mut().append(
            header::SET_COOKIE,
            self.cookies.set(self.cookies.session(), None),
        );
        r
    }

    fn redirect_uri(&self) -> String {
        format!("{}/callback", self.settings.base)
    }

    fn spent(&self) -> MutexGuard<'_, SpentLogins> {
        self.spent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The PKCE verifier of the sign-in `state`: 256 bits, derived under
    /// this process's key, so neither the app nor the browser stores it
    /// (the cookie travels with the code to the callback, through proxies
    /// that may log it; the verifier must not travel with them).
    fn verifier_of(&self, state: &str) -> Zeroizing<String> {
        let tag = aws_lc_rs::hmac::sign(&self.pkce_key, state.as_bytes());
        Zeroizing::new(tessera_jose::b64::encode(tag.as_ref()))
    }

    /// The sign-in cookie's value: `state` and `nonce`, signed by this
    /// process for `login_timeout`. Nothing of a sign-in under way is
    /// kept here, so a flood of `GET /login` fills nothing.
    fn sign_login(&self, started: &Started) -> Result<String, tessera_jose::Error> {
        let claims = tessera_jose::Claims::with_custom(started)
            .issuer(self.settings.base.clone())
            .audience(LOGIN_AUDIENCE)
            .valid_for(self.settings.limits.login_timeout);
        tessera_jose::jwt::sign(&claims, &self.login_key)
    }

    /// What a sign-in cookie signed here holds; `Err(true)` when it has
    /// expired, `Err(false)` when it is not one of this process's.
    fn open_login(&self, cookie: &str) -> Result<Started, bool> {
        let validation = tessera_jose::Validation::new()
            .issuer(self.settings.base.clone())
            .audience(LOGIN_AUDIENCE)
            .leeway(Duration::ZERO);
        let key = self.login_key.verifying_key().map_err(|_| false)?;
        match tessera_jose::jwt::verify::<Started>(cookie, &key, &validation) {
            Ok(token) => Ok(token.claims.custom),
            Err(tessera_jose::Error::Expired { .. }) => Err(true),
            Err(_) => Err(false),
        }
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session this browser's cookie names, with its id.
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie_of(headers, self.cookies.session())?;
        let session = self.sessions().get(&id, Instant::now());
        self.revoke_retired();
        Some((id, session?))
    }

    /// Whether the key `token`'s header names is in the provider's key set
    /// as this app has it (fetched again if it is not, past the cooldown);
    /// a token naming no key counts as known.
    async fn knows_key_of(&self, token: &str) -> bool {
        let Ok(header) = tessera_jose::jws::decode_header(token) else {
            return true;
        };
        let Some(kid) = header.kid.as_deref() else {
            return true;
        };
        self.provider_keys
            .keys_for(Some(kid))
            .await
            .is_ok_and(|set| set.select(Some(kid), header.alg).is_ok())
    }

    /// Revoke at the provider, in the background, the refresh tokens of
    /// the sessions ended here since the last call (best effort: one that
    /// fails stays valid there until it expires or the provider's session
    /// ends).
    fn revoke_retired(&self) {
        let retired = self.sessions().take_retired();
        let Some(endpoint) = self.endpoints.revocation.clone() else {
            return;
        };
        if retired.is_empty() {
            return;
        }
        let (http, id, secret) = (
            self.http.clone(),
            self.settings.client_id.clone(),
            self.settings.client_secret.clone(),
        );
        tokio::spawn(async move {
            for token in retired {
                let sent = http
                    .post(&endpoint)
                    .basic_auth(&id, Some(secret.as_str()))
                    .form(&[
                        ("token", token.as_str()),
                        ("token_type_hint", "refresh_token"),
                    ])
                    .send()
                    .await;
                if let Err(e) = sent.and_then(reqwest::Response::error_for_status) {
                    tracing::warn!(error = %e, "a refresh token could not be revoked");
                }
            }
        });
    }

    /// The signed-out page with `message`, answered with `status`.
    fn page_with_status(&self, status: StatusCode, message: &str) -> Response {
        let mut r = self.page(None, None, Some(message));
        if r.status().is_success() {
            *r.status_mut() = status;
        }
        r
    }

    fn page(
        &self,
        session: Option<&Session>,
        items: Option<&str>,
        message: Option<&str>,
    ) -> Response {
        let user = session.map(|s| minijinja::context! { name => &s.name, email => &s.email });
        match self
            .pages
            .get_template("page.html")
            .and_then(|t| t.render(minijinja::context! { user, items, message }))
        {
            Ok(html) => {
                let mut r = Html(html).into_response();
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; \
                         base-uri 'none'",
                    ),
                );
                // `no-store` and the other strict headers: `strict_headers`.
                r
            }
            Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// POST to the token endpoint with this client's credentials.
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Value, TokenFailure> {
        let response = self
            .http
            .post(&self.endpoints.token)
            .timeout(TOKEN_TIMEOUT)
            .basic_auth(
                &self.settings.client_id,
                Some(self.settings.client_secret.as_str()),
            )
            .form(form)
            .send()
            .await
            .map_err(|e| TokenFailure::Unreachable(e.to_string()))?;
        let status = response.status();
        // The status says what went wrong where the body cannot (a
        // proxy's HTML page for a 503).
        let body = json_of(response)
            .await
            .map_err(|e| TokenFailure::Unreachable(format!("{status}: {e}")))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(TokenFailure::Refused {
                status,
                error: body["error"].as_str().unwrap_or("error").to_owned(),
            })
        }
    }
}

/// Why the token endpoint gave no tokens.
enum TokenFailure {
    /// It answered with an OAuth error (RFC 6749 §5.2).
    Refused { status: StatusCode, error: String },
    /// It could not be reached, or its answer could not be read.
    Unreachable(String),
}

impl std::fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenFailure::Refused { status, error } => write!(f, "{status}: {error}"),
            TokenFailure::Unreachable(why) => f.write_str(why),
        }
    }
}

/// The app's routes.
pub fn router(app: Arc<WebApp>) -> Router {
    // The buttons of the signed-in page: only from this app's own pages.
    let buttons = Router::new()
        .route("/items", post(items))
        .route("/refresh", post(refresh))
        .route("/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            from_own_pages,
        ));
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/backchannel", post(backchannel))
        .merge(buttons)
        .layer(axum::middleware::map_response(strict_headers))
        .layer(axum::middleware::map_response_with_state(
            app.cookies.secure,
            https_only,
        ))
        .with_state(app)
}

/// Served over https, every answer tells browsers to come back over https
/// only, for a year (HSTS): a first visit typed as `shop.example` would
/// otherwise load over plain HTTP, where a network attacker can serve a
/// look-alike page. (The cookies are `__Host-` and `Secure` already; this
/// protects the page itself.)
async fn https_only(State(secure): State<bool>, mut response: Response) -> Response {
    if secure {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// The headers every answer carries, errors included (`problem`'s plain
/// text too), where the handler set none of its own: nothing framed,
/// sniffed or cached, no script or other resource loaded, and no
/// referrer sent to other origins. `same-origin`, not `no-referrer`:
/// under `no-referrer` a browser without `Sec-Fetch-Site` sends
/// `Origin: null` with the page's own forms, which [`from_own_pages`]
/// must then refuse.
async fn strict_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// A form posted by a page of another origin is refused (403). The
/// session cookie is `SameSite=Lax`, which keeps other *sites* from
/// posting with it, but not another host of the same site
/// (`evil.shop.example` against `shop.example`). Browsers say where a
/// request comes from in `Sec-Fetch-Site` (only `same-origin` passes);
/// those that do not, in `Origin` (which must then be this app's; a
/// page under `Referrer-Policy: no-referrer` sends `null` there, and
/// is refused only by such older browsers). A request with neither (not
/// from a browser) is let through.
async fn from_own_pages(
    State(app): State<Arc<WebApp>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let own = match headers.get("sec-fetch-site") {
        Some(site) => site.as_bytes() == b"same-origin",
        None => headers
            .get(header::ORIGIN)
            .is_none_or(|origin| origin.as_bytes() == app.origin.as_bytes()),
    };
    if own {
        next.run(request).await
    } else {
        problem(
            StatusCode::FORBIDDEN,
            "this form was not posted from this app's pages",
        )
    }
}

async fn home(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let session = app.session(&headers).map(|(_, s)| s);
    app.page(session.as_ref(), None, None)
}

/// The audience of the sign-in cookie's token: nothing else this app
/// signs or verifies is one.
const LOGIN_AUDIENCE: &str = "web-app sign-in";

/// A sign-in under way: what the callback must find again, signed into
/// the browser's sign-in cookie (its PKCE verifier is derived from the
/// state, [`WebApp::verifier_of`]).
#[derive(Serialize, Deserialize)]
struct Started {
    state: String,
    nonce: String,
}

/// Start a sign-in: PKCE verifier, state and nonce, then off to the provider.
async fn login(State(app): State<Arc<WebApp>>) -> Response {
    let started = match (random(), random()) {
        (Ok(state), Ok(nonce)) => Started { state, nonce },
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let (state, nonce) = (&started.state, &started.nonce);
    let challenge = tessera_jose::b64::encode(digest::digest(
        &digest::SHA256,
        app.verifier_of(state).as_bytes(),
    ));
    let mut url = match url::Url::parse(&app.endpoints.authorization) {
        Ok(u) => u,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &app.settings.client_id)
        .append_pair("redirect_uri", &app.redirect_uri())
        .append_pair("scope", "openid profile email offline_access items:read")
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let signed = match app.sign_login(&started) {
        Ok(signed) => signed,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut r = redirect(url.as_str());
    r.headers_mut().append(
        header::SET_COOKIE,
        app.cookies.set(app.cookies.login(), Some(&signed)),
    );
    r
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the person back: check state and iss, exchange the
/// code with the PKCE verifier, verify the ID token (for this app alone),
/// its nonce and `at_hash`.
async fn callback(
    State(app): State<Arc<WebApp>>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    // The state must be the one this browser started with (login CSRF),
    // within the time a sign-in has, and used once.
    let started = match cookie_of(&headers, app.cookies.login()).map(|c| app.open_login(&c)) {
        Some(Ok(started)) if params.state.as_deref() == Some(started.state.as_str()) => started,
        Some(Err(true)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "this sign-in took too long: sign in again",
            )
        }
        _ => return problem(StatusCode::BAD_REQUEST, "this sign-in was not started here"),
    };
    // A place among the exchanges under way, taken before the sign-in is
    // spent: without one, the browser can reload and go on.
    let Ok(exchanging) = Arc::clone(&app.exchanges).try_acquire_owned() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins are being completed at once: reload this page in a moment",
        );
    };
    if !app.spent().spend(&started.state, Instant::now()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "this sign-in was already used: sign in again",
        );
    }
    if params.iss.as_deref() != Some(app.settings.issuer.as_str()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "the response is not from our provider (iss)",
        );
    }
    if let Some(error) = params.error {
        // The provider's words (`temporarily_unavailable` says how long
        // to wait); shown escaped, as everything on the page.
        let why = params
            .error_description
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return app.page(
            None,
            None,
            Some(&format!("Sign-in did not complete: {error}{why}")),
        );
    }
    let Some(code) = params.code else {
        return problem(StatusCode::BAD_REQUEST, "no code");
    };
    // The exchange runs in a task of its own, and hands its refresh token
    // over in an `Unclaimed`: should this request be dropped meanwhile
    // (the browser gone, the request timeout), the task still finishes,
    // and the token nobody claimed is revoked, or the grant would live on
    // at the provider for a sign-in nobody completed.
    let exchange = {
        let app = Arc::clone(&app);
        // Zeroized once sent: the verifier is what makes the code usable.
        let form = [
            (
                "grant_type",
                Zeroizing::new("authorization_code".to_owned()),
            ),
            ("code", Zeroizing::new(code)),
            ("redirect_uri", Zeroizing::new(app.redirect_uri())),
            ("code_verifier", app.verifier_of(&started.state)),
        ];
        tokio::spawn(async move {
            // Held until the exchange ends, whether or not anyone waits.
            let _exchanging = exchanging;
            let form: Vec<(&str, &str)> = form.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let tokens = app.token_request(&form).await?;
            let token = tokens["refresh_token"]
                .as_str()
                .map(|t| Zeroizing::new(t.to_owned()));
            Ok::<_, TokenFailure>((tokens, Unclaimed { app, token }))
        })
    };
    let (tokens, mut unclaimed) = match exchange.await {
        Ok(Ok(exchanged)) => exchanged,
        Ok(Err(e)) => {
            // The details (the provider's address among them) for the
            // operator, not the person.
            tracing::warn!(error = %e, "the code could not be exchanged");
            // Its code may be spent, and its state is: reloading could
            // only say "already used". A fresh sign-in is one click away.
            return app.page_with_status(
                StatusCode::BAD_GATEWAY,
                "The provider did not complete the sign-in. Please sign in again.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "the code exchange's task failed");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the sign-in failed: try again",
            );
        }
    };
    // From here on a sign-in that fails revokes its refresh token, as
    // `unclaimed` is dropped.
    let abandon = |status: StatusCode, message: &str| problem(status, message);
    let (Some(access), Some(id_token)) =
        (tokens["access_token"].as_str(), tokens["id_token"].as_str())
    else {
        return abandon(
            StatusCode::BAD_GATEWAY,
            "the token response has no access or ID token",
        );
    };
    let claims = match app.id_tokens.verify(id_token).await {
        Ok(t) => t.claims().clone(),
        Err(e) => {
            tracing::warn!(error = ?e, "the ID token was refused");
            return abandon(
                StatusCode::BAD_GATEWAY,
                "the provider's ID token was refused",
            );
        }
    };
    if claims.get("nonce").and_then(Value::as_str) != Some(started.nonce.as_str()) {
        return abandon(StatusCode::BAD_REQUEST, "the ID token's nonce is not ours");
    }
    // Core §2: required (the guard checks it only when present).
    let Some(issued_at) = claims.get("iat").and_then(seconds) else {
        return abandon(StatusCode::BAD_GATEWAY, "the ID token has no iat");
    };
    if let Err(why) = audience_checked(&claims, &app.settings.client_id)
        .and_then(|()| access_token_hash_checked(&claims, access))
    {
        return abandon(StatusCode::BAD_GATEWAY, why);
    }
    let Some(sub) = claims.get("sub").and_then(Value::as_str) else {
        return abandon(StatusCode::BAD_GATEWAY, "the ID token names no one (sub)");
    };
    let asked = app
        .http
        .get(&app.endpoints.userinfo)
        .bearer_auth(access)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    // The person is known from the ID token; userinfo only adds a name
    // and an address to show. A sign-in whose ID token checked out is not
    // given up because userinfo failed for a moment: it goes on with the
    // ID token's claims (as openid-client leaves userinfo to the app).
    let userinfo: Value = match asked.map_err(|e| e.to_string()) {
        Ok(r) => match json_of(r).await {
            Ok(userinfo) => userinfo,
            Err(e) => {
                tracing::warn!(error = %e, "userinfo unreadable: the ID token's claims are shown");
                Value::Object(claims.clone())
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "userinfo failed: the ID token's claims are shown");
            Value::Object(claims.clone())
        }
    };
    if userinfo["sub"].as_str() != Some(sub) {
        return abandon(StatusCode::BAD_GATEWAY, "userinfo is about someone else");
    }
    let now = Instant::now();
    let session = Session {
        // Optional: a provider need not name its session; back-channel
        // logout then finds this one by `sub`.
        sid: claims.get("sid").and_then(Value::as_str).map(str::to_owned),
        sub: sub.to_owned(),
        issued_at,
        name: shown(
            userinfo["name"]
                .as_str()
                .or(userinfo["preferred_username"].as_str())
                .unwrap_or("someone"),
        ),
        email: shown(userinfo["email"].as_str().unwrap_or("no email")),
        access_token: Zeroizing::new(access.to_owned()),
        refresh_token: unclaimed.token.clone(),
        id_token: id_token.to_owned(),
        signed_in: now,
        last_used: now,
        refreshing: Arc::default(),
    };
    let id = match random() {
        Ok(id) => id,
        Err(r) => return r,
    };
    {
        let mut sessions = app.sessions();
        // Signing in again in this browser replaces its session: the old
        // one would otherwise stay in memory, unreachable, until it ended.
        if let Some(old) = cookie_of(&headers, app.cookies.session()) {
            sessions.retire(&old);
        }
        if sessions.insert(id.clone(), session, now) {
            // The session holds it now.
            unclaimed.token = None;
        } else {
            drop(sessions);
            // Its provider session ended while this sign-in finished: the
            // provider has revoked what it issued, and a session here
            // would outlive the logout.
            return abandon(
                StatusCode::CONFLICT,
                "you were signed out at the provider while signing in: sign in again",
            );
        }
    }
    app.revoke_retired();
    let mut r = redirect("/");
    r.headers_mut().append(
        header::SET_COOKIE,
        app.cookies.set(app.cookies.session(), Some(&id)),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        app.cookies.set(app.cookies.login(), None),
    );
    r
}

/// The refresh token of a sign-in that has not handed it to a session
/// yet: revoked when dropped unclaimed (the sign-in refused, or its
/// request dropped).
struct Unclaimed {
    app: Arc<WebApp>,
    token: Option<Zeroizing<String>>,
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.app.sessions().retire_token(token);
            // Revoked from a task; with no runtime left (the process
            // ending), it stays retired, for whatever revokes next.
            if tokio::runtime::Handle::try_current().is_ok() {
                self.app.revoke_retired();
            }
        }
    }
}

/// Call store-api with the access token; refresh once if it has expired.
async fn items(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let Some((id, mut session)) = app.session(&headers) else {
        return redirect("/");
    };
    let call = |token: String| {
        let app = Arc::clone(&app);
        async move {
            app.http
                .get(format!("{}/items", app.settings.store_api))
                .bearer_auth(token)
                .send()
                .await
        }
    };
    let mut response = call(session.access_token.to_string()).await;
    if matches!(&response, Ok(r) if r.status() == StatusCode::UNAUTHORIZED) {
        match fresh_tokens(&app, &id, &session).await {
            Ok(renewed) => {
                session = renewed;
                response = call(session.access_token.to_string()).await;
            }
            Err(RefreshFailed::Ended) => return redirect("/"),
            Err(RefreshFailed::Gone(e)) => return app.signed_out_after(&e),
            Err(RefreshFailed::Failed(e)) => {
                return app.page(
                    Some(&session),
                    None,
                    Some({
                        tracing::warn!(error = %e, "the tokens could not be refreshed");
                        "Could not refresh the tokens: try again later."
                    }),
                )
            }
        }
    }
    match response {
        Ok(r) => {
            let status = r.status();
            let body = match body_of(r).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(e) => e,
            };
            let pretty = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            app.page(Some(&session), Some(&format!("{status}\n{pretty}")), None)
        }
        Err(e) => app.page(
            Some(&session),
            None,
            Some({
                tracing::warn!(error = %e, "store-api is unreachable");
                "store-api is unreachable: try again later."
            }),
        ),
    }
}

/// Why a session's tokens were not refreshed.
enum RefreshFailed {
    /// The session ended (logout, back-channel logout, its lifetime).
    Ended,
    /// The session can never be refreshed: it has no refresh token, or
    /// the provider says the grant is gone (`invalid_grant`: the person
    /// signed out there, or the session was ended while the back-channel
    /// logout could not reach this app). It has been ended here too.
    Gone(String),
    /// The provider did not give new tokens this time (unreachable,
    /// overloaded): the session stays, and a later try may succeed.
    Failed(String),
}

/// Fresh tokens for session `id`, of which `seen` is the copy this request
/// read.
///
/// One refresh at a time per session: the provider rotates refresh tokens,
/// and takes a second use of one as theft and revokes the whole family
/// (unless within its `refresh_grace`, 0 s by default), which two tabs or
/// a double click would otherwise do. A request that waited while another
/// refreshed finds the session holding a new refresh token, and takes the
/// tokens stored with it instead of asking again.
///
/// The refresh runs in a task of its own, to its end whatever becomes of
/// the request that needed it: a request dropped half-way (a second click
/// that made the browser give up the first, a closed tab, the listener's
/// request timeout) would drop the provider's answer, and with it the
/// rotated refresh token; the next refresh, sending the old one, would
/// look like theft to the provider, which ends the whole grant.
async fn fresh_tokens(
    app: &Arc<WebApp>,
    id: &str,
    seen: &Session,
) -> Result<Session, RefreshFailed> {
    let (app, id, seen) = (Arc::clone(app), id.to_owned(), seen.clone());
    match tokio::spawn(async move { refresh_in_turn(&app, &id, &seen).await }).await {
        Ok(refreshed) => refreshed,
        Err(e) => Err(RefreshFailed::Failed(format!("the refresh stopped: {e}"))),
    }
}

/// [`fresh_tokens`], in its task.
async fn refresh_in_turn(app: &WebApp, id: &str, seen: &Session) -> Result<Session, RefreshFailed> {
    let _one_at_a_time = seen.refreshing.lock().await;
    let current = app.sessions().get(id, Instant::now());
    app.revoke_retired();
    let Some(current) = current else {
        return Err(RefreshFailed::Ended);
    };
    if current.refresh_token != seen.refresh_token {
        return Ok(current);
    }
    let gone = |why: String| {
        app.sessions().remove(id);
        RefreshFailed::Gone(why)
    };
    let Some(sent) = current.refresh_token else {
        return Err(gone("no refresh token".into()));
    };
    let tokens = match app
        .token_request(&[("grant_type", "refresh_token"), ("refresh_token", &sent)])
        .await
    {
        Ok(tokens) => tokens,
        Err(TokenFailure::Refused { status, error }) if error == "invalid_grant" => {
            return Err(gone(format!("{status}: {error}")))
        }
        Err(e) => return Err(RefreshFailed::Failed(e.to_string())),
    };
    let Some(access) = tokens["access_token"].as_str() else {
        return Err(RefreshFailed::Failed(
            "the token response has no access token".into(),
        ));
    };
    // A provider that does not rotate answers without a refresh token: the
    // one sent stays good (RFC 6749 §6).
    let refresh = match tokens["refresh_token"].as_str() {
        Some(t) => Zeroizing::new(t.to_owned()),
        None => sent.clone(),
    };
    // Written back only if the session is still there, holding the refresh
    // token sent: a logout while the request was out stays a logout, and
    // the new refresh token, which no session holds, is revoked (a
    // provider may keep it live when the one it replaced is revoked:
    // RFC 7009 lets revoking a used token do nothing).
    let rotated = (*refresh != *sent).then(|| refresh.clone());
    let renewed = app
        .sessions()
        .renew(id, &sent, Zeroizing::new(access.to_owned()), refresh);
    match renewed {
        Some(session) => Ok(session),
        None => {
            if let Some(unheld) = rotated {
                app.sessions().retire_token(unheld);
                app.revoke_retired();
            }
            Err(RefreshFailed::Ended)
        }
    }
}

async fn refresh(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = app.session(&headers) else {
        return redirect("/");
    };
    match fresh_tokens(&app, &id, &session).await {
        Ok(renewed) => app.page(Some(&renewed), None, Some("Tokens refreshed.")),
        Err(RefreshFailed::Ended) => redirect("/"),
        Err(RefreshFailed::Gone(e)) => app.signed_out_after(&e),
        Err(RefreshFailed::Failed(e)) => app.page(
            Some(&session),
            None,
            Some({
                tracing::warn!(error = %e, "the tokens could not be refreshed");
                "Could not refresh the tokens: try again later."
            }),
        ),
    }
}

/// RP-initiated logout: forget the session here (its refresh token
/// revoked), then let the provider end its own and send the person back.
/// With no session here (it ended here: the app restarted, it was idle),
/// the person is still sent to the provider, whose session may well go
/// on: without an `id_token_hint`, the provider asks them to confirm.
async fn logout(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let session = app.session(&headers);
    if let Some((id, _)) = &session {
        app.sessions().retire(id);
        app.revoke_retired();
    }
    let mut url = match url::Url::parse(&app.endpoints.end_session) {
        Ok(u) => u,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    {
        // The client's id in any case: a hint the provider can no longer
        // read (signed by a key since removed) would otherwise leave it
        // no client to check the way back against.
        let mut query = url.query_pairs_mut();
        if let Some((_, session)) = &session {
            query.append_pair("id_token_hint", &session.id_token);
        }
        query.append_pair("client_id", &app.settings.client_id);
        query.append_pair(
            "post_logout_redirect_uri",
            &format!("{}/", app.settings.base),
        );
    }
    let mut r = redirect(url.as_str());
    r.headers_mut().append(
        header::SET_COOKIE,
        app.cookies.set(app.cookies.session(), None),
    );
    r
}

#[derive(Deserialize)]
struct LogoutToken {
    logout_token: String,
}

/// Whether `error`, from [`WebApp::discover`], may pass by itself: the
/// provider was not reached, did not answer in time, or answered 5xx. A
/// certificate the app does not trust (or one for another name) fails
/// the connection too, but is the configuration's: waiting does not mend
/// it.
fn unreachable(error: &anyhow::Error) -> bool {
    let Some(e) = error.downcast_ref::<reqwest::Error>() else {
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<rustls::Error>() {
            return false;
        }
        // `io::Error::source` skips the error it wraps (the TLS error is
        // an I/O error's, in another's): gone into by hand.
        cause = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    e.is_connect() || e.is_timeout() || e.status().is_some_and(|s| s.is_server_error())
}

/// A NumericDate claim's whole seconds (RFC 7519 §2: it may have a
/// fraction).
fn seconds(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let at = value.as_f64()?.floor();
        // Within i64: the cast is exact.
        (at.is_finite() && at.abs() < 9.0e18).then_some(at as i64)
    })
}

const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Back-channel logout (OpenID Connect Back-Channel Logout 1.0 §2.8):
/// verify the logout token and end the sessions of its `sid`, its `sub`,
/// or both. Every answer is `no-store` (§2.8).
async fn backchannel(
    State(app): State<Arc<WebApp>>,
    form: Result<Form<LogoutToken>, axum::extract::rejection::FormRejection>,
) -> Response {
    let mut r = match form {
        Ok(Form(form)) => logged_out(&app, &form.logout_token).await,
        Err(rejection) => rejection.into_response(),
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn logged_out(app: &WebApp, logout_token: &str) -> Response {
    let claims = match app.logout_tokens.verify(logout_token).await {
        Ok(t) => t.claims().clone(),
        // Not the token's fault (the provider's keys could not be had): a
        // 5xx has the provider try again later, while a 400 is final, and
        // the logout would be lost.
        Err(rejection) if rejection.status().is_server_error() => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the provider's keys cannot be had now: try again",
            )
        }
        // Signed by a key this app does not know yet (the provider
        // replaced a revoked key, and the app fetched the key set again
        // too recently to fetch it once more): asked again later, when
        // it will; a 400 would lose the logout.
        Err(_) if !app.knows_key_of(logout_token).await => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the logout token's key is not known here yet: try again",
            )
        }
        Err(_) => return problem(StatusCode::BAD_REQUEST, "invalid logout token"),
    };
    // §2.4: `events` is an object whose logout member is an object.
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !event {
        return problem(StatusCode::BAD_REQUEST, "not a logout token");
    }
    let Some(iat) = claims.get("iat").and_then(seconds) else {
        return problem(StatusCode::BAD_REQUEST, "a logout token has an iat");
    };
    if claims.get("nonce").is_some() {
        return problem(StatusCode::BAD_REQUEST, "a logout token has no nonce");
    }
    // §2.4: `jti` is required.
    if !claims.get("jti").is_some_and(Value::is_string) {
        return problem(StatusCode::BAD_REQUEST, "a logout token has a jti");
    }
    // A `sid` or `sub` that is there but not a string is refused, not read
    // as absent: a `sid` of another type would have made the token a
    // logout of every session of its `sub`.
    // `Some(None)` when absent, `None` when not a string.
    let text = |name: &str| match claims.get(name) {
        None => Some(None),
        Some(Value::String(text)) => Some(Some(text.as_str())),
        Some(_) => None,
    };
    let (Some(sid), Some(sub)) = (text("sid"), text("sub")) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "a logout token's sid and sub are strings",
        );
    };
    if sid.is_none() && sub.is_none() {
        return problem(
            StatusCode::BAD_REQUEST,
            "a logout token names a sid or a sub",
        );
    }
    app.sessions().end(sid, sub, iat, Instant::now());
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    /// A name or email address from userinfo is kept to its first 200
    /// characters, cut at a character, never inside one.
    #[test]
    fn what_is_shown_is_short() {
        let long = "é".repeat(300);
        assert_eq!(super::shown(&long).chars().count(), super::MAX_SHOWN);
        assert!(super::shown(&long).chars().all(|c| c == 'é'));
        assert_eq!(super::shown("Alice"), "Alice");
    }

    #[test]
    fn secrets_and_tokens_travel_in_the_clear_only_on_this_host_unless_allowed() {
        for url in [
            "https://auth.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:3000",
            "http://[::1]:8080/token",
        ] {
            assert!(super::in_the_clear_refused(url, false).is_ok(), "{url}");
        }
        for url in ["http://auth.example.com/token", "http://10.0.0.2:8080"] {
            assert!(super::in_the_clear_refused(url, false).is_err(), "{url}");
            assert!(super::in_the_clear_refused(url, true).is_ok(), "{url}");
        }
        assert!(super::in_the_clear_refused("ftp://a/b", true).is_err());
    }
}
