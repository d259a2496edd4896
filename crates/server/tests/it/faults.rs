//! Faults of the environment: a full disk under SQLite, a missing or wrong
//! master key. What was answered 2xx must be in the database, before,
//! during and after the fault; a start that cannot work writes nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;
use tessera_server::secret::{random_token, token_digest, MasterKeySource};
use tessera_server::store::{users, Scopes};
use tessera_server::{Db, Error};

use crate::{wait_for_audit, Backend, Harness, TestDb};

/// A small tmpfs mounted on a temporary directory, unmounted on drop.
/// Mounting needs root (CI runs as root); elsewhere `None`, with a notice.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            Ok(out) => {
                eprintln!(
                    "skipped: disk-full test needs to mount a tmpfs (run as root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: disk-full test cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 16 * 1024];
        loop {
            if let Err(e) = file.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
                break;
            }
        }
        // Single bytes too, so not even a small write finds room.
        while file.write_all(&[0]).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A server whose database and master key are on `disk`.
async fn on_disk(disk: &SmallDisk, url: &str) -> Harness {
    let test_db = TestDb {
        url: url.to_owned(),
        dir: tempfile::tempdir().unwrap(),
        schema: None,
    };
    Harness::on(test_db, |c| {
        // Its tests log one user in over and over, and rotate their
        // refresh tokens as fast as they can: no login limits, no
        // allowance of rotations.
        c.max_login_failures = 0;
        c.refreshes_per_minute = 0;
        c.data_dir = disk.path().to_owned();
        c.master_key = MasterKeySource::File(disk.path().join("master.key"));
    })
    .await
}

/// A public client, alice's user id, and the refresh token of her login
/// through that client.
async fn logged_in(h: &Harness) -> (String, String, String) {
    let web = h.public_client("read").await;
    let alice = h.user("alice", "correct horse", "read").await;
    let login = h.login(&web, "alice", "correct horse").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let first = login.str("refresh_token");
    (web, alice, first)
}

/// How many refresh tokens with this digest the database holds, as
/// another connection (or a restarted server) sees it.
async fn stored(db: &Db, token: &str) -> i64 {
    let Db::Sqlite { reader, .. } = db else {
        unreachable!("SQLite only")
    };
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_digest(token))
        .fetch_one(reader)
        .await
        .unwrap();
    n
}

async fn rotated_events(db: &Db) -> usize {
    tessera_server::store::audit::recent(db, Some("refresh_rotated"), 100_000)
        .await
        .unwrap()
        .len()
}

/// Fill the data directory's disk while refreshes run, then free it: every
/// refresh answered 2xx is committed (seen by another connection and after
/// a restart), every refresh that could not be written is answered 503 with
/// `Retry-After`, writes commit again once space returns without a restart,
/// another process can write, and no audit event is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_never_loses_an_acknowledged_write() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let url = format!("sqlite://{}", disk.path().join("tessera.db").display());
    let h = on_disk(&disk, &url).await;
    let client = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    // Four sessions, each a chain of rotations.
    let mut current = Vec::new();
    for _ in 0..4 {
        let login = h.login(&client, "alice", "correct horse").await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.text);
        current.push(login.str("refresh_token"));
    }
    let mut acknowledged: Vec<String> = current.clone();
    let mut rotations_ok = 0usize;
    let refresh = |token: String| {
        let h = &h;
        let client = client.clone();
        async move {
            h.post(
                "/oauth2/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client),
                    ("refresh_token", &token),
                ],
                None,
            )
            .await
        }
    };

    let filler = disk.fill();
    let mut refused = 0usize;
    for round in 0..3000 {
        let chain = round % current.len();
        // Every fifth request a login: a transaction of two inserts.
        let reply = if round % 5 == 4 {
            h.login(&client, "alice", "correct horse").await
        } else {
            refresh(current[chain].clone()).await
        };
        match reply.status {
            StatusCode::OK if round % 5 == 4 => acknowledged.push(reply.str("refresh_token")),
            StatusCode::OK => {
                current[chain] = reply.str("refresh_token");
                acknowledged.push(current[chain].clone());
                rotations_ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(reply.error(), "temporarily_unavailable", "{}", reply.text);
                assert!(reply.headers.contains_key("retry-after"));
                refused += 1;
                if refused >= 40 {
                    break;
                }
            }
            other => panic!("round {round}: {other} {}", reply.text),
        }
    }
    assert!(
        refused > 0,
        "the disk never filled up: the test proved nothing"
    );

    // Space returns: writes commit again, at once, without a restart.
    std::fs::remove_file(filler).unwrap();
    for token in &mut current {
        let reply = refresh(token.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        *token = reply.str("refresh_token");
        acknowledged.push(token.clone());
        rotations_ok += 1;
    }

    // Another process sees every acknowledged token and can write.
    let other = Db::connect(&url, 2).await.unwrap();
    let wrote = tokio::time::timeout(
        Duration::from_secs(5),
        users::add(
            &other,
            "bob",
            "not-a-hash",
            &Scopes::default(),
            &users::Profile::default(),
            tessera_server::store::audit::InChange::none(),
        ),
    )
    .await
    .expect("another process could not write: the database is held locked");
    wrote.unwrap();
    for (i, token) in acknowledged.iter().enumerate() {
        assert_eq!(
            stored(&other, token).await,
            1,
            "acknowledged token {i} lost"
        );
    }
    // The audit events of every rotation reach the database, those of the
    // full-disk moments included (the writer retries them).
    let mut events = 0;
    for _ in 0..150 {
        events = rotated_events(&other).await;
        if events >= rotations_ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events, rotations_ok, "audit events lost");
    other.close().await;

    // A restart keeps everything: the last token of each chain still works.
    h.db.close().await;
    drop(h);
    let h = on_disk(&disk, &url).await;
    for (i, token) in acknowledged.iter().enumerate() {
        assert_eq!(
            stored(&h.db, token).await,
            1,
            "token {i} lost by the restart"
        );
    }
    for token in current {
        let reply = h
            .post(
                "/oauth2/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client),
                    ("refresh_token", &token),
                ],
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    h.db.close().await;
}

/// The stored signing keys' ids, in generation order.
async fn stored_kids(url: &str) -> Vec<String> {
    let db = Db::connect(url, 1).await.unwrap();
    let sql = "SELECT kid FROM signing_keys ORDER BY generation";
    let rows: Vec<(String,)> = match &db {
        Db::Sqlite { reader, .. } => sqlx::query_as(sql).fetch_all(reader).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    };
    let events = tessera_server::store::audit::recent(&db, None, 1000)
        .await
        .unwrap()
        .len();
    db.close().await;
    let mut kids: Vec<String> = rows.into_iter().map(|(kid,)| kid).collect();
    kids.push(format!("{events} audit events"));
    kids
}

/// A start whose master key is missing or wrong, at a moment when a key
/// rotation is due, writes nothing and makes no master key; with the right
/// key back, the next start works (and rotates).
async fn a_start_without_its_master_key_changes_nothing(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let first = tessera_server::open(test_db.config()).await.unwrap();
    first.db.close().await;
    let before = stored_kids(&test_db.url).await;
    // Two keys (access tokens, ID tokens) and the audit count.
    assert_eq!(before.len(), 3, "{before:?}");
    // Every later start finds a rotation due.
    let due = || {
        let mut config = test_db.config();
        config.keys.rotate_every = Some(Duration::from_secs(1));
        config
    };

    let key_file = test_db.dir.path().join("master.key");
    let saved = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let err = tessera_server::open(due()).await.unwrap_err();
    assert!(matches!(err, Error::MasterKey(_)), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!key_file.exists(), "a master key was made for sealed data");
    assert_eq!(stored_kids(&test_db.url).await, before);

    let mut wrong = due();
    wrong.master_key = MasterKeySource::Value(random_token().unwrap());
    let err = tessera_server::open(wrong).await.unwrap_err();
    assert!(matches!(err, Error::MasterKey(_)), "{err}");
    assert_eq!(stored_kids(&test_db.url).await, before);

    std::fs::write(&key_file, saved).unwrap();
    let again = tessera_server::open(due()).await.unwrap();
    // A start's loading makes no rotation; its maintenance, at once, does.
    assert_eq!(stored_kids(&test_db.url).await, before);
    again.keys.maintain().await.unwrap();
    let after = stored_kids(&test_db.url).await;
    assert_eq!(after.len(), 5, "the due rotation happens: {after:?}");
    assert_eq!(after[0], before[0]);

    // A database tied to a master key but holding no key yet (its first
    // start stopped in between): no new master key is made for it either.
    let sql = "DELETE FROM signing_keys";
    match &again.db {
        Db::Sqlite { writer, .. } => drop(sqlx::query(sql).execute(writer).await.unwrap()),
        Db::Postgres(pool) => drop(sqlx::query(sql).execute(pool).await.unwrap()),
    }
    again.db.close().await;
    std::fs::remove_file(&key_file).unwrap();
    let err = tessera_server::open(due()).await.unwrap_err();
    assert!(err.to_string().contains("tied to a master key"), "{err}");
    assert!(
        !key_file.exists(),
        "a master key was made for a tied database"
    );
    test_db.cleanup().await;
}

/// Two instances set up at once on an empty database, each with a master
/// key of its own: one ties the database to its key, the other stores
/// nothing and says why; the database stays readable under the first.
/// (At once on PostgreSQL, where several instances share a database; on
/// SQLite, one instance per file, the tie is shown with the first start's
/// keys gone, as if it had stopped before storing them.)
async fn instances_set_up_at_once_with_different_master_keys_cannot_split_the_keys(
    backend: Backend,
) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let with_key = |key: &str| {
        let mut config = test_db.config();
        config.master_key = MasterKeySource::Value(key.to_owned().into());
        config
    };
    let (a, b) = (random_token().unwrap(), random_token().unwrap());
    let (won, lost) = match backend {
        Backend::Postgres => {
            let (first, second) = tokio::join!(
                tessera_server::open(with_key(&a)),
                tessera_server::open(with_key(&b))
            );
            match (first, second) {
                (Ok(opened), Err(e)) => ((opened, a), e),
                (Err(e), Ok(opened)) => ((opened, b), e),
                (first, second) => panic!(
                    "exactly one may start: {:?} / {:?}",
                    first.map(drop),
                    second.map(drop)
                ),
            }
        }
        Backend::Sqlite => {
            let opened = tessera_server::open(with_key(&a)).await.unwrap();
            let Db::Sqlite { writer, .. } = &opened.db else {
                unreachable!()
            };
            sqlx::query("DELETE FROM signing_keys")
                .execute(writer)
                .await
                .unwrap();
            opened.db.close().await;
            let lost = tessera_server::open(with_key(&b)).await.unwrap_err();
            assert_eq!(stored_kids(&test_db.url).await.len(), 1, "no key stored");
            let opened = tessera_server::open(with_key(&a)).await.unwrap();
            ((opened, a), lost)
        }
    };
    // Refused by the tie, or (when the winner's keys were already
    // there) by a key it cannot open: either way, before writing.
    assert!(matches!(lost, Error::MasterKey(_)), "{lost}");
    if matches!(backend, Backend::Sqlite) {
        assert!(lost.to_string().contains("same one"), "{lost}");
    }
    won.0.db.close().await;
    // Only the winner's keys (one per algorithm) and the audit count.
    assert_eq!(stored_kids(&test_db.url).await.len(), 3);
    let again = tessera_server::open(with_key(&won.1)).await.unwrap();
    again.db.close().await;
    let other = random_token().unwrap();
    assert!(matches!(
        tessera_server::open(with_key(&other)).await,
        Err(Error::MasterKey(_))
    ));
    test_db.cleanup().await;
}

