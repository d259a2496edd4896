//! The audit trail: who did what, when, from where. Never secrets.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::db::{on_pool, Db, Pool};
use crate::store::{json_rows, now};
use crate::Error;

/// One audit event.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// What happened: `login_succeeded`, `login_failed`, `token_issued`,
    /// `refresh_rotated`, `refresh_reuse_detected`, `token_revoked`,
    /// `key_created`, `user_added`, …
    pub event: &'static str,
    /// The client involved.
    pub client_id: Option<String>,
    /// The user or client the event is about.
    pub subject: Option<String>,
    /// The peer address.
    pub remote: Option<String>,
    /// More, in `name=value` words.
    pub detail: Option<String>,
}

/// Every kind of event the trail holds ([`Event::event`]; docs/server.md
/// says what each records). The admin API's filter refuses any other
/// name: a misspelt one would find nothing, and read as "none happened".
pub const EVENTS: [&str; 32] = [
    "assertion_accepted",
    "backchannel_logout_failed",
    "backup_written",
    "client_added",
    "client_deleted",
    "client_scopes_changed",
    "client_secret_rotated",
    "code_exchanged",
    "code_released",
    "code_replayed",
    "key_created",
    "key_removed",
    "key_revoked",
    "key_rotation_started",
    "login_failed",
    "login_family_revoked",
    "login_locked",
    "login_succeeded",
    "logout",
    "refresh_reuse_detected",
    "refresh_rotated",
    "refresh_rotation_taken_back",
    "session_ended",
    "token_issued",
    "token_revoked",
    "user_added",
    "user_deleted",
    "user_disabled",
    "user_enabled",
    "user_password_changed",
    "user_profile_changed",
    "user_scopes_changed",
];

impl Event {
    /// An event of kind `event`, one of [`EVENTS`].
    pub fn new(event: &'static str) -> Event {
        debug_assert!(
            EVENTS.contains(&event),
            "audit event {event} is not in audit::EVENTS"
        );
        Event {
            event,
            ..Event::default()
        }
    }

    /// Set the client.
    #[must_use]
    pub fn client(mut self, client_id: impl Into<String>) -> Event {
        self.client_id = Some(client_id.into());
        self
    }

    /// Set the subject.
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Event {
        self.subject = Some(subject.into());
        self
    }

    /// Set the peer address.
    #[must_use]
    pub fn remote(mut self, remote: Option<String>) -> Event {
        self.remote = remote;
        self
    }

    /// Set the details.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }
}

/// A stored event.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct Record {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: i64,
    /// What.
    pub event: String,
    /// Client.
    pub client_id: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Peer address.
    pub remote: Option<String>,
    /// Details.
    pub detail: Option<String>,
}

pub(crate) const INSERT: &str =
    "INSERT INTO audit_log (at, event, client_id, subject, remote, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// The audit event of a change, made from what the change leaves (the
/// scopes it set, the id it gave; `T`) and written in the change's own
/// transaction (`record_in!`): it commits with the change, or neither
/// does. An answered change never lacks its event, as one written after
/// the commit could (the process killed, the disk full, the request
/// dropped in between), and an event never tells of a change that rolled
/// back.
pub struct InChange<'a, T: ?Sized = ()>(Option<MakeEvent<'a, T>>);

/// What makes an [`InChange`]'s event of what the change leaves.
type MakeEvent<'a, T> = Box<dyn FnOnce(&T) -> Event + Send + 'a>;

impl<'a, T: ?Sized> InChange<'a, T> {
    /// No event: the change is recorded elsewhere (a logout's own event)
    /// or not at all (a test's setup).
    pub fn none() -> InChange<'a, T> {
        InChange(None)
    }

    /// The event `make` makes of what the change leaves.
    pub fn of(make: impl FnOnce(&T) -> Event + Send + 'a) -> InChange<'a, T> {
        InChange(Some(Box::new(make)))
    }

    /// The event, once: the change about to commit has left `result`.
    pub fn take(&mut self, result: &T) -> Option<Event> {
        self.0.take().map(|make| make(result))
    }
}

impl<'a> InChange<'a> {
    /// The same event, for a change that leaves something it does not
    /// need (a user's scopes, when the change was a new password).
    pub(crate) fn for_any<T: ?Sized>(self) -> InChange<'a, T> {
        match self.0 {
            Some(make) => InChange::of(move |_: &T| make(&())),
            None => InChange::none(),
        }
    }
}

