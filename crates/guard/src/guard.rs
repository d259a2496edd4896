//! The verifier: keys, expectations, and a cache of verified tokens.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tessera_jose::{jwt, Algorithm, Clock, Error, KeySet, NumericDate, SystemClock, Validation};

use crate::feed::CheckedAt;
use crate::remote::KeyBinding;
use crate::{Rejection, RemoteJwks, RevocationFeed};

/// Verified tokens remembered at most, by default.
const DEFAULT_CACHE_SIZE: usize = 10_000;

/// A verified access token: who, for which client, with which scopes.
#[derive(Clone, Debug)]
pub struct AccessToken {
    claims: Map<String, Value>,
    scopes: BTreeSet<String>,
    exp: Option<NumericDate>,
    /// Found clean against the revocation feed's set of this generation.
    revocation_checked: CheckedAt,
    /// The `kid` of the key that verified it, for the feed's revoked
    /// keys: its header's, or the one key chosen for a header without.
    signed_by: Option<Box<str>>,
}

/// The client a token names ([`AccessToken::client_id`]).
fn client_of(claims: &Map<String, Value>) -> Option<&str> {
    ["client_id", "azp", "cid", "appid"]
        .into_iter()
        .find_map(|name| claims.get(name))
        .and_then(Value::as_str)
}

/// The scopes of a `scope` or `scp` claim: a space-separated string, or
/// an array of strings (anything else: none).
fn scope_list(value: &Value) -> BTreeSet<String> {
    let words = |s: &str| {
        s.split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match value {
        Value::String(s) => words(s).into_iter().collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .flat_map(words)
            .collect(),
        _ => BTreeSet::new(),
    }
}

impl AccessToken {
    fn new(claims: Map<String, Value>, signed_by: Option<Box<str>>) -> AccessToken {
        let scopes = claims
            .get("scope")
            .or_else(|| claims.get("scp"))
            .map(scope_list)
            .unwrap_or_default();
        // Whole seconds; a fraction (which validation accepts) rounded
        // down, so that such a token is cached to its expiry too.
        let exp = claims
            .get("exp")
            .and_then(|exp| {
                exp.as_i64()
                    .or_else(|| exp.as_f64().map(|f| f.floor() as i64))
            })
            .map(NumericDate::from_seconds);
        AccessToken {
            claims,
            scopes,
            exp,
            revocation_checked: CheckedAt::default(),
            signed_by,
        }
    }

    /// The `kid` of the key that verified the token: its header's, or,
    /// for a header without one, the key's the guard chose.
    pub fn key_id(&self) -> Option<&str> {
        self.signed_by.as_deref()
    }

    /// `sub`: the user or client the token is about.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// The client the token was issued to: its `client_id` (RFC 9068,
    /// AWS Cognito), or, from issuers that name it otherwise, its `azp`
    /// (the authorized party: Keycloak, Microsoft Entra ID v2), `cid`
    /// (Okta) or `appid` (Entra ID v1), the first of these it has.
    pub fn client_id(&self) -> Option<&str> {
        client_of(&self.claims)
    }

    /// Whether the token carries `scope`. The scopes are read from `scope`
    /// (RFC 9068: a space-separated string), or, when a token has none,
    /// from `scp`, as Microsoft Entra ID (a string) and Okta (an array)
    /// send them; an array is accepted under either name.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// The token's scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(String::as_str)
    }

    /// `exp`.
    pub fn expires_at(&self) -> Option<NumericDate> {
        self.exp
    }

    /// Every claim, as JSON.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The claims as the caller's own type.
    pub fn claims_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(Value::Object(self.claims.clone()))
    }
}

/// Checks bearer tokens. Cheap to clone: clones share keys and cache.
#[derive(Clone, Debug)]
pub struct Guard {
    inner: Arc<Inner>,
}

/// Why a [`KeyProvider`] has no keys to give.
pub type KeysUnavailable = Box<dyn std::error::Error + Send + Sync>;

/// The keys a provider gives for one token.
pub type KeysFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<KeySet>, KeysUnavailable>> + Send + 'a>>;

