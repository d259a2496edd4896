//! `GET`/`POST /oauth2/userinfo` (OpenID Connect Core §5.3): the standard
//! claims of the token's user for its granted scopes. Any access token of
//! this server carrying `openid` is accepted, whatever its audience;
//! refusals are `tessera-guard`'s RFC 6750 answers.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tessera_guard::{AccessToken, GuardLayer, Rejection, RequireScope};

use super::App;
use crate::store::users;

/// The route, behind the guard and the `openid` scope.
pub fn routes(app: &App) -> Router<Arc<App>> {
    match super::bearer::own_guard(app) {
        Ok(guard) => Router::new()
            .route("/oauth2/userinfo", get(userinfo).post(userinfo))
            .layer(RequireScope::any(["openid"]))
            .layer(GuardLayer::new(guard)),
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
