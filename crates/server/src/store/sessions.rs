//! Sign-in sessions: a person logged in at this server, in the database so
//! that every instance behind a load balancer shares them. The browser
//! holds a random value in a cookie; only its digest is stored. `sid` is
//! the session's public id (ID tokens, logout tokens, the admin views).

use serde::Serialize;
use zeroize::Zeroizing;

use crate::db::{on_pool, Db};
use crate::secret::{random_id, random_token, token_digest};
use crate::store::now;
use crate::store::revocation::Keep;
use crate::Error;

/// How long sessions live.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// Ended after this long without use (seconds).
    pub idle: i64,
    /// Ended this long after the login, used or not (seconds).
    pub absolute: i64,
}

/// A live session.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Session {
    /// Public id.
    pub sid: String,
    /// The user.
    pub user_id: String,
    /// When the user authenticated.
    pub auth_time: i64,
    /// When it started.
    pub created_at: i64,
    /// When it was last used.
    pub last_seen: i64,
    /// Its absolute end.
    pub expires_at: i64,
}

/// A live session as an authorization request for one client sees it:
/// with its user's scopes, the consent on record for the client, and
/// whether the client is already among the session's (one query).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ForClient {
    /// The session.
    #[sqlx(flatten)]
    pub session: Session,
    /// The user's scopes, space-separated.
    pub user_scopes: String,
    /// The scopes the user allowed the client, if any.
    pub consent: Option<String>,
    /// Whether the session has signed in to the client before.
    pub client_known: bool,
}

/// A session as the admin views list it, with its user's name.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Listed {
    /// Public id.
    pub sid: String,
    /// The user's login name.
    pub username: String,
    /// When it started.
    pub created_at: i64,
    /// When the user authenticated.
    pub auth_time: i64,
    /// When it was last used.
    pub last_seen: i64,
    /// Its absolute end.
    pub expires_at: i64,
    /// Whether the person is signed in by it (within its idle and absolute
    /// lifetimes); false for a session kept only by the refresh tokens
    /// issued in it (offline access), listed when asked for.
    pub signed_in: bool,
}

/// What ending a session touched: the clients it signed in to (those with
/// a back-channel logout URI are told through `store::logouts`) and how
/// many refresh-token families it revoked.
#[derive(Clone, Debug)]
pub struct Ended {
    /// The session.
    pub session: Session,
    /// The clients it signed in to.
    pub clients: Vec<String>,
    /// Refresh-token families revoked with it.
    pub families_revoked: u64,
}

pub(crate) const COLUMNS: &str = "sid, user_id, auth_time, created_at, last_seen, expires_at";

/// On PostgreSQL, lock every live session of the user named `$1`, before
/// their logouts are queued ([`QUEUE_LOGOUTS_OF_USER`]) and they end:
/// a client recorded in one meanwhile (`add_client`, which holds the
/// session `FOR SHARE`) either came first, and is queued with the others,
/// or waits, and finds the session ended. Unlocked, one that committed
/// between the queueing and the end was never told; and a logout of one of
/// the sessions, which locks it before queueing its own, deadlocked with
/// this on a delivery both queued.
pub(crate) const LOCK_SESSIONS_OF_USER: &str = "SELECT sid FROM sessions \
     WHERE user_id = (SELECT id FROM users WHERE username = $1) AND ended_at IS NULL \
     FOR NO KEY UPDATE";

/// Queue the back-channel logouts of every live session of the user named
/// `$2`, at `$1` (run in the transaction that ends them).
pub(crate) const QUEUE_LOGOUTS_OF_USER: &str =
    "INSERT INTO logout_deliveries (id, client_id, uri, sid, subject, attempts, next_attempt_at, created_at) \
     SELECT s.sid || ' ' || c.client_id, c.client_id, c.backchannel_logout_uri, s.sid, s.user_id, 0, $1, $1 \
     FROM sessions s JOIN session_clients sc ON sc.sid = s.sid JOIN clients c ON c.client_id = sc.client_id \
     WHERE s.user_id = (SELECT id FROM users WHERE username = $2) AND s.ended_at IS NULL \
     AND c.backchannel_logout_uri IS NOT NULL ON CONFLICT DO NOTHING";

