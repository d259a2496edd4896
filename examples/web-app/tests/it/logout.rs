//! Back-channel logout: which sessions a logout token ends.

use axum::http::StatusCode;

use crate::harness::{backchannel_logout, provider_and_shop, Browser, Shop};

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

#[tokio::test]
async fn a_logout_token_without_the_logout_event_or_anyone_to_end_is_refused() {
    let (provider, shop) = provider_and_shop().await;
    let browser = signed_in(&shop, "sid-1", "alice").await;
    for token in [
        provider.logout_token(Some("sid-1"), Some("alice"), false),
        provider.logout_token(None, None, true),
    ] {
        assert_eq!(
            backchannel_logout(&shop, &token).await,
            StatusCode::BAD_REQUEST
        );
    }
    assert!(browser.signed_in().await);
}
