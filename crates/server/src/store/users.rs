//! Users: who may sign in, with their profile claims (OpenID Connect
//! Core §5.1).

use serde::Serialize;

use crate::db::{on_pool, Db};
use crate::secret::random_id;
use crate::store::audit::{record_in, InChange};
use crate::store::revocation::{append_revocation, Keep};
use crate::store::{
    added_after_all, check_name, is_unique_violation, now, sessions, transaction_id, ScopeChange,
    Scopes,
};
use crate::Error;

/// A user as stored (the hash is the Argon2id PHC string).
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    /// Stable id (the `sub` of the user's tokens).
    pub id: String,
    /// Login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Scopes the user may be granted, space-separated.
    pub scopes: String,
    /// Disabled users cannot log in or refresh.
    pub disabled: bool,
    /// `name`.
    pub name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `email_verified`.
    pub email_verified: bool,
    /// When the profile last changed (`updated_at` claim).
    pub updated_at: i64,
}

/// Profile claims to set; `None` leaves a claim as it is.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// Full name (empty: remove it).
    pub name: Option<String>,
    /// Email address (empty: remove it).
    pub email: Option<String>,
    /// Whether the address is verified.
    pub email_verified: Option<bool>,
}

impl Profile {
    /// Whether it names a claim to change.
    pub fn changes_anything(&self) -> bool {
        self.name.is_some() || self.email.is_some() || self.email_verified.is_some()
    }

    /// Whether [`set_profile`] would take it ([`Error::Invalid`] says
    /// why not), checked before anything is written.
    pub fn check(&self) -> Result<(), Error> {
        CheckedProfile::of(self).map(drop)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[REDACTED]")
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A user as listed.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct UserInfo {
    /// Stable id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Allowed scopes, space-separated.
    pub scopes: String,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// When the user was added.
    pub created_at: i64,
    /// Full name.
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Whether the address is verified (the `email_verified` claim).
    pub email_verified: bool,
}

/// Refuse what [`add`] would refuse for its input, before the password is
/// hashed (a hash is costly, and comes from the queue logins share): a
/// bad name or profile, or a username taken (checked again by the insert).
pub async fn check_new(db: &Db, username: &str, profile: &Profile) -> Result<(), Error> {
    check_name("username", username)?;
    CheckedProfile::of(profile)?;
    if find(db, username).await?.is_some() {
        return Err(Error::Exists {
            kind: "user",
            name: username.to_owned(),
        });
    }
    Ok(())
}

/// Add a user with an already-hashed password, and `recorded`'s event
/// in the same transaction.
pub async fn add(
    db: &Db,
    username: &str,
    password_hash: &str,
    scopes: &Scopes,
    profile: &Profile,
    mut recorded: InChange<'_, UserInfo>,
) -> Result<UserInfo, Error> {
    check_name("username", username)?;
    // Checked before anything is written: a user is added with its
    // profile or not at all.
    let profile = CheckedProfile::of(profile)?;
    let (name, email) = (profile.name.flatten(), profile.email.flatten());
    let user = UserInfo {
        id: random_id()?,
        username: username.to_owned(),
        scopes: scopes.to_string(),
        disabled: false,
        created_at: now(),
        name,
        email,
        email_verified: profile.verified.unwrap_or(false),
    };
    let mut xid = None;
    let written: Result<(), Error> = on_pool!(db.write(), p => async {
        let mut tx = p.begin_with(db.begin_write()).await?;
        xid = transaction_id!(db, &mut *tx);
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, scopes, disabled, created_at, updated_at, \
             name, email, email_verified) VALUES ($1, $2, $3, $4, FALSE, $5, $5, $6, $7, $8)"
        ).bind(&user.id).bind(username).bind(password_hash).bind(&user.scopes).bind(user.created_at)
        .bind(&user.name).bind(&user.email).bind(user.email_verified)
        .execute(&mut *tx).await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Exists {
                    kind: "user",
                    name: username.to_owned(),
                })
            }
            inserted => inserted?,
        };
        record_in!(tx, recorded, &user);
        tx.commit().await?;
        Ok(())
    }
    .await);
    if let Err(failed) = written {
        added_after_all(
            db,
            failed,
            xid,
            "SELECT COUNT(*) FROM users WHERE id = $1",
            &user.id,
            || format!("user {username:?}"),
        )
        .await?;
    }
    Ok(user)
}

