//! Workload identity federation through a real server: a Kubernetes-shaped service account token,
//! signed by a key the test makes and published in a JWKS file, is exchanged for a Keyshift token
//! that works with the roles of the principal; then each way such an exchange must fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_crypto::{Curve, KeyMaterial, PublicKey, SignatureAlgorithm};
use keyshift_testkit::{v, TestServer};
use keyshift_vault::records::{FederatedCredential, JwksSource};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const ISSUER: &str = "https://oidc.cluster-a.test.example";
const SUBJECT: &str = "system:serviceaccount:payments:api";
const AUDIENCE: &str = "api://AzureADTokenExchange";

#[allow(clippy::disallowed_methods)] // a test's own view of the time
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signing key of the external issuer.
struct IssuerKey {
    kid: String,
    key: KeyMaterial,
    alg: SignatureAlgorithm,
}

impl IssuerKey {
    fn rsa(kid: &str) -> Self {
        IssuerKey {
            kid: kid.into(),
            key: KeyMaterial::generate_rsa(2048).unwrap(),
            alg: SignatureAlgorithm::Rs256,
        }
    }

    fn ec(kid: &str) -> Self {
        IssuerKey {
            kid: kid.into(),
            key: KeyMaterial::generate_ec(Curve::P256).unwrap(),
            alg: SignatureAlgorithm::Es256,
        }
    }

    fn jwk(&self) -> Value {
        match self.key.public_key() {
            PublicKey::Rsa { n, e } => json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                "n": b64::encode(&n), "e": b64::encode(&e)
            }),
            PublicKey::Ec { x, y, .. } => json!({
                "kty": "EC", "use": "sig", "crv": "P-256", "kid": self.kid,
                "x": b64::encode(&x), "y": b64::encode(&y)
            }),
            PublicKey::Oct { .. } => unreachable!(),
        }
    }

    fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(&serde_json::to_vec(header).unwrap()),
            b64::encode(&serde_json::to_vec(claims).unwrap())
        );
        let digest = match self.alg.digest_len() {
            32 => keyshift_crypto::digest::sha256(input.as_bytes()).to_vec(),
            48 => keyshift_crypto::digest::sha384(input.as_bytes()).to_vec(),
            _ => keyshift_crypto::digest::sha512(input.as_bytes()).to_vec(),
        };
        let signature = self.key.sign(self.alg, &digest).unwrap();
        format!("{input}.{}", b64::encode(&signature))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(
            &json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

/// The claims of a projected Kubernetes service account token.
fn k8s_claims(subject: &str) -> Value {
    let (namespace, name) = subject
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
        .unwrap_or(("default", "default"));
    let t = now();
    json!({
        "aud": [AUDIENCE],
        "exp": t + 3600,
        "iat": t,
        "nbf": t,
        "iss": ISSUER,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": "api-7d9f8b6c5-x2x9z", "uid": "0f1d6a1e-2b52-4b86-9d5c-0a6f1d2e3b4c"},
            "serviceaccount": {"name": name, "uid": "5b3f2a8e-8d35-4d3a-9f4e-2c1b0a9d8e7f"}
        },
        "sub": subject
    })
}