/// Where a guard finds the keys that may have signed a token: anything
/// that answers, for the `kid` of a token's header, with the key set in
/// force. [`Keys::Static`] and [`Keys::Remote`] cover a fixed set and a
/// JWKS URL; an authorization server checking its own tokens gives its
/// live key ring; a closure
/// `|kid: Option<&str>| async { Ok::<_, KeysUnavailable>(keys) }` works
/// too (as tower-http's `AsyncAuthorizeRequest` takes one).
///
/// Give the same `Arc<KeySet>` for as long as the keys do not change: a
/// cached token is taken again only while the set that verified it is the
/// set in force (the same allocation); any other set sends it through a
/// full verification.
pub trait KeyProvider: Send + Sync + 'static {
    /// The key set for a token whose header names `kid` (`None`: none).
    fn keys_for<'a>(&'a self, kid: Option<&'a str>) -> KeysFuture<'a>;
}

impl<F, Fut> KeyProvider for F
where
    F: Fn(Option<&str>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Arc<KeySet>, KeysUnavailable>> + Send + 'static,
{
    fn keys_for<'a>(&'a self, kid: Option<&'a str>) -> KeysFuture<'a> {
        Box::pin(self(kid))
    }
}

/// Where a guard's keys come from.
#[derive(Clone)]
pub enum Keys {
    /// A fixed set.
    Static(Arc<KeySet>),
    /// A JWKS URL or the issuer's metadata, fetched and cached.
    Remote(Arc<RemoteJwks>),
    /// Any other [`KeyProvider`].
    Provider(Arc<dyn KeyProvider>),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::Static(keys) => f.debug_tuple("Static").field(keys).finish(),
            Keys::Remote(remote) => f.debug_tuple("Remote").field(remote).finish(),
            Keys::Provider(_) => f.write_str("Provider(..)"),
        }
    }
}

impl Keys {
    /// Keys from `provider`.
    pub fn provider(provider: impl KeyProvider) -> Keys {
        Keys::Provider(Arc::new(provider))
    }
}

impl From<KeySet> for Keys {
    fn from(keys: KeySet) -> Keys {
        Keys::Static(Arc::new(keys))
    }
}

impl From<RemoteJwks> for Keys {
    fn from(remote: RemoteJwks) -> Keys {
        Keys::Remote(Arc::new(remote))
    }
}

#[derive(Debug)]
struct Inner {
    keys: Keys,
    validation: Validation,
    /// Tokens that show they are of another kind are refused
    /// ([`not_another_kind`]): `typ` is not `at+jwt`, and the guard is
    /// for access tokens.
    other_kinds_refused: bool,
    /// The clients whose tokens are accepted ([`GuardBuilder::clients`]);
    /// `None`: any.
    clients: Option<BTreeSet<String>>,
    /// With an issuer naming `{tenantid}`, every issuer the guard accepts,
    /// checked here rather than by `validation` ([`Issuers::check`]).
    issuers: Option<Issuers>,
    cache_size: usize,
    cache: RwLock<HashMap<[u8; 32], Cached>>,
    revocations: Option<RevocationFeed>,
    resource_metadata: Option<Arc<str>>,
}

/// A verified token in the cache, with what verified it.
#[derive(Clone, Debug)]
struct Cached {
    token: Arc<AccessToken>,
    /// The `kid` its header names, to ask for its key set again.
    kid: Option<String>,
    /// The key set that verified it. Held weakly: the set's allocation
    /// stays, so its address is never another set's while this lives.
    keys: Weak<KeySet>,
}

/// Builds a [`Guard`].
#[derive(Debug)]
pub struct GuardBuilder {
    issuer: String,
    /// Other spellings of the issuer its tokens may carry
    /// ([`GuardBuilder::also_issuer`]).
    also_issuers: Vec<String>,
    clients: Option<BTreeSet<String>>,
    /// `None`: any audience, waived explicitly ([`GuardBuilder::any_audience`]).
    audience: Option<String>,
    typ: Option<String>,
    algorithms: Option<Vec<Algorithm>>,
    leeway: Option<Duration>,
    keys: Keys,
    cache_size: usize,
    revocations: Option<RevocationFeed>,
    resource_metadata: Option<String>,
    /// Checks ID or logout tokens, not access tokens
    /// ([`GuardBuilder::not_access_tokens`]).
    not_access_tokens: bool,
}

