//! The admin API (`/{tenant}/keyshift/...`) over HTTPS with real tokens: the whole life of a
//! principal and a trusted issuer, and who is refused (401, 403) and what is refused (400, 404).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_crypto::KeyMaterial;
use keyshift_testkit::TestServer;
use rcgen::{CertificateParams, KeyPair, PKCS_RSA_SHA256};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn base(s: &TestServer) -> String {
    format!("{}/{}/keyshift", s.url(), s.admin.tenant_id)
}

async fn call(
    s: &TestServer,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = s.http.request(method, format!("{}{path}", base(s)));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&bytes);
    // Whatever the route, a secret hash never leaves the server.
    assert!(!text.contains("argon2"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("hash"), "{text}");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value, headers)
}

async fn admin(
    s: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (st, v, _) = call(s, Some(s.token()), method, path, body).await;
    (st, v)
}

fn jwks_file(dir: &std::path::Path) -> String {
    let key = KeyMaterial::generate_rsa(2048).unwrap();
    let keyshift_crypto::PublicKey::Rsa { n, e } = key.public_key() else {
        unreachable!()
    };
    let path = dir.join("jwks.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"keys": [{"kty": "RSA", "kid": "k1", "n": b64::encode(&n), "e": b64::encode(&e)}]}))
            .unwrap(),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_whole_life_of_a_principal_through_the_admin_api() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    // Create: the secret is shown once and works at the token endpoint.
    let (st, created) = admin(
        &s,
        Method::POST,
        "/principals",
        Some(json!({"displayName": "payments-api"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let client_id = created["clientId"].as_str().unwrap().to_owned();
    let secret = created["clientSecret"].as_str().unwrap().to_owned();
    assert_eq!(created["tenantId"], s.admin.tenant_id.as_str());
    assert_eq!(created["enabled"], true);
    assert_eq!(created["deploymentAdmin"], false);
    assert_eq!(created["secretCount"], 1);
    assert!(!s.token_for(&client_id, &secret).await.is_empty());

    // List, and get by object id and by client id; the secret is not shown again.
    let (st, list) = admin(&s, Method::GET, "/principals", None).await;
    assert_eq!(st, StatusCode::OK);
    let listed = list["value"].as_array().unwrap();
    assert!(listed.iter().any(|p| p["clientId"] == client_id.as_str()));
    let admin_entry = listed
        .iter()
        .find(|p| p["clientId"] == s.admin.client_id.as_str())
        .unwrap();
    assert_eq!(admin_entry["deploymentAdmin"], true);
    for key in [&id, &client_id] {
        let (st, p) = admin(&s, Method::GET, &format!("/principals/{key}"), None).await;
        assert_eq!(st, StatusCode::OK, "{p}");
        assert_eq!(p["id"], id.as_str());
        assert!(p.get("clientSecret").is_none());
    }

    // Disable and enable.
    let (st, p) = admin(
        &s,
        Method::PATCH,
        &format!("/principals/{client_id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!((st, &p["enabled"]), (StatusCode::OK, &json!(false)));
    let (st, p) = admin(
        &s,
        Method::PATCH,
        &format!("/principals/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!((st, &p["enabled"]), (StatusCode::OK, &json!(true)));

    // Another secret.
    let (st, added) = admin(
        &s,
        Method::POST,
        &format!("/principals/{client_id}/secrets"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{added}");
    let second = added["clientSecret"].as_str().unwrap();
    assert_ne!(second, secret);
    assert!(!s.token_for(&client_id, second).await.is_empty());
    let (_, p) = admin(&s, Method::GET, &format!("/principals/{id}"), None).await;
    assert_eq!(p["secretCount"], 2);

    // A certificate.
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let cert = CertificateParams::new(vec!["workload".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (st, p) = admin(
        &s,
        Method::POST,
        &format!("/principals/{client_id}/certificates"),
        Some(json!({"pem": cert.pem()})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert_eq!(
        p["certificates"][0]["x5t"],
        b64::encode(&keyshift_crypto::digest::sha1(cert.der())).as_str()
    );

    // A trusted issuer, then a federated credential naming it.
    let issuer = "https://oidc.admin-api.test.example";
    let jwks = jwks_file(dir.path());
    let (st, trusted) = admin(
        &s,
        Method::PUT,
        "/federation/issuers",
        Some(json!({"issuer": issuer, "jwksFile": jwks, "algorithms": ["RS256"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{trusted}");
    assert_eq!(trusted["algorithms"], json!(["RS256"]));
    let (st, issuers) = admin(&s, Method::GET, "/federation/issuers", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(issuers["value"][0]["jwksFile"], jwks.as_str());
    let (st, c) = admin(
        &s,
        Method::POST,
        &format!("/principals/{client_id}/federatedCredentials"),
        Some(json!({"name": "cluster-a", "issuer": issuer, "subject": "system:serviceaccount:payments:api"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!(c["audiences"], json!(["api://AzureADTokenExchange"]));
    let (st, list) = admin(
        &s,
        Method::GET,
        &format!("/principals/{id}/federatedCredentials"),
        None,
    )
    .await;
    assert_eq!(
        (st, list["value"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (st, one) = admin(
        &s,
        Method::GET,
        &format!("/principals/{id}/federatedCredentials/cluster-a"),
        None,
    )
    .await;
    assert_eq!(
        (st, &one["subject"]),
        (StatusCode::OK, &json!("system:serviceaccount:payments:api"))
    );
    let (st, _) = admin(
        &s,
        Method::POST,
        &format!("/principals/{client_id}/federatedCredentials"),
        Some(json!({"name": "cluster-a", "issuer": issuer, "subject": "other"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, removed) = admin(
        &s,
        Method::DELETE,
        &format!("/principals/{client_id}/federatedCredentials/cluster-a"),
        None,
    )
    .await;
    assert_eq!(
        (st, &removed["name"]),
        (StatusCode::OK, &json!("cluster-a"))
    );
    let (st, _) = admin(
        &s,
        Method::DELETE,
        &format!("/principals/{client_id}/federatedCredentials/cluster-a"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, removed) = admin(
        &s,
        Method::DELETE,
        &format!("/federation/issuers?issuer={}", urlencode(issuer)),
        None,
    )
    .await;
    assert_eq!((st, &removed["issuer"]), (StatusCode::OK, &json!(issuer)));
    let (_, issuers) = admin(&s, Method::GET, "/federation/issuers", None).await;
    assert_eq!(issuers["value"], json!([]));

    // Delete.
    let (st, _) = admin(&s, Method::DELETE, &format!("/principals/{id}"), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = admin(&s, Method::GET, &format!("/principals/{id}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "NotFound");
    // api-version is accepted and not required.
    let (st, _) = admin(&s, Method::GET, "/principals?api-version=2025-07-01", None).await;
    assert_eq!(st, StatusCode::OK);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn without_a_valid_token_the_admin_api_answers_the_keys_api_challenge() {
    let s = TestServer::start().await;
    let (_, _, keys_headers) = {
        let r = s
            .http
            .get(format!("{}/keys?api-version=2025-07-01", s.url()))
            .send()
            .await
            .unwrap();
        (r.status(), (), r.headers().clone())
    };
    let expected = keys_headers.get("www-authenticate").unwrap();
    for token in [None, Some("not-a-token"), Some("a.b.c")] {
        for (method, path) in [
            (Method::GET, "/principals"),
            (Method::POST, "/principals"),
            (Method::DELETE, "/principals/x"),
            (Method::GET, "/federation/issuers"),
        ] {
            let (st, body, headers) = call(&s, token, method.clone(), path, None).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(headers.get("www-authenticate"), Some(expected));
            assert_eq!(body["error"]["code"], "Unauthorized");
        }
    }
}

#[tokio::test]
async fn only_deployment_administrators_may_use_the_admin_api() {
    let s = TestServer::start().await;
    let d = s.deployment();
    // A principal with every role in the default vault is still not a deployment administrator.
    let user = d.create_principal("vault-admin-only").await.unwrap();
    let vault = d.default_vault().unwrap();
    d.assign_role(
        &keyshift_vault::RequestContext::local(),
        &vault,
        "/",
        "Key Vault Administrator",
        &user.principal.id,
        None,
    )
    .await
    .unwrap();
    let token = s
        .token_for(&user.principal.client_id, &user.client_secret)
        .await;
    for (method, path, body) in [
        (Method::GET, "/principals".to_owned(), None),
        (
            Method::POST,
            "/principals".to_owned(),
            Some(json!({"displayName": "x", "deploymentAdmin": true})),
        ),
        (
            Method::GET,
            format!("/principals/{}", s.admin.client_id),
            None,
        ),
        (
            Method::PATCH,
            format!("/principals/{}", user.principal.client_id),
            Some(json!({"enabled": true})),
        ),
        (
            Method::POST,
            format!("/principals/{}/secrets", user.principal.client_id),
            None,
        ),
        (Method::GET, "/federation/issuers".to_owned(), None),
        (
            Method::DELETE,
            "/federation/issuers?issuer=x".to_owned(),
            None,
        ),
    ] {
        let (st, body, _) = call(&s, Some(&token), method.clone(), &path, body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "Forbidden");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deployment administrator"));
    }
    assert_eq!(
        d.principal_by_client_id(&user.principal.client_id)
            .await
            .unwrap()
            .unwrap()
            .secret_hashes
            .len(),
        1
    );

    // A principal created as a deployment administrator may.
    let (st, made) = admin(
        &s,
        Method::POST,
        "/principals",
        Some(json!({"displayName": "second-admin", "deploymentAdmin": true})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let second = s
        .token_for(
            made["clientId"].as_str().unwrap(),
            made["clientSecret"].as_str().unwrap(),
        )
        .await;
    let (st, _, _) = call(&s, Some(&second), Method::GET, "/principals", None).await;
    assert_eq!(st, StatusCode::OK);

    // So does the administrator of a data directory made before the flag existed.
    let legacy = d.create_principal("legacy-admin").await.unwrap();
    assert!(!legacy.principal.deployment_admin);
    d.set_administrator(
        &keyshift_vault::RequestContext::local(),
        &legacy.principal.id,
    )
    .await
    .unwrap();
    let legacy_token = s
        .token_for(&legacy.principal.client_id, &legacy.client_secret)
        .await;
    let (st, _, _) = call(&s, Some(&legacy_token), Method::GET, "/principals", None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_get_clear_400s_and_unknown_things_404s() {
    let s = TestServer::start().await;
    let p = s.deployment().create_principal("target").await.unwrap();
    let cid = p.principal.client_id.clone();
    let dir = tempfile::tempdir().unwrap();
    let jwks = jwks_file(dir.path());
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::POST, "/principals".into(), None, "body is required"),
        (
            Method::POST,
            "/principals".into(),
            Some(json!({})),
            "displayName",
        ),
        (
            Method::POST,
            "/principals".into(),
            Some(json!({"displayName": ""})),
            "display name",
        ),
        (
            Method::POST,
            "/principals".into(),
            Some(json!({"displayName": 7})),
            "invalid",
        ),
        (
            Method::POST,
            "/principals".into(),
            Some(json!({"displayName": "x", "secret": "mine"})),
            "unknown field",
        ),
        (
            Method::POST,
            "/principals".into(),
            Some(json!([1, 2])),
            "invalid",
        ),
        (
            Method::PATCH,
            format!("/principals/{cid}"),
            Some(json!({"enabled": "yes"})),
            "invalid",
        ),
        (
            Method::PATCH,
            format!("/principals/{cid}"),
            Some(json!({"displayName": "x"})),
            "unknown field",
        ),
        (
            Method::PATCH,
            format!("/principals/{}", s.admin.client_id),
            Some(json!({"enabled": false})),
            "cannot disable itself",
        ),
        (
            Method::DELETE,
            format!("/principals/{}", s.admin.client_id),
            None,
            "cannot delete itself",
        ),
        (
            Method::POST,
            format!("/principals/{cid}/certificates"),
            Some(json!({"pem": "not a pem"})),
            "CERTIFICATE",
        ),
        (
            Method::POST,
            format!("/principals/{cid}/certificates"),
            Some(json!({})),
            "pem",
        ),
        (
            Method::POST,
            format!("/principals/{cid}/federatedCredentials"),
            Some(
                json!({"name": "cred-1", "issuer": "https://untrusted.test.example", "subject": "s"}),
            ),
            "not trusted",
        ),
        (
            Method::POST,
            format!("/principals/{cid}/federatedCredentials"),
            Some(json!({"name": "cred-1", "issuer": "https://untrusted.test.example"})),
            "subject",
        ),
        (
            Method::PUT,
            "/federation/issuers".into(),
            Some(json!({"issuer": "http://plain.test.example", "jwksFile": jwks})),
            "https://",
        ),
        (
            Method::PUT,
            "/federation/issuers".into(),
            Some(
                json!({"issuer": "https://i.test.example", "jwksFile": jwks, "algorithms": ["HS256"]}),
            ),
            "cannot be trusted",
        ),
        (
            Method::PUT,
            "/federation/issuers".into(),
            Some(
                json!({"issuer": "https://i.test.example", "jwksFile": jwks, "jwksUrl": "https://i.test.example/keys"}),
            ),
            "exactly one",
        ),
        (
            Method::PUT,
            "/federation/issuers".into(),
            Some(json!({"issuer": "https://i.test.example"})),
            "exactly one",
        ),
        (
            Method::PUT,
            "/federation/issuers".into(),
            Some(json!({"issuer": "https://i.test.example", "jwksFile": "/nonexistent/jwks.json"})),
            "cannot read",
        ),
        (
            Method::DELETE,
            "/federation/issuers".into(),
            None,
            "issuer query parameter",
        ),
    ];
    for (method, path, body, says) in cases {
        let (st, e) = admin(&s, method.clone(), &path, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{method} {path}: {e}");
        assert_eq!(e["error"]["code"], "BadParameter", "{method} {path}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{method} {path}: {message}");
    }
    // Bodies that are not JSON at all.
    let r = s
        .http
        .post(format!("{}/principals", base(&s)))
        .bearer_auth(s.token())
        .body("displayName=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    for (method, path) in [
        (Method::GET, "/principals/no-such-principal".to_owned()),
        (Method::DELETE, "/principals/no-such-principal".to_owned()),
        (
            Method::POST,
            "/principals/no-such-principal/secrets".to_owned(),
        ),
        (
            Method::DELETE,
            format!("/principals/{cid}/federatedCredentials/none"),
        ),
        (
            Method::DELETE,
            "/federation/issuers?issuer=https%3A%2F%2Fnever.test.example".to_owned(),
        ),
    ] {
        let (st, e) = admin(&s, method.clone(), &path, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {e}");
    }
    let (st, e) = admin(&s, Method::PUT, "/principals", None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(e["error"]["code"], "MethodNotAllowed");
    // The first administrator is still protected by the vault.
    assert_eq!(
        s.deployment()
            .delete_principal(&keyshift_vault::RequestContext::local(), &s.admin.client_id)
            .await
            .unwrap_err()
            .code,
        keyshift_api::ErrorCode::BadParameter
    );
}

#[tokio::test]
async fn a_deleted_principals_token_stops_working() {
    let s = TestServer::start().await;
    let (st, made) = admin(
        &s,
        Method::POST,
        "/principals",
        Some(json!({"displayName": "short-lived", "deploymentAdmin": true})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let token = s
        .token_for(
            made["clientId"].as_str().unwrap(),
            made["clientSecret"].as_str().unwrap(),
        )
        .await;
    let (st, _, _) = call(&s, Some(&token), Method::GET, "/principals", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin(
        &s,
        Method::DELETE,
        &format!("/principals/{}", made["clientId"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // Principal state is re-checked at most a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, _, _) = call(&s, Some(&token), Method::GET, "/principals", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .call_as(
            &token,
            &s.url(),
            Method::GET,
            &keyshift_testkit::v("/keys"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// Every admin API request is an audit event before its answer, allowed or refused: which
/// operation, who asked (none without a valid token), about which principal, with what result;
/// `vault` empty. The chain stays intact and holds no secret.
#[tokio::test]
async fn every_admin_api_request_is_an_audit_event() {
    use keyshift_vault::audit::AuditFilter;
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin_id = s.deployment().administrator().unwrap();

    let (st, created, headers) = call(
        &s,
        Some(s.token()),
        Method::POST,
        "/principals",
        Some(json!({"displayName": "audited"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let create_request = headers["x-ms-request-id"].to_str().unwrap().to_owned();
    let (id, client_id) = (
        created["id"].as_str().unwrap().to_owned(),
        created["clientId"].as_str().unwrap().to_owned(),
    );
    let secret = created["clientSecret"].as_str().unwrap().to_owned();
    let (st, _) = admin(
        &s,
        Method::POST,
        &format!("/principals/{client_id}/secrets"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let jwks = jwks_file(dir.path());
    let issuer = "https://oidc.audited.test.example";
    let (st, _) = admin(
        &s,
        Method::PUT,
        "/federation/issuers",
        Some(json!({"issuer": issuer, "jwksFile": jwks})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // Refused: a principal that is not a deployment administrator, and no token at all.
    let token = s.token_for(&client_id, &secret).await;
    let (st, _, _) = call(&s, Some(&token), Method::GET, "/principals", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = call(&s, None, Method::DELETE, &format!("/principals/{id}"), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = admin(
        &s,
        Method::PATCH,
        &format!("/principals/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin(
        &s,
        Method::DELETE,
        &format!("/principals/{client_id}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin(&s, Method::GET, &format!("/principals/{id}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let events = s
        .deployment()
        .audit_events(&AuditFilter::default(), 100_000)
        .await
        .unwrap();
    // The first start's defaults come first, made by the server itself (principal `local`).
    let first: Vec<(&str, &str, Option<&str>, Option<&str>)> = events
        .iter()
        .take(3)
        .map(|e| {
            (
                e.operation.as_str(),
                e.vault.as_str(),
                e.principal.as_deref(),
                e.key.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        first,
        [
            ("VaultCreate", "default", Some("local"), None),
            (
                "PrincipalCreate",
                "",
                Some("local"),
                Some(admin_id.as_str())
            ),
            (
                "AdministratorSet",
                "",
                Some("local"),
                Some(admin_id.as_str())
            ),
        ]
    );
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.vault.is_empty() && e.principal.as_deref() != Some("local"))
        .collect();
    let seen: Vec<(&str, Option<&str>, Option<&str>, u16)> = mine
        .iter()
        .map(|e| {
            (
                e.operation.as_str(),
                e.principal.as_deref(),
                e.key.as_deref(),
                e.status,
            )
        })
        .collect();
    let admin_id = Some(admin_id.as_str());
    assert_eq!(
        seen,
        [
            ("PrincipalCreate", admin_id, Some(id.as_str()), 201),
            ("PrincipalSecretAdd", admin_id, Some(id.as_str()), 201),
            ("IssuerTrust", admin_id, None, 200),
            ("PrincipalList", Some(id.as_str()), None, 403),
            ("PrincipalDelete", None, None, 401),
            ("PrincipalUpdate", admin_id, Some(id.as_str()), 200),
            ("PrincipalDelete", admin_id, Some(id.as_str()), 200),
            ("PrincipalGet", admin_id, None, 404),
        ]
    );
    assert_eq!(mine[0].request_id, create_request);
    assert!(mine
        .iter()
        .all(|e| !e.client.is_empty() && e.latency_us > 0));
    let v = s.deployment().verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&secret) && !text.contains(s.token()));
}

/// Attestation authorities (whom secure key release believes) are managed over the admin API
/// too, as federation issuers are, and each change is an audit event. That releases then work
/// with an authority trusted this way is shown by every release test (`trust_attestation`
/// uses this route).
#[tokio::test]
async fn attestation_authorities_through_the_admin_api() {
    use keyshift_vault::audit::AuditFilter;
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = jwks_file(dir.path());
    let authority = "https://attest.admin-api.test.example/";
    let (st, trusted) = admin(
        &s,
        Method::PUT,
        "/attestation/authorities",
        Some(json!({"issuer": authority, "jwksFile": jwks, "algorithms": ["RS256"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{trusted}");
    // Stored without the trailing `/`, as tokens and policies are matched.
    assert_eq!(trusted["issuer"], "https://attest.admin-api.test.example");
    let (st, list) = admin(&s, Method::GET, "/attestation/authorities", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["value"][0]["jwksFile"], jwks.as_str());
    for bad in [
        json!({"issuer": "http://attest.example", "jwksFile": jwks}),
        json!({"issuer": authority}),
        json!({"issuer": authority, "jwksFile": "/nonexistent/jwks.json"}),
        json!({"issuer": authority, "jwksFile": jwks, "caFile": "/x"}),
    ] {
        let (st, b) = admin(
            &s,
            Method::PUT,
            "/attestation/authorities",
            Some(bad.clone()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {b}");
    }
    let p = s.deployment().create_principal("not-admin").await.unwrap();
    let token = s.token_for(&p.principal.client_id, &p.client_secret).await;
    let (st, _, _) = call(
        &s,
        Some(&token),
        Method::PUT,
        "/attestation/authorities",
        Some(json!({"issuer": "https://evil.example", "jwksFile": jwks})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let remove = format!(
        "/attestation/authorities?issuer={}",
        urlencode("https://attest.admin-api.test.example")
    );
    let (st, removed) = admin(&s, Method::DELETE, &remove, None).await;
    assert_eq!(st, StatusCode::OK, "{removed}");
    let (st, _) = admin(&s, Method::DELETE, &remove, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(s
        .deployment()
        .attestation_authorities()
        .await
        .unwrap()
        .is_empty());

    let events = s
        .deployment()
        .audit_events(&AuditFilter::default(), 100_000)
        .await
        .unwrap();
    let ops: Vec<(&str, u16)> = events
        .iter()
        .filter(|e| e.operation.starts_with("AttestationAuthority"))
        .map(|e| (e.operation.as_str(), e.status))
        .collect();
    assert_eq!(
        ops,
        [
            ("AttestationAuthorityTrust", 200),
            ("AttestationAuthorityList", 200),
            ("AttestationAuthorityTrust", 400),
            ("AttestationAuthorityTrust", 400),
            ("AttestationAuthorityTrust", 400),
            ("AttestationAuthorityTrust", 400),
            ("AttestationAuthorityTrust", 403),
            ("AttestationAuthorityUntrust", 200),
            ("AttestationAuthorityUntrust", 404),
        ]
    );
}