/// End every live session of the user named `$2`, at `$1`.
pub(crate) const END_SESSIONS_OF_USER: &str = "UPDATE sessions SET ended_at = $1 \
     WHERE user_id = (SELECT id FROM users WHERE username = $2) AND ended_at IS NULL";

/// Who a login has just checked: the user's id and the password hash the
/// password was checked against.
#[derive(Clone, Copy)]
pub struct LoggedIn<'a> {
    /// The user's id.
    pub user_id: &'a str,
    /// The hash the password matched.
    pub password_hash: &'a str,
}

impl std::fmt::Debug for LoggedIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedIn")
            .field("user_id", &self.user_id)
            .field("password_hash", &"[REDACTED]")
            .finish()
    }
}

/// The condition a session's write carries: the user still has the
/// password the login checked, and is enabled. On PostgreSQL the user's
/// row is locked until the write commits, so a password change or a
/// disabling at that moment either comes first (and the write does
/// nothing) or waits and then ends the session with the others.
fn still_checked(db: &Db, user: &str, hash: &str) -> String {
    let lock = if db.is_postgres() { " FOR SHARE" } else { "" };
    format!(
        "EXISTS (SELECT 1 FROM users WHERE id = {user} AND password_hash = {hash} \
         AND NOT disabled{lock})"
    )
}

