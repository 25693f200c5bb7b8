//! A deployment: its root of trust, security domains, vaults, principals and token signing key.

use crate::clock::Clock;
use crate::keys::KeyCache;
use crate::naming::{check_vault_name, new_id};
use crate::records::{
    ns, DeploymentRecord, PrincipalRecord, SecurityDomainRecord, VaultKind, VaultRecord,
};
use crate::sealing::{security_domain_aad, TOKEN_KEY_AAD};
use crate::{RequestContext, Result};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_crypto::seal::SealingKey;
use keyshift_crypto::token::TokenSigningKey;
use keyshift_store::{Expect, Op, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub(crate) const DEPLOYMENT_KEY: &str = "deployment";

/// A deployment-wide key in `meta`, sealed under the root key ([`Deployment::sealed_rsa_key`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedKeyRecord {
    /// The key's id (none in records made before keys had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(with = "keyshift_api::b64::bytes")]
    sealed: Vec<u8>,
    #[serde(default)]
    created: i64,
}

/// What `vault create` asks for.
#[derive(Debug, Clone)]
pub struct VaultSpec {
    /// Name (DNS label).
    pub name: String,
    /// Kind.
    pub kind: VaultKind,
    /// Soft-delete retention in days, 7 to 90.
    pub retention_days: u32,
    /// Purge protection.
    pub purge_protection: bool,
    /// A port of its own.
    pub port: Option<u16>,
    /// A new security domain of its own, instead of the deployment's default one. Backups of its
    /// keys then restore only into it (and vaults later given the same domain).
    pub new_security_domain: bool,
    /// Whether this is the default vault.
    pub default: bool,
}

/// A principal just created, with its one-time secret.
#[derive(Debug)]
pub struct NewPrincipal {
    /// The record.
    pub principal: PrincipalRecord,
    /// The client secret, shown once.
    pub client_secret: String,
}

/// The deployment: everything a server or CLI works on.
pub struct Deployment {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) root: crate::root::RootKey,
    record: DeploymentRecord,
    /// The token keys, and the revision of the deployment record they were read from: a reload
    /// that read an older record never replaces keys a rotation installed.
    token_keys: RwLock<(i64, TokenKeys)>,
    vaults: RwLock<HashMap<String, Arc<VaultRecord>>>,
    sd_keys: RwLock<HashMap<String, Arc<SealingKey>>>,
    pub(crate) cache: KeyCache,
    pub(crate) assignments: crate::access::AssignmentCache,
    administrator: RwLock<Option<String>>,
    pub(crate) audit: std::sync::OnceLock<crate::audit::AuditWriter>,
    /// The audit chain named for this process (`Deployment::set_audit_chain`).
    pub(crate) audit_chain: std::sync::OnceLock<String>,
    /// The release-signing key, once loaded or created (`release.rs`).
    pub(crate) release_key: tokio::sync::OnceCell<Arc<keyshift_crypto::KeyMaterial>>,
    /// Client secrets checked recently (see [`VerifiedSecrets`]).
    verified_secrets: VerifiedSecrets,
    /// The HSM `-HSM` keys are made in, when one is attached (`hsm.rs`).
    pub(crate) hsm: std::sync::OnceLock<crate::hsm::AttachedHsm>,
    /// Key cache hits and misses (`stats.rs`).
    pub(crate) cache_counters: crate::stats::CacheCounters,
    /// This process's position in the store's change feed (`changes.rs`).
    pub(crate) change_cursor: tokio::sync::Mutex<i64>,
    /// Counts changes to principals, made here or followed (see `principal_changes`).
    pub(crate) principal_changes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("tenant_id", &self.record.tenant_id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    crate::stats::count_store_error(matches!(e, StoreError::Conflict { .. }));
    match e {
        StoreError::Conflict { .. } => {
            ApiError::conflict("A concurrent change conflicts with this request; retry it.")
        }
        StoreError::Backend(detail) => {
            tracing::error!(%detail, "store failure");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The key store is unavailable; retry later.",
            )
        }
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        tracing::error!(error = %e, "serialization failed");
        ApiError::internal()
    })
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        tracing::error!(error = %e, "a stored record does not parse");
        ApiError::internal()
    })
}

/// A vault record as stored, with the revision it was read at.
pub(crate) fn vault_from(record: &keyshift_store::Record) -> Result<VaultRecord> {
    let mut vault: VaultRecord = from_json(&record.value)?;
    vault.revision = record.revision;
    Ok(vault)
}

