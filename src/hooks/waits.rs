//! The accept guard's wait hooks: epoll_ctl, and epoll_wait, poll, select and their variants.
//!
//! They exist for the accept guard only (see `emfile`): while no listener is failing they cost
//! one load and pass the call through; while one is paused they hide it from the program for
//! the pause, as `guarded_wait` explains. `epoll_ctl` remembers how the program registered a
//! listener, so that hiding and showing it again restores exactly that.
#![allow(unsafe_code)]

use libc::{c_int, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

use super::hooks;
use crate::emfile;
use crate::guard::{self, ErrnoGuard, Mode};
use crate::os;
use crate::real;

/// Hides the accept guard's paused listeners from one real wait call.
trait Hider {
    /// Hides what is paused at `now` from the next real call; returns when the first hidden
    /// listener's pause ends.
    fn hide(&mut self, now: u64) -> Option<u64>;
    /// Puts the program's arguments back after a real call that returned `r`.
    fn unhide(&mut self, r: c_int);
}

/// Runs a wait call while a listener may be paused. `call(t)` runs the real function once with
/// the relative timeout `t` (`None`: forever) and otherwise the program's arguments.
///
/// The program gets exactly what the kernel says about every fd except a paused listener, which
/// is not ready until its pause ends. So the real call's timeout is cut to the end of the
/// pause; when it returns 0 for that reason, the listener is shown again and the wait goes on
/// for the rest of the program's own timeout: the program never sees an early 0, nor a ready
/// listener during its pause, nor any added latency for its other fds.
fn guarded_wait(
    timeout: Option<u64>,
    hider: &mut impl Hider,
    mut call: impl FnMut(Option<u64>) -> c_int,
) -> c_int {
    let start = os::clock::precise_ns();
    let end = timeout.map(|t| start.saturating_add(t));
    loop {
        let now = os::clock::precise_ns();
        let until = {
            let _errno = ErrnoGuard::save();
            guard::contained(|| hider.hide(now)).flatten()
        };
        let stop = match (end, until) {
            (Some(e), Some(u)) => Some(e.min(u)),
            (e, u) => e.or(u),
        };
        let r = call(stop.map(|s| s.saturating_sub(now)));
        let _errno = ErrnoGuard::save();
        hider.unhide(r);
        if r != 0 || until.is_none() || end.is_some_and(|e| os::clock::precise_ns() >= e) {
            return r;
        }
    }
}

/// The listener is hidden in the kernel: its registrations in `epfd` have no events.
struct EpollHider(c_int);

impl Hider for EpollHider {
    fn hide(&mut self, _now: u64) -> Option<u64> {
        emfile::epoll_hidden_until(self.0)
    }

    fn unhide(&mut self, _r: c_int) {}
}

/// Listeners hidden from one poll call, at most.
const POLL_HIDDEN: usize = 16;

/// Paused listeners are left out of the program's array for the call with poll's documented
/// idiom, a negative `fd` (`~fd`: the kernel ignores the entry and sets `revents` to 0), and
/// put back before the hook returns.
struct PollHider {
    fds: *mut pollfd,
    n: usize,
    flipped: [usize; POLL_HIDDEN],
    count: usize,
}

impl PollHider {
    fn new(fds: *mut pollfd, n: nfds_t) -> Self {
        Self {
            fds,
            n: if fds.is_null() { 0 } else { n as usize },
            flipped: [0; POLL_HIDDEN],
            count: 0,
        }
    }

    fn entry(&mut self, i: usize) -> &mut pollfd {
        // SAFETY: `i < n`, the length of the program's array, which belongs to the thread in
        // this call until it returns.
        unsafe { &mut *self.fds.add(i) }
    }
}

impl Hider for PollHider {
    fn hide(&mut self, now: u64) -> Option<u64> {
        let mut first: Option<u64> = None;
        self.count = 0;
        for i in 0..self.n {
            let fd = self.entry(i).fd;
            if self.count < POLL_HIDDEN
                && let Some(until) = emfile::hidden_until(fd, now)
            {
                self.entry(i).fd = !fd;
                self.flipped[self.count] = i;
                self.count += 1;
                first = Some(first.map_or(until, |f| f.min(until)));
            }
        }
        first
    }

    fn unhide(&mut self, _r: c_int) {
        for k in 0..self.count {
            let e = self.entry(self.flipped[k]);
            e.fd = !e.fd;
        }
        self.count = 0;
    }
}

/// A copy of the first `nfds` bits of a program's fd_set.
type FdBits = [u64; libc::FD_SETSIZE / 64];

/// select overwrites its sets with the result, so the program's input sets are saved (only the
/// `nfds` bits the kernel reads) and put back before each call, with a paused listener's read
/// bit cleared; after a failure (the kernel leaves the sets alone) they are put back as given.
struct SelectHider {
    nfds: c_int,
    sets: [*mut fd_set; 3],
    saved: [FdBits; 3],
    words: usize,
    called: bool,
}

impl SelectHider {
    /// `None` beyond `FD_SETSIZE` (such calls are passed through unguarded).
    fn new(nfds: c_int, sets: [*mut fd_set; 3]) -> Option<Self> {
        let words = usize::try_from(nfds).ok()?.div_ceil(64);
        if words > libc::FD_SETSIZE / 64 {
            return None;
        }
        let mut h = Self {
            nfds,
            sets,
            saved: [[0; libc::FD_SETSIZE / 64]; 3],
            words,
            called: false,
        };
        for (set, saved) in sets.iter().zip(&mut h.saved) {
            if !set.is_null() {
                // SAFETY: the kernel reads `words` words of each non-null set; so do we.
                unsafe {
                    std::ptr::copy_nonoverlapping(set.cast::<u64>(), saved.as_mut_ptr(), words)
                };
            }
        }
        Some(h)
    }

    fn put_back(&mut self) {
        for (set, saved) in self.sets.iter().zip(&self.saved) {
            if !set.is_null() {
                // SAFETY: as in `new`: `words` words of the program's set.
                unsafe {
                    std::ptr::copy_nonoverlapping(saved.as_ptr(), set.cast::<u64>(), self.words)
                };
            }
        }
    }
}

impl Hider for SelectHider {
    fn hide(&mut self, now: u64) -> Option<u64> {
        if std::mem::replace(&mut self.called, true) {
            self.put_back();
        }
        let read = self.sets[0];
        if read.is_null() {
            return None;
        }
        let (saved, mut first) = (self.saved[0], None);
        emfile::each_listener_below(self.nfds, |fd| {
            let (word, bit) = (fd as usize / 64, 1u64 << (fd % 64));
            if saved[word] & bit != 0
                && let Some(until) = emfile::hidden_until(fd, now)
            {
                // SAFETY: `fd < nfds`, so this word is one the kernel reads.
                unsafe { *read.cast::<u64>().add(word) &= !bit };
                first = Some(first.map_or(until, |f: u64| f.min(until)));
            }
        });
        first
    }

    fn unhide(&mut self, r: c_int) {
        if r < 0 {
            self.put_back();
        }
    }
}

fn ms_timeout(ms: c_int) -> Option<u64> {
    u64::try_from(ms).ok().map(|ms| ms * 1_000_000)
}

/// Rounded up: a wait cut short must not end before the pause does.
fn as_ms(t: Option<u64>) -> c_int {
    t.map_or(-1, |ns| {
        ns.div_ceil(1_000_000).min(c_int::MAX as u64) as c_int
    })
}

fn as_timeval(ns: u64) -> timeval {
    timeval {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_usec: (ns % 1_000_000_000).div_ceil(1000) as libc::suseconds_t,
    }
}

/// A program's timespec timeout: `Some(None)` for null (forever), `None` if invalid (the call
/// is then passed through for the kernel to refuse).
fn timespec_timeout(ts: *const timespec) -> Option<Option<u64>> {
    // SAFETY: the program passes null or a valid timespec, which the real call reads too.
    let Some(ts) = (unsafe { ts.as_ref() }) else {
        return Some(None);
    };
    let ok = ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec);
    ok.then(|| Some((ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64))
}

/// As `timespec_timeout`, for select's timeval.
fn timeval_timeout(tv: *const timeval) -> Option<Option<u64>> {
    // SAFETY: the program passes null or a valid timeval, which the real call reads too.
    let Some(tv) = (unsafe { tv.as_ref() }) else {
        return Some(None);
    };
    let ok = tv.tv_sec >= 0 && (0..1_000_000).contains(&tv.tv_usec);
    ok.then(|| Some((tv.tv_sec as u64).saturating_mul(1_000_000_000) + tv.tv_usec as u64 * 1000))
}

/// A timeout for the real call: null for forever.
fn timespec_ptr(t: &Option<timespec>) -> *const timespec {
    t.as_ref().map_or(std::ptr::null(), |t| t)
}

/// The events and data of an `epoll_ctl` argument (null for `EPOLL_CTL_DEL`).
fn epoll_event_arg(event: *const epoll_event) -> Option<(u32, u64)> {
    // SAFETY: the program passes null or a valid epoll_event, which the real call reads too;
    // the struct is packed on x86-64, hence the unaligned read.
    let e = unsafe { event.as_ref().map(|_| event.read_unaligned()) }?;
    Some((e.events, e.u64))
}

/// poll, ppoll and their `_FORTIFY_SOURCE` forms.
#[inline(always)]
fn poll_guarded(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: Option<Option<u64>>,
    call: impl FnOnce() -> c_int,
    real: impl FnMut(Option<u64>) -> c_int,
) -> c_int {
    match timeout {
        Some(t) if emfile::wait_starting() => guarded_wait(t, &mut PollHider::new(fds, n), real),
        _ => call(),
    }
}

/// select and pselect. Linux's select also writes the time not slept into a non-null
/// `timeval` (`writeback`).
#[inline(always)]
fn select_guarded(
    nfds: c_int,
    sets: [*mut fd_set; 3],
    timeout: Option<Option<u64>>,
    writeback: *mut timeval,
    call: impl FnOnce() -> c_int,
    real: impl FnMut(Option<u64>) -> c_int,
) -> c_int {
    let hider = timeout.and_then(|t| {
        emfile::wait_starting()
            .then(|| SelectHider::new(nfds, sets))
            .flatten()
            .map(|h| (t, h))
    });
    let Some((t, mut hider)) = hider else {
        return call();
    };
    let start = os::clock::precise_ns();
    let r = guarded_wait(t, &mut hider, real);
    if let (Some(t), false) = (t, writeback.is_null()) {
        let left = t.saturating_sub(os::clock::precise_ns().saturating_sub(start));
        // SAFETY: the program's non-null timeval, which Linux's select writes too.
        unsafe { *writeback = as_timeval(left) };
    }
    r
}

hooks! {
    /// A listener's registrations are remembered (events and data), so that a pause can hide it
    /// and show it again exactly as the program registered it. Other fds: one load.
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> c_int = |call| {
        if !emfile::maybe_listener(fd) || guard::mode() != Mode::Track {
            return call();
        }
        emfile::listener_ctl(epfd, op, fd, epoll_event_arg(event), call)
    };
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int) -> c_int =
        |call, real| {
            if !emfile::wait_starting() {
                return call();
            }
            guarded_wait(ms_timeout(timeout), &mut EpollHider(epfd), |t| {
                // SAFETY: the program's arguments, with a timeout no longer than its own.
                unsafe { real(epfd, events, max, as_ms(t)) }
            })
        };
    fn epoll_pwait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int, mask: *const sigset_t) -> c_int =
        |call, real| {
            if !emfile::wait_starting() {
                return call();
            }
            guarded_wait(ms_timeout(timeout), &mut EpollHider(epfd), |t| {
                // SAFETY: the program's arguments, with a timeout no longer than its own.
                unsafe { real(epfd, events, max, as_ms(t), mask) }
            })
        };
    fn epoll_pwait2(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: *const timespec, mask: *const sigset_t) -> c_int =
        |call, real| match timespec_timeout(timeout) {
            Some(t) if emfile::wait_starting() => guarded_wait(t, &mut EpollHider(epfd), |t| {
                let ts = t.map(os::clock::timespec_of);
                // SAFETY: the program's arguments, with a timeout no longer than its own.
                unsafe { real(epfd, events, max, timespec_ptr(&ts), mask) }
            }),
            _ => call(),
        };
    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int =
        |call, real| poll_guarded(fds, n, Some(ms_timeout(timeout)), call, |t| {
            // SAFETY: the program's arguments, with a timeout no longer than its own.
            unsafe { real(fds, n, as_ms(t)) }
        });
    fn ppoll(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, mask: *const sigset_t) -> c_int =
        |call, real| poll_guarded(fds, n, timespec_timeout(timeout), call, |t| {
            let ts = t.map(os::clock::timespec_of);
            // SAFETY: the program's arguments, with a timeout no longer than its own.
            unsafe { real(fds, n, timespec_ptr(&ts), mask) }
        });
    /// `_FORTIFY_SOURCE` builds call this instead of `poll` when the array's size is known.
    fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int =
        |call, real| poll_guarded(fds, n, Some(ms_timeout(timeout)), call, |t| {
            // SAFETY: the program's arguments, with a timeout no longer than its own.
            unsafe { real(fds, n, as_ms(t), fdslen) }
        });
    fn __ppoll_chk(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, mask: *const sigset_t, fdslen: size_t) -> c_int =
        |call, real| poll_guarded(fds, n, timespec_timeout(timeout), call, |t| {
            let ts = t.map(os::clock::timespec_of);
            // SAFETY: the program's arguments, with a timeout no longer than its own.
            unsafe { real(fds, n, timespec_ptr(&ts), mask, fdslen) }
        });
    fn select(nfds: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *mut timeval) -> c_int =
        |call, real| select_guarded(nfds, [r, w, e], timeval_timeout(timeout), timeout, call, |t| {
            let mut tv = t.map(as_timeval);
            let tv = tv.as_mut().map_or(std::ptr::null_mut(), |tv| tv);
            // SAFETY: the program's arguments, with a timeout no longer than its own.
            unsafe { real(nfds, r, w, e, tv) }
        });
    fn pselect(nfds: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *const timespec, mask: *const sigset_t) -> c_int =
        |call, real| select_guarded(nfds, [r, w, e], timespec_timeout(timeout), std::ptr::null_mut(), call, |t| {
            let ts = t.map(os::clock::timespec_of);
            // SAFETY: the program's arguments, with a timeout no longer than its own.
            unsafe { real(nfds, r, w, e, timespec_ptr(&ts), mask) }
        });
}
