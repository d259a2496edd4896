//! `GET`/`POST /oauth2/userinfo` (OpenID Connect Core §5.3): the standard
//! claims of the token's user for its granted scopes. Any access token of
//! this server carrying `openid` is accepted, whatever its audience;
//! refusals are `tessera-guard`'s RFC 6750 answers. The token comes in the
//! `Authorization` header or, in a `POST`, as the form parameter
//! `access_token` (RFC 6750 §2.2, which OpenID Connect Core §5.3.1 names).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tessera_guard::{AccessToken, GuardLayer, Rejection, RequireScope};

use super::App;
use crate::store::users;

/// The route, behind the guard and the `openid` scope.
pub fn routes(app: &App) -> Router<Arc<App>> {
    match super::bearer::own_guard(app, super::bearer::Audience::Any) {
        Ok(guard) => Router::new()
            .route("/oauth2/userinfo", get(userinfo).post(userinfo))
            .layer(RequireScope::any(["openid"]))
            .layer(GuardLayer::new(guard))
            .layer(axum::middleware::from_fn(token_from_body)),
        Err(e) => {
            tracing::error!(error = %e, "userinfo disabled: its guard could not be built");
            Router::new()
        }
    }
}

/// Authorization: an access token of this server with the `openid` scope,
/// still standing, whose subject is a user.
async fn userinfo(State(app): State<Arc<App>>, token: AccessToken) -> Response {
    let invalid = || {
        Rejection::InvalidToken {
            description: "the access token is invalid",
        }
        .into_response()
    };
    match super::bearer::still_standing(&app, &token).await {
        Ok(true) => {}
        Ok(false) => return invalid(),
        Err(e) => return super::OAuthError::from(e).into_response(),
    }
    let Some(sub) = token.subject() else {
        return invalid();
    };
    let user = match users::find_by_id(&app.db, sub).await {
        Ok(Some(u)) => u,
        // A client's own token (client_credentials) has no user.
        Ok(None) => return invalid(),
        Err(e) => return super::OAuthError::from(e).into_response(),
    };
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.id));
    if token.has_scope("profile") {
        claims.insert("preferred_username".into(), json!(user.username));
        if let Some(name) = &user.name {
            claims.insert("name".into(), json!(name));
        }
        claims.insert("updated_at".into(), json!(user.updated_at));
    }
    if token.has_scope("email") {
        if let Some(email) = &user.email {
            claims.insert("email".into(), json!(email));
            claims.insert("email_verified".into(), json!(user.email_verified));
        }
    }
    super::token::no_store(Json(Value::Object(claims)))
}

/// A `POST` whose form body carries `access_token` (RFC 6750 §2.2) goes
/// on to the guard as if the token were in the `Authorization` header.
/// A token in both places, or twice in the body, is refused
/// (`invalid_request`, RFC 6750 §3.1: one method per request). Other
/// bodies, and other form parameters, are left alone.
async fn token_from_body(request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !super::form::is_form(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let mut parts_kept = parts.clone();
    let body = match Bytes::from_request(Request::from_parts(parts, body), &()).await {
        Ok(body) => body,
        // Too large is 413, as everywhere; whatever else went wrong, 400.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return super::OAuthError::payload_too_large(format!("unreadable body: {e}"))
                .into_response()
        }
        Err(_) => return invalid_request("the request body could not be read"),
    };
    let pairs = match super::form::strict_pairs(&body) {
        Ok(pairs) => pairs,
        Err(e) => return invalid_request(&e.description),
    };
    let mut tokens = pairs.iter().filter(|(name, _)| name == "access_token");
    let token = match (tokens.next(), tokens.next()) {
        (None, _) => None,
        // Sent without a value: as if omitted (RFC 6749 §3.2).
        (Some((_, token)), None) if token.is_empty() => None,
        (Some((_, token)), None) => Some(token),
        (Some(_), Some(_)) => return invalid_request("access_token is given more than once"),
    };
    if let Some(token) = token {
        if parts_kept.headers.contains_key(header::AUTHORIZATION) {
            return invalid_request(
                "the access token is given both in the Authorization header and in the body",
            );
        }
        let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return invalid_request("the access token holds characters no token has");
        };
        parts_kept.headers.insert(header::AUTHORIZATION, value);
    }
    next.run(Request::from_parts(parts_kept, Body::from(body)))
        .await
}

/// RFC 6750 §3.1 `invalid_request` (400), its description as every
/// OAuth error's ([`super::error::description_text`]).
fn invalid_request(description: &str) -> Response {
    let description = super::error::description_text(description);
    let challenge =
        format!("Bearer error=\"invalid_request\", error_description=\"{description}\"");
    let mut response = (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid_request", "error_description": description })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
