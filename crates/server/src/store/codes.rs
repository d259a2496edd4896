//! Authorization codes (RFC 6749 §4.1.2): 256 bits (random, or for a
//! pending sign-in derived from it and its user under a key of the
//! server's own, `MasterKey::code_for`, so a form sent twice gets the
//! same code), stored as a digest, valid 60 seconds, used once, bound to
//! the client, the redirect URI, the PKCE challenge, the nonce, the
//! scopes, the user and the session.
//!
//! Redeeming claims the code in one statement (`used_at IS NULL` in its
//! `WHERE`), so of two concurrent exchanges exactly one wins, and that
//! statement records what the exchange is about to issue: the access
//! token's `jti` and the refresh family's id, both chosen beforehand. A
//! code that comes back after its first use is marked replayed and
//! revokes both (RFC 6749 §4.1.2), in the transaction that marks it: a
//! replay acknowledged is a revocation committed, whatever stops the
//! process next. The access token's `jti` goes on the revocation list
//! whether or not the token exists yet, and a first use that has started
//! a refresh family looks for the replay mark once the family is stored
//! ([`replayed`]), so neither order of the race leaves a live family
//! behind. An exchange that fails on the server's side after spending its
//! code gives it back ([`release`]) unless a replay has marked it.

use zeroize::Zeroizing;

use crate::db::{bounded, on_pool, Db, Pool};
use crate::secret::{random_token, token_digest};
use crate::store::revocation::{append_unless_there, token_revocation, Appended, Keep};
use crate::store::sessions::{end_session_in, lock_session};
use crate::store::{json_rows, now};
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
    /// The code's own client, with a `code_verifier` that does not match
    /// its challenge: nothing is spent or recorded.
    WrongVerifier,
    /// The code's own client and verifier, with another redirect URI than
    /// the code was sent to: nothing is spent or recorded.
    WrongRedirectUri,
    /// Used before: whatever the first use issued is revoked, in the
    /// transaction that marked the code replayed.
    Replayed {
        /// What the first use issued.
        issued: Issued,
        /// The user the code was for.
        user_id: String,
        /// The sign-in session it came from.
        sid: String,
        /// What became of the revocations: an event in the log now (the
        /// access token's, or its refresh family's), or both there
        /// already (or the token refused already), or the token's left
        /// out by the revocation allowance (and the session ended
        /// instead).
        token: Appended,
    },
    /// Replayed before this: what the first use issued was revoked with
    /// the first replay's mark, and nothing is written again.
    ReplayedAgain,
}

/// What a replay asks while it is recorded, about the access token its
/// code's first use issued.
pub struct ReplayChecks<R, C> {
    /// What is refused already of what the first use issued (`sid`,
    /// the access token's `jti`, the refresh family if one was recorded):
    /// for those no event is appended, and none counted.
    pub refused: R,
    /// The revocation allowance's say for the user (`user_id`), asked
    /// only when an event is about to be appended. Past it, the code's
    /// session is ended instead, in the same transaction: that refuses
    /// every token it issued with one event, and gives the client no more
    /// codes without a new login (a client replaying codes in a loop would
    /// otherwise add an event a round).
    pub count: C,
    /// How long a session's revocation event is kept.
    pub keep: Keep,
}

impl<R, C> std::fmt::Debug for ReplayChecks<R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayChecks").finish_non_exhaustive()
    }
}

/// What the revocation log refuses already of what a code's first use
/// issued ([`ReplayChecks::refused`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlreadyRefused {
    /// Its access token (by its `jti`, or its session).
    pub token: bool,
    /// The access tokens of its refresh family (by the family, or its
    /// session).
    pub family: bool,
}

/// [`append_always`]'s: nothing is refused already.
pub type NothingRefused = fn(&str, &str, Option<&str>) -> AlreadyRefused;
/// [`append_always`]'s: every event is within the allowance.
pub type AlwaysAllowed = fn(&str) -> Result<(), std::time::Duration>;

/// The checks of a replay whose events are always appended (tests, and
/// callers with no allowance).
pub fn append_always() -> ReplayChecks<NothingRefused, AlwaysAllowed> {
    ReplayChecks {
        refused: |_: &str, _: &str, _: Option<&str>| AlreadyRefused::default(),
        count: |_: &str| Ok(()),
        keep: Keep(0),
    }
}

/// What the presenter of a code shows it holds (RFC 7636 §4.6, RFC 6749
/// §4.1.3): the PKCE challenge its `code_verifier` hashes to, and the
/// redirect URI it names. A code is spent, and its replay recorded, only
/// for a presentation that matches both: someone who intercepted a code
/// but has no verifier can neither spend it (the client's own exchange
/// would then fail) nor, once it is spent, have what it issued revoked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Proof {
    /// `BASE64URL(SHA256(code_verifier))`.
    pub code_challenge: String,
    /// The `redirect_uri` sent with the code, if any.
    pub redirect_uri: Option<String>,
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

/// The pending request a code answers: its digest, and the code made
/// for it (`MasterKey::code_for`).
pub struct Answering {
    /// The pending request's digest.
    pub request: Vec<u8>,
    /// Its code.
    pub code: Zeroizing<String>,
}

impl std::fmt::Debug for Answering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answering").finish_non_exhaustive()
    }
}

