//! A PostgreSQL table whose rows hold wrapped data keys (`wrapped-key`: a kid column and a bytea
//! column; the application's ciphertext columns are not touched) or whole 2-level envelopes
//! (`envelope`: one bytea column whose header's key slot is rewrapped, the rest kept).
//!
//! The table is walked by its id column (`WHERE id > $cursor ORDER BY id LIMIT batch`). Each
//! page's rows under the source key are rewrapped through [`crate::rewrap::Rewrapper`] (checked
//! under the target), then switched by one `UPDATE ... FROM unnest(...)` statement (one
//! transaction) whose `WHERE` holds each row to what was read: for `wrapped-key` the same kid and
//! the same wrapped bytes, for `envelope` the same header bytes. A row another writer changed in
//! between keeps what that writer wrote; it is counted as skipped and recorded with the reason in
//! the journal, not failed. Then the batch, with the cursor (`"<pass> <last id>"`), is committed to
//! the journal; a resume reads on from there, and rows a killed run had switched without
//! committing are found under the target and skipped.
//!
//! A writer that keeps using the old key may write behind the cursor; so once the walk (pass 0)
//! reaches the end, the table is read again (a sweep: pass 1, 2...) and whatever is under the
//! source key is moved, until a sweep finds nothing, at most [`MAX_SWEEPS`] sweeps per run. Rows
//! still under the source key after that are recorded as failures: the source is not done, the
//! old key is not restricted, and `resume` sweeps again once the writers use the target key.
//!
//! Names of the table and columns are checked to be plain SQL identifiers and quoted; values are
//! always bound. The connection URL comes from an environment variable; TLS to PostgreSQL is not
//! supported yet (`sslmode=require` is refused, and a connection to another host than this one
//! is warned about).

mod table;

pub use table::{quote_identifier, IdKind, Table, HEADER_PREFIX};

use super::{Ctx, Inventory, Totals, Verification};
use crate::journal::{Batch, Failure, Skip};
use crate::rewrap::{Rewrapped, Rewrapper};
use anyhow::{anyhow, Context, Result};
use keyshift_client::Kid;
use keyshift_envelope::{Kek, WrappedKey};
use sqlx::postgres::PgPool;
use sqlx::Row;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use table::{Candidate, Columns, Cursor, Id, Move, Page, State};

/// Sweeps a run makes after the walk before it reports rows still under the source key.
pub const MAX_SWEEPS: u32 = 3;

/// What one page came to.
#[derive(Default)]
struct PageOutcome {
    totals: Totals,
    failures: Vec<Failure>,
    skips: Vec<Skip>,
}

fn item(id: &Id) -> String {
    format!("row {id}")
}

/// A page being worked on: its rows and, when some are under the source key, their rewrap.
type InFlight = (Page, Option<tokio::task::JoinHandle<Result<Rewrapped>>>);

/// Walks and sweeps the table, moving every row under the source key to the target, resuming
/// where the journal says. `source_alg` is the wrap algorithm of rows without one (the source
/// key's default).
pub async fn migrate(ctx: &Ctx, table: &Table, source_alg: Option<&str>) -> Result<Totals> {
    // Only RSA and oct keys wrap: anything else has no row under it to move.
    let source_alg = source_alg.ok_or_else(|| {
        anyhow!("the source key cannot wrap keys: it has no rows of wrapped keys to move")
    })?;
    let pool = table.connect().await?;
    let kind = table.describe(&pool).await?;
    let last = ctx.journal.last_batch(ctx.index).await?;
    let mut cursor = match &last {
        Some(b) => Cursor::parse(&b.cursor, kind)?,
        None => Cursor::start(0),
    };
    let mut walk = Walk {
        ctx,
        table,
        pool: &pool,
        kind,
        source_alg,
        seq: last.map_or(0, |b| b.seq + 1),
        failed: HashSet::new(),
        totals: Totals::default(),
    };
    let mut sweeps_left = MAX_SWEEPS;
    loop {
        let pass = cursor.pass;
        let found = walk.pass(cursor).await?;
        if pass > 0 && found == 0 {
            break;
        }
        if sweeps_left == 0 {
            walk.report_stragglers(pass).await?;
            break;
        }
        sweeps_left -= 1;
        cursor = Cursor::start(pass + 1);
    }
    let totals = walk.totals;
    pool.close().await;
    Ok(totals)
}

