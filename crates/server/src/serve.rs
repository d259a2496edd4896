//! Opening the configured database and keys, and running the server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;
use crate::db::{bounded, Db, Schema};
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
/// keys; and before anything is written, the master key must open the
/// stored keys, or, where one does not open, the database's check row
/// (the key is then left out: [`Keys::load`]). A start with a missing or
/// wrong master key fails with [`Error::MasterKey`] and leaves the
/// database as it was.
pub async fn open(config: Config) -> Result<Opened, Error> {
    open_with(config, Schema::Migrate).await
}

/// [`open`], with the database's schema taken as `schema` says (an admin
/// command requires it to be this build's: [`Schema::Current`]).
pub async fn open_with(config: Config, schema: Schema) -> Result<Opened, Error> {
    // Bad page templates or a missing logo fail the start, not a login.
    crate::http::pages::Pages::load(&config.pages)?;
    config.prepare_data_dir()?;
    let db = Db::open(&config.database_url, config.max_connections, schema).await?;
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
            // A file named in the configuration is a secret the operator
            // provides (mounted, often): were it missing by mistake, a key
            // made there would seal this database's keys and be lost with
            // the container or the tmpfs it landed in.
            let default = config.data_dir.join("master.key");
            let same = |a: &std::path::Path, b: &std::path::Path| {
                std::path::absolute(a).ok() == std::path::absolute(b).ok()
            };
            if !same(path, &default) {
                db.close().await;
                return Err(Error::MasterKey(format!(
                    "{} does not exist: a master key is made at start only in the data \
                     directory (DATA_DIR/master.key), never at a path the configuration \
                     names, which should hold a key of yours (`tessera key master FILE` \
                     makes one)",
                    path.display()
                )));
            }
            MasterKey::create_or_take(path)?
        }
    };
    // An ID-token algorithm clients registered (`--id-token-alg`) stays
    // in use, its keys kept and rotated, while any client does, whatever
    // `keys.id_token_algorithms` says (`keys::keep_algorithms_clients_use`).
    let mut config = config;
    match keys::keep_algorithms_clients_use(&db, &mut config.keys).await {
        Ok(kept) => {
            for (alg, clients) in kept {
                tracing::warn!(
                    alg = %alg,
                    clients,
                    "keys.id_token_algorithms leaves out an algorithm clients sign in with \
                     (--id-token-alg): its keys are kept and rotated while any client uses it, \
                     but no new client may choose it; delete and register those clients again \
                     to drop it"
                );
            }
        }
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    }
    // After a change of `keys.algorithm`, the algorithm access tokens had
    // goes on signing them until the new one's first key is due.
    match crate::store::key_settings::previous_access_algorithm(&db, config.keys.algorithm).await {
        Ok(previous) => config.keys.previous_algorithm = previous,
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    }
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
    Ok(Opened { config, db, keys })
}

/// How often each instance reads the revocation log in any case: the
/// longest a revocation made at another instance goes unseen here when
/// PostgreSQL's notification is lost (or on SQLite, for one made by
/// another process, such as `tessera user disable`).
pub const REVOCATION_SYNC: Duration = Duration::from_millis(500);