/// Start a session for a user a login has just checked, in the browser
/// whose browser cookie is `browser`; returns the session cookie's value
/// (shown once) and the session, or `None` when the user's password
/// changed or the user was disabled since the check.
pub async fn start(
    db: &Db,
    login: LoggedIn<'_>,
    policy: SessionPolicy,
    browser: &str,
) -> Result<Option<(Zeroizing<String>, Session)>, Error> {
    let cookie = random_token()?;
    let at = now();
    let session = Session {
        sid: random_id()?,
        user_id: login.user_id.to_owned(),
        auth_time: at,
        created_at: at,
        last_seen: at,
        expires_at: at.saturating_add(policy.absolute),
    };
    let sql = format!(
        "INSERT INTO sessions (id_hash, sid, user_id, auth_time, created_at, last_seen, expires_at, \
         browser_hash) SELECT $1, $2, $3, $4, $4, $4, $5, $7 WHERE {}",
        still_checked(db, "$3", "$6")
    );
    let inserted = on_pool!(db.write(), p => sqlx::query(&sql)
        .bind(token_digest(&cookie)).bind(&session.sid).bind(login.user_id).bind(at)
        .bind(session.expires_at).bind(login.password_hash).bind(token_digest(browser))
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok((inserted == 1).then_some((cookie, session)))
}

/// A new login by the user of the live session `sid`: the same session
/// goes on under a new cookie value (no fixation), authenticated now and
/// with a new absolute lifetime, so the apps it signed in to, and the
/// refresh tokens issued in it, go on too. `None` when the session is no
/// longer live or the user's password changed since the check (then a
/// new session is started, or refused).
pub async fn renew(
    db: &Db,
    sid: &str,
    login: LoggedIn<'_>,
    policy: SessionPolicy,
) -> Result<Option<(Zeroizing<String>, Session)>, Error> {
    let cookie = random_token()?;
    let at = now();
    // Never back (see `touch`): another instance, its clock ahead, may
    // have recorded a later use.
    let later = if db.is_postgres() { "GREATEST" } else { "MAX" };
    let sql = format!(
        "UPDATE sessions SET id_hash = $1, auth_time = $2, last_seen = {later}(last_seen, $2), \
         expires_at = $3 \
         WHERE sid = $4 AND user_id = $5 AND ended_at IS NULL AND expires_at > $2 AND {} \
         RETURNING {COLUMNS}",
        still_checked(db, "$5", "$6")
    );
    // Read to the end: a failed commit must come back as an error (`db`).
    let renewed = on_pool!(db.write(), p => sqlx::query_as::<_, Session>(&sql)
        .bind(token_digest(&cookie)).bind(at).bind(at.saturating_add(policy.absolute))
        .bind(sid).bind(login.user_id).bind(login.password_hash)
        .fetch_all(p).await)?;
    Ok(renewed.into_iter().next().map(|s| (cookie, s)))
}

/// The live session whose cookie value is `cookie`: not ended, not past
/// its absolute end, used within the idle time, and its user enabled.
pub async fn find(db: &Db, cookie: &str, policy: SessionPolicy) -> Result<Option<Session>, Error> {
    let at = now();
    let sql = format!(
        "SELECT s.{} FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id_hash = $1 AND s.ended_at IS NULL AND s.expires_at > $2 AND s.last_seen > $3 \
         AND NOT u.disabled",
        COLUMNS.replace(", ", ", s.")
    );
    let session = on_pool!(db.read(), p => sqlx::query_as::<_, Session>(&sql)
        .bind(token_digest(cookie)).bind(at).bind(at.saturating_sub(policy.idle))
        .fetch_optional(p).await)?;
    Ok(session)
}

/// What a logout ends, of the sessions not ended (alias `s`, `$2` the
/// time now): one not past its absolute end, however long unused, and one
/// past it whose refresh families live on. Past the idle time or the
/// absolute end a session signs no one in, but the families started in it
/// live to `tokens.session_max` (offline access), and only ending the
/// session revokes them: a logout that skipped it would end nothing while
/// it said it had. Retention keeps such a session's row for as long
/// (`retention.rs`).
const ENDABLE: &str = "s.ended_at IS NULL AND (s.expires_at > $2 OR EXISTS \
     (SELECT 1 FROM refresh_families f WHERE f.sid = s.sid AND f.revoked_at IS NULL AND f.expires_at > $2))";

/// The session whose cookie value is `cookie` that a logout ends
/// (`ENDABLE`).
pub async fn find_to_end(db: &Db, cookie: &str) -> Result<Option<Session>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM sessions s WHERE s.id_hash = $1 AND {ENDABLE}");
    let session = on_pool!(db.read(), p => sqlx::query_as::<_, Session>(&sql)
        .bind(token_digest(cookie)).bind(now()).fetch_optional(p).await)?;
    Ok(session)
}

const FOR_CLIENT: &str = "SELECT s.sid, s.user_id, s.auth_time, s.created_at, s.last_seen, s.expires_at, \
     u.scopes AS user_scopes, c.scope AS consent, \
     EXISTS (SELECT 1 FROM session_clients sc WHERE sc.sid = s.sid AND sc.client_id = $4) AS client_known \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     LEFT JOIN consents c ON c.user_id = s.user_id AND c.client_id = $4 \
     WHERE s.ended_at IS NULL AND s.expires_at > $2 AND s.last_seen > $3 AND NOT u.disabled AND ";

/// The live session of cookie value `cookie`, seen by `client_id`.
pub async fn find_for_client(
    db: &Db,
    cookie: &str,
    policy: SessionPolicy,
    client_id: &str,
) -> Result<Option<ForClient>, Error> {
    let at = now();
    let sql = format!("{FOR_CLIENT}s.id_hash = $1");
    let found = on_pool!(db.read(), p => sqlx::query_as::<_, ForClient>(&sql)
        .bind(token_digest(cookie)).bind(at).bind(at.saturating_sub(policy.idle)).bind(client_id)
        .fetch_optional(p).await)?;
    Ok(found)
}

