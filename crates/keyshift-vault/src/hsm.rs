//! Keys held in a hardware security module: where a new key version lives, and the one type the
//! key operations use whichever it is.
//!
//! A deployment may have one HSM attached ([`Deployment::attach_hsm`], a PKCS#11 token in
//! `keyshift serve`). Then every `-HSM` key version is made in it (generated there, or imported
//! into it) and its record keeps the token object's reference, sealed like key material so that a
//! record moved to another key does not open, and never the material. A managed-HSM vault holds
//! nothing else, so without an HSM it refuses to make keys. A `vault` without an HSM keeps making
//! `-HSM` keys as software keys sealed under the security domain, as before.
//!
//! Token objects are shared by every version record that names them (a backup restored into
//! another vault names the same object), counted in [`ns::HSM_OBJECT`]: a purge destroys the
//! object only when the last record naming it goes.

use crate::deployment::{from_json, store_error, to_json, Deployment};
use crate::records::{ns, HsmObjectRecord, VaultKind, VaultRecord};
use crate::Result;
use keyshift_api::{ApiError, ErrorCode};
use keyshift_crypto::transfer::TransferWrap;
use keyshift_crypto::{
    CryptoError, EncryptOutput, EncryptionAlgorithm, HsmBackend, HsmKey, HsmKeyRef, HsmKeySpec,
    KeyMaterial, PublicKey, SignatureAlgorithm,
};
use keyshift_store::{Expect, Op};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The HSM attached to a deployment.
pub(crate) struct AttachedHsm {
    pub(crate) backend: Arc<dyn HsmBackend>,
    /// What `hsmPlatform` reports for its keys.
    pub(crate) platform: String,
    /// The token's label, recorded with every key made in it.
    pub(crate) token: String,
}

/// The private half of a key version, for the operations.
pub(crate) enum VersionKey {
    /// Sealed under the security domain in the store, unsealed here.
    Software(KeyMaterial),
    /// An object in the attached HSM.
    Token(Arc<dyn HsmBackend>, HsmKey),
}

/// Runs a token call on a blocking thread: PKCS#11 calls block.
async fn in_token<T: Send + 'static>(
    f: impl FnOnce() -> keyshift_crypto::Result<T> + Send + 'static,
) -> keyshift_crypto::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| CryptoError::Internal)?
}

impl VersionKey {
    /// Size in bits (RSA, AES) or of the curve's field.
    pub(crate) fn size_bits(&self) -> u32 {
        match self {
            VersionKey::Software(m) => m.size_bits(),
            VersionKey::Token(_, k) => k.size_bits(),
        }
    }

    /// The material, when this process holds it.
    pub(crate) fn software(&self) -> Option<&KeyMaterial> {
        match self {
            VersionKey::Software(m) => Some(m),
            VersionKey::Token(..) => None,
        }
    }

    pub(crate) async fn encrypt(
        &self,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
    ) -> keyshift_crypto::Result<EncryptOutput> {
        match self {
            VersionKey::Software(m) => m.encrypt(alg, plaintext, iv, aad),
            VersionKey::Token(backend, key) => {
                let (backend, key) = (backend.clone(), key.clone());
                let plaintext = Zeroizing::new(plaintext.to_vec());
                let (iv, aad) = (iv.map(<[u8]>::to_vec), aad.map(<[u8]>::to_vec));
                in_token(move || {
                    backend.encrypt(&key, alg, &plaintext, iv.as_deref(), aad.as_deref())
                })
                .await
            }
        }
    }

