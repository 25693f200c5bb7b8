//! Keys API models (SPEC `definitions`).

use crate::b64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tags: string to string.
pub type Tags = BTreeMap<String, String>;

/// A JSON Web Key as Azure carries it. Responses carry public members only.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JsonWebKey {
    /// Key identifier (versioned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    /// Permitted operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// RSA modulus.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub e: Option<Vec<u8>>,
    /// Private exponent or EC private scalar (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub d: Option<Vec<u8>>,
    /// RSA CRT member (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub dp: Option<Vec<u8>>,
    /// RSA CRT member (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub dq: Option<Vec<u8>>,
    /// RSA CRT member (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub qi: Option<Vec<u8>>,
    /// RSA prime (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub p: Option<Vec<u8>>,
    /// RSA prime (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub q: Option<Vec<u8>>,
    /// Symmetric key (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub k: Option<Vec<u8>>,
    /// BYOK transfer blob (import only).
    #[serde(default, skip_serializing, with = "b64::opt_bytes")]
    pub key_hsm: Option<Vec<u8>>,
    /// Curve name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub x: Option<Vec<u8>>,
    /// EC y coordinate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub y: Option<Vec<u8>>,
}

/// Key attributes. Times are integer Unix seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyAttributes {
    /// Whether the key may be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Creation time (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Last update (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    /// Soft-delete retention in days (read-only).
    #[serde(rename = "recoverableDays", skip_serializing_if = "Option::is_none")]
    pub recoverable_days: Option<u32>,
    /// Deletion recovery level (read-only).
    #[serde(rename = "recoveryLevel", skip_serializing_if = "Option::is_none")]
    pub recovery_level: Option<String>,
    /// Whether the private key may be released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
    /// HSM platform (read-only).
    #[serde(rename = "hsmPlatform", skip_serializing_if = "Option::is_none")]
    pub hsm_platform: Option<String>,
    /// Key attestation (read-only; `GET /keys/{name}/{version}/attestation` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<KeyAttestation>,
}

/// What the HSM holding a key says of it, signed (`attributes.attestation`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyAttestation {
    /// PEM certificates that validate the attestation blobs.
    #[serde(
        rename = "certificatePemFile",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::b64::opt_bytes"
    )]
    pub certificate_pem_file: Option<Vec<u8>>,
    /// The attestation of the private (or secret) key.
    #[serde(
        rename = "privateKeyAttestation",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::b64::opt_bytes"
    )]
    pub private_key_attestation: Option<Vec<u8>>,
    /// The attestation of the public key, for an asymmetric key.
    #[serde(
        rename = "publicKeyAttestation",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::b64::opt_bytes"
    )]
    pub public_key_attestation: Option<Vec<u8>>,
    /// The attestation format's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A key release policy. `data` is kept as sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyReleasePolicy {
    /// Content type of `data`.
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Whether the policy can no longer change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// The policy document, base64url.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub data: Option<Vec<u8>>,
}

/// A key with its attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyBundle {
    /// The public key.
    pub key: JsonWebKey,
    /// Attributes.
    pub attributes: KeyAttributes,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Whether the key backs a certificate (never, here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    /// Release policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<KeyReleasePolicy>,
}

/// A deleted key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletedKeyBundle {
    /// The key as it was.
    #[serde(flatten)]
    pub bundle: KeyBundle,
    /// `https://{vault}/deletedkeys/{name}`.
    #[serde(rename = "recoveryId")]
    pub recovery_id: String,
    /// When it will be purged.
    #[serde(rename = "scheduledPurgeDate")]
    pub scheduled_purge_date: i64,
    /// When it was deleted.
    #[serde(rename = "deletedDate")]
    pub deleted_date: i64,
}

/// A key in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyItem {
    /// Key identifier: base kid for list keys, versioned for list versions.
    pub kid: String,
    /// Attributes.
    pub attributes: KeyAttributes,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Managed flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

/// A deleted key in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletedKeyItem {
    /// The key item.
    #[serde(flatten)]
    pub item: KeyItem,
    /// Recovery id.
    #[serde(rename = "recoveryId")]
    pub recovery_id: String,
    /// When it will be purged.
    #[serde(rename = "scheduledPurgeDate")]
    pub scheduled_purge_date: i64,
    /// When it was deleted.
    #[serde(rename = "deletedDate")]
    pub deleted_date: i64,
}

/// A page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListResult<T> {
    /// Items.
    pub value: Vec<T>,
    /// Absolute link to the next page, absent on the last one.
    #[serde(rename = "nextLink", skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// Body of create.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyCreateParameters {
    /// Key type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    /// RSA or oct size in bits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// RSA public exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_exponent: Option<u64>,
    /// Permitted operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyAttributes>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Release policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<KeyReleasePolicy>,
}

/// Body of import. `Hsm` is matched case-insensitively by the server before decoding.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyImportParameters {
    /// Whether to import as an HSM key.
    #[serde(rename = "Hsm", alias = "hsm")]
    pub hsm: Option<bool>,
    /// The key with private members.
    pub key: Option<JsonWebKey>,
    /// Attributes.
    pub attributes: Option<KeyAttributes>,
    /// Tags.
    pub tags: Option<Tags>,
    /// Release policy.
    pub release_policy: Option<KeyReleasePolicy>,
}