/// The code and the request digest to store for `answering` (a random
/// code when it answers no pending request).
fn code_of(answering: Option<Answering>) -> Result<(Zeroizing<String>, Option<Vec<u8>>), Error> {
    Ok(match answering {
        Some(a) => (a.code, Some(a.request)),
        None => (random_token()?, None),
    })
}

/// Store a code for `grant`; returns it (shown once, to the client).
/// `answering` is the pending request it answers, if any: `None` comes
/// back when that request has been answered already.
pub async fn issue(
    db: &Db,
    grant: &Grant,
    answering: Option<Answering>,
) -> Result<Option<Zeroizing<String>>, Error> {
    let (code, request) = code_of(answering)?;
    let row = NewCode {
        hash: token_digest(&code),
        grant: grant.clone(),
        at: now(),
        request,
    };
    let stored = insert_all(db, std::slice::from_ref(&row)).await?;
    Ok((!stored.is_empty()).then_some(code))
}

/// Answer the pending request of digest `request` with a refusal (the
/// person denied it, or it ended in an error after a page), once: it is
/// recorded as a code spent as it is made, whose value no one ever saw,
/// under the index that lets a request have one code. So neither the
/// same form sent again nor the request's pages can answer it with a code
/// afterwards, nor a code come before it. `false` when it was answered
/// already.
pub async fn refuse(db: &Db, grant: &Grant, request: &[u8]) -> Result<bool, Error> {
    let at = now();
    let unseen = token_digest(&random_token()?);
    // `fetch_all`: see `crate::db`, "Writes that return rows".
    let stored: Vec<(Vec<u8>,)> = on_pool!(db.write(), p => sqlx::query_as(
        "INSERT INTO authorization_codes (code_hash, client_id, user_id, sid, redirect_uri, \
         code_challenge, nonce, scope, auth_time, created_at, expires_at, used_at, request_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10, $11) \
         ON CONFLICT DO NOTHING RETURNING code_hash"
    )
    .bind(&unseen)
    .bind(&grant.client_id)
    .bind(&grant.user_id)
    .bind(&grant.sid)
    .bind(&grant.redirect_uri)
    .bind(&grant.code_challenge)
    .bind(&grant.nonce)
    .bind(&grant.scope)
    .bind(grant.auth_time)
    .bind(at)
    .bind(request)
    .fetch_all(p).await)?;
    Ok(!stored.is_empty())
}

/// How the pending request of digest `request` was answered, if it was:
/// a code issued for it, or a refusal ([`refuse`]).
pub async fn answer_to(db: &Db, request: &[u8]) -> Result<Option<Answer>, Error> {
    let answer: Vec<Answer> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT code_hash, user_id, sid, used_at IS NULL AND expires_at > $2 AS usable, \
         expires_at = created_at AS refused \
         FROM authorization_codes WHERE request_hash = $1"
    ).bind(request).bind(now()).fetch_all(p).await)?;
    Ok(answer.into_iter().next())
}

/// The answer a pending request got.
#[derive(Debug, sqlx::FromRow)]
pub struct Answer {
    /// The digest of its code (of a code no one saw, for a refusal).
    pub code_hash: Vec<u8>,
    /// The user it was answered for.
    pub user_id: String,
    /// The session it was answered in.
    pub sid: String,
    /// Whether that code is still unspent and unexpired.
    pub usable: bool,
    /// Whether the answer was a refusal ([`refuse`]: a code no one saw,
    /// spent and expired as it was stored).
    pub refused: bool,
}

impl Answer {
    /// Whether it is the code `code`, still to be exchanged: the answer
    /// to send again to a form sent twice.
    pub fn is_usable_code(&self, code: &str) -> bool {
        self.usable && crate::secret::digests_equal(&self.code_hash, &token_digest(code))
    }
}

/// A code to store.
#[derive(Debug)]
struct NewCode {
    hash: Vec<u8>,
    grant: Grant,
    at: i64,
    request: Option<Vec<u8>>,
}