    pub(crate) async fn decrypt(
        &self,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> keyshift_crypto::Result<Zeroizing<Vec<u8>>> {
        match self {
            VersionKey::Software(m) => m.decrypt(alg, ciphertext, iv, aad, tag),
            VersionKey::Token(backend, key) => {
                let (backend, key) = (backend.clone(), key.clone());
                let ciphertext = ciphertext.to_vec();
                let (iv, aad, tag) = (
                    iv.map(<[u8]>::to_vec),
                    aad.map(<[u8]>::to_vec),
                    tag.map(<[u8]>::to_vec),
                );
                in_token(move || {
                    backend.decrypt(
                        &key,
                        alg,
                        &ciphertext,
                        iv.as_deref(),
                        aad.as_deref(),
                        tag.as_deref(),
                    )
                })
                .await
            }
        }
    }

    pub(crate) async fn wrap_key(
        &self,
        alg: EncryptionAlgorithm,
        key_bytes: &[u8],
    ) -> keyshift_crypto::Result<Vec<u8>> {
        match self {
            VersionKey::Software(m) => m.wrap_key(alg, key_bytes),
            VersionKey::Token(backend, key) => {
                let (backend, key) = (backend.clone(), key.clone());
                let key_bytes = Zeroizing::new(key_bytes.to_vec());
                in_token(move || backend.wrap_key(&key, alg, &key_bytes)).await
            }
        }
    }

    pub(crate) async fn unwrap_key(
        &self,
        alg: EncryptionAlgorithm,
        wrapped: &[u8],
    ) -> keyshift_crypto::Result<Zeroizing<Vec<u8>>> {
        match self {
            VersionKey::Software(m) => m.unwrap_key(alg, wrapped),
            VersionKey::Token(backend, key) => {
                let (backend, key) = (backend.clone(), key.clone());
                let wrapped = wrapped.to_vec();
                in_token(move || backend.unwrap_key(&key, alg, &wrapped)).await
            }
        }
    }

    pub(crate) async fn sign(
        &self,
        alg: SignatureAlgorithm,
        digest: &[u8],
    ) -> keyshift_crypto::Result<Vec<u8>> {
        match self {
            VersionKey::Software(m) => m.sign(alg, digest),
            VersionKey::Token(backend, key) => {
                let (backend, key) = (backend.clone(), key.clone());
                let digest = digest.to_vec();
                in_token(move || backend.sign(&key, alg, &digest)).await
            }
        }
    }

    /// Verification needs only the public key: done here for both kinds.
    pub(crate) fn verify(
        &self,
        alg: SignatureAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> keyshift_crypto::Result<bool> {
        match self {
            VersionKey::Software(m) => m.verify(alg, digest, signature),
            VersionKey::Token(backend, key) => backend.verify(key, alg, digest, signature),
        }
    }

    /// The key wrapped for the holder of `kek` (secure key release): in this process for a
    /// software key, inside the token for a token key.
    pub(crate) async fn wrap_for_transfer(
        &self,
        kek: &PublicKey,
        wrap: TransferWrap,
    ) -> keyshift_crypto::Result<Vec<u8>> {
        match self {
            VersionKey::Software(m) => {
                let plaintext = m.transfer_plaintext();
                keyshift_crypto::transfer::rsa_aes_key_wrap(kek, wrap.hash(), &plaintext)
            }
            VersionKey::Token(backend, key) => {
                let (backend, key, kek) = (backend.clone(), key.clone(), kek.clone());
                in_token(move || backend.wrap_for_transfer(&key, &kek, wrap)).await
            }
        }
    }
}

/// Where a new version of an `-HSM` key goes.
pub(crate) enum Home<'a> {
    Software,
    Token(&'a AttachedHsm),
}

/// A new version's private half, made but not yet recorded.
pub(crate) enum NewKey {
    Software(KeyMaterial),
    Token(HsmKey),
}

impl NewKey {
    pub(crate) fn public_key(&self) -> PublicKey {
        match self {
            NewKey::Software(m) => m.public_key(),
            NewKey::Token(k) => k.public.clone(),
        }
    }

    pub(crate) fn size_bits(&self) -> u32 {
        match self {
            NewKey::Software(m) => m.size_bits(),
            NewKey::Token(k) => k.size_bits(),
        }
    }
}

/// The store key of a token object's record.
pub(crate) fn object_key(token: &str, reference: &HsmKeyRef) -> String {
    format!("{token}/{reference}")
}

impl Deployment {
    /// Attaches the HSM every `-HSM` key version made from now on lives in. Once per deployment;
    /// `false` if one is attached already.
    pub fn attach_hsm(
        &self,
        backend: Arc<dyn HsmBackend>,
        token: impl Into<String>,
        platform: impl Into<String>,
    ) -> bool {
        self.hsm
            .set(AttachedHsm {
                backend,
                platform: platform.into(),
                token: token.into(),
            })
            .is_ok()
    }

    /// The attached HSM, if any.
    pub(crate) fn hsm(&self) -> Option<&AttachedHsm> {
        self.hsm.get()
    }

    /// Where a new version of a key of this type goes in `vault`.
    pub(crate) fn home(&self, vault: &VaultRecord, hsm_type: bool) -> Result<Home<'_>> {
        match (hsm_type, self.hsm(), vault.kind) {
            (true, Some(hsm), _) => Ok(Home::Token(hsm)),
            (true, None, VaultKind::ManagedHsm) => Err(ApiError::bad_parameter(format!(
                "Managed HSM '{}' cannot make keys: this deployment has no HSM attached, and a \
                 managed HSM keeps its keys in one only. Start keyshift serve with a PKCS#11 \
                 token (--pkcs11-module, --pkcs11-token-label, and the PIN in a file or \
                 KEYSHIFT_PKCS11_PIN).",
                vault.name
            ))
            .with_inner("HsmNotConfigured")),
            _ => Ok(Home::Software),
        }
    }

    /// The token key a version record names, for a version made in `token`.
    pub(crate) async fn open_token_key(
        &self,
        token: &str,
        reference: HsmKeyRef,
    ) -> Result<VersionKey> {
        let hsm = self.hsm().filter(|h| h.token == token).ok_or_else(|| {
            tracing::error!(
                token,
                "a key version lives in an HSM token this server does not have attached"
            );
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "This key version is held in HSM token '{token}', which this server does not \
                     have attached."
                ),
            )
            .with_inner("HsmUnavailable")
        })?;
        let backend = hsm.backend.clone();
        let key = in_token({
            let backend = backend.clone();
            move || backend.open(&reference)
        })
        .await
        .map_err(hsm_error)?;
        Ok(VersionKey::Token(backend, key))
    }

    /// Makes a key in `home`: generated in the token, or in this process.
    pub(crate) async fn generate_key(
        &self,
        home: &Home<'_>,
        spec: HsmKeySpec,
        label: &str,
        exportable: bool,
    ) -> Result<NewKey> {
        match home {
            Home::Token(hsm) => {
                let backend = hsm.backend.clone();
                let label = label.to_owned();
                in_token(move || backend.generate_with(spec, &label, exportable))
                    .await
                    .map(NewKey::Token)
                    .map_err(hsm_error)
            }
            Home::Software => {
                let made = match spec {
                    HsmKeySpec::Rsa { bits } => {
                        tokio::task::spawn_blocking(move || KeyMaterial::generate_rsa(bits))
                            .await
                            .map_err(|_| ApiError::internal())?
                    }
                    HsmKeySpec::Ec { curve } => KeyMaterial::generate_ec(curve),
                    HsmKeySpec::Oct { bits } => KeyMaterial::generate_oct(bits),
                };
                made.map(NewKey::Software).map_err(hsm_error)
            }
        }
    }

    /// Puts imported material in `home`.
    pub(crate) async fn place_key(
        &self,
        home: &Home<'_>,
        material: KeyMaterial,
        label: &str,
        exportable: bool,
    ) -> Result<NewKey> {
        match home {
            Home::Software => Ok(NewKey::Software(material)),
            Home::Token(hsm) => {
                let backend = hsm.backend.clone();
                let label = label.to_owned();
                in_token(move || backend.import(&material, &label, exportable))
                    .await
                    .map(NewKey::Token)
                    .map_err(hsm_error)
            }
        }
    }

    /// Destroys a token object nothing records (a version that was not committed).
    pub(crate) async fn destroy_unrecorded(&self, key: &HsmKey) {
        if let Some(hsm) = self.hsm() {
            let backend = hsm.backend.clone();
            let reference = key.reference.clone();
            if let Err(e) = in_token(move || backend.destroy(&reference)).await {
                tracing::warn!(error = %e, reference = %key.reference, "an unrecorded HSM key could not be destroyed; it is left in the token");
            }
        }
    }

    /// The store ops that add `user` (a version's store key) to the users of a token object.
    pub(crate) async fn object_user_ops(
        &self,
        token: &str,
        reference: &HsmKeyRef,
        user: &str,
    ) -> Result<Op> {
        let key = object_key(token, reference);
        let found = self
            .store
            .get(ns::HSM_OBJECT, &key)
            .await
            .map_err(store_error)?;
        let (mut record, expect) = match found {
            Some(r) => (
                from_json::<HsmObjectRecord>(&r.value)?,
                Expect::Revision(r.revision),
            ),
            None => (HsmObjectRecord::default(), Expect::Absent),
        };
        if !record.users.iter().any(|u| u == user) {
            record.users.push(user.to_owned());
        }
        Ok(Op::Put {
            ns: ns::HSM_OBJECT,
            key,
            value: to_json(&record)?,
            expect,
        })
    }

    /// Removes `users` from token objects' records; returns the ops and the objects nobody uses
    /// any more, to destroy once the ops are committed.
    pub(crate) async fn object_release_ops(
        &self,
        objects: &[(String, HsmKeyRef, String)],
    ) -> Result<(Vec<Op>, Vec<(String, HsmKeyRef)>)> {
        let mut ops = Vec::new();
        let mut unused = Vec::new();
        let mut by_object: std::collections::BTreeMap<String, (String, HsmKeyRef, Vec<&str>)> =
            Default::default();
        for (token, reference, user) in objects {
            by_object
                .entry(object_key(token, reference))
                .or_insert_with(|| (token.clone(), reference.clone(), Vec::new()))
                .2
                .push(user);
        }
        for (key, (token, reference, users)) in by_object {
            let Some(r) = self
                .store
                .get(ns::HSM_OBJECT, &key)
                .await
                .map_err(store_error)?
            else {
                continue;
            };
            let mut record: HsmObjectRecord = from_json(&r.value)?;
            record.users.retain(|u| !users.contains(&u.as_str()));
            if record.users.is_empty() {
                ops.push(Op::Delete {
                    ns: ns::HSM_OBJECT,
                    key,
                    expect: Expect::Revision(r.revision),
                });
                unused.push((token, reference));
            } else {
                ops.push(Op::Put {
                    ns: ns::HSM_OBJECT,
                    key,
                    value: to_json(&record)?,
                    expect: Expect::Revision(r.revision),
                });
            }
        }
        Ok((ops, unused))
    }

    /// Destroys token objects whose last record is gone. A failure leaves the object in the
    /// token (logged): never destroyed early, at worst kept too long.
    pub(crate) async fn destroy_objects(&self, objects: Vec<(String, HsmKeyRef)>) {
        for (token, reference) in objects {
            let Some(hsm) = self.hsm().filter(|h| h.token == token) else {
                tracing::warn!(token, %reference, "a purged key's HSM object is in a token this server does not have attached; it is left there");
                continue;
            };
            let backend = hsm.backend.clone();
            let r = reference.clone();
            match in_token(move || backend.destroy(&r)).await {
                Ok(()) => tracing::info!(token, %reference, "HSM key object destroyed"),
                Err(e) => {
                    tracing::warn!(token, %reference, error = %e, "a purged key's HSM object could not be destroyed; it is left in the token")
                }
            }
        }
    }
}

