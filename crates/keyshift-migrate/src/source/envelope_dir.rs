//! A directory tree of Keyshift envelope files.
//!
//! - `rewrap`: a 2-level file under the source key gets its data key rewrapped (server-side
//!   batch rewrap, checked under the target) and its header's key slot replaced; the segments
//!   are copied as they are. 3-level files are untouched: they move with their keyring.
//! - `reencrypt`: a file under the source key (2-level, or 3-level under the given keyring) is
//!   decrypted and encrypted again with a new data key, 2-level under the target key or 3-level
//!   under a new keyring wrapped by it. Each segment is opened, sealed under the new key and
//!   opened again and compared with its plaintext before it is written
//!   ([`Decryptor::reencrypt_file`]); the file is then synced and replaces the old one.
//!
//! Each pass walks the tree and looks at every header: a file already under the target is
//! skipped, so a resumed pass never switches a file twice. Files are switched with
//! [`crate::atomic`] (temporary file, sync, rename, directory sync); a batch of files is then
//! committed to the journal.

use super::{Ctx, Inventory, Totals, Verification};
use crate::atomic::{self, Staged};
use crate::journal::{Batch, Failure};
use crate::rewrap::same_version;
use anyhow::{anyhow, Context, Result};
use keyshift_client::Kid;
use keyshift_envelope::{
    Decryptor, Encryptor, Header, Kek, Keyring, MasterKey, MasterKeyCache, Mode, WrappedKey,
    WriteBehind,
};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every regular file under `root`, sorted; stale temporary files of an earlier killed run are
/// removed on the way.
pub fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                if atomic::is_temp(&entry.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_file(&path);
                } else {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What a file is, from its header.
#[derive(Debug)]
pub enum Kind {
    /// Not an envelope file.
    NotEnvelope,
    /// A 2-level file under this kid.
    TwoLevel(Header),
    /// A 3-level file under this master key id.
    ThreeLevel(Header),
}

/// Reads a file's header.
pub fn kind_of(path: &Path) -> Result<(Kind, u64)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    Ok(match Header::read_from(&mut file) {
        Ok(h) if h.mode() == Mode::TwoLevel => (Kind::TwoLevel(h), size),
        Ok(h) => (Kind::ThreeLevel(h), size),
        Err(_) => (Kind::NotEnvelope, size),
    })
}

/// The keys a re-encryption pass works with.
#[derive(Debug, Clone)]
pub struct Reencrypt {
    /// The KEK client (both vaults: kids say which).
    pub kek: Arc<dyn Kek>,
    /// The keyring of 3-level files under the source key.
    pub old_keyring: Option<Keyring>,
    /// The new keyring (3-level output), or `None` for 2-level output.
    pub new_keyring: Option<Keyring>,
    /// Its master key, unwrapped.
    pub new_master: Option<Arc<MasterKey>>,
    /// The files' context.
    pub context: Vec<u8>,
    /// Unwrapped master keys, shared by the files of a pass and by this value's clones: the old
    /// keyring's, unwrapped at the first 3-level file that needs it, and the new keyring's, put
    /// there when the pass unwrapped it (verification reads it). One request to the vault per
    /// keyring and pass (per [`keyshift_envelope::DEFAULT_MASTER_KEY_TTL`]) rather than one per
    /// file, each of which, with the audit log on, waits for a durable commit on a disk that the
    /// re-encryption itself keeps busy.
    pub master_keys: Arc<MasterKeyCache>,
}

impl Reencrypt {
    /// The decryptor of a file under the source key.
    async fn decryptor(&self, header: &Header) -> Result<Decryptor> {
        // A 3-level file of the old keyring takes the pass's one master key; a 2-level file
        // unwraps its own data key in the vault.
        Ok(Decryptor::unlock_cached(
            header,
            self.kek.as_ref(),
            self.old_keyring.as_ref(),
            &self.master_keys,
            &self.context,
        )
        .await?)
    }
}

/// Where a file stands.
enum State {
    Source,
    Target,
    Other,
}

