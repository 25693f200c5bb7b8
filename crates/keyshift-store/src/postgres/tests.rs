//! Tests against a real PostgreSQL: its URL in `KEYSHIFT_TEST_POSTGRES_URL` (`scripts/test.sh`
//! and `.ci/run` start one with `scripts/postgres-test-server.sh`). Without it they say they are
//! skipped and pass, unless `KEYSHIFT_REQUIRE_POSTGRES=1` (CI), where they fail. Each test works in
//! a schema of its own, dropped at the end (also when the test fails), so they run in parallel and
//! leave nothing behind.

use super::*;
use crate::conformance;
use sqlx::postgres::PgPoolOptions;
use std::future::Future;
use std::sync::{Arc, Mutex};

const URL_ENV: &str = "KEYSHIFT_TEST_POSTGRES_URL";

/// A batch as node 0 or node 1 sends it.
type BatchOf<'a> = dyn Fn(u8) -> Vec<Op> + Sync + 'a;

type HookFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The test database's URL; `None` (the test is skipped) without one, unless it is required.
fn database_url() -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("KEYSHIFT_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
            "KEYSHIFT_REQUIRE_POSTGRES=1 but {URL_ENV} is not set: start a server with \
             scripts/postgres-test-server.sh"
        ),
        _ => {
            eprintln!(
                "SKIPPED: {URL_ENV} is not set, so the PostgreSQL store tests do not run \
                 (scripts/test.sh starts a server when PostgreSQL is installed)"
            );
            None
        }
    }
}

/// What a test gets: options for stores in its own schema, and a pool on that schema for looking
/// under the store.
struct Db {
    options: PostgresOptions,
    raw: PgPool,
}

/// Runs `body` with a fresh schema named after the test, then drops the schema, whether the
/// body passed or panicked.
async fn in_schema<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = database_url() else {
        return;
    };
    let schema = format!("ks_store_{test}_{:08x}", fastrand::u32(..));
    let admin = PgPoolOptions::new()
        // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
        // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
        .idle_timeout(None)
        .max_lifetime(None)
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let options = PostgresOptions::from_url(&url)
        .unwrap()
        .schema(&schema)
        .max_connections(4);
    let raw = PgPoolOptions::new()
        // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
        // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
        .idle_timeout(None)
        .max_lifetime(None)
        .max_connections(2)
        .connect_with(options.connect.clone())
        .await
        .unwrap();
    let outcome = tokio::spawn(body(Db { options, raw })).await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn put(ns: &'static str, key: &str, value: &[u8], expect: Expect) -> Op {
    Op::Put {
        ns,
        key: key.into(),
        value: value.to_vec(),
        expect,
    }
}

#[tokio::test]
async fn conformance() {
    in_schema("conformance", |db| async move {
        let store = PostgresStore::connect(db.options).await.unwrap();
        conformance::run_all(&store).await.unwrap();
    })
    .await;
}

