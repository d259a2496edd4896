//! `POST /oauth2/token`, through the router without sockets.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;
use tessera_jose::{jwt, Algorithm, Claims, JwkSet, NumericDate, SigningKey};
use tessera_server::store::clients::{self, GrantType, NewClient};
use tessera_server::store::{refresh, users, ScopeChange, Scopes};

use crate::{both_backends, verify_with_jwks, wait_for_audit, Backend, Harness, ISSUER, KEEP};

both_backends!(
    client_credentials_issue_rfc_9068_access_tokens,
    client_authentication_failures_are_invalid_client,
    malformed_requests_are_invalid_request,
    scopes_are_limited_to_the_client_and_the_user,
    password_logins_fail_alike_for_unknown_users_and_wrong_passwords,
    a_password_changed_while_logins_are_checked_ends_them_all,
    a_secret_rotated_while_requests_are_answered_ends_them_all,
    a_secret_rotated_at_another_instance_ends_requests_under_way,
    a_scope_taken_at_another_instance_ends_requests_under_way,
    failed_logins_are_rate_limited,
    a_stored_hash_that_cannot_be_read_is_no_wrong_password,
    login_limits_count_the_client_behind_a_trusted_proxy,
    simultaneous_guesses_cannot_outrun_the_limit,
    refresh_grant_rotates_and_detects_reuse,
    a_user_rotates_refresh_tokens_within_the_allowance,
    a_refused_refresh_changes_nothing,
    token_issued_events_can_be_turned_off,
    retries_in_the_grace_window_get_the_same_successor,
    disabled_users_cannot_refresh,
    private_key_jwt_authenticates_once_per_assertion,
    a_strict_assertion_audience_is_the_issuer_alone,
    jwt_bearer_grant_trades_an_assertion_for_a_token,
);

async fn client_credentials_issue_rfc_9068_access_tokens(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let added = clients::add(
        &h.db,
        NewClient {
            name: "worker".into(),
            scopes: Scopes::parse("orders:read orders:write").unwrap(),
            audiences: vec!["orders-api".into()],
            access_ttl: Some(300),
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let (id, secret) = (added.client_id, added.client_secret.unwrap());

    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "orders:read"),
            ],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.headers[header::PRAGMA], "no-cache");
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 300);
    assert_eq!(r.json["scope"], "orders:read");
    assert!(
        r.json.get("refresh_token").is_none(),
        "no refresh token for client_credentials"
    );

    let token = verify_with_jwks(&h, &r.str("access_token"), "orders-api").unwrap();
    assert_eq!(token.header.typ.as_deref(), Some("at+jwt"));
    assert!(token.header.kid.is_some());
    let c = &token.claims;
    assert_eq!(c.iss.as_deref(), Some(ISSUER));
    assert_eq!(c.sub.as_deref(), Some(id.as_str()));
    assert_eq!(c.custom["client_id"], id.as_str());
    assert_eq!(c.custom["scope"], "orders:read");
    assert!(c.jti.is_some());
    assert_eq!(c.exp.unwrap().seconds() - c.iat.unwrap().seconds(), 300);
    assert!(verify_with_jwks(&h, &r.str("access_token"), "another-api").is_err());

    // client_secret_post works too, and no scope means every allowed one.
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["scope"], "orders:read orders:write");

    // Issued tokens are audited (batched: wait for the writer).
    let issued = wait_for_audit(&h, "token_issued", 2).await;
    assert!(issued
        .iter()
        .all(|e| e.client_id.as_deref() == Some(id.as_str())));
    assert!(issued
        .iter()
        .all(|e| !e.detail.as_deref().unwrap_or("").contains(&*secret)));
    h.finish().await;
}

async fn client_authentication_failures_are_invalid_client(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let public = h.public_client("read").await;
    let cc = [("grant_type", "client_credentials")];
    let wrong = h
        .post("/oauth2/token", &cc, Some((&id, "wrong-secret")))
        .await;
    let unknown = h
        .post("/oauth2/token", &cc, Some(("nobody", &secret)))
        .await;
    let none = h.post("/oauth2/token", &cc, None).await;
    let confidential_without_secret = h
        .post(
            "/oauth2/token",
            &[("grant_type", "client_credentials"), ("client_id", &id)],
            None,
        )
        .await;
    let public_with_secret = h
        .post("/oauth2/token", &cc, Some((&public, "anything")))
        .await;
    // In the body, without a secret: invalid_client as 400, with no
    // Basic challenge (the client did not use Basic; RFC 6749 §5.2).
    assert_eq!(
        (
            confidential_without_secret.status,
            confidential_without_secret.error()
        ),
        (StatusCode::BAD_REQUEST, "invalid_client"),
        "{}",
        confidential_without_secret.text
    );
    assert!(confidential_without_secret
        .headers
        .get(header::WWW_AUTHENTICATE)
        .is_none());
    for (name, r) in [
        ("wrong secret", &wrong),
        ("unknown client", &unknown),
        ("no credentials", &none),
        ("public client with a secret", &public_with_secret),
    ] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.text);
        assert_eq!(r.error(), "invalid_client", "{name}");
        assert!(
            r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic"),
            "{name}"
        );
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        assert!(!r.text.contains(&secret));
    }
    // The same message whether the client exists or not.
    assert_eq!(wrong.json, unknown.json);
    // An empty Basic password: a confidential client's is wrong; a public
    // client's names it without a secret (requests-oauthlib's default),
    // as `client_id` in the body does, where public clients are taken.
    let empty = h.post("/oauth2/token", &cc, Some((&id, ""))).await;
    assert_eq!(
        (empty.status, empty.error()),
        (StatusCode::UNAUTHORIZED, "invalid_client"),
        "{}",
        empty.text
    );
    h.user("alice", "correct horse", "read").await;
    let login = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "correct horse"),
    ];
    let named = h.post("/oauth2/token", &login, Some((&public, ""))).await;
    assert_eq!(named.status, StatusCode::OK, "{}", named.text);
    let introspected = h
        .post(
            "/oauth2/introspect",
            &[("token", named.str("access_token").as_str())],
            Some((&public, "")),
        )
        .await;
    assert_eq!(
        (introspected.status, introspected.error()),
        (StatusCode::UNAUTHORIZED, "invalid_client"),
        "public clients do not introspect: {}",
        introspected.text
    );

    // Two methods at once are refused.
    let both = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", &secret),
                ("client_id", &id),
            ],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(
        (both.status, both.error()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    // A client may use only its own grants.
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "password"),
                ("username", "a"),
                ("password", "b"),
            ],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "unauthorized_client")
    );
    h.finish().await;
}

