//! The data directory: created on first start, reused on every later one.
//!
//! ```text
//! <data-dir>/keyshift.db    SQLite store (WAL, synchronous=FULL), unless the records are kept in
//!                           PostgreSQL (--store-url); everything below stays here either way
//! <data-dir>/root.key       root key, 32 random bytes, mode 0600 (unless --root-key-file), or
//! <data-dir>/root.json      instead: the root is split into shares (`keyshift init`)
//! <data-dir>/tls/ca.pem     local CA certificate: trust this
//! <data-dir>/tls/ca.key     local CA private key, mode 0600
//! <data-dir>/admin.json     administrator credentials, written once, mode 0600
//! <data-dir>/serving.json  where the server last started (for `keyshift vault`)
//! ```

use crate::config::{Settings, StoreSettings};
use anyhow::{bail, Context, Result};
use keyshift_crypto::seal::SealingKey;
use keyshift_server::tls::LocalCa;
use keyshift_store::postgres::{PostgresOptions, PostgresStore};
use keyshift_store::sqlite::SqliteStore;
use keyshift_store::Store;
use keyshift_vault::{Clock, Deployment, RootKey, SystemClock, VaultKind, VaultSpec};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The administrator's credentials file.
#[derive(Clone, Serialize, Deserialize)]
pub struct AdminCredentials {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Default vault URL.
    pub vault_url: String,
    /// Path of the CA certificate to trust.
    pub ca_cert: String,
    /// Token endpoint.
    pub token_url: String,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Where it is.
    pub path: PathBuf,
    /// The deployment.
    pub deployment: Arc<Deployment>,
    /// The local CA.
    pub ca: LocalCa,
    /// Path of the CA certificate.
    pub ca_cert_path: PathBuf,
    /// Where the records are: the SQLite file, or `postgres://user@host:port/database` (no
    /// password).
    pub store_location: String,
}

/// The audit chain of the server on this data directory, kept in `audit-chain` (made at the
/// first start): a node's restarts continue its chain and chain what its previous run left
/// pending. Nodes on one database each have a data directory, so a chain of their own; copy
/// `root.key`, `admin.json` and `tls/` to set up a node, not this file (a copy still works, but
/// the two nodes then take turns on one chain).
pub fn use_audit_chain(dir: &DataDir) -> Result<String> {
    chain_named_in(&dir.path.join("audit-chain"), &dir.deployment)
}

/// The audit chain of the command line's changes on this data directory (`keyshift principal
/// create`, `keyshift role assign`, ...), kept in `audit-chain-cli`: one chain for every
/// command run here, apart from the server's, so a command never appends to a running server's
/// chain. Two commands at once take turns on it.
pub fn use_cli_audit_chain(path: &Path, deployment: &Deployment) -> Result<String> {
    chain_named_in(&path.join("audit-chain-cli"), deployment)
}

fn chain_named_in(path: &Path, deployment: &Deployment) -> Result<String> {
    let id = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = keyshift_vault::audit::new_chain_id()
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            write_private_file(path, format!("{id}\n").as_bytes())?;
            id
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    deployment
        .set_audit_chain(&id)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
    Ok(id)
}

/// Writes `bytes` to `path` with mode 0600 atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn check_private(path: &Path) -> Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

fn load_or_create_root_key(path: &Path) -> Result<SealingKey> {
    if path.exists() {
        check_private(path)?;
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the root key {}", path.display()))?;
        return SealingKey::from_bytes(&bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not a Keyshift root key (32 bytes expected)",
                path.display()
            )
        });
    }
    let key =
        SealingKey::generate().map_err(|e| anyhow::anyhow!("cannot generate the root key: {e}"))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_private_file(path, &key.to_bytes())?;
    Ok(key)
}

/// The local CA of `<data-dir>/tls`, made on first use.
pub(crate) fn load_or_create_ca(tls_dir: &Path, now: i64) -> Result<LocalCa> {
    let cert = tls_dir.join("ca.pem");
    let key = tls_dir.join("ca.key");
    if cert.exists() && key.exists() {
        check_private(&key)?;
        return Ok(LocalCa {
            cert_pem: std::fs::read_to_string(&cert)?,
            key_pem: std::fs::read_to_string(&key)?,
        });
    }
    std::fs::create_dir_all(tls_dir)?;
    let ca = LocalCa::generate(now)?;
    write_private_file(&key, ca.key_pem.as_bytes())?;
    std::fs::write(&cert, ca.cert_pem.as_bytes())?;
    Ok(ca)
}

/// Connects to the configured token and attaches it: `-HSM` keys are made in it from now on.
fn attach_hsm(deployment: &Deployment, hsm: &crate::config::HsmSettings) -> Result<()> {
    let backend = connect_hsm(hsm)?;
    let platform = format!("PKCS#11: {}", backend.platform());
    tracing::info!(token = %hsm.token_label, %platform, "HSM attached: -HSM keys are made in it");
    deployment.attach_hsm(Arc::new(backend), hsm.token_label.clone(), platform);
    Ok(())
}

