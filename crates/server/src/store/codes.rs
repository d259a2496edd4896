//! Authorization codes (RFC 6749 §4.1.2): 256 random bits, stored as a
//! digest, valid 60 seconds, used once, bound to the client, the redirect
//! URI, the PKCE challenge, the nonce, the scopes, the user and the
//! session.
//!
//! Redeeming claims the code in one statement (`used_at IS NULL` in its
//! `WHERE`), so of two concurrent exchanges exactly one wins, and that
//! statement records what the exchange is about to issue: the access
//! token's `jti` and the refresh family's id, both chosen beforehand. A
//! code that comes back after its first use is marked replayed and
//! revokes both (RFC 6749 §4.1.2); the access token's `jti` goes on the
//! revocation list whether or not the token exists yet, and a first use
//! that has started a refresh family looks for the replay mark once the
//! family is stored ([`replayed`]), so neither order of the race leaves a
//! live family behind.

use zeroize::Zeroizing;

use crate::db::{on_pool, Db};
use crate::secret::{random_token, token_digest};
use crate::store::now;
use crate::Error;

/// How long a code lives.
pub const LIFETIME: i64 = 60;

/// What a code is bound to.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Grant {
    /// The client it was issued to.
    pub client_id: String,
    /// The user.
    pub user_id: String,
    /// The session it was issued in.
    pub sid: String,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The `nonce` of the authorization request.
    pub nonce: Option<String>,
    /// The granted scopes.
    pub scope: String,
    /// When the user authenticated.
    pub auth_time: i64,
}

/// A code spent by its first use: what it is bound to, and its user's
/// login name (`None` when the user is gone or disabled).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Spent {
    /// The binding.
    #[sqlx(flatten)]
    pub grant: Grant,
    /// The user's login name, if the user can still sign in.
    pub username: Option<String>,
}

/// The outcome of presenting a code.
#[derive(Debug)]
pub enum Redeemed {
    /// The first use: the code is spent now.
    First(Spent),
    /// Unknown, expired, or issued to another client.
    Invalid,
    /// Used before: whatever the first use issued is to be revoked.
    Replayed(Issued),
}

/// What a code's first use issued.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct Issued {
    /// The refresh-token family, if one was started.
    pub family_id: Option<String>,
    /// The access token's `jti`.
    pub access_jti: Option<String>,
    /// When that access token expires.
    pub access_expires_at: Option<i64>,
}

/// Store a code for `grant`; returns it (shown once, to the client).
pub async fn issue(db: &Db, grant: &Grant) -> Result<Zeroizing<String>, Error> {
    let code = random_token()?;
    let row = NewCode {
        hash: token_digest(&code),
        grant: grant.clone(),
        at: now(),
    };
    insert_all(db, std::slice::from_ref(&row)).await?;
    Ok(code)
}

/// A code to store.
#[derive(Debug)]
struct NewCode {
    hash: Vec<u8>,
    grant: Grant,
    at: i64,
}

/// Store `codes` in one statement (and one trip to the database).
async fn insert_all(db: &Db, codes: &[NewCode]) -> Result<(), Error> {
    on_pool!(db.write(), p => {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, sid, redirect_uri, \
             code_challenge, nonce, scope, auth_time, created_at, expires_at) ",
        );
        insert.push_values(codes, |mut row, c| {
            row.push_bind(c.hash.clone())
                .push_bind(c.grant.client_id.clone())
                .push_bind(c.grant.user_id.clone())
                .push_bind(c.grant.sid.clone())
                .push_bind(c.grant.redirect_uri.clone())
                .push_bind(c.grant.code_challenge.clone())
                .push_bind(c.grant.nonce.clone())
                .push_bind(c.grant.scope.clone())
                .push_bind(c.grant.auth_time)
                .push_bind(c.at)
                .push_bind(c.at + LIFETIME);
        });
        insert.build().execute(p).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Codes issued at once are committed together (group commit): a task
/// takes whatever has queued while the previous statement ran and
/// inserts it in one statement, so the database's round trips do not grow
/// with the rate (on SQLite, every write goes through one connection).
/// Each caller waits for its own commit: a code is never handed out
/// before it is stored. Alone, a code is written at once, with no wait.
#[derive(Clone, Debug)]
pub struct CodeWriter {
    db: Db,
    queue: Option<tokio::sync::mpsc::Sender<Queued>>,
}

/// A code waiting for its commit, and who waits for it.
#[derive(Debug)]
struct Queued {
    code: NewCode,
    done: tokio::sync::oneshot::Sender<Result<(), (bool, String)>>,
}

/// Codes in one statement at most.
const GROUP: usize = 128;

impl CodeWriter {
    /// A writer on `db`; its task runs on the current Tokio runtime (with
    /// none, every code is written on its own).
    pub fn start(db: Db) -> CodeWriter {
        let queue = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (tx, rx) = tokio::sync::mpsc::channel(4 * GROUP);
            runtime.spawn(commit_groups(db.clone(), rx));
            tx
        });
        CodeWriter { db, queue }
    }

    /// Store a code for `grant` (with others issued at the same moment);
    /// returns it once it is committed.
    pub async fn issue(&self, grant: &Grant) -> Result<Zeroizing<String>, Error> {
        let Some(queue) = &self.queue else {
            return issue(&self.db, grant).await;
        };
        let code = random_token()?;
        let (done, committed) = tokio::sync::oneshot::channel();
        let queued = Queued {
            code: NewCode {
                hash: token_digest(&code),
                grant: grant.clone(),
                at: now(),
            },
            done,
        };
        let stopped = || Error::Unavailable("the code writer has stopped".into());
        queue.send(queued).await.map_err(|_| stopped())?;
        match committed.await {
            Ok(Ok(())) => Ok(code),
            Ok(Err((true, why))) => Err(Error::Unavailable(why)),
            Ok(Err((false, why))) => Err(Error::Database(why)),
            Err(_) => Err(stopped()),
        }
    }
}

