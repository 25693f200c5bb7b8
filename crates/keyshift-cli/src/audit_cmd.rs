//! `keyshift audit ...` (read and verify the audit log) and `keyshift key usage` (who still uses a
//! key version). They read the data directory directly, beside a running server.

use crate::config::CommonArgs;
use crate::local_audit::Local;
use anyhow::{anyhow, bail, Context, Result};
use keyshift_api::ErrorCode;
use keyshift_vault::audit::{format_millis, parse_time, AuditFilter};
use keyshift_vault::{ApiError, Deployment, RequestContext, VaultRecord};
use std::io::Write;
use std::sync::Arc;

/// Audit log commands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print events as JSON lines, oldest first. Filters combine; times are RFC 3339 in UTC
    /// (`2026-11-28T15:00:00Z`), a date (`2026-11-28`) or Unix seconds.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many events [default: all].
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Write every event (or those the filters pass) as JSON lines to a file, or to standard output.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Output file [default: standard output].
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
    },
    /// Check the whole chain: every event unmodified, none missing, none reordered, none cut off
    /// the end. Exits 1 and names the first break if the log was altered.
    Verify,
    /// Drop the events that arrived before a time, at least a day ago, from the start of every
    /// chain, after writing them to a file if asked. Only blocks that verify are dropped; the
    /// chains then verify from where they start. The pruning is itself an event (`AuditPrune`).
    /// Key usage counts are kept.
    Prune {
        /// Drop events that arrived before this time (RFC 3339 in UTC, a date, or Unix seconds).
        #[arg(long)]
        before: String,
        /// Write the dropped events to this new file first, as JSON lines like `audit export`;
        /// each batch is on disk before it is dropped.
        #[arg(long)]
        export: Option<std::path::PathBuf>,
    },
}

/// How recent the newest event `audit prune` may drop is: a day ago.
const PRUNE_MIN_AGE_MS: i64 = 24 * 60 * 60 * 1000;
/// Blocks dropped per commit.
const PRUNE_BATCH: usize = 256;

/// Filters of `audit list` and `audit export`.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Events at or after this time.
    #[arg(long)]
    since: Option<String>,
    /// Events before this time.
    #[arg(long)]
    until: Option<String>,
    /// The principal's object id or client id; `local` for changes made with this command.
    #[arg(long)]
    principal: Option<String>,
    /// The vault's name.
    #[arg(long)]
    vault: Option<String>,
    /// The key's name.
    #[arg(long)]
    key: Option<String>,
    /// The operation (e.g. KeyWrap, KeyCreate, Authentication).
    #[arg(long)]
    operation: Option<String>,
    /// `success` (2xx), `failure`, or a status code (e.g. 403).
    #[arg(long)]
    result: Option<String>,
}

/// Key commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Who used each version of a key, for which operations, how often, first and last. Takes a
    /// key identifier (`https://host/keys/name[/version]`) or `name[/version]`.
    Usage {
        /// Key identifier or `name[/version]`.
        kid: String,
        /// Vault [default: the one the kid's host names, else the default vault].
        #[arg(long)]
        vault: Option<String>,
    },
    /// Create a key (or a new version of it) over HTTPS, as any client would, and print its
    /// versioned kid.
    Create {
        /// The key's name.
        name: String,
        /// Key type: RSA, RSA-HSM, EC, EC-HSM, oct-HSM.
        #[arg(long, default_value = "oct-HSM")]
        kty: String,
        /// RSA modulus or oct key size in bits.
        #[arg(long)]
        size: Option<u32>,
        /// Curve of an EC key (P-256, P-384, P-521).
        #[arg(long)]
        crv: Option<String>,
        /// Operations (repeatable) [default: all the type allows].
        #[arg(long = "op")]
        ops: Vec<String>,
        /// Vault URL [default: the credentials' vault].
        #[arg(long)]
        vault: Option<String>,
        /// Credentials (`admin.json` shape) [default: <data-dir>/admin.json].
        #[arg(long, env = "KEYSHIFT_CREDENTIALS")]
        credentials: Option<std::path::PathBuf>,
    },
}

fn msg(e: keyshift_vault::ApiError) -> anyhow::Error {
    anyhow!("{}", e.message)
}