const USER_COLUMNS: &str =
    "id, username, password_hash, scopes, disabled, name, email, email_verified, updated_at";

/// The user named `username`.
pub async fn find(db: &Db, username: &str) -> Result<Option<User>, Error> {
    let user = on_pool!(db.read(), p => sqlx::query_as::<_, User>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
    )).bind(username).fetch_optional(p).await)?;
    Ok(user)
}

/// The user whose id is `id`.
pub async fn find_by_id(db: &Db, id: &str) -> Result<Option<User>, Error> {
    let user = on_pool!(db.read(), p => sqlx::query_as::<_, User>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )).bind(id).fetch_optional(p).await)?;
    Ok(user)
}

/// Users by name, from the one after `after`; `limit` at most.
pub async fn list(db: &Db, after: Option<&str>, limit: i64) -> Result<Vec<UserInfo>, Error> {
    let users = on_pool!(db.read(), p => sqlx::query_as::<_, UserInfo>(
        "SELECT id, username, scopes, disabled, created_at, name, email, email_verified FROM users \
         WHERE username > COALESCE($1, '') ORDER BY username LIMIT $2"
    ).bind(after).bind(limit).fetch_all(p).await)?;
    Ok(users)
}

/// The user named `username`, as listed.
pub async fn info(db: &Db, username: &str) -> Result<Option<UserInfo>, Error> {
    let user = on_pool!(db.read(), p => sqlx::query_as::<_, UserInfo>(
        "SELECT id, username, scopes, disabled, created_at, name, email, email_verified FROM users \
         WHERE username = $1"
    ).bind(username).fetch_optional(p).await)?;
    Ok(user)
}

fn not_found(username: &str) -> Error {
    Error::NotFound {
        kind: "user",
        name: username.to_owned(),
    }
}

/// A change to a user that may end the user's sessions.
enum Change<'a> {
    Disabled(bool),
    PasswordHash(&'a str),
    /// New scopes: the sessions end when one is taken away.
    Scopes(&'a ScopeChange),
}

/// Apply `change` to `username` and, when it must, revoke the user's
/// refresh token families in the same transaction: the refresh grant
/// relies on this to skip looking the user up. `recorded`'s event is
/// written in the same transaction. The user's scopes after it.
async fn apply(
    db: &Db,
    username: &str,
    change: Change<'_>,
    keep: Keep,
    mut recorded: InChange<'_, Scopes>,
) -> Result<Scopes, Error> {
    let at = now();
    let mut new_scopes = None;
    on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        let mut ends_sessions = match change {
            Change::Disabled(disabled) => disabled.then_some("user disabled"),
            Change::PasswordHash(_) => Some("password changed"),
            Change::Scopes(_) => None,
        };
        if let Change::Scopes(scope_change) = change {
            // Taken away, a scope must not live on in the tokens and
            // refresh families issued with it.
            let read = if db.is_postgres() {
                "SELECT scopes FROM users WHERE username = $1 FOR NO KEY UPDATE"
            } else {
                "SELECT scopes FROM users WHERE username = $1"
            };
            let old: Option<(String,)> = sqlx::query_as(read).bind(username).fetch_optional(&mut *tx).await?;
            let Some((old,)) = old else {
                tx.rollback().await?;
                return Err(not_found(username));
            };
            let (scopes, taken_away) = match scope_change.applied_to(&old) {
                Ok(applied) => applied,
                Err(e) => {
                    tx.rollback().await?;
                    return Err(e);
                }
            };
            if taken_away {
                ends_sessions = Some("scopes taken away");
            }
            new_scopes = Some(scopes);
        }
        let update = match change {
            Change::Disabled(disabled) => {
                sqlx::query_as::<_, (String,)>("UPDATE users SET disabled = $1, updated_at = $2 WHERE username = $3 RETURNING id").bind(disabled)
            }
            Change::PasswordHash(hash) => {
                sqlx::query_as::<_, (String,)>("UPDATE users SET password_hash = $1, updated_at = $2 WHERE username = $3 RETURNING id").bind(hash)
            }
            Change::Scopes(_) => {
                let scopes = new_scopes.as_ref().map(ToString::to_string).unwrap_or_default();
                sqlx::query_as::<_, (String,)>("UPDATE users SET scopes = $1, updated_at = $2 WHERE username = $3 RETURNING id").bind(scopes)
            }
        };
        let changed: Option<(String,)> = update.bind(at).bind(username).fetch_optional(&mut *tx).await?;
        let Some((id,)) = changed else {
            tx.rollback().await?;
            return Err(not_found(username));
        };
        if let Some(reason) = ends_sessions {
            // Sessions first: ending one waits for a family being started
            // in it (`refresh::issue_as` holds the session `FOR SHARE`), so
            // the revocation below, a statement with a later snapshot, sees
            // that family and revokes it with the others.
            if db.is_postgres() {
                sqlx::query(sessions::LOCK_SESSIONS_OF_USER).bind(username).execute(&mut *tx).await?;
            }
            sqlx::query(sessions::QUEUE_LOGOUTS_OF_USER).bind(at).bind(username).execute(&mut *tx).await?;
            sqlx::query(sessions::END_SESSIONS_OF_USER).bind(at).bind(username).execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 \
                 WHERE username = $3 AND revoked_at IS NULL"
            ).bind(at).bind(reason).bind(username).execute(&mut *tx).await?;
            append_revocation!(db, tx, keep.user(&id, now()), at);
        }
        record_in!(tx, recorded, new_scopes.as_ref().unwrap_or(&Scopes::default()));
        tx.commit().await?;
        Ok::<_, sqlx::Error>(())
    })?;
    Ok(new_scopes.unwrap_or_default())
}

