//! The admin API: principals and trusted federation issuers over HTTPS, the twin of
//! `keyshift principal ...` and `keyshift federation ...`, under `/{tenant}/keyshift/` on the main
//! listener. Every call needs a bearer token of a deployment administrator (`401` with the keys
//! API's challenge without a valid token, `403` for anyone else). Secret hashes are never shown;
//! a client secret is shown once, when it is made.
//!
//! Every request that reaches a route here is an audit event, allowed or refused, answered only
//! once the event is durable, as every vault request is: its `vault` is empty, its `key` the
//! principal it is about, and a change is committed with its event's pending copy.

use crate::app::{
    bearer, challenge, client_request_id, error_response, finish, json_response, ok_json,
    parse_json, read_body, request_id, App, ClientAddr, ListenerInfo,
};
use crate::auth::Caller;
use crate::query::Query;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Router};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_vault::audit::{AuditEvent, Trace};
use keyshift_vault::records::{
    FederatedCredential, JwksSource, PrincipalRecord, TrustedIssuerRecord,
};
use keyshift_vault::{Deployment, RequestContext};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The admin API's routes for the deployment's tenant. The tenant id is part of each path, so no
/// keys API path (which starts with `keys`, `deletedkeys`, `rng` or a role scope) can match one.
pub fn router(app: &Arc<App>) -> Router<Arc<App>> {
    let base = format!("/{}/keyshift", app.deployment.tenant_id());
    let with_fallback = |m: MethodRouter<Arc<App>>| m.fallback(method_not_allowed);
    Router::new()
        .route(
            &format!("{base}/principals"),
            with_fallback(get(list_principals).post(create_principal)),
        )
        .route(
            &format!("{base}/principals/{{id}}"),
            with_fallback(
                get(get_principal)
                    .patch(update_principal)
                    .delete(delete_principal),
            ),
        )
        .route(
            &format!("{base}/principals/{{id}}/secrets"),
            with_fallback(post(add_secret)),
        )
        .route(
            &format!("{base}/principals/{{id}}/certificates"),
            with_fallback(post(add_certificate)),
        )
        .route(
            &format!("{base}/principals/{{id}}/federatedCredentials"),
            with_fallback(get(list_federated).post(add_federated)),
        )
        .route(
            &format!("{base}/principals/{{id}}/federatedCredentials/{{name}}"),
            with_fallback(get(get_federated).delete(remove_federated)),
        )
        .route(
            &format!("{base}/federation/issuers"),
            trusted_routes(TrustList::Federation),
        )
        .route(
            &format!("{base}/attestation/authorities"),
            trusted_routes(TrustList::Attestation),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), audited))
}

/// The routes of one list of trusted token issuers (list, `PUT`, `DELETE ?issuer=`).
fn trusted_routes(list: TrustList) -> MethodRouter<Arc<App>> {
    get(list_trusted)
        .put(trust)
        .delete(untrust)
        .fallback(method_not_allowed)
        .layer(Extension(list))
}

/// Whose signing keys a trusted-issuer route manages: federation issuers (whose tokens are
/// exchanged for Keyshift's) or attestation authorities (whose tokens secure key release
/// believes). Both are the same records, kept apart.
#[derive(Clone, Copy)]
enum TrustList {
    Federation,
    Attestation,
}

impl TrustList {
    async fn list(self, d: &Deployment) -> Result<Vec<TrustedIssuerRecord>, ApiError> {
        match self {
            TrustList::Federation => d.trusted_issuers().await,
            TrustList::Attestation => d.attestation_authorities().await,
        }
    }

    async fn trust(
        self,
        d: &Deployment,
        ctx: &RequestContext,
        (issuer, source, algorithms): (String, JwksSource, Vec<String>),
    ) -> Result<TrustedIssuerRecord, ApiError> {
        match self {
            TrustList::Federation => d.trust_issuer(ctx, &issuer, source, &algorithms).await,
            TrustList::Attestation => {
                d.trust_attestation_authority(ctx, &issuer, source, &algorithms)
                    .await
            }
        }
    }

    async fn untrust(
        self,
        d: &Deployment,
        ctx: &RequestContext,
        issuer: &str,
    ) -> Result<TrustedIssuerRecord, ApiError> {
        match self {
            TrustList::Federation => d.untrust_issuer(ctx, issuer).await,
            TrustList::Attestation => d.untrust_attestation_authority(ctx, issuer).await,
        }
    }
}

/// The audit trace of an admin API request, put on it by [`audited`].
#[derive(Clone)]
struct AdminTrace(Arc<Trace>);

