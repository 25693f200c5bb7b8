//! Key transfer: the PKCS#11 `CKM_RSA_AES_KEY_WRAP` composition Azure uses to move private key
//! material between HSMs, in both directions of Keyshift (BYOK import and secure key release).
//!
//! `blob = RSA-OAEP(public key, H)(ephemeral AES key) || AES-KWP(ephemeral key, key material)`,
//! with H = SHA-1 (`CKM_RSA_AES_KEY_WRAP`), SHA-256 (`RSA_AES_KEY_WRAP_256`) or SHA-384
//! (`RSA_AES_KEY_WRAP_384`), MGF1 with the same hash, no label. The key material is PKCS#8 DER for
//! RSA and EC keys and the raw key for AES keys.

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384,
};
use zeroize::Zeroizing;

use crate::error::{invalid_input, invalid_key, CryptoError, Result};
use crate::jwk::{strip_leading_zeros, PublicKey};
use crate::key::rsa::bit_length;
use crate::{aes, random_bytes, KeyMaterial};

/// The hash of RSA-OAEP (and of its MGF1) in a transfer wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    /// SHA-1: `CKM_RSA_AES_KEY_WRAP`, the BYOK format and the default of release.
    Sha1,
    /// SHA-256: `RSA_AES_KEY_WRAP_256`.
    Sha256,
    /// SHA-384: `RSA_AES_KEY_WRAP_384`.
    Sha384,
}

impl OaepHash {
    pub(crate) fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            OaepHash::Sha1 => &OAEP_SHA1_MGF1SHA1,
            OaepHash::Sha256 => &OAEP_SHA256_MGF1SHA256,
            OaepHash::Sha384 => &OAEP_SHA384_MGF1SHA384,
        }
    }
}

/// The wrapping methods of Azure's key transfer (`enc` of a BYOK blob or a release request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferWrap {
    /// `CKM_RSA_AES_KEY_WRAP`: OAEP with SHA-1.
    RsaAesKeyWrap,
    /// `RSA_AES_KEY_WRAP_256`: OAEP with SHA-256.
    RsaAesKeyWrap256,
    /// `RSA_AES_KEY_WRAP_384`: OAEP with SHA-384.
    RsaAesKeyWrap384,
}

impl TransferWrap {
    /// Every method, in the order Azure documents them.
    pub const ALL: [TransferWrap; 3] = [
        TransferWrap::RsaAesKeyWrap,
        TransferWrap::RsaAesKeyWrap256,
        TransferWrap::RsaAesKeyWrap384,
    ];

    /// The wire name (exact spelling).
    pub fn name(self) -> &'static str {
        match self {
            TransferWrap::RsaAesKeyWrap => "CKM_RSA_AES_KEY_WRAP",
            TransferWrap::RsaAesKeyWrap256 => "RSA_AES_KEY_WRAP_256",
            TransferWrap::RsaAesKeyWrap384 => "RSA_AES_KEY_WRAP_384",
        }
    }

    /// The method named `name` (exact spelling), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The OAEP hash of this method.
    pub fn hash(self) -> OaepHash {
        match self {
            TransferWrap::RsaAesKeyWrap => OaepHash::Sha1,
            TransferWrap::RsaAesKeyWrap256 => OaepHash::Sha256,
            TransferWrap::RsaAesKeyWrap384 => OaepHash::Sha384,
        }
    }
}

/// Checks that `public` can be wrapped for: an RSA key of 2048 to 8192 bits whose exponent an
/// RSA key can have (odd, at least 3, at most 256 bits as FIPS 186-5 bounds it). The key comes
/// from outside (an attestation token, a JWK), so a bad one is the sender's error, refused
/// before any token or library sees it.
pub fn check_wrapping_key(public: &PublicKey) -> Result<()> {
    let PublicKey::Rsa { n, e } = public else {
        return Err(invalid_key("RSA-OAEP needs an RSA public key"));
    };
    let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
    if !(2048..=8192).contains(&bit_length(n)) || e.is_empty() {
        return Err(invalid_key("RSA public key must be 2048 to 8192 bits"));
    }
    if e.len() > 32 || e.last().is_none_or(|b| b & 1 == 0) || (e.len() == 1 && e[0] < 3) {
        return Err(invalid_key("the RSA public exponent is not valid"));
    }
    Ok(())
}

fn encrypting_key(public: &PublicKey) -> Result<OaepPublicEncryptingKey> {
    check_wrapping_key(public)?;
    let PublicKey::Rsa { n, e } = public else {
        return Err(invalid_key("RSA-OAEP needs an RSA public key"));
    };
    let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
    let key: PublicEncryptingKey = PublicKeyComponents { n, e }
        .try_into()
        .map_err(|_| invalid_key("not a valid RSA public key"))?;
    OaepPublicEncryptingKey::new(key).map_err(|_| invalid_key("not a valid RSA public key"))
}

