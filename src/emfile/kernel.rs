//! What the accept guard asks of the kernel, as a trait (`Kernel`), and the real kernel behind
//! it (`OsKernel`). The unit tests give the guard a fake one (`fixtures::Fake`) instead.

use crate::os;

/// The OS operations the accept guard needs. Errors are errno values.
pub trait Kernel {
    /// `epoll_ctl(epfd, EPOLL_CTL_MOD, fd, {events, data})`.
    fn epoll_mod(&self, epfd: i32, fd: i32, events: u32, data: u64) -> Result<(), i32>;
    /// Monotonic time in ns, precise enough for the guard's periods (the clock `sleep_until`
    /// sleeps on).
    fn now_ns(&self) -> u64;
    /// The soft `RLIMIT_NOFILE` (`u64::MAX` if unlimited).
    fn soft_limit(&self) -> u64;
    /// A new fd that holds a number and nothing else (`/dev/null`), on the lowest free number.
    fn open_null(&self) -> Option<i32>;
    /// A duplicate of `fd` on the lowest free number at or above `min`.
    fn dup_at_least(&self, fd: i32, min: i32) -> Option<i32>;
    /// Closes one of fdguard's fds (the reserve, a connection it shed).
    fn close(&self, fd: i32);
    /// Accepts one connection of `listener` (call it when `wait_readable` says one is pending:
    /// a blocking listener waits for one).
    fn accept_one(&self, listener: i32) -> Result<i32, i32>;
    /// Waits up to `timeout_ns` (0: just asks) for `fd` to be readable; true if it is.
    fn wait_readable(&self, fd: i32, timeout_ns: u64) -> bool;
    /// Sleeps until `now_ns` reads `deadline_ns`, or a signal comes.
    fn sleep_until(&self, deadline_ns: u64);
    /// Whether `fd` has `O_NONBLOCK`.
    fn is_nonblocking(&self, fd: i32) -> bool;
}

/// The real kernel: raw system calls where the guard acts on the program's threads (no hook
/// sees them, none is a cancellation point; see `os::sys`).
pub struct OsKernel;

impl Kernel for OsKernel {
    fn epoll_mod(&self, epfd: i32, fd: i32, events: u32, data: u64) -> Result<(), i32> {
        os::sys::epoll_mod(epfd, fd, events, data)
    }

    fn now_ns(&self) -> u64 {
        os::clock::precise_ns()
    }

    fn soft_limit(&self) -> u64 {
        os::process::nofile_limit().0
    }

    fn open_null(&self) -> Option<i32> {
        os::sys::open_null()
    }

    fn dup_at_least(&self, fd: i32, min: i32) -> Option<i32> {
        os::sys::dup_at_least(fd, min)
    }

    fn close(&self, fd: i32) {
        os::sys::raw_close(fd)
    }

    fn accept_one(&self, listener: i32) -> Result<i32, i32> {
        os::sys::accept_one(listener)
    }

    fn wait_readable(&self, fd: i32, timeout_ns: u64) -> bool {
        os::sys::wait_readable(fd, timeout_ns)
    }

    fn sleep_until(&self, deadline_ns: u64) {
        os::clock::sleep_until(deadline_ns);
    }

    fn is_nonblocking(&self, fd: i32) -> bool {
        os::fd::is_nonblocking(fd)
    }
}