/// The condition that every commit adding a key (a new key, an imported or restored one, or a
/// new version) to `vault` carries: the vault record is still the one the key was sealed for.
/// A security-domain upload and a vault deletion change that record in the same transaction
/// that checks the vault holds no key ([`holds_no_keys`]), so of a key and such a change that
/// race, only one commits.
pub(crate) fn admits_keys(vault: &VaultRecord) -> Op {
    Op::Check {
        ns: ns::VAULT,
        key: vault.name.to_ascii_lowercase(),
        expect: Expect::Revision(vault.revision),
    }
}

/// The conditions that `vault` holds no key, live or soft-deleted, as a batch's first ops: a
/// key added meanwhile makes the batch conflict (on `ns::KEY` or `ns::DELETED_KEY`).
pub(crate) fn holds_no_keys(vault: &VaultRecord) -> [Op; 2] {
    [ns::KEY, ns::DELETED_KEY].map(|ns| Op::CheckEmpty {
        ns,
        prefix: format!("{}/", vault.id),
    })
}

fn crypto_internal(e: keyshift_crypto::CryptoError) -> ApiError {
    tracing::error!(error = %e, "crypto failure");
    ApiError::internal()
}

impl Deployment {
    /// Opens the deployment in `store`, initialising it on first use. Returns whether it was new.
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        root: impl Into<crate::root::RootKey>,
    ) -> Result<(Self, bool)> {
        let root: crate::root::RootKey = root.into();
        store.exclude_from_change_feed(crate::changes::UNFED);
        // Before anything is read: every change after this point reaches `follow_changes`.
        let change_cursor = store.change_head().await.map_err(store_error)?;
        let (record, fresh) = Self::open_record(&store, &clock, &root).await?;
        let token_keys = TokenKeys::open(&root, &record)?;
        let administrator = record.administrator.clone();
        let deployment = Deployment {
            store,
            clock,
            root,
            record,
            token_keys: RwLock::new((0, token_keys)),
            vaults: RwLock::new(HashMap::new()),
            sd_keys: RwLock::new(HashMap::new()),
            cache: KeyCache::default(),
            assignments: Default::default(),
            change_cursor: tokio::sync::Mutex::new(change_cursor),
            principal_changes: Default::default(),
            administrator: RwLock::new(None),
            audit: Default::default(),
            audit_chain: Default::default(),
            release_key: Default::default(),
            verified_secrets: VerifiedSecrets::new()?,
            hsm: std::sync::OnceLock::new(),
            cache_counters: Default::default(),
        };
        *deployment
            .administrator
            .write()
            .unwrap_or_else(|p| p.into_inner()) = administrator;
        deployment.refresh_vaults().await?;
        Ok((deployment, fresh))
    }

    /// Reads the deployment record, or creates it (with the default security domain) in a new
    /// store. Nodes starting together on an empty store race to create it: the loser's batch
    /// conflicts, and it reads the winner's record instead.
    async fn open_record(
        store: &Arc<dyn Store>,
        clock: &Arc<dyn Clock>,
        root: &crate::root::RootKey,
    ) -> Result<(DeploymentRecord, bool)> {
        for _ in 0..4 {
            if let Some(r) = store
                .get(ns::META, DEPLOYMENT_KEY)
                .await
                .map_err(store_error)?
            {
                return Ok((from_json::<DeploymentRecord>(&r.value)?, false));
            }
            let now = clock.now();
            let sd_id = new_id()?;
            let sd_key = SealingKey::generate().map_err(crypto_internal)?;
            let sd = SecurityDomainRecord {
                id: sd_id.clone(),
                sealed_key: root
                    .seal(&security_domain_aad(&sd_id), &sd_key.to_bytes())
                    .map_err(crypto_internal)?,
                created: now,
            };
            let token_key = TokenSigningKey::generate().map_err(crypto_internal)?;
            let record = DeploymentRecord {
                tenant_id: uuid_like()?,
                default_security_domain: sd_id.clone(),
                token_signing_key: root
                    .seal(TOKEN_KEY_AAD, &token_key.to_bytes())
                    .map_err(crypto_internal)?,
                created: now,
                administrator: None,
                retired_token_keys: Vec::new(),
            };
            match store
                .commit(vec![
                    Op::Put {
                        ns: ns::SECURITY_DOMAIN,
                        key: sd_id,
                        value: to_json(&sd)?,
                        expect: Expect::Absent,
                    },
                    Op::Put {
                        ns: ns::META,
                        key: DEPLOYMENT_KEY.into(),
                        value: to_json(&record)?,
                        expect: Expect::Absent,
                    },
                ])
                .await
            {
                Ok(()) => return Ok((record, true)),
                // Another node created it first: read theirs.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            "The deployment record could not be created or read; retry.",
        ))
    }

    /// This deployment's tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.record.tenant_id
    }

    /// The key that signs access tokens now.
    pub fn token_signing_key(&self) -> Arc<TokenSigningKey> {
        self.token_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .current
            .clone()
    }

    /// Public points of every key whose tokens may still be valid: the current one first, then
    /// those retired within the last `RETIRED_TOKEN_KEY_SECONDS`.
    pub fn token_verification_keys(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let guard = self.token_keys.read().unwrap_or_else(|p| p.into_inner());
        let keys = &guard.1;
        let now = self.clock.now();
        let mut out = vec![keys.current.public_xy()];
        out.extend(
            keys.retired
                .iter()
                .filter(|r| now - r.retired_at < RETIRED_TOKEN_KEY_SECONDS)
                .map(|r| (r.x.clone(), r.y.clone())),
        );
        out
    }

    /// Replaces the token signing key. Tokens signed by the old one stay valid until they expire.
    /// `ctx`'s audit event is committed with the new key.
    pub async fn rotate_token_signing_key(&self, ctx: &RequestContext) -> Result<()> {
        let now = self.clock.now();
        let (record, revision) = self
            .update_deployment_record(ctx, |record| {
                let old = TokenKeys::open(&self.root, record)?;
                let (x, y) = old.current.public_xy();
                record
                    .retired_token_keys
                    .retain(|k| now - k.retired_at < RETIRED_TOKEN_KEY_SECONDS);
                record
                    .retired_token_keys
                    .push(crate::records::RetiredTokenKey {
                        x,
                        y,
                        retired_at: now,
                    });
                let fresh = TokenSigningKey::generate().map_err(crypto_internal)?;
                record.token_signing_key = self
                    .root
                    .seal(TOKEN_KEY_AAD, &fresh.to_bytes())
                    .map_err(crypto_internal)?;
                Ok(true)
            })
            .await?
            .ok_or_else(ApiError::internal)?;
        self.install_token_keys(revision, TokenKeys::open(&self.root, &record)?);
        Ok(())
    }

    /// Installs the token keys of the deployment record at `revision`, unless newer ones are in.
    fn install_token_keys(&self, revision: i64, keys: TokenKeys) {
        let mut slot = self.token_keys.write().unwrap_or_else(|p| p.into_inner());
        if revision >= slot.0 {
            *slot = (revision, keys);
        }
    }

    /// Changes the deployment record with `change` (read, changed, compare-and-set, and again
    /// on a lost race), committed with `ctx`'s audit event: the record as committed, or `None`
    /// when `change` found nothing to do (it returned `false`), with its revision.
    async fn update_deployment_record(
        &self,
        ctx: &RequestContext,
        mut change: impl FnMut(&mut DeploymentRecord) -> Result<bool>,
    ) -> Result<Option<(DeploymentRecord, i64)>> {
        for _ in 0..8 {
            let r = self
                .store
                .get(ns::META, DEPLOYMENT_KEY)
                .await
                .map_err(store_error)?
                .ok_or_else(ApiError::internal)?;
            let mut record: DeploymentRecord = from_json(&r.value)?;
            if !change(&mut record)? {
                return Ok(None);
            }
            match self
                .commit_as(
                    ctx,
                    vec![Op::Put {
                        ns: ns::META,
                        key: DEPLOYMENT_KEY.into(),
                        value: to_json(&record)?,
                        expect: Expect::Revision(r.revision),
                    }],
                )
                .await
            {
                // Revisions grow by one on every write.
                Ok(()) => return Ok(Some((record, r.revision + 1))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            "The deployment record kept changing; retry.",
        ))
    }

    /// Re-reads the token keys and the administrator (another process may have changed them).
    pub async fn reload_token_keys(&self) -> Result<()> {
        let r = self
            .store
            .get(ns::META, DEPLOYMENT_KEY)
            .await
            .map_err(store_error)?
            .ok_or_else(ApiError::internal)?;
        let record: DeploymentRecord = from_json(&r.value)?;
        self.install_token_keys(r.revision, TokenKeys::open(&self.root, &record)?);
        if record.administrator.is_some() {
            *self
                .administrator
                .write()
                .unwrap_or_else(|p| p.into_inner()) = record.administrator;
        }
        Ok(())
    }

    /// Now, Unix seconds, by the deployment's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Every record of `ns` whose key starts with `prefix`, parsed, in key order (read a page at
    /// a time).
    pub(crate) async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        ns: &'static str,
        prefix: &str,
    ) -> Result<Vec<T>> {
        self.list_records(ns, prefix)
            .await?
            .iter()
            .map(|r| from_json(&r.value))
            .collect()
    }

    /// Every record of `namespace` under `prefix`, read page by page.
    pub(crate) async fn list_records(
        &self,
        namespace: &'static str,
        prefix: &str,
    ) -> Result<Vec<keyshift_store::Record>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(namespace, prefix, after.as_deref(), 500)
                .await
                .map_err(store_error)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            out.extend(page);
        }
        Ok(out)
    }

    /// The vault `name` as the store holds it now, with its revision; `404` if there is none.
    pub(crate) async fn stored_vault(&self, name: &str) -> Result<VaultRecord> {
        let record = self
            .store
            .get(ns::VAULT, &name.to_ascii_lowercase())
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("No vault named '{name}'."))
            })?;
        vault_from(&record)
    }

    /// Reloads the vault list from the store (another process may have changed it).
    pub async fn refresh_vaults(&self) -> Result<Vec<Arc<VaultRecord>>> {
        let all: Vec<Arc<VaultRecord>> = self
            .list_records(ns::VAULT, "")
            .await?
            .iter()
            .map(|r| vault_from(r).map(Arc::new))
            .collect::<Result<_>>()?;
        let map = all
            .iter()
            .map(|v| (v.name.to_ascii_lowercase(), v.clone()))
            .collect();
        *self.vaults.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(all)
    }

    /// The vaults known to this process, by name.
    pub fn vaults(&self) -> Vec<Arc<VaultRecord>> {
        let mut v: Vec<_> = self
            .vaults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A vault by name (case-insensitive).
    pub fn vault(&self, name: &str) -> Option<Arc<VaultRecord>> {
        self.vaults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// The default vault, if one exists.
    pub fn default_vault(&self) -> Option<Arc<VaultRecord>> {
        self.vaults().into_iter().find(|v| v.default)
    }

    /// Creates a vault; `ctx`'s audit event is committed with it.
    pub async fn create_vault(
        &self,
        ctx: &RequestContext,
        spec: VaultSpec,
    ) -> Result<Arc<VaultRecord>> {
        check_vault_name(&spec.name)?;
        if !(7..=90).contains(&spec.retention_days) {
            return Err(ApiError::bad_parameter(
                "Soft-delete retention must be between 7 and 90 days.",
            ));
        }
        let now = self.clock.now();
        let mut ops = Vec::new();
        let security_domain = if spec.new_security_domain {
            let sd_id = new_id()?;
            let sd_key = SealingKey::generate().map_err(crypto_internal)?;
            let sd = SecurityDomainRecord {
                id: sd_id.clone(),
                sealed_key: self
                    .root
                    .seal(&security_domain_aad(&sd_id), &sd_key.to_bytes())
                    .map_err(crypto_internal)?,
                created: now,
            };
            ops.push(Op::Put {
                ns: ns::SECURITY_DOMAIN,
                key: sd_id.clone(),
                value: to_json(&sd)?,
                expect: Expect::Absent,
            });
            sd_id
        } else {
            self.record.default_security_domain.clone()
        };
        let existing = self.refresh_vaults().await?;
        if let Some(port) = spec.port {
            if let Some(other) = existing.iter().find(|v| v.port == Some(port)) {
                return Err(ApiError::conflict(format!(
                    "Port {port} already serves vault '{}'.",
                    other.name
                )));
            }
        }
        if spec.default && existing.iter().any(|v| v.default) {
            return Err(ApiError::conflict("A default vault exists already."));
        }
        let vault = VaultRecord {
            id: new_id()?,
            name: spec.name.clone(),
            kind: spec.kind,
            security_domain,
            retention_days: spec.retention_days,
            purge_protection: spec.purge_protection,
            port: spec.port,
            default: spec.default,
            created: now,
            revision: 0,
        };
        ops.push(Op::Put {
            ns: ns::VAULT,
            key: spec.name.to_ascii_lowercase(),
            value: to_json(&vault)?,
            expect: Expect::Absent,
        });
        self.commit_as(ctx, ops).await.map_err(|e| match e {
            StoreError::Conflict { .. } => {
                ApiError::conflict(format!("A vault named '{}' exists already.", spec.name))
            }
            other => store_error(other),
        })?;
        self.refresh_vaults().await?;
        self.grant_administrator(ctx, &vault).await?;
        Ok(Arc::new(vault))
    }

    /// The administrator's principal object id, once recorded.
    pub fn administrator(&self) -> Option<String> {
        self.administrator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) async fn record_administrator(
        &self,
        ctx: &RequestContext,
        principal_id: &str,
    ) -> Result<()> {
        self.update_deployment_record(ctx, |record| {
            if record.administrator.as_deref() == Some(principal_id) {
                return Ok(false);
            }
            record.administrator = Some(principal_id.to_owned());
            Ok(true)
        })
        .await?;
        *self
            .administrator
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(principal_id.to_owned());
        Ok(())
    }

    /// Switches purge protection on, for `ctx`. It can never be switched off.
    pub async fn enable_purge_protection(
        &self,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<Arc<VaultRecord>> {
        let mut vault = self.stored_vault(name).await?;
        vault.purge_protection = true;
        self.commit_as(
            ctx,
            vec![Op::Put {
                ns: ns::VAULT,
                key: name.to_ascii_lowercase(),
                value: to_json(&vault)?,
                expect: Expect::Revision(vault.revision),
            }],
        )
        .await
        .map_err(store_error)?;
        Ok(self
            .refresh_vaults()
            .await?
            .into_iter()
            .find(|v| v.id == vault.id)
            .unwrap_or_else(|| Arc::new(vault)))
    }

    /// Deletes an empty vault, for `ctx`. A vault that still holds keys, live or soft-deleted, is refused:
    /// deleting it would destroy key material something may still need. The check is part of
    /// the deletion's transaction, so a key created meanwhile is either seen or refused.
    pub async fn delete_vault(&self, ctx: &RequestContext, name: &str) -> Result<()> {
        let vault = self.stored_vault(name).await?;
        if vault.default {
            return Err(ApiError::bad_parameter(
                "The default vault cannot be deleted.",
            ));
        }
        let mut ops = holds_no_keys(&vault).to_vec();
        ops.push(Op::Delete {
            ns: ns::VAULT,
            key: name.to_ascii_lowercase(),
            expect: Expect::Revision(vault.revision),
        });
        self.commit_as(ctx, ops).await.map_err(|e| match e {
            StoreError::Conflict { ns, .. } if ns == ns::KEY || ns == ns::DELETED_KEY => {
                ApiError::conflict(format!(
                    "Vault '{name}' still holds keys (live or soft-deleted); delete and purge them first."
                ))
            }
            other => store_error(other),
        })?;
        self.refresh_vaults().await?;
        Ok(())
    }

    /// [`admits_keys`] for the vault `vault` as the store holds it now, when keys may still be
    /// added to it as `vault` said they would be (the same vault, the same security domain); for
    /// a commit that found its copy stale.
    pub(crate) async fn recheck_vault(&self, vault: &VaultRecord) -> Result<Op> {
        let now = self
            .refresh_vaults()
            .await?
            .into_iter()
            .find(|v| v.id == vault.id)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("Vault '{}' was deleted meanwhile.", vault.name),
                )
            })?;
        if now.security_domain != vault.security_domain {
            return Err(ApiError::conflict(format!(
                "Vault '{}' took another security domain meanwhile; retry.",
                vault.name
            )));
        }
        Ok(admits_keys(&now))
    }

    /// A deployment-wide RSA key kept in `meta` under `record`, sealed under the root key with
    /// `aad`: made (`bits`, with a fresh id) and stored on first use. When another process makes
    /// it at the same moment, the one stored first is used by both.
    pub(crate) async fn sealed_rsa_key(
        &self,
        record: &str,
        aad: &[u8],
        bits: u32,
        what: &str,
    ) -> Result<(String, keyshift_crypto::KeyMaterial)> {
        use keyshift_crypto::KeyMaterial;
        for _ in 0..4 {
            if let Some(r) = self
                .store
                .get(ns::META, record)
                .await
                .map_err(store_error)?
            {
                let stored: SealedKeyRecord = from_json(&r.value)?;
                let bytes = self.root.open(aad, &stored.sealed).map_err(|_| {
                    ApiError::new(
                        ErrorCode::ServiceUnavailable,
                        format!("The root key does not open the {what}."),
                    )
                })?;
                let key = KeyMaterial::from_pkcs8_der(&bytes).map_err(crypto_internal)?;
                return Ok((stored.kid.unwrap_or_default(), key));
            }
            let key = tokio::task::spawn_blocking(move || KeyMaterial::generate_rsa(bits))
                .await
                .map_err(|_| ApiError::internal())?
                .map_err(crypto_internal)?;
            let stored = SealedKeyRecord {
                kid: Some(new_id()?),
                sealed: self
                    .root
                    .seal(aad, &key.transfer_plaintext())
                    .map_err(crypto_internal)?,
                created: self.clock.now(),
            };
            match self
                .store
                .commit(vec![Op::Put {
                    ns: ns::META,
                    key: record.into(),
                    value: to_json(&stored)?,
                    expect: Expect::Absent,
                }])
                .await
            {
                Ok(()) => {
                    tracing::info!("{what} created");
                    return Ok((stored.kid.unwrap_or_default(), key));
                }
                // Another process made it first: use that one.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(format!(
            "The {what} could not be created; retry."
        )))
    }

    /// The security-domain key of a vault.
    pub(crate) async fn security_domain_key(&self, sd_id: &str) -> Result<Arc<SealingKey>> {
        if let Some(k) = self
            .sd_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(sd_id)
        {
            return Ok(k.clone());
        }
        let record = self
            .store
            .get(ns::SECURITY_DOMAIN, sd_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                tracing::error!(sd_id, "security domain missing");
                ApiError::internal()
            })?;
        let sd: SecurityDomainRecord = from_json(&record.value)?;
        let bytes = self
            .root
            .open(&security_domain_aad(sd_id), &sd.sealed_key)
            .map_err(crypto_internal)?;
        let key = Arc::new(SealingKey::from_bytes(&bytes).map_err(crypto_internal)?);
        self.sd_keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sd_id.to_owned(), key.clone());
        Ok(key)
    }

    /// Creates a service principal with a client secret.
    pub async fn create_principal(&self, display_name: &str) -> Result<NewPrincipal> {
        self.create_principal_with(&RequestContext::local(), display_name, false)
            .await
    }

    /// Creates a service principal with a client secret; `deployment_admin` lets it manage
    /// principals and trusted issuers through the admin API.
    pub async fn create_principal_with(
        &self,
        ctx: &RequestContext,
        display_name: &str,
        deployment_admin: bool,
    ) -> Result<NewPrincipal> {
        if display_name.trim().is_empty()
            || display_name.len() > 256
            || display_name.chars().any(char::is_control)
        {
            return Err(ApiError::bad_parameter(
                "A display name is 1 to 256 characters, without control characters.",
            ));
        }
        let secret_bytes = keyshift_crypto::random_bytes(32).map_err(crypto_internal)?;
        let client_secret = keyshift_api::b64::encode(&secret_bytes);
        let principal = PrincipalRecord {
            id: uuid_like()?,
            client_id: uuid_like()?,
            display_name: display_name.to_owned(),
            secret_hashes: vec![
                keyshift_crypto::secret::hash_secret(client_secret.as_bytes())
                    .map_err(crypto_internal)?,
            ],
            enabled: true,
            certificates: Vec::new(),
            federated_credentials: Vec::new(),
            deployment_admin,
            created: self.clock.now(),
        };
        self.commit_as(
            ctx,
            vec![Op::Put {
                ns: ns::PRINCIPAL,
                key: principal.client_id.clone(),
                value: to_json(&principal)?,
                expect: Expect::Absent,
            }],
        )
        .await
        .map_err(store_error)?;
        ctx.note_subject(&principal.id);
        Ok(NewPrincipal {
            principal,
            client_secret,
        })
    }

    /// Whether any principal exists.
    pub async fn principal_count(&self) -> Result<usize> {
        Ok(self
            .store
            .list(ns::PRINCIPAL, "", None, 1)
            .await
            .map_err(store_error)?
            .len())
    }

    /// The principal with this client id.
    pub async fn principal_by_client_id(&self, client_id: &str) -> Result<Option<PrincipalRecord>> {
        match self
            .store
            .get(ns::PRINCIPAL, client_id)
            .await
            .map_err(store_error)?
        {
            Some(r) => Ok(Some(from_json(&r.value)?)),
            None => Ok(None),
        }
    }

    /// The principal with this client id or, failing that, this object id.
    pub async fn principal_by_id_or_client_id(&self, id: &str) -> Result<Option<PrincipalRecord>> {
        if let Some(p) = self.principal_by_client_id(id).await? {
            return Ok(Some(p));
        }
        Ok(self.principals().await?.into_iter().find(|p| p.id == id))
    }

    /// Whether a principal may manage principals and trusted issuers: it has the flag, or it is
    /// the administrator created at first start (recorded before the flag existed).
    pub fn is_deployment_admin(&self, p: &PrincipalRecord) -> bool {
        p.deployment_admin || self.administrator().as_deref() == Some(p.id.as_str())
    }

    /// The caller of an admin API request, if it is an enabled deployment administrator; `403`
    /// otherwise.
    pub async fn require_deployment_admin(
        &self,
        client_id: &str,
        principal_id: &str,
    ) -> Result<PrincipalRecord> {
        let caller = self
            .principal_by_client_id(client_id)
            .await?
            .filter(|p| p.enabled && p.id == principal_id);
        match caller {
            Some(p) if self.is_deployment_admin(&p) => Ok(p),
            _ => Err(ApiError::forbidden(format!(
                "Caller {} is not a deployment administrator: only deployment administrators may manage principals and trusted issuers.",
                crate::naming::printable(principal_id)
            ))),
        }
    }

    pub(crate) async fn principal_for_update(
        &self,
        client_id: &str,
    ) -> Result<(PrincipalRecord, i64)> {
        let r = self
            .store
            .get(ns::PRINCIPAL, client_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("No principal with client id {client_id}."),
                )
            })?;
        Ok((from_json(&r.value)?, r.revision))
    }

    /// Writes a principal back if nobody changed it since it was read (else `409`).
    pub(crate) async fn save_principal(
        &self,
        ctx: &RequestContext,
        p: &PrincipalRecord,
        revision: i64,
    ) -> Result<()> {
        self.commit_as(
            ctx,
            vec![Op::Put {
                ns: ns::PRINCIPAL,
                key: p.client_id.clone(),
                value: to_json(p)?,
                expect: Expect::Revision(revision),
            }],
        )
        .await
        .map_err(store_error)?;
        self.principal_changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Every principal.
    pub async fn principals(&self) -> Result<Vec<PrincipalRecord>> {
        self.list_all(ns::PRINCIPAL, "").await
    }

    /// Enables or disables a principal. A disabled principal gets no tokens, and the tokens it
    /// holds stop working within a second.
    pub async fn set_principal_enabled(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        enabled: bool,
    ) -> Result<PrincipalRecord> {
        let (mut p, revision) = self.principal_for_update(client_id).await?;
        p.enabled = enabled;
        self.save_principal(ctx, &p, revision).await?;
        Ok(p)
    }

    /// Adds a client secret to a principal and returns it (shown once).
    pub async fn add_principal_secret(
        &self,
        ctx: &RequestContext,
        client_id: &str,
    ) -> Result<String> {
        let (mut p, revision) = self.principal_for_update(client_id).await?;
        let secret =
            keyshift_api::b64::encode(&keyshift_crypto::random_bytes(32).map_err(crypto_internal)?);
        p.secret_hashes.push(
            keyshift_crypto::secret::hash_secret(secret.as_bytes()).map_err(crypto_internal)?,
        );
        self.save_principal(ctx, &p, revision).await?;
        Ok(secret)
    }

    /// Adds the certificate(s) of a PEM text to a principal; returns their SHA-1 thumbprints.
    pub async fn add_principal_certificate(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        pem: &[u8],
    ) -> Result<Vec<String>> {
        let ders = keyshift_crypto::x509::pem_certificates(pem);
        if ders.is_empty() {
            return Err(ApiError::bad_parameter(
                "No CERTIFICATE block found in the PEM.",
            ));
        }
        let mut added = Vec::new();
        let mut certs = Vec::new();
        for der in ders {
            let parsed = keyshift_crypto::x509::parse_certificate(&der).map_err(|e| {
                ApiError::bad_parameter(format!("The certificate is not usable: {e}"))
            })?;
            let keyshift_crypto::PublicKey::Rsa { n, e } = parsed.public_key else {
                return Err(ApiError::bad_parameter(
                    "Only RSA certificates are supported.",
                ));
            };
            let cert = crate::records::PrincipalCertificate {
                x5t: keyshift_api::b64::encode(&parsed.sha1_thumbprint),
                x5t_s256: keyshift_api::b64::encode(&parsed.sha256_thumbprint),
                n,
                e,
                not_after: parsed.not_after,
            };
            added.push(cert.x5t.clone());
            certs.push(cert);
        }
        let (mut p, revision) = self.principal_for_update(client_id).await?;
        for c in certs {
            if !p.certificates.iter().any(|x| x.x5t_s256 == c.x5t_s256) {
                p.certificates.push(c);
            }
        }
        self.save_principal(ctx, &p, revision).await?;
        Ok(added)
    }

    /// Deletes a principal. Its tokens stop working within a second. The administrator cannot be deleted.
    pub async fn delete_principal(
        &self,
        ctx: &RequestContext,
        client_id: &str,
    ) -> Result<PrincipalRecord> {
        let (p, revision) = self.principal_for_update(client_id).await?;
        if self.administrator().as_deref() == Some(p.id.as_str()) {
            return Err(ApiError::bad_parameter(
                "The deployment's administrator cannot be deleted.",
            ));
        }
        self.commit_as(
            ctx,
            vec![Op::Delete {
                ns: ns::PRINCIPAL,
                key: client_id.to_owned(),
                expect: Expect::Revision(revision),
            }],
        )
        .await
        .map_err(store_error)?;
        self.principal_changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(p)
    }

    /// Checks a client secret; `None` when the client is unknown, disabled or the secret is wrong.
    ///
    /// A secret that passed the Argon2id check is remembered for a few minutes (by an HMAC under
    /// a key that never leaves this process, with the hash it matched), so that a client asking
    /// for tokens again does not pay the slow hash each time. A remembered secret is accepted only
    /// while the principal is enabled and still holds that very hash: removing the secret or
    /// disabling the principal takes effect at once. Wrong secrets and unknown ids always pay the
    /// full check, so timing tells nothing new.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<PrincipalRecord>> {
        let Some(p) = self.principal_by_client_id(client_id).await? else {
            // Spend the same effort as a real check, so timing does not reveal which ids exist.
            let _ = keyshift_crypto::secret::verify_secret(secret.as_bytes(), DUMMY_PHC);
            return Ok(None);
        };
        let now = self.clock.now();
        let tag = self.verified_secrets.tag(client_id, secret);
        if let Some(hash) = self.verified_secrets.get(&tag, now) {
            if p.enabled && p.secret_hashes.contains(&hash) {
                return Ok(Some(p));
            }
        }
        let matched = p
            .secret_hashes
            .iter()
            .find(|h| keyshift_crypto::secret::verify_secret(secret.as_bytes(), h));
        match matched {
            Some(hash) if p.enabled => {
                self.verified_secrets.insert(tag, hash.clone(), now);
                Ok(Some(p))
            }
            _ => Ok(None),
        }
    }
}

