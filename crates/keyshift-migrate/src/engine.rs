//! The campaign: draft a plan, apply it (and resume it), report its status, verify it, retire the
//! old key.

use crate::journal::{Failure, Journal, Skip};
use crate::plan::{self, DataSource, Grant, Limits, Mode, Plan, Retention, SourceKey, TargetKey};
use crate::progress::{Progress, Style};
use crate::rewrap::{client_from, same_version, Limiter, Rewrapper};
use crate::source::envelope_dir::{self, Reencrypt};
use crate::source::postgres::{self, Table};
use crate::source::{keyring, wrapped_keys, Ctx, Inventory, Totals, Verification};
use anyhow::{anyhow, bail, Context, Result};
use keyshift_api::keys::{
    JsonWebKey, KeyCreateParameters, KeyImportParameters, KeyUpdateParameters,
};
use keyshift_client::{parse_kid, KeyClient, Kid, VaultUrl};
use keyshift_envelope::{Kek, Keyring, RemoteKek};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Estimated rates for `--dry-run` (from `docs/benchmarks.md`, this project's 2-core machine).
const EST_WRAPPED_KEYS_PER_S: f64 = 20_000.0;
const EST_REENCRYPT_BYTES_PER_S: f64 = 300.0 * 1024.0 * 1024.0;
const EST_FILES_PER_S: f64 = 2_000.0;

/// What `keyshift migrate plan` is told.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// Campaign name.
    pub name: String,
    /// Source key (a version, or the key for its current version).
    pub source_kid: String,
    /// Credentials of the source vault.
    pub source_credentials: PathBuf,
    /// Target vault URL (default: the source's).
    pub target_vault: Option<String>,
    /// Target key name.
    pub target_name: String,
    /// Credentials of the target vault (default: the source's).
    pub target_credentials: Option<PathBuf>,
    /// Key type of the target (default: the source's; `RSA-HSM`... for a move to an HSM).
    pub target_kty: Option<String>,
    /// A BYOK blob to import as the target.
    pub byok: Option<PathBuf>,
    /// Data sources.
    pub sources: Vec<DataSource>,
    /// Retention date of the old key (`YYYY-MM-DD`).
    pub keep_until: String,
    /// Days without use before `retire`.
    pub quiet_days: u32,
    /// Where the plan will be written (paths in it are made relative to its directory).
    pub plan_path: PathBuf,
}

/// A drafted plan and, for `--dry-run`, the inventory of its sources.
#[derive(Debug, Serialize)]
pub struct Draft {
    /// The plan.
    #[serde(skip)]
    pub plan: Plan,
    /// Per source: what is there.
    pub inventory: Vec<(String, Inventory)>,
    /// Items under the source key in all sources.
    pub items: u64,
    /// Bytes they protect.
    pub bytes: u64,
    /// Estimated time to move them, seconds.
    pub estimated_seconds: f64,
}

fn versioned(bundle_kid: Option<&str>) -> Result<Kid> {
    let kid = parse_kid(bundle_kid.ok_or_else(|| anyhow!("the key has no kid"))?)?;
    if kid.version.is_none() {
        bail!("the service answered a kid without a version");
    }
    Ok(kid)
}

fn key_size(key: &JsonWebKey) -> Option<u32> {
    key.n.as_ref().map(|n| {
        let bytes = n.iter().skip_while(|b| **b == 0).count();
        (bytes * 8) as u32
    })
}

fn family(kty: &str) -> &str {
    kty.trim_end_matches("-HSM")
}

/// Default wrap algorithm for a key type.
pub fn default_wrap_alg(kty: &str) -> Result<&'static str> {
    match family(kty) {
        "oct" => Ok("A256KW"),
        "RSA" => Ok("RSA-OAEP-256"),
        other => bail!("a {other} key cannot wrap keys: the target must be an RSA or oct key"),
    }
}

/// Role names differ between vaults and managed HSMs; the same role in the other kind.
fn role_in_other_kind(name: &str) -> Option<String> {
    name.strip_prefix("Key Vault ")
        .map(|rest| format!("Managed HSM {rest}"))
        .or_else(|| {
            name.strip_prefix("Managed HSM ")
                .map(|rest| format!("Key Vault {rest}"))
        })
}

