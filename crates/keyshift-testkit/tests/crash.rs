//! Crash durability (issue 7 point 3): `keyshift serve` in a process of its own, killed with
//! SIGKILL at a random moment while workers create, import, rotate, update and delete keys and
//! create and delete role assignments, then restarted on the same data directory (or PostgreSQL
//! schema); ten kills for each store backend, the state carried from round to round. After every
//! restart:
//!
//! - every acknowledged write (a 2xx answer received) is there with the acknowledged result: the
//!   key's versions, each version's `enabled` and tags, the latest version, soft-deleted keys under
//!   `/deletedkeys`, role assignments present or gone;
//! - a write in flight at the kill landed whole or not at all (either is fine), and is then taken
//!   as the new state;
//! - nothing else appeared (no key or assignment no worker wrote);
//! - every write that landed has its audit event (matched by `x-ms-client-request-id`), with the
//!   acknowledged status (or 0: answer unknown, for a write in flight), none that did not land
//!   has a success event, and `keyshift audit verify` passes.
//!
//! The seed is printed; `KEYSHIFT_CRASH_SEED=<n>` replays a run's choices (which writes, when the
//! kill comes; thread timing still varies). The server is this test executable re-entered as the
//! `keyshift` command (see [`keyshift_child`]), so it is always built from this tree;
//! `KEYSHIFT_CRASH_BIN=<path>` runs that binary instead (a release build, say). The PostgreSQL run
//! needs `KEYSHIFT_TEST_POSTGRES_URL` (`scripts/postgres-test-server.sh`): skipped without it,
//! unless `KEYSHIFT_REQUIRE_POSTGRES=1`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_cli::datadir::AdminCredentials;
use keyshift_testkit::postgres::{database_url, Schema};
use keyshift_testkit::v;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KILLS: usize = 10;
const WORKERS: usize = 4;
/// The kill comes this long after the load starts, at random within the range.
const KILL_AFTER_MS: std::ops::Range<u64> = 150..1500;
const CHILD_ARGS_ENV: &str = "KEYSHIFT_CRASH_CHILD_ARGS";
/// Key Vault Crypto User, a built-in role.
const ROLE: &str = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/12338af0-0e69-4776-bea7-57ae8d297424";
/// Every assignment name the workers make starts so; the administrator's own does not.
const ASSIGNMENT_PREFIX: &str = "c7a5c000-";

/// Not a test: the `keyshift` command, run in a child process by the tests below when they set
/// `KEYSHIFT_CRASH_CHILD_ARGS` (its arguments, a JSON array). Without it, it does nothing.
#[test]
#[ignore = "the entry point of the crash tests' child processes"]
fn keyshift_child() {
    let Ok(args) = std::env::var(CHILD_ARGS_ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let code = keyshift_cli::main_with_args(std::iter::once("keyshift".to_owned()).chain(args));
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_write_through_ten_sigkills() {
    crash_rounds(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_write_through_ten_sigkills() {
    let Some(url) = database_url("the PostgreSQL crash test") else {
        return;
    };
    let schema = Schema::create(&url, "ks_crash").await.keep_on_failure();
    crash_rounds(Backend::Postgres {
        url,
        schema: schema.name.clone(),
    })
    .await;
}

/// The `keyshift` command with `args`: this executable re-entered through [`keyshift_child`], or
/// `KEYSHIFT_CRASH_BIN`.
fn keyshift(args: &[String]) -> Command {
    match std::env::var_os("KEYSHIFT_CRASH_BIN") {
        Some(bin) => {
            let mut command = Command::new(bin);
            command.args(args);
            command
        }
        None => {
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .args(["keyshift_child", "--exact", "--ignored", "--nocapture"])
                .args(["--test-threads=1", "--quiet"])
                .env(CHILD_ARGS_ENV, serde_json::to_string(args).unwrap());
            command
        }
    }
}

enum Backend {
    Sqlite,
    Postgres { url: String, schema: String },
}

/// One run: a data directory, the store's flags, the server's log.
struct Run {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    log: PathBuf,
    store_args: Vec<String>,
    label: &'static str,
}

impl Run {
    fn new(backend: &Backend) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (store_args, label) = match backend {
            Backend::Sqlite => (vec![], "sqlite"),
            Backend::Postgres { url, schema } => {
                // The password goes in a file, as an operator would give it, not on the command line.
                let (scheme, rest) = url.split_once("://").unwrap();
                let (userinfo, host) = rest.split_once('@').unwrap();
                let (user, password) = userinfo.split_once(':').unwrap();
                let file = dir.path().join("pg-password");
                std::fs::write(&file, format!("{password}\n")).unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
                let args = vec![
                    "--store-url".into(),
                    format!("{scheme}://{user}@{host}?options[search_path]={schema}"),
                    "--store-password-file".into(),
                    file.display().to_string(),
                ];
                (args, "postgres")
            }
        };
        Run {
            log: dir.path().join("serve.log"),
            data,
            dir: Some(dir),
            store_args,
            label,
        }
    }

    fn args(&self, command: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--data-dir".into(),
            self.data.display().to_string(),
            "--log".into(),
            "warn".into(),
        ]);
        args.extend(self.store_args.iter().cloned());
        args
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs a `keyshift` command to its end; its standard output, or a panic with both outputs.
    fn command(&self, command: &[&str]) -> String {
        let output = keyshift(&self.args(command)).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "keyshift {command:?} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "crash test ({}) failed: data directory and server log kept in {}",
                    self.label,
                    dir.keep().display()
                );
            }
        }
    }
}

