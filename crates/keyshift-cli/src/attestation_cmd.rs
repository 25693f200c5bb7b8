//! `keyshift attestation ...`: the attestation authorities trusted for secure key release (the
//! twin of `keyshift federation`), and `keyshift attest --insecure-test-authority`, a local
//! authority that signs anything, for trying release without confidential hardware.

use crate::config::CommonArgs;
use crate::identity_cmd::{absolute, msg};
use crate::local_audit::Local;
use anyhow::{anyhow, Result};
use keyshift_server::test_authority::TestAuthority;
use keyshift_vault::records::JwksSource;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Attestation authority commands.
#[derive(Debug, clap::Subcommand)]
pub enum AttestationCommand {
    /// Trust an attestation authority (or change how it is trusted). Release policies name it
    /// in `authority`; its tokens' `iss` must match (one trailing `/` is ignored).
    Trust {
        /// Authority URL, e.g. https://sharedweu.weu.attest.azure.net
        issuer: String,
        /// JWKS file with the authority's token signing keys (re-read when it changes).
        #[arg(
            long,
            conflicts_with = "jwks_url",
            required_unless_present = "jwks_url"
        )]
        jwks_file: Option<PathBuf>,
        /// https:// URL of the authority's JWKS, fetched by the server.
        #[arg(long)]
        jwks_url: Option<String>,
        /// PEM file of CA certificates to trust for --jwks-url, besides the system roots.
        #[arg(long, requires = "jwks_url")]
        ca_file: Option<PathBuf>,
        /// Accepted signature algorithms, comma-separated (RS256, RS384, RS512, PS256, PS384,
        /// PS512, ES256, ES384, ES512).
        #[arg(long, value_delimiter = ',', default_value = "RS256,ES256")]
        algorithms: Vec<String>,
    },
    /// List the trusted attestation authorities.
    List,
    /// Stop trusting an attestation authority: releases it vouches for are refused at once.
    Remove {
        /// Authority URL.
        issuer: String,
    },
}

/// Runs an attestation command.
pub async fn run(common: &CommonArgs, cmd: AttestationCommand) -> Result<()> {
    let local = Local::open(common).await?;
    let d = &local.d;
    match cmd {
        AttestationCommand::Trust {
            issuer,
            jwks_file,
            jwks_url,
            ca_file,
            algorithms,
        } => {
            let source = match (jwks_file, jwks_url) {
                (Some(file), None) => {
                    keyshift_server::federation::check_jwks_file(&file).map_err(|e| anyhow!(e))?;
                    JwksSource::File {
                        path: absolute(&file)?,
                    }
                }
                (None, Some(url)) => JwksSource::Url {
                    url,
                    ca_file: ca_file.as_deref().map(absolute).transpose()?,
                },
                _ => return Err(anyhow!("give exactly one of --jwks-file and --jwks-url")),
            };
            let change = local.change("AttestationAuthorityTrust", "", None).await?;
            let trusted = d
                .trust_attestation_authority(&change.ctx, &issuer, source, &algorithms)
                .await;
            let record = change.finish(trusted).await?;
            println!("{}", serde_json::to_string_pretty(&record)?);
        }
        AttestationCommand::List => {
            println!(
                "{}",
                serde_json::to_string_pretty(&d.attestation_authorities().await.map_err(msg)?)?
            );
        }
        AttestationCommand::Remove { issuer } => {
            let change = local
                .change("AttestationAuthorityUntrust", "", None)
                .await?;
            let removed = d.untrust_attestation_authority(&change.ctx, &issuer).await;
            let removed = change.finish(removed).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "removed": removed }))?
            );
        }
    }
    Ok(())
}

/// `keyshift attest`: development tools for secure key release.
#[derive(Debug, clap::Args)]
pub struct AttestArgs {
    /// Run an INSECURE local attestation authority that signs any claims (required: there is no
    /// other mode; the flag is the acknowledgement).
    #[arg(long, required = true)]
    pub insecure_test_authority: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Directory to write jwks.json, ca.pem, token.jwt, claims.json and enclave-key.pem into.
    #[arg(long, default_value = "keyshift-test-authority")]
    pub out_dir: PathBuf,
    /// JSON file of extra claims merged into the minted token's claims.
    #[arg(long)]
    pub claims: Option<PathBuf>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = keyshift_api::b64::encode_standard(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// Runs the insecure test authority until interrupted.
pub async fn run_attest(args: &AttestArgs) -> Result<()> {
    if !args.insecure_test_authority {
        return Err(anyhow!("only --insecure-test-authority is available"));
    }
    let clock: Arc<dyn keyshift_vault::Clock> = Arc::new(keyshift_vault::SystemClock);
    let authority = TestAuthority::start(args.listen, clock).await?;
    let mut claims = authority.claims_for(authority.enclave());
    if let Some(file) = &args.claims {
        let extra: serde_json::Value = serde_json::from_slice(&std::fs::read(file)?)
            .map_err(|e| anyhow!("{}: not JSON: {e}", file.display()))?;
        let (Some(base), Some(extra)) = (claims.as_object_mut(), extra.as_object()) else {
            return Err(anyhow!("{}: claims must be a JSON object", file.display()));
        };
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    let token = authority.mint(&claims);
    let dir = &args.out_dir;
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("jwks.json"),
        serde_json::to_vec_pretty(&authority.jwks())?,
    )?;
    std::fs::write(dir.join("ca.pem"), authority.ca_pem.as_bytes())?;
    std::fs::write(dir.join("token.jwt"), token.as_bytes())?;
    std::fs::write(dir.join("claims.json"), serde_json::to_vec_pretty(&claims)?)?;
    write_private(
        &dir.join("enclave-key.pem"),
        pem("PRIVATE KEY", &authority.enclave().key.transfer_plaintext()).as_bytes(),
    )?;
    let dir = absolute(dir)?;
    eprintln!(
        "WARNING: this is an INSECURE test attestation authority: it attests nothing and signs any\n\
         claims. Trust it only in a deployment holding test keys, and remove it afterwards."
    );
    println!("issuer:       {}", authority.issuer());
    println!("jwks url:     {}  (CA: {dir}/ca.pem)", authority.jwks_url());
    println!("jwks file:    {dir}/jwks.json");
    println!(
        "token:        {dir}/token.jwt  (also GET {}/generate-test-token)",
        authority.issuer()
    );
    println!(
        "enclave key:  {dir}/enclave-key.pem  (kid {})",
        authority.enclave().kid
    );
    println!();
    println!(
        "Trust it:     keyshift attestation trust {} --jwks-file {dir}/jwks.json",
        authority.issuer()
    );
    println!("Policy:       {{\"anyOf\":[{{\"authority\":\"{}/\",\"allOf\":[{{\"claim\":\"sdk-test\",\"equals\":true}}]}}]}}", authority.issuer());
    println!("Running until interrupted (Ctrl-C).");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