/// Profile claims checked: for each, `None` leaves it as it is,
/// `Some(None)` clears it.
struct CheckedProfile {
    name: Option<Option<String>>,
    email: Option<Option<String>>,
    verified: Option<bool>,
}

impl CheckedProfile {
    fn of(profile: &Profile) -> Result<CheckedProfile, Error> {
        let clean = |v: &Option<String>, kind: &str| -> Result<Option<Option<String>>, Error> {
            match v.as_deref() {
                None => Ok(None),
                Some("") => Ok(Some(None)),
                Some(text) => {
                    crate::store::check_display_name(kind, text)?;
                    Ok(Some(Some(text.to_owned())))
                }
            }
        };
        let name = clean(&profile.name, "name")?;
        let email = clean(&profile.email, "email")?;
        if let Some(Some(e)) = &email {
            // An address: one `@` between a local part and a domain, no
            // white space (what a relying party can send mail to; `@`,
            // `a@` or `a@b@c` are not).
            let parts = e.split_once('@');
            let addressable = parts.is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            });
            if !addressable || e.contains(char::is_whitespace) {
                return Err(Error::Invalid(format!("{e:?} is not an email address")));
            }
        }
        // A changed address is not verified unless said so.
        let verified = match (&email, profile.email_verified) {
            (_, Some(v)) => Some(v),
            (Some(_), None) => Some(false),
            (None, None) => None,
        };
        Ok(CheckedProfile {
            name,
            email,
            verified,
        })
    }
}

/// Set profile claims of `username`, and write `recorded`'s event in the
/// same transaction.
pub async fn set_profile(
    db: &Db,
    username: &str,
    profile: &Profile,
    mut recorded: InChange<'_>,
) -> Result<(), Error> {
    let CheckedProfile {
        name,
        email,
        verified,
    } = CheckedProfile::of(profile)?;
    let changed = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        let changed = sqlx::query(
            "UPDATE users SET \
             name = CASE WHEN $1 THEN $2 ELSE name END, \
             email = CASE WHEN $3 THEN $4 ELSE email END, \
             email_verified = COALESCE($5, email_verified), updated_at = $6 WHERE username = $7"
        ).bind(name.is_some()).bind(name.flatten()).bind(email.is_some()).bind(email.flatten())
        .bind(verified).bind(now()).bind(username).execute(&mut *tx).await?.rows_affected();
        if changed == 0 {
            tx.rollback().await?;
        } else {
            record_in!(tx, recorded, &());
            tx.commit().await?;
        }
        Ok::<_, sqlx::Error>(changed)
    })?;
    if changed == 0 {
        return Err(not_found(username));
    }
    Ok(())
}

