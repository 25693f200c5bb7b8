//! The server-side rewrap extension over HTTPS: items under one key returned under another, in
//! this vault or another, without the plaintext leaving the server; per-item failures; the
//! actions it needs on each key; and its audit trail, item by item.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_testkit::{v, TestServer};
use keyshift_vault::audit::AuditFilter;
use keyshift_vault::{VaultKind, VaultSpec};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

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

async fn op(s: &TestServer, kid: &str, op: &str, body: Value) -> Value {
    let (base, path) = kid.split_at(kid.find("/keys/").unwrap());
    let (st, out) = s
        .call_at(base, Method::POST, &v(&format!("{path}/{op}")), Some(body))
        .await;
    assert_eq!(st, StatusCode::OK, "{op}: {out}");
    out
}

async fn kv2(s: &TestServer) -> String {
    s.deployment()
        .create_vault(
            &keyshift_vault::RequestContext::local(),
            VaultSpec {
                name: "kv2".into(),
                kind: VaultKind::Vault,
                retention_days: 7,
                purge_protection: false,
                port: None,
                new_security_domain: true,
                default: false,
            },
        )
        .await
        .unwrap();
    let url = format!("https://kv2.localhost:{}", s.addr().port());
    // The server reissues its certificate with the new host name within its refresh interval.
    for _ in 0..100 {
        if s.http.get(format!("{url}/health")).send().await.is_ok() {
            return url;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("kv2.localhost was not served within 10 s");
}

#[tokio::test]
async fn wrapped_keys_move_to_a_key_of_another_vault_without_leaving_the_server() {
    let s = TestServer::start().await;
    let url = s.url();
    let kv2 = kv2(&s).await;
    let old_v1 = create(&s, &url, "old", json!({"kty": "oct-HSM"})).await;
    // Data keys wrapped under two versions of the old key.
    let mut plain = Vec::new();
    let mut items = Vec::new();
    for i in 0..40u8 {
        if i == 20 {
            let (st, _) = s.call(Method::POST, &v("/keys/old/rotate"), None).await;
            assert_eq!(st, StatusCode::OK);
        }
        let dek = vec![i; 32];
        let wrapped = op(
            &s,
            &format!("{url}/keys/old/"),
            "wrapkey",
            json!({"alg": "A256KW", "value": b64::encode(&dek)}),
        )
        .await;
        items.push(json!({"kid": wrapped["kid"], "value": wrapped["value"]}));
        plain.push(dek);
    }
    assert!(items[0]["kid"]
        .as_str()
        .unwrap()
        .ends_with(old_v1.rsplit('/').next().unwrap()));
    // One item that is not a wrapped key of the old key.
    items.push(json!({"value": b64::encode(&[0u8; 40])}));
    let new = create(&s, &kv2, "new", json!({"kty": "RSA", "key_size": 2048})).await;

    let (st, out) = s
        .call(
            Method::POST,
            &v("/keys/old/rewrap"),
            Some(json!({"target": format!("{kv2}/keys/new"), "sourceAlg": "A256KW", "targetAlg": "RSA-OAEP-256", "items": items})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!(
        out["target"], new,
        "the target's current version, in its own vault"
    );
    let results = out["items"].as_array().unwrap();
    assert_eq!(results.len(), 41);
    let text = out.to_string();
    for (i, dek) in plain.iter().enumerate() {
        assert!(
            !text.contains(&b64::encode(dek)),
            "a plaintext left the server"
        );
        let unwrapped = op(
            &s,
            &new,
            "unwrapkey",
            json!({"alg": "RSA-OAEP-256", "value": results[i]["value"]}),
        )
        .await;
        assert_eq!(
            b64::decode(unwrapped["value"].as_str().unwrap()).unwrap(),
            *dek,
            "item {i}"
        );
    }
    assert_eq!(
        results[40]["error"]["code"], "BadParameter",
        "{}",
        results[40]
    );
    assert!(results[40]["value"].is_null());

    // Each item is audited as the operations it was: an unwrap under the version it was under,
    // a wrap under the target; the failed one as a refused unwrap.
    let events = s
        .deployment()
        .audit_events(&AuditFilter::default(), 100_000)
        .await
        .unwrap();
    let request = events
        .iter()
        .position(|e| e.operation == "KeyRewrap")
        .unwrap();
    let rewrap = &events[request];
    assert_eq!(rewrap.status, 200);
    let items: Vec<_> = events[request + 1..]
        .iter()
        .filter(|e| e.request_id == rewrap.request_id)
        .collect();
    assert_eq!(items.len(), 81);
    let unwraps = items
        .iter()
        .filter(|e| e.operation == "KeyUnwrap" && e.status == 200)
        .count();
    let wraps: Vec<_> = items.iter().filter(|e| e.operation == "KeyWrap").collect();
    assert_eq!((unwraps, wraps.len()), (40, 40));
    assert!(wraps
        .iter()
        .all(|e| e.vault == "kv2" && e.key.as_deref() == Some("new")));
    assert_eq!(items.iter().filter(|e| e.status == 400).count(), 1);
    let versions: std::collections::BTreeSet<_> = items
        .iter()
        .filter(|e| e.operation == "KeyUnwrap")
        .map(|e| e.version.clone().unwrap())
        .collect();
    assert_eq!(versions.len(), 2, "both source versions");
    // ... and counted in both keys' usage reports.
    let (_, usage) = s.call(Method::GET, &v("/keys/old/usage"), None).await;
    let unwrap_count: u64 = usage["versions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["usage"].as_array().unwrap().clone())
        .filter(|u| u["operation"] == "KeyUnwrap")
        .map(|u| u["count"].as_u64().unwrap())
        .sum();
    assert_eq!(unwrap_count, 40);
    let (_, usage) = s
        .call_at(&kv2, Method::GET, &v("/keys/new/usage"), None)
        .await;
    let wrap = usage["versions"][0]["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["operation"] == "KeyWrap")
        .cloned()
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(wrap["count"], 40);
}

#[tokio::test]
async fn ciphertexts_move_with_their_aad_and_a_pinned_source_version() {
    let s = TestServer::start().await;
    let url = s.url();
    let a1 = create(&s, &url, "a", json!({"kty": "oct-HSM"})).await;
    let (_, _) = s.call(Method::POST, &v("/keys/a/rotate"), None).await;
    let target = create(&s, &url, "b", json!({"kty": "oct-HSM"})).await;
    let aad = b64::encode(b"row 17");
    let mut items = Vec::new();
    for i in 0..5u8 {
        let c = op(
            &s,
            &a1,
            "encrypt",
            json!({"alg": "A256GCM", "value": b64::encode(&[i; 100]), "aad": aad}),
        )
        .await;
        items.push(json!({"value": c["value"], "iv": c["iv"], "tag": c["tag"], "aad": aad}));
    }
    // The path pins the old version (the latest is another); items name none.
    let a1_version = a1.rsplit('/').next().unwrap();
    let (st, out) = s
        .call(
            Method::POST,
            &v(&format!("/keys/a/{a1_version}/rewrap")),
            Some(json!({"target": target, "mode": "ciphertext", "sourceAlg": "A256GCM", "targetAlg": "A256GCM", "items": items})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    for (i, r) in out["items"].as_array().unwrap().iter().enumerate() {
        let plain = op(&s, &target, "decrypt", json!({"alg": "A256GCM", "value": r["value"], "iv": r["iv"], "tag": r["tag"], "aad": aad})).await;
        assert_eq!(
            b64::decode(plain["value"].as_str().unwrap()).unwrap(),
            vec![i as u8; 100]
        );
    }
    // A tag that does not verify is that item's failure only.
    let mut bad = items.clone();
    bad[2]["tag"] = json!(b64::encode(&[0u8; 16]));
    let (st, out) = s
        .call(
            Method::POST,
            &v(&format!("/keys/a/{a1_version}/rewrap")),
            Some(json!({"target": target, "mode": "ciphertext", "sourceAlg": "A256GCM", "targetAlg": "A256GCM", "items": bad})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let results = out["items"].as_array().unwrap();
    assert!(results[2]["error"].is_object() && results[1]["value"].is_string());
}

#[tokio::test]
async fn rewrap_needs_unwrap_on_the_source_and_wrap_on_the_target() {
    let s = TestServer::start().await;
    let url = s.url();
    create(&s, &url, "src", json!({"kty": "oct-HSM"})).await;
    create(&s, &url, "dst", json!({"kty": "oct-HSM"})).await;
    let wrapped = op(
        &s,
        &format!("{url}/keys/src/"),
        "wrapkey",
        json!({"alg": "A256KW", "value": b64::encode(&[1u8; 32])}),
    )
    .await;
    let p = s.deployment().create_principal("migrator").await.unwrap();
    let vault = s.deployment().default_vault().unwrap();
    let role = "Key Vault Crypto Service Encryption User";
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/src",
            role,
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    let token = s.token_for(&p.principal.client_id, &p.client_secret).await;
    let body = json!({"target": format!("{url}/keys/dst"), "sourceAlg": "A256KW", "targetAlg": "A256KW",
                      "items": [{"value": wrapped["value"]}]});
    let (st, out) = s
        .call_as(
            &token,
            &url,
            Method::POST,
            &v("/keys/src/rewrap"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys/wrap/action"),
        "{out}"
    );
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/dst",
            role,
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the role cache's bound
    let (st, out) = s
        .call_as(
            &token,
            &url,
            Method::POST,
            &v("/keys/src/rewrap"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert!(out["items"][0]["value"].is_string());
    // Only the target's wrap right is not enough the other way round.
    let back = json!({"target": format!("{url}/keys/src"), "sourceAlg": "A256KW", "targetAlg": "A256KW",
                      "items": [{"value": out["items"][0]["value"]}]});
    let p2 = s.deployment().create_principal("half").await.unwrap();
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/src",
            role,
            &p2.principal.id,
            None,
        )
        .await
        .unwrap();
    let token2 = s
        .token_for(&p2.principal.client_id, &p2.client_secret)
        .await;
    let (st, out) = s
        .call_as(
            &token2,
            &url,
            Method::POST,
            &v("/keys/dst/rewrap"),
            Some(back),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys/unwrap/action"),
        "{out}"
    );
}

#[tokio::test]
async fn bad_rewrap_requests_get_the_envelope() {
    let s = TestServer::start().await;
    let url = s.url();
    create(&s, &url, "src", json!({"kty": "oct-HSM"})).await;
    create(&s, &url, "dst", json!({"kty": "oct-HSM"})).await;
    let item = json!({"value": b64::encode(&[0u8; 40])});
    let body = |target: &str, items: Value, alg: &str| json!({"target": target, "sourceAlg": alg, "targetAlg": "A256KW", "items": items});
    let dst = format!("{url}/keys/dst");
    let many: Vec<Value> = (0..1001).map(|_| item.clone()).collect();
    for (what, path, b, status) in [
        (
            "no items",
            "/keys/src/rewrap",
            body(&dst, json!([]), "A256KW"),
            400,
        ),
        (
            "1001 items",
            "/keys/src/rewrap",
            body(&dst, json!(many), "A256KW"),
            400,
        ),
        (
            "target not a kid",
            "/keys/src/rewrap",
            body("dst", json!([item]), "A256KW"),
            400,
        ),
        (
            "target over http",
            "/keys/src/rewrap",
            body(&dst.replace("https", "http"), json!([item]), "A256KW"),
            400,
        ),
        (
            "target in no vault",
            "/keys/src/rewrap",
            body(
                &format!("https://nowhere.localhost:{}/keys/dst", s.addr().port()),
                json!([item]),
                "A256KW",
            ),
            404,
        ),
        (
            "target missing",
            "/keys/src/rewrap",
            body(&format!("{url}/keys/missing"), json!([item]), "A256KW"),
            404,
        ),
        (
            "source missing",
            "/keys/missing/rewrap",
            body(&dst, json!([item]), "A256KW"),
            404,
        ),
        (
            "unknown algorithm",
            "/keys/src/rewrap",
            body(&dst, json!([item]), "ROT13"),
            400,
        ),
        (
            "no body fields",
            "/keys/src/rewrap",
            json!({"items": []}),
            400,
        ),
    ] {
        let (st, out) = s.call(Method::POST, &v(path), Some(b)).await;
        assert_eq!(st.as_u16(), status, "{what}: {out}");
        assert!(out["error"]["code"].is_string(), "{what}: {out}");
    }
    // An item naming a version of another key fails alone.
    let (st, out) = s
        .call(
            Method::POST,
            &v("/keys/src/rewrap"),
            Some(body(&dst, json!([{"kid": format!("{url}/keys/dst/0123456789abcdef0123456789abcdef"), "value": item["value"]}]), "A256KW")),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(out["items"][0]["error"]["code"], "BadParameter");
    let (st, _) = s
        .call(
            Method::GET,
            &v("/keys/src/0123456789abcdef0123456789abcdef/rewrap"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}
