//! A server-side web application that signs people in through an OpenID
//! Provider (here `tessera serve`) with the authorization code flow: PKCE
//! (S256), `state`, `nonce`, the `iss` of RFC 9207, and the ID token
//! verified with `tessera-guard` (the issuer's JWKS, `typ: JWT`, this
//! client as audience). It shows who is signed in, calls `store-api` with
//! the access token (refreshing it when it expires), and logs out both
//! ways: RP-initiated (a redirect to the provider) and back-channel (the
//! provider POSTs a logout token here).
//!
//! Sessions live in memory; the browser holds a random id in an
//! `HttpOnly`, `SameSite=Lax` cookie, which is also what keeps the POST
//! buttons from being triggered by other sites.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use serde_json::Value;
use tessera_guard::{Guard, Keys, RemoteJwks};
use zeroize::Zeroizing;

/// What the app needs to know.
pub struct Settings {
    /// The provider's issuer URL.
    pub issuer: String,
    /// This app's client id.
    pub client_id: String,
    /// This app's client secret.
    pub client_secret: Zeroizing<String>,
    /// Where this app is reached (`http://127.0.0.1:4000`).
    pub base: String,
    /// The store API.
    pub store_api: String,
    /// Fetch the provider's keys over plain HTTP even from another host
    /// (by default only over HTTPS or from a loopback address).
    pub allow_plain_http: bool,
}

/// The provider's endpoints, from its discovery document.
struct Endpoints {
    authorization: String,
    token: String,
    userinfo: String,
    end_session: String,
}

/// A sign-in under way: what the callback must find again.
struct Started {
    nonce: String,
    verifier: Zeroizing<String>,
}

/// A signed-in person.
#[derive(Clone)]
struct Session {
    sid: String,
    name: String,
    email: String,
    access_token: Zeroizing<String>,
    refresh_token: Option<Zeroizing<String>>,
    id_token: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("base", &self.base)
            .field("store_api", &self.store_api)
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
    started: Mutex<HashMap<String, Started>>,
    sessions: Mutex<HashMap<String, Session>>,
    pages: minijinja::Environment<'static>,
}

const LOGIN_COOKIE: &str = "web-app-login";
const SESSION_COOKIE: &str = "web-app-session";

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

