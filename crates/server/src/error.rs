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
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The master key is missing or malformed, or does not open a stored
    /// signing key (a different master key than the one that sealed it).
    #[error("master key: {0}")]
    MasterKey(String),
    /// A JOSE operation failed.
    #[error(transparent)]
    Jose(#[from] tessera_jose::Error),
    /// The named user, client or key does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `user`, `client`, `key`.
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
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        Error::database(e)
    }
}