fn state(kind: &Kind, source: &Kid, target: &Kid, re: Option<&Reencrypt>) -> State {
    match kind {
        Kind::NotEnvelope => State::Other,
        Kind::TwoLevel(h) => {
            let kid = h.kek_kid().unwrap_or_default();
            if same_version(kid, source) {
                State::Source
            } else if same_version(kid, target) && re.is_none_or(|r| r.new_keyring.is_none()) {
                State::Target
            } else {
                State::Other
            }
        }
        Kind::ThreeLevel(h) => {
            let id = h.master_key_id();
            match re {
                Some(r) if r.new_keyring.as_ref().map(|k| k.master_key_id()) == id => State::Target,
                Some(r)
                    if r.old_keyring.as_ref().is_some_and(|k| {
                        Some(k.master_key_id()) == id && same_version(k.kek_kid(), source)
                    }) =>
                {
                    State::Source
                }
                _ => State::Other,
            }
        }
    }
}

/// Counts the files under each key (for `--dry-run`).
pub fn inventory(
    source: &Kid,
    target: Option<&Kid>,
    root: &Path,
    re: Option<&Reencrypt>,
) -> Result<Inventory> {
    let target = target.cloned().unwrap_or_else(|| source.clone());
    let mut inv = Inventory::default();
    for path in walk(root)? {
        let (kind, size) = kind_of(&path)?;
        match state(&kind, source, &target, re) {
            State::Source => {
                inv.under_source += 1;
                inv.bytes += size;
            }
            State::Target if target != *source => inv.under_target += 1,
            _ => inv.other += 1,
        }
    }
    Ok(inv)
}

/// Rewraps (or re-encrypts) every file under the source key.
pub async fn migrate(ctx: &Ctx, root: &Path, re: Option<Reencrypt>) -> Result<Totals> {
    let rw = &ctx.rewrapper;
    let mut totals = Totals::default();
    let mut pending: Vec<(PathBuf, Header, u64)> = Vec::new();
    for path in walk(root)? {
        let (kind, size) = kind_of(&path)?;
        match state(&kind, &rw.source, &rw.target, re.as_ref()) {
            State::Source => {
                let header = match kind {
                    Kind::TwoLevel(h) | Kind::ThreeLevel(h) => h,
                    Kind::NotEnvelope => continue,
                };
                pending.push((path, header, size));
            }
            State::Target => totals.already += 1,
            State::Other => totals.other += 1,
        }
    }
    ctx.progress
        .advance(ctx.index, totals.already + totals.other, 0);
    let mut seq = ctx
        .journal
        .last_batch(ctx.index)
        .await?
        .map_or(0, |b| b.seq + 1);
    let chunk = match re {
        Some(_) => 64,
        None => ctx.batch_size,
    };
    for batch in pending.chunks(chunk) {
        let (done, failures, events) = match &re {
            None => rewrap_batch(ctx, batch).await?,
            Some(re) => reencrypt_batch(ctx, re, batch).await?,
        };
        let dirs: BTreeSet<&Path> = batch.iter().filter_map(|(p, _, _)| p.parent()).collect();
        for dir in dirs {
            atomic::sync_dir(&dir.join("x"))?;
        }
        let record = Batch {
            source: ctx.index,
            seq,
            items: done.migrated,
            skipped: 0,
            failed: done.failed,
            bytes: done.bytes,
            input_end: 0,
            output_end: 0,
            cursor: String::new(),
            events: events.join(" "),
            at_ms: crate::now_ms(),
        };
        ctx.journal.commit_batch(&record, &failures).await?;
        seq += 1;
        super::wrapped_keys::add(&mut totals, &done);
        ctx.progress
            .advance(ctx.index, batch.len() as u64, done.bytes);
    }
    Ok(totals)
}

/// A file, its header and size, and its rewrapped data key (or why there is none).
type Job = (PathBuf, Header, u64, std::result::Result<Vec<u8>, String>);

