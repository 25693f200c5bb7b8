//! The sealed front of a deployment whose root key is split into shares: the main listener runs
//! from the start, but until enough shares have arrived there is no deployment behind it. Sealed,
//! it answers `/health` (`503`, `"status": "sealed"` and the progress), takes shares at
//! `POST /keyshift/unseal`, and answers everything else `503` in the Azure error envelope with
//! inner code `Sealed`. Unsealed, every request goes to the deployment's router, except
//! `POST /keyshift/seal` (a deployment administrator's token), which drops the deployment again.
//!
//! The gate holds the only long-lived reference to the unsealed router (connections look it up
//! per request), so sealing leaves no copy of the deployment behind a keep-alive connection.
//! What recombines shares and opens the deployment is the caller's [`Unsealer`].

use crate::app::{error_response, ok_json, read_body, App};
use crate::tls::{CertResolver, LocalCa};
use crate::{listener, ServerConfig, ServerError};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use keyshift_api::{ApiError, ErrorCode};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// Where unsealing stands.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct UnsealStatus {
    /// Whether the deployment is still sealed.
    pub sealed: bool,
    /// Shares needed.
    pub threshold: u8,
    /// Valid shares received so far (0 once unsealed).
    pub progress: usize,
}

/// Turns shares into an open deployment behind a gate, and back.
#[async_trait::async_trait]
pub trait Unsealer: Send + Sync + 'static {
    /// Takes one share (its text). A bad share is a `400` with an inner code saying why.
    async fn unseal(&self, share: String) -> Result<UnsealStatus, ApiError>;
    /// Drops the deployment and every unsealed secret; the gate is sealed afterwards.
    async fn seal(&self) -> Result<(), ApiError>;
    /// Where unsealing stands.
    async fn status(&self) -> UnsealStatus;
}

#[derive(Clone)]
struct Unsealed {
    router: Router,
    app: Arc<App>,
}

/// The main listener of a sealable deployment.
pub struct SealGate {
    local_addr: SocketAddr,
    public_url: String,
    pub(crate) resolver: Arc<CertResolver>,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    listener: std::sync::Mutex<Option<TcpListener>>,
    unsealed: RwLock<Option<Unsealed>>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SealGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealGate")
            .field("local_addr", &self.local_addr)
            .field("sealed", &self.is_sealed())
            .finish()
    }
}

impl SealGate {
    /// Binds the main listener (not serving yet: see [`SealGate::serve`]).
    pub async fn bind(config: &ServerConfig, now: i64) -> Result<Arc<SealGate>, ServerError> {
        let crate::BoundListener {
            listener: main,
            local_addr,
            public_url,
        } = crate::bind(config).await?;
        let names = sealed_names(config, &public_url);
        let ca: &LocalCa = &config.ca;
        let resolver = Arc::new(CertResolver::new(ca.issue_server_cert(&names, now)?));
        let tls = crate::tls::server_config(resolver.clone())?;
        Ok(Arc::new(SealGate {
            local_addr,
            public_url,
            resolver,
            tls,
            listener: std::sync::Mutex::new(Some(main)),
            unsealed: RwLock::new(None),
            task: std::sync::Mutex::new(None),
        }))
    }

    /// Starts answering, sealed, with `unsealer` taking the shares.
    pub fn serve(self: &Arc<Self>, unsealer: Arc<dyn Unsealer>) {
        let Some(main) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let router = Router::new()
            .fallback(gate)
            .with_state((self.clone(), unsealer));
        let task = tokio::spawn(listener::serve(main, self.tls.clone(), router));
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(public_url = %self.public_url, "listening, sealed");
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://host:port` of the main listener.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether no deployment is behind the gate.
    pub fn is_sealed(&self) -> bool {
        self.unsealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    pub(crate) fn install(&self, router: Router, app: Arc<App>) {
        *self.unsealed.write().unwrap_or_else(|p| p.into_inner()) = Some(Unsealed { router, app });
    }

    /// Back to sealed: the deployment's router is dropped here (requests in flight finish).
    pub fn clear(&self) {
        let old = self
            .unsealed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(old);
    }

    fn current(&self) -> Option<Unsealed> {
        self.unsealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for SealGate {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

fn sealed_names(config: &ServerConfig, public_url: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    let host = public_url
        .strip_prefix("https://")
        .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h))
        .map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        });
    for name in ["127.0.0.1", "::1", &config.vault_domain]
        .into_iter()
        .map(str::to_owned)
        .chain(config.extra_hosts.iter().map(|h| h.to_ascii_lowercase()))
        .chain(host)
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The error every sealed request gets.
pub fn sealed_error(status: &UnsealStatus) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!(
            "This Keyshift deployment is sealed: its root key is split into shares, and key \
             operations resume once `keyshift unseal` has given {} of them ({} so far).",
            status.threshold, status.progress
        ),
    )
    .with_inner("Sealed")
}

type GateState = (Arc<SealGate>, Arc<dyn Unsealer>);

async fn gate(State((gate, unsealer)): State<GateState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let current = gate.current();
    match (path.as_str(), current) {
        ("/keyshift/unseal", current) => {
            if method != Method::POST {
                return error_response(&ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "Shares are given with POST.",
                ));
            }
            if current.is_some() {
                return ok_json(&unsealer.status().await);
            }
            match unseal(&*unsealer, request).await {
                Ok(status) => ok_json(&status),
                Err(e) => error_response(&e),
            }
        }
        ("/keyshift/seal", current) => {
            if method != Method::POST {
                return error_response(&ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "Sealing is asked with POST.",
                ));
            }
            let Some(current) = current else {
                return ok_json(&unsealer.status().await);
            };
            if let Err(refused) =
                crate::admin_api::require_administrator(&current.app, request.headers()).await
            {
                return refused;
            }
            drop(current);
            match unsealer.seal().await {
                Ok(()) => ok_json(&unsealer.status().await),
                Err(e) => error_response(&e),
            }
        }
        (_, Some(current)) => match current.router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        ("/health", None) => {
            let status = unsealer.status().await;
            let body = serde_json::json!({
                "status": "sealed",
                "sealed": true,
                "threshold": status.threshold,
                "progress": status.progress,
            });
            let mut response = ok_json(&body);
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
        (_, None) => error_response(&sealed_error(&unsealer.status().await)).into_response(),
    }
}

async fn unseal(unsealer: &dyn Unsealer, request: Request) -> Result<UnsealStatus, ApiError> {
    #[derive(serde::Deserialize)]
    struct Body {
        share: String,
    }
    let bytes = read_body(request.into_body()).await?;
    let body: Body = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::bad_parameter("The body must be a JSON object {\"share\": \"<share text>\"}.")
            .with_inner("InvalidShare")
    })?;
    unsealer.unseal(body.share).await
}
