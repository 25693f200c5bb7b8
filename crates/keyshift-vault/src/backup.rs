//! The security domain leaving one deployment and entering another, and full vault backups.
//!
//! A vault's keys are sealed under its security-domain key (`sealing.rs`), and so is every
//! backup of them. Moving a vault to another deployment (another region, a rebuilt machine)
//! therefore takes two steps, as Managed HSM does:
//!
//! 1. **Security domain.** `download_security_domain` splits the domain key into N Shamir shares
//!    (M needed), each encrypted to one custodian's RSA certificate: the file that comes out is
//!    useless without M custodians' private keys. In the other deployment, `GET
//!    /securitydomain/upload` gives its *transfer key*; the custodians' side (`keyshift
//!    security-domain upload`, [`recombine`] and [`upload_for`]) decrypts M shares, recombines
//!    the domain key and wraps it to that transfer key; `upload_security_domain` unwraps it and
//!    gives an empty vault that domain. The shares never reach either server.
//! 2. **Full backup.** `full_backup` seals every key (all versions, attributes, tags, rotation
//!    and release policies), every role assignment and custom role definition of a vault under
//!    its domain key; `full_restore` opens it only in a vault of the same domain, so restoring
//!    without the security domain is refused. A restore can take one key only (selective).

use crate::deployment::{from_json, holds_no_keys, store_error, to_json, Deployment};
use crate::keys::BackupPayload;
use crate::naming::key_key;
use crate::rbac::Action;
use crate::records::{ns, KeyRecord, SecurityDomainRecord, VaultKind, VaultRecord};
use crate::sealing::security_domain_aad;
use crate::{RequestContext, Result};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_crypto::digest::{hmac_sha256, hmac_sha256_verify};
use keyshift_crypto::seal::SealingKey;
use keyshift_crypto::shamir::{self, Share};
use keyshift_crypto::transfer::{rsa_aes_key_wrap, OaepHash};
use keyshift_crypto::{KeyMaterial, PublicKey};
use keyshift_store::{Expect, Op, StoreError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// `format` of a downloaded security domain.
pub const SECURITY_DOMAIN_FORMAT: &str = "keyshift-security-domain/1";
/// `format` of an upload.
pub const UPLOAD_FORMAT: &str = "keyshift-security-domain-upload/1";
/// Custodians a security domain is split to, as Managed HSM allows.
pub const CUSTODIANS: std::ops::RangeInclusive<usize> = 3..=10;
const CHECK_DOMAIN: &[u8] = b"keyshift security domain check v1\0";
const SHARE_DOMAIN: &[u8] = b"keyshift-sd-share/1\0";
const TRANSFER_KEY_RECORD: &str = "security_domain_transfer_key";
const TRANSFER_KEY_AAD: &[u8] = b"keyshift/security-domain-transfer-key/v1";
const FULL_BACKUP_MAGIC: &[u8] = b"KEYSHIFT-VAULT-BACKUP\x01";
/// `format` of a full backup's manifest.
pub const BACKUP_FORMAT: &str = "keyshift-vault-backup/1";

/// A custodian's certificate, as the security domain is split to it.
#[derive(Debug, Clone)]
pub struct CustodianKey {
    /// The RSA public key (2048 bits or more).
    pub public_key: PublicKey,
    /// SHA-256 of the DER certificate, base64url (`x5t#S256`).
    pub thumbprint: String,
}

/// A downloaded security domain: the domain key split to custodians.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityDomainFile {
    /// [`SECURITY_DOMAIN_FORMAT`].
    pub format: String,
    /// The domain's id.
    pub security_domain: String,
    /// Shares needed to recombine the key.
    pub required: usize,
    /// HMAC-SHA256 under the domain key of its id: tells a good recombination from a bad one.
    pub check: String,
    /// One share per custodian.
    pub shares: Vec<EncryptedShare>,
}

/// One share, encrypted to one custodian.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShare {
    /// The custodian certificate's SHA-256 thumbprint, base64url.
    pub x5t_256: String,
    /// `CKM_RSA_AES_KEY_WRAP` (RSA-OAEP-256, then AES key wrap with padding) of the share, to
    /// the custodian's key, base64url.
    pub enc_share: String,
}

/// A deployment's transfer key, as `GET /securitydomain/upload` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferKey {
    /// `jwk`.
    pub key_format: String,
    /// The RSA public key.
    pub transfer_key: TransferJwk,
}

