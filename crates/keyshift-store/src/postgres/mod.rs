//! The scale-out backend: one PostgreSQL database shared by any number of `keyshift serve`
//! nodes, with the same semantics as the SQLite backend (the [`crate::conformance`] suite runs
//! against both).
//!
//! **Schema.** One `records(ns TEXT, key BYTEA, value BYTEA, revision BIGINT)` table, primary key
//! `(ns, key)`, from the numbered migrations in `migrations/postgres/` (`migrate.rs` says how
//! several nodes starting at once agree on who applies them). Keys are
//! stored as their UTF-8 bytes so that they compare byte by byte, as SQLite's BINARY collation
//! does, whatever the database's locale; a prefix is then the range `[prefix, prefix || 0xFF)`,
//! since 0xFF never occurs in UTF-8. The schema is the connection's (`search_path`; a URL can name
//! one with `?options[search_path]=name`).
//!
//! **Isolation.** A batch runs in one `SERIALIZABLE` transaction that first reads every key it
//! writes with `SELECT ... FOR UPDATE`, in key order (so two batches lock in the same order and do
//! not deadlock), and every key it only checks without a lock (SERIALIZABLE makes a check and a
//! concurrent change of the same record a serialization failure, so checks never queue behind
//! each other); a `CheckEmpty` is a range read, whose predicate lock does the same for a record
//! added under its prefix. It checks every condition against what it read, then writes: an `INSERT` for a new
//! key, and for an existing one an `UPDATE`/`DELETE` guarded by the revision it read. The row locks
//! make a concurrent batch on an existing key wait; SERIALIZABLE covers what locks cannot, a
//! condition on an absent key (two batches that both read "absent" cannot both commit: the second
//! fails with `40001`, or `23505` on the insert). So two nodes committing conflicting conditions
//! never both succeed: the one run again reads the winner's write and returns
//! [`StoreError::Conflict`].
//!
//! **Retries.** Whole transactions are run again, up to 8 times with
//! jittered exponential backoff, when the SQLSTATE says the database gave up on them
//! (`40001`, `40P01`, `23505`), or when the connection failed before the `COMMIT` was sent (the
//! server rolled the transaction back). A connection lost *during* the `COMMIT` is not retried: the
//! batch may have landed, and running it again could apply it twice; the caller gets
//! [`StoreError::Backend`] (a `503`), as for every other failure. Reads are run again on
//! contention and on connection failures, up to 4 times (`retry.rs`).
//!
//! **Durability.** A commit returns once PostgreSQL has acknowledged it, which with
//! `synchronous_commit` on (the default) means it is in the server's WAL on disk; the store refuses
//! to open a database where `synchronous_commit` is `off`.
//!
//! **SQL kept portable** to CockroachDB and YugabyteDB, which speak PostgreSQL's protocol but not
//! all of its SQL: no advisory locks (migrations take a lock row instead), no LISTEN/NOTIFY, no
//! PL/pgSQL or stored procedures, no `ON CONFLICT` on expressions (only on the primary key, and only
//! for the migration lock row), no collations (CockroachDB refuses `COLLATE "C"` columns; keys are
//! BYTEA instead), no sequences or SERIAL; only TEXT, BYTEA, BIGINT and TIMESTAMPTZ columns, the
//! primary-key index, `SELECT ... FOR UPDATE`, and DDL written to be run again (`IF NOT EXISTS`),
//! since YugabyteDB commits DDL statement by statement unless transactional DDL is on. This is
//! tested against PostgreSQL only.
//!
//! **TLS to PostgreSQL is not supported yet.** sqlx is built with its `postgres` feature and no TLS
//! backend (the workspace has one TLS stack, rustls with aws-lc-rs, and sqlx would bring its own
//! configuration of it). `sslmode=require`, `verify-ca` and `verify-full` are refused with a clear
//! error; a server on another host than this one is warned about, since its traffic (sealed
//! records, and the password exchange, SCRAM by default) crosses the network unencrypted.

pub(crate) mod migrate;
pub(crate) mod retry;
#[cfg(test)]
mod tests;

