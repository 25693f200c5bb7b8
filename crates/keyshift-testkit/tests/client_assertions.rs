//! Certificate client credentials (RFC 7523 client assertions) at the token endpoint: the one
//! that should work, and each way an assertion can be wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_testkit::TestServer;
use rcgen::{CertificateParams, KeyPair, SigningKey, PKCS_RSA_SHA256};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Client {
    client_id: String,
    key: KeyPair,
    x5t: String,
    x5t_s256: String,
}

async fn client_with_certificate(s: &TestServer) -> Client {
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let cert = CertificateParams::new(vec!["workload".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let p = s
        .deployment()
        .create_principal("cert-client")
        .await
        .unwrap();
    // A PEM with the private key in it too, as people keep them: the key is ignored.
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    s.deployment()
        .add_principal_certificate(
            &keyshift_vault::RequestContext::local(),
            &p.principal.client_id,
            pem.as_bytes(),
        )
        .await
        .unwrap();
    Client {
        client_id: p.principal.client_id,
        x5t: b64::encode(&keyshift_crypto::digest::sha1(cert.der())),
        x5t_s256: b64::encode(&keyshift_crypto::digest::sha256(cert.der())),
        key,
    }
}

#[allow(clippy::disallowed_methods)] // a test's own view of the time
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(key: &KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(&serde_json::to_vec(header).unwrap()),
        b64::encode(&serde_json::to_vec(claims).unwrap())
    );
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(&signature))
}

async fn exchange(s: &TestServer, client_id: Option<&str>, assertion: &str) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
        ),
        ("client_assertion", assertion.to_owned()),
        ("scope", "https://vault.azure.net/.default".to_owned()),
    ];
    if let Some(c) = client_id {
        form.push(("client_id", c.to_owned()));
    }
    let r = s
        .http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            s.url(),
            s.admin.tenant_id
        ))
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn client_assertions() {
    let s = TestServer::start().await;
    let c = client_with_certificate(&s).await;
    let aud = format!("{}/{}/oauth2/v2.0/token", s.url(), s.admin.tenant_id);
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": c.x5t});
    let claims = |jti: &str| json!({"aud": aud, "iss": c.client_id, "sub": c.client_id, "jti": jti, "nbf": now(), "exp": now() + 600});

    // The good one, by x5t and by x5t#S256 (padded, as MSAL sends thumbprints).
    let (st, body) = exchange(
        &s,
        Some(&c.client_id),
        &sign(&c.key, &header, &claims("a1")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let tc: Value =
        serde_json::from_slice(&b64::decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(tc["appid"], c.client_id.as_str());
    let padded = format!("{}=", c.x5t_s256);
    let (st, _) = exchange(
        &s,
        None,
        &sign(
            &c.key,
            &json!({"alg": "RS256", "x5t#S256": padded}),
            &claims("a2"),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let mut cases: Vec<(&str, String, Option<String>)> = Vec::new();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut cl = claims(&format!("j-{}", rand_suffix()));
        f(&mut cl);
        sign(&c.key, &header, &cl)
    };
    cases.push((
        "replayed jti",
        sign(&c.key, &header, &claims("a1")),
        Some(c.client_id.clone()),
    ));
    cases.push((
        "no jti",
        with(&|cl| {
            cl.as_object_mut().unwrap().remove("jti");
        }),
        None,
    ));
    cases.push((
        "wrong audience",
        with(&|cl| cl["aud"] = json!("https://login.microsoftonline.com/x/oauth2/v2.0/token")),
        None,
    ));
    cases.push(("expired", with(&|cl| cl["exp"] = json!(now() - 3600)), None));
    cases.push((
        "not yet valid",
        with(&|cl| cl["nbf"] = json!(now() + 3600)),
        None,
    ));
    cases.push((
        "valid for too long",
        with(&|cl| cl["exp"] = json!(now() + 7 * 86_400)),
        None,
    ));
    cases.push((
        "sub differs from iss",
        with(&|cl| cl["sub"] = json!("someone-else")),
        None,
    ));
    cases.push((
        "client_id differs",
        with(&|_| {}),
        Some("00000000-0000-0000-0000-000000000000".into()),
    ));
    cases.push((
        "unknown client",
        with(&|cl| {
            cl["iss"] = json!("nobody");
            cl["sub"] = json!("nobody");
        }),
        None,
    ));
    let good = with(&|_| {});
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged: Value = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
    forged["jti"] = json!("forged");
    cases.push((
        "payload edited",
        format!(
            "{}.{}.{}",
            parts[0],
            b64::encode(&serde_json::to_vec(&forged).unwrap()),
            parts[2]
        ),
        None,
    ));
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64::encode(br#"{"alg":"none","x5t":"x"}"#),
            parts[1]
        ),
        None,
    ));
    cases.push((
        "HS256",
        format!(
            "{}.{}.{}",
            b64::encode(br#"{"alg":"HS256"}"#),
            parts[1],
            parts[2]
        ),
        None,
    ));
    cases.push((
        "unknown thumbprint",
        sign(
            &c.key,
            &json!({"alg": "RS256", "x5t": b64::encode(&[1u8; 20])}),
            &claims("t1"),
        ),
        None,
    ));
    cases.push((
        "no thumbprint",
        sign(&c.key, &json!({"alg": "RS256"}), &claims("t2")),
        None,
    ));
    let other = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    cases.push((
        "signed by another key",
        sign(&other, &header, &claims("t3")),
        None,
    ));
    cases.push(("garbage", "a.b.c".into(), None));
    for (what, assertion, client_id) in cases {
        let (st, body) = exchange(&s, client_id.as_deref(), &assertion).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"], "invalid_client", "{what}");
    }

    // A disabled client's assertions are refused.
    s.deployment()
        .set_principal_enabled(
            &keyshift_vault::RequestContext::local(),
            &c.client_id,
            false,
        )
        .await
        .unwrap();
    let (st, _) = exchange(&s, None, &sign(&c.key, &header, &claims("d1"))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

fn rand_suffix() -> String {
    b64::encode(&keyshift_crypto::random_bytes(9).unwrap())
}

#[tokio::test]
async fn certificates_that_are_not_usable_are_refused() {
    let s = TestServer::start().await;
    let p = s.deployment().create_principal("c").await.unwrap();
    let id = &p.principal.client_id;
    assert!(s
        .deployment()
        .add_principal_certificate(&keyshift_vault::RequestContext::local(), id, b"not a pem")
        .await
        .is_err());
    let ec = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["ec".to_string()])
        .unwrap()
        .self_signed(&ec)
        .unwrap();
    let err = s
        .deployment()
        .add_principal_certificate(
            &keyshift_vault::RequestContext::local(),
            id,
            cert.pem().as_bytes(),
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("RSA"), "{}", err.message);
    let broken = cert.pem().replace("MII", "MIJ");
    assert!(s
        .deployment()
        .add_principal_certificate(
            &keyshift_vault::RequestContext::local(),
            id,
            broken.as_bytes()
        )
        .await
        .is_err());
}
