//! Refreshing tokens: once per session however many requests need it, and
//! never bringing back a session that ended meanwhile.

use std::time::Duration;

use axum::http::StatusCode;

use crate::harness::{backchannel_logout, provider_and_shop, Browser, Provider, Shop};

async fn signed_in<'a>(shop: &'a Shop) -> Browser<'a> {
    let browser = shop.browser();
    let callback = browser.sign_in(|_| {}).await;
    assert_eq!(callback.status, StatusCode::SEE_OTHER, "{callback:?}");
    browser
}

#[tokio::test]
async fn two_refreshes_at_once_send_the_refresh_token_once() {
    let (provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop).await;
    // Long enough for the second request to reach the provider, were it
    // sent, before the first is answered.
    provider.delay_refreshes(Duration::from_millis(300));
    let (a, b) = tokio::join!(browser.post("/refresh"), browser.post("/refresh"));
    for page in [&a, &b] {
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert!(page.body.contains("Tokens refreshed."), "{}", page.body);
    }
    assert_eq!(provider.refresh_grants(), 1);
    // The rotated refresh token is good: the family was not revoked.
    provider.delay_refreshes(Duration::ZERO);
    let again = browser.post("/refresh").await;
    assert!(again.body.contains("Tokens refreshed."), "{}", again.body);
    assert_eq!(provider.refresh_grants(), 2);
}

#[tokio::test]
async fn two_item_loads_with_an_expired_access_token_refresh_once() {
    let (provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop).await;
    provider.expire_access_tokens();
    provider.delay_refreshes(Duration::from_millis(300));
    let (a, b) = tokio::join!(browser.post("/items"), browser.post("/items"));
    for page in [&a, &b] {
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert!(page.body.contains("tea"), "{}", page.body);
    }
    assert_eq!(provider.refresh_grants(), 1);
}

/// A refresh whose request was given up (the listener's request timeout
/// here; a second click or a closed tab alike) still takes the rotated
/// refresh token the provider answered with: before, the dropped request
/// dropped it, the session kept the old one, and the next refresh sent
/// that, which the provider took for theft: the person was signed out.
#[tokio::test]
async fn a_refresh_whose_request_was_given_up_keeps_the_rotated_token() {
    let provider = Provider::start().await;
    let listening = tessera_listen::Limits {
        request_timeout: Duration::from_millis(500),
        ..tessera_listen::Limits::default()
    };
    let shop = Shop::listening(&provider, None, web_app::Limits::default(), listening).await;
    let browser = signed_in(&shop).await;
    provider.hold_refreshes();
    let (given_up, ()) = tokio::join!(
        browser.post("/refresh"),
        wait_for_a_refresh_grant(&provider)
    );
    assert_eq!(
        given_up.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{given_up:?}"
    );
    // Then the provider rotates.
    provider.release_refresh();
    tokio::time::sleep(Duration::from_millis(300)).await;
    provider.hold_refreshes_no_more();
    let again = browser.post("/refresh").await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    // With the rotated token: sent again (a second grant), or taken from
    // the session the given-up refresh renewed (the same one).
    assert!(again.body.contains("Tokens refreshed."), "{}", again.body);
}

/// How a session ends while its refresh is out.
enum Ending {
    Logout,
    Backchannel,
}

