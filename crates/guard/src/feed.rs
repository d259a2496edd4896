//! A subscription to an authorization server's revocation feed, kept as
//! a [`RevocationSet`] the guard checks every token against.
//!
//! The feed is a stream of server-sent events (the WHATWG `EventSource`
//! format over one long GET): one event per revocation, each with an `id`
//! the subscriber sends back as `Last-Event-ID` when it reconnects, so a
//! dropped connection or a restarted server loses nothing. The server
//! first sends every live revocation after that id (all of them on a first
//! connection), then `ready`, then new revocations as they happen, and a
//! `heartbeat` when it has been quiet. Beside the id, the subscriber
//! sends the digest of the event it stands on
//! ([`crate::revocation::LAST_EVENT_DIGEST`]): a server whose log was
//! restored from a backup, and has grown back past that id with other
//! events, sees that the id now names another event and sends `reset`,
//! and the subscriber reads the whole log again.
//!
//! The subscriber authenticates as a client of the issuer
//! (`client_credentials`, `client_secret_basic`) with the
//! [`FEED_SCOPE`] scope; both endpoints come from the issuer's metadata,
//! found as [`crate::RemoteJwks::discover`] finds it.
//!
//! When the feed cannot be reached, the revocations already known keep
//! being enforced. Once it has been unreachable longer than a bound (60 s
//! by default), the guard follows [`WhenUnreachable`]: by default it keeps
//! serving and reports it, because the checks that make a token valid
//! (signature, issuer, audience, expiry) do not depend on the feed, and
//! an API that refuses every request whenever the authorization server is
//! away has given up what self-contained tokens are for; access tokens
//! still expire within minutes. [`WhenUnreachable::Refuse`] is there for
//! APIs where a revoked token must never work past the bound. A feed that
//! has never been read (a wrong client secret or scope, a wrong issuer)
//! knows no revocation to keep enforcing: past the bound from its start,
//! every token is refused with 503 under either policy.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::discovery::{self, FetchError, Http, Transport};
use crate::revocation::{event_digest, Revocable, Revocation, RevocationSet, LAST_EVENT_DIGEST};
use crate::Rejection;

/// The scope a client needs to read the revocation feed.
pub const FEED_SCOPE: &str = "revocations:read";

/// The metadata member (RFC 8414 §2 allows extensions) naming the feed.
pub const FEED_METADATA: &str = "revocation_feed_endpoint";

/// What the guard does once the feed has been unreachable longer than
/// the bound; see the module docs for why serving is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenUnreachable {
    /// Keep serving with the revocations known so far, and report it (a
    /// warning once per outage, and [`RevocationFeed::status`]).
    #[default]
    KeepServing,
    /// Refuse every token with 503 until the feed is back.
    Refuse,
}

/// Where a subscription stands, for health checks and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStatus {
    /// Connected, with every revocation the server has (but those of
    /// the events counted in `unreadable_events`).
    pub current: bool,
    /// How long since the set was last known current (`None`: never).
    pub stale_for: Option<Duration>,
    /// The id of the last event applied.
    pub last_event_id: Option<u64>,
    /// Live revocations held.
    pub revocations: usize,
    /// Every token is refused with 503 now: the feed has been unreachable
    /// past the bound under [`WhenUnreachable::Refuse`], or has never been
    /// read and its bound has passed (a health check should say so).
    pub refusing: bool,
    /// Times an event of a known kind was skipped because this guard
    /// could not read it (a field of a newer server's making, an
    /// identifier past [`MAX_IDENTIFIER_LEN`], an id that is not a
    /// number), under [`WhenUnreachable::KeepServing`]: each is logged as
    /// an error, and the revocation it carried is not applied; the events
    /// after it are (one unreadable event used to stop the feed for good,
    /// every reconnection failing on it again). A backlog read again
    /// counts its skips again. Under [`WhenUnreachable::Refuse`] such an
    /// event fails the feed instead, and past the bound every token is
    /// refused: a revoked token must never work there. Events of kinds
    /// this guard does not know are skipped with a warning, uncounted.
    pub unreadable_events: u64,
}

/// The longest identifier (`jti`, `sub`, `client_id`, `sid`, `kid`,
/// `refresh_family`) an
/// event may carry. Real ones are tens of bytes; without a bound, an
/// issuer's events of half a megabyte each would be held by the million
/// (`max_revocations` counts entries, not bytes).
pub const MAX_IDENTIFIER_LEN: usize = 1024;

/// A subscription to an issuer's revocation feed. Cheap to clone; the
/// background task ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct RevocationFeed {
    shared: Arc<Shared>,
    /// Dropped with the last clone, which tells the task to stop.
    _alive: Arc<tokio::sync::watch::Sender<()>>,
}

