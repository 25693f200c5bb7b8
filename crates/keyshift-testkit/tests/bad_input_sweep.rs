//! A sweep of bad inputs over real HTTPS: each member of a valid body replaced in turn by
//! values of the wrong type, size or encoding or left out, then whole bodies that are not JSON,
//! not an object, truncated or nested too deep, then odd names and query strings. It covers
//! every keys API route, the role, admin and backup APIs, the token endpoint and bearer tokens, signed
//! attestation tokens with malformed claims, BYOK blobs and the key material inside them,
//! release policies, and the security domain's download and upload. Whatever the input, the
//! answer is never a 5xx, and every refusal is the Azure error envelope (`{"error": {"code",
//! "message"}}`; the OAuth error shape at the token endpoint). The table in keys_api.rs says
//! which 4xx each known case gets; this says that no case, known or not, gets past the parsers
//! to a panic or a 500. It found two: a multi-byte `kty`, and an enclave key's exponent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_testkit::{v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Values that replace one field at a time.
fn replacements() -> Vec<Value> {
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x".repeat(70_000)),
        json!("!!not base64url!!"),
        json!("AAAA===="),
        json!("\u{0000}\u{202e}é"),
        json!([]),
        json!({}),
        json!([1, "two", null]),
        json!({"nested": {"deeper": [1, 2, 3]}}),
        deep,
    ]
}

/// Every variant of `doc` with one member or element, at any depth, replaced by each of
/// [`replacements`] or left out; each with a description of what changed.
fn mutations(doc: &Value) -> Vec<(String, Value)> {
    let replacements = replacements();
    let mut out = Vec::new();
    for pointer in pointers(doc) {
        for r in &replacements {
            let mut d = doc.clone();
            *d.pointer_mut(&pointer).unwrap() = r.clone();
            let shown: String = r.to_string().chars().take(60).collect();
            out.push((format!("{pointer} = {shown}"), d));
        }
        let mut d = doc.clone();
        remove(&mut d, &pointer);
        out.push((format!("without {pointer}"), d));
    }
    out
}

/// One route and a body for it: a valid one (`ok`), or one refused only late, after the
/// fields were read (a ciphertext that does not decrypt, an EC key whose `d` does not match, a
/// restore of a key that exists, a release of a key that is not exportable), so that the
/// mutations still reach the parsers.
struct Case {
    method: Method,
    path: String,
    body: Value,
    ok: bool,
}

fn case(method: Method, path: &str, body: Value) -> Case {
    Case {
        method,
        path: v(path),
        body,
        ok: true,
    }
}

fn late(method: Method, path: &str, body: Value) -> Case {
    Case {
        ok: false,
        ..case(method, path, body)
    }
}

fn b64(bytes: &[u8]) -> String {
    keyshift_api::b64::encode(bytes)
}

