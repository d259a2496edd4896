//! Signing in: what an ID token must and need not carry, how a sign-in
//! under way is kept (in the browser, signed) and for how long, how long a
//! session lasts, and the cookies.

use std::time::Duration;

use axum::http::StatusCode;
use cookie::SameSite;
use serde_json::json;

use crate::harness::{provider_and_shop, Provider, Shop, CLIENT_ID};

#[tokio::test]
async fn an_id_token_without_sid_still_signs_in() {
    let (_provider, shop) = provider_and_shop().await;
    let browser = shop.browser();
    let callback = browser
        .sign_in(|claims| {
            claims.remove("sid");
        })
        .await;
    assert_eq!(callback.status, StatusCode::SEE_OTHER, "{callback:?}");
    assert_eq!(callback.location.as_deref(), Some("/"));
    assert!(browser.signed_in().await);
}

#[tokio::test]
async fn an_id_token_without_sub_is_refused() {
    let (_provider, shop) = provider_and_shop().await;
    let browser = shop.browser();
    let callback = browser
        .sign_in(|claims| {
            claims.remove("sub");
        })
        .await;
    assert_eq!(callback.status, StatusCode::BAD_GATEWAY, "{callback:?}");
    assert!(callback.body.contains("sub"), "{}", callback.body);
    assert!(!browser.signed_in().await);
}

/// OpenID Connect Core §3.1.3.7: an ID token is signed with the
/// algorithm the app is registered for (RS256), not with another key of
/// the provider's set (its access-token key); and it has an `iat`.
#[tokio::test]
async fn an_id_token_of_another_algorithm_or_without_iat_is_refused() {
    let (provider, shop) = provider_and_shop().await;
    let browser = shop.browser();
    let callback = browser
        .sign_in(|claims| {
            claims.remove("iat");
        })
        .await;
    assert_eq!(callback.status, StatusCode::BAD_GATEWAY, "{callback:?}");
    assert!(callback.body.contains("iat"), "{}", callback.body);
    provider.sign_id_tokens_with_another_algorithm();
    let callback = browser.sign_in(|_| {}).await;
    assert_eq!(callback.status, StatusCode::BAD_GATEWAY, "{callback:?}");
    assert_eq!(callback.body, "the provider's ID token was refused");
    assert!(!browser.signed_in().await);
    // The codes were exchanged all the same: the refresh tokens they gave,
    // which no session holds, are revoked.
    let revoked = provider.revoked(2).await;
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(
        revoked.iter().all(|t| t.starts_with("refresh-")),
        "{revoked:?}"
    );
}

/// OpenID Connect Core §3.1.3.7 (errata set 2): an ID token also for an
/// audience this app does not trust is refused, whatever its `azp`; one
/// for this app alone passes, as a string or a one-element array, with no
/// `azp` or with this app's; another `azp` is refused.
#[tokio::test]
async fn an_id_token_must_be_for_this_app_alone() {
    let (_provider, shop) = provider_and_shop().await;
    let several = json!([CLIENT_ID, "another-client"]);
    for (aud, azp, signs_in) in [
        (several.clone(), None, false),
        (several.clone(), Some("another-client"), false),
        (several, Some(CLIENT_ID), false),
        (json!([CLIENT_ID]), None, true),
        (json!([CLIENT_ID]), Some(CLIENT_ID), true),
        (json!(CLIENT_ID), None, true),
        (json!(CLIENT_ID), Some("another-client"), false),
    ] {
        let browser = shop.browser();
        let callback = browser
            .sign_in(|claims| {
                claims.insert("aud".into(), aud.clone());
                if let Some(azp) = azp {
                    claims.insert("azp".into(), azp.into());
                }
            })
            .await;
        let case = format!("aud {aud}, azp {azp:?}: {callback:?}");
        if signs_in {
            assert_eq!(callback.status, StatusCode::SEE_OTHER, "{case}");
            assert!(browser.signed_in().await, "{case}");
        } else {
            assert_eq!(callback.status, StatusCode::BAD_GATEWAY, "{case}");
            assert!(
                callback.body.contains("(aud)") || callback.body.contains("azp"),
                "{case}"
            );
            assert!(!browser.signed_in().await, "{case}");
        }
    }
}

/// OpenID Connect Core §3.1.3.8: an ID token whose `at_hash` is not the
/// access token's (an access token swapped in) is refused; the right one
/// passes.
#[tokio::test]
async fn an_id_token_whose_at_hash_is_another_tokens_is_refused() {
    let (_provider, shop) = provider_and_shop().await;
    let at_hash = |token: &str| tessera_jose::jwt::half_hash(tessera_jose::Algorithm::RS256, token);
    // The mock's first token is access-0, the second access-1.
    for (hash_of, signs_in) in [("access-1", false), ("access-1", true)] {
        let browser = shop.browser();
        let expected = at_hash(hash_of);
        let callback = browser
            .sign_in(|claims| {
                claims.insert("at_hash".into(), expected.into());
            })
            .await;
        if signs_in {
            assert_eq!(callback.status, StatusCode::SEE_OTHER, "{callback:?}");
        } else {
            assert_eq!(callback.status, StatusCode::BAD_GATEWAY, "{callback:?}");
            assert!(callback.body.contains("at_hash"), "{callback:?}");
        }
    }
}