/// Serve on `listener` until `shutdown` completes, then finish the
/// requests in flight, flush the audit trail and close the database.
pub async fn serve(
    opened: Opened,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Opened { config, db, keys } = opened;
    // Before the first token: cut-offs appended from now on are kept until
    // tokens of this lifetime have expired. Here, not in `open`, which the
    // admin commands use too (`tessera keys rotate`), perhaps under
    // another configuration: only what a server mints may raise it.
    if let Err(e) =
        crate::store::revocation::raise_longest_access_ttl(&db, secs(config.max_access_ttl)).await
    {
        db.close().await;
        return Err(e);
    }
    // For the admin commands run without this configuration.
    match crate::store::issuer::record(&db, &config.issuer).await {
        Ok(Some(before)) => tracing::warn!(
            issuer = %config.issuer,
            before = %before,
            "this database's server last started as another issuer: tokens, metadata and \
             the sign-in pages now name the new one"
        ),
        Ok(None) => {}
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    }
    // For the admin commands too: they rotate, revoke and list the keys
    // as this server does.
    if let Err(e) = crate::store::key_settings::record(&db, &config.key_settings()).await {
        db.close().await;
        return Err(e);
    }
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
    if config.in_the_clear() {
        tracing::warn!(
            issuer = %config.issuer,
            "the issuer is plain http on another host than this one: passwords, codes and \
             tokens cross the network in the clear, and the sign-in cookies are not Secure; \
             serve it over TLS (a proxy in front that terminates it) and set --issuer \
             (TESSERA_ISSUER) to its https URL"
        );
    }
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
    let period = config.keys.maintenance_period();
    // A verifier that cached the JWKS just before a key was published
    // must have fetched it again before that key signs.
    if config.keys.announce < config.keys.jwks_max_age.saturating_add(period) {
        tracing::warn!(
            announce = ?config.keys.announce,
            jwks_max_age = ?config.keys.jwks_max_age,
            "keys.announce is shorter than keys.jwks_max_age plus the maintenance period: \
             verifiers that cache the JWKS may refuse tokens of a new key until they refetch"
        );
    }
    let grace = secs(config.refresh_grace);
    let keep = Retention {
        audit: config.audit_retain.map(secs),
    };
    let logout_http = crate::signin::backchannel::http_client()?;
    let app = Arc::new(App::new(
        config,
        db.clone(),
        Arc::clone(&keys),
        passwords,
        audit,
    ));
    app.access.revoked().sync(&db).await?;
    let mut background = Background::default();
    background.spawn(
        "key maintenance and pruning",
        maintain(db.clone(), keys, period, grace, keep),
    );
    background.spawn(
        "the revocation log's follower",
        crate::store::revocation::follow(
            db.clone(),
            Arc::clone(app.access.revoked()),
            REVOCATION_SYNC,
        ),
    );
    background.spawn("metrics upkeep", metrics_upkeep());
    // Their tasks end with the server; a panic ends it too.
    let died = app.audit.died();
    background.spawn("the audit writer", async move { died.wait().await });
    if let Some(died) = app.codes.died() {
        background.spawn(
            "the authorization code writer",
            async move { died.wait().await },
        );
    }
    background.spawn(
        "back-channel logout delivery",
        deliver_logouts(Arc::clone(&app), logout_http),
    );
    // A server without key rotation, pruning or the revocations of other
    // instances must not go on as if it had them: the first task to stop
    // begins a shutdown, and the supervisor (systemd, Kubernetes) starts
    // the server again.
    let ended = Arc::new(tokio::sync::Notify::new());
    let supervisor = tokio::spawn({
        let ended = Arc::clone(&ended);
        async move {
            let stopped = background.first_to_stop().await;
            tracing::error!(task = stopped, "a background task stopped; shutting down");
            ended.notify_one();
            stopped
        }
    });
    let stopping = Arc::clone(&app);
    let delay = app.config.shutdown_delay;
    let shutdown = async move {
        let told = tokio::select! {
            () = shutdown => true,
            () = ended.notified() => false,
        };
        // `/readyz` says 503 from now on, and the feed's streams end
        // (their guards reconnect to another instance); the listener
        // stays open for `http.shutdown_delay`, while load balancers
        // notice. A server whose task stopped does not wait.
        stopping.stopping.send_replace(true);
        if told && !delay.is_zero() {
            tracing::info!(?delay, "stopping: not ready, still serving");
            tokio::time::sleep(delay).await;
        }
    };
    let served = tessera_listen::serve(listener, router(app), limits, shutdown)
        .await
        .map_err(|e| Error::Io {
            path: "listener".into(),
            cause: e,
        });
    // Aborted, the supervisor drops the set, which aborts the tasks left.
    // One that has already returned is not undone by the abort: its task's
    // name is had all the same. (Asked whether it had finished, a
    // supervisor that had just woken the shutdown, its return not yet
    // recorded, was taken for one still waiting, and a server whose task
    // had stopped exited 0, which a restart-on-failure policy ignores.)
    supervisor.abort();
    let stopped = supervisor.await.ok();
    // The router (and with it every audit queue handle) is gone: the
    // writer drains what is queued and stops.
    writer.finish().await;
    db.close().await;
    match stopped {
        Some(task) => Err(Error::Unavailable(format!("{task} stopped"))),
        None => served,
    }
}

