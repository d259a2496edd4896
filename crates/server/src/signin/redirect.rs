//! Redirect URIs: what a client may register, and whether a requested one
//! matches (exactly, or a loopback URI on any port: RFC 8252 §7.3).

use url::{Host, Url};

use crate::Error;

/// Check a redirect (or post-logout redirect) URI at registration: an
/// absolute URI without a fragment (RFC 6749 §3.1.2); `https`, except
/// that a public client (a native or single-page app) may also use a
/// loopback `http` URI or a private-use scheme (`com.example.app:/cb`,
/// RFC 8252 §7.1), and that on a server running on plain `http` (a
/// development setup) any client may use a loopback `http` URI.
pub fn check_registered(uri: &str, public: bool, server_on_http: bool) -> Result<(), Error> {
    let bad = |why: &str| Error::Invalid(format!("redirect URI {:?}: {why}", shown(uri)));
    let url = Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(bad("a redirect URI must not have a fragment"));
    }
    if has_credentials(&url) {
        return Err(bad(CREDENTIALS));
    }
    if url.as_str() != uri && format!("{uri}/") != url.as_str() {
        return Err(bad(
            "write it in its normal form (lower-case scheme and host, no default port)",
        ));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) && (public || server_on_http) => Ok(()),
        "http" if is_loopback(&url) => Err(bad(
            "plain http is only for public clients (native apps) on a loopback address",
        )),
        "http" => Err(bad("use https (http only on 127.0.0.1 or [::1])")),
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" => {
            Err(bad("this scheme cannot be a redirect URI"))
        }
        scheme if public && scheme.contains('.') => Ok(()),
        _ => Err(bad(
            "use https, or (for a public native app) a loopback http URI or a private-use scheme such as com.example.app:/callback",
        )),
    }
}

/// Whether a code sent to redirect URI `uri` reaches only the site that
/// registered it (`https` to a host on the network): a loopback port or a
/// private-use scheme is open to any program on the device that claims it
/// first, https on loopback (`localhost`, `127.0.0.1`, `[::1]`) too, for
/// a program with a certificate the browser trusts there (a developer's
/// local certificate authority).
pub fn reaches_only_its_owner(uri: &str) -> bool {
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    // Reached on this device: loopback names and addresses, `0.0.0.0`
    // (browsers on Linux and macOS connect to it as to loopback) and
    // their IPv4-mapped forms.
    let on_this_device = match url.host() {
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(Host::Ipv6(ip)) => {
            let v4 = ip.to_ipv4_mapped();
            ip.is_loopback()
                || ip.is_unspecified()
                || v4.is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
        None => true,
    };
    url.scheme() == "https" && !on_this_device
}

/// Why a URI with a user name or password in it is refused.
const CREDENTIALS: &str = "it must not hold a user name or password: a registered URI is shown \
     to whoever may read the client (the read-only admin scope too), and browsers strip them";

/// Whether `url` holds a user name or a password (`https://u:p@host/`).
fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `uri` as an error shows it: its user name and password, which a URI
/// registered here must not hold and which may be real, left out (the
/// CLI prints the error, the admin API answers it).
fn shown(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest.get(..authority).and_then(|a| a.rfind('@')) {
        Some(at) => format!("{scheme}://…@{}", rest.get(at + 1..).unwrap_or_default()),
        None => uri.to_owned(),
    }
}

/// Check a back-channel logout URI: `https`, or loopback `http` on a
/// server that itself runs on `http`; no fragment.
pub fn check_backchannel(uri: &str, server_on_http: bool) -> Result<(), Error> {
    let bad =
        |why: &str| Error::Invalid(format!("back-channel logout URI {:?}: {why}", shown(uri)));
    let url = Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(bad("it must not have a fragment"));
    }
    if has_credentials(&url) {
        return Err(bad(CREDENTIALS));
    }
    // As written is what is stored and called: text the parser would
    // drop or change (a trailing NUL or space, which PostgreSQL refuses
    // to store, an upper-case host) is refused here.
    if url.as_str() != uri && format!("{uri}/") != url.as_str() {
        return Err(bad(
            "write it in its normal form (lower-case scheme and host, no default port)",
        ));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) && server_on_http => Ok(()),
        _ => Err(bad("use https")),
    }
}

