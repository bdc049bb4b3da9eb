//! The exported entry points that replace libc's fd functions while fdguard is preloaded.
//!
//! Every hook has the same shape, written once in `hooks!` and the `new_*` / `release_*`
//! helpers: resolve the real function, decide the mode, call the real function exactly once with
//! the program's arguments, tell the tracker (and the accept guard, `emfile`, what concerns
//! listeners), and return the real result with the real `errno`.
//! Releases are forgotten *before* the real call (the number is reusable the moment it returns).
//!
//! The hooks that create and release fds are here; the accept guard's wait hooks (epoll_ctl,
//! epoll_wait, poll, select and their variants) are in `waits`, the calls that set signal
//! dispositions (for fdguard's report signal) in `signals`, and `vfork`, which cannot be an
//! ordinary function, in `vfork`.
#![allow(unsafe_code)]

mod signals;
mod vfork;
mod waits;

use libc::{DIR, FILE, c_char, c_int, c_uint, c_void, mmsghdr, mode_t, msghdr, pid_t, sigset_t};
use libc::{rlimit, sockaddr, socklen_t, ssize_t, timespec};

use crate::emfile;
use crate::guard::{self, ErrnoGuard, Mode};
use crate::origin::Detail;
use crate::os;
use crate::os::errno::ThreadErrno;
use crate::real;
use crate::tracker::{self, Birth, Origin};
use fdguard_core::call::Call;

/// The path a program passed, read during the hooked call.
fn path_arg<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: libc requires these arguments to be NUL-terminated strings (or null for the calls
    // that accept null); the real call has just read the same string.
    unsafe { os::mem::c_bytes(p) }
}

fn stream_fd(fp: *mut FILE) -> c_int {
    if fp.is_null() {
        return -1;
    }
    // SAFETY: `fp` is a stream the program passed to (or got from) a stdio call; fileno only
    // reads its fd field.
    unsafe { libc::fileno(fp) }
}

fn dir_fd(dir: *mut DIR) -> c_int {
    if dir.is_null() {
        return -1;
    }
    // SAFETY: `dir` is a directory stream the program passed to (or got from) a dirent call.
    unsafe { libc::dirfd(dir) }
}

/// Reads the two fds `pipe`/`socketpair` stored.
fn fd_pair(fds: *const c_int) -> [c_int; 2] {
    // SAFETY: the call succeeded, so the kernel wrote two ints to the program's array.
    unsafe { [*fds, *fds.add(1)] }
}

/// Calls `f` for every fd received as `SCM_RIGHTS` in a message the kernel just filled.
fn scm_rights(msg: *const msghdr, mut f: impl FnMut(c_int)) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the call succeeded, so `msg` and its control buffer were filled by the kernel; the
    // CMSG_* macros stay within `msg_controllen`, and each fd is read unaligned from the data.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<c_int>();
                let header = libc::CMSG_LEN(0) as usize;
                let n = ((*c).cmsg_len as usize).saturating_sub(header) / size_of::<c_int>();
                for i in 0..n {
                    f(data.add(i).read_unaligned());
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
}

/// What a hook settles before the real call: the mode and, unless it passes the call through,
/// where `errno` lives and (when tracking) the thread and the time. The kernel's work in the
/// real call leaves the branch predictors and caches cold for the code after it: here each
/// libc call made after it (`__errno_location`, the clock) cost several ns more than before it.
#[derive(Clone, Copy)]
struct Entry {
    mode: Mode,
    errno: Option<ThreadErrno>,
    born: Birth,
}

/// For hooks that release or update fds.
#[inline(always)]
fn enter() -> Entry {
    entry(guard::mode())
}

#[inline(always)]
fn entry(mode: Mode) -> Entry {
    Entry {
        mode,
        errno: (mode != Mode::Pass).then(ThreadErrno::locate),
        born: Birth::default(),
    }
}

/// For hooks that create fds: also who and when.
#[inline(always)]
fn enter_creating() -> Entry {
    let e = enter();
    Entry {
        born: Birth::take(e.mode),
        ..e
    }
}

