//! The real libc functions behind the hooks, resolved with `dlsym(RTLD_NEXT, name)`.
//!
//! # Why not redhook
//! redhook's `hook!` wraps the body in `catch_unwind(..).unwrap_or_else(|_| real(args))`: a panic
//! after the real call runs the real function a second time (a second `accept`, a second
//! `close` of a number another thread may own by then). It also panics when a symbol is missing
//! and cannot express variadic functions. This resolver is the few lines fdguard needs.
//!
//! # Variadic functions
//! `open`, `open64`, `openat`, `openat64`, `fcntl` and `fcntl64` are variadic in C. The hooks
//! declare the optional argument explicitly (`mode` as `c_uint`, fcntl's argument as a
//! pointer-sized integer): on x86-64 and aarch64 Linux the first variadic arguments travel in the
//! same registers as named ones, so the hook reads whatever the caller put there. The real
//! functions below keep their variadic type, so calling them sets up the variadic ABI correctly
//! (e.g. `%al` on x86-64). The mode only matters with `O_CREAT` or `O_TMPFILE`; passing it always
//! is harmless because libc reads it only then.
//!
//! # Missing symbols
//! A symbol this libc lacks (say `pidfd_open` before glibc 2.36) is not fatal: the hook then
//! answers like a libc without the function would, with `ENOSYS`. The same answer is given in the
//! one case where resolution would recurse (a hook called by `dlsym`'s own allocations).
#![allow(unsafe_code)]
#![allow(non_upper_case_globals)]

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    DIR, FILE, c_char, c_int, c_uint, c_void, epoll_event, fd_set, mmsghdr, mode_t, msghdr, nfds_t,
    pid_t, pollfd, rlimit, sighandler_t, sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec,
    timeval,
};

const MISSING: usize = 1;

/// A lazily resolved pointer to the next definition of a libc function.
pub struct Real<F> {
    addr: AtomicUsize,
    /// NUL-terminated symbol name.
    name: &'static str,
    _fn: PhantomData<F>,
}

thread_local! {
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
}

impl<F: Copy> Real<F> {
    pub const fn new(name: &'static str) -> Self {
        assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>());
        Self {
            addr: AtomicUsize::new(0),
            name,
            _fn: PhantomData,
        }
    }

    /// The real function, or `None` if this libc does not have it.
    #[inline]
    pub fn get(&self) -> Option<F> {
        let addr = self.addr.load(Ordering::Acquire);
        if addr > MISSING {
            // SAFETY: `addr` is the address dlsym returned for `name`, whose C signature is the
            // one `F` declares in the table below; F is a pointer-sized fn pointer type.
            return Some(unsafe { std::mem::transmute_copy::<usize, F>(&addr) });
        }
        if addr == MISSING {
            return None;
        }
        self.resolve()
    }

    #[cold]
    fn resolve(&self) -> Option<F> {
        if RESOLVING.with(|r| r.replace(true)) {
            return None;
        }
        // SAFETY: `name` is NUL-terminated (checked by the `reals!` macro).
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) };
        RESOLVING.with(|r| r.set(false));
        let addr = p as usize;
        self.addr
            .store(if addr == 0 { MISSING } else { addr }, Ordering::Release);
        self.get()
    }
}

/// The value a C function returns on failure, for the `ENOSYS` answer of a missing symbol.
pub trait FailValue {
    fn fail() -> Self;
}

impl FailValue for c_int {
    fn fail() -> Self {
        -1
    }
}

impl FailValue for ssize_t {
    fn fail() -> Self {
        -1
    }
}

/// `sighandler_t`: `SIG_ERR`.
impl FailValue for usize {
    fn fail() -> Self {
        libc::SIG_ERR
    }
}

impl<T> FailValue for *mut T {
    fn fail() -> Self {
        std::ptr::null_mut()
    }
}

impl FailValue for () {
    fn fail() {}
}

/// What a hook returns when its real function does not exist.
#[cold]
pub fn missing<R: FailValue>() -> R {
    crate::os::errno::set_errno(libc::ENOSYS);
    R::fail()
}

/// `name: fn(args) -> ret;` per function; variadic ones end their arguments with `; ...`.
macro_rules! reals {
    ($($name:ident: fn($($arg:ty),* $(; $var:tt)?) $(-> $ret:ty)?;)*) => {
        $(
            pub static $name: Real<unsafe extern "C" fn($($arg),* $(, $var)?) $(-> $ret)?> =
                Real::new(concat!(stringify!($name), "\0"));
        )*

        /// The NUL-terminated name of every function fdguard interposes: what `fdguard attach`
        /// points the loaded objects' GOT entries at fdguard's hooks for.
        pub const NAMES: &[&[u8]] = &[$(concat!(stringify!($name), "\0").as_bytes()),*];

        /// Resolves everything at load time, so hooks rarely call `dlsym` themselves.
        pub fn resolve_all() {
            $( let _ = $name.get(); )*
        }
    };
}

