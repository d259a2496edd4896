//! Login limits: failed logins per username and per client address, and
//! successful ones per username.
//!
//! After `max_failures` failures in `window`, further attempts for that
//! username (or from that address) are answered 429 with `Retry-After`
//! until the oldest failure leaves the window, without checking the
//! password, so guessing costs the attacker time and us no hashing. A
//! success clears the username's record. The state is kept per instance,
//! in memory, like most servers' lockouts.
//!
//! An attempt counts from the moment it is let through, before its
//! password is hashed: [`LoginLimiter::begin`] reserves one of the
//! window's `max_failures` guesses for the username and for the address,
//! and gives it back only when the password turned out right. However many
//! guesses arrive at once, at most `max_failures` per username and per
//! address are ever checked in a window.
//!
//! Right passwords cost a hash too, and are not guesses: an account's
//! owner could log in again and again, and a few accounts could keep the
//! hashing queue full for everyone. So a username has at most
//! [`SUCCESSES_PER_FAILURE`] × `max_failures` successful logins in a
//! window (30 by default in 5 minutes: no person signs in that often, and
//! keeping two cores' hashing busy would take over a thousand accounts).
//!
//! The record is bounded: usernames are kept as keyed 64-bit hashes (what
//! was typed, often a password in the wrong field, is not kept, and a
//! 16 KiB username costs what a short one does), and at most
//! [`MAX_TRACKED`] usernames and addresses are tracked. Past that, the
//! entries with the fewest recent failures go first (oldest failure first
//! among equals), so a flood of new names, one failure each, evicts
//! nothing that holds more, and to evict an account on its last guess an
//! attacker must first make tens of thousands of entries as full.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most before expired ones are swept out.
const SWEEP_AT: usize = 10_000;

/// Entries tracked at most: usernames' failures and successes, and
/// addresses (about 170 bytes each for five failures, about 600 for a
/// username's thirty successes: under 30 MiB in all).
pub const MAX_TRACKED: usize = 50_000;

/// The failed-login record of every username and address.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    /// The key of the usernames' hashes, random per process.
    hasher: RandomState,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When each recent failure happened, oldest first.
    failures: HashMap<Key, VecDeque<Instant>>,
    /// Attempts let through whose password is still being checked.
    in_flight: HashMap<Key, usize>,
    /// Entries left by the last sweep of `failures`.
    after_sweep: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// A username's keyed hash.
    User(u64),
    /// An address ([`counted_as`]).
    Addr(IpAddr),
    /// An IPv6 /48, the network one site is given: it has at most
    /// [`NETWORK_IN_FLIGHT`] passwords being checked at once, and no
    /// failure count of its own (a site's people, or one of them, never
    /// lock the others out). Each /64 counting alone, a /48 (65,536 of
    /// them, free from a tunnel broker) could keep every password hasher
    /// busy, and every login waiting.
    Network(IpAddr),
    /// A username's successful logins (its keyed hash), kept with the
    /// failures, and swept and evicted as they are.
    Succeeded(u64),
}

/// Successful logins of one username in a window at most, per allowed
/// failure.
pub const SUCCESSES_PER_FAILURE: usize = 6;

/// Passwords of one IPv6 /48 checked at once at most: a fraction of the
/// hashing queue (82 places on two cores), so that one /48 cannot fill
/// it. Several can, as many IPv4 addresses can: a distributed flood is
/// not stopped by limits per address (docs/server.md says so).
const NETWORK_IN_FLIGHT: usize = 16;

/// A login attempt that was let through. Dropped without
/// [`Attempt::succeeded`], it counts as a failure: a request cancelled
/// while its password was hashed still spent one guess.
#[derive(Debug)]
#[must_use = "an attempt counts as failed unless it is marked succeeded"]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: Vec<Key>,
    outcome: Outcome,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A wrong guess (or given up while its password was checked).
    Failed,
    /// The right password.
    Succeeded,
    /// The server could not check it: no guess was made.
    NotChecked,
}

