//! The sign-in cookies and the CSRF tokens derived from them.
//!
//! Two cookies, each a random 256-bit value: the *browser* cookie binds a
//! pending authorization request to the browser that started it, the
//! *session* cookie names a sign-in session (only digests are stored).
//! Both are `HttpOnly`, `SameSite=Lax`, `Path=/`; on an https issuer also
//! `Secure` with the `__Host-` prefix, so no other site or subdomain can
//! set them. A form's CSRF token is a digest of the browser's secret
//! cookie and what the form is about: a page elsewhere cannot know it.

use aws_lc_rs::digest;
use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};

/// The cookies of one server (their names depend on http or https).
#[derive(Clone, Copy, Debug)]
pub struct Jar {
    secure: bool,
}

/// The browser cookie.
pub const BROWSER: &str = "tessera-browser";
/// The session cookie.
pub const SESSION: &str = "tessera-session";

impl Jar {
    /// Cookies for a server whose issuer is https (`secure`) or not.
    pub fn new(secure: bool) -> Jar {
        Jar { secure }
    }

    fn name(self, base: &str) -> String {
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// The value of cookie `base` in the request, if well formed.
    pub fn get(self, headers: &HeaderMap, base: &str) -> Option<String> {
        let name = self.name(base);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .map(|c| c.value().to_owned())
            .filter(|v| {
                v.len() == 43
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    }

    /// A `Set-Cookie` for `base` = `value` (a session cookie: it ends
    /// with the browser; the server decides how long it is good for).
    pub fn set(self, base: &str, value: &str) -> HeaderValue {
        let cookie = Cookie::build((self.name(base), value.to_owned()))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .path("/")
            .build();
        HeaderValue::try_from(cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
    }

    /// A `Set-Cookie` that removes `base`.
    pub fn clear(self, base: &str) -> HeaderValue {
        let cookie = Cookie::build((self.name(base), ""))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .path("/")
            .max_age(cookie::time::Duration::ZERO)
            .build();
        HeaderValue::try_from(cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
    }
}

/// The CSRF token of a form about `purpose` in the browser whose secret
/// cookie is `cookie`.
pub fn csrf_token(cookie: &str, purpose: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"tessera csrf\0");
    ctx.update(cookie.as_bytes());
    ctx.update(b"\0");
    ctx.update(purpose.as_bytes());
    tessera_jose::b64::encode(ctx.finish().as_ref())
}

/// Whether `presented` is the CSRF token of `purpose` for `cookie`.
pub fn csrf_ok(cookie: &str, purpose: &str, presented: &str) -> bool {
    crate::secret::digests_equal(csrf_token(cookie, purpose).as_bytes(), presented.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_host_only_on_https_and_tokens_bind_to_the_cookie() {
        let jar = Jar::new(true);
        let set = jar.set(SESSION, "v").to_str().unwrap().to_owned();
        for part in [
            "__Host-tessera-session=v",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!Jar::new(false)
            .set(SESSION, "v")
            .to_str()
            .unwrap()
            .contains("Secure"));
        let value = "a".repeat(43);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::try_from(format!("x=1; __Host-tessera-session={value}")).unwrap(),
        );
        assert_eq!(jar.get(&headers, SESSION).as_deref(), Some(value.as_str()));
        assert_eq!(
            Jar::new(false).get(&headers, SESSION),
            None,
            "the http name is another cookie"
        );
        let token = csrf_token(&value, "login r1");
        assert!(csrf_ok(&value, "login r1", &token));
        assert!(!csrf_ok(&value, "login r2", &token));
        assert!(!csrf_ok(&"b".repeat(43), "login r1", &token));
        assert!(!csrf_ok(&value, "login r1", ""));
    }
}
