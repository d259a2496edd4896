//! Introspection, revocation, discovery and health, without sockets.

use axum::http::{header, StatusCode};
use tessera_server::store::clients::GrantType;

use crate::{both_backends, wait_for_audit, Backend, Harness, ISSUER};

both_backends!(
    introspection_reports_live_tokens_to_confidential_clients,
    revocation_ends_refresh_families_and_access_tokens,
    discovery_lists_what_the_server_supports,
    health_readiness_and_metrics,
);

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

    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &refresh), ("token_type_hint", "refresh_token")],
            Some((&rs, &rs_secret)),
        )
        .await;
    assert_eq!(r.json["active"], true, "{}", r.text);
    assert_eq!(r.json["token_type"], "refresh_token");
    assert_eq!(r.json["username"], "alice");

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
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
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
    let (access, refresh) = (login.str("access_token"), login.str("refresh_token"));
    let active = |token: String| {
        let h = &h;
        let (rs, rs_secret) = (rs.clone(), rs_secret.clone());
        async move {
            h.post(
                "/oauth2/introspect",
                &[("token", &token)],
                Some((&rs, &rs_secret)),
            )
            .await
            .json["active"]
                == true
        }
    };

    // Another client's revocation is answered 200 and does nothing.
    for token in [&access, &refresh] {
        let r = h
            .post(
                "/oauth2/revoke",
                &[("token", token), ("client_id", &other)],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert!(active(access.clone()).await);
    assert!(active(refresh.clone()).await);

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
        active(refresh.clone()).await,
        "revoking an access token leaves the session"
    );

    let r = h
        .post(
            "/oauth2/revoke",
            &[("token", &refresh), ("client_id", &web)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!active(refresh.clone()).await);
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
    wait_for_audit(&h, "token_revoked", 2).await;
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
    }
    let r = h.get("/.well-known/jwks.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "public, max-age=300");
    let keys = r.json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none(), "only public keys are published");
    assert_eq!(keys[0]["alg"], "ES256");
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
    let metrics = h.get("/metrics").await.text;
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
