//! Secure key release: an exportable key's material, wrapped for the enclave whose attestation
//! token satisfies the key's release policy, in a response signed by the deployment.
//!
//! The vault decides: the caller's `release` data action, the key's state (enabled, exportable,
//! with a policy), which trusted authority vouches for the token, the policy over the token's
//! claims, the enclave's wrapping key (`x-ms-runtime.keys`), the wrap and the signed answer.
//! What needs the network or the TLS certificate authority (fetching an authority's keys,
//! issuing the signing certificate) is asked of the server through [`ReleaseServices`].
//!
//! The release-signing key is an RSA-2048 key of the deployment, created at the first release and
//! stored sealed under the root key (`meta/release_signing_key`, AAD
//! `keyshift/release-signing-key/v1`), like the token signing key.

use crate::deployment::{to_json, Deployment};
use crate::rbac::Action;
use crate::records::{TrustedIssuerRecord, VaultRecord};
use crate::release_policy::ReleasePolicy;
use crate::{RequestContext, Result};
use keyshift_api::keys::{KeyReleaseParameters, KeyReleaseResult};
use keyshift_api::{b64, ApiError};
use keyshift_crypto::transfer::TransferWrap;
use keyshift_crypto::{KeyMaterial, PublicKey, SignatureAlgorithm};
use serde_json::{json, Map, Value};
use std::sync::Arc;

const RELEASE_KEY_RECORD: &str = "release_signing_key";
const RELEASE_KEY_AAD: &[u8] = b"keyshift/release-signing-key/v1";
/// Smallest enclave key a release is wrapped for.
const MIN_ENCLAVE_KEY_BITS: usize = 2048;
/// Largest attestation token read.
const MAX_TOKEN_BYTES: usize = 256 * 1024;

/// What a release needs from the server.
#[async_trait::async_trait]
pub trait ReleaseServices: Send + Sync {
    /// Verifies `token` as issued by `authority`: an algorithm it is trusted with, a key of its
    /// JWKS by `kid`, the signature, `exp` (required) and `nbf`/`iat` with a small skew. Returns
    /// the claims; the error says what failed and never quotes the token.
    async fn verify_attestation(
        &self,
        authority: &TrustedIssuerRecord,
        token: &str,
    ) -> std::result::Result<Map<String, Value>, String>;

    /// The certificate chain (DER, leaf first) of the release-signing key `public`, issued for
    /// the vault host of `base_url`.
    fn certificate_chain(
        &self,
        base_url: &str,
        public: &PublicKey,
    ) -> std::result::Result<Vec<Vec<u8>>, String>;
}

/// A release request as the server hands it over.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    /// The body.
    pub params: KeyReleaseParameters,
    /// The api-version the client used, echoed in the signed response.
    pub api_version: String,
}

fn token_error(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_parameter(format!(
        "The release target is not an attestation token: {what}."
    ))
    .with_inner("InvalidAttestationToken")
}

/// The claims of a compact JWS, read before its signature is checked (to find its issuer).
fn unverified_claims(token: &str) -> Result<Map<String, Value>> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(token_error(format!("larger than {MAX_TOKEN_BYTES} bytes")));
    }
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return Err(token_error("not a compact JWS of three parts"));
    };
    b64::decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.as_object().cloned())
        .ok_or_else(|| token_error("its payload is not a JSON object"))
}

