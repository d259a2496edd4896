//! The revocation log that the revocation feed serves (access tokens by
//! `jti`; a user's, a client's or a session's tokens), and used client
//! assertions (by issuer and `jti`, against replay).
//!
//! Every revocation is appended to `revocation_events` in the
//! transaction that causes it (disabling a user, ending a session, …), so
//! a change that committed always has its event and one that did not has
//! none. The row's id is the feed's cursor: ids commit in order (SQLite
//! has one writer; on PostgreSQL each appender first takes a
//! transaction-scoped advisory lock), so a reader that saw id N never
//! later finds a smaller one. On PostgreSQL the append also notifies
//! [`CHANNEL`], so every instance reads it at once.
//!
//! Each instance keeps the live events in memory ([`Revocations`]): the
//! server checks its own tokens against them (introspection, userinfo,
//! `/admin`) with the same [`RevocationSet`] a resource server's guard
//! keeps, and the feed serves them from there.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tessera_guard::revocation::{event_digest, Revocable, Revocation, RevocationSet};

use crate::db::{on_pool, Db};
use crate::Error;

/// How long past a cut-off (a user's, a client's, a session's) its event
/// is kept beyond the longest access-token lifetime: the longest leeway
/// a verifier allows on `exp` (300 s), and a code spent after its session
/// ended (codes live at most 10 minutes).
pub const MARGIN: i64 = 15 * 60;

/// The longest leeway a verifier may allow on `exp`
/// ([`tessera_jose::jwt::MAX_LEEWAY`]): a revoked token's event is kept
/// this long past its `exp`.
pub const LEEWAY: i64 = 300;

/// How far past the moment a user or client is cut off the cut reaches
/// (seconds). A token whose grant was under way when the change committed
/// (a password check takes a good fraction of a second), or that another
/// instance minted before it heard of the change, or on a clock a little
/// behind, is issued within it and refused with the others; the token
/// endpoint makes a token for a user or client cut within it wait until
/// the cut has passed (`http/token.rs`).
///
/// The cut is the database's whole second `X` of the change plus this. A
/// token another instance minted from its cache before it heard of the
/// change has an `iat` below `X + 4`: the change's fraction of a second
/// (one), how old that instance's copy of the log may be
/// ([`TRUSTED_FOR`], one) and how far its clock may run ahead
/// ([`crate::store::CLOCK_SPREAD`], two), so it is at or before the cut.
pub const CUT_MARGIN: i64 = 4;

/// How recently an instance's copy of the log must have been read through
/// for a request to be answered from it, or from the caches it clears (a
/// client cached before its secret was rotated): less than
/// [`CUT_MARGIN`], so a change made through another instance is read
/// here before the cut-off it sets has passed; twice the follower's
/// period (`serve::REVOCATION_SYNC`), so a copy that is followed stays
/// current while its readings take under half a second (one indexed
/// read of the events since the last); past that, requests read it
/// themselves, one reading for all that wait.
pub const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// The longest one statement of a reading of the log may take before the
/// reading fails (and the requests that waited for it are answered 503).
/// A batch is one indexed read of milliseconds; a connection that stopped
/// answering (a failover, a network cut that sends no reset) would
/// otherwise hold the reading, and with it every token request waiting
/// for its turn, until TCP gave up on it, a quarter of an hour later.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// `read`, or a 503-class error once [`READ_TIMEOUT`] has passed.
async fn within_read_timeout<T>(
    read: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    crate::db::within(READ_TIMEOUT, "reading the revocation log", read).await
}

/// When a copy of the log was last read through (shared with the caches
/// that learn of changes from it). Read on every token request: an atomic
/// count of nanoseconds since the first stamp taken in this process, 0
/// for never.
#[derive(Clone, Debug, Default)]
pub struct Synced(Arc<std::sync::atomic::AtomicU64>);

impl Synced {
    /// The moment the stamps count from (the first use in this process).
    fn epoch() -> std::time::Instant {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(std::time::Instant::now)
    }

