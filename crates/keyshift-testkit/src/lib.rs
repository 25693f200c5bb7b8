//! A real Keyshift for tests: `keyshift serve` started in-process on an ephemeral port, with its
//! own data directory (a real SQLite file, a real root key file, a real local CA and TLS
//! listener), and an HTTPS client that trusts that CA and holds an administrator token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: failing loudly is the point

use keyshift_cli::config::Settings;
use keyshift_cli::datadir::AdminCredentials;
use keyshift_cli::serve::Started;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod postgres;
pub mod softhsm;

/// A running test server.
#[derive(Debug)]
pub struct TestServer {
    /// The started server and data directory.
    pub started: Started,
    /// Administrator credentials.
    pub admin: AdminCredentials,
    /// HTTPS client trusting the local CA, resolving `*.localhost` to the server.
    pub http: reqwest::Client,
    /// The data directory (kept alive by `_dir` when the kit created it).
    pub data_dir: PathBuf,
    /// The label of the HSM token attached, if any.
    pub hsm_token: Option<String>,
    token: String,
    _dir: Option<tempfile::TempDir>,
}

/// Settings for a test server on an ephemeral port, with its records in `<data_dir>/keyshift.db`
/// (set `store` for PostgreSQL).
pub fn settings(data_dir: &Path) -> Settings {
    Settings {
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        vault_domain: "localhost".into(),
        token_audience: "https://vault.azure.net".into(),
        token_lifetime_seconds: 3600,
        extra_hosts: vec![],
        root_key_file: data_dir.join("root.key"),
        root_shares: vec![],
        root_share_keys: vec![],
        default_retention_days: 90,
        default_vault_name: "default".into(),
        maintenance_interval_seconds: 3600,
        log: "warn".into(),
        store: Default::default(),
        hsm: None,
        metrics_listen: None,
        backup_dir: Some(data_dir.join("backups")),
    }
}

/// A rustls client configuration trusting `ca_pem` only.
pub fn client_tls(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// An HTTPS client trusting `ca_pem`, with `hosts` resolved to `addr`.
pub fn https_client(ca_pem: &str, addr: SocketAddr, hosts: &[&str]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(ca_pem))
        .timeout(Duration::from_secs(60))
        .resolve("localhost", addr);
    for h in hosts {
        builder = builder.resolve(h, addr);
    }
    builder.build().unwrap()
}

impl TestServer {
    /// Starts a server in a new temporary data directory.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let mut s = Self::start_in(&path).await;
        s._dir = Some(dir);
        s
    }

    /// Starts a server on `data_dir` (created if needed). The administrator credentials are read
    /// from `<data_dir>/admin.json`, so a restart on the same directory works.
    pub async fn start_in(data_dir: &Path) -> Self {
        Self::start_with(settings(data_dir)).await
    }

    /// Starts a server whose `-HSM` keys (every key of a managed HSM) live in a fresh SoftHSM2
    /// token; `None` (the test is skipped) without SoftHSM2, see [`softhsm`].
    pub async fn start_with_hsm() -> Option<Self> {
        let hsm = softhsm::softhsm()?.token();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings(&dir.path().join("data"));
        settings.hsm = Some(hsm);
        let mut s = Self::start_with(settings).await;
        s._dir = Some(dir);
        Some(s)
    }

    /// Starts a server with explicit settings.
    pub async fn start_with(settings: Settings) -> Self {
        let started = keyshift_cli::serve::start(&settings)
            .await
            .expect("server starts");
        let admin: AdminCredentials = match &started.admin {
            Some(a) => a.clone(),
            None => serde_json::from_slice(
                &std::fs::read(settings.data_dir.join("admin.json")).unwrap(),
            )
            .unwrap(),
        };
        let http = https_client(
            &started.data_dir.ca.cert_pem,
            started.server.local_addr,
            &[],
        );
        let mut server = TestServer {
            started,
            admin,
            http,
            data_dir: settings.data_dir.clone(),
            hsm_token: settings.hsm.as_ref().map(|h| h.token_label.clone()),
            token: String::new(),
            _dir: None,
        };
        server.token = server.fetch_token().await;
        server
    }

    /// The main listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.started.server.local_addr
    }

    /// `https://localhost:<port>`: the default vault.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr().port())
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.started.data_dir.ca.cert_pem
    }

    /// The deployment behind the server.
    pub fn deployment(&self) -> &Arc<keyshift_vault::Deployment> {
        &self.started.data_dir.deployment
    }

    /// An administrator access token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Gets a token with the administrator's client secret.
    pub async fn fetch_token(&self) -> String {
        self.token_for(&self.admin.client_id, &self.admin.client_secret)
            .await
    }

    /// Gets a token for any client.
    pub async fn token_for(&self, client_id: &str, client_secret: &str) -> String {
        let response = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.url(),
                self.admin.tenant_id
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("scope", "https://vault.azure.net/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "token endpoint");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Sends a request to the default vault with the administrator token; `path` includes the query.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_at(&self.url(), method, path, body).await
    }

    /// Sends a request to `base` with the administrator token.
    pub async fn call_at(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.token, base, method, path, body).await
    }

    /// Sends a request to `base` with `token`.
    pub async fn call_as(
        &self,
        token: &str,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }
}

