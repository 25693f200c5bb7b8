//! Access tokens: the [`TokenCredential`] trait, a fixed token for tests ([`StaticToken`]), and the
//! OAuth2 client-credentials flow ([`ClientSecretCredential`]) against Keyshift's token issuer or
//! Entra ID. Secrets and tokens are zeroized on drop and never appear in `Debug` output, errors or
//! logs.

use crate::challenge::BearerChallenge;
use crate::error::{ClientError, ErrorKind};
use crate::kid::VaultUrl;
use crate::tls::{self, Timeouts, TrustRoots};
use reqwest::Url;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Tokens are refreshed this long before they expire (or at half their lifetime, if sooner).
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Longest token lifetime believed: a server's `expires_in` beyond it is cut to it.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A string that is zeroized on drop and read from JSON without a copy left behind in `Debug`.
#[derive(Clone)]
struct SecretString(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| SecretString(Zeroizing::new(s)))
    }
}

/// A bearer token and when it stops being usable.
#[derive(Clone)]
pub struct AccessToken {
    token: Zeroizing<String>,
    expires_at: Instant,
}

impl AccessToken {
    /// A token valid for `lifetime` from now.
    pub fn new(token: impl Into<String>, lifetime: Duration) -> Self {
        AccessToken {
            token: Zeroizing::new(token.into()),
            expires_at: Instant::now() + lifetime.min(MAX_LIFETIME),
        }
    }

    /// The token itself. Send it only to the vault it was issued for.
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// When the token expires (monotonic clock).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Something that gets bearer tokens for a scope.
#[async_trait::async_trait]
pub trait TokenCredential: Send + Sync + fmt::Debug {
    /// A token for `scope` (e.g. `https://vault.azure.net/.default`), cached or fresh.
    async fn token(&self, scope: &str) -> Result<AccessToken, ClientError>;

    /// Whether the credential must see a bearer challenge before it can get a token (it learns
    /// its token endpoint from one). The client then sends a bodiless, unauthenticated request
    /// first, as the Azure SDKs do.
    fn needs_challenge(&self) -> bool {
        false
    }

    /// Called with the challenge of a 401 from `vault`: the token in use was refused (drop it), or
    /// this is the first contact. A credential may learn its token endpoint here.
    async fn on_challenge(
        &self,
        vault: &VaultUrl,
        challenge: &BearerChallenge,
    ) -> Result<(), ClientError> {
        let _ = (vault, challenge);
        Ok(())
    }
}

/// A fixed token, for tests and for tokens obtained elsewhere.
#[derive(Clone)]
pub struct StaticToken {
    token: Zeroizing<String>,
}

impl StaticToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken {
            token: Zeroizing::new(token.into()),
        }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn token(&self, _scope: &str) -> Result<AccessToken, ClientError> {
        Ok(AccessToken::new(
            self.token.as_str(),
            Duration::from_secs(3600),
        ))
    }
}

/// Where the token endpoint comes from.
#[derive(Debug, Clone)]
enum Endpoint {
    /// Configured: challenges never move it.
    Fixed(Url),
    /// Learned from challenges, from an authority whose host is allowed.
    Challenge { allowed_hosts: Vec<String> },
}

/// A cached token and when to stop using it.
struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

struct Inner {
    client_id: String,
    secret: Zeroizing<String>,
    endpoint: Endpoint,
    learned: StdMutex<Option<Url>>,
    http: reqwest::Client,
    /// Held across a refresh, so concurrent callers wait for one request (single flight).
    cache: tokio::sync::Mutex<HashMap<String, Cached>>,
}

/// OAuth2 client credentials (`client_id` + `client_secret`): the token endpoint is configured
/// ([`ClientSecretCredential::with_token_url`], [`ClientSecretCredential::from_admin_json`]) or learned from
/// the vault's bearer challenge ([`ClientSecretCredential::for_challenge`]).
///
/// Tokens are cached per scope until five minutes before `expires_in` (half the lifetime for
/// tokens shorter than ten minutes); concurrent callers share one refresh. Cheap to clone.
#[derive(Clone)]
pub struct ClientSecretCredential {
    inner: Arc<Inner>,
}

