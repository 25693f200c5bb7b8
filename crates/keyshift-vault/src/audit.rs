//! The audit log: one event per request that reaches a vault, allowed or refused.
//!
//! Events are append-only and hash-chained: each carries the SHA-256 of its predecessor (`prev`)
//! and its own hash over its content (`hash`), so a modified, removed or reordered event breaks the
//! chain. The chain's head (next sequence number, last hash) is kept beside the events under an
//! HMAC whose key is sealed by the root key, so cutting events off the end breaks it too.
//!
//! Durability is group commit: one writer task appends the events of all requests that arrived
//! while the previous batch was being written in one store transaction (one fsync), and each
//! response waits for its batch. A request that changes the store also writes a *pending* copy
//! of its event in the same transaction as the change (`Deployment::commit_as`): should the
//! process die between that change and the event, the pending copy is chained at the next start
//! with status 0. So no acknowledged operation is without its event, and no committed change is.
//!
//! The same batch updates the key usage counters ([`UsageRecord`]): per key version, principal
//! and operation, how often and when first and last.

use crate::deployment::{from_json, store_error, to_json};
use crate::records::{ns, VaultRecord};
use crate::{Deployment, RequestContext, Result};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_crypto::digest::{hmac_sha256, hmac_sha256_verify, sha256};
use keyshift_store::{Expect, Op, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

/// Store key (in `meta`) of the chain head.
const HEAD_KEY: &str = "audit_head";
/// Store key (in `meta`) of the sealed HMAC key of the head.
const MAC_KEY: &str = "audit_mac_key";
const MAC_KEY_AAD: &[u8] = b"keyshift audit head mac key v1";
const HEAD_MAC_DOMAIN: &[u8] = b"keyshift audit head v1";
const EVENT_HASH_DOMAIN: &[u8] = b"keyshift audit event v1\n";
/// Events in one transaction: a batch stops taking requests once it holds this many (one
/// request's events are never split, and a rewrap request has up to 2,001).
const MAX_BATCH: usize = 4096;
/// Requests waiting for the writer before new ones wait for room.
const QUEUE: usize = 65_536;
/// Runs of one append before its requests are answered `503`: several nodes share one chain.
const APPEND_ATTEMPTS: u32 = 16;
/// Usage counters kept in memory by the writer before it starts over.
const USAGE_CACHE: usize = 100_000;
/// Status of an event chained at start-up from a pending copy: the change was committed, the
/// answer may never have reached the client.
pub const STATUS_INTERRUPTED: u16 = 0;

/// One audited request. Field order is the hashed and exported order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, from 0, without gaps.
    pub seq: u64,
    /// When the request arrived: RFC 3339, UTC, milliseconds (fixed width, so it sorts).
    pub time: String,
    /// The id Keyshift gave the request (`x-ms-request-id`).
    pub request_id: String,
    /// The client's `x-ms-client-request-id`, if it sent a well-formed one.
    pub client_request_id: Option<String>,
    /// The caller's principal object id; `None` when it had no valid token.
    pub principal: Option<String>,
    /// The client's address.
    pub client: String,
    /// The vault's name.
    pub vault: String,
    /// What was asked, e.g. `wrapKey`, `createKey`, `roleAssignments/write`; `unauthenticated`
    /// for a request refused before routing.
    pub operation: String,
    /// The key's name, when the request names one.
    pub key: Option<String>,
    /// The key version used: the one named, or the one a crypto operation resolved to.
    pub version: Option<String>,
    /// HTTP status of the answer; 0 for a change whose answer is unknown (see the module).
    pub status: u16,
    /// Time from arrival to the answer, microseconds.
    pub latency_us: u64,
    /// `hash` of the previous event, hex; 64 zeros for the first.
    pub prev: String,
    /// SHA-256 over a domain string and this event serialized with `hash` empty, hex.
    pub hash: String,
}

impl AuditEvent {
    /// A new event of `operation` on `vault`, arriving at `time_ms`, not yet answered.
    pub fn draft(
        time_ms: i64,
        request_id: impl Into<String>,
        client: impl Into<String>,
        vault: impl Into<String>,
        operation: impl Into<String>,
    ) -> Self {
        AuditEvent {
            seq: 0,
            time: format_millis(time_ms),
            request_id: request_id.into(),
            client_request_id: None,
            principal: None,
            client: client.into(),
            vault: vault.into(),
            operation: operation.into(),
            key: None,
            version: None,
            status: STATUS_INTERRUPTED,
            latency_us: 0,
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// The event as stored and hashed: a JSON array of its fields in order, without `prev` and
    /// `hash`.
    pub fn canonical(&self) -> Vec<u8> {
        // Serializing strings and integers cannot fail.
        serde_json::to_vec(&(
            self.seq,
            &self.time,
            &self.request_id,
            &self.client_request_id,
            &self.principal,
            &self.client,
            &self.vault,
            &self.operation,
            &self.key,
            &self.version,
            self.status,
            self.latency_us,
        ))
        .unwrap_or_default()
    }

    /// The event's chain hash after `prev`: SHA-256 over the domain string, `prev`'s 32 bytes
    /// and [`AuditEvent::canonical`].
    pub fn chain_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        chain_hash(prev, &self.canonical())
    }
}

fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(EVENT_HASH_DOMAIN.len() + 32 + canonical.len());
    input.extend_from_slice(EVENT_HASH_DOMAIN);
    input.extend_from_slice(prev);
    input.extend_from_slice(canonical);
    sha256(&input)
}

