//! Which failures allow a transaction to run again, decided by SQLSTATE (never by error text),
//! and how long to wait before it does.

use std::time::Duration;

/// What a failed statement allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The database gave up on the transaction so that it can be run again from the start; nothing
    /// of it was kept. `40001` serialization_failure, `40P01` deadlock_detected, and `23505`
    /// unique_violation: the only unique key is a record's (or a migration's) own, so it means a
    /// concurrent transaction inserted the same key after this one read it was absent (PostgreSQL
    /// reports that as `40001` under SERIALIZABLE; other engines may not), and a new run will read
    /// it.
    Contention,
    /// The connection failed or the server closed it (`08xxx`, `57P01` admin_shutdown, `57P02`
    /// crash_shutdown, `57P03` cannot_connect_now, or an IO error). A transaction cut off before
    /// its COMMIT was rolled back by the server; one cut off during its COMMIT may have landed.
    Connection,
    /// Anything else (constraint violations, syntax, permissions, a full disk, CockroachDB's
    /// `40003` statement_completion_unknown): running it again would not help, or could apply
    /// twice what may have landed once.
    Fatal,
}

/// Classifies a SQLSTATE.
pub(crate) fn classify_sqlstate(code: &str) -> Failure {
    match code {
        "40001" | "40P01" | "23505" => Failure::Contention,
        "57P01" | "57P02" | "57P03" => Failure::Connection,
        _ if code.starts_with("08") => Failure::Connection,
        _ => Failure::Fatal,
    }
}

/// Classifies an sqlx error.
pub(crate) fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .map_or(Failure::Fatal, |code| classify_sqlstate(&code)),
        // A refused or reset connection, a server gone away mid-statement. The pool has already
        // waited its acquire timeout for a refused connection before saying PoolTimedOut, so that
        // one is not retried here.
        sqlx::Error::Io(_) => Failure::Connection,
        _ => Failure::Fatal,
    }
}

/// Runs of a batch before its failure is returned. SERIALIZABLE takes predicate locks on index
/// pages, so batches inserting neighbouring new keys (16 clients creating keys at once) fail each
/// other with `40001` now and then: 8 runs left a few in a thousand answered 503 under that load
/// (`scripts/bench-store.sh`); 20 runs, with the backoff below, none.
pub(crate) const COMMIT_ATTEMPTS: u32 = 20;
/// Runs of a read before its failure is returned.
pub(crate) const READ_ATTEMPTS: u32 = 4;
/// Runs of one migration step (start-up, several nodes at once) before its failure is returned.
pub(crate) const MIGRATION_ATTEMPTS: u32 = 20;

/// The wait before run `attempt + 1`: exponential from 5 ms, capped at 250 ms, with full jitter so
/// that two nodes that collided do not collide again in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = (5u64 << attempt.min(6)).min(250);
    Duration::from_millis(ceiling_ms / 2 + fastrand::u64(0..=ceiling_ms / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(classify_sqlstate("40001"), Failure::Contention);
        assert_eq!(classify_sqlstate("40P01"), Failure::Contention);
        assert_eq!(classify_sqlstate("23505"), Failure::Contention);
        assert_eq!(classify_sqlstate("08006"), Failure::Connection);
        assert_eq!(classify_sqlstate("08001"), Failure::Connection);
        assert_eq!(classify_sqlstate("57P01"), Failure::Connection);
        assert_eq!(classify_sqlstate("40003"), Failure::Fatal);
        assert_eq!(classify_sqlstate("23503"), Failure::Fatal);
        assert_eq!(classify_sqlstate("42P01"), Failure::Fatal);
        assert_eq!(classify_sqlstate("53100"), Failure::Fatal);
    }

    #[test]
    fn io_errors_are_connection_failures() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused), Failure::Connection);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Fatal);
        assert_eq!(classify(&sqlx::Error::RowNotFound), Failure::Fatal);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..20 {
            for attempt in 0..40 {
                let wait = backoff(attempt).as_millis() as u64;
                let ceiling = (5u64 << attempt.min(6)).min(250);
                assert!(
                    wait <= ceiling && wait >= ceiling / 2,
                    "{attempt}: {wait} ms"
                );
            }
        }
        assert!(backoff(30) <= Duration::from_millis(250));
    }
}
