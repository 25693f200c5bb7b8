//! Counters of this process's vault work, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Store failures other than conflicts (which are retried or answered 409), process-wide: they
/// are counted where they are turned into API errors, which has no deployment at hand.
static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Store write conflicts (concurrent changes; retried, or answered 409).
static STORE_CONFLICTS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_store_error(conflict: bool) {
    let counter = if conflict {
        &STORE_CONFLICTS
    } else {
        &STORE_ERRORS
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Key cache lookups of one deployment.
#[derive(Debug, Default)]
pub(crate) struct CacheCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultStats {
    /// Crypto operations that found their key version unsealed in memory.
    pub key_cache_hits: u64,
    /// Those that read and unsealed it (or opened it in the HSM) first.
    pub key_cache_misses: u64,
    /// Key versions held unsealed in memory now.
    pub key_cache_entries: u64,
    /// Store failures (not conflicts) since the process started.
    pub store_errors: u64,
    /// Store write conflicts since the process started.
    pub store_conflicts: u64,
    /// Whether an HSM is attached.
    pub hsm_attached: bool,
}

impl crate::Deployment {
    /// This process's counters.
    pub fn stats(&self) -> VaultStats {
        VaultStats {
            key_cache_hits: self.cache_counters.hits.load(Ordering::Relaxed),
            key_cache_misses: self.cache_counters.misses.load(Ordering::Relaxed),
            key_cache_entries: self.cache.len() as u64,
            store_errors: STORE_ERRORS.load(Ordering::Relaxed),
            store_conflicts: STORE_CONFLICTS.load(Ordering::Relaxed),
            hsm_attached: self.hsm().is_some(),
        }
    }
}