fn set_cookie(name: &str, value: &str, remove: bool) -> HeaderValue {
    let mut c = Cookie::build((name.to_owned(), value.to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/");
    if remove {
        c = c.max_age(cookie::time::Duration::ZERO);
    }
    HeaderValue::try_from(c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
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

fn problem(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

impl WebApp {
    /// Read the provider's discovery document and set up the verifiers.
    pub async fn discover(settings: Settings) -> anyhow::Result<Arc<WebApp>> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        for url in [&settings.issuer, &settings.store_api] {
            in_the_clear_refused(url, settings.allow_plain_http)?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let meta: Value = http
            .get(format!(
                "{}/.well-known/openid-configuration",
                settings.issuer
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
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
        };
        // The secret goes to the token endpoint, access tokens to userinfo;
        // a provider reached over TLS names only TLS endpoints.
        for url in [&endpoints.token, &endpoints.userinfo] {
            in_the_clear_refused(url, settings.allow_plain_http)?;
            if settings.issuer.starts_with("https://") && !url.starts_with("https://") {
                anyhow::bail!("{url}: not https, as the provider {} is", settings.issuer);
            }
        }
        // ID tokens and logout tokens: the issuer's keys, this client as
        // audience, and each its own `typ`.
        let mut keys = RemoteJwks::url(field("jwks_uri")?)?;
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
        .build()?;
        let logout_tokens =
            Guard::builder(&settings.issuer, &settings.client_id, Keys::Remote(keys))
                .typ(Some("logout+jwt"))
                .build()?;
        let mut pages = minijinja::Environment::new();
        pages.add_template("page.html", PAGE)?;
        Ok(Arc::new(WebApp {
            settings,
            endpoints,
            http,
            id_tokens,
            logout_tokens,
            started: Mutex::default(),
            sessions: Mutex::default(),
            pages,
        }))
    }

    fn redirect_uri(&self) -> String {
        format!("{}/callback", self.settings.base)
    }

    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie_of(headers, SESSION_COOKIE)?;
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get(&id).cloned().map(|s| (id, s))
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
                        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                    ),
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// POST to the token endpoint with this client's credentials.
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .post(&self.endpoints.token)
            .basic_auth(
                &self.settings.client_id,
                Some(self.settings.client_secret.as_str()),
            )
            .form(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!(
                "{status}: {}",
                body["error"].as_str().unwrap_or("error")
            ))
        }
    }
}

/// The app's routes.
pub fn router(app: Arc<WebApp>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/items", post(items))
        .route("/refresh", post(refresh))
        .route("/logout", post(logout))
        .route("/backchannel", post(backchannel))
        .with_state(app)
}

async fn home(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let session = app.session(&headers).map(|(_, s)| s);
    app.page(session.as_ref(), None, None)
}

/// Start a sign-in: PKCE verifier, state and nonce, then off to the provider.
async fn login(State(app): State<Arc<WebApp>>) -> Response {
    let (state, nonce, verifier) = match (random(), random(), random()) {
        (Ok(s), Ok(n), Ok(v)) => (s, n, Zeroizing::new(v)),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let challenge = tessera_jose::b64::encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    let mut url = match url::Url::parse(&app.endpoints.authorization) {
        Ok(u) => u,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &app.settings.client_id)
        .append_pair("redirect_uri", &app.redirect_uri())
        .append_pair("scope", "openid profile email offline_access items:read")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    app.started
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(state.clone(), Started { nonce, verifier });
    let mut r = redirect(url.as_str());
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &state, false));
    r
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// The provider sends the person back: check state and iss, exchange the
/// code with the PKCE verifier, verify the ID token and its nonce.
async fn callback(
    State(app): State<Arc<WebApp>>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    // The state must be the one this browser started with (login CSRF).
    let Some(state) = params
        .state
        .filter(|s| cookie_of(&headers, LOGIN_COOKIE).as_deref() == Some(s.as_str()))
    else {
        return problem(StatusCode::BAD_REQUEST, "this sign-in was not started here");
    };
    let Some(started) = app
        .started
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&state)
    else {
        return problem(StatusCode::BAD_REQUEST, "this sign-in was already used");
    };
    if params.iss.as_deref() != Some(app.settings.issuer.as_str()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "the response is not from our provider (iss)",
        );
    }
    if let Some(error) = params.error {
        return app.page(
            None,
            None,
            Some(&format!("Sign-in did not complete: {error}")),
        );
    }
    let Some(code) = params.code else {
        return problem(StatusCode::BAD_REQUEST, "no code");
    };
    let tokens = match app
        .token_request(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &app.redirect_uri()),
            ("code_verifier", &started.verifier),
        ])
        .await
    {
        Ok(t) => t,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, &format!("token endpoint: {e}")),
    };
    let (Some(access), Some(id_token)) =
        (tokens["access_token"].as_str(), tokens["id_token"].as_str())
    else {
        return problem(
            StatusCode::BAD_GATEWAY,
            "the token response has no access or ID token",
        );
    };
    let claims = match app.id_tokens.verify(id_token).await {
        Ok(t) => t.claims().clone(),
        Err(e) => return problem(StatusCode::BAD_GATEWAY, &format!("ID token: {e:?}")),
    };
    if claims.get("nonce").and_then(Value::as_str) != Some(started.nonce.as_str()) {
        return problem(StatusCode::BAD_REQUEST, "the ID token's nonce is not ours");
    }
    let userinfo: Value = match app
        .http
        .get(&app.endpoints.userinfo)
        .bearer_auth(access)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    if userinfo["sub"] != claims["sub"] {
        return problem(StatusCode::BAD_GATEWAY, "userinfo is about someone else");
    }
    let session = Session {
        sid: claims["sid"].as_str().unwrap_or_default().to_owned(),
        name: userinfo["name"]
            .as_str()
            .or(userinfo["preferred_username"].as_str())
            .unwrap_or("someone")
            .to_owned(),
        email: userinfo["email"].as_str().unwrap_or("no email").to_owned(),
        access_token: Zeroizing::new(access.to_owned()),
        refresh_token: tokens["refresh_token"]
            .as_str()
            .map(|t| Zeroizing::new(t.to_owned())),
        id_token: id_token.to_owned(),
    };
    let id = match random() {
        Ok(id) => id,
        Err(r) => return r,
    };
    app.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), session);
    let mut r = redirect("/");
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, false));
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", true));
    r
}

