//! Keys from a JWKS URL or from the issuer's metadata, cached.
//!
//! The cache follows PyJWT's `PyJWKClient` and panva/jose's
//! `createRemoteJWKSet`:
//! - keys are kept for the `Cache-Control: max-age` of the response,
//!   clamped to `[min_age, max_age]` (`default_age` without one); the
//!   upper bound is 10 minutes by default, jose's `cacheMaxAge`: a key
//!   the issuer withdraws is trusted that long at most, whatever
//!   `max-age` its key set was served with (Google's run for hours);
//! - a token with an unknown `kid` triggers a refetch; no two fetches are
//!   closer than `cooldown`, so a flood of forged kids (or a failing
//!   server) cannot make us hammer the server;
//! - one fetch runs at a time: requests that need keys meanwhile wait for
//!   it instead of starting their own, except that while stale keys that
//!   know the token's `kid` are there, only the request that refreshes
//!   them waits and the others go on with them (a slow or unreachable
//!   issuer holds up one request per attempt, not all of them);
//! - a fetch runs as a task of its own: a request cancelled while it
//!   waits (its client gone, a timeout layer) neither aborts the fetch nor
//!   escapes the cooldown, so cancelled requests cannot set the pace of
//!   fetches either;
//! - a fetch that brings the same document again keeps the same key set,
//!   so tokens the guard cached stay cached (a new set sends each through
//!   a full verification once);
//! - when a fetch fails, the last good keys keep serving, for at most
//!   `max_stale` (an hour) past their freshness: a key the issuer
//!   withdrew is not accepted for ever by making its JWKS unreachable;
//! - every fetch is bounded in time and size;
//! - a key published with an `issuer` member (Microsoft Entra ID's keys
//!   carry one, `https://login.microsoftonline.com/{tenantid}/v2.0` in
//!   the `common` set) verifies tokens of that issuer only: the guard
//!   refuses a token of another issuer signed by it, as
//!   Microsoft.IdentityModel's signing-key issuer validation does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tessera_jose::{Algorithm, JwkSet, KeySet};

use crate::discovery::{self, FetchError, Http, Transport};

/// The most keys a fetched key set may hold (issuers publish a handful:
/// the signing key, the next, the last; Microsoft Entra ID's common
/// endpoint some ten).
const MAX_KEYS: usize = 100;

/// The longest a fetched key set is kept by default, whatever its
/// `max-age` says.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// The longest keys are kept fresh, whatever `max-age` and the bounds
/// say (ten years: the clock has room for it).
const LONGEST_AGE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Where the keys come from.
#[derive(Clone, Debug)]
enum Source {
    Url(String),
    /// The issuer's metadata (RFC 8414, or OpenID Connect Discovery)
    /// names the JWKS URL.
    Issuer(String),
}

/// A remote JWK set, fetched and cached; see the module docs.
#[derive(Debug)]
pub struct RemoteJwks {
    source: Source,
    transport: Transport,
    timeout: Duration,
    client: Http,
    min_age: Duration,
    max_age: Duration,
    default_age: Duration,
    cooldown: Duration,
    /// How long past their freshness the last good keys keep serving
    /// while refetches fail.
    max_stale: Duration,
    max_bytes: usize,
    /// The algorithms a key published without `alg` is used for.
    without_alg: Vec<Algorithm>,
    state: RwLock<State>,
    /// The turn to fetch, held by the task that fetches.
    fetching: Arc<tokio::sync::Mutex<()>>,
    fetches: AtomicU64,
}

/// Whom a key of a remote set verifies tokens for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyBinding {
    /// Any issuer the guard accepts: the key names none.
    Unbound,
    /// This issuer only (its `issuer` member; "": none can match).
    Bound(String),
    /// Not known any more (see [`RemoteJwks::issuer_of_key`]).
    Unknown,
}

