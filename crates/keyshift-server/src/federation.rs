//! Workload identity federation at the token endpoint: an external OIDC token (a Kubernetes
//! service account token, a GitHub Actions token...) sent as the client assertion of a principal
//! that holds a federated credential for its issuer and subject is exchanged for a Keyshift token.
//!
//! The issuers and credentials live in the store (`keyshift_vault::federation`); this module
//! keeps each issuer's signing keys (JWKS) and checks the external token: an asymmetric algorithm
//! the issuer is trusted with, a key of the issuer by `kid` whose type fits that algorithm, the
//! signature, `exp` (required), `nbf` and `iat`, then the principal's credential by `iss` and
//! `sub`, and `aud`. Nothing of the token is logged; errors say what failed, never the content.

use crate::auth::SKEW_SECONDS;
use keyshift_api::b64;
use keyshift_crypto::{Curve, KeyFamily, PublicKey, SignatureAlgorithm};
use keyshift_vault::records::{JwksSource, PrincipalRecord, TrustedIssuerRecord};
use keyshift_vault::Deployment;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A JWKS file is re-read when its modification time or size changes, and at least this often.
const FILE_RECHECK_SECONDS: i64 = 5;
/// An unknown `kid` refetches a JWKS URL at most this often.
const URL_REFETCH_SECONDS: i64 = 30;
/// A JWKS fetched from a URL is refreshed after this long even if every `kid` is known, so that
/// keys the issuer withdrew stop verifying.
const URL_MAX_AGE_SECONDS: i64 = 3600;
/// With nothing cached, a failing JWKS URL is retried at most this often.
const URL_RETRY_SECONDS: i64 = 5;
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an external token was refused. The text goes to the client and the log: it never quotes
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// Not a JWT of JSON parts, or a claim has the wrong type.
    #[error("the external token is malformed")]
    Malformed,
    /// `alg` is not one the issuer is trusted with (`none` and HMAC never are).
    #[error("the external token's algorithm is not accepted for its issuer")]
    Algorithm,
    /// No `kid` in the header.
    #[error("the external token's header names no key (kid)")]
    NoKeyId,
    /// The issuer publishes no key with that `kid`.
    #[error("the external token was signed by a key its issuer does not publish")]
    UnknownKey,
    /// The key's type (or its own `alg` or `use`) does not fit the token's algorithm.
    #[error("the external token's algorithm does not fit the issuer's key")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("the external token's signature does not verify")]
    Signature,
    /// No `exp`.
    #[error("the external token has no expiry (exp)")]
    NoExpiry,
    /// `exp` has passed.
    #[error("the external token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("the external token is not yet valid")]
    NotYetValid,
    /// No `client_id` in the request.
    #[error("client_id is required with an external token")]
    NoClientId,
    /// Unknown or disabled principal.
    #[error("the client is unknown or disabled")]
    UnknownClient,
    /// The principal has no federated credential for this issuer and subject.
    #[error(
        "no federated credential of the client matches the external token's issuer and subject"
    )]
    NotMapped,
    /// `aud` contains none of the credential's audiences.
    #[error("the external token's audience matches none of the federated credential's audiences")]
    Audience,
    /// The issuer's keys could not be read or fetched.
    #[error("the signing keys of the external token's issuer cannot be loaded")]
    KeysUnavailable,
}

/// One public key of an issuer's JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`.
    pub kid: String,
    /// The key.
    pub key: PublicKey,
    /// `alg`, when the JWK pins one.
    pub alg: Option<String>,
    /// `use`, when given.
    pub key_use: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    x5c: Vec<String>,
}