/// Drafts a plan: the source key's type and operations for the target, the identities to grant
/// from the source's role assignments and usage report, and (with `dry_run`) an inventory.
pub async fn plan(req: &PlanRequest, dry_run: bool) -> Result<Draft> {
    let source_client = client_from(&req.source_credentials)?;
    let given = parse_kid(&req.source_kid)?;
    let bundle = source_client
        .get_key(&given.vault_url, &given.name, given.version.as_deref())
        .await
        .with_context(|| format!("cannot read the source key {}", req.source_kid))?;
    let source = versioned(bundle.key.kid.as_deref())?;
    let source_kty = bundle.key.kty.clone().unwrap_or_default();
    let target_credentials = req
        .target_credentials
        .clone()
        .unwrap_or_else(|| req.source_credentials.clone());
    let target_client = client_from(&target_credentials)?;
    let target_vault = match &req.target_vault {
        Some(v) => VaultUrl::parse(v)?,
        None => source.vault_url.clone(),
    };
    let kty = req.target_kty.clone().unwrap_or_else(|| source_kty.clone());
    default_wrap_alg(&kty)?;
    let mut key_ops: Vec<String> = bundle.key.key_ops.clone().unwrap_or_default();
    if family(&kty) != family(&source_kty) {
        key_ops = vec!["wrapKey".into(), "unwrapKey".into()];
    }
    let target_scope = format!("/keys/{}", req.target_name);
    let grants = draft_grants(
        &source_client,
        &source,
        &target_client,
        &target_vault,
        &target_scope,
    )
    .await?;

    let rel = |p: &Path| relative_to_plan(&req.plan_path, p);
    let plan = Plan {
        version: plan::PLAN_VERSION,
        name: req.name.clone(),
        source: SourceKey {
            kid: source.to_string(),
            credentials: rel(&req.source_credentials),
        },
        target: TargetKey {
            vault: target_vault.to_string(),
            name: req.target_name.clone(),
            credentials: rel(&target_credentials),
            kty: Some(kty.clone()),
            key_size: if req.byok.is_some() {
                None
            } else {
                match family(&kty) {
                    "RSA" => key_size(&bundle.key).or(Some(3072)),
                    "oct" => Some(256),
                    _ => None,
                }
            },
            crv: bundle.key.crv.clone(),
            key_ops,
            byok: req.byok.as_deref().map(rel),
            wrap_alg: None,
        },
        grants,
        sources: req
            .sources
            .iter()
            .map(|s| relativize_source(&req.plan_path, s))
            .collect(),
        retention: Retention {
            keep_until: req.keep_until.clone(),
            quiet_days: req.quiet_days,
        },
        limits: Limits::default(),
    };
    plan.check()?;
    let mut draft = Draft {
        plan,
        inventory: Vec::new(),
        items: 0,
        bytes: 0,
        estimated_seconds: 0.0,
    };
    if dry_run {
        for s in &draft.plan.sources {
            let inv = inventory(&req.plan_path, &draft.plan, s, &source, None).await?;
            draft.items += inv.under_source;
            draft.bytes += inv.bytes;
            draft.estimated_seconds += match s {
                DataSource::WrappedKeys { .. } => inv.under_source as f64 / EST_WRAPPED_KEYS_PER_S,
                DataSource::EnvelopeDir {
                    mode: Mode::Reencrypt,
                    ..
                } => inv.bytes as f64 / EST_REENCRYPT_BYTES_PER_S,
                DataSource::EnvelopeDir { .. } => inv.under_source as f64 / EST_FILES_PER_S,
                DataSource::Keyring { .. } => 0.1,
                DataSource::Postgres { .. } => inv.under_source as f64 / EST_WRAPPED_KEYS_PER_S,
            };
            draft.inventory.push((s.label(), inv));
        }
    }
    Ok(draft)
}

fn relative_to_plan(plan_path: &Path, path: &Path) -> PathBuf {
    let dir = plan_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (dir, path_abs) = (abs(dir), abs(path));
    path_abs
        .strip_prefix(&dir)
        .map(Path::to_owned)
        .unwrap_or(path_abs)
}

fn relativize_source(plan_path: &Path, s: &DataSource) -> DataSource {
    let rel = |p: &Path| relative_to_plan(plan_path, p);
    match s {
        DataSource::WrappedKeys { path } => DataSource::WrappedKeys { path: rel(path) },
        DataSource::Keyring { path } => DataSource::Keyring { path: rel(path) },
        DataSource::Postgres { .. } => s.clone(),
        DataSource::EnvelopeDir {
            path,
            mode,
            context,
            keyring,
            target_keyring,
        } => DataSource::EnvelopeDir {
            path: rel(path),
            mode: *mode,
            context: context.clone(),
            keyring: keyring.as_deref().map(rel),
            target_keyring: target_keyring.as_deref().map(rel),
        },
    }
}

