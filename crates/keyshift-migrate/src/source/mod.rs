//! Where protected data lives, and how each kind of place is moved and verified.

pub mod envelope_dir;
pub mod keyring;
pub mod postgres;
pub mod wrapped_keys;

use crate::journal::Journal;
use crate::progress::Progress;
use crate::rewrap::Rewrapper;
use std::sync::Arc;

/// What a source pass needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Both keys and their clients.
    pub rewrapper: Arc<Rewrapper>,
    /// The campaign's journal.
    pub journal: Journal,
    /// Index of the source in the plan.
    pub index: usize,
    /// Items per request.
    pub batch_size: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Where progress goes.
    pub progress: Arc<Progress>,
}

/// Counts of a pass over a source (this run only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Items switched to the target.
    pub migrated: u64,
    /// Items already under the target.
    pub already: u64,
    /// Items that failed.
    pub failed: u64,
    /// Items under neither key, left alone.
    pub other: u64,
    /// Items another writer changed while the campaign worked on them, left as it wrote them
    /// (a database row; a later pass moves it if it is still under the source key).
    pub changed: u64,
    /// Bytes of the data protected by the migrated items.
    pub bytes: u64,
}

/// What `--dry-run` and `verify` count in a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Inventory {
    /// Items under the source key.
    pub under_source: u64,
    /// Items under the target key.
    pub under_target: u64,
    /// Items under another key, or not readable as items.
    pub other: u64,
    /// Bytes of data protected by the items under the source key.
    pub bytes: u64,
}

/// The result of verifying a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Items checked to open under the target.
    pub checked: u64,
    /// Items still under the source key.
    pub under_source: u64,
    /// Items that do not open, with the reason.
    pub broken: Vec<(String, String)>,
}
