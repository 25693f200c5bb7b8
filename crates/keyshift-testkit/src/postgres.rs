//! The PostgreSQL the tests share: its URL from `KEYSHIFT_TEST_POSTGRES_URL` (`scripts/test.sh` and
//! `.ci/run` start one with `scripts/postgres-test-server.sh`), and a schema per test.

use sqlx::postgres::PgPoolOptions;

/// The variable holding the test database's URL.
pub const URL_ENV: &str = "KEYSHIFT_TEST_POSTGRES_URL";

/// The test database's URL; `None` (the test is skipped, said with `what`) without one, unless
/// `KEYSHIFT_REQUIRE_POSTGRES=1` (CI): then it panics.
pub fn database_url(what: &str) -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("KEYSHIFT_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
            "KEYSHIFT_REQUIRE_POSTGRES=1 but {URL_ENV} is not set: start a server with \
             scripts/postgres-test-server.sh"
        ),
        _ => {
            eprintln!("SKIPPED: {URL_ENV} is not set, so {what} does not run");
            None
        }
    }
}

/// Splits `postgres://user:password@host...` into the URL without its password and the password,
/// which a test hands over the way an operator would: in a file, not on the command line.
pub fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    (format!("{scheme}://{user}@{host}"), password.to_owned())
}

/// A test's own schema, dropped when the test ends; with [`Schema::keep_on_failure`], kept (and
/// named) when it failed.
#[derive(Debug)]
pub struct Schema {
    /// The database URL, password included.
    pub url: String,
    /// The schema's name.
    pub name: String,
    keep_on_failure: bool,
}

impl Schema {
    /// Creates `{prefix}_{random}` in the database at `url`.
    pub async fn create(url: &str, prefix: &str) -> Schema {
        let name = format!("{prefix}_{:08x}", fastrand::u32(..));
        let pool = PgPoolOptions::new()
            // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
            // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
            .idle_timeout(None)
            .max_lifetime(None)
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        Schema {
            url: url.to_owned(),
            name,
            keep_on_failure: false,
        }
    }

    /// Keeps the schema, and names it, when the test fails.
    pub fn keep_on_failure(mut self) -> Self {
        self.keep_on_failure = true;
        self
    }

    /// The store URL of this schema, without the password.
    pub fn store_url(&self) -> keyshift_cli::config::StoreUrl {
        let (bare, _) = split_password(&self.url);
        keyshift_cli::config::StoreUrl::new(format!("{bare}?options[search_path]={}", self.name))
    }

    /// The database password.
    pub fn password(&self) -> String {
        split_password(&self.url).1
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if self.keep_on_failure && std::thread::panicking() {
            eprintln!("test failed: PostgreSQL schema {} kept", self.name);
            return;
        }
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop cannot await: a thread with a runtime of its own does it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let pool = PgPoolOptions::new()
                    // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
                    // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .unwrap();
                // This runs while the test's own runtime is blocked in this drop, so a
                // connection of the test's that still holds a lock in the schema cannot let go
                // of it: bounded, the schema is left behind (in a throwaway database) rather
                // than the run hanging.
                let dropped = sqlx::raw_sql(&format!(
                    "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                ))
                .execute(&pool)
                .await;
                if let Err(e) = dropped {
                    eprintln!("PostgreSQL schema {name} left behind: {e}");
                }
            })
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("cannot drop the schema {}", self.name);
        }
    }
}
