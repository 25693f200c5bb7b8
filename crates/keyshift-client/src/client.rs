//! [`KeyClient`]: configuration, and the request pipeline every operation goes through
//! (bearer token, challenge discovery, retries, bounded response reading, error decoding).

use crate::challenge::BearerChallenge;
use crate::credential::{AccessToken, TokenCredential};
use crate::error::{ClientError, ErrorKind};
use crate::kid::VaultUrl;
use crate::retry::{parse_retry_after, AttemptOutcome, Idempotency, RetryDecision, RetryPolicy};
use crate::tls::{self, Timeouts, TrustRoots};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Url};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// The api-version sent unless configured otherwise.
pub const DEFAULT_API_VERSION: &str = "2025-07-01";
/// Largest response body read from a vault.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// An async client for the Azure Key Vault keys API, against Keyshift or Azure Key Vault / Managed
/// HSM. Cheap to clone: clones share one connection pool, token cache and scope cache.
#[derive(Clone)]
pub struct KeyClient {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    pub(crate) api_version: String,
    retry: RetryPolicy,
    fixed_scope: Option<String>,
    /// Scope learned from each vault origin's challenge.
    scopes: StdMutex<HashMap<String, String>>,
}

impl fmt::Debug for KeyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyClient")
            .field("credential", &self.inner.credential)
            .field("api_version", &self.inner.api_version)
            .field("retry", &self.inner.retry)
            .field("scope", &self.inner.fixed_scope)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KeyClient`].
pub struct KeyClientBuilder {
    credential: Option<Arc<dyn TokenCredential>>,
    trust: TrustRoots,
    api_version: String,
    timeouts: Timeouts,
    retry: RetryPolicy,
    scope: Option<String>,
}

impl fmt::Debug for KeyClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyClientBuilder")
            .field("credential", &self.credential)
            .field("trust", &self.trust)
            .field("api_version", &self.api_version)
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .field("scope", &self.scope)
            .finish()
    }
}

impl KeyClient {
    /// Starts a builder.
    pub fn builder() -> KeyClientBuilder {
        KeyClientBuilder {
            credential: None,
            trust: TrustRoots::default(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                request: Duration::from_secs(60),
            },
            retry: RetryPolicy::default(),
            scope: None,
        }
    }

    /// The api-version sent with every request.
    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }
}

impl KeyClientBuilder {
    /// The credential that supplies bearer tokens (required).
    pub fn credential(mut self, credential: Arc<dyn TokenCredential>) -> Self {
        self.credential = Some(credential);
        self
    }

    /// Extra trusted root certificates, PEM, **in addition to** the system's roots. To trust
    /// these roots only, also call [`Self::system_roots`]`(false)`. `None` removes extra roots.
    pub fn ca_pem(mut self, pem: Option<&str>) -> Self {
        self.trust.extra_pem = pem.map(str::to_owned);
        self
    }

    /// Whether the system's trust store is used (default `true`). With `false`, only the roots
    /// from [`Self::ca_pem`] are trusted.
    pub fn system_roots(mut self, on: bool) -> Self {
        self.trust.no_system_roots = !on;
        self
    }

    /// The api-version to send (default `2025-07-01`).
    pub fn api_version(mut self, version: &str) -> Self {
        self.api_version = version.to_owned();
        self
    }

    /// Timeout of one attempt, from sending to the end of the answer (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.request = timeout;
        self
    }

    /// Timeout of establishing a connection, TLS included (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// Retries after the first attempt (default 3); see [`crate::retry`] for which failures are
    /// retried for which operations. `0` disables retries.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retry.max_retries = retries;
        self
    }

    /// The whole retry policy (retries, first backoff, longest wait).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// A fixed token scope (e.g. `https://vault.azure.net/.default`). Without one, the client
    /// learns the scope from each vault's first 401 challenge, as the Azure SDKs do, which costs
    /// one bodiless request per vault and client.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.to_owned());
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<KeyClient, ClientError> {
        let credential = self
            .credential
            .ok_or_else(|| ClientError::invalid_input("a KeyClient needs a credential"))?;
        let api_version_ok = !self.api_version.is_empty()
            && self.api_version.len() <= 64
            && self
                .api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        if !api_version_ok {
            return Err(ClientError::invalid_input(format!(
                "invalid api-version {:?}",
                self.api_version
            )));
        }
        Ok(KeyClient {
            inner: Arc::new(ClientInner {
                http: tls::http_client(&self.trust, self.timeouts)?,
                credential,
                api_version: self.api_version,
                retry: self.retry,
                fixed_scope: self.scope,
                scopes: StdMutex::new(HashMap::new()),
            }),
        })
    }
}

/// One request to a vault.
pub(crate) struct Call<'a> {
    pub what: &'static str,
    pub method: Method,
    pub vault: &'a VaultUrl,
    pub url: Url,
    /// JSON body; zeroized after the call (it may hold key material).
    pub body: Option<Zeroizing<Vec<u8>>>,
    pub idempotency: Idempotency,
}

/// A complete answer.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn challenge(&self) -> Option<BearerChallenge> {
        self.headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(BearerChallenge::parse)
    }
}

impl KeyClient {
    /// Sends `call` with a bearer token, discovering the scope and re-authenticating once on a
    /// challenge, and returns the body of a 2xx answer.
    pub(crate) async fn execute(&self, call: &Call<'_>) -> Result<Vec<u8>, ClientError> {
        self.execute_with_request_id(call)
            .await
            .map(|(body, _)| body)
    }

