//! The key settings the server last started with, kept for the admin
//! commands: `tessera keys rotate`, `revoke` and `list` act on the
//! server's keys, and `client add` registers a client (its ID-token
//! algorithm, its token lifetime), by what the server does, whatever
//! configuration the command was run with (a shell without the server's
//! would rotate with the default `announce`, or list the server's keys as
//! retired).

use std::time::Duration;

use tessera_jose::Algorithm;

use crate::db::{on_pool, Db};
use crate::store::secs;
use crate::Error;

/// The key settings of a server, as recorded at its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySettings {
    /// `keys.algorithm`: of access tokens.
    pub algorithm: Algorithm,
    /// `keys.id_token_algorithms`.
    pub id_token_algorithms: Vec<Algorithm>,
    /// `keys.announce`: how long a new key is published before it signs.
    pub announce: Duration,
    /// `keys.jwks_max_age`: how long verifiers may cache the key set.
    pub jwks_max_age: Duration,
    /// `tokens.max_access_ttl`: the longest access-token lifetime (how
    /// long a replaced key stays published, and the most a client may be
    /// given).
    pub max_access_ttl: Duration,
}

/// Record that the server starts with `settings`; when its access-token
/// algorithm changes, the one it replaces is kept
/// ([`previous_access_algorithm`]).
pub async fn record(db: &Db, settings: &KeySettings) -> Result<(), Error> {
    let id_token_algorithms = settings
        .id_token_algorithms
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO server_key_settings \
         (id, algorithm, id_token_algorithms, announce_secs, jwks_max_age_secs, max_access_ttl_secs) \
         VALUES (1, $1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET previous_algorithm = CASE \
         WHEN server_key_settings.algorithm <> excluded.algorithm THEN server_key_settings.algorithm \
         ELSE server_key_settings.previous_algorithm END, \
         algorithm = excluded.algorithm, \
         id_token_algorithms = excluded.id_token_algorithms, \
         announce_secs = excluded.announce_secs, jwks_max_age_secs = excluded.jwks_max_age_secs, \
         max_access_ttl_secs = excluded.max_access_ttl_secs"
    )
    .bind(settings.algorithm.as_str())
    .bind(id_token_algorithms)
    .bind(secs(settings.announce))
    .bind(secs(settings.jwks_max_age))
    .bind(secs(settings.max_access_ttl))
    .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The access-token algorithm before `configured`, the one a server
/// about to start with `configured` signs access tokens with: the one it
/// last started with when that was another, else the one that one
/// replaced (a restart after the change). `None` when there was none, or
/// this version does not know it.
pub async fn previous_access_algorithm(
    db: &Db,
    configured: Algorithm,
) -> Result<Option<Algorithm>, Error> {
    let stored: Option<(String, Option<String>)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT algorithm, previous_algorithm FROM server_key_settings WHERE id = 1"
    ).fetch_optional(p).await)?;
    let Some((last, before_last)) = stored else {
        return Ok(None);
    };
    let previous = if last == configured.as_str() {
        before_last
    } else {
        Some(last)
    };
    Ok(previous
        .and_then(|alg| alg.parse::<Algorithm>().ok())
        .filter(|alg| *alg != configured))
}

/// The key settings the server last started with, if it has started
/// since they were first recorded, and their access-token algorithm is
/// one this version knows (an ID-token algorithm it does not know is left
/// out, with a warning).
pub async fn recorded(db: &Db) -> Result<Option<KeySettings>, Error> {
    let stored: Option<(String, String, i64, i64, i64)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT algorithm, id_token_algorithms, announce_secs, jwks_max_age_secs, \
         max_access_ttl_secs FROM server_key_settings WHERE id = 1"
    ).fetch_optional(p).await)?;
    let Some((algorithm, id_token_algorithms, announce, jwks_max_age, max_access_ttl)) = stored
    else {
        return Ok(None);
    };
    let known = |name: &str| {
        let alg = name.parse::<Algorithm>().ok();
        if alg.is_none() {
            tracing::warn!(
                alg = name,
                "the server started with a key algorithm this version does not know"
            );
        }
        alg
    };
    let Some(algorithm) = known(&algorithm) else {
        return Ok(None);
    };
    let seconds = |s: i64| Duration::from_secs(u64::try_from(s).unwrap_or(0));
    Ok(Some(KeySettings {
        algorithm,
        id_token_algorithms: id_token_algorithms
            .split(' ')
            .filter(|a| !a.is_empty())
            .filter_map(known)
            .collect(),
        announce: seconds(announce),
        jwks_max_age: seconds(jwks_max_age),
        max_access_ttl: seconds(max_access_ttl),
    }))
}
