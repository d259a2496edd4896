//! The database: SQLite (embedded default) or PostgreSQL, chosen by URL.
//!
//! Both backends run the same SQL text: it is written in the dialect the two
//! share (`$1` placeholders in order, `ON CONFLICT`, `RETURNING`, integer
//! seconds for times, digests as bytes), and `on_pool!` expands each query
//! once per backend so both are checked by the compiler with their native
//! driver types. Schemas live in `migrations/sqlite` and
//! `migrations/postgres`, kept in step; they differ in SQLite's two extra
//! `refresh_tokens` columns and trigger for the one-statement rotation
//! (see DEVELOPERS.md).
//!
//! One exception: writes of many rows at once (`store::audit::record_all`,
//! and the grouped insert and claim of `store::codes`) have a text per
//! backend, so that the text never depends on how many rows there are: the
//! rows go in as arrays on PostgreSQL (`UNNEST`) and as one JSON array on
//! SQLite (`json_each`, digests in hex). A `VALUES` list per batch size
//! would leave a prepared statement per size in every connection.
//!
//! # Writes that return rows
//!
//! A write with `RETURNING` that runs outside a transaction is read with
//! `fetch_all`, never `fetch_optional` or `fetch_one`. SQLite commits such
//! a statement when it runs to its end; sqlx's single-row fetches stop at
//! the first row and reset the statement, and a commit that fails there
//! (disk full) is never reported: the row would be answered as written
//! while the change was rolled back. `fetch_all` steps to the end, so the
//! failed commit comes back as an error.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::Error;

/// A connected database with its migrations applied.
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite in WAL mode. Writes go through a one-connection pool, so
    /// writers queue in the process instead of spinning on `SQLITE_BUSY`;
    /// reads share a larger pool and never wait for writers.
    Sqlite {
        /// Readers.
        reader: SqlitePool,
        /// The single writer.
        writer: SqlitePool,
        /// Where hot write transactions run (see [`Db::in_write_lane`]).
        lane: WriteLane,
    },
    /// PostgreSQL: one pool; many server instances may share the database.
    Postgres(PgPool),
}

/// A pool to run one query or transaction on, picked by [`Db::read`] or
/// [`Db::write`].
#[derive(Clone, Copy, Debug)]
pub enum Pool<'a> {
    /// SQLite.
    Sqlite(&'a SqlitePool),
    /// PostgreSQL.
    Postgres(&'a PgPool),
}

/// Run `$body` with `$p` bound to the backend's own pool type.
///
/// The body is compiled once per backend, so it must be valid for both;
/// write it in the shared SQL dialect described in the module docs.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// How long a PostgreSQL statement waits for a lock (a row, the
/// revocation log's) before it fails, and its request is answered `503`.
/// The transactions that hold them take milliseconds; a lock held longer
/// is one an instance that vanished left behind (below), and requests that
/// waited for it without end would each keep a connection, until the
/// instance had none left for anything.
pub const POSTGRES_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long PostgreSQL keeps a transaction of this server's open while it
/// sends nothing, before it ends the session and the transaction with it.
/// An instance whose host died or was cut off leaves its backend waiting,
/// locks held, until TCP gives up on the connection (over two hours by
/// default); the server itself never pauses inside a transaction.
pub const POSTGRES_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// The longest any statement of the server's runs on PostgreSQL, whatever
/// the role's or database's `statement_timeout` (the migrations' own
/// connection excepted: they run without one). Its statements take
/// milliseconds, and a request is over in 30 s (`http.request_timeout`'s
/// default) whatever happens: a statement that runs on (a plan gone wrong
/// on a grown table, a request given up by the listener while its
/// statement still ran) would keep its connection, and the database's
/// work, for no one.
pub const POSTGRES_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a background task (the code writer, the maintenance) waits
/// for one piece of its database work. A request is bounded by its
/// timeout; a task serving many has none, and PostgreSQL's own
/// [`POSTGRES_STATEMENT_TIMEOUT`] ends a statement only while the server
/// can still answer. On a connection cut without a reset (a host gone, a
/// NAT or proxy that dropped its state) the task would wait until TCP
/// gave up, a quarter of an hour, or for ever when the statement had been
/// acknowledged and only its answer was lost: sqlx sets no TCP keepalive.
/// The statement timeout and five seconds, so that a slow statement the
/// database still ends is answered by the database.
pub const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(35);

/// `work`, given up as [`Error::Unavailable`] after [`BACKGROUND_TIMEOUT`]
/// (its connection is dropped with it: a transaction it held is rolled
/// back, or ends with the connection).
pub async fn bounded<T>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    within(BACKGROUND_TIMEOUT, what, work).await
}

/// `work`, given up as [`Error::Unavailable`] after `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(Error::Unavailable(format!(
            "{what}: the database did not answer within {}s",
            limit.as_secs()
        )))
    })
}

/// The longest a statement runs on PostgreSQL for the command line's
/// administrative commands ([`Db::open_for_commands`]), in place of
/// [`POSTGRES_STATEMENT_TIMEOUT`]: a change that reaches every row of a
/// user or a client (deleting it, taking a scope away, disabling it: each
/// of its refresh tokens locked, its families revoked, which for a client
/// of many users is millions of rows) is made there, by an operator who
/// waits for it. Through the admin API such a change is bounded by the
/// request (`http.request_timeout`) as any other, and cancelled with it.
pub const POSTGRES_COMMAND_STATEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a start waits for the migrations' lock, which another instance
/// starting or upgrading at the same moment holds while it migrates.
pub const POSTGRES_MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(20);

