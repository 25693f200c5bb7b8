//! The embedded default backend: one SQLite file in WAL mode with `synchronous=FULL`, so a commit
//! is on disk before it is acknowledged.

use crate::{Changes, Expect, FeedFilter, Op, Record, Result, Store, StoreError};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// Numbered schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_records.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_change_feed.sql"),
    ),
];

/// A SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Writers of this process queue here instead of polling SQLite's busy handler, which sleeps
    /// in steps of up to 100 ms and gave creations a 0.3-0.6 s tail under concurrency. Other
    /// processes (`keyshift vault create`) still meet the busy timeout.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    unfed: std::sync::Arc<FeedFilter>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_at(path, MIGRATIONS.len() as i64).await
    }

    /// Opens `path` and applies the migrations up to `version` only (tests of upgrades).
    pub(crate) async fn open_at(path: &Path, version: i64) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(backend)?;
        let store = SqliteStore {
            pool,
            writer: Default::default(),
            unfed: Default::default(),
        };
        store.migrate(version).await?;
        Ok(store)
    }

    async fn migrate(&self, target: i64) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(backend)?;
        if current > MIGRATIONS.len() as i64 {
            return Err(StoreError::Backend(format!(
                "the database's schema is at version {current}, newer than this Keyshift knows \
                 ({}): run a Keyshift at least as new as the one that migrated it",
                MIGRATIONS.len()
            )));
        }
        for (version, sql) in MIGRATIONS
            .iter()
            .filter(|(v, _)| *v > current && *v <= target)
        {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now'))")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, ns: &'static str, key: &str) -> Result<Option<Record>> {
        let row = sqlx::query("SELECT value, revision FROM records WHERE ns = ? AND key = ?")
            .bind(ns)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            Ok(Record {
                key: key.to_owned(),
                value: row.try_get("value").map_err(backend)?,
                revision: row.try_get("revision").map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn list(
        &self,
        ns: &'static str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT key, value, revision FROM records \
             WHERE ns = ? AND key LIKE ? ESCAPE '\\' AND key > ? ORDER BY key LIMIT ?",
        )
        .bind(ns)
        .bind(like_prefix(prefix))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                Ok(Record {
                    key: row.try_get("key").map_err(backend)?,
                    value: row.try_get("value").map_err(backend)?,
                    revision: row.try_get("revision").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<()> {
        let _writer = self.writer.lock().await;
        // BEGIN IMMEDIATE takes the write lock up front, so the conditions read below cannot be
        // invalidated by another writer (another connection or another process) before COMMIT.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        for op in &ops {
            let (ns, key, expect) = match op {
                Op::Put {
                    ns, key, expect, ..
                }
                | Op::Delete { ns, key, expect }
                | Op::Check { ns, key, expect } => (*ns, key.as_str(), *expect),
            };
            let current: Option<i64> =
                sqlx::query("SELECT revision FROM records WHERE ns = ? AND key = ?")
                    .bind(ns)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?
                    .map(|row| row.try_get(0))
                    .transpose()
                    .map_err(backend)?;
            let holds = match expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::Revision(r) => current == Some(r),
            };
            if !holds {
                return Err(StoreError::Conflict {
                    ns: ns.to_owned(),
                    key: key.to_owned(),
                });
            }
            match op {
                Op::Put { value, .. } => {
                    sqlx::query(
                        "INSERT INTO records (ns, key, revision, value) VALUES (?, ?, 1, ?) \
                         ON CONFLICT (ns, key) DO UPDATE SET revision = records.revision + 1, value = excluded.value",
                    )
                    .bind(ns)
                    .bind(key)
                    .bind(value.as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
                Op::Delete { .. } => {
                    sqlx::query("DELETE FROM records WHERE ns = ? AND key = ?")
                        .bind(ns)
                        .bind(key)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                }
                Op::Check { .. } => {}
            }
        }
        let fed = self.unfed.fed(&ops);
        if !fed.is_empty() {
            // Under the write lock BEGIN IMMEDIATE took: positions commit in the order given.
            let row = sqlx::query("SELECT next_seq, pruned_through FROM change_feed WHERE id = 0")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            let first: i64 = row.try_get(0).map_err(backend)?;
            let pruned_before: i64 = row.try_get(1).map_err(backend)?;
            for (i, (ns, key)) in fed.iter().enumerate() {
                sqlx::query("INSERT INTO changes (seq, ns, key) VALUES (?, ?, ?)")
                    .bind(first + i as i64)
                    .bind(*ns)
                    .bind(*key)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            let next_seq = first + fed.len() as i64;
            let pruned = crate::pruned_through(next_seq, pruned_before);
            if pruned > pruned_before {
                sqlx::query("DELETE FROM changes WHERE seq <= ?")
                    .bind(pruned)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            sqlx::query("UPDATE change_feed SET next_seq = ?, pruned_through = ? WHERE id = 0")
                .bind(next_seq)
                .bind(pruned)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn change_head(&self) -> Result<i64> {
        let next: i64 = sqlx::query("SELECT next_seq FROM change_feed WHERE id = 0")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(backend)?;
        Ok(next - 1)
    }

    async fn changes_since(&self, after: i64, limit: usize) -> Result<Changes> {
        // One read transaction, so that the feed's bounds and its rows agree.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query("SELECT next_seq, pruned_through FROM change_feed WHERE id = 0")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let head = row.try_get::<i64, _>(0).map_err(backend)? - 1;
        let pruned: i64 = row.try_get(1).map_err(backend)?;
        if after < pruned || after > head {
            // Behind what is kept, or ahead of the feed (a restored database): start over.
            return Ok(Changes {
                next: head,
                changed: Vec::new(),
                truncated: true,
            });
        }
        let rows =
            sqlx::query("SELECT seq, ns, key FROM changes WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(after)
                .bind(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let mut changes = Changes {
            next: after,
            ..Default::default()
        };
        for row in rows {
            changes.next = row.try_get(0).map_err(backend)?;
            changes.changed.push((
                row.try_get(1).map_err(backend)?,
                row.try_get(2).map_err(backend)?,
            ));
        }
        Ok(changes)
    }

    fn exclude_from_change_feed(&self, namespaces: &[&'static str]) {
        self.unfed.exclude(namespaces);
    }

    fn backend_name(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db")).await.unwrap();
        crate::conformance::run_all(&store).await.unwrap();
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store
                .commit(vec![Op::Put {
                    ns: "t",
                    key: "a".into(),
                    value: b"1".to_vec(),
                    expect: Expect::Absent,
                }])
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.get("t", "a").await.unwrap().unwrap().value, b"1");
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(sync, 2, "synchronous must be FULL");
    }

    /// A database made by the first schema, with records in it, is upgraded in place: the feed
    /// starts empty and then records changes.
    #[tokio::test]
    async fn a_store_created_by_the_first_schema_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        {
            let store = SqliteStore::open_at(&path, 1).await.unwrap();
            sqlx::query(
                "INSERT INTO records (ns, key, revision, value) VALUES ('key', 'v1/a', 3, x'00')",
            )
            .execute(&store.pool)
            .await
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2]);
        assert_eq!(store.get("key", "v1/a").await.unwrap().unwrap().revision, 3);
        assert_eq!(store.change_head().await.unwrap(), 0);
        store
            .commit(vec![Op::Put {
                ns: "key",
                key: "v1/a".into(),
                value: b"new".to_vec(),
                expect: Expect::Revision(3),
            }])
            .await
            .unwrap();
        let changes = store.changes_since(0, 10).await.unwrap();
        assert_eq!(changes.changed, [("key".to_owned(), "v1/a".to_owned())]);
        crate::conformance::run_all(&store).await.unwrap();
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
            .execute(&store.pool)
            .await
            .unwrap();
        drop(store);
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
