//! What the guard's unit tests share: a `Kernel` whose clock is set by hand and that records
//! every MOD instead of making it, a configured `Guard`, and a failed accept.

use std::cell::{Cell, RefCell};

use super::listeners::{Failed, Guard, Kernel};
use fdguard_core::config::EmfileMode;

pub(super) const MS: u64 = 1_000_000;

/// Records every MOD; its clock is set by hand.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) now: Cell<u64>,
    pub(super) mods: RefCell<Vec<(i32, i32, u32, u64)>>,
    pub(super) fail: Cell<bool>,
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