/// A running `keyshift serve` and an administrator's HTTPS client to its default vault.
struct Server {
    child: Child,
    api: Arc<Api>,
}

impl Server {
    async fn start(run: &Run) -> Server {
        // `serve` writes serving.json (with its port) once it listens and the defaults exist.
        let serving = run.data.join("serving.json");
        let _ = std::fs::remove_file(&serving);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&run.log)
            .unwrap();
        let mut args = run.args(&["serve"]);
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        args.extend(["--maintenance-interval-seconds".into(), "3600".into()]);
        let mut child = keyshift(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "keyshift serve exited at start ({status}):\n{}",
                    run.log_tail()
                );
            }
            let found = std::fs::read(&serving)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|j| j["port"].as_u64());
            if let Some(port) = found {
                break u16::try_from(port).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "keyshift serve did not start within 60 s:\n{}",
                run.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let admin: AdminCredentials =
            serde_json::from_slice(&std::fs::read(run.data.join("admin.json")).unwrap()).unwrap();
        let ca = std::fs::read_to_string(run.data.join("tls").join("ca.pem")).unwrap();
        let http = keyshift_testkit::https_client(&ca, ([127, 0, 0, 1], port).into(), &[]);
        let base = format!("https://localhost:{port}");
        let response = http
            .post(format!("{base}/{}/oauth2/v2.0/token", admin.tenant_id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &admin.client_id),
                ("client_secret", &admin.client_secret),
                ("scope", "https://vault.azure.net/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "token endpoint");
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        Server {
            child,
            api: Arc::new(Api { http, base, token }),
        }
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What became of a request.
enum Answer {
    /// A 2xx answer, body read: the write is acknowledged.
    Acked(StatusCode, Value),
    /// Any other answer.
    Refused(StatusCode, Value),
    /// No complete answer (the server died): the write may or may not have landed.
    Lost,
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(&self, method: Method, path: &str, body: Option<&Value>, id: &str) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{}", self.base, v(path)))
            .bearer_auth(&self.token)
            .header("x-ms-client-request-id", id);
        if let Some(body) = body {
            request = request.json(body);
        }
        let Ok(response) = request.send().await else {
            return Answer::Lost;
        };
        let status = response.status();
        let Ok(bytes) = response.bytes().await else {
            return Answer::Lost;
        };
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Answer::Acked(status, value)
        } else {
            Answer::Refused(status, value)
        }
    }

    /// A read while nothing is being killed: it must succeed (`None` for a 404).
    async fn read(&self, url_or_path: &str) -> Option<Value> {
        let url = if url_or_path.starts_with("https://") {
            url_or_path.to_owned()
        } else {
            format!("{}{}", self.base, v(url_or_path))
        };
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            StatusCode::OK => Some(body),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET {url}: {other} {body}"),
        }
    }

    /// Every item of a paged listing.
    async fn read_all(&self, path: &str) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(url) = next {
            let page = self.read(&url).await?;
            items.extend(page["value"].as_array().unwrap().iter().cloned());
            next = page["nextLink"].as_str().map(str::to_owned);
        }
        Some(items)
    }
}

