//! Opening the configured database and keys, and running the server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;
use crate::db::Db;
use crate::http::{metrics_upkeep, router};
use crate::keys::{self, Keys};
use crate::password::Passwords;
use crate::secret::{MasterKey, MasterKeySource};
use crate::store::audit::AuditQueue;
use crate::store::retention::{self, Retention};
use crate::store::{now, refresh, secs};
use crate::Error;

/// The configuration with its database connected (migrations applied) and
/// its signing keys loaded (the first one made on first start).
#[derive(Debug)]
pub struct Opened {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub db: Db,
    /// The signing keys.
    pub keys: Arc<Keys>,
}

/// Open what `config` names, creating the data directory, database,
/// master key and first signing key when they do not exist yet.
///
/// A master key is only ever created for a database that holds no sealed
/// keys; and before anything is written, the master key must open every
/// stored key ([`Keys::load`]). A start with a missing or wrong master key
/// fails with [`Error::MasterKey`] and leaves the database as it was.
pub async fn open(config: Config) -> Result<Opened, Error> {
    // Bad page templates or a missing logo fail the start, not a login.
    crate::http::pages::Pages::load(&config.pages)?;
    config.prepare_data_dir()?;
    let db = Db::connect(&config.database_url, config.max_connections).await?;
    let master = match MasterKey::load_existing(&config.master_key)? {
        Some(master) => master,
        None => {
            let sealed = keys::stored_count(&db).await?;
            let MasterKeySource::File(path) = &config.master_key else {
                return Err(Error::MasterKey("no master key".into()));
            };
            if sealed > 0 {
                db.close().await;
                return Err(Error::MasterKey(format!(
                    "{} does not exist, but the database holds {sealed} signing key(s) sealed \
                     under a master key; restore that file or set TESSERA_MASTER_KEY \
                     (a new master key is never made for sealed data)",
                    path.display()
                )));
            }
            if keys::tied_to_a_master_key(&db).await? {
                db.close().await;
                return Err(Error::MasterKey(format!(
                    "{} does not exist, but the database is tied to a master key (a start set \
                     it up and stored no key yet); restore that file or set TESSERA_MASTER_KEY",
                    path.display()
                )));
            }
            MasterKey::create(path)?
        }
    };
    // A key verifies tokens for as long as the longest lifetime an earlier
    // start allowed, not only this configuration's: lowering
    // max_access_ttl does not cut short the tokens already out.
    let mut policy = config.keys.clone();
    let stored = match crate::store::revocation::longest_access_ttl(&db).await {
        Ok(stored) => stored,
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    };
    if let Some(stored) = stored {
        let stored = Duration::from_secs(u64::try_from(stored).unwrap_or(0));
        policy.max_access_ttl = policy.max_access_ttl.max(stored);
    }
    let keys = match Keys::load(db.clone(), master, policy).await {
        Ok(keys) => Arc::new(keys),
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    };
    // Before the first token: cut-offs appended from now on are kept until
    // tokens of this lifetime have expired.
    let longest = crate::store::secs(config.max_access_ttl);
    if let Err(e) = crate::store::revocation::raise_longest_access_ttl(&db, longest).await {
        db.close().await;
        return Err(e);
    }
    Ok(Opened { config, db, keys })
}

/// How often each instance reads the revocation log in any case: the
/// longest a revocation made at another instance goes unseen here when
/// PostgreSQL's notification is lost (or on SQLite, for one made by
/// another process, such as `tessera user disable`).
pub const REVOCATION_SYNC: Duration = Duration::from_millis(500);

