//! Signing keys: stored sealed in the database, published, rotated.
//!
//! The lifecycle is computed from the rows and the clock alone, so every
//! instance on one database agrees without talking to the others:
//!
//! - a key is **published** in the JWKS from the moment it is stored;
//! - it **signs** once its `activate_at` has passed and until a newer key's
//!   has (a rotation stores the new key `announce` ahead of its activation,
//!   so resource servers that cache the JWKS see it before any token does);
//! - it is **removed** once every token it can have signed has expired:
//!   the longest access-token lifetime any instance recorded (plus a
//!   minute of clock skew) after its successor took over.
//!
//! Two instances that decide to rotate at once store one key, not two: a
//! key the maintenance decided on is inserted only if no key was stored
//! since the rows it decided from were read (`insert_next`, `seen`), and
//! the unique `generation` settles inserts that overlap. The loser reads
//! the keys again and decides on what the winner stored. A rotation by
//! hand always stores a new key.
//!
//! The ring holds one such lifecycle per algorithm: access tokens are
//! signed with `keys.algorithm` (ES256 by default), ID tokens with RS256
//! (OpenID Connect Core §15.1) or another algorithm a client registered.
//! Generations are numbered across algorithms; each algorithm's keys
//! follow each other by generation.
//!
//! When the configured algorithms change on a database in service, the
//! lifecycle holds across the change: the first key of an algorithm new
//! to it is announced like a rotation's (access tokens meanwhile signed
//! with the key that signed them before), and the keys of an algorithm no
//! longer configured are retired: the server's maintenance records when
//! it first found them so (`retired_at`), and they are removed once every
//! token they signed has expired, counted from then or from when the
//! access-token algorithm's first key signed, if later. Only the server's
//! maintenance records that or makes a new
//! algorithm's first key or starts a rotation `rotate_every` makes due; an
//! admin command (which may run under another configuration) never does,
//! and `tessera keys rotate` rotates the algorithms the database holds.
//! The admin commands take the key settings the server last started with
//! (`crate::store::key_settings`): a rotation by hand is announced as the
//! server announces its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, JwkSet, KeySet, PemKind, SigningKey};

use crate::db::{on_pool, Db};
use crate::secret::MasterKey;
use crate::store::audit::{record_in, InChange};
use crate::store::{now, secs};
use crate::Error;

/// Clock skew allowed between instances and resource servers.
const SKEW: i64 = 60;

/// How long past its `exp` a token may still be accepted: the largest
/// leeway a verifier may be given (`tessera-jose`'s `MAX_LEEWAY`, and
/// common elsewhere: Microsoft.IdentityModel's default is 5 min). A key
/// is kept published that long past its last token's expiry, so a
/// verifier with that leeway that fetches the key set then still finds it.
const LEEWAY_PAST_EXPIRY: i64 = jwt::MAX_LEEWAY.as_secs() as i64;

/// Keys of one algorithm a rotation by hand may leave announced, not yet
/// signing ([`Keys::rotate`]).
const MAX_ANNOUNCED: usize = 2;

/// How keys are made and rotated.
#[derive(Clone, Debug)]
pub struct KeyPolicy {
    /// The algorithm of access tokens.
    pub algorithm: Algorithm,
    /// The algorithms ID tokens may be signed with (RS256 first).
    pub id_token_algorithms: Vec<Algorithm>,
    /// Start a rotation when the signing key is this old (`None`: never
    /// rotate automatically).
    pub rotate_every: Option<Duration>,
    /// How long a new key is published before it signs.
    pub announce: Duration,
    /// `Cache-Control: max-age` of the JWKS: how long a verifier may keep
    /// a key set before it fetches it again.
    pub jwks_max_age: Duration,
    /// The longest access-token lifetime any client can have: how long a
    /// replaced key stays published.
    pub max_access_ttl: Duration,
    /// ID-token algorithms clients registered (`--id-token-alg`) that
    /// `id_token_algorithms` leaves out: their keys are kept, made and
    /// rotated all the same while any client uses them
    /// ([`keep_algorithms_clients_use`]), but no new client may choose
    /// them (discovery lists them: their clients may check).
    pub kept_for_clients: Vec<Algorithm>,
    /// The access-token algorithm before `algorithm`, as the server last
    /// recorded it (`store::key_settings::previous_access_algorithm`):
    /// its active key signs access tokens until `algorithm`'s first key
    /// is due, even where it stays configured for ID tokens.
    pub previous_algorithm: Option<Algorithm>,
}

/// One stored key, as `tessera keys list` shows it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// Rotation number.
    pub generation: i64,
    /// Algorithm.
    pub alg: String,
    /// When it was stored (and published).
    pub created_at: i64,
    /// When it starts (or started) signing.
    pub activate_at: i64,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    generation: i64,
    alg: String,
    sealed_key: Vec<u8>,
    public_jwk: String,
    created_at: i64,
    activate_at: i64,
    /// When maintenance first found its algorithm no longer configured.
    retired_at: Option<i64>,
}

impl KeyPolicy {
    /// How often each instance reads the keys again and sweeps expired
    /// rows (the server's maintenance): often enough that a key announced
    /// by another instance is published here well before it signs.
    pub fn maintenance_period(&self) -> Duration {
        (self.announce / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Every algorithm the ring keeps a key for: access tokens first.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all = vec![self.algorithm];
        for alg in self
            .id_token_algorithms
            .iter()
            .chain(&self.kept_for_clients)
        {
            if !all.contains(alg) {
                all.push(*alg);
            }
        }
        all
    }
}

/// The state of a key at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Announced,
    /// Signing.
    Active,
    /// Replaced; published until its tokens have expired.
    Retired,
    /// Stored, but its sealed bytes do not open under the master key
    /// that opens the database's check (its row was changed by hand?):
    /// neither published nor used to sign, whatever its dates say;
    /// `tessera keys revoke KID` deletes it. Only a running server, which
    /// has opened the keys, lists a key so (`/admin/keys`).
    Unreadable,
}

/// A loaded, opened key.
struct LoadedKey {
    info: KeyInfo,
    signing: Arc<SigningKey>,
}

/// A snapshot of the published keys.
struct Ring {
    /// Oldest first (by generation).
    keys: Vec<LoadedKey>,
    jwks: Arc<str>,
    verify: Arc<KeySet>,
}

/// The signing keys of this server, cached from the database.
#[derive(Debug)]
pub struct Keys {
    db: Db,
    master: Arc<MasterKey>,
    policy: KeyPolicy,
    ring: RwLock<Arc<Ring>>,
    /// Whether the database is known to be tied to this master key
    /// ([`Keys::claim_master`]).
    master_claimed: std::sync::atomic::AtomicBool,
    /// The longest access-token lifetime known (seconds): the policy's,
    /// raised at each maintenance to the longest any instance recorded
    /// (an instance started later with a longer one mints tokens that a
    /// replaced key must outlive here too).
    longest_ttl: std::sync::atomic::AtomicI64,
    /// Held from reading the rows to installing the ring built from them
    /// (a maintenance, a reading of the keys again): one that read the
    /// rows before a key was revoked must not install them after a
    /// reading that left the key out.
    reloading: tokio::sync::Mutex<()>,
    /// Whether the ring is up to date with the stored keys.
    freshness: Freshness,
    /// Keys whose rows did not open when last tried, already said in the
    /// log ([`Keys::open_all`]), and listed as such ([`Keys::stored`]).
    unopenable: std::sync::Mutex<HashSet<String>>,
}

/// Whether the ring was read lately, and after every key revocation this
/// instance has heard of ([`Keys::current`]). A ring that stopped being
/// read (a row this version cannot open: an algorithm a newer version
/// added, say) goes on signing and publishing what it last held, while
/// the other instances rotate, retire and revoke without it.
#[derive(Debug)]
struct Freshness {
    /// Key revocations heard of, from the revocation log.
    heard: std::sync::atomic::AtomicU64,
    /// Of those, how many a reading installed since had heard of when it
    /// read the rows.
    caught_up: std::sync::atomic::AtomicU64,
    /// When a reading was last installed.
    read_at: std::sync::Mutex<std::time::Instant>,
    /// Readings [`Keys::caught_up`] began, and finished.
    readings: std::sync::atomic::AtomicU64,
    finished: std::sync::atomic::AtomicU64,
    /// How the last one ended: when it did (the count of those finished),
    /// the revocations it had heard of when it began, and why it failed.
    /// Requests that waited while it ran, for no revocation it had not
    /// heard of, take its failure rather than each try again in turn.
    last_failure: std::sync::Mutex<Option<Failed>>,
}

