//! `keyshift migrate ...` and `keyshift rekey`: thin shells over `keyshift-migrate`.

use crate::config::CommonArgs;
use anyhow::{anyhow, bail, Context, Result};
use keyshift_envelope::{Kek, Keyring, RemoteKek};
use keyshift_migrate::engine::{self, ApplyOptions, PlanRequest};
use keyshift_migrate::plan::{DataSource, Mode, PgLayout, DEFAULT_URL_ENV};
use keyshift_migrate::progress::Style;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Migration campaigns.
#[derive(Debug, clap::Subcommand)]
pub enum MigrateCommand {
    /// Draft a plan file for a campaign: the target key, the identities to grant (from the source
    /// key's role assignments and usage report), the data sources, the retention rule.
    Plan(Box<PlanArgs>),
    /// Do what a plan says: create the target key, grant the roles, move every source in batches
    /// under a journal (`<plan>.journal`), then restrict the old version to decrypt and unwrap.
    Apply(ApplyArgs),
    /// Go on with a campaign that was stopped or killed, from its journal.
    Resume(ApplyArgs),
    /// Progress of a campaign: items done, rate, ETA, failures.
    Status {
        /// The plan file.
        plan: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check that the items open under the target key (all of them, or a random sample).
    Verify {
        /// The plan file.
        plan: PathBuf,
        /// Check this many random items per source instead of all.
        #[arg(long)]
        sample: Option<u64>,
    },
    /// Disable the old version and delete the old key (soft delete), refusing while the
    /// retention date has not passed or the old version was used recently.
    Retire {
        /// The plan file.
        plan: PathBuf,
    },
}

/// `keyshift migrate plan` flags.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// A name for the campaign.
    #[arg(long)]
    name: String,
    /// The source key (a versioned kid; without a version, its current version).
    #[arg(long)]
    source: String,
    /// Credentials of the source vault [default: <data-dir>/admin.json].
    #[arg(long, env = "KEYSHIFT_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// The target vault's URL [default: the source's].
    #[arg(long)]
    target_vault: Option<String>,
    /// The target key's name.
    #[arg(long)]
    target_name: String,
    /// Credentials of the target vault [default: the source's].
    #[arg(long)]
    target_credentials: Option<PathBuf>,
    /// The target key type [default: the source's]; e.g. `RSA-HSM` or `oct-HSM` for a move to a
    /// managed HSM.
    #[arg(long)]
    target_kty: Option<String>,
    /// Import this BYOK transfer blob as the target instead of creating a key.
    #[arg(long)]
    byok: Option<PathBuf>,
    /// A JSON-lines list of wrapped keys (repeatable).
    #[arg(long)]
    wrapped_keys: Vec<PathBuf>,
    /// A directory tree of envelope files (repeatable).
    #[arg(long)]
    envelope_dir: Vec<PathBuf>,
    /// How envelope files move: rewrap their data keys, or re-encrypt them.
    #[arg(long, value_enum, default_value = "rewrap")]
    mode: CliMode,
    /// The envelope files' context (re-encryption).
    #[arg(long, default_value = "")]
    context: String,
    /// Re-encryption: the keyring of 3-level input files.
    #[arg(long)]
    old_keyring: Option<PathBuf>,
    /// Re-encryption: write 3-level files under this new keyring (made by apply).
    #[arg(long)]
    target_keyring: Option<PathBuf>,
    /// A 3-level keyring whose master key is rewrapped (repeatable).
    #[arg(long)]
    keyring: Vec<PathBuf>,
    /// A PostgreSQL table (`name` or `schema.name`) whose rows hold wrapped data keys or
    /// envelopes; its URL is read from `--postgres-url-env`.
    #[arg(long)]
    postgres_table: Option<String>,
    /// The environment variable holding the PostgreSQL URL (the plan keeps no password).
    #[arg(long, default_value = DEFAULT_URL_ENV)]
    postgres_url_env: String,
    /// The table's primary key (integer or text).
    #[arg(long, default_value = "id")]
    postgres_id_column: String,
    /// What the rows hold: a wrapped data key and its kid, or a whole 2-level envelope.
    #[arg(long, value_enum, default_value = "wrapped-key")]
    postgres_layout: CliPgLayout,
    /// wrapped-key: the column of the kid the data key is wrapped under (text).
    #[arg(long, default_value = "kid")]
    postgres_kid_column: String,
    /// wrapped-key: the column of the wrapped data key (bytea).
    #[arg(long, default_value = "wrapped_key")]
    postgres_wrapped_column: String,
    /// wrapped-key: the column of the wrap algorithm (text), if there is one.
    #[arg(long)]
    postgres_alg_column: Option<String>,
    /// envelope: the column of the envelope (bytea).
    #[arg(long, default_value = "data")]
    postgres_data_column: String,
    /// The date (YYYY-MM-DD) after which no backup needs the old key.
    #[arg(long)]
    keep_until: String,
    /// Days without use of the old version before `retire` deletes it.
    #[arg(long, default_value_t = 30)]
    quiet_days: u32,
    /// Where to write the plan.
    #[arg(long, short, default_value = "migration.toml")]
    out: PathBuf,
    /// Only inventory the sources (items, bytes, estimated time); write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CliPgLayout {
    WrappedKey,
    Envelope,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliMode {
    Rewrap,
    Reencrypt,
}

/// `keyshift migrate apply|resume` flags.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The plan file.
    plan: PathBuf,
    /// Progress display [default: a bar on a terminal, JSON lines otherwise].
    #[arg(long, value_enum)]
    progress: Option<CliProgress>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliProgress {
    Bar,
    Json,
    None,
}

/// `keyshift rekey` flags.
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    /// Envelope files or directories, rekeyed in place.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// 2-level output: the new KEK (a key identifier; its current version when unversioned).
    #[arg(long, conflicts_with = "keyring", required_unless_present = "keyring")]
    kek: Option<String>,
    /// 3-level output: the new keyring (made with `keyshift keyring create`).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// The keyring of 3-level input files.
    #[arg(long)]
    old_keyring: Option<PathBuf>,
    /// The files' context.
    #[arg(long, default_value = "")]
    context: String,
    /// Credentials (`admin.json` shape) [default: <data-dir>/admin.json].
    #[arg(long, env = "KEYSHIFT_CREDENTIALS")]
    credentials: Option<PathBuf>,
}

