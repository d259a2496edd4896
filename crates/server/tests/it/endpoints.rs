//! Introspection, revocation, discovery and health, without sockets.

use axum::http::{header, StatusCode};
use tessera_server::store::clients::GrantType;

use crate::{both_backends, wait_for_audit, Backend, Harness, ISSUER};

both_backends!(
    revocations_reach_introspection_and_the_feed,
    introspection_reports_live_tokens_to_confidential_clients,
    revocation_ends_refresh_families_and_access_tokens,
    a_client_revokes_access_tokens_within_its_allowance,
    discovery_lists_what_the_server_supports,
    single_page_apps_reach_the_token_endpoints_and_nothing_else,
    a_token_from_an_instance_a_little_ahead_is_known_and_revocable,
    a_token_minted_from_a_stale_cache_on_a_clock_ahead_is_cut_off,
    userinfo_takes_the_token_from_a_form_body_once,
    a_copy_of_the_revocation_log_not_read_lately_is_not_trusted,
    health_readiness_and_metrics,
    a_feed_ends_when_its_instance_stops_reading_the_log,
    a_feed_cursor_naming_another_event_starts_over,
    a_feed_ends_when_its_subscribers_credentials_are_withdrawn,
);

/// A feed subscription as a resource server opens one (`rs`, with the
/// feed's scope), with `headers` besides the token: its body.
async fn subscribe(
    h: &Harness,
    rs: (&str, &str),
    headers: &[(&str, String)],
) -> axum::body::BodyDataStream {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let token = h.client_credentials_token(rs.0, rs.1).await;
    let mut request = Request::get("/oauth2/revocations")
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = h
        .router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().into_data_stream()
}

/// One client holds at most `STREAMS_PER_CLIENT` streams open at an
/// instance; the next is 429 with `Retry-After`, another client's is
/// served, and a place comes back when a stream ends.
#[tokio::test]
async fn a_client_holds_a_bounded_number_of_feed_streams() {
    use axum::body::Body;
    use axum::http::Request;
    use tessera_server::http::STREAMS_PER_CLIENT;
    use tower::ServiceExt;
    let Some(h) = Harness::new(Backend::Sqlite).await else {
        return;
    };
    let (rs, secret) = h
        .client(&[GrantType::ClientCredentials], "revocations:read")
        .await;
    let token = h.client_credentials_token(&rs, &secret).await;
    let open = |token: String| {
        let router = h.router.clone();
        async move {
            router
                .oneshot(
                    Request::get("/oauth2/revocations")
                        .header(header::AUTHORIZATION, format!("Bearer {token}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap()
        }
    };
    let mut streams = Vec::new();
    for _ in 0..STREAMS_PER_CLIENT {
        let response = open(token.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let refused = open(token.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    let (other, other_secret) = h
        .client(&[GrantType::ClientCredentials], "revocations:read")
        .await;
    let theirs = h.client_credentials_token(&other, &other_secret).await;
    assert_eq!(open(theirs).await.status(), StatusCode::OK);
    drop(streams.pop());
    assert_eq!(open(token.clone()).await.status(), StatusCode::OK);
    // Stopping (through `http.shutdown_delay`): no new stream, which would
    // end at once, but 503 and Retry-After, to go elsewhere.
    h.app.stopping.send_replace(true);
    drop(streams);
    let refused = open(token).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
}

/// What a subscription sends up to `ready` (the backlog comes at once).
async fn until_ready(body: &mut axum::body::BodyDataStream) -> String {
    use futures_util::StreamExt;
    let mut text = String::new();
    while !text.contains("event: ready") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .expect("the backlog and ready come at once")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text
}

/// The stream stops when the token it was opened with stops being good:
/// its client's secret rotated (whoever held the secret may hold tokens
/// too), before anything more is sent to it.
async fn a_feed_ends_when_its_subscribers_credentials_are_withdrawn(backend: Backend) {
    use futures_util::StreamExt;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (rs, rs_secret) = h
        .client(&[GrantType::ClientCredentials], "revocations:read")
        .await;
    let mut body = subscribe(&h, (&rs, &rs_secret), &[]).await;
    until_ready(&mut body).await;
    tessera_server::store::clients::rotate_secret(
        &h.db,
        &rs,
        crate::KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    h.app.access.revoked().sync(&h.db).await.unwrap();
    // Within a check (every second), not at the token's expiry, nor at
    // the 5 s after which an instance stops vouching for its log.
    let mut after = String::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Some(chunk) = body.next().await {
            after.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    })
    .await;
    assert!(ended.is_ok(), "a withdrawn subscriber was still served");
    assert!(!after.contains("event: revocation"), "{after}");
    h.finish().await;
}

/// A subscriber names the event its cursor stands on: the same event
/// resumes after it; another event at that id (a restored log grown back
/// past the cursor) gets `reset` and the whole log.
async fn a_feed_cursor_naming_another_event_starts_over(backend: Backend) {
    use tessera_guard::revocation::{event_digest, LAST_EVENT_DIGEST};
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (rs, rs_secret) = h
        .client(&[GrantType::ClientCredentials], "revocations:read")
        .await;
    let rs = (rs.as_str(), rs_secret.as_str());
    let log = h.app.access.revoked();
    let until = tessera_server::store::now() + 600;
    for jti in ["first", "second"] {
        log.revoke_token(&h.db, jti, until).await.unwrap();
    }
    let events = log.since(0, 10).events;
    let (first, second) = (&events[0], &events[1]);
    let from = |id: i64, digest: String| {
        [
            ("last-event-id", id.to_string()),
            (LAST_EVENT_DIGEST, digest),
        ]
    };
    let resumed =
        until_ready(&mut subscribe(&h, rs, &from(first.id, event_digest(&first.json))).await).await;
    assert!(!resumed.contains("event: reset"), "{resumed}");
    assert!(
        !resumed.contains("\"first\"") && resumed.contains("\"second\""),
        "{resumed}"
    );
    // The cursor's id holds another event here: start over.
    let other =
        until_ready(&mut subscribe(&h, rs, &from(first.id, event_digest(&second.json))).await)
            .await;
    assert!(other.starts_with("event: reset"), "{other}");
    assert!(
        other.contains("\"first\"") && other.contains("\"second\""),
        "{other}"
    );
    // No digest (an older guard): trusted as before.
    let cursor = [("last-event-id", second.id.to_string())];
    let text = until_ready(&mut subscribe(&h, rs, &cursor).await).await;
    assert!(text.starts_with("event: ready"), "{text}");
    h.finish().await;
}

/// An instance whose copy of the revocation log goes unread (here no
/// follower runs, as when its database is out of reach) ends its feed
/// streams instead of sending heartbeats that say it is current; a new
/// subscription reads the log first.
async fn a_feed_ends_when_its_instance_stops_reading_the_log(backend: Backend) {
    use futures_util::StreamExt;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (rs, rs_secret) = h
        .client(&[GrantType::ClientCredentials], "revocations:read")
        .await;
    let subscribe = || subscribe(&h, (&rs, &rs_secret), &[]);
    let mut body = subscribe().await;
    until_ready(&mut body).await;
    assert!(h
        .app
        .access
        .revoked()
        .synced_within(std::time::Duration::from_secs(5)));
    // Nothing reads the log from now on: within the bound and a check,
    // the stream ends (before, it went on to the token's expiry).
    // (The bound is 5 s, looked at every second.)
    let bound = std::time::Duration::from_secs(8);
    let ended = tokio::time::timeout(bound, async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a stale instance went on");
    // A new subscription reads the log first, and is served.
    let mut again = subscribe().await;
    let first = again.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .contains("event: ready"));
    h.finish().await;
}

async fn introspection_reports_live_tokens_to_confidential_clients(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (rs, rs_secret) = h.client(&[GrantType::ClientCredentials], "").await;
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let login = h.login(&web, "alice", "correct horse").await;
    let access = login.str("access_token");
    let refresh = login.str("refresh_token");

    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &access)],
            Some((&rs, &rs_secret)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["client_id"], web.as_str());
    assert_eq!(r.json["username"], "alice");
    assert_eq!(r.json["scope"], "read");
    assert_eq!(r.json["iss"], ISSUER);
    assert_eq!(r.json["token_type"], "Bearer");

    // A refresh token is for its own client only: to anyone else it is
    // inactive (a stolen one cannot be probed without being spent).
    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &refresh), ("token_type_hint", "refresh_token")],
            Some((&rs, &rs_secret)),
        )
        .await;
    assert_eq!(r.json, serde_json::json!({ "active": false }), "{}", r.text);
    let (app, app_secret) = h
        .client(&[GrantType::Password, GrantType::RefreshToken], "read")
        .await;
    let own = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "correct horse"),
            ],
            Some((&app, &app_secret)),
        )
        .await
        .str("refresh_token");
    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &own), ("token_type_hint", "refresh_token")],
            Some((&app, &app_secret)),
        )
        .await;
    assert_eq!(r.json["active"], true, "{}", r.text);
    assert_eq!(r.json["token_type"], "refresh_token");
    assert_eq!(r.json["username"], "alice");
    assert_eq!(r.json["client_id"], app.as_str());

    // Inactive tokens say nothing else.
    let mut tampered = access.clone();
    tampered.pop();
    tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
    for token in [tampered.as_str(), "garbage", "a.b.c"] {
        let r = h
            .post(
                "/oauth2/introspect",
                &[("token", token)],
                Some((&rs, &rs_secret)),
            )
            .await;
        assert_eq!(r.json, serde_json::json!({ "active": false }), "{token}");
    }
    // A token signed by someone else with our kid is inactive.
    let forged_key = tessera_jose::SigningKey::generate(tessera_jose::Algorithm::ES256)
        .unwrap()
        .with_kid(
            h.app
                .keys
                .signer(tessera_server::store::now())
                .unwrap()
                .kid()
                .unwrap(),
        );
    let forged = tessera_jose::jwt::sign_with_header(
        &tessera_jose::jws::Header::for_key(&forged_key).typ("at+jwt"),
        &tessera_jose::Claims::new()
            .issuer(ISSUER)
            .subject("x")
            .jwt_id("j")
            .expires_at(tessera_jose::NumericDate::now().plus(std::time::Duration::from_secs(60))),
        &forged_key,
    )
    .unwrap();
    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &forged)],
            Some((&rs, &rs_secret)),
        )
        .await;
    assert_eq!(r.json["active"], false);

    // Public clients and strangers may not introspect.
    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &access), ("client_id", &web)],
            None,
        )
        .await;
    // Identified in the body, not with Basic: 400, no Basic challenge.
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_client")
    );
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_none());
    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &access)],
            Some((&rs, "wrong")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    h.finish().await;
}

