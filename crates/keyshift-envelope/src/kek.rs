//! Key encryption keys: the vault keys that wrap master keys (3-level) and data keys
//! (2-level), behind one async trait so that a local key ring and a remote vault are
//! interchangeable.

use std::collections::BTreeMap;
use std::fmt;

use keyshift_crypto::{EncryptionAlgorithm, JwkParts, KeyFamily, KeyMaterial};
use zeroize::Zeroizing;

/// A key wrapped by a KEK.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    /// Full versioned kid the vault answered with (`https://host/keys/name/version`).
    pub kid: String,
    /// Wrap algorithm, e.g. `A256KW` or `RSA-OAEP-256`.
    pub alg: String,
    /// The wrapped key bytes (base64url in JSON).
    #[serde(with = "keyshift_api::b64::bytes")]
    pub bytes: Vec<u8>,
}

/// Why a KEK operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// No such key or version.
    #[error("KEK not found: {0}")]
    NotFound(String),
    /// The caller may not use the key for this operation.
    #[error("KEK access forbidden: {0}")]
    Forbidden(String),
    /// The unwrap failed its integrity check: the wrapped bytes were not made by this key
    /// (a wrong KEK) or were modified.
    #[error("unwrap failed (wrong KEK or modified wrapped key): {0}")]
    UnwrapFailed(String),
    /// The key service cannot be reached or is overloaded; retrying later may work.
    #[error("KEK service unavailable: {0}")]
    Unavailable(String),
    /// Anything else (unsupported algorithm, disabled key, bad response).
    #[error("KEK error: {0}")]
    Other(String),
}

impl KekError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, KekError::Unavailable(_))
    }
}

/// Wraps and unwraps keys under key encryption keys named by kid.
#[async_trait::async_trait]
pub trait Kek: Send + Sync + std::fmt::Debug {
    /// Wraps `key` under the KEK named by `kid` (full versioned kid; the implementation
    /// picks the algorithm from the key type: A256KW for oct, RSA-OAEP-256 for RSA).
    async fn wrap(&self, kid: &str, key: &[u8]) -> Result<WrappedKey, KekError>;
    /// Unwraps with the KEK and algorithm named in `wrapped`.
    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<Zeroizing<Vec<u8>>, KekError>;
}

/// In-process AES-256 KEKs looked up by kid, wrapping with `A256KW`: for tests,
/// examples and offline tools. Keys live in `KeyMaterial` (zeroized on drop); `Debug`
/// lists kids only.
#[derive(Default)]
pub struct LocalKek {
    keys: BTreeMap<String, KeyMaterial>,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

const LOCAL_ALG: EncryptionAlgorithm = EncryptionAlgorithm::A256Kw;

impl LocalKek {
    /// An empty key ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a new random AES-256 key under `kid` (replacing any key of that kid).
    pub fn generate(&mut self, kid: impl Into<String>) -> Result<(), KekError> {
        let key = KeyMaterial::generate_oct(256).map_err(|e| KekError::Other(e.to_string()))?;
        self.keys.insert(kid.into(), key);
        Ok(())
    }

    /// Adds the AES-256 key `key` (32 bytes) under `kid`.
    pub fn insert(&mut self, kid: impl Into<String>, key: &[u8]) -> Result<(), KekError> {
        if key.len() != 32 {
            return Err(KekError::Other("a local KEK must be 32 bytes".into()));
        }
        let mut parts = JwkParts::default();
        parts.family = Some(KeyFamily::Oct);
        parts.k = Some(key.to_vec());
        let key = KeyMaterial::from_jwk(&parts).map_err(|e| KekError::Other(e.to_string()))?;
        self.keys.insert(kid.into(), key);
        Ok(())
    }

    /// Removes the key of `kid`; returns whether it was there.
    pub fn remove(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    fn key(&self, kid: &str) -> Result<&KeyMaterial, KekError> {
        self.keys
            .get(kid)
            .ok_or_else(|| KekError::NotFound(format!("no local KEK {kid}")))
    }
}

#[async_trait::async_trait]
impl Kek for LocalKek {
    async fn wrap(&self, kid: &str, key: &[u8]) -> Result<WrappedKey, KekError> {
        let bytes = self
            .key(kid)?
            .wrap_key(LOCAL_ALG, key)
            .map_err(|e| KekError::Other(e.to_string()))?;
        Ok(WrappedKey {
            kid: kid.to_owned(),
            alg: LOCAL_ALG.name().to_owned(),
            bytes,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<Zeroizing<Vec<u8>>, KekError> {
        let key = self.key(&wrapped.kid)?;
        if wrapped.alg != LOCAL_ALG.name() {
            return Err(KekError::Other(format!(
                "local KEKs unwrap A256KW only, not {}",
                wrapped.alg
            )));
        }
        key.unwrap_key(LOCAL_ALG, &wrapped.bytes)
            .map_err(|e| match e {
                keyshift_crypto::CryptoError::DecryptionFailed => {
                    KekError::UnwrapFailed(format!("{} did not unwrap the key", wrapped.kid))
                }
                other => KekError::Other(other.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID: &str = "https://vault.example/keys/kek/0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn local_wrap_unwrap_and_errors() {
        let mut kek = LocalKek::new();
        kek.insert(KID, &[7u8; 32]).unwrap();
        kek.generate("https://vault.example/keys/other/1").unwrap();
        let wrapped = kek.wrap(KID, &[1u8; 32]).await.unwrap();
        assert_eq!(wrapped.alg, "A256KW");
        assert_eq!(wrapped.kid, KID);
        assert_eq!(wrapped.bytes.len(), 40);
        assert_eq!(kek.unwrap(&wrapped).await.unwrap().as_slice(), &[1u8; 32]);

        let missing = WrappedKey {
            kid: "https://vault.example/keys/missing/1".into(),
            ..wrapped.clone()
        };
        assert!(matches!(
            kek.unwrap(&missing).await,
            Err(KekError::NotFound(_))
        ));
        let wrong = WrappedKey {
            kid: "https://vault.example/keys/other/1".into(),
            ..wrapped.clone()
        };
        assert!(matches!(
            kek.unwrap(&wrong).await,
            Err(KekError::UnwrapFailed(_))
        ));
        let mut flipped = wrapped.clone();
        flipped.bytes[5] ^= 1;
        assert!(matches!(
            kek.unwrap(&flipped).await,
            Err(KekError::UnwrapFailed(_))
        ));
        let other_alg = WrappedKey {
            alg: "RSA-OAEP-256".into(),
            ..wrapped.clone()
        };
        assert!(matches!(
            kek.unwrap(&other_alg).await,
            Err(KekError::Other(_))
        ));
        assert!(kek.insert(KID, &[0u8; 16]).is_err());
        assert!(!KekError::NotFound(String::new()).is_retryable());
        assert!(KekError::Unavailable(String::new()).is_retryable());
        assert!(!format!("{kek:?}").contains("07"));
    }

    #[test]
    fn wrapped_key_json_is_base64url() {
        let wrapped = WrappedKey {
            kid: KID.into(),
            alg: "A256KW".into(),
            bytes: vec![0xfb, 0xff, 0x01],
        };
        let json = serde_json::to_string(&wrapped).unwrap();
        assert!(json.contains("\"bytes\":\"-_8B\""), "{json}");
        let back: WrappedKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, wrapped);
    }
}