/// A key version's attributes as the API shows them.
#[derive(Debug, Clone, PartialEq)]
struct VersionState {
    enabled: bool,
    tags: Value,
}

impl VersionState {
    fn of(item: &Value) -> VersionState {
        VersionState {
            enabled: item["attributes"]["enabled"].as_bool().unwrap(),
            tags: match &item["tags"] {
                Value::Null => json!({}),
                tags => tags.clone(),
            },
        }
    }
}

fn version_of(bundle: &Value) -> String {
    let kid = bundle["key"]["kid"]
        .as_str()
        .or_else(|| bundle["kid"].as_str())
        .unwrap();
    kid.rsplit('/').next().unwrap().to_owned()
}

/// A key as the workers expect it.
#[derive(Debug, Clone, Default, PartialEq)]
struct KeyModel {
    /// Versions in creation order (the last is the latest), with their attributes.
    versions: Vec<(String, VersionState)>,
    deleted: bool,
}

impl KeyModel {
    fn latest(&self) -> &str {
        &self.versions.last().unwrap().0
    }
}

/// A key as the server shows it after a restart.
#[derive(Debug, Clone)]
enum KeySeen {
    Live {
        versions: BTreeMap<String, VersionState>,
        latest: String,
    },
    Deleted {
        latest: String,
    },
    Absent,
}

#[derive(Debug, Clone)]
enum Write {
    /// A new key, or a new version of one.
    Create {
        name: String,
        kty: &'static str,
    },
    /// A new key, or a new version of one, from a JWK.
    Import {
        name: String,
    },
    Rotate {
        name: String,
    },
    Update {
        name: String,
        version: String,
        enabled: bool,
        tags: Value,
    },
    Delete {
        name: String,
    },
    Assign {
        name: String,
        principal: String,
    },
    Unassign {
        name: String,
    },
}

impl Write {
    fn kind(&self) -> &'static str {
        match self {
            Write::Create { .. } => "create",
            Write::Import { .. } => "import",
            Write::Rotate { .. } => "rotate",
            Write::Update { .. } => "update",
            Write::Delete { .. } => "delete",
            Write::Assign { .. } => "assign",
            Write::Unassign { .. } => "unassign",
        }
    }

    fn key(&self) -> Option<&str> {
        match self {
            Write::Create { name, .. }
            | Write::Import { name }
            | Write::Rotate { name }
            | Write::Update { name, .. }
            | Write::Delete { name } => Some(name),
            Write::Assign { .. } | Write::Unassign { .. } => None,
        }
    }

    fn request(&self, rng: &mut fastrand::Rng, id: &str) -> (Method, String, Option<Value>) {
        match self {
            Write::Create { name, kty } => {
                let mut body = match *kty {
                    "RSA" => json!({"kty": "RSA", "key_size": 2048}),
                    "EC" => json!({"kty": "EC", "crv": "P-256"}),
                    _ => json!({"kty": kty}),
                };
                if rng.bool() {
                    body["tags"] = json!({"born": id});
                }
                (Method::POST, format!("/keys/{name}/create"), Some(body))
            }
            Write::Import { name } => {
                let k: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(32).collect();
                let body =
                    json!({"key": {"kty": "oct", "k": b64::encode(&k)}, "tags": {"imported": id}});
                (Method::PUT, format!("/keys/{name}"), Some(body))
            }
            Write::Rotate { name } => (Method::POST, format!("/keys/{name}/rotate"), None),
            Write::Update {
                name,
                version,
                enabled,
                tags,
            } => (
                Method::PATCH,
                format!("/keys/{name}/{version}"),
                Some(json!({"attributes": {"enabled": enabled}, "tags": tags})),
            ),
            Write::Delete { name } => (Method::DELETE, format!("/keys/{name}"), None),
            Write::Assign { name, principal } => (
                Method::PUT,
                format!("///providers/Microsoft.Authorization/roleAssignments/{name}"),
                Some(json!({"properties": {"roleDefinitionId": ROLE, "principalId": principal}})),
            ),
            Write::Unassign { name } => (
                Method::DELETE,
                format!("///providers/Microsoft.Authorization/roleAssignments/{name}"),
                None,
            ),
        }
    }
}

