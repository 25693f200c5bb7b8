//! The audit log's chain: what `verify_audit` catches, what a crash leaves, what usage counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_api::keys::{KeyCreateParameters, KeyOperationsParameters};
use keyshift_crypto::seal::SealingKey;
use keyshift_store::sqlite::SqliteStore;
use keyshift_store::{Expect, Op, Store};
use keyshift_vault::audit::{AuditEvent, AuditFilter, Block, Trace};
use keyshift_vault::records::ns;
use keyshift_vault::{
    Deployment, FakeClock, KeyOperation, RequestContext, VaultKind, VaultRecord, VaultSpec,
};
use std::sync::Arc;

/// The chain of the fixture's deployment (a node's, kept across its restarts).
const NODE_A: &str = "node-a";

struct Fixture {
    d: Deployment,
    store: Arc<SqliteStore>,
    root: Vec<u8>,
    vault: Arc<VaultRecord>,
    clock: Arc<FakeClock>,
    dir: tempfile::TempDir,
    n: std::sync::atomic::AtomicU64,
}

async fn fixture() -> Fixture {
    fixture_as(Some(NODE_A)).await
}

/// A fixture whose deployment writes `chain`, or the legacy chain as earlier versions did.
async fn fixture_as(chain: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
    let root = SealingKey::generate().unwrap();
    let root_bytes = root.to_bytes().to_vec();
    let clock = Arc::new(FakeClock::new(1_800_000_000));
    let (d, _) = Deployment::open(store.clone(), clock.clone(), root)
        .await
        .unwrap();
    match chain {
        Some(c) => {
            d.set_audit_chain(c).unwrap();
            d.start_audit().await.unwrap();
        }
        None => d.start_legacy_audit_for_tests().await.unwrap(),
    }
    let vault = d
        .create_vault(
            &keyshift_vault::RequestContext::local(),
            VaultSpec {
                name: "kv1".into(),
                kind: VaultKind::Vault,
                retention_days: 7,
                purge_protection: false,
                port: None,
                new_security_domain: false,
                default: true,
            },
        )
        .await
        .unwrap();
    Fixture {
        d,
        store,
        root: root_bytes,
        vault,
        clock,
        dir,
        n: Default::default(),
    }
}

impl Fixture {
    /// Another node on the same store, writing `chain` (a fresh one if `None`).
    async fn node(&self, chain: Option<&str>) -> Deployment {
        let root = SealingKey::from_bytes(&self.root).unwrap();
        let (d, _) = Deployment::open(self.store.clone(), self.clock.clone(), root)
            .await
            .unwrap();
        if let Some(c) = chain {
            d.set_audit_chain(c).unwrap();
        }
        d.start_audit().await.unwrap();
        d
    }

    /// `n` refused reads audited by `node`, one at a time, each a second after the last.
    async fn events_on(&self, node: &Deployment, n: usize) {
        for i in 0..n {
            self.clock.advance(1);
            let (_, t) = self.traced("carol", "getKey", Some(&format!("x{i}")));
            node.finish_trace(t, 404, 1).await.unwrap();
        }
    }

    /// Deletes every record of `chain`: its blocks and its head.
    async fn delete_chain(&self, chain: &str) {
        let mut ops: Vec<Op> = self
            .store
            .list(ns::AUDIT, &format!("{chain}/"), None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| Op::Delete {
                ns: ns::AUDIT,
                key: r.key,
                expect: Expect::Any,
            })
            .collect();
        ops.push(Op::Delete {
            ns: ns::META,
            key: format!("audit_head/{chain}"),
            expect: Expect::Any,
        });
        self.store.commit(ops).await.unwrap();
    }

    /// `n` audited wrapKey requests of alice's with key `k`, each answered 200.
    async fn wraps_by_alice(&self, n: usize) {
        for _ in 0..n {
            let (ctx, t) = self.traced("alice", "wrapKey", Some("k"));
            self.d
                .key_operation(&ctx, &self.vault, "k", None, KeyOperation::WrapKey, wrap())
                .await
                .unwrap();
            self.d.finish_trace(t.clone(), 200, 10).await.unwrap();
        }
    }

    /// A traced context of principal `who` asking `op` about `key`.
    fn traced(&self, who: &str, op: &str, key: Option<&str>) -> (RequestContext, Arc<Trace>) {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut draft = AuditEvent::draft(
            self.clock.now_millis_for_test(),
            format!("req-{n}"),
            "127.0.0.1:5000",
            "kv1",
            op,
        );
        draft.principal = Some(who.into());
        draft.key = key.map(str::to_owned);
        let trace = Arc::new(Trace::new(&self.vault, draft));
        (
            RequestContext::system("https://kv.test").with_trace(trace.clone()),
            trace,
        )
    }