impl LoginLimiter {
    /// `max_failures` (0: no limit) per `window`.
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures: usize::try_from(max_failures).unwrap_or(usize::MAX),
            window,
            hasher: RandomState::new(),
            state: Mutex::new(State::default()),
        }
    }

    fn keys(&self, username: &str, addr: Option<IpAddr>) -> Vec<Key> {
        std::iter::once(Key::User(self.hasher.hash_one(username)))
            .chain(addr.map(|a| Key::Addr(counted_as(a))))
            .chain(addr.and_then(network_of).map(Key::Network))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Let an attempt for `username` from `addr` through, counting it at
    /// once; or say how long to wait when the window's guesses are used
    /// up (counting those still being checked).
    pub fn begin(
        &self,
        username: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let keys = self.keys(username, addr);
        if self.max_failures == 0 {
            return Ok(Attempt {
                limiter: self,
                keys: Vec::new(),
                outcome: Outcome::Failed,
            });
        }
        let mut state = self.lock();
        if let Some(wait) = self.wait(&state, &keys, now) {
            return Err(wait);
        }
        for key in &keys {
            *state.in_flight.entry(*key).or_default() += 1;
        }
        Ok(Attempt {
            limiter: self,
            keys,
            outcome: Outcome::Failed,
        })
    }

    /// Whether `username` or `addr` has used up its failures in the
    /// window at `now` (attempts in flight aside), and for how long: a
    /// failure after which this is `Some` locked them out, the moment the
    /// audit trail records (`login_locked`).
    pub fn locked_out(
        &self,
        username: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let keys = self.keys(username, addr);
        let state = self.lock();
        keys.iter()
            .filter(|key| !matches!(key, Key::Network(_)))
            .filter_map(|key| {
                let recent = self.recent(state.failures.get(key), now);
                (recent.len() >= self.max_failures).then(|| self.until_oldest_leaves(&recent, now))
            })
            .max()
    }

    /// The wait `keys` are under in `state` at `now`, if any.
    fn wait(&self, state: &State, keys: &[Key], now: Instant) -> Option<Duration> {
        let mut wait = None;
        let mut wait_at_least = |until: Duration| {
            wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
        };
        for key in keys {
            if let Key::User(user) = key {
                let max_successes = self.max_failures.saturating_mul(SUCCESSES_PER_FAILURE);
                let succeeded = state.failures.get(&Key::Succeeded(*user));
                let recent = self.recent(succeeded, now);
                // Logins still being checked count as they may succeed:
                // several at once each saw room for one more.
                let in_flight = state.in_flight.get(key).copied().unwrap_or(0);
                if recent.len() >= max_successes {
                    wait_at_least(self.until_oldest_leaves(&recent, now));
                } else if recent.len().saturating_add(in_flight) >= max_successes {
                    // Held by logins still being checked only: a second
                    // (they end soon, and may fail).
                    wait_at_least(Duration::from_secs(1));
                }
            }
            if let Key::Network(_) = key {
                // Only its passwords being checked count: a second (they
                // end soon).
                if state.in_flight.get(key).copied().unwrap_or(0) >= NETWORK_IN_FLIGHT {
                    wait_at_least(Duration::from_secs(1));
                }
                continue;
            }
            let recent = self.recent(state.failures.get(key), now);
            let in_flight = state.in_flight.get(key).copied().unwrap_or(0);
            if recent.len() >= self.max_failures {
                // Until the oldest failure leaves the window.
                wait_at_least(self.until_oldest_leaves(&recent, now));
            } else if recent.len().saturating_add(in_flight) >= self.max_failures {
                // Held by attempts in flight: a second (they end soon, and
                // one that succeeds gives its guess back).
                wait_at_least(Duration::from_secs(1));
            }
        }
        wait.map(|wait| wait.max(Duration::from_secs(1)))
    }

    /// The times of `record` within the window.
    fn recent(&self, record: Option<&VecDeque<Instant>>, now: Instant) -> Vec<Instant> {
        record
            .into_iter()
            .flatten()
            .copied()
            .filter(|t| now.duration_since(*t) < self.window)
            .collect()
    }

    /// How long until the oldest of `recent` leaves the window (a second
    /// when there is none: only attempts in flight, which end soon).
    fn until_oldest_leaves(&self, recent: &[Instant], now: Instant) -> Duration {
        recent
            .iter()
            .min()
            .map_or(Duration::from_secs(1), |oldest| {
                self.window.saturating_sub(now.duration_since(*oldest))
            })
    }

    fn finish(&self, keys: &[Key], outcome: Outcome, now: Instant) {
        let mut state = self.lock();
        for key in keys {
            if let Some(n) = state.in_flight.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.in_flight.remove(key);
                }
            }
        }
        // What the outcome records, and how many times each keeps.
        let (record, keep): (Vec<Key>, usize) = match outcome {
            Outcome::Failed => (
                keys.iter()
                    .filter(|k| !matches!(k, Key::Network(_)))
                    .copied()
                    .collect(),
                self.max_failures,
            ),
            Outcome::NotChecked => return,
            Outcome::Succeeded => {
                let mut record = Vec::new();
                for key in keys {
                    if let Key::User(user) = key {
                        state.failures.remove(key);
                        record.push(Key::Succeeded(*user));
                    }
                }
                (
                    record,
                    self.max_failures.saturating_mul(SUCCESSES_PER_FAILURE),
                )
            }
        };
        // Swept when it has doubled since the last sweep (and is large), or
        // is full: a flood of failures that all stay within the window
        // costs each failure a constant share of the sweeps, not a pass
        // over the map. A sweep of a full record that leaves it above
        // nine tenths evicts down to that, so the next sweep is a tenth
        // of the record's failures away.
        let len = state.failures.len();
        let full = len + record.len() > MAX_TRACKED;
        if full || len >= SWEEP_AT.max(state.after_sweep.saturating_mul(2)) {
            let window = self.window;
            state.failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            if full {
                self.evict(&mut state.failures, now);
            }
            state.after_sweep = state.failures.len();
        }
        for key in record {
            let times = state.failures.entry(key).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                times.pop_front();
            }
            times.push_back(now);
            while times.len() > keep {
                times.pop_front();
            }
        }
    }
}