/// A key set as fetched, with the `issuer` member of its keys that have
/// one, by `kid`.
struct Fetched {
    keys: KeySet,
    issuers: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// The `issuer` member of the keys of `keys` that have one, by `kid`.
    key_issuers: HashMap<String, String>,
    /// The document `keys` were read from.
    document: Option<String>,
    fresh_until: Option<Instant>,
    last_attempt: Option<Instant>,
    jwks_uri: Option<String>,
    /// The next fetch reads the issuer's metadata again first, keeping
    /// `jwks_uri` if the metadata cannot be read: the last fetch was for a
    /// `kid` its set lacked (the key set may have moved, its old address
    /// left answering with the old keys).
    look_again: bool,
    /// The keys are unavailable since the last success (logged once per
    /// such streak).
    failing: bool,
}

impl RemoteJwks {
    /// Keys from `url` (a JWK set document).
    pub fn url(url: impl Into<String>) -> Result<RemoteJwks, FetchError> {
        RemoteJwks::new(Source::Url(url.into()))
    }

    /// Keys from the `jwks_uri` of `issuer`'s metadata, whose `issuer`
    /// must be `issuer` itself, exactly (RFC 8414 §3.3: a trailing `/`
    /// counts). The metadata is looked for where RFC 8414 puts it
    /// (`/.well-known/oauth-authorization-server`, inserted before the
    /// issuer's path), then, as its §5 says, where OpenID Connect
    /// Discovery does (`/.well-known/openid-configuration`, appended to the
    /// issuer): issuers such as Auth0 and Microsoft Entra ID publish only
    /// the latter.
    pub fn discover(issuer: impl Into<String>) -> Result<RemoteJwks, FetchError> {
        RemoteJwks::new(Source::Issuer(issuer.into()))
    }

    /// Why these keys could not serve a guard of `issuer`: a URL this
    /// source would refuse to fetch (plain HTTP to another host, another
    /// scheme), or the metadata of another issuer. Checked when the guard
    /// is built: found at the first request, it was a 503 in production.
    pub(crate) fn unfit_for(&self, issuer: &str) -> Option<String> {
        let url = match &self.source {
            Source::Url(url) => url,
            // Exactly: the metadata's issuer must be the one discovered,
            // and the tokens' the guard's (a trailing `/` counts).
            Source::Issuer(discovered) => {
                if discovered.contains("{tenantid}") {
                    return Some(format!(
                        "{discovered:?} names no one issuer whose metadata could be fetched: \
                         give its keys by RemoteJwks::url (Microsoft Entra ID's: \
                         https://login.microsoftonline.com/common/discovery/v2.0/keys)"
                    ));
                }
                if discovered != issuer {
                    return Some(format!(
                        "the keys are discovered from issuer {discovered:?}, the guard's tokens \
                         are of {issuer:?}"
                    ));
                }
                discovered
            }
        };
        self.client.checked(url).err().map(|e| e.to_string())
    }

    fn new(source: Source) -> Result<RemoteJwks, FetchError> {
        let transport = Transport::default();
        let timeout = Duration::from_secs(5);
        Ok(RemoteJwks {
            source,
            client: transport.client(timeout)?,
            transport,
            timeout,
            min_age: Duration::from_secs(30),
            max_age: DEFAULT_MAX_AGE,
            default_age: Duration::from_secs(600),
            cooldown: Duration::from_secs(30),
            max_stale: Duration::from_secs(3600),
            max_bytes: 512 * 1024,
            without_alg: vec![Algorithm::RS256],
            state: RwLock::new(State::default()),
            fetching: Arc::new(tokio::sync::Mutex::new(())),
            fetches: AtomicU64::new(0),
        })
    }

    /// Bounds on how long keys are kept: `Cache-Control: max-age` is
    /// clamped to `[min, max]` (default 30 s to 10 min). The upper bound
    /// is how long a key the issuer withdraws without replacing it (no
    /// new `kid` to send us back) is still trusted.
    #[must_use]
    pub fn cache_bounds(mut self, min: Duration, max: Duration) -> RemoteJwks {
        self.min_age = min;
        self.max_age = max.max(min);
        self
    }