async fn malformed_requests_are_invalid_request(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let json = Request::post("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"grant_type":"client_credentials"}"#))
        .unwrap();
    let r = h.send(json).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    let repeated = Request::post("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=read&scope=write"
        )))
        .unwrap();
    let r = h.send(repeated).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{}",
        r.text
    );

    let r = h
        .post("/oauth2/token", &[("scope", "read")], Some((&id, &secret)))
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = h
        .post(
            "/oauth2/token",
            &[("grant_type", "implicit")],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "unsupported_grant_type")
    );

    // Parameters in the URL's query (a secret there lands in access logs)
    // are refused, not ignored, at each endpoint that takes a form; the
    // same request with them in the body passes.
    for path in ["/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"] {
        let queried = h
            .post(
                &format!("{path}?client_secret={secret}"),
                &[("grant_type", "client_credentials"), ("token", "x")],
                Some((&id, &secret)),
            )
            .await;
        assert_eq!(
            (queried.status, queried.error()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{path}: {}",
            queried.text
        );
        assert!(queried.text.contains("query"), "{}", queried.text);
    }
    let r = h
        .post(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A token with no scope says so: `scope` is sent empty, not left out
    // (RFC 6749 §5.1 leaves it out only when it is what was asked for).
    let (bare, bare_secret) = h.client(&[GrantType::ClientCredentials], "").await;
    let r = h
        .post(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some((&bare, &bare_secret)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["scope"], "", "{}", r.text);

    let huge = Request::post("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=client_credentials&scope={}",
            "a".repeat(64 * 1024)
        )))
        .unwrap();
    let r = h.send(huge).await;
    assert_eq!(
        r.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "an oversized body is refused: {}",
        r.text
    );
    h.finish().await;
}

async fn scopes_are_limited_to_the_client_and_the_user(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h
        .client(&[GrantType::ClientCredentials], "read write")
        .await;
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read admin"),
            ],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "bad\"scope"),
            ],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.error(), "invalid_scope");

    // Password grant: the user's scopes and the client's both bound it.
    let web = h.public_client("read write").await;
    h.user("alice", "correct horse", "read admin").await;
    let r = h.login(&web, "alice", "correct horse").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["scope"], "read");
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "password"),
                ("client_id", &web),
                ("username", "alice"),
                ("password", "correct horse"),
                ("scope", "admin"),
            ],
            None,
        )
        .await;
    assert_eq!(
        r.error(),
        "invalid_scope",
        "admin is the user's but not the client's"
    );
    h.finish().await;
}

/// Logins that read the user before a password change and finish after
/// it: none of them leaves a refresh token that still works, or an access
/// token the server still calls active (each would outlive the change the
/// owner made to lock an attacker out).
async fn a_password_changed_while_logins_are_checked_ends_them_all(backend: Backend) {
    use futures_util::StreamExt;
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 0).await else {
        return;
    };
    let web = h.public_client("read").await;
    let rs = h.client(&[GrantType::ClientCredentials], "read").await;
    h.user("alice", "old horse", "read").await;
    let new_hash = h.hash("new horse").await;
    // Every login reads alice's row at once; the two hashing threads take
    // them two by two. Each runs as a task of its own, as requests do in
    // the server: a login polled only with the others could stop inside
    // its transaction, holding the row the change below waits for.
    let h = std::sync::Arc::new(h);
    let mut logins: futures_util::stream::FuturesUnordered<_> = (0..12)
        .map(|_| {
            let (h, web) = (std::sync::Arc::clone(&h), web.clone());
            tokio::spawn(async move { h.login(&web, "alice", "old horse").await })
        })
        .collect();
    let first = logins.next().await.unwrap().unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    users::set_password(
        &h.db,
        "alice",
        &new_hash,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    // As the server's follower of the revocation log would, at once.
    h.app.access.revoked().catch_up(&h.db).await;
    let mut answers = vec![first];
    while let Some(answer) = logins.next().await {
        answers.push(answer.unwrap());
    }
    for answer in &answers {
        if answer.status != StatusCode::OK {
            assert_eq!(answer.error(), "invalid_grant");
            continue;
        }
        let refreshed = h
            .post(
                "/oauth2/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &web),
                    ("refresh_token", &answer.str("refresh_token")),
                ],
                None,
            )
            .await;
        assert_eq!(refreshed.error(), "invalid_grant", "{}", refreshed.text);
        assert!(!h.active(&answer.str("access_token"), (&rs.0, &rs.1)).await);
    }
    // The race was run: logins that read the old password were refused.
    let late = answers
        .iter()
        .filter(|a| a.status != StatusCode::OK)
        .count();
    assert!(late > 0, "no login finished after the change");
    drop(logins);
    if let Ok(h) = std::sync::Arc::try_unwrap(h) {
        h.finish().await;
    }
}

/// The answers to requests under way when their client changed: each is
/// a token minted before the cut (which the log refuses) or
/// `invalid_client`, and at least one finished after the change.
async fn none_outlives_the_change(h: &Harness, rs: (&str, &str), answers: &[crate::Reply]) {
    for answer in answers {
        if answer.status == StatusCode::OK {
            assert!(!h.active(&answer.str("access_token"), rs).await);
        } else {
            assert_eq!(answer.error(), "invalid_client", "{}", answer.text);
        }
    }
    assert!(
        answers.iter().any(|a| a.status != StatusCode::OK),
        "no request finished after the change"
    );
}