/// RSA-OAEP encryption (no label) under a public key given by its JWK members.
pub fn rsa_oaep_encrypt(public: &PublicKey, hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>> {
    let key = encrypting_key(public)?;
    if plaintext.len() > key.max_plaintext_size(hash.algorithm()) {
        return Err(invalid_input(
            "plaintext too long for this RSA key and padding",
        ));
    }
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(hash.algorithm(), plaintext, &mut out, None)
        .map_err(|_| CryptoError::Internal)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// The X.509 SubjectPublicKeyInfo DER of an RSA public key (for certificates).
pub fn rsa_spki_der(public: &PublicKey) -> Result<Vec<u8>> {
    let PublicKey::Rsa { n, e } = public else {
        return Err(invalid_key("not an RSA public key"));
    };
    let components = PublicKeyComponents {
        n: strip_leading_zeros(n),
        e: strip_leading_zeros(e),
    };
    let der: PublicKeyX509Der<'static> = components
        .as_der()
        .map_err(|_| invalid_key("not a valid RSA public key"))?;
    Ok(der.as_ref().to_vec())
}

/// RFC 5649 AES key wrap with padding under a 128, 192 or 256-bit key.
pub fn aes_kwp_wrap(kek: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    aes::kwp_wrap(kek, plaintext)
}

/// RFC 5649 unwrap; any integrity failure is `DecryptionFailed`.
pub fn aes_kwp_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    aes::kwp_unwrap(kek, wrapped)
}

/// Wraps `plaintext` for the holder of `public`'s private key with a fresh AES-256 key.
pub fn rsa_aes_key_wrap(public: &PublicKey, hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>> {
    let ephemeral = Zeroizing::new(random_bytes(32)?);
    let mut out = rsa_oaep_encrypt(public, hash, &ephemeral)?;
    out.extend_from_slice(&aes::kwp_wrap(&ephemeral, plaintext)?);
    Ok(out)
}

/// [`rsa_aes_key_wrap`] for a public key given as X.509 SubjectPublicKeyInfo DER (the PEM a
/// key-exchange key is exported as). Keys under 2048 bits are refused.
pub fn rsa_aes_key_wrap_spki(spki_der: &[u8], hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>> {
    let key = PublicEncryptingKey::from_der(spki_der)
        .map_err(|_| invalid_key("not an RSA public key (SubjectPublicKeyInfo DER)"))?;
    if key.key_size_bits() < 2048 {
        return Err(invalid_key("the RSA key is smaller than 2048 bits"));
    }
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| CryptoError::Internal)?;
    let ephemeral = Zeroizing::new(random_bytes(32)?);
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(hash.algorithm(), &ephemeral, &mut out, None)
        .map_err(|_| CryptoError::Internal)?
        .len();
    out.truncate(len);
    out.extend_from_slice(&aes::kwp_wrap(&ephemeral, plaintext)?);
    Ok(out)
}

/// The RSA public key of an X.509 SubjectPublicKeyInfo DER (the PEM a key-exchange key is
/// exported as), for a wrap done elsewhere, in a PKCS#11 token. Keys under 2048 bits are refused,
/// as by [`rsa_aes_key_wrap_spki`].
pub fn rsa_spki_public_key(spki_der: &[u8]) -> Result<PublicKey> {
    use x509_parser::prelude::FromDer;
    let not_rsa = || invalid_key("not an RSA public key (SubjectPublicKeyInfo DER)");
    // The same acceptance as the wrap done here.
    let key = PublicEncryptingKey::from_der(spki_der).map_err(|_| not_rsa())?;
    if key.key_size_bits() < 2048 {
        return Err(invalid_key("the RSA key is smaller than 2048 bits"));
    }
    let (rest, spki) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| not_rsa())?;
    if !rest.is_empty() {
        return Err(not_rsa());
    }
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Ok(PublicKey::Rsa {
            n: strip_leading_zeros(rsa.modulus).to_vec(),
            e: strip_leading_zeros(rsa.exponent).to_vec(),
        }),
        _ => Err(not_rsa()),
    }
}

/// The length of the DER SEQUENCE `der` starts with, header included (up to 64 KiB).
fn der_sequence_len(der: &[u8]) -> Option<usize> {
    match der {
        [0x30, len, ..] if *len < 0x80 => Some(2 + usize::from(*len)),
        [0x30, 0x81, len, ..] => Some(3 + usize::from(*len)),
        [0x30, 0x82, hi, lo, ..] => Some(4 + (usize::from(*hi) << 8 | usize::from(*lo))),
        _ => None,
    }
}

