//! `keyshift init` (split the root key into shares, or re-split it), `keyshift unseal`,
//! `keyshift seal`, and `keyshift serve` on a data directory whose root is split: it starts
//! sealed behind a [`SealGate`] and opens the deployment when enough shares have arrived.

use crate::config::{CommonArgs, ServeArgs, Settings};
use crate::datadir::{self, write_private_file, DataDir};
use crate::root_of_trust::{self, Custodian, RootManifest, ShareError, UnsealProgress};
use anyhow::{anyhow, bail, Context, Result};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_crypto::seal::SealingKey;
use keyshift_crypto::KeyMaterial;
use keyshift_server::sealed::{SealGate, UnsealStatus, Unsealer};
use keyshift_server::{RunningServer, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// `root.json` of a data directory.
pub fn manifest_path(data_dir: &Path) -> PathBuf {
    data_dir.join("root.json")
}

/// A root key that is a key object in a PKCS#11 token (`root.json` with mode `pkcs11`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenRoot {
    /// `"pkcs11"`.
    pub mode: String,
    /// The token's label.
    pub token_label: String,
    /// The key object's `CKA_ID`, hex.
    pub key_id: String,
    /// The key object's `CKA_LABEL`.
    pub key_label: String,
}

/// How a data directory's root is kept, when `root.json` says (else: the key file).
#[derive(Debug)]
pub enum RootMode {
    /// Split into shares.
    Shamir(RootManifest),
    /// In a token.
    Pkcs11(TokenRoot),
}

/// Reads `root.json`, if there is one.
pub fn read_root_mode(data_dir: &Path) -> Result<Option<RootMode>> {
    let path = manifest_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let bad =
        |e: serde_json::Error| anyhow!("{} is not a Keyshift root manifest: {e}", path.display());
    match json["mode"].as_str() {
        Some("shamir") => Ok(Some(RootMode::Shamir(
            serde_json::from_value(json).map_err(bad)?,
        ))),
        Some("pkcs11") => Ok(Some(RootMode::Pkcs11(
            serde_json::from_value(json).map_err(bad)?,
        ))),
        other => bail!("{}: unknown root mode {other:?}", path.display()),
    }
}

/// Reads `root.json` of a split root.
pub fn read_manifest(data_dir: &Path) -> Result<RootManifest> {
    match read_root_mode(data_dir)? {
        Some(RootMode::Shamir(manifest)) => Ok(manifest),
        Some(RootMode::Pkcs11(_)) => bail!(
            "the root key of {} is in a PKCS#11 token, not split into shares",
            data_dir.display()
        ),
        None => bail!(
            "{} has no root.json: its root is the key file",
            data_dir.display()
        ),
    }
}

/// The label of the root key object a token root is made with.
pub const TOKEN_ROOT_LABEL: &str = "keyshift-root";

/// Makes the root key in the configured token (AES-256, sensitive, never extractable) and
/// records it in `root.json`.
pub fn init_token_root(settings: &Settings) -> Result<TokenRoot> {
    use keyshift_crypto::HsmBackend;
    let dir = &settings.data_dir;
    refuse_existing_root(settings)?;
    let hsm = settings.hsm.as_ref().ok_or_else(|| {
        anyhow!(
            "--root pkcs11 needs the token: --pkcs11-module, --pkcs11-token-label and \
             --pkcs11-pin-file (or KEYSHIFT_PKCS11_PIN)"
        )
    })?;
    let backend = datadir::connect_hsm(hsm)?;
    let key = backend
        .generate(
            keyshift_crypto::HsmKeySpec::Oct { bits: 256 },
            TOKEN_ROOT_LABEL,
        )
        .map_err(|e| {
            anyhow!(
                "cannot make the root key in token {:?}: {e}",
                hsm.token_label
            )
        })?;
    let root = TokenRoot {
        mode: "pkcs11".into(),
        token_label: hsm.token_label.clone(),
        key_id: key.reference.to_string(),
        key_label: key.label.clone(),
    };
    create_data_dir(dir)?;
    write_private_file(&manifest_path(dir), &serde_json::to_vec_pretty(&root)?)?;
    Ok(root)
}