/// A master key file the configuration names, missing (a secret not
/// mounted), is not made: the start fails, writing nothing, and works
/// once a key is there (`tessera key master` makes one). Made there, it
/// would have sealed the database's keys and been lost with the
/// container or tmpfs it landed in, leaving a database no start opens.
async fn a_named_master_key_file_that_is_missing_is_not_made(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let secrets = test_db.dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let named = secrets.join("tessera-master-key");
    let config = || {
        let mut config = test_db.config();
        config.master_key = MasterKeySource::File(named.clone());
        config
    };
    let err = tessera_server::open(config()).await.unwrap_err();
    assert!(matches!(err, Error::MasterKey(_)), "{err}");
    assert!(err.to_string().contains("tessera key master"), "{err}");
    assert!(!named.exists(), "a master key was made at a named path");
    let db = Db::connect(&test_db.url, 1).await.unwrap();
    assert!(!tessera_server::keys::tied_to_a_master_key(&db)
        .await
        .unwrap());
    assert_eq!(tessera_server::keys::stored_count(&db).await.unwrap(), 0);
    db.close().await;

    tessera_server::secret::MasterKey::create(&named).unwrap();
    let opened = tessera_server::open(config()).await.unwrap();
    assert_eq!(
        tessera_server::keys::stored_count(&opened.db)
            .await
            .unwrap(),
        2
    );
    opened.db.close().await;
    test_db.cleanup().await;
}

