//! HotSpot JVMs: each creation stack carries the thread's Java frames (method and bytecode
//! index, inlined frames included), named `package.Class.method` with file and line.
//!
//! # How a capture works
//! The hook asks the JVM itself, through `AsyncGetCallTrace`, the walk HotSpot exports for
//! profilers: made to run anywhere (in signal handlers), it takes no lock, allocates nothing,
//! never blocks and never makes the thread wait for a safepoint, and it walks interpreted and
//! compiled frames alike, giving each virtual frame (an inlined method too) as a jmethodID and
//! a bytecode index. It needs what `agent` sets up: a JVM TI environment with `ClassLoad`
//! events on, and a jmethodID for every method (made for each class as it is prepared, and for
//! the classes loaded before). Before calling anything in the JVM, the hook makes sure the
//! thread is one HotSpot knows (its `Thread*` is in HotSpot's thread key: only then does
//! `GetEnv` not have to allocate the JVM's thread-local storage) and a Java thread (`GetEnv`).
//! The walk gives up while a garbage collection is under way; a thread that may call JVM TI
//! (below) then asks its `GetStackTrace`, which waits for the collection's end as the thread
//! would on its way back to Java.
//!
//! # Names
//! A jmethodID means nothing to the report child, which cannot call the JVM: the names of
//! each (method, index) pair are asked of JVM TI the first time a stack holding it is seen
//! (`settle`), in the capturing thread, when that thread may call JVM TI: a Java thread in
//! native code (HotSpot's thread state, read at the offset the JVM publishes in
//! `gHotSpotVMStructs`), which is where a Java program's `open`s and `socket`s are made (JNI
//! methods such as `FileInputStream.open0`), and not inside a signal handler
//! (`outside_signal_handlers`: JVM TI allocates, and the handler may have interrupted
//! `malloc`). A stack first seen where JVM TI may not be called (the JVM's own code opening a
//! jar for a class it loads, a handler) is named the next time it is seen where it may, or its
//! frames stay unnamed and are left out of reports, never named wrongly. The names live in
//! fdguard's memory (`names`), where the child reads them. Native frames are kept down to the
//! first one in the code cache (the interpreter's or compiled code): a method interpreted and
//! compiled is one stack.
//!
//! # What it costs
//! The walk: ~50 ns a compiled frame, ~100-130 ns an interpreted one (HotSpot looks the
//! interpreter's code blob up for each frame), ~1.7 µs for 33 compiled frames; a
//! `FileInputStream` open+close 30 calls deep takes ~2× its time without fdguard
//! (`scripts/bench.sh`'s runtimes section). A stack seen before costs nothing more; a new one,
//! five JVM TI calls per pair not named yet. Programs without a JVM pay one load
//! (`runtime::reading`).

mod agent;
mod jvmti;
mod names;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use fdguard_core::config::MAX_DEPTH;
use fdguard_core::report::Frame;

use super::RawFrame;
use crate::guard;
use jvmti::{FrameInfo, Jvmti, Vm};

pub use agent::{attached, detached};

/// `ASGCT_CallFrame`: a bytecode index (-3 in a native method), then the method.
#[repr(C)]
#[derive(Clone, Copy)]
struct CallFrame {
    bci: i32,
    method: usize,
}

/// `ASGCT_CallTrace`: the thread's JNI environment, how many frames (negative: why none),
/// where they go.
#[repr(C)]
struct CallTrace {
    env: *mut std::ffi::c_void,
    frames_or_why: i32,
    frames: *mut CallFrame,
}

/// `AsyncGetCallTrace(trace, depth, ucontext)`.
type AsyncGetCallTrace = unsafe extern "C" fn(*mut CallTrace, i32, *mut std::ffi::c_void);

/// What a capture needs of the JVM, found once (see `agent::ready`).
struct Hotspot {
    vm: Vm,
    jvmti: Jvmti,
    walk: AsyncGetCallTrace,
    /// HotSpot's `pthread_key_t` for the current thread's `Thread*`.
    thread_key: libc::pthread_key_t,
    /// Where a `JavaThread` keeps its `JNIEnv`, and its thread state (`_thread_state`).
    env_offset: usize,
    state_offset: usize,
    /// `_thread_in_native`: the state in which a thread may call JVM TI.
    in_native: i32,
    /// Where a `JavaThread` keeps its stack's top and size (`_stack_base`, `_stack_size`), and
    /// the stack pointer of its last Java frame (`_anchor._last_Java_sp`): the native code it
    /// runs is between that and the current stack pointer.
    stack_base_offset: usize,
    stack_size_offset: usize,
    last_java_sp_offset: usize,
    /// libc's signal return trampoline (`sa_restorer`), which signal frames return to; 0 when
    /// no handler of the process says.
    restorer: usize,
    /// The JDK's directory, with a trailing `/`: its libraries are the runtime's own.
    home: String,
    /// The code cache's bounds (`CodeCache::_low_bound`, `_high_bound`).
    code_cache: (usize, usize),
}