/// Enable or disable a user. Disabling also revokes the user's refresh
/// token families, so existing sessions end at their next refresh, and
/// ends the user's sign-in sessions (their clients hear of it by
/// back-channel logout).
pub async fn set_disabled(
    db: &Db,
    username: &str,
    disabled: bool,
    keep: Keep,
    recorded: InChange<'_>,
) -> Result<(), Error> {
    apply(
        db,
        username,
        Change::Disabled(disabled),
        keep,
        recorded.for_any(),
    )
    .await
    .map(drop)
}

/// Change a user's scopes ([`ScopeChange`], made against the scopes as
/// this transaction reads them); the scopes the user has now. When one
/// is taken away, the user's sessions
/// end as for a password change (refresh families and sign-in sessions,
/// with back-channel logouts), and the access tokens issued before are
/// refused (the revocation feed): else an administrator demoted would go
/// on with the scope until those ended.
pub async fn set_scopes(
    db: &Db,
    username: &str,
    change: &ScopeChange,
    keep: Keep,
    recorded: InChange<'_, Scopes>,
) -> Result<Scopes, Error> {
    apply(db, username, Change::Scopes(change), keep, recorded).await
}

/// Replace a user's password hash and end the user's sessions (refresh
/// families and sign-in sessions, with back-channel logouts).
pub async fn set_password(
    db: &Db,
    username: &str,
    password_hash: &str,
    keep: Keep,
    recorded: InChange<'_>,
) -> Result<(), Error> {
    apply(
        db,
        username,
        Change::PasswordHash(password_hash),
        keep,
        recorded.for_any(),
    )
    .await
    .map(drop)
}

/// Delete a user, the user's refresh token families and sign-in sessions
/// (their clients hear of it by back-channel logout); the user's access
/// tokens are revoked (the revocation feed). `recorded`'s event is written
/// in the same transaction.
pub async fn delete(
    db: &Db,
    username: &str,
    keep: Keep,
    mut recorded: InChange<'_>,
) -> Result<(), Error> {
    let at = now();
    on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        if db.is_postgres() {
            // The user's row first, then the sessions, as a sign-in that
            // starts a family does (`refresh::issue_as`: the user `FOR
            // SHARE`, then the session) and as the other changes of a user
            // do: the sessions locked first, a family starting meanwhile
            // waited for them while holding the user this delete waited
            // for, a deadlock PostgreSQL broke by failing one of the two.
            let found: Option<(String,)> =
                sqlx::query_as("SELECT id FROM users WHERE username = $1 FOR UPDATE")
                    .bind(username).fetch_optional(&mut *tx).await?;
            if found.is_none() {
                tx.rollback().await?;
                return Err(not_found(username));
            }
            sqlx::query(crate::store::refresh::LOCK_TOKENS_OF_USER)
                .bind(username).execute(&mut *tx).await?;
        }
        // The clients of the user's sessions hear of it before the
        // sessions go (with the user, by cascade).
        if db.is_postgres() {
            sqlx::query(sessions::LOCK_SESSIONS_OF_USER).bind(username).execute(&mut *tx).await?;
        }
        sqlx::query(sessions::QUEUE_LOGOUTS_OF_USER).bind(at).bind(username).execute(&mut *tx).await?;
        let deleted: Option<(String,)> = sqlx::query_as("DELETE FROM users WHERE username = $1 RETURNING id")
            .bind(username).fetch_optional(&mut *tx).await?;
        let Some((id,)) = deleted else {
            tx.rollback().await?;
            return Err(not_found(username));
        };
        sqlx::query("DELETE FROM refresh_families WHERE username = $1")
            .bind(username).execute(&mut *tx).await?;
        append_revocation!(db, tx, keep.user(&id, now()), at);
        record_in!(tx, recorded, &());
        tx.commit().await?;
        Ok::<_, sqlx::Error>(())
    })?;
    Ok(())
}
