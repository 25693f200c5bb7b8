//! Attestation authorities trusted for secure key release, the store side. The twin of
//! `federation.rs`: an authority is an issuer URL, where its token signing keys are (a JWKS file
//! or https URL) and the algorithms it is trusted with. Verifying attestation tokens, and fetching
//! the keys, is the server's work.
//!
//! An authority is stored under its URL without a trailing `/` (Azure's tokens and policies
//! differ on it), and a token's `iss` is looked up the same way.

use crate::federation::check_https_url;
use crate::records::{ns, JwksSource, TrustedIssuerRecord};
use crate::release_policy::normalize_authority;
use crate::{Deployment, RequestContext, Result};
use keyshift_api::{ApiError, ErrorCode};

impl Deployment {
    /// Trusts an attestation authority (or replaces how it is trusted). `algorithms` empty means
    /// RS256 and ES256.
    pub async fn trust_attestation_authority(
        &self,
        ctx: &RequestContext,
        issuer: &str,
        jwks: JwksSource,
        algorithms: &[String],
    ) -> Result<TrustedIssuerRecord> {
        check_https_url("attestation authority", issuer)?;
        let issuer = normalize_authority(issuer);
        self.put_trusted(ctx, ns::ATTESTATION_AUTHORITY, issuer, jwks, algorithms)
            .await
    }

    /// Stops trusting an attestation authority: releases vouched for by it are refused at once.
    pub async fn untrust_attestation_authority(
        &self,
        ctx: &RequestContext,
        issuer: &str,
    ) -> Result<TrustedIssuerRecord> {
        let key = normalize_authority(issuer);
        self.remove_trusted(ctx, ns::ATTESTATION_AUTHORITY, key, || {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "Attestation authority '{}' is not trusted.",
                    crate::naming::printable(issuer)
                ),
            )
        })
        .await
    }

    /// The trusted authority a token's `iss` names, read from the store (so a change made by
    /// another process counts at once).
    pub async fn attestation_authority(&self, iss: &str) -> Result<Option<TrustedIssuerRecord>> {
        let key = normalize_authority(iss);
        if key.is_empty() || key.len() > 2048 {
            return Ok(None);
        }
        self.get_trusted(ns::ATTESTATION_AUTHORITY, key).await
    }

    /// Every trusted attestation authority, by URL.
    pub async fn attestation_authorities(&self) -> Result<Vec<TrustedIssuerRecord>> {
        self.list_all(ns::ATTESTATION_AUTHORITY, "").await
    }
}