/// Two nodes (two pools) commit batches whose conditions exclude each other, at the same moment:
/// exactly one succeeds, the other gets `Conflict`. Three shapes: both create the same key; both
/// update it from the same revision; write skew (each checks that the key the other creates
/// is absent), which row locks alone would let through and only SERIALIZABLE stops; and a
/// record added under a prefix that the other checks empty while changing a record the first
/// checks (unlocked), which only SERIALIZABLE's predicate lock on the range stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_conflicting_conditions_never_both_win() {
    in_schema("two_nodes", |db| async move {
        let a = Arc::new(PostgresStore::connect(db.options.clone()).await.unwrap());
        let b = Arc::new(PostgresStore::connect(db.options).await.unwrap());
        for round in 0..20 {
            let create = |_: u8| vec![put("n", &format!("create/{round}"), b"x", Expect::Absent)];
            let update = |_: u8| {
                vec![put(
                    "n",
                    &format!("update/{round}"),
                    b"y",
                    Expect::Revision(1),
                )]
            };
            let skew = |me: u8| {
                let (mine, theirs) = if me == 0 { ("p", "q") } else { ("q", "p") };
                vec![
                    Op::Check {
                        ns: "n",
                        key: format!("skew/{round}/{theirs}"),
                        expect: Expect::Absent,
                    },
                    put("n", &format!("skew/{round}/{mine}"), b"z", Expect::Absent),
                ]
            };
            a.commit(vec![put(
                "n",
                &format!("update/{round}"),
                b"0",
                Expect::Absent,
            )])
            .await
            .unwrap();
            // A key created in a vault (checking the vault's record, unlocked) and the vault
            // changed only if it holds no key (checking the range empty): as a security-domain
            // upload and a key creation race.
            let vault_key = format!("vault/{round}");
            let range = |me: u8| {
                if me == 0 {
                    vec![
                        Op::Check {
                            ns: "n",
                            key: vault_key.clone(),
                            expect: Expect::Revision(1),
                        },
                        put("n", &format!("in/{round}/k"), b"k", Expect::Absent),
                    ]
                } else {
                    vec![
                        Op::CheckEmpty {
                            ns: "n",
                            prefix: format!("in/{round}/"),
                        },
                        put("n", &vault_key, b"v2", Expect::Revision(1)),
                    ]
                }
            };
            a.commit(vec![put("n", &vault_key, b"v1", Expect::Absent)])
                .await
                .unwrap();
            let shapes: [(&str, &BatchOf<'_>); 4] = [
                ("create", &create),
                ("update", &update),
                ("write skew", &skew),
                ("key in an emptied range", &range),
            ];
            for (shape, batch) in shapes {
                let barrier = Arc::new(tokio::sync::Barrier::new(2));
                let mut tasks = Vec::new();
                for (me, node) in [(0u8, a.clone()), (1, b.clone())] {
                    let (barrier, ops) = (barrier.clone(), batch(me));
                    tasks.push(tokio::spawn(async move {
                        barrier.wait().await;
                        node.commit(ops).await
                    }));
                }
                let mut wins = 0;
                for task in tasks {
                    match task.await.unwrap() {
                        Ok(()) => wins += 1,
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{shape}, round {round}: {e}"),
                    }
                }
                assert_eq!(wins, 1, "{shape}, round {round}: exactly one node wins");
            }
        }
    })
    .await;
}

/// A batch whose transaction fails on a concurrent write is run again from its reads. Between
/// the batch's reads and its writes, another connection (not SERIALIZABLE, so PostgreSQL reports
/// `23505` rather than `40001`) creates the key the batch read as absent: the batch's insert
/// fails, the batch runs again, reads the new row and, with `Expect::Any`, updates it (revision
/// 2). With `Expect::Absent` the second run returns `Conflict` instead: conditions are checked
/// again, never assumed.
#[tokio::test]
async fn an_aborted_transaction_runs_again() {
    in_schema("retry", |db| async move {
        let mut store = PostgresStore::connect(db.options).await.unwrap();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let key = Arc::new(Mutex::new(String::new()));
        let (seen, raw, racing_key) = (attempts.clone(), db.raw.clone(), key.clone());
        store.after_read = Some(Arc::new(move |attempt| -> HookFuture {
            seen.lock().unwrap().push(attempt);
            let (raw, key) = (raw.clone(), racing_key.lock().unwrap().clone());
            Box::pin(async move {
                if attempt == 0 {
                    sqlx::query(
                        "INSERT INTO records (ns, key, revision, value) VALUES ('r', $1, 1, 'other')",
                    )
                    .bind(key.as_bytes())
                    .execute(&raw)
                    .await
                    .unwrap();
                }
            })
        }));

        *key.lock().unwrap() = "any".into();
        store
            .commit(vec![put("r", "any", b"mine", Expect::Any)])
            .await
            .unwrap();
        assert_eq!(*attempts.lock().unwrap(), [0, 1], "the batch ran twice");
        let r = store.get("r", "any").await.unwrap().unwrap();
        assert_eq!((r.value.as_slice(), r.revision), (&b"mine"[..], 2));

        attempts.lock().unwrap().clear();
        *key.lock().unwrap() = "absent".into();
        let result = store
            .commit(vec![put("r", "absent", b"mine", Expect::Absent)])
            .await;
        assert!(
            matches!(result, Err(StoreError::Conflict { .. })),
            "{result:?}"
        );
        assert_eq!(*attempts.lock().unwrap(), [0, 1]);
        let r = store.get("r", "absent").await.unwrap().unwrap();
        assert_eq!(r.value, b"other", "the other writer's row stands");
    })
    .await;
}