async fn draft_grants(
    source_client: &KeyClient,
    source: &Kid,
    target_client: &KeyClient,
    target_vault: &VaultUrl,
    target_scope: &str,
) -> Result<Vec<Grant>> {
    let source_scope = format!("/keys/{}", source.name);
    let same_vault = source.vault_url == *target_vault;
    let source_roles: BTreeMap<String, String> = source_client
        .list_role_definitions(&source.vault_url)
        .await
        .context("cannot list the source vault's role definitions")?
        .into_iter()
        .map(|d| (d.name.to_ascii_lowercase(), d.properties.role_name))
        .collect();
    let target_roles: Vec<String> = target_client
        .list_role_definitions(target_vault)
        .await
        .context("cannot list the target vault's role definitions")?
        .into_iter()
        .map(|d| d.properties.role_name)
        .collect();
    let in_target = |role: &str| -> Option<String> {
        if target_roles.iter().any(|r| r == role) {
            return Some(role.to_owned());
        }
        role_in_other_kind(role).filter(|r| target_roles.iter().any(|t| t == r))
    };
    // Who already holds what over the target key in the target vault.
    let existing: Vec<(String, String)> = target_client
        .list_role_assignments(target_vault, "/")
        .await
        .context("cannot list the target vault's role assignments")?
        .into_iter()
        .filter(|a| covers(&a.properties.scope, target_scope))
        .map(|a| {
            (
                a.properties.principal_id,
                guid_of(&a.properties.role_definition_id),
            )
        })
        .collect();
    let target_role_ids: BTreeMap<String, String> = target_client
        .list_role_definitions(target_vault)
        .await?
        .into_iter()
        .map(|d| (d.properties.role_name, d.name.to_ascii_lowercase()))
        .collect();
    let holds = |principal: &str, role: &str| {
        existing
            .iter()
            .any(|(p, r)| p == principal && target_role_ids.get(role).is_some_and(|id| id == r))
    };
    let mut grants: Vec<Grant> = Vec::new();
    for a in source_client
        .list_role_assignments(&source.vault_url, "/")
        .await
        .context("cannot list the source vault's role assignments")?
    {
        let scope = &a.properties.scope;
        if !covers(scope, &source_scope) {
            continue;
        }
        if same_vault && scope != &source_scope {
            continue; // a vault-wide assignment covers the target key already
        }
        let Some(role) = source_roles.get(&guid_of(&a.properties.role_definition_id)) else {
            continue;
        };
        let Some(role) = in_target(role) else {
            continue;
        };
        let principal = a.properties.principal_id.clone();
        if holds(&principal, &role)
            || grants
                .iter()
                .any(|g| g.principal == principal && g.role == role)
        {
            continue;
        }
        grants.push(Grant {
            principal,
            role,
            reason: format!("role assignment {} at {scope} in the source vault", a.name),
        });
    }
    let usage = source_client
        .key_usage(&source.vault_url, &source.name, source.version.as_deref())
        .await
        .context("cannot read the source key's usage report")?;
    let mut by_principal: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for version in &usage.versions {
        for entry in &version.usage {
            let e = by_principal.entry(entry.principal.clone()).or_default();
            e.0.push(format!("{} x{}", entry.operation, entry.count));
            if entry.last_used > e.1 {
                e.1 = entry.last_used.clone();
            }
        }
    }
    for (principal, (ops, last)) in by_principal {
        let crypto = ops.iter().any(|o| {
            ["KeyEncrypt", "KeyDecrypt", "KeySign", "KeyVerify"]
                .iter()
                .any(|p| o.starts_with(p))
        });
        let role = if crypto {
            "Key Vault Crypto User"
        } else {
            "Key Vault Crypto Service Encryption User"
        };
        let Some(role) = in_target(role) else {
            continue;
        };
        let admin = [
            "Key Vault Administrator",
            "Managed HSM Administrator",
            "Key Vault Crypto Officer",
            "Managed HSM Crypto Officer",
        ];
        if holds(&principal, &role)
            || admin.iter().any(|r| holds(&principal, r))
            || grants.iter().any(|g| g.principal == principal)
        {
            continue;
        }
        grants.push(Grant {
            principal,
            role,
            reason: format!("used the source version: {} (last {last})", ops.join(", ")),
        });
    }
    Ok(grants)
}

fn covers(assignment_scope: &str, resource: &str) -> bool {
    assignment_scope == "/"
        || assignment_scope.eq_ignore_ascii_case(resource)
        || (assignment_scope == "/keys" && resource.starts_with("/keys/"))
}

/// The GUID at the end of a role definition id.
fn guid_of(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase()
}

/// A role assignment name derived from the campaign, so that `apply` can be re-run.
fn assignment_name(plan: &Plan, grant: &Grant) -> String {
    let digest = keyshift_crypto::digest::sha256(
        format!(
            "keyshift-migrate\0{}\0{}\0{}\0{}\0{}",
            plan.name, plan.target.vault, plan.target.name, grant.principal, grant.role
        )
        .as_bytes(),
    );
    let h: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

async fn inventory(
    plan_path: &Path,
    plan: &Plan,
    s: &DataSource,
    source: &Kid,
    target: Option<&Kid>,
) -> Result<Inventory> {
    let at = |p: &Path| plan::resolve(plan_path, p);
    match s {
        DataSource::WrappedKeys { path } => wrapped_keys::inventory(source, target, &at(path)),
        DataSource::Keyring { path } => keyring::inventory(source, target, &at(path)),
        DataSource::Postgres { .. } => {
            postgres::inventory(&Table::from_plan(s)?, source, target).await
        }
        DataSource::EnvelopeDir {
            path,
            mode,
            keyring: old,
            context,
            ..
        } => {
            let re = match mode {
                Mode::Rewrap => None,
                Mode::Reencrypt => {
                    // For counting, only which keyring is which matters.
                    let client = client_from(&plan::resolve(plan_path, &plan.source.credentials))?;
                    Some(Reencrypt {
                        kek: Arc::new(RemoteKek::new(client)),
                        old_keyring: old.as_deref().map(|p| read_keyring(&at(p))).transpose()?,
                        new_keyring: None,
                        new_master: None,
                        context: context.as_bytes().to_vec(),
                        master_keys: Default::default(),
                    })
                }
            };
            envelope_dir::inventory(source, target, &at(path), re.as_ref())
        }
    }
}

fn read_keyring(path: &Path) -> Result<Keyring> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keyring {}", path.display()))?;
    Ok(Keyring::from_json(&text)?)
}

/// How `apply` shows progress.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Progress style (`None`: a bar on a terminal, JSON lines otherwise).
    pub progress: Option<Style>,
}

/// The final report of a campaign.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Campaign name.
    pub campaign: String,
    /// The source key version.
    pub source: String,
    /// The target key version.
    pub target: Option<String>,
    /// Unix ms of the first step and of the end (when finished).
    pub started_ms: Option<i64>,
    /// When the campaign finished.
    pub finished_ms: Option<i64>,
    /// Steps done, with their values.
    pub steps: Vec<(String, String)>,
    /// Per source.
    pub sources: Vec<SourceReport>,
    /// Items that failed, with their reasons.
    pub failures: Vec<Failure>,
    /// Items left alone with a reason (rows another writer changed while the campaign worked
    /// on them), counted in `skipped`.
    pub skips: Vec<Skip>,
    /// Whether every source is done without a failure and the old version is restricted.
    pub complete: bool,
}