impl LoginLimiter {
    /// Make room in a full record, down to nine tenths of it: the entries
    /// with the fewest failures in the window go first, and among equals
    /// those whose last failure is oldest.
    fn evict(&self, failures: &mut HashMap<Key, VecDeque<Instant>>, now: Instant) {
        let keep = MAX_TRACKED - MAX_TRACKED / 10;
        let Some(excess) = failures.len().checked_sub(keep).filter(|n| *n > 0) else {
            return;
        };
        let mut order: Vec<(usize, Instant, Key)> = failures
            .iter()
            .map(|(key, times)| {
                let recent = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < self.window)
                    .count();
                (recent, times.back().copied().unwrap_or(now), *key)
            })
            .collect();
        order.select_nth_unstable_by(excess - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, _, key) in &order[..excess] {
            failures.remove(key);
        }
    }
}

impl Attempt<'_> {
    /// The password was right: the guess is given back, and the username's
    /// failures are forgotten.
    pub fn succeeded(mut self) {
        self.outcome = Outcome::Succeeded;
    }

    /// The server could not check the password (the database failed, the
    /// hashing queue was full): no guess was made, so none is counted.
    pub fn not_checked(mut self) {
        self.outcome = Outcome::NotChecked;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            self.limiter
                .finish(&self.keys, self.outcome, Instant::now());
        }
    }
}

