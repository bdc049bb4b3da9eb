//! fdguard's own fds in the program's process: the shed mode's reserve, and whatever fdguard
//! opens while doing its own work on a thread (`guard::Mode::Own`). Reports are made by copies
//! of the process, so no report file or listing is among them.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The process's own fds.
pub static OWN: OwnFds = OwnFds::new();

/// A fixed list of fds that are fdguard's: never reported, never confused with the program's,
/// and a program's `close` of one is answered as if it were not open.
pub struct OwnFds {
    /// fd + 1, or 0 for a free entry.
    fds: [AtomicI32; 16],
    /// Bit `fd % 64` set for every fd listed (0: none): a `close` of one of the program's fds
    /// is told apart with one load and a bit test, not a scan of the list (fdguard often holds
    /// one fd, the accept guard's reserve).
    bloom: AtomicU64,
}

impl OwnFds {
    pub const fn new() -> Self {
        Self {
            fds: [const { AtomicI32::new(0) }; 16],
            bloom: AtomicU64::new(0),
        }
    }

    fn bit(fd: i32) -> u64 {
        1 << (fd & 63)
    }

    /// The bloom word of the entries listed now.
    fn listed_bits(&self) -> u64 {
        self.fds
            .iter()
            .map(|e| e.load(Ordering::SeqCst))
            .filter(|v| *v > 0)
            .fold(0, |b, v| b | Self::bit(v - 1))
    }

    pub fn add(&self, fd: i32) {
        for e in &self.fds {
            if e.compare_exchange(0, fd + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                self.bloom.fetch_or(Self::bit(fd), Ordering::SeqCst);
                return;
            }
        }
    }

    /// Forgets every own fd in `lo..=hi`.
    #[inline]
    pub fn remove_range(&self, lo: i32, hi: i32) {
        if self.bloom.load(Ordering::Acquire) != 0 {
            self.remove_listed(lo, hi);
        }
    }

    #[cold]
    fn remove_listed(&self, lo: i32, hi: i32) {
        let mut removed = false;
        for e in &self.fds {
            let v = e.load(Ordering::Acquire);
            if v > 0
                && (lo..=hi).contains(&(v - 1))
                && e.compare_exchange(v, 0, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                removed = true;
            }
        }
        if removed {
            // Recomputed, then OR-ed again from a second look: the store may wipe the bit of
            // an `add` that ran after the first look, but that fd is listed by the second.
            self.bloom.store(self.listed_bits(), Ordering::SeqCst);
            self.bloom.fetch_or(self.listed_bits(), Ordering::SeqCst);
        }
    }

    #[inline]
    pub fn remove(&self, fd: i32) {
        self.remove_range(fd, fd);
    }

    /// False for nearly every fd that is not listed (one load).
    #[inline(always)]
    pub fn may_list(&self, fd: i32) -> bool {
        self.bloom.load(Ordering::Acquire) & Self::bit(fd) != 0
    }

    #[inline(always)]
    pub fn contains(&self, fd: i32) -> bool {
        fd >= 0 && self.may_list(fd) && self.fds.iter().any(|e| e.load(Ordering::Acquire) == fd + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_fds_register_and_forget() {
        let own = OwnFds::new();
        assert!(!own.contains(0));
        own.add(0);
        own.add(900);
        assert!(own.contains(0) && own.contains(900));
        own.remove(0);
        assert!(!own.contains(0) && own.contains(900));
        assert!(!own.contains(-1));
    }

    #[test]
    fn own_fds_sharing_a_bloom_bit_stay_apart() {
        let own = OwnFds::new();
        own.add(3);
        own.add(67);
        assert!(own.contains(3) && own.contains(67) && !own.contains(131));
        own.remove(67);
        assert!(own.contains(3) && !own.contains(67));
        own.remove(3);
        assert!(!own.contains(3));
        assert_eq!(
            own.bloom.load(Ordering::Relaxed),
            0,
            "no fd listed, no bit left"
        );
    }
}