    /// How long keys are kept when the response says nothing (10 min;
    /// within the bounds of [`RemoteJwks::cache_bounds`], so never past
    /// their upper bound).
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

    /// How long past their freshness the last good keys keep serving
    /// while the issuer cannot be reached (an hour); then requests get
    /// `503` until a fetch succeeds.
    #[must_use]
    pub fn max_stale(mut self, max_stale: Duration) -> RemoteJwks {
        self.max_stale = max_stale;
        self
    }

    /// The longest a request may take (5 s), and the largest document
    /// accepted (512 KiB). A fetch that finds the key set through the
    /// issuer's metadata makes two requests in turn (the metadata's two
    /// documents are asked at once), and may take twice that.
    pub fn limits(mut self, timeout: Duration, max_bytes: usize) -> Result<RemoteJwks, FetchError> {
        self.client = self.transport.client(timeout)?;
        self.timeout = timeout;
        self.max_bytes = max_bytes;
        Ok(self)
    }

    /// Also trust the certificate authorities in `pem` (`CERTIFICATE`
    /// blocks), for an issuer whose certificate a private CA signed. The
    /// webpki roots (Mozilla's) stay trusted.
    pub fn root_certificates(mut self, pem: &[u8]) -> Result<RemoteJwks, FetchError> {
        self.transport.add_roots(pem)?;
        self.client = self.transport.client(self.timeout)?;
        Ok(self)
    }

    /// Allow plain HTTP to hosts other than this one. By default the keys
    /// (and the issuer's metadata) are fetched over HTTPS, or plain HTTP
    /// only from a loopback address: keys fetched in the clear can be
    /// replaced on the way by anyone who then signs tokens this guard
    /// accepts. For a private network you trust, such as containers on
    /// one host.
    pub fn allow_plain_http(mut self) -> Result<RemoteJwks, FetchError> {
        self.transport.allow_plain_http();
        self.client = self.transport.client(self.timeout)?;
        Ok(self)
    }

    /// The algorithms a published key without `alg` is used for (default
    /// RS256). RFC 7517 §4.4 makes `alg` optional, and some issuers
    /// (Microsoft Entra ID among them) publish RSA keys without it; an
    /// RSA key fits several algorithms, so the choice is made here, never
    /// by the token. EC and OKP keys need none: their curve fixes it.
    /// Keys of a type none of these algorithms fits are skipped.
    #[must_use]
    pub fn algorithms_for_keys_without_alg(
        mut self,
        algs: impl IntoIterator<Item = Algorithm>,
    ) -> RemoteJwks {
        self.without_alg = algs.into_iter().collect();
        self
    }

    /// Whether the last fetch failed (the keys served are the last good
    /// ones, if any): a `kid` they do not know may be a key the issuer
    /// published since, not a forged one.
    pub fn failing(&self) -> bool {
        self.read().failing
    }

