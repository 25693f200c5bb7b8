//! The PostgreSQL column source of migration campaigns, end to end: a real PostgreSQL (its URL in
//! `KEYSHIFT_TEST_POSTGRES_URL`; `scripts/test.sh` and `.ci/run` start one with
//! `scripts/postgres-test-server.sh`) and real Keyshift servers.
//!
//! Scenario (e): a table of data keys wrapped under an RSA key, with the AES-GCM ciphertexts made
//! with them, moves to a key in another vault while the application keeps reading random rows and
//! writing new rows under the old key; then a table of whole 2-level envelopes; a campaign killed
//! mid-way and resumed; and the plans that are refused.
//!
//! Without `KEYSHIFT_TEST_POSTGRES_URL` the tests that need the database say they are skipped and
//! pass, unless `KEYSHIFT_REQUIRE_POSTGRES=1` (CI), where they fail. Each test works in its own
//! schema, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_client::{parse_kid, KeyClient, Kid};
use keyshift_crypto::gcm::{Aes256GcmKey, NONCE_LEN, TAG_LEN};
use keyshift_envelope::{Decryptor, Encryptor, Header, Kek, Keyring, RemoteKek};
use keyshift_migrate::engine::{self, ApplyOptions, PlanRequest};
use keyshift_migrate::journal::{self, Batch, Journal};
use keyshift_migrate::plan::{DataSource, PgLayout, Plan};
use keyshift_migrate::progress::Style;
use keyshift_testkit::{v, TestServer};
use keyshift_vault::VaultKind;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const QUIET: ApplyOptions = ApplyOptions {
    progress: Some(Style::Quiet),
};

/// The plans name the test's own variable: nothing sets environment variables here.
const URL_ENV: &str = "KEYSHIFT_TEST_POSTGRES_URL";

/// The test database's URL; `None` (the test is skipped) without one, unless it is required.
fn database_url() -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("KEYSHIFT_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
            "KEYSHIFT_REQUIRE_POSTGRES=1 but {URL_ENV} is not set: start a server with \
             scripts/postgres-test-server.sh"
        ),
        _ => {
            eprintln!(
                "SKIPPED: {URL_ENV} is not set, so the PostgreSQL tests do not run \
                 (scripts/test.sh starts a server when PostgreSQL is installed)"
            );
            None
        }
    }
}

/// A pool on the test database, with a fresh schema of the test's own.
async fn database(url: &str, schema: &str) -> PgPool {
    let pool = PgPoolOptions::new()
        // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
        // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
        .idle_timeout(None)
        .max_lifetime(None)
        .max_connections(4)
        .connect(url)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
    ))
    .execute(&pool)
    .await
    .unwrap();
    pool
}

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

