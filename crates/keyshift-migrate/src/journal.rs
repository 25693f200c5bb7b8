//! The campaign's journal: a SQLite file next to the plan (`<plan>.journal`), WAL with
//! `synchronous=FULL`, so that whatever it says was done survives a crash.
//!
//! It records the campaign's steps (target created, roles granted, old key restricted), one row
//! per batch of items (how many, how many bytes, where in the source it ended, the audit event
//! ids of its requests), each item that failed with its reason, and each item left alone for a
//! reason worth telling (a row another writer changed while the campaign worked on it). It is a
//! record of progress, not the only guard against doing an item twice: every source also checks
//! by inspection whether an item is already under the target before switching it.

use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::{Path, PathBuf};

/// The journal of one campaign.
#[derive(Debug, Clone)]
pub struct Journal {
    pool: SqlitePool,
    path: PathBuf,
}

/// One committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Index of the source in the plan.
    pub source: usize,
    /// Sequence number within the source (0, 1, ...), across runs.
    pub seq: i64,
    /// Items switched to the target.
    pub items: u64,
    /// Items found already under the target (an earlier run switched them).
    pub skipped: u64,
    /// Items that failed (see [`Failure`]).
    pub failed: u64,
    /// Bytes of data the items protect (files: their size; wrapped keys: the key bytes).
    pub bytes: u64,
    /// Where in the source the batch ended (a byte offset for a list file; 0 otherwise).
    pub input_end: u64,
    /// Where in the output the batch ended (a byte offset for a list file; 0 otherwise).
    pub output_end: u64,
    /// Where in the source the batch ended, for sources walked by key (a database table: the
    /// pass and the last id); empty otherwise.
    pub cursor: String,
    /// Audit event ids (`x-ms-request-id`) of the batch's requests, space-separated.
    pub events: String,
    /// Unix milliseconds when it was committed.
    pub at_ms: i64,
}

/// An item that could not be migrated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// Index of the source in the plan.
    pub source: usize,
    /// The item (a path, a line's id).
    pub item: String,
    /// Why.
    pub reason: String,
}

/// An item left alone without failing, and why (it is counted in its batch's `skipped`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skip {
    /// Index of the source in the plan.
    pub source: usize,
    /// The item (a row's id).
    pub item: String,
    /// Why it was left as it is.
    pub reason: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS steps (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    source INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    items INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    input_end INTEGER NOT NULL,
    output_end INTEGER NOT NULL,
    cursor TEXT NOT NULL DEFAULT '',
    events TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, seq)
);
CREATE TABLE IF NOT EXISTS failures (
    source INTEGER NOT NULL,
    item TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (source, item)
);
CREATE TABLE IF NOT EXISTS skips (
    source INTEGER NOT NULL,
    item TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, item)
);
";

