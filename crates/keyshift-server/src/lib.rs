//! Keyshift's HTTPS front end: the Azure Key Vault keys API, the OAuth2 token issuer, TLS with a
//! local CA, one listener for the default vault and host-named vaults, and one per vault that has a
//! port of its own. It never names a storage backend: it is handed a [`Deployment`].

pub mod admin_api;
pub mod app;
pub mod auth;
pub mod backup_api;
pub mod federation;
mod listener;
pub mod metrics;
pub mod query;
pub mod rbac_api;
pub mod release;
pub mod routes;
pub mod sealed;
pub mod test_authority;
pub mod tls;

use app::{App, ListenerInfo};
use auth::TokenAuthority;
use axum::Router;
use keyshift_vault::Deployment;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tls::{CertResolver, LocalCa};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Everything the server needs besides the deployment.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the main listener (default vault, `<name>.<vault_domain>` vaults, tokens).
    pub listen: SocketAddr,
    /// `https://host:port` of the main listener as clients reach it; `None` derives it from
    /// `vault_domain` and the bound port.
    pub public_url: Option<String>,
    /// Vaults answer at `<name>.<vault_domain>`; the default vault at `<vault_domain>` itself.
    pub vault_domain: String,
    /// Audience of issued tokens.
    pub audience: String,
    /// Token lifetime, seconds.
    pub token_lifetime: i64,
    /// Further host names of the default vault, also put in the certificate.
    pub extra_hosts: Vec<String>,
    /// The CA that issues the server certificate.
    pub ca: LocalCa,
    /// How often soft-deleted keys past retention are purged and due rotations run.
    pub maintenance_interval: Duration,
    /// How often the vault list is re-read (vaults added by `keyshift vault create`).
    pub refresh_interval: Duration,
    /// Where `/metrics` is served (plain HTTP); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The directory full backups are written to and restored from (`file:///<container>` is a
    /// directory in it); `None`: full backups are refused.
    pub backup_dir: Option<std::path::PathBuf>,
}

/// Server start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The audit log could not start (its head does not verify, or the store fails).
    #[error("the audit log cannot start: {0}")]
    Audit(String),
}

/// A running server. Dropping it stops every listener and background task.
#[derive(Debug)]
pub struct RunningServer {
    /// The main listener's bound address.
    pub local_addr: SocketAddr,
    /// `https://host:port` of the main listener.
    pub public_url: String,
    /// The shared application state.
    pub app: Arc<App>,
    /// The metrics listener's bound address, when there is one.
    pub metrics_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// The URL of a vault on the main listener (`https://<name>.<domain>:port`, or the bare domain for the default vault).
    pub fn vault_url(&self, name: &str) -> String {
        let port = self.local_addr.port();
        match self.app.deployment.vault(name) {
            Some(v) if v.default => format!("https://{}:{port}", self.app.vault_domain),
            _ => format!("https://{name}.{}:{port}", self.app.vault_domain),
        }
    }
}

impl RunningServer {
    /// Stops every listener and background task and waits until they are gone, so that nothing
    /// of this server (its deployment included) is left in a task.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn certificate_names(
    config: &ServerConfig,
    deployment: &Deployment,
    public_url: &str,
) -> Vec<String> {
    let mut names = BTreeSet::new();
    for fixed in ["localhost", "127.0.0.1", "::1"] {
        names.insert(fixed.to_owned());
    }
    names.insert(config.vault_domain.clone());
    for h in &config.extra_hosts {
        names.insert(h.to_ascii_lowercase());
    }
    if let Some(host) = public_url
        .strip_prefix("https://")
        .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h))
    {
        names.insert(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
        );
    }
    for v in deployment.vaults() {
        names.insert(format!(
            "{}.{}",
            v.name.to_ascii_lowercase(),
            config.vault_domain
        ));
    }
    // `localhost` first: it becomes the certificate's common name.
    let mut out = vec!["localhost".to_owned()];
    out.extend(names.into_iter().filter(|n| n != "localhost"));
    out
}

/// The main listener, bound but not serving yet. Its address and public URL are known, so
/// first-start work that needs them (writing the administrator's `admin.json`) can be done
/// before anything is answered: a client that sees `/health` answer finds the credentials there.
#[derive(Debug)]
pub struct BoundListener {
    listener: TcpListener,
    /// The bound address (the kernel's port when the configuration asked for port 0).
    pub local_addr: SocketAddr,
    /// `https://host:port` of the listener.
    pub public_url: String,
}