/// Connects to the configured token (logged in).
pub(crate) fn connect_hsm(
    hsm: &crate::config::HsmSettings,
) -> Result<keyshift_crypto::pkcs11::Pkcs11Backend> {
    use keyshift_crypto::pkcs11::{PinSource, Pkcs11Backend, Pkcs11Config};
    let pin = match &hsm.pin_file {
        Some(file) => {
            check_private(file)?;
            PinSource::File(file.clone())
        }
        None => PinSource::Env(crate::config::PKCS11_PIN_ENV.into()),
    };
    let mut config = Pkcs11Config::new(&hsm.module, &hsm.token_label, pin);
    if let Some(max) = hsm.max_sessions {
        config.max_sessions = max.max(1);
    }
    Pkcs11Backend::connect(&config).map_err(|e| {
        anyhow::anyhow!(
            "cannot use HSM token {:?} through {}: {e}",
            hsm.token_label,
            hsm.module.display()
        )
    })
}

/// Opens the data directory, creating what is missing.
pub async fn open(settings: &Settings) -> Result<DataDir> {
    let path = settings.data_dir.clone();
    if !path.exists() {
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
    }
    let root: RootKey = match crate::seal_cmd::read_root_mode(&path)? {
        None => load_or_create_root_key(&settings.root_key_file)?.into(),
        Some(crate::seal_cmd::RootMode::Shamir(manifest)) => {
            if settings.root_shares.is_empty() {
                bail!(
                    "the root key of {} is split into shares (root.json): give this command a \
                     threshold of them with --root-share (and --root-share-key for encrypted \
                     ones), or use the admin API of the unsealed server",
                    path.display()
                );
            }
            crate::seal_cmd::recombine_root(
                &manifest,
                &settings.root_shares,
                &settings.root_share_keys,
            )?
            .into()
        }
        Some(crate::seal_cmd::RootMode::Pkcs11(token_root)) => {
            crate::seal_cmd::open_token_root(&token_root, settings.hsm.as_ref())?
        }
    };
    open_with_root(settings, root).await
}

/// Opens the data directory with a root key obtained elsewhere (recombined from shares, or in a
/// token).
pub async fn open_with_root(settings: &Settings, root: impl Into<RootKey>) -> Result<DataDir> {
    let path = settings.data_dir.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, store_location) = open_store(&path, &settings.store).await?;
    let (deployment, _fresh) = Deployment::open(store, clock.clone(), root)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if let Some(hsm) = &settings.hsm {
        attach_hsm(&deployment, hsm)?;
    }
    let ca = load_or_create_ca(&path.join("tls"), clock.now())?;
    Ok(DataDir {
        ca_cert_path: std::fs::canonicalize(path.join("tls").join("ca.pem"))?,
        path,
        deployment: Arc::new(deployment),
        ca,
        store_location,
    })
}

/// Opens the store the settings name: `<dir>/keyshift.db`, or PostgreSQL. A data directory whose
/// records are in the other place is refused: opening it would start an empty deployment beside
/// the real one, under an `admin.json` that does not belong to it.
async fn open_store(dir: &Path, settings: &StoreSettings) -> Result<(Arc<dyn Store>, String)> {
    let sqlite_file = dir.join("keyshift.db");
    let Some(url) = &settings.url else {
        if !sqlite_file.exists() && dir.join("admin.json").exists() {
            bail!(
                "{} has an admin.json but no keyshift.db: its records are kept elsewhere \
                 (in PostgreSQL?); give the same --store-url (KEYSHIFT_STORE_URL) as before",
                dir.display()
            );
        }
        let store = SqliteStore::open(&sqlite_file)
            .await
            .context("cannot open the store")?;
        return Ok((Arc::new(store), sqlite_file.display().to_string()));
    };
    if sqlite_file.exists() {
        bail!(
            "{} keeps its records in keyshift.db (SQLite); they cannot be moved to PostgreSQL \
             yet, so --store-url needs a new data directory (copy root.key into it to keep the \
             same root of trust across nodes)",
            dir.display()
        );
    }
    let mut options = PostgresOptions::from_url(url.expose())
        .map_err(|e| anyhow::anyhow!("--store-url (KEYSHIFT_STORE_URL): {e}"))?;
    let password = match (&settings.password, &settings.password_file) {
        (Some(_), Some(_)) => bail!(
            "the PostgreSQL password is given twice ({} and --store-password-file): keep one",
            crate::config::STORE_PASSWORD_ENV
        ),
        (Some(password), None) => Some(password.clone()),
        (None, Some(file)) => Some(read_password_file(file)?),
        (None, None) => None,
    };
    if let Some(password) = &password {
        options = options.password(password);
    }
    let location = options.describe();
    let store = PostgresStore::connect(options)
        .await
        .with_context(|| format!("cannot open the store in {location}"))?;
    tracing::info!(store = %location, "records are kept in PostgreSQL");
    Ok((Arc::new(store), location))
}

