//! Keys held outside this process, in an HSM, used by reference.
//!
//! [`HsmBackend`] is the seam between the vault and a hardware token: it makes a
//! key inside the token and hands back an [`HsmKey`] — a reference to the token
//! object, the public part and the size — which is all a store keeps. Every
//! operation with the private or secret part happens in the token; this
//! process never holds it. [`crate::pkcs11::Pkcs11Backend`] (cargo feature
//! `pkcs11`) implements it over PKCS#11.
//!
//! Calls block on the token (a PKCS#11 call may wait for the device or for a
//! free session): async callers run them on a blocking thread
//! (`tokio::task::spawn_blocking`), never on an executor thread.

use std::fmt;

use zeroize::Zeroizing;

use crate::algorithm::{Curve, EncryptionAlgorithm, KeyFamily, SignatureAlgorithm};
use crate::error::{invalid_input, invalid_key, Result};
use crate::jwk::PublicKey;
use crate::key::{EncryptOutput, KeyMaterial};
use crate::signature::verify_with_public;

// The checks every backend makes before it asks its token.
#[cfg(any(feature = "pkcs11", test))]
pub(crate) mod checks;

/// The token's name for a key: the bytes of its PKCS#11 `CKA_ID`, random and
/// unique per key. Stable across sessions and processes, unlike an object
/// handle. Shown and parsed as lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HsmKeyRef(Vec<u8>);

impl HsmKeyRef {
    /// Longest reference accepted from a store (the backend makes 16 bytes).
    pub const MAX_LEN: usize = 64;

    /// A reference from its stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(invalid_key(format!(
                "an HSM key reference is 1 to {} bytes",
                Self::MAX_LEN
            )));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// A reference from its hex form (as [`fmt::Display`] writes it).
    pub fn from_hex(text: &str) -> Result<Self> {
        let bad = || invalid_key("an HSM key reference is an even number of hex digits");
        if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>>>()?;
        Self::from_bytes(&bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for HsmKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for HsmKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HsmKeyRef({self})")
    }
}

/// What kind of key to make in the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HsmKeySpec {
    /// `RSA-HSM`: 2048, 3072 or 4096 bits, public exponent 65537.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
    /// `EC-HSM` on a curve.
    Ec {
        /// The curve.
        curve: Curve,
    },
    /// `oct-HSM`: an AES key of 128, 192 or 256 bits.
    Oct {
        /// Key size in bits.
        bits: u32,
    },
}

impl HsmKeySpec {
    /// The key family.
    pub fn family(&self) -> KeyFamily {
        match self {
            HsmKeySpec::Rsa { .. } => KeyFamily::Rsa,
            HsmKeySpec::Ec { .. } => KeyFamily::Ec,
            HsmKeySpec::Oct { .. } => KeyFamily::Oct,
        }
    }

    /// Refuses the sizes the vault does not offer.
    pub fn check(&self) -> Result<()> {
        match self {
            HsmKeySpec::Rsa {
                bits: 2048 | 3072 | 4096,
            }
            | HsmKeySpec::Ec { .. }
            | HsmKeySpec::Oct {
                bits: 128 | 192 | 256,
            } => Ok(()),
            HsmKeySpec::Rsa { .. } => Err(invalid_input("RSA key size must be 2048, 3072 or 4096")),
            HsmKeySpec::Oct { .. } => Err(invalid_input("oct key size must be 128, 192 or 256")),
        }
    }
}

/// A key in an HSM as a store keeps it: the reference, the token's label for
/// it, and the public part (for oct keys only the size, in [`PublicKey::Oct`]).
/// No private or secret byte is in here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmKey {
    /// Which token object it is.
    pub reference: HsmKeyRef,
    /// The token object's `CKA_LABEL`, for people looking at the token.
    pub label: String,
    /// The public part, as read from the token when the key was made or opened.
    pub public: PublicKey,
}

impl HsmKey {
    /// The key family.
    pub fn family(&self) -> KeyFamily {
        self.public.family()
    }

    /// RSA modulus bits, EC field bits or AES key bits.
    pub fn size_bits(&self) -> u32 {
        match &self.public {
            PublicKey::Rsa { n, .. } => crate::key::rsa::bit_length(n) as u32,
            PublicKey::Ec { crv, .. } => crv.field_bits(),
            PublicKey::Oct { bits } => *bits,
        }
    }

    /// The curve of an EC key.
    pub fn curve(&self) -> Option<Curve> {
        match &self.public {
            PublicKey::Ec { crv, .. } => Some(*crv),
            _ => None,
        }
    }
}

/// Keys held outside this process — in an HSM token — generated there and used
/// there by reference.
///
/// The private or secret part never leaves the token: what comes back from
/// [`HsmBackend::generate`] and [`HsmBackend::open`] is an [`HsmKey`] holding a
/// reference and the public part, which is all a store keeps. Algorithms and
/// their parameters follow [`crate::KeyMaterial`] exactly (same names, same
/// checks, same errors), so a vault can treat `-HSM` keys like software ones.
///
/// Every method blocks on the token; run them on a blocking thread. Errors a
/// token adds: [`crate::CryptoError::Unsupported`] when it cannot do an
/// algorithm (named, nothing is done in software instead),
/// [`crate::CryptoError::KeyNotFound`] for a reference it does not hold, and
/// [`crate::CryptoError::Backend`] when it fails or refuses.
pub trait HsmBackend: Send + Sync + fmt::Debug {
    /// Makes a key in the token, with `label` as the token object's label, and
    /// returns its reference and public part.
    fn generate(&self, spec: HsmKeySpec, label: &str) -> Result<HsmKey> {
        self.generate_with(spec, label, false)
    }

