//! Thin, allocation-free wrappers over the system calls fdguard itself needs.
//!
//! # Why
//! The core (`table`, `intern`, `tracker`, `report`) is safe Rust. Everything that talks to the
//! kernel or to raw memory lives here, so that each `unsafe` block can state once why it is sound.
//! Every function in this module is async-signal-safe unless its doc says otherwise.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use libc::c_int;

/// The calling thread's `errno`.
#[inline]
pub fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// This thread's `errno`, located once: saving it and restoring it around fdguard's work then
/// costs one call to `__errno_location` instead of two. Not `Send` (a raw pointer): it names
/// the errno of the thread that located it.
#[derive(Clone, Copy)]
pub struct ThreadErrno(*mut c_int);

impl ThreadErrno {
    #[inline]
    pub fn locate() -> Self {
        // SAFETY: __errno_location has no preconditions.
        Self(unsafe { libc::__errno_location() })
    }

    #[inline]
    pub fn get(&self) -> c_int {
        // SAFETY: the calling thread's errno, valid for the thread's life; `Self` cannot leave
        // the thread.
        unsafe { *self.0 }
    }

    #[inline]
    pub fn set(&self, value: c_int) {
        // SAFETY: as in `get`.
        unsafe { *self.0 = value }
    }
}

#[inline]
pub fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value }
}

/// Where glibc keeps each thread's kernel tid in its thread descriptor, as an offset from the
/// thread pointer; 0 = not known (before `locate_descriptor_tid`, or a libc that does not say),
/// and `guard::tid` then keeps its own cache. Reading glibc's field is one load where fdguard's
/// own thread-local costs a call to `__tls_get_addr` (a cdylib gets the general-dynamic model).
static TID_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// Finds the tid field: glibc publishes its place for libthread_db (`_thread_db_pthread_tid`:
/// size in bits, count, offset; it is how gdb finds it). Used only once checked on this thread.
pub fn locate_descriptor_tid() {
    // SAFETY: dlsym with a NUL-terminated name; the result is only read if non-null.
    let desc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_thread_db_pthread_tid".as_ptr()) };
    if desc.is_null() {
        return;
    }
    // SAFETY: glibc defines the symbol as `const uint32_t[3]`.
    let [bits, count, offset] = unsafe { desc.cast::<[u32; 3]>().read_unaligned() };
    let offset = offset as usize;
    if bits != 32 || count != 1 || offset == 0 || !offset.is_multiple_of(4) || offset > 4096 {
        return;
    }
    if read_tid_at(offset) == gettid() {
        TID_OFFSET.store(offset, Ordering::Relaxed);
    }
}

/// The calling thread's kernel tid as glibc keeps it (current across `fork`; in a `vfork` child
/// it is still the parent's, as fdguard's own cache would be), if `locate_descriptor_tid` found it.
#[inline(always)]
pub fn descriptor_tid() -> Option<u32> {
    match TID_OFFSET.load(Ordering::Relaxed) {
        0 => None,
        offset => Some(read_tid_at(offset)),
    }
}

#[inline(always)]
fn read_tid_at(offset: usize) -> u32 {
    let tid: u32;
    // SAFETY: on x86-64 every thread's %fs points at its glibc thread descriptor, and `offset`
    // is this libc's own description of a 32-bit field in it (at most 4 KiB in, aligned): one
    // aligned read, no other memory, no flags.
    unsafe {
        core::arch::asm!(
            "mov {tid:e}, dword ptr fs:[{off}]",
            tid = out(reg) tid,
            off = in(reg) offset,
            options(nostack, readonly, preserves_flags),
        );
    }
    tid
}

/// Kernel thread id, straight from the kernel (no caching here: see `guard` for the cache).
#[inline]
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

pub fn getpid() -> u32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// The vDSO's own `clock_gettime`, found at load (0: not found, libc's is used). Called
/// directly, a clock read skips libc's wrapper: fewer instruction-cache lines on every
/// creation, where each costs several ns after a system call.
static VDSO_CLOCK: AtomicUsize = AtomicUsize::new(0);

type ClockFn = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> c_int;