/// One worker: its own keys and assignments (no other worker touches them, so each write's
/// effect is known), what was acknowledged, and the write in flight when the server died.
struct Worker {
    id: usize,
    rng: fastrand::Rng,
    seq: u64,
    keys: BTreeMap<String, KeyModel>,
    /// Assignment name -> principal.
    assignments: BTreeMap<String, String>,
    /// Client request id and status of every acknowledged write.
    acked: Vec<(String, u16)>,
    /// Client request ids of writes in flight at a kill that landed.
    landed: Vec<String>,
    /// Client request ids of writes in flight at a kill that did not land.
    vanished: Vec<String>,
    in_flight: Option<(Write, String)>,
    /// Acknowledged writes of each kind, all rounds.
    counts: BTreeMap<&'static str, u32>,
}

impl Worker {
    fn new(id: usize, seed: u64) -> Worker {
        Worker {
            id,
            rng: fastrand::Rng::with_seed(
                seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            seq: 0,
            keys: BTreeMap::new(),
            assignments: BTreeMap::new(),
            acked: Vec::new(),
            landed: Vec::new(),
            vanished: Vec::new(),
            in_flight: None,
            counts: BTreeMap::new(),
        }
    }

    fn choose(&mut self) -> Write {
        self.seq += 1;
        let live: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, k)| !k.deleted)
            .map(|(n, _)| n.clone())
            .collect();
        let new_name = format!("w{}-k{}", self.id, self.seq);
        let kty = match self.rng.u32(0..20) {
            0..=1 => "RSA",
            2..=11 => "EC",
            _ => "oct-HSM",
        };
        let roll = self.rng.u32(0..100);
        if live.len() < 2 || roll < 18 {
            return Write::Create {
                name: new_name,
                kty,
            };
        }
        let name = live[self.rng.usize(..live.len())].clone();
        match roll {
            18..=25 => Write::Import { name: new_name },
            26..=33 => Write::Create { name, kty },
            34..=39 => Write::Import { name },
            40..=51 => Write::Rotate { name },
            52..=69 => {
                let key = &self.keys[&name];
                let (version, _) = &key.versions[self.rng.usize(..key.versions.len())];
                // Only older versions are disabled, so rotation and new versions stay possible.
                let enabled = version == key.latest() || self.rng.bool();
                Write::Update {
                    name: name.clone(),
                    version: version.clone(),
                    enabled,
                    tags: json!({"seq": self.seq.to_string(), "by": format!("w{}", self.id)}),
                }
            }
            70..=77 => Write::Delete { name },
            _ if roll < 92 || self.assignments.is_empty() => Write::Assign {
                name: format!(
                    "{ASSIGNMENT_PREFIX}{:04x}-4000-8000-{:012x}",
                    self.id, self.seq
                ),
                principal: format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    self.rng.u32(..),
                    self.rng.u64(..1 << 48)
                ),
            },
            _ => {
                let names: Vec<&String> = self.assignments.keys().collect();
                Write::Unassign {
                    name: names[self.rng.usize(..names.len())].clone(),
                }
            }
        }
    }

    /// Writes until the server stops answering; returns itself with the write left in flight.
    async fn run(mut self, api: Arc<Api>, round: usize) -> Worker {
        loop {
            let write = self.choose();
            let id = format!("crash-r{round}-w{}-{}", self.id, self.seq);
            let (method, path, body) = write.request(&mut self.rng, &id);
            self.in_flight = Some((write.clone(), id.clone()));
            match api.send(method.clone(), &path, body.as_ref(), &id).await {
                Answer::Acked(status, body) => {
                    self.apply(&write, &body);
                    self.acked.push((id, status.as_u16()));
                    *self.counts.entry(write.kind()).or_default() += 1;
                    self.in_flight = None;
                }
                Answer::Refused(status, body) => {
                    panic!(
                        "worker {}: {method} {path} ({write:?}) answered {status}: {body}",
                        self.id
                    )
                }
                Answer::Lost => return self,
            }
        }
    }

    fn apply(&mut self, write: &Write, body: &Value) {
        match write {
            Write::Create { name, .. } | Write::Import { name } | Write::Rotate { name } => {
                let key = self.keys.entry(name.clone()).or_default();
                key.versions
                    .push((version_of(body), VersionState::of(body)));
            }
            Write::Update { name, version, .. } => {
                let key = self.keys.get_mut(name).unwrap();
                let slot = key.versions.iter_mut().find(|(v, _)| v == version).unwrap();
                slot.1 = VersionState::of(body);
            }
            Write::Delete { name } => self.keys.get_mut(name).unwrap().deleted = true,
            Write::Assign { name, principal } => {
                assert_eq!(
                    body["properties"]["principalId"],
                    principal.as_str(),
                    "{body}"
                );
                self.assignments.insert(name.clone(), principal.clone());
            }
            Write::Unassign { name } => {
                self.assignments.remove(name);
            }
        }
    }

    /// Checks the server's state against what this worker was told, resolves the write in
    /// flight (landed or not, both fine), and takes what landed as the new expectation.
    fn check(&mut self, seen: &Seen) {
        let in_flight = self.in_flight.take();
        let flight_key = in_flight.as_ref().and_then(|(w, _)| w.key());
        let mut landed = None;
        for (name, model) in &mut self.keys {
            let observed = seen.key(name);
            if flight_key == Some(name.as_str()) {
                let (write, _) = in_flight.as_ref().unwrap();
                let (l, now) = resolve_key(name, model, write, observed);
                landed = Some(l);
                *model = now;
            } else {
                assert_matches(name, model, observed);
            }
        }
        // A write in flight that would have made a new key.
        if let Some(name) = flight_key {
            if !self.keys.contains_key(name) {
                let (write, _) = in_flight.as_ref().unwrap();
                let (l, now) = resolve_key(name, &KeyModel::default(), write, seen.key(name));
                if l {
                    self.keys.insert(name.to_owned(), now);
                }
                landed = Some(l);
            }
        }
        for (name, principal) in &self.assignments {
            let flying = matches!(&in_flight, Some((Write::Unassign { name: n }, _)) if n == name);
            match seen.assignments.get(name) {
                Some(p) => assert_eq!(p, principal, "assignment {name}: principal"),
                None if flying => {}
                None => panic!("acknowledged role assignment {name} is gone"),
            }
        }
        match &in_flight {
            Some((Write::Assign { name, principal }, _)) => {
                let l = seen.assignments.get(name).is_some_and(|p| p == principal);
                if l {
                    self.assignments.insert(name.clone(), principal.clone());
                }
                landed = Some(l);
            }
            Some((Write::Unassign { name }, _)) => {
                let l = !seen.assignments.contains_key(name);
                if l {
                    self.assignments.remove(name);
                }
                landed = Some(l);
            }
            _ => {}
        }
        for name in seen.assignments.keys() {
            if name.starts_with(&format!("{ASSIGNMENT_PREFIX}{:04x}-", self.id)) {
                assert!(
                    self.assignments.contains_key(name),
                    "role assignment {name} exists but worker {} deleted it or never made it",
                    self.id
                );
            }
        }
        if let Some((_, id)) = in_flight {
            if landed.unwrap() {
                self.landed.push(id);
            } else {
                self.vanished.push(id);
            }
        }
    }
}