use crate::{Changes, Expect, FeedFilter, Op, Record, Result, Store, StoreError};
use async_trait::async_trait;
use retry::Failure;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where and how to connect. Its `Debug` and [`PostgresOptions::describe`] never show the
/// password.
#[derive(Clone)]
pub struct PostgresOptions {
    connect: PgConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("database", &self.describe())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PostgresOptions {
    /// Parses a `postgres://user[:password]@host[:port]/database[?options]` URL. The error never
    /// repeats the URL, which may hold a password. TLS modes are refused (not supported yet).
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            return Err(StoreError::Backend(
                "the store URL must start with postgres:// (postgres://user@host:port/database)"
                    .into(),
            ));
        }
        let connect: PgConnectOptions = url.parse().map_err(|_| {
            StoreError::Backend(
                "the store URL is not a PostgreSQL URL \
                 (postgres://user@host:port/database)"
                    .into(),
            )
        })?;
        if matches!(
            connect.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        ) {
            return Err(StoreError::Backend(
                "TLS to PostgreSQL is not supported yet: connect to a server on this host (or \
                 through a tunnel) without sslmode=require/verify-ca/verify-full"
                    .into(),
            ));
        }
        Ok(PostgresOptions {
            // Never try TLS (there is no TLS backend to try it with).
            connect: connect.ssl_mode(PgSslMode::Disable),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        })
    }

    /// Sets the password, replacing one from the URL (or `PGPASSWORD`).
    pub fn password(mut self, password: &str) -> Self {
        self.connect = self.connect.password(password);
        self
    }

    /// Keeps the records in `schema` (sets the connections' `search_path`); the schema must exist.
    pub fn schema(mut self, schema: &str) -> Self {
        self.connect = self.connect.options([("search_path", schema)]);
        self
    }

    /// Connections this process keeps open at most [default: 16].
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long a statement waits for a connection, retrying a refused one, before the store
    /// reports itself unavailable [default: 10 s].
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// `postgres://user@host:port/database`: what to show in logs and errors (no password).
    pub fn describe(&self) -> String {
        let c = &self.connect;
        let host = match c.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => c.get_host().to_owned(),
        };
        format!(
            "postgres://{}@{}:{}/{}",
            c.get_username(),
            host,
            c.get_port(),
            c.get_database().unwrap_or(c.get_username())
        )
    }

    fn is_local(&self) -> bool {
        let host = self.connect.get_host();
        self.connect.get_socket().is_some()
            || host.starts_with('/')
            || host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Test-only: runs after a batch's reads, before its writes, with the attempt number.
#[cfg(test)]
type AfterRead = std::sync::Arc<
    dyn Fn(u32) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// A PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    database: String,
    unfed: std::sync::Arc<FeedFilter>,
    /// Whether the schema has the change feed (only a test opens an older one).
    feed: bool,
    #[cfg(test)]
    after_read: Option<AfterRead>,
    /// Test-only: runs after a batch's writes, just before its COMMIT.
    #[cfg(test)]
    before_commit: Option<AfterRead>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Why one run of a batch did not commit.
enum Attempt {
    /// A condition did not hold: returned, not run again.
    Conflict { ns: &'static str, key: String },
    /// A statement failed; `at_commit` when it was the COMMIT itself.
    Sql { error: sqlx::Error, at_commit: bool },
    /// A guarded write found the row changed although it was locked: run again.
    Raced,
}

impl From<sqlx::Error> for Attempt {
    fn from(error: sqlx::Error) -> Self {
        Attempt::Sql {
            error,
            at_commit: false,
        }
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The exclusive upper bound of keys starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    end.push(0xFF);
    end
}

fn key_text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| StoreError::Backend("a stored key is not UTF-8".into()))
}

/// A record's namespace and key (as bytes).
type RecordKey<'a> = (&'static str, &'a [u8]);

/// Keys read under lock per statement (two bound parameters each; PostgreSQL allows 65535).
const LOCK_CHUNK: usize = 500;
/// Change rows written per statement (three bound parameters each).
const CHANGE_CHUNK: usize = 500;
/// Pending changes given positions per transaction by [`PostgresStore::stamp`].
const STAMP_LIMIT: i64 = 2_000;

impl PostgresStore {
    /// Connects, checks that commits are durable, and brings the schema up to date (several
    /// nodes may do this at once).
    pub async fn connect(options: PostgresOptions) -> Result<Self> {
        Self::connect_at(options, migrate::latest()).await
    }

    /// Connects and applies the migrations up to `version` only (tests of upgrades).
    pub(crate) async fn connect_at(options: PostgresOptions, version: i64) -> Result<Self> {
        let database = options.describe();
        if !options.is_local() {
            tracing::warn!(
                %database,
                "the connection to PostgreSQL is not encrypted (TLS is not supported yet)"
            );
        }
        let pool = PgPoolOptions::new()
            // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
            // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
            .idle_timeout(None)
            .max_lifetime(None)
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(options.connect)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to {database}: {e}")))?;
        // Not every PostgreSQL-compatible engine knows the setting; only a plain "off" is refused.
        if let Ok(row) = sqlx::query("SHOW synchronous_commit")
            .fetch_one(&pool)
            .await
        {
            if row
                .try_get::<String, _>(0)
                .is_ok_and(|v| v.eq_ignore_ascii_case("off"))
            {
                return Err(StoreError::Backend(format!(
                    "synchronous_commit is off for {database}: a commit could be acknowledged \
                     before it is durable. Set it to on for this role or database (or add \
                     ?options[synchronous_commit]=on to the URL)"
                )));
            }
        }
        migrate::migrate(&pool, version).await?;
        Ok(PostgresStore {
            pool,
            database,
            unfed: Default::default(),
            feed: version >= 3,
            #[cfg(test)]
            after_read: None,
            #[cfg(test)]
            before_commit: None,
        })
    }

    /// Runs a read, again on contention or a failed connection, at most [`retry::READ_ATTEMPTS`]
    /// times.
    async fn read<T, F, Fut>(&self, run: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
    {
        let mut attempt = 0;
        loop {
            match run().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    if retry::classify(&e) == Failure::Fatal || attempt + 1 >= retry::READ_ATTEMPTS
                    {
                        return Err(backend(e));
                    }
                    tracing::debug!(error = %e, attempt, "store read runs again");
                    tokio::time::sleep(retry::backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Reads the current revision of every key `ops` names: the rows the batch writes locked for
    /// update, in key order; the rows it only checks without a lock (SERIALIZABLE makes a batch
    /// that checked a row and one that changed it meanwhile a serialization failure, so checks
    /// of one record, as every key creation makes of its vault's, never queue behind each other).
    async fn lock_keys(
        tx: &mut Transaction<'static, Postgres>,
        ops: &[Op],
    ) -> std::result::Result<BTreeMap<(&'static str, Vec<u8>), i64>, sqlx::Error> {
        let mut written: Vec<(&'static str, &[u8])> = ops
            .iter()
            .filter(|op| matches!(op, Op::Put { .. } | Op::Delete { .. }))
            .map(|op| (op_ns(op), op_key(op)))
            .collect();
        written.sort_unstable();
        written.dedup();
        let mut checked: Vec<(&'static str, &[u8])> = ops
            .iter()
            .filter(|op| matches!(op, Op::Check { .. }))
            .map(|op| (op_ns(op), op_key(op)))
            .filter(|k| written.binary_search(k).is_err())
            .collect();
        checked.sort_unstable();
        checked.dedup();
        let mut found = BTreeMap::new();
        let chunks = written
            .chunks(LOCK_CHUNK)
            .map(|c| (c, " FOR UPDATE"))
            .chain(checked.chunks(LOCK_CHUNK).map(|c| (c, "")));
        for (chunk, lock) in chunks {
            let mut sql = String::from("SELECT ns, key, revision FROM records WHERE ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!("(ns = ${} AND key = ${})", 2 * i + 1, 2 * i + 2));
            }
            sql.push_str(" ORDER BY ns, key");
            sql.push_str(lock);
            let mut query = sqlx::query(&sql);
            for (ns, key) in chunk {
                query = query.bind(*ns).bind(*key);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let ns: String = row.try_get(0)?;
                // Map back to the op's own `&'static str`.
                if let Some((ns, _)) = chunk.iter().find(|(n, _)| *n == ns) {
                    found.insert((*ns, row.try_get::<Vec<u8>, _>(1)?), row.try_get(2)?);
                }
            }
        }
        Ok(found)
    }

    /// Whether no record of `ns` has a key under `prefix`, as the batch's earlier ops (`state`)
    /// leave them. The range read takes SERIALIZABLE's predicate lock, so a batch adding a record
    /// under the prefix meanwhile cannot commit beside this one.
    async fn none_under(
        tx: &mut Transaction<'static, Postgres>,
        ns: &'static str,
        prefix: &str,
        state: &BTreeMap<RecordKey<'_>, Option<i64>>,
    ) -> std::result::Result<bool, sqlx::Error> {
        let under = |k: &[u8]| k.starts_with(prefix.as_bytes());
        if state
            .iter()
            .any(|((n, k), rev)| *n == ns && under(k) && rev.is_some())
        {
            return Ok(false);
        }
        let gone = state
            .iter()
            .filter(|((n, k), rev)| *n == ns && under(k) && rev.is_none())
            .count();
        let rows = sqlx::query(
            "SELECT key FROM records WHERE ns = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4",
        )
        .bind(ns)
        .bind(prefix.as_bytes())
        .bind(prefix_end(prefix))
        .bind(i64::try_from(gone + 1).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key: Vec<u8> = row.try_get(0)?;
            if !state.contains_key(&(ns, key.as_slice())) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn commit_once(&self, ops: &[Op], attempt: u32) -> std::result::Result<(), Attempt> {
        #[cfg(not(test))]
        let _ = attempt; // only the test hook reads it
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .await?;
        let read = Self::lock_keys(&mut tx, ops).await?;
        #[cfg(test)]
        if let Some(hook) = &self.after_read {
            hook(attempt).await;
        }
        // Evaluate the batch in order against what was read, as SQLite does statement by
        // statement: later ops see earlier ones. `state` is each key's revision as the batch
        // goes; `writes` what each key ends as.
        let mut state: BTreeMap<RecordKey, Option<i64>> = BTreeMap::new();
        let mut writes: BTreeMap<RecordKey, Option<(i64, &[u8])>> = BTreeMap::new();
        for op in ops {
            let (ns, key) = (op_ns(op), op_key(op));
            if let Op::CheckEmpty { prefix, .. } = op {
                if !Self::none_under(&mut tx, ns, prefix, &state).await? {
                    let _ = tx.rollback().await;
                    return Err(Attempt::Conflict {
                        ns,
                        key: prefix.clone(),
                    });
                }
                continue;
            }
            let current = *state
                .entry((ns, key))
                .or_insert_with(|| read.get(&(ns, key.to_vec())).copied());
            let holds = match op_expect(op) {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::Revision(r) => current == Some(r),
            };
            if !holds {
                let _ = tx.rollback().await;
                return Err(Attempt::Conflict {
                    ns,
                    key: op_key_text(op).to_owned(),
                });
            }
            match op {
                Op::Put { value, .. } => {
                    let revision = current.map_or(1, |r| r + 1);
                    state.insert((ns, key), Some(revision));
                    writes.insert((ns, key), Some((revision, value.as_slice())));
                }
                Op::Delete { .. } => {
                    state.insert((ns, key), None);
                    writes.insert((ns, key), None);
                }
                Op::Check { .. } | Op::CheckEmpty { .. } => {}
            }
        }
        for ((ns, key), end) in writes {
            let before = read.get(&(ns, key.to_vec())).copied();
            let changed = match (before, end) {
                (None, None) => continue,
                (None, Some((revision, value))) => {
                    sqlx::query(
                        "INSERT INTO records (ns, key, revision, value) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(ns)
                    .bind(key)
                    .bind(revision)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?
                }
                (Some(old), Some((revision, value))) => {
                    sqlx::query(
                        "UPDATE records SET revision = $3, value = $4 \
                         WHERE ns = $1 AND key = $2 AND revision = $5",
                    )
                    .bind(ns)
                    .bind(key)
                    .bind(revision)
                    .bind(value)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?
                }
                (Some(old), None) => {
                    sqlx::query("DELETE FROM records WHERE ns = $1 AND key = $2 AND revision = $3")
                        .bind(ns)
                        .bind(key)
                        .bind(old)
                        .execute(&mut *tx)
                        .await?
                }
            };
            if changed.rows_affected() != 1 {
                let _ = tx.rollback().await;
                return Err(Attempt::Raced);
            }
        }
        // The change feed: this batch's keys, under an id of its own (no row shared with other
        // batches, so no new conflicts). Positions are given later by `stamp`.
        let fed = if self.feed {
            self.unfed.fed(ops)
        } else {
            Vec::new()
        };
        if !fed.is_empty() {
            let batch: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
            for chunk in fed.chunks(CHANGE_CHUNK) {
                let mut sql = String::from("INSERT INTO pending_changes (batch, ns, key) VALUES ");
                for i in 0..chunk.len() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3));
                }
                let mut query = sqlx::query(&sql).bind(batch.as_slice());
                for (ns, key) in chunk {
                    query = query.bind(*ns).bind(key.as_bytes());
                }
                query.execute(&mut *tx).await?;
            }
        }
        #[cfg(test)]
        if let Some(hook) = &self.before_commit {
            hook(attempt).await;
        }
        tx.commit().await.map_err(|error| Attempt::Sql {
            error,
            at_commit: true,
        })
    }
}

impl PostgresStore {
    /// Gives positions to what other nodes (and this one) committed since the last reader did.
    /// Two readers stamping at once queue on the lock; an engine that makes that a serialization
    /// failure instead leaves the stamping to the next call.
    async fn stamp_or_defer(&self) -> Result<()> {
        loop {
            match self.stamp().await {
                // A full round may have left more.
                Ok(n) if n as i64 == STAMP_LIMIT => continue,
                Ok(_) => return Ok(()),
                Err(e) if retry::classify(&e) == Failure::Contention => {
                    tracing::debug!(error = %e, "change feed stamping deferred");
                    return Ok(());
                }
                Err(e) => return Err(backend(e)),
            }
        }
    }

    /// Gives positions to the pending changes of committed batches: under the `change_feed` row's
    /// lock, in a READ COMMITTED transaction whose reads after the lock see every batch committed
    /// before it, including the previous stamper's work. Positions are therefore given in the
    /// order they become visible. Returns how many changes got one.
    async fn stamp(&self) -> std::result::Result<usize, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        let row =
            sqlx::query("SELECT next_seq, pruned_through FROM change_feed WHERE id = 0 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let first: i64 = row.try_get(0)?;
        let pruned_before: i64 = row.try_get(1)?;
        let pending = sqlx::query(
            "SELECT batch, ns, key FROM pending_changes ORDER BY batch, ns, key LIMIT $1",
        )
        .bind(STAMP_LIMIT)
        .fetch_all(&mut *tx)
        .await?;
        if pending.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let mut rows = Vec::with_capacity(pending.len());
        for row in &pending {
            rows.push((
                row.try_get::<Vec<u8>, _>(0)?,
                row.try_get::<String, _>(1)?,
                row.try_get::<Vec<u8>, _>(2)?,
            ));
        }
        for (c, chunk) in rows.chunks(CHANGE_CHUNK).enumerate() {
            let mut insert = String::from("INSERT INTO changes (seq, ns, key) VALUES ");
            let mut delete = String::from("DELETE FROM pending_changes WHERE ");
            for i in 0..chunk.len() {
                if i > 0 {
                    insert.push_str(", ");
                    delete.push_str(" OR ");
                }
                let (a, b, d) = (3 * i + 1, 3 * i + 2, 3 * i + 3);
                insert.push_str(&format!("(${a}, ${b}, ${d})"));
                delete.push_str(&format!("(batch = ${a} AND ns = ${b} AND key = ${d})"));
            }
            let mut insert = sqlx::query(&insert);
            let mut delete = sqlx::query(&delete);
            for (i, (batch, ns, key)) in chunk.iter().enumerate() {
                let seq = first + (c * CHANGE_CHUNK + i) as i64;
                insert = insert.bind(seq).bind(ns.as_str()).bind(key.as_slice());
                delete = delete
                    .bind(batch.as_slice())
                    .bind(ns.as_str())
                    .bind(key.as_slice());
            }
            insert.execute(&mut *tx).await?;
            delete.execute(&mut *tx).await?;
        }
        let next_seq = first + rows.len() as i64;
        let pruned = crate::pruned_through(next_seq, pruned_before);
        if pruned > pruned_before {
            sqlx::query("DELETE FROM changes WHERE seq <= $1")
                .bind(pruned)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE change_feed SET next_seq = $1, pruned_through = $2 WHERE id = 0")
            .bind(next_seq)
            .bind(pruned)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len())
    }
}

fn op_ns(op: &Op) -> &'static str {
    match op {
        Op::Put { ns, .. }
        | Op::Delete { ns, .. }
        | Op::Check { ns, .. }
        | Op::CheckEmpty { ns, .. } => ns,
    }
}

fn op_key_text(op: &Op) -> &str {
    match op {
        Op::Put { key, .. } | Op::Delete { key, .. } | Op::Check { key, .. } => key,
        Op::CheckEmpty { prefix, .. } => prefix,
    }
}

fn op_key(op: &Op) -> &[u8] {
    op_key_text(op).as_bytes()
}

fn op_expect(op: &Op) -> Expect {
    match op {
        Op::Put { expect, .. } | Op::Delete { expect, .. } | Op::Check { expect, .. } => *expect,
        Op::CheckEmpty { .. } => Expect::Any,
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, ns: &'static str, key: &str) -> Result<Option<Record>> {
        let pool = &self.pool;
        let row = self
            .read(move || {
                sqlx::query("SELECT value, revision FROM records WHERE ns = $1 AND key = $2")
                    .bind(ns)
                    .bind(key.as_bytes())
                    .fetch_optional(pool)
            })
            .await?;
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
        let end = prefix_end(prefix);
        let after = after.unwrap_or("").as_bytes();
        let pool = &self.pool;
        let end = end.as_slice();
        let rows = self
            .read(move || {
                sqlx::query(
                    "SELECT key, value, revision FROM records \
                     WHERE ns = $1 AND key >= $2 AND key < $3 AND key > $4 \
                     ORDER BY key LIMIT $5",
                )
                .bind(ns)
                .bind(prefix.as_bytes())
                .bind(end)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
            })
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Record {
                    key: key_text(row.try_get("key").map_err(backend)?)?,
                    value: row.try_get("value").map_err(backend)?,
                    revision: row.try_get("revision").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<()> {
        let mut attempt = 0;
        loop {
            let why = match self.commit_once(&ops, attempt).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Conflict { ns, key }) => {
                    return Err(StoreError::Conflict {
                        ns: ns.to_owned(),
                        key,
                    })
                }
                Err(Attempt::Sql { error, at_commit }) => {
                    let again = match retry::classify(&error) {
                        Failure::Contention => true,
                        Failure::Connection => !at_commit,
                        Failure::Fatal => false,
                    };
                    if !again || attempt + 1 >= retry::COMMIT_ATTEMPTS {
                        return Err(backend(error));
                    }
                    error.to_string()
                }
                Err(Attempt::Raced) => {
                    if attempt + 1 >= retry::COMMIT_ATTEMPTS {
                        return Err(StoreError::Backend(
                            "a locked record kept changing under the batch".into(),
                        ));
                    }
                    "a guarded write found the record changed".to_owned()
                }
            };
            tracing::debug!(reason = %why, attempt, "store batch runs again");
            tokio::time::sleep(retry::backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn change_head(&self) -> Result<i64> {
        // Changes committed before this call are at or below the head it returns.
        self.stamp_or_defer().await?;
        let pool = &self.pool;
        let next: i64 = self
            .read(move || {
                sqlx::query_scalar("SELECT next_seq FROM change_feed WHERE id = 0").fetch_one(pool)
            })
            .await?;
        Ok(next - 1)
    }

    async fn changes_since(&self, after: i64, limit: usize) -> Result<Changes> {
        self.stamp_or_defer().await?;
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let pool = &self.pool;
        // Bounds and rows from one statement, so one snapshot, so that they agree. Not an
        // explicit transaction: a follower cancelled between its statements (a node shutting
        // down) would leave its connection idle in that transaction, holding its locks (and
        // blocking DDL such as a migration) until the pool next used it.
        let (head, pruned, rows) = self
            .read(move || async move {
                let rows = sqlx::query(
                    "SELECT f.next_seq, f.pruned_through, c.seq, c.ns, c.key FROM change_feed f \
                     LEFT JOIN LATERAL (SELECT seq, ns, key FROM changes WHERE seq > $1 \
                     ORDER BY seq LIMIT $2) c ON true WHERE f.id = 0 ORDER BY c.seq",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
                let first = rows.first().ok_or(sqlx::Error::RowNotFound)?;
                let head = first.try_get::<i64, _>(0)? - 1;
                let pruned: i64 = first.try_get(1)?;
                Ok::<_, sqlx::Error>((head, pruned, rows))
            })
            .await?;
        if after < pruned || after > head {
            // Behind what is kept, or ahead of the feed (a restored database): start over.
            return Ok(Changes {
                next: head,
                changed: Vec::new(),
                truncated: true,
            });
        }
        let mut changes = Changes {
            next: after,
            ..Default::default()
        };
        for row in rows {
            // No change after `after`: one row, with the bounds only.
            let Some(seq) = row.try_get::<Option<i64>, _>(2).map_err(backend)? else {
                continue;
            };
            changes.next = seq;
            changes.changed.push((
                row.try_get(3).map_err(backend)?,
                key_text(row.try_get(4).map_err(backend)?)?,
            ));
        }
        Ok(changes)
    }

    fn exclude_from_change_feed(&self, excluded: &[(&'static str, &'static str)]) {
        self.unfed.exclude(excluded);
    }

    fn backend_name(&self) -> &'static str {
        "postgres"
    }
}
