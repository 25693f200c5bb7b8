//! The checks a backend makes before it asks its token: the algorithm against the
//! key, and the optional parameters against the algorithm, with the rules and the
//! errors of [`crate::KeyMaterial`], so that `-HSM` keys refuse what software keys
//! refuse, in the same words.

use crate::algorithm::{AesMode, EncryptionAlgorithm, KeyFamily, SignatureAlgorithm};
use crate::error::{invalid_input, mismatch, Result};
use crate::hsm::HsmKey;
use crate::key::{given, not_used};

impl HsmKey {
    /// Checks `alg` and `digest` against this key the way [`crate::KeyMaterial::sign`]
    /// does, before any token is asked.
    pub(crate) fn check_signature(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<()> {
        match (self.family(), alg.family()) {
            (KeyFamily::Oct, _) => {
                return Err(mismatch(format!("{} does not fit an oct key", alg.name())))
            }
            (KeyFamily::Rsa, KeyFamily::Ec) => {
                return Err(mismatch(format!("{} needs an EC key", alg.name())))
            }
            (KeyFamily::Ec, KeyFamily::Rsa) => {
                return Err(mismatch(format!("{} needs an RSA key", alg.name())))
            }
            (KeyFamily::Ec, _) => {
                if let Some(curve) = self.curve().filter(|c| alg.curve() != Some(*c)) {
                    return Err(mismatch(format!(
                        "{} does not fit a {} key",
                        alg.name(),
                        curve.jwk_name()
                    )));
                }
            }
            _ => {}
        }
        if digest.len() != alg.digest_len() {
            return Err(invalid_input(format!(
                "{} signs a {}-byte digest, got {} bytes",
                alg.name(),
                alg.digest_len(),
                digest.len()
            )));
        }
        Ok(())
    }

    /// Checks that `alg` fits this key as [`crate::KeyMaterial::encrypt`] does:
    /// `None` for an RSA algorithm on an RSA key, the AES mode for an AES
    /// algorithm on an oct key of the size it needs.
    pub(crate) fn check_encryption(&self, alg: EncryptionAlgorithm) -> Result<Option<AesMode>> {
        match (self.family(), alg.aes_mode()) {
            (KeyFamily::Rsa, None) => Ok(None),
            (KeyFamily::Rsa | KeyFamily::Ec, Some(_)) => {
                Err(mismatch(format!("{} needs an oct key", alg.name())))
            }
            (KeyFamily::Ec, None) => {
                Err(mismatch(format!("{} does not fit an EC key", alg.name())))
            }
            (KeyFamily::Oct, None) => Err(mismatch(format!("{} needs an RSA key", alg.name()))),
            (KeyFamily::Oct, Some(mode)) => {
                let bits = self.size_bits();
                match alg.aes_key_len() {
                    Some(len) if len * 8 != bits as usize => Err(mismatch(format!(
                        "{} needs a {}-bit key, this key has {bits} bits",
                        alg.name(),
                        len * 8
                    ))),
                    _ => Ok(Some(mode)),
                }
            }
        }
    }
}

/// The checked parameters of an encryption or decryption, whatever the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CipherParams<'a> {
    /// RSA: no IV, AAD or tag.
    Rsa,
    /// AES-GCM: the 12-byte IV (absent when encrypting without one: the backend
    /// makes it), the AAD (maybe empty), and when decrypting the 16-byte tag.
    Gcm {
        iv: Option<&'a [u8]>,
        aad: &'a [u8],
        tag: Option<&'a [u8]>,
    },
    /// AES-CBC with or without PKCS#7 padding, and its 16-byte IV.
    Cbc { iv: &'a [u8], pad: bool },
    /// AES key wrap, RFC 3394 (`pad` false) or RFC 5649.
    KeyWrap { pad: bool },
}

/// Length of an AES-GCM IV and tag, and of an AES-CBC IV.
const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const CBC_IV_LEN: usize = 16;

/// Checks the optional parameters of an encryption (`tag` is `None`) or
/// decryption against `alg` and `key`, with the rules of [`crate::KeyMaterial`].
pub(crate) fn cipher_params<'a>(
    key: &HsmKey,
    alg: EncryptionAlgorithm,
    decrypting: bool,
    iv: Option<&'a [u8]>,
    aad: Option<&'a [u8]>,
    tag: Option<&'a [u8]>,
) -> Result<CipherParams<'a>> {
    let mode = key.check_encryption(alg)?;
    let no_tag = |tag| {
        if decrypting {
            not_used(alg, "tag", tag)
        } else {
            Ok(())
        }
    };
    match mode {
        None => {
            not_used(alg, "iv", iv)?;
            not_used(alg, "aad", aad)?;
            no_tag(tag)?;
            Ok(CipherParams::Rsa)
        }
        Some(AesMode::Gcm) => {
            let iv = given(iv);
            if let Some(iv) = iv.filter(|iv| iv.len() != GCM_IV_LEN) {
                return Err(invalid_input(format!(
                    "AES-GCM iv must be 12 bytes, got {}",
                    iv.len()
                )));
            }
            let tag = if decrypting {
                if iv.is_none() {
                    return Err(invalid_input("AES-GCM needs a 12-byte iv"));
                }
                match given(tag) {
                    Some(tag) if tag.len() == GCM_TAG_LEN => Some(tag),
                    Some(_) => return Err(invalid_input("AES-GCM tag must be 16 bytes")),
                    None => return Err(invalid_input("AES-GCM needs a 16-byte tag")),
                }
            } else {
                None
            };
            Ok(CipherParams::Gcm {
                iv,
                aad: given(aad).unwrap_or_default(),
                tag,
            })
        }
        Some(mode @ (AesMode::Cbc | AesMode::CbcPad)) => {
            not_used(alg, "aad", aad)?;
            no_tag(tag)?;
            let iv = given(iv)
                .ok_or_else(|| invalid_input(format!("{} needs a 16-byte iv", alg.name())))?;
            if iv.len() != CBC_IV_LEN {
                return Err(invalid_input("AES-CBC iv must be 16 bytes"));
            }
            Ok(CipherParams::Cbc {
                iv,
                pad: mode == AesMode::CbcPad,
            })
        }
        Some(mode @ (AesMode::Kw | AesMode::KwPad)) => {
            not_used(alg, "iv", iv)?;
            not_used(alg, "aad", aad)?;
            no_tag(tag)?;
            Ok(CipherParams::KeyWrap {
                pad: mode == AesMode::KwPad,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::HsmKeyRef;
    use crate::{CryptoError, Curve, KeyMaterial, PublicKey};

    fn oct(bits: u32) -> HsmKey {
        HsmKey {
            reference: HsmKeyRef::from_bytes(&[1; 16]).unwrap(),
            label: "k".into(),
            public: PublicKey::Oct { bits },
        }
    }

    fn from(material: &KeyMaterial) -> HsmKey {
        HsmKey {
            reference: HsmKeyRef::from_bytes(&[2; 16]).unwrap(),
            label: "k".into(),
            public: material.public_key(),
        }
    }

    #[test]
    fn checks_agree_with_key_material() {
        let soft = [
            KeyMaterial::generate_rsa(2048).unwrap(),
            KeyMaterial::generate_ec(Curve::P256).unwrap(),
            KeyMaterial::generate_oct(128).unwrap(),
            KeyMaterial::generate_oct(256).unwrap(),
        ];
        for material in &soft {
            let key = from(material);
            assert_eq!(key.size_bits(), material.size_bits());
            for alg in SignatureAlgorithm::ALL {
                let digest = vec![7u8; alg.digest_len()];
                let ours = key.check_signature(alg, &digest).err();
                let theirs = material.sign(alg, &digest).err();
                assert_eq!(ours, theirs, "{:?} {}", material, alg.name());
            }
            for alg in EncryptionAlgorithm::ALL {
                let ours = key.check_encryption(alg).err();
                let theirs = match material.encrypt(alg, &[1; 16], Some(&[0; 16]), None) {
                    Err(e @ CryptoError::AlgorithmMismatch(_)) => Some(e),
                    _ => None,
                };
                assert_eq!(ours, theirs, "{:?} {}", material, alg.name());
            }
        }
    }

    #[test]
    fn cipher_parameters_are_checked_like_key_material() {
        let key = oct(256);
        let gcm = EncryptionAlgorithm::A256Gcm;
        assert!(matches!(
            cipher_params(&key, gcm, false, None, None, None),
            Ok(CipherParams::Gcm {
                iv: None,
                aad: b"",
                tag: None
            })
        ));
        assert!(cipher_params(&key, gcm, false, Some(&[0; 16]), None, None).is_err());
        assert!(cipher_params(&key, gcm, true, Some(&[0; 12]), None, None).is_err());
        assert!(cipher_params(&key, gcm, true, None, None, Some(&[0; 16])).is_err());
        assert!(cipher_params(&key, gcm, true, Some(&[0; 12]), None, Some(&[0; 16])).is_ok());
        let cbc = EncryptionAlgorithm::A256CbcPad;
        assert!(cipher_params(&key, cbc, false, None, None, None).is_err());
        assert!(cipher_params(&key, cbc, false, Some(&[0; 16]), Some(b"a"), None).is_err());
        assert!(cipher_params(&key, cbc, true, Some(&[0; 16]), None, Some(b"t")).is_err());
        let kw = EncryptionAlgorithm::A256Kw;
        assert!(cipher_params(&key, kw, false, Some(&[0; 16]), None, None).is_err());
        assert_eq!(
            cipher_params(&key, kw, true, Some(&[]), Some(&[]), Some(&[])),
            Ok(CipherParams::KeyWrap { pad: false })
        );
        let key = oct(128);
        assert!(matches!(
            cipher_params(&key, kw, false, None, None, None),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
    }
}