/// The audit event's name for a call of `method` on `path` (a route of this router).
fn operation(method: &Method, path: &str) -> &'static str {
    let route = path.split_once("/keyshift/").map_or("", |(_, r)| r);
    let segments: Vec<&str> = route.split('/').collect();
    let shape: &[&str] = match segments.as_slice() {
        ["principals"] => &["principals"],
        ["principals", _] => &["principals", "{id}"],
        ["principals", _, "secrets"] => &["secrets"],
        ["principals", _, "certificates"] => &["certificates"],
        ["principals", _, "federatedCredentials"] => &["federatedCredentials"],
        ["principals", _, "federatedCredentials", _] => &["federatedCredentials", "{name}"],
        ["federation", "issuers"] => &["issuers"],
        ["attestation", "authorities"] => &["authorities"],
        _ => &[],
    };
    match (method.as_str(), shape) {
        ("GET", ["principals"]) => "PrincipalList",
        ("POST", ["principals"]) => "PrincipalCreate",
        ("GET", ["principals", _]) => "PrincipalGet",
        ("PATCH", ["principals", _]) => "PrincipalUpdate",
        ("DELETE", ["principals", _]) => "PrincipalDelete",
        ("POST", ["secrets"]) => "PrincipalSecretAdd",
        ("POST", ["certificates"]) => "PrincipalCertificateAdd",
        ("GET", ["federatedCredentials"]) => "FederatedCredentialList",
        ("POST", ["federatedCredentials"]) => "FederatedCredentialAdd",
        ("GET", ["federatedCredentials", _]) => "FederatedCredentialGet",
        ("DELETE", ["federatedCredentials", _]) => "FederatedCredentialRemove",
        ("GET", ["issuers"]) => "IssuerList",
        ("PUT", ["issuers"]) => "IssuerTrust",
        ("DELETE", ["issuers"]) => "IssuerUntrust",
        ("GET", ["authorities"]) => "AttestationAuthorityList",
        ("PUT", ["authorities"]) => "AttestationAuthorityTrust",
        ("DELETE", ["authorities"]) => "AttestationAuthorityUntrust",
        _ => "AdminInvalidRequest",
    }
}

/// Records every admin API request as an audit event and answers only once it is durable.
async fn audited(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let operation = operation(req.method(), req.uri().path());
    let principal = match bearer(req.headers()) {
        Some(token) => app
            .tokens
            .validate(token)
            .await
            .ok()
            .map(|c| c.principal_id),
        None => None,
    };
    let mut draft = AuditEvent::draft(
        app.deployment.clock().now_millis(),
        request_id(),
        req.extensions()
            .get::<ClientAddr>()
            .map(|c| c.0.to_string())
            .unwrap_or_default(),
        "",
        operation,
    );
    draft.client_request_id = client_request_id(req.headers());
    draft.principal = principal;
    let trace = Arc::new(Trace::for_deployment(draft));
    let request_id = trace.draft().request_id.clone();
    req.extensions_mut().insert(AdminTrace(trace.clone()));
    let response = next.run(req).await;
    finish(&app, Some(trace), &request_id, started, response).await
}

/// An answer that is not the success: the keys API's challenge, or an Azure error envelope.
struct Refused(Box<Response>);

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        if e.code == ErrorCode::InternalError {
            tracing::error!("internal error answered by the admin API");
        }
        Refused(Box::new(error_response(&e)))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

type Answer = Result<Response, Refused>;

async fn method_not_allowed() -> Response {
    error_response(&ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This admin API route does not support this method.",
    ))
}

/// The caller, if it holds a valid token of an enabled deployment administrator.
async fn administrator(
    app: &App,
    listener: &ListenerInfo,
    headers: &HeaderMap,
) -> Result<Caller, Refused> {
    if listener.vault.is_some() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "The admin API is served on the main listener only.",
        )
        .into());
    }
    let Some(bearer) = bearer(headers) else {
        return Err(Refused(Box::new(challenge(app))));
    };
    let caller = match app.tokens.validate(bearer).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "token refused by the admin API");
            return Err(Refused(Box::new(challenge(app))));
        }
    };
    app.deployment
        .require_deployment_admin(&caller.client_id, &caller.principal_id)
        .await?;
    Ok(caller)
}

/// A deployment administrator's token, or the answer refusing the request (for routes outside
/// this router: sealing).
pub(crate) async fn require_administrator(
    app: &App,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    administrator(app, &ListenerInfo { vault: None }, headers)
        .await
        .map_err(IntoResponse::into_response)
}

/// The caller, if it is an enabled deployment administrator, and the context its changes are
/// committed in (with the request's audit trace).
async fn admin(
    app: &App,
    listener: &ListenerInfo,
    headers: &HeaderMap,
    trace: &AdminTrace,
) -> Result<(Caller, RequestContext), Refused> {
    let caller = administrator(app, listener, headers).await?;
    let ctx = RequestContext::principal(String::new(), caller.principal_id.clone())
        .with_trace(trace.0.clone());
    Ok((caller, ctx))
}

