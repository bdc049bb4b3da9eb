//! The slow portable path: libgcc's `_Unwind_Backtrace`. Used before
//! `init`, on glibc without `_dl_find_object` and on other architectures.
//! It may take the loader lock on old glibc, so it is not
//! async-signal-safe there; that is the price of having no fast path.

use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;

#[repr(C)]
struct UnwindContext {
    _opaque: [u8; 0],
}

type TraceFn = extern "C" fn(*mut UnwindContext, *mut c_void) -> c_int;

// libgcc_s (or LLVM libunwind) is always linked by Rust's std on Linux.
unsafe extern "C" {
    fn _Unwind_Backtrace(trace: TraceFn, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(ctx: *mut UnwindContext) -> usize;
    fn _Unwind_GetCFA(ctx: *mut UnwindContext) -> usize;
}

const URC_NO_REASON: c_int = 0;
const URC_END_OF_STACK: c_int = 5;

struct Trace<'a> {
    out: &'a mut [MaybeUninit<usize>],
    len: usize,
    /// An address inside the frame of `capture`. libgcc's (and LLVM
    /// libunwind's) `_Unwind_GetCFA` is the stack pointer of the frame
    /// holding the ip, so frames at or below the marker are `capture`'s
    /// own and those of the machinery it called.
    marker: usize,
}

/// Same contract as `super::capture`, with `marker` the address of a local
/// of `capture`'s own frame.
pub(crate) fn capture(out: &mut [MaybeUninit<usize>], marker: usize) -> usize {
    let mut trace = Trace {
        out,
        len: 0,
        marker,
    };
    // SAFETY: `on_frame` only uses `arg` as the `Trace` it points to,
    // which outlives this call and is not otherwise touched meanwhile.
    unsafe { _Unwind_Backtrace(on_frame, (&mut trace as *mut Trace).cast()) };
    trace.len
}

extern "C" fn on_frame(ctx: *mut UnwindContext, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the exclusive `&mut Trace` passed by `capture`.
    let trace = unsafe { &mut *arg.cast::<Trace>() };
    // SAFETY: `ctx` is the live context libgcc handed to this callback.
    let cfa = unsafe { _Unwind_GetCFA(ctx) };
    if cfa <= trace.marker {
        return URC_NO_REASON;
    }
    // SAFETY: as above.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    let Some(slot) = trace.out.get_mut(trace.len).filter(|_| ip != 0) else {
        return URC_END_OF_STACK;
    };
    slot.write(ip);
    trace.len += 1;
    URC_NO_REASON
}