/// One source in a report.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// What it is.
    pub label: String,
    /// Items switched.
    pub migrated: u64,
    /// Items seen already under the target or under neither key.
    pub skipped: u64,
    /// Items that failed.
    pub failed: u64,
    /// Bytes protected by the switched items.
    pub bytes: u64,
    /// Batches committed.
    pub batches: u64,
    /// Seconds from the first to the last batch.
    pub seconds: f64,
    /// Audit event ids of the source's requests.
    pub events: Vec<String>,
    /// Whether the source is done.
    pub done: bool,
}

/// Creates the target key, grants the roles, moves every source, and (when all is done without
/// failures) restricts the old version to decrypt and unwrap. Resumes where the journal says.
pub async fn apply(plan_path: &Path, options: ApplyOptions) -> Result<Report> {
    let plan = Plan::read(plan_path)?;
    // Databases first: a missing URL or table is found before anything is created.
    for s in &plan.sources {
        if let DataSource::Postgres { .. } = s {
            let table = Table::from_plan(s)?;
            let pool = table.connect().await?;
            table.describe(&pool).await?;
            pool.close().await;
        }
    }
    let plan_text = std::fs::read(plan_path)?;
    let plan_hash: String = keyshift_crypto::digest::sha256(&plan_text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let journal = Journal::open(plan_path).await?;
    match journal.step("plan").await? {
        Some(h) if h != plan_hash => bail!(
            "{} changed since the campaign started (its journal holds another plan); \
             put the original back, or start a new campaign with a new plan file",
            plan_path.display()
        ),
        Some(_) => {}
        None => journal.set_step("plan", &plan_hash).await?,
    }
    let source_client = client_from(&plan::resolve(plan_path, &plan.source.credentials))?;
    let target_client = client_from(&plan::resolve(plan_path, &plan.target.credentials))?;
    let source = parse_kid(&plan.source.kid)?;
    let source_bundle = source_client
        .get_key(&source.vault_url, &source.name, source.version.as_deref())
        .await
        .with_context(|| format!("cannot read the source key {}", plan.source.kid))?;
    // The algorithm of items that do not say theirs (a table without an alg column).
    let source_alg = default_wrap_alg(source_bundle.key.kty.as_deref().unwrap_or_default()).ok();

    let target = ensure_target(plan_path, &plan, &journal, &target_client).await?;
    let target_bundle = target_client
        .get_key(&target.vault_url, &target.name, target.version.as_deref())
        .await?;
    let target_alg = match &plan.target.wrap_alg {
        Some(a) => a.clone(),
        None => default_wrap_alg(target_bundle.key.kty.as_deref().unwrap_or_default())?.to_owned(),
    };
    ensure_grants(&plan, &journal, &target_client, &target).await?;

    let rewrapper = Arc::new(Rewrapper {
        source_client: source_client.clone(),
        target_client: target_client.clone(),
        source: source.clone(),
        target: target.clone(),
        target_alg,
        limiter: Limiter::new(plan.limits.requests_per_second),
    });
    // One KEK client for envelope work: each kid names its vault; the two vaults may need
    // different credentials.
    let kek: Arc<dyn Kek> = Arc::new(TwoVaultKek {
        source: RemoteKek::new(source_client.clone()),
        target: RemoteKek::new(target_client.clone()),
        target_vault: target.vault_url.clone(),
    });

    let mut totals_known = Vec::new();
    for (i, s) in plan.sources.iter().enumerate() {
        let key = format!("inventory:{i}");
        let n = match journal.step(&key).await? {
            Some(v) => v.parse().unwrap_or(0),
            None => {
                let inv = inventory(plan_path, &plan, s, &source, Some(&target)).await?;
                let n = inv.under_source + inv.under_target + inv.other;
                journal.set_step(&key, &n.to_string()).await?;
                n
            }
        };
        totals_known.push(n);
    }
    let progress = Arc::new(match options.progress {
        Some(style) => Progress::with_style(
            plan.sources.iter().map(DataSource::label).collect(),
            totals_known,
            style,
        ),
        None => Progress::new(
            plan.sources.iter().map(DataSource::label).collect(),
            totals_known,
        ),
    });

    for (i, s) in plan.sources.iter().enumerate() {
        let done_key = format!("source:{i}:done");
        if journal.step(&done_key).await?.is_some() {
            continue;
        }
        journal.clear_failures(i).await?;
        let ctx = Ctx {
            rewrapper: rewrapper.clone(),
            journal: journal.clone(),
            index: i,
            batch_size: plan.limits.batch_size,
            concurrency: plan.limits.concurrency,
            progress: progress.clone(),
        };
        let at = |p: &Path| plan::resolve(plan_path, p);
        let totals: Totals = match s {
            DataSource::WrappedKeys { path } => wrapped_keys::migrate(&ctx, &at(path)).await?,
            DataSource::Keyring { path } => keyring::migrate(&ctx, &at(path), kek.as_ref()).await?,
            DataSource::Postgres { .. } => {
                postgres::migrate(&ctx, &Table::from_plan(s)?, source_alg).await?
            }
            DataSource::EnvelopeDir { path, mode, .. } => {
                let re = match mode {
                    Mode::Rewrap => None,
                    Mode::Reencrypt => {
                        Some(reencrypt_keys(plan_path, s, &kek, &target, &journal, i).await?)
                    }
                };
                envelope_dir::migrate(&ctx, &at(path), re).await?
            }
        };
        let failures = journal
            .failures()
            .await?
            .into_iter()
            .filter(|f| f.source == i)
            .count();
        if failures == 0 {
            journal
                .set_step(&done_key, &serde_json::to_string(&totals)?)
                .await?;
        }
    }
    progress.finish();

    let report = report(plan_path, &plan, &journal).await?;
    let all_done = report.sources.iter().all(|s| s.done) && report.failures.is_empty();
    if all_done && journal.step("restricted").await?.is_none() {
        restrict_source(&source_client, &source).await?;
        journal
            .set_step("restricted", "decrypt and unwrap only")
            .await?;
    }
    if all_done && journal.step("finished").await?.is_none() {
        journal
            .set_step("finished", &crate::now_ms().to_string())
            .await?;
    }
    let report = self::report(plan_path, &plan, &journal).await?;
    write_report(plan_path, &report)?;
    journal.close().await;
    Ok(report)
}

/// Restricts the old version to the operations that read what it protects.
async fn restrict_source(client: &KeyClient, source: &Kid) -> Result<()> {
    let bundle = client
        .get_key(&source.vault_url, &source.name, source.version.as_deref())
        .await?;
    let ops: Vec<String> = bundle
        .key
        .key_ops
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o == "decrypt" || o == "unwrapKey")
        .collect();
    client
        .update_key(
            &source.vault_url,
            &source.name,
            source.version.as_deref(),
            &KeyUpdateParameters {
                key_ops: Some(ops),
                ..Default::default()
            },
        )
        .await
        .context("cannot restrict the old key version to decrypt and unwrap")?;
    Ok(())
}