/// The principal `id` (object or client id) names; the request's audit event names it.
async fn principal(app: &App, ctx: &RequestContext, id: &str) -> Result<PrincipalRecord, ApiError> {
    let p = principal_named(app, id).await?;
    ctx.note_subject(&p.id);
    Ok(p)
}

async fn principal_named(app: &App, id: &str) -> Result<PrincipalRecord, ApiError> {
    app.deployment
        .principal_by_id_or_client_id(id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "No principal with id or client id '{}'.",
                    id.chars().take(64).collect::<String>()
                ),
            )
        })
}

fn created<T: Serialize>(value: &T) -> Answer {
    let body = serde_json::to_vec(value).map_err(|_| ApiError::internal())?;
    Ok(json_response(StatusCode::CREATED, body))
}

/// A principal as the admin API shows it: never its secret hashes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PrincipalView {
    id: String,
    client_id: String,
    display_name: String,
    enabled: bool,
    deployment_admin: bool,
    created: i64,
    secret_count: usize,
    certificates: Vec<CertificateView>,
    federated_credentials: Vec<FederatedCredentialView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertificateView {
    x5t: String,
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
    not_after: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FederatedCredentialView {
    name: String,
    issuer: String,
    subject: String,
    #[serde(default)]
    audiences: Vec<String>,
}

impl From<FederatedCredential> for FederatedCredentialView {
    fn from(c: FederatedCredential) -> Self {
        FederatedCredentialView {
            name: c.name,
            issuer: c.issuer,
            subject: c.subject,
            audiences: c.audiences,
        }
    }
}

fn view(app: &App, p: PrincipalRecord) -> PrincipalView {
    PrincipalView {
        deployment_admin: app.deployment.is_deployment_admin(&p),
        id: p.id,
        client_id: p.client_id,
        display_name: p.display_name,
        enabled: p.enabled,
        created: p.created,
        secret_count: p.secret_hashes.len(),
        certificates: p
            .certificates
            .into_iter()
            .map(|c| CertificateView {
                x5t: c.x5t,
                x5t_s256: c.x5t_s256,
                not_after: c.not_after,
            })
            .collect(),
        federated_credentials: p
            .federated_credentials
            .into_iter()
            .map(Into::into)
            .collect(),
    }
}

async fn list_principals(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    headers: HeaderMap,
) -> Answer {
    admin(&app, &listener, &headers, &audit).await?;
    let all: Vec<PrincipalView> = app
        .deployment
        .principals()
        .await?
        .into_iter()
        .map(|p| view(&app, p))
        .collect();
    Ok(ok_json(&serde_json::json!({ "value": all })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreatePrincipal {
    display_name: String,
    #[serde(default)]
    deployment_admin: bool,
}

async fn create_principal(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let req: CreatePrincipal = parse_json(&read_body(body).await?)?;
    let new = app
        .deployment
        .create_principal_with(&ctx, &req.display_name, req.deployment_admin)
        .await?;
    let mut out =
        serde_json::to_value(view(&app, new.principal)).map_err(|_| ApiError::internal())?;
    if let Some(map) = out.as_object_mut() {
        map.insert("clientSecret".into(), new.client_secret.into());
        map.insert("tenantId".into(), app.deployment.tenant_id().into());
    }
    created(&out)
}

async fn get_principal(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    Ok(ok_json(&view(&app, principal(&app, &ctx, &id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatePrincipal {
    enabled: bool,
}

async fn update_principal(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (caller, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let req: UpdatePrincipal = parse_json(&read_body(body).await?)?;
    let p = principal(&app, &ctx, &id).await?;
    if !req.enabled && p.id == caller.principal_id {
        return Err(ApiError::bad_parameter(
            "A deployment administrator cannot disable itself through the admin API.",
        )
        .into());
    }
    let p = app
        .deployment
        .set_principal_enabled(&ctx, &p.client_id, req.enabled)
        .await?;
    Ok(ok_json(&view(&app, p)))
}

async fn delete_principal(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (caller, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let p = principal(&app, &ctx, &id).await?;
    if p.id == caller.principal_id {
        return Err(ApiError::bad_parameter(
            "A deployment administrator cannot delete itself through the admin API.",
        )
        .into());
    }
    let p = app.deployment.delete_principal(&ctx, &p.client_id).await?;
    Ok(ok_json(&view(&app, p)))
}

async fn add_secret(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let p = principal(&app, &ctx, &id).await?;
    let secret = app
        .deployment
        .add_principal_secret(&ctx, &p.client_id)
        .await?;
    created(&serde_json::json!({
        "id": p.id,
        "clientId": p.client_id,
        "clientSecret": secret,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddCertificate {
    pem: String,
}

async fn add_certificate(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let req: AddCertificate = parse_json(&read_body(body).await?)?;
    let p = principal(&app, &ctx, &id).await?;
    app.deployment
        .add_principal_certificate(&ctx, &p.client_id, req.pem.as_bytes())
        .await?;
    created(&view(&app, principal_named(&app, &p.client_id).await?))
}

async fn list_federated(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let p = principal(&app, &ctx, &id).await?;
    let list: Vec<FederatedCredentialView> = p
        .federated_credentials
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(ok_json(&serde_json::json!({ "value": list })))
}

async fn add_federated(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let req: FederatedCredentialView = parse_json(&read_body(body).await?)?;
    let p = principal(&app, &ctx, &id).await?;
    let (_, credential) = app
        .deployment
        .add_federated_credential(
            &ctx,
            &p.client_id,
            FederatedCredential {
                name: req.name,
                issuer: req.issuer,
                subject: req.subject,
                audiences: req.audiences,
            },
        )
        .await?;
    created(&FederatedCredentialView::from(credential))
}

fn no_credential(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "No federated credential named '{}'.",
            name.chars().take(120).collect::<String>()
        ),
    )
}

async fn get_federated(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let p = principal(&app, &ctx, &id).await?;
    let c = p
        .federated_credentials
        .into_iter()
        .find(|c| c.name.eq_ignore_ascii_case(&name))
        .ok_or_else(|| no_credential(&name))?;
    Ok(ok_json(&FederatedCredentialView::from(c)))
}

async fn remove_federated(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let p = principal(&app, &ctx, &id).await?;
    let removed = app
        .deployment
        .remove_federated_credential(&ctx, &p.client_id, &name)
        .await?;
    Ok(ok_json(&FederatedCredentialView::from(removed)))
}

/// A trusted issuer as the admin API shows and takes it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerView {
    issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwks_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    #[serde(default)]
    algorithms: Vec<String>,
    #[serde(default, skip_deserializing)]
    updated: i64,
}

impl From<TrustedIssuerRecord> for IssuerView {
    fn from(r: TrustedIssuerRecord) -> Self {
        let (jwks_file, jwks_url, ca_file) = match r.jwks {
            JwksSource::File { path } => (Some(path), None, None),
            JwksSource::Url { url, ca_file } => (None, Some(url), ca_file),
        };
        IssuerView {
            issuer: r.issuer,
            jwks_file,
            jwks_url,
            ca_file,
            algorithms: r.algorithms,
            updated: r.updated,
        }
    }
}

async fn list_trusted(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Extension(list): Extension<TrustList>,
    headers: HeaderMap,
) -> Answer {
    admin(&app, &listener, &headers, &audit).await?;
    let all: Vec<IssuerView> = list
        .list(&app.deployment)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(ok_json(&serde_json::json!({ "value": all })))
}

async fn trust(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Extension(list): Extension<TrustList>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let wanted = trusted(&read_body(body).await?)?;
    let record = list.trust(&app.deployment, &ctx, wanted).await?;
    Ok(ok_json(&IssuerView::from(record)))
}

async fn untrust(
    State(app): State<Arc<App>>,
    Extension(listener): Extension<ListenerInfo>,
    Extension(audit): Extension<AdminTrace>,
    Extension(list): Extension<TrustList>,
    headers: HeaderMap,
    uri: Uri,
) -> Answer {
    let (_, ctx) = admin(&app, &listener, &headers, &audit).await?;
    let removed = list
        .untrust(&app.deployment, &ctx, &issuer_param(&uri)?)
        .await?;
    Ok(ok_json(&IssuerView::from(removed)))
}

/// An issuer or authority to trust, as a `PUT` body gives it: its URL, where its keys are, and
/// the algorithms it is trusted with.
fn trusted(body: &[u8]) -> Result<(String, JwksSource, Vec<String>), ApiError> {
    let req: IssuerView = parse_json(body)?;
    let source = match (req.jwks_file, req.jwks_url, req.ca_file) {
        (Some(path), None, None) => {
            // The server reads this file for every check: refuse one it cannot use now.
            crate::federation::check_jwks_file(std::path::Path::new(&path))
                .map_err(ApiError::bad_parameter)?;
            JwksSource::File { path }
        }
        (None, Some(url), ca_file) => JwksSource::Url { url, ca_file },
        (Some(_), None, Some(_)) => {
            return Err(ApiError::bad_parameter("caFile goes with jwksUrl only."))
        }
        _ => {
            return Err(ApiError::bad_parameter(
                "Give exactly one of jwksFile and jwksUrl.",
            ))
        }
    };
    Ok((req.issuer, source, req.algorithms))
}

/// The `issuer` query parameter, which names the issuer or authority to stop trusting.
fn issuer_param(uri: &Uri) -> Result<String, ApiError> {
    Query::parse(uri.query().unwrap_or(""))
        .get("issuer")
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_parameter("The issuer query parameter names the issuer to remove.")
        })
}
