//! Key operations: the keys data plane of one vault.

use crate::access::key_resource;
use crate::byok::{is_kek, parse_blob, IMPORT_OP};
use crate::deployment::{admits_keys, from_json, store_error, to_json, Deployment};
use crate::duration::parse_seconds;
use crate::hsm::{hsm_error, NewKey, VersionKey};
use crate::naming::{check_key_name, key_key, new_id, printable, version_key};
use crate::rbac::Action;
use crate::records::{ns, Deletion, KeyRecord, VaultKind, VaultRecord, VersionRecord};
use crate::release_policy::ReleasePolicy;
use crate::sealing::{open_token_ref, open_version, seal_token_ref, seal_version};
use crate::{RequestContext, Result};
use keyshift_api::keys::*;
use keyshift_api::{ApiError, ErrorCode};
use keyshift_crypto::{
    CryptoError, Curve, EncryptionAlgorithm, HsmKeySpec, JwkParts, KeyFamily, KeyMaterial,
    PublicKey, SignatureAlgorithm,
};
use keyshift_store::{Expect, Op, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// How often a write is retried when it loses a compare-and-set race.
const MAX_CAS_RETRIES: usize = 16;
/// Azure's cap on versions kept in a backup blob, and ours on versions per key.
const MAX_VERSIONS: u32 = 500;
/// Page size bounds (SPEC: maxresults 1..25).
const MAX_PAGE: u32 = 25;
/// Entries kept in the unsealed-key cache before it is emptied.
const CACHE_CAPACITY: usize = 10_000;

/// A key version with its material unsealed, for the hot path.
pub(crate) struct CachedVersion {
    /// The key's name with its stored casing.
    pub(crate) name: String,
    pub(crate) record: VersionRecord,
    pub(crate) material: VersionKey,
}

/// Unsealed key versions and latest-version pointers of this process. Every write to a key through
/// this process invalidates that key's entries, and so does the deployment's change follower
/// (`Deployment::follow_changes`) for writes by other processes.
pub(crate) struct KeyCache {
    latest: RwLock<HashMap<String, String>>,
    versions: RwLock<HashMap<String, Arc<CachedVersion>>>,
    /// Invalidations so far, per stripe of keys (by a hash of the key's store key). A version
    /// read from the store while its key was invalidated may predate the write: it is not kept
    /// (else a request that read a key just before another node disabled it would put back the
    /// enabled copy after the invalidation, and it would stay usable until the next one).
    generations: Vec<std::sync::atomic::AtomicU64>,
}

/// Stripes of [`KeyCache::generations`]: enough that unrelated keys rarely share one.
const CACHE_STRIPES: usize = 64;

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            latest: Default::default(),
            versions: Default::default(),
            generations: (0..CACHE_STRIPES).map(|_| Default::default()).collect(),
        }
    }
}

impl KeyCache {
    fn latest(&self, key: &str) -> Option<String> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn version(&self, key: &str) -> Option<Arc<CachedVersion>> {
        self.versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn stripe(&self, key_key: &str) -> &std::sync::atomic::AtomicU64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key_key.hash(&mut h);
        &self.generations[(h.finish() % CACHE_STRIPES as u64) as usize]
    }

    /// What to pass to [`KeyCache::insert`]: taken before reading the key from the store.
    fn generation(&self, key_key: &str) -> u64 {
        self.stripe(key_key)
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps `entry`, read from the store after [`KeyCache::generation`] returned `read_at`,
    /// unless the key was invalidated since.
    fn insert(
        &self,
        key_key: &str,
        version_key: String,
        entry: Arc<CachedVersion>,
        is_latest: bool,
        read_at: u64,
    ) {
        // Under the lock that `invalidate` takes too, so none slips between check and insert.
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        if self.generation(key_key) != read_at {
            return;
        }
        let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
        // A full cache gives up one entry, the first in hash order (in effect a random one), so
        // that a working set a little larger than the cache keeps most of its hits instead of
        // losing them all at once. The version's material is zeroized when its last user drops it.
        if versions.len() >= CACHE_CAPACITY && !versions.contains_key(&version_key) {
            if let Some(victim) = versions.keys().next().cloned() {
                versions.remove(&victim);
            }
        }
        if is_latest && latest.len() >= CACHE_CAPACITY && !latest.contains_key(key_key) {
            if let Some(victim) = latest.keys().next().cloned() {
                latest.remove(&victim);
            }
        }
        if is_latest {
            latest.insert(key_key.to_owned(), entry.record.version.clone());
        }
        versions.insert(version_key, entry);
    }

    /// Versions held now.
    pub(crate) fn len(&self) -> usize {
        self.versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub(crate) fn invalidate(&self, key_key: &str) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        self.stripe(key_key)
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_key);
        let prefix = format!("{key_key}/");
        versions.retain(|k, _| !k.starts_with(&prefix));
    }

    /// Forgets everything (the change feed lost track: anything may have changed).
    pub(crate) fn clear(&self) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        for g in &self.generations {
            g.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        versions.clear();
    }
}

#[cfg(test)]
mod cache_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(version: &str) -> Arc<CachedVersion> {
        let material = crate::hsm::VersionKey::Software(
            keyshift_crypto::KeyMaterial::generate_oct(256).unwrap(),
        );
        Arc::new(CachedVersion {
            name: "k".into(),
            record: VersionRecord {
                version: version.into(),
                kty: "oct".into(),
                key_ops: vec![],
                public: Default::default(),
                size_bits: 256,
                enabled: true,
                nbf: None,
                exp: None,
                exportable: None,
                created: 0,
                updated: 0,
                tags: None,
                release_policy: None,
                sealed: vec![],
                hsm_token: None,
            },
            material,
        })
    }

    #[test]
    fn a_version_read_before_an_invalidation_is_not_kept_after_it() {
        let cache = KeyCache::default();
        // A request reads the key, another node's write is followed (invalidate), then the
        // request's older copy arrives.
        let read_at = cache.generation("v/k");
        cache.invalidate("v/k");
        cache.insert("v/k", "v/k/1".into(), entry("1"), true, read_at);
        assert!(cache.version("v/k/1").is_none() && cache.latest("v/k").is_none());
        // One read after the invalidation is kept, until the next one.
        let read_at = cache.generation("v/k");
        cache.insert("v/k", "v/k/1".into(), entry("1"), true, read_at);
        assert!(cache.version("v/k/1").is_some());
        assert_eq!(cache.latest("v/k").as_deref(), Some("1"));
        cache.invalidate("v/k");
        assert!(cache.version("v/k/1").is_none() && cache.latest("v/k").is_none());
        // `clear` drops copies in flight too.
        let read_at = cache.generation("v/k");
        cache.clear();
        cache.insert("v/k", "v/k/1".into(), entry("1"), true, read_at);
        assert!(cache.version("v/k/1").is_none());
    }

    #[test]
    fn a_full_cache_gives_up_one_entry_not_all() {
        let cache = KeyCache::default();
        let put = |i: usize| {
            let kk = format!("v/k{i}");
            let read_at = cache.generation(&kk);
            cache.insert(&kk, format!("{kk}/1"), entry("1"), true, read_at);
        };
        for i in 0..CACHE_CAPACITY {
            put(i);
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
        for i in CACHE_CAPACITY..CACHE_CAPACITY + 100 {
            put(i);
            assert_eq!(cache.len(), CACHE_CAPACITY);
            assert!(cache.version(&format!("v/k{i}/1")).is_some());
        }
        // 100 entries were given up, any of them (a new one too): never everything.
        let held = |range: std::ops::Range<usize>| {
            range
                .filter(|i| cache.version(&format!("v/k{i}/1")).is_some())
                .count()
        };
        let (old, new) = (
            held(0..CACHE_CAPACITY),
            held(CACHE_CAPACITY..CACHE_CAPACITY + 100),
        );
        assert_eq!(old + new, CACHE_CAPACITY);
        assert!(old >= CACHE_CAPACITY - 100, "{old}");
        assert!(cache.latest.read().unwrap().len() <= CACHE_CAPACITY);
    }
}

/// The crypto operations of the keys API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOperation {
    /// encrypt
    Encrypt,
    /// decrypt
    Decrypt,
    /// wrapkey
    WrapKey,
    /// unwrapkey
    UnwrapKey,
}

impl KeyOperation {
    fn key_op(self) -> &'static str {
        match self {
            KeyOperation::Encrypt => "encrypt",
            KeyOperation::Decrypt => "decrypt",
            KeyOperation::WrapKey => "wrapKey",
            KeyOperation::UnwrapKey => "unwrapKey",
        }
    }
}

const ALL_KEY_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

/// Key type as requested, with whether it is an HSM type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyType {
    family: KeyFamily,
    hsm: bool,
}

impl KeyType {
    pub(crate) fn parse(kty: &str) -> Result<Self> {
        // Untrusted text: split only at a character boundary.
        let (base, hsm) = match kty
            .len()
            .checked_sub(4)
            .and_then(|i| kty.split_at_checked(i))
        {
            Some((base, suffix)) if suffix.eq_ignore_ascii_case("-HSM") => (base, true),
            _ => (kty, false),
        };
        let family = if base.eq_ignore_ascii_case("RSA") {
            KeyFamily::Rsa
        } else if base.eq_ignore_ascii_case("EC") {
            KeyFamily::Ec
        } else if base.eq_ignore_ascii_case("oct") {
            KeyFamily::Oct
        } else {
            return Err(ApiError::bad_parameter(format!(
                "The key type '{}' is not supported: use RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM.",
                printable(kty)
            )));
        };
        Ok(KeyType { family, hsm })
    }

    fn name(self) -> &'static str {
        match (self.family, self.hsm) {
            (KeyFamily::Rsa, false) => "RSA",
            (KeyFamily::Rsa, true) => "RSA-HSM",
            (KeyFamily::Ec, false) => "EC",
            (KeyFamily::Ec, true) => "EC-HSM",
            (KeyFamily::Oct, false) => "oct",
            (KeyFamily::Oct, true) => "oct-HSM",
        }
    }

    fn check_vault(self, vault: &VaultRecord) -> Result<()> {
        if vault.kind == VaultKind::ManagedHsm && !self.hsm {
            return Err(ApiError::bad_parameter(format!(
                "Managed HSM '{}' holds HSM-protected keys only: use {}-HSM.",
                vault.name,
                self.name()
            )));
        }
        Ok(())
    }

    fn default_ops(self) -> Vec<String> {
        let ops: &[&str] = match self.family {
            KeyFamily::Rsa => &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ],
            KeyFamily::Ec => &["sign", "verify"],
            KeyFamily::Oct => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
        };
        ops.iter().map(|s| s.to_string()).collect()
    }

    fn allows_op(self, op: &str) -> bool {
        match self.family {
            KeyFamily::Rsa => true,
            KeyFamily::Ec => matches!(op, "sign" | "verify" | "export"),
            KeyFamily::Oct => matches!(
                op,
                "encrypt" | "decrypt" | "wrapKey" | "unwrapKey" | "export"
            ),
        }
    }
}

