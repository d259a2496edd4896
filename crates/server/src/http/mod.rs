//! The HTTP API, one file per resource.
//!
//! | route | file | who may call it |
//! |---|---|---|
//! | `POST /oauth2/token` | `token.rs` | any registered client |
//! | `POST /oauth2/introspect` | `introspect.rs` | confidential clients |
//! | `POST /oauth2/revoke` | `revoke.rs` | the client the token was issued to |
//! | `GET /.well-known/*` | `discovery.rs` | anyone |
//! | `GET /healthz`, `/readyz` | `health.rs` | anyone |
//! | `GET /metrics` | `metrics.rs` | anyone |
//! | `/admin/...` | `admin/` | access tokens with the `tessera:admin` scope |

pub mod admin;
mod discovery;
mod edge;
mod error;
mod form;
mod health;
mod introspect;
mod metrics;
mod revoke;
mod token;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub(crate) use self::metrics::upkeep as metrics_upkeep;

use crate::app::App;
pub use error::OAuthError;

/// Largest request body accepted (forms are small).
const BODY_LIMIT: usize = 16 * 1024;

/// The server's routes, with body limits and metrics.
pub fn router(app: Arc<App>) -> Router {
    // Install the recorder before the first request counts anything.
    self::metrics::prometheus();
    Router::new()
        .route("/oauth2/token", post(token::token))
        .route("/oauth2/introspect", post(introspect::introspect))
        .route("/oauth2/revoke", post(revoke::revoke))
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::server_metadata),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery::server_metadata),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(self::metrics::metrics))
        .merge(admin::routes(&app))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(edge::check))
        .layer(axum::middleware::from_fn(self::metrics::track))
        .with_state(app)
}