fn write_jwks(path: &Path, keys: &[&IssuerKey]) {
    let doc = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    // Atomic, as kubelet and config-map mounts replace files.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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

struct Setup {
    s: TestServer,
    jwks: PathBuf,
    key: IssuerKey,
    client_id: String,
    principal_id: String,
    _dir: tempfile::TempDir,
}

/// A server that trusts ISSUER through a JWKS file, and a principal mapped to SUBJECT.
async fn setup() -> Setup {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let key = IssuerKey::rsa("cluster-a-2025");
    write_jwks(&jwks, &[&key]);
    s.deployment()
        .trust_issuer(
            &keyshift_vault::RequestContext::local(),
            ISSUER,
            JwksSource::File {
                path: jwks.to_str().unwrap().into(),
            },
            &["RS256".into(), "ES256".into()],
        )
        .await
        .unwrap();
    let p = s
        .deployment()
        .create_principal("payments-api")
        .await
        .unwrap();
    s.deployment()
        .add_federated_credential(
            &keyshift_vault::RequestContext::local(),
            &p.principal.client_id,
            FederatedCredential {
                name: "cluster-a-payments".into(),
                issuer: ISSUER.into(),
                subject: SUBJECT.into(),
                audiences: vec![],
            },
        )
        .await
        .unwrap();
    Setup {
        s,
        jwks,
        key,
        client_id: p.principal.client_id,
        principal_id: p.principal.id,
        _dir: dir,
    }
}

fn claims(f: impl FnOnce(&mut Value)) -> Value {
    let mut c = k8s_claims(SUBJECT);
    f(&mut c);
    c
}

/// HMAC-SHA256 from the crate's SHA-256, to forge the classic RSA/HMAC confusion token.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&keyshift_crypto::digest::sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(message);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&keyshift_crypto::digest::sha256(&inner));
    keyshift_crypto::digest::sha256(&outer)
}

