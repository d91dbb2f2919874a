//! The schema migrations, embedded in the binary (from
//! `esync-server/migrations/{sqlite,postgres}/`), applied with sqlx's
//! migrator (which records them in `_sqlx_migrations` and, on PostgreSQL,
//! serialises concurrent nodes with an advisory lock).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::DbError;

/// A list of `(version, description, SQL)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// SQLite migrations.
pub(super) const SQLITE: Embedded = Embedded(&[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "repositories",
        include_str!("../../migrations/sqlite/0002_repositories.sql"),
    ),
    (
        3,
        "campaigns",
        include_str!("../../migrations/sqlite/0003_campaigns.sql"),
    ),
]);

/// PostgreSQL migrations.
pub(super) const POSTGRES: Embedded = Embedded(&[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "repositories",
        include_str!("../../migrations/postgres/0002_repositories.sql"),
    ),
    (
        3,
        "campaigns",
        include_str!("../../migrations/postgres/0003_campaigns.sql"),
    ),
]);

/// The migrator for `source`.
pub(super) async fn migrator(source: Embedded) -> Result<Migrator, DbError> {
    Ok(Migrator::new(source).await?)
}