async fn rewrap_batch(
    ctx: &Ctx,
    batch: &[(PathBuf, Header, u64)],
) -> Result<(Totals, Vec<Failure>, Vec<String>)> {
    let rw = &ctx.rewrapper;
    let items: Vec<(String, Vec<u8>)> = batch
        .iter()
        .map(|(_, h, _)| {
            let w = h.wrapped_key().cloned().unwrap_or(WrappedKey {
                kid: String::new(),
                alg: String::new(),
                bytes: Vec::new(),
            });
            (w.alg, w.bytes)
        })
        .collect();
    let result = rw.rewrap(&items).await?;
    let target_kid = rw.target.to_string();
    let target_alg = rw.target_alg.clone();
    let jobs: Vec<Job> = batch
        .iter()
        .cloned()
        .zip(result.items)
        .map(|((p, h, s), r)| (p, h, s, r))
        .collect();
    let index = ctx.index;
    // Rewriting files is disk work: two threads.
    let halves: Vec<Vec<_>> = {
        let mid = jobs.len().div_ceil(2);
        let mut it = jobs.into_iter();
        vec![it.by_ref().take(mid).collect(), it.collect()]
    };
    let mut handles = Vec::new();
    for half in halves {
        let kid = target_kid.clone();
        let alg = target_alg.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            let mut totals = Totals::default();
            let mut failures = Vec::new();
            for (path, header, size, result) in half {
                let outcome = result.and_then(|bytes| {
                    let wrapped = WrappedKey {
                        kid: kid.clone(),
                        alg: alg.clone(),
                        bytes,
                    };
                    replace_key_slot(&path, &header, &wrapped).map_err(|e| format!("{e:#}"))
                });
                match outcome {
                    Ok(()) => {
                        totals.migrated += 1;
                        totals.bytes += size;
                    }
                    Err(reason) => {
                        totals.failed += 1;
                        failures.push(Failure {
                            source: index,
                            item: path.display().to_string(),
                            reason,
                        });
                    }
                }
            }
            (totals, failures)
        }));
    }
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for h in handles {
        let (t, f) = h.await.context("a rewrite thread failed")?;
        super::wrapped_keys::add(&mut totals, &t);
        failures.extend(f);
    }
    Ok((totals, failures, result.events))
}

/// Opens `path` positioned after its header, which must still be `header`: the file may have
/// changed since it was inventoried.
fn open_unchanged(path: &Path, header: &Header) -> Result<File> {
    let mut input = File::open(path)?;
    if Header::read_from(&mut input)? != *header {
        return Err(anyhow!(
            "the file changed during the campaign; run the pass again"
        ));
    }
    Ok(input)
}

/// Writes the file with the new key slot (same segments) and renames it over the old one.
fn replace_key_slot(path: &Path, header: &Header, wrapped: &WrappedKey) -> Result<()> {
    let new_header = header.with_wrapped_key(wrapped)?;
    let input = open_unchanged(path, header)?;
    let mut staged = Staged::create(path)?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, staged.file());
        out.write_all(new_header.as_bytes())?;
        std::io::copy(&mut BufReader::with_capacity(1 << 20, &input), &mut out)?;
        out.flush()?;
    }
    staged.commit()?;
    // Held open over the rename, so that freeing the old file happens off this thread.
    atomic::close_replaced(input);
    Ok(())
}

