//! Settings: command-line flags, then `KEYSHIFT_*` environment variables, then `keyshift.toml`,
//! then defaults. Every setting can come from any of the three.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that may hold the PostgreSQL password (never a flag: flags show in
/// `ps`).
pub const STORE_PASSWORD_ENV: &str = "KEYSHIFT_STORE_PASSWORD";

/// A PostgreSQL URL for the records. Its `Debug` hides it: it may carry a password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        StoreUrl(url.into())
    }

    /// The URL itself, password included: for connecting only, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(StoreUrl(s.to_owned()))
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreUrl(<redacted>)")
    }
}

/// Where the records are kept: `<data-dir>/keyshift.db` (SQLite) unless a PostgreSQL URL is
/// given. The root key, TLS material and `admin.json` stay in the data directory either way.
#[derive(Clone, Default)]
pub struct StoreSettings {
    /// PostgreSQL URL (`postgres://user@host:port/database`); `None` for SQLite.
    pub url: Option<StoreUrl>,
    /// The password, from `KEYSHIFT_STORE_PASSWORD`; replaces one in the URL.
    pub password: Option<Zeroizing<String>>,
    /// A file holding the password (mode 0600); replaces one in the URL.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The settings file, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Main listener address.
    pub listen: Option<SocketAddr>,
    /// Public URL of the main listener.
    pub public_url: Option<String>,
    /// Domain under which vaults answer.
    pub vault_domain: Option<String>,
    /// Token audience.
    pub token_audience: Option<String>,
    /// Token lifetime, seconds.
    pub token_lifetime_seconds: Option<i64>,
    /// More host names of the default vault.
    pub extra_hosts: Option<Vec<String>>,
    /// Root key file.
    pub root_key_file: Option<PathBuf>,
    /// Soft-delete retention of the default vault (first start only).
    pub default_retention_days: Option<u32>,
    /// Name of the default vault (first start only).
    pub default_vault_name: Option<String>,
    /// Seconds between purges of expired soft-deleted keys and scheduled rotations.
    pub maintenance_interval_seconds: Option<u64>,
    /// Log filter, e.g. `info` or `keyshift=debug`.
    pub log: Option<String>,
    /// PostgreSQL URL for the records (better without its password: see `store_password_file`).
    pub store_url: Option<StoreUrl>,
    /// File holding the PostgreSQL password.
    pub store_password_file: Option<PathBuf>,
    /// PKCS#11 module of the HSM that holds `-HSM` keys.
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the HSM's token.
    pub pkcs11_token_label: Option<String>,
    /// File holding the token's user PIN (else `KEYSHIFT_PKCS11_PIN`).
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Most PKCS#11 sessions open at once.
    pub pkcs11_max_sessions: Option<usize>,
    /// Where `/metrics` is served (plain HTTP).
    pub metrics_listen: Option<SocketAddr>,
    /// Where full backups are written (`file:///<container>` is a directory in it).
    pub backup_dir: Option<PathBuf>,
}

impl FileConfig {
    /// Reads a TOML settings file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid settings in {}", path.display()))
    }
}

/// Settings after merging.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Main listener address.
    pub listen: SocketAddr,
    /// Public URL of the main listener (derived when unset).
    pub public_url: Option<String>,
    /// Vault domain.
    pub vault_domain: String,
    /// Token audience.
    pub token_audience: String,
    /// Token lifetime.
    pub token_lifetime_seconds: i64,
    /// More host names.
    pub extra_hosts: Vec<String>,
    /// Root key file.
    pub root_key_file: PathBuf,
    /// Shares of a split root, to open the data directory with (`--root-share`).
    pub root_shares: Vec<PathBuf>,
    /// Keys that decrypt encrypted shares (`--root-share-key`).
    pub root_share_keys: Vec<PathBuf>,
    /// Default vault retention.
    pub default_retention_days: u32,
    /// Default vault name.
    pub default_vault_name: String,
    /// Maintenance interval.
    pub maintenance_interval_seconds: u64,
    /// Log filter.
    pub log: String,
    /// Where the records are kept.
    pub store: StoreSettings,
    /// The HSM that holds `-HSM` keys, when one is configured.
    pub hsm: Option<HsmSettings>,
    /// Where `/metrics` is served (plain HTTP); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where full backups are written and read; `None`: full backups are refused.
    pub backup_dir: Option<PathBuf>,
}

/// The environment variable the token's user PIN is read from when no PIN file is given.
pub const PKCS11_PIN_ENV: &str = "KEYSHIFT_PKCS11_PIN";

/// How `keyshift serve` reaches its HSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmSettings {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The PIN file; `None`: the PIN is in `KEYSHIFT_PKCS11_PIN`.
    pub pin_file: Option<PathBuf>,
    /// Most sessions open at once.
    pub max_sessions: Option<usize>,
}