#[tokio::test]
async fn signing_in_again_in_the_same_browser_ends_the_old_session() {
    let (provider, shop) = provider_and_shop().await;
    let browser = shop.browser();
    browser.sign_in(|_| {}).await;
    let first = browser.cookies.lock().unwrap()["web-app-session"].clone();
    browser.sign_in(|_| {}).await;
    let second = browser.cookies.lock().unwrap()["web-app-session"].clone();
    assert_ne!(first, second);
    assert!(browser.signed_in().await);
    // The first session's id no longer signs anyone in.
    let stale = shop.browser();
    stale
        .cookies
        .lock()
        .unwrap()
        .insert("web-app-session".into(), first);
    assert!(!stale.signed_in().await);
    // Its refresh token, which nobody will use again, is revoked at the
    // provider (it would stay valid there for weeks).
    assert_eq!(provider.revoked(1).await, ["refresh-0"]);
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime() {
    // The lifetime itself, at and just before its end, is tested with a
    // moved clock in `sessions.rs`; here, that the app applies it.
    let provider = Provider::start().await;
    let limits = web_app::Limits {
        session_lifetime: Duration::ZERO,
        ..web_app::Limits::default()
    };
    let shop = Shop::start(&provider, None, limits).await;
    let browser = shop.browser();
    let callback = browser.sign_in(|_| {}).await;
    assert_eq!(callback.status, StatusCode::SEE_OTHER, "{callback:?}");
    assert!(!browser.signed_in().await);
    assert_eq!(provider.revoked(1).await, ["refresh-0"]);
}

/// A sign-in under way lives in the browser's signed cookie, not in the
/// app: a flood of `GET /login` fills nothing, and sign-ins still
/// complete (before, 10,000 of them, from anyone, refused every sign-in
/// for ten minutes). A callback must carry the cookie its sign-in started
/// with, unaltered, and only once.
#[tokio::test]
async fn sign_ins_under_way_are_kept_by_the_browser_signed_and_used_once() {
    let provider = Provider::start().await;
    let shop = Shop::start(&provider, None, web_app::Limits::default()).await;
    let flood = shop.browser();
    for _ in 0..200 {
        assert_eq!(flood.get("/login").await.status, StatusCode::SEE_OTHER);
    }
    let browser = shop.browser();
    let callback = browser.sign_in(|_| {}).await;
    assert_eq!(callback.status, StatusCode::SEE_OTHER, "{callback:?}");
    assert!(browser.signed_in().await);

    let callback_of = |state: &str| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", "the code")
            .append_pair("state", state)
            .append_pair("iss", &shop.issuer)
            .finish();
        format!("/callback?{query}")
    };
    let victim = shop.browser();
    let login = victim.get("/login").await;
    let state = login.location_param("state");
    let signed = victim.cookies.lock().unwrap()["web-app-login"].clone();
    // Another browser, with a sign-in cookie of its own, cannot finish it.
    let attacker = shop.browser();
    attacker.get("/login").await;
    let r = attacker.get(&callback_of(&state)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("not started here"), "{}", r.body);
    // Nor with the victim's cookie altered (another state put in it).
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&tessera_jose::b64::decode(&parts[1]).unwrap()).unwrap();
    // Nothing secret travels in it: the PKCE verifier is derived, not
    // stored (the cookie comes back with the code, through proxies).
    assert!(payload.get("verifier").is_none(), "{payload}");
    assert_eq!(payload["state"], state.as_str());
    payload["state"] = "forged".into();
    parts[1] = tessera_jose::b64::encode(payload.to_string());
    attacker
        .cookies
        .lock()
        .unwrap()
        .insert("web-app-login".into(), parts.join("."));
    let r = attacker.get(&callback_of("forged")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("not started here"), "{}", r.body);
    // The victim's own callback works, once.
    let first = victim.come_back(&login, |_| {}).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{first:?}");
    victim
        .cookies
        .lock()
        .unwrap()
        .insert("web-app-login".into(), signed);
    let again = victim.get(&callback_of(&state)).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{again:?}");
    assert!(again.body.contains("already used"), "{}", again.body);
}

