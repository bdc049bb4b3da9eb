//! `Threshold`: when open fds reach a share of the soft `RLIMIT_NOFILE`.
//!
//! # Why it does not count every fd
//! A shared count updated by every `open` and `close` costs two locked instructions per pair,
//! a fifth of fdguard's whole cost there. It is not needed while no fd number has come near
//! the threshold: `n` open fds always include a number `>= n - 1`, so while the highest number
//! ever recorded is below `high - 1` usage is below `high`. Only from then on are creations and
//! releases counted, starting from a scan of the table. Hooks running while the count starts
//! can be counted twice or not at all: the count is exact to within a few fds.
//!
//! The bounds are recomputed when the limit may have changed: at load, when the program calls
//! `setrlimit`/`prlimit` on itself, and at least once a second on the creation path (another
//! process can run `prlimit --pid`).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Usage must fall this many percentage points below the threshold to arm it again.
pub const REARM_POINTS: u64 = 10;

pub struct Threshold {
    /// Fire when the open count reaches this (u64::MAX = off).
    high: AtomicU64,
    /// Arm again when the count falls below this.
    low: AtomicU64,
    armed: AtomicBool,
    percent: AtomicU64,
    /// Creations and releases are counted (see the module comment).
    counting: AtomicBool,
    open: AtomicI64,
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
            counting: AtomicBool::new(false),
            open: AtomicI64::new(0),
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

    /// After a creation, with `highest` the highest fd number recorded so far (this one
    /// included) and `count_open` a scan of the open fds (this one included): true exactly once
    /// per crossing of the threshold.
    #[inline(always)]
    pub fn after_create(&self, highest: i32, count_open: impl FnOnce() -> u64) -> bool {
        let open = if self.counting.load(Ordering::Relaxed) {
            self.open.fetch_add(1, Ordering::Relaxed) + 1
        } else if (highest.max(0) as u64) + 1 < self.high.load(Ordering::Relaxed) {
            return false;
        } else {
            self.start_counting(count_open)
        };
        open.max(0) as u64 >= self.high.load(Ordering::Relaxed)
            && self.armed.swap(false, Ordering::AcqRel)
    }

    #[cold]
    fn start_counting(&self, count_open: impl FnOnce() -> u64) -> i64 {
        if self.counting.swap(true, Ordering::AcqRel) {
            // Another thread started it meanwhile (its scan may or may not include this fd).
            return self.open.fetch_add(1, Ordering::Relaxed) + 1;
        }
        let n = count_open().min(i64::MAX as u64) as i64;
        self.open.fetch_add(n, Ordering::Relaxed) + n
    }

    /// After a release of an fd that was open: arms again once usage fell far enough.
    #[inline(always)]
    pub fn after_release(&self) {
        if !self.counting.load(Ordering::Relaxed) {
            return;
        }
        let open = self.open.fetch_sub(1, Ordering::Relaxed) - 1;
        if (open.max(0) as u64) < self.low.load(Ordering::Relaxed)
            && !self.armed.load(Ordering::Relaxed)
        {
            self.armed.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_scan() -> u64 {
        panic!("scanned while no fd number is near the threshold")
    }

    #[test]
    fn fires_once_per_crossing_and_rearms_ten_points_below() {
        let t = Threshold::new();
        t.configure(80, 256);
        // 80% of 256 = 204.8 -> fires at 205 open fds; re-arms below 70% = 179.
        for n in 1..205u64 {
            assert!(!t.after_create(n as i32 - 1, no_scan));
        }
        assert!(t.after_create(204, || 205));
        assert!(!t.after_create(205, no_scan));
        for _ in 0..16 {
            t.after_release();
        }
        // 190 open: still disarmed.
        for _ in 0..15 {
            assert!(!t.after_create(205, no_scan));
        }
        // Back to 205 without falling below 179: no second report.
        for _ in 0..27 {
            t.after_release();
        }
        // 178 open: armed again.
        for n in 179..205 {
            assert!(!t.after_create(205, no_scan), "{n}");
        }
        assert!(t.after_create(205, no_scan));
    }

    #[test]
    fn a_high_number_alone_starts_counting_but_does_not_fire() {
        let t = Threshold::new();
        t.configure(80, 256);
        assert!(!t.after_create(900, || 3));
        assert!(!t.after_create(900, no_scan));
        t.after_release();
        assert!(!t.after_create(4, no_scan));
    }

    #[test]
    fn zero_percent_or_unlimited_is_off() {
        let t = Threshold::new();
        t.configure(0, 1024);
        assert!(!t.after_create(i32::MAX, no_scan));
        t.configure(80, u64::MAX);
        assert!(!t.after_create(i32::MAX, no_scan));
    }

    #[test]
    fn limit_changes_move_the_bounds() {
        let t = Threshold::new();
        t.configure(50, 100);
        t.set_limit(1000);
        assert!(!t.after_create(60, no_scan));
        assert!(t.after_create(499, || 500));
    }
}
