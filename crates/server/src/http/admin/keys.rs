//! `/admin/keys`: the signing keys, a rotation by hand, and the
//! revocation of a key that leaked.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{Admin, AdminResult, AppState, Named};
use crate::admin::listed_keys;
use crate::store::now;

/// Authorization: admin scope, or the read-only one. The keys as stored,
/// as `tessera keys list` reads them (behind a load balancer, one
/// instance's copy may not yet hold a key another one just made), and
/// those this instance found not to open marked `unreadable`.
pub async fn list(State(app): AppState, _admin: Admin) -> AdminResult {
    let stored = app.keys.stored(now()).await?;
    Ok(Json(listed_keys(stored)).into_response())
}

/// Authorization: admin scope.
pub async fn rotate(State(app): AppState, admin: Admin) -> AdminResult {
    let kids = admin.service(&app).rotate_keys(&app.keys).await?;
    // `kid`: the new access-token key; `kids`: one per algorithm. Its
    // activation as stored, not recomputed from a later clock.
    let kid = kids.first().cloned().unwrap_or_default();
    // Stored already: a failed reading leaves it out (null) rather than
    // answer an error for a rotation that was made.
    let activate_at = crate::keys::stored(&app.db, &app.config.keys, now())
        .await
        .ok()
        .and_then(|stored| stored.into_iter().find(|(info, _)| info.kid == kid))
        .map(|(info, _)| info.activate_at);
    Ok(Json(json!({ "kid": kid, "kids": kids, "activate_at": activate_at })).into_response())
}

/// Authorization: admin scope.
pub async fn revoke(State(app): AppState, admin: Admin, Named(kid): Named) -> AdminResult {
    let replaced_by = admin.service(&app).revoke_key(&app.keys, &kid).await?;
    Ok(Json(json!({ "revoked": kid, "replaced_by": replaced_by })).into_response())
}
