//! Following the store's change feed, so that what other processes (other nodes on the same
//! PostgreSQL, the CLI) change reaches this process's caches within a fraction of a second.
//!
//! Each process caches unsealed key versions (`KeyCache`), each vault's role assignments and
//! custom roles (`AssignmentCache`), the vault list, the token signing keys and, in the server,
//! when it last checked each principal. Writes through this process invalidate what they touch at
//! once; [`Deployment::follow_changes`], run every [`CHANGE_FOLLOW_INTERVAL`] by a background task
//! ([`Deployment::follow_changes_every`]), does the same for writes by everyone else: it reads the
//! records changed since its last look ([`keyshift_store::Store::changes_since`]) and invalidates
//! or reloads what depends on them. Should the feed have been pruned past this process's position
//! (it stalled for a long time), everything is dropped and reloaded.

use crate::deployment::{store_error, Deployment, DEPLOYMENT_KEY};
use crate::records::ns;
use crate::Result;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often the background task looks at the change feed. A change made elsewhere is acted on
/// here within this interval plus one store round trip (PostgreSQL: plus, at worst, one more
/// interval of another node's, since positions are given by whichever node reads first).
pub const CHANGE_FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Changes read per call to the store.
const PAGE: usize = 1_000;

/// Records written on every request (or every audit batch) that no process caches, as
/// `(namespace, key prefix)`: left out of the feed. The audit chains' heads are in `meta` beside
/// records that are cached (the deployment's), hence the prefix.
pub(crate) const UNFED: &[(&str, &str)] = &[
    (ns::AUDIT, ""),
    (ns::AUDIT_PENDING, ""),
    (ns::KEY_USAGE, ""),
    (ns::META, crate::audit::HEAD_KEY),
];

/// What one look at the change feed found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FollowedChanges {
    /// Records changed since the previous look (by anyone, this process included).
    pub changes: usize,
    /// The feed had been pruned past this process's position: every cache was dropped.
    pub truncated: bool,
}

/// What a batch of changes asks of this process beyond invalidations.
#[derive(Default)]
struct Reloads {
    vaults: bool,
    deployment: bool,
}

impl Deployment {
    /// Reads the change feed from where the previous call stopped and invalidates (or reloads)
    /// every cached thing that depends on a changed record. The position moves on only once the
    /// reloads succeeded, so a failed call is simply made again.
    pub async fn follow_changes(&self) -> Result<FollowedChanges> {
        let mut cursor = self.change_cursor.lock().await;
        let mut next = *cursor;
        let mut found = FollowedChanges::default();
        let mut reloads = Reloads::default();
        loop {
            let page = self
                .store
                .changes_since(next, PAGE)
                .await
                .map_err(store_error)?;
            if page.truncated {
                tracing::warn!(
                    "the change feed was pruned past this process's position: every cache is \
                     dropped"
                );
                self.cache.clear();
                self.assignments.clear();
                self.principal_changes.fetch_add(1, Ordering::SeqCst);
                reloads = Reloads {
                    vaults: true,
                    deployment: true,
                };
                found.truncated = true;
                next = page.next;
                break;
            }
            for (namespace, key) in &page.changed {
                self.invalidate_for(namespace, key, &mut reloads);
            }
            found.changes += page.changed.len();
            next = page.next;
            if page.changed.len() < PAGE {
                break;
            }
        }
        if reloads.vaults {
            self.refresh_vaults().await?;
        }
        if reloads.deployment {
            self.reload_token_keys().await?;
        }
        *cursor = next;
        Ok(found)
    }

    fn invalidate_for(&self, namespace: &str, key: &str, reloads: &mut Reloads) {
        match namespace {
            // `<vault id>/<name>`
            ns::KEY | ns::DELETED_KEY => self.cache.invalidate(key),
            // `<vault id>/<name>/<version>`: the key's entries, its latest pointer included.
            ns::KEY_VERSION => {
                if let Some((key_key, _)) = key.rsplit_once('/') {
                    self.cache.invalidate(key_key);
                }
            }
            // `<vault id>/<assignment name or role guid>`
            ns::ROLE_ASSIGNMENT | ns::ROLE_DEFINITION => {
                if let Some((vault_id, _)) = key.split_once('/') {
                    self.assignments.invalidate(vault_id);
                }
            }
            ns::VAULT => reloads.vaults = true,
            ns::META if key == DEPLOYMENT_KEY => reloads.deployment = true,
            ns::PRINCIPAL => {
                self.principal_changes.fetch_add(1, Ordering::SeqCst);
            }
            // Security domains never change once written; issuers and attestation authorities
            // are read from the store when used; the rest is not cached.
            _ => {}
        }
    }

    /// Runs [`Deployment::follow_changes`] every `every` until the deployment is dropped.
    pub fn follow_changes_every(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let deployment = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(deployment) = deployment.upgrade() else {
                    return;
                };
                if let Err(e) = deployment.follow_changes().await {
                    tracing::warn!(error = %e.message, "could not read the change feed");
                }
            }
        })
    }

    /// Counts changes to principals seen so far (made here or followed from elsewhere). A check of
    /// a principal made when this returned another value is stale.
    pub fn principal_changes(&self) -> u64 {
        self.principal_changes.load(Ordering::SeqCst)
    }
}
