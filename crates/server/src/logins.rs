//! Failed-login limits, per username and per client address.
//!
//! Only failures count: after `max_failures` failures in `window`, further
//! attempts for that username (or from that address) are answered 429
//! with `Retry-After` until the oldest failure leaves the window, without
//! checking the password, so guessing costs the attacker time and us no
//! hashing. A success clears the username's record. The state is kept per
//! instance, in memory, like most servers' lockouts.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most before expired ones are swept out.
const SWEEP_AT: usize = 10_000;

/// The failed-login record of every username and address.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

impl LoginLimiter {
    /// `max_failures` (0: no limit) per `window`.
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures: usize::try_from(max_failures).unwrap_or(usize::MAX),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::User(username.to_owned())).chain(addr.map(Key::Addr))
    }

    /// How long until `username` from `addr` may try again, if it must
    /// wait.
    pub fn retry_after(
        &self,
        username: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(username, addr)
            .filter_map(|key| {
                let times = map.get(&key)?;
                let recent = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < self.window);
                if recent.clone().count() < self.max_failures {
                    return None;
                }
                let oldest = recent.min()?;
                Some(self.window.saturating_sub(now.duration_since(*oldest)))
            })
            .max()
    }

    /// Count a failure.
    pub fn failed(&self, username: &str, addr: Option<IpAddr>, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        for key in Self::keys(username, addr) {
            let times = map.entry(key).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                times.pop_front();
            }
            times.push_back(now);
            while times.len() > self.max_failures {
                times.pop_front();
            }
        }
    }

    /// Forget the username's failures after a successful login.
    pub fn succeeded(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Key::User(username.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_the_username_and_the_address_for_the_window() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..3 {
            assert_eq!(
                limiter.retry_after("alice", Some(addr), t0),
                None,
                "attempt {i}"
            );
            limiter.failed("alice", Some(addr), t0 + Duration::from_secs(i));
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            limiter.retry_after("alice", None, later),
            Some(Duration::from_secs(50))
        );
        // Another username from the same address is held too …
        assert!(limiter.retry_after("bob", Some(addr), later).is_some());
        // … but not from elsewhere.
        assert_eq!(
            limiter.retry_after("bob", Some("192.0.2.8".parse().unwrap()), later),
            None
        );
        // The window passes.
        assert_eq!(
            limiter.retry_after("alice", None, t0 + Duration::from_secs(61)),
            None
        );
        limiter.succeeded("alice");
        assert_eq!(limiter.retry_after("alice", None, later), None);
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = LoginLimiter::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..10 {
            limiter.failed("alice", None, now);
        }
        assert_eq!(limiter.retry_after("alice", None, now), None);
    }
}
