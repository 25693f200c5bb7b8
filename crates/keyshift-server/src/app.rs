//! The HTTP application: the keys API behind authentication, and the token issuer's endpoints.

use crate::auth::TokenAuthority;
use crate::query::{parse_form, Query};
use crate::routes::{self, Method, Route};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use keyshift_api::{ApiError, ErrorCode};
use keyshift_vault::audit::{AuditEvent, Trace};
use keyshift_vault::{Deployment, RequestContext, VaultRecord};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared state of every listener.
#[derive(Debug)]
pub struct App {
    /// The deployment.
    pub deployment: Arc<Deployment>,
    /// Token issuer and validator.
    pub tokens: TokenAuthority,
    /// `https://host:port` of the token issuer and the challenge's resource.
    pub public_url: String,
    /// Vaults answer at `<name>.<vault_domain>`.
    pub vault_domain: String,
    /// Other host names of the default vault.
    pub extra_hosts: Vec<String>,
    /// Attestation verification and the release-signing certificate (secure key release).
    pub release: crate::release::ReleaseSupport,
    /// Request counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where full backups are written and read (`backup_api.rs`); `None`: nowhere.
    pub backup_dir: Option<std::path::PathBuf>,
}

/// Which listener a request came through.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// The vault this listener's port belongs to, if it is a vault's own port.
    pub vault: Option<String>,
}

/// The router of one listener.
pub fn router(app: Arc<App>, listener: ListenerInfo) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .merge(crate::admin_api::router(&app))
        .fallback(api)
        .layer(Extension(listener))
        .with_state(app)
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The Azure error envelope with its status.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, e.to_json())
}

pub(crate) fn ok_json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(_) => error_response(&ApiError::internal()),
    }
}

async fn health() -> Response {
    ok_json(&serde_json::json!({"status": "ok"}))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        serde_json::to_vec(&serde_json::json!({"error": error, "error_description": description}))
            .unwrap_or_default(),
    )
}

pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            "The request body was not received in time.",
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                ErrorCode::RequestEntityTooLarge,
                format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
            ))
        }
        Ok(Err(_)) => Err(ApiError::bad_parameter(
            "The request body could not be read.",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn token(State(app): State<Arc<App>>, Path(tenant): Path<String>, req: Request) -> Response {
    if tenant != app.deployment.tenant_id() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Tenant not found in this deployment.",
        );
    }
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let form = parse_form(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only the client_credentials grant is supported.",
        );
    }
    let principal = if field("client_assertion_type") == Some(crate::auth::ASSERTION_TYPE) {
        let Some(assertion) = field("client_assertion") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_assertion is required.",
            );
        };
        let endpoint = format!("{}/{tenant}/oauth2/v2.0/token", app.public_url);
        match app
            .tokens
            .verify_client_assertion(field("client_id"), assertion, &endpoint)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(reason = %e, "client assertion refused");
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    &format!("Invalid client assertion: {e}."),
                );
            }
        }
    } else {
        let (Some(client_id), Some(secret)) = (field("client_id"), field("client_secret")) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_id with client_secret, or a client_assertion, is required.",
            );
        };
        match app.deployment.authenticate_client(client_id, secret).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "Invalid client credentials.",
                )
            }
            Err(e) => return error_response(&e),
        }
    };
    match app.tokens.issue(&principal.id, &principal.client_id) {
        Ok((token, lifetime)) => ok_json(&serde_json::json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        })),
        Err(_) => error_response(&ApiError::internal()),
    }
}

async fn openid_configuration(State(app): State<Arc<App>>, Path(tenant): Path<String>) -> Response {
    if tenant != app.deployment.tenant_id() {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_tenant",
            "Tenant not found in this deployment.",
        );
    }
    let base = format!("{}/{tenant}", app.public_url);
    ok_json(&serde_json::json!({
        "issuer": app.tokens.issuer(),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "tenant_region_scope": "NA",
    }))
}

async fn jwks(State(app): State<Arc<App>>, Path(tenant): Path<String>) -> Response {
    if tenant != app.deployment.tenant_id() {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_tenant",
            "Tenant not found in this deployment.",
        );
    }
    ok_json(&app.tokens.jwks())
}

/// The authority the client used: HTTP/2 `:authority` or the Host header.
fn authority(req: &Request) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
}