impl TestServer {
    /// Creates vault `name` of `kind` and waits until it is served by host name
    /// (`https://{name}.localhost:<port>`, which the machine must resolve); returns that URL.
    pub async fn add_vault(&self, name: &str, kind: keyshift_vault::VaultKind) -> String {
        self.deployment()
            .create_vault(
                &keyshift_vault::RequestContext::local(),
                keyshift_vault::VaultSpec {
                    name: name.into(),
                    kind,
                    retention_days: 7,
                    purge_protection: kind == keyshift_vault::VaultKind::ManagedHsm,
                    port: None,
                    new_security_domain: true,
                    default: false,
                },
            )
            .await
            .unwrap();
        let url = format!("https://{name}.localhost:{}", self.addr().port());
        // The server reissues its certificate with the new host name within its refresh interval.
        for _ in 0..100 {
            if self.http.get(format!("{url}/health")).send().await.is_ok() {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name}.localhost was not served within 10 s");
    }
}

impl TestServer {
    /// Assigns `roles` over `/keys` of vault `vault` to the administrator (a managed HSM's
    /// Administrator role manages roles, not keys, as in Azure).
    pub async fn grant_admin(&self, vault: &str, roles: &[&str]) {
        let admin = self
            .deployment()
            .principal_by_client_id(&self.admin.client_id)
            .await
            .unwrap()
            .unwrap();
        let vault = self.deployment().vault(vault).unwrap();
        for role in roles {
            self.deployment()
                .assign_role(
                    &keyshift_vault::RequestContext::local(),
                    &vault,
                    "/keys",
                    role,
                    &admin.id,
                    None,
                )
                .await
                .unwrap();
        }
    }
}

pub use keyshift_server::test_authority::{EnclaveKey, TestAuthority};

impl TestServer {
    /// Starts an (insecure) test attestation authority over HTTPS on an ephemeral port.
    pub async fn start_attestation_authority(&self) -> TestAuthority {
        TestAuthority::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(keyshift_vault::SystemClock),
        )
        .await
        .expect("test attestation authority starts")
    }

    /// Trusts `authority` for secure key release: its JWKS by URL, with its CA.
    pub async fn trust_attestation(&self, authority: &TestAuthority) {
        let ca_file = self
            .data_dir
            .join(format!("attestation-ca-{}.pem", authority.addr.port()));
        std::fs::write(&ca_file, authority.ca_pem.as_bytes()).unwrap();
        // Through the admin API, as an operator's script would.
        let r = self
            .http
            .put(format!(
                "{}/{}/keyshift/attestation/authorities",
                self.url(),
                self.admin.tenant_id
            ))
            .bearer_auth(self.token())
            .json(&serde_json::json!({
                "issuer": authority.issuer(),
                "jwksUrl": authority.jwks_url(),
                "caFile": ca_file.to_str().unwrap(),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{:?}", r.text().await);
    }
}

/// Appends `api-version=2025-07-01` to a path.
pub fn v(path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}api-version=2025-07-01")
}

/// A custodian: a self-signed RSA-2048 certificate and its PKCS#8 key, written to `dir` as
/// `{name}.pem` and `{name}.key`.
pub fn custodian(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("{name}.example")])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// The DER of the (first) certificate in the PEM file `pem_path`, as [`custodian`] writes it.
pub fn certificate_der(pem_path: &Path) -> Vec<u8> {
    keyshift_crypto::x509::pem_certificates(&std::fs::read(pem_path).unwrap())
        .into_iter()
        .next()
        .unwrap()
}

/// The private key in the PKCS#8 PEM file `path`, as [`custodian`] writes it.
pub fn private_key(path: &Path) -> keyshift_crypto::KeyMaterial {
    let pem = std::fs::read_to_string(path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    keyshift_crypto::KeyMaterial::from_pkcs8_der(&keyshift_api::b64::decode(&body).unwrap())
        .unwrap()
}

/// Runs the `keyshift` command with `args` in this process (on a thread of its own, with its own
/// runtime); whether it succeeded.
pub fn keyshift(args: &[&str]) -> bool {
    let args: Vec<String> = std::iter::once("keyshift")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    std::thread::spawn(move || keyshift_cli::main_with_args(args))
        .join()
        .unwrap()
        == std::process::ExitCode::SUCCESS
}