async fn ensure_target(
    plan_path: &Path,
    plan: &Plan,
    journal: &Journal,
    client: &KeyClient,
) -> Result<Kid> {
    if let Some(kid) = journal.step("target").await? {
        return Ok(parse_kid(&kid)?);
    }
    let vault = VaultUrl::parse(&plan.target.vault)?;
    let t = &plan.target;
    // Inspection first: a run killed after creating the key finds it here.
    let bundle = match client.get_key(&vault, &t.name, None).await {
        Ok(existing) => {
            let kty = existing.key.kty.clone().unwrap_or_default();
            if let Some(want) = &t.kty {
                if family(want) != family(&kty) {
                    bail!(
                        "the target key {} exists and is {kty}, the plan says {want}",
                        t.name
                    );
                }
            }
            existing
        }
        Err(e) if e.is_not_found() => match &t.byok {
            Some(blob) => {
                let blob = std::fs::read(plan::resolve(plan_path, blob))
                    .context("cannot read the BYOK blob")?;
                client
                    .import_key(
                        &vault,
                        &t.name,
                        &KeyImportParameters {
                            key: Some(JsonWebKey {
                                kty: t.kty.clone(),
                                key_ops: (!t.key_ops.is_empty()).then(|| t.key_ops.clone()),
                                key_hsm: Some(blob),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )
                    .await
                    .context("cannot import the target key")?
            }
            None => client
                .create_key(
                    &vault,
                    &t.name,
                    &KeyCreateParameters {
                        kty: t.kty.clone(),
                        key_size: t.key_size,
                        crv: t.crv.clone(),
                        key_ops: (!t.key_ops.is_empty()).then(|| t.key_ops.clone()),
                        ..Default::default()
                    },
                )
                .await
                .context("cannot create the target key")?,
        },
        Err(e) => return Err(e).context("cannot look up the target key"),
    };
    let kid = versioned(bundle.key.kid.as_deref())?;
    journal.set_step("target", &kid.to_string()).await?;
    Ok(kid)
}

async fn ensure_grants(
    plan: &Plan,
    journal: &Journal,
    client: &KeyClient,
    target: &Kid,
) -> Result<()> {
    if plan.grants.is_empty() {
        return Ok(());
    }
    let scope = format!("/keys/{}", target.name);
    let definitions = client.list_role_definitions(&target.vault_url).await?;
    for (i, grant) in plan.grants.iter().enumerate() {
        let key = format!("grant:{i}");
        if journal.step(&key).await?.is_some() {
            continue;
        }
        let role = definitions
            .iter()
            .find(|d| d.properties.role_name.eq_ignore_ascii_case(&grant.role))
            .ok_or_else(|| anyhow!("the target vault has no role named {:?}", grant.role))?;
        let name = assignment_name(plan, grant);
        let present = |list: &[keyshift_api::rbac::RoleAssignment]| {
            list.iter().any(|a| {
                a.properties.principal_id == grant.principal
                    && guid_of(&a.properties.role_definition_id) == role.name.to_ascii_lowercase()
                    && a.properties.scope.eq_ignore_ascii_case(&scope)
            })
        };
        let existing = client
            .list_role_assignments(&target.vault_url, &scope)
            .await?;
        if !present(&existing) {
            match client
                .put_role_assignment(&target.vault_url, &scope, &name, &role.id, &grant.principal)
                .await
            {
                Ok(_) => {}
                // A retried PUT that had landed: check it is ours.
                Err(e) if e.status() == Some(409) => {
                    let again = client
                        .list_role_assignments(&target.vault_url, &scope)
                        .await?;
                    if !present(&again) {
                        return Err(e)
                            .context("a role assignment of that name exists for another grant");
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot grant {} to {}", grant.role, grant.principal)
                    })
                }
            }
        }
        journal
            .set_step(
                &key,
                &format!("{} {} at {scope} ({name})", grant.role, grant.principal),
            )
            .await?;
    }
    Ok(())
}

async fn reencrypt_keys(
    plan_path: &Path,
    s: &DataSource,
    kek: &Arc<dyn Kek>,
    target: &Kid,
    journal: &Journal,
    index: usize,
) -> Result<Reencrypt> {
    let DataSource::EnvelopeDir {
        context,
        keyring: old,
        target_keyring,
        ..
    } = s
    else {
        bail!("not an envelope source");
    };
    let old_keyring = old
        .as_deref()
        .map(|p| read_keyring(&plan::resolve(plan_path, p)))
        .transpose()?;
    let (new_keyring, new_master) = match target_keyring {
        None => (None, None),
        Some(p) => {
            let path = plan::resolve(plan_path, p);
            let keyring = if path.exists() {
                let k = read_keyring(&path)?;
                if !same_version(k.kek_kid(), target) {
                    bail!(
                        "{} exists and is under {}, not the target key",
                        path.display(),
                        k.kek_kid()
                    );
                }
                k
            } else {
                let (k, _) = Keyring::create(
                    kek.as_ref(),
                    &target.to_string(),
                    (crate::now_ms() / 1000) as u64,
                )
                .await?;
                crate::atomic::write(&path, k.to_json().as_bytes())?;
                journal
                    .set_step(&format!("source:{index}:keyring"), &k.master_key_id_hex())
                    .await?;
                k
            };
            let master = keyring.unwrap_master_key(kek.as_ref()).await?;
            (Some(keyring), Some(Arc::new(master)))
        }
    };
    // The new master key, just unwrapped, also serves verification from the cache.
    let master_keys = Arc::new(keyshift_envelope::MasterKeyCache::default());
    if let Some(master) = &new_master {
        master_keys.insert(Arc::clone(master));
    }
    Ok(Reencrypt {
        kek: kek.clone(),
        old_keyring,
        new_keyring,
        new_master,
        context: context.as_bytes().to_vec(),
        master_keys,
    })
}

/// A KEK that reaches the target vault with the target's credentials and every other vault with
/// the source's.
#[derive(Debug)]
struct TwoVaultKek {
    source: RemoteKek,
    target: RemoteKek,
    target_vault: VaultUrl,
}

impl TwoVaultKek {
    fn pick(&self, kid: &str) -> &RemoteKek {
        match parse_kid(kid) {
            Ok(k) if k.vault_url == self.target_vault => &self.target,
            _ => &self.source,
        }
    }
}

#[async_trait::async_trait]
impl Kek for TwoVaultKek {
    async fn wrap(
        &self,
        kid: &str,
        key: &[u8],
    ) -> std::result::Result<keyshift_envelope::WrappedKey, keyshift_envelope::KekError> {
        self.pick(kid).wrap(kid, key).await
    }

    async fn unwrap(
        &self,
        wrapped: &keyshift_envelope::WrappedKey,
    ) -> std::result::Result<zeroize::Zeroizing<Vec<u8>>, keyshift_envelope::KekError> {
        self.pick(&wrapped.kid).unwrap(wrapped).await
    }
}

/// The report of a campaign, from its journal.
pub async fn report(plan_path: &Path, plan: &Plan, journal: &Journal) -> Result<Report> {
    let steps = journal.steps().await?;
    let batches = journal.batches(None).await?;
    let mut sources = Vec::new();
    for (i, s) in plan.sources.iter().enumerate() {
        let mine: Vec<_> = batches.iter().filter(|b| b.source == i).collect();
        let first = mine.iter().map(|b| b.at_ms).min();
        let last = mine.iter().map(|b| b.at_ms).max();
        sources.push(SourceReport {
            label: s.label(),
            migrated: mine.iter().map(|b| b.items).sum(),
            skipped: mine.iter().map(|b| b.skipped).sum(),
            failed: mine.iter().map(|b| b.failed).sum(),
            bytes: mine.iter().map(|b| b.bytes).sum(),
            batches: mine.len() as u64,
            seconds: match (first, last) {
                (Some(a), Some(b)) => (b - a) as f64 / 1000.0,
                _ => 0.0,
            },
            events: mine
                .iter()
                .flat_map(|b| b.events.split_whitespace().map(str::to_owned))
                .collect(),
            done: steps
                .iter()
                .any(|(n, _, _)| n == &format!("source:{i}:done")),
        });
    }
    let step = |name: &str| steps.iter().find(|(n, _, _)| n == name);
    let _ = plan_path;
    Ok(Report {
        campaign: plan.name.clone(),
        source: plan.source.kid.clone(),
        target: step("target").map(|(_, v, _)| v.clone()),
        started_ms: step("plan").map(|(_, _, at)| *at),
        finished_ms: step("finished").and_then(|(_, v, _)| v.parse().ok()),
        steps: steps
            .iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect(),
        sources,
        failures: journal.failures().await?,
        skips: journal.skips().await?,
        complete: step("finished").is_some(),
    })
}

/// The report as text, for people.
pub fn report_text(r: &Report) -> String {
    let mut out = format!(
        "campaign {}\n  source {}\n  target {}\n  state  {}\n",
        r.campaign,
        r.source,
        r.target.as_deref().unwrap_or("(not created yet)"),
        if r.complete {
            "complete: every item moved, old version restricted to decrypt and unwrap"
        } else if r.failures.is_empty() {
            "in progress (resume with `keyshift migrate resume`)"
        } else {
            "stopped with failures (fix them and resume)"
        }
    );
    if let (Some(a), Some(b)) = (r.started_ms, r.finished_ms) {
        out += &format!("  took   {:.1} s\n", (b - a) as f64 / 1000.0);
    }
    for s in &r.sources {
        out += &format!(
            "  {}: {} migrated, {} skipped, {} failed, {} bytes, {} batches, {:.1} s{}\n",
            s.label,
            s.migrated,
            s.skipped,
            s.failed,
            s.bytes,
            s.batches,
            s.seconds,
            if s.done { ", done" } else { "" }
        );
        if !s.events.is_empty() {
            let shown: Vec<&str> = s.events.iter().take(4).map(String::as_str).collect();
            out += &format!(
                "    audit events: {}{}\n",
                shown.join(" "),
                if s.events.len() > 4 {
                    format!(" ... ({} in all, in the JSON report)", s.events.len())
                } else {
                    String::new()
                }
            );
        }
    }
    for f in r.failures.iter().take(50) {
        out += &format!("  failed: source {} {}: {}\n", f.source, f.item, f.reason);
    }
    if r.failures.len() > 50 {
        out += &format!("  ... {} failures in all (JSON report)\n", r.failures.len());
    }
    for s in r.skips.iter().take(20) {
        out += &format!("  skipped: source {} {}: {}\n", s.source, s.item, s.reason);
    }
    if r.skips.len() > 20 {
        out += &format!(
            "  ... {} skipped with a reason in all (JSON report)\n",
            r.skips.len()
        );
    }
    out
}

fn write_report(plan_path: &Path, report: &Report) -> Result<()> {
    let base = plan_path.as_os_str().to_owned();
    let mut json = base.clone();
    json.push(".report.json");
    let mut text = base;
    text.push(".report.txt");
    crate::atomic::write(Path::new(&json), &serde_json::to_vec_pretty(report)?)?;
    crate::atomic::write(Path::new(&text), report_text(report).as_bytes())?;
    Ok(())
}

/// Progress of a campaign from its journal: per source, items handled of those counted at the
/// start, rate and ETA.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The report so far.
    pub report: Report,
    /// Per source: (handled, total counted at the start, items per second, ETA seconds).
    pub progress: Vec<(u64, u64, f64, Option<f64>)>,
}

/// Reads a campaign's journal.
pub async fn status(plan_path: &Path) -> Result<Status> {
    let plan = Plan::read(plan_path)?;
    let journal = Journal::open_existing(plan_path).await?;
    let report = report(plan_path, &plan, &journal).await?;
    let mut progress = Vec::new();
    for (i, s) in report.sources.iter().enumerate() {
        let total: u64 = journal
            .step(&format!("inventory:{i}"))
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let handled = s.migrated + s.skipped + s.failed;
        let rate = if s.seconds > 0.0 {
            handled as f64 / s.seconds
        } else {
            0.0
        };
        let eta =
            (!s.done && rate > 0.0 && total > handled).then(|| (total - handled) as f64 / rate);
        progress.push((handled, total, rate, eta));
    }
    journal.close().await;
    Ok(Status { report, progress })
}

/// Checks that every item (or a random sample per source) opens under the target, and counts
/// what is still under the source.
pub async fn verify(plan_path: &Path, sample: Option<u64>) -> Result<Vec<(String, Verification)>> {
    let plan = Plan::read(plan_path)?;
    let journal = Journal::open_existing(plan_path).await?;
    let target = parse_kid(
        &journal
            .step("target")
            .await?
            .ok_or_else(|| anyhow!("the campaign has not created its target key yet"))?,
    )?;
    let source_client = client_from(&plan::resolve(plan_path, &plan.source.credentials))?;
    let target_client = client_from(&plan::resolve(plan_path, &plan.target.credentials))?;
    let bundle = target_client
        .get_key(&target.vault_url, &target.name, target.version.as_deref())
        .await?;
    let target_alg = match &plan.target.wrap_alg {
        Some(a) => a.clone(),
        None => default_wrap_alg(bundle.key.kty.as_deref().unwrap_or_default())?.to_owned(),
    };
    let rewrapper = Arc::new(Rewrapper {
        source_client: source_client.clone(),
        target_client: target_client.clone(),
        source: parse_kid(&plan.source.kid)?,
        target: target.clone(),
        target_alg,
        limiter: Limiter::new(plan.limits.requests_per_second),
    });
    let kek: Arc<dyn Kek> = Arc::new(TwoVaultKek {
        source: RemoteKek::new(source_client),
        target: RemoteKek::new(target_client),
        target_vault: target.vault_url.clone(),
    });
    let progress = Arc::new(Progress::with_style(Vec::new(), Vec::new(), Style::Quiet));
    let mut out = Vec::new();
    for (i, s) in plan.sources.iter().enumerate() {
        let ctx = Ctx {
            rewrapper: rewrapper.clone(),
            journal: journal.clone(),
            index: i,
            batch_size: plan.limits.batch_size,
            concurrency: plan.limits.concurrency,
            progress: progress.clone(),
        };
        let at = |p: &Path| plan::resolve(plan_path, p);
        let v = match s {
            DataSource::WrappedKeys { path } => {
                wrapped_keys::verify(&ctx, &at(path), sample).await?
            }
            DataSource::Keyring { path } => keyring::verify(&ctx, &at(path), kek.as_ref()).await?,
            DataSource::Postgres { .. } => {
                postgres::verify(&ctx, &Table::from_plan(s)?, kek.as_ref(), sample).await?
            }
            DataSource::EnvelopeDir { path, mode, .. } => {
                let re = match mode {
                    Mode::Rewrap => None,
                    Mode::Reencrypt => {
                        Some(reencrypt_keys(plan_path, s, &kek, &target, &journal, i).await?)
                    }
                };
                envelope_dir::verify(&ctx, &at(path), re.as_ref(), &kek, sample).await?
            }
        };
        out.push((s.label(), v));
    }
    journal.close().await;
    Ok(out)
}

/// What `retire` did.
#[derive(Debug, Serialize)]
pub struct Retired {
    /// The old version, now disabled.
    pub disabled: String,
    /// Whether the old key was deleted (soft: recoverable until its purge date).
    pub deleted: bool,
    /// When the deleted key will be purged (Unix seconds), when deleted.
    pub scheduled_purge_date: Option<i64>,
    /// Why the key itself was kept, if it was.
    pub kept_because: Option<String>,
}

/// Parses the RFC 3339 UTC times of the usage report (`2026-11-28T18:00:00.123Z`) to Unix
/// milliseconds.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let day = plan::check_date(date).ok()?;
    let time = time.strip_suffix('Z')?;
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, f),
        None => (time, ""),
    };
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let ms = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(3).collect();
        let v: i64 = digits.parse().ok()?;
        v * 10i64.pow(3 - digits.len() as u32)
    };
    Some((day + h * 3600 + m * 60 + s) * 1000 + ms)
}

