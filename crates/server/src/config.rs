//! Configuration: defaults, then a TOML file, then `TESSERA_*` environment
//! variables and flags (the command line hands both over as [`Overrides`]).
//!
//! ```toml
//! issuer = "https://auth.example.com"
//! listen = "0.0.0.0:8080"
//! data_dir = "/var/lib/tessera"
//! database_url = "postgres://tessera@db/tessera"
//! master_key_file = "/run/secrets/tessera-master-key"
//! client_cache_ttl = "10s"  # a client is reused this long, or until the revocation
//!                           # log says it was deleted or its secret rotated
//! max_connections = 16      # database connections kept open (PostgreSQL; SQLite: readers)
//!
//! [tokens]
//! access_ttl = "15m"        # default for clients that set none
//! max_access_ttl = "1h"     # the longest any client may ask for
//! refresh_ttl = "14d"       # one refresh token, unused
//! session_max = "90d"       # a whole family of refresh tokens
//! refresh_grace = "0s"      # retries of a rotated refresh token
//! max_assertion_lifetime = "1h"  # private_key_jwt and jwt-bearer assertions
//! strict_assertion_audience = false  # true: their aud is the issuer alone, one string
//! client_revocations = 600  # access tokens revoked per minute per client and subject, then 503
//! refreshes_per_minute = 120  # refresh tokens rotated per minute per client and subject (0: no limit), then 429
//!
//! [keys]
//! algorithm = "ES256"       # access tokens
//! id_token_algorithms = ["RS256"]  # ID tokens: RS256 (OpenID Connect Core §15.1) and any others
//! rotate_every = "30d"      # "0s": only by hand (`tessera keys rotate`)
//! announce = "1h"           # published this long before it signs
//! jwks_max_age = "5m"       # Cache-Control of the JWKS
//!
//! [logins]
//! max_failures = 5          # per username and per client address …
//! window = "5m"             # … in this window, then 429
//! queue = 80                # password checks waiting at most (default 40 per core), then 503
//!
//! [sessions]
//! idle = "12h"              # a sign-in session ends unused this long …
//! absolute = "7d"           # … and this long after the login in any case
//! codes_per_minute = 120    # authorization codes per user, all sessions (0: no limit), then temporarily_unavailable
//!
//! [pages]
//! product_name = "Example Corp"   # shown on the sign-in pages
//! lang = "en"                 # <html lang> of your own templates (built-in pages stay "en")
//! accent = "#1d4ed8"        # buttons and links (#rgb or #rrggbb)
//! logo = "/etc/tessera/logo.svg"  # served at /assets/logo (SVG or PNG, at most 1 MiB)
//! templates = "/etc/tessera/templates"  # your own login.html, consent.html, …
//!
//! [pages.scopes]           # how the consent page words a scope (a title, an optional detail)
//! "items:read" = { title = "See your shop's items", detail = "Names, prices and stock" }
//!
//! [audit]
//! retain = "90d"            # events older are pruned ("0s": kept for ever)
//! token_issued = true       # false: no event per issued access token
//!
//! [http]
//! header_timeout = "30s"    # headers of each request; also the keep-alive idle timeout (100ms to 1d)
//! request_timeout = "30s"   # a whole request, body included, then 408 (503 if the body was all in; 100ms to 1d)
//! shutdown_delay = "0s"     # after SIGTERM, /readyz says 503 and requests are still served this long (at most 1h)
//! max_connections = 4000    # default: the file-descriptor limit less headroom
//! trusted_proxies = ["10.0.0.0/8"]  # load balancers whose X-Forwarded-For is believed
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_jose::Algorithm;
use zeroize::Zeroizing;

use crate::keys::KeyPolicy;
use crate::secret::MasterKeySource;
use crate::Error;