/// How long a request waits for a PostgreSQL connection before it is
/// answered `503`: a database that is down or out of connections is
/// reported at once rather than after the request's client gave up.
pub const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// What opening a database does with its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Apply the migrations the database lacks: the server's start.
    Migrate,
    /// Require this build's schema, and make it only in a database that
    /// has none yet: an admin command run with a new version's binary
    /// before the server was restarted must not migrate the database
    /// under the server of the version before (which would then refuse
    /// to start), nor a backup meant to be from before an upgrade.
    Current,
    /// Take the schema as it is: a backup copies whatever is there.
    AsIs,
}

/// PostgreSQL's clock, in whole seconds since the epoch (`clock_timestamp`:
/// the moment the statement runs, not the transaction's start).
pub(crate) const DATABASE_NOW: &str = "SELECT FLOOR(EXTRACT(EPOCH FROM clock_timestamp()))::int8";

impl Db {
    /// Connect to `url` (`sqlite://PATH` or `postgres://…`) and apply the
    /// migrations. A SQLite file is created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, Error> {
        Db::open(url, max_connections, Schema::Migrate).await
    }

    /// Connect to `url`, doing what `schema` says with its schema. A
    /// SQLite file is created when missing.
    pub async fn open(url: &str, max_connections: u32, schema: Schema) -> Result<Db, Error> {
        Db::open_with(url, max_connections, schema, POSTGRES_STATEMENT_TIMEOUT).await
    }

    /// [`Db::open`] for the command line's administrative commands: their
    /// statements run for up to [`POSTGRES_COMMAND_STATEMENT_TIMEOUT`].
    pub async fn open_for_commands(
        url: &str,
        max_connections: u32,
        schema: Schema,
    ) -> Result<Db, Error> {
        Db::open_with(
            url,
            max_connections,
            schema,
            POSTGRES_COMMAND_STATEMENT_TIMEOUT,
        )
        .await
    }

    async fn open_with(
        url: &str,
        max_connections: u32,
        schema: Schema,
        statement_timeout: Duration,
    ) -> Result<Db, Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Read committed whatever the role's or database's default:
            // the stores count on a statement that waited for a row lock
            // seeing what the other transaction committed (a later
            // snapshot), which repeatable read would not give them. (A
            // backslash escapes the space in the startup options.)
            // sqlx logs a parameter it does not know with its value (at
            // `warn`): one that holds a password (`sslpassword`) would be
            // written to the log in the clear. Refused here, before it is
            // parsed.
            if let Ok(parsed) = url::Url::parse(url) {
                if let Some((name, _)) = parsed
                    .query_pairs()
                    .find(|(name, _)| names_a_password(name) && name != "password")
                {
                    return Err(Error::Config(format!(
                        "database URL {}: the parameter {name:?} is not supported",
                        redact_url(url)
                    )));
                }
            }
            let base = PgConnectOptions::from_str(url)
                .map_err(Error::database)?
                .options([
                    ("default_transaction_isolation", r"read\ committed"),
                    (
                        "idle_in_transaction_session_timeout",
                        millis(POSTGRES_IDLE_IN_TRANSACTION).as_str(),
                    ),
                ]);
            let options = base.clone().options([
                ("lock_timeout", millis(POSTGRES_LOCK_TIMEOUT)),
                ("statement_timeout", millis(statement_timeout)),
            ]);
            // Made lazily: `connect_with` would open every kept connection
            // one after another under the 1 s a request waits, and fail the
            // start of a database a TLS handshake away. The start waits for
            // one connection (the migrations'), then `warm` opens the rest
            // at once.
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                // Kept open, so the first requests after a start (or an
                // outage) do not each wait for a connection to be made.
                .min_connections(max_connections)
                .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                .after_connect(|conn, _| Box::pin(at_least_synchronous(conn)))
                .connect_lazy_with(options);
            first_connection(&pool).await?;
            migrate_postgres(base.options([("synchronous_commit", "on")]), schema).await?;
            warm(&pool, max_connections).await;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url).map_err(Error::database)?;
            if !url.contains("mode=memory") {
                owner_only(options.get_filename())?;
            }
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: every commit is on disk before it is answered. In
                // WAL mode NORMAL syncs only at checkpoints, and a power
                // loss could undo commits already acknowledged (a user
                // disabled, a token revoked, a refresh token rotated).
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            // Opening (the switch to WAL of a new file) and migrating, one
            // process at a time.
            let opening = opening_lock(options.get_filename()).await?;
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .before_acquire(|conn, _| Box::pin(async move { Ok(in_step(conn)) }))
                .connect_with(options.clone())
                .await
                .map_err(Error::from)?;
            let applied = match schema {
                Schema::AsIs => None,
                _ => Some(applied_sqlite(&writer).await?),
            };
            if must_migrate(&SQLITE_MIGRATIONS, schema, applied.as_ref())? {
                SQLITE_MIGRATIONS
                    .run(&writer)
                    .await
                    .map_err(|e| Error::Database(format!("migrations: {e}")))?;
            }

            let reader = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.read_only(true))
                .await
                .map_err(Error::from)?;
            drop(opening);
            let lane = WriteLane::start(writer.clone())?;
            Ok(Db::Sqlite {
                reader,
                writer,
                lane,
            })
        } else {
            Err(Error::Config(format!(
                "database URL must start with sqlite: or postgres://, not {:?}",
                redact_url(url)
            )))
        }
    }

    /// Whether this is the PostgreSQL backend.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// The pool for reads.
    pub fn read(&self) -> Pool<'_> {
        match self {
            Db::Sqlite { reader, .. } => Pool::Sqlite(reader),
            Db::Postgres(pool) => Pool::Postgres(pool),
        }
    }

    /// The statement that opens a write transaction on [`Db::write`]'s pool.
    /// On SQLite `BEGIN IMMEDIATE` takes the write lock at once: a deferred
    /// `BEGIN` that read first could not upgrade to a write after another
    /// process (an admin command) wrote, and would fail at once with
    /// `SQLITE_BUSY` instead of waiting out the busy timeout.
    pub fn begin_write(&self) -> &'static str {
        match self {
            Db::Sqlite { .. } => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        }
    }

    /// The pool for writes and read-then-write transactions.
    pub fn write(&self) -> Pool<'_> {
        match self {
            Db::Sqlite { writer, .. } => Pool::Sqlite(writer),
            Db::Postgres(pool) => Pool::Postgres(pool),
        }
    }

    /// Run `work`, a write transaction, to completion. On SQLite it runs on
    /// a thread of its own: the one writer connection is held from `BEGIN`
    /// to `COMMIT`, and on the request runtime every statement of the
    /// transaction would wait its turn behind other requests' work while
    /// every other writer waits for the connection. Alone on its thread the
    /// transaction's statements follow each other at once. (Measured with
    /// benches/load: see docs/benchmarks.md.)
    pub async fn in_write_lane<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        match self {
            Db::Sqlite { lane, .. } => lane
                .handle
                .spawn(work)
                .await
                .map_err(|e| Error::Database(format!("write task: {e}")))?,
            Db::Postgres(_) => work.await,
        }
    }

    /// Run `write`, ONE statement (SQLite undoes a statement that fails,
    /// triggers included, and nothing else of the group), on SQLite's
    /// writer, inside one transaction with the other writes queued
    /// meanwhile, and answer once that transaction has committed. Every
    /// commit waits for the disk (`synchronous = FULL`); a group shares one
    /// wait, as PostgreSQL's own group commit does, so writes that come
    /// together do not each wait for one. A write that fails keeps its own
    /// error and stops its group (it may have ended the transaction): the
    /// writes after it are not attempted (a transient error: try again). A
    /// write whose caller has gone before its turn is not made. (A
    /// savepoint per write would allow several statements, at two more
    /// trips to the writer each: measured, it cost a third of the refresh
    /// rate.) Only for SQLite.
    pub async fn in_group<T, W>(&self, write: W) -> Result<T, Error>
    where
        T: Send + 'static,
        W: for<'c> FnOnce(
                &'c mut sqlx::SqliteConnection,
            ) -> futures_util::future::BoxFuture<'c, Result<T, Error>>
            + Send
            + 'static,
    {
        let Db::Sqlite { lane, .. } = self else {
            return Err(Error::Database("grouped writes are for SQLite".into()));
        };
        let (done, answered) = tokio::sync::oneshot::channel::<Result<T, Error>>();
        let grouped: GroupedWrite = Box::new(move |conn| {
            Box::pin(async move {
                if done.is_closed() {
                    // Its caller has gone (a request timed out while the
                    // group before it waited for the disk): a rotation
                    // no one will receive is not made.
                    let nobody: Answer = Box::new(|_| {});
                    return (Ran::Through, nobody);
                }
                // One statement: a failed one leaves nothing of itself.
                let result = write(conn).await;
                let ran = match &result {
                    Ok(_) => Ran::Through,
                    Err(e) => Ran::Stopped {
                        transient: e.is_transient(),
                    },
                };
                let answer: Answer = Box::new(move |committed: Committed<'_>| {
                    let _ = done.send(match (result, committed) {
                        // Its own failure: nothing of it was committed.
                        (Err(e), _) => Err(e),
                        (Ok(value), Ok(())) => Ok(value),
                        (Ok(_), Err((true, why))) => Err(Error::Unavailable(why.clone())),
                        (Ok(_), Err((false, why))) => Err(Error::Database(why.clone())),
                    });
                });
                (ran, answer)
            })
        });
        let not_attempted = || Error::Unavailable("the write was not attempted; try again".into());
        lane.groups
            .send(grouped)
            .await
            .map_err(|_| not_attempted())?;
        answered.await.map_err(|_| not_attempted())?
    }

    /// How many seconds this process's clock runs ahead of PostgreSQL's
    /// (negative: behind), the query's own time taken out; `None` on
    /// SQLite, whose clock is this machine's.
    pub async fn clock_ahead(&self) -> Result<Option<f64>, Error> {
        let Db::Postgres(pool) = self else {
            return Ok(None);
        };
        let unix = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let before = unix();
        let (database,): (f64,) =
            sqlx::query_as("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")
                .fetch_one(pool)
                .await?;
        let after = unix();
        Ok(Some((before + after) / 2.0 - database))
    }

    /// The time by the database's clock, in whole seconds, on PostgreSQL
    /// (`None` on SQLite, whose file only this host opens, so this
    /// host's clock is the database's).
    pub async fn database_time(&self) -> Result<Option<i64>, Error> {
        let Db::Postgres(pool) = self else {
            return Ok(None);
        };
        let (seconds,): (i64,) = sqlx::query_as(DATABASE_NOW).fetch_one(pool).await?;
        Ok(Some(seconds))
    }

    /// Which backend this is: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), Error> {
        on_pool!(self.read(), p => sqlx::query("SELECT 1").execute(p).await.map(|r| r.rows_affected()))
            .map(drop)
            .map_err(Error::from)
    }

    /// Write a consistent copy of the SQLite database to `path` while the
    /// server may run (`VACUUM INTO`: a snapshot of the last commit, with
    /// no effect on writers). The file is created readable by its owner
    /// only, and must not exist yet. PostgreSQL is backed up with its own
    /// tools (`pg_dump`): refused here, with that advice.
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<(), Error> {
        let Db::Sqlite { writer, .. } = self else {
            return Err(Error::Invalid(
                "the database is PostgreSQL: back it up with pg_dump (docs/operations.md)".into(),
            ));
        };
        // Sealed keys and password hashes: owner only, never over another
        // file, and under its name only once complete and synced (VACUUM
        // INTO fills the empty temporary file, and does not sync it).
        let file = crate::secret::PrivateFile::create(path)?;
        let target = file.temporary().to_str().ok_or_else(|| {
            Error::Invalid(format!("{} is not UTF-8", file.temporary().display()))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(writer)
            .await?;
        file.publish()
    }

    /// Close every connection, waiting for queries in flight.
    pub async fn close(&self) {
        match self {
            Db::Sqlite { reader, writer, .. } => {
                reader.close().await;
                writer.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Whether the writer connection's idea of its transaction agrees with
/// SQLite's; a connection that disagrees is closed (SQLite rolls back what
/// it still holds) and the pool opens a fresh one.
///
/// A connection back in the pool is never inside a transaction. After an
/// error that makes SQLite roll a transaction back by itself
/// (`SQLITE_FULL`, `SQLITE_IOERR`, …) sqlx's own `ROLLBACK` fails with "no
/// transaction is active" and sqlx keeps counting the transaction as open.
/// Its next `begin` then sends `SAVEPOINT` instead of `BEGIN`, a rollback
/// of that sends `ROLLBACK TO`, which leaves a transaction open for good:
/// every later "commit" only releases a savepoint, so writes are answered
/// as done but never reach the file, and other processes find the
/// database locked. Checked before each use, so the first request after
/// the fault already runs on a sound connection.
fn in_step(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    let sound = !conn.is_in_transaction();
    if !sound {
        tracing::warn!("SQLite writer connection left inside a failed transaction; reopening it");
    }
    sound
}

/// Open `count` connections now rather than under the first requests.
/// How long a start waits for its first PostgreSQL connection: a database
/// starting up (which refuses connections for a while) or a few seconds
/// away still lets the server start.
const POSTGRES_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Wait for one connection of `pool`, trying again until
/// [`POSTGRES_START_TIMEOUT`] while the database cannot be reached or is
/// starting up; the error at once when it answered no (a wrong password,
/// no such database), which waiting does not mend.
async fn first_connection(pool: &PgPool) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + POSTGRES_START_TIMEOUT;
    loop {
        match pool.acquire().await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline || !worth_waiting_for(&e) => {
                return Err(Error::from(e))
            }
            Err(e) => {
                tracing::info!(error = %e, "waiting for the database");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Whether a failed connection may succeed a moment later: the network,
/// a timeout, or PostgreSQL starting up or shutting down (class 57P).
fn worth_waiting_for(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("57P")),
        _ => false,
    }
}

/// The versions of the migrations applied to a database: `None` when it
/// has no schema yet (no migrations table).
type Applied = Option<Vec<i64>>;

async fn applied_sqlite(pool: &SqlitePool) -> Result<Applied, Error> {
    let (made,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
         AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if !made {
        return Ok(None);
    }
    let versions: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?;
    succeeded(versions).map(Some)
}

/// The versions of migrations applied, or an error naming one that
/// failed part-way (sqlx's "dirty" mark: only an operator can say what
/// it left).
fn succeeded(versions: Vec<(i64, bool)>) -> Result<Vec<i64>, Error> {
    match versions.iter().find(|(_, success)| !success) {
        Some((version, _)) => Err(Error::Database(format!(
            "migration {version} failed part-way in an earlier start (the database is marked \
             dirty): see what it left and repair it by hand (docs/operations.md, Upgrades)"
        ))),
        None => Ok(versions.into_iter().map(|(v, _)| v).collect()),
    }
}

async fn applied_postgres(connection: &mut sqlx::PgConnection) -> Result<Applied, Error> {
    let (made,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *connection)
        .await?;
    if !made {
        return Ok(None);
    }
    let versions: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *connection)
            .await?;
    succeeded(versions).map(Some)
}

/// Whether to run `migrator` on a database whose migrations are
/// `applied` (`None`: not read, as [`Schema::AsIs`] does not), or why the
/// schema is not one `schema` takes.
fn must_migrate(
    migrator: &sqlx::migrate::Migrator,
    schema: Schema,
    applied: Option<&Applied>,
) -> Result<bool, Error> {
    let current = || {
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
    };
    let newer = |versions: &[i64]| {
        let theirs = versions.last().copied().unwrap_or(0);
        let ours = current().next_back().unwrap_or(0);
        Error::Invalid(format!(
            "the database's schema is newer than this tessera's (migration {theirs}, \
             not {ours}): a newer version migrated it; run that version (going back to \
             this one means restoring the backup taken before the upgrade)"
        ))
    };
    match (schema, applied) {
        (Schema::AsIs, _) | (_, None) => Ok(false),
        (Schema::Migrate, Some(Some(versions)))
            if !versions.iter().all(|v| current().any(|c| c == *v)) =>
        {
            Err(newer(versions))
        }
        (Schema::Migrate, Some(_)) | (Schema::Current, Some(None)) => Ok(true),
        (Schema::Current, Some(Some(versions))) => {
            if current().eq(versions.iter().copied()) {
                return Ok(false);
            }
            let known = versions.iter().all(|v| current().any(|c| c == *v));
            let (theirs, ours) = (
                versions.last().copied().unwrap_or(0),
                current().next_back().unwrap_or(0),
            );
            if !known {
                return Err(newer(versions));
            }
            Err(Error::Invalid(format!(
                "the database's schema is older than this tessera's (migration {theirs}, \
                 not {ours}): only the server migrates it, when this version of \
                 `tessera serve` starts; until then, use the tessera the server runs"
            )))
        }
    }
}

/// A duration as PostgreSQL's settings read it (milliseconds).
fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// A commit is answered once it is on disk, and on a synchronous standby
/// where one is configured, whatever the role, the database or the URL
/// tuned: with `off` (a common tuning), `local` or `remote_write`, a crash
/// or a failover loses writes already answered (a revocation, a disabled
/// user, a rotated token). Those are raised to `on`; `remote_apply`, which
/// also waits until standbys show the write to their readers, is kept.
async fn at_least_synchronous(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'on', false) \
         WHERE current_setting('synchronous_commit') IN ('off', 'local', 'remote_write')",
    )
    .execute(conn)
    .await
    .map(drop)
}

/// Apply the migrations on a connection of their own, which waits for the
/// migrations' lock (held by another start) for at most
/// [`POSTGRES_MIGRATION_LOCK_WAIT`] and then fails the start, saying why:
/// before, it waited without end, and without a word.
async fn migrate_postgres(options: PgConnectOptions, schema: Schema) -> Result<(), Error> {
    use sqlx::Connection;
    if schema == Schema::AsIs {
        return Ok(());
    }
    let mut connection = sqlx::PgConnection::connect_with(&options).await?;
    // No statement limit a role or database may set: a migration cut off
    // half-way rolls back, and the next start would only run into it
    // again. Set on the session, not in the startup options, which a
    // pooler may drop (PgBouncer's `ignore_startup_parameters`): the
    // migrations would then run under the role's limits for requests.
    let settings = [
        format!(
            "SET lock_timeout = {}",
            millis(POSTGRES_MIGRATION_LOCK_WAIT)
        ),
        "SET statement_timeout = 0".to_owned(),
    ];
    for setting in settings {
        if let Err(e) = sqlx::query(&setting).execute(&mut connection).await {
            let _ = connection.close().await;
            return Err(e.into());
        }
    }
    let applied = applied_postgres(&mut connection).await;
    let migrate = applied.and_then(|a| must_migrate(&POSTGRES_MIGRATIONS, schema, Some(&a)));
    let migrated = match migrate {
        Ok(true) => POSTGRES_MIGRATIONS.run(&mut connection).await,
        Ok(false) => Ok(()),
        Err(e) => {
            let _ = connection.close().await;
            return Err(e);
        }
    };
    let _ = connection.close().await;
    let waited = |e: &sqlx::Error| matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"));
    migrated.map_err(|e| match &e {
        sqlx::migrate::MigrateError::ExecuteMigration(inner, version) if waited(inner) => {
            Error::Unavailable(format!(
                "migrations: migration {version} waited {} for a table another session holds \
                 (a pg_dump, a long transaction; waiting longer would hold every query on that \
                 table behind it): start again once it is done",
                humantime::format_duration(POSTGRES_MIGRATION_LOCK_WAIT)
            ))
        }
        sqlx::migrate::MigrateError::Execute(inner) if waited(inner) => {
            Error::Unavailable(format!(
                "migrations: another process has held the migrations' lock for {} (an \
                 instance starting or upgrading now; or one whose host vanished while it \
                 started, whose lock PostgreSQL frees once it notices the connection is \
                 gone): start again in a moment",
                humantime::format_duration(POSTGRES_MIGRATION_LOCK_WAIT)
            ))
        }
        _ => Error::Database(format!("migrations: {e}")),
    })
}

async fn warm(pool: &PgPool, count: u32) {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..count {
        let pool = pool.clone();
        opening.spawn(async move { pool.acquire().await });
    }
    // Hold every connection until all are open, so each task opens its own.
    let opened = opening.join_all().await;
    let failed = opened.iter().filter(|c| c.is_err()).count();
    if failed > 0 {
        tracing::warn!(
            failed,
            "some database connections could not be opened at start"
        );
    }
}

/// A single-threaded runtime on a thread of its own, for SQLite write
/// transactions and [`Db::in_group`]'s groups. It stops when the last
/// [`Db`] clone is dropped.
#[derive(Clone, Debug)]
pub struct WriteLane {
    handle: tokio::runtime::Handle,
    groups: tokio::sync::mpsc::Sender<GroupedWrite>,
    _stop: std::sync::Arc<tokio::sync::oneshot::Sender<()>>,
}

/// How a group's transaction ended, for each of its writes: committed, or
/// why not (whether trying again may work, and what went wrong).
type Committed<'a> = Result<(), &'a (bool, String)>;

/// Answers a write's caller once its group's transaction has ended.
type Answer = Box<dyn for<'a> FnOnce(Committed<'a>) + Send>;

/// How one write of a group ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    /// Done, or skipped (its caller had gone): the group goes on.
    Through,
    /// Failed. SQLite undoes a failed statement by itself, but some errors
    /// (a full disk, an I/O error, no memory) may end the whole
    /// transaction, and the writes after it would then run outside it: the
    /// group stops there. `transient` says whether the failure may pass.
    Stopped { transient: bool },
}

/// A write queued for [`Db::in_group`]: it runs on the group's connection,
/// inside the group's transaction, and says how it ended and how to
/// answer its caller once the transaction has ended.
type GroupedWrite = Box<
    dyn for<'c> FnOnce(
            &'c mut sqlx::SqliteConnection,
        ) -> futures_util::future::BoxFuture<'c, (Ran, Answer)>
        + Send,