/// An RSA public JWK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferJwk {
    /// `RSA`.
    pub kty: String,
    /// Identifies the key; an upload names it.
    pub kid: String,
    /// `RSA-OAEP-256`.
    pub alg: String,
    /// `["wrapKey"]`.
    pub key_ops: Vec<String>,
    /// Modulus, base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
}

/// The body of `POST /securitydomain/upload` (as the JSON string in its `value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityDomainUpload {
    /// [`UPLOAD_FORMAT`].
    pub format: String,
    /// The domain's id.
    pub security_domain: String,
    /// As in the downloaded file.
    pub check: String,
    /// The transfer key it is wrapped to.
    pub transfer_kid: String,
    /// `CKM_RSA_AES_KEY_WRAP` (SHA-256) of the domain key to the transfer key, base64url.
    pub wrapped_key: String,
}

/// What a full backup wrote.
#[derive(Debug)]
pub struct FullBackup {
    /// The sealed backup.
    pub blob: Vec<u8>,
    /// What it holds, in the clear.
    pub manifest: BackupManifest,
}

/// The clear description of a full backup, kept beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// The vault backed up.
    pub vault: String,
    /// Its kind.
    pub kind: VaultKind,
    /// The security domain a restore needs.
    pub security_domain: String,
    /// When, Unix seconds.
    pub created: i64,
    /// Keys in it.
    pub keys: usize,
    /// Role assignments in it.
    pub role_assignments: usize,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Keys written.
    pub keys_restored: usize,
    /// Keys already there with the same current version (an earlier, interrupted run).
    pub keys_present: usize,
    /// Role assignments and custom role definitions written.
    pub roles_restored: usize,
    /// Those already there under the same name (kept as they are).
    pub roles_present: usize,
}

/// The sealed content of a full backup.
#[derive(Serialize, Deserialize)]
struct FullBackupPayload {
    vault: String,
    kind: VaultKind,
    created: i64,
    keys: Vec<BackupPayload>,
    /// Records of `ns::ROLE_ASSIGNMENT`, as stored.
    role_assignments: Vec<NamedRecord>,
    /// Records of `ns::ROLE_DEFINITION`, as stored.
    role_definitions: Vec<NamedRecord>,
}

#[derive(Serialize, Deserialize)]
struct NamedRecord {
    name: String,
    value: serde_json::Value,
}

fn check_value(key: &[u8], id: &str) -> String {
    keyshift_api::b64::encode(&hmac_sha256(key, &[CHECK_DOMAIN, id.as_bytes()].concat()))
}

fn check_matches(key: &[u8], id: &str, check: &str) -> bool {
    keyshift_api::b64::decode(check)
        .is_ok_and(|tag| hmac_sha256_verify(key, &[CHECK_DOMAIN, id.as_bytes()].concat(), &tag))
}

fn full_backup_aad(sd_id: &str) -> Vec<u8> {
    [FULL_BACKUP_MAGIC, sd_id.as_bytes()].concat()
}

fn share_plaintext(id: &str, share: &Share) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(64 + share.y.len()));
    p.extend_from_slice(SHARE_DOMAIN);
    p.extend_from_slice(id.as_bytes());
    p.push(0);
    p.push(share.x);
    p.extend_from_slice(&share.y);
    p
}

fn parse_share(id: &str, plain: &[u8]) -> std::result::Result<Share, String> {
    let prefix = [SHARE_DOMAIN, id.as_bytes(), &[0]].concat();
    let rest = plain
        .strip_prefix(prefix.as_slice())
        .ok_or("the share belongs to another security domain")?;
    let (&x, y) = rest.split_first().ok_or("the share is empty")?;
    if x == 0 || y.is_empty() {
        return Err("the share is malformed".into());
    }
    Ok(Share {
        x,
        y: Zeroizing::new(y.to_vec()),
    })
}

