//! The plan of a campaign: a TOML file a person reads, edits and keeps with the change record.
//! `keyshift migrate plan` writes one; `apply` does what it says and nothing else.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The plan format this library writes and reads.
pub const PLAN_VERSION: u32 = 1;

/// Largest batch the server-side rewrap takes.
pub const MAX_BATCH: usize = keyshift_api::keys::MAX_REWRAP_ITEMS;

/// A campaign: move everything protected by one key version to another key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// A name for people and for the ids the campaign derives (role assignment names).
    pub name: String,
    /// The key version everything is under today.
    pub source: SourceKey,
    /// Where everything goes.
    pub target: TargetKey,
    /// Role assignments to make on the target key, each with the reason it is needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// The data protected by the source key, each with how it moves.
    #[serde(default, rename = "sources", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<DataSource>,
    /// When the old key may go.
    pub retention: Retention,
    /// How hard the campaign may push the vaults.
    #[serde(default)]
    pub limits: Limits,
}

/// The source key version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceKey {
    /// Versioned key identifier.
    pub kid: String,
    /// Credentials for the source vault (`admin.json` shape), relative to the plan's directory.
    pub credentials: PathBuf,
}

/// The target key: created by `apply` unless it exists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetKey {
    /// The target vault's URL (this server or another one).
    pub vault: String,
    /// The key's name there.
    pub name: String,
    /// Credentials for the target vault, relative to the plan's directory.
    pub credentials: PathBuf,
    /// Key type to create (`RSA`, `RSA-HSM`, `oct-HSM`, `EC`...), unless `byok` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    /// RSA modulus size or oct key size in bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// Curve of an EC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Operations of the new key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ops: Vec<String>,
    /// A BYOK transfer blob to import instead of creating a key (the key is portable), with
    /// the key type it holds in `kty`. Relative to the plan's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byok: Option<PathBuf>,
    /// Wrap algorithm of items under the target (`A256KW`, `RSA-OAEP-256`...); by default the
    /// one that suits the key type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrap_alg: Option<String>,
}

/// One role assignment to make on the target key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The principal's object id.
    pub principal: String,
    /// The role's name in the target vault (`Key Vault Crypto Service Encryption User`, ...).
    pub role: String,
    /// Why: the source's role assignment it mirrors, or the usage that showed the need.
    pub reason: String,
}

/// How items of a source move.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Rewrap keys only: a 3-level keyring's master key, or each 2-level data key through the
    /// server-side batch rewrap. The data is not touched.
    Rewrap,
    /// Decrypt and encrypt again with new data keys under the target.
    Reencrypt,
}

/// A place where data protected by the source key lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataSource {
    /// A JSON-lines file of wrapped data keys, one object per line with `kid`, `alg` and
    /// `wrapped_key` (base64url) and any other members, kept as they are.
    WrappedKeys {
        /// The file, relative to the plan's directory.
        path: PathBuf,
    },
    /// A directory tree of Keyshift envelope files.
    EnvelopeDir {
        /// The directory, relative to the plan's directory.
        path: PathBuf,
        /// `rewrap`: 2-level files get their data key rewrapped (3-level files move with
        /// their keyring, a `keyring` source). `reencrypt`: every file is encrypted again.
        mode: Mode,
        /// The context the files were encrypted with (re-encryption needs it).
        #[serde(default)]
        context: String,
        /// The keyring of 3-level files (re-encryption needs it), relative to the plan.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyring: Option<PathBuf>,
        /// Re-encryption: write 3-level files under this new keyring (created under the target
        /// key by `apply`); without it, 2-level files with a new data key each.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_keyring: Option<PathBuf>,
    },
    /// A 3-level keyring: its master key is rewrapped, whatever the size of the data under it.
    Keyring {
        /// The keyring file, relative to the plan's directory.
        path: PathBuf,
    },
    /// A PostgreSQL table whose rows hold wrapped data keys or whole 2-level envelopes, walked
    /// in the order of its id column (see [`crate::source::postgres`]).
    Postgres {
        /// The environment variable holding the connection URL: the plan holds no password.
        #[serde(default = "default_url_env")]
        url_env: String,
        /// The table, `name` or `schema.name`, as PostgreSQL stores it (used quoted).
        table: String,
        /// Its primary key (or a unique, non-null column): integer or text.
        id_column: String,
        /// What the rows hold.
        layout: PgLayout,
        /// `wrapped-key`: the versioned kid of the key the data key is wrapped under (text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kid_column: Option<String>,
        /// `wrapped-key`: the wrapped data key (bytea).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wrapped_column: Option<String>,
        /// `wrapped-key`: the wrap algorithm (text); without it the source key's default
        /// algorithm is assumed and rows under the target use the target's wrap algorithm.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alg_column: Option<String>,
        /// `envelope`: the whole 2-level envelope (bytea).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_column: Option<String>,
    },
}

