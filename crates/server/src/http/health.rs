//! `GET /healthz` (the process answers) and `GET /readyz` (the database
//! answers).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::App;

/// Authorization: none.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// The longest `/readyz` waits for the database before it says 503.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Authorization: none.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, app.db.ping()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer within a second");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}
