//! `/admin/audit`: the newest audit events.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::{Admin, AdminResult, AppState, Params};
use crate::store::audit;

#[derive(Deserialize)]
pub struct AuditQuery {
    event: Option<String>,
    limit: Option<i64>,
}

/// Authorization: admin scope.
pub async fn list(
    State(app): AppState,
    _admin: Admin,
    Params(q): Params<AuditQuery>,
) -> AdminResult {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(audit::recent(&app.db, q.event.as_deref(), limit).await?).into_response())
}
