//! The application state: every part of the server, assembled once at
//! start and shared by the handlers. It sits above the domain (`grant`,
//! `access`, `store`, `keys`) and below `http`: handlers take the state,
//! and hand each domain call only the parts it names.

use std::sync::Arc;

use crate::access::AccessTokens;
use crate::config::Config;
use crate::db::Db;
use crate::grant::client_auth::Verifier;
use crate::grant::password::Login;
use crate::grant::refresh::Rotate;
use crate::keys::Keys;
use crate::logins::LoginLimiter;
use crate::password::Passwords;
use crate::revoke_limit::RevokeLimit;
use crate::store::audit::AuditQueue;
use crate::store::clients::ClientCache;
use crate::store::refresh::RefreshPolicy;
use crate::store::revocation::Revocations;

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
    /// Access-token revocations allowed per client.
    pub revoke_limit: RevokeLimit,
    /// Authorization codes (and refusals) allowed per user.
    pub code_limit: crate::code_limit::CodeLimit,
    /// Refresh rotations per client and subject.
    pub refresh_limit: crate::refresh_limit::RefreshLimit,
    /// Refresh-token lifetimes.
    pub refresh: RefreshPolicy,
    /// Recently used clients.
    pub clients: Arc<ClientCache>,
    /// Access tokens: minting, verifying, revocation.
    pub access: AccessTokens,
    /// Authorization codes, committed in groups.
    pub codes: crate::store::codes::CodeWriter,
    /// Becomes `true` when the server begins to shut down: `/readyz` says
    /// 503, and long responses (the revocation feed's streams) end, so the
    /// shutdown need not wait for them.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The RFC 8414 metadata document, made on first use.
    pub(crate) metadata: std::sync::OnceLock<String>,
    /// The revocation feed's streams open here, by client.
    pub(crate) feed_streams: crate::http::revocation_feed::OpenStreams,
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
        // A client cut off anywhere (deleted, secret rotated) leaves the
        // cache as soon as any sync here reads the event.
        let clients = Arc::new(ClientCache::new(config.client_cache_ttl));
        let revocations = Arc::new(Revocations::default());
        let cache = Arc::clone(&clients);
        revocations.when_client_cut(move |client_id| cache.forget(client_id));
        // A key revoked anywhere (it leaked): the ring is read again at
        // once, so that this instance stops signing with it.
        let ring = Arc::clone(&keys);
        revocations.when_key_revoked(move || {
            ring.heard_of_revocation();
            let ring = Arc::clone(&ring);
            // The reading the waiting token requests share
            // (`Keys::caught_up`): one for all of them.
            tokio::spawn(async move {
                if let Err(e) = ring.caught_up().await {
                    tracing::error!(error = %e, "a signing key was revoked, but the keys could not be read again");
                }
            });
        });
        clients.follow(revocations.synced());
        App {
            logins: LoginLimiter::new(config.max_login_failures, config.login_window),
            revoke_limit: RevokeLimit::new(config.client_revocations),
            code_limit: crate::code_limit::CodeLimit::new(config.codes_per_user),
            refresh_limit: crate::refresh_limit::RefreshLimit::new(config.refreshes_per_minute),
            clients,
            access: AccessTokens::new(config.issuer.clone(), Arc::clone(&keys), revocations),
            metadata: std::sync::OnceLock::new(),
            feed_streams: crate::http::revocation_feed::OpenStreams::default(),
            codes: crate::store::codes::CodeWriter::start(db.clone()),
            stopping: tokio::sync::watch::channel(false).0,
            config,
            db,
            keys,
            passwords,
            audit,
            refresh,
        }
    }

    /// What authenticating a client needs.
    pub fn verifier(&self) -> Verifier<'_> {
        Verifier {
            db: &self.db,
            clients: &self.clients,
            issuer: &self.config.issuer,
            max_assertion_lifetime: self.config.max_assertion_lifetime,
            strict_audience: self.config.strict_assertion_audience,
        }
    }

    /// What the password grant needs.
    pub fn login(&self) -> Login<'_> {
        Login {
            db: &self.db,
            passwords: &self.passwords,
            logins: &self.logins,
            audit: &self.audit,
            refresh: &self.refresh,
        }
    }

    /// What the authorization code grant needs.
    pub fn exchange(&self) -> crate::grant::authorization_code::Exchange<'_> {
        crate::grant::authorization_code::Exchange {
            db: &self.db,
            refresh: &self.refresh,
            audit: &self.audit,
            revoked: self.access.revoked(),
            latest_access_expiry: crate::store::secs(self.config.max_access_ttl)
                .saturating_add(crate::store::secs(self.config.request_timeout)),
            codes: &self.codes,
            revoke_limit: &self.revoke_limit,
            keep: self.config.revocation_keep(),
        }
    }

    /// What delivering back-channel logouts needs.
    pub fn deliver(&self) -> crate::signin::backchannel::Deliver<'_> {
        crate::signin::backchannel::Deliver {
            db: &self.db,
            keys: &self.keys,
            clients: &self.clients,
            issuer: &self.config.issuer,
            audit: &self.audit,
        }
    }

    /// What the refresh grant needs.
    pub fn rotate(&self) -> Rotate<'_> {
        Rotate {
            db: &self.db,
            policy: &self.refresh,
            master: self.keys.master(),
            audit: &self.audit,
            limit: &self.refresh_limit,
            keep: self.config.revocation_keep(),
            revoked: self.access.revoked(),
        }
    }
}