/// The address an attempt counts against: an IPv4 address as it is, an
/// IPv6 address by its /64, the network one subscriber or host is given
/// (which can send from any of its 2^64 addresses).
fn counted_as(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

/// The /48 of an IPv6 address (not of an IPv4 one, mapped or not).
fn network_of(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Some(IpAddr::V6(
            std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1)),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures short of the limit and attempts in flight that reach it
    /// hold a new attempt for a second (those in flight end soon), not
    /// until the oldest failure leaves the window; at the limit, until it
    /// does.
    #[test]
    fn attempts_in_flight_hold_others_for_a_second() {
        let limiter = LoginLimiter::new(5, Duration::from_secs(300));
        let t0 = Instant::now();
        let addr: Option<IpAddr> = Some("192.0.2.7".parse().unwrap());
        for _ in 0..4 {
            fail(&limiter, "alice", addr, t0);
        }
        let checking = limiter.begin("alice", addr, t0).unwrap();
        assert_eq!(
            limiter.begin("alice", addr, t0).unwrap_err(),
            Duration::from_secs(1)
        );
        drop(checking);
        let wait = limiter.begin("alice", addr, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(300));
    }

    /// The /64s of one /48 share its passwords being checked: sixteen at
    /// once, then a new /64 there waits a second, while another /48 does
    /// not; and its failures, however many, lock no one of the site out.
    #[test]
    fn an_ipv6_site_has_a_share_of_the_checks_and_no_lockout() {
        let limiter = LoginLimiter::new(5, Duration::from_secs(300));
        let t0 = Instant::now();
        let in_site = |i: u16| -> IpAddr { format!("2001:db8:1:{i:x}::1").parse().unwrap() };
        // A hundred failures from a hundred /64s of the site.
        for i in 0..100 {
            fail(&limiter, &format!("user{i}"), Some(in_site(i)), t0);
        }
        // Sixteen checks at once, then a wait.
        let checking: Vec<_> = (0..16)
            .map(|i| {
                limiter
                    .begin(&format!("person{i}"), Some(in_site(200 + i)), t0)
                    .unwrap()
            })
            .collect();
        let wait = limiter
            .begin("someone", Some(in_site(1000)), t0)
            .map(drop)
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        let elsewhere: IpAddr = "2001:db8:2::1".parse().unwrap();
        drop(limiter.begin("someone", Some(elsewhere), t0).unwrap());
        // One check done (its password right), a place frees.
        let mut checking = checking.into_iter();
        checking.next().unwrap().succeeded();
        limiter
            .begin("someone", Some(in_site(1000)), t0)
            .unwrap()
            .succeeded();
    }

    /// Right passwords are not guesses, but they cost a hash: a username
    /// has thirty successes a window (with five failures allowed), then
    /// it waits like a locked one. Before, a few accounts logging in
    /// again and again kept the hashing queue full for everyone.
    #[test]
    fn right_passwords_have_a_share_of_the_checks_too() {
        let limiter = LoginLimiter::new(5, Duration::from_secs(300));
        let t0 = Instant::now();
        let addr = |i: usize| -> Option<IpAddr> { Some(format!("192.0.2.{i}").parse().unwrap()) };
        // Thirty successes, from anywhere …
        for i in 0..30 {
            let at = t0 + Duration::from_secs(i as u64);
            limiter.begin("alice", addr(i % 7), at).unwrap().succeeded();
        }
        // … then the next waits until the first leaves the window.
        let at = t0 + Duration::from_secs(100);
        let wait = limiter.begin("alice", addr(9), at).map(drop).unwrap_err();
        // (Outcomes are recorded by the real clock, a moment after t0.)
        assert!(
            wait.abs_diff(Duration::from_secs(200)) < Duration::from_secs(1),
            "{wait:?}"
        );
        // Others are not held, even from the same address.
        limiter.begin("bob", addr(9), at).unwrap().succeeded();
        // The window moves on.
        let later = t0 + Duration::from_secs(301);
        limiter.begin("alice", addr(9), later).unwrap().succeeded();
        // No limit at all is no limit on successes either.
        let open = LoginLimiter::new(0, Duration::from_secs(300));
        for _ in 0..100 {
            open.begin("alice", addr(1), t0).unwrap().succeeded();
        }
    }

    /// Logins being checked count toward the successes' share: with 29
    /// successes in the window, five right passwords at once let one
    /// through, not five (each saw room for one more).
    #[test]
    fn logins_at_once_do_not_pass_the_successes_share() {
        let limiter = LoginLimiter::new(5, Duration::from_secs(300));
        let now = Instant::now();
        for _ in 0..29 {
            limiter.begin("alice", None, now).unwrap().succeeded();
        }
        let (attempts, waits): (Vec<_>, Vec<_>) = (0..5)
            .map(|_| limiter.begin("alice", None, now))
            .partition(Result::is_ok);
        let attempts: Vec<_> = attempts.into_iter().filter_map(Result::ok).collect();
        assert_eq!(attempts.len(), 1);
        // Held by the one in flight only: a second, not the window.
        for wait in waits.into_iter().filter_map(Result::err) {
            assert_eq!(wait, Duration::from_secs(1));
        }
        for attempt in attempts {
            attempt.succeeded();
        }
        assert!(limiter.begin("alice", None, now).is_err(), "thirty now");
    }

    fn fail(limiter: &LoginLimiter, user: &str, addr: Option<IpAddr>, at: Instant) {
        let attempt = limiter.begin(user, addr, at).unwrap();
        limiter.finish(&attempt.keys, Outcome::Failed, at);
        // The drop would count it a second time.
        std::mem::forget(attempt);
    }

    #[test]
    fn failures_lock_the_username_and_the_address_for_the_window() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..3 {
            fail(&limiter, "alice", Some(addr), t0 + Duration::from_secs(i));
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            limiter.begin("alice", None, later).unwrap_err(),
            Duration::from_secs(50)
        );
        // Another username from the same address is held too …
        assert!(limiter.begin("bob", Some(addr), later).is_err());
        // … but not from elsewhere.
        limiter
            .begin("bob", Some("192.0.2.8".parse().unwrap()), later)
            .unwrap()
            .succeeded();
        // The window passes.
        limiter
            .begin("alice", None, t0 + Duration::from_secs(61))
            .unwrap()
            .succeeded();
        assert!(limiter.begin("alice", None, later).is_ok());
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let now = Instant::now();
        // Each guess from another address of one /64, each for another user.
        for (i, user) in ["a", "b", "c"].iter().enumerate() {
            let addr: IpAddr = format!("2001:db8:1:2::{}", i + 1).parse().unwrap();
            fail(&limiter, user, Some(addr), now);
        }
        let same_net: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(limiter.begin("d", Some(same_net), now).is_err());
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        limiter
            .begin("d", Some(other_net), now)
            .unwrap()
            .succeeded();
        // An IPv4 address written as IPv6 is that IPv4 address.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(counted_as(mapped), v4);
        assert_eq!(counted_as(v4), v4);
    }

    #[test]
    fn failures_within_the_window_are_swept_when_they_double_not_each_time() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let now = Instant::now();
        // The failure that finds SWEEP_AT entries sweeps; all are within
        // the window, so all stay …
        for i in 0..=SWEEP_AT {
            fail(&limiter, &format!("user{i}"), None, now);
        }
        assert_eq!(limiter.lock().after_sweep, SWEEP_AT);
        // … and no failure sweeps again until there are twice as many.
        for i in SWEEP_AT + 1..2 * SWEEP_AT {
            fail(&limiter, &format!("user{i}"), None, now);
        }
        assert_eq!(limiter.lock().failures.len(), 2 * SWEEP_AT);
        assert_eq!(limiter.lock().after_sweep, SWEEP_AT);
        // Once the window has passed, the next sweep empties it.
        let later = now + Duration::from_secs(61);
        fail(&limiter, "last", None, later);
        assert_eq!(limiter.lock().after_sweep, 0);
        assert_eq!(limiter.lock().failures.len(), 1);
    }

    #[test]
    fn the_record_is_bounded_and_a_flood_evicts_the_emptiest_entries_first() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        let tracked = |name: &str| {
            let key = Key::User(limiter.hasher.hash_one(name));
            limiter.lock().failures.contains_key(&key)
        };
        for _ in 0..3 {
            fail(&limiter, "alice", None, t0);
        }
        // One guess short of the lock.
        for _ in 0..2 {
            fail(&limiter, "carol", None, t0);
        }
        fail(&limiter, "early", None, t0);
        // A flood of new names, one failure each, all within the window.
        let later = t0 + Duration::from_secs(1);
        for i in 0..MAX_TRACKED + 1_000 {
            fail(&limiter, &format!("user{i}"), None, later);
            assert!(limiter.lock().failures.len() <= MAX_TRACKED);
        }
        // The oldest single failure went; the fuller entries, older still,
        // stayed: the flood gives neither account its guesses back.
        assert!(!tracked("early"));
        assert!(tracked("alice") && tracked("carol"));
        assert!(limiter.begin("alice", None, later).is_err());
        // Carol's last guess, then the lock.
        drop(limiter.begin("carol", None, later).unwrap());
        assert!(limiter.begin("carol", None, later).is_err());
        assert!(tracked(&format!("user{}", MAX_TRACKED + 999)));

        // When every entry is locked, the oldest go.
        let limiter = LoginLimiter::new(1, Duration::from_secs(600));
        for i in 0..=MAX_TRACKED {
            let at = t0 + Duration::from_millis(u64::try_from(i).unwrap());
            fail(&limiter, &format!("user{i}"), None, at);
        }
        let state = limiter.lock();
        assert!(state.failures.len() <= MAX_TRACKED);
        let has = |i: usize| {
            let key = Key::User(limiter.hasher.hash_one(format!("user{i}")));
            state.failures.contains_key(&key)
        };
        assert!(!has(0));
        assert!(has(MAX_TRACKED));
    }

    #[test]
    fn a_check_the_server_could_not_make_is_no_guess() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..5 {
            limiter.begin("alice", None, now).unwrap().not_checked();
        }
        fail(&limiter, "alice", None, now);
        limiter
            .begin("alice", None, now)
            .expect("one guess spent, not six")
            .not_checked();
        // Nor does it forget the failures there were.
        fail(&limiter, "alice", None, now);
        assert!(limiter.begin("alice", None, now).is_err());
    }

    #[test]
    fn attempts_in_flight_count_before_their_outcome() {
        let limiter = LoginLimiter::new(5, Duration::from_secs(60));
        let now = Instant::now();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        // Forty guesses at once: five are let through, the rest wait.
        let mut through = Vec::new();
        let mut refused = 0;
        for i in 0..40u8 {
            let from = IpAddr::from([198, 51, 100, i]);
            match limiter.begin("alice", Some(from), now) {
                Ok(attempt) => through.push(attempt),
                Err(wait) => {
                    assert!(wait >= Duration::from_secs(1));
                    refused += 1;
                }
            }
        }
        assert_eq!((through.len(), refused), (5, 35));
        // Dropped without success: each counts as a failure.
        drop(through);
        assert!(limiter.begin("alice", None, now).is_err());
        // The same bound per address, whatever the usernames.
        let held: Vec<_> = (0..5)
            .map(|i| limiter.begin(&format!("user{i}"), Some(addr), now).unwrap())
            .collect();
        assert!(limiter.begin("someone", Some(addr), now).is_err());
        // Successes give their guess back: the address is free again.
        for attempt in held {
            attempt.succeeded();
        }
        limiter
            .begin("someone", Some(addr), now)
            .unwrap()
            .succeeded();
    }

    #[test]
    fn a_success_clears_the_username() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let now = Instant::now();
        fail(&limiter, "alice", None, now);
        fail(&limiter, "alice", None, now);
        limiter.begin("alice", None, now).unwrap().succeeded();
        for _ in 0..3 {
            fail(&limiter, "alice", None, now);
        }
        assert!(limiter.begin("alice", None, now).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = LoginLimiter::new(0, Duration::from_secs(60));
        let now = Instant::now();
        let held: Vec<_> = (0..50)
            .map(|_| limiter.begin("alice", None, now).unwrap())
            .collect();
        drop(held);
        assert!(limiter.begin("alice", None, now).is_ok());
    }
}