#[tokio::test]
async fn a_sign_in_that_comes_back_too_late_is_refused() {
    let provider = Provider::start().await;
    let limits = web_app::Limits {
        login_timeout: Duration::ZERO,
        ..web_app::Limits::default()
    };
    let shop = Shop::start(&provider, None, limits).await;
    let browser = shop.browser();
    let callback = browser.sign_in(|_| {}).await;
    assert_eq!(callback.status, StatusCode::BAD_REQUEST, "{callback:?}");
    assert!(callback.body.contains("took too long"), "{}", callback.body);
    assert!(!browser.signed_in().await);
}

#[tokio::test]
async fn over_https_the_cookies_are_secure_and_host_prefixed() {
    let provider = Provider::start().await;
    let base = "https://shop.example.com";
    let shop = Shop::start(&provider, Some(base), web_app::Limits::default()).await;
    let browser = shop.browser();
    let login = browser.get("/login").await;
    assert_eq!(
        login.location_param("redirect_uri"),
        "https://shop.example.com/callback"
    );
    let secure = |c: &cookie::Cookie<'_>| {
        assert!(c.name().starts_with("__Host-"), "{c}");
        assert_eq!(c.secure(), Some(true), "{c}");
        assert_eq!(c.http_only(), Some(true), "{c}");
        assert_eq!(c.same_site(), Some(SameSite::Lax), "{c}");
        assert_eq!(c.path(), Some("/"), "{c}");
        assert_eq!(c.domain(), None, "{c}");
    };
    secure(login.set_cookie("__Host-web-app-login"));
    // `sign_in` starts another sign-in: this browser now holds its state.
    let callback = browser.sign_in(|_| {}).await;
    assert_eq!(callback.status, StatusCode::SEE_OTHER, "{callback:?}");
    secure(callback.set_cookie("__Host-web-app-session"));
    let removed = callback.set_cookie("__Host-web-app-login");
    secure(removed);
    assert_eq!(removed.max_age(), Some(cookie::time::Duration::ZERO));
    assert!(browser.signed_in().await);
    let logout = browser.post("/logout").await;
    assert_eq!(
        logout.location_param("post_logout_redirect_uri"),
        "https://shop.example.com/"
    );
    secure(logout.set_cookie("__Host-web-app-session"));
    assert!(!browser.signed_in().await);
    // And browsers are told to come back over https only (HSTS), on the
    // pages and the errors alike.
    for path in ["/", "/nothing-here"] {
        let answer = shop.raw_get(path).await;
        assert_eq!(
            answer.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
    }
}

#[tokio::test]
async fn over_plain_http_the_cookies_are_neither_secure_nor_prefixed() {
    let (_provider, shop) = provider_and_shop().await;
    let browser = shop.browser();
    let login = browser.get("/login").await;
    assert_eq!(
        login.location_param("redirect_uri"),
        format!("{}/callback", shop.url)
    );
    let cookie = login.set_cookie("web-app-login");
    assert_eq!(cookie.secure(), None, "{cookie}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
}

/// A base URL with a path is refused, and so is plain http anywhere but
/// on loopback (there the cookies would lose `Secure` and the `__Host-`
/// prefix: a sibling subdomain or the network could plant a session id)
/// unless plain http is allowed on purpose.
#[tokio::test]
async fn a_base_url_with_a_path_or_in_the_clear_is_refused() {
    let provider = Provider::start().await;
    let settings = |base: &str, allow_plain_http: bool| web_app::Settings {
        issuer: provider.url.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: zeroize::Zeroizing::new("the secret".into()),
        base: base.into(),
        store_api: provider.url.clone(),
        allow_plain_http,
        limits: web_app::Limits::default(),
    };
    for base in [
        "https://shop.example.com/app",
        "ftp://shop.example.com",
        "shop.example.com",
        "http://shop.example.com",
    ] {
        let refused = web_app::WebApp::discover(settings(base, false)).await;
        assert!(refused.is_err(), "{base}");
    }
    assert!(
        web_app::WebApp::discover(settings("http://shop.example.com", true))
            .await
            .is_ok(),
        "allowed on purpose"
    );
}

/// A callback whose request was given up while the code was exchanged
/// (the listener's request timeout here; a closed tab alike) still takes
/// the exchange's answer, and revokes the refresh token no session will
/// hold: before, the dropped request dropped it, and the grant lived on
/// at the provider for a sign-in nobody completed.
#[tokio::test]
async fn a_sign_in_given_up_during_the_exchange_revokes_its_refresh_token() {
    let provider = Provider::start().await;
    let listening = tessera_listen::Limits {
        request_timeout: Duration::from_millis(300),
        ..tessera_listen::Limits::default()
    };
    let shop = Shop::listening(&provider, None, web_app::Limits::default(), listening).await;
    provider.delay_code_exchanges(Duration::from_millis(800));
    let browser = shop.browser();
    let given_up = browser.sign_in(|_| {}).await;
    assert_eq!(
        given_up.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{given_up:?}"
    );
    let revoked = provider.revoked(1).await;
    assert_eq!(revoked, ["refresh-0"], "{revoked:?}");
    assert!(!browser.signed_in().await);
}

/// Code exchanges under way at once are bounded (each runs to its end
/// even when its browser leaves): past the bound a callback is answered
/// 503 before its sign-in is spent, and coming back again goes on.
#[tokio::test]
async fn code_exchanges_under_way_at_once_are_bounded() {
    let provider = Provider::start().await;
    let limits = web_app::Limits {
        code_exchanges_at_once: 1,
        ..web_app::Limits::default()
    };
    let shop = Shop::start(&provider, None, limits).await;
    provider.delay_code_exchanges(Duration::from_millis(600));
    let (first, second) = (shop.browser(), shop.browser());
    let login = second.get("/login").await;
    let (done, turned_away) = tokio::join!(first.sign_in(|_| {}), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        second.come_back(&login, |_| {}).await
    });
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert_eq!(
        turned_away.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{turned_away:?}"
    );
    let again = second.come_back(&login, |_| {}).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{again:?}");
    assert!(second.signed_in().await);
}