/// The enclave's wrapping key: the first RSA key of the top-level `x-ms-runtime.keys` meant for
/// encryption (`use`/`key_use` `enc`, or `key_ops` with `encrypt`); it needs a `kid` and 2048 bits.
fn enclave_key(claims: &Map<String, Value>) -> Result<(String, PublicKey)> {
    let no_key = |what: &str| {
        ApiError::bad_parameter(format!(
            "The attestation token offers no usable enclave key: {what}."
        ))
        .with_inner("NoEnclaveKey")
    };
    let keys = claims
        .get("x-ms-runtime")
        .and_then(|r| r.get("keys"))
        .and_then(Value::as_array)
        .ok_or_else(|| no_key("it has no x-ms-runtime.keys"))?;
    let is_enc = |k: &Value| {
        let by_use = ["use", "key_use"]
            .iter()
            .any(|m| k.get(m).and_then(Value::as_str) == Some("enc"));
        let by_ops = k
            .get("key_ops")
            .and_then(Value::as_array)
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("encrypt")));
        k.get("kty").and_then(Value::as_str) == Some("RSA") && (by_use || by_ops)
    };
    let jwk = keys
        .iter()
        .find(|k| is_enc(k))
        .ok_or_else(|| no_key("x-ms-runtime.keys holds no RSA key for encryption"))?;
    let kid = jwk
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 1024)
        .ok_or_else(|| no_key("the enclave key has no kid"))?;
    let member = |m: &str| {
        jwk.get(m)
            .and_then(Value::as_str)
            .and_then(|t| b64::decode(t).ok())
            .map(|b| {
                let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
                b[first..].to_vec()
            })
            .filter(|b| !b.is_empty())
    };
    let (Some(n), Some(e)) = (member("n"), member("e")) else {
        return Err(no_key("the enclave key has no valid n and e"));
    };
    let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
    if bits < MIN_ENCLAVE_KEY_BITS {
        return Err(no_key(&format!(
            "the enclave key has {bits} bits, at least {MIN_ENCLAVE_KEY_BITS} are needed"
        )));
    }
    let public = PublicKey::Rsa { n, e };
    keyshift_crypto::transfer::check_wrapping_key(&public)
        .map_err(|e| no_key(&format!("the enclave key is not usable: {e}")))?;
    Ok((kid.to_owned(), public))
}

fn crypto_internal(e: keyshift_crypto::CryptoError) -> ApiError {
    tracing::error!(error = %e, "release crypto failure");
    ApiError::internal()
}

impl Deployment {
    /// The deployment's release-signing key, created (and stored sealed) on first use.
    pub async fn release_signing_key(&self) -> Result<Arc<KeyMaterial>> {
        self.release_key
            .get_or_try_init(|| async {
                let (_, key) = self
                    .sealed_rsa_key(
                        RELEASE_KEY_RECORD,
                        RELEASE_KEY_AAD,
                        2048,
                        "release-signing key",
                    )
                    .await?;
                Ok(Arc::new(key))
            })
            .await
            .cloned()
    }

