//! Workload identity federation, the store side: external OIDC issuers the deployment trusts, and
//! the federated credentials of principals (issuer and subject of an external token that stands
//! for the principal). Verifying the external tokens, and fetching the issuers' keys, is the
//! server's work; this module only keeps and checks the configuration.

use crate::deployment::{from_json, store_error, to_json};
use crate::records::{
    ns, FederatedCredential, JwksSource, PrincipalRecord, TrustedIssuerRecord,
    DEFAULT_FEDERATION_AUDIENCE,
};
use crate::{Deployment, RequestContext, Result};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_store::{Expect, Op};

/// Signature algorithms a trusted issuer may be allowed: asymmetric JWA algorithms only, so that
/// neither `none` nor an HMAC keyed with a public key can ever be accepted.
pub const FEDERATION_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
];
/// Algorithms allowed when an issuer is trusted without naming any.
pub const DEFAULT_FEDERATION_ALGORITHMS: [&str; 2] = ["RS256", "ES256"];
/// The most federated credentials one principal may hold (Azure's limit).
pub const MAX_FEDERATED_CREDENTIALS: usize = 20;
const MAX_AUDIENCES: usize = 5;
const MAX_CLAIM_LEN: usize = 600;
const MAX_URL_LEN: usize = 2048;

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// An `https://host...` URL of bounded length, without spaces or control characters.
pub(crate) fn check_https_url(what: &str, url: &str) -> Result<()> {
    let host = url.strip_prefix("https://").unwrap_or("");
    if host.is_empty()
        || host.starts_with('/')
        || url.len() > MAX_URL_LEN
        || has_control(url)
        || url.contains(' ')
    {
        return Err(ApiError::bad_parameter(format!(
            "The {what} must be an https:// URL of at most {MAX_URL_LEN} characters without spaces."
        )));
    }
    Ok(())
}

fn check_absolute_path(what: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') || path.len() > 4096 || has_control(path) {
        return Err(ApiError::bad_parameter(format!(
            "The {what} must be an absolute path on the server's host."
        )));
    }
    Ok(())
}

/// Checks an algorithm list and puts it in canonical order; empty means the default.
pub fn normalize_algorithms(algorithms: &[String]) -> Result<Vec<String>> {
    if algorithms.is_empty() {
        return Ok(DEFAULT_FEDERATION_ALGORITHMS
            .iter()
            .map(|a| (*a).to_owned())
            .collect());
    }
    for a in algorithms {
        if !FEDERATION_ALGORITHMS.contains(&a.as_str()) {
            return Err(ApiError::bad_parameter(format!(
                "Algorithm '{}' cannot be trusted for federated tokens; use one of {}.",
                crate::naming::printable(a),
                FEDERATION_ALGORITHMS.join(", ")
            )));
        }
    }
    Ok(FEDERATION_ALGORITHMS
        .iter()
        .filter(|known| algorithms.iter().any(|a| a == *known))
        .map(|a| (*a).to_owned())
        .collect())
}

pub(crate) fn check_source(source: &JwksSource) -> Result<()> {
    match source {
        JwksSource::File { path } => check_absolute_path("JWKS file", path),
        JwksSource::Url { url, ca_file } => {
            check_https_url("JWKS URL", url)?;
            if let Some(ca) = ca_file {
                check_absolute_path("CA file", ca)?;
            }
            Ok(())
        }
    }
}

/// Checks a federated credential and fills in the default audience.
fn check_credential(mut c: FederatedCredential) -> Result<FederatedCredential> {
    let name_ok = (3..=120).contains(&c.name.len())
        && c.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && c.name.as_bytes()[0].is_ascii_alphanumeric();
    if !name_ok {
        return Err(ApiError::bad_parameter(
            "A federated credential name is 3 to 120 letters, digits, '-' or '_', starting with a letter or digit.",
        ));
    }
    if c.subject.is_empty() || c.subject.len() > MAX_CLAIM_LEN || has_control(&c.subject) {
        return Err(ApiError::bad_parameter(format!(
            "The subject must be 1 to {MAX_CLAIM_LEN} printable characters."
        )));
    }
    if c.audiences.is_empty() {
        c.audiences = vec![DEFAULT_FEDERATION_AUDIENCE.to_owned()];
    }
    c.audiences.dedup();
    if c.audiences.len() > MAX_AUDIENCES
        || c.audiences
            .iter()
            .any(|a| a.is_empty() || a.len() > MAX_CLAIM_LEN || has_control(a))
    {
        return Err(ApiError::bad_parameter(format!(
            "A federated credential has 1 to {MAX_AUDIENCES} audiences of 1 to {MAX_CLAIM_LEN} printable characters."
        )));
    }
    Ok(c)
}

