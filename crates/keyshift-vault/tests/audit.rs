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

struct Fixture {
    d: Deployment,
    store: Arc<SqliteStore>,
    root: Vec<u8>,
    vault: Arc<VaultRecord>,
    clock: Arc<FakeClock>,
    dir: tempfile::TempDir,
    n: u64,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
    let root = SealingKey::generate().unwrap();
    let root_bytes = root.to_bytes().to_vec();
    let clock = Arc::new(FakeClock::new(1_800_000_000));
    let (d, _) = Deployment::open(store.clone(), clock.clone(), root)
        .await
        .unwrap();
    d.start_audit().await.unwrap();
    let vault = d
        .create_vault(VaultSpec {
            name: "kv1".into(),
            kind: VaultKind::Vault,
            retention_days: 7,
            purge_protection: false,
            port: None,
            new_security_domain: false,
            default: true,
        })
        .await
        .unwrap();
    Fixture {
        d,
        store,
        root: root_bytes,
        vault,
        clock,
        dir,
        n: 0,
    }
}

impl Fixture {
    /// A traced context of principal `who` asking `op` about `key`.
    fn traced(&mut self, who: &str, op: &str, key: Option<&str>) -> (RequestContext, Arc<Trace>) {
        self.n += 1;
        let mut draft = AuditEvent::draft(
            self.clock.now_millis_for_test(),
            format!("req-{}", self.n),
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
    let mut prev = [0u8; 32];
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
    let head = f.store.get(ns::META, "audit_head").await.unwrap().unwrap();
    let mut head: serde_json::Value = serde_json::from_slice(&head.value).unwrap();
    head["last_hash"] = keyshift_vault::audit::hex(&prev).into();
    f.store
        .commit(vec![Op::Put {
            ns: ns::META,
            key: "audit_head".into(),
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

    let root = SealingKey::from_bytes(&f.root).unwrap();
    let (d2, _) = Deployment::open(f.store.clone(), f.clock.clone(), root)
        .await
        .unwrap();
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
async fn usage_counts_successful_uses_per_version_principal_and_operation() {
    let mut f = fixture().await;
    let kid = f.some_events().await;
    let first_version = kid.rsplit('/').next().unwrap().to_owned();
    f.clock.advance(60);
    for _ in 0..3 {
        let (ctx, t) = f.traced("alice", "wrapKey", Some("k"));
        f.d.key_operation(&ctx, &f.vault, "k", None, KeyOperation::WrapKey, wrap())
            .await
            .unwrap();
        f.d.finish_trace(t.clone(), 200, 10).await.unwrap();
    }
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
