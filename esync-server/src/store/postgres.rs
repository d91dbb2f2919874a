//! The PostgreSQL backend, for several stateless Server nodes on one
//! database.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::sql::{claim_sql, store_impl};
use super::DbError;

/// The [`super::Store`] on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (e.g. `postgres://postgres@127.0.0.1:5432/test`)
    /// and applies the migrations (serialised across nodes by sqlx's
    /// advisory lock).
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let opts: PgConnectOptions = url.parse()?;
        Self::connect_with(opts).await
    }

    /// Connects with `opts` and applies the migrations. A schema other than
    /// `public` is chosen with `opts.options([("search_path", schema)])`.
    pub async fn connect_with(opts: PgConnectOptions) -> Result<Self, DbError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        super::migrations::migrator(super::migrations::POSTGRES)
            .await?
            .run(&pool)
            .await?;
        Ok(Self { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

store_impl!(
    PgStore,
    sqlx::postgres::PgRow,
    sqlx::Postgres,
    claim_sql!("FOR UPDATE SKIP LOCKED")
);
