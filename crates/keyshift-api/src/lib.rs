//! Wire types of the Azure Key Vault keys API, as Keyshift serves it, and the error envelope.
//!
//! This crate knows JSON and nothing else: no HTTP, no crypto, no storage. Field names follow the
//! official OpenAPI (`shared/spec/azure-keyvault/2025-07-01/keys.json`): snake_case for JWK members and
//! `key_ops`, camelCase for `recoveryId`, `scheduledPurgeDate`, `lifetimeActions` and friends. Unset
//! members are omitted, as the SDKs expect.

pub mod b64;
pub mod error;
pub mod keys;
pub mod rbac;
pub mod version;

pub use error::{ApiError, ErrorCode};
