//! Token-bucket rate limits, kept per key (a client IP, a user ID) in memory.
//!
//! Each worker keeps its own buckets, so with N workers a client gets up to N times the burst;
//! that is the usual trade (Synapse workers do the same) and keeps the hot path free of I/O.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    accounts::sessions::Sender,
    config::{RateLimit, RateLimitsConfig},
};

/// Over the limit: try again after `retry_after` (the API answers 429 `M_LIMIT_EXCEEDED`
/// with `retry_after_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_key: HashMap<String, Bucket>,
    /// The size past which refilled buckets are dropped: twice what the last prune kept, so
    /// that many busy keys cost one sweep per doubling, not one per request.
    prune_above: usize,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets idle long enough to be full again are forgotten once the map grows past this (or
/// past twice what the last sweep kept).
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                prune_above: PRUNE_ABOVE,
            }),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available
    /// (429 `M_LIMIT_EXCEEDED` with `retry_after_ms`).
    pub fn check(&self, key: &str) -> Result<(), Limited> {
        self.check_at(key, Instant::now())
    }

    /// Like [`check`](Self::check), but takes no token: for refusing early a request that
    /// will only be counted once it succeeds.
    pub fn check_available(&self, key: &str) -> Result<(), Limited> {
        self.check_at(key, Instant::now())?;
        self.refund(key);
        Ok(())
    }

    /// Whether `key`'s bucket is full (never used, or refilled since): takes nothing.
    pub fn is_full(&self, key: &str) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        buckets.by_key.get(key).is_none_or(|bucket| {
            let refill = bucket.updated.elapsed().as_secs_f64() * self.limit.per_second;
            bucket.tokens + refill >= f64::from(self.limit.burst_count)
        })
    }

    fn refund(&self, key: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.by_key.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(self.limit.burst_count));
        }
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Limited> {
        let burst = f64::from(self.limit.burst_count);
        let rate = self.limit.per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.by_key.len() > buckets.prune_above {
            buckets
                .by_key
                .retain(|_, b| now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst);
            buckets.prune_above = (2 * buckets.by_key.len()).max(PRUNE_ABOVE);
        }
        let bucket = buckets.by_key.entry(key.to_owned()).or_insert(Bucket {
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
            Err(Limited {
                retry_after: Duration::from_secs_f64(wait).max(Duration::from_millis(1)),
            })
        }
    }
}

/// The limiters of the endpoints that have one.
pub struct RateLimits {
    pub login: RateLimiter,
    pub registration: RateLimiter,
    pub message: RateLimiter,
    pub room_creation: RateLimiter,
    pub invites: RateLimiter,
    pub invites_received: RateLimiter,
    pub joins: RateLimiter,
    pub media_upload: RateLimiter,
    pub to_device: RateLimiter,
    pub preview_url: RateLimiter,
    exempt_users: HashSet<String>,
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self {
            login: RateLimiter::new(config.login),
            registration: RateLimiter::new(config.registration),
            message: RateLimiter::new(config.message),
            room_creation: RateLimiter::new(config.room_creation),
            invites: RateLimiter::new(config.invites),
            invites_received: RateLimiter::new(config.invites_received),
            joins: RateLimiter::new(config.joins),
            media_upload: RateLimiter::new(config.media_upload),
            to_device: RateLimiter::new(config.to_device),
            preview_url: RateLimiter::new(config.preview_url),
            exempt_users: config.exempt_users.iter().cloned().collect(),
        }
    }

    /// Takes one token from `sender`'s bucket in `limiter`; admins and exempt users pass
    /// without.
    pub fn check_user(&self, limiter: &RateLimiter, sender: &Sender) -> Result<(), Limited> {
        if self.is_exempt(sender) {
            return Ok(());
        }
        limiter.check(sender.user_id.as_str())
    }

    /// An invite from `sender` to `invitee`: counts against the sender's `invites` and the
    /// invitee's `invites_received` (unless the sender is exempt).
    pub fn check_invite(&self, sender: &Sender, invitee: &str) -> Result<(), Limited> {
        if self.is_exempt(sender) {
            return Ok(());
        }
        // Nothing is taken from the sender when the invitee's bucket refuses.
        self.invites_received.check_available(invitee)?;
        self.invites.check(sender.user_id.as_str())?;
        self.invites_received.check(invitee)
    }

    /// Admins, the configured exempt users, and appservices registered with
    /// `rate_limited: false` (with every user they act as).
    pub fn is_exempt(&self, sender: &Sender) -> bool {
        sender.is_admin
            || self.exempt_users.contains(sender.user_id.as_str())
            || sender
                .appservice
                .as_ref()
                .is_some_and(|service| service.registration.exempt_from_rate_limits())
    }
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

    #[test]
    fn refilled_buckets_are_forgotten_so_the_map_stays_bounded() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst_count: 1,
        });
        let start = Instant::now();
        for key in 0..=PRUNE_ABOVE {
            limiter.check_at(&key.to_string(), start).unwrap();
        }
        // A second later every bucket is full again: the next new key sweeps them away.
        limiter.check_at("late", start + Duration::from_secs(2)).unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().by_key.len(), 1);
    }
}