/// Compares a key with no write in flight to what was acknowledged.
fn assert_matches(name: &str, model: &KeyModel, seen: &KeySeen) {
    match (model.deleted, seen) {
        (false, KeySeen::Live { versions, latest }) => {
            let expected: BTreeMap<String, VersionState> = model.versions.iter().cloned().collect();
            assert_eq!(
                versions, &expected,
                "key {name}: versions and their attributes"
            );
            assert_eq!(latest, model.latest(), "key {name}: latest version");
        }
        (true, KeySeen::Deleted { latest }) => {
            assert_eq!(latest, model.latest(), "deleted key {name}: latest version")
        }
        (deleted, seen) => panic!(
            "key {name}: acknowledged {}, but the server shows {seen:?}",
            if deleted { "deleted" } else { "live" }
        ),
    }
}

/// For the key a write was in flight on: checks the server shows either the state before the
/// write or the whole write's result; returns whether it landed, and the state now.
fn resolve_key(name: &str, model: &KeyModel, write: &Write, seen: &KeySeen) -> (bool, KeyModel) {
    match write {
        Write::Create { .. } | Write::Import { .. } | Write::Rotate { .. } => {
            if model.versions.is_empty() && matches!(seen, KeySeen::Absent) {
                return (false, model.clone());
            }
            let KeySeen::Live { versions, latest } = seen else {
                panic!("key {name}: a new version was in flight, the server shows {seen:?}");
            };
            let mut now = model.clone();
            let new: Vec<&String> = versions
                .keys()
                .filter(|v| !model.versions.iter().any(|(m, _)| m == *v))
                .collect();
            assert!(new.len() <= 1, "key {name}: {new:?} appeared for one write");
            if let Some(version) = new.first() {
                assert_eq!(
                    latest, *version,
                    "key {name}: the new version is the latest"
                );
                now.versions
                    .push(((*version).clone(), versions[*version].clone()));
            }
            assert_matches(name, &now, seen);
            (!new.is_empty(), now)
        }
        Write::Update {
            version,
            enabled,
            tags,
            ..
        } => {
            let mut now = model.clone();
            let wanted = VersionState {
                enabled: *enabled,
                tags: tags.clone(),
            };
            let landed = matches!(seen, KeySeen::Live { versions, .. } if versions.get(version) == Some(&wanted));
            if landed {
                let slot = now.versions.iter_mut().find(|(v, _)| v == version).unwrap();
                slot.1 = wanted;
            }
            assert_matches(name, &now, seen);
            (landed, now)
        }
        Write::Delete { .. } => {
            let mut now = model.clone();
            now.deleted = matches!(seen, KeySeen::Deleted { .. });
            assert_matches(name, &now, seen);
            (now.deleted, now)
        }
        Write::Assign { .. } | Write::Unassign { .. } => unreachable!("not a key write"),
    }
}