    /// `POST /keys/{name}[/{version}]/release`.
    pub async fn release_key(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        request: ReleaseRequest,
        services: &dyn ReleaseServices,
    ) -> Result<KeyReleaseResult> {
        self.authorize(
            ctx,
            vault,
            Action::Release,
            &crate::access::key_resource(name),
        )
        .await?;
        let p = request.params;
        let wrap = match p.enc.as_deref() {
            None | Some("") => TransferWrap::RsaAesKeyWrap,
            Some(enc) => TransferWrap::from_name(enc).ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "The release 'enc' '{}' is not supported: use CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256 or RSA_AES_KEY_WRAP_384.",
                    crate::naming::printable(enc)
                ))
            })?,
        };
        let (key_name, entry) = self.usable(vault, name, version).await?;
        ctx.note_use(&key_name, &entry.record.version);
        let record = &entry.record;
        if !record.enabled {
            return Err(
                ApiError::forbidden("Operation release is not allowed on a disabled key.")
                    .with_inner("KeyDisabled"),
            );
        }
        if record.exportable != Some(true) {
            return Err(ApiError::bad_parameter(
                "The key is not exportable: only keys created or imported with 'exportable': true can be released.",
            )
            .with_inner("KeyNotExportable"));
        }
        let policy_data = record
            .release_policy
            .as_ref()
            .and_then(|p| p.data.as_deref())
            .ok_or_else(|| {
                ApiError::bad_parameter("The key has no release policy.")
                    .with_inner("NoReleasePolicy")
            })?;
        let policy = ReleasePolicy::parse(policy_data).map_err(|why| {
            tracing::error!(%why, "a stored release policy does not parse");
            ApiError::internal()
        })?;

        let unverified = unverified_claims(&p.target)?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| token_error("it has no issuer (iss)"))?
            .to_owned();
        let untrusted = || {
            ApiError::forbidden(format!(
                "The attestation token's issuer '{}' is not an authority of this key's release policy trusted by this deployment.",
                crate::naming::printable(&iss)
            ))
            .with_inner("UntrustedAttestationAuthority")
        };
        if policy.authorities_for(&iss).next().is_none() {
            return Err(untrusted());
        }
        let authority = self
            .attestation_authority(&iss)
            .await?
            .ok_or_else(untrusted)?;
        let claims = services
            .verify_attestation(&authority, p.target.trim())
            .await
            .map_err(|why| {
                tracing::info!(authority = %authority.issuer, %why, "attestation token refused");
                ApiError::forbidden(format!("The attestation token cannot be verified: {why}."))
                    .with_inner("AttestationTokenInvalid")
            })?;
        // The verified claims decide, with the verified issuer.
        let verified_iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if !policy.allows(verified_iss, &claims) {
            return Err(ApiError::forbidden(
                "Target environment attestation statement does not meet key release policy requirements.",
            )
            .with_inner("ReleasePolicyNotSatisfied"));
        }
        let (enclave_kid, enclave_public) = enclave_key(&claims)?;

        let ciphertext = entry
            .material
            .wrap_for_transfer(&enclave_public, wrap)
            .await
            .map_err(|e| match e {
                keyshift_crypto::CryptoError::Internal => ApiError::internal(),
                e @ (keyshift_crypto::CryptoError::Unsupported(_)
                | keyshift_crypto::CryptoError::Backend(_)
                | keyshift_crypto::CryptoError::KeyNotFound(_)) => crate::hsm::hsm_error(e),
                _ => ApiError::bad_parameter(
                    "The enclave key in the attestation token is not a valid RSA public key.",
                )
                .with_inner("NoEnclaveKey"),
            })?;
        let key_hsm = json!({
            "schema_version": "1.0",
            "header": {"kid": enclave_kid, "alg": "dir", "enc": wrap.name()},
            "ciphertext": b64::encode(&ciphertext),
        });
        let bundle = self.bundle(ctx, vault, &key_name, record);
        let mut key = serde_json::to_value(&bundle.key).map_err(|_| ApiError::internal())?;
        if let Some(obj) = key.as_object_mut() {
            obj.insert(
                "key_hsm".into(),
                Value::String(b64::encode(&to_json(&key_hsm)?)),
            );
        }
        let mut requested_kid = format!("{}/keys/{key_name}", ctx.base_url);
        if version.is_some_and(|v| !v.is_empty()) {
            requested_kid.push('/');
            requested_kid.push_str(&record.version);
        }
        let mut req = json!({
            "api-version": request.api_version,
            "enc": wrap.name(),
            "kid": requested_kid,
        });
        if let Some(nonce) = &p.nonce {
            req["nonce"] = Value::String(nonce.clone());
        }
        let payload = json!({
            "request": req,
            "response": {"key": {
                "attributes": bundle.attributes,
                "key": key,
                "release_policy": bundle.release_policy,
            }},
        });
        let value = self
            .sign_release(&ctx.base_url, &to_json(&payload)?, services)
            .await?;
        Ok(KeyReleaseResult { value })
    }

    /// Signs a release payload: compact JWS, RS256, with the signing certificate chain in `x5c`.
    pub(crate) async fn sign_release(
        &self,
        base_url: &str,
        payload: &[u8],
        services: &dyn ReleaseServices,
    ) -> Result<String> {
        let key = self.release_signing_key().await?;
        let chain = services
            .certificate_chain(base_url, &key.public_key())
            .map_err(|why| {
                tracing::error!(%why, "cannot issue the release-signing certificate");
                ApiError::internal()
            })?;
        let leaf = chain.first().ok_or_else(ApiError::internal)?;
        let thumbprint = b64::encode(&keyshift_crypto::digest::sha256(leaf));
        let header = json!({
            "alg": "RS256",
            "typ": "JWT",
            "kid": thumbprint,
            "x5t#S256": thumbprint,
            "x5c": chain.iter().map(|c| b64::encode_standard(c)).collect::<Vec<_>>(),
        });
        let input = format!(
            "{}.{}",
            b64::encode(&to_json(&header)?),
            b64::encode(payload)
        );
        let digest = keyshift_crypto::digest::sha256(input.as_bytes());
        let signature = key
            .sign(SignatureAlgorithm::Rs256, &digest)
            .map_err(crypto_internal)?;
        Ok(format!("{input}.{}", b64::encode(&signature)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn rsa_jwk(bits: u32, extra: Value) -> Value {
        let key = KeyMaterial::generate_rsa(bits).unwrap();
        let PublicKey::Rsa { n, e } = key.public_key() else {
            unreachable!()
        };
        let mut jwk = json!({"kty": "RSA", "n": b64::encode(&n), "e": b64::encode(&e)});
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    #[test]
    fn enclave_key_comes_from_top_level_runtime_keys() {
        let good = rsa_jwk(2048, json!({"kid": "tee", "use": "enc"}));
        let (kid, _) = enclave_key(&claims(json!({"x-ms-runtime": {"keys": [good]}}))).unwrap();
        assert_eq!(kid, "tee");
        let by_ops = rsa_jwk(2048, json!({"kid": "ops", "key_ops": ["encrypt"]}));
        let sig = rsa_jwk(2048, json!({"kid": "sig", "use": "sig"}));
        let (kid, _) = enclave_key(&claims(
            json!({"x-ms-runtime": {"keys": [sig.clone(), by_ops]}}),
        ))
        .unwrap();
        assert_eq!(kid, "ops");
        let no = |c: Value| enclave_key(&claims(c)).unwrap_err().inner;
        // Nested under x-ms-isolation-tee is not where release looks.
        let nested = rsa_jwk(2048, json!({"kid": "tee", "use": "enc"}));
        assert_eq!(
            no(json!({"x-ms-isolation-tee": {"x-ms-runtime": {"keys": [nested]}}})),
            Some("NoEnclaveKey")
        );
        assert_eq!(
            no(json!({"x-ms-runtime": {"keys": [sig]}})),
            Some("NoEnclaveKey")
        );
        assert_eq!(
            no(json!({"x-ms-runtime": {"keys": []}})),
            Some("NoEnclaveKey")
        );
        let no_kid = rsa_jwk(2048, json!({"use": "enc"}));
        assert_eq!(
            no(json!({"x-ms-runtime": {"keys": [no_kid]}})),
            Some("NoEnclaveKey")
        );
        let small = json!({"kty": "RSA", "kid": "s", "use": "enc", "n": b64::encode(&[0xc1; 128]), "e": "AQAB"});
        assert_eq!(
            no(json!({"x-ms-runtime": {"keys": [small]}})),
            Some("NoEnclaveKey")
        );
        // Exponents no RSA key has: even, 1, longer than 256 bits.
        for e in [vec![0x01, 0x00, 0x00], vec![0x01], vec![0xff; 33]] {
            let mut odd = rsa_jwk(2048, json!({"kid": "e", "use": "enc"}));
            odd["e"] = b64::encode(&e).into();
            assert_eq!(
                no(json!({"x-ms-runtime": {"keys": [odd]}})),
                Some("NoEnclaveKey"),
                "e = {e:02x?}"
            );
        }
    }

    #[test]
    fn tokens_are_read_before_verification_only_for_their_issuer() {
        let payload = b64::encode(br#"{"iss":"https://a"}"#);
        let c = unverified_claims(&format!("e30.{payload}.c2ln")).unwrap();
        assert_eq!(c["iss"], "https://a");
        for bad in ["x", "a.b", "a.b.c.d", "e30.!!.x", "e30.W10.x"] {
            assert_eq!(
                unverified_claims(bad).unwrap_err().inner,
                Some("InvalidAttestationToken"),
                "{bad}"
            );
        }
    }
}
