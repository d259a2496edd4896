//! `/admin/sessions`: sign-in sessions, listed and ended like a logout.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::{Admin, AdminResult, AppState, Named, Params};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    user: Option<String>,
    limit: Option<i64>,
}

/// Authorization: admin scope.
pub async fn list(
    State(app): AppState,
    admin: Admin,
    Params(filter): Params<Filter>,
) -> AdminResult {
    let listed = admin
        .service(&app)
        .sessions(filter.user.as_deref(), filter.limit.unwrap_or(100))
        .await?;
    Ok(Json(listed).into_response())
}

/// Authorization: admin scope.
pub async fn end(State(app): AppState, admin: Admin, Named(sid): Named) -> AdminResult {
    admin.service(&app).end_session(&sid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