impl fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token_url = self.token_url().map(|u| u.to_string());
        f.debug_struct("ClientSecretCredential")
            .field("client_id", &self.inner.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_url", &token_url)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClientSecretCredential`].
pub struct ClientSecretCredentialBuilder {
    client_id: String,
    secret: Zeroizing<String>,
    token_url: Option<String>,
    allowed_hosts: Vec<String>,
    trust: TrustRoots,
    timeouts: Timeouts,
}

impl fmt::Debug for ClientSecretCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredentialBuilder")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_url", &self.token_url)
            .field("allowed_authority_hosts", &self.allowed_hosts)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ClientSecretCredential {
    /// A credential that posts to `token_url` (e.g.
    /// `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`). Challenges never change it.
    pub fn with_token_url(
        token_url: &str,
        client_id: &str,
        client_secret: &str,
    ) -> ClientSecretCredentialBuilder {
        let mut b = Self::for_challenge(client_id, client_secret);
        b.token_url = Some(token_url.to_owned());
        b
    }

    /// A credential that learns its token endpoint from the vault's 401 challenge:
    /// `authorization="<authority>/<tenant>"` gives `<authority>/<tenant>/oauth2/v2.0/token`.
    ///
    /// The secret goes only to an `https` authority whose host is the vault's own host or is
    /// listed with [`ClientSecretCredentialBuilder::allow_authority_host`] (for Azure:
    /// `login.microsoftonline.com`). A server cannot name an arbitrary host and collect the secret.
    pub fn for_challenge(client_id: &str, client_secret: &str) -> ClientSecretCredentialBuilder {
        ClientSecretCredentialBuilder {
            client_id: client_id.to_owned(),
            secret: Zeroizing::new(client_secret.to_owned()),
            token_url: None,
            allowed_hosts: Vec::new(),
            trust: TrustRoots::default(),
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                request: Duration::from_secs(30),
            },
        }
    }

    /// A credential from Keyshift's `admin.json` (`tenant_id`, `client_id`, `client_secret`,
    /// `vault_url`, `ca_cert`, `token_url`): its token endpoint, trusting its CA besides the system
    /// roots. See [`AdminJson`] for the vault URL and CA to give the [`crate::KeyClient`].
    pub fn from_admin_json(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let admin = AdminJson::read(path)?;
        admin.credential()
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The token endpoint in use: configured, or learned from a challenge.
    pub fn token_url(&self) -> Option<Url> {
        match &self.inner.endpoint {
            Endpoint::Fixed(url) => Some(url.clone()),
            Endpoint::Challenge { .. } => self.learned(),
        }
    }

    fn learned(&self) -> Option<Url> {
        self.inner
            .learned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn fetch(&self, token_url: &Url, scope: &str) -> Result<AccessToken, ClientError> {
        tracing::debug!(client_id = %self.inner.client_id, host = token_url.host_str(), scope, "requesting a token");
        let response = self
            .inner
            .http
            .post(token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.inner.client_id.as_str()),
                ("client_secret", self.inner.secret.as_str()),
                ("scope", scope),
            ])
            .send()
            .await
            .map_err(|e| ClientError::transport("token request", e))?;
        let status = response.status().as_u16();
        let body = Zeroizing::new(crate::client::read_limited(response, MAX_TOKEN_RESPONSE).await?);
        if status != 200 {
            return Err(ClientError::from_token_response(status, &body));
        }
        parse_token_response(&body)
    }
}

/// `{"access_token", "expires_in", "token_type"}`; `expires_in` may be a number or a numeric string
/// (Entra v1 sends strings).
fn parse_token_response(body: &[u8]) -> Result<AccessToken, ClientError> {
    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: Option<SecretString>,
        expires_in: Option<serde_json::Value>,
        token_type: Option<String>,
    }
    let bad = |why: &str| {
        ClientError::invalid_response(format!("the token endpoint's answer is unusable: {why}"))
            .with_status(200)
    };
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    if parsed
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(bad("token_type is not Bearer"));
    }
    let token = parsed
        .access_token
        .map(|t| t.0)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| bad("no usable access_token"))?;
    let seconds = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad("no expires_in"))?;
    Ok(AccessToken::new(
        token.as_str(),
        Duration::from_secs(seconds),
    ))
}

