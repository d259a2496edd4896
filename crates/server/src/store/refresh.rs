//! Refresh tokens: opaque, stored as digests, rotated on every use, in
//! families that die together when a rotated token comes back (RFC 9700
//! §4.14.2).
//!
//! Rotation is one write transaction whose first statement marks the
//! presented token used (`used_at IS NULL` in its `WHERE`): the database
//! lets exactly one of many concurrent rotations of a token win, on SQLite
//! and PostgreSQL alike, and the losers see a used token. On SQLite the
//! common case (a live token of a live family of the presenting client) is
//! a single statement: the claiming `UPDATE` names the successor and a
//! trigger inserts it, run in a group with the rotations that come at the
//! same time (`Db::in_group`: one transaction and one wait for the disk
//! for all of them).

use std::sync::Arc;

use base64_simd::URL_SAFE_NO_PAD;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::db::{on_pool, Db};
use crate::secret::{random_id, random_token, token_digest, MasterKey};
use crate::store::revocation::{append_revocation, Keep};
use crate::store::sessions::lock_session;
use crate::store::{now, Scopes, CLOCK_SPREAD};
use crate::Error;

/// A session: the tokens that descend from one login.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Family {
    /// Family id.
    pub id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The `sub` of its access tokens.
    pub subject: String,
    /// The user, for password logins.
    pub username: Option<String>,
    /// Granted scopes.
    pub scope: String,
    /// When the user authenticated.
    pub auth_time: Option<i64>,
    /// Absolute end of the session.
    pub expires_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// The sign-in session it belongs to (its access tokens carry it).
    pub sid: Option<String>,
}

/// What a new family is for.
#[derive(Clone)]
pub struct NewFamily<'a> {
    /// Client.
    pub client_id: &'a str,
    /// Subject.
    pub subject: &'a str,
    /// User, for password logins.
    pub username: Option<&'a str>,
    /// The password hash the login was checked against (password grant):
    /// the family starts only while the user still has it, so a password
    /// changed while the login was being checked ends this login too.
    pub password_hash: Option<&'a str>,
    /// The user's scopes the grant was decided by (password grant): the
    /// family starts only while the user still has exactly these, so a
    /// scope taken away while the login was being checked is not carried
    /// into a family its revocation did not see.
    pub user_scopes: Option<&'a str>,
    /// Scopes granted.
    pub scope: &'a str,
    /// When the user authenticated.
    pub auth_time: Option<i64>,
    /// The sign-in session it belongs to (ended with it).
    pub sid: Option<&'a str>,
}

impl std::fmt::Debug for NewFamily<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewFamily")
            .field("client_id", &self.client_id)
            .field("subject", &self.subject)
            .field("username", &self.username)
            .field("password_hash", &self.password_hash.map(|_| "[REDACTED]"))
            .field("scope", &self.scope)
            .field("auth_time", &self.auth_time)
            .field("sid", &self.sid)
            .finish()
    }
}

/// Lifetimes of refresh tokens.
#[derive(Clone, Copy, Debug)]
pub struct RefreshPolicy {
    /// How long one refresh token lives unused (seconds).
    pub ttl: i64,
    /// How long a session lives in all, across rotations (seconds).
    pub max_lifetime: i64,
    /// How long after a rotation the previous token may still be retried
    /// (seconds; 0 = never).
    pub grace: i64,
}

/// Why a refresh token was refused (all `invalid_grant` to the client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such token.
    Unknown,
    /// Issued to another client.
    WrongClient,
    /// Past its lifetime or its session's.
    Expired,
    /// Its family was revoked.
    Revoked,
    /// Already rotated: the family has now been revoked.
    Reused {
        /// The family that was revoked.
        family_id: String,
        /// Whose it was (the `sub` of its tokens).
        subject: String,
        /// The sign-in session it was issued in, if any.
        sid: Option<String>,
    },
    /// A requested scope is not in the session's (and the client's):
    /// nothing was rotated.
    ScopeNotGranted,
}

impl Refused {
    /// A short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Unknown => "unknown",
            Refused::WrongClient => "wrong_client",
            Refused::Expired => "expired",
            Refused::Revoked => "revoked",
            Refused::Reused { .. } => "reuse_detected",
            Refused::ScopeNotGranted => "invalid_scope",
        }
    }
}

/// The outcome of a rotation.
pub struct Rotated {
    /// The session.
    pub family: Family,
    /// The successor token, for the client.
    pub token: Zeroizing<String>,
    /// Whether this was a retry inside the grace period.
    pub retried: bool,
    /// Whether the retry wrote: a successor issued before without being
    /// kept (by an instance, or a version, without a grace window) was
    /// replaced by this one. A retry that hands the kept one out again
    /// writes nothing.
    pub replaced: bool,
}

impl std::fmt::Debug for Rotation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("presented", &"[REDACTED]")
            .field("client_id", &self.client_id)
            .field("client_scopes", &self.client_scopes)
            .field("successor", &"[REDACTED]")
            .field("requested", &self.requested)
            .finish()
    }
}

impl std::fmt::Debug for Rotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotated")
            .field("family", &self.family)
            .field("token", &"[REDACTED]")
            .field("retried", &self.retried)
            .field("replaced", &self.replaced)
            .finish()
    }
}

