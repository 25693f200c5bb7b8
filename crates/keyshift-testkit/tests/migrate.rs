//! Migration campaigns end to end against real servers (TLS, SQLite, token issuer): the
//! customer-managed-key scenario (a service's wrapped-key list moved to a new key in a new vault,
//! the workload's identity granted, the old version left decrypt-only, then retired), a 3-level
//! keyring whose KEK moves to another server, trees of 2-level files rewrapped and re-encrypted
//! (also at full size: 10,000 files and 1 GiB), `rekey`, a software key moved to an HSM key type, a
//! BYOK target with grants drafted from usage, and the refusals of a changed plan or a mismatched
//! target. Crash and resume: `tests/e2e/python/test_migrate_cli.py` (SIGKILL of the real binary)
//! and `migrate_postgres.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_client::{parse_kid, KeyClient};
use keyshift_envelope::{Decryptor, Encryptor, Header, Kek, Keyring, RemoteKek};
use keyshift_migrate::engine::{self, ApplyOptions, PlanRequest};
use keyshift_migrate::plan::{DataSource, Mode, Plan};
use keyshift_migrate::progress::Style;
use keyshift_testkit::{v, TestServer};
use keyshift_vault::audit::AuditFilter;
use keyshift_vault::VaultKind;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const QUIET: ApplyOptions = ApplyOptions {
    progress: Some(Style::Quiet),
};

async fn second_vault(s: &TestServer, name: &str) -> String {
    s.add_vault(name, VaultKind::Vault).await
}