    /// How many fetches were started (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys to verify a token whose header names `kid`: the cached set,
    /// fetched again when it is past its freshness or does not know `kid`
    /// (no sooner than the cooldown after the last fetch). A caller that
    /// refused a token can ask this whether its key is known at all: a
    /// key not known yet is a reason to ask again later, not a bad token.
    pub async fn keys_for(self: &Arc<Self>, kid: Option<&str>) -> Result<Arc<KeySet>, FetchError> {
        let seen = self.fetches();
        let now = Instant::now();
        if let Some(keys) = self.cached(kid, now) {
            return Ok(keys);
        }
        // Stale keys that know the kid: whoever takes the fetch refreshes
        // them; the others go on with them meanwhile.
        let turn = match (
            self.stale_knowing(kid, now),
            Arc::clone(&self.fetching).try_lock_owned(),
        ) {
            (_, Ok(turn)) => turn,
            (Some(stale), Err(_)) => return Ok(stale),
            (None, Err(_)) => Arc::clone(&self.fetching).lock_owned().await,
        };
        if self.fetches() != seen {
            // Another request fetched while this one waited: use that.
            let latest = self.usable(Instant::now());
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
        // The task holds the turn until it has stored what it found.
        let this = Arc::clone(self);
        let wanted = kid.map(str::to_owned);
        tokio::spawn(async move { this.refresh(started, wanted.as_deref(), turn).await })
            .await
            .map_err(|e| FetchError(format!("the key fetch failed: {e}")))?
    }

    /// Fetch the keys and store them (or the failure), `started` being
    /// when this attempt began, for the cooldown; `wanted` the `kid` the
    /// fetch is for.
    async fn refresh(
        &self,
        started: Instant,
        wanted: Option<&str>,
        _turn: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<Arc<KeySet>, FetchError> {
        // A request's time each: the metadata's (both documents asked at
        // once) when the key set's URL is to be found, then the key set's.
        let steps = match self.source {
            Source::Issuer(_) if self.known_jwks_uri().is_none() || self.read().look_again => 2,
            _ => 1,
        };
        let budget = self.timeout.saturating_mul(steps);
        let fetched = tokio::time::timeout(budget, self.fetch())
            .await
            .unwrap_or_else(|_| {
                Err(FetchError(format!(
                    "{}: no keys within {budget:?}",
                    self.source_text(),
                )))
            });
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        // The issuer may have moved its key set: the next attempt asks its
        // metadata first when this one failed (also when the time ran out
        // before the fetch could say so itself), or was for a `kid` the
        // set it found does not have at all, usable or not (the old
        // address still answering with the old keys: a CDN's copy, a path
        // left up), keeping the address it has should the metadata not
        // answer: forgotten after one failed fetch, a key set back up
        // behind a metadata still down was never asked again. A made-up
        // `kid` costs the issuer a metadata read per cooldown, no more.
        if matches!(self.source, Source::Issuer(_)) {
            match (&fetched, wanted) {
                (Err(_), _) => state.look_again = true,
                (Ok((Fetched { keys, .. }, _, _)), Some(kid)) => {
                    state.look_again = !keys.keys().iter().any(|k| k.kid() == Some(kid))
                        && !keys.skipped().iter().any(|k| k.kid.as_deref() == Some(kid));
                }
                (Ok(_), None) => state.look_again = false,
            }
        }
        state.last_attempt = Some(started);
        let now = Instant::now();
        let fresh = state.fresh_until.is_some_and(|t| now < t);
        match fetched {
            // A set with nothing to verify with (`{"keys":[]}` from a bad
            // deploy, or only keys this guard cannot use) does not end
            // keys still fresh (a refetch for an unknown `kid`): they
            // serve to their max-age, and it is asked again after the
            // cooldown. Once they are past it, the empty set is the
            // issuer's word, and it stands: an issuer withdraws every key
            // that way, and stale keys must not outlive that.
            Ok((Fetched { keys, .. }, _, _))
                if keys.keys().is_empty() && fresh && state.keys.is_some() =>
            {
                tracing::warn!(
                    source = %self.source_text(),
                    skipped = keys.skipped().len(),
                    "remote key set has no usable key; the fresh keys serve on"
                );
                drop(state);
                self.usable(now)
                    .ok_or_else(|| FetchError(format!("{}: no usable key", self.source_text())))
            }
            Ok((Fetched { keys, issuers }, document, age)) => {
                if state.failing {
                    tracing::info!(source = %self.source_text(), "remote keys available again");
                    state.failing = false;
                }
                let keys = match &state.keys {
                    Some(same) if state.document.as_deref() == Some(document.as_str()) => {
                        Arc::clone(same)
                    }
                    _ => {
                        for skipped in keys.skipped() {
                            tracing::info!(
                                source = %self.source_text(),
                                index = skipped.index,
                                kid = skipped.kid.as_deref().unwrap_or(""),
                                reason = %skipped.reason,
                                "remote key skipped"
                            );
                        }
                        report_unusable(&self.source_text(), &keys);
                        let keys = Arc::new(keys);
                        state.keys = Some(Arc::clone(&keys));
                        state.key_issuers = issuers;
                        state.document = Some(document);
                        keys
                    }
                };
                // A set with no usable key is asked for again as soon as
                // the bounds allow, whatever its max-age: a token without
                // a `kid` never asks sooner, and would be refused until
                // then after the issuer put its keys back.
                let age = if keys.keys().is_empty() {
                    self.min_age
                } else {
                    age
                };
                // No `Instant` is that far off, whatever the bounds allow.
                state.fresh_until = Some(started + age.min(LONGEST_AGE));
                Ok(keys)
            }
            Err(e) => {
                // Said once per streak of failures, not per request.
                if !state.failing {
                    tracing::warn!(
                        source = %self.source_text(),
                        reason = %e,
                        serving_cached_keys = state.keys.is_some(),
                        "remote keys unavailable"
                    );
                    state.failing = true;
                }
                // The last good keys keep serving, up to `max_stale`.
                drop(state);
                self.usable(Instant::now()).ok_or(e)
            }
        }
    }

    /// Whether keys fresh until `fresh_until` may still serve at `now`
    /// (a `max_stale` too large to add means for ever).
    fn within_stale(&self, fresh_until: Instant, now: Instant) -> bool {
        fresh_until
            .checked_add(self.max_stale)
            .is_none_or(|end| now < end)
    }

    /// The last good keys, unless they are past `max_stale`.
    fn usable(&self, now: Instant) -> Option<Arc<KeySet>> {
        let state = self.read();
        let keys = state.keys.as_ref()?;
        let within = state.fresh_until.is_some_and(|t| self.within_stale(t, now));
        within.then(|| Arc::clone(keys))
    }

    /// Stale keys (within `max_stale`) that know `kid`, to go on with
    /// while another request refreshes them.
    fn stale_knowing(&self, kid: Option<&str>, now: Instant) -> Option<Arc<KeySet>> {
        let keys = self.usable(now)?;
        let known = kid.is_none_or(|kid| keys.keys().iter().any(|k| k.kid() == Some(kid)));
        known.then_some(keys)
    }

    /// Where the keys come from, as it may be logged.
    fn source_text(&self) -> std::borrow::Cow<'_, str> {
        match &self.source {
            Source::Url(url) | Source::Issuer(url) => crate::discovery::without_credentials(url),
        }
    }

    /// The cached keys when they can answer for `kid` without a fetch:
    /// fresh and knowing the kid, or a fetch happened within the cooldown.
    fn cached(&self, kid: Option<&str>, now: Instant) -> Option<Arc<KeySet>> {
        let state = self.read();
        let keys = state.keys.as_ref()?;
        let fresh = state.fresh_until.is_some_and(|t| now < t);
        if !state.fresh_until.is_some_and(|t| self.within_stale(t, now)) {
            return None;
        }
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

    /// The keys, the document they were read from, and how long to keep
    /// them.
    async fn fetch(&self) -> Result<(Fetched, String, Duration), FetchError> {
        let url = match &self.source {
            Source::Url(url) => url.clone(),
            Source::Issuer(issuer) => {
                let (known, look_again) = {
                    let state = self.read();
                    (state.jwks_uri.clone(), state.look_again)
                };
                match known {
                    Some(url) if !look_again => url,
                    known => match (self.discover_jwks_uri(issuer).await, known) {
                        (Ok(url), _) => {
                            self.state
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .jwks_uri = Some(url.clone());
                            url
                        }
                        // The metadata did not answer: the address known
                        // still serves.
                        (Err(e), Some(known)) => {
                            tracing::warn!(
                                issuer = %issuer,
                                reason = %e,
                                "issuer metadata unavailable; keys fetched from the address known"
                            );
                            known
                        }
                        (Err(e), None) => return Err(e),
                    },
                }
            }
        };
        let fetched = self.get(&url).await.and_then(|(body, age)| {
            JwkSet::from_json(&body)
                .map(|set| (set, body, age))
                .map_err(|e| FetchError(format!("{url}: {e}")))
        });
        // On failure the next attempt asks the metadata again (`refresh`).
        let (set, body, age) = fetched?;
        // Each key is parsed (a curve point checked, an RSA modulus read)
        // on a runtime thread, and a hostile issuer's half-megabyte set
        // holds thousands; real ones hold a handful.
        if set.keys.len() > MAX_KEYS {
            return Err(FetchError(format!(
                "{url}: {} keys, more than the {MAX_KEYS} a key set may hold here; refused",
                set.keys.len()
            )));
        }
        // A key set anyone can fetch holding a secret key lets anyone sign
        // tokens under it: refused whole.
        set.check_published()
            .map_err(|e| FetchError(format!("{url}: {e}; refused")))?;
        let keys = KeySet::from_jwks_allowing(&set, &self.without_alg)
            .map_err(|e| FetchError(format!("{url}: {e}")))?;
        // By `kid` (a key without one is bound to nothing: Entra ID's all
        // have one). Keys sharing a `kid` that name different issuers, or
        // one that is not a string, bind it to no issuer at all (""):
        // their tokens are refused rather than one of them chosen.
        let mut issuers: HashMap<String, String> = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(member)) = (&jwk.kid, jwk.extra.get("issuer")) else {
                continue;
            };
            let issuer = member.as_str().unwrap_or_default();
            issuers
                .entry(kid.clone())
                .and_modify(|known| {
                    if known != issuer {
                        known.clear();
                    }
                })
                .or_insert_with(|| issuer.to_owned());
        }
        Ok((Fetched { keys, issuers }, body, age))
    }