fn parse_jwk(value: serde_json::Value) -> Option<Jwk> {
    let raw: RawJwk = serde_json::from_value(value).ok()?;
    let bytes = |v: &Option<String>| v.as_deref().and_then(|t| b64::decode(t).ok());
    // The key of the first certificate of `x5c`, for entries that carry no key members: Azure
    // Attestation's JWKS publishes its signing keys that way. Only RSA keys of 2048 bits or
    // more; the certificate is a container here, its chain and dates are not checked (the
    // JWKS itself is what is trusted, by file or by HTTPS).
    let from_x5c = || {
        let der = b64::decode(raw.x5c.first()?).ok()?;
        let key = keyshift_crypto::x509::parse_certificate(&der)
            .ok()?
            .public_key;
        matches!(key, PublicKey::Rsa { .. }).then_some(key)
    };
    // Symmetric (`oct`) members are never read: an issuer's JWKS can only hold public keys.
    let key = match raw.kty.as_deref() {
        Some("RSA") if raw.n.is_none() && raw.e.is_none() => from_x5c()?,
        None => from_x5c()?,
        Some("RSA") => PublicKey::Rsa {
            n: bytes(&raw.n)?,
            e: bytes(&raw.e)?,
        },
        Some("EC") => {
            let crv = Curve::from_jwk_name(raw.crv.as_deref()?)
                .filter(|c| matches!(c, Curve::P256 | Curve::P384 | Curve::P521))?;
            PublicKey::Ec {
                crv,
                x: bytes(&raw.x)?,
                y: bytes(&raw.y)?,
            }
        }
        _ => return None,
    };
    Some(Jwk {
        kid: raw.kid.filter(|k| !k.is_empty())?,
        key,
        alg: raw.alg,
        key_use: raw.key_use,
    })
}

/// The usable keys of a JWKS document: RSA and EC (P-256, P-384, P-521) keys with a `kid`,
/// given by their members or (RSA, without members) by the certificate in `x5c`. Other entries
/// are skipped; a document that is not a JWKS is an error.
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<Jwk>, String> {
    let doc: RawJwks = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    Ok(doc.keys.into_iter().filter_map(parse_jwk).collect())
}

/// Reads and checks a JWKS file, as `keyshift federation trust --jwks-file` and the admin API do
/// before trusting it. Returns the number of usable keys (at least one).
pub fn check_jwks_file(path: &std::path::Path) -> Result<usize, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let keys = parse_jwks(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if keys.is_empty() {
        return Err(format!(
            "{} holds no usable key (RSA or EC P-256/384/521, with a kid)",
            path.display()
        ));
    }
    Ok(keys.len())
}

struct CachedKeys {
    source: JwksSource,
    /// `None` until a load succeeded.
    keys: Option<Arc<Vec<Jwk>>>,
    /// Modification time and size of a JWKS file when it was read.
    file_stamp: Option<(SystemTime, u64)>,
    loaded_at: i64,
    /// Last fetch of a JWKS URL, successful or not: bounds how often an issuer is asked.
    last_attempt: i64,
}

/// The signing keys of trusted issuers, cached per issuer.
#[derive(Default)]
pub struct IssuerKeys {
    cache: Mutex<HashMap<String, CachedKeys>>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys").finish_non_exhaustive()
    }
}

