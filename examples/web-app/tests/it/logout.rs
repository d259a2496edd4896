//! Back-channel logout: which sessions a logout token ends.

use axum::http::StatusCode;

use crate::harness::{backchannel_logout, provider_and_shop, Browser, Provider, Shop};

/// A browser where `sub` signed in with the provider's session `sid`.
async fn signed_in<'a>(shop: &'a Shop, sid: &str, sub: &str) -> Browser<'a> {
    let browser = shop.browser();
    let callback = browser
        .sign_in(|claims| {
            claims.insert("sid".into(), sid.into());
            claims.insert("sub".into(), sub.into());
        })
        .await;
    assert_eq!(callback.status, StatusCode::SEE_OTHER, "{callback:?}");
    browser
}

#[tokio::test]
async fn a_logout_token_with_a_sid_ends_the_sessions_of_that_sid() {
    let (provider, shop) = provider_and_shop().await;
    let one = signed_in(&shop, "sid-1", "alice").await;
    let other = signed_in(&shop, "sid-2", "alice").await;
    let token = provider.logout_token(Some("sid-1"), None, true);
    assert_eq!(backchannel_logout(&shop, &token).await, StatusCode::OK);
    assert!(!one.signed_in().await);
    assert!(other.signed_in().await);
}

#[tokio::test]
async fn a_logout_token_with_only_a_sub_ends_every_session_of_that_person() {
    let (provider, shop) = provider_and_shop().await;
    let alice_here = signed_in(&shop, "sid-1", "alice").await;
    let alice_there = signed_in(&shop, "sid-2", "alice").await;
    let bob = signed_in(&shop, "sid-3", "bob").await;
    let token = provider.logout_token(None, Some("alice"), true);
    assert_eq!(backchannel_logout(&shop, &token).await, StatusCode::OK);
    assert!(!alice_here.signed_in().await);
    assert!(!alice_there.signed_in().await);
    assert!(bob.signed_in().await);
}

#[tokio::test]
async fn a_logout_token_with_a_sid_and_a_sub_ends_only_sessions_matching_both() {
    let (provider, shop) = provider_and_shop().await;
    // A provider's `sid` names one person's session; two people under one
    // `sid` only show that both claims are compared.
    let alice = signed_in(&shop, "sid-1", "alice").await;
    let bob = signed_in(&shop, "sid-1", "bob").await;
    let token = provider.logout_token(Some("sid-1"), Some("alice"), true);
    assert_eq!(backchannel_logout(&shop, &token).await, StatusCode::OK);
    assert!(!alice.signed_in().await);
    assert!(bob.signed_in().await);
}

#[tokio::test]
async fn a_logout_token_with_only_a_sub_ends_a_session_signed_in_without_sid() {
    let (provider, shop) = provider_and_shop().await;
    let browser = shop.browser();
    browser
        .sign_in(|claims| {
            claims.remove("sid");
        })
        .await;
    assert!(browser.signed_in().await);
    let token = provider.logout_token(None, Some("alice"), true);
    assert_eq!(backchannel_logout(&shop, &token).await, StatusCode::OK);
    assert!(!browser.signed_in().await);
}

/// The provider's session ended just after its code was exchanged, and
/// the logout token came before the callback had finished (the userinfo
/// call is between them): the sign-in starts no session here, and its
/// refresh token is revoked.
#[tokio::test]
async fn a_sign_in_whose_logout_token_came_first_starts_no_session() {
    let (provider, shop) = provider_and_shop().await;
    let token = provider.logout_token(Some("sid-9"), None, true);
    assert_eq!(backchannel_logout(&shop, &token).await, StatusCode::OK);
    let browser = shop.browser();
    let callback = browser
        .sign_in(|claims| {
            claims.insert("sid".into(), "sid-9".into());
        })
        .await;
    assert_eq!(callback.status, StatusCode::CONFLICT, "{callback:?}");
    assert!(callback.body.contains("signed out at the provider"));
    assert!(!browser.signed_in().await);
    assert_eq!(provider.revoked(1).await, ["refresh-0"]);
    // Another session of the provider signs in as ever.
    let other = signed_in(&shop, "sid-10", "alice").await;
    assert!(other.signed_in().await);
}