fn now() -> i64 {
    #[allow(clippy::disallowed_methods)]
    let t = std::time::SystemTime::now();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn request(s: &TestServer, dir: &Path, source_kid: &str, sources: Vec<DataSource>) -> PlanRequest {
    PlanRequest {
        name: "pg-campaign".into(),
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

fn wrapped_key_source(
    table: &str,
    id: &str,
    kid: &str,
    wrapped: &str,
    alg: Option<&str>,
) -> DataSource {
    DataSource::Postgres {
        url_env: URL_ENV.into(),
        table: table.into(),
        id_column: id.into(),
        layout: PgLayout::WrappedKey,
        kid_column: Some(kid.into()),
        wrapped_column: Some(wrapped.into()),
        alg_column: alg.map(str::to_owned),
        data_column: None,
    }
}

/// Drafts the plan, sets its limits and writes it.
async fn write_plan(req: &PlanRequest, batch: usize, concurrency: usize, rps: f64) -> Plan {
    let mut plan = engine::plan(req, false).await.unwrap().plan;
    plan.limits.batch_size = batch;
    plan.limits.concurrency = concurrency;
    plan.limits.requests_per_second = rps;
    std::fs::write(&req.plan_path, plan.to_toml().unwrap()).unwrap();
    plan
}

/// `n` random data keys wrapped under `kid`, eight requests at a time: (key, kid, wrapped).
async fn wrap_many(
    c: &KeyClient,
    kid: &Kid,
    alg: &str,
    n: usize,
) -> Vec<(Vec<u8>, String, Vec<u8>)> {
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, kid, alg, limit) = (c.clone(), kid.clone(), alg.to_owned(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let dek = keyshift_crypto::random_bytes(32).unwrap();
            let w = c.wrap_key(&kid, &alg, &dek).await.unwrap();
            (dek, w.kid, w.value)
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// AES-256-GCM under a data key, bound to the row's id: nonce || ciphertext || tag.
fn seal(dek: &[u8], id: i64, plain: &[u8]) -> Vec<u8> {
    let key = Aes256GcmKey::new(dek).unwrap();
    let nonce: [u8; NONCE_LEN] = keyshift_crypto::random_bytes(NONCE_LEN)
        .unwrap()
        .try_into()
        .unwrap();
    let mut body = plain.to_vec();
    let tag = key
        .seal_in_place(&nonce, &id.to_be_bytes(), &mut body)
        .unwrap();
    [nonce.as_slice(), &body, &tag].concat()
}

fn open(dek: &[u8], id: i64, sealed: &[u8]) -> Result<Vec<u8>, String> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err("the ciphertext is too short".into());
    }
    let key = Aes256GcmKey::new(dek).map_err(|e| e.to_string())?;
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().unwrap();
    let (body, tag) = sealed[NONCE_LEN..].split_at(sealed.len() - NONCE_LEN - TAG_LEN);
    let mut out = body.to_vec();
    key.open_in_place(&nonce, &id.to_be_bytes(), &mut out, tag)
        .map_err(|e| format!("the ciphertext does not open: {e}"))?;
    Ok(out)
}

/// What the application does to read a row: unwrap its data key through the vault with whichever
/// kid the row holds, then decrypt. Returns the kid and the plaintext.
async fn read_order(db: &PgPool, c: &KeyClient, id: i64) -> Result<(String, Vec<u8>), String> {
    let row = sqlx::query(
        "SELECT kek_kid, alg, wrapped_dek, ciphertext FROM mig_column.orders WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .map_err(|e| e.to_string())?;
    let kid: String = row.get(0);
    let alg: String = row.get(1);
    let wrapped: Vec<u8> = row.get(2);
    let sealed: Vec<u8> = row.get(3);
    let key = c
        .unwrap_key(&parse_kid(&kid).map_err(|e| e.to_string())?, &alg, &wrapped)
        .await
        .map_err(|e| format!("unwrap under {kid}: {e}"))?;
    let plain = open(&key.value, id, &sealed)?;
    if !plain.starts_with(format!("order {id} ").as_bytes()) {
        return Err(format!("row {id} holds another row's data"));
    }
    Ok((kid, plain))
}

fn walk_batches(batches: &[Batch]) -> Vec<&Batch> {
    batches
        .iter()
        .filter(|b| b.cursor.starts_with("0 "))
        .collect()
}

const ORDERS: i64 = 2000;
const WRITES: usize = 30;

/// Scenario (e): 2,000 rows of data keys wrapped under an RSA-2048 key, and the AES-GCM
/// ciphertexts made with them, move to a key in another vault (kv2) while a reader keeps opening
/// random rows with whichever kid each holds, and a writer keeps replacing rows with new data
/// under the OLD key (as a not-yet-switched instance of the application would). The campaign
/// never overwrites the writer's rows: a row changed between the campaign's read and its switch
/// is left as written (skipped, with the reason in the journal), and the sweep after the walk
/// moves it, as it moves rows written behind the walk's cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_e_a_column_moves_to_another_vault_while_the_application_reads_and_writes() {
    let Some(url) = database_url() else {
        return;
    };
    let s = TestServer::start().await;
    // kv2.localhost: the one extra host name the test machines resolve (/etc/hosts, `.ci/run`).
    let kv2 = second_vault(&s, "kv2").await;
    let source = create(
        &s,
        &s.url(),
        "orders-cmk",
        json!({"kty": "RSA", "key_size": 2048}),
    )
    .await;
    let src = parse_kid(&source).unwrap();
    let db = database(&url, "mig_column").await;
    sqlx::raw_sql(
        "CREATE TABLE mig_column.orders (id bigint PRIMARY KEY, kek_kid text NOT NULL, \
         alg text NOT NULL, wrapped_dek bytea NOT NULL, ciphertext bytea NOT NULL)",
    )
    .execute(&db)
    .await
    .unwrap();
    let c = client(&s);
    let wrapped = wrap_many(&c, &src, "RSA-OAEP-256", ORDERS as usize).await;
    let expected: Arc<Mutex<HashMap<i64, Vec<u8>>>> = Arc::default();
    let (mut ids, mut kids, mut algs, mut keys, mut sealed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (dek, kid, w)) in wrapped.into_iter().enumerate() {
        let id = i as i64 + 1;
        let plain = format!("order {id} v0: {} widgets", id * 7).into_bytes();
        sealed.push(seal(&dek, id, &plain));
        expected.lock().unwrap().insert(id, plain);
        ids.push(id);
        kids.push(kid);
        algs.push("RSA-OAEP-256".to_owned());
        keys.push(w);
    }
    sqlx::query(
        "INSERT INTO mig_column.orders SELECT * FROM \
         unnest($1::int8[], $2::text[], $3::text[], $4::bytea[], $5::bytea[])",
    )
    .bind(ids)
    .bind(kids)
    .bind(algs)
    .bind(keys)
    .bind(sealed)
    .execute(&db)
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![wrapped_key_source(
            "mig_column.orders",
            "id",
            "kek_kid",
            "wrapped_dek",
            Some("alg"),
        )],
    );
    req.target_vault = Some(kv2.clone());
    req.target_name = "orders-cmk-2027".into();
    let draft = engine::plan(&req, true).await.unwrap();
    assert_eq!(draft.items, ORDERS as u64, "the dry run counts the rows");
    assert!(!req.plan_path.exists(), "a dry run writes nothing");
    // 100 rows a batch, 10 requests a second: the walk takes seconds, so the application's
    // reads and writes happen during it.
    write_plan(&req, 100, 2, 10.0).await;

    let campaign = tokio::spawn({
        let path = req.plan_path.clone();
        async move { engine::apply(&path, QUIET).await }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (db, c, stop) = (db.clone(), c.clone(), stop.clone());
        async move {
            let (mut reads, mut under_target, mut errors) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let id = fastrand::i64(1..=ORDERS);
                match read_order(&db, &c, id).await {
                    Ok((kid, _)) => {
                        reads += 1;
                        under_target += u64::from(kid.contains("kv2.localhost"));
                    }
                    Err(e) => errors.push(e),
                }
            }
            (reads, under_target, errors)
        }
    });
    let writer = tokio::spawn({
        let (db, c, src, expected) = (db.clone(), c.clone(), src.clone(), expected.clone());
        async move {
            let mut written = Vec::new();
            for k in 1..=WRITES {
                tokio::time::sleep(Duration::from_millis(60)).await;
                // Writes stop before the walk ends (so before the sweeps): a writer that goes on
                // using the old key after the last sweep is what the campaign cannot outrun.
                let switched: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM mig_column.orders WHERE kek_kid LIKE '%kv2.localhost%'",
                )
                .fetch_one(&db)
                .await
                .map_err(|e| e.to_string())?;
                if switched > ORDERS * 8 / 10 {
                    break;
                }
                // Every other write goes just past the rows already switched: into a batch the
                // campaign has read and not yet switched.
                let last: Option<i64> = sqlx::query_scalar(
                    "SELECT max(id) FROM mig_column.orders WHERE kek_kid LIKE '%kv2.localhost%'",
                )
                .fetch_one(&db)
                .await
                .map_err(|e| e.to_string())?;
                let id = match last {
                    Some(last) if k % 2 == 0 => (last + fastrand::i64(1..=60)).min(ORDERS),
                    _ => fastrand::i64(1..=ORDERS),
                };
                let dek = keyshift_crypto::random_bytes(32).unwrap();
                let w = c
                    .wrap_key(&src, "RSA-OAEP-256", &dek)
                    .await
                    .map_err(|e| format!("the writer cannot wrap under the old key: {e}"))?;
                let plain = format!("order {id} v{k}: rewritten").into_bytes();
                sqlx::query(
                    "UPDATE mig_column.orders SET kek_kid = $1, alg = 'RSA-OAEP-256', \
                     wrapped_dek = $2, ciphertext = $3 WHERE id = $4",
                )
                .bind(&w.kid)
                .bind(&w.value)
                .bind(seal(&dek, id, &plain))
                .bind(id)
                .execute(&db)
                .await
                .map_err(|e| e.to_string())?;
                expected.lock().unwrap().insert(id, plain);
                written.push(id);
            }
            Ok::<_, String>(written)
        }
    });

    let report = campaign.await.unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap().unwrap();
    let (reads, reads_under_target, errors) = reader.await.unwrap();
    assert!(errors.is_empty(), "the reader failed: {errors:?}");
    assert!(
        reads >= 20,
        "the reader read {reads} rows during the campaign"
    );
    assert!(
        reads_under_target > 0 && reads_under_target < reads,
        "the reader saw both kids ({reads_under_target} of {reads} under the target)"
    );
    assert!(
        written.len() >= 10,
        "the writer wrote {} rows",
        written.len()
    );
    assert!(report.complete, "{report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let target = parse_kid(report.target.as_ref().unwrap()).unwrap();
    assert!(target.vault_url.as_str().contains("kv2.localhost"));

    // Every row is under the target and opens, holding what was last written to it: the
    // writer's rows hold the writer's data, never the campaign's copy of the old data.
    let rows = sqlx::query("SELECT id, kek_kid, alg FROM mig_column.orders ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), ORDERS as usize);
    for r in &rows {
        assert_eq!(r.get::<String, _>(1), target.to_string());
        assert_eq!(r.get::<String, _>(2), "RSA-OAEP-256");
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let mut checks = Vec::new();
    for id in 1..=ORDERS {
        let (db, c, limit, want) = (
            db.clone(),
            c.clone(),
            limit.clone(),
            expected.lock().unwrap()[&id].clone(),
        );
        checks.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let (_, plain) = read_order(&db, &c, id).await.unwrap();
            assert_eq!(plain, want, "row {id}");
        }));
    }
    for c in checks {
        c.await.unwrap();
    }

    // The journal: the walk counted every row once; what it left to another writer (skipped, with
    // the reason) the sweeps moved, with what was written behind the walk's cursor.
    let journal = Journal::open_existing(&req.plan_path).await.unwrap();
    let batches = journal.batches(Some(0)).await.unwrap();
    let walk = walk_batches(&batches);
    assert_eq!(
        walk.iter()
            .map(|b| b.items + b.skipped + b.failed)
            .sum::<u64>(),
        ORDERS as u64,
        "the walk's batches count every row once"
    );
    let changed: u64 = walk.iter().map(|b| b.skipped).sum();
    let swept: u64 = batches
        .iter()
        .filter(|b| !b.cursor.starts_with("0 "))
        .map(|b| b.items)
        .sum();
    eprintln!(
        "reader: {reads} reads ({reads_under_target} under the target); writer: {} writes; \
         the walk left {changed} rows to the writer; the sweeps moved {swept}",
        written.len()
    );
    assert!(
        changed >= 1,
        "some writes landed in a batch between its read and its switch"
    );
    assert!(
        swept >= changed && swept <= changed + written.len() as u64,
        "the sweeps moved the rows the writer wrote under the old key ({swept} swept, \
         {changed} left to the writer, {} writes)",
        written.len()
    );
    assert_eq!(report.sources[0].migrated, ORDERS as u64 - changed + swept);
    let skips = journal.skips().await.unwrap();
    assert_eq!(skips.len() as u64, changed);
    assert!(skips.iter().all(|k| k.reason.contains("another writer")));
    assert_eq!(report.skips.len() as u64, changed);
    assert!(engine::report_text(&report).contains("skipped: source 0 row "));
    journal.close().await;

    // verify opens every row under the target; the old version is decrypt and unwrap only.
    let ver = engine::verify(&req.plan_path, None).await.unwrap();
    assert_eq!(ver[0].1.checked, ORDERS as u64);
    assert_eq!(ver[0].1.under_source, 0);
    assert!(ver[0].1.broken.is_empty(), "{:?}", ver[0].1.broken);
    let old = c
        .get_key(&src.vault_url, &src.name, src.version.as_deref())
        .await
        .unwrap();
    let ops = old.key.key_ops.unwrap();
    assert!(
        ops.iter().all(|o| o == "decrypt" || o == "unwrapKey"),
        "{ops:?}"
    );
    // A second apply changes nothing.
    let again = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert_eq!(again.sources[0].migrated, report.sources[0].migrated);
}

