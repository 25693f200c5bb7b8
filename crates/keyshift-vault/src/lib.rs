//! Keyshift's domain: vaults, keys and their versions, lifecycle (soft delete, purge, recover,
//! rotation), sealing of key material, backup and restore.
//!
//! Callers (the HTTP server, the CLI) hand in requests already decoded into wire types and a
//! [`RequestContext`]; this crate decides and answers with wire types or an [`ApiError`]. It has no
//! HTTP and no SQL: storage is a [`keyshift_store::Store`] and time is a [`Clock`].

pub mod access;
mod attestation;
pub mod audit;
pub mod backup;
pub mod byok;
mod changes;
pub use changes::{FollowedChanges, CHANGE_FOLLOW_INTERVAL};
pub mod clock;
mod deployment;
pub mod duration;
pub mod federation;
mod hsm;
mod keys;
pub use keys::KeyOperation;
mod naming;
pub mod rbac;
pub mod records;
pub mod release;
pub mod release_policy;
pub mod root;
mod sealing;
mod stats;

pub use clock::{Clock, FakeClock, SystemClock};
pub use deployment::{Deployment, NewPrincipal, VaultSpec};
pub use keyshift_api::ApiError;
pub use naming::printable;
pub use records::{VaultKind, VaultRecord};
pub use root::RootKey;
pub use stats::VaultStats;

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
    system: bool,
    trace: Option<std::sync::Arc<audit::Trace>>,
}

impl RequestContext {
    /// A request of an authenticated principal: subject to role-based access.
    pub fn principal(base_url: impl Into<String>, principal_id: impl Into<String>) -> Self {
        RequestContext {
            base_url: base_url.into(),
            principal_id: principal_id.into(),
            system: false,
            trace: None,
        }
    }

    /// Keyshift's own work (scheduled rotation and purge, and the CLI acting on the data
    /// directory it owns): not subject to role-based access. Never built from a network request.
    pub fn system(base_url: impl Into<String>) -> Self {
        RequestContext {
            base_url: base_url.into(),
            principal_id: "keyshift-system".into(),
            system: true,
            trace: None,
        }
    }

    /// Keyshift's own work outside any request (the CLI on its data directory, start-up,
    /// tests): as [`RequestContext::system`], with no vault URL.
    pub fn local() -> Self {
        Self::system("")
    }

    /// Whether this is Keyshift's own work.
    pub fn is_system(&self) -> bool {
        self.system
    }
}
