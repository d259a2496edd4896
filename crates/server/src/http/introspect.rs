//! `POST /oauth2/introspect` (RFC 7662): is this token active, and what
//! does it say.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::Serialize;
use tessera_jose::Audience;

use super::error::client_refusal;
use super::form::OAuthForm;
use super::token::no_store;
use super::{App, OAuthError};
use crate::access::looks_like_jwt;
use crate::grant::client_auth::{authenticate, Accept};
use crate::store::refresh;

/// RFC 7662 §2.2. Inactive tokens are `{"active": false}` and nothing else.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// Authorization: confidential clients (resource servers register as
/// clients to introspect); a refresh token only for the client it was
/// issued to (RFC 7662 §4 lets the server choose), since no resource
/// server needs one and anyone else could probe a stolen one without
/// spending it.
pub async fn introspect(
    State(app): State<Arc<App>>,
    form: OAuthForm,
) -> Result<Response, OAuthError> {
    let caller = authenticate(app.verifier(), &form.credentials(), Accept::Confidential)
        .await
        .map_err(|r| client_refusal(r, &form))?;
    let token = form.require("token")?;
    // A JWT is looked up as an access token, anything else as a refresh
    // token: one lookup, whatever the hint says (RFC 7662 §2.1 makes the
    // hint optional to honour).
    let answer = if looks_like_jwt(token) {
        access_token(&app, token).await?
    } else {
        refresh_token(&app, token, &caller.client_id).await?
    };
    Ok(no_store(Json(answer)))
}

async fn access_token(app: &App, token: &str) -> Result<Introspection, OAuthError> {
    // Revoked, or its client or user gone or disabled: not active, though
    // its signature still holds.
    let Some((verified, owner)) = app.access.live(&app.db, &app.clients, token).await? else {
        return Ok(Introspection::default());
    };
    let claims = &verified.claims;
    let scope = &claims.custom.scope;
    Ok(Introspection {
        active: true,
        scope: (!scope.is_empty()).then(|| scope.clone()),
        client_id: Some(claims.custom.client_id.clone()),
        username: owner.username,
        token_type: Some("Bearer"),
        exp: claims.exp.map(|d| d.seconds()),
        iat: claims.iat.map(|d| d.seconds()),
        sub: claims.sub.clone(),
        aud: claims.aud.clone(),
        iss: claims.iss.clone(),
        jti: claims.jti.clone(),
    })
}

async fn refresh_token(app: &App, token: &str, caller: &str) -> Result<Introspection, OAuthError> {
    let Some(live) = refresh::lookup(&app.db, token).await? else {
        return Ok(Introspection::default());
    };
    let family = live.family;
    if family.client_id != caller {
        return Ok(Introspection::default());
    }
    Ok(Introspection {
        active: true,
        scope: Some(family.scope),
        client_id: Some(family.client_id),
        username: family.username,
        token_type: Some("refresh_token"),
        exp: Some(live.token_expires_at),
        iat: Some(live.issued_at),
        sub: Some(family.subject),
        iss: Some(app.config.issuer.clone()),
        ..Introspection::default()
    })
}
