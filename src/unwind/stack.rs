//! An upper bound for the current thread's stack, so the walk never reads
//! above it even when it is fed bad CFI or a corrupted stack.
//!
//! Exact bounds (`pthread_getattr_np`) lock and, for the main thread, read
//! /proc, so instead we use two facts about glibc that cost one call:
//! - threads it creates have their TCB (the thread pointer) just above
//!   their stack, in the same allocation;
//! - the main thread's frames all lie below `__libc_stack_end`.
//!
//! Any other stack (raw clone, fibers above the TCB) gets no bound beyond
//! the per-frame size limit of the walk.

use core::sync::atomic::{AtomicUsize, Ordering};

static MAIN_STACK_END: AtomicUsize = AtomicUsize::new(0);

/// Reads `__libc_stack_end` once. Takes the loader lock: load time only.
pub(crate) fn init() {
    // SAFETY: dlsym is given RTLD_DEFAULT and a NUL-terminated name.
    let var = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_stack_end".as_ptr()) };
    if !var.is_null() {
        // SAFETY: `__libc_stack_end` is a `void *` set by ld.so before any
        // user code runs and never written again.
        let end = unsafe { core::ptr::read(var as *const usize) };
        MAIN_STACK_END.store(end, Ordering::Relaxed);
    }
}

/// The address every frame of a walk starting at `sp` must stay below.
#[inline]
pub(crate) fn limit(sp: usize) -> usize {
    let tcb = thread_pointer();
    if sp < tcb {
        return tcb;
    }
    let main_end = MAIN_STACK_END.load(Ordering::Relaxed);
    if sp < main_end {
        return main_end;
    }
    usize::MAX
}

/// The thread pointer (what `pthread_self` returns on x86_64 glibc), without calling it: the
/// x86-64 TLS ABI keeps the thread pointer itself in the first word of the TCB, at `%fs:0`.
#[inline(always)]
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reads one word through %fs, which every x86-64 Linux thread has pointing at its
    // TCB; touches no other memory, neither the stack nor the flags.
    unsafe {
        core::arch::asm!("mov {tp}, qword ptr fs:[0]", tp = out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}
