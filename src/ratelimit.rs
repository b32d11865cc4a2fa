//! Token-bucket rate limits, kept per key (a client IP, a user ID) in memory.
//!
//! Each worker keeps its own buckets, so with N workers a client gets up to N times the burst;
//! that is the usual trade (Synapse workers do the same) and keeps the hot path free of I/O.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{config::RateLimit, error::ApiError};

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets idle long enough to be full again are forgotten once the map grows past this.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available
    /// (429 `M_LIMIT_EXCEEDED` with `retry_after_ms`).
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        self.check_at(key, Instant::now())
    }

    /// Like [`check`](Self::check), but takes no token: for refusing early a request that
    /// will only be counted once it succeeds.
    pub fn check_available(&self, key: &str) -> Result<(), ApiError> {
        self.check_at(key, Instant::now())?;
        self.refund(key);
        Ok(())
    }

    /// Whether `key`'s bucket is full (never used, or refilled since): takes nothing.
    pub fn is_full(&self, key: &str) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        buckets.get(key).is_none_or(|bucket| {
            let refill = bucket.updated.elapsed().as_secs_f64() * self.limit.per_second;
            bucket.tokens + refill >= f64::from(self.limit.burst_count)
        })
    }

    fn refund(&self, key: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(self.limit.burst_count));
        }
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), ApiError> {
        let burst = f64::from(self.limit.burst_count);
        let rate = self.limit.per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| (now - b.updated).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(ApiError::limit_exceeded(
                Duration::from_secs_f64(wait).max(Duration::from_millis(1)),
            ))
        }
    }
}

/// The limiters of the endpoints that have one.
pub struct RateLimits {
    pub login: RateLimiter,
    pub registration: RateLimiter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst_count: 3,
        });
        let start = Instant::now();
        for _ in 0..3 {
            limiter.check_at("ip", start).unwrap();
        }
        assert!(limiter.check_at("ip", start).is_err());
        // Other keys have their own bucket.
        limiter.check_at("other", start).unwrap();
        // Half a second at 2/s gives one token back.
        limiter.check_at("ip", start + Duration::from_millis(500)).unwrap();
        assert!(limiter.check_at("ip", start + Duration::from_millis(500)).is_err());
    }
}
