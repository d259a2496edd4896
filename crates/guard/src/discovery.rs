//! Finding an issuer's metadata, and the HTTP client the guard fetches
//! with: shared by [`crate::RemoteJwks`] and [`crate::RevocationFeed`].

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value};

/// Why keys, metadata or a feed could not be had (or a setting that
/// names them is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

/// `issuer`'s metadata (RFC 8414 §3, then OpenID Connect Discovery, as
/// RFC 8414 §5 says), whose `issuer` must be `issuer` exactly (RFC 8414
/// §3.3: a trailing `/` counts), with the URL it came from.
pub(crate) async fn metadata(
    http: &Http,
    issuer: &str,
    max_bytes: usize,
) -> Result<(String, Map<String, Value>), FetchError> {
    let (oauth, openid) = metadata_urls(issuer)?;
    // Both asked at once, the RFC 8414 document preferred: one after the
    // other, an RFC 8414 path that hangs instead of answering 404 (a
    // firewall's tarpit) spent the whole budget, and issuers that publish
    // only OpenID Connect metadata were never found.
    let (first, second) = futures_util::future::join(
        metadata_at(http, &oauth, issuer, max_bytes),
        metadata_at(http, &openid, issuer, max_bytes),
    )
    .await;
    match (first, second) {
        // What the RFC 8414 document leaves out (`jwks_uri` is optional
        // there) is taken from the OpenID Connect one: the same issuer's,
        // checked the same way.
        (Ok(mut found), more) => {
            for (name, value) in more.into_iter().flatten() {
                found.entry(name).or_insert(value);
            }
            Ok((oauth, found))
        }
        (Err(_), Ok(found)) => Ok((openid, found)),
        (Err(first), Err(second)) => {
            Err(FetchError(format!("no usable metadata: {first}; {second}")))
        }
    }
}

/// The metadata at `url`, which must be `issuer`'s.
async fn metadata_at(
    http: &Http,
    url: &str,
    issuer: &str,
    max_bytes: usize,
) -> Result<Map<String, Value>, FetchError> {
    let (body, _) = get(http, url, max_bytes).await?;
    let metadata = members(&body).map_err(|e| FetchError(format!("{url}: {e}")))?;
    if metadata.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(FetchError(format!("{url}: issuer is not {issuer:?}")));
    }
    Ok(metadata)
}

