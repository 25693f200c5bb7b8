//! Access tokens: ES256 JWTs issued by this deployment and validated on every API request.
//!
//! Validation is strict and small on purpose: the header must name ES256 and our key id (no `none`,
//! no HMAC, no RSA, so no algorithm confusion), the signature must verify, and `iss`, `aud`, `tid`,
//! `exp` and `nbf` must hold, with 60 seconds of clock skew. The principal must still exist and be
//! enabled. Validated tokens are remembered until they expire so the hot path skips the signature.

use keyshift_api::b64;
use keyshift_crypto::token::{verify_es256, TokenSigningKey};
use keyshift_vault::Deployment;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Allowed clock skew for `nbf` and `exp`, seconds.
pub const SKEW_SECONDS: i64 = 60;
const TOKEN_CACHE_CAPACITY: usize = 50_000;
/// How long a principal's existence and state are trusted without a store read.
const PRINCIPAL_RECHECK_SECONDS: i64 = 1;

/// Why a token was refused. Never shown in detail to the client beyond this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("the token is malformed")]
    Malformed,
    /// Header algorithm other than ES256.
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// Unknown key id.
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// Bad signature.
    #[error("the token's signature does not verify")]
    Signature,
    /// Wrong issuer.
    #[error("the token's issuer is not this deployment")]
    Issuer,
    /// Wrong audience.
    #[error("the token's audience is not this service")]
    Audience,
    /// Wrong tenant.
    #[error("the token belongs to another tenant")]
    Tenant,
    /// Expired.
    #[error("the token has expired")]
    Expired,
    /// Not yet valid.
    #[error("the token is not yet valid")]
    NotYetValid,
    /// The principal is gone or disabled.
    #[error("the token's principal no longer exists or is disabled")]
    Principal,
}

/// Claims of our access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the principal's object id.
    pub sub: String,
    /// Object id.
    pub oid: String,
    /// Tenant id.
    pub tid: String,
    /// Client id.
    pub appid: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Token version, "2.0".
    pub ver: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// The caller a token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Principal object id.
    pub principal_id: String,
    /// Client id.
    pub client_id: String,
}