/// After the real call: bookkeeping with `errno` preserved, contained against panics.
#[inline(always)]
fn after(entry: &Entry, book: impl FnOnce(c_int)) {
    if let Some(location) = entry.errno {
        let errno = ErrnoGuard::at(location);
        guard::contained(|| book(errno.saved()));
    }
}

/// Calls that return a new fd or -1.
#[inline(always)]
fn new_fd(call: Call, real: impl FnOnce() -> c_int, origin: impl FnOnce() -> Origin) -> c_int {
    let e = enter_creating();
    let fd = real();
    after(&e, |errno| {
        if fd >= 0 {
            tracker::created(e.mode, e.born, fd, origin)
        } else {
            tracker::failed(e.mode, call, errno)
        }
    });
    fd
}

/// `accept`, `accept4`: a new fd, or a failure the accept guard may act on (it may sleep before
/// the hook returns the failure, with the real `errno`).
#[inline(always)]
fn accept_fd(call: Call, listener: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let e = enter_creating();
    let fd = real();
    after(&e, |errno| {
        if fd >= 0 {
            let origin = || Origin::new(call).detail(Detail::FromFd(listener));
            tracker::created(e.mode, e.born, fd, origin);
            emfile::accepted(e.mode, listener);
        } else {
            let report = tracker::accept_failed(e.mode, call, errno);
            emfile::accept_failed(e.mode, listener, errno, report);
        }
    });
    fd
}

/// Calls that return a new stdio or directory stream, or null. They may call other hooked
/// functions inside libc, so the real call runs as a compound call.
#[inline(always)]
fn new_handle<T>(
    call: Call,
    real: impl FnOnce() -> *mut T,
    fd_of: fn(*mut T) -> c_int,
    origin: impl FnOnce() -> Origin,
) -> *mut T {
    let e = enter_creating();
    let handle = guard::compound(real);
    after(&e, |errno| {
        if handle.is_null() {
            tracker::failed(e.mode, call, errno)
        } else {
            tracker::created(e.mode, e.born, fd_of(handle), origin)
        }
    });
    handle
}

#[inline(always)]
fn new_stream(
    call: Call,
    real: impl FnOnce() -> *mut FILE,
    origin: impl FnOnce() -> Origin,
) -> *mut FILE {
    new_handle(call, real, stream_fd, origin)
}

/// `pipe`, `pipe2`, `socketpair`: two new fds in the program's array.
#[inline(always)]
fn new_pair(
    call: Call,
    fds: *mut c_int,
    real: impl FnOnce() -> c_int,
    origin: impl Fn() -> Origin,
) -> c_int {
    let e = enter_creating();
    let r = real();
    after(&e, |errno| {
        if r == 0 {
            let mut stack = None;
            for fd in fd_pair(fds) {
                tracker::created_sharing(e.mode, e.born, fd, &mut stack, &origin)
            }
        } else {
            tracker::failed(e.mode, call, errno)
        }
    });
    r
}

/// `dup2`, `dup3`, `fcntl(F_DUPFD*)`: a new fd copied from `source`; with dup2/dup3 it may
/// replace an open one.
#[inline(always)]
fn new_dup(call: Call, source: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let e = enter_creating();
    let fd = real();
    after(&e, |errno| {
        if fd < 0 {
            tracker::failed(e.mode, call, errno)
        } else if fd != source {
            tracker::replaced(e.mode, e.born, fd, Origin::duplicate_of(call, source))
        }
    });
    fd
}

/// Releases one fd: forgotten first, then really closed. Closing one of fdguard's own fds is
/// answered with `EBADF` without closing it, as the program would see without fdguard. A close
/// that fails with `EBADF` on an fd the table did not have is reported as a bad close.
#[inline(always)]
fn release_fd(call: Call, fd: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let mode = guard::mode();
    // The usual release touches neither libc nor `errno`, so nothing needs to be kept around it.
    let before = match guard::contained(|| tracker::releasing_plainly(mode, fd)) {
        Some(Some(before)) => before,
        Some(None) => match release_checked(mode, fd) {
            Ok(before) => before,
            Err(answer) => return answer,
        },
        None => tracker::Released::Unknown,
    };
    if let tracker::Released::NotOpen(_) = before {
        return release_unknown(call, fd, mode, before, real);
    }
    // Nothing is left to do after the call, so it is the hook's last act (a tail call): no
    // epilogue of fdguard's runs after the kernel's work, whose code would start cold.
    real()
}

