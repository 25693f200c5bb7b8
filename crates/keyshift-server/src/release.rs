//! Secure key release, the server's part: attestation tokens are verified against the keys of
//! trusted attestation authorities with the same JWKS machinery as federated tokens
//! (`federation.rs`: file or https URL, cached per authority), and the release-signing key's
//! certificate is issued by the local CA for the vault host the client used. The decision and
//! the signed answer are the vault's (`keyshift_vault::release`).

use crate::federation::{verify_signed_token, IssuerKeys};
use crate::tls::LocalCa;
use keyshift_crypto::PublicKey;
use keyshift_vault::records::TrustedIssuerRecord;
use keyshift_vault::release::ReleaseServices;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Certificates kept before the cache is emptied (one per vault host name in practice).
const MAX_CACHED_CERTS: usize = 256;

/// A certificate chain (DER, leaf first) cached by vault host and SubjectPublicKeyInfo.
type ChainCache = HashMap<(String, Vec<u8>), Arc<Vec<Vec<u8>>>>;

/// The server's release support, shared by every listener.
pub struct ReleaseSupport {
    keys: IssuerKeys,
    ca: LocalCa,
    /// Issued chains by (host, SubjectPublicKeyInfo): the key and CA rarely change.
    certs: Mutex<ChainCache>,
}

impl std::fmt::Debug for ReleaseSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseSupport").finish_non_exhaustive()
    }
}

impl ReleaseSupport {
    /// Support issuing from `ca`.
    pub fn new(ca: LocalCa) -> Self {
        ReleaseSupport {
            keys: IssuerKeys::default(),
            ca,
            certs: Mutex::new(HashMap::new()),
        }
    }

    /// The services for one release at time `now`.
    pub fn services(&self, now: i64) -> Services<'_> {
        Services { support: self, now }
    }
}

/// [`ReleaseServices`] at one point in time.
#[derive(Debug)]
pub struct Services<'a> {
    support: &'a ReleaseSupport,
    now: i64,
}

/// The host of `https://host[:port]`, without brackets.
fn host_of(base_url: &str) -> &str {
    let authority = base_url.strip_prefix("https://").unwrap_or(base_url);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[async_trait::async_trait]
impl ReleaseServices for Services<'_> {
    async fn verify_attestation(
        &self,
        authority: &TrustedIssuerRecord,
        token: &str,
    ) -> Result<Map<String, Value>, String> {
        verify_signed_token(&self.support.keys, authority, token, self.now)
            .await
            .map_err(|e| e.to_string().replace("external token", "attestation token"))
    }

    fn certificate_chain(
        &self,
        base_url: &str,
        public: &PublicKey,
    ) -> Result<Vec<Vec<u8>>, String> {
        let host = host_of(base_url).to_ascii_lowercase();
        let spki = keyshift_crypto::transfer::rsa_spki_der(public).map_err(|e| e.to_string())?;
        let cache_key = (host, spki);
        if let Some(chain) = self
            .support
            .certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
        {
            return Ok(chain.as_ref().clone());
        }
        let chain = self
            .support
            .ca
            .issue_release_cert(&cache_key.0, &cache_key.1, self.now)
            .map_err(|e| e.to_string())?;
        let mut certs = self.support.certs.lock().unwrap_or_else(|p| p.into_inner());
        if certs.len() >= MAX_CACHED_CERTS {
            certs.clear();
        }
        certs.insert(cache_key, Arc::new(chain.clone()));
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_base_urls() {
        assert_eq!(host_of("https://kv1.localhost:8443"), "kv1.localhost");
        assert_eq!(host_of("https://localhost"), "localhost");
        assert_eq!(host_of("https://[::1]:8443"), "::1");
        assert_eq!(host_of("https://127.0.0.1:1"), "127.0.0.1");
    }
}