    fn stamp(at: std::time::Instant) -> u64 {
        // One more than the nanoseconds since the epoch: 0 stays "never".
        u64::try_from(at.saturating_duration_since(Synced::epoch()).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether the copy was read through within `bound`.
    pub fn within(&self, bound: Duration) -> bool {
        let last = self.0.load(std::sync::atomic::Ordering::Acquire);
        last != 0
            && Synced::stamp(std::time::Instant::now()).saturating_sub(last)
                <= u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long ago the copy was last read through (`None`: never).
    pub fn ago(&self) -> Option<Duration> {
        let last = self.0.load(std::sync::atomic::Ordering::Acquire);
        (last != 0).then(|| {
            Duration::from_nanos(Synced::stamp(std::time::Instant::now()).saturating_sub(last))
        })
    }

    /// Read through as of `at` (when the reading began).
    fn mark(&self, at: std::time::Instant) {
        self.0
            .fetch_max(Synced::stamp(at), std::sync::atomic::Ordering::AcqRel);
    }
}

/// A failed reading, as the requests that waited for it are answered:
/// 503 if trying again soon may work (the database unreachable), else
/// 500, as the request that made the reading.
#[derive(Clone, Debug)]
struct Shared {
    why: String,
    transient: bool,
}

impl Shared {
    fn of(e: &Error) -> Shared {
        Shared {
            why: e.to_string(),
            transient: e.is_transient(),
        }
    }

    fn error(self) -> Error {
        if self.transient {
            Error::Unavailable(self.why)
        } else {
            Error::Database(self.why)
        }
    }
}

/// The PostgreSQL channel notified on every append.
pub const CHANNEL: &str = "tessera_revocations";

/// Appends one event (`$1` kind, `$2` value, `$3` cut-off, `$4` keep
/// until, `$5` now).
pub(crate) const APPEND: &str = "INSERT INTO revocation_events \
    (kind, value, issued_before, keep_until, created_at) VALUES ($1, $2, $3, $4, $5)";

/// Taken before an append on PostgreSQL: appenders commit one at a time,
/// in id order. Then every listening instance hears of it at commit.
pub(crate) const IN_ORDER: [&str; 2] = [
    "SELECT pg_advisory_xact_lock(7368756)",
    "SELECT pg_notify('tessera_revocations', '')",
];

/// The event that revokes access token `jti`, which expires at
/// `expires_at`: kept until no verifier's leeway accepts it.
pub(crate) fn token_revocation(jti: &str, expires_at: i64) -> Revocation {
    Revocation::Token {
        jti: jti.to_owned(),
        until: expires_at.saturating_add(LEEWAY),
    }
}

/// The columns of one event row.
pub(crate) struct Row {
    pub kind: &'static str,
    pub value: String,
    pub issued_before: Option<i64>,
    pub keep_until: i64,
}

impl Row {
    /// The row of `revocation`; an error for a kind this server does not
    /// store (the guard's `Revocation` may grow before the server does).
    pub(crate) fn of(revocation: Revocation) -> Result<Row, sqlx::Error> {
        Ok(match revocation {
            Revocation::Token { jti, until } => Row {
                kind: "token",
                value: jti,
                issued_before: None,
                keep_until: until,
            },
            Revocation::User {
                sub,
                issued_before,
                until,
            } => Row {
                kind: "user",
                value: sub,
                issued_before: Some(issued_before),
                keep_until: until,
            },
            Revocation::Client {
                client_id,
                issued_before,
                until,
            } => Row {
                kind: "client",
                value: client_id,
                issued_before: Some(issued_before),
                keep_until: until,
            },
            Revocation::Session { sid, until } => Row {
                kind: "session",
                value: sid,
                issued_before: None,
                keep_until: until,
            },
            Revocation::Key { kid, until } => Row {
                kind: "key",
                value: kid,
                issued_before: None,
                keep_until: until,
            },
            Revocation::Family { family, until } => Row {
                kind: "family",
                value: family,
                issued_before: None,
                keep_until: until,
            },
            other => {
                return Err(sqlx::Error::Protocol(format!(
                    "a revocation this server does not store: {other:?}"
                )))
            }
        })
    }
}

/// The longest access-token lifetime any start has allowed (seconds).
pub(crate) const LONGEST: &str = "SELECT seconds FROM longest_access_ttl WHERE id = 1";

/// Append `$revocation` in the transaction `$tx` of `$db`'s backend. A
/// cut-off (not a single token, which carries its own expiry) is kept at
/// least as long as the longest access-token lifetime any start of the
/// server has allowed ([`raise_longest_access_ttl`]), read here inside the
/// transaction: whatever lifetime the appender's configuration names.
macro_rules! append_revocation {
    ($db:expr, $tx:expr, $revocation:expr, $at:expr) => {{
        if $db.is_postgres() {
            for sql in $crate::store::revocation::IN_ORDER {
                sqlx::query(sql).execute(&mut *$tx).await?;
            }
        }
        let mut row = $crate::store::revocation::Row::of($revocation)?;
        let mut at: i64 = $at;
        if $db.is_postgres() && row.issued_before.is_some() {
            // A cut, and how long it is kept, by the database's clock,
            // which every instance keeps within 2 s of: the change may
            // come from an admin command on a host whose clock is off,
            // and a cut minutes behind would leave valid the tokens
            // minted since (kept as much too short, it would be forgotten
            // while the tokens it refuses live).
            let (now,): (i64,) = sqlx::query_as($crate::db::DATABASE_NOW)
                .fetch_one(&mut *$tx)
                .await?;
            row.issued_before = Some(now.saturating_add($crate::store::revocation::CUT_MARGIN));
            row.keep_until = row.keep_until.saturating_add(now.saturating_sub(at));
            at = now;
        }
        if row.kind != "token" {
            let longest: Option<(i64,)> = sqlx::query_as($crate::store::revocation::LONGEST)
                .fetch_optional(&mut *$tx)
                .await?;
            if let Some((longest,)) = longest {
                row.keep_until = row.keep_until.max(
                    at.saturating_add(longest)
                        .saturating_add($crate::store::revocation::MARGIN),
                );
            }
        }
        sqlx::query($crate::store::revocation::APPEND)
            .bind(row.kind)
            .bind(row.value)
            .bind(row.issued_before)
            .bind(row.keep_until)
            .bind(at)
            .execute(&mut *$tx)
            .await?;
    }};
}
pub(crate) use append_revocation;

/// Inside transaction `$tx`: append `$revocation` unless the log has an
/// event of the same kind and value, once `$count` (called only then)
/// allows it; evaluates to the [`Appended`]. Appenders take turns (the
/// lock on PostgreSQL, the one writer on SQLite), so two cannot both miss
/// the other's event.
macro_rules! append_unless_there {
    ($db:expr, $tx:expr, $revocation:expr, $at:expr, $count:expr) => {{
        use $crate::store::revocation::Appended;
        let revocation: tessera_guard::revocation::Revocation = $revocation;
        if $db.is_postgres() {
            sqlx::query($crate::store::revocation::IN_ORDER[0])
                .execute(&mut *$tx)
                .await?;
        }
        let row = $crate::store::revocation::Row::of(revocation.clone())?;
        let there: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM revocation_events WHERE kind = $1 AND value = $2 LIMIT 1",
        )
        .bind(row.kind)
        .bind(&row.value)
        .fetch_optional(&mut *$tx)
        .await?;
        let appended = if there.is_some() {
            Appended::Already
        } else if let Err(wait) = ($count)() {
            Appended::OverAllowance(wait)
        } else {
            Appended::Now
        };
        if appended == Appended::Now {
            $crate::store::revocation::append_revocation!($db, $tx, revocation, $at);
        }
        appended
    }};
}
pub(crate) use append_unless_there;

/// The longest access-token lifetime any start has allowed (seconds), if
/// a start recorded one.
pub async fn longest_access_ttl(db: &Db) -> Result<Option<i64>, Error> {
    let stored: Option<(i64,)> =
        on_pool!(db.read(), p => sqlx::query_as(LONGEST).fetch_optional(p).await)?;
    Ok(stored.map(|(s,)| s))
}

/// Record that this start allows access tokens of up to `seconds`: the
/// stored longest lifetime is raised to it, never lowered. Returns the
/// longest lifetime stored afterwards. The server calls it before it mints
/// a token, so every cut-off appended later (by any instance or admin
/// command) is kept until the tokens minted before it have expired.
pub async fn raise_longest_access_ttl(db: &Db, seconds: i64) -> Result<i64, Error> {
    let sql = if db.is_postgres() {
        "INSERT INTO longest_access_ttl (id, seconds) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE \
         SET seconds = GREATEST(longest_access_ttl.seconds, EXCLUDED.seconds) \
         RETURNING seconds"
    } else {
        "INSERT INTO longest_access_ttl (id, seconds) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET seconds = MAX(seconds, excluded.seconds) \
         RETURNING seconds"
    };
    // fetch_all: the statement runs to its end (and its implicit
    // transaction commits) before the answer is read.
    let stored: Vec<(i64,)> = on_pool!(db.write(), p => sqlx::query_as(sql)
        .bind(seconds).fetch_all(p).await)?;
    Ok(stored.first().map_or(seconds, |(s,)| *s))
}

/// How long the events of cut-offs are kept: the longest access-token
/// lifetime, plus [`MARGIN`] (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Keep(pub i64);

impl Keep {
    /// Every token of user `sub` issued up to [`CUT_MARGIN`] after `at`
    /// (the moment the change is written, inside its transaction).
    pub fn user(self, sub: &str, at: i64) -> Revocation {
        Revocation::User {
            sub: sub.to_owned(),
            issued_before: at.saturating_add(CUT_MARGIN),
            until: at.saturating_add(self.0),
        }
    }

    /// Every token of client `client_id` issued up to [`CUT_MARGIN`] after
    /// `at`.
    pub fn client(self, client_id: &str, at: i64) -> Revocation {
        Revocation::Client {
            client_id: client_id.to_owned(),
            issued_before: at.saturating_add(CUT_MARGIN),
            until: at.saturating_add(self.0),
        }
    }

    /// Every token of session `sid`.
    pub fn session(self, sid: &str, at: i64) -> Revocation {
        Revocation::Session {
            sid: sid.to_owned(),
            until: at.saturating_add(self.0),
        }
    }

    /// Every access token minted from refresh-token family `family`.
    pub fn family(self, family: &str, at: i64) -> Revocation {
        Revocation::Family {
            family: family.to_owned(),
            until: at.saturating_add(self.0),
        }
    }
}

/// Record a client assertion's `jti`; `false` if it was seen before (a
/// replay).
pub async fn use_assertion(
    db: &Db,
    issuer: &str,
    jti: &str,
    expires_at: i64,
) -> Result<bool, Error> {
    let inserted = on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO used_assertions (issuer, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    ).bind(issuer).bind(jti).bind(expires_at).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(inserted == 1)
}

/// Forget a client assertion's `jti` recorded by [`use_assertion`]: the
/// request that used it failed before it answered.
pub async fn forget_assertion(db: &Db, issuer: &str, jti: &str) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(
        "DELETE FROM used_assertions WHERE issuer = $1 AND jti = $2"
    ).bind(issuer).bind(jti).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// One event of the log, ready to send.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The cursor.
    pub id: i64,
    /// The event, as the feed's JSON.
    pub json: Arc<str>,
    until: i64,
}

/// The live events, in memory; see the module docs.
///
/// Events committed through any instance arrive with the next
/// [`Revocations::sync`]: the server runs it when PostgreSQL notifies an
/// append, and every half second in any case; an instance that revokes
/// syncs at once.
pub struct Revocations {
    log: RwLock<Log>,
    latest: tokio::sync::watch::Sender<i64>,
    syncing: tokio::sync::Mutex<()>,
    /// When a sync last read the log through.
    synced: Synced,
    /// When the last reading failed, and how (`None`: it did not).
    failed: std::sync::Mutex<Option<(std::time::Instant, Shared)>>,
    /// Told of every client a sync finds cut off, whichever sync reads
    /// the event first (the follower's, or one after a revocation here).
    on_client_cut: std::sync::OnceLock<ClientCutHook>,
    /// Told when a sync finds a signing key revoked, so that this
    /// instance reads its keys again and stops signing with it.
    on_key_revoked: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// What expired events are forgotten by: a clock that does not follow
    /// a jump forward. Forgotten by a clock an hour fast, events still
    /// needed would be gone for good (syncs read on past them), and once
    /// the clock is set right the tokens they revoked would pass again.
    forget_by: std::sync::Mutex<tessera_jose::SteadyClock>,
    /// A restored log was found and has not been read again whole yet:
    /// kept until a rereading completes, since the ids appended after the
    /// restore soon pass this copy's cursor, and the check that found it
    /// would no longer see it.
    reread: std::sync::atomic::AtomicBool,
}

/// What [`Revocations::when_client_cut`] calls.
type ClientCutHook = Box<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("latest", &*self.latest.borrow())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Log {
    events: VecDeque<Logged>,
    set: RevocationSet,
    last_id: i64,
    pruned_at: i64,
    /// The digests of the newest events forgotten as expired (at most
    /// [`PRUNED_KEPT`]), so a subscriber whose cursor stands on one is
    /// recognised rather than started over (events do not expire in id
    /// order: a quiet spell can outlast the newest while older ones live).
    pruned: std::collections::BTreeMap<i64, String>,
}

/// Digests of expired events kept for subscribers' cursors.
const PRUNED_KEPT: usize = 4096;

impl Default for Revocations {
    fn default() -> Revocations {
        Revocations::forgetting_by(tessera_jose::SteadyClock::new())
    }
}

/// What a counted revocation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Its event is in the log now.
    Now,
    /// The log had it already: nothing appended, nothing counted.
    Already,
    /// Not revoked: the allowance says to wait this long.
    OverAllowance(Duration),
}