fn canonical_key_ops(kty: KeyType, ops: Option<&[String]>) -> Result<Vec<String>> {
    let Some(ops) = ops else {
        return Ok(kty.default_ops());
    };
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        let canonical = ALL_KEY_OPS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(op))
            .ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "The key operation '{}' is not valid.",
                    printable(op)
                ))
            })?;
        if !kty.allows_op(canonical) {
            return Err(ApiError::bad_parameter(format!(
                "The key operation '{canonical}' is not supported by key type {}.",
                kty.name()
            )));
        }
        if !out.iter().any(|o| o == canonical) {
            out.push(canonical.to_string());
        }
    }
    Ok(out)
}

fn item_error(e: &ApiError) -> RewrapItemResult {
    RewrapItemResult {
        error: Some(RewrapItemError {
            code: e.code.as_str().to_owned(),
            message: e.message.clone(),
        }),
        ..Default::default()
    }
}

/// The version a rewrap item names: a bare 32-hex version, or a kid of key `name`.
fn item_version(kid: &str, name: &str) -> Option<String> {
    let version = match kid.rsplit_once("/keys/") {
        None => kid,
        Some((_, path)) => {
            let (key, version) = path.trim_end_matches('/').split_once('/')?;
            if !key.eq_ignore_ascii_case(name) {
                return None;
            }
            version
        }
    };
    (version.len() == 32 && version.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| version.to_ascii_lowercase())
}

/// `CKM_RSA_AES_KEY_WRAP` unwrap with a key-exchange key held in a token: the token opens the
/// OAEP-wrapped AES key, which opens the rest here (the key inside is imported into the token
/// next).
async fn token_rsa_aes_unwrap(
    kek: &VersionKey,
    wrap: keyshift_crypto::transfer::TransferWrap,
    blob: &[u8],
) -> keyshift_crypto::Result<Zeroizing<Vec<u8>>> {
    use keyshift_crypto::transfer::{aes_kwp_unwrap, OaepHash};
    let alg = match wrap.hash() {
        OaepHash::Sha1 => EncryptionAlgorithm::RsaOaep,
        OaepHash::Sha256 => EncryptionAlgorithm::RsaOaep256,
        OaepHash::Sha384 => {
            return Err(CryptoError::Unsupported(format!(
                "{} needs RSA-OAEP with SHA-384, which a key of the HSM does not offer",
                wrap.name()
            )))
        }
    };
    let k = (kek.size_bits() as usize).div_ceil(8);
    if blob.len() <= k {
        return Err(CryptoError::DecryptionFailed);
    }
    let (head, tail) = blob.split_at(k);
    let ephemeral = kek.unwrap_key(alg, head).await?;
    aes_kwp_unwrap(&ephemeral, tail).map_err(|_| CryptoError::DecryptionFailed)
}

/// The `CKA_LABEL` of a key's token objects: where it belongs, for whoever lists the token.
fn token_label(vault: &VaultRecord, name: &str) -> String {
    format!("keyshift/{}/{name}", vault.name)
}

fn crypto_error(e: CryptoError) -> ApiError {
    hsm_error(e)
}

fn public_jwk(public: &PublicKey) -> JsonWebKey {
    match public {
        PublicKey::Rsa { n, e } => JsonWebKey {
            n: Some(n.clone()),
            e: Some(e.clone()),
            ..Default::default()
        },
        PublicKey::Ec { crv, x, y } => JsonWebKey {
            crv: Some(crv.jwk_name().to_owned()),
            x: Some(x.clone()),
            y: Some(y.clone()),
            ..Default::default()
        },
        PublicKey::Oct { .. } => JsonWebKey::default(),
    }
}

fn recovery_level(vault: &VaultRecord) -> String {
    let base = if vault.retention_days < 90 {
        "CustomizedRecoverable"
    } else {
        "Recoverable"
    };
    if vault.purge_protection {
        base.to_owned()
    } else {
        format!("{base}+Purgeable")
    }
}

fn check_window(nbf: Option<i64>, exp: Option<i64>) -> Result<()> {
    if let (Some(nbf), Some(exp)) = (nbf, exp) {
        if nbf > exp {
            return Err(ApiError::bad_parameter(
                "The key's 'nbf' must not be later than its 'exp'.",
            ));
        }
    }
    Ok(())
}

/// A release policy in the form the vault stores and returns: the document checked against the
/// grammar and normalised (version 1.0.0), the content type defaulted, `immutable` explicit.
fn normalize_policy(p: &KeyReleasePolicy) -> Result<KeyReleasePolicy> {
    let content_type = match p.content_type.as_deref() {
        None | Some("") => RELEASE_POLICY_CONTENT_TYPE.to_owned(),
        Some(ct) if ct.to_ascii_lowercase().starts_with("application/json") => ct.to_owned(),
        Some(ct) => {
            return Err(ApiError::bad_parameter(format!(
                "The release policy's contentType '{}' is not supported: use {RELEASE_POLICY_CONTENT_TYPE}.",
                printable(ct)
            )))
        }
    };
    let data = p
        .data
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::bad_parameter("The release policy needs its 'data'."))?;
    let policy = ReleasePolicy::parse(data).map_err(|why| {
        ApiError::bad_parameter(format!("The release policy is invalid: {why}."))
            .with_inner("InvalidReleasePolicy")
    })?;
    Ok(KeyReleasePolicy {
        content_type: Some(content_type),
        immutable: Some(p.immutable.unwrap_or(false)),
        data: Some(to_json(&policy.to_json())?),
    })
}

/// Azure's rules on exportable keys and release policies; returns the policy to store.
fn check_release_policy(
    kty: KeyType,
    vault: &VaultRecord,
    exportable: Option<bool>,
    policy: Option<&KeyReleasePolicy>,
) -> Result<Option<KeyReleasePolicy>> {
    let exportable = exportable.unwrap_or(false);
    if exportable && !kty.hsm {
        return Err(ApiError::bad_parameter(format!(
            "Only HSM-protected keys may be exportable: use {}-HSM instead of {}.",
            kty.name(),
            kty.name()
        )));
    }
    if exportable && kty.family == KeyFamily::Oct && vault.kind != VaultKind::ManagedHsm {
        return Err(ApiError::bad_parameter(
            "oct-HSM keys may be exportable in a managed HSM only.",
        ));
    }
    match (exportable, policy) {
        (true, None) => Err(ApiError::bad_parameter(
            "AKV.SKR.1004: Exportable keys must have release policy.",
        )),
        (false, Some(_)) => Err(ApiError::bad_parameter(
            "Non-exportable keys must not have release policy",
        )),
        (_, policy) => policy.map(normalize_policy).transpose(),
    }
}

/// A key-exchange key is an RSA-HSM key, never exportable; returns whether `new` is one.
fn check_kek(kty: KeyType, key_ops: &[String], exportable: Option<bool>) -> Result<bool> {
    if !is_kek(key_ops)? {
        return Ok(false);
    }
    if kty.family != KeyFamily::Rsa || !kty.hsm {
        return Err(ApiError::bad_parameter(
            "A key-exchange key (key_ops [\"import\"]) must be of type RSA-HSM.",
        ));
    }
    if exportable == Some(true) {
        return Err(ApiError::bad_parameter(
            "A key-exchange key is never exportable.",
        ));
    }
    Ok(true)
}

fn max_results(value: Option<i64>) -> Result<u32> {
    match value {
        None => Ok(MAX_PAGE),
        Some(n) if (1..=i64::from(MAX_PAGE)).contains(&n) => Ok(n as u32),
        Some(_) => Err(ApiError::bad_parameter(
            "maxresults must be between 1 and 25.",
        )),
    }
}

fn decode_skiptoken(token: Option<&str>) -> Result<Option<String>> {
    token
        .map(|t| {
            keyshift_api::b64::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::bad_parameter("The $skiptoken is invalid."))
        })
        .transpose()
}

fn next_link(
    ctx: &RequestContext,
    path: &str,
    max: Option<i64>,
    last: Option<&str>,
) -> Option<String> {
    let last = last?;
    let mut link = format!(
        "{}{path}?api-version={}",
        ctx.base_url,
        keyshift_api::version::LATEST
    );
    if let Some(max) = max {
        link.push_str(&format!("&maxresults={max}"));
    }
    link.push_str("&$skiptoken=");
    link.push_str(&keyshift_api::b64::encode(last.as_bytes()));
    Some(link)
}

/// The payload of a backup blob; sealed as a whole under the security-domain key.
#[derive(Serialize, Deserialize)]
pub(crate) struct BackupPayload {
    pub(crate) name: String,
    /// The version that was current when the backup was taken.
    pub(crate) latest: String,
    created: i64,
    rotation_policy: Option<KeyRotationPolicy>,
    versions: Vec<BackupVersion>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BackupVersion {
    record: VersionRecord,
    #[serde(with = "keyshift_api::b64::bytes")]
    material: Vec<u8>,
}

impl Drop for BackupVersion {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.material);
    }
}

const BACKUP_MAGIC: &[u8] = b"KEYSHIFT-KEY-BACKUP\x01";

fn backup_aad(sd_id: &str) -> Vec<u8> {
    let mut aad = BACKUP_MAGIC.to_vec();
    aad.extend_from_slice(sd_id.as_bytes());
    aad
}

/// What a new version is made of.
struct NewVersion {
    kty: KeyType,
    material: NewKey,
    key_ops: Vec<String>,
    attributes: KeyAttributes,
    tags: Option<Tags>,
    release_policy: Option<KeyReleasePolicy>,
}

impl Deployment {
    fn version_record(
        &self,
        version: &str,
        new: &NewVersion,
        sealed: Vec<u8>,
        hsm_token: Option<String>,
    ) -> VersionRecord {
        let now = self.clock.now();
        VersionRecord {
            version: version.to_owned(),
            kty: new.kty.name().to_owned(),
            key_ops: new.key_ops.clone(),
            public: public_jwk(&new.material.public_key()),
            size_bits: new.material.size_bits(),
            enabled: new.attributes.enabled.unwrap_or(true),
            nbf: new.attributes.nbf,
            exp: new.attributes.exp,
            exportable: new.attributes.exportable,
            created: now,
            updated: now,
            tags: new.tags.clone(),
            release_policy: new.release_policy.clone(),
            sealed,
            hsm_token,
        }
    }