/// Settings given on the command line or in the environment; they win over
/// the file. `Debug` never shows the master key.
#[derive(Clone, Default)]
pub struct Overrides {
    /// `--config` / `TESSERA_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--data-dir` / `TESSERA_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen` / `TESSERA_LISTEN`.
    pub listen: Option<String>,
    /// `--database-url` / `TESSERA_DATABASE_URL`.
    pub database_url: Option<DatabaseUrl>,
    /// `--issuer` / `TESSERA_ISSUER`.
    pub issuer: Option<String>,
    /// `TESSERA_MASTER_KEY`: the master key itself (base64url).
    pub master_key: Option<Zeroizing<String>>,
    /// `TESSERA_MASTER_KEY_FILE`.
    pub master_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("config", &self.config)
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("issuer", &self.issuer)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("master_key_file", &self.master_key_file)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    issuer: Option<String>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<DatabaseUrl>,
    master_key_file: Option<PathBuf>,
    max_connections: Option<u32>,
    client_cache_ttl: Option<String>,
    #[serde(default)]
    tokens: TokensFile,
    #[serde(default)]
    keys: KeysFile,
    #[serde(default)]
    logins: LoginsFile,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    audit: AuditFile,
    #[serde(default)]
    sessions: SessionsFile,
    #[serde(default)]
    pages: PagesFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsFile {
    idle: Option<String>,
    absolute: Option<String>,
    codes_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PagesFile {
    product_name: Option<String>,
    lang: Option<String>,
    accent: Option<String>,
    logo: Option<PathBuf>,
    templates: Option<PathBuf>,
    #[serde(default)]
    scopes: std::collections::BTreeMap<String, ScopeWordsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeWordsFile {
    title: String,
    detail: Option<String>,
}

/// How the consent page words a scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeWords {
    /// What the person allows, as a short line ("See your orders").
    pub title: String,
    /// A second, smaller line (empty: none).
    pub detail: String,
}

/// The longest `title` or `detail` of a scope's wording, in characters:
/// a line on a phone's consent page, not a paragraph.
const MAX_SCOPE_WORDS: usize = 200;

/// How the sign-in pages look: the operator's name, colour, logo and
/// templates.
#[derive(Clone, Debug, Default)]
pub struct Pages {
    /// The name shown on the pages.
    pub product_name: String,
    /// The language of the operator's templates (`<html lang>` of the
    /// pages they replace, a BCP 47 tag; built-in pages stay `en`).
    pub lang: String,
    /// The accent colour (validated as a CSS hex colour).
    pub accent: String,
    /// A logo file (SVG or PNG), served at `/assets/logo`.
    pub logo: Option<PathBuf>,
    /// A directory of templates that replace the built-in ones by name.
    pub templates: Option<PathBuf>,
    /// The operator's wording of scopes on the consent page, by scope
    /// (the built-in wording of `openid`, `profile`, `email` and
    /// `offline_access` included, which it replaces).
    pub scopes: std::collections::BTreeMap<String, ScopeWords>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    retain: Option<String>,
    token_issued: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    header_timeout: Option<String>,
    request_timeout: Option<String>,
    shutdown_delay: Option<String>,
    max_connections: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    access_ttl: Option<String>,
    max_access_ttl: Option<String>,
    refresh_ttl: Option<String>,
    session_max: Option<String>,
    refresh_grace: Option<String>,
    max_assertion_lifetime: Option<String>,
    strict_assertion_audience: Option<bool>,
    client_revocations: Option<u32>,
    refreshes_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    algorithm: Option<String>,
    id_token_algorithms: Option<Vec<String>>,
    rotate_every: Option<String>,
    announce: Option<String>,
    jwks_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginsFile {
    max_failures: Option<u32>,
    window: Option<String>,
    queue: Option<usize>,
}

/// A database URL, which may hold a password: its `Debug` output shows
/// the password as `***`. The URL itself is [`DatabaseUrl::as_str`] (or
/// the `str` it dereferences to).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL, password included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the URL holds a password: in its user part
    /// (`postgres://user:pw@host/db`) or its query (`?password=`,
    /// `?sslpassword=`). Text that is not a URL holds one when it names
    /// one (`host=db password=…`, libpq's other form).
    pub fn holds_password(&self) -> bool {
        let Ok(url) = url::Url::parse(&self.0) else {
            return self.0.to_ascii_lowercase().contains("password");
        };
        url.password().is_some()
            || url
                .query_pairs()
                .any(|(k, _)| crate::db::names_a_password(&k))
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> DatabaseUrl {
        DatabaseUrl(url)
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::db::redact_url(&self.0))
    }
}
/// The most database connections a pool may hold: each is allocated up
/// front (its slot, and on PostgreSQL a connection opened at start), so
/// a typo of a few digits cost gigabytes before.
pub const MOST_DATABASE_CONNECTIONS: u32 = 10_000;

/// The most HTTP connections the listener may hold open at once (tokio's
/// semaphore refuses more than it can count, with a panic at start).
pub const MOST_HTTP_CONNECTIONS: usize = 1_000_000;

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `iss` of every token, and the base of the endpoint URLs.
    pub issuer: String,
    /// Whether `issuer` was derived from `listen` (nobody set it).
    issuer_from_listen: bool,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where SQLite and the master key file live by default.
    pub data_dir: PathBuf,
    /// The database.
    pub database_url: DatabaseUrl,
    /// Database pool size (at most [`MOST_DATABASE_CONNECTIONS`]).
    pub max_connections: u32,
    /// The master key.
    pub master_key: MasterKeySource,
    /// Default access-token lifetime.
    pub access_ttl: Duration,
    /// Longest access-token lifetime.
    pub max_access_ttl: Duration,
    /// Lifetime of one refresh token.
    pub refresh_ttl: Duration,
    /// Lifetime of a refresh-token family.
    pub session_max: Duration,
    /// Retry window of a rotated refresh token.
    pub refresh_grace: Duration,
    /// The longest lifetime a client assertion (`private_key_jwt`, the
    /// jwt-bearer grant) may claim.
    pub max_assertion_lifetime: Duration,
    /// Whether a client assertion's `aud` must be this server's issuer
    /// alone, as one string (draft-ietf-oauth-rfc7523bis, FAPI 2.0),
    /// rather than the issuer or the token endpoint's URL (RFC 7523 §3).
    pub strict_assertion_audience: bool,
    /// Access tokens one client may revoke per minute for one subject
    /// (0: no limit).
    pub client_revocations: u32,
    /// Refresh tokens one client may rotate per minute for one subject
    /// (0: no limit).
    pub refreshes_per_minute: u32,
    /// Authorization codes (and refusals) one user may be issued per
    /// minute, across their sessions (0: no limit).
    pub codes_per_user: u32,
    /// Signing keys, and how long verifiers may cache them.
    pub keys: KeyPolicy,
    /// Failed logins allowed per username and per address in `login_window`.
    pub max_login_failures: u32,
    /// The window of `max_login_failures`.
    pub login_window: Duration,
    /// Password checks that may wait for a hasher (`None`: 40 per core).
    pub login_queue: Option<usize>,
    /// How long a client read from the database is reused.
    pub client_cache_ttl: Duration,
    /// How long audit events are kept (`None`: for ever).
    pub audit_retain: Option<Duration>,
    /// Whether each issued access token is an audit event.
    pub audit_token_issued: bool,
    /// Header and request timeouts of the listener.
    pub header_timeout: Duration,
    /// A whole request's time, body included.
    pub request_timeout: Duration,
    /// How long, once told to stop, the server goes on serving while
    /// `/readyz` says 503, so that load balancers stop sending before the
    /// listener closes.
    pub shutdown_delay: Duration,
    /// Connections open at once (`None`: under the file-descriptor
    /// limit; at most [`MOST_HTTP_CONNECTIONS`]).
    pub max_http_connections: Option<usize>,
    /// Proxies whose `X-Forwarded-For` names the client (none: the
    /// connection's peer is the client).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sign-in sessions.
    pub sessions: crate::store::sessions::SessionPolicy,
    /// The sign-in pages.
    pub pages: Pages,
}

/// What the listener waits at shutdown beyond the longest a request may
/// take, for its answer to be written.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// The settings used as durations as they are: every other one is counted
/// in whole seconds.
const SUB_SECOND_ALLOWED: [&str; 3] = [
    "client_cache_ttl",
    "http.header_timeout",
    "http.request_timeout",
];

/// The duration `name`, or `default`. A duration under a second (but not
/// 0) is refused for a setting counted in whole seconds, where `500ms`
/// would be 0 (an access token dead on issue).
fn duration(name: &str, value: Option<&str>, default: Duration) -> Result<Duration, Error> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text)
        .map_err(|e| Error::Config(format!("{name} = {text:?}: {e}")))?;
    // What humantime takes goes up to 584 billion years; a clock's
    // instant plus that overflows, and the libraries that add a timeout
    // to now (hyper, tokio-io-timeout) panic in every connection.
    if d > LONGEST {
        return Err(Error::Config(format!(
            "{name} = {text:?}: must be at most {}",
            humantime::format_duration(LONGEST)
        )));
    }
    if !d.is_zero() && d < Duration::from_secs(1) && !SUB_SECOND_ALLOWED.contains(&name) {
        return Err(Error::Config(format!(
            "{name} = {text:?}: must be 0s or at least 1s (the server counts whole seconds)"
        )));
    }
    Ok(d)
}

