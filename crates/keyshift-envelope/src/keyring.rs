//! The keyring record: one 256-bit master key, wrapped by a KEK in the vault.
//!
//! The record is a small JSON document kept next to the data (`keyring.json`). Rotating
//! the KEK rewraps the master key only ([`Keyring::rewrap`]): the master-key id stays, so
//! every file encrypted under the keyring still opens, and no data is touched.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{EnvelopeError, Result};
use crate::hex;
use crate::kek::{Kek, WrappedKey};

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// Length of a master-key id in bytes (hex in the record: 32 characters).
pub const MASTER_KEY_ID_LEN: usize = 16;
/// The keyring record version this library writes and reads.
pub const KEYRING_VERSION: u32 = 1;

/// An unwrapped master key with its id. The key bytes are zeroized on drop; `Debug`
/// shows the id only.
pub struct MasterKey {
    id: [u8; MASTER_KEY_ID_LEN],
    key: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id_hex())
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new random master key with a new random id.
    pub fn generate() -> Result<Self> {
        let mut id = [0u8; MASTER_KEY_ID_LEN];
        keyshift_crypto::fill_random(&mut id)?;
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        keyshift_crypto::fill_random(key.as_mut())?;
        Ok(Self { id, key })
    }

    /// A master key from its parts: for test vectors and for tools that import a key.
    #[doc(hidden)]
    pub fn from_parts(id: [u8; MASTER_KEY_ID_LEN], key: &[u8]) -> Result<Self> {
        let key: [u8; MASTER_KEY_LEN] = key.try_into().map_err(|_| {
            EnvelopeError::InvalidKeyring(format!(
                "a master key is {MASTER_KEY_LEN} bytes, not {}",
                key.len()
            ))
        })?;
        Ok(Self {
            id,
            key: Zeroizing::new(key),
        })
    }

    /// The master-key id.
    pub fn id(&self) -> &[u8; MASTER_KEY_ID_LEN] {
        &self.id
    }

    /// The master-key id as 32 lowercase hex characters.
    pub fn id_hex(&self) -> String {
        hex::encode(&self.id)
    }

    pub(crate) fn secret(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.key
    }
}

/// A keyring record: a master key wrapped by a KEK.
///
/// JSON form (`keyring.json`):
///
/// ```json
/// {
///   "version": 1,
///   "master_key_id": "6f1c0e1f8a3b4c5d6e7f8091a2b3c4d5",
///   "kek_kid": "https://vault.example/keys/kek/0f1e2d3c4b5a69788796a5b4c3d2e1f0",
///   "wrap_alg": "A256KW",
///   "wrapped_master_key": "base64url...",
///   "created": 1767225600
/// }
/// ```
///
/// Deserializing checks the version, the id and that a wrapped key is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KeyringRecord", into = "KeyringRecord")]
pub struct Keyring {
    master_key_id: [u8; MASTER_KEY_ID_LEN],
    wrapped: WrappedKey,
    created: u64,
}

/// The on-disk form of [`Keyring`].
#[derive(Serialize, Deserialize)]
struct KeyringRecord {
    version: u32,
    master_key_id: String,
    kek_kid: String,
    wrap_alg: String,
    #[serde(with = "keyshift_api::b64::bytes")]
    wrapped_master_key: Vec<u8>,
    created: u64,
}

impl TryFrom<KeyringRecord> for Keyring {
    type Error = EnvelopeError;

    fn try_from(record: KeyringRecord) -> Result<Self> {
        if record.version != KEYRING_VERSION {
            return Err(EnvelopeError::InvalidKeyring(format!(
                "unknown keyring version {} (this library reads version {KEYRING_VERSION})",
                record.version
            )));
        }
        let master_key_id = hex::decode_array(&record.master_key_id).ok_or_else(|| {
            EnvelopeError::InvalidKeyring("master_key_id must be 32 hex characters".into())
        })?;
        if record.kek_kid.is_empty() || record.wrap_alg.is_empty() {
            return Err(EnvelopeError::InvalidKeyring(
                "kek_kid and wrap_alg must not be empty".into(),
            ));
        }
        if record.wrapped_master_key.is_empty() {
            return Err(EnvelopeError::InvalidKeyring(
                "wrapped_master_key is empty".into(),
            ));
        }
        Ok(Self {
            master_key_id,
            wrapped: WrappedKey {
                kid: record.kek_kid,
                alg: record.wrap_alg,
                bytes: record.wrapped_master_key,
            },
            created: record.created,
        })
    }
}

impl From<Keyring> for KeyringRecord {
    fn from(keyring: Keyring) -> Self {
        Self {
            version: KEYRING_VERSION,
            master_key_id: hex::encode(&keyring.master_key_id),
            kek_kid: keyring.wrapped.kid,
            wrap_alg: keyring.wrapped.alg,
            wrapped_master_key: keyring.wrapped.bytes,
            created: keyring.created,
        }
    }
}

impl Keyring {
    /// Creates a keyring: a new random master key wrapped under the KEK `kid` (a full
    /// versioned kid). `created` is the caller's clock, in Unix seconds. Returns the
    /// record and the unwrapped master key (to encrypt with at once).
    pub async fn create(kek: &dyn Kek, kid: &str, created: u64) -> Result<(Keyring, MasterKey)> {
        let master = MasterKey::generate()?;
        let keyring = Self::wrap(kek, kid, created, &master).await?;
        Ok((keyring, master))
    }

    /// Creates a keyring around a given master key (test vectors, imports).
    #[doc(hidden)]
    pub async fn wrap(
        kek: &dyn Kek,
        kid: &str,
        created: u64,
        master: &MasterKey,
    ) -> Result<Keyring> {
        let wrapped = kek.wrap(kid, master.secret()).await?;
        Ok(Self {
            master_key_id: *master.id(),
            wrapped,
            created,
        })
    }