    /// Builds the wire bundle of a version.
    pub(crate) fn bundle(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        v: &VersionRecord,
    ) -> KeyBundle {
        let mut key = v.public.clone();
        key.kid = Some(format!("{}/keys/{name}/{}", ctx.base_url, v.version));
        key.kty = Some(v.kty.clone());
        key.key_ops = Some(v.key_ops.clone());
        KeyBundle {
            key,
            attributes: self.attributes(vault, v),
            tags: v.tags.clone(),
            managed: None,
            release_policy: v.release_policy.clone(),
        }
    }

    pub(crate) fn attributes(&self, vault: &VaultRecord, v: &VersionRecord) -> KeyAttributes {
        KeyAttributes {
            enabled: Some(v.enabled),
            nbf: v.nbf,
            exp: v.exp,
            created: Some(v.created),
            updated: Some(v.updated),
            recoverable_days: Some(vault.retention_days),
            recovery_level: Some(recovery_level(vault)),
            exportable: v.exportable,
            hsm_platform: v.hsm_token.as_ref().map(|token| {
                self.hsm()
                    .filter(|h| &h.token == token)
                    .map(|h| h.platform.clone())
                    .unwrap_or_else(|| format!("pkcs11:{token}"))
            }),
            attestation: None,
        }
    }

    async fn load_key(&self, vault: &VaultRecord, name: &str) -> Result<Option<(KeyRecord, i64)>> {
        match self
            .store
            .get(ns::KEY, &key_key(&vault.id, name))
            .await
            .map_err(store_error)?
        {
            Some(r) => Ok(Some((from_json(&r.value)?, r.revision))),
            None => Ok(None),
        }
    }

    async fn require_key(&self, vault: &VaultRecord, name: &str) -> Result<(KeyRecord, i64)> {
        check_key_name(name).map_err(|_| ApiError::key_not_found(&printable(name)))?;
        self.load_key(vault, name)
            .await?
            .ok_or_else(|| ApiError::key_not_found(name))
    }

    async fn load_version(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: &str,
    ) -> Result<Option<(VersionRecord, i64)>> {
        if version.len() != 32 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let key = version_key(&vault.id, name, &version.to_ascii_lowercase());
        match self
            .store
            .get(ns::KEY_VERSION, &key)
            .await
            .map_err(store_error)?
        {
            Some(r) => Ok(Some((from_json(&r.value)?, r.revision))),
            None => Ok(None),
        }
    }