/// The release of an fd the table did not have open: a failure may be a bad close.
#[inline(never)]
fn release_unknown(
    call: Call,
    fd: c_int,
    mode: Mode,
    before: tracker::Released,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let r = real();
    if r == -1 {
        after(&entry(mode), |errno| {
            tracker::bad_close(mode, call, fd, before, errno)
        });
    }
    r
}

/// The release of an fd that is not plainly the program's (one of fdguard's own, a listener, or
/// with release stacks kept), with `errno` kept; `Err` is the hook's answer without the real call.
#[inline(never)]
fn release_checked(mode: Mode, fd: c_int) -> Result<tracker::Released, c_int> {
    let Some(location) = entry(mode).errno else {
        return Ok(tracker::Released::Unknown);
    };
    let errno = ErrnoGuard::at(location);
    if guard::contained(|| tracker::is_own(mode, fd)) == Some(true) {
        drop(errno);
        location.set(libc::EBADF);
        return Err(-1);
    }
    Ok(guard::contained(|| tracker::releasing(mode, fd)).unwrap_or(tracker::Released::Unknown))
}

/// `freopen`: the stream's old fd is released (even when reopening fails), then `path` is
/// opened, usually on the same number.
#[inline(always)]
fn reopen_stream(
    call: Call,
    fp: *mut FILE,
    real: impl FnOnce() -> *mut FILE,
    origin: impl FnOnce() -> Origin,
) -> *mut FILE {
    let mode = guard::mode();
    if mode != Mode::Pass {
        let _errno = ErrnoGuard::save();
        guard::contained(|| tracker::releasing(mode, stream_fd(fp)));
    }
    new_stream(call, real, origin)
}

/// Releases every fd in `lo..=hi` (when `closes` says the call really closes them).
#[inline(always)]
fn release_range<R>(lo: c_uint, hi: c_uint, closes: bool, real: impl FnOnce() -> R) -> R {
    let mode = guard::mode();
    if mode != Mode::Pass && closes && lo <= hi {
        let _errno = ErrnoGuard::save();
        guard::contained(|| tracker::releasing_range(mode, lo, hi));
    }
    real()
}

/// `setrlimit`/`prlimit` on this process's `RLIMIT_NOFILE`: the threshold and shed mode's
/// reserve follow the new limit at once (the creation path also re-reads it every second, and
/// the accept guard's thread looks at the reserve, for `prlimit --pid`).
#[inline(always)]
fn limit_set(resource: c_int, pid: pid_t, real: impl FnOnce() -> c_int) -> c_int {
    let e = enter();
    let r = real();
    let ours = pid == 0 || pid as u32 == os::process::getpid();
    if r == 0 && resource == libc::RLIMIT_NOFILE as c_int && ours {
        after(&e, |_| {
            tracker::limit_changed(e.mode);
            emfile::limit_changed(e.mode);
        });
    }
    r
}

/// Generates each exported hook: its real function, or the `ENOSYS` answer when this libc does
/// not have it, and a `call` closure that runs the real function with the program's arguments.
/// `|call, real|` also names the real function itself, for hooks that call it with a different
/// timeout (the wait calls).
macro_rules! hooks {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = |$call:ident $(, $real:ident)?| $body:expr;
    )*) => {$(
        $(#[$doc])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            let Some(real) = real::$name.get() else {
                return real::missing();
            };
            #[allow(unused_variables)]
            let $call = || {
                // SAFETY: `real` is the next definition of this very libc function, with the
                // signature declared in `real`, and receives exactly the program's arguments.
                unsafe { real($($arg),*) }
            };
            $(let $real = real;)?
            $body
        }
    )*};
}
// A path for the macro, so that `waits` generates its hooks with it too.
use hooks;