type Canonical = (
    u64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    u16,
    u64,
);

/// Magic of a stored block, format 1.
const BLOCK_MAGIC: &[u8; 4] = b"KSA1";
/// Largest inflated block accepted (a block holds at most [`MAX_BATCH`] events).
const MAX_BLOCK_BYTES: usize = 64 << 20;

/// One committed batch as stored: `KSA1`, the first event's sequence number (8 bytes, big
/// endian), the event count (4), the chain hash before the block (32) and after its last event
/// (32), then the events' canonical forms as one JSON array, raw-deflate compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Sequence number of the first event.
    pub first_seq: u64,
    /// Chain hash before the first event.
    pub prev: [u8; 32],
    /// Chain hash after the last event, as written.
    pub last: [u8; 32],
    /// The events, with `prev` and `hash` recomputed from `prev` and their content.
    pub events: Vec<AuditEvent>,
}

impl Block {
    /// Encodes a block (for tests and tools that need to write one).
    pub fn encode(&self) -> Vec<u8> {
        let canonical: Vec<Vec<u8>> = self.events.iter().map(AuditEvent::canonical).collect();
        encode_block(self.first_seq, &self.prev, &self.last, &canonical)
    }

    /// Decodes a stored block, refusing anything malformed.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Block, String> {
        let header = 4 + 8 + 4 + 32 + 32;
        if bytes.len() < header || &bytes[..4] != BLOCK_MAGIC {
            return Err("not an audit block".into());
        }
        let take = |at: usize, n: usize| &bytes[at..at + n];
        let first_seq = u64::from_be_bytes(take(4, 8).try_into().map_err(|_| "header")?);
        let count = u32::from_be_bytes(take(12, 4).try_into().map_err(|_| "header")?) as usize;
        let prev: [u8; 32] = take(16, 32).try_into().map_err(|_| "header")?;
        let last: [u8; 32] = take(48, 32).try_into().map_err(|_| "header")?;
        let json =
            miniz_oxide::inflate::decompress_to_vec_with_limit(&bytes[header..], MAX_BLOCK_BYTES)
                .map_err(|_| "the events do not inflate".to_owned())?;
        let tuples: Vec<Canonical> =
            serde_json::from_slice(&json).map_err(|e| format!("the events do not parse: {e}"))?;
        if tuples.len() != count {
            return Err(format!(
                "the header says {count} events, the block holds {}",
                tuples.len()
            ));
        }
        let mut chain = prev;
        let mut events = Vec::with_capacity(count);
        for t in tuples {
            let mut e = AuditEvent {
                seq: t.0,
                time: t.1,
                request_id: t.2,
                client_request_id: t.3,
                principal: t.4,
                client: t.5,
                vault: t.6,
                operation: t.7,
                key: t.8,
                version: t.9,
                status: t.10,
                latency_us: t.11,
                prev: hex(&chain),
                hash: String::new(),
            };
            chain = e.chain_hash(&chain);
            e.hash = hex(&chain);
            events.push(e);
        }
        Ok(Block {
            first_seq,
            prev,
            last,
            events,
        })
    }
}

fn encode_block(
    first_seq: u64,
    prev: &[u8; 32],
    last: &[u8; 32],
    canonical: &[Vec<u8>],
) -> Vec<u8> {
    let mut json = Vec::with_capacity(canonical.iter().map(|c| c.len() + 1).sum::<usize>() + 2);
    json.push(b'[');
    for (i, c) in canonical.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(c);
    }
    json.push(b']');
    let mut out = Vec::with_capacity(80 + json.len() / 4);
    out.extend_from_slice(BLOCK_MAGIC);
    out.extend_from_slice(&first_seq.to_be_bytes());
    out.extend_from_slice(&(canonical.len() as u32).to_be_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(last);
    out.extend(miniz_oxide::deflate::compress_to_vec(&json, 1));
    out
}

#[derive(Debug, Serialize, Deserialize)]
struct AuditHead {
    next_seq: u64,
    last_hash: String,
    mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SealedMacKey {
    #[serde(with = "keyshift_api::b64::bytes")]
    sealed: Vec<u8>,
}

/// A pending copy of an event, written with the change it describes.
#[derive(Debug, Serialize, Deserialize)]
struct PendingEvent {
    vault_id: String,
    event: AuditEvent,
}

/// How often one principal used one key version for one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The principal's object id.
    pub principal: String,
    /// The operation, as in audit events.
    pub operation: String,
    /// Successful uses.
    pub count: u64,
    /// First use (RFC 3339).
    pub first: String,
    /// Last use (RFC 3339).
    pub last: String,
    /// The key's name.
    pub key: String,
    /// The version.
    pub version: String,
}

/// One request's audit trail while it runs: the event so far, and what the vault learnt.
#[derive(Debug)]
pub struct Trace {
    vault_id: String,
    draft: AuditEvent,
    marked: AtomicBool,
    used: OnceLock<(String, String, bool)>,
    children: std::sync::Mutex<Vec<Child>>,
}

/// An event of one item a request processed (a rewrap's unwrap under the source key and wrap
/// under the target), chained right after the request's own event.
#[derive(Debug, Clone)]
struct Child {
    vault_id: String,
    vault: String,
    operation: &'static str,
    key: String,
    version: String,
    status: u16,
}