async fn create(s: &TestServer, base: &str, name: &str, body: Value) -> String {
    let (st, key) = s
        .call_at(
            base,
            Method::POST,
            &v(&format!("/keys/{name}/create")),
            Some(body),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{key}");
    key["key"]["kid"].as_str().unwrap().to_owned()
}

fn admin_json(s: &TestServer) -> PathBuf {
    s.data_dir.join("admin.json")
}

fn client(s: &TestServer) -> KeyClient {
    keyshift_migrate::rewrap::client_from(&admin_json(s)).unwrap()
}

fn kek(s: &TestServer) -> Arc<dyn Kek> {
    Arc::new(RemoteKek::new(client(s)))
}

fn now() -> i64 {
    #[allow(clippy::disallowed_methods)]
    let t = std::time::SystemTime::now();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn request(s: &TestServer, dir: &Path, source_kid: &str, sources: Vec<DataSource>) -> PlanRequest {
    PlanRequest {
        name: "test-campaign".into(),
        source_kid: source_kid.into(),
        source_credentials: admin_json(s),
        target_vault: None,
        target_name: "new-key".into(),
        target_credentials: None,
        target_kty: None,
        byok: None,
        sources,
        keep_until: keyshift_migrate::plan::date_of(now() + 86_400),
        quiet_days: 3,
        plan_path: dir.join("plan.toml"),
    }
}

async fn write_plan(req: &PlanRequest) -> Plan {
    let draft = engine::plan(req, false).await.unwrap();
    std::fs::write(&req.plan_path, draft.plan.to_toml().unwrap()).unwrap();
    draft.plan
}

/// Scenario (a): a service keeps data keys wrapped by a customer-managed key; the key moves to a
/// new key in a new vault; the workload's identity is granted there; the old version is left
/// decrypt-only and is retired only once nothing uses it and its retention date has passed.
#[tokio::test]
async fn customer_managed_key_list_moves_to_a_new_vault() {
    let s = TestServer::start().await;
    let url = s.url();
    // kv2.localhost: the one extra host name the test machines resolve (/etc/hosts, `.ci/run`).
    let kv2 = second_vault(&s, "kv2").await;
    let source = create(&s, &url, "cmk", json!({"kty": "RSA", "key_size": 2048})).await;
    // The service's identity holds a role on the key and uses it.
    let vault = s.deployment().default_vault().unwrap();
    let p = s
        .deployment()
        .create_principal("storage-service")
        .await
        .unwrap();
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/cmk",
            "Key Vault Crypto Service Encryption User",
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    let workload = s.token_for(&p.principal.client_id, &p.client_secret).await;

    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("wrapped-keys.jsonl");
    let c = client(&s);
    let src = parse_kid(&source).unwrap();
    let mut lines = String::new();
    let mut deks = Vec::new();
    for i in 0..120u32 {
        let dek: Vec<u8> = (0..32).map(|j| (i * 7 + j) as u8).collect();
        let w = c.wrap_key(&src, "RSA-OAEP-256", &dek).await.unwrap();
        lines += &format!(
            "{}\n",
            json!({"id": format!("blob-{i}"), "kid": w.kid, "alg": "RSA-OAEP-256",
                   "wrapped_key": b64::encode(&w.value), "container": "c1"})
        );
        if i == 60 {
            lines += "\n"; // a blank line is kept
        }
        deks.push(dek);
    }
    // A record under another key is left alone and reported, not failed.
    let other = create(&s, &url, "unrelated", json!({"kty": "oct-HSM"})).await;
    let ow = c
        .wrap_key(&parse_kid(&other).unwrap(), "A256KW", &[1u8; 32])
        .await
        .unwrap();
    lines += &format!(
        "{}\n",
        json!({"id": "foreign", "kid": ow.kid, "alg": "A256KW", "wrapped_key": b64::encode(&ow.value)})
    );
    std::fs::write(&list, &lines).unwrap();
    // The workload uses the key (so the usage report names it).
    let (st, _) = s
        .call_as(&workload, &url, Method::GET, &v("/keys/cmk"), None)
        .await;
    assert_eq!(st, StatusCode::OK);

    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![DataSource::WrappedKeys { path: list.clone() }],
    );
    req.target_vault = Some(kv2.clone());
    req.target_name = "cmk-2027".into();
    let draft = engine::plan(&req, true).await.unwrap();
    assert_eq!(
        draft.items, 120,
        "dry run counts the items under the source"
    );
    assert!(!req.plan_path.exists(), "a dry run writes nothing");
    let plan = write_plan(&req).await;
    assert_eq!(plan.source.kid, source);
    assert_eq!(plan.target.kty.as_deref(), Some("RSA"));
    assert_eq!(plan.target.key_size, Some(2048));
    let grant = plan
        .grants
        .iter()
        .find(|g| g.principal == p.principal.id)
        .expect("the workload's identity is in the plan");
    assert_eq!(grant.role, "Key Vault Crypto Service Encryption User");
    assert!(grant.reason.contains("/keys/cmk"), "{}", grant.reason);

    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(report.sources[0].migrated, 120);
    assert_eq!(report.sources[0].skipped, 1);
    assert!(report.failures.is_empty());
    assert!(
        !report.sources[0].events.is_empty(),
        "the audit events are in the report"
    );
    let target = parse_kid(report.target.as_ref().unwrap()).unwrap();
    assert!(target.vault_url.as_str().contains("kv2.localhost"));

    // Every record moved, in order, other members kept; each opens under the target to its key.
    let text = std::fs::read_to_string(&list).unwrap();
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 121);
    assert_eq!(text.lines().filter(|l| l.is_empty()).count(), 1);
    for (i, r) in records.iter().take(120).enumerate() {
        assert_eq!(r["id"], format!("blob-{i}"));
        assert_eq!(r["container"], "c1");
        assert_eq!(r["kid"], target.to_string());
        assert_eq!(r["alg"], "RSA-OAEP-256");
    }
    for i in [0usize, 59, 119] {
        let wrapped = b64::decode(records[i]["wrapped_key"].as_str().unwrap()).unwrap();
        let out = c
            .unwrap_key(&target, "RSA-OAEP-256", &wrapped)
            .await
            .unwrap();
        assert_eq!(out.value, deks[i]);
    }
    assert_eq!(
        records[120]["kid"], ow.kid,
        "the foreign record is untouched"
    );

    // The workload can use the new key with its own identity.
    let (st, body) = s
        .call_as(
            &workload,
            &kv2,
            Method::POST,
            &v("/keys/cmk-2027//unwrapkey"),
            Some(json!({"alg": "RSA-OAEP-256", "value": records[5]["wrapped_key"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        b64::decode(body["value"].as_str().unwrap()).unwrap(),
        deks[5]
    );

    // The old version: decrypt and unwrap only.
    let old = c
        .get_key(&src.vault_url, "cmk", src.version.as_deref())
        .await
        .unwrap();
    let ops = old.key.key_ops.unwrap();
    assert!(
        ops.iter().all(|o| o == "decrypt" || o == "unwrapKey"),
        "{ops:?}"
    );
    assert!(c.wrap_key(&src, "RSA-OAEP-256", &[0u8; 32]).await.is_err());

    // Verify checks every item; a second apply changes nothing.
    let ver = engine::verify(&req.plan_path, None).await.unwrap();
    assert_eq!(ver[0].1.checked, 120);
    assert_eq!(ver[0].1.under_source, 0);
    assert!(ver[0].1.broken.is_empty());
    let again = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert_eq!(again.sources[0].migrated, 120);
    assert_eq!(std::fs::read_to_string(&list).unwrap(), text);

    // Retirement: not before the retention date; not while the old version is still used.
    let e = engine::retire(&req.plan_path, now()).await.unwrap_err();
    assert!(e.to_string().contains("retention date"), "{e}");
    let (st, _) = s
        .call_as(
            &workload,
            &url,
            Method::POST,
            &v(&format!("/keys/cmk/{}/unwrapkey", src.version.as_deref().unwrap())),
            Some(json!({"alg": "RSA-OAEP-256", "value": b64::encode(&c.wrap_key(&target, "RSA-OAEP-256", &[0u8; 32]).await.unwrap().value)})),
        )
        .await;
    // (Wrapped under the target, so the old key refuses it; the attempt is still a use.)
    assert_ne!(st, StatusCode::OK);
    let lines_old = lines.lines().next().unwrap().to_owned();
    let first: Value = serde_json::from_str(&lines_old).unwrap();
    let (st, _) = s
        .call_as(
            &workload,
            &url,
            Method::POST,
            &v(&format!(
                "/keys/cmk/{}/unwrapkey",
                src.version.as_deref().unwrap()
            )),
            Some(json!({"alg": "RSA-OAEP-256", "value": first["wrapped_key"]})),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "an old backup still opens with the old key"
    );
    let e = engine::retire(&req.plan_path, now() + 2 * 86_400)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&p.principal.id), "{e}");
    let retired = engine::retire(&req.plan_path, now() + 4 * 86_400)
        .await
        .unwrap();
    assert!(retired.deleted, "{retired:?}");
    assert!(retired.scheduled_purge_date.is_some());
    let (st, _) = s.call(Method::GET, &v("/deletedkeys/cmk"), None).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "the old key is soft-deleted, recoverable"
    );
}

/// Scenario (b): 3-level client-side data whose KEK moves to another server (another region)
/// with one rewrap of the keyring; the data files are not touched.
#[tokio::test]
async fn keyring_kek_moves_to_another_server_with_one_rewrap() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let source = create(&a, &a.url(), "kek", json!({"kty": "oct-HSM"})).await;
    let dir = tempfile::tempdir().unwrap();
    let keyring_path = dir.path().join("keyring.json");
    let (keyring, master) = Keyring::create(kek(&a).as_ref(), &source, 1).await.unwrap();
    std::fs::write(&keyring_path, keyring.to_json()).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut files = Vec::new();
    for i in 0..5 {
        let plain = vec![i as u8; 100_000 + i];
        let enc = Encryptor::three_level(&master, b"app", 4096).unwrap();
        let bytes = enc.encrypt_to_vec(&plain).unwrap();
        let path = data.join(format!("f{i}.ksenv"));
        std::fs::write(&path, &bytes).unwrap();
        files.push((path, bytes, plain));
    }
    let mut req = request(
        &a,
        dir.path(),
        &source,
        vec![DataSource::Keyring {
            path: keyring_path.clone(),
        }],
    );
    req.target_vault = Some(b.url());
    req.target_credentials = Some(admin_json(&b));
    write_plan(&req).await;
    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(report.sources[0].migrated, 1);
    let moved = Keyring::from_json(&std::fs::read_to_string(&keyring_path).unwrap()).unwrap();
    assert_eq!(moved.master_key_id(), keyring.master_key_id());
    assert!(moved.kek_kid().starts_with(&b.url()), "{}", moved.kek_kid());
    // Server B alone opens the data now; the files are byte for byte what they were.
    let only_b = kek(&b);
    for (path, bytes, plain) in &files {
        assert_eq!(&std::fs::read(path).unwrap(), bytes);
        let header = Header::parse(bytes).unwrap();
        let d = Decryptor::unlock(&header, only_b.as_ref(), Some(&moved), b"app")
            .await
            .unwrap();
        assert_eq!(&d.decrypt_slice(bytes).unwrap(), plain);
    }
    let ver = engine::verify(&req.plan_path, None).await.unwrap();
    assert_eq!(ver[0].1.checked, 1);
}

