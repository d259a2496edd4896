//! `/admin/clients`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AdminResult, AppState, Body};
use crate::store::clients::{self, ClientInfo, GrantType, NewClient};
use crate::store::Scopes;
use crate::Error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    name: String,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    public: bool,
    /// A JWK set (object) for private_key_jwt and the jwt-bearer grant.
    jwks: Option<serde_json::Value>,
    /// Seconds.
    access_ttl: Option<u64>,
}

/// Authorization: admin scope.
pub async fn list(State(app): AppState, _admin: Admin) -> AdminResult {
    let list: Vec<ClientInfo> = clients::list(&app.db)
        .await?
        .iter()
        .map(Into::into)
        .collect();
    Ok(Json(list).into_response())
}

/// Authorization: admin scope.
pub async fn add(
    State(app): AppState,
    admin: Admin,
    Body(body): Body<NewClientBody>,
) -> AdminResult {
    let grants = body
        .grants
        .iter()
        .map(|g| {
            GrantType::parse_short(g).ok_or_else(|| Error::Invalid(format!("unknown grant {g:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max = app.config.max_access_ttl.as_secs();
    let access_ttl = match body.access_ttl {
        Some(ttl) if ttl == 0 || ttl > max => {
            return Err(Error::Invalid(format!("access_ttl must be 1 to {max} seconds")).into())
        }
        Some(ttl) => {
            Some(i64::try_from(ttl).map_err(|_| Error::Invalid("access_ttl too large".into()))?)
        }
        None => None,
    };
    let added = clients::add(
        &app.db,
        NewClient {
            name: body.name,
            grants,
            scopes: Scopes::from_list(&body.scopes)?,
            audiences: body.audiences,
            public: body.public,
            jwks: body.jwks.map(|j| j.to_string()),
            access_ttl,
        },
    )
    .await?;
    app.audit
        .push(admin.event("client_added", &added.client_id));
    let secret = added.client_secret.as_deref().map(String::as_str);
    let body = json!({ "client_id": added.client_id, "client_secret": secret });
    Ok((
        StatusCode::CREATED,
        super::super::token::no_store(Json(body)),
    )
        .into_response())
}

/// Authorization: admin scope.
pub async fn delete(
    State(app): AppState,
    admin: Admin,
    Path(client_id): Path<String>,
) -> AdminResult {
    clients::delete(&app.db, &client_id).await?;
    app.clients.forget(&client_id);
    app.audit.push(admin.event("client_deleted", &client_id));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope.
pub async fn rotate_secret(
    State(app): AppState,
    admin: Admin,
    Path(client_id): Path<String>,
) -> AdminResult {
    let secret = clients::rotate_secret(&app.db, &client_id).await?;
    app.clients.forget(&client_id);
    app.audit
        .push(admin.event("client_secret_rotated", &client_id));
    let body = json!({ "client_id": client_id, "client_secret": secret.as_str() });
    Ok(super::super::token::no_store(Json(body)))
}