async fn a_session_ended_during_a_refresh_stays_ended(ending: Ending) {
    let by_logout = matches!(ending, Ending::Logout);
    let (provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop).await;
    let id = browser.cookies.lock().unwrap()["web-app-session"].clone();
    provider.hold_refreshes();
    let refreshing = browser.post("/refresh");
    let end = async {
        wait_for_a_refresh_grant(&provider).await;
        match ending {
            Ending::Logout => {
                let logout = browser.post("/logout").await;
                assert_eq!(logout.status, StatusCode::SEE_OTHER, "{logout:?}");
            }
            Ending::Backchannel => {
                let token = provider.logout_token(Some("sid-1"), Some("alice"), true);
                assert_eq!(backchannel_logout(&shop, &token).await, StatusCode::OK);
            }
        }
        provider.release_refresh();
    };
    let (refreshed, ()) = tokio::join!(refreshing, end);
    assert_eq!(provider.refresh_grants(), 1);
    // The new tokens came after the end: they are dropped, not stored under
    // the old id (logout removed the cookie: send it again, as a stale tab
    // would)...
    browser
        .cookies
        .lock()
        .unwrap()
        .insert("web-app-session".into(), id);
    assert!(!browser.signed_in().await);
    // ...and the browser is sent home, signed out; or, when the logout's
    // revocation of the session's refresh token reached the provider
    // before the refresh did, told that the session has ended.
    let home =
        refreshed.status == StatusCode::SEE_OTHER && refreshed.location.as_deref() == Some("/");
    let ended =
        refreshed.status == StatusCode::OK && refreshed.body.contains("Please sign in again");
    assert!(home || ended, "{refreshed:?}");
    // Ended here by a logout: the session's refresh token is revoked
    // there. And the one the refresh brought, which no session holds,
    // whichever way the session ended (it was dropped alive).
    let mut expected = Vec::new();
    if by_logout {
        expected.push("refresh-0");
    }
    if home {
        expected.push("refresh-1");
    }
    let mut revoked = provider.revoked(expected.len()).await;
    revoked.sort();
    assert_eq!(revoked, expected);
}

async fn wait_for_a_refresh_grant(provider: &Provider) {
    for _ in 0..500 {
        if provider.refresh_grants() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the web app never asked for a refresh");
}

#[tokio::test]
async fn a_session_ended_by_logout_during_a_refresh_is_not_brought_back() {
    a_session_ended_during_a_refresh_stays_ended(Ending::Logout).await;
}

#[tokio::test]
async fn a_session_ended_by_backchannel_logout_during_a_refresh_is_not_brought_back() {
    a_session_ended_during_a_refresh_stays_ended(Ending::Backchannel).await;
}

/// A refresh the provider refuses for good (`invalid_grant`) ends the
/// session here too: the page says so, the cookie goes, and the next page
/// is signed out. Before, the person stayed "signed in" with every click
/// answered "Could not refresh" until the session's lifetime ran out.
#[tokio::test]
async fn a_refresh_refused_for_good_ends_the_session_here() {
    for path in ["/refresh", "/items"] {
        let (provider, shop) = provider_and_shop().await;
        let browser = signed_in(&shop).await;
        provider.end_refresh_tokens();
        provider.expire_access_tokens();
        let page = browser.post(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {page:?}");
        assert!(
            page.body.contains("Your session has ended") && page.body.contains("invalid_grant"),
            "{path}: {}",
            page.body
        );
        assert!(!browser.signed_in().await, "{path}");
    }
}

/// The signed-in page's buttons refuse a form posted from another origin
/// (another host of the same site, which `SameSite=Lax` lets through);
/// from this app's own pages they work.
#[tokio::test]
async fn buttons_refuse_forms_from_other_origins() {
    let (_provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop).await;
    for path in ["/refresh", "/items", "/logout"] {
        let page = browser
            .post_from(path, "http://evil.127.0.0.1.nip.io:4000")
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {page:?}");
        assert!(browser.signed_in().await, "{path}");
    }
    let own = shop.origin();
    let page = browser.post_from("/refresh", &own).await;
    assert!(page.body.contains("Tokens refreshed."), "{}", page.body);
    // Browsers that say where a request comes from: only same-origin
    // passes, whatever Origin says (`null` under no-referrer).
    for (site, status) in [
        ("same-site", StatusCode::FORBIDDEN),
        ("cross-site", StatusCode::FORBIDDEN),
        ("same-origin", StatusCode::OK),
    ] {
        let page = browser.post_fetched("/refresh", "null", site).await;
        assert_eq!(page.status, status, "{site}: {page:?}");
    }
}