/// Disables the old key version and deletes the old key, refusing while the retention date has
/// not passed or the version was used recently (after the campaign finished, or within the
/// plan's quiet days). Deletion is soft: with purge protection the key stays recoverable until
/// the vault's retention ends.
pub async fn retire(plan_path: &Path, now_unix: i64) -> Result<Retired> {
    let plan = Plan::read(plan_path)?;
    let journal = Journal::open_existing(plan_path).await?;
    let finished_ms: i64 = journal
        .step("finished")
        .await?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            anyhow!("the campaign is not finished: nothing is retired before every item moved")
        })?;
    let keep_until = plan::check_date(&plan.retention.keep_until)?;
    if now_unix < keep_until {
        bail!(
            "the retention date {} has not passed: a backup may still need the old key",
            plan.retention.keep_until
        );
    }
    let source = parse_kid(&plan.source.kid)?;
    let client = client_from(&plan::resolve(plan_path, &plan.source.credentials))?;
    let usage = client
        .key_usage(&source.vault_url, &source.name, source.version.as_deref())
        .await
        .context("cannot read the old version's usage report")?;
    let cutoff_ms =
        ((now_unix - i64::from(plan.retention.quiet_days) * 86_400) * 1000).max(finished_ms);
    // Uses of the key material count; reading its metadata (KeyGet, as this tool does) does not.
    const USES: [&str; 8] = [
        "KeyUnwrap",
        "KeyDecrypt",
        "KeyWrap",
        "KeyEncrypt",
        "KeySign",
        "KeyVerify",
        "KeyRewrap",
        "KeyRelease",
    ];
    for v in &usage.versions {
        for e in v
            .usage
            .iter()
            .filter(|e| USES.contains(&e.operation.as_str()))
        {
            if parse_rfc3339_ms(&e.last_used).is_some_and(|t| t > cutoff_ms) {
                bail!(
                    "the old version was used at {} by {} ({} x{}): something still needs it; \
                     find and move it, then retire after {} quiet days",
                    e.last_used,
                    e.principal,
                    e.operation,
                    e.count,
                    plan.retention.quiet_days
                );
            }
        }
    }
    client
        .update_key(
            &source.vault_url,
            &source.name,
            source.version.as_deref(),
            &KeyUpdateParameters {
                attributes: Some(keyshift_api::keys::KeyAttributes {
                    enabled: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .context("cannot disable the old version")?;
    journal.set_step("disabled", &source.to_string()).await?;
    let target = journal
        .step("target")
        .await?
        .map(|t| parse_kid(&t))
        .transpose()?;
    let same_key = target.as_ref().is_some_and(|t| {
        t.vault_url == source.vault_url && t.name.eq_ignore_ascii_case(&source.name)
    });
    let others: Vec<String> = client
        .list_versions(&source.vault_url, &source.name, None)
        .await?
        .into_iter()
        .filter(|v| v.attributes.enabled != Some(false))
        .filter(|v| !same_version(&v.kid, &source))
        .map(|v| v.kid)
        .collect();
    let kept_because = if same_key {
        Some("the target is another version of the same key".to_owned())
    } else if !others.is_empty() {
        Some(format!("other versions are enabled: {}", others.join(", ")))
    } else {
        None
    };
    let mut retired = Retired {
        disabled: source.to_string(),
        deleted: false,
        scheduled_purge_date: None,
        kept_because,
    };
    if retired.kept_because.is_none() {
        let deleted = client
            .delete_key(&source.vault_url, &source.name)
            .await
            .context("cannot delete the old key")?;
        retired.deleted = true;
        retired.scheduled_purge_date = Some(deleted.scheduled_purge_date);
        journal.set_step("deleted", &deleted.recovery_id).await?;
    }
    journal.close().await;
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_times_parse() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:10Z"), Some(10_000));
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T01:02:03.456Z"),
            Some((1_795_824_000 + 3723) * 1000 + 456)
        );
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(parse_rfc3339_ms("garbage"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-28T01:02:03"), None);
    }

    #[test]
    fn role_names_map_between_kinds_and_assignment_names_are_stable() {
        assert_eq!(
            role_in_other_kind("Key Vault Crypto User").as_deref(),
            Some("Managed HSM Crypto User")
        );
        assert_eq!(
            role_in_other_kind("Managed HSM Crypto Service Encryption User").as_deref(),
            Some("Key Vault Crypto Service Encryption User")
        );
        assert_eq!(
            guid_of("/providers/Microsoft.Authorization/roleDefinitions/ABC"),
            "abc"
        );
        assert!(
            covers("/", "/keys/a") && covers("/keys", "/keys/a") && !covers("/keys/b", "/keys/a")
        );
    }
}
