//! keyshift-client against a real Keyshift (TLS, token issuer, RBAC, audit) and against a tiny
//! local TLS server that answers junk, throttles or fails on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_client::keyshift_api::keys::{
    JsonWebKey, KeyCreateParameters, KeyImportParameters, KeyOperationsParameters,
    KeyUpdateParameters,
};
use keyshift_client::{
    parse_kid, AdminJson, ClientError, ClientSecretCredential, ErrorKind, KeyClient, Kid,
    RetryPolicy, StaticToken, VaultUrl,
};
use keyshift_server::tls::{CertResolver, LocalCa};
use keyshift_testkit::TestServer;
use keyshift_vault::{Clock, SystemClock};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn vault(s: &TestServer) -> VaultUrl {
    VaultUrl::parse(&s.url()).unwrap()
}

/// A client trusting the test CA only, with the administrator's client secret.
fn admin_client(s: &TestServer) -> KeyClient {
    let credential = ClientSecretCredential::with_token_url(
        &s.admin.token_url,
        &s.admin.client_id,
        &s.admin.client_secret,
    )
    .ca_pem(Some(s.ca_pem()))
    .system_roots(false)
    .build()
    .unwrap();
    KeyClient::builder()
        .credential(Arc::new(credential))
        .ca_pem(Some(s.ca_pem()))
        .system_roots(false)
        .build()
        .unwrap()
}

fn token_client(s: &TestServer, token: &str) -> KeyClient {
    KeyClient::builder()
        .credential(Arc::new(StaticToken::new(token)))
        .ca_pem(Some(s.ca_pem()))
        .system_roots(false)
        .build()
        .unwrap()
}

fn create(kty: &str) -> KeyCreateParameters {
    KeyCreateParameters {
        kty: Some(kty.into()),
        ..KeyCreateParameters::default()
    }
}

fn kid_of(bundle: &keyshift_client::keyshift_api::keys::KeyBundle) -> Kid {
    parse_kid(bundle.key.kid.as_deref().unwrap()).unwrap()
}

