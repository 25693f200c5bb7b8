//! Latency percentiles from every recorded sample (no sampling, no buckets): the load runs are
//! short enough that keeping one `u32` of microseconds per request is cheap.

use std::time::Duration;

/// The latency figures of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

/// The nearest-rank `q`-quantile (0 < q <= 1) of `sorted`, which must be sorted ascending.
pub fn nearest_rank(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Sorts the samples (microseconds) and summarises them; `None` when there are none.
pub fn summarise(samples_us: &mut [u32]) -> Option<LatencySummary> {
    samples_us.sort_unstable();
    let us = |v: u32| Duration::from_micros(u64::from(v));
    Some(LatencySummary {
        p50: us(nearest_rank(samples_us, 0.50)?),
        p99: us(nearest_rank(samples_us, 0.99)?),
        max: us(*samples_us.last()?),
    })
}

/// A duration as microseconds in a `u32`, saturating (71 minutes is plenty for one request).
pub fn to_micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.50), Some(50));
        assert_eq!(nearest_rank(&v, 0.99), Some(99));
        assert_eq!(nearest_rank(&v, 1.0), Some(100));
        assert_eq!(nearest_rank(&[7], 0.99), Some(7));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn summary_sorts_first() {
        let mut v = vec![30, 10, 20];
        let s = summarise(&mut v).unwrap();
        assert_eq!(s.p50, Duration::from_micros(20));
        assert_eq!(s.p99, Duration::from_micros(30));
        assert_eq!(s.max, Duration::from_micros(30));
        assert!(summarise(&mut []).is_none());
    }
}