impl Guard {
    /// Start a guard for tokens from `issuer` meant for `audience`,
    /// signed by one of `keys` (a [`KeySet`], or a [`RemoteJwks`]).
    pub fn builder(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        keys: impl Into<Keys>,
    ) -> GuardBuilder {
        GuardBuilder {
            issuer: issuer.into(),
            also_issuers: Vec::new(),
            clients: None,
            audience: Some(audience.into()),
            typ: Some("at+jwt".into()),
            algorithms: None,
            leeway: None,
            keys: keys.into(),
            cache_size: DEFAULT_CACHE_SIZE,
            revocations: None,
            resource_metadata: None,
            not_access_tokens: false,
        }
    }

    /// Verify `token`, from the cache when it was verified before and has
    /// not expired; then, with a [`RevocationFeed`], refuse it if it was
    /// revoked (cached tokens too).
    pub async fn verify(&self, token: &str) -> Result<Arc<AccessToken>, Rejection> {
        let verified = self.verify_signed(token).await?;
        if let Some(feed) = &self.inner.revocations {
            feed.check(
                &verified.claims,
                verified.signed_by.as_deref(),
                &verified.revocation_checked,
            )
            .await?;
        }
        Ok(verified)
    }

    /// How many verified tokens the cache holds now (at most
    /// [`GuardBuilder::cache_size`]).
    pub fn cached_tokens(&self) -> usize {
        self.inner
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The URL of the resource's metadata, named in every challenge.
    pub fn resource_metadata(&self) -> Option<&Arc<str>> {
        self.inner.resource_metadata.as_ref()
    }

    /// The subscription to the issuer's revocation feed, if any.
    pub fn revocations(&self) -> Option<&RevocationFeed> {
        self.inner.revocations.as_ref()
    }

    async fn verify_signed(&self, token: &str) -> Result<Arc<AccessToken>, Rejection> {
        let key: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut key = [0u8; 32];
            key.copy_from_slice(d.as_ref());
            key
        };
        // Validation's clock (not behind the system clock), so that a
        // cached token expires when a fresh verification would refuse it.
        let now = SystemClock.now();
        let inner = &self.inner;
        if inner.cache_size > 0 {
            let hit = inner
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            if let Some(hit) = hit {
                if hit.token.exp.is_some_and(|exp| exp > now) && self.still_verifies(&hit).await {
                    return Ok(hit.token);
                }
            }
        }
        let invalid = Rejection::InvalidToken {
            description: "the access token is invalid",
        };
        let kid = match &inner.keys {
            Keys::Static(_) => None,
            Keys::Remote(_) | Keys::Provider(_) => tessera_jose::jws::decode_header(token)
                .map_err(|_| invalid.clone())?
                .kid
                .clone(),
        };
        let keys = self.keys_for(kid.as_deref()).await.map_err(|e| {
            // Per request, so at debug: the key source reports a failing
            // issuer once per streak.
            tracing::debug!(error = %e, "no keys to verify bearer tokens");
            Rejection::KeysUnavailable
        })?;
        let verified = jwt::verify::<Map<String, Value>>(token, keys.as_ref(), &inner.validation)
            .map_err(|e| {
            // Why a token was refused, for whoever sets a guard up
            // against a new issuer (a `typ`, issuer or audience that
            // differs); the client is told only that it is invalid.
            tracing::debug!(code = e.code(), reason = %e, "bearer token refused");
            Rejection::InvalidToken {
                description: match e {
                    Error::Expired { .. } => "the access token expired",
                    _ => "the access token is invalid",
                },
            }
        })?;
        // On the claims already read (a `Validation::check` would read
        // the payload a second time): a token bound to its client's key,
        // and, without `at+jwt` required, one of another kind.
        let claims = &verified.claims.custom;
        let header = &verified.header;
        let signed_by: Option<Box<str>> = match &header.kid {
            Some(kid) => Some(kid.as_str().into()),
            None => keys
                .select(None, header.alg)
                .ok()
                .and_then(|k| k.kid())
                .map(Into::into),
        };
        let kind = match &inner.issuers {
            Some(issuers) => issuers.check(verified.claims.iss.as_deref(), claims),
            None => Ok(()),
        };
        // A key its issuer published for one issuer (its `issuer`
        // member) verifies that issuer's tokens only.
        let kind = kind.and_then(|()| match (&inner.keys, signed_by.as_deref()) {
            (Keys::Remote(remote), Some(kid)) => match remote.issuer_of_key(&keys, kid) {
                KeyBinding::Unbound => Ok(()),
                KeyBinding::Bound(bound) => {
                    key_issuer_check(&bound, verified.claims.iss.as_deref(), claims)
                }
                KeyBinding::Unknown => Err("its key was withdrawn as it was verified".into()),
            },
            _ => Ok(()),
        });
        let kind = kind.and_then(|()| not_sender_constrained(claims));
        let kind = kind.and_then(|()| match inner.other_kinds_refused {
            true => not_another_kind(claims),
            false => Ok(()),
        });
        let kind = kind.and_then(|()| match &inner.clients {
            Some(clients) => match client_of(claims) {
                Some(client) if clients.contains(client) => Ok(()),
                Some(client) => Err(format!(
                    "it was issued to client {client:?}, not one of this guard's"
                )),
                None => Err("it names no client, and this guard accepts only some".into()),
            },
            None => Ok(()),
        });
        if let Err(reason) = kind {
            tracing::debug!(reason, "bearer token refused");
            return Err(invalid);
        }
        let token = Arc::new(AccessToken::new(verified.claims.custom, signed_by));
        if inner.cache_size > 0 && token.exp.is_some() {
            let mut cache = inner.cache.write().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= inner.cache_size {
                cache.retain(|_, c| c.token.exp.is_some_and(|exp| exp > now));
                // Still full of live tokens: an eighth goes, taken in the
                // map's order, which follows the keyed hash of the tokens
                // (no client can choose whose). Emptied whole, as before,
                // a client minting tokens in a loop sent every client's
                // back through a full verification each time it filled.
                if cache.len() >= inner.cache_size {
                    let excess = cache.len() - inner.cache_size + inner.cache_size / 8 + 1;
                    let evicted: Vec<[u8; 32]> = cache.keys().take(excess).copied().collect();
                    for key in evicted {
                        cache.remove(&key);
                    }
                }
            }
            cache.insert(
                key,
                Cached {
                    token: Arc::clone(&token),
                    kid,
                    keys: Arc::downgrade(&keys),
                },
            );
        }
        Ok(token)
    }