/// Reads a password file: private to its owner, one line (a final newline is not part of it).
fn read_password_file(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    check_private(path)
        .with_context(|| format!("cannot use the password file {}", path.display()))?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?,
    );
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("the password file {} is empty", path.display());
    }
    Ok(zeroize::Zeroizing::new(password.to_owned()))
}

/// Creates the default vault and the administrator on first start. Returns the credentials when
/// they were created now; they are also written to `<data-dir>/admin.json`.
pub async fn ensure_defaults(
    dir: &DataDir,
    settings: &Settings,
    public_url: &str,
) -> Result<Option<AdminCredentials>> {
    let d = &dir.deployment;
    // Each default is an audit event (principal `local`), on the server's chain when its
    // writer already runs.
    let local = crate::local_audit::Local::from(dir);
    if d.default_vault().is_none() {
        let change = local
            .change("VaultCreate", &settings.default_vault_name, None)
            .await?;
        let created = d
            .create_vault(
                &change.ctx,
                VaultSpec {
                    name: settings.default_vault_name.clone(),
                    kind: VaultKind::Vault,
                    retention_days: settings.default_retention_days,
                    purge_protection: false,
                    port: None,
                    new_security_domain: false,
                    default: true,
                },
            )
            .await;
        if let Err(e) = change.record(created).await? {
            // Another node starting on the same new database may have created it first.
            d.refresh_vaults()
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            if d.default_vault().is_none() {
                bail!("cannot create the default vault: {}", e.message);
            }
        }
    }
    let admin_path = dir.path.join("admin.json");
    if admin_path.exists()
        || d.principal_count()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?
            > 0
    {
        // Deployments made before roles existed: the administrator of admin.json gets its role.
        if d.administrator().is_none() {
            if let Ok(bytes) = std::fs::read(&admin_path) {
                let creds: AdminCredentials = serde_json::from_slice(&bytes)?;
                if let Some(p) = d
                    .principal_by_client_id(&creds.client_id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?
                {
                    let change = local.change("AdministratorSet", "", Some(&p.id)).await?;
                    let set = d.set_administrator(&change.ctx, &p.id).await;
                    change.finish(set).await?;
                }
            }
        }
        return Ok(None);
    }
    let change = local.change("PrincipalCreate", "", None).await?;
    let made = d
        .create_principal_with(&change.ctx, "keyshift-admin", true)
        .await;
    let admin = change
        .finish(made)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the administrator: {e}"))?;
    let change = local
        .change("AdministratorSet", "", Some(&admin.principal.id))
        .await?;
    let set = d.set_administrator(&change.ctx, &admin.principal.id).await;
    change
        .finish(set)
        .await
        .map_err(|e| anyhow::anyhow!("cannot give the administrator its role: {e}"))?;
    let creds = AdminCredentials {
        tenant_id: d.tenant_id().to_owned(),
        client_id: admin.principal.client_id.clone(),
        client_secret: admin.client_secret.clone(),
        vault_url: public_url.to_owned(),
        ca_cert: dir.ca_cert_path.display().to_string(),
        token_url: format!("{public_url}/{}/oauth2/v2.0/token", d.tenant_id()),
    };
    write_private_file(&admin_path, &serde_json::to_vec_pretty(&creds)?)?;
    Ok(Some(creds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreUrl;

    #[test]
    fn password_files_are_private_single_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\r\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password_file(&path).unwrap().as_str(), "s3cret");
        std::fs::write(&path, "s3cret").unwrap();
        assert_eq!(read_password_file(&path).unwrap().as_str(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_password_file(&path).is_err(), "empty");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_password_file(&path).unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
    }

    #[tokio::test]
    async fn records_are_never_split_between_sqlite_and_postgres() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keyshift.db"), b"").unwrap();
        let postgres = StoreSettings {
            url: Some(StoreUrl::new("postgres://ks:pw@127.0.0.1:1/ks")),
            ..Default::default()
        };
        let err = open_store(dir.path(), &postgres).await.unwrap_err();
        assert!(format!("{err:#}").contains("keyshift.db"), "{err:#}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.json"), b"{}").unwrap();
        let err = open_store(dir.path(), &StoreSettings::default())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("--store-url"), "{err:#}");
        assert!(!dir.path().join("keyshift.db").exists());
    }

    #[tokio::test]
    async fn the_password_is_given_once() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            url: Some(StoreUrl::new("postgres://ks@127.0.0.1:1/ks")),
            password: Some(zeroize::Zeroizing::new("a".into())),
            password_file: Some(dir.path().join("pw")),
        };
        let err = open_store(dir.path(), &settings).await.unwrap_err();
        assert!(format!("{err:#}").contains("twice"), "{err:#}");
    }
}
