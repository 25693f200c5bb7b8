//! The audit log: one event per request that reaches a vault, allowed or refused.
//!
//! Events are append-only and hash-chained: each carries the SHA-256 of its predecessor (`prev`)
//! and its own hash over its content (`hash`), so a modified, removed or reordered event breaks the
//! chain. The chain's head (next sequence number, last hash) is kept beside the events under an
//! HMAC whose key is sealed by the root key, so cutting events off the end breaks it too.
//!
//! **One chain per writer.** Every server process appends to a chain of its own, so that several
//! nodes on one database never contend for one head. A chain is named by an id: the one the data
//! directory keeps (`keyshift serve` writes it to `audit-chain` at the first start, so a node's
//! restarts continue its chain), or a fresh random one ([`Deployment::start_audit`] without
//! [`Deployment::set_audit_chain`]). Two processes that share an id by accident (a copied data
//! directory) still keep the chain correct: every append is a compare-and-set on the chain's head,
//! retried on a lost race. A chain's blocks are stored under `{chain}/{first seq}` and its head
//! under `audit_head/{chain}`; its first event follows a hash derived from the id ([`genesis`]), so
//! blocks cannot be moved from one chain to another, and its head's HMAC covers the id. The
//! *registry* (`audit_chains` in `meta`, under the same HMAC key) lists every chain; it is updated
//! by compare-and-set only when a chain is created, in the same transaction as the chain's first
//! head. [`Deployment::verify_audit`] checks every registered chain is there and holds, and that no
//! unregistered chain is: deleting a whole chain is caught, not only cutting its end.
//!
//! The single chain of earlier versions is the *legacy* chain ([`LEGACY_CHAIN`]): blocks keyed by
//! the bare sequence number, head `audit_head`, zero genesis hash, version 1 head MAC. It is read
//! and verified as before, registered when the first per-writer chain is created, and never
//! appended to again.
//!
//! Durability is group commit: one writer task appends the events of all requests that arrived
//! while the previous batch was being written in one store transaction (one fsync), and each
//! response waits for its batch. A request that changes the store also writes a *pending* copy
//! of its event in the same transaction as the change (`Deployment::commit_as`), naming the chain
//! of the process that wrote it: should the process die between that change and the event, the
//! pending copy is chained with status 0 when a writer of that chain starts again (a node's
//! restart), or by any writer once it is [`STALE_PENDING_MS`] old (a node that never came back;
//! every writer looks every [`SWEEP_INTERVAL`]). A writer does not chain another live writer's
//! fresh copies, which are of requests still being answered. A copy is claimed by deleting it,
//! with the revision read, in the transaction that chains it, so two writers never chain one
//! copy twice. So no acknowledged operation is without its event, and no committed change is.
//!
//! The same batch updates the key usage counters ([`UsageRecord`]): per key version, principal
//! and operation, how often and when first and last. Each chain keeps counters of its own (its
//! writer alone writes them); the usage report adds them up.

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

/// Store key (in `meta`) of the legacy chain's head; per-writer chains' heads are
/// `audit_head/{chain}`.
pub(crate) const HEAD_KEY: &str = "audit_head";
/// Store key (in `meta`) of the registry of chains.
const REGISTRY_KEY: &str = "audit_chains";
/// The name of the single chain earlier versions wrote.
pub const LEGACY_CHAIN: &str = "legacy";
const HEAD_MAC_DOMAIN_V2: &[u8] = b"keyshift audit head v2\n";
const REGISTRY_MAC_DOMAIN: &[u8] = b"keyshift audit chains v1\n";
const GENESIS_DOMAIN: &[u8] = b"keyshift audit chain v2\n";
/// Store key prefix (in `meta`) of the chains' floors: `audit_floor/{chain}`.
const FLOOR_KEY: &str = "audit_floor";
const FLOOR_MAC_DOMAIN: &[u8] = b"keyshift audit floor v1\n";
/// Age (by its event's time) past which any writer chains a pending copy, whoever wrote it: no
/// request runs this long, so its writer died and did not come back.
pub const STALE_PENDING_MS: i64 = 10 * 60 * 1000;
/// How often a running writer looks for stale pending copies.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Events per page of the readers ([`Deployment::audit_page`]).
pub const READ_PAGE: usize = 4096;
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
/// Runs of one append before its requests are answered `503`: another process wrote this
/// writer's chain (two processes with one chain id).
const APPEND_ATTEMPTS: u32 = 16;
/// Usage counters kept in memory by the writer before it starts over.
const USAGE_CACHE: usize = 100_000;
/// Status of an event chained at start-up from a pending copy: the change was committed, the
/// answer may never have reached the client.
pub const STATUS_INTERRUPTED: u16 = 0;

/// One audited request. Field order is the exported order, and after `chain` the hashed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The chain the event is in ([`LEGACY_CHAIN`] for the single chain of earlier versions).
    /// Not part of [`AuditEvent::canonical`] (so the events of the legacy chain hash as they
    /// always did): the chain's [`genesis`] hash, where its first event starts, binds it.
    #[serde(default)]
    pub chain: String,
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
            chain: String::new(),
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

    /// The event as stored and hashed: a JSON array of its fields in order, without `chain`,
    /// `prev` and `hash`. The same in every chain (format 1 of blocks, `KSA1`).
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
    /// The events, with `prev` and `hash` recomputed from `prev` and their content (`chain` is
    /// empty: the block's store key names it).
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
                chain: String::new(),
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
    deflate_into(&json, &mut out);
    out
}