impl Deployment {
    /// Trusts an external OIDC issuer (or replaces how it is trusted). `algorithms` empty means
    /// RS256 and ES256.
    pub async fn trust_issuer(
        &self,
        ctx: &RequestContext,
        issuer: &str,
        jwks: JwksSource,
        algorithms: &[String],
    ) -> Result<TrustedIssuerRecord> {
        check_https_url("issuer", issuer)?;
        self.put_trusted(ctx, ns::TRUSTED_ISSUER, issuer, jwks, algorithms)
            .await
    }

    /// Stores how an issuer of `namespace` (federation issuers, attestation authorities) is
    /// trusted, under `issuer`.
    pub(crate) async fn put_trusted(
        &self,
        ctx: &RequestContext,
        namespace: &'static str,
        issuer: &str,
        jwks: JwksSource,
        algorithms: &[String],
    ) -> Result<TrustedIssuerRecord> {
        check_source(&jwks)?;
        let record = TrustedIssuerRecord {
            issuer: issuer.to_owned(),
            jwks,
            algorithms: normalize_algorithms(algorithms)?,
            updated: self.clock.now(),
        };
        self.commit_as(
            ctx,
            vec![Op::Put {
                ns: namespace,
                key: issuer.to_owned(),
                value: to_json(&record)?,
                expect: Expect::Any,
            }],
        )
        .await
        .map_err(store_error)?;
        Ok(record)
    }

    /// Removes the issuer of `namespace` stored under `issuer`; `missing` when there is none.
    pub(crate) async fn remove_trusted(
        &self,
        ctx: &RequestContext,
        namespace: &'static str,
        issuer: &str,
        missing: impl FnOnce() -> ApiError,
    ) -> Result<TrustedIssuerRecord> {
        let r = self
            .store
            .get(namespace, issuer)
            .await
            .map_err(store_error)?
            .ok_or_else(missing)?;
        let record = from_json(&r.value)?;
        self.commit_as(
            ctx,
            vec![Op::Delete {
                ns: namespace,
                key: issuer.to_owned(),
                expect: Expect::Revision(r.revision),
            }],
        )
        .await
        .map_err(store_error)?;
        Ok(record)
    }

    /// The issuer of `namespace` stored under `issuer`, if any.
    pub(crate) async fn get_trusted(
        &self,
        namespace: &'static str,
        issuer: &str,
    ) -> Result<Option<TrustedIssuerRecord>> {
        match self
            .store
            .get(namespace, issuer)
            .await
            .map_err(store_error)?
        {
            Some(r) => Ok(Some(from_json(&r.value)?)),
            None => Ok(None),
        }
    }

    /// Stops trusting an issuer. Federated credentials naming it stay, inert, until it is trusted
    /// again or they are removed.
    pub async fn untrust_issuer(
        &self,
        ctx: &RequestContext,
        issuer: &str,
    ) -> Result<TrustedIssuerRecord> {
        self.remove_trusted(ctx, ns::TRUSTED_ISSUER, issuer, || not_trusted(issuer))
            .await
    }

    /// The trusted issuer with exactly this URL, read from the store (so a change made by another
    /// process counts at once).
    pub async fn trusted_issuer(&self, issuer: &str) -> Result<Option<TrustedIssuerRecord>> {
        if issuer.is_empty() || issuer.len() > MAX_URL_LEN {
            return Ok(None);
        }
        self.get_trusted(ns::TRUSTED_ISSUER, issuer).await
    }

