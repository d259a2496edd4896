//! The admin API (`/admin/...`): the command line's user, client and key
//! operations over HTTP, for access tokens that carry the
//! [`ADMIN_SCOPE`]; what only reads (`GET`) takes [`ADMIN_READ_SCOPE`]
//! too. Described by `GET /admin/openapi.json`.

mod audit;
mod clients;
mod keys;
mod sessions;
mod users;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use tessera_guard::{AccessToken, GuardLayer, Rejection, RequireScope};

use super::App;
use crate::admin::{Actor, AdminService, Listed};

/// The scope that reads the admin API and changes nothing.
pub use crate::admin::ADMIN_READ_SCOPE;
/// The scope an access token needs for the admin API.
pub use crate::admin::ADMIN_SCOPE;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The admin routes: every one but the OpenAPI document behind
/// `GuardLayer` (this server's live keys, its issuer, `at+jwt`, tokens
/// whose audience names the issuer, no cache: admin calls are rare) and
/// `RequireScope`.
pub fn routes(app: &App) -> Router<Arc<App>> {
    let guard = super::bearer::own_guard(app, super::bearer::Audience::Issuer);
    // Reading takes either scope; every change the admin scope itself (a
    // dashboard or an auditor reads users, sessions and the audit trail
    // without the power to change them).
    let read = || RequireScope::any([ADMIN_SCOPE, ADMIN_READ_SCOPE]);
    let change = || RequireScope::any([ADMIN_SCOPE]);
    let protected = Router::new()
        .route(
            "/admin/users",
            get(users::list)
                .layer(read())
                .merge(post(users::add).layer(change())),
        )
        .route(
            "/admin/users/{username}",
            get(users::get).layer(read()).merge(
                axum::routing::delete(users::delete)
                    .patch(users::set_profile)
                    .layer(change()),
            ),
        )
        .route("/admin/sessions", get(sessions::list).layer(read()))
        .route(
            "/admin/sessions/{sid}",
            axum::routing::delete(sessions::end).layer(change()),
        )
        .route(
            "/admin/users/{username}/disable",
            post(users::disable).layer(change()),
        )
        .route(
            "/admin/users/{username}/enable",
            post(users::enable).layer(change()),
        )
        .route(
            "/admin/users/{username}/password",
            put(users::passwd).layer(change()),
        )
        .route(
            "/admin/clients",
            get(clients::list)
                .layer(read())
                .merge(post(clients::add).layer(change())),
        )
        .route(
            "/admin/clients/{client_id}",
            get(clients::get).layer(read()).merge(
                axum::routing::delete(clients::delete)
                    .patch(clients::change)
                    .layer(change()),
            ),
        )
        .route(
            "/admin/clients/{client_id}/rotate-secret",
            post(clients::rotate_secret).layer(change()),
        )
        .route("/admin/keys", get(keys::list).layer(read()))
        .route("/admin/keys/rotate", post(keys::rotate).layer(change()))
        .route(
            "/admin/keys/{kid}/revoke",
            post(keys::revoke).layer(change()),
        )
        .route("/admin/audit", get(audit::list).layer(read()));
    let protected = match guard {
        // Users, clients, sessions and audit events: no cache keeps
        // them, nor the refusals.
        // Either admin scope on every route, whatever its own layer says
        // (a route added without one still needs an admin's token).
        Ok(guard) => protected
            .layer(axum::middleware::from_fn(writes_need_admin))
            .layer(RequireScope::any([ADMIN_SCOPE, ADMIN_READ_SCOPE]))
            .layer(GuardLayer::new(guard))
            .layer(axum::middleware::from_fn(refusals_said))
            .layer(axum::middleware::map_response(method_not_allowed_said))
            .layer(axum::middleware::map_response(
                |response: Response| async move { super::token::no_store(response) },
            )),
        // The builder only refuses a leeway over its maximum, which this
        // one is not.
        Err(e) => {
            tracing::error!(error = %e, "admin API disabled: its guard could not be built");
            Router::new()
        }
    };
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .merge(protected)
}