pub fn locate_vdso_clock() {
    // SAFETY: dlopen with RTLD_NOLOAD only looks up an object already loaded (the kernel maps
    // the vDSO into every process and glibc lists it by this name); dlsym with a NUL-terminated
    // name on the handle it returned.
    let f = unsafe {
        let vdso = libc::dlopen(
            c"linux-vdso.so.1".as_ptr(),
            libc::RTLD_NOLOAD | libc::RTLD_LAZY,
        );
        if vdso.is_null() {
            return;
        }
        libc::dlsym(vdso, c"__vdso_clock_gettime".as_ptr())
    };
    VDSO_CLOCK.store(f as usize, Ordering::Relaxed);
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let vdso = VDSO_CLOCK.load(Ordering::Relaxed);
    if vdso != 0 {
        // SAFETY: `vdso` is the vDSO's `__vdso_clock_gettime`, which has clock_gettime's C
        // signature; `ts` is a valid, writable timespec. It reads shared kernel data only
        // (falling back to the system call itself), never `errno`: async-signal-safe.
        unsafe { std::mem::transmute::<usize, ClockFn>(vdso)(clock, &mut ts) };
    } else {
        // SAFETY: `ts` is a valid, writable timespec; clock_gettime is async-signal-safe.
        unsafe { libc::clock_gettime(clock, &mut ts) };
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Monotonic time for fd ages. The coarse clock is a plain vDSO read (a few ns), and its
/// resolution (one scheduler tick) is far finer than the milliseconds a report shows.
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Wall-clock time in ns since the epoch (report timestamps only).
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
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

/// True when the process runs in secure-execution mode (setuid, setgid, file capabilities).
pub fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Reads an environment variable without allocating (`getenv` returns a pointer into `environ`).
///
/// Not async-signal-safe in general (another thread may `setenv`); used only at load time.
pub fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string that lives
    // as long as the environment entry, which fdguard reads once at load and copies.
    unsafe {
        let p = libc::getenv(name.as_ptr());
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_bytes())
        }
    }
}

/// Names of all environment variables starting with `prefix` (load time only; allocates).
pub fn env_names_with_prefix(prefix: &[u8]) -> Vec<Vec<u8>> {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut out = Vec::new();
    // SAFETY: `environ` is a null-terminated array of NUL-terminated strings, read at load time.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            if entry.starts_with(prefix) {
                let name = entry.split(|&b| b == b'=').next().unwrap_or(entry);
                out.push(name.to_vec());
            }
            p = p.add(1);
        }
    }
    out
}

/// Writes all of `bytes` to `fd`, retrying on EINTR and partial writes. Async-signal-safe.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<(), c_int> {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        bytes = bytes.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

/// `ns` nanoseconds (a duration or a monotonic time) as a timespec.
pub fn timespec_of(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Blocks while `word == expected`, up to `timeout_ns`. Spurious wake-ups are possible.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: u64) {
    let ts = timespec_of(timeout_ns);
    // SAFETY: `word` is a live, aligned u32 for the duration of the call; the timeout is valid.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every thread blocked in `futex_wait` on `word`. Async-signal-safe.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// True if `fd` is an open descriptor. Needs no new fd, so it works at EMFILE.
pub fn fd_is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only queries flags of a descriptor number.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Memory that starts zeroed and is never freed.
///
/// # Safety
/// Implementors must be valid when all their bytes are zero (atomics, integers, arrays of them).
pub unsafe trait Zeroable: Sync {}

/// Maps `count` zeroed `T`s that live for the rest of the process.
///
/// The pages are reserved with `MAP_NORESERVE`: untouched parts cost no memory, which is what
/// lets the fd table and the interners size themselves for the worst case up front.
pub fn leak_zeroed_slice<T: Zeroable>(count: usize) -> Option<&'static [T]> {
    let bytes = count.checked_mul(std::mem::size_of::<T>())?;
    if bytes == 0 {
        return Some(&[]);
    }
    // SAFETY: anonymous private mapping with no address hint; checked for MAP_FAILED below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the mapping is page-aligned (so aligned for T), `bytes` long, zero-filled (valid
    // for `Zeroable` types), never unmapped, and not aliased by any other reference.
    Some(unsafe { std::slice::from_raw_parts(p.cast::<T>(), count) })
}

/// Views a slice of machine words as bytes (for hashing and interning stacks).
pub fn words_as_bytes(words: &[usize]) -> &[u8] {
    // SAFETY: usize has no padding and any byte pattern is a valid u8; the length is exact and the
    // lifetime is tied to `words`.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// A NUL-terminated C string from a pointer the program passed to a hooked call.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives the returned slice (the
/// duration of the hooked call).
pub unsafe fn c_bytes<'a>(p: *const libc::c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// A fixed-size array of `N` zeroed `T`s, mapped on first use and never freed.
///
/// # Why
/// The fd table covers every possible fd number and the interners size for the worst case, but a
/// program that opens ten files should pay for one page. Mapping on demand with a CAS keeps the
/// first use lock-free: a thread that loses the race unmaps its copy; nobody ever waits.
pub struct LazySlice<T: Zeroable, const N: usize> {
    ptr: std::sync::atomic::AtomicPtr<T>,
}

// SAFETY: a null pointer is the valid "not mapped yet" state.
unsafe impl<T: Zeroable, const N: usize> Zeroable for LazySlice<T, N> {}

impl<T: Zeroable, const N: usize> Default for LazySlice<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Zeroable, const N: usize> LazySlice<T, N> {
    pub const fn new() -> Self {
        Self {
            ptr: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The array if it has been mapped.
    #[inline(always)]
    pub fn get(&self) -> Option<&'static [T; N]> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was published by `get_or_map` below and points to a
        // never-unmapped, zero-initialized array of exactly N `T`s.
        unsafe { p.cast::<[T; N]>().as_ref() }
    }

    /// The array, mapping it first if needed. `None` only if the kernel refuses the mapping.
    pub fn get_or_map(&self) -> Option<&'static [T; N]> {
        if let Some(a) = self.get() {
            return Some(a);
        }
        let fresh = leak_zeroed_slice::<T>(N)?;
        let fresh_ptr = fresh.as_ptr() as *mut T;
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            fresh_ptr,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => self.get(),
            Err(_) => {
                // SAFETY: the losing mapping was never published, so no reference to it exists
                // besides `fresh`, which is not used after this point.
                unsafe { libc::munmap(fresh_ptr.cast(), N * std::mem::size_of::<T>()) };
                self.get()
            }
        }
    }
}