/// The journal's path for a plan.
pub fn path_for(plan: &Path) -> PathBuf {
    let mut name = plan.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

impl Journal {
    /// Opens (creating if needed) the journal of the plan at `plan`.
    pub async fn open(plan: &Path) -> Result<Journal> {
        Self::open_at(&path_for(plan), true).await
    }

    /// Opens an existing journal, read and write, without creating one.
    pub async fn open_existing(plan: &Path) -> Result<Journal> {
        Self::open_at(&path_for(plan), false).await
    }

    async fn open_at(path: &Path, create: bool) -> Result<Journal> {
        if !create && !path.exists() {
            anyhow::bail!(
                "{} does not exist: the campaign was never applied",
                path.display()
            );
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
            // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
            .idle_timeout(None)
            .max_lifetime(None)
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .context("cannot set up the journal")?;
        Ok(Journal {
            pool,
            path: path.to_owned(),
        })
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A recorded step's value.
    pub async fn step(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM steps WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .context("journal: reading a step")?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Records a step (replacing an earlier value).
    pub async fn set_step(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO steps (name, value, at_ms) VALUES (?, ?, ?)")
            .bind(name)
            .bind(value)
            .bind(crate::now_ms())
            .execute(&self.pool)
            .await
            .context("journal: recording a step")?;
        Ok(())
    }

    /// All steps, in the order they were recorded.
    pub async fn steps(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT name, value, at_ms FROM steps ORDER BY at_ms, name")
            .fetch_all(&self.pool)
            .await
            .context("journal: reading steps")?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Commits a batch and its failures in one transaction.
    pub async fn commit_batch(&self, batch: &Batch, failures: &[Failure]) -> Result<()> {
        self.commit_batch_with_skips(batch, failures, &[]).await
    }

    /// Commits a batch, its failures and the items it left alone (with why) in one transaction.
    pub async fn commit_batch_with_skips(
        &self,
        batch: &Batch,
        failures: &[Failure],
        skips: &[Skip],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.context("journal: begin")?;
        sqlx::query(
            "INSERT INTO batches (source, seq, items, skipped, failed, bytes, input_end, \
             output_end, cursor, events, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(batch.source as i64)
        .bind(batch.seq)
        .bind(batch.items as i64)
        .bind(batch.skipped as i64)
        .bind(batch.failed as i64)
        .bind(batch.bytes as i64)
        .bind(batch.input_end as i64)
        .bind(batch.output_end as i64)
        .bind(&batch.cursor)
        .bind(&batch.events)
        .bind(batch.at_ms)
        .execute(&mut *tx)
        .await
        .context("journal: recording a batch")?;
        for f in failures {
            sqlx::query("INSERT OR REPLACE INTO failures (source, item, reason) VALUES (?, ?, ?)")
                .bind(f.source as i64)
                .bind(&f.item)
                .bind(&f.reason)
                .execute(&mut *tx)
                .await
                .context("journal: recording a failure")?;
        }
        for s in skips {
            sqlx::query(
                "INSERT OR REPLACE INTO skips (source, item, reason, at_ms) VALUES (?, ?, ?, ?)",
            )
            .bind(s.source as i64)
            .bind(&s.item)
            .bind(&s.reason)
            .bind(batch.at_ms)
            .execute(&mut *tx)
            .await
            .context("journal: recording a skipped item")?;
        }
        tx.commit().await.context("journal: commit")?;
        Ok(())
    }

    /// The last committed batch of a source.
    pub async fn last_batch(&self, source: usize) -> Result<Option<Batch>> {
        Ok(self
            .batches(Some(source))
            .await?
            .into_iter()
            .max_by_key(|b| b.seq))
    }

    /// Committed batches, of one source or all, in order.
    pub async fn batches(&self, source: Option<usize>) -> Result<Vec<Batch>> {
        let rows = sqlx::query(
            "SELECT source, seq, items, skipped, failed, bytes, input_end, output_end, events, \
             at_ms, cursor FROM batches WHERE ?1 IS NULL OR source = ?1 ORDER BY source, seq",
        )
        .bind(source.map(|s| s as i64))
        .fetch_all(&self.pool)
        .await
        .context("journal: reading batches")?;
        Ok(rows
            .iter()
            .map(|r| Batch {
                source: r.get::<i64, _>(0) as usize,
                seq: r.get(1),
                items: r.get::<i64, _>(2) as u64,
                skipped: r.get::<i64, _>(3) as u64,
                failed: r.get::<i64, _>(4) as u64,
                bytes: r.get::<i64, _>(5) as u64,
                input_end: r.get::<i64, _>(6) as u64,
                output_end: r.get::<i64, _>(7) as u64,
                events: r.get(8),
                at_ms: r.get(9),
                cursor: r.get(10),
            })
            .collect())
    }

    /// Items that failed.
    pub async fn failures(&self) -> Result<Vec<Failure>> {
        let rows = sqlx::query("SELECT source, item, reason FROM failures ORDER BY source, item")
            .fetch_all(&self.pool)
            .await
            .context("journal: reading failures")?;
        Ok(rows
            .iter()
            .map(|r| Failure {
                source: r.get::<i64, _>(0) as usize,
                item: r.get(1),
                reason: r.get(2),
            })
            .collect())
    }

    /// Items left alone with a reason, in the order they were recorded.
    pub async fn skips(&self) -> Result<Vec<Skip>> {
        let rows =
            sqlx::query("SELECT source, item, reason FROM skips ORDER BY at_ms, source, item")
                .fetch_all(&self.pool)
                .await
                .context("journal: reading skipped items")?;
        Ok(rows
            .iter()
            .map(|r| Skip {
                source: r.get::<i64, _>(0) as usize,
                item: r.get(1),
                reason: r.get(2),
            })
            .collect())
    }

    /// Forgets the failures of a source (a new pass over it records them again).
    pub async fn clear_failures(&self, source: usize) -> Result<()> {
        sqlx::query("DELETE FROM failures WHERE source = ?")
            .bind(source as i64)
            .execute(&self.pool)
            .await
            .context("journal: clearing failures")?;
        Ok(())
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_batches_and_failures_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.toml");
        assert!(Journal::open_existing(&plan).await.is_err());
        let j = Journal::open(&plan).await.unwrap();
        assert_eq!(j.step("target").await.unwrap(), None);
        j.set_step("target", "kid-1").await.unwrap();
        let b = Batch {
            source: 0,
            seq: 0,
            items: 10,
            skipped: 1,
            failed: 1,
            bytes: 320,
            input_end: 1234,
            output_end: 1300,
            cursor: "0 42".into(),
            events: "e1 e2".into(),
            at_ms: 5,
        };
        j.commit_batch(
            &b,
            &[Failure {
                source: 0,
                item: "line 3".into(),
                reason: "bad".into(),
            }],
        )
        .await
        .unwrap();
        // The same batch twice is refused: the primary key guards the sequence.
        assert!(j.commit_batch(&b, &[]).await.is_err());
        let b2 = Batch {
            seq: 1,
            ..b.clone()
        };
        let skip = Skip {
            source: 0,
            item: "row 7".into(),
            reason: "changed".into(),
        };
        j.commit_batch_with_skips(&b2, &[], std::slice::from_ref(&skip))
            .await
            .unwrap();
        j.close().await;

        let j = Journal::open_existing(&plan).await.unwrap();
        assert_eq!(j.step("target").await.unwrap().as_deref(), Some("kid-1"));
        assert_eq!(j.last_batch(0).await.unwrap(), Some(b2));
        assert_eq!(j.batches(Some(0)).await.unwrap()[0], b);
        assert_eq!(j.skips().await.unwrap(), vec![skip]);
        assert_eq!(j.last_batch(1).await.unwrap(), None);
        assert_eq!(j.failures().await.unwrap().len(), 1);
        j.clear_failures(0).await.unwrap();
        assert!(j.failures().await.unwrap().is_empty());
    }
}
