//! Warnings a client can cause once per request, said at most once per
//! period. While the database is down, every request fails the same way
//! and every `/readyz` probe finds it so: a warning each would flood the
//! log just when the operator reads it. Each warning said counts those
//! left out since the last (the request metrics count every refusal).
//! [`PerCaller`] keeps one period per place in the code that says one,
//! so that a flood of one cause does not hide another, rarer one.

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// One kind of warning, said at most once per `every`.
pub(crate) struct LogLimit {
    every_ms: u64,
    /// When (ms since [`since_start`]'s origin) the next may be said.
    next_ms: AtomicU64,
    /// Left out since the last one said.
    left_out: AtomicU64,
}

impl LogLimit {
    pub(crate) const fn new(every: Duration) -> LogLimit {
        LogLimit {
            // Whole milliseconds; a period of 584 million years at most.
            every_ms: every.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(how many were left out since the last)` when this one is to
    /// be said; `None` (and counted) otherwise.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(since_start())
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Acquire);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.every_ms),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::AcqRel));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A [`LogLimit`] for each place in the code that asks (the caller of
/// [`PerCaller::admit`], through `#[track_caller]` functions).
pub(crate) struct PerCaller {
    every: Duration,
    /// A few places each: a list, searched.
    sites: Mutex<Vec<(&'static Location<'static>, LogLimit)>>,
}

impl PerCaller {
    pub(crate) const fn new(every: Duration) -> PerCaller {
        PerCaller {
            every,
            sites: Mutex::new(Vec::new()),
        }
    }

    /// [`LogLimit::admit`] for the caller's place in the code.
    #[track_caller]
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_for(Location::caller())
    }

    fn admit_for(&self, site: &'static Location<'static>) -> Option<u64> {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, limit)) = sites.iter().find(|(s, _)| *s == site) {
            return limit.admit();
        }
        let limit = LogLimit::new(self.every);
        let said = limit.admit();
        sites.push((site, limit));
        said
    }
}

/// Milliseconds since the first call in this process (monotonic).
fn since_start() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let elapsed = ORIGIN.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(elapsed).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_each_counting_those_left_out() {
        let limit = LogLimit::new(Duration::from_secs(10));
        assert_eq!(limit.admit_at(5), Some(0), "the first is said");
        for at in [6, 5_000, 10_004] {
            assert_eq!(limit.admit_at(at), None, "at {at}");
        }
        assert_eq!(limit.admit_at(10_005), Some(3), "the next, with the count");
        assert_eq!(limit.admit_at(10_006), None);
        assert_eq!(limit.admit_at(60_000), Some(1));
    }

    /// Two places in the code each have their period: a flood from one
    /// does not keep the other from being said.
    #[test]
    fn each_place_in_the_code_has_its_own_period() {
        let limit = PerCaller::new(Duration::from_secs(3600));
        let (first, second) = (Location::caller(), Location::caller());
        assert_ne!(first, second);
        assert_eq!(limit.admit_for(first), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.admit_for(first), None);
        }
        assert_eq!(limit.admit_for(second), Some(0), "hidden by the other");
        assert_eq!(limit.admit_for(second), None);
    }

    /// The place is the one that refuses, through `?` and a
    /// `#[track_caller]` `From` (as `OAuthError`'s): each `?` its own.
    #[test]
    fn the_place_is_known_through_question_marks() {
        static SAID: PerCaller = PerCaller::new(Duration::from_secs(3600));
        struct Refused;
        struct Said(Option<u64>);
        impl From<Refused> for Said {
            #[track_caller]
            fn from(_: Refused) -> Said {
                Said(SAID.admit())
            }
        }
        fn here() -> Result<(), Said> {
            Err(Refused)?;
            Ok(())
        }
        fn there() -> Result<(), Said> {
            Err(Refused)?;
            Ok(())
        }
        let said = |r: Result<(), Said>| r.err().and_then(|s| s.0);
        assert_eq!(said(here()), Some(0));
        assert_eq!(said(here()), None);
        assert_eq!(said(there()), Some(0), "both seen as one place");
    }

    #[test]
    fn threads_at_once_say_one() {
        let limit = std::sync::Arc::new(LogLimit::new(Duration::from_secs(3600)));
        let said: usize = (0..8)
            .map(|_| {
                let limit = std::sync::Arc::clone(&limit);
                std::thread::spawn(move || (0..1000).filter(|_| limit.admit().is_some()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(said, 1);
        assert_eq!(limit.left_out.load(Ordering::Relaxed), 7_999);
    }
}