/// Bytes past a complete DER SEQUENCE that are all zero and fewer than 8: the padding SoftHSM
/// 2.6.1 adds before every symmetric wrap, KWP included. Returns the DER without them.
fn strip_wrap_padding(der: &[u8]) -> &[u8] {
    match der_sequence_len(der) {
        Some(total)
            if total < der.len()
                && der.len() - total < 8
                && der[total..].iter().all(|b| *b == 0) =>
        {
            &der[..total]
        }
        _ => der,
    }
}

impl KeyMaterial {
    /// RSA-OAEP decryption (no label) with this RSA private key.
    pub fn rsa_oaep_decrypt(
        &self,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.rsa_private()?
            .oaep_decrypt(hash.algorithm(), ciphertext)
    }

    /// Opens a transfer blob made for this RSA key: the first modulus-length bytes are the OAEP
    /// block holding an AES key of 128, 192 or 256 bits, the rest its RFC 5649 wrap. Every
    /// failure past the length checks is `DecryptionFailed`, without detail.
    pub fn rsa_aes_key_unwrap(&self, hash: OaepHash, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let modulus_len = self.size_bits().div_ceil(8) as usize;
        if blob.len() < modulus_len + 16 {
            return Err(invalid_input(
                "the wrapped key is shorter than the key-exchange key's modulus plus one wrapped block",
            ));
        }
        let (block, wrapped) = blob.split_at(modulus_len);
        let ephemeral = self
            .rsa_oaep_decrypt(hash, block)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        if !matches!(ephemeral.len(), 16 | 24 | 32) {
            return Err(CryptoError::DecryptionFailed);
        }
        aes::kwp_unwrap(&ephemeral, wrapped).map_err(|_| CryptoError::DecryptionFailed)
    }

    /// The key material as key transfer carries it: PKCS#8 DER for RSA and EC keys, the raw key
    /// for AES keys.
    pub fn transfer_plaintext(&self) -> Zeroizing<Vec<u8>> {
        let bytes = self.to_bytes();
        Zeroizing::new(bytes.get(1..).unwrap_or_default().to_vec())
    }