/// The writer's task: one statement per group of queued codes, until
/// every sender is gone.
async fn commit_groups(db: Db, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    let mut group = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut group, GROUP).await > 0 {
        let (codes, waiting): (Vec<NewCode>, Vec<_>) =
            group.drain(..).map(|q| (q.code, q.done)).unzip();
        let result = insert_all(&db, &codes)
            .await
            .map_err(|e| (e.is_transient(), e.to_string()));
        for done in waiting {
            // A caller that went away no longer waits.
            let _ = done.send(result.clone());
        }
    }
}

const GRANT_COLUMNS: &str =
    "client_id, user_id, sid, redirect_uri, code_challenge, nonce, scope, auth_time";

/// Present `code` for `client_id`: spend it if it is live and theirs,
/// recording `issuing` (what this exchange will issue) on it.
pub async fn redeem(
    db: &Db,
    code: &str,
    client_id: &str,
    issuing: &Issued,
) -> Result<Redeemed, Error> {
    let at = now();
    let hash = token_digest(code);
    // `fetch_all`: see `crate::db`, "Writes that return rows".
    let claimed: Vec<Spent> = on_pool!(db.write(), p => sqlx::query_as::<_, Spent>(&format!(
        "UPDATE authorization_codes SET used_at = $1, family_id = $4, access_jti = $5, access_expires_at = $6 \
         WHERE code_hash = $2 AND client_id = $3 AND used_at IS NULL AND expires_at > $1 \
         RETURNING {GRANT_COLUMNS}, \
         (SELECT username FROM users u WHERE u.id = authorization_codes.user_id AND NOT u.disabled) AS username"
    )).bind(at).bind(&hash).bind(client_id).bind(&issuing.family_id).bind(&issuing.access_jti)
    .bind(issuing.access_expires_at).fetch_all(p).await)?;
    if let Some(grant) = claimed.into_iter().next() {
        return Ok(Redeemed::First(grant));
    }
    // Not claimed: a replay by its own client marks the code (so that a
    // first use still finishing revokes what it issues) and revokes what
    // the first use recorded.
    let replayed: Vec<Issued> = on_pool!(db.write(), p => sqlx::query_as::<_, Issued>(
        "UPDATE authorization_codes SET replayed_at = $1 \
         WHERE code_hash = $2 AND client_id = $3 AND used_at IS NOT NULL \
         RETURNING family_id, access_jti, access_expires_at"
    ).bind(at).bind(&hash).bind(client_id).fetch_all(p).await)?;
    Ok(match replayed.into_iter().next() {
        Some(issued) => Redeemed::Replayed(issued),
        None => Redeemed::Invalid,
    })
}

/// Whether `code` has been replayed since its first use (read by a first
/// use once its refresh family is stored).
pub async fn replayed(db: &Db, code: &str) -> Result<bool, Error> {
    let row: Option<(Option<i64>,)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT replayed_at FROM authorization_codes WHERE code_hash = $1"
    ).bind(token_digest(code)).fetch_optional(p).await)?;
    Ok(row.is_some_and(|(r,)| r.is_some()))
}
