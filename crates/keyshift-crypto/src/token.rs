//! ES256 signing for the vault's own access tokens (JWT, RFC 7515/7518).

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::error::{invalid_key, CryptoError, Result};

const COORDINATE_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;

/// A P-256 key that signs access tokens with ES256. `Debug` is redacted.
pub struct TokenSigningKey {
    pair: EcdsaKeyPair,
    /// PKCS#8 form, kept so that [`TokenSigningKey::to_bytes`] cannot fail.
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TokenSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigningKey(<redacted>)")
    }
}

impl TokenSigningKey {
    /// A new random P-256 key.
    pub fn generate() -> Result<Self> {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| CryptoError::Internal)?;
        let doc = pair.to_pkcs8v1().map_err(|_| CryptoError::Internal)?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        Ok(Self { pair, pkcs8 })
    }

    /// A key from its PKCS#8 encoding (as written by [`TokenSigningKey::to_bytes`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
            .map_err(|_| invalid_key("not a P-256 PKCS#8 private key"))?;
        Ok(Self {
            pair,
            pkcs8: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// The PKCS#8 encoding of the key.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// Signs `message` (hashed with SHA-256 here); returns raw `r || s`, 64 bytes.
    pub fn sign_es256(&self, message: &[u8]) -> Result<Vec<u8>> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| CryptoError::Internal)?;
        Ok(sig.as_ref().to_vec())
    }

    /// The public point as 32-byte `x` and `y` (for the JWKS document).
    pub fn public_xy(&self) -> (Vec<u8>, Vec<u8>) {
        let point = self.pair.public_key().as_ref();
        match (
            point.get(1..1 + COORDINATE_LEN),
            point.get(1 + COORDINATE_LEN..1 + 2 * COORDINATE_LEN),
        ) {
            (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
            _ => (Vec::new(), Vec::new()),
        }
    }
}

/// Verifies an ES256 JWS signature: `message` is hashed with SHA-256 and
/// `signature` is raw `r || s` (64 bytes) against the point (`x`, `y`), each 32
/// bytes. `false` on any mismatch or malformed input.
pub fn verify_es256(x: &[u8], y: &[u8], message: &[u8], signature: &[u8]) -> bool {
    if x.len() != COORDINATE_LEN || y.len() != COORDINATE_LEN || signature.len() != SIGNATURE_LEN {
        return false;
    }
    let mut point = Vec::with_capacity(1 + 2 * COORDINATE_LEN);
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip() {
        let key = TokenSigningKey::generate().unwrap();
        let (x, y) = key.public_xy();
        assert_eq!((x.len(), y.len()), (32, 32));
        let sig = key.sign_es256(b"header.payload").unwrap();
        assert_eq!(sig.len(), 64);
        assert!(verify_es256(&x, &y, b"header.payload", &sig));
        assert!(!verify_es256(&x, &y, b"header.payload!", &sig));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(!verify_es256(&x, &y, b"header.payload", &bad));
        assert!(!verify_es256(&x, &y, b"header.payload", &sig[..63]));
        assert!(!verify_es256(&x[..31], &y, b"header.payload", &sig));
        assert!(!verify_es256(
            &[0u8; 32],
            &[0u8; 32],
            b"header.payload",
            &sig
        ));
        let other = TokenSigningKey::generate().unwrap();
        let (ox, oy) = other.public_xy();
        assert!(!verify_es256(&ox, &oy, b"header.payload", &sig));
    }

    #[test]
    fn bytes_round_trip() {
        let key = TokenSigningKey::generate().unwrap();
        let again = TokenSigningKey::from_bytes(&key.to_bytes()).unwrap();
        assert_eq!(key.public_xy(), again.public_xy());
        let sig = again.sign_es256(b"m").unwrap();
        let (x, y) = key.public_xy();
        assert!(verify_es256(&x, &y, b"m", &sig));
        assert!(TokenSigningKey::from_bytes(b"garbage").is_err());
        assert!(TokenSigningKey::from_bytes(&[]).is_err());
        // A P-384 PKCS#8 key is not a token key.
        let p384 = EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING)
            .unwrap()
            .to_pkcs8v1()
            .unwrap();
        assert!(TokenSigningKey::from_bytes(p384.as_ref()).is_err());
    }

    /// RFC 7515 appendix A.3: the published ES256 JWS verifies under its key.
    #[test]
    fn rfc7515_a3_example_verifies() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let x = b64("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU");
        let y = b64("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0");
        let input = b"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let sig = b64(
            "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
        );
        assert!(verify_es256(&x, &y, input, &sig));
        assert!(!verify_es256(&x, &y, &input[1..], &sig));
    }
}