/// What a subscriber that saw `after` gets next.
#[derive(Debug)]
pub struct Since {
    /// The subscriber's cursor is ahead of the log (the database was
    /// restored from a backup): it must start over from these events.
    pub reset: bool,
    /// The events after its cursor, oldest first.
    pub events: Vec<Logged>,
}

impl Revocations {
    /// An empty copy of the log that forgets expired events by `clock`
    /// (the default: a [`tessera_jose::SteadyClock`] starting now).
    pub fn forgetting_by(clock: tessera_jose::SteadyClock) -> Revocations {
        Revocations {
            log: RwLock::default(),
            latest: tokio::sync::watch::channel(0).0,
            syncing: tokio::sync::Mutex::new(()),
            synced: Synced::default(),
            failed: std::sync::Mutex::new(None),
            on_client_cut: std::sync::OnceLock::new(),
            on_key_revoked: std::sync::OnceLock::new(),
            forget_by: std::sync::Mutex::new(clock),
            reread: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Log> {
        self.log.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a token with these claims is revoked.
    pub fn refuses(&self, token: Revocable<'_>) -> bool {
        self.read().set.refuses(token)
    }

    /// The latest cut-off in force for user `sub` or client
    /// `client_id`: a token minted for them now must be issued after it.
    pub fn cut_off(&self, sub: Option<&str>, client_id: Option<&str>) -> Option<i64> {
        self.read().set.cut_off(sub, client_id)
    }

    /// The cursor of the newest event held.
    pub fn latest(&self) -> i64 {
        self.read().last_id
    }

    /// Whether a sync read the log through within `bound`: if not, this
    /// copy may lack events committed through other instances, and must
    /// not be passed on as current.
    pub fn synced_within(&self, bound: std::time::Duration) -> bool {
        self.synced.within(bound)
    }

    /// When this copy was last read through, for the caches that learn
    /// of changes from it ([`crate::store::clients::ClientCache::follow`]).
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }

    /// Make sure this copy may be trusted on a request: read through
    /// within [`TRUSTED_FOR`], or read now (an error when the database
    /// cannot be read: the request is answered 503 rather than from a
    /// copy that may lack a revocation made through another instance).
    pub async fn current(&self, db: &Db) -> Result<(), Error> {
        if self.synced.within(TRUSTED_FOR) {
            return Ok(());
        }
        self.sync_unless_within(db, Some(TRUSTED_FOR))
            .await
            .map(drop)
    }

    /// Woken on every new event (the value is the newest cursor).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.latest.subscribe()
    }

    /// Live events held.
    pub fn len(&self) -> usize {
        self.read().events.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the event `id` is in the log with this
    /// [`tessera_guard::revocation::event_digest`]: false when it is
    /// another event (a restored log that has grown back past `id`), or
    /// gone (expired, or never in this log).
    pub fn holds(&self, id: i64, digest: &str) -> bool {
        let log = self.read();
        let at = log.events.partition_point(|e| e.id < id);
        match log.events.get(at).filter(|e| e.id == id) {
            Some(event) => event_digest(&event.json) == digest,
            None => log.pruned.get(&id).is_some_and(|d| d == digest),
        }
    }

    /// Whether an event cutting user `sub` off reached this copy after
    /// cursor `after` ([`Revocations::latest`] when a request began): a
    /// change that committed while the request was under way, whatever
    /// the clocks say (appends take turns, so ids follow commits).
    pub fn user_cut_since(&self, after: i64, sub: &str) -> bool {
        let log = self.read();
        let start = log.events.partition_point(|e| e.id <= after);
        log.events.range(start..).any(|e| {
            matches!(
                serde_json::from_str::<Revocation>(&e.json),
                Ok(Revocation::User { sub: cut, .. }) if cut == sub
            )
        })
    }

    /// The events after cursor `after`, at most `max`.
    pub fn since(&self, after: i64, max: usize) -> Since {
        let log = self.read();
        let reset = after > log.last_id;
        let after = if reset { 0 } else { after };
        let start = log.events.partition_point(|e| e.id <= after);
        Since {
            reset,
            events: log.events.range(start..).take(max).cloned().collect(),
        }
    }

    /// Whether the access token `jti` is revoked by `jti`.
    pub fn refuses_jti(&self, jti: &str) -> bool {
        self.refuses(Revocable {
            jti: Some(jti),
            ..Revocable::default()
        })
    }

    /// Revoke the access token `jti` (whose `exp` is `expires_at`): in
    /// the log, then here at once. Not counted against any allowance.
    pub async fn revoke_token(&self, db: &Db, jti: &str, expires_at: i64) -> Result<(), Error> {
        self.revoke_token_counted(db, jti, expires_at, || Ok(()))
            .await
            .map(drop)
    }

    /// Revoke the access token `jti` as [`Revocations::revoke_token`]
    /// does, calling `count` only when an event is about to be appended:
    /// a token revoked already (here, or by an event another instance
    /// appended) costs nothing, and concurrent revocations of one token
    /// append one event. `count` saying to wait appends nothing.
    pub async fn revoke_token_counted(
        &self,
        db: &Db,
        jti: &str,
        expires_at: i64,
        count: impl FnOnce() -> Result<(), Duration>,
    ) -> Result<Appended, Error> {
        if self.refuses_jti(jti) {
            return Ok(Appended::Already);
        }
        self.append_once(db, token_revocation(jti, expires_at), count)
            .await
    }

    /// End every token of session `sid` through the log (a session whose
    /// row is gone, or that ended without an event): once, however often
    /// it is asked.
    pub async fn revoke_session(&self, db: &Db, sid: &str, keep: Keep) -> Result<(), Error> {
        let session = Revocable {
            sid: Some(sid),
            ..Revocable::default()
        };
        if self.refuses(session) {
            return Ok(());
        }
        let revocation = keep.session(sid, crate::store::now());
        self.append_once(db, revocation, || Ok(())).await.map(drop)
    }

    /// Append `revocation` unless the log has an event of the same kind
    /// and value (appenders take turns, so two cannot both miss it), after
    /// `count` allows it; then read the log here.
    async fn append_once(
        &self,
        db: &Db,
        revocation: Revocation,
        count: impl FnOnce() -> Result<(), Duration>,
    ) -> Result<Appended, Error> {
        let at = crate::store::now();
        let appended = on_pool!(db.write(), p => {
            let mut tx = p.begin_with(db.begin_write()).await?;
            // No `return` in here: it would leave the function, and skip
            // reading the log below.
            let appended = append_unless_there!(db, tx, revocation, at, count);
            if appended == Appended::Now {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<_, sqlx::Error>(appended)
        })?;
        // Committed (or there already): applied here now, or by the
        // follower soon.
        if !matches!(appended, Appended::OverAllowance(_)) {
            self.catch_up(db).await;
        }
        Ok(appended)
    }

    /// [`Revocations::sync`] after a revocation this instance committed,
    /// so it applies here at once; a failure is logged, not returned (the
    /// change committed, and the server's follower reads it soon).
    pub async fn catch_up(&self, db: &Db) {
        if let Err(e) = self.sync(db).await.map(drop) {
            tracing::warn!(error = %e, "revocation log not read after a revocation; the follower will");
        }
    }

    /// Read the events appended since the last sync (through any
    /// instance), all of them, and forget those past their time. Returns
    /// the clients cut off by the new events (their cached copies must go:
    /// a rotated secret must stop working everywhere, not in a while).
    pub async fn sync(&self, db: &Db) -> Result<Vec<String>, Error> {
        self.sync_unless_within(db, None).await
    }

    /// [`Revocations::sync`], unless (once its turn comes) a sync read the
    /// log through within `bound`: requests that find the copy stale at
    /// once wait for one reading, not one each.
    async fn sync_unless_within(
        &self,
        db: &Db,
        bound: Option<Duration>,
    ) -> Result<Vec<String>, Error> {
        let asked = std::time::Instant::now();
        let _one_at_a_time = self.syncing.lock().await;
        if let Some(bound) = bound {
            if self.synced.within(bound) {
                return Ok(Vec::new());
            }
            // A reading that failed while this request waited answers it
            // too: during an outage each request waits for one failed
            // reading at most, not for every reading queued before it.
            if let Some(shared) = self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(at, _)| *at >= asked)
                .map(|(_, shared)| shared.clone())
            {
                return Err(shared.error());
            }
        }
        let read = self.read_through(db).await;
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = match &read {
            Ok(_) => None,
            Err(e) => Some((std::time::Instant::now(), Shared::of(e))),
        };
        read
    }

    /// The body of [`Revocations::sync`], its turn taken.
    async fn read_through(&self, db: &Db) -> Result<Vec<String>, Error> {
        const BATCH: i64 = 10_000;
        // Current as of when the reading began.
        let started = std::time::Instant::now();
        let now = self
            .forget_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .now();
        // A restored log is read again from the start into a copy of its
        // own, which replaces this one only once complete: the set in use
        // meanwhile still refuses what it refused.
        use std::sync::atomic::Ordering;
        if !self.reread.load(Ordering::Acquire) && within_read_timeout(self.restored(db)).await? {
            tracing::warn!("the revocation log is behind this instance's copy (a restored backup?): reading it again");
            self.reread.store(true, Ordering::Release);
        }
        let mut rereading = self.reread.load(Ordering::Acquire).then(Log::default);
        // Read in batches; what a failed batch leaves unread is read by
        // the next sync. Each batch applied to the copy in use is told to
        // the hooks at once, before the next await: a reading that fails,
        // or is dropped (a request that waited for it went away), has
        // told them what it applied, and the next reading starts past it.
        // A copy read again is told when it replaces the one in use.
        let mut cut = Vec::new();
        let mut fresh_changed = Changed::default();
        let read = async {
            loop {
                let after = match &rereading {
                    Some(fresh) => fresh.last_id,
                    None => self.read().last_id,
                };
                let rows: Vec<(i64, String, String, Option<i64>, i64)> =
                    within_read_timeout(async {
                        Ok(on_pool!(db.read(), p => sqlx::query_as(
                        "SELECT id, kind, value, issued_before, keep_until FROM revocation_events \
                         WHERE id > $1 AND keep_until > $2 ORDER BY id LIMIT $3"
                    ).bind(after).bind(now).bind(BATCH).fetch_all(p).await)?)
                    })
                    .await?;
                let full = rows.len() as i64 == BATCH;
                match &mut rereading {
                    Some(fresh) => {
                        apply(fresh, rows, &mut fresh_changed)?;
                    }
                    None => {
                        let mut batch = Changed::default();
                        let (applied, newest) = {
                            let mut log = self.log.write().unwrap_or_else(|p| p.into_inner());
                            let before = log.last_id;
                            let applied = apply(&mut log, rows, &mut batch);
                            (applied, (log.last_id > before).then_some(log.last_id))
                        };
                        self.tell_hooks(&batch);
                        cut.append(&mut batch.clients);
                        if let Some(last) = newest {
                            self.latest.send_replace(last);
                        }
                        applied?;
                    }
                }
                if !full {
                    break;
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        read?;
        if let Some(fresh) = rereading {
            let last = fresh.last_id;
            *self.log.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            self.reread.store(false, Ordering::Release);
            self.latest.send_replace(last);
            self.tell_hooks(&fresh_changed);
            cut.append(&mut fresh_changed.clients);
        }
        let mut log = self.log.write().unwrap_or_else(|p| p.into_inner());
        if now >= log.pruned_at.saturating_add(10) {
            log.prune(now);
        }
        drop(log);
        // The caches were told first: once the copy counts as current, a
        // cached client it cut is gone.
        self.synced.mark(started);
        Ok(cut)
    }

    /// Tell the hooks what a reading found: the clients cut off, a key
    /// revoked.
    fn tell_hooks(&self, changed: &Changed) {
        if let Some(hook) = self.on_client_cut.get() {
            changed.clients.iter().for_each(|client_id| hook(client_id));
        }
        if changed.keys {
            if let Some(hook) = self.on_key_revoked.get() {
                hook();
            }
        }
    }

    /// Call `hook` with every client a sync finds cut off (deleted, its
    /// secret rotated), so caches drop it at once whichever sync reads
    /// the event. Set once; later calls are ignored.
    pub fn when_client_cut(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_client_cut.set(Box::new(hook));
    }

    /// Call `hook` whenever a sync finds a signing key revoked
    /// ([`Revocation::Key`]). Set once; later calls are ignored.
    pub fn when_key_revoked(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_key_revoked.set(Box::new(hook));
    }

    /// Whether the log's id sequence is behind what this instance has read
    /// (the database was restored from a backup): ids would be reused.
    async fn restored(&self, db: &Db) -> Result<bool, Error> {
        let held = self.read().last_id;
        if held == 0 {
            return Ok(false);
        }
        let issued: Option<i64> = match db {
            Db::Postgres(p) => sqlx::query_scalar(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM revocation_events_id_seq",
            )
            .fetch_optional(p)
            .await
            .map_err(Error::from)?,
            Db::Sqlite { reader, .. } => sqlx::query_scalar(
                "SELECT seq FROM sqlite_sequence WHERE name = 'revocation_events'",
            )
            .fetch_optional(reader)
            .await
            .map_err(Error::from)?,
        };
        Ok(issued.unwrap_or(0) < held)
    }
}

impl Log {
    /// Forget the events past their time, keeping the newest ones'
    /// digests (only theirs are computed: this runs under the write lock).
    fn prune(&mut self, now: i64) {
        self.set.prune(now);
        // Events are in id order: the newest expired are the last ones.
        let expired: Vec<usize> = self
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.until <= now)
            .map(|(i, _)| i)
            .collect();
        let newest = expired.len().saturating_sub(PRUNED_KEPT);
        for &i in &expired[newest..] {
            let event = &self.events[i];
            self.pruned.insert(event.id, event_digest(&event.json));
        }
        while self.pruned.len() > PRUNED_KEPT {
            self.pruned.pop_first();
        }
        self.events.retain(|e| e.until > now);
        self.pruned_at = now;
    }
}

/// Add rows read from the log to `log`; its newest id if any were added.
/// What a reading of the log found changed, for the hooks.
#[derive(Default)]
struct Changed {
    /// Clients cut off (deleted, their secret rotated).
    clients: Vec<String>,
    /// Whether a signing key was revoked.
    keys: bool,
}

/// An event of a kind this version does not know (a newer version's,
/// written while this one still runs) stops the reading there, an error:
/// the events after it wait, this copy stops counting as current (the
/// token endpoint answers 503, `/readyz` says not ready) until this
/// instance is upgraded. Skipping it would keep honouring what it revokes
/// (a leaked key) here, and pass the cursor past it to every guard that
/// follows this instance's feed.
fn apply(
    log: &mut Log,
    rows: Vec<(i64, String, String, Option<i64>, i64)>,
    changed: &mut Changed,
) -> Result<Option<i64>, Error> {
    let mut newest = None;
    let mut stopped = None;
    for (id, kind, value, issued_before, until) in rows {
        let cut = issued_before.unwrap_or(0);
        let revocation = match kind.as_str() {
            "token" => Revocation::Token { jti: value, until },
            "user" => Revocation::User {
                sub: value,
                issued_before: cut,
                until,
            },
            "client" => {
                changed.clients.push(value.clone());
                Revocation::Client {
                    client_id: value,
                    issued_before: cut,
                    until,
                }
            }
            "session" => Revocation::Session { sid: value, until },
            "family" => Revocation::Family {
                family: value,
                until,
            },
            "key" => {
                changed.keys = true;
                Revocation::Key { kid: value, until }
            }
            other => {
                stopped = Some(Error::Unavailable(format!(
                    "the revocation log holds event {id} of kind {other:?}, which this version \
                     of tessera does not know (a newer instance wrote it): upgrade this instance"
                )));
                break;
            }
        };
        let json = match serde_json::to_string(&revocation) {
            Ok(json) => json,
            Err(e) => {
                stopped = Some(Error::Database(format!("revocation event: {e}")));
                break;
            }
        };
        log.set.insert(&revocation);
        log.events.push_back(Logged {
            id,
            json: json.into(),
            until,
        });
        newest = Some(id);
    }
    if let Some(id) = newest {
        log.last_id = log.last_id.max(id);
    }
    match stopped {
        Some(e) => Err(e),
        None => Ok(newest.map(|_| log.last_id)),
    }
}

/// Keep `revocations` in step with the log: at once when PostgreSQL
/// notifies an append (at any instance), and every `period` in any case.
pub async fn follow(db: Db, revocations: Arc<Revocations>, period: std::time::Duration) {
    let mut listener = listen(&db).await;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut failing, mut said): (Option<std::time::Instant>, Option<std::time::Instant>) =
        (None, None);
    loop {
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    _ = ticker.tick() => {}
                    heard = l.recv() => if let Err(e) = heard {
                        // The listener reconnects on its next call; the
                        // ticker covers the gap.
                        tracing::warn!(error = %e, "revocation notifications interrupted");
                        tokio::time::sleep(period).await;
                    }
                }
                // One reading for every append notified so far: a reading
                // per notification falls behind appends that come faster
                // than a query, and the notifications not taken pile up in
                // PostgreSQL's queue, which is shared, never trimmed past
                // its slowest listener, and fails every appending commit
                // once full.
                while l.next_buffered().is_some() {}
            }
            None => {
                ticker.tick().await;
            }
        }
        match revocations.sync(&db).await {
            Ok(_) => {
                if let Some(since) = failing.take() {
                    tracing::info!(after = ?since.elapsed(), "revocation sync works again");
                }
            }
            // Said at the first failure, then once a minute while it
            // lasts, not twice a second.
            Err(e) => {
                let now = std::time::Instant::now();
                if failing.is_none() || said.is_none_or(|at| now - at >= FAILING_SAID_EVERY) {
                    tracing::error!(error = %e, "revocation sync failed");
                    said = Some(now);
                }
                failing.get_or_insert(now);
            }
        }
    }
}