/// Body of update; omitted members stay unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyUpdateParameters {
    /// Permitted operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyAttributes>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Release policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<KeyReleasePolicy>,
}

/// Body of encrypt, decrypt, wrapkey, unwrapkey.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyOperationsParameters {
    /// Algorithm.
    pub alg: String,
    /// Input.
    #[serde(with = "b64::bytes")]
    pub value: Vec<u8>,
    /// IV (CBC, GCM decrypt).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        with = "b64::opt_bytes"
    )]
    pub iv: Option<Vec<u8>>,
    /// Additional authenticated data (GCM).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        with = "b64::opt_bytes"
    )]
    pub aad: Option<Vec<u8>>,
    /// Authentication tag (GCM decrypt).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        with = "b64::opt_bytes"
    )]
    pub tag: Option<Vec<u8>>,
}

/// Result of a key operation.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyOperationResult {
    /// Versioned kid of the key used.
    pub kid: String,
    /// Algorithm used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Output.
    #[serde(with = "b64::bytes")]
    pub value: Vec<u8>,
    /// IV.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub iv: Option<Vec<u8>>,
    /// Tag.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub tag: Option<Vec<u8>>,
    /// AAD echoed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub aad: Option<Vec<u8>>,
}

/// Body of sign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySignParameters {
    /// Algorithm.
    pub alg: String,
    /// The digest to sign.
    #[serde(with = "b64::bytes")]
    pub value: Vec<u8>,
}

/// Body of verify.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyVerifyParameters {
    /// Algorithm.
    pub alg: String,
    /// The digest.
    #[serde(with = "b64::bytes")]
    pub digest: Vec<u8>,
    /// The signature.
    #[serde(with = "b64::bytes")]
    pub value: Vec<u8>,
}

/// Result of verify.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyVerifyResult {
    /// Whether the signature verifies.
    pub value: bool,
}

/// A backup blob (response of backup, body of restore).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupBlob {
    /// The opaque blob.
    #[serde(with = "b64::bytes")]
    pub value: Vec<u8>,
}

/// Body of get random bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRandomBytesRequest {
    /// 1 to 128.
    pub count: i64,
}

/// Random bytes.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RandomBytes {
    /// The bytes.
    #[serde(with = "b64::bytes")]
    pub value: Vec<u8>,
}

/// A rotation policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRotationPolicy {
    /// `https://{vault}/keys/{name}/rotationpolicy` (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Actions and their triggers.
    #[serde(rename = "lifetimeActions", skip_serializing_if = "Option::is_none")]
    pub lifetime_actions: Option<Vec<LifetimeAction>>,
    /// Policy attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyRotationPolicyAttributes>,
}

/// One lifetime action.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LifetimeAction {
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<LifetimeTrigger>,
    /// What.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<LifetimeActionType>,
}

/// A trigger: ISO 8601 durations.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LifetimeTrigger {
    /// Time after the version's creation.
    #[serde(rename = "timeAfterCreate", skip_serializing_if = "Option::is_none")]
    pub time_after_create: Option<String>,
    /// Time before the version's expiry.
    #[serde(rename = "timeBeforeExpiry", skip_serializing_if = "Option::is_none")]
    pub time_before_expiry: Option<String>,
}

/// The action type: `Rotate` or `Notify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LifetimeActionType {
    /// Type name.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Rotation policy attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRotationPolicyAttributes {
    /// Expiry applied to new versions, ISO 8601 duration.
    #[serde(rename = "expiryTime", skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<String>,
    /// Created (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Updated (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_members_never_serialize() {
        let jwk: JsonWebKey = serde_json::from_str(
            r#"{"kty":"oct","k":"AAECAwQFBgcICQoLDA0ODw","d":"AQ","p":"AQ","q":"AQ"}"#,
        )
        .unwrap();
        assert!(jwk.k.is_some());
        let out = serde_json::to_string(&jwk).unwrap();
        assert_eq!(out, r#"{"kty":"oct"}"#);
    }

    #[test]
    fn deleted_bundle_flattens() {
        let d = DeletedKeyBundle {
            bundle: KeyBundle::default(),
            recovery_id: "https://v/deletedkeys/k".into(),
            scheduled_purge_date: 2,
            deleted_date: 1,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["recoveryId"], "https://v/deletedkeys/k");
        assert!(v.get("key").is_some());
    }
}

/// Most items in one rewrap request.
pub const MAX_REWRAP_ITEMS: usize = 1000;

/// Keyshift extension: body of `POST /keys/{name}[/{version}]/rewrap`: items protected by this
/// key, to be returned protected by `target` without their plaintext leaving the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewrapParameters {
    /// The target key's identifier (versioned, or not for its current version), in this
    /// vault or another vault of the deployment.
    pub target: String,
    /// What the items are.
    #[serde(default)]
    pub mode: RewrapMode,
    /// The algorithm the items were made with under the source key.
    pub source_alg: String,
    /// The algorithm to use under the target key.
    pub target_alg: String,
    /// 1 to [`MAX_REWRAP_ITEMS`] items.
    pub items: Vec<RewrapItem>,
}

