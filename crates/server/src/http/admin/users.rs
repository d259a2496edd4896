//! `/admin/users`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{Admin, AdminResult, AppState, Body};
use crate::store::{users, Scopes};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: Zeroizing<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    password: Zeroizing<String>,
}

/// Authorization: admin scope.
pub async fn list(State(app): AppState, _admin: Admin) -> AdminResult {
    Ok(Json(users::list(&app.db).await?).into_response())
}

/// Authorization: admin scope.
pub async fn add(State(app): AppState, admin: Admin, Body(new): Body<NewUser>) -> AdminResult {
    let scopes = Scopes::from_list(&new.scopes)?;
    let hash = app.passwords.hash(new.password).await?;
    let user = users::add(&app.db, &new.username, &hash, &scopes).await?;
    app.audit.push(admin.event("user_added", &new.username));
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// Authorization: admin scope.
pub async fn delete(
    State(app): AppState,
    admin: Admin,
    Path(username): Path<String>,
) -> AdminResult {
    users::delete(&app.db, &username).await?;
    app.audit.push(admin.event("user_deleted", &username));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope.
pub async fn disable(state: AppState, admin: Admin, Path(username): Path<String>) -> AdminResult {
    set_disabled(state, admin, username, true).await
}

/// Authorization: admin scope.
pub async fn enable(state: AppState, admin: Admin, Path(username): Path<String>) -> AdminResult {
    set_disabled(state, admin, username, false).await
}

async fn set_disabled(
    State(app): AppState,
    admin: Admin,
    username: String,
    disabled: bool,
) -> AdminResult {
    users::set_disabled(&app.db, &username, disabled).await?;
    let event = if disabled {
        "user_disabled"
    } else {
        "user_enabled"
    };
    app.audit.push(admin.event(event, &username));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Authorization: admin scope.
pub async fn passwd(
    State(app): AppState,
    admin: Admin,
    Path(username): Path<String>,
    Body(new): Body<NewPassword>,
) -> AdminResult {
    if users::find(&app.db, &username).await?.is_none() {
        return Err(crate::Error::NotFound {
            kind: "user",
            name: username,
        }
        .into());
    }
    let hash = app.passwords.hash(new.password).await?;
    users::set_password(&app.db, &username, &hash).await?;
    app.audit
        .push(admin.event("user_password_changed", &username));
    Ok(StatusCode::NO_CONTENT.into_response())
}
