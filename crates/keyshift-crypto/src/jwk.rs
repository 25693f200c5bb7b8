//! Key components as JWK (RFC 7517/7518) members, already decoded from base64url.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::algorithm::{Curve, KeyFamily};

/// Private JWK members decoded from base64url by the caller (this crate does no
/// base64 or JSON for JWKs). Zeroized on drop; `Debug` shows only which members
/// are present.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub struct JwkParts {
    /// `kty` without the `-HSM` suffix.
    #[zeroize(skip)]
    pub family: Option<KeyFamily>,
    /// `crv` for EC keys.
    #[zeroize(skip)]
    pub crv: Option<Curve>,
    /// RSA modulus.
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    pub e: Option<Vec<u8>>,
    /// RSA private exponent, or EC private scalar.
    pub d: Option<Vec<u8>>,
    /// RSA first prime.
    pub p: Option<Vec<u8>>,
    /// RSA second prime.
    pub q: Option<Vec<u8>>,
    /// RSA `d mod (p-1)`.
    pub dp: Option<Vec<u8>>,
    /// RSA `d mod (q-1)`.
    pub dq: Option<Vec<u8>>,
    /// RSA `q^-1 mod p`.
    pub qi: Option<Vec<u8>>,
    /// EC public x coordinate.
    pub x: Option<Vec<u8>>,
    /// EC public y coordinate.
    pub y: Option<Vec<u8>>,
    /// Symmetric key bytes.
    pub k: Option<Vec<u8>>,
}

impl fmt::Debug for JwkParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members = [
            ("n", &self.n),
            ("e", &self.e),
            ("d", &self.d),
            ("p", &self.p),
            ("q", &self.q),
            ("dp", &self.dp),
            ("dq", &self.dq),
            ("qi", &self.qi),
            ("x", &self.x),
            ("y", &self.y),
            ("k", &self.k),
        ];
        let present: Vec<&str> = members
            .iter()
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| *name)
            .collect();
        f.debug_struct("JwkParts")
            .field("family", &self.family)
            .field("crv", &self.crv)
            .field("present", &present)
            .finish_non_exhaustive()
    }
}

/// The public part of a key, as shown on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent, big-endian unsigned with no leading zero bytes.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// EC point with coordinates left-padded to [`Curve::coordinate_len`].
    Ec {
        /// Curve.
        crv: Curve,
        /// Affine x coordinate.
        x: Vec<u8>,
        /// Affine y coordinate.
        y: Vec<u8>,
    },
    /// A symmetric key has no public part; only its size is shown.
    Oct {
        /// Key size in bits.
        bits: u32,
    },
}

impl PublicKey {
    /// The family of this key.
    pub fn family(&self) -> KeyFamily {
        match self {
            PublicKey::Rsa { .. } => KeyFamily::Rsa,
            PublicKey::Ec { .. } => KeyFamily::Ec,
            PublicKey::Oct { .. } => KeyFamily::Oct,
        }
    }
}

/// Big-endian unsigned integer without its leading zero bytes.
pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Left-pads a big-endian integer to `len` bytes after removing leading zeros;
/// `None` when the value does not fit.
pub(crate) fn left_pad(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    let value = strip_leading_zeros(bytes);
    if value.len() > len {
        return None;
    }
    let mut out = vec![0u8; len];
    out[len - value.len()..].copy_from_slice(value);
    Some(out)
}
