//! No secret or token in the client's logs or `Debug` output, after a real exchange with a real
//! Keyshift.
//!
//! This test is alone in its binary on purpose: it installs a global subscriber before anything
//! logs. A thread-scoped subscriber in a binary whose other tests log from other threads is
//! fragile: tracing caches each log call's interest the first time it is reached, and a call
//! first reached on another thread can stay cached as of interest to nobody (it failed once so
//! in a full run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_client::keyshift_api::keys::KeyCreateParameters;
use keyshift_client::{ClientSecretCredential, KeyClient, VaultUrl};
use keyshift_testkit::TestServer;
use std::sync::{Arc, Mutex};

fn vault(s: &TestServer) -> VaultUrl {
    VaultUrl::parse(&s.url()).unwrap()
}

fn create(kty: &str) -> KeyCreateParameters {
    KeyCreateParameters {
        kty: Some(kty.into()),
        ..KeyCreateParameters::default()
    }
}

/// Collects everything logged, to show that no secret or token is in it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_or_token_in_logs_or_debug_output() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let s = TestServer::start().await;
    let credential = ClientSecretCredential::with_token_url(
        &s.admin.token_url,
        &s.admin.client_id,
        &s.admin.client_secret,
    )
    .ca_pem(Some(s.ca_pem()))
    .system_roots(false)
    .build()
    .unwrap();
    let c = KeyClient::builder()
        .credential(Arc::new(credential.clone()))
        .ca_pem(Some(s.ca_pem()))
        .system_roots(false)
        .build()
        .unwrap();
    let v = vault(&s);
    c.create_key(&v, "logged", &create("oct-HSM"))
        .await
        .unwrap();
    let e = c.get_key(&v, "absent", None).await.unwrap_err();
    use keyshift_client::TokenCredential;
    let token = credential
        .token("https://localhost/.default")
        .await
        .unwrap();
    let debug = format!("{c:?} {credential:?} {token:?} {e:?} {e}");
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("requesting a token"),
        "client logs were captured"
    );
    for text in [&debug, &logs] {
        assert!(!text.contains(&s.admin.client_secret));
        assert!(!text.contains(token.secret()));
        assert!(!text.contains(s.token()));
    }
}
