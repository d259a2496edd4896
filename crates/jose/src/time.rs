//! Time for JWT claims: `NumericDate` (RFC 7519 §2) and a clock tests can set.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Visitor};

/// Seconds since the Unix epoch, as JWT `exp`, `nbf` and `iat` carry them.
///
/// RFC 7519 allows fractional values; they are accepted and rounded down,
/// since every check here works in whole seconds. Values that are not finite
/// numbers, or that fall outside what an `i64` second count can hold, are
/// rejected.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NumericDate(i64);

impl NumericDate {
    /// The date `secs` seconds after the epoch.
    pub const fn from_seconds(secs: i64) -> NumericDate {
        NumericDate(secs)
    }

    /// Seconds since the epoch.
    pub const fn seconds(self) -> i64 {
        self.0
    }

    /// The current system time, in whole seconds, never ahead of the
    /// system clock (on Linux the coarse clock: up to one timer tick, a
    /// few milliseconds, behind it), so an `iat` set from it is never in
    /// anyone's future. Validation reads [`SystemClock`], which is never
    /// behind instead.
    pub fn now() -> NumericDate {
        NumericDate(coarse_seconds(false))
    }

    /// This date plus a duration (saturating).
    pub fn plus(self, d: Duration) -> NumericDate {
        NumericDate(
            self.0
                .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        )
    }

    /// This date minus a duration (saturating).
    pub fn minus(self, d: Duration) -> NumericDate {
        NumericDate(
            self.0
                .saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        )
    }

    /// RFC 3339 form in UTC (`2026-11-20T10:00:00Z`), or the raw number
    /// when the date is outside the calendar range.
    pub fn to_rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl fmt::Display for NumericDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for NumericDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NumericDate({} = {})", self.0, self.to_rfc3339())
    }
}

impl serde::Serialize for NumericDate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumericDateVisitor)
    }
}

pub(crate) struct NumericDateVisitor;

impl Visitor<'_> for NumericDateVisitor {
    type Value = NumericDate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of seconds since the epoch")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
        Ok(NumericDate(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
        i64::try_from(v)
            .map(NumericDate)
            .map_err(|_| E::custom("date out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
        NumericDate::seconds_from_f64(v)
            .map(NumericDate)
            .ok_or_else(|| E::custom("date out of range"))
    }
}

impl NumericDate {
    /// Whole seconds (rounded down) of a fractional date, if in range.
    pub(crate) fn seconds_from_f64(v: f64) -> Option<i64> {
        // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        let floor = v.floor();
        #[allow(clippy::cast_possible_truncation)]
        (floor.is_finite() && (-LIMIT..LIMIT).contains(&floor)).then_some(floor as i64)
    }
}

/// Where "now" comes from when claims are validated.
///
/// The default is the system clock; tests use [`FixedClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> NumericDate;
}

/// The system clock, as validation needs it: not behind it (on Linux the
/// coarse clock moved forward by a tick: up to a few milliseconds ahead;
/// behind only for the moment the kernel's tick itself is late), so a
/// token issued this instant is not "in the future", and one may expire
/// that much early.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> NumericDate {
        NumericDate(coarse_seconds(true))
    }
}

/// A clock that stands still until told to move. Clones share one time.
#[derive(Clone, Debug)]
pub struct FixedClock(Arc<AtomicI64>);

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn new(at: NumericDate) -> FixedClock {
        FixedClock(Arc::new(AtomicI64::new(at.seconds())))
    }

    /// Set the time.
    pub fn set(&self, at: NumericDate) {
        self.0.store(at.seconds(), Ordering::SeqCst);
    }

    /// Move the time forward.
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        // Saturating: a clock moved past the end stays at the end.
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(secs))
            });
    }
}

impl Clock for FixedClock {
    fn now(&self) -> NumericDate {
        NumericDate(self.0.load(Ordering::SeqCst))
    }
}