/// A database a newer version migrated (an upgrade rolled back without a
/// restore): the start refuses it, saying so, and leaves it as it is.
/// Before, sqlx's own words: "migration … was previously applied but is
/// missing in the resolved migrations".
async fn a_start_refuses_a_schema_a_newer_version_made(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 1).await.unwrap();
    let later = "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) VALUES (99990101000000, 'from a later version', TRUE, $1, 0)";
    let versions = "SELECT COUNT(*) FROM _sqlx_migrations";
    let count = match &db {
        Db::Sqlite { writer, .. } => {
            sqlx::query(later)
                .bind(vec![0u8])
                .execute(writer)
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(versions)
                .fetch_one(writer)
                .await
                .unwrap()
        }
        Db::Postgres(pool) => {
            sqlx::query(later)
                .bind(vec![0u8])
                .execute(pool)
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(versions)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    db.close().await;
    let err = tessera_server::open(test_db.config()).await.unwrap_err();
    let said = err.to_string();
    assert!(said.contains("newer than this tessera's"), "{said}");
    assert!(said.contains("99990101000000"), "{said}");
    let db = Db::open(&test_db.url, 1, tessera_server::db::Schema::AsIs)
        .await
        .unwrap();
    let after = match &db {
        Db::Sqlite { reader, .. } => {
            sqlx::query_scalar::<_, i64>(versions)
                .fetch_one(reader)
                .await
        }
        Db::Postgres(pool) => sqlx::query_scalar::<_, i64>(versions).fetch_one(pool).await,
    };
    assert_eq!(after.unwrap(), count);
    db.close().await;
    test_db.cleanup().await;
}

/// An instance beside a newer one that writes revocation events of a kind
/// this version does not know (a rolling upgrade, a key revoked half-way):
/// its reading of the log stops at that event, it stops issuing tokens and
/// `/readyz` takes it out of service, until it can read the event. Before,
/// the event was skipped, and what it revoked (a leaked key) honoured here
/// and, through the feed's cursor passing it, at the guards that follow
/// this instance.
async fn an_unknown_revocation_kind_stops_the_instance_that_cannot_read_it(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h
        .client(
            &[tessera_server::store::clients::GrantType::ClientCredentials],
            "read",
        )
        .await;
    let issue = || async { h.client_credentials(&id, &secret).await.status };
    assert_eq!(issue().await, StatusCode::OK);
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    let now = tessera_server::store::now();
    for (kind, value) in [
        ("token", "before"),
        ("from-the-future", "x"),
        ("token", "after"),
    ] {
        h.execute(
            &format!(
                "INSERT INTO revocation_events (kind, value, issued_before, keep_until, created_at) \
                 VALUES ($1, $2, NULL, {}, {now})",
                now + 3600
            ),
            &[kind, value],
        )
        .await;
    }
    let revoked = h.app.access.revoked();
    let err = revoked.sync(&h.db).await.unwrap_err().to_string();
    assert!(
        err.contains("\"from-the-future\"") && err.contains("upgrade"),
        "{err}"
    );
    assert!(
        revoked.refuses_jti("before"),
        "what came before it is applied"
    );
    assert!(
        !revoked.refuses_jti("after"),
        "read past an event not understood"
    );
    let said = revoked.latest();
    // Past the time a copy counts as current.
    tokio::time::sleep(tessera_server::store::revocation::TRUSTED_FOR).await;
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.text, "revocation log not current\n");
    assert_eq!(issue().await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(revoked.latest(), said, "the cursor passed the event");

    // Upgraded: the event is one it reads.
    h.execute(
        "UPDATE revocation_events SET kind = 'token' WHERE kind = 'from-the-future'",
        &[],
    )
    .await;
    revoked.sync(&h.db).await.unwrap();
    assert!(revoked.refuses_jti("x") && revoked.refuses_jti("after"));
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(issue().await, StatusCode::OK);
    h.finish().await;
}

/// An instance that cannot read the signing keys again (a row of an
/// algorithm a newer version beside it added) goes on signing with what
/// it holds, but `/readyz` says so once they are three maintenance periods
/// old; and once a key revocation is heard of, it signs nothing until it
/// has read the keys again, since the revoked key may be the one it signs
/// with.
async fn an_instance_that_cannot_read_the_keys_again_says_so(backend: Backend) {
    let Some(h) = Harness::with(backend, |c| c.keys.announce = Duration::from_secs(4)).await else {
        return;
    };
    let (id, secret) = h
        .client(
            &[tessera_server::store::clients::GrantType::ClientCredentials],
            "read",
        )
        .await;
    let kid_of = |token: &str| {
        tessera_jose::dangerous::decode_unverified_claims(token)
            .unwrap()
            .0
            .kid
            .unwrap()
    };
    let first = h.client_credentials_token(&id, &secret).await;
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    // Another instance, started while it could still read the keys.
    let other = tessera_server::open(h.test_db.config()).await.unwrap();

    h.execute(
        "INSERT INTO signing_keys (kid, generation, alg, sealed_key, public_jwk, created_at, activate_at) \
         SELECT 'from-a-newer-version', generation + 100, 'ML-DSA-65', sealed_key, public_jwk, \
         created_at, activate_at FROM signing_keys ORDER BY generation DESC LIMIT 1",
        &[],
    )
    .await;
    let err = h.app.keys.refresh_now().await.unwrap_err().to_string();
    assert!(err.contains("ML-DSA-65"), "{err}");
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK, "not yet");
    let period = h.app.config.keys.maintenance_period();
    tokio::time::sleep(period * 3 + Duration::from_millis(300)).await;
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.text, "signing keys not current\n");
    // It still signs: nothing it holds is known to be wrong.
    assert_eq!(
        kid_of(&h.client_credentials_token(&id, &secret).await),
        kid_of(&first)
    );

    // The key leaked, and is revoked through the other instance.
    let replacement = other
        .keys
        .revoke(
            &kid_of(&first),
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
    assert!(replacement.is_some());
    h.app.access.revoked().sync(&h.db).await.unwrap();
    let refused = h.client_credentials(&id, &secret).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert_eq!(refused.error(), "temporarily_unavailable");
    assert_eq!(
        h.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Upgraded (the row it could not read is one it reads): the next
    // request reads the keys and signs with the replacement.
    h.execute(
        "DELETE FROM signing_keys WHERE kid = 'from-a-newer-version'",
        &[],
    )
    .await;
    let after = h.client_credentials_token(&id, &secret).await;
    assert_eq!(Some(kid_of(&after)), replacement);
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    other.db.close().await;
    h.finish().await;
}

/// A refresh whose rotation committed and whose answer then failed (here:
/// a cut-off stamped by a clock ahead of this instance's, which the token
/// endpoint cannot wait out, 503) is taken back: the client's retry is
/// answered, not taken for reuse that would revoke the session. Without a
/// grace window, the default.
async fn a_refresh_whose_answer_failed_can_be_retried(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (web, alice, first) = logged_in(&h).await;
    // Six seconds ahead: past the five the endpoint waits.
    h.cut_beyond_the_wait(&alice).await;
    let failed = h.refresh(&web, &first, None).await;
    assert_eq!(
        (failed.status, failed.error()),
        (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        "{}",
        failed.text
    );
    let live = tessera_server::store::refresh::lookup(&h.db, &first)
        .await
        .unwrap()
        .expect("the presented token is live again");
    // And it alone: the successor is gone, no branch is left.
    assert_eq!(
        tessera_server::store::refresh::live_tokens(&h.db, &live.family.id)
            .await
            .unwrap(),
        1
    );
    wait_for_audit(&h, "refresh_rotation_taken_back", 1).await;
    // The retry, once the cut has passed: answered, and the session goes on.
    let retry = h.refresh(&web, &first, None).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    let next = h.refresh(&web, &retry.str("refresh_token"), None).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    h.finish().await;
}

/// A jwt-bearer grant whose assertion was spent and whose answer then
/// failed (503, as above) gives the assertion back: the client's retry
/// with it is answered, once; before, it was refused as a replay, and a
/// client holding an assertion it cannot make again (one its user's
/// identity provider issued) could not get the token at all.
async fn a_jwt_bearer_grant_whose_answer_failed_can_be_retried(backend: Backend) {
    use tessera_jose::{jwt, Algorithm, Claims, NumericDate, SigningKey};
    use tessera_server::store::clients::{self, GrantType, NewClient};
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwk = key.verifying_key().unwrap().to_public_jwk().unwrap();
    let issuer = clients::add(
        &h.db,
        NewClient {
            name: "issuer".into(),
            grants: vec![GrantType::JwtBearer],
            scopes: Scopes::parse("read").unwrap(),
            jwks: Some(tessera_jose::JwkSet::new(vec![jwk]).to_json()),
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .client_id;
    let alice = h.user("alice", "correct horse", "read").await;
    let claims = Claims::new()
        .issuer(issuer.as_str())
        .subject("alice")
        .audience(crate::ISSUER)
        .jwt_id("once")
        .expires_at(NumericDate::now().plus(Duration::from_secs(120)));
    let assertion = jwt::sign(&claims, &key).unwrap();
    let grant = || {
        let (h, assertion) = (&h, &assertion);
        async move {
            h.post(
                "/oauth2/token",
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion),
                ],
                None,
            )
            .await
        }
    };
    h.cut_beyond_the_wait(&alice).await;
    let failed = grant().await;
    assert_eq!(
        (failed.status, failed.error()),
        (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        "{}",
        failed.text
    );
    let retry = grant().await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    let replay = grant().await;
    assert_eq!(replay.error(), "invalid_grant", "{}", replay.text);
    assert!(replay.text.contains("already used"), "{}", replay.text);
    h.finish().await;
}

/// A take-back whose first attempt fails (the database refuses it for a
/// moment: most often the same trouble that failed the answer) is tried
/// again in the seconds after, before the client's retry comes: the
/// presented token is live again. Before, one attempt was all, and the
/// retry revoked the session.
async fn a_take_back_the_database_refused_at_first_is_tried_again(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (web, alice, first) = logged_in(&h).await;
    // The take-back deletes the successor nobody saw: refused for now.
    h.refuse("refuse_take_back", "BEFORE DELETE ON refresh_tokens")
        .await;
    h.cut_beyond_the_wait(&alice).await;
    let failed = h.refresh(&web, &first, None).await;
    assert_eq!(
        failed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        failed.text
    );
    assert!(
        tessera_server::store::refresh::lookup(&h.db, &first)
            .await
            .unwrap()
            .is_none(),
        "taken back at the first attempt, which the trigger refuses"
    );
    h.allow("refuse_take_back", "refresh_tokens").await;
    wait_for_audit(&h, "refresh_rotation_taken_back", 1).await;
    assert!(
        tessera_server::store::refresh::lookup(&h.db, &first)
            .await
            .unwrap()
            .is_some(),
        "the presented token is live again"
    );
    h.finish().await;
}

/// The same when the request is dropped before it answered (the request
/// timeout drops the handler where it waits, here for the cut-off): the
/// rotation is taken back all the same.
async fn a_refresh_dropped_before_it_answered_is_taken_back(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (web, alice, first) = logged_in(&h).await;
    // Six seconds ahead: past the five the endpoint waits.
    h.cut_beyond_the_wait(&alice).await;
    let dropped = tokio::time::timeout(Duration::from_secs(1), h.refresh(&web, &first, None)).await;
    assert!(dropped.is_err(), "answered within the second: {dropped:?}");
    wait_for_audit(&h, "refresh_rotation_taken_back", 1).await;
    assert!(
        tessera_server::store::refresh::lookup(&h.db, &first)
            .await
            .unwrap()
            .is_some(),
        "the presented token is live again"
    );
    h.finish().await;
}

/// A refresh dropped while its rotation waits for the database (the
/// request timeout, here while another connection holds the write lock
/// or the token's row) leaves the presented token live: on SQLite the
/// rotation (one that names a scope, which runs as a transaction of its
/// own on the writer's thread) commits once the lock is free, whatever
/// became of its request, and is taken back; on PostgreSQL it rolls
/// back. The retry goes on with the session.
/// Before, the take-back was armed only once the rotation had returned:
/// the client got a 408 or 503, its retry was reuse, and the session
/// ended.
async fn a_refresh_dropped_while_it_rotates_leaves_the_token_live(backend: Backend) {
    use tessera_server::store::refresh;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (web, _, first) = logged_in(&h).await;
    let lock = "SELECT token_hash FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE";
    let dropped = h
        .dropped_while_held(
            (lock, &token_digest(&first)),
            h.refresh(&web, &first, Some("read")),
        )
        .await;
    assert!(dropped.is_err(), "answered while blocked: {dropped:?}");
    if let Backend::Sqlite = backend {
        wait_for_audit(&h, "refresh_rotation_taken_back", 1).await;
    }
    assert!(
        refresh::lookup(&h.db, &first).await.unwrap().is_some(),
        "the presented token is live"
    );
    let retry = h.refresh(&web, &first, None).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    let next = h.refresh(&web, &retry.str("refresh_token"), None).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    h.finish().await;
}

/// A client's secret rotated while its refresh waited for the token's
/// row: the rotation of the refresh token commits, then the token
/// endpoint sees the client changed and refuses (`invalid_client`). The
/// rotation is taken back, so the client's retry with its new secret goes
/// on with the session. Before, only a 5xx took a rotation back, and the
/// retry was reuse: the session ended. PostgreSQL (the token's row is
/// held; on SQLite the write lock would hold the secret's rotation too).
#[tokio::test]
async fn a_refresh_refused_for_a_secret_rotated_meanwhile_leaves_the_token_live() {
    use tessera_server::store::audit::InChange;
    use tessera_server::store::clients::{self, GrantType};
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    h.user("alice", "correct horse", "read").await;
    let (id, secret) = h
        .client(&[GrantType::Password, GrantType::RefreshToken], "read")
        .await;
    let login = h
        .post(
            "/oauth2/token",
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "correct horse"),
                ("scope", "read"),
            ],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let first = login.str("refresh_token");
    let refresh = |secret: String| {
        let (h, id, first) = (&h, id.clone(), first.clone());
        async move {
            h.post(
                "/oauth2/token",
                &[("grant_type", "refresh_token"), ("refresh_token", &first)],
                Some((&id, &secret)),
            )
            .await
        }
    };
    let pool = sqlx::PgPool::connect(&h.test_db.url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT token_hash FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE")
        .bind(token_digest(&first))
        .execute(&mut *holder)
        .await
        .unwrap();
    let (refused, new_secret) = tokio::join!(refresh(secret.clone()), async {
        // The refresh has authenticated its client and waits for the row.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let new_secret = clients::rotate_secret(&h.db, &id, crate::KEEP, InChange::none())
            .await
            .unwrap();
        h.app.access.revoked().sync(&h.db).await.unwrap();
        holder.commit().await.unwrap();
        new_secret
    });
    pool.close().await;
    assert_eq!(refused.json["error"], "invalid_client", "{}", refused.text);
    let retry = refresh(new_secret.to_string()).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    h.finish().await;
}

/// A take-back that comes after the session was revoked (a retry that
/// came first was reuse) changes nothing: the presented token stays used.
async fn a_rotation_of_a_revoked_session_is_not_taken_back(backend: Backend) {
    use tessera_server::store::refresh;
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (web, _, first) = logged_in(&h).await;
    let family = refresh::lookup(&h.db, &first)
        .await
        .unwrap()
        .unwrap()
        .family;
    let rotated = h.refresh(&web, &first, None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let successor = rotated.str("refresh_token");
    refresh::revoke_family(&h.db, &family.id, "reuse detected")
        .await
        .unwrap();
    let taken = refresh::take_back(&h.db, &token_digest(&first), &token_digest(&successor))
        .await
        .unwrap();
    assert_eq!(taken, None);
    assert!(refresh::lookup(&h.db, &first).await.unwrap().is_none());
    assert_eq!(h.refresh(&web, &first, None).await.error(), "invalid_grant");
    // Nor is a successor that was used.
    let first = h
        .login(&web, "alice", "correct horse")
        .await
        .str("refresh_token");
    let successor = h.refresh(&web, &first, None).await.str("refresh_token");
    let next = h.refresh(&web, &successor, None).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    let taken = refresh::take_back(&h.db, &token_digest(&first), &token_digest(&successor))
        .await
        .unwrap();
    assert_eq!(taken, None);
    assert!(refresh::lookup(&h.db, &first).await.unwrap().is_none());
    h.finish().await;
}

crate::both_backends!(
    a_refresh_whose_answer_failed_can_be_retried,
    a_jwt_bearer_grant_whose_answer_failed_can_be_retried,
    a_rotation_of_a_revoked_session_is_not_taken_back,
    a_refresh_dropped_before_it_answered_is_taken_back,
    a_refresh_dropped_while_it_rotates_leaves_the_token_live,
    a_take_back_the_database_refused_at_first_is_tried_again,
    an_instance_that_cannot_read_the_keys_again_says_so,
    an_unknown_revocation_kind_stops_the_instance_that_cannot_read_it,
    a_start_refuses_a_schema_a_newer_version_made,
    a_named_master_key_file_that_is_missing_is_not_made,
    a_start_without_its_master_key_changes_nothing,
    instances_set_up_at_once_with_different_master_keys_cannot_split_the_keys
);

/// A PostgreSQL cluster of the test's own (initdb + pg_ctl in a temporary
/// directory, on a free port), which the test may stop and start. Never
/// the shared server. As root, the tools run as the `postgres` user.
struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnCluster {
    fn start() -> Option<OwnCluster> {
        if std::env::var("TESSERA_TEST_DATABASE_URL").is_err() {
            eprintln!("skipped: PostgreSQL outage test (set TESSERA_TEST_DATABASE_URL to run it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = OwnCluster { dir, port };
        if cluster.is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = cluster.data();
        let init = cluster
            .tool("initdb")
            .args(["-U", "postgres", "--auth=trust", "-D", &data])
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        cluster.pg_ctl("start");
        Some(cluster)
    }

    fn is_root_now() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    fn is_root(&self) -> bool {
        OwnCluster::is_root_now()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `initdb` and `pg_ctl` live in the server's own directory (Debian:
    /// /usr/lib/postgresql/N/bin), which `pg_config --bindir` names.
    fn tool(&self, name: &str) -> Command {
        let program = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join(name))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name));
        if self.is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut command = self.tool("pg_ctl");
        command.args(["-D", &self.data(), "-w", "-o", &options]);
        match action {
            "stop" => command.args(["-m", "immediate", "stop"]),
            _ => command.args(["-l", &format!("{}/log", self.dir.path().display()), "start"]),
        };
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// PostgreSQL stops: what needs it is answered 503 with Retry-After within
/// about a second, `/readyz` says so within a second, a client in the
/// cache gets no token once this instance's copy of the revocation log is
/// no longer current (it could lack a rotation of the client's secret),
/// audit events that could not be written wait in memory and are written
/// once it is back, and everything works again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_is_answered_at_once_and_heals() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let test_db = TestDb {
        url: cluster.url(),
        dir: tempfile::tempdir().unwrap(),
        schema: None,
    };
    let h = Harness::on(test_db, |_| {}).await;
    let (id, secret) = h
        .client(
            &[tessera_server::store::clients::GrantType::ClientCredentials],
            "read",
        )
        .await;
    let public = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let issue = || h.client_credentials(&id, &secret);
    assert_eq!(issue().await.status, StatusCode::OK);
    // The public client is cached too.
    assert_eq!(
        h.login(&public, "alice", "correct horse").await.status,
        StatusCode::OK
    );

    cluster.pg_ctl("stop");
    let started = std::time::Instant::now();
    let ready = h.get("/readyz").await;
    let ready_took = started.elapsed();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready_took < Duration::from_millis(1500),
        "/readyz took {ready_took:?}"
    );

    let started = std::time::Instant::now();
    let login = h.login(&public, "alice", "correct horse").await;
    let login_took = started.elapsed();
    assert_eq!(
        login.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        login.text
    );
    assert!(login.headers.contains_key("retry-after"));
    assert!(
        login_took < Duration::from_millis(2500),
        "login took {login_took:?}"
    );

    // The cached client: its secret may have been rotated through another
    // instance, which this one cannot read now. Requests that arrive
    // together wait for one failed reading of the log, not one each.
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all((0..6).map(|_| issue())).await;
    let took = started.elapsed();
    for r in &answers {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert!(r.headers.contains_key("retry-after"));
    }
    assert!(
        took < Duration::from_millis(3500),
        "six requests took {took:?}"
    );
    // Events that cannot be written wait in memory (of a kind nothing
    // else here writes).
    let during = 5;
    for i in 0..during {
        h.app.audit.push(
            tessera_server::store::audit::Event::new("backup_written").subject(i.to_string()),
        );
    }
    assert!(h.app.audit.pending() >= during);

    cluster.pg_ctl("start");
    let mut healed = false;
    for _ in 0..100 {
        if h.login(&public, "alice", "correct horse").await.status == StatusCode::OK {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "no recovery without a restart");
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(issue().await.status, StatusCode::OK);
    // Every event of the outage, none lost.
    let mut stored = 0;
    for _ in 0..150 {
        stored = tessera_server::store::audit::recent(&h.db, Some("backup_written"), 1000)
            .await
            .map(|events| events.len())
            .unwrap_or(0);
        if stored >= during {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, during, "audit events lost in the outage");
    h.db.close().await;
}

/// A TCP proxy to `target` that waits `delay` before it connects each
/// client: a database a few network round trips and a TLS handshake away.
async fn slow_proxy(target: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    address
}

/// The address of the PostgreSQL server `test_db` connects to.
async fn database_address(test_db: &TestDb) -> std::net::SocketAddr {
    let url = url::Url::parse(&test_db.url).unwrap();
    let target = (url.host_str().unwrap(), url.port().unwrap_or(5432));
    let address = tokio::net::lookup_host(target)
        .await
        .unwrap()
        .next()
        .unwrap();
    address
}

/// Have `test_db` connect through `proxy` instead.
fn connect_through(test_db: &mut TestDb, proxy: std::net::SocketAddr) {
    let mut url = url::Url::parse(&test_db.url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port())).unwrap();
    test_db.url = url.to_string();
}

/// The two directions of a proxied connection: what the client sends, to
/// the server, and what the server sends, to the client.
type Directions = (
    (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    ),
    (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    ),
);

/// A TCP proxy on a port of its own to `target`: `relay` gets the two
/// directions of each connection (and spawns what carries them).
async fn proxy_to(
    target: std::net::SocketAddr,
    mut relay: impl FnMut(Directions) + Send + 'static,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            relay(((client_read, server_write), (server_read, client_write)));
        }
    });
    address
}

/// What a [`switched_proxy`] does with what either side sends while it
/// is switched on; nothing is closed, and no error comes.
#[derive(Clone, Copy)]
enum WhileOn {
    /// Held, and sent on once it is switched off (a failover, or a network
    /// cut that sends no reset, that heals).
    Hold,
    /// Thrown away (a host gone, a NAT that dropped its state): a statement
    /// whose answer was thrown away is never answered on that connection.
    Drop,
}

/// A TCP proxy to `target` with a switch, doing `mode` while it is on.
async fn switched_proxy(
    target: std::net::SocketAddr,
    mode: WhileOn,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (on, _) = tokio::sync::watch::channel(false);
    let switch = on.clone();
    let address = proxy_to(target, move |(up, down)| {
        for (mut from, mut to) in [up, down] {
            let mut on = on.subscribe();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    let n = match from.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let send = match mode {
                        WhileOn::Hold => {
                            if on.wait_for(|on| !on).await.is_err() {
                                break;
                            }
                            true
                        }
                        WhileOn::Drop => !*on.borrow(),
                    };
                    if send && to.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = to.shutdown().await;
            });
        }
    })
    .await;
    (address, switch)
}

