//! What the guard's unit tests share: a `Kernel` whose clock is set by hand, that records every
//! MOD, sleep and wait instead of making it, and keeps a small fd table of its own; a configured
//! `Guard`; and a failed accept.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use super::kernel::Kernel;
use super::listeners::{Failed, Guard};
use fdguard_core::config::EmfileMode;

pub(super) const MS: u64 = 1_000_000;

/// A kernel in memory. Its fd table hands out the lowest free number below `soft` (none left:
/// `EMFILE`), as the real one does; `pending` connections wait on every listener.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) now: Cell<u64>,
    pub(super) mods: RefCell<Vec<(i32, i32, u32, u64)>>,
    pub(super) fail: Cell<bool>,
    /// The soft `RLIMIT_NOFILE`.
    pub(super) soft: Cell<u64>,
    /// Open fd numbers.
    pub(super) open: RefCell<BTreeSet<i32>>,
    /// Connections waiting to be accepted.
    pub(super) pending: Cell<u32>,
    /// Listeners with `O_NONBLOCK`.
    pub(super) nonblocking: RefCell<BTreeSet<i32>>,
    /// Every sleep, as its length (the clock moves on by as much).
    pub(super) slept: RefCell<Vec<u64>>,
    /// Every wait for a readable fd: (fd, timeout; 0 only asks).
    pub(super) waited: RefCell<Vec<(i32, u64)>>,
}

impl Fake {
    /// A kernel at time 1 ms with soft limit `soft` and `open` fds open.
    pub(super) fn with_fds(soft: u64, open: impl IntoIterator<Item = i32>) -> Self {
        let k = Self::default();
        k.now.set(MS);
        k.soft.set(soft);
        k.open.borrow_mut().extend(open);
        k
    }

    /// The lowest free number at or above `min`, taken; `EMFILE` at the soft limit.
    fn take_number(&self, min: i32) -> Result<i32, i32> {
        let mut open = self.open.borrow_mut();
        let fd = (min.max(0)..)
            .find(|fd| !open.contains(fd))
            .unwrap_or(i32::MAX);
        if fd as u64 >= self.soft.get() {
            return Err(libc::EMFILE);
        }
        open.insert(fd);
        Ok(fd)
    }
}

impl Kernel for Fake {
    fn epoll_mod(&self, epfd: i32, fd: i32, events: u32, data: u64) -> Result<(), i32> {
        self.mods.borrow_mut().push((epfd, fd, events, data));
        if self.fail.get() {
            Err(libc::ENOENT)
        } else {
            Ok(())
        }
    }

    fn now_ns(&self) -> u64 {
        self.now.get()
    }

    fn soft_limit(&self) -> u64 {
        self.soft.get()
    }

    fn open_null(&self) -> Option<i32> {
        self.take_number(0).ok()
    }

    fn dup_at_least(&self, fd: i32, min: i32) -> Option<i32> {
        if !self.open.borrow().contains(&fd) {
            return None;
        }
        self.take_number(min).ok()
    }

    fn close(&self, fd: i32) {
        assert!(self.open.borrow_mut().remove(&fd), "closed {fd}, not open");
    }

    fn accept_one(&self, _listener: i32) -> Result<i32, i32> {
        if self.pending.get() == 0 {
            return Err(libc::EAGAIN);
        }
        let fd = self.take_number(0)?;
        self.pending.set(self.pending.get() - 1);
        Ok(fd)
    }

    /// Nothing pending: the whole timeout passes.
    fn wait_readable(&self, fd: i32, timeout_ns: u64) -> bool {
        self.waited.borrow_mut().push((fd, timeout_ns));
        let ready = self.pending.get() > 0;
        if !ready {
            self.now.set(self.now.get().saturating_add(timeout_ns));
        }
        ready
    }

    fn sleep_until(&self, deadline_ns: u64) {
        let now = self.now.get();
        self.slept
            .borrow_mut()
            .push(deadline_ns.saturating_sub(now));
        self.now.set(now.max(deadline_ns));
    }

    fn is_nonblocking(&self, fd: i32) -> bool {
        self.nonblocking.borrow().contains(&fd)
    }
}

pub(super) fn guard(mode: EmfileMode) -> Guard {
    let g = Guard::new();
    g.configure(mode, 1000);
    g
}

pub(super) fn failed(fd: i32, blocking: bool, reported: bool) -> Failed {
    Failed {
        fd,
        errno: libc::EMFILE,
        blocking,
        reported,
        ..Failed::default()
    }
}
