//! Time source of the store and the governance deadlines. Tests and demos
//! substitute a manual clock, so no test sleeps for days.

use std::sync::atomic::{AtomicI64, Ordering};

/// The longest retention period a setting may name: a century, a bound of
/// sense (a value a few digits too long is a typo to refuse, not a period
/// to keep). Cut-offs are computed saturating whatever the days.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// Unix microseconds `days` days before `now`: the cut-off of a retention
/// period (saturating, whatever `days` is).
pub fn days_before(now: i64, days: u32) -> i64 {
    now.saturating_sub(i64::from(days).saturating_mul(86_400 * 1_000_000))
}

pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, as Unix microseconds (UTC).
    fn now_micros(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        d.as_micros() as i64
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(micros: i64) -> Self {
        ManualClock(AtomicI64::new(micros))
    }
    pub fn set(&self, micros: i64) {
        self.0.store(micros, Ordering::SeqCst);
    }
    pub fn advance(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock offset from the system clock by a fixed amount, for running a
/// real server "in the future" in deadline tests.
#[derive(Debug)]
pub struct OffsetClock(pub i64);

impl Clock for OffsetClock {
    fn now_micros(&self) -> i64 {
        SystemClock.now_micros().saturating_add(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_is_never_after_now_whatever_the_days() {
        let now = 1_765_000_000_000_000;
        assert_eq!(days_before(now, 1), now - 86_400_000_000);
        assert_eq!(days_before(now, 0), now);
        assert!(days_before(now, MAX_RETENTION_DAYS) < now);
        // Days whose microseconds do not fit: the earliest cut-off, not a wrapped one.
        assert_eq!(days_before(now, u32::MAX), now - i64::MAX);
    }
}