/// Seconds since the epoch for deciding what to forget (revocations past
/// their end, expired records): the wall clock, but never further ahead
/// of where it stood at the last reading than the time that has really
/// passed since (a monotonic clock). A clock stepped forward (an NTP
/// correction, a VM resumed with a wrong clock) would otherwise have
/// things forgotten for good that are needed again once it is set right;
/// a clock stepped back is followed at once, since forgetting later is
/// safe. Not for validating tokens: that is [`SystemClock`]'s job.
#[derive(Clone, Debug)]
pub struct SteadyClock {
    /// The last wall-clock reading followed, and when it was taken.
    anchor: (i64, std::time::Instant),
    /// Whether the last reading held a jump back.
    holding: bool,
}

impl SteadyClock {
    /// A clock that starts from the wall clock now.
    pub fn new() -> SteadyClock {
        SteadyClock::starting(NumericDate::now().seconds(), std::time::Instant::now())
    }

    /// A clock whose first reading, `wall`, was taken at `at`.
    pub fn starting(wall: i64, at: std::time::Instant) -> SteadyClock {
        SteadyClock {
            anchor: (wall, at),
            holding: false,
        }
    }

    /// The time now (seconds since the epoch).
    pub fn now(&mut self) -> i64 {
        self.at(NumericDate::now().seconds(), std::time::Instant::now())
    }

    /// The time to act by when the wall clock reads `wall` at `at`.
    pub fn at(&mut self, wall: i64, at: std::time::Instant) -> i64 {
        let passed = i64::try_from(at.saturating_duration_since(self.anchor.1).as_secs())
            .unwrap_or(i64::MAX);
        let bound = self.anchor.0.saturating_add(passed);
        // Two seconds of rounding either way are no jump.
        if wall <= bound.saturating_add(2) {
            self.anchor = (wall, at);
            self.holding = false;
            wall
        } else {
            self.holding = true;
            bound
        }
    }

    /// Whether the last reading held back a wall clock that had jumped
    /// forward.
    pub fn holding(&self) -> bool {
        self.holding
    }
}

impl Default for SteadyClock {
    fn default() -> SteadyClock {
        SteadyClock::new()
    }
}

