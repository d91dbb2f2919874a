//! The embedded SQLite backend: one file, zero set-up.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::sql::{claim_sql, store_impl};
use super::DbError;

/// The [`super::Store`] on one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and applies
    /// the migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, DbError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        super::migrations::migrator(super::migrations::SQLITE)
            .await?
            .run(&pool)
            .await?;
        Ok(Self { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

store_impl!(
    SqliteStore,
    sqlx::sqlite::SqliteRow,
    sqlx::Sqlite,
    claim_sql!("")
);