/// The live session `sid`, seen by `client_id` (after a login).
pub async fn by_sid_for_client(
    db: &Db,
    sid: &str,
    policy: SessionPolicy,
    client_id: &str,
) -> Result<Option<ForClient>, Error> {
    let at = now();
    let sql = format!("{FOR_CLIENT}s.sid = $1");
    let found = on_pool!(db.read(), p => sqlx::query_as::<_, ForClient>(&sql)
        .bind(sid).bind(at).bind(at.saturating_sub(policy.idle)).bind(client_id)
        .fetch_optional(p).await)?;
    Ok(found)
}

/// The session with public id `sid` that a logout ends (`ENDABLE`).
pub async fn by_sid(db: &Db, sid: &str) -> Result<Option<Session>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM sessions s WHERE s.sid = $1 AND {ENDABLE}");
    let session = on_pool!(db.read(), p => sqlx::query_as::<_, Session>(&sql)
        .bind(sid).bind(now()).fetch_optional(p).await)?;
    Ok(session)
}

/// Record a use (the idle clock restarts): one a minute, or one every
/// quarter of the idle time when that is shorter. A use is never recorded
/// as earlier than one already recorded: another instance, its clock
/// ahead, may have recorded one since `session` was read, and writing
/// this host's earlier time over it would bring the idle end closer.
pub async fn touch(db: &Db, session: &Session, policy: SessionPolicy) -> Result<(), Error> {
    let at = now();
    if !use_is_due(session.last_seen, at, policy.idle) {
        return Ok(());
    }
    on_pool!(db.write(), p => sqlx::query(
            "UPDATE sessions SET last_seen = $1 WHERE sid = $2 AND last_seen < $1")
        .bind(at).bind(&session.sid).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Whether a use at `at` of a session last recorded as used at
/// `last_seen` is written: a minute after the last (a write per request
/// would cost every silent sign-in one), or a quarter of the idle time
/// after it when that is shorter, so that a session in use never looks
/// idle. With one
/// write a minute and a one-minute idle time, uses 30 s apart were never
/// recorded, and the session ended while in use.
fn use_is_due(last_seen: i64, at: i64, idle: i64) -> bool {
    at.saturating_sub(last_seen) >= (idle / 4).clamp(1, 60)
}

/// Record that `client_id` got a code in session `sid`, while the session
/// is not ended.
///
/// On PostgreSQL the session's row is held (`FOR SHARE`) while it is
/// recorded: an end of the session under way (a logout in another tab)
/// either waits for the record, and queues this client's back-channel
/// logout with the others, or comes first, and nothing is recorded (the
/// code the caller goes on to issue is refused at the token endpoint, its
/// session ended). Before, the record could slip in after the end had
/// read the session's clients: the client got its tokens and never heard
/// of the logout. (On SQLite the one writer runs the two one after the
/// other.)
pub async fn add_client(db: &Db, sid: &str, client_id: &str) -> Result<(), Error> {
    let sql = if db.is_postgres() {
        "INSERT INTO session_clients (sid, client_id) SELECT $1, $2 \
         WHERE EXISTS (SELECT 1 FROM sessions WHERE sid = $1 AND ended_at IS NULL FOR SHARE) \
         ON CONFLICT DO NOTHING"
    } else {
        "INSERT INTO session_clients (sid, client_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    };
    on_pool!(db.write(), p => sqlx::query(sql)
        .bind(sid).bind(client_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The sessions started in the browser whose browser cookie is `browser`
/// that a logout ends (`ENDABLE`), as `(sid, user_id)`: besides the one
/// its session cookie names, those of logins sent at the same moment (two
/// tabs, a double click), whose cookies it did not keep.
pub async fn of_browser(db: &Db, browser: &str) -> Result<Vec<(String, String)>, Error> {
    let sql = format!(
        "SELECT s.sid, s.user_id FROM sessions s WHERE s.browser_hash = $1 AND {ENDABLE} \
         ORDER BY s.created_at"
    );
    let found = on_pool!(db.read(), p => sqlx::query_as(&sql)
        .bind(token_digest(browser)).bind(now()).fetch_all(p).await)?;
    Ok(found)
}

/// End session `sid` and revoke the refresh-token families started in it
/// and its access tokens (the revocation feed), in one transaction with
/// `recorded`'s event. `None` when it was not live.
pub async fn end(
    db: &Db,
    sid: &str,
    reason: &str,
    keep: Keep,
    mut recorded: crate::store::audit::InChange<'_, Ended>,
) -> Result<Option<Ended>, Error> {
    let at = now();
    let ended = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        let ended = end_session_in!(db, tx, sid, reason, keep, at);
        if let Some(ended) = &ended {
            crate::store::audit::record_in!(tx, recorded, ended);
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok::<_, sqlx::Error>(ended)
    })?;
    Ok(ended)
}

/// Inside transaction `$tx`, at `$at`: end session `$sid` as [`end`]
/// does (its refresh families revoked for `$reason`, the back-channel
/// logouts of its clients queued, its tokens revoked through the log,
/// kept as `$keep` says); evaluates to the [`Ended`] session, or `None`
/// when it was not live (and nothing was written).
macro_rules! end_session_in {
    ($db:expr, $tx:expr, $sid:expr, $reason:expr, $keep:expr, $at:expr) => {{
        let (sid, at): (&str, i64) = ($sid, $at);
        let sql = format!(
            "UPDATE sessions SET ended_at = $1 WHERE sid = $2 AND ended_at IS NULL RETURNING {}",
            $crate::store::sessions::COLUMNS
        );
        let session = sqlx::query_as::<_, $crate::store::sessions::Session>(&sql)
            .bind(at)
            .bind(sid)
            .fetch_optional(&mut *$tx)
            .await?;
        match session {
            None => None,
            Some(session) => {
                let families = sqlx::query(
                    "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 \
                     WHERE sid = $3 AND revoked_at IS NULL",
                )
                .bind(at)
                .bind($reason)
                .bind(sid)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
                let clients: Vec<(String,)> = sqlx::query_as(
                    "SELECT client_id FROM session_clients WHERE sid = $1 ORDER BY client_id",
                )
                .bind(sid)
                .fetch_all(&mut *$tx)
                .await?;
                // The back-channel logouts go out from the server's queue
                // (`store::logouts`), committed with the end of the session.
                sqlx::query(
                    "INSERT INTO logout_deliveries (id, client_id, uri, sid, subject, attempts, \
                     next_attempt_at, created_at) \
                     SELECT $1 || ' ' || c.client_id, c.client_id, c.backchannel_logout_uri, $1, \
                     $2, 0, $3, $3 \
                     FROM session_clients sc JOIN clients c ON c.client_id = sc.client_id \
                     WHERE sc.sid = $1 AND c.backchannel_logout_uri IS NOT NULL \
                     ON CONFLICT DO NOTHING",
                )
                .bind(sid)
                .bind(&session.user_id)
                .bind(at)
                .execute(&mut *$tx)
                .await?;
                // Its tokens end through the log (also when no client is
                // recorded: a code may be out before its client is).
                let keep: $crate::store::revocation::Keep = $keep;
                $crate::store::revocation::append_revocation!($db, $tx, keep.session(sid, at), at);
                Some($crate::store::sessions::Ended {
                    session,
                    clients: clients.into_iter().map(|(c,)| c).collect(),
                    families_revoked: families,
                })
            }
        }
    }};
}
pub(crate) use end_session_in;

/// On PostgreSQL, lock session `sid` (a family's, if it has one) before
/// its families are changed and an event appended: sessions, then families,
/// then the revocation log's lock, the order a logout and a replayed code
/// take them in. The other way round, a revocation holding a family and
/// waiting for the log's lock, and a replayed code holding the log's lock
/// and ending that family's session, waited for each other (a deadlock).
macro_rules! lock_session {
    ($db:expr, $tx:expr, $sid:expr) => {{
        let sid: Option<&str> = $sid;
        if let (true, Some(sid)) = ($db.is_postgres(), sid) {
            sqlx::query("SELECT 1 FROM sessions WHERE sid = $1 FOR NO KEY UPDATE")
                .bind(sid)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(crate) use lock_session;

/// The live sessions (not ended, within their absolute and idle
/// lifetimes under `policy`), newest first, `limit` at most; of one user
/// when `username` is given.
pub async fn list(
    db: &Db,
    username: Option<&str>,
    policy: SessionPolicy,
    limit: i64,
) -> Result<Vec<Listed>, Error> {
    page(db, username, policy, Kept::SignedIn, None, limit).await
}

/// Which sessions a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Those the person is signed in by.
    SignedIn,
    /// Those and the sessions past their idle or absolute end that
    /// refresh tokens issued in them keep (offline access): every session
    /// a logout or `session end` would end.
    WithOffline,
}

/// [`list`] of the sessions `kept` names, from the session after `after`
/// (its `created_at` and `sid`) in that order.
pub async fn page(
    db: &Db,
    username: Option<&str>,
    policy: SessionPolicy,
    kept: Kept,
    after: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<Listed>, Error> {
    let at = now();
    let (after_time, after_sid) = after.unzip();
    let listed = on_pool!(db.read(), p => sqlx::query_as::<_, Listed>(
        "SELECT s.sid, u.username, s.created_at, s.auth_time, s.last_seen, s.expires_at, \
         (s.expires_at > $1 AND s.last_seen > $3) AS signed_in \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.ended_at IS NULL \
         AND ((s.expires_at > $1 AND s.last_seen > $3) OR ($7 AND EXISTS \
         (SELECT 1 FROM refresh_families f WHERE f.sid = s.sid AND f.revoked_at IS NULL AND f.expires_at > $1))) \
         AND ($2 IS NULL OR u.username = $2) \
         AND (s.created_at, s.sid) < \
         (COALESCE($5, CAST(9223372036854775807 AS BIGINT)), COALESCE($6, '')) \
         ORDER BY s.created_at DESC, s.sid DESC LIMIT $4"
    ).bind(at).bind(username).bind(at.saturating_sub(policy.idle)).bind(limit)
        .bind(after_time).bind(after_sid).bind(kept == Kept::WithOffline).fetch_all(p).await)?;
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::use_is_due;

    /// A session whose uses are at most `gap` seconds apart, with idle
    /// time `idle`: never idle by the time of its next use, whatever the
    /// phase of the recorded uses.
    fn stays_live(idle: i64, gap: i64) -> bool {
        let mut last_seen = 0;
        let mut at = 0;
        for _ in 0..1_000 {
            at += gap;
            // What `find` asks: used within the idle time.
            if last_seen <= at - idle {
                return false;
            }
            if use_is_due(last_seen, at, idle) {
                last_seen = at;
            }
        }
        true
    }

    #[test]
    fn a_session_in_use_never_idles_out() {
        // The shortest idle time allowed, used every 30 s (the case that
        // ended), every 59 s, and every second.
        for gap in [1, 30, 45, 59] {
            assert!(stays_live(60, gap), "idle 60 s, a use every {gap} s");
        }
        for gap in [1, 59, 60, 300, 3599] {
            assert!(stays_live(3600, gap), "idle 1 h, a use every {gap} s");
        }
    }

    #[test]
    fn uses_are_written_a_minute_apart_or_a_quarter_of_the_idle_time() {
        assert!(!use_is_due(1_000, 1_059, 12 * 3600));
        assert!(use_is_due(1_000, 1_060, 12 * 3600));
        assert!(use_is_due(1_000, 1_015, 60));
        assert!(!use_is_due(1_000, 1_014, 60));
    }
}
