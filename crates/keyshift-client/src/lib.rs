//! An async client for the Azure Key Vault keys API: against Keyshift, Azure Key Vault or Azure
//! Managed HSM, with token acquisition. Used by the envelope-encryption CLI and the migration
//! engine.
//!
//! - [`KeyClient`]: every keys operation (get, create, import, update, delete, list with paging,
//!   rotate, backup, restore, wrap/unwrap, encrypt/decrypt, sign/verify, random bytes) and
//!   Keyshift's [`KeyClient::key_usage`] extension. Keys are addressed by [`VaultUrl`] + name
//!   (+ version) or, for crypto operations, by a [`Kid`] ([`parse_kid`] validates one).
//! - Credentials: [`ClientSecretCredential`] (OAuth2 client credentials; a fixed token endpoint,
//!   Keyshift's `admin.json`, or an endpoint learned from the vault's 401 challenge),
//!   [`StaticToken`], or any [`TokenCredential`].
//! - Errors: [`ClientError`] with an [`ErrorKind`], the HTTP status and the service's Azure error
//!   code, inner code and message.
//! - Retries: 429/502/503/504, timeouts and connection failures, with exponential backoff and
//!   jitter, honouring `Retry-After`; operations that create state are retried only when the
//!   request cannot have been sent ([`retry`]).
//!
//! The request and answer types are those of [`keyshift_api`] (re-exported): `KeyBundle`,
//! `KeyCreateParameters`, `KeyOperationsParameters`, `KeyOperationResult`, ...
//!
//! ```no_run
//! use keyshift_client::{parse_kid, ClientSecretCredential, KeyClient, VaultUrl};
//! use keyshift_client::keyshift_api::keys::KeyCreateParameters;
//! use std::sync::Arc;
//!
//! # async fn example() -> Result<(), keyshift_client::ClientError> {
//! // Keyshift: the administrator's admin.json names the token endpoint, vault and CA.
//! let admin = keyshift_client::AdminJson::read("keyshift-data/admin.json")?;
//! let client = KeyClient::builder()
//!     .credential(Arc::new(admin.credential()?))
//!     .ca_pem(Some(&admin.ca_pem()?)) // in addition to the system roots
//!     .retries(3)
//!     .build()?;
//! let vault = admin.vault()?;
//!
//! let created = client
//!     .create_key(&vault, "payments-kek", &KeyCreateParameters {
//!         kty: Some("RSA".into()),
//!         key_size: Some(3072),
//!         ..Default::default()
//!     })
//!     .await?;
//! let kid = parse_kid(created.key.kid.as_deref().unwrap_or_default())?;
//! let wrapped = client.wrap_key(&kid, "RSA-OAEP-256", &[7u8; 32]).await?;
//! let unwrapped = client.unwrap_key(&kid, "RSA-OAEP-256", &wrapped.value).await?;
//! assert_eq!(unwrapped.value, vec![7u8; 32]);
//!
//! // Azure Key Vault: the token endpoint is learned from the vault's challenge, and the
//! // client secret goes only to an allowed authority host.
//! let credential = ClientSecretCredential::for_challenge("app-id", "app-secret")
//!     .allow_authority_host("login.microsoftonline.com")
//!     .build()?;
//! let azure = KeyClient::builder().credential(Arc::new(credential)).build()?;
//! let vault = VaultUrl::parse("https://myvault.vault.azure.net")?;
//! for item in azure.list_keys(&vault, None).await? {
//!     println!("{}", item.kid);
//! }
//! # Ok(())
//! # }
//! ```

pub mod challenge;
mod client;
pub mod credential;
pub mod error;
pub mod keys;
pub mod kid;
pub mod retry;
mod tls;

pub use challenge::BearerChallenge;
pub use client::{KeyClient, KeyClientBuilder, DEFAULT_API_VERSION};
pub use credential::{
    AccessToken, AdminJson, ClientSecretCredential, ClientSecretCredentialBuilder, StaticToken,
    TokenCredential,
};
pub use error::{ClientError, ErrorKind};
pub use keys::{KeyUsageReport, Pages, UsageEntry, VersionUsage};
pub use keyshift_api;
pub use kid::{parse_kid, Kid, VaultUrl};
pub use retry::RetryPolicy;
