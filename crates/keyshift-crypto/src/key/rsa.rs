//! RSA private keys: generation, import from JWK components, OAEP/PKCS#1 v1.5
//! encryption and PKCS#1 v1.5/PSS signing of a caller-supplied digest.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeyPair, KeyPairComponents, KeySize, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey, PublicKeyComponents, OAEP_SHA1_MGF1SHA1,
    OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, KeyPair as _, RsaEncoding};
use zeroize::Zeroizing;

use crate::algorithm::{EncryptionAlgorithm, SignatureAlgorithm};
use crate::error::{invalid_input, invalid_key, mismatch, CryptoError, Result};
use crate::jwk::{strip_leading_zeros, JwkParts, PublicKey};
use crate::signature::import_digest;

/// Smallest and largest modulus accepted from a JWK import.
const IMPORT_MIN_BITS: usize = 2048;
const IMPORT_MAX_BITS: usize = 4096;

pub(crate) struct RsaKey {
    signing: KeyPair,
    decrypting: PrivateDecryptingKey,
    encrypting: PublicEncryptingKey,
}

impl RsaKey {
    /// A new key with public exponent 65537, and its PKCS#8 encoding.
    pub(crate) fn generate(bits: u32) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(invalid_input("RSA key size must be 2048, 3072 or 4096")),
        };
        let pair = KeyPair::generate(size).map_err(|_| CryptoError::Internal)?;
        let pkcs8 = pkcs8_of(&pair)?;
        let key = Self::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Builds the key from all JWK members; aws-lc checks that `n = p*q`, that
    /// `d`, `dp`, `dq` and `qi` are consistent with them and with `e`.
    pub(crate) fn from_jwk(parts: &JwkParts) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let (Some(n), Some(e)) = (parts.n.as_deref(), parts.e.as_deref()) else {
            return Err(invalid_key("RSA JWK needs n and e"));
        };
        let (Some(d), Some(p), Some(q), Some(dp), Some(dq), Some(qi)) = (
            parts.d.as_deref(),
            parts.p.as_deref(),
            parts.q.as_deref(),
            parts.dp.as_deref(),
            parts.dq.as_deref(),
            parts.qi.as_deref(),
        ) else {
            return Err(invalid_key(
                "RSA JWK needs all private members: d, p, q, dp, dq, qi",
            ));
        };
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        if n.is_empty() || e.is_empty() {
            return Err(invalid_key("RSA modulus and exponent must not be zero"));
        }
        let bits = bit_length(n);
        if !(IMPORT_MIN_BITS..=IMPORT_MAX_BITS).contains(&bits) {
            return Err(invalid_key("RSA modulus must be 2048 to 4096 bits"));
        }
        let components = KeyPairComponents {
            public_key: PublicKeyComponents { n, e },
            d,
            p,
            q,
            dP: dp,
            dQ: dq,
            qInv: qi,
        };
        let pair = KeyPair::from_components(&components)
            .map_err(|_| invalid_key("RSA JWK members are not a consistent private key"))?;
        let pkcs8 = pkcs8_of(&pair)?;
        let key = Self::from_pkcs8(&pkcs8)?;
        // from_components keeps n and e as given; check they survived the
        // round trip through PKCS#8 all the same.
        let (n2, e2) = key.public();
        if n2 != n || e2 != e {
            return Err(invalid_key("RSA JWK n/e do not match the private key"));
        }
        Ok((key, pkcs8))
    }

    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let signing =
            KeyPair::from_pkcs8(der).map_err(|_| invalid_key("not an RSA PKCS#8 private key"))?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|_| invalid_key("not an RSA PKCS#8 private key"))?;
        let spki: PublicKeyX509Der<'static> = signing
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::Internal)?;
        let encrypting =
            PublicEncryptingKey::from_der(spki.as_ref()).map_err(|_| CryptoError::Internal)?;
        Ok(Self {
            signing,
            decrypting,
            encrypting,
        })
    }

    pub(crate) fn bits(&self) -> u32 {
        u32::try_from(self.decrypting.key_size_bits()).unwrap_or(u32::MAX)
    }

    /// Modulus and public exponent, big-endian without leading zeros.
    pub(crate) fn public(&self) -> (Vec<u8>, Vec<u8>) {
        let public = self.signing.public_key();
        (
            public.modulus().big_endian_without_leading_zero().to_vec(),
            public.exponent().big_endian_without_leading_zero().to_vec(),
        )
    }

    pub(crate) fn encrypt(&self, alg: EncryptionAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
        encrypt_public(&self.encrypting, alg, plaintext)
    }

    pub(crate) fn decrypt(
        &self,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if !alg.is_rsa() {
            return Err(mismatch(format!("{} is not an RSA algorithm", alg.name())));
        }
        if ciphertext.len() != self.decrypting.key_size_bytes() {
            return Err(invalid_input(
                "RSA ciphertext length must equal the modulus length",
            ));
        }
        let mut out = Zeroizing::new(vec![0u8; self.decrypting.key_size_bytes()]);
        let result = match oaep_algorithm(alg) {
            Some(oaep) => OaepPrivateDecryptingKey::new(self.decrypting.clone())
                .map_err(|_| CryptoError::Internal)?
                .decrypt(oaep, ciphertext, &mut out, None)
                .map(|plain| plain.len()),
            None => Pkcs1PrivateDecryptingKey::new(self.decrypting.clone())
                .map_err(|_| CryptoError::Internal)?
                .decrypt(ciphertext, &mut out)
                .map(|plain| plain.len()),
        };
        let len = result.map_err(|_| CryptoError::DecryptionFailed)?;
        out.truncate(len);
        Ok(out)
    }

    /// RSA-OAEP decryption with any of the OAEP hashes aws-lc offers (no label).
    pub(crate) fn oaep_decrypt(
        &self,
        oaep: &'static OaepAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if ciphertext.len() != self.decrypting.key_size_bytes() {
            return Err(invalid_input(
                "RSA ciphertext length must equal the modulus length",
            ));
        }
        let mut out = Zeroizing::new(vec![0u8; self.decrypting.key_size_bytes()]);
        let len = OaepPrivateDecryptingKey::new(self.decrypting.clone())
            .map_err(|_| CryptoError::Internal)?
            .decrypt(oaep, ciphertext, &mut out, None)
            .map_err(|_| CryptoError::DecryptionFailed)?
            .len();
        out.truncate(len);
        Ok(out)
    }

    pub(crate) fn sign(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let encoding: &'static dyn RsaEncoding = match alg {
            SignatureAlgorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
            SignatureAlgorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
            SignatureAlgorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
            SignatureAlgorithm::Ps256 => &signature::RSA_PSS_SHA256,
            SignatureAlgorithm::Ps384 => &signature::RSA_PSS_SHA384,
            SignatureAlgorithm::Ps512 => &signature::RSA_PSS_SHA512,
            _ => return Err(mismatch(format!("{} needs an EC key", alg.name()))),
        };
        let digest = import_digest(alg, digest)?;
        let mut out = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign_digest(encoding, &digest, &mut out)
            .map_err(|_| CryptoError::Internal)?;
        Ok(out)
    }
}