/// Client secrets that passed the Argon2id check recently: HMAC-SHA-256 of the client id and
/// secret under a random per-process key, mapped to the stored hash that matched and when.
/// Bounded; nothing in it reveals a secret.
struct VerifiedSecrets {
    key: zeroize::Zeroizing<Vec<u8>>,
    entries: std::sync::Mutex<HashMap<[u8; 32], (String, i64)>>,
}

impl VerifiedSecrets {
    /// How long a verified secret is remembered.
    const TTL_SECONDS: i64 = 300;
    /// Most entries kept; the map is emptied when full.
    const MAX_ENTRIES: usize = 4096;

    fn new() -> Result<Self> {
        Ok(VerifiedSecrets {
            key: zeroize::Zeroizing::new(
                keyshift_crypto::random_bytes(32).map_err(crypto_internal)?,
            ),
            entries: Default::default(),
        })
    }

    fn tag(&self, client_id: &str, secret: &str) -> [u8; 32] {
        let mut input = Vec::with_capacity(client_id.len() + 1 + secret.len());
        input.extend_from_slice(client_id.as_bytes());
        input.push(0);
        input.extend_from_slice(secret.as_bytes());
        let tag = keyshift_crypto::digest::hmac_sha256(&self.key, &input);
        zeroize::Zeroize::zeroize(&mut input);
        tag
    }

