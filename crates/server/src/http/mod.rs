//! The HTTP API, one file per resource.
//!
//! | route | file | who may call it |
//! |---|---|---|
//! | `POST /oauth2/token` | `token.rs` | any registered client |
//! | `POST /oauth2/introspect` | `introspect.rs` | confidential clients |
//! | `POST /oauth2/revoke` | `revoke.rs` | the client the token was issued to |
//! | `GET /oauth2/revocations` | `revocation_feed.rs` | access tokens with `revocations:read` (resource servers) |
//! | `GET`/`POST /oauth2/authorize` | `authorize.rs` | anyone (the person is identified by the session) |
//! | `GET`/`POST /login` | `login.rs` | the browser that started the request |
//! | `GET`/`POST /consent` | `consent.rs` | the browser and session of the request |
//! | `GET`/`POST /oauth2/logout`, `POST /logout` | `logout.rs` | the session's own browser |
//! | `GET`/`POST /oauth2/userinfo` | `userinfo.rs` | access tokens with `openid` |
//! | `GET /assets/*` | `pages.rs` | anyone |
//! | `GET /.well-known/*` | `discovery.rs` | anyone |
//! | `GET /healthz`, `/readyz` | `health.rs` | anyone |
//! | `GET /metrics` | `metrics.rs` | anyone |
//! | `/admin/...` | `admin/` | access tokens with the `tessera:admin` scope |

pub mod admin;
mod authorize;
mod bearer;
pub mod client_address;
mod consent;
mod cookies;
mod discovery;
mod edge;
mod error;
mod form;
mod health;
mod introspect;
mod log_limit;
mod login;
mod logout;
mod metrics;
mod page_params;
pub mod pages;
pub(crate) mod revocation_feed;
mod revoke;
mod token;
mod userinfo;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub(crate) use self::metrics::upkeep as metrics_upkeep;

use crate::app::App;
pub use error::OAuthError;
pub use revocation_feed::STREAMS_PER_CLIENT;

/// Largest request body accepted (forms are small).
const BODY_LIMIT: usize = 16 * 1024;

/// The pages people see, with their templates. `open` has loaded them
/// once already, so a template that does not parse stops the start; if
/// they fail here all the same (a file changed meanwhile), the built-in
/// look serves, and without even that the sign-in routes are left out
/// while every other endpoint keeps working.
fn sign_in_routes(app: &App) -> Router<Arc<App>> {
    let loaded = pages::Pages::load(&app.config.pages).or_else(|e| {
        tracing::error!(error = %e, "sign-in pages: falling back to the built-in look");
        pages::Pages::load(&crate::config::Pages {
            product_name: app.config.pages.product_name.clone(),
            lang: app.config.pages.lang.clone(),
            accent: "#1d4ed8".into(),
            logo: None,
            templates: None,
            scopes: app.config.pages.scopes.clone(),
        })
    });
    let pages = match loaded {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(error = %e, "sign-in pages unavailable");
            return Router::new();
        }
    };
    let (assets, logo) = (Arc::clone(&pages), Arc::clone(&pages));
    Router::new()
        .route(
            "/oauth2/authorize",
            get(authorize::authorize)
                .post(authorize::authorize)
                .head(head_acts_not),
        )
        .route(
            "/login",
            get(login::page).post(login::submit).head(head_acts_not),
        )
        .route("/consent", get(consent::page).post(consent::submit))
        .route(
            "/oauth2/logout",
            get(logout::end_session)
                .post(logout::end_session)
                .head(head_acts_not),
        )
        .route("/logout", post(logout::confirmed))
        .route(
            "/assets/tessera.css",
            get(move || async move { assets.stylesheet() }),
        )
        .route("/assets/logo", get(move || async move { logo.logo() }))
        .layer(axum::Extension(pages))
        .layer(axum::middleware::map_response(framed_nowhere))
        .layer(axum::middleware::map_response_with_state(
            !app.config.on_http(),
            https_only,
        ))
}

/// `HEAD` on a route whose `GET` acts (issues and stores a code, ends a
/// session; the login page issues a code to a browser signed in
/// meanwhile): refused, since a `HEAD` must change nothing (RFC 9110
/// §9.3.2; link checkers and previewers send them freely), where axum
/// would run the `GET` handler for it.
async fn head_acts_not() -> impl axum::response::IntoResponse {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        [(axum::http::header::ALLOW, "GET, POST")],
    )
}

/// On an https issuer, what the sign-in routes answer tells browsers to
/// come back over https only, for a year (HSTS, RFC 6797): a person who
/// types the server's name, or follows an `http://` link, would otherwise
/// load the login page over plain HTTP first, where a network attacker
/// can serve a look-alike. Subdomains are left out: they are the
/// operator's, and may serve plain HTTP; a proxy that sets its own keeps
/// it.
async fn https_only(
    axum::extract::State(on_https): axum::extract::State<bool>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let headers = response.headers_mut();
    if on_https && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// What every answer of the sign-in routes carries, pages or not (axum's
/// own 405 for `GET /logout`, a 400 for a malformed query, a body too
/// large): nothing of them may be framed, sniffed, cached or referred.
/// What a handler set stays (a page's CSP, the assets' caching).
pub(crate) async fn framed_nowhere(
    mut response: axum::response::Response,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// A path no route takes: under `/admin`, the admin API's JSON error
/// (its clients read every answer as one); elsewhere a bare 404.
async fn no_such_path(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    if path == "/admin" || path.starts_with("/admin/") {
        admin::no_such_endpoint()
    } else {
        axum::http::StatusCode::NOT_FOUND.into_response()
    }
}

/// The endpoints a single-page app calls from its own origin, open to
/// scripts of any origin (CORS), as node-oidc-provider's are by default:
/// discovery, the keys, the token endpoint, userinfo and revocation. No
/// cookie is sent or read there (`credentials` stay off): each request
/// proves itself with what it carries (client credentials, a code and its
/// verifier, a token). The password grant is refused to any request with
/// an `Origin` (a web page), so pages cannot guess passwords through
/// their visitors' browsers and read the answers. The sign-in pages,
/// introspection, the feed and the admin API stay closed to other
/// origins.
fn from_any_origin(app: &App) -> Router<Arc<App>> {
    use axum::http::{header, Method};
    use tower_http::cors::{Any, CorsLayer};
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::WWW_AUTHENTICATE, header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600));
    Router::new()
        .merge(userinfo::routes(app))
        .route("/oauth2/token", post(token::token))
        .route("/oauth2/revoke", post(revoke::revoke))
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::server_metadata),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery::server_metadata),
        )
        .layer(cors)
}

/// The server's routes, with body limits and metrics.
pub fn router(app: Arc<App>) -> Router {
    // Install the recorder before the first request counts anything.
    self::metrics::prometheus();
    Router::new()
        .merge(sign_in_routes(&app))
        .merge(from_any_origin(&app))
        .merge(revocation_feed::routes(&app))
        .route("/oauth2/introspect", post(introspect::introspect))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(self::metrics::metrics))
        .merge(admin::routes(&app))
        .fallback(no_such_path)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(edge::check))
        .layer(axum::middleware::from_fn(self::metrics::track))
        .layer(axum::middleware::from_fn_with_state(
            client_address::TrustedProxies::new(app.config.trusted_proxies.clone()),
            client_address::record,
        ))
        .with_state(app)
}