/// What the rows of a PostgreSQL source hold.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PgLayout {
    /// A wrapped data key and the kid it is under, in two columns (the application's
    /// ciphertext columns are not touched).
    WrappedKey,
    /// A whole 2-level Keyshift envelope in one column: its header's key slot is rewrapped.
    Envelope,
}

/// The environment variable a PostgreSQL source reads its URL from unless the plan names another.
pub const DEFAULT_URL_ENV: &str = "KEYSHIFT_MIGRATE_DATABASE_URL";

fn default_url_env() -> String {
    DEFAULT_URL_ENV.to_owned()
}

impl DataSource {
    /// A short label for progress and reports.
    pub fn label(&self) -> String {
        match self {
            DataSource::WrappedKeys { path } => format!("wrapped-keys {}", path.display()),
            DataSource::EnvelopeDir { path, mode, .. } => {
                format!("envelope-dir {} ({})", path.display(), mode_name(*mode))
            }
            DataSource::Keyring { path } => format!("keyring {}", path.display()),
            DataSource::Postgres { table, layout, .. } => {
                let layout = match layout {
                    PgLayout::WrappedKey => "wrapped-key",
                    PgLayout::Envelope => "envelope",
                };
                format!("postgres {table} ({layout})")
            }
        }
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Rewrap => "rewrap",
        Mode::Reencrypt => "reencrypt",
    }
}

/// When the old key may be deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The date (`YYYY-MM-DD`, UTC) after which no backup needs the old key.
    pub keep_until: String,
    /// `retire` refuses while the old version was used within this many days.
    #[serde(default = "default_quiet_days")]
    pub quiet_days: u32,
}

fn default_quiet_days() -> u32 {
    30
}

/// Rate and batch limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Items per rewrap request (1 to 1,000).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per second to each vault; 0 for no limit. 429 and 503 are retried with
    /// backoff (and `Retry-After`) whatever this is.
    #[serde(default)]
    pub requests_per_second: f64,
}

fn default_batch() -> usize {
    MAX_BATCH
}

fn default_concurrency() -> usize {
    4
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_size: default_batch(),
            concurrency: default_concurrency(),
            requests_per_second: 0.0,
        }
    }
}

impl Plan {
    /// Reads and checks a plan file.
    pub fn read(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the plan {}", path.display()))?;
        let plan: Plan = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid plan", path.display()))?;
        plan.check()
            .with_context(|| format!("{} is not a valid plan", path.display()))?;
        Ok(plan)
    }

    /// The plan as TOML, with a comment header saying what it is.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string_pretty(self).context("cannot encode the plan")?;
        Ok(format!(
            "# Keyshift migration plan. Review it, edit it if needed, then:\n\
             #   keyshift migrate apply <this file>\n\
             # The campaign's journal is kept next to it (<this file>.journal).\n\n{body}"
        ))
    }

    /// Checks what the types cannot.
    pub fn check(&self) -> Result<()> {
        if self.version != PLAN_VERSION {
            bail!("plan version {} is not {PLAN_VERSION}", self.version);
        }
        if self.name.is_empty() || self.name.len() > 100 {
            bail!("the name must be 1 to 100 characters");
        }
        let source = keyshift_client::parse_kid(&self.source.kid)
            .with_context(|| format!("source.kid {}", self.source.kid))?;
        if source.version.is_none() {
            bail!("source.kid must name a version: a campaign moves one key version");
        }
        keyshift_client::VaultUrl::parse(&self.target.vault).context("target.vault")?;
        keyshift_client::kid::validate_key_name(&self.target.name).context("target.name")?;
        if self.target.byok.is_none() && self.target.kty.is_none() {
            bail!(
                "target: give kty (and its size or curve) to create the key, or byok to import one"
            );
        }
        if self.target.byok.is_some() && self.target.kty.is_none() {
            bail!("target: byok needs the kty of the key in the blob");
        }
        check_date(&self.retention.keep_until).context("retention.keep_until")?;
        if !(1..=MAX_BATCH).contains(&self.limits.batch_size) {
            bail!("limits.batch_size must be 1 to {MAX_BATCH}");
        }
        if !(1..=64).contains(&self.limits.concurrency) {
            bail!("limits.concurrency must be 1 to 64");
        }
        if !(self.limits.requests_per_second >= 0.0 && self.limits.requests_per_second.is_finite())
        {
            bail!("limits.requests_per_second must be 0 (no limit) or more");
        }
        for grant in &self.grants {
            if grant.principal.is_empty() || grant.role.is_empty() {
                bail!("every grant needs a principal and a role");
            }
        }
        for source in &self.sources {
            if let DataSource::EnvelopeDir {
                mode: Mode::Rewrap,
                target_keyring: Some(_),
                ..
            } = source
            {
                bail!(
                    "{}: target_keyring is for mode = \"reencrypt\"",
                    source.label()
                );
            }
            if let DataSource::Postgres { .. } = source {
                crate::source::postgres::Table::from_plan(source)
                    .with_context(|| source.label())?;
            }
        }
        Ok(())
    }
}