/// The same race through SSI alone, with no unique key involved: the batch checks that `a` is
/// absent and creates `b`; meanwhile a serializable transaction elsewhere reads `b` (absent) and
/// creates `a`. Both cannot stand; the batch, committing second, gets `40001`, runs again, and
/// finds `a`.
#[tokio::test]
async fn write_skew_is_a_serialization_failure_then_a_conflict() {
    in_schema("skew", |db| async move {
        let mut store = PostgresStore::connect(db.options).await.unwrap();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (seen, raw) = (attempts.clone(), db.raw.clone());
        store.after_read = Some(Arc::new(move |attempt| -> HookFuture {
            seen.lock().unwrap().push(attempt);
            let raw = raw.clone();
            Box::pin(async move {
                if attempt == 0 {
                    let mut tx = raw
                        .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
                        .await
                        .unwrap();
                    let b = sqlx::query("SELECT 1 FROM records WHERE ns = 's' AND key = 'b'")
                        .fetch_optional(&mut *tx)
                        .await
                        .unwrap();
                    assert!(b.is_none());
                    sqlx::query(
                        "INSERT INTO records (ns, key, revision, value) VALUES ('s', 'a', 1, '')",
                    )
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        }));
        let result = store
            .commit(vec![
                Op::Check {
                    ns: "s",
                    key: "a".into(),
                    expect: Expect::Absent,
                },
                put("s", "b", b"", Expect::Absent),
            ])
            .await;
        assert!(
            matches!(&result, Err(StoreError::Conflict { key, .. }) if key == "a"),
            "{result:?}"
        );
        assert_eq!(*attempts.lock().unwrap(), [0, 1], "the batch ran twice");
        assert!(store.get("s", "b").await.unwrap().is_none());
    })
    .await;
}

/// Nothing listens on the port: the store reports itself unavailable (`Backend`, which the server
/// answers with 503) within its acquire timeout, and the error does not carry the password.
/// Needs no database.
#[tokio::test]
async fn a_refused_connection_is_a_backend_error_without_the_password() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = PostgresOptions::from_url(&format!(
        "postgres://keyshift:hunter2-not-in-errors@127.0.0.1:{port}/keyshift"
    ))
    .unwrap()
    .acquire_timeout(Duration::from_millis(500));
    assert!(!format!("{options:?}").contains("hunter2"));
    let started = std::time::Instant::now();
    let err = PostgresStore::connect(options).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "names the server: {text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn urls_with_tls_are_refused_and_descriptions_hide_passwords() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let err =
            PostgresOptions::from_url(&format!("postgres://u:secret@db.example/k?sslmode={mode}"))
                .unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(!err.to_string().contains("secret"));
    }
    let err = PostgresOptions::from_url("mysql://u:secret@h/k").unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let options = PostgresOptions::from_url("postgres://u:secret@db.example:6543/k?sslmode=prefer")
        .unwrap()
        .password("other-secret");
    assert_eq!(options.describe(), "postgres://u@db.example:6543/k");
    assert!(!format!("{options:?}").contains("secret"));
    assert!(!options.is_local());
    assert!(PostgresOptions::from_url("postgres://u@127.0.0.1/k")
        .unwrap()
        .is_local());
}

/// A TCP relay to the database that the test can cut, as a network failure or a database restart
/// would.
struct Relay {
    port: u16,
    target: (String, u16),
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: (String, u16), port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let (t, to) = (tasks.clone(), target.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = to.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect((to.0.as_str(), to.1)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                t.lock().unwrap().push(relay);
            }
        });
        tasks.lock().unwrap().push(accept);
        Relay {
            port,
            target,
            tasks,
        }
    }

    /// Closes the listener and every relayed connection.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// The database goes away under a running store and comes back: reads and batches fail with
