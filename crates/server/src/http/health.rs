//! `GET /healthz` (the process answers) and `GET /readyz` (this instance
//! can issue tokens: the database answers, its copy of the revocation log
//! is current, its audit trail is being written).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::log_limit::PerCaller;
use super::App;

/// Authorization: none.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// The longest `/readyz` waits for the database before it says 503.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Why `/readyz` said 503, in the log at most every 10 s for each reason
/// (with how many were left out): anyone can probe it, and a load
/// balancer does every few seconds from each of its nodes.
static NOT_READY_SAID: PerCaller = PerCaller::new(Duration::from_secs(10));

/// Authorization: none. 503, with the reason in one line, once the server
/// is stopping (through `http.shutdown_delay`, while it still serves), and
/// whenever the token endpoint would refuse for this instance's own state:
/// - the database does not answer within a second;
/// - its copy of the revocation log cannot be read through (the database
///   stopped answering that reading, or the log holds an event of a kind
///   this version does not know: an older instance beside newer ones,
///   which must be taken out of service until it is upgraded);
/// - its signing keys were not read lately, or not since a key was
///   revoked ([`crate::keys::Keys::current`]: a row this version cannot
///   open, say, from a newer version beside it);
/// - more audit events wait in memory than it keeps
///   ([`crate::store::audit::MAX_BACKLOG`]).
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let not_ready = |reason: &'static str| {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
    };
    if *app.stopping.borrow() {
        return not_ready("shutting down");
    }
    // One second for both, within a probe's usual timeout (Kubernetes'
    // default is one second).
    let checked = tokio::time::timeout(READY_TIMEOUT, async {
        if let Err(e) = app.db.ping().await {
            if let Some(left_out) = NOT_READY_SAID.admit() {
                tracing::warn!(error = %e, left_out, "not ready");
            }
            return Err("database unreachable");
        }
        // Read through when the follower has not lately; a reading
        // dropped by the timeout leaves what it applied applied.
        if let Err(e) = app.access.revoked().current(&app.db).await {
            if let Some(left_out) = NOT_READY_SAID.admit() {
                tracing::warn!(
                    error = %e,
                    left_out,
                    "not ready: the revocation log cannot be read through"
                );
            }
            return Err("revocation log not current");
        }
        Ok(())
    })
    .await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return not_ready(reason),
        Err(_) => {
            if let Some(left_out) = NOT_READY_SAID.admit() {
                tracing::warn!(
                    left_out,
                    "not ready: the database did not answer within a second"
                );
            }
            return not_ready("database unreachable");
        }
    }
    if let Err(reason) = app.keys.current() {
        if let Some(left_out) = NOT_READY_SAID.admit() {
            tracing::warn!(
                reason,
                left_out,
                "not ready: the signing keys are not current"
            );
        }
        return not_ready("signing keys not current");
    }
    if !app.audit.accepting() {
        if let Some(left_out) = NOT_READY_SAID.admit() {
            tracing::warn!(left_out, "not ready: the audit trail is not being written");
        }
        return not_ready("audit trail not being written");
    }
    "ready\n".into_response()
}