/// How often each instance re-reads the keys and sweeps expired rows: often
/// enough that a key announced by another instance is published here well
/// before it signs.
fn maintenance_period(config: &Config) -> Duration {
    (config.keys.announce / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Serve on `listener` until `shutdown` completes, then finish the
/// requests in flight, flush the audit trail and close the database.
pub async fn serve(
    opened: Opened,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Opened { config, db, keys } = opened;
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let passwords = match config.login_queue {
        Some(queue) => Passwords::with_queue(cores, queue),
        None => Passwords::new(cores),
    };
    let limits = config.listen_limits();
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        request_timeout = ?limits.request_timeout,
        "listener limits"
    );
    if config.issuer_is_loopback_default() {
        tracing::warn!(
            listen = %config.listen,
            issuer = %config.issuer,
            "listening on every interface with no issuer set: tokens and metadata name this \
             host's loopback address, which clients elsewhere cannot use; set --issuer \
             (TESSERA_ISSUER) to the URL they reach this server at"
        );
    }
    let (audit, writer) = AuditQueue::start(db.clone());
    let period = maintenance_period(&config);
    // A verifier that cached the JWKS just before a key was published
    // must have fetched it again before that key signs.
    if config.keys.announce < config.jwks_max_age.saturating_add(period) {
        tracing::warn!(
            announce = ?config.keys.announce,
            jwks_max_age = ?config.jwks_max_age,
            "keys.announce is shorter than keys.jwks_max_age plus the maintenance period: \
             verifiers that cache the JWKS may refuse tokens of a new key until they refetch"
        );
    }
    let grace = secs(config.refresh_grace);
    let keep = Retention {
        audit: config.audit_retain.map(secs),
    };
    let maintenance = tokio::spawn(maintain(db.clone(), Arc::clone(&keys), period, grace, keep));
    let app = Arc::new(App::new(config, db.clone(), keys, passwords, audit));
    app.access.revoked().sync(&db).await?;
    let revocations = tokio::spawn(crate::store::revocation::follow(
        db.clone(),
        Arc::clone(app.access.revoked()),
        REVOCATION_SYNC,
    ));
    let metrics = tokio::spawn(metrics_upkeep());
    let logouts = tokio::spawn(deliver_logouts(Arc::clone(&app)));
    let stopping = Arc::clone(&app);
    let shutdown = async move {
        shutdown.await;
        stopping.stopping.send_replace(true);
    };
    let served = tessera_listen::serve(listener, router(app), limits, shutdown)
        .await
        .map_err(|e| Error::Io {
            path: "listener".into(),
            source: e,
        });
    maintenance.abort();
    revocations.abort();
    metrics.abort();
    logouts.abort();
    // The router (and with it every audit queue handle) is gone: the
    // writer drains what is queued and stops.
    writer.finish().await;
    db.close().await;
    served
}

/// How often the back-channel logout queue is looked at.
const LOGOUT_POLL: Duration = Duration::from_secs(1);

/// Rounds of back-channel logouts under way at once, at most: a round
/// waits for its slowest client (up to the HTTP timeout), and the rounds
/// after it go on meanwhile.
const LOGOUT_ROUNDS: usize = 4;

/// Send back-channel logouts as they come due. Every instance does; each
/// delivery is taken by one attempt at a time (`store::logouts::claim`).
/// A client may still get a logout token twice (an acknowledgement lost
/// on the way), which §2.6 allows: `jti` differs, the session is the same.
async fn deliver_logouts(app: Arc<App>) {
    let http = match crate::signin::backchannel::http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "back-channel logout disabled");
            return;
        }
    };
    let mut ticker = tokio::time::interval(LOGOUT_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = tokio::task::JoinSet::new();
    loop {
        ticker.tick().await;
        while rounds.try_join_next().is_some() {}
        if rounds.len() >= LOGOUT_ROUNDS {
            continue;
        }
        let (app, http) = (Arc::clone(&app), http.clone());
        rounds.spawn(async move {
            if let Err(e) = crate::signin::backchannel::deliver_due(app.deliver(), &http).await {
                tracing::warn!(error = %e, "back-channel logout delivery");
            }
        });
    }
}

/// How often expired rows and old audit events are pruned.
const PRUNE_EVERY: i64 = 60;

async fn maintain(db: Db, keys: Arc<Keys>, period: Duration, refresh_grace: i64, keep: Retention) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = 0;
    loop {
        ticker.tick().await;
        if let Err(e) = keys.maintain().await {
            tracing::error!(error = %e, "key maintenance failed");
        }
        let at = now();
        // Successors are kept sealed for the grace window and a period.
        if let Err(e) = refresh::forget_successors(&db, at, refresh_grace).await {
            tracing::error!(error = %e, "forgetting sealed refresh successors failed");
        }
        if at - last_prune >= PRUNE_EVERY {
            last_prune = at;
            match retention::prune(&db, at, keep).await {
                Ok(pruned) if pruned.total() > 0 => tracing::info!(
                    audit = pruned.audit,
                    refresh = pruned.refresh,
                    ids = pruned.ids,
                    "pruned expired rows"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "pruning failed"),
            }
        }
    }
}
