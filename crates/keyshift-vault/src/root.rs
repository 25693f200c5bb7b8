//! The deployment's root key: a key in this process (from `root.key` or recombined from Shamir
//! shares), or a non-extractable AES-256 key in a PKCS#11 token, where sealing and opening are
//! AES-GCM done by the token, so the root never enters this process.
//!
//! Both seal with AES-256-GCM and a 12-byte random IV; the first byte tells them apart:
//! `0x01` (software, [`SealingKey`]'s format) or `0x02` (token) `|| IV || ciphertext || tag`.
//! A blob of the one opens under the other only by failing, never silently.

use keyshift_crypto::seal::SealingKey;
use keyshift_crypto::{CryptoError, EncryptionAlgorithm, HsmBackend, HsmKey};
use std::sync::Arc;
use zeroize::Zeroizing;

const TOKEN_VERSION: u8 = 0x02;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The root of trust that seals the security-domain keys, the token-signing key, the
/// release-signing key and the audit MAC key.
pub enum RootKey {
    /// A 32-byte key in this process.
    Key(SealingKey),
    /// A non-extractable AES-256 key in a token.
    Token {
        /// The token.
        backend: Arc<dyn HsmBackend>,
        /// The key object.
        key: HsmKey,
    },
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootKey::Key(_) => f.write_str("RootKey::Key(<redacted>)"),
            RootKey::Token { key, .. } => write!(f, "RootKey::Token({})", key.label),
        }
    }
}

impl From<SealingKey> for RootKey {
    fn from(key: SealingKey) -> Self {
        RootKey::Key(key)
    }
}

impl RootKey {
    /// Seals `plaintext` under the root, bound to `aad`. A token root blocks on the token (the
    /// root is used at start-up and when a security domain or signing key is made, not per
    /// key operation: unsealed security-domain keys are cached).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> keyshift_crypto::Result<Vec<u8>> {
        match self {
            RootKey::Key(key) => key.seal(aad, plaintext),
            RootKey::Token { backend, key } => {
                let out = backend.encrypt(
                    key,
                    EncryptionAlgorithm::A256Gcm,
                    plaintext,
                    None,
                    Some(aad),
                )?;
                let (Some(iv), Some(tag)) = (out.iv, out.tag) else {
                    return Err(CryptoError::Internal);
                };
                if iv.len() != IV_LEN || tag.len() != TAG_LEN {
                    return Err(CryptoError::Internal);
                }
                let mut sealed = Vec::with_capacity(1 + IV_LEN + out.ciphertext.len() + TAG_LEN);
                sealed.push(TOKEN_VERSION);
                sealed.extend_from_slice(&iv);
                sealed.extend_from_slice(&out.ciphertext);
                sealed.extend_from_slice(&tag);
                Ok(sealed)
            }
        }
    }

    /// Opens what [`RootKey::seal`] made with the same `aad`: `DecryptionFailed` for a wrong
    /// key, `aad` or any tampering.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> keyshift_crypto::Result<Zeroizing<Vec<u8>>> {
        match self {
            RootKey::Key(key) => key.open(aad, sealed),
            RootKey::Token { backend, key } => {
                if sealed.len() < 1 + IV_LEN + TAG_LEN || sealed[0] != TOKEN_VERSION {
                    // A software-sealed blob, or garbage: not this root's.
                    return Err(CryptoError::DecryptionFailed);
                }
                let (iv, rest) = sealed[1..].split_at(IV_LEN);
                let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
                backend.decrypt(
                    key,
                    EncryptionAlgorithm::A256Gcm,
                    ciphertext,
                    Some(iv),
                    Some(aad),
                    Some(tag),
                )
            }
        }
    }
}