    /// The key set for a token whose header names `kid`.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, String> {
        match &self.inner.keys {
            Keys::Static(keys) => Ok(Arc::clone(keys)),
            Keys::Remote(remote) => {
                let keys = remote.keys_for(kid).await.map_err(|e| e.to_string())?;
                // A `kid` the keys do not know while the issuer's key set
                // cannot be fetched: a key it may have published since
                // (one revoked and replaced at once signs unannounced).
                // A 503 has the client try again; a 401 would have it
                // throw a good token away, and get another with the same
                // `kid`, refused the same way.
                let unknown =
                    kid.is_some_and(|kid| !keys.keys().iter().any(|k| k.kid() == Some(kid)));
                if unknown && remote.failing() {
                    return Err(
                        "the issuer's keys cannot be fetched, and the cached ones do not know the token's kid"
                            .into(),
                    );
                }
                Ok(keys)
            }
            Keys::Provider(provider) => provider.keys_for(kid).await.map_err(|e| e.to_string()),
        }
    }

    /// Whether a cached token would still verify: the key set that
    /// verified it is still the current one. A remote key set past its
    /// max-age is refreshed first (one fetch at a time, within the
    /// cooldown), and any new set, even one that only adds a key, sends
    /// its cached tokens through a full verification once; so a withdrawn
    /// key, or new material under an old `kid`, stops its cached tokens
    /// too, whether or not they name a `kid`.
    async fn still_verifies(&self, hit: &Cached) -> bool {
        self.keys_for(hit.kid.as_deref())
            .await
            .is_ok_and(|current| std::ptr::eq(hit.keys.as_ptr(), Arc::as_ptr(&current)))
    }
}