fn time_bound(flag: &str, value: Option<String>) -> Result<Option<String>> {
    value
        .map(|v| {
            parse_time(&v).map(format_millis).ok_or_else(|| {
                anyhow!("--{flag} {v:?} is not a time: use 2026-11-28T15:00:00Z, 2026-11-28 or Unix seconds")
            })
        })
        .transpose()
}

async fn filter(d: &Deployment, args: FilterArgs) -> Result<AuditFilter> {
    if let Some(r) = &args.result {
        if !matches!(r.as_str(), "success" | "failure") && r.parse::<u16>().is_err() {
            bail!("--result must be success, failure or a status code");
        }
    }
    // Events name principals by object id; accept a client id too.
    let principal = match args.principal {
        Some(p) => match d.principal_by_client_id(&p).await.map_err(msg)? {
            Some(found) => Some(found.id),
            None => Some(p),
        },
        None => None,
    };
    Ok(AuditFilter {
        since: time_bound("since", args.since)?,
        until: time_bound("until", args.until)?,
        principal,
        vault: args.vault,
        key: args.key,
        operation: args.operation,
        result: args.result,
    })
}

/// Writes the events `filter` passes as JSON lines, page by page, at most `limit`.
async fn write_events(
    d: &Deployment,
    filter: &AuditFilter,
    limit: Option<usize>,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut written = 0u64;
    let mut after: Option<String> = None;
    loop {
        let (events, next) = d
            .audit_page(after.as_deref(), keyshift_vault::audit::READ_PAGE)
            .await
            .map_err(msg)?;
        for e in events.iter().filter(|e| filter.matches(e)) {
            if limit.is_some_and(|l| written >= l as u64) {
                return Ok(written);
            }
            serde_json::to_writer(&mut *out, e)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok(written),
        }
    }
}

/// Drops every chain's blocks of events before `before_ms`, writing them to `export` first;
/// the number of events dropped.
async fn prune(
    d: &Deployment,
    ctx: &RequestContext,
    before_ms: i64,
    mut export: Option<&mut std::io::BufWriter<std::fs::File>>,
) -> std::result::Result<u64, ApiError> {
    let io = |e: std::io::Error| {
        ApiError::new(
            ErrorCode::InternalError,
            format!("cannot write the exported events: {e}"),
        )
    };
    let mut pruned = 0;
    for chain in d.audit_chains().await? {
        loop {
            let blocks = d.audit_prunable(&chain, before_ms, PRUNE_BATCH).await?;
            if blocks.is_empty() {
                break;
            }
            if let Some(out) = export.as_deref_mut() {
                for e in blocks.iter().flat_map(|b| &b.events) {
                    serde_json::to_writer(&mut *out, e).map_err(|e| io(e.into()))?;
                    out.write_all(b"\n").map_err(io)?;
                }
                out.flush().map_err(io)?;
                out.get_ref().sync_data().map_err(io)?;
            }
            pruned += d.prune_audit_blocks(ctx, &chain, &blocks).await?;
            if blocks.len() < PRUNE_BATCH {
                break;
            }
        }
    }
    Ok(pruned)
}