/// The longest duration any setting takes (100 years of 365.25 days): far
/// past every sensible value.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// The longest an HTTP timeout may be: a connection held a day for its
/// headers is no longer a timeout.
const LONGEST_HTTP_TIMEOUT: Duration = Duration::from_secs(DAY);

/// The shortest an HTTP timeout may be: under it, a request's own round
/// trip on a slow network, or a body of any size, is cut, and the server
/// answers almost nothing but 408 (it took `1ms` without a word).
const SHORTEST_HTTP_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest `http.shutdown_delay`: load balancers notice a `/readyz`
/// 503 within seconds, and a SIGTERM that leaves the server serving for
/// days (a second one does nothing) is no shutdown.
const LONGEST_SHUTDOWN_DELAY: Duration = Duration::from_secs(3600);

fn at_most(d: Duration, most: Duration, name: &str) -> Result<Duration, Error> {
    if d > most {
        return Err(Error::Config(format!(
            "{name} must be at most {}",
            humantime::format_duration(most)
        )));
    }
    Ok(d)
}

fn at_least(d: Duration, least: Duration, name: &str) -> Result<Duration, Error> {
    if d < least {
        return Err(Error::Config(format!(
            "{name} must be at least {}",
            humantime::format_duration(least)
        )));
    }
    Ok(d)
}

fn positive(d: Duration, name: &str) -> Result<Duration, Error> {
    if d.is_zero() {
        return Err(Error::Config(format!("{name} must be more than 0")));
    }
    Ok(d)
}

const DAY: u64 = 24 * 3600;

