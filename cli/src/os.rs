//! The command's OS layer: what it asks the kernel about another process by pid, the few
//! system calls it makes on one (a signal), and its own effective user (to be a JVM's user).
//! Every `unsafe` block of the command is here, with `os/procdir.rs` (ptrace's aside).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

mod procdir;

pub use procdir::{FdDir, FdLinks, FileId, ProcDir};

/// True if fds `a` and `b` of process `pid` share one open file description (`kcmp`, which
/// needs the right to ptrace it).
pub fn same_description(pid: i32, a: i32, b: i32) -> io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes only numbers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// Sends `sig` to `pid` with `value` (`sigqueue`: the receiver's `SA_SIGINFO` handler sees it).
pub fn queue_signal(pid: i32, sig: i32, value: u64) -> io::Result<()> {
    let v = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue has no memory preconditions; the value is passed by copy.
    if unsafe { libc::sigqueue(pid, sig, v) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// 64 random bits from the kernel.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: `b` is writable for its length; getrandom fills at most that much.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Without getrandom: the time, which is enough to keep two requests apart.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_ne_bytes(b)
}

/// Creates the empty file `path` (mode 0600, never through a symlink, never an existing one),
/// owned by `uid`:`gid` (when this process may give it away), open for writing.
pub fn create_owned_file(path: &std::path::Path, uid: u32, gid: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    match std::os::unix::fs::fchown(&f, Some(uid), Some(gid)) {
        Ok(()) => Ok(f),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Sends `sig` to `pid` (plain `kill`).
pub fn send_signal(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` with this process's effective user and group switched to `uid`:`gid`, then
/// switches back; runs it as is when they are these already. Changing them needs root (or
/// `CAP_SETUID` and `CAP_SETGID`); the error says when that failed.
pub fn as_user<R>(uid: u32, gid: u32, f: impl FnOnce() -> R) -> io::Result<R> {
    // SAFETY: geteuid and getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if (euid, egid) == (uid, gid) {
        return Ok(f());
    }
    // The group first: once the user is no longer root, the group cannot change. glibc applies
    // both to every thread of the process.
    // SAFETY: setegid and seteuid have no memory preconditions.
    if unsafe { libc::setegid(gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::seteuid(uid) } != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: as above; back to the group this process had.
        unsafe { libc::setegid(egid) };
        return Err(e);
    }
    let r = f();
    // Back in the other order: the user first, which gives back the right to set the group.
    // SAFETY: as above; these are the ids this process had.
    unsafe {
        libc::seteuid(euid);
        libc::setegid(egid);
    }
    Ok(r)
}

/// True if `pid` names a process (or thread) that still exists, zombies included.
pub fn exists(pid: i32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

/// True if stdout is a terminal.
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
}

/// Sends one `NETLINK_SOCK_DIAG` dump request and returns the datagrams of the answer, up to
/// and including the one that ends it (`NLMSG_DONE` or an error). `None` if netlink cannot be
/// used here.
pub fn sock_diag_dump(request: &[u8], is_last: impl Fn(&[u8]) -> bool) -> Option<Vec<Vec<u8>>> {
    // SAFETY: socket has no memory preconditions; the fd is owned by `sock` from here on.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: `request` is readable for its length.
    let sent = unsafe { libc::send(sock.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if usize::try_from(sent).ok() != Some(request.len()) {
        return None;
    }
    let mut answers = Vec::new();
    // Bounded: a dump of every unix socket of a busy host is a few MB.
    for _ in 0..100_000 {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).ok()?;
        buf.truncate(n);
        let last = n == 0 || is_last(&buf);
        answers.push(buf);
        if last {
            return Some(answers);
        }
    }
    None
}

/// True if `pid` is in this process's network namespace (whose sockets netlink dumps).
pub fn same_net_namespace(pid: i32) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/net");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"));
    matches!((ours, theirs), (Ok(a), Ok(b)) if a == b)
}

/// Restores the default action of `SIGPIPE` (Rust ignores it): `fdguard inspect PID | head`
/// then ends quietly when `head` is done, like any Unix tool, instead of failing to print.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to its default has no memory preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Reads `len` bytes at `addr` in process `pid` (needs the right to ptrace it).
pub fn read_memory(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buf`, writable for `len` bytes; `remote` is only read by the
    // kernel, in the other process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(buf)
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid` (the hard limit unchanged); returns the
/// soft and hard limits it had.
pub fn set_soft_nofile(pid: i32, soft: Option<u64>) -> io::Result<(u64, u64)> {
    let (old_soft, hard) = nofile(pid)?;
    if let Some(soft) = soft {
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `new` is a valid rlimit; the old one is not asked for.
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old_soft, hard))
}

/// The soft and hard `RLIMIT_NOFILE` of process `pid` (`RLIM_INFINITY` for unlimited): one
/// system call, where `/proc/PID/limits` is four and a table of 16 lines to print and parse.
/// Refused (`EPERM`) unless this process has its user ids or `CAP_SYS_RESOURCE`.
pub fn nofile(pid: i32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with no new limit only writes `old`.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock eBPF's `bpf_ktime_get_ns` reads (`ebpf`).
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Waits until `fd` is readable or `timeout` passed, or a signal came (EINTR): whichever is
/// first. Whether it is readable.
pub fn readable_within(fd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll reads and writes the one pollfd it is given.
    unsafe { libc::poll(&mut p, 1, ms) > 0 && p.revents & libc::POLLIN != 0 }
}

/// The effective capabilities of this process (`CapEff` in /proc/self/status: bit N is
/// capability N), 0 if unknown.
pub fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}