/// Never synchronized, current, or lost since `lost_at`.
const NEVER: u8 = 0;
const CURRENT: u8 = 1;
const LOST: u8 = 2;

impl Shared {
    /// Whether every token is refused in `state`: unreachable past the
    /// bound under [`WhenUnreachable::Refuse`]; or never synchronized past
    /// the bound, whatever the policy (a wrong secret or scope would
    /// otherwise let every revoked token through for good, quietly):
    /// `KeepServing` serves with the revocations it knows, and it knows
    /// none.
    fn refusing(&self, state: u8) -> bool {
        let trusted = match state {
            CURRENT => true,
            LOST => self.lost_for() <= self.bound,
            _ => false,
        };
        let never_past_bound = state == NEVER && self.epoch.elapsed() > self.bound;
        (!trusted && self.policy == WhenUnreachable::Refuse) || never_past_bound
    }
}

#[derive(Debug)]
struct Shared {
    issuer: String,
    set: RwLock<RevocationSet>,
    state: AtomicU8,
    /// Milliseconds since `epoch` when the set was last known current.
    last_current: AtomicU64,
    epoch: Instant,
    last_id: AtomicU64,
    /// The [`event_digest`] of the event at `last_id` (empty when none).
    last_digest: std::sync::Mutex<String>,
    /// Bumped after every change of `set`.
    generation: AtomicU64,
    /// Events skipped as unreadable ([`FeedStatus::unreadable_events`]).
    unreadable: AtomicU64,
    synced: tokio::sync::watch::Sender<bool>,
    policy: WhenUnreachable,
    bound: Duration,
    first_sync_wait: Duration,
}

/// The generation of the revocation set a verified token was last found
/// clean against (plus one; zero: never), kept with the cached token so a
/// repeated token costs two atomic loads while the set is unchanged.
#[derive(Debug, Default)]
pub(crate) struct CheckedAt(AtomicU64);

impl Clone for CheckedAt {
    fn clone(&self) -> CheckedAt {
        CheckedAt(AtomicU64::new(self.0.load(Ordering::Acquire)))
    }
}

/// Builds a [`RevocationFeed`].
pub struct RevocationFeedBuilder {
    issuer: String,
    client_id: String,
    client_secret: Zeroizing<String>,
    endpoint: Option<String>,
    policy: WhenUnreachable,
    bound: Duration,
    first_sync_wait: Duration,
    idle_timeout: Duration,
    heartbeat: Duration,
    transport: Transport,
    max_revocations: usize,
}