    /// The issuer the key `kid` of `keys` was published for (its `issuer`
    /// member): [`KeyBinding::Unknown`] when `keys` is no longer the
    /// current set and the current one lacks `kid` (the key withdrawn
    /// since it verified), whose binding is no longer known.
    pub(crate) fn issuer_of_key(&self, keys: &Arc<KeySet>, kid: &str) -> KeyBinding {
        let state = self.read();
        let current = state.keys.as_ref().is_some_and(|k| Arc::ptr_eq(k, keys));
        match state.key_issuers.get(kid) {
            Some(issuer) => KeyBinding::Bound(issuer.clone()),
            None if current
                || state
                    .keys
                    .as_ref()
                    .is_some_and(|k| k.keys().iter().any(|key| key.kid() == Some(kid))) =>
            {
                KeyBinding::Unbound
            }
            None => KeyBinding::Unknown,
        }
    }

    fn known_jwks_uri(&self) -> Option<String> {
        self.read().jwks_uri.clone()
    }

    async fn discover_jwks_uri(&self, issuer: &str) -> Result<String, FetchError> {
        let (url, metadata) = discovery::metadata(&self.client, issuer, self.max_bytes).await?;
        discovery::endpoint(&metadata, &url, "jwks_uri")
    }

    /// GET `url`: 200, at most `max_bytes`, with the max-age to keep it.
    async fn get(&self, url: &str) -> Result<(String, Duration), FetchError> {
        let (text, headers) = discovery::get(&self.client, url, self.max_bytes).await?;
        let age = fresh_for(&headers)
            .unwrap_or(self.default_age)
            .clamp(self.min_age, self.max_age);
        Ok((text, age))
    }
}

