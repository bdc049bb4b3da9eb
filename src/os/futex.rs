//! Waiting on a word and waking its waiters (the accept guard's thread sleeps this way).

use std::sync::atomic::AtomicU32;

use super::clock::timespec_of;

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
