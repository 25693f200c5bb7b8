//! `keyshift security-domain ...` and `keyshift backup ...`: moving a vault to another
//! deployment, through a running server's API (see `docs/backup-and-recovery.md`).

use crate::CommonArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use keyshift_client::{KeyClient, VaultUrl};
use keyshift_vault::backup::{recombine, upload_for, SecurityDomainFile, TransferKey};
use std::path::{Path, PathBuf};

/// The security domain: the key every key and backup of a vault is sealed under.
#[derive(Debug, Subcommand)]
pub enum SecurityDomainCommand {
    /// Split the vault's security domain to 3 to 10 custodians' certificates; `--required` of
    /// them restore it. Keep the file and the custodians' private keys apart.
    Download {
        /// The vault, e.g. https://kv1.localhost:8443 [default: the one in the credentials].
        #[arg(long)]
        vault_url: Option<String>,
        /// A custodian's certificate (PEM, RSA 2048 bits or more); give 3 to 10.
        #[arg(long = "cert", required = true)]
        certs: Vec<PathBuf>,
        /// Shares needed to restore the domain (2 to the number of certificates).
        #[arg(long)]
        required: usize,
        /// Where to write the security domain (JSON).
        #[arg(long)]
        out: PathBuf,
        /// admin.json-style credentials [default: <data-dir>/admin.json].
        #[arg(long)]
        credentials: Option<PathBuf>,
    },
    /// Give a new, empty vault of another deployment the security domain in FILE: the
    /// custodians' keys decrypt their shares here, the recombined key is wrapped to that
    /// deployment's transfer key, and only that reaches the server.
    Upload {
        /// The vault that receives the domain (it must hold no keys).
        #[arg(long)]
        vault_url: Option<String>,
        /// The downloaded security domain.
        #[arg(long)]
        file: PathBuf,
        /// A custodian's private key (PKCS#8 PEM); give at least the quorum.
        #[arg(long = "custodian-key", required = true)]
        custodian_keys: Vec<PathBuf>,
        /// Credentials for the receiving deployment.
        #[arg(long)]
        credentials: Option<PathBuf>,
    },
}

/// Full backups of a vault: every key, version, attribute, policy and role assignment.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the whole vault into a container of the server's backup directory. Prints the
    /// backup's folder URL.
    Create {
        /// The vault.
        #[arg(long)]
        vault_url: Option<String>,
        /// The container: a directory in the server's --backup-dir.
        #[arg(long, default_value = "backups")]
        container: String,
        /// Credentials.
        #[arg(long)]
        credentials: Option<PathBuf>,
    },
    /// Restore a full backup (or one key of it, with --key) into a vault of the same security
    /// domain: the vault it was made from, or one given the domain with `security-domain upload`.
    Restore {
        /// The vault to restore into.
        #[arg(long)]
        vault_url: Option<String>,
        /// The folder URL `backup create` printed, e.g. file:///backups/mhsm-kv1-20261129010203.
        #[arg(long)]
        folder_url: String,
        /// Only this key (it must not exist in the vault, live or soft-deleted).
        #[arg(long)]
        key: Option<String>,
        /// Credentials.
        #[arg(long)]
        credentials: Option<PathBuf>,
    },
}

fn client(
    common: &CommonArgs,
    credentials: Option<PathBuf>,
    vault: Option<String>,
) -> Result<(KeyClient, VaultUrl)> {
    let path = credentials.unwrap_or_else(|| {
        common
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("keyshift-data"))
            .join("admin.json")
    });
    let admin = keyshift_client::AdminJson::read(&path)
        .map_err(|e| anyhow!("{e} (give credentials with --credentials)"))?;
    let vault = VaultUrl::parse(vault.as_deref().unwrap_or(&admin.vault_url))?;
    Ok((keyshift_migrate::rewrap::client_from(&path)?, vault))
}

fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    keyshift_crypto::x509::pem_certificates(&pem)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{}: no CERTIFICATE block", path.display()))
}

/// Splits `folder_url` (`file:///<container>/<folder>`) into the container URI and the folder.
fn split_folder_url(folder_url: &str) -> Result<(String, String)> {
    let trimmed = folder_url.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((container, folder)) if container.starts_with("file:///") && !folder.is_empty() => {
            Ok((container.to_owned(), folder.to_owned()))
        }
        _ => bail!("{folder_url} is not a backup folder URL (file:///<container>/<folder>)"),
    }
}

/// Runs a security-domain command.
pub async fn run_security_domain(common: &CommonArgs, cmd: SecurityDomainCommand) -> Result<()> {
    match cmd {
        SecurityDomainCommand::Download {
            vault_url,
            certs,
            required,
            out,
            credentials,
        } => {
            let (client, vault) = client(common, credentials, vault_url)?;
            let ders = certs
                .iter()
                .map(|p| read_certificate(p))
                .collect::<Result<Vec<_>>>()?;
            let text = client
                .download_security_domain(&vault, &ders, required)
                .await?;
            let file: SecurityDomainFile = serde_json::from_str(&text)
                .context("the server's security domain does not parse")?;
            std::fs::write(&out, serde_json::to_vec_pretty(&file)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{}",
                serde_json::json!({
                    "security_domain": file.security_domain,
                    "shares": file.shares.len(),
                    "required": file.required,
                    "file": out,
                })
            );
        }
        SecurityDomainCommand::Upload {
            vault_url,
            file,
            custodian_keys,
            credentials,
        } => {
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let sd: SecurityDomainFile = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a security domain file", file.display()))?;
            let keys = custodian_keys
                .iter()
                .map(|p| crate::seal_cmd::read_custodian_key(p))
                .collect::<Result<Vec<_>>>()?;
            let key = recombine(&sd, &keys).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let (client, vault) = client(common, credentials, vault_url)?;
            let transfer: TransferKey = client.security_domain_transfer_key(&vault).await?;
            let upload = upload_for(&sd, &key, &transfer).map_err(|e| anyhow!("{e}"))?;
            client
                .upload_security_domain(&vault, &serde_json::to_string(&upload)?)
                .await?;
            println!(
                "{}",
                serde_json::json!({"security_domain": sd.security_domain, "vault": vault.to_string(), "uploaded": true})
            );
        }
    }
    Ok(())
}

/// Runs a backup command.
pub async fn run_backup(common: &CommonArgs, cmd: BackupCommand) -> Result<()> {
    match cmd {
        BackupCommand::Create {
            vault_url,
            container,
            credentials,
        } => {
            let (client, vault) = client(common, credentials, vault_url)?;
            let op = client
                .full_backup(&vault, &format!("file:///{container}"))
                .await?;
            println!("{op}");
        }
        BackupCommand::Restore {
            vault_url,
            folder_url,
            key,
            credentials,
        } => {
            let (container, folder) = split_folder_url(&folder_url)?;
            let (client, vault) = client(common, credentials, vault_url)?;
            let op = client
                .full_restore(&vault, &container, &folder, key.as_deref())
                .await?;
            println!("{op}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn folder_urls() {
        assert_eq!(
            split_folder_url("file:///nightly/mhsm-kv1-20261129010203").unwrap(),
            ("file:///nightly".into(), "mhsm-kv1-20261129010203".into())
        );
        assert!(split_folder_url("file:///nightly").is_err());
        assert!(split_folder_url("https://x/nightly/f").is_err());
    }
}