    /// Unwraps the master key with `kek`. A wrong KEK is `Kek(KekError::UnwrapFailed)`.
    pub async fn unwrap_master_key(&self, kek: &dyn Kek) -> Result<MasterKey> {
        let key = kek.unwrap(&self.wrapped).await?;
        MasterKey::from_parts(self.master_key_id, &key)
    }

    /// The same master key (same id) wrapped by another KEK: unwraps with `old_kek`
    /// (under the record's kid) and wraps with `new_kek` under `new_kid`. Files encrypted
    /// under this keyring open with the result. The creation time is kept: it dates the
    /// master key, not the wrapping.
    pub async fn rewrap(
        &self,
        old_kek: &dyn Kek,
        new_kek: &dyn Kek,
        new_kid: &str,
    ) -> Result<Keyring> {
        let master = self.unwrap_master_key(old_kek).await?;
        Self::wrap(new_kek, new_kid, self.created, &master).await
    }

    /// Parses and checks a keyring record.
    pub fn from_json(text: &str) -> Result<Keyring> {
        serde_json::from_str(text).map_err(|e| EnvelopeError::InvalidKeyring(e.to_string()))
    }

    /// The record as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The master-key id.
    pub fn master_key_id(&self) -> &[u8; MASTER_KEY_ID_LEN] {
        &self.master_key_id
    }

    /// The master-key id as 32 lowercase hex characters.
    pub fn master_key_id_hex(&self) -> String {
        hex::encode(&self.master_key_id)
    }

    /// The wrapped master key with the KEK's kid and the wrap algorithm.
    pub fn wrapped_master_key(&self) -> &WrappedKey {
        &self.wrapped
    }

    /// The full versioned kid of the KEK.
    pub fn kek_kid(&self) -> &str {
        &self.wrapped.kid
    }

    /// When the master key was created (Unix seconds, from the creator's clock).
    pub fn created(&self) -> u64 {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::{KekError, LocalKek};

    const OLD: &str = "https://vault.example/keys/old/00000000000000000000000000000001";
    const NEW: &str = "https://vault.example/keys/new/00000000000000000000000000000002";

    fn keks() -> LocalKek {
        let mut kek = LocalKek::new();
        kek.generate(OLD).unwrap();
        kek.generate(NEW).unwrap();
        kek
    }

    #[tokio::test]
    async fn create_unwrap_rewrap_json() {
        let kek = keks();
        let (keyring, master) = Keyring::create(&kek, OLD, 1_767_225_600).await.unwrap();
        assert_eq!(keyring.master_key_id(), master.id());
        assert_eq!(keyring.kek_kid(), OLD);
        let again = keyring.unwrap_master_key(&kek).await.unwrap();
        assert_eq!(again.secret(), master.secret());

        let json = keyring.to_json();
        for field in [
            "\"version\": 1",
            "master_key_id",
            "kek_kid",
            "wrap_alg",
            "wrapped_master_key",
            "\"created\": 1767225600",
        ] {
            assert!(json.contains(field), "{field} in {json}");
        }
        assert_eq!(Keyring::from_json(&json).unwrap(), keyring);

        let rewrapped = keyring.rewrap(&kek, &kek, NEW).await.unwrap();
        assert_eq!(rewrapped.master_key_id(), keyring.master_key_id());
        assert_eq!(rewrapped.kek_kid(), NEW);
        assert_eq!(rewrapped.created(), keyring.created());
        assert_ne!(
            rewrapped.wrapped_master_key().bytes,
            keyring.wrapped_master_key().bytes
        );
        let after = rewrapped.unwrap_master_key(&kek).await.unwrap();
        assert_eq!(after.secret(), master.secret());
        assert!(!format!("{master:?}").contains(&format!("{:?}", master.secret())));
    }

    #[tokio::test]
    async fn wrong_kek_is_unwrap_failed() {
        let kek = keks();
        let (keyring, _) = Keyring::create(&kek, OLD, 0).await.unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&keyring.to_json()).unwrap();
        json["kek_kid"] = NEW.into();
        let swapped = Keyring::from_json(&json.to_string()).unwrap();
        assert!(matches!(
            swapped.unwrap_master_key(&kek).await,
            Err(EnvelopeError::Kek(KekError::UnwrapFailed(_)))
        ));
        let empty = LocalKek::new();
        assert!(matches!(
            keyring.unwrap_master_key(&empty).await,
            Err(EnvelopeError::Kek(KekError::NotFound(_)))
        ));
    }

    #[test]
    fn invalid_records_are_refused() {
        let good = serde_json::json!({
            "version": 1,
            "master_key_id": "00112233445566778899aabbccddeeff",
            "kek_kid": OLD,
            "wrap_alg": "A256KW",
            "wrapped_master_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "created": 0
        });
        assert!(Keyring::from_json(&good.to_string()).is_ok());
        for (field, value) in [
            ("version", serde_json::json!(2)),
            ("master_key_id", serde_json::json!("0011")),
            (
                "master_key_id",
                serde_json::json!("zz112233445566778899aabbccddeeff"),
            ),
            ("kek_kid", serde_json::json!("")),
            ("wrapped_master_key", serde_json::json!("")),
            ("wrapped_master_key", serde_json::json!("!!")),
            ("created", serde_json::json!(-1)),
        ] {
            let mut bad = good.clone();
            bad[field] = value.clone();
            assert!(
                matches!(
                    Keyring::from_json(&bad.to_string()),
                    Err(EnvelopeError::InvalidKeyring(_))
                ),
                "{field} = {value}"
            );
        }
        assert!(Keyring::from_json("{}").is_err());
        assert!(Keyring::from_json("not json").is_err());
    }
}