    /// The key record and the requested (or latest) version.
    async fn resolve(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<(KeyRecord, VersionRecord, i64)> {
        let (key, record, revision, _) =
            self.resolve_with_key_revision(vault, name, version).await?;
        Ok((key, record, revision))
    }

    /// Like `resolve`, with the key record's revision too.
    async fn resolve_with_key_revision(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<(KeyRecord, VersionRecord, i64, i64)> {
        let (key, key_revision) = self.require_key(vault, name).await?;
        let version = match version {
            Some(v) if !v.is_empty() => v.to_owned(),
            _ => key.latest.clone(),
        };
        let (record, revision) = self
            .load_version(vault, &key.name, &version)
            .await?
            .ok_or_else(|| {
                ApiError::key_not_found(&format!("{}/{}", key.name, printable(&version)))
            })?;
        Ok((key, record, revision, key_revision))
    }

    /// The version to use for a crypto operation, unsealed, from the cache when possible.
    pub(crate) async fn usable(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<(String, Arc<CachedVersion>)> {
        let kk = key_key(&vault.id, name);
        let wanted = version
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase)
            .or_else(|| self.cache.latest(&kk));
        if let Some(v) = &wanted {
            if let Some(hit) = self.cache.version(&format!("{kk}/{v}")) {
                self.cache_counters
                    .hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok((hit.name.clone(), hit));
            }
        }
        self.cache_counters
            .misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let read_at = self.cache.generation(&kk);
        let (key, record, _) = self.resolve(vault, name, version).await?;
        let sd = self.security_domain_key(&vault.security_domain).await?;
        let material = match &record.hsm_token {
            None => VersionKey::Software(open_version(
                &sd,
                &vault.id,
                &key.name,
                &record.version,
                &record.sealed,
            )?),
            Some(token) => {
                let reference =
                    open_token_ref(&sd, &vault.id, &key.name, &record.version, &record.sealed)?;
                self.open_token_key(token, reference).await?
            }
        };
        let is_latest = record.version == key.latest;
        let vk = version_key(&vault.id, &key.name, &record.version);
        let entry = Arc::new(CachedVersion {
            name: key.name.clone(),
            record,
            material,
        });
        // A disabled version is not kept in memory: it is refused anyway, and its material should
        // not outlive the change that disabled it.
        if entry.record.enabled {
            self.cache
                .insert(&kk, vk, entry.clone(), is_latest, read_at);
        }
        Ok((key.name, entry))
    }

    /// Adds a version to a key, creating the key when it does not exist. A token object made for
    /// a version that is not recorded is destroyed.
    async fn add_version(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        new: NewVersion,
    ) -> Result<KeyBundle> {
        let made = match &new.material {
            NewKey::Token(key) => Some(key.clone()),
            NewKey::Software(_) => None,
        };
        let added = self.record_version(ctx, vault, name, new).await;
        if let (Err(_), Some(key)) = (&added, made) {
            self.destroy_unrecorded(&key).await;
        }
        added
    }

    async fn record_version(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        mut new: NewVersion,
    ) -> Result<KeyBundle> {
        check_key_name(name)?;
        new.kty.check_vault(vault)?;
        check_window(new.attributes.nbf, new.attributes.exp)?;
        check_kek(new.kty, &new.key_ops, new.attributes.exportable)?;
        new.release_policy = check_release_policy(
            new.kty,
            vault,
            new.attributes.exportable,
            new.release_policy.as_ref(),
        )?;
        let sd = self.security_domain_key(&vault.security_domain).await?;
        let kk = key_key(&vault.id, name);
        let mut vault_unchanged = admits_keys(vault);
        for _ in 0..MAX_CAS_RETRIES {
            let version = new_id()?;
            let existing = self.load_key(vault, name).await?;
            let key_name = existing
                .as_ref()
                .map(|(k, _)| k.name.clone())
                .unwrap_or_else(|| name.to_owned());
            let vk = version_key(&vault.id, &key_name, &version);
            let (sealed, hsm_token, object_op) = match &new.material {
                NewKey::Software(m) => (
                    seal_version(&sd, &vault.id, &key_name, &version, m)?,
                    None,
                    None,
                ),
                NewKey::Token(k) => {
                    let token = self.hsm().ok_or_else(ApiError::internal)?.token.clone();
                    let op = self.object_user_ops(&token, &k.reference, &vk).await?;
                    (
                        seal_token_ref(&sd, &vault.id, &key_name, &version, &k.reference)?,
                        Some(token),
                        Some(op),
                    )
                }
            };
            let record = self.version_record(&version, &new, sealed, hsm_token);
            let mut ops = vec![Op::Put {
                ns: ns::KEY_VERSION,
                key: vk,
                value: to_json(&record)?,
                expect: Expect::Absent,
            }];
            ops.extend(object_op);
            ops.push(vault_unchanged.clone());
            match existing {
                Some((mut key, revision)) => {
                    if key.version_count >= MAX_VERSIONS {
                        return Err(ApiError::bad_parameter(format!(
                            "Key '{key_name}' has {MAX_VERSIONS} versions, the most a key may have."
                        )));
                    }
                    key.latest = version.clone();
                    key.version_count += 1;
                    ops.push(Op::Put {
                        ns: ns::KEY,
                        key: kk.clone(),
                        value: to_json(&key)?,
                        expect: Expect::Revision(revision),
                    });
                }
                None => {
                    let key = KeyRecord {
                        name: key_name.clone(),
                        latest: version.clone(),
                        version_count: 1,
                        created: record.created,
                        rotation_policy: None,
                        deleted: None,
                    };
                    ops.push(Op::Put {
                        ns: ns::KEY,
                        key: kk.clone(),
                        value: to_json(&key)?,
                        expect: Expect::Absent,
                    });
                    ops.push(Op::Check {
                        ns: ns::DELETED_KEY,
                        key: kk.clone(),
                        expect: Expect::Absent,
                    });
                }
            }
            match self.commit_as(ctx, ops).await {
                Ok(()) => {
                    self.cache.invalidate(&kk);
                    ctx.note_version(&key_name, &record.version);
                    return Ok(self.bundle(ctx, vault, &key_name, &record));
                }
                Err(StoreError::Conflict { ns, .. }) if ns == ns::DELETED_KEY => {
                    return Err(deleted_but_recoverable(name));
                }
                // This copy of the vault record is stale: go on only if the key would still be
                // sealed as it is here.
                Err(StoreError::Conflict { ns, .. }) if ns == ns::VAULT => {
                    vault_unchanged = self.recheck_vault(vault).await?;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            "Too many concurrent changes to this key; retry.",
        ))
    }

    /// `POST /keys/{name}/create`
    pub async fn create_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        p: KeyCreateParameters,
    ) -> Result<KeyBundle> {
        self.authorize(ctx, vault, Action::Create, &key_resource(name))
            .await?;
        check_key_name(name)?;
        let kty = KeyType::parse(
            p.kty
                .as_deref()
                .ok_or_else(|| ApiError::bad_parameter("The key type 'kty' is required."))?,
        )?;
        let spec = match kty.family {
            KeyFamily::Rsa => {
                if let Some(e) = p.public_exponent {
                    if e != 65537 {
                        return Err(ApiError::bad_parameter(
                            "Only the public exponent 65537 is supported.",
                        ));
                    }
                }
                let size = p.key_size.unwrap_or(2048);
                if ![2048, 3072, 4096].contains(&size) {
                    return Err(ApiError::bad_parameter(format!(
                        "RSA key size {size} is not supported: use 2048, 3072 or 4096."
                    )));
                }
                HsmKeySpec::Rsa { bits: size }
            }
            KeyFamily::Ec => {
                let crv = match p.crv.as_deref() {
                    None => Curve::P256,
                    Some(name) => Curve::from_jwk_name(name).ok_or_else(|| {
                        ApiError::bad_parameter(format!(
                            "The curve '{}' is not supported: use P-256, P-384, P-521 or P-256K.",
                            printable(name)
                        ))
                    })?,
                };
                HsmKeySpec::Ec { curve: crv }
            }
            KeyFamily::Oct => {
                let size = p.key_size.unwrap_or(256);
                if ![128, 192, 256].contains(&size) {
                    return Err(ApiError::bad_parameter(format!(
                        "AES key size {size} is not supported: use 128, 192 or 256."
                    )));
                }
                HsmKeySpec::Oct { bits: size }
            }
        };
        let key_ops = canonical_key_ops(kty, p.key_ops.as_deref())?;
        kty.check_vault(vault)?;
        let home = self.home(vault, kty.hsm)?;
        let exportable = p
            .attributes
            .as_ref()
            .and_then(|a| a.exportable)
            .unwrap_or(false);
        let material = self
            .generate_key(&home, spec, &token_label(vault, name), exportable)
            .await?;
        let new = NewVersion {
            kty,
            material,
            key_ops,
            attributes: p.attributes.unwrap_or_default(),
            tags: p.tags,
            release_policy: p.release_policy,
        };
        self.add_version(ctx, vault, name, new).await
    }

    /// `PUT /keys/{name}`
    pub async fn import_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        p: KeyImportParameters,
    ) -> Result<KeyBundle> {
        self.authorize(ctx, vault, Action::Import, &key_resource(name))
            .await?;
        check_key_name(name)?;
        let jwk = p
            .key
            .ok_or_else(|| ApiError::bad_parameter("The 'key' to import is required."))?;
        let mut kty = KeyType::parse(
            jwk.kty
                .as_deref()
                .ok_or_else(|| ApiError::bad_parameter("The key's 'kty' is required."))?,
        )?;
        if p.hsm == Some(true) {
            kty.hsm = true;
        }
        let key_ops = canonical_key_ops(kty, jwk.key_ops.as_deref())?;
        if is_kek(&key_ops)? {
            return Err(ApiError::bad_parameter(
                "A key-exchange key (key_ops [\"import\"]) must be created in this vault, not imported.",
            ));
        }
        if let Some(blob) = &jwk.key_hsm {
            // A transfer blob is HSM-protected material: it becomes an -HSM key.
            kty.hsm = true;
            let material = self
                .open_transfer_blob(vault, kty, jwk.crv.as_deref(), blob)
                .await?;
            let exportable = p.attributes.as_ref().and_then(|a| a.exportable);
            let material = self
                .place_key(
                    &self.home(vault, true)?,
                    material,
                    &token_label(vault, name),
                    exportable.unwrap_or(false),
                )
                .await?;
            let new = NewVersion {
                kty,
                material,
                key_ops,
                attributes: p.attributes.unwrap_or_default(),
                tags: p.tags,
                release_policy: p.release_policy,
            };
            return self.add_version(ctx, vault, name, new).await;
        }
        let crv = match (&jwk.crv, kty.family) {
            (Some(name), KeyFamily::Ec) => Some(Curve::from_jwk_name(name).ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "The curve '{}' is not supported: use P-256, P-384, P-521 or P-256K.",
                    printable(name)
                ))
            })?),
            (None, KeyFamily::Ec) => {
                return Err(ApiError::bad_parameter("An EC key needs its curve 'crv'."))
            }
            _ => None,
        };
        let parts = JwkParts {
            family: Some(kty.family),
            crv,
            n: jwk.n.clone(),
            e: jwk.e.clone(),
            d: jwk.d.clone(),
            p: jwk.p.clone(),
            q: jwk.q.clone(),
            dp: jwk.dp.clone(),
            dq: jwk.dq.clone(),
            qi: jwk.qi.clone(),
            x: jwk.x.clone(),
            y: jwk.y.clone(),
            k: jwk.k.clone(),
        };
        drop(jwk_private_zeroized(jwk.clone()));
        let material = KeyMaterial::from_jwk(&parts).map_err(|e| match e {
            CryptoError::Internal => ApiError::internal(),
            other => ApiError::bad_parameter(format!("The key to import is invalid: {other}")),
        })?;
        kty.check_vault(vault)?;
        let exportable = p.attributes.as_ref().and_then(|a| a.exportable);
        let material = self
            .place_key(
                &self.home(vault, kty.hsm)?,
                material,
                &token_label(vault, name),
                exportable.unwrap_or(false),
            )
            .await?;
        let new = NewVersion {
            kty,
            material,
            key_ops,
            attributes: p.attributes.unwrap_or_default(),
            tags: p.tags,
            release_policy: p.release_policy,
        };
        self.add_version(ctx, vault, name, new).await
    }

    /// Opens a BYOK transfer blob with the key-exchange key of this vault its header names, and
    /// checks that the key inside is what the request says (`kty`, `crv`, size).
    async fn open_transfer_blob(
        &self,
        vault: &VaultRecord,
        kty: KeyType,
        crv: Option<&str>,
        key_hsm: &[u8],
    ) -> Result<KeyMaterial> {
        let blob = parse_blob(key_hsm)?;
        let kek_id = format!("{}/{}", blob.kek_name, blob.kek_version);
        let (_, kek) = match self
            .usable(vault, &blob.kek_name, Some(&blob.kek_version))
            .await
        {
            Ok(found) => found,
            Err(e) if e.code == ErrorCode::KeyNotFound => {
                return Err(ApiError::bad_parameter(format!(
                    "The key-exchange key {} named by the transfer blob is not a key of this vault: the blob was made for another vault or key.",
                    printable(&kek_id)
                ))
                .with_inner("KeyExchangeKeyNotFound"))
            }
            Err(e) => return Err(e),
        };
        if kek.record.kty != "RSA-HSM" || kek.record.key_ops != [IMPORT_OP] {
            return Err(ApiError::bad_parameter(format!(
                "Key {} is not a key-exchange key: a KEK is an RSA-HSM key with key_ops [\"import\"] only.",
                printable(&kek_id)
            ))
            .with_inner("NotAKeyExchangeKey"));
        }
        if !kek.record.enabled {
            return Err(ApiError::bad_parameter(format!(
                "The key-exchange key {} is disabled.",
                printable(&kek_id)
            ))
            .with_inner("KeyDisabled"));
        }
        let plaintext = match kek.material.software() {
            Some(m) => m.rsa_aes_key_unwrap(blob.wrap.hash(), &blob.ciphertext),
            None => match token_rsa_aes_unwrap(&kek.material, blob.wrap, &blob.ciphertext).await {
                Err(e @ (CryptoError::Unsupported(_) | CryptoError::Backend(_))) => {
                    return Err(hsm_error(e))
                }
                other => other,
            },
        }
        .map_err(|_| {
                ApiError::bad_parameter(format!(
                    "The transfer blob does not open with key-exchange key {} and {}: it was made for another key-exchange key, or it is corrupted.",
                    printable(&kek_id),
                    blob.wrap.name()
                ))
                .with_inner("TransferBlobDoesNotOpen")
            })?;
        let (material, padded) =
            KeyMaterial::from_transfer_plaintext(&plaintext, kty.family == KeyFamily::Oct)
                .map_err(|_| {
                    let expected = match kty.family {
                        KeyFamily::Oct => "a 128, 192 or 256-bit AES key",
                        _ => "a PKCS#8 RSA or EC private key",
                    };
                    ApiError::bad_parameter(format!(
                        "The key in the transfer blob is not {expected}, as kty {} requires.",
                        kty.name()
                    ))
                    .with_inner("TransferBlobKeyMismatch")
                })?;
        if padded {
            tracing::warn!(
                kek = %kek_id,
                "BYOK key data had zero padding after its DER (as SoftHSM 2.6.1 adds); removed"
            );
        }
        let mismatch = |what: String| {
            ApiError::bad_parameter(format!(
                "The key in the transfer blob does not match the request: {what}."
            ))
            .with_inner("TransferBlobKeyMismatch")
        };
        if material.family() != kty.family {
            let found = match material.family() {
                KeyFamily::Rsa => "RSA",
                KeyFamily::Ec => "EC",
                KeyFamily::Oct => "oct",
            };
            return Err(mismatch(format!(
                "it is an {found} key, the request says {}",
                kty.name()
            )));
        }
        match kty.family {
            KeyFamily::Rsa if !(2048..=4096).contains(&material.size_bits()) => {
                return Err(mismatch(format!(
                    "an RSA key of {} bits (2048 to 4096 are supported)",
                    material.size_bits()
                )));
            }
            KeyFamily::Ec => {
                let found = material.curve().map(|c| c.jwk_name()).unwrap_or("?");
                if let Some(wanted) = crv {
                    let wanted_curve = Curve::from_jwk_name(wanted);
                    if wanted_curve != material.curve() {
                        return Err(mismatch(format!(
                            "the key is on {found}, the request says {}",
                            printable(wanted)
                        )));
                    }
                }
            }
            _ => {}
        }
        Ok(material)
    }

    /// `GET /keys/{name}/{version}`
    pub async fn get_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyBundle> {
        self.authorize(ctx, vault, Action::Read, &key_resource(name))
            .await?;
        self.get_key_unchecked(ctx, vault, name, version).await
    }

    async fn get_key_unchecked(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyBundle> {
        let (key, record, _) = self.resolve(vault, name, version).await?;
        ctx.note_use(&key.name, &record.version);
        Ok(self.bundle(ctx, vault, &key.name, &record))
    }

    /// The key's stored name and the versions asked for (one, or all, newest first).
    pub(crate) async fn version_names(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<(String, Vec<String>)> {
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            let (key, record, _) = self.resolve(vault, name, Some(v)).await?;
            return Ok((key.name, vec![record.version]));
        }
        let (key, _) = self.require_key(vault, name).await?;
        let prefix = format!("{}/", key_key(&vault.id, &key.name));
        let mut versions: Vec<(i64, String)> = self
            .list_all::<VersionRecord>(ns::KEY_VERSION, &prefix)
            .await?
            .into_iter()
            .map(|v| (v.created, v.version))
            .collect();
        // Newest first; creation times are whole seconds, so the current version leads its
        // second (a rotation in the same second as the create is still ordered right).
        versions.sort_by(|a, b| {
            (b.0, b.1 == key.latest)
                .cmp(&(a.0, a.1 == key.latest))
                .then_with(|| b.1.cmp(&a.1))
        });
        Ok((key.name, versions.into_iter().map(|(_, v)| v).collect()))
    }

    /// `PATCH /keys/{name}/{version}`
    pub async fn update_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        p: KeyUpdateParameters,
    ) -> Result<KeyBundle> {
        self.authorize(ctx, vault, Action::Update, &key_resource(name))
            .await?;
        for _ in 0..MAX_CAS_RETRIES {
            let (key, mut record, revision, key_revision) =
                self.resolve_with_key_revision(vault, name, version).await?;
            let kty = KeyType::parse(&record.kty)?;
            if let Some(ops) = &p.key_ops {
                let ops = canonical_key_ops(kty, Some(ops))?;
                let was_kek = record.key_ops.iter().any(|o| o == IMPORT_OP);
                if is_kek(&ops)? != was_kek {
                    return Err(ApiError::bad_parameter(
                        "A key-exchange key keeps key_ops [\"import\"], and no other key can be given 'import'.",
                    ));
                }
                record.key_ops = ops;
            }
            if let Some(a) = &p.attributes {
                if let Some(enabled) = a.enabled {
                    record.enabled = enabled;
                }
                if a.nbf.is_some() {
                    record.nbf = a.nbf;
                }
                if a.exp.is_some() {
                    record.exp = a.exp;
                }
                if let Some(exportable) = a.exportable {
                    if record.exportable.unwrap_or(false) != exportable {
                        return Err(ApiError::bad_parameter(
                            "The 'exportable' attribute cannot be changed after creation.",
                        ));
                    }
                }
            }
            check_window(record.nbf, record.exp)?;
            if let Some(tags) = &p.tags {
                record.tags = Some(tags.clone());
            }
            if let Some(policy) = &p.release_policy {
                if record.release_policy.as_ref().and_then(|r| r.immutable) == Some(true) {
                    return Err(ApiError::forbidden(
                        "The key's release policy is immutable and cannot be changed.",
                    )
                    .with_inner("ReleasePolicyImmutable"));
                }
                record.release_policy =
                    check_release_policy(kty, vault, record.exportable, Some(policy))?;
            }
            record.updated = self.clock.now();
            let op = Op::Put {
                ns: ns::KEY_VERSION,
                key: version_key(&vault.id, &key.name, &record.version),
                value: to_json(&record)?,
                expect: Expect::Revision(revision),
            };
            let kk = key_key(&vault.id, &key.name);
            let ops = vec![
                op,
                // The key must still be live (not deleted meanwhile) when a version changes.
                Op::Check {
                    ns: ns::KEY,
                    key: kk.clone(),
                    expect: Expect::Revision(key_revision),
                },
            ];
            match self.commit_as(ctx, ops).await {
                Ok(()) => {
                    self.cache.invalidate(&kk);
                    return Ok(self.bundle(ctx, vault, &key.name, &record));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            "Too many concurrent changes to this key; retry.",
        ))
    }

    /// `GET /keys`
    pub async fn list_keys(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        max: Option<i64>,
        skiptoken: Option<&str>,
    ) -> Result<ListResult<KeyItem>> {
        self.authorize(ctx, vault, Action::Read, "/keys").await?;
        let limit = max_results(max)?;
        let after = decode_skiptoken(skiptoken)?;
        let prefix = format!("{}/", vault.id);
        let page = self
            .store
            .list(ns::KEY, &prefix, after.as_deref(), limit as usize + 1)
            .await
            .map_err(store_error)?;
        let more = page.len() > limit as usize;
        let mut value = Vec::new();
        let mut last = None;
        for r in page.into_iter().take(limit as usize) {
            let key: KeyRecord = from_json(&r.value)?;
            if let Some((v, _)) = self.load_version(vault, &key.name, &key.latest).await? {
                value.push(KeyItem {
                    kid: format!("{}/keys/{}", ctx.base_url, key.name),
                    attributes: self.attributes(vault, &v),
                    tags: v.tags.clone(),
                    managed: None,
                });
            }
            last = Some(r.key);
        }
        let next_link = if more {
            next_link(ctx, "/keys", max, last.as_deref())
        } else {
            None
        };
        Ok(ListResult { value, next_link })
    }

    /// `GET /keys/{name}/versions`
    pub async fn list_versions(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        max: Option<i64>,
        skiptoken: Option<&str>,
    ) -> Result<ListResult<KeyItem>> {
        self.authorize(ctx, vault, Action::Read, &key_resource(name))
            .await?;
        let limit = max_results(max)?;
        let after = decode_skiptoken(skiptoken)?;
        let (key, _) = self.require_key(vault, name).await?;
        let prefix = format!("{}/", key_key(&vault.id, &key.name));
        let page = self
            .store
            .list(
                ns::KEY_VERSION,
                &prefix,
                after.as_deref(),
                limit as usize + 1,
            )
            .await
            .map_err(store_error)?;
        let more = page.len() > limit as usize;
        let mut value = Vec::new();
        let mut last = None;
        for r in page.into_iter().take(limit as usize) {
            let v: VersionRecord = from_json(&r.value)?;
            value.push(KeyItem {
                kid: format!("{}/keys/{}/{}", ctx.base_url, key.name, v.version),
                attributes: self.attributes(vault, &v),
                tags: v.tags.clone(),
                managed: None,
            });
            last = Some(r.key);
        }
        let path = format!("/keys/{}/versions", key.name);
        let next_link = if more {
            next_link(ctx, &path, max, last.as_deref())
        } else {
            None
        };
        Ok(ListResult { value, next_link })
    }

    fn deleted_bundle(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        key: &KeyRecord,
        latest: &VersionRecord,
    ) -> DeletedKeyBundle {
        let deletion = key.deleted.unwrap_or(Deletion {
            deleted_date: 0,
            scheduled_purge_date: 0,
        });
        DeletedKeyBundle {
            bundle: self.bundle(ctx, vault, &key.name, latest),
            recovery_id: format!("{}/deletedkeys/{}", ctx.base_url, key.name),
            scheduled_purge_date: deletion.scheduled_purge_date,
            deleted_date: deletion.deleted_date,
        }
    }

    /// `DELETE /keys/{name}`: soft delete of every version.
    pub async fn delete_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<DeletedKeyBundle> {
        self.authorize(ctx, vault, Action::Delete, &key_resource(name))
            .await?;
        for _ in 0..MAX_CAS_RETRIES {
            let (mut key, revision) = self.require_key(vault, name).await?;
            let (latest, _) = self
                .load_version(vault, &key.name, &key.latest)
                .await?
                .ok_or_else(|| ApiError::key_not_found(name))?;
            let now = self.clock.now();
            key.deleted = Some(Deletion {
                deleted_date: now,
                scheduled_purge_date: now + i64::from(vault.retention_days) * 86_400,
            });
            let kk = key_key(&vault.id, &key.name);
            let ops = vec![
                Op::Delete {
                    ns: ns::KEY,
                    key: kk.clone(),
                    expect: Expect::Revision(revision),
                },
                Op::Put {
                    ns: ns::DELETED_KEY,
                    key: kk.clone(),
                    value: to_json(&key)?,
                    expect: Expect::Absent,
                },
            ];
            match self.commit_as(ctx, ops).await {
                Ok(()) => {
                    self.cache.invalidate(&kk);
                    return Ok(self.deleted_bundle(ctx, vault, &key, &latest));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            "Too many concurrent changes to this key; retry.",
        ))
    }

    async fn require_deleted(&self, vault: &VaultRecord, name: &str) -> Result<(KeyRecord, i64)> {
        check_key_name(name).map_err(|_| deleted_not_found(name))?;
        match self
            .store
            .get(ns::DELETED_KEY, &key_key(&vault.id, name))
            .await
            .map_err(store_error)?
        {
            Some(r) => Ok((from_json(&r.value)?, r.revision)),
            None => Err(deleted_not_found(name)),
        }
    }

    /// `GET /deletedkeys/{name}`
    pub async fn get_deleted_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<DeletedKeyBundle> {
        self.authorize(ctx, vault, Action::ReadDeleted, &key_resource(name))
            .await?;
        let (key, _) = self.require_deleted(vault, name).await?;
        let (latest, _) = self
            .load_version(vault, &key.name, &key.latest)
            .await?
            .ok_or_else(|| deleted_not_found(name))?;
        Ok(self.deleted_bundle(ctx, vault, &key, &latest))
    }

    /// `GET /deletedkeys`
    pub async fn list_deleted_keys(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        max: Option<i64>,
        skiptoken: Option<&str>,
    ) -> Result<ListResult<DeletedKeyItem>> {
        self.authorize(ctx, vault, Action::ReadDeleted, "/keys")
            .await?;
        let limit = max_results(max)?;
        let after = decode_skiptoken(skiptoken)?;
        let prefix = format!("{}/", vault.id);
        let page = self
            .store
            .list(
                ns::DELETED_KEY,
                &prefix,
                after.as_deref(),
                limit as usize + 1,
            )
            .await
            .map_err(store_error)?;
        let more = page.len() > limit as usize;
        let mut value = Vec::new();
        let mut last = None;
        for r in page.into_iter().take(limit as usize) {
            let key: KeyRecord = from_json(&r.value)?;
            if let Some((v, _)) = self.load_version(vault, &key.name, &key.latest).await? {
                let d = self.deleted_bundle(ctx, vault, &key, &v);
                value.push(DeletedKeyItem {
                    item: KeyItem {
                        kid: format!("{}/keys/{}", ctx.base_url, key.name),
                        attributes: d.bundle.attributes,
                        tags: d.bundle.tags,
                        managed: None,
                    },
                    recovery_id: d.recovery_id,
                    scheduled_purge_date: d.scheduled_purge_date,
                    deleted_date: d.deleted_date,
                });
            }
            last = Some(r.key);
        }
        let next_link = if more {
            next_link(ctx, "/deletedkeys", max, last.as_deref())
        } else {
            None
        };
        Ok(ListResult { value, next_link })
    }

    /// `POST /deletedkeys/{name}/recover`
    pub async fn recover_deleted_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<KeyBundle> {
        self.authorize(ctx, vault, Action::Recover, &key_resource(name))
            .await?;
        let (mut key, revision) = self.require_deleted(vault, name).await?;
        key.deleted = None;
        let kk = key_key(&vault.id, &key.name);
        let ops = vec![
            Op::Delete {
                ns: ns::DELETED_KEY,
                key: kk.clone(),
                expect: Expect::Revision(revision),
            },
            Op::Put {
                ns: ns::KEY,
                key: kk.clone(),
                value: to_json(&key)?,
                expect: Expect::Absent,
            },
        ];
        self.commit_as(ctx, ops).await.map_err(|e| match e {
            StoreError::Conflict { .. } => ApiError::conflict(format!(
                "There was a conflict while recovering the soft-deleted key {}; retry.",
                key.name
            )),
            other => store_error(other),
        })?;
        self.cache.invalidate(&kk);
        self.get_key_unchecked(ctx, vault, &key.name, None).await
    }

    /// `DELETE /deletedkeys/{name}`: permanent deletion.
    pub async fn purge_deleted_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<()> {
        self.authorize(ctx, vault, Action::Purge, &key_resource(name))
            .await?;
        let (key, revision) = self.require_deleted(vault, name).await?;
        let now = self.clock.now();
        let due = key
            .deleted
            .map(|d| d.scheduled_purge_date <= now)
            .unwrap_or(false);
        if vault.purge_protection && !due {
            return Err(ApiError::forbidden(format!(
                "Purge protection is on for vault '{}': key {} can only be purged after its scheduled purge date.",
                vault.name, key.name
            ))
            .with_inner("PurgeProtectionEnabled"));
        }
        self.purge(ctx, vault, &key, revision).await
    }

    async fn purge(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        key: &KeyRecord,
        revision: i64,
    ) -> Result<()> {
        let kk = key_key(&vault.id, &key.name);
        let mut ops = vec![Op::Delete {
            ns: ns::DELETED_KEY,
            key: kk.clone(),
            expect: Expect::Revision(revision),
        }];
        let prefix = format!("{kk}/");
        let mut after: Option<String> = None;
        let mut token_objects = Vec::new();
        loop {
            let page = self
                .store
                .list(ns::KEY_VERSION, &prefix, after.as_deref(), 200)
                .await
                .map_err(store_error)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for r in page {
                let record: VersionRecord = from_json(&r.value)?;
                if let Some(token) = record.hsm_token {
                    let sd = self.security_domain_key(&vault.security_domain).await?;
                    let reference =
                        open_token_ref(&sd, &vault.id, &key.name, &record.version, &record.sealed)?;
                    token_objects.push((token, reference, r.key.clone()));
                }
                ops.push(Op::Delete {
                    ns: ns::KEY_VERSION,
                    key: r.key,
                    expect: Expect::Any,
                });
            }
        }
        let (object_ops, unused) = self.object_release_ops(&token_objects).await?;
        ops.extend(object_ops);
        self.commit_as(ctx, ops).await.map_err(|e| match e {
            StoreError::Conflict { .. } => ApiError::conflict(format!(
                "Key {} changed while it was being purged; retry.",
                key.name
            )),
            other => store_error(other),
        })?;
        self.cache.invalidate(&kk);
        tracing::info!(vault = %vault.name, key = %key.name, "purged");
        self.destroy_objects(unused).await;
        Ok(())
    }

    /// Purges every soft-deleted key whose retention has ended. Returns how many.
    pub async fn purge_expired(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut purged = 0;
        for vault in self.vaults() {
            let prefix = format!("{}/", vault.id);
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list(ns::DELETED_KEY, &prefix, after.as_deref(), 100)
                    .await
                    .map_err(store_error)?;
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                for r in page {
                    let key: KeyRecord = from_json(&r.value)?;
                    if key.deleted.is_some_and(|d| d.scheduled_purge_date <= now) {
                        let system = RequestContext::system("");
                        self.purge(&system, &vault, &key, r.revision).await?;
                        purged += 1;
                    }
                }
            }
        }
        Ok(purged)
    }

    /// `POST /keys/{name}/backup`
    pub async fn backup_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<BackupBlob> {
        self.authorize(ctx, vault, Action::Backup, &key_resource(name))
            .await?;
        let (key, _) = self.require_key(vault, name).await?;
        let sd = self.security_domain_key(&vault.security_domain).await?;
        let payload = self.key_backup_payload(vault, &sd, &key).await?;
        let json = Zeroizing::new(to_json(&payload)?);
        let sealed = sd
            .seal(&backup_aad(&vault.security_domain), &json)
            .map_err(|_| ApiError::internal())?;
        let mut blob = BACKUP_MAGIC.to_vec();
        blob.extend_from_slice(vault.security_domain.as_bytes());
        blob.extend_from_slice(&sealed);
        Ok(BackupBlob { value: blob })
    }

    /// Every version of `key`, its private parts opened from their seal (or, for HSM versions,
    /// the token object's reference): what a key backup and a full vault backup carry.
    pub(crate) async fn key_backup_payload(
        &self,
        vault: &VaultRecord,
        sd: &keyshift_crypto::seal::SealingKey,
        key: &KeyRecord,
    ) -> Result<BackupPayload> {
        let prefix = format!("{}/", key_key(&vault.id, &key.name));
        let mut versions = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(ns::KEY_VERSION, &prefix, after.as_deref(), 200)
                .await
                .map_err(store_error)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for r in page {
                let mut record: VersionRecord = from_json(&r.value)?;
                // An HSM key version is backed up as the reference of its token object: the
                // token does not let the key out.
                let material = match record.hsm_token {
                    Some(_) => {
                        open_token_ref(sd, &vault.id, &key.name, &record.version, &record.sealed)?
                            .as_bytes()
                            .to_vec()
                    }
                    None => {
                        open_version(sd, &vault.id, &key.name, &record.version, &record.sealed)?
                            .to_bytes()
                            .to_vec()
                    }
                };
                record.sealed = Vec::new();
                versions.push(BackupVersion { record, material });
            }
        }
        Ok(BackupPayload {
            name: key.name.clone(),
            latest: key.latest.clone(),
            created: key.created,
            rotation_policy: key.rotation_policy.clone(),
            versions,
        })
    }

    /// `POST /keys/restore`
    pub async fn restore_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        blob: &[u8],
    ) -> Result<KeyBundle> {
        self.authorize(ctx, vault, Action::Restore, "/keys").await?;
        let rest = blob.strip_prefix(BACKUP_MAGIC).ok_or_else(|| {
            ApiError::bad_parameter(
                "The backup blob is not a Keyshift key backup, or it is corrupted.",
            )
        })?;
        if rest.len() < 32 {
            return Err(ApiError::bad_parameter("The backup blob is truncated."));
        }
        let (sd_id, sealed) = rest.split_at(32);
        if sd_id != vault.security_domain.as_bytes() {
            return Err(ApiError::bad_parameter(format!(
                "The backup blob was made in another security domain; it can only be restored into a vault of that domain, not into '{}'.",
                vault.name
            ))
            .with_inner("SecurityDomainMismatch"));
        }
        let sd = self.security_domain_key(&vault.security_domain).await?;
        let json = sd
            .open(&backup_aad(&vault.security_domain), sealed)
            .map_err(|_| {
                ApiError::bad_parameter("The backup blob is corrupted or was tampered with.")
            })?;
        let payload: BackupPayload = serde_json::from_slice(&json)
            .map_err(|_| ApiError::bad_parameter("The backup blob is corrupted."))?;
        let record = self.restore_key_payload(ctx, vault, &sd, &payload).await?;
        Ok(self.bundle(ctx, vault, &payload.name, &record))
    }

    /// Writes the key of `payload`, with all its versions sealed anew under `sd`, into `vault`,
    /// in one transaction; refused when a key of that name exists there, live or soft-deleted.
    /// Returns the current version.
    pub(crate) async fn restore_key_payload(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        sd: &keyshift_crypto::seal::SealingKey,
        payload: &BackupPayload,
    ) -> Result<VersionRecord> {
        check_key_name(&payload.name)?;
        if !payload
            .versions
            .iter()
            .any(|v| v.record.version == payload.latest)
        {
            return Err(ApiError::bad_parameter(
                "The backup blob is corrupted: its current version is missing.",
            ));
        }
        let latest = payload.latest.clone();
        let kk = key_key(&vault.id, &payload.name);
        let key = KeyRecord {
            name: payload.name.clone(),
            latest: latest.clone(),
            version_count: u32::try_from(payload.versions.len()).unwrap_or(u32::MAX),
            created: payload.created,
            rotation_policy: payload.rotation_policy.clone(),
            deleted: None,
        };
        let mut ops = vec![
            Op::Put {
                ns: ns::KEY,
                key: kk.clone(),
                value: to_json(&key)?,
                expect: Expect::Absent,
            },
            Op::Check {
                ns: ns::DELETED_KEY,
                key: kk.clone(),
                expect: Expect::Absent,
            },
        ];
        let mut latest_record = None;
        for v in &payload.versions {
            let mut record = v.record.clone();
            let vk = version_key(&vault.id, &payload.name, &record.version);
            match &record.hsm_token {
                None => {
                    let material = KeyMaterial::from_bytes(&v.material)
                        .map_err(|_| ApiError::bad_parameter("The backup blob is corrupted."))?;
                    record.sealed =
                        seal_version(sd, &vault.id, &payload.name, &record.version, &material)?;
                }
                Some(token) => {
                    let reference = keyshift_crypto::HsmKeyRef::from_bytes(&v.material)
                        .map_err(|_| ApiError::bad_parameter("The backup blob is corrupted."))?;
                    self.require_token_object(token, &reference, &payload.name, &record)
                        .await?;
                    ops.push(self.object_user_ops(token, &reference, &vk).await?);
                    record.sealed =
                        seal_token_ref(sd, &vault.id, &payload.name, &record.version, &reference)?;
                }
            }
            ops.push(Op::Put {
                ns: ns::KEY_VERSION,
                key: vk,
                value: to_json(&record)?,
                expect: Expect::Any,
            });
            if record.version == latest {
                latest_record = Some(record);
            }
        }
        ops.push(admits_keys(vault));
        let mut committed = self.commit_as(ctx, ops.clone()).await;
        if let Err(StoreError::Conflict { ns, .. }) = &committed {
            if ns == ns::VAULT {
                // A stale copy of the vault record: once more, if the key is sealed as it
                // would be now.
                if let Some(last) = ops.last_mut() {
                    *last = self.recheck_vault(vault).await?;
                }
                committed = self.commit_as(ctx, ops).await;
            }
        }
        committed.map_err(|e| match e {
            StoreError::Conflict { ns, .. } if ns == ns::VAULT => ApiError::conflict(format!(
                "Vault '{}' changed while the key {} was being restored; retry.",
                vault.name, payload.name
            )),
            StoreError::Conflict { .. } => ApiError::conflict(format!(
                "There was a conflict restoring the key {}: a key with this name exists, live or soft-deleted.",
                payload.name
            )),
            other => store_error(other),
        })?;
        self.cache.invalidate(&kk);
        latest_record.ok_or_else(ApiError::internal)
    }

    /// Checks that the token object a backed-up HSM key version names still exists, in a token
    /// this server has attached.
    async fn require_token_object(
        &self,
        token: &str,
        reference: &keyshift_crypto::HsmKeyRef,
        name: &str,
        record: &VersionRecord,
    ) -> Result<()> {
        if self.hsm().is_none_or(|h| h.token != token) {
            return Err(ApiError::bad_parameter(format!(
                "The backup of key {name} holds HSM key versions, which live in HSM token \
                 '{token}'; this server does not have that token attached, and the backup \
                 carries only a reference to the key in it."
            ))
            .with_inner("HsmTokenNotAttached"));
        }
        match self.open_token_key(token, reference.clone()).await {
            Ok(_) => Ok(()),
            Err(e) if e.inner == Some("HsmKeyMissing") => Err(ApiError::bad_parameter(format!(
                "Version {} of key {name} no longer exists in HSM token '{token}' (it was \
                 purged): a backup of an HSM key refers to the key in the token and cannot bring \
                 back one that was destroyed.",
                record.version
            ))
            .with_inner("HsmKeyPurged")),
            Err(e) => Err(e),
        }
    }

    /// `POST /keys/{name}/rotate`: a new version with the same type, size, operations, tags and
    /// release settings; `exp` from the rotation policy's `expiryTime` when it has one.
    pub async fn rotate_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<KeyBundle> {
        self.authorize(ctx, vault, Action::Rotate, &key_resource(name))
            .await?;
        let (key, latest, _) = self.resolve(vault, name, None).await?;
        let kty = KeyType::parse(&latest.kty)?;
        let size = latest.size_bits;
        let crv = latest.public.crv.as_deref().and_then(Curve::from_jwk_name);
        let spec = match kty.family {
            KeyFamily::Rsa => HsmKeySpec::Rsa { bits: size },
            KeyFamily::Ec => HsmKeySpec::Ec {
                curve: crv.ok_or_else(ApiError::internal)?,
            },
            KeyFamily::Oct => HsmKeySpec::Oct { bits: size },
        };
        let home = self.home(vault, kty.hsm)?;
        let material = self
            .generate_key(
                &home,
                spec,
                &token_label(vault, &key.name),
                latest.exportable.unwrap_or(false),
            )
            .await?;
        let expiry = key
            .rotation_policy
            .as_ref()
            .and_then(|p| p.attributes.as_ref())
            .and_then(|a| a.expiry_time.as_deref())
            .and_then(parse_seconds);
        let attributes = KeyAttributes {
            enabled: Some(true),
            exp: expiry.map(|s| self.clock.now() + s),
            exportable: latest.exportable,
            ..Default::default()
        };
        let new = NewVersion {
            kty,
            material,
            key_ops: latest.key_ops.clone(),
            attributes,
            tags: latest.tags.clone(),
            release_policy: latest.release_policy.clone(),
        };
        self.add_version(ctx, vault, &key.name, new).await
    }

    /// `GET /keys/{name}/rotationpolicy`: the stored policy, or the default one.
    pub async fn get_rotation_policy(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<KeyRotationPolicy> {
        self.authorize(ctx, vault, Action::ReadRotationPolicy, &key_resource(name))
            .await?;
        let (key, _) = self.require_key(vault, name).await?;
        let mut policy = key.rotation_policy.unwrap_or_else(|| KeyRotationPolicy {
            id: None,
            lifetime_actions: Some(vec![notify_action("P30D")]),
            attributes: Some(KeyRotationPolicyAttributes::default()),
        });
        policy.id = Some(format!("{}/keys/{}/rotationpolicy", ctx.base_url, key.name));
        Ok(policy)
    }

    /// `PUT /keys/{name}/rotationpolicy`
    pub async fn set_rotation_policy(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        mut policy: KeyRotationPolicy,
    ) -> Result<KeyRotationPolicy> {
        self.authorize(ctx, vault, Action::WriteRotationPolicy, &key_resource(name))
            .await?;
        validate_rotation_policy(&mut policy, vault.kind)?;
        for _ in 0..MAX_CAS_RETRIES {
            let (mut key, revision) = self.require_key(vault, name).await?;
            let now = self.clock.now();
            let created = key
                .rotation_policy
                .as_ref()
                .and_then(|p| p.attributes.as_ref())
                .and_then(|a| a.created)
                .unwrap_or(now);
            let mut stored = policy.clone();
            stored.id = None;
            let attrs = stored.attributes.get_or_insert_with(Default::default);
            attrs.created = Some(created);
            attrs.updated = Some(now);
            key.rotation_policy = Some(stored.clone());
            let kk = key_key(&vault.id, &key.name);
            let ops = vec![Op::Put {
                ns: ns::KEY,
                key: kk,
                value: to_json(&key)?,
                expect: Expect::Revision(revision),
            }];
            match self.commit_as(ctx, ops).await {
                Ok(()) => {
                    stored.id = Some(format!("{}/keys/{}/rotationpolicy", ctx.base_url, key.name));
                    return Ok(stored);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            "Too many concurrent changes to this key; retry.",
        ))
    }

    /// Rotates every key whose policy's `Rotate` trigger is due. Returns how many were rotated.
    pub async fn rotate_due(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut rotated = 0;
        for vault in self.vaults() {
            let ctx = RequestContext::system(String::new());
            let prefix = format!("{}/", vault.id);
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list(ns::KEY, &prefix, after.as_deref(), 100)
                    .await
                    .map_err(store_error)?;
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                for r in page {
                    let key: KeyRecord = from_json(&r.value)?;
                    let Some(trigger) = key.rotation_policy.as_ref().and_then(rotate_trigger)
                    else {
                        continue;
                    };
                    let Some((latest, _)) =
                        self.load_version(&vault, &key.name, &key.latest).await?
                    else {
                        continue;
                    };
                    let due = match trigger {
                        Trigger::AfterCreate(s) => latest.created + s <= now,
                        Trigger::BeforeExpiry(s) => latest.exp.is_some_and(|exp| exp - s <= now),
                    };
                    if due {
                        self.rotate_key(&ctx, &vault, &key.name).await?;
                        tracing::info!(vault = %vault.name, key = %key.name, "rotated by policy");
                        rotated += 1;
                    }
                }
            }
        }
        Ok(rotated)
    }

    /// encrypt, decrypt, wrapkey, unwrapkey.
    pub async fn key_operation(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        op: KeyOperation,
        p: KeyOperationsParameters,
    ) -> Result<KeyOperationResult> {
        let action = match op {
            KeyOperation::Encrypt => Action::Encrypt,
            KeyOperation::Decrypt => Action::Decrypt,
            KeyOperation::WrapKey => Action::Wrap,
            KeyOperation::UnwrapKey => Action::Unwrap,
        };
        self.authorize(ctx, vault, action, &key_resource(name))
            .await?;
        let (key_name, entry) = self.usable(vault, name, version).await?;
        ctx.note_use(&key_name, &entry.record.version);
        let checks_window = matches!(op, KeyOperation::Encrypt | KeyOperation::WrapKey);
        self.check_usable(&entry.record, op.key_op(), checks_window)?;
        let alg = EncryptionAlgorithm::from_name(&p.alg).ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "The algorithm '{}' is not supported.",
                printable(&p.alg)
            ))
        })?;
        let kid = format!("{}/keys/{key_name}/{}", ctx.base_url, entry.record.version);
        let material = &entry.material;
        let result = match op {
            KeyOperation::Encrypt => {
                let out = material
                    .encrypt(alg, &p.value, p.iv.as_deref(), p.aad.as_deref())
                    .await
                    .map_err(crypto_error)?;
                KeyOperationResult {
                    kid,
                    alg: Some(alg.name().into()),
                    value: out.ciphertext,
                    iv: out.iv,
                    tag: out.tag,
                    aad: p.aad,
                }
            }
            KeyOperation::Decrypt => {
                let plain = material
                    .decrypt(
                        alg,
                        &p.value,
                        p.iv.as_deref(),
                        p.aad.as_deref(),
                        p.tag.as_deref(),
                    )
                    .await
                    .map_err(crypto_error)?;
                KeyOperationResult {
                    kid,
                    alg: Some(alg.name().into()),
                    value: plain.to_vec(),
                    iv: None,
                    tag: None,
                    aad: None,
                }
            }
            KeyOperation::WrapKey => {
                let wrapped = material
                    .wrap_key(alg, &p.value)
                    .await
                    .map_err(crypto_error)?;
                KeyOperationResult {
                    kid,
                    alg: Some(alg.name().into()),
                    value: wrapped,
                    iv: None,
                    tag: None,
                    aad: None,
                }
            }
            KeyOperation::UnwrapKey => {
                let plain = material
                    .unwrap_key(alg, &p.value)
                    .await
                    .map_err(crypto_error)?;
                KeyOperationResult {
                    kid,
                    alg: Some(alg.name().into()),
                    value: plain.to_vec(),
                    iv: None,
                    tag: None,
                    aad: None,
                }
            }
        };
        Ok(result)
    }

    /// Keyshift extension `POST /keys/{name}[/{version}]/rewrap`: items protected by this key
    /// (any of its versions, per item) returned protected by the target key, in this vault or
    /// `target_vault`, without their plaintext leaving the server. The caller needs unwrapKey
    /// (or decrypt) on this key and wrapKey (or encrypt) on the target. An item that fails does not
    /// fail the others; each item is audited as its two operations.
    #[allow(clippy::too_many_arguments)]
    pub async fn rewrap(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        target_vault: &VaultRecord,
        target_base_url: &str,
        target_name: &str,
        target_version: Option<&str>,
        p: RewrapParameters,
    ) -> Result<RewrapResult> {
        if p.items.is_empty() || p.items.len() > MAX_REWRAP_ITEMS {
            return Err(ApiError::bad_parameter(format!(
                "A rewrap request carries 1 to {MAX_REWRAP_ITEMS} items; this one has {}.",
                p.items.len()
            )));
        }
        let wrapped = p.mode == RewrapMode::Wrapped;
        let (source_action, target_action) = if wrapped {
            (Action::Unwrap, Action::Wrap)
        } else {
            (Action::Decrypt, Action::Encrypt)
        };
        let (source_op, target_op) = if wrapped {
            ("unwrapKey", "wrapKey")
        } else {
            ("decrypt", "encrypt")
        };
        let (source_event, target_event) = if wrapped {
            ("KeyUnwrap", "KeyWrap")
        } else {
            ("KeyDecrypt", "KeyEncrypt")
        };
        self.authorize(ctx, vault, source_action, &key_resource(name))
            .await?;
        self.authorize(ctx, target_vault, target_action, &key_resource(target_name))
            .await?;
        let alg = |name: &str| {
            EncryptionAlgorithm::from_name(name).ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "The algorithm '{}' is not supported.",
                    printable(name)
                ))
            })
        };
        let (source_alg, target_alg) = (alg(&p.source_alg)?, alg(&p.target_alg)?);
        // A missing source key fails the request; a missing version fails its items.
        self.require_key(vault, name).await?;
        let (target_key, target) = self
            .usable(target_vault, target_name, target_version)
            .await?;
        self.check_usable(&target.record, target_op, true)?;
        let target_kid = format!(
            "{target_base_url}/keys/{target_key}/{}",
            target.record.version
        );

        // Source versions, each resolved once.
        let mut sources: HashMap<String, Result<(String, Arc<CachedVersion>)>> = HashMap::new();
        let mut items = Vec::with_capacity(p.items.len());
        for item in p.items {
            let wanted = match item.kid.as_deref() {
                None => version.unwrap_or("").to_ascii_lowercase(),
                Some(kid) => match item_version(kid, name) {
                    Some(v) => v,
                    None => {
                        items.push(item_error(&ApiError::bad_parameter(format!(
                            "The item's kid is not a version of key '{}'.",
                            printable(name)
                        ))));
                        continue;
                    }
                },
            };
            if !sources.contains_key(&wanted) {
                let v = (!wanted.is_empty()).then_some(wanted.as_str());
                let resolved = match self.usable(vault, name, v).await {
                    Ok((key_name, entry)) => self
                        .check_usable(&entry.record, source_op, false)
                        .map(|()| (key_name, entry)),
                    Err(e) => Err(e),
                };
                sources.insert(wanted.clone(), resolved);
            }
            let (key_name, source) = match sources.get(&wanted) {
                Some(Ok(found)) => found,
                Some(Err(e)) => {
                    items.push(item_error(e));
                    continue;
                }
                None => {
                    items.push(item_error(&ApiError::internal()));
                    continue;
                }
            };
            let plain = if wrapped {
                source.material.unwrap_key(source_alg, &item.value).await
            } else {
                source
                    .material
                    .decrypt(
                        source_alg,
                        &item.value,
                        item.iv.as_deref(),
                        item.aad.as_deref(),
                        item.tag.as_deref(),
                    )
                    .await
            };
            let plain = match plain.map_err(crypto_error) {
                Ok(plain) => plain,
                Err(e) => {
                    ctx.note_item(
                        vault,
                        source_event,
                        key_name,
                        &source.record.version,
                        e.code.status(),
                    );
                    items.push(item_error(&e));
                    continue;
                }
            };
            ctx.note_item(vault, source_event, key_name, &source.record.version, 200);
            let out = if wrapped {
                target
                    .material
                    .wrap_key(target_alg, &plain)
                    .await
                    .map(|value| (value, None, None))
            } else {
                target
                    .material
                    .encrypt(target_alg, &plain, None, item.aad.as_deref())
                    .await
                    .map(|out| (out.ciphertext, out.iv, out.tag))
            };
            match out.map_err(crypto_error) {
                Ok((value, iv, tag)) => {
                    ctx.note_item(
                        target_vault,
                        target_event,
                        &target_key,
                        &target.record.version,
                        200,
                    );
                    items.push(RewrapItemResult {
                        value: Some(value),
                        iv,
                        tag,
                        error: None,
                    });
                }
                Err(e) => {
                    ctx.note_item(
                        target_vault,
                        target_event,
                        &target_key,
                        &target.record.version,
                        e.code.status(),
                    );
                    items.push(item_error(&e));
                }
            }
        }
        Ok(RewrapResult {
            target: target_kid,
            items,
        })
    }

    /// `POST /keys/{name}/{version}/sign`
    pub async fn sign(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        p: KeySignParameters,
    ) -> Result<KeyOperationResult> {
        self.authorize(ctx, vault, Action::Sign, &key_resource(name))
            .await?;
        let (key_name, entry) = self.usable(vault, name, version).await?;
        ctx.note_use(&key_name, &entry.record.version);
        self.check_usable(&entry.record, "sign", true)?;
        let alg = SignatureAlgorithm::from_name(&p.alg).ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "The algorithm '{}' is not supported.",
                printable(&p.alg)
            ))
        })?;
        let signature = entry
            .material
            .sign(alg, &p.value)
            .await
            .map_err(crypto_error)?;
        Ok(KeyOperationResult {
            kid: format!("{}/keys/{key_name}/{}", ctx.base_url, entry.record.version),
            alg: Some(alg.name().into()),
            value: signature,
            iv: None,
            tag: None,
            aad: None,
        })
    }

    /// `POST /keys/{name}/{version}/verify`
    pub async fn verify(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        p: KeyVerifyParameters,
    ) -> Result<KeyVerifyResult> {
        self.authorize(ctx, vault, Action::Verify, &key_resource(name))
            .await?;
        let (key_name, entry) = self.usable(vault, name, version).await?;
        ctx.note_use(&key_name, &entry.record.version);
        self.check_usable(&entry.record, "verify", false)?;
        let alg = SignatureAlgorithm::from_name(&p.alg).ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "The algorithm '{}' is not supported.",
                printable(&p.alg)
            ))
        })?;
        let ok = entry
            .material
            .verify(alg, &p.digest, &p.value)
            .map_err(crypto_error)?;
        Ok(KeyVerifyResult { value: ok })
    }

    fn check_usable(&self, record: &VersionRecord, op: &str, check_window: bool) -> Result<()> {
        if !record.enabled {
            return Err(ApiError::forbidden(format!(
                "Operation {op} is not allowed on a disabled key."
            ))
            .with_inner("KeyDisabled"));
        }
        if check_window {
            let now = self.clock.now();
            if record.nbf.is_some_and(|nbf| now < nbf) {
                return Err(ApiError::forbidden(format!(
                    "Operation {op} is not allowed before the key's 'nbf' time."
                ))
                .with_inner("KeyNotYetValid"));
            }
            if record.exp.is_some_and(|exp| now >= exp) {
                return Err(ApiError::forbidden(format!(
                    "Operation {op} is not allowed on an expired key."
                ))
                .with_inner("KeyExpired"));
            }
        }
        if !record.key_ops.iter().any(|o| o == op) {
            return Err(ApiError::forbidden(format!(
                "Operation {op} is not permitted on this key."
            ))
            .with_inner("KeyOperationForbidden"));
        }
        Ok(())
    }
}