>;

/// Writes in one group's transaction at most.
const GROUP: usize = 128;

/// The groups' task: per group of queued writes, one transaction, one
/// commit (one sync of the log), then every caller answered. Each group
/// runs as a task of its own: a panic in one answers its callers "not
/// attempted" and the next group goes on.
async fn commit_groups(writer: SqlitePool, mut queued: tokio::sync::mpsc::Receiver<GroupedWrite>) {
    let mut group = Vec::with_capacity(GROUP);
    while queued.recv_many(&mut group, GROUP).await > 0 {
        let writes = std::mem::replace(&mut group, Vec::with_capacity(GROUP));
        if let Err(e) = tokio::spawn(commit_group(writer.clone(), writes)).await {
            tracing::error!(error = %e, "a group of writes failed");
        }
    }
}

/// One group: its writes in one transaction, then its callers answered.
async fn commit_group(writer: SqlitePool, writes: Vec<GroupedWrite>) {
    let mut tx = match writer.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            // Dropped unanswered: each caller hears "not attempted".
            tracing::warn!(error = %e, "a group of writes could not begin");
            return;
        }
    };
    let mut answers = Vec::with_capacity(writes.len());
    let mut stopped_transient = false;
    // After a write that stopped the group, the writes left would run
    // outside the transaction: they are dropped with the iterator, and
    // their callers hear "not attempted, try again".
    for write in writes {
        let (ran, answer) = write(&mut tx).await;
        answers.push(answer);
        if let Ran::Stopped { transient } = ran {
            stopped_transient = transient;
            break;
        }
    }
    let committed = tx.commit().await.map_err(|e| {
        let e = Error::from(e);
        // A COMMIT after SQLite rolled the transaction back by itself
        // fails as "no transaction is active": the failure that did it
        // says whether trying again may work.
        let transient = e.is_transient() || stopped_transient;
        let why = match e {
            Error::Unavailable(why) | Error::Database(why) => why,
            other => other.to_string(),
        };
        (transient, why)
    });
    for answer in answers {
        answer(committed.as_ref().map(|_| ()));
    }
}

