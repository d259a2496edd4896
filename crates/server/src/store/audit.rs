//! The audit trail: who did what, when, from where. Never secrets.

use crate::db::{on_pool, Db};
use crate::store::now;
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

impl Event {
    /// An event of kind `event`.
    pub fn new(event: &'static str) -> Event {
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

const INSERT: &str = "INSERT INTO audit_log (at, event, client_id, subject, remote, detail) \
                      VALUES ($1, $2, $3, $4, $5, $6)";

/// Record `event` now, in its own statement.
pub async fn record(db: &Db, event: Event) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(INSERT)
        .bind(now()).bind(event.event).bind(event.client_id).bind(event.subject)
        .bind(event.remote).bind(event.detail)
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Record several events in one transaction.
pub async fn record_all(db: &Db, events: Vec<(i64, Event)>) -> Result<(), Error> {
    // One multi-row INSERT per chunk: a statement per event would cost a
    // round trip to the database per token issued.
    const ROWS_PER_INSERT: usize = 200;
    on_pool!(db.write(), p => {
        let mut tx = p.begin().await?;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO audit_log (at, event, client_id, subject, remote, detail) ",
            );
            insert.push_values(chunk, |mut row, (at, event)| {
                row.push_bind(*at)
                    .push_bind(event.event)
                    .push_bind(event.client_id.clone())
                    .push_bind(event.subject.clone())
                    .push_bind(event.remote.clone())
                    .push_bind(event.detail.clone());
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    })?;
    Ok(())
}

/// The newest `limit` events, newest first, optionally of one kind.
pub async fn recent(db: &Db, event: Option<&str>, limit: i64) -> Result<Vec<Record>, Error> {
    let rows = on_pool!(db.read(), p => sqlx::query_as::<_, Record>(
        "SELECT id, at, event, client_id, subject, remote, detail FROM audit_log \
         WHERE ($1 IS NULL OR event = $1) ORDER BY id DESC LIMIT $2"
    ).bind(event).bind(limit).fetch_all(p).await)?;
    Ok(rows)
}

/// Events written in one transaction at most.
const BATCH: usize = 4096;

/// How long the writer lets events gather before writing a batch: the
/// longest an event waits in memory.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// A queue that writes events in batches, off the request path.
///
/// Handlers that issue tokens at a high rate record through it, so the
/// audit trail costs one transaction per batch rather than one write per
/// request. On shutdown, once every queue handle is dropped,
/// [`AuditWriter::finish`] waits until what was queued is written.
#[derive(Clone, Debug)]
pub struct AuditQueue {
    tx: tokio::sync::mpsc::UnboundedSender<(i64, Event)>,
}

/// The task that drains an [`AuditQueue`]; await it after closing.
#[derive(Debug)]
pub struct AuditWriter(tokio::task::JoinHandle<()>);

impl AuditQueue {
    /// Start the writer task on `db`.
    pub fn start(db: Db) -> (AuditQueue, AuditWriter) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Event)>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                // Let a busy moment's events gather: one transaction for
                // many, and the writer woken less often.
                if batch.len() < BATCH {
                    tokio::time::sleep(GATHER).await;
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                }
                let events = std::mem::take(&mut batch);
                let count = events.len();
                if let Err(e) = record_all(&db, events).await {
                    tracing::error!(error = %e, count, "audit events could not be written");
                }
            }
        });
        (AuditQueue { tx }, AuditWriter(task))
    }

    /// Queue `event`, stamped now.
    pub fn push(&self, event: Event) {
        if self.tx.send((now(), event)).is_err() {
            tracing::error!("audit queue closed; event dropped");
        }
    }
}

impl AuditWriter {
    /// Wait until every queued event is written (all queue handles must be
    /// dropped first).
    pub async fn finish(self) {
        if let Err(e) = self.0.await {
            tracing::error!(error = %e, "audit writer failed");
        }
    }
}
