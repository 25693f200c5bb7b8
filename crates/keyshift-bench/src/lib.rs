//! Keyshift's benchmark: how fast a running server answers over HTTPS, beside how fast the same
//! primitives run in-process.
//!
//! [`raw`] times `keyshift-crypto`'s public API on a number of threads; [`load`] drives a running
//! server with N keep-alive HTTP/1.1 connections over TLS, one tokio task each, and reports
//! operations per second with p50 and p99 latency. Every response's status is checked and every
//! failure counted: a fast error is not an operation. The command and the figures are in
//! `docs/benchmarks.md`; nothing here is a timed assertion.

pub mod admin;
pub mod client;
pub mod cpu;
pub mod latency;
pub mod load;
pub mod migrate;
pub mod raw;

/// The API version every request names.
pub const API_VERSION: &str = "2025-07-01";
