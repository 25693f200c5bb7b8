//! The administrator credentials file (`<data-dir>/admin.json`) that `keyshift serve` writes on
//! first start, and the token request made with it.

use crate::client::{split_url, Connector};
use anyhow::{bail, Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The fields of `admin.json` the benchmark uses.
#[derive(Clone, Deserialize)]
pub struct AdminFile {
    /// Client id of the administrator.
    pub client_id: String,
    /// Client secret of the administrator.
    pub client_secret: String,
    /// URL of the default vault, `https://host:port`.
    pub vault_url: String,
    /// Path of the CA certificate to trust.
    pub ca_cert: PathBuf,
    /// The token endpoint.
    pub token_url: String,
}

impl std::fmt::Debug for AdminFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminFile")
            .field("client_id", &self.client_id)
            .field("vault_url", &self.vault_url)
            .finish_non_exhaustive()
    }
}

impl AdminFile {
    /// Reads `path`. A relative `ca_cert` that does not exist from here is looked up beside
    /// `admin.json`'s data directory instead.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut admin: AdminFile = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a Keyshift admin.json", path.display()))?;
        if admin.ca_cert.is_relative() && !admin.ca_cert.exists() {
            if let Some(dir) = path.parent() {
                let beside = dir.join("tls").join("ca.pem");
                if beside.exists() {
                    admin.ca_cert = beside;
                }
            }
        }
        Ok(admin)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.ca_cert)
            .with_context(|| format!("cannot read the CA certificate {}", self.ca_cert.display()))
    }

    /// Gets an access token: the client-credentials grant, a form POST to `token_url`.
    pub async fn fetch_token(&self, ca_pem: &[u8]) -> Result<String> {
        let (origin, path) = split_url(&self.token_url)?;
        let connector = Connector::new(&origin, ca_pem).await?;
        let mut connection = connector.connect().await?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("scope", "https://vault.azure.net/.default"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&");
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, connector.authority().clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))?;
        let (status, body) = connection.send(request).await?;
        if status != StatusCode::OK {
            bail!(
                "the token endpoint answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .context("the token endpoint's answer has no access_token")?;
        Ok(token.access_token)
    }
}