/// The members of the JSON object `text`, each of which must appear once:
/// metadata naming `issuer` or `jwks_uri` twice is refused, as a key set
/// with a member twice is, rather than read as the last one (which
/// another reader of the same document might not).
fn members(text: &str) -> Result<Map<String, Value>, serde_json::Error> {
    struct Once(Map<String, Value>);
    impl<'de> serde::Deserialize<'de> for Once {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Once, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Once;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Once, A::Error> {
                    let mut members = Map::new();
                    while let Some((name, value)) = map.next_entry::<String, Value>()? {
                        if members.insert(name, value).is_some() {
                            return Err(serde::de::Error::custom("a member is given twice"));
                        }
                    }
                    Ok(Once(members))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_str::<Once>(text).map(|once| once.0)
}

/// GET `url` (if the transport may reach it): 200, at most `max_bytes`
/// of UTF-8, with the headers.
pub(crate) async fn get(
    http: &Http,
    url: &str,
    max_bytes: usize,
) -> Result<(String, http::HeaderMap), FetchError> {
    let fail = |e: &dyn std::fmt::Display| FetchError(format!("{url}: {e}"));
    let response = http.get(url)?.send().await.map_err(|e| fail(&e))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(fail(&response.status()));
    }
    let headers = response.headers().clone();
    let body = bounded_body(response, url, max_bytes).await?;
    let text = String::from_utf8(body).map_err(|e| fail(&e))?;
    Ok((text, headers))
}

/// The body of `response` (from `url`), if at most `max_bytes`.
pub(crate) async fn bounded_body(
    mut response: reqwest::Response,
    url: &str,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let fail = |e: &dyn std::fmt::Display| FetchError(format!("{url}: {e}"));
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(&e))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(fail(&format!("larger than {max_bytes} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Where `issuer`'s metadata may be: RFC 8414 §3.1 (the well-known path
/// inserted between the host and the issuer's path, whose final `/` is
/// dropped) and OpenID Connect Discovery §4 (appended to the issuer, its
/// final `/` dropped).
pub(crate) fn metadata_urls(issuer: &str) -> Result<(String, String), FetchError> {
    let bad = || FetchError(format!("issuer {issuer:?} is not an http(s) URL"));
    let rest = issuer
        .strip_prefix("https://")
        .map(|r| ("https://", r))
        .or_else(|| issuer.strip_prefix("http://").map(|r| ("http://", r)));
    let (scheme, rest) = rest.ok_or_else(bad)?;
    if rest.contains(['?', '#']) {
        return Err(bad());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad());
    }
    let path = path.trim_end_matches('/');
    Ok((
        format!("{scheme}{authority}/.well-known/oauth-authorization-server{path}"),
        format!("{scheme}{authority}{path}/.well-known/openid-configuration"),
    ))
}

/// How the guard reaches an issuer: which certificate authorities it
/// trusts (the webpki roots, Mozilla's, and any the caller adds for an
/// issuer behind a private CA) and whether it may speak plain HTTP to a
/// host other than this one. Keys and revocations fetched over plain HTTP
/// can be replaced by anyone on the path, who could then sign tokens the
/// guard accepts, and the revocation feed's client secret would cross
/// the network in the clear; so plain HTTP is for loopback addresses
/// (tests, a sidecar issuer) unless the caller allows it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Transport {
    extra_roots: Vec<CertificateDer<'static>>,
    plain_http: bool,
}

impl Transport {
    /// Also trust the certificate authorities in `pem`: one or more
    /// `CERTIFICATE` blocks and no block of another kind.
    pub(crate) fn add_roots(&mut self, pem: &[u8]) -> Result<(), FetchError> {
        let bad = |e: &dyn std::fmt::Display| FetchError(format!("root certificates: {e}"));
        let found = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if found.is_empty() {
            return Err(bad(&"no CERTIFICATE block in the PEM text"));
        }
        // Blocks of any other kind would be skipped without a word (a
        // `TRUSTED CERTIFICATE` OpenSSL wrote, a key pasted by mistake).
        // (Counted as the reader finds them: at the start of a line.)
        let blocks = pem
            .split(|&b| b == b'\n' || b == b'\r')
            .filter(|line| line.starts_with(b"-----BEGIN "))
            .count();
        if blocks != found.len() {
            return Err(bad(&format!(
                "{} of the {blocks} PEM blocks are not CERTIFICATE blocks",
                blocks - found.len().min(blocks)
            )));
        }
        let mut store = rustls::RootCertStore::empty();
        for cert in &found {
            store.add(cert.clone()).map_err(|e| bad(&e))?;
        }
        self.extra_roots.extend(found);
        Ok(())
    }

    /// Allow plain HTTP to any host, not only to loopback addresses.
    pub(crate) fn allow_plain_http(&mut self) {
        self.plain_http = true;
    }

    /// A client whose every request, answer and redirect included, takes
    /// at most `timeout`.
    pub(crate) fn client(&self, timeout: Duration) -> Result<Http, FetchError> {
        self.http(self.builder()?.timeout(timeout))
    }

    /// A client for long responses (a feed): only connecting is bounded
    /// in time; the reader bounds the gaps between events itself.
    pub(crate) fn streaming_client(&self, connect: Duration) -> Result<Http, FetchError> {
        self.http(self.builder()?.connect_timeout(connect))
    }

    fn http(&self, builder: reqwest::ClientBuilder) -> Result<Http, FetchError> {
        Ok(Http {
            client: builder
                .build()
                .map_err(|e| FetchError(format!("HTTP client: {e}")))?,
            plain_http: self.plain_http,
        })
    }

    /// rustls with the aws-lc-rs provider (the crypto library of the rest
    /// of Tessera), the roots above, and the redirect rules below.
    fn builder(&self) -> Result<reqwest::ClientBuilder, FetchError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| FetchError(format!("root certificates: {e}")))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let plain_http = self.plain_http;
        // Named: firewalls in front of issuers often refuse requests
        // without a User-Agent.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .user_agent(concat!("tessera-guard/", env!("CARGO_PKG_VERSION")));
        for proxy in environment_proxies() {
            builder = builder.proxy(proxy);
        }
        Ok(builder
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::custom(
                move |attempt| match redirect_refused(attempt.previous(), attempt.url(), plain_http)
                {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                },
            )))
    }
}