fn credentials(common: &CommonArgs, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        common
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("keyshift-data"))
            .join("admin.json")
    })
}

/// Runs a `keyshift migrate` command.
pub async fn run(common: &CommonArgs, cmd: MigrateCommand) -> Result<()> {
    match cmd {
        MigrateCommand::Plan(a) => plan(common, *a).await,
        MigrateCommand::Apply(a) | MigrateCommand::Resume(a) => apply(&a).await,
        MigrateCommand::Status { plan, json } => {
            let status = engine::status(&plan).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", engine::report_text(&status.report));
                for (s, (handled, total, rate, eta)) in
                    status.report.sources.iter().zip(&status.progress)
                {
                    let eta = eta.map_or(String::new(), |e| format!(", eta {e:.0} s"));
                    println!("  {}: {handled}/{total} items, {rate:.0}/s{eta}", s.label);
                }
            }
            Ok(())
        }
        MigrateCommand::Verify { plan, sample } => {
            let results = engine::verify(&plan, sample).await?;
            let mut bad = false;
            for (label, v) in &results {
                println!(
                    "{}",
                    serde_json::json!({"source": label, "checked": v.checked,
                        "under_source": v.under_source, "broken": v.broken})
                );
                bad |= !v.broken.is_empty() || v.under_source > 0;
            }
            if bad {
                bail!("some items do not open under the target, or are still under the source");
            }
            Ok(())
        }
        MigrateCommand::Retire { plan } => {
            #[allow(clippy::disallowed_methods)] // today's date against the plan's retention date
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let retired = engine::retire(&plan, now).await?;
            println!("{}", serde_json::to_string_pretty(&retired)?);
            Ok(())
        }
    }
}

/// The data sources the flags name.
fn sources(a: &PlanArgs) -> Vec<DataSource> {
    let mut sources = Vec::new();
    for path in &a.wrapped_keys {
        sources.push(DataSource::WrappedKeys { path: path.clone() });
    }
    for path in &a.envelope_dir {
        sources.push(DataSource::EnvelopeDir {
            path: path.clone(),
            mode: match a.mode {
                CliMode::Rewrap => Mode::Rewrap,
                CliMode::Reencrypt => Mode::Reencrypt,
            },
            context: a.context.clone(),
            keyring: a.old_keyring.clone(),
            target_keyring: a.target_keyring.clone(),
        });
    }
    for path in &a.keyring {
        sources.push(DataSource::Keyring { path: path.clone() });
    }
    if let Some(table) = &a.postgres_table {
        let wrapped = a.postgres_layout == CliPgLayout::WrappedKey;
        sources.push(DataSource::Postgres {
            url_env: a.postgres_url_env.clone(),
            table: table.clone(),
            id_column: a.postgres_id_column.clone(),
            layout: if wrapped {
                PgLayout::WrappedKey
            } else {
                PgLayout::Envelope
            },
            kid_column: wrapped.then(|| a.postgres_kid_column.clone()),
            wrapped_column: wrapped.then(|| a.postgres_wrapped_column.clone()),
            alg_column: a.postgres_alg_column.clone(),
            data_column: (!wrapped).then(|| a.postgres_data_column.clone()),
        });
    }
    sources
}

