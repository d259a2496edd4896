//! `/admin/clients`: thin callers of [`crate::admin::AdminService`].

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{paged, Admin, AdminResult, AppState, Body, Named, Params};
use crate::admin::ClientRequest;
use crate::admin::Page;
use crate::store::ScopeChange;

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
    /// A JWK set (object) for private_key_jwt and the jwt-bearer grant,
    /// as sent: the JWK set reader refuses what a `Value` would hide (a
    /// member written twice, of which it keeps the last).
    jwks: Option<Box<serde_json::value::RawValue>>,
    /// Seconds.
    access_ttl: Option<u64>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    backchannel_logout_uri: Option<String>,
    /// RFC 7591 / OpenID Connect Registration name.
    id_token_signed_response_alg: Option<String>,
    #[serde(default)]
    first_party: bool,
}

/// Authorization: admin scope, or the read-only one.
pub async fn list(
    State(app): AppState,
    admin: Admin,
    uri: Uri,
    Params(page): Params<Page>,
) -> AdminResult {
    paged(&uri, admin.service(&app).clients(&page).await?)
}

/// Authorization: admin scope.
pub async fn add(
    State(app): AppState,
    admin: Admin,
    Body(body): Body<NewClientBody>,
) -> AdminResult {
    let added = admin
        .service(&app)
        .add_client(ClientRequest {
            name: body.name,
            grants: body.grants,
            scopes: body.scopes,
            audiences: body.audiences,
            public: body.public,
            jwks: body.jwks.map(|j| j.get().to_owned()),
            access_ttl: body.access_ttl.map(Duration::from_secs),
            redirect_uris: body.redirect_uris,
            post_logout_redirect_uris: body.post_logout_redirect_uris,
            backchannel_logout_uri: body.backchannel_logout_uri,
            id_token_alg: body.id_token_signed_response_alg,
            first_party: body.first_party,
        })
        .await?;
    let secret = added.client_secret.as_deref().map(String::as_str);
    let body = json!({ "client_id": added.client_id, "client_secret": secret });
    Ok(super::created(
        "/admin/clients",
        &added.client_id,
        super::super::token::no_store(Json(body)),
    ))
}

/// What a client's change may say: its scopes, in place of the old
/// (`scopes`), or some added and some taken away (`add_scopes`,
/// `remove_scopes`, against the scopes as they are when the change is
/// written).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientChange {
    /// `null` is refused: "no scopes" is `[]`.
    #[serde(default, deserialize_with = "super::not_null")]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    add_scopes: Vec<String>,
    #[serde(default)]
    remove_scopes: Vec<String>,
}

/// Authorization: admin scope.
pub async fn change(
    State(app): AppState,
    admin: Admin,
    Named(client_id): Named,
    Body(change): Body<ClientChange>,
) -> AdminResult {
    if change.scopes.is_none() && change.add_scopes.is_empty() && change.remove_scopes.is_empty() {
        return Err(
            crate::Error::Invalid("say scopes, or add_scopes and remove_scopes".into()).into(),
        );
    }
    let scopes = ScopeChange::of_lists(
        change.scopes.as_deref(),
        &change.add_scopes,
        &change.remove_scopes,
    )?;
    admin
        .service(&app)
        .set_client_scopes(&client_id, &scopes)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope, or the read-only one.
pub async fn get(State(app): AppState, admin: Admin, Named(client_id): Named) -> AdminResult {
    Ok(Json(admin.service(&app).client(&client_id).await?).into_response())
}

/// Authorization: admin scope.
pub async fn delete(State(app): AppState, admin: Admin, Named(client_id): Named) -> AdminResult {
    admin.service(&app).delete_client(&client_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope.
pub async fn rotate_secret(
    State(app): AppState,
    admin: Admin,
    Named(client_id): Named,
) -> AdminResult {
    let secret = admin.service(&app).rotate_secret(&client_id).await?;
    let body = json!({ "client_id": client_id, "client_secret": secret.as_str() });
    Ok(super::super::token::no_store(Json(body)))
}
