//! Keyshift's cryptography: the only crate that names aws-lc-rs.
//!
//! The rest of Keyshift speaks in this crate's types: [`KeyMaterial`] holds a key
//! version's private material and performs the JWA operations of the Azure Key
//! Vault keys API (encrypt/decrypt, wrap/unwrap, sign/verify); [`seal`] protects
//! records under a security-domain key; [`token`] signs the vault's access
//! tokens; [`secret`] hashes client secrets; [`gcm`] and [`kdf`] are the
//! AES-256-GCM and HKDF primitives of the envelope format. [`hsm`] is the seam
//! for keys held in an HSM ([`HsmBackend`]); [`pkcs11`] (cargo feature
//! `pkcs11`) implements it over PKCS#11.
//!
//! Secrets live in zeroizing buffers (or inside aws-lc, which clears key memory
//! when it frees it) and never appear in `Debug` output or error messages.
//! Every bad input is an `Err`, never a panic.

#![warn(missing_docs)]

mod aes;
mod algorithm;
pub mod digest;
pub mod error;
pub mod gcm;
pub mod hsm;
mod jwk;
pub mod kdf;
pub(crate) mod key;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod seal;
pub mod secret;
pub mod shamir;
mod signature;
pub mod token;
pub mod transfer;
pub mod x509;

pub use algorithm::{Curve, EncryptionAlgorithm, KeyFamily, SignatureAlgorithm};
pub use error::{CryptoError, Result};
pub use hsm::{HsmBackend, HsmKey, HsmKeyFacts, HsmKeyRef, HsmKeySpec};
pub use jwk::{JwkParts, PublicKey};
pub use key::{EncryptOutput, KeyMaterial};
pub use signature::{encrypt_with_public, verify_message_with_public, verify_with_public};

/// `len` bytes from the system's cryptographically secure generator.
pub fn random_bytes(len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| CryptoError::Internal)?;
    Ok(out)
}

/// Fills `out` from the system's cryptographically secure generator.
pub fn fill_random(out: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(out).map_err(|_| CryptoError::Internal)
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

// Key material is shared between request handlers and caches.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeyMaterial>();
    assert_send_sync::<seal::SealingKey>();
    assert_send_sync::<token::TokenSigningKey>();
    assert_send_sync::<gcm::Aes256GcmKey>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn fill_random_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
