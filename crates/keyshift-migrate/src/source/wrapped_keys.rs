//! A JSON-lines list of wrapped data keys, the shape services keep for customer-managed keys:
//! one object per line with `kid` (the versioned key that wrapped it), `alg` and `wrapped_key`
//! (base64url); other members (an `id`, the service's own fields) are kept.
//!
//! The new list is written beside the old one (`<file>.keyshift-new`), batch by batch: the
//! batch's lines are appended and synced, then the batch is committed to the journal with the
//! input and output offsets where it ended. A resume truncates the new list to the last committed
//! offset and reads on from the matching input offset, so every line is in the new list exactly
//! once. When every line is done the new list replaces the old one (rename, then directory sync).

use super::{Ctx, Inventory, Totals, Verification};
use crate::journal::{Batch, Failure};
use crate::rewrap::same_version;
use anyhow::{anyhow, Context, Result};
use keyshift_api::b64;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where the new list is built.
pub fn new_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".keyshift-new");
    PathBuf::from(name)
}

/// One parsed line.
enum Line {
    /// Copied as it is (blank, already under the target, under another key, or broken).
    Keep { raw: Vec<u8>, kind: Kept },
    /// Under the source key: to be rewrapped.
    Move {
        record: Map<String, Value>,
        alg: String,
        wrapped: Vec<u8>,
        raw: Vec<u8>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kept {
    Blank,
    Already,
    Other,
    Broken,
}

struct Record {
    kid: String,
    alg: String,
    wrapped: Vec<u8>,
    map: Map<String, Value>,
}

fn parse_record(raw: &[u8]) -> std::result::Result<Record, String> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|e| format!("not a JSON object: {e}"))?;
    let Value::Object(map) = value else {
        return Err("not a JSON object".into());
    };
    let field = |name: &str| -> std::result::Result<String, String> {
        map.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("no string member {name:?}"))
    };
    let kid = field("kid")?;
    let alg = field("alg")?;
    let wrapped = b64::decode(&field("wrapped_key")?)
        .map_err(|_| "wrapped_key is not base64url".to_string())?;
    Ok(Record {
        kid,
        alg,
        wrapped,
        map,
    })
}

/// The id of a line for failure reports: its `id` member, or its line number.
fn line_id(raw: &[u8], number: u64) -> String {
    serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("id").map(|id| match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
        .unwrap_or_else(|| format!("line {number}"))
}

fn classify(ctx: &Ctx, raw: Vec<u8>) -> Line {
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Line::Keep {
            raw,
            kind: Kept::Blank,
        };
    }
    match parse_record(trimmed) {
        Err(_) => Line::Keep {
            raw,
            kind: Kept::Broken,
        },
        Ok(r) if same_version(&r.kid, &ctx.rewrapper.source) => Line::Move {
            record: r.map,
            alg: r.alg,
            wrapped: r.wrapped,
            raw,
        },
        Ok(r) if same_version(&r.kid, &ctx.rewrapper.target) => Line::Keep {
            raw,
            kind: Kept::Already,
        },
        Ok(_) => Line::Keep {
            raw,
            kind: Kept::Other,
        },
    }
}

struct BatchOut {
    output: Vec<u8>,
    input_end: u64,
    lines: u64,
    totals: Totals,
    failures: Vec<Failure>,
    events: Vec<String>,
}

fn with_newline(mut raw: Vec<u8>) -> Vec<u8> {
    if raw.last() != Some(&b'\n') {
        raw.push(b'\n');
    }
    raw
}

