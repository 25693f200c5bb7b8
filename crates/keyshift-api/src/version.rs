//! The api-version values Keyshift accepts. All share one superset wire shape: clients ignore
//! members they do not know.

/// Every accepted `api-version`.
pub const SUPPORTED: &[&str] = &[
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "7.6-preview.2",
    "2025-06-01-preview",
    "2025-07-01",
    "2026-03-01-preview",
];

/// The version Keyshift documents and writes into `nextLink`s it builds.
pub const LATEST: &str = "2025-07-01";

/// Whether `value` is an accepted api-version.
pub fn is_supported(value: &str) -> bool {
    SUPPORTED.contains(&value)
}