fn valid_authority(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 255
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

pub(crate) fn challenge(app: &App) -> Response {
    let e = ApiError::new(
        ErrorCode::Unauthorized,
        "AKV10000: Request is missing a Bearer or PoP token.",
    );
    let mut response = error_response(&e);
    let value = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        app.public_url,
        app.deployment.tenant_id(),
        app.public_url
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

impl App {
    /// The vault a URL's authority names, as a client reaching it would: a vault's own port, a
    /// vault host name, or the default vault. Used for key identifiers in request bodies.
    fn vault_by_authority(&self, authority: &str) -> Result<Arc<VaultRecord>, ApiError> {
        if !valid_authority(authority) {
            return Err(ApiError::bad_parameter(
                "The key identifier has no valid host.",
            ));
        }
        let port = authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        if let Some(v) = port.and_then(|p| {
            self.deployment
                .vaults()
                .into_iter()
                .find(|v| v.port == Some(p))
        }) {
            return Ok(v);
        }
        self.vault_for(&ListenerInfo { vault: None }, authority)
    }

    fn vault_for(
        &self,
        listener: &ListenerInfo,
        authority: &str,
    ) -> Result<Arc<VaultRecord>, ApiError> {
        let no_vault = || {
            ApiError::new(
                ErrorCode::NotFound,
                format!("No vault answers at {authority}."),
            )
        };
        if let Some(name) = &listener.vault {
            return self.deployment.vault(name).ok_or_else(no_vault);
        }
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
            _ => authority,
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let is_default = host == self.vault_domain
            || host.parse::<std::net::IpAddr>().is_ok()
            || self
                .extra_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&host));
        if is_default {
            return self.deployment.default_vault().ok_or_else(no_vault);
        }
        match host.strip_suffix(&format!(".{}", self.vault_domain)) {
            Some(label) if !label.contains('.') => {
                self.deployment.vault(label).ok_or_else(no_vault)
            }
            _ => Err(no_vault()),
        }
    }
}

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// What the audit event of a request needs that is known before it is understood.
struct Arrival {
    /// The Host (or `:authority`) the client used, if it is a valid one.
    authority: Option<String>,
    /// The vault it names; the error is the request's answer once it is authenticated.
    vault: Result<Arc<VaultRecord>, ApiError>,
    time_ms: i64,
    request_id: String,
    client: String,
    client_request_id: Option<String>,
}

impl Arrival {
    fn new(app: &App, listener: &ListenerInfo, req: &Request) -> Self {
        let authority = authority(req).filter(|a| valid_authority(a));
        let vault = match &authority {
            Some(a) => app.vault_for(listener, a),
            None => Err(ApiError::bad_parameter("The request has no valid Host.")),
        };
        Arrival {
            authority,
            vault,
            time_ms: app.deployment.clock().now_millis(),
            request_id: request_id(),
            client: req
                .extensions()
                .get::<ClientAddr>()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
            client_request_id: client_request_id(req.headers()),
        }
    }

    /// The request's trace, if it reached a vault.
    fn trace(
        &self,
        principal: Option<&str>,
        operation: &str,
        key: (Option<&str>, Option<&str>),
    ) -> Option<Arc<Trace>> {
        let vault = self.vault.as_ref().ok()?;
        let mut draft = AuditEvent::draft(
            self.time_ms,
            self.request_id.clone(),
            self.client.clone(),
            vault.name.clone(),
            operation,
        );
        draft.client_request_id = self.client_request_id.clone();
        draft.principal = principal.map(str::to_owned);
        // Names the caller sent are recorded only if they could be names at all.
        draft.key = key.0.filter(|k| plausible_name(k)).map(str::to_owned);
        draft.version = key.1.filter(|v| plausible_name(v)).map(str::to_owned);
        Some(Arc::new(Trace::new(vault, draft)))
    }
}

/// The client's `x-ms-client-request-id`, echoed into the audit log only when it is plainly an
/// id: never arbitrary client bytes.
pub(crate) fn client_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-ms-client-request-id")
        .and_then(|h| h.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 72
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_owned)
}

