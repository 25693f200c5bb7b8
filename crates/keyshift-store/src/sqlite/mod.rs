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
    /// Every commit of this process runs on one thread that owns one connection: whole
    /// transactions cross to it once, rather than every statement crossing to a connection's
    /// worker (sqlx), which cost ~0.4 ms of context switches per commit. One thread also means
    /// writers of this process queue here rather than poll SQLite's busy handler, which sleeps in
    /// steps of up to 100 ms. Other processes (`keyshift vault create`) still meet the busy
    /// timeout.
    writer: std::sync::mpsc::Sender<Commit>,
    unfed: std::sync::Arc<FeedFilter>,
}

/// A transaction for the writer thread, and where its outcome goes.
type Commit = (Vec<Op>, tokio::sync::oneshot::Sender<Result<()>>);

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
            // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
            // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
            .idle_timeout(None)
            .max_lifetime(None)
            .max_connections(8)
            // No min_connections either: without reaping, sqlx opens those at once on a task of
            // its own, racing `migrate` below for a fresh file's first write lock (SQLITE_BUSY).
            // Connections opened on use stay open, so the pool stays warm all the same.
            .connect_with(options)
            .await
            .map_err(backend)?;
        let unfed: std::sync::Arc<FeedFilter> = Default::default();
        // The schema first: the writer's connection prepares statements against it.
        migrate(&pool, version).await?;
        let writer = spawn_writer(path, unfed.clone())?;
        Ok(SqliteStore {
            pool,
            writer,
            unfed,
        })
    }
}

/// Brings the schema up to migration `target`, in one transaction.
async fn migrate(pool: &SqlitePool, target: i64) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
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
        sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now'))",
        )
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
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

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Opens the writer's connection (same settings as the pool's) and starts its thread, which
/// ends when the last handle to the store is dropped.
fn spawn_writer(
    path: &Path,
    unfed: std::sync::Arc<FeedFilter>,
) -> Result<std::sync::mpsc::Sender<Commit>> {
    let mut conn = rusqlite::Connection::open(path).map_err(sqlite_error)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sqlite_error)?;
    // journal_mode is the file's (WAL, set by the pool); synchronous and foreign_keys are the
    // connection's own.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite_error)?;
    // Acknowledged means on disk: refuse to start rather than commit with less.
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(sqlite_error)?;
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(sqlite_error)?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(StoreError::Backend(format!(
            "the SQLite writer must run in WAL mode with synchronous=FULL (found {mode}, {sync})"
        )));
    }
    conn.set_prepared_statement_cache_capacity(32);
    let (tx, rx) = std::sync::mpsc::channel::<Commit>();
    std::thread::Builder::new()
        .name("keyshift-sqlite-writer".into())
        .spawn(move || {
            for (ops, done) in rx {
                let result = commit_on(&mut conn, &ops, &unfed);
                let _ = done.send(result);
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start the SQLite writer: {e}")))?;
    Ok(tx)
}

/// One transaction: every condition checked and every write made under the write lock that
/// `BEGIN IMMEDIATE` takes up front (so no other writer, in this process or another, can
/// invalidate a condition before COMMIT), then the change feed, then COMMIT, which with
/// `synchronous=FULL` returns once the WAL is synced.
fn commit_on(conn: &mut rusqlite::Connection, ops: &[Op], unfed: &FeedFilter) -> Result<()> {
    use rusqlite::{params, OptionalExtension, TransactionBehavior};
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    for op in ops {
        let (ns, key, expect) = match op {
            Op::Put {
                ns, key, expect, ..
            }
            | Op::Delete { ns, key, expect }
            | Op::Check { ns, key, expect } => (*ns, key.as_str(), *expect),
            Op::CheckEmpty { ns, prefix } => {
                let found: Option<i64> = tx
                    .prepare_cached(
                        "SELECT 1 FROM records WHERE ns = ?1 AND key LIKE ?2 ESCAPE '\\' LIMIT 1",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![ns, like_prefix(prefix)], |row| row.get(0))
                            .optional()
                    })
                    .map_err(sqlite_error)?;
                if found.is_some() {
                    return Err(StoreError::Conflict {
                        ns: (*ns).to_owned(),
                        key: prefix.clone(),
                    });
                }
                continue;
            }
        };
        let current: Option<i64> = tx
            .prepare_cached("SELECT revision FROM records WHERE ns = ?1 AND key = ?2")
            .and_then(|mut st| st.query_row(params![ns, key], |row| row.get(0)).optional())
            .map_err(sqlite_error)?;
        let holds = match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Revision(r) => current == Some(r),
        };
        if !holds {
            // Dropping `tx` rolls back.
            return Err(StoreError::Conflict {
                ns: ns.to_owned(),
                key: key.to_owned(),
            });
        }
        match op {
            Op::Put { value, .. } => {
                tx.prepare_cached(
                    "INSERT INTO records (ns, key, revision, value) VALUES (?1, ?2, 1, ?3) \
                     ON CONFLICT (ns, key) DO UPDATE SET revision = records.revision + 1, value = excluded.value",
                )
                .and_then(|mut st| st.execute(params![ns, key, value.as_slice()]))
                .map_err(sqlite_error)?;
            }
            Op::Delete { .. } => {
                tx.prepare_cached("DELETE FROM records WHERE ns = ?1 AND key = ?2")
                    .and_then(|mut st| st.execute(params![ns, key]))
                    .map_err(sqlite_error)?;
            }
            Op::Check { .. } | Op::CheckEmpty { .. } => {}
        }
    }
    let fed = unfed.fed(ops);
    if !fed.is_empty() {
        // Under the write lock: positions commit in the order given.
        let (first, pruned_before): (i64, i64) = tx
            .prepare_cached("SELECT next_seq, pruned_through FROM change_feed WHERE id = 0")
            .and_then(|mut st| st.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
            .map_err(sqlite_error)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO changes (seq, ns, key) VALUES (?1, ?2, ?3)")
                .map_err(sqlite_error)?;
            for (i, (ns, key)) in fed.iter().enumerate() {
                insert
                    .execute(params![first + i as i64, *ns, *key])
                    .map_err(sqlite_error)?;
            }
        }
        let next_seq = first + fed.len() as i64;
        let pruned = crate::pruned_through(next_seq, pruned_before);
        if pruned > pruned_before {
            tx.prepare_cached("DELETE FROM changes WHERE seq <= ?1")
                .and_then(|mut st| st.execute(params![pruned]))
                .map_err(sqlite_error)?;
        }
        tx.prepare_cached("UPDATE change_feed SET next_seq = ?1, pruned_through = ?2 WHERE id = 0")
            .and_then(|mut st| st.execute(params![next_seq, pruned]))
            .map_err(sqlite_error)?;
    }
    tx.commit().map_err(sqlite_error)
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
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.writer
            .send((ops, done))
            .map_err(|_| StoreError::Backend("the SQLite writer thread has stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer thread has stopped".into()))?
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

    fn exclude_from_change_feed(&self, excluded: &[(&'static str, &'static str)]) {
        self.unfed.exclude(excluded);
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
