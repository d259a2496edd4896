//! `/admin/keys` and `/admin/audit`.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AdminResult, AppState};
use crate::store::{audit, now};

/// Authorization: admin scope.
pub async fn list(State(app): AppState, _admin: Admin) -> AdminResult {
    let keys: Vec<_> = app
        .keys
        .list(now())
        .into_iter()
        .map(|(info, state)| {
            json!({
                "kid": info.kid, "alg": info.alg, "state": state, "generation": info.generation,
                "created_at": info.created_at, "activate_at": info.activate_at,
            })
        })
        .collect();
    Ok(Json(keys).into_response())
}

/// Authorization: admin scope.
pub async fn rotate(State(app): AppState, admin: Admin) -> AdminResult {
    let kid = app.keys.rotate().await?;
    app.audit.push(admin.event("key_rotation_started", &kid));
    let activate_at = now().saturating_add(crate::keys::secs(app.config.keys.announce));
    Ok(Json(json!({ "kid": kid, "activate_at": activate_at })).into_response())
}

#[derive(Deserialize)]
pub struct AuditQuery {
    event: Option<String>,
    limit: Option<i64>,
}

/// Authorization: admin scope.
pub async fn audit(
    State(app): AppState,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> AdminResult {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(audit::recent(&app.db, q.event.as_deref(), limit).await?).into_response())
}