impl Config {
    /// Resolve the configuration from defaults, the file named in
    /// `overrides` (if any) and `overrides`.
    pub fn resolve(overrides: Overrides) -> Result<Config, Error> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("tessera-data"));
        let listen_text = overrides
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|e| Error::Config(format!("listen = {listen_text:?}: {e}")))?;
        let explicit = overrides.issuer.or(file.issuer);
        let issuer_from_listen = explicit.is_none();
        // Kept exactly as written, a final `/` included: `iss` and the
        // metadata's `issuer` are compared as strings (RFC 8414 §3.3).
        let issuer = explicit.unwrap_or_else(|| issuer_for(listen));
        if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
            || issuer.contains(['?', '#'])
        {
            return Err(Error::Config(format!(
                "issuer {issuer:?} must be an http(s) URL without query or fragment (RFC 8414 §2)"
            )));
        }
        // The endpoints and the pages' links are at the root of the
        // issuer's origin: behind a path, the sign-in pages would send
        // people (and their pending requests) out of it.
        match url::Url::parse(&issuer) {
            Ok(url) if url.host_str().is_some() && url.path() == "/" => {}
            _ => {
                return Err(Error::Config(format!(
                    "issuer {issuer:?} must be an origin, with no path: the server's endpoints and pages are at its root (give it a host name or port of its own)"
                )))
            }
        }
        let database_url = overrides
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| {
                DatabaseUrl::from(format!(
                    "sqlite://{}",
                    data_dir.join("tessera.db").display()
                ))
            });
        let master_key = match (
            overrides.master_key,
            overrides.master_key_file,
            file.master_key_file,
        ) {
            (Some(value), _, _) => MasterKeySource::Value(value),
            (None, Some(path), _) | (None, None, Some(path)) => MasterKeySource::File(path),
            (None, None, None) => MasterKeySource::File(data_dir.join("master.key")),
        };
        let t = &file.tokens;
        let access_ttl = duration(
            "tokens.access_ttl",
            t.access_ttl.as_deref(),
            Duration::from_secs(15 * 60),
        )?;
        let max_access_ttl = duration(
            "tokens.max_access_ttl",
            t.max_access_ttl.as_deref(),
            Duration::from_secs(3600),
        )?;
        if access_ttl > max_access_ttl || access_ttl.is_zero() {
            return Err(Error::Config(
                "tokens.access_ttl must be more than 0 and at most tokens.max_access_ttl".into(),
            ));
        }
        let k = &file.keys;
        let algorithm: Algorithm = k
            .algorithm
            .as_deref()
            .unwrap_or("ES256")
            .parse()
            .map_err(|e| Error::Config(format!("keys.algorithm: {e}")))?;
        if algorithm.is_symmetric() {
            return Err(Error::Config(
                "keys.algorithm must be asymmetric: resource servers verify with the public JWKS"
                    .into(),
            ));
        }
        let id_token_algorithms = k
            .id_token_algorithms
            .clone()
            .unwrap_or_else(|| vec!["RS256".into()])
            .iter()
            .map(|a| {
                let alg: Algorithm = a
                    .parse()
                    .map_err(|e| Error::Config(format!("keys.id_token_algorithms: {e}")))?;
                if alg.is_symmetric() {
                    return Err(Error::Config(
                        "keys.id_token_algorithms must be asymmetric (clients verify with the JWKS)"
                            .into(),
                    ));
                }
                Ok(alg)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A client that registers no `id_token_signed_response_alg` gets
        // RS256 ID tokens (and logout tokens): without an RS256 key every
        // sign-in of such a client would fail after its code was spent.
        if !id_token_algorithms.contains(&Algorithm::RS256) {
            return Err(Error::Config(
                "keys.id_token_algorithms must include RS256: OpenID Connect Core §15.1 makes it \
                 the algorithm of every client that registers none"
                    .into(),
            ));
        }
        let sessions = crate::store::sessions::SessionPolicy {
            idle: crate::store::secs(at_least(
                duration(
                    "sessions.idle",
                    file.sessions.idle.as_deref(),
                    Duration::from_secs(12 * 3600),
                )?,
                // A session's use is recorded once a minute (every
                // quarter of the idle time when that is shorter): a far
                // shorter idle time would end sessions between two
                // clicks.
                Duration::from_secs(60),
                "sessions.idle",
            )?),
            absolute: crate::store::secs(positive(
                duration(
                    "sessions.absolute",
                    file.sessions.absolute.as_deref(),
                    Duration::from_secs(7 * DAY),
                )?,
                "sessions.absolute",
            )?),
        };
        let accent = file
            .pages
            .accent
            .clone()
            .unwrap_or_else(|| "#1d4ed8".into());
        if !(accent.len() == 7 || accent.len() == 4)
            || !accent.starts_with('#')
            || !accent[1..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::Config(format!(
                "pages.accent = {accent:?}: write a hex colour such as \"#1d4ed8\""
            )));
        }
        let lang = file.pages.lang.clone().unwrap_or_else(|| "en".into());
        let tag = (1..=35).contains(&lang.len())
            && lang.starts_with(|c: char| c.is_ascii_alphabetic())
            && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !tag {
            return Err(Error::Config(format!(
                "pages.lang = {lang:?}: write a language tag such as \"en\" or \"pt-BR\""
            )));
        }
        let mut scope_words = std::collections::BTreeMap::new();
        for (scope, words) in &file.pages.scopes {
            // One scope-token (RFC 6749 §3.3).
            if crate::store::Scopes::from_list(&[scope.as_str()]).is_err() {
                return Err(Error::Config(format!(
                    "pages.scopes: {scope:?} is not one scope (letters, digits and \
                     punctuation but \" and \\, no spaces)"
                )));
            }
            for (what, text) in [
                ("title", Some(&words.title)),
                ("detail", words.detail.as_ref()),
            ] {
                let Some(text) = text else { continue };
                let length = text.chars().count();
                if (what == "title" && text.trim().is_empty())
                    || length > MAX_SCOPE_WORDS
                    || text.chars().any(char::is_control)
                {
                    return Err(Error::Config(format!(
                        "pages.scopes.{scope:?}.{what}: one line of at most {MAX_SCOPE_WORDS} \
                         characters{}",
                        if what == "title" { ", not empty" } else { "" }
                    )));
                }
            }
            scope_words.insert(
                scope.clone(),
                ScopeWords {
                    title: words.title.trim().to_owned(),
                    detail: words.detail.as_deref().unwrap_or("").trim().to_owned(),
                },
            );
        }
        let pages = Pages {
            scopes: scope_words,
            product_name: file
                .pages
                .product_name
                .clone()
                .unwrap_or_else(|| "Tessera".into()),
            lang,
            accent,
            logo: file.pages.logo.clone(),
            templates: file.pages.templates.clone(),
        };
        let rotate_every = duration(
            "keys.rotate_every",
            k.rotate_every.as_deref(),
            Duration::from_secs(30 * DAY),
        )?;
        Ok(Config {
            issuer,
            issuer_from_listen,
            listen,
            max_connections: match file.max_connections {
                Some(n) if !(1..=MOST_DATABASE_CONNECTIONS).contains(&n) => {
                    return Err(Error::Config(format!(
                        "max_connections must be 1 to {MOST_DATABASE_CONNECTIONS}"
                    )))
                }
                n => n.unwrap_or(16),
            },
            database_url,
            master_key,
            access_ttl,
            max_access_ttl,
            // 0 would make every refresh token dead on issue.
            refresh_ttl: positive(
                duration(
                    "tokens.refresh_ttl",
                    t.refresh_ttl.as_deref(),
                    Duration::from_secs(14 * DAY),
                )?,
                "tokens.refresh_ttl",
            )?,
            session_max: positive(
                duration(
                    "tokens.session_max",
                    t.session_max.as_deref(),
                    Duration::from_secs(90 * DAY),
                )?,
                "tokens.session_max",
            )?,
            refresh_grace: duration(
                "tokens.refresh_grace",
                t.refresh_grace.as_deref(),
                Duration::ZERO,
            )?,
            // authlib's assertions live an hour by default; openid-client's
            // and most others' a minute or five.
            max_assertion_lifetime: positive(
                duration(
                    "tokens.max_assertion_lifetime",
                    t.max_assertion_lifetime.as_deref(),
                    Duration::from_secs(3600),
                )?,
                "tokens.max_assertion_lifetime",
            )?,
            // Off by default: authlib's PrivateKeyJWT and Spring Security
            // address their assertions to the token endpoint (server.md,
            // "Client authentication").
            strict_assertion_audience: t.strict_assertion_audience.unwrap_or(false),
            client_revocations: t.client_revocations.unwrap_or(600),
            refreshes_per_minute: t.refreshes_per_minute.unwrap_or(120),
            codes_per_user: file.sessions.codes_per_minute.unwrap_or(120),
            keys: KeyPolicy {
                algorithm,
                id_token_algorithms,
                rotate_every: (!rotate_every.is_zero()).then_some(rotate_every),
                announce: duration(
                    "keys.announce",
                    k.announce.as_deref(),
                    Duration::from_secs(3600),
                )?,
                jwks_max_age: duration(
                    "keys.jwks_max_age",
                    k.jwks_max_age.as_deref(),
                    Duration::from_secs(300),
                )?,
                max_access_ttl,
                kept_for_clients: Vec::new(),
                previous_algorithm: None,
            },
            max_login_failures: file.logins.max_failures.unwrap_or(5),
            // A window of 0 would count no failure: no limit at all.
            login_window: positive(
                duration(
                    "logins.window",
                    file.logins.window.as_deref(),
                    Duration::from_secs(300),
                )?,
                "logins.window",
            )?,
            login_queue: file.logins.queue,
            audit_retain: Some(duration(
                "audit.retain",
                file.audit.retain.as_deref(),
                Duration::from_secs(90 * DAY),
            )?)
            .filter(|d| !d.is_zero()),
            audit_token_issued: file.audit.token_issued.unwrap_or(true),
            client_cache_ttl: duration(
                "client_cache_ttl",
                file.client_cache_ttl.as_deref(),
                Duration::from_secs(10),
            )?,
            header_timeout: at_most(
                at_least(
                    duration(
                        "http.header_timeout",
                        file.http.header_timeout.as_deref(),
                        Duration::from_secs(30),
                    )?,
                    SHORTEST_HTTP_TIMEOUT,
                    "http.header_timeout",
                )?,
                LONGEST_HTTP_TIMEOUT,
                "http.header_timeout",
            )?,
            request_timeout: at_most(
                at_least(
                    duration(
                        "http.request_timeout",
                        file.http.request_timeout.as_deref(),
                        Duration::from_secs(30),
                    )?,
                    SHORTEST_HTTP_TIMEOUT,
                    "http.request_timeout",
                )?,
                LONGEST_HTTP_TIMEOUT,
                "http.request_timeout",
            )?,
            shutdown_delay: at_most(
                duration(
                    "http.shutdown_delay",
                    file.http.shutdown_delay.as_deref(),
                    Duration::ZERO,
                )?,
                LONGEST_SHUTDOWN_DELAY,
                "http.shutdown_delay",
            )?,
            max_http_connections: match file.http.max_connections {
                Some(n) if !(1..=MOST_HTTP_CONNECTIONS).contains(&n) => {
                    return Err(Error::Config(format!(
                        "http.max_connections must be 1 to {MOST_HTTP_CONNECTIONS}"
                    )))
                }
                n => n,
            },
            trusted_proxies: file
                .http
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|text| network(text))
                .collect::<Result<_, _>>()?,
            sessions,
            pages,
            data_dir,
        })
    }

    /// Create the data directory (mode 0700) when the configuration uses it.
    pub fn prepare_data_dir(&self) -> Result<(), Error> {
        let uses_dir = self.database_url.starts_with("sqlite:")
            || matches!(&self.master_key, MasterKeySource::File(p) if p.starts_with(&self.data_dir));
        if !uses_dir || self.data_dir.is_dir() {
            return Ok(());
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.data_dir)
            .map_err(|e| Error::io(&self.data_dir, e))
    }

    /// Record the address the listener really got (port 0 picks one); a
    /// default issuer follows it.
    pub fn bound_to(&mut self, address: SocketAddr) {
        self.listen = address;
        if self.issuer_from_listen {
            self.issuer = issuer_for(address);
        }
    }

    /// Take `recorded`, the issuer the server last started as, when no
    /// issuer was set here (an admin command run without the server's
    /// configuration): what it registers is then checked by the server's
    /// rules, not by those of the default issuer on plain http. Whether
    /// this configuration's issuer is now `recorded`; `false` when one
    /// set here names another.
    pub fn adopt_issuer(&mut self, recorded: &str) -> bool {
        if self.issuer_from_listen {
            self.issuer = recorded.to_owned();
            self.issuer_from_listen = false;
        }
        self.issuer == recorded
    }

    /// The key settings a server started with this configuration
    /// records for the admin commands ([`crate::store::key_settings`]).
    pub fn key_settings(&self) -> crate::store::key_settings::KeySettings {
        crate::store::key_settings::KeySettings {
            algorithm: self.keys.algorithm,
            id_token_algorithms: self.keys.id_token_algorithms.clone(),
            announce: self.keys.announce,
            jwks_max_age: self.keys.jwks_max_age,
            max_access_ttl: self.max_access_ttl,
        }
    }

    /// Take `recorded`, the key settings the server last started with:
    /// an admin command acts on the server's keys as the server does,
    /// whatever this configuration says. What this configuration said
    /// otherwise, one setting a line (`keys.announce = "1h"`), for a
    /// warning.
    pub fn adopt_key_settings(
        &mut self,
        recorded: &crate::store::key_settings::KeySettings,
    ) -> Vec<String> {
        // Each setting as the configuration file writes it.
        let shown = |k: &crate::store::key_settings::KeySettings| {
            let algorithms: Vec<String> = k
                .id_token_algorithms
                .iter()
                .map(|a| format!("{:?}", a.as_str()))
                .collect();
            let duration = |d: Duration| format!("{:?}", humantime::format_duration(d).to_string());
            [
                ("keys.algorithm", format!("{:?}", k.algorithm.as_str())),
                (
                    "keys.id_token_algorithms",
                    format!("[{}]", algorithms.join(", ")),
                ),
                ("keys.announce", duration(k.announce)),
                ("keys.jwks_max_age", duration(k.jwks_max_age)),
                ("tokens.max_access_ttl", duration(k.max_access_ttl)),
            ]
        };
        let differs = shown(&self.key_settings())
            .into_iter()
            .zip(shown(recorded))
            .filter(|((_, here), (_, there))| here != there)
            .map(|((name, here), _)| format!("{name} = {here}"))
            .collect();
        self.max_access_ttl = recorded.max_access_ttl;
        self.keys.max_access_ttl = recorded.max_access_ttl;
        self.keys.algorithm = recorded.algorithm;
        self.keys.id_token_algorithms = recorded.id_token_algorithms.clone();
        self.keys.announce = recorded.announce;
        self.keys.jwks_max_age = recorded.jwks_max_age;
        differs
    }

    /// Whether the issuer was derived from a listen address on every
    /// interface (`0.0.0.0`, `[::]`): it then names this host's loopback
    /// address, which clients on other hosts cannot use (`--issuer`).
    pub fn issuer_is_loopback_default(&self) -> bool {
        self.issuer_from_listen && self.listen.ip().is_unspecified()
    }

    /// The listener's limits: the configured ones, or defaults under this
    /// process's file-descriptor limit with room for the database pool
    /// (three descriptors a connection: SQLite's file, its log and its
    /// shared memory), PostgreSQL's listener, and the back-channel
    /// logouts under way at once.
    pub fn listen_limits(&self) -> tessera_listen::Limits {
        let pool = usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        let reserved = pool
            .saturating_mul(3)
            .saturating_add(1)
            .saturating_add(crate::signin::backchannel::MOST_AT_ONCE);
        let defaults = tessera_listen::Limits::for_this_process(reserved);
        tessera_listen::Limits {
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            send_timeout: self.request_timeout,
            // A request in flight when the listener closes has its whole
            // time to finish: one cut off after its change committed (a
            // refresh rotated) would leave its client without the answer.
            shutdown_grace: self.request_timeout.saturating_add(SHUTDOWN_MARGIN),
            max_connections: self
                .max_http_connections
                .unwrap_or(defaults.max_connections),
        }
    }

    /// How long revocation events of users, clients and sessions are
    /// kept: until every token they can refuse has expired, as far as this
    /// configuration knows. The log keeps them longer when an earlier start
    /// allowed longer tokens (`store::revocation::raise_longest_access_ttl`).
    pub fn revocation_keep(&self) -> crate::store::revocation::Keep {
        crate::store::revocation::Keep(
            crate::store::secs(self.max_access_ttl)
                .saturating_add(crate::store::revocation::MARGIN),
        )
    }

    /// Whether the server runs on plain http (development): cookies lose
    /// `Secure` and the `__Host-` prefix, loopback http redirect URIs are
    /// allowed for every client.
    pub fn on_http(&self) -> bool {
        self.issuer.starts_with("http://")
    }

    /// Whether the issuer is plain HTTP on a host other than this one
    /// (not `localhost` nor a loopback address): passwords, codes and
    /// tokens then cross the network in the clear, and the cookies lose
    /// `Secure` and the `__Host-` prefix. Said at every start.
    pub fn in_the_clear(&self) -> bool {
        let Some(url) = self
            .on_http()
            .then(|| url::Url::parse(&self.issuer).ok())
            .flatten()
        else {
            return false;
        };
        match url.host() {
            Some(url::Host::Domain(name)) => !name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
            None => false,
        }
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        self.endpoint("/.well-known/jwks.json")
    }

    /// The URL of this server's `path` (which starts with `/`): the
    /// issuer, without its final `/` if it has one, then the path.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}

