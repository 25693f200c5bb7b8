//! No key material in any log line: a BYOK import and a release run with every log level on
//! (trace), and the captured output is searched for the key in every encoding a log could use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use keyshift_api::b64;
use keyshift_crypto::transfer::{rsa_aes_key_wrap, TransferWrap};
use keyshift_crypto::{KeyMaterial, PublicKey};
use keyshift_testkit::{v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

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

/// Whether a 24-byte window of `secret` appears raw, as hex or in any base64 form.
fn leaked(logs: &[u8], secret: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(logs).to_ascii_lowercase();
    let mut forms: Vec<Vec<u8>> = Vec::new();
    for start in [0, 7, secret.len() / 2] {
        let part = &secret[start..(start + 24).min(secret.len())];
        forms.push(part.to_vec());
        forms.push(
            part.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        );
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let text = engine.encode(part);
            forms.push(text.as_bytes()[4..20].to_vec());
        }
    }
    forms.iter().any(|f| {
        logs.windows(f.len()).any(|w| w == f.as_slice())
            || lower.as_bytes().windows(f.len()).any(|w| w == f.as_slice())
    })
}

#[tokio::test]
async fn no_key_material_in_trace_logs_during_import_and_release() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init();
    let s = TestServer::start().await;
    let authority = s.start_attestation_authority().await;
    s.trust_attestation(&authority).await;
    let (st, kek) = s
        .call(
            Method::POST,
            &v("/keys/kek/create"),
            Some(json!({"kty": "RSA-HSM", "key_ops": ["import"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let m = |k: &str| b64::decode(kek["key"][k].as_str().unwrap()).unwrap();
    let kek_public = PublicKey::Rsa {
        n: m("n"),
        e: m("e"),
    };
    let target = KeyMaterial::generate_rsa(2048).unwrap();
    let mut plain = target.transfer_plaintext().to_vec();
    plain.extend_from_slice(&[0u8; 3]); // the SoftHSM path logs a warning: it must not leak
    let ciphertext =
        rsa_aes_key_wrap(&kek_public, TransferWrap::RsaAesKeyWrap.hash(), &plain).unwrap();
    let blob = json!({"schema_version": "1.0.0",
        "header": {"kid": kek["key"]["kid"], "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
        "ciphertext": b64::encode(&ciphertext)});
    let policy = json!({"anyOf": [{"authority": authority.issuer(),
        "allOf": [{"claim": "sdk-test", "equals": true}]}]});
    let (st, b) = s
        .call(
            Method::PUT,
            &v("/keys/secret"),
            Some(json!({"key": {"kty": "RSA-HSM", "key_hsm": b64::encode(&serde_json::to_vec(&blob).unwrap())},
                "attributes": {"exportable": true},
                "release_policy": {"data": b64::encode(&serde_json::to_vec(&policy).unwrap())}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let token = authority.mint(&authority.claims_for(authority.enclave()));
    let (st, b) = s
        .call(
            Method::POST,
            &v("/keys/secret/release"),
            Some(json!({"target": token})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // And refused releases, whose reasons are logged.
    let mut bad = authority.claims_for(authority.enclave());
    bad["exp"] = json!(0);
    let (st, _) = s
        .call(
            Method::POST,
            &v("/keys/secret/release"),
            Some(json!({"target": authority.mint(&bad)})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    let logs = LOGS.lock().unwrap().clone();
    assert!(!logs.is_empty(), "the capture works");
    assert!(
        String::from_utf8_lossy(&logs).contains("zero padding"),
        "the padding warning was logged (positive control of the capture)"
    );
    let pkcs8 = target.transfer_plaintext();
    assert!(
        !leaked(&logs, &pkcs8),
        "the imported key's PKCS#8 is in a log line"
    );
    assert!(
        !leaked(&logs, &ciphertext),
        "the transfer blob is in a log line"
    );
    assert!(
        !leaked(&logs, token.as_bytes()),
        "the attestation token is in a log line"
    );
    let released = b["value"].as_str().unwrap();
    assert!(
        !leaked(&logs, released.as_bytes()),
        "the release answer is in a log line"
    );
}
