//! The accept guard at work in the program's process: what it does when the hooks tell it that
//! a listener appeared, accepted, failed or was closed, that the program calls `epoll_ctl` on
//! one or is about to wait, and what the accept guard's thread and `fdguard detach` ask of it.
//!
//! `Effects` carries all of it out through `Kernel` (unit-tested with a fake kernel); the
//! functions below it are what the rest of fdguard calls: `Effects` on the real kernel
//! (`OsKernel`) and the process's `GUARD` and `RESERVE`, with the hook's mode, the thread id,
//! the program's `errno` kept and panics contained.

use super::kernel::{Kernel, OsKernel};
use super::listeners::{CtlOp, Failed, Failure, GUARD, Guard};
use super::policy::{Hold, is_out_of_fds, sheddable};
use super::reserve::{RESERVE, Reserve};
use crate::guard::{self, ErrnoGuard, Mode};
use crate::trigger::{self, Reason};
use fdguard_core::config::EmfileMode;

/// The listener table and the shed reserve, acting through a kernel.
struct Effects<'a, K> {
    guard: &'a Guard,
    reserve: &'a Reserve<'a>,
    k: &'a K,
}

impl<K: Kernel> Effects<'_, K> {
    pub fn configure(&self, mode: EmfileMode, backoff_max_ms: u64) {
        self.guard.configure(mode, backoff_max_ms);
        self.place_reserve();
    }

    /// In shed mode, takes the reserve if there is none, or moves it where it belongs under
    /// the current soft limit. At load, when the program changes its limit, and from the
    /// accept guard's thread (after the program closed fds, or another process ran `prlimit`).
    pub fn place_reserve(&self) {
        if self.guard.mode() == EmfileMode::Shed {
            self.reserve.place(self.k);
        }
    }

    /// `accept` on `listener` failed with `errno`: in shed mode the pending connections are
    /// shed first, then the failure is counted and the policy decides (the listener may be
    /// hidden). `None` if the guard does nothing about this failure; else what the failing
    /// thread must do (`hold`). `reported`: an `emfile` report was asked for it.
    pub fn accept_failed(
        &self,
        listener: i32,
        errno: i32,
        reported: bool,
        tid: u32,
    ) -> Option<Failure> {
        let mode = self.guard.mode();
        if mode == EmfileMode::Off || !is_out_of_fds(errno) {
            return None;
        }
        let blocking = !self.k.is_nonblocking(listener);
        let shed = (mode == EmfileMode::Shed && sheddable(errno))
            .then(|| self.reserve.shed(listener, self.k))
            .flatten();
        let failed = Failed {
            fd: listener,
            errno,
            blocking,
            shed_emptied: shed.is_some_and(|(_, emptied)| emptied),
            reported,
        };
        let f = self.guard.accept_failed(failed, tid, self.k)?;
        if let Some((n, _)) = shed {
            self.guard.add_shed(f.slot, n);
        }
        Some(f)
    }

    /// Holds the failing thread as `f` says (sleeps end early on a signal) and counts the time.
    pub fn hold(&self, listener: i32, f: Failure) {
        let start = self.k.now_ns();
        match f.hold {
            Hold::None => return,
            Hold::Sleep(ns) => self.k.sleep_until(start.saturating_add(ns)),
            Hold::UntilReadable(ns) => {
                self.k.wait_readable(listener, ns);
            }
        }
        let held = self.k.now_ns().saturating_sub(start);
        self.guard.add_paused(f.slot, held);
    }

    /// The accept guard thread's upkeep: takes the reserve back (after the program closed it,
    /// or a limit changed from outside) and shows listeners whose pause is over (a backstop
    /// for waits fdguard could not cut short). Returns when to look again, if a listener is
    /// still hidden.
    pub fn upkeep(&self, tid: u32) -> Option<u64> {
        if self.reserve.fd(self.k).is_none() {
            self.place_reserve();
        }
        self.guard.restore_due(tid, self.k)
    }

    /// `fdguard detach`: the guard stops acting and shows every listener it hid, retrying for
    /// up to 100 ms one that the program's own `epoll_ctl` holds.
    pub fn stop(&self, tid: u32) {
        self.guard.configure(EmfileMode::Off, 0);
        for _ in 0..100 {
            if self.guard.end_pauses(tid, self.k) {
                return;
            }
            self.k.sleep_until(self.k.now_ns() + 1_000_000);
        }
    }
}

/// The process's accept guard, on the real kernel.
fn here() -> Effects<'static, OsKernel> {
    Effects {
        guard: &GUARD,
        reserve: &RESERVE,
        k: &OsKernel,
    }
}

/// Configures the accept guard (at load; when attaching again after a detach).
pub fn configure(mode: EmfileMode, backoff_max_ms: u64) {
    here().configure(mode, backoff_max_ms);
}

/// `listen` succeeded on `fd`, or `fd` was found listening when fdguard started.
pub fn listening(mode: Mode, fd: i32) {
    if mode == Mode::Track {
        GUARD.listening(fd);
    }
}

