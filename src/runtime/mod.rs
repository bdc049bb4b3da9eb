//! Language runtimes whose own frames creation stacks carry (CPython: `python`): which runtime
//! the process runs, the capture of its frames inside a hook, and their names at report time.
//!
//! # Why
//! Native frames of an interpreter name the interpreter (`_PyEval_EvalFrameDefault` thirty
//! times), not the program: the function, file and line a person would look at are in the
//! runtime's own data structures. As for native frames, the hook records raw words (for
//! CPython a code object and an instruction offset); names come once per distinct stack, in
//! the hook while the runtime can still answer (`settle`), or else in the report child, a copy
//! of the process.
//!
//! # How
//! - `init` (at load) recognises a runtime already in the process; `recognised` records one
//!   found later (a JVM loaded after start, whose agent says so). Which runtime is read is one
//!   relaxed load (`reading`): programs without a runtime pay that and nothing else.
//! - `capture` (in hooks): the thread's runtime frames, innermost first, into `RawFrame`s;
//!   allocation-free, lock-free, and reading memory only where it is known to be mapped
//!   (`memory`), bounded by the slice it fills (the configured depth).
//! - `stack` interns them after the native frames: `[native..., MARK, kind, code, at, ...]`;
//!   the first time a stack is seen, `settle` may name its frames there and then (CPython:
//!   function, file and line into an interner), and the stack is interned again in that form.
//! - `resolve` (report child): `RawFrame`s to report frames with `module` the language
//!   (`"python"`); `symbolize` keeps the native frames above the first one in the runtime's own
//!   modules (`is_runtime_module`), then these, and nothing below.
//! - `header`: what the report says of the runtime (its version, whether its frames are read,
//!   and if not why).
#![allow(unsafe_code)]

pub mod java;
mod memory;
mod python;
mod python_code;
mod python_layout;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use fdguard_core::report::{Frame, RuntimeInfo};

/// One runtime frame as captured: for CPython the code object and the byte offset of the
/// instruction in its bytecode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFrame {
    pub code: usize,
    pub at: usize,
}

/// A runtime whose frames fdguard reads. The discriminant is the word stored after `MARK` in
/// an interned stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    Python = 1,
    Java = 2,
}

impl Kind {
    pub fn word(self) -> usize {
        self as usize
    }

    pub fn from_word(word: usize) -> Option<Kind> {
        [Kind::Python, Kind::Java]
            .into_iter()
            .find(|k| k.word() == word)
    }
}

/// Separates a stack's native return addresses from its runtime frames: never a return
/// address (the last byte of the address space holds no code).
pub const MARK: usize = usize::MAX;

/// The runtime whose frames `capture` reads: 0 for none (none recognised, or one fdguard
/// cannot read), else a `Kind`'s word.
static READING: AtomicUsize = AtomicUsize::new(0);

/// What the report says of the runtime, once one is recognised.
static HEADER: OnceLock<RuntimeInfo> = OnceLock::new();

/// Recognises a runtime already loaded (at load time: looks symbols up, takes the loader lock).
pub fn init() {
    if let Some((info, reading)) = python::recognise() {
        recognised(info, reading);
    }
}

/// Records the runtime the process runs: what reports say of it, and whether (and as what)
/// `capture` reads its frames. The first runtime recognised stays. Not for hooks (allocates
/// nothing, but `info` was made by the caller).
pub fn recognised(info: RuntimeInfo, reading: Option<Kind>) {
    if HEADER.set(info).is_ok()
        && let Some(kind) = reading
    {
        READING.store(kind.word(), Ordering::Release);
    }
}

/// The runtime whose frames are read: one relaxed load, the whole cost for other programs.
#[inline(always)]
pub fn reading() -> Option<Kind> {
    match READING.load(Ordering::Relaxed) {
        0 => None,
        word => Kind::from_word(word),
    }
}

/// The current thread's runtime frames, innermost first, at most `out.len()`: how many were
/// written. 0 when the thread runs no runtime code (or none is read).
#[inline]
pub fn capture(out: &mut [RawFrame]) -> usize {
    match reading() {
        None => 0,
        Some(Kind::Python) => python::capture(out),
        Some(Kind::Java) => java::capture(out),
    }
}

/// Names a stack's runtime frames the first time it is seen, in the hook, while the runtime
/// can still answer: rewrites them into a form `resolve` reads without the runtime's objects
/// (which may be gone by report time). False, leaving them as captured, when that cannot be
/// done now; `stack` then keeps the captured form, resolved at report time.
pub fn settle(kind: Kind, frames: &mut [RawFrame]) -> bool {
    match kind {
        Kind::Python => python::settle(frames),
        Kind::Java => java::settle(frames),
    }
}

/// Report frames for captured runtime frames (report child): innermost first, `module` the
/// language, no address. Frames that cannot be named (code gone since) are left out, never
/// named wrongly.
pub fn resolve(kind: Kind, frames: &[RawFrame]) -> Vec<Frame> {
    match kind {
        Kind::Python => python::resolve(frames),
        Kind::Java => java::resolve(frames),
    }
}

/// Whether a native return address is in the runtime's own code: the native frames from the
/// first such one down are the runtime at work, left out of stacks with runtime frames (in the
/// hook: one compare a frame).
#[inline]
pub fn is_runtime_code(kind: Kind, ret: usize) -> bool {
    match kind {
        Kind::Python => python::is_interpreter(ret),
        Kind::Java => java::is_runtime_code(ret),
    }
}

/// Whether a native module is the runtime's own machinery (the interpreter, its libraries):
/// frames from the first such one down are replaced by the runtime's frames.
pub fn is_runtime_module(path: &str) -> bool {
    match reading() {
        None => false,
        Some(Kind::Python) => python::is_runtime_module(path),
        Some(Kind::Java) => java::is_runtime_module(path),
    }
}

/// What the report says of the runtime, if one was recognised.
pub fn header() -> Option<RuntimeInfo> {
    HEADER.get().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_never_look_like_the_mark() {
        assert_eq!(Kind::from_word(Kind::Python.word()), Some(Kind::Python));
        assert_eq!(Kind::from_word(0), None);
        assert_eq!(Kind::from_word(MARK), None);
    }
}
