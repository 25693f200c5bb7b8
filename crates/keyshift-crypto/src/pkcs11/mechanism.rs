//! Which PKCS#11 mechanism and parameters do each Azure algorithm, and the DER
//! bits PKCS#11 speaks in (curve OIDs, `CKA_EC_POINT`, PKCS#1 `DigestInfo`).

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};

use crate::algorithm::{Curve, EncryptionAlgorithm, SignatureAlgorithm};
use crate::error::{invalid_key, mismatch, Result};

/// A mechanism with its parameters, and how to name it in an error.
pub(super) struct Chosen {
    pub(super) mechanism: Mechanism<'static>,
    pub(super) name: &'static str,
}

/// The signing mechanism for `alg`, and whether the digest goes in wrapped in a
/// PKCS#1 `DigestInfo` (`CKM_RSA_PKCS` signs what it is given).
pub(super) fn signing(alg: SignatureAlgorithm) -> (Chosen, bool) {
    use SignatureAlgorithm as S;
    let pss = |hash_alg, mgf, s_len: u64, name| Chosen {
        mechanism: Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg,
            mgf,
            s_len: s_len.into(),
        }),
        name,
    };
    match alg {
        S::Rs256 | S::Rs384 | S::Rs512 => (
            Chosen {
                mechanism: Mechanism::RsaPkcs,
                name: "CKM_RSA_PKCS",
            },
            true,
        ),
        S::Ps256 => (
            pss(
                MechanismType::SHA256,
                PkcsMgfType::MGF1_SHA256,
                32,
                "CKM_RSA_PKCS_PSS (SHA-256, MGF1-SHA-256, 32-byte salt)",
            ),
            false,
        ),
        S::Ps384 => (
            pss(
                MechanismType::SHA384,
                PkcsMgfType::MGF1_SHA384,
                48,
                "CKM_RSA_PKCS_PSS (SHA-384, MGF1-SHA-384, 48-byte salt)",
            ),
            false,
        ),
        S::Ps512 => (
            pss(
                MechanismType::SHA512,
                PkcsMgfType::MGF1_SHA512,
                64,
                "CKM_RSA_PKCS_PSS (SHA-512, MGF1-SHA-512, 64-byte salt)",
            ),
            false,
        ),
        S::Es256 | S::Es384 | S::Es512 | S::Es256K => (
            Chosen {
                mechanism: Mechanism::Ecdsa,
                name: "CKM_ECDSA",
            },
            false,
        ),
    }
}

/// DER of `DigestInfo { AlgorithmIdentifier(sha-2, NULL), OCTET STRING }` up to
/// the digest itself (RFC 8017 section 9.2, note 1).
pub(super) fn digest_info_prefix(digest_len: usize) -> &'static [u8] {
    const SHA256: &[u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const SHA384: &[u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    const SHA512: &[u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
    match digest_len {
        32 => SHA256,
        48 => SHA384,
        _ => SHA512,
    }
}

/// The RSA encryption mechanism for `alg`.
pub(super) fn rsa_encryption(alg: EncryptionAlgorithm) -> Result<Chosen> {
    let oaep =
        |hash, mgf| Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()));
    Ok(match alg {
        EncryptionAlgorithm::RsaOaep => Chosen {
            mechanism: oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            name: "CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA-1)",
        },
        EncryptionAlgorithm::RsaOaep256 => Chosen {
            mechanism: oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            name: "CKM_RSA_PKCS_OAEP (SHA-256, MGF1-SHA-256)",
        },
        EncryptionAlgorithm::Rsa1_5 => Chosen {
            mechanism: Mechanism::RsaPkcs,
            name: "CKM_RSA_PKCS",
        },
        other => {
            return Err(mismatch(format!(
                "{} is not an RSA algorithm",
                other.name()
            )))
        }
    })
}

