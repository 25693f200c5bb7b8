//! `keyshift byok ...`: bring your own key, the customer's side. `export-kek` fetches a vault's
//! key-exchange key as PEM; `wrap` builds the transfer blob (`.byok`, Azure's format) from a key
//! file, offline, so the key can be made and wrapped where it lives and imported into any vault.

use crate::config::CommonArgs;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyshift_client::{parse_kid, AdminJson, KeyClient};
use keyshift_crypto::transfer::{rsa_aes_key_wrap_spki, rsa_spki_der, TransferWrap};
use keyshift_crypto::{KeyMaterial, PublicKey};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// BYOK commands.
#[derive(Debug, clap::Subcommand)]
pub enum ByokCommand {
    /// Write a key-exchange key's public key as PEM and print its versioned kid (what `wrap`
    /// needs). The key must be an RSA-HSM key whose only operation is `import`.
    ExportKek {
        /// The key-exchange key's identifier.
        kid: String,
        /// Where to write the PEM [default: kek.pem].
        #[arg(long, short, default_value = "kek.pem")]
        out: PathBuf,
        /// Credentials (`admin.json` shape) [default: <data-dir>/admin.json].
        #[arg(long, env = "KEYSHIFT_CREDENTIALS")]
        credentials: Option<PathBuf>,
    },
    /// Build a transfer blob: the key in `--key` (PKCS#8 PEM or DER, a private JWK, or raw AES
    /// bytes with `--oct`), wrapped for the key-exchange key. Offline: no vault is called.
    Wrap {
        /// The key-exchange key's versioned kid (printed by `export-kek`).
        #[arg(long)]
        kek_kid: String,
        /// The key-exchange key's public key, PEM (written by `export-kek`).
        #[arg(long)]
        kek_pem: PathBuf,
        /// The key to transfer.
        #[arg(long)]
        key: PathBuf,
        /// The key file holds raw AES key bytes (16, 24 or 32), for an oct-HSM key.
        #[arg(long)]
        oct: bool,
        /// CKM_RSA_AES_KEY_WRAP (Azure's BYOK default), RSA_AES_KEY_WRAP_256 or RSA_AES_KEY_WRAP_384.
        #[arg(long, default_value = "CKM_RSA_AES_KEY_WRAP")]
        enc: String,
        /// Where to write the blob [default: <key>.byok].
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The DER of the first PEM block labelled `label`.
fn pem_decode(text: &str, label: &str) -> Option<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].split_whitespace().collect();
    STANDARD.decode(body).ok().map(Zeroizing::new)
}

/// The key to transfer, as the transfer plaintext: PKCS#8 DER for RSA and EC, raw for oct.
fn transfer_plaintext(path: &Path, oct: bool) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let material = if oct {
        if ![16, 24, 32].contains(&bytes.len()) {
            bail!(
                "{}: an AES key is 16, 24 or 32 bytes, this file has {}",
                path.display(),
                bytes.len()
            );
        }
        KeyMaterial::from_transfer_plaintext(&bytes, true)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?
            .0
    } else if let Ok(text) = std::str::from_utf8(&bytes) {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            let jwk: keyshift_api::keys::JsonWebKey = serde_json::from_str(trimmed)
                .map_err(|_| anyhow!("{} is not a JSON Web Key", path.display()))?;
            KeyMaterial::from_jwk(&jwk_parts(&jwk)?)
                .map_err(|e| anyhow!("{}: not a private JWK: {e}", path.display()))?
        } else if trimmed.starts_with("-----BEGIN") {
            if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                bail!("{}: the key is encrypted; decrypt it first (openssl pkcs8 -in key.pem -out plain.pem)", path.display());
            }
            let der = pem_decode(text, "PRIVATE KEY").ok_or_else(|| {
                anyhow!(
                    "{}: no PKCS#8 PRIVATE KEY block (convert with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem)",
                    path.display()
                )
            })?;
            KeyMaterial::from_transfer_plaintext(&der, false)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
                .0
        } else {
            bail!(
                "{}: not a PEM, DER or JWK key file (use --oct for raw AES key bytes)",
                path.display()
            );
        }
    } else {
        KeyMaterial::from_transfer_plaintext(&bytes, false)
            .map_err(|e| anyhow!("{}: not a PKCS#8 DER private key: {e}", path.display()))?
            .0
    };
    Ok(material.transfer_plaintext())
}

