//! `keyshift serve` on an empty data directory: what a script waiting for `/health` may rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_cli::config::{CommonArgs, ServeArgs, Settings};
use keyshift_cli::datadir::AdminCredentials;
use std::time::{Duration, Instant};

/// A script that starts the server and waits for `/health` then reads `admin.json`. On a first
/// start, `/health` must not answer before the administrator and its `admin.json` exist. Before
/// the listener was bound ahead of serving, it answered while the administrator was being made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_only_once_admin_json_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A free port known in advance, so that the poller below can race the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let common = CommonArgs {
        data_dir: Some(data.clone()),
        ..CommonArgs::default()
    };
    let args = ServeArgs {
        listen: Some(([127, 0, 0, 1], port).into()),
        ..ServeArgs::default()
    };
    let settings = Settings::resolve(&common, &args).unwrap();
    // The data directory made (root key, store, CA) but not started: no vault, no
    // administrator yet. Its CA lets the poller below be ready before the server binds.
    drop(keyshift_cli::datadir::open(&settings).await.unwrap());
    assert!(!data.join("admin.json").exists());
    let ca = std::fs::read_to_string(data.join("tls").join("ca.pem")).unwrap();
    let http = keyshift_testkit::https_client(&ca, ([127, 0, 0, 1], port).into(), &[]);
    let poller = {
        let data = data.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut polls = 0u32;
            loop {
                polls += 1;
                let answered = http
                    .get(format!("https://localhost:{port}/health"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if answered {
                    // What the script would read next.
                    let admin = std::fs::read(data.join("admin.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<AdminCredentials>(&b).ok());
                    return (admin, polls);
                }
                assert!(Instant::now() < deadline, "/health did not answer in 60 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let started = keyshift_cli::serve::start(&settings).await.unwrap();
    let (admin, polls) = poller.await.unwrap();
    let admin = admin.expect("/health answered before admin.json was complete");
    assert!(
        polls > 1,
        "the poller was not polling before the server listened"
    );
    assert_eq!(
        Some(admin.client_id.as_str()),
        started.admin.as_ref().map(|a| a.client_id.as_str()),
        "admin.json names the administrator this start created"
    );
    started.server.shutdown().await;
}
