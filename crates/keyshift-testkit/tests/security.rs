//! Sealing, authentication and hostile clients, over real HTTPS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_server::auth::TokenAuthority;
use keyshift_testkit::{v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The RSA key of RFC 7515 appendix A.2.1, as a JWK with private members.
fn rfc7515_rsa_jwk() -> Value {
    json!({
        "kty": "RSA",
        "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
        "e": "AQAB",
        "d": "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
        "p": "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
        "q": "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
        "dp": "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
        "dq": "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
        "qi": "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U"
    })
}

fn all_files(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
}

/// Whether `needle` appears in `hay` raw, or base64/base64url-encoded at any of the three
/// alignments it could have inside a longer encoded blob.
fn appears(hay: &[Vec<u8>], needle: &[u8]) -> bool {
    use base64::Engine;
    let mut forms: Vec<Vec<u8>> = vec![needle[..24].to_vec()];
    for skip in 0..3 {
        let part = &needle[skip..skip + 24];
        for engine in [
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ] {
            let text = engine.encode(part);
            forms.push(text.as_bytes()[4..28].to_vec());
        }
    }
    hay.iter().any(|file| {
        forms
            .iter()
            .any(|f| file.windows(f.len()).any(|w| w == f.as_slice()))
    })
}

/// Everything the server logs, at every level, while this test binary runs.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init();
}

