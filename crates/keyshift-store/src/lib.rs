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

    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend_name(&self) -> &'static str;
}