/// The custodians' side of an upload: decrypts the shares that `keys` (custodians' RSA private
/// keys) open, and recombines the domain key once `required` of them did. The recombined key is
/// checked against the file's check value.
pub fn recombine(
    file: &SecurityDomainFile,
    keys: &[KeyMaterial],
) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    if file.format != SECURITY_DOMAIN_FORMAT {
        return Err(format!(
            "not a Keyshift security domain (format '{}')",
            file.format
        ));
    }
    let mut shares: Vec<Share> = Vec::new();
    for key in keys {
        let mut opened = false;
        for s in &file.shares {
            let Ok(blob) = keyshift_api::b64::decode(&s.enc_share) else {
                continue;
            };
            if let Ok(plain) = key.rsa_aes_key_unwrap(OaepHash::Sha256, &blob) {
                let share = parse_share(&file.security_domain, &plain)?;
                if !shares.iter().any(|have| have.x == share.x) {
                    shares.push(share);
                }
                opened = true;
                break;
            }
        }
        if !opened {
            return Err(
                "a custodian key opens none of the file's shares (not one of its custodians?)"
                    .into(),
            );
        }
    }
    if shares.len() < file.required {
        return Err(format!(
            "{} of the {} shares needed were opened",
            shares.len(),
            file.required
        ));
    }
    let key = shamir::combine(&shares).map_err(|e| e.to_string())?;
    if !check_matches(&key, &file.security_domain, &file.check) {
        return Err("the shares do not recombine to the security domain's key".into());
    }
    Ok(key)
}

/// Wraps a recombined domain key to the target deployment's transfer key.
pub fn upload_for(
    file: &SecurityDomainFile,
    key: &[u8],
    transfer: &TransferKey,
) -> std::result::Result<SecurityDomainUpload, String> {
    let jwk = &transfer.transfer_key;
    if jwk.kty != "RSA" {
        return Err(format!("the transfer key is not RSA but '{}'", jwk.kty));
    }
    let public = PublicKey::Rsa {
        n: keyshift_api::b64::decode(&jwk.n).map_err(|_| "the transfer key's n is malformed")?,
        e: keyshift_api::b64::decode(&jwk.e).map_err(|_| "the transfer key's e is malformed")?,
    };
    let wrapped = rsa_aes_key_wrap(&public, OaepHash::Sha256, key).map_err(|e| e.to_string())?;
    Ok(SecurityDomainUpload {
        format: UPLOAD_FORMAT.into(),
        security_domain: file.security_domain.clone(),
        check: file.check.clone(),
        transfer_kid: jwk.kid.clone(),
        wrapped_key: keyshift_api::b64::encode(&wrapped),
    })
}

fn crypto_internal(e: keyshift_crypto::CryptoError) -> ApiError {
    tracing::error!(error = %e, "security domain crypto failure");
    ApiError::internal()
}

impl Deployment {
    /// `POST /securitydomain/download`: the vault's security-domain key split into one share per
    /// custodian, `required` of them needed.
    pub async fn download_security_domain(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        custodians: &[CustodianKey],
        required: usize,
    ) -> Result<SecurityDomainFile> {
        self.authorize(ctx, vault, Action::SecurityDomainDownload, "/")
            .await?;
        if !CUSTODIANS.contains(&custodians.len()) {
            return Err(ApiError::bad_parameter(format!(
                "A security domain is split to 3 to 10 custodian certificates; {} were given.",
                custodians.len()
            )));
        }
        if !(2..=custodians.len()).contains(&required) {
            return Err(ApiError::bad_parameter(format!(
                "The quorum ('required') must be between 2 and the number of certificates ({}); it is {required}.",
                custodians.len()
            )));
        }
        for (i, c) in custodians.iter().enumerate() {
            if custodians[..i].iter().any(|o| o.thumbprint == c.thumbprint) {
                return Err(ApiError::bad_parameter(
                    "The same certificate is given twice: each share needs its own custodian.",
                ));
            }
        }
        let sd = self.security_domain_key(&vault.security_domain).await?;
        let key = sd.to_bytes();
        let shares = shamir::split(&key, custodians.len(), required).map_err(crypto_internal)?;
        let mut out = Vec::with_capacity(shares.len());
        for (share, custodian) in shares.iter().zip(custodians) {
            let plain = share_plaintext(&vault.security_domain, share);
            let blob =
                rsa_aes_key_wrap(&custodian.public_key, OaepHash::Sha256, &plain).map_err(|e| {
                    ApiError::bad_parameter(format!(
                        "A custodian certificate's key is unusable: {e}"
                    ))
                })?;
            out.push(EncryptedShare {
                x5t_256: custodian.thumbprint.clone(),
                enc_share: keyshift_api::b64::encode(&blob),
            });
        }
        Ok(SecurityDomainFile {
            format: SECURITY_DOMAIN_FORMAT.into(),
            security_domain: vault.security_domain.clone(),
            required,
            check: check_value(&key, &vault.security_domain),
            shares: out,
        })
    }

