//! The HTTPS transport: rustls with the aws-lc-rs provider, trusting the system's roots, extra
//! roots from PEM, or both, as the caller says.

use crate::error::ClientError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;

/// Which certificate authorities to trust.
#[derive(Clone, Default)]
pub(crate) struct TrustRoots {
    /// Extra roots, PEM (one or more `CERTIFICATE` blocks).
    pub extra_pem: Option<String>,
    /// Whether the system's trust store is used too.
    pub no_system_roots: bool,
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoots")
            .field("extra_pem", &self.extra_pem.as_ref().map(|_| "<pem>"))
            .field("system_roots", &!self.no_system_roots)
            .finish()
    }
}

/// Timeouts of the transport.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl TrustRoots {
    fn root_store(&self) -> Result<rustls::RootCertStore, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &self.extra_pem {
            let mut count = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    ClientError::invalid_input(format!("the CA PEM could not be read: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    ClientError::invalid_input(format!("a CA certificate was refused: {e}"))
                })?;
                count += 1;
            }
            if count == 0 {
                return Err(ClientError::invalid_input(
                    "the CA PEM holds no CERTIFICATE block",
                ));
            }
        }
        if !self.no_system_roots {
            roots.add_parsable_certificates(system_roots().iter().cloned());
        }
        if roots.is_empty() {
            return Err(ClientError::invalid_input(
                "no trusted root certificates: the system store is empty or disabled and no CA PEM was given",
            ));
        }
        Ok(roots)
    }
}

/// The system's trust store, read once per process: it is a directory of a few hundred files,
/// and a process such as `keyshift migrate apply` builds several clients (one per credential and
/// one per vault). Unreadable entries are skipped, as browsers and curl do. A store changed while
/// the process runs is seen by the next process, as with curl.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// An HTTPS-only reqwest client.
pub(crate) fn http_client(
    trust: &TrustRoots,
    timeouts: Timeouts,
) -> Result<reqwest::Client, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::invalid_input(format!("TLS configuration: {e}")))?
        .with_root_certificates(trust.root_store()?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .https_only(true)
        // Redirects would carry the bearer token to wherever the server points; the keys API
        // never redirects.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .user_agent(concat!("keyshift-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            ClientError::invalid_input("the HTTP client could not be built").with_source(e)
        })
}