impl IssuerKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKeys>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys of `issuer` that carry `kid`, loading or refreshing the JWKS as its source needs.
    async fn keys_with_kid(
        &self,
        issuer: &TrustedIssuerRecord,
        kid: &str,
        now: i64,
    ) -> Result<Vec<Jwk>, FederationError> {
        let with_kid =
            |keys: &[Jwk]| -> Vec<Jwk> { keys.iter().filter(|k| k.kid == kid).cloned().collect() };
        let found = with_kid(&self.current(issuer, now, false).await?);
        if !found.is_empty() {
            return Ok(found);
        }
        // An unknown kid may be a key the issuer has just rotated in.
        Ok(with_kid(&self.current(issuer, now, true).await?))
    }

    async fn current(
        &self,
        issuer: &TrustedIssuerRecord,
        now: i64,
        unknown_kid: bool,
    ) -> Result<Arc<Vec<Jwk>>, FederationError> {
        let file_stamp = match &issuer.jwks {
            JwksSource::File { path } => tokio::fs::metadata(path)
                .await
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())),
            JwksSource::Url { .. } => None,
        };
        let (load, cached) = {
            let mut cache = self.lock();
            let entry = cache
                .entry(issuer.issuer.clone())
                .or_insert_with(|| CachedKeys {
                    source: issuer.jwks.clone(),
                    keys: None,
                    file_stamp: None,
                    loaded_at: now,
                    last_attempt: i64::MIN,
                });
            if entry.source != issuer.jwks {
                // The issuer was trusted anew with another source: forget the old keys.
                *entry = CachedKeys {
                    source: issuer.jwks.clone(),
                    keys: None,
                    file_stamp: None,
                    loaded_at: now,
                    last_attempt: i64::MIN,
                };
            }
            let since_attempt = now.saturating_sub(entry.last_attempt);
            let load = match (&issuer.jwks, &entry.keys) {
                (JwksSource::File { .. }, None) => true,
                (JwksSource::File { .. }, Some(_)) => {
                    entry.file_stamp != file_stamp || now - entry.loaded_at >= FILE_RECHECK_SECONDS
                }
                (JwksSource::Url { .. }, None) => since_attempt >= URL_RETRY_SECONDS,
                (JwksSource::Url { .. }, Some(_)) => {
                    let stale = now - entry.loaded_at >= URL_MAX_AGE_SECONDS;
                    (stale || unknown_kid) && since_attempt >= URL_REFETCH_SECONDS
                }
            };
            if load && matches!(issuer.jwks, JwksSource::Url { .. }) {
                entry.last_attempt = now;
            }
            (load, entry.keys.clone())
        };
        if !load {
            return cached.ok_or(FederationError::KeysUnavailable);
        }
        let loaded = match &issuer.jwks {
            JwksSource::File { path } => read_file(path).await,
            source @ JwksSource::Url { .. } => fetch(source).await,
        };
        match loaded {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let mut cache = self.lock();
                if let Some(entry) = cache
                    .get_mut(&issuer.issuer)
                    .filter(|e| e.source == issuer.jwks)
                {
                    entry.keys = Some(keys.clone());
                    entry.file_stamp = file_stamp;
                    entry.loaded_at = now;
                }
                Ok(keys)
            }
            Err(detail) => {
                // Where the keys are is configuration, not a secret; the token is never logged.
                tracing::warn!(issuer = %issuer.issuer, %detail, "cannot load a trusted issuer's JWKS");
                // A file caught mid-write, or an issuer briefly down: keep the keys we had.
                cached.ok_or(FederationError::KeysUnavailable)
            }
        }
    }
}

async fn read_file(path: &str) -> Result<Vec<Jwk>, String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("{path} is larger than {MAX_JWKS_BYTES} bytes"));
    }
    parse_jwks(&bytes)
}

/// System trust anchors: the PEM bundle named by `SSL_CERT_FILE`, else the distribution's.
fn system_roots(roots: &mut rustls::RootCertStore) {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/ca-bundle.pem",
                "/etc/ssl/cert.pem",
            ]
            .into_iter()
            .map(std::path::PathBuf::from),
        );
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            let certs = CertificateDer::pem_slice_iter(&bytes).filter_map(|c| c.ok());
            let (added, _) = roots.add_parsable_certificates(certs);
            if added > 0 {
                return;
            }
        }
    }
}

fn https_client(ca_file: Option<&str>) -> Result<reqwest::Client, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    system_roots(&mut roots);
    if let Some(ca) = ca_file {
        let bytes = std::fs::read(ca).map_err(|e| format!("cannot read CA file {ca}: {e}"))?;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
            .filter_map(|c| c.ok())
            .collect();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("CA file {ca} holds no usable certificate"));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client set-up failed: {e}"))
}