/// Requests that authenticated with a client's secret before it was
/// rotated (a leak) and finish after: none of them leaves a token the
/// server calls active. A request with the new secret, the same second,
/// gets its token.
async fn a_secret_rotated_while_requests_are_answered_ends_them_all(backend: Backend) {
    use futures_util::StreamExt;
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 0).await else {
        return;
    };
    let (web, old_secret) = h.client(&[GrantType::Password], "read").await;
    let rs = h.client(&[GrantType::ClientCredentials], "read").await;
    h.user("alice", "correct horse", "read").await;
    // Each request authenticates the client at once, then waits for the
    // two hashing threads; each is a task of its own, as in the server.
    let h = std::sync::Arc::new(h);
    let mut requests: futures_util::stream::FuturesUnordered<_> = (0..6)
        .map(|_| {
            let (h, web, old_secret) = (std::sync::Arc::clone(&h), web.clone(), old_secret.clone());
            tokio::spawn(async move {
                h.post(
                    "/oauth2/token",
                    &[
                        ("grant_type", "password"),
                        ("username", "alice"),
                        ("password", "correct horse"),
                    ],
                    Some((&web, &old_secret)),
                )
                .await
            })
        })
        .collect();
    let first = requests.next().await.unwrap().unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    // As `tessera client rotate-secret` through the admin API does.
    let new_secret = clients::rotate_secret(
        &h.db,
        &web,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    h.app.access.revoked().catch_up(&h.db).await;
    h.app.clients.forget(&web);
    let mut answers = vec![first];
    while let Some(answer) = requests.next().await {
        answers.push(answer.unwrap());
    }
    none_outlives_the_change(&h, (&rs.0, &rs.1), &answers).await;
    drop(requests);
    let now = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "correct horse"),
            ],
            Some((&web, &new_secret)),
        )
        .await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.text);
    assert!(h.active(&now.str("access_token"), (&rs.0, &rs.1)).await);
    if let Ok(h) = std::sync::Arc::try_unwrap(h) {
        h.finish().await;
    }
}

async fn password_logins_fail_alike_for_unknown_users_and_wrong_passwords(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let web = h.public_client("read").await;
    let alice = h.user("alice", "correct horse", "read").await;
    let ok = h.login(&web, "alice", "correct horse").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert!(ok.json["refresh_token"].as_str().unwrap().len() >= 43);
    let token = verify_with_jwks(&h, &ok.str("access_token"), ISSUER).unwrap();
    assert_eq!(token.claims.sub.as_deref(), Some(alice.as_str()));
    assert!(token.claims.custom["auth_time"].as_i64().is_some());

    let wrong = h.login(&web, "alice", "wrong horse").await;
    let unknown = h.login(&web, "mallory", "correct horse").await;
    assert_eq!(
        (wrong.status, wrong.error()),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert_eq!(
        wrong.json, unknown.json,
        "no user enumeration through messages"
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
    let disabled = h.login(&web, "alice", "correct horse").await;
    assert_eq!(disabled.json, wrong.json);
    h.finish().await;
}

/// Forty wrong passwords at once for one user: no more than the limit's
/// five are ever checked, the rest are 429 without a hash.
async fn simultaneous_guesses_cannot_outrun_the_limit(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let h = std::sync::Arc::new(h);
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let (h, web) = (std::sync::Arc::clone(&h), web.clone());
            tokio::spawn(async move { h.login(&web, "alice", &format!("guess {i}")).await })
        })
        .collect();
    let (mut checked, mut limited) = (0, 0);
    for guess in guesses {
        let r = guess.await.unwrap();
        match r.status {
            StatusCode::BAD_REQUEST => {
                assert_eq!(r.error(), "invalid_grant");
                checked += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("{other}: {}", r.text),
        }
    }
    assert!(
        checked <= 5,
        "{checked} guesses were checked; the limit is 5"
    );
    assert_eq!(checked + limited, 40);
    let failures = wait_for_audit(&h, "login_failed", checked).await;
    assert_eq!(failures.len(), checked);
    if let Ok(h) = std::sync::Arc::try_unwrap(h) {
        h.finish().await;
    }
}

async fn failed_logins_are_rate_limited(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 3).await else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    for _ in 0..3 {
        assert_eq!(
            h.login(&web, "alice", "guess").await.error(),
            "invalid_grant"
        );
    }
    // Now even the right password waits.
    let r = h.login(&web, "alice", "correct horse").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=301).contains(&retry), "{retry}");
    let failures = wait_for_audit(&h, "login_failed", 3).await;
    assert!(failures
        .iter()
        .all(|e| e.subject.as_deref() == Some("alice")));
    assert!(failures
        .iter()
        .all(|e| !e.detail.as_deref().unwrap_or("").contains("guess")));
    // The third failure locked the account out: said once, with how long.
    let locked = wait_for_audit(&h, "login_locked", 1).await;
    assert_eq!(locked[0].subject.as_deref(), Some("alice"));
    assert!(
        locked[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("for=")),
        "{locked:?}"
    );
    // What was typed as the name of no account (a password in the wrong
    // field, often) is not kept.
    h.login(&web, "hunter2-typed-as-name", "guess").await;
    let failures = wait_for_audit(&h, "login_failed", 4).await;
    assert!(failures.iter().all(|e| {
        let text = format!("{:?} {:?}", e.subject, e.detail);
        !text.contains("hunter2")
    }));
    h.finish().await;
}

/// A user whose stored hash is not Argon2 (imported with a bcrypt hash,
/// or a damaged row) gets a server error, not "wrong password", and the
/// attempts count against no limit: the operator has a fault to fix, and
/// the person is not locked out for it.
async fn a_stored_hash_that_cannot_be_read_is_no_wrong_password(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 3).await else {
        return;
    };
    let web = h.public_client("read").await;
    tessera_server::store::users::add(
        &h.db,
        "imported",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        &tessera_server::store::Scopes::parse("read").unwrap(),
        &tessera_server::store::users::Profile::default(),
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let r = h.login(&web, "imported", "correct horse").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
        assert_eq!(r.error(), "server_error");
    }
    h.finish().await;
}

/// Behind a trusted load balancer, each client's address counts on its
/// own (not the balancer's, which every login shares), and a client that
/// is not a trusted proxy cannot name its own address.
async fn login_limits_count_the_client_behind_a_trusted_proxy(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| {
        c.max_login_failures = 3;
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let web = h.public_client("read").await;
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        h.user(name, "correct horse", "read").await;
    }
    let login =
        |peer: [u8; 4], forwarded: &'static str, user: &'static str, password: &'static str| {
            let form = form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("grant_type", "password"),
                    ("client_id", web.as_str()),
                    ("username", user),
                    ("password", password),
                ])
                .finish();
            let request = Request::post("/oauth2/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("x-forwarded-for", forwarded)
                .extension(ConnectInfo(SocketAddr::from((peer, 40000))))
                .body(Body::from(form))
                .unwrap();
            h.send(request)
        };
    let balancer = [10, 0, 0, 2];
    // Three wrong passwords from one client, for three users: that
    // client's address is out of guesses.
    for user in ["u1", "u2", "u3"] {
        let r = login(balancer, "203.0.113.9", user, "guess").await;
        assert_eq!(r.error(), "invalid_grant");
    }
    let locked = login(balancer, "203.0.113.9", "u4", "correct horse").await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.text
    );
    // Another client through the same balancer is not.
    let other = login(balancer, "198.51.100.7", "u4", "correct horse").await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text);
    // The locked client claiming another address on its own (it is not a
    // trusted proxy) is still itself.
    let forged = login([203, 0, 113, 9], "198.51.100.8", "u5", "correct horse").await;
    assert_eq!(
        forged.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        forged.text
    );
    h.finish().await;
}

