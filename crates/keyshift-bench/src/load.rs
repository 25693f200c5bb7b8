//! The load generator: N tokio tasks, each with one keep-alive HTTP/1.1 connection over TLS,
//! sending one operation after another for a fixed time after a warm-up.
//!
//! Honesty rules: an operation counts only when its response has the expected status and its
//! body holds the expected field (for `wrapkey` and `decrypt`, the exact expected value); anything
//! else is an error, counted over the whole run (warm-up included) and reported. Throughput is
//! the number of good responses completed inside the measured window over its length; latency is
//! from just before the request is built to the last byte of the response.

use crate::admin::AdminFile;
use crate::client::{split_url, Connection, Connector};
use crate::cpu::{self, CpuUse};
use crate::latency::{summarise, to_micros, LatencySummary};
use crate::API_VERSION;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The oct-HSM key used by `wrapkey` and `encrypt`.
pub const AES_KEY: &str = "bench-aes";
/// The RSA key used by `decrypt`.
pub const RSA_KEY: &str = "bench-rsa";
/// The RSA-HSM key `sign` uses.
pub const RSA_HSM_KEY: &str = "bench-rsa-hsm";
/// The target key of `rewrap`.
pub const TARGET_KEY: &str = "bench-aes-target";
/// Items per `rewrap` request.
pub const REWRAP_ITEMS: usize = 1000;

/// An operation the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadOp {
    /// `POST /keys/bench-aes//wrapkey`, A256KW of 32 random bytes.
    Wrapkey,
    /// `POST /keys/bench-aes//encrypt`, A256GCM of 64 random bytes.
    Encrypt,
    /// `POST /keys/bench-rsa//decrypt`, RSA-OAEP-256 of one ciphertext of a 32-byte value.
    Decrypt,
    /// `POST /keys/<distinct name>/create`, an EC P-256 key: one durable commit each.
    Create,
    /// `GET /health`: no token, no JSON parsing, no crypto. The cost of TLS, HTTP and the
    /// generator alone, to tell where time goes.
    Health,
    /// `POST /keys/bench-aes//rewrap`: the same 1,000 A256KW-wrapped keys each time, moved to
    /// `bench-aes-target` (the rewrap extension). One op is 1,000 items.
    Rewrap,
    /// `POST /keys/bench-rsa-hsm//sign`, RS256 of a 32-byte digest with an RSA-HSM 2048-bit
    /// key: in the HSM when the server has one attached.
    Sign,
}

impl LoadOp {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            LoadOp::Wrapkey => "wrapkey",
            LoadOp::Encrypt => "encrypt",
            LoadOp::Decrypt => "decrypt",
            LoadOp::Create => "create",
            LoadOp::Health => "health",
            LoadOp::Rewrap => "rewrap",
            LoadOp::Sign => "sign",
        }
    }
}

/// What one load run does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Credentials and CA of the server.
    pub admin: AdminFile,
    /// Vault URL; `admin.vault_url` when `None`.
    pub url: Option<String>,
    /// The operation.
    pub op: LoadOp,
    /// Concurrent connections, one task each.
    pub connections: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// The server's process id, to report its CPU use over the window.
    pub server_pid: Option<u32>,
}

/// The outcome of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The operation.
    pub op: LoadOp,
    /// Concurrent connections.
    pub connections: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Good responses completed inside the window.
    pub ops: u64,
    /// Failed requests over the whole run, warm-up included.
    pub errors: u64,
    /// Latency of the good responses inside the window.
    pub latency: Option<LatencySummary>,
    /// The first failure seen, for the operator.
    pub first_error: Option<String>,
    /// CPU use over the measured window, where `/proc` is readable.
    pub cpu: Option<CpuUse>,
}

impl LoadReport {
    /// Good operations per second over the measured window.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.duration.as_secs_f64()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.3}", d.as_secs_f64() * 1e3),
            )
        };
        write!(
            f,
            "load op={} connections={} seconds={} ops={} ops_per_sec={:.0} p50_ms={} p99_ms={} max_ms={} errors={}",
            self.op.name(),
            self.connections,
            self.duration.as_secs_f64(),
            self.ops,
            self.ops_per_sec(),
            ms(self.latency.map(|l| l.p50)),
            ms(self.latency.map(|l| l.p99)),
            ms(self.latency.map(|l| l.max)),
            self.errors,
        )?;
        match &self.cpu {
            Some(cpu) => write!(f, " {cpu}"),
            None => Ok(()),
        }
    }
}