/// The authorization code writer, one task that stores and spends every
/// code, gives up on a statement whose answer the network lost
/// (`db::BACKGROUND_TIMEOUT`): the code's caller is told it failed, and
/// the next codes are stored on another connection. Before, the task
/// waited on the dead connection for ever, and no one could sign in on
/// that instance until it was restarted (its `/readyz` said ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_code_writer_gives_up_on_an_answer_the_network_lost() {
    use tessera_server::store::codes::CodeWriter;
    let Some(mut test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (proxy, cut) = switched_proxy(database_address(&test_db).await, WhileOn::Drop).await;
    connect_through(&mut test_db, proxy);
    let h = Harness::on(test_db, |_| {}).await;
    let user = h.user("alice", "correct horse", "openid").await;
    let client = h.public_client("openid").await;
    let sid = crate::store::live_session(&h, &user).await;
    let writer = CodeWriter::start(h.db.clone());
    let grant = |i| crate::store::grant(&client, &user, &sid, i);
    assert!(writer.issue(&grant(0), None).await.unwrap().is_some());
    // A code's insert that takes two seconds; its answer is lost in the
    // second of them.
    slow_inserts(&h, "authorization_codes").await;
    let lost = tokio::spawn({
        let (writer, grant) = (writer.clone(), grant(1));
        async move { writer.issue(&grant, None).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    cut.send_replace(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut.send_replace(false);
    h.execute("DROP TRIGGER slowly ON authorization_codes", &[])
        .await;
    let bound = tessera_server::db::BACKGROUND_TIMEOUT + Duration::from_secs(10);
    let answer = tokio::time::timeout(bound, lost)
        .await
        .expect("the code writer waited for an answer that never comes")
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
    assert!(writer.issue(&grant(2), None).await.unwrap().is_some());
    h.finish().await;
}

/// Every insert into `table` takes two seconds (PostgreSQL: the trigger
/// `slowly`, dropped with `DROP TRIGGER slowly ON table`).
async fn slow_inserts(h: &Harness, table: &str) {
    h.execute(
        "CREATE FUNCTION slowly() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$",
        &[],
    )
    .await;
    h.execute(
        &format!(
            "CREATE TRIGGER slowly BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION slowly()"
        ),
        &[],
    )
    .await;
}

/// The audit writer at shutdown, a write of its in flight and PostgreSQL
/// answering no more (nothing closed): it stops within its grace (10 s)
/// and what it could not write is in the log. Before, the write in
/// flight kept its own 35 s, a backoff and then the grace came after it,
/// and the supervisor's kill, on the 20 s the docs give the writer, took
/// every event queued without a word.
#[tokio::test]
async fn the_audit_writer_stops_within_its_grace_when_a_write_hangs() {
    use tessera_server::store::audit;
    let Some(mut test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (proxy, frozen) = switched_proxy(database_address(&test_db).await, WhileOn::Hold).await;
    connect_through(&mut test_db, proxy);
    let h = Harness::on(test_db, |_| {}).await;
    // An insert that takes two seconds: the database stops answering in
    // the middle of it.
    slow_inserts(&h, "audit_log").await;
    let (logged, _logging) = crate::Logged::capture();
    let (queue, writer) = audit::AuditQueue::start(h.db.clone());
    queue.push(audit::Event::new("token_issued").subject("held-at-shutdown".to_owned()));
    drop(queue);
    // Its write is in flight, in the trigger's sleep, when the answers
    // stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    frozen.send_replace(true);
    tokio::time::timeout(Duration::from_secs(20), writer.finish())
        .await
        .expect("the audit writer outlived its grace");
    let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("audit event not stored") && l.contains("held-at-shutdown")),
        "{text}"
    );
    frozen.send_replace(false);
    h.execute("DROP TRIGGER slowly ON audit_log", &[]).await;
    h.finish().await;
}

/// PostgreSQL stops answering, in the middle of a statement or between
/// two, without closing anything: the token endpoint answers 503 within
/// the revocation log's read timeout, and `/readyz` within a second.
/// Before, a token request waited for a reading of the log the database
/// did not finish (until TCP gave up on its connection, a quarter of an
/// hour, for a silent network), and every other token request behind it.
/// Answering again, everything works without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_stops_answering_is_not_waited_for() {
    let Some(mut test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (proxy, frozen) = switched_proxy(database_address(&test_db).await, WhileOn::Hold).await;
    connect_through(&mut test_db, proxy);
    let h = Harness::on(test_db, |_| {}).await;
    let (id, secret) = h
        .client(
            &[tessera_server::store::clients::GrantType::ClientCredentials],
            "read",
        )
        .await;
    let issue = || h.client_credentials(&id, &secret);
    assert_eq!(issue().await.status, StatusCode::OK);

    // A reading of the log the database does not finish (the table
    // behind a view that waits a minute: a connection that went silent
    // in the middle of a statement looks the same from here).
    h.execute(
        "ALTER TABLE revocation_events RENAME TO revocation_events_held",
        &[],
    )
    .await;
    h.execute(
        "CREATE FUNCTION stall() RETURNS BOOLEAN LANGUAGE sql VOLATILE \
         AS 'SELECT pg_sleep(60); SELECT TRUE'",
        &[],
    )
    .await;
    h.execute(
        "CREATE VIEW revocation_events AS SELECT e.* FROM revocation_events_held e, \
         (SELECT stall()) AS s(ok) WHERE s.ok",
        &[],
    )
    .await;
    tokio::time::sleep(tessera_server::store::revocation::TRUSTED_FOR).await;
    let bound = tessera_server::store::revocation::READ_TIMEOUT + Duration::from_secs(5);
    let answers = tokio::time::timeout(
        bound,
        futures_util::future::join_all((0..3).map(|_| issue())),
    )
    .await
    .expect("token requests waited for a reading the database does not finish");
    for answer in answers {
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text
        );
    }
    let ready = tokio::time::timeout(Duration::from_secs(3), h.get("/readyz"))
        .await
        .expect("/readyz waited for a reading the database does not finish");
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    // The readings given up on still run there (the stalls hold the
    // view): ended, as their statements would be by a timeout there.
    h.execute(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
         WHERE wait_event = 'PgSleep' AND query LIKE '%revocation_events%'",
        &[],
    )
    .await;
    h.execute("DROP VIEW revocation_events", &[]).await;
    h.execute(
        "ALTER TABLE revocation_events_held RENAME TO revocation_events",
        &[],
    )
    .await;
    assert_eq!(issue().await.status, StatusCode::OK);

    // The network goes silent between statements.
    frozen.send_replace(true);
    // Past the time a copy of the log counts as current.
    tokio::time::sleep(tessera_server::store::revocation::TRUSTED_FOR).await;
    let bound = tessera_server::store::revocation::READ_TIMEOUT + Duration::from_secs(5);
    let answered = tokio::time::timeout(bound, issue()).await;
    let answer = answered.expect("a token request waited for a database that does not answer");
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    assert!(answer.headers.contains_key("retry-after"));
    let ready = tokio::time::timeout(Duration::from_secs(3), h.get("/readyz"))
        .await
        .expect("/readyz waited for a database that does not answer");
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);

    frozen.send_replace(false);
    let mut healed = false;
    for _ in 0..100 {
        if issue().await.status == StatusCode::OK {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "no recovery without a restart");
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    h.finish().await;
}

/// Opening a pool of sixteen connections that take 150 ms each to make
/// (2.4 s one after another) starts: the start is not held to the 1 s a
/// request waits for a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_slow_to_connect_to_still_starts() {
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let url = url::Url::parse(&test_db.url).unwrap();
    let target = (url.host_str().unwrap(), url.port().unwrap_or(5432));
    let target = tokio::net::lookup_host(target)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = slow_proxy(target, Duration::from_millis(150)).await;
    let mut slow = url.clone();
    slow.set_host(Some("127.0.0.1")).unwrap();
    slow.set_port(Some(proxy.port())).unwrap();
    let db = Db::connect(slow.as_str(), 16)
        .await
        .expect("a slow database stopped the start");
    let stored = tessera_server::store::revocation::longest_access_ttl(&db).await;
    assert!(stored.is_ok(), "{stored:?}");
    db.close().await;
    test_db.cleanup().await;
}

/// A server and an admin command started at once on a new SQLite file
/// both migrate it; neither fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_at_once_on_a_new_sqlite_database_both_succeed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let (a, b) = tokio::join!(Db::connect(&url, 2), Db::connect(&url, 2));
        for db in [a, b] {
            let db = db.unwrap_or_else(|e| panic!("round {round}: {e}"));
            db.close().await;
        }
        // A lock file this user may only read (another user's: an admin
        // command run as root) still serves.
        #[cfg(unix)]
        if round == 0 {
            use std::os::unix::fs::PermissionsExt;
            let lock = dir.path().join("tessera.db-migrate.lock");
            std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o400)).unwrap();
            Db::connect(&url, 2).await.unwrap().close().await;
        }
    }
}