/// A refresh token no one was issued (made up, by anyone who knows a
/// public client's id), or one whose family was revoked (an app retrying
/// after its sign-in ended), is refused from a read, without the
/// rotation, which takes SQLite's one writer: answered while another
/// connection holds the database's write lock.
#[tokio::test]
async fn refresh_tokens_the_rotation_would_refuse_are_refused_without_the_writer() {
    let Some(h) = Harness::new(Backend::Sqlite).await else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let revoked = h
        .login(&web, "alice", "correct horse")
        .await
        .str("refresh_token");
    let revoking = h
        .post(
            "/oauth2/revoke",
            &[("token", revoked.as_str()), ("client_id", web.as_str())],
            None,
        )
        .await;
    assert_eq!(revoking.status, StatusCode::OK, "{}", revoking.text);
    let made_up = "bm90LWEtcmVmcmVzaC10b2tlbi1vZi1hbnlvbmUncw";
    for (token, said) in [
        (made_up, "unknown refresh token"),
        (revoked.as_str(), "refresh token revoked"),
    ] {
        let answered = h
            .dropped_while_held(("", b""), h.refresh(&web, token, None))
            .await
            .expect("a refused token waited for the writer");
        assert_eq!(answered.error(), "invalid_grant", "{}", answered.text);
        assert!(answered.text.contains(said), "{}", answered.text);
    }
    h.finish().await;
}

/// A retry of a rotated refresh token within the grace window (the same
/// successor again, and a new access token each time) counts against the
/// allowance as a rotation does: before, it was never counted, and a
/// client looping its rotated token minted tokens and audit events
/// without bound for the window's length.
async fn retries_within_the_grace_window_count_against_the_allowance(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| {
        c.refreshes_per_minute = 3;
        c.refresh_grace = std::time::Duration::from_secs(60);
    })
    .await
    else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let first = h
        .login(&web, "alice", "correct horse")
        .await
        .str("refresh_token");
    let rotated = h.refresh(&web, &first, None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let successor = rotated.str("refresh_token");
    for _ in 0..2 {
        let retried = h.refresh(&web, &first, None).await;
        assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
        assert_eq!(retried.str("refresh_token"), successor);
    }
    let refused = h.refresh(&web, &first, None).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    assert!(
        refresh::lookup(&h.db, &successor).await.unwrap().is_some(),
        "the successor is still live, to try again with"
    );
    h.finish().await;
}

both_backends!(retries_within_the_grace_window_count_against_the_allowance);

/// A revocation of a token that is no live refresh token of the client (a
/// made-up one, which anyone may send with a public client's id) is
/// answered from a read: it waits for no write. Before, each took SQLite's
/// one write connection, and a flood of them held up every token,
/// rotation and sign-in behind it. Shown with that connection held by
/// another transaction: the answer comes all the same.
#[tokio::test]
async fn revoking_a_made_up_token_takes_no_write() {
    let Some(h) = Harness::new(Backend::Sqlite).await else {
        return;
    };
    let client = h.public_client("read").await;
    let tessera_server::Db::Sqlite { writer, .. } = &h.db else {
        unreachable!("a SQLite database")
    };
    let mut held = writer.begin().await.unwrap();
    sqlx::query("UPDATE users SET updated_at = updated_at")
        .execute(&mut *held)
        .await
        .unwrap();
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        h.post(
            "/oauth2/revoke",
            &[("client_id", &client), ("token", "not-a-token-of-anyone")],
            None,
        ),
    )
    .await
    .expect("the revocation waited for the write connection");
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text);
    held.rollback().await.unwrap();
    h.finish().await;
}