    /// Makes a key in the token, as [`HsmBackend::generate`]; `exportable` keys
    /// may leave the token wrapped ([`HsmBackend::wrap_for_transfer`]), never in
    /// the clear.
    fn generate_with(&self, spec: HsmKeySpec, label: &str, exportable: bool) -> Result<HsmKey>;

    /// Puts an existing key into the token (an import, or a BYOK transfer
    /// opened by the vault), with the same attributes as a generated one. The
    /// material passes through this process on its way in: an import is only as
    /// protected as the path that brought it here.
    fn import(&self, material: &KeyMaterial, label: &str, exportable: bool) -> Result<HsmKey>;

    /// Wraps an exportable key for the holder of `kek` (an RSA public key) with
    /// `CKM_RSA_AES_KEY_WRAP` semantics, inside the token: secure key release.
    /// Tokens that cannot do it answer [`crate::CryptoError::Unsupported`].
    fn wrap_for_transfer(
        &self,
        key: &HsmKey,
        kek: &PublicKey,
        wrap: crate::transfer::TransferWrap,
    ) -> Result<Vec<u8>>;

    /// Finds the key a stored reference names and reads its public part again.
    fn open(&self, reference: &HsmKeyRef) -> Result<HsmKey>;

    /// Signs `digest` (the hash value itself, `alg.digest_len()` bytes) in the
    /// token: PKCS#1 v1.5 or PSS for RSA, raw `r || s` ECDSA for EC.
    fn sign(&self, key: &HsmKey, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>>;

    /// Verifies a signature. Done here in software with the public part the key
    /// carries ([`crate::verify_with_public`]): it needs no secret, gives the
    /// same answer, and spares the token a round trip.
    fn verify(
        &self,
        key: &HsmKey,
        alg: SignatureAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        verify_with_public(&key.public, alg, digest, signature)
    }

    /// Encrypts in the token; parameters as [`crate::KeyMaterial::encrypt`].
    fn encrypt(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
    ) -> Result<EncryptOutput>;

    /// Decrypts in the token; parameters as [`crate::KeyMaterial::decrypt`].
    fn decrypt(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>>;

    /// Wraps the caller's `key_bytes` with the token key (RSA or AES key wrap),
    /// as [`crate::KeyMaterial::wrap_key`].
    fn wrap_key(&self, key: &HsmKey, alg: EncryptionAlgorithm, key_bytes: &[u8])
        -> Result<Vec<u8>>;

    /// Unwraps `wrapped` with the token key and returns the key bytes to the
    /// caller, as [`crate::KeyMaterial::unwrap_key`].
    fn unwrap_key(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>>;

    /// Destroys every token object of the key (purge). A reference the token
    /// does not hold is [`crate::CryptoError::KeyNotFound`].
    fn destroy(&self, reference: &HsmKeyRef) -> Result<()>;

    /// What the token says of the key's private or secret object, for key attestation.
    fn facts(&self, key: &HsmKey) -> Result<HsmKeyFacts>;
}

/// The protection attributes a token reports for a key's private or secret object
/// (`CKA_LOCAL`, `CKA_SENSITIVE`, `CKA_ALWAYS_SENSITIVE`, `CKA_EXTRACTABLE`,
/// `CKA_NEVER_EXTRACTABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsmKeyFacts {
    /// Generated in the token (not imported).
    pub local: bool,
    /// Its value cannot be read.
    pub sensitive: bool,
    /// It has always been sensitive.
    pub always_sensitive: bool,
    /// It can leave the token wrapped.
    pub extractable: bool,
    /// It has never been extractable.
    pub never_extractable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_through_hex_and_refuse_junk() {
        let r = HsmKeyRef::from_bytes(&[0x00, 0xab, 0x10]).unwrap();
        assert_eq!(r.to_string(), "00ab10");
        assert_eq!(HsmKeyRef::from_hex("00AB10").unwrap(), r);
        for bad in ["", "0", "zz", "0g"] {
            assert!(HsmKeyRef::from_hex(bad).is_err(), "{bad:?}");
        }
        assert!(HsmKeyRef::from_bytes(&[0; 65]).is_err());
    }

    #[test]
    fn specs_refuse_sizes_the_vault_does_not_offer() {
        assert!(HsmKeySpec::Rsa { bits: 3072 }.check().is_ok());
        assert!(HsmKeySpec::Rsa { bits: 1024 }.check().is_err());
        assert!(HsmKeySpec::Oct { bits: 192 }.check().is_ok());
        assert!(HsmKeySpec::Oct { bits: 512 }.check().is_err());
    }
}
