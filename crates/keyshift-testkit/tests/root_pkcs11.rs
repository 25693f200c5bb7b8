//! The root key in a PKCS#11 token (issue 7 point 4c), on a fresh SoftHSM2 token: `init --root
//! pkcs11` makes a sensitive, never-extractable AES-256 key there and records it in `root.json`;
//! the deployment opens through it (security-domain and signing keys are unsealed by the token)
//! with no root key file; without the object, start-up fails and says why. Skipped without
//! SoftHSM2 (see `keyshift_testkit::softhsm`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use keyshift_crypto::pkcs11::{PinSource, Pkcs11Backend, Pkcs11Config};
use keyshift_crypto::{HsmBackend, HsmKeyRef};
use keyshift_testkit::{softhsm, v, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The root key object's attributes, read through PKCS#11 itself.
fn raw_root_attributes(label: &str) -> (Vec<AttributeInfo>, Vec<Attribute>) {
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
    // Nothing else of this process is logged in to the token now.
    let pin = cryptoki::types::AuthPin::from(hsm.pin().to_owned());
    match session.login(cryptoki::session::UserType::User, Some(&pin)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let handles = session
        .find_objects(&[Attribute::Label(b"keyshift-root".to_vec())])
        .unwrap();
    assert_eq!(handles.len(), 1, "one root key object");
    let info = session
        .get_attribute_info(handles[0], &[AttributeType::Value])
        .unwrap();
    let attributes = session
        .get_attributes(
            handles[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Local,
            ],
        )
        .unwrap();
    (info, attributes)
}

#[tokio::test]
async fn the_root_key_lives_in_the_token() {
    let Some(hsm) = softhsm::softhsm() else {
        return;
    };
    let token = hsm.token();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut settings = keyshift_testkit::settings(&data);
    settings.hsm = Some(token.clone());

    let root = keyshift_cli::seal_cmd::init_token_root(&settings).unwrap();
    assert_eq!(root.token_label, token.token_label);
    let manifest = std::fs::read_to_string(data.join("root.json")).unwrap();
    assert!(manifest.contains("\"pkcs11\""), "{manifest}");
    // The object: secret value unreadable, never extractable, made in the token.
    let (info, attributes) = raw_root_attributes(&token.token_label);
    assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");
    for expected in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Local(true),
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected:?} in {attributes:?}"
        );
    }
    // A second init is refused.
    let err = keyshift_cli::seal_cmd::init_token_root(&settings).unwrap_err();
    assert!(format!("{err:#}").contains("already has a root"), "{err:#}");

    // The deployment opens through the token; no root key file is ever written.
    let s = TestServer::start_with(settings.clone()).await;
    let (status, body) = s
        .call(
            Method::POST,
            &v("/keys/k1/create"),
            Some(json!({"kty": "EC", "crv": "P-256"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kid = body["key"]["kid"].as_str().unwrap().to_owned();
    let path = kid.strip_prefix(&s.url()).unwrap().to_owned();
    drop(s);
    assert!(!data.join("root.key").exists());
    let s = TestServer::start_with(settings.clone()).await;
    let (status, body) = s
        .call(
            Method::POST,
            &v(&format!("{path}/sign")),
            Some(json!({"alg": "ES256", "value": keyshift_api::b64::encode(&[1u8; 32])})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a key made before the restart: {body}"
    );
    drop(s);

    // Without the token settings, or with another token: a clear refusal.
    let mut without = settings.clone();
    without.hsm = None;
    let err = keyshift_cli::serve::start(&without).await.unwrap_err();
    assert!(format!("{err:#}").contains("--pkcs11-module"), "{err:#}");

    // Without the object, the deployment cannot open, and says so.
    let backend = Pkcs11Backend::connect(&Pkcs11Config::new(
        hsm.module(),
        &token.token_label,
        PinSource::File(token.pin_file.clone().unwrap()),
    ))
    .unwrap();
    backend
        .destroy(&HsmKeyRef::from_hex(&root.key_id).unwrap())
        .unwrap();
    let err = keyshift_cli::serve::start(&settings).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("root key object") && message.contains("cannot be opened"),
        "{message}"
    );
}