/// Flags shared by every command that opens the data directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// Settings file (TOML).
    #[arg(long, env = "KEYSHIFT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./keyshift-data].
    #[arg(long, env = "KEYSHIFT_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Root key file [default: <data-dir>/root.key].
    #[arg(long, env = "KEYSHIFT_ROOT_KEY_FILE", global = true)]
    pub root_key_file: Option<PathBuf>,
    /// Log filter [default: info].
    #[arg(long, env = "KEYSHIFT_LOG", global = true)]
    pub log: Option<String>,
    /// Keep the records in PostgreSQL (postgres://user@host:port/database) instead of
    /// <data-dir>/keyshift.db; the password from KEYSHIFT_STORE_PASSWORD or --store-password-file.
    /// TLS to PostgreSQL is not supported yet.
    #[arg(
        long,
        env = "KEYSHIFT_STORE_URL",
        hide_env_values = true,
        global = true
    )]
    pub store_url: Option<StoreUrl>,
    /// File holding the PostgreSQL password (mode 0600).
    #[arg(long, env = "KEYSHIFT_STORE_PASSWORD_FILE", global = true)]
    pub store_password_file: Option<PathBuf>,
    /// A share of a split root (file), so that a command that opens the data directory itself
    /// can: repeat up to the threshold. The root is recombined in this process, for as long as it
    /// runs. Not for `serve`, which starts sealed and takes shares from `keyshift unseal`.
    #[arg(long = "root-share", global = true)]
    pub root_shares: Vec<PathBuf>,
    /// A custodian's private key (PKCS#8 PEM) that decrypts an encrypted --root-share; repeatable.
    #[arg(long = "root-share-key", global = true)]
    pub root_share_keys: Vec<PathBuf>,
}

/// Flags of `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address of the main listener [default: 127.0.0.1:8443].
    #[arg(long, env = "KEYSHIFT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Public URL of the main listener [default: https://<vault-domain>:<port>].
    #[arg(long, env = "KEYSHIFT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Vaults answer at <name>.<vault-domain> [default: localhost].
    #[arg(long, env = "KEYSHIFT_VAULT_DOMAIN")]
    pub vault_domain: Option<String>,
    /// Audience of issued tokens [default: https://vault.azure.net].
    #[arg(long, env = "KEYSHIFT_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// Token lifetime in seconds [default: 3600].
    #[arg(long, env = "KEYSHIFT_TOKEN_LIFETIME_SECONDS")]
    pub token_lifetime_seconds: Option<i64>,
    /// More host names of the default vault, comma-separated.
    #[arg(long, env = "KEYSHIFT_EXTRA_HOSTS", value_delimiter = ',')]
    pub extra_hosts: Option<Vec<String>>,
    /// Soft-delete retention in days of the default vault, fixed at first start [default: 90].
    #[arg(long, env = "KEYSHIFT_DEFAULT_RETENTION_DAYS")]
    pub default_retention_days: Option<u32>,
    /// Name of the default vault, fixed at first start [default: default].
    #[arg(long, env = "KEYSHIFT_DEFAULT_VAULT_NAME")]
    pub default_vault_name: Option<String>,
    /// Seconds between purges of expired deleted keys and scheduled rotations [default: 60].
    #[arg(long, env = "KEYSHIFT_MAINTENANCE_INTERVAL_SECONDS")]
    pub maintenance_interval_seconds: Option<u64>,
    /// PKCS#11 module of an HSM to hold -HSM keys (every key of a managed HSM), such as
    /// /usr/lib/softhsm/libsofthsm2.so. Needs --pkcs11-token-label; the user PIN comes from
    /// --pkcs11-pin-file or KEYSHIFT_PKCS11_PIN.
    #[arg(long, env = "KEYSHIFT_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the HSM's token.
    #[arg(long, env = "KEYSHIFT_PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// File holding the token's user PIN (mode 0600).
    #[arg(long, env = "KEYSHIFT_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Most PKCS#11 sessions open at once [default: 8].
    #[arg(long, env = "KEYSHIFT_PKCS11_MAX_SESSIONS")]
    pub pkcs11_max_sessions: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no authentication: bind it
    /// to loopback or a scrape network) [default: off].
    #[arg(long, env = "KEYSHIFT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of full backups: `POST /backup` with `storageResourceUri` `file:///<container>`
    /// writes to DIR/<container>/ [default: <data-dir>/backups].
    #[arg(long, env = "KEYSHIFT_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
}