// SAFETY: atomics are valid when zeroed.
unsafe impl Zeroable for std::sync::atomic::AtomicU64 {}
// SAFETY: atomics are valid when zeroed.
unsafe impl Zeroable for std::sync::atomic::AtomicU32 {}
// SAFETY: atomics are valid when zeroed.
unsafe impl Zeroable for std::sync::atomic::AtomicUsize {}
// SAFETY: every byte pattern is a valid u8.
unsafe impl Zeroable for u8 {}
// SAFETY: an array of zero-valid values is zero-valid.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}

/// A loaded ELF object: its path, load bias, and the address ranges of its executable segments.
#[derive(Clone, Debug)]
pub struct Module {
    pub path: String,
    pub bias: usize,
    pub text: Vec<(usize, usize)>,
}

/// Every loaded object (the main program has an empty name in the loader's list; it is given
/// the path of `/proc/self/exe`). Takes the loader's lock: never call it from a hook.
pub fn modules() -> Vec<Module> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid dl_phdr_info for the duration of the callback, and
        // `data` is the `Vec<Module>` passed to dl_iterate_phdr below.
        unsafe {
            let info = &*info;
            let out = &mut *data.cast::<Vec<Module>>();
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(info.dlpi_name)
                    .to_string_lossy()
                    .into_owned()
            };
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            let bias = info.dlpi_addr as usize;
            let text = phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
                .map(|p| {
                    let start = bias + p.p_vaddr as usize;
                    (start, start + p.p_memsz as usize)
                })
                .collect();
            out.push(Module {
                path: name,
                bias,
                text,
            });
        }
        0
    }
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: `visit` matches the callback signature and only touches `out` through `data`.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut out as *mut Vec<Module>).cast()) };
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    for m in &mut out {
        if m.path.is_empty() {
            m.path = exe.clone();
        }
    }
    out
}

/// The executable range of the module that contains `addr`.
pub fn module_bounds(addr: usize) -> Option<(usize, usize)> {
    modules()
        .into_iter()
        .flat_map(|m| m.text)
        .find(|(lo, hi)| (*lo..*hi).contains(&addr))
}

/// The symbolic name of an errno value fdguard may meet making a process (async-signal-safe,
/// unlike `strerror`).
pub fn errno_name(e: c_int) -> &'static str {
    match e {
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        _ => "an unexpected error",
    }
}

/// Runs `f` with every signal blocked on this thread (a thread it starts inherits the mask),
/// then restores the mask.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigfillset/pthread_sigmask on locally owned sets; the old mask is restored below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    let r = f();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

/// Closes `fd` with the raw system call (no hook, no bookkeeping): for a report child
/// dropping its copies of the program's fds.
pub fn raw_close(fd: c_int) {
    // SAFETY: closing a descriptor number; the caller owns the process's fd table (a child).
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// Closes every fd from `first` to `last` with one raw `close_range` system call (Linux 5.9);
/// false if the kernel lacks it and nothing was closed.
pub fn raw_close_range(first: u32, last: u32) -> bool {
    // SAFETY: closing descriptor numbers; the caller owns the process's fd table (a child).
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) == 0 }
}

/// Ends a report child at once: no atexit handlers, no destructors, no stdio flush.
pub fn exit_now(code: u8) -> ! {
    // SAFETY: _exit never returns and runs nothing of the program's.
    unsafe { libc::_exit(code as c_int) }
}

/// Precise monotonic time in ns, for the accept guard's deadlines (the coarse clock of
/// `monotonic_ns` advances in scheduler ticks, as long as the guard's first 5 ms period).
#[inline]
pub fn precise_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Sleeps until the monotonic time `deadline_ns`; false if a signal ended the sleep early.
///
/// A raw system call rather than `nanosleep`: glibc's wrapper is a cancellation point, and a
/// cancellation unwinding through fdguard's `extern "C"` frames would abort the program.
/// Clobbers `errno`.
pub fn sleep_until(deadline_ns: u64) -> bool {
    let ts = timespec_of(deadline_ns);
    // SAFETY: `ts` is a valid timespec; TIMER_ABSTIME makes the remaining-time pointer unused.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clock_nanosleep,
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts as *const libc::timespec,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    r == 0
}

/// True if `fd` has `O_NONBLOCK` set.
pub fn is_nonblocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL only reads the status flags of a descriptor number.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl != -1 && fl & libc::O_NONBLOCK != 0
}

/// True if `fd` is a socket on which `listen` was called.
pub fn is_listening(fd: c_int) -> bool {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v != 0
}

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
