//! Shed mode's reserve (`Reserve`; the process's one is `RESERVE`): one fd of fdguard's own,
//! held below the soft limit so that closing it lets one `accept` through, and what it is for,
//! shedding the connections pending on a listener (libuv's technique).
//!
//! Everything goes through `Kernel`: the real one makes raw system calls, so the connections
//! shed never reach the fd table and no hook counts their accept as a success.

use std::sync::atomic::{AtomicI32, Ordering};

use super::kernel::Kernel;
use super::policy::{reserve_in_place, reserve_targets};
use crate::own::{OWN, OwnFds};

/// Connections shed per failed accept, at most (a flood is shed a batch per failure).
const SHED_BATCH: usize = 64;

/// The reserve fd, registered in a list of fdguard's own fds.
pub struct Reserve<'a> {
    /// The reserve's number, as high as possible below the soft limit; -1 when there is none.
    fd: AtomicI32,
    own: &'a OwnFds,
}

pub static RESERVE: Reserve<'static> = Reserve::new(&OWN);

impl<'a> Reserve<'a> {
    pub const fn new(own: &'a OwnFds) -> Self {
        Self {
            fd: AtomicI32::new(-1),
            own,
        }
    }

    /// Takes the reserve if there is none, or moves it below a lowered soft limit (or up into
    /// the band of `reserve_targets` after a raise).
    pub fn place(&self, k: &impl Kernel) {
        let cur = self.fd.swap(-1, Ordering::AcqRel);
        let cur = (cur >= 0 && self.own.contains(cur)).then_some(cur);
        let soft = k.soft_limit();
        let placed = match cur {
            Some(r) if reserve_in_place(r, soft) => r,
            Some(r) => self.settle(r, k),
            None => self.open(k),
        };
        self.fd.store(placed, Ordering::Release);
    }

    /// The reserve's fd, when fdguard holds one below the soft limit.
    pub fn fd(&self, k: &impl Kernel) -> Option<i32> {
        let r = self.fd.load(Ordering::Acquire);
        (r >= 0 && self.own.contains(r) && (r as u64) < k.soft_limit()).then_some(r)
    }

    /// Closes the connections pending on `listener` at once, each accepted on the number the
    /// reserve frees, which is taken again after each. Returns how many were shed and whether
    /// none is left pending; `None` if there is no usable reserve.
    pub fn shed(&self, listener: i32, k: &impl Kernel) -> Option<(u64, bool)> {
        let mut shed = 0;
        for _ in 0..SHED_BATCH {
            if !k.wait_readable(listener, 0) {
                return Some((shed, true));
            }
            let Some(reserve) = self.take(k) else {
                return (shed > 0).then_some((shed, false));
            };
            self.own.remove(reserve);
            k.close(reserve);
            let conn = k.accept_one(listener);
            if let Ok(c) = conn {
                k.close(c);
                shed += 1;
            }
            self.fd.store(self.open(k), Ordering::Release);
            if conn.is_err() {
                break;
            }
        }
        Some((shed, false))
    }

    /// The reserve, if it is still fdguard's and below the soft limit, taken out of `fd` so
    /// that no other thread uses it meanwhile.
    fn take(&self, k: &impl Kernel) -> Option<i32> {
        let r = self.fd.swap(-1, Ordering::AcqRel);
        if r < 0 || !self.own.contains(r) {
            return None;
        }
        if (r as u64) < k.soft_limit() {
            return Some(r);
        }
        self.fd.store(r, Ordering::Release);
        None
    }

    /// A new reserve, settled; -1 if none can be had.
    fn open(&self, k: &impl Kernel) -> i32 {
        k.open_null().map_or(-1, |fd| self.settle(fd, k))
    }

