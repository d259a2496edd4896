//! The storage suite: the same assertions on SQLite and PostgreSQL.

use std::sync::Arc;

use sqlx::Connection;
use tessera_server::db::Db;
use tessera_server::secret::MasterKey;
use tessera_server::store::clients::{self, GrantType, NewClient};
use tessera_server::store::codes::{self, CodeWriter, Grant, Issued, Redeemed};
use tessera_server::store::refresh::{self, NewFamily, RefreshPolicy, Refused};
use tessera_server::store::sessions::{self, SessionPolicy};
use tessera_server::store::{audit, consents, retention, revocation, users, ScopeChange, Scopes};
use tessera_server::Error;

use crate::{both_backends, Backend, Harness, KEEP};

both_backends!(
    a_cut_is_under_way_for_a_request_by_the_log_not_the_clocks,
    a_client_given_a_value_twice_stores_it_once,
    a_code_of_a_session_past_its_end_is_not_exchanged,
    users_are_unique_and_can_be_disabled_and_deleted,
    a_restored_revocation_log_is_read_again,
    a_restored_log_is_read_again_whole_once_it_can_be,
    clients_keep_only_a_digest_of_their_secret,
    refresh_tokens_rotate_once_and_reuse_revokes_the_family,
    concurrent_rotations_leave_at_most_one_live_successor,
    concurrent_retries_in_the_grace_period_leave_one_live_successor,
    a_replay_across_instances_with_different_grace_is_reuse,
    a_replay_from_a_clock_behind_the_use_is_reuse,
    refused_refreshes_change_nothing,
    successors_never_outlive_their_family,
    revocations_and_assertions_are_remembered_until_they_expire,
    a_clock_jumped_forward_forgets_no_revocation_still_needed,
    concurrent_revocations_are_never_skipped_by_a_follower,
    keys_rotate_announce_and_retire,
    instances_rotating_at_once_store_one_key,
    an_instance_that_must_not_maintain_still_reads_the_keys,
    a_replaced_key_outlives_the_longest_token_any_instance_recorded,
    audit_batches_keep_every_event,
    an_audit_batch_written_twice_is_stored_once,
    codes_committed_in_groups_keep_every_binding,
    batched_writes_prepare_one_statement_whatever_their_size,
    refresh_families_start_only_in_live_sessions,
    a_session_past_its_end_is_kept_while_its_families_live,
    sealed_successors_past_their_window_are_all_forgotten_in_batches,
    a_scope_taken_from_a_client_revokes_its_families,
    scope_edits_made_at_once_all_land,
    a_new_login_renews_its_users_session,
    a_use_recorded_late_never_moves_the_last_use_back,
    a_user_disabled_while_a_family_starts_in_a_session_revokes_it,
    a_user_deleted_while_a_family_starts_waits_for_it,
    concurrent_consents_are_all_remembered,
    pruning_removes_only_what_is_over_in_batches,
    a_public_key_changed_in_the_database_is_not_published,
    cut_offs_outlive_the_longest_token_whatever_the_appenders_configuration,
    a_changed_algorithm_is_announced_and_the_old_one_retired,
    a_changed_algorithm_still_configured_for_id_tokens_signs_until_the_new_one_is_due,
    a_rotation_by_hand_makes_no_key_of_a_dropped_algorithm,
    a_revoked_key_of_a_dropped_algorithm_is_not_replaced,
    rotations_by_hand_at_once_announce_no_more_than_two_keys,
    a_revoked_stand_in_is_replaced_by_a_key_of_the_configured_algorithm,
    a_revoked_keys_event_outlives_a_jwks_max_age_longer_than_announce,
    a_key_row_that_does_not_open_is_left_out_and_can_be_revoked,
    a_key_whose_opened_bytes_this_version_cannot_read_stops_the_start,
    a_change_to_an_algorithm_with_keys_keeps_the_old_key_while_its_tokens_live,
    a_retirement_marked_under_another_configuration_is_forgotten,
    an_id_token_algorithm_clients_use_is_kept_when_the_configuration_drops_it,
    a_rotation_by_hand_rotates_the_databases_algorithms_whatever_the_configuration,
    a_key_made_while_the_clock_is_held_back_is_announced_by_the_wall_clock,
    a_leaked_key_revoked_stops_signing_and_verifying_everywhere_at_once,
    a_key_dropped_by_the_maintenance_can_be_revoked_after_its_creation_left_the_trail,
    revoking_an_announced_first_key_keeps_its_announcement,
);

/// How many signing keys a SQLite database holds.
async fn keys_stored(writer: &sqlx::SqlitePool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM signing_keys")
        .fetch_one(writer)
        .await
        .unwrap();
    n
}

/// A first start cut short between its first keys (here: the ID-token
/// key's insert fails) stores none, and the next start makes them all,
/// signing at once. Before, the access-token key stayed: the next start
/// took RS256 for an algorithm added to a database in service, made its
/// key announced for an hour, and every ID token failed meanwhile.
#[tokio::test]
async fn a_first_start_stores_all_its_keys_or_none() {
    let test_db = crate::TestDb::new(Backend::Sqlite).await.unwrap();
    let db = tessera_server::db::Db::open(&test_db.url, 1, tessera_server::db::Schema::Migrate)
        .await
        .unwrap();
    let tessera_server::db::Pool::Sqlite(writer) = db.write() else {
        unreachable!("a SQLite database")
    };
    let count = || keys_stored(writer);
    sqlx::query(
        "CREATE TRIGGER cut_short BEFORE INSERT ON signing_keys WHEN NEW.alg = 'RS256' \
         BEGIN SELECT RAISE(ABORT, 'cut short'); END",
    )
    .execute(writer)
    .await
    .unwrap();
    let failed = tessera_server::open(test_db.config()).await;
    assert!(failed.is_err());
    assert_eq!(count().await, 0, "none of the first keys");
    sqlx::query("DROP TRIGGER cut_short")
        .execute(writer)
        .await
        .unwrap();
    let opened = tessera_server::open(test_db.config()).await.unwrap();
    assert_eq!(count().await, 2);
    let now = tessera_server::store::now();
    for alg in [
        tessera_jose::Algorithm::ES256,
        tessera_jose::Algorithm::RS256,
    ] {
        let signer = opened.keys.signer_for(alg, now).unwrap();
        let (info, state) = opened
            .keys
            .list(now)
            .into_iter()
            .find(|(k, _)| Some(k.kid.as_str()) == signer.kid())
            .unwrap();
        assert!(info.activate_at <= now, "{info:?} {state:?}");
    }
    db.close().await;
}