/// The proxies the environment names, as reqwest would use them
/// (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` for either, each also in
/// lower case, with `NO_PROXY`; none under CGI, where a request can set
/// `HTTP_PROXY`), except that loopback addresses are always reached
/// directly: plain HTTP allowed to this host must not travel the network
/// to a proxy.
///
/// For an application's own HTTP client under the rules of
/// [`check_transport`] (a relying party's token requests, say): build it
/// with `no_proxy()`, then add these. reqwest's own reading of the
/// environment sends loopback through the proxy unless `NO_PROXY` says
/// otherwise.
pub fn environment_proxies() -> Vec<reqwest::Proxy> {
    if std::env::var_os("REQUEST_METHOD").is_some() {
        return Vec::new();
    }
    proxies_from(|name| std::env::var(name).ok())
}

/// Always reached directly (`NO_PROXY` syntax).
const LOOPBACK: &str = "localhost,127.0.0.0/8,::1";

/// [`environment_proxies`] from the variables `var` gives.
fn proxies_from(var: impl Fn(&str) -> Option<String>) -> Vec<reqwest::Proxy> {
    let first = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| var(name).filter(|value| !value.trim().is_empty()))
    };
    let all = first(&["ALL_PROXY", "all_proxy"]);
    let https = first(&["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone());
    let http = first(&["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone());
    let direct = match first(&["NO_PROXY", "no_proxy"]) {
        // `*`: no proxy at all (hyper-util's matcher applies it to host
        // names only, and would still proxy an address like 10.0.0.5).
        Some(list) if list.split(',').any(|entry| entry.trim() == "*") => return Vec::new(),
        Some(list) => format!("{list},{LOOPBACK}"),
        None => LOOPBACK.to_owned(),
    };
    let with_scheme = |proxy: String| {
        if proxy.contains("://") {
            proxy
        } else {
            format!("http://{proxy}")
        }
    };
    let mut proxies = Vec::new();
    if let Some(Ok(proxy)) = https.map(|p| reqwest::Proxy::https(with_scheme(p))) {
        proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&direct)));
    }
    if let Some(Ok(proxy)) = http.map(|p| reqwest::Proxy::http(with_scheme(p))) {
        proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&direct)));
    }
    proxies
}

/// The URL that `metadata`, read from `at`, gives as `name`. Metadata
/// that came over TLS names only TLS endpoints: a plain-HTTP one, even
/// on this host, would carry keys, tokens or secrets in the clear.
pub(crate) fn endpoint(
    metadata: &Map<String, Value>,
    at: &str,
    name: &str,
) -> Result<String, FetchError> {
    let url = metadata
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| FetchError(format!("{at}: no {name}")))?;
    let scheme = |u: &str| reqwest::Url::parse(u).map(|u| u.scheme().to_owned());
    if scheme(at).is_ok_and(|s| s == "https") && !scheme(url).is_ok_and(|s| s == "https") {
        return Err(FetchError(format!(
            "{at}: its {name} {url:?} is not an https URL, as the metadata's is"
        )));
    }
    Ok(url.to_owned())
}

/// An HTTP client that sends requests only where its [`Transport`] may.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    plain_http: bool,
}

impl Http {
    /// A GET of `url`, if it may be reached.
    pub(crate) fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, FetchError> {
        Ok(self.client.get(self.checked(url)?))
    }

    /// A POST to `url`, if it may be reached.
    pub(crate) fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, FetchError> {
        Ok(self.client.post(self.checked(url)?))
    }

    pub(crate) fn checked(&self, url: &str) -> Result<reqwest::Url, FetchError> {
        checked_url(url, self.plain_http)
    }
}

/// Why `url` may not be fetched: a scheme other than `https` and `http`,
/// or plain HTTP to a host that is not a loopback address (unless
/// `plain_http` allows it).
fn plain_http_refused(url: &reqwest::Url, plain_http: bool) -> Option<&'static str> {
    match url.scheme() {
        "https" => None,
        "http" if plain_http || is_loopback(url) => None,
        "http" => Some(
            "plain HTTP to a host other than this one (keys, revocations and the feed's \
             secret could be read or replaced on the way): use https, or allow plain HTTP \
             explicitly (allow_plain_http)",
        ),
        _ => Some("not an http(s) URL"),
    }
}