    /// Moves `fd`, a fresh fd of fdguard's, as high as possible below the soft limit and
    /// registers it as fdguard's own; returns where it is, or -1 (closed) if the only room is
    /// among the standard streams or above the limit.
    fn settle(&self, fd: i32, k: &impl Kernel) -> i32 {
        if !self.own.contains(fd) {
            self.own.add(fd);
        }
        let soft = k.soft_limit();
        let mut placed = None;
        for t in reserve_targets(soft) {
            if fd >= t && (fd as u64) < soft {
                return fd;
            }
            placed = k.dup_at_least(fd, t);
            if placed.is_some() {
                break;
            }
        }
        let keep = placed.or((fd >= 3 && (fd as u64) < soft).then_some(fd));
        if keep != Some(fd) {
            if let Some(high) = keep {
                self.own.add(high);
            }
            self.own.remove(fd);
            k.close(fd);
        }
        keep.unwrap_or(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emfile::fixtures::Fake;

    /// A kernel with soft limit `soft` and the program's fds 0..`program` open, a reserve
    /// placed in it, and the fds open now.
    fn placed(own: &OwnFds, soft: u64, program: i32) -> (Reserve<'_>, Fake) {
        let k = Fake::with_fds(soft, 0..program);
        let r = Reserve::new(own);
        r.place(&k);
        (r, k)
    }

    #[test]
    fn the_reserve_sits_high_below_the_soft_limit_and_follows_it() {
        let own = OwnFds::new();
        let (r, k) = placed(&own, 1024, 11);
        assert_eq!(r.fd(&k), Some(1023));
        assert!(own.contains(1023) && !own.contains(11));
        assert!(
            !k.open.borrow().contains(&11),
            "the first number it got is given back"
        );
        // The program lowers its limit: the reserve above it is no use until moved below.
        k.soft.set(100);
        assert_eq!(r.fd(&k), None);
        r.place(&k);
        assert_eq!(r.fd(&k), Some(99));
        assert!(!k.open.borrow().contains(&1023) && !own.contains(1023));
        // Raised again: far below the new limit, it moves up.
        k.soft.set(4096);
        r.place(&k);
        assert_eq!(r.fd(&k), Some(4095));
        // Where it can stay, it stays.
        k.soft.set(5000);
        r.place(&k);
        assert_eq!(r.fd(&k), Some(4095));
        assert_eq!(k.open.borrow().len(), 11 + 1);
    }

    #[test]
    fn no_reserve_among_the_standard_streams_or_at_a_full_table() {
        let own = OwnFds::new();
        // Only 0..2 below the limit: the number it got is the program's stdin's, given back.
        let (r, k) = placed(&own, 3, 0);
        assert_eq!(r.fd(&k), None);
        assert!(k.open.borrow().is_empty() && !own.contains(0));
        // No number left at all.
        let (r, k) = placed(&own, 16, 16);
        assert_eq!(r.fd(&k), None);
        assert_eq!(k.open.borrow().len(), 16);
        // The last number free is taken where it is.
        let (r, k) = placed(&own, 16, 15);
        assert_eq!(r.fd(&k), Some(15));
    }

    #[test]
    fn shedding_closes_pending_connections_on_the_reserves_number() {
        let own = OwnFds::new();
        // Out of fds: the program holds every number below the limit but the reserve's.
        let (r, k) = placed(&own, 16, 15);
        k.pending.set(3);
        assert_eq!(r.shed(3, &k), Some((3, true)));
        assert_eq!(k.pending.get(), 0);
        assert_eq!(r.fd(&k), Some(15), "the reserve is taken again");
        assert_eq!(k.open.borrow().len(), 16);
        // A flood is shed a batch per failure.
        k.pending.set(100);
        assert_eq!(r.shed(3, &k), Some((SHED_BATCH as u64, false)));
        assert_eq!(k.pending.get(), 100 - SHED_BATCH as u32);
    }

    #[test]
    fn without_a_usable_reserve_nothing_is_shed() {
        let own = OwnFds::new();
        let k = Fake::with_fds(16, 0..16);
        k.pending.set(2);
        let r = Reserve::new(&own);
        assert_eq!(r.shed(3, &k), None);
        assert_eq!(k.pending.get(), 2);
        // A reserve above a lowered limit cannot let an accept through: kept, not used.
        let (r, k) = placed(&own, 1024, 11);
        k.soft.set(100);
        k.pending.set(2);
        assert_eq!(r.shed(3, &k), None);
        k.soft.set(1024);
        assert_eq!(r.fd(&k), Some(1023));
        // Nothing pending: nothing to do, and the reserve stays.
        k.pending.set(0);
        assert_eq!(r.shed(3, &k), Some((0, true)));
        assert_eq!(r.fd(&k), Some(1023));
    }
}
