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
//!   `max_access_ttl` (plus a minute of clock skew) after its successor
//!   took over.
//!
//! Two instances that decide to rotate at once both try to insert the next
//! `generation`; the unique constraint lets exactly one win.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, Jwk, JwkSet, KeySet, PemKind, SigningKey};

use crate::db::{on_pool, Db};
use crate::secret::MasterKey;
use crate::store::{now, secs};
use crate::Error;

/// Clock skew allowed between instances and resource servers.
const SKEW: i64 = 60;

/// How keys are made and rotated.
#[derive(Clone, Debug)]
pub struct KeyPolicy {
    /// The algorithm of new keys.
    pub algorithm: Algorithm,
    /// Start a rotation when the signing key is this old (`None`: never
    /// rotate automatically).
    pub rotate_every: Option<Duration>,
    /// How long a new key is published before it signs.
    pub announce: Duration,
    /// The longest access-token lifetime any client can have: how long a
    /// replaced key stays published.
    pub max_access_ttl: Duration,
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
}

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
            policy,
            ring: RwLock::new(Arc::new(empty)),
        };
        keys.maintain().await?;
        Ok(keys)
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

    /// The key that signs at `at`: the newest whose activation has passed.
    pub fn signer(&self, at: i64) -> Result<Arc<SigningKey>, Error> {
        let ring = self.snapshot();
        ring.keys
            .iter()
            .rev()
            .find(|k| k.info.activate_at <= at)
            // No key active yet at `at`: this instance's clock is behind
            // the one that stored the first key "now". The oldest key is
            // already published, so its tokens verify; signing with it
            // beats refusing every token for the seconds of skew.
            .or_else(|| ring.keys.first())
            .map(|k| Arc::clone(&k.signing))
            .ok_or_else(|| Error::NotFound {
                kind: "key",
                name: "signing key".into(),
            })
    }

    /// Sign an access token (RFC 9068: `typ: at+jwt`, `kid`).
    pub fn sign<T: Serialize>(&self, claims: &Claims<T>, at: i64) -> Result<String, Error> {
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

    /// The published keys with their state at `at`.
    pub fn list(&self, at: i64) -> Vec<(KeyInfo, KeyState)> {
        with_states(self.snapshot().keys.iter().map(|k| k.info.clone()), at)
    }

    /// Store a new key that signs from `now + announce` (a rotation started
    /// by hand). Returns its id.
    pub async fn rotate(&self) -> Result<String, Error> {
        let now = now();
        let activate_at = now.saturating_add(secs(self.policy.announce));
        // Another instance inserting the same generation at the same moment
        // makes this attempt a no-op; the next one takes the generation after.
        let mut kid = None;
        for _ in 0..5 {
            kid = self.insert_next(now, activate_at).await?;
            if kid.is_some() {
                break;
            }
        }
        let kid = kid.ok_or_else(|| {
            Error::Database("could not store a new key: other instances kept winning".into())
        })?;
        self.maintain().await?;
        Ok(kid)
    }

    /// Bring the stored keys up to date with the policy and reload the
    /// cache: create the first key, start a due rotation, drop keys whose
    /// tokens have all expired. Run at start and then periodically.
    ///
    /// Nothing is written before the master key has opened every stored
    /// key: a start with the wrong master key fails here, and never stores
    /// a key sealed under a master key that cannot open the others.
    pub async fn maintain(&self) -> Result<(), Error> {
        let now = now();
        let mut rows = self.fetch().await?;
        let mut opened = self.open_all(&rows)?;
        let active = rows.iter().rev().find(|r| r.activate_at <= now);
        let pending = rows.iter().any(|r| r.activate_at > now);
        let due = match (active, self.policy.rotate_every) {
            (None, _) => Some(now),
            (Some(a), Some(every)) if !pending => {
                let next = a.activate_at.saturating_add(secs(every));
                (next.saturating_sub(secs(self.policy.announce)) <= now)
                    .then(|| next.max(now.saturating_add(secs(self.policy.announce))))
            }
            _ => None,
        };
        if let Some(activate_at) = due {
            if self.insert_next(now, activate_at).await?.is_some() {
                tracing::info!(activate_at, "new signing key stored");
            }
            rows = self.fetch().await?;
            opened = self.open_all(&rows)?;
        }
        self.expire(&rows, now).await?;
        self.reload(rows, &opened, now)
    }

    /// Open every stored key (those already cached are not opened again);
    /// fails with [`Error::MasterKey`] when one does not open.
    fn open_all(&self, rows: &[KeyRow]) -> Result<HashMap<String, Arc<SigningKey>>, Error> {
        let previous = self.snapshot();
        rows.iter()
            .map(|row| {
                let cached = previous.keys.iter().find(|k| k.info.kid == row.kid);
                let key = match cached {
                    Some(k) => Arc::clone(&k.signing),
                    None => Arc::new(self.open(row)?),
                };
                Ok((row.kid.clone(), key))
            })
            .collect()
    }

    async fn fetch(&self) -> Result<Vec<KeyRow>, Error> {
        let rows = on_pool!(self.db.read(), p => sqlx::query_as::<_, KeyRow>(
            "SELECT kid, generation, alg, sealed_key, public_jwk, created_at, activate_at \
             FROM signing_keys ORDER BY generation"
        ).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Insert the next generation; `None` when another instance got there
    /// first (the caller re-reads).
    async fn insert_next(&self, now: i64, activate_at: i64) -> Result<Option<String>, Error> {
        let alg = self.policy.algorithm;
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(alg))
            .await
            .map_err(|e| Error::Invalid(format!("key generation task: {e}")))??
            .with_thumbprint_kid()?;
        let kid = key.kid().unwrap_or_default().to_owned();
        let sealed = self.master.seal(&kid, key.to_pkcs8_der()?.expose())?;
        let public = key.verifying_key()?.to_public_jwk()?.to_json();
        let inserted = on_pool!(self.db.write(), p => sqlx::query(
            "INSERT INTO signing_keys (kid, generation, alg, sealed_key, public_jwk, created_at, activate_at) \
             SELECT $1, COALESCE(MAX(generation), 0) + 1, $2, $3, $4, $5, $6 FROM signing_keys \
             WHERE TRUE ON CONFLICT DO NOTHING"
        )
        .bind(&kid).bind(alg.as_str()).bind(sealed).bind(public).bind(now).bind(activate_at)
        .execute(p).await.map(|r| r.rows_affected()))?;
        let won = inserted == 1;
        if won {
            crate::store::audit::record(
                &self.db,
                crate::store::audit::Event::new("key_created")
                    .detail(format!("kid={kid} alg={alg} activate_at={activate_at}")),
            )
            .await?;
        }
        Ok(won.then_some(kid))
    }

    /// Delete keys whose successor has signed for longer than any token
    /// lives.
    async fn expire(&self, rows: &[KeyRow], now: i64) -> Result<(), Error> {
        let keep_after = secs(self.policy.max_access_ttl).saturating_add(SKEW);
        for pair in rows.windows(2) {
            let (old, next) = (&pair[0], &pair[1]);
            if next.activate_at <= now && retired_long_enough(next, keep_after, now) {
                on_pool!(self.db.write(), p => sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(&old.kid).execute(p).await.map(|r| r.rows_affected()))?;
                tracing::info!(kid = %old.kid, "retired signing key removed");
            }
        }
        Ok(())
    }

    fn reload(
        &self,
        rows: Vec<KeyRow>,
        opened: &HashMap<String, Arc<SigningKey>>,
        now: i64,
    ) -> Result<(), Error> {
        let keep_after = secs(self.policy.max_access_ttl).saturating_add(SKEW);
        let mut keys = Vec::with_capacity(rows.len());
        let mut public = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            // Skip what `expire` removed (or would have, had it raced).
            if let Some(next) = rows.get(i + 1) {
                if retired_long_enough(next, keep_after, now) {
                    continue;
                }
            }
            let signing = match opened.get(&row.kid) {
                Some(key) => Arc::clone(key),
                None => Arc::new(self.open(row)?),
            };
            public.push(Jwk::from_json(&row.public_jwk)?);
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

    fn open(&self, row: &KeyRow) -> Result<SigningKey, Error> {
        let alg: Algorithm = row.alg.parse().map_err(|_| {
            Error::Database(format!("key {}: unknown algorithm {}", row.kid, row.alg))
        })?;
        let der = self.master.open(&row.kid, &row.sealed_key)?;
        Ok(SigningKey::from_der(alg, PemKind::PrivateKey, &der)?.with_kid(row.kid.clone()))
    }
}

/// The stored keys with their state at `at`, read from the database
/// alone: nothing is opened (no master key needed), made, rotated or
/// deleted. `tessera keys list` uses this.
pub async fn stored(db: &Db, at: i64) -> Result<Vec<(KeyInfo, KeyState)>, Error> {
    let infos = on_pool!(db.read(), p => sqlx::query_as::<_, KeyInfo>(
        "SELECT kid, generation, alg, created_at, activate_at FROM signing_keys ORDER BY generation"
    ).fetch_all(p).await)?;
    Ok(with_states(infos.into_iter(), at))
}

/// Each key (oldest first) with its state at `at`: the newest whose
/// activation has passed signs, older ones are retired, newer ones
/// announced.
fn with_states(infos: impl Iterator<Item = KeyInfo>, at: i64) -> Vec<(KeyInfo, KeyState)> {
    let infos: Vec<KeyInfo> = infos.collect();
    let active = infos
        .iter()
        .rev()
        .find(|k| k.activate_at <= at)
        .map(|k| k.generation);
    infos
        .into_iter()
        .map(|info| {
            let state = match active {
                Some(g) if info.generation == g => KeyState::Active,
                Some(g) if info.generation < g => KeyState::Retired,
                _ => KeyState::Announced,
            };
            (info, state)
        })
        .collect()
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
