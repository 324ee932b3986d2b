//! A pool's retry budget (Envoy's and Linkerd's idea): retries of requests that reached a
//! server are allowed while they stay under a share of the pool's recent requests, so that
//! when every server fails, retries cannot multiply the load of an outage.
//!
//! Counts are kept per second over a sliding window of [`WINDOW_SECS`] seconds, in lock-free
//! buckets: a request costs two relaxed atomic operations. The counts are approximate where a
//! bucket is reused while another thread counts in it; a budget needs no more.

use std::sync::atomic::{AtomicU64, Ordering};

/// The window the budget looks back over.
pub const WINDOW_SECS: u64 = 10;
/// Retries allowed per window whatever the traffic: a quiet pool still retries now and then.
pub const MIN_RETRIES_PER_WINDOW: u64 = 10;

#[derive(Default)]
struct Bucket {
    /// The second this bucket counts (since the budget's clock started).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

pub struct RetryBudget {
    /// Retries per 1000 requests.
    permille: u64,
    buckets: [Bucket; WINDOW_SECS as usize],
    /// Retries refused by the budget, since start.
    pub refused: AtomicU64,
    /// Retries made, since start.
    pub made: AtomicU64,
}

impl RetryBudget {
    pub fn new(permille: u32) -> RetryBudget {
        RetryBudget {
            permille: u64::from(permille),
            buckets: Default::default(),
            refused: AtomicU64::new(0),
            made: AtomicU64::new(0),
        }
    }

    /// Counts one request at `second`.
    pub fn record_request(&self, second: u64) {
        self.bucket(second).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether one more retry fits the budget at `second`; if so it is counted.
    pub fn try_retry(&self, second: u64) -> bool {
        let (requests, retries) = self.window(second);
        let allowed = (requests * self.permille / 1000).max(MIN_RETRIES_PER_WINDOW);
        if self.permille == 0 || retries >= allowed {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.bucket(second).retries.fetch_add(1, Ordering::Relaxed);
        self.made.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The bucket of `second`, emptied first if it still holds an older second.
    fn bucket(&self, second: u64) -> &Bucket {
        let bucket = &self.buckets[(second % WINDOW_SECS) as usize];
        let held = bucket.second.load(Ordering::Relaxed);
        if held != second
            && bucket
                .second
                .compare_exchange(held, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// (requests, retries) over the window ending at `second`.
    fn window(&self, second: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|bucket| {
                let held = bucket.second.load(Ordering::Relaxed);
                held <= second && second - held < WINDOW_SECS
            })
            .fold((0, 0), |(requests, retries), bucket| {
                (
                    requests + bucket.requests.load(Ordering::Relaxed),
                    retries + bucket.retries.load(Ordering::Relaxed),
                )
            })
    }
}

/// Seconds since the process started counting: the budget's clock.
pub fn now_second() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
        // Second 0 is the buckets' initial value: start at 1 so it is never mistaken for one.
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_under_the_share_of_recent_requests() {
        let budget = RetryBudget::new(200);
        for _ in 0..1000 {
            budget.record_request(5);
        }
        let allowed = (0..1000).filter(|_| budget.try_retry(5)).count();
        assert_eq!(allowed, 200);
        assert_eq!(budget.refused.load(Ordering::Relaxed), 800);
    }

    #[test]
    fn a_quiet_pool_still_gets_the_minimum() {
        let budget = RetryBudget::new(200);
        budget.record_request(1);
        let allowed = (0..100).filter(|_| budget.try_retry(1)).count();
        assert_eq!(allowed as u64, MIN_RETRIES_PER_WINDOW);
    }

    #[test]
    fn the_window_slides() {
        let budget = RetryBudget::new(500);
        for _ in 0..100 {
            budget.record_request(1);
        }
        assert_eq!((0..100).filter(|_| budget.try_retry(1)).count(), 50);
        // Still inside the window: spent.
        assert!(!budget.try_retry(WINDOW_SECS));
        // Past it: the old requests and retries no longer count; the minimum applies.
        let later = 1 + WINDOW_SECS;
        assert_eq!(
            (0..100).filter(|_| budget.try_retry(later)).count() as u64,
            MIN_RETRIES_PER_WINDOW
        );
    }

    #[test]
    fn a_zero_budget_never_retries() {
        let budget = RetryBudget::new(0);
        budget.record_request(1);
        assert!(!budget.try_retry(1));
    }
}