impl std::fmt::Debug for RevocationFeedBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFeedBuilder")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("policy", &self.policy)
            .field("bound", &self.bound)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl RevocationFeed {
    /// Subscribe to `issuer`'s feed as client `client_id` (which must be
    /// allowed [`FEED_SCOPE`] and `client_credentials`).
    pub fn builder(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Zeroizing<String>,
    ) -> RevocationFeedBuilder {
        RevocationFeedBuilder {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret,
            endpoint: None,
            policy: WhenUnreachable::default(),
            bound: Duration::from_secs(60),
            first_sync_wait: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(25),
            heartbeat: Duration::from_secs(10),
            transport: Transport::default(),
            max_revocations: DEFAULT_MAX_REVOCATIONS,
        }
    }

    /// Where the subscription stands.
    pub fn status(&self) -> FeedStatus {
        let shared = &self.shared;
        let state = shared.state.load(Ordering::Acquire);
        let last_id = shared.last_id.load(Ordering::Acquire);
        FeedStatus {
            current: state == CURRENT,
            stale_for: match state {
                NEVER => None,
                CURRENT => Some(Duration::ZERO),
                _ => Some(shared.lost_for()),
            },
            last_event_id: (last_id > 0).then_some(last_id),
            revocations: shared.read().len(),
            refusing: shared.refusing(state),
            unreadable_events: shared.unreadable.load(Ordering::Relaxed),
        }
    }

    /// The issuer this feed is of.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Refuse a token with `claims` when it is revoked, or when the feed's state and
    /// the policy say so. Before the first synchronization, waits for it
    /// a little, so a guard that just started does not let a revoked
    /// token through while the backlog is on its way.
    pub(crate) async fn check(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        signed_by: Option<&str>,
        checked: &CheckedAt,
    ) -> Result<(), Rejection> {
        let shared = &self.shared;
        let mut state = shared.state.load(Ordering::Acquire);
        if state == NEVER {
            // Only while the feed is young: a feed that never came up does
            // not make every request wait.
            if let Some(left) = shared.first_sync_wait.checked_sub(shared.epoch.elapsed()) {
                let mut synced = shared.synced.subscribe();
                let _ = tokio::time::timeout(left, synced.wait_for(|s| *s)).await;
            }
            state = shared.state.load(Ordering::Acquire);
        }
        if shared.refusing(state) {
            return Err(Rejection::RevocationsUnavailable);
        }
        // A token found clean against this very set is clean still: the
        // generation is read before the set, so a change in between only
        // costs a second look next time.
        let generation = shared.generation.load(Ordering::Acquire) + 1;
        if checked.0.load(Ordering::Acquire) == generation {
            return Ok(());
        }
        if shared
            .read()
            .refuses(Revocable::from_claims(claims).signed_by(signed_by))
        {
            return Err(Rejection::InvalidToken {
                description: "the access token is invalid",
            });
        }
        checked.0.store(generation, Ordering::Release);
        Ok(())
    }
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevocationSet> {
        self.set.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The cursor is now event `id`, whose data has `digest`.
    fn set_cursor(&self, id: u64, digest: String) {
        *self.last_digest.lock().unwrap_or_else(|p| p.into_inner()) = digest;
        self.last_id.store(id, Ordering::Release);
    }

    fn cursor_digest(&self) -> String {
        self.last_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Change the set; tokens checked against the previous one are
    /// checked again.
    fn change(&self, f: impl FnOnce(&mut RevocationSet)) {
        f(&mut self.set.write().unwrap_or_else(|p| p.into_inner()));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lost_for(&self) -> Duration {
        let since = self.last_current.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    /// The set is current now (connected, backlog applied, or a heartbeat).
    fn current(&self) {
        self.last_current.store(self.now_ms(), Ordering::Release);
        self.state.store(CURRENT, Ordering::Release);
        self.synced.send_replace(true);
    }

    /// The connection went: current until the last sign of life.
    fn lost(&self) {
        let _ = self
            .state
            .compare_exchange(CURRENT, LOST, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl RevocationFeedBuilder {
    /// What to do once the feed has been unreachable longer than the
    /// bound (default: keep serving).
    #[must_use]
    pub fn when_unreachable(mut self, policy: WhenUnreachable) -> RevocationFeedBuilder {
        self.policy = policy;
        self
    }

    /// How long the feed may be unreachable before the policy applies
    /// (default 60 s). It runs from the last sign of life (an event, or
    /// the issuer's heartbeat when quiet), also while a connection that
    /// went silent is still open. A quiet, healthy connection is silent
    /// between heartbeats, so an open connection is given up on no sooner
    /// than one and a half heartbeat intervals (15 s by default) after
    /// its last sign of life, whatever the bound.
    #[must_use]
    pub fn unreachable_after(mut self, bound: Duration) -> RevocationFeedBuilder {
        self.bound = bound;
        self
    }

    /// How long a request waits for the first synchronization (3 s).
    /// Past it, a guard that has not synchronized yet (its issuer down or
    /// slow when the API starts) serves with no revocations known, under
    /// [`WhenUnreachable::KeepServing`], until the bound
    /// ([`RevocationFeedBuilder::unreachable_after`], 60 s) has passed
    /// since it started; then it refuses every token until it has. A
    /// token revoked before the start passes meanwhile: choose
    /// [`WhenUnreachable::Refuse`] where that must not happen.
    #[must_use]
    pub fn first_sync_wait(mut self, wait: Duration) -> RevocationFeedBuilder {
        self.first_sync_wait = wait;
        self
    }

    /// How long the feed may stay silent, including the wait for the
    /// answer to its request, before the connection is given up and made
    /// again (default 25 s). Keep it well above the issuer's heartbeat
    /// (Tessera sends one every 10 s).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> RevocationFeedBuilder {
        self.idle_timeout = timeout;
        self
    }

    /// The most revocations held (default 1,000,000: some 100 MB with the
    /// identifiers of tens of bytes real issuers send; up to ten times
    /// that, and twice while a `reset` builds the new set beside the old,
    /// from an issuer that sends identifiers of the most bytes taken,
    /// [`MAX_IDENTIFIER_LEN`]): when
    /// the set is full, what has expired goes first; a log of more live
    /// revocations than that (an issuer's bug, a feed that is not one) is
    /// not read on past it, and the feed counts as unreachable, so the
    /// guard's memory stays bounded and what it does follows
    /// [`RevocationFeedBuilder::when_unreachable`]. Tessera's log holds
    /// far fewer: each client's revocations are limited.
    #[must_use]
    pub fn max_revocations(mut self, max: usize) -> RevocationFeedBuilder {
        self.max_revocations = max.max(1);
        self
    }

    /// How often the issuer sends a heartbeat when the feed is quiet
    /// (Tessera: every 10 s, the default).
    #[must_use]
    pub fn issuer_heartbeat(mut self, every: Duration) -> RevocationFeedBuilder {
        self.heartbeat = every;
        self
    }

    /// The feed's URL, instead of the metadata's `revocation_feed_endpoint`.
    #[must_use]
    pub fn endpoint(mut self, url: impl Into<String>) -> RevocationFeedBuilder {
        self.endpoint = Some(url.into());
        self
    }

    /// Also trust the certificate authorities in `pem` (`CERTIFICATE`
    /// blocks), for an issuer whose certificate a private CA signed. The
    /// webpki roots (Mozilla's) stay trusted.
    pub fn root_certificates(mut self, pem: &[u8]) -> Result<RevocationFeedBuilder, FetchError> {
        self.transport.add_roots(pem)?;
        Ok(self)
    }

    /// Allow plain HTTP to hosts other than this one. By default the
    /// metadata, the token endpoint (which gets the client secret) and the
    /// feed are reached over HTTPS, or plain HTTP only on a loopback
    /// address. For a private network you trust.
    #[must_use]
    pub fn allow_plain_http(mut self) -> RevocationFeedBuilder {
        self.transport.allow_plain_http();
        self
    }

    /// Start the subscription on the current tokio runtime.
    pub fn start(self) -> Result<RevocationFeed, FetchError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| FetchError("the revocation feed needs a tokio runtime".into()))?;
        // Metadata and the token request are small and bounded in time;
        // the feed itself is a stream, bounded by the idle timeout instead.
        let short = self.transport.client(Duration::from_secs(5))?;
        let stream = self.transport.streaming_client(Duration::from_secs(5))?;
        let (synced, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            issuer: self.issuer.clone(),
            set: RwLock::new(RevocationSet::new()),
            state: AtomicU8::new(NEVER),
            last_current: AtomicU64::new(0),
            epoch: Instant::now(),
            last_id: AtomicU64::new(0),
            last_digest: std::sync::Mutex::default(),
            generation: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            synced,
            policy: self.policy,
            bound: self.bound,
            first_sync_wait: self.first_sync_wait,
        });
        let (alive, stop) = tokio::sync::watch::channel(());
        let task = Subscriber {
            shared: Arc::clone(&shared),
            short,
            stream,
            builder: self,
            token: None,
            endpoints: None,
            steady: tessera_jose::SteadyClock::new(),
            failing: false,
            reported_stale: false,
            ready_at: None,
            answered: None,
            busy_in_a_row: 0,
            reread: false,
            ever_ready: false,
        };
        runtime.spawn(task.run(stop));
        Ok(RevocationFeed {
            shared,
            _alive: Arc::new(alive),
        })
    }
}

/// The most bytes read without an event completing (an event is one
/// revocation, some hundred bytes; one read may also carry the rest of a
/// previous event and several whole ones, at most the HTTP client's read
/// buffer of a few hundred KiB).
const MAX_UNFINISHED_BYTES: u64 = 1024 * 1024;

/// U+FEFF in UTF-8.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Why the feed's body could not be read.
#[derive(Debug)]
enum ChunkError {
    Transport(reqwest::Error),
    TooLarge,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::Transport(e) => e.fmt(f),
            ChunkError::TooLarge => {
                write!(
                    f,
                    "over {MAX_UNFINISHED_BYTES} bytes without a complete event"
                )
            }
        }
    }
}

impl std::error::Error for ChunkError {}

/// The longest a feed token is kept before a new one is asked for.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// How a connection ended without an error.
enum Ended {
    /// The server closed a stream that had reached `ready` (its token
    /// expired, or it is shutting down).
    AfterReady,
}

/// A revocation event's data: the revocation, or `None` for a kind this
/// version does not know (a newer server's), which is skipped rather than
/// stopping the feed.
fn parse_event(data: &str) -> Result<Option<Revocation>, String> {
    match serde_json::from_str::<Revocation>(data) {
        Ok(revocation) => {
            let (name, identifier) = match &revocation {
                Revocation::Token { jti, .. } => ("jti", jti),
                Revocation::User { sub, .. } => ("sub", sub),
                Revocation::Client { client_id, .. } => ("client_id", client_id),
                Revocation::Session { sid, .. } => ("sid", sid),
                Revocation::Key { kid, .. } => ("kid", kid),
                Revocation::Family { family, .. } => ("refresh_family", family),
            };
            if identifier.len() > MAX_IDENTIFIER_LEN {
                return Err(format!(
                    "its {name} is {} bytes long, past the {MAX_IDENTIFIER_LEN} held",
                    identifier.len()
                ));
            }
            Ok(Some(revocation))
        }
        Err(e) => {
            let kind = serde_json::from_str::<serde_json::Value>(data)
                .ok()
                .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned));
            match kind {
                Some(kind)
                    if !["token", "user", "client", "session", "key", "family"]
                        .contains(&kind.as_str()) =>
                {
                    tracing::warn!(kind, "revocation event of an unknown kind skipped");
                    Ok(None)
                }
                _ => Err(e.to_string()),
            }
        }
    }
}

