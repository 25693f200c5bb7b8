//! `keyshift vault create|list|delete`: works on the data directory directly; a running server
//! picks the change up within two seconds (host name in its certificate, port bound).

use crate::config::{CommonArgs, ServeArgs, Settings};
use crate::datadir;
use crate::local_audit::Local;
use anyhow::{anyhow, Result};
use keyshift_vault::{VaultKind, VaultSpec};

/// Vault commands.
#[derive(Debug, clap::Subcommand)]
pub enum VaultCommand {
    /// Create a vault, reachable at https://<name>.<vault-domain>:<port> and, with --port, at a port of its own.
    Create {
        /// Vault name (3-24 letters, digits, hyphens).
        name: String,
        /// A port of its own, for clients that cannot resolve <name>.localhost.
        #[arg(long)]
        port: Option<u16>,
        /// Soft-delete retention in days, 7 to 90, fixed at creation.
        #[arg(long, default_value_t = 90)]
        retention_days: u32,
        /// Turn purge protection on (it can never be turned off).
        #[arg(long)]
        purge_protection: bool,
        /// vault or managed-hsm.
        #[arg(long, default_value = "vault")]
        kind: String,
        /// Give the vault a security domain of its own: backups of other vaults will not restore into it.
        #[arg(long)]
        new_security_domain: bool,
    },
    /// List vaults.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an empty vault.
    Delete {
        /// Vault name.
        name: String,
    },
    /// Turn purge protection on for a vault (it can never be turned off).
    EnablePurgeProtection {
        /// Vault name.
        name: String,
    },
}

/// Runs a vault command.
pub async fn run(common: &CommonArgs, cmd: VaultCommand) -> Result<()> {
    let settings = Settings::resolve(common, &ServeArgs::default())?;
    let dir = datadir::open(&settings).await?;
    let local = Local::from(&dir);
    let d = &dir.deployment;
    // The port the server last started on, when it did; else the configured one.
    let main_port = std::fs::read(dir.path.join("serving.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(settings.listen.port());
    let msg = |e: keyshift_vault::ApiError| anyhow!("{}", e.message);
    match cmd {
        VaultCommand::Create {
            name,
            port,
            retention_days,
            purge_protection,
            kind,
            new_security_domain,
        } => {
            let kind = match kind.as_str() {
                "vault" => VaultKind::Vault,
                "managed-hsm" => VaultKind::ManagedHsm,
                other => {
                    return Err(anyhow!(
                        "unknown vault kind '{other}': use vault or managed-hsm"
                    ))
                }
            };
            let change = local.change("VaultCreate", &name, None).await?;
            let created = d
                .create_vault(
                    &change.ctx,
                    VaultSpec {
                        name,
                        kind,
                        retention_days,
                        purge_protection,
                        port,
                        new_security_domain,
                        default: false,
                    },
                )
                .await;
            let v = change.finish(created).await?;
            println!(
                "created vault {} (retention {} days)",
                v.name, v.retention_days
            );
            println!(
                "  https://{}.{}:{}",
                v.name, settings.vault_domain, main_port
            );
            if let Some(port) = v.port {
                println!("  https://localhost:{port}");
            }
        }
        VaultCommand::List { json } => {
            let vaults = d.refresh_vaults().await.map_err(msg)?;
            if json {
                let list: Vec<_> = vaults.iter().map(|v| v.as_ref().clone()).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:<12} {:>9} {:>7} {:>6}  url",
                    "name", "kind", "retention", "purge-p", "port"
                );
                for v in vaults {
                    let kind = match v.kind {
                        VaultKind::Vault => "vault",
                        VaultKind::ManagedHsm => "managed-hsm",
                    };
                    let url = if v.default {
                        format!("https://{}:{}", settings.vault_domain, main_port)
                    } else {
                        format!("https://{}.{}:{}", v.name, settings.vault_domain, main_port)
                    };
                    let port = v.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<24} {:<12} {:>9} {:>7} {:>6}  {url}",
                        v.name, kind, v.retention_days, v.purge_protection, port
                    );
                }
            }
        }
        VaultCommand::Delete { name } => {
            let change = local.change("VaultDelete", &name, None).await?;
            let deleted = d.delete_vault(&change.ctx, &name).await;
            change.finish(deleted).await?;
            println!("deleted vault {name}");
        }
        VaultCommand::EnablePurgeProtection { name } => {
            let change = local
                .change("VaultPurgeProtectionEnable", &name, None)
                .await?;
            let enabled = d.enable_purge_protection(&change.ctx, &name).await;
            change.finish(enabled).await?;
            println!("purge protection is on for vault {name}");
        }
    }
    Ok(())
}