/// The root key in its token: the token must be the configured one and hold the object.
pub fn open_token_root(
    root: &TokenRoot,
    hsm: Option<&crate::config::HsmSettings>,
) -> Result<keyshift_vault::RootKey> {
    use keyshift_crypto::HsmBackend;
    let Some(hsm) = hsm else {
        bail!(
            "the root key is in PKCS#11 token {:?} (root.json): give --pkcs11-module, \
             --pkcs11-token-label and --pkcs11-pin-file",
            root.token_label
        );
    };
    if hsm.token_label != root.token_label {
        bail!(
            "the root key is in token {:?} (root.json), but --pkcs11-token-label is {:?}",
            root.token_label,
            hsm.token_label
        );
    }
    let backend = datadir::connect_hsm(hsm)?;
    let reference = keyshift_crypto::HsmKeyRef::from_hex(&root.key_id)
        .map_err(|e| anyhow!("root.json: bad key_id: {e}"))?;
    let key = backend.open(&reference).map_err(|e| {
        anyhow!(
            "the root key object {} ({}) cannot be used in token {:?}: {e}; without it this \
             deployment cannot be opened",
            root.key_id,
            root.key_label,
            root.token_label
        )
    })?;
    Ok(keyshift_vault::RootKey::Token {
        backend: Arc::new(backend),
        key,
    })
}

fn refuse_existing_root(settings: &Settings) -> Result<()> {
    let dir = &settings.data_dir;
    for existing in ["root.json", "root.key", "keyshift.db"] {
        if dir.join(existing).exists() {
            bail!(
                "{} already has a root of trust ({existing}): init is for a new data directory \
                 (use --reshare to re-split a split root)",
                dir.display()
            );
        }
    }
    if settings.root_key_file.exists() {
        bail!(
            "{} exists: this deployment's root is a key file",
            settings.root_key_file.display()
        );
    }
    Ok(())
}

fn create_data_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Where `init` puts the root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RootChoice {
    /// Split into shares held by custodians.
    Shamir,
    /// A non-extractable key in the PKCS#11 token of the --pkcs11-* flags.
    Pkcs11,
}

/// Flags of `init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where the root key lives.
    #[arg(long, value_enum, default_value = "shamir")]
    pub root: RootChoice,
    /// Number of shares to make (Shamir).
    #[arg(long)]
    pub shares: Option<u8>,
    /// Shares needed to unseal (Shamir).
    #[arg(long)]
    pub threshold: Option<u8>,
    /// A custodian's X.509 certificate (PEM, RSA >= 2048 bits), once per share, in share order:
    /// share i is encrypted to certificate i. Without them the shares are written in plaintext.
    #[arg(long = "custodian-cert")]
    pub custodian_certs: Vec<PathBuf>,
    /// Where the share files are written (share-<i>.txt), mode 0600.
    #[arg(long, default_value = "keyshift-shares")]
    pub out: PathBuf,
    /// Re-split the existing root into a new share set (the old shares stop working); needs the
    /// threshold of current shares given with --share.
    #[arg(long)]
    pub reshare: bool,
    /// A current share (file), for --reshare.
    #[arg(long = "share")]
    pub current_shares: Vec<PathBuf>,
    /// Custodian private key(s) (PKCS#8 PEM) to decrypt encrypted current shares, for --reshare.
    #[arg(long = "custodian-key")]
    pub custodian_keys: Vec<PathBuf>,
    /// PKCS#11 module (--root pkcs11), as for `serve`.
    #[arg(long, env = "KEYSHIFT_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// Token label (--root pkcs11).
    #[arg(long, env = "KEYSHIFT_PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// File holding the user PIN (--root pkcs11), mode 0600; or KEYSHIFT_PKCS11_PIN.
    #[arg(long, env = "KEYSHIFT_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