/// What rewrap items are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewrapMode {
    /// Wrapped keys: unwrapKey under the source, wrapKey under the target.
    #[default]
    Wrapped,
    /// Ciphertexts: decrypt under the source, encrypt under the target.
    Ciphertext,
}

/// One item of a rewrap request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewrapItem {
    /// The source version this item is under, when not the one the path names (a kid of the
    /// same key, or a bare version id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The wrapped key or ciphertext.
    #[serde(with = "b64::bytes")]
    pub value: Vec<u8>,
    /// IV (AES-GCM and AES-CBC ciphertexts).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub iv: Option<Vec<u8>>,
    /// Tag (AES-GCM ciphertexts).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub tag: Option<Vec<u8>>,
    /// Additional authenticated data (AES-GCM), used again under the target.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub aad: Option<Vec<u8>>,
}

/// Result of a rewrap request: one result per item, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewrapResult {
    /// The target key's versioned identifier every item is now under.
    pub target: String,
    /// Per item: the new form, or why this item could not be rewrapped.
    pub items: Vec<RewrapItemResult>,
}

/// One item's result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RewrapItemResult {
    /// The item under the target key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub value: Option<Vec<u8>>,
    /// IV of the new ciphertext (AES-GCM, AES-CBC targets).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub iv: Option<Vec<u8>>,
    /// Tag of the new ciphertext (AES-GCM targets).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64::opt_bytes"
    )]
    pub tag: Option<Vec<u8>>,
    /// Why the item failed (the others are unaffected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RewrapItemError>,
}

/// Why one item failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RewrapItemError {
    /// Azure-style error code (`BadParameter`, `KeyNotFound`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// How secret bytes appear in `Debug` output: never their content.
fn redacted(value: &Option<Vec<u8>>) -> Option<&'static str> {
    value.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for JsonWebKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonWebKey")
            .field("kid", &self.kid)
            .field("kty", &self.kty)
            .field("key_ops", &self.key_ops)
            .field("crv", &self.crv)
            .field("n", &self.n.as_ref().map(Vec::len))
            .field("e", &self.e)
            .field("x", &self.x)
            .field("y", &self.y)
            .field("d", &redacted(&self.d))
            .field("dp", &redacted(&self.dp))
            .field("dq", &redacted(&self.dq))
            .field("qi", &redacted(&self.qi))
            .field("p", &redacted(&self.p))
            .field("q", &redacted(&self.q))
            .field("k", &redacted(&self.k))
            .field("key_hsm", &redacted(&self.key_hsm))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeyOperationsParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyOperationsParameters")
            .field("alg", &self.alg)
            .field("value", &"<redacted>")
            .field("iv", &self.iv.is_some())
            .field("aad", &self.aad.is_some())
            .field("tag", &self.tag.is_some())
            .finish()
    }
}

impl std::fmt::Debug for KeyOperationResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyOperationResult")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("value", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RandomBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomBytes")
            .field("value", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secret_bytes() {
        let secret = vec![0x5a; 16];
        let canary = format!("{:?}", secret);
        let jwk = JsonWebKey {
            kty: Some("RSA".into()),
            d: Some(secret.clone()),
            p: Some(secret.clone()),
            q: Some(secret.clone()),
            dp: Some(secret.clone()),
            dq: Some(secret.clone()),
            qi: Some(secret.clone()),
            k: Some(secret.clone()),
            key_hsm: Some(secret.clone()),
            ..Default::default()
        };
        let ops = KeyOperationsParameters {
            alg: "A256KW".into(),
            value: secret.clone(),
            iv: None,
            aad: None,
            tag: None,
        };
        let result = KeyOperationResult {
            kid: "k".into(),
            alg: None,
            value: secret.clone(),
            iv: None,
            tag: None,
            aad: None,
        };
        let random = RandomBytes {
            value: secret.clone(),
        };
        for shown in [
            format!("{jwk:?}"),
            format!("{ops:?}"),
            format!("{result:?}"),
            format!("{random:?}"),
        ] {
            assert!(
                !shown.contains(&canary) && !shown.contains("90, 90"),
                "{shown}"
            );
            assert!(shown.contains("redacted"), "{shown}");
        }
    }
}

/// Body of `POST /keys/{name}[/{version}]/release`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyReleaseParameters {
    /// The attestation token of the environment the key is released to.
    pub target: String,
    /// A client nonce, echoed in the signed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// `CKM_RSA_AES_KEY_WRAP` (default), `RSA_AES_KEY_WRAP_256` or `RSA_AES_KEY_WRAP_384`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<String>,
}

/// Result of release: a compact JWS whose payload holds the wrapped key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyReleaseResult {
    /// The signed object.
    pub value: String,
}

/// The content type of release policies, the default Azure echoes when none is given.
pub const RELEASE_POLICY_CONTENT_TYPE: &str = "application/json; charset=utf-8";