impl Trace {
    /// The request's operation, as its audit event names it (`KeyWrap`, `KeyCreate`, ...).
    pub fn operation(&self) -> &str {
        &self.draft.operation
    }

    /// A trace of a request to `vault` described by `draft` (its `seq`, `status`, `latency_us`,
    /// `prev` and `hash` are filled in later).
    pub fn new(vault: &VaultRecord, draft: AuditEvent) -> Self {
        Trace {
            vault_id: vault.id.clone(),
            draft,
            marked: AtomicBool::new(false),
            used: OnceLock::new(),
            children: Default::default(),
        }
    }

    /// The event as far as it is known.
    pub fn draft(&self) -> &AuditEvent {
        &self.draft
    }

    /// Adds the pending copy of the event to a batch that changes the store.
    pub(crate) fn mark(&self, ops: &mut Vec<Op>) -> Result<()> {
        let pending = PendingEvent {
            vault_id: self.vault_id.clone(),
            event: self.draft.clone(),
        };
        ops.push(Op::Put {
            ns: ns::AUDIT_PENDING,
            key: self.draft.request_id.clone(),
            value: to_json(&pending)?,
            expect: Expect::Any,
        });
        self.marked.store(true, Ordering::Release);
        Ok(())
    }

    pub(crate) fn note_use(&self, key: &str, version: &str) {
        let _ = self.used.set((key.to_owned(), version.to_owned(), true));
    }

    pub(crate) fn note_version(&self, key: &str, version: &str) {
        let _ = self.used.set((key.to_owned(), version.to_owned(), false));
    }

    pub(crate) fn note_item(
        &self,
        vault: &VaultRecord,
        operation: &'static str,
        key: &str,
        version: &str,
        status: u16,
    ) {
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Child {
                vault_id: vault.id.clone(),
                vault: vault.name.clone(),
                operation,
                key: key.to_owned(),
                version: version.to_owned(),
                status,
            });
    }

    /// The key name and version the request resolved to or made, and whether it was a use of
    /// that version (a crypto operation or a read) rather than its making.
    pub fn used(&self) -> Option<&(String, String, bool)> {
        self.used.get()
    }
}

impl Deployment {
    /// Commits a request's change together with the pending copy of its audit event (see the
    /// module), so that no committed change can lack its event.
    pub(crate) async fn commit_as(
        &self,
        ctx: &RequestContext,
        mut ops: Vec<Op>,
    ) -> std::result::Result<(), StoreError> {
        ctx.mark(&mut ops)
            .map_err(|e| StoreError::Backend(format!("audit event: {}", e.message)))?;
        self.store.commit(ops).await
    }
}

impl RequestContext {
    /// This context, with its request traced for the audit log.
    pub fn with_trace(mut self, trace: Arc<Trace>) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Adds the audit event's pending copy to a batch that changes the store (no-op for
    /// untraced contexts: the CLI, maintenance).
    pub(crate) fn mark(&self, ops: &mut Vec<Op>) -> Result<()> {
        match &self.trace {
            Some(t) => t.mark(ops),
            None => Ok(()),
        }
    }

    pub(crate) fn note_use(&self, key: &str, version: &str) {
        if let Some(t) = &self.trace {
            t.note_use(key, version);
        }
    }

    /// Records the version a request made (create, import, rotate), which is not a use of it.
    pub(crate) fn note_version(&self, key: &str, version: &str) {
        if let Some(t) = &self.trace {
            t.note_version(key, version);
        }
    }

    /// Records one item of a batch request as an event of its own (`status` 200 if it was
    /// done, else the status its error has), which counts as a use of `key`/`version` if done.
    pub(crate) fn note_item(
        &self,
        vault: &VaultRecord,
        operation: &'static str,
        key: &str,
        version: &str,
        status: u16,
    ) {
        if let Some(t) = &self.trace {
            t.note_item(vault, operation, key, version, status);
        }
    }
}

/// Filters of [`Deployment::audit_events`]; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events at or after this time (RFC 3339, as [`format_millis`] writes it).
    pub since: Option<String>,
    /// Events before this time.
    pub until: Option<String>,
    /// The principal's object id.
    pub principal: Option<String>,
    /// The vault's name (case-insensitive).
    pub vault: Option<String>,
    /// The key's name (case-insensitive).
    pub key: Option<String>,
    /// The operation (case-insensitive).
    pub operation: Option<String>,
    /// `success` (2xx), `failure` (anything else), or one status code.
    pub result: Option<String>,
}

impl AuditFilter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| match want {
            None => true,
            Some(w) => have.is_some_and(|h| h.eq_ignore_ascii_case(w)),
        };
        self.since.as_deref().is_none_or(|s| e.time.as_str() >= s)
            && self.until.as_deref().is_none_or(|u| e.time.as_str() < u)
            && eq(&self.principal, e.principal.as_deref())
            && eq(&self.vault, Some(&e.vault))
            && eq(&self.key, e.key.as_deref())
            && eq(&self.operation, Some(&e.operation))
            && match self.result.as_deref() {
                None => true,
                Some("success") => (200..300).contains(&e.status),
                Some("failure") => !(200..300).contains(&e.status),
                Some(code) => code.parse::<u16>().is_ok_and(|c| c == e.status),
            }
    }
}

