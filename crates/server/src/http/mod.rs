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
mod client_auth;
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

use crate::access::AccessTokens;
use crate::config::Config;
use crate::db::Db;
use crate::keys::Keys;
use crate::logins::LoginLimiter;
use crate::password::Passwords;
use crate::store::audit::AuditQueue;
use crate::store::clients::ClientCache;
use crate::store::refresh::RefreshPolicy;
use crate::store::revocation::RevokedTokens;

pub use error::OAuthError;

/// Largest request body accepted (forms are small).
const BODY_LIMIT: usize = 16 * 1024;

/// Everything a handler needs.
#[derive(Debug)]
pub struct App {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub db: Db,
    /// The signing keys.
    pub keys: Arc<Keys>,
    /// The password hasher.
    pub passwords: Passwords,
    /// The batched audit trail.
    pub audit: AuditQueue,
    /// Failed-login limits.
    pub logins: LoginLimiter,
    /// Refresh-token lifetimes.
    pub refresh: RefreshPolicy,
    /// Recently used clients.
    pub clients: ClientCache,
    /// Access tokens: minting, verifying, revocation.
    pub access: AccessTokens,
    /// The RFC 8414 metadata document, made once.
    metadata: String,
}

impl App {
    /// Assemble the application state.
    pub fn new(
        config: Config,
        db: Db,
        keys: Arc<Keys>,
        passwords: Passwords,
        audit: AuditQueue,
    ) -> App {
        let refresh = RefreshPolicy {
            ttl: crate::store::secs(config.refresh_ttl),
            max_lifetime: crate::store::secs(config.session_max),
            grace: crate::store::secs(config.refresh_grace),
        };
        App {
            logins: LoginLimiter::new(config.max_login_failures, config.login_window),
            clients: ClientCache::new(config.client_cache_ttl),
            access: AccessTokens::new(
                config.issuer.clone(),
                Arc::clone(&keys),
                Arc::new(RevokedTokens::default()),
            ),
            metadata: discovery::metadata(&config),
            config,
            db,
            keys,
            passwords,
            audit,
            refresh,
        }
    }
}

impl App {
    /// What the password grant needs.
    pub(crate) fn login(&self) -> crate::grant::password::Login<'_> {
        crate::grant::password::Login {
            db: &self.db,
            passwords: &self.passwords,
            logins: &self.logins,
            audit: &self.audit,
            refresh: &self.refresh,
        }
    }

    /// What the refresh grant needs.
    pub(crate) fn rotate<'a>(
        &'a self,
        master: &'a Arc<crate::secret::MasterKey>,
    ) -> crate::grant::refresh::Rotate<'a> {
        crate::grant::refresh::Rotate {
            db: &self.db,
            policy: &self.refresh,
            master,
            audit: &self.audit,
        }
    }
}

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
        .merge(admin::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(edge::check))
        .layer(axum::middleware::from_fn(self::metrics::track))
        .with_state(app)
}
