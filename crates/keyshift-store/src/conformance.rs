//! The behaviour every [`Store`] backend must show. Each backend's tests call [`run_all`].

use crate::{Changes, Expect, Op, Store, StoreError};

/// A failed expectation, with what was expected.
pub type Check = std::result::Result<(), String>;

fn ensure(cond: bool, what: &str) -> Check {
    if cond {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

fn put(ns: &'static str, key: &str, value: &[u8], expect: Expect) -> Op {
    Op::Put {
        ns,
        key: key.to_owned(),
        value: value.to_vec(),
        expect,
    }
}

/// Runs every conformance check against an empty store.
pub async fn run_all(store: &dyn Store) -> Check {
    put_get_and_revisions(store).await?;
    compare_and_set(store).await?;
    batches_are_atomic(store).await?;
    empty_ranges(store).await?;
    listing_by_prefix_and_cursor(store).await?;
    concurrent_writers_never_lose_an_update(store).await?;
    change_feed_records_committed_changes(store).await?;
    change_feed_is_pruned_and_says_so(store).await?;
    change_feed_misses_nothing_under_concurrent_writers(store).await?;
    Ok(())
}

/// Reads the feed from `after` until it has nothing more, in pages of `page`.
pub async fn read_feed(store: &dyn Store, mut after: i64, page: usize) -> Result<Changes, String> {
    let mut all = Changes {
        next: after,
        ..Default::default()
    };
    loop {
        let c = store
            .changes_since(after, page)
            .await
            .map_err(|e| e.to_string())?;
        if c.truncated {
            return Ok(c);
        }
        if c.next < after || (c.next == after) != c.changed.is_empty() {
            return Err(format!(
                "the feed went from {after} to {} with {} changes",
                c.next,
                c.changed.len()
            ));
        }
        all.next = c.next;
        let done = c.changed.len() < page;
        all.changed.extend(c.changed);
        if done {
            return Ok(all);
        }
        after = c.next;
    }
}

fn pair(ns: &str, key: &str) -> (String, String) {
    (ns.to_owned(), key.to_owned())
}

async fn change_feed_records_committed_changes(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    store.exclude_from_change_feed(&[("c6_unfed", ""), ("c6", "unfed/")]);
    let start = store.change_head().await.map_err(s)?;
    let nothing = read_feed(store, start, 10).await?;
    ensure(
        nothing.changed.is_empty() && nothing.next == start && !nothing.truncated,
        "nothing after the head",
    )?;
    store
        .commit(vec![
            put("c6", "a", b"1", Expect::Absent),
            put("c6", "b", b"1", Expect::Absent),
            put("c6", "a", b"2", Expect::Any),
            put("c6_unfed", "x", b"1", Expect::Any),
            put("c6", "unfed/x", b"1", Expect::Any),
        ])
        .await
        .map_err(s)?;
    // A failed batch and a batch of checks change nothing, so they are not in the feed.
    let failed = store
        .commit(vec![
            put("c6", "failed", b"1", Expect::Absent),
            put("c6", "a", b"3", Expect::Absent),
        ])
        .await;
    ensure(
        matches!(failed, Err(StoreError::Conflict { .. })),
        "the failing batch conflicts",
    )?;
    store
        .commit(vec![Op::Check {
            ns: "c6",
            key: "a".into(),
            expect: Expect::Revision(2),
        }])
        .await
        .map_err(s)?;
    store
        .commit(vec![Op::Delete {
            ns: "c6",
            key: "b".into(),
            expect: Expect::Any,
        }])
        .await
        .map_err(s)?;
    let feed = read_feed(store, start, 100).await?;
    ensure(!feed.truncated, "a fresh cursor is not truncated")?;
    let mut changed = feed.changed.clone();
    changed.sort();
    ensure(
        changed == [pair("c6", "a"), pair("c6", "b"), pair("c6", "b")],
        &format!(
            "the feed holds each record written or deleted, once per batch, and nothing else: \
             {:?}",
            feed.changed
        ),
    )?;
    ensure(
        feed.next == store.change_head().await.map_err(s)?,
        "the feed's end is its head",
    )?;
    // Page by page, one at a time, the same changes.
    let mut paged = Vec::new();
    let mut after = start;
    for _ in 0..10 {
        let c = store.changes_since(after, 1).await.map_err(s)?;
        ensure(c.changed.len() <= 1, "a page holds at most `limit` changes")?;
        if c.changed.is_empty() {
            break;
        }
        ensure(c.next > after, "positions grow")?;
        after = c.next;
        paged.extend(c.changed);
    }
    ensure(paged == feed.changed, "paging returns the same changes")?;
    let ahead = store.changes_since(feed.next + 1000, 10).await.map_err(s)?;
    ensure(
        ahead.truncated && ahead.next == feed.next,
        "a cursor ahead of the feed starts over at the head",
    )
}

async fn change_feed_is_pruned_and_says_so(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    if crate::CHANGES_KEPT > 1_000 {
        // Only this crate's own tests keep the feed short enough to fill it quickly.
        return Ok(());
    }
    let start = store.change_head().await.map_err(s)?;
    for i in 0..(crate::CHANGES_KEPT + 2 * crate::CHANGE_PRUNE_STEP) {
        store
            .commit(vec![put("c7", &format!("k{i}"), b"x", Expect::Any)])
            .await
            .map_err(s)?;
        // Let a backend that gives positions when the feed is read (PostgreSQL) give them.
        store.changes_since(start, 1).await.map_err(s)?;
    }
    let old = store.changes_since(start, 10).await.map_err(s)?;
    ensure(
        old.truncated,
        "a reader behind the pruned changes is told so",
    )?;
    let recent = read_feed(store, old.next - crate::CHANGES_KEPT + 1, 1000).await?;
    ensure(
        !recent.truncated && recent.changed.len() as i64 == crate::CHANGES_KEPT - 1,
        "the last changes are kept",
    )
}

/// Writers commit concurrently while a reader follows the feed: every committed change reaches
/// the reader, however the commits interleave (none lands below a position already read).
async fn change_feed_misses_nothing_under_concurrent_writers(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    let start = store.change_head().await.map_err(s)?;
    let writers = 4;
    let per_writer = 25;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let seen = std::sync::Mutex::new(Vec::new());
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Check> + Send + '_>>> =
        Vec::new();
    for w in 0..writers {
        let done = &done;
        tasks.push(Box::pin(async move {
            for i in 0..per_writer {
                store
                    .commit(vec![
                        put("c8", &format!("w{w}-{i}"), b"x", Expect::Absent),
                        put("c8", &format!("w{w}-{i}-b"), b"x", Expect::Absent),
                    ])
                    .await
                    .map_err(s)?;
                tokio::task::yield_now().await;
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }));
    }
    let reader = {
        let (done, seen) = (&done, &seen);
        Box::pin(async move {
            let mut after = start;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst) == writers;
                let c = read_feed(store, after, 7).await?;
                ensure(!c.truncated, "the reader keeps up")?;
                after = c.next;
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(c.changed);
                if finished {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    tasks.push(reader);
    for result in futures_join(tasks).await {
        result?;
    }
    let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    ensure(distinct.len() == seen.len(), "no change is given twice")?;
    ensure(
        seen.len() == writers * per_writer * 2,
        &format!(
            "every committed change reaches the reader: {} of {}",
            seen.len(),
            writers * per_writer * 2
        ),
    )
}

async fn put_get_and_revisions(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    ensure(
        store.get("c1", "a").await.map_err(s)?.is_none(),
        "absent key reads as None",
    )?;
    store
        .commit(vec![put("c1", "a", b"one", Expect::Absent)])
        .await
        .map_err(s)?;
    let r = store
        .get("c1", "a")
        .await
        .map_err(s)?
        .ok_or("written key missing")?;
    ensure(
        r.value == b"one" && r.revision == 1,
        "first write has revision 1",
    )?;
    store
        .commit(vec![put("c1", "a", b"two", Expect::Any)])
        .await
        .map_err(s)?;
    let r = store
        .get("c1", "a")
        .await
        .map_err(s)?
        .ok_or("rewritten key missing")?;
    ensure(
        r.value == b"two" && r.revision == 2,
        "second write has revision 2",
    )?;
    ensure(
        store.get("c1b", "a").await.map_err(s)?.is_none(),
        "namespaces are separate",
    )?;
    store
        .commit(vec![Op::Delete {
            ns: "c1",
            key: "a".into(),
            expect: Expect::Revision(2),
        }])
        .await
        .map_err(s)?;
    ensure(
        store.get("c1", "a").await.map_err(s)?.is_none(),
        "deleted key reads as None",
    )?;
    let bin: Vec<u8> = (0..=255).collect();
    store
        .commit(vec![put("c1", "bin", &bin, Expect::Absent)])
        .await
        .map_err(s)?;
    let r = store
        .get("c1", "bin")
        .await
        .map_err(s)?
        .ok_or("binary value missing")?;
    ensure(r.value == bin, "binary values round-trip")
}

async fn compare_and_set(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    store
        .commit(vec![put("c2", "k", b"v", Expect::Absent)])
        .await
        .map_err(s)?;
    let conflict = store
        .commit(vec![put("c2", "k", b"w", Expect::Absent)])
        .await;
    ensure(
        matches!(conflict, Err(StoreError::Conflict { .. })),
        "Absent on existing key conflicts",
    )?;
    let conflict = store
        .commit(vec![put("c2", "k", b"w", Expect::Revision(7))])
        .await;
    ensure(
        matches!(conflict, Err(StoreError::Conflict { .. })),
        "wrong revision conflicts",
    )?;
    let conflict = store
        .commit(vec![Op::Check {
            ns: "c2",
            key: "nope".into(),
            expect: Expect::Revision(1),
        }])
        .await;
    ensure(
        matches!(conflict, Err(StoreError::Conflict { .. })),
        "Check on a missing key conflicts",
    )?;
    store
        .commit(vec![put("c2", "k", b"w", Expect::Revision(1))])
        .await
        .map_err(s)?;
    let r = store.get("c2", "k").await.map_err(s)?.ok_or("missing")?;
    ensure(r.value == b"w", "matching revision writes")
}

/// `CheckEmpty` fails a batch while any record has a key under the prefix (only in its own
/// namespace, only under the prefix, as the batch's earlier ops leave them), and names the prefix.
async fn empty_ranges(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    let empty = |prefix: &str| Op::CheckEmpty {
        ns: "ce",
        prefix: prefix.into(),
    };
    store
        .commit(vec![put("ce", "a/1", b"x", Expect::Absent)])
        .await
        .map_err(s)?;
    store
        .commit(vec![put("ce-other", "b/1", b"x", Expect::Absent)])
        .await
        .map_err(s)?;
    let refused = store
        .commit(vec![empty("a/"), put("ce", "z", b"z", Expect::Absent)])
        .await;
    ensure(
        matches!(&refused, Err(StoreError::Conflict { ns, key }) if ns == "ce" && key == "a/"),
        "a record under the prefix conflicts, naming the prefix",
    )?;
    ensure(
        store.get("ce", "z").await.map_err(s)?.is_none(),
        "a refused CheckEmpty writes nothing",
    )?;
    store
        .commit(vec![empty("b/"), empty("a/1/"), empty("a/2")])
        .await
        .map_err(|e| format!("other namespaces and other prefixes do not count: {e}"))?;
    store
        .commit(vec![
            Op::Delete {
                ns: "ce",
                key: "a/1".into(),
                expect: Expect::Any,
            },
            empty("a/"),
            put("ce", "a/2", b"y", Expect::Absent),
        ])
        .await
        .map_err(|e| format!("a record deleted earlier in the batch does not count: {e}"))?;
    let refused = store
        .commit(vec![put("ce", "c/1", b"x", Expect::Absent), empty("c/")])
        .await;
    ensure(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "a record put earlier in the batch counts",
    )
}

async fn batches_are_atomic(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    store
        .commit(vec![put("c3", "x", b"1", Expect::Absent)])
        .await
        .map_err(s)?;
    let result = store
        .commit(vec![
            put("c3", "y", b"new", Expect::Absent),
            Op::Delete {
                ns: "c3",
                key: "x".into(),
                expect: Expect::Any,
            },
            Op::Check {
                ns: "c3",
                key: "x".into(),
                expect: Expect::Revision(99),
            },
        ])
        .await;
    ensure(
        matches!(result, Err(StoreError::Conflict { .. })),
        "failing check fails the batch",
    )?;
    ensure(
        store.get("c3", "y").await.map_err(s)?.is_none(),
        "no op of a failed batch lands (put)",
    )?;
    ensure(
        store.get("c3", "x").await.map_err(s)?.is_some(),
        "no op of a failed batch lands (delete)",
    )?;
    store
        .commit(vec![
            put("c3", "y", b"new", Expect::Absent),
            Op::Delete {
                ns: "c3",
                key: "x".into(),
                expect: Expect::Revision(1),
            },
            Op::Check {
                ns: "c3",
                key: "z".into(),
                expect: Expect::Absent,
            },
        ])
        .await
        .map_err(s)?;
    ensure(
        store.get("c3", "x").await.map_err(s)?.is_none(),
        "batch delete landed",
    )?;
    ensure(
        store.get("c3", "y").await.map_err(s)?.is_some(),
        "batch put landed",
    )
}

async fn listing_by_prefix_and_cursor(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    let mut ops = Vec::new();
    for i in 0..30 {
        ops.push(put("c4", &format!("v1/k{i:02}"), b"x", Expect::Absent));
    }
    ops.push(put("c4", "v2/k00", b"x", Expect::Absent));
    ops.push(put("c4", "v1_/odd", b"x", Expect::Absent));
    ops.push(put("c4", "v1%/odd", b"x", Expect::Absent));
    store.commit(ops).await.map_err(s)?;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list("c4", "v1/", after.as_deref(), 7)
            .await
            .map_err(s)?;
        if page.is_empty() {
            break;
        }
        ensure(page.len() <= 7, "a page holds at most `limit` records")?;
        after = page.last().map(|r| r.key.clone());
        seen.extend(page.into_iter().map(|r| r.key));
    }
    ensure(
        seen.len() == 30,
        "paging visits every record of the prefix exactly once",
    )?;
    let mut sorted = seen.clone();
    sorted.sort();
    ensure(sorted == seen, "listing is in key order")?;
    let odd = store.list("c4", "v1_", None, 10).await.map_err(s)?;
    ensure(odd.len() == 1, "`_` in a prefix is literal")?;
    let odd = store.list("c4", "v1%", None, 10).await.map_err(s)?;
    ensure(odd.len() == 1, "`%` in a prefix is literal")
}

async fn concurrent_writers_never_lose_an_update(store: &dyn Store) -> Check {
    let s = |e: StoreError| e.to_string();
    store
        .commit(vec![put("c5", "counter", b"0", Expect::Absent)])
        .await
        .map_err(s)?;
    let increments = 40;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(async {
            let mut done = 0;
            while done < increments / 4 {
                let r = store
                    .get("c5", "counter")
                    .await
                    .map_err(s)?
                    .ok_or("missing counter")?;
                let n: u64 = std::str::from_utf8(&r.value)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or("bad counter")?;
                let next = (n + 1).to_string();
                match store
                    .commit(vec![put(
                        "c5",
                        "counter",
                        next.as_bytes(),
                        Expect::Revision(r.revision),
                    )])
                    .await
                {
                    Ok(()) => done += 1,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok::<(), String>(())
        });
    }
    for result in futures_join(tasks).await {
        result?;
    }
    let r = store
        .get("c5", "counter")
        .await
        .map_err(s)?
        .ok_or("missing counter")?;
    ensure(
        r.value == increments.to_string().as_bytes(),
        "compare-and-set loses no increment",
    )
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    // A tiny join_all, to avoid a dependency for one call.
    let mut out = Vec::with_capacity(futures.len());
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}