/// True if `fd` may be a listening socket (one load; see `Guard::maybe_listener`).
#[inline]
pub fn maybe_listener(fd: i32) -> bool {
    GUARD.maybe_listener(fd)
}

/// `fd` is about to be released: if it is a listener, the guard forgets it.
#[inline(always)]
pub fn closing(fd: i32) {
    if GUARD.maybe_listener(fd) {
        GUARD.closing(fd, guard::tid(), &OsKernel);
    }
}

/// Every fd in `lo..=hi` is about to be released.
pub fn closing_range(lo: i32, hi: i32) {
    GUARD.closing_range(lo, hi, guard::tid(), &OsKernel);
}

/// `accept` on `listener` returned a new fd: the accept guard's backoff starts over.
#[inline]
pub fn accepted(mode: Mode, listener: i32) {
    if mode == Mode::Track
        && GUARD.maybe_listener(listener)
        && GUARD.accept_succeeded(listener, guard::tid(), &OsKernel)
    {
        trigger::wake();
    }
}

/// `accept` on `listener` failed with `errno`; `report`: the failure claimed an `emfile`
/// report (see `tracker::accept_failed`), asked for here once the guard has counted it. May
/// hold the thread (see `policy::decide`); `errno` is the hook's to restore.
#[cold]
pub fn accept_failed(mode: Mode, listener: i32, errno: i32, report: bool) {
    if mode != Mode::Track {
        return;
    }
    let here = here();
    let failure = here.accept_failed(listener, errno, report, guard::tid());
    // Before the hold: the operator's first line and the report come now, not after it.
    if report || failure.is_some_and(|f| f.started) {
        trigger::wake();
    }
    if report {
        trigger::request(Reason::Emfile);
    }
    if let Some(f) = failure {
        here.hold(listener, f);
    }
}

/// The program changed its own `RLIMIT_NOFILE`: the reserve follows.
pub fn limit_changed(mode: Mode) {
    if mode == Mode::Track {
        here().place_reserve();
    }
}

/// The reserve's fd, when fdguard holds one below the soft limit.
pub fn reserve_fd() -> Option<i32> {
    RESERVE.fd(&OsKernel)
}

/// See `Effects::upkeep`.
pub fn upkeep() -> Option<u64> {
    here().upkeep(guard::tid())
}

/// See `Effects::stop`.
pub fn stop() {
    here().stop(guard::tid());
}

/// The program's `epoll_ctl` on a possible listener: `real` runs exactly once; the listener's
/// registration is remembered so that a pause can hide it and show it again as registered.
pub fn listener_ctl(
    epfd: i32,
    op: i32,
    fd: i32,
    event: Option<(u32, u64)>,
    real: impl FnOnce() -> i32,
) -> i32 {
    let ctl = guard::contained(|| GUARD.ctl_begin(fd, guard::tid(), &OsKernel)).flatten();
    let r = real();
    if let Some(ctl) = ctl {
        let _errno = ErrnoGuard::save();
        let op = match (op, event) {
            (libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD, Some((events, data))) => {
                CtlOp::Set { events, data }
            }
            (libc::EPOLL_CTL_DEL, _) => CtlOp::Del,
            _ => CtlOp::Other,
        };
        guard::contained(|| GUARD.ctl_end(ctl, epfd, fd, op, r == 0, &OsKernel));
    }
    r
}

/// An epoll registration made before fdguard was there (`fdguard attach` reads them from
/// the kernel): remembered as if the program's `epoll_ctl` had just added it.
pub fn registered(epfd: i32, fd: i32, events: u32, data: u64) {
    if maybe_listener(fd) {
        listener_ctl(epfd, libc::EPOLL_CTL_ADD, fd, Some((events, data)), || 0);
    }
}

/// Called first by every wait hook (epoll_wait, poll, select and their variants): true if the
/// accept guard has something to hide from this wait. One load while no listener is failing.
#[inline]
pub fn wait_starting() -> bool {
    GUARD.active() && wait_starting_slow()
}

#[cold]
fn wait_starting_slow() -> bool {
    if guard::mode() != Mode::Track {
        return false;
    }
    GUARD.note_wait();
    true
}

/// For an epoll wait on `epfd`: shows listeners whose pause is over; returns when the first
/// one still hidden in `epfd` must be shown (the wait is cut short then).
pub fn epoll_hidden_until(epfd: i32) -> Option<u64> {
    GUARD.epoll_due(epfd, guard::tid(), &OsKernel)
}

/// For poll/select: the end of `fd`'s pause, if it is a listener hidden at `now`.
#[inline]
pub fn hidden_until(fd: i32, now: u64) -> Option<u64> {
    if GUARD.maybe_listener(fd) {
        GUARD.hidden_until(fd, now)
    } else {
        None
    }
}