/// Runs an audit command.
pub async fn run_audit(common: &CommonArgs, cmd: AuditCommand) -> Result<()> {
    let local = Local::open(common).await?;
    let d = &local.d;
    match cmd {
        AuditCommand::List { filter: f, limit } => {
            let f = filter(d, f).await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            write_events(d, &f, limit, &mut out).await?;
            out.flush()?;
        }
        AuditCommand::Export { filter: f, out } => {
            let f = filter(d, f).await?;
            match out {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(file);
                    let n = write_events(d, &f, None, &mut w).await?;
                    w.flush()?;
                    eprintln!("{n} events written to {}", path.display());
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut w = std::io::BufWriter::new(stdout.lock());
                    write_events(d, &f, None, &mut w).await?;
                    w.flush()?;
                }
            }
        }
        AuditCommand::Prune { before, export } => {
            let before_ms = parse_time(&before).ok_or_else(|| {
                anyhow!("--before {before:?} is not a time: use 2026-11-28T15:00:00Z, 2026-11-28 or Unix seconds")
            })?;
            if before_ms > d.clock().now_millis() - PRUNE_MIN_AGE_MS {
                bail!(
                    "--before must be at least a day ago: the newest events are the ones an \
                     investigation needs first"
                );
            }
            let mut file = match &export {
                Some(p) => Some(std::io::BufWriter::new(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(p)
                        .with_context(|| {
                            format!("cannot create {} (it must not exist)", p.display())
                        })?,
                )),
                None => None,
            };
            let change = local.change("AuditPrune", "", None).await?;
            let pruned = prune(d, &change.ctx, before_ms, file.as_mut()).await;
            let pruned = change.finish(pruned).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "pruned": pruned,
                    "before": format_millis(before_ms),
                    "exported_to": export,
                }))?
            );
        }
        AuditCommand::Verify => {
            let v = d.verify_audit().await.map_err(msg)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if !v.intact {
                bail!(
                    "the audit log was altered: {}",
                    v.problem.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// Where a key identifier points: its vault, name, version, and the base URL to answer with.
fn parse_kid(
    d: &Deployment,
    kid: &str,
    vault: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<(Arc<VaultRecord>, String, Option<String>, String)> {
    let (base, host, path) = match kid.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.split(':').next().unwrap_or("").to_owned();
            (
                format!("{scheme}://{authority}"),
                Some(host),
                path.to_owned(),
            )
        }
        None => (
            String::new(),
            None,
            format!("keys/{}", kid.trim_matches('/')),
        ),
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (name, version) = match segs.as_slice() {
        ["keys", name] => (*name, None),
        ["keys", name, version] => (*name, Some((*version).to_owned())),
        _ => bail!(
            "{kid:?} is not a key identifier (https://host/keys/name[/version]) or name[/version]"
        ),
    };
    let v = match (vault, &host) {
        (Some(n), _) => d.vault(n).ok_or_else(|| anyhow!("no vault named '{n}'"))?,
        (None, Some(h)) => match h.split('.').next().and_then(|label| d.vault(label)) {
            Some(v) if h.contains('.') => v,
            _ => d
                .default_vault()
                .ok_or_else(|| anyhow!("there is no default vault"))?,
        },
        (None, None) => d
            .default_vault()
            .ok_or_else(|| anyhow!("there is no default vault"))?,
    };
    let base = if base.is_empty() {
        // The URL the server answers this vault at, as far as the data directory knows.
        let public = std::fs::read(data_dir.join("serving.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|j| j["public_url"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "https://localhost".into());
        if v.default {
            public
        } else {
            public.replacen("://", &format!("://{}.", v.name), 1)
        }
    } else {
        base
    };
    Ok((v, name.to_owned(), version, base))
}

/// Runs a key command.
pub async fn run_key(common: &CommonArgs, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Usage { kid, vault } => {
            let local = Local::open(common).await?;
            let d = &local.d;
            let (v, name, version, base) = parse_kid(d, &kid, vault.as_deref(), &local.path)?;
            let report = d
                .key_usage(&RequestContext::system(base), &v, &name, version.as_deref())
                .await
                .map_err(msg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        KeyCommand::Create {
            name,
            kty,
            size,
            crv,
            ops,
            vault,
            credentials,
        } => {
            let path = credentials.unwrap_or_else(|| {
                common
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| std::path::PathBuf::from("keyshift-data"))
                    .join("admin.json")
            });
            let admin = keyshift_client::AdminJson::read(&path).map_err(|e| anyhow!("{e}"))?;
            let vault =
                keyshift_client::VaultUrl::parse(vault.as_deref().unwrap_or(&admin.vault_url))?;
            let client = keyshift_migrate::rewrap::client_from(&path)?;
            let bundle = client
                .create_key(
                    &vault,
                    &name,
                    &keyshift_api::keys::KeyCreateParameters {
                        kty: Some(kty),
                        key_size: size,
                        crv,
                        key_ops: (!ops.is_empty()).then_some(ops),
                        ..Default::default()
                    },
                )
                .await?;
            println!("{}", bundle.key.kid.unwrap_or_default());
        }
    }
    Ok(())
}
