//! The keys data plane over real HTTPS: lifecycle, routing quirks, errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_testkit::{v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn inner(body: &Value) -> &str {
    body["error"]["innererror"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn create_get_update_list_and_versions() {
    let s = TestServer::start().await;
    let (st, rsa) = s
        .call(
            Method::POST,
            &v("/keys/Rsa-1/create"),
            Some(json!({"kty": "RSA", "key_size": 2048})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{rsa}");
    let kid = rsa["key"]["kid"].as_str().unwrap().to_owned();
    assert!(
        kid.starts_with(&format!("{}/keys/Rsa-1/", s.url())),
        "{kid}"
    );
    let version = kid.rsplit('/').next().unwrap().to_owned();
    assert_eq!(version.len(), 32);
    assert!(version
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(rsa["key"]["e"], "AQAB");
    assert!(rsa["key"].get("d").is_none() && rsa["key"].get("p").is_none());
    assert!(rsa["attributes"]["created"].is_i64(), "integer timestamps");
    assert_eq!(rsa["attributes"]["recoverableDays"], 90);
    assert_eq!(rsa["attributes"]["recoveryLevel"], "Recoverable+Purgeable");

    // Latest, by version, with a trailing slash, and case-insensitively.
    for path in ["/keys/Rsa-1", "/keys/Rsa-1/", "/keys/rsa-1/", "/KEYS/RSA-1"] {
        let (st, got) = s.call(Method::GET, &v(path), None).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        assert_eq!(got["key"]["kid"], kid.as_str(), "{path}");
    }
    let (st, got) = s
        .call(Method::GET, &v(&format!("/keys/Rsa-1/{version}")), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["key"]["n"], rsa["key"]["n"]);

    // A second version becomes the latest.
    let (_, second) = s
        .call(
            Method::POST,
            &v("/keys/rsa-1/create"),
            Some(json!({"kty": "RSA"})),
        )
        .await;
    assert_ne!(second["key"]["kid"], rsa["key"]["kid"]);
    assert!(
        second["key"]["kid"]
            .as_str()
            .unwrap()
            .contains("/keys/Rsa-1/"),
        "stored casing kept"
    );
    let (_, latest) = s.call(Method::GET, &v("/keys/Rsa-1/"), None).await;
    assert_eq!(latest["key"]["kid"], second["key"]["kid"]);

    // Update the first version only.
    let (st, upd) = s
        .call(
            Method::PATCH,
            &v(&format!("/keys/Rsa-1/{version}")),
            Some(json!({"attributes": {"enabled": false, "exp": 4102444800_i64}, "tags": {"team": "a"}, "key_ops": ["sign", "verify"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{upd}");
    assert_eq!(upd["attributes"]["enabled"], false);
    assert_eq!(upd["attributes"]["exp"], 4102444800_i64);
    assert_eq!(upd["tags"]["team"], "a");
    assert_eq!(upd["key"]["key_ops"], json!(["sign", "verify"]));
    let (_, latest) = s.call(Method::GET, &v("/keys/Rsa-1"), None).await;
    assert_eq!(
        latest["attributes"]["enabled"], true,
        "other versions untouched"
    );

    // Versions listing.
    let (st, versions) = s.call(Method::GET, &v("/keys/Rsa-1/versions"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(versions["value"].as_array().unwrap().len(), 2);
    assert!(
        versions["value"][0]["kid"]
            .as_str()
            .unwrap()
            .split('/')
            .count()
            == 6,
        "versioned kids"
    );
}

#[tokio::test]
async fn listing_pages_with_absolute_next_links() {
    let s = TestServer::start().await;
    for i in 0..7 {
        let (st, _) = s
            .call(
                Method::POST,
                &v(&format!("/keys/page-{i}/create")),
                Some(json!({"kty": "EC"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let mut seen = Vec::new();
    let mut next = Some(format!("{}{}", s.url(), v("/keys?maxresults=3")));
    let mut pages = 0;
    while let Some(url) = next {
        let response = s
            .http
            .get(&url)
            .bearer_auth(s.token())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let page: Value = response.json().await.unwrap();
        for item in page["value"].as_array().unwrap() {
            let kid = item["kid"].as_str().unwrap();
            assert_eq!(
                kid.split('/').count(),
                5,
                "list keys gives base kids: {kid}"
            );
            seen.push(kid.to_owned());
        }
        next = page
            .get("nextLink")
            .and_then(|l| l.as_str())
            .map(str::to_owned);
        if let Some(link) = &next {
            assert!(
                link.starts_with(&s.url()),
                "absolute nextLink on the same host:port: {link}"
            );
        }
        pages += 1;
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7);
    for bad in ["0", "26", "x"] {
        let (st, body) = s
            .call(Method::GET, &v(&format!("/keys?maxresults={bad}")), None)
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(code(&body), "BadParameter");
    }
    let (st, _) = s.call(Method::GET, &v("/keys?$skiptoken=%%%"), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn soft_delete_recover_purge() {
    let s = TestServer::start().await;
    let (_, created) = s
        .call(
            Method::POST,
            &v("/keys/gone/create"),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
    let (st, deleted) = s.call(Method::DELETE, &v("/keys/gone"), None).await;
    assert_eq!(st, StatusCode::OK, "{deleted}");
    assert_eq!(
        deleted["recoveryId"],
        format!("{}/deletedkeys/gone", s.url())
    );
    let when = deleted["deletedDate"].as_i64().unwrap();
    assert_eq!(
        deleted["scheduledPurgeDate"].as_i64().unwrap(),
        when + 90 * 86_400
    );
    assert_eq!(deleted["key"]["kid"], created["key"]["kid"]);

    let (st, body) = s.call(Method::GET, &v("/keys/gone"), None).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "KeyNotFound"));
    let (st, body) = s
        .call(
            Method::POST,
            &v("/keys/gone//encrypt"),
            Some(json!({"alg": "A256GCM", "value": "AA"})),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "a deleted key cannot be used: {body}"
    );
    let (st, body) = s
        .call(
            Method::POST,
            &v("/keys/GONE/create"),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(inner(&body), "ObjectIsDeletedButRecoverable");
    let (st, _) = s.call(Method::GET, &v("/deletedkeys/gone"), None).await;
    assert_eq!(st, StatusCode::OK);
    let (_, list) = s.call(Method::GET, &v("/deletedkeys"), None).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    assert_eq!(list["value"][0]["recoveryId"], deleted["recoveryId"]);

    let (st, recovered) = s
        .call(Method::POST, &v("/deletedkeys/gone/recover"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{recovered}");
    assert_eq!(recovered["key"]["kid"], created["key"]["kid"]);
    let (st, _) = s
        .call(Method::POST, &v("/deletedkeys/gone/recover"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "recover of a live key");

    s.call(Method::DELETE, &v("/keys/gone"), None).await;
    let (st, body) = s.call(Method::DELETE, &v("/deletedkeys/gone"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let (st, _) = s.call(Method::GET, &v("/deletedkeys/gone"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.call(Method::DELETE, &v("/deletedkeys/gone"), None).await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "purge of a name that is not deleted"
    );
    let (st, again) = s
        .call(
            Method::POST,
            &v("/keys/gone/create"),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "a purged name is free: {again}");
    assert_ne!(again["key"]["kid"], created["key"]["kid"]);
}

#[tokio::test]
async fn backup_restore_same_domain_only() {
    let s = TestServer::start().await;
    s.call(
        Method::POST,
        &v("/keys/bk/create"),
        Some(json!({"kty": "EC", "crv": "P-384", "tags": {"a": "b"}})),
    )
    .await;
    s.call(Method::POST, &v("/keys/bk/rotate"), None).await;
    let (_, before) = s.call(Method::GET, &v("/keys/bk/versions"), None).await;
    let (st, backup) = s.call(Method::POST, &v("/keys/bk/backup"), None).await;
    assert_eq!(st, StatusCode::OK);
    let blob = backup["value"].as_str().unwrap().to_owned();

    let (st, body) = s
        .call(
            Method::POST,
            &v("/keys/restore"),
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::CONFLICT, "Conflict"),
        "restore over a live name"
    );
    s.call(Method::DELETE, &v("/keys/bk"), None).await;
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/restore"),
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "restore over a deleted name");
    s.call(Method::DELETE, &v("/deletedkeys/bk"), None).await;
    let (st, restored) = s
        .call(
            Method::POST,
            &v("/keys/restore"),
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{restored}");
    assert_eq!(restored["tags"]["a"], "b");
    let (_, after) = s.call(Method::GET, &v("/keys/bk/versions"), None).await;
    let ids = |l: &Value| {
        let mut v: Vec<String> = l["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["kid"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&before),
        ids(&after),
        "every version comes back with its id"
    );
    // The restored key works.
    let digest = keyshift_crypto::digest::sha384(b"x");
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/bk//sign"),
            Some(json!({"alg": "ES384", "value": keyshift_api::b64::encode(&digest)})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    // A tampered blob is refused.
    let mut raw = keyshift_api::b64::decode(&blob).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    s.call(Method::DELETE, &v("/keys/bk"), None).await;
    s.call(Method::DELETE, &v("/deletedkeys/bk"), None).await;
    let (st, body) = s
        .call(
            Method::POST,
            &v("/keys/restore"),
            Some(json!({"value": keyshift_api::b64::encode(&raw)})),
        )
        .await;
    assert_eq!((st, code(&body)), (StatusCode::BAD_REQUEST, "BadParameter"));

    // Another deployment (another security domain) refuses the blob.
    let other = TestServer::start().await;
    let (st, body) = other
        .call(
            Method::POST,
            &v("/keys/restore"),
            Some(json!({"value": blob})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(inner(&body), "SecurityDomainMismatch");
    let (st, _) = other.call(Method::GET, &v("/keys/bk"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn operations_and_their_refusals() {
    let s = TestServer::start().await;
    s.call(
        Method::POST,
        &v("/keys/aes/create"),
        Some(json!({"kty": "oct-HSM", "key_size": 256})),
    )
    .await;
    let (st, enc) = s
        .call(
            Method::POST,
            &v("/keys/aes//encrypt"),
            Some(json!({"alg": "A256GCM", "value": "aGVsbG8", "aad": "YWFk"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{enc}");
    assert_eq!(
        keyshift_api::b64::decode(enc["iv"].as_str().unwrap())
            .unwrap()
            .len(),
        12
    );
    assert_eq!(
        keyshift_api::b64::decode(enc["tag"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );
    assert_eq!(enc["aad"], "YWFk");
    let kid = enc["kid"].as_str().unwrap();
    let version = kid.rsplit('/').next().unwrap();
    let (st, dec) = s
        .call(
            Method::POST,
            &v(&format!("/keys/aes/{version}/decrypt")),
            Some(json!({"alg": "A256GCM", "value": enc["value"], "iv": enc["iv"], "tag": enc["tag"], "aad": "YWFk"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{dec}");
    assert_eq!(dec["value"], "aGVsbG8");
    let (st, body) = s
        .call(
            Method::POST,
            &v("/keys/aes//decrypt"),
            Some(json!({"alg": "A256GCM", "value": enc["value"], "iv": enc["iv"], "tag": enc["tag"], "aad": "YWFl"})),
        )
        .await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::BAD_REQUEST, "BadParameter"),
        "wrong aad"
    );

    // Algorithm that does not fit the key, unknown algorithm, bad base64url.
    for (body, what) in [
        (
            json!({"alg": "RSA-OAEP", "value": "AA"}),
            "RSA alg on AES key",
        ),
        (
            json!({"alg": "A128GCM", "value": "AA"}),
            "A128 on a 256-bit key",
        ),
        (json!({"alg": "ROT13", "value": "AA"}), "unknown alg"),
        (json!({"alg": "A256GCM", "value": "***"}), "bad base64url"),
        (json!({"alg": "A256GCM"}), "missing value"),
    ] {
        let (st, b) = s
            .call(Method::POST, &v("/keys/aes//encrypt"), Some(body))
            .await;
        assert_eq!(
            (st, code(&b)),
            (StatusCode::BAD_REQUEST, "BadParameter"),
            "{what}: {b}"
        );
    }
    // Operation not in key_ops.
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/aes//sign"),
            Some(json!({"alg": "ES256", "value": "AA"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(inner(&b), "KeyOperationForbidden");
    s.call(
        Method::PATCH,
        &v("/keys/aes/"),
        Some(json!({"key_ops": ["decrypt"]})),
    )
    .await;
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/aes//encrypt"),
            Some(json!({"alg": "A256GCM", "value": "AA"})),
        )
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::FORBIDDEN, "KeyOperationForbidden")
    );
    // Disabled.
    s.call(
        Method::PATCH,
        &v("/keys/aes/"),
        Some(json!({"attributes": {"enabled": false}, "key_ops": ["encrypt", "decrypt"]})),
    )
    .await;
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/aes//encrypt"),
            Some(json!({"alg": "A256GCM", "value": "AA"})),
        )
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::FORBIDDEN, "KeyDisabled"),
        "{b}"
    );
    // Expired: encrypt refused, decrypt still works (data must stay readable).
    s.call(
        Method::PATCH,
        &v("/keys/aes/"),
        Some(json!({"attributes": {"enabled": true, "exp": 1_000_000_000_i64}})),
    )
    .await;
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/aes//encrypt"),
            Some(json!({"alg": "A256GCM", "value": "AA"})),
        )
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::FORBIDDEN, "KeyExpired"),
        "{b}"
    );
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/aes//decrypt"),
            Some(json!({"alg": "A256GCM", "value": enc["value"], "iv": enc["iv"], "tag": enc["tag"], "aad": "YWFk"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "decrypt with an expired key: {b}");
    // Not yet valid.
    s.call(
        Method::PATCH,
        &v("/keys/aes/"),
        Some(json!({"attributes": {"exp": 4_102_444_800_i64, "nbf": 4_000_000_000_i64}})),
    )
    .await;
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/aes//encrypt"),
            Some(json!({"alg": "A256GCM", "value": "AA"})),
        )
        .await;
    assert_eq!((st, inner(&b)), (StatusCode::FORBIDDEN, "KeyNotYetValid"));
    // nbf after exp is refused at update.
    let (st, _) = s
        .call(
            Method::PATCH,
            &v("/keys/aes/"),
            Some(json!({"attributes": {"nbf": 4_102_444_801_i64}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_inputs_get_the_azure_envelope() {
    let s = TestServer::start().await;
    let cases: Vec<(Method, String, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "DSA"})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "EC", "crv": "P-192"})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "RSA", "key_size": 1024})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "RSA", "public_exponent": 3})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "oct", "key_size": 512})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "EC", "key_ops": ["encrypt"]})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "RSA", "key_ops": ["fly"]})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/bad_name/create"),
            Some(json!({"kty": "EC"})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/keys/k/create"),
            Some(json!({"kty": "EC", "attributes": {"exportable": true}})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::PUT,
            v("/keys/k"),
            Some(json!({"key": {"kty": "oct", "k": "AAEC"}})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::PUT,
            v("/keys/k"),
            Some(json!({"key": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::PUT,
            v("/keys/k"),
            Some(json!({"key": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::PUT,
            v("/keys/k"),
            Some(json!({"nokey": 1})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/rng"),
            Some(json!({"count": 0})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::POST,
            v("/rng"),
            Some(json!({"count": 129})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::GET,
            v("/keys/nope"),
            None,
            StatusCode::NOT_FOUND,
            "KeyNotFound",
        ),
        (
            Method::GET,
            v("/keys/nope/0123456789abcdef0123456789abcdef"),
            None,
            StatusCode::NOT_FOUND,
            "KeyNotFound",
        ),
        (
            Method::GET,
            v("/secrets/s"),
            None,
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            Method::POST,
            v("/keys"),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
        (
            Method::GET,
            "/keys".into(),
            None,
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        (
            Method::GET,
            "/keys?api-version=1.0".into(),
            None,
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
    ];
    for (method, path, body, status, expected) in cases {
        let (st, b) = s.call(method.clone(), &path, body.clone()).await;
        assert_eq!(
            (st, code(&b)),
            (status, expected),
            "{method} {path} {body:?}: {b}"
        );
        assert!(b["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Bad JSON.
    let response = s
        .http
        .post(format!("{}{}", s.url(), v("/keys/k/create")))
        .bearer_auth(s.token())
        .header("content-type", "application/json")
        .body("{\"kty\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let b: Value = response.json().await.unwrap();
    assert_eq!(code(&b), "BadParameter");
    // Percent-encoded query name, as the JS SDK sends it.
    let (st, _) = s.call(Method::GET, "/keys?api%2Dversion=7.6", None).await;
    assert_eq!(st, StatusCode::OK);
    // Body over 1 MiB.
    let big = "A".repeat(1024 * 1024 + 10);
    let response = s
        .http
        .post(format!("{}{}", s.url(), v("/keys/k/create")))
        .bearer_auth(s.token())
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let b: Value = response.json().await.unwrap();
    assert_eq!(code(&b), "RequestEntityTooLarge");
}

#[tokio::test]
async fn reserved_segments_release_and_attestation() {
    let s = TestServer::start().await;
    s.call(
        Method::POST,
        &v("/keys/r/create"),
        Some(json!({"kty": "RSA"})),
    )
    .await;
    for path in ["/keys/r/release", "/keys/r//release"] {
        let (st, b) = s
            .call(Method::POST, &v(path), Some(json!({"target": "x"})))
            .await;
        assert_eq!(
            (st, code(&b)),
            (StatusCode::BAD_REQUEST, "BadParameter"),
            "{path}: route exists, release is refused"
        );
    }
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/missing/release"),
            Some(json!({"target": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.call(Method::GET, &v("/keys/r/attestation"), None).await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "attestation is not read as a version"
    );
    // A key may be called like a reserved segment.
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/versions/create"),
            Some(json!({"kty": "EC"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = s.call(Method::GET, &v("/keys/versions"), None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn rotation_and_policy() {
    let s = TestServer::start().await;
    let (_, first) = s
        .call(
            Method::POST,
            &v("/keys/rot/create"),
            Some(json!({"kty": "RSA", "key_ops": ["sign", "verify"], "tags": {"t": "1"}})),
        )
        .await;
    let (st, policy) = s
        .call(Method::GET, &v("/keys/rot/rotationpolicy"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(policy["id"], format!("{}/keys/rot/rotationpolicy", s.url()));
    assert_eq!(policy["lifetimeActions"][0]["action"]["type"], "Notify");
    let (st, set) = s
        .call(
            Method::PUT,
            &v("/keys/rot/rotationpolicy"),
            Some(json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "rotate"}}], "attributes": {"expiryTime": "P90D"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{set}");
    assert_eq!(set["lifetimeActions"][0]["action"]["type"], "Rotate");
    assert_eq!(
        set["lifetimeActions"].as_array().unwrap().len(),
        2,
        "Notify appended as Azure does"
    );
    assert!(set["attributes"]["created"].is_i64());
    let (_, got) = s
        .call(Method::GET, &v("/keys/rot/rotationpolicy"), None)
        .await;
    assert_eq!(got["attributes"]["expiryTime"], "P90D");
    let (st, rotated) = s.call(Method::POST, &v("/keys/rot/rotate"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_ne!(rotated["key"]["kid"], first["key"]["kid"]);
    assert_ne!(rotated["key"]["n"], first["key"]["n"]);
    assert_eq!(rotated["key"]["key_ops"], json!(["sign", "verify"]));
    assert_eq!(rotated["tags"]["t"], "1");
    let exp = rotated["attributes"]["exp"]
        .as_i64()
        .expect("exp from expiryTime");
    assert!((exp - rotated["attributes"]["created"].as_i64().unwrap() - 90 * 86_400).abs() <= 2);
    for bad in [
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P1D"}, "action": {"type": "Rotate"}}]}),
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D", "timeBeforeExpiry": "P30D"}, "action": {"type": "Rotate"}}]}),
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "soon"}, "action": {"type": "Rotate"}}]}),
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Explode"}}]}),
        json!({"lifetimeActions": [], "attributes": {"expiryTime": "P1D"}}),
    ] {
        let (st, b) = s
            .call(
                Method::PUT,
                &v("/keys/rot/rotationpolicy"),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(
            (st, code(&b)),
            (StatusCode::BAD_REQUEST, "BadParameter"),
            "{bad}"
        );
    }
    let (st, rng) = s
        .call(Method::POST, &v("/rng"), Some(json!({"count": 128})))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        keyshift_api::b64::decode(rng["value"].as_str().unwrap())
            .unwrap()
            .len(),
        128
    );
}
