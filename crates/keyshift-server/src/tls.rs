//! The local certificate authority and the server certificate.
//!
//! Zero configuration means a CA of our own: created once in `<data-dir>/tls/`, its certificate at
//! `ca.pem` for clients to trust. The server certificate is issued from it at every start, and again
//! whenever a vault is added, naming `localhost`, `127.0.0.1`, `::1` and every vault host name
//! explicitly: Python's TLS check refuses a `*.localhost` wildcard.

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};

/// TLS set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation or parsing failed.
    #[error("certificate error: {0}")]
    Certificate(String),
}

fn cert_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Certificate(e.to_string())
}

/// A CA: certificate PEM and private key PEM.
#[derive(Clone)]
pub struct LocalCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

fn year_of(unix_seconds: i64) -> i32 {
    // Good to a day or so, which is all a validity window of whole years needs.
    1970 + i32::try_from(unix_seconds / 31_556_952).unwrap_or(0)
}

impl LocalCa {
    /// Creates a new CA valid for ten years from `now`.
    pub fn generate(now: i64) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Keyshift local CA");
        dn.push(DnType::OrganizationName, "Keyshift");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let year = year_of(now);
        params.not_before = date_time_ymd(year - 1, 1, 1);
        params.not_after = date_time_ymd(year + 10, 1, 1);
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(LocalCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses), valid for two years.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(cert_err)?;
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "localhost".into()),
        );
        params.distinguished_name = dn;
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(cert_err)?),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let year = year_of(now);
        params.not_before = date_time_ymd(year - 1, 1, 1);
        params.not_after = date_time_ymd(year + 2, 1, 1);
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e: rustls::pki_types::pem::Error| cert_err(e))?;
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca_der];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = any_supported_type(&private).map_err(cert_err)?;
        Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
    }
}

impl LocalCa {
    /// Issues the certificate of the deployment's release-signing key (given by its
    /// SubjectPublicKeyInfo DER; the private key stays in the vault) naming the vault `host`,
    /// valid for two years. Returns the chain for a JWS `x5c`: the leaf, then this CA.
    pub fn issue_release_cert(
        &self,
        host: &str,
        spki_der: &[u8],
        now: i64,
    ) -> Result<Vec<Vec<u8>>, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(cert_err)?;
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(cert_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        dn.push(DnType::OrganizationName, "Keyshift secure key release");
        params.distinguished_name = dn;
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into().map_err(cert_err)?),
        };
        params.subject_alt_names.push(san);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let year = year_of(now);
        params.not_before = date_time_ymd(year - 1, 1, 1);
        params.not_after = date_time_ymd(year + 2, 1, 1);
        let cert = params.signed_by(&public, &issuer).map_err(cert_err)?;
        let ca_der: CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
                .map_err(|e: rustls::pki_types::pem::Error| cert_err(e))?;
        Ok(vec![cert.der().to_vec(), ca_der.to_vec()])
    }
}

/// Serves the current server certificate; swapped in place when vaults are added.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// A resolver serving `cert`.
    pub fn new(cert: Arc<CertifiedKey>) -> Self {
        CertResolver {
            current: RwLock::new(cert),
        }
    }

    /// Replaces the certificate for new handshakes.
    pub fn replace(&self, cert: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = cert;
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The rustls server configuration: TLS 1.2 and 1.3, h2 and http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(cert_err)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_chain_naming_every_host() {
        let ca = LocalCa::generate(1_790_000_000).unwrap();
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".into(),
            "::1".into(),
            "kv1.localhost".into(),
        ];
        let ck = ca.issue_server_cert(&names, 1_790_000_000).unwrap();
        assert_eq!(ck.cert.len(), 2);
    }
}