fn plausible_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Request ids: 64 random bits fixed at start (so ids of different runs do not collide) and a
/// counter, in the GUID shape Azure's `x-ms-request-id` has. Unique, not secret.
pub(crate) fn request_id() -> String {
    static PREFIX: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut p = [0u8; 8];
        if let Ok(random) = keyshift_crypto::random_bytes(8) {
            p.copy_from_slice(&random);
        }
        p
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(prefix);
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    let hex = keyshift_vault::audit::hex(&bytes);
    let mut id = String::with_capacity(36);
    for (i, part) in [
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32],
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            id.push('-');
        }
        id.push_str(part);
    }
    id
}

/// Set only in a benchmark build (feature `unsecured-bench-baseline`): requests skip token
/// validation, the access decision and the audit log, so that their cost can be measured against
/// the same build (`docs/benchmarks.md`). Never set in a build anyone runs as a vault.
pub(crate) const UNSECURED_BENCH_BASELINE: bool = cfg!(feature = "unsecured-bench-baseline");

/// Every keys API request: authentication first (so the SDKs' bodiless first request gets its
/// challenge), then route, api-version, vault, body, and the call. Every request that reaches a
/// vault, allowed or refused, is answered only after its audit event is durable.
async fn api(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    req: Request,
) -> Response {
    let started = std::time::Instant::now();
    let arrival = Arrival::new(&app, &listener, &req);
    let (response, trace) = answer(&app, &arrival, req).await;
    finish(&app, trace, &arrival.request_id, started, response).await
}

/// The end of every audited request (keys API and admin API): its event made durable (the
/// answer becomes a `503` if it cannot be), its metrics, and its `x-ms-request-id`.
pub(crate) async fn finish(
    app: &App,
    trace: Option<Arc<Trace>>,
    request_id: &str,
    started: std::time::Instant,
    mut response: Response,
) -> Response {
    let operation = trace.as_ref().map(|t| t.operation().to_owned());
    if let Some(trace) = trace {
        let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Err(e) = app
            .deployment
            .finish_trace(trace, response.status().as_u16(), latency)
            .await
        {
            response = error_response(&e);
        }
    }
    app.metrics.observe(
        operation.as_deref().unwrap_or("Other"),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-ms-request-id", v);
    }
    response
}

/// The bearer token of an `Authorization` header, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
}

async fn answer(app: &App, arrival: &Arrival, req: Request) -> (Response, Option<Arc<Trace>>) {
    let bearer = bearer(req.headers()).map(str::to_owned);
    let unauthenticated = || {
        (
            challenge(app),
            arrival.trace(None, "Authentication", (None, None)),
        )
    };
    let principal_id = if UNSECURED_BENCH_BASELINE {
        "unsecured-bench-baseline".to_owned()
    } else {
        let Some(bearer) = bearer else {
            return unauthenticated();
        };
        match app.tokens.validate(&bearer).await {
            Ok(c) => c.principal_id,
            Err(e) => {
                tracing::info!(reason = %e, "token refused");
                return unauthenticated();
            }
        }
    };
    let principal = Some(principal_id.as_str());
    let refused = |e: &ApiError| {
        (
            error_response(e),
            arrival.trace(principal, "InvalidRequest", (None, None)),
        )
    };
    let method = Method::from(req.method());
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let route = match routes::parse_rbac(method, &path) {
        Some(Ok(r)) => Call::Rbac(r),
        Some(Err(e)) => return refused(&e),
        None => match crate::backup_api::parse(method, &path) {
            Some(Ok(r)) => Call::Admin(r),
            Some(Err(e)) => return refused(&e),
            None => match routes::parse(method, &path) {
                Ok(r) => Call::Keys(r),
                Err(e) => return refused(&e),
            },
        },
    };
    let trace = match &route {
        _ if UNSECURED_BENCH_BASELINE => None,
        Call::Keys(r) => arrival.trace(principal, r.operation(), r.key()),
        Call::Rbac(r) => arrival.trace(principal, r.operation(), (None, None)),
        Call::Admin(r) => arrival.trace(principal, r.operation(), (r.key(), None)),
    };
    let query = Query::parse(req.uri().query().unwrap_or(""));
    match query.get("api-version") {
        None => return (error_response(&ApiError::bad_parameter("The api-version query parameter is required.")), trace),
        Some(v) if !keyshift_api::version::is_supported(v) => {
            return (error_response(&ApiError::bad_parameter(format!(
                "The specified version ({}) is not recognized. Consider using the latest supported version ({}).",
                v.chars().take(40).collect::<String>(),
                keyshift_api::version::LATEST
            ))), trace)
        }
        Some(_) => {}
    }
    let (Some(authority), Ok(vault)) = (&arrival.authority, &arrival.vault) else {
        let e = match &arrival.vault {
            Err(e) => e.clone(),
            Ok(_) => ApiError::bad_parameter("The request has no valid Host."),
        };
        return (error_response(&e), trace);
    };
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(e) => return (error_response(&e), trace),
    };
    let mut ctx = if UNSECURED_BENCH_BASELINE {
        RequestContext::system(format!("https://{authority}"))
    } else {
        RequestContext::principal(format!("https://{authority}"), principal_id.clone())
    };
    if let Some(t) = &trace {
        ctx = ctx.with_trace(t.clone());
    }
    let result = match route {
        Call::Keys(route) => dispatch(app, &ctx, vault, route, &query, &body).await,
        Call::Rbac(route) => {
            crate::rbac_api::dispatch(&app.deployment, &ctx, vault, route, &query, &body).await
        }
        Call::Admin(route) => {
            let api_version = query.get("api-version").unwrap_or_default();
            crate::backup_api::dispatch(app, &ctx, vault, route, api_version, &body).await
        }
    };
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            if e.code == ErrorCode::InternalError {
                tracing::error!(vault = %vault.name, "internal error answered");
            }
            error_response(&e)
        }
    };
    (response, trace)
}

