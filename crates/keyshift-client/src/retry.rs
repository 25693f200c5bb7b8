//! When to try a request again, as a pure function of the operation, the attempt and what happened.
//!
//! - Operations that are safe to repeat (reads, crypto operations, backup, random bytes, update)
//!   are retried on 429, 502, 503, 504, timeouts and connection errors.
//! - Operations that create state (create, import, rotate, restore, delete) are retried only when
//!   the connection failed before the request could have been sent: a 503 or a timeout may come
//!   after the service acted, and a blind retry would make a second version or a false conflict.
//! - A `Retry-After` (seconds) or `retry-after-ms` from the service sets the wait, bounded by
//!   [`RetryPolicy::max_delay`]; otherwise exponential backoff with jitter. HTTP-date forms of
//!   `Retry-After` are not read (that would need the wall clock) and fall back to backoff.

use std::time::Duration;

/// Whether repeating an operation is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it gives the same result (reads, crypto operations, update).
    Safe,
    /// Repeating it could change state twice (create, import, rotate, restore, delete).
    Unsafe,
}

/// Retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retry).
    pub max_retries: u32,
    /// The first backoff delay; doubled on each retry.
    pub base_delay: Duration,
    /// The longest wait between attempts, `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// What an attempt came to, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The service answered with this status and, maybe, a requested wait.
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After` / `retry-after-ms`, when present and readable.
        retry_after: Option<Duration>,
    },
    /// No connection was made, so the request was certainly not sent.
    ConnectFailed,
    /// The request may have been sent but no full answer arrived (reset, timeout).
    Interrupted,
}

/// The decision after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Return the outcome to the caller.
    Stop,
}

impl RetryPolicy {
    /// Decides after attempt number `attempt` (0 for the first). `jitter` in `[0, 1)` scales the
    /// backoff between half and all of its nominal value; pass a random number.
    pub fn decide(
        &self,
        idempotency: Idempotency,
        attempt: u32,
        outcome: AttemptOutcome,
        jitter: f64,
    ) -> RetryDecision {
        if attempt >= self.max_retries {
            return RetryDecision::Stop;
        }
        let retryable = match (idempotency, outcome) {
            (_, AttemptOutcome::ConnectFailed) => true,
            (Idempotency::Unsafe, _) => false,
            (Idempotency::Safe, AttemptOutcome::Interrupted) => true,
            (Idempotency::Safe, AttemptOutcome::Status { status, .. }) => {
                matches!(status, 429 | 502 | 503 | 504)
            }
        };
        if !retryable {
            return RetryDecision::Stop;
        }
        if let AttemptOutcome::Status {
            retry_after: Some(wait),
            ..
        } = outcome
        {
            return RetryDecision::RetryAfter(wait.min(self.max_delay));
        }
        let nominal = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(self.max_delay);
        let scale = 0.5 + 0.5 * jitter.clamp(0.0, 1.0);
        RetryDecision::RetryAfter(nominal.mul_f64(scale))
    }
}

/// Reads `retry-after-ms` (Azure) or `Retry-After` in seconds. An HTTP-date, a negative or an
/// unreadable value gives `None`.
pub(crate) fn parse_retry_after(
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptOutcome::*;
    use Idempotency::*;
    use RetryDecision::*;

    fn status(status: u16) -> AttemptOutcome {
        Status {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn safe_operations_retry_on_throttling_and_outages() {
        let p = RetryPolicy::default();
        for s in [429, 502, 503, 504] {
            assert!(
                matches!(p.decide(Safe, 0, status(s), 0.0), RetryAfter(_)),
                "{s}"
            );
        }
        assert!(matches!(
            p.decide(Safe, 0, ConnectFailed, 0.0),
            RetryAfter(_)
        ));
        assert!(matches!(p.decide(Safe, 0, Interrupted, 0.0), RetryAfter(_)));
        for s in [200, 400, 401, 403, 404, 409, 500] {
            assert_eq!(p.decide(Safe, 0, status(s), 0.0), Stop, "{s}");
        }
    }

    #[test]
    fn unsafe_operations_retry_only_before_sending() {
        let p = RetryPolicy::default();
        assert!(matches!(
            p.decide(Unsafe, 0, ConnectFailed, 0.0),
            RetryAfter(_)
        ));
        assert_eq!(p.decide(Unsafe, 0, Interrupted, 0.0), Stop);
        for s in [429, 500, 502, 503, 504] {
            assert_eq!(p.decide(Unsafe, 0, status(s), 0.0), Stop, "{s}");
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        assert!(matches!(p.decide(Safe, 1, status(503), 0.0), RetryAfter(_)));
        assert_eq!(p.decide(Safe, 2, status(503), 0.0), Stop);
        let never = RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(never.decide(Safe, 0, ConnectFailed, 0.0), Stop);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 100,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let d = |attempt, jitter| match p.decide(Safe, attempt, status(503), jitter) {
            RetryAfter(d) => d,
            Stop => panic!("stopped"),
        };
        assert_eq!(d(0, 0.0), Duration::from_millis(50));
        assert_eq!(d(0, 1.0), Duration::from_millis(100));
        assert_eq!(d(1, 1.0), Duration::from_millis(200));
        assert_eq!(d(3, 0.0), Duration::from_millis(400));
        assert_eq!(d(10, 1.0), Duration::from_secs(2));
        assert_eq!(d(60, 1.0), Duration::from_secs(2));
        // Out-of-range jitter is clamped rather than trusted.
        assert_eq!(d(0, 7.0), Duration::from_millis(100));
        assert_eq!(d(0, -1.0), Duration::from_millis(50));
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let p = RetryPolicy::default();
        let with = |secs| Status {
            status: 429,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(Safe, 0, with(2), 0.3),
            RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(Safe, 0, with(86_400), 0.3),
            RetryAfter(p.max_delay)
        );
    }

    #[test]
    fn retry_after_headers() {
        assert_eq!(
            parse_retry_after(Some("3"), None),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(Some("3"), Some("250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after(Some(" 0 "), None), Some(Duration::ZERO));
        for junk in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "-1",
            "1.5",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(parse_retry_after(Some(junk), None), None, "{junk}");
        }
        assert_eq!(parse_retry_after(None, Some("x")), None);
    }
}
