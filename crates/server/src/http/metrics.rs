//! `GET /metrics` (Prometheus), the recorder behind it, and the
//! middleware that counts requests.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::error::FailureReason;
use super::App;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("tessera_http_request_duration_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets when no one
/// scrapes `/metrics` (a scrape folds them too).
pub const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Fold recorded samples into the histograms every [`METRICS_UPKEEP`]. The
/// recorder keeps each sample until then: without this, a server no one
/// scrapes would grow by every request it times.
/// Without a recorder there is nothing to fold: it waits for ever (it runs
/// as long as the server, and ending would read as a failure).
pub async fn upkeep() {
    let Some(handle) = prometheus() else {
        return std::future::pending().await;
    };
    let mut ticker = tokio::time::interval(METRICS_UPKEEP);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        handle.run_upkeep();
    }
}

/// Authorization: none (no secrets in metrics).
///
/// Two gauges are taken as the page is made: `tessera_audit_backlog_events`
/// (events waiting to be written: past `audit::MAX_BACKLOG` no token is
/// issued) and `tessera_revocation_log_age_seconds` (since this instance's
/// copy of the log was last read through: under a second while it
/// follows; past it, token requests read it themselves, or are refused).
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    metrics::gauge!("tessera_audit_backlog_events").set(app.audit.pending() as f64);
    if let Some(age) = app.access.revoked().synced().ago() {
        metrics::gauge!("tessera_revocation_log_age_seconds").set(age.as_secs_f64());
    }
    match prometheus() {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n").into_response(),
    }
}

/// The label of a route: its pattern, made once and shared after (a
/// clone of an `Arc<str>` per request rather than a new string). The
/// table holds one entry per route of the router.
fn route_label(path: Option<&MatchedPath>) -> metrics::SharedString {
    static LABELS: OnceLock<RwLock<HashMap<String, Arc<str>>>> = OnceLock::new();
    let Some(path) = path else {
        return metrics::SharedString::const_str("unmatched");
    };
    let labels = LABELS.get_or_init(RwLock::default);
    if let Some(label) = labels
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(path.as_str())
    {
        return Arc::clone(label).into();
    }
    let label: Arc<str> = Arc::from(path.as_str());
    labels
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.as_str().to_owned(), Arc::clone(&label));
    label.into()
}

/// Count every request and its latency, by route and status, and failed
/// token requests by OAuth error code. The route label is the matched
/// route's pattern (`/admin/users/{username}`, never the path itself), so
/// the router's table is the one list of labels and their number stays
/// bounded.
///
/// A request whose handler never finished (the listener's request timeout
/// answered it, or its client went away) is counted too, with the status
/// `cancelled`, and its time recorded: before, the slowest requests of an
/// incident were the ones no dashboard saw.
pub async fn track(request: Request, next: Next) -> Response {
    let mut unfinished = Unfinished {
        started: Instant::now(),
        route: Some(route_label(request.extensions().get::<MatchedPath>())),
    };
    let response = next.run(request).await;
    let route = unfinished
        .route
        .take()
        .unwrap_or_else(|| metrics::SharedString::const_str("unmatched"));
    let status = response.status().as_u16().to_string();
    if let Some(FailureReason(code)) = response.extensions().get::<FailureReason>() {
        metrics::counter!("tessera_request_failures_total", "route" => route.clone(), "error" => *code)
            .increment(1);
    }
    metrics::counter!("tessera_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("tessera_http_request_duration_seconds", "route" => route)
        .record(unfinished.started.elapsed().as_secs_f64());
    response
}

/// A request being handled; dropped with its route still in it, it was
/// never answered by its handler.
struct Unfinished {
    started: Instant,
    route: Option<metrics::SharedString>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(route) = self.route.take() {
            metrics::counter!("tessera_http_requests_total", "route" => route.clone(), "status" => "cancelled")
                .increment(1);
            metrics::histogram!("tessera_http_request_duration_seconds", "route" => route)
                .record(self.started.elapsed().as_secs_f64());
        }
    }
}