/// Whether `requested` is one of `registered`: the same string, or, for a
/// registered loopback `http` URI, the same URI with any port (RFC 8252
/// §7.3). `localhost` gets no such latitude (§8.3: a name can resolve
/// elsewhere).
pub fn matches(registered: &[String], requested: &str) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    let Ok(mut asked) = Url::parse(requested) else {
        return false;
    };
    if asked.scheme() != "http" || !is_loopback(&asked) || asked.as_str() != requested {
        return false;
    }
    if asked.set_port(None).is_err() {
        return false;
    }
    registered.iter().any(|r| {
        Url::parse(r).is_ok_and(|mut reg| {
            reg.scheme() == "http"
                && is_loopback(&reg)
                && reg.set_port(None).is_ok()
                && reg == asked
        })
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only https to a host on the network reaches only its owner.
    #[test]
    fn loopback_https_does_not_reach_only_its_owner() {
        assert!(reaches_only_its_owner("https://admin.example.com/cb"));
        for uri in [
            "http://admin.example.com/cb",
            "https://127.0.0.1:8443/cb",
            "https://127.1.2.3/cb",
            "https://[::1]:8443/cb",
            "https://localhost/cb",
            "https://LocalHost./cb",
            "https://tool.localhost:9000/cb",
            "https://[::ffff:127.0.0.1]/cb",
            "https://0.0.0.0:8443/cb",
            "https://[::]/cb",
            "https://[::ffff:0.0.0.0]/cb",
            "com.example.tool:/cb",
            "not a uri",
        ] {
            assert!(!reaches_only_its_owner(uri), "{uri}");
        }
    }

    /// A URI refused for holding a password does not repeat it: the CLI
    /// prints the error, the admin API answers it.
    #[test]
    fn a_refusal_does_not_repeat_the_password() {
        for uri in [
            "https://u:hunter2@rp.example/cb",
            "https://hunter2@rp.example/cb",
            "https://u:hunter2@rp.example",
            "https://u:hunter2@[::1/cb",
        ] {
            let said = [
                check_registered(uri, false, false),
                check_backchannel(uri, false),
            ]
            .map(|checked| checked.unwrap_err().to_string());
            for said in said {
                assert!(!said.contains("hunter2"), "{said}");
                assert!(
                    said.contains("rp.example") || said.contains("[::1"),
                    "{said}"
                );
            }
        }
    }

    #[test]
    fn a_backchannel_uri_is_stored_as_written() {
        assert!(check_backchannel("https://rp.example.com/bc", false).is_ok());
        for uri in [
            "https://rp.example.com/bc\u{0}",
            "https://rp.example.com/bc ",
            "https://RP.example.com/bc",
            "https://rp.example.com:443/bc",
            "https://rp.example.com/bc#",
            "https://user:secret@rp.example.com/bc",
            "https://user@rp.example.com/bc",
        ] {
            assert!(check_backchannel(uri, false).is_err(), "{uri:?}");
        }
    }

    /// A user name or password in a registered URI would be shown to
    /// whoever may read the client: refused, for redirects too.
    #[test]
    fn registered_uris_hold_no_credentials() {
        for uri in [
            "https://user:secret@app.example.com/cb",
            "https://:secret@app.example.com/cb",
            "https://user@app.example.com/cb",
        ] {
            let err = check_registered(uri, false, false).unwrap_err().to_string();
            assert!(err.contains("user name or password"), "{uri}: {err}");
        }
    }

    #[test]
    fn registration_takes_https_and_native_app_uris_only() {
        for ok in [
            "https://app.example.com/cb",
            "https://app.example.com/cb?x=1",
        ] {
            check_registered(ok, false, false).unwrap();
        }
        for (uri, public) in [
            ("http://127.0.0.1/cb", true),
            ("http://[::1]:8000/cb", true),
            ("com.example.app:/callback", true),
        ] {
            check_registered(uri, public, false).unwrap();
        }
        check_registered("http://127.0.0.1:3000/cb", false, true).unwrap();
        for (uri, public) in [
            ("https://app.example.com/cb#frag", false),
            ("http://app.example.com/cb", true),
            ("http://127.0.0.1/cb", false),
            ("http://localhost/cb", true),
            ("com.example.app:/callback", false),
            ("javascript:alert(1)", true),
            ("data:text/html,x", true),
            ("/relative/cb", false),
            ("HTTPS://APP.example.com/cb", false),
            ("https://app.example.com:443/cb", false),
        ] {
            assert!(check_registered(uri, public, false).is_err(), "{uri}");
        }
    }

    #[test]
    fn a_requested_uri_matches_exactly_or_on_another_loopback_port() {
        let reg = vec![
            "https://app.example.com/cb".to_owned(),
            "http://127.0.0.1/native".to_owned(),
            "http://[::1]:1234/v6".to_owned(),
        ];
        assert!(matches(&reg, "https://app.example.com/cb"));
        assert!(matches(&reg, "http://127.0.0.1:51234/native"));
        assert!(matches(&reg, "http://127.0.0.1/native"));
        assert!(matches(&reg, "http://[::1]:9/v6"));
        for near_miss in [
            "https://app.example.com/cb/",
            "https://app.example.com/cb?x=1",
            "https://app.example.com/CB",
            "https://app.example.com:443/cb",
            "https://app.example.com.evil.com/cb",
            "https://app.example.com/cb#x",
            "http://app.example.com/cb",
            "http://127.0.0.1:51234/native/../x",
            "http://127.0.0.1:51234/Native",
            "http://localhost:51234/native",
            "http://127.0.0.2:51234/native",
            "https://127.0.0.1:51234/native",
            "",
        ] {
            assert!(!matches(&reg, near_miss), "{near_miss}");
        }
    }
}