/// How often the follower says that the reading still fails.
const FAILING_SAID_EVERY: Duration = Duration::from_secs(60);

/// A listener on [`CHANNEL`], on a connection of its own (not one of the
/// pool's); `None` on SQLite, or when it cannot be had (the ticker then
/// does the work).
async fn listen(db: &Db) -> Option<sqlx::postgres::PgListener> {
    let Db::Postgres(pool) = db else {
        return None;
    };
    let options = pool.connect_options().as_ref().clone();
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut listener = match sqlx::postgres::PgListener::connect_with(&own).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "no revocation notifications; polling only");
            return None;
        }
    };
    if let Err(e) = listener.listen(CHANNEL).await {
        tracing::warn!(error = %e, "no revocation notifications; polling only");
        return None;
    }
    Some(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_row(id: i64, jti: &str, until: i64) -> (i64, String, String, Option<i64>, i64) {
        (id, "token".into(), jti.into(), None, until)
    }

    #[test]
    fn a_cursor_on_an_expired_event_is_still_recognised() {
        let revocations = Revocations::default();
        {
            let mut log = revocations.log.write().unwrap();
            let rows = vec![
                token_row(1, "a", 100),
                token_row(2, "b", 50),
                token_row(3, "c", 100),
            ];
            apply(&mut log, rows, &mut Changed::default()).unwrap();
        }
        let digest = |id: i64| {
            let event = revocations.since(id - 1, 1).events.remove(0);
            event_digest(&event.json)
        };
        let (b, c) = (digest(2), digest(3));
        revocations.log.write().unwrap().prune(60);
        // `b` expired (the newest at some cursor's place while older
        // events live): gone from the log, still named by its digest.
        assert_eq!(revocations.since(0, 10).events.len(), 2);
        assert!(revocations.holds(2, &b));
        assert!(!revocations.holds(2, &c), "another event's digest");
        assert!(revocations.holds(3, &c));
        assert!(!revocations.holds(4, &c), "never there");
        // Only the newest expired events' digests are kept.
        {
            let mut log = revocations.log.write().unwrap();
            let n = i64::try_from(PRUNED_KEPT).unwrap() + 10;
            let rows = (0..n).map(|i| token_row(10 + i, "x", 70)).collect();
            apply(&mut log, rows, &mut Changed::default()).unwrap();
            log.prune(80);
            assert_eq!(log.pruned.len(), PRUNED_KEPT);
            assert!(!log.pruned.contains_key(&2));
        }
    }
}
