//! Role-based access over HTTPS with real tokens: a sample of the decision matrix, key-scoped
//! assignments, the 403 shape, and principals that are disabled or deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_testkit::{v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

struct Workload {
    client_id: String,
    principal_id: String,
    token: String,
}

async fn workload(s: &TestServer, name: &str) -> Workload {
    let p = s.deployment().create_principal(name).await.unwrap();
    let token = s.token_for(&p.principal.client_id, &p.client_secret).await;
    Workload {
        client_id: p.principal.client_id,
        principal_id: p.principal.id,
        token,
    }
}

fn denied_action(body: &Value) -> String {
    assert_eq!(body["error"]["code"], "Forbidden", "{body}");
    assert_eq!(
        body["error"]["innererror"]["code"], "ForbiddenByRbac",
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Caller is not authorized to perform action on resource."),
        "{message}"
    );
    message
        .split("Action: '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn roles_decide_over_https() {
    let s = TestServer::start().await;
    let url = s.url();
    let vault = s.deployment().default_vault().unwrap();
    for name in ["k1", "k2"] {
        let (st, _) = s
            .call(
                Method::POST,
                &v(&format!("/keys/{name}/create")),
                Some(json!({"kty": "oct-HSM"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let wrap = json!({"alg": "A256KW", "value": b64::encode(&[7u8; 32])});
    let w = workload(&s, "payments").await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let token = w.token.clone();
        let url = url.clone();
        let s = &s;
        async move { s.call_as(&token, &url, method, &path, body).await }
    };

    // Deny by default: a valid token without any role.
    let (st, body) = call(Method::GET, v("/keys/k1"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(denied_action(&body), "Microsoft.KeyVault/vaults/keys/read");

    // Crypto Service Encryption User on k1 only.
    let a = s
        .deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/k1",
            "Key Vault Crypto Service Encryption User",
            &w.principal_id,
            None,
        )
        .await
        .unwrap();
    let (st, wrapped) = call(Method::POST, v("/keys/k1//wrapkey"), Some(wrap.clone())).await;
    assert_eq!(st, StatusCode::OK, "{wrapped}");
    let (st, _) = call(
        Method::POST,
        v("/keys/k1//unwrapkey"),
        Some(json!({"alg": "A256KW", "value": wrapped["value"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(Method::GET, v("/keys/K1"), None).await;
    assert_eq!(st, StatusCode::OK, "key scope matches case-insensitively");
    let (st, body) = call(Method::POST, v("/keys/k2//wrapkey"), Some(wrap.clone())).await;
    assert_eq!(
        (st, denied_action(&body)),
        (
            StatusCode::FORBIDDEN,
            "Microsoft.KeyVault/vaults/keys/wrap/action".into()
        )
    );
    let (st, body) = call(
        Method::POST,
        v("/keys/k1//encrypt"),
        Some(json!({"alg": "A256GCM", "value": "AA"})),
    )
    .await;
    assert_eq!(
        (st, denied_action(&body)),
        (
            StatusCode::FORBIDDEN,
            "Microsoft.KeyVault/vaults/keys/encrypt/action".into()
        )
    );
    let (st, _) = call(Method::GET, v("/keys"), None).await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "listing needs a role at /keys or /"
    );
    let (st, body) = call(Method::DELETE, v("/keys/k1"), None).await;
    assert_eq!(
        denied_action(&body),
        "Microsoft.KeyVault/vaults/keys/delete",
        "{st}"
    );

    // Removing the assignment takes the access away.
    s.deployment()
        .remove_role_assignment(&keyshift_vault::RequestContext::local(), &vault, &a.name)
        .await
        .unwrap();
    let (st, _) = call(Method::POST, v("/keys/k1//wrapkey"), Some(wrap.clone())).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Crypto User at the vault: use keys, not create, delete or purge them.
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/",
            "12338af0-0e69-4776-bea7-57ae8d297424",
            &w.principal_id,
            None,
        )
        .await
        .unwrap();
    let (st, _) = call(Method::POST, v("/keys/k2//wrapkey"), Some(wrap.clone())).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(Method::GET, v("/keys"), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = call(
        Method::POST,
        v("/keys/k3/create"),
        Some(json!({"kty": "EC"})),
    )
    .await;
    assert_eq!(
        (st, denied_action(&body)),
        (
            StatusCode::FORBIDDEN,
            "Microsoft.KeyVault/vaults/keys/create/action".into()
        )
    );
    let (st, body) = call(Method::POST, v("/keys/k2/rotate"), None).await;
    assert_eq!(
        denied_action(&body),
        "Microsoft.KeyVault/vaults/keys/rotate/action",
        "{st}"
    );
    let (st, body) = call(
        Method::PUT,
        v("/keys/k2/rotationpolicy"),
        Some(json!({"lifetimeActions": []})),
    )
    .await;
    assert_eq!(
        denied_action(&body),
        "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
        "{st}"
    );
    let (st, body) = call(Method::POST, v("/rng"), Some(json!({"count": 8}))).await;
    assert_eq!(
        denied_action(&body),
        "Microsoft.KeyVault/vaults/rng/action",
        "{st}"
    );
    s.call(Method::DELETE, &v("/keys/k2"), None).await;
    let (st, body) = call(Method::DELETE, v("/deletedkeys/k2"), None).await;
    assert_eq!(
        denied_action(&body),
        "Microsoft.KeyVault/vaults/keys/purge/action",
        "{st}"
    );

    // The administrator created at first start holds Administrator at `/`.
    let admin_roles: Vec<_> = s
        .deployment()
        .role_assignments(&vault)
        .await
        .unwrap()
        .iter()
        .filter(|a| {
            a.scope == "/" && a.role_definition_id == "00482a5a-887f-4fb3-b363-3b7fe8e74483"
        })
        .cloned()
        .collect();
    assert_eq!(admin_roles.len(), 1);
    assert_eq!(
        Some(admin_roles[0].principal_id.clone()),
        s.deployment().administrator()
    );
    let (st, _) = s.call(Method::DELETE, &v("/deletedkeys/k2"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn disabled_or_deleted_principals_lose_their_tokens() {
    let s = TestServer::start().await;
    let vault = s.deployment().default_vault().unwrap();
    let w = workload(&s, "batch").await;
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/",
            "Key Vault Reader",
            &w.principal_id,
            None,
        )
        .await
        .unwrap();
    let (st, _) = s
        .call_as(&w.token, &s.url(), Method::GET, &v("/keys"), None)
        .await;
    assert_eq!(st, StatusCode::OK);

    s.deployment()
        .set_principal_enabled(
            &keyshift_vault::RequestContext::local(),
            &w.client_id,
            false,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, _) = s
        .call_as(&w.token, &s.url(), Method::GET, &v("/keys"), None)
        .await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a disabled principal's token stops working within a second"
    );
    s.deployment()
        .set_principal_enabled(&keyshift_vault::RequestContext::local(), &w.client_id, true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, _) = s
        .call_as(&w.token, &s.url(), Method::GET, &v("/keys"), None)
        .await;
    assert_eq!(st, StatusCode::OK);

    s.deployment()
        .delete_principal(&keyshift_vault::RequestContext::local(), &w.client_id)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, _) = s
        .call_as(&w.token, &s.url(), Method::GET, &v("/keys"), None)
        .await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a deleted principal's token stops working within a second"
    );
    let admin = s
        .deployment()
        .principal_by_client_id(&s.admin.client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.id, s.deployment().administrator().unwrap());
    assert!(
        s.deployment()
            .delete_principal(&keyshift_vault::RequestContext::local(), &s.admin.client_id)
            .await
            .is_err(),
        "the administrator stays"
    );
}

#[tokio::test]
async fn custom_roles_over_the_role_api() {
    let s = TestServer::start().await;
    let url = s.url();
    s.call(
        Method::POST,
        &v("/keys/k1/create"),
        Some(json!({"kty": "oct-HSM"})),
    )
    .await;
    let w = workload(&s, "custom").await;
    let role_id = "7a1d3b1e-0000-4000-8000-00000000c0de";
    let defs = "///providers/Microsoft.Authorization/roleDefinitions";
    // Wrap but not unwrap: notDataActions subtract within the role.
    let (st, def) = s
        .call(
            Method::PUT,
            &v(&format!("{defs}/{role_id}")),
            Some(json!({"properties": {
                "roleName": "Wrap only", "description": "wraps, never unwraps", "type": "CustomRole",
                "permissions": [{"dataActions": ["Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/wrap/action", "Microsoft.KeyVault/vaults/keys/unwrap/action"],
                                 "notDataActions": ["Microsoft.KeyVault/vaults/keys/unwrap/action"]}],
                "assignableScopes": ["/"]
            }})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{def}");
    assert_eq!(def["properties"]["type"], "CustomRole");
    let (_, list) = s.call(Method::GET, &v(defs), None).await;
    assert!(list["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == role_id));
    let (st, a) = s
        .call(
            Method::PUT,
            &v("//keys/k1/providers/Microsoft.Authorization/roleAssignments/0b0e0c0a-0000-4000-8000-000000000001"),
            Some(json!({"properties": {"roleDefinitionId": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{role_id}"), "principalId": w.principal_id}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    assert_eq!(a["properties"]["scope"], "/keys/k1");
    let (st, wrapped) = s
        .call_as(
            &w.token,
            &url,
            Method::POST,
            &v("/keys/k1//wrapkey"),
            Some(json!({"alg": "A256KW", "value": b64::encode(&[1u8; 32])})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{wrapped}");
    let (st, body) = s
        .call_as(
            &w.token,
            &url,
            Method::POST,
            &v("/keys/k1//unwrapkey"),
            Some(json!({"alg": "A256KW", "value": wrapped["value"]})),
        )
        .await;
    assert_eq!(
        (st, denied_action(&body)),
        (
            StatusCode::FORBIDDEN,
            "Microsoft.KeyVault/vaults/keys/unwrap/action".into()
        )
    );

    // A role in use cannot be deleted; built-ins never; foreign data actions are refused.
    let (st, _) = s
        .call(Method::DELETE, &v(&format!("{defs}/{role_id}")), None)
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = s
        .call(
            Method::DELETE,
            &v(&format!("{defs}/12338af0-0e69-4776-bea7-57ae8d297424")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, body) = s
        .call(
            Method::PUT,
            &v(&format!("{defs}/7a1d3b1e-0000-4000-8000-00000000beef")),
            Some(json!({"properties": {"roleName": "x", "permissions": [{"dataActions": ["Microsoft.Storage/*"]}]}})),
        )
        .await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadParameter"))
    );
    // The workload may not write roles.
    let (st, _) = s
        .call_as(&w.token, &url, Method::PUT, &v(&format!("{defs}/7a1d3b1e-0000-4000-8000-00000000f00d")), Some(json!({"properties": {"roleName": "mine", "permissions": [{"dataActions": ["Microsoft.KeyVault/vaults/*"]}]}})))
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "escalation through a custom role is refused"
    );
    let (st, _) = s
        .call(Method::DELETE, &v("//keys/k1/providers/Microsoft.Authorization/roleAssignments/0b0e0c0a-0000-4000-8000-000000000001"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(Method::DELETE, &v(&format!("{defs}/{role_id}")), None)
        .await;
    assert_eq!(st, StatusCode::OK);
}
