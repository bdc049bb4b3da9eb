//! `Triggers`: why a report is wanted, handed from hooks and signal handlers to the report thread.
//!
//! Setting a bit and waking a futex is all a hook or a signal handler does: both are
//! async-signal-safe and use no fd the program could close.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::os;

/// Why a report is written (the report's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Signal,
    Threshold,
    Emfile,
    /// Not a report: print the queued bad closes.
    BadClose,
    Exit,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Signal => "signal",
            Reason::Threshold => "threshold",
            Reason::Emfile => "emfile",
            Reason::BadClose => "bad_close",
            Reason::Exit => "exit",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Reasons the report thread serves, in the order it serves them.
    pub const QUEUED: [Reason; 4] = [
        Reason::Emfile,
        Reason::Threshold,
        Reason::Signal,
        Reason::BadClose,
    ];
}

static PENDING: AtomicU32 = AtomicU32::new(0);
static WAKE: AtomicU32 = AtomicU32::new(0);

/// Wakes the report thread without asking for a report (it has lines to print). Async-signal-safe.
pub fn wake() {
    WAKE.fetch_add(1, Ordering::Release);
    os::futex_wake(&WAKE);
}

/// Asks the report thread for a report. Async-signal-safe.
pub fn request(reason: Reason) {
    PENDING.fetch_or(reason.bit(), Ordering::AcqRel);
    wake();
}

/// What the report thread was asked for.
pub struct Work {
    bits: u32,
}

impl Work {
    pub fn wants(&self, reason: Reason) -> bool {
        self.bits & reason.bit() != 0
    }
}

/// Waits up to `timeout_ns` for requests and takes them all.
pub fn wait(timeout_ns: u64) -> Work {
    let seen = WAKE.load(Ordering::Acquire);
    if PENDING.load(Ordering::Acquire) == 0 {
        os::futex_wait(&WAKE, seen, timeout_ns);
    }
    Work {
        bits: PENDING.swap(0, Ordering::AcqRel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_once() {
        request(Reason::Signal);
        request(Reason::Threshold);
        let w = wait(0);
        assert!(w.wants(Reason::Signal) && w.wants(Reason::Threshold));
        assert!(!w.wants(Reason::Emfile));
        let w = wait(1_000_000);
        assert!(!w.wants(Reason::Signal));
    }
}
