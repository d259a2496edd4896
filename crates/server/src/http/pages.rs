//! The pages people see (login, consent, logout, errors), rendered on the
//! server with minijinja from the built-in templates in `pages/` or the
//! operator's own (`[pages] templates`, loaded at start: a template of the
//! same name replaces the built-in one). Autoescaping is on for `.html`:
//! everything shown is escaped. Every page carries the same strict
//! headers: a CSP with no inline script (the one exception is the
//! form-post page's auto-submit, allowed by its hash), no framing, no
//! referrer, no caching.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::digest;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use crate::config::Pages as Theme;
use crate::Error;

const TEMPLATES: [(&str, &str); 7] = [
    ("base.html", include_str!("../../pages/base.html")),
    ("login.html", include_str!("../../pages/login.html")),
    ("consent.html", include_str!("../../pages/consent.html")),
    ("error.html", include_str!("../../pages/error.html")),
    ("logout.html", include_str!("../../pages/logout.html")),
    (
        "signed_out.html",
        include_str!("../../pages/signed_out.html"),
    ),
    ("form_post.html", include_str!("../../pages/form_post.html")),
];

const CSS: &str = include_str!("../../pages/tessera.css");

/// The largest logo read (`[pages] logo`): 1 MiB.
const MAX_LOGO: u64 = 1024 * 1024;

/// The form-post page's only script.
const AUTO_SUBMIT: &str = r#"document.getElementById("response").submit()"#;

/// The templates, the stylesheet and the logo, ready to serve.
#[derive(Debug)]
pub struct Pages {
    env: Environment<'static>,
    css: String,
    logo: Option<(Vec<u8>, &'static str)>,
    product: String,
    /// `<html lang>` of the operator's templates (the built-in ones are
    /// in English).
    lang: String,
    /// The templates the operator's replaced.
    own: std::collections::HashSet<&'static str>,
    csp: HeaderValue,
    csp_form_post: HeaderValue,
}

impl Pages {
    /// Load the templates (the operator's where given), the theme and the
    /// logo; a template that does not parse fails the start.
    pub fn load(theme: &Theme) -> Result<Pages, Error> {
        let mut env = Environment::new();
        let mut own = std::collections::HashSet::new();
        for (name, text) in TEMPLATES {
            let text = match &theme.templates {
                Some(dir) if dir.join(name).is_file() => {
                    own.insert(name);
                    read(&dir.join(name))?
                }
                _ => text.to_owned(),
            };
            env.add_template_owned(name, text)
                .map_err(|e| Error::Config(format!("page template {name}: {e}")))?;
        }
        let logo = match &theme.logo {
            None => None,
            Some(path) => {
                let kind = match path.extension().and_then(|e| e.to_str()) {
                    Some("svg") => "image/svg+xml",
                    Some("png") => "image/png",
                    _ => {
                        return Err(Error::Config(format!(
                            "pages.logo {}: use an .svg or .png file",
                            path.display()
                        )))
                    }
                };
                // Read up to one byte past the bound: a logo is sent with
                // every page's stylesheet, and a path to a device or a
                // huge file is a mistake to name, not to read to its end.
                let mut bytes = Vec::new();
                std::fs::File::open(path)
                    .and_then(|file| {
                        std::io::Read::read_to_end(
                            &mut std::io::Read::take(file, MAX_LOGO + 1),
                            &mut bytes,
                        )
                    })
                    .map_err(|e| Error::io(path, e))?;
                if bytes.len() as u64 > MAX_LOGO {
                    return Err(Error::Config(format!(
                        "pages.logo {}: larger than {} KiB",
                        path.display(),
                        MAX_LOGO / 1024
                    )));
                }
                Some((bytes, kind))
            }
        };
        if let Some(ratio) = contrast_with_white(&theme.accent).filter(|r| *r < 4.5) {
            tracing::warn!(
                accent = %theme.accent,
                contrast = format!("{ratio:.1}:1"),
                "pages.accent is too light for the white text of the buttons on it \
                 (WCAG asks for 4.5:1): pick a darker colour"
            );
        }
        let css = format!(":root {{ --accent: {}; }}\n{CSS}", theme.accent);
        let base = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                    frame-ancestors 'none'; base-uri 'none'";
        let hash =
            tessera_jose::b64::encode(digest::digest(&digest::SHA256, AUTO_SUBMIT.as_bytes()));
        // Standard base64 is what CSP hashes are written in.
        let hash = hash.replace('-', "+").replace('_', "/");
        let pad = "=".repeat((4 - hash.len() % 4) % 4);
        Ok(Pages {
            env,
            css,
            logo,
            product: theme.product_name.clone(),
            lang: theme.lang.clone(),
            own,
            csp: HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
            ),
            csp_form_post: HeaderValue::try_from(format!("{base}; script-src 'sha256-{hash}{pad}'"))
                .map_err(|e| Error::Config(format!("CSP header: {e}")))?,
        })
    }

