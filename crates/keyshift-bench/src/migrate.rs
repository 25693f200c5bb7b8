//! Inputs and the anchor of the migration benchmark (`scripts/bench-migrate.sh`): a JSON-lines
//! list of data keys wrapped locally with A256KW under a known key (imported into the vault as
//! the campaign's source), and the naive path the campaign is compared with: one unwrapkey and
//! one wrapkey request per item.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keyshift_client::{parse_kid, AdminJson, KeyClient};
use keyshift_crypto::{EncryptionAlgorithm, JwkParts, KeyFamily, KeyMaterial};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The data key of item `i`: reproducible, so that a sample can be checked after the campaign.
pub fn data_key(i: u64) -> [u8; 32] {
    keyshift_crypto::digest::sha256(&i.to_be_bytes())
}

/// Writes `count` lines `{"id", "kid", "alg": "A256KW", "wrapped_key"}` wrapped under `k`.
pub fn generate(k: &[u8], kid: &str, count: u64, out: &Path) -> Result<()> {
    let mut parts = JwkParts::default();
    parts.family = Some(KeyFamily::Oct);
    parts.k = Some(k.to_vec());
    let key = KeyMaterial::from_jwk(&parts).map_err(|e| anyhow!("{e}"))?;
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    for i in 0..count {
        let wrapped = key
            .wrap_key(EncryptionAlgorithm::A256Kw, &data_key(i))
            .map_err(|e| anyhow!("{e}"))?;
        writeln!(
            w,
            r#"{{"id":"k{i}","kid":"{kid}","alg":"A256KW","wrapped_key":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(wrapped)
        )?;
    }
    w.flush()?;
    Ok(())
}

fn client(admin: &Path) -> Result<KeyClient> {
    let admin = AdminJson::read(admin).map_err(|e| anyhow!("{e}"))?;
    Ok(KeyClient::builder()
        .credential(Arc::new(admin.credential()?))
        .ca_pem(Some(&admin.ca_pem()?))
        .build()?)
}

/// The naive path over the first `count` lines of `file`: per item one unwrapkey under the
/// source and one wrapkey under `target`, `concurrency` items in flight. Returns items per second.
pub async fn naive(
    admin: &Path,
    file: &Path,
    target: &str,
    count: usize,
    concurrency: usize,
) -> Result<f64> {
    let client = client(admin)?;
    let target = parse_kid(target)?;
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let mut items = Vec::with_capacity(count);
    for line in reader.lines().take(count) {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let kid = v["kid"].as_str().context("kid")?.to_owned();
        let wrapped = URL_SAFE_NO_PAD.decode(v["wrapped_key"].as_str().context("wrapped_key")?)?;
        items.push((kid, wrapped));
    }
    let items = Arc::new(items);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, items, next, target) =
            (client.clone(), items.clone(), next.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((kid, wrapped)) = items.get(i) else {
                    return anyhow::Ok(());
                };
                let source = parse_kid(kid)?;
                let plain = client.unwrap_key(&source, "A256KW", wrapped).await?;
                client.wrap_key(&target, "A256KW", &plain.value).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if items.is_empty() {
        bail!("no items in {}", file.display());
    }
    Ok(items.len() as f64 / elapsed)
}