/// Store `codes` in one statement (and one trip to the database); the
/// digests of those stored (a code for a request already answered is
/// not). The statement's text is the same for any number of codes (see
/// [`audit::record_all`](crate::store::audit::record_all) for why).
async fn insert_all(db: &Db, codes: &[NewCode]) -> Result<Vec<Vec<u8>>, Error> {
    macro_rules! insert {
        () => {
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, sid, redirect_uri, \
             code_challenge, nonce, scope, auth_time, created_at, expires_at, request_hash) "
        };
    }
    // `fetch_all`: see `crate::db`, "Writes that return rows".
    let stored: Vec<(Vec<u8>,)> = match db.write() {
        Pool::Postgres(p) => {
            sqlx::query_as(concat!(
                insert!(),
                "SELECT * FROM UNNEST($1::BYTEA[], $2::TEXT[], $3::TEXT[], $4::TEXT[], \
                 $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::BIGINT[], \
                 $11::BIGINT[], $12::BYTEA[]) ON CONFLICT DO NOTHING RETURNING code_hash"
            ))
            .bind(codes.iter().map(|c| c.hash.as_slice()).collect::<Vec<_>>())
            .bind(
                codes
                    .iter()
                    .map(|c| c.grant.client_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                codes
                    .iter()
                    .map(|c| c.grant.user_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                codes
                    .iter()
                    .map(|c| c.grant.sid.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                codes
                    .iter()
                    .map(|c| c.grant.redirect_uri.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                codes
                    .iter()
                    .map(|c| c.grant.code_challenge.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                codes
                    .iter()
                    .map(|c| c.grant.nonce.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                codes
                    .iter()
                    .map(|c| c.grant.scope.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(codes.iter().map(|c| c.grant.auth_time).collect::<Vec<_>>())
            .bind(codes.iter().map(|c| c.at).collect::<Vec<_>>())
            .bind(codes.iter().map(|c| c.at + LIFETIME).collect::<Vec<_>>())
            .bind(
                codes
                    .iter()
                    .map(|c| c.request.as_deref())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(p)
            .await?
        }
        Pool::Sqlite(p) => {
            let rows: Vec<_> = codes
                .iter()
                .map(|c| {
                    let g = &c.grant;
                    (
                        hex(&c.hash),
                        (
                            &g.client_id,
                            &g.user_id,
                            &g.sid,
                            &g.redirect_uri,
                            &g.code_challenge,
                        ),
                        (&g.nonce, &g.scope, g.auth_time, c.at, c.at + LIFETIME),
                        c.request.as_deref().map(hex),
                    )
                })
                .collect();
            // Each row is [digest, [five texts], [nonce, scope, three times], request].
            sqlx::query_as(concat!(
                insert!(),
                "SELECT unhex(value ->> 0), value ->> '$[1][0]', value ->> '$[1][1]', \
                 value ->> '$[1][2]', value ->> '$[1][3]', value ->> '$[1][4]', value ->> '$[2][0]', \
                 value ->> '$[2][1]', value ->> '$[2][2]', value ->> '$[2][3]', value ->> '$[2][4]', \
                 unhex(value ->> 3) FROM json_each($1) WHERE true ORDER BY key \
                 ON CONFLICT DO NOTHING RETURNING code_hash"
            ))
            .bind(json_rows(&rows)?)
            .fetch_all(p)
            .await?
        }
    };
    Ok(stored.into_iter().map(|(h,)| h).collect())
}

/// Lower-case hex, for SQLite's `unhex` (JSON carries no bytes).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// Codes issued at once are committed together, and so are codes
/// presented at once (group commit): a task takes whatever has queued
/// while its previous statements ran and writes it in one `INSERT` and one
/// claiming `UPDATE`, so the database's round trips do not grow with the
/// rate (on SQLite, every write goes through one connection). Each caller
/// waits for its own commit: a code is never handed out before it is
/// stored, nor an exchange answered before its code is spent. Alone, a
/// code is written at once, with no wait.
#[derive(Clone, Debug)]
pub struct CodeWriter {
    db: Db,
    queue: Option<(tokio::sync::mpsc::Sender<Queued>, crate::watched::Died)>,
}

/// A failed write, for every caller of its group: whether trying again
/// soon may work, and what went wrong.
type Failed = (bool, String);

/// A write waiting for its group, and who waits for it.
#[derive(Debug)]
enum Queued {
    /// A code to store.
    Insert {
        code: NewCode,
        done: tokio::sync::oneshot::Sender<Result<bool, Failed>>,
    },
    /// A code to spend.
    Claim {
        claim: Claim,
        done: tokio::sync::oneshot::Sender<Result<Option<Spent>, Failed>>,
    },
}

/// Codes in one statement at most.
const GROUP: usize = 128;

impl CodeWriter {
    /// A writer on `db`; its task runs on the current Tokio runtime (with
    /// none, every code is written on its own).
    pub fn start(db: Db) -> CodeWriter {
        let queue = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let _entered = runtime.enter();
            let (tx, rx) = tokio::sync::mpsc::channel(4 * GROUP);
            let (_, died) = crate::watched::spawn(
                "the authorization code writer",
                commit_groups(db.clone(), rx),
            );
            (tx, died)
        });
        CodeWriter { db, queue }
    }

    /// Whether the writer's task panicked (every code would then fail),
    /// for the server's supervisor, which shuts it down then; `None`
    /// without a task.
    pub fn died(&self) -> Option<crate::watched::Died> {
        self.queue.as_ref().map(|(_, died)| died.clone())
    }

    /// Store a code for `grant` (with others issued at the same moment);
    /// returns it once it is committed (see [`issue`]).
    pub async fn issue(
        &self,
        grant: &Grant,
        answering: Option<Answering>,
    ) -> Result<Option<Zeroizing<String>>, Error> {
        let Some((queue, _)) = &self.queue else {
            return issue(&self.db, grant, answering).await;
        };
        let (code, request) = code_of(answering)?;
        let (done, committed) = tokio::sync::oneshot::channel();
        let queued = Queued::Insert {
            code: NewCode {
                hash: token_digest(&code),
                grant: grant.clone(),
                at: now(),
                request,
            },
            done,
        };
        queue.send(queued).await.map_err(|_| stopped())?;
        let stored = committed.await.map_err(|_| stopped())?.map_err(failed)?;
        Ok(stored.then_some(code))
    }

    /// Present `code` for `client_id` (with others presented at the same
    /// moment): see [`redeem`].
    pub async fn redeem<R, C>(
        &self,
        code: &str,
        client_id: &str,
        proof: &Proof,
        issuing: &Issued,
        checks: ReplayChecks<R, C>,
    ) -> Result<Redeemed, Error>
    where
        R: FnOnce(&str, &str, Option<&str>) -> AlreadyRefused,
        C: FnOnce(&str) -> Result<(), std::time::Duration>,
    {
        let Some((queue, _)) = &self.queue else {
            return redeem(&self.db, code, client_id, proof, issuing, checks).await;
        };
        let claim = Claim {
            hash: token_digest(code),
            client_id: client_id.to_owned(),
            proof: proof.clone(),
            issuing: issuing.clone(),
        };
        let hash = claim.hash.clone();
        let (done, committed) = tokio::sync::oneshot::channel();
        queue
            .send(Queued::Claim { claim, done })
            .await
            .map_err(|_| stopped())?;
        match committed.await.map_err(|_| stopped())?.map_err(failed)? {
            Some(spent) => Ok(Redeemed::First(spent)),
            None => replay(&self.db, &hash, client_id, proof, checks).await,
        }
    }
}

fn stopped() -> Error {
    Error::Unavailable("the code writer has stopped".into())
}

fn failed((transient, why): Failed) -> Error {
    if transient {
        Error::Unavailable(why)
    } else {
        Error::Database(why)
    }
}

/// The writer's task: per group of queued writes, one statement for the
/// codes to store and one for the codes to spend, until every sender is
/// gone. (A caller that went away no longer waits for its answer.)
/// The claims of a group that go into the claiming statement: the first
/// claim of each code by each client with each proof. The same code twice
/// by the same client with the same proof goes in once (an UPDATE … FROM
/// takes one of several matching rows, which one is not defined, and the
/// issue it records must be the one that gets the code); the later claims
/// find it spent, as they would one statement later. Claims by other
/// clients, or with another proof, go in too and match nothing: one of
/// them arriving first must not stand in for the code's own client and
/// verifier.
fn distinct_claims(claims: &[Claim]) -> Vec<Claim> {
    let mut seen = std::collections::HashSet::new();
    claims
        .iter()
        .filter(|c| seen.insert((c.hash.as_slice(), c.client_id.as_str(), &c.proof)))
        .cloned()
        .collect()
}

/// What each claim of a group gets: the binding of the code it spent, for
/// the first claim of that code by the client it was issued to, with the
/// proof it was bound to; nothing for the others (they go on to
/// [`replay`]). A claim is never handed what another client's code spent,
/// nor what a claim with another proof would have.
fn share_spent(claims: &[Claim], mut spent: Vec<(Vec<u8>, Spent)>) -> Vec<Option<Spent>> {
    claims
        .iter()
        .map(|claim| {
            spent
                .iter()
                .position(|(hash, spent)| {
                    *hash == claim.hash
                        && spent.grant.client_id == claim.client_id
                        && claim.proof.matches(&spent.grant)
                })
                .map(|i| spent.swap_remove(i).1)
        })
        .collect()
}

async fn commit_groups(db: Db, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    let mut group = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut group, GROUP).await > 0 {
        let mut inserts = Vec::new();
        let mut claims = Vec::new();
        for queued in group.drain(..) {
            match queued {
                Queued::Insert { code, done } => inserts.push((code, done)),
                Queued::Claim { claim, done } => claims.push((claim, done)),
            }
        }
        if !inserts.is_empty() {
            let (codes, waiting): (Vec<NewCode>, Vec<_>) = inserts.into_iter().unzip();
            match bounded("storing codes", insert_all(&db, &codes)).await {
                Ok(mut stored) => {
                    // A code twice in the group (one pending request's,
                    // its form sent twice at once): its first row is the
                    // one stored, and only its first caller is told so.
                    for (code, done) in codes.iter().zip(waiting) {
                        let first = stored.iter().position(|h| *h == code.hash);
                        let _ = done.send(Ok(first.map(|i| stored.swap_remove(i)).is_some()));
                    }
                }
                // One code the database refuses (its client or user deleted
                // meanwhile: a foreign key) must not fail the people
                // signing in beside it: each code on its own, until the
                // database fails in a way that may pass (then the rest
                // get that failure at once, not one wait each).
                Err(e) if !e.is_transient() && codes.len() > 1 => {
                    let mut passing: Option<Failed> = None;
                    for (code, done) in codes.iter().zip(waiting) {
                        let answer = match &passing {
                            Some(failure) => Err(failure.clone()),
                            None => match bounded(
                                "storing a code",
                                insert_all(&db, std::slice::from_ref(code)),
                            )
                            .await
                            {
                                Ok(stored) => Ok(stored.contains(&code.hash)),
                                Err(e) => {
                                    let failure = (e.is_transient(), e.to_string());
                                    if failure.0 {
                                        passing = Some(failure.clone());
                                    }
                                    Err(failure)
                                }
                            },
                        };
                        let _ = done.send(answer);
                    }
                }
                Err(e) => {
                    let failure = (e.is_transient(), e.to_string());
                    for done in waiting {
                        let _ = done.send(Err(failure.clone()));
                    }
                }
            }
        }
        // A claim whose caller has gone (its request timed out while the
        // group before it waited for the disk) is not made: a code spent
        // for an exchange no one will receive would make the client's
        // retry a replay, which revokes what the session had.
        claims.retain(|(_, done)| !done.is_closed());
        if !claims.is_empty() {
            let (claims, waiting): (Vec<Claim>, Vec<_>) = claims.into_iter().unzip();
            let unique = distinct_claims(&claims);
            match bounded("spending codes", claim_all(&db, &unique, now())).await {
                Ok(spent) => {
                    let answers = share_spent(&claims, spent).into_iter().zip(waiting);
                    for ((mine, done), claim) in answers.zip(&claims) {
                        // Its caller gone while the claim ran (the request
                        // timed out): spent for nobody, the code is
                        // released here, after the commit, so that the
                        // client's retry is no replay.
                        if let Err(Ok(Some(_))) = done.send(Ok(mine)) {
                            // Before the next group, where the client's
                            // retry may wait: released in a task of its
                            // own, the retry's claim could come first,
                            // fail on the spent code, and then read it
                            // released ("unknown code"). Releases are of
                            // exchanges that went away, which are few.
                            release_unreceived(&db, claim).await;
                        }
                    }
                }
                Err(e) => {
                    let failure = (e.is_transient(), e.to_string());
                    for done in waiting {
                        let _ = done.send(Err(failure.clone()));
                    }
                }
            }
        }
    }
}

/// Release the code `claim` spent for a caller that went away before it
/// heard (a failure is logged: the retry then counts as a replay).
async fn release_unreceived(db: &Db, claim: &Claim) {
    let Some(jti) = claim.issuing.access_jti.as_deref() else {
        return;
    };
    match bounded("releasing a code", release(db, &claim.hash, jti)).await {
        Ok(released) => tracing::info!(
            client_id = %claim.client_id,
            released,
            "a code spent for an exchange that went away before its answer"
        ),
        Err(e) => tracing::warn!(
            client_id = %claim.client_id,
            error = %e,
            "a code spent for an exchange that went away could not be released: a retry will count as a replay"
        ),
    }
}

/// Present `code` for `client_id` with `proof`: spend it if it is live,
/// theirs and bound to that proof, recording `issuing` (what this exchange
/// will issue) on it.
pub async fn redeem<R, C>(
    db: &Db,
    code: &str,
    client_id: &str,
    proof: &Proof,
    issuing: &Issued,
    checks: ReplayChecks<R, C>,
) -> Result<Redeemed, Error>
where
    R: FnOnce(&str, &str, Option<&str>) -> AlreadyRefused,
    C: FnOnce(&str) -> Result<(), std::time::Duration>,
{
    let claim = Claim {
        hash: token_digest(code),
        client_id: client_id.to_owned(),
        proof: proof.clone(),
        issuing: issuing.clone(),
    };
    let mut claimed = claim_all(db, std::slice::from_ref(&claim), now()).await?;
    match claimed.pop() {
        Some((_, spent)) => Ok(Redeemed::First(spent)),
        None => replay(db, &claim.hash, client_id, proof, checks).await,
    }
}

impl Proof {
    /// Whether `grant` was bound to this proof.
    pub fn matches(&self, grant: &Grant) -> bool {
        crate::secret::digests_equal(
            self.code_challenge.as_bytes(),
            grant.code_challenge.as_bytes(),
        ) && self.redirect_uri.as_deref() == Some(grant.redirect_uri.as_str())
    }
}

/// A code presented for its first use.
#[derive(Clone, Debug)]
struct Claim {
    hash: Vec<u8>,
    client_id: String,
    proof: Proof,
    issuing: Issued,
}

/// A claimed code: its digest, and what it was bound to.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    code_hash: Vec<u8>,
    #[sqlx(flatten)]
    spent: Spent,
}

/// Spend every live code of `claims` that belongs to its presenter, in
/// one statement; returns the digests spent with what they were bound
/// to (the others were unknown, expired, another client's, used, or of a
/// session that has ended or passed its absolute end: a logout, or a
/// password change that ended it,
/// also ends what a code still in flight would have started).
async fn claim_all(db: &Db, claims: &[Claim], at: i64) -> Result<Vec<(Vec<u8>, Spent)>, Error> {
    macro_rules! set {
        () => {
            "UPDATE authorization_codes SET used_at = $1, family_id = v.family_id, \
             access_jti = v.access_jti, access_expires_at = v.access_expires_at FROM "
        };
    }
    macro_rules! filter {
        () => {
            " WHERE authorization_codes.code_hash = v.code_hash \
        AND authorization_codes.client_id = v.client_id \
        AND authorization_codes.code_challenge = v.code_challenge \
        AND authorization_codes.redirect_uri = v.redirect_uri \
        AND authorization_codes.used_at IS NULL AND authorization_codes.expires_at > $3 \
        AND EXISTS (SELECT 1 FROM sessions s WHERE s.sid = authorization_codes.sid AND s.ended_at IS NULL \
        AND s.expires_at > $3) \
        RETURNING authorization_codes.code_hash, authorization_codes.client_id, \
        authorization_codes.user_id, authorization_codes.sid, authorization_codes.redirect_uri, \
        authorization_codes.code_challenge, authorization_codes.nonce, authorization_codes.scope, \
        authorization_codes.auth_time, \
        (SELECT username FROM users u WHERE u.id = authorization_codes.user_id AND NOT u.disabled) AS username"
        };
    }
    // One statement, the same text for any number of claims (see
    // `insert_all`). `fetch_all`: see `crate::db`, "Writes that return rows".
    let rows: Vec<ClaimedRow> = match db.write() {
        Pool::Postgres(p) => {
            sqlx::query_as(concat!(
                set!(),
                "(SELECT * FROM UNNEST($2::BYTEA[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[], \
                 $8::TEXT[], $9::TEXT[])) \
                 AS v(code_hash, client_id, family_id, access_jti, access_expires_at, code_challenge, redirect_uri)",
                filter!()
            ))
            .bind(at)
            .bind(claims.iter().map(|c| c.hash.as_slice()).collect::<Vec<_>>())
            .bind(at)
            .bind(claims.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.issuing.family_id.as_deref()).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.issuing.access_jti.as_deref()).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.issuing.access_expires_at).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.proof.code_challenge.as_str()).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.proof.redirect_uri.as_deref()).collect::<Vec<_>>())
            // Planned with the arrays it is given, every time. A prepared
            // statement's generic plan is made once, and one made while the
            // table was new and small scans the whole table for each claim
            // (an array's length is unknown to it) and is kept as the table
            // grows: silent SSO on PostgreSQL fell from 3.9k to 2.5k/s.
            // The price is a second round trip per group (sqlx parses and
            // describes an unnamed statement before it binds it).
            .persistent(false)
            .fetch_all(p)
            .await?
        }
        Pool::Sqlite(p) => {
            let rows: Vec<_> = claims
                .iter()
                .map(|c| {
                    let i = &c.issuing;
                    (
                        hex(&c.hash),
                        &c.client_id,
                        &i.family_id,
                        &i.access_jti,
                        i.access_expires_at,
                        &c.proof.code_challenge,
                        &c.proof.redirect_uri,
                    )
                })
                .collect();
            sqlx::query_as(concat!(
                set!(),
                "(SELECT unhex(value ->> 0) AS code_hash, value ->> 1 AS client_id, \
                 value ->> 2 AS family_id, value ->> 3 AS access_jti, value ->> 4 AS access_expires_at, \
                 value ->> 5 AS code_challenge, value ->> 6 AS redirect_uri \
                 FROM json_each($2)) AS v",
                filter!()
            ))
            .bind(at)
            .bind(json_rows(&rows)?)
            .bind(at)
            .fetch_all(p)
            .await?
        }
    };
    Ok(rows.into_iter().map(|r| (r.code_hash, r.spent)).collect())
}