impl Deployment {
    /// `POST /rng`
    pub async fn random_bytes(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        count: i64,
    ) -> Result<RandomBytes> {
        self.authorize(ctx, vault, Action::Random, "/").await?;
        random_bytes(count)
    }
}

fn random_bytes(count: i64) -> Result<RandomBytes> {
    if !(1..=128).contains(&count) {
        return Err(ApiError::bad_parameter(
            "GetRandomBytesRequest: count cannot be greater than 128 or less than 1",
        ));
    }
    let value = keyshift_crypto::random_bytes(count as usize).map_err(|_| ApiError::internal())?;
    Ok(RandomBytes { value })
}

fn jwk_private_zeroized(mut jwk: JsonWebKey) -> JsonWebKey {
    for field in [
        &mut jwk.d,
        &mut jwk.p,
        &mut jwk.q,
        &mut jwk.dp,
        &mut jwk.dq,
        &mut jwk.qi,
        &mut jwk.k,
    ] {
        if let Some(v) = field.as_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
    jwk
}

fn deleted_but_recoverable(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "Key {} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.",
        printable(name)
    ))
    .with_inner("ObjectIsDeletedButRecoverable")
}

fn deleted_not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::KeyNotFound,
        format!(
            "Deleted key {} was not found in this key vault.",
            printable(name)
        ),
    )
}