async fn process(ctx: Ctx, lines: Vec<Line>, first_line: u64, input_end: u64) -> Result<BatchOut> {
    let moves: Vec<(String, Vec<u8>)> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Move { alg, wrapped, .. } => Some((alg.clone(), wrapped.clone())),
            Line::Keep { .. } => None,
        })
        .collect();
    let rewrapped = if moves.is_empty() {
        crate::rewrap::Rewrapped::default()
    } else {
        ctx.rewrapper.rewrap(&moves).await?
    };
    let mut results = rewrapped.items.into_iter();
    let mut out = BatchOut {
        output: Vec::with_capacity(lines.len() * 200),
        input_end,
        lines: lines.len() as u64,
        totals: Totals::default(),
        failures: Vec::new(),
        events: rewrapped.events,
    };
    let target_kid = ctx.rewrapper.target.to_string();
    for (n, line) in lines.into_iter().enumerate() {
        let number = first_line + n as u64 + 1;
        match line {
            Line::Keep { raw, kind } => {
                match kind {
                    Kept::Blank => {}
                    Kept::Already => out.totals.already += 1,
                    Kept::Other => out.totals.other += 1,
                    Kept::Broken => {
                        out.totals.failed += 1;
                        let reason = parse_record(raw.trim_ascii()).err().unwrap_or_default();
                        out.failures.push(Failure {
                            source: ctx.index,
                            item: format!("line {number}"),
                            reason: format!("not a wrapped-key record: {reason}"),
                        });
                    }
                }
                out.output.extend_from_slice(&with_newline(raw));
            }
            Line::Move {
                mut record,
                wrapped,
                raw,
                ..
            } => match results.next() {
                Some(Ok(new)) => {
                    out.totals.migrated += 1;
                    out.totals.bytes += wrapped.len() as u64;
                    record.insert("kid".into(), Value::String(target_kid.clone()));
                    record.insert(
                        "alg".into(),
                        Value::String(ctx.rewrapper.target_alg.clone()),
                    );
                    record.insert("wrapped_key".into(), Value::String(b64::encode(&new)));
                    serde_json::to_writer(&mut out.output, &record)?;
                    out.output.push(b'\n');
                }
                Some(Err(reason)) => {
                    out.totals.failed += 1;
                    out.failures.push(Failure {
                        source: ctx.index,
                        item: line_id(&raw, number),
                        reason,
                    });
                    out.output.extend_from_slice(&with_newline(raw));
                }
                None => return Err(anyhow!("fewer rewrap results than items")),
            },
        }
    }
    Ok(out)
}

/// Reads up to `count` lines from `reader`, returning them and the bytes read.
fn read_lines(reader: &mut impl BufRead, count: usize) -> Result<(Vec<Vec<u8>>, u64)> {
    let mut lines = Vec::with_capacity(count);
    let mut read = 0u64;
    while lines.len() < count {
        let mut line = Vec::with_capacity(256);
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        lines.push(line);
    }
    Ok((lines, read))
}

fn complete_step(index: usize) -> String {
    format!("source:{index}:complete")
}