static HOTSPOT: OnceLock<Hotspot> = OnceLock::new();

/// Whether captures walk the JVM's frames: from the set-up until the JVM dies or fdguard is
/// detached.
static LIVE: AtomicBool = AtomicBool::new(false);

/// The JVM's bytecode index for "no bytecode" (a native method), as JVM TI gives it.
const NO_BCI: i32 = -1;

/// This thread's Java frames, innermost first, at most `out.len()` (see the module's
/// documentation).
pub fn capture(out: &mut [RawFrame]) -> usize {
    let Some(hs) = HOTSPOT.get() else { return 0 };
    if out.is_empty() || !LIVE.load(Ordering::Relaxed) {
        return 0;
    }
    let Some((thread, jni)) = java_thread(hs) else {
        return 0;
    };
    // The walk writes its frames over `out` (as many bytes per frame), each read back before
    // it is rewritten as a `RawFrame`: no buffer of its own to clear on every capture.
    const _: () = assert!(size_of::<CallFrame>() == size_of::<RawFrame>());
    const _: () = assert!(align_of::<CallFrame>() <= align_of::<RawFrame>());
    let want = out.len().min(MAX_DEPTH);
    let walked = out.as_mut_ptr().cast::<CallFrame>();
    let mut trace = CallTrace {
        env: jni.0,
        frames_or_why: 0,
        frames: walked,
    };
    // SAFETY: the trace names this thread's JNI environment and room for `want` frames (in
    // `out`); the walk is made for any context and reads only the JVM's own structures.
    unsafe { (hs.walk)(&mut trace, want as i32, std::ptr::null_mut()) };
    match usize::try_from(trace.frames_or_why) {
        Ok(n) => {
            let mut kept = 0;
            for i in 0..n.min(want) {
                // SAFETY: the walk wrote frame `i` (i < n <= want <= out.len()), which is read
                // before the slot `kept <= i` is rewritten, both through `walked`.
                unsafe {
                    let f = walked.add(i).read();
                    if f.method != 0 {
                        let bci = if f.bci < 0 { NO_BCI } else { f.bci };
                        walked
                            .cast::<RawFrame>()
                            .add(kept)
                            .write(raw(f.method, bci));
                        kept += 1;
                    }
                }
            }
            kept
        }
        // A collection under way (or a frame it moved): JVM TI waits for its end.
        Err(_) if may_call_jvmti(hs, thread) => {
            let mut infos = [FrameInfo::default(); MAX_DEPTH];
            let got = hs.jvmti.stack_trace(&mut infos[..want]).unwrap_or(0);
            fill(
                out,
                infos.iter().take(got).map(|f| {
                    (
                        f.method as usize,
                        i32::try_from(f.location).unwrap_or(NO_BCI),
                    )
                }),
            )
        }
        Err(_) => 0,
    }
}

/// In a fork child of a JVM (its only thread a copy of the forking one, the VM thread gone):
/// no more walks or JVM TI calls, which could wait for a safepoint that no thread ends. Such a
/// child runs no Java code, only native code up to its `exec`.
pub fn after_fork() {
    LIVE.store(false, Ordering::Relaxed);
}

/// This thread's `JavaThread*` and JNI environment, if it is a Java thread. HotSpot's thread
/// key is asked first: a thread without it set never ran HotSpot's code, and `GetEnv` would
/// allocate its thread-local storage.
fn java_thread(hs: &Hotspot) -> Option<(usize, jvmti::Jni)> {
    // SAFETY: pthread_getspecific only reads this thread's descriptor (async-signal-safe);
    // `thread_key` is HotSpot's key, created when the JVM started and never deleted.
    let thread = unsafe { libc::pthread_getspecific(hs.thread_key) } as usize;
    if thread == 0 {
        return None;
    }
    let jni = hs.vm.jni()?;
    (jni.0 as usize == thread + hs.env_offset).then_some((thread, jni))
}

/// Whether this thread (`thread`, its JavaThread) may call JVM TI now: in native code (its
/// HotSpot state) and outside any signal handler.
fn may_call_jvmti(hs: &Hotspot, thread: usize) -> bool {
    // SAFETY: `thread` is this thread's live JavaThread, and `state_offset` its
    // `_thread_state`, a 32-bit field HotSpot publishes.
    let state = unsafe { ((thread + hs.state_offset) as *const i32).read_volatile() };
    state == hs.in_native && outside_signal_handlers(hs, thread)
}

