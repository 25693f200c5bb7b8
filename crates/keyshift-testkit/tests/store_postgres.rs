//! Keyshift with its records in PostgreSQL, end to end: a real server on a real PostgreSQL (its
//! URL in `KEYSHIFT_TEST_POSTGRES_URL`; `scripts/test.sh` and `.ci/run` start one with
//! `scripts/postgres-test-server.sh`), restarted on the same database.
//!
//! Without `KEYSHIFT_TEST_POSTGRES_URL` the test says it is skipped and passes, unless
//! `KEYSHIFT_REQUIRE_POSTGRES=1` (CI), where it fails. It works in a schema of its own, dropped at
//! the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_cli::config::StoreUrl;
use keyshift_testkit::{v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use keyshift_testkit::postgres::{database_url, split_password, Schema};

#[tokio::test]
async fn a_server_on_postgres_keeps_its_keys_across_a_restart() {
    let Some(url) = database_url("the server-on-PostgreSQL test") else {
        return;
    };
    let schema = Schema::create(&url, "ks_server").await;
    restart_scenario(&url, &schema.name).await;
}

async fn restart_scenario(url: &str, schema: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (bare_url, password) = split_password(url);
    let password_file = dir.path().join("pg-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut settings = keyshift_testkit::settings(&data);
    settings.store.url = Some(StoreUrl::new(format!(
        "{bare_url}?options[search_path]={schema}"
    )));
    settings.store.password_file = Some(password_file);

    let (version, ciphertext, addr) = {
        let s = TestServer::start_with(settings.clone()).await;
        let location = &s.started.data_dir.store_location;
        assert!(location.starts_with("postgres://"), "{location}");
        assert!(!location.contains(&password), "no password in {location}");
        let (st, key) = s
            .call(
                Method::POST,
                &v("/keys/on-postgres/create"),
                Some(json!({"kty": "RSA", "key_size": 2048})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{key}");
        let (st, enc) = s
            .call(
                Method::POST,
                &v("/keys/on-postgres//encrypt"),
                Some(json!({"alg": "RSA-OAEP-256", "value": "aGVsbG8"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{enc}");
        let version = enc["kid"].as_str().unwrap().rsplit('/').next().unwrap();
        (version.to_owned(), enc["value"].clone(), s.addr())
    };
    assert!(
        !data.join("keyshift.db").exists(),
        "the records went to PostgreSQL, not to a SQLite file"
    );
    assert_records_in(url, schema, "key", 1).await;

    // Same address: the token issuer is named by its URL.
    tokio::time::sleep(Duration::from_millis(100)).await;
    settings.listen = addr;
    let s = TestServer::start_with(settings.clone()).await;
    let (st, key) = s.call(Method::GET, &v("/keys/on-postgres"), None).await;
    assert_eq!(st, StatusCode::OK, "{key}");
    assert!(key["key"]["kid"].as_str().unwrap().ends_with(&version));
    let (st, dec) = s
        .call(
            Method::POST,
            &v(&format!("/keys/on-postgres/{version}/decrypt")),
            Some(json!({"alg": "RSA-OAEP-256", "value": ciphertext})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{dec}");
    assert_eq!(dec["value"], "aGVsbG8", "the restarted server uses the key");

    // The data directory belongs to the PostgreSQL deployment: opened without the URL, it would
    // start an empty SQLite deployment under the same admin.json, so it is refused.
    let mut without_url = settings.clone();
    without_url.store = Default::default();
    without_url.listen = "127.0.0.1:0".parse().unwrap();
    let err = keyshift_cli::serve::start(&without_url).await.unwrap_err();
    assert!(format!("{err:#}").contains("--store-url"), "{err:#}");
    assert!(!data.join("keyshift.db").exists());
}

/// Checks that `ns` holds `count` records in the schema's `records` table.
async fn assert_records_in(url: &str, schema: &str, ns: &str, count: i64) {
    let pool = PgPoolOptions::new()
        // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
        // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
        .idle_timeout(None)
        .max_lifetime(None)
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.records WHERE ns = $1"
    ))
    .bind(ns)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, count, "records of {ns} in PostgreSQL");
    pool.close().await;
}
