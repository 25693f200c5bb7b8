//! Sealing of key material: each version under its vault's security-domain key, with the vault id,
//! key name and version as associated data, so a sealed blob moved to another row does not open.

use crate::Result;
use keyshift_api::ApiError;
use keyshift_crypto::seal::SealingKey;
use keyshift_crypto::{HsmKeyRef, KeyMaterial};

fn version_aad(vault_id: &str, name: &str, version: &str) -> Vec<u8> {
    format!(
        "keyshift/key-version/v1\0{vault_id}\0{}\0{version}",
        name.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Seals a version's private material.
pub fn seal_version(
    sd: &SealingKey,
    vault_id: &str,
    name: &str,
    version: &str,
    material: &KeyMaterial,
) -> Result<Vec<u8>> {
    sd.seal(&version_aad(vault_id, name, version), &material.to_bytes())
        .map_err(|e| {
            tracing::error!(error = %e, "sealing failed");
            ApiError::internal()
        })
}

/// Opens a version's private material.
pub fn open_version(
    sd: &SealingKey,
    vault_id: &str,
    name: &str,
    version: &str,
    sealed: &[u8],
) -> Result<KeyMaterial> {
    let bytes = sd
        .open(&version_aad(vault_id, name, version), sealed)
        .map_err(|e| {
            tracing::error!(error = %e, key = name, version, "a sealed key version does not open");
            ApiError::internal()
        })?;
    KeyMaterial::from_bytes(&bytes).map_err(|e| {
        tracing::error!(error = %e, key = name, version, "a sealed key version does not parse");
        ApiError::internal()
    })
}

fn token_ref_aad(vault_id: &str, name: &str, version: &str) -> Vec<u8> {
    format!(
        "keyshift/hsm-key-ref/v1\0{vault_id}\0{}\0{version}",
        name.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Seals the reference of a version's HSM token object, so that a record moved to another key
/// does not name it.
pub fn seal_token_ref(
    sd: &SealingKey,
    vault_id: &str,
    name: &str,
    version: &str,
    reference: &HsmKeyRef,
) -> Result<Vec<u8>> {
    sd.seal(
        &token_ref_aad(vault_id, name, version),
        reference.as_bytes(),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "sealing failed");
        ApiError::internal()
    })
}

/// Opens the reference of a version's HSM token object.
pub fn open_token_ref(
    sd: &SealingKey,
    vault_id: &str,
    name: &str,
    version: &str,
    sealed: &[u8],
) -> Result<HsmKeyRef> {
    let bytes = sd
        .open(&token_ref_aad(vault_id, name, version), sealed)
        .map_err(|e| {
            tracing::error!(error = %e, key = name, version, "a sealed HSM key reference does not open");
            ApiError::internal()
        })?;
    HsmKeyRef::from_bytes(&bytes).map_err(|_| ApiError::internal())
}

/// AAD binding a security-domain key to its id when sealed under the root key.
pub fn security_domain_aad(id: &str) -> Vec<u8> {
    format!("keyshift/security-domain/v1\0{id}").into_bytes()
}

/// AAD of the deployment's token signing key.
pub const TOKEN_KEY_AAD: &[u8] = b"keyshift/token-signing-key/v1";