/// The server's state after a restart.
struct Seen {
    keys: BTreeMap<String, KeySeen>,
    /// Assignment name -> principal.
    assignments: BTreeMap<String, String>,
}

impl Seen {
    fn key(&self, name: &str) -> &KeySeen {
        self.keys.get(name).unwrap_or(&KeySeen::Absent)
    }

    async fn read(api: &Arc<Api>) -> Seen {
        let name_of = |item: &Value| {
            let kid = item["kid"].as_str().unwrap();
            kid.split("/keys/")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_owned()
        };
        let live: Vec<String> = api
            .read_all("/keys?maxresults=25")
            .await
            .unwrap()
            .iter()
            .map(name_of)
            .collect();
        let deleted: Vec<String> = api
            .read_all("/deletedkeys?maxresults=25")
            .await
            .unwrap()
            .iter()
            .map(name_of)
            .collect();
        // A few readers at once: the versions of every live key, the latest of every deleted one.
        let mut tasks = tokio::task::JoinSet::new();
        for part in 0..6 {
            let (api, live, deleted) = (api.clone(), live.clone(), deleted.clone());
            tasks.spawn(async move {
                let mut found = Vec::new();
                for name in live.iter().skip(part).step_by(6) {
                    let versions = api
                        .read_all(&format!("/keys/{name}/versions?maxresults=25"))
                        .await
                        .unwrap_or_else(|| panic!("key {name} is listed but has no versions"));
                    let latest = api.read(&format!("/keys/{name}")).await.unwrap();
                    let versions = versions
                        .iter()
                        .map(|item| (version_of(item), VersionState::of(item)))
                        .collect();
                    let latest = version_of(&latest);
                    found.push((name.clone(), KeySeen::Live { versions, latest }));
                }
                for name in deleted.iter().skip(part).step_by(6) {
                    let bundle = api.read(&format!("/deletedkeys/{name}")).await.unwrap();
                    found.push((
                        name.clone(),
                        KeySeen::Deleted {
                            latest: version_of(&bundle),
                        },
                    ));
                }
                found
            });
        }
        let mut keys = BTreeMap::new();
        while let Some(found) = tasks.join_next().await {
            for (name, seen) in found.unwrap() {
                assert!(
                    keys.insert(name.clone(), seen).is_none(),
                    "key {name} is both live and deleted"
                );
            }
        }
        let assignments = api
            .read("///providers/Microsoft.Authorization/roleAssignments")
            .await
            .unwrap()["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_owned(),
                    a["properties"]["principalId"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        Seen { keys, assignments }
    }
}

/// Checks the audit log: the chain verifies, and every write that landed has its event.
fn check_audit(run: &Run, workers: &[Worker]) -> usize {
    let verdict = run.command(&["audit", "verify"]);
    assert!(verdict.contains("\"intact\": true"), "{verdict}");
    let export = run.data.join("audit-export.jsonl");
    run.command(&["audit", "export", "--out", export.to_str().unwrap()]);
    let mut statuses: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    let text = std::fs::read_to_string(&export).unwrap();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if let Some(id) = event["client_request_id"].as_str() {
            statuses
                .entry(id.to_owned())
                .or_default()
                .push(u16::try_from(event["status"].as_u64().unwrap()).unwrap());
        }
    }
    for w in workers {
        for (id, status) in &w.acked {
            assert_eq!(
                statuses.get(id),
                Some(&vec![*status]),
                "the audit events of acknowledged write {id}"
            );
        }
        for id in &w.landed {
            let found = statuses.get(id).cloned().unwrap_or_default();
            assert!(
                found.len() == 1 && (found[0] == 0 || (200..300).contains(&found[0])),
                "write {id} landed while the server died: its audit events are {found:?}"
            );
        }
        for id in &w.vanished {
            let found = statuses.get(id).cloned().unwrap_or_default();
            assert!(
                found.iter().all(|s| *s >= 300),
                "write {id} did not land, yet its audit events are {found:?}"
            );
        }
    }
    text.lines().count()
}

async fn crash_rounds(backend: Backend) {
    let seed = std::env::var("KEYSHIFT_CRASH_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("KEYSHIFT_CRASH_SEED is a number"))
        .unwrap_or_else(|| fastrand::u64(..));
    let run = Run::new(&backend);
    eprintln!(
        "crash test ({}): seed {seed} (KEYSHIFT_CRASH_SEED={seed} replays its choices)",
        run.label
    );
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut workers: Vec<Worker> = (0..WORKERS).map(|id| Worker::new(id, seed)).collect();
    let mut server = Server::start(&run).await;
    for round in 1..=KILLS {
        let mut tasks = Vec::new();
        for w in workers.drain(..) {
            tasks.push(tokio::spawn(w.run(server.api.clone(), round)));
        }
        let wait = rng.u64(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill();
        for task in tasks {
            workers.push(task.await.unwrap());
        }
        let restart = Instant::now();
        server = Server::start(&run).await;
        let restart = restart.elapsed();
        let seen = Seen::read(&server.api).await;
        for name in seen.keys.keys() {
            assert!(
                workers.iter().any(|w| w.keys.contains_key(name)
                    || w.in_flight.as_ref().and_then(|(x, _)| x.key()) == Some(name.as_str())),
                "key {name} exists but no worker made it"
            );
        }
        for w in &mut workers {
            w.check(&seen);
        }
        let events = check_audit(&run, &workers);
        let acked: usize = workers.iter().map(|w| w.acked.len()).sum();
        let landed: usize = workers.iter().map(|w| w.landed.len()).sum();
        let vanished: usize = workers.iter().map(|w| w.vanished.len()).sum();
        let live = seen
            .keys
            .values()
            .filter(|k| matches!(k, KeySeen::Live { .. }))
            .count();
        eprintln!(
            "crash test ({}): kill {round} after {wait} ms, restarted in {} ms; so far {acked} \
             writes acknowledged, {landed} in flight landed, {vanished} did not; {live} live keys, \
             {} deleted, {} assignments; {events} audit events, chain intact",
            run.label,
            restart.as_millis(),
            seen.keys.len() - live,
            seen.assignments.len(),
        );
    }
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for w in &workers {
        for (kind, n) in &w.counts {
            *counts.entry(kind).or_default() += n;
        }
    }
    eprintln!(
        "crash test ({}): {KILLS} kills in {:.1} s, acknowledged writes by kind: {counts:?}",
        run.label,
        started.elapsed().as_secs_f64()
    );
    // Every kind of write was acknowledged at least once, or the test proved less than it says.
    for kind in [
        "create", "import", "rotate", "update", "delete", "assign", "unassign",
    ] {
        assert!(
            counts.get(kind).is_some_and(|n| *n > 0),
            "no {kind} was acknowledged: {counts:?}"
        );
    }
    drop(server);
}