/// The request each task sends, and what a good response looks like.
#[derive(Debug)]
struct Workload {
    method: Method,
    /// The path and query; for `create`, the key name prefix instead.
    target: Target,
    body: Bytes,
    host: HeaderValue,
    bearer: Option<HeaderValue>,
    /// Bytes a good response body contains.
    expect: Vec<u8>,
    /// Bytes a good response body does not contain.
    forbid: Option<Vec<u8>>,
}

#[derive(Debug)]
enum Target {
    Fixed(String),
    CreatePrefix(String),
}

impl Workload {
    fn request(&self, task: usize, seq: u64) -> Result<Request<Full<Bytes>>> {
        let path = match &self.target {
            Target::Fixed(p) => p.clone(),
            Target::CreatePrefix(prefix) => {
                format!("/keys/{prefix}-{task}-{seq}/create?api-version={API_VERSION}")
            }
        };
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(bearer) = &self.bearer {
            builder = builder.header(AUTHORIZATION, bearer.clone());
        }
        if !self.body.is_empty() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }

    fn is_good(&self, status: StatusCode, body: &[u8]) -> bool {
        status == StatusCode::OK
            && contains(body, &self.expect)
            && self.forbid.as_ref().is_none_or(|f| !contains(body, f))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random(len: usize) -> Result<Vec<u8>> {
    keyshift_crypto::random_bytes(len).map_err(|e| anyhow!("random bytes: {e}"))
}

/// A connection for the set-up calls, which are not measured.
struct Setup<'a> {
    connection: Connection,
    host: &'a HeaderValue,
    bearer: &'a HeaderValue,
}

impl Setup<'_> {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let path = format!("{path}?api-version={API_VERSION}");
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.bearer.clone());
        let body = match body {
            Some(v) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&v)?)
            }
            None => Bytes::new(),
        };
        let (status, bytes) = self
            .connection
            .send(builder.body(Full::new(body))?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(snippet(&bytes)))
        };
        Ok((status, value))
    }

    async fn call_ok(&mut self, method: Method, path: &str, body: Value) -> Result<Value> {
        let (status, value) = self.call(method.clone(), path, Some(body)).await?;
        if status != StatusCode::OK {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// Creates `name` with `create` unless it exists.
    async fn ensure_key(&mut self, name: &str, create: Value) -> Result<()> {
        let (status, value) = self
            .call(Method::GET, &format!("/keys/{name}"), None)
            .await?;
        match status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => {
                self.call_ok(Method::POST, &format!("/keys/{name}/create"), create)
                    .await?;
                Ok(())
            }
            _ => bail!("GET /keys/{name} answered {status}: {value}"),
        }
    }
}

fn value_field(v: &Value) -> Result<&str> {
    v["value"]
        .as_str()
        .ok_or_else(|| anyhow!("the answer has no value: {v}"))
}