const FAMILY_COLUMNS: &str =
    "id, client_id, subject, username, scope, auth_time, expires_at, revoked_at, sid";

/// Lock the refresh tokens of a user's families (`$1`: the username), on
/// PostgreSQL, before deleting the families. A rotation locks its token,
/// then checks its successor's family (a key-share lock on the family's
/// row); a delete that locked the family first and then, by cascade, the
/// token would wait for the rotation while the rotation waits for it: a
/// deadlock PostgreSQL breaks by failing one of them. Taken tokens first,
/// the delete waits for the rotation instead, and takes its successor too.
/// (A rotation of that successor begun in the few statements between
/// this lock and the delete can still meet it; PostgreSQL then fails one
/// of the two, answered `503`: try again.)
pub(crate) const LOCK_TOKENS_OF_USER: &str = "SELECT 1 FROM refresh_tokens WHERE family_id IN \
     (SELECT id FROM refresh_families WHERE username = $1) FOR UPDATE";

/// [`LOCK_TOKENS_OF_USER`] for a client's families (`$1`: its id).
pub(crate) const LOCK_TOKENS_OF_CLIENT: &str = "SELECT 1 FROM refresh_tokens WHERE family_id IN \
     (SELECT id FROM refresh_families WHERE client_id = $1) FOR UPDATE";

/// A presented token with its family.
#[derive(sqlx::FromRow)]
struct Claimed {
    token_expires_at: i64,
    used_at: Option<i64>,
    successor_sealed: Option<Vec<u8>>,
    #[sqlx(flatten)]
    family: Family,
}

/// What a claiming `UPDATE` returns: the token's expiry and its family,
/// as a [`Claimed`].
macro_rules! returning_claimed {
    () => {
        "RETURNING expires_at AS token_expires_at, CAST(NULL AS BIGINT) AS used_at, \
         CAST(NULL AS BYTEA) AS successor_sealed, family_id AS id, \
         (SELECT client_id FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS client_id, \
         (SELECT subject FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS subject, \
         (SELECT username FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS username, \
         (SELECT scope FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS scope, \
         (SELECT auth_time FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS auth_time, \
         (SELECT expires_at FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS expires_at, \
         (SELECT revoked_at FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS revoked_at, \
         (SELECT sid FROM refresh_families f WHERE f.id = refresh_tokens.family_id) AS sid"
    };
}

/// Mark a live token used (keeping its successor sealed, `$3`), returning
/// it with its family.
const CLAIM: &str = concat!(
    "UPDATE refresh_tokens SET used_at = $1, successor_sealed = $3 \
     WHERE token_hash = $2 AND used_at IS NULL ",
    returning_claimed!()
);

/// Whether a token of family `$1` issued at or after `$2` (when token `$3`
/// was used), other than `$3`, has been used: the chain went on past `$3`.
const CHAIN_WENT_ON: &str = "SELECT family_id FROM refresh_tokens WHERE family_id = $1 \
     AND created_at >= $2 AND used_at IS NOT NULL AND token_hash <> $3 LIMIT 1";

/// SQLite's common case in one statement (and one round trip to the
/// writer): claim a live token of a live family of this client and name its
/// successor, which the `refresh_tokens_successor` trigger inserts. No row
/// back means anything else (unknown, used, expired, revoked, another
/// client's): [`rotate_in_transaction`] then sorts it out.
const CLAIM_AND_SUCCEED: &str = concat!(
    "UPDATE refresh_tokens \
    SET used_at = $1, successor_hash = $3, successor_sealed = $6, \
    successor_expires_at = MIN($4, (SELECT expires_at FROM refresh_families f WHERE f.id = refresh_tokens.family_id)) \
    WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
    AND EXISTS (SELECT 1 FROM refresh_families f WHERE f.id = refresh_tokens.family_id \
    AND f.client_id = $5 AND f.revoked_at IS NULL AND f.expires_at > $1) ",
    returning_claimed!()
);

/// A token that could not be claimed (used already), with its family.
const LOOK_UP: &str =
    "SELECT t.expires_at AS token_expires_at, t.used_at, t.successor_sealed, f.id, f.client_id, f.subject, \
    f.username, f.scope, f.auth_time, f.expires_at, f.revoked_at, f.sid \
    FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.token_hash = $1";

/// Start a family and return its id and first token; [`Error::Invalid`]
/// where [`issue_as`] starts none (the grants call `issue_as`, to answer
/// that case as a refused grant).
pub async fn issue(
    db: &Db,
    new: NewFamily<'_>,
    policy: &RefreshPolicy,
) -> Result<(String, Zeroizing<String>), Error> {
    let id = random_id()?;
    let token = issue_as(db, &id, new, policy).await?.ok_or_else(|| {
        Error::Invalid("the user is disabled, or the session of this family has ended".into())
    })?;
    Ok((id, token))
}

