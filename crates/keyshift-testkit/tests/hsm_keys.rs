//! `-HSM` keys held in a real PKCS#11 token (SoftHSM2, a fresh token per server) through a real
//! server over HTTPS: the managed HSM kind, every operation of every HSM key type checked with
//! the public key, the material shown not to be extractable through PKCS#11, the key lifecycle
//! (rotation, soft delete, purge destroying the token object, backup and restore), BYOK into the
//! token and secure key release wrapped inside it.
//!
//! Needs SoftHSM2; without it the tests say so and pass, unless `KEYSHIFT_E2E_REQUIRE_SOFTHSM` is
//! set (CI): see `keyshift_testkit::softhsm`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::Session;
use keyshift_api::b64;
use keyshift_crypto::transfer::{rsa_aes_key_wrap, TransferWrap};
use keyshift_crypto::{
    encrypt_with_public, verify_with_public, Curve, EncryptionAlgorithm, KeyMaterial, PublicKey,
    SignatureAlgorithm,
};
use keyshift_testkit::{keyshift, softhsm, v, TestServer};
use keyshift_vault::VaultKind;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn inner(body: &Value) -> &str {
    body["error"]["innererror"]["code"].as_str().unwrap_or("")
}

fn bytes(body: &Value, field: &str) -> Vec<u8> {
    b64::decode(body[field].as_str().unwrap()).unwrap()
}

fn public_of(bundle: &Value) -> PublicKey {
    let k = &bundle["key"];
    let m = |f: &str| b64::decode(k[f].as_str().unwrap()).unwrap();
    match k["kty"].as_str().unwrap() {
        "RSA-HSM" | "RSA" => PublicKey::Rsa {
            n: m("n"),
            e: m("e"),
        },
        _ => PublicKey::Ec {
            crv: Curve::from_jwk_name(k["crv"].as_str().unwrap()).unwrap(),
            x: m("x"),
            y: m("y"),
        },
    }
}

/// A server with a token, and a managed HSM `kv2` in which the administrator holds the crypto
/// roles (a managed HSM's Administrator manages roles, not keys, as in Azure).
async fn managed_hsm() -> Option<(TestServer, String)> {
    let s = TestServer::start_with_hsm().await?;
    let url = s.add_vault("kv2", VaultKind::ManagedHsm).await;
    s.grant_admin(
        "kv2",
        &["Managed HSM Crypto Officer", "Managed HSM Crypto User"],
    )
    .await;
    Some((s, url))
}

/// A session of the test's own on the server's token, straight through PKCS#11, to look at
/// objects the way any PKCS#11 application could (logged in: the server's login is per
/// application, and this is the same process).
struct RawToken {
    session: Session,
    _pkcs11: Pkcs11,
}

fn raw_token(label: &str) -> RawToken {
    let hsm = softhsm::softhsm().unwrap();
    let pkcs11 = Pkcs11::new(hsm.module()).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == label)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    RawToken {
        session,
        _pkcs11: pkcs11,
    }
}

fn token_of(s: &TestServer) -> String {
    s.hsm_token.clone().unwrap()
}

impl RawToken {
    /// The token objects of a key (by the label the vault gives them).
    fn objects(&self, vault: &str, name: &str) -> Vec<cryptoki::object::ObjectHandle> {
        self.session
            .find_objects(&[Attribute::Label(
                format!("keyshift/{vault}/{name}").into_bytes(),
            )])
            .unwrap()
    }
}

