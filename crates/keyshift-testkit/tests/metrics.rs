//! `/metrics` on its own plain-HTTP listener: request counters by operation and status, the latency
//! histogram, the key cache, store errors; and not on the TLS listener.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_testkit::{settings, v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The value of the sample `name` (with its labels, as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(s: &TestServer) -> String {
    let addr = s.started.server.metrics_addr.expect("metrics listener");
    let response = s
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_requests_latency_and_the_key_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(&dir.path().join("data"));
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let s = TestServer::start_with(config).await;

    let before = scrape(&s).await;
    assert_eq!(sample(&before, "keyshift_store_errors_total"), Some(0.0));
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/m/create"),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    for _ in 0..5 {
        let (st, _) = s
            .call(
                Method::POST,
                &v("/keys/m//wrapkey"),
                Some(json!({"alg": "A256KW", "value": b64::encode(&[1; 32])})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, _) = s.call(Method::GET, &v("/keys/missing"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // The admin API is counted too, by its audit operation name.
    let r = s
        .http
        .get(format!(
            "{}/{}/keyshift/principals",
            s.url(),
            s.admin.tenant_id
        ))
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let after = scrape(&s).await;
    assert_eq!(
        sample(
            &after,
            r#"keyshift_requests_total{operation="PrincipalList",status="200"}"#
        ),
        Some(1.0),
        "{after}"
    );
    let wraps = r#"keyshift_requests_total{operation="KeyWrap",status="200"}"#;
    assert_eq!(sample(&after, wraps), Some(5.0), "{after}");
    assert_eq!(
        sample(
            &after,
            r#"keyshift_requests_total{operation="KeyCreate",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"keyshift_requests_total{operation="KeyGet",status="404"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"keyshift_request_duration_seconds_count{operation="KeyWrap"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"keyshift_request_duration_seconds_bucket{operation="KeyWrap",le="+Inf"}"#
        ),
        Some(5.0)
    );
    // The first wrap unsealed the key; the other four found it in memory.
    let hits = sample(&after, "keyshift_key_cache_hits_total").unwrap()
        - sample(&before, "keyshift_key_cache_hits_total").unwrap();
    let misses = sample(&after, "keyshift_key_cache_misses_total").unwrap()
        - sample(&before, "keyshift_key_cache_misses_total").unwrap();
    assert_eq!((hits, misses), (4.0, 1.0), "{after}");
    assert!(sample(&after, "keyshift_key_cache_entries").unwrap() >= 1.0);
    assert_eq!(sample(&after, "keyshift_hsm_attached"), Some(0.0));

    // Unsealed material leaves memory when its key is disabled or deleted, and a disabled key's
    // refused operations do not bring it back.
    let entries = |text: &str| sample(text, "keyshift_key_cache_entries").unwrap();
    let wrap = || async {
        s.call(
            Method::POST,
            &v("/keys/m//wrapkey"),
            Some(json!({"alg": "A256KW", "value": b64::encode(&[1; 32])})),
        )
        .await
        .0
    };
    assert_eq!(entries(&after), 1.0);
    let disable = json!({"attributes": {"enabled": false}});
    let (st, _) = s.call(Method::PATCH, &v("/keys/m/"), Some(disable)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(entries(&scrape(&s).await), 0.0);
    assert_eq!(wrap().await, StatusCode::FORBIDDEN);
    assert_eq!(
        entries(&scrape(&s).await),
        0.0,
        "a refused key is not cached"
    );
    let enable = json!({"attributes": {"enabled": true}});
    let (st, _) = s.call(Method::PATCH, &v("/keys/m/"), Some(enable)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(wrap().await, StatusCode::OK);
    assert_eq!(entries(&scrape(&s).await), 1.0);
    let (st, _) = s.call(Method::DELETE, &v("/keys/m"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(entries(&scrape(&s).await), 0.0, "deleted");

    // Not served on the TLS listener, where tokens are needed.
    let (st, _) = s.call(Method::GET, "/metrics", None).await;
    assert_ne!(st, StatusCode::OK);
}

#[tokio::test]
async fn no_metrics_listener_unless_asked() {
    let s = TestServer::start().await;
    assert!(s.started.server.metrics_addr.is_none());
}