/// Start the family `id` (chosen beforehand) and return its first token;
/// `None` when the family belongs to a session (`new.sid`) that has ended
/// or passed its absolute end (the maintenance deletes such a session once
/// no family of it lives, and must not meet one started since), or to a
/// user (`new.username` with the id `new.subject`) who is
/// disabled, gone, or no longer has `new.password_hash` or
/// `new.user_scopes`.
///
/// The session and the user are read in the family's transaction, and on
/// PostgreSQL locked (`FOR SHARE`) until it commits: a session ending or a
/// user being disabled at that moment either waits for the family and
/// then revokes it with the others, or comes first and no family is
/// started. (On SQLite the one writer runs the two transactions one after
/// the other.)
pub async fn issue_as(
    db: &Db,
    id: &str,
    new: NewFamily<'_>,
    policy: &RefreshPolicy,
) -> Result<Option<Zeroizing<String>>, Error> {
    let id = id.to_owned();
    let token = random_token()?;
    let at = now();
    let family_end = at.saturating_add(policy.max_lifetime);
    let (live_session, enabled_user) = if db.is_postgres() {
        (
            "SELECT sid FROM sessions WHERE sid = $1 AND ended_at IS NULL AND expires_at > $2 FOR SHARE",
            "SELECT id FROM users WHERE username = $1 AND id = $2 AND NOT disabled \
             AND password_hash = COALESCE($3, password_hash) AND scopes = COALESCE($4, scopes) \
             FOR SHARE",
        )
    } else {
        (
            "SELECT sid FROM sessions WHERE sid = $1 AND ended_at IS NULL AND expires_at > $2",
            "SELECT id FROM users WHERE username = $1 AND id = $2 AND NOT disabled \
             AND password_hash = COALESCE($3, password_hash) AND scopes = COALESCE($4, scopes)",
        )
    };
    on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        if let Some(username) = new.username {
            let enabled: Vec<(String,)> =
                sqlx::query_as(enabled_user).bind(username).bind(new.subject)
                    .bind(new.password_hash).bind(new.user_scopes).fetch_all(&mut *tx).await?;
            if enabled.is_empty() {
                return Ok(None);
            }
        }
        if let Some(sid) = new.sid {
            let live: Vec<(String,)> =
                sqlx::query_as(live_session).bind(sid).bind(at).fetch_all(&mut *tx).await?;
            if live.is_empty() {
                return Ok(None);
            }
        }
        sqlx::query(
            "INSERT INTO refresh_families (id, client_id, subject, username, scope, auth_time, created_at, expires_at, sid) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(&id).bind(new.client_id).bind(new.subject).bind(new.username).bind(new.scope)
        .bind(new.auth_time).bind(at).bind(family_end).bind(new.sid)
        .execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(token_digest(&token)).bind(&id).bind(at)
        .bind(at.saturating_add(policy.ttl).min(family_end))
        .execute(&mut *tx).await?;
        tx.commit().await
    })?;
    Ok(Some(token))
}

/// A refresh request: the token, who presents it, and what it asks for.
/// Its `Debug` leaves both tokens out.
#[derive(Clone, Copy)]
pub struct Rotation<'a> {
    /// The refresh token presented.
    pub presented: &'a str,
    /// The authenticated client.
    pub client_id: &'a str,
    /// The scopes the client may hold now.
    pub client_scopes: &'a Scopes,
    /// The successor, chosen by the caller ([`random_token`]), which can
    /// then take the rotation back before it returns (its request dropped
    /// while the rotation committed).
    pub successor: &'a str,
    /// The `scope` parameter, if sent: it must be within the session's
    /// scopes and the client's (RFC 6749 §6), or nothing is rotated.
    pub requested: Option<&'a Scopes>,
    /// How long a revocation's event is kept: a token presented again
    /// after its rotation (reuse) revokes its family and, through the log,
    /// the access tokens minted from it.
    pub keep: Keep,
}

/// A successor sealed by [`rotate`]: under the master key's successor
/// key, or (sealed by a version before it had one, within the grace
/// window of an upgrade) under the master key itself.
fn open_successor(
    master: &MasterKey,
    hash: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let label = successor_label(hash);
    master
        .successors()
        .open(&label, sealed)
        .or_else(|_| master.open(&label, sealed))
}

/// The AEAD label that binds a sealed successor to the token it replaced.
fn successor_label(presented_hash: &[u8]) -> String {
    format!(
        "refresh-successor:{}",
        URL_SAFE_NO_PAD.encode_to_string(presented_hash)
    )
}

