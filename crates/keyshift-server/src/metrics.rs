//! `/metrics`: Prometheus text exposition (format 0.0.4) of requests by operation and status,
//! their latency, the key cache, store errors and the audit log, served on a listener of its own
//! (`--metrics-listen`, plain HTTP, off by default: bind it to loopback or a scrape network).
//! Counters are of this process since it started.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyshift_vault::Deployment;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Counts per bucket, not cumulative (made cumulative when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

/// Request counters of the keys API.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, operation: &str, status: u16, seconds: f64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner
            .requests
            .entry((operation.to_owned(), status))
            .or_default() += 1;
        let h = inner.latency.entry(operation.to_owned()).or_default();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The exposition text, with `deployment`'s counters.
    pub fn render(&self, deployment: &Deployment) -> String {
        let (requests, latency) = {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            (inner.requests.clone(), inner.latency.clone())
        };
        let mut out = String::new();
        out.push_str(
            "# HELP keyshift_requests_total Keys API and admin API requests answered, by operation and HTTP status.\n\
             # TYPE keyshift_requests_total counter\n",
        );
        for ((operation, status), n) in &requests {
            let _ = writeln!(
                out,
                "keyshift_requests_total{{operation=\"{}\",status=\"{status}\"}} {n}",
                escape(operation)
            );
        }
        out.push_str(
            "# HELP keyshift_request_duration_seconds Time to answer a keys API request, audit \
             included.\n# TYPE keyshift_request_duration_seconds histogram\n",
        );
        for (operation, h) in &latency {
            let op = escape(operation);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "keyshift_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "keyshift_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}\n\
                 keyshift_request_duration_seconds_sum{{operation=\"{op}\"}} {}\n\
                 keyshift_request_duration_seconds_count{{operation=\"{op}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let s = deployment.stats();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "keyshift_key_cache_hits_total",
            "counter",
            "Crypto operations that found their key version unsealed in memory.",
            s.key_cache_hits,
        );
        metric(
            "keyshift_key_cache_misses_total",
            "counter",
            "Crypto operations that read and unsealed their key version (or opened it in the HSM) first.",
            s.key_cache_misses,
        );
        metric(
            "keyshift_key_cache_entries",
            "gauge",
            "Key versions held unsealed in memory.",
            s.key_cache_entries,
        );
        metric(
            "keyshift_store_errors_total",
            "counter",
            "Store failures, conflicts excluded.",
            s.store_errors,
        );
        metric(
            "keyshift_store_conflicts_total",
            "counter",
            "Store write conflicts (concurrent changes).",
            s.store_conflicts,
        );
        metric(
            "keyshift_hsm_attached",
            "gauge",
            "1 when an HSM holds -HSM keys.",
            u64::from(s.hsm_attached),
        );
        metric(
            "keyshift_vaults",
            "gauge",
            "Vaults served.",
            deployment.vaults().len() as u64,
        );
        out
    }
}

/// Label values: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics listener's router.
pub fn router(metrics: Arc<Metrics>, deployment: Arc<Deployment>) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state((metrics, deployment))
}

async fn serve(State((metrics, deployment)): State<(Arc<Metrics>, Arc<Deployment>)>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(&deployment),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_buckets_and_labels_are_escaped() {
        let m = Metrics::default();
        m.observe("KeyWrap", 200, 0.0007);
        m.observe("KeyWrap", 200, 0.003);
        m.observe("Key\"Odd", 400, 20.0);
        let inner = m.inner.lock().unwrap();
        assert_eq!(inner.requests[&("KeyWrap".to_owned(), 200)], 2);
        let h = &inner.latency["KeyWrap"];
        assert_eq!((h.buckets[1], h.buckets[3], h.count), (1, 1, 2));
        // Beyond the last bound: only in +Inf (the count).
        assert_eq!(inner.latency["Key\"Odd"].buckets.iter().sum::<u64>(), 0);
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