async fn fetch(source: &JwksSource) -> Result<Vec<Jwk>, String> {
    let JwksSource::Url { url, ca_file } = source else {
        return Err("not a URL source".into());
    };
    let client = https_client(ca_file.as_deref())?;
    let mut response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("GET {url}: larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    parse_jwks(&body)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: serde_json::Value,
}

#[derive(Deserialize)]
struct Times {
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, FederationError> {
    b64::decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(FederationError::Malformed)
}

/// Whether `key` may verify `alg` as its JWK describes itself.
fn key_fits(jwk: &Jwk, alg: SignatureAlgorithm) -> bool {
    let type_fits = match (&jwk.key, alg.family()) {
        (PublicKey::Rsa { .. }, KeyFamily::Rsa) => true,
        (PublicKey::Ec { crv, .. }, KeyFamily::Ec) => alg.curve() == Some(*crv),
        _ => false,
    };
    type_fits
        && jwk.alg.as_deref().is_none_or(|a| a == alg.name())
        && jwk.key_use.as_deref().is_none_or(|u| u == "sig")
}

fn audience_contains(aud: &serde_json::Value, wanted: &[String]) -> bool {
    match aud {
        serde_json::Value::String(a) => wanted.iter().any(|w| w == a),
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|a| a.as_str())
            .any(|a| wanted.iter().any(|w| w == a)),
        _ => false,
    }
}

fn whole_seconds(value: f64) -> Result<i64, FederationError> {
    if value.is_finite() {
        Ok(value.floor() as i64)
    } else {
        Err(FederationError::Malformed)
    }
}

/// Verifies a JWT of a trusted `issuer` (its `iss` already matched): an algorithm the issuer is
/// trusted with (never `none` or HMAC), a key of its JWKS by `kid` whose type fits, the
/// signature, `exp` (required) and `nbf`/`iat` with [`SKEW_SECONDS`]. Returns the claims. Used
/// for federated client assertions and for attestation tokens of secure key release.
pub async fn verify_signed_token(
    keys: &IssuerKeys,
    issuer: &TrustedIssuerRecord,
    token: &str,
    now: i64,
) -> Result<serde_json::Map<String, serde_json::Value>, FederationError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FederationError::Malformed);
    };
    let header: Header = decode_part(h)?;
    // Only the asymmetric algorithms the issuer is trusted with: never `none`, never HMAC.
    if !issuer.algorithms.contains(&header.alg) {
        return Err(FederationError::Algorithm);
    }
    let alg = SignatureAlgorithm::from_name(&header.alg).ok_or(FederationError::Algorithm)?;
    let kid = header
        .kid
        .filter(|k| !k.is_empty())
        .ok_or(FederationError::NoKeyId)?;
    let candidates = keys.keys_with_kid(issuer, &kid, now).await?;
    if candidates.is_empty() {
        return Err(FederationError::UnknownKey);
    }
    let jwk = candidates
        .iter()
        .find(|k| key_fits(k, alg))
        .ok_or(FederationError::KeyMismatch)?;
    let signature = b64::decode(s).map_err(|_| FederationError::Malformed)?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    match keyshift_crypto::verify_message_with_public(&jwk.key, alg, signed, &signature) {
        Ok(true) => {}
        Ok(false) => return Err(FederationError::Signature),
        Err(_) => return Err(FederationError::KeyMismatch),
    }
    let claims: serde_json::Map<String, serde_json::Value> = decode_part(p)?;
    let times: Times = serde_json::from_value(serde_json::Value::Object(claims.clone()))
        .map_err(|_| FederationError::Malformed)?;
    let exp = whole_seconds(times.exp.ok_or(FederationError::NoExpiry)?)?;
    if now >= exp.saturating_add(SKEW_SECONDS) {
        return Err(FederationError::Expired);
    }
    for not_before in [times.nbf, times.iat].into_iter().flatten() {
        if whole_seconds(not_before)? > now + SKEW_SECONDS {
            return Err(FederationError::NotYetValid);
        }
    }
    Ok(claims)
}