/// Issues and validates this deployment's tokens.
pub struct TokenAuthority {
    deployment: Arc<Deployment>,
    issuer: String,
    audience: String,
    lifetime: i64,
    validated: RwLock<HashMap<[u8; 32], (i64, Caller)>>,
    /// When each principal was last found enabled, and [`Deployment::principal_changes`] then.
    principals: RwLock<HashMap<String, (i64, u64)>>,
    /// Client assertions already used (client id and jti), until they expire.
    assertions: RwLock<HashMap<String, i64>>,
    /// Signing keys of the external issuers trusted for workload identity federation.
    issuer_keys: crate::federation::IssuerKeys,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The key id of a token signing key: a thumbprint of its public point.
pub fn key_id(key: &TokenSigningKey) -> String {
    let (x, y) = key.public_xy();
    point_id(&x, &y)
}

fn point_id(x: &[u8], y: &[u8]) -> String {
    let mut both = x.to_vec();
    both.extend_from_slice(y);
    b64::encode(&keyshift_crypto::digest::sha256(&both)[..16])
}

impl TokenAuthority {
    /// An authority issuing as `issuer` for `audience`, tokens living `lifetime` seconds.
    pub fn new(
        deployment: Arc<Deployment>,
        issuer: String,
        audience: String,
        lifetime: i64,
    ) -> Self {
        TokenAuthority {
            deployment,
            issuer,
            audience,
            lifetime,
            validated: RwLock::new(HashMap::new()),
            principals: RwLock::new(HashMap::new()),
            assertions: RwLock::new(HashMap::new()),
            issuer_keys: Default::default(),
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS document: the current key and those retired recently, whose tokens may still be valid.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .deployment
            .token_verification_keys()
            .iter()
            .map(|(x, y)| {
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                    "kid": point_id(x, y), "x": b64::encode(x), "y": b64::encode(y)
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Issues a token for a principal. Returns the token and its lifetime.
    pub fn issue(
        &self,
        principal_id: &str,
        client_id: &str,
    ) -> Result<(String, i64), keyshift_crypto::CryptoError> {
        let now = self.deployment.clock().now();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: principal_id.to_owned(),
            oid: principal_id.to_owned(),
            tid: self.deployment.tenant_id().to_owned(),
            appid: client_id.to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.lifetime,
            ver: "2.0".into(),
        };
        let signing_key = self.deployment.token_signing_key();
        let header = Header {
            alg: "ES256".into(),
            kid: Some(key_id(&signing_key)),
            typ: Some("JWT".into()),
        };
        let mut token = b64::encode(&serde_json::to_vec(&header).unwrap_or_default());
        token.push('.');
        token.push_str(&b64::encode(
            &serde_json::to_vec(&claims).unwrap_or_default(),
        ));
        let signature = signing_key.sign_es256(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64::encode(&signature));
        Ok((token, self.lifetime))
    }

    /// Validates a bearer token.
    pub async fn validate(&self, token: &str) -> Result<Caller, TokenError> {
        let now = self.deployment.clock().now();
        let digest = keyshift_crypto::digest::sha256(token.as_bytes());
        let cached = self
            .validated
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let caller = match cached {
            Some((exp, caller)) if now < exp + SKEW_SECONDS => caller,
            _ => {
                let (claims, caller) = self.validate_uncached(token, now)?;
                let mut cache = self.validated.write().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= TOKEN_CACHE_CAPACITY {
                    cache.retain(|_, (exp, _)| now < *exp + SKEW_SECONDS);
                    if cache.len() >= TOKEN_CACHE_CAPACITY {
                        cache.clear();
                    }
                }
                cache.insert(digest, (claims.exp, caller.clone()));
                caller
            }
        };
        self.check_principal(&caller, now).await?;
        Ok(caller)
    }

    async fn check_principal(&self, caller: &Caller, now: i64) -> Result<(), TokenError> {
        let checked = self
            .principals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&caller.client_id)
            .copied();
        // A change to any principal, made here or followed from another node, voids every check.
        let changes = self.deployment.principal_changes();
        if checked.is_some_and(|(at, seen)| now - at < PRINCIPAL_RECHECK_SECONDS && seen == changes)
        {
            return Ok(());
        }
        let principal = self
            .deployment
            .principal_by_client_id(&caller.client_id)
            .await
            .map_err(|_| TokenError::Principal)?;
        match principal {
            Some(p) if p.enabled && p.id == caller.principal_id => {
                self.principals
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(caller.client_id.clone(), (now, changes));
                Ok(())
            }
            _ => {
                self.principals
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&caller.client_id);
                Err(TokenError::Principal)
            }
        }
    }

    fn validate_uncached(&self, token: &str, now: i64) -> Result<(Claims, Caller), TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = b64::decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != "ES256" {
            return Err(TokenError::Algorithm);
        }
        let keys = self.deployment.token_verification_keys();
        let Some((x, y)) = keys
            .iter()
            .find(|(x, y)| header.kid.as_deref() == Some(point_id(x, y).as_str()))
        else {
            return Err(TokenError::UnknownKey);
        };
        let signature = b64::decode(s).map_err(|_| TokenError::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        if !verify_es256(x, y, signed.as_bytes(), &signature) {
            return Err(TokenError::Signature);
        }
        let claims: Claims = b64::decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::Audience);
        }
        if claims.tid != self.deployment.tenant_id() {
            return Err(TokenError::Tenant);
        }
        if now >= claims.exp + SKEW_SECONDS {
            return Err(TokenError::Expired);
        }
        if now + SKEW_SECONDS < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        let caller = Caller {
            principal_id: claims.oid.clone(),
            client_id: claims.appid.clone(),
        };
        Ok((claims, caller))
    }
}

/// `client_assertion_type` of RFC 7523 client authentication.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The longest an assertion may live, from now.
const MAX_ASSERTION_LIFETIME: i64 = 3600;

/// Why a client assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not a JWT of JSON parts.
    #[error("the client assertion is malformed")]
    Malformed,
    /// alg other than RS256 or PS256.
    #[error("the client assertion's algorithm is not accepted")]
    Algorithm,
    /// iss, sub and client_id disagree.
    #[error("the client assertion's issuer, subject and client id disagree")]
    Subject,
    /// Unknown, disabled client, or no certificate with that thumbprint.
    #[error("the client or its certificate is unknown")]
    UnknownClient,
    /// The certificate has expired.
    #[error("the client certificate has expired")]
    CertificateExpired,
    /// Bad signature.
    #[error("the client assertion's signature does not verify")]
    Signature,
    /// Audience is not this token endpoint.
    #[error("the client assertion's audience is not this token endpoint")]
    Audience,
    /// Expired, not yet valid, or valid for too long.
    #[error("the client assertion is expired, not yet valid, or valid for too long")]
    Lifetime,
    /// jti missing or already used.
    #[error("the client assertion has no jti or was used before")]
    Replay,
    /// An external token whose issuer this deployment does not trust.
    #[error("the client assertion's issuer is not a trusted federation issuer")]
    UntrustedIssuer,
    /// An external token of a trusted issuer, refused.
    #[error(transparent)]
    Federated(#[from] crate::federation::FederationError),
}

#[derive(Deserialize)]
struct AssertionHeader {
    alg: String,
    #[serde(default)]
    x5t: Option<String>,
    #[serde(default, rename = "x5t#S256")]
    x5t_s256: Option<String>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: serde_json::Value,
    // MSAL sends fractional seconds.
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    jti: Option<String>,
}