/// Flags of `unseal`.
#[derive(Debug, clap::Args)]
pub struct UnsealArgs {
    /// The share file.
    #[arg(long)]
    pub share: PathBuf,
    /// The custodian's private key (PKCS#8 PEM), when the share is encrypted to its certificate.
    #[arg(long)]
    pub custodian_key: Option<PathBuf>,
    /// The server [default: the URL in <data-dir>/serving.json].
    #[arg(long)]
    pub url: Option<String>,
    /// CA certificate to trust [default: <data-dir>/tls/ca.pem].
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// Flags of `seal`.
#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// Administrator credentials [default: <data-dir>/admin.json].
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// The server [default: the URL in <data-dir>/serving.json].
    #[arg(long)]
    pub url: Option<String>,
    /// CA certificate to trust [default: <data-dir>/tls/ca.pem].
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

fn settings(common: &CommonArgs) -> Result<Settings> {
    Settings::resolve(common, &ServeArgs::default())
}

pub(crate) fn read_custodian_key(path: &Path) -> Result<KeyMaterial> {
    let pem = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the custodian key {}", path.display()))?,
    );
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine;
    let der = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| anyhow!("{}: not a PKCS#8 PEM private key", path.display()))?,
    );
    KeyMaterial::from_pkcs8_der(&der)
        .map_err(|e| anyhow!("{}: not an RSA private key: {e}", path.display()))
}

/// Reads a share file, decrypting it with the first of `keys` that opens it.
/// The root `manifest` describes, recombined from the share files `shares` (encrypted ones
/// opened with one of the custodian keys `keys`).
pub(crate) fn recombine_root(
    manifest: &RootManifest,
    shares: &[PathBuf],
    keys: &[PathBuf],
) -> Result<SealingKey> {
    let keys = keys
        .iter()
        .map(|p| read_custodian_key(p))
        .collect::<Result<Vec<_>>>()?;
    let texts = shares
        .iter()
        .map(|p| read_share(p, &keys))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    manifest
        .recombine(&refs)
        .map_err(|e| anyhow!("cannot recombine the root: {e}"))
}

fn read_share(path: &Path, keys: &[KeyMaterial]) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the share {}", path.display()))?,
    );
    if !text.trim().starts_with("keyshift-share-encrypted") {
        return Ok(Zeroizing::new(text.trim().to_owned()));
    }
    if keys.is_empty() {
        bail!(
            "{} is encrypted to a custodian's certificate: give the custodian's key (--custodian-key, or --root-share-key for a command that opens the data directory)",
            path.display()
        );
    }
    let mut last = String::new();
    for key in keys {
        match root_of_trust::decrypt_share(&text, key) {
            Ok(plain) => return Ok(plain),
            Err(e) => last = e,
        }
    }
    bail!("{}: {last}", path.display())
}

