//! Key families, curves and JWA algorithm names as Azure Key Vault spells them.

/// Key family as Azure names it without the `-HSM` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// `RSA`
    Rsa,
    /// `EC`
    Ec,
    /// `oct` (symmetric AES key)
    Oct,
}

/// Elliptic curves a key of family [`KeyFamily::Ec`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
    /// secp256k1.
    P256K,
}

impl Curve {
    /// All curves, in a stable order.
    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::P256K];

    /// The JWK `crv` name: `P-256`, `P-384`, `P-521`, `P-256K`.
    pub fn jwk_name(&self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::P256K => "P-256K",
        }
    }

    /// Parses a JWK `crv` name; `SECP256K1` is accepted as an alias of `P-256K`.
    pub fn from_jwk_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            "P-256K" | "SECP256K1" => Some(Curve::P256K),
            _ => None,
        }
    }

    /// Length in bytes of one affine coordinate (and of the private scalar).
    pub fn coordinate_len(&self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// Size of the curve's field in bits (256, 384, 521, 256).
    pub fn field_bits(&self) -> u32 {
        match self {
            Curve::P256 | Curve::P256K => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }
}

/// Encryption and key-wrap algorithms by their Azure wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionAlgorithm {
    /// `RSA-OAEP`: OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// `RSA-OAEP-256`: OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// `RSA1_5`: RSAES-PKCS1-v1_5.
    Rsa1_5,
    /// `A128GCM`
    A128Gcm,
    /// `A192GCM`
    A192Gcm,
    /// `A256GCM`
    A256Gcm,
    /// `A128KW` (RFC 3394)
    A128Kw,
    /// `A192KW` (RFC 3394)
    A192Kw,
    /// `A256KW` (RFC 3394)
    A256Kw,
    /// `A128KWPAD` (RFC 5649)
    A128KwPad,
    /// `A192KWPAD` (RFC 5649)
    A192KwPad,
    /// `A256KWPAD` (RFC 5649)
    A256KwPad,
    /// `CKM_AES_KEY_WRAP` (RFC 3394 with any AES key size)
    CkmAesKeyWrap,
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649 with any AES key size)
    CkmAesKeyWrapPad,
    /// `A128CBC`: no padding, caller-supplied 16-byte IV.
    A128Cbc,
    /// `A192CBC`: no padding, caller-supplied 16-byte IV.
    A192Cbc,
    /// `A256CBC`: no padding, caller-supplied 16-byte IV.
    A256Cbc,
    /// `A128CBCPAD`: PKCS#7 padding, caller-supplied 16-byte IV.
    A128CbcPad,
    /// `A192CBCPAD`: PKCS#7 padding, caller-supplied 16-byte IV.
    A192CbcPad,
    /// `A256CBCPAD`: PKCS#7 padding, caller-supplied 16-byte IV.
    A256CbcPad,
}

/// How an AES-based [`EncryptionAlgorithm`] works, derived from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AesMode {
    Gcm,
    Kw,
    KwPad,
    Cbc,
    CbcPad,
}