/// One run over a table.
struct Walk<'a> {
    ctx: &'a Ctx,
    table: &'a Table,
    pool: &'a PgPool,
    kind: IdKind,
    /// The wrap algorithm of rows that do not name one.
    source_alg: &'a str,
    /// The next batch's sequence number.
    seq: i64,
    /// Rows that failed in this run: sweeps leave them alone.
    failed: HashSet<Id>,
    totals: Totals,
}

impl Walk<'_> {
    /// One pass from `cursor` to the end of the table; returns how many rows under the source
    /// key it handled. Pass 0 commits every page and counts every row; a sweep commits and
    /// counts only pages and rows under the source key.
    async fn pass(&mut self, cursor: Cursor) -> Result<u64> {
        let ctx = self.ctx;
        let rw = &ctx.rewrapper;
        let sweep = cursor.pass > 0;
        let mut after = cursor.after;
        let mut found = 0u64;
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut exhausted = false;
        loop {
            while !exhausted && inflight.len() < ctx.concurrency {
                let mut page = self
                    .table
                    .fetch_page(
                        self.pool,
                        self.kind,
                        after.as_ref(),
                        ctx.batch_size,
                        &rw.source,
                        Some(&rw.target),
                    )
                    .await?;
                let Some(last) = page.last().cloned() else {
                    exhausted = true;
                    break;
                };
                after = Some(last);
                if sweep {
                    let failed = &self.failed;
                    page.rows
                        .retain(|(id, s)| matches!(s, State::Source(_)) && !failed.contains(id));
                    if page.rows.is_empty() {
                        continue;
                    }
                }
                let moves: Vec<(String, Vec<u8>)> = page
                    .rows
                    .iter()
                    .filter_map(|(_, s)| match s {
                        State::Source(m) => Some((
                            m.alg.clone().unwrap_or_else(|| self.source_alg.to_owned()),
                            m.wrapped.clone(),
                        )),
                        _ => None,
                    })
                    .collect();
                let task = (!moves.is_empty()).then(|| {
                    let rw = rw.clone();
                    tokio::spawn(async move { rw.rewrap(&moves).await })
                });
                // Page ends are kept with the page, for its cursor.
                inflight.push_back((page, task));
            }
            let Some((page, task)) = inflight.pop_front() else {
                break;
            };
            let rewrapped = match task {
                Some(t) => t.await.context("a rewrap task failed")??,
                None => Rewrapped::default(),
            };
            let last = page.last().cloned();
            let rows = page.rows.len() as u64;
            let outcome = self.switch(page, rewrapped.items).await?;
            let t = &outcome.totals;
            found += t.migrated + t.changed + t.failed;
            let batch = Batch {
                source: ctx.index,
                seq: self.seq,
                items: t.migrated,
                skipped: t.already + t.other + t.changed,
                failed: t.failed,
                bytes: t.bytes,
                input_end: 0,
                output_end: 0,
                cursor: Cursor {
                    pass: cursor.pass,
                    after: last,
                }
                .encode(),
                events: rewrapped.events.join(" "),
                at_ms: crate::now_ms(),
            };
            ctx.journal
                .commit_batch_with_skips(&batch, &outcome.failures, &outcome.skips)
                .await?;
            self.seq += 1;
            super::wrapped_keys::add(&mut self.totals, t);
            if !sweep {
                ctx.progress.advance(ctx.index, rows, t.bytes);
            }
        }
        Ok(found)
    }

    /// Switches a page's rewrapped rows in one guarded `UPDATE`, and counts the page.
    async fn switch(
        &mut self,
        page: Page,
        results: Vec<std::result::Result<Vec<u8>, String>>,
    ) -> Result<PageOutcome> {
        let ctx = self.ctx;
        let rw = &ctx.rewrapper;
        let target_kid = rw.target.to_string();
        let mut out = PageOutcome::default();
        let mut results = results.into_iter();
        // (id, new value, row as read, bytes)
        let mut switch: Vec<(Id, Vec<u8>, Move)> = Vec::new();
        for (id, state) in page.rows {
            match state {
                State::Target(_) => out.totals.already += 1,
                State::Other => out.totals.other += 1,
                State::Source(m) => {
                    let result = results
                        .next()
                        .ok_or_else(|| anyhow!("fewer rewrap results than rows"))?;
                    let new = result.and_then(|bytes| match &m.header {
                        None => Ok(bytes),
                        Some(h) => h
                            .with_wrapped_key(&WrappedKey {
                                kid: target_kid.clone(),
                                alg: rw.target_alg.clone(),
                                bytes,
                            })
                            .map(|h| h.as_bytes().to_vec())
                            .map_err(|e| format!("cannot write the new header: {e}")),
                    });
                    match new {
                        Ok(value) => switch.push((id, value, m)),
                        Err(reason) => {
                            out.totals.failed += 1;
                            out.failures.push(Failure {
                                source: ctx.index,
                                item: item(&id),
                                reason,
                            });
                            self.failed.insert(id);
                        }
                    }
                }
            }
        }
        if switch.is_empty() {
            return Ok(out);
        }
        let switched = self.update(&switch).await?;
        for (id, _, m) in switch {
            if switched.contains(&id) {
                out.totals.migrated += 1;
                out.totals.bytes += m.bytes;
            } else {
                out.totals.changed += 1;
                out.skips.push(Skip {
                    source: ctx.index,
                    item: item(&id),
                    reason: "changed or deleted by another writer after it was read: left as \
                             that writer left it (a later pass moves it if it is under the old \
                             key)"
                        .into(),
                });
            }
        }
        Ok(out)
    }

    /// The guarded `UPDATE` (one statement, so one transaction); returns the ids it switched.
    async fn update(&self, rows: &[(Id, Vec<u8>, Move)]) -> Result<HashSet<Id>> {
        let rw = &self.ctx.rewrapper;
        let sql = self.table.update_sql(self.kind);
        let mut query = sqlx::query(&sql);
        if let Columns::WrappedKey { alg, .. } = &self.table.columns {
            query = query.bind(rw.target.to_string());
            if alg.is_some() {
                query = query.bind(rw.target_alg.clone());
            }
        }
        query = match self.kind {
            IdKind::Integer => query.bind(
                rows.iter()
                    .map(|(id, _, _)| match id {
                        Id::Int(i) => *i,
                        Id::Text(_) => 0,
                    })
                    .collect::<Vec<i64>>(),
            ),
            IdKind::Text => query.bind(
                rows.iter()
                    .map(|(id, _, _)| id.to_string())
                    .collect::<Vec<String>>(),
            ),
        };
        query = query.bind(rows.iter().map(|(_, v, _)| v.clone()).collect::<Vec<_>>());
        query = match &self.table.columns {
            Columns::WrappedKey { .. } => query
                .bind(
                    rows.iter()
                        .map(|(_, _, m)| m.kid.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    rows.iter()
                        .map(|(_, _, m)| m.wrapped.clone())
                        .collect::<Vec<_>>(),
                ),
            Columns::Envelope { .. } => query.bind(
                rows.iter()
                    .map(|(_, _, m)| {
                        m.header
                            .as_ref()
                            .map(|h| h.as_bytes().to_vec())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        let returned = query
            .fetch_all(self.pool)
            .await
            .with_context(|| format!("cannot update {}", self.table.table.name))?;
        returned
            .iter()
            .map(|r| {
                Ok(match self.kind {
                    IdKind::Integer => Id::Int(r.try_get(0)?),
                    IdKind::Text => Id::Text(r.try_get(0)?),
                })
            })
            .collect()
    }

    /// After the last sweep of a run still found rows under the source key: records each row
    /// that is still there as a failure, so that the source is not done and the old key is
    /// not restricted while writers still use it.
    async fn report_stragglers(&mut self, pass: u32) -> Result<()> {
        let rw = &self.ctx.rewrapper;
        let mut after: Option<Id> = None;
        let mut failures = Vec::new();
        loop {
            let page = self
                .table
                .fetch_page(
                    self.pool,
                    self.kind,
                    after.as_ref(),
                    self.ctx.batch_size,
                    &rw.source,
                    Some(&rw.target),
                )
                .await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            after = Some(last);
            for (id, state) in page.rows {
                if matches!(state, State::Source(_)) && !self.failed.contains(&id) {
                    failures.push(Failure {
                        source: self.ctx.index,
                        item: item(&id),
                        reason: format!(
                            "written under the old key again while {} sweeps ran: switch the \
                             writers to the target key, then resume",
                            MAX_SWEEPS
                        ),
                    });
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            source: self.ctx.index,
            seq: self.seq,
            items: 0,
            skipped: 0,
            failed: failures.len() as u64,
            bytes: 0,
            input_end: 0,
            output_end: 0,
            // A resume sweeps from the start.
            cursor: Cursor::start(pass + 1).encode(),
            events: String::new(),
            at_ms: crate::now_ms(),
        };
        self.ctx.journal.commit_batch(&batch, &failures).await?;
        self.seq += 1;
        self.totals.failed += failures.len() as u64;
        Ok(())
    }
}

/// Counts the rows under each key (for `--dry-run` and progress).
pub async fn inventory(table: &Table, source: &Kid, target: Option<&Kid>) -> Result<Inventory> {
    let pool = table.connect().await?;
    let kind = table.describe(&pool).await?;
    let mut inv = Inventory::default();
    let mut after: Option<Id> = None;
    loop {
        let page = table
            .fetch_page(&pool, kind, after.as_ref(), 1000, source, target)
            .await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        after = Some(last);
        for (_, state) in page.rows {
            match state {
                State::Source(m) => {
                    inv.under_source += 1;
                    inv.bytes += m.bytes;
                }
                State::Target(_) => inv.under_target += 1,
                State::Other => inv.other += 1,
            }
        }
    }
    pool.close().await;
    Ok(inv)
}

/// Checks the rows under the target open under it (all, or a random `sample` of them):
/// `wrapped-key` rows have their key unwrapped under the target (batch rewrap to itself);
/// `envelope` rows also have their header authenticated with the data key.
pub async fn verify(
    ctx: &Ctx,
    table: &Table,
    kek: &dyn Kek,
    sample: Option<u64>,
) -> Result<Verification> {
    let pool = table.connect().await?;
    let kind = table.describe(&pool).await?;
    let rw = &ctx.rewrapper;
    let mut ver = Verification::default();
    let mut reservoir: Vec<(Id, Candidate)> = Vec::new();
    let mut seen = 0u64;
    let mut after: Option<Id> = None;
    loop {
        let page = table
            .fetch_page(
                &pool,
                kind,
                after.as_ref(),
                ctx.batch_size,
                &rw.source,
                Some(&rw.target),
            )
            .await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        after = Some(last);
        let mut candidates = Vec::new();
        for (id, state) in page.rows {
            match state {
                State::Source(_) => ver.under_source += 1,
                State::Target(c) => candidates.push((id, c)),
                State::Other => {}
            }
        }
        match sample {
            None => check(rw, kek, candidates, &mut ver).await?,
            Some(k) => {
                // Reservoir sampling: every row under the target equally likely, in one pass.
                for c in candidates {
                    seen += 1;
                    if (reservoir.len() as u64) < k {
                        reservoir.push(c);
                    } else {
                        let j = fastrand::u64(0..seen);
                        if j < k {
                            reservoir[j as usize] = c;
                        }
                    }
                }
            }
        }
    }
    let mut it = reservoir.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<_> = it.by_ref().take(ctx.batch_size.max(1)).collect();
        check(rw, kek, chunk, &mut ver).await?;
    }
    pool.close().await;
    Ok(ver)
}

async fn check(
    rw: &Arc<Rewrapper>,
    kek: &dyn Kek,
    rows: Vec<(Id, Candidate)>,
    ver: &mut Verification,
) -> Result<()> {
    let mut wrapped = Vec::new();
    for (id, candidate) in rows {
        match candidate {
            Candidate::Wrapped(w) => wrapped.push((id, w)),
            Candidate::Envelope(h) => match keyshift_envelope::check_data_key(&h, kek).await {
                Ok(()) => ver.checked += 1,
                Err(e) => ver.broken.push((item(&id), e.to_string())),
            },
        }
    }
    if wrapped.is_empty() {
        return Ok(());
    }
    let (results, _) = rw
        .check(wrapped.iter().map(|(_, w)| w.clone()).collect())
        .await?;
    for ((id, _), r) in wrapped.iter().zip(results) {
        match r {
            Ok(()) => ver.checked += 1,
            Err(reason) => ver.broken.push((item(id), reason)),
        }
    }
    Ok(())
}
