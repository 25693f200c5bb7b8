//! Keyshift's storage layer.
//!
//! Backends see only opaque bytes under a namespace and a key: sealed records and the indexes the
//! vault needs. They never see plaintext key material and never do cryptography. The trait is
//! deliberately narrow (get, list by cursor, and an atomic batch of compare-and-set writes) so that
//! every backend can be proved equivalent by one [`conformance`] suite.

pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;

/// A stored value with its revision. Revisions start at 1 and grow by one on every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's key within its namespace.
    pub key: String,
    /// Opaque bytes (sealed by the vault where they carry secrets).
    pub value: Vec<u8>,
    /// Revision, for compare-and-set.
    pub revision: i64,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything, or nothing.
    Any,
    /// No record under the key.
    Absent,
    /// A record at exactly this revision.
    Revision(i64),
}

/// One operation of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `value` under `key`.
    Put {
        /// Namespace.
        ns: &'static str,
        /// Key.
        key: String,
        /// New value.
        value: Vec<u8>,
        /// Condition.
        expect: Expect,
    },
    /// Remove `key`.
    Delete {
        /// Namespace.
        ns: &'static str,
        /// Key.
        key: String,
        /// Condition.
        expect: Expect,
    },
    /// Write nothing, but fail the batch unless the condition holds.
    Check {
        /// Namespace.
        ns: &'static str,
        /// Key.
        key: String,
        /// Condition.
        expect: Expect,
    },
    /// Write nothing, but fail the batch if any record of `ns` has a key starting with
    /// `prefix` (as the batch's earlier ops left them). The conflict names the prefix as its key.
    /// Unlike a listing followed by a batch, no record can be added under the prefix between
    /// the look and the batch's writes.
    CheckEmpty {
        /// Namespace.
        ns: &'static str,
        /// Key prefix.
        prefix: String,
    },
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition of a batch did not hold; nothing was written.
    #[error("a concurrent change conflicts with this write ({ns}/{key})")]
    Conflict {
        /// Namespace of the failed condition.
        ns: String,
        /// Key of the failed condition.
        key: String,
    },
    /// The backend failed; the batch may be retried.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Result of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What [`Store::changes_since`] found: the records written or deleted by batches committed after
/// a position of the change feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The position to ask from next time (the last change returned, or the position asked from).
    pub next: i64,
    /// `(namespace, key)` of every record changed, once per batch that changed it (so a record
    /// may appear more than once), in no meaningful order within one answer. Namespaces left out with [`Store::exclude_from_change_feed`] never appear.
    pub changed: Vec<(String, String)>,
    /// The feed no longer holds every change after the position asked from (it was pruned): the
    /// reader must assume that anything may have changed. `next` is then the feed's head.
    pub truncated: bool,
}

/// Changes the feed keeps at least (older ones are pruned, a [`CHANGE_PRUNE_STEP`] at a time). A
/// reader further behind than this gets [`Changes::truncated`]. Small in this crate's tests, so
/// that pruning is exercised.
#[cfg(not(test))]
pub const CHANGES_KEPT: i64 = 100_000;
#[cfg(test)]
#[allow(missing_docs)]
pub const CHANGES_KEPT: i64 = 200;
/// How many changes are pruned at a time.
#[cfg(not(test))]
pub const CHANGE_PRUNE_STEP: i64 = 1_000;
#[cfg(test)]
#[allow(missing_docs)]
pub const CHANGE_PRUNE_STEP: i64 = 20;

/// Where pruning stands after the feed's next position became `next_seq`: the highest position
/// pruned (every change at or below it is gone), given the one before.
// Used by the backends only: unused when a crate takes the trait without one (keyshift-vault).
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn pruned_through(next_seq: i64, before: i64) -> i64 {
    let head = next_seq - 1;
    if head - before >= CHANGES_KEPT + CHANGE_PRUNE_STEP {
        head - CHANGES_KEPT
    } else {
        before
    }
}

/// The storage trait every backend implements.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The record under `ns`/`key`, if any.
    async fn get(&self, ns: &'static str, key: &str) -> Result<Option<Record>>;

    /// Records of `ns` whose key starts with `prefix` and sorts after `after`, in key order, at most `limit`.
    async fn list(
        &self,
        ns: &'static str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>>;

    /// Applies every op atomically and durably, or none of them. Returns after the batch is durable.
    async fn commit(&self, ops: Vec<Op>) -> Result<()>;

    /// The change feed's current position: [`Store::changes_since`] from it returns only later
    /// changes. Take it before reading what is to be kept up to date.
    async fn change_head(&self) -> Result<i64>;

    /// The records changed by batches committed after position `after` of the change feed (at
    /// most about `limit` of them; ask again from [`Changes::next`] for more). A batch's changes
    /// join the feed atomically with the batch, and a reader never sees a change at a position
    /// lower than one it has already been given: once `next` has passed a position, nothing new
    /// appears below it. Several processes sharing the store (nodes) each learn this way what the
    /// others changed. Backends may make a change visible to other processes' readers a little
    /// after its commit (PostgreSQL: until some node's next `changes_since` call).
    async fn changes_since(&self, after: i64, limit: usize) -> Result<Changes>;

    /// Leaves writes to these `(namespace, key prefix)` out of the change feed of this handle's
    /// commits (an empty prefix: the whole namespace): records written often that no process
    /// caches (audit events, audit chain heads). A process that omits this only costs the feed
    /// more rows.
    fn exclude_from_change_feed(&self, excluded: &[(&'static str, &'static str)]);

    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend_name(&self) -> &'static str;
}

/// The `(namespace, key prefix)` left out of a handle's change feed, shared by the backends.
#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct FeedFilter(std::sync::RwLock<Vec<(&'static str, &'static str)>>);

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl FeedFilter {
    pub(crate) fn exclude(&self, excluded: &[(&'static str, &'static str)]) {
        let mut list = self.0.write().unwrap_or_else(|p| p.into_inner());
        for e in excluded {
            if !list.contains(e) {
                list.push(*e);
            }
        }
    }

    /// The distinct `(ns, key)` that `ops` write or delete and that the feed records, in op order.
    pub(crate) fn fed<'a>(&self, ops: &'a [Op]) -> Vec<(&'static str, &'a str)> {
        let excluded = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<(&'static str, &'a str)> = Vec::new();
        for op in ops {
            let (ns, key) = match op {
                Op::Put { ns, key, .. } | Op::Delete { ns, key, .. } => (*ns, key.as_str()),
                Op::Check { .. } | Op::CheckEmpty { .. } => continue,
            };
            let unfed = excluded
                .iter()
                .any(|(n, prefix)| *n == ns && key.starts_with(prefix));
            if !unfed && seen.insert((ns, key)) {
                out.push((ns, key));
            }
        }
        out
    }
}