/// Whether this thread, a Java thread in native code, runs outside any signal handler, so that
/// it may call JVM TI (which allocates, and may wait for a safepoint: a handler may have
/// interrupted `malloc` holding its lock). Outside one, the stack pointer is on the thread's
/// own stack (not an alternate signal stack) below its last Java frame, and no signal frame
/// lies between them: the kernel's, the address of libc's trampoline followed by a `ucontext`
/// (its flags small, no link). A word that only looks like one keeps names for later.
#[inline(never)]
fn outside_signal_handlers(hs: &Hotspot, thread: usize) -> bool {
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    // SAFETY: `thread` is this thread's live JavaThread; the offsets are fields HotSpot
    // publishes; below, only words of this thread's own stack between its stack pointer and
    // its last Java frame are read, all mapped while it runs.
    let word = |at: usize| unsafe { (at as *const usize).read_volatile() };
    let base = word(thread + hs.stack_base_offset);
    let bottom = base.saturating_sub(word(thread + hs.stack_size_offset));
    let top = word(thread + hs.last_java_sp_offset);
    if !(bottom < sp && sp < top && top <= base) {
        return false;
    }
    hs.restorer == 0
        || !(sp.next_multiple_of(8)..top.saturating_sub(24))
            .step_by(8)
            .any(|at| is_signal_frame(&word, at, hs.restorer))
}

/// Whether the words at `at` (read with `word`) are a signal frame returning to `restorer`.
fn is_signal_frame(word: &impl Fn(usize) -> usize, at: usize, restorer: usize) -> bool {
    word(at) == restorer && word(at + 8) & !UC_FLAGS_KNOWN == 0 && word(at + 16) == 0
}

/// `UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS`: the only flags the kernel sets in
/// a signal frame's `ucontext`.
const UC_FLAGS_KNOWN: usize = 0x7;

/// Writes the (method, bytecode index) pairs that have a method into `out`; how many.
fn fill(out: &mut [RawFrame], frames: impl Iterator<Item = (usize, i32)>) -> usize {
    let mut n = 0;
    for ((method, bci), slot) in frames.filter(|(m, _)| *m != 0).zip(out.iter_mut()) {
        *slot = raw(method, bci);
        n += 1;
    }
    n
}

fn raw(method: usize, bci: i32) -> RawFrame {
    RawFrame {
        code: method,
        at: bci as isize as usize,
    }
}

fn key_of(f: &RawFrame) -> Option<u64> {
    names::key(f.code, f.at as isize as i32)
}

/// Names the frames of a stack seen for the first time (`runtime::settle`): those not named
/// yet are asked of the JVM, if this thread may call it now. The frames stay as captured (the
/// names are kept by method and index); false when they cannot be named now, to try again the
/// next time the stack is seen.
pub fn settle(frames: &mut [RawFrame]) -> bool {
    let mut new = frames
        .iter()
        .filter_map(key_of)
        .filter(|k| !names::is_named(*k))
        .peekable();
    if new.peek().is_none() {
        return true;
    }
    let Some(hs) = HOTSPOT.get() else {
        return false;
    };
    match java_thread(hs) {
        Some((thread, jni)) if may_call_jvmti(hs, thread) => {
            // The JVM's own work: nothing it might open on the way is the program's.
            guard::compound(|| new.for_each(|k| names::name(hs.jvmti, jni, k)));
            true
        }
        _ => false,
    }
}

/// Whether a native return address is in HotSpot's code cache (the interpreter, JIT-compiled
/// methods, their stubs): the Java frames stand for it and for what is below.
#[inline]
pub fn is_runtime_code(ret: usize) -> bool {
    HOTSPOT
        .get()
        .is_some_and(|hs| (hs.code_cache.0..hs.code_cache.1).contains(&ret))
}

/// Report frames for captured Java frames (report child): those named, innermost first.
pub fn resolve(frames: &[RawFrame]) -> Vec<Frame> {
    frames
        .iter()
        .filter_map(|f| names::frame(key_of(f)?))
        .collect()
}

/// The JDK's own libraries (`libjava.so`, `libnio.so`, `libjvm.so`, ...): the Java frames
/// replace them and what is below.
pub fn is_runtime_module(path: &str) -> bool {
    HOTSPOT
        .get()
        .is_some_and(|hs| path.starts_with(hs.home.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_frames_are_the_restorer_then_a_ucontext() {
        const RESTORER: usize = 0x7f00_0000_1234;
        let stack = [
            7, RESTORER, 0x7, 0, 0x5555, RESTORER, 0x100, 0, RESTORER, 0x1, 0x9,
        ];
        let word = |at: usize| stack[at / 8];
        let frames: Vec<usize> = (0..stack.len() - 2)
            .filter(|i| is_signal_frame(&word, i * 8, RESTORER))
            .collect();
        // The restorer's address alone, or before odd flags or a link, is no frame.
        assert_eq!(frames, vec![1]);
    }

    #[test]
    fn frames_keep_their_method_and_index() {
        let mut out = [RawFrame::default(); 4];
        let n = fill(&mut out, [(0x10, 3), (0, 4), (0x20, NO_BCI)].into_iter());
        assert_eq!(n, 2);
        assert_eq!(out[0], RawFrame { code: 0x10, at: 3 });
        assert_eq!(key_of(&out[1]), names::key(0x20, NO_BCI));
    }
}
