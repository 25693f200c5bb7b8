//! `keyshift keyring ...`, `keyshift encrypt`, `keyshift decrypt` and `keyshift inspect`: envelope
//! encryption on files, standard input and output, and directory trees, with the KEK in a vault.
//!
//! Output is never partial: a file is written under a temporary name in its directory, synced and
//! renamed; a failed decrypt deletes what it wrote. (Standard output cannot be taken back: a
//! decrypt to `-` that fails exits non-zero after writing only authenticated segments.)

use crate::config::CommonArgs;
use anyhow::{anyhow, bail, Context, Result};
use keyshift_client::{AdminJson, KeyClient};
use keyshift_envelope::{
    default_threads, Decryptor, Encryptor, Header, Keyring, MasterKey, MasterKeyCache, Mode,
    RemoteKek, WriteBehind, DEFAULT_SEGMENT_SIZE,
};
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of encrypted files in directory trees (and the default for single files).
pub const SUFFIX: &str = "ksenv";

/// How to reach the KEK's vault.
#[derive(Debug, Clone, clap::Args)]
pub struct KekAccess {
    /// Credentials (`admin.json` shape: client_id, client_secret, token_url, ca_cert)
    /// [default: <data-dir>/admin.json].
    #[arg(long, env = "KEYSHIFT_CREDENTIALS")]
    credentials: Option<PathBuf>,
}

/// Keyring commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyringCommand {
    /// Make a keyring: a new 256-bit master key, wrapped by the KEK (a vault key that can wrap).
    Create {
        /// The KEK's key identifier (versioned, or not for its current version).
        #[arg(long)]
        kek: String,
        /// Where to write the keyring [default: keyring.json].
        #[arg(long, short, default_value = "keyring.json")]
        out: PathBuf,
        #[command(flatten)]
        access: KekAccess,
    },
    /// Move the keyring to a new KEK: unwrap the master key with the old KEK, wrap it with the new
    /// one, replace the record atomically. The previous record is kept as `<keyring>.prev` until
    /// you delete it. No data file changes.
    Rewrap {
        /// The keyring file.
        #[arg(long, default_value = "keyring.json")]
        keyring: PathBuf,
        /// The new KEK's key identifier.
        #[arg(long)]
        kek: String,
        #[command(flatten)]
        access: KekAccess,
    },
}

/// `keyshift encrypt` flags.
#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// A file, a directory (encrypted file by file, both cores), or `-` for standard input.
    input: PathBuf,
    /// Output file or directory [default: <input>.ksenv; standard output for `-`].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// 3-level: the keyring whose master key derives each file's key.
    #[arg(long, conflicts_with = "kek")]
    keyring: Option<PathBuf>,
    /// 2-level: a random data key per file, wrapped by this KEK (key identifier).
    #[arg(long)]
    kek: Option<String>,
    /// Context bound into each file's key and needed to decrypt it (e.g. `tenant=acme`).
    #[arg(long, default_value = "")]
    context: String,
    /// Plaintext bytes per segment (4096 to 4194304).
    #[arg(long, default_value_t = DEFAULT_SEGMENT_SIZE)]
    segment_size: u32,
    #[command(flatten)]
    access: KekAccess,
}

/// `keyshift decrypt` flags.
#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    /// A file, a directory of `.ksenv` files, or `-` for standard input.
    input: PathBuf,
    /// Output file or directory [default: <input> without `.ksenv`; standard output for `-`].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// The keyring (3-level files).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// The context the files were encrypted with.
    #[arg(long, default_value = "")]
    context: String,
    #[command(flatten)]
    access: KekAccess,
}

fn kek(common: &CommonArgs, access: &KekAccess) -> Result<Arc<RemoteKek>> {
    let path = match &access.credentials {
        Some(p) => p.clone(),
        None => common
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("keyshift-data"))
            .join("admin.json"),
    };
    let admin = AdminJson::read(&path)
        .map_err(|e| anyhow!("{e} (give the KEK's credentials with --credentials)"))?;
    let client = KeyClient::builder()
        .credential(Arc::new(admin.credential()?))
        .ca_pem(Some(&admin.ca_pem()?))
        .build()?;
    Ok(Arc::new(RemoteKek::new(client)))
}