/// The background task: connect, apply, reconnect.
struct Subscriber {
    shared: Arc<Shared>,
    short: Http,
    stream: Http,
    builder: RevocationFeedBuilder,
    /// The access token and when to get a new one.
    token: Option<(Zeroizing<String>, Instant)>,
    /// The token endpoint and the feed.
    endpoints: Option<(String, String)>,
    /// The time revocations past their end are forgotten by: it does not
    /// follow a clock stepped forward, after which events forgotten early
    /// would be gone for good (the feed resumes past them) once the clock
    /// is set right.
    steady: tessera_jose::SteadyClock,
    /// An outage was reported (warning logged) and not yet ended by a
    /// `ready`.
    failing: bool,
    /// The outage outlasted the bound (error logged).
    reported_stale: bool,
    /// When the current stream reached `ready`.
    ready_at: Option<tokio::time::Instant>,
    /// What the last failed connection's answer said of it: how long the
    /// issuer asked to be left alone, and whether its endpoints still
    /// stand (it answered there, with a status that is not "not here").
    answered: Option<Answered>,
    /// Busy answers in a row at the same endpoints.
    busy_in_a_row: u32,
    /// The next connection reads the log from the start: the feed
    /// started over on a live stream, or refused the cursor. Kept here,
    /// not in the shared cursor, which still says how far the set goes.
    reread: bool,
    /// A connection has reached `ready`: a backlog read from the start
    /// since is added to the set in force, not put in its place (unless
    /// the server resets the cursor sent).
    ever_ready: bool,
}

