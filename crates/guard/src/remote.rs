//! Keys from a JWKS URL or from the issuer's metadata, cached.
//!
//! The cache follows PyJWT's `PyJWKClient` and panva/jose's
//! `createRemoteJWKSet`:
//! - keys are kept for the `Cache-Control: max-age` of the response,
//!   clamped to `[min_age, max_age]` (`default_age` without one);
//! - a token with an unknown `kid` triggers a refetch; no two fetches are
//!   closer than `cooldown`, so a flood of forged kids (or a failing
//!   server) cannot make us hammer the server;
//! - one fetch runs at a time: requests that need keys meanwhile wait for
//!   it instead of starting their own;
//! - when a fetch fails, the last good keys keep serving;
//! - every fetch is bounded in time and size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tessera_jose::{JwkSet, KeySet};

/// Where the keys come from.
#[derive(Clone, Debug)]
enum Source {
    Url(String),
    /// The issuer's RFC 8414 metadata names the JWKS URL.
    Issuer(String),
}

/// A remote JWK set, fetched and cached; see the module docs.
#[derive(Debug)]
pub struct RemoteJwks {
    source: Source,
    client: reqwest::Client,
    min_age: Duration,
    max_age: Duration,
    default_age: Duration,
    cooldown: Duration,
    max_bytes: usize,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    fresh_until: Option<Instant>,
    last_attempt: Option<Instant>,
    jwks_uri: Option<String>,
}

/// Why no keys could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

impl RemoteJwks {
    /// Keys from `url` (a JWK set document).
    pub fn url(url: impl Into<String>) -> Result<RemoteJwks, FetchError> {
        RemoteJwks::new(Source::Url(url.into()))
    }

    /// Keys from the `jwks_uri` of `issuer`'s metadata
    /// (`/.well-known/oauth-authorization-server`, RFC 8414), whose
    /// `issuer` must be `issuer` itself.
    pub fn discover(issuer: impl Into<String>) -> Result<RemoteJwks, FetchError> {
        RemoteJwks::new(Source::Issuer(
            issuer.into().trim_end_matches('/').to_owned(),
        ))
    }

    fn new(source: Source) -> Result<RemoteJwks, FetchError> {
        Ok(RemoteJwks {
            source,
            client: client(Duration::from_secs(5))?,
            min_age: Duration::from_secs(30),
            max_age: Duration::from_secs(24 * 3600),
            default_age: Duration::from_secs(600),
            cooldown: Duration::from_secs(30),
            max_bytes: 512 * 1024,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        })
    }

    /// Bounds on how long keys are kept: `Cache-Control: max-age` is
    /// clamped to `[min, max]` (default 30 s to a day).
    #[must_use]
    pub fn cache_bounds(mut self, min: Duration, max: Duration) -> RemoteJwks {
        self.min_age = min;
        self.max_age = max.max(min);
        self
    }

    /// How long keys are kept when the response says nothing (10 min).
    #[must_use]
    pub fn default_age(mut self, age: Duration) -> RemoteJwks {
        self.default_age = age;
        self
    }

    /// The least time between two fetches (30 s): within it the keys are
    /// used as they are, even stale or missing a `kid`, so neither forged
    /// kids nor a failing server make us fetch in a loop.
    #[must_use]
    pub fn cooldown(mut self, cooldown: Duration) -> RemoteJwks {
        self.cooldown = cooldown;
        self
    }

    /// The longest a fetch may take (5 s) and the largest document
    /// accepted (512 KiB).
    pub fn limits(mut self, timeout: Duration, max_bytes: usize) -> Result<RemoteJwks, FetchError> {
        self.client = client(timeout)?;
        self.max_bytes = max_bytes;
        Ok(self)
    }