/// A write transaction on SQLite takes the write lock at its start: a
/// write by another process (an admin command) meanwhile waits for it,
/// instead of making the transaction's own write, after a read, fail at
/// once with `SQLITE_BUSY` (a deferred `BEGIN` cannot upgrade a read
/// snapshot another writer has overtaken).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_write_transaction_is_not_overtaken_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
    let db = Db::connect(&url, 2).await.unwrap();
    let other = Db::connect(&url, 2).await.unwrap();
    let tessera_server::db::Pool::Sqlite(writer) = db.write() else {
        unreachable!("a SQLite database")
    };
    let mut tx = writer.begin_with(db.begin_write()).await.unwrap();
    let before: (i64,) = sqlx::query_as("SELECT count(*) FROM users")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let meanwhile = tokio::spawn(async move {
        users::add(
            &other,
            "bob",
            "not-a-hash",
            &Scopes::default(),
            &users::Profile::default(),
            tessera_server::store::audit::InChange::none(),
        )
        .await?;
        Ok::<_, Error>(other)
    });
    // Time for the other write to get in first, were it let in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, scopes, created_at, updated_at) \
         VALUES ('a', 'alice', 'not-a-hash', '', 0, 0)",
    )
    .execute(&mut *tx)
    .await
    .expect("the transaction's write, after its read");
    tx.commit().await.unwrap();
    let other = meanwhile
        .await
        .unwrap()
        .expect("the other process's write, after it");
    let after: (i64,) = sqlx::query_as("SELECT count(*) FROM users")
        .fetch_one(writer)
        .await
        .unwrap();
    assert_eq!(after.0, before.0 + 2);
    other.close().await;
    db.close().await;
}