#[tokio::test]
async fn a_logout_token_without_the_logout_event_or_anyone_to_end_is_refused() {
    let (provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop, "sid-1", "alice").await;
    let event = "http://schemas.openid.net/event/backchannel-logout";
    for token in [
        provider.logout_token(Some("sid-1"), Some("alice"), false),
        provider.logout_token(None, None, true),
        // §2.4: the event's value is an object, in an object.
        provider.logout_token_with_events(
            Some("sid-1"),
            Some("alice"),
            Some(serde_json::json!({ event: true })),
        ),
        provider.logout_token_with_events(
            Some("sid-1"),
            Some("alice"),
            Some(serde_json::json!([event])),
        ),
        // §2.4: `jti` is required.
        provider.logout_token_edited(Some("sid-1"), Some("alice"), |claims| {
            claims.remove("jti");
        }),
        // A `sid` that is not a string is not read as absent: with its
        // `sub` it would have ended every session of that person.
        provider.logout_token_edited(Some("sid-9"), Some("alice"), |claims| {
            claims.insert("sid".into(), serde_json::json!(9));
        }),
    ] {
        assert_eq!(
            backchannel_logout(&shop, &token).await,
            StatusCode::BAD_REQUEST
        );
    }
    assert!(browser.signed_in().await);
}

/// A logout the app cannot check now (the provider's keys cannot be had:
/// the app just started, the provider's key set is slow) is answered 503,
/// which the provider tries again later, not 400, which it takes as
/// final: the logout would be lost, and the session stay signed in.
#[tokio::test]
async fn a_logout_token_that_cannot_be_checked_now_is_asked_again_not_refused() {
    let provider = Provider::start().await;
    provider.keys_down(true);
    let shop = Shop::start(&provider, None, web_app::Limits::default()).await;
    let token = provider.logout_token(Some("sid-1"), Some("alice"), true);
    assert_eq!(
        backchannel_logout(&shop, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// A logout token signed by a key the app does not know yet (the
/// provider replaced a revoked key, and the app fetched the key set too
/// recently to fetch it again) is asked again later (503), not refused.
#[tokio::test]
async fn a_logout_token_of_a_key_not_known_yet_is_asked_again() {
    let (provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop, "sid-1", "alice").await;
    let token = provider.logout_token_signed_by_an_unpublished_key(Some("sid-1"), Some("alice"));
    assert_eq!(
        backchannel_logout(&shop, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(browser.signed_in().await);
}

/// Signing out with a session here names the client too: a hint the
/// provider can no longer read (its key removed since) would leave it no
/// client to check the way back against.
#[tokio::test]
async fn signing_out_names_the_client_along_with_the_hint() {
    let (_provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop, "sid-1", "alice").await;
    let out = browser.post("/logout").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    let location = url::Url::parse(out.location.as_deref().unwrap()).unwrap();
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert!(params.contains_key("id_token_hint"));
    assert_eq!(params["client_id"], crate::harness::CLIENT_ID);
}

/// Signing out of the app with no session there (it ended there: idle,
/// the app restarted) still goes to the provider, whose session may go
/// on: with the client's id, so that the provider asks the person.
#[tokio::test]
async fn signing_out_without_a_session_here_still_ends_the_providers() {
    let (_provider, shop) = provider_and_shop().await;
    let browser = shop.browser();
    let out = browser.post("/logout").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    let location = url::Url::parse(out.location.as_deref().unwrap()).unwrap();
    assert!(location
        .as_str()
        .starts_with(&format!("{}/logout?", shop.issuer)));
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["client_id"], crate::harness::CLIENT_ID);
    assert_eq!(params["post_logout_redirect_uri"], format!("{}/", shop.url));
    assert!(!params.contains_key("id_token_hint") && !params.contains_key("state"));
}
