//! `/admin/audit`: the audit events, newest first.

use axum::extract::State;
use axum::http::Uri;
use serde::Deserialize;

use super::{paged, Admin, AdminResult, AppState, Params};
use crate::admin::Page;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    event: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

/// Authorization: admin scope, or the read-only one.
pub async fn list(
    State(app): AppState,
    admin: Admin,
    uri: Uri,
    Params(q): Params<AuditQuery>,
) -> AdminResult {
    let page = Page {
        limit: q.limit,
        after: q.after,
    };
    let listed = admin.service(&app).audit(q.event.as_deref(), &page).await?;
    paged(&uri, listed)
}
