//! The server crate's error type.

/// What failed in the server's own machinery (configuration, storage,
/// keys). Protocol errors sent to OAuth clients are [`crate::http::OAuthError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The database failed or refused a query.
    #[error("database: {0}")]
    Database(String),
    /// The database cannot answer or take writes for now (unreachable,
    /// out of connections, or its disk is full). Nothing was written; the
    /// same request may succeed later, so clients get `503` with
    /// `Retry-After` rather than `500`.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// Why: said in the message (not also as the error's source, which
        /// a chain of causes would print a second time).
        cause: std::io::Error,
    },
    /// The master key is missing or malformed, or does not open a stored
    /// signing key (a different master key than the one that sealed it).
    #[error("master key: {0}")]
    MasterKey(String),
    /// A new signing key could not be made (a server fault, not the
    /// caller's).
    #[error("key generation: {0}")]
    KeyGeneration(String),
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// A JOSE operation failed.
    #[error(transparent)]
    Jose(#[from] tessera_jose::Error),
    /// The server is at capacity for this kind of work (for example the
    /// password hashing queue is full): nothing was done, retry shortly.
    /// Clients get `503` with `Retry-After`.
    #[error("overloaded: {0}")]
    Overloaded(&'static str),
    /// The named user, client or key does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `user`, `client`, `key`, `session`.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The named user or client already exists.
    #[error("{kind} {name:?} already exists")]
    Exists {
        /// `user`, `client`.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// An argument of an admin operation is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Password hashing failed (not a wrong password: the hasher itself).
    #[error("password hashing: {0}")]
    Hash(String),
}

impl Error {
    /// Wrap a database error, keeping its message.
    pub(crate) fn database(e: impl std::fmt::Display) -> Error {
        Error::Database(e.to_string())
    }

    /// Wrap an I/O error on `path`.
    pub(crate) fn io(path: impl AsRef<std::path::Path>, cause: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            cause,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        if is_transient(&e) {
            Error::Unavailable(e.to_string())
        } else {
            Error::database(e)
        }
    }
}

/// Whether a database error says "not now" rather than "never": the
/// database is out of reach or out of space, and nothing was written.
impl Error {
    /// Whether trying again soon may work (the database or a queue is
    /// briefly unavailable): 503, not 500.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Overloaded(_))
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            let code = code.as_ref();
            // SQLite's primary result codes (the low byte of an extended
            // code): SQLITE_BUSY 5 (another process held the lock past
            // the busy timeout), SQLITE_READONLY 8 (the files' permissions
            // or their file system changed under the server: writes wait
            // in the audit writer's backlog and are retried, rather than
            // refused for good), SQLITE_IOERR 10, SQLITE_FULL 13,
            // SQLITE_CANTOPEN 14.
            let sqlite = code
                .parse::<u32>()
                .is_ok_and(|c| matches!(c & 0xff, 5 | 8 | 10 | 13 | 14));
            // PostgreSQL SQLSTATE classes 08 (connection exception), 53
            // (insufficient resources: disk full, out of memory, too many
            // connections) and 57P (operator intervention: shutting down,
            // cannot connect now), a statement cancelled (57014: past
            // `statement_timeout`, or by an operator), and a transaction
            // rolled back by the
            // database that may pass when tried again: 40001
            // (serialization failure), 40P01 (deadlock detected), a
            // lock waited for past `lock_timeout`: 55P03, a database
            // that takes no writes for now (25006: a failover under way,
            // a standby not promoted yet), and a transaction the database
            // ended for sitting idle (25P03).
            let postgres = code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "57014"
                || code == "40001"
                || code == "40P01"
                || code == "55P03"
                || code == "25006"
                || code == "25P03";
            sqlite || postgres
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// A write SQLite refuses as read-only is the database unavailable
    /// (503, retried), not refused for good.
    #[tokio::test]
    async fn a_read_only_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let rw = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&rw)
            .await
            .unwrap();
        rw.close().await;
        let ro = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
            .await
            .unwrap();
        let refused = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&ro)
            .await
            .unwrap_err();
        assert!(Error::from(refused).is_transient());
    }
}