/// What [`Deployment::verify_audit`] found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditVerification {
    /// Events read.
    pub events: u64,
    /// Whether the chain and its head hold.
    pub intact: bool,
    /// The first break found, if any.
    pub problem: Option<String>,
}

/// Usage of one key version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionUsage {
    /// The version's key identifier.
    pub kid: String,
    /// Who used it for what; empty when nobody has.
    pub usage: Vec<UsageEntry>,
}

/// One line of a usage report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEntry {
    /// The principal's object id.
    pub principal: String,
    /// The operation.
    pub operation: String,
    /// Successful uses.
    pub count: u64,
    /// First use.
    pub first_used: String,
    /// Last use.
    pub last_used: String,
}

/// The usage report of a key: every version, newest first, with who used it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsageReport {
    /// The key's identifier without version.
    pub key: String,
    /// The versions.
    pub versions: Vec<VersionUsage>,
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses a time bound given on the command line: RFC 3339 in UTC (`2026-11-28T15:00:00Z`, with
/// optional fractional seconds), a date (`2026-11-28`), or Unix seconds. Answers milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok()?.checked_mul(1000);
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    if b.len() == 10 {
        return Some(ms);
    }
    if b.len() < 20 || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    ms += (h * 3600 + mi * 60 + sec) * 1000;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        ms += padded.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    matches!(rest, "Z" | "z" | "+00:00").then_some(ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

fn block_key(first_seq: u64) -> String {
    format!("{first_seq:020}")
}

fn head_mac_input(next_seq: u64, last_hash: &str) -> Vec<u8> {
    let mut input = HEAD_MAC_DOMAIN.to_vec();
    input.extend(next_seq.to_be_bytes());
    input.extend(last_hash.as_bytes());
    input
}

fn usage_key(vault_id: &str, key: &str, version: &str, principal: &str, op: &str) -> String {
    format!(
        "{}/{version}/{principal}/{op}",
        crate::naming::key_key(vault_id, key)
    )
}

fn unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "The audit log is unavailable, so the request was not acknowledged; retry later.",
    )
}

/// The position of the chain's end as the writer knows it.
#[derive(Debug)]
struct Chain {
    next_seq: u64,
    last_hash: [u8; 32],
    revision: Option<i64>,
}

async fn load_chain(store: &dyn Store, mac_key: &[u8]) -> Result<Chain> {
    match store.get(ns::META, HEAD_KEY).await.map_err(store_error)? {
        None => Ok(Chain {
            next_seq: 0,
            last_hash: [0u8; 32],
            revision: None,
        }),
        Some(r) => {
            let head: AuditHead = from_json(&r.value)?;
            let mac = keyshift_api::b64::decode(&head.mac).unwrap_or_default();
            if !hmac_sha256_verify(
                mac_key,
                &head_mac_input(head.next_seq, &head.last_hash),
                &mac,
            ) {
                tracing::error!(
                    "the audit log's head does not verify; run `keyshift audit verify`"
                );
                return Err(ApiError::new(
                    ErrorCode::InternalError,
                    "The audit log's head does not verify: the log was altered outside Keyshift. \
                     Run `keyshift audit verify`.",
                ));
            }
            Ok(Chain {
                next_seq: head.next_seq,
                last_hash: unhex32(&head.last_hash).ok_or_else(ApiError::internal)?,
                revision: Some(r.revision),
            })
        }
    }
}

/// The events of one request (its own, then those of the items it processed), chained together
/// in one batch.
struct Submission {
    entries: Vec<Entry>,
    /// The pending copy to delete (the request changed the store).
    clears_pending: Option<String>,
    done: Option<oneshot::Sender<Result<()>>>,
}

struct Entry {
    vault_id: String,
    event: AuditEvent,
    /// Whether the event counts in the key usage report (a successful use of a version).
    counts_as_use: bool,
}

/// The handle requests use to reach the writer task.
#[derive(Debug, Clone)]
pub(crate) struct AuditWriter {
    tx: mpsc::Sender<Submission>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("events", &self.entries.len())
            .finish_non_exhaustive()
    }
}

struct Writer {
    store: Arc<dyn Store>,
    mac_key: Zeroizing<Vec<u8>>,
    chain: Chain,
    usage: HashMap<String, (UsageRecord, bool)>,
}