async fn plan(common: &CommonArgs, a: PlanArgs) -> Result<()> {
    let sources = sources(&a);
    let req = PlanRequest {
        name: a.name,
        source_kid: a.source,
        source_credentials: credentials(common, a.credentials),
        target_vault: a.target_vault,
        target_name: a.target_name,
        target_credentials: a.target_credentials,
        target_kty: a.target_kty,
        byok: a.byok,
        sources,
        keep_until: a.keep_until,
        quiet_days: a.quiet_days,
        plan_path: a.out.clone(),
    };
    let draft = engine::plan(&req, a.dry_run).await?;
    if a.dry_run {
        print!("{}", draft.plan.to_toml()?);
        println!("{}", serde_json::to_string_pretty(&draft)?);
        return Ok(());
    }
    if a.out.exists() {
        bail!(
            "{} exists: a plan is not overwritten (its campaign may be under way)",
            a.out.display()
        );
    }
    keyshift_migrate::atomic::write(&a.out, draft.plan.to_toml()?.as_bytes())?;
    println!(
        "{}",
        serde_json::json!({"plan": a.out, "grants": draft.plan.grants.len(),
            "sources": draft.plan.sources.len()})
    );
    Ok(())
}

async fn apply(a: &ApplyArgs) -> Result<()> {
    let progress = a.progress.map(|p| match p {
        CliProgress::Bar => Style::Bar,
        CliProgress::Json => Style::Json,
        CliProgress::None => Style::Quiet,
    });
    let report = engine::apply(&a.plan, ApplyOptions { progress }).await?;
    print!("{}", engine::report_text(&report));
    if !report.failures.is_empty() {
        bail!(
            "{} items failed (listed above and in {}.report.json); they are unchanged",
            report.failures.len(),
            a.plan.display()
        );
    }
    Ok(())
}

fn read_keyring(path: &Path) -> Result<Keyring> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keyring {}", path.display()))?;
    Ok(Keyring::from_json(&text)?)
}

/// Runs `keyshift rekey`.
pub async fn run_rekey(common: &CommonArgs, a: RekeyArgs) -> Result<()> {
    let client = keyshift_migrate::rewrap::client_from(&credentials(common, a.credentials))?;
    let new_kid = match &a.kek {
        Some(kid) => {
            let parsed = keyshift_client::parse_kid(kid)?;
            let bundle = client
                .get_key(&parsed.vault_url, &parsed.name, parsed.version.as_deref())
                .await
                .with_context(|| format!("cannot read the new KEK {kid}"))?;
            Some(
                bundle
                    .key
                    .kid
                    .ok_or_else(|| anyhow!("the new KEK has no kid"))?,
            )
        }
        None => None,
    };
    let kek: Arc<dyn Kek> = Arc::new(RemoteKek::new(client));
    let outcome = keyshift_migrate::rekey::rekey(keyshift_migrate::rekey::RekeyRequest {
        paths: a.paths,
        kek,
        new_kid,
        new_keyring: a.keyring.as_deref().map(read_keyring).transpose()?,
        old_keyring: a.old_keyring.as_deref().map(read_keyring).transpose()?,
        context: a.context.into_bytes(),
    })
    .await?;
    println!("{}", serde_json::to_string(&outcome)?);
    if !outcome.failed.is_empty() {
        bail!(
            "{} files could not be rekeyed; they are unchanged",
            outcome.failed.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Args {
        #[command(flatten)]
        plan: PlanArgs,
    }

    fn parse(extra: &[&str]) -> Vec<DataSource> {
        let mut argv = vec![
            "plan",
            "--name",
            "c",
            "--source",
            "https://localhost:8443/keys/k",
            "--target-name",
            "k2",
            "--keep-until",
            "2027-01-01",
        ];
        argv.extend_from_slice(extra);
        sources(&Args::try_parse_from(argv).unwrap().plan)
    }

    #[test]
    fn postgres_flags_make_a_postgres_source() {
        assert!(parse(&[]).is_empty());
        let s = parse(&[
            "--postgres-table",
            "shop.orders",
            "--postgres-kid-column",
            "kek_kid",
            "--postgres-alg-column",
            "alg",
        ]);
        assert_eq!(
            s,
            vec![DataSource::Postgres {
                url_env: DEFAULT_URL_ENV.into(),
                table: "shop.orders".into(),
                id_column: "id".into(),
                layout: PgLayout::WrappedKey,
                kid_column: Some("kek_kid".into()),
                wrapped_column: Some("wrapped_key".into()),
                alg_column: Some("alg".into()),
                data_column: None,
            }]
        );
        let s = parse(&[
            "--postgres-table",
            "objects",
            "--postgres-layout",
            "envelope",
            "--postgres-data-column",
            "body",
            "--postgres-url-env",
            "SHOP_DB",
        ]);
        let DataSource::Postgres {
            layout,
            data_column,
            kid_column,
            url_env,
            ..
        } = &s[0]
        else {
            panic!("{s:?}");
        };
        assert_eq!(*layout, PgLayout::Envelope);
        assert_eq!(data_column.as_deref(), Some("body"));
        assert_eq!(*kid_column, None);
        assert_eq!(url_env, "SHOP_DB");
    }
}
