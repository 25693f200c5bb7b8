//! Several nodes on one PostgreSQL (issue 7 point 2): two `keyshift serve` servers, in this
//! process but each with its own `Deployment` (its own caches, its own data directory sharing the
//! root key, TLS material and `admin.json`, as the user guide says to set nodes up), on one
//! PostgreSQL schema. What one node changes must reach the other within a second; concurrent
//! rotations on both must neither lose nor duplicate a version.
//!
//! The database's URL is in `KEYSHIFT_TEST_POSTGRES_URL` (`scripts/postgres-test-server.sh start
//! DIR`); without it the tests say they are skipped and pass, unless `KEYSHIFT_REQUIRE_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_cli::config::Settings;
use keyshift_testkit::postgres::{database_url, Schema};
use keyshift_testkit::{v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a change made on one node must be refused on the other (the bound).
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

/// Settings for a node with its data in `data`, its records in `schema`.
fn node_settings(dir: &Path, data: &Path, schema: &Schema) -> Settings {
    let password_file = dir.join("pg-password");
    if !password_file.exists() {
        std::fs::write(&password_file, format!("{}\n", schema.password())).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut settings = keyshift_testkit::settings(data);
    settings.store.url = Some(schema.store_url());
    settings.store.password_file = Some(password_file);
    settings
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Two nodes of one deployment: A starts on the empty schema; B gets A's root key, TLS material
/// and `admin.json`, as a second node is set up.
struct Nodes {
    a: TestServer,
    b: TestServer,
    _dir: tempfile::TempDir,
}

async fn two_nodes(schema: &Schema) -> Nodes {
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = TestServer::start_with(node_settings(dir.path(), &data_a, schema)).await;
    std::fs::create_dir_all(&data_b).unwrap();
    std::fs::set_permissions(&data_b, std::fs::Permissions::from_mode(0o700)).unwrap();
    for file in ["root.key", "admin.json"] {
        std::fs::copy(data_a.join(file), data_b.join(file)).unwrap();
    }
    copy_dir(&data_a.join("tls"), &data_b.join("tls"));
    let b = TestServer::start_with(node_settings(dir.path(), &data_b, schema)).await;
    assert_eq!(
        a.deployment().tenant_id(),
        b.deployment().tenant_id(),
        "one deployment"
    );
    Nodes { a, b, _dir: dir }
}

fn wrap_body() -> Value {
    json!({"alg": "A256KW", "value": b64::encode(&[7u8; 32])})
}

/// Wraps with `key` on `node` as the holder of `token`; the status.
async fn wrap(node: &TestServer, token: &str, key: &str) -> StatusCode {
    node.call_as(
        token,
        &node.url(),
        Method::POST,
        &v(&format!("/keys/{key}//wrapkey")),
        Some(wrap_body()),
    )
    .await
    .0
}

/// Polls `check` every 50 ms until it returns false; how long that took. Panics after 5 s.
async fn time_until_refused<F, Fut>(mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

async fn create_key(node: &TestServer, name: &str) -> String {
    let (st, key) = node
        .call(
            Method::POST,
            &v(&format!("/keys/{name}/create")),
            Some(json!({"kty": "oct-HSM", "key_size": 256})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{key}");
    version_of(&key["key"]["kid"])
}

fn version_of(kid: &Value) -> String {
    kid.as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

/// A key created on A is usable on B; disabled, deleted or no longer assigned on A, it is refused
/// on B within a second, although B had it (and the assignment) in its caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_changes_the_other_refuses_within_a_second() {
    let Some(url) = database_url("the several-nodes test") else {
        return;
    };
    let schema = Schema::create(&url, "ks_nodes").await;
    let Nodes { a, b, _dir } = two_nodes(&schema).await;

    // Created on A, used on B (B reads it from the store and caches it unsealed).
    let version = create_key(&a, "shared").await;
    assert_eq!(wrap(&b, b.token(), "shared").await, StatusCode::OK);

    // Disabled on A: B refuses it within the bound.
    let (st, body) = a
        .call(
            Method::PATCH,
            &v(&format!("/keys/shared/{version}")),
            Some(json!({"attributes": {"enabled": false}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let took =
        time_until_refused(|| async { wrap(&b, b.token(), "shared").await.is_success() }).await;
    eprintln!("disable on A refused on B after {took:?}");
    assert!(took < PROPAGATION_BOUND, "disable reached B after {took:?}");

    // Deleted on A: B refuses it within the bound.
    create_key(&a, "doomed").await;
    assert_eq!(wrap(&b, b.token(), "doomed").await, StatusCode::OK);
    let (st, body) = a.call(Method::DELETE, &v("/keys/doomed"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let took =
        time_until_refused(|| async { wrap(&b, b.token(), "doomed").await.is_success() }).await;
    eprintln!("delete on A refused on B after {took:?}");
    assert!(took < PROPAGATION_BOUND, "delete reached B after {took:?}");

    // A role assignment removed on A: B refuses its principal within the bound.
    create_key(&a, "assigned").await;
    let p = a.deployment().create_principal("workload").await.unwrap();
    let vault_a = a.deployment().default_vault().unwrap();
    let assignment = a
        .deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault_a,
            "/",
            "Key Vault Crypto User",
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    let token = b.token_for(&p.principal.client_id, &p.client_secret).await;
    // B may hold the vault's assignments from before this one: it sees it within the bound.
    let took =
        time_until_refused(|| async { !wrap(&b, &token, "assigned").await.is_success() }).await;
    assert!(
        took < PROPAGATION_BOUND,
        "the assignment reached B after {took:?}"
    );
    a.deployment()
        .remove_role_assignment(
            &keyshift_vault::RequestContext::local(),
            &vault_a,
            &assignment.name,
        )
        .await
        .unwrap();
    let took =
        time_until_refused(|| async { wrap(&b, &token, "assigned").await.is_success() }).await;
    eprintln!("role assignment removed on A refused on B after {took:?}");
    assert!(
        took < PROPAGATION_BOUND,
        "the removed assignment reached B after {took:?}"
    );

    // The principal disabled on A: its token is refused on B within the bound.
    a.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault_a,
            "/",
            "Key Vault Crypto User",
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    let took =
        time_until_refused(|| async { !wrap(&b, &token, "assigned").await.is_success() }).await;
    assert!(
        took < PROPAGATION_BOUND,
        "the new assignment reached B after {took:?}"
    );
    a.deployment()
        .set_principal_enabled(
            &keyshift_vault::RequestContext::local(),
            &p.principal.client_id,
            false,
        )
        .await
        .unwrap();
    let took =
        time_until_refused(|| async { wrap(&b, &token, "assigned").await.is_success() }).await;
    eprintln!("principal disabled on A refused on B after {took:?}");
    assert!(
        took < PROPAGATION_BOUND,
        "the disabled principal reached B after {took:?}"
    );
}

/// Both nodes rotate one key 20 times each, at once, while both also update its tags and wrap
/// with it: exactly 40 new versions, all distinct, every one listed, the latest is one of them,
/// and both nodes wrap with that latest within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_on_both_nodes_lose_no_version() {
    let Some(url) = database_url("the several-nodes test") else {
        return;
    };
    let schema = Schema::create(&url, "ks_nodes").await;
    let nodes = Arc::new(two_nodes(&schema).await);
    let first = create_key(&nodes.a, "busy").await;

    let mut tasks = Vec::new();
    for node in 0..2 {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let s = if node == 0 { &nodes.a } else { &nodes.b };
            let mut versions = Vec::new();
            for i in 0..20 {
                let (st, body) = s.call(Method::POST, &v("/keys/busy/rotate"), None).await;
                assert_eq!(st, StatusCode::OK, "rotation {i} on node {node}: {body}");
                versions.push(version_of(&body["key"]["kid"]));
                let (st, body) = s
                    .call(
                        Method::PATCH,
                        &v("/keys/busy/"),
                        Some(json!({"tags": {"node": node.to_string(), "i": i.to_string()}})),
                    )
                    .await;
                assert_eq!(st, StatusCode::OK, "update {i} on node {node}: {body}");
                // Crypto operations in between keep each node's cache of the latest version warm,
                // so that a node that missed the other's rotations would go on with an old one.
                let (st, body) = s
                    .call(Method::POST, &v("/keys/busy//wrapkey"), Some(wrap_body()))
                    .await;
                assert_eq!(st, StatusCode::OK, "wrap {i} on node {node}: {body}");
            }
            versions
        }));
    }
    let mut rotated = Vec::new();
    for t in tasks {
        rotated.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<&String> = rotated.iter().collect();
    assert_eq!(rotated.len(), 40);
    assert_eq!(distinct.len(), 40, "no version was given twice");
    assert!(!distinct.contains(&first));

    let mut listed = BTreeSet::new();
    let mut next = Some(v("/keys/busy/versions?maxresults=25"));
    while let Some(path) = next.take() {
        let (st, page) = if path.starts_with("https://") {
            nodes
                .a
                .call_as(nodes.a.token(), "", Method::GET, &path, None)
                .await
        } else {
            nodes.a.call(Method::GET, &path, None).await
        };
        assert_eq!(st, StatusCode::OK, "{page}");
        for item in page["value"].as_array().unwrap() {
            listed.insert(version_of(&item["kid"]));
        }
        next = page["nextLink"].as_str().map(str::to_owned);
    }
    let mut expected: BTreeSet<String> = rotated.iter().cloned().collect();
    expected.insert(first);
    assert_eq!(
        listed, expected,
        "every version listed, none lost, none extra"
    );

    let deadline = Instant::now() + PROPAGATION_BOUND;
    for node in [&nodes.a, &nodes.b] {
        let (st, key) = node.call(Method::GET, &v("/keys/busy"), None).await;
        assert_eq!(st, StatusCode::OK, "{key}");
        let latest = version_of(&key["key"]["kid"]);
        assert!(
            distinct.contains(&latest),
            "the latest is a rotated version"
        );
        // Crypto operations on both nodes use that latest version, within the bound.
        loop {
            let (st, wrapped) = node
                .call(Method::POST, &v("/keys/busy//wrapkey"), Some(wrap_body()))
                .await;
            assert_eq!(st, StatusCode::OK, "{wrapped}");
            if version_of(&wrapped["kid"]) == latest {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a node still wraps with an older version"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Fresh nodes opening an empty database at the same moment all start, as one deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_opening_an_empty_database_together_all_start() {
    let Some(url) = database_url("the several-nodes test") else {
        return;
    };
    for round in 0..5 {
        let schema = Schema::create(&url, "ks_nodes").await;
        let options = keyshift_store::postgres::PostgresOptions::from_url(&url)
            .unwrap()
            .schema(&schema.name)
            .max_connections(2);
        let root = keyshift_crypto::seal::SealingKey::generate().unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let mut opening = Vec::new();
        for _ in 0..3 {
            let (options, barrier) = (options.clone(), barrier.clone());
            let root = keyshift_crypto::seal::SealingKey::from_bytes(&root.to_bytes()).unwrap();
            opening.push(tokio::spawn(async move {
                let store = keyshift_store::postgres::PostgresStore::connect(options)
                    .await
                    .unwrap();
                barrier.wait().await;
                keyshift_vault::Deployment::open(
                    Arc::new(store),
                    Arc::new(keyshift_vault::SystemClock),
                    root,
                )
                .await
            }));
        }
        let mut tenants = BTreeSet::new();
        let mut created = 0;
        for o in opening {
            match o.await.unwrap() {
                Ok((d, fresh)) => {
                    tenants.insert(d.tenant_id().to_owned());
                    created += usize::from(fresh);
                }
                Err(e) => panic!("round {round}: a node did not open: {}", e.message),
            }
        }
        assert_eq!(tenants.len(), 1, "round {round}: one deployment");
        assert_eq!(created, 1, "round {round}: created once");
    }
}

/// Concurrent clients per node and requests per client of the load test below.
const CLIENTS_PER_NODE: usize = 8;
const REQUESTS_PER_CLIENT: usize = 150;

/// Both nodes busy at once (8 clients each, wrapping with one shared key and creating versions
/// of keys of their own): every request is answered, none with `503` (each node appends to an
/// audit chain of its own, so neither loses races for the other's head), the log verifies, and
/// it holds exactly one event per request, by operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_busy_nodes_audit_every_request_without_503() {
    let Some(url) = database_url("the several-nodes test") else {
        return;
    };
    let schema = Schema::create(&url, "ks_nodes").await;
    let nodes = Arc::new(two_nodes(&schema).await);
    create_key(&nodes.a, "shared").await;
    assert_eq!(
        nodes.a.deployment().audit_chain().is_some(),
        nodes.b.deployment().audit_chain().is_some()
    );
    assert_ne!(
        nodes.a.deployment().audit_chain(),
        nodes.b.deployment().audit_chain(),
        "a chain per node"
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for node in 0..2usize {
        for client in 0..CLIENTS_PER_NODE {
            let nodes = nodes.clone();
            tasks.push(tokio::spawn(async move {
                let s = if node == 0 { &nodes.a } else { &nodes.b };
                let mut statuses: Vec<(&'static str, String, u16)> = Vec::new();
                for i in 0..REQUESTS_PER_CLIENT {
                    let id = format!("{:08x}-0000-4000-8000-{:012x}", node * 100 + client, i);
                    let (op, path, body) = if i % 3 == 2 {
                        (
                            "KeyCreate",
                            v(&format!("/keys/own-{node}-{client}/create")),
                            json!({"kty": "oct-HSM", "key_size": 256}),
                        )
                    } else {
                        ("KeyWrap", v("/keys/shared//wrapkey"), wrap_body())
                    };
                    let r = s
                        .http
                        .post(format!("{}{path}", s.url()))
                        .bearer_auth(s.token())
                        .header("x-ms-client-request-id", &id)
                        .json(&body)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("request {id} was not answered: {e}"));
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    statuses.push((op, id, status));
                }
                statuses
            }));
        }
    }
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    let total = 2 * CLIENTS_PER_NODE * REQUESTS_PER_CLIENT;
    eprintln!(
        "{total} requests on two nodes in {took:?} ({:.0}/s)",
        total as f64 / took.as_secs_f64()
    );
    assert_eq!(answered.len(), total, "every request answered");
    let unavailable = answered.iter().filter(|(_, _, s)| *s == 503).count();
    assert_eq!(unavailable, 0, "{unavailable} requests were answered 503");
    let failed: Vec<_> = answered.iter().filter(|(_, _, s)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // The log, read from either node: intact, one event per request, by operation.
    for node in [&nodes.a, &nodes.b] {
        let d = node.deployment();
        let v = d.verify_audit().await.unwrap();
        assert!(v.intact, "{:?}", v.problem);
        assert!(v.chains >= 2, "{v:?}");
        let events = d
            .audit_events(&keyshift_vault::audit::AuditFilter::default(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(v.events, events.len() as u64);
        let mut by_id: std::collections::HashMap<&str, Vec<&keyshift_vault::audit::AuditEvent>> =
            Default::default();
        for e in &events {
            if let Some(id) = e.client_request_id.as_deref() {
                by_id.entry(id).or_default().push(e);
            }
        }
        let mut counted: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut expected: std::collections::BTreeMap<&str, usize> = Default::default();
        for (op, id, status) in &answered {
            *expected.entry(op).or_default() += 1;
            let found = by_id.get(id.as_str()).cloned().unwrap_or_default();
            assert_eq!(found.len(), 1, "events of request {id}: {found:?}");
            assert_eq!(found[0].operation, *op, "{id}");
            assert_eq!(found[0].status, *status, "{id}");
            *counted.entry(found[0].operation.as_str()).or_default() += 1;
        }
        assert_eq!(counted, expected, "events by operation");
        assert_eq!(
            by_id.len(),
            total,
            "no events of requests not made (by client request id)"
        );
        // Both chains took part, so both nodes were busy.
        let chains: BTreeSet<&str> = by_id.values().map(|e| e[0].chain.as_str()).collect();
        assert_eq!(chains.len(), 2, "{chains:?}");
    }
    // The usage report counts every wrap, whichever node did it.
    let vault = nodes.a.deployment().default_vault().unwrap();
    let report = nodes
        .a
        .deployment()
        .key_usage(
            &keyshift_vault::RequestContext::system(nodes.a.url()),
            &vault,
            "shared",
            None,
        )
        .await
        .unwrap();
    let wraps: u64 = report.versions[0]
        .usage
        .iter()
        .filter(|u| u.operation == "KeyWrap")
        .map(|u| u.count)
        .sum();
    let expected_wraps = answered
        .iter()
        .filter(|(op, _, _)| *op == "KeyWrap")
        .count() as u64;
    assert_eq!(wraps, expected_wraps, "{:?}", report.versions[0].usage);
}