/// A code that could not be claimed: a replay by its own client, with the
/// proof the code was bound to, marks the code (so that a first use still
/// finishing revokes what it issues) and, in the same transaction,
/// revokes what the first use recorded: its refresh family, and its
/// access token through the log (as `checks` allow); a presentation
/// without the proof changes nothing; anything else is invalid.
async fn replay<R, C>(
    db: &Db,
    hash: &[u8],
    client_id: &str,
    proof: &Proof,
    checks: ReplayChecks<R, C>,
) -> Result<Redeemed, Error>
where
    R: FnOnce(&str, &str, Option<&str>) -> AlreadyRefused,
    C: FnOnce(&str) -> Result<(), std::time::Duration>,
{
    type Row = (Option<String>, Option<String>, Option<i64>, String, String);
    // Most codes that cannot be claimed have nothing to record: unknown,
    // expired, another client's, or replayed already (the first replay's
    // mark came with every revocation). Read first: only a first replay
    // takes the writer, and a code presented again and again costs reads.
    type Seen = (Option<i64>, Option<i64>, String, String);
    let seen: Vec<Seen> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT used_at, replayed_at, code_challenge, redirect_uri FROM authorization_codes \
         WHERE code_hash = $1 AND client_id = $2"
    ).bind(hash).bind(client_id).fetch_all(p).await)?;
    let Some((used_at, replayed_at, code_challenge, redirect_uri)) = seen.first() else {
        return Ok(Redeemed::Invalid);
    };
    if !crate::secret::digests_equal(proof.code_challenge.as_bytes(), code_challenge.as_bytes()) {
        return Ok(Redeemed::WrongVerifier);
    }
    if proof.redirect_uri.as_deref() != Some(redirect_uri.as_str()) {
        return Ok(Redeemed::WrongRedirectUri);
    }
    match (used_at, replayed_at) {
        (None, _) => return Ok(Redeemed::Invalid),
        (Some(_), Some(_)) => return Ok(Redeemed::ReplayedAgain),
        (Some(_), None) => {}
    }
    let at = now();
    let ReplayChecks {
        refused,
        count,
        keep,
    } = checks;
    let redeemed = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        let marked: Vec<Row> = sqlx::query_as::<_, Row>(
            "UPDATE authorization_codes SET replayed_at = $1 \
             WHERE code_hash = $2 AND client_id = $3 AND used_at IS NOT NULL AND replayed_at IS NULL \
             RETURNING family_id, access_jti, access_expires_at, user_id, sid"
        ).bind(at).bind(hash).bind(client_id).fetch_all(&mut *tx).await?;
        let redeemed = match marked.into_iter().next() {
            // Another replay marked it since the read.
            None => Redeemed::ReplayedAgain,
            Some((family_id, access_jti, access_expires_at, user_id, sid)) => {
                // The session before its families and the revocation log,
                // as a logout and a user's change take them: a replay past
                // the allowance ends the session, revoking its other
                // families, and two replays of one session's codes, each
                // holding its own family, waited for each other (a
                // deadlock, the log's lock held).
                lock_session!(db, tx, Some(sid.as_str()));
                // Whether the first use started a family (a refresh token
                // was issued: the code records the family it would start
                // whenever the client may refresh, before its scope says
                // whether one is issued), live or revoked since (by
                // `/oauth2/revoke` past its allowance, say, which leaves
                // its access tokens live).
                let family_started = match &family_id {
                    Some(family) => {
                        sqlx::query(crate::store::refresh::REVOKE_FAMILY)
                            .bind(at).bind(REPLAYED).bind(family).execute(&mut *tx).await?;
                        sqlx::query_scalar::<_, String>("SELECT id FROM refresh_families WHERE id = $1")
                            .bind(family).fetch_optional(&mut *tx).await?.is_some()
                    }
                    None => false,
                };
                // The first use's access token by its own event, counted
                // against the allowance: it carries no family when no
                // refresh token came with it, nor when an older version
                // minted it.
                let already = refused(
                    &sid,
                    access_jti.as_deref().unwrap_or_default(),
                    family_id.as_deref(),
                );
                let token = match (&access_jti, access_expires_at) {
                    (Some(_), Some(_)) if already.token => Appended::Already,
                    (Some(jti), Some(exp)) => append_unless_there!(
                        db, tx, token_revocation(jti, exp), at, || count(&user_id)
                    ),
                    _ => Appended::Already,
                };
                // And the family's event, part of the same replay (not
                // counted again; appended once, whatever revoked the
                // family): it refuses the access tokens of the refreshes
                // made since with its refresh token (the first use may
                // have been the attacker's). Past the allowance the
                // session's end below refuses them instead.
                let token = match (&family_id, token) {
                    (Some(family), Appended::Now | Appended::Already)
                        if family_started && !already.family =>
                    {
                        let always = || Ok::<(), std::time::Duration>(());
                        match append_unless_there!(db, tx, keep.family(family, at), at, always) {
                            Appended::Now => Appended::Now,
                            _ => token,
                        }
                    }
                    (_, token) => token,
                };
                if let Appended::OverAllowance(_) = token {
                    let why = "authorization codes replayed past the revocation allowance";
                    if end_session_in!(db, tx, &sid, why, keep, at).is_none() {
                        // Ended already (perhaps by expiry, which leaves
                        // no event): its tokens are refused by one event,
                        // appended once.
                        let always = || Ok::<(), std::time::Duration>(());
                        append_unless_there!(db, tx, keep.session(&sid, at), at, always);
                    }
                }
                Redeemed::Replayed {
                    issued: Issued {
                        family_id,
                        access_jti,
                        access_expires_at,
                    },
                    user_id,
                    sid,
                    token,
                }
            }
        };
        tx.commit().await?;
        Ok::<_, sqlx::Error>(redeemed)
    })?;
    Ok(redeemed)
}

