//! The process as a whole: its id, its `RLIMIT_NOFILE`, and ending a report child at once.

use libc::c_int;

use super::errno::errno;

/// This process's id.
pub fn getpid() -> u32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// `RLIMIT_NOFILE` as (soft, hard); `RLIM_INFINITY` becomes `u64::MAX`.
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (u64::MAX, u64::MAX);
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (old soft, new soft), or the
/// errno if the kernel refused.
pub fn raise_nofile() -> Result<(u64, u64), c_int> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(errno());
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(errno());
        }
        Ok((old, lim.rlim_max))
    }
}

/// Ends a report child at once: no atexit handlers, no destructors, no stdio flush.
pub fn exit_now(code: u8) -> ! {
    // SAFETY: _exit never returns and runs nothing of the program's.
    unsafe { libc::_exit(code as c_int) }
}

/// The effective user id.
pub fn euid() -> libc::uid_t {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process's user has a process limit that applies to it (`RLIMIT_NPROC` finite,
/// not root): every process of the user, zombies included, counts against it.
pub fn nproc_limited() -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given; geteuid has no preconditions.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NPROC, &mut r) == 0
            && r.rlim_cur != libc::RLIM_INFINITY
            && libc::geteuid() != 0
    }
}
