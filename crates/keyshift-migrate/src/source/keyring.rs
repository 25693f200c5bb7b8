//! A 3-level keyring: the master key is unwrapped under the source key and wrapped under the
//! target, checked to unwrap there to the same master key (same id), and the record replaced
//! atomically. One item, whatever the size of the data under the keyring.

use super::{Ctx, Inventory, Totals, Verification};
use crate::journal::{Batch, Failure};
use crate::rewrap::same_version;
use anyhow::{anyhow, Context, Result};
use keyshift_client::Kid;
use keyshift_envelope::{Kek, Keyring};
use std::path::Path;

fn read(path: &Path) -> Result<Keyring> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keyring {}", path.display()))?;
    Keyring::from_json(&text).with_context(|| format!("{} is not a keyring", path.display()))
}

/// Whether the keyring is under the source, the target or neither.
pub fn inventory(source: &Kid, target: Option<&Kid>, path: &Path) -> Result<Inventory> {
    let keyring = read(path)?;
    let mut inv = Inventory::default();
    if same_version(keyring.kek_kid(), source) {
        inv.under_source = 1;
        inv.bytes = keyshift_envelope::MASTER_KEY_LEN as u64;
    } else if target.is_some_and(|t| same_version(keyring.kek_kid(), t)) {
        inv.under_target = 1;
    } else {
        inv.other = 1;
    }
    Ok(inv)
}

/// Rewraps the keyring's master key under the target.
pub async fn migrate(ctx: &Ctx, path: &Path, kek: &dyn Kek) -> Result<Totals> {
    let rw = &ctx.rewrapper;
    let keyring = read(path)?;
    let mut totals = Totals::default();
    if same_version(keyring.kek_kid(), &rw.target) {
        totals.already = 1;
        ctx.progress.advance(ctx.index, 1, 0);
        return Ok(totals);
    }
    if !same_version(keyring.kek_kid(), &rw.source) {
        totals.other = 1;
        let failure = Failure {
            source: ctx.index,
            item: path.display().to_string(),
            reason: format!(
                "the keyring is under {}, neither the source nor the target",
                keyring.kek_kid()
            ),
        };
        commit(ctx, &totals, &[failure]).await?;
        return Ok(totals);
    }
    let target_kid = rw.target.to_string();
    let outcome: Result<Keyring> = async {
        let moved = keyring.rewrap(kek, kek, &target_kid).await?;
        // The check: the new record opens under the target to the same master key.
        let master = moved.unwrap_master_key(kek).await?;
        if master.id() != keyring.master_key_id() {
            return Err(anyhow!("the rewrapped keyring holds another master key"));
        }
        Ok(moved)
    }
    .await;
    match outcome {
        Ok(moved) => {
            crate::atomic::write(path, moved.to_json().as_bytes())?;
            totals.migrated = 1;
            totals.bytes = keyshift_envelope::MASTER_KEY_LEN as u64;
            commit(ctx, &totals, &[]).await?;
        }
        Err(e) => {
            totals.failed = 1;
            let failure = Failure {
                source: ctx.index,
                item: path.display().to_string(),
                reason: format!("{e:#}"),
            };
            commit(ctx, &totals, &[failure]).await?;
        }
    }
    ctx.progress.advance(ctx.index, 1, totals.bytes);
    Ok(totals)
}

async fn commit(ctx: &Ctx, totals: &Totals, failures: &[Failure]) -> Result<()> {
    let seq = ctx
        .journal
        .last_batch(ctx.index)
        .await?
        .map_or(0, |b| b.seq + 1);
    ctx.journal
        .commit_batch(
            &Batch {
                source: ctx.index,
                seq,
                items: totals.migrated,
                skipped: totals.already + totals.other,
                failed: totals.failed,
                bytes: totals.bytes,
                input_end: 0,
                output_end: 0,
                cursor: String::new(),
                events: String::new(),
                at_ms: crate::now_ms(),
            },
            failures,
        )
        .await
}

/// Checks the keyring opens under the target.
pub async fn verify(ctx: &Ctx, path: &Path, kek: &dyn Kek) -> Result<Verification> {
    let keyring = read(path)?;
    let mut ver = Verification::default();
    if same_version(keyring.kek_kid(), &ctx.rewrapper.source) {
        ver.under_source = 1;
    } else {
        match keyring.unwrap_master_key(kek).await {
            Ok(_) if same_version(keyring.kek_kid(), &ctx.rewrapper.target) => ver.checked = 1,
            Ok(_) => ver.broken.push((
                path.display().to_string(),
                format!("under {}, not the target", keyring.kek_kid()),
            )),
            Err(e) => ver.broken.push((path.display().to_string(), e.to_string())),
        }
    }
    Ok(ver)
}
