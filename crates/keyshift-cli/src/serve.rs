//! `keyshift serve`.

use crate::config::{CommonArgs, ServeArgs, Settings};
use crate::datadir::{self, AdminCredentials};
use anyhow::Result;
use keyshift_server::{RunningServer, ServerConfig};
use std::time::Duration;

/// A started server and what first start created.
#[derive(Debug)]
pub struct Started {
    /// The server.
    pub server: RunningServer,
    /// Administrator credentials, when created by this start.
    pub admin: Option<AdminCredentials>,
    /// The data directory.
    pub data_dir: datadir::DataDir,
}

/// Opens the data directory and starts the server.
pub async fn start(settings: &Settings) -> Result<Started> {
    let data_dir = datadir::open(settings).await?;
    datadir::use_audit_chain(&data_dir)?;
    // The audit writer first: the defaults a first start makes are events on this node's chain.
    data_dir
        .deployment
        .start_audit()
        .await
        .map_err(|e| anyhow::anyhow!("the audit log cannot start: {}", e.message))?;
    let config = server_config(settings, data_dir.ca.clone());
    // Bound first, serving last: on a first start the default vault, the administrator and
    // admin.json exist before anything is answered, so whoever sees `/health` answer finds them.
    let main = keyshift_server::bind(&config).await?;
    let admin = datadir::ensure_defaults(&data_dir, settings, &main.public_url).await?;
    let server = keyshift_server::start_on(config, data_dir.deployment.clone(), main).await?;
    // Tell `keyshift vault create` on this data directory where the server answers.
    let serving =
        serde_json::json!({"public_url": server.public_url, "port": server.local_addr.port()});
    datadir::write_private_file(
        &data_dir.path.join("serving.json"),
        &serde_json::to_vec_pretty(&serving)?,
    )?;
    Ok(Started {
        server,
        admin,
        data_dir,
    })
}

/// The server's settings.
pub(crate) fn server_config(
    settings: &Settings,
    ca: keyshift_server::tls::LocalCa,
) -> ServerConfig {
    ServerConfig {
        listen: settings.listen,
        public_url: settings.public_url.clone(),
        vault_domain: settings.vault_domain.clone(),
        audience: settings.token_audience.clone(),
        token_lifetime: settings.token_lifetime_seconds,
        extra_hosts: settings.extra_hosts.clone(),
        ca,
        maintenance_interval: Duration::from_secs(settings.maintenance_interval_seconds.max(1)),
        refresh_interval: Duration::from_secs(2),
        metrics_listen: settings.metrics_listen,
        backup_dir: settings.backup_dir.clone(),
    }
}

pub(crate) fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Runs until interrupted.
pub async fn run(common: &CommonArgs, args: &ServeArgs) -> Result<()> {
    let settings = Settings::resolve(common, args)?;
    init_logging(&settings.log);
    if !settings.root_shares.is_empty() {
        anyhow::bail!(
            "`serve` takes no --root-share: a split root's server starts sealed and is given the \
             shares with `keyshift unseal`"
        );
    }
    if let Some(crate::seal_cmd::RootMode::Shamir(_)) =
        crate::seal_cmd::read_root_mode(&settings.data_dir)?
    {
        let (sealed, opener) = crate::seal_cmd::SealedServer::start(&settings).await?;
        println!(
            "Keyshift is listening at {}, sealed: give the shares with `keyshift unseal`",
            sealed.gate().public_url()
        );
        tokio::select! {
            _ = opener.run() => {}
            _ = shutdown_signal() => {}
        }
        println!("Keyshift stopped.");
        return Ok(());
    }
    let started = start(&settings).await?;
    let admin_path = started.data_dir.path.join("admin.json");
    println!(
        "Keyshift is serving the default vault at {}",
        started.server.public_url
    );
    println!(
        "Trust the CA at {}",
        started.data_dir.ca_cert_path.display()
    );
    println!("Records are kept in {}", started.data_dir.store_location);
    if let Some(admin) = &started.admin {
        println!(
            "Administrator created: client_id {} (secret and token URL in {}, shown once; keep it safe)",
            admin.client_id,
            admin_path.display()
        );
    }
    shutdown_signal().await;
    println!("Keyshift stopped.");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