/// Rotate the presented token: on success it is used up and a successor
/// returned. Every check (client, expiry, revocation, scope) is made before
/// anything is written, so a refusal changes nothing; only a token rotated
/// before, outside the grace period, changes something: it revokes its
/// whole family. Inside the grace period a retry gets the same successor
/// back (kept sealed under `master` for that long), so a client whose
/// response was lost, or two tabs racing, continue one session.
pub async fn rotate(
    db: &Db,
    rotation: Rotation<'_>,
    policy: &RefreshPolicy,
    master: &Arc<MasterKey>,
) -> Result<Result<Rotated, Refused>, Error> {
    let successor = Zeroizing::new(rotation.successor.to_owned());
    let hash = token_digest(rotation.presented);
    let sealed = if policy.grace > 0 {
        Some(
            master
                .successors()
                .seal(&successor_label(&hash), successor.as_bytes())?,
        )
    } else {
        None
    };
    // Without a scope to check, one statement decides it on SQLite; it
    // needs no transaction of its own and joins a group of writes.
    if rotation.requested.is_none() {
        if let Some(rotated) =
            rotate_in_one(db, &hash, rotation.client_id, policy, &successor, &sealed).await?
        {
            return Ok(Ok(rotated));
        }
    }
    let work = InTransaction {
        hash,
        client_id: rotation.client_id.to_owned(),
        client_scopes: rotation.client_scopes.clone(),
        requested: rotation.requested.cloned(),
        policy: *policy,
        successor,
        sealed,
        master: Arc::clone(master),
        keep: rotation.keep,
    };
    let db2 = db.clone();
    db.in_write_lane(async move { rotate_in_transaction(&db2, work).await })
        .await
}

/// The common case on SQLite, in one statement; `None` when it does not
/// apply (PostgreSQL, or anything but a live token of a live family).
async fn rotate_in_one(
    db: &Db,
    hash: &[u8],
    client_id: &str,
    policy: &RefreshPolicy,
    successor: &Zeroizing<String>,
    sealed: &Option<Vec<u8>>,
) -> Result<Option<Rotated>, Error> {
    if db.is_postgres() {
        return Ok(None);
    }
    let at = now();
    let (hash, successor_hash) = (hash.to_vec(), token_digest(successor));
    let (expires_at, client_id, sealed) = (
        at.saturating_add(policy.ttl),
        client_id.to_owned(),
        sealed.clone(),
    );
    // In a group with the rotations that come meanwhile: one commit, one
    // wait for the disk, for all of them.
    let claimed: Option<Claimed> = db
        .in_group(move |conn| {
            Box::pin(async move {
                let claimed: Vec<Claimed> = sqlx::query_as(CLAIM_AND_SUCCEED)
                    .bind(at)
                    .bind(hash)
                    .bind(successor_hash)
                    .bind(expires_at)
                    .bind(client_id)
                    .bind(sealed)
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(claimed.into_iter().next())
            })
        })
        .await?;
    Ok(claimed.map(|claimed| Rotated {
        family: claimed.family,
        token: successor.clone(),
        retried: false,
        replaced: false,
    }))
}

/// What [`rotate_in_transaction`] needs, owned (it runs on the write lane).
struct InTransaction {
    hash: Vec<u8>,
    client_id: String,
    client_scopes: Scopes,
    requested: Option<Scopes>,
    policy: RefreshPolicy,
    successor: Zeroizing<String>,
    sealed: Option<Vec<u8>>,
    master: Arc<MasterKey>,
    keep: Keep,
}

/// How [`rotate_in_transaction`]'s transaction ended.
enum Outcome {
    Rotated(Family),
    /// A retry inside the grace period: the successor issued before,
    /// sealed.
    Again(Family, Vec<u8>),
    /// A retry inside the grace period of a token rotated before
    /// successors were kept: a new successor replaced the old one.
    Replaced(Family),
    Refused(Refused),
}

