//! EC private keys on P-256, P-384, P-521 and secp256k1: generation, JWK import
//! and ECDSA signing of a caller-supplied digest (raw `r || s` output).

use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _};
use zeroize::Zeroizing;

use crate::algorithm::{Curve, SignatureAlgorithm};
use crate::error::{invalid_key, mismatch, CryptoError, Result};
use crate::jwk::{left_pad, JwkParts};
use crate::signature::import_digest;

pub(crate) struct EcKey {
    curve: Curve,
    pair: EcdsaKeyPair,
}

/// The signing algorithm whose digest matches the curve's JWA algorithm.
fn signing_algorithm(curve: Curve) -> &'static EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED_SIGNING,
    }
}

impl EcKey {
    /// A new key, and its PKCS#8 encoding.
    pub(crate) fn generate(curve: Curve) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let pair =
            EcdsaKeyPair::generate(signing_algorithm(curve)).map_err(|_| CryptoError::Internal)?;
        let key = Self { curve, pair };
        let pkcs8 = key.pkcs8()?;
        Ok((key, pkcs8))
    }

    /// Builds the key from `crv`, `d`, `x`, `y`; rejects a `d` whose public point
    /// is not `(x, y)`.
    pub(crate) fn from_jwk(parts: &JwkParts) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let Some(curve) = parts.crv else {
            return Err(invalid_key("EC JWK needs crv"));
        };
        let (Some(d), Some(x), Some(y)) =
            (parts.d.as_deref(), parts.x.as_deref(), parts.y.as_deref())
        else {
            return Err(invalid_key("EC JWK needs d, x and y"));
        };
        let len = curve.coordinate_len();
        let too_long = || invalid_key("EC JWK member longer than the curve allows");
        let d = Zeroizing::new(left_pad(d, len).ok_or_else(too_long)?);
        let x = left_pad(x, len).ok_or_else(too_long)?;
        let y = left_pad(y, len).ok_or_else(too_long)?;
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        let pair =
            EcdsaKeyPair::from_private_key_and_public_key(signing_algorithm(curve), &d, &point)
                .map_err(|_| invalid_key("EC JWK d does not match x/y or is out of range"))?;
        let key = Self { curve, pair };
        let pkcs8 = key.pkcs8()?;
        Ok((key, pkcs8))
    }

    /// Parses PKCS#8, finding the curve by trying each one.
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self> {
        Curve::ALL
            .into_iter()
            .find_map(|curve| {
                EcdsaKeyPair::from_pkcs8(signing_algorithm(curve), der)
                    .ok()
                    .map(|pair| Self { curve, pair })
            })
            .ok_or_else(|| invalid_key("not an EC PKCS#8 private key on a supported curve"))
    }

    fn pkcs8(&self) -> Result<Zeroizing<Vec<u8>>> {
        let doc = self.pair.to_pkcs8v1().map_err(|_| CryptoError::Internal)?;
        Ok(Zeroizing::new(doc.as_ref().to_vec()))
    }

    pub(crate) fn curve(&self) -> Curve {
        self.curve
    }

    /// Affine coordinates, each `coordinate_len` bytes.
    pub(crate) fn public_xy(&self) -> (Vec<u8>, Vec<u8>) {
        let point = self.pair.public_key().as_ref();
        let len = self.curve.coordinate_len();
        // Uncompressed SEC1 point: 0x04 || x || y.
        match (point.get(1..1 + len), point.get(1 + len..1 + 2 * len)) {
            (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
            _ => (Vec::new(), Vec::new()),
        }
    }

    pub(crate) fn sign(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        match alg.curve() {
            Some(curve) if curve == self.curve => {}
            Some(_) => {
                return Err(mismatch(format!(
                    "{} does not fit a {} key",
                    alg.name(),
                    self.curve.jwk_name()
                )))
            }
            None => return Err(mismatch(format!("{} needs an RSA key", alg.name()))),
        }
        let digest = import_digest(alg, digest)?;
        let sig = self
            .pair
            .sign_digest(&digest)
            .map_err(|_| CryptoError::Internal)?;
        Ok(sig.as_ref().to_vec())
    }
}