/// The version of the statements `GET /keys/{name}/{version}/attestation` signs.
const ATTESTATION_VERSION: &str = "keyshift-pkcs11/1.0";

fn pem(chain: &[Vec<u8>]) -> Vec<u8> {
    let mut out = String::new();
    for der in chain {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = keyshift_api::b64::encode_standard(der);
        for line in text.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

impl Deployment {
    /// `GET /keys/{name}/{version}/attestation`: for a version held in the HSM, what the token
    /// says of its objects (generated in it, sensitive, extractable or not), read from the token
    /// now and signed by the deployment's release-signing key, whose certificate chain comes
    /// along. This is Keyshift's statement about the token, not the HSM maker's own attestation:
    /// PKCS#11 has no standard for that. A software version has none to give.
    pub async fn key_attestation(
        &self,
        ctx: &crate::RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        services: &dyn crate::release::ReleaseServices,
    ) -> Result<keyshift_api::keys::KeyBundle> {
        let mut bundle = self.get_key(ctx, vault, name, version).await?;
        let (_, entry) = self.usable(vault, name, version).await?;
        let VersionKey::Token(backend, key) = &entry.material else {
            return Err(ApiError::bad_parameter(
                "Key attestation is available for keys held in an HSM; this version is a \
                 software key (no HSM was attached to this deployment when it was made).",
            )
            .with_inner("NotHsmProtected"));
        };
        let facts = in_token({
            let (backend, key) = (backend.clone(), key.clone());
            move || backend.facts(&key)
        })
        .await
        .map_err(hsm_error)?;
        let platform = bundle.attributes.hsm_platform.clone();
        let statement = |object: &str| {
            serde_json::json!({
                "iss": ctx.base_url,
                "iat": self.clock.now(),
                "kid": bundle.key.kid,
                "kty": bundle.key.kty,
                "hsmPlatform": platform,
                "token": entry.record.hsm_token,
                "object": {"id": key.reference.to_string(), "label": key.label, "class": object},
                "CKA_LOCAL": facts.local,
                "CKA_SENSITIVE": facts.sensitive,
                "CKA_ALWAYS_SENSITIVE": facts.always_sensitive,
                "CKA_EXTRACTABLE": facts.extractable,
                "CKA_NEVER_EXTRACTABLE": facts.never_extractable,
                "publicKey": {"n": bundle.key.n.as_deref().map(keyshift_api::b64::encode),
                              "e": bundle.key.e.as_deref().map(keyshift_api::b64::encode),
                              "crv": bundle.key.crv,
                              "x": bundle.key.x.as_deref().map(keyshift_api::b64::encode),
                              "y": bundle.key.y.as_deref().map(keyshift_api::b64::encode)},
            })
        };
        let asymmetric = !matches!(key.public, PublicKey::Oct { .. });
        let private_object = if asymmetric { "private" } else { "secret" };
        let private = self
            .sign_release(
                &ctx.base_url,
                &to_json(&statement(private_object))?,
                services,
            )
            .await?;
        let public = if asymmetric {
            Some(
                self.sign_release(&ctx.base_url, &to_json(&statement("public"))?, services)
                    .await?
                    .into_bytes(),
            )
        } else {
            None
        };
        let signer = self.release_signing_key().await?;
        let chain = services
            .certificate_chain(&ctx.base_url, &signer.public_key())
            .map_err(|why| {
                tracing::error!(%why, "cannot issue the attestation-signing certificate");
                ApiError::internal()
            })?;
        bundle.attributes.attestation = Some(keyshift_api::keys::KeyAttestation {
            certificate_pem_file: Some(pem(&chain)),
            private_key_attestation: Some(private.into_bytes()),
            public_key_attestation: public,
            version: Some(ATTESTATION_VERSION.into()),
        });
        Ok(bundle)
    }
}

/// The API error for a failure of the key backend or of key material.
pub(crate) fn hsm_error(e: CryptoError) -> ApiError {
    match e {
        CryptoError::Internal => {
            tracing::error!("crypto backend failure");
            ApiError::internal()
        }
        CryptoError::DecryptionFailed => {
            ApiError::bad_parameter("The ciphertext or its authentication data is invalid.")
        }
        CryptoError::Unsupported(what) => {
            ApiError::bad_parameter(format!("The HSM holding this key cannot do this: {what}."))
                .with_inner("NotSupportedByHsm")
        }
        CryptoError::KeyNotFound(what) => {
            tracing::error!(%what, "a key version's HSM object is missing");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "This key version's object is missing from its HSM.",
            )
            .with_inner("HsmKeyMissing")
        }
        CryptoError::Backend(what) => {
            tracing::error!(%what, "HSM failure");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The HSM holding this key cannot be used now; retry later.",
            )
            .with_inner("HsmUnavailable")
        }
        other => ApiError::bad_parameter(other.to_string()),
    }
}