enum Call {
    Keys(Route),
    Rbac(routes::RbacRoute),
    Admin(crate::backup_api::AdminRoute),
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_parameter("The request body is required."));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_parameter(format!(
            "The request body is invalid: {}",
            e.to_string().chars().take(300).collect::<String>()
        ))
    })
}

/// Renames the member matching `canonical` case-insensitively to `canonical`.
fn canonical_member(map: &mut serde_json::Map<String, serde_json::Value>, canonical: &str) {
    if let Some(k) = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case(canonical) && k.as_str() != canonical)
        .cloned()
    {
        if let Some(v) = map.remove(&k) {
            map.insert(canonical.into(), v);
        }
    }
}

/// Import bodies name `Hsm`, and the key's `key_hsm` (BYOK), in any case.
fn parse_import(body: &[u8]) -> Result<keyshift_api::keys::KeyImportParameters, ApiError> {
    let mut value: serde_json::Value = parse_json(body)?;
    if let Some(map) = value.as_object_mut() {
        canonical_member(map, "Hsm");
        canonical_member(map, "key");
        if let Some(key) = map.get_mut("key").and_then(|k| k.as_object_mut()) {
            canonical_member(key, "key_hsm");
        }
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_parameter(format!(
            "The request body is invalid: {}",
            e.to_string().chars().take(300).collect::<String>()
        ))
    })
}

fn max_results(query: &Query) -> Result<Option<i64>, ApiError> {
    query
        .get("maxresults")
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_parameter("maxresults must be an integer between 1 and 25.")
            })
        })
        .transpose()
}