impl WriteLane {
    fn start(writer: SqlitePool) -> Result<WriteLane, Error> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = ready.send(Ok(runtime.handle().clone()));
                        // Err when every sender is gone: time to stop.
                        let _ = runtime.block_on(stopped);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::Database(format!("cannot start the SQLite writer thread: {e}")))?;
        let handle = handle
            .recv()
            .map_err(|e| Error::Database(format!("SQLite writer thread: {e}")))?
            .map_err(|e| Error::Database(format!("SQLite writer runtime: {e}")))?;
        let (groups, queued) = tokio::sync::mpsc::channel(4 * GROUP);
        handle.spawn(commit_groups(writer, queued));
        Ok(WriteLane {
            handle,
            groups,
            _stop: std::sync::Arc::new(stop),
        })
    }
}

/// Whether a database URL's query parameter `key` holds a password
/// (`password`, `sslpassword`, in any case: sqlx reads names as written,
/// and logs one it does not know with its value).
pub(crate) fn names_a_password(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

/// `url` with any password replaced by `***`, for messages and logs: in
/// its user part and in its query (`?password=`, `?sslpassword=`). Text
/// that is not a URL (libpq's `host=… password=…` form, a typo) is not
/// shown at all.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(not a URL)".to_owned();
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| names_a_password(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if names_a_password(&k) {
                    "***".into()
                } else {
                    v
                };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

/// Held while this process opens the SQLite database and applies its
/// migrations. sqlx's migration lock does nothing on SQLite, and its
/// migrator reads which migrations are applied before it takes the write
/// lock: a server and an admin command started at once on a new (or
/// upgraded) database both apply the same migration, and one fails
/// ("table already exists"); the switch of a new file to WAL can also
/// answer the other `database is locked` without waiting. An exclusive
/// `flock` on `PATH-migrate.lock` makes them take turns; the second then
/// finds everything done. (Not on the database file itself: closing any
/// descriptor of it would drop SQLite's own locks.)
async fn opening_lock(path: &std::path::Path) -> Result<Option<std::fs::File>, Error> {
    #[cfg(unix)]
    {
        use rustix::fs::FlockOperation;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let name = path.to_string_lossy();
        if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
            return Ok(None);
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push("-migrate.lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        // Read-write where it may (NFS emulates flock with locks that need
        // a descriptor open for writing), read-only otherwise (a lock file
        // another user made, by an admin command run as root); a new one
        // gets the database's mode, so whoever may open the database may
        // take it.
        let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o666);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .or_else(|_| std::fs::File::open(&lock_path))
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(mode)
                    .open(&lock_path)
            });
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                // A read-only directory (a backup looked at), or one this
                // user may not write: opening goes on without taking turns.
                tracing::warn!(lock = %lock_path.display(), error = %e, "opening the database without its lock");
                return Ok(None);
            }
        };
        let without = |e: rustix::io::Errno| {
            tracing::warn!(lock = %lock_path.display(), error = %e, "opening the database without its lock");
            Ok(None)
        };
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(file)),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            // A file system that cannot lock so: as before the lock.
            Err(e) => return without(e),
        }
        tracing::info!(lock = %lock_path.display(), "waiting for another process opening the database");
        let locked = tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&file, FlockOperation::LockExclusive).map(|()| file)
        })
        .await
        .map_err(|e| Error::Database(format!("migration lock: {e}")))?;
        match locked {
            Ok(file) => Ok(Some(file)),
            Err(e) => without(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Keep the SQLite database at `path`, and its WAL and shared-memory
/// files, from other users of the host: a new database is created 0600
/// (SQLite gives its other files the database's mode), and an existing
/// one that anyone may read loses that (a group the operator chose keeps
/// its access). It holds password hashes and token digests; a data
/// directory made by hand under the usual umask would otherwise leave
/// them readable by every user. Symbolic links are left as they are, and
/// a file this process may not change is reported, not refused.
fn owner_only(path: &std::path::Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let name = path.to_string_lossy();
        // In memory (`sqlite::memory:` becomes `file:sqlx-in-memory-…`).
        if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
            return Ok(());
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = std::path::PathBuf::from(file);
            let Ok(meta) = std::fs::symlink_metadata(&file) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if meta.file_type().is_symlink() || mode & 0o007 == 0 {
                continue;
            }
            let tightened = std::fs::Permissions::from_mode(mode & !0o007);
            if let Err(e) = std::fs::set_permissions(&file, tightened) {
                tracing::warn!(file = %file.display(), error = %e, "the database file is readable by every user of the host, and could not be changed");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;

    use super::{owner_only, redact_url, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

    /// Every migration's text is the one applied: an edit, even of a
    /// comment, makes sqlx refuse every start on a database that applied
    /// the text before (DEVELOPERS.md). A new migration adds its line to
    /// `migrations/checksums.txt`.
    #[test]
    fn migrations_are_never_edited() {
        let pinned = include_str!("../migrations/checksums.txt");
        let pinned: std::collections::BTreeSet<(String, i64, String)> = pinned
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let mut words = l.split_whitespace();
                let backend = words.next().unwrap().to_owned();
                let version = words.next().unwrap().parse().unwrap();
                (backend, version, words.next().unwrap().to_owned())
            })
            .collect();
        let mut missing = Vec::new();
        for (backend, migrator) in [
            ("sqlite", &SQLITE_MIGRATIONS),
            ("postgres", &POSTGRES_MIGRATIONS),
        ] {
            for m in migrator.iter() {
                let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
                let line = (backend.to_owned(), m.version, hex);
                if !pinned.contains(&line) {
                    missing.push(format!("{} {:04} {}", line.0, line.1, line.2));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "migrations edited, or new ones not in migrations/checksums.txt (a new one adds its \
             line; an applied one is never edited):\n{}",
            missing.join("\n")
        );
        let count = SQLITE_MIGRATIONS.iter().count() + POSTGRES_MIGRATIONS.iter().count();
        assert_eq!(
            pinned.len(),
            count,
            "checksums.txt names migrations that are gone"
        );
    }

    /// Writes grouped in one transaction, some of which fail: every write
    /// answered Ok is in the database, none answered with an error is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_writes_are_answered_as_they_were_committed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let db = super::Db::connect(&url, 2).await.unwrap();
        fn insert(
            id: String,
            name: String,
        ) -> impl for<'c> FnOnce(
            &'c mut sqlx::SqliteConnection,
        )
            -> futures_util::future::BoxFuture<'c, Result<(), crate::Error>>
               + Send
               + 'static {
            move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO users (id, username, password_hash, scopes, created_at, \
                         updated_at) VALUES ($1, $2, 'x', '', 0, 0)",
                    )
                    .bind(id)
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            }
        }
        db.in_group(insert("taken".into(), "taken".into()))
            .await
            .unwrap();
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let db = db.clone();
                // Every tenth write takes a name already taken: it fails.
                let name = if i % 10 == 3 {
                    "taken".to_owned()
                } else {
                    format!("user{i}")
                };
                let write = insert(format!("id{i}"), name);
                tokio::spawn(async move { db.in_group(write).await })
            })
            .collect();
        let mut answered_ok = 0;
        for (i, write) in writes.into_iter().enumerate() {
            let answer = write.await.unwrap();
            let stored: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE id = $1")
                .bind(format!("id{i}"))
                .fetch_optional(match db.read() {
                    super::Pool::Sqlite(p) => p,
                    super::Pool::Postgres(_) => unreachable!(),
                })
                .await
                .unwrap();
            assert_eq!(answer.is_ok(), stored.is_some(), "write {i}: {answer:?}");
            if i % 10 == 3 {
                assert!(answer.is_err(), "write {i}");
            }
            answered_ok += usize::from(answer.is_ok());
        }
        assert!(answered_ok > 0);
        db.close().await;
    }

    /// A write whose caller has gone before its group ran is not made (a
    /// rotation no one would receive).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_grouped_write_whose_caller_left_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let db = super::Db::connect(&url, 2).await.unwrap();
        let super::Pool::Sqlite(writer) = db.write() else {
            unreachable!("a SQLite database")
        };
        // The one writer connection, held: the group waits for it.
        let held = writer.acquire().await.unwrap();
        let waiting = db.clone();
        let left = tokio::spawn(async move {
            waiting
                .in_group(|conn| {
                    Box::pin(async move {
                        sqlx::query(
                            "INSERT INTO users (id, username, password_hash, scopes, created_at, \
                             updated_at) VALUES ('gone', 'gone', 'x', '', 0, 0)",
                        )
                        .execute(&mut *conn)
                        .await?;
                        Ok(())
                    })
                })
                .await
        });
        // Time for the write to be queued and taken into a group.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        left.abort();
        assert!(left.await.unwrap_err().is_cancelled());
        drop(held);
        // A write after it, in the next group, answered once committed.
        db.in_group(|conn| {
            Box::pin(async move {
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                Ok(())
            })
        })
        .await
        .unwrap();
        let (made,): (i64,) = sqlx::query_as("SELECT count(*) FROM users WHERE id = 'gone'")
            .fetch_one(writer)
            .await
            .unwrap();
        assert_eq!(made, 0);
        db.close().await;
    }

    #[test]
    fn a_database_in_memory_leaves_no_file() {
        // What sqlx makes of `sqlite::memory:`.
        let name = std::path::Path::new("file:sqlx-in-memory-4242");
        owner_only(name).unwrap();
        assert!(!name.exists());
    }

    /// A database that answers no (no such database) is not waited for;
    /// one that cannot be reached (nothing listens) is.
    #[tokio::test]
    async fn a_start_waits_only_for_a_database_that_may_yet_answer() {
        let Ok(base) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
            eprintln!("skipped: PostgreSQL test (set TESSERA_TEST_DATABASE_URL to run it)");
            return;
        };
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path("/no_such_database_here");
        let options = PgConnectOptions::from_str(url.as_str()).unwrap();
        let refused = sqlx::ConnectOptions::connect(&options).await.unwrap_err();
        assert!(!super::worth_waiting_for(&refused), "{refused}");
        let nobody = PgConnectOptions::from_str("postgres://postgres@127.0.0.1:1/test").unwrap();
        let unreachable = sqlx::ConnectOptions::connect(&nobody).await.unwrap_err();
        assert!(super::worth_waiting_for(&unreachable), "{unreachable}");
    }

    /// A URL parameter that holds a password sqlx does not know
    /// (`sslpassword`) is refused before sqlx reads it: sqlx logs the
    /// parameters it does not know with their values.
    #[tokio::test]
    async fn a_password_parameter_sqlx_would_log_is_refused() {
        for (url, name) in [
            (
                "postgres://u@127.0.0.1:1/x?sslmode=require&sslpassword=hunter2",
                "sslpassword",
            ),
            ("postgres://u@127.0.0.1:1/x?Password=hunter2", "Password"),
        ] {
            let refused = super::Db::open(url, 1, super::Schema::AsIs).await;
            let said = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                said.contains(&format!("{name:?} is not supported")),
                "{said}"
            );
            assert!(!said.contains("hunter2"), "{said}");
        }
    }

    #[test]
    fn passwords_do_not_reach_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/tessera"),
            "postgres://app:***@db:5432/tessera"
        );
        assert_eq!(
            redact_url("postgres://app@db/tessera"),
            "postgres://app@db/tessera"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        for secret in [
            "host=db password=s3cret",
            "postgres://app@db/t?sslmode=require&password=s3cret",
            "postgres://app@db/t?Password=s3cret",
            "postgres://app@db/t?SSLPASSWORD=s3cret",
            "postgres://app:s3c@ret@db/t",
        ] {
            let shown = redact_url(secret);
            assert!(!shown.contains("s3c"), "{shown}");
        }
    }
}