/// A cut (a password changed, a secret rotated) is stamped by the
/// database's clock on PostgreSQL, which every instance keeps within 2 s
/// of, not by the clock of the host the change came from: an admin command
/// run on a host five minutes behind stamped it five minutes early, and
/// every token the instances minted in those minutes stayed valid, the very
/// tokens a change made after a leak is for. Here the database's clock is
/// set five minutes ahead of this host's (a `clock_timestamp` of the
/// test's schema, searched before `pg_catalog`'s).
#[tokio::test]
async fn a_cut_follows_the_database_clock_not_the_changing_host() {
    let Some(mut test_db) = crate::TestDb::new(Backend::Postgres).await else {
        return;
    };
    let schema = test_db
        .url
        .rsplit("search_path%3D")
        .next()
        .unwrap()
        .to_owned();
    let pool = sqlx::PgPool::connect(&test_db.url).await.unwrap();
    sqlx::query(&format!(
        "CREATE FUNCTION {schema}.clock_timestamp() RETURNS timestamptz LANGUAGE sql \
         AS $$ SELECT pg_catalog.clock_timestamp() + interval '300 seconds' $$"
    ))
    .execute(&pool)
    .await
    .unwrap();
    test_db.url.push_str("%2Cpg_catalog");
    let h = Harness::on(test_db, |_| {}).await;
    assert!(
        h.db.database_time().await.unwrap().unwrap() >= tessera_server::store::now() + 299,
        "the database's clock is ahead"
    );
    h.user("alice", "correct horse", "read").await;
    let (client, _) = h.client(&[GrantType::ClientCredentials], "read").await;
    let here = tessera_server::store::now();
    let new_hash = h.hash("battery staple").await;
    users::set_password(
        &h.db,
        "alice",
        &new_hash,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let secret = clients::rotate_secret(
        &h.db,
        &client,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let cuts: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT kind, issued_before, keep_until FROM {schema}.revocation_events \
         WHERE kind IN ('user', 'client') ORDER BY id"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(cuts.len(), 2, "{cuts:?}");
    for (kind, issued_before, keep_until) in cuts {
        assert!(
            (here + 300..=here + 310).contains(&issued_before),
            "{kind} cut at {issued_before}, this host's clock {here}"
        );
        // Kept as long from the database's time as it would be from any.
        assert!(
            keep_until >= here + 300 + KEEP.0,
            "{kind} kept until {keep_until}, this host's clock {here}"
        );
    }
    // An instance whose clock is this far behind the database's mints no
    // token its client's cut would refuse: it waits as long as clocks
    // within the allowed spread need, then answers 503.
    let refused = h.client_credentials(&client, &secret).await;
    assert_eq!(
        refused.status,
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    pool.close().await;
    h.finish().await;
}

/// A maintenance whose writes fail (here every write to the keys; in
/// life a database left read-only after a failover, a lock timeout) still
/// takes up the keys another instance made: before, it kept signing with
/// the key they replaced for as long as its writes failed.
#[tokio::test]
async fn a_maintenance_that_cannot_write_still_reads_the_keys_others_made() {
    let Some(h) = Harness::new(Backend::Sqlite).await else {
        return;
    };
    let now = tessera_server::store::now();
    let before = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    // Another instance rotates.
    let other = tessera_server::open(h.test_db.config()).await.unwrap();
    let kids = other
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    let announce = tessera_server::store::secs(h.test_db.config().keys.announce);
    for change in ["INSERT", "UPDATE", "DELETE"] {
        h.execute(
            &format!(
                "CREATE TRIGGER no_{change} BEFORE {change} ON signing_keys \
                 BEGIN SELECT RAISE(ABORT, 'read-only'); END"
            ),
            &[],
        )
        .await;
    }
    // Long past the new key's announcement: this instance would delete
    // the old key.
    let ttl = tessera_server::store::secs(h.test_db.config().max_access_ttl);
    let at = now + announce + ttl + 600;
    assert!(h.app.keys.maintain_at(at).await.is_err());
    let signing = h.app.keys.signer(at).unwrap().kid().unwrap().to_owned();
    assert_ne!(signing, before);
    assert!(kids.contains(&signing), "{signing} not in {kids:?}");
    other.db.close().await;
    h.finish().await;
}

/// A rotation by hand stores its keys all or none (one failing, none is
/// stored, and the error says so), and once they are stored it says so,
/// even if reading the key ring again then fails (a row that does not
/// open): before, it answered an error for committed keys, and a retry
/// stored a second key of the first algorithm.
#[tokio::test]
async fn a_rotation_by_hand_stores_all_its_keys_or_none_and_says_which() {
    let Some(h) = Harness::new(Backend::Sqlite).await else {
        return;
    };
    let tessera_server::db::Pool::Sqlite(writer) = h.db.write() else {
        unreachable!("a SQLite database")
    };
    let count = || keys_stored(writer);
    assert_eq!(count().await, 2);
    h.execute(
        "CREATE TRIGGER cut_short BEFORE INSERT ON signing_keys WHEN NEW.alg = 'RS256' \
         BEGIN SELECT RAISE(ABORT, 'cut short'); END",
        &[],
    )
    .await;
    assert!(h
        .app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .is_err());
    assert_eq!(count().await, 2, "no key of the rotation");
    h.execute("DROP TRIGGER cut_short", &[]).await;
    // A row no one can open (stored by hand, or damaged).
    h.execute(
        "INSERT INTO signing_keys (kid, generation, alg, sealed_key, public_jwk, created_at, activate_at) \
         VALUES ('damaged', 100, 'ES256', x'00', '{}', 0, 4000000000)",
        &[],
    )
    .await;
    let kids = h
        .app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    assert_eq!(kids.len(), 2);
    assert_eq!(count().await, 5);
}

/// A rotation by hand waits once two keys of an algorithm are announced
/// and not signing yet: a script retrying it in a loop made a key a call,
/// until the key set passed what verifiers take (512 KiB for the guard).
#[tokio::test]
async fn rotations_by_hand_wait_for_the_keys_they_announced() {
    let Some(h) = Harness::new(Backend::Sqlite).await else {
        return;
    };
    let tessera_server::db::Pool::Sqlite(writer) = h.db.write() else {
        unreachable!("a SQLite database")
    };
    h.app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    h.app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    assert_eq!(keys_stored(writer).await, 6);
    let refused = h
        .app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("already has 2 keys announced"),
        "{refused}"
    );
    assert_eq!(keys_stored(writer).await, 6, "no key stored");
    h.finish().await;
}

/// Six rotations by hand at once (a retrying script run in parallel, the
/// admin API and the command together): at most two keys of each
/// algorithm end up announced, the others refused. Before, each counted
/// the announced keys before its transaction, all passed, and six keys
/// of each were stored.
async fn rotations_by_hand_at_once_announce_no_more_than_two_keys(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    // Here and at another instance, three each.
    let other = tessera_server::open(h.test_db.config()).await.unwrap();
    let rotations = (0..6).map(|n| {
        let keys = Arc::clone(if n % 2 == 0 { &h.app.keys } else { &other.keys });
        tokio::spawn(async move {
            keys.rotate(tessera_server::store::audit::InChange::none())
                .await
        })
    });
    let mut stored = 0;
    for rotation in futures_util::future::join_all(rotations).await {
        match rotation.unwrap() {
            Ok(kids) => stored += kids.len(),
            Err(e) => assert!(e.to_string().contains("keys announced"), "{e}"),
        }
    }
    let now = tessera_server::store::now();
    for alg in ["ES256", "RS256"] {
        let announced = h
            .count(
                &format!(
                    "SELECT COUNT(*) FROM signing_keys WHERE alg = $1 AND activate_at > {now}"
                ),
                &[alg],
            )
            .await;
        assert!(announced <= 2, "{alg}: {announced} announced");
    }
    assert_eq!(stored, 4, "two rotations of two keys stored");
    other.db.close().await;
    h.finish().await;
}

/// `tessera keys rotate` run on a host whose clock is three hours slow
/// (PostgreSQL: the command need not run where the servers do). Its key
/// is announced from the database's time: before, it was stored as
/// signing two hours ago, so it signed at once, unannounced, and the
/// next maintenance deleted the key before it while that key's tokens
/// lived.
#[tokio::test]
async fn a_rotation_by_hand_takes_the_databases_time_not_its_hosts() {
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let announce = tessera_server::store::secs(h.test_db.config().keys.announce);
    let now = tessera_server::store::now();
    let before = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let token = h.client_credentials_token(&id, &secret).await;
    let kids = h
        .app
        .keys
        .rotate_on_clock(
            now - 3 * 3600,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
    let listed = h.app.keys.list(now);
    for kid in &kids {
        let (info, _) = listed.iter().find(|(k, _)| &k.kid == kid).unwrap();
        assert!(info.activate_at >= now + announce, "{info:?}");
        assert!(info.created_at >= now, "{info:?}");
    }
    h.app.keys.maintain().await.unwrap();
    let now = tessera_server::store::now();
    assert_eq!(h.app.keys.signer(now).unwrap().kid(), Some(before.as_str()));
    assert!(h.app.keys.list(now).iter().any(|(k, _)| k.kid == before));
    assert!(h.active(&token, (&id, &secret)).await);
}

/// A host whose clock runs three days fast, with a rotation due in two
/// days by the database's clock (PostgreSQL: an admin command may run on
/// another host than the servers): no key is made. Before, the key it
/// made would sign four days from now, and, pending, held back the
/// servers' own rotation until then.
#[tokio::test]
async fn a_clock_days_fast_makes_no_key_early() {
    let Some(h) = Harness::with(Backend::Postgres, |c| {
        c.keys.rotate_every = Some(std::time::Duration::from_secs(7 * 86_400));
        c.keys.announce = std::time::Duration::from_secs(86_400);
    })
    .await
    else {
        return;
    };
    tessera_server_test_shift(&h, 5 * 86_400).await;
    h.app.keys.maintain().await.unwrap();
    let before = h.app.keys.list(tessera_server::store::now()).len();
    let fast = tessera_server::store::now() + 3 * 86_400;
    h.app.keys.maintain_at(fast).await.unwrap();
    assert_eq!(
        h.app.keys.list(fast).len(),
        before,
        "no key made by the fast clock"
    );
}

/// The maintenance runs by the time that has really passed, held back
/// after the wall clock jumped forward (a host resumed from suspend, NTP
/// stepping the clock after boot). A key it makes then must still be
/// announced for `announce` by the wall clock, which signing follows.
async fn a_key_made_while_the_clock_is_held_back_is_announced_by_the_wall_clock(backend: Backend) {
    let Some((h, _second)) = two_instances_rotating_every_two_hours(backend).await else {
        return;
    };
    let announce = tessera_server::store::secs(h.test_db.config().keys.announce);
    let now = tessera_server::store::now();
    let before = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    // Every key ages past the rotation period; the maintenance's clock
    // is two announce periods behind the wall clock.
    tessera_server_test_shift(&h, 3 * 3600).await;
    h.app.keys.maintain_at(now - 2 * announce).await.unwrap();
    let now = tessera_server::store::now();
    let listed = h.app.keys.list(now);
    let newest = listed
        .iter()
        .map(|(k, _)| k)
        .max_by_key(|k| k.generation)
        .unwrap();
    assert_ne!(newest.kid, before, "a rotation was due");
    assert!(newest.activate_at >= now + announce - 1, "{newest:?}");
    assert_eq!(h.app.keys.signer(now).unwrap().kid(), Some(before.as_str()));
}

async fn a_changed_algorithm_is_announced_and_the_old_one_retired(backend: Backend) {
    use tessera_jose::Algorithm;
    use tessera_server::keys::KeyState;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let before = h.app.keys.signer(now).unwrap();
    assert_eq!(before.algorithm(), Algorithm::ES256);
    let old_kid = before.kid().unwrap().to_owned();
    // The server restarts configured for ES384.
    let mut config = h.test_db.config();
    config.keys.algorithm = Algorithm::ES384;
    let announce = tessera_server::store::secs(config.keys.announce);
    // Kept for the token's life, the largest leeway a verifier may have
    // past `exp`, and a minute for a verifier's clock behind.
    let keep = tessera_server::store::secs(config.max_access_ttl)
        + tessera_jose::jwt::MAX_LEEWAY.as_secs() as i64
        + 60;
    let restarted = tessera_server::open(config).await.unwrap();
    let keys = &restarted.keys;
    // Its start makes no key (an admin command opens the same way);
    // tokens are signed as before.
    assert_eq!(keys.signer(now).unwrap().kid(), Some(old_kid.as_str()));
    keys.maintain_at(now).await.unwrap();
    let es384: Vec<_> = keys
        .list(now)
        .into_iter()
        .filter(|(k, _)| k.alg == "ES384")
        .collect();
    assert_eq!(es384.len(), 1, "the maintenance makes the first key");
    assert_eq!(es384[0].1, KeyState::Announced, "published before it signs");
    assert!(es384[0].0.activate_at >= now + announce);
    let jwks = tessera_jose::JwkSet::from_json(&keys.jwks_json()).unwrap();
    assert!(jwks.find(&es384[0].0.kid).is_some());
    // Until it signs, the key that signed before goes on, to the last
    // second of the announcement (before, the new key took over a
    // minute early); then the new.
    assert_eq!(keys.signer(now + 1).unwrap().kid(), Some(old_kid.as_str()));
    let signs_at = es384[0].0.activate_at;
    for early in [30, 1] {
        assert_eq!(
            keys.signer(signs_at - early).unwrap().kid(),
            Some(old_kid.as_str()),
            "{early} s before the new key is due"
        );
    }
    assert_eq!(
        keys.signer(signs_at).unwrap().kid(),
        Some(es384[0].0.kid.as_str())
    );
    // The ES256 key signs until the ES384 key does, then is retired:
    // published until the last token it signed has expired, then removed.
    let state = |at: i64| {
        keys.list(at)
            .into_iter()
            .find(|(k, _)| k.kid == old_kid)
            .map(|(_, s)| s)
    };
    assert_eq!(state(now), Some(KeyState::Active));
    assert_eq!(state(signs_at - 30), Some(KeyState::Active));
    assert_eq!(state(signs_at), Some(KeyState::Retired));
    // `tessera keys list` (the database alone, under the same
    // configuration) says what the server's `/admin/keys` says.
    for at in [now, signs_at - 30, signs_at] {
        let stored = tessera_server::keys::stored(&restarted.db, &restarted.config.keys, at)
            .await
            .unwrap();
        let states = |list: Vec<(tessera_server::keys::KeyInfo, KeyState)>| {
            list.into_iter()
                .map(|(k, s)| (k.kid, s))
                .collect::<Vec<_>>()
        };
        assert_eq!(states(stored), states(keys.list(at)), "at {at}");
    }
    keys.maintain_at(signs_at + keep - 10).await.unwrap();
    assert!(
        state(signs_at).is_some(),
        "removed while a token it signed just before the switch may live"
    );
    keys.maintain_at(signs_at + keep + 10).await.unwrap();
    assert_eq!(state(signs_at), None, "a key of a dropped algorithm stayed");
    let jwks = tessera_jose::JwkSet::from_json(&keys.jwks_json()).unwrap();
    assert!(jwks.find(&old_kid).is_none());
    restarted.db.close().await;
    h.finish().await;
}

/// Access tokens moved from RS256 to ES256, RS256 staying configured for
/// ID tokens (as it must): the RS256 key goes on signing access tokens
/// until the first ES256 key is due, across restarts. Before, nothing
/// stood in for an algorithm still configured: until the maintenance made
/// the ES256 key no access token could be signed, and then the key signed
/// from the moment it was announced, before verifiers that cache the key
/// set had it.
async fn a_changed_algorithm_still_configured_for_id_tokens_signs_until_the_new_one_is_due(
    backend: Backend,
) {
    use tessera_jose::Algorithm;
    use tessera_server::store::key_settings;
    let Some(h) = Harness::with(backend, |c| c.keys.algorithm = Algorithm::RS256).await else {
        return;
    };
    let now = tessera_server::store::now();
    let before = h.app.keys.signer(now).unwrap();
    assert_eq!(before.algorithm(), Algorithm::RS256);
    let old_kid = before.kid().unwrap().to_owned();
    // The start records its settings (`serve`).
    key_settings::record(&h.db, &h.app.config.key_settings())
        .await
        .unwrap();
    assert_eq!(
        key_settings::previous_access_algorithm(&h.db, Algorithm::RS256)
            .await
            .unwrap(),
        None
    );
    let mut config = h.test_db.config();
    config.keys.algorithm = Algorithm::ES256;
    assert!(config.keys.id_token_algorithms.contains(&Algorithm::RS256));
    let restarted = tessera_server::open(config.clone()).await.unwrap();
    assert_eq!(
        restarted.keys.signer(now).unwrap().kid(),
        Some(old_kid.as_str()),
        "before the first ES256 key is made"
    );
    key_settings::record(&restarted.db, &restarted.config.key_settings())
        .await
        .unwrap();
    restarted.keys.maintain_at(now).await.unwrap();
    let es256 = restarted
        .keys
        .list(now)
        .into_iter()
        .find(|(k, _)| k.alg == "ES256")
        .map(|(k, _)| k)
        .expect("the maintenance makes the first ES256 key");
    let signs_at = es256.activate_at;
    // Restarted once more within the announcement (that start records
    // the same settings again): the same.
    key_settings::record(&restarted.db, &restarted.config.key_settings())
        .await
        .unwrap();
    let again = tessera_server::open(config).await.unwrap();
    for keys in [&restarted.keys, &again.keys] {
        for at in [now + 1, signs_at - 1] {
            assert_eq!(
                keys.signer(at).unwrap().kid(),
                Some(old_kid.as_str()),
                "at {at}"
            );
        }
        assert_eq!(
            keys.signer(signs_at).unwrap().kid(),
            Some(es256.kid.as_str())
        );
    }
    again.db.close().await;
    restarted.db.close().await;
    h.finish().await;
}

/// Once the server's maintenance found an algorithm dropped (access
/// tokens moved from ES256 to ES384), a rotation by hand rotates the
/// algorithms in use and makes no new key of the dropped one.
async fn a_rotation_by_hand_makes_no_key_of_a_dropped_algorithm(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let mut config = h.test_db.config();
    config.keys.algorithm = tessera_jose::Algorithm::ES384;
    let restarted = tessera_server::open(config).await.unwrap();
    restarted.keys.maintain_at(now).await.unwrap();
    let count = |alg: &str| {
        restarted
            .keys
            .list(now)
            .into_iter()
            .filter(|(k, _)| k.alg == alg)
            .count()
    };
    assert_eq!((count("ES256"), count("ES384")), (1, 1));
    let rotated = restarted
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    assert_eq!(rotated.len(), 2, "ES384 and RS256 (ID tokens): {rotated:?}");
    assert_eq!(count("ES256"), 1, "a key of the dropped algorithm was made");
    assert_eq!(count("ES384"), 2);
    restarted.db.close().await;
    h.finish().await;
}

/// The last key of an ID-token algorithm the configuration dropped (no
/// client uses it), revoked: it is deleted and nothing of it signs again.
/// Before, as for the key that signs a configured algorithm, a new key of
/// it was made at once, signing ID tokens no client asks for.
async fn a_revoked_key_of_a_dropped_algorithm_is_not_replaced(backend: Backend) {
    use tessera_jose::Algorithm;
    let Some(h) = Harness::with(backend, |c| {
        c.keys.id_token_algorithms = vec![Algorithm::RS256, Algorithm::ES384];
    })
    .await
    else {
        return;
    };
    let now = tessera_server::store::now();
    let es384 = h
        .app
        .keys
        .signer_for(Algorithm::ES384, now)
        .unwrap()
        .kid()
        .unwrap()
        .to_owned();
    let mut config = h.test_db.config();
    config.keys.id_token_algorithms = vec![Algorithm::RS256];
    let restarted = tessera_server::open(config).await.unwrap();
    let keys = &restarted.keys;
    keys.maintain_at(now).await.unwrap();
    let replaced = keys
        .revoke(&es384, tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    assert_eq!(replaced, None);
    let left = h
        .count(
            "SELECT COUNT(*) FROM signing_keys WHERE alg = $1",
            &["ES384"],
        )
        .await;
    assert_eq!(left, 0, "a key of the dropped algorithm was made");
    // The configured algorithms' keys go on.
    assert!(keys.signer(now).is_ok());
    assert!(keys.signer_for(Algorithm::RS256, now).is_ok());
    restarted.db.close().await;
    h.finish().await;
}

/// Access tokens moved to ES384 and the maintenance has not made its
/// first key yet: the ES256 key that stands in leaks and is revoked. A key
/// of ES384 signs at once (before, nothing of ES256 was made, as for a
/// dropped algorithm, and nothing signed access tokens at all).
async fn a_revoked_stand_in_is_replaced_by_a_key_of_the_configured_algorithm(backend: Backend) {
    use tessera_jose::Algorithm;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let stand_in = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    let mut config = h.test_db.config();
    config.keys.algorithm = Algorithm::ES384;
    let restarted = tessera_server::open(config).await.unwrap();
    let keys = &restarted.keys;
    assert_eq!(keys.signer(now).unwrap().kid(), Some(stand_in.as_str()));
    let replaced = keys
        .revoke(&stand_in, tessera_server::store::audit::InChange::none())
        .await
        .unwrap()
        .expect("a key of the configured algorithm");
    let signer = keys.signer(tessera_server::store::now()).unwrap();
    assert_eq!(signer.kid(), Some(replaced.as_str()));
    assert_eq!(signer.algorithm(), Algorithm::ES384);
    let left = h
        .count(
            "SELECT COUNT(*) FROM signing_keys WHERE alg = $1",
            &["ES256"],
        )
        .await;
    assert_eq!(left, 0, "a key of the dropped algorithm was made");
    restarted.db.close().await;
    h.finish().await;
}

/// A key set that verifiers may cache longer than keys are announced
/// (`jwks_max_age` over `announce`, which the server only warns of): the
/// revocation of a key is kept until a guard's copy of the set has
/// expired by that longer age. Before, it was counted by `announce`, and
/// a guard still holding the key accepted forged tokens once the event
/// was forgotten.
async fn a_revoked_keys_event_outlives_a_jwks_max_age_longer_than_announce(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| {
        c.keys.jwks_max_age = std::time::Duration::from_secs(6 * 3600);
    })
    .await
    else {
        return;
    };
    let now = tessera_server::store::now();
    let kid = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    h.app
        .keys
        .revoke(&kid, tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    let keep_until = h
        .count(
            "SELECT keep_until FROM revocation_events WHERE kind = 'key' AND value = $1",
            &[&kid],
        )
        .await;
    let ttl = tessera_server::store::secs(h.app.config.max_access_ttl);
    assert!(
        keep_until >= now + ttl + 6 * 3600 + 3600,
        "{keep_until} (now {now})"
    );
    h.finish().await;
}

/// A key whose sealed bytes the master key opens but this version cannot
/// read as a key (a form a newer version stores, in a rolling upgrade) is
/// a newer version's: the start stops, as for an algorithm it does not
/// know, and the row stays. Left out as a broken row is, its rotation
/// would be made again and the key deleted, the one the newer instances
/// sign with.
async fn a_key_whose_opened_bytes_this_version_cannot_read_stops_the_start(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let kids = h
        .app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    let newer = kids[0].clone();
    let config = h.test_db.config();
    let master = MasterKey::load_existing(&config.master_key)
        .unwrap()
        .unwrap();
    let sealed = master
        .seal(&newer, b"a key in a form of the future")
        .unwrap();
    let sql = "UPDATE signing_keys SET sealed_key = $1 WHERE kid = $2";
    match h.db.write() {
        tessera_server::db::Pool::Sqlite(p) => {
            sqlx::query(sql)
                .bind(&sealed)
                .bind(&newer)
                .execute(p)
                .await
                .unwrap();
        }
        tessera_server::db::Pool::Postgres(p) => {
            sqlx::query(sql)
                .bind(&sealed)
                .bind(&newer)
                .execute(p)
                .await
                .unwrap();
        }
    }
    let started = tessera_server::open(config).await;
    assert!(started.is_err(), "left out as a broken row");
    let left = h
        .count(
            "SELECT COUNT(*) FROM signing_keys WHERE kid = $1",
            &[&newer],
        )
        .await;
    assert_eq!(left, 1);
    h.finish().await;
}

/// Stored keys whose rows do not open (changed by hand) while the master
/// key opens the database's check: left out (not published, never used
/// to sign, no one's successor) while the other keys serve; a start
/// works. A rotation whose key does not open is made again, announced,
/// and the broken key goes once its replacement signs; one revoked is
/// deleted; the key that really signs, revoked, is replaced; an
/// algorithm none of whose keys opens gets a key that signs at once.
/// Before, such a row stopped every start, and the command that revokes
/// it, blaming the master key. A wrong master key still stops a start.
async fn a_key_row_that_does_not_open_is_left_out_and_can_be_revoked(backend: Backend) {
    use tessera_server::keys::KeyState;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    use tessera_server::store::audit::InChange;
    let now = tessera_server::store::now();
    let access = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    let rotated = h.app.keys.rotate(InChange::none()).await.unwrap();
    // The keys the rotation announced (ES256, RS256), their sealed bytes
    // cut.
    let (broken, broken_rs) = (rotated[0].clone(), rotated[1].clone());
    for kid in [&broken, &broken_rs] {
        h.execute(
            "UPDATE signing_keys SET sealed_key = substr(sealed_key, 2) WHERE kid = $1",
            &[kid],
        )
        .await;
    }
    let count = |kid: String| {
        let h = &h;
        async move {
            h.count("SELECT COUNT(*) FROM signing_keys WHERE kid = $1", &[&kid])
                .await
        }
    };

    let mut wrong = h.test_db.config();
    wrong.master_key = tessera_server::secret::MasterKeySource::Value(
        tessera_server::secret::random_token().unwrap(),
    );
    let err = tessera_server::open(wrong).await.unwrap_err();
    assert!(matches!(err, Error::MasterKey(_)), "{err}");

    let restarted = tessera_server::open(h.test_db.config()).await.unwrap();
    let keys = &restarted.keys;
    keys.maintain_at(now).await.unwrap();
    let jwks = keys.jwks_json();
    assert!(
        !jwks.contains(&broken) && !jwks.contains(&broken_rs),
        "{jwks}"
    );
    assert!(jwks.contains(&access), "{jwks}");
    // Listed as such (`/admin/keys`), not as announced.
    let listed = keys.stored(now).await.unwrap();
    for kid in [&broken, &broken_rs] {
        let (_, state) = listed.iter().find(|(k, _)| k.kid == **kid).unwrap();
        assert_eq!(*state, KeyState::Unreadable, "{kid}");
    }
    // The rotation is made again: a new ES256 key, announced.
    let listed = keys.list(now);
    let (again, state) = listed
        .iter()
        .filter(|(k, _)| k.alg == "ES256")
        .max_by_key(|(k, _)| k.generation)
        .unwrap();
    assert_ne!(again.kid, broken);
    assert_eq!(*state, KeyState::Announced);
    assert!(again.activate_at > now, "{again:?}");
    assert_eq!(keys.signer(now).unwrap().kid(), Some(access.as_str()));
    let signs_at = again.activate_at;
    assert_eq!(
        keys.signer(signs_at).unwrap().kid(),
        Some(again.kid.as_str())
    );
    // Once it signs, the broken key it replaces goes; the key before
    // stays while its tokens live.
    keys.maintain_at(signs_at + 1).await.unwrap();
    assert_eq!(count(broken.clone()).await, 0);
    assert!(keys.jwks_json().contains(&access));

    // The broken RS256 key, revoked: deleted, no replacement (it never
    // signed).
    let replaced = keys.revoke(&broken_rs, InChange::none()).await.unwrap();
    assert_eq!(replaced, None);
    assert_eq!(count(broken_rs.clone()).await, 0);

    // A broken key that would sign by now, and the key that really signs
    // revoked: replaced (before, the broken row counted as the one that
    // signs, and nothing replaced the revoked key).
    let rs256 = keys
        .signer_for(tessera_jose::Algorithm::RS256, now)
        .unwrap()
        .kid()
        .unwrap()
        .to_owned();
    let rotated = keys.rotate(InChange::none()).await;
    let fresh = match rotated {
        Ok(kids) => kids[1].clone(),
        Err(e) => panic!("{e}"),
    };
    h.execute(
        "UPDATE signing_keys SET sealed_key = substr(sealed_key, 2), activate_at = created_at \
         WHERE kid = $1",
        &[&fresh],
    )
    .await;
    // Revoked as `tessera keys revoke` does, by a process that opens the
    // keys as they now are.
    let command = tessera_server::open(h.test_db.config()).await.unwrap();
    // Listed as what it is, and the key that signs instead as active
    // (before, the broken key was listed active: it would sign by now).
    let listed = command
        .keys
        .stored(tessera_server::store::now())
        .await
        .unwrap();
    let state_of = |kid: &str| listed.iter().find(|(k, _)| k.kid == kid).map(|(_, s)| *s);
    assert_eq!(state_of(&fresh), Some(KeyState::Unreadable));
    assert_eq!(state_of(&rs256), Some(KeyState::Active));
    let replaced = command.keys.revoke(&rs256, InChange::none()).await.unwrap();
    command.db.close().await;
    assert!(replaced.is_some(), "the key that signed was replaced");
    restarted.db.close().await;

    // No ES256 key opens at all: the maintenance makes one that signs at
    // once.
    let stored: Vec<String> = keys
        .list(tessera_server::store::now())
        .into_iter()
        .filter(|(k, _)| k.alg == "ES256")
        .map(|(k, _)| k.kid)
        .collect();
    h.execute(
        "CREATE TABLE saved_keys AS SELECT kid, sealed_key FROM signing_keys",
        &[],
    )
    .await;
    for kid in &stored {
        h.execute(
            "UPDATE signing_keys SET sealed_key = substr(sealed_key, 2) WHERE kid = $1",
            &[kid],
        )
        .await;
    }
    let last = tessera_server::open(h.test_db.config()).await.unwrap();
    let now = tessera_server::store::now();
    assert!(last.keys.signer(now).is_err(), "nothing opens yet");
    // One of them put back as it was: listed as it is again, once read.
    let state_of = |kid: String| {
        let keys = &last.keys;
        async move {
            let listed = keys.stored(now).await.unwrap();
            listed
                .into_iter()
                .find(|(k, _)| k.kid == kid)
                .map(|(_, s)| s)
        }
    };
    let put_back = stored[0].clone();
    assert_eq!(state_of(put_back.clone()).await, Some(KeyState::Unreadable));
    h.execute(
        "UPDATE signing_keys SET sealed_key = \
         (SELECT sealed_key FROM saved_keys WHERE saved_keys.kid = signing_keys.kid) \
         WHERE kid = $1",
        &[&put_back],
    )
    .await;
    last.keys.refresh_at(now).await.unwrap();
    assert_ne!(state_of(put_back.clone()).await, Some(KeyState::Unreadable));
    assert!(last.keys.signer(now).is_ok(), "the key put back signs");
    h.execute(
        "UPDATE signing_keys SET sealed_key = substr(sealed_key, 2) WHERE kid = $1",
        &[&put_back],
    )
    .await;
    last.db.close().await;
    let last = tessera_server::open(h.test_db.config()).await.unwrap();
    // The time after the putting back (a second may have passed: the key
    // made next signs from its own moment).
    let now = tessera_server::store::now();
    assert!(last.keys.signer(now).is_err(), "nothing opens again");
    last.keys.maintain_at(now).await.unwrap();
    let made = last.keys.signer(now).unwrap().kid().unwrap().to_owned();
    assert!(!stored.contains(&made));
    let listed = last.keys.list(now);
    let (info, state) = listed.iter().find(|(k, _)| k.kid == made).unwrap();
    assert_eq!((info.alg.as_str(), *state), ("ES256", KeyState::Active));
    last.db.close().await;
    h.finish().await;
}

/// Access tokens move to RS256, which ID tokens had all along: its key
/// signs them at once, and the ES256 key, which signed them a moment ago,
/// stays published until those tokens have expired (the first start
/// stored RS256's key after it, as every rotation does).
async fn a_change_to_an_algorithm_with_keys_keeps_the_old_key_while_its_tokens_live(
    backend: Backend,
) {
    use tessera_jose::Algorithm;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    // The keys have signed for a day.
    tessera_server_test_shift(&h, 24 * 3600).await;
    let now = tessera_server::store::now();
    let old_kid = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    let mut config = h.test_db.config();
    config.keys.algorithm = Algorithm::RS256;
    // Kept for the token's life, the largest leeway a verifier may have
    // past `exp`, and a minute for a verifier's clock behind.
    let keep = tessera_server::store::secs(config.max_access_ttl)
        + tessera_jose::jwt::MAX_LEEWAY.as_secs() as i64
        + 60;
    let restarted = tessera_server::open(config).await.unwrap();
    let keys = &restarted.keys;
    let published = || {
        tessera_jose::JwkSet::from_json(&keys.jwks_json())
            .unwrap()
            .find(&old_kid)
            .is_some()
    };
    assert!(published(), "withdrawn at the start");
    assert_eq!(keys.signer(now).unwrap().algorithm(), Algorithm::RS256);
    keys.maintain_at(now).await.unwrap();
    assert!(published(), "withdrawn by the first maintenance");
    keys.maintain_at(now + keep - 10).await.unwrap();
    assert!(published(), "withdrawn while its tokens live");
    keys.maintain_at(now + keep + 10).await.unwrap();
    assert!(!published(), "kept after its tokens expired");
    restarted.db.close().await;
    h.finish().await;
}

/// A configuration that leaves out an ID-token algorithm clients
/// registered (`--id-token-alg ES384`) keeps it while they use it: its
/// key is not retired, never removed, and signs their ID tokens long
/// past the point where a dropped algorithm's keys are gone. Before, the
/// start only logged an error, and once the key was removed their code
/// exchanges and back-channel logouts failed.
async fn an_id_token_algorithm_clients_use_is_kept_when_the_configuration_drops_it(
    backend: Backend,
) {
    use tessera_jose::Algorithm;
    use tessera_server::keys::KeyState;
    let Some(h) = Harness::with(backend, |c| {
        c.keys.id_token_algorithms = vec![Algorithm::RS256, Algorithm::ES384];
    })
    .await
    else {
        return;
    };
    clients::add(
        &h.db,
        NewClient {
            name: "es384".into(),
            grants: vec![GrantType::AuthorizationCode],
            scopes: Scopes::parse("openid").unwrap(),
            redirect_uris: vec!["https://app.example.com/cb".into()],
            id_token_alg: Some(Algorithm::ES384),
            ..NewClient::default()
        },
        audit::InChange::none(),
    )
    .await
    .unwrap();
    let now = tessera_server::store::now();
    let es384 = h.app.keys.signer_for(Algorithm::ES384, now).unwrap();
    let mut config = h.test_db.config();
    config.keys.id_token_algorithms = vec![Algorithm::RS256];
    let ttl = tessera_server::store::secs(config.max_access_ttl);
    let dropped = config.keys.clone();
    let restarted = tessera_server::open(config).await.unwrap();
    // Kept for the clients that use it, not offered to new ones (the
    // configured list, which registration and discovery read, is as
    // written).
    assert_eq!(restarted.config.keys.kept_for_clients, [Algorithm::ES384]);
    assert_eq!(
        restarted.config.keys.id_token_algorithms,
        [Algorithm::RS256]
    );
    let keys = &restarted.keys;
    keys.maintain_at(now).await.unwrap();
    let later = now + ttl + 3600;
    keys.maintain_at(later).await.unwrap();
    assert_eq!(
        keys.signer_for(Algorithm::ES384, later).unwrap().kid(),
        es384.kid(),
        "the key clients use was removed"
    );
    // `tessera keys list`, under the configuration as written, says so
    // too.
    let stored = tessera_server::keys::stored(&restarted.db, &dropped, later)
        .await
        .unwrap();
    let state = stored
        .iter()
        .find(|(k, _)| Some(k.kid.as_str()) == es384.kid())
        .map(|(_, s)| *s);
    assert_eq!(state, Some(KeyState::Active));
    restarted.db.close().await;
    h.finish().await;
}

/// An instance under another configuration (a rolling deploy) marks this
/// one's keys retired; this one's maintenance forgets the mark, which
/// would otherwise count from then if its algorithm were dropped later.
async fn a_retirement_marked_under_another_configuration_is_forgotten(backend: Backend) {
    use tessera_jose::Algorithm;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let mut other = h.test_db.config();
    other.keys.algorithm = Algorithm::ES384;
    let other = tessera_server::open(other).await.unwrap();
    other.keys.maintain_at(now).await.unwrap();
    let marked = || async {
        let sql =
            "SELECT COUNT(*) FROM signing_keys WHERE alg = 'ES256' AND retired_at IS NOT NULL";
        let (n,): (i64,) = match &h.db {
            tessera_server::Db::Sqlite { writer, .. } => {
                sqlx::query_as(sql).fetch_one(writer).await.unwrap()
            }
            tessera_server::Db::Postgres(pool) => {
                sqlx::query_as(sql).fetch_one(pool).await.unwrap()
            }
        };
        n
    };
    assert_eq!(marked().await, 1, "the other configuration marks ES256");
    h.app.keys.maintain_at(now).await.unwrap();
    assert_eq!(marked().await, 0, "a configured algorithm's mark stayed");
    other.db.close().await;
    h.finish().await;
}

async fn a_rotation_by_hand_rotates_the_databases_algorithms_whatever_the_configuration(
    backend: Backend,
) {
    use tessera_jose::Algorithm;
    // The server signs ES384 access tokens and RS256 ID tokens.
    let Some(h) = Harness::with(backend, |c| c.keys.algorithm = Algorithm::ES384).await else {
        return;
    };
    // `tessera keys rotate` run without the server's configuration (the
    // default: ES256).
    let admin = tessera_server::open(h.test_db.config()).await.unwrap();
    let kids = admin
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    let stored = tessera_server::keys::stored(
        &h.db,
        &h.test_db.config().keys,
        tessera_server::store::now(),
    )
    .await
    .unwrap();
    let algs = |alg: &str| stored.iter().filter(|(k, _)| k.alg == alg).count();
    assert_eq!(algs("ES256"), 0, "a key of the caller's default was made");
    assert_eq!(algs("ES384"), 2, "the signing algorithm was not rotated");
    assert_eq!(algs("RS256"), 2);
    assert_eq!(kids.len(), 2);
    admin.db.close().await;
    h.finish().await;
}

async fn cut_offs_outlive_the_longest_token_whatever_the_appenders_configuration(backend: Backend) {
    // The server allows day-long access tokens; an admin command run
    // without its configuration (the default hour) changes a password.
    let Some(h) = Harness::with(backend, |c| {
        c.max_access_ttl = std::time::Duration::from_secs(24 * 3600);
    })
    .await
    else {
        return;
    };
    // As its start does (`serve`).
    revocation::raise_longest_access_ttl(&h.db, 24 * 3600)
        .await
        .unwrap();
    let sub = h.user("alice", "old password", "read").await;
    let now = tessera_server::store::now();
    let hash = h.hash("new password").await;
    users::set_password(
        &h.db,
        "alice",
        &hash,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    // Two hours on, past what the admin command's hour would keep, a token
    // of alice's from before the change still lives: its cut-off must too.
    let later = now + 2 * 3600;
    retention::prune(&h.db, later, retention::Retention { audit: None })
        .await
        .unwrap();
    let elsewhere = revocation::Revocations::default();
    elsewhere.sync(&h.db).await.unwrap();
    let before_change = tessera_guard::revocation::Revocable {
        sub: Some(&sub),
        iat: Some(now - 10),
        ..Default::default()
    };
    assert!(
        elsewhere.refuses(before_change),
        "the cut-off was pruned while tokens it refuses still live"
    );
    // A later start with a shorter lifetime does not lower what is kept.
    assert_eq!(
        revocation::raise_longest_access_ttl(&h.db, 3600)
            .await
            .unwrap(),
        24 * 3600
    );
    h.finish().await;
}

/// The JWKS publishes each key as derived from its sealed private key:
/// a row's public key changed in the database (by someone without the
/// master key) is not published, and tokens signed with the matching
/// private key under the real kid are refused.
async fn a_public_key_changed_in_the_database_is_not_published(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let keys = &h.app.keys;
    let signer = keys.signer(tessera_server::store::now()).unwrap();
    let kid = signer.kid().unwrap().to_owned();
    let published = |keys: &tessera_server::keys::Keys| {
        let set: serde_json::Value = serde_json::from_str(&keys.jwks_json()).unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .cloned()
            .unwrap()
    };
    let genuine = published(keys);
    // What is stored is what is derived, for an untouched row.
    let (stored,): (String,) = match &h.db {
        tessera_server::Db::Sqlite { reader, .. } => {
            sqlx::query_as("SELECT public_jwk FROM signing_keys WHERE kid = $1")
                .bind(&kid)
                .fetch_one(reader)
                .await
                .unwrap()
        }
        tessera_server::Db::Postgres(pool) => {
            sqlx::query_as("SELECT public_jwk FROM signing_keys WHERE kid = $1")
                .bind(&kid)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
        genuine
    );
    // An attacker's key put in the row under the real kid.
    let attacker = tessera_jose::SigningKey::generate(signer.algorithm())
        .unwrap()
        .with_kid(kid.clone());
    let forged = attacker
        .verifying_key()
        .unwrap()
        .to_public_jwk()
        .unwrap()
        .to_json();
    let sql = "UPDATE signing_keys SET public_jwk = $1 WHERE kid = $2";
    match &h.db {
        tessera_server::Db::Sqlite { writer, .. } => {
            sqlx::query(sql)
                .bind(&forged)
                .bind(&kid)
                .execute(writer)
                .await
                .unwrap();
        }
        tessera_server::Db::Postgres(pool) => {
            sqlx::query(sql)
                .bind(&forged)
                .bind(&kid)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    keys.maintain().await.unwrap();
    let second = tessera_server::open(h.test_db.config()).await.unwrap();
    for keys in [keys.as_ref(), second.keys.as_ref()] {
        assert_eq!(published(keys), genuine);
        let forged_token = tessera_jose::jwt::sign(
            &tessera_jose::Claims::new().issuer(crate::ISSUER),
            &attacker,
        )
        .unwrap();
        assert!(tessera_jose::jwt::verify::<tessera_jose::NoCustomClaims>(
            &forged_token,
            &tessera_jose::KeySet::from_jwks(
                &tessera_jose::JwkSet::from_json(&keys.jwks_json()).unwrap()
            )
            .unwrap(),
            &tessera_jose::Validation::new()
                .issuer(crate::ISSUER)
                .require("iss"),
        )
        .is_err());
    }
    second.db.close().await;
    h.finish().await;
}

/// A SQLite database holds password hashes and token digests: a new one
/// is its owner's only, even in a directory anyone may read, and an
/// existing one that anyone could read is kept from other users (a group
/// the operator chose keeps its access).
#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("tessera.db");
    let url = format!("sqlite://{}", file.display());
    let others = |suffix: &str| {
        let path = format!("{}{suffix}", file.display());
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o077)
            .ok()
    };
    let db = tessera_server::Db::connect(&url, 1).await.unwrap();
    assert_eq!(others(""), Some(0), "a new database");
    assert_eq!(others("-wal"), Some(0), "its write-ahead log");
    db.close().await;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let db = tessera_server::Db::connect(&url, 1).await.unwrap();
    assert_eq!(others(""), Some(0o040), "an existing one, left readable");
    db.close().await;
}

async fn pruning_removes_only_what_is_over_in_batches(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    // 2,500 events older than the retention (three batches), 300 within.
    let events: Vec<_> = (0..2800)
        .map(|i| {
            let at = if i < 2500 { now - 7200 } else { now - 60 };
            (
                at,
                audit::Event::new("token_issued").detail(format!("n={i}")),
            )
        })
        .collect();
    let mut sequence = audit::Sequence::start().unwrap();
    audit::record_all(&h.db, sequence.take(events.len()), &events)
        .await
        .unwrap();
    let client = h.public_client("read").await;
    let over = RefreshPolicy {
        ttl: -10,
        max_lifetime: -10,
        grace: 0,
    };
    for _ in 0..5 {
        refresh::issue(&h.db, new_family(&client), &over)
            .await
            .unwrap();
    }
    let (live_family, live) = refresh::issue(&h.db, new_family(&client), &policy(0))
        .await
        .unwrap();
    let keep = retention::Retention { audit: Some(3600) };
    let pruned = retention::prune(&h.db, now, keep).await.unwrap();
    assert_eq!(pruned.audit, 2500);
    assert_eq!(pruned.refresh, 10, "five tokens, then their five families");
    let left = audit::recent(&h.db, Some("token_issued"), 10_000)
        .await
        .unwrap();
    assert_eq!(left.len(), 300);
    assert!(left.iter().all(|e| e.at == now - 60));
    assert_eq!(
        refresh::lookup(&h.db, &live)
            .await
            .unwrap()
            .unwrap()
            .family
            .id,
        live_family
    );
    // Nothing more to do: a second run deletes nothing.
    assert_eq!(retention::prune(&h.db, now, keep).await.unwrap().total(), 0);
    // Kept for ever: audit events stay whatever their age.
    let forever = retention::Retention { audit: None };
    assert_eq!(
        retention::prune(&h.db, now + 10_000_000, forever)
            .await
            .unwrap()
            .audit,
        0
    );
    // A revoked family goes a day after its revocation (it was kept to its
    // end, 90 days by default); a live one stays.
    let long = RefreshPolicy {
        ttl: 864_000,
        max_lifetime: 864_000,
        grace: 0,
    };
    let (revoked, _) = refresh::issue(&h.db, new_family(&client), &long)
        .await
        .unwrap();
    let (kept, _) = refresh::issue(&h.db, new_family(&client), &long)
        .await
        .unwrap();
    // The revoked family was rotated 2,500 times (each used token is kept
    // to its own expiry): its tokens go in batches before it, not in one
    // cascade holding the writer.
    let rotated = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, used_at) \
             SELECT CAST('rotated' || i AS BLOB), $1, 0, 4000000000, 1 FROM n"
        }
        Backend::Postgres => {
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, used_at) \
             SELECT convert_to('rotated' || i, 'UTF8'), $1, 0, 4000000000, 1 \
             FROM generate_series(1, 2500) AS i"
        }
    };
    h.execute(rotated, &[&revoked]).await;
    refresh::revoke_family(&h.db, &revoked, "logout")
        .await
        .unwrap();
    let revoked_at = tessera_server::store::now();
    retention::prune(&h.db, revoked_at + 86_000, keep)
        .await
        .unwrap();
    assert!(refresh::family(&h.db, &revoked).await.unwrap().is_some());
    let pruned = retention::prune(&h.db, revoked_at + 86_402, keep)
        .await
        .unwrap();
    assert_eq!(
        pruned.refresh,
        2_501 + 1,
        "its tokens by the batched statement, then the family"
    );
    assert!(refresh::family(&h.db, &revoked).await.unwrap().is_none());
    assert!(refresh::family(&h.db, &kept).await.unwrap().is_some());
    h.finish().await;
}

async fn audit_batches_keep_every_event(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    // Absent fields, quotes, backslashes and non-ASCII text come back as
    // they went in (SQLite reads them out of one JSON array).
    let events: Vec<_> = (0..450)
        .map(|i| {
            let mut event = audit::Event::new("token_issued").detail(format!("n={i}"));
            if i % 2 == 0 {
                event = event.client("c\"\\ é");
            }
            (i, event)
        })
        .collect();
    let mut sequence = audit::Sequence::start().unwrap();
    audit::record_all(&h.db, sequence.take(events.len()), &events)
        .await
        .unwrap();
    let stored = audit::recent(&h.db, Some("token_issued"), 1000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 450, "one statement, nothing lost");
    assert_eq!(stored[0].detail.as_deref(), Some("n=449"), "newest first");
    assert_eq!(stored[449].at, 0);
    for (record, (at, event)) in stored.iter().rev().zip(&events) {
        assert_eq!(record.at, *at, "in order");
        assert_eq!(record.event, event.event);
        assert_eq!(record.client_id, event.client_id);
        assert_eq!(record.subject, None);
        assert_eq!(record.detail, event.detail);
    }
    h.finish().await;
}

/// A batch written again under the same number (the answer to its first
/// write was lost: a connection cut at COMMIT, a write past its timeout
/// that committed all the same) adds nothing; the next batch, another
/// writer's, and events written one at a time in a change's transaction
/// are all kept.
async fn an_audit_batch_written_twice_is_stored_once(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let batch: Vec<_> = (0..5)
        .map(|i| {
            (
                i,
                audit::Event::new("token_issued").detail(format!("n={i}")),
            )
        })
        .collect();
    let mut sequence = audit::Sequence::start().unwrap();
    let first = sequence.take(batch.len());
    audit::record_all(&h.db, first, &batch).await.unwrap();
    audit::record_all(&h.db, first, &batch).await.unwrap();
    // Under the same number, whatever it holds.
    audit::record_all(&h.db, first, &batch[..2]).await.unwrap();
    let stored = |h: &Harness| {
        let db = h.db.clone();
        async move {
            audit::recent(&db, Some("token_issued"), 100)
                .await
                .unwrap()
                .into_iter()
                .rev()
                .map(|r| r.detail.unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(stored(&h).await, ["n=0", "n=1", "n=2", "n=3", "n=4"]);
    // The next batch, a second writer's, and events of no batch.
    audit::record_all(&h.db, sequence.take(1), &batch[..1])
        .await
        .unwrap();
    let mut other = audit::Sequence::start().unwrap();
    audit::record_all(&h.db, other.take(1), &batch[..1])
        .await
        .unwrap();
    for _ in 0..2 {
        audit::record(&h.db, audit::Event::new("token_issued").detail("n=0"))
            .await
            .unwrap();
    }
    assert_eq!(
        stored(&h).await,
        ["n=0", "n=1", "n=2", "n=3", "n=4", "n=0", "n=0", "n=0", "n=0"]
    );
    h.finish().await;
}

/// At shutdown with the database gone, the batches left share one grace
/// (10 s), then go to the log. Before, each batch of 4,096 had a grace of
/// its own: a full backlog (some 25 batches) took minutes, past any
/// supervisor's patience, and a SIGKILL lost them, even from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_batches_left_at_shutdown_share_one_grace() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::connect(&url, 2).await.unwrap();
    let (queue, writer) = audit::AuditQueue::start(db.clone());
    db.close().await;
    for i in 0..3 * 4096 {
        queue.push(audit::Event::new("token_issued").subject(i.to_string()));
    }
    drop(queue);
    tokio::time::timeout(std::time::Duration::from_secs(25), writer.finish())
        .await
        .expect("each batch waited a grace of its own");
}

/// Events the database does not take yet (a full disk, say) are held in
/// memory and retried; each is said in the log at the batch's first
/// failure, so that a crash meanwhile (the process killed) leaves them
/// there at least. Before, only their count was, and a kill lost them.
#[tokio::test]
async fn audit_events_held_for_a_retry_are_said_in_the_log() {
    let (logged, _logging) = crate::Logged::capture();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::connect(&url, 2).await.unwrap();
    let (queue, _writer) = audit::AuditQueue::start(db.clone());
    db.close().await;
    for who in ["alice", "bob", "carol"] {
        queue.push(audit::Event::new("token_issued").subject(who.to_owned()));
    }
    // Said once the retries have lasted over a second.
    let said = |who: &str| {
        let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .any(|l| l.contains("not written yet") && l.contains(&format!("subject=\"{who}\"")))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !["alice", "bob", "carol"].iter().all(|who| said(who)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&logged.0.lock().unwrap())
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub(crate) fn grant(client_id: &str, user_id: &str, sid: &str, i: usize) -> Grant {
    Grant {
        client_id: client_id.into(),
        user_id: user_id.into(),
        sid: sid.into(),
        redirect_uri: format!("https://app.example.com/cb?n={i}&q=\"é\""),
        code_challenge: format!("challenge-{i}"),
        nonce: (!i.is_multiple_of(3)).then(|| format!("nonce-{i}")),
        scope: "openid profile".into(),
        auth_time: 1_700_000_000 + i64::try_from(i).unwrap(),
    }
}

/// A live session of `user_id` (a code is spent only while its session
/// lives): its `sid`.
pub(crate) async fn live_session(h: &Harness, user_id: &str) -> String {
    let policy = SessionPolicy {
        idle: 3600,
        absolute: 3600,
    };
    h.start_session(user_id, policy).await.1.sid
}

/// A use recorded by an instance whose clock is behind, or that read the
/// session before another instance recorded a later use, leaves the later
/// use standing: before, the earlier time was written over it and the
/// session looked idle sooner than it was.
async fn a_use_recorded_late_never_moves_the_last_use_back(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "openid").await;
    let policy = SessionPolicy {
        idle: 3600,
        absolute: 7200,
    };
    let (_, mut read) = h.start_session(&user, policy).await;
    let later = read.last_seen + 600;
    h.execute(
        "UPDATE sessions SET last_seen = last_seen + 600 WHERE sid = $1",
        &[&read.sid],
    )
    .await;
    read.last_seen -= 120;
    sessions::touch(&h.db, &read, policy).await.unwrap();
    let seen = || async {
        sessions::by_sid(&h.db, &read.sid)
            .await
            .unwrap()
            .unwrap()
            .last_seen
    };
    assert_eq!(
        seen().await,
        later,
        "an earlier use was written over a later one"
    );
    // Nor does a login that renews the session.
    let alice = tessera_server::store::users::find_by_id(&h.db, &user)
        .await
        .unwrap()
        .unwrap();
    let login = sessions::LoggedIn {
        user_id: &user,
        password_hash: &alice.password_hash,
    };
    let renewed = sessions::renew(&h.db, &read.sid, login, policy)
        .await
        .unwrap();
    assert!(renewed.is_some(), "renewed");
    assert_eq!(seen().await, later, "a renewal moved the last use back");
    h.finish().await;
}

/// A client recorded with a session while the session's end is under way
/// (PostgreSQL: the end holds the session's row until it commits) waits
/// for the end and records nothing: before, it slipped in after the end
/// had read the session's clients, and that client got its tokens and
/// never heard of the logout.
#[tokio::test]
async fn a_client_is_not_recorded_with_a_session_being_ended() {
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let Db::Postgres(pool) = &h.db else {
        unreachable!("a PostgreSQL database")
    };
    let user = h.user("alice", "correct horse", "openid").await;
    let client = h.public_client("openid").await;
    let sid = live_session(&h, &user).await;
    let mut ending = pool.begin().await.unwrap();
    sqlx::query("UPDATE sessions SET ended_at = 1 WHERE sid = $1")
        .bind(&sid)
        .execute(&mut *ending)
        .await
        .unwrap();
    let recording = {
        let (db, sid, client) = (h.db.clone(), sid.clone(), client.clone());
        tokio::spawn(async move { sessions::add_client(&db, &sid, &client).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!recording.is_finished(), "did not wait for the end");
    ending.commit().await.unwrap();
    recording.await.unwrap().unwrap();
    let (recorded,): (i64,) = sqlx::query_as("SELECT count(*) FROM session_clients WHERE sid = $1")
        .bind(&sid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "recorded with a session that had ended");
    h.finish().await;
}

/// Codes issued and presented at once go to the database in groups (one
/// statement each way): every code keeps its own binding, a pending
/// request is answered once, and a code is spent once, by its own client.
/// (Which claims share a group depends on timing; the order within a group
/// is tested in `store::codes`'s unit tests.)
async fn codes_committed_in_groups_keep_every_binding(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "openid").await;
    let client = h.public_client("openid").await;
    let sid = live_session(&h, &user).await;
    let writer = CodeWriter::start(h.db.clone());
    let issued: Vec<_> = (0..30)
        .map(|i| {
            let (writer, grant) = (writer.clone(), grant(&client, &user, &sid, i));
            // Pairs of codes answer the same pending request: one of each
            // pair is stored. The rest answer no request.
            // The first three pairs carry one code each (a form sent
            // twice at once): one of each is stored, and only its caller
            // is told so.
            let request = (i < 10).then(|| codes::Answering {
                request: vec![u8::try_from(i / 2).unwrap(); 32],
                code: if i < 6 {
                    zeroize::Zeroizing::new(format!("the-code-of-pair-{}", i / 2))
                } else {
                    tessera_server::secret::random_token().unwrap()
                },
            });
            tokio::spawn(async move { (grant.clone(), writer.issue(&grant, request).await) })
        })
        .collect();
    let mut codes = Vec::new();
    for task in issued {
        let (grant, code) = task.await.unwrap();
        if let Some(code) = code.unwrap() {
            codes.push((grant, code));
        }
    }
    assert_eq!(
        codes.len(),
        25,
        "five requests answered once, twenty codes without one"
    );
    let issuing = Issued {
        family_id: Some("family".into()),
        access_jti: Some("jti".into()),
        access_expires_at: Some(42),
    };
    let presented: Vec<_> = codes
        .iter()
        .flat_map(|(grant, code)| {
            // Each code once by another client, once by its own with
            // another verifier, then twice by its own, likely in one group.
            let wrong = codes::Proof {
                code_challenge: "another".into(),
                ..proof_of(grant)
            };
            [
                ("someone-else".to_owned(), proof_of(grant)),
                (client.clone(), wrong),
                (client.clone(), proof_of(grant)),
                (client.clone(), proof_of(grant)),
            ]
            .map(|(by, proof)| {
                let (writer, code, grant, issuing) =
                    (writer.clone(), code.clone(), grant.clone(), issuing.clone());
                tokio::spawn(async move {
                    let redeemed = writer
                        .redeem(&code, &by, &proof, &issuing, codes::append_always())
                        .await;
                    (by, grant, redeemed)
                })
            })
        })
        .collect();
    let (mut first, mut replayed, mut invalid, mut unproven) = (0, 0, 0, 0);
    for task in presented {
        match task.await.unwrap() {
            (by, grant, Ok(Redeemed::First(spent))) => {
                first += 1;
                assert_eq!(by, client, "spent by its own client only");
                assert_eq!(spent.username.as_deref(), Some("alice"));
                let g = spent.grant;
                assert_eq!(
                    (
                        g.client_id,
                        g.user_id,
                        g.sid,
                        g.redirect_uri,
                        g.code_challenge
                    ),
                    (
                        grant.client_id,
                        grant.user_id,
                        grant.sid,
                        grant.redirect_uri,
                        grant.code_challenge
                    )
                );
                assert_eq!(
                    (g.nonce, g.scope, g.auth_time),
                    (grant.nonce, grant.scope, grant.auth_time)
                );
            }
            (
                by,
                grant,
                Ok(Redeemed::Replayed {
                    issued,
                    user_id,
                    sid,
                    ..
                }),
            ) => {
                replayed += 1;
                assert_eq!(by, client, "another client's claim is no replay");
                assert_eq!((user_id, sid), (grant.user_id, grant.sid));
                assert_eq!(issued.family_id.as_deref(), Some("family"));
                assert_eq!(issued.access_expires_at, Some(42));
            }
            (by, _, Ok(Redeemed::Invalid)) => {
                invalid += 1;
                assert_ne!(by, client, "its own client's claim is never refused");
            }
            (by, _, Ok(Redeemed::WrongVerifier)) => {
                unproven += 1;
                assert_eq!(by, client);
            }
            (_, _, Ok(Redeemed::ReplayedAgain | Redeemed::WrongRedirectUri)) => {
                panic!("each code is replayed once, always to its redirect URI")
            }
            (_, _, Err(e)) => panic!("{e}"),
        }
    }
    // The wrong verifier neither spent a code nor stood in for the right
    // one in its group.
    assert_eq!((first, replayed, invalid, unproven), (25, 25, 25, 25));
    h.finish().await;
}

/// Batched writes use one statement text whatever the batch's size:
/// statements prepared per size would pile up in every connection's cache
/// and, on PostgreSQL, in every backend (memory that grew run after run).
async fn batched_writes_prepare_one_statement_whatever_their_size(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.max_connections = 1).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "openid").await;
    let client = h.public_client("openid").await;
    let sid = live_session(&h, &user).await;
    let prepared = || async {
        match &h.db {
            Db::Postgres(pool) => {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_prepared_statements \
                     WHERE statement LIKE '%audit_log%' OR statement LIKE '%authorization_codes%'",
                )
                .fetch_one(pool)
                .await
                .unwrap();
                n
            }
            // SQLite: the writer connection's statement cache (every
            // write goes through that one connection).
            Db::Sqlite { writer, .. } => {
                let conn = writer.acquire().await.unwrap();
                i64::try_from(conn.cached_statements_size()).unwrap()
            }
        }
    };
    let writer = CodeWriter::start(h.db.clone());
    let mut sequence = audit::Sequence::start().unwrap();
    let mut before = None;
    for size in 1..=12 {
        let events: Vec<_> = (0..size)
            .map(|i| (i, audit::Event::new("token_issued")))
            .collect();
        audit::record_all(&h.db, sequence.take(events.len()), &events)
            .await
            .unwrap();
        let issued: Vec<_> = (0..size)
            .map(|i| {
                let (writer, grant) = (
                    writer.clone(),
                    grant(&client, &user, &sid, usize::try_from(i).unwrap()),
                );
                tokio::spawn(async move {
                    let code = writer.issue(&grant, None).await.unwrap().unwrap();
                    (code, proof_of(&grant))
                })
            })
            .collect();
        for task in issued {
            let (code, proof) = task.await.unwrap();
            let spent = writer
                .redeem(
                    &code,
                    &client,
                    &proof,
                    &Issued::default(),
                    codes::append_always(),
                )
                .await
                .unwrap();
            assert!(matches!(spent, Redeemed::First(_)), "{spent:?}");
        }
        let now = prepared().await;
        match before {
            None => before = Some(now),
            Some(first) => assert_eq!(
                now, first,
                "a batch of {size} prepared a statement of its own"
            ),
        }
    }
    let stored = audit::recent(&h.db, Some("token_issued"), 1000)
        .await
        .unwrap();
    assert_eq!(stored.len(), (1..=12).sum::<usize>());
    h.finish().await;
}

/// Whether a user's cut came while a request was under way is told by the
/// log's order (the event arrived after the request's cursor), not by
/// comparing the request's clock with the cut's, which on PostgreSQL is
/// the database's: a token request uses this to refuse a grant that may
/// have checked what the change replaced.
async fn a_cut_is_under_way_for_a_request_by_the_log_not_the_clocks(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let alice = h.user("alice", "correct horse", "read").await;
    let bob = h.user("bob", "battery staple", "read").await;
    let revoked = h.app.access.revoked();
    revoked.sync(&h.db).await.unwrap();
    let began = revoked.latest();
    assert!(!revoked.user_cut_since(began, &alice));
    let hash = h.hash("new horse").await;
    users::set_password(
        &h.db,
        "alice",
        &hash,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    revoked.sync(&h.db).await.unwrap();
    assert!(revoked.user_cut_since(began, &alice), "under way");
    assert!(!revoked.user_cut_since(began, &bob), "another user");
    assert!(
        !revoked.user_cut_since(revoked.latest(), &alice),
        "a request that began after the change had it in its copy"
    );
    h.finish().await;
}

/// Grants, audiences and URIs given twice (not one after the other) are
/// stored once, in the order first given: an audience twice was in every
/// token's `aud` twice.
async fn a_client_given_a_value_twice_stores_it_once(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let uri = |path: &str| format!("https://app.example.com/{path}");
    let added = clients::add(
        &h.db,
        NewClient {
            name: "twice".into(),
            grants: vec![
                GrantType::AuthorizationCode,
                GrantType::RefreshToken,
                GrantType::AuthorizationCode,
            ],
            scopes: Scopes::parse("openid").unwrap(),
            audiences: vec!["api-a".into(), "api-b".into(), "api-a".into()],
            redirect_uris: vec![uri("cb"), uri("other"), uri("cb")],
            post_logout_redirect_uris: vec![uri("out"), uri("out")],
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    let client = clients::find(&h.db, &added.client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        client.grants,
        [GrantType::AuthorizationCode, GrantType::RefreshToken]
    );
    assert_eq!(client.audiences, ["api-a", "api-b"]);
    assert_eq!(client.redirect_uris, [uri("cb"), uri("other")]);
    assert_eq!(client.post_logout_redirect_uris, [uri("out")]);
    h.finish().await;
}

/// A code of a session past its absolute end (not ended yet) is not
/// exchanged: the maintenance deletes such a session once no family of it
/// lives, and would leave one the exchange started without its session,
/// which `tessera session end` could then not reach.
async fn a_code_of_a_session_past_its_end_is_not_exchanged(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "read").await;
    let client = h.public_client("read").await;
    let sid = live_session(&h, &user).await;
    let writer = CodeWriter::start(h.db.clone());
    let redeem = |grant: Grant| {
        let writer = writer.clone();
        let client = client.clone();
        async move {
            let code = writer.issue(&grant, None).await.unwrap().unwrap();
            writer
                .redeem(
                    &code,
                    &client,
                    &proof_of(&grant),
                    &Issued::default(),
                    codes::append_always(),
                )
                .await
                .unwrap()
        }
    };
    let live = redeem(grant(&client, &user, &sid, 0)).await;
    assert!(matches!(live, Redeemed::First(_)), "{live:?}");
    let code = writer
        .issue(&grant(&client, &user, &sid, 1), None)
        .await
        .unwrap()
        .unwrap();
    h.execute("UPDATE sessions SET expires_at = 1 WHERE sid = $1", &[&sid])
        .await;
    let late = writer
        .redeem(
            &code,
            &client,
            &proof_of(&grant(&client, &user, &sid, 1)),
            &Issued::default(),
            codes::append_always(),
        )
        .await
        .unwrap();
    assert!(!matches!(late, Redeemed::First(_)), "{late:?}");
    h.finish().await;
}

async fn users_are_unique_and_can_be_disabled_and_deleted(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let id = h.user("alice", "correct horse", "read write").await;
    let again = users::add(
        &h.db,
        "alice",
        "x",
        &Scopes::default(),
        &users::Profile::default(),
        tessera_server::store::audit::InChange::none(),
    )
    .await;
    assert!(
        matches!(again, Err(Error::Exists { kind: "user", .. })),
        "{again:?}"
    );
    let user = users::find(&h.db, "alice").await.unwrap().unwrap();
    assert_eq!(user.id, id);
    assert!(!user.disabled);
    assert!(
        !format!("{user:?}").contains("argon2"),
        "the hash must not reach Debug output"
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
    assert!(users::find(&h.db, "alice").await.unwrap().unwrap().disabled);
    assert!(matches!(
        users::set_disabled(
            &h.db,
            "bob",
            true,
            KEEP,
            tessera_server::store::audit::InChange::none()
        )
        .await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(users::list(&h.db, None, 100).await.unwrap().len(), 1);
    users::delete(
        &h.db,
        "alice",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert!(users::find(&h.db, "alice").await.unwrap().is_none());
    assert!(matches!(
        users::delete(
            &h.db,
            "alice",
            KEEP,
            tessera_server::store::audit::InChange::none()
        )
        .await,
        Err(Error::NotFound { .. })
    ));
    assert!(users::add(
        &h.db,
        "bad\nname",
        "x",
        &Scopes::default(),
        &users::Profile::default(),
        tessera_server::store::audit::InChange::none()
    )
    .await
    .is_err());
    // A profile that is refused adds no user: the same name can be added
    // right after, with its profile.
    let with_email = |email: &str| users::Profile {
        email: Some(email.into()),
        ..users::Profile::default()
    };
    for wrong in [
        with_email("bob"),
        with_email("@"),
        with_email("bob@"),
        with_email("@example.com"),
        with_email("bob@example@com"),
        with_email("bob @example.com"),
        users::Profile {
            name: Some("Bob\u{7}".into()),
            ..users::Profile::default()
        },
    ] {
        let refused = users::add(
            &h.db,
            "bob",
            "x",
            &Scopes::default(),
            &wrong,
            tessera_server::store::audit::InChange::none(),
        )
        .await;
        assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
        assert!(users::find(&h.db, "bob").await.unwrap().is_none());
    }
    let right = users::Profile {
        name: Some("Bob Builder".into()),
        email: Some("bob@example.com".into()),
        email_verified: Some(true),
    };
    let bob = users::add(
        &h.db,
        "bob",
        "x",
        &Scopes::default(),
        &right,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert_eq!(bob.email.as_deref(), Some("bob@example.com"));
    let stored = users::find(&h.db, "bob").await.unwrap().unwrap();
    assert_eq!(
        (
            stored.name.as_deref(),
            stored.email.as_deref(),
            stored.email_verified
        ),
        (Some("Bob Builder"), Some("bob@example.com"), true)
    );
    h.finish().await;
}

async fn clients_keep_only_a_digest_of_their_secret(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let client = clients::find(&h.db, &id).await.unwrap().unwrap();
    let stored = client.secret_hash.clone().unwrap();
    assert_eq!(stored, tessera_server::secret::token_digest(&secret));
    assert_ne!(stored, secret.as_bytes());
    assert!(!format!("{client:?}").contains(&secret));

    let rotated = clients::rotate_secret(
        &h.db,
        &id,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert_ne!(*rotated, secret);
    let client = clients::find(&h.db, &id).await.unwrap().unwrap();
    assert_eq!(
        client.secret_hash.unwrap(),
        tessera_server::secret::token_digest(&rotated)
    );

    // Shapes that make no sense are refused.
    let public_cc = clients::add(
        &h.db,
        NewClient {
            name: "x".into(),
            grants: vec![GrantType::ClientCredentials],
            public: true,
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await;
    assert!(matches!(public_cc, Err(Error::Invalid(_))));
    let private_jwks = tessera_jose::SigningKey::generate(tessera_jose::Algorithm::ES256)
        .unwrap()
        .to_jwk()
        .unwrap();
    let with_private = clients::add(
        &h.db,
        NewClient {
            name: "x".into(),
            jwks: Some(tessera_jose::JwkSet::new(vec![private_jwks]).to_json()),
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await;
    assert!(
        matches!(with_private, Err(Error::Invalid(_))),
        "{with_private:?}"
    );
    // Keys that could never verify an assertion (an RSA key without `alg`,
    // whose algorithm a token would choose; none at all) are refused at
    // registration, not found out at the first assertion.
    let mut no_alg = tessera_jose::SigningKey::generate(tessera_jose::Algorithm::RS256)
        .unwrap()
        .verifying_key()
        .unwrap()
        .to_public_jwk()
        .unwrap();
    no_alg.alg = None;
    for (jwks, said) in [
        (
            tessera_jose::JwkSet::new(vec![no_alg]).to_json(),
            "cannot verify",
        ),
        (r#"{"keys":[]}"#.to_owned(), "no key"),
    ] {
        let unusable = clients::add(
            &h.db,
            NewClient {
                name: "x".into(),
                jwks: Some(jwks),
                ..NewClient::default()
            },
            tessera_server::store::audit::InChange::none(),
        )
        .await;
        match unusable {
            Err(Error::Invalid(why)) => assert!(why.contains(said), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    let public = h.public_client("read").await;
    assert!(matches!(
        clients::rotate_secret(
            &h.db,
            &public,
            KEEP,
            tessera_server::store::audit::InChange::none()
        )
        .await,
        Err(Error::Invalid(_))
    ));
    clients::delete(
        &h.db,
        &id,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert!(clients::find(&h.db, &id).await.unwrap().is_none());
    assert!(matches!(
        clients::rotate_secret(
            &h.db,
            &id,
            KEEP,
            tessera_server::store::audit::InChange::none()
        )
        .await,
        Err(Error::NotFound { .. })
    ));
    h.finish().await;
}

fn policy(grace: i64) -> RefreshPolicy {
    RefreshPolicy {
        ttl: 3600,
        max_lifetime: 86400,
        grace,
    }
}

/// Rotate `token` for `client` (whose scopes are `read`), asking for no
/// particular scope, with one master key for every test.
async fn rotate(
    db: &tessera_server::Db,
    token: &str,
    client: &str,
    policy: &RefreshPolicy,
) -> Result<Result<refresh::Rotated, Refused>, Error> {
    static MASTER: std::sync::OnceLock<Arc<MasterKey>> = std::sync::OnceLock::new();
    let master = MASTER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        Arc::new(MasterKey::create(&dir.path().join("master.key")).unwrap())
    });
    let scopes = Scopes::parse("read").unwrap();
    let successor = tessera_server::secret::random_token().unwrap();
    let rotation = refresh::Rotation {
        presented: token,
        client_id: client,
        client_scopes: &scopes,
        requested: None,
        successor: &successor,
        keep: KEEP,
    };
    refresh::rotate(db, rotation, policy, master).await
}

async fn family(h: &Harness, client_id: &str) -> (String, String) {
    let (id, token) = refresh::issue(
        &h.db,
        NewFamily {
            client_id,
            subject: "user-1",
            username: None,
            password_hash: None,
            user_scopes: None,
            scope: "read",
            auth_time: Some(1),
            sid: None,
        },
        &policy(0),
    )
    .await
    .unwrap();
    (id, token.to_string())
}

async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    let (family_id, first) = family(&h, &client).await;
    assert!(refresh::lookup(&h.db, &first).await.unwrap().is_some());

    let second = rotate(&h.db, &first, &client, &policy(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.family.id, family_id);
    assert!(!second.retried);
    assert!(
        refresh::lookup(&h.db, &first).await.unwrap().is_none(),
        "a rotated token is spent"
    );
    assert!(refresh::lookup(&h.db, &second.token)
        .await
        .unwrap()
        .is_some());
    assert_eq!(refresh::live_tokens(&h.db, &family_id).await.unwrap(), 1);

    // The spent token comes back: the whole family dies, the live one too.
    let reused = rotate(&h.db, &first, &client, &policy(0)).await.unwrap();
    assert_eq!(
        reused.unwrap_err(),
        Refused::Reused {
            family_id: family_id.clone(),
            subject: "user-1".into(),
            sid: None,
        }
    );
    assert_eq!(refresh::live_tokens(&h.db, &family_id).await.unwrap(), 0);
    let after = rotate(&h.db, &second.token, &client, &policy(0))
        .await
        .unwrap();
    assert_eq!(after.unwrap_err(), Refused::Revoked);
    assert!(refresh::family(&h.db, &family_id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    h.finish().await;
}

async fn concurrent_rotations_leave_at_most_one_live_successor(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    let (family_id, token) = family(&h, &client).await;
    let db = Arc::new(h.db.clone());
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let (db, token, client) = (Arc::clone(&db), token.clone(), client.clone());
            tokio::spawn(async move { rotate(&db, &token, &client, &policy(0)).await.unwrap() })
        })
        .collect();
    let mut won = Vec::new();
    let (mut reused, mut revoked) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(rotated) => won.push(rotated),
            Err(Refused::Reused { .. }) => reused += 1,
            // Losers that come after the family's revocation.
            Err(Refused::Revoked) => revoked += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one rotation wins the race");
    assert!(reused >= 1);
    assert_eq!(reused + revoked, 23);
    // The losers presented a spent token: reuse, so the family is revoked
    // and even the winner's successor is dead.
    assert!(refresh::live_tokens(&h.db, &family_id).await.unwrap() <= 1);
    assert_eq!(refresh::live_tokens(&h.db, &family_id).await.unwrap(), 0);
    assert!(refresh::lookup(&h.db, &won[0].token)
        .await
        .unwrap()
        .is_none());
    h.finish().await;
}

async fn concurrent_retries_in_the_grace_period_leave_one_live_successor(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    let (family_id, token) = family(&h, &client).await;
    let db = Arc::new(h.db.clone());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (db, token, client) = (Arc::clone(&db), token.clone(), client.clone());
            tokio::spawn(async move { rotate(&db, &token, &client, &policy(60)).await.unwrap() })
        })
        .collect();
    let mut successors = Vec::new();
    for task in tasks {
        successors.push(
            task.await
                .unwrap()
                .expect("retries inside the grace period succeed"),
        );
    }
    assert_eq!(successors.iter().filter(|r| !r.retried).count(), 1);
    assert_eq!(
        refresh::live_tokens(&h.db, &family_id).await.unwrap(),
        1,
        "one live successor"
    );
    // Every retry got that same successor: one session, not branches.
    for s in &successors {
        assert_eq!(*s.token, *successors[0].token);
    }
    assert!(refresh::lookup(&h.db, &successors[0].token)
        .await
        .unwrap()
        .is_some());
    h.finish().await;
}

/// A token used where the clock ran an hour ahead (another instance, or
/// this one before its clock stepped back) and replayed now is a replay,
/// not a retry within the grace window: the window is counted from the
/// use, and a use "in the future" by more than clocks may differ is not
/// within it. Before, any replay while this clock was behind got the
/// successor.
async fn a_replay_from_a_clock_behind_the_use_is_reuse(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    let (family_id, first) = family(&h, &client).await;
    rotate(&h.db, &first, &client, &policy(10))
        .await
        .unwrap()
        .unwrap();
    let ahead = tessera_server::store::now() + 3600;
    h.execute(
        &format!("UPDATE refresh_tokens SET used_at = {ahead} WHERE used_at IS NOT NULL"),
        &[],
    )
    .await;
    let replay = rotate(&h.db, &first, &client, &policy(10)).await.unwrap();
    assert!(
        matches!(replay, Err(Refused::Reused { family_id: ref f, .. }) if *f == family_id),
        "{:?}",
        replay.as_ref().map(|r| r.retried)
    );
    // A use stamped by a clock a second ahead is still within the window.
    let (other, first) = family(&h, &client).await;
    rotate(&h.db, &first, &client, &policy(10))
        .await
        .unwrap()
        .unwrap();
    let ahead = tessera_server::store::now() + 1;
    h.execute(
        &format!(
            "UPDATE refresh_tokens SET used_at = {ahead} \
             WHERE used_at IS NOT NULL AND family_id = $1"
        ),
        &[&other],
    )
    .await;
    let retry = rotate(&h.db, &first, &client, &policy(10))
        .await
        .unwrap()
        .expect("a retry within the grace window");
    assert!(retry.retried);
    h.finish().await;
}

/// An instance with no grace window rotates without keeping the
/// successor; its holder uses it. The old token replayed at an instance
/// with a grace window (a rolling deploy that turns it on) is a replay,
/// not a retry: the family is revoked. Before, the replay got a fresh
/// token and the rightful chain was ended.
async fn a_replay_across_instances_with_different_grace_is_reuse(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    let (family_id, first) = family(&h, &client).await;
    let second = rotate(&h.db, &first, &client, &policy(0))
        .await
        .unwrap()
        .unwrap();
    rotate(&h.db, &second.token, &client, &policy(0))
        .await
        .unwrap()
        .unwrap();
    let replay = rotate(&h.db, &first, &client, &policy(60)).await.unwrap();
    assert!(
        matches!(replay, Err(Refused::Reused { family_id: ref f, .. }) if *f == family_id),
        "{:?}",
        replay.as_ref().map(|r| r.retried)
    );
    assert_eq!(refresh::live_tokens(&h.db, &family_id).await.unwrap(), 0);
    // Without the chain going on, the same retry is still a retry.
    let (other, first) = family(&h, &client).await;
    rotate(&h.db, &first, &client, &policy(0))
        .await
        .unwrap()
        .unwrap();
    let retry = rotate(&h.db, &first, &client, &policy(60))
        .await
        .unwrap()
        .expect("a retry within the grace window");
    assert!(retry.retried);
    assert_eq!(refresh::live_tokens(&h.db, &other).await.unwrap(), 1);
    // A retry again gets that same successor: the one it replaced, ended
    // unused, is not the chain going on.
    let again = rotate(&h.db, &first, &client, &policy(60))
        .await
        .unwrap()
        .expect("a second retry");
    assert_eq!(*again.token, *retry.token);
    assert_eq!(refresh::live_tokens(&h.db, &other).await.unwrap(), 1);
    // Retries at once, of a token rotated without a kept successor: one
    // successor for all, the family standing.
    let (third, first) = family(&h, &client).await;
    rotate(&h.db, &first, &client, &policy(0))
        .await
        .unwrap()
        .unwrap();
    let db = Arc::new(h.db.clone());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (db, first, client) = (Arc::clone(&db), first.clone(), client.clone());
            tokio::spawn(async move { rotate(&db, &first, &client, &policy(60)).await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        let rotated = task.await.unwrap().expect("retries at once are retries");
        tokens.push(rotated.token.to_string());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "one successor");
    assert_eq!(refresh::live_tokens(&h.db, &third).await.unwrap(), 1);
    h.finish().await;
}

async fn successors_never_outlive_their_family(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    let short = RefreshPolicy {
        ttl: 3600,
        max_lifetime: 100,
        grace: 0,
    };
    let (family_id, first) = refresh::issue(&h.db, new_family(&client), &short)
        .await
        .unwrap();
    let family_end = refresh::lookup(&h.db, &first)
        .await
        .unwrap()
        .unwrap()
        .family
        .expires_at;
    // Each successor is live, the one before it spent, and the family's end
    // bounds each one's life (a ttl of an hour against 100 s left).
    let mut token = first;
    for _ in 0..3 {
        let next = rotate(&h.db, &token, &client, &short)
            .await
            .unwrap()
            .unwrap();
        let live = refresh::lookup(&h.db, &next.token).await.unwrap().unwrap();
        assert_eq!(live.token_expires_at, family_end);
        assert!(refresh::lookup(&h.db, &token).await.unwrap().is_none());
        assert_eq!(refresh::live_tokens(&h.db, &family_id).await.unwrap(), 1);
        token = next.token;
    }
    // And a short ttl is kept as it is.
    let (_, fresh) = refresh::issue(&h.db, new_family(&client), &policy(0))
        .await
        .unwrap();
    let brief = RefreshPolicy {
        ttl: 30,
        ..policy(0)
    };
    let next = rotate(&h.db, &fresh, &client, &brief)
        .await
        .unwrap()
        .unwrap();
    let live = refresh::lookup(&h.db, &next.token).await.unwrap().unwrap();
    assert!(live.token_expires_at - live.issued_at <= 30);
    h.finish().await;
}

fn new_family(client_id: &str) -> NewFamily<'_> {
    NewFamily {
        client_id,
        subject: "s",
        username: None,
        password_hash: None,
        user_scopes: None,
        scope: "read",
        auth_time: None,
        sid: None,
    }
}

/// A password login's family for alice (id `user`), checked against
/// `hash`.
fn password_family<'a>(client_id: &'a str, user: &'a str, hash: &'a str) -> NewFamily<'a> {
    NewFamily {
        username: Some("alice"),
        subject: user,
        password_hash: Some(hash),
        ..new_family(client_id)
    }
}

const SESSION: SessionPolicy = SessionPolicy {
    idle: 3600,
    absolute: 3600,
};

/// A new login by the user of a live session renews it: same `sid`, a new
/// cookie value (the old one finds nothing), authenticated now, its
/// refresh families untouched.
async fn a_new_login_renews_its_users_session(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "read").await;
    let client = h.public_client("read").await;
    let (old_cookie, session) = h.start_session(&user, SESSION).await;
    let token = refresh::issue_as(
        &h.db,
        "family-1",
        NewFamily {
            sid: Some(&session.sid),
            ..new_family(&client)
        },
        &policy(0),
    )
    .await
    .unwrap()
    .unwrap();
    let checked = users::find(&h.db, "alice").await.unwrap().unwrap();
    let login = sessions::LoggedIn {
        user_id: &user,
        password_hash: &checked.password_hash,
    };
    let (new_cookie, renewed) = sessions::renew(&h.db, &session.sid, login, SESSION)
        .await
        .unwrap()
        .expect("a live session of this user");
    assert_eq!(renewed.sid, session.sid);
    assert!(renewed.auth_time >= session.auth_time);
    assert_ne!(*new_cookie, *old_cookie);
    assert!(sessions::find(&h.db, &old_cookie, SESSION)
        .await
        .unwrap()
        .is_none());
    let found = sessions::find(&h.db, &new_cookie, SESSION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.sid, session.sid);
    assert!(refresh::lookup(&h.db, &token).await.unwrap().is_some());
    // Another user's login cannot take the session over.
    let bob = h.user("bob", "battery staple", "read").await;
    let bobs = users::find(&h.db, "bob").await.unwrap().unwrap();
    let as_bob = sessions::LoggedIn {
        user_id: &bob,
        password_hash: &bobs.password_hash,
    };
    assert!(sessions::renew(&h.db, &session.sid, as_bob, SESSION)
        .await
        .unwrap()
        .is_none());
    // An ended session is not renewed.
    sessions::end(
        &h.db,
        &session.sid,
        "logout",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(sessions::renew(&h.db, &session.sid, login, SESSION)
        .await
        .unwrap()
        .is_none());
    h.finish().await;
}

/// A family that belongs to a sign-in session starts only while the
/// session lives, and ending the session ends it.
async fn refresh_families_start_only_in_live_sessions(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "read").await;
    let client = h.public_client("read").await;
    let sid = live_session(&h, &user).await;
    let in_session = NewFamily {
        sid: Some(&sid),
        ..new_family(&client)
    };
    let token = refresh::issue_as(&h.db, "family-1", in_session, &policy(0))
        .await
        .unwrap()
        .expect("a live session starts a family");
    assert!(refresh::lookup(&h.db, &token).await.unwrap().is_some());
    sessions::end(
        &h.db,
        &sid,
        "logout",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        refresh::lookup(&h.db, &token).await.unwrap().is_none(),
        "ending the session ended its family"
    );
    let after = NewFamily {
        sid: Some(&sid),
        ..new_family(&client)
    };
    let refused = refresh::issue_as(&h.db, "family-2", after, &policy(0))
        .await
        .unwrap();
    assert!(refused.is_none(), "no family starts in an ended session");
    // Nor in one past its absolute end, not ended yet: the maintenance
    // deletes such a session once no family of it lives.
    let past_its_end = live_session(&h, &user).await;
    h.execute(
        "UPDATE sessions SET expires_at = 1 WHERE sid = $1",
        &[&past_its_end],
    )
    .await;
    let late = NewFamily {
        sid: Some(&past_its_end),
        ..new_family(&client)
    };
    assert!(
        refresh::issue_as(&h.db, "family-2b", late, &policy(0))
            .await
            .unwrap()
            .is_none(),
        "no family starts in a session past its end"
    );
    let none = NewFamily {
        sid: Some("no-such-session"),
        ..new_family(&client)
    };
    assert!(refresh::issue_as(&h.db, "family-3", none, &policy(0))
        .await
        .unwrap()
        .is_none());
    // A password login's family starts only while the user has the
    // password it checked, under the id it read (a user deleted and made
    // again under the name is someone else).
    let checked = users::find(&h.db, "alice").await.unwrap().unwrap();
    let of_alice = |id| password_family(id, &user, &checked.password_hash);
    assert!(
        refresh::issue_as(&h.db, "family-4", of_alice(&client), &policy(0))
            .await
            .unwrap()
            .is_some()
    );
    let another_id = NewFamily {
        subject: "someone-else",
        ..of_alice(&client)
    };
    assert!(
        refresh::issue_as(&h.db, "family-4b", another_id, &policy(0))
            .await
            .unwrap()
            .is_none()
    );
    let session_checked = sessions::LoggedIn {
        user_id: &user,
        password_hash: &checked.password_hash,
    };
    let (_, kept) = sessions::start(&h.db, session_checked, SESSION, "test-browser")
        .await
        .unwrap()
        .expect("the password checked is the user's");
    let new_hash = h.hash("battery staple").await;
    users::set_password(
        &h.db,
        "alice",
        &new_hash,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert!(
        refresh::issue_as(&h.db, "family-4c", of_alice(&client), &policy(0))
            .await
            .unwrap()
            .is_none(),
        "checked against the password the user had before"
    );
    assert!(
        sessions::start(&h.db, session_checked, SESSION, "test-browser")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sessions::renew(&h.db, &kept.sid, session_checked, SESSION)
            .await
            .unwrap()
            .is_none(),
        "the change ended the session, and the old password renews nothing"
    );
    let checked = users::find(&h.db, "alice").await.unwrap().unwrap();
    let of_alice = |id| password_family(id, &user, &checked.password_hash);
    assert!(
        refresh::issue_as(&h.db, "family-4d", of_alice(&client), &policy(0))
            .await
            .unwrap()
            .is_some()
    );
    // Nor while a scope the login decided by was taken away meanwhile:
    // the revocation that went with it could not see this family.
    let by_scopes = NewFamily {
        user_scopes: Some(&checked.scopes),
        ..of_alice(&client)
    };
    let none = ScopeChange::Replace(Scopes::parse("").unwrap());
    users::set_scopes(
        &h.db,
        "alice",
        &none,
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert!(
        refresh::issue_as(&h.db, "family-4e", by_scopes, &policy(0))
            .await
            .unwrap()
            .is_none(),
        "decided by scopes the user no longer has"
    );
    let now_scoped = users::find(&h.db, "alice").await.unwrap().unwrap();
    assert!(refresh::issue_as(
        &h.db,
        "family-4f",
        NewFamily {
            user_scopes: Some(&now_scoped.scopes),
            ..of_alice(&client)
        },
        &policy(0)
    )
    .await
    .unwrap()
    .is_some());
    // A user disabled (say, while their password was being checked)
    // starts no family; an unknown user neither.
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
        refresh::issue_as(&h.db, "family-5", of_alice(&client), &policy(0))
            .await
            .unwrap()
            .is_none()
    );
    let of_nobody = NewFamily {
        username: Some("nobody"),
        ..new_family(&client)
    };
    assert!(refresh::issue_as(&h.db, "family-6", of_nobody, &policy(0))
        .await
        .unwrap()
        .is_none());
    h.finish().await;
}

/// Consents given at once (two tabs) all count: none overwrites another.
async fn concurrent_consents_are_all_remembered(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "read").await;
    let client = h.public_client("read").await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (db, user, client) = (h.db.clone(), user.clone(), client.clone());
            tokio::spawn(async move {
                let scope = Scopes::parse(&format!("scope-{i}")).unwrap();
                consents::remember(&db, &user, &client, &scope).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let kept = consents::find(&h.db, &user, &client)
        .await
        .unwrap()
        .unwrap();
    for i in 0..12 {
        assert!(
            kept.contains(&format!("scope-{i}")),
            "scope-{i} lost: {kept}"
        );
    }
    h.finish().await;
}

/// PostgreSQL: a user disabled while a family is being started in one of
/// their sessions (its transaction holds the session `FOR SHARE`, as
/// `refresh::issue_as` does) waits for that family and revokes it. The
/// disable used to revoke families before ending sessions, so its
/// snapshot missed the family, which then outlived the user's cut-off.
async fn a_user_disabled_while_a_family_starts_in_a_session_revokes_it(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let Db::Postgres(pool) = &h.db else {
        // SQLite's one writer runs the two transactions one after the
        // other: there is no interleaving to test.
        h.finish().await;
        return;
    };
    let user = h.user("alice", "correct horse", "read").await;
    let client = h.public_client("read").await;
    let sid = live_session(&h, &user).await;
    let token = "a-refresh-token-issued-in-the-race";
    // The family's transaction, paused between its session check and its
    // inserts.
    let mut starting = pool.begin().await.unwrap();
    let live: Vec<(String,)> =
        sqlx::query_as("SELECT sid FROM sessions WHERE sid = $1 AND ended_at IS NULL FOR SHARE")
            .bind(&sid)
            .fetch_all(&mut *starting)
            .await
            .unwrap();
    assert_eq!(live.len(), 1);
    let db = h.db.clone();
    let disable = tokio::spawn(async move {
        users::set_disabled(
            &db,
            "alice",
            true,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !disable.is_finished(),
        "ending the session waits for the family"
    );
    insert_raced_family(&mut starting, &client, &user, &sid, token).await;
    starting.commit().await.unwrap();
    disable.await.unwrap().unwrap();
    assert!(
        refresh::lookup(&h.db, token).await.unwrap().is_none(),
        "the family started in the race was revoked"
    );
    h.finish().await;
}

/// What `refresh::issue_as` inserts once its checks passed: alice's
/// family `raced` in the session `sid`, with its first token `token`, in
/// the transaction `starting`.
async fn insert_raced_family(
    starting: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    client: &str,
    user: &str,
    sid: &str,
    token: &str,
) {
    let at = tessera_server::store::now();
    sqlx::query(
        "INSERT INTO refresh_families (id, client_id, subject, username, scope, auth_time, created_at, expires_at, sid) \
         VALUES ('raced', $1, $2, 'alice', 'read', $3, $3, $4, $5)",
    )
    .bind(client)
    .bind(user)
    .bind(at)
    .bind(at + 3600)
    .bind(sid)
    .execute(&mut **starting)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at) VALUES ($1, 'raced', $2, $3)",
    )
    .bind(tessera_server::secret::token_digest(token))
    .bind(at)
    .bind(at + 3600)
    .execute(&mut **starting)
    .await
    .unwrap();
}

/// A user deleted while a family starts in one of the user's sessions
/// (its transaction holds the user, then the session `FOR SHARE`, as
/// `refresh::issue_as` does) waits for it and deletes the family with the
/// rest. The delete used to lock the sessions before the user: the family
/// then waited for the session while holding the user the delete waited
/// for, and PostgreSQL broke the deadlock by failing one of the two.
async fn a_user_deleted_while_a_family_starts_waits_for_it(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let Db::Postgres(pool) = &h.db else {
        // SQLite's one writer runs the two transactions one after the
        // other: there is no interleaving to test.
        h.finish().await;
        return;
    };
    let user = h.user("alice", "correct horse", "read").await;
    let client = h.public_client("read").await;
    let sid = live_session(&h, &user).await;
    let token = "a-refresh-token-issued-in-the-race";
    // The family's transaction, paused after its user check.
    let mut starting = pool.begin().await.unwrap();
    let enabled: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM users WHERE username = 'alice' AND NOT disabled FOR SHARE")
            .fetch_all(&mut *starting)
            .await
            .unwrap();
    assert_eq!(enabled.len(), 1);
    let db = h.db.clone();
    let delete = tokio::spawn(async move {
        users::delete(
            &db,
            "alice",
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!delete.is_finished(), "the delete waits for the family");
    // Its session check, then its inserts: none of them waits on the
    // delete, so neither transaction fails.
    let live: Vec<(String,)> =
        sqlx::query_as("SELECT sid FROM sessions WHERE sid = $1 AND ended_at IS NULL FOR SHARE")
            .bind(&sid)
            .fetch_all(&mut *starting)
            .await
            .expect("the session check is not a deadlock's victim");
    assert_eq!(live.len(), 1);
    insert_raced_family(&mut starting, &client, &user, &sid, token).await;
    starting.commit().await.unwrap();
    delete
        .await
        .unwrap()
        .expect("the delete is not a deadlock's victim");
    assert!(users::find(&h.db, "alice").await.unwrap().is_none());
    assert!(
        refresh::lookup(&h.db, token).await.unwrap().is_none(),
        "the family started in the race went with its user"
    );
    h.finish().await;
}

async fn refused_refreshes_change_nothing(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    let other = h.public_client("read").await;
    let (family_id, token) = family(&h, &client).await;
    let wrong = rotate(&h.db, &token, &other, &policy(0)).await.unwrap();
    assert_eq!(wrong.unwrap_err(), Refused::WrongClient);
    let unknown = rotate(&h.db, "not-a-token", &client, &policy(0))
        .await
        .unwrap();
    assert_eq!(unknown.unwrap_err(), Refused::Unknown);
    // The token presented by the wrong client is still good for its own.
    assert_eq!(refresh::live_tokens(&h.db, &family_id).await.unwrap(), 1);
    assert!(rotate(&h.db, &token, &client, &policy(0))
        .await
        .unwrap()
        .is_ok());

    // An expired token is refused and not consumed.
    let (expired_family, expired) = refresh::issue(
        &h.db,
        NewFamily {
            client_id: &client,
            subject: "s",
            username: None,
            password_hash: None,
            user_scopes: None,
            scope: "",
            auth_time: None,
            sid: None,
        },
        &RefreshPolicy {
            ttl: 0,
            max_lifetime: 100,
            grace: 0,
        },
    )
    .await
    .unwrap();
    let refused = rotate(&h.db, &expired, &client, &policy(0)).await.unwrap();
    assert_eq!(refused.unwrap_err(), Refused::Expired);
    assert!(refresh::family(&h.db, &expired_family)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());

    // Revocation through RFC 7009 only works for the owning client.
    let (fam, tok) = family(&h, &client).await;
    assert_eq!(
        refresh::revoke(&h.db, &tok, &other, "test", KEEP, |_| true)
            .await
            .unwrap(),
        None
    );
    // Past the client's allowance of events, the family is revoked all
    // the same, without the event that would refuse its access tokens.
    let events = || {
        h.count(
            "SELECT COUNT(*) FROM revocation_events WHERE kind = 'family'",
            &[],
        )
    };
    let spent = |subject: &str| {
        assert_eq!(subject, "user-1", "counted for the family's subject");
        false
    };
    let revoked = refresh::revoke(&h.db, &tok, &client, "test", KEEP, spent);
    assert_eq!(
        revoked.await.unwrap(),
        Some((
            refresh::RevokedFamily {
                id: fam.clone(),
                subject: "user-1".into()
            },
            false
        ))
    );
    assert_eq!(refresh::live_tokens(&h.db, &fam).await.unwrap(), 0);
    assert_eq!(events().await, 0);
    // Within it, the event is appended with the revocation.
    let (fam, tok) = family(&h, &client).await;
    let revoked = refresh::revoke(&h.db, &tok, &client, "test", KEEP, |_| true);
    assert_eq!(
        revoked.await.unwrap().map(|(f, cut)| (f.id, cut)),
        Some((fam, true))
    );
    assert_eq!(events().await, 1);
    h.finish().await;
}

/// An instance whose clock jumped an hour forward after it started keeps
/// the events its log still holds: forgotten by that clock, they would be
/// gone for good (syncs read on past them), and the tokens they revoked
/// would pass again once the clock is set right.
async fn a_clock_jumped_forward_forgets_no_revocation_still_needed(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    // Past by the clock that jumped, not by the hour the instance has run.
    let here = revocation::Revocations::default();
    here.revoke_token(&h.db, "jti-needed", now - 1800)
        .await
        .unwrap();
    let jumped = revocation::Revocations::forgetting_by(tessera_jose::SteadyClock::starting(
        now - 3600,
        std::time::Instant::now(),
    ));
    jumped.sync(&h.db).await.unwrap();
    assert!(jumped.refuses(jti("jti-needed")), "still needed: kept");
    // By the wall clock, it is over (the same log, read by a clock that
    // did not jump).
    let right = revocation::Revocations::default();
    right.sync(&h.db).await.unwrap();
    assert!(!right.refuses(jti("jti-needed")));
    h.finish().await;
}

async fn revocations_and_assertions_are_remembered_until_they_expire(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    // Two instances' logs: one revokes, the other learns at its next sync.
    let here = revocation::Revocations::default();
    let there = revocation::Revocations::default();
    here.revoke_token(&h.db, "jti-1", now + 60).await.unwrap();
    here.revoke_token(&h.db, "jti-1", now + 60).await.unwrap();
    // Expired longer ago than the leeway: nothing left to refuse.
    here.revoke_token(&h.db, "jti-old", now - 400)
        .await
        .unwrap();
    assert!(here.refuses(jti("jti-1")));
    assert!(!here.refuses(jti("jti-2")));
    there.sync(&h.db).await.unwrap();
    assert!(
        there.refuses(jti("jti-1")) && !there.refuses(jti("jti-old")),
        "expired revocations are not loaded"
    );
    assert_eq!(
        there.len(),
        1,
        "a second revocation of a token adds nothing"
    );
    here.revoke_token(&h.db, "jti-3", now + 60).await.unwrap();
    assert!(here.refuses(jti("jti-3")));
    assert!(!there.refuses(jti("jti-3")));
    there.sync(&h.db).await.unwrap();
    assert!(there.refuses(jti("jti-3")));

    // The feed's view: in order, resumable, and a cursor from the future
    // (a restored backup) starts the subscriber over.
    let all = there.since(0, 100);
    assert!(!all.reset);
    assert_eq!(all.events.len(), 2);
    assert!(all.events[0].id < all.events[1].id);
    assert!(all.events[1].json.contains("jti-3"));
    let after_first = there.since(all.events[0].id, 100);
    assert_eq!(after_first.events.len(), 1);
    assert!(there.since(there.latest(), 100).events.is_empty());
    let ahead = there.since(there.latest() + 100, 100);
    assert!(ahead.reset);
    assert_eq!(ahead.events.len(), 2);

    assert!(revocation::use_assertion(&h.db, "client", "a", now + 60)
        .await
        .unwrap());
    assert!(
        !revocation::use_assertion(&h.db, "client", "a", now + 60)
            .await
            .unwrap(),
        "a replay"
    );
    assert!(revocation::use_assertion(&h.db, "other", "a", now + 60)
        .await
        .unwrap());

    let pruned = retention::prune(&h.db, now, retention::Retention { audit: None })
        .await
        .unwrap();
    assert_eq!(pruned.ids, 1, "the expired revocation event");
    let fresh = revocation::Revocations::default();
    fresh.sync(&h.db).await.unwrap();
    assert_eq!(fresh.len(), 2);
    h.finish().await;
}

/// What the revocation set is asked about a token whose `jti` is `j`.
fn jti(j: &str) -> tessera_guard::revocation::Revocable<'_> {
    tessera_guard::revocation::Revocable {
        jti: Some(j),
        ..Default::default()
    }
}

/// What restoring a backup made before any revocation does to the log:
/// its events gone, its id sequence back at the start.
async fn restore_an_empty_log(db: &Db) {
    match db {
        Db::Postgres(pool) => {
            for sql in [
                "DELETE FROM revocation_events",
                "ALTER SEQUENCE revocation_events_id_seq RESTART",
            ] {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
        }
        Db::Sqlite { writer, .. } => {
            for sql in [
                "DELETE FROM revocation_events",
                "UPDATE sqlite_sequence SET seq = 0 WHERE name = 'revocation_events'",
            ] {
                sqlx::query(sql).execute(writer).await.unwrap();
            }
        }
    }
}

/// A log restored from a backup (its ids behind what an instance read) is
/// read again from the start, and then the instance holds exactly the
/// restored log: what it had read since is forgotten, what the restored
/// log has is refused.
async fn a_restored_revocation_log_is_read_again(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let here = revocation::Revocations::default();
    for j in ["a", "b", "c"] {
        here.revoke_token(&h.db, j, now + 60).await.unwrap();
    }
    let held = here.latest();
    // What a subscriber at the newest event names it by.
    let digest = |log: &revocation::Revocations, id: i64| {
        let event = log.since(id - 1, 1).events.remove(0);
        assert_eq!(event.id, id);
        tessera_guard::revocation::event_digest(&event.json)
    };
    let c = digest(&here, held);
    assert!(here.holds(held, &c));
    // The restore: the events and the id sequence as they were before.
    restore_an_empty_log(&h.db).await;
    let other = revocation::Revocations::default();
    other.revoke_token(&h.db, "d", now + 60).await.unwrap();
    assert!(other.latest() < held);
    here.sync(&h.db).await.unwrap();
    assert_eq!(here.latest(), other.latest());
    assert!(here.refuses(jti("d")));
    assert!(
        !here.refuses(jti("a")),
        "forgotten with the log it came from"
    );
    assert_eq!(here.since(0, 10).events.len(), 1);
    // The restored log grows back past the old cursor: its id is there
    // again, with another event, and the digest tells them apart.
    let mut regrown = 0;
    while other.latest() < held {
        regrown += 1;
        let jti = format!("e{regrown}");
        other.revoke_token(&h.db, &jti, now + 60).await.unwrap();
    }
    here.sync(&h.db).await.unwrap();
    assert!(here.latest() >= held);
    assert!(!here.holds(held, &c), "another event under the old cursor");
    assert!(here.holds(held, &digest(&here, held)));
    h.finish().await;
}

/// A restored log whose reading again fails (an event of a kind this
/// version does not know) is read again whole once it can be, even after
/// appends have carried its ids past the copy's old cursor. Before, the
/// restore was noticed only while the ids were behind: past them, the
/// reading went on from the old cursor, the restored events before it
/// were never read, and the copy counted as current.
async fn a_restored_log_is_read_again_whole_once_it_can_be(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let here = revocation::Revocations::default();
    for j in ["a", "b", "c"] {
        here.revoke_token(&h.db, j, now + 60).await.unwrap();
    }
    let held = here.latest();
    restore_an_empty_log(&h.db).await;
    let other = revocation::Revocations::default();
    other.revoke_token(&h.db, "d", now + 60).await.unwrap();
    h.execute(
        &format!(
            "INSERT INTO revocation_events (kind, value, issued_before, keep_until, created_at) \
             VALUES ('from-the-future', 'x', NULL, {}, {now})",
            now + 60
        ),
        &[],
    )
    .await;
    assert!(here.sync(&h.db).await.is_err());
    // Appends carry the ids past the old cursor (the appending instance
    // stops at the event too: its copy is not the measure).
    for regrown in 0..=held {
        let jti = format!("e{regrown}");
        other.revoke_token(&h.db, &jti, now + 60).await.unwrap();
    }
    let still = here.sync(&h.db).await;
    assert!(still.is_err(), "read on from the old cursor: {still:?}");
    assert!(here.refuses(jti("a")), "the copy in use is kept meanwhile");
    // Readable again: the restored log, whole.
    h.execute(
        "UPDATE revocation_events SET kind = 'token' WHERE kind = 'from-the-future'",
        &[],
    )
    .await;
    here.sync(&h.db).await.unwrap();
    assert!(here.refuses(jti("d")) && here.refuses(jti("x")) && here.refuses(jti("e0")));
    assert!(here.refuses(jti(&format!("e{held}"))));
    assert!(
        !here.refuses(jti("a")),
        "forgotten with the log it came from"
    );
    other.sync(&h.db).await.unwrap();
    assert_eq!(here.latest(), other.latest());
    h.finish().await;
}

/// Appends from many transactions at once reach a reader that syncs all
/// the while, every one of them: ids commit in order, so a cursor never
/// passes an event that commits later with a smaller id.
async fn concurrent_revocations_are_never_skipped_by_a_follower(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let follower = std::sync::Arc::new(revocation::Revocations::default());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (db, follower, done) = (h.db.clone(), follower.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                follower.sync(&db).await.unwrap();
                tokio::task::yield_now().await;
            }
            follower.sync(&db).await.unwrap();
        })
    };
    let writers: Vec<_> = (0..60)
        .map(|i| {
            let db = h.db.clone();
            tokio::spawn(async move {
                // Each writer is its own instance.
                let log = revocation::Revocations::default();
                log.revoke_token(&db, &format!("jti-{i}"), now + 600)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.await.unwrap();
    let seen = follower.since(0, 1000).events;
    assert_eq!(seen.len(), 60, "the follower missed appends");
    h.finish().await;
}

async fn keys_rotate_announce_and_retire(backend: Backend) {
    use tessera_server::keys::KeyState;
    // One algorithm for both kinds of token: one key per generation.
    let Some(h) = Harness::with(backend, |c| {
        c.keys.id_token_algorithms = vec![c.keys.algorithm];
    })
    .await
    else {
        return;
    };
    let keys = &h.app.keys;
    let now = tessera_server::store::now();
    let first = keys.list(now);
    assert_eq!(first.len(), 1, "the first start makes one key");
    assert_eq!(first[0].1, KeyState::Active);
    let first_kid = first[0].0.kid.clone();

    // A rotation publishes the next key at once but signs with it only
    // after the announce period (an hour by default).
    let next_kid = keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap()
        .remove(0);
    let listed = keys.list(now);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].1, KeyState::Announced);
    let jwks = tessera_jose::JwkSet::from_json(&keys.jwks_json()).unwrap();
    assert!(jwks.find(&next_kid).is_some(), "published before it signs");
    assert_eq!(keys.signer(now).unwrap().kid(), Some(first_kid.as_str()));
    let later = listed[1].0.activate_at;
    assert_eq!(keys.signer(later).unwrap().kid(), Some(next_kid.as_str()));
    assert_eq!(keys.list(later)[0].1, KeyState::Retired);

    // A second instance on the same database sees the same keys.
    let second = tessera_server::open({
        let mut c = h.test_db.config();
        c.keys.id_token_algorithms = vec![c.keys.algorithm];
        c
    })
    .await
    .unwrap();
    let theirs: Vec<_> = second
        .keys
        .list(now)
        .into_iter()
        .map(|(k, _)| k.kid)
        .collect();
    assert_eq!(theirs, vec![first_kid.clone(), next_kid.clone()]);
    assert_eq!(second.keys.jwks_json(), keys.jwks_json());

    // Time passes (moved in the rows): the new key has signed for longer
    // than any token lives, so the old one is removed everywhere.
    let shift = 3 * 3600;
    tessera_server_test_shift(&h, shift).await;
    // An admin command opening the keys (perhaps under a configuration
    // that is not the server's) removes nothing: only the server's
    // maintenance does.
    let admin = tessera_server::open({
        let mut c = h.test_db.config();
        c.keys.id_token_algorithms = vec![c.keys.algorithm];
        c
    })
    .await
    .unwrap();
    let kept: Vec<_> = tessera_server::keys::stored(&admin.db, &admin.config.keys, now)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.kid)
        .collect();
    assert!(kept.contains(&first_kid), "{kept:?}");
    admin.db.close().await;
    second.keys.maintain().await.unwrap();
    let remaining: Vec<_> = second
        .keys
        .list(now)
        .into_iter()
        .map(|(k, s)| (k.kid, s))
        .collect();
    assert_eq!(remaining, vec![(next_kid.clone(), KeyState::Active)]);
    keys.maintain().await.unwrap();
    assert!(tessera_jose::JwkSet::from_json(&keys.jwks_json())
        .unwrap()
        .find(&first_kid)
        .is_none());

    // Every key creation is in the audit trail.
    let created = audit::recent(&h.db, Some("key_created"), 10).await.unwrap();
    assert_eq!(created.len(), 2);
    second.db.close().await;
    h.finish().await;
}

/// Two instances whose maintenance finds a rotation due at the same
/// moment store one new key of each algorithm between them, not one each
/// (each generates its keys after reading the rows, RSA slowly, so both
/// decide from the same rows).
async fn instances_rotating_at_once_store_one_key(backend: Backend) {
    use tessera_server::keys::KeyState;
    let Some((h, second)) = two_instances_rotating_every_two_hours(backend).await else {
        return;
    };
    let algorithms = h.app.keys.list(0).len();
    assert_eq!(algorithms, 2, "access and ID token keys");
    for round in 1..=3 {
        // Every key ages past the rotation period.
        tessera_server_test_shift(&h, 3 * 3600).await;
        let (a, b) = tokio::join!(h.app.keys.maintain(), second.keys.maintain());
        a.unwrap();
        b.unwrap();
        let now = tessera_server::store::now();
        let announced: Vec<_> = tessera_server::keys::stored(&h.db, &h.test_db.config().keys, now)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, state)| *state == KeyState::Announced)
            .map(|(k, _)| k.alg)
            .collect();
        let mut algs = announced.clone();
        algs.dedup();
        assert_eq!(
            announced.len(),
            algorithms,
            "round {round}: one new key per algorithm, not one per instance: {announced:?}"
        );
        assert_eq!(algs.len(), algorithms, "round {round}: {announced:?}");
        // Both instances publish the same keys.
        h.app.keys.maintain().await.unwrap();
        second.keys.maintain().await.unwrap();
        assert_eq!(h.app.keys.jwks_json(), second.keys.jwks_json());
    }
    second.db.close().await;
    h.finish().await;
}

/// An instance whose clock runs ahead of the database's does no key
/// maintenance (`serve.rs`), but reads the keys the others make: it
/// publishes them before they sign and signs with them once they do.
/// Before, it read none, and went on signing with a replaced key. The
/// reading writes nothing, even with a rotation due.
async fn an_instance_that_must_not_maintain_still_reads_the_keys(backend: Backend) {
    use tessera_server::keys::KeyState;
    let Some((h, ahead)) = two_instances_rotating_every_two_hours(backend).await else {
        return;
    };
    tessera_server_test_shift(&h, 3 * 3600).await;
    let now = tessera_server::store::now();
    let stored = || async {
        tessera_server::keys::stored(&h.db, &h.app.config.keys, now)
            .await
            .unwrap()
    };
    let before = stored().await.len();
    ahead.keys.refresh_at(now).await.unwrap();
    assert_eq!(
        stored().await.len(),
        before,
        "a rotation was due; reading made one"
    );
    // Another instance rotates.
    h.app.keys.maintain_at(now).await.unwrap();
    let announced: Vec<_> = stored()
        .await
        .into_iter()
        .filter(|(_, state)| *state == KeyState::Announced)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(announced.len(), 2, "{announced:?}");
    let published = |keys: &tessera_server::keys::Keys| {
        let set = tessera_jose::JwkSet::from_json(&keys.jwks_json()).unwrap();
        announced.iter().all(|k| set.find(&k.kid).is_some())
    };
    assert!(!published(&ahead.keys));
    ahead.keys.refresh_at(now).await.unwrap();
    assert!(
        published(&ahead.keys),
        "the others' new keys are published here too"
    );
    let access = &announced[0];
    assert_eq!(
        ahead.keys.signer(access.activate_at).unwrap().kid(),
        Some(access.kid.as_str()),
        "and sign here once they sign there"
    );
    ahead.db.close().await;
    h.finish().await;
}

/// A running instance removes a replaced key only after the longest
/// access-token lifetime any instance has recorded, read at each
/// maintenance, not only the one known when it started: an instance
/// started later with a longer lifetime mints tokens with that key too.
async fn a_replaced_key_outlives_the_longest_token_any_instance_recorded(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let short = tessera_server::store::secs(h.app.config.max_access_ttl);
    let announce = tessera_server::store::secs(h.app.config.keys.announce);
    let old_kid = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    // An instance that only reads the keys (its clock ahead).
    let ahead = tessera_server::open(h.test_db.config()).await.unwrap();
    h.app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    // Another instance starts with four times the lifetime.
    revocation::raise_longest_access_ttl(&h.db, 4 * short)
        .await
        .unwrap();
    let published = |keys: &tessera_server::keys::Keys| {
        tessera_jose::JwkSet::from_json(&keys.jwks_json())
            .unwrap()
            .find(&old_kid)
            .is_some()
    };
    // The new key has signed for twice this instance's lifetime.
    tessera_server_test_shift(&h, announce + 2 * short).await;
    h.app.keys.maintain().await.unwrap();
    assert!(
        published(&h.app.keys),
        "removed while the other's tokens may live"
    );
    ahead.keys.refresh_at(now).await.unwrap();
    assert!(
        published(&ahead.keys),
        "dropped by an instance that only reads"
    );
    // And for longer than the other's.
    tessera_server_test_shift(&h, 3 * short).await;
    h.app.keys.maintain().await.unwrap();
    assert!(!published(&h.app.keys), "kept past every token it signed");
    ahead.db.close().await;
    h.finish().await;
}

/// A server, and a second instance opened on its database, both rotating
/// their keys every two hours.
async fn two_instances_rotating_every_two_hours(
    backend: Backend,
) -> Option<(Harness, tessera_server::Opened)> {
    let policy = |c: &mut tessera_server::Config| {
        c.keys.rotate_every = Some(std::time::Duration::from_secs(2 * 3600));
    };
    let h = Harness::with(backend, policy).await?;
    let second = tessera_server::open({
        let mut c = h.test_db.config();
        policy(&mut c);
        c
    })
    .await
    .unwrap();
    Some((h, second))
}

/// Move every key's times `by` seconds into the past.
async fn tessera_server_test_shift(h: &Harness, by: i64) {
    let sql =
        "UPDATE signing_keys SET created_at = created_at - $1, activate_at = activate_at - $1";
    match &h.db {
        tessera_server::Db::Sqlite { writer, .. } => {
            sqlx::query(sql).bind(by).execute(writer).await.unwrap();
        }
        tessera_server::Db::Postgres(pool) => {
            sqlx::query(sql).bind(by).execute(pool).await.unwrap();
        }
    }
}

/// A rotation under way when its client (or user) is deleted: the delete
/// waits for it, and neither fails. Before, on PostgreSQL, the delete
/// locked the family, then by cascade the token the rotation held, while
/// the rotation's successor waited for the family: a deadlock, one of
/// them failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_deleted_during_a_rotation_waits_for_it() {
    let Some(test_db) = crate::TestDb::new(Backend::Postgres).await else {
        return;
    };
    let h = Harness::on(test_db, |_| {}).await;
    let client = h.public_client("read").await;
    let (family_id, token) = family(&h, &client).await;
    let tessera_server::db::Pool::Postgres(pool) = h.db.write() else {
        unreachable!("a PostgreSQL database")
    };
    // A rotation, by hand, halfway: its token claimed (locked).
    let mut rotation = pool.begin().await.unwrap();
    sqlx::query("UPDATE refresh_tokens SET used_at = 1 WHERE token_hash = $1")
        .bind(tessera_server::secret::token_digest(&token))
        .execute(&mut *rotation)
        .await
        .unwrap();
    let (db, id) = (h.db.clone(), client.clone());
    let deleting = tokio::spawn(async move {
        clients::delete(
            &db,
            &id,
            KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
    });
    // Time for the delete to reach the lock it waits for.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at) \
         VALUES ($1, $2, 0, 4102444800)",
    )
    .bind(vec![7_u8; 32])
    .bind(&family_id)
    .execute(&mut *rotation)
    .await
    .expect("the successor: its family is not held by the delete");
    rotation.commit().await.unwrap();
    deleting
        .await
        .unwrap()
        .expect("the delete, once the rotation is done");
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM refresh_tokens WHERE family_id = $1")
            .bind(&family_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "the successor went with its family");
    h.finish().await;
}

/// A replay of a token rotated without a kept successor, at an instance
/// with a grace window, while the rightful holder rotates that successor
/// (PostgreSQL, where the two hold different rows): the replay waits for
/// the successor's row, then finds the chain went on, and the family is
/// revoked. Before, it issued a second live successor: two live chains in
/// one family, and reuse detection defeated for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_racing_the_rightful_rotation_is_reuse() {
    let Some(test_db) = crate::TestDb::new(Backend::Postgres).await else {
        return;
    };
    let h = Harness::on(test_db, |_| {}).await;
    let client = h.public_client("read").await;
    let (family_id, first) = family(&h, &client).await;
    let second = rotate(&h.db, &first, &client, &policy(0))
        .await
        .unwrap()
        .unwrap();
    let tessera_server::db::Pool::Postgres(pool) = h.db.write() else {
        unreachable!("a PostgreSQL database")
    };
    // The rightful rotation of the successor, by hand, halfway: the
    // successor claimed (its row held), its own successor inserted.
    let now = tessera_server::store::now();
    let mut rightful = pool.begin().await.unwrap();
    sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2")
        .bind(now)
        .bind(tessera_server::secret::token_digest(&second.token))
        .execute(&mut *rightful)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at) \
         VALUES ($1, $2, $3, 4102444800)",
    )
    .bind(vec![9_u8; 32])
    .bind(&family_id)
    .bind(now)
    .execute(&mut *rightful)
    .await
    .unwrap();
    let (db, replayed, id) = (h.db.clone(), first.clone(), client.clone());
    let replay =
        tokio::spawn(async move { rotate(&db, &replayed, &id, &policy(60)).await.unwrap() });
    // Time for the replay to reach the successor's row.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    rightful.commit().await.unwrap();
    let replay = replay.await.unwrap();
    assert!(
        matches!(replay, Err(Refused::Reused { .. })),
        "{:?}",
        replay.as_ref().map(|r| r.retried)
    );
    assert_eq!(refresh::live_tokens(&h.db, &family_id).await.unwrap(), 0);
    h.finish().await;
}

/// What the client of a code made for `grant` shows as it redeems it.
fn proof_of(grant: &codes::Grant) -> codes::Proof {
    codes::Proof {
        code_challenge: grant.code_challenge.clone(),
        redirect_uri: Some(grant.redirect_uri.clone()),
    }
}

/// A key that leaked is revoked through the admin API: it leaves the key
/// set, a new key signs at once, and every token it signed (one in this
/// instance's verified-token cache too) is refused; another instance
/// sharing the database stops signing with it as soon as it reads the
/// log. A key that does not sign is revoked without a replacement, one
/// dropped already still reaches the log (guards may hold it); an unknown
/// one is 404.
async fn a_leaked_key_revoked_stops_signing_and_verifying_everywhere_at_once(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    let (rs, rs_secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let (admin, admin_secret) = h
        .client(&[GrantType::ClientCredentials], "tessera:admin")
        .await;
    let now = tessera_server::store::now();
    let leaked = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    let before = h.client_credentials_token(&rs, &rs_secret).await;
    assert!(h.active(&before, (&rs, &rs_secret)).await, "and now cached");
    // Another instance on the same database, signing with the same key.
    let other = tessera_server::open(h.test_db.config()).await.unwrap();
    let other_app = tessera_server::App::new(
        other.config,
        other.db.clone(),
        Arc::clone(&other.keys),
        tessera_server::password::Passwords::new(1),
        tessera_server::store::audit::AuditQueue::start(other.db.clone()).0,
    );
    assert_eq!(
        other_app.keys.signer(now).unwrap().kid(),
        Some(leaked.as_str())
    );
    let revoke = |kid: String, token: String| {
        let h = &h;
        async move {
            h.send(
                Request::post(format!("/admin/keys/{kid}/revoke"))
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
        }
    };
    let token = h.client_credentials_token(&admin, &admin_secret).await;
    let r = revoke(leaked.clone(), token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["revoked"], leaked.as_str());
    let successor = r.str("replaced_by");
    assert_ne!(successor, leaked);
    // Gone from the key set; its token refused, the cached one included.
    let published = h.app.keys.jwks_json().to_string();
    assert!(!published.contains(&leaked) && published.contains(&successor));
    assert!(!h.active(&before, (&rs, &rs_secret)).await);
    // The event outlives any guard's copy of the key set: the longest
    // token, the announce period (the longest `jwks_max_age`) and the
    // hour a guard serves a set stale.
    let keep_until = h
        .count(
            "SELECT keep_until FROM revocation_events WHERE kind = 'key' AND value = $1",
            &[&leaked],
        )
        .await;
    let config = h.test_db.config();
    let announce = tessera_server::store::secs(config.keys.announce);
    let ttl = tessera_server::store::secs(config.max_access_ttl);
    assert!(keep_until >= now + ttl + announce + 3600, "{keep_until}");
    // The new key signs at once, here...
    let after = h.client_credentials_token(&rs, &rs_secret).await;
    let header = tessera_jose::jws::decode_header(&after).unwrap();
    assert_eq!(header.kid.as_deref(), Some(successor.as_str()));
    assert!(h.active(&after, (&rs, &rs_secret)).await);
    // A token naming no key was not made here, whatever key verifies it.
    let (_, claims) = tessera_jose::dangerous::decode_unverified_claims(&after).unwrap();
    let signer = h.app.keys.signer(tessera_server::store::now()).unwrap();
    let no_kid = tessera_jose::jwt::sign_with_header(
        &tessera_jose::jws::Header::new(signer.algorithm()).typ("at+jwt"),
        &tessera_jose::Claims::with_custom(claims),
        &signer,
    )
    .unwrap();
    assert!(!h.active(&no_kid, (&rs, &rs_secret)).await);
    // ...and at the other instance once it has read the log.
    other_app.access.revoked().catch_up(&other.db).await;
    let mut switched = false;
    for _ in 0..200 {
        let signer = other_app.keys.signer(tessera_server::store::now()).unwrap();
        if signer.kid() == Some(successor.as_str()) {
            switched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        switched,
        "the other instance still signs with the revoked key"
    );
    // A key that does not sign (announced by a rotation): no replacement.
    let announced = h
        .app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    let token = h.client_credentials_token(&admin, &admin_secret).await;
    let r = revoke(announced[0].clone(), token.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["replaced_by"].is_null(), "{}", r.text);
    // A key of this server dropped already (all its tokens expired, as a
    // maintenance drops it, or meanwhile by another instance): guards may
    // still hold a key set with it, so its revocation goes to the log all
    // the same. Before, it was "not found" and nothing reached them.
    let dropped = announced.last().unwrap().clone();
    h.execute("DELETE FROM signing_keys WHERE kid = $1", &[&dropped])
        .await;
    let events = |kid: String| {
        let h = &h;
        async move {
            let sql = "SELECT COUNT(*) FROM revocation_events WHERE kind = 'key' AND value = $1";
            match h.db.read() {
                tessera_server::db::Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql)
                    .bind(kid)
                    .fetch_one(p)
                    .await
                    .unwrap(),
                tessera_server::db::Pool::Postgres(p) => sqlx::query_scalar::<_, i64>(sql)
                    .bind(kid)
                    .fetch_one(p)
                    .await
                    .unwrap(),
            }
        }
    };
    let before = events(dropped.clone()).await;
    let r = revoke(dropped.clone(), token.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["replaced_by"].is_null(), "{}", r.text);
    assert_eq!(events(dropped.clone()).await, before + 1);
    // An id this server never made stays "not found", and logs nothing.
    let unknown = revoke("no-such-key".into(), token).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(events("no-such-key".into()).await, 0);
    other.db.close().await;
    h.finish().await;
}

/// The first key of an algorithm the configuration changed to, revoked
/// while announced (it never signed): its replacement is announced as
/// long, and the old algorithm's key signs meanwhile. Before, the
/// replacement signed at once, unannounced, and verifiers holding the key
/// set refused its tokens until they fetched it again.
async fn revoking_an_announced_first_key_keeps_its_announcement(backend: Backend) {
    use tessera_jose::Algorithm;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let old_kid = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    let mut config = h.test_db.config();
    config.keys.algorithm = Algorithm::ES384;
    let restarted = tessera_server::open(config).await.unwrap();
    let keys = &restarted.keys;
    keys.maintain_at(now).await.unwrap();
    let announced = |at: i64| {
        keys.list(at)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.alg == "ES384")
            .collect::<Vec<_>>()
    };
    let first = announced(now).pop().unwrap();
    assert!(first.activate_at > now + 60);
    let replaced = keys
        .revoke(&first.kid, tessera_server::store::audit::InChange::none())
        .await
        .unwrap()
        .expect("a replacement for the algorithm's only key");
    let replacement = announced(now)
        .into_iter()
        .find(|k| k.kid == replaced)
        .unwrap();
    assert!(
        replacement.activate_at >= first.activate_at,
        "{replacement:?}"
    );
    assert_eq!(keys.signer(now + 1).unwrap().kid(), Some(old_kid.as_str()));
    restarted.db.close().await;
    h.finish().await;
}

/// A key the maintenance dropped (all its tokens expired) may still sit
/// in guards' key sets, so its revocation must reach the log. It was
/// found by its `key_created` event, which the audit trail may have
/// pruned long before (a key signs for `rotate_every`, the trail keeps
/// `audit.retain`): the maintenance now records `key_removed` as it drops
/// one, and a revocation finds either.
async fn a_key_dropped_by_the_maintenance_can_be_revoked_after_its_creation_left_the_trail(
    backend: Backend,
) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let now = tessera_server::store::now();
    let old = h.app.keys.signer(now).unwrap().kid().unwrap().to_owned();
    h.app
        .keys
        .rotate(tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    let config = h.test_db.config();
    let announce = tessera_server::store::secs(config.keys.announce);
    let ttl = tessera_server::store::secs(config.max_access_ttl);
    let later = now + announce + ttl + 3600;
    h.app.keys.maintain_at(later).await.unwrap();
    assert!(
        !h.app.keys.list(later).iter().any(|(k, _)| k.kid == old),
        "the old key was dropped"
    );
    let removed = audit::recent(&h.db, Some("key_removed"), 10).await.unwrap();
    assert!(
        removed.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with(&format!("kid={old} alg=")))),
        "{removed:?}"
    );
    // Its creation pruned from the trail, as audit.retain would.
    h.execute("DELETE FROM audit_log WHERE event = 'key_created'", &[])
        .await;
    h.app
        .keys
        .revoke(&old, tessera_server::store::audit::InChange::none())
        .await
        .unwrap();
    let events = h
        .count(
            "SELECT COUNT(*) FROM revocation_events WHERE kind = 'key' AND value = $1",
            &[&old],
        )
        .await;
    assert_eq!(events, 1);
    h.finish().await;
}

/// A session past its absolute end whose refresh family (offline access,
/// which outlives it) is still live is kept, so that ending it (`tessera
/// session end`) still revokes the family; one with no live family goes.
/// Before, the prune took the row and `session end` answered "not found"
/// while the family went on minting tokens with that `sid`.
async fn a_session_past_its_end_is_kept_while_its_families_live(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let user = h.user("alice", "correct horse", "read").await;
    let client = h.public_client("read").await;
    let (offline, bare) = (live_session(&h, &user).await, live_session(&h, &user).await);
    let family = NewFamily {
        sid: Some(&offline),
        ..new_family(&client)
    };
    let token = refresh::issue_as(&h.db, "family-offline", family, &policy(0))
        .await
        .unwrap()
        .unwrap();
    // Past both sessions' absolute end (an hour), within the family's.
    let later = tessera_server::store::now() + 7200;
    let retain = retention::Retention { audit: None };
    retention::prune(&h.db, later, retain).await.unwrap();
    assert!(
        sessions::end(
            &h.db,
            &bare,
            "test",
            KEEP,
            tessera_server::store::audit::InChange::none()
        )
        .await
        .unwrap()
        .is_none(),
        "pruned"
    );
    let ended = sessions::end(
        &h.db,
        &offline,
        "admin",
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert!(ended.is_some(), "kept while its family lives");
    assert!(refresh::lookup(&h.db, &token).await.unwrap().is_none());
    h.finish().await;
}

/// More sealed successors than a batch, past their grace window: all are
/// forgotten (a batch at a time), the ones still within it kept.
async fn sealed_successors_past_their_window_are_all_forgotten_in_batches(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    refresh::issue_as(&h.db, "family-s", new_family(&client), &policy(0))
        .await
        .unwrap()
        .unwrap();
    let hash = if h.db.is_postgres() {
        "convert_to(i::text || ' ' || u::text, 'UTF8')"
    } else {
        "CAST(i || ' ' || u AS BLOB)"
    };
    // 1,500 rotated at 100 and 10 at 990, each with its successor sealed.
    for (count, used) in [(1500, 100), (10, 990)] {
        h.execute(
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}), \
                 v(u) AS (SELECT {used}) \
                 INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, used_at, successor_sealed) \
                 SELECT {hash}, 'family-s', 0, 9999999999, u, {sealed} FROM n, v",
                sealed = if h.db.is_postgres() { "'\\x00'::bytea" } else { "x'00'" },
            ),
            &[],
        )
        .await;
    }
    let forgotten = refresh::forget_successors(&h.db, 1000, 0).await.unwrap();
    assert_eq!(forgotten, 1500);
    assert_eq!(refresh::forget_successors(&h.db, 1000, 0).await.unwrap(), 0);
    assert_eq!(
        refresh::forget_successors(&h.db, 1100, 0).await.unwrap(),
        10
    );
    h.finish().await;
}

/// A scope taken from a client revokes its refresh families, which carry
/// scopes granted before; one added leaves them.
async fn a_scope_taken_from_a_client_revokes_its_families(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read write").await;
    let token = refresh::issue_as(&h.db, "family-c", new_family(&client), &policy(0))
        .await
        .unwrap()
        .unwrap();
    let set = |scopes: &str| {
        let change = ScopeChange::Replace(Scopes::parse(scopes).unwrap());
        let (h, client) = (&h, client.clone());
        async move {
            clients::set_scopes(
                &h.db,
                &client,
                &change,
                KEEP,
                tessera_server::store::audit::InChange::none(),
            )
            .await
        }
    };
    set("read write more").await.unwrap();
    assert!(refresh::lookup(&h.db, &token).await.unwrap().is_some());
    set("read").await.unwrap();
    assert!(refresh::lookup(&h.db, &token).await.unwrap().is_none());
    let read = ScopeChange::Replace(Scopes::parse("read").unwrap());
    assert!(matches!(
        clients::set_scopes(
            &h.db,
            "nobody",
            &read,
            KEEP,
            tessera_server::store::audit::InChange::none()
        )
        .await,
        Err(Error::NotFound { .. })
    ));
    h.finish().await;
}

/// Scopes added and taken away by administrators at the same moment all
/// land: each edit is made against the scopes as its own transaction
/// reads them (two replacements, each written from what its author read
/// before, lose one). Taking one away still revokes what was issued with
/// it; adding one leaves it.
async fn scope_edits_made_at_once_all_land(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let client = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let edit = |add: &str, remove: &str| ScopeChange::Edit {
        add: Scopes::parse(add).unwrap(),
        remove: Scopes::parse(remove).unwrap(),
    };
    let token = refresh::issue_as(&h.db, "family-e", new_family(&client), &policy(0))
        .await
        .unwrap()
        .unwrap();
    for round in 0..5 {
        let [a, b, c] = ["a", "b", "c"].map(|s| edit(&format!("{s}{round}"), ""));
        let (x, y, z, u, v, w) = tokio::join!(
            clients::set_scopes(
                &h.db,
                &client,
                &a,
                KEEP,
                tessera_server::store::audit::InChange::none()
            ),
            clients::set_scopes(
                &h.db,
                &client,
                &b,
                KEEP,
                tessera_server::store::audit::InChange::none()
            ),
            clients::set_scopes(
                &h.db,
                &client,
                &c,
                KEEP,
                tessera_server::store::audit::InChange::none()
            ),
            users::set_scopes(
                &h.db,
                "alice",
                &a,
                KEEP,
                tessera_server::store::audit::InChange::none()
            ),
            users::set_scopes(
                &h.db,
                "alice",
                &b,
                KEEP,
                tessera_server::store::audit::InChange::none()
            ),
            users::set_scopes(
                &h.db,
                "alice",
                &c,
                KEEP,
                tessera_server::store::audit::InChange::none()
            ),
        );
        for result in [x, y, z, u, v, w] {
            result.unwrap();
        }
    }
    let expected = "a0 a1 a2 a3 a4 b0 b1 b2 b3 b4 c0 c1 c2 c3 c4 read";
    let stored = clients::find(&h.db, &client).await.unwrap().unwrap();
    assert_eq!(stored.scopes.to_string(), expected);
    let alice = users::find(&h.db, "alice").await.unwrap().unwrap();
    assert_eq!(alice.scopes, expected);
    assert!(
        refresh::lookup(&h.db, &token).await.unwrap().is_some(),
        "only added"
    );
    // Taken away: what the client's families carry goes with it.
    let now = clients::set_scopes(
        &h.db,
        &client,
        &edit("", "read a0"),
        KEEP,
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap();
    assert!(!now.contains("read") && !now.contains("a0") && now.contains("b4"));
    assert!(refresh::lookup(&h.db, &token).await.unwrap().is_none());
    h.finish().await;
}