/// The stores count on read committed (a statement that waited for a row
/// lock sees what the other transaction committed): it holds whatever the
/// role, the database or the URL make the default.
#[tokio::test]
async fn postgres_transactions_are_read_committed_whatever_the_default() {
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let url = format!(
        "{}%20-c%20default_transaction_isolation%3Dserializable",
        test_db.url
    );
    let db = Db::connect(&url, 2).await.unwrap();
    let tessera_server::db::Pool::Postgres(pool) = db.write() else {
        unreachable!("a PostgreSQL database")
    };
    let mut tx = pool.begin_with(db.begin_write()).await.unwrap();
    let (level,): (String,) = sqlx::query_as("SHOW transaction_isolation")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(level, "read committed");
    tx.rollback().await.unwrap();
    db.close().await;
    test_db.cleanup().await;
}

/// A commit is answered once it is durable: `synchronous_commit` is at
/// least `on` for the server's connections whatever the role, the
/// database or the URL make the default (`off` is a common tuning, and
/// loses commits already answered when PostgreSQL crashes or fails
/// over), and a stronger `remote_apply` is kept (before, every connection
/// was set to `on`, which lowered it).
#[tokio::test]
async fn postgres_commits_are_synchronous_whatever_the_default() {
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    for (default, used) in [
        ("off", "on"),
        ("local", "on"),
        ("remote_write", "on"),
        ("on", "on"),
        ("remote_apply", "remote_apply"),
    ] {
        let url = format!("{}%20-c%20synchronous_commit%3D{default}", test_db.url);
        let db = Db::connect(&url, 2).await.unwrap();
        let tessera_server::db::Pool::Postgres(pool) = db.write() else {
            unreachable!("a PostgreSQL database")
        };
        // Every connection of the pool, not only the first one.
        let mut held = vec![pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
        for conn in &mut held {
            let (setting,): (String,) = sqlx::query_as("SHOW synchronous_commit")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(setting, used, "by default {default}");
        }
        drop(held);
        db.close().await;
    }
    test_db.cleanup().await;
}

/// No statement of the server's runs past
/// `db::POSTGRES_STATEMENT_TIMEOUT`, whatever the role's, the database's
/// or the URL's default; one stopped by it is answered as unavailable
/// (503), as a lock waited for too long is.
#[tokio::test]
async fn postgres_statements_end_at_the_servers_timeout_as_unavailable() {
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let url = format!("{}%20-c%20statement_timeout%3D0", test_db.url);
    let db = Db::connect(&url, 2).await.unwrap();
    let tessera_server::db::Pool::Postgres(pool) = db.write() else {
        unreachable!("a PostgreSQL database")
    };
    let (limit,): (String,) = sqlx::query_as("SHOW statement_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    let expected = format!(
        "{}s",
        tessera_server::db::POSTGRES_STATEMENT_TIMEOUT.as_secs()
    );
    assert_eq!(limit, expected);
    // Shortened here, to see what a statement past it gives.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 50")
        .execute(&mut *tx)
        .await
        .unwrap();
    let stopped = sqlx::query("SELECT pg_sleep(5)")
        .execute(&mut *tx)
        .await
        .expect_err("stopped at the timeout");
    let stopped = tessera_server::Error::from(stopped);
    assert!(stopped.is_transient(), "{stopped}");
    drop(tx);
    db.close().await;
    // The command line's administrative commands get longer: a change
    // that reaches every row of a big client is made there.
    let commands = Db::open_for_commands(&url, 1, tessera_server::db::Schema::Current)
        .await
        .unwrap();
    let tessera_server::db::Pool::Postgres(pool) = commands.write() else {
        unreachable!("a PostgreSQL database")
    };
    let (longer,): (String,) = sqlx::query_as("SHOW statement_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        (
            longer.as_str(),
            tessera_server::db::POSTGRES_COMMAND_STATEMENT_TIMEOUT.as_secs()
        ),
        ("10min", 600)
    );
    commands.close().await;
    test_db.cleanup().await;
}

/// After a key revocation, token requests wait for the keys to be read
/// again; when that reading fails (the table held by another session,
/// the database stopped answering), the requests that waited for it take
/// its failure at once, rather than each try again in turn, five seconds
/// each, until the listener gave them all up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_waiting_for_the_keys_share_a_failed_reading() {
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(&h.test_db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE signing_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let keys = &h.app.keys;
    keys.heard_of_revocation();
    let before = keys.catch_up_readings();
    let answers = futures_util::future::join_all((0..5).map(|_| keys.caught_up())).await;
    for answer in &answers {
        let Err(e) = answer else {
            panic!("caught up while the keys could not be read");
        };
        assert!(e.is_transient(), "{e}");
    }
    assert_eq!(keys.catch_up_readings() - before, 1, "one reading for all");
    // Free again: the next request reads the keys, and signing goes on.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    keys.caught_up().await.unwrap();
    assert_eq!(keys.catch_up_readings() - before, 2);
    h.finish().await;
}

/// A PostgreSQL database of the test's own on the shared server (locks
/// such as the revocation log's are per database: one held by a test
/// must not stop the others), dropped at the end.
struct OwnDatabase {
    base: String,
    name: String,
    url: String,
}

impl OwnDatabase {
    async fn create() -> Option<OwnDatabase> {
        let Ok(base) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
            eprintln!("skipped: PostgreSQL lock test (set TESSERA_TEST_DATABASE_URL to run it)");
            return None;
        };
        let name = format!(
            "t_{}",
            random_token()
                .unwrap()
                .to_lowercase()
                .replace(['-', '_'], "x")
        );
        let admin = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        Some(OwnDatabase {
            base,
            url: url.to_string(),
            name,
        })
    }

    async fn drop_it(self) {
        let admin = sqlx::PgPool::connect(&self.base).await.unwrap();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    }
}

/// An instance whose host vanished in the middle of a revocation (cut
/// off, not killed: PostgreSQL keeps its backend, and the revocation
/// log's lock, until TCP gives up, two hours later by default). Another
/// instance's revocation is refused as unavailable after a bounded wait
/// (it waited without end, and so did every revocation after it, each
/// keeping a connection), and PostgreSQL ends the vanished transaction
/// soon, after which revocations work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_left_by_a_vanished_instance_is_waited_for_briefly_and_freed() {
    let Some(own) = OwnDatabase::create().await else {
        return;
    };
    let test_db = TestDb {
        url: own.url.clone(),
        dir: tempfile::tempdir().unwrap(),
        schema: None,
    };
    let h = Harness::on(test_db, |_| {}).await;
    h.user("alice", "correct horse", "read").await;
    h.user("bob", "correct horse", "read").await;
    // The vanished instance: a connection of the same configuration, in
    // the middle of an append to the log, never heard from again (taken
    // out of the pool and left open).
    let tessera_server::db::Pool::Postgres(pool) = h.db.write() else {
        unreachable!("a PostgreSQL database")
    };
    let mut vanished = pool.acquire().await.unwrap().detach();
    sqlx::query("BEGIN").execute(&mut vanished).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(7368756)")
        .execute(&mut vanished)
        .await
        .unwrap();

    let waited = std::time::Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        users::set_disabled(
            &h.db,
            "alice",
            true,
            crate::KEEP,
            tessera_server::store::audit::InChange::none(),
        ),
    )
    .await
    .expect("a revocation waited for the vanished instance's lock without end");
    let Err(e) = refused else {
        panic!("a revocation went through while another held the log's lock");
    };
    assert!(e.is_transient(), "not answered as unavailable: {e}");
    assert!(
        waited.elapsed() >= tessera_server::db::POSTGRES_LOCK_TIMEOUT,
        "refused before it waited: {e}"
    );
    // Nothing of it was kept: alice is not disabled.
    let alice = users::find(&h.db, "alice").await.unwrap().unwrap();
    assert!(!alice.disabled);

    // PostgreSQL ends the idle transaction, and the lock with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match users::set_disabled(
            &h.db,
            "bob",
            true,
            crate::KEEP,
            tessera_server::store::audit::InChange::none(),
        )
        .await
        {
            Ok(()) => break,
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the vanished instance's lock was never freed: {e}"),
        }
    }
    assert!(users::find(&h.db, "bob").await.unwrap().unwrap().disabled);
    // The vanished session was ended, its transaction with it.
    assert!(sqlx::query("SELECT 1")
        .execute(&mut vanished)
        .await
        .is_err());
    h.db.close().await;
    own.drop_it().await;
}