const OBJECTS: usize = 300;

/// A table of whole 2-level envelopes (text ids): each header's key slot is rewrapped under the
/// target and the segments are kept byte for byte; 3-level envelopes, bytes that are not an
/// envelope and NULLs are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_of_envelopes_has_its_key_slots_rewrapped() {
    let Some(url) = database_url() else {
        return;
    };
    let s = TestServer::start().await;
    let source = create(&s, &s.url(), "blobs", json!({"kty": "oct-HSM"})).await;
    let kek: Arc<dyn Kek> = Arc::new(RemoteKek::new(client(&s)));
    let db = database(&url, "mig_envelope").await;
    sqlx::raw_sql(
        "CREATE TABLE mig_envelope.objects (name varchar(40) PRIMARY KEY, body bytea, \
         note text)",
    )
    .execute(&db)
    .await
    .unwrap();
    let mut plains = HashMap::new();
    for i in 0..OBJECTS {
        let name = format!("obj-{i:04}");
        let plain: Vec<u8> = (0..(1000 + i * 53)).map(|j| (i * 31 + j) as u8).collect();
        let body = Encryptor::two_level(kek.as_ref(), &source, b"tenant=a", 4096)
            .await
            .unwrap()
            .encrypt_to_vec(&plain)
            .unwrap();
        sqlx::query("INSERT INTO mig_envelope.objects (name, body, note) VALUES ($1, $2, 'kept')")
            .bind(&name)
            .bind(body)
            .execute(&db)
            .await
            .unwrap();
        plains.insert(name, plain);
    }
    let (keyring, master) = Keyring::create(kek.as_ref(), &source, 1).await.unwrap();
    let three = Encryptor::three_level(&master, b"tenant=a", 4096)
        .unwrap()
        .encrypt_to_vec(b"moves with its keyring")
        .unwrap();
    let others: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("x-3level", Some(three)),
        ("x-garbage", Some(b"not an envelope".to_vec())),
        ("x-null", None),
    ];
    for (name, body) in &others {
        sqlx::query("INSERT INTO mig_envelope.objects (name, body) VALUES ($1, $2)")
            .bind(name)
            .bind(body)
            .execute(&db)
            .await
            .unwrap();
    }
    let before: HashMap<String, Option<Vec<u8>>> =
        sqlx::query("SELECT name, body FROM mig_envelope.objects")
            .fetch_all(&db)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![DataSource::Postgres {
            url_env: URL_ENV.into(),
            table: "mig_envelope.objects".into(),
            id_column: "name".into(),
            layout: PgLayout::Envelope,
            kid_column: None,
            wrapped_column: None,
            alg_column: None,
            data_column: Some("body".into()),
        }],
    );
    req.target_name = "blobs-2".into();
    let draft = engine::plan(&req, true).await.unwrap();
    assert_eq!(draft.items, OBJECTS as u64);
    assert_eq!(draft.inventory[0].1.other, 3);
    let plan = write_plan(&req, 64, 2, 0.0).await;
    assert!(plan.to_toml().unwrap().contains("kind = \"postgres\""));
    assert!(plan.to_toml().unwrap().contains("layout = \"envelope\""));

    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(report.sources[0].migrated, OBJECTS as u64);
    assert_eq!(report.sources[0].skipped, 3);
    assert_eq!(report.sources[0].batches, 5, "303 rows in batches of 64");
    let target = report.target.clone().unwrap();
    let rows = sqlx::query("SELECT name, body, note FROM mig_envelope.objects ORDER BY name")
        .fetch_all(&db)
        .await
        .unwrap();
    for r in &rows {
        let name: String = r.get(0);
        let body: Option<Vec<u8>> = r.get(1);
        let old = before[&name].clone();
        let Some(plain) = plains.get(&name) else {
            assert_eq!(body, old, "{name} is left alone");
            continue;
        };
        assert_eq!(r.get::<Option<String>, _>(2).as_deref(), Some("kept"));
        let (body, old) = (body.unwrap(), old.unwrap());
        let header = Header::parse(&body).unwrap();
        assert_eq!(header.kek_kid(), Some(target.as_str()));
        let old_header = Header::parse(&old).unwrap();
        assert_eq!(
            &body[header.len()..],
            &old[old_header.len()..],
            "{name}: the segments are kept"
        );
        let d = Decryptor::unlock(&header, kek.as_ref(), None, b"tenant=a")
            .await
            .unwrap();
        assert_eq!(&d.decrypt_slice(&body).unwrap(), plain, "{name}");
    }
    // The 3-level row still opens with its keyring (which would move as a keyring source).
    let three: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM mig_envelope.objects WHERE name = 'x-3level'")
            .fetch_one(&db)
            .await
            .unwrap();
    let h = Header::parse(&three).unwrap();
    let d = Decryptor::unlock(&h, kek.as_ref(), Some(&keyring), b"tenant=a")
        .await
        .unwrap();
    assert_eq!(d.decrypt_slice(&three).unwrap(), b"moves with its keyring");

    let ver = engine::verify(&req.plan_path, Some(25)).await.unwrap();
    assert_eq!(ver[0].1.checked, 25);
    assert!(ver[0].1.broken.is_empty());
    // A key slot swapped for another row's is caught: the header does not authenticate.
    let a: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM mig_envelope.objects WHERE name = 'obj-0000'")
            .fetch_one(&db)
            .await
            .unwrap();
    let b: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM mig_envelope.objects WHERE name = 'obj-0001'")
            .fetch_one(&db)
            .await
            .unwrap();
    let (ha, hb) = (Header::parse(&a).unwrap(), Header::parse(&b).unwrap());
    let forged = [
        ha.with_wrapped_key(hb.wrapped_key().unwrap())
            .unwrap()
            .as_bytes(),
        &a[ha.len()..],
    ]
    .concat();
    sqlx::query("UPDATE mig_envelope.objects SET body = $1 WHERE name = 'obj-0000'")
        .bind(forged)
        .execute(&db)
        .await
        .unwrap();
    let ver = engine::verify(&req.plan_path, None).await.unwrap();
    assert_eq!(ver[0].1.checked, OBJECTS as u64 - 1);
    assert_eq!(ver[0].1.broken.len(), 1, "{:?}", ver[0].1.broken);
    assert_eq!(ver[0].1.broken[0].0, "row obj-0000");
}

