//! INSECURE, for tests and local trials only: an attestation authority that attests nothing. It
//! signs whatever claims it is asked to, with its own RSA key, and publishes that key the way
//! Microsoft Azure Attestation does (`/.well-known/openid-configuration`, a JWKS at `/certs`),
//! over HTTPS with a CA of its own, on an ephemeral port. Modelled on the mock Azure's SDK tests
//! use (azure-sdk-tools `keyvault-mock-attestation`): `GET /generate-test-token` answers
//! `{"token": ...}` with `"sdk-test": true` and an enclave key in `x-ms-runtime.keys`.
//!
//! Anyone who can reach it gets a token that satisfies any policy naming it: never trust it in a
//! deployment that holds real keys.

use crate::tls::{self, CertResolver, LocalCa, TlsError};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyshift_api::b64;
use keyshift_crypto::{KeyMaterial, PublicKey, SignatureAlgorithm};
use keyshift_vault::Clock;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Lifetime of minted tokens (MAA's are 8 hours).
const TOKEN_SECONDS: i64 = 8 * 3600;

/// An enclave's RSA key: its public half goes into tokens (`x-ms-runtime.keys`), its private
/// half unwraps what a release returns.
pub struct EnclaveKey {
    /// The key's `kid`.
    pub kid: String,
    /// The key pair.
    pub key: KeyMaterial,
}

impl std::fmt::Debug for EnclaveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EnclaveKey {
    /// A new RSA key of `bits` (2048, 3072 or 4096).
    pub fn generate(kid: &str, bits: u32) -> Result<Self, keyshift_crypto::CryptoError> {
        Ok(EnclaveKey {
            kid: kid.to_owned(),
            key: KeyMaterial::generate_rsa(bits)?,
        })
    }

    /// The public JWK as MAA puts it in `x-ms-runtime.keys`.
    pub fn jwk(&self) -> Value {
        match self.key.public_key() {
            PublicKey::Rsa { n, e } => json!({
                "kty": "RSA", "kid": self.kid, "use": "enc", "key_ops": ["encrypt"],
                "n": b64::encode(&n), "e": b64::encode(&e)
            }),
            _ => Value::Null,
        }
    }
}

/// The state of a running test authority.
struct Inner {
    issuer: String,
    kid: String,
    signing: KeyMaterial,
    /// The signing key's certificate, issued by the authority's CA (standard base64 DER).
    x5c: String,
    enclave: EnclaveKey,
    clock: Arc<dyn Clock>,
}

/// A running insecure test attestation authority. Dropping it stops it.
pub struct TestAuthority {
    inner: Arc<Inner>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its CA certificate (PEM): trust it for the JWKS URL.
    pub ca_pem: String,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TestAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAuthority")
            .field("issuer", &self.inner.issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for TestAuthority {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a test authority cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TestAuthorityError {
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Crypto(#[from] keyshift_crypto::CryptoError),
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Could not bind.
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
}

impl TestAuthority {
    /// Starts an authority on `listen` (port 0 for an ephemeral one) with a new signing key and
    /// a new enclave key. The issuer is `https://<listen ip>:<port>`.
    pub async fn start(
        listen: SocketAddr,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TestAuthorityError> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let host = match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let now = clock.now();
        let ca = LocalCa::generate(now)?;
        let cert = ca.issue_server_cert(&[addr.ip().to_string(), "localhost".into()], now)?;
        let tls_config = tls::server_config(Arc::new(CertResolver::new(cert)))?;
        let signing = tokio::task::spawn_blocking(|| KeyMaterial::generate_rsa(2048))
            .await
            .map_err(|_| keyshift_crypto::CryptoError::Internal)??;
        let enclave =
            tokio::task::spawn_blocking(|| EnclaveKey::generate("fake-release-key", 2048))
                .await
                .map_err(|_| keyshift_crypto::CryptoError::Internal)??;
        let kid = match signing.public_key() {
            PublicKey::Rsa { n, .. } => b64::encode(&keyshift_crypto::digest::sha256(&n)[..16]),
            _ => "test-authority".into(),
        };
        let spki = keyshift_crypto::transfer::rsa_spki_der(&signing.public_key())?;
        let chain = ca.issue_release_cert("test-attestation-authority", &spki, now)?;
        let x5c = chain
            .first()
            .map(|c| b64::encode_standard(c))
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            issuer: format!("https://{host}:{}", addr.port()),
            kid,
            signing,
            x5c,
            enclave,
            clock,
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(configuration))
            .route("/certs", get(jwks))
            .route("/generate-test-token", get(generate))
            .with_state(inner.clone());
        let task = tokio::spawn(crate::listener::serve(listener, tls_config, router));
        tracing::warn!(issuer = %inner.issuer, "INSECURE test attestation authority running: it signs any claims");
        Ok(TestAuthority {
            inner,
            addr,
            ca_pem: ca.cert_pem,
            task,
        })
    }

    /// The issuer URL (no trailing `/`; tokens carry `iss` with one, as MAA's do).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/certs", self.inner.issuer)
    }

    /// The JWKS document of the token signing key.
    pub fn jwks(&self) -> Value {
        self.inner.jwks()
    }

    /// The `kid` of the token signing key.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The authority's own enclave key (the one `/generate-test-token` puts in tokens).
    pub fn enclave(&self) -> &EnclaveKey {
        &self.inner.enclave
    }

    /// Claims like MAA's for an enclave: `iss`, `iat`, `nbf`, `exp` (8 h), `sdk-test: true`, a
    /// CVM-shaped `x-ms-isolation-tee` and `x-ms-runtime.keys` holding `enclave`'s public key.
    pub fn claims_for(&self, enclave: &EnclaveKey) -> Value {
        self.inner.claims(enclave)
    }

    /// Signs `claims` with RS256 and the authority's key (header `alg`, `typ`, `kid`, `jku`).
    pub fn mint(&self, claims: &Value) -> String {
        self.inner.mint(claims)
    }

    /// Signs `claims` under any `header` with the authority's RS256 key (for negative tests).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.inner.sign(header, claims)
    }
}

impl Inner {
    /// As Azure Attestation publishes its signing keys: `kid`, `kty` and the certificate in
    /// `x5c`, without the key's own members.
    fn jwks(&self) -> Value {
        json!({"keys": [{"kty": "RSA", "kid": self.kid, "x5c": [self.x5c]}]})
    }

    fn claims(&self, enclave: &EnclaveKey) -> Value {
        let now = self.clock.now();
        json!({
            "iss": format!("{}/", self.issuer),
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_SECONDS,
            "jti": b64::encode(&keyshift_crypto::random_bytes(16).unwrap_or_default()),
            "sdk-test": true,
            "x-ms-ver": "1.0",
            "x-ms-attestation-type": "azurevm",
            "x-ms-inittime": {},
            "x-ms-isolation-tee": {
                "x-ms-attestation-type": "sevsnpvm",
                "x-ms-compliance-status": "azure-compliant-cvm",
            },
            "x-ms-runtime": {"keys": [enclave.jwk()]},
        })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let part = |v: &Value| b64::encode(&serde_json::to_vec(v).unwrap_or_default());
        let input = format!("{}.{}", part(header), part(claims));
        let digest = keyshift_crypto::digest::sha256(input.as_bytes());
        let signature = self
            .signing
            .sign(SignatureAlgorithm::Rs256, &digest)
            .unwrap_or_default();
        format!("{input}.{}", b64::encode(&signature))
    }

    fn mint(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid,
            "jku": format!("{}/certs", self.issuer)});
        self.sign(&header, claims)
    }
}

async fn configuration(State(inner): State<Arc<Inner>>) -> Response {
    crate::app::ok_json(&json!({
        "issuer": inner.issuer,
        "jwks_uri": format!("{}/certs", inner.issuer),
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["iss", "exp", "iat", "nbf", "x-ms-runtime"],
    }))
}

async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    crate::app::ok_json(&inner.jwks())
}

async fn generate(State(inner): State<Arc<Inner>>) -> Response {
    let token = inner.mint(&inner.claims(&inner.enclave));
    crate::app::ok_json(&json!({ "token": token })).into_response()
}