impl Settings {
    /// Merges flags and environment (already folded together by clap) over the file and defaults.
    pub fn resolve(common: &CommonArgs, serve: &ServeArgs) -> Result<Self> {
        let file = match &common.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let data_dir = common
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("keyshift-data"));
        let root_key_file = common
            .root_key_file
            .clone()
            .or(file.root_key_file)
            .unwrap_or_else(|| data_dir.join("root.key"));
        let listen = match serve.listen.or(file.listen) {
            Some(l) => l,
            None => "127.0.0.1:8443".parse().context("default listen address")?,
        };
        let hsm = match (
            serve.pkcs11_module.clone().or(file.pkcs11_module),
            serve.pkcs11_token_label.clone().or(file.pkcs11_token_label),
        ) {
            (None, None) => None,
            (Some(module), Some(token_label)) => Some(HsmSettings {
                module,
                token_label,
                pin_file: serve.pkcs11_pin_file.clone().or(file.pkcs11_pin_file),
                max_sessions: serve.pkcs11_max_sessions.or(file.pkcs11_max_sessions),
            }),
            (Some(_), None) => {
                anyhow::bail!("--pkcs11-module needs --pkcs11-token-label (the token's label)")
            }
            (None, Some(_)) => {
                anyhow::bail!("--pkcs11-token-label needs --pkcs11-module (the PKCS#11 module)")
            }
        };
        Ok(Settings {
            hsm,
            metrics_listen: serve.metrics_listen.or(file.metrics_listen),
            backup_dir: Some(
                serve
                    .backup_dir
                    .clone()
                    .or(file.backup_dir)
                    .unwrap_or_else(|| data_dir.join("backups")),
            ),
            data_dir,
            listen,
            public_url: serve.public_url.clone().or(file.public_url),
            vault_domain: serve
                .vault_domain
                .clone()
                .or(file.vault_domain)
                .unwrap_or_else(|| "localhost".into()),
            token_audience: serve
                .token_audience
                .clone()
                .or(file.token_audience)
                .unwrap_or_else(|| "https://vault.azure.net".into()),
            token_lifetime_seconds: serve
                .token_lifetime_seconds
                .or(file.token_lifetime_seconds)
                .unwrap_or(3600),
            extra_hosts: serve
                .extra_hosts
                .clone()
                .or(file.extra_hosts)
                .unwrap_or_default(),
            root_key_file,
            root_shares: common.root_shares.clone(),
            root_share_keys: common.root_share_keys.clone(),
            default_retention_days: serve
                .default_retention_days
                .or(file.default_retention_days)
                .unwrap_or(90),
            default_vault_name: serve
                .default_vault_name
                .clone()
                .or(file.default_vault_name)
                .unwrap_or_else(|| "default".into()),
            maintenance_interval_seconds: serve
                .maintenance_interval_seconds
                .or(file.maintenance_interval_seconds)
                .unwrap_or(60),
            log: common
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info".into()),
            store: StoreSettings {
                url: common.store_url.clone().or(file.store_url),
                password: std::env::var(STORE_PASSWORD_ENV)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(Zeroizing::new),
                password_file: common
                    .store_password_file
                    .clone()
                    .or(file.store_password_file),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flags_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyshift.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from-file\"\nvault_domain = \"kv.test\"\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&common, &ServeArgs::default()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/from-file"));
        assert_eq!(s.vault_domain, "kv.test");
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.root_key_file, PathBuf::from("/from-file/root.key"));
        assert_eq!(s.token_audience, "https://vault.azure.net");
        let common = CommonArgs {
            config: Some(path),
            data_dir: Some("/flag".into()),
            ..Default::default()
        };
        let serve = ServeArgs {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            ..Default::default()
        };
        let s = Settings::resolve(&common, &serve).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/flag"));
        assert_eq!(s.listen.port(), 1);
    }

    #[test]
    fn the_store_url_comes_from_flag_or_file_and_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyshift.toml");
        std::fs::write(
            &path,
            "store_url = \"postgres://ks:file-secret@db/ks\"\nstore_password_file = \"/run/pw\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&common, &ServeArgs::default()).unwrap();
        assert_eq!(
            s.store.url.as_ref().map(StoreUrl::expose),
            Some("postgres://ks:file-secret@db/ks")
        );
        assert_eq!(s.store.password_file, Some(PathBuf::from("/run/pw")));
        let common = CommonArgs {
            config: Some(path),
            store_url: Some(StoreUrl::new("postgres://ks:flag-secret@db/ks")),
            ..Default::default()
        };
        let mut s = Settings::resolve(&common, &ServeArgs::default()).unwrap();
        assert_eq!(
            s.store.url.as_ref().map(StoreUrl::expose),
            Some("postgres://ks:flag-secret@db/ks")
        );
        s.store.password = Some(Zeroizing::new("env-secret".into()));
        let shown = format!("{s:?} {common:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            Settings::resolve(&CommonArgs::default(), &ServeArgs::default())
                .unwrap()
                .store
                .url
                .is_none()
        );
    }

    #[test]
    fn unknown_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyshift.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        assert!(FileConfig::load(&path).is_err());
    }
}
