//! A key version's private material and the JWA operations on it.

use std::fmt;

use zeroize::Zeroizing;

use crate::aes;
use crate::algorithm::{AesMode, Curve, EncryptionAlgorithm, KeyFamily, SignatureAlgorithm};
use crate::error::{invalid_input, invalid_key, mismatch, CryptoError, Result};
use crate::jwk::{JwkParts, PublicKey};
use crate::random_bytes;
use crate::signature::verify_with_public;

mod ec;
pub(crate) mod rsa;

use ec::EcKey;
use rsa::RsaKey;

/// Tag bytes of [`KeyMaterial::to_bytes`].
const TAG_RSA: u8 = 0x01;
const TAG_EC: u8 = 0x02;
const TAG_OCT: u8 = 0x03;

/// The result of [`KeyMaterial::encrypt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptOutput {
    /// The ciphertext (for key-wrap algorithms, the wrapped key).
    pub ciphertext: Vec<u8>,
    /// The IV: generated for AES-GCM when the caller gave none, echoed for
    /// AES-GCM and AES-CBC otherwise; `None` for RSA and key wrap.
    pub iv: Option<Vec<u8>>,
    /// The 16-byte AES-GCM authentication tag; `None` otherwise.
    pub tag: Option<Vec<u8>>,
}

enum Inner {
    Rsa(RsaKey),
    Ec(EcKey),
    Oct(Zeroizing<Vec<u8>>),
}

/// A key version's private material in memory.
///
/// Every secret byte lives in a zeroizing buffer or inside aws-lc (which clears
/// key memory when it frees it). `Debug` shows only the family and size.
pub struct KeyMaterial {
    inner: Inner,
    /// The [`KeyMaterial::to_bytes`] form, computed once so that serializing can
    /// not fail later.
    serialized: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("family", &self.family())
            .field("size_bits", &self.size_bits())
            .field("curve", &self.curve())
            .finish_non_exhaustive()
    }
}

/// Treats an empty optional parameter like an absent one.
pub(crate) fn given(value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|v| !v.is_empty())
}

pub(crate) fn not_used(alg: EncryptionAlgorithm, what: &str, value: Option<&[u8]>) -> Result<()> {
    match given(value) {
        None => Ok(()),
        Some(_) => Err(invalid_input(format!("{} takes no {what}", alg.name()))),
    }
}

fn tagged(tag: u8, body: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(1 + body.len()));
    out.push(tag);
    out.extend_from_slice(body);
    out
}

fn oct_key(bytes: &[u8]) -> Result<Inner> {
    match bytes.len() {
        16 | 24 | 32 => Ok(Inner::Oct(Zeroizing::new(bytes.to_vec()))),
        _ => Err(invalid_key("oct key must be 128, 192 or 256 bits")),
    }
}

impl KeyMaterial {
    fn rsa(key: RsaKey, pkcs8: &[u8]) -> Self {
        Self {
            inner: Inner::Rsa(key),
            serialized: tagged(TAG_RSA, pkcs8),
        }
    }

    fn ec(key: EcKey, pkcs8: &[u8]) -> Self {
        Self {
            inner: Inner::Ec(key),
            serialized: tagged(TAG_EC, pkcs8),
        }
    }

    fn oct(key: &[u8]) -> Result<Self> {
        Ok(Self {
            inner: oct_key(key)?,
            serialized: tagged(TAG_OCT, key),
        })
    }

    /// Generates an RSA key of 2048, 3072 or 4096 bits with exponent 65537.
    pub fn generate_rsa(bits: u32) -> Result<Self> {
        let (key, pkcs8) = RsaKey::generate(bits)?;
        Ok(Self::rsa(key, &pkcs8))
    }

    /// Generates an EC key on `curve`.
    pub fn generate_ec(curve: Curve) -> Result<Self> {
        let (key, pkcs8) = EcKey::generate(curve)?;
        Ok(Self::ec(key, &pkcs8))
    }

