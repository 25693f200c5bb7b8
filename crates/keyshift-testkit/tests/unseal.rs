//! Shamir unseal (issue 7 point 4b), with the real `keyshift` command in processes of its own:
//! `init --shares 5 --threshold 3`, `serve` starts sealed and answers 503 `Sealed`; shares given
//! one at a time (`keyshift unseal`), bad ones refused with 400 and an inner code; keys made
//! before a restart are usable after the next unseal; `keyshift seal` seals again; a re-split
//! (`init --reshare`, to custodian certificates) makes the old shares stale.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_cli::datadir::AdminCredentials;
use keyshift_testkit::custodian;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ARGS_ENV: &str = "KEYSHIFT_UNSEAL_CHILD_ARGS";

/// Not a test: the `keyshift` command, run in a child process by the test below when it sets
/// `KEYSHIFT_UNSEAL_CHILD_ARGS` (its arguments, a JSON array). Without it, it does nothing.
#[test]
#[ignore = "the entry point of the unseal test's child processes"]
fn keyshift_child() {
    let Ok(args) = std::env::var(CHILD_ARGS_ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let code = keyshift_cli::main_with_args(std::iter::once("keyshift".to_owned()).chain(args));
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

fn keyshift(data: &Path, args: &[&str]) -> Command {
    let mut all = vec!["--data-dir".to_owned(), data.display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["keyshift_child", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads=1", "--quiet"])
        .env(CHILD_ARGS_ENV, serde_json::to_string(&all).unwrap());
    command
}

/// Runs a command to its end: (success, stdout + stderr).
async fn run(data: &Path, args: &[&str]) -> (bool, String) {
    let mut command = keyshift(data, args);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn ok(data: &Path, args: &[&str]) -> String {
    let (success, text) = run(data, args).await;
    assert!(success, "keyshift {args:?} failed:\n{text}");
    text
}

struct Server {
    child: Child,
    http: reqwest::Client,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(data: &Path, log: &Path) -> Server {
        let serving = data.join("serving.json");
        let _ = std::fs::remove_file(&serving);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = keyshift(data, &["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("keyshift serve exited at start ({status})");
            }
            let found = std::fs::read(&serving)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|j| j["port"].as_u64());
            if let Some(port) = found {
                break u16::try_from(port).unwrap();
            }
            assert!(Instant::now() < deadline, "serve did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ca = std::fs::read_to_string(data.join("tls").join("ca.pem")).unwrap();
        Server {
            child,
            http: keyshift_testkit::https_client(&ca, ([127, 0, 0, 1], port).into(), &[]),
            base: format!("https://localhost:{port}"),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn token(&self, data: &Path) -> String {
        let admin: AdminCredentials =
            serde_json::from_slice(&std::fs::read(data.join("admin.json")).unwrap()).unwrap();
        let response = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.base, admin.tenant_id
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &admin.client_id),
                ("client_secret", &admin.client_secret),
                ("scope", "https://vault.azure.net/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "token endpoint");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Checks that the server is sealed: health, a key operation and token issuance.
    async fn assert_sealed(&self, progress: u64) {
        let (status, health) = self.get("/health", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
        assert_eq!(health["status"], "sealed");
        assert_eq!(health["progress"], progress, "{health}");
        let (status, body) = self
            .post(
                &keyshift_testkit::v("/keys/k1/create"),
                Some("x"),
                json!({"kty": "EC", "crv": "P-256"}),
            )
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "ServiceUnavailable");
        assert_eq!(body["error"]["innererror"]["code"], "Sealed", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("keyshift unseal"),
            "{body}"
        );
        let (status, _) = self
            .post("/tenant/oauth2/v2.0/token", None, json!({}))
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    async fn give(&self, share: &Path) -> (StatusCode, Value) {
        let text = std::fs::read_to_string(share).unwrap();
        self.post("/keyshift/unseal", None, json!({"share": text}))
            .await
    }
}

fn share(dir: &Path, i: u8) -> PathBuf {
    dir.join(format!("share-{i}.txt"))
}

fn inner(body: &Value) -> &str {
    body["error"]["innererror"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shamir_unseal_seal_and_reshare() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let shares = tmp.path().join("shares");
    let log = tmp.path().join("serve.log");
    let s = |p: &Path| p.display().to_string();

    let out = ok(
        &data,
        &[
            "init",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--out",
            &s(&shares),
        ],
    )
    .await;
    assert!(
        out.contains("plaintext"),
        "a warning for plaintext shares:\n{out}"
    );
    let manifest = std::fs::read_to_string(data.join("root.json")).unwrap();
    assert!(!data.join("root.key").exists());
    for i in 1..=5 {
        let text = std::fs::read_to_string(share(&shares, i)).unwrap();
        let y = text.trim().split(':').nth(5).unwrap().to_owned();
        assert!(!manifest.contains(&y), "root.json holds no share");
    }
    // A second init on the same directory is refused.
    let (success, text) = run(
        &data,
        &[
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out",
            &s(&shares),
        ],
    )
    .await;
    assert!(!success && text.contains("already has a root"), "{text}");

    let server = Server::start(&data, &log).await;
    server.assert_sealed(0).await;

    // Bad shares: garbage, a corrupted one, no body.
    let (status, body) = server
        .post("/keyshift/unseal", None, json!({"share": "hello"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(inner(&body), "InvalidShare");
    let good = std::fs::read_to_string(share(&shares, 1)).unwrap();
    let mut corrupt = good.trim().to_owned().into_bytes();
    let at = corrupt.len() - 25;
    corrupt[at] = if corrupt[at] == b'A' { b'B' } else { b'A' };
    let (status, body) = server
        .post(
            "/keyshift/unseal",
            None,
            json!({"share": String::from_utf8(corrupt).unwrap()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(inner(&body), "InvalidShare");
    let (status, body) = server.post("/keyshift/unseal", None, json!([1])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.assert_sealed(0).await;

    // Two shares: still sealed; a duplicate is refused and changes nothing.
    let out = ok(&data, &["unseal", "--share", &s(&share(&shares, 1))]).await;
    assert!(out.contains("1 of 3"), "{out}");
    let (status, body) = server.give(&share(&shares, 1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(inner(&body), "DuplicateShare");
    let (status, body) = server.give(&share(&shares, 4)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["progress"], 2);
    server.assert_sealed(2).await;

    // The third: unsealed, and the first start made the defaults.
    let out = ok(&data, &["unseal", "--share", &s(&share(&shares, 5))]).await;
    assert!(out.contains("Unsealed"), "{out}");
    let (status, _) = server.get("/health", None).await;
    assert_eq!(status, StatusCode::OK);
    let token = server.token(&data).await;
    let (status, body) = server
        .post(
            &keyshift_testkit::v("/keys/k1/create"),
            Some(&token),
            json!({"kty": "EC", "crv": "P-256"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kid = body["key"]["kid"].as_str().unwrap().to_owned();
    let version = kid.rsplit('/').next().unwrap().to_owned();
    // A share given to an unsealed server is not looked at.
    let (status, body) = server.give(&share(&shares, 2)).await;
    assert_eq!(
        (status, body["sealed"].clone()),
        (StatusCode::OK, json!(false))
    );

    // Restart: sealed again; three other shares open it, and the key signs.
    drop(server);
    let server = Server::start(&data, &log).await;
    server.assert_sealed(0).await;
    for i in [2, 3] {
        assert_eq!(server.give(&share(&shares, i)).await.0, StatusCode::OK);
    }
    server.assert_sealed(2).await;
    let (status, body) = server.give(&share(&shares, 4)).await;
    assert_eq!(
        (status, body["sealed"].clone()),
        (StatusCode::OK, json!(false)),
        "{body}"
    );
    let token = server.token(&data).await;
    let digest = keyshift_api::b64::encode(&[7u8; 32]);
    let (status, body) = server
        .post(
            &keyshift_testkit::v(&format!("/keys/k1/{version}/sign")),
            Some(&token),
            json!({"alg": "ES256", "value": digest}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Seal: only an administrator may; then everything answers 503 again.
    let (status, _) = server.post("/keyshift/seal", None, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let out = ok(&data, &["seal"]).await;
    assert!(out.contains("Sealed"), "{out}");
    server.assert_sealed(0).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("sealed: the root and the deployment are dropped"),
        "nothing may keep the deployment alive after seal:\n{logged}"
    );
    let (status, body) = server
        .get(&keyshift_testkit::v("/keys/k1"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // Re-split to three custodians, threshold 2, from three current shares (offline).
    let custodians: Vec<(PathBuf, PathBuf)> = ["ann", "bob", "cho"]
        .iter()
        .map(|n| custodian(tmp.path(), n))
        .collect();
    let new_shares = tmp.path().join("shares2");
    let mut args = vec![
        "init".to_owned(),
        "--reshare".into(),
        "--shares".into(),
        "3".into(),
        "--threshold".into(),
        "2".into(),
        "--out".into(),
        s(&new_shares),
    ];
    for i in [1, 3, 5] {
        args.extend(["--share".into(), s(&share(&shares, i))]);
    }
    for (cert, _) in &custodians {
        args.extend(["--custodian-cert".into(), s(cert)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(&data, &args).await;
    assert!(out.contains("no longer"), "{out}");
    // Too few current shares for a re-split.
    let (success, text) = run(
        &data,
        &[
            "init",
            "--reshare",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out",
            &s(&tmp.path().join("x")),
            "--share",
            &s(&share(&shares, 1)),
        ],
    )
    .await;
    assert!(!success, "{text}");

    // Old shares are stale; an encrypted share needs its custodian's key, and only that one.
    let (status, body) = server.give(&share(&shares, 2)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(inner(&body), "StaleShare", "{body}");
    let (status, body) = server.give(&share(&new_shares, 1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(inner(&body), "ShareEncrypted", "{body}");
    let (success, text) = run(
        &data,
        &[
            "unseal",
            "--share",
            &s(&share(&new_shares, 1)),
            "--custodian-key",
            &s(&custodians[1].1),
        ],
    )
    .await;
    assert!(
        !success,
        "another custodian's key decrypted a share:\n{text}"
    );
    server.assert_sealed(0).await;
    ok(
        &data,
        &[
            "unseal",
            "--share",
            &s(&share(&new_shares, 1)),
            "--custodian-key",
            &s(&custodians[0].1),
        ],
    )
    .await;
    server.assert_sealed(1).await;
    let out = ok(
        &data,
        &[
            "unseal",
            "--share",
            &s(&share(&new_shares, 3)),
            "--custodian-key",
            &s(&custodians[2].1),
        ],
    )
    .await;
    assert!(out.contains("Unsealed"), "{out}");
    let token = server.token(&data).await;
    let (status, body) = server
        .post(
            &keyshift_testkit::v(&format!("/keys/k1/{version}/sign")),
            Some(&token),
            json!({"alg": "ES256", "value": digest}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Commands that open a split-root data directory themselves (vaults, principals, roles, the
/// audit log) take a threshold of shares with --root-share; fewer are refused, and so is
/// `serve`, which starts sealed instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_open_a_split_root_with_a_threshold_of_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let shares = tmp.path().join("shares");
    let s = |p: &Path| p.display().to_string();
    ok(
        &data,
        &[
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out",
            &s(&shares),
        ],
    )
    .await;
    let (one, three) = (s(&share(&shares, 1)), s(&share(&shares, 3)));

    let (success, text) = run(&data, &["principal", "list"]).await;
    assert!(!success && text.contains("--root-share"), "{text}");
    let (success, text) = run(&data, &["--root-share", &one, "principal", "list"]).await;
    assert!(!success && text.contains("cannot recombine"), "{text}");
    let (success, text) = run(&data, &["--root-share", &one, "serve"]).await;
    assert!(!success && text.contains("takes no --root-share"), "{text}");

    let both = ["--root-share", one.as_str(), "--root-share", three.as_str()];
    fn with<'a>(both: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        [both, args].concat()
    }
    let out = ok(&data, &with(&both, &["vault", "create", "payments"])).await;
    assert!(out.contains("created vault payments"), "{out}");
    // The change is in the audit log, read with the same shares.
    let out = ok(
        &data,
        &with(&both, &["audit", "list", "--operation", "VaultCreate"]),
    )
    .await;
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{out}"));
    let event: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        (&event["vault"], &event["principal"]),
        (&json!("payments"), &json!("local"))
    );
    let out = ok(&data, &with(&both, &["audit", "verify"])).await;
    assert!(out.contains("\"intact\": true"), "{out}");
}