/// Moves every line under the source key to the target, resuming where the journal says.
pub async fn migrate(ctx: &Ctx, path: &Path) -> Result<Totals> {
    let out_path = new_path(path);
    let journal = &ctx.journal;
    if journal.step(&complete_step(ctx.index)).await?.is_some() {
        // Every batch is in the new list: only the switch may be left to do.
        if out_path.exists() {
            std::fs::rename(&out_path, path)
                .with_context(|| format!("cannot rename {} into place", out_path.display()))?;
            crate::atomic::sync_dir(path)?;
        }
        return Ok(Totals::default());
    }
    let last = journal.last_batch(ctx.index).await?;
    let (mut seq, mut input_end, output_end) = match &last {
        Some(b) => (b.seq + 1, b.input_end, b.output_end),
        None => (0, 0, 0),
    };
    let mut line_no: u64 = 0;
    let mut input = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if input_end > 0 {
        // Count the lines before the resume point (for failure reports by line number).
        let mut counter = BufReader::new(File::open(path)?);
        let mut seen = 0u64;
        let mut buf = Vec::new();
        while seen < input_end {
            buf.clear();
            let n = counter.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            line_no += 1;
        }
    }
    input.seek(SeekFrom::Start(input_end))?;
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut output = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&out_path)
        .with_context(|| format!("cannot open {}", out_path.display()))?;
    // Whatever a killed run wrote after its last committed batch is discarded.
    output.set_len(output_end)?;
    output.seek(SeekFrom::Start(output_end))?;
    let mut output_end = output_end;
    let mut totals = Totals::default();
    let mut inflight: VecDeque<tokio::task::JoinHandle<Result<BatchOut>>> = VecDeque::new();
    let mut exhausted = false;
    loop {
        while !exhausted && inflight.len() < ctx.concurrency {
            let (raw_lines, read) = read_lines(&mut reader, ctx.batch_size)?;
            if raw_lines.is_empty() {
                exhausted = true;
                break;
            }
            input_end += read;
            let count = raw_lines.len() as u64;
            let lines: Vec<Line> = raw_lines.into_iter().map(|l| classify(ctx, l)).collect();
            inflight.push_back(tokio::spawn(process(
                ctx.clone(),
                lines,
                line_no,
                input_end,
            )));
            line_no += count;
        }
        let Some(next) = inflight.pop_front() else {
            break;
        };
        let done = next.await.context("a batch task failed")??;
        output.write_all(&done.output)?;
        output.sync_data().context("cannot sync the new list")?;
        output_end += done.output.len() as u64;
        let batch = Batch {
            source: ctx.index,
            seq,
            items: done.totals.migrated,
            skipped: done.totals.already + done.totals.other,
            failed: done.totals.failed,
            bytes: done.totals.bytes,
            input_end: done.input_end,
            output_end,
            cursor: String::new(),
            events: done.events.join(" "),
            at_ms: crate::now_ms(),
        };
        journal.commit_batch(&batch, &done.failures).await?;
        seq += 1;
        add(&mut totals, &done.totals);
        ctx.progress
            .advance(ctx.index, done.lines, done.totals.bytes);
    }
    drop(output);
    journal
        .set_step(&complete_step(ctx.index), "all lines written")
        .await?;
    std::fs::rename(&out_path, path)
        .with_context(|| format!("cannot rename {} into place", out_path.display()))?;
    crate::atomic::sync_dir(path)?;
    Ok(totals)
}

pub(crate) fn add(totals: &mut Totals, more: &Totals) {
    totals.migrated += more.migrated;
    totals.already += more.already;
    totals.failed += more.failed;
    totals.other += more.other;
    totals.changed += more.changed;
    totals.bytes += more.bytes;
}

/// Counts the lines under each key (for `--dry-run`).
pub fn inventory(
    ctx_source: &keyshift_client::Kid,
    target: Option<&keyshift_client::Kid>,
    path: &Path,
) -> Result<Inventory> {
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let mut inv = Inventory::default();
    for line in reader.split(b'\n') {
        let line = line?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match parse_record(line.trim_ascii()) {
            Ok(r) if same_version(&r.kid, ctx_source) => {
                inv.under_source += 1;
                inv.bytes += r.wrapped.len() as u64;
            }
            Ok(r) if target.is_some_and(|t| same_version(&r.kid, t)) => inv.under_target += 1,
            _ => inv.other += 1,
        }
    }
    Ok(inv)
}

/// Checks lines under the target open under it (all, or a random `sample` of them).
pub async fn verify(ctx: &Ctx, path: &Path, sample: Option<u64>) -> Result<Verification> {
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let mut ver = Verification::default();
    let mut under_target: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match parse_record(line.trim_ascii()) {
            Ok(r) if same_version(&r.kid, &ctx.rewrapper.target) => {
                under_target.push((line_id(&line, n as u64 + 1), r.wrapped));
            }
            Ok(r) if same_version(&r.kid, &ctx.rewrapper.source) => ver.under_source += 1,
            _ => {}
        }
    }
    if let Some(k) = sample {
        fastrand::shuffle(&mut under_target);
        under_target.truncate(k as usize);
    }
    for chunk in under_target.chunks(ctx.batch_size) {
        let (results, _) = ctx
            .rewrapper
            .check(chunk.iter().map(|(_, w)| w.clone()).collect())
            .await?;
        for ((id, _), r) in chunk.iter().zip(results) {
            match r {
                Ok(()) => ver.checked += 1,
                Err(reason) => ver.broken.push((id.clone(), reason)),
            }
        }
    }
    Ok(ver)
}
