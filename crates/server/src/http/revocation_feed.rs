//! `GET /oauth2/revocations`: the revocation feed, for resource servers
//! (`tessera-guard`'s `RevocationFeed` subscribes to it).
//!
//! Server-sent events (the WHATWG `EventSource` format), chosen over
//! long-polling because the format already has what the feed needs: every
//! event carries an `id`, a subscriber that reconnects sends the last one
//! back as `Last-Event-ID`, and proxies and HTTP clients in every language
//! handle a long `text/event-stream` response; one connection carries any
//! number of events without a request each.
//!
//! What a subscriber gets, in order: a `reset` event when its cursor is
//! not a place in this log (it must forget what it holds and take the
//! whole log), every live revocation after its cursor (a `revocation`
//! event each, `id` the cursor, `data` the JSON of
//! `tessera_guard::revocation::Revocation`), `ready`, then new
//! revocations as they commit at any instance, and a `heartbeat` after
//! 10 s of quiet so both ends notice a dead connection. The stream ends
//! when the access token it was opened with expires or stops being good
//! (revoked, its client's secret rotated: looked at at every change of the
//! log, before anything new is sent; its client deleted: every 10 s), or
//! when the server
//! shuts down; the subscriber reconnects (with a new token, or to another
//! instance).
//!
//! A cursor is not a place in this log when it is ahead of it (the
//! database was restored from a backup), or when the subscriber names
//! the event it stands on (`Tessera-Last-Event-Digest` beside
//! `Last-Event-ID`, see `tessera_guard::revocation::LAST_EVENT_DIGEST`)
//! and the log holds another event at that id (a restored log that has
//! grown back past the cursor) or does not know that id (an instance
//! started since, or an event long expired: the digests of the newest
//! 4,096 expired events are kept; starting over costs only the live
//! events). The digest covers the event's `data` as sent, so a server
//! version that writes events differently starts such subscribers over
//! once.
//!
//! Authorization: an access token of this server with the
//! `revocations:read` scope (a client credential given that scope).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tessera_guard::revocation::LAST_EVENT_DIGEST;
use tessera_guard::{AccessToken, GuardLayer, Rejection, RequireScope, FEED_SCOPE};

use super::{App, OAuthError};
use crate::store::revocation::Revocations;

/// Quiet this long, the stream sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long this instance's copy of the log may go without a sync before
/// it stops vouching for it (the follower syncs every half second).
const STALE_AFTER: Duration = Duration::from_secs(5);

/// How often an idle stream looks at that.
const STALE_CHECK: Duration = Duration::from_secs(1);

/// How often a stream looks again at the token it was opened with when
/// the log has not changed (a change is looked at at once).
const RECHECK: Duration = Duration::from_secs(10);

/// Events taken from the log at a time.
const BATCH: usize = 1000;

/// Streams one client may hold open at one instance at once. Each of a
/// resource server's replicas holds one; without a bound, one credential
/// could hold every connection the listener allows, and make every
/// change of the log cost as many checks of its token.
pub const STREAMS_PER_CLIENT: usize = 64;

/// The streams open at this instance, by client.
#[derive(Debug, Default)]
pub struct OpenStreams(Arc<Mutex<HashMap<String, usize>>>);

impl OpenStreams {
    /// A place for one more stream of `client_id`, if it has fewer than
    /// [`STREAMS_PER_CLIENT`] open; given back when dropped.
    fn take(&self, client_id: &str) -> Option<StreamPlace> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(client_id.to_owned()).or_default();
        if *count >= STREAMS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(StreamPlace {
            open: Arc::clone(&self.0),
            client_id: client_id.to_owned(),
        })
    }
}

/// One open stream's place, held as long as the stream is.
struct StreamPlace {
    open: Arc<Mutex<HashMap<String, usize>>>,
    client_id: String,
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.client_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client_id);
            }
        }
    }
}

/// The route, behind the guard and the feed's scope.
pub fn routes(app: &App) -> Router<Arc<App>> {
    match super::bearer::own_guard(app, super::bearer::Audience::Any) {
        Ok(guard) => Router::new()
            .route("/oauth2/revocations", get(feed))
            .layer(RequireScope::any([FEED_SCOPE]))
            .layer(GuardLayer::new(guard)),
        Err(e) => {
            tracing::error!(error = %e, "revocation feed disabled: its guard could not be built");
            Router::new()
        }
    }
}