/// Every guarded listener below `nfds` (select has no list to look through).
pub fn each_listener_below(nfds: i32, f: impl FnMut(i32)) {
    GUARD.each_listener_below(nfds, f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emfile::fixtures::{Fake, MS};
    use crate::own::OwnFds;

    /// Runs `test` on an accept guard in `mode`, configured (in shed mode the reserve is then
    /// placed), over a fake kernel with soft limit `soft` and the program's fds 0..`program`.
    fn with_effects(mode: EmfileMode, soft: u64, program: i32, test: impl FnOnce(&Effects<Fake>)) {
        let (g, own) = (Guard::new(), OwnFds::new());
        let (r, k) = (Reserve::new(&own), Fake::with_fds(soft, 0..program));
        let e = Effects {
            guard: &g,
            reserve: &r,
            k: &k,
        };
        e.configure(mode, 1000);
        test(&e);
    }

    /// Listener `fd`, non-blocking, in epoll set 4 with events 1 and data 99.
    fn event_loop_listener(e: &Effects<Fake>, fd: i32) {
        e.k.nonblocking.borrow_mut().insert(fd);
        e.guard.listening(fd);
        let c = e.guard.ctl_begin(fd, 1, e.k).expect("a listener");
        let set = CtlOp::Set {
            events: 1,
            data: 99,
        };
        e.guard.ctl_end(c, 4, fd, set, true, e.k);
    }

    #[test]
    fn a_blocking_listener_sleeps_its_period_in_accept() {
        with_effects(EmfileMode::Pause, 1024, 8, |e| {
            let f = e.accept_failed(5, libc::EMFILE, false, 1).expect("guarded");
            assert_eq!(f.hold, Hold::Sleep(5 * MS));
            e.hold(5, f);
            assert_eq!(*e.k.slept.borrow(), [5 * MS]);
            assert_eq!(e.guard.totals().paused_ns, 5 * MS);
            // Not for lack of fds: nothing to do. No reserve outside shed mode.
            assert_eq!(e.accept_failed(5, libc::ECONNABORTED, false, 1), None);
            assert_eq!(e.reserve.fd(e.k), None);
        });
    }

    #[test]
    fn an_event_loop_listener_is_hidden_and_detach_shows_it() {
        with_effects(EmfileMode::Pause, 1024, 8, |e| {
            event_loop_listener(e, 7);
            let f = e.accept_failed(7, libc::EMFILE, false, 1).expect("guarded");
            assert_eq!(f.hold, Hold::None);
            e.hold(7, f);
            assert!(e.k.slept.borrow().is_empty());
            assert_eq!(e.k.mods.borrow().last(), Some(&(4, 7, 0, 99)), "hidden");
            e.stop(1);
            assert_eq!(e.k.mods.borrow().last(), Some(&(4, 7, 1, 99)), "shown");
            assert_eq!(e.guard.mode(), EmfileMode::Off);
            assert_eq!(e.accept_failed(7, libc::EMFILE, false, 1), None);
        });
    }

    #[test]
    fn shed_mode_sheds_the_backlog_then_waits_for_the_next_client() {
        // Out of fds: the program holds every number below the limit but the reserve's.
        with_effects(EmfileMode::Shed, 16, 15, |e| {
            assert_eq!(e.reserve.fd(e.k), Some(15));
            e.k.pending.set(2);
            let f = e.accept_failed(5, libc::EMFILE, true, 1).expect("guarded");
            assert_eq!((e.k.pending.get(), e.guard.totals().shed), (0, 2));
            // Blocking, nothing left pending: it waits for the next client, shed at the next try.
            assert_eq!(f.hold, Hold::UntilReadable(5 * MS));
            e.hold(5, f);
            assert_eq!(e.k.waited.borrow().last(), Some(&(5, 5 * MS)));
            assert_eq!(e.guard.totals().paused_ns, 5 * MS);
            // ENOBUFS is no lack of fd numbers: a reserve cannot help, nothing is shed.
            e.k.pending.set(1);
            e.accept_failed(5, libc::ENOBUFS, false, 1);
            assert_eq!(e.k.pending.get(), 1);
        });
    }

    #[test]
    fn without_a_reserve_shed_mode_pauses_and_upkeep_takes_one_later() {
        // Every number below the limit is the program's: no reserve can be had.
        with_effects(EmfileMode::Shed, 16, 16, |e| {
            assert_eq!(e.reserve.fd(e.k), None);
            event_loop_listener(e, 7);
            e.k.pending.set(1);
            let f = e.accept_failed(7, libc::EMFILE, false, 1).expect("guarded");
            // Nothing shed, so the listener is hidden as in pause mode.
            assert_eq!(f.hold, Hold::None);
            assert_eq!((e.k.pending.get(), e.guard.totals().shed), (1, 0));
            assert_eq!(e.k.mods.borrow().last(), Some(&(4, 7, 0, 99)));
            // The program closes fds: the accept guard's thread takes a reserve, and shows the
            // listener when its pause ends.
            e.k.open.borrow_mut().retain(|fd| *fd < 8);
            assert_eq!(e.upkeep(1), Some(6 * MS));
            assert_eq!(e.reserve.fd(e.k), Some(15));
            e.k.now.set(6 * MS);
            assert_eq!(e.upkeep(1), None);
            assert_eq!(e.k.mods.borrow().last(), Some(&(4, 7, 1, 99)));
        });
    }
}
