//! `keyshift principal ...` and `keyshift role ...`: identities and who may do what. They work on
//! the data directory directly; a running server sees changes within a second.

use crate::config::CommonArgs;
use crate::local_audit::Local;
use anyhow::{anyhow, Result};
use keyshift_vault::records::{FederatedCredential, JwksSource};
use keyshift_vault::{ApiError, Deployment, VaultRecord};
use std::sync::Arc;

/// Principal commands.
#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCommand {
    /// Create a service principal with a client secret (printed once).
    Create {
        /// Display name.
        name: String,
        /// Let it manage principals and trusted issuers through the admin API.
        #[arg(long)]
        deployment_admin: bool,
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
    /// Let tokens of an external identity (a trusted issuer's subject, e.g. a Kubernetes service
    /// account) stand for this principal: workload identity federation.
    AddFederatedCredential {
        /// Client id.
        client_id: String,
        /// Name of the credential, unique within the principal (3-120 letters, digits, - or _).
        #[arg(long)]
        name: String,
        /// Issuer URL, exactly as in the tokens' `iss`; it must be trusted (keyshift federation trust).
        #[arg(long)]
        issuer: String,
        /// Subject, exactly as in the tokens' `sub` (e.g. system:serviceaccount:<namespace>:<name>).
        #[arg(long)]
        subject: String,
        /// Accepted audience (repeatable) [default: api://AzureADTokenExchange].
        #[arg(long = "audience")]
        audiences: Vec<String>,
    },
    /// Remove a federated credential from a principal.
    RemoveFederatedCredential {
        /// Client id.
        client_id: String,
        /// Name of the credential.
        #[arg(long)]
        name: String,
    },
}

/// Federation commands: external OIDC issuers whose tokens may be exchanged for Keyshift tokens.
#[derive(Debug, clap::Subcommand)]
pub enum FederationCommand {
    /// Trust an external OIDC issuer (or change how it is trusted).
    Trust {
        /// Issuer URL, compared exactly with the tokens' `iss`.
        issuer: String,
        /// JWKS file with the issuer's public keys (re-read by the server when it changes).
        #[arg(
            long,
            conflicts_with = "jwks_url",
            required_unless_present = "jwks_url"
        )]
        jwks_file: Option<std::path::PathBuf>,
        /// https:// URL of the issuer's JWKS, fetched by the server.
        #[arg(long)]
        jwks_url: Option<String>,
        /// PEM file of CA certificates to trust for --jwks-url, besides the system roots.
        #[arg(long, requires = "jwks_url")]
        ca_file: Option<std::path::PathBuf>,
        /// Accepted signature algorithms, comma-separated (RS256, RS384, RS512, PS256, PS384,
        /// PS512, ES256, ES384, ES512).
        #[arg(long, value_delimiter = ',', default_value = "RS256,ES256")]
        algorithms: Vec<String>,
    },
    /// List the trusted issuers.
    List,
    /// Stop trusting an issuer: its tokens are refused at once.
    Remove {
        /// Issuer URL.
        issuer: String,
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

pub(crate) fn msg(e: ApiError) -> anyhow::Error {
    anyhow!("{}", e.message)
}

/// The object id of the principal `client_id` names (a client id or an object id), to name in
/// an audit event; `client_id` itself when there is none.
async fn subject_of(d: &Deployment, client_id: &str) -> String {
    match d.principal_by_client_id(client_id).await {
        Ok(Some(p)) => p.id,
        _ => client_id.to_owned(),
    }
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
    let local = Local::open(common).await?;
    let d = &local.d;
    match cmd {
        PrincipalCommand::Create {
            name,
            deployment_admin,
        } => {
            let change = local.change("PrincipalCreate", "", None).await?;
            let made = d
                .create_principal_with(&change.ctx, &name, deployment_admin)
                .await;
            let p = change.finish(made).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "principal_id": p.principal.id,
                    "client_id": p.principal.client_id,
                    "client_secret": p.client_secret,
                    "tenant_id": d.tenant_id(),
                    "deployment_admin": p.principal.deployment_admin,
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
                } else if d.is_deployment_admin(&p) {
                    " (deployment admin)"
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
            let subject = subject_of(d, &client_id).await;
            let change = local
                .change("PrincipalSecretAdd", "", Some(&subject))
                .await?;
            let added = d.add_principal_secret(&change.ctx, &client_id).await;
            println!("{}", change.finish(added).await?);
        }
        PrincipalCommand::AddCertificate { client_id, pem } => {
            let text =
                std::fs::read(&pem).map_err(|e| anyhow!("cannot read {}: {e}", pem.display()))?;
            let subject = subject_of(d, &client_id).await;
            let change = local
                .change("PrincipalCertificateAdd", "", Some(&subject))
                .await?;
            let added = d
                .add_principal_certificate(&change.ctx, &client_id, &text)
                .await;
            for thumbprint in change.finish(added).await? {
                println!("added certificate x5t={thumbprint} to {client_id}");
            }
        }
        PrincipalCommand::Disable { client_id } => {
            let subject = subject_of(d, &client_id).await;
            let change = local.change("PrincipalUpdate", "", Some(&subject)).await?;
            let done = d
                .set_principal_enabled(&change.ctx, &client_id, false)
                .await;
            change.finish(done).await?;
            println!("disabled {client_id}");
        }
        PrincipalCommand::Enable { client_id } => {
            let subject = subject_of(d, &client_id).await;
            let change = local.change("PrincipalUpdate", "", Some(&subject)).await?;
            let done = d.set_principal_enabled(&change.ctx, &client_id, true).await;
            change.finish(done).await?;
            println!("enabled {client_id}");
        }
        PrincipalCommand::Delete { client_id } => {
            let subject = subject_of(d, &client_id).await;
            let change = local.change("PrincipalDelete", "", Some(&subject)).await?;
            let done = d.delete_principal(&change.ctx, &client_id).await;
            change.finish(done).await?;
            println!("deleted {client_id}");
        }
        PrincipalCommand::AddFederatedCredential {
            client_id,
            name,
            issuer,
            subject,
            audiences,
        } => {
            let about = subject_of(d, &client_id).await;
            let change = local
                .change("FederatedCredentialAdd", "", Some(&about))
                .await?;
            let added = d
                .add_federated_credential(
                    &change.ctx,
                    &client_id,
                    FederatedCredential {
                        name,
                        issuer,
                        subject,
                        audiences,
                    },
                )
                .await;
            let (_, credential) = change.finish(added).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "client_id": client_id,
                    "federated_credential": credential,
                }))?
            );
        }
        PrincipalCommand::RemoveFederatedCredential { client_id, name } => {
            let about = subject_of(d, &client_id).await;
            let change = local
                .change("FederatedCredentialRemove", "", Some(&about))
                .await?;
            let removed = d
                .remove_federated_credential(&change.ctx, &client_id, &name)
                .await;
            let removed = change.finish(removed).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "client_id": client_id,
                    "removed": removed,
                }))?
            );
        }
    }
    Ok(())
}

