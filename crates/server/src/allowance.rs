//! A per-minute allowance per key, kept in memory per instance: the
//! shared mechanism of the revocation allowance (`revoke_limit.rs`), the
//! codes a user is issued (`code_limit.rs`) and the refresh rotations of
//! a user's tokens (`refresh_limit.rs`).
//!
//! A GCRA rate limiter per key (`governor`), all of a minute's allowance
//! usable at once; keys idle long enough to be full again are dropped now
//! and then, so the map holds only keys in use.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two passes that drop keys whose allowance is full.
const PRUNE_EVERY: u32 = 4096;

/// `per_minute` of something per key.
#[derive(Debug)]
pub struct Allowance<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    checks: AtomicU32,
}

impl<K: Hash + Eq + Clone> Allowance<K> {
    /// `per_minute` per key (0: no limit), all of which may come at once.
    pub fn per_minute(per_minute: u32) -> Allowance<K> {
        Allowance {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            checks: AtomicU32::new(0),
        }
    }

    /// Whether there is a limit at all (`per_minute` was not 0).
    pub fn is_limited(&self) -> bool {
        self.limiter.is_some()
    }

    /// Count one for `key`, or say how long it must wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
