//! Bring your own key and secure key release through a real server over HTTPS: transfer blobs
//! built as Azure's BYOK tools build them, a test attestation authority served over HTTPS and
//! trusted by URL, real RS256 attestation tokens, and each way an import or a release must fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_crypto::transfer::{rsa_aes_key_wrap, TransferWrap};
use keyshift_crypto::{Curve, EncryptionAlgorithm, KeyMaterial, PublicKey, SignatureAlgorithm};
use keyshift_testkit::{v, EnclaveKey, TestAuthority, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn code(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or(""),
        body["error"]["innererror"]["code"].as_str().unwrap_or(""),
    )
}

fn public_of(bundle: &Value) -> PublicKey {
    let m = |k: &str| b64::decode(bundle["key"][k].as_str().unwrap()).unwrap();
    PublicKey::Rsa {
        n: m("n"),
        e: m("e"),
    }
}

/// The `key_hsm` of an import: base64url of the whole `.byok` JSON.
fn byok(kid: &str, kek: &PublicKey, wrap: TransferWrap, plaintext: &[u8]) -> String {
    let ciphertext = rsa_aes_key_wrap(kek, wrap.hash(), plaintext).unwrap();
    let blob = json!({"schema_version": "1.0.0",
        "header": {"kid": kid, "alg": "dir", "enc": wrap.name()},
        "ciphertext": b64::encode(&ciphertext),
        "generator": "keyshift-testkit"});
    b64::encode(&serde_json::to_vec(&blob).unwrap())
}

fn release_policy(authority: &str, claim: Value, immutable: bool) -> Value {
    let doc = json!({"version": "1.0", "anyOf": [{"authority": authority, "allOf": [claim]}]});
    json!({"data": b64::encode(&serde_json::to_vec(&doc).unwrap()), "immutable": immutable})
}

fn sdk_policy(a: &TestAuthority) -> Value {
    release_policy(
        &format!("{}/", a.issuer()),
        json!({"claim": "sdk-test", "equals": true}),
        false,
    )
}