    /// Generates an AES key of 128, 192 or 256 bits.
    pub fn generate_oct(bits: u32) -> Result<Self> {
        if !matches!(bits, 128 | 192 | 256) {
            return Err(invalid_input("oct key size must be 128, 192 or 256"));
        }
        let key = Zeroizing::new(random_bytes(bits as usize / 8)?);
        Self::oct(&key)
    }

    /// Imports private key members.
    ///
    /// RSA needs `n, e, d, p, q, dp, dq, qi` (a modulus of 2048 to 4096 bits);
    /// the members must form one consistent key. EC needs `crv, d, x, y`, and `d`
    /// must be the private key of the point `(x, y)`. oct needs `k` of 16, 24 or
    /// 32 bytes.
    pub fn from_jwk(parts: &JwkParts) -> Result<Self> {
        match parts.family {
            Some(KeyFamily::Rsa) => {
                let (key, pkcs8) = RsaKey::from_jwk(parts)?;
                Ok(Self::rsa(key, &pkcs8))
            }
            Some(KeyFamily::Ec) => {
                let (key, pkcs8) = EcKey::from_jwk(parts)?;
                Ok(Self::ec(key, &pkcs8))
            }
            Some(KeyFamily::Oct) => match parts.k.as_deref() {
                Some(k) => Self::oct(k),
                None => Err(invalid_key("oct JWK needs k")),
            },
            None => Err(invalid_key("JWK has no key type")),
        }
    }