/// A start waits a bounded time for the migrations' lock (another start
/// migrating, or one whose host vanished while it did), then fails saying
/// so; it waited without end and without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_waits_for_the_migrations_lock_a_bounded_time() {
    use sqlx::migrate::Migrate;
    use sqlx::Connection;
    let Some(own) = OwnDatabase::create().await else {
        return;
    };
    Db::connect(&own.url, 1).await.unwrap().close().await;
    let mut holder = sqlx::PgConnection::connect(&own.url).await.unwrap();
    holder.lock().await.unwrap();
    let waited = std::time::Instant::now();
    let start = tokio::time::timeout(Duration::from_secs(90), Db::connect(&own.url, 1))
        .await
        .expect("a start waited for the migrations' lock without end");
    let Err(e) = start else {
        panic!("a start migrated while another held the migrations' lock");
    };
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("migrations' lock"), "{e}");
    assert!(waited.elapsed() >= tessera_server::db::POSTGRES_MIGRATION_LOCK_WAIT);
    holder.unlock().await.unwrap();
    holder.close().await.unwrap();
    // Free again, it starts.
    Db::connect(&own.url, 1).await.unwrap().close().await;
    own.drop_it().await;
}

/// A migration whose table another session holds (a `pg_dump`, a long
/// transaction) waits 20 s for it, then stops the start, saying why: not
/// the database's or role's `lock_timeout` (set here to 100 ms), which
/// would stop it at once, nor without end. Once the table is free, the
/// next start applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_waits_a_bounded_time_for_a_table_another_session_holds() {
    use sqlx::Connection;
    let Some(own) = OwnDatabase::create().await else {
        return;
    };
    let db = Db::connect(&own.url, 1).await.unwrap();
    let tessera_server::db::Pool::Postgres(pool) = db.write() else {
        unreachable!("a PostgreSQL database")
    };
    // Back to before migration 14, which indexes authorization_codes.
    for undo in [
        "DROP INDEX authorization_codes_client",
        "DROP INDEX authorization_codes_user",
        "DROP TABLE server_issuer",
        "DROP TABLE server_key_settings",
        "DROP TABLE audit_batches",
        "DELETE FROM _sqlx_migrations WHERE version >= 14",
    ] {
        sqlx::query(undo).execute(pool).await.unwrap();
    }
    let name = &own.name;
    sqlx::query(&format!("ALTER DATABASE {name} SET lock_timeout = '100ms'"))
        .execute(pool)
        .await
        .unwrap();
    db.close().await;
    let mut holder = sqlx::PgConnection::connect(&own.url).await.unwrap();
    let mut holding = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE authorization_codes IN ROW EXCLUSIVE MODE")
        .execute(&mut *holding)
        .await
        .unwrap();
    let waited = std::time::Instant::now();
    let start = tokio::time::timeout(Duration::from_secs(90), Db::connect(&own.url, 1))
        .await
        .expect("a migration waited for a table without end");
    let Err(e) = start else {
        panic!("a migration ran while another session held its table");
    };
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("migration 14 waited"), "{e}");
    assert!(waited.elapsed() >= tessera_server::db::POSTGRES_MIGRATION_LOCK_WAIT);
    holding.rollback().await.unwrap();
    holder.close().await.unwrap();
    let db = Db::connect(&own.url, 1).await.unwrap();
    let tessera_server::db::Pool::Postgres(pool) = db.write() else {
        unreachable!("a PostgreSQL database")
    };
    let (applied,): (i64,) = sqlx::query_as("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(applied >= 15);
    db.close().await;
    own.drop_it().await;
}

/// On PostgreSQL too, only the server's start migrates: an admin
/// command's opening (`Schema::Current`) refuses a schema older than its
/// own, saying so, and changes nothing; a backup's (`Schema::AsIs`)
/// takes it as it is; a migration marked failed is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_openings_leave_an_older_postgres_schema_alone() {
    use tessera_server::db::Schema;
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 1).await.unwrap();
    let tessera_server::db::Pool::Postgres(pool) = db.write() else {
        unreachable!("a PostgreSQL database")
    };
    let versions = || async {
        let rows: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .unwrap();
        rows
    };
    let all = versions().await;
    let (last, _) = *all.last().unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(last)
        .execute(pool)
        .await
        .unwrap();
    let older = versions().await;
    let err = Db::open(&test_db.url, 1, Schema::Current)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("older than this tessera's"),
        "{err}"
    );
    assert_eq!(versions().await, older, "an admin command migrated");
    Db::open(&test_db.url, 1, Schema::AsIs)
        .await
        .expect("a backup's opening refused the schema")
        .close()
        .await;
    assert_eq!(versions().await, older);
    // A migration that failed part-way is named, not taken for an older
    // schema.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'failed part-way', false, '\\x00', 0)",
    )
    .bind(last)
    .execute(pool)
    .await
    .unwrap();
    let err = Db::open(&test_db.url, 1, Schema::Current)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed part-way"), "{err}");
    db.close().await;
    test_db.cleanup().await;
}

/// While the audit trail is not being written (a full disk) and its
/// backlog is past its bound, the login page answers 503 before it checks
/// a password, as the token endpoint does: each failed login's event
/// would wait in memory, as many as attempts came. Once the events are
/// written, it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_login_page_waits_while_the_audit_trail_is_not_written() {
    use axum::body::Body;
    use axum::http::{header, Request};
    use tessera_server::store::clients::{self, GrantType, NewClient};
    let Some(disk) = SmallDisk::mount("64m") else {
        return;
    };
    let url = format!("sqlite://{}", disk.path().join("tessera.db").display());
    let h = on_disk(&disk, &url).await;
    h.user("alice", "correct horse", "openid").await;
    let redirect = "https://app.example.com/cb";
    let client = clients::add(
        &h.db,
        NewClient {
            name: "Shop".into(),
            grants: vec![GrantType::AuthorizationCode],
            scopes: Scopes::parse("openid").unwrap(),
            redirect_uris: vec![redirect.into()],
            public: true,
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .client_id;
    let authorize = format!(
        "/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}&scope=openid\
         &state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
         &code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let to_login = h.get(&authorize).await;
    let cookie = to_login.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let login = to_login.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let page = h
        .send(
            Request::get(&login)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let hidden = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = page.text.find(&marker).unwrap() + marker.len();
        page.text[start..].split('"').next().unwrap().to_owned()
    };
    let form = format!(
        "request={}&csrf_token={}&username=alice&password=wrong",
        hidden("request"),
        hidden("csrf_token")
    );
    let post = || {
        h.send(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, &cookie)
                .body(Body::from(form.clone()))
                .unwrap(),
        )
    };
    assert_eq!(
        post().await.status,
        StatusCode::OK,
        "a wrong password's page"
    );

    let filler = disk.fill();
    let backlog = tessera_server::store::audit::MAX_BACKLOG;
    for _ in 0..=backlog {
        h.app
            .audit
            .push(tessera_server::store::audit::Event::new("backup_written"));
    }
    assert!(!h.app.audit.accepting());
    let refused = post().await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert!(refused.headers.contains_key(header::RETRY_AFTER));

    // Space returns, the events are written, and the page answers again.
    std::fs::remove_file(filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !h.app.audit.accepting() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(post().await.status, StatusCode::OK);
}

/// A password login whose answer failed after its refresh family was
/// started (the same fault) leaves no live family behind: no one holds
/// its token, and the retry starts another.
async fn a_login_whose_answer_failed_leaves_no_family(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let web = h.public_client("read").await;
    let alice = h.user("alice", "correct horse", "read").await;
    h.cut_beyond_the_wait(&alice).await;
    let failed = h.login(&web, "alice", "correct horse").await;
    assert_eq!(
        failed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        failed.text
    );
    let live = h
        .count(
            "SELECT COUNT(*) FROM refresh_families WHERE revoked_at IS NULL",
            &[],
        )
        .await;
    assert_eq!(live, 0);
    let revoked = h
        .count(
            "SELECT COUNT(*) FROM refresh_families WHERE revoked_reason = $1",
            &[tessera_server::grant::password::UNANSWERED],
        )
        .await;
    assert_eq!(revoked, 1);
    wait_for_audit(&h, "login_family_revoked", 1).await;
    h.finish().await;
}

crate::both_backends!(a_login_whose_answer_failed_leaves_no_family);

/// An admin change is written with its audit event, in one transaction:
/// when the event cannot be written, the change is not made either (and
/// the caller hears of it). Written after the commit, as it was, a
/// failure there (a full disk, a killed process, a request dropped in
/// between) left a change no trail told of.
async fn an_admin_change_without_its_audit_event_is_not_made(backend: Backend) {
    use tessera_server::admin::{Actor, AdminService, ClientRequest};
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let alice = h.user("alice", "correct horse", "read").await;
    let policy = tessera_server::store::sessions::SessionPolicy {
        idle: 3600,
        absolute: 3600,
    };
    let sid = h.start_session(&alice, policy).await.1.sid;
    let admin = AdminService {
        db: &h.db,
        passwords: &h.app.passwords,
        config: &h.app.config,
        clients: None,
        revocations: None,
        actor: Actor::Cli {
            os_user: "ops".into(),
        },
    };
    // Made and recorded together: the event is there when it answers,
    // saying whose session it was and which, as a logout's does.
    let sid2 = h.start_session(&alice, policy).await.1.sid;
    admin.end_session(&sid2).await.unwrap();
    let ended = tessera_server::store::audit::recent(&h.db, Some("session_ended"), 10)
        .await
        .unwrap();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].subject.as_deref(), Some(alice.as_str()));
    assert!(
        ended[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(&format!("sid={sid2}"))),
        "{ended:?}"
    );
    let keys_before = h.count("SELECT COUNT(*) FROM signing_keys", &[]).await;

    h.refuse("refuse_audit", "BEFORE INSERT ON audit_log").await;
    assert!(admin.end_session(&sid).await.is_err());
    assert!(
        tessera_server::store::sessions::by_sid(&h.db, &sid)
            .await
            .unwrap()
            .is_some(),
        "ended without its event"
    );
    let disabled = "SELECT COUNT(*) FROM users WHERE username = 'alice' AND disabled";
    assert!(admin.set_disabled("alice", true).await.is_err());
    assert_eq!(
        h.count(disabled, &[]).await,
        0,
        "disabled without its event"
    );
    assert!(admin.delete_user("alice").await.is_err());
    assert_eq!(
        h.count("SELECT COUNT(*) FROM users WHERE username = 'alice'", &[])
            .await,
        1,
        "deleted without its event"
    );
    let request = ClientRequest {
        name: "unrecorded".into(),
        grants: vec!["client_credentials".into()],
        scopes: vec!["read".into()],
        ..ClientRequest::default()
    };
    assert!(admin.add_client(request).await.is_err());
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM clients WHERE name = 'unrecorded'",
            &[]
        )
        .await,
        0,
        "added without its event"
    );
    assert!(admin.rotate_keys(&h.app.keys).await.is_err());
    assert_eq!(
        h.count("SELECT COUNT(*) FROM signing_keys", &[]).await,
        keys_before,
        "keys stored without their events"
    );
    h.finish().await;
}