/// Each rotation keeps the token it used up for two weeks and writes its
/// audit events: one user looping the grant, on any number of sessions,
/// is held to the allowance per client and user (429, `Retry-After`),
/// the token presented left as it was, nothing written; other users and
/// other clients keep theirs.
async fn a_user_rotates_refresh_tokens_within_the_allowance(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.refreshes_per_minute = 3).await else {
        return;
    };
    let (web, other_app) = (h.public_client("read").await, h.public_client("read").await);
    h.user("alice", "correct horse", "read").await;
    h.user("bob", "battery staple", "read").await;
    // Two sessions of alice's: the allowance is hers, not a session's.
    let mut alice = [
        h.login(&web, "alice", "correct horse")
            .await
            .str("refresh_token"),
        h.login(&web, "alice", "correct horse")
            .await
            .str("refresh_token"),
    ];
    for i in 0..3 {
        let rotated = h.refresh(&web, &alice[i % 2], None).await;
        assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
        alice[i % 2] = rotated.str("refresh_token");
    }
    let rows = h.count("SELECT COUNT(*) FROM refresh_tokens", &[]).await;
    let refused = h.refresh(&web, &alice[1], None).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(refused.error(), "invalid_request");
    let wait: u64 = refused.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=21).contains(&wait), "Retry-After: {wait}");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM refresh_tokens", &[]).await,
        rows,
        "a refused rotation writes nothing"
    );
    assert!(
        refresh::lookup(&h.db, &alice[1]).await.unwrap().is_some(),
        "the token presented is still live, to try again with"
    );
    // Bob, and alice through another app, have their own allowances.
    let bob = h
        .login(&web, "bob", "battery staple")
        .await
        .str("refresh_token");
    assert_eq!(h.refresh(&web, &bob, None).await.status, StatusCode::OK);
    let elsewhere = h
        .login(&other_app, "alice", "correct horse")
        .await
        .str("refresh_token");
    assert_eq!(
        h.refresh(&other_app, &elsewhere, None).await.status,
        StatusCode::OK
    );
    // Replays of used and dead tokens count against no one, and are
    // never refused for the allowance: a thief draining it with the live
    // chain it took cannot keep the victim's replay from ending it.
    h.user("carol", "correct horse", "read").await;
    let first = h
        .login(&web, "carol", "correct horse")
        .await
        .str("refresh_token");
    let rotated = h.refresh(&web, &first, None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    // The thief's chain uses up carol's allowance.
    let mut thiefs = rotated.str("refresh_token");
    for _ in 0..2 {
        let again = h.refresh(&web, &thiefs, None).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        thiefs = again.str("refresh_token");
    }
    assert_eq!(
        h.refresh(&web, &thiefs, None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..5 {
        let replay = h.refresh(&web, &first, None).await;
        assert_eq!(replay.error(), "invalid_grant", "{}", replay.text);
    }
    assert!(
        refresh::lookup(&h.db, &thiefs).await.unwrap().is_none(),
        "the replay ended the family, its allowance spent"
    );
    h.finish().await;
}

async fn refresh_grant_rotates_and_detects_reuse(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let web = h.public_client("read write").await;
    let (rs, rs_secret) = h.client(&[GrantType::ClientCredentials], "").await;
    h.user("alice", "correct horse", "read write").await;
    let login = h.login(&web, "alice", "correct horse").await;
    let first = login.str("refresh_token");
    let elsewhere = h.login(&web, "alice", "correct horse").await;
    let refresh = |token: String, scope: Option<&'static str>| {
        let (web, h) = (web.clone(), &h);
        async move { h.refresh(&web, &token, scope).await }
    };
    let second = refresh(first.clone(), Some("read")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(
        second.json["scope"], "read",
        "a refresh may narrow the scope"
    );
    let next = second.str("refresh_token");
    assert_ne!(next, first);
    let wider = refresh(next.clone(), Some("read write admin")).await;
    assert_eq!(wider.error(), "invalid_scope");

    // The first token again: reuse, the family is revoked, and the
    // access tokens minted with it too (the first presenter may have been
    // the thief); another login's stays.
    let active = |token: String| {
        let (h, rs, rs_secret) = (&h, rs.clone(), rs_secret.clone());
        async move { h.active(&token, (&rs, &rs_secret)).await }
    };
    assert!(active(second.str("access_token")).await);
    let reuse = refresh(first, None).await;
    assert_eq!(
        (reuse.status, reuse.error()),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    for minted in [login.str("access_token"), second.str("access_token")] {
        assert!(!active(minted).await, "an access token of the family");
    }
    assert!(active(elsewhere.str("access_token")).await);
    let after = refresh(next, None).await;
    assert_eq!(
        after.error(),
        "invalid_grant",
        "the live successor died with its family"
    );
    // The trail says whose family it was, and which.
    let alice = tessera_server::store::users::find(&h.db, "alice")
        .await
        .unwrap()
        .unwrap();
    let detected = crate::wait_for_audit(&h, "refresh_reuse_detected", 1).await;
    assert_eq!(detected[0].subject.as_deref(), Some(alice.id.as_str()));
    assert_eq!(detected[0].client_id.as_deref(), Some(web.as_str()));
    assert!(
        detected[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("family=")),
        "{detected:?}"
    );

    // Another client cannot use the token.
    let login = h.login(&web, "alice", "correct horse").await;
    let other = h.public_client("read").await;
    let r = h.refresh(&other, &login.str("refresh_token"), None).await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.text);
    h.finish().await;
}

async fn token_issued_events_can_be_turned_off(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.audit_token_issued = false).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let token = h.client_credentials_token(&id, &secret).await;
    h.post("/oauth2/revoke", &[("token", &token)], Some((&id, &secret)))
        .await;
    // Events are written in order: once the revocation is stored, an
    // issuance event before it would be too.
    wait_for_audit(&h, "token_revoked", 1).await;
    let issued = tessera_server::store::audit::recent(&h.db, Some("token_issued"), 10)
        .await
        .unwrap();
    assert!(issued.is_empty(), "{issued:?}");
    h.finish().await;
}

async fn a_refused_refresh_changes_nothing(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let web = h.public_client("read write").await;
    h.user("alice", "correct horse", "read").await;
    let token = h
        .login(&web, "alice", "correct horse")
        .await
        .str("refresh_token");
    // A scope the session never had, then a malformed one: refused, and
    // the token is untouched, so the client's next try is no "reuse".
    for scope in ["read write", "wr\"ite"] {
        let r = h.refresh(&web, &token, Some(scope)).await;
        assert_eq!(r.error(), "invalid_scope", "{scope}: {}", r.text);
    }
    let r = h.refresh(&web, &token, Some("read")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let next = r.str("refresh_token");
    assert_eq!(h.refresh(&web, &next, None).await.status, StatusCode::OK);
    h.finish().await;
}

async fn retries_in_the_grace_window_get_the_same_successor(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| {
        c.refresh_grace = std::time::Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let first = h
        .login(&web, "alice", "correct horse")
        .await
        .str("refresh_token");
    let a = h.refresh(&web, &first, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // The response was lost; the client retries: the same successor, and
    // an access token that works.
    let b = h.refresh(&web, &first, None).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text);
    assert_eq!(a.str("refresh_token"), b.str("refresh_token"));
    assert_ne!(a.str("access_token"), b.str("access_token"));
    verify_with_jwks(&h, &b.str("access_token"), ISSUER).unwrap();
    // A retry asking for a scope it may not have is refused, changing
    // nothing.
    assert_eq!(
        h.refresh(&web, &first, Some("admin")).await.error(),
        "invalid_scope"
    );
    // The one session goes on.
    let c = h.refresh(&web, &b.str("refresh_token"), None).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    // Its successor used, the first token presented again is a replay
    // even within the window (a thief's copy would get the successor,
    // and through it the live token): the family is revoked.
    let replay = h.refresh(&web, &first, None).await;
    assert_eq!(replay.error(), "invalid_grant", "{}", replay.text);
    let dead = h.refresh(&web, &c.str("refresh_token"), None).await;
    assert_eq!(dead.error(), "invalid_grant", "{}", dead.text);
    // Past the window, an old token is reuse as ever.
    let first = h
        .login(&web, "alice", "correct horse")
        .await
        .str("refresh_token");
    let next = h.refresh(&web, &first, None).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let late = h.refresh(&web, &first, None).await;
    assert_eq!(late.error(), "invalid_grant", "{}", late.text);
    let dead = h.refresh(&web, &next.str("refresh_token"), None).await;
    assert_eq!(dead.error(), "invalid_grant", "{}", dead.text);
    h.finish().await;
}

async fn disabled_users_cannot_refresh(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let login = h.login(&web, "alice", "correct horse").await;
    users::set_disabled(
        &h.db,
        "alice",
        true,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let r = h.refresh(&web, &login.str("refresh_token"), None).await;
    assert_eq!(r.error(), "invalid_grant");
    // A password change ends sessions too.
    users::set_disabled(
        &h.db,
        "alice",
        false,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let login = h.login(&web, "alice", "correct horse").await;
    let hash = h.hash("battery staple").await;
    users::set_password(
        &h.db,
        "alice",
        &hash,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let r = h.refresh(&web, &login.str("refresh_token"), None).await;
    assert_eq!(r.error(), "invalid_grant");
    assert_eq!(
        h.login(&web, "alice", "battery staple").await.status,
        StatusCode::OK
    );
    h.finish().await;
}

fn assertion(key: &SigningKey, client_id: &str, aud: &str, jti: &str, ttl: u64) -> String {
    let claims = Claims::new()
        .issuer(client_id)
        .subject(client_id)
        .audience(aud)
        .jwt_id(jti)
        .issued_at(NumericDate::now())
        .expires_at(NumericDate::now().plus(std::time::Duration::from_secs(ttl)));
    jwt::sign(&claims, key).unwrap()
}

/// A client_credentials request authenticated by `assertion` alone
/// (`private_key_jwt`).
async fn with_assertion(h: &Harness, assertion: &str) -> crate::Reply {
    h.post(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ],
        None,
    )
    .await
}

async fn private_key_jwt_authenticates_once_per_assertion(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let added = h.signed_client(&key).await;
    assert!(added.client_secret.is_none());
    let id = added.client_id;
    let endpoint = format!("{ISSUER}/oauth2/token");
    let post = |a: String| {
        let h = &h;
        async move { with_assertion(h, &a).await }
    };
    let good = assertion(&key, &id, &endpoint, "a-1", 60);
    let r = post(good.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        verify_with_jwks(&h, &r.str("access_token"), ISSUER)
            .unwrap()
            .claims
            .sub
            .as_deref(),
        Some(id.as_str())
    );

    // An assertion is not Basic: invalid_client as 400, no challenge.
    let replay = post(good).await;
    assert_eq!(
        (replay.status, replay.error()),
        (StatusCode::BAD_REQUEST, "invalid_client"),
        "a replayed jti"
    );
    assert!(replay.headers.get(header::WWW_AUTHENTICATE).is_none());
    // Its `jti` is kept for as long as it verifies, the leeway on `exp`
    // included: a prune just past `exp` leaves it, so the replay within
    // the leeway is refused still.
    let short = assertion(&key, &id, &endpoint, "a-short", 5);
    assert_eq!(post(short.clone()).await.status, StatusCode::OK);
    let past_exp = tessera_server::store::now() + 5 + 30;
    tessera_server::store::retention::prune(
        &h.db,
        past_exp,
        tessera_server::store::retention::Retention { audit: None },
    )
    .await
    .unwrap();
    assert_eq!(
        post(short).await.error(),
        "invalid_client",
        "replayed after a prune"
    );

    // An authentication refused for something else than the assertion
    // (a client_id that is not its issuer) does not spend it.
    let named = assertion(&key, &id, &endpoint, "a-named", 60);
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "someone-else"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &named),
            ],
            None,
        )
        .await;
    assert_eq!(r.error(), "invalid_request", "{}", r.text);
    let r = post(named).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A jti of kilobytes, stored until the assertion expires: refused.
    let long = assertion(&key, &id, &endpoint, &"j".repeat(257), 60);
    assert_eq!(post(long).await.error(), "invalid_client");
    let longest = assertion(&key, &id, &endpoint, &"j".repeat(256), 60);
    assert_eq!(post(longest).await.status, StatusCode::OK);

    let stranger = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid(key.kid().unwrap());
    let attacks = [
        (
            "signed by another key",
            assertion(&stranger, &id, &endpoint, "a-2", 60),
        ),
        (
            "for another server",
            assertion(&key, &id, "https://elsewhere.example", "a-3", 60),
        ),
        (
            "living too long (two hours, over the one-hour default)",
            assertion(&key, &id, &endpoint, "a-4", 7200),
        ),
        ("expired", {
            let claims = Claims::new()
                .issuer(&id)
                .subject(&id)
                .audience(endpoint.as_str())
                .jwt_id("a-5")
                .expires_at(NumericDate::now().minus(std::time::Duration::from_secs(600)));
            jwt::sign(&claims, &key).unwrap()
        }),
        ("without jti", {
            let claims = Claims::new()
                .issuer(&id)
                .subject(&id)
                .audience(endpoint.as_str())
                .expires_at(NumericDate::now().plus(std::time::Duration::from_secs(60)));
            jwt::sign(&claims, &key).unwrap()
        }),
        ("HS256 with the public key as secret", {
            let jwk: Value = serde_json::from_str(
                &key.verifying_key()
                    .unwrap()
                    .to_public_jwk()
                    .unwrap()
                    .to_json(),
            )
            .unwrap();
            let secret = jwk.to_string().into_bytes();
            match SigningKey::hmac(Algorithm::HS256, &secret) {
                Ok(hmac) => assertion(&hmac, &id, &endpoint, "a-6", 60),
                Err(_) => "e30.e30.AAAA".into(),
            }
        }),
    ];
    for (name, a) in attacks {
        let r = post(a).await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::BAD_REQUEST, "invalid_client"),
            "{name}: {}",
            r.text
        );
    }
    // authlib's default: an assertion valid for one hour, accepted, and
    // its jti refused for as long (replay protection over its lifetime).
    let hour = assertion(&key, &id, &endpoint, "a-hour", 3600);
    let r = post(hour.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(post(hour).await.error(), "invalid_client", "replayed");
    h.finish().await;
}

async fn jwt_bearer_grant_trades_an_assertion_for_a_token(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let key = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let jwks = JwkSet::new(vec![key.verifying_key().unwrap().to_public_jwk().unwrap()]).to_json();
    let new = |grants: Vec<GrantType>| NewClient {
        name: "issuer".into(),
        grants,
        scopes: Scopes::parse("read write").unwrap(),
        jwks: Some(jwks.clone()),
        ..NewClient::default()
    };
    let issuer = clients::add(
        &h.db,
        new(vec![GrantType::JwtBearer]),
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .client_id;
    let alice = h.user("alice", "correct horse", "read").await;
    let endpoint = format!("{ISSUER}/oauth2/token");
    let grant = |a: String| {
        let h = &h;
        async move {
            h.post(
                "/oauth2/token",
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &a),
                ],
                None,
            )
            .await
        }
    };
    let for_subject = |sub: &str, jti: &str| {
        let claims = Claims::new()
            .issuer(issuer.as_str())
            .subject(sub)
            .audience(endpoint.as_str())
            .jwt_id(jti)
            .expires_at(NumericDate::now().plus(std::time::Duration::from_secs(120)));
        jwt::sign(&claims, &key).unwrap()
    };

    // A user named by the assertion gets a token with the user's scopes.
    let first = for_subject("alice", "g-1");
    let r = grant(first.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json.get("refresh_token").is_none());
    let token = verify_with_jwks(&h, &r.str("access_token"), ISSUER).unwrap();
    assert_eq!(token.claims.sub.as_deref(), Some(alice.as_str()));
    assert_eq!(token.claims.custom["scope"], "read");
    // The user did not log in: no `auth_time` to pass for a recent login.
    assert!(token.claims.custom.get("auth_time").is_none());
    // The client itself.
    let r = grant(for_subject(&issuer, "g-2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["scope"], "read write");

    // A request refused for something else than its assertion (a scope
    // the user lacks) leaves the assertion to the corrected request, and
    // only to it.
    let asked = for_subject("alice", "g-s");
    let scoped = |scope: &'static str| {
        let (h, a) = (&h, asked.clone());
        async move {
            h.post(
                "/oauth2/token",
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &a),
                    ("scope", scope),
                ],
                None,
            )
            .await
        }
    };
    assert_eq!(scoped("write").await.error(), "invalid_scope");
    let r = scoped("read").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let again = scoped("read").await;
    assert_eq!(again.error(), "invalid_grant", "{}", again.text);
    assert!(again.text.contains("already used"), "{}", again.text);

    let stranger = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_kid(key.kid().unwrap());
    let forged = jwt::sign(
        &Claims::new()
            .issuer(issuer.as_str())
            .subject("alice")
            .audience(endpoint.as_str())
            .jwt_id("g-3")
            .expires_at(NumericDate::now().plus(std::time::Duration::from_secs(60))),
        &stranger,
    )
    .unwrap();
    users::add(
        &h.db,
        "bob",
        "x",
        &Scopes::default(),
        &users::Profile::default(),
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    users::set_disabled(
        &h.db,
        "bob",
        true,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    for (name, a) in [
        ("a replay", first),
        ("a forged signature", forged),
        ("an unknown user", for_subject("mallory", "g-4")),
        ("a disabled user", for_subject("bob", "g-5")),
    ] {
        let r = grant(a).await;
        assert_eq!(
            (r.status, r.error()),
            (StatusCode::BAD_REQUEST, "invalid_grant"),
            "{name}: {}",
            r.text
        );
    }

    // Its client may name itself in the body (RFC 6749 §3.2.1): the
    // assertion authenticates it. Another client's name is refused.
    let named = |client_id: String, jti: &'static str| {
        let (h, a) = (&h, for_subject("alice", jti));
        async move {
            h.post(
                "/oauth2/token",
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &a),
                    ("client_id", &client_id),
                ],
                None,
            )
            .await
        }
    };
    let r = named(issuer.clone(), "g-n1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let public = h.public_client("read").await;
    let r = named(public, "g-n2").await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.text);
    let (confidential, _) = h.client(&[GrantType::ClientCredentials], "read").await;
    let r = named(confidential, "g-n3").await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.text);

    // Another client cannot present it (nor spend it: its own client
    // still can), and a client needs the grant.
    let (other, other_secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let presented = for_subject("alice", "g-6");
    let r = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &presented),
            ],
            Some((&other, &other_secret)),
        )
        .await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.text);
    let r = grant(presented).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let no_grant = clients::add(
        &h.db,
        new(vec![GrantType::ClientCredentials]),
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .client_id;
    let claims = Claims::new()
        .issuer(no_grant.as_str())
        .subject("alice")
        .audience(endpoint.as_str())
        .jwt_id("g-7")
        .expires_at(NumericDate::now().plus(std::time::Duration::from_secs(60)));
    let r = grant(jwt::sign(&claims, &key).unwrap()).await;
    assert_eq!(r.error(), "unauthorized_client", "{}", r.text);
    let without_keys = clients::add(
        &h.db,
        NewClient {
            name: "x".into(),
            grants: vec![GrantType::JwtBearer],
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await;
    assert!(without_keys.is_err(), "jwt-bearer needs registered keys");
    h.finish().await;
}

/// openid-client signs Ed25519 assertions as `alg: "Ed25519"` (RFC 9864);
/// a client that registered its key as `EdDSA` (or with no `alg`) is
/// still authenticated.
async fn ed25519_assertions_under_either_name_authenticate(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let key = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let renamed = SigningKey::from_der(
        Algorithm::Ed25519,
        tessera_jose::PemKind::PrivateKey,
        key.to_pkcs8_der().unwrap().expose(),
    )
    .unwrap()
    .with_kid(key.kid().unwrap());
    let id = h.signed_client(&key).await.client_id;
    let endpoint = format!("{ISSUER}/oauth2/token");
    for (signer, jti) in [(&key, "ed-1"), (&renamed, "ed-2")] {
        let r = h
            .post(
                "/oauth2/token",
                &[
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    (
                        "client_assertion",
                        &assertion(signer, &id, &endpoint, jti, 60),
                    ),
                ],
                None,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}: {}",
            signer.algorithm(),
            r.text
        );
    }
    // The metadata says so.
    let m = h.get("/.well-known/oauth-authorization-server").await.json;
    let algs = m["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&"Ed25519".into()) && algs.contains(&"EdDSA".into()));
    h.finish().await;
}

both_backends!(ed25519_assertions_under_either_name_authenticate);

/// A name and a password typed in another Unicode form than they were
/// set in (an "é" decomposed by one keyboard, composed by another) are
/// the same name and password; a wrong password is still wrong.
async fn names_and_passwords_are_the_same_in_any_unicode_form(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 0).await else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("Jos\u{e9}", "caf\u{e9} cr\u{e8}me", "read").await;
    for (name, password) in [
        ("Jos\u{e9}", "caf\u{e9} cr\u{e8}me"),
        ("Jose\u{301}", "cafe\u{301} cre\u{300}me"),
    ] {
        let r = h.login(&web, name, password).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{name:?} {password:?}: {}",
            r.text
        );
    }
    let wrong = h.login(&web, "Jose\u{301}", "cafe creme").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.text);
    h.finish().await;
}

