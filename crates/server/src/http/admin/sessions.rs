//! `/admin/sessions`: sign-in sessions, listed and ended like a logout.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{paged, Admin, AdminResult, AppState, Named, Params};
use crate::admin::Page;
use crate::store::sessions::Kept;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    user: Option<String>,
    /// Also the sessions kept only by their refresh tokens.
    offline: Option<bool>,
    limit: Option<i64>,
    after: Option<String>,
}

/// Authorization: admin scope, or the read-only one.
pub async fn list(
    State(app): AppState,
    admin: Admin,
    uri: Uri,
    Params(filter): Params<Filter>,
) -> AdminResult {
    let page = Page {
        limit: filter.limit,
        after: filter.after,
    };
    let kept = if filter.offline == Some(true) {
        Kept::WithOffline
    } else {
        Kept::SignedIn
    };
    let listed = admin
        .service(&app)
        .sessions(filter.user.as_deref(), kept, &page)
        .await?;
    paged(&uri, listed)
}

/// Authorization: admin scope.
pub async fn end(State(app): AppState, admin: Admin, Named(sid): Named) -> AdminResult {
    admin.service(&app).end_session(&sid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