/// Whether the guard would send to `url`: `https`, or plain `http` to
/// this host (`localhost`, 127.0.0.0/8, `::1`), or anywhere when
/// `allow_plain_http`. For an application beside the guard that sends
/// secrets or tokens to the same issuer and wants the same rule.
pub fn check_transport(url: &str, allow_plain_http: bool) -> Result<(), FetchError> {
    checked_url(url, allow_plain_http).map(drop)
}

/// `url` parsed, if [`check_transport`] allows it. A URL holding a user
/// name or password is refused: the guard names the URLs it fetches in
/// its logs and errors, where such credentials would be written (give
/// them another way, the feed's client secret for one).
fn checked_url(url: &str, allow_plain_http: bool) -> Result<reqwest::Url, FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError(format!("{url}: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FetchError(format!(
            "{}: a URL may not hold a user name or password (the guard writes the URLs it \
             fetches in its logs)",
            without_credentials(url)
        )));
    }
    match plain_http_refused(&parsed, allow_plain_http) {
        Some(why) => Err(FetchError(format!("{url}: {why}"))),
        None => Ok(parsed),
    }
}

/// `url` as it may be written in a log: a user name or password in it
/// replaced by `***`.
pub(crate) fn without_credentials(url: &str) -> std::borrow::Cow<'_, str> {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("***");
            parsed.to_string().into()
        }
        _ => url.into(),
    }
}

/// `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Why a redirect to `next` after `previous` (the URLs fetched so far) is
/// not followed: more than three, from https to anything else (keys
/// and revocations asked for over TLS never come over plain HTTP), or to
/// a URL that could not have been asked for directly.
fn redirect_refused(
    previous: &[reqwest::Url],
    next: &reqwest::Url,
    plain_http: bool,
) -> Option<&'static str> {
    if previous.len() > 3 {
        return Some("more than three redirects");
    }
    let from_tls = previous.iter().any(|url| url.scheme() == "https");
    if from_tls && next.scheme() != "https" {
        return Some("a redirect from https to plain http");
    }
    plain_http_refused(next, plain_http)
}

#[cfg(test)]
mod tests {
    use super::{
        checked_url, endpoint, members, metadata_urls, plain_http_refused, redirect_refused,
        without_credentials, Transport,
    };

    fn url(u: &str) -> reqwest::Url {
        reqwest::Url::parse(u).unwrap()
    }

    #[test]
    fn redirects_never_leave_tls_and_stop_after_three() {
        let tls = [url("https://auth.example.com/jwks")];
        assert_eq!(
            redirect_refused(&tls, &url("https://cdn.example.com/jwks"), false),
            None
        );
        for plain_http in [false, true] {
            assert!(
                redirect_refused(&tls, &url("http://cdn.example.com/jwks"), plain_http).is_some()
            );
            assert!(redirect_refused(&tls, &url("http://127.0.0.1/jwks"), plain_http).is_some());
        }
        // Plain HTTP on this host (a development issuer) may move within
        // it or up to TLS, and elsewhere only where plain HTTP is allowed.
        let plain = [url("http://127.0.0.1:8080/jwks")];
        assert_eq!(
            redirect_refused(&plain, &url("http://127.0.0.1:8081/jwks"), false),
            None
        );
        assert_eq!(
            redirect_refused(&plain, &url("https://auth.example.com/jwks"), false),
            None
        );
        assert!(redirect_refused(&plain, &url("http://auth.example.com/jwks"), false).is_some());
        assert_eq!(
            redirect_refused(&plain, &url("http://auth.example.com/jwks"), true),
            None
        );
        let four = [
            url("http://a/1"),
            url("http://a/2"),
            url("http://a/3"),
            url("http://a/4"),
        ];
        assert!(redirect_refused(&four, &url("http://a/5"), true).is_some());
        assert!(redirect_refused(&four[..3], &url("http://a/5"), true).is_none());
    }