crate::both_backends!(an_admin_change_without_its_audit_event_is_not_made);

/// A PostgreSQL that takes no writes for now (a failover under way, a
/// standby not promoted yet: SQLSTATE 25006) is a failure that passes:
/// 503 and a retry, not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_takes_no_writes_for_now_is_unavailable() {
    use sqlx::Connection;
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&h.test_db.url).await.unwrap();
    sqlx::query("SET default_transaction_read_only = on")
        .execute(&mut conn)
        .await
        .unwrap();
    let refused = sqlx::query("INSERT INTO audit_log (at, event) VALUES (0, 'logout')")
        .execute(&mut conn)
        .await
        .unwrap_err();
    let e = Error::from(refused);
    assert!(e.is_transient(), "{e:?}");
    conn.close().await.unwrap();
    h.finish().await;
}

/// Where [`commit_cutting_proxy`] cuts the next connection that commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Nowhere (or no more: the cut was made).
    Never,
    /// Before `COMMIT` reaches the database: nothing is committed.
    BeforeCommit,
    /// After the database has committed, before its answer comes back.
    AfterCommit,
    /// As soon as `COMMIT` is on its way, while the database commits.
    WhileCommitting,
}

/// A TCP proxy to PostgreSQL `target` that cuts, once, the connection
/// that next sends `COMMIT`, where the switch says; then it is back to
/// [`Cut::Never`].
async fn commit_cutting_proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<Cut>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (switch, _) = tokio::sync::watch::channel(Cut::Never);
    let cut = switch.clone();
    let address = proxy_to(
        target,
        move |((mut client_read, mut server_write), (mut server_read, mut client_write))| {
            // Set once this connection's COMMIT went through: its answer
            // is dropped and the client's side closed.
            let committed = Arc::new(AtomicBool::new(false));
            let seen = Arc::clone(&committed);
            let cut_now = Arc::new(tokio::sync::Notify::new());
            let cutting = Arc::clone(&cut_now);
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    let n = match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buffer[..n];
                    let mut cut_after = false;
                    if chunk.windows(6).any(|w| w == b"COMMIT") {
                        match cut.send_replace(Cut::Never) {
                            Cut::Never => {}
                            Cut::BeforeCommit => break,
                            Cut::AfterCommit => seen.store(true, Ordering::SeqCst),
                            Cut::WhileCommitting => cut_after = true,
                        }
                    }
                    if server_write.write_all(chunk).await.is_err() {
                        break;
                    }
                    if cut_after {
                        seen.store(true, Ordering::SeqCst);
                        cutting.notify_one();
                    }
                }
                let _ = server_write.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    let n = tokio::select! {
                        read = server_read.read(&mut buffer) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        },
                        () = cut_now.notified() => break,
                    };
                    if committed.load(Ordering::SeqCst)
                        || client_write.write_all(&buffer[..n]).await.is_err()
                    {
                        break;
                    }
                }
                let _ = client_write.shutdown().await;
            });
        },
    )
    .await;
    (address, switch)
}

/// PostgreSQL commits a client's addition, and the answer to `COMMIT` is
/// lost on the way back (the connection cut): the addition is answered
/// as made, with an id and a secret that work, and the client is stored
/// once (a user's too). Before, it was answered as the database out of reach (503, exit
/// code 75: "nothing was written, try again"), and the retry added a
/// second client, the first one's secret known to no one. Cut before
/// `COMMIT` reached the database, it is still that failure, and nothing
/// is stored. Cut while the commit is slow, it is answered as made once
/// the database says so (the row, looked for at once, was not there yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_addition_whose_commit_answer_was_lost_is_answered_as_made() {
    use tessera_server::store::audit::InChange;
    use tessera_server::store::clients::{self, GrantType, NewClient};
    let Some(mut test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (proxy, cut) = commit_cutting_proxy(database_address(&test_db).await).await;
    connect_through(&mut test_db, proxy);
    let h = Harness::on(test_db, |_| {}).await;
    let add = |name: &str| {
        clients::add(
            &h.db,
            NewClient {
                name: name.into(),
                grants: vec![GrantType::ClientCredentials],
                scopes: Scopes::parse("read").unwrap(),
                ..NewClient::default()
            },
            InChange::none(),
        )
    };
    let named = "SELECT COUNT(*) FROM clients WHERE name = $1";

    cut.send_replace(Cut::AfterCommit);
    let added = add("answer lost").await.expect("answered as not added");
    assert_eq!(*cut.borrow(), Cut::Never, "the proxy cut nothing");
    assert_eq!(h.count(named, &["answer lost"]).await, 1);
    let secret = added.client_secret.expect("a confidential client's secret");
    let issued = h.client_credentials(&added.client_id, &secret).await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text);

    cut.send_replace(Cut::BeforeCommit);
    let refused = add("never committed")
        .await
        .expect_err("answered as added, though nothing was committed");
    assert_eq!(*cut.borrow(), Cut::Never, "the proxy cut nothing");
    assert!(refused.is_transient(), "{refused}");
    assert_eq!(h.count(named, &["never committed"]).await, 0);

    // Cut while the commit takes its time (as one waiting for a
    // synchronous standby does): the row is not there yet when the
    // answer is looked for, and the addition is answered as made all the
    // same, once the database says the transaction committed.
    h.execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql \
         AS 'BEGIN PERFORM pg_sleep(2); RETURN NULL; END'",
        &[],
    )
    .await;
    h.execute(
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON clients \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
        &[],
    )
    .await;
    cut.send_replace(Cut::WhileCommitting);
    let added = add("slow commit").await.expect("answered as not added");
    assert_eq!(*cut.borrow(), Cut::Never, "the proxy cut nothing");
    assert_eq!(h.count(named, &["slow commit"]).await, 1);
    assert!(added.client_secret.is_some());
    h.execute("DROP TRIGGER slow_commit ON clients", &[]).await;

    // A user likewise: answered as added, not as out of reach (whose
    // retry would find the name taken).
    let hash = h.hash("correct horse").await;
    let (read, nothing) = (Scopes::parse("read").unwrap(), users::Profile::default());
    let add_user =
        |name: &'static str| users::add(&h.db, name, &hash, &read, &nothing, InChange::none());
    let users_named = "SELECT COUNT(*) FROM users WHERE username = $1";
    cut.send_replace(Cut::AfterCommit);
    let user = add_user("alice").await.expect("answered as not added");
    assert_eq!(*cut.borrow(), Cut::Never, "the proxy cut nothing");
    assert_eq!(user.username, "alice");
    assert_eq!(h.count(users_named, &["alice"]).await, 1);
    cut.send_replace(Cut::BeforeCommit);
    let refused = add_user("bob")
        .await
        .expect_err("answered as added, though nothing was committed");
    assert!(refused.is_transient(), "{refused}");
    assert_eq!(h.count(users_named, &["bob"]).await, 0);
    h.finish().await;
}