/// [`RevocationFeedBuilder::max_revocations`]'s default.
const DEFAULT_MAX_REVOCATIONS: usize = 1_000_000;

/// A feed that answered it is busy (429, 503).
#[derive(Clone, Copy, Debug)]
struct Answered {
    /// Its `Retry-After`, within [`LONGEST_RETRY_AFTER`].
    retry_after: Option<Duration>,
}

/// The longest `Retry-After` a feed is taken at its word for (and never
/// more than half the guard's `unreachable_after`, so that heeding one
/// busy answer does not by itself push the guard past its bound); past
/// it the backoff's own pace resumes.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Busy answers in a row after which the metadata is read again all the
/// same: a proxy in front of an address the issuer has left answers 503
/// for ever.
const BUSY_BEFORE_REDISCOVERY: u32 = 3;

/// A `Retry-After` in seconds (RFC 9110 §10.2.3; an HTTP date is taken
/// as none), within `longest`.
fn retry_after(headers: &http::HeaderMap, longest: Duration) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than a u64 holds is "a long time": the longest.
    let secs = text.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(longest))
}

impl Drop for Subscriber {
    /// The task is gone (its runtime shut down, or it panicked): nothing
    /// keeps the set current any more, and the bound runs from the last
    /// sign of life.
    fn drop(&mut self) {
        self.shared.lost();
    }
}

/// The token endpoint's answer, as much as is needed.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Zeroizing<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A stream that lasted less than this before it ended counts as a
/// failure for the backoff.
const STREAM_LIVED: Duration = Duration::from_secs(5);

/// Between half of `delay` and all of it, so that guards that lost their
/// issuer together do not all come back in the same instant.
fn jittered(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    // Without randomness the whole delay: still a backoff.
    if aws_lc_rs::rand::fill(&mut byte).is_err() {
        return delay;
    }
    delay / 2 + delay / 2 * u32::from(byte[0]) / 255
}