    /// Builds RSA or EC material from an unencrypted PKCS#8 private key (BYOK
    /// transfer blobs carry this form; tests use it for published vectors).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        if let Ok(key) = RsaKey::from_pkcs8(der) {
            return Ok(Self::rsa(key, der));
        }
        let key = EcKey::from_pkcs8(der)
            .map_err(|_| invalid_key("not an RSA or EC PKCS#8 private key"))?;
        Ok(Self::ec(key, der))
    }

    /// Serializes for sealing: one tag byte, then PKCS#8 DER (RSA, EC) or the raw
    /// key (oct). [`KeyMaterial::from_bytes`] reads it back.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.serialized.clone()
    }

    /// Reads the form written by [`KeyMaterial::to_bytes`]. Treats its input as
    /// untrusted: anything malformed is `InvalidKey`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let Some((&tag, body)) = bytes.split_first() else {
            return Err(invalid_key("empty key material"));
        };
        match tag {
            TAG_RSA => Ok(Self::rsa(RsaKey::from_pkcs8(body)?, body)),
            TAG_EC => Ok(Self::ec(EcKey::from_pkcs8(body)?, body)),
            TAG_OCT => Self::oct(body),
            _ => Err(invalid_key("unknown key material tag")),
        }
    }

    /// The key family.
    pub fn family(&self) -> KeyFamily {
        match &self.inner {
            Inner::Rsa(_) => KeyFamily::Rsa,
            Inner::Ec(_) => KeyFamily::Ec,
            Inner::Oct(_) => KeyFamily::Oct,
        }
    }

    /// RSA modulus bits, EC field bits (256, 384, 521, 256) or AES key bits.
    pub fn size_bits(&self) -> u32 {
        match &self.inner {
            Inner::Rsa(key) => key.bits(),
            Inner::Ec(key) => key.curve().field_bits(),
            Inner::Oct(key) => (key.len() * 8) as u32,
        }
    }

    /// The curve of an EC key.
    pub fn curve(&self) -> Option<Curve> {
        match &self.inner {
            Inner::Ec(key) => Some(key.curve()),
            _ => None,
        }
    }

    /// The public parts to show on the wire.
    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            Inner::Rsa(key) => {
                let (n, e) = key.public();
                PublicKey::Rsa { n, e }
            }
            Inner::Ec(key) => {
                let (x, y) = key.public_xy();
                PublicKey::Ec {
                    crv: key.curve(),
                    x,
                    y,
                }
            }
            Inner::Oct(key) => PublicKey::Oct {
                bits: (key.len() * 8) as u32,
            },
        }
    }

    /// The AES key, checked against the size `alg` requires.
    fn aes_key(&self, alg: EncryptionAlgorithm) -> Result<(&[u8], AesMode)> {
        let Some(mode) = alg.aes_mode() else {
            return Err(mismatch(format!("{} needs an RSA key", alg.name())));
        };
        let Inner::Oct(key) = &self.inner else {
            return Err(mismatch(format!("{} needs an oct key", alg.name())));
        };
        if let Some(len) = alg.aes_key_len() {
            if key.len() != len {
                return Err(mismatch(format!(
                    "{} needs a {}-bit key, this key has {} bits",
                    alg.name(),
                    len * 8,
                    key.len() * 8
                )));
            }
        }
        Ok((key.as_slice(), mode))
    }

    pub(crate) fn rsa_private(&self) -> Result<&RsaKey> {
        match &self.inner {
            Inner::Rsa(key) => Ok(key),
            _ => Err(mismatch("RSA-OAEP needs an RSA key")),
        }
    }

    fn rsa_key(&self, alg: EncryptionAlgorithm) -> Result<&RsaKey> {
        match &self.inner {
            Inner::Rsa(key) if alg.is_rsa() => Ok(key),
            Inner::Rsa(_) => Err(mismatch(format!("{} needs an oct key", alg.name()))),
            Inner::Ec(_) => Err(mismatch(format!("{} does not fit an EC key", alg.name()))),
            Inner::Oct(_) => Err(mismatch(format!("{} needs an RSA key", alg.name()))),
        }
    }

    /// Encrypts `plaintext`.
    ///
    /// RSA keys take `RSA-OAEP`, `RSA-OAEP-256` and `RSA1_5`. oct keys take
    /// AES-GCM (a 12-byte `iv` may be given, otherwise one is generated; `aad`
    /// optional; the tag is returned separately), AES-CBC and AES-CBC-PAD (a
    /// 16-byte `iv` is required) and the key-wrap algorithms (encrypting is
    /// wrapping). `A128*` needs a 128-bit key and so on; `CKM_*` take any AES
    /// size. An empty `iv` or `aad` counts as absent; giving one to an algorithm
    /// that takes none is `InvalidInput`.
    pub fn encrypt(
        &self,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
    ) -> Result<EncryptOutput> {
        if alg.is_rsa() {
            let key = self.rsa_key(alg)?;
            not_used(alg, "iv", iv)?;
            not_used(alg, "aad", aad)?;
            return Ok(EncryptOutput {
                ciphertext: key.encrypt(alg, plaintext)?,
                iv: None,
                tag: None,
            });
        }
        let (key, mode) = self.aes_key(alg)?;
        match mode {
            AesMode::Gcm => {
                let nonce: [u8; aes::GCM_IV_LEN] = match given(iv) {
                    Some(iv) => iv
                        .try_into()
                        .map_err(|_| invalid_input("AES-GCM iv must be 12 bytes"))?,
                    None => {
                        let mut nonce = [0u8; aes::GCM_IV_LEN];
                        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Internal)?;
                        nonce
                    }
                };
                let (ciphertext, tag) =
                    aes::gcm_seal(key, &nonce, given(aad).unwrap_or_default(), plaintext)?;
                Ok(EncryptOutput {
                    ciphertext,
                    iv: Some(nonce.to_vec()),
                    tag: Some(tag),
                })
            }
            AesMode::Cbc | AesMode::CbcPad => {
                not_used(alg, "aad", aad)?;
                let iv = given(iv)
                    .ok_or_else(|| invalid_input(format!("{} needs a 16-byte iv", alg.name())))?;
                let ciphertext = aes::cbc_encrypt(key, iv, plaintext, mode == AesMode::CbcPad)?;
                Ok(EncryptOutput {
                    ciphertext,
                    iv: Some(iv.to_vec()),
                    tag: None,
                })
            }
            AesMode::Kw | AesMode::KwPad => {
                not_used(alg, "iv", iv)?;
                not_used(alg, "aad", aad)?;
                Ok(EncryptOutput {
                    ciphertext: self.wrap_key(alg, plaintext)?,
                    iv: None,
                    tag: None,
                })
            }
        }
    }

    /// Decrypts `ciphertext`; the counterpart of [`KeyMaterial::encrypt`].
    ///
    /// AES-GCM needs the 12-byte `iv` and the 16-byte `tag`; AES-CBC needs the
    /// 16-byte `iv`. A wrong tag, bad padding or failed unwrap integrity check is
    /// `DecryptionFailed`, without detail.
    pub fn decrypt(
        &self,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if alg.is_rsa() {
            let key = self.rsa_key(alg)?;
            not_used(alg, "iv", iv)?;
            not_used(alg, "aad", aad)?;
            not_used(alg, "tag", tag)?;
            return key.decrypt(alg, ciphertext);
        }
        let (key, mode) = self.aes_key(alg)?;
        match mode {
            AesMode::Gcm => {
                let iv = given(iv).ok_or_else(|| invalid_input("AES-GCM needs a 12-byte iv"))?;
                let tag = given(tag).ok_or_else(|| invalid_input("AES-GCM needs a 16-byte tag"))?;
                aes::gcm_open(key, iv, given(aad).unwrap_or_default(), ciphertext, tag)
            }
            AesMode::Cbc | AesMode::CbcPad => {
                not_used(alg, "aad", aad)?;
                not_used(alg, "tag", tag)?;
                let iv = given(iv)
                    .ok_or_else(|| invalid_input(format!("{} needs a 16-byte iv", alg.name())))?;
                aes::cbc_decrypt(key, iv, ciphertext, mode == AesMode::CbcPad)
            }
            AesMode::Kw | AesMode::KwPad => {
                not_used(alg, "iv", iv)?;
                not_used(alg, "aad", aad)?;
                not_used(alg, "tag", tag)?;
                self.unwrap_key(alg, ciphertext)
            }
        }
    }

    /// Wraps `key`: RSA algorithms encrypt it, AES key-wrap algorithms run
    /// RFC 3394 (KW, at least 16 bytes, a multiple of 8) or RFC 5649 (KWPAD).
    pub fn wrap_key(&self, alg: EncryptionAlgorithm, key: &[u8]) -> Result<Vec<u8>> {
        if alg.is_rsa() {
            return self.rsa_key(alg)?.encrypt(alg, key);
        }
        let (kek, mode) = self.aes_key(alg)?;
        match mode {
            AesMode::Kw => aes::kw_wrap(kek, key),
            AesMode::KwPad => aes::kwp_wrap(kek, key),
            _ => Err(mismatch(format!(
                "{} is not a key wrap algorithm",
                alg.name()
            ))),
        }
    }

    /// Unwraps a key wrapped by [`KeyMaterial::wrap_key`].
    pub fn unwrap_key(
        &self,
        alg: EncryptionAlgorithm,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if alg.is_rsa() {
            return self.rsa_key(alg)?.decrypt(alg, wrapped);
        }
        let (kek, mode) = self.aes_key(alg)?;
        match mode {
            AesMode::Kw => aes::kw_unwrap(kek, wrapped),
            AesMode::KwPad => aes::kwp_unwrap(kek, wrapped),
            _ => Err(mismatch(format!(
                "{} is not a key wrap algorithm",
                alg.name()
            ))),
        }
    }

    /// Signs `digest`, which is the hash value itself (it is not hashed again)
    /// and must be `alg.digest_len()` bytes. RSA: PKCS#1 v1.5 or PSS (salt as
    /// long as the digest, MGF1 with the same hash). ECDSA: raw `r || s`, each
    /// half as long as a coordinate; `ES256` only on P-256, `ES384` on P-384,
    /// `ES512` on P-521, `ES256K` on secp256k1.
    pub fn sign(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Rsa(key) => key.sign(alg, digest),
            Inner::Ec(key) => key.sign(alg, digest),
            Inner::Oct(_) => Err(mismatch(format!("{} does not fit an oct key", alg.name()))),
        }
    }

    /// Verifies a signature made by [`KeyMaterial::sign`]: `Ok(false)` when it
    /// does not verify, `Err` only for misuse (wrong digest length, algorithm
    /// that does not fit the key).
    pub fn verify(&self, alg: SignatureAlgorithm, digest: &[u8], signature: &[u8]) -> Result<bool> {
        verify_with_public(&self.public_key(), alg, digest, signature)
    }
}

#[cfg(test)]
mod tests;