fn read_file(path: &Path) -> Result<File, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // The message and where, not toml's rendering, which quotes the line:
    // a database URL put under the wrong table would show its password.
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| {
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" (line {line}, column {column})")
            })
            .unwrap_or_default();
        Error::Config(format!(
            "{}: {}{at}",
            path.display(),
            e.message().trim_end()
        ))
    })
}

/// The issuer nobody set: this server over plain HTTP at the address it
/// listens on, or, listening on every interface (`0.0.0.0`, `[::]`, which
/// is no address a client can be given), at the loopback address of the
/// same family and port, which the tokens' users on this host can reach
/// and `tessera-guard` accepts over plain HTTP.
fn issuer_for(listen: SocketAddr) -> String {
    let mut shown = listen;
    if listen.ip().is_unspecified() {
        shown.set_ip(match listen.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{shown}")
}

/// An address (`10.0.0.7`) or a network (`10.0.0.0/8`) of
/// `http.trusted_proxies`.
fn network(text: &str) -> Result<ipnet::IpNet, Error> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            Error::Config(format!(
                "http.trusted_proxies: {text:?} is neither an address nor a network"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_leaves_descriptors_for_the_pool_and_outgoing_logouts() {
        let c = Config::resolve(Overrides::default()).unwrap();
        // 16 connections of three descriptors, PostgreSQL's listener, 200
        // back-channel logouts at once.
        let room = tessera_listen::Limits::for_this_process(16 * 3 + 1 + 200);
        assert_eq!(c.listen_limits().max_connections, room.max_connections);
    }

    #[test]
    fn zero_configuration_has_working_defaults() {
        let c = Config::resolve(Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.database_url.as_str(), "sqlite://tessera-data/tessera.db");
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.keys.algorithm, Algorithm::ES256);
        assert_eq!(
            c.master_key,
            MasterKeySource::File(PathBuf::from("tessera-data/master.key"))
        );
    }

    #[test]
    fn a_plain_http_issuer_off_this_host_is_in_the_clear() {
        for (issuer, clear) in [
            ("http://auth.example.com", true),
            ("http://192.0.2.7:8080", true),
            ("http://[2001:db8::7]:8080", true),
            ("http://127.0.0.1:8080", false),
            ("http://127.0.0.2:8080", false),
            ("http://[::1]:8080", false),
            ("http://LocalHost:8080", false),
            ("https://auth.example.com", false),
        ] {
            let c = Config::resolve(Overrides {
                issuer: Some(issuer.into()),
                ..Overrides::default()
            })
            .unwrap();
            assert_eq!(c.in_the_clear(), clear, "{issuer}");
        }
        // The default issuer of a listener on another host's address.
        let c = Config::resolve(Overrides {
            listen: Some("192.0.2.7:8080".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert!(c.in_the_clear());
    }

    #[test]
    fn a_default_issuer_never_names_every_interface() {
        for (listen, issuer, warned) in [
            ("0.0.0.0:9000", "http://127.0.0.1:9000", true),
            ("[::]:9000", "http://[::1]:9000", true),
            ("192.0.2.7:9000", "http://192.0.2.7:9000", false),
            ("[2001:db8::7]:9000", "http://[2001:db8::7]:9000", false),
        ] {
            let mut c = Config::resolve(Overrides {
                listen: Some(listen.into()),
                ..Overrides::default()
            })
            .unwrap();
            assert_eq!(c.issuer, issuer, "{listen}");
            assert_eq!(c.issuer_is_loopback_default(), warned, "{listen}");
            // The port the listener really got replaces the configured one.
            let mut bound: SocketAddr = listen.parse().unwrap();
            bound.set_port(9001);
            c.bound_to(bound);
            assert_eq!(c.issuer, issuer.replace("9000", "9001"), "{listen}");
        }
        let set = Config::resolve(Overrides {
            listen: Some("0.0.0.0:9000".into()),
            issuer: Some("https://auth.example.com".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(set.issuer, "https://auth.example.com");
        assert!(!set.issuer_is_loopback_default());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(
            &path,
            "issuer = \"https://auth.example.com/\"\nlisten = \"0.0.0.0:9000\"\n\
             [tokens]\naccess_ttl = \"5m\"\n[keys]\nalgorithm = \"EdDSA\"\nrotate_every = \"0s\"\n",
        )
        .unwrap();
        let c = Config::resolve(Overrides {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:7000".into()),
            ..Overrides::default()
        })
        .unwrap();
        // The issuer as written, its final slash kept (RFC 8414 §3.3), and
        // endpoints joined without a double slash.
        assert_eq!(c.issuer, "https://auth.example.com/");
        assert_eq!(
            c.jwks_uri(),
            "https://auth.example.com/.well-known/jwks.json"
        );
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.access_ttl, Duration::from_secs(300));
        assert_eq!(c.keys.algorithm, Algorithm::EdDSA);
        assert_eq!(c.keys.rotate_every, None);
    }

    #[test]
    fn a_master_key_given_as_a_value_never_reaches_debug_output() {
        let key = "c2VjcmV0LW1hc3Rlci1rZXktb2YtMzItYnl0ZXMtLS0";
        let overrides = Overrides {
            master_key: Some(Zeroizing::new(key.to_owned())),
            ..Overrides::default()
        };
        let shown = format!("{overrides:?}");
        assert!(!shown.contains(key), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
        let c = Config::resolve(overrides).unwrap();
        assert!(matches!(c.master_key, MasterKeySource::Value(_)));
        let shown = format!("{c:?}");
        assert!(!shown.contains(key), "{shown}");
        assert!(shown.contains("Value([REDACTED])"), "{shown}");
        // A file's path is worth showing.
        let file = MasterKeySource::File("/run/secrets/tessera-master-key".into());
        assert!(format!("{file:?}").contains("/run/secrets/tessera-master-key"));
    }

    #[test]
    fn a_database_password_never_reaches_debug_output() {
        let c = Config::resolve(Overrides {
            database_url: Some(
                "postgres://tessera:s3cr%2Ft@db.internal:5432/tessera"
                    .to_owned()
                    .into(),
            ),
            ..Overrides::default()
        })
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(
            shown.contains("postgres://tessera:***@db.internal:5432/tessera"),
            "{shown}"
        );
        assert_eq!(
            &*c.database_url,
            "postgres://tessera:s3cr%2Ft@db.internal:5432/tessera"
        );
        for (url, shown) in [
            ("sqlite://data/tessera.db", "\"sqlite://data/tessera.db\""),
            ("postgres://db/tessera", "\"postgres://db/tessera\""),
            ("not a url: hunter2", "\"(not a URL)\""),
            (
                "postgres://tessera@db/tessera?password=hunter2&sslmode=require",
                "\"postgres://tessera@db/tessera?password=***&sslmode=require\"",
            ),
        ] {
            assert_eq!(format!("{:?}", DatabaseUrl::from(url.to_owned())), shown);
        }
    }

    /// The configuration a file of `text` gives, nothing else set.
    fn from_file(text: &str) -> Result<Config, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::resolve(Overrides {
            config: Some(path),
            ..Overrides::default()
        })
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let c = from_file(
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        let shown: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        // By default nobody is trusted.
        assert!(Config::resolve(Overrides::default())
            .unwrap()
            .trusted_proxies
            .is_empty());
    }

    #[test]
    fn durations_used_as_they_are_may_be_under_a_second() {
        let c = from_file("client_cache_ttl = \"500ms\"\n[http]\nheader_timeout = \"750ms\"\n")
            .unwrap();
        assert_eq!(c.client_cache_ttl, Duration::from_millis(500));
        assert_eq!(c.header_timeout, Duration::from_millis(750));
    }

    #[test]
    fn a_password_in_a_database_url_is_seen_in_any_case() {
        for url in [
            "postgres://u:pw@db/t",
            "postgres://u@db/t?password=pw",
            "postgres://u@db/t?Password=pw",
            "postgres://u@db/t?SSLPassword=pw",
            "host=db PASSWORD=pw",
        ] {
            assert!(DatabaseUrl::from(url.to_owned()).holds_password(), "{url}");
        }
        assert!(
            !DatabaseUrl::from("postgres://u@db/t?sslmode=require".to_owned()).holds_password()
        );
    }

    #[test]
    fn scopes_are_worded_as_the_configuration_says() {
        let c = from_file(
            "[pages.scopes]\n\"items:read\" = { title = \" See your items \", detail = \"Names and prices\" }\n\
             email = { title = \"Your e-mail\" }\n",
        )
        .unwrap();
        assert_eq!(
            c.pages.scopes["items:read"],
            ScopeWords {
                title: "See your items".into(),
                detail: "Names and prices".into()
            }
        );
        assert_eq!(c.pages.scopes["email"].detail, "");
        assert_eq!(c.pages.scopes.len(), 2);
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let cases = [
            ("unknown = 1\n", "unknown field"),
            ("[tokens]\naccess_ttl = \"soon\"\n", "tokens.access_ttl"),
            ("[tokens]\naccess_ttl = \"2h\"\n", "max_access_ttl"),
            ("[keys]\nalgorithm = \"HS256\"\n", "asymmetric"),
            ("[keys]\nalgorithm = \"none\"\n", "keys.algorithm"),
            ("issuer = \"auth.example.com\"\n", "http(s) URL"),
            ("issuer = \"https://example.com/auth\"\n", "no path"),
            ("issuer = \"https://example.com/auth/\"\n", "no path"),
            ("listen = \"localhost\"\n", "listen"),
            ("[http]\nheader_timeout = \"0s\"\n", "http.header_timeout"),
            ("[http]\nheader_timeout = \"2d\"\n", "at most 1day"),
            ("[http]\nrequest_timeout = \"2d\"\n", "http.request_timeout"),
            (
                "[http]\nheader_timeout = \"10000000000000000000s\"\n",
                "at most 100years",
            ),
            ("[tokens]\nrefresh_ttl = \"200y\"\n", "tokens.refresh_ttl"),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            (
                "[http]\ntrusted_proxies = [\"lb.internal\"]\n",
                "http.trusted_proxies",
            ),
            (
                "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
                "http.trusted_proxies",
            ),
            // A client that registers no algorithm gets RS256 ID tokens.
            (
                "[keys]\nid_token_algorithms = [\"ES256\"]\n",
                "must include RS256",
            ),
            ("[keys]\nid_token_algorithms = []\n", "must include RS256"),
            // Whole seconds: a token of 500 ms would expire as issued.
            ("[tokens]\naccess_ttl = \"500ms\"\n", "tokens.access_ttl"),
            ("[logins]\nwindow = \"0s\"\n", "logins.window"),
            // Every refresh token dead on issue.
            ("[tokens]\nrefresh_ttl = \"0s\"\n", "tokens.refresh_ttl"),
            ("[tokens]\nsession_max = \"0s\"\n", "tokens.session_max"),
            (
                "[http]\nrequest_timeout = \"1ms\"\n",
                "http.request_timeout",
            ),
            ("[http]\nheader_timeout = \"50ms\"\n", "http.header_timeout"),
            ("[http]\nheader_timeout = \"0s\"\n", "http.header_timeout"),
            ("[http]\nshutdown_delay = \"2h\"\n", "http.shutdown_delay"),
            (
                "[http]\nshutdown_delay = \"500ms\"\n",
                "http.shutdown_delay",
            ),
            ("max_connections = 0\n", "max_connections"),
            // Each allocated up front: a typo of a few digits cost
            // gigabytes; tokio's semaphore panicked past what it counts.
            (
                "max_connections = 4000000000\n",
                "max_connections must be 1 to",
            ),
            (
                "[http]\nmax_connections = 9223372036854775807\n",
                "http.max_connections",
            ),
            ("[sessions]\nidle = \"30s\"\n", "sessions.idle"),
            // Into `<html lang="…">`: a tag, nothing else.
            ("[pages]\nlang = \"en\\\" onload=\\\"x\"\n", "pages.lang"),
            ("[pages]\nlang = \"\"\n", "pages.lang"),
            // A scope's wording: one scope, one short line, no markup
            // worry (escaped when shown), no unknown keys.
            (
                "[pages.scopes]\n\"a b\" = { title = \"x\" }\n",
                "pages.scopes",
            ),
            ("[pages.scopes]\n\"a\" = { title = \" \" }\n", "not empty"),
            (
                "[pages.scopes]\n\"a\" = { title = \"one\\ntwo\" }\n",
                "one line",
            ),
            (
                "[pages.scopes]\n\"a\" = { title = \"x\", words = \"y\" }\n",
                "unknown field",
            ),
            // The error says where, without quoting the line: here a
            // password put under the wrong table.
            (
                "[tokens]\ndatabase_url = \"postgres://u:hunter2@db/t\"\n",
                "line 2",
            ),
        ];
        for (text, expected) in cases {
            let err = from_file(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