both_backends!(names_and_passwords_are_the_same_in_any_unicode_form);

/// A name's two spellings count against one limit of failed logins: with
/// two failures allowed, one wrong guess under each spelling locks the
/// account for both.
async fn a_names_spellings_share_one_limit(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 2).await else {
        return;
    };
    let web = h.public_client("read").await;
    h.user("Jos\u{e9}", "caf\u{e9} cr\u{e8}me", "read").await;
    for name in ["Jos\u{e9}", "Jose\u{301}"] {
        let wrong = h.login(&web, name, "not the password").await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.text);
    }
    let locked = h.login(&web, "Jos\u{e9}", "caf\u{e9} cr\u{e8}me").await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.text
    );
    h.finish().await;
}

both_backends!(a_names_spellings_share_one_limit);

/// A secret rotated through another instance (or the CLI) reaches this
/// one's copy of the log while a request that authenticated with the old
/// secret, through the cached client, is still being answered; the
/// change's second is before the request's. No token may come of it that
/// the log does not refuse (before, the request waited for the cut to
/// pass and got one).
async fn a_secret_rotated_at_another_instance_ends_requests_under_way(backend: Backend) {
    a_change_at_another_instance_ends_requests_under_way(backend, false).await;
}

/// As a rotated secret, a scope taken from the client through another
/// instance: a request that authenticated through the cached client,
/// with the old scopes, gets no token that keeps the scope (before, it
/// waited past the cut and was minted with it).
async fn a_scope_taken_at_another_instance_ends_requests_under_way(backend: Backend) {
    a_change_at_another_instance_ends_requests_under_way(backend, true).await;
}

