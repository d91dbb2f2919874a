//! Backends for the storage test suites: a fresh SQLite file, and a fresh
//! schema on the real PostgreSQL at 127.0.0.1:5432 (db `test`), dropped at
//! the end.

#![allow(dead_code)]

use std::sync::Arc;

use esync_server::store::{PgStore, SqliteStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A SQLite store in a temporary directory (kept alive by the guard).
pub async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(dir.path().join("server.db"))
        .await
        .expect("open sqlite");
    (Arc::new(s), dir)
}

/// A PostgreSQL store in its own new schema; `None` (after printing
/// "SKIPPED") when the server is unreachable.
pub async fn postgres(tag: &str) -> Option<(Arc<dyn Store>, PgSchema)> {
    let base: PgConnectOptions = PG_URL.parse().expect("url");
    let mut admin = match base.connect().await {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: PostgreSQL at {PG_URL} unreachable: {e}");
            return None;
        }
    };
    let schema = format!(
        "esync_{tag}_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    admin.close().await.expect("close");
    let opts = base.options([("search_path", schema.as_str())]);
    let s = PgStore::connect_with(opts).await.expect("connect pg store");
    Some((Arc::new(s), PgSchema { schema }))
}

/// Drops its schema when [`PgSchema::drop_schema`] is called.
pub struct PgSchema {
    schema: String,
}

impl PgSchema {
    pub async fn drop_schema(self) {
        let base: PgConnectOptions = PG_URL.parse().expect("url");
        let mut c = base.connect().await.expect("connect");
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut c)
            .await
            .expect("drop schema");
    }
}