fn jwk_parts(jwk: &keyshift_api::keys::JsonWebKey) -> Result<keyshift_crypto::JwkParts> {
    use keyshift_crypto::{Curve, KeyFamily};
    let kty = jwk.kty.as_deref().unwrap_or("");
    let family = match kty.trim_end_matches("-HSM") {
        "RSA" => KeyFamily::Rsa,
        "EC" => KeyFamily::Ec,
        "oct" => KeyFamily::Oct,
        other => bail!("a JWK of kty {other:?} cannot be transferred"),
    };
    let crv = match jwk.crv.as_deref() {
        Some(name) => {
            Some(Curve::from_jwk_name(name).ok_or_else(|| anyhow!("unknown curve {name:?}"))?)
        }
        None => None,
    };
    Ok(keyshift_crypto::JwkParts {
        family: Some(family),
        crv,
        n: jwk.n.clone(),
        e: jwk.e.clone(),
        d: jwk.d.clone(),
        p: jwk.p.clone(),
        q: jwk.q.clone(),
        dp: jwk.dp.clone(),
        dq: jwk.dq.clone(),
        qi: jwk.qi.clone(),
        x: jwk.x.clone(),
        y: jwk.y.clone(),
        k: jwk.k.clone(),
    })
}

/// Runs a BYOK command.
pub async fn run(common: &CommonArgs, cmd: ByokCommand) -> Result<()> {
    match cmd {
        ByokCommand::ExportKek {
            kid,
            out,
            credentials,
        } => {
            let path = credentials.unwrap_or_else(|| {
                common
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("keyshift-data"))
                    .join("admin.json")
            });
            let admin = AdminJson::read(&path)
                .map_err(|e| anyhow!("{e} (give credentials with --credentials)"))?;
            let client = KeyClient::builder()
                .credential(Arc::new(admin.credential()?))
                .ca_pem(Some(&admin.ca_pem()?))
                .build()?;
            let parsed = parse_kid(&kid)?;
            let bundle = client
                .get_key(&parsed.vault_url, &parsed.name, parsed.version.as_deref())
                .await?;
            let key = bundle.key;
            let ops = key.key_ops.clone().unwrap_or_default();
            if ops != ["import"] {
                bail!(
                    "{kid} is not a key-exchange key: its operations are {ops:?}, a key-exchange key has exactly [\"import\"]"
                );
            }
            let (Some(n), Some(e)) = (key.n.clone(), key.e.clone()) else {
                bail!("{kid} is not an RSA key");
            };
            let der = rsa_spki_der(&PublicKey::Rsa { n, e }).map_err(|e| anyhow!("{e}"))?;
            std::fs::write(&out, pem_encode("PUBLIC KEY", &der))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("{}", serde_json::json!({"kid": key.kid, "pem": out}));
        }
        ByokCommand::Wrap {
            kek_kid,
            kek_pem,
            key,
            oct,
            enc,
            out,
        } => {
            let parsed = parse_kid(&kek_kid)?;
            if parsed.version.is_none() {
                bail!("--kek-kid must name a version (as export-kek prints it): the blob is bound to it");
            }
            let wrap = TransferWrap::from_name(&enc).ok_or_else(|| {
                anyhow!("--enc must be CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256 or RSA_AES_KEY_WRAP_384")
            })?;
            let pem = std::fs::read_to_string(&kek_pem)
                .with_context(|| format!("cannot read {}", kek_pem.display()))?;
            let spki = pem_decode(&pem, "PUBLIC KEY")
                .ok_or_else(|| anyhow!("{} holds no PUBLIC KEY block", kek_pem.display()))?;
            let plaintext = transfer_plaintext(&key, oct)?;
            let ciphertext = rsa_aes_key_wrap_spki(&spki, wrap.hash(), &plaintext)
                .map_err(|e| anyhow!("{}: {e}", kek_pem.display()))?;
            let blob = serde_json::json!({
                "schema_version": "1.0.0",
                "header": {"kid": kek_kid, "alg": "dir", "enc": wrap.name()},
                "ciphertext": keyshift_api::b64::encode(&ciphertext),
                "generator": format!("keyshift byok wrap {}", env!("CARGO_PKG_VERSION")),
            });
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{}.byok", key.display())));
            std::fs::write(&out, serde_json::to_vec_pretty(&blob)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{}",
                serde_json::json!({"byok": out, "kek": kek_kid, "enc": wrap.name()})
            );
        }
    }
    Ok(())
}
