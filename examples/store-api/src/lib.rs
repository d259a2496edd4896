//! An example API protected by tessera-guard: stores and the items in
//! them, on SQLite. Reads need `items:read`, writes `items:write`, deletes
//! `store:admin`. Scopes say what kind of thing a caller may do; a store
//! belongs to whoever made it (the token's `sub`), and only they (or
//! `store:admin`) change its items: checking the scope alone would let
//! anyone with `items:write` change everyone's (`stores::may_change`).
//! Stores made before owners were recorded (migration 0002) have none:
//! only `store:admin` changes their items.
//!
//! Run it next to `tessera serve` (see the README's "Example API"):
//! `cargo run -p store-api -- --issuer http://127.0.0.1:8080`.

mod body;
mod items;
mod openapi;
mod page;
mod stores;

pub use page::{DEFAULT_LIMIT, MAX_LIMIT};

use std::str::FromStr;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
use tessera_guard::{Guard, GuardLayer, RequireScope};

/// Scope for reads.
pub const READ: &str = "items:read";
/// Scope for creating and changing.
pub const WRITE: &str = "items:write";
/// Scope for deleting.
pub const ADMIN: &str = "store:admin";

/// Open (creating) the database and apply the migrations.
pub async fn open_db(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true);
    let pool = SqlitePool::connect_with(options).await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// The API: every route behind `guard`, each with its scope.
pub fn app(pool: SqlitePool, guard: Guard) -> Router {
    let read = || RequireScope::any([READ]);
    let write = || RequireScope::any([WRITE]);
    let admin = || RequireScope::any([ADMIN]);
    let api = Router::new()
        .route(
            "/stores",
            get(stores::list)
                .layer(read())
                .merge(axum::routing::post(stores::create).layer(write())),
        )
        .route(
            "/stores/{id}",
            get(stores::get)
                .layer(read())
                .merge(axum::routing::delete(stores::delete).layer(admin())),
        )
        .route(
            "/items",
            get(items::list)
                .layer(read())
                .merge(axum::routing::post(items::create).layer(write())),
        )
        .route(
            "/items/{id}",
            get(items::get)
                .layer(read())
                .merge(axum::routing::put(items::update).layer(write()))
                .merge(axum::routing::delete(items::delete).layer(admin())),
        )
        .layer(GuardLayer::new(guard))
        .with_state(pool);
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::page))
        .merge(api)
        // The API's error shape for routes and methods it does not have,
        // too (axum's own answers have empty bodies).
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "not_found", "no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take this method".into(),
            )
        })
}

/// A path's numeric id; a 400 in the API's error shape when it is not one
/// (axum's own rejection is plain text).
pub(crate) struct Id(pub(crate) i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Id, ApiError> {
        Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Id(id))
            .map_err(|e| ApiError::invalid_request(e.body_text()))
    }
}

/// Query parameters, likewise.
pub(crate) struct Params<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| Params(params))
            .map_err(|e| ApiError::invalid_request(e.body_text()))
    }
}

/// `GET /healthz`: up, and where the revocation feed stands (`current`
/// false once it lost the feed; `stale_for_secs` since when); 503 while
/// the guard refuses every token for want of the feed (`refusing`), or
/// while the database does not answer within a second.
pub fn health<S: Clone + Send + Sync + 'static>(guard: Guard, pool: SqlitePool) -> Router<S> {
    Router::new().route(
        "/healthz",
        get(move || {
            let feed = guard.revocations().map(|f| f.status());
            let pool = pool.clone();
            async move {
                let answered = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    sqlx::query("SELECT 1").execute(&pool),
                )
                .await;
                if !matches!(answered, Ok(Ok(_))) {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({ "status": "database unavailable" })),
                    );
                }
                // Refusing every token (the feed's policy, or a feed never
                // read): not healthy, so a balancer sends elsewhere.
                let refusing = feed.as_ref().is_some_and(|s| s.refusing);
                let feed = feed.map(|s| {
                    serde_json::json!({
                        "current": s.current,
                        "stale_for_secs": s.stale_for.map(|d| d.as_secs_f64()),
                        "last_event_id": s.last_event_id,
                        "revocations": s.revocations,
                        "refusing": s.refusing,
                        "unreadable_events": s.unreadable_events,
                    })
                });
                let (status, word) = match refusing {
                    true => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "refusing"),
                    false => (axum::http::StatusCode::OK, "ok"),
                };
                (
                    status,
                    axum::Json(serde_json::json!({ "status": word, "revocation_feed": feed })),
                )
            }
        }),
    )
}

/// An API error: `{"error": …, "message": …}` with its status.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    fn invalid_request(message: String) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn not_found(what: &str, id: i64) -> ApiError {
        ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} {id}"),
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => ApiError(
                StatusCode::CONFLICT,
                "conflict",
                "a store with this name exists".into(),
            ),
            // An item's store deleted between the request's check and its
            // write.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "store_id: no such store".into(),
            ),
            _ => {
                tracing::error!(error = %e, "database error");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the database failed".into(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1, "message": self.2 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;