impl GuardBuilder {
    /// Accept a token whatever its `aud`: for an issuer checking its own
    /// tokens at its own API, where every audience it issues for is its
    /// own. A resource server should name its audience instead: without
    /// it, a token meant for another API is accepted here.
    #[must_use]
    pub fn any_audience(mut self) -> GuardBuilder {
        self.audience = None;
        self
    }

    /// Also accept tokens whose `iss` is `issuer`, signed by the same keys:
    /// an issuer that writes its name two ways (Google's ID tokens say
    /// `https://accounts.google.com` or `accounts.google.com`), or the
    /// tenants of a multi-tenant issuer an API serves, each named
    /// (Microsoft Entra ID's `https://login.microsoftonline.com/{tenant
    /// id}/v2.0`, with keys from its `common` key set). The keys'
    /// discovery and the revocation feed stay the first issuer's.
    ///
    /// An issuer (this one or [`Guard::builder`]'s) naming `{tenantid}`
    /// accepts each tenant's tokens: their `iss` must be it with the
    /// token's `tid` (a GUID) put in, as Microsoft.IdentityModel checks
    /// Entra ID's `iss`; a key of a remote set that names its own
    /// `issuer` (Entra ID's do) verifies that issuer's tokens only. Any
    /// tenant's users then pass, since one key set signs for all of them:
    /// an API for some tenants names each instead, or checks
    /// `token.claims()["tid"]` itself. Such an issuer has no
    /// metadata of its own: its keys come from [`RemoteJwks::url`].
    #[must_use]
    pub fn also_issuer(mut self, issuer: impl Into<String>) -> GuardBuilder {
        self.also_issuers.push(issuer.into());
        self
    }

