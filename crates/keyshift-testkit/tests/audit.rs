//! The audit log over HTTPS: every request that reaches a vault becomes an event before its answer
//! leaves, allowed or refused; the usage report counts what was used; nothing secret is recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_testkit::{v, TestServer};
use keyshift_vault::audit::{AuditEvent, AuditFilter};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn events(s: &TestServer) -> Vec<AuditEvent> {
    s.deployment()
        .audit_events(&AuditFilter::default(), 100_000)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_request_to_a_vault_is_an_event_before_its_answer() {
    let s = TestServer::start().await;
    let url = s.url();
    let admin_id = s.deployment().administrator().unwrap();

    // Refused before routing: no token, a bad token.
    let r = s
        .http
        .get(format!("{url}{}", v("/keys/k1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let unauth_id = r.headers()["x-ms-request-id"].to_str().unwrap().to_owned();
    let (st, _) = s
        .call_as("not.a.token", &url, Method::GET, &v("/keys/k1"), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Allowed: create, then wrap without naming the version.
    let (st, created) = s
        .call(
            Method::POST,
            &v("/keys/k1/create"),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let kid = created["key"]["kid"].as_str().unwrap().to_owned();
    let version = kid.rsplit('/').next().unwrap().to_owned();
    let r = s
        .http
        .post(format!("{url}{}", v("/keys/k1//wrapkey")))
        .bearer_auth(s.token())
        .header(
            "x-ms-client-request-id",
            "3f1c0e52-0000-4000-8000-000000000001",
        )
        .json(&json!({"alg": "A256KW", "value": b64::encode(&[9u8; 32])}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let wrap_id = r.headers()["x-ms-request-id"].to_str().unwrap().to_owned();

    // Refused by role: a principal with no role at all.
    let p = s.deployment().create_principal("nobody").await.unwrap();
    let token = s.token_for(&p.principal.client_id, &p.client_secret).await;
    let (st, _) = s
        .call_as(
            &token,
            &url,
            Method::POST,
            &v("/keys/k1//unwrapkey"),
            Some(json!({"alg": "A256KW", "value": b64::encode(&[1u8; 40])})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A bad request: an unknown api-version.
    let (st, _) = s
        .call(Method::GET, "/keys/k1?api-version=1999-01-01", None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Each answer above was sent after its event was durable, so all are here now, after the
    // three of the first start (the default vault, the administrator and its role).
    let with_first_start = events(&s).await;
    assert!(with_first_start[..3]
        .iter()
        .all(|e| e.principal.as_deref() == Some("local")));
    let all = with_first_start[3..].to_vec();
    let ops: Vec<(&str, u16)> = all
        .iter()
        .map(|e| (e.operation.as_str(), e.status))
        .collect();
    assert_eq!(
        ops,
        [
            ("Authentication", 401),
            ("Authentication", 401),
            ("KeyCreate", 200),
            ("KeyWrap", 200),
            ("KeyUnwrap", 403),
            ("KeyGet", 400),
        ]
    );
    assert_eq!(all[0].request_id, unauth_id);
    assert_eq!(all[0].principal, None);
    let wrap = &all[3];
    assert_eq!(wrap.request_id, wrap_id);
    assert_eq!(
        wrap.client_request_id.as_deref(),
        Some("3f1c0e52-0000-4000-8000-000000000001")
    );
    assert_eq!(wrap.principal.as_deref(), Some(admin_id.as_str()));
    assert_eq!(wrap.key.as_deref(), Some("k1"));
    assert_eq!(
        wrap.version.as_deref(),
        Some(version.as_str()),
        "the resolved version"
    );
    assert!(wrap.client.starts_with("127.0.0.1:"), "{}", wrap.client);
    assert_eq!(wrap.vault, s.deployment().default_vault().unwrap().name);
    assert!(wrap.latency_us > 0);
    assert_eq!(all[4].principal.as_deref(), Some(p.principal.id.as_str()));
    let v = s.deployment().verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!(v.events, 9);

    // Requests that reach no vault are not vault events.
    let r = s.http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(events(&s).await.len(), 9);
}

#[tokio::test]
async fn the_usage_report_over_https_and_who_may_read_it() {
    let s = TestServer::start().await;
    let url = s.url();
    let (_, created) = s
        .call(
            Method::POST,
            &v("/keys/old/create"),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
    let old_kid = created["key"]["kid"].as_str().unwrap().to_owned();
    let old_version = old_kid.rsplit('/').next().unwrap().to_owned();
    // A workload with Crypto User on this key wraps with it three times.
    let w = s.deployment().create_principal("workload").await.unwrap();
    let vault = s.deployment().default_vault().unwrap();
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/old",
            "Key Vault Crypto User",
            &w.principal.id,
            None,
        )
        .await
        .unwrap();
    let token = s.token_for(&w.principal.client_id, &w.client_secret).await;
    for _ in 0..3 {
        let (st, body) = s
            .call_as(
                &token,
                &url,
                Method::POST,
                &v("/keys/old//wrapkey"),
                Some(json!({"alg": "A256KW", "value": b64::encode(&[5u8; 32])})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    // The key rotates; the new version is unused.
    let (st, _) = s.call(Method::POST, &v("/keys/old/rotate"), None).await;
    assert_eq!(st, StatusCode::OK);

    let (st, report) = s.call(Method::GET, &v("/keys/old/usage"), None).await;
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(report["key"], format!("{url}/keys/old"));
    let versions = report["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["usage"], json!([]), "{report}");
    assert_eq!(versions[1]["kid"], old_kid);
    let lines = versions[1]["usage"].as_array().unwrap();
    let wraps = lines
        .iter()
        .find(|l| l["principal"] == w.principal.id.as_str() && l["operation"] == "KeyWrap")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(wraps["count"], 3);
    assert!(wraps["firstUsed"].as_str().unwrap() <= wraps["lastUsed"].as_str().unwrap());

    // One version; the same through its own path.
    let (st, one) = s
        .call(
            Method::GET,
            &v(&format!("/keys/old/{old_version}/usage")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(one["versions"].as_array().unwrap().len(), 1);

    // Reading the report takes keys/read on the key: a principal without a role is refused.
    let nobody = s.deployment().create_principal("nobody").await.unwrap();
    let nobody_token = s
        .token_for(&nobody.principal.client_id, &nobody.client_secret)
        .await;
    let (st, body) = s
        .call_as(
            &nobody_token,
            &url,
            Method::GET,
            &v("/keys/old/usage"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.KeyVault/vaults/keys/read"));
    // Bad inputs get the envelope.
    let (st, body) = s.call(Method::GET, &v("/keys/missing/usage"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, body) = s.call(Method::GET, &v("/keys/old/0123/usage"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, _) = s.call(Method::POST, &v("/keys/old/usage"), None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn events_hold_no_secret_token_or_key_material() {
    let s = TestServer::start().await;
    let url = s.url();
    // Sent in bodies, headers and paths: none of it may reach an event.
    let plaintext = b"audit-canary-plaintext-0123456789";
    let (_, created) = s
        .call(
            Method::POST,
            &v("/keys/canary/create"),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
    assert!(created["key"]["kid"].is_string());
    let (st, enc) = s
        .call(
            Method::POST,
            &v("/keys/canary//encrypt"),
            Some(json!({"alg": "A256GCM", "value": b64::encode(plaintext)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let ciphertext = enc["value"].as_str().unwrap().to_owned();
    // A name that is not a name is not copied into the event either.
    let (st, _) = s
        .call(Method::GET, &v("/keys/secret%20value%3Dhunter2"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let r = s
        .http
        .get(format!("{url}{}", v("/keys/canary")))
        .bearer_auth(s.token())
        .header("x-ms-client-request-id", "password=hunter2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let dump: String = events(&s)
        .await
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let token = s.token();
    let signature = token.rsplit('.').next().unwrap();
    for (what, needle) in [
        ("the client secret", s.admin.client_secret.as_str()),
        ("the token", token),
        ("the token's signature", signature),
        ("the plaintext", std::str::from_utf8(plaintext).unwrap()),
        ("the plaintext (base64url)", b64::encode(plaintext).as_str()),
        ("the ciphertext", ciphertext.as_str()),
        ("hunter2", "hunter2"),
    ] {
        assert!(!dump.contains(needle), "{what} is in an audit event");
    }
    // The positive control: the dump is of the events above.
    assert!(dump.contains("KeyEncrypt") && dump.contains("canary"));
    let parsed: Vec<Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(parsed
        .iter()
        .all(|e| e["client_request_id"].is_null() || e["client_request_id"] != "password=hunter2"));
}

/// Changes made with the command line on the data directory, beside a running server, are
/// events too: principal `local`, the user that ran the command as client, allowed or refused,
/// on one chain of the command line's own that verifies with the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_changes_are_audit_events() {
    let s = TestServer::start().await;
    let data = s.data_dir.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", data.as_str()];
        all.extend_from_slice(args);
        keyshift_testkit::keyshift(&all)
    };
    assert!(run(&["principal", "create", "made-by-the-cli"]));
    let made = s
        .deployment()
        .principals()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.display_name == "made-by-the-cli")
        .unwrap();
    assert!(run(&[
        "role",
        "assign",
        "Key Vault Crypto User",
        &made.client_id,
        "--scope",
        "/keys"
    ]));
    assert!(run(&["principal", "disable", &made.client_id]));
    // Refused: no such principal, no such role.
    assert!(!run(&["principal", "delete", "no-such-client"]));
    assert!(!run(&["role", "assign", "No Such Role", &made.id]));
    assert!(run(&["vault", "create", "cli-vault"]));
    assert!(run(&["vault", "enable-purge-protection", "cli-vault"]));
    assert!(run(&["token", "rotate-signing-key"]));
    // Reads are not changes: no event.
    assert!(run(&["principal", "list"]));
    assert!(run(&["role", "list"]));

    let all = events(&s).await;
    // The command line's, not the first start's (those are on the server's chain).
    let server_chain = s.deployment().audit_chain().unwrap().to_owned();
    let local: Vec<&AuditEvent> = all
        .iter()
        .filter(|e| e.principal.as_deref() == Some("local") && e.chain != server_chain)
        .collect();
    let seen: Vec<(&str, &str, Option<&str>, u16)> = local
        .iter()
        .map(|e| {
            (
                e.operation.as_str(),
                e.vault.as_str(),
                e.key.as_deref(),
                e.status,
            )
        })
        .collect();
    let id = Some(made.id.as_str());
    assert_eq!(
        seen,
        [
            ("PrincipalCreate", "", id, 200),
            ("RoleAssignmentCreate", "default", id, 200),
            ("PrincipalUpdate", "", id, 200),
            ("PrincipalDelete", "", Some("no-such-client"), 404),
            ("RoleAssignmentCreate", "default", id, 400),
            ("VaultCreate", "cli-vault", None, 200),
            ("VaultPurgeProtectionEnable", "cli-vault", None, 200),
            ("TokenSigningKeyRotate", "", None, 200),
        ]
    );
    // Every command ran as this process's user, on one chain that is not the server's.
    let chain = &local[0].chain;
    assert_ne!(Some(chain.as_str()), s.deployment().audit_chain());
    for e in &local {
        assert!(e.client.starts_with("local uid="), "{}", e.client);
        assert_eq!(&e.chain, chain);
        assert!(e.latency_us > 0);
    }
    // The chain is named in the data directory, so the next command continues it.
    let named = std::fs::read_to_string(s.data_dir.join("audit-chain-cli")).unwrap();
    assert_eq!(named.trim(), chain);

    // Commands run at the same time take turns on the chain: every change has its event.
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..3)
            .map(|i| {
                let name = format!("concurrent-{i}");
                let run = &run;
                scope.spawn(move || run(&["principal", "create", &name]))
            })
            .collect();
        for r in runs {
            assert!(r.join().unwrap());
        }
    });
    let created = events(&s)
        .await
        .into_iter()
        .filter(|e| {
            e.principal.as_deref() == Some("local")
                && e.operation == "PrincipalCreate"
                && e.chain != server_chain
        })
        .count();
    assert_eq!(created, 4);
    let v = s.deployment().verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
}

/// `keyshift audit prune`: refuses a time less than a day ago, writes what it drops to a new
/// file, and is itself an event. (What it drops and how the chains verify after it is tested
/// with a fake clock in keyshift-vault's tests/audit.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prune_command_guards_recent_events_and_is_audited() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = s.data_dir.to_str().unwrap().to_owned();
    let export = dir.path().join("pruned.jsonl");
    let export_arg = export.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", data.as_str()];
        all.extend_from_slice(args);
        keyshift_testkit::keyshift(&all)
    };
    let (st, _) = s.call(Method::GET, &v("/keys"), None).await;
    assert_eq!(st, StatusCode::OK);
    let before = events(&s).await.len();
    assert!(before > 0);

    let now = s.deployment().clock().now_millis() / 1000;
    let an_hour_ago = (now - 3600).to_string();
    let two_days_ago = (now - 2 * 86_400).to_string();
    assert!(!run(&["audit", "prune", "--before", &an_hour_ago]));
    assert!(!run(&["audit", "prune", "--before", "yesterday-ish"]));
    assert!(run(&[
        "audit",
        "prune",
        "--before",
        &two_days_ago,
        "--export",
        &export_arg
    ]));
    // Nothing was that old: every event is still there, and the export is empty.
    assert_eq!(std::fs::read_to_string(&export).unwrap(), "");
    let after = events(&s).await;
    let prunes: Vec<_> = after
        .iter()
        .filter(|e| e.operation == "AuditPrune")
        .collect();
    assert_eq!(prunes.len(), 1);
    assert_eq!(prunes[0].principal.as_deref(), Some("local"));
    assert_eq!(prunes[0].status, 200);
    assert!(after.len() > before);
    // The export file is never overwritten.
    assert!(!run(&[
        "audit",
        "prune",
        "--before",
        &two_days_ago,
        "--export",
        &export_arg
    ]));
    let v = s.deployment().verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!(v.pruned, 0);
}