#[tokio::test]
async fn a_service_account_token_becomes_a_keyshift_token_with_the_principals_roles() {
    let f = setup().await;
    let s = &f.s;
    let vault = s.deployment().default_vault().unwrap();
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/fed-k1/create"),
            Some(json!({"kty": "EC"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/",
            "Key Vault Crypto User",
            &f.principal_id,
            None,
        )
        .await
        .unwrap();

    let (st, body) = exchange(s, Some(&f.client_id), &f.key.sign(&k8s_claims(SUBJECT))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let tc: Value =
        serde_json::from_slice(&b64::decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(tc["appid"], f.client_id.as_str());
    assert_eq!(tc["oid"], f.principal_id.as_str());

    // The Keyshift token works with the principal's roles: Crypto User reads and uses keys...
    let (st, key) = s
        .call_as(token, &s.url(), Method::GET, &v("/keys/fed-k1"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{key}");
    // ... and may not delete them.
    let (st, _) = s
        .call_as(token, &s.url(), Method::DELETE, &v("/keys/fed-k1"), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // A token may be presented again (kubelet rotates the file, not every read): no jti needed.
    let (st, _) = exchange(s, Some(&f.client_id), &f.key.sign(&k8s_claims(SUBJECT))).await;
    assert_eq!(st, StatusCode::OK);
    // A plain string audience works too.
    let (st, _) = exchange(
        s,
        Some(&f.client_id),
        &f.key.sign(&claims(|c| c["aud"] = json!(AUDIENCE))),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn every_forged_or_misdirected_external_token_is_refused() {
    let f = setup().await;
    let s = &f.s;
    let good = f.key.sign(&k8s_claims(SUBJECT));
    let parts: Vec<&str> = good.split('.').collect();

    // Another principal with a federated credential of its own.
    let other = s.deployment().create_principal("batch").await.unwrap();
    s.deployment()
        .add_federated_credential(
            &keyshift_vault::RequestContext::local(),
            &other.principal.client_id,
            FederatedCredential {
                name: "cluster-a-batch".into(),
                issuer: ISSUER.into(),
                subject: "system:serviceaccount:batch:worker".into(),
                audiences: vec![],
            },
        )
        .await
        .unwrap();

    let jwks_bytes = std::fs::read(&f.jwks).unwrap();
    let hs_input = format!(
        "{}.{}",
        b64::encode(&serde_json::to_vec(&json!({"alg": "HS256", "kid": f.key.kid})).unwrap()),
        parts[1]
    );
    let PublicKey::Rsa { n, .. } = f.key.key.public_key() else {
        unreachable!()
    };
    let stranger = IssuerKey::rsa(&f.key.kid); // same kid, other key
    let ec = IssuerKey::ec(&f.key.kid);
    let rs384 = IssuerKey {
        alg: SignatureAlgorithm::Rs384,
        ..IssuerKey::rsa(&f.key.kid)
    };
    let mut flipped = b64::decode(parts[2]).unwrap();
    flipped[7] ^= 0x01;

    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64::encode(br#"{"alg":"none","kid":"cluster-a-2025"}"#),
                parts[1]
            ),
            Some(f.client_id.clone()),
            "algorithm is not accepted",
        ),
        (
            "HS256 keyed with the JWKS document",
            format!(
                "{hs_input}.{}",
                b64::encode(&hmac_sha256(&jwks_bytes, hs_input.as_bytes()))
            ),
            Some(f.client_id.clone()),
            "algorithm is not accepted",
        ),
        (
            "HS256 keyed with the RSA modulus",
            format!(
                "{hs_input}.{}",
                b64::encode(&hmac_sha256(&n, hs_input.as_bytes()))
            ),
            Some(f.client_id.clone()),
            "algorithm is not accepted",
        ),
        (
            "bad signature",
            format!("{}.{}.{}", parts[0], parts[1], b64::encode(&flipped)),
            Some(f.client_id.clone()),
            "signature does not verify",
        ),
        (
            "payload edited after signing",
            format!(
                "{}.{}.{}",
                parts[0],
                b64::encode(
                    &serde_json::to_vec(&claims(
                        |c| c["sub"] = json!("system:serviceaccount:kube-system:admin")
                    ))
                    .unwrap()
                ),
                parts[2]
            ),
            Some(f.client_id.clone()),
            "signature does not verify",
        ),
        (
            "signed by another key under the same kid",
            stranger.sign(&k8s_claims(SUBJECT)),
            Some(f.client_id.clone()),
            "signature does not verify",
        ),
        (
            "unknown kid",
            IssuerKey::rsa("not-published").sign(&k8s_claims(SUBJECT)),
            Some(f.client_id.clone()),
            "does not publish",
        ),
        (
            "no kid",
            f.key
                .sign_with(&json!({"alg": "RS256"}), &k8s_claims(SUBJECT)),
            Some(f.client_id.clone()),
            "names no key",
        ),
        (
            "ES256 against the RSA key",
            ec.sign(&k8s_claims(SUBJECT)),
            Some(f.client_id.clone()),
            "does not fit",
        ),
        (
            "RS384, not allowed for this issuer",
            rs384.sign(&k8s_claims(SUBJECT)),
            Some(f.client_id.clone()),
            "algorithm is not accepted",
        ),
        (
            "untrusted issuer",
            f.key
                .sign(&claims(|c| c["iss"] = json!("https://evil.test.example"))),
            Some(f.client_id.clone()),
            "not a trusted federation issuer",
        ),
        (
            "issuer differing by a trailing slash",
            f.key
                .sign(&claims(|c| c["iss"] = json!(format!("{ISSUER}/")))),
            Some(f.client_id.clone()),
            "not a trusted federation issuer",
        ),
        (
            "wrong audience",
            f.key.sign(&claims(|c| {
                c["aud"] = json!(["https://kubernetes.default.svc"])
            })),
            Some(f.client_id.clone()),
            "audience",
        ),
        (
            "no audience",
            f.key.sign(&claims(|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            Some(f.client_id.clone()),
            "audience",
        ),
        (
            "subject not mapped",
            f.key
                .sign(&k8s_claims("system:serviceaccount:payments:other")),
            Some(f.client_id.clone()),
            "no federated credential",
        ),
        (
            "mapped subject presented for another principal's client_id",
            good.clone(),
            Some(other.principal.client_id.clone()),
            "no federated credential",
        ),
        ("no client_id", good.clone(), None, "client_id is required"),
        (
            "unknown client_id",
            good.clone(),
            Some("00000000-0000-0000-0000-000000000000".into()),
            "unknown or disabled",
        ),
        (
            "expired",
            f.key.sign(&claims(|c| {
                c["exp"] = json!(now() - 120);
                c["iat"] = json!(now() - 3720);
                c["nbf"] = json!(now() - 3720);
            })),
            Some(f.client_id.clone()),
            "expired",
        ),
        (
            "no exp",
            f.key.sign(&claims(|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            Some(f.client_id.clone()),
            "no expiry",
        ),
        (
            "not yet valid (nbf)",
            f.key.sign(&claims(|c| c["nbf"] = json!(now() + 600))),
            Some(f.client_id.clone()),
            "not yet valid",
        ),
        (
            "issued in the future (iat)",
            f.key.sign(&claims(|c| c["iat"] = json!(now() + 600))),
            Some(f.client_id.clone()),
            "not yet valid",
        ),
        (
            "claims of the wrong type",
            f.key.sign(&claims(|c| c["exp"] = json!("tomorrow"))),
            Some(f.client_id.clone()),
            "malformed",
        ),
        (
            "garbage",
            "a.b.c".into(),
            Some(f.client_id.clone()),
            "malformed",
        ),
    ];
    for (what, assertion, client_id, says) in cases {
        let (st, body) = exchange(s, client_id.as_deref(), &assertion).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"], "invalid_client", "{what}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(says), "{what}: {description}");
    }

    // The good token still works after all that: nothing above poisoned a cache.
    let (st, body) = exchange(s, Some(&f.client_id), &good).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // A disabled principal gets no token.
    s.deployment()
        .set_principal_enabled(
            &keyshift_vault::RequestContext::local(),
            &f.client_id,
            false,
        )
        .await
        .unwrap();
    let (st, body) = exchange(s, Some(&f.client_id), &good).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("unknown or disabled"));
    s.deployment()
        .set_principal_enabled(&keyshift_vault::RequestContext::local(), &f.client_id, true)
        .await
        .unwrap();
    let (st, _) = exchange(s, Some(&f.client_id), &good).await;
    assert_eq!(st, StatusCode::OK);

    // A removed federated credential stops the mapping.
    s.deployment()
        .remove_federated_credential(
            &keyshift_vault::RequestContext::local(),
            &other.principal.client_id,
            "cluster-a-batch",
        )
        .await
        .unwrap();
    let batch = f
        .key
        .sign(&k8s_claims("system:serviceaccount:batch:worker"));
    let (st, _) = exchange(s, Some(&other.principal.client_id), &batch).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // A removed issuer is not trusted any more, at once.
    s.deployment()
        .untrust_issuer(&keyshift_vault::RequestContext::local(), ISSUER)
        .await
        .unwrap();
    let (st, body) = exchange(s, Some(&f.client_id), &good).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("not a trusted federation issuer"));
}

#[tokio::test]
async fn a_rotated_jwks_file_is_picked_up_without_a_restart() {
    let f = setup().await;
    let s = &f.s;
    let (st, _) = exchange(s, Some(&f.client_id), &f.key.sign(&k8s_claims(SUBJECT))).await;
    assert_eq!(st, StatusCode::OK);

    // The cluster adds a new EC key next to the old one...
    let next = IssuerKey::ec("cluster-a-2026");
    write_jwks(&f.jwks, &[&f.key, &next]);
    let (st, body) = exchange(s, Some(&f.client_id), &next.sign(&k8s_claims(SUBJECT))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // ... then withdraws the old one: its tokens stop working.
    write_jwks(&f.jwks, &[&next]);
    let (st, body) = exchange(s, Some(&f.client_id), &f.key.sign(&k8s_claims(SUBJECT))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    let (st, _) = exchange(s, Some(&f.client_id), &next.sign(&k8s_claims(SUBJECT))).await;
    assert_eq!(st, StatusCode::OK);

    // A broken write keeps the last good keys rather than locking every workload out.
    std::fs::write(&f.jwks, b"{\"keys\": [").unwrap();
    let (st, _) = exchange(s, Some(&f.client_id), &next.sign(&k8s_claims(SUBJECT))).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn a_jwks_url_is_fetched_over_https_with_the_issuers_ca() {
    let s = TestServer::start().await;
    // Keyshift's own JWKS endpoint is a real HTTPS JWKS URL under a private CA: trust it as the
    // keys of an "external" issuer, and sign with the deployment's token key.
    let issuer = "https://oidc.cluster-b.test.example";
    let jwks_url = format!("{}/{}/discovery/v2.0/keys", s.url(), s.admin.tenant_id);
    let ca = s.data_dir.join("tls").join("ca.pem");
    s.deployment()
        .trust_issuer(
            &keyshift_vault::RequestContext::local(),
            issuer,
            JwksSource::Url {
                url: jwks_url.clone(),
                ca_file: Some(ca.to_str().unwrap().into()),
            },
            &["ES256".into()],
        )
        .await
        .unwrap();
    let p = s.deployment().create_principal("cluster-b").await.unwrap();
    s.deployment()
        .add_federated_credential(
            &keyshift_vault::RequestContext::local(),
            &p.principal.client_id,
            FederatedCredential {
                name: "cluster-b-api".into(),
                issuer: issuer.into(),
                subject: SUBJECT.into(),
                audiences: vec!["api://keyshift".into()],
            },
        )
        .await
        .unwrap();
    let signing = s.deployment().token_signing_key();
    let kid = keyshift_server::auth::key_id(&signing);
    let sign = |claims: &Value| {
        let input = format!(
            "{}.{}",
            b64::encode(&serde_json::to_vec(&json!({"alg": "ES256", "kid": kid})).unwrap()),
            b64::encode(&serde_json::to_vec(claims).unwrap())
        );
        let sig = signing.sign_es256(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(&sig))
    };
    let claims = |aud: &str| {
        let mut c = k8s_claims(SUBJECT);
        c["iss"] = json!(issuer);
        c["aud"] = json!([aud]);
        c
    };
    let (st, body) = exchange(
        &s,
        Some(&p.principal.client_id),
        &sign(&claims("api://keyshift")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The credential's own audience list replaces the default one.
    let (st, _) = exchange(&s, Some(&p.principal.client_id), &sign(&claims(AUDIENCE))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Without the CA file the issuer's certificate is not trusted: no keys, no token.
    s.deployment()
        .trust_issuer(
            &keyshift_vault::RequestContext::local(),
            issuer,
            JwksSource::Url {
                url: jwks_url,
                ca_file: None,
            },
            &["ES256".into()],
        )
        .await
        .unwrap();
    let (st, body) = exchange(
        &s,
        Some(&p.principal.client_id),
        &sign(&claims("api://keyshift")),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("cannot be loaded"),
        "{body}"
    );
}

#[tokio::test]
async fn credentials_name_trusted_issuers_only() {
    let f = setup().await;
    let err =
        f.s.deployment()
            .add_federated_credential(
                &keyshift_vault::RequestContext::local(),
                &f.client_id,
                FederatedCredential {
                    name: "elsewhere".into(),
                    issuer: "https://untrusted.test.example".into(),
                    subject: SUBJECT.into(),
                    audiences: vec![],
                },
            )
            .await
            .unwrap_err();
    assert!(err.message.contains("not trusted"), "{}", err.message);
    let dup =
        f.s.deployment()
            .add_federated_credential(
                &keyshift_vault::RequestContext::local(),
                &f.client_id,
                FederatedCredential {
                    name: "Cluster-A-Payments".into(),
                    issuer: ISSUER.into(),
                    subject: "system:serviceaccount:payments:other".into(),
                    audiences: vec![],
                },
            )
            .await
            .unwrap_err();
    assert_eq!(dup.code, keyshift_api::ErrorCode::Conflict);
    for bad in [&["HS256"][..], &["none"], &["RS256", "HS512"]] {
        let algs: Vec<String> = bad.iter().map(|a| (*a).to_owned()).collect();
        let err =
            f.s.deployment()
                .trust_issuer(
                    &keyshift_vault::RequestContext::local(),
                    ISSUER,
                    JwksSource::File {
                        path: f.jwks.to_str().unwrap().into(),
                    },
                    &algs,
                )
                .await
                .unwrap_err();
        assert!(err.message.contains("cannot be trusted"), "{}", err.message);
    }
}