/// A `201 Created` of `body`, with the `Location` of what was created:
/// `collection` (`/admin/users`) and its id, as one path segment.
fn created(collection: &str, id: &str, body: Response) -> Response {
    // Everything but RFC 3986's unreserved characters is escaped.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut response = (StatusCode::CREATED, body).into_response();
    let location = format!(
        "{collection}/{}",
        percent_encoding::utf8_percent_encode(id, SEGMENT)
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The floor for a change, whatever its route's own layer says: a method
/// other than `GET` and `HEAD` needs `tessera:admin` (a write route added
/// without its layer would otherwise take a read-only token).
async fn writes_need_admin(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let admin = request
        .extensions()
        .get::<Arc<AccessToken>>()
        .is_some_and(|token| token.has_scope(ADMIN_SCOPE));
    if admin {
        next.run(request).await
    } else {
        Rejection::InsufficientScope {
            scope: ADMIN_SCOPE.into(),
        }
        .into_response()
    }
}

/// Say in the log when the admin API refuses a call: a token of this
/// server without the scope (403) at warning level, with the caller's
/// address (someone holding a real token tries the API); a call with no
/// token, or one that is not valid here (401), at debug: anyone can send
/// `Authorization: Bearer x` in a loop, and a warning each time would
/// flood the log (the refusals are counted in the request metrics).
async fn refusals_said(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // A request's path may be 64 KiB long: the log gets its first 200
    // bytes, not as much as anyone cares to send per line.
    let method = request.method().clone();
    let path = request.uri().path();
    let path = match path.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &path[..end]),
        None => path.to_owned(),
    };
    let peer = request
        .extensions()
        .get::<super::client_address::ClientAddress>()
        .map(|c| c.0.to_string());
    let response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::FORBIDDEN {
        tracing::warn!(%method, path, status = status.as_u16(), peer, "admin API call refused");
    } else if status == StatusCode::UNAUTHORIZED {
        tracing::debug!(%method, path, peer, "admin API call without a valid token");
    }
    response
}

/// A method a path does not take, in the API's error shape (axum's own
/// answer has an empty body), its `Allow` header kept.
async fn method_not_allowed_said(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut said = AdminError(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take this method".into(),
    )
    .into_response();
    if let Some(allow) = allow {
        said.headers_mut().insert(header::ALLOW, allow);
    }
    said
}

/// The answer to a path under `/admin` that is no endpoint (a typo, a
/// trailing `/`): the API's JSON error, not writable to caches.
pub(crate) fn no_such_endpoint() -> Response {
    super::token::no_store(
        AdminError(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such admin endpoint (see /admin/openapi.json)".into(),
        )
        .into_response(),
    )
}

/// Authorization: none (it describes the API, nothing more).
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A caller holding a valid access token with either admin scope (each
/// route says which it needs: the read-only one only reads).
#[derive(Debug)]
pub struct Admin {
    /// The token's `sub`: who acts, for the audit trail.
    pub subject: String,
    /// The user's login name, for a user's token: the audit trail names
    /// the user even once the id is all that is left of them.
    pub username: Option<String>,
    /// The client the token was issued to.
    pub client_id: Option<String>,
    /// The address the call came from.
    pub remote: Option<String>,
}

impl Admin {
    /// The admin operations, acting as this caller.
    fn service<'a>(&self, app: &'a App) -> AdminService<'a> {
        AdminService {
            db: &app.db,
            passwords: &app.passwords,
            config: &app.config,
            clients: Some(&app.clients),
            revocations: Some(app.access.revoked()),
            actor: Actor::Token {
                subject: self.subject.clone(),
                username: self.username.clone(),
                client_id: self.client_id.clone(),
                remote: self.remote.clone(),
            },
        }
    }
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = Response;

    /// The token [`GuardLayer`] verified (signature, issuer, `at+jwt`,
    /// expiry) and [`RequireScope`] checked, still live: not revoked, its
    /// client and user still standing. Refusals are the guard's RFC 6750
    /// answers, the same as any API protected by `tessera-guard`.
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, Response> {
        let token = AccessToken::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let remote = parts
            .extensions
            .get::<super::client_address::ClientAddress>()
            .map(|c| c.0.to_string());
        let owner = super::bearer::owner_if_standing(app, &token)
            .await
            .map_err(|e| AdminError::from(e).into_response())?;
        let Some(owner) = owner else {
            // A token this server signed, with an admin scope, revoked
            // since (or its client or user gone): someone holds an
            // administrator's token that was taken back. Said each time:
            // only such a token's holder can, until it expires. One that
            // has just expired (within the guard's leeway) is not news.
            let now = tessera_jose::Clock::now(&tessera_jose::SystemClock);
            if token.expires_at().is_some_and(|exp| exp > now) {
                tracing::warn!(
                    client_id = token.client_id().unwrap_or_default(),
                    sub = token.subject().unwrap_or_default(),
                    peer = remote.as_deref(),
                    "admin API call with a token taken back (revoked, or its client or user gone)"
                );
            }
            return Err(Rejection::InvalidToken {
                description: "the access token is invalid",
            }
            .into_response());
        };
        Ok(Admin {
            subject: token.subject().unwrap_or_default().to_owned(),
            username: owner.username,
            client_id: token.client_id().map(str::to_owned),
            remote,
        })
    }
}

