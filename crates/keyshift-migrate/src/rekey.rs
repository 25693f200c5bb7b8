//! Rekeying protected documents: "remove protection and apply it again". Each envelope file is
//! decrypted with its current keys and encrypted with a new data key under the new KEK (2-level)
//! or under a new keyring (3-level), in place: the new file is checked to decrypt to the same
//! plaintext before it replaces the old one atomically. A file already under the new key is left
//! alone, so a rekey killed halfway is simply run again.

use crate::source::envelope_dir::{self, kind_of, Kind, Reencrypt};
use anyhow::{anyhow, Result};
use keyshift_envelope::{Kek, Keyring};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a rekey is to do.
#[derive(Debug)]
pub struct RekeyRequest {
    /// Files and directories (walked).
    pub paths: Vec<PathBuf>,
    /// The KEK client.
    pub kek: Arc<dyn Kek>,
    /// 2-level output: the new KEK's versioned kid.
    pub new_kid: Option<String>,
    /// 3-level output: the new keyring.
    pub new_keyring: Option<Keyring>,
    /// The keyring of 3-level inputs.
    pub old_keyring: Option<Keyring>,
    /// The files' context.
    pub context: Vec<u8>,
}

/// What a rekey did.
#[derive(Debug, Default, Serialize)]
pub struct RekeyOutcome {
    /// Files rekeyed.
    pub rekeyed: u64,
    /// Files already under the new key.
    pub already: u64,
    /// Plaintext bytes of the rekeyed files' ciphertext (file sizes).
    pub bytes: u64,
    /// Files that failed, with the reason; they are unchanged.
    pub failed: Vec<(String, String)>,
}

/// Rekeys every envelope file in `req.paths`, two at a time.
pub async fn rekey(req: RekeyRequest) -> Result<RekeyOutcome> {
    let new_master = match &req.new_keyring {
        Some(k) => Some(Arc::new(k.unwrap_master_key(req.kek.as_ref()).await?)),
        None => None,
    };
    let target_kid = match (&req.new_kid, &req.new_keyring) {
        (_, Some(k)) => k.kek_kid().to_owned(),
        (Some(kid), None) => kid.clone(),
        (None, None) => return Err(anyhow!("give the new KEK or the new keyring")),
    };
    let re = Reencrypt {
        kek: req.kek.clone(),
        old_keyring: req.old_keyring.clone(),
        new_keyring: req.new_keyring.clone(),
        new_master,
        context: req.context.clone(),
        master_keys: Default::default(),
    };
    let mut files = Vec::new();
    for p in &req.paths {
        if p.is_dir() {
            files.extend(envelope_dir::walk(p)?);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = RekeyOutcome::default();
    let mut inflight = std::collections::VecDeque::new();
    let mut queue = files.into_iter();
    loop {
        while inflight.len() < 2 {
            let Some(path) = queue.next() else { break };
            let re = re.clone();
            let kid = target_kid.clone();
            inflight.push_back(tokio::spawn(async move {
                let r = rekey_one(&path, &re, &kid).await;
                (path, r)
            }));
        }
        let Some(next) = inflight.pop_front() else {
            break;
        };
        let (path, r) = next.await?;
        match r {
            Ok(Some(size)) => {
                out.rekeyed += 1;
                out.bytes += size;
            }
            Ok(None) => out.already += 1,
            Err(e) => out
                .failed
                .push((path.display().to_string(), format!("{e:#}"))),
        }
    }
    Ok(out)
}

/// Rekeys one file; `None` when it is already under the new key.
async fn rekey_one(path: &Path, re: &Reencrypt, target_kid: &str) -> Result<Option<u64>> {
    let (kind, size) = kind_of(path)?;
    let header = match kind {
        Kind::NotEnvelope => return Err(anyhow!("not an envelope file")),
        Kind::TwoLevel(h) => {
            if re.new_keyring.is_none() && h.kek_kid() == Some(target_kid) {
                return Ok(None);
            }
            h
        }
        Kind::ThreeLevel(h) => {
            if re.new_keyring.as_ref().map(|k| k.master_key_id()) == h.master_key_id() {
                return Ok(None);
            }
            h
        }
    };
    envelope_dir::reencrypt_file(path, &header, re, target_kid).await?;
    Ok(Some(size))
}
