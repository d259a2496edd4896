//! `/admin/users`: thin callers of [`crate::admin::AdminService`].

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{paged, Admin, AdminResult, AppState, Body, Named, Params};
use crate::admin::Page;
use crate::store::users::Profile;
use crate::store::ScopeChange;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: Zeroizing<String>,
    #[serde(default)]
    scopes: Vec<String>,
    name: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
}

/// Profile claims to change (absent: unchanged; `null` or an empty
/// string: removed; `email_verified: null`: false), and the scopes (absent:
/// unchanged; `scopes`: these, in place of the old; or `add_scopes` and
/// `remove_scopes`, against the scopes as they are when the change is
/// written). A `null` never passes for "unchanged": an admin who sends
/// `"email": null` means to remove it, and was answered 204 with the
/// address kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileChange {
    #[serde(default, deserialize_with = "super::null_removes")]
    name: Option<String>,
    #[serde(default, deserialize_with = "super::null_removes")]
    email: Option<String>,
    #[serde(default, deserialize_with = "super::null_removes")]
    email_verified: Option<bool>,
    /// `null` is refused: "no scopes" is `[]`.
    #[serde(default, deserialize_with = "super::not_null")]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    add_scopes: Vec<String>,
    #[serde(default)]
    remove_scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    password: Zeroizing<String>,
}

/// Authorization: admin scope, or the read-only one.
pub async fn list(
    State(app): AppState,
    admin: Admin,
    uri: Uri,
    Params(page): Params<Page>,
) -> AdminResult {
    paged(&uri, admin.service(&app).users(&page).await?)
}

/// Authorization: admin scope.
pub async fn add(State(app): AppState, admin: Admin, Body(new): Body<NewUser>) -> AdminResult {
    let user = admin
        .service(&app)
        .add_user(
            &new.username,
            new.password,
            &new.scopes,
            &Profile {
                name: new.name,
                email: new.email,
                email_verified: new.email_verified,
            },
        )
        .await?;
    let username = user.username.clone();
    Ok(super::created(
        "/admin/users",
        &username,
        Json(user).into_response(),
    ))
}

/// Authorization: admin scope.
pub async fn set_profile(
    State(app): AppState,
    admin: Admin,
    Named(username): Named,
    Body(change): Body<ProfileChange>,
) -> AdminResult {
    let profile = Profile {
        name: change.name,
        email: change.email,
        email_verified: change.email_verified,
    };
    let service = admin.service(&app);
    // Scopes that cannot be read change nothing, the profile included.
    let scopes = match (
        &change.scopes,
        change.add_scopes.is_empty() && change.remove_scopes.is_empty(),
    ) {
        (None, true) => None,
        (all, _) => Some(ScopeChange::of_lists(
            all.as_deref(),
            &change.add_scopes,
            &change.remove_scopes,
        )?),
    };
    service
        .change_user(&username, &profile, scopes.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope, or the read-only one. The user, as listed: what a change that
/// keeps the rest (a scope added) starts from.
pub async fn get(State(app): AppState, admin: Admin, Named(username): Named) -> AdminResult {
    Ok(Json(admin.service(&app).user(&username).await?).into_response())
}

/// Authorization: admin scope.
pub async fn delete(State(app): AppState, admin: Admin, Named(username): Named) -> AdminResult {
    admin.service(&app).delete_user(&username).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope.
pub async fn disable(State(app): AppState, admin: Admin, Named(username): Named) -> AdminResult {
    admin.service(&app).set_disabled(&username, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope.
pub async fn enable(State(app): AppState, admin: Admin, Named(username): Named) -> AdminResult {
    admin.service(&app).set_disabled(&username, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope.
pub async fn passwd(
    State(app): AppState,
    admin: Admin,
    Named(username): Named,
    Body(new): Body<NewPassword>,
) -> AdminResult {
    admin
        .service(&app)
        .change_password(&username, new.password)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