    /// Whether `ctx` may do `action` on the whole of `vault`: what the security-domain and
    /// backup endpoints check before they read their request's body. (The operations below
    /// check it again themselves.)
    pub async fn authorize_vault(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        action: Action,
    ) -> Result<()> {
        self.authorize(ctx, vault, action, "/").await
    }

    /// `GET /securitydomain/upload`: the deployment's transfer key, made on first use.
    pub async fn security_domain_transfer_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
    ) -> Result<TransferKey> {
        self.authorize(ctx, vault, Action::SecurityDomainTransferKey, "/")
            .await?;
        let (kid, key) = self.transfer_key().await?;
        let PublicKey::Rsa { n, e } = key.public_key() else {
            return Err(ApiError::internal());
        };
        Ok(TransferKey {
            key_format: "jwk".into(),
            transfer_key: TransferJwk {
                kty: "RSA".into(),
                kid,
                alg: "RSA-OAEP-256".into(),
                key_ops: vec!["wrapKey".into()],
                n: keyshift_api::b64::encode(&n),
                e: keyshift_api::b64::encode(&e),
            },
        })
    }

    async fn transfer_key(&self) -> Result<(String, KeyMaterial)> {
        self.sealed_rsa_key(TRANSFER_KEY_RECORD, TRANSFER_KEY_AAD, 3072, "transfer key")
            .await
    }

    /// `POST /securitydomain/upload`: gives `vault`, which must hold no keys, the uploaded
    /// security domain, so that backups made under it restore here.
    pub async fn upload_security_domain(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        upload: &SecurityDomainUpload,
    ) -> Result<()> {
        self.authorize(ctx, vault, Action::SecurityDomainUpload, "/")
            .await?;
        if upload.format != UPLOAD_FORMAT {
            return Err(ApiError::bad_parameter(
                "The upload is not a Keyshift security-domain upload (make it with `keyshift security-domain upload`).",
            ));
        }
        if upload.security_domain.len() != 32
            || !upload
                .security_domain
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ApiError::bad_parameter(
                "The upload names a malformed security domain id.",
            ));
        }
        let (kid, transfer) = self.transfer_key().await?;
        if upload.transfer_kid != kid {
            return Err(ApiError::bad_parameter(
                "The upload is wrapped to another transfer key: fetch this deployment's with GET /securitydomain/upload and wrap it again.",
            )
            .with_inner("TransferKeyMismatch"));
        }
        let wrapped = keyshift_api::b64::decode(&upload.wrapped_key)
            .map_err(|_| ApiError::bad_parameter("The wrapped key is not base64url."))?;
        let key = transfer
            .rsa_aes_key_unwrap(OaepHash::Sha256, &wrapped)
            .map_err(|_| {
                ApiError::bad_parameter(
                    "The wrapped key does not unwrap with this deployment's transfer key.",
                )
            })?;
        if !check_matches(&key, &upload.security_domain, &upload.check) {
            return Err(ApiError::bad_parameter(
                "The uploaded key does not match the security domain's check value.",
            )
            .with_inner("SecurityDomainCheckFailed"));
        }
        let sd_key = SealingKey::from_bytes(&key)
            .map_err(|_| ApiError::bad_parameter("The uploaded key is not a domain key."))?;
        if vault.security_domain == upload.security_domain {
            return Ok(());
        }
        // The vault changes only at the revision read here, and only if it holds no key, live
        // or soft-deleted (those are sealed under the domain it would leave), checked in the
        // same transaction: a key created meanwhile is seen by that check, or refused by its
        // own check of the vault's revision (`admits_keys`).
        let vault = &self.stored_vault(&vault.name).await?;
        let mut ops = holds_no_keys(vault).to_vec();
        match self
            .store
            .get(ns::SECURITY_DOMAIN, &upload.security_domain)
            .await
            .map_err(store_error)?
        {
            Some(_) => {
                // Known here already (another vault has it): it must be the same key.
                let have = self.security_domain_key(&upload.security_domain).await?;
                if !check_matches(&have.to_bytes(), &upload.security_domain, &upload.check) {
                    return Err(ApiError::conflict(
                        "This deployment holds a different key under that security domain id.",
                    ));
                }
            }
            None => {
                let record = SecurityDomainRecord {
                    id: upload.security_domain.clone(),
                    sealed_key: self
                        .root
                        .seal(
                            &security_domain_aad(&upload.security_domain),
                            &sd_key.to_bytes(),
                        )
                        .map_err(crypto_internal)?,
                    created: self.clock.now(),
                };
                ops.push(Op::Put {
                    ns: ns::SECURITY_DOMAIN,
                    key: upload.security_domain.clone(),
                    value: to_json(&record)?,
                    expect: Expect::Absent,
                });
            }
        }
        let mut record = vault.clone();
        record.security_domain = upload.security_domain.clone();
        ops.push(Op::Put {
            ns: ns::VAULT,
            key: vault.name.to_ascii_lowercase(),
            value: to_json(&record)?,
            expect: Expect::Revision(vault.revision),
        });
        self.commit_as(ctx, ops).await.map_err(|e| match e {
            StoreError::Conflict { ns, .. } if ns == ns::KEY || ns == ns::DELETED_KEY => {
                ApiError::conflict(format!(
                    "Vault '{}' holds keys (live or soft-deleted), sealed under its current security domain; upload a security domain into a new, empty vault.",
                    vault.name
                ))
                .with_inner("VaultNotEmpty")
            }
            StoreError::Conflict { .. } => ApiError::conflict(
                "The vault or the security domain changed meanwhile; retry the upload.",
            ),
            other => store_error(other),
        })?;
        self.refresh_vaults().await?;
        tracing::info!(vault = %vault.name, security_domain = %upload.security_domain, "security domain uploaded");
        Ok(())
    }

    /// `POST /backup`: every live key of `vault` with all its versions, and its role
    /// assignments and custom role definitions, sealed under its security-domain key.
    pub async fn full_backup(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
    ) -> Result<FullBackup> {
        self.authorize(ctx, vault, Action::BackupStart, "/").await?;
        let sd = self.security_domain_key(&vault.security_domain).await?;
        let prefix = format!("{}/", vault.id);
        let mut keys = Vec::new();
        for r in self.list_records(ns::KEY, &prefix).await? {
            let key: KeyRecord = from_json(&r.value)?;
            keys.push(self.key_backup_payload(vault, &sd, &key).await?);
        }
        let named = |records: Vec<keyshift_store::Record>| -> Result<Vec<NamedRecord>> {
            records
                .into_iter()
                .map(|r| {
                    Ok(NamedRecord {
                        name: r.key[prefix.len()..].to_owned(),
                        value: from_json(&r.value)?,
                    })
                })
                .collect()
        };
        let role_assignments = named(self.list_records(ns::ROLE_ASSIGNMENT, &prefix).await?)?;
        let role_definitions = named(self.list_records(ns::ROLE_DEFINITION, &prefix).await?)?;
        let created = self.clock.now();
        let manifest = BackupManifest {
            format: BACKUP_FORMAT.into(),
            vault: vault.name.clone(),
            kind: vault.kind,
            security_domain: vault.security_domain.clone(),
            created,
            keys: keys.len(),
            role_assignments: role_assignments.len(),
        };
        let payload = FullBackupPayload {
            vault: vault.name.clone(),
            kind: vault.kind,
            created,
            keys,
            role_assignments,
            role_definitions,
        };
        let json = Zeroizing::new(to_json(&payload)?);
        let sealed = sd
            .seal(&full_backup_aad(&vault.security_domain), &json)
            .map_err(crypto_internal)?;
        let mut blob = FULL_BACKUP_MAGIC.to_vec();
        blob.extend_from_slice(vault.security_domain.as_bytes());
        blob.extend_from_slice(&sealed);
        Ok(FullBackup { blob, manifest })
    }

    /// `PUT /restore` (all of a full backup) or `PUT /keys/{name}/restore` (`only_key`): into a
    /// vault of the backup's security domain and kind. Keys present already with the backup's
    /// current version are left as they are, so an interrupted restore can be run again; any
    /// other key of the same name, live or soft-deleted, refuses the whole restore before
    /// anything is written.
    pub async fn full_restore(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        blob: &[u8],
        only_key: Option<&str>,
    ) -> Result<RestoreReport> {
        self.authorize(ctx, vault, Action::RestoreStart, "/")
            .await?;
        let rest = blob.strip_prefix(FULL_BACKUP_MAGIC).ok_or_else(|| {
            ApiError::bad_parameter(
                "The folder does not hold a Keyshift vault backup, or it is corrupted.",
            )
        })?;
        if rest.len() < 32 {
            return Err(ApiError::bad_parameter("The backup is truncated."));
        }
        let (sd_id, sealed) = rest.split_at(32);
        if sd_id != vault.security_domain.as_bytes() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "The backup was made under security domain {}, which vault '{}' does not have: upload that security domain into it first (keyshift security-domain upload).",
                    String::from_utf8_lossy(sd_id),
                    vault.name
                ),
            )
            .with_inner("SecurityDomainMismatch"));
        }
        let sd = self.security_domain_key(&vault.security_domain).await?;
        let json = sd
            .open(&full_backup_aad(&vault.security_domain), sealed)
            .map_err(|_| {
                ApiError::bad_parameter("The backup is corrupted or was tampered with.")
            })?;
        let payload: FullBackupPayload = serde_json::from_slice(&json)
            .map_err(|_| ApiError::bad_parameter("The backup is corrupted."))?;
        if payload.kind != vault.kind {
            return Err(ApiError::bad_parameter(format!(
                "The backup is of a {} and restores only into one; vault '{}' is a {}.",
                kind_name(payload.kind),
                vault.name,
                kind_name(vault.kind)
            )));
        }
        let keys: Vec<&BackupPayload> = match only_key {
            None => payload.keys.iter().collect(),
            Some(name) => {
                let found: Vec<&BackupPayload> = payload
                    .keys
                    .iter()
                    .filter(|k| k.name.eq_ignore_ascii_case(name))
                    .collect();
                if found.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::NotFound,
                        format!(
                            "The backup of vault '{}' holds no key named {}.",
                            payload.vault,
                            crate::naming::printable(name)
                        ),
                    ));
                }
                found
            }
        };
        // Decide every key before writing any.
        let mut todo = Vec::new();
        let mut report = RestoreReport::default();
        let mut conflicts = Vec::new();
        for k in keys {
            let kk = key_key(&vault.id, &k.name);
            let live = self.store.get(ns::KEY, &kk).await.map_err(store_error)?;
            let deleted = self
                .store
                .get(ns::DELETED_KEY, &kk)
                .await
                .map_err(store_error)?;
            match live.or(deleted) {
                None => todo.push(k),
                Some(r) => {
                    let present: KeyRecord = from_json(&r.value)?;
                    if present.latest == k.latest && present.deleted.is_none() {
                        report.keys_present += 1;
                    } else {
                        conflicts.push(k.name.clone());
                    }
                }
            }
        }
        if !conflicts.is_empty() {
            let shown: Vec<&str> = conflicts.iter().take(10).map(String::as_str).collect();
            return Err(ApiError::conflict(format!(
                "{} key(s) of the backup exist in vault '{}' with other content, live or soft-deleted: {}{}. Nothing was restored.",
                conflicts.len(),
                vault.name,
                shown.join(", "),
                if conflicts.len() > shown.len() { ", ..." } else { "" }
            )));
        }
        for k in todo {
            self.restore_key_payload(ctx, vault, &sd, k).await?;
            report.keys_restored += 1;
        }
        if only_key.is_none() {
            let prefix = format!("{}/", vault.id);
            for (namespace, records) in [
                (ns::ROLE_DEFINITION, &payload.role_definitions),
                (ns::ROLE_ASSIGNMENT, &payload.role_assignments),
            ] {
                for r in records {
                    if r.name.contains('/') || r.name.is_empty() {
                        return Err(ApiError::bad_parameter("The backup is corrupted."));
                    }
                    let op = Op::Put {
                        ns: namespace,
                        key: format!("{prefix}{}", r.name),
                        value: to_json(&r.value)?,
                        expect: Expect::Absent,
                    };
                    match self.commit_as(ctx, vec![op]).await {
                        Ok(()) => report.roles_restored += 1,
                        Err(StoreError::Conflict { .. }) => report.roles_present += 1,
                        Err(e) => return Err(store_error(e)),
                    }
                }
            }
            self.assignments.invalidate(&vault.id);
        }
        tracing::info!(vault = %vault.name, ?report, "restore finished");
        Ok(report)
    }

    /// Records a backup or restore job's outcome, so that its status can be read from any node.
    pub async fn put_job(&self, vault: &VaultRecord, job: &serde_json::Value) -> Result<()> {
        let id = job
            .get("jobId")
            .and_then(|v| v.as_str())
            .ok_or_else(ApiError::internal)?;
        self.store
            .commit(vec![Op::Put {
                ns: ns::META,
                key: format!("job/{}/{id}", vault.id),
                value: to_json(job)?,
                expect: Expect::Any,
            }])
            .await
            .map_err(store_error)
    }

    /// A job's record, when `ctx` may read it (`status`: the backup or the restore action).
    pub async fn job(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        id: &str,
        restore: bool,
    ) -> Result<serde_json::Value> {
        let action = if restore {
            Action::RestoreStatus
        } else {
            Action::BackupStatus
        };
        self.authorize(ctx, vault, action, "/").await?;
        let not_found = || {
            ApiError::new(
                ErrorCode::NotFound,
                format!("There is no job {}.", crate::naming::printable(id)),
            )
        };
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(not_found());
        }
        let record = self
            .store
            .get(ns::META, &format!("job/{}/{id}", vault.id))
            .await
            .map_err(store_error)?
            .ok_or_else(not_found)?;
        from_json(&record.value)
    }
}