fn unix_now() -> u64 {
    #[allow(clippy::disallowed_methods)] // a keyring's creation time, for people
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_keyring(path: &Path) -> Result<Keyring> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keyring {}", path.display()))?;
    Keyring::from_json(&text).with_context(|| format!("{} is not a keyring", path.display()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, renamed,
/// and the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_output(path, |w| w.write_all(bytes).map_err(Into::into))
}

/// Runs `write` into a temporary file next to `path`; on success syncs and renames it to `path`,
/// on failure deletes it. Nothing is ever left half-written under `path`.
///
/// A path that exists and is not a regular file (`/dev/null`, a FIFO, a terminal) is written to
/// directly: renaming over it would replace the device with a file.
fn atomic_output<T>(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            bail!("{} is a directory", path.display());
        }
        if !meta.is_file() {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let v = write(&mut file)?;
            file.flush()?;
            return Ok(v);
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let suffix: String = keyshift_crypto::random_bytes(6)
        .map_err(|e| anyhow!("{e}"))?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let temp = dir.join(format!(".{}.{suffix}.tmp", name.to_string_lossy()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    // Written behind: the disk takes the bytes while they are produced, not all at the sync.
    let result = WriteBehind::new(&file)
        .map_err(anyhow::Error::from)
        .and_then(|mut behind| write(&mut behind))
        .and_then(|v| {
            file.sync_all()?;
            Ok(v)
        });
    drop(file);
    match result {
        Ok(v) => {
            std::fs::rename(&temp, path).with_context(|| {
                format!("cannot rename {} to {}", temp.display(), path.display())
            })?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// A reader whose reads are done ahead by a thread of their own, so that reading the input (a
/// copy out of the page cache, as much CPU as the encryption itself on this kind of machine)
/// overlaps with the encryption instead of alternating with it. Memory: at most
/// `PREFETCH_BLOCKS` blocks of `PREFETCH_BLOCK` bytes.
struct PrefetchReader {
    blocks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
    done: bool,
}

const PREFETCH_BLOCK: usize = 1 << 20;
const PREFETCH_BLOCKS: usize = 4;

impl PrefetchReader {
    fn new<R: Read + Send + 'static>(mut inner: R) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(PREFETCH_BLOCKS);
        std::thread::spawn(move || loop {
            let mut block = vec![0u8; PREFETCH_BLOCK];
            let mut filled = 0;
            let result = loop {
                match inner.read(&mut block[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == block.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            block.truncate(filled);
            let end = filled < PREFETCH_BLOCK;
            let message = match result {
                Ok(()) => Ok(block),
                Err(e) => Err(e),
            };
            let failed = message.is_err();
            // The receiver is gone when the consumer stopped early: stop too.
            if tx.send(message).is_err() || end || failed {
                return;
            }
        });
        PrefetchReader {
            blocks: rx,
            current: Vec::new(),
            at: 0,
            done: false,
        }
    }
}

impl Read for PrefetchReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.blocks.recv() {
                Ok(Ok(block)) => {
                    self.done = block.len() < PREFETCH_BLOCK;
                    self.current = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The reading thread ended after the last block.
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Runs `write` into `--out` (atomically, see [`atomic_output`]) or, without it or with `-`, into
/// standard output.
fn to_out_or_stdout<T>(
    out: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    match out {
        Some(out) if out.as_os_str() != "-" => atomic_output(out, write),
        _ => {
            let stdout = std::io::stdout();
            let mut w = stdout.lock();
            let v = write(&mut w)?;
            w.flush()?;
            Ok(v)
        }
    }
}

/// Standard input when it is a regular file (`< file`), as a file of its own that shares its
/// offset; `None` for a pipe, a terminal or a device.
fn stdin_file() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    let file = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?);
    file.metadata().ok()?.is_file().then_some(file)
}

/// Runs a keyring command.
pub async fn run_keyring(common: &CommonArgs, cmd: KeyringCommand) -> Result<()> {
    match cmd {
        KeyringCommand::Create {
            kek: kid,
            out,
            access,
        } => {
            if out.exists() {
                bail!("{} exists: a keyring is never overwritten", out.display());
            }
            let kek = kek(common, &access)?;
            let (keyring, _) = Keyring::create(kek.as_ref(), &kid, unix_now()).await?;
            write_atomically(&out, keyring.to_json().as_bytes())?;
            println!(
                "{}",
                serde_json::json!({
                    "keyring": out,
                    "master_key_id": keyring.master_key_id_hex(),
                    "kek": keyring.kek_kid(),
                })
            );
        }
        KeyringCommand::Rewrap {
            keyring: path,
            kek: kid,
            access,
        } => {
            let old = read_keyring(&path)?;
            let kek = kek(common, &access)?;
            let new = old.rewrap(kek.as_ref(), kek.as_ref(), &kid).await?;
            // Prove the new record opens before it replaces the old one.
            new.unwrap_master_key(kek.as_ref()).await?;
            let prev = PathBuf::from(format!("{}.prev", path.display()));
            write_atomically(&prev, old.to_json().as_bytes())?;
            write_atomically(&path, new.to_json().as_bytes())?;
            println!(
                "{}",
                serde_json::json!({
                    "keyring": path,
                    "master_key_id": new.master_key_id_hex(),
                    "old_kek": old.kek_kid(),
                    "kek": new.kek_kid(),
                    "previous_record": prev,
                })
            );
        }
    }
    Ok(())
}

/// Everything needed to encrypt one file.
#[derive(Clone)]
enum Sealer {
    Three(Arc<MasterKey>),
    Two(Arc<RemoteKek>, String),
}

impl Sealer {
    async fn encryptor(&self, context: &[u8], segment: u32) -> Result<Encryptor> {
        Ok(match self {
            Sealer::Three(master) => Encryptor::three_level(master, context, segment)?,
            Sealer::Two(kek, kid) => {
                Encryptor::two_level(kek.as_ref(), kid, context, segment).await?
            }
        })
    }
}

/// (input, output) pairs of a tree, creating the output directories.
fn tree_pairs(input: &Path, out: &Path, encrypt: bool) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut pairs = Vec::new();
    let mut stack = vec![input.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rel = dir.strip_prefix(input).unwrap_or(Path::new(""));
        std::fs::create_dir_all(out.join(rel))
            .with_context(|| format!("cannot create {}", out.join(rel).display()))?;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let target = if encrypt {
                    format!("{name}.{SUFFIX}")
                } else {
                    match name.strip_suffix(&format!(".{SUFFIX}")) {
                        Some(plain) => plain.to_owned(),
                        None => continue,
                    }
                };
                pairs.push((path, out.join(rel).join(target)));
            }
        }
    }
    pairs.sort();
    Ok(pairs)
}

fn default_out(input: &Path, encrypt: bool) -> Result<PathBuf> {
    if encrypt {
        return Ok(PathBuf::from(format!("{}.{SUFFIX}", input.display())));
    }
    let text = input.to_string_lossy();
    match text.strip_suffix(&format!(".{SUFFIX}")) {
        Some(plain) if !plain.is_empty() => Ok(PathBuf::from(plain)),
        _ => bail!(
            "{} does not end in .{SUFFIX}: say where to write with --out",
            input.display()
        ),
    }
}

/// Runs jobs on every core, at most one per core at a time; returns the failures.
async fn on_every_core<F, Fut>(
    pairs: Vec<(PathBuf, PathBuf)>,
    job: F,
) -> Vec<(PathBuf, anyhow::Error)>
where
    F: Fn(PathBuf, PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let permits = Arc::new(tokio::sync::Semaphore::new(cores));
    let mut set = tokio::task::JoinSet::new();
    for (input, output) in pairs {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let fut = job(input.clone(), output);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (input, r)
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((_, Ok(()))) => {}
            Ok((input, Err(e))) => failures.push((input, e)),
            Err(e) => failures.push((PathBuf::new(), anyhow!("a worker failed: {e}"))),
        }
    }
    failures
}

fn report(kind: &str, total: usize, failures: Vec<(PathBuf, anyhow::Error)>) -> Result<()> {
    for (path, e) in &failures {
        eprintln!("error: {}: {e:#}", path.display());
    }
    if failures.is_empty() {
        eprintln!("{kind} {total} files");
        Ok(())
    } else {
        bail!("{} of {total} files failed", failures.len())
    }
}

/// `keyshift encrypt`.
pub async fn run_encrypt(common: &CommonArgs, args: EncryptArgs) -> Result<()> {
    let context = args.context.clone().into_bytes();
    let sealer = match (&args.keyring, &args.kek) {
        (Some(path), None) => {
            let keyring = read_keyring(path)?;
            let kek = kek(common, &args.access)?;
            Sealer::Three(Arc::new(keyring.unwrap_master_key(kek.as_ref()).await?))
        }
        (None, Some(kid)) => Sealer::Two(kek(common, &args.access)?, kid.clone()),
        _ => bail!("give --keyring (3-level) or --kek (2-level)"),
    };
    let segment = args.segment_size;
    if args.input.as_os_str() == "-" {
        let encryptor = sealer.encryptor(&context, segment).await?;
        return tokio::task::spawn_blocking(move || -> Result<()> {
            // `< file`: a regular file, read at its offsets like a named one.
            let regular = stdin_file();
            let run = |w: &mut dyn Write| -> Result<u64> {
                Ok(match &regular {
                    Some(file) => encryptor.encrypt_file(file, w, default_threads())?,
                    None => encryptor.encrypt_stream(PrefetchReader::new(std::io::stdin()), w)?,
                })
            };
            to_out_or_stdout(args.out.as_deref(), run).map(|_| ())
        })
        .await?;
    }
    if args.input.is_dir() {
        let out = args
            .out
            .clone()
            .ok_or_else(|| anyhow!("encrypting a directory needs --out <directory>"))?;
        let pairs = tree_pairs(&args.input, &out, true)?;
        let total = pairs.len();
        let failures = on_every_core(pairs, |input, output| {
            let sealer = sealer.clone();
            let context = context.clone();
            async move {
                let encryptor = sealer.encryptor(&context, segment).await?;
                // The files share the cores already: one thread each.
                encrypt_file(encryptor, input, output, NonZeroUsize::MIN).await
            }
        })
        .await;
        return report("encrypted", total, failures);
    }
    let out = match args.out {
        Some(o) => o,
        None => default_out(&args.input, true)?,
    };
    let encryptor = sealer.encryptor(&context, segment).await?;
    encrypt_file(encryptor, args.input, out, default_threads()).await
}

/// Encrypts one file. A regular file is read at its segments' offsets by `threads` threads at
/// once; anything else (a FIFO, a device) is read as a stream, ahead on a thread of its own.
async fn encrypt_file(
    encryptor: Encryptor,
    input: PathBuf,
    output: PathBuf,
    threads: NonZeroUsize,
) -> Result<()> {
    tokio::task::spawn_blocking(move || -> Result<()> {
        let file = std::fs::File::open(&input)
            .with_context(|| format!("cannot open {}", input.display()))?;
        let regular = file.metadata()?.is_file();
        atomic_output(&output, |w| {
            Ok(if regular {
                encryptor.encrypt_file(&file, w, threads)?
            } else {
                encryptor.encrypt_stream(PrefetchReader::new(file), w)?
            })
        })?;
        Ok(())
    })
    .await?
}

/// What decrypting needs besides the file.
struct Opener {
    kek: Arc<RemoteKek>,
    keyring: Option<Keyring>,
    cache: MasterKeyCache,
    context: Vec<u8>,
}

impl Opener {
    async fn decryptor(&self, header: &Header) -> Result<Decryptor> {
        Ok(Decryptor::unlock_cached(
            header,
            self.kek.as_ref(),
            self.keyring.as_ref(),
            &self.cache,
            &self.context,
        )
        .await?)
    }
}

/// `keyshift decrypt`.
pub async fn run_decrypt(common: &CommonArgs, args: DecryptArgs) -> Result<()> {
    let opener = Arc::new(Opener {
        kek: kek(common, &args.access)?,
        keyring: args.keyring.as_deref().map(read_keyring).transpose()?,
        cache: MasterKeyCache::default(),
        context: args.context.clone().into_bytes(),
    });
    if args.input.as_os_str() == "-" {
        if let Some(mut file) = stdin_file() {
            // `< file`: the header read exactly, then the segments at their offsets.
            let header = Header::read_from(&mut file)?;
            let decryptor = opener.decryptor(&header).await?;
            return tokio::task::spawn_blocking(move || -> Result<()> {
                let run = |w: &mut dyn Write| -> Result<u64> {
                    decryptor
                        .decrypt_file(&file, w, default_threads())
                        .map_err(|e| anyhow!("{e}"))
                };
                to_out_or_stdout(args.out.as_deref(), run).map(|_| ())
            })
            .await?;
        }
        // The header first, then the rest of the stream after it.
        let mut stdin = std::io::stdin().lock();
        let header = Header::read_from(&mut stdin)?;
        let decryptor = opener.decryptor(&header).await?;
        drop(stdin);
        let body = PrefetchReader::new(std::io::stdin());
        return to_out_or_stdout(args.out.as_deref(), |w| {
            decryptor
                .decrypt_stream(body, w)
                .map_err(|e| anyhow!("{e}"))
        })
        .map(|_| ());
    }
    if args.input.is_dir() {
        let out = args
            .out
            .clone()
            .ok_or_else(|| anyhow!("decrypting a directory needs --out <directory>"))?;
        let pairs = tree_pairs(&args.input, &out, false)?;
        let total = pairs.len();
        let failures = on_every_core(pairs, |input, output| {
            let opener = opener.clone();
            async move { decrypt_file(&opener, input, output, NonZeroUsize::MIN).await }
        })
        .await;
        return report("decrypted", total, failures);
    }
    let out = match args.out {
        Some(o) => o,
        None => default_out(&args.input, false)?,
    };
    decrypt_file(&opener, args.input, out, default_threads()).await
}

/// Decrypts one file: like [`encrypt_file`], a regular file on `threads` threads.
async fn decrypt_file(
    opener: &Opener,
    input: PathBuf,
    output: PathBuf,
    threads: NonZeroUsize,
) -> Result<()> {
    let mut file =
        std::fs::File::open(&input).with_context(|| format!("cannot open {}", input.display()))?;
    let header = Header::read_from(&mut file).with_context(|| format!("{}", input.display()))?;
    let decryptor = opener
        .decryptor(&header)
        .await
        .with_context(|| format!("{}", input.display()))?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let regular = file.metadata()?.is_file();
        atomic_output(&output, |w| {
            let result = if regular {
                decryptor.decrypt_file(&file, w, threads)
            } else {
                decryptor.decrypt_stream(PrefetchReader::new(file), w)
            };
            result
                .map(|_| ())
                .map_err(|e| anyhow!("{}: {}", input.display(), e.error))
        })
    })
    .await?
}

/// `keyshift inspect`: the header of an envelope file, without decrypting anything.
pub fn run_inspect(path: &Path) -> Result<()> {
    let mut file: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )
    };
    let header = Header::read_from(&mut file)?;
    let mut info = serde_json::json!({
        "format_version": keyshift_envelope::FORMAT_VERSION,
        "mode": match header.mode() { Mode::ThreeLevel => "3-level", Mode::TwoLevel => "2-level" },
        "segment_size": header.segment_size(),
        "header_bytes": header.len(),
    });
    if let Some(id) = header.master_key_id_hex() {
        info["master_key_id"] = id.into();
    }
    if let Some(w) = header.wrapped_key() {
        info["kek"] = w.kid.clone().into();
        info["wrap_alg"] = w.alg.clone().into();
    }
    if path.as_os_str() != "-" {
        if let Ok(meta) = std::fs::metadata(path) {
            let body = meta.len().saturating_sub(header.len() as u64);
            let seg = u64::from(header.segment_size()) + 16;
            info["segments"] = body.div_ceil(seg).max(1).into();
            info["plaintext_bytes_at_most"] =
                body.saturating_sub(16 * body.div_ceil(seg).max(1)).into();
        }
    }
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

#[cfg(test)]
mod output_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn a_device_or_fifo_is_written_to_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                std::fs::File::open(fifo)
                    .unwrap()
                    .read_to_string(&mut text)
                    .unwrap();
                text
            })
        };
        write_atomically(&fifo, b"sealed bytes").unwrap();
        // Checked before joining the reader, which would wait forever on a replaced FIFO.
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(reader.join().unwrap(), "sealed bytes");
        // No temporary file was left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory is refused; a regular file is replaced atomically.
        assert!(write_atomically(dir.path(), b"x").is_err());
        let file = dir.path().join("out.bin");
        write_atomically(&file, b"one").unwrap();
        write_atomically(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
    }
}
