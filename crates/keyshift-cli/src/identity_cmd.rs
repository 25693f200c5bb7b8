//! `keyshift principal ...` and `keyshift role ...`: identities and who may do what. They work on
//! the data directory directly; a running server sees changes within a second.

use crate::config::{CommonArgs, ServeArgs, Settings};
use crate::datadir;
use anyhow::{anyhow, Result};
use keyshift_vault::{ApiError, Deployment, VaultRecord};
use std::sync::Arc;

/// Principal commands.
#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCommand {
    /// Create a service principal with a client secret (printed once).
    Create {
        /// Display name.
        name: String,
    },
    /// List principals.
    List,
    /// Add a client secret to a principal (printed once).
    AddSecret {
        /// Client id.
        client_id: String,
    },
    /// Add a certificate (PEM; RSA 2048+) whose key may sign client assertions (RFC 7523).
    AddCertificate {
        /// Client id.
        client_id: String,
        /// PEM file with the certificate (a private key in the same file is ignored, never read into the store).
        pem: std::path::PathBuf,
    },
    /// Disable a principal: no new tokens, and its tokens stop working within a second.
    Disable {
        /// Client id.
        client_id: String,
    },
    /// Enable a disabled principal.
    Enable {
        /// Client id.
        client_id: String,
    },
    /// Delete a principal.
    Delete {
        /// Client id.
        client_id: String,
    },
}

/// Role commands.
#[derive(Debug, clap::Subcommand)]
pub enum RoleCommand {
    /// Assign a role (name or id) to a principal (object id or client id) at a scope.
    Assign {
        /// Role name (e.g. "Key Vault Crypto User") or id.
        role: String,
        /// Principal object id or client id.
        principal: String,
        /// `/`, `/keys` or `/keys/<name>`.
        #[arg(long, default_value = "/")]
        scope: String,
        /// Vault [default: the default vault].
        #[arg(long)]
        vault: Option<String>,
    },
    /// List role assignments.
    List {
        /// Vault [default: the default vault].
        #[arg(long)]
        vault: Option<String>,
    },
    /// Remove a role assignment by its name.
    Remove {
        /// Assignment name (GUID).
        name: String,
        /// Vault [default: the default vault].
        #[arg(long)]
        vault: Option<String>,
    },
    /// List role definitions with their data actions.
    Definitions {
        /// Vault [default: the default vault].
        #[arg(long)]
        vault: Option<String>,
    },
}

fn msg(e: ApiError) -> anyhow::Error {
    anyhow!("{}", e.message)
}

async fn open(common: &CommonArgs) -> Result<Arc<Deployment>> {
    let settings = Settings::resolve(common, &ServeArgs::default())?;
    Ok(datadir::open(&settings).await?.deployment)
}

fn vault(d: &Deployment, name: Option<&str>) -> Result<Arc<VaultRecord>> {
    match name {
        Some(n) => d.vault(n).ok_or_else(|| anyhow!("no vault named '{n}'")),
        None => d
            .default_vault()
            .ok_or_else(|| anyhow!("there is no default vault")),
    }
}

/// Runs a principal command.
pub async fn run_principal(common: &CommonArgs, cmd: PrincipalCommand) -> Result<()> {
    let d = open(common).await?;
    match cmd {
        PrincipalCommand::Create { name } => {
            let p = d.create_principal(&name).await.map_err(msg)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "principal_id": p.principal.id,
                    "client_id": p.principal.client_id,
                    "client_secret": p.client_secret,
                    "tenant_id": d.tenant_id(),
                }))?
            );
            eprintln!("The client secret is shown once. Give the principal a role: keyshift role assign <role> {}", p.principal.id);
        }
        PrincipalCommand::List => {
            println!(
                "{:<38} {:<38} {:<8} name",
                "principal id", "client id", "enabled"
            );
            for p in d.principals().await.map_err(msg)? {
                let admin = if d.administrator().as_deref() == Some(p.id.as_str()) {
                    " (administrator)"
                } else {
                    ""
                };
                println!(
                    "{:<38} {:<38} {:<8} {}{admin}",
                    p.id, p.client_id, p.enabled, p.display_name
                );
            }
        }
        PrincipalCommand::AddSecret { client_id } => {
            println!("{}", d.add_principal_secret(&client_id).await.map_err(msg)?);
        }
        PrincipalCommand::AddCertificate { client_id, pem } => {
            let text =
                std::fs::read(&pem).map_err(|e| anyhow!("cannot read {}: {e}", pem.display()))?;
            for thumbprint in d
                .add_principal_certificate(&client_id, &text)
                .await
                .map_err(msg)?
            {
                println!("added certificate x5t={thumbprint} to {client_id}");
            }
        }
        PrincipalCommand::Disable { client_id } => {
            d.set_principal_enabled(&client_id, false)
                .await
                .map_err(msg)?;
            println!("disabled {client_id}");
        }
        PrincipalCommand::Enable { client_id } => {
            d.set_principal_enabled(&client_id, true)
                .await
                .map_err(msg)?;
            println!("enabled {client_id}");
        }
        PrincipalCommand::Delete { client_id } => {
            d.delete_principal(&client_id).await.map_err(msg)?;
            println!("deleted {client_id}");
        }
    }
    Ok(())
}

/// Runs a role command.
pub async fn run_role(common: &CommonArgs, cmd: RoleCommand) -> Result<()> {
    let d = open(common).await?;
    match cmd {
        RoleCommand::Assign {
            role,
            principal,
            scope,
            vault: v,
        } => {
            let v = vault(&d, v.as_deref())?;
            // Accept a client id too: assignments name the principal's object id.
            let principal_id = match d.principal_by_client_id(&principal).await.map_err(msg)? {
                Some(p) => p.id,
                None => principal,
            };
            let a = d
                .assign_role(&v, &scope, &role, &principal_id, None)
                .await
                .map_err(msg)?;
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        RoleCommand::List { vault: v } => {
            let v = vault(&d, v.as_deref())?;
            let roles = d.role_definitions(&v).await.map_err(msg)?;
            println!(
                "{:<38} {:<16} {:<38} role",
                "assignment", "scope", "principal id"
            );
            for a in d.role_assignments(&v).await.map_err(msg)?.iter() {
                let role = roles
                    .iter()
                    .find(|r| r.id == a.role_definition_id)
                    .map_or(a.role_definition_id.as_str(), |r| r.name.as_str());
                println!(
                    "{:<38} {:<16} {:<38} {role}",
                    a.name, a.scope, a.principal_id
                );
            }
        }
        RoleCommand::Remove { name, vault: v } => {
            let v = vault(&d, v.as_deref())?;
            d.remove_role_assignment(&v, &name).await.map_err(msg)?;
            println!("removed {name}");
        }
        RoleCommand::Definitions { vault: v } => {
            let v = vault(&d, v.as_deref())?;
            for r in d.role_definitions(&v).await.map_err(msg)? {
                println!("{} ({})", r.name, r.id);
                for p in &r.permissions {
                    for a in &p.data_actions {
                        println!("    {a}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Token issuer commands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Replace the token signing key; tokens it signed stay valid until they expire. A running
    /// server picks the new key up within two seconds.
    RotateSigningKey,
}

/// Runs a token command.
pub async fn run_token(common: &CommonArgs, cmd: TokenCommand) -> Result<()> {
    let d = open(common).await?;
    match cmd {
        TokenCommand::RotateSigningKey => {
            d.rotate_token_signing_key().await.map_err(msg)?;
            println!(
                "token signing key rotated; {} keys now verify tokens",
                d.token_verification_keys().len()
            );
        }
    }
    Ok(())
}