async fn rotate_in_transaction(
    db: &Db,
    work: InTransaction,
) -> Result<Result<Rotated, Refused>, Error> {
    let InTransaction {
        hash,
        client_id,
        client_scopes,
        requested,
        policy,
        successor,
        sealed,
        master,
        keep,
    } = work;
    let at = now();
    let outcome = on_pool!(db.write(), p => async {
        let mut tx = p.begin_with(db.begin_write()).await?;
        // Write first: this statement decides the race. It also returns the
        // family, so the common path costs one round trip to the writer.
        let claimed: Option<Claimed> = sqlx::query_as(CLAIM)
            .bind(at).bind(&hash).bind(&sealed).fetch_optional(&mut *tx).await?;
        let claimed = match claimed {
            Some(claimed) => claimed,
            None => match sqlx::query_as(LOOK_UP).bind(&hash).fetch_optional(&mut *tx).await? {
                Some(used) => used,
                None => return Ok(Outcome::Refused(Refused::Unknown)),
            },
        };
        let Claimed { token_expires_at: token_expires, used_at, successor_sealed, family } = claimed;
        // Refusals that are not reuse leave everything as it was.
        // Within the window after the use, by this clock: one behind the
        // clock that stamped the use (another instance's, or this one's
        // before it stepped back) by more than instances may differ would
        // stretch the window by as much, and hand a replay the successor.
        let in_grace = used_at.is_some_and(|used| {
            policy.grace > 0 && (-CLOCK_SPREAD..=policy.grace).contains(&at.saturating_sub(used))
        });
        let refused = if family.client_id != client_id {
            Some(Refused::WrongClient)
        } else if family.revoked_at.is_some() {
            Some(Refused::Revoked)
        } else if token_expires <= at || family.expires_at <= at {
            Some(Refused::Expired)
        } else if (used_at.is_none() || in_grace)
            && !scope_granted(&family.scope, &client_scopes, requested.as_ref())
        {
            Some(Refused::ScopeNotGranted)
        } else {
            None
        };
        if let Some(refused) = refused {
            tx.rollback().await?;
            return Ok(Outcome::Refused(refused));
        }
        // Rotated without a successor kept (by an instance, or a version,
        // with no grace window): lock this token's row (PostgreSQL; tokens
        // before families, as deletions lock them) so concurrent retries
        // queue, and read again whether a retry that went first has kept
        // one since.
        let successor_sealed = match (successor_sealed, used_at) {
            (None, Some(_)) if in_grace => sqlx::query_scalar::<_, Option<Vec<u8>>>(
                "UPDATE refresh_tokens SET used_at = used_at WHERE token_hash = $1 \
                 RETURNING successor_sealed",
            )
            .bind(&hash)
            .fetch_optional(&mut *tx)
            .await?
            .flatten(),
            (kept, _) => kept,
        };
        // A retry within grace gets the successor handed out before, but
        // only while that successor is unused: once its holder has used
        // it, whoever presents the old token again is replaying it.
        let successor_used = match (&successor_sealed, used_at) {
            (Some(sealed), Some(_)) if in_grace => {
                match open_successor(&master, &hash, sealed).ok().and_then(|opened| {
                    std::str::from_utf8(&opened).ok().map(token_digest)
                }) {
                    // Locking the row (PostgreSQL): a use of the successor
                    // under way is waited for, not read around.
                    Some(digest) => sqlx::query_scalar::<_, Option<i64>>(
                        "UPDATE refresh_tokens SET used_at = used_at WHERE token_hash = $1 \
                         RETURNING used_at",
                    )
                    .bind(digest)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten()
                    .is_some(),
                    // Unreadable: refused below, where it is opened again.
                    None => false,
                }
            }
            _ => false,
        };
        // Still none kept: a token issued since and used means the chain
        // went on, so this is a replay, not a retry. Times are whole
        // seconds: a predecessor issued and used in the second this token
        // was used counts too, and the retry is taken for reuse; the other
        // way, a replay in the same second would pass for a retry.
        let chain_went_on = match (used_at, &successor_sealed) {
            (Some(used), None) if in_grace => sqlx::query_scalar::<_, String>(CHAIN_WENT_ON)
                .bind(&family.id).bind(used).bind(&hash)
                .fetch_optional(&mut *tx).await?
                .is_some(),
            _ => false,
        };
        // `Some(retried)`, or `None` for reuse.
        let rotation = match used_at {
            None => Some(false),
            Some(_) if in_grace && !successor_used && !chain_went_on => {
                if let Some(sealed) = successor_sealed {
                    // The same successor again: nothing changes.
                    tx.rollback().await?;
                    return Ok(Outcome::Again(family, sealed));
                }
                // End the successor issued before (unused) and issue
                // another, kept for this token from now on: a retry after
                // this one gets the same (ending the one issued here
                // would count as using it, and look like reuse).
                sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $1 WHERE family_id = $2 AND used_at IS NULL"
                ).bind(at).bind(&family.id).execute(&mut *tx).await?;
                // A rotation of that successor that committed while this
                // waited for its row (PostgreSQL: it held that row, not
                // this one) left a token the statement above did not see,
                // still live: the chain went on after all.
                let went_on = sqlx::query_scalar::<_, String>(
                    "SELECT family_id FROM refresh_tokens WHERE family_id = $1 AND used_at IS NULL LIMIT 1",
                )
                .bind(&family.id)
                .fetch_optional(&mut *tx).await?
                .is_some();
                if went_on {
                    None
                } else {
                    sqlx::query("UPDATE refresh_tokens SET successor_sealed = $1 WHERE token_hash = $2")
                        .bind(&sealed).bind(&hash).execute(&mut *tx).await?;
                    Some(true)
                }
            }
            Some(_) => None,
        };
        let Some(retried) = rotation else {
            // The session before its family and the revocation log, as a
            // logout and a replayed code take them (PostgreSQL): a replay
            // past its allowance, holding the session and the log's lock,
            // ends the session's other families, this one among them.
            lock_session!(db, tx, family.sid.as_deref());
            let revoked = sqlx::query(
                "UPDATE refresh_families SET revoked_at = $1, revoked_reason = 'reuse detected' \
                 WHERE id = $2 AND revoked_at IS NULL"
            ).bind(at).bind(&family.id).execute(&mut *tx).await?.rows_affected();
            // The access tokens minted from it go too: whoever presented
            // the token first may have been the thief.
            if revoked > 0 {
                append_revocation!(db, tx, keep.family(&family.id, at), at);
            }
            tx.commit().await?;
            return Ok(Outcome::Refused(Refused::Reused {
                family_id: family.id,
                subject: family.subject,
                sid: family.sid,
            }));
        };
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(token_digest(&successor)).bind(&family.id).bind(at)
        .bind(at.saturating_add(policy.ttl).min(family.expires_at))
        .execute(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(if retried { Outcome::Replaced(family) } else { Outcome::Rotated(family) })
    }.await)?;
    Ok(match outcome {
        Outcome::Rotated(family) => Ok(Rotated {
            family,
            token: successor,
            retried: false,
            replaced: false,
        }),
        Outcome::Replaced(family) => Ok(Rotated {
            family,
            token: successor,
            retried: true,
            replaced: true,
        }),
        Outcome::Again(family, sealed) => {
            let opened = open_successor(&master, &hash, &sealed)?;
            let token = String::from_utf8(opened.to_vec())
                .map_err(|_| Error::Database("a sealed refresh successor is not text".into()))?;
            Ok(Rotated {
                family,
                token: Zeroizing::new(token),
                retried: true,
                replaced: false,
            })
        }
        Outcome::Refused(refused) => Err(refused),
    })
}