/// "2 days", "14 minutes", "1 second": the largest whole unit of a span.
pub fn describe_span(secs: i64) -> String {
    let secs = secs.unsigned_abs();
    let (n, unit) = match secs {
        s if s >= 86_400 => (s / 86_400, "day"),
        s if s >= 3_600 => (s / 3_600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Seconds since the epoch from the coarse clock: the time of the last
/// timer tick, read without entering the kernel (~6 ns on this project's
/// VM, against ~46 ns for the precise clock behind `SystemTime::now`).
/// Whole seconds are all a [`NumericDate`] holds. The coarse clock is never
/// ahead of the precise one and at most a tick behind; `ahead` adds the
/// tick's length, for a reading not behind it (unless the tick is late). A tick longer than 10 ms
/// (an unusual kernel) falls back to the precise clock.
#[cfg(target_os = "linux")]
fn coarse_seconds(ahead: bool) -> i64 {
    use rustix::time::{clock_getres, clock_gettime, ClockId};
    static TICK_NS: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
    let tick = *TICK_NS.get_or_init(|| {
        let res = clock_getres(ClockId::RealtimeCoarse);
        let ns = res
            .tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(res.tv_nsec);
        (0..=10_000_000).contains(&ns).then_some(ns)
    });
    match tick {
        Some(tick) => {
            let t = clock_gettime(ClockId::RealtimeCoarse);
            let nanos = if ahead {
                t.tv_nsec.saturating_add(tick)
            } else {
                t.tv_nsec
            };
            t.tv_sec.saturating_add(nanos.div_euclid(1_000_000_000))
        }
        None => precise_seconds(),
    }
}

#[cfg(not(target_os = "linux"))]
fn coarse_seconds(_ahead: bool) -> i64 {
    precise_seconds()
}

/// Seconds since the epoch from `SystemTime::now`.
fn precise_seconds() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_date_accepts_numbers_only() {
        let d: NumericDate = serde_json::from_str("1300819380").unwrap();
        assert_eq!(d.seconds(), 1_300_819_380);
        let d: NumericDate = serde_json::from_str("1300819380.9").unwrap();
        assert_eq!(d.seconds(), 1_300_819_380);
        for bad in [
            "\"1300819380\"",
            "null",
            "true",
            "[1]",
            "1e300",
            "18446744073709551615",
        ] {
            assert!(
                serde_json::from_str::<NumericDate>(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn formats_rfc3339_and_spans() {
        assert_eq!(
            NumericDate::from_seconds(1_763_632_800).to_string(),
            "2025-11-20T10:00:00Z"
        );
        assert_eq!(describe_span(2 * 86_400 + 5), "2 days");
        assert_eq!(describe_span(-61), "1 minute");
        assert_eq!(describe_span(0), "0 seconds");
    }

    #[test]
    fn validation_is_never_behind_the_system_clock_nor_minting_ahead() {
        // Across at least one change of second: right after it the coarse
        // clock still shows the second before, unless moved forward.
        // A stalled tick (a preempted virtual CPU keeping time) can leave
        // the coarse clock behind for a moment longer, so a few readings
        // may be. The unadjusted clock (minting's) is behind for the whole
        // first tick after the change and for the stall as well: moving
        // forward must spare some of those readings. (A share of all
        // readings would not do: on a VM whose ticks ran ~1 ms late, 0.07 %
        // of the adjusted readings were behind and 0.5 % of the unadjusted.)
        let started = std::time::Instant::now();
        let (mut readings, mut behind, mut minting_behind) = (0u64, 0u64, 0u64);
        while started.elapsed() < Duration::from_millis(1100) {
            let before = precise_seconds();
            let validating = SystemClock.now().seconds();
            let minting = NumericDate::now().seconds();
            let after = precise_seconds();
            behind += u64::from(validating < before);
            minting_behind += u64::from(minting < before);
            assert!(
                validating >= before - 1,
                "{validating} is far behind {before}"
            );
            assert!(
                validating <= after + 1,
                "{validating} is far ahead of {after}"
            );
            assert!(minting <= after, "{minting} is ahead of {after}");
            assert!(minting >= before - 1, "{minting} is far behind {before}");
            readings += 1;
        }
        assert!(readings > 1000);
        // Fewer, not a share fewer: stalls put both behind alike, and on
        // this 2-core VM under a full test run they took the adjusted
        // clock's share from 1/7 of the unadjusted one's to 2/5 (14,132
        // readings behind against 37,113, of 5.9 million). Without the
        // move forward the two counts are about the same.
        assert!(
            behind < minting_behind,
            "{behind} readings behind, {minting_behind} unadjusted, of {readings}"
        );
    }

    /// A clock stepped forward is not followed: readings go on by the time
    /// that has really passed; a clock stepped back is followed at once.
    #[test]
    fn a_steady_clock_does_not_follow_a_jump_forward() {
        let t0 = std::time::Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut steady = SteadyClock::starting(1000, t0);
        assert_eq!(steady.at(1010, at(10)), 1010);
        // An hour ahead all at once, ten seconds later.
        assert_eq!(steady.at(1010 + 10 + 3600, at(20)), 1020);
        assert!(steady.holding());
        assert_eq!(steady.at(1010 + 20 + 3600, at(30)), 1030);
        // A second of rounding is no jump.
        assert_eq!(steady.at(1041, at(40)), 1041);
        assert!(!steady.holding());
        // Stepped back: followed at once.
        assert_eq!(steady.at(900, at(50)), 900);
        assert_eq!(steady.at(910, at(60)), 910);
    }

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let clock = FixedClock::new(NumericDate::from_seconds(100));
        let shared = clock.clone();
        assert_eq!(clock.now().seconds(), 100);
        shared.advance(Duration::from_secs(50));
        assert_eq!(clock.now().seconds(), 150);
        clock.set(NumericDate::from_seconds(7));
        assert_eq!(shared.now().seconds(), 7);
        // Moved past the end, it stays at the end (no wrap to the past).
        clock.advance(Duration::MAX);
        assert_eq!(clock.now().seconds(), i64::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now().seconds(), i64::MAX);
    }
}
