//! Keyshift's domain: vaults, keys and their versions, lifecycle (soft delete, purge, recover,
//! rotation), sealing of key material, backup and restore.
//!
//! Callers (the HTTP server, the CLI) hand in requests already decoded into wire types and a
//! [`RequestContext`]; this crate decides and answers with wire types or an [`ApiError`]. It has no
//! HTTP and no SQL: storage is a [`keyshift_store::Store`] and time is a [`Clock`].

pub mod clock;
mod deployment;
pub mod duration;
mod keys;
pub use keys::{random_bytes, KeyOperation};
mod naming;
pub mod records;
mod sealing;

pub use clock::{Clock, FakeClock, SystemClock};
pub use deployment::{Deployment, NewPrincipal, VaultSpec};
pub use keyshift_api::ApiError;
pub use records::{VaultKind, VaultRecord};

/// Result of vault calls: an error is always something the client can be told.
pub type Result<T> = std::result::Result<T, ApiError>;

/// Who asks, and through which URL: the kid of every answer is built from `base_url`, the vault URL
/// the client used, so that SDKs that parse the kid come back the same way.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// `https://host[:port]` as the client reached the vault, no trailing slash.
    pub base_url: String,
    /// The authenticated principal's object id.
    pub principal_id: String,
}