async fn a_change_at_another_instance_ends_requests_under_way(backend: Backend, narrow: bool) {
    use futures_util::StreamExt;
    let Some(h) = Harness::with(backend, |c| c.max_login_failures = 0).await else {
        return;
    };
    let (web, old_secret) = h.client(&[GrantType::Password], "read write").await;
    let rs = h.client(&[GrantType::ClientCredentials], "read").await;
    h.user("alice", "correct horse", "read write").await;
    let login = |web: &str, secret: &str| {
        [
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "correct horse"),
            ("client_id", web),
            ("client_secret", secret),
        ]
        .map(|(n, v)| (n, v.to_owned()))
    };
    let post = |h: std::sync::Arc<Harness>, form: [(&'static str, String); 5]| async move {
        let form: Vec<(&str, &str)> = form.iter().map(|(n, v)| (*n, v.as_str())).collect();
        h.post("/oauth2/token", &form, None).await
    };
    let h = std::sync::Arc::new(h);
    // The client is cached.
    let r = post(std::sync::Arc::clone(&h), login(&web, &old_secret)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Late in a second: the log is read (the cache stays trusted for a
    // second), then another instance rotates the secret; this instance
    // reads nothing more until the requests below have authenticated,
    // early in the next second.
    let fraction = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
    };
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(
        (1700 - fraction()) % 1000,
    )))
    .await;
    h.app.access.revoked().catch_up(&h.db).await;
    if narrow {
        let read = ScopeChange::Replace(Scopes::parse("read").unwrap());
        clients::set_scopes(
            &h.db,
            &web,
            &read,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
    } else {
        clients::rotate_secret(
            &h.db,
            &web,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(
        1020 - fraction(),
    )))
    .await;
    let mut requests: futures_util::stream::FuturesUnordered<_> = (0..6)
        .map(|_| tokio::spawn(post(std::sync::Arc::clone(&h), login(&web, &old_secret))))
        .collect();
    // Each authenticated at once, then waits for the two hashing threads.
    let first = requests.next().await.unwrap().unwrap();
    h.app.access.revoked().catch_up(&h.db).await;
    let mut answers = vec![first];
    while let Some(answer) = requests.next().await {
        answers.push(answer.unwrap());
    }
    none_outlives_the_change(&h, (&rs.0, &rs.1), &answers).await;
    for refused in answers.iter().filter(|a| a.status != StatusCode::OK) {
        // It authenticated in the body: no Basic challenge.
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
        assert!(!refused.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    drop(requests);
    if let Ok(h) = std::sync::Arc::try_unwrap(h) {
        h.finish().await;
    }
}

/// With `tokens.strict_assertion_audience`, a client assertion is
/// addressed to this server's issuer alone, as one string: the token
/// endpoint's URL (RFC 7523 §3's other choice, the "audience injection"
/// of 2025) and an array are refused. Without it, both addresses pass.
async fn a_strict_assertion_audience_is_the_issuer_alone(backend: Backend) {
    use tessera_jose::Audience;
    for strict in [true, false] {
        let Some(h) = Harness::with(backend, |c| c.strict_assertion_audience = strict).await else {
            return;
        };
        let key = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_thumbprint_kid()
            .unwrap();
        let id = h.signed_client(&key).await.client_id;
        let post = |a: String| {
            let h = &h;
            async move { with_assertion(h, &a).await }
        };
        let endpoint = format!("{ISSUER}/oauth2/token");
        let to_endpoint = post(assertion(&key, &id, &endpoint, "s-1", 60)).await;
        let as_array = {
            let claims = Claims::new()
                .issuer(id.as_str())
                .subject(id.as_str())
                .audience(Audience::Many(vec![ISSUER.to_owned()]))
                .jwt_id("s-2")
                .issued_at(NumericDate::now())
                .expires_at(NumericDate::now().plus(std::time::Duration::from_secs(60)));
            post(jwt::sign(&claims, &key).unwrap()).await
        };
        let to_issuer = post(assertion(&key, &id, ISSUER, "s-3", 60)).await;
        assert_eq!(to_issuer.status, StatusCode::OK, "{}", to_issuer.text);
        if strict {
            for refused in [&to_endpoint, &as_array] {
                assert_eq!(refused.error(), "invalid_client", "{}", refused.text);
            }
        } else {
            for passed in [&to_endpoint, &as_array] {
                assert_eq!(passed.status, StatusCode::OK, "{}", passed.text);
            }
        }
        h.finish().await;
    }
}