/// Whether `requested` (all of the session's scopes the client still has,
/// when `None`) is within the session's scopes and the client's.
fn scope_granted(session: &str, client: &Scopes, requested: Option<&Scopes>) -> bool {
    match (Scopes::parse(session), requested) {
        (Ok(session), Some(requested)) => requested.is_subset(&session.intersection(client)),
        (Ok(_), None) => true,
        (Err(_), _) => false,
    }
}

/// How long past its grace window a sealed successor is kept: a retry at
/// the window's edge, or judged by an instance whose clock is a little
/// behind, still finds it (and is refused if it has been used), never the
/// branch for tokens rotated before successors were kept.
const SUCCESSOR_MARGIN: i64 = 60;

/// Forget sealed successors whose grace window has passed (and
/// `SUCCESSOR_MARGIN`, a minute), in batches with a pause between them as
/// the retention's (`store::retention`): after a pause of the server, or
/// at a high refresh rate, one statement over every row would hold the
/// writer (the only one, on SQLite) for as long as it took.
pub async fn forget_successors(db: &Db, at: i64, grace: i64) -> Result<u64, Error> {
    use crate::store::retention::{BATCH, PAUSE};
    let before = at.saturating_sub(grace).saturating_sub(SUCCESSOR_MARGIN);
    let mut forgotten = 0;
    loop {
        let batch = crate::db::bounded("forgetting sealed successors", async {
            Ok(on_pool!(db.write(), p => sqlx::query(
                "UPDATE refresh_tokens SET successor_sealed = NULL WHERE token_hash IN \
                 (SELECT token_hash FROM refresh_tokens \
                  WHERE successor_sealed IS NOT NULL AND used_at < $1 LIMIT $2)"
            ).bind(before).bind(BATCH).execute(p).await.map(|r| r.rows_affected()))?)
        })
        .await?;
        forgotten += batch;
        if batch < u64::try_from(BATCH).unwrap_or(u64::MAX) {
            return Ok(forgotten);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Take back a rotation whose answer was never given: the server failed
/// after the rotation committed (a read of the revocation log, a signature),
/// and answered the client with an error. Its successor, which no one has
/// seen, is deleted and the presented token is live again, so the client's
/// retry is a first use instead of reuse that would revoke the session.
/// Only for a rotation without a grace window: with one, a retry may
/// already hold the same successor, and gets it again instead. Returns
/// the family when it was taken back; `None` when the successor is gone
/// or used, the presented token was not the one it replaced, or the
/// family was revoked meanwhile (a retry that came first was reuse).
pub async fn take_back(
    db: &Db,
    presented_hash: &[u8],
    successor_hash: &[u8],
) -> Result<Option<String>, Error> {
    // SQLite's one-statement rotation names the successor in the row; the
    // trigger that inserts it fires only when the name goes from none to
    // one, so the next rotation must find none.
    let restore = if db.is_postgres() {
        "UPDATE refresh_tokens SET used_at = NULL, successor_sealed = NULL \
         WHERE token_hash = $1 AND used_at IS NOT NULL AND family_id = $2 \
         AND EXISTS (SELECT 1 FROM refresh_families f WHERE f.id = $2 AND f.revoked_at IS NULL)"
    } else {
        "UPDATE refresh_tokens SET used_at = NULL, successor_sealed = NULL, \
         successor_hash = NULL, successor_expires_at = NULL \
         WHERE token_hash = $1 AND used_at IS NOT NULL AND family_id = $2 \
         AND EXISTS (SELECT 1 FROM refresh_families f WHERE f.id = $2 AND f.revoked_at IS NULL)"
    };
    let taken_back = on_pool!(db.write(), p => async {
        let mut tx = p.begin_with(db.begin_write()).await?;
        if db.is_postgres() {
            // A rotation still committing (its request dropped meanwhile)
            // holds the presented token's row: wait for it, so that the
            // statements below, each with a snapshot of its own, see its
            // successor. Else the delete found none (not committed yet),
            // and the rotation, committed a moment later, stood for nobody.
            sqlx::query("SELECT 1 FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE")
                .bind(presented_hash)
                .execute(&mut *tx)
                .await?;
        }
        let deleted: Vec<(String,)> = sqlx::query_as(
            "DELETE FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NULL RETURNING family_id",
        )
        .bind(successor_hash)
        .fetch_all(&mut *tx)
        .await?;
        let Some((family_id,)) = deleted.into_iter().next() else {
            return Ok(None);
        };
        let restored = sqlx::query(restore)
            .bind(presented_hash)
            .bind(&family_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if restored != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Some(family_id))
    }.await)?;
    Ok(taken_back)
}

/// A live refresh token and its session, for introspection.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Live {
    /// When the token was issued.
    pub issued_at: i64,
    /// When the token expires.
    pub token_expires_at: i64,
    /// Its session.
    #[sqlx(flatten)]
    pub family: Family,
}

/// A refresh token that can still be used, with its session; `None` when
/// it is unknown, used, expired or revoked.
pub async fn lookup(db: &Db, presented: &str) -> Result<Option<Live>, Error> {
    let live = on_pool!(db.read(), p => sqlx::query_as::<_, Live>(
        "SELECT t.created_at AS issued_at, t.expires_at AS token_expires_at, \
         f.id, f.client_id, f.subject, f.username, f.scope, f.auth_time, f.expires_at, f.revoked_at, f.sid \
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
         WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > $2 \
         AND f.revoked_at IS NULL AND f.expires_at > $2"
    ).bind(token_digest(presented)).bind(now()).fetch_optional(p).await)?;
    Ok(live)
}

/// What a refresh token presented by `client_id` is, read before its
/// rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// A live token (unused, unexpired, its family neither revoked nor
    /// over) of this subject's: whom the rotation is for (the refresh
    /// grant's allowance, `refresh_limit.rs`).
    Live(String),
    /// A used token of a live family: a retry within the grace window, or
    /// a replay. It is counted by no one here: its replay must reach the
    /// rotation, which finds out the reuse and ends the family, whatever
    /// the allowance (counted, a thief draining it with the live chain
    /// would keep the victim's replay from ending the chain; and anyone
    /// holding an old token could spend the user's allowance).
    Used,
    /// What the rotation would refuse it as, without writing anything: no
    /// token of the client's (`Unknown`), its family revoked, it or its
    /// family expired. Refused from this read, without the rotation,
    /// which takes the writer (SQLite's one connection) for a token
    /// anyone who knows a public client's id can make up, or an app
    /// retries in a loop after its sign-in ended.
    Refused(Refused),
}

/// What `presented` is ([`Presented`]), with the rotation's refusals in
/// its order (`rotate_in_transaction`).
pub async fn presented(db: &Db, presented: &str, client_id: &str) -> Result<Presented, Error> {
    let row: Option<(String, bool, bool, bool)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT f.subject, t.used_at IS NOT NULL, f.revoked_at IS NOT NULL, \
         (t.expires_at <= $3 OR f.expires_at <= $3) \
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
         WHERE t.token_hash = $1 AND f.client_id = $2"
    ).bind(token_digest(presented)).bind(client_id).bind(now()).fetch_optional(p).await)?;
    Ok(match row {
        None => Presented::Refused(Refused::Unknown),
        Some((_, _, true, _)) => Presented::Refused(Refused::Revoked),
        Some((_, _, _, true)) => Presented::Refused(Refused::Expired),
        Some((_, true, _, _)) => Presented::Used,
        Some((subject, false, false, false)) => Presented::Live(subject),
    })
}