/// Binds the main listener of `config`, without serving on it.
pub async fn bind(config: &ServerConfig) -> Result<BoundListener, ServerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{}:{}", config.vault_domain, local_addr.port()));
    Ok(BoundListener {
        listener,
        local_addr,
        public_url,
    })
}

/// Binds every listener and starts serving.
pub async fn start(
    config: ServerConfig,
    deployment: Arc<Deployment>,
) -> Result<RunningServer, ServerError> {
    let main = bind(&config).await?;
    start_on(config, deployment, main).await
}

/// Starts serving on `main`, bound earlier by [`bind`], and binds the other listeners.
pub async fn start_on(
    config: ServerConfig,
    deployment: Arc<Deployment>,
    main: BoundListener,
) -> Result<RunningServer, ServerError> {
    start_with(config, deployment, Main::Bound(main)).await
}

/// Starts serving `deployment` behind `gate`, which already holds the main listener (a
/// deployment just unsealed); the other listeners are bound here. Dropping or shutting down the
/// server does not seal the gate: [`sealed::SealGate::clear`] does.
pub async fn start_behind(
    config: ServerConfig,
    deployment: Arc<Deployment>,
    gate: &Arc<sealed::SealGate>,
) -> Result<RunningServer, ServerError> {
    start_with(config, deployment, Main::Gate(gate)).await
}

/// Where the main listener comes from.
enum Main<'a> {
    Bound(BoundListener),
    Gate(&'a Arc<sealed::SealGate>),
}

async fn start_with(
    config: ServerConfig,
    deployment: Arc<Deployment>,
    main: Main<'_>,
) -> Result<RunningServer, ServerError> {
    if app::UNSECURED_BENCH_BASELINE {
        tracing::error!(
            "UNSECURED BENCHMARK BUILD: no token validation, no access decision, no audit log; \
             built with the feature unsecured-bench-baseline, for measuring their cost only"
        );
    }
    // Nothing is answered before the audit log takes events (and chains what a crash left);
    // `keyshift serve` starts it earlier, before it makes the first start's defaults.
    if deployment.audit_chain().is_none() {
        deployment
            .start_audit()
            .await
            .map_err(|e| ServerError::Audit(e.message))?;
    }
    let (main, gate, local_addr, public_url) = match main {
        Main::Gate(gate) => (
            None,
            Some(gate),
            gate.local_addr(),
            gate.public_url().to_owned(),
        ),
        Main::Bound(b) => (Some(b.listener), None, b.local_addr, b.public_url),
    };
    let now = deployment.clock().now();
    let names = certificate_names(&config, &deployment, &public_url);
    let cert = config.ca.issue_server_cert(&names, now)?;
    let (resolver, tls_config) = match gate {
        Some(gate) => {
            gate.resolver.replace(cert);
            (gate.resolver.clone(), gate.tls.clone())
        }
        None => {
            let resolver = Arc::new(CertResolver::new(cert));
            let tls_config = tls::server_config(resolver.clone())?;
            (resolver, tls_config)
        }
    };
    let issuer = format!("{public_url}/{}/v2.0", deployment.tenant_id());
    let app = Arc::new(App {
        tokens: TokenAuthority::new(
            deployment.clone(),
            issuer,
            config.audience.clone(),
            config.token_lifetime,
        ),
        deployment: deployment.clone(),
        public_url: public_url.clone(),
        vault_domain: config.vault_domain.clone(),
        extra_hosts: config.extra_hosts.clone(),
        release: release::ReleaseSupport::new(config.ca.clone()),
        metrics: Default::default(),
        backup_dir: config.backup_dir.clone(),
    });
    let mut tasks = Vec::new();
    let metrics_addr = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            let router = metrics::router(app.metrics.clone(), deployment.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            }));
            tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
            Some(bound)
        }
    };
    let main_router = app::router(app.clone(), ListenerInfo { vault: None });
    match (main, gate) {
        (Some(main), _) => {
            tasks.push(tokio::spawn(listener::serve(
                main,
                tls_config.clone(),
                main_router,
            )));
            tracing::info!(%public_url, "listening");
        }
        (None, Some(gate)) => {
            gate.install(main_router, app.clone());
            tracing::info!(%public_url, "unsealed: serving");
        }
        (None, None) => {}
    }

    let mut bound_ports = BTreeSet::new();
    bound_ports.insert(local_addr.port());
    let mut known_names = names;
    let mut port_tasks = Vec::new();
    bind_vault_ports(
        &config,
        &app,
        &tls_config,
        &mut bound_ports,
        &mut port_tasks,
    )
    .await;
    tasks.extend(port_tasks);

    // Vaults added while we run (by `keyshift vault create`) get their host name in the
    // certificate and their own port bound without a restart.
    let refresh = {
        let app = app.clone();
        let config = config.clone();
        let public_url = public_url.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(config.refresh_interval);
            // Aborted with this task: a vault port bound here must not outlive the server (a
            // sealed deployment would otherwise live on behind it).
            let mut extra_tasks = AbortOnDrop(Vec::new());
            loop {
                ticker.tick().await;
                if let Err(e) = app.deployment.reload_token_keys().await {
                    tracing::warn!(error = %e, "could not reload the token signing keys");
                }
                if let Err(e) = app.deployment.refresh_vaults().await {
                    tracing::warn!(error = %e, "could not refresh the vault list");
                    continue;
                }
                let names = certificate_names(&config, &app.deployment, &public_url);
                if names != known_names {
                    match config
                        .ca
                        .issue_server_cert(&names, app.deployment.clock().now())
                    {
                        Ok(cert) => {
                            resolver.replace(cert);
                            known_names = names;
                            tracing::info!("server certificate reissued for new vault names");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not reissue the server certificate")
                        }
                    }
                }
                bind_vault_ports(
                    &config,
                    &app,
                    &tls_config,
                    &mut bound_ports,
                    &mut extra_tasks.0,
                )
                .await;
            }
        })
    };
    tasks.push(refresh);

    // What other nodes (or the CLI) change reaches this node's caches within a fraction of a
    // second (`keyshift_vault::Deployment::follow_changes`).
    tasks.push(deployment.follow_changes_every(keyshift_vault::CHANGE_FOLLOW_INTERVAL));

    let maintenance = {
        let deployment = deployment.clone();
        let interval = config.maintenance_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                match deployment.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "purged soft-deleted keys past retention"),
                    Err(e) => tracing::warn!(error = %e, "scheduled purge failed"),
                }
                if let Err(e) = deployment.rotate_due().await {
                    tracing::warn!(error = %e, "scheduled rotation failed");
                }
            }
        })
    };
    tasks.push(maintenance);
    Ok(RunningServer {
        local_addr,
        public_url,
        app,
        metrics_addr,
        tasks,
    })
}