    /// Runs a few audited requests: a create, two wraps, a refused call.
    async fn some_events(&mut self) -> String {
        let (ctx, t) = self.traced("alice", "createKey", Some("k"));
        let key = self
            .d
            .create_key(
                &ctx,
                &self.vault,
                "k",
                KeyCreateParameters {
                    kty: Some("oct".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        self.d.finish_trace(t.clone(), 200, 10).await.unwrap();
        for who in ["alice", "bob"] {
            let (ctx, t) = self.traced(who, "wrapKey", Some("k"));
            self.d
                .key_operation(&ctx, &self.vault, "k", None, KeyOperation::WrapKey, wrap())
                .await
                .unwrap();
            self.d.finish_trace(t.clone(), 200, 10).await.unwrap();
        }
        let (_, t) = self.traced("mallory", "unwrapKey", Some("k"));
        self.d.finish_trace(t.clone(), 403, 10).await.unwrap();
        key.key.kid.unwrap()
    }

    async fn blocks(&self) -> Vec<(String, Block)> {
        self.store
            .list(ns::AUDIT, "", None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.key, Block::decode(&r.value).unwrap()))
            .collect()
    }

    async fn put_block(&self, key: &str, block: &Block) {
        self.store
            .commit(vec![Op::Put {
                ns: ns::AUDIT,
                key: key.into(),
                value: block.encode(),
                expect: Expect::Any,
            }])
            .await
            .unwrap();
    }

    async fn problem(&self) -> String {
        let v = self.d.verify_audit().await.unwrap();
        assert!(!v.intact, "verify found nothing wrong");
        v.problem.unwrap()
    }
}

trait ClockExt {
    fn now_millis_for_test(&self) -> i64;
}

impl ClockExt for FakeClock {
    fn now_millis_for_test(&self) -> i64 {
        keyshift_vault::Clock::now_millis(self)
    }
}

fn wrap() -> KeyOperationsParameters {
    KeyOperationsParameters {
        alg: "A256KW".into(),
        value: vec![7u8; 32],
        iv: None,
        aad: None,
        tag: None,
    }
}

/// Four more events, each in a block of its own (each is chained before the next is sent),
/// then three in one block (sent together, so the writer takes them as one batch).
async fn one_event_per_block(f: &mut Fixture) {
    for i in 0..4 {
        let (_, t) = f.traced("alice", "getKey", Some(&format!("k{i}")));
        f.d.finish_trace(t.clone(), 404, 1).await.unwrap();
    }
    let (_, a) = f.traced("alice", "getKey", Some("b1"));
    let (_, b) = f.traced("alice", "getKey", Some("b2"));
    let (_, c) = f.traced("alice", "getKey", Some("b3"));
    let (x, y, z) = tokio::join!(
        f.d.finish_trace(a.clone(), 404, 1),
        f.d.finish_trace(b.clone(), 404, 1),
        f.d.finish_trace(c.clone(), 404, 1)
    );
    x.unwrap();
    y.unwrap();
    z.unwrap();
}

#[tokio::test]
async fn an_untouched_chain_verifies_and_lists() {
    let mut f = fixture().await;
    f.some_events().await;
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!(v.events, 4);
    let all =
        f.d.audit_events(&AuditFilter::default(), 100)
            .await
            .unwrap();
    assert_eq!(
        all.iter().map(|e| e.operation.as_str()).collect::<Vec<_>>(),
        ["createKey", "wrapKey", "wrapKey", "unwrapKey"]
    );
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
    // The wraps named no version; the event has the one the operation resolved to.
    let version = all[1].version.clone().unwrap();
    assert_eq!(version.len(), 32);
    assert_eq!(
        all[0].version.as_ref().map(String::len),
        Some(32),
        "create records the version it made"
    );
    let refused =
        f.d.audit_events(
            &AuditFilter {
                result: Some("failure".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].principal.as_deref(), Some("mallory"));
    // No pending copies are left once events are chained.
    assert!(f
        .store
        .list(ns::AUDIT_PENDING, "", None, 10)
        .await
        .unwrap()
        .is_empty());
}

/// The chain hash after `events`, starting from `prev`.
fn rechain(prev: [u8; 32], events: &[AuditEvent]) -> [u8; 32] {
    events.iter().fold(prev, |h, e| e.chain_hash(&h))
}

#[tokio::test]
async fn a_modified_event_is_caught_even_with_its_hash_recomputed() {
    let mut f = fixture().await;
    f.some_events().await;
    one_event_per_block(&mut f).await;
    let blocks = f.blocks().await;
    // The refused unwrap becomes a success.
    let (key, mut block) = blocks
        .iter()
        .find(|(_, b)| b.events[0].operation == "unwrapKey")
        .cloned()
        .unwrap();
    block.events[0].status = 200;
    f.put_block(&key, &block).await;
    let problem = f.problem().await;
    assert!(problem.contains("was modified"), "{problem}");

    // Recomputing the block's hash moves the break to the next block.
    block.last = rechain(block.prev, &block.events);
    f.put_block(&key, &block).await;
    let problem = f.problem().await;
    assert!(problem.contains("does not follow"), "{problem}");
}

#[tokio::test]
async fn a_rewritten_chain_is_caught_by_its_head() {
    let mut f = fixture().await;
    f.some_events().await;
    // Rewrite every block from the first on, with valid hashes: only the head's HMAC is left.
    let mut prev = keyshift_vault::audit::genesis(NODE_A);
    for (key, mut block) in f.blocks().await {
        for e in &mut block.events {
            if e.principal.as_deref() == Some("mallory") {
                e.principal = Some("alice".into());
            }
        }
        block.prev = prev;
        block.last = rechain(prev, &block.events);
        prev = block.last;
        f.put_block(&key, &block).await;
    }
    let problem = f.problem().await;
    assert!(problem.contains("events were rewritten"), "{problem}");

    // Rewriting the head too, without the MAC key, does not help.
    let head_key = format!("audit_head/{NODE_A}");
    let head = f.store.get(ns::META, &head_key).await.unwrap().unwrap();
    let mut head: serde_json::Value = serde_json::from_slice(&head.value).unwrap();
    head["last_hash"] = keyshift_vault::audit::hex(&prev).into();
    f.store
        .commit(vec![Op::Put {
            ns: ns::META,
            key: head_key,
            value: serde_json::to_vec(&head).unwrap(),
            expect: Expect::Any,
        }])
        .await
        .unwrap();
    assert!(f.problem().await.contains("HMAC"));
}

#[tokio::test]
async fn a_deleted_event_is_caught() {
    let mut f = fixture().await;
    f.some_events().await;
    one_event_per_block(&mut f).await;
    // From inside a block.
    let blocks = f.blocks().await;
    let (key, original) = blocks.last().cloned().unwrap();
    assert_eq!(original.events.len(), 3);
    let mut block = original.clone();
    block.events.remove(1);
    f.put_block(&key, &block).await;
    assert!(f.problem().await.contains("missing or out of order"));
    f.put_block(&key, &original).await;
    assert!(f.d.verify_audit().await.unwrap().intact);
    // A whole record in the middle.
    let middle = &blocks[blocks.len() - 3].0;
    f.store
        .commit(vec![Op::Delete {
            ns: ns::AUDIT,
            key: middle.clone(),
            expect: Expect::Any,
        }])
        .await
        .unwrap();
    assert!(f.problem().await.contains("missing or out of order"));
}

#[tokio::test]
async fn events_cut_off_the_end_are_caught() {
    let mut f = fixture().await;
    f.some_events().await;
    one_event_per_block(&mut f).await;
    let blocks = f.blocks().await;
    f.store
        .commit(vec![Op::Delete {
            ns: ns::AUDIT,
            key: blocks.last().unwrap().0.clone(),
            expect: Expect::Any,
        }])
        .await
        .unwrap();
    assert!(f.problem().await.contains("removed from the end"));
}

#[tokio::test]
async fn reordered_events_are_caught() {
    let mut f = fixture().await;
    f.some_events().await;
    one_event_per_block(&mut f).await;
    let blocks = f.blocks().await;
    // Two events swapped inside one record.
    let (key, original) = blocks.last().cloned().unwrap();
    let mut block = original.clone();
    block.events.swap(0, 2);
    f.put_block(&key, &block).await;
    let problem = f.problem().await;
    assert!(
        problem.contains("starts with event") || problem.contains("out of order"),
        "{problem}"
    );
    f.put_block(&key, &original).await;
    // Swap the contents of two records (each keeps its key).
    let (a, b) = (&blocks[blocks.len() - 3], &blocks[blocks.len() - 2]);
    f.put_block(&a.0, &b.1).await;
    f.put_block(&b.0, &a.1).await;
    let problem = f.problem().await;
    assert!(problem.contains("starts with event"), "{problem}");
    // Swap two events and their keys too: the sequence numbers are out of order.
    f.put_block(&a.0, &a.1).await;
    f.put_block(&b.0, &b.1).await;
    assert!(f.d.verify_audit().await.unwrap().intact);
    let mut x = a.1.clone();
    let mut y = b.1.clone();
    std::mem::swap(&mut x.events[0].seq, &mut y.events[0].seq);
    std::mem::swap(&mut x.first_seq, &mut y.first_seq);
    f.put_block(&a.0, &y).await;
    f.put_block(&b.0, &x).await;
    let problem = f.problem().await;
    assert!(
        problem.contains("does not follow") || problem.contains("modified"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_change_whose_event_was_never_chained_is_chained_at_the_next_start() {
    let mut f = fixture().await;
    f.some_events().await;
    // A create commits (with its pending copy) and the process dies before the event is chained.
    let (ctx, _t) = f.traced("alice", "createKey", Some("crashed"));
    f.d.create_key(
        &ctx,
        &f.vault,
        "crashed",
        KeyCreateParameters {
            kty: Some("EC".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        f.store
            .list(ns::AUDIT_PENDING, "", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // A read-only request that was never finished leaves nothing (and was never answered).
    let (ctx, _t) = f.traced("alice", "getKey", Some("crashed"));
    f.d.get_key(&ctx, &f.vault, "crashed", None).await.unwrap();

    // The node restarts: its chain's writer chains what the previous run left pending.
    let root = SealingKey::from_bytes(&f.root).unwrap();
    let (d2, _) = Deployment::open(f.store.clone(), f.clock.clone(), root)
        .await
        .unwrap();
    d2.set_audit_chain(NODE_A).unwrap();
    d2.start_audit().await.unwrap();
    let events = d2.audit_events(&AuditFilter::default(), 100).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.operation, "createKey");
    assert_eq!(last.key.as_deref(), Some("crashed"));
    assert_eq!(last.status, 0, "answer unknown");
    assert!(f
        .store
        .list(ns::AUDIT_PENDING, "", None, 10)
        .await
        .unwrap()
        .is_empty());
    let v = d2.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!(v.events, 5);
    drop(f.dir);
}

#[tokio::test]
async fn audited_uses_leave_the_change_feed_alone() {
    // Every audit batch writes a block, its chain's head and usage counters; none of them is
    // cached, so none may cost the change feed (and its followers) a row.
    let mut f = fixture().await;
    f.some_events().await;
    let head = f.store.change_head().await.unwrap();
    f.wraps_by_alice(3).await;
    one_event_per_block(&mut f).await;
    assert_eq!(f.store.change_head().await.unwrap(), head);
    // A change to a cached record still reaches the feed.
    f.d.rotate_key(&RequestContext::system("https://kv.test"), &f.vault, "k")
        .await
        .unwrap();
    assert!(f.store.change_head().await.unwrap() > head);
}

#[tokio::test]
async fn usage_counts_successful_uses_per_version_principal_and_operation() {
    let mut f = fixture().await;
    let kid = f.some_events().await;
    let first_version = kid.rsplit('/').next().unwrap().to_owned();
    f.clock.advance(60);
    f.wraps_by_alice(3).await;
    // A new version nobody has used yet.
    f.d.rotate_key(&RequestContext::system("https://kv.test"), &f.vault, "k")
        .await
        .unwrap();
    let report =
        f.d.key_usage(
            &RequestContext::system("https://kv.test"),
            &f.vault,
            "k",
            None,
        )
        .await
        .unwrap();
    assert_eq!(report.versions.len(), 2);
    assert!(
        report.versions[0].usage.is_empty(),
        "the new version is unused"
    );
    let old = &report.versions[1];
    assert!(old.kid.ends_with(&first_version));
    let line = |who: &str, op: &str| {
        old.usage
            .iter()
            .find(|u| u.principal == who && u.operation == op)
            .cloned()
    };
    let alice = line("alice", "wrapKey").unwrap();
    assert_eq!(alice.count, 4);
    assert!(alice.first_used < alice.last_used);
    assert_eq!(line("bob", "wrapKey").unwrap().count, 1);
    assert!(
        line("mallory", "unwrapKey").is_none(),
        "refused requests are not uses"
    );
    assert!(
        line("alice", "createKey").is_none(),
        "create names no version"
    );
    // One version only.
    let one =
        f.d.key_usage(
            &RequestContext::system("https://kv.test"),
            &f.vault,
            "k",
            Some(&first_version),
        )
        .await
        .unwrap();
    assert_eq!(one.versions.len(), 1);
    assert_eq!(one.versions[0].usage.len(), 2);
}

#[tokio::test]
async fn two_chains_verify_and_read_merged_by_time() {
    let mut f = fixture().await;
    f.some_events().await;
    let b = f.node(Some("node-b")).await;
    // Interleaved in time: b, a, b, a, ...
    for _ in 0..5 {
        f.events_on(&b, 1).await;
        f.events_on(&f.d, 1).await;
    }
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!((v.events, v.chains), (14, 2));
    let all =
        f.d.audit_events(&AuditFilter::default(), 1000)
            .await
            .unwrap();
    assert_eq!(all.len(), 14);
    let keys: Vec<(String, String, u64)> = all
        .iter()
        .map(|e| (e.time.clone(), e.chain.clone(), e.seq))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "merged by time, then chain, then seq");
    assert_eq!(all.iter().filter(|e| e.chain == "node-b").count(), 5);
    assert_eq!(all.iter().filter(|e| e.chain == NODE_A).count(), 9);
    // Page by page, with a cursor across chains: the same events.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (events, next) = f.d.audit_page(after.as_deref(), 3).await.unwrap();
        assert!(events.len() <= 3);
        paged.extend(events);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert!(f.d.audit_page(Some("node-b=x"), 3).await.is_err());
}

#[tokio::test]
async fn a_deleted_chain_is_caught() {
    let mut f = fixture().await;
    f.some_events().await;
    let b = f.node(Some("node-b")).await;
    f.events_on(&b, 3).await;
    assert!(f.d.verify_audit().await.unwrap().intact);
    f.delete_chain("node-b").await;
    let problem = f.problem().await;
    assert!(
        problem.contains("node-b is registered but its head is missing"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_registry_entry_without_its_chain_is_caught() {
    let mut f = fixture().await;
    f.some_events().await;
    // A node that started and wrote nothing: its chain is only a head.
    let _c = f.node(Some("node-c")).await;
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!((v.events, v.chains), (4, 2));
    f.delete_chain("node-c").await;
    let problem = f.problem().await;
    assert!(
        problem.contains("node-c is registered but its head is missing"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_chain_the_registry_does_not_list_is_caught() {
    let mut f = fixture().await;
    f.some_events().await;
    let (key, mut block) = f.blocks().await.remove(0);
    // Copied under another chain, it does not follow that chain's genesis.
    let copy = key.replace(NODE_A, "node-x");
    f.put_block(&copy, &block).await;
    let problem = f.problem().await;
    assert!(
        problem.contains("chain node-x") && problem.contains("does not follow"),
        "{problem}"
    );
    // Rechained from it, it makes a chain that holds, but that nobody registered.
    block.prev = keyshift_vault::audit::genesis("node-x");
    block.last = rechain(block.prev, &block.events);
    f.put_block(&copy, &block).await;
    let problem = f.problem().await;
    assert!(
        problem.contains("node-x is not in the registry"),
        "{problem}"
    );
    // Nor can the registry be rewritten without the MAC key.
    let r = f
        .store
        .get(ns::META, "audit_chains")
        .await
        .unwrap()
        .unwrap();
    let mut registry: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    registry["chains"]
        .as_array_mut()
        .unwrap()
        .push("node-x".into());
    f.store
        .commit(vec![Op::Put {
            ns: ns::META,
            key: "audit_chains".into(),
            value: serde_json::to_vec(&registry).unwrap(),
            expect: Expect::Any,
        }])
        .await
        .unwrap();
    assert!(f
        .problem()
        .await
        .contains("registry of audit chains was altered"));
}

#[tokio::test]
async fn a_modified_event_in_the_second_chain_is_caught() {
    let mut f = fixture().await;
    f.some_events().await;
    let b = f.node(Some("node-b")).await;
    f.events_on(&b, 3).await;
    let (key, mut block) = f
        .blocks()
        .await
        .into_iter()
        .find(|(k, _)| k.starts_with("node-b/"))
        .unwrap();
    block.events[0].status = 200;
    f.put_block(&key, &block).await;
    let problem = f.problem().await;
    assert!(
        problem.contains("chain node-b") && problem.contains("was modified"),
        "{problem}"
    );
    // A block moved from one chain to the other does not follow that chain's genesis.
    block.events[0].status = 404;
    f.put_block(&key, &block).await;
    assert!(f.d.verify_audit().await.unwrap().intact);
    let (first_a, a_block) = f.blocks().await.remove(0);
    f.put_block(&key, &a_block).await;
    let problem = f.problem().await;
    assert!(problem.contains("chain node-b"), "{problem} ({first_a})");
}

#[tokio::test]
async fn a_legacy_single_chain_store_still_verifies_and_reads_after_the_upgrade() {
    // A store an earlier version wrote: one chain, its head `audit_head`, no registry.
    let mut f = fixture_as(None).await;
    f.some_events().await;
    one_event_per_block(&mut f).await;
    assert!(f
        .store
        .get(ns::META, "audit_chains")
        .await
        .unwrap()
        .is_none());
    assert!(f.store.get(ns::META, "audit_head").await.unwrap().is_some());
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!((v.events, v.chains), (11, 1));
    let legacy =
        f.d.audit_events(&AuditFilter::default(), 100)
            .await
            .unwrap();
    assert_eq!(legacy.len(), 11);
    assert!(legacy.iter().all(|e| e.chain == "legacy"));

    // The upgrade: a node of this version starts and writes a chain of its own; the legacy chain
    // is registered beside it and still verifies and reads.
    let b = f.node(Some("node-b")).await;
    f.events_on(&b, 3).await;
    let r = f
        .store
        .get(ns::META, "audit_chains")
        .await
        .unwrap()
        .unwrap();
    let registry: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(registry["chains"], serde_json::json!(["legacy", "node-b"]));
    let v = b.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!((v.events, v.chains), (14, 2));
    let all = b.audit_events(&AuditFilter::default(), 100).await.unwrap();
    assert_eq!(all.len(), 14);
    assert_eq!(&all[..11], &legacy[..]);

    // Deleting the legacy chain whole is now caught too.
    let mut ops: Vec<Op> = f
        .blocks()
        .await
        .into_iter()
        .filter(|(k, _)| !k.contains('/'))
        .map(|(key, _)| Op::Delete {
            ns: ns::AUDIT,
            key,
            expect: Expect::Any,
        })
        .collect();
    ops.push(Op::Delete {
        ns: ns::META,
        key: "audit_head".into(),
        expect: Expect::Any,
    });
    f.store.commit(ops).await.unwrap();
    let problem = f.problem().await;
    assert!(
        problem.contains("legacy is registered but its head is missing"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_live_nodes_pending_copy_is_left_to_it_and_a_dead_ones_is_chained_once() {
    let mut f = fixture().await;
    f.some_events().await;
    // Node A commits a create; its event is pending while the request is answered.
    let (ctx, t) = f.traced("alice", "createKey", Some("inflight"));
    f.d.create_key(
        &ctx,
        &f.vault,
        "inflight",
        KeyCreateParameters {
            kty: Some("EC".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Node B starting now leaves it to A, which chains it with its answer.
    let _b = f.node(Some("node-b")).await;
    f.d.finish_trace(t, 200, 5).await.unwrap();
    let of = |events: &[AuditEvent], key: &str| -> Vec<(String, u16)> {
        events
            .iter()
            .filter(|e| e.key.as_deref() == Some(key))
            .map(|e| (e.chain.clone(), e.status))
            .collect()
    };
    let all =
        f.d.audit_events(&AuditFilter::default(), 100)
            .await
            .unwrap();
    assert_eq!(of(&all, "inflight"), [(NODE_A.to_owned(), 200)]);

    // A create whose node dies and never comes back: once stale, the first of two nodes starting
    // together chains it, the other does not.
    let (ctx, _t) = f.traced("alice", "createKey", Some("orphan"));
    f.d.create_key(
        &ctx,
        &f.vault,
        "orphan",
        KeyCreateParameters {
            kty: Some("EC".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _c = f.node(Some("node-c")).await;
    let all =
        f.d.audit_events(&AuditFilter::default(), 100)
            .await
            .unwrap();
    assert!(
        of(&all, "orphan").is_empty(),
        "fresh: its node may be alive"
    );
    f.clock.advance(11 * 60);
    let (d, e) = tokio::join!(f.node(Some("node-d")), f.node(Some("node-e")));
    let all = d.audit_events(&AuditFilter::default(), 100).await.unwrap();
    let chained = of(&all, "orphan");
    assert_eq!(chained.len(), 1, "{chained:?}");
    assert_eq!(chained[0].1, 0, "answer unknown");
    assert!(["node-d", "node-e"].contains(&chained[0].0.as_str()));
    assert!(f
        .store
        .list(ns::AUDIT_PENDING, "", None, 10)
        .await
        .unwrap()
        .is_empty());
    let v = e.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!(v.chains, 5);
}

#[tokio::test]
async fn usage_counts_add_up_across_chains() {
    let mut f = fixture().await;
    f.some_events().await;
    let b = f.node(Some("node-b")).await;
    for _ in 0..3 {
        let (ctx, t) = f.traced("alice", "wrapKey", Some("k"));
        b.key_operation(&ctx, &f.vault, "k", None, KeyOperation::WrapKey, wrap())
            .await
            .unwrap();
        b.finish_trace(t, 200, 10).await.unwrap();
    }
    let report =
        f.d.key_usage(
            &RequestContext::system("https://kv.test"),
            &f.vault,
            "k",
            None,
        )
        .await
        .unwrap();
    let usage = &report.versions[0].usage;
    let alice = usage
        .iter()
        .find(|u| u.principal == "alice" && u.operation == "wrapKey")
        .unwrap();
    assert_eq!(alice.count, 4, "1 on node A, 3 on node B");
    assert_eq!(usage.len(), 2, "{usage:?}");
}

/// `n` refused reads, each in a block of its own, each a second after the last.
async fn blocks_of_one(f: &Fixture, n: usize) {
    f.events_on(&f.d, n).await;
}

async fn floor_value(f: &Fixture) -> Option<Vec<u8>> {
    f.store
        .get(ns::META, &format!("audit_floor/{NODE_A}"))
        .await
        .unwrap()
        .map(|r| r.value)
}

async fn set_floor(f: &Fixture, value: Option<Vec<u8>>) {
    let key = format!("audit_floor/{NODE_A}");
    let op = match value {
        Some(value) => Op::Put {
            ns: ns::META,
            key,
            value,
            expect: Expect::Any,
        },
        None => Op::Delete {
            ns: ns::META,
            key,
            expect: Expect::Any,
        },
    };
    f.store.commit(vec![op]).await.unwrap();
}

/// Prunes `chain` of the events before `before_ms`; how many were dropped.
async fn prune(f: &Fixture, before_ms: i64) -> u64 {
    let blocks = f.d.audit_prunable(NODE_A, before_ms, 256).await.unwrap();
    f.d.prune_audit_blocks(&RequestContext::local(), NODE_A, &blocks)
        .await
        .unwrap()
}

#[tokio::test]
async fn pruning_drops_old_events_from_the_start_and_the_chain_still_verifies() {
    let f = fixture().await;
    blocks_of_one(&f, 5).await;
    let cut = f.clock.now_millis_for_test() + 500;
    blocks_of_one(&f, 4).await;

    assert_eq!(prune(&f, cut).await, 5);
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!((v.events, v.pruned), (4, 5));
    let left =
        f.d.audit_events(&AuditFilter::default(), 100)
            .await
            .unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7, 8]);
    // Nothing more is that old; later events chain on from the floor.
    assert_eq!(prune(&f, cut).await, 0);
    blocks_of_one(&f, 2).await;
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!((v.events, v.pruned), (6, 5));
    // A block holding one event too new for the cut is kept whole, and so is all after it.
    let (_, a) = f.traced("alice", "getKey", Some("a"));
    let (_, b) = f.traced("alice", "getKey", Some("b"));
    f.clock.advance(10);
    let (_, c) = f.traced("alice", "getKey", Some("c"));
    let (x, y, z) = tokio::join!(
        f.d.finish_trace(a.clone(), 404, 1),
        f.d.finish_trace(b.clone(), 404, 1),
        f.d.finish_trace(c.clone(), 404, 1)
    );
    x.unwrap();
    y.unwrap();
    z.unwrap();
    let everything_but_c = f.clock.now_millis_for_test() - 1;
    let pruned = prune(&f, everything_but_c).await;
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!(v.events + v.pruned, 14);
    let left =
        f.d.audit_events(&AuditFilter::default(), 100)
            .await
            .unwrap();
    assert!(left.iter().any(|e| e.key.as_deref() == Some("c")));
    assert_eq!(left.len() as u64, 14 - 5 - pruned);
    // Pruning everything there is leaves a chain that still verifies against its head.
    f.clock.advance(10);
    prune(&f, f.clock.now_millis_for_test()).await;
    let v = f.d.verify_audit().await.unwrap();
    assert!(v.intact, "{:?}", v.problem);
    assert_eq!((v.events, v.pruned), (0, 14));
}

#[tokio::test]
async fn a_pruned_chain_tampered_with_is_caught() {
    let f = fixture().await;
    blocks_of_one(&f, 3).await;
    let first_cut = f.clock.now_millis_for_test() + 500;
    blocks_of_one(&f, 3).await;
    let second_cut = f.clock.now_millis_for_test() + 500;
    blocks_of_one(&f, 3).await;
    assert_eq!(prune(&f, first_cut).await, 3);
    let old_floor = floor_value(&f).await.unwrap();
    assert_eq!(prune(&f, second_cut).await, 3);
    let floor = floor_value(&f).await.unwrap();
    assert!(f.d.verify_audit().await.unwrap().intact);

    // The floor moved on by hand, to hide the events after it: its HMAC no longer holds.
    let mut moved: serde_json::Value = serde_json::from_slice(&floor).unwrap();
    moved["first_seq"] = 7.into();
    set_floor(&f, Some(serde_json::to_vec(&moved).unwrap())).await;
    let problem = f.problem().await;
    assert!(problem.contains("was altered"), "{problem}");

    // The floor deleted: the chain no longer starts where it must.
    set_floor(&f, None).await;
    let problem = f.problem().await;
    assert!(problem.contains("event 0 is missing"), "{problem}");

    // An older floor put back (a rollback): the events between it and the real one are gone.
    set_floor(&f, Some(old_floor)).await;
    let problem = f.problem().await;
    assert!(problem.contains("event 3 is missing"), "{problem}");

    // The real floor back, and the first block after it deleted.
    set_floor(&f, Some(floor)).await;
    assert!(f.d.verify_audit().await.unwrap().intact);
    let (first_key, _) = f.blocks().await.into_iter().next().unwrap();
    f.store
        .commit(vec![Op::Delete {
            ns: ns::AUDIT,
            key: first_key,
            expect: Expect::Any,
        }])
        .await
        .unwrap();
    let problem = f.problem().await;
    assert!(problem.contains("event 6 is missing"), "{problem}");
}

#[tokio::test]
async fn pruning_refuses_blocks_that_do_not_verify_or_do_not_start_the_chain() {
    let f = fixture().await;
    blocks_of_one(&f, 4).await;
    f.clock.advance(10);
    let cut = f.clock.now_millis_for_test();
    let blocks = f.d.audit_prunable(NODE_A, cut, 256).await.unwrap();
    assert_eq!(blocks.len(), 4);

    // Not from the chain's start: refused.
    let err =
        f.d.prune_audit_blocks(&RequestContext::local(), NODE_A, &blocks[1..])
            .await
            .unwrap_err();
    assert!(
        err.message.contains("event 0 is missing"),
        "{}",
        err.message
    );

    // A modified event among them: refused, so the evidence stays.
    let stored = f.blocks().await;
    let (key, mut block) = stored[1].clone();
    block.events[0].status = 200;
    f.put_block(&key, &block).await;
    let blocks = f.d.audit_prunable(NODE_A, cut, 256).await.unwrap();
    let err =
        f.d.prune_audit_blocks(&RequestContext::local(), NODE_A, &blocks)
            .await
            .unwrap_err();
    assert!(err.message.contains("was modified"), "{}", err.message);
    assert_eq!(f.blocks().await.len(), 4, "nothing was dropped");
    assert!(floor_value(&f).await.is_none());
    assert!(f.problem().await.contains("was modified"));
}

/// `verify` while a prune moves the floor: the walk's reads are not one snapshot, so a break
/// seen while a floor moved is checked again, and a log that is intact is reported intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_during_a_prune_reports_the_log_intact() {
    let f = fixture().await;
    blocks_of_one(&f, 120).await;
    let start = f.clock.now_millis_for_test() - 120_000;
    let f = Arc::new(f);
    let pruner = {
        let f = f.clone();
        tokio::spawn(async move {
            // Ten events at a time, a little apart.
            for step in 1..=10 {
                let cut = start + step * 10_000 + 500;
                let blocks = f.d.audit_prunable(NODE_A, cut, 256).await.unwrap();
                f.d.prune_audit_blocks(&RequestContext::local(), NODE_A, &blocks)
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            }
        })
    };
    let mut checks = 0;
    while !pruner.is_finished() {
        let v = f.d.verify_audit().await.unwrap();
        assert!(v.intact, "{:?}", v.problem);
        assert_eq!(v.events + v.pruned, 120);
        checks += 1;
    }
    pruner.await.unwrap();
    assert!(checks > 3, "only {checks} checks ran during the prune");
}
