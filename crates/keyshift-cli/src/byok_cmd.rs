//! `keyshift byok ...`: bring your own key, the customer's side. `export-kek` fetches a vault's
//! key-exchange key as PEM; `wrap` builds the transfer blob (`.byok`, Azure's format) from a key
//! file, or has a PKCS#11 token build it from a key inside it ([`crate::pkcs11`]), offline, so
//! the key can be made and wrapped where it lives and imported into any vault.

use crate::config::CommonArgs;
use crate::pkcs11::{wrap_token_key, TokenArgs, TokenKeyRef};
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyshift_client::{parse_kid, AdminJson, KeyClient};
use keyshift_crypto::transfer::{
    rsa_aes_key_wrap_spki, rsa_spki_der, rsa_spki_public_key, TransferWrap,
};
use keyshift_crypto::{Curve, KeyFamily, KeyMaterial, PublicKey};
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
    /// bytes with `--oct`), or a key inside a PKCS#11 token (`--token-label`; the token wraps
    /// it, so it never leaves the token in the clear), wrapped for the key-exchange key.
    /// Offline: no vault is called. Prints the `kty` (and `crv`) to import the blob with.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["key", "token_label"])))]
    Wrap {
        /// The key-exchange key's versioned kid (printed by `export-kek`).
        #[arg(long)]
        kek_kid: String,
        /// The key-exchange key's public key, PEM (written by `export-kek`).
        #[arg(long)]
        kek_pem: PathBuf,
        /// The key to transfer, a file.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The key file holds raw AES key bytes (16, 24 or 32), for an oct-HSM key.
        #[arg(long, conflicts_with = "token_label")]
        oct: bool,
        #[command(flatten)]
        token: TokenArgs,
        /// CKM_RSA_AES_KEY_WRAP (Azure's BYOK default), RSA_AES_KEY_WRAP_256 or RSA_AES_KEY_WRAP_384.
        #[arg(long, default_value = "CKM_RSA_AES_KEY_WRAP")]
        enc: String,
        /// Where to write the blob [default: <key>.byok, or <key-label>.byok from a token].
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

/// The key to transfer, as the transfer plaintext: PKCS#8 DER for RSA and EC, raw for oct; and
/// how to import it.
fn transfer_plaintext(path: &Path, oct: bool) -> Result<(Zeroizing<Vec<u8>>, serde_json::Value)> {
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
    let hint = import_hint(material.family(), material.size_bits(), material.curve());
    Ok((material.transfer_plaintext(), hint))
}

/// What `PUT /keys/{name}` must say of the key in a blob: `kty`, and `crv` or `key_size`.
fn import_hint(family: KeyFamily, bits: u32, curve: Option<Curve>) -> serde_json::Value {
    match (family, curve) {
        (KeyFamily::Ec, Some(curve)) => {
            serde_json::json!({"kty": "EC-HSM", "crv": curve.jwk_name()})
        }
        (KeyFamily::Ec, None) => serde_json::json!({"kty": "EC-HSM"}),
        (KeyFamily::Rsa, _) => serde_json::json!({"kty": "RSA-HSM", "key_size": bits}),
        (KeyFamily::Oct, _) => serde_json::json!({"kty": "oct-HSM", "key_size": bits}),
    }
}

/// A file name for a blob of a token key: its label or id, with what a path cannot hold replaced.
fn blob_name(key: &TokenKeyRef) -> PathBuf {
    let stem = match key {
        TokenKeyRef::Label(label) => label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        TokenKeyRef::Id(id) => {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            format!("key-{hex}")
        }
    };
    PathBuf::from(format!("{}.byok", stem.trim_start_matches('.')))
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
            token,
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
            let (ciphertext, out, mut summary) = match key {
                Some(key) => {
                    let (plaintext, hint) = transfer_plaintext(&key, oct)?;
                    let ciphertext = rsa_aes_key_wrap_spki(&spki, wrap.hash(), &plaintext)
                        .map_err(|e| anyhow!("{}: {e}", kek_pem.display()))?;
                    let out =
                        out.unwrap_or_else(|| PathBuf::from(format!("{}.byok", key.display())));
                    (ciphertext, out, hint)
                }
                None => {
                    let source = token.source()?;
                    let kek = rsa_spki_public_key(&spki)
                        .map_err(|e| anyhow!("{}: {e}", kek_pem.display()))?;
                    let wrapped = wrap_token_key(&source, &kek, wrap)?;
                    let kind = wrapped.kind;
                    let mut hint = import_hint(kind.family, kind.bits, kind.curve);
                    hint["token"] = source.token_label.clone().into();
                    hint["mechanisms"] = serde_json::json!(wrapped.mechanisms);
                    let out = out.unwrap_or_else(|| blob_name(&source.key));
                    (wrapped.ciphertext, out, hint)
                }
            };
            let blob = serde_json::json!({
                "schema_version": "1.0.0",
                "header": {"kid": kek_kid, "alg": "dir", "enc": wrap.name()},
                "ciphertext": keyshift_api::b64::encode(&ciphertext),
                "generator": format!("keyshift byok wrap {}", env!("CARGO_PKG_VERSION")),
            });
            std::fs::write(&out, serde_json::to_vec_pretty(&blob)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            summary["byok"] = serde_json::json!(out);
            summary["kek"] = kek_kid.into();
            summary["enc"] = wrap.name().into();
            println!("{summary}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Byok {
        #[command(subcommand)]
        command: ByokCommand,
    }

    fn wrap(args: &[&str]) -> std::result::Result<ByokCommand, ErrorKind> {
        let base = ["byok", "wrap", "--kek-kid", "k", "--kek-pem", "kek.pem"];
        Byok::try_parse_from(base.iter().chain(args))
            .map(|b| b.command)
            .map_err(|e| e.kind())
    }

    #[test]
    fn the_key_comes_from_a_file_or_from_a_token_never_both() {
        let Ok(ByokCommand::Wrap { key, token, .. }) = wrap(&["--key", "k.pem"]) else {
            panic!("a key file is enough");
        };
        assert_eq!(key, Some(PathBuf::from("k.pem")));
        assert!(token.token_label.is_none());
        let Ok(ByokCommand::Wrap { key, token, .. }) = wrap(&[
            "--pkcs11-module",
            "/lib/p11.so",
            "--token-label",
            "t",
            "--key-id",
            "01",
            "--pin-file",
            "pin",
        ]) else {
            panic!("a token key is enough");
        };
        assert!(key.is_none());
        assert_eq!(token.token_label.as_deref(), Some("t"));
        // The module may come from the environment, so --token-label alone names the token.
        assert!(wrap(&["--token-label", "t", "--key-label", "k"]).is_ok());

        let conflict = Err(ErrorKind::ArgumentConflict);
        let missing = Err(ErrorKind::MissingRequiredArgument);
        assert_eq!(wrap(&[]).map(|_| ()), missing);
        let both = ["--key", "k.pem", "--pkcs11-module", "/lib/p11.so"];
        assert_eq!(wrap(&both).map(|_| ()), conflict);
        let both = ["--key", "k.pem", "--token-label", "t", "--key-id", "01"];
        assert_eq!(wrap(&both).map(|_| ()), conflict);
        // A token without a key in it, a key named twice, --oct for a token key.
        assert_eq!(wrap(&["--token-label", "t"]).map(|_| ()), missing);
        let twice = ["--token-label", "t", "--key-id", "01", "--key-label", "k"];
        assert_eq!(wrap(&twice).map(|_| ()), conflict);
        let oct = ["--token-label", "t", "--key-id", "01", "--oct"];
        assert_eq!(wrap(&oct).map(|_| ()), conflict);
        // Token options without a token.
        let stray = ["--pkcs11-module", "/lib/p11.so", "--key-id", "01"];
        assert!(wrap(&stray).is_err());
        assert!(wrap(&["--key", "k.pem", "--key-label", "k"]).is_err());
        // There is no --pin.
        let pin = ["--token-label", "t", "--key-id", "01", "--pin", "1234"];
        assert_eq!(wrap(&pin).map(|_| ()), Err(ErrorKind::UnknownArgument));
    }

    #[test]
    fn import_hints_name_the_kty_and_curve() {
        assert_eq!(
            import_hint(KeyFamily::Rsa, 3072, None),
            serde_json::json!({"kty": "RSA-HSM", "key_size": 3072})
        );
        assert_eq!(
            import_hint(KeyFamily::Ec, 384, Some(Curve::P384)),
            serde_json::json!({"kty": "EC-HSM", "crv": "P-384"})
        );
        assert_eq!(
            import_hint(KeyFamily::Oct, 256, None),
            serde_json::json!({"kty": "oct-HSM", "key_size": 256})
        );
    }

    #[test]
    fn blob_names_come_from_the_label_or_the_id() {
        let name = |key| blob_name(&key).display().to_string();
        assert_eq!(
            name(TokenKeyRef::Label("customer-rsa".into())),
            "customer-rsa.byok"
        );
        assert_eq!(name(TokenKeyRef::Label("../a b/c".into())), "_a_b_c.byok");
        assert_eq!(name(TokenKeyRef::Id(vec![0x4b, 0x01])), "key-4b01.byok");
    }
}