    /// Reads key material that arrived by key transfer: a PKCS#8 RSA or EC private key (zero
    /// padding after the DER, as SoftHSM 2.6.1 adds, is removed), or with `oct` an AES key.
    /// Returns the material and whether padding was removed.
    pub fn from_transfer_plaintext(bytes: &[u8], oct: bool) -> Result<(Self, bool)> {
        if oct {
            return Ok((Self::from_bytes(&[&[0x03], bytes].concat())?, false));
        }
        let der = strip_wrap_padding(bytes);
        // aws-lc ignores bytes after the key: anything else after it is refused here.
        if der_sequence_len(der) != Some(der.len()) {
            return Err(invalid_key("not a single DER-encoded PKCS#8 private key"));
        }
        let material = Self::from_pkcs8_der(der)?;
        Ok((material, der.len() != bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn wrap_padding_is_stripped_only_after_complete_der() {
        let der = [0x30, 0x03, 0x02, 0x01, 0x05];
        let padded = [&der[..], &[0, 0, 0]].concat();
        assert_eq!(strip_wrap_padding(&padded), &der);
        assert_eq!(strip_wrap_padding(&der), &der);
        // Non-zero trailer, or 8 zeros and more, are kept (and then refused by the parser).
        let tail = [&der[..], &[0, 1]].concat();
        assert_eq!(strip_wrap_padding(&tail), &tail[..]);
        let long = [&der[..], &[0u8; 8]].concat();
        assert_eq!(strip_wrap_padding(&long), &long[..]);
        assert_eq!(strip_wrap_padding(&[0x30]), &[0x30]);
        assert_eq!(strip_wrap_padding(&[]), &[] as &[u8]);
    }

    #[test]
    fn wrapping_for_an_spki_public_key_opens_with_its_private_key() {
        let kek = KeyMaterial::generate_rsa(2048).unwrap();
        let spki = rsa_spki_der(&kek.public_key()).unwrap();
        let target = KeyMaterial::generate_ec(crate::Curve::P256).unwrap();
        let plain = target.transfer_plaintext();
        for wrap in TransferWrap::ALL {
            let blob = rsa_aes_key_wrap_spki(&spki, wrap.hash(), &plain).unwrap();
            assert_eq!(blob.len(), 256 + plain.len().div_ceil(8) * 8 + 8);
            let opened = kek.rsa_aes_key_unwrap(wrap.hash(), &blob).unwrap();
            assert_eq!(opened.as_slice(), plain.as_slice());
        }
        // Not a public key, a truncated one, a 1024-bit RSA key: refused.
        assert!(rsa_aes_key_wrap_spki(b"garbage", OaepHash::Sha1, &plain).is_err());
        assert!(rsa_aes_key_wrap_spki(&spki[..spki.len() - 5], OaepHash::Sha1, &plain).is_err());
        let mut n = vec![0xc5; 128];
        n[127] |= 1;
        let short = rsa_spki_der(&PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        })
        .unwrap();
        assert!(rsa_aes_key_wrap_spki(&short, OaepHash::Sha1, &plain).is_err());
    }

    #[test]
    fn the_public_key_of_an_spki_is_read_back() {
        let kek = KeyMaterial::generate_rsa(3072).unwrap();
        let spki = rsa_spki_der(&kek.public_key()).unwrap();
        assert_eq!(rsa_spki_public_key(&spki).unwrap(), kek.public_key());
        // Trailing bytes, garbage, an EC key, a 1024-bit RSA key: refused.
        assert!(rsa_spki_public_key(&[&spki[..], &[0]].concat()).is_err());
        assert!(rsa_spki_public_key(b"garbage").is_err());
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let ec_spki: PublicKeyX509Der<'static> = ec.public_key().as_der().unwrap();
        assert!(rsa_spki_public_key(ec_spki.as_ref()).is_err());
        let mut n = vec![0xc5; 128];
        n[127] |= 1;
        let short = rsa_spki_der(&PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        })
        .unwrap();
        assert!(rsa_spki_public_key(&short).is_err());
    }

    #[test]
    fn transfer_round_trips_for_every_hash_and_family() {
        let kek = KeyMaterial::generate_rsa(2048).unwrap();
        let targets = [
            KeyMaterial::generate_rsa(2048).unwrap(),
            KeyMaterial::generate_ec(crate::Curve::P384).unwrap(),
            KeyMaterial::generate_oct(192).unwrap(),
        ];
        for wrap in TransferWrap::ALL {
            assert_eq!(TransferWrap::from_name(wrap.name()), Some(wrap));
            for target in &targets {
                let plain = target.transfer_plaintext();
                let blob = rsa_aes_key_wrap(&kek.public_key(), wrap.hash(), &plain).unwrap();
                let opened = kek.rsa_aes_key_unwrap(wrap.hash(), &blob).unwrap();
                assert_eq!(opened.as_slice(), plain.as_slice());
                let oct = target.family() == crate::KeyFamily::Oct;
                let (back, stripped) = KeyMaterial::from_transfer_plaintext(&opened, oct).unwrap();
                assert!(!stripped);
                assert_eq!(back.public_key(), target.public_key());
                // Another hash, a flipped byte in either half: refused without detail.
                let other = TransferWrap::ALL.into_iter().find(|w| *w != wrap).unwrap();
                assert_eq!(
                    kek.rsa_aes_key_unwrap(other.hash(), &blob).unwrap_err(),
                    CryptoError::DecryptionFailed
                );
                for at in [3, blob.len() - 3] {
                    let mut bad = blob.clone();
                    bad[at] ^= 1;
                    assert_eq!(
                        kek.rsa_aes_key_unwrap(wrap.hash(), &bad).unwrap_err(),
                        CryptoError::DecryptionFailed
                    );
                }
            }
        }
        assert!(TransferWrap::from_name("ckm_rsa_aes_key_wrap").is_none());
        assert!(kek.rsa_aes_key_unwrap(OaepHash::Sha1, &[0u8; 100]).is_err());
    }

    #[test]
    fn soft_hsm_padding_is_accepted_and_reported() {
        let target = KeyMaterial::generate_rsa(2048).unwrap();
        let mut plain = target.transfer_plaintext().to_vec();
        plain.extend_from_slice(&[0u8; 6]);
        let (back, stripped) = KeyMaterial::from_transfer_plaintext(&plain, false).unwrap();
        assert!(stripped);
        assert_eq!(back.public_key(), target.public_key());
        plain.push(7);
        assert!(KeyMaterial::from_transfer_plaintext(&plain, false).is_err());
    }

    #[test]
    fn oaep_needs_a_real_rsa_public_key() {
        let ec = KeyMaterial::generate_ec(crate::Curve::P256).unwrap();
        assert!(rsa_oaep_encrypt(&ec.public_key(), OaepHash::Sha1, b"k").is_err());
        let small = PublicKey::Rsa {
            n: vec![0xc5; 128],
            e: vec![1, 0, 1],
        };
        assert!(rsa_oaep_encrypt(&small, OaepHash::Sha1, b"k").is_err());
        let rsa = KeyMaterial::generate_rsa(2048).unwrap();
        assert!(rsa_oaep_encrypt(&rsa.public_key(), OaepHash::Sha384, &[0u8; 200]).is_err());
        assert!(ec.rsa_oaep_decrypt(OaepHash::Sha1, &[0u8; 256]).is_err());
        let spki = rsa_spki_der(&rsa.public_key()).unwrap();
        assert_eq!(spki[0], 0x30);
        assert!(rsa_spki_der(&ec.public_key()).is_err());
    }
}