impl EncryptionAlgorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [EncryptionAlgorithm; 20] = [
        EncryptionAlgorithm::RsaOaep,
        EncryptionAlgorithm::RsaOaep256,
        EncryptionAlgorithm::Rsa1_5,
        EncryptionAlgorithm::A128Gcm,
        EncryptionAlgorithm::A192Gcm,
        EncryptionAlgorithm::A256Gcm,
        EncryptionAlgorithm::A128Kw,
        EncryptionAlgorithm::A192Kw,
        EncryptionAlgorithm::A256Kw,
        EncryptionAlgorithm::A128KwPad,
        EncryptionAlgorithm::A192KwPad,
        EncryptionAlgorithm::A256KwPad,
        EncryptionAlgorithm::CkmAesKeyWrap,
        EncryptionAlgorithm::CkmAesKeyWrapPad,
        EncryptionAlgorithm::A128Cbc,
        EncryptionAlgorithm::A192Cbc,
        EncryptionAlgorithm::A256Cbc,
        EncryptionAlgorithm::A128CbcPad,
        EncryptionAlgorithm::A192CbcPad,
        EncryptionAlgorithm::A256CbcPad,
    ];

    /// The Azure wire name, e.g. `RSA-OAEP-256` or `A256KWPAD`.
    pub fn name(&self) -> &'static str {
        match self {
            EncryptionAlgorithm::RsaOaep => "RSA-OAEP",
            EncryptionAlgorithm::RsaOaep256 => "RSA-OAEP-256",
            EncryptionAlgorithm::Rsa1_5 => "RSA1_5",
            EncryptionAlgorithm::A128Gcm => "A128GCM",
            EncryptionAlgorithm::A192Gcm => "A192GCM",
            EncryptionAlgorithm::A256Gcm => "A256GCM",
            EncryptionAlgorithm::A128Kw => "A128KW",
            EncryptionAlgorithm::A192Kw => "A192KW",
            EncryptionAlgorithm::A256Kw => "A256KW",
            EncryptionAlgorithm::A128KwPad => "A128KWPAD",
            EncryptionAlgorithm::A192KwPad => "A192KWPAD",
            EncryptionAlgorithm::A256KwPad => "A256KWPAD",
            EncryptionAlgorithm::CkmAesKeyWrap => "CKM_AES_KEY_WRAP",
            EncryptionAlgorithm::CkmAesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
            EncryptionAlgorithm::A128Cbc => "A128CBC",
            EncryptionAlgorithm::A192Cbc => "A192CBC",
            EncryptionAlgorithm::A256Cbc => "A256CBC",
            EncryptionAlgorithm::A128CbcPad => "A128CBCPAD",
            EncryptionAlgorithm::A192CbcPad => "A192CBCPAD",
            EncryptionAlgorithm::A256CbcPad => "A256CBCPAD",
        }
    }

    /// Parses an Azure wire name (exact, case-sensitive match).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// True for the RSA algorithms (`RSA-OAEP`, `RSA-OAEP-256`, `RSA1_5`).
    pub fn is_rsa(&self) -> bool {
        matches!(
            self,
            EncryptionAlgorithm::RsaOaep
                | EncryptionAlgorithm::RsaOaep256
                | EncryptionAlgorithm::Rsa1_5
        )
    }

    /// True for the AES key-wrap algorithms (KW, KWPAD, CKM_*).
    pub fn is_key_wrap(&self) -> bool {
        matches!(self.aes_mode(), Some(AesMode::Kw | AesMode::KwPad))
    }

    /// The AES mode, or `None` for an RSA algorithm.
    pub(crate) fn aes_mode(&self) -> Option<AesMode> {
        use EncryptionAlgorithm as E;
        Some(match self {
            E::RsaOaep | E::RsaOaep256 | E::Rsa1_5 => return None,
            E::A128Gcm | E::A192Gcm | E::A256Gcm => AesMode::Gcm,
            E::A128Kw | E::A192Kw | E::A256Kw | E::CkmAesKeyWrap => AesMode::Kw,
            E::A128KwPad | E::A192KwPad | E::A256KwPad | E::CkmAesKeyWrapPad => AesMode::KwPad,
            E::A128Cbc | E::A192Cbc | E::A256Cbc => AesMode::Cbc,
            E::A128CbcPad | E::A192CbcPad | E::A256CbcPad => AesMode::CbcPad,
        })
    }

    /// The AES key length in bytes this algorithm requires, or `None` when any AES
    /// key size is accepted (`CKM_*`) or the algorithm is not AES.
    pub(crate) fn aes_key_len(&self) -> Option<usize> {
        use EncryptionAlgorithm as E;
        match self {
            E::A128Gcm | E::A128Kw | E::A128KwPad | E::A128Cbc | E::A128CbcPad => Some(16),
            E::A192Gcm | E::A192Kw | E::A192KwPad | E::A192Cbc | E::A192CbcPad => Some(24),
            E::A256Gcm | E::A256Kw | E::A256KwPad | E::A256Cbc | E::A256CbcPad => Some(32),
            E::RsaOaep | E::RsaOaep256 | E::Rsa1_5 | E::CkmAesKeyWrap | E::CkmAesKeyWrapPad => None,
        }
    }
}

