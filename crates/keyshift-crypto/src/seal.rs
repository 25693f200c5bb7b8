//! AES-256-GCM sealing of records under a security-domain or root key.
//!
//! Format: version byte `0x01` || 12-byte random nonce || ciphertext || 16-byte
//! tag. Random nonces keep the format stateless; with 96-bit nonces one key
//! should seal well under 2^32 records, which a security-domain key never nears.

use std::fmt;

use zeroize::Zeroizing;

use crate::aes::{gcm_open, gcm_seal, GCM_IV_LEN, GCM_TAG_LEN};
use crate::error::{invalid_input, invalid_key, CryptoError, Result};

const VERSION: u8 = 0x01;
const KEY_LEN: usize = 32;

/// An AES-256-GCM sealing key. Zeroized on drop; `Debug` is redacted.
pub struct SealingKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl SealingKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| CryptoError::Internal)?;
        Ok(Self { key })
    }

    /// A key from exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(invalid_key("sealing key must be 32 bytes"));
        }
        key.copy_from_slice(bytes);
        Ok(Self { key })
    }

    /// The raw key bytes.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.to_vec())
    }

    /// Seals `plaintext`, binding it to `aad` (which is not stored).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; GCM_IV_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Internal)?;
        let (ciphertext, tag) = gcm_seal(self.key.as_ref(), &nonce, aad, plaintext)?;
        let mut out = Vec::with_capacity(1 + GCM_IV_LEN + ciphertext.len() + GCM_TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens what [`SealingKey::seal`] produced with the same `aad`.
    ///
    /// `InvalidInput` for input too short or of an unknown version;
    /// `DecryptionFailed` for any tampering, a wrong `aad` or a wrong key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < 1 + GCM_IV_LEN + GCM_TAG_LEN {
            return Err(invalid_input("sealed record too short"));
        }
        if sealed[0] != VERSION {
            return Err(invalid_input("unknown sealed record version"));
        }
        let nonce = &sealed[1..1 + GCM_IV_LEN];
        let (ciphertext, tag) =
            sealed[1 + GCM_IV_LEN..].split_at(sealed.len() - 1 - GCM_IV_LEN - GCM_TAG_LEN);
        gcm_open(self.key.as_ref(), nonce, aad, ciphertext, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let key = SealingKey::generate().unwrap();
        let sealed = key.seal(b"vault/key/1", b"secret material").unwrap();
        assert_eq!(sealed[0], VERSION);
        assert_eq!(sealed.len(), 1 + 12 + 15 + 16);
        let opened = key.open(b"vault/key/1", &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"secret material");
        // Fresh nonce each time.
        assert_ne!(
            sealed,
            key.seal(b"vault/key/1", b"secret material").unwrap()
        );
        // Empty plaintext and empty aad work.
        let empty = key.seal(b"", b"").unwrap();
        assert!(key.open(b"", &empty).unwrap().is_empty());
    }

    #[test]
    fn key_bytes_round_trip() {
        let key = SealingKey::generate().unwrap();
        let again = SealingKey::from_bytes(&key.to_bytes()).unwrap();
        let sealed = key.seal(b"a", b"b").unwrap();
        assert_eq!(again.open(b"a", &sealed).unwrap().as_slice(), b"b");
        assert!(matches!(
            SealingKey::from_bytes(&[0u8; 31]),
            Err(CryptoError::InvalidKey(_))
        ));
        assert!(matches!(
            SealingKey::from_bytes(&[0u8; 33]),
            Err(CryptoError::InvalidKey(_))
        ));
    }

    #[test]
    fn tamper_wrong_aad_wrong_key() {
        let key = SealingKey::generate().unwrap();
        let sealed = key.seal(b"aad", b"payload").unwrap();
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                key.open(b"aad", &bad),
                Err(CryptoError::DecryptionFailed),
                "byte {i}"
            );
        }
        assert_eq!(
            key.open(b"other", &sealed),
            Err(CryptoError::DecryptionFailed)
        );
        let other = SealingKey::generate().unwrap();
        assert_eq!(
            other.open(b"aad", &sealed),
            Err(CryptoError::DecryptionFailed)
        );
        // Truncation: too short is InvalidInput, shorter-but-long-enough fails the tag.
        assert!(matches!(
            key.open(b"aad", &sealed[..28]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            key.open(b"aad", &[]),
            Err(CryptoError::InvalidInput(_))
        ));
        assert_eq!(
            key.open(b"aad", &sealed[..sealed.len() - 1]),
            Err(CryptoError::DecryptionFailed)
        );
        let mut unknown = sealed.clone();
        unknown[0] = 0x02;
        assert!(matches!(
            key.open(b"aad", &unknown),
            Err(CryptoError::InvalidInput(_))
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let key = SealingKey::from_bytes(&[0xAB; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
    }
}
