//! Errors of the Server's storage layer.

use thiserror::Error;

/// A database operation failed.
///
/// (`esync_store::StoreError` is the on-device journal store's error; this
/// is the Server database's.)
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database driver reported an error (connection, SQL, constraint).
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row referenced a vehicle, package or other entity that does not exist.
    #[error("{entity} not found: {key}")]
    NotFound {
        /// Kind of entity.
        entity: &'static str,
        /// Its key.
        key: String,
    },
    /// A unique key is already taken by a different record.
    #[error("{entity} already exists: {key}")]
    Conflict {
        /// Kind of entity.
        entity: &'static str,
        /// Its key.
        key: String,
    },
    /// A stored value could not be decoded (corrupt row or schema mismatch).
    #[error("corrupt {column}: {reason}")]
    Corrupt {
        /// Column that failed to decode.
        column: &'static str,
        /// Why.
        reason: String,
    },
    /// An argument is out of the accepted range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
}