    /// A URL with credentials in it is never fetched, and they are never
    /// repeated in what the guard says of it.
    #[test]
    fn urls_holding_credentials_are_refused_without_repeating_them() {
        for given in [
            "https://user:hunter2@auth.example.com/jwks",
            "https://hunter2@auth.example.com/jwks",
            "https://:hunter2@auth.example.com/jwks",
        ] {
            let err = checked_url(given, false).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("auth.example.com/jwks"), "{err}");
            assert!(!without_credentials(given).contains("hunter2"));
        }
        assert!(checked_url("https://auth.example.com/jwks", false).is_ok());
        assert_eq!(
            without_credentials("https://auth.example.com/jwks"),
            "https://auth.example.com/jwks"
        );
    }

    #[test]
    fn plain_http_only_to_this_host_unless_allowed() {
        for here in [
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost/x",
            "http://LOCALHOST:1/x",
            "http://[::1]:8080/x",
        ] {
            assert_eq!(plain_http_refused(&url(here), false), None, "{here}");
        }
        for away in [
            "http://auth.example.com/jwks",
            "http://10.0.0.7/jwks",
            "http://[::2]/x",
            "http://localhost.example.com/x",
            "http://127.0.0.1.nip.io/x",
        ] {
            assert!(plain_http_refused(&url(away), false).is_some(), "{away}");
            assert_eq!(plain_http_refused(&url(away), true), None, "{away}");
        }
        assert_eq!(
            plain_http_refused(&url("https://auth.example.com/"), false),
            None
        );
        for other in ["ftp://auth.example.com/jwks", "file:///etc/passwd"] {
            assert!(plain_http_refused(&url(other), true).is_some(), "{other}");
        }
        // The client refuses before any connection is made.
        let http = Transport::default()
            .client(std::time::Duration::from_secs(1))
            .unwrap();
        let refused = http.get("http://auth.example.com/jwks").unwrap_err();
        assert!(refused.0.contains("allow_plain_http"), "{refused}");
        assert!(http.post("http://10.1.2.3/token").is_err());
        assert!(http.get("not a url").is_err());
        assert!(http.get("http://127.0.0.1:1/jwks").is_ok());
    }

    /// A client with the proxies `vars` name, and a fake proxy (and a
    /// direct server) on this host that count the requests they get.
    #[tokio::test]
    async fn proxies_are_used_except_for_loopback_and_no_proxy() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn counting() -> (String, Arc<AtomicUsize>) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let count = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&count);
            tokio::spawn(async move {
                while let Ok((mut tcp, _)) = listener.accept().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 4096];
                    let _ = tcp.read(&mut buf).await;
                    let _ = tcp
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                }
            });
            (addr, count)
        }
        // The bare client below needs a process-wide TLS provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (proxy, via_proxy) = counting().await;
        let (direct, directly) = counting().await;
        let client = |vars: Vec<(&'static str, String)>| {
            let mut builder = reqwest::Client::builder().no_proxy();
            for p in super::proxies_from(|name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
            }) {
                builder = builder.proxy(p);
            }
            builder
                .timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap()
        };
        let get = |c: reqwest::Client, url: String| async move { c.get(url).send().await.is_ok() };
        // A proxy without a scheme, as often written.
        let c = client(vec![
            ("http_proxy", proxy.clone()),
            ("NO_PROXY", "internal.test".into()),
        ]);
        assert!(get(c.clone(), "http://auth.example.test/jwks".into()).await);
        assert_eq!(
            via_proxy.load(Ordering::SeqCst),
            1,
            "another host: through the proxy"
        );
        assert!(get(c.clone(), format!("http://{direct}/jwks")).await);
        assert_eq!(directly.load(Ordering::SeqCst), 1, "loopback: directly");
        assert!(!get(c.clone(), "http://jwks.internal.test/jwks".into()).await);
        assert_eq!(
            via_proxy.load(Ordering::SeqCst),
            1,
            "NO_PROXY: not through the proxy"
        );
        // NO_PROXY=* means no proxy, for addresses too.
        let c = client(vec![
            ("ALL_PROXY", proxy.clone()),
            ("no_proxy", " a.test, * ".into()),
        ]);
        // (Whatever answers there, if anything: only the count matters.)
        let _ = get(c, "http://10.255.255.1:9/jwks".into()).await;
        assert_eq!(
            via_proxy.load(Ordering::SeqCst),
            1,
            "NO_PROXY=*: never through it"
        );
        // ALL_PROXY stands for both; under no variable, none.
        let c = client(vec![("ALL_PROXY", format!("http://{proxy}"))]);
        assert!(get(c, "http://auth.example.test/jwks".into()).await);
        assert_eq!(via_proxy.load(Ordering::SeqCst), 2);
        let c = client(vec![]);
        assert!(!get(c, "http://auth.example.test/jwks".into()).await);
        assert_eq!(via_proxy.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn metadata_with_a_member_twice_is_refused() {
        let twice = r#"{"issuer":"https://a.example","jwks_uri":"https://a.example/k","issuer":"https://b.example"}"#;
        assert!(members(twice).is_err());
        let once = members(r#"{"issuer":"https://a.example","x":{"y":1}}"#).unwrap();
        assert_eq!(once["issuer"], "https://a.example");
        assert!(members("[1]").is_err(), "not an object");
    }

    #[test]
    fn metadata_over_tls_names_only_tls_endpoints() {
        let metadata: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"jwks_uri":"https://auth.example.com/jwks","token_endpoint":"http://127.0.0.1:9/token","x":"HTTPS://auth.example.com/x"}"#,
        )
        .unwrap();
        let at = "https://auth.example.com/.well-known/openid-configuration";
        assert_eq!(
            endpoint(&metadata, at, "jwks_uri").unwrap(),
            "https://auth.example.com/jwks"
        );
        assert!(endpoint(&metadata, at, "token_endpoint").is_err());
        assert!(endpoint(&metadata, at, "missing").is_err());
        assert!(
            endpoint(&metadata, at, "x").is_ok(),
            "schemes are case-insensitive"
        );
        // Metadata read over plain HTTP (this host) may name plain HTTP.
        let local = "http://127.0.0.1:8080/.well-known/openid-configuration";
        assert!(endpoint(&metadata, local, "token_endpoint").is_ok());
    }

    #[test]
    fn root_certificates_must_be_pem_certificates() {
        let mut transport = Transport::default();
        assert!(transport.add_roots(b"").is_err());
        assert!(transport
            .add_roots(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err());
        assert!(transport.extra_roots.is_empty());
        // A real certificate beside a block of another kind: refused whole.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().pem();
        let trusted = ca.replace("CERTIFICATE-----", "TRUSTED CERTIFICATE-----");
        for mixed in [
            format!("{ca}{trusted}"),
            format!("{ca}{}", key.serialize_pem()),
        ] {
            let err = transport.add_roots(mixed.as_bytes()).unwrap_err();
            assert!(err.0.contains("1 of the 2 PEM blocks"), "{err}");
        }
        assert!(transport.extra_roots.is_empty());
        transport
            .add_roots(format!("# -----BEGIN CERTIFICATE----- below\n{ca}\r\n{ca}").as_bytes())
            .unwrap();
        assert_eq!(transport.extra_roots.len(), 2);
    }

    #[test]
    fn metadata_is_looked_for_where_both_specifications_put_it() {
        let urls = |i: &str| metadata_urls(i).unwrap();
        assert_eq!(
            urls("https://auth.example.com"),
            (
                "https://auth.example.com/.well-known/oauth-authorization-server".into(),
                "https://auth.example.com/.well-known/openid-configuration".into()
            )
        );
        // Auth0-style: a trailing slash.
        assert_eq!(
            urls("https://tenant.auth0.com/"),
            (
                "https://tenant.auth0.com/.well-known/oauth-authorization-server".into(),
                "https://tenant.auth0.com/.well-known/openid-configuration".into()
            )
        );
        // Entra ID / Keycloak style: a path.
        assert_eq!(
            urls("https://login.example.com/tenant-id/v2.0"),
            (
                "https://login.example.com/.well-known/oauth-authorization-server/tenant-id/v2.0"
                    .into(),
                "https://login.example.com/tenant-id/v2.0/.well-known/openid-configuration".into()
            )
        );
        assert!(metadata_urls("auth.example.com").is_err());
        assert!(metadata_urls("https://").is_err());
        assert!(metadata_urls("https://a.example/?x").is_err());
    }
}