    fn get(&self, tag: &[u8; 32], now: i64) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(tag)
            .filter(|(_, at)| now >= *at && now - *at < Self::TTL_SECONDS)
            .map(|(hash, _)| hash.clone())
    }

    fn insert(&self, tag: [u8; 32], hash: String, now: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(tag, (hash, now));
    }
}

/// How long a retired token signing key still verifies tokens: longer than any token lives.
pub const RETIRED_TOKEN_KEY_SECONDS: i64 = 86_400;

/// The current token signing key and the public points of retired ones.
struct TokenKeys {
    current: Arc<TokenSigningKey>,
    retired: Vec<crate::records::RetiredTokenKey>,
}

impl TokenKeys {
    fn open(root: &crate::root::RootKey, record: &DeploymentRecord) -> Result<Self> {
        let bytes = root.open(TOKEN_KEY_AAD, &record.token_signing_key).map_err(|_| {
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The root key does not open this deployment's secrets: wrong root key for this data directory?",
            )
        })?;
        Ok(TokenKeys {
            current: Arc::new(TokenSigningKey::from_bytes(&bytes).map_err(crypto_internal)?),
            retired: record.retired_token_keys.clone(),
        })
    }
}

/// A valid Argon2id hash of a random secret, used to equalise timing for unknown client ids.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$w3Vn4VvV1qS4bL8m1qY8o8m1G8oW8T3z0m3a3M3b3c0";

/// A random UUID in its usual 8-4-4-4-12 form.
fn uuid_like() -> Result<String> {
    let hex = new_id()?;
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}