/// A reading of the keys again that failed.
#[derive(Clone, Debug)]
struct Failed {
    finished: u64,
    heard: u64,
    why: String,
}

impl Freshness {
    fn new() -> Freshness {
        Freshness {
            heard: 0.into(),
            caught_up: 0.into(),
            read_at: std::sync::Mutex::new(std::time::Instant::now()),
            readings: 0.into(),
            finished: 0.into(),
            last_failure: std::sync::Mutex::new(None),
        }
    }

    /// Why a reading failed that finished after `seen` had (the request
    /// waited while it ran) and had heard of every revocation up to
    /// `needed` when it began (it would have caught the request up).
    fn failed_since(&self, seen: u64, needed: u64) -> Option<String> {
        let last = match self.last_failure.lock() {
            Ok(last) => last.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        last.filter(|f| f.finished > seen && f.heard >= needed)
            .map(|f| f.why)
    }

    /// A reading that began having heard of `heard` revocations ended,
    /// failing for `why`, or not.
    fn finished(&self, heard: u64, why: Option<String>) {
        use std::sync::atomic::Ordering;
        let finished = self.finished.fetch_add(1, Ordering::AcqRel) + 1;
        let entry = why.map(|why| Failed {
            finished,
            heard,
            why,
        });
        match self.last_failure.lock() {
            Ok(mut last) => *last = entry,
            Err(poisoned) => *poisoned.into_inner() = entry,
        }
    }

    /// What a reading that reads the rows from now on will have caught
    /// up with.
    fn reading(&self) -> u64 {
        self.heard.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A reading that began at `heard` ([`Freshness::reading`]) is
    /// installed.
    fn installed(&self, heard: u64) {
        self.caught_up
            .fetch_max(heard, std::sync::atomic::Ordering::AcqRel);
        // The database answered since any failure: not one to share.
        match self.last_failure.lock() {
            Ok(mut last) => *last = None,
            Err(poisoned) => *poisoned.into_inner() = None,
        }
        let now = std::time::Instant::now();
        match self.read_at.lock() {
            Ok(mut at) => *at = now,
            Err(poisoned) => *poisoned.into_inner() = now,
        }
    }

    /// Whether a key revocation was heard of that no installed reading
    /// has caught up with: the revoked key may still be in the ring.
    fn behind(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.caught_up.load(Ordering::Acquire) < self.heard.load(Ordering::Acquire)
    }

    fn read_ago(&self) -> Duration {
        match self.read_at.lock() {
            Ok(at) => at.elapsed(),
            Err(poisoned) => poisoned.into_inner().elapsed(),
        }
    }
}

/// Store a key (`$1` kid, `$2` alg, `$3` sealed, `$4` public JWK, `$5`
/// created, `$6` activation) as the next generation, if the highest
/// stored is at most `$7`; nothing when another instance stored that
/// generation first.
const INSERT_NEXT: &str =
    "INSERT INTO signing_keys (kid, generation, alg, sealed_key, public_jwk, created_at, activate_at) \
     SELECT $1, next.generation, $2, $3, $4, $5, $6 \
     FROM (SELECT COALESCE(MAX(generation), 0) + 1 AS generation FROM signing_keys) AS next \
     WHERE next.generation - 1 <= $7 ON CONFLICT DO NOTHING";

/// How long a guard serves a key set stale at most while the issuer cannot
/// be reached (`tessera_guard::RemoteJwks`'s default `max_stale`).
const GUARD_MAX_STALE: i64 = 3600;

/// The label and the plaintext of the row that ties a database to one
/// master key.
const MASTER_CHECK: &str = "tessera master key check";

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.info.kid))
            .finish()
    }
}

impl Keys {
    /// Load the keys, creating the first one when the database has none.
    pub async fn load(db: Db, master: MasterKey, policy: KeyPolicy) -> Result<Keys, Error> {
        let empty = Ring {
            keys: Vec::new(),
            jwks: Arc::from(r#"{"keys":[]}"#),
            verify: Arc::new(KeySet::new(Vec::new())?),
        };
        let keys = Keys {
            db,
            master: Arc::new(master),
            ring: RwLock::new(Arc::new(empty)),
            master_claimed: std::sync::atomic::AtomicBool::new(false),
            longest_ttl: std::sync::atomic::AtomicI64::new(secs(policy.max_access_ttl)),
            policy,
            reloading: tokio::sync::Mutex::new(()),
            freshness: Freshness::new(),
            unopenable: std::sync::Mutex::new(HashSet::new()),
        };
        // No removal here: every admin command loads the keys, perhaps
        // under a configuration (a shorter `max_access_ttl`) that is not
        // the server's; only the server's own maintenance removes keys.
        keys.update(false, now()).await?;
        Ok(keys)
    }

    /// Whether the ring is current: read within three maintenance periods
    /// ([`KeyPolicy::maintenance_period`]; the server's maintenance reads
    /// it every period), and since the last key revocation this instance
    /// heard of. `/readyz` says why not.
    pub fn current(&self) -> Result<(), &'static str> {
        if self.freshness.behind() {
            return Err("a signing key was revoked and the keys have not been read again");
        }
        if self.freshness.read_ago() > self.policy.maintenance_period().saturating_mul(3) {
            return Err("signing keys not read lately");
        }
        Ok(())
    }

    /// A key was revoked (the revocation log says so, whichever instance
    /// revoked it): nothing is signed until a reading of the keys that
    /// began after this is installed ([`Keys::caught_up`]), since the
    /// revoked key may be the one that signs.
    pub fn heard_of_revocation(&self) {
        self.freshness
            .heard
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Refuse to sign while a revoked key may still be in the ring.
    fn not_behind(&self) -> Result<(), Error> {
        if self.freshness.behind() {
            return Err(Error::Unavailable(
                "a signing key was revoked and the keys are being read again".into(),
            ));
        }
        Ok(())
    }

    /// The master key, which also seals other secrets kept at rest (a
    /// refresh token's successor during the grace window).
    pub fn master(&self) -> Arc<MasterKey> {
        Arc::clone(&self.master)
    }

    fn snapshot(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(ring) => Arc::clone(&ring),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The access-token key that signs at `at`: the configured
    /// algorithm's, or, while none of it signs yet (the algorithm was
    /// changed, its first key is announced), the key that signed before
    /// (see `standing_in`).
    pub fn signer(&self, at: i64) -> Result<Arc<SigningKey>, Error> {
        let ring = self.snapshot();
        if let Some(key) = self.standing_in(&ring, at) {
            return Ok(Arc::clone(&key.signing));
        }
        signer_in(&ring, self.policy.algorithm, at)
    }

    /// The key that signs access tokens at `at` in place of the configured
    /// algorithm's, none of which signs yet: the newest active key of the
    /// algorithm that signed them before (`previous_algorithm`, even if it
    /// stays configured for ID tokens: RS256 → ES256 with RS256 ID
    /// tokens), else of an algorithm no longer configured, until the
    /// configured algorithm's first key is due, not a moment sooner (that
    /// key was announced so that verifiers have it by then). Never a key
    /// of another configured algorithm (an ID-token key) whose algorithm
    /// access tokens never had.
    fn standing_in<'r>(&self, ring: &'r Ring, at: i64) -> Option<&'r LoadedKey> {
        let alg = self.policy.algorithm;
        let of_alg = || ring.keys.iter().filter(|k| k.signing.algorithm() == alg);
        // The usual case, on every token minted: one pass finds a key of
        // the configured algorithm that signs.
        if of_alg().any(|k| k.info.activate_at <= at) {
            return None;
        }
        let configured = self.policy.algorithms();
        let active = || ring.keys.iter().rev().filter(|k| k.info.activate_at <= at);
        active()
            .find(|k| Some(k.signing.algorithm()) == self.policy.previous_algorithm)
            .or_else(|| active().find(|k| !configured.contains(&k.signing.algorithm())))
    }

    /// The key of `alg` that signs at `at`: the newest of that algorithm
    /// whose activation has passed.
    pub fn signer_for(&self, alg: Algorithm, at: i64) -> Result<Arc<SigningKey>, Error> {
        signer_in(&self.snapshot(), alg, at)
    }

    /// Sign a JWT with the `alg` key under `typ` (ID tokens: `JWT`;
    /// logout tokens: `logout+jwt`).
    pub fn sign_as<T: Serialize>(
        &self,
        alg: Algorithm,
        typ: &str,
        claims: &Claims<T>,
        at: i64,
    ) -> Result<String, Error> {
        self.not_behind()?;
        let key = self.signer_for(alg, at)?;
        let header = Header::for_key(&key).typ(typ);
        Ok(jwt::sign_with_header(&header, claims, &key)?)
    }

