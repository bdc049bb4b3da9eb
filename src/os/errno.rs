//! The calling thread's `errno`, located once where a hook saves and restores it, and the
//! names of the values fdguard reports.

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
