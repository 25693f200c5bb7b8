//! Key workload migration: a campaign moves everything protected by one key version to another
//! key (in the same vault, another vault, another server, or a managed HSM), in batches, under a
//! journal, so that it can be killed at any moment and resumed, verified, and proved by the audit
//! trail.
//!
//! - [`plan`]: the plan file a person reviews; [`engine::plan`] drafts one from the source key's
//!   role assignments and usage report.
//! - [`engine::apply`]: creates the target key, grants the roles, moves every source, restricts
//!   the old version to decrypt and unwrap; [`engine::status`], [`engine::verify`],
//!   [`engine::retire`].
//! - [`journal`]: what was done, in a SQLite file next to the plan.
//! - Sources: JSON-lines lists of wrapped keys ([`source::wrapped_keys`]), trees of envelope files
//!   ([`source::envelope_dir`]), 3-level keyrings ([`source::keyring`]).
//!
//! An item is switched only once its new form has been checked to open under the target, and
//! every source checks by inspection whether an item is already under the target before it does
//! anything to it: re-running a batch after a crash changes nothing that was already switched.

pub mod atomic;
pub mod engine;
pub mod journal;
pub mod plan;
pub mod progress;
pub mod rekey;
pub mod rewrap;
pub mod source;

pub use engine::{apply, plan as draft_plan, retire, status, verify, Report};
pub use plan::Plan;

/// Milliseconds since the Unix epoch, for the journal and reports.
pub(crate) fn now_ms() -> i64 {
    #[allow(clippy::disallowed_methods)] // wall-clock time of journal entries, for people
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