async fn create(s: &TestServer, base: &str, name: &str, body: Value) -> Value {
    let (st, b) = s
        .call_at(
            base,
            Method::POST,
            &v(&format!("/keys/{name}/create")),
            Some(body),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b
}

async fn op(s: &TestServer, base: &str, kid: &str, op: &str, body: Value) -> (StatusCode, Value) {
    let path = kid.strip_prefix(base).unwrap();
    s.call_at(base, Method::POST, &v(&format!("{path}/{op}")), Some(body))
        .await
}

/// `GET .../attestation` of a key: the statement about its private or secret object, its
/// signature checked with the certificate that comes with it, and whether a public one came.
async fn attestation(s: &TestServer, base: &str, name: &str) -> (Value, bool) {
    let (st, b) = s
        .call_at(
            base,
            Method::GET,
            &v(&format!("/keys/{name}/attestation")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let a = &b["attributes"]["attestation"];
    assert_eq!(a["version"], "keyshift-pkcs11/1.0", "{b}");
    let pem = String::from_utf8(bytes(a, "certificatePemFile")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let jws = String::from_utf8(bytes(a, "privateKeyAttestation")).unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let header: Value = serde_json::from_slice(&b64::decode(parts[0]).unwrap()).unwrap();
    let leaf = b64::decode(header["x5c"][0].as_str().unwrap()).unwrap();
    let leaf = keyshift_crypto::x509::parse_certificate(&leaf).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = b64::decode(parts[2]).unwrap();
    assert!(keyshift_crypto::verify_message_with_public(
        &leaf.public_key,
        SignatureAlgorithm::Rs256,
        signed.as_bytes(),
        &signature
    )
    .unwrap());
    // A statement altered after signing does not verify.
    let forged = format!(
        "{}.{}",
        parts[0],
        b64::encode(b"{\"CKA_EXTRACTABLE\":false}")
    );
    assert!(!keyshift_crypto::verify_message_with_public(
        &leaf.public_key,
        SignatureAlgorithm::Rs256,
        forged.as_bytes(),
        &signature
    )
    .unwrap());
    let claims: Value = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["kid"], b["key"]["kid"]);
    (claims, a.get("publicKeyAttestation").is_some())
}

#[tokio::test]
async fn a_managed_hsm_without_an_hsm_makes_no_keys() {
    let s = TestServer::start().await;
    let url = s.add_vault("kv2", VaultKind::ManagedHsm).await;
    s.grant_admin(
        "kv2",
        &["Managed HSM Crypto Officer", "Managed HSM Crypto User"],
    )
    .await;
    for body in [
        json!({"kty": "RSA-HSM"}),
        json!({"kty": "EC-HSM"}),
        json!({"kty": "oct-HSM"}),
    ] {
        let (st, b) = s
            .call_at(&url, Method::POST, &v("/keys/k/create"), Some(body))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(inner(&b), "HsmNotConfigured", "{b}");
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--pkcs11-module"));
    }
    let oct = KeyMaterial::generate_oct(256).unwrap();
    let (st, b) = s
        .call_at(
            &url,
            Method::PUT,
            &v("/keys/imported"),
            Some(json!({"key": {"kty": "oct-HSM", "k": b64::encode(&oct.transfer_plaintext())}})),
        )
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::BAD_REQUEST, "HsmNotConfigured"),
        "{b}"
    );
    // Software types are refused by a managed HSM whatever is attached.
    let (st, b) = s
        .call_at(
            &url,
            Method::POST,
            &v("/keys/k/create"),
            Some(json!({"kty": "RSA"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    // A vault without an HSM keeps making -HSM types in software, and says nothing of a platform.
    let b = create(&s, &s.url(), "soft", json!({"kty": "RSA-HSM"})).await;
    assert!(b["attributes"].get("hsmPlatform").is_none(), "{b}");
    let (st, b) = s
        .call(Method::GET, &v("/keys/soft/attestation"), None)
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::BAD_REQUEST, "NotHsmProtected"),
        "{b}"
    );
}

#[tokio::test]
async fn every_hsm_key_type_works_in_the_token_and_stays_there() {
    let Some((s, url)) = managed_hsm().await else {
        return;
    };
    let raw = raw_token(&token_of(&s));

    // RSA-HSM: the token signs and decrypts; the public key checks both.
    for bits in [2048, 3072] {
        let name = format!("rsa{bits}");
        let b = create(&s, &url, &name, json!({"kty": "RSA-HSM", "key_size": bits})).await;
        let kid = b["key"]["kid"].as_str().unwrap().to_owned();
        assert!(
            b["attributes"]["hsmPlatform"]
                .as_str()
                .unwrap()
                .contains("SoftHSM"),
            "{b}"
        );
        let public = public_of(&b);
        for (alg, digest_len) in [("RS256", 32), ("PS384", 48), ("RS512", 64)] {
            let digest = vec![7u8; digest_len];
            let (st, out) = op(
                &s,
                &url,
                &kid,
                "sign",
                json!({"alg": alg, "value": b64::encode(&digest)}),
            )
            .await;
            assert_eq!(st, StatusCode::OK, "{alg}: {out}");
            let alg = SignatureAlgorithm::from_name(alg).unwrap();
            assert!(verify_with_public(&public, alg, &digest, &bytes(&out, "value")).unwrap());
            let (st, ok) = op(
                &s,
                &url,
                &kid,
                "verify",
                json!({"alg": alg.name(), "digest": b64::encode(&digest), "value": out["value"]}),
            )
            .await;
            assert_eq!(
                (st, ok["value"].as_bool()),
                (StatusCode::OK, Some(true)),
                "{ok}"
            );
        }
        for alg in ["RSA-OAEP", "RSA1_5"] {
            let e = EncryptionAlgorithm::from_name(alg).unwrap();
            let ciphertext = encrypt_with_public(&public, e, &[1; 32]).unwrap();
            for operation in ["decrypt", "unwrapkey"] {
                let (st, out) = op(
                    &s,
                    &url,
                    &kid,
                    operation,
                    json!({"alg": alg, "value": b64::encode(&ciphertext)}),
                )
                .await;
                assert_eq!(st, StatusCode::OK, "{alg} {operation}: {out}");
                assert_eq!(bytes(&out, "value"), vec![1; 32]);
            }
            // What the token wraps, the token unwraps.
            let (st, out) = op(
                &s,
                &url,
                &kid,
                "wrapkey",
                json!({"alg": alg, "value": b64::encode(&[2; 32])}),
            )
            .await;
            assert_eq!(st, StatusCode::OK, "{out}");
            let (st, back) = op(
                &s,
                &url,
                &kid,
                "unwrapkey",
                json!({"alg": alg, "value": out["value"]}),
            )
            .await;
            assert_eq!((st, bytes(&back, "value")), (StatusCode::OK, vec![2; 32]));
        }
        // SoftHSM2 has no OAEP with SHA-256: refused both ways, so nothing gets wrapped that
        // could not be unwrapped.
        for (operation, len) in [("wrapkey", 32), ("unwrapkey", bits / 8)] {
            let (st, out) = op(
                &s,
                &url,
                &kid,
                operation,
                json!({"alg": "RSA-OAEP-256", "value": b64::encode(&vec![2u8; len])}),
            )
            .await;
            assert_eq!(
                (st, inner(&out)),
                (StatusCode::BAD_REQUEST, "NotSupportedByHsm"),
                "{out}"
            );
        }
    }

    // EC-HSM on each curve: signatures the public key verifies.
    for (crv, alg, len) in [
        ("P-256", "ES256", 32),
        ("P-384", "ES384", 48),
        ("P-521", "ES512", 64),
        ("P-256K", "ES256K", 32),
    ] {
        let name = format!("ec-{}", crv.to_lowercase());
        let b = create(&s, &url, &name, json!({"kty": "EC-HSM", "crv": crv})).await;
        let kid = b["key"]["kid"].as_str().unwrap().to_owned();
        let public = public_of(&b);
        let digest = vec![9u8; len];
        let (st, out) = op(
            &s,
            &url,
            &kid,
            "sign",
            json!({"alg": alg, "value": b64::encode(&digest)}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{crv}: {out}");
        let alg = SignatureAlgorithm::from_name(alg).unwrap();
        assert!(verify_with_public(&public, alg, &digest, &bytes(&out, "value")).unwrap());
        // A signature of another digest does not verify.
        assert!(!verify_with_public(&public, alg, &vec![8u8; len], &bytes(&out, "value")).unwrap());
    }

    // oct-HSM of each size: key wrap, GCM and CBC round trips through the token, and a
    // tampered GCM tag refused.
    for bits in [128, 192, 256] {
        let name = format!("aes{bits}");
        let b = create(&s, &url, &name, json!({"kty": "oct-HSM", "key_size": bits})).await;
        let kid = b["key"]["kid"].as_str().unwrap().to_owned();
        let kw = format!("A{bits}KW");
        let (st, out) = op(
            &s,
            &url,
            &kid,
            "wrapkey",
            json!({"alg": kw, "value": b64::encode(&[4; 32])}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{out}");
        let (st, back) = op(
            &s,
            &url,
            &kid,
            "unwrapkey",
            json!({"alg": kw, "value": out["value"]}),
        )
        .await;
        assert_eq!((st, bytes(&back, "value")), (StatusCode::OK, vec![4; 32]));
        let gcm = format!("A{bits}GCM");
        let (st, out) = op(
            &s,
            &url,
            &kid,
            "encrypt",
            json!({"alg": gcm, "value": b64::encode(b"hello hsm"), "aad": b64::encode(b"ctx")}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{out}");
        let (st, back) = op(&s, &url, &kid, "decrypt", json!({"alg": gcm, "value": out["value"], "iv": out["iv"], "tag": out["tag"], "aad": b64::encode(b"ctx")})).await;
        assert_eq!(
            (st, bytes(&back, "value")),
            (StatusCode::OK, b"hello hsm".to_vec()),
            "{back}"
        );
        let mut tag = bytes(&out, "tag");
        tag[0] ^= 1;
        let (st, bad) = op(&s, &url, &kid, "decrypt", json!({"alg": gcm, "value": out["value"], "iv": out["iv"], "tag": b64::encode(&tag), "aad": b64::encode(b"ctx")})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        let cbc = format!("A{bits}CBCPAD");
        let (st, out) = op(&s, &url, &kid, "encrypt", json!({"alg": cbc, "value": b64::encode(b"seventeen bytes!!"), "iv": b64::encode(&[3; 16])})).await;
        assert_eq!(st, StatusCode::OK, "{out}");
        let (st, back) = op(
            &s,
            &url,
            &kid,
            "decrypt",
            json!({"alg": cbc, "value": out["value"], "iv": b64::encode(&[3; 16])}),
        )
        .await;
        assert_eq!(
            (st, bytes(&back, "value")),
            (StatusCode::OK, b"seventeen bytes!!".to_vec())
        );
    }

    // Every key's private or secret object is in the token, and no PKCS#11 application can
    // read it: sensitive, never extractable, generated in the token.
    for name in [
        "rsa2048",
        "rsa3072",
        "ec-p-256",
        "ec-p-384",
        "ec-p-521",
        "ec-p-256k",
        "aes128",
        "aes192",
        "aes256",
    ] {
        let objects = raw.objects("kv2", name);
        assert!(!objects.is_empty(), "{name} has token objects");
        let mut secret_seen = false;
        for handle in objects {
            let class = raw
                .session
                .get_attributes(handle, &[AttributeType::Class])
                .unwrap();
            if class.contains(&Attribute::Class(ObjectClass::PUBLIC_KEY)) {
                continue;
            }
            secret_seen = true;
            let info = raw
                .session
                .get_attribute_info(handle, &[AttributeType::Value])
                .unwrap();
            assert!(
                matches!(
                    info[0],
                    AttributeInfo::Sensitive | AttributeInfo::TypeInvalid
                ),
                "{name}: {info:?}"
            );
            let attributes = raw
                .session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                        AttributeType::Local,
                    ],
                )
                .unwrap();
            for expected in [
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::NeverExtractable(true),
                Attribute::Local(true),
            ] {
                assert!(
                    attributes.contains(&expected),
                    "{name}: {expected:?} in {attributes:?}"
                );
            }
        }
        assert!(secret_seen, "{name}");
    }
    // Key attestation: what the token says of each, signed.
    let (claims, public) = attestation(&s, &url, "rsa2048").await;
    assert!(public, "an RSA key has a public-key statement too");
    assert_eq!(claims["object"]["class"], "private");
    for fact in [
        "CKA_LOCAL",
        "CKA_SENSITIVE",
        "CKA_ALWAYS_SENSITIVE",
        "CKA_NEVER_EXTRACTABLE",
    ] {
        assert_eq!(claims[fact], true, "{fact}: {claims}");
    }
    assert_eq!(claims["CKA_EXTRACTABLE"], false);
    assert!(claims["hsmPlatform"].as_str().unwrap().contains("SoftHSM"));
    let (claims, public) = attestation(&s, &url, "aes256").await;
    assert!(!public, "an AES key has no public key");
    assert_eq!(claims["object"]["class"], "secret");
    assert_eq!(claims["CKA_LOCAL"], true);
}

#[tokio::test]
async fn token_keys_rotate_delete_recover_purge_and_restore() {
    let Some(s) = TestServer::start_with_hsm().await else {
        return;
    };
    let raw = raw_token(&token_of(&s));
    // In a `vault` with an HSM attached, -HSM types go to the token; software types do not.
    let soft = create(&s, &s.url(), "software", json!({"kty": "RSA"})).await;
    assert!(soft["attributes"].get("hsmPlatform").is_none());
    assert!(raw.objects("default", "software").is_empty());
    let first = create(&s, &s.url(), "k", json!({"kty": "oct-HSM"})).await;
    assert!(first["attributes"]["hsmPlatform"].is_string(), "{first}");
    assert_eq!(raw.objects("default", "k").len(), 1);
    let kid1 = first["key"]["kid"].as_str().unwrap().to_owned();
    let (_, wrapped1) = op(
        &s,
        &s.url(),
        &kid1,
        "wrapkey",
        json!({"alg": "A256KW", "value": b64::encode(&[1; 32])}),
    )
    .await;

    // Rotation makes the new version in the token; the old one keeps working.
    let (st, rotated) = s.call(Method::POST, &v("/keys/k/rotate"), None).await;
    assert_eq!(st, StatusCode::OK, "{rotated}");
    assert!(rotated["attributes"]["hsmPlatform"].is_string());
    assert_eq!(raw.objects("default", "k").len(), 2);
    let (st, back) = op(
        &s,
        &s.url(),
        &kid1,
        "unwrapkey",
        json!({"alg": "A256KW", "value": wrapped1["value"]}),
    )
    .await;
    assert_eq!((st, bytes(&back, "value")), (StatusCode::OK, vec![1; 32]));

    // A backup names the token objects; a vault of the same security domain restores it, and
    // both then use the same objects.
    let (st, backup) = s.call(Method::POST, &v("/keys/k/backup"), None).await;
    assert_eq!(st, StatusCode::OK, "{backup}");
    let default = s.deployment().vault("default").unwrap();
    s.deployment()
        .create_vault(
            &keyshift_vault::RequestContext::local(),
            keyshift_vault::VaultSpec {
                name: "kv2".into(),
                kind: VaultKind::Vault,
                retention_days: 7,
                purge_protection: false,
                port: None,
                new_security_domain: false,
                default: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s.deployment().vault("kv2").unwrap().security_domain,
        default.security_domain
    );
    let kv2 = format!("https://kv2.localhost:{}", s.addr().port());
    let mut restored = (StatusCode::NOT_FOUND, Value::Null);
    for _ in 0..100 {
        if s.http.get(format!("{kv2}/health")).send().await.is_ok() {
            restored = s
                .call_at(
                    &kv2,
                    Method::POST,
                    &v("/keys/restore"),
                    Some(json!({"value": backup["value"]})),
                )
                .await;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(restored.0, StatusCode::OK, "{}", restored.1);
    let kid1_kv2 = kid1.replace(&s.url(), &kv2);
    let (st, back) = op(
        &s,
        &kv2,
        &kid1_kv2,
        "unwrapkey",
        json!({"alg": "A256KW", "value": wrapped1["value"]}),
    )
    .await;
    assert_eq!(
        (st, bytes(&back, "value")),
        (StatusCode::OK, vec![1; 32]),
        "{back}"
    );

    // Soft delete keeps the objects; recovery brings the key back.
    let (st, _) = s.call(Method::DELETE, &v("/keys/k"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(raw.objects("default", "k").len(), 2);
    let (st, _) = s
        .call(Method::POST, &v("/deletedkeys/k/recover"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, back) = op(
        &s,
        &s.url(),
        &kid1,
        "unwrapkey",
        json!({"alg": "A256KW", "value": wrapped1["value"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{back}");

    // Purging the key in one vault leaves the objects the other vault's copy still names.
    s.call(Method::DELETE, &v("/keys/k"), None).await;
    let (st, b) = s.call(Method::DELETE, &v("/deletedkeys/k"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    assert_eq!(raw.objects("default", "k").len(), 2, "kv2 still names them");
    let (st, back) = op(
        &s,
        &kv2,
        &kid1_kv2,
        "unwrapkey",
        json!({"alg": "A256KW", "value": wrapped1["value"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{back}");

    // Purging the last copy destroys them, and the backup cannot bring back what is gone.
    s.call_at(&kv2, Method::DELETE, &v("/keys/k"), None).await;
    let (st, b) = s
        .call_at(&kv2, Method::DELETE, &v("/deletedkeys/k"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    assert!(
        raw.objects("default", "k").is_empty(),
        "purge destroys the token objects"
    );
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/restore"),
            Some(json!({"value": backup["value"]})),
        )
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::BAD_REQUEST, "HsmKeyPurged"),
        "{b}"
    );
    // The software key was never in the token, and is untouched by all this.
    let (st, _) = s.call(Method::GET, &v("/keys/software"), None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn byok_lands_in_the_token_and_exportable_keys_are_released_from_it() {
    let Some((s, url)) = managed_hsm().await else {
        return;
    };
    let raw = raw_token(&token_of(&s));
    // The key-exchange key is made in the token.
    let kek = create(
        &s,
        &url,
        "kek",
        json!({"kty": "RSA-HSM", "key_size": 2048, "key_ops": ["import"]}),
    )
    .await;
    let kek_kid = kek["key"]["kid"].as_str().unwrap().to_owned();
    assert!(!raw.objects("kv2", "kek").is_empty());
    let byok = |wrap: TransferWrap, plaintext: &[u8]| {
        let ciphertext = rsa_aes_key_wrap(&public_of(&kek), wrap.hash(), plaintext).unwrap();
        let blob = json!({"schema_version": "1.0.0",
            "header": {"kid": kek_kid, "alg": "dir", "enc": wrap.name()},
            "ciphertext": b64::encode(&ciphertext)});
        b64::encode(&serde_json::to_vec(&blob).unwrap())
    };
    // An RSA key transferred under CKM_RSA_AES_KEY_WRAP: in the token, signing as the original.
    let rsa = KeyMaterial::generate_rsa(2048).unwrap();
    let (st, imported) = s
        .call_at(&url, Method::PUT, &v("/keys/byok-rsa"), Some(json!({"key": {"kty": "RSA-HSM", "key_hsm": byok(TransferWrap::RsaAesKeyWrap, &rsa.transfer_plaintext())}})))
        .await;
    assert_eq!(st, StatusCode::OK, "{imported}");
    assert!(imported["attributes"]["hsmPlatform"].is_string());
    assert_eq!(
        raw.objects("kv2", "byok-rsa").len(),
        2,
        "private and public objects"
    );
    let digest = [5u8; 32];
    let kid = imported["key"]["kid"].as_str().unwrap();
    let (st, sig) = op(
        &s,
        &url,
        kid,
        "sign",
        json!({"alg": "RS256", "value": b64::encode(&digest)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{sig}");
    assert!(verify_with_public(
        &rsa.public_key(),
        SignatureAlgorithm::Rs256,
        &digest,
        &bytes(&sig, "value")
    )
    .unwrap());
    // Attested as imported, not generated in the token.
    let (claims, _) = attestation(&s, &url, "byok-rsa").await;
    assert_eq!(claims["CKA_LOCAL"], false, "{claims}");
    assert_eq!(claims["CKA_SENSITIVE"], true);
    assert_eq!(claims["CKA_EXTRACTABLE"], false);
    // OAEP with SHA-256 is not in SoftHSM2: the refusal says so.
    let (st, b) = s
        .call_at(&url, Method::PUT, &v("/keys/byok-256"), Some(json!({"key": {"kty": "RSA-HSM", "key_hsm": byok(TransferWrap::RsaAesKeyWrap256, &rsa.transfer_plaintext())}})))
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::BAD_REQUEST, "NotSupportedByHsm"),
        "{b}"
    );
    assert!(
        raw.objects("kv2", "byok-256").is_empty(),
        "nothing is left in the token"
    );

    // Release: an exportable oct-HSM key is wrapped for the enclave inside the token.
    let authority = s.start_attestation_authority().await;
    s.trust_attestation(&authority).await;
    let doc = json!({"version": "1.0", "anyOf": [{"authority": format!("{}/", authority.issuer()), "allOf": [{"claim": "sdk-test", "equals": true}]}]});
    let policy =
        json!({"data": b64::encode(&serde_json::to_vec(&doc).unwrap()), "immutable": false});
    let b = create(&s, &url, "exportable", json!({"kty": "oct-HSM", "key_size": 256, "attributes": {"exportable": true}, "release_policy": policy})).await;
    let kid = b["key"]["kid"].as_str().unwrap().to_owned();
    let token = authority.mint(&authority.claims_for(authority.enclave()));
    let (st, answer) = op(&s, &url, &kid, "release", json!({"target": token})).await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    let jws = answer["value"].as_str().unwrap();
    let payload: Value =
        serde_json::from_slice(&b64::decode(jws.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let key_hsm = payload["response"]["key"]["key"]["key_hsm"]
        .as_str()
        .unwrap();
    let blob: Value = serde_json::from_slice(&b64::decode(key_hsm).unwrap()).unwrap();
    let ciphertext = b64::decode(blob["ciphertext"].as_str().unwrap()).unwrap();
    let released = authority
        .enclave()
        .key
        .rsa_aes_key_unwrap(TransferWrap::RsaAesKeyWrap.hash(), &ciphertext)
        .unwrap();
    // The released key is the token's: what the token wrapped, it unwraps.
    let software = KeyMaterial::from_transfer_plaintext(&released, true)
        .unwrap()
        .0;
    let (_, wrapped) = op(
        &s,
        &url,
        &kid,
        "wrapkey",
        json!({"alg": "A256KW", "value": b64::encode(&[6; 32])}),
    )
    .await;
    assert_eq!(
        software
            .unwrap_key(EncryptionAlgorithm::A256Kw, &bytes(&wrapped, "value"))
            .unwrap()
            .as_slice(),
        &[6; 32]
    );
    // Released only wrapped: the object is still unreadable through PKCS#11.
    for handle in raw.objects("kv2", "exportable") {
        let info = raw
            .session
            .get_attribute_info(handle, &[AttributeType::Value])
            .unwrap();
        assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");
    }
    // RSA_AES_KEY_WRAP_256 needs OAEP with SHA-256 in the token: SoftHSM2 refuses, by name.
    let token = authority.mint(&authority.claims_for(authority.enclave()));
    let (st, b) = op(
        &s,
        &url,
        &kid,
        "release",
        json!({"target": token, "enc": "RSA_AES_KEY_WRAP_256"}),
    )
    .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::BAD_REQUEST, "NotSupportedByHsm"),
        "{b}"
    );
}

/// Scenario (d) through `keyshift migrate`: data keys wrapped by a software key in a vault move to
/// an RSA-HSM key generated in the token of a managed HSM, and `migrate verify` opens every one
/// under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyshift_migrate_moves_a_software_key_workload_into_the_token() {
    let Some((s, url)) = managed_hsm().await else {
        return;
    };
    let raw = raw_token(&token_of(&s));
    let source = create(&s, &s.url(), "cmk", json!({"kty": "RSA", "key_size": 2048})).await;
    let kid = source["key"]["kid"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("keys.jsonl");
    let mut lines = String::new();
    for i in 0..25u8 {
        let (st, w) = op(
            &s,
            &s.url(),
            &kid,
            "wrapkey",
            json!({"alg": "RSA-OAEP", "value": b64::encode(&[i; 32])}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{w}");
        lines += &format!(
            "{}\n",
            json!({"id": i, "kid": w["kid"], "alg": "RSA-OAEP", "wrapped_key": w["value"]})
        );
    }
    std::fs::write(&list, lines).unwrap();
    let admin = s.data_dir.join("admin.json");
    let plan = dir.path().join("to-hsm.toml");
    let p = |path: &std::path::Path| path.to_str().unwrap().to_owned();
    assert!(keyshift(&[
        "migrate",
        "plan",
        "--name",
        "to-hsm",
        "--source",
        &kid,
        "--credentials",
        &p(&admin),
        "--target-vault",
        &url,
        "--target-name",
        "cmk-hsm",
        "--target-kty",
        "RSA-HSM",
        "--wrapped-keys",
        &p(&list),
        "--keep-until",
        "2027-01-31",
        "--out",
        &p(&plan),
    ]));
    // SoftHSM2 has no RSA-OAEP-256 (the default for an RSA target): the plan names RSA-OAEP.
    let text = std::fs::read_to_string(&plan).unwrap();
    let text = text.replacen("[target]\n", "[target]\nwrap_alg = \"RSA-OAEP\"\n", 1);
    assert!(text.contains("wrap_alg = \"RSA-OAEP\""), "{text}");
    std::fs::write(&plan, text).unwrap();
    assert!(keyshift(&[
        "migrate",
        "apply",
        &p(&plan),
        "--progress",
        "none"
    ]));
    assert!(keyshift(&["migrate", "verify", &p(&plan)]));
    // The new key is in the token; every item names it and opens under it there.
    let (st, target) = s
        .call_at(&url, Method::GET, &v("/keys/cmk-hsm"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{target}");
    assert!(target["attributes"]["hsmPlatform"].is_string(), "{target}");
    assert_eq!(raw.objects("kv2", "cmk-hsm").len(), 2);
    let target_kid = target["key"]["kid"].as_str().unwrap();
    for (i, line) in std::fs::read_to_string(&list).unwrap().lines().enumerate() {
        let item: Value = serde_json::from_str(line).unwrap();
        assert_eq!(item["kid"], target_kid);
        assert_eq!(item["alg"], "RSA-OAEP");
        let (st, out) = op(
            &s,
            &url,
            target_kid,
            "unwrapkey",
            json!({"alg": "RSA-OAEP", "value": item["wrapped_key"]}),
        )
        .await;
        assert_eq!(
            (st, bytes(&out, "value")),
            (StatusCode::OK, vec![i as u8; 32]),
            "{out}"
        );
    }
}