/// Sets up the keys `op` needs and returns what each task sends.
async fn prepare(op: LoadOp, setup: &mut Setup<'_>) -> Result<Workload> {
    let op_path = |key: &str, op: &str| format!("/keys/{key}//{op}?api-version={API_VERSION}");
    let aes = json!({"kty": "oct-HSM", "key_size": 256});
    let rsa = json!({"kty": "RSA", "key_size": 2048});
    let (method, target, body, expect) = match op {
        LoadOp::Wrapkey => {
            setup.ensure_key(AES_KEY, aes).await?;
            let body = json!({"alg": "A256KW", "value": b64(&random(32)?)});
            // A256KW is deterministic: every answer must carry the same wrapped key.
            let first = setup
                .call_ok(
                    Method::POST,
                    &format!("/keys/{AES_KEY}//wrapkey"),
                    body.clone(),
                )
                .await?;
            let wrapped = value_field(&first)?.to_owned();
            (
                Method::POST,
                Target::Fixed(op_path(AES_KEY, "wrapkey")),
                body,
                format!("\"{wrapped}\""),
            )
        }
        LoadOp::Encrypt => {
            setup.ensure_key(AES_KEY, aes).await?;
            let body = json!({"alg": "A256GCM", "value": b64(&random(64)?)});
            // A fresh IV each time: the answer differs, but must hold a tag.
            (
                Method::POST,
                Target::Fixed(op_path(AES_KEY, "encrypt")),
                body,
                "\"tag\"".to_owned(),
            )
        }
        LoadOp::Decrypt => {
            setup.ensure_key(RSA_KEY, rsa).await?;
            let plain = b64(&random(32)?);
            let encrypted = setup
                .call_ok(
                    Method::POST,
                    &format!("/keys/{RSA_KEY}//encrypt"),
                    json!({"alg": "RSA-OAEP-256", "value": plain}),
                )
                .await?;
            let body = json!({"alg": "RSA-OAEP-256", "value": value_field(&encrypted)?});
            // Every answer must give back the plaintext.
            (
                Method::POST,
                Target::Fixed(op_path(RSA_KEY, "decrypt")),
                body,
                format!("\"{plain}\""),
            )
        }
        LoadOp::Create => {
            let mut prefix = String::from("bench-ec-");
            for b in random(4)? {
                let _ = write!(prefix, "{b:02x}");
            }
            let body = json!({"kty": "EC", "crv": "P-256"});
            (
                Method::POST,
                Target::CreatePrefix(prefix),
                body,
                "\"kid\"".to_owned(),
            )
        }
        LoadOp::Sign => {
            setup
                .ensure_key(RSA_HSM_KEY, json!({"kty": "RSA-HSM", "key_size": 2048}))
                .await?;
            // PKCS#1 v1.5 signatures are deterministic: every answer carries the same one.
            let body = json!({"alg": "RS256", "value": b64(&random(32)?)});
            let first = setup
                .call_ok(
                    Method::POST,
                    &format!("/keys/{RSA_HSM_KEY}//sign"),
                    body.clone(),
                )
                .await?;
            let signature = value_field(&first)?.to_owned();
            (
                Method::POST,
                Target::Fixed(op_path(RSA_HSM_KEY, "sign")),
                body,
                format!("\"{signature}\""),
            )
        }
        LoadOp::Health => (
            Method::GET,
            Target::Fixed("/health".to_owned()),
            Value::Null,
            "\"ok\"".to_owned(),
        ),
        LoadOp::Rewrap => {
            setup.ensure_key(AES_KEY, aes.clone()).await?;
            setup.ensure_key(TARGET_KEY, aes).await?;
            let target = setup
                .call(Method::GET, &format!("/keys/{TARGET_KEY}"), None)
                .await?
                .1["key"]["kid"]
                .as_str()
                .ok_or_else(|| anyhow!("no kid for {TARGET_KEY}"))?
                .to_owned();
            let mut items = Vec::with_capacity(REWRAP_ITEMS);
            for _ in 0..REWRAP_ITEMS {
                let wrapped = setup
                    .call_ok(
                        Method::POST,
                        &format!("/keys/{AES_KEY}//wrapkey"),
                        json!({"alg": "A256KW", "value": b64(&random(32)?)}),
                    )
                    .await?;
                items.push(json!({"value": value_field(&wrapped)?}));
            }
            let body = json!({"target": target, "sourceAlg": "A256KW", "targetAlg": "A256KW", "items": items});
            (
                Method::POST,
                Target::Fixed(op_path(AES_KEY, "rewrap")),
                body,
                format!("\"target\":\"{target}\""),
            )
        }
    };
    Ok(Workload {
        method,
        target,
        body: if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(&body)?)
        },
        host: setup.host.clone(),
        bearer: (op != LoadOp::Health).then(|| setup.bearer.clone()),
        expect: expect.into_bytes(),
        forbid: (op == LoadOp::Rewrap).then(|| b"\"error\"".to_vec()),
    })
}

/// What one task saw.
#[derive(Debug, Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl TaskResult {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// The window of a run.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

