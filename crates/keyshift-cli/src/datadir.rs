//! The data directory: created on first start, reused on every later one.
//!
//! ```text
//! <data-dir>/keyshift.db    SQLite store (WAL, synchronous=FULL)
//! <data-dir>/root.key       root key, 32 random bytes, mode 0600 (unless --root-key-file)
//! <data-dir>/tls/ca.pem     local CA certificate: trust this
//! <data-dir>/tls/ca.key     local CA private key, mode 0600
//! <data-dir>/admin.json     administrator credentials, written once, mode 0600
//! <data-dir>/serving.json  where the server last started (for `keyshift vault`)
//! ```

use crate::config::Settings;
use anyhow::{bail, Context, Result};
use keyshift_crypto::seal::SealingKey;
use keyshift_server::tls::LocalCa;
use keyshift_store::sqlite::SqliteStore;
use keyshift_vault::{Clock, Deployment, SystemClock, VaultKind, VaultSpec};
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

fn load_or_create_ca(tls_dir: &Path, now: i64) -> Result<LocalCa> {
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

/// Opens the data directory, creating what is missing.
pub async fn open(settings: &Settings) -> Result<DataDir> {
    let path = settings.data_dir.clone();
    if !path.exists() {
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let root = load_or_create_root_key(&settings.root_key_file)?;
    let store = SqliteStore::open(&path.join("keyshift.db"))
        .await
        .context("cannot open the store")?;
    let (deployment, _fresh) = Deployment::open(Arc::new(store), clock.clone(), root)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let ca = load_or_create_ca(&path.join("tls"), clock.now())?;
    Ok(DataDir {
        ca_cert_path: std::fs::canonicalize(path.join("tls").join("ca.pem"))?,
        path,
        deployment: Arc::new(deployment),
        ca,
    })
}

/// Creates the default vault and the administrator on first start. Returns the credentials when
/// they were created now; they are also written to `<data-dir>/admin.json`.
pub async fn ensure_defaults(
    dir: &DataDir,
    settings: &Settings,
    public_url: &str,
) -> Result<Option<AdminCredentials>> {
    let d = &dir.deployment;
    if d.default_vault().is_none() {
        d.create_vault(VaultSpec {
            name: settings.default_vault_name.clone(),
            kind: VaultKind::Vault,
            retention_days: settings.default_retention_days,
            purge_protection: false,
            port: None,
            new_security_domain: false,
            default: true,
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the default vault: {}", e.message))?;
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
                    d.set_administrator(&p.id)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                }
            }
        }
        return Ok(None);
    }
    let admin = d
        .create_principal_with("keyshift-admin", true)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the administrator: {}", e.message))?;
    d.set_administrator(&admin.principal.id)
        .await
        .map_err(|e| anyhow::anyhow!("cannot give the administrator its role: {}", e.message))?;
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