/// The client whose family, neither revoked nor over, holds `presented`
/// (used or not, unexpired): a revocation by any other client is refused
/// (RFC 7009 §2.1).
pub async fn issued_to(db: &Db, presented: &str) -> Result<Option<String>, Error> {
    let client = on_pool!(db.read(), p => sqlx::query_scalar(
        "SELECT f.client_id FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
         WHERE t.token_hash = $1 AND f.revoked_at IS NULL AND t.expires_at > $2 AND f.expires_at > $2"
    ).bind(token_digest(presented)).bind(now()).fetch_optional(p).await)?;
    Ok(client)
}

/// A family revoked, as the audit trail names it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedFamily {
    /// Its id.
    pub id: String,
    /// Whose it was (the `sub` of its tokens).
    pub subject: String,
}

/// Revoke the family of `presented` if it was issued to `client_id`
/// (RFC 7009 §2.1), and with it, through the revocation log (its event
/// kept as `keep` says), the access tokens minted from it (§2.1: "SHOULD
/// also invalidate all access tokens based on the same authorization
/// grant"), when `counted` allows that event for the family's subject
/// (the client's allowance of events, as for access tokens revoked by
/// `jti`: each is kept by every guard; past it the family is revoked all
/// the same, and its access tokens live to their expiry). The family
/// revoked, if one was, and whether its access tokens were.
pub async fn revoke(
    db: &Db,
    presented: &str,
    client_id: &str,
    reason: &str,
    keep: Keep,
    counted: impl FnOnce(&str) -> bool + Send,
) -> Result<Option<(RevokedFamily, bool)>, Error> {
    let (digest, client_id, reason) = (token_digest(presented), client_id.to_owned(), reason);
    let at = now();
    // Read first: a made-up or spent token, which anyone may send with a
    // public client's id and no allowance counts (nothing is revoked),
    // must not take SQLite's one write connection, behind which every
    // token, rotation and sign-in would wait (the refresh grant reads
    // first for the same reason, `presented`). A family made live after
    // this read held a token no client could have sent yet.
    let live: Option<(String,)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT f.id FROM refresh_families f JOIN refresh_tokens t ON t.family_id = f.id \
         WHERE t.token_hash = $1 AND f.client_id = $2 AND f.revoked_at IS NULL",
    ).bind(&digest).bind(&client_id).fetch_optional(p).await)?;
    if live.is_none() {
        return Ok(None);
    }
    let family = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        // The session first (see `sessions::lock_session!`).
        let sid: Option<Option<String>> = sqlx::query_scalar(
            "SELECT f.sid FROM refresh_families f JOIN refresh_tokens t ON t.family_id = f.id \
             WHERE t.token_hash = $1 AND f.client_id = $2 AND f.revoked_at IS NULL",
        )
        .bind(&digest).bind(&client_id).fetch_optional(&mut *tx).await?;
        let sid = sid.flatten();
        lock_session!(db, tx, sid.as_deref());
        let family: Option<RevokedFamily> = sqlx::query_as(REVOKE_BY_DIGEST)
            .bind(at).bind(reason).bind(&client_id).bind(&digest)
            .fetch_optional(&mut *tx).await?;
        let mut cut = false;
        if let Some(family) = &family {
            if counted(&family.subject) {
                append_revocation!(db, tx, keep.family(&family.id, at), at);
                cut = true;
            }
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(family.map(|f| (f, cut)))
    })?;
    Ok(family)
}