async fn two_level_tree(
    kek: &dyn Kek,
    kid: &str,
    root: &Path,
    n: usize,
) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let sub = root.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&sub).unwrap();
        let plain: Vec<u8> = (0..(5000 + i * 37)).map(|j| (i + j) as u8).collect();
        let enc = Encryptor::two_level(kek, kid, b"tenant=a", 4096)
            .await
            .unwrap();
        let path = sub.join(format!("f{i}.ksenv"));
        std::fs::write(&path, enc.encrypt_to_vec(&plain).unwrap()).unwrap();
        out.push((path, plain));
    }
    std::fs::write(root.join("README.txt"), "not an envelope file").unwrap();
    out
}

async fn opens(kek: &dyn Kek, keyring: Option<&Keyring>, path: &Path, plain: &[u8]) -> Header {
    let bytes = std::fs::read(path).unwrap();
    let header = Header::parse(&bytes).unwrap();
    let d = Decryptor::unlock(&header, kek, keyring, b"tenant=a")
        .await
        .unwrap();
    assert_eq!(
        d.decrypt_slice(&bytes).unwrap(),
        plain,
        "{}",
        path.display()
    );
    header
}

/// Scenario (c), smaller: a tree of 2-level files rewrapped through the batch API (segments
/// untouched), another re-encrypted under a new keyring, and files rekeyed in place.
#[tokio::test]
async fn envelope_trees_are_rewrapped_and_reencrypted() {
    let s = TestServer::start().await;
    let source = create(&s, &s.url(), "files", json!({"kty": "oct-HSM"})).await;
    let k = kek(&s);
    let dir = tempfile::tempdir().unwrap();
    let rewrap_root = dir.path().join("rewrap");
    let reenc_root = dir.path().join("reencrypt");
    let a = two_level_tree(k.as_ref(), &source, &rewrap_root, 150).await;
    let b = two_level_tree(k.as_ref(), &source, &reenc_root, 12).await;
    let segments_before: Vec<Vec<u8>> = a
        .iter()
        .map(|(p, _)| {
            let bytes = std::fs::read(p).unwrap();
            bytes[Header::parse(&bytes).unwrap().len()..].to_vec()
        })
        .collect();
    let new_keyring = dir.path().join("new-keyring.json");
    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![
            DataSource::EnvelopeDir {
                path: rewrap_root.clone(),
                mode: Mode::Rewrap,
                context: String::new(),
                keyring: None,
                target_keyring: None,
            },
            DataSource::EnvelopeDir {
                path: reenc_root.clone(),
                mode: Mode::Reencrypt,
                context: "tenant=a".into(),
                keyring: None,
                target_keyring: Some(new_keyring.clone()),
            },
        ],
    );
    req.target_name = "files-2".into();
    let draft = engine::plan(&req, true).await.unwrap();
    assert_eq!(draft.items, 162);
    write_plan(&req).await;
    let mut plan = Plan::read(&req.plan_path).unwrap();
    plan.limits.batch_size = 40;
    std::fs::write(&req.plan_path, plan.to_toml().unwrap()).unwrap();

    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(report.sources[0].migrated, 150);
    assert_eq!(report.sources[0].batches, 4);
    assert_eq!(report.sources[1].migrated, 12);
    let target = report.target.clone().unwrap();
    for ((path, plain), segments) in a.iter().zip(&segments_before) {
        let header = opens(k.as_ref(), None, path, plain).await;
        assert_eq!(header.kek_kid(), Some(target.as_str()));
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            &bytes[header.len()..],
            &segments[..],
            "segments are not re-encrypted"
        );
    }
    let keyring = Keyring::from_json(&std::fs::read_to_string(&new_keyring).unwrap()).unwrap();
    assert_eq!(keyring.kek_kid(), target);
    for (path, plain) in &b {
        let header = opens(k.as_ref(), Some(&keyring), path, plain).await;
        assert_eq!(header.master_key_id(), Some(keyring.master_key_id()));
    }
    // No temporary file is left anywhere.
    for root in [&rewrap_root, &reenc_root] {
        for f in keyshift_migrate::source::envelope_dir::walk(root).unwrap() {
            assert!(!f.to_string_lossy().contains("keyshift-migrate-tmp"));
        }
    }
    let unwraps = || async {
        s.deployment()
            .audit_events(
                &AuditFilter {
                    operation: Some("KeyUnwrap".into()),
                    ..AuditFilter::default()
                },
                usize::MAX,
            )
            .await
            .unwrap()
    };
    let before = unwraps().await.len();
    let ver = engine::verify(&req.plan_path, Some(10)).await.unwrap();
    assert_eq!(ver[0].1.checked, 10);
    assert_eq!(ver[1].1.checked, 10);
    assert!(ver
        .iter()
        .all(|(_, v)| v.broken.is_empty() && v.under_source == 0));
    // 10 rewrapped 2-level files unwrap their own data keys; the 10 re-encrypted 3-level files
    // share the new keyring's master key, unwrapped once when the pass starts.
    let during: Vec<_> = unwraps().await.into_iter().skip(before).collect();
    assert_eq!(
        during.len(),
        10 + 1,
        "vault unwraps during verify: {during:#?}"
    );

    // A file whose data key slot is swapped for another file's is caught by verify.
    let (p0, _) = &a[0];
    let (p1, _) = &a[1];
    let b0 = std::fs::read(p0).unwrap();
    let b1 = std::fs::read(p1).unwrap();
    let h0 = Header::parse(&b0).unwrap();
    let h1 = Header::parse(&b1).unwrap();
    let forged = h0.with_wrapped_key(h1.wrapped_key().unwrap()).unwrap();
    let mut bytes = forged.as_bytes().to_vec();
    bytes.extend_from_slice(&b0[h0.len()..]);
    std::fs::write(p0, bytes).unwrap();
    let ver = engine::verify(&req.plan_path, None).await.unwrap();
    assert_eq!(ver[0].1.broken.len(), 1, "{:?}", ver[0].1);
    assert!(ver[0].1.broken[0].0.ends_with("f0.ksenv"));

    // `rekey`: files of the re-encrypted tree, to 2-level under another key.
    let third = create(&s, &s.url(), "files-3", json!({"kty": "oct-HSM"})).await;
    let outcome = keyshift_migrate::rekey::rekey(keyshift_migrate::rekey::RekeyRequest {
        paths: vec![reenc_root.clone()],
        kek: k.clone(),
        new_kid: Some(third.clone()),
        new_keyring: None,
        old_keyring: Some(keyring.clone()),
        context: b"tenant=a".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(outcome.rekeyed, 12, "{outcome:?}");
    assert_eq!(
        outcome.failed.len(),
        1,
        "README.txt is not an envelope file"
    );
    for (path, plain) in &b {
        let header = opens(k.as_ref(), None, path, plain).await;
        assert_eq!(header.kek_kid(), Some(third.as_str()));
    }
    // Run again: everything is already under the new key.
    let outcome = keyshift_migrate::rekey::rekey(keyshift_migrate::rekey::RekeyRequest {
        paths: b.iter().map(|(p, _)| p.clone()).collect(),
        kek: k.clone(),
        new_kid: Some(third.clone()),
        new_keyring: None,
        old_keyring: None,
        context: b"tenant=a".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!((outcome.rekeyed, outcome.already), (0, 12));
}

/// A plan edited after its campaign started is refused; a target key of another type is refused.
#[tokio::test]
async fn a_changed_plan_and_a_mismatched_target_are_refused() {
    let s = TestServer::start().await;
    let source = create(&s, &s.url(), "k", json!({"kty": "oct-HSM"})).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("keys.jsonl");
    std::fs::write(&list, "").unwrap();
    let req = request(
        &s,
        dir.path(),
        &source,
        vec![DataSource::WrappedKeys { path: list }],
    );
    write_plan(&req).await;
    engine::apply(&req.plan_path, QUIET).await.unwrap();
    let mut plan = Plan::read(&req.plan_path).unwrap();
    plan.limits.concurrency = 2;
    std::fs::write(&req.plan_path, plan.to_toml().unwrap()).unwrap();
    let e = engine::apply(&req.plan_path, QUIET).await.unwrap_err();
    assert!(
        e.to_string().contains("changed since the campaign started"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    create(
        &s,
        &s.url(),
        "taken",
        json!({"kty": "RSA", "key_size": 2048}),
    )
    .await;
    let mut req = request(&s, dir.path(), &source, vec![]);
    req.target_name = "taken".into();
    let mut plan = engine::plan(&req, false).await.unwrap().plan;
    plan.target.kty = Some("oct-HSM".into());
    std::fs::write(&req.plan_path, plan.to_toml().unwrap()).unwrap();
    let e = engine::apply(&req.plan_path, QUIET).await.unwrap_err();
    assert!(e.to_string().contains("exists and is RSA"), "{e:#}");
}

/// Scenario (d): the offering switch, from a software key in a vault to a key held in a PKCS#11
/// token (SoftHSM2) in a managed HSM of the deployment. SoftHSM2 has no OAEP with SHA-256, so the
/// plan's wrap algorithm is RSA-OAEP; a token that has it would keep the default.
#[tokio::test]
async fn software_key_moves_to_an_hsm_key_in_a_managed_hsm() {
    let Some(s) = TestServer::start_with_hsm().await else {
        return;
    };
    let hsm = s.add_vault("kv2", VaultKind::ManagedHsm).await;
    // A managed HSM's Administrator manages roles, not keys: the campaign's identity needs a
    // crypto role there, as in Azure.
    s.grant_admin(
        "kv2",
        &["Managed HSM Crypto Officer", "Managed HSM Crypto User"],
    )
    .await;
    let source = create(
        &s,
        &s.url(),
        "soft",
        json!({"kty": "RSA", "key_size": 2048}),
    )
    .await;
    let c = client(&s);
    let src = parse_kid(&source).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("keys.jsonl");
    let mut text = String::new();
    for i in 0..20u8 {
        let w = c.wrap_key(&src, "RSA-OAEP", &[i; 32]).await.unwrap();
        text += &format!(
            "{}\n",
            json!({"id": i, "kid": w.kid, "alg": "RSA-OAEP", "wrapped_key": b64::encode(&w.value)})
        );
    }
    std::fs::write(&list, text).unwrap();
    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![DataSource::WrappedKeys { path: list.clone() }],
    );
    req.target_vault = Some(hsm.clone());
    req.target_name = "hsm-key".into();
    req.target_kty = Some("RSA-HSM".into());
    let mut plan = write_plan(&req).await;
    assert_eq!(plan.target.kty.as_deref(), Some("RSA-HSM"));
    plan.target.wrap_alg = Some("RSA-OAEP".into());
    std::fs::write(&req.plan_path, plan.to_toml().unwrap()).unwrap();
    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(report.sources[0].migrated, 20);
    let target = parse_kid(report.target.as_ref().unwrap()).unwrap();
    let bundle = c
        .get_key(&target.vault_url, &target.name, None)
        .await
        .unwrap();
    assert_eq!(bundle.key.kty.as_deref(), Some("RSA-HSM"));
    let platform = bundle.attributes.hsm_platform;
    assert!(
        platform.as_deref().is_some_and(|p| p.contains("SoftHSM")),
        "the new key is held in the token: {platform:?}"
    );
    for (i, line) in std::fs::read_to_string(&list).unwrap().lines().enumerate() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["alg"], "RSA-OAEP", "items get the plan's algorithm");
        let wrapped = b64::decode(r["wrapped_key"].as_str().unwrap()).unwrap();
        let out = c.unwrap_key(&target, "RSA-OAEP", &wrapped).await.unwrap();
        assert_eq!(out.value, vec![i as u8; 32]);
    }
}

/// Scenario (c) at full size: 10,000 2-level files rewrapped through the batch API, and 1 GiB of
/// 3-level files re-encrypted under a new keyring. The files are made locally under a key whose
/// value is known (imported into the vault as an oct-HSM key), so making them costs no request.
#[tokio::test]
async fn ten_thousand_files_rewrapped_and_a_gibibyte_reencrypted() {
    let s = TestServer::start().await;
    let k: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let (st, key) = s
        .call(
            Method::PUT,
            &v("/keys/known"),
            Some(json!({"key": {"kty": "oct-HSM", "k": b64::encode(&k), "key_ops": ["wrapKey", "unwrapKey"]}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{key}");
    let source = key["key"]["kid"].as_str().unwrap().to_owned();
    let mut local = keyshift_envelope::LocalKek::new();
    local.insert(source.clone(), &k).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    for i in 0..10_000u32 {
        let sub = small.join(format!("{:02}", i % 50));
        if i < 50 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        let enc = Encryptor::two_level(&local, &source, b"tenant=a", 4096)
            .await
            .unwrap();
        std::fs::write(
            sub.join(format!("{i}.ksenv")),
            enc.encrypt_to_vec(&i.to_be_bytes()).unwrap(),
        )
        .unwrap();
    }
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let old_keyring = dir.path().join("keyring.json");
    let (keyring, master) = Keyring::create(&local, &source, 1).await.unwrap();
    std::fs::write(&old_keyring, keyring.to_json()).unwrap();
    const PART: usize = 128 << 20;
    let mut chunk = vec![0u8; 1 << 20];
    for f in 0..8u8 {
        let mut plain = Vec::with_capacity(PART);
        for c in 0..(PART >> 20) {
            chunk
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (j ^ c ^ usize::from(f)) as u8);
            plain.extend_from_slice(&chunk);
        }
        let enc = Encryptor::three_level(&master, b"big", 1 << 20).unwrap();
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(big.join(format!("part{f}.ksenv"))).unwrap(),
        );
        enc.encrypt_stream(&plain[..], &mut out).unwrap();
        std::io::Write::flush(&mut out).unwrap();
    }

    let new_keyring = dir.path().join("keyring-2.json");
    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![
            DataSource::EnvelopeDir {
                path: small.clone(),
                mode: Mode::Rewrap,
                context: String::new(),
                keyring: None,
                target_keyring: None,
            },
            DataSource::EnvelopeDir {
                path: big.clone(),
                mode: Mode::Reencrypt,
                context: "big".into(),
                keyring: Some(old_keyring.clone()),
                target_keyring: Some(new_keyring.clone()),
            },
        ],
    );
    req.target_name = "files-2".into();
    write_plan(&req).await;
    let started = std::time::Instant::now();
    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    eprintln!(
        "10,000 files rewrapped and 1 GiB re-encrypted in {:?}",
        started.elapsed()
    );
    assert!(report.complete, "{:?}", report.failures.first());
    assert_eq!(report.sources[0].migrated, 10_000);
    assert_eq!(
        report.sources[0].batches, 10,
        "1,000 files per rewrap request"
    );
    assert_eq!(report.sources[1].migrated, 8);
    assert_eq!(
        report.sources[1].bytes,
        std::fs::read_dir(&big)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum::<u64>()
    );
    let target = report.target.clone().unwrap();
    let k2 = kek(&s);
    for i in [0u32, 4_999, 9_999] {
        let path = small
            .join(format!("{:02}", i % 50))
            .join(format!("{i}.ksenv"));
        let header = opens(k2.as_ref(), None, &path, &i.to_be_bytes()).await;
        assert_eq!(header.kek_kid(), Some(target.as_str()));
    }
    let ver = engine::verify(&req.plan_path, None).await.unwrap();
    assert_eq!(ver[0].1.checked, 10_000);
    assert_eq!(ver[1].1.checked, 8);
    assert!(ver.iter().all(|(_, v)| v.broken.is_empty()));
}

/// The target can be a key brought from the customer's HSM (a BYOK transfer blob imported by
/// `apply`); identities that used the old version without holding a role on it any more are in
/// the plan, with the usage that put them there.
#[tokio::test]
async fn a_byok_target_and_grants_drafted_from_usage() {
    use keyshift_crypto::transfer::{rsa_aes_key_wrap, TransferWrap};
    let s = TestServer::start().await;
    let url = s.url();
    let source = create(&s, &url, "old-kek", json!({"kty": "oct-HSM"})).await;
    // A workload used the old key, then lost its role (the assignment was removed).
    let vault = s.deployment().default_vault().unwrap();
    let p = s.deployment().create_principal("batch-job").await.unwrap();
    let a = s
        .deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/old-kek",
            "Key Vault Crypto Service Encryption User",
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    let token = s.token_for(&p.principal.client_id, &p.client_secret).await;
    let c = client(&s);
    let src = parse_kid(&source).unwrap();
    let w = c.wrap_key(&src, "A256KW", &[9u8; 32]).await.unwrap();
    let (st, _) = s
        .call_as(
            &token,
            &url,
            Method::POST,
            &v("/keys/old-kek//unwrapkey"),
            Some(json!({"alg": "A256KW", "value": b64::encode(&w.value)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    s.deployment()
        .remove_role_assignment(&keyshift_vault::RequestContext::local(), &vault, &a.name)
        .await
        .unwrap();

    // The customer's AES key, wrapped for a key-exchange key of the target vault.
    let (st, kek) = s
        .call(
            Method::POST,
            &v("/keys/byok-kek/create"),
            Some(json!({"kty": "RSA-HSM", "key_size": 3072, "key_ops": ["import"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{kek}");
    let m = |k: &str| b64::decode(kek["key"][k].as_str().unwrap()).unwrap();
    let kek_public = keyshift_crypto::PublicKey::Rsa {
        n: m("n"),
        e: m("e"),
    };
    let customer_key = [0x42u8; 32];
    let wrap = TransferWrap::RsaAesKeyWrap;
    let blob = json!({"schema_version": "1.0.0",
        "header": {"kid": kek["key"]["kid"], "alg": "dir", "enc": wrap.name()},
        "ciphertext": b64::encode(&rsa_aes_key_wrap(&kek_public, wrap.hash(), &customer_key).unwrap()),
        "generator": "keyshift-testkit"});
    let dir = tempfile::tempdir().unwrap();
    let blob_path = dir.path().join("customer.byok");
    std::fs::write(&blob_path, serde_json::to_vec(&blob).unwrap()).unwrap();
    let list = dir.path().join("keys.jsonl");
    std::fs::write(
        &list,
        format!(
            "{}\n",
            json!({"id": 1, "kid": w.kid, "alg": "A256KW", "wrapped_key": b64::encode(&w.value)})
        ),
    )
    .unwrap();

    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![DataSource::WrappedKeys { path: list.clone() }],
    );
    req.target_name = "customer-key".into();
    req.byok = Some(blob_path);
    let plan = write_plan(&req).await;
    assert_eq!(
        plan.target.byok.as_deref(),
        Some(Path::new("customer.byok"))
    );
    let grant = plan
        .grants
        .iter()
        .find(|g| g.principal == p.principal.id)
        .expect("the identity that used the old version is in the plan");
    assert_eq!(grant.role, "Key Vault Crypto Service Encryption User");
    assert!(grant.reason.contains("KeyUnwrap x1"), "{}", grant.reason);

    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert!(report.complete, "{report:?}");
    // The target is the customer's key: its item unwraps locally with the customer's bytes.
    let line: Value = serde_json::from_str(std::fs::read_to_string(&list).unwrap().trim()).unwrap();
    let target = report.target.unwrap();
    assert_eq!(line["kid"], target);
    let mut local = keyshift_envelope::LocalKek::new();
    local.insert(target.clone(), &customer_key).unwrap();
    let wrapped = keyshift_envelope::WrappedKey {
        kid: target,
        alg: "A256KW".into(),
        bytes: b64::decode(line["wrapped_key"].as_str().unwrap()).unwrap(),
    };
    assert_eq!(local.unwrap(&wrapped).await.unwrap().as_slice(), &[9u8; 32]);
    // The workload holds its role on the new key and uses it.
    let (st, out) = s
        .call_as(
            &token,
            &url,
            Method::POST,
            &v("/keys/customer-key//unwrapkey"),
            Some(json!({"alg": "A256KW", "value": line["wrapped_key"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
}