/// How much longer a response stays fresh by its headers (RFC 9111
/// §4.2): its `max-age` less the `Age` a cache in the way has kept it
/// already (a CDN's copy of a key set that is nearly stale is not fresh
/// for a whole `max-age` more).
fn fresh_for(headers: &http::HeaderMap) -> Option<Duration> {
    let lifetime = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age)?;
    let age = headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    Some(lifetime.saturating_sub(age))
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
        // `max-age=300`; spaces around `=` are outside the grammar, but
        // meant the same.
        if let Some((name, secs)) = lower.split_once('=') {
            if name.trim_end() == "max-age" {
                age = secs
                    .trim_start()
                    .trim_matches('"')
                    .parse()
                    .ok()
                    .map(Duration::from_secs);
            }
        }
    }
    age
}

/// Warn, once per new document, of a key set that refuses tokens it looks
/// like it should verify: one with no usable key, and one that names
/// several keys (or a key and an unusable one) under one `kid` for one
/// algorithm, which refuses every token signed under that `kid` as
/// ambiguous. Said per request, at debug, it went unseen.
fn report_unusable(source: &str, keys: &KeySet) {
    if keys.keys().is_empty() {
        tracing::warn!(
            source,
            skipped = keys.skipped().len(),
            "remote key set has no usable key: its tokens are refused"
        );
        return;
    }
    let mut reported = std::collections::HashSet::new();
    for key in keys.keys() {
        let Some(kid) = key.kid() else { continue };
        let alg = key.algorithm();
        let same = keys
            .keys()
            .iter()
            .filter(|k| k.kid() == Some(kid) && k.algorithm() == alg)
            .count();
        let shadows = keys
            .skipped()
            .iter()
            .filter(|s| s.could_have_signed(Some(kid), alg))
            .count();
        if same + shadows > 1 && reported.insert((kid, alg)) {
            tracing::warn!(
                source,
                kid,
                alg = alg.as_str(),
                keys = same + shadows,
                "remote key set names several keys under one kid: tokens signed under it are refused"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fresh_for, max_age, RemoteJwks};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tessera_jose::{Algorithm, JwkSet, SigningKey};

    fn published(keys: &[&SigningKey]) -> String {
        JwkSet::new(
            keys.iter()
                .map(|k| k.verifying_key().unwrap().to_public_jwk().unwrap())
                .collect(),
        )
        .to_json()
    }

    /// A fetch that brings the same document keeps the key set (tokens
    /// verified under it stay cached); a changed document replaces it.
    #[tokio::test]
    async fn the_same_document_keeps_the_same_key_set() {
        let key = || {
            SigningKey::generate(Algorithm::ES256)
                .unwrap()
                .with_thumbprint_kid()
                .unwrap()
        };
        let (a, b) = (key(), key());
        let document = Arc::new(Mutex::new(published(&[&a])));
        let served = Arc::clone(&document);
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let text = served.lock().unwrap().clone();
                async move { text }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // Never fresh, no cooldown: every call fetches.
        let remote = Arc::new(
            RemoteJwks::url(url)
                .unwrap()
                .cache_bounds(Duration::ZERO, Duration::ZERO)
                .cooldown(Duration::ZERO),
        );
        let first = remote.keys_for(a.kid()).await.unwrap();
        let again = remote.keys_for(a.kid()).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        *document.lock().unwrap() = published(&[&a, &b]);
        let changed = remote.keys_for(a.kid()).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.keys().len(), 2);
        assert_eq!(remote.fetches(), 3);
    }

    /// A key set served for a day is kept ten minutes by default: a key
    /// withdrawn without a replacement stops being trusted by then.
    #[tokio::test]
    async fn a_long_max_age_is_cut_to_ten_minutes_by_default() {
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(|| async {
                (
                    [(http::header::CACHE_CONTROL, "public, max-age=86400")],
                    "{\"keys\":[]}",
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let remote = RemoteJwks::url(url.clone()).unwrap();
        let (_, age) = remote.get(&url).await.unwrap();
        assert_eq!(age, Duration::from_secs(600));
    }

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
        assert_eq!(max_age("max-age = 300"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("s-maxage=300"), None);
    }

    #[test]
    fn a_cached_copy_is_fresh_for_what_is_left_of_its_max_age() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        let cdn = headers(&[("cache-control", "max-age=3600"), ("age", "3500")]);
        assert_eq!(fresh_for(&cdn), Some(Duration::from_secs(100)));
        let older = headers(&[("cache-control", "max-age=60"), ("age", "120")]);
        assert_eq!(fresh_for(&older), Some(Duration::ZERO));
        let direct = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(fresh_for(&direct), Some(Duration::from_secs(60)));
        assert_eq!(fresh_for(&headers(&[("age", "5")])), None);
    }
}