#[tokio::test]
async fn round_trips_with_oct_hsm_and_rsa_keys() {
    let s = TestServer::start().await;
    let c = admin_client(&s);
    let v = vault(&s);

    // oct-HSM: create, get, wrap/unwrap (versioned and latest), AES-GCM encrypt/decrypt.
    let created = c
        .create_key(&v, "aes-kek", &create("oct-HSM"))
        .await
        .unwrap();
    let kid = kid_of(&created);
    assert_eq!(kid.vault_url, v);
    assert_eq!(kid.name, "aes-kek");
    let got = c.get_key(&v, "aes-kek", None).await.unwrap();
    assert_eq!(got.key.kid, created.key.kid);
    let by_version = c
        .get_key(&v, "aes-kek", kid.version.as_deref())
        .await
        .unwrap();
    assert_eq!(by_version.key.kid, created.key.kid);
    let dek = [0x42u8; 32];
    let wrapped = c.wrap_key(&kid, "A256KW", &dek).await.unwrap();
    assert_eq!(wrapped.kid, created.key.kid.clone().unwrap());
    let latest = v.key("aes-kek").unwrap();
    let unwrapped = c
        .unwrap_key(&latest, "A256KW", &wrapped.value)
        .await
        .unwrap();
    assert_eq!(unwrapped.value, dek);
    let sealed = c
        .encrypt(
            &kid,
            &KeyOperationsParameters {
                alg: "A256GCM".into(),
                value: b"attack at dawn".to_vec(),
                iv: None,
                aad: Some(b"context".to_vec()),
                tag: None,
            },
        )
        .await
        .unwrap();
    let opened = c
        .decrypt(
            &kid,
            &KeyOperationsParameters {
                alg: "A256GCM".into(),
                value: sealed.value.clone(),
                iv: sealed.iv.clone(),
                aad: Some(b"context".to_vec()),
                tag: sealed.tag.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(opened.value, b"attack at dawn");

    // RSA: RSA-OAEP-256 wrap/unwrap and encrypt/decrypt, RS256 and PS256 sign/verify.
    let rsa = c.create_key(&v, "rsa-kek", &create("RSA")).await.unwrap();
    let rsa_kid = kid_of(&rsa);
    assert_eq!(rsa.key.n.as_ref().unwrap().len(), 256);
    let wrapped = c.wrap_key(&rsa_kid, "RSA-OAEP-256", &dek).await.unwrap();
    assert_eq!(wrapped.value.len(), 256);
    let unwrapped = c
        .unwrap_key(&rsa_kid, "RSA-OAEP-256", &wrapped.value)
        .await
        .unwrap();
    assert_eq!(unwrapped.value, dek);
    let ct = c
        .encrypt(
            &rsa_kid,
            &KeyOperationsParameters {
                alg: "RSA-OAEP-256".into(),
                value: b"short secret".to_vec(),
                iv: None,
                aad: None,
                tag: None,
            },
        )
        .await
        .unwrap();
    let pt = c
        .decrypt(
            &rsa_kid,
            &KeyOperationsParameters {
                alg: "RSA-OAEP-256".into(),
                value: ct.value,
                iv: None,
                aad: None,
                tag: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(pt.value, b"short secret");
    let digest = [7u8; 32];
    for alg in ["RS256", "PS256"] {
        let sig = c.sign(&rsa_kid, alg, &digest).await.unwrap();
        assert!(c.verify(&rsa_kid, alg, &digest, &sig.value).await.unwrap());
        assert!(!c
            .verify(&rsa_kid, alg, &[8u8; 32], &sig.value)
            .await
            .unwrap());
    }

    // EC: ES256 over the latest version.
    let ec = c.create_key(&v, "ec-signer", &create("EC")).await.unwrap();
    let ec_kid = kid_of(&ec);
    let sig = c.sign(&ec_kid, "ES256", &digest).await.unwrap();
    assert_eq!(sig.value.len(), 64);
    assert!(c
        .verify(&ec_kid, "ES256", &digest, &sig.value)
        .await
        .unwrap());

    let random = c.get_random_bytes(&v, 32).await.unwrap();
    assert_eq!(random.len(), 32);
    let e = c.get_random_bytes(&v, 129).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn lifecycle_update_import_rotate_backup_delete_restore() {
    let s = TestServer::start().await;
    let c = admin_client(&s);
    let v = vault(&s);
    c.create_key(&v, "life", &create("oct-HSM")).await.unwrap();
    let updated = c
        .update_key(
            &v,
            "life",
            None,
            &KeyUpdateParameters {
                tags: Some([("owner".to_string(), "payments".to_string())].into()),
                ..KeyUpdateParameters::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.tags.unwrap()["owner"], "payments");
    let rotated = c.rotate_key(&v, "life").await.unwrap();
    let versions = c.list_versions(&v, "life", None).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions
        .iter()
        .any(|i| Some(&i.kid) == rotated.key.kid.as_ref()));

    // Import carries the private member; the key then unwraps what a local wrap would give.
    let imported = c
        .import_key(
            &v,
            "imported",
            &KeyImportParameters {
                key: Some(JsonWebKey {
                    kty: Some("oct-HSM".into()),
                    k: Some(vec![9u8; 32]),
                    ..JsonWebKey::default()
                }),
                ..KeyImportParameters::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(imported.key.kty.as_deref(), Some("oct-HSM"));
    assert!(imported.key.k.is_none());
    let kid = kid_of(&imported);
    let w = c.wrap_key(&kid, "A256KW", &[1u8; 16]).await.unwrap();
    assert_eq!(
        c.unwrap_key(&kid, "A256KW", &w.value).await.unwrap().value,
        [1u8; 16]
    );

    let backup = c.backup_key(&v, "life").await.unwrap();
    assert!(!backup.is_empty());
    let deleted = c.delete_key(&v, "life").await.unwrap();
    assert!(deleted.recovery_id.ends_with("/deletedkeys/life"));
    let e = c.get_key(&v, "life", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // The name is deleted but recoverable: a restore collides with it.
    let e = c.restore_key(&v, &backup).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.status(), Some(409));
}

#[tokio::test]
async fn lists_follow_next_links_across_pages() {
    let s = TestServer::start().await;
    let c = admin_client(&s);
    let v = vault(&s);
    for i in 0..30 {
        c.create_key(&v, &format!("paged-{i:02}"), &create("oct-HSM"))
            .await
            .unwrap();
    }
    let all = c.list_keys(&v, Some(7)).await.unwrap();
    let mut names: Vec<String> = all
        .iter()
        .map(|i| parse_kid(&i.kid).unwrap().name)
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 30, "{names:?}");
    let mut pages = c.list_keys_pages(&v, Some(7)).unwrap();
    let mut count = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(page.len() <= 7);
        count += 1;
    }
    assert_eq!(count, 5);
    // The default page size (25) pages too.
    assert_eq!(c.list_keys(&v, None).await.unwrap().len(), 30);
    let e = c.list_keys(&v, Some(26)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn key_usage_after_a_few_wraps() {
    let s = TestServer::start().await;
    let c = admin_client(&s);
    let v = vault(&s);
    let created = c.create_key(&v, "used", &create("oct-HSM")).await.unwrap();
    let kid = kid_of(&created);
    for _ in 0..3 {
        c.wrap_key(&kid, "A256KW", &[5u8; 32]).await.unwrap();
    }
    let report = c.key_usage(&v, "used", None).await.unwrap();
    assert_eq!(report.key, format!("{}/keys/used", s.url()));
    assert_eq!(report.versions.len(), 1);
    let wraps = report.versions[0]
        .usage
        .iter()
        .find(|u| u.operation == "KeyWrap")
        .unwrap_or_else(|| panic!("{report:?}"));
    assert_eq!(wraps.count, 3);
    assert!(wraps.first_used <= wraps.last_used);
    let one = c
        .key_usage(&v, "used", kid.version.as_deref())
        .await
        .unwrap();
    assert_eq!(one.versions.len(), 1);
    let e = c.key_usage(&v, "nope", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn principal_without_a_role_is_forbidden() {
    let s = TestServer::start().await;
    let admin = admin_client(&s);
    let v = vault(&s);
    admin
        .create_key(&v, "guarded", &create("oct-HSM"))
        .await
        .unwrap();
    let p = s.deployment().create_principal("no-role").await.unwrap();
    let token = s.token_for(&p.principal.client_id, &p.client_secret).await;
    let c = token_client(&s, &token);
    let e = c.get_key(&v, "guarded", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    assert_eq!(e.status(), Some(403));
    assert_eq!(e.code(), Some("Forbidden"));
    assert_eq!(e.inner_code(), Some("ForbiddenByRbac"));
    let e = c
        .wrap_key(&v.key("guarded").unwrap(), "A256KW", &[1u8; 32])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[tokio::test]
async fn missing_key_is_not_found() {
    let s = TestServer::start().await;
    let c = admin_client(&s);
    let v = vault(&s);
    let e = c.get_key(&v, "missing", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.is_not_found());
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.code(), Some("KeyNotFound"));
    assert!(e.message().contains("missing"), "{}", e.message());
    let e = c
        .unwrap_key(
            &v.key_version("missing", "78deebed173b48e48f55abf87ed4cf71")
                .unwrap(),
            "A256KW",
            &[0u8; 40],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // Bad names never leave the client.
    let e = c.get_key(&v, "../rng", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn bad_secret_is_a_clear_unauthorized_error() {
    let s = TestServer::start().await;
    let credential = ClientSecretCredential::with_token_url(
        &s.admin.token_url,
        &s.admin.client_id,
        "not-the-secret",
    )
    .ca_pem(Some(s.ca_pem()))
    .system_roots(false)
    .build()
    .unwrap();
    let c = KeyClient::builder()
        .credential(Arc::new(credential))
        .ca_pem(Some(s.ca_pem()))
        .system_roots(false)
        .build()
        .unwrap();
    let e = c.get_key(&vault(&s), "any", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert_eq!(e.code(), Some("invalid_client"));
    assert!(e.to_string().contains("token endpoint"), "{e}");
    assert!(!format!("{e} {e:?}").contains("not-the-secret"));
    // A token the server does not accept: the challenge is answered once, then a clear 401.
    let c = token_client(&s, "not.a.token");
    let e = c.get_key(&vault(&s), "any", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_eq!(e.status(), Some(401));
}

#[tokio::test]
async fn challenge_discovery_end_to_end() {
    let s = TestServer::start().await;
    let credential =
        ClientSecretCredential::for_challenge(&s.admin.client_id, &s.admin.client_secret)
            .ca_pem(Some(s.ca_pem()))
            .system_roots(false)
            .build()
            .unwrap();
    assert!(credential.token_url().is_none());
    let c = KeyClient::builder()
        .credential(Arc::new(credential.clone()))
        .ca_pem(Some(s.ca_pem()))
        .system_roots(false)
        .build()
        .unwrap();
    let v = vault(&s);
    let created = c.create_key(&v, "found", &create("oct-HSM")).await.unwrap();
    // The create ran once: the probe carried no body and got the challenge.
    assert_eq!(c.list_versions(&v, "found", None).await.unwrap().len(), 1);
    assert_eq!(
        credential.token_url().unwrap().as_str(),
        s.admin.token_url,
        "learned from authorization=\"<public-url>/<tenant>\""
    );
    let w = c
        .wrap_key(&kid_of(&created), "A256KW", &[3u8; 32])
        .await
        .unwrap();
    assert!(!w.value.is_empty());
}

#[tokio::test]
async fn admin_json_credential_works() {
    let s = TestServer::start().await;
    let path = s.data_dir.join("admin.json");
    let admin = AdminJson::read(&path).unwrap();
    assert!(!format!("{admin:?}").contains(&s.admin.client_secret));
    let credential = ClientSecretCredential::from_admin_json(&path).unwrap();
    let c = KeyClient::builder()
        .credential(Arc::new(credential))
        .ca_pem(Some(&admin.ca_pem().unwrap()))
        .build()
        .unwrap();
    let v = admin.vault().unwrap();
    c.create_key(&v, "from-admin-json", &create("oct-HSM"))
        .await
        .unwrap();
    let e = AdminJson::read(s.data_dir.join("nope.json")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

// ---------------------------------------------------------------------------------------------
// A tiny TLS server answering what each test scripts, to see the client under faults.

type Respond = dyn Fn(usize, &str) -> Vec<u8> + Send + Sync;

struct Junk {
    url: String,
    ca_pem: String,
    /// Request heads (request line and headers), in arrival order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl Junk {
    async fn start(respond: impl Fn(usize, &str) -> Vec<u8> + Send + Sync + 'static) -> Junk {
        let respond: Arc<Respond> = Arc::new(respond);
        let now = SystemClock.now();
        let ca = LocalCa::generate(now).unwrap();
        let cert = ca.issue_server_cert(&["127.0.0.1".into()], now).unwrap();
        // HTTP/1.1 only (no ALPN h2): the answers are written by hand.
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CertResolver::new(cert)));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, respond, seen) = (acceptor.clone(), respond.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let head = read_request(&mut tls).await;
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(head.clone());
                        seen.len() - 1
                    };
                    let answer = respond(n, &head);
                    let _ = tls.write_all(&answer).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Junk {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem: ca.cert_pem,
            requests,
        }
    }

    fn vault(&self) -> VaultUrl {
        VaultUrl::parse(&self.url).unwrap()
    }

    fn client(&self, retries: u32) -> KeyClient {
        KeyClient::builder()
            .credential(Arc::new(StaticToken::new("junk-token")))
            .ca_pem(Some(&self.ca_pem))
            .system_roots(false)
            .scope("https://vault.azure.net/.default")
            .retry_policy(RetryPolicy {
                max_retries: retries,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(2),
            })
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Reads a request head and its body (by Content-Length), returning the head.
async fn read_request(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&data).into_owned(),
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    head
}

fn http(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

const JSON: (&str, &str) = ("Content-Type", "application/json; charset=utf-8");

fn bundle_json(base: &str) -> String {
    format!(
        r#"{{"key":{{"kid":"{base}/keys/k1/78deebed173b48e48f55abf87ed4cf71","kty":"oct-HSM"}},"attributes":{{"enabled":true}}}}"#
    )
}

fn unavailable() -> Vec<u8> {
    http(
        "503 Service Unavailable",
        &[JSON],
        r#"{"error":{"code":"ServiceUnavailable","message":"The store is unavailable."}}"#,
    )
}

#[tokio::test]
async fn retries_on_503_for_safe_operations_only() {
    let junk = Junk::start(|n, _| {
        if n < 2 {
            unavailable()
        } else {
            http("200 OK", &[JSON], &bundle_json("https://127.0.0.1"))
        }
    })
    .await;
    let c = junk.client(3);
    let got = c.get_key(&junk.vault(), "k1", None).await.unwrap();
    assert_eq!(got.key.kty.as_deref(), Some("oct-HSM"));
    assert_eq!(junk.count(), 3);
    let head = junk.requests.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("GET /keys/k1/?api-version=2025-07-01 "),
        "{head}"
    );
    assert!(head
        .to_ascii_lowercase()
        .contains("authorization: bearer junk-token"));

    // A create that draws a 503 may have happened: it is not sent again.
    let junk = Junk::start(|_, _| unavailable()).await;
    let e = junk
        .client(3)
        .create_key(&junk.vault(), "k1", &create("oct-HSM"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(e.status(), Some(503));
    assert_eq!(e.code(), Some("ServiceUnavailable"));
    assert_eq!(junk.count(), 1);

    // Retries run out: the last answer's error comes back.
    let junk = Junk::start(|_, _| unavailable()).await;
    let e = junk
        .client(2)
        .wrap_key(&junk.vault().key("k1").unwrap(), "A256KW", &[0u8; 32])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(junk.count(), 3);
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let junk = Junk::start(|n, _| {
        if n == 0 {
            http(
                "429 Too Many Requests",
                &[JSON, ("Retry-After", "1"), ("retry-after-ms", "300")],
                r#"{"error":{"code":"Throttled","message":"Slow down."}}"#,
            )
        } else {
            http(
                "200 OK",
                &[JSON],
                r#"{"kid":"https://127.0.0.1/keys/k1/78deebed173b48e48f55abf87ed4cf71","value":"AQID"}"#,
            )
        }
    })
    .await;
    let start = Instant::now();
    let r = junk
        .client(3)
        .wrap_key(&junk.vault().key("k1").unwrap(), "A256KW", &[0u8; 32])
        .await
        .unwrap();
    assert_eq!(r.value, vec![1, 2, 3]);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(junk.count(), 2);

    let junk = Junk::start(|_, _| {
        http(
            "429 Too Many Requests",
            &[JSON],
            r#"{"error":{"code":"Throttled","message":"Slow down."}}"#,
        )
    })
    .await;
    let e = junk
        .client(1)
        .get_key(&junk.vault(), "k1", None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::Throttled, Some("Throttled"))
    );
    assert_eq!(junk.count(), 2);
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let c = KeyClient::builder()
        .credential(Arc::new(StaticToken::new("t")))
        .scope("https://vault.azure.net/.default")
        .retry_policy(RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        })
        .build()
        .unwrap();
    let v = VaultUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    for e in [
        c.get_key(&v, "k1", None).await.unwrap_err(),
        c.create_key(&v, "k1", &create("RSA")).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert_eq!(e.status(), None);
    }
}

#[tokio::test]
async fn malformed_answers_are_errors_not_panics() {
    let junk = Junk::start(|_, head| {
        let path = head.split(' ').nth(1).unwrap_or_default();
        let name = path.split('/').nth(2).unwrap_or_default();
        match name {
            "notjson" => http("200 OK", &[JSON], "<html>hello</html>"),
            "wrongshape" => http("200 OK", &[JSON], r#"{"value":5}"#),
            "badbase64" => http(
                "200 OK",
                &[JSON],
                r#"{"key":{"kid":"x","n":"!!!"},"attributes":{}}"#,
            ),
            "html500" => http("500 Internal Server Error", &[], "<html>oops</html>"),
            "envelope404" => http(
                "404 Not Found",
                &[JSON],
                r#"{"error":{"code":"KeyNotFound","message":"A key with (name/id) envelope404 was not found."}}"#,
            ),
            "garbage" => b"\x00\x01\x02 this is not HTTP\r\n\r\n".to_vec(),
            "closed" => Vec::new(),
            "truncated" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"key\":".to_vec(),
            "huge" => b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n{}".to_vec(),
            "redirect" => http(
                "302 Found",
                &[("Location", "https://evil.example/keys/x")],
                "",
            ),
            "noauth" => http("401 Unauthorized", &[], ""),
            "verify" => http("200 OK", &[JSON], r#"{"value":"yes"}"#),
            "loop" => http(
                "200 OK",
                &[JSON],
                r#"{"value":[],"nextLink":"/keys/loop/versions?$skiptoken=same"}"#,
            ),
            _ => match path.split('?').next().unwrap_or_default() {
                "/keys" => http(
                    "200 OK",
                    &[JSON],
                    r#"{"value":[{"kid":"https://x/keys/a","attributes":{}}],"nextLink":"https://evil.example/keys?$skiptoken=2"}"#,
                ),
                "/rng" => http("200 OK", &[JSON], r#"{"value":"AQID"}"#),
                _ => http("418 I'm a teapot", &[], "\u{0}\u{1}"),
            },
        }
    })
    .await;
    let c = junk.client(0);
    let v = junk.vault();
    let cases = [
        ("notjson", ErrorKind::InvalidResponse),
        ("wrongshape", ErrorKind::InvalidResponse),
        ("badbase64", ErrorKind::InvalidResponse),
        ("html500", ErrorKind::Server),
        ("envelope404", ErrorKind::NotFound),
        ("garbage", ErrorKind::Transport),
        ("closed", ErrorKind::Transport),
        ("truncated", ErrorKind::Transport),
        ("huge", ErrorKind::InvalidResponse),
        ("redirect", ErrorKind::InvalidResponse),
        ("noauth", ErrorKind::Unauthorized),
        ("teapot", ErrorKind::BadRequest),
    ];
    for (name, kind) in cases {
        let e: ClientError = c.get_key(&v, name, None).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
    }
    let e = c
        .verify(&v.key("verify").unwrap(), "ES256", &[0u8; 32], &[0u8; 64])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidResponse);
    // A nextLink to another host is refused; so is one that loops.
    let e = c.list_keys(&v, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidResponse);
    assert!(e.message().contains("nextLink"), "{e}");
    assert!(!junk
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.contains("evil")));
    let e = c.list_versions(&v, "loop", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidResponse);
    assert!(e.message().contains("repeats"), "{e}");
    // Asked for 32 random bytes, got 3.
    let e = c.get_random_bytes(&v, 32).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidResponse);
}

#[tokio::test]
async fn challenge_naming_a_foreign_authority_is_refused() {
    for (authority, resource, why) in [
        (
            "https://evil.example/tenant",
            "https://127.0.0.1",
            "authority host",
        ),
        (
            "http://127.0.0.1/tenant",
            "https://127.0.0.1",
            "plain https",
        ),
        (
            "https://127.0.0.1/tenant",
            "https://storage.azure.com",
            "resource",
        ),
    ] {
        let header = format!("Bearer authorization=\"{authority}\", resource=\"{resource}\"");
        let junk = Junk::start(move |_, _| {
            http(
                "401 Unauthorized",
                &[JSON, ("WWW-Authenticate", &header)],
                r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#,
            )
        })
        .await;
        let credential = ClientSecretCredential::for_challenge("app", "the-client-secret")
            .ca_pem(Some(&junk.ca_pem))
            .system_roots(false)
            .build()
            .unwrap();
        let c = KeyClient::builder()
            .credential(Arc::new(credential.clone()))
            .ca_pem(Some(&junk.ca_pem))
            .system_roots(false)
            .build()
            .unwrap();
        let e = c
            .wrap_key(&junk.vault().key("k1").unwrap(), "A256KW", &[9u8; 32])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthorized, "{authority}: {e}");
        assert!(e.message().contains(why), "{e}");
        assert!(credential.token_url().is_none());
        // Only the probe went out: no body, no token.
        let requests = junk.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert!(!requests[0].to_ascii_lowercase().contains("authorization:"));
    }
}
