//! Signals: the calling thread's mask, the dispositions fdguard reads and sets for its report
//! signal (through libc's own `sigaction`, past fdguard's hook), and what a queued signal carries.

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

/// The disposition of `sig` as the kernel has it, asked of libc's own `sigaction` (fdguard's
/// hook would answer with the program's view).
pub fn disposition(sig: i32) -> Option<libc::sigaction> {
    let real = crate::real::sigaction.get()?;
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a query (no new action) into a zeroed, locally owned struct, read only on success.
    unsafe { (real(sig, std::ptr::null(), old.as_mut_ptr()) == 0).then(|| old.assume_init()) }
}

/// Sets the disposition of `sig` with libc's own `sigaction`, bypassing fdguard's hook; returns
/// the errno of a failure.
pub fn set_disposition(sig: i32, act: &libc::sigaction) -> Result<(), i32> {
    let Some(real) = crate::real::sigaction.get() else {
        return Err(libc::ENOSYS);
    };
    // SAFETY: `act` is a complete sigaction; no old action is asked for.
    match unsafe { real(sig, act, std::ptr::null_mut()) } {
        0 => Ok(()),
        _ => Err(super::errno::errno()),
    }
}

/// An action that runs `handler` with `SA_SIGINFO` (and `SA_RESTART`, so that the program's
/// interrupted system calls resume), blocking nothing else while it runs.
pub fn info_action(
    handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
) -> libc::sigaction {
    // SAFETY: a zeroed sigaction is a valid "default" action; its fields are then set.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: sigemptyset on the struct's own, owned mask.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    sa
}

/// The value a signal carries (`sigqueue`'s `sigval`), when it was sent with one.
pub fn queued_value(info: *const libc::siginfo_t) -> Option<u64> {
    if info.is_null() {
        return None;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; `si_value` is valid
    // to read when `si_code` is SI_QUEUE (the union member sigqueue fills).
    unsafe {
        ((*info).si_code == libc::SI_QUEUE).then(|| (*info).si_value().sival_ptr as usize as u64)
    }
}
