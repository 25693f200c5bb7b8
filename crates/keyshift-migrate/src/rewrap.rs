//! Talking to the vaults: clients from credential files, a request-rate limit, and batches of
//! wrapped keys moved with the server-side rewrap and checked under the target.

use anyhow::{anyhow, Context, Result};
use keyshift_api::keys::{RewrapItem, RewrapMode, RewrapParameters};
use keyshift_client::{parse_kid, AdminJson, KeyClient, Kid};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A client for the vault whose credentials are in `path` (`admin.json` shape).
pub fn client_from(path: &Path) -> Result<KeyClient> {
    let admin = AdminJson::read(path).map_err(|e| anyhow!("{e}"))?;
    Ok(KeyClient::builder()
        .credential(Arc::new(admin.credential()?))
        .ca_pem(Some(&admin.ca_pem()?))
        .retries(8)
        .build()?)
}

/// Spaces requests to at most `per_second` (0: no limit).
#[derive(Debug)]
pub struct Limiter {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Limiter {
    /// A limiter of `per_second` requests per second.
    pub fn new(per_second: f64) -> Limiter {
        let interval = (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second));
        Limiter {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Whether `kid` names the key version `want` (same vault, name and version; host and name
/// compared as the service does, without regard to case).
pub fn same_version(kid: &str, want: &Kid) -> bool {
    match parse_kid(kid) {
        Ok(k) => {
            k.vault_url
                .as_str()
                .eq_ignore_ascii_case(want.vault_url.as_str())
                && k.name.eq_ignore_ascii_case(&want.name)
                && k.version.as_deref().map(str::to_ascii_lowercase)
                    == want.version.as_deref().map(str::to_ascii_lowercase)
        }
        Err(_) => false,
    }
}

/// The campaign's view of both keys.
#[derive(Debug)]
pub struct Rewrapper {
    /// Client of the source vault.
    pub source_client: KeyClient,
    /// Client of the target vault.
    pub target_client: KeyClient,
    /// The source key version.
    pub source: Kid,
    /// The target key version.
    pub target: Kid,
    /// The wrap algorithm under the target.
    pub target_alg: String,
    /// Request spacing, for both vaults.
    pub limiter: Limiter,
}

/// What a batch of items became.
#[derive(Debug, Default)]
pub struct Rewrapped {
    /// Per item, in order: the new wrapped bytes, or why the item failed.
    pub items: Vec<std::result::Result<Vec<u8>, String>>,
    /// The audit event ids of the requests (rewrap, then check).
    pub events: Vec<String>,
}

impl Rewrapper {
    /// Moves wrapped keys (each with the algorithm it was wrapped with under the source) to the
    /// target with the server-side rewrap, then checks every new form by rewrapping it from the
    /// target to itself (which unwraps it under the target): an item comes back `Ok` only if it
    /// opens under the target. At most [`crate::plan::MAX_BATCH`] items.
    pub async fn rewrap(&self, items: &[(String, Vec<u8>)]) -> Result<Rewrapped> {
        let mut out = Rewrapped {
            items: vec![Err(String::new()); items.len()],
            events: Vec::new(),
        };
        // One request per source algorithm (almost always one).
        let mut algs: Vec<&str> = items.iter().map(|(a, _)| a.as_str()).collect();
        algs.sort_unstable();
        algs.dedup();
        for alg in algs {
            let index: Vec<usize> = (0..items.len()).filter(|&i| items[i].0 == alg).collect();
            let moved = self
                .call(
                    &self.source_client,
                    &self.source,
                    alg,
                    index.iter().map(|&i| items[i].1.clone()).collect(),
                    &mut out.events,
                )
                .await
                .context("rewrap to the target")?;
            let mut ok_index = Vec::new();
            let mut ok_values = Vec::new();
            for (&i, result) in index.iter().zip(moved) {
                match result {
                    Ok(value) => {
                        ok_index.push(i);
                        ok_values.push(value);
                    }
                    Err(reason) => out.items[i] = Err(reason),
                }
            }
            if ok_values.is_empty() {
                continue;
            }
            let checked = self
                .call(
                    &self.target_client,
                    &self.target,
                    &self.target_alg,
                    ok_values.clone(),
                    &mut out.events,
                )
                .await
                .context("check under the target")?;
            for ((i, value), check) in ok_index.into_iter().zip(ok_values).zip(checked) {
                out.items[i] = match check {
                    Ok(_) => Ok(value),
                    Err(reason) => Err(format!(
                        "the new form does not open under the target: {reason}"
                    )),
                };
            }
        }
        Ok(out)
    }

    /// Checks that wrapped keys open under the target (rewrap target to target).
    pub async fn check(
        &self,
        values: Vec<Vec<u8>>,
    ) -> Result<(Vec<std::result::Result<(), String>>, Vec<String>)> {
        let mut events = Vec::new();
        let result = self
            .call(
                &self.target_client,
                &self.target,
                &self.target_alg,
                values,
                &mut events,
            )
            .await?;
        Ok((result.into_iter().map(|r| r.map(|_| ())).collect(), events))
    }

    async fn call(
        &self,
        client: &KeyClient,
        from: &Kid,
        alg: &str,
        values: Vec<Vec<u8>>,
        events: &mut Vec<String>,
    ) -> Result<Vec<std::result::Result<Vec<u8>, String>>> {
        let count = values.len();
        let parameters = RewrapParameters {
            target: self.target.to_string(),
            mode: RewrapMode::Wrapped,
            source_alg: alg.to_owned(),
            target_alg: self.target_alg.clone(),
            items: values
                .into_iter()
                .map(|value| RewrapItem {
                    kid: None,
                    value,
                    iv: None,
                    tag: None,
                    aad: None,
                })
                .collect(),
        };
        self.limiter.wait().await;
        let (result, event) = client.rewrap(from, &parameters).await?;
        events.extend(event);
        if result.items.len() != count {
            return Err(anyhow!(
                "the rewrap answer has {} items for {count} sent",
                result.items.len()
            ));
        }
        Ok(result
            .items
            .into_iter()
            .map(|item| match (item.value, item.error) {
                (Some(v), None) => Ok(v),
                (_, Some(e)) => Err(format!("{}: {}", e.code, e.message)),
                (None, None) => Err("the answer has neither a value nor an error".into()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_requests_and_zero_means_no_limit() {
        let limiter = Limiter::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..21 {
            limiter.wait().await;
        }
        // The first goes at once, then one every 100 ms.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let free = Limiter::new(0.0);
        let start = tokio::time::Instant::now();
        for _ in 0..1000 {
            free.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn versions_compare_like_the_service() {
        let want =
            parse_kid("https://Vault.example:8443/keys/Key/ABCDEF0123456789abcdef0123456789")
                .unwrap();
        assert!(same_version(
            "https://vault.example:8443/keys/key/abcdef0123456789abcdef0123456789",
            &want
        ));
        assert!(!same_version(
            "https://vault.example:8443/keys/key/bbcdef0123456789abcdef0123456789",
            &want
        ));
        assert!(!same_version("https://vault.example:8443/keys/key", &want));
        assert!(!same_version(
            "https://other.example:8443/keys/key/abcdef0123456789abcdef0123456789",
            &want
        ));
        assert!(!same_version("not a kid", &want));
    }
}
