//! Numbered schema migrations (`migrations/postgres/NNNN_*.sql`), each applied once, in order,
//! in a transaction of its own, recorded in `schema_migrations`.
//!
//! Several nodes may start at once on a new or older database. They agree without advisory locks
//! (PostgreSQL-only): `schema_migrations` row 0 is a lock row, taken with `SELECT ... FOR UPDATE`
//! by the transaction that applies a migration, which then checks again, under the lock, that
//! the migration is still missing. A node that waited on the lock finds the migration applied and
//! moves on; races that the lock cannot cover (two nodes creating `schema_migrations` itself, or
//! an engine that turns a wait into a serialization failure) end in `23505`, `42P07`, `42710` or
//! `40001`, and the step is run again. The migrations themselves are written to be run again over
//! a partial application (`IF NOT EXISTS`), for YugabyteDB, whose DDL commits statement by
//! statement unless transactional DDL is switched on.
//!
//! A node whose database has a migration it does not know (a newer Keyshift applied it) refuses to
//! start rather than run on a schema it was not written for.

use super::retry::{self, Failure};
use crate::{Result, StoreError};
use sqlx::{PgPool, Row};

/// One migration.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "records",
        sql: include_str!("../../migrations/postgres/0001_records.sql"),
    },
    Migration {
        version: 2,
        name: "revisions",
        sql: include_str!("../../migrations/postgres/0002_revisions.sql"),
    },
    Migration {
        version: 3,
        name: "change_feed",
        sql: include_str!("../../migrations/postgres/0003_change_feed.sql"),
    },
];

/// The schema version this code is written for.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// What one step did.
enum Step {
    /// Nothing left to apply up to the target.
    Done,
    /// Something changed (a migration applied, here or by another node); look again.
    Progress,
}

enum StepError {
    Sql(sqlx::Error),
    Refused(StoreError),
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        StepError::Sql(e)
    }
}

/// Applies every migration up to `target` (all of them in normal use) that is not applied yet.
pub(crate) async fn migrate(pool: &PgPool, target: i64) -> Result<()> {
    let mut attempt = 0;
    // Each step applies at most one migration; the bound only guards against a loop.
    let mut steps = 0;
    loop {
        match step(pool, target).await {
            Ok(Step::Done) => return Ok(()),
            Ok(Step::Progress) => {
                attempt = 0;
                steps += 1;
                if steps > MIGRATIONS.len() * 4 + 4 {
                    return Err(StoreError::Backend(
                        "schema migrations did not settle".into(),
                    ));
                }
            }
            Err(StepError::Refused(e)) => return Err(e),
            Err(StepError::Sql(e)) => {
                let failure = retry::classify(&e);
                if failure == Failure::Fatal || attempt + 1 >= retry::MIGRATION_ATTEMPTS {
                    return Err(StoreError::Backend(format!("schema migration: {e}")));
                }
                tracing::debug!(error = %e, attempt, "schema migration step runs again");
                tokio::time::sleep(retry::backoff(attempt)).await;
                attempt += 1;
            }
        }
    }
}

async fn applied_versions(pool: &PgPool) -> std::result::Result<Option<Vec<i64>>, sqlx::Error> {
    match sqlx::query("SELECT version FROM schema_migrations WHERE version > 0 ORDER BY version")
        .fetch_all(pool)
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some),
        // 42P01 undefined_table: a new database.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Ok(None),
        Err(e) => Err(e),
    }
}

async fn step(pool: &PgPool, target: i64) -> std::result::Result<Step, StepError> {
    // Read first, without DDL: the common start (nothing to do) needs no CREATE privilege.
    let Some(applied) = applied_versions(pool).await? else {
        create_migrations_table(pool).await?;
        return Ok(Step::Progress);
    };
    if let Some(&newest) = applied.last() {
        if newest > latest() {
            return Err(StepError::Refused(StoreError::Backend(format!(
                "the database's schema is at version {newest}, newer than this Keyshift knows \
                 ({}): run a Keyshift at least as new as the one that migrated it",
                latest()
            ))));
        }
    }
    let Some(next) = MIGRATIONS
        .iter()
        .find(|m| m.version <= target && !applied.contains(&m.version))
    else {
        return Ok(Step::Done);
    };
    let mut tx = pool.begin().await?;
    let locked = sqlx::query("SELECT version FROM schema_migrations WHERE version = 0 FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !locked {
        // A node stopped between creating the table and its lock row.
        tx.rollback().await?;
        create_migrations_table(pool).await?;
        return Ok(Step::Progress);
    }
    let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
        .bind(next.version)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !done {
        // Through the Executor trait (a boxed, Send future): RawSql's own async `execute` is not
        // provably Send, which callers that spawn the store's start-up need.
        sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(next.sql)).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(next.version)
            .bind(next.name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if !done {
        tracing::info!(
            version = next.version,
            name = next.name,
            "PostgreSQL schema migration applied"
        );
    }
    Ok(Step::Progress)
}

/// Creates `schema_migrations` and its lock row (version 0, not a migration). Two nodes doing this
/// at once is fine: the loser's error (`42P07` duplicate_table, or from PostgreSQL's catalog
/// `42710` duplicate_object for the table's row type or `23505` for its index) is taken as "already
/// there".
async fn create_migrations_table(pool: &PgPool) -> std::result::Result<(), sqlx::Error> {
    let statements = [
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version    BIGINT      NOT NULL PRIMARY KEY, \
             name       TEXT        NOT NULL, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        "INSERT INTO schema_migrations (version, name) VALUES (0, '(migration lock)') \
         ON CONFLICT (version) DO NOTHING",
    ];
    for sql in statements {
        match sqlx::query(sql).execute(pool).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42P07" | "42710" | "23505")) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
