//! The load generator against a real server (testkit: TLS, tokens, SQLite file): every operation
//! is answered as the generator expects, with no error. What it checks is correctness, not speed.

use keyshift_bench::admin::AdminFile;
use keyshift_bench::load::{self, LoadConfig, LoadOp};
use keyshift_testkit::TestServer;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_load_op_succeeds_against_a_real_server() {
    let server = TestServer::start().await;
    let admin = AdminFile::load(&server.data_dir.join("admin.json")).unwrap();
    for op in [
        LoadOp::Health,
        LoadOp::Wrapkey,
        LoadOp::Encrypt,
        LoadOp::Decrypt,
        LoadOp::Create,
    ] {
        let report = load::run(&LoadConfig {
            admin: admin.clone(),
            url: Some(server.url()),
            op,
            connections: 2,
            duration: Duration::from_millis(500),
            warmup: Duration::ZERO,
            server_pid: Some(std::process::id()),
        })
        .await
        .unwrap();
        assert_eq!(report.errors, 0, "{}: {:?}", op.name(), report.first_error);
        assert!(report.ops > 0, "{}: no operation completed", op.name());
        assert!(report.latency.is_some());
    }
}

#[tokio::test]
async fn a_wrong_secret_is_refused_before_any_load() {
    let server = TestServer::start().await;
    let mut admin = AdminFile::load(&server.data_dir.join("admin.json")).unwrap();
    admin.client_secret = "not-the-secret".into();
    let e = load::run(&LoadConfig {
        admin,
        url: None,
        op: LoadOp::Wrapkey,
        connections: 1,
        duration: Duration::from_millis(100),
        warmup: Duration::ZERO,
        server_pid: None,
    })
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("401"), "{e:#}");
}