reals! {
    open: fn(*const c_char, c_int; ...) -> c_int;
    open64: fn(*const c_char, c_int; ...) -> c_int;
    openat: fn(c_int, *const c_char, c_int; ...) -> c_int;
    openat64: fn(c_int, *const c_char, c_int; ...) -> c_int;
    creat: fn(*const c_char, mode_t) -> c_int;
    creat64: fn(*const c_char, mode_t) -> c_int;
    __open_2: fn(*const c_char, c_int) -> c_int;
    __open64_2: fn(*const c_char, c_int) -> c_int;
    __openat_2: fn(c_int, *const c_char, c_int) -> c_int;
    __openat64_2: fn(c_int, *const c_char, c_int) -> c_int;
    fopen: fn(*const c_char, *const c_char) -> *mut FILE;
    fopen64: fn(*const c_char, *const c_char) -> *mut FILE;
    freopen: fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE;
    freopen64: fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE;
    fdopen: fn(c_int, *const c_char) -> *mut FILE;
    fclose: fn(*mut FILE) -> c_int;
    fcloseall: fn() -> c_int;
    opendir: fn(*const c_char) -> *mut DIR;
    fdopendir: fn(c_int) -> *mut DIR;
    closedir: fn(*mut DIR) -> c_int;
    tmpfile: fn() -> *mut FILE;
    tmpfile64: fn() -> *mut FILE;
    mkstemp: fn(*mut c_char) -> c_int;
    mkstemp64: fn(*mut c_char) -> c_int;
    mkostemp: fn(*mut c_char, c_int) -> c_int;
    mkostemp64: fn(*mut c_char, c_int) -> c_int;
    mkstemps: fn(*mut c_char, c_int) -> c_int;
    mkstemps64: fn(*mut c_char, c_int) -> c_int;
    mkostemps: fn(*mut c_char, c_int, c_int) -> c_int;
    mkostemps64: fn(*mut c_char, c_int, c_int) -> c_int;
    memfd_create: fn(*const c_char, c_uint) -> c_int;
    posix_openpt: fn(c_int) -> c_int;
    getpt: fn() -> c_int;
    popen: fn(*const c_char, *const c_char) -> *mut FILE;
    pclose: fn(*mut FILE) -> c_int;
    socket: fn(c_int, c_int, c_int) -> c_int;
    socketpair: fn(c_int, c_int, c_int, *mut c_int) -> c_int;
    accept: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
    listen: fn(c_int, c_int) -> c_int;
    recvmsg: fn(c_int, *mut msghdr, c_int) -> ssize_t;
    recvmmsg: fn(c_int, *mut mmsghdr, c_uint, c_int, *mut timespec) -> c_int;
    pipe: fn(*mut c_int) -> c_int;
    pipe2: fn(*mut c_int, c_int) -> c_int;
    epoll_create: fn(c_int) -> c_int;
    epoll_create1: fn(c_int) -> c_int;
    eventfd: fn(c_uint, c_int) -> c_int;
    timerfd_create: fn(c_int, c_int) -> c_int;
    signalfd: fn(c_int, *const sigset_t, c_int) -> c_int;
    inotify_init: fn() -> c_int;
    inotify_init1: fn(c_int) -> c_int;
    fanotify_init: fn(c_uint, c_uint) -> c_int;
    pidfd_open: fn(pid_t, c_uint) -> c_int;
    dup: fn(c_int) -> c_int;
    dup2: fn(c_int, c_int) -> c_int;
    dup3: fn(c_int, c_int, c_int) -> c_int;
    fcntl: fn(c_int, c_int; ...) -> c_int;
    fcntl64: fn(c_int, c_int; ...) -> c_int;
    close: fn(c_int) -> c_int;
    close_range: fn(c_uint, c_uint, c_int) -> c_int;
    closefrom: fn(c_int);
    vfork: fn() -> pid_t;
    setrlimit: fn(c_int, *const rlimit) -> c_int;
    setrlimit64: fn(c_int, *const rlimit) -> c_int;
    prlimit: fn(pid_t, c_int, *const rlimit, *mut rlimit) -> c_int;
    prlimit64: fn(pid_t, c_int, *const rlimit, *mut rlimit) -> c_int;
    dlclose: fn(*mut c_void) -> c_int;
    epoll_ctl: fn(c_int, c_int, c_int, *mut epoll_event) -> c_int;
    epoll_wait: fn(c_int, *mut epoll_event, c_int, c_int) -> c_int;
    epoll_pwait: fn(c_int, *mut epoll_event, c_int, c_int, *const sigset_t) -> c_int;
    epoll_pwait2: fn(c_int, *mut epoll_event, c_int, *const timespec, *const sigset_t) -> c_int;
    poll: fn(*mut pollfd, nfds_t, c_int) -> c_int;
    ppoll: fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int;
    __poll_chk: fn(*mut pollfd, nfds_t, c_int, size_t) -> c_int;
    __ppoll_chk: fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t, size_t) -> c_int;
    select: fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int;
    pselect: fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *const timespec, *const sigset_t) -> c_int;
    sigaction: fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
    __sigaction: fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
    signal: fn(c_int, sighandler_t) -> sighandler_t;
    bsd_signal: fn(c_int, sighandler_t) -> sighandler_t;
    ssignal: fn(c_int, sighandler_t) -> sighandler_t;
    sysv_signal: fn(c_int, sighandler_t) -> sighandler_t;
    __sysv_signal: fn(c_int, sighandler_t) -> sighandler_t;
    sigset: fn(c_int, sighandler_t) -> sighandler_t;
    sigignore: fn(c_int) -> c_int;
}