pub(crate) fn absolute(path: &std::path::Path) -> Result<String> {
    let full = std::fs::canonicalize(path)
        .map_err(|e| anyhow!("cannot resolve {}: {e}", path.display()))?;
    full.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} is not a UTF-8 path", full.display()))
}

/// Runs a federation command.
pub async fn run_federation(common: &CommonArgs, cmd: FederationCommand) -> Result<()> {
    let local = Local::open(common).await?;
    let d = &local.d;
    match cmd {
        FederationCommand::Trust {
            issuer,
            jwks_file,
            jwks_url,
            ca_file,
            algorithms,
        } => {
            let source = match (jwks_file, jwks_url) {
                (Some(file), None) => {
                    // The server reads the file later: check now that it is a usable JWKS.
                    keyshift_server::federation::check_jwks_file(&file).map_err(|e| anyhow!(e))?;
                    JwksSource::File {
                        path: absolute(&file)?,
                    }
                }
                (None, Some(url)) => JwksSource::Url {
                    url,
                    ca_file: ca_file.as_deref().map(absolute).transpose()?,
                },
                _ => return Err(anyhow!("give exactly one of --jwks-file and --jwks-url")),
            };
            let change = local.change("IssuerTrust", "", None).await?;
            let trusted = d
                .trust_issuer(&change.ctx, &issuer, source, &algorithms)
                .await;
            let record = change.finish(trusted).await?;
            println!("{}", serde_json::to_string_pretty(&record)?);
        }
        FederationCommand::List => {
            println!(
                "{}",
                serde_json::to_string_pretty(&d.trusted_issuers().await.map_err(msg)?)?
            );
        }
        FederationCommand::Remove { issuer } => {
            let change = local.change("IssuerUntrust", "", None).await?;
            let removed = d.untrust_issuer(&change.ctx, &issuer).await;
            let removed = change.finish(removed).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "removed": removed }))?
            );
        }
    }
    Ok(())
}

/// Runs a role command.
pub async fn run_role(common: &CommonArgs, cmd: RoleCommand) -> Result<()> {
    let local = Local::open(common).await?;
    let d = &local.d;
    match cmd {
        RoleCommand::Assign {
            role,
            principal,
            scope,
            vault: v,
        } => {
            let v = vault(d, v.as_deref())?;
            // Accept a client id too: assignments name the principal's object id.
            let principal_id = match d.principal_by_client_id(&principal).await.map_err(msg)? {
                Some(p) => p.id,
                None => principal,
            };
            let change = local
                .change("RoleAssignmentCreate", &v.name, Some(&principal_id))
                .await?;
            let assigned = d
                .assign_role(&change.ctx, &v, &scope, &role, &principal_id, None)
                .await;
            let a = change.finish(assigned).await?;
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        RoleCommand::List { vault: v } => {
            let v = vault(d, v.as_deref())?;
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
            let v = vault(d, v.as_deref())?;
            let change = local.change("RoleAssignmentDelete", &v.name, None).await?;
            let removed = d.remove_role_assignment(&change.ctx, &v, &name).await;
            if let Ok(a) = &removed {
                change.subject(&a.principal_id);
            }
            change.finish(removed).await?;
            println!("removed {name}");
        }
        RoleCommand::Definitions { vault: v } => {
            let v = vault(d, v.as_deref())?;
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
    let local = Local::open(common).await?;
    let d = &local.d;
    match cmd {
        TokenCommand::RotateSigningKey => {
            let change = local.change("TokenSigningKeyRotate", "", None).await?;
            let rotated = d.rotate_token_signing_key(&change.ctx).await;
            change.finish(rotated).await?;
            println!(
                "token signing key rotated; {} keys now verify tokens",
                d.token_verification_keys().len()
            );
        }
    }
    Ok(())
}