impl Subscriber {
    async fn run(mut self, mut stop: tokio::sync::watch::Receiver<()>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            // A panic in a connection (a parser's bug, on bytes no one
            // foresaw) is that connection's failure, retried as any other:
            // before, it ended the task, and with it the set's updates.
            let session = std::panic::AssertUnwindSafe(self.session()).catch_unwind();
            let outcome = tokio::select! {
                outcome = session => outcome.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(FetchError(format!("reading the feed failed: {what}")))
                }),
                _ = stop.changed() => return,
            };
            self.shared.lost();
            // A stream that stayed up a while after `ready` ends an
            // outage's backoff, however it ended.
            let lived = self
                .ready_at
                .take()
                .is_some_and(|at| at.elapsed() >= STREAM_LIVED);
            if lived {
                backoff = Duration::from_millis(250);
            }
            match outcome {
                Ok(Ended::AfterReady) if !lived => {
                    // Ended as soon as it was ready, again and again (a
                    // proxy that cuts streams): back off as for a failure
                    // rather than reconnect in a loop.
                }
                Ok(Ended::AfterReady) => {
                    // The server ended the stream (its token expired):
                    // reconnect at once.
                    continue;
                }
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(issuer = %self.builder.issuer, reason = %e, "revocation feed unreachable; retrying");
                        self.failing = true;
                    }
                    // The issuer may have moved its endpoints: the next
                    // attempt reads its metadata again, unless the feed
                    // said it is busy (429, 503), when asking the metadata
                    // again too would only add to its load; a few busy
                    // answers in a row, and it is asked all the same.
                    let busy = self.answered.is_some();
                    self.busy_in_a_row = if busy { self.busy_in_a_row + 1 } else { 0 };
                    if !busy || self.busy_in_a_row >= BUSY_BEFORE_REDISCOVERY {
                        self.endpoints = None;
                        self.busy_in_a_row = 0;
                    }
                }
            }
            // An issuer that asked to be left alone a while is.
            let asked = self
                .answered
                .take()
                .and_then(|a| a.retry_after)
                .unwrap_or_default();
            let lost_for = self.shared.lost_for();
            let never = self.shared.state.load(Ordering::Acquire) == NEVER;
            // Since the last sign of life, or since the start for a feed
            // never synchronized: said once the bound has passed, not at
            // the first failure of a start where the issuer comes up after
            // this API.
            if !self.reported_stale && lost_for > self.builder.bound {
                let serving = self.builder.policy == WhenUnreachable::KeepServing;
                tracing::error!(
                    issuer = %self.builder.issuer,
                    synchronized_ever = !never,
                    refusing_tokens = !serving,
                    "revocation feed unreachable beyond its bound"
                );
                self.reported_stale = true;
            }
            // On top of the wait asked for, the backoff's jitter: guards
            // the issuer turned away together do not all return at once.
            let wait = if asked.is_zero() {
                jittered(backoff)
            } else {
                asked + jittered(backoff)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection: endpoints, token, stream until it ends.
    async fn session(&mut self) -> Result<Ended, FetchError> {
        let (token_endpoint, feed) = match &self.endpoints {
            Some(found) => found.clone(),
            None => {
                let found = self.discover().await?;
                self.endpoints = Some(found.clone());
                found
            }
        };
        let token = self.token(&token_endpoint).await?;
        let mut request = self
            .stream
            .get(&feed)?
            .header(http::header::ACCEPT, "text/event-stream")
            .bearer_auth(token.as_str());
        let last_id = if self.reread {
            0
        } else {
            self.shared.last_id.load(Ordering::Acquire)
        };
        if last_id > 0 {
            request = request.header("Last-Event-ID", last_id.to_string());
            // Names the event the cursor stands on, so a server whose log
            // was restored and has grown back past it starts us over.
            let digest = self.shared.cursor_digest();
            if !digest.is_empty() {
                request = request.header(LAST_EVENT_DIGEST, digest);
            }
        }
        let fail = |e: &dyn std::fmt::Display| FetchError(format!("{feed}: {e}"));
        // The streaming client has no overall timeout (the stream lasts),
        // so the wait for the response's head gets the idle timeout: a
        // peer that accepts the connection and never answers is left for
        // another attempt, not waited on for ever.
        let response = tokio::time::timeout(self.builder.idle_timeout, request.send())
            .await
            .map_err(|_| fail(&"no response within the idle timeout"))?
            .map_err(|e| fail(&e))?;
        match response.status() {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::UNAUTHORIZED => {
                self.token = None;
                return Err(fail(&"401: the access token was refused"));
            }
            // The server refused the request, and the cursor is the one
            // thing in it that comes from the feed: read the log again
            // from the start next time (the set in force stays until
            // then), rather than send the same refused cursor for ever.
            reqwest::StatusCode::BAD_REQUEST if last_id > 0 => {
                self.reread = true;
                return Err(fail(&"400 to the cursor: reading the log again"));
            }
            status => {
                let busy = status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
                if busy {
                    let longest = LONGEST_RETRY_AFTER.min(self.builder.bound / 2);
                    self.answered = Some(Answered {
                        retry_after: retry_after(response.headers(), longest),
                    });
                }
                return Err(fail(&status));
            }
        }
        // Bytes received since the last complete event: a feed that sends
        // an endless event is cut off while it is read, before the parser
        // has buffered more than the limit.
        let pending = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&pending);
        // The stream's first bytes while they may yet be a byte-order mark
        // (`None` once they are past): the event-stream format allows one,
        // and the parser panics on it (eventsource-stream 0.2 cuts the
        // three-byte character at its first byte), which ended the task
        // for good. Any number of them is taken off here.
        let mut start = Some(Vec::new());
        let mut events = response
            .bytes_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(ChunkError::Transport)?;
                let len = chunk.len() as u64;
                if counted.fetch_add(len, Ordering::Relaxed) + len > MAX_UNFINISHED_BYTES {
                    return Err(ChunkError::TooLarge);
                }
                let Some(mut held) = start.take() else {
                    return Ok(chunk);
                };
                held.extend_from_slice(&chunk);
                let mut rest = held.as_slice();
                while let Some(after) = rest.strip_prefix(BYTE_ORDER_MARK) {
                    rest = after;
                }
                if BYTE_ORDER_MARK.starts_with(rest) {
                    start = Some(rest.to_vec());
                    return Ok(Vec::new().into());
                }
                Ok(rest.to_vec().into())
            })
            .eventsource();
        // The very first connection (or one the server resets: its log was
        // restored, and what this guard holds must go) collects the whole
        // backlog before it replaces the set, so no request sees half of
        // it. Any other connection without a cursor (after a reset on a
        // live stream, a refused cursor, or an empty log) adds what it
        // reads to the set in force as it comes: adding cannot take back a
        // revocation, and a backlog older than the set, or read from an
        // instance a moment behind, must not. Either way its cursor is
        // published at `ready`, so a connection lost halfway reads the
        // backlog again instead of resuming past events never applied.
        let mut staging = (last_id == 0 && !self.ever_ready).then(RevocationSet::new);
        let mut hold_cursor = last_id == 0;
        let mut staged_id = 0u64;
        let mut staged_digest = String::new();
        let mut ready = false;
        let mut pruned = Instant::now();
        loop {
            let next = self.next_event(&mut events, ready).await;
            let event = match next {
                Err(_) => return Err(fail(&"no event or heartbeat within the idle timeout")),
                Ok(None) if ready => return Ok(Ended::AfterReady),
                Ok(None) => return Err(fail(&"the stream ended before ready")),
                Ok(Some(Err(e))) => return Err(fail(&e)),
                Ok(Some(Ok(event))) => event,
            };
            pending.store(0, Ordering::Relaxed);
            match event.event.as_str() {
                "ready" => {
                    let now = self.steady.now();
                    match staging.take() {
                        Some(fresh) => self.shared.change(|set| {
                            *set = fresh;
                            set.prune(now);
                        }),
                        None => self.shared.change(|set| set.prune(now)),
                    }
                    if hold_cursor {
                        // The backlog's cursor, even 0 (an empty log):
                        // published once all of it is in force.
                        self.shared
                            .set_cursor(staged_id, std::mem::take(&mut staged_digest));
                        hold_cursor = false;
                    }
                    self.reread = false;
                    self.ever_ready = true;
                    pruned = Instant::now();
                    ready = true;
                    self.ready_at = Some(tokio::time::Instant::now());
                    if self.failing || self.reported_stale {
                        tracing::info!(issuer = %self.builder.issuer, "revocation feed current again");
                        self.failing = false;
                        self.reported_stale = false;
                    }
                }
                // A reset on a live stream: its backlog would be staged
                // while the set in force stopped taking new events, and
                // heartbeats went on calling it current. Read the log
                // again instead, added to the set in force.
                "reset" if ready => {
                    self.reread = true;
                    return Err(fail(&"reset after ready: reading the log again"));
                }
                // The server's word that the cursor sent is no place in
                // its log (restored from a backup): what this guard holds
                // goes, replaced by the backlog at `ready`. Without a
                // cursor sent there was nothing to reset (a proxy's
                // replay): the reading goes on from the start, adding.
                "reset" if last_id > 0 => {
                    staging = Some(RevocationSet::new());
                    hold_cursor = true;
                    staged_id = 0;
                    staged_digest.clear();
                }
                "reset" => {
                    staged_id = 0;
                    staged_digest.clear();
                }
                "revocation" => {
                    // A cursor the server could not take back (its ids
                    // are signed 64-bit) would wedge every reconnection:
                    // such an event is skipped, the cursor left where it
                    // was.
                    let Some(id) = event
                        .id
                        .parse::<u64>()
                        .ok()
                        .filter(|id| i64::try_from(*id).is_ok())
                    else {
                        let reason = format!("event id {:?} is not a number within i64", event.id);
                        if self.builder.policy == WhenUnreachable::Refuse {
                            return Err(fail(&reason));
                        }
                        self.unreadable(&reason);
                        if ready {
                            self.shared.current();
                        }
                        continue;
                    };
                    match parse_event(&event.data) {
                        // Past its time it refuses nothing: not held.
                        Ok(Some(revocation)) if revocation.until() <= self.steady.now() => {}
                        Ok(Some(revocation)) => {
                            // Only an entry the set does not hold counts
                            // against the bound: an event merging into one
                            // is no reason to stop.
                            let full = |set: &RevocationSet| {
                                set.would_grow(&revocation)
                                    && set.len() >= self.builder.max_revocations
                            };
                            // Full: what has expired goes first (a burst
                            // of revocations ends with its tokens' lives;
                            // a guard stopped at the bound would otherwise
                            // stay stopped, the same event coming back at
                            // every reconnection).
                            let now = self.steady.now();
                            let refused = match staging.as_mut() {
                                Some(set) => {
                                    if full(set) {
                                        set.prune(now);
                                    }
                                    full(set)
                                }
                                None => {
                                    if full(&self.shared.read()) {
                                        self.shared.change(|set| set.prune(now));
                                    }
                                    full(&self.shared.read())
                                }
                            };
                            if refused {
                                return Err(fail(&format!(
                                    "more than {} revocations: not read on (max_revocations)",
                                    self.builder.max_revocations
                                )));
                            }
                            match staging.as_mut() {
                                Some(set) => set.insert(&revocation),
                                None => self.shared.change(|set| set.insert(&revocation)),
                            }
                        }
                        Ok(None) => {}
                        // Read again at every reconnection, it would fail
                        // the same way: it is skipped, and what comes
                        // after it is applied. Under `Refuse` a
                        // revocation not applied must not let its token
                        // through: the feed fails there, and past the
                        // bound every token is refused, as for a feed
                        // that cannot be reached.
                        Err(e) if self.builder.policy == WhenUnreachable::Refuse => {
                            return Err(fail(&format!("event {id}: {e}")))
                        }
                        Err(e) => self.unreadable(&format!("event {id}: {e}")),
                    }
                    let digest = event_digest(&event.data);
                    if hold_cursor {
                        staged_id = id;
                        staged_digest = digest;
                    } else {
                        self.shared.set_cursor(id, digest);
                    }
                }
                // Heartbeats, and events for newer subscribers.
                _ => {}
            }
            if ready {
                // Any event on a live stream shows the set is current.
                self.shared.current();
                if pruned.elapsed() > Duration::from_secs(60) {
                    let now = self.steady.now();
                    self.shared.change(|set| set.prune(now));
                    pruned = Instant::now();
                }
            }
        }
    }

    /// Skip an event this guard cannot read, loudly: the revocation in it
    /// is not applied.
    fn unreadable(&self, reason: &str) {
        self.shared.unreadable.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            issuer = %self.builder.issuer,
            reason,
            "revocation event skipped: this guard cannot read it, so what it revokes is not refused"
        );
    }

    /// The stream's next event, within the idle timeout. A live stream
    /// silent past the bound is not current any more, though it may yet
    /// speak before the idle timeout gives it up: what decides trust is
    /// the last sign of life, not whether a connection is open.
    async fn next_event<S: futures_util::Stream + Unpin>(
        &self,
        events: &mut S,
        ready: bool,
    ) -> Result<Option<S::Item>, tokio::time::error::Elapsed> {
        let idle = self.builder.idle_timeout;
        // Silent between heartbeats is healthy: not stale before half a
        // heartbeat more has passed without one.
        let heartbeat = self.builder.heartbeat;
        let bound = self
            .builder
            .bound
            .max(heartbeat.saturating_add(heartbeat / 2));
        if !ready || bound >= idle {
            return tokio::time::timeout(idle, events.next()).await;
        }
        match tokio::time::timeout(bound, events.next()).await {
            Ok(next) => Ok(next),
            Err(_) => {
                self.shared.lost();
                tokio::time::timeout(idle.saturating_sub(bound), events.next()).await
            }
        }
    }

    async fn discover(&self) -> Result<(String, String), FetchError> {
        let (url, metadata) =
            discovery::metadata(&self.short, &self.builder.issuer, 512 * 1024).await?;
        let member = |name: &str| discovery::endpoint(&metadata, &url, name);
        let token = member("token_endpoint")?;
        let feed = match &self.builder.endpoint {
            Some(feed) => feed.clone(),
            None => member(FEED_METADATA)?,
        };
        Ok((token, feed))
    }

    /// A token for the feed, from the cache or the token endpoint.
    async fn token(&mut self, endpoint: &str) -> Result<Zeroizing<String>, FetchError> {
        if let Some((token, renew_at)) = &self.token {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let fail = |e: &dyn std::fmt::Display| FetchError(format!("{endpoint}: {e}"));
        // RFC 6749 §2.3.1: the id and secret are form-encoded inside Basic.
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", FEED_SCOPE)
            .finish();
        let response = self
            .short
            .post(endpoint)?
            .basic_auth(
                encode(&self.builder.client_id),
                Some(encode(&self.builder.client_secret)),
            )
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| fail(&e))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(fail(&format!(
                "the feed's client was refused a token ({})",
                response.status()
            )));
        }
        let body = discovery::bounded_body(response, endpoint, 64 * 1024).await?;
        let answer: TokenResponse = serde_json::from_slice(&body).map_err(|e| fail(&e))?;
        // Renewed a little before it expires; the server also ends the
        // stream when the token it was opened with expires.
        let life = Duration::from_secs(answer.expires_in.unwrap_or(300)).min(MAX_TOKEN_LIFE);
        let renew_at = Instant::now() + life.saturating_sub(life / 10);
        self.token = Some((answer.access_token.clone(), renew_at));
        Ok(answer.access_token)
    }
}