/// Revokes the live family (`$1` now, `$2` why) of client `$3`'s refresh
/// token of digest `$4`, returning its id and subject.
const REVOKE_BY_DIGEST: &str = "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 \
     WHERE revoked_at IS NULL AND client_id = $3 \
     AND id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $4) \
     RETURNING id, subject";

/// [`revoke`], by the token's digest, for a token never sent, whose
/// answer failed (only its digest is kept): no access token of its family
/// reached anyone, and no event is appended.
pub async fn revoke_by_digest(
    db: &Db,
    digest: &[u8],
    client_id: &str,
    reason: &str,
) -> Result<Option<RevokedFamily>, Error> {
    // `fetch_all`: see `crate::db`, "Writes that return rows".
    let family: Vec<RevokedFamily> = on_pool!(db.write(), p => sqlx::query_as(REVOKE_BY_DIGEST)
        .bind(now()).bind(reason).bind(client_id).bind(digest).fetch_all(p).await)?;
    Ok(family.into_iter().next())
}

/// Revoke the family `family_id` (a replayed authorization code).
pub async fn revoke_family(db: &Db, family_id: &str, reason: &str) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(REVOKE_FAMILY)
        .bind(now()).bind(reason).bind(family_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Revokes a family (`$1` now, `$2` why, `$3` its id), unless revoked
/// already.
pub(crate) const REVOKE_FAMILY: &str = "UPDATE refresh_families SET revoked_at = $1, \
     revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL";

/// The number of tokens of a family that can still be used (for tests and
/// the admin view of a session).
pub async fn live_tokens(db: &Db, family_id: &str) -> Result<i64, Error> {
    let (count,): (i64,) = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT COUNT(*) FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
         WHERE t.family_id = $1 AND t.used_at IS NULL AND f.revoked_at IS NULL"
    ).bind(family_id).fetch_one(p).await)?;
    Ok(count)
}

/// The family with id `family_id`.
pub async fn family(db: &Db, family_id: &str) -> Result<Option<Family>, Error> {
    let sql = format!("SELECT {FAMILY_COLUMNS} FROM refresh_families WHERE id = $1");
    let family = on_pool!(db.read(), p => sqlx::query_as::<_, Family>(&sql)
        .bind(family_id).fetch_optional(p).await)?;
    Ok(family)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Pool;

    /// Neither refresh token of a rotation shows in its `Debug`: one
    /// `?rotation` in a log line would otherwise write them there.
    #[test]
    fn a_rotations_debug_shows_no_token() {
        let scopes = Scopes::parse("read").unwrap();
        let rotation = Rotation {
            presented: "presented-secret-token",
            client_id: "c",
            client_scopes: &scopes,
            successor: "successor-secret-token",
            requested: None,
            keep: Keep(60),
        };
        let shown = format!("{rotation:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("client_id: \"c\""), "{shown}");
    }

    /// A rotation finds its token and that token's family by their keys:
    /// it must not first list every family of the client (SQLite plans an
    /// `IN (SELECT …)` that way), whose count grows with every sign-in.
    #[tokio::test]
    async fn a_rotation_reads_its_own_family_not_the_clients() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let Pool::Sqlite(pool) = db.write() else {
            unreachable!("a SQLite database")
        };
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {CLAIM_AND_SUCCEED}"))
                .bind(0_i64)
                .bind(vec![0_u8; 32])
                .bind(vec![0_u8; 32])
                .bind(0_i64)
                .bind("client")
                .bind(vec![0_u8; 8])
                .fetch_all(pool)
                .await
                .unwrap();
        let steps: Vec<&str> = plan.iter().map(|(_, _, _, step)| step.as_str()).collect();
        assert!(
            !steps
                .iter()
                .any(|step| step.starts_with("SCAN ") || step.starts_with("LIST SUBQUERY")),
            "{steps:?}"
        );
        assert!(
            steps
                .iter()
                .any(|step| step.contains("refresh_families") && step.contains("(id=?)")),
            "{steps:?}"
        );
        db.close().await;
    }
}