/// `Backend` (a 503) within the acquire timeout instead of hanging, and work again once it is
/// back, without reopening the store.
#[tokio::test]
async fn a_lost_database_is_a_backend_error_until_it_is_back() {
    in_schema("lost", |db| async move {
        let target = (
            db.options.connect.get_host().to_owned(),
            db.options.connect.get_port(),
        );
        let relay = Relay::start(target, 0).await;
        let mut options = db.options.acquire_timeout(Duration::from_millis(500));
        options.connect = options.connect.host("127.0.0.1").port(relay.port);
        let store = PostgresStore::connect(options).await.unwrap();
        store
            .commit(vec![put("l", "k", b"1", Expect::Absent)])
            .await
            .unwrap();

        relay.cut();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let read = store.get("l", "k").await;
        assert!(matches!(read, Err(StoreError::Backend(_))), "{read:?}");
        let write = store
            .commit(vec![put("l", "k", b"2", Expect::Revision(1))])
            .await;
        assert!(matches!(write, Err(StoreError::Backend(_))), "{write:?}");

        let relay = Relay::start(relay.target.clone(), relay.port).await;
        let r = store.get("l", "k").await.unwrap().unwrap();
        assert_eq!((r.value.as_slice(), r.revision), (&b"1"[..], 1));
        store
            .commit(vec![put("l", "k", b"2", Expect::Revision(1))])
            .await
            .unwrap();
        relay.cut();
    })
    .await;
}

async fn versions(raw: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(raw)
        .await
        .unwrap()
}

/// A database made by the first schema, with records written as that schema's Keyshift wrote
/// them (no revision column), is opened by this one: the later migrations are applied once, and
/// the records read back (at revision 1) and take compare-and-set writes.
#[tokio::test]
async fn a_store_created_by_the_first_schema_is_upgraded() {
    in_schema("upgrade", |db| async move {
        drop(
            PostgresStore::connect_at(db.options.clone(), 1)
                .await
                .unwrap(),
        );
        assert_eq!(versions(&db.raw).await, [0, 1]);
        for (key, value) in [
            ("v1/a", &b"\x00sealed-a"[..]),
            ("v1/b", b"\xffsealed-b"),
            ("v2/c", b"c"),
        ] {
            sqlx::query("INSERT INTO records (ns, key, value) VALUES ('key', $1, $2)")
                .bind(key.as_bytes())
                .bind(value)
                .execute(&db.raw)
                .await
                .unwrap();
        }

        let store = PostgresStore::connect(db.options).await.unwrap();
        assert_eq!(versions(&db.raw).await, [0, 1, 2, 3]);
        let a = store.get("key", "v1/a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.revision), (&b"\x00sealed-a"[..], 1));
        let listed: Vec<String> = store
            .list("key", "v1/", None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(listed, ["v1/a", "v1/b"]);
        store
            .commit(vec![put("key", "v1/b", b"new", Expect::Revision(1))])
            .await
            .unwrap();
        assert_eq!(store.get("key", "v1/b").await.unwrap().unwrap().revision, 2);
        conformance::run_all(&store).await.unwrap();
    })
    .await;
}

/// Several nodes start on a new database at the same moment: every one opens, and each migration
/// is applied once. Several rounds, since the races (two nodes creating `schema_migrations`) are
/// a matter of timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    in_schema("startup", |db| async move {
        for round in 0..8 {
            sqlx::raw_sql(
                "DROP TABLE IF EXISTS records, schema_migrations, pending_changes, changes, \
                 change_feed",
            )
            .execute(&db.raw)
            .await
            .unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(5));
            let mut nodes = Vec::new();
            for _ in 0..5 {
                let (barrier, options) = (barrier.clone(), db.options.clone().max_connections(1));
                nodes.push(tokio::spawn(async move {
                    barrier.wait().await;
                    PostgresStore::connect(options).await
                }));
            }
            for node in nodes {
                if let Err(e) = node.await.unwrap() {
                    panic!("round {round}: a node did not start: {e}");
                }
            }
            assert_eq!(versions(&db.raw).await, [0, 1, 2, 3], "round {round}");
        }
    })
    .await;
}