/// Call store-api with the access token; refresh once if it has expired.
async fn items(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = app.session(&headers) else {
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
    let mut session = session;
    if matches!(&response, Ok(r) if r.status() == StatusCode::UNAUTHORIZED) {
        match do_refresh(&app, &id, &session).await {
            Ok(renewed) => {
                session = renewed;
                response = call(session.access_token.to_string()).await;
            }
            Err(e) => {
                return app.page(
                    Some(&session),
                    None,
                    Some(&format!("Could not refresh: {e}")),
                )
            }
        }
    }
    match response {
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let pretty = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            app.page(Some(&session), Some(&format!("{status}\n{pretty}")), None)
        }
        Err(e) => app.page(
            Some(&session),
            None,
            Some(&format!("store-api is unreachable: {e}")),
        ),
    }
}

async fn do_refresh(app: &WebApp, id: &str, session: &Session) -> Result<Session, String> {
    let Some(refresh) = &session.refresh_token else {
        return Err("no refresh token".into());
    };
    let tokens = app
        .token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await?;
    let mut renewed = session.clone();
    renewed.access_token = Zeroizing::new(
        tokens["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    renewed.refresh_token = tokens["refresh_token"]
        .as_str()
        .map(|t| Zeroizing::new(t.to_owned()));
    app.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_owned(), renewed.clone());
    Ok(renewed)
}

async fn refresh(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = app.session(&headers) else {
        return redirect("/");
    };
    match do_refresh(&app, &id, &session).await {
        Ok(renewed) => app.page(Some(&renewed), None, Some("Tokens refreshed.")),
        Err(e) => app.page(
            Some(&session),
            None,
            Some(&format!("Could not refresh: {e}")),
        ),
    }
}

/// RP-initiated logout: forget the session here, then let the provider end
/// its own and send the person back.
async fn logout(State(app): State<Arc<WebApp>>, headers: HeaderMap) -> Response {
    let Some((id, session)) = app.session(&headers) else {
        return redirect("/");
    };
    app.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    let state = match random() {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut url = match url::Url::parse(&app.endpoints.end_session) {
        Ok(u) => u,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    url.query_pairs_mut()
        .append_pair("id_token_hint", &session.id_token)
        .append_pair(
            "post_logout_redirect_uri",
            &format!("{}/", app.settings.base),
        )
        .append_pair("state", &state);
    let mut r = redirect(url.as_str());
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", true));
    r
}

#[derive(Deserialize)]
struct LogoutToken {
    logout_token: String,
}

/// Back-channel logout (OpenID Connect Back-Channel Logout 1.0 §2.8):
/// verify the logout token and end every session of its `sid`.
async fn backchannel(State(app): State<Arc<WebApp>>, Form(form): Form<LogoutToken>) -> Response {
    let claims = match app.logout_tokens.verify(&form.logout_token).await {
        Ok(t) => t.claims().clone(),
        Err(_) => return problem(StatusCode::BAD_REQUEST, "invalid logout token"),
    };
    let event = claims["events"]
        .get("http://schemas.openid.net/event/backchannel-logout")
        .is_some();
    let Some(sid) = claims.get("sid").and_then(Value::as_str).filter(|_| event) else {
        return problem(StatusCode::BAD_REQUEST, "not a logout token for a session");
    };
    if claims.get("nonce").is_some() {
        return problem(StatusCode::BAD_REQUEST, "a logout token has no nonce");
    }
    app.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|_, s| s.sid != sid);
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
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