    /// Accept only tokens issued to these clients (the token's
    /// [`AccessToken::client_id`]); a token naming none is refused. For
    /// issuers whose access tokens carry no audience (AWS Cognito's carry
    /// `client_id` instead: [`GuardBuilder::any_audience`] with this), or
    /// to narrow an audience many clients share.
    #[must_use]
    pub fn clients<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> GuardBuilder {
        self.clients = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// Require this `typ` instead of `at+jwt` (`None`: any). Without
    /// `at+jwt`, an ID token or a logout token of the same issuer and
    /// audience (an app and its API registered as one client) would pass
    /// as an access token: tokens that show they are one (`at_hash`,
    /// `c_hash` or `events` among their claims, a `nonce` without `scope`
    /// or `scp`, Keycloak's `typ` claim `ID`, `Logout`, `Refresh` or
    /// `Offline`, or AWS Cognito's `token_use` other than `access`) are
    /// refused, whatever `typ` is required (an ID token's
    /// is often `JWT`), unless the guard checks such tokens themselves
    /// ([`GuardBuilder::not_access_tokens`]).
    #[must_use]
    pub fn typ(mut self, typ: Option<&str>) -> GuardBuilder {
        self.typ = typ.map(str::to_owned);
        self
    }

    /// This guard checks tokens that are not access tokens, of the `typ`
    /// it requires ([`GuardBuilder::typ`]): an app verifying the ID tokens
    /// or logout tokens its provider sends it. The claims that show an ID
    /// or logout token are then not refused.
    #[must_use]
    pub fn not_access_tokens(mut self) -> GuardBuilder {
        self.not_access_tokens = true;
        self
    }

    /// Accept only these algorithms.
    #[must_use]
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> GuardBuilder {
        self.algorithms = Some(algs.into_iter().collect());
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (default 60 s, at most 300 s).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> GuardBuilder {
        self.leeway = Some(leeway);
        self
    }

    /// Refuse the tokens `feed` says are revoked (see [`RevocationFeed`]).
    #[must_use]
    pub fn revocations(mut self, feed: RevocationFeed) -> GuardBuilder {
        self.revocations = Some(feed);
        self
    }

    /// Name the resource's metadata document (RFC 9728,
    /// [`crate::ProtectedResource::metadata_url`]) in every `401` and
    /// `403` challenge, so clients find the authorization server.
    #[must_use]
    pub fn resource_metadata(mut self, url: impl Into<String>) -> GuardBuilder {
        self.resource_metadata = Some(url.into());
        self
    }

    /// How many verified tokens to remember (0: verify every request).
    #[must_use]
    pub fn cache_size(mut self, entries: usize) -> GuardBuilder {
        self.cache_size = entries;
        self
    }

    /// The guard; refused when the leeway is over
    /// [`tessera_jose::jwt::MAX_LEEWAY`], when a [`RemoteJwks`] could
    /// never be fetched (plain HTTP to another host without
    /// [`RemoteJwks::allow_plain_http`]) or discovers another issuer's
    /// keys, or when the revocation feed is
    /// another issuer's (its cuts by `sub`, `client_id` or `sid` would
    /// refuse this issuer's tokens whose names collide, and this issuer's
    /// revocations would never arrive).
    pub fn build(self) -> Result<Guard, Error> {
        if let Keys::Remote(remote) = &self.keys {
            if let Some(why) = remote.unfit_for(&self.issuer) {
                return Err(Error::InvalidConfig { reason: why });
            }
        }
        if let Some(feed) = &self.revocations {
            if feed.issuer().trim_end_matches('/') != self.issuer.trim_end_matches('/') {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "the revocation feed is of issuer {:?}, the guard's tokens of {:?}",
                        feed.issuer(),
                        self.issuer
                    ),
                });
            }
        }
        let mut all = vec![self.issuer];
        all.extend(self.also_issuers);
        let (templates, exact): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|i| i.contains(TENANT_ID));
        let (mut validation, issuers) = if templates.is_empty() {
            let mut validation = Validation::new();
            for issuer in exact {
                validation = validation.issuer(issuer);
            }
            (validation, None)
        } else {
            // Checked on the claims once verified: `tid` names the tenant.
            let validation = Validation::new().any_issuer().require("iss");
            (validation, Some(Issuers { exact, templates }))
        };
        validation = match self.audience {
            Some(audience) => validation.audience(audience),
            None => validation.any_audience(),
        };
        // `at+jwt` says what the token is; any other `typ` (or none) an ID
        // token may carry too.
        let at_jwt = self.typ.as_deref().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == "at+jwt" || t == "application/at+jwt"
        });
        let other_kinds_refused = !at_jwt && !self.not_access_tokens;
        if let Some(typ) = self.typ {
            validation = validation.typ(typ);
        }
        if let Some(algs) = self.algorithms {
            validation = validation.algorithms(algs);
        }
        if let Some(leeway) = self.leeway {
            if leeway > jwt::MAX_LEEWAY {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "leeway {}s is over the {}s maximum",
                        leeway.as_secs(),
                        jwt::MAX_LEEWAY.as_secs()
                    ),
                });
            }
            validation = validation.leeway(leeway);
        }
        if let Some(url) = &self.resource_metadata {
            crate::resource::check_url(url).map_err(|e| Error::InvalidConfig {
                reason: format!("resource_metadata: {e}"),
            })?;
        }
        Ok(Guard {
            inner: Arc::new(Inner {
                keys: self.keys,
                validation,
                other_kinds_refused,
                clients: self.clients,
                issuers,
                cache_size: self.cache_size,
                cache: RwLock::new(HashMap::new()),
                revocations: self.revocations,
                resource_metadata: self.resource_metadata.map(Into::into),
            }),
        })
    }
}

/// What stands for the tenant in a multi-tenant issuer's name (Microsoft
/// Entra ID's `common` metadata says `https://login.microsoftonline.com/{tenantid}/v2.0`).
const TENANT_ID: &str = "{tenantid}";

/// Entra ID's v2 issuer, as its keys name it.
const ENTRA_V2: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

/// The issuers of a guard when one names [`TENANT_ID`]: a token's `iss`
/// must be one of `exact`, or a template with its `tid` put in.
#[derive(Debug)]
struct Issuers {
    exact: Vec<String>,
    templates: Vec<String>,
}