/// Verifies an external token of a trusted `issuer` (its `iss` already matched) presented for
/// `client_id`, and returns the principal it stands for.
pub async fn verify_federated_assertion(
    deployment: &Deployment,
    keys: &IssuerKeys,
    issuer: &TrustedIssuerRecord,
    client_id: Option<&str>,
    assertion: &str,
) -> Result<PrincipalRecord, FederationError> {
    let now = deployment.clock().now();
    let claims = verify_signed_token(keys, issuer, assertion, now).await?;
    let claims: Claims = serde_json::from_value(serde_json::Value::Object(claims))
        .map_err(|_| FederationError::Malformed)?;
    let client_id = client_id
        .filter(|c| !c.is_empty())
        .ok_or(FederationError::NoClientId)?;
    let principal = deployment
        .principal_by_client_id(client_id)
        .await
        .map_err(|_| FederationError::UnknownClient)?
        .filter(|p| p.enabled)
        .ok_or(FederationError::UnknownClient)?;
    let matching: Vec<_> = principal
        .federated_credentials
        .iter()
        .filter(|c| c.issuer == issuer.issuer && c.subject == claims.sub)
        .collect();
    if matching.is_empty() {
        return Err(FederationError::NotMapped);
    }
    if !matching
        .iter()
        .any(|c| audience_contains(&claims.aud, &c.audiences))
    {
        return Err(FederationError::Audience);
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyshift_crypto::KeyMaterial;

    #[test]
    fn jwks_parsing_keeps_public_signing_keys_only() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": b64::encode(&[0xc3; 256]), "e": "AQAB", "alg": "RS256", "use": "sig"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64::encode(&[1; 32]), "y": b64::encode(&[2; 32])},
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "k1", "crv": "P-256K", "x": "AQ", "y": "AQ"},
            {"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"},
            "not an object"
        ]});
        let keys = parse_jwks(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["r1", "e1"]);
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"garbage").is_err());
    }

    #[test]
    fn jwks_entries_with_only_a_certificate_give_its_key() {
        let key = KeyMaterial::generate_rsa(2048).unwrap();
        let ca = crate::tls::LocalCa::generate(1_800_000_000).unwrap();
        let spki = keyshift_crypto::transfer::rsa_spki_der(&key.public_key()).unwrap();
        let chain = ca
            .issue_release_cert("attest.example", &spki, 1_800_000_000)
            .unwrap();
        let x5c = b64::encode_standard(&chain[0]);
        let ec_cert = rcgen::CertificateParams::new(vec!["ec.example".into()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let doc = serde_json::json!({"keys": [
            // As Azure Attestation publishes them: kid, kty and the certificate.
            {"kty": "RSA", "kid": "maa", "x5c": [x5c]},
            {"kid": "no-kty", "x5c": [x5c]},
            // Members win over the certificate when both are given.
            {"kty": "RSA", "kid": "both", "n": b64::encode(&[0xc3; 256]), "e": "AQAB", "x5c": [x5c]},
            {"kty": "RSA", "kid": "garbled", "x5c": ["bm90IGEgY2VydA"]},
            {"kty": "RSA", "kid": "empty", "x5c": []},
            {"kid": "ec-cert", "x5c": [b64::encode_standard(ec_cert.der())]},
        ]});
        let keys = parse_jwks(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let got: Vec<(&str, &PublicKey)> = keys.iter().map(|k| (k.kid.as_str(), &k.key)).collect();
        let members = PublicKey::Rsa {
            n: vec![0xc3; 256],
            e: vec![1, 0, 1],
        };
        assert_eq!(
            got,
            [
                ("maa", &key.public_key()),
                ("no-kty", &key.public_key()),
                ("both", &members),
            ]
        );
    }

    #[test]
    fn keys_fit_their_algorithms() {
        let rsa = Jwk {
            kid: "r".into(),
            key: PublicKey::Rsa {
                n: vec![1],
                e: vec![1],
            },
            alg: None,
            key_use: None,
        };
        assert!(key_fits(&rsa, SignatureAlgorithm::Rs256));
        assert!(key_fits(&rsa, SignatureAlgorithm::Ps384));
        assert!(!key_fits(&rsa, SignatureAlgorithm::Es256));
        let pinned = Jwk {
            alg: Some("RS512".into()),
            ..rsa.clone()
        };
        assert!(!key_fits(&pinned, SignatureAlgorithm::Rs256));
        let enc = Jwk {
            key_use: Some("enc".into()),
            ..rsa
        };
        assert!(!key_fits(&enc, SignatureAlgorithm::Rs256));
        let ec = Jwk {
            kid: "e".into(),
            key: PublicKey::Ec {
                crv: Curve::P256,
                x: vec![1],
                y: vec![2],
            },
            alg: None,
            key_use: None,
        };
        assert!(key_fits(&ec, SignatureAlgorithm::Es256));
        assert!(!key_fits(&ec, SignatureAlgorithm::Es384));
        assert!(!key_fits(&ec, SignatureAlgorithm::Rs256));
    }

    #[test]
    fn audiences_match_exactly() {
        let wanted = vec!["api://AzureADTokenExchange".to_owned()];
        assert!(audience_contains(
            &serde_json::json!("api://AzureADTokenExchange"),
            &wanted
        ));
        assert!(audience_contains(
            &serde_json::json!(["x", "api://AzureADTokenExchange"]),
            &wanted
        ));
        assert!(!audience_contains(
            &serde_json::json!("api://AzureADTokenExchange/"),
            &wanted
        ));
        assert!(!audience_contains(&serde_json::json!(null), &wanted));
        assert!(!audience_contains(&serde_json::json!([1, 2]), &wanted));
    }
}