    /// How many fetches were started (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys to verify a token whose header names `kid`.
    pub(crate) async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, FetchError> {
        let seen = self.fetches();
        if let Some(keys) = self.cached(kid, Instant::now()) {
            return Ok(keys);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if self.fetches() != seen {
            // Another request fetched while this one waited: use that.
            let latest = self.read().keys.clone();
            if let Some(keys) = latest {
                return Ok(keys);
            }
        }
        let started = Instant::now();
        if let Some(keys) = self.cached(kid, started) {
            return Ok(keys);
        }
        if self.cooling(started) {
            // The last attempt failed and left no keys: wait out the
            // cooldown rather than retry a failing server on every request.
            return Err(FetchError(
                "no keys: the last fetch failed; retrying after the cooldown".into(),
            ));
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = self.fetch().await;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.last_attempt = Some(started);
        match fetched {
            Ok((keys, age)) => {
                let keys = Arc::new(keys);
                state.keys = Some(Arc::clone(&keys));
                state.fresh_until = Some(started + age);
                Ok(keys)
            }
            // The last good keys keep serving.
            Err(e) => state.keys.clone().ok_or(e),
        }
    }

    /// The cached keys when they can answer for `kid` without a fetch:
    /// fresh and knowing the kid, or a fetch happened within the cooldown.
    fn cached(&self, kid: Option<&str>, now: Instant) -> Option<Arc<KeySet>> {
        let state = self.read();
        let keys = state.keys.as_ref()?;
        let fresh = state.fresh_until.is_some_and(|t| now < t);
        let known = kid.is_none_or(|kid| keys.keys().iter().any(|k| k.kid() == Some(kid)));
        let cooling = state
            .last_attempt
            .is_some_and(|t| now.duration_since(t) < self.cooldown);
        ((fresh && known) || cooling).then(|| Arc::clone(keys))
    }

    /// Whether a fetch was attempted within the cooldown.
    fn cooling(&self, now: Instant) -> bool {
        self.read()
            .last_attempt
            .is_some_and(|t| now.duration_since(t) < self.cooldown)
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), FetchError> {
        let url = match &self.source {
            Source::Url(url) => url.clone(),
            Source::Issuer(issuer) => match self.known_jwks_uri() {
                Some(url) => url,
                None => {
                    let url = self.discover_jwks_uri(issuer).await?;
                    self.state
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .jwks_uri = Some(url.clone());
                    url
                }
            },
        };
        let (body, age) = self.get(&url).await?;
        let set = JwkSet::from_json(&body).map_err(|e| FetchError(format!("{url}: {e}")))?;
        let keys = KeySet::from_jwks(&set).map_err(|e| FetchError(format!("{url}: {e}")))?;
        Ok((keys, age))
    }

    fn known_jwks_uri(&self) -> Option<String> {
        self.read().jwks_uri.clone()
    }

    async fn discover_jwks_uri(&self, issuer: &str) -> Result<String, FetchError> {
        let url = format!("{issuer}/.well-known/oauth-authorization-server");
        let (body, _) = self.get(&url).await?;
        let metadata: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| FetchError(format!("{url}: {e}")))?;
        // RFC 8414 §3.3: the metadata must be the issuer's own.
        if metadata.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err(FetchError(format!("{url}: issuer does not match {issuer}")));
        }
        metadata
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| FetchError(format!("{url}: no jwks_uri")))
    }

    /// GET `url`: 200, at most `max_bytes`, with the max-age to keep it.
    async fn get(&self, url: &str) -> Result<(String, Duration), FetchError> {
        let fail = |e: &dyn std::fmt::Display| FetchError(format!("{url}: {e}"));
        let mut response = self.client.get(url).send().await.map_err(|e| fail(&e))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(fail(&response.status()));
        }
        let age = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(self.default_age)
            .clamp(self.min_age, self.max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(&e))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(fail(&format!("larger than {} bytes", self.max_bytes)));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|e| fail(&e))?;
        Ok((text, age))
    }
}

/// `max-age` of a `Cache-Control` value (`no-store`/`no-cache`: zero,
/// which the lower bound then raises).
fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            age = secs.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    age
}

/// An HTTP client on rustls with the aws-lc-rs provider (the crypto
/// library of the rest of Tessera) and the webpki roots.
fn client(timeout: Duration) -> Result<reqwest::Client, FetchError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| FetchError(format!("HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::max_age;
    use std::time::Duration;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