/// `keyshift init`.
pub fn run_init(common: &CommonArgs, args: InitArgs) -> Result<()> {
    if args.root == RootChoice::Pkcs11 {
        let serve = ServeArgs {
            pkcs11_module: args.pkcs11_module.clone(),
            pkcs11_token_label: args.pkcs11_token_label.clone(),
            pkcs11_pin_file: args.pkcs11_pin_file.clone(),
            ..Default::default()
        };
        let settings = Settings::resolve(common, &serve)?;
        let root = init_token_root(&settings)?;
        println!(
            "Root key made in token {:?} (object {}, label {}): serve with the same --pkcs11-* flags.",
            root.token_label, root.key_id, root.key_label
        );
        return Ok(());
    }
    let (Some(shares), Some(threshold)) = (args.shares, args.threshold) else {
        bail!("give --shares N and --threshold M (or --root pkcs11)");
    };
    let settings = settings(common)?;
    let dir = &settings.data_dir;
    let custodians = args
        .custodian_certs
        .iter()
        .map(|p| {
            let pem = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Custodian::from_pem(&pem).map_err(|e| anyhow!("{}: {e}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let (root, root_id, generation) = if args.reshare {
        let manifest = read_manifest(dir)?;
        let root = recombine_root(&manifest, &args.current_shares, &args.custodian_keys)?;
        (root, manifest.root_id, manifest.generation + 1)
    } else {
        refuse_existing_root(&settings)?;
        let root =
            SealingKey::generate().map_err(|e| anyhow!("cannot generate the root key: {e}"))?;
        let id = keyshift_api::b64::encode(
            &keyshift_crypto::random_bytes(12).map_err(|e| anyhow!("{e}"))?,
        );
        (root, id, 1)
    };
    let (manifest, texts) =
        root_of_trust::split_root(&root, &root_id, generation, shares, threshold, &custodians)
            .map_err(|e| anyhow!("{e}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut written = Vec::new();
    for (record, text) in manifest.shares.iter().zip(&texts) {
        let path = args.out.join(format!("share-{}.txt", record.id));
        write_private_file(&path, format!("{}\n", text.as_str()).as_bytes())?;
        written.push(path);
    }
    create_data_dir(dir)?;
    // The manifest last: until it is there, the old share set (or none) is the current one.
    write_private_file(&manifest_path(dir), &serde_json::to_vec_pretty(&manifest)?)?;
    println!(
        "Root key {} into {} shares, {} needed to unseal (share set {generation}):",
        if args.reshare {
            "re-split"
        } else {
            "made and split"
        },
        shares,
        threshold
    );
    for path in &written {
        println!("  {}", path.display());
    }
    if custodians.is_empty() {
        eprintln!(
            "warning: the shares are in plaintext: give each to its custodian and delete them \
             here (or use --custodian-cert to encrypt each to a custodian's certificate)"
        );
    }
    if args.reshare {
        println!("The previous shares no longer unseal this deployment.");
    }
    Ok(())
}

fn server_url(dir: &Path, url: Option<String>) -> Result<String> {
    if let Some(url) = url {
        return Ok(url);
    }
    let serving = std::fs::read(dir.join("serving.json"))
        .with_context(|| format!("no server has started on {} (give --url)", dir.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&serving)?;
    json["public_url"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("serving.json has no public_url: give --url"))
}

fn https_client(ca: &Path) -> Result<reqwest::Client> {
    let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in keyshift_crypto::x509::pem_certificates(&pem) {
        roots
            .add(rustls::pki_types::CertificateDer::from(der))
            .map_err(|e| anyhow!("{}: {e}", ca.display()))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow!("{e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(std::time::Duration::from_secs(60))
        .build()?)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    bearer: Option<&str>,
) -> Result<serde_json::Value> {
    let mut request = client.post(url).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let json: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        let message = json["error"]["message"].as_str().unwrap_or("no message");
        let inner = json["error"]["innererror"]["code"].as_str().unwrap_or("");
        bail!("{status}: {message} {inner}");
    }
    Ok(json)
}

/// `keyshift unseal`.
pub async fn run_unseal(common: &CommonArgs, args: UnsealArgs) -> Result<()> {
    let settings = settings(common)?;
    let keys = match &args.custodian_key {
        Some(path) => vec![read_custodian_key(path)?],
        None => vec![],
    };
    let share = read_share(&args.share, &keys)?;
    let url = server_url(&settings.data_dir, args.url)?;
    let ca = args
        .ca_cert
        .unwrap_or_else(|| settings.data_dir.join("tls").join("ca.pem"));
    let client = https_client(&ca)?;
    let status = post(
        &client,
        &format!("{}/keyshift/unseal", url.trim_end_matches('/')),
        serde_json::json!({"share": share.as_str()}),
        None,
    )
    .await?;
    print_status(&status);
    Ok(())
}

fn print_status(status: &serde_json::Value) {
    if status["sealed"].as_bool() == Some(false) {
        println!("Unsealed: the deployment is serving.");
    } else {
        println!(
            "Sealed: {} of {} shares given.",
            status["progress"], status["threshold"]
        );
    }
}

/// `keyshift seal`.
pub async fn run_seal(common: &CommonArgs, args: SealArgs) -> Result<()> {
    let settings = settings(common)?;
    let url = server_url(&settings.data_dir, args.url)?;
    let ca = args
        .ca_cert
        .unwrap_or_else(|| settings.data_dir.join("tls").join("ca.pem"));
    let client = https_client(&ca)?;
    let credentials = args
        .credentials
        .unwrap_or_else(|| settings.data_dir.join("admin.json"));
    // The token endpoint of the server being sealed (admin.json's may name an older port).
    let admin: datadir::AdminCredentials = serde_json::from_slice(&Zeroizing::new(
        std::fs::read(&credentials)
            .with_context(|| format!("cannot read {}", credentials.display()))?,
    ))
    .with_context(|| format!("{} is not an admin.json", credentials.display()))?;
    let token_url = format!(
        "{}/{}/oauth2/v2.0/token",
        url.trim_end_matches('/'),
        admin.tenant_id
    );
    let scope = format!("{}/.default", settings.token_audience.trim_end_matches('/'));
    let response = client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", admin.client_id.as_str()),
            ("client_secret", admin.client_secret.as_str()),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .with_context(|| format!("cannot reach {token_url}"))?;
    if !response.status().is_success() {
        bail!(
            "the administrator's token was refused ({}): is the server sealed already?",
            response.status()
        );
    }
    let body: serde_json::Value = response.json().await?;
    let token = Zeroizing::new(
        body["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("the token endpoint answered no access_token"))?
            .to_owned(),
    );
    let status = post(
        &client,
        &format!("{}/keyshift/seal", url.trim_end_matches('/')),
        serde_json::json!({}),
        Some(token.as_str()),
    )
    .await?;
    print_status(&status);
    Ok(())
}

/// The running deployment of an unsealed server.
struct Unsealed {
    server: RunningServer,
    data_dir: DataDir,
}

struct GateState {
    progress: UnsealProgress,
    threshold: u8,
    unsealed: Option<Unsealed>,
}

/// A server whose root is split: sealed until enough shares arrive.
pub struct SealedServer {
    settings: Settings,
    gate: Arc<SealGate>,
    opener: tokio::sync::mpsc::Sender<OpenRequest>,
    state: Mutex<GateState>,
}

impl std::fmt::Debug for SealedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedServer")
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

fn share_refused(e: ShareError) -> ApiError {
    ApiError::bad_parameter(format!("The share was refused: {e}.")).with_inner(e.inner_code())
}

impl SealedServer {
    /// Binds the main listener, sealed. Returns the server (serving already) and the opener to
    /// run beside it.
    pub async fn start(settings: &Settings) -> Result<(Arc<SealedServer>, Opener)> {
        let manifest = read_manifest(&settings.data_dir)?;
        let ca = datadir::load_or_create_ca(
            &settings.data_dir.join("tls"),
            keyshift_vault::Clock::now(&keyshift_vault::SystemClock),
        )?;
        let config = crate::serve::server_config(settings, ca);
        let gate = SealGate::bind(
            &config,
            keyshift_vault::Clock::now(&keyshift_vault::SystemClock),
        )
        .await?;
        let (opener, requests) = tokio::sync::mpsc::channel(1);
        let server = Arc::new(SealedServer {
            settings: settings.clone(),
            gate: gate.clone(),
            opener,
            state: Mutex::new(GateState {
                progress: UnsealProgress::default(),
                threshold: manifest.threshold,
                unsealed: None,
            }),
        });
        gate.serve(server.clone());
        let serving = serde_json::json!({
            "public_url": gate.public_url(),
            "port": gate.local_addr().port(),
        });
        write_private_file(
            &settings.data_dir.join("serving.json"),
            &serde_json::to_vec_pretty(&serving)?,
        )?;
        let opener = Opener {
            settings: settings.clone(),
            config,
            gate,
            requests,
        };
        Ok((server, opener))
    }

    /// The main listener.
    pub fn gate(&self) -> &Arc<SealGate> {
        &self.gate
    }

    /// Opens the deployment under `root` and serves it behind the gate, through the opener
    /// (the store's futures are not `Send` enough for a request handler to await them).
    async fn open(&self, root: SealingKey) -> Result<Unsealed> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.opener
            .send((root, reply))
            .await
            .map_err(|_| anyhow!("the server is stopping"))?;
        answer
            .await
            .map_err(|_| anyhow!("the server is stopping"))?
    }
}

type OpenRequest = (SealingKey, tokio::sync::oneshot::Sender<Result<Unsealed>>);

/// Opens deployments for a [`SealedServer`]: run it in the task that started the server.
#[derive(Debug)]
pub struct Opener {
    settings: Settings,
    config: ServerConfig,
    gate: Arc<SealGate>,
    requests: tokio::sync::mpsc::Receiver<OpenRequest>,
}

impl Opener {
    /// Opens a deployment for each root the unsealer recombines, until the server is dropped.
    pub async fn run(mut self) {
        while let Some((root, reply)) = self.requests.recv().await {
            let opened = open_behind(&self.settings, self.config.clone(), &self.gate, root).await;
            let _ = reply.send(opened);
        }
    }
}

async fn open_behind(
    settings: &Settings,
    config: ServerConfig,
    gate: &Arc<SealGate>,
    root: SealingKey,
) -> Result<Unsealed> {
    {
        let data_dir = datadir::open_with_root(settings, root).await?;
        datadir::use_audit_chain(&data_dir)?;
        data_dir
            .deployment
            .start_audit()
            .await
            .map_err(|e| anyhow!("the audit log cannot start: {}", e.message))?;
        // The defaults first, as in `serve`: nothing behind the gate answers before them.
        if let Some(admin) =
            datadir::ensure_defaults(&data_dir, settings, gate.public_url()).await?
        {
            println!(
                "Administrator created: client_id {} (secret and token URL in {}, shown once; keep it safe)",
                admin.client_id,
                data_dir.path.join("admin.json").display()
            );
        }
        let server =
            keyshift_server::start_behind(config, data_dir.deployment.clone(), gate).await?;
        Ok(Unsealed { server, data_dir })
    }
}

#[async_trait::async_trait]
impl Unsealer for SealedServer {
    async fn unseal(&self, share: String) -> Result<UnsealStatus, ApiError> {
        let share = Zeroizing::new(share);
        let mut state = self.state.lock().await;
        if state.unsealed.is_some() {
            return Ok(status_of(&state));
        }
        // Read each time: a re-split (`keyshift init --reshare`) takes effect without a restart.
        let manifest = read_manifest(&self.settings.data_dir).map_err(|e| {
            tracing::error!(error = %e, "cannot read the root manifest");
            ApiError::new(
                ErrorCode::InternalError,
                "The root manifest cannot be read.",
            )
        })?;
        state.threshold = manifest.threshold;
        let Some(root) = state
            .progress
            .submit(&manifest, &share)
            .map_err(share_refused)?
        else {
            tracing::info!(progress = state.progress.count(), "unseal share accepted");
            return Ok(status_of(&state));
        };
        match self.open(root).await {
            Ok(unsealed) => {
                state.unsealed = Some(unsealed);
                tracing::info!("unsealed");
                Ok(status_of(&state))
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the deployment does not open under the recombined root");
                self.gate.clear();
                Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("The shares were right, but the deployment did not open: {e:#}. Give the shares again once this is fixed."),
                )
                .with_inner("UnsealFailed"))
            }
        }
    }

    async fn seal(&self) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        self.gate.clear();
        state.progress.clear();
        if let Some(unsealed) = state.unsealed.take() {
            let deployment = Arc::downgrade(&unsealed.data_dir.deployment);
            unsealed.server.shutdown().await;
            drop(unsealed.data_dir);
            if deployment.upgrade().is_some() {
                // Requests in flight hold it until they finish.
                tracing::warn!("sealed; the deployment is still referenced by requests in flight");
            } else {
                tracing::info!("sealed: the root and the deployment are dropped");
            }
        }
        Ok(())
    }

    async fn status(&self) -> UnsealStatus {
        status_of(&*self.state.lock().await)
    }
}

fn status_of(state: &GateState) -> UnsealStatus {
    UnsealStatus {
        sealed: state.unsealed.is_none(),
        threshold: state.threshold,
        progress: state.progress.count(),
    }
}