const KEYS: usize = 600;

/// A campaign killed mid-way (its task aborted while it works through small, rate-limited
/// batches) and applied again: the second run reads on from the journal's cursor, finds the rows
/// a killed batch may have switched already under the target, and every row ends under the
/// target once. The table has no alg column (the source key's default algorithm is assumed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_campaign_resumes_and_switches_every_row_once() {
    let Some(url) = database_url() else {
        return;
    };
    let s = TestServer::start().await;
    let source = create(&s, &s.url(), "tenant-kek", json!({"kty": "oct-HSM"})).await;
    let src = parse_kid(&source).unwrap();
    let db = database(&url, "mig_resume").await;
    sqlx::raw_sql(
        "CREATE TABLE mig_resume.tenant_keys (tenant integer PRIMARY KEY, \
         kek varchar(300) NOT NULL, dek bytea NOT NULL)",
    )
    .execute(&db)
    .await
    .unwrap();
    let c = client(&s);
    let wrapped = wrap_many(&c, &src, "A256KW", KEYS).await;
    let mut deks = HashMap::new();
    for (i, (dek, kid, w)) in wrapped.into_iter().enumerate() {
        // Ids with gaps and out of insertion order: the walk goes by id, not by position.
        let tenant = ((i * 7919) % KEYS) as i32 * 3 + 1;
        sqlx::query("INSERT INTO mig_resume.tenant_keys VALUES ($1, $2, $3)")
            .bind(tenant)
            .bind(kid)
            .bind(w)
            .execute(&db)
            .await
            .unwrap();
        deks.insert(tenant, dek);
    }
    assert_eq!(deks.len(), KEYS);

    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![wrapped_key_source(
            "mig_resume.tenant_keys",
            "tenant",
            "kek",
            "dek",
            None,
        )],
    );
    req.target_name = "tenant-kek-2".into();
    write_plan(&req, 20, 1, 20.0).await;

    let under_source = |db: PgPool, kid: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM mig_resume.tenant_keys WHERE kek = $1")
            .bind(kid)
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let killed = tokio::spawn({
        let path = req.plan_path.clone();
        async move { engine::apply(&path, QUIET).await }
    });
    let mut waited = 0;
    while under_source(db.clone(), source.clone()).await > (KEYS as i64) - 150 {
        waited += 1;
        assert!(waited < 600, "the campaign did not get going within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    killed.abort();
    assert!(killed.await.unwrap_err().is_cancelled());
    // A statement the killed run had sent may still land; then the table stands still.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = under_source(db.clone(), source.clone()).await;
    assert!(
        left > 0 && left <= (KEYS as i64) - 150,
        "{left} rows still under the source"
    );
    let j = Journal::open_existing(&req.plan_path).await.unwrap();
    let committed = j.batches(Some(0)).await.unwrap().len();
    j.close().await;
    assert!(committed >= 1, "the killed run committed batches");

    let report = engine::apply(&req.plan_path, QUIET).await.unwrap();
    assert!(report.complete, "{report:?}");
    let target = parse_kid(report.target.as_ref().unwrap()).unwrap();
    let rows = sqlx::query("SELECT tenant, kek, dek FROM mig_resume.tenant_keys")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), KEYS);
    for r in &rows {
        let tenant: i32 = r.get(0);
        assert_eq!(r.get::<String, _>(1), target.to_string(), "tenant {tenant}");
        let out = c
            .unwrap_key(&target, "A256KW", &r.get::<Vec<u8>, _>(2))
            .await
            .unwrap();
        assert_eq!(out.value, deks[&tenant], "tenant {tenant}");
    }

    // Every row once: the walk's batches, across both runs, count each row once, in id order;
    // at most the one batch the kill caught between its switch and its journal row was found
    // already switched by the second run.
    let journal = Journal::open_existing(&req.plan_path).await.unwrap();
    let batches = journal.batches(Some(0)).await.unwrap();
    journal.close().await;
    let walk = walk_batches(&batches);
    assert!(walk.len() > committed, "the second run went on");
    assert_eq!(
        walk.iter().map(|b| b.items + b.skipped).sum::<u64>(),
        KEYS as u64
    );
    assert!(walk.iter().all(|b| b.failed == 0));
    let items: u64 = walk.iter().map(|b| b.items).sum();
    assert!(items >= (KEYS - 20) as u64, "{items} switched by the walk");
    assert_eq!(report.sources[0].migrated, items, "no sweep found anything");
    let ends: Vec<i64> = walk
        .iter()
        .map(|b| b.cursor.split_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    assert_eq!(*ends.last().unwrap(), (KEYS as i64 - 1) * 3 + 1);
    let ver = engine::verify(&req.plan_path, None).await.unwrap();
    assert_eq!(ver[0].1.checked, KEYS as u64);
}