    /// [`Self::execute`], also returning the service's `x-ms-request-id` (Keyshift's audit event
    /// id for the request).
    pub(crate) async fn execute_with_request_id(
        &self,
        call: &Call<'_>,
    ) -> Result<(Vec<u8>, Option<String>), ClientError> {
        let mut reauthenticated = false;
        loop {
            let token = self.bearer(call).await?;
            let reply = self.send_with_retries(call, Some(&token)).await?;
            if reply.status == 401 && !reauthenticated {
                if let Some(challenge) = reply.challenge() {
                    tracing::debug!(op = call.what, "token refused; re-authenticating once");
                    self.accept_challenge(call.vault, &challenge).await?;
                    reauthenticated = true;
                    continue;
                }
            }
            if (200..300).contains(&reply.status) {
                let request_id = reply
                    .headers
                    .get("x-ms-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Ok((reply.body, request_id));
            }
            return Err(ClientError::from_response(reply.status, &reply.body));
        }
    }

    /// A token for the vault's scope, probing for a challenge first when needed.
    async fn bearer(&self, call: &Call<'_>) -> Result<AccessToken, ClientError> {
        let credential = &self.inner.credential;
        let mut scope = self.scope_for(call.vault);
        if scope.is_none() || credential.needs_challenge() {
            self.probe(call).await?;
            scope = self.scope_for(call.vault);
        }
        let scope = scope.ok_or_else(|| {
            ClientError::new(
                ErrorKind::Unauthorized,
                "no token scope is known for the vault",
            )
        })?;
        credential.token(&scope).await
    }

    fn scope_for(&self, vault: &VaultUrl) -> Option<String> {
        if let Some(fixed) = &self.inner.fixed_scope {
            return Some(fixed.clone());
        }
        self.inner
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(vault.as_str())
            .cloned()
    }

    /// Sends the request without body or token, to get the vault's challenge: nothing of the
    /// caller's (key material, token) leaves before the service says who it trusts.
    async fn probe(&self, call: &Call<'_>) -> Result<(), ClientError> {
        let reply = self.send_with_retries(call, None).await?;
        match (reply.status, reply.challenge()) {
            (401, Some(challenge)) => self.accept_challenge(call.vault, &challenge).await,
            (401, None) => Err(ClientError::new(
                ErrorKind::Unauthorized,
                "the service answered 401 without a Bearer challenge (WWW-Authenticate)",
            )
            .with_status(401)),
            (status, _) if status < 400 => Err(ClientError::new(
                ErrorKind::InvalidResponse,
                format!(
                    "the service answered an unauthenticated request with HTTP {status} instead of a \
                     Bearer challenge; configure the token scope with KeyClientBuilder::scope"
                ),
            )
            .with_status(status)),
            (status, _) => Err(ClientError::from_response(status, &reply.body)),
        }
    }

    async fn accept_challenge(
        &self,
        vault: &VaultUrl,
        challenge: &BearerChallenge,
    ) -> Result<(), ClientError> {
        if self.inner.fixed_scope.is_none() {
            let scope = challenge.scope_for(vault)?;
            self.inner
                .scopes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(vault.as_str().to_owned(), scope);
        }
        self.inner.credential.on_challenge(vault, challenge).await
    }

    /// Attempts until an answer that is not retried, or a transport failure that is not.
    async fn send_with_retries(
        &self,
        call: &Call<'_>,
        token: Option<&AccessToken>,
    ) -> Result<Reply, ClientError> {
        let mut attempt = 0;
        loop {
            let outcome = match self.send_once(call, token).await {
                Ok(reply) => {
                    let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok());
                    let retry_after =
                        parse_retry_after(header("retry-after"), header("retry-after-ms"));
                    let outcome = AttemptOutcome::Status {
                        status: reply.status,
                        retry_after,
                    };
                    match self.decide(call, attempt, outcome) {
                        Some(delay) => delay,
                        None => return Ok(reply),
                    }
                }
                Err(Failure::Transport(e)) => {
                    let outcome = if e.is_connect() {
                        AttemptOutcome::ConnectFailed
                    } else {
                        AttemptOutcome::Interrupted
                    };
                    match self.decide(call, attempt, outcome) {
                        Some(delay) => delay,
                        None => return Err(ClientError::transport(call.what, e)),
                    }
                }
                Err(Failure::Other(e)) => return Err(e),
            };
            tracing::debug!(
                op = call.what,
                attempt,
                delay_ms = outcome.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(outcome).await;
            attempt += 1;
        }
    }

    fn decide(&self, call: &Call<'_>, attempt: u32, outcome: AttemptOutcome) -> Option<Duration> {
        match self
            .inner
            .retry
            .decide(call.idempotency, attempt, outcome, fastrand::f64())
        {
            RetryDecision::RetryAfter(d) => Some(d),
            RetryDecision::Stop => None,
        }
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        token: Option<&AccessToken>,
    ) -> Result<Reply, Failure> {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone());
        if let Some(token) = token {
            let value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.secret()))
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                    .map_err(|_| {
                        Failure::Other(ClientError::new(
                            ErrorKind::Unauthorized,
                            "the credential returned a token that is not a valid header value",
                        ))
                    })?;
            request = request.header(AUTHORIZATION, value);
            if let Some(body) = &call.body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
        }
        let response = request.send().await.map_err(Failure::Transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_limited_inner(response, MAX_RESPONSE_BYTES).await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

enum Failure {
    Transport(reqwest::Error),
    Other(ClientError),
}

/// Reads a response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    read_limited_inner(response, limit)
        .await
        .map_err(|f| match f {
            Failure::Transport(e) => ClientError::transport("reading the answer", e),
            Failure::Other(e) => e,
        })
}

async fn read_limited_inner(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let status = response.status().as_u16();
    let too_large = || {
        Failure::Other(
            ClientError::invalid_response(format!("the answer is larger than {limit} bytes"))
                .with_status(status),
        )
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
