//! Clocks and sleeping. Two monotonic clocks, for two needs: the coarse one (a scheduler tick,
//! a few ns to read) stamps fds on the hot path; the precise one times the accept guard's
//! pauses and every sleep and deadline.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::c_int;

/// The vDSO's own `clock_gettime`, found at load (0: not found, libc's is used). Called
/// directly, a clock read skips libc's wrapper: fewer instruction-cache lines on every
/// creation, where each costs several ns after a system call.
static VDSO_CLOCK: AtomicUsize = AtomicUsize::new(0);

type ClockFn = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> c_int;

/// Finds the vDSO's `clock_gettime` (at load, before any hook tracks).
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

/// Coarse monotonic time (`CLOCK_MONOTONIC_COARSE`), for fd ages and rate limits: a plain vDSO
/// read (a few ns) on every creation, and its resolution (one scheduler tick) is far finer than
/// the milliseconds a report shows. Not for deadlines: see `precise_ns`.
#[inline]
pub fn coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Wall-clock time in ns since the epoch (report timestamps only).
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Precise monotonic time in ns (`CLOCK_MONOTONIC`, the clock `sleep_until` sleeps on), for
/// deadlines and the accept guard's pauses: the coarse clock of `coarse_ns` advances in
/// scheduler ticks, as long as the guard's first 5 ms period.
#[inline]
pub fn precise_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `ns` nanoseconds (a duration or a monotonic time) as a timespec.
pub fn timespec_of(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
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