    /// Sign an access token (RFC 9068: `typ: at+jwt`, `kid`).
    pub fn sign<T: Serialize>(&self, claims: &Claims<T>, at: i64) -> Result<String, Error> {
        self.not_behind()?;
        let key = self.signer(at)?;
        let header = Header::for_key(&key).typ("at+jwt");
        Ok(jwt::sign_with_header(&header, claims, &key)?)
    }

    /// The published JWKS document.
    pub fn jwks_json(&self) -> Arc<str> {
        Arc::clone(&self.snapshot().jwks)
    }

    /// The published public keys, to verify our own tokens.
    pub fn verifying_keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.snapshot().verify)
    }

    /// The stored keys with their state at `at`, as [`stored`] reads them,
    /// but those this server found not to open listed as
    /// [`KeyState::Unreadable`] (and the key that signs instead as
    /// active): what `/admin/keys` shows.
    pub async fn stored(&self, at: i64) -> Result<Vec<(KeyInfo, KeyState)>, Error> {
        let unreadable = match self.unopenable.lock() {
            Ok(said) => said.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        stored_except(&self.db, &self.policy, at, &unreadable).await
    }

    /// The published keys with their state at `at`; those of algorithms
    /// no longer configured are retired, but for the one that still signs
    /// access tokens until the configured algorithm's first key does.
    pub fn list(&self, at: i64) -> Vec<(KeyInfo, KeyState)> {
        let ring = self.snapshot();
        states_under(
            ring.keys.iter().map(|k| k.info.clone()).collect(),
            &self.policy,
            at,
        )
    }

    /// Store a new key of each algorithm the database holds keys of (of
    /// the configured ones when it holds none), signing from `now +
    /// announce` (a rotation started by hand). Returns their ids.
    ///
    /// The database's algorithms, not the configuration's: `tessera keys
    /// rotate` may run without the server's configuration, and must then
    /// rotate the keys that sign (a leaked one above all), not make keys
    /// of the default algorithms.
    ///
    /// Its times are the database's: the command may run on another
    /// machine than the servers (`tessera keys rotate` on an admin host),
    /// whose clock, hours off, would make a key that signs unannounced,
    /// and lets the maintenance delete the key before it while its tokens
    /// live.
    ///
    /// `recorded`'s event, made of the new keys' ids, is written in the
    /// transaction that stores them, with a `key_created` event for each.
    pub async fn rotate(&self, recorded: InChange<'_, [String]>) -> Result<Vec<String>, Error> {
        self.rotate_on_clock(now(), recorded).await
    }

    /// [`Keys::rotate`] run where the clock says `local` (seconds): the
    /// tests set a clock that is off this way.
    pub async fn rotate_on_clock(
        &self,
        local: i64,
        mut recorded: InChange<'_, [String]>,
    ) -> Result<Vec<String>, Error> {
        let now = self.db.database_time().await?.unwrap_or(local);
        let activate_at = now.saturating_add(secs(self.policy.announce));
        let rows = self.fetch().await?;
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for row in &rows {
            let alg: Algorithm = row.alg.parse().map_err(|_| {
                Error::Database(format!("key {}: unknown algorithm {}", row.kid, row.alg))
            })?;
            // An algorithm the server's maintenance found dropped (each of
            // its keys marked `retired_at`) is on its way out: no new key.
            let dropped = rows
                .iter()
                .filter(|r| r.alg == row.alg)
                .all(|r| r.retired_at.is_some());
            if !dropped && !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if algorithms.is_empty() {
            algorithms = self.policy.algorithms();
        }
        // A rotation by hand waits for the keys it announced: a script that
        // retried it in a loop made a key a call, until the key set passed
        // what verifiers take (the guard: 512 KiB) and every API refused.
        // Counted here, before keys are made (an RSA key takes a while),
        // and again in the transaction that stores them: rotations at once
        // would all pass the first count.
        for alg in &algorithms {
            let waiting: Vec<i64> = rows
                .iter()
                .filter(|r| r.alg == alg.as_str() && r.activate_at > now)
                .map(|r| r.activate_at)
                .collect();
            if let Some(full) = announced_in_full(*alg, &waiting, now) {
                return Err(full);
            }
        }
        // The access-token key first: what `kid` of the answer names.
        if let Some(at) = algorithms.iter().position(|a| *a == self.policy.algorithm) {
            algorithms[..=at].rotate_right(1);
        }
        let mut made = Vec::new();
        for alg in algorithms {
            made.push((alg, self.make_key(alg).await?));
        }
        // All in one transaction: a rotation away from a leaked key that
        // failed halfway would answer an error for keys it had stored,
        // and its retry would store a second key of the first algorithm.
        let kids: Vec<String> = made.iter().map(|(_, (kid, _, _))| kid.clone()).collect();
        for _ in 0..5 {
            let mut full = None;
            let stored = on_pool!(self.db.write(), p => {
                let mut tx = p.begin_with(self.db.begin_write()).await?;
                // The generations counted from, read first: on PostgreSQL
                // each statement reads anew, and a rotation committed after
                // this read (before the count or the insert) makes the
                // insert store nothing, and this one count again. Two
                // rotations at once take the same generation: one stores.
                let counted: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(generation), 0) FROM signing_keys",
                )
                .fetch_one(&mut *tx).await?;
                for (alg, _) in &made {
                    let waiting: Vec<i64> = sqlx::query_scalar(
                        "SELECT activate_at FROM signing_keys WHERE alg = $1 AND activate_at > $2",
                    )
                    .bind(alg.as_str()).bind(now)
                    .fetch_all(&mut *tx).await?;
                    full = announced_in_full(*alg, &waiting, now);
                    if full.is_some() {
                        break;
                    }
                }
                let mut all = full.is_none();
                for (seen, (alg, (kid, sealed, public))) in
                    (counted..).zip(made.iter().filter(|_| all))
                {
                    let inserted = sqlx::query(INSERT_NEXT)
                        .bind(kid).bind(alg.as_str()).bind(sealed).bind(public)
                        .bind(now).bind(activate_at).bind(seen)
                        .execute(&mut *tx).await?.rows_affected();
                    if inserted != 1 {
                        // Another instance took the generation: again.
                        all = false;
                        break;
                    }
                }
                if all {
                    for (alg, (kid, _, _)) in &made {
                        record_in!(tx, created(kid, *alg, activate_at), &());
                    }
                    record_in!(tx, recorded, kids.as_slice());
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
                Ok::<_, sqlx::Error>(all)
            })?;
            if let Some(full) = full {
                return Err(full);
            }
            if !stored {
                continue;
            }
            // Stored: that is the answer. A reload that fails here (a key
            // row that does not open) is the maintenance's to report; it
            // reads these keys at its next round.
            if let Err(e) = self.update(false, now).await {
                tracing::error!(error = %e, "new keys stored, but the signing keys could not be read again");
            }
            return Ok(kids);
        }
        Err(Error::Database(
            "could not store new keys: other instances kept winning".into(),
        ))
    }

    /// Revoke key `kid` at once, as for a key that leaked: unlike a
    /// rotation, which announces the next key and keeps the old one while
    /// its tokens live, the key is deleted (no longer published nor used
    /// to sign) and, in the same transaction, every token it verifies is
    /// revoked through the log ([`tessera_guard::revocation::Revocation::Key`]):
    /// at this server and, through the feed, at every guard, whatever the
    /// token's `iat` (who holds the key signs what they like). When it was
    /// the key that signs for its algorithm, a new key of that algorithm
    /// signs from now on, unannounced (verifiers fetch the key set again
    /// for a `kid` they do not know); its id is returned. A key announced
    /// that has not signed yet (the first of an algorithm the
    /// configuration changed to) is replaced by one that signs when it
    /// would have: the key that signs meanwhile goes on. A key of an
    /// algorithm no longer in use is not replaced.
    ///
    /// Every token the key signed is refused from now on: their clients
    /// ask for new ones (a refresh token is not signed, and goes on). A
    /// key of this server no longer stored is revoked through the log all
    /// the same (`Keys::revoke_dropped`).
    /// `recorded`'s event is written in the same transaction.
    pub async fn revoke(
        &self,
        kid: &str,
        mut recorded: InChange<'_>,
    ) -> Result<Option<String>, Error> {
        let now = self.db.database_time().await?.unwrap_or_else(now);
        let rows = self.fetch().await?;
        let Some(row) = rows.iter().find(|r| r.kid == kid) else {
            return self.revoke_dropped(kid, now, recorded).await.map(|()| None);
        };
        // `None`: an algorithm this version does not know (the row was
        // changed, or a newer version stored it): revoked all the same.
        let alg: Option<Algorithm> = row.alg.parse().ok();
        // Decided on the keys that open (those that do not never sign,
        // `Keys::open_all`): the key that signs for the algorithm now (the
        // newest active one); without it, the algorithm needs a key that
        // signs at once.
        let ring = self.snapshot();
        let opens =
            |r: &KeyRow| ring.keys.iter().any(|k| k.info.kid == r.kid) || self.open(r).is_ok();
        let signing = rows
            .iter()
            .rev()
            .filter(|r| r.alg == row.alg && opens(r))
            .find(|r| r.activate_at <= now)
            .is_none_or(|r| r.kid == kid);
        // An algorithm no longer configured (nor used by any client) is on
        // its way out (the policy is the server's: an admin command takes
        // its settings, `crate::store::key_settings`): its last key
        // revoked, nothing of it should sign again. While it stood in for
        // a new access-token algorithm, that algorithm's first key signs
        // from now on (`Keys::signer`), made now if the server's
        // maintenance has not made it yet.
        let dropped = alg.is_none_or(|alg| !self.policy.algorithms().contains(&alg));
        let access = self.policy.algorithm;
        let access_has_none = !rows.iter().any(|r| r.alg == access.as_str() && opens(r));
        let replacement = match alg {
            Some(alg) if signing && !dropped => Some((alg, self.make_key(alg).await?)),
            _ if signing && dropped && access_has_none => {
                Some((access, self.make_key(access).await?))
            }
            _ => None,
        };
        let activate_at = row.activate_at.max(now);
        // Kept while any token it signed can live, and while any guard
        // may still hold a key set with the key in it: a guard keeps a set
        // up to `jwks_max_age` (or `announce`, whichever is longer: the
        // server warns when `jwks_max_age` is), and serves it stale up to
        // an hour more while the issuer cannot be reached (`RemoteJwks`'s
        // `max_stale`). Forgotten sooner, a token forged with the key would
        // pass such a guard.
        self.learn_longest_ttl().await?;
        let event = tessera_guard::revocation::Revocation::Key {
            kid: kid.to_owned(),
            until: now
                .saturating_add(self.keep_after())
                .saturating_add(self.guards_hold_key_sets())
                .saturating_add(GUARD_MAX_STALE),
        };
        for _ in 0..5 {
            let done = on_pool!(self.db.write(), p => {
                let mut tx = p.begin_with(self.db.begin_write()).await?;
                let deleted = sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid).execute(&mut *tx).await?.rows_affected();
                let mut stored = true;
                if let Some((alg, (new_kid, sealed, public))) = &replacement {
                    stored = sqlx::query(INSERT_NEXT)
                        .bind(new_kid).bind(alg.as_str()).bind(sealed).bind(public)
                        .bind(now).bind(activate_at).bind(i64::MAX)
                        .execute(&mut *tx).await?.rows_affected() == 1;
                }
                // And at least the longest access-token lifetime any
                // start allowed, read inside.
                crate::store::revocation::append_revocation!(self.db, tx, event.clone(), now);
                if deleted == 1 && stored {
                    if let Some((alg, (new_kid, _, _))) = &replacement {
                        record_in!(tx, created(new_kid, *alg, activate_at), &());
                    }
                    record_in!(tx, recorded, &());
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(Some(true))
                } else {
                    tx.rollback().await?;
                    // Gone meanwhile (revoked by another, or dropped by a
                    // maintenance), or another instance took the
                    // generation: try the insert again.
                    Ok(if deleted == 1 { None } else { Some(false) })
                }
            })?;
            match done {
                Some(true) => {
                    if let Err(e) = self.refresh_at(now).await {
                        tracing::error!(error = %e, "key revoked, but the signing keys could not be read again");
                    }
                    return Ok(replacement.map(|(_, (new_kid, _, _))| new_kid));
                }
                Some(false) => {
                    return self.revoke_dropped(kid, now, recorded).await.map(|()| None);
                }
                None => continue,
            }
        }
        Err(Error::Database(
            "could not revoke the key: other instances kept storing keys".into(),
        ))
    }

    /// Revoke key `kid` that is no longer stored: a retired key is
    /// dropped once all its tokens have expired, but a guard may hold a
    /// key set with it for a while yet (up to `jwks_max_age`, and an hour
    /// more while the issuer cannot be reached), and would accept what
    /// whoever holds a leaked key signs. The revocation event reaches them
    /// through the feed as for a stored key. Only a key this server made
    /// (its `key_created` event in the audit trail, or its `key_removed`
    /// one, written when it was dropped: the first may be older than the
    /// trail keeps): another id is [`Error::NotFound`], as a mistyped one
    /// should be.
    async fn revoke_dropped(
        &self,
        kid: &str,
        now: i64,
        mut recorded: InChange<'_>,
    ) -> Result<(), Error> {
        let created = format!("kid={kid} alg=");
        let made_here = on_pool!(self.db.read(), p => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_log WHERE event IN ('key_created', 'key_removed') \
             AND substr(detail, 1, length($1)) = $1",
        )
        .bind(&created)
        .fetch_one(p)
        .await)?
            > 0;
        if !made_here {
            return Err(Error::NotFound {
                kind: "signing key",
                name: kid.to_owned(),
            });
        }
        let event = tessera_guard::revocation::Revocation::Key {
            kid: kid.to_owned(),
            until: now
                .saturating_add(self.guards_hold_key_sets())
                .saturating_add(GUARD_MAX_STALE),
        };
        on_pool!(self.db.write(), p => {
            let mut tx = p.begin_with(self.db.begin_write()).await?;
            crate::store::revocation::append_revocation!(self.db, tx, event.clone(), now);
            record_in!(tx, recorded, &());
            tx.commit().await
        })?;
        Ok(())
    }

    /// Bring the stored keys up to date with the policy and reload the
    /// cache: create the first key, start a due rotation, drop keys whose
    /// tokens have all expired. Run periodically by the server (a start
    /// and the admin commands only create the first keys of an empty
    /// database).
    ///
    /// Nothing is written before the master key has opened every stored
    /// key, or, for one that does not open, the database's check row
    /// (`Keys::open_all`): a start with the wrong master key fails here,
    /// and never stores a key sealed under a master key that cannot open
    /// the others.
    pub async fn maintain(&self) -> Result<(), Error> {
        self.maintain_at(now()).await
    }

    /// [`Keys::maintain`] as of `at` (seconds): the tests move the clock
    /// this way.
    ///
    /// A maintenance that cannot write (a database left read-only after a
    /// failover, a lock timeout, a full disk) still reads the keys other
    /// instances made, and fails: else this instance would go on signing
    /// with, and publishing, a key they have replaced (one replaced
    /// because it leaked, perhaps), until its writes pass again.
    pub async fn maintain_at(&self, at: i64) -> Result<(), Error> {
        let maintained = self.update(true, at).await;
        if maintained.is_err() {
            if let Err(e) = self.refresh_at(at).await {
                tracing::warn!(error = %e, "reading the signing keys again failed too");
            }
        }
        maintained
    }

    /// Read the stored keys again, as of `at`, and write nothing: what an
    /// instance that must not maintain (its clock runs ahead of the
    /// database's) still does, so that it publishes and signs with the
    /// keys the others made.
    pub async fn refresh_at(&self, at: i64) -> Result<(), Error> {
        let _in_turn = self.reloading.lock().await;
        self.read_in_turn(at).await
    }

    /// Read the keys again if a key revocation was heard of since the
    /// last reading ([`Keys::heard_of_revocation`]), before anything is
    /// signed: the token endpoint waits for this rather than refuse
    /// while the reading the revocation started is under way. Requests
    /// that wait together are served by one reading.
    pub async fn caught_up(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if !self.freshness.behind() {
            return Ok(());
        }
        let seen = self.freshness.finished.load(Ordering::Acquire);
        let needed = self.freshness.reading();
        let _in_turn = self.reloading.lock().await;
        if !self.freshness.behind() {
            return Ok(());
        }
        // One that ended while this request waited, and failed, for every
        // revocation this request waits for: its answer is this one's too
        // (else each waiting request tried again in turn, five seconds
        // each, on a database that stopped answering, until the listener
        // gave them all up).
        if let Some(why) = self.freshness.failed_since(seen, needed) {
            return Err(Error::Unavailable(why));
        }
        self.freshness.readings.fetch_add(1, Ordering::AcqRel);
        let heard = self.freshness.reading();
        let read = self.read_now_in_turn();
        // Bounded as a reading of the revocation log is: the requests
        // that wait for it (and the maintenance, which takes the same
        // lock) are answered rather than held by a database that stopped
        // answering.
        let limit = crate::store::revocation::READ_TIMEOUT;
        let done = match tokio::time::timeout(limit, read).await {
            Ok(read) => read.map_err(|e| {
                format!("a signing key was revoked, and the keys could not be read again: {e}")
            }),
            Err(_) => Err(format!(
                "a signing key was revoked, and reading the keys again did not finish within {limit:?}"
            )),
        };
        self.freshness.finished(heard, done.as_ref().err().cloned());
        done.map_err(Error::Unavailable)
    }

    /// Readings [`Keys::caught_up`] has begun (for tests and metrics).
    pub fn catch_up_readings(&self) -> u64 {
        self.freshness
            .readings
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// [`Keys::refresh_at`] with `reloading` held.
    async fn read_in_turn(&self, at: i64) -> Result<(), Error> {
        let heard = self.freshness.reading();
        self.learn_longest_ttl().await?;
        let mut rows = self.fetch().await?;
        let (opened, skipped) = self.open_all(&rows, HashMap::new()).await?;
        rows.retain(|r| !skipped.contains(&r.kid));
        self.reload(rows, &opened, at)?;
        self.freshness.installed(heard);
        Ok(())
    }

    /// Read the stored keys again now, by the database's clock where it
    /// has one (a key revoked through another instance: see
    /// [`crate::store::revocation::Revocations::when_key_revoked`]). An
    /// instance whose own clock runs ahead would otherwise drop keys still
    /// needed until its next maintenance.
    pub async fn refresh_now(&self) -> Result<(), Error> {
        let _in_turn = self.reloading.lock().await;
        self.read_now_in_turn().await
    }

    /// [`Keys::refresh_now`] with `reloading` held.
    async fn read_now_in_turn(&self) -> Result<(), Error> {
        let at = self.db.database_time().await?.unwrap_or_else(now);
        self.read_in_turn(at).await
    }

    /// [`Keys::maintain`], removing retired keys only when `remove`.
    ///
    /// `now` decides what is deleted; the server passes the time that has
    /// really passed, held back after the wall clock jumped forward. A
    /// key made here is announced by the wall clock, which is what
    /// signing follows: made by a held-back `now`, it would sign as much
    /// earlier, unannounced.
    async fn update(&self, remove: bool, now: i64) -> Result<(), Error> {
        let _in_turn = self.reloading.lock().await;
        let heard = self.freshness.reading();
        // Keys are made by the database's clock on PostgreSQL, alone: an
        // admin command may run on a host whose clock is off either way
        // (this decides when a key signs, and a key made hours ahead would
        // hold back every rotation until then). On SQLite, by the later of
        // the wall clock and `now`.
        let made_at = match self.db.database_time().await? {
            Some(database) => database,
            None => now.max(crate::store::now()),
        };
        let all = self.fetch().await?;
        let (opened, skipped) = self.open_all(&all, HashMap::new()).await?;
        self.claim_master().await?;
        // Decided on the keys that open: one that does not is no one's
        // successor (its predecessor goes on signing, and is not removed
        // for it) and signs nothing, so that a rotation it would have
        // been, or the first key of its algorithm, is made anew. Only the
        // generations count them all.
        let mut seen = all.iter().map(|r| r.generation).max().unwrap_or(0);
        let (broken, mut rows): (Vec<KeyRow>, Vec<KeyRow>) =
            all.into_iter().partition(|r| skipped.contains(&r.kid));
        if seen == 0 {
            self.insert_first(&self.policy.algorithms(), made_at)
                .await?;
            (rows, seen) = usable(self.fetch().await?, &skipped);
        }
        // The first key of an algorithm new to a database in service, and
        // a rotation `rotate_every` makes due: made by the server's
        // maintenance only, never by a start's first reading (the
        // maintenance follows at once) or an admin command, which may run
        // under another configuration (`rotate_every` is not among the
        // settings it takes from the server). A new algorithm's first key
        // is announced, as a rotation's is.
        let maintained = if remove {
            self.policy.algorithms()
        } else {
            Vec::new()
        };
        for alg in maintained {
            for _ in 0..5 {
                let of_alg: Vec<&KeyRow> = rows.iter().filter(|r| r.alg == alg.as_str()).collect();
                // A rotation whose key does not open is made again,
                // announced as it was: else, without `rotate_every`, the
                // key before it signed for ever.
                let newest = of_alg.iter().map(|r| r.generation).max().unwrap_or(0);
                let pending = of_alg.iter().any(|r| r.activate_at > made_at);
                let lost = !of_alg.is_empty()
                    && !pending
                    && broken
                        .iter()
                        .any(|b| b.alg == alg.as_str() && b.generation > newest);
                let again = lost.then(|| made_at.saturating_add(secs(self.policy.announce)));
                let Some(activate_at) = self.due(&of_alg, made_at).or(again) else {
                    break;
                };
                // A new algorithm's first key is announced; one made because
                // none of the algorithm's keys opens signs at once, as the
                // only key there is to sign with (`signer_in`).
                let none_opens = broken.iter().any(|b| b.alg == alg.as_str());
                let activate_at = if of_alg.is_empty() && !none_opens {
                    activate_at.max(made_at.saturating_add(secs(self.policy.announce)))
                } else {
                    activate_at
                };
                let won = self
                    .insert_next(alg, made_at, activate_at, Some(seen))
                    .await?;
                (rows, seen) = usable(self.fetch().await?, &skipped);
                if won.is_some() {
                    tracing::info!(%alg, activate_at, "new signing key stored");
                    break;
                }
                // Another instance stored a key since `rows` were read:
                // decide again on what it stored.
            }
        }
        if remove {
            self.learn_longest_ttl().await?;
            if self.mark_retired(&rows, now).await? {
                (rows, _) = usable(self.fetch().await?, &skipped);
            }
        }
        // The keys stored since the first reading, opened too.
        let (opened, more) = self.open_all(&rows, opened).await?;
        rows.retain(|r| !more.contains(&r.kid));
        if remove {
            self.expire(&rows, &broken, now).await?;
        }
        self.reload(rows, &opened, now)?;
        self.freshness.installed(heard);
        Ok(())
    }

    /// Tie the database to this master key, once, before any key is
    /// written: the first start writes a constant sealed under it, and
    /// every later one must open that. Two instances set up at once on an
    /// empty database with different master keys (each made its own)
    /// cannot both store keys: the one that did not write the check fails
    /// here, having written nothing.
    async fn claim_master(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.master_claimed.load(Ordering::Acquire) {
            return Ok(());
        }
        let sealed = self.master.seal(MASTER_CHECK, MASTER_CHECK.as_bytes())?;
        let stored: Vec<(Vec<u8>,)> = on_pool!(self.db.write(), p => {
            sqlx::query("INSERT INTO master_key_check (id, sealed) VALUES (1, $1) ON CONFLICT DO NOTHING")
                .bind(&sealed).execute(p).await?;
            sqlx::query_as("SELECT sealed FROM master_key_check WHERE id = 1").fetch_all(p).await
        })?;
        let opens = stored
            .first()
            .is_some_and(|(sealed,)| self.opens_check(sealed));
        if !opens {
            return Err(Error::MasterKey(
                "this database is tied to another master key (another instance set it up at the \
                 same time with a key of its own?): give every instance the same one, in \
                 TESSERA_MASTER_KEY or master_key_file"
                    .into(),
            ));
        }
        self.master_claimed.store(true, Ordering::Release);
        Ok(())
    }

    /// When a new key of one algorithm (its rows, oldest first) should
    /// start signing, if one is due: now when none signs, or the next
    /// rotation once it is within `announce`.
    fn due(&self, rows: &[&KeyRow], now: i64) -> Option<i64> {
        let active = rows.iter().rev().find(|r| r.activate_at <= now);
        let pending = rows.iter().any(|r| r.activate_at > now);
        match (active, self.policy.rotate_every) {
            (None, _) if !pending => Some(now),
            (Some(a), Some(every)) if !pending => {
                let next = a.activate_at.saturating_add(secs(every));
                (next.saturating_sub(secs(self.policy.announce)) <= now)
                    .then(|| next.max(now.saturating_add(secs(self.policy.announce))))
            }
            _ => None,
        }
    }

    /// Open every stored key: those in `opened` or cached in the ring are
    /// not opened again. Fails with the first key's error when one does
    /// not open, unless the master key is proven right (it opens the
    /// database's check row, [`Keys::claim_master`]) and only the sealed
    /// bytes fail to open (changed by hand): the row is then left out
    /// (not published, never used to sign) and said once, and the others
    /// serve. Else one row changed by hand stopped every start, and
    /// `tessera keys revoke` of that very key. A key of an algorithm this
    /// version does not know is a newer version's: this one stops (a
    /// start) or stops reading the keys (a running instance, which
    /// `/readyz` then takes out), rather than publish a key set without
    /// the key the newer instances sign with; so is a key whose opened
    /// bytes this version cannot read as a key (a form it does not know).
    ///
    /// The keys opened, and the ids of those left out.
    async fn open_all(
        &self,
        rows: &[KeyRow],
        mut opened: HashMap<String, Arc<SigningKey>>,
    ) -> Result<(HashMap<String, Arc<SigningKey>>, HashSet<String>), Error> {
        let previous = self.snapshot();
        let mut failed = Vec::new();
        for row in rows {
            if opened.contains_key(&row.kid) {
                continue;
            }
            let cached = previous.keys.iter().find(|k| k.info.kid == row.kid);
            match cached {
                Some(k) => {
                    opened.insert(row.kid.clone(), Arc::clone(&k.signing));
                }
                None => match self.open(row) {
                    Ok(key) => {
                        opened.insert(row.kid.clone(), Arc::new(key));
                    }
                    Err(e) => failed.push((row, e)),
                },
            }
        }
        // A key that did not open and opens now (its row put back) is
        // listed as it is again, and said again should it break again.
        {
            let mut said = match self.unopenable.lock() {
                Ok(said) => said,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !said.is_empty() {
                said.retain(|kid| !opened.contains_key(kid));
            }
        }
        if failed.is_empty() {
            return Ok((opened, HashSet::new()));
        }
        // A key of an algorithm this version does not know, or whose
        // opened bytes it cannot read (a form a newer version stores), is
        // a newer version's: never left out (its rotation would be made
        // again and the key deleted, which the newer instances sign
        // with). Only bytes the master key does not open (changed by hand)
        // are.
        let newer = failed.iter().position(|(row, e)| {
            row.alg.parse::<Algorithm>().is_err() || !matches!(e, Error::MasterKey(_))
        });
        if let Some(at) = newer {
            return Err(failed.swap_remove(at).1);
        }
        if !self.master_proven().await? {
            return Err(failed.swap_remove(0).1);
        }
        let mut said = match self.unopenable.lock() {
            Ok(said) => said,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut skipped = HashSet::new();
        for (row, e) in failed {
            skipped.insert(row.kid.clone());
            if said.insert(row.kid.clone()) {
                tracing::error!(
                    kid = %row.kid,
                    alg = %row.alg,
                    error = %e,
                    "a stored signing key does not open, though the master key opens the \
                     database's check (its row was changed?): it is neither published nor \
                     used to sign here; `tessera keys revoke KID` deletes it"
                );
            }
        }
        Ok((opened, skipped))
    }

    /// Whether the master key is known to be this database's: it opens
    /// the check row a start wrote ([`Keys::claim_master`]).
    async fn master_proven(&self) -> Result<bool, Error> {
        if self
            .master_claimed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(true);
        }
        let stored: Option<(Vec<u8>,)> = on_pool!(self.db.read(), p => sqlx::query_as(
            "SELECT sealed FROM master_key_check WHERE id = 1"
        ).fetch_optional(p).await)?;
        Ok(stored.is_some_and(|(sealed,)| self.opens_check(&sealed)))
    }

    /// Whether `sealed` is the master key check sealed under this master
    /// key.
    fn opens_check(&self, sealed: &[u8]) -> bool {
        opens_master_check(&self.master, sealed)
    }

    async fn fetch(&self) -> Result<Vec<KeyRow>, Error> {
        let rows = on_pool!(self.db.read(), p => sqlx::query_as::<_, KeyRow>(
            "SELECT kid, generation, alg, sealed_key, public_jwk, created_at, activate_at, retired_at \
             FROM signing_keys ORDER BY generation"
        ).fetch_all(p).await)?;
        Ok(rows)
    }

    /// The first keys of a new database, one per algorithm, signing at
    /// once, in one transaction. A start cut short between two stored
    /// keys would leave a database in service without the others, which
    /// the next start takes for algorithms added later: announced first,
    /// and every ID token failing meanwhile. Another instance storing its
    /// first keys at the same moment: the generations are taken in the
    /// same order, each by one of them.
    async fn insert_first(&self, algorithms: &[Algorithm], now: i64) -> Result<(), Error> {
        let mut made = Vec::new();
        for alg in algorithms.iter().copied() {
            made.push((alg, self.make_key(alg).await?));
        }
        on_pool!(self.db.write(), p => {
            let mut tx = p.begin_with(self.db.begin_write()).await?;
            for (seen, (alg, (kid, sealed, public))) in (0_i64..).zip(&made) {
                let inserted = sqlx::query(INSERT_NEXT)
                    .bind(kid).bind(alg.as_str()).bind(sealed).bind(public).bind(now).bind(now)
                    .bind(seen)
                    .execute(&mut *tx).await?.rows_affected();
                if inserted == 1 {
                    record_in!(tx, created(kid, *alg, now), &());
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(())
    }

    /// A new key of `alg`: its id, its private key sealed under the
    /// master key, its public JWK.
    async fn make_key(&self, alg: Algorithm) -> Result<(String, Vec<u8>, String), Error> {
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(alg))
            .await
            .map_err(|e| Error::KeyGeneration(format!("the task failed: {e}")))?
            .and_then(|key| key.with_thumbprint_kid())
            .map_err(|e| Error::KeyGeneration(e.to_string()))?;
        // A failure here is the server's, never the request's: said as a
        // key generation error (500, logged), not as a JOSE one (400).
        let failed = |e: tessera_jose::Error| Error::KeyGeneration(e.to_string());
        let kid = key.kid().unwrap_or_default().to_owned();
        let der = key.to_pkcs8_der().map_err(failed)?;
        let sealed = self.master.seal(&kid, der.expose())?;
        let public = key
            .verifying_key()
            .and_then(|k| k.to_public_jwk())
            .map_err(failed)?
            .to_json();
        Ok((kid, sealed, public))
    }

    /// Insert the next generation; `None` when another instance got there
    /// first (the caller re-reads). With `seen` (the highest generation
    /// the caller decided from), only if no key was stored after it.
    async fn insert_next(
        &self,
        alg: Algorithm,
        now: i64,
        activate_at: i64,
        seen: Option<i64>,
    ) -> Result<Option<String>, Error> {
        let (kid, sealed, public) = self.make_key(alg).await?;
        let won = on_pool!(self.db.write(), p => {
            let mut tx = p.begin_with(self.db.begin_write()).await?;
            let inserted = sqlx::query(INSERT_NEXT)
                .bind(&kid).bind(alg.as_str()).bind(sealed).bind(public).bind(now).bind(activate_at)
                .bind(seen.unwrap_or(i64::MAX))
                .execute(&mut *tx).await?.rows_affected();
            if inserted == 1 {
                record_in!(tx, created(&kid, alg, activate_at), &());
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok::<_, sqlx::Error>(inserted == 1)
        })?;
        Ok(won.then_some(kid))
    }

    /// Record, once, when this maintenance first finds a key's algorithm
    /// no longer configured, and forget it for a key whose algorithm is
    /// configured (again, or marked by an instance under another
    /// configuration): a stale mark would count from long ago. Whether
    /// it changed any row.
    async fn mark_retired(&self, rows: &[KeyRow], now: i64) -> Result<bool, Error> {
        let configured = self.policy.algorithms();
        let mut changed = false;
        for row in rows {
            let kept = row.alg.parse().is_ok_and(|alg| configured.contains(&alg));
            match (kept, row.retired_at) {
                (false, None) => {
                    on_pool!(self.db.write(), p => sqlx::query(
                        "UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL"
                    ).bind(now).bind(&row.kid).execute(p).await.map(|r| r.rows_affected()))?;
                    tracing::info!(kid = %row.kid, alg = %row.alg, "signing key retired: its algorithm is no longer configured");
                }
                (true, Some(_)) => {
                    on_pool!(self.db.write(), p => sqlx::query(
                        "UPDATE signing_keys SET retired_at = NULL WHERE kid = $1"
                    ).bind(&row.kid).execute(p).await.map(|r| r.rows_affected()))?;
                }
                _ => continue,
            }
            changed = true;
        }
        Ok(changed)
    }

    /// Delete keys whose successor has signed for longer than any token
    /// lives.
    ///
    /// A key that does not open (`broken`: never published, never used)
    /// goes once a newer key of its algorithm signs, or its algorithm is
    /// no longer configured.
    async fn expire(&self, rows: &[KeyRow], broken: &[KeyRow], now: i64) -> Result<(), Error> {
        let keep_after = self.keep_after();
        let mut done: Vec<(String, String)> = successions(rows)
            .filter(|(_, next)| {
                next.activate_at <= now && retired_long_enough(next, keep_after, now)
            })
            .map(|(old, _)| (old.kid.clone(), old.alg.clone()))
            .collect();
        for kid in orphans_done(rows, &self.policy, keep_after, now) {
            let alg = rows.iter().find(|r| r.kid == kid).map(|r| r.alg.clone());
            done.push((kid, alg.unwrap_or_default()));
        }
        let configured = self.policy.algorithms();
        for b in broken {
            let dropped = !b.alg.parse().is_ok_and(|alg| configured.contains(&alg));
            let replaced = rows
                .iter()
                .any(|r| r.alg == b.alg && r.generation > b.generation && r.activate_at <= now);
            if dropped || replaced {
                done.push((b.kid.clone(), b.alg.clone()));
            }
        }
        for (kid, alg) in done {
            // With its audit event, which a revocation of the key after it
            // is gone looks for (`revoke_dropped`): its `key_created`
            // event may be older than the trail keeps (`audit.retain`).
            let mut recorded = removed(&kid, &alg);
            on_pool!(self.db.write(), p => {
                let mut tx = p.begin_with(self.db.begin_write()).await?;
                let deleted = sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(&kid).execute(&mut *tx).await?.rows_affected();
                if deleted == 1 {
                    record_in!(tx, recorded, &());
                }
                tx.commit().await
            })?;
            tracing::info!(%kid, "retired signing key removed");
        }
        Ok(())
    }

    fn reload(
        &self,
        rows: Vec<KeyRow>,
        opened: &HashMap<String, Arc<SigningKey>>,
        now: i64,
    ) -> Result<(), Error> {
        let keep_after = self.keep_after();
        let mut keys = Vec::with_capacity(rows.len());
        let mut public = Vec::with_capacity(rows.len());
        let mut removed: Vec<String> = successions(&rows)
            .filter(|(_, next)| retired_long_enough(next, keep_after, now))
            .map(|(old, _)| old.kid.clone())
            .collect();
        removed.extend(orphans_done(&rows, &self.policy, keep_after, now));
        for row in &rows {
            // Skip what `expire` removed (or would have, had it raced).
            if removed.contains(&row.kid) {
                continue;
            }
            // Not opened: a row that does not open (`open_all`).
            let Some(signing) = opened.get(&row.kid).map(Arc::clone) else {
                continue;
            };
            // The published key is derived from the sealed private key,
            // never taken from the row as stored: someone who can write
            // to the database but has no master key cannot publish a key
            // of their own under a real kid.
            let derived = signing.verifying_key()?.to_public_jwk()?;
            if derived.to_json() != row.public_jwk {
                tracing::error!(
                    kid = %row.kid,
                    "the stored public key does not match its sealed private key (the row was \
                     changed?): publishing the one derived from the private key"
                );
            }
            public.push(derived);
            keys.push(LoadedKey {
                info: KeyInfo {
                    kid: row.kid.clone(),
                    generation: row.generation,
                    alg: row.alg.clone(),
                    created_at: row.created_at,
                    activate_at: row.activate_at,
                },
                signing,
            });
        }
        let set = JwkSet::new(public);
        let verify = Arc::new(KeySet::from_jwks(&set)?);
        let ring = Arc::new(Ring {
            keys,
            jwks: Arc::from(set.to_json()),
            verify,
        });
        match self.ring.write() {
            Ok(mut slot) => *slot = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }

    /// Raise the longest access-token lifetime known to the longest any
    /// instance has recorded.
    async fn learn_longest_ttl(&self) -> Result<(), Error> {
        if let Some(stored) = crate::store::revocation::longest_access_ttl(&self.db).await? {
            self.longest_ttl
                .fetch_max(stored, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(())
    }

    /// How long a verifier may keep a key set it fetched (seconds): the
    /// JWKS's `max-age`, or `announce` if longer (a verifier that keeps a
    /// set as long as a key is announced still sees each key before it
    /// signs; one configured to keep it that long is taken at its word).
    fn guards_hold_key_sets(&self) -> i64 {
        secs(self.policy.jwks_max_age.max(self.policy.announce))
    }

    /// How long after its successor signs a key is kept: the longest
    /// access-token lifetime known, the longest a verifier may accept a
    /// token past its `exp`, and a minute more for a verifier whose clock
    /// is behind.
    fn keep_after(&self) -> i64 {
        self.longest_ttl
            .load(std::sync::atomic::Ordering::Acquire)
            .saturating_add(LEEWAY_PAST_EXPIRY)
            .saturating_add(SKEW)
    }

    fn open(&self, row: &KeyRow) -> Result<SigningKey, Error> {
        let alg: Algorithm = row.alg.parse().map_err(|_| {
            Error::Database(format!("key {}: unknown algorithm {}", row.kid, row.alg))
        })?;
        let der = self.master.open(&row.kid, &row.sealed_key)?;
        Ok(SigningKey::from_der(alg, PemKind::PrivateKey, &der)?.with_kid(row.kid.clone()))
    }
}

/// [`Keys::signer_for`] in `ring`.
fn signer_in(ring: &Ring, alg: Algorithm, at: i64) -> Result<Arc<SigningKey>, Error> {
    let of_alg = || ring.keys.iter().filter(|k| k.signing.algorithm() == alg);
    of_alg()
        .rev()
        .find(|k| k.info.activate_at <= at)
        // No key active yet at `at`: this instance's clock is behind the
        // one that stored the first key "now". The oldest key is already
        // published, so its tokens verify; signing with it beats refusing
        // every token for the seconds of skew.
        .or_else(|| of_alg().next())
        .map(|k| Arc::clone(&k.signing))
        .ok_or_else(|| Error::NotFound {
            kind: "key",
            name: format!("{alg} signing key"),
        })
}

/// Set `policy.kept_for_clients` to the ID-token algorithms clients
/// registered that `policy` leaves out; the algorithms so kept. Dropped
/// for real, such an algorithm's keys would be removed once their tokens
/// expired, and from then on those clients' code exchanges and
/// back-channel logouts would fail (sessions at the relying parties
/// never ended). A server start and `tessera keys list` both apply it.
pub async fn keep_algorithms_clients_use(
    db: &Db,
    policy: &mut KeyPolicy,
) -> Result<Vec<(Algorithm, i64)>, Error> {
    let mut kept = Vec::new();
    for (name, clients) in crate::store::clients::id_token_algorithms_in_use(db).await? {
        let Ok(alg) = name.parse::<Algorithm>() else {
            tracing::error!(
                alg = name,
                clients,
                "clients are registered for an ID-token algorithm this version does not know"
            );
            continue;
        };
        if !policy.id_token_algorithms.contains(&alg) && !policy.kept_for_clients.contains(&alg) {
            policy.kept_for_clients.push(alg);
            kept.push((alg, clients));
        }
    }
    Ok(kept)
}

/// The stored keys with their state at `at` under `policy`, as a server
/// with that configuration lists them ([`Keys::list`]; the algorithms
/// clients use kept, as a start keeps them), read from the database
/// alone: nothing is opened (no master key needed), made, rotated or
/// deleted. `tessera keys list` uses this.
pub async fn stored(
    db: &Db,
    policy: &KeyPolicy,
    at: i64,
) -> Result<Vec<(KeyInfo, KeyState)>, Error> {
    stored_except(db, policy, at, &HashSet::new()).await
}

/// [`stored`], the keys `unreadable` (ids of keys that do not open)
/// listed as [`KeyState::Unreadable`] and left out of the others' states:
/// the key that signs is the newest one that opens.
async fn stored_except(
    db: &Db,
    policy: &KeyPolicy,
    at: i64,
    unreadable: &HashSet<String>,
) -> Result<Vec<(KeyInfo, KeyState)>, Error> {
    let mut policy = policy.clone();
    keep_algorithms_clients_use(db, &mut policy).await?;
    let policy = &policy;
    let infos = on_pool!(db.read(), p => sqlx::query_as::<_, KeyInfo>(
        "SELECT kid, generation, alg, created_at, activate_at FROM signing_keys ORDER BY generation"
    ).fetch_all(p).await)?;
    let (broken, opening): (Vec<KeyInfo>, Vec<KeyInfo>) =
        infos.into_iter().partition(|k| unreadable.contains(&k.kid));
    let mut listed = states_under(opening, policy, at);
    listed.extend(broken.into_iter().map(|k| (k, KeyState::Unreadable)));
    listed.sort_by_key(|(k, _)| k.generation);
    Ok(listed)
}

/// Each key (oldest first) with its state at `at` under `policy`: as
/// [`with_states`], but the keys of algorithms no longer configured are
/// retired, except the one that still signs access tokens until the
/// configured algorithm's first key does (the rule of
/// `Keys::standing_in`, which minting applies to the loaded keys: change
/// both together).
fn states_under(infos: Vec<KeyInfo>, policy: &KeyPolicy, at: i64) -> Vec<(KeyInfo, KeyState)> {
    let configured = policy.algorithms();
    let is_configured = |info: &KeyInfo| {
        info.alg
            .parse::<Algorithm>()
            .is_ok_and(|alg| configured.contains(&alg))
    };
    // The access-token algorithm has no key signing yet: the newest key
    // of a dropped algorithm that signs stands in.
    let access_alg = policy.algorithm.to_string();
    let standing_in = if infos
        .iter()
        .any(|k| k.alg == access_alg && k.activate_at <= at)
    {
        None
    } else {
        infos
            .iter()
            .rev()
            .filter(|k| k.activate_at <= at)
            .find(|k| !is_configured(k))
            .map(|k| k.kid.clone())
    };
    with_states(infos.iter().cloned(), at)
        .into_iter()
        .map(|(info, state)| {
            let state = if is_configured(&info) || standing_in.as_deref() == Some(info.kid.as_str())
            {
                state
            } else {
                KeyState::Retired
            };
            (info, state)
        })
        .collect()
}

/// Each key (oldest first) with its state at `at`: per algorithm, the
/// newest whose activation has passed signs, older ones are retired,
/// newer ones announced.
fn with_states(infos: impl Iterator<Item = KeyInfo>, at: i64) -> Vec<(KeyInfo, KeyState)> {
    let infos: Vec<KeyInfo> = infos.collect();
    let active = |alg: &str| {
        infos
            .iter()
            .rev()
            .find(|k| k.alg == alg && k.activate_at <= at)
            .map(|k| k.generation)
    };
    infos
        .iter()
        .map(|info| {
            let state = match active(&info.alg) {
                Some(g) if info.generation == g => KeyState::Active,
                Some(g) if info.generation < g => KeyState::Retired,
                _ => KeyState::Announced,
            };
            (info.clone(), state)
        })
        .collect()
}

/// The refusal of a rotation by hand of `alg`, whose keys `waiting` (their
/// activation times) are announced and do not sign yet at `now`, when
/// they are [`MAX_ANNOUNCED`] already.
fn announced_in_full(alg: Algorithm, waiting: &[i64], now: i64) -> Option<Error> {
    let next = waiting.iter().copied().min()?;
    (waiting.len() >= MAX_ANNOUNCED).then(|| {
        Error::Invalid(format!(
            "{alg} already has {} keys announced that do not sign yet (the next from {next}, in \
             {} s): rotate again once one signs; a key that leaked is revoked (tessera keys \
             revoke KID), not rotated away from",
            waiting.len(),
            next.saturating_sub(now)
        ))
    })
}

/// `rows` but those `skipped` (keys that do not open), and the highest
/// generation stored, of them all (0: none is).
fn usable(mut rows: Vec<KeyRow>, skipped: &HashSet<String>) -> (Vec<KeyRow>, i64) {
    let seen = rows.iter().map(|r| r.generation).max().unwrap_or(0);
    rows.retain(|r| !skipped.contains(&r.kid));
    (rows, seen)
}

/// Each key with the next key of its algorithm (rows oldest first).
fn successions(rows: &[KeyRow]) -> impl Iterator<Item = (&KeyRow, &KeyRow)> {
    rows.iter().enumerate().filter_map(move |(i, old)| {
        rows[i + 1..]
            .iter()
            .find(|next| next.alg == old.alg)
            .map(|next| (old, next))
    })
}

/// The last keys of algorithms `policy` no longer names whose tokens have
/// all expired: each stopped signing when maintenance found it retired,
/// or, if later, when the access-token algorithm's first key to sign
/// after that did (while none of it signed, the retired key stood in),
/// and `keep_after` has passed since. The algorithms of a key are a
/// configuration's: an instance under another one (a rolling deploy that
/// changes them) counts others' keys as retired, so such a deploy must
/// end within `max_access_ttl`.
fn orphans_done(rows: &[KeyRow], policy: &KeyPolicy, keep_after: i64, now: i64) -> Vec<String> {
    let configured: Vec<&'static str> = policy.algorithms().iter().map(|a| a.as_str()).collect();
    let access = policy.algorithm.as_str();
    let first_signing = rows
        .iter()
        .filter(|r| r.alg == access && r.activate_at <= now)
        .map(|r| r.activate_at)
        .min();
    rows.iter()
        .enumerate()
        .filter(|(i, old)| {
            let last_of_its_algorithm = !rows[i + 1..].iter().any(|r| r.alg == old.alg);
            let (Some(retired), Some(signing)) = (old.retired_at, first_signing) else {
                return false;
            };
            last_of_its_algorithm
                && !configured.contains(&old.alg.as_str())
                && retired.max(signing).saturating_add(keep_after) < now
        })
        .map(|(_, old)| old.kid.clone())
        .collect()
}

/// Whether `master` is the master key the database is tied to (it opens
/// the check row a start wrote); `None` when no start tied it to one yet.
pub async fn opened_by(db: &Db, master: &MasterKey) -> Result<Option<bool>, Error> {
    let stored: Option<(Vec<u8>,)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT sealed FROM master_key_check WHERE id = 1"
    ).fetch_optional(p).await)?;
    Ok(stored.map(|(sealed,)| opens_master_check(master, &sealed)))
}

/// Whether `sealed` is the master key check sealed under `master`.
fn opens_master_check(master: &MasterKey, sealed: &[u8]) -> bool {
    master
        .open(MASTER_CHECK, sealed)
        .is_ok_and(|text| text.as_slice() == MASTER_CHECK.as_bytes())
}

/// Whether a start has tied the database to a master key (its check row
/// is there), even if no key was stored after it.
pub async fn tied_to_a_master_key(db: &Db) -> Result<bool, Error> {
    let (rows,): (i64,) = on_pool!(db.read(), p => sqlx::query_as("SELECT COUNT(*) FROM master_key_check")
        .fetch_one(p).await)?;
    Ok(rows > 0)
}

/// How many signing keys the database holds (sealed under a master key).
pub async fn stored_count(db: &Db) -> Result<i64, Error> {
    let (n,): (i64,) = on_pool!(db.read(), p => sqlx::query_as("SELECT COUNT(*) FROM signing_keys")
        .fetch_one(p).await)?;
    Ok(n)
}

/// Whether the key before `next` has been replaced for longer than any of
/// its tokens can live (`keep_after`): time to stop publishing it.
fn retired_long_enough(next: &KeyRow, keep_after: i64, now: i64) -> bool {
    next.activate_at.saturating_add(keep_after) < now
}

/// The audit event of key `kid` of `alg` dropped by the maintenance:
/// written in the transaction that deletes it. The revocation of a key no
/// longer stored finds the key by it, or by its [`created`] event.
fn removed(kid: &str, alg: &str) -> InChange<'static> {
    let event =
        crate::store::audit::Event::new("key_removed").detail(format!("kid={kid} alg={alg}"));
    InChange::of(move |_: &()| event)
}

/// The audit event of key `kid` of `alg` stored, signing from
/// `activate_at`: written in the transaction that stores it.
fn created(kid: &str, alg: Algorithm, activate_at: i64) -> InChange<'static> {
    let event = crate::store::audit::Event::new("key_created")
        .detail(format!("kid={kid} alg={alg} activate_at={activate_at}"));
    InChange::of(move |_: &()| event)
}