/// Release a code whose exchange failed before it was answered (the
/// server failed after the code was spent: starting its refresh family,
/// a read of the revocation log, a signature): the code is live again for
/// the rest of its minute, and the refresh family recorded with it, which
/// no one holds a token of, is revoked. Without this the client's retry
/// would be a replay, and revoke what the session had (see `replay`).
/// Only the exchange that spent it can release it (`access_jti` is what
/// it recorded), and only until a replay has marked it. Returns whether
/// it was released.
pub async fn release(db: &Db, code_hash: &[u8], access_jti: &str) -> Result<bool, Error> {
    let lock = if db.is_postgres() { " FOR UPDATE" } else { "" };
    let select = format!(
        "SELECT family_id FROM authorization_codes WHERE code_hash = $1 AND access_jti = $2 \
         AND used_at IS NOT NULL AND replayed_at IS NULL{lock}"
    );
    let released = on_pool!(db.write(), p => async {
        let mut tx = p.begin_with(db.begin_write()).await?;
        if db.is_postgres() {
            // A claim still committing holds the code's row: wait for it
            // (the select below skips a row its snapshot shows unspent,
            // without waiting), then read what it left.
            sqlx::query("SELECT 1 FROM authorization_codes WHERE code_hash = $1 FOR UPDATE")
                .bind(code_hash)
                .execute(&mut *tx)
                .await?;
        }
        let spent: Vec<(Option<String>,)> = sqlx::query_as(&select)
            .bind(code_hash).bind(access_jti).fetch_all(&mut *tx).await?;
        let Some((family_id,)) = spent.into_iter().next() else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE authorization_codes SET used_at = NULL, family_id = NULL, access_jti = NULL, \
             access_expires_at = NULL WHERE code_hash = $1"
        ).bind(code_hash).execute(&mut *tx).await?;
        if let Some(family) = family_id {
            sqlx::query(crate::store::refresh::REVOKE_FAMILY)
                .bind(now()).bind(RELEASED).bind(family).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(true)
    }.await)?;
    Ok(released)
}