/// When to stop using a token issued now with `lifetime`.
fn refresh_at(token: &AccessToken, issued: Instant) -> Instant {
    let lifetime = token.expires_at.saturating_duration_since(issued);
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    token.expires_at.checked_sub(margin).unwrap_or(issued)
}

#[async_trait::async_trait]
impl TokenCredential for ClientSecretCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, ClientError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some(c) = cache.get(scope) {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let token_url = self.token_url().ok_or_else(|| {
            ClientError::new(
                ErrorKind::Unauthorized,
                "the credential has no token endpoint yet: no bearer challenge has been seen",
            )
        })?;
        let issued = Instant::now();
        let token = self.fetch(&token_url, scope).await?;
        cache.insert(
            scope.to_owned(),
            Cached {
                refresh_at: refresh_at(&token, issued),
                token: token.clone(),
            },
        );
        Ok(token)
    }

    fn needs_challenge(&self) -> bool {
        matches!(self.inner.endpoint, Endpoint::Challenge { .. }) && self.learned().is_none()
    }

    async fn on_challenge(
        &self,
        vault: &VaultUrl,
        challenge: &BearerChallenge,
    ) -> Result<(), ClientError> {
        if let Endpoint::Challenge { allowed_hosts } = &self.inner.endpoint {
            let authority = challenge.authorization.as_deref().ok_or_else(|| {
                ClientError::new(
                    ErrorKind::Unauthorized,
                    "the bearer challenge names no authorization server",
                )
                .with_status(401)
            })?;
            let url = token_url_from_authority(authority, vault, allowed_hosts)?;
            *self
                .inner
                .learned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(url);
        }
        // The token that drew the challenge (if any) was refused: fetch a new one next time.
        self.inner.cache.lock().await.clear();
        Ok(())
    }
}

/// `<authority>/<tenant>/oauth2/v2.0/token`, if the authority may receive the secret.
fn token_url_from_authority(
    authority: &str,
    vault: &VaultUrl,
    allowed_hosts: &[String],
) -> Result<Url, ClientError> {
    let refuse = |why: String| ClientError::new(ErrorKind::Unauthorized, why).with_status(401);
    let url = Url::parse(authority).map_err(|_| {
        refuse(format!(
            "the challenge authority {authority:?} is not a URL"
        ))
    })?;
    let host = crate::challenge::https_host(authority)
        .filter(|_| url.query().is_none() && url.fragment().is_none())
        .ok_or_else(|| {
            refuse(format!(
                "the challenge authority {authority:?} is not a plain https URL"
            ))
        })?;
    if host != vault.host() && !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        return Err(refuse(format!(
            "the challenge authority host {host} is neither the vault's host nor an allowed \
             authority host; the client secret is not sent there"
        )));
    }
    let tenant = url.path().trim_matches('/');
    let tenant_ok = !tenant.is_empty()
        && tenant.len() <= 128
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && tenant != "."
        && tenant != "..";
    if !tenant_ok {
        return Err(refuse(format!(
            "the challenge authority {authority:?} does not end in one tenant segment"
        )));
    }
    let origin = url.origin().ascii_serialization();
    Url::parse(&format!("{origin}/{tenant}/oauth2/v2.0/token"))
        .map_err(|_| refuse("the token endpoint URL could not be built".into()))
}

impl ClientSecretCredentialBuilder {
    /// Extra trusted roots (PEM) for the token endpoint, in addition to the system roots unless
    /// [`Self::system_roots`] is `false`.
    pub fn ca_pem(mut self, pem: Option<&str>) -> Self {
        self.trust.extra_pem = pem.map(str::to_owned);
        self
    }

    /// Whether the system's roots are trusted (default `true`).
    pub fn system_roots(mut self, on: bool) -> Self {
        self.trust.no_system_roots = !on;
        self
    }

    /// Allows challenges to name an authority on `host` (e.g. `login.microsoftonline.com`).
    /// Without any, only the vault's own host is accepted.
    pub fn allow_authority_host(mut self, host: &str) -> Self {
        self.allowed_hosts.push(host.to_ascii_lowercase());
        self
    }