async fn create_kek(s: &TestServer, name: &str) -> (String, PublicKey) {
    let (st, b) = s
        .call(
            Method::POST,
            &v(&format!("/keys/{name}/create")),
            Some(json!({"kty": "RSA-HSM", "key_size": 3072, "key_ops": ["import"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["key"]["kty"], "RSA-HSM");
    assert_eq!(b["key"]["key_ops"], json!(["import"]));
    (b["key"]["kid"].as_str().unwrap().to_owned(), public_of(&b))
}

async fn release(s: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    s.call(Method::POST, &v(path), Some(body)).await
}

/// Checks a release answer as an enclave would: the JWS signature by `x5c[0]`, the chain, and
/// the wrapped key opened with the enclave's private key. Returns the payload and the material.
fn open_release(s: &TestServer, answer: &Value, enclave: &EnclaveKey) -> (Value, Vec<u8>) {
    let jws = answer["value"].as_str().unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64::decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let x5c: Vec<Vec<u8>> = header["x5c"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| b64::decode(c.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(x5c.len(), 2, "leaf and local CA");
    assert_eq!(
        header["x5t#S256"],
        b64::encode(&keyshift_crypto::digest::sha256(&x5c[0]))
    );
    let ca_der = b64::decode(
        &s.ca_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>(),
    )
    .unwrap();
    assert_eq!(x5c[1], ca_der, "the chain ends at the deployment's CA");
    assert!(
        x5c[0].windows(9).any(|w| w == b"localhost"),
        "the leaf names the vault host"
    );
    let leaf = keyshift_crypto::x509::parse_certificate(&x5c[0]).unwrap();
    let signature = b64::decode(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    assert!(keyshift_crypto::verify_message_with_public(
        &leaf.public_key,
        SignatureAlgorithm::Rs256,
        input.as_bytes(),
        &signature
    )
    .unwrap());
    let payload: Value = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
    let key_hsm = payload["response"]["key"]["key"]["key_hsm"]
        .as_str()
        .unwrap();
    let blob: Value = serde_json::from_slice(&b64::decode(key_hsm).unwrap()).unwrap();
    assert_eq!(blob["schema_version"], "1.0");
    assert_eq!(blob["header"]["alg"], "dir");
    assert_eq!(blob["header"]["kid"], enclave.kid.as_str());
    let wrap = TransferWrap::from_name(blob["header"]["enc"].as_str().unwrap()).unwrap();
    let ciphertext = b64::decode(blob["ciphertext"].as_str().unwrap()).unwrap();
    let material = enclave
        .key
        .rsa_aes_key_unwrap(wrap.hash(), &ciphertext)
        .unwrap();
    (payload, material.to_vec())
}

#[tokio::test]
async fn byok_imports_rsa_ec_and_oct_blobs_with_a_key_exchange_key() {
    let s = TestServer::start().await;
    let (kid, kek) = create_kek(&s, "kek").await;

    // RSA-HSM, CKM_RSA_AES_KEY_WRAP, with SoftHSM 2.6.1's zero padding after the DER.
    let rsa = KeyMaterial::generate_rsa(2048).unwrap();
    let mut plain = rsa.transfer_plaintext().to_vec();
    plain.extend_from_slice(&[0u8; 6]);
    let blob = byok(&kid, &kek, TransferWrap::RsaAesKeyWrap, &plain);
    let (st, b) = s
        .call(
            Method::PUT,
            &v("/keys/byok-rsa"),
            Some(
                json!({"key": {"kty": "RSA-HSM", "key_ops": ["sign", "verify"], "key_hsm": blob}}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["key"]["kty"], "RSA-HSM");
    assert_eq!(public_of(&b), rsa.public_key());
    assert!(b["key"].get("key_hsm").is_none());
    let digest = keyshift_crypto::digest::sha256(b"byok");
    let (st, sig) = s
        .call(
            Method::POST,
            &v("/keys/byok-rsa//sign"),
            Some(json!({"alg": "PS256", "value": b64::encode(&digest)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let sig = b64::decode(sig["value"].as_str().unwrap()).unwrap();
    assert!(rsa
        .verify(SignatureAlgorithm::Ps256, &digest, &sig)
        .unwrap());

    // EC-HSM P-384 with RSA_AES_KEY_WRAP_256, member names in another casing.
    let ec = KeyMaterial::generate_ec(Curve::P384).unwrap();
    let blob = byok(
        &kid,
        &kek,
        TransferWrap::RsaAesKeyWrap256,
        &ec.transfer_plaintext(),
    );
    let (st, b) = s
        .call(
            Method::PUT,
            &v("/keys/byok-ec"),
            Some(json!({"KEY": {"kty": "EC-HSM", "crv": "P-384", "Key_HSM": blob}, "hsm": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        (b["key"]["kty"].as_str(), b["key"]["crv"].as_str()),
        (Some("EC-HSM"), Some("P-384"))
    );

    // oct-HSM with RSA_AES_KEY_WRAP_384: the raw key.
    let oct = KeyMaterial::generate_oct(256).unwrap();
    let blob = byok(
        &kid,
        &kek,
        TransferWrap::RsaAesKeyWrap384,
        &oct.transfer_plaintext(),
    );
    let (st, b) = s
        .call(
            Method::PUT,
            &v("/keys/byok-aes"),
            Some(json!({"key": {"kty": "oct-HSM", "key_hsm": blob}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, w) = s
        .call(
            Method::POST,
            &v("/keys/byok-aes//wrapkey"),
            Some(json!({"alg": "A256KW", "value": b64::encode(&[9u8; 32])})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let wrapped = b64::decode(w["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        oct.unwrap_key(EncryptionAlgorithm::A256Kw, &wrapped)
            .unwrap()
            .as_slice(),
        &[9u8; 32]
    );
}

#[tokio::test]
async fn key_exchange_keys_import_and_nothing_else() {
    let s = TestServer::start().await;
    let (kid, _) = create_kek(&s, "kek").await;
    let bad = |body: Value| {
        let s = &s;
        async move {
            let (st, b) = s
                .call(Method::POST, &v("/keys/other/create"), Some(body))
                .await;
            assert_eq!(
                (st, code(&b).0),
                (StatusCode::BAD_REQUEST, "BadParameter"),
                "{b}"
            );
        }
    };
    bad(json!({"kty": "RSA-HSM", "key_ops": ["import", "decrypt"]})).await;
    bad(json!({"kty": "RSA", "key_ops": ["import"]})).await;
    bad(json!({"kty": "EC-HSM", "key_ops": ["import"]})).await;
    bad(json!({"kty": "RSA-HSM", "key_ops": ["import"], "attributes": {"exportable": true}})).await;
    for (op, body) in [
        ("encrypt", json!({"alg": "RSA-OAEP", "value": "AQID"})),
        ("wrapkey", json!({"alg": "RSA-OAEP-256", "value": "AQID"})),
        (
            "sign",
            json!({"alg": "RS256", "value": b64::encode(&[0u8; 32])}),
        ),
    ] {
        let (st, b) = s
            .call(Method::POST, &v(&format!("/keys/kek//{op}")), Some(body))
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{op}: {b}");
        assert_eq!(code(&b).1, "KeyOperationForbidden");
    }
    let (st, b) = s
        .call(
            Method::PATCH,
            &v("/keys/kek"),
            Some(json!({"key_ops": ["import", "sign"]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (st, b) = s
        .call(
            Method::PATCH,
            &v("/keys/kek"),
            Some(json!({"key_ops": ["decrypt"]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a KEK stays one: {b}");
    s.call(
        Method::POST,
        &v("/keys/plain/create"),
        Some(json!({"kty": "RSA-HSM"})),
    )
    .await;
    let (st, b) = s
        .call(
            Method::PATCH,
            &v("/keys/plain"),
            Some(json!({"key_ops": ["import"]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "no key becomes a KEK: {b}");
    let (st, b) = s
        .call(
            Method::PUT,
            &v("/keys/imported-kek"),
            Some(
                json!({"key": {"kty": "oct", "key_ops": ["import"], "k": b64::encode(&[1u8; 32])}}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (st, b) = s.call(Method::POST, &v("/keys/kek/backup"), None).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "backup of a KEK is allowed, as in Azure: {b}"
    );
    assert!(kid.contains("/keys/kek/"));
}

#[tokio::test]
async fn byok_refusals_name_what_is_wrong() {
    let s = TestServer::start().await;
    let (kid, kek) = create_kek(&s, "kek").await;
    let (kid2, kek2) = create_kek(&s, "kek2").await;
    let (st, plain_rsa) = s
        .call(
            Method::POST,
            &v("/keys/not-kek/create"),
            Some(json!({"kty": "RSA-HSM"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let rsa = KeyMaterial::generate_rsa(2048).unwrap();
    let rsa_plain = rsa.transfer_plaintext();
    let ec = KeyMaterial::generate_ec(Curve::P384).unwrap();
    let aes = [7u8; 32];
    let sha1 = TransferWrap::RsaAesKeyWrap;
    let raw_blob = |kid: &str, enc: &str, ciphertext: &[u8]| {
        let blob = json!({"schema_version": "1.0.0",
            "header": {"kid": kid, "alg": "dir", "enc": enc},
            "ciphertext": b64::encode(ciphertext)});
        b64::encode(&serde_json::to_vec(&blob).unwrap())
    };
    let good = rsa_aes_key_wrap(&kek, sha1.hash(), &rsa_plain).unwrap();
    let mut flipped = good.clone();
    flipped[500] ^= 0x40;
    let unknown_version = format!(
        "{}/0123456789abcdef0123456789abcdef",
        kid.rsplit_once('/').unwrap().0
    );
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a blob made for another KEK",
            json!({"kty": "RSA-HSM", "key_hsm": byok(&kid, &kek2, sha1, &rsa_plain)}),
            "TransferBlobDoesNotOpen",
        ),
        (
            "a KEK version this vault does not have",
            json!({"kty": "RSA-HSM", "key_hsm": byok(&unknown_version, &kek, sha1, &rsa_plain)}),
            "KeyExchangeKeyNotFound",
        ),
        (
            "a key that is not a KEK",
            json!({"kty": "RSA-HSM", "key_hsm": byok(plain_rsa["key"]["kid"].as_str().unwrap(), &public_of(&plain_rsa), sha1, &rsa_plain)}),
            "NotAKeyExchangeKey",
        ),
        (
            "a corrupted ciphertext",
            json!({"kty": "RSA-HSM", "key_hsm": raw_blob(&kid, sha1.name(), &flipped)}),
            "TransferBlobDoesNotOpen",
        ),
        (
            "a truncated ciphertext",
            json!({"kty": "RSA-HSM", "key_hsm": raw_blob(&kid, sha1.name(), &good[..300])}),
            "TransferBlobDoesNotOpen",
        ),
        (
            "enc that is not how the blob was made",
            json!({"kty": "RSA-HSM", "key_hsm": raw_blob(&kid, "RSA_AES_KEY_WRAP_256", &good)}),
            "TransferBlobDoesNotOpen",
        ),
        (
            "an unknown enc",
            json!({"kty": "RSA-HSM", "key_hsm": raw_blob(&kid, "A256KW", &good)}),
            "InvalidTransferBlob",
        ),
        (
            "an unversioned kid",
            json!({"kty": "RSA-HSM", "key_hsm": raw_blob(kid.rsplit_once('/').unwrap().0, sha1.name(), &good)}),
            "InvalidTransferBlob",
        ),
        (
            "key_hsm that is not JSON",
            json!({"kty": "RSA-HSM", "key_hsm": b64::encode(b"garbage")}),
            "InvalidTransferBlob",
        ),
        (
            "an EC key where RSA-HSM was asked",
            json!({"kty": "RSA-HSM", "key_hsm": byok(&kid, &kek, sha1, &ec.transfer_plaintext())}),
            "TransferBlobKeyMismatch",
        ),
        (
            "a P-384 key where P-256 was asked",
            json!({"kty": "EC-HSM", "crv": "P-256", "key_hsm": byok(&kid, &kek, sha1, &ec.transfer_plaintext())}),
            "TransferBlobKeyMismatch",
        ),
        (
            "an AES key where RSA-HSM was asked",
            json!({"kty": "RSA-HSM", "key_hsm": byok(&kid, &kek, sha1, &aes)}),
            "TransferBlobKeyMismatch",
        ),
        (
            "an RSA key where oct-HSM was asked",
            json!({"kty": "oct-HSM", "key_hsm": byok(&kid, &kek, sha1, &rsa_plain)}),
            "TransferBlobKeyMismatch",
        ),
    ];
    for (what, key, inner) in cases {
        let (st, b) = s
            .call(Method::PUT, &v("/keys/target"), Some(json!({"key": key})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{what}: {b}");
        assert_eq!(code(&b), ("BadParameter", inner), "{what}: {b}");
    }
    let (st, b) = s
        .call(
            Method::PUT,
            &v("/keys/target"),
            Some(json!({"key": {"kty": "RSA-HSM", "key_hsm": "!!!"}})),
        )
        .await;
    assert_eq!(
        (st, code(&b).0),
        (StatusCode::BAD_REQUEST, "BadParameter"),
        "bad base64: {b}"
    );
    let _ = kid2;
    let (st, _) = s.call(Method::GET, &v("/keys/target"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing was imported");
}

#[tokio::test]
async fn release_wraps_the_key_for_the_enclave_and_signs_the_answer() {
    let s = TestServer::start().await;
    let authority = s.start_attestation_authority().await;
    s.trust_attestation(&authority).await;
    let (kid, kek) = create_kek(&s, "kek").await;

    // An imported key comes back byte for byte.
    let rsa = KeyMaterial::generate_rsa(2048).unwrap();
    let blob = byok(
        &kid,
        &kek,
        TransferWrap::RsaAesKeyWrap,
        &rsa.transfer_plaintext(),
    );
    let (st, imported) = s
        .call(
            Method::PUT,
            &v("/keys/released"),
            Some(json!({"key": {"kty": "RSA-HSM", "key_hsm": blob},
                "attributes": {"exportable": true}, "release_policy": sdk_policy(&authority)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{imported}");
    let policy = &imported["release_policy"];
    assert_eq!(policy["contentType"], "application/json; charset=utf-8");
    assert_eq!(policy["immutable"], false);
    let doc: Value =
        serde_json::from_slice(&b64::decode(policy["data"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(doc["version"], "1.0.0", "stored as Azure normalises it");
    assert_eq!(doc["anyOf"][0]["allOf"][0]["equals"], true);

    let token = authority.mint(&authority.claims_for(authority.enclave()));
    let (st, answer) = release(&s, "/keys/released/release", json!({"target": token})).await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    let (payload, material) = open_release(&s, &answer, authority.enclave());
    assert_eq!(material, rsa.transfer_plaintext().to_vec());
    let request = &payload["request"];
    assert_eq!(request["enc"], "CKM_RSA_AES_KEY_WRAP");
    assert_eq!(request["api-version"], "2025-07-01");
    assert_eq!(request["kid"], format!("{}/keys/released", s.url()));
    assert!(request.get("nonce").is_none());
    let key = &payload["response"]["key"];
    assert_eq!(key["key"]["kid"], imported["key"]["kid"]);
    assert_eq!(key["key"]["n"], imported["key"]["n"]);
    assert_eq!(key["attributes"]["exportable"], true);
    assert_eq!(key["release_policy"], imported["release_policy"]);

    // A created EC-HSM key, by version, with SHA-384 and a nonce; then it still signs.
    let (st, created) = s
        .call(
            Method::POST,
            &v("/keys/ec-released/create"),
            Some(json!({"kty": "EC-HSM", "crv": "P-256",
                "attributes": {"exportable": true}, "release_policy": sdk_policy(&authority)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let version = created["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let enclave = EnclaveKey::generate("my-enclave", 3072).unwrap();
    let token = authority.mint(&authority.claims_for(&enclave));
    let (st, answer) = release(
        &s,
        &format!("/keys/ec-released/{version}/release"),
        json!({"target": token, "nonce": "n-1", "enc": "RSA_AES_KEY_WRAP_384"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    let (payload, material) = open_release(&s, &answer, &enclave);
    assert_eq!(payload["request"]["nonce"], "n-1");
    assert_eq!(payload["request"]["enc"], "RSA_AES_KEY_WRAP_384");
    assert_eq!(payload["request"]["kid"], created["key"]["kid"]);
    let released = KeyMaterial::from_pkcs8_der(&material).unwrap();
    let digest = keyshift_crypto::digest::sha256(b"released");
    let sig = released.sign(SignatureAlgorithm::Es256, &digest).unwrap();
    let (st, ok) = s
        .call(
            Method::POST,
            &v("/keys/ec-released//verify"),
            Some(
                json!({"alg": "ES256", "digest": b64::encode(&digest), "value": b64::encode(&sig)}),
            ),
        )
        .await;
    assert_eq!((st, ok["value"].as_bool()), (StatusCode::OK, Some(true)));
}

#[tokio::test]
async fn release_refusals_carry_azure_codes() {
    let s = TestServer::start().await;
    let authority = s.start_attestation_authority().await;
    s.trust_attestation(&authority).await;
    let untrusted = s.start_attestation_authority().await;
    let create = |name: &str, body: Value| {
        let s = &s;
        let path = v(&format!("/keys/{name}/create"));
        async move { s.call(Method::POST, &path, Some(body)).await }
    };
    let (st, b) = create(
        "k",
        json!({"kty": "RSA-HSM", "attributes": {"exportable": true}, "release_policy": sdk_policy(&authority)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let good_claims = authority.claims_for(authority.enclave());
    let refused = |token: String,
                   status: StatusCode,
                   codes: (&'static str, &'static str),
                   what: &'static str| {
        let s = &s;
        async move {
            let (st, b) = release(s, "/keys/k/release", json!({"target": token})).await;
            assert_eq!((st, code(&b)), (status, codes), "{what}: {b}");
        }
    };
    let forbidden = StatusCode::FORBIDDEN;
    let bad = StatusCode::BAD_REQUEST;

    // Issuer: not trusted (and not in the policy), or trusted but not named by the policy.
    let mut c = untrusted.claims_for(untrusted.enclave());
    refused(
        untrusted.mint(&c),
        forbidden,
        ("Forbidden", "UntrustedAttestationAuthority"),
        "untrusted issuer",
    )
    .await;
    s.trust_attestation(&untrusted).await;
    refused(
        untrusted.mint(&c),
        forbidden,
        ("Forbidden", "UntrustedAttestationAuthority"),
        "issuer not in the policy",
    )
    .await;
    // A token of the trusted authority's issuer signed by another key.
    c["iss"] = good_claims["iss"].clone();
    let forged = untrusted.sign_with_header(&json!({"alg": "RS256", "kid": authority.kid()}), &c);
    refused(
        forged,
        forbidden,
        ("Forbidden", "AttestationTokenInvalid"),
        "bad signature",
    )
    .await;
    let mut tampered = authority.mint(&good_claims);
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    refused(
        tampered,
        forbidden,
        ("Forbidden", "AttestationTokenInvalid"),
        "tampered signature",
    )
    .await;
    // alg none, and HS256 keyed with the public JWKS (algorithm confusion).
    let part = |v: &Value| b64::encode(&serde_json::to_vec(v).unwrap());
    let none = format!(
        "{}.{}.",
        part(&json!({"alg": "none", "kid": authority.kid()})),
        part(&good_claims)
    );
    refused(
        none,
        forbidden,
        ("Forbidden", "AttestationTokenInvalid"),
        "alg none",
    )
    .await;
    let input = format!(
        "{}.{}",
        part(&json!({"alg": "HS256", "kid": authority.kid()})),
        part(&good_claims)
    );
    let mac = keyshift_crypto::digest::hmac_sha256(
        authority.jwks().to_string().as_bytes(),
        input.as_bytes(),
    );
    refused(
        format!("{input}.{}", b64::encode(&mac)),
        forbidden,
        ("Forbidden", "AttestationTokenInvalid"),
        "HMAC confusion",
    )
    .await;
    // Time.
    let mut expired = good_claims.clone();
    expired["exp"] = json!(expired["iat"].as_i64().unwrap() - 3600);
    refused(
        authority.mint(&expired),
        forbidden,
        ("Forbidden", "AttestationTokenInvalid"),
        "expired",
    )
    .await;
    let mut early = good_claims.clone();
    early["nbf"] = json!(early["iat"].as_i64().unwrap() + 3600);
    refused(
        authority.mint(&early),
        forbidden,
        ("Forbidden", "AttestationTokenInvalid"),
        "not yet valid",
    )
    .await;
    // Claims.
    let mut wrong = good_claims.clone();
    wrong["sdk-test"] = json!(false);
    refused(
        authority.mint(&wrong),
        forbidden,
        ("Forbidden", "ReleasePolicyNotSatisfied"),
        "claim mismatch",
    )
    .await;
    let mut absent = good_claims.clone();
    absent.as_object_mut().unwrap().remove("sdk-test");
    refused(
        authority.mint(&absent),
        forbidden,
        ("Forbidden", "ReleasePolicyNotSatisfied"),
        "claim absent",
    )
    .await;
    // Enclave key.
    let mut no_key = good_claims.clone();
    no_key.as_object_mut().unwrap().remove("x-ms-runtime");
    refused(
        authority.mint(&no_key),
        bad,
        ("BadParameter", "NoEnclaveKey"),
        "no enclave key",
    )
    .await;
    let mut small = good_claims.clone();
    small["x-ms-runtime"]["keys"] = json!([{"kty": "RSA", "kid": "small", "use": "enc",
        "n": b64::encode(&[0xc7; 128]), "e": "AQAB"}]);
    refused(
        authority.mint(&small),
        bad,
        ("BadParameter", "NoEnclaveKey"),
        "1024-bit enclave key",
    )
    .await;
    refused(
        "not-a-token".into(),
        bad,
        ("BadParameter", "InvalidAttestationToken"),
        "malformed target",
    )
    .await;
    let (st, b) = release(
        &s,
        "/keys/k/release",
        json!({"target": authority.mint(&good_claims), "enc": "A256KW"}),
    )
    .await;
    assert_eq!((st, code(&b).0), (bad, "BadParameter"), "unknown enc: {b}");

    // The key: not exportable; and the creation rules around exportable and policies.
    create("plain", json!({"kty": "RSA-HSM"})).await;
    let (st, b) = release(
        &s,
        "/keys/plain/release",
        json!({"target": authority.mint(&good_claims)}),
    )
    .await;
    assert_eq!(
        (st, code(&b)),
        (bad, ("BadParameter", "KeyNotExportable")),
        "{b}"
    );
    for (what, body) in [
        (
            "exportable without a policy",
            json!({"kty": "RSA-HSM", "attributes": {"exportable": true}}),
        ),
        (
            "a policy on a non-exportable key",
            json!({"kty": "RSA-HSM", "release_policy": sdk_policy(&authority)}),
        ),
        (
            "an exportable software key",
            json!({"kty": "RSA", "attributes": {"exportable": true}, "release_policy": sdk_policy(&authority)}),
        ),
        (
            "an exportable oct-HSM key in a vault",
            json!({"kty": "oct-HSM", "attributes": {"exportable": true}, "release_policy": sdk_policy(&authority)}),
        ),
        (
            "a root allOf",
            json!({"kty": "RSA-HSM", "attributes": {"exportable": true}, "release_policy": {
            "data": b64::encode(br#"{"allOf":[{"authority":"https://a","allOf":[{"claim":"c","equals":1}]}]}"#)}}),
        ),
    ] {
        let (st, b) = create("refused", body).await;
        assert_eq!((st, code(&b).0), (bad, "BadParameter"), "{what}: {b}");
    }
    // Disabled keys are not released.
    s.call(
        Method::PATCH,
        &v("/keys/k"),
        Some(json!({"attributes": {"enabled": false}})),
    )
    .await;
    let (st, b) = release(
        &s,
        "/keys/k/release",
        json!({"target": authority.mint(&good_claims)}),
    )
    .await;
    assert_eq!(
        (st, code(&b)),
        (forbidden, ("Forbidden", "KeyDisabled")),
        "{b}"
    );
    s.call(
        Method::PATCH,
        &v("/keys/k"),
        Some(json!({"attributes": {"enabled": true}})),
    )
    .await;
    let (st, b) = release(
        &s,
        "/keys/k/release",
        json!({"target": authority.mint(&good_claims)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn release_needs_the_release_data_action() {
    let s = TestServer::start().await;
    let authority = s.start_attestation_authority().await;
    s.trust_attestation(&authority).await;
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/k/create"),
            Some(json!({"kty": "RSA-HSM", "attributes": {"exportable": true}, "release_policy": sdk_policy(&authority)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let vault = s.deployment().default_vault().unwrap();
    let p = s
        .deployment()
        .create_principal("enclave-app")
        .await
        .unwrap();
    let token = s.token_for(&p.principal.client_id, &p.client_secret).await;
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/",
            "Key Vault Crypto User",
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    let body = json!({"target": authority.mint(&authority.claims_for(authority.enclave()))});
    let (st, b) = s
        .call_as(
            &token,
            &s.url(),
            Method::POST,
            &v("/keys/k/release"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (st, code(&b)),
        (StatusCode::FORBIDDEN, ("Forbidden", "ForbiddenByRbac")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Action: 'Microsoft.KeyVault/vaults/keys/release/action'"),
        "{b}"
    );
    s.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/keys/k",
            "Key Vault Crypto Service Release User",
            &p.principal.id,
            None,
        )
        .await
        .unwrap();
    let (st, b) = s
        .call_as(
            &token,
            &s.url(),
            Method::POST,
            &v("/keys/k/release"),
            Some(body),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn immutable_policies_never_change() {
    let s = TestServer::start().await;
    let authority = s.start_attestation_authority().await;
    let mut policy = sdk_policy(&authority);
    policy["immutable"] = json!(true);
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/frozen/create"),
            Some(json!({"kty": "RSA-HSM", "attributes": {"exportable": true}, "release_policy": policy})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["release_policy"]["immutable"], true);
    let other = release_policy(
        &format!("{}/", authority.issuer()),
        json!({"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}),
        false,
    );
    for (what, p) in [
        ("another policy", other.clone()),
        ("reset to mutable", {
            let mut p = policy.clone();
            p["immutable"] = json!(false);
            p
        }),
    ] {
        let (st, b) = s
            .call(
                Method::PATCH,
                &v("/keys/frozen"),
                Some(json!({"release_policy": p})),
            )
            .await;
        assert_eq!(
            (st, code(&b)),
            (
                StatusCode::FORBIDDEN,
                ("Forbidden", "ReleasePolicyImmutable")
            ),
            "{what}: {b}"
        );
    }
    // A mutable policy may change.
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/thawed/create"),
            Some(json!({"kty": "RSA-HSM", "attributes": {"exportable": true}, "release_policy": sdk_policy(&authority)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = s
        .call(
            Method::PATCH,
            &v("/keys/thawed"),
            Some(json!({"release_policy": other})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let doc: Value = serde_json::from_slice(
        &b64::decode(b["release_policy"]["data"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        doc["anyOf"][0]["allOf"][0]["claim"],
        "x-ms-attestation-type"
    );
}