async fn revocation_ends_refresh_families_and_access_tokens(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (rs, rs_secret) = h.client(&[GrantType::ClientCredentials], "").await;
    let web = h.public_client("read").await;
    let other = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let login = h.login(&web, "alice", "correct horse").await;
    let rotated = login.str("refresh_token");
    let active = |token: String| {
        let (h, rs, rs_secret) = (&h, rs.clone(), rs_secret.clone());
        async move { h.active(&token, (&rs, &rs_secret)).await }
    };

    // A refresh token is introspected by its own client only (a public
    // one here): read its state from the store.
    let refresh_live = |token: &str| {
        let (db, token) = (h.db.clone(), token.to_owned());
        async move {
            tessera_server::store::refresh::lookup(&db, &token)
                .await
                .unwrap()
                .is_some()
        }
    };

    // Another client's revocation does nothing, and says so (RFC 7009
    // §2.1; it was answered 200 as if done): for an access token, and
    // for a refresh token used or not. A token no one has is 200 (§2.2).
    let used = h.refresh(&web, &rotated, None).await;
    let (access, refresh) = (used.str("access_token"), used.str("refresh_token"));
    let (logged, _logging) = crate::Logged::capture();
    for token in [&access, &refresh, &rotated] {
        let r = h
            .post(
                "/oauth2/revoke",
                &[("token", token), ("client_id", &other)],
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::BAD_REQUEST, "unauthorized_client"),
            "{}",
            r.text
        );
    }
    // Said, with both clients: one holding another's token may have
    // stolen it.
    let said = String::from_utf8_lossy(&logged.0.lock().unwrap()).to_string();
    let refusals = said.matches("revocation refused").count();
    assert_eq!(refusals, 3, "{said}");
    assert!(said.contains(&format!("issued_to={web}")), "{said}");
    let r = h
        .post(
            "/oauth2/revoke",
            &[("token", "no-such-token"), ("client_id", &other)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(active(access.clone()).await);
    assert!(refresh_live(&refresh).await);

    let r = h
        .post(
            "/oauth2/revoke",
            &[("token", &access), ("client_id", &web)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !active(access.clone()).await,
        "a revoked access token is inactive"
    );
    assert!(
        refresh_live(&refresh).await,
        "revoking an access token leaves the session"
    );
    // An access token minted with the family (by a refresh), and one of
    // another login (another family) of the same user and client.
    let refreshed = h.refresh(&web, &refresh, None).await;
    let (minted, refresh) = (
        refreshed.str("access_token"),
        refreshed.str("refresh_token"),
    );
    let elsewhere = h.login(&web, "alice", "correct horse").await;
    let elsewhere = elsewhere.str("access_token");
    assert!(active(minted.clone()).await);

    let r = h
        .post(
            "/oauth2/revoke",
            &[("token", &refresh), ("client_id", &web)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!refresh_live(&refresh).await);
    // RFC 7009 §2.1: the access tokens of the grant go with it (here and,
    // through the feed, at every guard); another login's stay.
    assert!(
        !active(minted).await,
        "an access token of the revoked family"
    );
    assert!(active(elsewhere).await, "another family's access token");
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &web),
                ("refresh_token", &refresh),
            ],
            None,
        )
        .await;
    assert_eq!(r.error(), "invalid_grant");
    // Unknown tokens are fine (RFC 7009 §2.2), bad requests are not.
    let r = h
        .post(
            "/oauth2/revoke",
            &[("token", "unknown"), ("client_id", &web)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.post("/oauth2/revoke", &[("client_id", &web)], None).await;
    assert_eq!(r.error(), "invalid_request");
    // Another client's refresh token whose family is over (not yet
    // deleted): nothing to refuse, 200 (§2.2).
    let over = h.login(&web, "alice", "correct horse").await;
    h.execute(
        "UPDATE refresh_families SET expires_at = 1 WHERE client_id = $1 AND revoked_at IS NULL",
        &[&web],
    )
    .await;
    let r = h
        .post(
            "/oauth2/revoke",
            &[("token", &over.str("refresh_token")), ("client_id", &other)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Both revocations name whose token it was.
    let alice = tessera_server::store::users::find(&h.db, "alice")
        .await
        .unwrap()
        .unwrap();
    let revoked = wait_for_audit(&h, "token_revoked", 2).await;
    assert!(
        revoked
            .iter()
            .all(|e| e.subject.as_deref() == Some(alice.id.as_str())),
        "{revoked:?}"
    );
    h.finish().await;
}

/// Each access token revoked is an event every guard keeps: a client that
/// mints and revokes tokens without end is held to its allowance, and the
/// token it could not revoke is answered as RFC 7009 §2.2.1 says (503,
/// `Retry-After`, the token still valid). Other clients keep theirs.
async fn a_client_revokes_access_tokens_within_its_allowance(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.client_revocations = 3).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let (other, other_secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let (rs, rs_secret) = h.client(&[GrantType::ClientCredentials], "").await;
    let revoke = |token: String, client: (String, String)| {
        let h = &h;
        async move {
            h.post(
                "/oauth2/revoke",
                &[("token", &token)],
                Some((&client.0, &client.1)),
            )
            .await
        }
    };
    let mine = (id.clone(), secret.clone());
    for _ in 0..3 {
        let token = h.client_credentials_token(&id, &secret).await;
        assert_eq!(
            revoke(token.clone(), mine.clone()).await.status,
            StatusCode::OK
        );
        assert!(!h.active(&token, (&rs, &rs_secret)).await);
    }
    let token = h.client_credentials_token(&id, &secret).await;
    let r = revoke(token.clone(), mine.clone()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.error(), "temporarily_unavailable");
    let wait: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=21).contains(&wait), "Retry-After: {wait}");
    assert!(
        h.active(&token, (&rs, &rs_secret)).await,
        "a revocation answered 503 did not happen"
    );
    // Unknown tokens and tokens already revoked add nothing to the log:
    // not counted.
    assert_eq!(
        revoke("unknown".into(), mine.clone()).await.status,
        StatusCode::OK
    );
    let revoked = h.client_credentials_token(&id, &secret).await;
    h.app
        .access
        .revoked()
        .revoke_token(&h.db, &jwt_id(&revoked), tessera_server::store::now() + 600)
        .await
        .unwrap();
    assert_eq!(revoke(revoked, mine).await.status, StatusCode::OK);
    // Another client has an allowance of its own.
    let theirs = h.client_credentials_token(&other, &other_secret).await;
    let r = revoke(theirs.clone(), (other, other_secret)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!h.active(&theirs, (&rs, &rs_secret)).await);
    // A public client's users each have their own: one cannot use up
    // another's.
    let web = h.public_client("read").await;
    for user in ["alice", "bob"] {
        h.user(user, "correct horse", "read").await;
    }
    let revoke_public = |token: String| {
        let (h, web) = (&h, web.clone());
        async move {
            h.post(
                "/oauth2/revoke",
                &[("token", token.as_str()), ("client_id", web.as_str())],
                None,
            )
            .await
            .status
        }
    };
    for _ in 0..3 {
        let token = h
            .login(&web, "alice", "correct horse")
            .await
            .str("access_token");
        assert_eq!(revoke_public(token).await, StatusCode::OK);
    }
    let token = h
        .login(&web, "alice", "correct horse")
        .await
        .str("access_token");
    assert_eq!(revoke_public(token).await, StatusCode::SERVICE_UNAVAILABLE);
    let token = h
        .login(&web, "bob", "correct horse")
        .await
        .str("access_token");
    assert_eq!(revoke_public(token).await, StatusCode::OK);
    h.finish().await;
}

/// An access token of this server for `client_id` and `subject`, with
/// `scope`, issued at `at` for five minutes (as an instance whose clock
/// reads `at` would mint it).
fn mint_at(h: &Harness, at: i64, client_id: &str, subject: &str, scope: &str) -> String {
    h.app
        .access
        .mint(
            tessera_server::access::Mint {
                client_id,
                subject,
                audience: vec![ISSUER.to_owned()],
                scope: scope.into(),
                auth_time: None,
                ttl: std::time::Duration::from_secs(300),
                sid: None,
                family: None,
                jti: None,
            },
            at,
        )
        .unwrap()
        .token
}

/// The `jti` of a token (read without verifying it).
fn jwt_id(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let json = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(payload).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&json).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// A client's secret rotated through one instance while another, its
/// clock 2 s ahead and its copy of the log read a second before the
/// change, still answers from its cache: the token it mints then has an
/// `iat` up to 3 s past the change's second, and the cut refuses it.
/// Before, the cut reached 2 s past the change and such a token outlived
/// the rotation.
async fn a_token_minted_from_a_stale_cache_on_a_clock_ahead_is_cut_off(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, _) = h.client(&[GrantType::ClientCredentials], "read").await;
    let rs = h.client(&[GrantType::ClientCredentials], "read").await;
    let before = tessera_server::store::now();
    tessera_server::store::clients::rotate_secret(
        &h.db,
        &id,
        crate::KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let stale = mint_at(&h, before + 3, &id, &id, "read");
    assert!(!h.active(&stale, (&rs.0, &rs.1)).await);
    // The cut, not the clock: another client's token of the same `iat`
    // stands.
    let other = mint_at(&h, before + 3, &rs.0, &rs.0, "read");
    assert!(h.active(&other, (&rs.0, &rs.1)).await);
    h.finish().await;
}

/// A token minted by an instance whose clock is two seconds ahead (its
/// `iat` in this one's future) is this server's: introspected as active
/// and revocable here. Before, it was unknown here, so a revocation
/// answered 200 and changed nothing. Far ahead, or expired, it is not.
async fn a_token_from_an_instance_a_little_ahead_is_known_and_revocable(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let rs = h.client(&[GrantType::ClientCredentials], "read").await;
    let now = tessera_server::store::now();
    let mint = |at: i64| mint_at(&h, at, &id, &id, "read");
    let ahead = mint(now + 2);
    assert!(h.active(&ahead, (&rs.0, &rs.1)).await);
    // This server's own APIs take it too (userinfo, the admin API), and
    // still hold `exp` exactly.
    let user = h.user("alice", "correct horse battery", "openid").await;
    let admin = h
        .client(&[GrantType::ClientCredentials], "tessera:admin")
        .await;
    let own = |at: i64, client_id: &str, subject: &str, scope: &str| {
        mint_at(&h, at, client_id, subject, scope)
    };
    let bearer = |path: &str, token: String| {
        h.send(
            axum::http::Request::get(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
    };
    for (path, client_id, subject, scope) in [
        ("/oauth2/userinfo", id.as_str(), user.as_str(), "openid"),
        (
            "/admin/clients",
            admin.0.as_str(),
            admin.0.as_str(),
            "tessera:admin",
        ),
    ] {
        let r = bearer(path, own(now + 2, client_id, subject, scope)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        let r = bearer(path, own(now - 301, client_id, subject, scope)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: expired");
    }
    assert!(
        !h.active(&mint(now + 60), (&rs.0, &rs.1)).await,
        "an hour's skew is not a little"
    );
    assert!(!h.active(&mint(now - 301), (&rs.0, &rs.1)).await, "expired");
    let r = h
        .post("/oauth2/revoke", &[("token", &ahead)], Some((&id, &secret)))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.app.access.revoked().sync(&h.db).await.unwrap();
    assert!(!h.active(&ahead, (&rs.0, &rs.1)).await, "revoked");
    h.finish().await;
}

/// Changes made through another instance reach this one through the
/// revocation log; a copy of it not read through lately (the follower
/// behind, the database unreachable) is not trusted: a client's cached
/// secret is read again, and a token's standing is checked after reading
/// the log. Before, a secret rotated elsewhere still worked here for the
/// cache's lifetime (10 s), minting tokens past the rotation's cut-off,
/// and a token revoked elsewhere was introspected active until the next
/// sync.
async fn a_copy_of_the_revocation_log_not_read_lately_is_not_trusted(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| {
        c.client_cache_ttl = std::time::Duration::from_secs(60);
    })
    .await
    else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let rs = h.client(&[GrantType::ClientCredentials], "read").await;
    let hr = &h;
    let issue = |secret: String| {
        let h = hr;
        let id = id.clone();
        async move {
            h.post(
                "/oauth2/token",
                &[("grant_type", "client_credentials")],
                Some((&id, &secret)),
            )
            .await
        }
    };
    // This instance reads its copy through, and caches the client.
    h.app.access.revoked().sync(&h.db).await.unwrap();
    let token = issue(secret.clone()).await.str("access_token");
    // Another instance rotates the secret and revokes the token; this one
    // reads nothing of it meanwhile.
    tessera_server::store::clients::rotate_secret(
        &h.db,
        &id,
        h.app.config.revocation_keep(),
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let elsewhere = tessera_server::store::revocation::Revocations::default();
    elsewhere
        .revoke_token(&h.db, &jwt_id(&token), tessera_server::store::now() + 300)
        .await
        .unwrap();
    // Once this copy is older than it may be trusted for:
    tokio::time::sleep(
        tessera_server::store::revocation::TRUSTED_FOR + std::time::Duration::from_millis(200),
    )
    .await;
    let old = issue(secret).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{}", old.text);
    assert_eq!(old.error(), "invalid_client");
    assert!(!h.active(&token, (&rs.0, &rs.1)).await, "revoked elsewhere");
    h.finish().await;
}

/// `POST /oauth2/userinfo` with the token as the form parameter
/// `access_token` (RFC 6750 §2.2; the OpenID conformance suite's
/// `oidcc-userinfo-post-body`) answers as with the header; a token in
/// both places, or twice, is `invalid_request`, and a bad one in the body
/// is refused as in the header.
async fn userinfo_takes_the_token_from_a_form_body_once(backend: Backend) {
    use axum::body::Body;
    use axum::http::Request;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, _) = h.client(&[GrantType::ClientCredentials], "openid").await;
    let user = h.user("alice", "correct horse battery", "openid").await;
    let token = mint_at(&h, tessera_server::store::now(), &id, &user, "openid");
    let post = |body: String, header_token: Option<&str>| {
        let mut request = Request::post("/oauth2/userinfo").header(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8",
        );
        if let Some(t) = header_token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        h.send(request.body(Body::from(body)).unwrap())
    };
    let r = post(format!("access_token={token}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["sub"], user.as_str());
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");

    let both = post(format!("access_token={token}"), Some(&token)).await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST, "{}", both.text);
    assert_eq!(both.json["error"], "invalid_request");
    assert!(both.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_request\""));
    let twice = post(format!("access_token={token}&access_token={token}"), None).await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    assert_eq!(twice.json["error"], "invalid_request");

    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let bad = post(format!("access_token={forged}"), None).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.json["error"], "invalid_token");
    // Sent without a value, the parameter counts as omitted (RFC 6749
    // §3.2): the header's token answers, and without one it is the 401
    // of no credentials (no error code, RFC 6750 §3.1).
    let empty = post("access_token=".into(), Some(&token)).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text);
    let empty = post("access_token=".into(), None).await;
    assert_eq!(empty.status, StatusCode::UNAUTHORIZED);
    assert!(!empty.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .contains("error="));
    // A body without the parameter: as before, the header or nothing.
    let none = post("other=1".into(), None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let header_only = post("other=1".into(), Some(&token)).await;
    assert_eq!(header_only.status, StatusCode::OK);
    // A body over the limit (sent without a length, as a stream would be)
    // is 413, as everywhere.
    let big = post(
        format!("access_token={token}&pad={}", "x".repeat(20_000)),
        None,
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", big.text);
    h.finish().await;
}

/// A single-page app on another origin may call the endpoints it needs
/// (CORS: discovery, keys, token, userinfo, revocation), without cookies;
/// the sign-in pages, introspection, the feed and the admin API answer no
/// other origin.
async fn single_page_apps_reach_the_token_endpoints_and_nothing_else(backend: Backend) {
    use axum::body::Body;
    use axum::http::Request;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let origin = "https://spa.example";
    let preflight = |path: &str| {
        Request::options(path)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    for path in [
        "/oauth2/token",
        "/oauth2/userinfo",
        "/oauth2/revoke",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ] {
        let r = h.send(preflight(path)).await;
        assert!(r.status.is_success(), "{path}: {}", r.status);
        assert_eq!(
            r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "{path}"
        );
        assert!(
            r.headers
                .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .is_none(),
            "{path}"
        );
    }
    // The answers themselves carry it too, errors included.
    let refused = h
        .send(
            Request::post("/oauth2/token")
                .header(header::ORIGIN, origin)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("grant_type=client_credentials"))
                .unwrap(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    // No page may guess passwords through its visitors' browsers: the
    // password grant is refused to a request with an Origin, before any
    // password is checked; without one (a program) it works.
    let legacy = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let form =
        format!("grant_type=password&client_id={legacy}&username=alice&password=correct+horse");
    let password = |origin: Option<&str>| {
        let mut request = Request::post("/oauth2/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.body(Body::from(form.clone())).unwrap()
    };
    let from_page = h.send(password(Some(origin))).await;
    assert_eq!(
        from_page.status,
        StatusCode::BAD_REQUEST,
        "{}",
        from_page.text
    );
    assert_eq!(from_page.error(), "invalid_request");
    assert!(from_page.json.get("access_token").is_none());
    let from_program = h.send(password(None)).await;
    assert_eq!(from_program.status, StatusCode::OK, "{}", from_program.text);
    let userinfo = h
        .send(
            Request::get("/oauth2/userinfo")
                .header(header::ORIGIN, origin)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(userinfo.status, StatusCode::UNAUTHORIZED);
    assert_eq!(userinfo.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(userinfo.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .contains("www-authenticate"));
    for path in [
        "/oauth2/introspect",
        "/oauth2/revocations",
        "/oauth2/authorize",
        "/login",
        "/oauth2/logout",
        "/admin/clients",
    ] {
        let r = h.send(preflight(path)).await;
        assert!(
            r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{path}: {:?}",
            r.headers
        );
    }
    h.finish().await;
}

async fn discovery_lists_what_the_server_supports(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["issuer"], ISSUER);
        assert_eq!(r.json["token_endpoint"], format!("{ISSUER}/oauth2/token"));
        assert_eq!(
            r.json["jwks_uri"],
            format!("{ISSUER}/.well-known/jwks.json")
        );
        let grants: Vec<&str> = r.json["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap())
            .collect();
        assert_eq!(
            grants,
            [
                "authorization_code",
                "client_credentials",
                "password",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:jwt-bearer"
            ]
        );
        let methods = r.json["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap();
        assert!(methods.iter().any(|m| m == "private_key_jwt"));
        let algs = r.json["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .unwrap();
        assert!(
            algs.iter().all(|a| !a.as_str().unwrap().starts_with("HS")),
            "no HMAC for private_key_jwt"
        );
        // RFC 8414 §2: each endpoint that lists private_key_jwt names
        // its algorithms too.
        for endpoint in ["token", "introspection", "revocation"] {
            let listed = r.json[format!("{endpoint}_endpoint_auth_methods_supported")]
                .as_array()
                .unwrap();
            if listed.iter().any(|m| m == "private_key_jwt") {
                let named =
                    &r.json[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")];
                assert_eq!(named.as_array(), Some(algs), "{endpoint}");
            }
        }
    }
    let r = h.get("/.well-known/jwks.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "public, max-age=300");
    let keys = r.json["keys"].as_array().unwrap();
    // The access-token key and the ID-token key (RS256 by default).
    assert_eq!(keys.len(), 2);
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "only public keys are published");
        }
    }
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[1]["alg"], "RS256");
    h.finish().await;
}

async fn health_readiness_and_metrics(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "").await;
    h.post(
        "/oauth2/token",
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    )
    .await;
    h.post(
        "/oauth2/token",
        &[("grant_type", "client_credentials")],
        Some((&id, "wrong")),
    )
    .await;
    // A request given up on before its handler answered (the listener's
    // timeout, or its client gone): counted all the same.
    let public = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let given_up = tokio::time::timeout(
        std::time::Duration::from_millis(5),
        h.login(&public, "alice", "correct horse"),
    )
    .await;
    assert!(given_up.is_err(), "the password was checked within 5 ms");
    let metrics = h.get("/metrics").await.text;
    assert!(
        metrics
            .contains("tessera_http_requests_total{route=\"/oauth2/token\",status=\"cancelled\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_tokens_issued_total{grant=\"client_credentials\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tessera_request_failures_total{route=\"/oauth2/token\",error=\"invalid_client\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    for gauge in [
        "tessera_audit_backlog_events ",
        "tessera_revocation_log_age_seconds ",
    ] {
        assert!(metrics.contains(gauge), "{gauge}: {metrics}");
    }
    assert!(!metrics.contains(&secret));
    // Not ready once the database is gone.
    h.db.close().await;
    assert_eq!(
        h.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    h.test_db.cleanup().await;
}

mod admin_api {
    use axum::body::Body;
    use axum::http::{header, Method, Request, StatusCode};
    use serde_json::{json, Value};
    use tessera_server::store::clients::GrantType;

    use crate::{both_backends, Backend, Harness, Reply};

    both_backends!(
        admin_api_needs_the_admin_scope,
        admin_api_manages_users_clients_and_keys,
        a_key_set_with_a_member_twice_is_refused_as_from_the_command_line,
        admin_listings_are_read_page_by_page,
        a_scope_taken_away_ends_what_was_issued_with_it,
        a_refused_admin_call_is_said_in_the_log,
        a_client_added_is_recorded_with_where_its_codes_go,
        a_stored_client_the_server_cannot_read_is_its_own_failure
    );

    /// A client row this server cannot read (a scope another version
    /// wrote) is the server's failure, 500: it was answered 400
    /// `invalid_request`, as if the caller had sent something wrong.
    async fn a_stored_client_the_server_cannot_read_is_its_own_failure(backend: Backend) {
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let admin = token(&h, "tessera:admin").await;
        let odd = h.client(&[GrantType::ClientCredentials], "read").await;
        h.execute(
            "UPDATE clients SET scopes = 'read \"quoted\"' WHERE client_id = $1",
            &[&odd.0],
        )
        .await;
        let path = format!("/admin/clients/{}", odd.0);
        let r = call(&h, Method::GET, &path, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
        assert_eq!(r.json["error"], "server_error", "{}", r.text);
        h.finish().await;
    }

    /// The audit event of a client added says where its codes, logouts
    /// and tokens may go: a first-party client registered with an
    /// attacker's redirect URI collects codes without a consent page, and
    /// deleted afterwards it left no trace of where they went (the event
    /// said only its name, grants and scopes).
    async fn a_client_added_is_recorded_with_where_its_codes_go(backend: Backend) {
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let admin = token(&h, "tessera:admin").await;
        let r = call(
            &h,
            Method::POST,
            "/admin/clients",
            Some(&admin),
            Some(json!({
                "name": "console",
                "grants": ["authorization_code"],
                "scopes": ["openid"],
                "redirect_uris": ["https://evil.example/cb"],
                "backchannel_logout_uri": "https://evil.example/bc",
                "first_party": true,
            })),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let added = crate::wait_for_audit(&h, "client_added", 1).await;
        let detail = added
            .iter()
            .filter_map(|e| e.detail.as_deref())
            .find(|d| d.contains("console"))
            .unwrap_or_default();
        for said in [
            "https://evil.example/cb",
            "backchannel_logout_uri=\"https://evil.example/bc\"",
            "first_party=true",
            "public=false",
        ] {
            assert!(detail.contains(said), "{said}: {detail}");
        }
        h.finish().await;
    }

    /// A token of this server refused by the admin API (403) is said in
    /// the log (a warning: someone holding a real token tries the API); a
    /// call without one, or with one that is not valid here (`Bearer x`,
    /// which anyone can send in a loop), is not warned of. Before,
    /// refusals left no trace, and then every junk token left one.
    async fn a_refused_admin_call_is_said_in_the_log(backend: Backend) {
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let (logged, _logging) = crate::Logged::capture();
        let plain = token(&h, "read").await;
        assert_eq!(
            call(&h, Method::GET, "/admin/users", None, None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        // Not a token of this server: anyone can send one per request,
        // and a warning each time would flood the log.
        for _ in 0..3 {
            assert_eq!(
                call(&h, Method::GET, "/admin/users", Some("x"), None)
                    .await
                    .status,
                StatusCode::UNAUTHORIZED
            );
        }
        let said = || String::from_utf8_lossy(&logged.0.lock().unwrap()).to_string();
        assert!(!said().contains("admin API call refused"), "{}", said());
        let r = call(&h, Method::GET, "/admin/users", Some(&plain), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let text = said();
        assert!(text.contains("admin API call refused"), "{text}");
        assert!(
            text.contains("status=403") && text.contains("/admin/users"),
            "{text}"
        );
        // An administrator's token taken back (revoked here) and tried
        // again: a 401 like any invalid token, but said, since this
        // server signed it.
        let admin = token(&h, "tessera:admin").await;
        assert_eq!(
            call(&h, Method::GET, "/admin/users", Some(&admin), None)
                .await
                .status,
            StatusCode::OK
        );
        let (_, claims) = tessera_jose::dangerous::decode_unverified_claims(&admin).unwrap();
        h.app
            .access
            .revoked()
            .revoke_token(
                &h.db,
                claims["jti"].as_str().unwrap(),
                claims["exp"].as_i64().unwrap(),
            )
            .await
            .unwrap();
        let r = call(&h, Method::GET, "/admin/users", Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let text = said();
        assert!(text.contains("token taken back"), "{text}");
        assert!(!text.contains(&admin), "the token itself is never logged");
        h.finish().await;
    }

    /// A user's scopes changed through the admin API: taking one away ends
    /// the user's refresh families and refuses the access tokens issued
    /// before (an administrator demoted must not go on with the scope
    /// until they expire); adding one ends nothing. Before, scopes could
    /// not be changed at all: only deleting the user took one away.
    async fn a_scope_taken_away_ends_what_was_issued_with_it(backend: Backend) {
        let Some(h) = Harness::with(backend, |c| c.max_login_failures = 0).await else {
            return;
        };
        let admin = token(&h, "tessera:admin").await;
        let rs = h.client(&[GrantType::ClientCredentials], "read").await;
        let web = h.public_client("read write").await;
        h.user("alice", "correct horse", "read write").await;
        let set = |scopes: Value| {
            call(
                &h,
                Method::PATCH,
                "/admin/users/alice",
                Some(&admin),
                Some(json!({ "scopes": scopes })),
            )
        };
        // Scopes that cannot be read change nothing, the name included.
        let bad = call(
            &h,
            Method::PATCH,
            "/admin/users/alice",
            Some(&admin),
            Some(json!({ "name": "Mallory", "scopes": ["a\"b"] })),
        )
        .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
        let listed = call(&h, Method::GET, "/admin/users", Some(&admin), None).await;
        assert!(!listed.text.contains("Mallory"), "{}", listed.text);
        let login = h.login(&web, "alice", "correct horse").await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.text);
        let access = login.str("access_token");
        // Added: nothing ends.
        assert_eq!(
            set(json!(["read", "write", "extra"])).await.status,
            StatusCode::NO_CONTENT
        );
        assert!(h.active(&access, (&rs.0, &rs.1)).await);
        // Taken away: the token and the refresh family end.
        h.next_second().await;
        assert_eq!(set(json!(["read"])).await.status, StatusCode::NO_CONTENT);
        assert!(!h.active(&access, (&rs.0, &rs.1)).await);
        let refreshed = h.refresh(&web, &login.str("refresh_token"), None).await;
        assert_eq!(refreshed.error(), "invalid_grant", "{}", refreshed.text);
        // A new login gets what is left.
        h.next_second().await;
        let again = h.login(&web, "alice", "correct horse").await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert_eq!(again.str("scope"), "read");
        let unknown = call(
            &h,
            Method::PATCH,
            "/admin/users/nobody",
            Some(&admin),
            Some(json!({ "scopes": ["read"] })),
        )
        .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        // A client's scopes: taking one away refuses what it holds.
        let (svc, svc_secret) = h
            .client(&[GrantType::ClientCredentials], "read write")
            .await;
        let held = h.client_credentials_token(&svc, &svc_secret).await;
        let svc_path = format!("/admin/clients/{svc}");
        let set_client = |scopes: Value| {
            call(
                &h,
                Method::PATCH,
                &svc_path,
                Some(&admin),
                Some(json!({ "scopes": scopes })),
            )
        };
        assert_eq!(
            set_client(json!(["read", "write", "more"])).await.status,
            StatusCode::NO_CONTENT
        );
        assert!(h.active(&held, (&rs.0, &rs.1)).await, "adding ends nothing");
        h.next_second().await;
        assert_eq!(
            set_client(json!(["read"])).await.status,
            StatusCode::NO_CONTENT
        );
        assert!(!h.active(&held, (&rs.0, &rs.1)).await);
        h.next_second().await;
        let now_held = h.client_credentials_token(&svc, &svc_secret).await;
        let (_, claims) = tessera_jose::dangerous::decode_unverified_claims(&now_held).unwrap();
        assert_eq!(claims["scope"], "read");
        // The admin scope only without another audience, as at registration.
        let api = tessera_server::store::clients::add(
            &h.db,
            tessera_server::store::clients::NewClient {
                name: "api-client".into(),
                grants: vec![GrantType::ClientCredentials],
                scopes: tessera_server::store::Scopes::parse("read").unwrap(),
                audiences: vec!["store-api".into()],
                ..Default::default()
            },
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        let refused = call(
            &h,
            Method::PATCH,
            &format!("/admin/clients/{}", api.client_id),
            Some(&admin),
            Some(json!({ "scopes": ["read", "tessera:admin"] })),
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
        // The same refused when it would be added, either admin scope.
        for scope in ["tessera:admin", "tessera:admin:read"] {
            let refused = call(
                &h,
                Method::PATCH,
                &format!("/admin/clients/{}", api.client_id),
                Some(&admin),
                Some(json!({ "add_scopes": [scope] })),
            )
            .await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
        }
        // Some added and some taken away, the others kept; taking one away
        // this way refuses what was issued with it too.
        let edit = |body: Value| call(&h, Method::PATCH, &svc_path, Some(&admin), Some(body));
        assert_eq!(
            edit(json!({ "add_scopes": ["write", "audit"] }))
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        h.next_second().await;
        let held = h.client_credentials_token(&svc, &svc_secret).await;
        h.next_second().await;
        assert_eq!(
            edit(json!({ "remove_scopes": ["write"] })).await.status,
            StatusCode::NO_CONTENT
        );
        assert!(!h.active(&held, (&rs.0, &rs.1)).await);
        let got = call(&h, Method::GET, &svc_path, Some(&admin), None).await;
        assert_eq!(got.json["scopes"], "audit read", "{}", got.text);
        for wrong in [
            json!({ "scopes": ["read"], "add_scopes": ["x"] }),
            json!({ "add_scopes": ["x"], "remove_scopes": ["x"] }),
            json!({ "add_scopes": [""] }),
            json!({}),
            // `null` is not "unchanged" (it was, with the additions made).
            json!({ "scopes": null, "add_scopes": ["x"] }),
        ] {
            let r = edit(wrong.clone()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{wrong}: {}", r.text);
        }
        let user_edit = call(
            &h,
            Method::PATCH,
            "/admin/users/alice",
            Some(&admin),
            Some(json!({ "add_scopes": ["audit"] })),
        )
        .await;
        assert_eq!(
            user_edit.status,
            StatusCode::NO_CONTENT,
            "{}",
            user_edit.text
        );
        let alice = call(&h, Method::GET, "/admin/users/alice", Some(&admin), None).await;
        assert_eq!(alice.json["scopes"], "audit read", "{}", alice.text);
        let events = crate::wait_for_audit(&h, "user_scopes_changed", 3).await;
        assert!(events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.ends_with("scope=\"read\""))));
        // An edit records the scopes it left, not the edit.
        assert!(events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.ends_with("scope=\"audit read\""))));
        h.finish().await;
    }

    /// Every page of a listing from `path`, following its `Link: rel=next`
    /// headers; each page's items, and the addresses followed.
    async fn pages(h: &Harness, admin: &str, path: &str) -> (Vec<Vec<Value>>, Vec<String>) {
        let (mut pages, mut followed) = (Vec::new(), Vec::new());
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            let r = call(h, Method::GET, &path, Some(admin), None).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
            pages.push(r.json.as_array().unwrap().clone());
            if let Some(link) = r.headers.get(header::LINK) {
                let link = link.to_str().unwrap();
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                let target = link.trim_start_matches('<').split('>').next().unwrap();
                followed.push(target.to_owned());
                next = Some(target.to_owned());
            }
            assert!(pages.len() < 50, "the pages never end");
        }
        (pages, followed)
    }

    /// The listings of users, clients, sessions and audit events come a
    /// page at a time (`limit`, 100 unless given, at most 1,000), the next
    /// page named in a `Link` header (`after`, the other parameters
    /// kept), each item once; they were read whole (users, clients), or
    /// only their newest page could be read (sessions, audit events).
    async fn admin_listings_are_read_page_by_page(backend: Backend) {
        use tessera_server::store::{sessions, users, Scopes};
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let admin = token(&h, "tessera:admin").await;
        let mut ids = Vec::new();
        for name in ["carol", "alice", "erin", "bob", "dave"] {
            let user = users::add(
                &h.db,
                name,
                "not-a-hash",
                &Scopes::default(),
                &users::Profile::default(),
                tessera_server::store::audit::InChange::none(),
            )
            .await
            .unwrap();
            ids.push(user.id);
        }
        let (users, followed) = pages(&h, &admin, "/admin/users?limit=2").await;
        let sizes: Vec<usize> = users.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let names: Vec<&str> = users
            .iter()
            .flatten()
            .map(|u| u["username"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alice", "bob", "carol", "dave", "erin"]);
        assert!(followed
            .iter()
            .all(|f| f.starts_with("/admin/users?limit=2&after=")));
        // A listing that fills its page exactly ends there, with no Link.
        let (whole, followed) = pages(&h, &admin, "/admin/users?limit=5").await;
        assert_eq!(whole.len(), 1);
        assert!(followed.is_empty());

        for i in 0..4 {
            let r = call(
                &h,
                Method::POST,
                "/admin/clients",
                Some(&admin),
                Some(json!({"name": format!("app {i}"), "grants": ["client_credentials"]})),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        let (clients, _) = pages(&h, &admin, "/admin/clients?limit=2").await;
        let all: Vec<&Value> = clients.iter().flatten().collect();
        assert_eq!(all.len(), 5, "four added and the admin's own");
        let mut seen: Vec<&str> = all
            .iter()
            .map(|c| c["client_id"].as_str().unwrap())
            .collect();
        let created: Vec<i64> = all
            .iter()
            .map(|c| c["created_at"].as_i64().unwrap())
            .collect();
        assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 5, "a client listed twice");
        // A client row this version cannot read (a grant a newer version
        // stored) is left out, and the others are still listed, across
        // pages (before, every page answered 500).
        let unreadable = all
            .iter()
            .find(|c| c["name"] == "app 0")
            .map(|c| c["client_id"].as_str().unwrap().to_owned())
            .unwrap();
        h.execute(
            "UPDATE clients SET grants = 'client_credentials grant_of_the_future' WHERE client_id = $1",
            &[&unreadable],
        )
        .await;
        let (clients, _) = pages(&h, &admin, "/admin/clients?limit=2").await;
        let listed: Vec<&str> = clients
            .iter()
            .flatten()
            .map(|c| c["client_id"].as_str().unwrap())
            .collect();
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(!listed.contains(&unreadable.as_str()));

        let policy = h.app.config.sessions;
        for _ in 0..3 {
            let checked = sessions::LoggedIn {
                user_id: &ids[0],
                password_hash: "not-a-hash",
            };
            sessions::start(&h.db, checked, policy, "browser")
                .await
                .unwrap()
                .unwrap();
        }
        let (listed, followed) = pages(&h, &admin, "/admin/sessions?user=carol&limit=2").await;
        let sizes: Vec<usize> = listed.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1]);
        assert!(followed[0].contains("user=carol"), "{followed:?}");
        let mut sids: Vec<&str> = listed
            .iter()
            .flatten()
            .map(|s| s["sid"].as_str().unwrap())
            .collect();
        sids.sort_unstable();
        sids.dedup();
        assert_eq!(sids.len(), 3);
        // A user without sessions has an empty list; a name no user has is
        // said to be unknown, not shown as a user without sessions.
        let none = call(
            &h,
            Method::GET,
            "/admin/sessions?user=dave",
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(none.status, StatusCode::OK, "{}", none.text);
        assert_eq!(none.text.trim(), "[]");
        let unknown = call(
            &h,
            Method::GET,
            "/admin/sessions?user=nobody",
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);

        let added = crate::wait_for_audit(&h, "client_added", 4).await;
        assert!(added.len() >= 4);
        // What was granted is said: a client added with the admin scope
        // shows it.
        assert!(
            added
                .iter()
                .all(|e| e.detail.as_deref().is_some_and(|d| d.contains(" scope="))),
            "{added:?}"
        );
        let (events, followed) = pages(&h, &admin, "/admin/audit?event=client_added&limit=3").await;
        let ids: Vec<i64> = events
            .iter()
            .flatten()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids.len(), 4);
        assert!(
            ids.windows(2).all(|w| w[0] > w[1]),
            "newest first, each once: {ids:?}"
        );
        assert!(followed[0].contains("event=client_added"), "{followed:?}");

        for bad in [
            "/admin/clients?after=garbage",
            "/admin/audit?after=x",
            "/admin/sessions?after=1",
        ] {
            let r = call(&h, Method::GET, bad, Some(&admin), None).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
            assert_eq!(r.json["error"], "invalid_request");
        }
        h.finish().await;
    }

    /// The admin API hands the JWK set on as sent, so the strict reader
    /// the command line uses sees it whole: a member written twice (one
    /// key set for a reviewer, another for the server) is refused, not
    /// read as the last one.
    async fn a_key_set_with_a_member_twice_is_refused_as_from_the_command_line(backend: Backend) {
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let admin = token(&h, "tessera:admin").await;
        let key = |kid: &str| {
            let key = tessera_jose::SigningKey::generate(tessera_jose::Algorithm::ES256)
                .unwrap()
                .with_kid(kid);
            key.verifying_key()
                .unwrap()
                .to_public_jwk()
                .unwrap()
                .to_json()
        };
        let post = |jwks: String| {
            let body =
                format!(r#"{{"name":"signer","grants":["client_credentials"],"jwks":{jwks}}}"#);
            let request = Request::builder()
                .method(Method::POST)
                .uri("/admin/clients")
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            h.send(request)
        };
        let (a, b) = (key("a"), key("b"));
        let twice = post(format!(r#"{{"keys":[{a}],"keys":[{b}]}}"#)).await;
        assert_eq!(twice.status, StatusCode::BAD_REQUEST, "{}", twice.text);
        assert_eq!(twice.json["error"], "invalid_request");
        let once = post(format!(r#"{{"keys":[{a}]}}"#)).await;
        assert_eq!(once.status, StatusCode::CREATED, "{}", once.text);
        h.finish().await;
    }

    async fn token(h: &Harness, scope: &str) -> String {
        let (id, secret) = h.client(&[GrantType::ClientCredentials], scope).await;
        h.client_credentials_token(&id, &secret).await
    }

    async fn call(
        h: &Harness,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        h.send(request.body(body).unwrap()).await
    }

    async fn admin_api_needs_the_admin_scope(backend: Backend) {
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let plain = token(&h, "read").await;
        let admin = token(&h, "tessera:admin").await;
        let reader = token(&h, "tessera:admin:read").await;

        // Every operation the OpenAPI document lists exists and is guarded.
        let doc: Value = serde_json::from_str(tessera_server::http::admin::OPENAPI).unwrap();
        let (mut operations, mut reads) = (0, 0);
        for (path, methods) in doc["paths"].as_object().unwrap() {
            let path = path
                .replace("{username}", "nobody")
                .replace("{client_id}", "nobody")
                .replace("{kid}", "nobody");
            for (method, op) in methods.as_object().unwrap() {
                let method: Method = method.to_uppercase().parse().unwrap();
                // What the document says each operation needs: an
                // operation's own `security`, else the document's.
                let security = op.get("security").unwrap_or(&doc["security"]);
                let r = call(&h, method.clone(), &path, None, None).await;
                if path == "/admin/openapi.json" {
                    assert_eq!(r.status, StatusCode::OK);
                    assert_eq!(security, &serde_json::json!([]), "served to anyone");
                    continue;
                }
                assert_eq!(
                    security,
                    &serde_json::json!([{ "bearer": [] }]),
                    "{method} {path} must say it needs the bearer token"
                );
                for code in ["400", "401", "403", "503"] {
                    assert!(
                        op["responses"].get(code).is_some(),
                        "{method} {path} does not list {code}"
                    );
                }
                if op.get("requestBody").is_some() {
                    for code in ["413", "415"] {
                        assert!(
                            op["responses"].get(code).is_some(),
                            "{method} {path} does not list {code}"
                        );
                    }
                }
                operations += 1;
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path}: {}",
                    r.text
                );
                // The guard's answer, as at every API it protects: a
                // request without a token gets a bare challenge, no
                // error code (RFC 6750 §3.1).
                assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
                assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
                let r = call(&h, method.clone(), &path, Some(&plain), None).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
                assert_eq!(r.json["error"], "insufficient_scope");
                assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
                // The read-only scope reads, and changes nothing.
                let r = call(&h, method.clone(), &path, Some(&reader), None).await;
                if method == Method::GET {
                    assert!(
                        [StatusCode::OK, StatusCode::NOT_FOUND].contains(&r.status),
                        "{method} {path}: {} {}",
                        r.status,
                        r.text
                    );
                    reads += 1;
                } else {
                    assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
                    assert_eq!(r.json["error"], "insufficient_scope");
                }
            }
        }
        assert_eq!(operations, 20);
        assert_eq!(reads, 7);

        // A body over the limit is 413, one that is not JSON 415, as the
        // document says (both were 400).
        let send = |content_type: &'static str, body: Vec<u8>| {
            let request = Request::builder()
                .method(Method::POST)
                .uri("/admin/users")
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .unwrap();
            h.send(request)
        };
        let big = format!(r#"{{"username":"{}"}}"#, "a".repeat(20_000)).into_bytes();
        assert_eq!(
            send("application/json", big).await.status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let text = br#"{"username":"bob"}"#.to_vec();
        assert_eq!(
            send("text/plain", text).await.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let r = call(&h, Method::GET, "/admin/users", Some("not.a.token"), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // A token that administers this server is for this server alone:
        // an API a client also has tokens for never gets one it could
        // replay here (RFC 9068 §4), whatever the client's audiences (such
        // clients, stored before registration refused them, get tokens
        // for the issuer alone).
        for (audiences, scope) in [
            (vec!["store-api".to_owned()], "tessera:admin"),
            (
                vec!["store-api".to_owned(), crate::ISSUER.to_owned()],
                "tessera:admin",
            ),
            (vec!["store-api".to_owned()], "tessera:admin:read"),
        ] {
            let added = tessera_server::store::clients::add(
                &h.db,
                tessera_server::store::clients::NewClient {
                    name: "ops".into(),
                    grants: vec![GrantType::ClientCredentials],
                    scopes: tessera_server::store::Scopes::parse(scope).unwrap(),
                    audiences: audiences.clone(),
                    ..Default::default()
                },
                tessera_server::store::audit::InChange::none(),
            )
            .await
            .unwrap();
            let for_api = h
                .client_credentials_token(&added.client_id, added.client_secret.unwrap().as_ref())
                .await;
            let (_, claims) = tessera_jose::dangerous::decode_unverified_claims(&for_api).unwrap();
            assert_eq!(
                claims["aud"],
                serde_json::json!([crate::ISSUER]),
                "{audiences:?}"
            );
            let r = call(&h, Method::GET, "/admin/users", Some(&for_api), None).await;
            assert_eq!(r.status, StatusCode::OK, "{audiences:?}: {}", r.text);
        }
        // And registration refuses such a client, its scopes given one by
        // one or in one string.
        for scopes in [
            serde_json::json!(["tessera:admin", "orders:read"]),
            serde_json::json!(["orders:read tessera:admin"]),
            serde_json::json!(["tessera:admin:read"]),
        ] {
            let refused = call(
                &h,
                Method::POST,
                "/admin/clients",
                Some(&admin),
                Some(serde_json::json!({
                    "name": "ops",
                    "grants": ["client_credentials"],
                    "scopes": scopes,
                    "audiences": ["store-api"],
                })),
            )
            .await;
            assert_eq!(
                refused.status,
                StatusCode::BAD_REQUEST,
                "{scopes}: {}",
                refused.text
            );
            assert!(refused.text.contains("tessera:admin"), "{}", refused.text);
        }
        // A public client's codes go to whoever answers at its redirect
        // URI: with an admin scope, only an https one, at registration and
        // when the scope is given later.
        let register = |scopes: &[&str], redirect: &str| {
            let body = serde_json::json!({
                "name": "admin tool",
                "grants": ["authorization_code"],
                "public": true,
                "first_party": true,
                "redirect_uris": [redirect],
                "scopes": scopes,
            });
            call(&h, Method::POST, "/admin/clients", Some(&admin), Some(body))
        };
        for open in [
            "http://127.0.0.1/cb",
            "com.example.admin:/cb",
            "https://localhost:8443/cb",
        ] {
            for scope in ["tessera:admin", "tessera:admin:read"] {
                let refused = register(&["openid", scope], open).await;
                assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{open} {scope}");
                assert!(
                    refused.text.contains("other than loopback"),
                    "{}",
                    refused.text
                );
            }
            let tool = register(&["openid"], open).await;
            assert_eq!(tool.status, StatusCode::CREATED, "{}", tool.text);
            let id = tool.json["client_id"].as_str().unwrap().to_owned();
            for change in [
                serde_json::json!({ "add_scopes": ["tessera:admin"] }),
                serde_json::json!({ "scopes": ["openid", "tessera:admin:read"] }),
            ] {
                let path = format!("/admin/clients/{id}");
                let refused = call(&h, Method::PATCH, &path, Some(&admin), Some(change)).await;
                assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
            }
        }
        let https = register(&["openid", "tessera:admin"], "https://admin.example.com/cb").await;
        assert_eq!(https.status, StatusCode::CREATED, "{}", https.text);
        // Parameters that cannot be read get the API's JSON errors, as a
        // malformed body does.
        // Session lists are bounded: `limit` (default 100, at most 1,000).
        let alice = h.user("alice", "correct horse", "read").await;
        for _ in 0..3 {
            h.start_session(&alice, h.app.config.sessions).await;
        }
        for (query, listed) in [
            ("", 3),
            ("?limit=2", 2),
            ("?limit=0", 1),
            ("?user=alice&limit=5", 3),
        ] {
            let r = call(
                &h,
                Method::GET,
                &format!("/admin/sessions{query}"),
                Some(&admin),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text);
            assert_eq!(r.json.as_array().unwrap().len(), listed, "{query}");
            assert_eq!(r.headers[header::CACHE_CONTROL], "no-store", "{query}");
        }
        for (method, path) in [
            (Method::GET, "/admin/audit?limit=many"),
            // A filter it does not have is refused, not ignored (which
            // would answer every event as if filtered).
            (Method::GET, "/admin/audit?subject=alice"),
            (Method::GET, "/admin/sessions?user=a&user=b"),
            (Method::DELETE, "/admin/users/%FF%FE"),
        ] {
            let r = call(&h, method, path, Some(&admin), None).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
            assert_eq!(r.json["error"], "invalid_request", "{path}: {}", r.text);
        }
        assert_eq!(
            call(&h, Method::GET, "/admin/users", Some(&admin), None)
                .await
                .status,
            StatusCode::OK
        );
        // A revoked admin token stops working at once.
        let (id, secret) = h
            .client(&[GrantType::ClientCredentials], "tessera:admin")
            .await;
        let revocable = h.client_credentials_token(&id, &secret).await;
        h.post(
            "/oauth2/revoke",
            &[("token", &revocable)],
            Some((&id, &secret)),
        )
        .await;
        let r = call(&h, Method::GET, "/admin/users", Some(&revocable), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        h.finish().await;
    }

    async fn admin_api_manages_users_clients_and_keys(backend: Backend) {
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let admin = token(&h, "tessera:admin").await;
        let t = Some(admin.as_str());
        let r = call(
            &h,
            Method::POST,
            "/admin/users",
            t,
            Some(json!({"username": "alice", "password": "correct horse", "scopes": ["read"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.headers[header::LOCATION], "/admin/users/alice");
        assert!(r.json.get("password_hash").is_none());
        // The profile as set, `email_verified` included, as listed.
        let r = call(
            &h,
            Method::PATCH,
            "/admin/users/alice",
            t,
            Some(json!({"email": "alice@example.com", "email_verified": true})),
        )
        .await;
        assert!(r.status.is_success(), "{}", r.text);
        // A refused registration names the JSON field (and the flag).
        let r = call(
            &h,
            Method::POST,
            "/admin/clients",
            t,
            Some(json!({"name": "x", "grants": ["client_credentials"], "public": true})),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        let why = r.json["error_description"].as_str().unwrap();
        assert!(why.contains("drop public (--public)"), "{why}");
        let listed = call(&h, Method::GET, "/admin/users", t, None).await;
        assert_eq!(listed.json[0]["email"], "alice@example.com");
        assert_eq!(listed.json[0]["email_verified"], true, "{}", listed.text);
        // One user, as listed: what a change that keeps the rest starts
        // from; an unknown one, and a method a path does not take, in the
        // error shape.
        let one = call(&h, Method::GET, "/admin/users/alice", t, None).await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.text);
        assert_eq!(one.json, listed.json[0]);
        let none = call(&h, Method::GET, "/admin/users/nobody", t, None).await;
        assert_eq!(
            (none.status, none.json["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        // A change refused for any part writes no part: a bad email with
        // new scopes leaves the scopes; a list item that is not one scope
        // (an empty one would have cleared them all) is refused.
        for change in [
            json!({"email": "no at sign", "scopes": ["read", "write"]}),
            json!({"scopes": [""]}),
            json!({"add_scopes": ["read write"]}),
        ] {
            let r = call(
                &h,
                Method::PATCH,
                "/admin/users/alice",
                t,
                Some(change.clone()),
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{change}: {}", r.text);
        }
        // Nothing to change: nothing written, not even `updated_at`.
        let r = call(&h, Method::PATCH, "/admin/users/alice", t, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let r = call(&h, Method::PATCH, "/admin/users/nobody", t, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let after = call(&h, Method::GET, "/admin/users/alice", t, None).await;
        assert_eq!(after.json, one.json, "nothing changed");
        // `null` is never "unchanged" (it was, answered 204 with the
        // address kept): it removes a claim as an empty string does, puts
        // `email_verified` back to false, and is refused for the scopes,
        // whose "none" is `[]`.
        let r = call(
            &h,
            Method::PATCH,
            "/admin/users/alice",
            t,
            Some(json!({"scopes": null})),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        let r = call(
            &h,
            Method::PATCH,
            "/admin/users/alice",
            t,
            Some(json!({"email": null, "email_verified": null, "name": null})),
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let removed = call(&h, Method::GET, "/admin/users/alice", t, None).await;
        // A body is an object: serde reads a struct from an array too, by
        // position, and `["Mallory"]` set the name (found by the hostile
        // client, tests/hostile/admin-api.sh).
        for array in [json!(["Mallory"]), json!([null])] {
            let r = call(
                &h,
                Method::PATCH,
                "/admin/users/alice",
                t,
                Some(array.clone()),
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{array}: {}", r.text);
        }
        let r = call(
            &h,
            Method::POST,
            "/admin/users",
            t,
            Some(json!(["mallory", "correct horse"])),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        let unchanged = call(&h, Method::GET, "/admin/users/alice", t, None).await;
        assert_eq!(unchanged.json, removed.json);
        assert_eq!(removed.json["email"], Value::Null, "{}", removed.text);
        assert_eq!(removed.json["email_verified"], false, "{}", removed.text);
        assert_eq!(
            removed.json["scopes"], one.json["scopes"],
            "{}",
            removed.text
        );
        let wrong = call(&h, Method::PUT, "/admin/users/alice", t, None).await;
        assert_eq!(
            (wrong.status, wrong.json["error"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
            "{}",
            wrong.text
        );
        assert!(wrong.headers.contains_key("allow"));
        // A path that is no endpoint, under /admin: the same error shape.
        for typo in ["/admin/user", "/admin/users/alice/", "/admin"] {
            let none = call(&h, Method::GET, typo, t, None).await;
            assert_eq!(
                (none.status, none.json["error"].as_str()),
                (StatusCode::NOT_FOUND, Some("not_found")),
                "{typo}: {}",
                none.text
            );
        }
        assert_eq!(h.get("/nowhere").await.status, StatusCode::NOT_FOUND);
        let r = call(
            &h,
            Method::POST,
            "/admin/users",
            t,
            Some(json!({"username": "alice", "password": "correct horse"})),
        )
        .await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (StatusCode::CONFLICT, Some("conflict"))
        );
        let r = call(
            &h,
            Method::POST,
            "/admin/users",
            t,
            Some(json!({"username": "bob", "password": "short"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = call(
            &h,
            Method::POST,
            "/admin/users",
            t,
            Some(json!({"username": "bob", "pasword": "typo in a field"})),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "unknown fields are refused"
        );

        let r = call(
            &h,
            Method::POST,
            "/admin/clients",
            t,
            Some(
                json!({"name": "web", "grants": ["password"], "public": true, "scopes": ["read"]}),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(r.json["client_secret"].is_null());
        let web = r.json["client_id"].as_str().unwrap().to_owned();
        assert_eq!(r.headers[header::LOCATION], format!("/admin/clients/{web}"));
        // Where it says, the client is.
        let at = r.headers[header::LOCATION].to_str().unwrap().to_owned();
        let got = call(&h, Method::GET, &at, t, None).await;
        assert_eq!(got.json["client_id"], web.as_str(), "{}", got.text);
        assert_eq!(
            h.login(&web, "alice", "correct horse").await.status,
            StatusCode::OK
        );

        let r = call(&h, Method::POST, "/admin/users/alice/disable", t, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            h.login(&web, "alice", "correct horse").await.error(),
            "invalid_grant"
        );
        call(&h, Method::POST, "/admin/users/alice/enable", t, None).await;
        let r = call(
            &h,
            Method::PUT,
            "/admin/users/alice/password",
            t,
            Some(json!({"password": "battery staple"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        h.next_second().await;
        assert_eq!(
            h.login(&web, "alice", "battery staple").await.status,
            StatusCode::OK
        );

        let r = call(
            &h,
            Method::POST,
            "/admin/clients",
            t,
            Some(json!({"name": "worker", "scopes": ["read"]})),
        )
        .await;
        let (id, secret) = (
            r.json["client_id"].as_str().unwrap().to_owned(),
            r.json["client_secret"].as_str().unwrap().to_owned(),
        );
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        let r = call(
            &h,
            Method::POST,
            &format!("/admin/clients/{id}/rotate-secret"),
            t,
            None,
        )
        .await;
        let rotated = r.json["client_secret"].as_str().unwrap().to_owned();
        let old = h
            .post(
                "/oauth2/token",
                &[("grant_type", "client_credentials")],
                Some((&id, &secret)),
            )
            .await;
        assert_eq!(old.status, StatusCode::UNAUTHORIZED);
        let new = h
            .post(
                "/oauth2/token",
                &[("grant_type", "client_credentials")],
                Some((&id, &rotated)),
            )
            .await;
        assert_eq!(new.status, StatusCode::OK);
        let listed = call(&h, Method::GET, "/admin/clients", t, None).await;
        assert!(listed
            .json
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == id.as_str()));
        assert!(!listed.text.contains(&rotated));
        let one = call(&h, Method::GET, &format!("/admin/clients/{id}"), t, None).await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.text);
        let as_listed = listed.json.as_array().unwrap().iter();
        assert_eq!(
            Some(&one.json),
            as_listed
                .into_iter()
                .find(|c| c["client_id"] == id.as_str())
        );
        assert!(!one.text.contains(&rotated));
        assert_eq!(
            call(&h, Method::DELETE, &format!("/admin/clients/{id}"), t, None)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(&h, Method::DELETE, &format!("/admin/clients/{id}"), t, None)
                .await
                .status,
            StatusCode::NOT_FOUND
        );

        let r = call(&h, Method::POST, "/admin/keys/rotate", t, None).await;
        let kid = r.json["kid"].as_str().unwrap().to_owned();
        let keys = call(&h, Method::GET, "/admin/keys", t, None).await;
        let states: Vec<(&str, &str)> = keys
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["kid"].as_str().unwrap(), k["state"].as_str().unwrap()))
            .collect();
        // Two algorithms (access tokens, ID tokens), each rotated.
        assert_eq!(states.len(), 4);
        assert!(states.contains(&(kid.as_str(), "announced")), "{states:?}");
        // The activation answered is the one stored.
        let stored = keys
            .json
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .map(|k| k["activate_at"].clone());
        assert_eq!(Some(r.json["activate_at"].clone()), stored);
        let rotated = crate::wait_for_audit(&h, "key_rotation_started", 1).await;
        let kids: Vec<&str> = r.json["kids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(rotated[0].subject.as_deref(), Some(kids.join(" ").as_str()));
        // The command line's rotation and backup are in the audit trail
        // too, with the operating-system user who ran them.
        let cli = tessera_server::admin::AdminService {
            db: &h.db,
            passwords: &h.app.passwords,
            config: &h.app.config,
            clients: None,
            revocations: None,
            actor: tessera_server::admin::Actor::Cli {
                os_user: "ops".into(),
            },
        };
        // Through another instance's keys (the command opens its own): the
        // API lists the new key at once, read from the database (before,
        // from this instance's copy, until it read the keys again).
        let other = tessera_server::open(h.test_db.config()).await.unwrap();
        let theirs = cli.rotate_keys(&other.keys).await.unwrap();
        other.db.close().await;
        let keys = call(&h, Method::GET, "/admin/keys", t, None).await;
        assert!(keys.text.contains(&theirs[0]), "{}", keys.text);
        cli.backed_up("/backups/tessera.db").await.unwrap();
        let rotated = crate::wait_for_audit(&h, "key_rotation_started", 2).await;
        assert!(rotated
            .iter()
            .any(|e| e.detail.as_deref() == Some("by=cli user=ops")));
        let backup = crate::wait_for_audit(&h, "backup_written", 1).await;
        assert_eq!(backup[0].subject.as_deref(), Some("/backups/tessera.db"));

        assert_eq!(
            call(&h, Method::DELETE, "/admin/users/alice", t, None)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(&h, Method::DELETE, "/admin/users/alice", t, None)
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        // Written before the change was answered, not queued: read at
        // once, without waiting for a writer.
        let audit = tessera_server::store::audit::recent(&h.db, Some("user_deleted"), 10)
            .await
            .unwrap();
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert!(audit[0].detail.as_deref().unwrap().starts_with("by="));
        // Which client's token acted, too.
        assert!(audit[0].client_id.is_some(), "{audit:?}");
        let r = call(
            &h,
            Method::GET,
            "/admin/audit?event=client_added&limit=5",
            t,
            None,
        )
        .await;
        assert_eq!(r.json.as_array().unwrap().len(), 2, "{}", r.text);
        // A misspelt event finds nothing: it is refused, not answered
        // with an empty list that reads as "none happened".
        let r = call(&h, Method::GET, "/admin/audit?event=client_add", t, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(r.text.contains("client_added"), "{}", r.text);
        h.finish().await;
    }
}

mod owners {
    use crate::KEEP;
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use tessera_server::store::clients::{self, GrantType};
    use tessera_server::store::users;

    use crate::{both_backends, Backend, Harness};

    both_backends!(tokens_of_deleted_or_disabled_owners_are_inactive);

    async fn introspect(h: &Harness, rs: &(String, String), token: &str) -> bool {
        let r = h
            .post(
                "/oauth2/introspect",
                &[("token", token)],
                Some((&rs.0, &rs.1)),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["active"].as_bool().unwrap()
    }

    async fn admin_status(h: &Harness, token: &str) -> StatusCode {
        h.send(
            Request::get("/admin/users")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .status
    }

    /// A user's token dies with the user's deletion or while the user is
    /// disabled; a client's token dies with the client: at introspection
    /// and at the admin API, though their signatures still hold.
    async fn tokens_of_deleted_or_disabled_owners_are_inactive(backend: Backend) {
        let Some(h) = Harness::new(backend).await else {
            return;
        };
        let rs = h.client(&[GrantType::ClientCredentials], "read").await;
        let web = h.public_client("read tessera:admin").await;
        h.user("alice", "correct horse", "read tessera:admin").await;
        h.user("bob", "battery staple", "read").await;
        let alice = h
            .login(&web, "alice", "correct horse")
            .await
            .str("access_token");
        let bob = h
            .login(&web, "bob", "battery staple")
            .await
            .str("access_token");
        assert!(introspect(&h, &rs, &alice).await);
        assert_eq!(admin_status(&h, &alice).await, StatusCode::OK);
        // A user's change is audited with the user's id and name: the id
        // alone says nothing once the user is gone.
        let changed = h
            .send(
                Request::patch("/admin/users/bob")
                    .header(header::AUTHORIZATION, format!("Bearer {alice}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(r#"{"name": "Bob"}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
        let alice_id = users::find(&h.db, "alice").await.unwrap().unwrap().id;
        let audit = tessera_server::store::audit::recent(&h.db, Some("user_profile_changed"), 1)
            .await
            .unwrap();
        assert_eq!(
            audit[0].detail.as_deref(),
            Some(format!("by={alice_id} user=\"alice\"").as_str())
        );

        users::set_disabled(
            &h.db,
            "alice",
            true,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        assert!(
            !introspect(&h, &rs, &alice).await,
            "a disabled user's token"
        );
        assert_eq!(admin_status(&h, &alice).await, StatusCode::UNAUTHORIZED);
        users::set_disabled(
            &h.db,
            "alice",
            false,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        assert!(introspect(&h, &rs, &alice).await);

        users::delete(
            &h.db,
            "bob",
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        assert!(!introspect(&h, &rs, &bob).await, "a deleted user's token");

        // A client's own token, and a user's token through that client.
        let (id, secret) = h
            .client(&[GrantType::ClientCredentials], "tessera:admin")
            .await;
        let own = h.client_credentials_token(&id, &secret).await;
        assert!(introspect(&h, &rs, &own).await);
        assert_eq!(admin_status(&h, &own).await, StatusCode::OK);
        clients::delete(
            &h.db,
            &id,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        clients::delete(
            &h.db,
            &web,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        // This instance forgets the cached clients at once when the admin
        // API deletes them; here the store was called directly.
        h.app.clients.forget(&id);
        h.app.clients.forget(&web);
        assert!(!introspect(&h, &rs, &own).await, "a deleted client's token");
        assert_eq!(admin_status(&h, &own).await, StatusCode::UNAUTHORIZED);
        assert!(!introspect(&h, &rs, &alice).await, "its client is gone");
        h.finish().await;
    }
}

/// Revocations of every kind make tokens inactive here and are published
/// on the feed, which only resource servers with `revocations:read` read.
async fn revocations_reach_introspection_and_the_feed(backend: Backend) {
    use axum::body::Body;
    use axum::http::Request;
    use futures_util::StreamExt;
    use tessera_server::store::{clients, users};
    use tower::ServiceExt;

    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let keep = crate::KEEP;
    let (rs, rs_secret) = h
        .client(&[GrantType::ClientCredentials], "revocations:read")
        .await;
    let (batch, batch_secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let active = |token: String| {
        let (h, rs, rs_secret) = (&h, rs.clone(), rs_secret.clone());
        async move { h.active(&token, (&rs, &rs_secret)).await }
    };
    let log = h.app.access.revoked();

    // A password change ends the user's tokens; a login right after it,
    // even within the same second, gets a token that works.
    let before = h
        .login(&web, "alice", "correct horse")
        .await
        .str("access_token");
    assert!(active(before.clone()).await);
    let hash = h.hash("battery staple").await;
    users::set_password(
        &h.db,
        "alice",
        &hash,
        keep,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    log.sync(&h.db).await.unwrap();
    assert!(!active(before).await, "issued before the password change");
    h.next_second().await;
    let after = h
        .login(&web, "alice", "battery staple")
        .await
        .str("access_token");
    assert!(active(after.clone()).await, "issued after it");

    // A rotated secret ends the client's tokens, not the new ones.
    let old = h.client_credentials_token(&batch, &batch_secret).await;
    assert!(active(old.clone()).await);
    // Rotated elsewhere (the command line, another instance): whichever
    // sync here reads the event drops the cached client, and the old
    // secret stops working at once.
    let new_secret = clients::rotate_secret(
        &h.db,
        &batch,
        keep,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    log.sync(&h.db).await.unwrap();
    let refused = h
        .post(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some((&batch, &batch_secret)),
        )
        .await;
    assert_eq!(refused.error(), "invalid_client", "{}", refused.text);
    assert!(!active(old).await);
    let fresh = h.client_credentials_token(&batch, &new_secret).await;
    assert!(active(fresh).await);
    assert!(active(after).await, "other clients' tokens stand");

    // The feed: resource servers only.
    let feed = |token: Option<String>| {
        let mut request = Request::get("/oauth2/revocations");
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        h.router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
    };
    assert_eq!(feed(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let other = h
        .login(&web, "alice", "battery staple")
        .await
        .str("access_token");
    let refused = feed(Some(other)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let token = h.client_credentials_token(&rs, &rs_secret).await;
    let response = feed(Some(token)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let text = until_ready(&mut body).await;
    assert!(text.contains("\"kind\":\"user\""), "{text}");
    assert!(
        text.contains(&format!("\"kind\":\"client\",\"client_id\":\"{batch}\"")),
        "{text}"
    );
    assert!(text.find("kind\":\"user").unwrap() < text.find("kind\":\"client").unwrap());
    // A new revocation arrives on the open stream.
    users::set_disabled(
        &h.db,
        "alice",
        true,
        keep,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    log.sync(&h.db).await.unwrap();
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("pushed")
        .unwrap()
        .unwrap();
    let pushed = std::str::from_utf8(&chunk).unwrap();
    assert!(
        pushed.contains("event: revocation") && pushed.contains("\"kind\":\"user\""),
        "{pushed}"
    );
    // The discovery document names the feed.
    let metadata = h.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        metadata.json["revocation_feed_endpoint"],
        format!("{ISSUER}/oauth2/revocations")
    );
    h.finish().await;
}
