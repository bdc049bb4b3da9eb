//! The calling thread's kernel id: read from glibc's thread descriptor where glibc says where
//! it is (one load), else asked of the kernel.

use std::sync::atomic::{AtomicUsize, Ordering};

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