/// Appends the raw deflate (level 1) of `input` to `out`: the bytes of
/// `miniz_oxide::deflate::compress_to_vec(input, 1)`, with one compressor per thread reset
/// between blocks instead of a new one each time (~300 KiB allocated and zeroed per batch, which
/// showed as malloc consolidation under load).
fn deflate_into(whole: &[u8], out: &mut Vec<u8>) {
    use miniz_oxide::deflate::core::{
        compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
    };
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<Box<CompressorOxide>>> =
            const { std::cell::RefCell::new(None) };
    }
    let start = out.len();
    let mut input = whole;
    let done = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = slot.get_or_insert_with(|| {
            Box::new(CompressorOxide::new(create_comp_flags_from_zip_params(
                1, 0, 0,
            )))
        });
        compressor.reset();
        let mut at = start;
        out.resize(start + (input.len() / 2).max(64), 0);
        loop {
            let (status, read, written) =
                compress(compressor, input, &mut out[at..], TDEFLFlush::Finish);
            at += written;
            match status {
                TDEFLStatus::Done => {
                    out.truncate(at);
                    return true;
                }
                TDEFLStatus::Okay if read <= input.len() => {
                    input = &input[read..];
                    if out.len() - at < 64 {
                        out.resize(out.len() * 2, 0);
                    }
                }
                _ => return false,
            }
        }
    });
    if !done {
        // Not expected: start over the simple way.
        out.truncate(start);
        out.extend(miniz_oxide::deflate::compress_to_vec(whole, 1));
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct AuditHead {
    next_seq: u64,
    last_hash: String,
    mac: String,
}

/// Where a chain starts once its oldest blocks were pruned: the first event kept and the chain
/// hash before it, under the heads' HMAC key. A chain without one starts at event 0 from its
/// genesis hash.
#[derive(Debug, Serialize, Deserialize)]
struct AuditFloor {
    first_seq: u64,
    prev_hash: String,
    mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SealedMacKey {
    #[serde(with = "keyshift_api::b64::bytes")]
    sealed: Vec<u8>,
}

/// The chains there are, under the HMAC key of the heads.
#[derive(Debug, Serialize, Deserialize)]
struct ChainRegistry {
    chains: Vec<String>,
    mac: String,
}

/// A pending copy of an event, written with the change it describes.
#[derive(Debug, Serialize, Deserialize)]
struct PendingEvent {
    vault_id: String,
    event: AuditEvent,
    /// The chain of the process that wrote it (none: an earlier version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<String>,
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
    subject: OnceLock<String>,
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
        Self::of(vault.id.clone(), draft)
    }

    /// A trace of a request to the deployment itself (the admin API: principals and trusted
    /// issuers), which names no vault: its event's `vault` is empty, and its `key` names the
    /// principal the request is about.
    pub fn for_deployment(mut draft: AuditEvent) -> Self {
        draft.vault = String::new();
        Self::of(String::new(), draft)
    }

    /// A trace of a change made with the command line on the data directory, outside any
    /// request: its event keeps the vault it names (empty for none) and counts as no key's use.
    pub fn local(draft: AuditEvent) -> Self {
        Self::of(String::new(), draft)
    }

    fn of(vault_id: String, draft: AuditEvent) -> Self {
        Trace {
            vault_id,
            draft,
            marked: AtomicBool::new(false),
            used: OnceLock::new(),
            subject: OnceLock::new(),
            children: Default::default(),
        }
    }

    /// The event as far as it is known.
    pub fn draft(&self) -> &AuditEvent {
        &self.draft
    }

    /// Adds the pending copy of the event to a batch that changes the store; `writer` is the
    /// chain of this process's audit writer.
    pub(crate) fn mark(&self, ops: &mut Vec<Op>, writer: Option<&str>) -> Result<()> {
        let pending = PendingEvent {
            vault_id: self.vault_id.clone(),
            event: self.draft.clone(),
            writer: writer.map(str::to_owned),
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

    /// Names what a request that is not about a key is about (the principal of an admin API
    /// call, found or made by it): the event's `key`, unless the request named a key.
    pub(crate) fn note_subject(&self, id: &str) {
        let _ = self.subject.set(id.to_owned());
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
        let writer = self.audit.get().map(|w| w.chain.as_str());
        ctx.mark(&mut ops, writer)
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
    pub(crate) fn mark(&self, ops: &mut Vec<Op>, writer: Option<&str>) -> Result<()> {
        match &self.trace {
            Some(t) => t.mark(ops, writer),
            None => Ok(()),
        }
    }

    pub(crate) fn note_use(&self, key: &str, version: &str) {
        if let Some(t) = &self.trace {
            t.note_use(key, version);
        }
    }

    /// See [`Trace::note_subject`].
    pub fn note_subject(&self, id: &str) {
        if let Some(t) = &self.trace {
            t.note_subject(id);
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
    /// Chains read (the legacy one included, if there is one).
    pub chains: usize,
    /// Whether the chain and its head hold.
    pub intact: bool,
    /// The first break found, if any.
    pub problem: Option<String>,
    /// Events no longer stored because `keyshift audit prune` dropped them (every chain then
    /// starts where its floor says, which the check holds it to).
    pub pruned: u64,
}

/// Where one chain starts: event `first_seq`, after chain hash `prev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Floor {
    first_seq: u64,
    prev: [u8; 32],
}

impl Floor {
    fn genesis(chain: &str) -> Self {
        Floor {
            first_seq: 0,
            prev: genesis(chain),
        }
    }
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

/// The hash a chain's first event follows: zeros for the legacy chain, else SHA-256 over a domain
/// string and the chain's id.
pub fn genesis(chain: &str) -> [u8; 32] {
    if chain == LEGACY_CHAIN {
        return [0u8; 32];
    }
    let mut input = GENESIS_DOMAIN.to_vec();
    input.extend_from_slice(chain.as_bytes());
    sha256(&input)
}

/// Whether `id` can name a chain: 1 to 64 of `a-z 0-9 - _`, starting with a letter, not
/// [`LEGACY_CHAIN`] (so that it sorts after the legacy chain's bare sequence numbers and holds
/// no `/`, `,`, `=` or `.`, which the store keys and reading cursors use).
pub fn valid_chain_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.as_bytes()[0].is_ascii_lowercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id != LEGACY_CHAIN
}

/// A fresh chain id: `w` and 16 random hex digits.
pub fn new_chain_id() -> Result<String> {
    let random = keyshift_crypto::random_bytes(8).map_err(|_| ApiError::internal())?;
    Ok(format!("w{}", hex(&random)))
}

/// Store key (in `audit`) of the block of `chain` starting at `first_seq`.
fn block_key(chain: &str, first_seq: u64) -> String {
    if chain == LEGACY_CHAIN {
        format!("{first_seq:020}")
    } else {
        format!("{chain}/{first_seq:020}")
    }
}

/// The chain a block's store key names.
fn chain_of_key(key: &str) -> &str {
    key.split_once('/').map_or(LEGACY_CHAIN, |(c, _)| c)
}

/// Store key (in `meta`) of `chain`'s head.
fn head_key(chain: &str) -> String {
    if chain == LEGACY_CHAIN {
        HEAD_KEY.to_owned()
    } else {
        format!("{HEAD_KEY}/{chain}")
    }
}

fn head_mac_input(chain: &str, next_seq: u64, last_hash: &str) -> Vec<u8> {
    let mut input = if chain == LEGACY_CHAIN {
        HEAD_MAC_DOMAIN.to_vec()
    } else {
        let mut v = HEAD_MAC_DOMAIN_V2.to_vec();
        v.extend_from_slice(chain.as_bytes());
        v.push(b'\n');
        v
    };
    input.extend(next_seq.to_be_bytes());
    input.extend(last_hash.as_bytes());
    input
}

fn registry_mac_input(chains: &[String]) -> Vec<u8> {
    let mut input = REGISTRY_MAC_DOMAIN.to_vec();
    for c in chains {
        input.extend_from_slice(c.as_bytes());
        input.push(b'\n');
    }
    input
}

fn head_record(mac_key: &[u8], chain: &str, next_seq: u64, last: &[u8; 32]) -> AuditHead {
    let last_hash = hex(last);
    let mac = hmac_sha256(mac_key, &head_mac_input(chain, next_seq, &last_hash));
    AuditHead {
        next_seq,
        last_hash,
        mac: keyshift_api::b64::encode(&mac),
    }
}

fn floor_key(chain: &str) -> String {
    format!("{FLOOR_KEY}/{chain}")
}

fn floor_mac_input(chain: &str, first_seq: u64, prev_hash: &str) -> Vec<u8> {
    let mut input = FLOOR_MAC_DOMAIN.to_vec();
    input.extend_from_slice(chain.as_bytes());
    input.push(b'\n');
    input.extend(first_seq.to_be_bytes());
    input.extend(prev_hash.as_bytes());
    input
}

fn floor_record(mac_key: &[u8], chain: &str, floor: Floor) -> AuditFloor {
    let prev_hash = hex(&floor.prev);
    let mac = hmac_sha256(
        mac_key,
        &floor_mac_input(chain, floor.first_seq, &prev_hash),
    );
    AuditFloor {
        first_seq: floor.first_seq,
        prev_hash,
        mac: keyshift_api::b64::encode(&mac),
    }
}

/// A stored floor of `chain`, checked; the problem if it was altered.
fn parse_floor(mac_key: &[u8], chain: &str, value: &[u8]) -> std::result::Result<Floor, String> {
    let altered = || {
        format!(
            "chain {chain}: the record of where the chain starts after pruning was altered \
             (its HMAC does not verify)"
        )
    };
    let floor: AuditFloor = serde_json::from_slice(value).map_err(|_| altered())?;
    let mac = keyshift_api::b64::decode(&floor.mac).unwrap_or_default();
    if !hmac_sha256_verify(
        mac_key,
        &floor_mac_input(chain, floor.first_seq, &floor.prev_hash),
        &mac,
    ) {
        return Err(altered());
    }
    Ok(Floor {
        first_seq: floor.first_seq,
        prev: unhex32(&floor.prev_hash).ok_or_else(altered)?,
    })
}

/// The counter of `chain` for one key version, principal and operation. Counters written before
/// chains had counters of their own have no chain part; the report adds all of them up.
fn usage_key(
    vault_id: &str,
    key: &str,
    version: &str,
    principal: &str,
    op: &str,
    chain: &str,
) -> String {
    format!(
        "{}/{version}/{principal}/{op}/{chain}",
        crate::naming::key_key(vault_id, key)
    )
}

/// Where [`Deployment::verify_audit`] stands in one chain.
#[derive(Debug)]
struct ChainWalk {
    chain: String,
    /// The first event stored: 0, or the chain's floor once it was pruned.
    start: u64,
    expected_seq: u64,
    last_hash: [u8; 32],
}

impl ChainWalk {
    fn new(chain: &str, floor: Option<&Floor>) -> Self {
        let floor = floor.copied().unwrap_or_else(|| Floor::genesis(chain));
        ChainWalk {
            chain: chain.to_owned(),
            start: floor.first_seq,
            expected_seq: floor.first_seq,
            last_hash: floor.prev,
        }
    }

    /// Events walked so far.
    fn held(&self) -> u64 {
        self.expected_seq - self.start
    }

    /// Checks the next block of the chain, stored at `key`.
    fn step(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        let expected_seq = self.expected_seq;
        let block = Block::decode(value)
            .map_err(|e| format!("the block stored at {key} does not decode: {e}"))?;
        if key != block_key(&self.chain, block.first_seq) {
            return Err(format!(
                "the block stored at {key} starts with event {}",
                block.first_seq
            ));
        }
        if block.first_seq != expected_seq {
            return Err(format!(
                "event {expected_seq} is missing or out of order (found event {} in its place)",
                block.first_seq
            ));
        }
        if block.prev != self.last_hash {
            return Err(format!(
                "the block from event {} does not follow the event before it",
                block.first_seq
            ));
        }
        let Some(last_event) = block.events.last() else {
            return Err(format!("the block at {key} is empty"));
        };
        for e in &block.events {
            if e.seq != self.expected_seq {
                return Err(format!(
                    "event {} is missing or out of order (found event {} in its place)",
                    self.expected_seq, e.seq
                ));
            }
            self.expected_seq += 1;
        }
        let ends_on = unhex32(&last_event.hash).unwrap_or_default();
        if ends_on != block.last {
            return Err(format!(
                "an event among {}..={} was modified (its block's hash does not match its content)",
                block.first_seq, last_event.seq
            ));
        }
        self.last_hash = block.last;
        Ok(())
    }
}

/// A reading cursor: `chain=block.next` for each chain read so far, comma-separated (`block` is
/// the first sequence number of the block holding `next`, the next event to read).
fn parse_cursor(text: &str) -> Result<HashMap<String, (u64, u64)>> {
    let bad = || {
        ApiError::new(
            ErrorCode::BadParameter,
            "The audit log cursor is malformed.",
        )
    };
    let mut out = HashMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (chain, pos) = part.split_once('=').ok_or_else(bad)?;
        let (block, next) = pos.split_once('.').ok_or_else(bad)?;
        let block: u64 = block.parse().map_err(|_| bad())?;
        let next: u64 = next.parse().map_err(|_| bad())?;
        if (chain != LEGACY_CHAIN && !valid_chain_id(chain)) || block > next {
            return Err(bad());
        }
        out.insert(chain.to_owned(), (block, next));
    }
    Ok(out)
}

fn format_cursor(positions: &HashMap<String, (u64, u64)>) -> String {
    let mut parts: Vec<String> = positions
        .iter()
        .map(|(c, (block, next))| format!("{c}={block}.{next}"))
        .collect();
    parts.sort();
    parts.join(",")
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
    id: String,
    next_seq: u64,
    last_hash: [u8; 32],
    revision: Option<i64>,
}

fn altered_head(chain: &str) -> ApiError {
    tracing::error!(
        chain,
        "an audit chain's head does not verify; run `keyshift audit verify`"
    );
    ApiError::new(
        ErrorCode::InternalError,
        "The audit log's head does not verify: the log was altered outside Keyshift. \
         Run `keyshift audit verify`.",
    )
}

/// `chain`'s head as stored, if it is there; an error if its HMAC does not verify.
async fn load_chain(store: &dyn Store, mac_key: &[u8], chain: &str) -> Result<Option<Chain>> {
    let Some(r) = store
        .get(ns::META, &head_key(chain))
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let head: AuditHead = from_json(&r.value)?;
    let mac = keyshift_api::b64::decode(&head.mac).unwrap_or_default();
    if !hmac_sha256_verify(
        mac_key,
        &head_mac_input(chain, head.next_seq, &head.last_hash),
        &mac,
    ) {
        return Err(altered_head(chain));
    }
    Ok(Some(Chain {
        id: chain.to_owned(),
        next_seq: head.next_seq,
        last_hash: unhex32(&head.last_hash).ok_or_else(ApiError::internal)?,
        revision: Some(r.revision),
    }))
}

/// The registry's chains and revision (none: no registry yet); an error if its HMAC does not
/// verify.
async fn load_registry(store: &dyn Store, mac_key: &[u8]) -> Result<Option<(Vec<String>, i64)>> {
    let Some(r) = store
        .get(ns::META, REGISTRY_KEY)
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let registry: ChainRegistry = from_json(&r.value)?;
    let mac = keyshift_api::b64::decode(&registry.mac).unwrap_or_default();
    if !hmac_sha256_verify(mac_key, &registry_mac_input(&registry.chains), &mac) {
        return Err(altered_head("(registry)"));
    }
    Ok(Some((registry.chains, r.revision)))
}

/// Opens `chain` for appending: its head as stored, or, for a new chain, a head at its genesis
/// written together with the registry that now lists it. The legacy chain is only loaded, as
/// earlier versions did (for tests of upgrades).
async fn open_chain(store: &dyn Store, mac_key: &[u8], chain: &str) -> Result<Chain> {
    if chain == LEGACY_CHAIN {
        return Ok(load_chain(store, mac_key, chain).await?.unwrap_or(Chain {
            id: chain.to_owned(),
            next_seq: 0,
            last_hash: [0u8; 32],
            revision: None,
        }));
    }
    for _ in 0..APPEND_ATTEMPTS {
        if let Some(c) = load_chain(store, mac_key, chain).await? {
            return Ok(c);
        }
        let (mut chains, revision) = match load_registry(store, mac_key).await? {
            Some((chains, revision)) => (chains, Some(revision)),
            None => {
                // The first chain of a store an earlier version wrote: register that one too, so
                // that deleting it is caught like deleting any other.
                let legacy = store
                    .get(ns::META, HEAD_KEY)
                    .await
                    .map_err(store_error)?
                    .is_some();
                let chains = if legacy {
                    vec![LEGACY_CHAIN.to_owned()]
                } else {
                    Vec::new()
                };
                (chains, None)
            }
        };
        if chains.iter().any(|c| c == chain) {
            tracing::error!(
                chain,
                "the audit chain is registered but its head is missing"
            );
            return Err(ApiError::new(
                ErrorCode::InternalError,
                format!(
                    "The audit chain {chain} is registered but its head is missing: the log was \
                     altered outside Keyshift. Run `keyshift audit verify`."
                ),
            ));
        }
        chains.push(chain.to_owned());
        let mac = hmac_sha256(mac_key, &registry_mac_input(&chains));
        let registry = ChainRegistry {
            chains,
            mac: keyshift_api::b64::encode(&mac),
        };
        let start = genesis(chain);
        let head = head_record(mac_key, chain, 0, &start);
        let ops = vec![
            Op::Put {
                ns: ns::META,
                key: REGISTRY_KEY.into(),
                value: to_json(&registry)?,
                expect: revision.map_or(Expect::Absent, Expect::Revision),
            },
            Op::Put {
                ns: ns::META,
                key: head_key(chain),
                value: to_json(&head)?,
                expect: Expect::Absent,
            },
        ];
        match store.commit(ops).await {
            Ok(()) => {
                tracing::info!(chain, "audit chain created");
                return Ok(Chain {
                    id: chain.to_owned(),
                    next_seq: 0,
                    last_hash: start,
                    revision: Some(1),
                });
            }
            // Another process registered a chain (or made this one) meanwhile: look again.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(unavailable())
}

/// The events of one request (its own, then those of the items it processed), chained together
/// in one batch.
struct Submission {
    entries: Vec<Entry>,
    /// The pending copy to delete, and what it must be found at: `Any` for this process's own
    /// request, the revision read for a copy claimed from a crash.
    clears_pending: Option<(String, Expect)>,
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
    /// The writer's chain.
    pub(crate) chain: String,
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
    clock: Arc<dyn crate::clock::Clock>,
    mac_key: Zeroizing<Vec<u8>>,
    chain: Chain,
    usage: HashMap<String, (UsageRecord, bool)>,
}

/// Which pending copies a writer chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// At start: its own chain's (an earlier run of this writer died), those no chain owns, and
    /// stale ones.
    AtStart,
    /// While running: stale ones only.
    Stale,
}

impl Writer {
    /// Appends `batch` in one transaction. The chain is this writer's alone, so the head's
    /// compare-and-set fails only if another process has the same chain id (a copied data
    /// directory): the head is then reloaded and the batch tried again, after a short random
    /// wait. A pending copy claimed by another writer first is dropped from the batch (that
    /// writer chained it).
    async fn append(&mut self, batch: &mut Vec<Submission>) -> Result<()> {
        let mut attempt = 0u32;
        while attempt < APPEND_ATTEMPTS {
            if batch.is_empty() {
                return Ok(());
            }
            match self.try_append(batch).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { ns: n, key }) if n == ns::AUDIT_PENDING => {
                    tracing::debug!(request_id = %key, "another writer chained this pending copy");
                    batch.retain(|s| {
                        !matches!(&s.clears_pending, Some((k, Expect::Revision(_))) if *k == key)
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    attempt += 1;
                    tracing::warn!(
                        chain = %self.chain.id,
                        "another process appended to this process's audit chain (do two nodes \
                         share a data directory's audit-chain?); reloading its head"
                    );
                    let ceiling_ms = 1u64 << attempt.min(5);
                    let jitter = keyshift_crypto::random_bytes(1).map_or(0, |b| u64::from(b[0]));
                    tokio::time::sleep(std::time::Duration::from_micros(
                        ceiling_ms * 1000 * (128 + jitter) / 384,
                    ))
                    .await;
                    self.chain = load_chain(self.store.as_ref(), &self.mac_key, &self.chain.id)
                        .await?
                        .ok_or_else(|| altered_head(&self.chain.id))?;
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
        let chain_id = self.chain.id.clone();
        let first = self.chain.next_seq;
        let before = self.chain.last_hash;
        let mut prev = before;
        let mut canonical = Vec::with_capacity(batch.len());
        let entries = batch.iter_mut().flat_map(|s| s.entries.iter_mut());
        for (i, entry) in entries.enumerate() {
            entry.event.seq = first + i as u64;
            entry.event.chain.clone_from(&chain_id);
            let c = entry.event.canonical();
            prev = chain_hash(&prev, &c);
            canonical.push(c);
        }
        let next_seq = first + canonical.len() as u64;
        let head = head_record(&self.mac_key, &chain_id, next_seq, &prev);
        let block = encode_block(first, &before, &prev, &canonical);
        let mut ops = vec![
            Op::Put {
                ns: ns::AUDIT,
                key: block_key(&chain_id, first),
                value: block,
                expect: Expect::Absent,
            },
            Op::Put {
                ns: ns::META,
                key: head_key(&chain_id),
                value: serde_json::to_vec(&head).map_err(|e| StoreError::Backend(e.to_string()))?,
                expect: match self.chain.revision {
                    Some(r) => Expect::Revision(r),
                    None => Expect::Absent,
                },
            },
        ];
        for (request_id, expect) in batch.iter().filter_map(|s| s.clears_pending.as_ref()) {
            ops.push(Op::Delete {
                ns: ns::AUDIT_PENDING,
                key: request_id.clone(),
                expect: *expect,
            });
        }
        // Usage counters touched by this batch: grouped by borrowed names first (most batches
        // touch a handful), then merged with this chain's stored counters, written once each.
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
            let k = usage_key(vault_id, key, version, principal, operation, &chain_id);
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
            id: chain_id,
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

    /// Chains the pending copies `which` selects, each claimed in the transaction that chains
    /// it; how many.
    async fn claim_pending(&mut self, which: Claim) -> Result<usize> {
        let stale_before = self.clock.now_millis() - STALE_PENDING_MS;
        let mut chained = 0;
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
                let stale = parse_time(&p.event.time).is_none_or(|t| t < stale_before);
                let ours = match &p.writer {
                    None => true,
                    Some(w) => *w == self.chain.id,
                };
                if !(stale || which == Claim::AtStart && ours) {
                    continue;
                }
                let mut event = p.event;
                event.status = STATUS_INTERRUPTED;
                batch.push(Submission {
                    clears_pending: Some((r.key.clone(), Expect::Revision(r.revision))),
                    entries: vec![Entry {
                        vault_id: p.vault_id,
                        event,
                        counts_as_use: false,
                    }],
                    done: None,
                });
            }
            if batch.is_empty() {
                continue;
            }
            self.append(&mut batch).await?;
            if !batch.is_empty() {
                tracing::warn!(
                    events = batch.len(),
                    "chained audit events of changes whose answers may not have been sent"
                );
            }
            chained += batch.len();
        }
        Ok(chained)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Submission>) {
        let mut batch = Vec::new();
        let mut sweep =
            tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => s,
                    None => return,
                },
                _ = sweep.tick() => {
                    if let Err(e) = self.claim_pending(Claim::Stale).await {
                        tracing::warn!(error = %e.message, "looking for stale pending audit events failed");
                    }
                    continue;
                }
            };
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

    /// Names the chain this process's audit writer appends to (see the module): `keyshift serve`
    /// passes the one its data directory keeps, so that a node's restarts continue its chain and
    /// chain what its previous run left pending. Without it, [`Deployment::start_audit`] makes a
    /// fresh one. Refuses an id [`valid_chain_id`] refuses, or a second call.
    pub fn set_audit_chain(&self, id: &str) -> Result<()> {
        if !valid_chain_id(id) {
            return Err(ApiError::new(
                ErrorCode::BadParameter,
                format!("{id:?} cannot name an audit chain: use 1 to 64 of a-z, 0-9, - and _, starting with a letter"),
            ));
        }
        self.audit_chain.set(id.to_owned()).map_err(|_| {
            ApiError::new(
                ErrorCode::InternalError,
                "The audit chain is already named.",
            )
        })
    }

    /// The chain this process's audit writer appends to, once it runs.
    pub fn audit_chain(&self) -> Option<&str> {
        self.audit.get().map(|w| w.chain.as_str())
    }

    /// Starts the audit writer: opens (or creates and registers) its chain, chains the pending
    /// events a crash left behind, then takes events. The server calls this once before it
    /// listens; until then nothing is audited.
    pub async fn start_audit(&self) -> Result<()> {
        let chain = match self.audit_chain.get() {
            Some(c) => c.clone(),
            None => new_chain_id()?,
        };
        self.start_writer(&chain).await
    }

    /// Starts an audit writer that appends to the legacy chain, as versions before per-writer
    /// chains did (no registry): for tests of upgrades only.
    #[doc(hidden)]
    pub async fn start_legacy_audit_for_tests(&self) -> Result<()> {
        self.start_writer(LEGACY_CHAIN).await
    }

    async fn start_writer(&self, chain: &str) -> Result<()> {
        let mac_key = self.audit_mac_key().await?;
        let chain = open_chain(self.store.as_ref(), &mac_key, chain).await?;
        let id = chain.id.clone();
        let mut writer = Writer {
            store: self.store.clone(),
            clock: self.clock.clone(),
            mac_key,
            chain,
            usage: HashMap::new(),
        };
        writer.claim_pending(Claim::AtStart).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        if self.audit.set(AuditWriter { tx, chain: id }).is_err() {
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
            subject: shared.subject.clone(),
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
            .then(|| (trace.draft.request_id.clone(), Expect::Any));
        let mut event = trace.draft;
        if event.key.is_none() {
            event.key = trace.subject.into_inner();
        }
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

    /// The chains to read: the registered ones (the registry is not checked here, that is
    /// [`Deployment::verify_audit`]'s work), and the legacy chain if it has a head or a block.
    pub async fn audit_chains(&self) -> Result<Vec<String>> {
        let mut chains = match self
            .store
            .get(ns::META, REGISTRY_KEY)
            .await
            .map_err(store_error)?
        {
            Some(r) => from_json::<ChainRegistry>(&r.value)?.chains,
            None => Vec::new(),
        };
        if !chains.iter().any(|c| c == LEGACY_CHAIN) {
            let head = self
                .store
                .get(ns::META, HEAD_KEY)
                .await
                .map_err(store_error)?;
            let first = self
                .store
                .list(ns::AUDIT, "", None, 1)
                .await
                .map_err(store_error)?;
            if head.is_some() || first.first().is_some_and(|r| !r.key.contains('/')) {
                chains.push(LEGACY_CHAIN.to_owned());
            }
        }
        chains.sort();
        chains.dedup();
        Ok(chains)
    }

    /// Up to `limit` blocks of `chain` after store key `after`, decoded, their events naming
    /// the chain; and whether the chain ends there.
    async fn chain_blocks(
        &self,
        chain: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Block>, bool)> {
        let prefix = if chain == LEGACY_CHAIN {
            String::new()
        } else {
            format!("{chain}/")
        };
        let page = self
            .store
            .list(ns::AUDIT, &prefix, after, limit)
            .await
            .map_err(store_error)?;
        let mut end = page.len() < limit;
        let mut blocks = Vec::with_capacity(page.len());
        for r in page {
            // The legacy chain's keys sort before every other chain's.
            if chain == LEGACY_CHAIN && r.key.contains('/') {
                end = true;
                break;
            }
            let mut block = Block::decode(&r.value).map_err(|e| {
                tracing::error!(key = %r.key, error = %e, "an audit block does not decode");
                ApiError::internal()
            })?;
            for e in &mut block.events {
                e.chain = chain.to_owned();
            }
            blocks.push(block);
        }
        Ok((blocks, end))
    }

    /// One page of stored events, of every chain merged by time (then chain, then sequence
    /// number: each chain is read in its order, and the next event is the earliest of the
    /// chains' next ones), at most `limit`, after the cursor `after`; and the cursor to continue
    /// from (`None` at the end). A cursor holds each chain's position; chains it does not name
    /// are read from their start.
    pub async fn audit_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        let limit = limit.max(1);
        let mut positions = parse_cursor(after.unwrap_or(""))?;
        struct Stream {
            chain: String,
            /// Events not yet returned, each with the first sequence number of its block.
            events: std::collections::VecDeque<(u64, AuditEvent)>,
            end: bool,
        }
        let mut streams = Vec::new();
        for chain in self.audit_chains().await? {
            let (block_first, next_seq) = positions.get(&chain).copied().unwrap_or((0, 0));
            let mut after_key = block_first.checked_sub(1).map(|k| block_key(&chain, k));
            let mut events = std::collections::VecDeque::new();
            let end = loop {
                let (blocks, end) = self.chain_blocks(&chain, after_key.as_deref(), 8).await?;
                for b in blocks {
                    after_key = Some(block_key(&chain, b.first_seq));
                    for e in b.events {
                        if e.seq >= next_seq {
                            events.push_back((b.first_seq, e));
                        }
                    }
                }
                if end {
                    break true;
                }
                if events.len() >= limit {
                    break false;
                }
            };
            streams.push(Stream { chain, events, end });
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let next = streams
                .iter_mut()
                .filter(|s| !s.events.is_empty())
                .min_by(|a, b| {
                    let (x, y) = (&a.events[0].1, &b.events[0].1);
                    (&x.time, &x.chain, x.seq).cmp(&(&y.time, &y.chain, y.seq))
                });
            let Some(stream) = next else { break };
            let Some((block_first, e)) = stream.events.pop_front() else {
                break;
            };
            positions.insert(stream.chain.clone(), (block_first, e.seq + 1));
            out.push(e);
            // A chain read only in part ran out: every chain has given all it was asked for.
            if stream.events.is_empty() && !stream.end {
                break;
            }
        }
        let done = streams.iter().all(|s| s.end && s.events.is_empty());
        Ok((out, (!done).then(|| format_cursor(&positions))))
    }

    /// Events passing `filter`, oldest first (see [`Deployment::audit_page`]), at most `limit`.
    pub async fn audit_events(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (events, next) = self.audit_page(after.as_deref(), READ_PAGE).await?;
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

    /// Walks every chain: every block stored where its first event says, every sequence number
    /// once and in order, every block starting from the hash the one before ended on (the first
    /// from the chain's floor, or its genesis) and ending on the hash its events give, and the
    /// head's HMAC over the last of them. Then the registry: its HMAC, every chain it lists
    /// present with its head, and no chain (blocks or head) it does not list.
    ///
    /// The reads are not one snapshot: a prune that moves a floor during the walk can make a
    /// chain look cut. So a break found while a floor changed is checked again (five times at
    /// most).
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        let mut again = 0;
        loop {
            let floors = self.floor_revisions().await?;
            let v = self.verify_audit_once().await?;
            if v.intact || again == 5 || self.floor_revisions().await? == floors {
                return Ok(v);
            }
            again += 1;
        }
    }

    /// Each floor record's key and revision.
    async fn floor_revisions(&self) -> Result<Vec<(String, i64)>> {
        Ok(self
            .list_records(ns::META, &format!("{FLOOR_KEY}/"))
            .await?
            .into_iter()
            .map(|r| (r.key, r.revision))
            .collect())
    }

    async fn verify_audit_once(&self) -> Result<AuditVerification> {
        let mac_key = self.audit_mac_key().await?;
        let mut events = 0u64;
        let broken = |events: u64, chains: usize, problem: String| AuditVerification {
            events,
            chains,
            intact: false,
            problem: Some(problem),
            pruned: 0,
        };
        // The registry.
        let registry = match self
            .store
            .get(ns::META, REGISTRY_KEY)
            .await
            .map_err(store_error)?
        {
            None => None,
            Some(r) => match serde_json::from_slice::<ChainRegistry>(&r.value) {
                Ok(reg) => {
                    let mac = keyshift_api::b64::decode(&reg.mac).unwrap_or_default();
                    if !hmac_sha256_verify(&mac_key, &registry_mac_input(&reg.chains), &mac) {
                        return Ok(broken(
                            0,
                            0,
                            "the registry of audit chains was altered (its HMAC does not verify)"
                                .into(),
                        ));
                    }
                    Some(reg.chains)
                }
                Err(_) => {
                    return Ok(broken(
                        0,
                        0,
                        "the registry of audit chains does not parse".into(),
                    ))
                }
            },
        };
        // Where pruned chains start.
        let mut floors: std::collections::BTreeMap<String, Floor> = Default::default();
        let floor_prefix = format!("{FLOOR_KEY}/");
        for r in self.list_records(ns::META, &floor_prefix).await? {
            let chain = &r.key[floor_prefix.len()..];
            match parse_floor(&mac_key, chain, &r.value) {
                Ok(floor) => {
                    floors.insert(chain.to_owned(), floor);
                }
                Err(problem) => return Ok(broken(0, 0, problem)),
            }
        }
        // Every chain's blocks, in key order: chain by chain, each in sequence order.
        let mut walked: std::collections::BTreeMap<String, ChainWalk> = Default::default();
        let mut walk: Option<ChainWalk> = None;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(ns::AUDIT, "", after.as_deref(), 64)
                .await
                .map_err(store_error)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for r in page {
                let chain = chain_of_key(&r.key);
                if walk.as_ref().is_none_or(|w| w.chain != chain) {
                    if let Some(w) = walk.take() {
                        walked.insert(w.chain.clone(), w);
                    }
                    walk = Some(ChainWalk::new(chain, floors.get(chain)));
                }
                if let Some(w) = walk.as_mut() {
                    if let Err(problem) = w.step(&r.key, &r.value) {
                        return Ok(broken(
                            events + w.held(),
                            walked.len() + 1,
                            format!("chain {chain}: {problem}"),
                        ));
                    }
                }
            }
        }
        if let Some(w) = walk.take() {
            walked.insert(w.chain.clone(), w);
        }
        // The heads.
        let head_prefix = format!("{HEAD_KEY}/");
        let mut heads: std::collections::BTreeMap<String, Vec<u8>> = self
            .list_records(ns::META, &head_prefix)
            .await?
            .into_iter()
            .map(|r| (r.key[head_prefix.len()..].to_owned(), r.value))
            .collect();
        if let Some(r) = self
            .store
            .get(ns::META, HEAD_KEY)
            .await
            .map_err(store_error)?
        {
            heads.insert(LEGACY_CHAIN.to_owned(), r.value);
        }
        let mut chains: std::collections::BTreeSet<String> =
            registry.iter().flatten().cloned().collect();
        chains.extend(walked.keys().cloned());
        chains.extend(heads.keys().cloned());
        chains.extend(floors.keys().cloned());
        let count = chains.len();
        for chain in &chains {
            let registered = match &registry {
                Some(list) => list.contains(chain),
                // A store only earlier versions wrote.
                None => chain == LEGACY_CHAIN,
            };
            let walk = walked
                .remove(chain)
                .unwrap_or_else(|| ChainWalk::new(chain, floors.get(chain)));
            let counted = events + walk.held();
            if !registered {
                return Ok(broken(
                    counted,
                    count,
                    format!(
                        "chain {chain} is not in the registry of audit chains: its records were \
                         added outside Keyshift, or the registry was rolled back"
                    ),
                ));
            }
            let head = match heads.get(chain) {
                None if walk.expected_seq == 0 && registry.is_none() => continue,
                None if chain == LEGACY_CHAIN && walk.expected_seq > 0 => {
                    return Ok(broken(
                        counted,
                        count,
                        format!("chain {chain}: the chain's head record is missing"),
                    ))
                }
                None => {
                    return Ok(broken(
                        counted,
                        count,
                        format!(
                            "chain {chain} is registered but its head is missing: the chain was \
                             deleted{}",
                            if walk.held() > 0 {
                                " (its events are left)"
                            } else {
                                ""
                            }
                        ),
                    ))
                }
                Some(value) => match serde_json::from_slice::<AuditHead>(value) {
                    Ok(h) => h,
                    Err(_) => {
                        return Ok(broken(
                            counted,
                            count,
                            format!("chain {chain}: the chain's head record does not parse"),
                        ))
                    }
                },
            };
            let mac = keyshift_api::b64::decode(&head.mac).unwrap_or_default();
            if !hmac_sha256_verify(
                &mac_key,
                &head_mac_input(chain, head.next_seq, &head.last_hash),
                &mac,
            ) {
                return Ok(broken(
                    counted,
                    count,
                    format!(
                        "chain {chain}: the chain's head was altered (its HMAC does not verify)"
                    ),
                ));
            }
            if head.next_seq != walk.expected_seq {
                return Ok(broken(
                    counted,
                    count,
                    format!(
                        "chain {chain}: the chain holds {} events but its head says {}: events were removed from the end",
                        walk.expected_seq, head.next_seq
                    ),
                ));
            }
            if unhex32(&head.last_hash) != Some(walk.last_hash) {
                return Ok(broken(
                    counted,
                    count,
                    format!(
                        "chain {chain}: the chain's last hash is not the one its head recorded: \
                         events were rewritten"
                    ),
                ));
            }
            events = counted;
        }
        Ok(AuditVerification {
            events,
            chains: count,
            intact: true,
            problem: None,
            pruned: floors.values().map(|f| f.first_seq).sum(),
        })
    }

    /// Where `chain` starts (its floor, checked) and the floor record's revision.
    async fn audit_floor(&self, mac_key: &[u8], chain: &str) -> Result<(Floor, Option<i64>)> {
        match self
            .store
            .get(ns::META, &floor_key(chain))
            .await
            .map_err(store_error)?
        {
            None => Ok((Floor::genesis(chain), None)),
            Some(r) => match parse_floor(mac_key, chain, &r.value) {
                Ok(floor) => Ok((floor, Some(r.revision))),
                Err(problem) => {
                    tracing::error!(%problem, "an audit floor does not verify");
                    Err(altered_head(chain))
                }
            },
        }
    }

    /// The oldest blocks of `chain` whose every event arrived before `before_ms`, oldest first,
    /// at most `limit`: what [`Deployment::prune_audit_blocks`] may drop next. Only a run from
    /// the chain's start is returned (a block with a later event ends it), so a chain is only
    /// ever cut at its start.
    pub async fn audit_prunable(
        &self,
        chain: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<Block>> {
        let before = format_millis(before_ms);
        let (blocks, _) = self.chain_blocks(chain, None, limit.max(1)).await?;
        Ok(blocks
            .into_iter()
            .take_while(|b| b.events.iter().all(|e| e.time < before))
            .collect())
    }

    /// Drops `blocks` of `chain`, as [`Deployment::audit_prunable`] gave them, and moves the
    /// chain's floor past them, in one commit carrying `ctx`'s audit event. Refused unless they
    /// are the chain's first blocks and verify (each follows on from the one before, from the
    /// floor, and ends on the hash its events give): pruning never drops evidence of tampering,
    /// and never cuts a chain anywhere but at its start. The head is left as it is, so events
    /// cut off the end are still caught.
    pub async fn prune_audit_blocks(
        &self,
        ctx: &RequestContext,
        chain: &str,
        blocks: &[Block],
    ) -> Result<u64> {
        let mac_key = self.audit_mac_key().await?;
        let (floor, revision) = self.audit_floor(&mac_key, chain).await?;
        let mut walk = ChainWalk::new(chain, Some(&floor));
        let mut ops = Vec::with_capacity(blocks.len() + 1);
        for block in blocks {
            let key = block_key(chain, block.first_seq);
            walk.step(&key, &block.encode()).map_err(|problem| {
                ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "Chain {chain} cannot be pruned there: {problem}. Run `keyshift audit verify`."
                    ),
                )
            })?;
            ops.push(Op::Delete {
                ns: ns::AUDIT,
                key,
                expect: Expect::Any,
            });
        }
        if ops.is_empty() {
            return Ok(0);
        }
        let next = Floor {
            first_seq: walk.expected_seq,
            prev: walk.last_hash,
        };
        ops.push(Op::Put {
            ns: ns::META,
            key: floor_key(chain),
            value: to_json(&floor_record(&mac_key, chain, next))?,
            expect: revision.map_or(Expect::Absent, Expect::Revision),
        });
        self.commit_as(ctx, ops).await.map_err(|e| match e {
            StoreError::Conflict { .. } => ApiError::conflict(format!(
                "Chain {chain} was pruned by someone else meanwhile; run the command again."
            )),
            other => store_error(other),
        })?;
        Ok(walk.held())
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
            let usage = self.list_all::<UsageRecord>(ns::KEY_USAGE, &prefix).await?;
            // One counter per chain (and one from before chains had their own): added up.
            let mut merged: std::collections::BTreeMap<(String, String), UsageEntry> =
                Default::default();
            for u in usage {
                match merged.entry((u.principal.clone(), u.operation.clone())) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(UsageEntry {
                            principal: u.principal,
                            operation: u.operation,
                            count: u.count,
                            first_used: u.first,
                            last_used: u.last,
                        });
                    }
                    std::collections::btree_map::Entry::Occupied(mut slot) => {
                        let e = slot.get_mut();
                        e.count += u.count;
                        if u.first < e.first_used {
                            e.first_used = u.first;
                        }
                        if u.last > e.last_used {
                            e.last_used = u.last;
                        }
                    }
                }
            }
            let usage = merged.into_values().collect();
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
    fn deflate_into_gives_the_bytes_of_compress_to_vec_again_and_again() {
        for len in [0usize, 1, 100, 5_000, 300_000] {
            let input: Vec<u8> = (0..len)
                .map(|i| (i % 97) as u8 ^ (i / 1000) as u8)
                .collect();
            for _ in 0..3 {
                let mut out = b"head".to_vec();
                deflate_into(&input, &mut out);
                assert_eq!(&out[..4], b"head");
                assert_eq!(
                    out[4..],
                    miniz_oxide::deflate::compress_to_vec(&input, 1),
                    "{len}"
                );
            }
        }
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
