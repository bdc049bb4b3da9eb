//! Raw system calls on fds: no hook sees them and none is a cancellation point.

use libc::c_int;

use super::clock::timespec_of;
use super::errno::errno;

/// The result of a raw system call: the value, or the errno.
fn raw_result(r: libc::c_long) -> Result<c_int, c_int> {
    if r < 0 { Err(errno()) } else { Ok(r as c_int) }
}

// The accept guard's own operations on the program's threads use raw system calls: they go
// through no hook (so they need no `guard::internal`, which would also claim any fd a signal
// handler opened meanwhile as fdguard's), and none is a cancellation point.

/// `epoll_ctl(EPOLL_CTL_MOD)` of `fd` in `epfd` to `events` and `data`; the errno on failure.
pub fn epoll_mod(epfd: c_int, fd: c_int, events: u32, data: u64) -> Result<(), c_int> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_epoll_ctl,
            epfd,
            libc::EPOLL_CTL_MOD,
            fd,
            &mut ev as *mut libc::epoll_event,
        )
    };
    raw_result(r).map(drop)
}

/// Waits up to `timeout_ns` for `fd` to become readable (0: just asks); true if it is. Ends
/// early on a signal. Clobbers `errno`.
pub fn wait_readable(fd: c_int, timeout_ns: u64) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timespec_of(timeout_ns);
    // SAFETY: one valid pollfd and a valid timespec; no signal mask change.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            &mut p as *mut libc::pollfd,
            1 as libc::nfds_t,
            &ts as *const libc::timespec,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        )
    };
    r == 1 && p.revents & libc::POLLIN != 0
}

/// Opens `/dev/null` read-only and close-on-exec (an fd that holds a number and nothing else).
pub fn open_null() -> Option<c_int> {
    // SAFETY: a NUL-terminated literal path; no mode needed without O_CREAT.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    raw_result(r).ok()
}

/// A close-on-exec duplicate of `fd` on the lowest free number at or above `min`.
pub fn dup_at_least(fd: c_int, min: c_int) -> Option<c_int> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor; it touches no memory.
    let r = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min) };
    raw_result(r).ok()
}

/// Accepts one pending connection (without blocking if `listener` is non-blocking; the new
/// socket is close-on-exec); the errno on failure.
pub fn accept_one(listener: c_int) -> Result<c_int, c_int> {
    // SAFETY: null address pointers are allowed; no memory is written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_accept4,
            listener,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    raw_result(r)
}

/// Closes `fd` with the raw system call (no hook, no bookkeeping): a report child dropping its
/// copies of the program's fds, the accept guard closing its reserve or a connection it shed.
pub fn raw_close(fd: c_int) {
    // SAFETY: closing a descriptor number the caller owns (a report child's copy of the fd
    // table, or an fd fdguard itself opened); no memory is touched.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// Closes every fd from `first` to `last` with one raw `close_range` system call (Linux 5.9);
/// false if the kernel lacks it and nothing was closed.
pub fn raw_close_range(first: u32, last: u32) -> bool {
    // SAFETY: closing descriptor numbers; the caller owns the process's fd table (a child).
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) == 0 }
}