/// An admin API error: `{"error": …, "error_description": …}`.
#[derive(Debug)]
pub struct AdminError(StatusCode, &'static str, String);

impl From<crate::Error> for AdminError {
    fn from(e: crate::Error) -> AdminError {
        use crate::Error;
        match e {
            Error::NotFound { .. } => AdminError(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            Error::Exists { .. } => AdminError(StatusCode::CONFLICT, "conflict", e.to_string()),
            Error::Invalid(_) | Error::Jose(_) => {
                AdminError(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
            }
            Error::Overloaded(why) => AdminError(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("the server is busy ({why}); try again shortly"),
            ),
            Error::Unavailable(_) => {
                tracing::warn!(error = %e, "admin request refused: database unavailable");
                AdminError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the database is unavailable; try again later".into(),
                )
            }
            other => {
                tracing::error!(error = %other, "admin request failed");
                AdminError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the server failed; see its log".into(),
                )
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response = (
            self.0,
            Json(json!({ "error": self.1, "error_description": self.2 })),
        )
            .into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(super::error::RETRY_UNAVAILABLE),
            );
        }
        response
    }
}

/// A JSON object as the body, refused as `invalid_request` when
/// malformed: 413 when it is over the limit, 415 when it is not JSON, 400
/// otherwise (as the OpenAPI document says). Only an object: serde also
/// reads a struct from an array, by position, so `["Mallory"]` would
/// have set a user's name, and `[null]` removed it.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = AdminError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Body<T>, AdminError> {
        let text = match Json::<Box<serde_json::value::RawValue>>::from_request(req, state).await {
            Ok(Json(text)) => text,
            Err(rejection) => {
                let status = match rejection.status() {
                    s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
                    _ => StatusCode::BAD_REQUEST,
                };
                return Err(AdminError(status, "invalid_request", rejection.body_text()));
            }
        };
        let refused = |why: String| AdminError(StatusCode::BAD_REQUEST, "invalid_request", why);
        if !text.get().trim_start().starts_with('{') {
            return Err(refused("the body must be a JSON object".into()));
        }
        serde_json::from_str(text.get())
            .map(Body)
            .map_err(|e| refused(format!("the body does not fit: {e}")))
    }
}

/// Query parameters, refused as `invalid_request` (JSON, like every other
/// admin error) when malformed.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, AdminError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(AdminError(
                rejection.status(),
                "invalid_request",
                rejection.body_text(),
            )),
        }
    }
}

/// The name in the path (a user, a client, a session), refused as
/// `invalid_request` when it cannot be read (escapes that are not UTF-8).
#[derive(Debug)]
pub struct Named(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Named {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Named, AdminError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(name)) => Ok(Named(name)),
            Err(rejection) => Err(AdminError(
                rejection.status(),
                "invalid_request",
                rejection.body_text(),
            )),
        }
    }
}

type AdminResult = Result<Response, AdminError>;

/// A page of a listing as JSON (an array, as ever), with the next page's
/// address in a `Link` header (RFC 8288, `rel="next"`: the request's own
/// path and query, `after` set to the cursor) when more follow.
fn paged<T: serde::Serialize>(uri: &Uri, listed: Listed<T>) -> AdminResult {
    let mut response = Json(listed.items).into_response();
    if let Some(next) = listed.next {
        let query: Vec<(String, String)> = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let mut link = form_urlencoded::Serializer::new(String::new());
        for (name, value) in query.iter().filter(|(name, _)| name != "after") {
            link.append_pair(name, value);
        }
        link.append_pair("after", &next);
        let value = format!("<{}?{}>; rel=\"next\"", uri.path(), link.finish());
        // Never a page without its Link: the caller would take it for
        // the last. (The path and the encoded query are header-safe.)
        let value = HeaderValue::from_str(&value).map_err(|_| {
            AdminError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the next page's address could not be written".into(),
            )
        })?;
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}

/// A member that is there: its value, `null` as the value that stands
/// for none (an empty string removes a claim; false).
pub(super) fn null_removes<'de, D, T>(member: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(member)?.unwrap_or_default()))
}

/// A member that is there, which may not be `null`.
pub(super) fn not_null<'de, D, T>(member: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(member).map(Some)
}

/// The state, for handlers.
type AppState = State<Arc<App>>;

#[cfg(test)]
mod tests {
    use crate::store::audit::EVENTS;

    /// The document lists the audit events the listing takes, all and
    /// only those, so a generated client offers the right choices.
    #[test]
    fn the_document_names_every_audit_event() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let listed = doc["paths"]["/admin/audit"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "event")
            .map(|p| p["schema"]["enum"].clone())
            .unwrap();
        assert_eq!(listed, serde_json::json!(EVENTS));
    }
}