fn notify_action(before_expiry: &str) -> LifetimeAction {
    LifetimeAction {
        trigger: Some(LifetimeTrigger {
            time_after_create: None,
            time_before_expiry: Some(before_expiry.into()),
        }),
        action: Some(LifetimeActionType {
            kind: Some("Notify".into()),
        }),
    }
}

enum Trigger {
    AfterCreate(i64),
    BeforeExpiry(i64),
}

fn rotate_trigger(policy: &KeyRotationPolicy) -> Option<Trigger> {
    let action = policy.lifetime_actions.as_ref()?.iter().find(|a| {
        a.action
            .as_ref()
            .and_then(|t| t.kind.as_deref())
            .is_some_and(|k| k.eq_ignore_ascii_case("rotate"))
    })?;
    let trigger = action.trigger.as_ref()?;
    if let Some(s) = trigger.time_after_create.as_deref().and_then(parse_seconds) {
        return Some(Trigger::AfterCreate(s));
    }
    trigger
        .time_before_expiry
        .as_deref()
        .and_then(parse_seconds)
        .map(Trigger::BeforeExpiry)
}

fn validate_rotation_policy(policy: &mut KeyRotationPolicy, kind: VaultKind) -> Result<()> {
    let min_days = if kind == VaultKind::ManagedHsm { 28 } else { 7 };
    let expiry = match policy
        .attributes
        .as_ref()
        .and_then(|a| a.expiry_time.as_deref())
    {
        Some(text) => {
            let s = parse_seconds(text).ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "expiryTime '{}' is not an ISO 8601 duration.",
                    printable(text)
                ))
            })?;
            if s < 28 * 86_400 {
                return Err(ApiError::bad_parameter(
                    "expiryTime must be at least 28 days.",
                ));
            }
            Some(s)
        }
        None => None,
    };
    let mut seen_rotate = false;
    let mut seen_notify = false;
    let actions = policy.lifetime_actions.get_or_insert_with(Vec::new);
    for action in actions.iter_mut() {
        let kind_name = action
            .action
            .as_ref()
            .and_then(|a| a.kind.clone())
            .ok_or_else(|| ApiError::bad_parameter("Each lifetime action needs an action type."))?;
        let is_rotate = kind_name.eq_ignore_ascii_case("rotate");
        let is_notify = kind_name.eq_ignore_ascii_case("notify");
        if !is_rotate && !is_notify {
            return Err(ApiError::bad_parameter(format!(
                "Action type '{}' is not valid: use Rotate or Notify.",
                printable(&kind_name)
            )));
        }
        if (is_rotate && seen_rotate) || (is_notify && seen_notify) {
            return Err(ApiError::bad_parameter(
                "A policy may hold at most one action of each type.",
            ));
        }
        seen_rotate |= is_rotate;
        seen_notify |= is_notify;
        if let Some(a) = action.action.as_mut() {
            a.kind = Some(if is_rotate {
                "Rotate".into()
            } else {
                "Notify".into()
            });
        }
        let trigger = action
            .trigger
            .as_ref()
            .ok_or_else(|| ApiError::bad_parameter("Each lifetime action needs a trigger."))?;
        match (&trigger.time_after_create, &trigger.time_before_expiry) {
            (Some(t), None) => {
                if is_notify {
                    return Err(ApiError::bad_parameter(
                        "A Notify action takes timeBeforeExpiry only.",
                    ));
                }
                let s = parse_seconds(t).ok_or_else(|| {
                    ApiError::bad_parameter(format!(
                        "'{}' is not an ISO 8601 duration.",
                        printable(t)
                    ))
                })?;
                if s < min_days * 86_400 {
                    return Err(ApiError::bad_parameter(format!(
                        "timeAfterCreate must be at least {min_days} days."
                    )));
                }
            }
            (None, Some(t)) => {
                let s = parse_seconds(t).ok_or_else(|| {
                    ApiError::bad_parameter(format!(
                        "'{}' is not an ISO 8601 duration.",
                        printable(t)
                    ))
                })?;
                if s < 7 * 86_400 {
                    return Err(ApiError::bad_parameter(
                        "timeBeforeExpiry must be at least 7 days.",
                    ));
                }
                match expiry {
                    None if is_rotate => {
                        return Err(ApiError::bad_parameter(
                            "timeBeforeExpiry needs the policy's expiryTime.",
                        ));
                    }
                    Some(e) if s > e - min_days * 86_400 => {
                        return Err(ApiError::bad_parameter(
                            "timeBeforeExpiry must leave room before expiryTime.",
                        ));
                    }
                    _ => {}
                }
            }
            _ => {
                return Err(ApiError::bad_parameter(
                    "Each trigger takes exactly one of timeAfterCreate and timeBeforeExpiry.",
                ))
            }
        }
    }
    if !seen_notify && kind == VaultKind::Vault {
        actions.push(notify_action("P30D"));
    }
    Ok(())
}