#[tokio::test]
async fn imported_private_material_never_reaches_the_disk_or_the_wire() {
    capture_logs();
    let s = TestServer::start().await;
    let jwk = rfc7515_rsa_jwk();
    let (st, bundle) = s
        .call(Method::PUT, &v("/keys/known"), Some(json!({"key": jwk})))
        .await;
    assert_eq!(st, StatusCode::OK, "{bundle}");
    let aes = [
        0x5au8, 0x17, 0xc3, 0x99, 0x01, 0xfe, 0x42, 0x77, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70,
        0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7, 0x08, 0x19, 0x2a, 0x3b, 0x4c, 0x5d, 0x6e,
        0x7f, 0x80,
    ];
    let (st, oct) = s
        .call(
            Method::PUT,
            &v("/keys/known-aes"),
            Some(json!({"key": {"kty": "oct", "k": b64::encode(&aes)}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{oct}");
    let text = format!("{bundle}{oct}");
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(
            !text.contains(jwk[member].as_str().unwrap()),
            "{member} in a response"
        );
    }
    assert!(!text.contains(&b64::encode(&aes)), "k in a response");
    // Backup and rotation and a restart must not leave clear copies either.
    s.call(Method::POST, &v("/keys/known/backup"), None).await;
    s.call(Method::POST, &v("/keys/known-aes/rotate"), None)
        .await;

    let mut files = Vec::new();
    all_files(&s.data_dir, &mut files);
    // Positive control: the public modulus is stored (base64url in the record) and is found.
    let n = b64::decode(jwk["n"].as_str().unwrap()).unwrap();
    assert!(appears(&files, &n), "the scanner finds stored public bytes");
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        let secret = b64::decode(jwk[member].as_str().unwrap()).unwrap();
        assert!(
            !appears(&files, &secret),
            "private member {member} found in the data directory"
        );
    }
    assert!(
        !appears(&files, &aes),
        "AES key found in the data directory"
    );
    // The imported key is the key we gave: the server signs the RFC 7515 A.2 input exactly.
    let input = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    let digest = keyshift_crypto::digest::sha256(input.as_bytes());
    let (st, sig) = s
        .call(
            Method::POST,
            &v("/keys/known//sign"),
            Some(json!({"alg": "RS256", "value": b64::encode(&digest)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(sig["value"]
        .as_str()
        .unwrap()
        .starts_with("cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh"));
}

#[tokio::test]
async fn requests_without_a_valid_token_get_the_challenge_first() {
    let s = TestServer::start().await;
    let challenge_ok = |r: &reqwest::Response| {
        let h = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(h.starts_with("Bearer authorization=\""), "{h}");
        assert!(
            h.contains(&format!("/{}\"", s.admin.tenant_id)),
            "tenant in authorization: {h}"
        );
        assert!(h.contains(&format!("resource=\"{}\"", s.url())), "{h}");
    };
    // The SDKs' first request: no token, no body, even where a body is required, and on any path.
    for (method, path) in [
        (Method::POST, v("/keys/k/create")),
        (Method::GET, "/nowhere".to_string()),
        (Method::GET, "/keys".into()),
    ] {
        let r = s
            .http
            .request(method.clone(), format!("{}{path}", s.url()))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        challenge_ok(&r);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Unauthorized");
    }
    let good = s.token().to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let claims: Value = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
    let mut later = claims.clone();
    later["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let forged_payload = b64::encode(&serde_json::to_vec(&later).unwrap());
    let none_header = b64::encode(br#"{"alg":"none","typ":"JWT"}"#);
    let hs_header = b64::encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut flipped_sig = b64::decode(parts[2]).unwrap();
    flipped_sig[10] ^= 1;
    let other = TestServer::start().await;
    let app = &s.started.server.app;
    let issuer = app.tokens.issuer().to_owned();
    let mint = |iss: &str, aud: &str, lifetime: i64| {
        TokenAuthority::new(
            s.deployment().clone(),
            iss.to_owned(),
            aud.to_owned(),
            lifetime,
        )
        .issue(
            claims["oid"].as_str().unwrap(),
            claims["appid"].as_str().unwrap(),
        )
        .unwrap()
        .0
    };
    // Tokens signed with the deployment's real key but with one claim wrong.
    let signed_with = |claims: &Value| {
        let header = b64::encode(&serde_json::to_vec(&json!({"alg": "ES256", "typ": "JWT", "kid": keyshift_server::auth::key_id(&s.deployment().token_signing_key())})).unwrap());
        let input = format!(
            "{header}.{}",
            b64::encode(&serde_json::to_vec(claims).unwrap())
        );
        let sig = s
            .deployment()
            .token_signing_key()
            .sign_es256(input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64::encode(&sig))
    };
    let mut other_tenant = claims.clone();
    other_tenant["tid"] = json!("11111111-2222-3333-4444-555555555555");
    let mut not_yet = claims.clone();
    not_yet["nbf"] = json!(claims["iat"].as_i64().unwrap() + 3600);
    let mut slightly_early = claims.clone();
    slightly_early["nbf"] = json!(claims["iat"].as_i64().unwrap() + 30);
    let r = s
        .http
        .get(format!("{}{}", s.url(), v("/keys")))
        .bearer_auth(signed_with(&slightly_early))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "nbf 30 s ahead is within the 60 s skew"
    );
    let r = s
        .http
        .get(format!("{}{}", s.url(), v("/keys")))
        .bearer_auth(signed_with(&claims))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the hand-signed control token is accepted"
    );
    let bad_tokens = vec![
        ("garbage", "not-a-token".to_owned()),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        (
            "HS256 signed with the public key",
            format!("{hs_header}.{}.{}", parts[1], b64::encode(b"mac")),
        ),
        (
            "payload edited",
            format!("{}.{forged_payload}.{}", parts[0], parts[2]),
        ),
        (
            "signature flipped",
            format!("{}.{}.{}", parts[0], parts[1], b64::encode(&flipped_sig)),
        ),
        ("another deployment's token", other.token().to_owned()),
        (
            "wrong audience",
            mint(&issuer, "https://other.example", 3600),
        ),
        (
            "wrong issuer",
            mint(
                "https://evil.example/t/v2.0",
                "https://vault.azure.net",
                3600,
            ),
        ),
        ("expired", mint(&issuer, "https://vault.azure.net", -3600)),
        (
            "another tenant's token, correctly signed",
            signed_with(&other_tenant),
        ),
        ("not yet valid", signed_with(&not_yet)),
    ];
    for (what, token) in bad_tokens {
        let r = s
            .http
            .get(format!("{}{}", s.url(), v("/keys")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        challenge_ok(&r);
    }
    // Within the skew, a just-expired token still works; the genuine one works.
    let (st, _) = s.call(Method::GET, &v("/keys"), None).await;
    assert_eq!(st, StatusCode::OK);
    let r = s
        .http
        .get(format!("{}{}", s.url(), v("/keys")))
        .bearer_auth(mint(&issuer, "https://vault.azure.net", -30))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "30 s past expiry is within the 60 s skew"
    );
}

#[tokio::test]
async fn token_endpoint_discovery_and_jwks() {
    let s = TestServer::start().await;
    let post = |url: String, form: Vec<(&'static str, String)>| {
        let http = s.http.clone();
        async move { http.post(url).form(&form).send().await.unwrap() }
    };
    let good = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", s.admin.client_id.clone()),
        ("client_secret", s.admin.client_secret.clone()),
    ];
    let mut wrong_secret = good.clone();
    wrong_secret[2].1 = "nope".into();
    let r = post(s.admin.token_url.clone(), wrong_secret).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let mut unknown = good.clone();
    unknown[1].1 = "00000000-0000-0000-0000-000000000000".into();
    assert_eq!(
        post(s.admin.token_url.clone(), unknown).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let mut grant = good.clone();
    grant[0].1 = "password".into();
    let r = post(s.admin.token_url.clone(), grant).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    let other_tenant = format!(
        "{}/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token",
        s.url()
    );
    assert_eq!(
        post(other_tenant, good.clone()).await.status(),
        StatusCode::BAD_REQUEST
    );
    let r = post(s.admin.token_url.clone(), good).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    let token = t["access_token"].as_str().unwrap();
    let claims: Value =
        serde_json::from_slice(&b64::decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["aud"], "https://vault.azure.net");
    assert_eq!(claims["tid"], s.admin.tenant_id.as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );

    let base = format!("{}/{}", s.url(), s.admin.tenant_id);
    let doc: Value = s
        .http
        .get(format!("{base}/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], claims["iss"]);
    assert_eq!(doc["token_endpoint"], s.admin.token_url.as_str());
    let jwks: Value = s
        .http
        .get(doc["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    let header: Value =
        serde_json::from_slice(&b64::decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(key["kid"], header["kid"]);
    let (h, rest) = token.split_once('.').unwrap();
    let (p, sig) = rest.split_once('.').unwrap();
    assert!(keyshift_crypto::token::verify_es256(
        &b64::decode(key["x"].as_str().unwrap()).unwrap(),
        &b64::decode(key["y"].as_str().unwrap()).unwrap(),
        format!("{h}.{p}").as_bytes(),
        &b64::decode(sig).unwrap(),
    ));
}

#[tokio::test]
async fn hostile_clients_do_not_stall_others() {
    let s = TestServer::start().await;
    let addr = s.addr();
    // 1. Garbage that is not TLS at all.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    // 2. A TLS client that trickles its request header, one byte at a time.
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        keyshift_testkit::client_tls(s.ca_pem()),
    ));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut slow = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for b in b"POST /keys/k/create?api-version=7.6 HTTP/1.1\r\nHost: localhost\r\n".iter() {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            let _ = slow.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // 3. A client that announces a body and never sends it.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stalled = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /keys/k/create?api-version=7.6 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{",
        s.token()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.flush().await.unwrap();

    // Meanwhile everybody else is served promptly.
    let started = Instant::now();
    for i in 0..20 {
        let (st, _) = s
            .call(
                Method::POST,
                &v(&format!("/keys/ok-{i}/create")),
                Some(json!({"kty": "oct"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "others were served while hostile clients held connections"
    );
    trickle.abort();
    drop(stalled);
    drop(garbage);
}

#[tokio::test]
async fn vaults_by_host_name_and_by_port() {
    let s = TestServer::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    s.deployment()
        .create_vault(
            &keyshift_vault::RequestContext::local(),
            keyshift_vault::VaultSpec {
                name: "kv2".into(),
                kind: keyshift_vault::VaultKind::Vault,
                retention_days: 7,
                purge_protection: true,
                port: Some(port),
                new_security_domain: false,
                default: false,
            },
        )
        .await
        .unwrap();
    // The server binds the port and reissues its certificate within its refresh interval (2 s).
    let by_port = format!("https://localhost:{port}");
    let by_name = format!("https://kv2.localhost:{}", s.addr().port());
    let http =
        keyshift_testkit::https_client(s.ca_pem(), s.addr(), &["kv2.localhost", "nope.localhost"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = http
            .get(format!("{by_port}/health"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        let b = http
            .get(format!("{by_name}/health"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if a && b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kv2 not served by port ({a}) and name ({b}) within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let call = |base: String, method: Method, path: String, body: Option<Value>| {
        let http = http.clone();
        let token = s.token().to_owned();
        async move {
            let mut r = http
                .request(method, format!("{base}{path}"))
                .bearer_auth(token);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, k) = call(
        by_port.clone(),
        Method::POST,
        v("/keys/only-in-kv2/create"),
        Some(json!({"kty": "EC"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{k}");
    assert!(
        k["key"]["kid"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{by_port}/keys/")),
        "kid names the URL used"
    );
    assert_eq!(k["attributes"]["recoverableDays"], 7);
    assert_eq!(
        k["attributes"]["recoveryLevel"], "CustomizedRecoverable",
        "purge protection on, retention < 90"
    );
    let (st, k) = call(by_name.clone(), Method::GET, v("/keys/only-in-kv2"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(k["key"]["kid"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{by_name}/keys/")));
    let (st, _) = s.call(Method::GET, &v("/keys/only-in-kv2"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "vaults are separate");
    // A host name no vault has (sent as Host: the certificate only names real vaults).
    let r = http
        .get(format!("{}{}", s.url(), v("/keys")))
        .header("host", format!("nope.localhost:{}", s.addr().port()))
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "NotFound"
    );
    // Purge protection: deleted keys cannot be purged before their date.
    call(
        by_port.clone(),
        Method::DELETE,
        v("/keys/only-in-kv2"),
        None,
    )
    .await;
    let (st, body) = call(
        by_port.clone(),
        Method::DELETE,
        v("/deletedkeys/only-in-kv2"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"]["innererror"]["code"],
        "PurgeProtectionEnabled"
    );
}

#[tokio::test]
async fn restart_on_the_same_data_directory_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (kid, token, tenant, addr) = {
        let s = TestServer::start_in(dir.path()).await;
        let (_, k) = s
            .call(
                Method::POST,
                &v("/keys/durable/create"),
                Some(json!({"kty": "RSA"})),
            )
            .await;
        (
            k["key"]["kid"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned(),
            s.token().to_owned(),
            s.admin.tenant_id.clone(),
            s.addr(),
        )
    };
    // Same address: the token issuer is named by its URL.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut settings = keyshift_testkit::settings(dir.path());
    settings.listen = addr;
    let admin_json = std::fs::read(dir.path().join("admin.json")).unwrap();
    let s = TestServer::start_with(settings).await;
    assert_eq!(
        std::fs::read(dir.path().join("admin.json")).unwrap(),
        admin_json,
        "admin.json is written once"
    );
    assert_eq!(s.admin.tenant_id, tenant);
    let (st, k) = s.call(Method::GET, &v("/keys/durable"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(k["key"]["kid"].as_str().unwrap().ends_with(&kid));
    let r = s
        .http
        .get(format!("{}{}", s.url(), v("/keys")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a token from before the restart stays valid until it expires"
    );
    use std::os::unix::fs::PermissionsExt;
    for private in ["root.key", "admin.json", "tls/ca.key"] {
        let mode = std::fs::metadata(dir.path().join(private))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{private}");
    }
}

#[tokio::test]
async fn rotating_the_token_signing_key_keeps_issued_tokens_valid() {
    let s = TestServer::start().await;
    let old_token = s.token().to_owned();
    let kid = |t: &str| -> Value {
        serde_json::from_slice::<Value>(&b64::decode(t.split('.').next().unwrap()).unwrap())
            .unwrap()["kid"]
            .clone()
    };
    s.deployment()
        .rotate_token_signing_key(&keyshift_vault::RequestContext::local())
        .await
        .unwrap();
    let new_token = s.fetch_token().await;
    assert_ne!(
        kid(&old_token),
        kid(&new_token),
        "new tokens are signed by the new key"
    );
    for (what, token) in [("old", &old_token), ("new", &new_token)] {
        let r = s
            .http
            .get(format!("{}{}", s.url(), v("/keys")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{what} token after rotation");
    }
    let jwks: Value = s
        .http
        .get(format!(
            "{}/{}/discovery/v2.0/keys",
            s.url(),
            s.admin.tenant_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&kid(&old_token)) && kids.contains(&kid(&new_token)));
    // A token naming a kid the deployment never had is refused.
    let parts: Vec<&str> = new_token.split('.').collect();
    let header = b64::encode(br#"{"alg":"ES256","kid":"not-a-key"}"#);
    let r = s
        .http
        .get(format!("{}{}", s.url(), v("/keys")))
        .bearer_auth(format!("{header}.{}.{}", parts[1], parts[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