/// Userinfo only adds a name to show: a sign-in whose ID token checked out
/// is not given up because userinfo failed for a moment.
#[tokio::test]
async fn a_sign_in_goes_on_when_userinfo_fails() {
    let (provider, shop) = provider_and_shop().await;
    provider.userinfo_down(true);
    let browser = shop.browser();
    let signed = browser
        .sign_in(|c| {
            c.insert("name".into(), "Alice from the ID token".into());
        })
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{signed:?}");
    assert!(browser.signed_in().await);
    let home = browser.get("/").await;
    assert!(
        home.body.contains("Alice from the ID token"),
        "{}",
        home.body
    );
}

/// A token endpoint that answers a proxy's HTML page, or more than the app
/// reads: the person gets a page that offers a fresh sign-in (reloading
/// the callback could only say "already used"), and nothing is held.
#[tokio::test]
async fn a_failed_exchange_offers_a_fresh_sign_in() {
    let (provider, shop) = provider_and_shop().await;
    for (status, body) in [
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body>502 Bad Gateway</body></html>".to_owned(),
        ),
        (StatusCode::OK, format!("{}{{}}", " ".repeat(2 << 20))),
    ] {
        provider.answer_code_exchanges(status, body);
        let browser = shop.browser();
        let failed = browser.sign_in(|_| {}).await;
        assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{status}");
        assert!(failed.body.contains("href=\"/login\""), "{}", failed.body);
        assert!(failed.body.contains("sign in again"), "{}", failed.body);
        assert!(!browser.signed_in().await);
    }
}

/// Every answer carries the strict headers, the plain-text errors of
/// `/callback` and an unknown path included (only the pages had a CSP and
/// `no-store`; nothing had `nosniff` or a referrer policy).
#[tokio::test]
async fn every_answer_carries_the_strict_headers() {
    let (_provider, shop) = provider_and_shop().await;
    for path in [
        "/",
        "/callback",
        "/callback?code=x&state=y",
        "/nothing-here",
    ] {
        let answer = shop.raw_get(path).await;
        let headers = answer.headers();
        let said = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(said("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(said("referrer-policy"), "same-origin", "{path}");
        assert_eq!(said("x-frame-options"), "DENY", "{path}");
        assert_eq!(said("cache-control"), "no-store", "{path}");
        let csp = said("content-security-policy");
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("base-uri 'none'"),
            "{path}: {csp}"
        );
        // Served over plain HTTP (a development setup): no HSTS, which
        // would pin the browser to an https the app does not serve.
        assert_eq!(said("strict-transport-security"), "", "{path}");
    }
}

/// A callback without the provider's `iss` (RFC 9207), or with another
/// issuer's (a mix-up: the code came from elsewhere), is refused before
/// the code is sent anywhere: no exchange at the token endpoint, nobody
/// signed in.
#[tokio::test]
async fn a_callback_without_this_providers_iss_exchanges_nothing() {
    let (provider, shop) = provider_and_shop().await;
    for iss in [None, Some("https://evil.example"), Some("")] {
        let browser = shop.browser();
        let login = browser.get("/login").await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{login:?}");
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("code", "the code")
            .append_pair("state", &login.location_param("state"));
        if let Some(iss) = iss {
            query.append_pair("iss", iss);
        }
        let before = provider.issued();
        let callback = browser.get(&format!("/callback?{}", query.finish())).await;
        assert_eq!(
            callback.status,
            StatusCode::BAD_REQUEST,
            "{iss:?}: {callback:?}"
        );
        assert_eq!(provider.issued(), before, "{iss:?}: the code was exchanged");
        assert!(!browser.signed_in().await);
    }
}