impl Writer {
    /// Appends `batch` in one transaction, retrying on a concurrent writer's append. Several
    /// nodes on one database append to the one chain all the time, so a lost race is common: the
    /// head is reloaded and the batch tried again, after a short random wait so that two nodes
    /// do not collide again in step.
    async fn append(&mut self, batch: &mut [Submission]) -> Result<()> {
        for attempt in 0..APPEND_ATTEMPTS {
            match self.try_append(batch).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(
                        "another process appended to the audit log; reloading its head"
                    );
                    let ceiling_ms = 1u64 << attempt.min(5);
                    let jitter = keyshift_crypto::random_bytes(1).map_or(0, |b| u64::from(b[0]));
                    tokio::time::sleep(std::time::Duration::from_micros(
                        ceiling_ms * 1000 * (128 + jitter) / 384,
                    ))
                    .await;
                    self.chain = load_chain(self.store.as_ref(), &self.mac_key).await?;
                    self.usage.clear();
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log append failed");
                    return Err(unavailable());
                }
            }
        }
        Err(unavailable())
    }

    async fn try_append(
        &mut self,
        batch: &mut [Submission],
    ) -> std::result::Result<(), StoreError> {
        let internal = |_| StoreError::Backend("audit record serialization".into());
        let first = self.chain.next_seq;
        let before = self.chain.last_hash;
        let mut prev = before;
        let mut canonical = Vec::with_capacity(batch.len());
        let entries = batch.iter_mut().flat_map(|s| s.entries.iter_mut());
        for (i, entry) in entries.enumerate() {
            entry.event.seq = first + i as u64;
            let c = entry.event.canonical();
            prev = chain_hash(&prev, &c);
            canonical.push(c);
        }
        let next_seq = first + canonical.len() as u64;
        let last_hex = hex(&prev);
        let mac = hmac_sha256(&self.mac_key, &head_mac_input(next_seq, &last_hex));
        let head = AuditHead {
            next_seq,
            last_hash: last_hex,
            mac: keyshift_api::b64::encode(&mac),
        };
        let block = encode_block(first, &before, &prev, &canonical);
        let mut ops = vec![
            Op::Put {
                ns: ns::AUDIT,
                key: block_key(first),
                value: block,
                expect: Expect::Absent,
            },
            Op::Put {
                ns: ns::META,
                key: HEAD_KEY.into(),
                value: serde_json::to_vec(&head).map_err(|e| StoreError::Backend(e.to_string()))?,
                expect: match self.chain.revision {
                    Some(r) => Expect::Revision(r),
                    None => Expect::Absent,
                },
            },
        ];
        for request_id in batch.iter().filter_map(|s| s.clears_pending.as_ref()) {
            ops.push(Op::Delete {
                ns: ns::AUDIT_PENDING,
                key: request_id.clone(),
                expect: Expect::Any,
            });
        }
        // Usage counters touched by this batch: grouped by borrowed names first (most batches
        // touch a handful), then merged with the stored counters, written once each.
        type Group<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);
        let mut groups: HashMap<Group<'_>, (u64, &str, &str)> = HashMap::new();
        let uses = batch
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|s| s.counts_as_use);
        for s in uses {
            let e = &s.event;
            let (Some(principal), Some(key), Some(version)) = (&e.principal, &e.key, &e.version)
            else {
                continue;
            };
            if !(200..300).contains(&e.status) {
                continue;
            }
            let g = groups
                .entry((&s.vault_id, key, version, principal, &e.operation))
                .or_insert((0, &e.time, &e.time));
            g.0 += 1;
            g.1 = g.1.min(&e.time);
            g.2 = g.2.max(&e.time);
        }
        let mut touched: HashMap<String, UsageRecord> = HashMap::with_capacity(groups.len());
        for ((vault_id, key, version, principal, operation), (count, first, last)) in groups {
            let k = usage_key(vault_id, key, version, principal, operation);
            let known = match self.usage.get(&k) {
                Some((r, _)) => Some(r.clone()),
                None => match self.store.get(ns::KEY_USAGE, &k).await? {
                    Some(r) => Some(
                        serde_json::from_slice(&r.value)
                            .map_err(|e| StoreError::Backend(format!("usage record: {e}")))?,
                    ),
                    None => None,
                },
            };
            let mut record = known.unwrap_or_else(|| UsageRecord {
                principal: principal.to_owned(),
                operation: operation.to_owned(),
                count: 0,
                first: first.to_owned(),
                last: last.to_owned(),
                key: key.to_owned(),
                version: version.to_owned(),
            });
            record.count += count;
            if first < record.first.as_str() {
                record.first = first.to_owned();
            }
            if last > record.last.as_str() {
                record.last = last.to_owned();
            }
            touched.insert(k, record);
        }
        for (k, r) in &touched {
            ops.push(Op::Put {
                ns: ns::KEY_USAGE,
                key: k.clone(),
                value: serde_json::to_vec(r).map_err(internal)?,
                expect: Expect::Any,
            });
        }
        self.store.commit(ops).await?;
        self.chain = Chain {
            next_seq,
            last_hash: prev,
            revision: Some(self.chain.revision.unwrap_or(0) + 1),
        };
        if self.usage.len() + touched.len() > USAGE_CACHE {
            self.usage.clear();
        }
        for (k, r) in touched {
            self.usage.insert(k, (r, true));
        }
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Submission>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut events = first.entries.len();
            batch.push(first);
            while events < MAX_BATCH {
                match rx.try_recv() {
                    Ok(s) => {
                        events += s.entries.len();
                        batch.push(s);
                    }
                    Err(_) => break,
                }
            }
            let started = std::time::Instant::now();
            let result = self.append(&mut batch).await;
            tracing::debug!(
                events = batch.len(),
                micros = started.elapsed().as_micros() as u64,
                "audit batch chained"
            );
            for s in batch.drain(..) {
                if let Some(done) = s.done {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

impl Deployment {
    async fn audit_mac_key(&self) -> Result<Zeroizing<Vec<u8>>> {
        let open = |root: &crate::root::RootKey, sealed: &[u8]| {
            root.open(MAC_KEY_AAD, sealed).map_err(|_| {
                tracing::error!("the audit MAC key does not open under the root key");
                ApiError::internal()
            })
        };
        if let Some(r) = self
            .store
            .get(ns::META, MAC_KEY)
            .await
            .map_err(store_error)?
        {
            let s: SealedMacKey = from_json(&r.value)?;
            return open(&self.root, &s.sealed);
        }
        let key =
            Zeroizing::new(keyshift_crypto::random_bytes(32).map_err(|_| ApiError::internal())?);
        let sealed = self
            .root
            .seal(MAC_KEY_AAD, &key)
            .map_err(|_| ApiError::internal())?;
        match self
            .store
            .commit(vec![Op::Put {
                ns: ns::META,
                key: MAC_KEY.into(),
                value: to_json(&SealedMacKey { sealed })?,
                expect: Expect::Absent,
            }])
            .await
        {
            Ok(()) => Ok(key),
            // Another process made it first: use theirs.
            Err(StoreError::Conflict { .. }) => Box::pin(self.audit_mac_key()).await,
            Err(e) => Err(store_error(e)),
        }
    }

    /// Starts the audit writer: chains the pending events a crash left behind, then takes
    /// events. The server calls this once before it listens; until then nothing is audited.
    pub async fn start_audit(&self) -> Result<()> {
        let mac_key = self.audit_mac_key().await?;
        let chain = load_chain(self.store.as_ref(), &mac_key).await?;
        let mut writer = Writer {
            store: self.store.clone(),
            mac_key,
            chain,
            usage: HashMap::new(),
        };
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(ns::AUDIT_PENDING, "", after.as_deref(), 500)
                .await
                .map_err(store_error)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let mut batch = Vec::with_capacity(page.len());
            for r in &page {
                let p: PendingEvent = from_json(&r.value)?;
                let mut event = p.event;
                event.status = STATUS_INTERRUPTED;
                batch.push(Submission {
                    clears_pending: Some(event.request_id.clone()),
                    entries: vec![Entry {
                        vault_id: p.vault_id,
                        event,
                        counts_as_use: false,
                    }],
                    done: None,
                });
            }
            tracing::warn!(
                events = batch.len(),
                "chaining audit events of changes whose answers may not have been sent"
            );
            writer.append(&mut batch).await?;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        if self.audit.set(AuditWriter { tx }).is_err() {
            return Err(ApiError::new(
                ErrorCode::InternalError,
                "The audit writer is already running.",
            ));
        }
        tokio::spawn(writer.run(rx));
        Ok(())
    }

    /// Chains the finished event of `trace` and returns once it is durable. Until
    /// [`Deployment::start_audit`] ran, returns at once.
    pub async fn finish_trace(
        &self,
        trace: Arc<Trace>,
        status: u16,
        latency_us: u64,
    ) -> Result<()> {
        let Some(writer) = self.audit.get() else {
            return Ok(());
        };
        // The request is over, so the trace is normally ours alone: take its parts.
        let trace = Arc::try_unwrap(trace).unwrap_or_else(|shared| Trace {
            vault_id: shared.vault_id.clone(),
            draft: shared.draft.clone(),
            marked: AtomicBool::new(shared.marked.load(Ordering::Acquire)),
            used: shared.used.clone(),
            children: std::sync::Mutex::new(
                shared
                    .children
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        });
        let clears_pending = trace
            .marked
            .load(Ordering::Acquire)
            .then(|| trace.draft.request_id.clone());
        let mut event = trace.draft;
        let mut counts_as_use = false;
        if let Some((key, version, use_)) = trace.used.into_inner() {
            event.key = Some(key);
            event.version = Some(version);
            counts_as_use = use_;
        }
        event.status = status;
        event.latency_us = latency_us;
        let children = trace
            .children
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let mut entries = Vec::with_capacity(1 + children.len());
        for c in children {
            let mut e = event.clone();
            e.vault = c.vault;
            e.operation = c.operation.to_owned();
            e.key = Some(c.key);
            e.version = Some(c.version);
            e.status = c.status;
            e.latency_us = 0;
            entries.push(Entry {
                vault_id: c.vault_id,
                event: e,
                counts_as_use: (200..300).contains(&c.status),
            });
        }
        entries.insert(
            0,
            Entry {
                vault_id: trace.vault_id,
                event,
                counts_as_use,
            },
        );
        let (done, wait) = oneshot::channel();
        writer
            .tx
            .send(Submission {
                entries,
                clears_pending,
                done: Some(done),
            })
            .await
            .map_err(|_| unavailable())?;
        wait.await.map_err(|_| unavailable())?
    }

    /// One page of stored events: up to `limit` blocks after the block key `after`, and the key
    /// to continue from (`None` at the end).
    pub async fn audit_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        let page = self
            .store
            .list(ns::AUDIT, "", after, limit)
            .await
            .map_err(store_error)?;
        let next = (page.len() == limit)
            .then(|| page.last().map(|r| r.key.clone()))
            .flatten();
        let mut events = Vec::new();
        for r in page {
            let block = Block::decode(&r.value).map_err(|e| {
                tracing::error!(key = %r.key, error = %e, "an audit block does not decode");
                ApiError::internal()
            })?;
            events.extend(block.events);
        }
        Ok((events, next))
    }

    /// Events passing `filter`, oldest first, at most `limit`.
    pub async fn audit_events(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (events, next) = self.audit_page(after.as_deref(), 64).await?;
            for e in events {
                if filter.matches(&e) {
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Walks the whole chain: every block stored where its first event says, every sequence
    /// number once and in order, every block starting from the hash the one before ended on and
    /// ending on the hash its events give, and the head's HMAC over the last of them.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        let mac_key = self.audit_mac_key().await?;
        let mut expected_seq = 0u64;
        let mut last_hash = [0u8; 32];
        let mut after: Option<String> = None;
        let broken = |events: u64, problem: String| AuditVerification {
            events,
            intact: false,
            problem: Some(problem),
        };
        loop {
            let page = self
                .store
                .list(ns::AUDIT, "", after.as_deref(), 64)
                .await
                .map_err(store_error)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for r in page {
                let block = match Block::decode(&r.value) {
                    Ok(b) => b,
                    Err(e) => {
                        return Ok(broken(
                            expected_seq,
                            format!("the block stored at {} does not decode: {e}", r.key),
                        ))
                    }
                };
                if r.key != block_key(block.first_seq) {
                    return Ok(broken(
                        expected_seq,
                        format!(
                            "the block stored at {} starts with event {}",
                            r.key, block.first_seq
                        ),
                    ));
                }
                if block.first_seq != expected_seq {
                    return Ok(broken(
                        expected_seq,
                        format!(
                            "event {expected_seq} is missing or out of order (found event {} in its place)",
                            block.first_seq
                        ),
                    ));
                }
                if block.prev != last_hash {
                    return Ok(broken(
                        expected_seq,
                        format!(
                            "the block from event {} does not follow the event before it",
                            block.first_seq
                        ),
                    ));
                }
                let Some(last_event) = block.events.last() else {
                    return Ok(broken(
                        expected_seq,
                        format!("the block at {} is empty", r.key),
                    ));
                };
                for e in &block.events {
                    if e.seq != expected_seq {
                        return Ok(broken(
                            expected_seq,
                            format!(
                                "event {expected_seq} is missing or out of order (found event {} in its place)",
                                e.seq
                            ),
                        ));
                    }
                    expected_seq += 1;
                }
                let ends_on = unhex32(&last_event.hash).unwrap_or_default();
                if ends_on != block.last {
                    return Ok(broken(
                        block.first_seq,
                        format!(
                            "an event among {}..={} was modified (its block's hash does not match its content)",
                            block.first_seq, last_event.seq
                        ),
                    ));
                }
                last_hash = block.last;
            }
        }
        let head = match self
            .store
            .get(ns::META, HEAD_KEY)
            .await
            .map_err(store_error)?
        {
            None if expected_seq == 0 => {
                return Ok(AuditVerification {
                    events: 0,
                    intact: true,
                    problem: None,
                })
            }
            None => {
                return Ok(broken(
                    expected_seq,
                    "the chain's head record is missing".into(),
                ))
            }
            Some(r) => match serde_json::from_slice::<AuditHead>(&r.value) {
                Ok(h) => h,
                Err(_) => {
                    return Ok(broken(
                        expected_seq,
                        "the chain's head record does not parse".into(),
                    ))
                }
            },
        };
        let mac = keyshift_api::b64::decode(&head.mac).unwrap_or_default();
        if !hmac_sha256_verify(
            &mac_key,
            &head_mac_input(head.next_seq, &head.last_hash),
            &mac,
        ) {
            return Ok(broken(
                expected_seq,
                "the chain's head was altered (its HMAC does not verify)".into(),
            ));
        }
        if head.next_seq != expected_seq {
            return Ok(broken(
                expected_seq,
                format!(
                    "the chain holds {expected_seq} events but its head says {}: events were removed from the end",
                    head.next_seq
                ),
            ));
        }
        if unhex32(&head.last_hash) != Some(last_hash) {
            return Ok(broken(
                expected_seq,
                "the chain's last hash is not the one its head recorded: events were rewritten"
                    .into(),
            ));
        }
        Ok(AuditVerification {
            events: expected_seq,
            intact: true,
            problem: None,
        })
    }

    /// Who used each version of key `name` (or only `version`), for what, how often, first and
    /// last: successful requests of the audit log, counted as they are chained.
    pub async fn key_usage(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyUsageReport> {
        self.authorize(
            ctx,
            vault,
            crate::rbac::Action::Read,
            &crate::access::key_resource(name),
        )
        .await?;
        let versions = self.version_names(vault, name, version).await?;
        let key_name = versions.0;
        let mut out = Vec::new();
        for v in versions.1 {
            let prefix = format!("{}/{v}/", crate::naming::key_key(&vault.id, &key_name));
            let usage = self
                .list_all::<UsageRecord>(ns::KEY_USAGE, &prefix)
                .await?
                .into_iter()
                .map(|u| UsageEntry {
                    principal: u.principal,
                    operation: u.operation,
                    count: u.count,
                    first_used: u.first,
                    last_used: u.last,
                })
                .collect();
            out.push(VersionUsage {
                kid: format!("{}/keys/{key_name}/{v}", ctx.base_url),
                usage,
            });
        }
        Ok(KeyUsageReport {
            key: format!("{}/keys/{key_name}", ctx.base_url),
            versions: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_and_parse() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for ms in [0, 1_795_000_000_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_time(&format_millis(ms)), Some(ms));
        }
        assert_eq!(parse_time("2026-11-18"), Some(1_794_960_000_000));
        assert_eq!(parse_time("1795000000"), Some(1_795_000_000_000));
        assert_eq!(parse_time("2026-11-18T11:06:40Z"), Some(1_795_000_000_000));
        assert_eq!(
            parse_time("2026-11-18T11:06:40.5Z"),
            Some(1_795_000_000_500)
        );
        assert_eq!(
            parse_time("2026-11-18T11:06:40+00:00"),
            Some(1_795_000_000_000)
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-11-18T24:00:00Z",
            "2026-11-18T09:46:40",
            "2026-11-18T09:46:40+01:00",
            "2026-11-18T09:46:40.Z",
            "yesterday",
            "2026-1-18",
            "99999999999999999999",
            "2026-11-18T09:4a:40Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_fixed_width_time_sorts_as_time() {
        let a = format_millis(999);
        let b = format_millis(1_000);
        let c = format_millis(86_400_000 * 365 * 40);
        assert!(a < b && b < c);
    }

    #[test]
    fn filters() {
        let mut e = AuditEvent::draft(1_000, "r", "127.0.0.1:1", "kv", "wrapKey");
        e.principal = Some("p1".into());
        e.key = Some("Key1".into());
        e.status = 200;
        let f = |f: AuditFilter| f.matches(&e);
        assert!(f(AuditFilter::default()));
        assert!(f(AuditFilter {
            key: Some("key1".into()),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            key: Some("key2".into()),
            ..Default::default()
        }));
        assert!(f(AuditFilter {
            operation: Some("WRAPKEY".into()),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            principal: Some("p2".into()),
            ..Default::default()
        }));
        assert!(f(AuditFilter {
            result: Some("success".into()),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            result: Some("failure".into()),
            ..Default::default()
        }));
        assert!(f(AuditFilter {
            result: Some("200".into()),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            result: Some("403".into()),
            ..Default::default()
        }));
        assert!(f(AuditFilter {
            since: Some(format_millis(1_000)),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            since: Some(format_millis(1_001)),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            until: Some(format_millis(1_000)),
            ..Default::default()
        }));
        assert!(f(AuditFilter {
            until: Some(format_millis(1_001)),
            ..Default::default()
        }));
    }

    #[test]
    fn blocks_round_trip_and_malformed_ones_are_refused() {
        let mut events = Vec::new();
        for i in 0..3u64 {
            let mut e = AuditEvent::draft(
                1_000 + i as i64,
                format!("r{i}"),
                "127.0.0.1:1",
                "kv",
                "KeyWrap",
            );
            e.seq = 7 + i;
            e.status = 200;
            events.push(e);
        }
        let mut chain = [3u8; 32];
        for e in &mut events {
            e.prev = hex(&chain);
            chain = e.chain_hash(&chain);
            e.hash = hex(&chain);
        }
        let block = Block {
            first_seq: 7,
            prev: [3; 32],
            last: chain,
            events,
        };
        let bytes = block.encode();
        assert_eq!(Block::decode(&bytes).unwrap(), block);

        let mut bad_magic = bytes.clone();
        bad_magic[0] = b'X';
        let mut bad_count = bytes.clone();
        bad_count[15] = 4;
        let mut bad_body = bytes.clone();
        let n = bad_body.len();
        bad_body[n - 3] ^= 0xff;
        let mut not_json = bytes[..80].to_vec();
        not_json.extend(miniz_oxide::deflate::compress_to_vec(b"[[1,2", 1));
        let mut wrong_shape = bytes[..80].to_vec();
        wrong_shape.extend(miniz_oxide::deflate::compress_to_vec(b"[{\"seq\":1}]", 1));
        // A bomb: 80 MiB of zeros inflate past the limit and are refused, not allocated.
        let mut bomb = bytes[..80].to_vec();
        bomb.extend(miniz_oxide::deflate::compress_to_vec(
            &vec![0u8; 80 << 20],
            9,
        ));
        for (what, input) in [
            ("empty", Vec::new()),
            ("short", bytes[..40].to_vec()),
            ("magic", bad_magic),
            ("count", bad_count),
            ("body", bad_body),
            ("json", not_json),
            ("shape", wrong_shape),
            ("bomb", bomb),
        ] {
            assert!(Block::decode(&input).is_err(), "{what}");
        }
    }

    #[test]
    fn the_hash_covers_every_field_but_itself() {
        let e = AuditEvent::draft(1_000, "r", "127.0.0.1:1", "kv", "wrapKey");
        let h = e.chain_hash(&[0; 32]);
        let mut other = e.clone();
        other.hash = "anything".into();
        other.prev = "anything".into();
        assert_eq!(
            other.chain_hash(&[0; 32]),
            h,
            "prev and hash are not content"
        );
        assert_ne!(e.chain_hash(&[1; 32]), h, "the previous hash is");
        let variants: Vec<fn(&mut AuditEvent)> = vec![
            |e| e.seq = 1,
            |e| e.time = format_millis(1_001),
            |e| e.request_id = "s".into(),
            |e| e.client_request_id = Some("c".into()),
            |e| e.principal = Some("p".into()),
            |e| e.client = "127.0.0.1:2".into(),
            |e| e.vault = "kv2".into(),
            |e| e.operation = "unwrapKey".into(),
            |e| e.key = Some("k".into()),
            |e| e.version = Some("v".into()),
            |e| e.status = 403,
            |e| e.latency_us = 1,
        ];
        for change in variants {
            let mut changed = e.clone();
            change(&mut changed);
            assert_ne!(changed.chain_hash(&[0; 32]), h);
        }
    }
}