/// RSA encryption (`RSA-OAEP`, `RSA-OAEP-256`, `RSA1_5`) with a public key only.
pub(crate) fn encrypt_public(
    key: &PublicEncryptingKey,
    alg: EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let too_long = || invalid_input("plaintext too long for this RSA key and padding");
    match oaep_algorithm(alg) {
        Some(oaep) => {
            let key =
                OaepPublicEncryptingKey::new(key.clone()).map_err(|_| CryptoError::Internal)?;
            if plaintext.len() > key.max_plaintext_size(oaep) {
                return Err(too_long());
            }
            let mut out = vec![0u8; key.ciphertext_size()];
            let len = key
                .encrypt(oaep, plaintext, &mut out, None)
                .map_err(|_| CryptoError::Internal)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        None if alg == EncryptionAlgorithm::Rsa1_5 => {
            let key =
                Pkcs1PublicEncryptingKey::new(key.clone()).map_err(|_| CryptoError::Internal)?;
            if plaintext.len() > key.max_plaintext_size() {
                return Err(too_long());
            }
            let mut out = vec![0u8; key.ciphertext_size()];
            let len = key
                .encrypt(plaintext, &mut out)
                .map_err(|_| CryptoError::Internal)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        None => Err(mismatch(format!("{} is not an RSA algorithm", alg.name()))),
    }
}

/// An RSA public key given by its members, for encryption (2048 to 8192 bits).
pub(crate) fn public_encrypting_key(public: &PublicKey) -> Result<PublicEncryptingKey> {
    let PublicKey::Rsa { n, e } = public else {
        return Err(mismatch(format!(
            "RSA encryption needs an RSA key, not {:?}",
            public.family()
        )));
    };
    let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
    if !(2048..=8192).contains(&bit_length(n)) || e.is_empty() {
        return Err(invalid_key("RSA public key must be 2048 to 8192 bits"));
    }
    PublicKeyComponents { n, e }
        .try_into()
        .map_err(|_| invalid_key("not a valid RSA public key"))
}

fn oaep_algorithm(alg: EncryptionAlgorithm) -> Option<&'static OaepAlgorithm> {
    match alg {
        EncryptionAlgorithm::RsaOaep => Some(&OAEP_SHA1_MGF1SHA1),
        EncryptionAlgorithm::RsaOaep256 => Some(&OAEP_SHA256_MGF1SHA256),
        _ => None,
    }
}

fn pkcs8_of(pair: &KeyPair) -> Result<Zeroizing<Vec<u8>>> {
    let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| CryptoError::Internal)?;
    Ok(Zeroizing::new(der.as_ref().to_vec()))
}

/// Bit length of a big-endian unsigned integer without leading zeros.
pub(crate) fn bit_length(value: &[u8]) -> usize {
    match value.first() {
        None => 0,
        Some(first) => value.len() * 8 - first.leading_zeros() as usize,
    }
}