async fn reencrypt_batch(
    ctx: &Ctx,
    re: &Reencrypt,
    batch: &[(PathBuf, Header, u64)],
) -> Result<(Totals, Vec<Failure>, Vec<String>)> {
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    let target_kid = ctx.rewrapper.target.to_string();
    // Two files at a time, each on two threads (one reads and encrypts, one writes): a slot is
    // refilled as soon as its file is done, whichever of the two finishes first.
    let mut running = tokio::task::JoinSet::new();
    let mut queue = batch.iter().cloned();
    loop {
        while running.len() < 2 {
            let Some((path, header, size)) = queue.next() else {
                break;
            };
            let re = re.clone();
            let kid = target_kid.clone();
            running.spawn(async move {
                let r = reencrypt_file(&path, &header, &re, &kid).await;
                (path, size, r)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (path, size, r) = done.context("a re-encryption task failed")?;
        match r {
            Ok(()) => {
                totals.migrated += 1;
                totals.bytes += size;
            }
            Err(e) => {
                totals.failed += 1;
                failures.push(Failure {
                    source: ctx.index,
                    item: path.display().to_string(),
                    reason: format!("{e:#}"),
                });
            }
        }
    }
    // Sorted by path, so that the report does not depend on which file finished first.
    failures.sort_by(|a, b| a.item.cmp(&b.item));
    Ok((totals, failures, Vec::new()))
}

/// Decrypts `path` with the old keys and encrypts it again under the new ones, in place.
pub async fn reencrypt_file(
    path: &Path,
    header: &Header,
    re: &Reencrypt,
    target_kid: &str,
) -> Result<()> {
    let decryptor = re.decryptor(header).await?;
    let encryptor = match &re.new_master {
        Some(master) => Encryptor::three_level(master, &re.context, header.segment_size())?,
        None => {
            Encryptor::two_level(
                re.kek.as_ref(),
                target_kid,
                &re.context,
                header.segment_size(),
            )
            .await?
        }
    };
    // The new header opens under the new keys: for a 2-level file, its key slot unwraps under
    // the target key in the vault. (The segments are checked as they are sealed, below.)
    match &re.new_master {
        Some(master) => {
            Decryptor::from_master_key(encryptor.header(), master, &re.context)?;
        }
        None => {
            Decryptor::unlock(encryptor.header(), re.kek.as_ref(), None, &re.context).await?;
        }
    }
    let path = path.to_owned();
    let header = header.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let input = open_unchanged(&path, &header)?;
        let mut staged = Staged::create(&path)?;
        // One thread reads, opens, seals and checks (every new segment is opened again under
        // the new key and compared with the plaintext) while this one writes: two files are
        // re-encrypted at a time, so that is both cores.
        let mut out = WriteBehind::new(staged.file())?;
        decryptor
            .reencrypt_file(&input, &encryptor, &mut out, std::num::NonZeroUsize::MIN)
            .map_err(|e| anyhow!("{e}"))?;
        drop(out);
        staged.commit()?;
        atomic::close_replaced(input);
        Ok(())
    })
    .await
    .context("a re-encryption thread failed")?
}

/// Checks every file (or a random `sample`) under the target opens: 2-level files have their
/// data key unwrapped under the target and their header authenticated with it; with `re` (a
/// re-encryption campaign) files are decrypted whole.
pub async fn verify(
    ctx: &Ctx,
    root: &Path,
    re: Option<&Reencrypt>,
    kek: &Arc<dyn Kek>,
    sample: Option<u64>,
) -> Result<Verification> {
    let rw = &ctx.rewrapper;
    let mut ver = Verification::default();
    let mut under_target = Vec::new();
    for path in walk(root)? {
        let (kind, _) = kind_of(&path)?;
        match state(&kind, &rw.source, &rw.target, re) {
            State::Target => under_target.push((path, kind)),
            State::Source => ver.under_source += 1,
            State::Other => {}
        }
    }
    if let Some(k) = sample {
        fastrand::shuffle(&mut under_target);
        under_target.truncate(k as usize);
    }
    // Files are checked concurrently: a 2-level file costs one unwrap request.
    let in_flight = (ctx.concurrency * 8).max(1);
    let re = re.cloned().map(Arc::new);
    let mut queue = under_target.into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < in_flight {
            let Some((path, kind)) = queue.next() else {
                break;
            };
            let (kek, re) = (kek.clone(), re.clone());
            tasks.spawn(async move {
                let outcome = verify_file(&path, kind, re.as_deref(), kek.as_ref()).await;
                (path, outcome)
            });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let (path, outcome) = done.context("a verification task failed")?;
        match outcome {
            Ok(()) => ver.checked += 1,
            Err(e) => ver
                .broken
                .push((path.display().to_string(), format!("{e:#}"))),
        }
    }
    ver.broken.sort();
    Ok(ver)
}

async fn verify_file(path: &Path, kind: Kind, re: Option<&Reencrypt>, kek: &dyn Kek) -> Result<()> {
    let header = match kind {
        Kind::TwoLevel(h) | Kind::ThreeLevel(h) => h,
        Kind::NotEnvelope => return Ok(()),
    };
    match re {
        // Without the context the header MAC is what can be checked.
        None => keyshift_envelope::check_data_key(&header, kek).await?,
        Some(r) => {
            // The new keyring's master key is unwrapped once per pass, not once per file.
            let keyring = r.new_keyring.as_ref();
            let d =
                Decryptor::unlock_cached(&header, kek, keyring, &r.master_keys, &r.context).await?;
            let path = path.to_owned();
            let len = header.len() as u64;
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut file = File::open(&path)?;
                file.seek(SeekFrom::Start(len))?;
                d.decrypt_stream(BufReader::with_capacity(1 << 20, file), std::io::sink())
                    .map_err(|e| anyhow!("{}", e.error))?;
                Ok(())
            })
            .await
            .context("a verification thread failed")??;
        }
    }
    Ok(())
}