impl<T: ?Sized> std::fmt::Debug for InChange<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "InChange(an event)"
        } else {
            "InChange(none)"
        })
    }
}

/// Inside transaction `$tx`, just before it commits: write the event of
/// `$change` (an [`InChange`], taken once) made of `$result`, what the
/// change leaves. Evaluates to `()`; a failed write fails the
/// transaction (`?`, an `sqlx::Error`).
macro_rules! record_in {
    ($tx:expr, $change:expr, $result:expr) => {{
        if let Some(event) = $change.take($result) {
            sqlx::query($crate::store::audit::INSERT)
                .bind($crate::store::now())
                .bind(event.event)
                .bind(event.client_id)
                .bind(event.subject)
                .bind(event.remote)
                .bind(event.detail)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(crate) use record_in;

/// Record `event` now, in its own statement.
pub async fn record(db: &Db, event: Event) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(INSERT)
        .bind(now()).bind(event.event).bind(event.client_id).bind(event.subject)
        .bind(event.remote).bind(event.detail)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The numbers an audit writer gives the events it writes: from a random
/// start, one after another, so that two writers (two instances, or one
/// started again) never give the same number.
#[derive(Debug)]
pub struct Sequence(i64);

impl Sequence {
    /// A sequence from a random start, below 2^62: room for more events
    /// than any writer will write.
    pub fn start() -> Result<Sequence, Error> {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| Error::Random)?;
        Ok(Sequence((u64::from_le_bytes(bytes) >> 2) as i64))
    }

    /// The first of `count` numbers taken, one after another (a batch's
    /// number, and those of its events should they be written one by
    /// one).
    pub fn take(&mut self, count: usize) -> i64 {
        let first = self.0;
        self.0 = first.saturating_add(i64::try_from(count).unwrap_or(i64::MAX));
        first
    }
}

/// Record several events at once, as the batch numbered `first` (the
/// first of the [`Sequence`] numbers taken for them): written again under
/// the same number, after the answer to the first write was lost, they
/// add nothing. The batch's number goes in `audit_batches` in the same
/// transaction, and the events only with it.
///
/// One statement for the events whatever their count, and always the
/// same text: rows bound as arrays (PostgreSQL `UNNEST`) or as one JSON
/// array (SQLite `json_each`). A multi-row `VALUES` list would make a new
/// statement text for every batch size, and each connection's statement
/// cache (and each PostgreSQL backend) would keep a prepared statement per
/// size: memory that grew with every new size seen (docs/benchmarks.md).
pub async fn record_all(db: &Db, first: i64, events: &[(i64, Event)]) -> Result<(), Error> {
    match db.write() {
        Pool::Postgres(p) => {
            // One statement: the batch's number, and the events only if
            // the number was new (a batch still being written by an
            // earlier attempt is waited for, and added to only if that
            // attempt rolled back).
            sqlx::query(
                "WITH batch AS (INSERT INTO audit_batches (writer_seq, written_at) VALUES ($7, $8) \
                 ON CONFLICT (writer_seq) DO NOTHING RETURNING writer_seq) \
                 INSERT INTO audit_log (at, event, client_id, subject, remote, detail) \
                 SELECT at, event, client_id, subject, remote, detail \
                 FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[]) \
                 WITH ORDINALITY AS r(at, event, client_id, subject, remote, detail, n) \
                 WHERE EXISTS (SELECT 1 FROM batch) ORDER BY n",
            )
            .bind(events.iter().map(|(at, _)| *at).collect::<Vec<i64>>())
            .bind(events.iter().map(|(_, e)| e.event).collect::<Vec<&str>>())
            .bind(events.iter().map(|(_, e)| e.client_id.as_deref()).collect::<Vec<_>>())
            .bind(events.iter().map(|(_, e)| e.subject.as_deref()).collect::<Vec<_>>())
            .bind(events.iter().map(|(_, e)| e.remote.as_deref()).collect::<Vec<_>>())
            .bind(events.iter().map(|(_, e)| e.detail.as_deref()).collect::<Vec<_>>())
            .bind(first)
            .bind(now())
            .execute(p)
            .await?;
        }
        Pool::Sqlite(p) => {
            let rows: Vec<_> = events
                .iter()
                .map(|(at, e)| (at, e.event, &e.client_id, &e.subject, &e.remote, &e.detail))
                .collect();
            let rows = json_rows(&rows)?;
            let mut tx = p.begin_with(db.begin_write()).await?;
            let new = sqlx::query(
                "INSERT INTO audit_batches (writer_seq, written_at) VALUES ($1, $2) \
                 ON CONFLICT (writer_seq) DO NOTHING",
            )
            .bind(first)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if new {
                sqlx::query(
                    "INSERT INTO audit_log (at, event, client_id, subject, remote, detail) \
                     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
                     FROM json_each($1) ORDER BY key",
                )
                .bind(rows)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Whether the batch numbered `first` is written.
async fn batch_written(db: &Db, first: i64) -> Result<bool, Error> {
    let count = on_pool!(db.read(), p => sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM audit_batches WHERE writer_seq = $1"
    ).bind(first).fetch_one(p).await)?;
    Ok(count > 0)
}

/// The newest `limit` events, newest first, optionally of one kind.
pub async fn recent(db: &Db, event: Option<&str>, limit: i64) -> Result<Vec<Record>, Error> {
    page(db, event, None, limit).await
}

/// [`recent`], from the event before id `before`.
pub async fn page(
    db: &Db,
    event: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Record>, Error> {
    let rows = on_pool!(db.read(), p => sqlx::query_as::<_, Record>(
        "SELECT id, at, event, client_id, subject, remote, detail FROM audit_log \
         WHERE ($1 IS NULL OR event = $1) AND id < COALESCE($3, CAST(9223372036854775807 AS BIGINT)) \
         ORDER BY id DESC LIMIT $2"
    ).bind(event).bind(limit).bind(before).fetch_all(p).await)?;
    Ok(rows)
}

/// Events written in one transaction at most.
const BATCH: usize = 4096;

/// How long the writer lets events gather before writing a batch: the
/// longest an event waits in memory.
const GATHER: Duration = Duration::from_millis(20);

/// Events held in memory at most while the database does not take them.
/// Past this, [`AuditQueue::accepting`] says no and the token endpoint
/// refuses to issue what it could not record (about 300 bytes an event,
/// so the bound costs some 30 MB at worst).
pub const MAX_BACKLOG: usize = 100_000;

/// How long one attempt to write a batch may take (at shutdown, what is
/// left of [`SHUTDOWN_GRACE`]): past PostgreSQL's statement timeout and
/// the wait for a connection, so that the database gives a statement up
/// before the writer does (one the writer dropped may still commit: its
/// retry, under the same numbers, then adds nothing).
const WRITE_TIMEOUT: Duration = Duration::from_secs(35);

/// The backoff at which a batch still not written is said in the log,
/// event by event: after the retries at 100, 200, 400 and 800 ms, some
/// 1.5 s after the first failure.
const SAY_HELD_AT_BACKOFF: Duration = Duration::from_millis(1600);

/// Longest wait between two attempts to write a batch the database refused.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long [`AuditWriter::finish`] keeps retrying at shutdown before it
/// writes what is left to the log instead.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A queue that writes events in batches, off the request path.
///
/// Handlers that issue tokens at a high rate record through it, so the
/// audit trail costs one transaction per batch rather than one write per
/// request. No event is dropped quietly: a batch the database cannot take
/// now (unreachable, disk full) is kept and retried with backoff; events
/// the database refuses for good (it never happens with events this server
/// makes) are written to the log, whole, at error level. While more than
/// [`MAX_BACKLOG`] events wait, [`AuditQueue::accepting`] is false. On
/// shutdown, once every queue handle is dropped, [`AuditWriter::finish`]
/// waits until what was queued is written.
#[derive(Clone, Debug)]
pub struct AuditQueue {
    tx: tokio::sync::mpsc::UnboundedSender<(i64, Event)>,
    pending: Arc<AtomicUsize>,
    died: crate::watched::Died,
}

/// The task that drains an [`AuditQueue`]; await it after closing.
#[derive(Debug)]
pub struct AuditWriter {
    task: tokio::task::JoinHandle<()>,
    /// The shutdown's deadline, set by [`AuditWriter::finish`].
    deadline: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
}

impl AuditQueue {
    /// Start the writer task on `db`.
    pub fn start(db: Db) -> (AuditQueue, AuditWriter) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Event)>();
        let pending = Arc::new(AtomicUsize::new(0));
        let (deadline, watched) = tokio::sync::watch::channel(None);
        let (task, died) = crate::watched::spawn(
            "the audit writer",
            drain(db, rx, Arc::clone(&pending), Deadline(watched)),
        );
        (
            AuditQueue { tx, pending, died },
            AuditWriter { task, deadline },
        )
    }

    /// Queue `event`, stamped now.
    pub fn push(&self, event: Event) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(unsent) = self.tx.send((now(), event)) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            let (at, event) = unsent.0;
            log_unwritten(at, &event, "audit queue closed");
        }
    }

    /// Whether the trail keeps up: false while more than [`MAX_BACKLOG`]
    /// events wait for the database, and for good once the writer has
    /// panicked (its events would only reach the log).
    pub fn accepting(&self) -> bool {
        self.pending.load(Ordering::Relaxed) <= MAX_BACKLOG && !self.died.happened()
    }

    /// Whether the writer's task panicked, for the server's supervisor,
    /// which shuts it down then.
    pub fn died(&self) -> crate::watched::Died {
        self.died.clone()
    }

    /// Events queued and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

async fn drain(
    db: Db,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(i64, Event)>,
    pending: Arc<AtomicUsize>,
    mut deadline: Deadline,
) {
    // A sequence can only fail to start without randomness; a start from
    // the clock then keeps this writer's numbers apart from the last
    // one's all the same.
    let mut sequence = Sequence::start().unwrap_or_else(|e| {
        tracing::error!(error = %e, "audit writer: numbering its events from the clock");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Sequence(i64::try_from(nanos >> 2).unwrap_or(0))
    });
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Let a busy moment's events gather: one transaction for many, and
        // the writer woken less often.
        if batch.len() < BATCH {
            tokio::time::sleep(GATHER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
        }
        let count = batch.len();
        let first = sequence.take(count);
        write_batch(&db, first, &mut batch, &mut deadline).await;
        pending.fetch_sub(count, Ordering::Relaxed);
    }
}

/// The end of the shutdown's grace, once [`AuditWriter::finish`] has
/// set it: one for the writer, whatever it is doing then (an attempt in
/// flight, a backoff, the batches left, some 25 for a full backlog).
struct Deadline(tokio::sync::watch::Receiver<Option<tokio::time::Instant>>);

impl Deadline {
    fn passed(&self) -> bool {
        self.0
            .borrow()
            .is_some_and(|at| tokio::time::Instant::now() >= at)
    }

    /// Completes at the deadline; never before one is set.
    async fn reached(&mut self) {
        loop {
            let at = *self.0.borrow_and_update();
            if let Some(at) = at {
                return tokio::time::sleep_until(at).await;
            }
            if self.0.changed().await.is_err() {
                // No `finish` will come: no deadline.
                return std::future::pending().await;
            }
        }
    }

    /// `work`, given up after [`WRITE_TIMEOUT`] or at the deadline,
    /// whichever comes first. Bounded: a connection cut without a reset
    /// leaves a write hanging for the kernel's TCP timeout (a quarter of
    /// an hour), the backlog growing meanwhile, and at shutdown the
    /// supervisor's kill taking every event queued without a word.
    async fn within<T>(
        &mut self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::select! {
            done = tokio::time::timeout(WRITE_TIMEOUT, work) => done.unwrap_or_else(|_| {
                Err(Error::Unavailable(format!("the write did not finish within {WRITE_TIMEOUT:?}")))
            }),
            () = self.reached() => Err(Error::Unavailable("the shutdown's grace ran out".into())),
        }
    }
}

/// Write `batch` (emptying it), numbered from `first` (each attempt
/// under the same numbers: one whose answer was lost, a connection cut at
/// COMMIT or a timeout, may have committed), retrying while the database
/// is unavailable; once the shutdown's deadline has passed, log what is
/// left instead.
async fn write_batch(db: &Db, first: i64, batch: &mut Vec<(i64, Event)>, deadline: &mut Deadline) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // No attempt more once the grace is spent (on this batch or an
        // earlier one): each may wait for a connection.
        if deadline.passed() {
            for (at, event) in batch.drain(..) {
                log_unwritten(at, &event, "database unavailable at shutdown");
            }
            return;
        }
        let written = deadline.within(record_all(db, first, batch)).await;
        match written {
            Ok(()) => {
                if backoff > Duration::from_millis(100) {
                    tracing::info!(count = batch.len(), "audit events written after a retry");
                }
                batch.clear();
                return;
            }
            Err(Error::Unavailable(reason)) => {
                if backoff == Duration::from_millis(100) {
                    tracing::error!(
                        error = %reason,
                        count = batch.len(),
                        "audit events not written yet; retrying"
                    );
                }
                // Held in memory until the database takes them: said once
                // the retries have lasted over a second (not at a moment's
                // wait for a connection under load, which the next attempt
                // ends), so that a crash meanwhile (the disk full, the
                // process killed) leaves them in the log at least.
                if backoff == SAY_HELD_AT_BACKOFF {
                    for (at, event) in batch.iter() {
                        log_event(
                            *at,
                            event,
                            &reason,
                            "audit event not written yet (kept, retried)",
                        );
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = deadline.reached() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                // Refused for good: find which events, keep the others;
                // unless an earlier attempt whose answer was lost wrote
                // them all (written one by one, under numbers of their
                // own, they would be stored twice).
                if matches!(deadline.within(batch_written(db, first)).await, Ok(true)) {
                    batch.clear();
                    return;
                }
                tracing::error!(error = %e, "audit batch refused; writing events one by one");
                for (seq, (at, event)) in (first..).zip(batch.drain(..)) {
                    let one = [(at, event.clone())];
                    if let Err(e) = deadline.within(record_all(db, seq, &one)).await {
                        log_unwritten(at, &event, &e.to_string());
                    }
                }
                return;
            }
        }
    }
}

/// The last resort for an event the database never took: the log.
fn log_unwritten(at: i64, event: &Event, why: &str) {
    log_event(at, event, why, "audit event not stored");
}

/// `event` in the log, as `message` says.
fn log_event(at: i64, event: &Event, why: &str, message: &str) {
    tracing::error!(
        at,
        event = event.event,
        client_id = event.client_id.as_deref().unwrap_or(""),
        subject = event.subject.as_deref().unwrap_or(""),
        remote = event.remote.as_deref().unwrap_or(""),
        detail = event.detail.as_deref().unwrap_or(""),
        why,
        "{message}"
    );
}

impl AuditWriter {
    /// Wait until every queued event is written (all queue handles must be
    /// dropped first). The writer has 10 s from now,
    /// whatever it is doing (a write in flight included), then logs what is
    /// left.
    pub async fn finish(self) {
        self.deadline
            .send_replace(Some(tokio::time::Instant::now() + SHUTDOWN_GRACE));
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "audit writer failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(label: &str) -> Vec<(i64, Event)> {
        (0..3)
            .map(|i| {
                let event = Event::new("token_issued").detail(format!("{label}={i}"));
                (i, event)
            })
            .collect()
    }

    /// A batch the database refuses for good is written event by event,
    /// under numbers of their own, and only the refused event is left
    /// out; unless an earlier attempt whose answer was lost wrote the
    /// batch already, when it is not written a second time.
    #[tokio::test]
    async fn a_refused_batch_is_written_event_by_event_unless_already_written() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let Pool::Sqlite(pool) = db.write() else {
            unreachable!("a SQLite database")
        };
        let refuse = |seq: i64| async move {
            let sql = format!(
                "CREATE TRIGGER refuse_{seq} BEFORE INSERT ON audit_batches \
                 WHEN NEW.writer_seq = {seq} BEGIN SELECT RAISE(ABORT, 'refused'); END"
            );
            sqlx::query(&sql).execute(pool).await.map(drop)
        };
        let write = |first: i64, mut events: Vec<(i64, Event)>| {
            let db = db.clone();
            async move {
                let (_finish, watched) = tokio::sync::watch::channel(None);
                let mut deadline = Deadline(watched);
                let wrote = write_batch(&db, first, &mut events, &mut deadline);
                tokio::time::timeout(Duration::from_secs(30), wrote)
                    .await
                    .expect("a refusal for good is not retried");
                assert!(events.is_empty());
            }
        };
        let stored = || async {
            recent(&db, Some("token_issued"), 100)
                .await
                .unwrap()
                .into_iter()
                .rev()
                .map(|r| r.detail.unwrap_or_default())
                .collect::<Vec<_>>()
        };

        // No earlier attempt, and the batch refused for good: one by one,
        // the first event (under the batch's own number) refused again,
        // the others taken.
        refuse(2000).await.unwrap();
        write(2000, batch("a")).await;
        assert_eq!(stored().await, ["a=1", "a=2"]);

        // An attempt whose answer was lost wrote the batch; written again,
        // the database refuses it for good.
        record_all(&db, 1000, &batch("b")).await.unwrap();
        refuse(1000).await.unwrap();
        write(1000, batch("b")).await;
        assert_eq!(stored().await, ["a=1", "a=2", "b=0", "b=1", "b=2"]);
        db.close().await;
    }
}