    /// Render `name` with `context` (and the product name and logo) as a
    /// page with status `status`.
    pub fn render<C: Serialize>(&self, status: StatusCode, name: &str, context: C) -> Response {
        let csp = if name == "form_post.html" {
            self.csp_form_post.clone()
        } else {
            self.csp.clone()
        };
        let context = minijinja::context! {
            product => &self.product,
            logo => self.logo.is_some(),
            // A built-in page is English whatever the operator's write.
            lang => if self.own.contains(name) { self.lang.as_str() } else { "en" },
            ..minijinja::Value::from_serialize(&context)
        };
        match self.env.get_template(name).and_then(|t| t.render(context)) {
            Ok(html) => page(status, csp, html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "a page did not render");
                page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    self.csp.clone(),
                    "<!doctype html><html lang=\"en\"><title>Error</title><p>Something went wrong.</p></html>".into(),
                )
            }
        }
    }

    /// An error page: a title, a message and a hint, nothing redirected.
    pub fn error(&self, status: StatusCode, title: &str, message: &str, hint: &str) -> Response {
        self.render(
            status,
            "error.html",
            minijinja::context! { title, message, hint },
        )
    }

    /// [`Pages::error`] with a link to go on (`label`, `href`: a path of
    /// this server).
    pub fn error_with_action(
        &self,
        status: StatusCode,
        title: &str,
        message: &str,
        hint: &str,
        (label, href): (&str, &str),
    ) -> Response {
        self.render(
            status,
            "error.html",
            minijinja::context! { title, message, hint, action_label => label, action_href => href },
        )
    }

    /// `/assets/tessera.css`.
    pub fn stylesheet(&self) -> Response {
        asset(self.css.clone(), "text/css; charset=utf-8")
    }

    /// `/assets/logo`.
    pub fn logo(&self) -> Response {
        match &self.logo {
            None => StatusCode::NOT_FOUND.into_response(),
            Some((bytes, kind)) => {
                let mut r = asset(bytes.clone(), kind);
                // An SVG opened on its own runs nothing.
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                    ),
                );
                r
            }
        }
    }
}

/// A static asset: its type, cached for five minutes, never sniffed.
fn asset(body: impl IntoResponse, kind: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// A page with the strict headers every page carries.
fn page(status: StatusCode, csp: HeaderValue, html: String) -> Response {
    let mut r = (status, html).into_response();
    secure_headers(r.headers_mut(), csp);
    r
}

/// The headers of every page and of every redirect from a page.
pub fn secure_headers(h: &mut HeaderMap, csp: HeaderValue) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    // No `Cross-Origin-Opener-Policy: same-origin`: a single-page app
    // signs in (and out) in a popup it opened (oidc-client-ts'
    // `signinPopup`, auth0-spa-js' `loginWithPopup`), and its callback
    // page posts the answer to `window.opener`; a login page with that
    // policy cut the popup from its opener, and the app saw "popup
    // closed". Framing stays refused (`frame-ancestors 'none'`, DENY).
}

/// Shared by the handlers.
pub type SharedPages = Arc<Pages>;
/// The contrast ratio (WCAG 2) of the colour `#rgb` or `#rrggbb` with
/// white; `None` for anything else.
fn contrast_with_white(colour: &str) -> Option<f64> {
    let hex = colour.strip_prefix('#')?;
    let channel = |text: &str| u8::from_str_radix(text, 16).ok().map(f64::from);
    let (r, g, b) = match hex.len() {
        3 => {
            let twice = |i: usize| hex.get(i..=i).and_then(|c| channel(&c.repeat(2)));
            (twice(0)?, twice(1)?, twice(2)?)
        }
        6 => (
            channel(hex.get(0..2)?)?,
            channel(hex.get(2..4)?)?,
            channel(hex.get(4..6)?)?,
        ),
        _ => return None,
    };
    let linear = |c: f64| {
        let c = c / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
    Some(1.05 / (luminance + 0.05))
}

#[cfg(test)]
mod tests {
    use super::{contrast_with_white, Pages, Theme, MAX_LOGO};

    /// A logo is read up to its bound: a path to a device or a huge file
    /// is refused at start, not read to its end.
    #[test]
    fn a_logo_past_its_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theme = |name: &str, len: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; usize::try_from(len).unwrap()]).unwrap();
            Theme {
                accent: "#0b57d0".into(),
                logo: Some(path),
                ..Theme::default()
            }
        };
        assert!(Pages::load(&theme("small.png", 4096)).is_ok());
        let large = Pages::load(&theme("large.png", MAX_LOGO + 1));
        let said = large.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(said.contains("larger than"), "{said}");
    }

    #[test]
    fn the_accent_is_measured_against_the_white_button_text() {
        let ratio = |c| contrast_with_white(c).unwrap();
        assert!((ratio("#fff") - 1.0).abs() < 1e-9);
        assert!((ratio("#000000") - 21.0).abs() < 1e-9);
        // The default accent passes; a yellow does not.
        assert!(ratio("#1d4ed8") > 4.5, "{}", ratio("#1d4ed8"));
        assert!(ratio("#fde047") < 4.5);
        assert_eq!(ratio("#abc"), ratio("#aabbcc"));
        for bad in ["1d4ed8", "#12345", "#ggg", ""] {
            assert_eq!(contrast_with_white(bad), None, "{bad}");
        }
    }
}
