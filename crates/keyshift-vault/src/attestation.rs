//! Attestation authorities trusted for secure key release, the store side. The twin of
//! `federation.rs`: an authority is an issuer URL, where its token signing keys are (a JWKS file
//! or https URL) and the algorithms it is trusted with. Verifying attestation tokens, and fetching
//! the keys, is the server's work.
//!
//! An authority is stored under its URL without a trailing `/` (Azure's tokens and policies
//! differ on it), and a token's `iss` is looked up the same way.

use crate::deployment::{from_json, store_error, to_json};
use crate::federation::{check_https_url, check_source, normalize_algorithms};
use crate::records::{ns, JwksSource, TrustedIssuerRecord};
use crate::release_policy::normalize_authority;
use crate::{Deployment, Result};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_store::{Expect, Op};

impl Deployment {
    /// Trusts an attestation authority (or replaces how it is trusted). `algorithms` empty means
    /// RS256 and ES256.
    pub async fn trust_attestation_authority(
        &self,
        issuer: &str,
        jwks: JwksSource,
        algorithms: &[String],
    ) -> Result<TrustedIssuerRecord> {
        check_https_url("attestation authority", issuer)?;
        check_source(&jwks)?;
        let issuer = normalize_authority(issuer);
        let record = TrustedIssuerRecord {
            issuer: issuer.to_owned(),
            jwks,
            algorithms: normalize_algorithms(algorithms)?,
            updated: self.clock.now(),
        };
        self.store
            .commit(vec![Op::Put {
                ns: ns::ATTESTATION_AUTHORITY,
                key: issuer.to_owned(),
                value: to_json(&record)?,
                expect: Expect::Any,
            }])
            .await
            .map_err(store_error)?;
        Ok(record)
    }

    /// Stops trusting an attestation authority: releases vouched for by it are refused at once.
    pub async fn untrust_attestation_authority(&self, issuer: &str) -> Result<TrustedIssuerRecord> {
        let key = normalize_authority(issuer);
        let r = self
            .store
            .get(ns::ATTESTATION_AUTHORITY, key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "Attestation authority '{}' is not trusted.",
                        crate::naming::printable(issuer)
                    ),
                )
            })?;
        let record = from_json(&r.value)?;
        self.store
            .commit(vec![Op::Delete {
                ns: ns::ATTESTATION_AUTHORITY,
                key: key.to_owned(),
                expect: Expect::Revision(r.revision),
            }])
            .await
            .map_err(store_error)?;
        Ok(record)
    }

    /// The trusted authority a token's `iss` names, read from the store (so a change made by
    /// another process counts at once).
    pub async fn attestation_authority(&self, iss: &str) -> Result<Option<TrustedIssuerRecord>> {
        let key = normalize_authority(iss);
        if key.is_empty() || key.len() > 2048 {
            return Ok(None);
        }
        match self
            .store
            .get(ns::ATTESTATION_AUTHORITY, key)
            .await
            .map_err(store_error)?
        {
            Some(r) => Ok(Some(from_json(&r.value)?)),
            None => Ok(None),
        }
    }

    /// Every trusted attestation authority, by URL.
    pub async fn attestation_authorities(&self) -> Result<Vec<TrustedIssuerRecord>> {
        self.list_all(ns::ATTESTATION_AUTHORITY, "").await
    }
}