async fn feed(State(app): State<Arc<App>>, headers: HeaderMap, token: AccessToken) -> Response {
    // Stopping (through `http.shutdown_delay`): a stream would end at
    // once; the guard is told to go elsewhere, before a database read.
    if *app.stopping.borrow() {
        return OAuthError::temporarily_unavailable(&crate::Error::Unavailable(
            "this instance is shutting down".into(),
        ))
        .into_response();
    }
    match super::bearer::still_standing(&app, &token).await {
        Ok(true) => {}
        Ok(false) => {
            return Rejection::InvalidToken {
                description: "the access token is invalid",
            }
            .into_response()
        }
        Err(e) => return OAuthError::from(e).into_response(),
    }
    let cursor = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => 0,
        Some(Ok(text)) => match text.trim().parse::<i64>() {
            Ok(id) if id >= 0 => id,
            _ => {
                return OAuthError::invalid_request("Last-Event-ID is not an event id")
                    .into_response()
            }
        },
        Some(Err(_)) => {
            return OAuthError::invalid_request("Last-Event-ID is not an event id").into_response()
        }
    };
    let now = crate::store::now();
    let left = token
        .expires_at()
        .map_or(0, |exp| exp.seconds().saturating_sub(now));
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0));
    let revocations = Arc::clone(app.access.revoked());
    // An instance whose copy of the log has not been read through lately
    // (its database unreachable) reads it now or answers 503, so the
    // subscriber goes to another instance instead of trusting this one.
    if !revocations.synced_within(STALE_AFTER) {
        if let Err(e) = revocations.sync(&app.db).await {
            return OAuthError::from(e).into_response();
        }
    }
    if cursor > revocations.latest() {
        // The subscriber saw more than this instance holds: another
        // instance's newest events, not yet read here, or a restored
        // backup. Read the log before telling it to start over.
        if let Err(e) = revocations.sync(&app.db).await {
            return OAuthError::from(e).into_response();
        }
    }
    // The subscriber names the event its cursor stands on. Another event
    // at that id (a restored log that has grown back past it), or an id
    // this instance does not know, and it starts over: its cursor no
    // longer says what it has seen.
    let start_over = match headers.get(LAST_EVENT_DIGEST).map(|v| v.to_str()) {
        Some(Ok(digest)) if cursor > 0 && cursor <= revocations.latest() => {
            !revocations.holds(cursor, digest.trim())
        }
        Some(Err(_)) => {
            return OAuthError::invalid_request("the last event's digest is not text")
                .into_response()
        }
        _ => false,
    };
    let Some(place) = app.feed_streams.take(token.client_id().unwrap_or_default()) else {
        return OAuthError::too_many_streams(RECHECK.as_secs()).into_response();
    };
    let changes = revocations.subscribe();
    let stopping = app.stopping.subscribe();
    let stream = futures_util::stream::unfold(
        Subscription {
            _place: place,
            app,
            token,
            revocations,
            changes,
            stopping,
            cursor: if start_over { 0 } else { cursor },
            start_over,
            pending: VecDeque::new(),
            backlog_sent: false,
            first: true,
            deadline,
            log_changed: false,
            recheck_at: tokio::time::Instant::now() + RECHECK,
        },
        |mut s| async move {
            let event = s.next().await?;
            Some((Ok::<_, Infallible>(event), s))
        },
    );
    metrics::counter!("tessera_revocation_feed_connections_total").increment(1);
    let mut response = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(HEARTBEAT)
                .event(Event::default().event("heartbeat").data("{}")),
        )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx buffers responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One subscriber's place in the log.
struct Subscription {
    /// Its client's count of open streams, until it ends.
    _place: StreamPlace,
    app: Arc<App>,
    /// The token the stream was opened with.
    token: AccessToken,
    revocations: Arc<Revocations>,
    changes: tokio::sync::watch::Receiver<i64>,
    stopping: tokio::sync::watch::Receiver<bool>,
    cursor: i64,
    /// The subscriber's cursor names an event this log does not hold:
    /// `reset` first, then the whole log.
    start_over: bool,
    pending: VecDeque<Event>,
    backlog_sent: bool,
    first: bool,
    deadline: tokio::time::Instant,
    /// The log changed since the token was last looked at.
    log_changed: bool,
    /// When to look at the token again, the log unchanged.
    recheck_at: tokio::time::Instant,
}

impl Subscription {
    /// The next event to send; `None` ends the stream (the token expired
    /// or was withdrawn, or the server is shutting down).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if tokio::time::Instant::now() >= self.deadline || *self.stopping.borrow() {
                return None;
            }
            // Past the backlog (checked when the stream opened), the token
            // must still be good before anything new is read for it: at
            // every change of the log (a rotated secret appends the very cut
            // that ends it; in memory) and every RECHECK besides (a client
            // deleted, a user disabled: the client cache, the database). A
            // check that could not be made does not end the stream: an
            // unreachable database ends it by the staleness bound.
            // (A change while the stream was not polled counts too.)
            if self.changes.has_changed().unwrap_or(true) {
                self.log_changed = true;
            }
            if self.backlog_sent
                && (self.log_changed || tokio::time::Instant::now() >= self.recheck_at)
            {
                self.log_changed = false;
                self.recheck_at = tokio::time::Instant::now() + RECHECK;
                if let Ok(false) = super::bearer::still_standing(&self.app, &self.token).await {
                    return None;
                }
            }
            // Marks what is there now as seen, so a change after the read
            // below wakes the wait.
            self.changes.borrow_and_update();
            let since = self.revocations.since(self.cursor, BATCH);
            if (since.reset || self.start_over) && self.first {
                self.pending
                    .push_back(Event::default().event("reset").data("{}"));
                self.cursor = 0;
            }
            self.first = false;
            let full = since.events.len() == BATCH;
            for logged in since.events {
                self.cursor = logged.id;
                self.pending.push_back(
                    Event::default()
                        .event("revocation")
                        .id(logged.id.to_string())
                        .data(&*logged.json),
                );
            }
            if full {
                continue;
            }
            if !self.backlog_sent {
                self.backlog_sent = true;
                self.pending.push_back(
                    Event::default()
                        .event("ready")
                        .data(format!("{{\"cursor\":{}}}", self.cursor)),
                );
                continue;
            }
            if !self.pending.is_empty() {
                continue;
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    changed.ok()?;
                    self.log_changed = true;
                }
                () = tokio::time::sleep_until(self.deadline) => return None,
                _ = self.stopping.changed() => return None,
                // The stream ends once this instance's copy of the log goes
                // unread past the bound: its heartbeats would otherwise
                // tell the subscriber it is current while revocations
                // made through other instances do not arrive.
                () = tokio::time::sleep(STALE_CHECK) => {
                    if !self.revocations.synced_within(STALE_AFTER) {
                        return None;
                    }
                }
            }
        }
    }
}