impl Issuers {
    /// Whether `iss` is one of these issuers, the tenant of a template
    /// being the token's `tid`, which must be a GUID (as Entra ID's
    /// are): nothing else can be put in the name.
    fn check(
        &self,
        iss: Option<&str>,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let Some(iss) = iss else {
            return Err("it names no issuer".into());
        };
        if self.exact.iter().any(|e| e == iss) {
            return Ok(());
        }
        let tid = claims.get("tid").and_then(|t| t.as_str());
        let Some(tid) = tid.filter(|t| is_guid(t)) else {
            return Err(format!(
                "its issuer {iss:?} is not this guard's, and it names no tenant (tid) to put in \
                 a {TENANT_ID} issuer"
            ));
        };
        if self
            .templates
            .iter()
            .any(|t| t.replace(TENANT_ID, tid) == iss)
        {
            return Ok(());
        }
        Err(format!(
            "its issuer {iss:?} is not this guard's for its tenant {tid:?}"
        ))
    }
}

/// Whether `iss` is the issuer a key was published for (`bound`, its
/// `issuer` member), the tenant of a [`TENANT_ID`] template being the
/// token's `tid` (a GUID), as Microsoft.IdentityModel checks the keys of
/// Entra ID's `common` key set: a key published for Entra ID tenants
/// does not vouch for a token naming another issuer.
fn key_issuer_check(
    bound: &str,
    iss: Option<&str>,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let Some(iss) = iss else {
        return Err(format!(
            "it names no issuer, and its key was published for issuer {bound:?}"
        ));
    };
    let expected = if bound.contains(TENANT_ID) {
        match claims.get("tid").and_then(|t| t.as_str()) {
            Some(tid) if is_guid(tid) => bound.replace(TENANT_ID, tid),
            _ => {
                return Err(format!(
                    "its key was published for issuer {bound:?}, and it names no tenant (tid) \
                     to put in"
                ))
            }
        }
    } else {
        bound.to_owned()
    };
    // Entra ID signs its v1 tokens (`https://sts.windows.net/{tid}/`)
    // with the keys it publishes for its v2 issuer, and
    // Microsoft.IdentityModel accepts them so.
    let v1 = bound == ENTRA_V2
        && claims
            .get("tid")
            .and_then(|t| t.as_str())
            .is_some_and(|tid| is_guid(tid) && iss == format!("https://sts.windows.net/{tid}/"));
    if expected == iss || v1 {
        Ok(())
    } else {
        Err(format!(
            "its issuer {iss:?} is not the one its key was published for ({expected:?})"
        ))
    }
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A token bound to a key of its client (`cnf`: DPoP, RFC 9449, or a TLS
/// client certificate, RFC 8705) is only as safe as the check of that
/// binding, which a bearer guard does not make: presented as a bearer
/// token, a stolen one would work for anyone (RFC 9449 §7.2). Refused.
fn not_sender_constrained(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    match claims.contains_key("cnf") {
        true => Err(
            "it is bound to its client's key (cnf), which a bearer token check does not prove"
                .into(),
        ),
        false => Ok(()),
    }
}

/// Without `at+jwt` required, refuse the tokens of other kinds that carry
/// the same issuer and audience: ID tokens (`at_hash`, `c_hash`, or a
/// `nonce` without any scope: Keycloak copies the sign-in's `nonce` into
/// its access tokens too), logout tokens (`events`), Keycloak's by its
/// `typ` claim, and AWS Cognito's by its `token_use` (`id`; its ID tokens
/// carry none of the other marks).
fn not_another_kind(claims: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    for (claim, kind) in [
        ("at_hash", "an ID token"),
        ("c_hash", "an ID token"),
        ("events", "a logout token"),
    ] {
        if claims.contains_key(claim) {
            return Err(format!("it has {claim:?}: {kind}, not an access token"));
        }
    }
    if claims.contains_key("nonce") && !claims.contains_key("scope") && !claims.contains_key("scp")
    {
        return Err("it has a nonce and no scope: an ID token, not an access token".into());
    }
    if let Some(used) = claims.get("token_use") {
        if used.as_str() != Some("access") {
            return Err(format!("its token_use is {used}, not an access token"));
        }
    }
    match claims.get("typ").and_then(|t| t.as_str()) {
        Some(kind @ ("ID" | "Logout" | "Refresh" | "Offline")) => {
            Err(format!("its typ claim is {kind:?}, not an access token"))
        }
        _ => Ok(()),
    }
}