/// Signature algorithms by their Azure wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// `RS384`: RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// `RS512`: RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// `PS256`: RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    Ps256,
    /// `PS384`: RSASSA-PSS with SHA-384, MGF1-SHA-384, 48-byte salt.
    Ps384,
    /// `PS512`: RSASSA-PSS with SHA-512, MGF1-SHA-512, 64-byte salt.
    Ps512,
    /// `ES256`: ECDSA on P-256 with a SHA-256 digest.
    Es256,
    /// `ES384`: ECDSA on P-384 with a SHA-384 digest.
    Es384,
    /// `ES512`: ECDSA on P-521 with a SHA-512 digest.
    Es512,
    /// `ES256K`: ECDSA on secp256k1 with a SHA-256 digest.
    Es256K,
}

impl SignatureAlgorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [SignatureAlgorithm; 10] = [
        SignatureAlgorithm::Rs256,
        SignatureAlgorithm::Rs384,
        SignatureAlgorithm::Rs512,
        SignatureAlgorithm::Ps256,
        SignatureAlgorithm::Ps384,
        SignatureAlgorithm::Ps512,
        SignatureAlgorithm::Es256,
        SignatureAlgorithm::Es384,
        SignatureAlgorithm::Es512,
        SignatureAlgorithm::Es256K,
    ];

    /// The Azure wire name, e.g. `PS256`.
    pub fn name(&self) -> &'static str {
        match self {
            SignatureAlgorithm::Rs256 => "RS256",
            SignatureAlgorithm::Rs384 => "RS384",
            SignatureAlgorithm::Rs512 => "RS512",
            SignatureAlgorithm::Ps256 => "PS256",
            SignatureAlgorithm::Ps384 => "PS384",
            SignatureAlgorithm::Ps512 => "PS512",
            SignatureAlgorithm::Es256 => "ES256",
            SignatureAlgorithm::Es384 => "ES384",
            SignatureAlgorithm::Es512 => "ES512",
            SignatureAlgorithm::Es256K => "ES256K",
        }
    }

    /// Parses an Azure wire name (exact, case-sensitive match).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Length in bytes of the digest this algorithm signs (32, 48 or 64).
    pub fn digest_len(&self) -> usize {
        match self {
            SignatureAlgorithm::Rs256
            | SignatureAlgorithm::Ps256
            | SignatureAlgorithm::Es256
            | SignatureAlgorithm::Es256K => 32,
            SignatureAlgorithm::Rs384 | SignatureAlgorithm::Ps384 | SignatureAlgorithm::Es384 => 48,
            SignatureAlgorithm::Rs512 | SignatureAlgorithm::Ps512 | SignatureAlgorithm::Es512 => 64,
        }
    }

    /// The key family this algorithm signs with.
    pub fn family(&self) -> KeyFamily {
        match self {
            SignatureAlgorithm::Rs256
            | SignatureAlgorithm::Rs384
            | SignatureAlgorithm::Rs512
            | SignatureAlgorithm::Ps256
            | SignatureAlgorithm::Ps384
            | SignatureAlgorithm::Ps512 => KeyFamily::Rsa,
            SignatureAlgorithm::Es256
            | SignatureAlgorithm::Es384
            | SignatureAlgorithm::Es512
            | SignatureAlgorithm::Es256K => KeyFamily::Ec,
        }
    }

    /// For an ECDSA algorithm, the one curve it is defined on.
    pub fn curve(&self) -> Option<Curve> {
        match self {
            SignatureAlgorithm::Es256 => Some(Curve::P256),
            SignatureAlgorithm::Es384 => Some(Curve::P384),
            SignatureAlgorithm::Es512 => Some(Curve::P521),
            SignatureAlgorithm::Es256K => Some(Curve::P256K),
            _ => None,
        }
    }
}