async fn bind_vault_ports(
    config: &ServerConfig,
    app: &Arc<App>,
    tls_config: &Arc<rustls::ServerConfig>,
    bound: &mut BTreeSet<u16>,
    tasks: &mut Vec<JoinHandle<()>>,
) {
    for vault in app.deployment.vaults() {
        let Some(port) = vault.port else { continue };
        if bound.contains(&port) {
            continue;
        }
        let addr = SocketAddr::new(config.listen.ip(), port);
        match TcpListener::bind(addr).await {
            Ok(l) => {
                let tls_config = tls_config.clone();
                bound.insert(port);
                let router = app::router(
                    app.clone(),
                    ListenerInfo {
                        vault: Some(vault.name.clone()),
                    },
                );
                let (router, holder) = held_router(router);
                tasks.push(tokio::spawn(async move {
                    // The router lives as long as the accept loop: connections that outlive it
                    // (keep-alive) answer 503 instead of serving a stopped deployment.
                    let _holder = holder;
                    listener::serve(l, tls_config, router).await
                }));
                tracing::info!(vault = %vault.name, %addr, "vault listening on its own port");
            }
            Err(e) => {
                tracing::error!(vault = %vault.name, %addr, error = %e, "cannot bind the vault's port")
            }
        }
    }
}

/// A router for the accept loop, and the only strong reference to the router it forwards to:
/// its connections hold a weak one, so when the accept loop ends (the server stopped, or sealed)
/// they answer `503` instead of keeping the deployment alive.
fn held_router(router: Router) -> (Router, Arc<Router>) {
    let held = Arc::new(router);
    let weak = Arc::downgrade(&held);
    let forward = Router::new().fallback(move |request: axum::extract::Request| {
        let weak = weak.clone();
        async move {
            use tower::ServiceExt;
            match weak.upgrade() {
                Some(router) => match (*router).clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                None => app::error_response(
                    &keyshift_api::ApiError::new(
                        keyshift_api::ErrorCode::ServiceUnavailable,
                        "This listener has stopped.",
                    )
                    .with_inner("Sealed"),
                ),
            }
        }
    });
    (forward, held)
}

/// Tasks aborted when this is dropped.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