fn kind_name(kind: VaultKind) -> &'static str {
    match kind {
        VaultKind::Vault => "key vault",
        VaultKind::ManagedHsm => "managed HSM",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dup(k: &KeyMaterial) -> KeyMaterial {
        KeyMaterial::from_bytes(&k.to_bytes()).unwrap()
    }

    fn custodian_keys(n: usize) -> Vec<KeyMaterial> {
        (0..n)
            .map(|_| KeyMaterial::generate_rsa(2048).unwrap())
            .collect()
    }

    fn split_to(keys: &[KeyMaterial], required: usize) -> (Vec<u8>, SecurityDomainFile) {
        let id = "0123456789abcdef0123456789abcdef";
        let secret = keyshift_crypto::random_bytes(32).unwrap();
        let shares = shamir::split(&secret, keys.len(), required).unwrap();
        let shares = shares
            .iter()
            .zip(keys)
            .map(|(s, k)| EncryptedShare {
                x5t_256: String::new(),
                enc_share: keyshift_api::b64::encode(
                    &rsa_aes_key_wrap(&k.public_key(), OaepHash::Sha256, &share_plaintext(id, s))
                        .unwrap(),
                ),
            })
            .collect();
        let file = SecurityDomainFile {
            format: SECURITY_DOMAIN_FORMAT.into(),
            security_domain: id.into(),
            required,
            check: check_value(&secret, id),
            shares,
        };
        (secret, file)
    }

    #[test]
    fn a_quorum_of_custodians_recombines_the_key_and_fewer_do_not() {
        let keys = custodian_keys(3);
        let (secret, file) = split_to(&keys, 2);
        assert_eq!(&*recombine(&file, &keys[..2]).unwrap(), &secret[..]);
        assert_eq!(&*recombine(&file, &keys[1..]).unwrap(), &secret[..]);
        let one = recombine(&file, &keys[..1]).unwrap_err();
        assert!(one.contains("1 of the 2"), "{one}");
        // The same custodian twice is one share.
        let twice = recombine(&file, &[dup(&keys[0]), dup(&keys[0])]).unwrap_err();
        assert!(twice.contains("1 of the 2"), "{twice}");
    }

    #[test]
    fn a_stranger_key_a_tampered_share_or_a_wrong_check_is_refused() {
        let keys = custodian_keys(3);
        let (_, file) = split_to(&keys, 2);
        let stranger = KeyMaterial::generate_rsa(2048).unwrap();
        assert!(recombine(&file, &[dup(&keys[0]), stranger])
            .unwrap_err()
            .contains("opens none"));
        let mut bad = file.clone();
        bad.check = check_value(b"another key", &file.security_domain);
        assert!(recombine(&bad, &keys[..2])
            .unwrap_err()
            .contains("do not recombine"));
        // A share moved to another domain's file does not parse as one of its shares.
        let mut moved = file.clone();
        moved.security_domain = "ffffffffffffffffffffffffffffffff".into();
        assert!(recombine(&moved, &keys[..2])
            .unwrap_err()
            .contains("another security domain"));
        let mut garbled = file.clone();
        garbled.format = "other".into();
        assert!(recombine(&garbled, &keys[..2]).is_err());
    }
}
