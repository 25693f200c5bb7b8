//! Signature verification with public key parts only.

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{
    self, EcdsaVerificationAlgorithm, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents,
};

use crate::algorithm::{Curve, KeyFamily, SignatureAlgorithm};
use crate::error::{invalid_input, invalid_key, mismatch, CryptoError, Result};
use crate::jwk::{left_pad, strip_leading_zeros, PublicKey};
use crate::key::rsa::bit_length;

/// Range of RSA modulus sizes we verify with.
const RSA_VERIFY_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Wraps a caller-supplied digest for `alg`, checking its length.
pub(crate) fn import_digest(alg: SignatureAlgorithm, value: &[u8]) -> Result<Digest> {
    if value.len() != alg.digest_len() {
        return Err(invalid_input(format!(
            "{} signs a {}-byte digest, got {} bytes",
            alg.name(),
            alg.digest_len(),
            value.len()
        )));
    }
    let hash = match alg.digest_len() {
        32 => &digest::SHA256,
        48 => &digest::SHA384,
        _ => &digest::SHA512,
    };
    Digest::import_less_safe(value, hash).map_err(|_| CryptoError::Internal)
}

fn rsa_parameters(alg: SignatureAlgorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        SignatureAlgorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        SignatureAlgorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        SignatureAlgorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        SignatureAlgorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        SignatureAlgorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        SignatureAlgorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn ecdsa_algorithm(curve: Curve) -> &'static EcdsaVerificationAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED,
    }
}

/// Verify a signature over a digest with public parts only.
///
/// `digest` is the hash value itself (it is not hashed again) and must be
/// `alg.digest_len()` bytes. ECDSA signatures are raw `r || s`. Returns
/// `Ok(false)` for a signature that does not verify; `Err` only for misuse: a
/// wrong digest length, an algorithm that does not fit the key, or a malformed
/// public key.
pub fn verify_with_public(
    key: &PublicKey,
    alg: SignatureAlgorithm,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool> {
    let parsed = match (key, alg.family()) {
        (PublicKey::Rsa { n, e }, KeyFamily::Rsa) => {
            let params = rsa_parameters(alg).ok_or(CryptoError::Internal)?;
            let n = strip_leading_zeros(n);
            let e = strip_leading_zeros(e);
            if !RSA_VERIFY_BITS.contains(&bit_length(n)) || e.is_empty() {
                return Err(invalid_key("RSA public key must be 2048 to 8192 bits"));
            }
            RsaPublicKeyComponents { n, e }
                .to_parsed_public_key(params)
                .map_err(|_| invalid_key("malformed RSA public key"))?
        }
        (PublicKey::Ec { crv, x, y }, KeyFamily::Ec) => {
            if alg.curve() != Some(*crv) {
                return Err(mismatch(format!(
                    "{} does not fit a {} key",
                    alg.name(),
                    crv.jwk_name()
                )));
            }
            let len = crv.coordinate_len();
            let too_long = || invalid_key("EC coordinate longer than the curve allows");
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&left_pad(x, len).ok_or_else(too_long)?);
            point.extend_from_slice(&left_pad(y, len).ok_or_else(too_long)?);
            ParsedPublicKey::new(ecdsa_algorithm(*crv), point)
                .map_err(|_| invalid_key("EC point is not on the curve"))?
        }
        (key, _) => {
            return Err(mismatch(format!(
                "{} does not fit a {:?} key",
                alg.name(),
                key.family()
            )))
        }
    };
    let digest = import_digest(alg, digest)?;
    Ok(parsed.verify_digest_sig(&digest, signature).is_ok())
}

/// Encrypts with an RSA public key given by its members: `RSA-OAEP`,
/// `RSA-OAEP-256` or `RSA1_5`, as [`crate::KeyMaterial::encrypt`] would with the
/// private key's own. Needs no secret, so it works for keys held in an HSM too.
pub fn encrypt_with_public(
    key: &PublicKey,
    alg: crate::EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    if !alg.is_rsa() {
        return Err(mismatch(format!(
            "{} is not an RSA algorithm: only RSA encrypts with a public key",
            alg.name()
        )));
    }
    let public = crate::key::rsa::public_encrypting_key(key)?;
    crate::key::rsa::encrypt_public(&public, alg, plaintext)
}

/// Verify a JWS-style signature over a whole `message` (hashed here with the algorithm's own
/// SHA-2), with public parts only. Same contract as [`verify_with_public`]: `Ok(false)` for a
/// signature that does not verify, `Err` when the algorithm does not fit the key or the key is
/// malformed.
pub fn verify_message_with_public(
    key: &PublicKey,
    alg: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<bool> {
    let digest: Vec<u8> = match alg.digest_len() {
        32 => crate::digest::sha256(message).to_vec(),
        48 => crate::digest::sha384(message).to_vec(),
        _ => crate::digest::sha512(message).to_vec(),
    };
    verify_with_public(key, alg, &digest, signature)
}

#[cfg(test)]
mod message_tests {
    use super::*;
    use crate::KeyMaterial;

    #[test]
    fn public_encryption_opens_with_the_private_key() {
        let rsa = KeyMaterial::generate_rsa(2048).unwrap();
        for alg in [
            crate::EncryptionAlgorithm::RsaOaep,
            crate::EncryptionAlgorithm::RsaOaep256,
            crate::EncryptionAlgorithm::Rsa1_5,
        ] {
            let ciphertext = encrypt_with_public(&rsa.public_key(), alg, b"secret").unwrap();
            let plain = rsa.decrypt(alg, &ciphertext, None, None, None).unwrap();
            assert_eq!(plain.as_slice(), b"secret");
        }
        assert!(
            encrypt_with_public(&rsa.public_key(), crate::EncryptionAlgorithm::A256Gcm, b"x")
                .is_err()
        );
        let ec = KeyMaterial::generate_ec(crate::Curve::P256).unwrap();
        assert!(matches!(
            encrypt_with_public(&ec.public_key(), crate::EncryptionAlgorithm::RsaOaep, b"x"),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
    }

    #[test]
    fn message_signatures_verify_and_refuse_the_wrong_key_type() {
        let rsa = KeyMaterial::generate_rsa(2048).unwrap();
        let digest = crate::digest::sha256(b"header.payload");
        let sig = rsa.sign(SignatureAlgorithm::Rs256, &digest).unwrap();
        let public = rsa.public_key();
        assert!(verify_message_with_public(
            &public,
            SignatureAlgorithm::Rs256,
            b"header.payload",
            &sig
        )
        .unwrap());
        assert!(!verify_message_with_public(
            &public,
            SignatureAlgorithm::Rs256,
            b"header.payload!",
            &sig
        )
        .unwrap());
        // An RSA key with an ECDSA algorithm is misuse, not a failed check.
        assert!(
            verify_message_with_public(&public, SignatureAlgorithm::Es256, b"m", &sig).is_err()
        );
        let ec = KeyMaterial::generate_ec(crate::Curve::P384).unwrap();
        let sig = ec
            .sign(SignatureAlgorithm::Es384, &crate::digest::sha384(b"m"))
            .unwrap();
        assert!(verify_message_with_public(
            &ec.public_key(),
            SignatureAlgorithm::Es384,
            b"m",
            &sig
        )
        .unwrap());
        assert!(verify_message_with_public(
            &ec.public_key(),
            SignatureAlgorithm::Es256,
            b"m",
            &sig
        )
        .is_err());
    }
}