/// The server's background tasks, each of which runs as long as the
/// server: one that ends (a panic, most likely) is reported by
/// [`Background::first_to_stop`]. Dropping the set aborts them all.
#[derive(Default)]
pub(crate) struct Background {
    tasks: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Background {
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// The name of the first task to end, however it ended (a panic is
    /// logged with its message); never completes while all run.
    pub(crate) async fn first_to_stop(&mut self) -> &'static str {
        let Some(ended) = self.tasks.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, panic) = match ended {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), e.is_panic().then(|| e.to_string())),
        };
        let name = self.names.get(&id).copied().unwrap_or("a background task");
        if let Some(panic) = panic {
            tracing::error!(task = name, panic, "a background task panicked");
        }
        name
    }
}

/// How often the back-channel logout queue is looked at.
const LOGOUT_POLL: Duration = Duration::from_secs(1);

/// Send back-channel logouts as they come due. Every instance does; each
/// delivery is taken by one attempt at a time (`store::logouts::claim`).
/// A client may still get a logout token twice (an acknowledgement lost
/// on the way), which §2.6 allows: `jti` differs, the session is the same.
async fn deliver_logouts(app: Arc<App>, http: reqwest::Client) {
    let mut ticker = tokio::time::interval(LOGOUT_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = tokio::task::JoinSet::new();
    loop {
        ticker.tick().await;
        while let Some(round) = rounds.try_join_next() {
            match round {
                Err(e) if e.is_panic() => {
                    tracing::error!(error = %e, "a back-channel logout round panicked");
                }
                _ => {}
            }
        }
        if rounds.len() >= crate::signin::backchannel::ROUNDS {
            continue;
        }
        let (app, http) = (Arc::clone(&app), http.clone());
        rounds.spawn(async move {
            // Bounded: a round that hangs on the database (an answer the
            // network lost) would hold one of the few rounds for good.
            let round = crate::signin::backchannel::deliver_due(app.deliver(), &http);
            if let Err(e) = bounded("a back-channel logout round", round).await {
                tracing::warn!(error = %e, "back-channel logout delivery");
            }
        });
    }
}

/// How far behind the clock the maintenance may delete before it says so
/// (seconds).
const CATCHING_UP_SAID: i64 = 300;

/// A deletion of the maintenance, run in a task of its own, one at a time,
/// and stopped with the maintenance.
#[derive(Default)]
struct Job(Option<tokio::task::JoinHandle<()>>);

impl Job {
    /// Whether none runs (the last one's panic, if it ended so, is said).
    fn idle(&mut self) -> bool {
        use futures_util::FutureExt as _;
        match self.0.as_mut() {
            Some(running) if !running.is_finished() => false,
            Some(done) => {
                if let Some(Err(e)) = done.now_or_never() {
                    tracing::error!(error = %e, "a maintenance deletion panicked");
                }
                self.0 = None;
                true
            }
            None => true,
        }
    }

    /// Start `job` unless one runs.
    fn start(&mut self, job: impl Future<Output = ()> + Send + 'static) {
        if self.idle() {
            self.0 = Some(tokio::spawn(job));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(running) = &self.0 {
            running.abort();
        }
    }
}

/// How often expired rows and old audit events are pruned.
const PRUNE_EVERY: i64 = 60;

/// How far this instance's clock may run ahead of the database's before
/// the maintenance stops deleting by it (docs/server.md asks for clocks
/// within 2 s).
const MAX_AHEAD: f64 = 2.0;

async fn maintain(db: Db, keys: Arc<Keys>, period: Duration, refresh_grace: i64, keep: Retention) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = 0;
    let (mut pruning, mut forgetting) = (Job::default(), Job::default());
    // Deletes and retires by a clock that does not follow forward jumps:
    // one tick by a clock an hour fast would delete for good revocation
    // events, used assertions and signing keys still needed.
    let mut steady = tessera_jose::SteadyClock::new();
    let mut holding_reported = false;
    let mut ahead_reported = false;
    let started = std::time::Instant::now();
    let resumed_from = bounded(
        "reading the last maintenance",
        retention::last_maintenance(&db),
    )
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the last maintenance's time could not be read");
        None
    });
    let mut catching_up = false;
    loop {
        ticker.tick().await;
        // Instances share what the maintenance deletes: one whose clock
        // runs ahead of the database's would delete for all of them what
        // they still need. It waits until its clock is right.
        match bounded("reading the database's clock", db.clock_ahead()).await {
            Ok(Some(ahead)) if ahead > MAX_AHEAD => {
                if !ahead_reported {
                    tracing::error!(
                        ahead_secs = ahead,
                        "this instance's clock runs ahead of the database's: key maintenance and pruning wait until it is right"
                    );
                    ahead_reported = true;
                }
                // It still reads the keys the others make (by the
                // database's time): else it would go on signing with, and
                // publishing, a key they have replaced.
                let at = now().saturating_sub(ahead.ceil() as i64);
                if let Err(e) = bounded("reading the signing keys", keys.refresh_at(at)).await {
                    tracing::error!(error = %e, "reading the signing keys failed");
                }
                continue;
            }
            Ok(_) => {
                if ahead_reported {
                    tracing::info!("this instance's clock agrees with the database's again");
                    ahead_reported = false;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the database's clock could not be read; maintenance skipped");
                continue;
            }
        }
        // On SQLite, no database clock to check this one against: deleted
        // by no later than the last maintenance's time plus twice the time
        // passed since this start (a clock already hours ahead at start
        // would otherwise delete at once what is still needed).
        let following = steady.now();
        let at = retention::held_back(following, resumed_from, secs(started.elapsed()));
        // Said when it is more than the few minutes an ordinary restart
        // puts between the last maintenance and this one (those are caught
        // up as quietly, in as many minutes).
        let behind = following.saturating_sub(at);
        if (behind > CATCHING_UP_SAID) != catching_up {
            catching_up = behind > CATCHING_UP_SAID;
            if catching_up {
                tracing::warn!(
                    wall = now(),
                    following = at,
                    "this clock runs ahead of the last maintenance's: deleting by a time that catches up at twice the rate time passes"
                );
            } else {
                tracing::info!("the maintenance has caught up with the clock");
            }
        }
        if let Err(e) = bounded(
            "recording the maintenance",
            retention::record_maintenance(&db, at),
        )
        .await
        {
            tracing::warn!(error = %e, "the maintenance's time could not be recorded");
        }
        if steady.holding() != holding_reported {
            holding_reported = steady.holding();
            if holding_reported {
                tracing::error!(
                    wall = now(),
                    following = at,
                    "the wall clock jumped forward: the maintenance deletes by the time that has really passed"
                );
            } else {
                tracing::info!("the clock is followed again by the maintenance");
            }
        }
        if let Err(e) = bounded("maintaining the signing keys", keys.maintain_at(at)).await {
            tracing::error!(error = %e, "key maintenance failed");
        }
        // The deletions in tasks of their own, each one at a time: a long
        // backlog (a shortened `audit.retain` over millions of rows, sealed
        // successors after a pause) must not hold back the key maintenance
        // above, which reads the keys other instances made.
        // Successors are kept sealed for the grace window and a period.
        let db_for = db.clone();
        forgetting.start(async move {
            if let Err(e) = refresh::forget_successors(&db_for, at, refresh_grace).await {
                tracing::error!(error = %e, "forgetting sealed refresh successors failed");
            }
        });
        if (at - last_prune >= PRUNE_EVERY || at < last_prune) && pruning.idle() {
            last_prune = at;
            let db = db.clone();
            pruning.start(async move {
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
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Background;

    /// On PostgreSQL the maintenance compares this clock with the
    /// database's (here, the same machine's: no difference to speak of).
    #[tokio::test]
    async fn the_database_clock_is_read() {
        let Ok(url) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
            eprintln!("skipped: PostgreSQL test (set TESSERA_TEST_DATABASE_URL to run it)");
            return;
        };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let db = crate::db::Db::Postgres(pool);
        let ahead = db.clock_ahead().await.unwrap().unwrap();
        assert!(ahead.abs() < 1.0, "{ahead}");
        db.close().await;
    }

    #[tokio::test]
    #[allow(clippy::panic)]
    async fn the_first_background_task_to_stop_is_named_however_it_ended() {
        let mut tasks = Background::default();
        tasks.spawn("runs for ever", std::future::pending());
        tasks.spawn("panics", async { panic!("a bug") });
        assert_eq!(tasks.first_to_stop().await, "panics");
        tasks.spawn("returns", async {});
        assert_eq!(tasks.first_to_stop().await, "returns");
        // The one left still runs: nothing more is reported.
        let more =
            tokio::time::timeout(std::time::Duration::from_millis(100), tasks.first_to_stop())
                .await;
        assert!(more.is_err());
    }
}