hooks! {
    fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int =
        |call| new_fd(Call::Open, call, || Origin::new(Call::Open).path(path_arg(path)));
    fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int =
        |call| new_fd(Call::Open64, call, || Origin::new(Call::Open64).path(path_arg(path)));
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int =
        |call| new_fd(Call::Openat, call, || Origin::new(Call::Openat).path(path_arg(path)));
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int =
        |call| new_fd(Call::Openat64, call, || Origin::new(Call::Openat64).path(path_arg(path)));
    fn creat(path: *const c_char, mode: mode_t) -> c_int =
        |call| new_fd(Call::Creat, call, || Origin::new(Call::Creat).path(path_arg(path)));
    fn creat64(path: *const c_char, mode: mode_t) -> c_int =
        |call| new_fd(Call::Creat64, call, || Origin::new(Call::Creat64).path(path_arg(path)));
    /// `_FORTIFY_SOURCE` builds call these instead of `open` when the mode is not needed.
    fn __open_2(path: *const c_char, flags: c_int) -> c_int =
        |call| new_fd(Call::Open2, call, || Origin::new(Call::Open2).path(path_arg(path)));
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int =
        |call| new_fd(Call::Open64_2, call, || Origin::new(Call::Open64_2).path(path_arg(path)));
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int =
        |call| new_fd(Call::Openat2, call, || Origin::new(Call::Openat2).path(path_arg(path)));
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int =
        |call| new_fd(Call::Openat64_2, call, || Origin::new(Call::Openat64_2).path(path_arg(path)));

    fn fopen(path: *const c_char, how: *const c_char) -> *mut FILE =
        |call| new_stream(Call::Fopen, call, || Origin::new(Call::Fopen).path(path_arg(path)));
    fn fopen64(path: *const c_char, how: *const c_char) -> *mut FILE =
        |call| new_stream(Call::Fopen64, call, || Origin::new(Call::Fopen64).path(path_arg(path)));
    /// Closes the stream's old fd (even when reopening fails), then opens `path` on it.
    fn freopen(path: *const c_char, how: *const c_char, fp: *mut FILE) -> *mut FILE =
        |call| reopen_stream(Call::Freopen, fp, call, || {
            Origin::new(Call::Freopen).path(path_arg(path))
        });
    fn freopen64(path: *const c_char, how: *const c_char, fp: *mut FILE) -> *mut FILE =
        |call| reopen_stream(Call::Freopen64, fp, call, || {
            Origin::new(Call::Freopen64).path(path_arg(path))
        });
    /// No new fd: the existing one now belongs to a stream.
    fn fdopen(fd: c_int, how: *const c_char) -> *mut FILE = |call| {
        let e = enter();
        let fp = guard::compound(call);
        after(&e, |_| if !fp.is_null() { tracker::became_stream(e.mode, fd) });
        fp
    };
    fn tmpfile() -> *mut FILE = |call| new_stream(Call::Tmpfile, call, || Origin::new(Call::Tmpfile));
    fn tmpfile64() -> *mut FILE =
        |call| new_stream(Call::Tmpfile64, call, || Origin::new(Call::Tmpfile64));
    /// The command stands in for a path in the report.
    fn popen(command: *const c_char, how: *const c_char) -> *mut FILE =
        |call| new_stream(Call::Popen, call, || Origin::new(Call::Popen).path(path_arg(command)));

    fn opendir(path: *const c_char) -> *mut DIR =
        |call| new_handle(Call::Opendir, call, dir_fd, || Origin::new(Call::Opendir).path(path_arg(path)));
    /// No new fd: the existing one now belongs to a directory stream.
    fn fdopendir(fd: c_int) -> *mut DIR = |call| {
        let e = enter();
        let dir = guard::compound(call);
        after(&e, |_| if !dir.is_null() { tracker::became_dir(e.mode, fd) });
        dir
    };

    /// The template holds the created file's name once the call returns.
    fn mkstemp(template: *mut c_char) -> c_int =
        |call| new_fd(Call::Mkstemp, call, || Origin::new(Call::Mkstemp).path(path_arg(template)));
    fn mkstemp64(template: *mut c_char) -> c_int =
        |call| new_fd(Call::Mkstemp64, call, || Origin::new(Call::Mkstemp64).path(path_arg(template)));
    fn mkostemp(template: *mut c_char, flags: c_int) -> c_int =
        |call| new_fd(Call::Mkostemp, call, || Origin::new(Call::Mkostemp).path(path_arg(template)));
    fn mkostemp64(template: *mut c_char, flags: c_int) -> c_int =
        |call| new_fd(Call::Mkostemp64, call, || Origin::new(Call::Mkostemp64).path(path_arg(template)));
    fn mkstemps(template: *mut c_char, suffixlen: c_int) -> c_int =
        |call| new_fd(Call::Mkstemps, call, || Origin::new(Call::Mkstemps).path(path_arg(template)));
    fn mkstemps64(template: *mut c_char, suffixlen: c_int) -> c_int =
        |call| new_fd(Call::Mkstemps64, call, || Origin::new(Call::Mkstemps64).path(path_arg(template)));
    fn mkostemps(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int =
        |call| new_fd(Call::Mkostemps, call, || Origin::new(Call::Mkostemps).path(path_arg(template)));
    fn mkostemps64(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int =
        |call| new_fd(Call::Mkostemps64, call, || Origin::new(Call::Mkostemps64).path(path_arg(template)));
    fn memfd_create(name: *const c_char, flags: c_uint) -> c_int =
        |call| new_fd(Call::MemfdCreate, call, || Origin::new(Call::MemfdCreate).path(path_arg(name)));
    fn posix_openpt(flags: c_int) -> c_int =
        |call| new_fd(Call::PosixOpenpt, call, || Origin::new(Call::PosixOpenpt));
    fn getpt() -> c_int = |call| new_fd(Call::Getpt, call, || Origin::new(Call::Getpt));

    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int =
        |call| new_fd(Call::Socket, call, || Origin::new(Call::Socket).socket(domain, ty, protocol));
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, fds: *mut c_int) -> c_int =
        |call| new_pair(Call::Socketpair, fds, call, || {
            Origin::new(Call::Socketpair).socket(domain, ty, protocol)
        });
    fn accept(listener: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int =
        |call| accept_fd(Call::Accept, listener, call);
    fn accept4(listener: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int =
        |call| accept_fd(Call::Accept4, listener, call);
    /// Listening sockets are what the accept guard watches over.
    fn listen(fd: c_int, backlog: c_int) -> c_int = |call| {
        let e = enter();
        let r = call();
        if r == 0 {
            after(&e, |_| emfile::listening(e.mode, fd));
        }
        r
    };
    /// fds passed by another process arrive as `SCM_RIGHTS` control messages.
    fn recvmsg(sock: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t = |call| {
        let e = enter();
        let n = call();
        after(&e, |_| if n >= 0 {
            let mut stack = None;
            scm_rights(msg, |fd| tracker::created_sharing(e.mode, Birth::take(e.mode), fd, &mut stack, || {
                Origin::new(Call::Recvmsg).detail(Detail::FromFd(sock))
            }))
        });
        n
    };
    fn recvmmsg(sock: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut timespec) -> c_int = |call| {
        let e = enter();
        let n = call();
        after(&e, |_| {
            let mut stack = None;
            for i in 0..n.max(0) as usize {
                // SAFETY: the kernel filled the first `n` entries of the program's array.
                let hdr = unsafe { &raw const (*msgs.add(i)).msg_hdr };
                scm_rights(hdr, |fd| tracker::created_sharing(e.mode, Birth::take(e.mode), fd, &mut stack, || {
                    Origin::new(Call::Recvmmsg).detail(Detail::FromFd(sock))
                }))
            }
        });
        n
    };

    fn pipe(fds: *mut c_int) -> c_int = |call| new_pair(Call::Pipe, fds, call, || Origin::new(Call::Pipe));
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int =
        |call| new_pair(Call::Pipe2, fds, call, || Origin::new(Call::Pipe2));
    fn epoll_create(size: c_int) -> c_int =
        |call| new_fd(Call::EpollCreate, call, || Origin::new(Call::EpollCreate));
    fn epoll_create1(flags: c_int) -> c_int =
        |call| new_fd(Call::EpollCreate1, call, || Origin::new(Call::EpollCreate1));
    fn eventfd(initval: c_uint, flags: c_int) -> c_int =
        |call| new_fd(Call::Eventfd, call, || Origin::new(Call::Eventfd));
    fn timerfd_create(clock: c_int, flags: c_int) -> c_int =
        |call| new_fd(Call::TimerfdCreate, call, || Origin::new(Call::TimerfdCreate));
    /// Only `fd == -1` creates an fd; otherwise the call updates an existing signalfd.
    fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int = |call| {
        if fd == -1 {
            new_fd(Call::Signalfd, call, || Origin::new(Call::Signalfd))
        } else {
            call()
        }
    };
    fn inotify_init() -> c_int = |call| new_fd(Call::InotifyInit, call, || Origin::new(Call::InotifyInit));
    fn inotify_init1(flags: c_int) -> c_int =
        |call| new_fd(Call::InotifyInit1, call, || Origin::new(Call::InotifyInit1));
    fn fanotify_init(flags: c_uint, event_flags: c_uint) -> c_int =
        |call| new_fd(Call::FanotifyInit, call, || Origin::new(Call::FanotifyInit));
    fn pidfd_open(pid: pid_t, flags: c_uint) -> c_int =
        |call| new_fd(Call::PidfdOpen, call, || Origin::new(Call::PidfdOpen).detail(Detail::Pid(pid)));

    fn dup(fd: c_int) -> c_int = |call| new_fd(Call::Dup, call, || Origin::duplicate_of(Call::Dup, fd));
    fn dup2(fd: c_int, target: c_int) -> c_int = |call| new_dup(Call::Dup2, fd, call);
    fn dup3(fd: c_int, target: c_int, flags: c_int) -> c_int = |call| new_dup(Call::Dup3, fd, call);
    /// Only `F_DUPFD` and `F_DUPFD_CLOEXEC` create fds; the third argument is passed through as a
    /// pointer-sized value whatever the command (an int or a pointer).
    fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int = |call| {
        if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
            new_dup(Call::Fcntl, fd, call)
        } else {
            call()
        }
    };
    fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int = |call| {
        if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
            new_dup(Call::Fcntl64, fd, call)
        } else {
            call()
        }
    };

    fn close(fd: c_int) -> c_int = |call| release_fd(Call::Close, fd, call);
    fn fclose(fp: *mut FILE) -> c_int =
        |call| release_fd(Call::Fclose, stream_fd(fp), || guard::compound(call));
    fn pclose(fp: *mut FILE) -> c_int =
        |call| release_fd(Call::Pclose, stream_fd(fp), || guard::compound(call));
    fn closedir(dir: *mut DIR) -> c_int =
        |call| release_fd(Call::Closedir, dir_fd(dir), || guard::compound(call));
    /// With `CLOSE_RANGE_CLOEXEC` nothing is closed, only marked close-on-exec.
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int =
        |call| release_range(first, last, flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0, call);
    fn closefrom(lowfd: c_int) -> () =
        |call| release_range(lowfd.max(0) as c_uint, c_uint::MAX, lowfd >= 0, call);
    fn setrlimit(resource: c_int, limit: *const rlimit) -> c_int =
        |call| limit_set(resource, 0, call);
    fn setrlimit64(resource: c_int, limit: *const rlimit) -> c_int =
        |call| limit_set(resource, 0, call);
    fn prlimit(pid: pid_t, resource: c_int, new: *const rlimit, old: *mut rlimit) -> c_int =
        |call| limit_set(resource, pid, call);
    fn prlimit64(pid: pid_t, resource: c_int, new: *const rlimit, old: *mut rlimit) -> c_int =
        |call| limit_set(resource, pid, call);
    /// Code unmapped by `dlclose` takes its cached unwind rules with it (another object may be
    /// loaded at the same address). Done whatever the mode: the cache is shared by everyone.
    fn dlclose(handle: *mut c_void) -> c_int = |call| {
        let r = call();
        if r == 0 {
            let _errno = ErrnoGuard::save();
            tracker::code_unmapped();
        }
        r
    };
    fn fcloseall() -> c_int = |call| {
        let e = enter();
        let r = guard::compound(call);
        after(&e, |_| tracker::streams_flushed(e.mode));
        r
    };
}