    /// Timeout of a token request (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.request = timeout;
        self
    }

    /// Builds the credential.
    pub fn build(self) -> Result<ClientSecretCredential, ClientError> {
        let endpoint = match &self.token_url {
            Some(text) => {
                let url = Url::parse(text).map_err(|_| {
                    ClientError::invalid_input(format!("invalid token URL {text:?}"))
                })?;
                if crate::challenge::https_host(text).is_none() {
                    return Err(ClientError::invalid_input(format!(
                        "the token URL {text:?} must be https without user info"
                    )));
                }
                Endpoint::Fixed(url)
            }
            None => Endpoint::Challenge {
                allowed_hosts: self.allowed_hosts.clone(),
            },
        };
        if self.client_id.is_empty() || self.secret.is_empty() {
            return Err(ClientError::invalid_input(
                "a client id and a client secret are required",
            ));
        }
        let http = tls::http_client(&self.trust, self.timeouts)?;
        Ok(ClientSecretCredential {
            inner: Arc::new(Inner {
                client_id: self.client_id.clone(),
                secret: self.secret.clone(),
                endpoint,
                learned: StdMutex::new(None),
                http,
                cache: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Keyshift's `admin.json`, written at first start: the administrator's credentials and where
/// to reach the deployment.
#[derive(Clone, Deserialize)]
pub struct AdminJson {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    client_secret: SecretString,
    /// The default vault's URL.
    pub vault_url: String,
    /// Path of the deployment's CA certificate (PEM); relative paths are taken from the file's
    /// directory.
    pub ca_cert: PathBuf,
    /// The token endpoint.
    pub token_url: String,
}

impl fmt::Debug for AdminJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminJson")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("vault_url", &self.vault_url)
            .field("ca_cert", &self.ca_cert)
            .field("token_url", &self.token_url)
            .finish()
    }
}

impl AdminJson {
    /// Reads and parses the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
            ClientError::invalid_input(format!("{} could not be read", path.display()))
                .with_source(e)
        })?);
        let mut admin: AdminJson = serde_json::from_slice(&bytes).map_err(|e| {
            // serde_json's message names the field, never its value.
            ClientError::invalid_input(format!("{} is not a valid admin.json: {e}", path.display()))
        })?;
        if admin.ca_cert.is_relative() {
            if let Some(dir) = path.parent() {
                admin.ca_cert = dir.join(&admin.ca_cert);
            }
        }
        Ok(admin)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Result<String, ClientError> {
        std::fs::read_to_string(&self.ca_cert).map_err(|e| {
            ClientError::invalid_input(format!("{} could not be read", self.ca_cert.display()))
                .with_source(e)
        })
    }

    /// The default vault's URL, parsed.
    pub fn vault(&self) -> Result<VaultUrl, ClientError> {
        VaultUrl::parse(&self.vault_url)
    }

    /// The administrator's credential, trusting the deployment CA besides the system roots.
    pub fn credential(&self) -> Result<ClientSecretCredential, ClientError> {
        let pem = self.ca_pem()?;
        ClientSecretCredential::with_token_url(
            &self.token_url,
            &self.client_id,
            &self.client_secret.0,
        )
        .ca_pem(Some(&pem))
        .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_secrets_and_tokens() {
        let secret = "s3cr3t-client-secret-value";
        let token = "eyJhbGciOiJFUzI1NiJ9.secret-token";
        let outputs = [
            format!("{:?}", AccessToken::new(token, Duration::from_secs(60))),
            format!("{:?}", StaticToken::new(token)),
            format!(
                "{:?}",
                ClientSecretCredential::with_token_url(
                    "https://login.example/t/oauth2/v2.0/token",
                    "app",
                    secret
                )
            ),
            format!(
                "{:?}",
                ClientSecretCredential::with_token_url(
                    "https://login.example/t/oauth2/v2.0/token",
                    "app",
                    secret
                )
                .system_roots(false)
                .ca_pem(Some("-----BEGIN CERTIFICATE-----"))
            ),
            format!(
                "{:?}",
                serde_json::from_value::<AdminJson>(serde_json::json!({
                    "tenant_id": "t", "client_id": "app", "client_secret": secret,
                    "vault_url": "https://localhost:8443", "ca_cert": "/x/ca.pem",
                    "token_url": "https://localhost:8443/t/oauth2/v2.0/token"
                }))
                .unwrap()
            ),
        ];
        for out in &outputs {
            assert!(!out.contains(secret), "{out}");
            assert!(!out.contains("secret-token"), "{out}");
            assert!(!out.contains("BEGIN"), "{out}");
        }
        assert!(outputs[2].contains("app"), "{}", outputs[2]);
    }

    #[tokio::test]
    async fn built_credential_debug_is_redacted() {
        let c = ClientSecretCredential::with_token_url(
            "https://login.example/t/oauth2/v2.0/token",
            "app",
            "hunter2-secret",
        )
        .build()
        .unwrap();
        let out = format!("{c:?}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("login.example"), "{out}");
        assert!(!c.needs_challenge());
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(
            br#"{"token_type":"Bearer","expires_in":3600,"access_token":"abc.def"}"#,
        )
        .unwrap();
        assert_eq!(t.secret(), "abc.def");
        let t = parse_token_response(br#"{"expires_in":"599","access_token":"x"}"#).unwrap();
        let left = t.expires_at().saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(599) && left > Duration::from_secs(590));
        for junk in [
            &b""[..],
            b"<html>",
            b"{}",
            br#"{"access_token":"x"}"#,
            br#"{"access_token":"","expires_in":1}"#,
            br#"{"access_token":"a b","expires_in":1}"#,
            br#"{"access_token":5,"expires_in":1}"#,
            br#"{"access_token":"x","expires_in":-5}"#,
            br#"{"access_token":"x","expires_in":"soon"}"#,
            br#"{"access_token":"x","expires_in":1,"token_type":"pop"}"#,
        ] {
            let e = parse_token_response(junk).expect_err(&String::from_utf8_lossy(junk));
            assert_eq!(e.kind(), ErrorKind::InvalidResponse);
        }
    }

    #[test]
    fn refresh_margin() {
        let now = Instant::now();
        let hour = AccessToken {
            token: Zeroizing::new("t".into()),
            expires_at: now + Duration::from_secs(3600),
        };
        assert_eq!(refresh_at(&hour, now), now + Duration::from_secs(3300));
        let short = AccessToken {
            token: Zeroizing::new("t".into()),
            expires_at: now + Duration::from_secs(120),
        };
        assert_eq!(refresh_at(&short, now), now + Duration::from_secs(60));
        let expired = AccessToken {
            token: Zeroizing::new("t".into()),
            expires_at: now,
        };
        assert_eq!(refresh_at(&expired, now), now);
    }

    #[test]
    fn challenge_authorities_are_checked_before_a_secret_goes_there() {
        let vault = VaultUrl::parse("https://localhost:8443").unwrap();
        let allowed = vec!["login.microsoftonline.com".to_owned()];
        assert_eq!(
            token_url_from_authority("https://localhost:8443/tenant-1", &vault, &[])
                .unwrap()
                .as_str(),
            "https://localhost:8443/tenant-1/oauth2/v2.0/token"
        );
        assert_eq!(
            token_url_from_authority(
                "https://login.microsoftonline.com/72f988bf-86f1/",
                &vault,
                &allowed
            )
            .unwrap()
            .as_str(),
            "https://login.microsoftonline.com/72f988bf-86f1/oauth2/v2.0/token"
        );
        for bad in [
            "https://evil.example/tenant-1",
            "https://login.microsoftonline.com/t",
            "http://localhost:8443/tenant-1",
            "https://user:pw@localhost:8443/tenant-1",
            "https://localhost:8443/",
            "https://localhost:8443",
            "https://localhost:8443/a/b",
            "https://localhost:8443/t?x=1",
            "https://localhost:8443/t#f",
            "https://localhost:8443/..",
            "https://localhost:8443/t%2Fx",
            "localhost/tenant",
        ] {
            let e = token_url_from_authority(bad, &vault, &[]).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::Unauthorized, "{bad}");
        }
    }
}