    /// Every trusted issuer, by URL.
    pub async fn trusted_issuers(&self) -> Result<Vec<TrustedIssuerRecord>> {
        self.list_all(ns::TRUSTED_ISSUER, "").await
    }

    /// Adds a federated credential to a principal. Its issuer must be trusted already.
    pub async fn add_federated_credential(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        credential: FederatedCredential,
    ) -> Result<(PrincipalRecord, FederatedCredential)> {
        let credential = check_credential(credential)?;
        if self.trusted_issuer(&credential.issuer).await?.is_none() {
            return Err(ApiError::bad_parameter(format!(
                "Issuer '{}' is not trusted; trust it first (keyshift federation trust).",
                crate::naming::printable(&credential.issuer)
            )));
        }
        let (mut p, revision) = self.principal_for_update(client_id).await?;
        if p.federated_credentials
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&credential.name))
        {
            return Err(ApiError::conflict(format!(
                "The principal has a federated credential named '{}' already.",
                credential.name
            )));
        }
        if p.federated_credentials
            .iter()
            .any(|c| c.issuer == credential.issuer && c.subject == credential.subject)
        {
            return Err(ApiError::conflict(
                "The principal has a federated credential with this issuer and subject already.",
            ));
        }
        if p.federated_credentials.len() >= MAX_FEDERATED_CREDENTIALS {
            return Err(ApiError::bad_parameter(format!(
                "A principal holds at most {MAX_FEDERATED_CREDENTIALS} federated credentials."
            )));
        }
        p.federated_credentials.push(credential.clone());
        self.save_principal(ctx, &p, revision).await?;
        Ok((p, credential))
    }

    /// Removes a principal's federated credential by name (case-insensitive).
    pub async fn remove_federated_credential(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        name: &str,
    ) -> Result<FederatedCredential> {
        let (mut p, revision) = self.principal_for_update(client_id).await?;
        let Some(at) = p
            .federated_credentials
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
        else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "Principal {client_id} has no federated credential named '{}'.",
                    crate::naming::printable(name)
                ),
            ));
        };
        let removed = p.federated_credentials.remove(at);
        self.save_principal(ctx, &p, revision).await?;
        Ok(removed)
    }
}

fn not_trusted(issuer: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "Issuer '{}' is not trusted.",
            crate::naming::printable(issuer)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(name: &str, subject: &str, audiences: &[&str]) -> FederatedCredential {
        FederatedCredential {
            name: name.into(),
            issuer: "https://issuer.example".into(),
            subject: subject.into(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn algorithms_are_asymmetric_only() {
        assert_eq!(normalize_algorithms(&[]).unwrap(), ["RS256", "ES256"]);
        let list = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            normalize_algorithms(&list(&["ES384", "RS256", "RS256"])).unwrap(),
            ["RS256", "ES384"]
        );
        for bad in ["none", "HS256", "rs256", "ES256K", ""] {
            assert!(normalize_algorithms(&list(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_and_sources_are_checked() {
        let c = check_credential(cred("k8s-api", "system:serviceaccount:ns:sa", &[])).unwrap();
        assert_eq!(c.audiences, [DEFAULT_FEDERATION_AUDIENCE]);
        for bad in [
            cred("x", "s", &[]),
            cred("-bad", "s", &[]),
            cred("has space", "s", &[]),
            cred("good", "", &[]),
            cred("good", "s\n", &[]),
            cred("good", "s", &[""]),
        ] {
            assert!(check_credential(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(check_source(&JwksSource::File {
            path: "relative.json".into()
        })
        .is_err());
        assert!(check_source(&JwksSource::Url {
            url: "http://plain.example/jwks".into(),
            ca_file: None
        })
        .is_err());
        assert!(check_source(&JwksSource::Url {
            url: "https://issuer.example/jwks".into(),
            ca_file: Some("ca.pem".into())
        })
        .is_err());
        assert!(check_https_url("issuer", "https://").is_err());
        assert!(check_https_url("issuer", "https://oidc.eks.example/id/ABC").is_ok());
    }
}