/// Why the refresh family of a code released by [`release`] was revoked.
pub const RELEASED: &str = "the code exchange failed before it was answered";

/// Lock a client's codes (`$1`: its id), on PostgreSQL, before deleting
/// the client: a replay locks its code, then the family its first use
/// started; a delete whose cascade took the family first, then the code,
/// would meet it in a deadlock.
pub(crate) const LOCK_CODES_OF_CLIENT: &str =
    "SELECT 1 FROM authorization_codes WHERE client_id = $1 FOR UPDATE";

/// Why a replayed code's refresh family was revoked.
pub const REPLAYED: &str = "authorization code replayed";

/// Whether `code` has been replayed since its first use (read by a first
/// use once its refresh family is stored). On PostgreSQL the read waits
/// for a replay still in its transaction (`FOR SHARE` waits for the row
/// lock its mark holds): that replay may have looked for the family
/// before it was stored, and its mark is seen only once it commits, so a
/// plain read would miss both. (On SQLite one transaction writes at a
/// time: the replay's comes wholly before the family is stored, or after.)
pub async fn replayed(db: &Db, code: &str) -> Result<bool, Error> {
    let sql = if db.is_postgres() {
        "SELECT replayed_at FROM authorization_codes WHERE code_hash = $1 FOR SHARE"
    } else {
        "SELECT replayed_at FROM authorization_codes WHERE code_hash = $1"
    };
    let row: Vec<(Option<i64>,)> = on_pool!(db.read(), p => sqlx::query_as(sql)
        .bind(token_digest(code)).fetch_all(p).await)?;
    Ok(row.first().is_some_and(|(r,)| r.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group of codes where one names a client deleted meanwhile: that
    /// one fails, the others are stored (before, the whole group failed).
    #[tokio::test]
    async fn a_code_the_database_refuses_fails_alone() {
        use crate::store::clients::{self, GrantType, NewClient};
        use crate::store::{users, Scopes};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let user = users::add(
            &db,
            "alice",
            "not-a-hash",
            &Scopes::default(),
            &users::Profile::default(),
            crate::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        let client = clients::add(
            &db,
            NewClient {
                name: "app".into(),
                grants: vec![GrantType::AuthorizationCode],
                redirect_uris: vec!["https://app.example.com/cb".into()],
                ..NewClient::default()
            },
            crate::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        // All queued before the writer starts: one group.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut answers = Vec::new();
        for (i, client_id) in ["deleted-client", &client.client_id, &client.client_id]
            .into_iter()
            .enumerate()
        {
            let (done, answer) = tokio::sync::oneshot::channel();
            let code = NewCode {
                hash: vec![u8::try_from(i).unwrap(); 32],
                grant: grant(client_id, &user.id),
                at: now(),
                request: None,
            };
            tx.send(Queued::Insert { code, done }).await.unwrap();
            answers.push(answer);
        }
        drop(tx);
        commit_groups(db.clone(), rx).await;
        let answers: Vec<_> = futures_util::future::join_all(answers).await;
        assert!(answers[0].as_ref().unwrap().is_err(), "{answers:?}");
        assert_eq!(answers[1].as_ref().unwrap(), &Ok(true));
        assert_eq!(answers[2].as_ref().unwrap(), &Ok(true));
        db.close().await;
    }

    fn claim(code: u8, client: &str) -> Claim {
        Claim {
            hash: vec![code; 32],
            client_id: client.into(),
            proof: proof(),
            issuing: Issued::default(),
        }
    }

    /// The proof [`grant`]'s codes are bound to.
    fn proof() -> Proof {
        Proof {
            code_challenge: "c".into(),
            redirect_uri: Some("https://app.example.com/cb".into()),
        }
    }

    /// A code's binding for `client_id` and `user_id`.
    fn grant(client_id: &str, user_id: &str) -> Grant {
        Grant {
            client_id: client_id.into(),
            user_id: user_id.into(),
            sid: "s".into(),
            redirect_uri: "https://app.example.com/cb".into(),
            code_challenge: "c".into(),
            nonce: None,
            scope: "openid".into(),
            auth_time: 0,
        }
    }

    fn spent(code: u8, client: &str) -> (Vec<u8>, Spent) {
        let grant = grant(client, "u");
        (
            vec![code; 32],
            Spent {
                grant,
                username: Some("alice".into()),
            },
        )
    }

    #[test]
    fn another_clients_claim_first_does_not_stand_in_for_the_owner() {
        // Code 1 is the owner's ("app"); "attacker" presents it first, and
        // the owner twice.
        let claims = [claim(1, "attacker"), claim(1, "app"), claim(1, "app")];
        let unique = distinct_claims(&claims);
        let who: Vec<_> = unique.iter().map(|c| c.client_id.as_str()).collect();
        assert_eq!(who, ["attacker", "app"], "the owner's first claim goes in");
        // The statement spends it for the owner only (its WHERE matches
        // the client): the owner's first claim gets the binding, nobody else.
        let shared = share_spent(&claims, vec![spent(1, "app")]);
        let got: Vec<_> = shared.iter().map(Option::is_some).collect();
        assert_eq!(got, [false, true, false]);
    }

    #[test]
    fn a_spent_code_goes_to_no_claim_of_another_client() {
        // Whatever the database returned, a binding for "app" is never
        // handed to a claim by "attacker", even one for the same code.
        let claims = [claim(1, "attacker"), claim(2, "attacker")];
        let shared = share_spent(&claims, vec![spent(1, "app"), spent(2, "app")]);
        assert!(shared.iter().all(Option::is_none));
    }

    #[test]
    fn each_code_of_a_group_goes_to_its_own_claim() {
        let claims = [claim(1, "a"), claim(2, "b"), claim(1, "a"), claim(3, "a")];
        assert_eq!(distinct_claims(&claims).len(), 3);
        let shared = share_spent(&claims, vec![spent(3, "a"), spent(1, "a"), spent(2, "b")]);
        let codes: Vec<_> = shared
            .iter()
            .map(|s| s.as_ref().map(|s| s.grant.client_id.clone()))
            .collect();
        assert_eq!(
            codes,
            [Some("a".into()), Some("b".into()), None, Some("a".into())]
        );
    }
}