async fn drive(
    connection: Connection,
    connector: Connector,
    workload: Arc<Workload>,
    task: usize,
    window: Window,
) -> TaskResult {
    let mut result = TaskResult {
        latencies_us: Vec::with_capacity(1 << 14),
        ..TaskResult::default()
    };
    let mut connection = Some(connection);
    let mut seq = 0u64;
    loop {
        let start = Instant::now();
        if start >= window.end {
            return result;
        }
        // A connection the server closed after a good answer is reopened, not counted.
        let c = match connection.as_mut().filter(|c| c.is_open()) {
            Some(c) => c,
            None => match connector.connect().await {
                Ok(c) => connection.insert(c),
                Err(e) => {
                    result.error(format!("reconnect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let request = match workload.request(task, seq) {
            Ok(r) => r,
            Err(e) => {
                result.error(format!("building the request: {e:#}"));
                return result;
            }
        };
        seq += 1;
        let outcome = c.send(request).await;
        let finish = Instant::now();
        match outcome {
            Ok((status, body)) if workload.is_good(status, &body) => {
                if finish >= window.measure_from && finish <= window.end {
                    result.latencies_us.push(to_micros(finish - start));
                }
            }
            Ok((status, body)) => result.error(format!("{status}: {}", snippet(&body))),
            Err(e) => {
                result.error(format!("{e:#}"));
                connection = None;
            }
        }
    }
}

/// Runs the load and reports. Set-up (token, keys, connections) happens before the clock starts.
pub async fn run(config: &LoadConfig) -> Result<LoadReport> {
    if config.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let ca = config.admin.ca_pem()?;
    let base = config.url.as_deref().unwrap_or(&config.admin.vault_url);
    let (origin, _) = split_url(base)?;
    let connector = Connector::new(&origin, &ca).await?;
    let token = config.admin.fetch_token(&ca).await?;
    let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
    bearer.set_sensitive(true);
    let host = connector.authority().clone();
    let mut setup = Setup {
        connection: connector.connect().await?,
        host: &host,
        bearer: &bearer,
    };
    let workload = Arc::new(prepare(config.op, &mut setup).await?);
    drop(setup);

    let mut connections = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        connections.push(connector.connect().await?);
    }
    let started = Instant::now();
    let window = Window {
        measure_from: started + config.warmup,
        end: started + config.warmup + config.duration,
    };
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(task, connection)| {
            tokio::spawn(drive(
                connection,
                connector.clone(),
                workload.clone(),
                task,
                window,
            ))
        })
        .collect();
    let server_pid = config.server_pid;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_from.into()).await;
        let first = cpu::sample(server_pid);
        tokio::time::sleep_until(window.end.into()).await;
        let last = cpu::sample(server_pid);
        cpu::between(&first?, &last?)
    });
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let r = task.await.context("a load task failed")?;
        latencies.extend_from_slice(&r.latencies_us);
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let cpu = sampler.await.context("the CPU sampler failed")?;
    Ok(LoadReport {
        op: config.op,
        connections: config.connections,
        duration: config.duration,
        ops: latencies.len() as u64,
        errors,
        latency: summarise(&mut latencies),
        first_error,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_expected_status_and_body_count() {
        let w = Workload {
            method: Method::POST,
            target: Target::Fixed("/keys/k//wrapkey".into()),
            body: Bytes::new(),
            host: HeaderValue::from_static("localhost:1"),
            bearer: None,
            expect: b"\"abc\"".to_vec(),
            forbid: None,
        };
        assert!(w.is_good(StatusCode::OK, br#"{"value":"abc"}"#));
        assert!(!w.is_good(StatusCode::OK, br#"{"value":"abd"}"#));
        assert!(!w.is_good(StatusCode::UNAUTHORIZED, br#"{"value":"abc"}"#));
        assert!(!w.is_good(StatusCode::NO_CONTENT, b""));
        let rewrap = Workload {
            forbid: Some(b"\"error\"".to_vec()),
            expect: b"\"target\"".to_vec(),
            ..w
        };
        assert!(rewrap.is_good(StatusCode::OK, br#"{"target":"t","items":[{"value":"a"}]}"#));
        assert!(!rewrap.is_good(
            StatusCode::OK,
            br#"{"target":"t","items":[{"error":{"code":"BadParameter"}}]}"#
        ));
    }

    #[test]
    fn create_names_are_distinct() {
        let w = Workload {
            method: Method::POST,
            target: Target::CreatePrefix("bench-ec-00".into()),
            body: Bytes::new(),
            host: HeaderValue::from_static("localhost:1"),
            bearer: None,
            expect: Vec::new(),
            forbid: None,
        };
        let a = w.request(0, 1).unwrap();
        let b = w.request(1, 0).unwrap();
        let c = w.request(0, 10).unwrap();
        assert_eq!(a.uri().path(), "/keys/bench-ec-00-0-1/create");
        assert_ne!(a.uri(), b.uri());
        assert_ne!(a.uri(), c.uri());
    }

    #[test]
    fn finds_expected_bytes() {
        assert!(contains(br#"{"value":"abc","kid":"x"}"#, b"\"abc\""));
        assert!(!contains(br#"{"value":"abcd"}"#, b"\"abc\""));
        assert!(!contains(b"", b"x"));
        assert!(contains(b"anything", b""));
    }
}
