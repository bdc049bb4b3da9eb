//! `Threshold`: when open fds reach a share of the soft `RLIMIT_NOFILE`.
//!
//! The hot path compares one counter with one precomputed bound. The bounds are recomputed when
//! the limit may have changed: at load, when the program calls `setrlimit`/`prlimit` on itself,
//! and every second from the report thread (another process can run `prlimit --pid`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Usage must fall this many percentage points below the threshold to arm it again.
pub const REARM_POINTS: u64 = 10;

pub struct Threshold {
    /// Fire when the open count reaches this (u64::MAX = off).
    high: AtomicU64,
    /// Arm again when the count falls below this.
    low: AtomicU64,
    armed: AtomicBool,
    percent: AtomicU64,
}

impl Default for Threshold {
    fn default() -> Self {
        Self::new()
    }
}

impl Threshold {
    pub const fn new() -> Self {
        Self {
            high: AtomicU64::new(u64::MAX),
            low: AtomicU64::new(0),
            armed: AtomicBool::new(true),
            percent: AtomicU64::new(0),
        }
    }

    /// Sets the percentage (0 = off) and the current soft limit.
    pub fn configure(&self, percent: u8, soft: u64) {
        self.percent.store(percent as u64, Ordering::Relaxed);
        self.set_limit(soft);
    }

    /// Records a new soft limit (from `getrlimit`) and recomputes the bounds.
    pub fn set_limit(&self, soft: u64) {
        let pct = self.percent.load(Ordering::Relaxed);
        if pct == 0 || soft == u64::MAX {
            self.high.store(u64::MAX, Ordering::Relaxed);
            self.low.store(0, Ordering::Relaxed);
            return;
        }
        let high = (soft.saturating_mul(pct)).div_ceil(100).max(1);
        let low = soft.saturating_mul(pct.saturating_sub(REARM_POINTS)) / 100;
        self.high.store(high, Ordering::Relaxed);
        self.low.store(low, Ordering::Relaxed);
    }

    /// After a creation: true exactly once per crossing of the threshold.
    #[inline]
    pub fn after_create(&self, open: u64) -> bool {
        open >= self.high.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel)
    }

    /// After a release: arms again once usage fell far enough.
    #[inline]
    pub fn after_release(&self, open: u64) {
        if open < self.low.load(Ordering::Relaxed) && !self.armed.load(Ordering::Relaxed) {
            self.armed.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_crossing_and_rearms_ten_points_below() {
        let t = Threshold::new();
        t.configure(80, 256);
        // 80% of 256 = 204.8 -> fires at 205 open fds; re-arms below 70% = 179.
        assert!(!t.after_create(204));
        assert!(t.after_create(205));
        assert!(!t.after_create(206));
        t.after_release(190);
        assert!(!t.after_create(205));
        t.after_release(178);
        assert!(t.after_create(205));
    }

    #[test]
    fn zero_percent_or_unlimited_is_off() {
        let t = Threshold::new();
        t.configure(0, 1024);
        assert!(!t.after_create(100_000));
        t.configure(80, u64::MAX);
        assert!(!t.after_create(u64::MAX - 1));
    }

    #[test]
    fn limit_changes_move_the_bounds() {
        let t = Threshold::new();
        t.configure(50, 100);
        t.set_limit(1000);
        assert!(!t.after_create(60));
        assert!(t.after_create(500));
    }
}