async fn dispatch(
    app: &App,
    ctx: &RequestContext,
    vault: &VaultRecord,
    route: Route,
    query: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let d: &Deployment = &app.deployment;
    let skiptoken = query.get("$skiptoken");
    Ok(match route {
        Route::ListKeys => ok_json(
            &d.list_keys(ctx, vault, max_results(query)?, skiptoken)
                .await?,
        ),
        Route::RestoreKey => {
            let blob: keyshift_api::keys::BackupBlob = parse_json(body)?;
            ok_json(&d.restore_key(ctx, vault, &blob.value).await?)
        }
        Route::CreateKey { name } => {
            ok_json(&d.create_key(ctx, vault, &name, parse_json(body)?).await?)
        }
        Route::ImportKey { name } => {
            ok_json(&d.import_key(ctx, vault, &name, parse_import(body)?).await?)
        }
        Route::DeleteKey { name } => ok_json(&d.delete_key(ctx, vault, &name).await?),
        Route::GetKey { name, version } => {
            ok_json(&d.get_key(ctx, vault, &name, version.as_deref()).await?)
        }
        Route::UpdateKey { name, version } => ok_json(
            &d.update_key(ctx, vault, &name, version.as_deref(), parse_json(body)?)
                .await?,
        ),
        Route::ListVersions { name } => ok_json(
            &d.list_versions(ctx, vault, &name, max_results(query)?, skiptoken)
                .await?,
        ),
        Route::BackupKey { name } => ok_json(&d.backup_key(ctx, vault, &name).await?),
        Route::RotateKey { name } => ok_json(&d.rotate_key(ctx, vault, &name).await?),
        Route::GetRotationPolicy { name } => {
            ok_json(&d.get_rotation_policy(ctx, vault, &name).await?)
        }
        Route::SetRotationPolicy { name } => ok_json(
            &d.set_rotation_policy(ctx, vault, &name, parse_json(body)?)
                .await?,
        ),
        Route::Operation { name, version, op } => ok_json(
            &d.key_operation(ctx, vault, &name, version.as_deref(), op, parse_json(body)?)
                .await?,
        ),
        Route::Sign { name, version } => ok_json(
            &d.sign(ctx, vault, &name, version.as_deref(), parse_json(body)?)
                .await?,
        ),
        Route::Verify { name, version } => ok_json(
            &d.verify(ctx, vault, &name, version.as_deref(), parse_json(body)?)
                .await?,
        ),
        Route::Release { name, version } => {
            let request = keyshift_vault::release::ReleaseRequest {
                params: parse_json(body)?,
                api_version: query.get("api-version").unwrap_or_default().to_owned(),
            };
            let services = app.release.services(d.clock().now());
            ok_json(
                &d.release_key(ctx, vault, &name, version.as_deref(), request, &services)
                    .await?,
            )
        }
        Route::Attestation { name, version } => {
            let services = app.release.services(d.clock().now());
            ok_json(
                &d.key_attestation(ctx, vault, &name, version.as_deref(), &services)
                    .await?,
            )
        }
        Route::ListDeletedKeys => ok_json(
            &d.list_deleted_keys(ctx, vault, max_results(query)?, skiptoken)
                .await?,
        ),
        Route::GetDeletedKey { name } => ok_json(&d.get_deleted_key(ctx, vault, &name).await?),
        Route::PurgeDeletedKey { name } => {
            d.purge_deleted_key(ctx, vault, &name).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        Route::RecoverDeletedKey { name } => {
            ok_json(&d.recover_deleted_key(ctx, vault, &name).await?)
        }
        Route::GetRandomBytes => {
            let req: keyshift_api::keys::GetRandomBytesRequest = parse_json(body)?;
            ok_json(&d.random_bytes(ctx, vault, req.count).await?)
        }
        Route::Rewrap { name, version } => {
            let p: keyshift_api::keys::RewrapParameters = parse_json(body)?;
            let target = parse_target_kid(&p.target)?;
            let target_vault = app.vault_by_authority(&target.authority)?;
            ok_json(
                &d.rewrap(
                    ctx,
                    vault,
                    &name,
                    version.as_deref(),
                    &target_vault,
                    &format!("https://{}", target.authority),
                    &target.name,
                    target.version.as_deref(),
                    p,
                )
                .await?,
            )
        }
        Route::KeyUsage { name, version } => {
            ok_json(&d.key_usage(ctx, vault, &name, version.as_deref()).await?)
        }
    })
}

/// A key identifier given in a request body: `https://<authority>/keys/<name>[/<version>]`.
struct TargetKid {
    authority: String,
    name: String,
    version: Option<String>,
}

fn parse_target_kid(kid: &str) -> Result<TargetKid, ApiError> {
    let bad = || {
        ApiError::bad_parameter(
            "The target must be a key identifier of this deployment: https://<vault host>/keys/<name>[/<version>].",
        )
    };
    let rest = kid.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = rest.split_once('/').ok_or_else(bad)?;
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let (name, version) = match segs.as_slice() {
        ["keys", name] => (*name, None),
        ["keys", name, version] => (*name, Some((*version).to_owned())),
        _ => return Err(bad()),
    };
    if name.is_empty() || authority.is_empty() {
        return Err(bad());
    }
    Ok(TargetKid {
        authority: authority.to_ascii_lowercase(),
        name: name.to_owned(),
        version,
    })
}