impl TokenAuthority {
    /// Verifies an RFC 7523 client assertion: an external token of a trusted issuer (workload
    /// identity federation), or one signed with a principal's certificate key, as the Azure
    /// identity libraries send them. Returns the principal.
    pub async fn verify_client_assertion(
        &self,
        form_client_id: Option<&str>,
        assertion: &str,
        token_endpoint: &str,
    ) -> Result<keyshift_vault::records::PrincipalRecord, AssertionError> {
        let now = self.deployment.clock().now();
        let mut parts = assertion.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AssertionError::Malformed);
        };
        // A certificate assertion is issued by the client itself; any other issuer must be a
        // trusted external one, and its token is checked against that issuer's keys only.
        let claimed_issuer = b64::decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|c| c.get("iss").and_then(|i| i.as_str()).map(str::to_owned));
        if let Some(iss) = claimed_issuer.filter(|i| Some(i.as_str()) != form_client_id) {
            let trusted = self
                .deployment
                .trusted_issuer(&iss)
                .await
                .map_err(|_| AssertionError::UntrustedIssuer)?;
            if let Some(issuer) = trusted {
                return Ok(crate::federation::verify_federated_assertion(
                    &self.deployment,
                    &self.issuer_keys,
                    &issuer,
                    form_client_id,
                    assertion,
                )
                .await?);
            }
            if iss.contains("://") {
                return Err(AssertionError::UntrustedIssuer);
            }
        }
        let header: AssertionHeader = b64::decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AssertionError::Malformed)?;
        let alg = match header.alg.as_str() {
            "RS256" => keyshift_crypto::SignatureAlgorithm::Rs256,
            "PS256" => keyshift_crypto::SignatureAlgorithm::Ps256,
            _ => return Err(AssertionError::Algorithm),
        };
        let claims: AssertionClaims = b64::decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AssertionError::Malformed)?;
        if !claims.exp.is_finite() || claims.nbf.is_some_and(|n| !n.is_finite()) {
            return Err(AssertionError::Malformed);
        }
        let exp = claims.exp.floor() as i64;
        let nbf = claims.nbf.map(|n| n.floor() as i64);
        if claims.iss != claims.sub || form_client_id.is_some_and(|c| c != claims.iss) {
            return Err(AssertionError::Subject);
        }
        let principal = self
            .deployment
            .principal_by_client_id(&claims.iss)
            .await
            .map_err(|_| AssertionError::UnknownClient)?
            .filter(|p| p.enabled)
            .ok_or(AssertionError::UnknownClient)?;
        // Thumbprints arrive as base64url, padded (MSAL) or not: compare the bytes.
        let bytes = |t: &Option<String>| t.as_deref().and_then(|t| b64::decode(t).ok());
        let (want_s256, want_sha1) = (bytes(&header.x5t_s256), bytes(&header.x5t));
        let stored = |t: &str| b64::decode(t).ok();
        let cert = principal
            .certificates
            .iter()
            .find(|c| want_s256.is_some() && stored(&c.x5t_s256) == want_s256)
            .or_else(|| {
                principal
                    .certificates
                    .iter()
                    .find(|c| want_sha1.is_some() && stored(&c.x5t) == want_sha1)
            })
            .ok_or(AssertionError::UnknownClient)?;
        if cert.not_after < now {
            return Err(AssertionError::CertificateExpired);
        }
        let signature = b64::decode(s).map_err(|_| AssertionError::Malformed)?;
        let digest =
            keyshift_crypto::digest::sha256(&assertion.as_bytes()[..h.len() + 1 + p.len()]);
        let key = keyshift_crypto::PublicKey::Rsa {
            n: cert.n.clone(),
            e: cert.e.clone(),
        };
        if !keyshift_crypto::verify_with_public(&key, alg, &digest, &signature).unwrap_or(false) {
            return Err(AssertionError::Signature);
        }
        let wanted = token_endpoint.trim_end_matches('/');
        let audience_ok = match &claims.aud {
            serde_json::Value::String(a) => a.trim_end_matches('/') == wanted,
            serde_json::Value::Array(list) => list.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| a.trim_end_matches('/') == wanted)
            }),
            _ => false,
        };
        if !audience_ok {
            return Err(AssertionError::Audience);
        }
        if now >= exp.saturating_add(SKEW_SECONDS)
            || nbf.is_some_and(|nbf| now + SKEW_SECONDS < nbf)
            || exp.saturating_sub(now) > MAX_ASSERTION_LIFETIME + SKEW_SECONDS
        {
            return Err(AssertionError::Lifetime);
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or(AssertionError::Replay)?;
        let mut seen = self.assertions.write().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, exp| now < *exp + SKEW_SECONDS);
        if seen.insert(format!("{}\0{jti}", claims.iss), exp).is_some() {
            return Err(AssertionError::Replay);
        }
        Ok(principal)
    }
}
