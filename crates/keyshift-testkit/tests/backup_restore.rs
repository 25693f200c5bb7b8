//! A vault moved to another deployment, as Managed HSM moves regions and recovers from disaster:
//! its security domain is downloaded split to three custodians (two needed), a full backup is
//! taken, and a second deployment (its own root key, data directory and TLS listener) restores
//! it only once two custodians have uploaded the security domain into an empty vault there.
//! Every key, version, attribute, policy and role assignment comes across, and data encrypted
//! before opens after. Also the refusals: each way the security domain or the backup can be
//! wrong, misplaced or asked for by someone who may not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::b64;
use keyshift_client::{KeyClient, VaultUrl};
use keyshift_testkit::{
    certificate_der as der_of, custodian, keyshift, private_key, v, TestServer,
};
use keyshift_vault::backup::{recombine, upload_for, SecurityDomainFile, TransferKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn inner(body: &Value) -> &str {
    body["error"]["innererror"]["code"].as_str().unwrap_or("")
}

fn client(s: &TestServer) -> KeyClient {
    let admin = s.data_dir.join("admin.json");
    keyshift_migrate::rewrap::client_from(&admin).unwrap()
}

async fn ok(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> Value {
    let (st, b) = s.call(method, &v(path), body).await;
    assert!(st.is_success(), "{path}: {st} {b}");
    b
}

/// Copies a backup folder from one server's backup directory to another's, as an operator moves
/// the files.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_moves_to_another_deployment_with_its_security_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let (ca, cb) = (client(&a), client(&b));
    let vault_a = VaultUrl::parse(&a.url()).unwrap();
    let vault_b = VaultUrl::parse(&b.url()).unwrap();

    // Source: keys of each family, a rotated one with tags and a rotation policy, a disabled
    // one, a role assignment at one key and a custom role.
    let rsa = ok(
        &a,
        Method::POST,
        "/keys/rsa/create",
        Some(json!({"kty": "RSA", "key_size": 2048, "tags": {"team": "payments"}})),
    )
    .await;
    let rsa2 = ok(&a, Method::POST, "/keys/rsa/rotate", None).await;
    ok(
        &a,
        Method::PUT,
        "/keys/rsa/rotationpolicy",
        Some(json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}], "attributes": {"expiryTime": "P2Y"}})),
    )
    .await;
    let ec = ok(
        &a,
        Method::POST,
        "/keys/ec/create",
        Some(json!({"kty": "EC", "crv": "P-256"})),
    )
    .await;
    let oct = ok(
        &a,
        Method::POST,
        "/keys/oct/create",
        Some(json!({"kty": "oct", "key_size": 256})),
    )
    .await;
    let off = ok(
        &a,
        Method::POST,
        "/keys/off/create",
        Some(json!({"kty": "EC", "crv": "P-384"})),
    )
    .await;
    let off_version = off["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    ok(
        &a,
        Method::PATCH,
        &format!("/keys/off/{off_version}"),
        Some(json!({"attributes": {"enabled": false}})),
    )
    .await;
    let reader = a.deployment().create_principal("app").await.unwrap();
    let vault_rec = a.deployment().vault("default").unwrap();
    let assignment = a
        .deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault_rec,
            "/keys/rsa",
            "Key Vault Crypto User",
            &reader.principal.id,
            None,
        )
        .await
        .unwrap();
    // Data protected before the move: wrapped by the first RSA version, encrypted with oct.
    let rsa1_kid = rsa["key"]["kid"].as_str().unwrap().to_owned();
    let rsa1_version = rsa1_kid.rsplit('/').next().unwrap().to_owned();
    let wrapped = ok(
        &a,
        Method::POST,
        &format!("/keys/rsa/{rsa1_version}/wrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": b64::encode(&[7u8; 32])})),
    )
    .await;
    let oct_version = oct["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let sealed = ok(
        &a,
        Method::POST,
        &format!("/keys/oct/{oct_version}/encrypt"),
        Some(json!({"alg": "A256GCM", "value": b64::encode(b"ledger row 17")})),
    )
    .await;

    // The security domain, split to three custodians, two needed.
    let custodians: Vec<(PathBuf, PathBuf)> = ["ann", "bob", "cho"]
        .iter()
        .map(|n| custodian(tmp.path(), n))
        .collect();
    let ders: Vec<Vec<u8>> = custodians.iter().map(|(c, _)| der_of(c)).collect();
    let text = ca
        .download_security_domain(&vault_a, &ders, 2)
        .await
        .unwrap();
    let sd: SecurityDomainFile = serde_json::from_str(&text).unwrap();
    assert_eq!((sd.shares.len(), sd.required), (3, 2));
    assert_eq!(sd.security_domain, vault_rec.security_domain);

    // The full backup, written in A's backup directory, moved by hand to B's.
    let op = ca.full_backup(&vault_a, "file:///nightly").await.unwrap();
    assert_eq!(op["status"], "Succeeded", "{op}");
    let folder_url = op["azureStorageBlobContainerUri"]
        .as_str()
        .unwrap()
        .to_owned();
    let folder = folder_url.rsplit('/').next().unwrap().to_owned();
    assert!(folder.starts_with("mhsm-default-"), "{folder}");
    let (st, status) = a
        .call(
            Method::GET,
            &v(&format!(
                "/backup/{}/pending",
                op["jobId"].as_str().unwrap()
            )),
            None,
        )
        .await;
    assert_eq!(
        (st, &status["status"]),
        (StatusCode::OK, &json!("Succeeded")),
        "{status}"
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            a.data_dir
                .join("backups/nightly")
                .join(&folder)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["keys"], 4, "{manifest}");
    let raw_backup = std::fs::read(
        a.data_dir
            .join("backups/nightly")
            .join(&folder)
            .join("backup.bin"),
    )
    .unwrap();
    // Key material is not in the clear in the backup.
    assert!(!String::from_utf8_lossy(&raw_backup).contains("payments"));
    copy_folder(
        &a.data_dir.join("backups/nightly").join(&folder),
        &b.data_dir.join("backups/nightly").join(&folder),
    );

    // B refuses the backup while it lacks the security domain.
    let e = cb
        .full_restore(&vault_b, "file:///nightly", &folder, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(
        e.to_string().contains("SecurityDomainMismatch")
            || e.to_string().contains("security domain"),
        "{e}"
    );
    let (st, body) = b.call(Method::GET, &v("/keys/rsa"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");

    // One custodian is not enough; two are, and only their wrapped recombination reaches B.
    let keys: Vec<_> = custodians.iter().map(|(_, k)| private_key(k)).collect();
    assert!(recombine(&sd, &keys[..1])
        .unwrap_err()
        .contains("1 of the 2"));
    // B's default vault is not empty once a key is made in it: the upload is refused.
    ok(
        &b,
        Method::POST,
        "/keys/stray/create",
        Some(json!({"kty": "EC", "crv": "P-256"})),
    )
    .await;
    let transfer: TransferKey = cb.security_domain_transfer_key(&vault_b).await.unwrap();
    let key = recombine(&sd, &keys[1..]).unwrap();
    let upload = upload_for(&sd, &key, &transfer).unwrap();
    let (st, body) = b
        .call(
            Method::POST,
            &v("/securitydomain/upload"),
            Some(json!({"value": serde_json::to_string(&upload).unwrap()})),
        )
        .await;
    assert_eq!(
        (st, inner(&body)),
        (StatusCode::CONFLICT, "VaultNotEmpty"),
        "{body}"
    );
    ok(&b, Method::DELETE, "/keys/stray", None).await;
    let (st, body) = b
        .call(
            Method::POST,
            &v("/securitydomain/upload"),
            Some(json!({"value": serde_json::to_string(&upload).unwrap()})),
        )
        .await;
    assert_eq!(
        (st, inner(&body)),
        (StatusCode::CONFLICT, "VaultNotEmpty"),
        "soft-deleted keys count: {body}"
    );
    ok(&b, Method::DELETE, "/deletedkeys/stray", None).await;

    // The CLI does the custodians' side: two keys, the file, B's credentials.
    let sd_path = tmp.path().join("sd.json");
    std::fs::write(&sd_path, &text).unwrap();
    let p = |path: &Path| path.to_str().unwrap().to_owned();
    assert!(keyshift(&[
        "security-domain",
        "upload",
        "--file",
        &p(&sd_path),
        "--custodian-key",
        &p(&custodians[0].1),
        "--custodian-key",
        &p(&custodians[2].1),
        "--credentials",
        &p(&b.data_dir.join("admin.json")),
    ]));
    assert_eq!(
        b.deployment().vault("default").unwrap().security_domain,
        sd.security_domain
    );

    // Now the restore works: every key, version, attribute, policy and assignment.
    let op = cb
        .full_restore(&vault_b, "file:///nightly", &folder, None)
        .await
        .unwrap();
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert!(
        op["statusDetails"]
            .as_str()
            .unwrap()
            .starts_with("4 keys restored"),
        "{op}"
    );
    for (name, before) in [("ec", &ec), ("oct", &oct), ("rsa", &rsa2), ("off", &off)] {
        let after = ok(&b, Method::GET, &format!("/keys/{name}"), None).await;
        let path = |kid: &Value| {
            kid.as_str()
                .unwrap()
                .split("/keys/")
                .nth(1)
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            path(&after["key"]["kid"]),
            path(&before["key"]["kid"]),
            "{name}"
        );
        for member in ["n", "e", "x", "y", "crv", "kty", "key_ops"] {
            assert_eq!(
                after["key"][member], before["key"][member],
                "{name}.{member}"
            );
        }
    }
    let rsa_b = ok(&b, Method::GET, "/keys/rsa", None).await;
    assert_eq!(rsa_b["tags"]["team"], "payments");
    let versions = ok(&b, Method::GET, "/keys/rsa/versions", None).await;
    assert_eq!(versions["value"].as_array().unwrap().len(), 2, "{versions}");
    let policy = ok(&b, Method::GET, "/keys/rsa/rotationpolicy", None).await;
    assert_eq!(policy["attributes"]["expiryTime"], "P2Y", "{policy}");
    let off_b = ok(&b, Method::GET, "/keys/off", None).await;
    assert_eq!(off_b["attributes"]["enabled"], false);
    let assignments = cb
        .list_role_assignments(&vault_b, "/keys/rsa")
        .await
        .unwrap();
    assert!(
        assignments
            .iter()
            .any(|r| r.name == assignment.name && r.properties.principal_id == reader.principal.id),
        "{assignments:?}"
    );
    // Data protected in A opens in B.
    let unwrapped = ok(
        &b,
        Method::POST,
        &format!("/keys/rsa/{rsa1_version}/unwrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": wrapped["value"]})),
    )
    .await;
    assert_eq!(
        b64::decode(unwrapped["value"].as_str().unwrap()).unwrap(),
        [7u8; 32]
    );
    let opened = ok(
        &b,
        Method::POST,
        &format!("/keys/oct/{oct_version}/decrypt"),
        Some(json!({"alg": "A256GCM", "value": sealed["value"], "iv": sealed["iv"], "tag": sealed["tag"]})),
    )
    .await;
    assert_eq!(
        b64::decode(opened["value"].as_str().unwrap()).unwrap(),
        b"ledger row 17"
    );

    // Running the restore again changes nothing (an interrupted restore can be rerun).
    let op = cb
        .full_restore(&vault_b, "file:///nightly", &folder, None)
        .await
        .unwrap();
    assert!(
        op["statusDetails"]
            .as_str()
            .unwrap()
            .starts_with("0 keys restored, 4 present"),
        "{op}"
    );

    // Selective restore of one key, after it was deleted and purged (the CLI this time).
    ok(&b, Method::DELETE, "/keys/ec", None).await;
    let e = cb
        .full_restore(&vault_b, "file:///nightly", &folder, Some("ec"))
        .await
        .unwrap_err();
    assert_eq!(
        e.status(),
        Some(409),
        "soft-deleted: recover it instead: {e}"
    );
    ok(&b, Method::DELETE, "/deletedkeys/ec", None).await;
    assert!(keyshift(&[
        "backup",
        "restore",
        "--folder-url",
        &format!("file:///nightly/{folder}"),
        "--key",
        "ec",
        "--credentials",
        &p(&b.data_dir.join("admin.json")),
    ]));
    let ec_b = ok(&b, Method::GET, "/keys/ec", None).await;
    assert_eq!(ec_b["key"]["x"], ec["key"]["x"]);
    let e = cb
        .full_restore(&vault_b, "file:///nightly", &folder, Some("nosuch"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");

    // Single-key backups of A restore into B too, now that B has A's domain.
    ok(
        &a,
        Method::POST,
        "/keys/late/create",
        Some(json!({"kty": "EC", "crv": "P-256"})),
    )
    .await;
    let blob = ca.backup_key(&vault_a, "late").await.unwrap();
    cb.restore_key(&vault_b, &blob).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let a = TestServer::start().await;
    let custodians: Vec<(PathBuf, PathBuf)> = ["ann", "bob", "cho", "dan"]
        .iter()
        .map(|n| custodian(tmp.path(), n))
        .collect();
    let x5c =
        |i: usize| json!({"kty": "RSA", "x5c": [b64::encode_standard(&der_of(&custodians[i].0))]});
    for (body, expected) in [
        (
            json!({"certificates": [x5c(0), x5c(1)], "required": 2}),
            "3 to 10 custodian",
        ),
        (
            json!({"certificates": [x5c(0), x5c(1), x5c(2)], "required": 1}),
            "quorum",
        ),
        (
            json!({"certificates": [x5c(0), x5c(1), x5c(2)], "required": 4}),
            "quorum",
        ),
        (
            json!({"certificates": [x5c(0), x5c(1), x5c(1)], "required": 2}),
            "twice",
        ),
        (
            json!({"certificates": [x5c(0), x5c(1), {"kty": "RSA"}], "required": 2}),
            "x5c",
        ),
        (
            json!({"certificates": [x5c(0), x5c(1), {"x5c": ["bm90IGEgY2VydA"]}], "required": 2}),
            "not usable",
        ),
        (json!({"certificates": "no"}), "invalid"),
    ] {
        let (st, b) = a
            .call(Method::POST, &v("/securitydomain/download"), Some(body))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected}: {message}");
    }

    // Someone without the Administrator role gets 403 for each of these.
    let app = a.deployment().create_principal("app").await.unwrap();
    let vault = a.deployment().vault("default").unwrap();
    a.deployment()
        .assign_role(
            &keyshift_vault::RequestContext::local(),
            &vault,
            "/",
            "Key Vault Crypto Officer",
            &app.principal.id,
            None,
        )
        .await
        .unwrap();
    let token = a
        .token_for(&app.principal.client_id, &app.client_secret)
        .await;
    for (method, path, body) in [
        (
            Method::POST,
            "/securitydomain/download",
            Some(json!({"certificates": [x5c(0), x5c(1), x5c(2)], "required": 2})),
        ),
        (
            Method::POST,
            "/securitydomain/upload",
            Some(json!({"value": "{}"})),
        ),
        (
            Method::POST,
            "/backup",
            Some(json!({"storageResourceUri": "file:///nightly"})),
        ),
        (
            Method::PUT,
            "/restore",
            Some(
                json!({"sasTokenParameters": {"storageResourceUri": "file:///nightly"}, "folderToRestore": "x"}),
            ),
        ),
        (
            Method::PUT,
            "/keys/k/restore",
            Some(
                json!({"sasTokenParameters": {"storageResourceUri": "file:///nightly"}, "folder": "x"}),
            ),
        ),
    ] {
        let (st, b) = a.call_as(&token, &a.url(), method, &v(path), body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {b}");
    }

    // Backup locations outside the backup directory are refused.
    for uri in [
        "file:///../etc",
        "file:///a/b",
        "https://acct.blob.core.windows.net/c",
        "file:///X",
    ] {
        let (st, b) = a
            .call(
                Method::POST,
                &v("/backup"),
                Some(json!({"storageResourceUri": uri})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {b}");
    }
    for folder in ["../nightly", "a/b", ""] {
        let (st, b) = a
            .call(Method::PUT, &v("/restore"), Some(json!({"sasTokenParameters": {"storageResourceUri": "file:///nightly"}, "folderToRestore": folder})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{folder}: {b}");
    }
    let (st, b) = a
        .call(Method::PUT, &v("/restore"), Some(json!({"sasTokenParameters": {"storageResourceUri": "file:///nightly"}, "folderToRestore": "mhsm-default-19700101000000"})))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");

    // A tampered backup does not restore, nor does a truncated one or another file.
    ok(
        &a,
        Method::POST,
        "/keys/k/create",
        Some(json!({"kty": "EC", "crv": "P-256"})),
    )
    .await;
    let (st, op) = a
        .call(
            Method::POST,
            &v("/backup"),
            Some(json!({"storageResourceUri": "file:///nightly"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{op}");
    let folder = op["azureStorageBlobContainerUri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    // Two backups in the same second get folders of their own.
    let (st, again) = a
        .call(
            Method::POST,
            &v("/backup"),
            Some(json!({"storageResourceUri": "file:///nightly"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{again}");
    assert_ne!(
        again["azureStorageBlobContainerUri"],
        op["azureStorageBlobContainerUri"]
    );
    let path = a
        .data_dir
        .join("backups/nightly")
        .join(&folder)
        .join("backup.bin");
    let good = std::fs::read(&path).unwrap();
    ok(&a, Method::DELETE, "/keys/k", None).await;
    ok(&a, Method::DELETE, "/deletedkeys/k", None).await;
    let restore = json!({"sasTokenParameters": {"storageResourceUri": "file:///nightly"}, "folderToRestore": folder});
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for bad in [flipped, good[..40].to_vec(), b"not a backup".to_vec()] {
        std::fs::write(&path, &bad).unwrap();
        let (st, b) = a
            .call(Method::PUT, &v("/restore"), Some(restore.clone()))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    }
    std::fs::write(&path, &good).unwrap();
    let (st, b) = a
        .call(Method::PUT, &v("/restore"), Some(restore.clone()))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    // A backup restores only into a vault of its kind and domain.
    let hsm = a
        .add_vault("kv2", keyshift_vault::VaultKind::ManagedHsm)
        .await;
    let (st, b) = a
        .call_at(&hsm, Method::PUT, &v("/restore"), Some(restore.clone()))
        .await;
    assert_eq!(
        (st, inner(&b)),
        (StatusCode::FORBIDDEN, "SecurityDomainMismatch"),
        "{b}"
    );

    // Uploads that are not what they claim are refused.
    let transfer: Value = ok(&a, Method::GET, "/securitydomain/upload", None).await;
    assert_eq!(transfer["key_format"], "jwk");
    let sd_text = client(&a)
        .download_security_domain(
            &VaultUrl::parse(&a.url()).unwrap(),
            &[
                der_of(&custodians[0].0),
                der_of(&custodians[1].0),
                der_of(&custodians[2].0),
            ],
            2,
        )
        .await
        .unwrap();
    let sd: SecurityDomainFile = serde_json::from_str(&sd_text).unwrap();
    let keys: Vec<_> = custodians[..2]
        .iter()
        .map(|(_, k)| private_key(k))
        .collect();
    let key = recombine(&sd, &keys).unwrap();
    let transfer: TransferKey = serde_json::from_value(transfer).unwrap();
    let good_upload = upload_for(&sd, &key, &transfer).unwrap();
    let empty = hsm.clone();
    let mut wrong_kid = good_upload.clone();
    wrong_kid.transfer_kid = "0".repeat(32);
    let mut wrong_check = good_upload.clone();
    wrong_check.check = b64::encode(&[0u8; 32]);
    let mut garbled = good_upload.clone();
    garbled.wrapped_key = b64::encode(&[1u8; 400]);
    let mut bad_id = good_upload.clone();
    bad_id.security_domain = "../x".into();
    for (upload, code) in [
        (wrong_kid, StatusCode::BAD_REQUEST),
        (wrong_check, StatusCode::BAD_REQUEST),
        (garbled, StatusCode::BAD_REQUEST),
        (bad_id, StatusCode::BAD_REQUEST),
    ] {
        let (st, b) = a
            .call_at(
                &empty,
                Method::POST,
                &v("/securitydomain/upload"),
                Some(json!({"value": serde_json::to_string(&upload).unwrap()})),
            )
            .await;
        assert_eq!(st, code, "{b}");
    }
    let (st, b) = a
        .call_at(
            &empty,
            Method::POST,
            &v("/securitydomain/upload"),
            Some(json!({"value": "not json"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    // The good one makes the empty managed HSM a member of the default vault's domain; the
    // default vault's backup still does not restore there: it is of another kind.
    let (st, b) = a
        .call_at(
            &empty,
            Method::POST,
            &v("/securitydomain/upload"),
            Some(json!({"value": serde_json::to_string(&good_upload).unwrap()})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        a.deployment().vault("kv2").unwrap().security_domain,
        sd.security_domain
    );
    let (st, b) = a
        .call_at(&hsm, Method::PUT, &v("/restore"), Some(restore.clone()))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("managed HSM"),
        "{b}"
    );
}

/// A security-domain upload or a vault deletion changes the vault record in the transaction
/// that checks the vault holds no key, and every key write checks that record's revision: a key
/// creation (or restore) that found the vault before the change and commits after is refused
/// (before, it was sealed under the domain the vault was leaving, or left in a vault that no
/// longer existed), while a stale copy of a vault whose domain did not change still writes keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_is_added_while_a_vault_changes_domain_or_is_deleted() {
    use keyshift_api::ErrorCode;
    use keyshift_store::Store;
    let tmp = tempfile::tempdir().unwrap();
    let a = TestServer::start().await;
    let d = a.deployment();
    let custodians: Vec<(PathBuf, PathBuf)> = ["ann", "bob", "cho"]
        .iter()
        .map(|n| custodian(tmp.path(), n))
        .collect();
    let ders: Vec<Vec<u8>> = custodians.iter().map(|(c, _)| der_of(c)).collect();
    let sd_text = client(&a)
        .download_security_domain(&VaultUrl::parse(&a.url()).unwrap(), &ders, 2)
        .await
        .unwrap();
    let sd: SecurityDomainFile = serde_json::from_str(&sd_text).unwrap();
    let keys: Vec<_> = custodians[..2]
        .iter()
        .map(|(_, k)| private_key(k))
        .collect();
    let transfer: TransferKey =
        serde_json::from_value(ok(&a, Method::GET, "/securitydomain/upload", None).await).unwrap();
    let upload = upload_for(&sd, &recombine(&sd, &keys).unwrap(), &transfer).unwrap();
    let upload_body = json!({"value": serde_json::to_string(&upload).unwrap()});
    let ec = || keyshift_api::keys::KeyCreateParameters {
        kty: Some("EC".into()),
        crv: Some("P-256".into()),
        ..Default::default()
    };
    let hsm = |name: &str| keyshift_vault::VaultSpec {
        name: name.into(),
        kind: keyshift_vault::VaultKind::Vault,
        retention_days: 7,
        purge_protection: false,
        port: None,
        new_security_domain: true,
        default: false,
    };
    let kv2 = a.add_vault("kv2", keyshift_vault::VaultKind::Vault).await;
    let ctx = keyshift_vault::RequestContext::system(kv2.clone());

    // kv2 takes the default vault's domain; a key made after it is sealed under it.
    let (st, b) = a
        .call_at(
            &kv2,
            Method::POST,
            &v("/securitydomain/upload"),
            Some(upload_body),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(d.vault("kv2").unwrap().security_domain, sd.security_domain);
    let (st, b) = a
        .call_at(
            &kv2,
            Method::POST,
            &v("/keys/early/create"),
            Some(json!({"kty": "EC", "crv": "P-256"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // A vault holding a key does not take another domain, nor is it deleted.
    d.create_vault(&keyshift_vault::RequestContext::local(), hsm("kv5"))
        .await
        .unwrap();
    let kv5 = d.vault("kv5").unwrap();
    d.create_key(&ctx, &kv5, "held", ec()).await.unwrap();
    let e = d
        .upload_security_domain(&ctx, &kv5, &upload)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.inner),
        (ErrorCode::Conflict, Some("VaultNotEmpty")),
        "{}",
        e.message
    );
    let e = d
        .delete_vault(&keyshift_vault::RequestContext::local(), "kv5")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{}", e.message);

    // A stale copy of a vault whose domain did not change: the key is made, and it works.
    let stale = d.vault("kv2").unwrap();
    d.enable_purge_protection(&keyshift_vault::RequestContext::local(), "kv2")
        .await
        .unwrap();
    assert_ne!(d.vault("kv2").unwrap().revision, stale.revision);
    d.create_key(&ctx, &stale, "after", ec()).await.unwrap();
    for name in ["early", "after"] {
        let (st, b) = a
            .call_at(
                &kv2,
                Method::POST,
                &v(&format!("/keys/{name}//sign")),
                Some(json!({"alg": "ES256", "value": b64::encode(&[7u8; 32])})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{name}: {b}");
    }

    // A creation that found kv3 before its upload and commits after it: refused, nothing kept.
    d.create_vault(&keyshift_vault::RequestContext::local(), hsm("kv3"))
        .await
        .unwrap();
    let before_upload = d.vault("kv3").unwrap();
    d.upload_security_domain(&ctx, &before_upload, &upload)
        .await
        .unwrap();
    assert_eq!(d.vault("kv3").unwrap().security_domain, sd.security_domain);
    let e = d
        .create_key(&ctx, &before_upload, "raced", ec())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{}", e.message);
    assert!(e.message.contains("security domain"), "{}", e.message);
    let kv3 = d.vault("kv3").unwrap();
    let e = d.get_key(&ctx, &kv3, "raced", None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyNotFound, "{}", e.message);
    // A restore through a stale copy of kv3, now of kv2's domain: made, and it opens.
    d.enable_purge_protection(&keyshift_vault::RequestContext::local(), "kv3")
        .await
        .unwrap();
    let blob = d
        .backup_key(&ctx, &d.vault("kv2").unwrap(), "early")
        .await
        .unwrap();
    d.restore_key(&ctx, &kv3, &blob.value).await.unwrap();
    let kv3 = d.vault("kv3").unwrap();
    d.sign(
        &ctx,
        &kv3,
        "early",
        None,
        keyshift_api::keys::KeySignParameters {
            alg: "ES256".into(),
            value: vec![7u8; 32],
        },
    )
    .await
    .unwrap();

    // A creation that found kv4 before its deletion: refused, and no key outlives the vault.
    d.create_vault(&keyshift_vault::RequestContext::local(), hsm("kv4"))
        .await
        .unwrap();
    let before_delete = d.vault("kv4").unwrap();
    d.delete_vault(&keyshift_vault::RequestContext::local(), "kv4")
        .await
        .unwrap();
    let e = d
        .create_key(&ctx, &before_delete, "orphan", ec())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound, "{}", e.message);
    let store = keyshift_store::sqlite::SqliteStore::open(&a.data_dir.join("keyshift.db"))
        .await
        .unwrap();
    let prefix = format!("{}/", before_delete.id);
    assert!(store
        .list("key", &prefix, None, 1)
        .await
        .unwrap()
        .is_empty());
}