/// Bytes of overhead each RSA padding needs (RFC 8017: OAEP `2 hLen + 2`,
/// PKCS#1 v1.5 11).
pub(super) fn rsa_padding_overhead(alg: EncryptionAlgorithm) -> usize {
    match alg {
        EncryptionAlgorithm::RsaOaep => 2 * 20 + 2,
        EncryptionAlgorithm::RsaOaep256 => 2 * 32 + 2,
        _ => 11,
    }
}

/// `CKA_EC_PARAMS` for a named curve: the DER of its OID.
pub(super) fn curve_params(curve: Curve) -> &'static [u8] {
    match curve {
        Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        Curve::P256K => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
    }
}

/// The curve a `CKA_EC_PARAMS` names, if it is one of ours.
pub(super) fn curve_of_params(params: &[u8]) -> Option<Curve> {
    Curve::ALL
        .into_iter()
        .find(|curve| curve_params(*curve) == params)
}

/// The affine coordinates in a `CKA_EC_POINT`: PKCS#11 says DER `OCTET STRING`
/// around the uncompressed point; some tokens give the bare point. The length
/// tells them apart.
pub(super) fn ec_point_xy(curve: Curve, ec_point: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let len = curve.coordinate_len();
    let point_len = 1 + 2 * len;
    let point = if ec_point.len() == point_len {
        ec_point
    } else {
        // 0x04, then a short (< 128) or one-byte long (0x81 n) DER length.
        match ec_point {
            [0x04, n, rest @ ..] if usize::from(*n) == point_len && rest.len() == point_len => rest,
            [0x04, 0x81, n, rest @ ..]
                if usize::from(*n) == point_len && rest.len() == point_len =>
            {
                rest
            }
            _ => {
                return Err(invalid_key(
                    "the token's CKA_EC_POINT is not a point on the curve",
                ))
            }
        }
    };
    match point.split_first() {
        Some((0x04, xy)) => Ok((xy[..len].to_vec(), xy[len..].to_vec())),
        _ => Err(invalid_key(
            "the token's CKA_EC_POINT is not an uncompressed point",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{sha256, sha384, sha512};

    #[test]
    fn curve_params_round_trip() {
        for curve in Curve::ALL {
            assert_eq!(curve_of_params(curve_params(curve)), Some(curve));
        }
        assert_eq!(curve_of_params(&[0x30, 0x00]), None);
    }

    #[test]
    fn ec_points_are_read_bare_or_in_der() {
        for curve in Curve::ALL {
            let len = curve.coordinate_len();
            let mut point = vec![0x04];
            point.extend((0..2 * len).map(|i| i as u8));
            let (x, y) = ec_point_xy(curve, &point).unwrap();
            assert_eq!(
                (x.as_slice(), y.as_slice()),
                (&point[1..=len], &point[1 + len..])
            );
            let mut der = vec![0x04];
            if point.len() >= 128 {
                der.push(0x81);
            }
            der.push(point.len() as u8);
            der.extend_from_slice(&point);
            assert_eq!(ec_point_xy(curve, &der).unwrap(), (x, y));
            assert!(ec_point_xy(curve, &der[..der.len() - 1]).is_err());
        }
        // A compressed point is refused.
        let mut compressed = vec![0x04, 33, 0x02];
        compressed.extend([0u8; 32]);
        assert!(ec_point_xy(Curve::P256, &compressed).is_err());
    }

    /// The prefixes are the DER lengths they claim: an outer SEQUENCE that holds
    /// the rest plus the digest, ending in OCTET STRING of the digest's length.
    #[test]
    fn digest_info_prefixes_are_consistent() {
        for digest in [
            sha256(b"x").to_vec(),
            sha384(b"x").to_vec(),
            sha512(b"x").to_vec(),
        ] {
            let prefix = digest_info_prefix(digest.len());
            assert_eq!(prefix[0], 0x30);
            assert_eq!(usize::from(prefix[1]), prefix.len() - 2 + digest.len());
            assert_eq!(prefix[prefix.len() - 2..], [0x04, digest.len() as u8]);
        }
    }
}