/// Checks `YYYY-MM-DD` and returns the Unix time of its midnight UTC.
pub fn check_date(text: &str) -> Result<i64> {
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        bail!("{text:?} is not a date (YYYY-MM-DD)");
    };
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>()) else {
        bail!("{text:?} is not a date (YYYY-MM-DD)");
    };
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => bail!("{text:?} is not a date: month {m}"),
    };
    if !(1970..=9999).contains(&y) || d == 0 || d > days_in_month {
        bail!("{text:?} is not a date (YYYY-MM-DD)");
    }
    Ok(days_from_civil(y, m, d) * 86_400)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a Unix time.
pub fn date_of(unix: i64) -> String {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Resolves a path of the plan against the plan's directory.
pub fn resolve(plan_path: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        plan_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|dir| dir.join(path))
            .unwrap_or_else(|| path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        assert_eq!(check_date("1970-01-01").unwrap(), 0);
        assert_eq!(check_date("2026-11-28").unwrap(), 1_795_824_000);
        for unix in [0, 951_782_400, 1_795_824_000, 4_102_444_800] {
            assert_eq!(check_date(&date_of(unix)).unwrap(), unix);
        }
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-1x",
            "26-01-01",
            "",
            "2026/01/01",
        ] {
            assert!(check_date(bad).is_err(), "{bad}");
        }
        assert!(check_date("2024-02-29").is_ok());
    }

    fn sample() -> Plan {
        Plan {
            version: PLAN_VERSION,
            name: "orders".into(),
            source: SourceKey {
                kid: "https://a.example:8443/keys/k/0123456789abcdef0123456789abcdef".into(),
                credentials: "admin.json".into(),
            },
            target: TargetKey {
                vault: "https://b.example:8443".into(),
                name: "k2".into(),
                credentials: "admin.json".into(),
                kty: Some("RSA".into()),
                key_size: Some(3072),
                crv: None,
                key_ops: vec!["wrapKey".into(), "unwrapKey".into()],
                byok: None,
                wrap_alg: None,
            },
            grants: vec![Grant {
                principal: "p".into(),
                role: "Key Vault Crypto User".into(),
                reason: "r".into(),
            }],
            sources: vec![
                DataSource::WrappedKeys {
                    path: "keys.jsonl".into(),
                },
                DataSource::EnvelopeDir {
                    path: "data".into(),
                    mode: Mode::Reencrypt,
                    context: "tenant=a".into(),
                    keyring: None,
                    target_keyring: Some("new.json".into()),
                },
                DataSource::Postgres {
                    url_env: DEFAULT_URL_ENV.into(),
                    table: "app.orders".into(),
                    id_column: "id".into(),
                    layout: PgLayout::WrappedKey,
                    kid_column: Some("kek_kid".into()),
                    wrapped_column: Some("wrapped_dek".into()),
                    alg_column: None,
                    data_column: None,
                },
            ],
            retention: Retention {
                keep_until: "2027-06-01".into(),
                quiet_days: 30,
            },
            limits: Limits::default(),
        }
    }

    #[test]
    fn a_plan_round_trips_through_toml_and_is_checked() {
        let plan = sample();
        let text = plan.to_toml().unwrap();
        assert!(text.contains("kind = \"envelope-dir\""), "{text}");
        assert!(text.contains("kind = \"postgres\""), "{text}");
        assert!(text.contains("layout = \"wrapped-key\""), "{text}");
        assert!(!text.contains("alg_column"), "{text}");
        let back: Plan = toml::from_str(&text).unwrap();
        assert_eq!(back, plan);
        back.check().unwrap();

        let mut bad = sample();
        bad.source.kid = "https://a.example:8443/keys/k".into();
        assert!(bad.check().unwrap_err().to_string().contains("version"));
        let mut bad = sample();
        bad.limits.batch_size = 1001;
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.target.kty = None;
        assert!(bad.check().is_err());
        let mut bad = sample();
        if let DataSource::Postgres { table, .. } = &mut bad.sources[2] {
            *table = "orders where 1=1".into();
        }
        assert!(format!("{:#}", bad.check().unwrap_err()).contains("plain SQL identifier"));
        // The URL's variable is optional in the file: the default is filled in.
        let without_env = text.replace("url_env = \"KEYSHIFT_MIGRATE_DATABASE_URL\"\n", "");
        assert_ne!(without_env, text);
        assert_eq!(toml::from_str::<Plan>(&without_env).unwrap(), plan);
        let mut bad = sample();
        bad.retention.keep_until = "soon".into();
        assert!(bad.check().is_err());
        assert!(toml::from_str::<Plan>(
            &text.replace("name = \"orders\"", "name = \"orders\"\nextra = 1")
        )
        .is_err());
    }
}
