//! HKDF-SHA-256 (RFC 5869): derives keys from a secret, a salt and a context.

use aws_lc_rs::hkdf::{KeyType, Salt, HKDF_SHA256};

use crate::error::{invalid_input, CryptoError, Result};

/// Largest output HKDF-SHA-256 gives (255 hash lengths).
pub const HKDF_SHA256_MAX_LEN: usize = 255 * 32;

struct OutputLen(usize);

impl KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// Fills `out` with HKDF-SHA-256 of the input keying material `ikm`, under
/// `salt`, for the context `info` (extract then expand). `out` must be 1 to
/// 8160 bytes; `info` may be empty.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    if out.is_empty() || out.len() > HKDF_SHA256_MAX_LEN {
        return Err(invalid_input("HKDF-SHA-256 output must be 1 to 8160 bytes"));
    }
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, OutputLen(out.len()))
        .map_err(|_| CryptoError::Internal)?;
    okm.fill(out).map_err(|_| CryptoError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc5869_test_cases() {
        // Test case 1.
        let mut okm = [0u8; 42];
        hkdf_sha256(
            &hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
            &hex("000102030405060708090a0b0c"),
            &hex("f0f1f2f3f4f5f6f7f8f9"),
            &mut okm,
        )
        .unwrap();
        assert_eq!(
            okm.to_vec(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
        // Test case 3: empty salt and info.
        hkdf_sha256(
            &hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
            &[],
            &[],
            &mut okm,
        )
        .unwrap();
        assert_eq!(
            okm.to_vec(),
            hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
        );
    }

    #[test]
    fn long_info_and_length_limits() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        let info = vec![0x42u8; 10_000];
        hkdf_sha256(b"ikm", b"salt", &info, &mut a).unwrap();
        hkdf_sha256(b"ikm", b"salt", &info[..9_999], &mut b).unwrap();
        assert_ne!(a, b);
        assert!(hkdf_sha256(b"ikm", b"salt", b"", &mut []).is_err());
        let mut big = vec![0u8; HKDF_SHA256_MAX_LEN + 1];
        assert!(hkdf_sha256(b"ikm", b"salt", b"", &mut big).is_err());
        let mut max = vec![0u8; HKDF_SHA256_MAX_LEN];
        hkdf_sha256(b"ikm", b"salt", b"", &mut max).unwrap();
    }
}