/// Checks one answer: never a 5xx; a refusal is the Azure envelope.
fn check(what: &str, status: StatusCode, bytes: &[u8]) {
    assert!(
        !status.is_server_error(),
        "{what}: answered {status}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
    );
    if status.is_client_error() && status != StatusCode::UNAUTHORIZED {
        let body: Value = serde_json::from_slice(bytes).unwrap_or_else(|_| {
            panic!(
                "{what}: {status} without a JSON body: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
            )
        });
        assert!(
            body["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
                && body["error"]["message"].as_str().is_some(),
            "{what}: {status} without the error envelope: {body}"
        );
    }
}

async fn send_raw(
    s: &TestServer,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let response = s
        .http
        .request(method, format!("{}{path}", s.url()))
        .bearer_auth(s.token())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bad_input_gets_a_server_error() {
    let s = TestServer::start().await;
    for (name, body) in [
        ("rsa", json!({"kty": "RSA", "key_size": 2048})),
        ("ec", json!({"kty": "EC", "crv": "P-256"})),
        ("oct", json!({"kty": "oct-HSM", "key_size": 256})),
    ] {
        let (st, created) = s
            .call(
                Method::POST,
                &v(&format!("/keys/{name}/create")),
                Some(body),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{created}");
    }
    let (_, rsa) = s.call(Method::GET, &v("/keys/rsa"), None).await;
    let rsa_version = rsa["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (st, backup) = s.call(Method::POST, &v("/keys/ec/backup"), None).await;
    assert_eq!(st, StatusCode::OK);
    let admin_id = s.deployment().administrator().unwrap();
    let digest = b64(&[7u8; 32]);
    let value = b64(&[9u8; 32]);
    let cases = vec![
        case(
            Method::POST,
            "/keys/new/create",
            json!({
                "kty": "EC",
                "crv": "P-256",
                "key_ops": ["sign", "verify"],
                "attributes": {"enabled": true, "nbf": 1_700_000_000, "exp": 2_000_000_000, "exportable": false},
                "tags": {"team": "a"},
            }),
        ),
        case(
            Method::POST,
            "/keys/new-rsa/create",
            json!({"kty": "RSA", "key_size": 2048, "public_exponent": 65537}),
        ),
        case(
            Method::PUT,
            "/keys/imported",
            json!({
                "key": {"kty": "oct", "k": b64(&[1u8; 32]), "key_ops": ["wrapKey", "unwrapKey"]},
                "Hsm": false,
                "attributes": {"enabled": true},
                "tags": {},
            }),
        ),
        late(
            Method::PUT,
            "/keys/imported-ec",
            json!({
                "key": {"kty": "EC", "crv": "P-256", "d": b64(&[3u8; 32]), "x": b64(&[4u8; 32]), "y": b64(&[5u8; 32])},
            }),
        ),
        case(
            Method::PATCH,
            &format!("/keys/rsa/{rsa_version}"),
            json!({"key_ops": ["encrypt", "decrypt"], "attributes": {"enabled": true, "exp": 2_000_000_000}, "tags": {"a": "b"}}),
        ),
        case(
            Method::POST,
            "/keys/oct//wrapkey",
            json!({"alg": "A256KW", "value": value}),
        ),
        late(
            Method::POST,
            "/keys/oct//unwrapkey",
            json!({"alg": "A256KW", "value": b64(&[1u8; 40])}),
        ),
        case(
            Method::POST,
            "/keys/oct//encrypt",
            json!({"alg": "A256GCM", "value": value, "iv": b64(&[0u8; 12]), "aad": b64(b"aad")}),
        ),
        late(
            Method::POST,
            "/keys/oct//decrypt",
            json!({"alg": "A256GCM", "value": value, "iv": b64(&[0u8; 12]), "tag": b64(&[0u8; 16])}),
        ),
        case(
            Method::POST,
            "/keys/rsa//encrypt",
            json!({"alg": "RSA-OAEP-256", "value": value}),
        ),
        late(
            Method::POST,
            "/keys/rsa//decrypt",
            json!({"alg": "RSA-OAEP-256", "value": b64(&[2u8; 256])}),
        ),
        case(
            Method::POST,
            "/keys/ec//sign",
            json!({"alg": "ES256", "value": digest}),
        ),
        case(
            Method::POST,
            "/keys/ec//verify",
            json!({"alg": "ES256", "digest": digest, "value": b64(&[1u8; 64])}),
        ),
        late(Method::POST, "/keys/restore", json!({"value": backup["value"]})),
        case(
            Method::PUT,
            "/keys/rsa/rotationpolicy",
            json!({
                "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Rotate"}}],
                "attributes": {"expiryTime": "P90D"},
            }),
        ),
        late(
            Method::POST,
            "/keys/rsa/release",
            json!({"target": "a.b.c", "nonce": "n", "enc": "CKM_RSA_AES_KEY_WRAP"}),
        ),
        case(Method::POST, "/rng", json!({"count": 32})),
        // The role API (Managed HSM local RBAC) and its bodies.
        case(
            Method::PUT,
            "//keys/rsa/providers/Microsoft.Authorization/roleAssignments/0b0e0c0a-0000-4000-8000-0000000000aa",
            json!({"properties": {
                "roleDefinitionId": "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/12338af0-0e69-4776-bea7-57ae8d297424",
                "principalId": admin_id,
            }}),
        ),
        case(
            Method::PUT,
            "///providers/Microsoft.Authorization/roleDefinitions/7a1d3b1e-0000-4000-8000-0000000000bb",
            json!({"properties": {
                "roleName": "Sweep", "description": "d", "type": "CustomRole",
                "permissions": [{"dataActions": ["Microsoft.KeyVault/vaults/keys/read"], "notDataActions": []}],
                "assignableScopes": ["/"],
            }}),
        ),
    ];
    let mut sent = 0usize;
    // The admin API, at the main listener, about a principal of its own.
    let admin_base = format!("/{}/keyshift", s.admin.tenant_id);
    let target = s
        .deployment()
        .create_principal("sweep-target")
        .await
        .unwrap();
    let principal = format!("{admin_base}/principals/{}", target.principal.client_id);
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = keyshift_testkit::custodian(tmp.path(), "sweep");
    let pem = std::fs::read_to_string(cert).unwrap();
    let admin_case = |method: Method, path: String, body: Value| Case {
        method,
        path,
        body,
        ok: true,
    };
    // The MHSM backup API: a backup to take, and the folder it makes to restore from.
    let sas = json!({"storageResourceUri": "file:///sweep", "token": ""});
    let (st, backup) = s.call(Method::POST, &v("/backup"), Some(sas.clone())).await;
    assert!(st.is_success(), "{st} {backup}");
    let folder = backup["azureStorageBlobContainerUri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let cases: Vec<Case> = cases
        .into_iter()
        .chain([
            admin_case(
                Method::POST,
                format!("{admin_base}/principals"),
                json!({"displayName": "sweep"}),
            ),
            admin_case(
                Method::PUT,
                format!("{admin_base}/federation/issuers"),
                json!({"issuer": "https://oidc.sweep.example", "jwksUrl": "https://oidc.sweep.example/keys", "algorithms": ["RS256"]}),
            ),
            admin_case(
                Method::PATCH,
                principal.clone(),
                json!({"enabled": true}),
            ),
            admin_case(
                Method::POST,
                format!("{principal}/certificates"),
                json!({"pem": pem}),
            ),
            admin_case(
                Method::POST,
                format!("{principal}/federatedCredentials"),
                json!({"name": "sweep-a", "issuer": "https://oidc.sweep.example",
                       "subject": "system:serviceaccount:sweep:api", "audiences": ["api://AzureADTokenExchange"]}),
            ),
            admin_case(
                Method::PUT,
                format!("{admin_base}/attestation/authorities"),
                json!({"issuer": "https://attest.sweep.example", "jwksUrl": "https://attest.sweep.example/certs"}),
            ),
            case(Method::POST, "/backup", sas.clone()),
            case(
                Method::PUT,
                "/restore",
                json!({"sasTokenParameters": sas, "folderToRestore": folder}),
            ),
            case(
                Method::PUT,
                "/keys/rsa/restore",
                json!({"sasTokenParameters": sas, "folder": folder}),
            ),
        ])
        .collect();
    for c in &cases {
        // The valid body first: whatever it gets, it is no 5xx.
        let (st, body) = send_json(&s, c, &c.body).await;
        check(&format!("{} {} (valid)", c.method, c.path), st, &body);
        if c.ok {
            assert!(
                st.is_success(),
                "{} {} (valid) answered {st}: {}",
                c.method,
                c.path,
                String::from_utf8_lossy(&body)
            );
        }
        sent += 1;
        for (what, body) in mutations(&c.body) {
            let (st, answer) = send_json(&s, c, &body).await;
            check(&format!("{} {} with {what}", c.method, c.path), st, &answer);
            sent += 1;
        }
        // Whole bodies that are not what the route reads.
        let valid = serde_json::to_vec(&c.body).unwrap();
        let mut deep = "[".repeat(10_000).into_bytes();
        deep.extend("]".repeat(10_000).into_bytes());
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("application/json", Vec::new()),
            ("application/json", b"not json".to_vec()),
            ("application/json", valid[..valid.len() / 2].to_vec()),
            ("application/json", b"[1,2,3]".to_vec()),
            ("application/json", b"\"a string\"".to_vec()),
            ("application/json", b"null".to_vec()),
            ("application/json", deep),
            ("application/json", vec![0xff, 0xfe, 0x00, 0x7b]),
            ("text/plain", valid.clone()),
            ("application/json", [&valid[..], b"trailing"].concat()),
        ];
        for (content_type, raw) in bodies {
            let (st, answer) = send_raw(&s, c.method.clone(), &c.path, content_type, raw).await;
            check(
                &format!("{} {} with a raw {content_type} body", c.method, c.path),
                st,
                &answer,
            );
            sent += 1;
        }
    }
    // Odd names, versions and queries on the read routes.
    let long = "k".repeat(300);
    let odd_paths = [
        format!("/keys/{long}"),
        format!("/keys/rsa/{long}"),
        "/keys/%00".to_owned(),
        "/keys/%E2%80%AE".to_owned(),
        "/keys/..%2F..%2Fetc".to_owned(),
        "/keys/rsa/%20".to_owned(),
        "/keys?maxresults=0".to_owned(),
        "/keys?maxresults=-5".to_owned(),
        "/keys?maxresults=99999999999999999999".to_owned(),
        "/keys?$skiptoken=%%%".to_owned(),
        "/keys?$skiptoken=eyJub3QiOiJ5b3VycyJ9".to_owned(),
        "/keys/rsa/versions?maxresults=abc".to_owned(),
        "/deletedkeys?maxresults=1&$skiptoken=AAAA".to_owned(),
        "/keys/rsa/a/b/c/d".to_owned(),
    ];
    for path in &odd_paths {
        for method in [Method::GET, Method::DELETE, Method::POST] {
            let (st, answer) = send_raw(
                &s,
                method.clone(),
                &v(path),
                "application/json",
                b"{}".to_vec(),
            )
            .await;
            check(&format!("{method} {path}"), st, &answer);
            sent += 1;
        }
    }
    // A missing, unknown or malformed api-version.
    for query in [
        "",
        "?api-version=",
        "?api-version=1999-01-01",
        "?api-version=%FF",
    ] {
        let (st, answer) = send_raw(
            &s,
            Method::GET,
            &format!("/keys/rsa{query}"),
            "application/json",
            Vec::new(),
        )
        .await;
        check(&format!("GET /keys/rsa{query}"), st, &answer);
        assert!(st.is_client_error(), "GET /keys/rsa{query}: {st}");
        sent += 1;
    }
    assert!(sent > 1500, "only {sent} requests were sent");
    // The server is still well after all of it.
    let (st, _) = s.call(Method::GET, &v("/keys/rsa"), None).await;
    assert_eq!(st, StatusCode::OK);
}

async fn send_json(s: &TestServer, c: &Case, body: &Value) -> (StatusCode, Vec<u8>) {
    send_raw(
        s,
        c.method.clone(),
        &c.path,
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// JSON pointers to every member and element of `value`, parents before children.
fn pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, at: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    walk(v, &p, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    walk(v, &p, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

/// Removes the member or element `pointer` names.
fn remove(value: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>() {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// Base64url of `text`, as a JWT segment.
fn seg(text: &str) -> String {
    b64(text.as_bytes())
}

/// Tokens that are not tokens, or not ours: every way the JWT parser can be fed.
fn bad_jwts() -> Vec<String> {
    let payload = seg(r#"{"iss":"x","aud":"y","sub":"z","exp":4000000000,"nbf":0}"#);
    let sig = b64(&[1u8; 64]);
    let mut out: Vec<String> = [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "a.b.c.d.e",
        "%%%.%%%.%%%",
        "\u{0000}",
        "eyJ.eyJ.eyJ",
    ]
    .iter()
    .map(|t| (*t).to_owned())
    .collect();
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"HS256","kid":"k"}"#,
        r#"{"alg":"RS256","kid":123}"#,
        r#"{"alg":"RS256","kid":null}"#,
        r#"{"alg":"ES256","kid":"nope","crit":["exp"]}"#,
        r#"{"alg":["RS256"]}"#,
        r#"{"alg":"RS256","x5t":{"a":1}}"#,
        r#"[]"#,
        r#"null"#,
        "{\"alg\":\"RS256\",\"kid\":\"\u{e9}\u{202e}\"}",
        "not json",
    ] {
        out.push(format!("{}.{payload}.{sig}", seg(header)));
        out.push(format!("{}.{payload}.", seg(header)));
        out.push(format!("{}.{}.{sig}", seg(header), seg("[1,2]")));
        out.push(format!("{}.{}.{sig}", seg(header), seg(&"[".repeat(5000))));
    }
    out.push(format!("{}.{payload}.{sig}", "A".repeat(70_000)));
    out
}

/// The token endpoint and the bearer check are parsers of untrusted bytes: no input gets a 5xx,
/// the token endpoint refuses in the OAuth error shape, and a bad bearer gets the 401 challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bad_token_or_token_request_gets_a_server_error() {
    let s = TestServer::start().await;
    let token_url = format!("{}/{}/oauth2/v2.0/token", s.url(), s.admin.tenant_id);
    let assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let secret_form = [
        ("grant_type", "client_credentials"),
        ("client_id", s.admin.client_id.as_str()),
        ("client_secret", "wrong"),
        ("scope", "https://vault.azure.net/.default"),
    ];
    let mut forms: Vec<Vec<(String, String)>> = Vec::new();
    let owned = |f: &[(&str, &str)]| -> Vec<(String, String)> {
        f.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    // Each field of the client-secret form left out, emptied, or made huge or odd.
    for i in 0..secret_form.len() {
        let mut without = owned(&secret_form);
        without.remove(i);
        forms.push(without);
        for odd in ["", "\u{0000}", "\u{e9}\u{202e}", &"x".repeat(70_000)] {
            let mut f = owned(&secret_form);
            f[i].1 = odd.to_owned();
            forms.push(f);
        }
    }
    // Client assertions that are not good ones.
    for jwt in bad_jwts() {
        forms.push(owned(&[
            ("grant_type", "client_credentials"),
            ("client_id", s.admin.client_id.as_str()),
            ("client_assertion_type", assertion_type),
            ("client_assertion", &jwt),
            ("scope", "https://vault.azure.net/.default"),
        ]));
    }
    let mut sent = 0;
    for form in &forms {
        let response = s.http.post(&token_url).form(form).send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let what = format!(
            "token request {:?}",
            form.iter()
                .map(|(k, v)| (k.as_str(), &v[..v.len().min(40)]))
                .collect::<Vec<_>>()
        );
        assert!(status.is_client_error(), "{what}: {status}");
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{what}: {status} without a JSON body"));
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: not the OAuth error shape: {body}"
        );
        sent += 1;
    }
    // Bodies that are not forms.
    for (content_type, raw) in [
        ("application/x-www-form-urlencoded", b"%%%=%%%&&&=".to_vec()),
        (
            "application/x-www-form-urlencoded",
            vec![0xff, 0xfe, 0x3d, 0x00],
        ),
        (
            "application/json",
            br#"{"grant_type":"client_credentials"}"#.to_vec(),
        ),
        ("application/x-www-form-urlencoded", b"a=1&".repeat(40_000)),
        ("text/plain", Vec::new()),
    ] {
        let response = s
            .http
            .post(&token_url)
            .header("content-type", content_type)
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_client_error(),
            "raw {content_type} body: {status}"
        );
        sent += 1;
    }
    // Bearer tokens that are not tokens, on a keys API route and on the admin API.
    let admin_url = format!("{}/{}/keyshift/principals", s.url(), s.admin.tenant_id);
    for jwt in bad_jwts() {
        for url in [format!("{}{}", s.url(), v("/keys")), admin_url.clone()] {
            for header in [
                format!("Bearer {jwt}"),
                jwt.clone(),
                format!("bearer  {jwt} x"),
            ] {
                let Ok(value) = reqwest::header::HeaderValue::from_str(&header) else {
                    continue;
                };
                let response = s
                    .http
                    .get(&url)
                    .header("authorization", value)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "GET {url} with authorization {:?}",
                    &header[..header.len().min(60)]
                );
                sent += 1;
            }
        }
    }
    assert!(sent > 250, "only {sent} requests were sent");
    // And the right secret still works.
    let (st, _) = s.call(Method::GET, &v("/keys"), None).await;
    assert_eq!(st, StatusCode::OK);
}

/// Secure key release reads attestation tokens: signed by a trusted authority, their claims are
/// still untrusted input (the enclave's key in `x-ms-runtime`, the TEE claims the policy
/// reads). Each claim of a valid token is replaced by each wrong value and the token signed
/// again, so the parsers behind the signature check are reached: no 5xx, every refusal the
/// envelope. The headers the authority signs are mutated the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_signed_but_malformed_attestation_gets_a_server_error() {
    let s = TestServer::start().await;
    let authority = s.start_attestation_authority().await;
    s.trust_attestation(&authority).await;
    let doc = json!({"version": "1.0", "anyOf": [{"authority": format!("{}/", authority.issuer()),
        "allOf": [{"claim": "sdk-test", "equals": true}]}]});
    let policy = json!({"data": b64(&serde_json::to_vec(&doc).unwrap()), "immutable": false});
    let (st, created) = s
        .call(
            Method::POST,
            &v("/keys/released/create"),
            Some(json!({"kty": "RSA-HSM", "attributes": {"exportable": true}, "release_policy": policy})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let path = v("/keys/released/release");
    let good = authority.claims_for(authority.enclave());
    let (st, answer) = s
        .call(
            Method::POST,
            &path,
            Some(json!({"target": authority.mint(&good)})),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "the unmutated token is released: {answer}"
    );

    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k"});
    let targets = mutations(&good)
        .into_iter()
        .map(|(what, claims)| (format!("claim {what}"), authority.mint(&claims)))
        .chain(mutations(&header).into_iter().map(|(what, h)| {
            (
                format!("header {what}"),
                authority.sign_with_header(&h, &good),
            )
        }));
    let mut sent = 0;
    for (what, target) in targets {
        let (st, answer) = send_raw(
            &s,
            Method::POST,
            &path,
            "application/json",
            serde_json::to_vec(&json!({"target": target})).unwrap(),
        )
        .await;
        check(&format!("release with {what}"), st, &answer);
        sent += 1;
    }
    assert!(sent > 300, "only {sent} releases were sent");
}

/// Base64url of `doc` as JSON.
fn encoded(doc: &Value) -> String {
    b64(&serde_json::to_vec(doc).unwrap())
}

/// Documents carried base64url-encoded inside a body are parsed too: a BYOK transfer blob
/// (`key_hsm`, and the key inside its ciphertext) and a release policy (`release_policy.data`).
/// Each member of the inner document is mutated, the document encoded again, and sent: no
/// 5xx, every refusal the envelope. The wrapped key material is varied the same way: DER that
/// is truncated, padded, lies about its lengths, or is not DER at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bad_encoded_document_gets_a_server_error() {
    use keyshift_crypto::transfer::{rsa_aes_key_wrap, TransferWrap};
    use keyshift_crypto::{KeyMaterial, PublicKey};
    let s = TestServer::start().await;
    let (st, kek) = s
        .call(
            Method::POST,
            &v("/keys/kek/create"),
            Some(json!({"kty": "RSA-HSM", "key_size": 2048, "key_ops": ["import"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{kek}");
    let kid = kek["key"]["kid"].as_str().unwrap().to_owned();
    let member = |k: &str| keyshift_api::b64::decode(kek["key"][k].as_str().unwrap()).unwrap();
    let kek_public = PublicKey::Rsa {
        n: member("n"),
        e: member("e"),
    };
    let wrap = |plain: &[u8]| {
        b64(&rsa_aes_key_wrap(&kek_public, TransferWrap::RsaAesKeyWrap.hash(), plain).unwrap())
    };
    let blob = |ciphertext: String| {
        json!({"schema_version": "1.0.0",
            "header": {"kid": kid, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
            "ciphertext": ciphertext,
            "generator": "sweep"})
    };
    let import = |n: usize, kty: &str, key_hsm: String| {
        let s = &s;
        let body = json!({"key": {"kty": kty, "key_hsm": key_hsm}});
        let path = v(&format!("/keys/byok-{n}"));
        async move {
            send_raw(
                s,
                Method::PUT,
                &path,
                "application/json",
                serde_json::to_vec(&body).unwrap(),
            )
            .await
        }
    };
    let mut n = 0;
    let oct_blob = blob(wrap(&[5u8; 32]));
    let (st, answer) = import(n, "oct-HSM", encoded(&oct_blob)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&answer));
    let mut sent = 1;
    for (what, d) in mutations(&oct_blob) {
        n += 1;
        let (st, answer) = import(n, "oct-HSM", encoded(&d)).await;
        check(&format!("BYOK blob with {what}"), st, &answer);
        sent += 1;
    }
    // key_hsm itself not base64url, not JSON, not an object.
    for raw in [
        "!!".to_owned(),
        b64(b"not json"),
        b64(b"[]"),
        b64(&[0xff, 0xfe]),
        "A".repeat(70_000),
    ] {
        n += 1;
        let (st, answer) = import(n, "oct-HSM", raw).await;
        check("BYOK key_hsm not a blob", st, &answer);
        sent += 1;
    }
    // The wrapped material: what each key type's parser gets after the unwrap.
    let rsa = KeyMaterial::generate_rsa(2048).unwrap();
    let der = rsa.transfer_plaintext().to_vec();
    let mut lying = der.clone();
    lying[1] = 0x84;
    lying[2..6].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    let mut plains: Vec<(&str, Vec<u8>)> = vec![
        ("RSA-HSM", der.clone()),
        ("RSA-HSM", der[..der.len() / 2].to_vec()),
        ("RSA-HSM", [der.clone(), vec![0u8; 7]].concat()),
        ("RSA-HSM", [der.clone(), vec![0xaa; 7]].concat()),
        ("RSA-HSM", lying),
        ("RSA-HSM", vec![0x30]),
        ("RSA-HSM", vec![0x30, 0x80, 0x00, 0x00]),
        ("RSA-HSM", vec![0u8; 64]),
        ("EC-HSM", der.clone()),
        ("EC-HSM", vec![0x30, 0x03, 0x02, 0x01, 0x01]),
        ("oct-HSM", vec![1u8; 7]),
        ("oct-HSM", vec![1u8; 4096]),
    ];
    plains.extend(
        [1usize, 2, 3, 4, 10, 100]
            .into_iter()
            .map(|cut| ("RSA-HSM", der[..cut.min(der.len())].to_vec())),
    );
    for (kty, plain) in plains {
        n += 1;
        let (st, answer) = import(n, kty, encoded(&blob(wrap(&plain)))).await;
        check(
            &format!("BYOK {kty} with {} bytes of material", plain.len()),
            st,
            &answer,
        );
        sent += 1;
    }

    // Release policies: each member of a valid policy document mutated.
    let doc = json!({"version": "1.0", "anyOf": [{"authority": "https://attest.sweep.example/",
        "allOf": [{"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                  {"anyOf": [{"claim": "sdk-test", "equals": true}]}]}]});
    let create = |n: usize, data: String| {
        let s = &s;
        let body = json!({"kty": "EC-HSM", "attributes": {"exportable": true},
            "release_policy": {"data": data, "immutable": false}});
        let path = v(&format!("/keys/released-{n}/create"));
        async move {
            send_raw(
                s,
                Method::POST,
                &path,
                "application/json",
                serde_json::to_vec(&body).unwrap(),
            )
            .await
        }
    };
    n += 1;
    let (st, answer) = create(n, encoded(&doc)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&answer));
    for (what, d) in mutations(&doc) {
        n += 1;
        let (st, answer) = create(n, encoded(&d)).await;
        check(&format!("release policy with {what}"), st, &answer);
        sent += 1;
    }
    assert!(sent > 350, "only {sent} requests were sent");
}

/// The security domain's download request and upload document come from custodians' tools:
/// each member of a valid download request and of a valid upload (made with the real
/// custodian keys and the target's transfer key) is mutated and sent. No 5xx, every refusal
/// the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bad_security_domain_document_gets_a_server_error() {
    use keyshift_vault::backup::{recombine, upload_for, SecurityDomainFile, TransferKey};
    let tmp = tempfile::tempdir().unwrap();
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let custodians: Vec<_> = ["ann", "bob", "cho"]
        .iter()
        .map(|n| keyshift_testkit::custodian(tmp.path(), n))
        .collect();
    let certificates: Vec<Value> = custodians
        .iter()
        .map(|(cert, _)| {
            let der = keyshift_testkit::certificate_der(cert);
            json!({"kty": "RSA", "x5c": [keyshift_api::b64::encode_standard(&der)]})
        })
        .collect();
    let download = json!({"certificates": certificates, "required": 2});
    let path = v("/securitydomain/download");
    let mut sent = 0;
    // Mutated requests first, on B (whose domain is not needed afterwards).
    for (what, body) in mutations(&download) {
        let (st, answer) = send_raw(
            &b,
            Method::POST,
            &path,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        check(
            &format!("security domain download with {what}"),
            st,
            &answer,
        );
        sent += 1;
    }
    let (st, answer) = a.call(Method::POST, &path, Some(download.clone())).await;
    assert!(st.is_success(), "{st} {answer}");
    let sd: SecurityDomainFile = serde_json::from_str(answer["value"].as_str().unwrap()).unwrap();
    let keys: Vec<_> = custodians
        .iter()
        .map(|(_, key)| keyshift_testkit::private_key(key))
        .collect();
    let key = recombine(&sd, &keys[..2]).unwrap();
    let (st, transfer) = b
        .call(Method::GET, &v("/securitydomain/upload"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{transfer}");
    let transfer: TransferKey = serde_json::from_value(transfer).unwrap();
    let upload = serde_json::to_value(upload_for(&sd, &key, &transfer).unwrap()).unwrap();
    let upload_path = v("/securitydomain/upload");
    for (what, doc) in mutations(&upload) {
        let body = json!({"value": serde_json::to_string(&doc).unwrap()});
        let (st, answer) = send_raw(
            &b,
            Method::POST,
            &upload_path,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        check(&format!("security domain upload with {what}"), st, &answer);
        sent += 1;
    }
    // The value not JSON, or JSON of the wrong shape.
    for value in [json!("not json"), json!("[]"), json!(7), json!({"a": 1})] {
        let (st, answer) = send_raw(
            &b,
            Method::POST,
            &upload_path,
            "application/json",
            serde_json::to_vec(&json!({"value": value})).unwrap(),
        )
        .await;
        check("security domain upload of a bad value", st, &answer);
        sent += 1;
    }
    // And the unmutated upload still goes in.
    let (st, answer) = b
        .call(
            Method::POST,
            &upload_path,
            Some(json!({"value": serde_json::to_string(&upload).unwrap()})),
        )
        .await;
    assert!(st.is_success(), "{st} {answer}");
    assert!(sent > 100, "only {sent} requests were sent");
}