/// A database at the schema before the change feed (version 2, what nodes ran until now), with
/// records, is upgraded in place: the feed starts empty at position 0, records the changes made
/// after it, and nodes opening it again apply nothing.
#[tokio::test]
async fn a_store_at_the_previous_schema_gets_the_change_feed() {
    in_schema("upgrade_feed", |db| async move {
        let old = PostgresStore::connect_at(db.options.clone(), 2)
            .await
            .unwrap();
        old.commit(vec![put("key", "v1/a", b"a", Expect::Absent)])
            .await
            .unwrap();
        drop(old);
        assert_eq!(versions(&db.raw).await, [0, 1, 2]);

        let store = PostgresStore::connect(db.options.clone()).await.unwrap();
        assert_eq!(versions(&db.raw).await, [0, 1, 2, 3]);
        assert_eq!(store.get("key", "v1/a").await.unwrap().unwrap().value, b"a");
        assert_eq!(store.change_head().await.unwrap(), 0);
        let other = PostgresStore::connect(db.options).await.unwrap();
        other
            .commit(vec![put("key", "v1/a", b"b", Expect::Revision(1))])
            .await
            .unwrap();
        let feed = conformance::read_feed(&store, 0, 10).await.unwrap();
        assert_eq!(feed.changed, [("key".to_owned(), "v1/a".to_owned())]);
        assert_eq!(feed.next, 1);
    })
    .await;
}

/// Transactions commit out of order: batch 1 has written everything (its change included) but
/// not committed when batch 2 commits and a reader on another node reads the feed past batch 2.
/// Batch 1 then commits; the reader's next read, from where it stopped, must still return it.
/// (A position taken inside batch 1's transaction would be below the reader's cursor by then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committing_late_is_not_skipped() {
    in_schema("late_commit", |db| async move {
        let mut slow = PostgresStore::connect(db.options.clone()).await.unwrap();
        let fast = Arc::new(PostgresStore::connect(db.options.clone()).await.unwrap());
        let reader = Arc::new(PostgresStore::connect(db.options).await.unwrap());
        let start = reader.change_head().await.unwrap();
        let cursor = Arc::new(Mutex::new(start));
        let (f, r, c) = (fast.clone(), reader.clone(), cursor.clone());
        slow.before_commit = Some(Arc::new(move |attempt| -> HookFuture {
            let (f, r, c) = (f.clone(), r.clone(), c.clone());
            Box::pin(async move {
                if attempt > 0 {
                    return;
                }
                f.commit(vec![put("ooo", "second", b"2", Expect::Absent)])
                    .await
                    .unwrap();
                let after = *c.lock().unwrap();
                let feed = conformance::read_feed(&*r, after, 10).await.unwrap();
                assert_eq!(feed.changed, [("ooo".to_owned(), "second".to_owned())]);
                *c.lock().unwrap() = feed.next;
            })
        }));
        slow.commit(vec![put("ooo", "first", b"1", Expect::Absent)])
            .await
            .unwrap();
        let after = *cursor.lock().unwrap();
        assert!(after > start);
        let feed = conformance::read_feed(&*reader, after, 10).await.unwrap();
        assert!(!feed.truncated);
        assert_eq!(
            feed.changed,
            [("ooo".to_owned(), "first".to_owned())],
            "the batch that committed last is read after the one that committed first"
        );
    })
    .await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    in_schema("newer", |db| async move {
        drop(PostgresStore::connect(db.options.clone()).await.unwrap());
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
            .execute(&db.raw)
            .await
            .unwrap();
        let err = PostgresStore::connect(db.options).await.unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn commits_that_are_not_durable_are_refused() {
    in_schema("durability", |db| async move {
        let mut options = db.options;
        options.connect = options.connect.options([("synchronous_commit", "off")]);
        let err = PostgresStore::connect(options).await.unwrap_err();
        assert!(err.to_string().contains("synchronous_commit"), "{err}");
    })
    .await;
}

/// Compiles only if the start-up futures are `Send`, as callers that spawn them need (sqlx's
/// `RawSql::execute` is not).
#[allow(dead_code)]
fn futures_are_send(options: PostgresOptions, pool: PgPool) {
    fn send<T: Send>(_: T) {}
    send(PostgresStore::connect(options));
    send(migrate::migrate(&pool, 1));
}