/// Plans that cannot be run are refused before anything is created: names that are not plain
/// SQL identifiers, a URL variable that is not set; with a database, a table or column that is
/// not there or not of a usable type.
#[tokio::test]
async fn bad_postgres_sources_are_refused_before_anything_is_done() {
    let s = TestServer::start().await;
    let source = create(&s, &s.url(), "k", json!({"kty": "oct-HSM"})).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&s);
    let vault = parse_kid(&source).unwrap().vault_url;

    // Identifiers: refused when drafting and when reading a plan edited by hand.
    for (table, id) in [
        ("orders; DROP TABLE orders", "id"),
        ("a.b.c", "id"),
        ("orders", "id\" OR 1=1 --"),
        ("Orders-2027", "id"),
    ] {
        let req = request(
            &s,
            dir.path(),
            &source,
            vec![wrapped_key_source(table, id, "kid", "wrapped", None)],
        );
        let e = engine::plan(&req, false).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("not a plain SQL identifier")
                || format!("{e:#}").contains("not a table name"),
            "{e:#}"
        );
    }
    let mut req = request(
        &s,
        dir.path(),
        &source,
        vec![wrapped_key_source("orders", "id", "kid", "wrapped", None)],
    );
    req.target_name = "never-created".into();
    let plan = write_plan(&req, 100, 1, 0.0).await;
    let text = plan.to_toml().unwrap();
    std::fs::write(
        &req.plan_path,
        text.replace(
            "wrapped_column = \"wrapped\"",
            "wrapped_column = \"wrapped; --\"",
        ),
    )
    .unwrap();
    let e = engine::apply(&req.plan_path, QUIET).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("not a plain SQL identifier"),
        "{e:#}"
    );

    // The URL's variable is not set: refused before the journal or the target key exist.
    std::fs::write(
        &req.plan_path,
        text.replace(
            &format!("url_env = \"{URL_ENV}\""),
            "url_env = \"KEYSHIFT_TEST_POSTGRES_URL_NEVER_SET\"",
        ),
    )
    .unwrap();
    let e = engine::apply(&req.plan_path, QUIET).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("KEYSHIFT_TEST_POSTGRES_URL_NEVER_SET is not set"),
        "{e:#}"
    );
    assert!(!journal::path_for(&req.plan_path).exists());
    let e = c.get_key(&vault, "never-created", None).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");

    // With a database: what is not there, or not usable, is named.
    let Some(url) = database_url() else {
        return;
    };
    let db = database(&url, "mig_refusals").await;
    sqlx::raw_sql(
        "CREATE TABLE mig_refusals.keys (id bigint PRIMARY KEY, n integer, kid text, \
         wrapped text, ok bytea); \
         CREATE TABLE mig_refusals.nopk (id bigint, kid text, wrapped bytea);",
    )
    .execute(&db)
    .await
    .unwrap();
    for (table, id, wrapped, want) in [
        ("mig_refusals.missing", "id", "ok", "does not exist"),
        (
            "mig_refusals.keys",
            "nothere",
            "ok",
            "has no column nothere",
        ),
        ("mig_refusals.keys", "id", "wrapped", "is text, not bytea"),
        ("mig_refusals.keys", "n", "ok", "must be the primary key"),
        (
            "mig_refusals.nopk",
            "id",
            "wrapped",
            "must be the primary key",
        ),
    ] {
        std::fs::write(
            &req.plan_path,
            text.replace("table = \"orders\"", &format!("table = \"{table}\""))
                .replace("id_column = \"id\"", &format!("id_column = \"{id}\""))
                .replace(
                    "wrapped_column = \"wrapped\"",
                    &format!("wrapped_column = \"{wrapped}\""),
                ),
        )
        .unwrap();
        let e = engine::apply(&req.plan_path, QUIET).await.unwrap_err();
        assert!(format!("{e:#}").contains(want), "{table}.{id}: {e:#}");
    }
    assert!(!journal::path_for(&req.plan_path).exists());
}
