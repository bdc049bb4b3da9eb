//! CPython 3.11 and later: the thread's interpreter frames, read without the GIL.
//!
//! # Why this is sound without the GIL
//! A thread's own interpreter frames change only when that thread runs Python code, and while
//! it is inside a hook it runs fdguard's: `open`, `socket` and the like are called with the GIL
//! released (or held by this very thread), and nothing else pushes or pops this thread's
//! frames. The code objects the frames point to are kept alive by them. So the hook reads a
//! consistent chain, and stores for each frame only the code object's address and the offset
//! of the instruction in its bytecode; file, function and line are read at report time
//! (`python_code`), in the report child, from the copy's code objects.
//!
//! # How
//! `PyGILState_GetThisThreadState()` is this thread's state (a `pthread_getspecific`; `NULL`
//! for a thread that never ran Python, or before the interpreter is up). Its `native_thread_id`
//! must be the calling thread's tid, which confirms the layout on every capture; then the
//! innermost frame (3.11, 3.12: `tstate->cframe->current_frame`; 3.13: `current_frame`) and the
//! `previous` chain, at most as many frames as asked.
//!
//! # Never a fault
//! Memory is read through `memory::Vouched`. When the thread does not hold the GIL
//! (`PyGILState_Check()` is 0: the io and socket modules release it around `open`, `socket`,
//! `accept`...), its frames are at rest: frames are pushed and popped only with the GIL held,
//! so the chain is whole, and every frame in it, with the generator or coroutine object that
//! holds it, is kept alive by the chain itself; it is read with plain loads. When it holds the
//! GIL, the hook may have interrupted the interpreter in the middle of a push (a C signal
//! handler that opens a file), and a `previous` may be stale: then only the thread state, its
//! current chunk of frames (`datastack_chunk` to `datastack_limit`) and its C stack (3.11's
//! `_PyCFrame`, 3.12 and 3.13's entry frames) are read directly, anything else (generators' and
//! coroutines' frames, which live in their objects) through the kernel, ~0.4 µs a frame. Nothing
//! is read once the interpreter finalizes: it frees the states and frames of the threads still
//! running (daemon threads) under them.

use std::ffi::{CStr, c_void};
use std::sync::OnceLock;

use fdguard_core::program::Runtime;
use fdguard_core::report::RuntimeInfo;

use super::memory::{self, Vouched};
use super::python_code;
use super::python_layout::{self as layout, FrameAt, Layout};
use super::{Kind, RawFrame};
use crate::guard;
use crate::os;
use crate::unwind;

pub use super::python_code::{resolve, settle};

/// What capture and resolution need of the CPython in this process.
pub struct Python {
    pub layout: Layout,
    /// `PyGILState_GetThisThreadState`, `PyGILState_Check`.
    this_thread_state: extern "C" fn() -> *mut c_void,
    holds_gil: extern "C" fn() -> libc::c_int,
    /// `Py_IsInitialized`, and `Py_IsFinalizing` (`_Py_IsFinalizing` before 3.13).
    initialized: extern "C" fn() -> libc::c_int,
    finalizing: extern "C" fn() -> libc::c_int,
    /// `&_Py_NoneStruct`: 3.13's entry frames have it as their code.
    none: usize,
    /// `&PyCode_Type`, `&PyUnicode_Type`, `&PyBytes_Type`: what `ob_type` must be.
    pub code_type: usize,
    pub str_type: usize,
    pub bytes_type: usize,
    /// The module the interpreter is in (libpython, or the executable when linked in), and
    /// its code's address range.
    module: String,
    text: (usize, usize),
}

static PYTHON: OnceLock<Python> = OnceLock::new();

impl Python {
    /// Whether the calling thread's frames are at rest: it does not hold the GIL (see the
    /// module's documentation).
    pub fn at_rest(&self) -> bool {
        (self.holds_gil)() == 0
    }

    /// Whether the interpreter is up and not finalizing: finalization frees the states and
    /// frames of the threads still running (daemon threads), under them.
    pub fn running(&self) -> bool {
        (self.initialized)() != 0 && (self.finalizing)() == 0
    }
}

/// The CPython recognised at load whose frames are read, if any.
pub fn python() -> Option<&'static Python> {
    PYTHON.get()
}

fn symbol(name: &CStr) -> Option<usize> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; load time only.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p as usize)
}

/// `PY_VERSION_HEX` (3.11 and later export it as `Py_Version`), else what `Py_GetVersion`
/// says, as (major, minor, micro).
fn version() -> Option<(u64, (u8, u8, u8))> {
    if let Some(at) = symbol(c"Py_Version") {
        // SAFETY: `Py_Version` is a `const unsigned long` (64 bits) of the loaded interpreter.
        let hex = unsafe { (at as *const u64).read() };
        let part = |shift: u32| ((hex >> shift) & 0xff) as u8;
        return Some((hex, (part(24), part(16), part(8))));
    }
    let get = symbol(c"Py_GetVersion")?;
    // SAFETY: `const char *Py_GetVersion(void)`, which formats a static buffer and needs no
    // initialized interpreter (load time, once).
    let text = unsafe {
        let f: extern "C" fn() -> *const libc::c_char = std::mem::transmute(get);
        CStr::from_ptr(f()).to_string_lossy().into_owned()
    };
    let mut parts = text
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u8>().ok());
    let (major, minor, micro) = (parts.next()??, parts.next()??, parts.next()?.unwrap_or(0));
    Some((0, (major, minor, micro)))
}

/// The module holding `addr` (the loader's list: it names modules as reports do, the
/// executable by `/proc/self/exe`), and the executable range around `addr`.
fn module_of(addr: usize) -> Option<(String, (usize, usize))> {
    os::loader::modules().into_iter().find_map(|m| {
        let text = m.text.iter().find(|(lo, hi)| (*lo..*hi).contains(&addr))?;
        Some((m.path, *text))
    })
}

/// The layout of this build, or why there is none.
fn layout_of(hex: u64, (major, minor, _): (u8, u8, u8)) -> Result<Layout, String> {
    match (major, minor) {
        (3, 11) => Ok(layout::PY311),
        (3, 12) => Ok(layout::PY312),
        (3, 13) => {
            let runtime = symbol(c"_PyRuntime").ok_or("no _PyRuntime")?;
            let mut bytes = [0u8; layout::DEBUG_WORDS * 8];
            if !memory::copy(std::process::id(), runtime, &mut bytes) {
                return Err("_PyRuntime cannot be read".into());
            }
            let words: Vec<u64> = bytes
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                .collect();
            layout::from_debug_offsets(&words, hex).map_err(String::from)
        }
        version if version < (3, 11) => Err(
            "Python before 3.11 keeps its frames as objects fdguard does not read; 3.11 and \
             later are read"
                .into(),
        ),
        _ => Err("a version newer than this fdguard knows: it reads 3.11 to 3.13".into()),
    }
}

/// The interpreter's function at `addr`, of no argument, returning an int.
///
/// # Safety
/// `addr` must be such a function.
unsafe fn int_fn(addr: usize) -> extern "C" fn() -> libc::c_int {
    // SAFETY: the caller's promise; a function pointer is the size of a usize.
    unsafe { std::mem::transmute::<usize, extern "C" fn() -> libc::c_int>(addr) }
}

/// Whether CPython is in the process (its thread-state function is), and if so what the
/// report says of it and whether its frames are read. At load time.
pub fn recognise() -> Option<(RuntimeInfo, Option<Kind>)> {
    let this_thread_state = symbol(c"PyGILState_GetThisThreadState")?;
    let (hex, (major, minor, micro)) = version()?;
    let mut info = RuntimeInfo {
        name: Runtime::Python,
        version: format!("{major}.{minor}.{micro}"),
        ..RuntimeInfo::default()
    };
    // What capture and resolution use besides the layout: a 3.11+ interpreter exports them all.
    let finalizing = symbol(c"Py_IsFinalizing").or_else(|| symbol(c"_Py_IsFinalizing"));
    let used = [
        c"PyGILState_Check",
        c"Py_IsInitialized",
        c"_Py_NoneStruct",
        c"PyCode_Type",
        c"PyUnicode_Type",
        c"PyBytes_Type",
    ]
    .map(symbol);
    let layout = layout_of(hex, (major, minor, micro)).and_then(|l| match (used, finalizing) {
        ([Some(_), Some(_), Some(_), Some(_), Some(_), Some(_)], Some(_)) => Ok(l),
        _ => Err("it does not export what fdguard reads its frames with".into()),
    });
    let layout = match layout {
        Ok(l) => l,
        Err(why) => {
            info.why = Some(why);
            return Some((info, None));
        }
    };
    let [
        holds_gil,
        initialized,
        none,
        code_type,
        str_type,
        bytes_type,
    ] = used.map(Option::unwrap_or_default);
    let finalizing = finalizing.unwrap_or_default();
    let (module, text) = module_of(this_thread_state).unwrap_or_default();
    let python = Python {
        layout,
        // SAFETY: the interpreter's `PyThreadState *PyGILState_GetThisThreadState(void)`,
        // `int PyGILState_Check(void)`, `int Py_IsInitialized(void)` and
        // `int Py_IsFinalizing(void)`: they only read (a thread-specific value, the runtime's
        // current thread state and flags), without a lock.
        this_thread_state: unsafe {
            std::mem::transmute::<usize, extern "C" fn() -> *mut c_void>(this_thread_state)
        },
        holds_gil: unsafe { int_fn(holds_gil) },
        initialized: unsafe { int_fn(initialized) },
        finalizing: unsafe { int_fn(finalizing) },
        none,
        code_type,
        str_type,
        bytes_type,
        module,
        text,
    };
    if PYTHON.set(python).is_err() {
        return None;
    }
    info.frames = true;
    Some((info, Some(Kind::Python)))
}

/// The interpreter's own modules: libpython (or the executable it is linked into) and the
/// standard library's C modules (`lib-dynload`): their frames are the interpreter at work.
pub fn is_runtime_module(path: &str) -> bool {
    let own = python().is_some_and(|p| !p.module.is_empty() && p.module == path);
    own || path
        .rsplit_once('/')
        .is_some_and(|(dir, _)| dir.ends_with("/lib-dynload"))
}

/// Whether a return address is in the interpreter's own code (libpython, or the executable it
/// is linked into): the native frames from there down are the interpreter at work.
pub fn is_interpreter(ret: usize) -> bool {
    python().is_some_and(|p| (p.text.0..p.text.1).contains(&ret.wrapping_sub(1)))
}

/// This thread's interpreter frames, innermost first (see the module's documentation).
pub fn capture(out: &mut [RawFrame]) -> usize {
    let Some(py) = python() else { return 0 };
    let l = &py.layout;
    if !py.running() {
        return 0;
    }
    let tstate = (py.this_thread_state)() as usize;
    if tstate == 0 || out.is_empty() {
        return 0;
    }
    let tid = guard::tid();
    let mut mem = Vouched::new(tid);
    let at_rest = py.at_rest();
    if at_rest {
        // SAFETY: without the GIL this thread's frames are at rest, and everything the chain
        // leads to is alive (see the module's documentation); the layout is confirmed below
        // before anything but the thread state is read.
        unsafe { mem.vouch_for_all() };
    }
    // SAFETY: the interpreter handed out `tstate` as this thread's live state, which only this
    // thread frees; `ts_size` is the size of the struct in this build.
    unsafe { mem.vouch(tstate, tstate + l.ts_size) };
    if mem.word(tstate + l.ts_native_thread_id) != Some(tid as usize) {
        return 0;
    }
    let chunk = mem.word(tstate + l.ts_datastack_chunk).unwrap_or(0);
    let limit = mem.word(tstate + l.ts_datastack_chunk + 16).unwrap_or(0);
    let size = limit.wrapping_sub(chunk);
    // A chunk being pushed when the hook interrupted the interpreter (not at rest) may have
    // its start stored and not yet its limit: the chunk's own size (`_PyStackChunk.size`,
    // read through the kernel) must agree.
    let whole = at_rest || mem.word(chunk.wrapping_add(8)) == Some(size);
    if chunk != 0 && size.is_power_of_two() && size <= 1 << 30 && whole {
        // SAFETY: the thread's current chunk of frames, `[chunk, limit)` (a chunk's limit is
        // its start plus its size, a power of two), allocated by and for this thread and freed
        // only when it pops out of it, which it cannot do while inside the hook.
        unsafe { mem.vouch(chunk, limit) };
    }
    let here = &tid as *const u32 as usize;
    let stack_end = unwind::stack_bound(here);
    if stack_end != usize::MAX {
        // SAFETY: the calling thread's stack from here up is mapped (the unwinder reads it the
        // same way) and stays so while the thread is in the hook.
        unsafe { mem.vouch(here, stack_end) };
    }
    let frame = match l.ts_frame {
        FrameAt::Direct(at) => mem.word(tstate + at),
        FrameAt::CFrame {
            cframe,
            current_frame,
        } => mem
            .word(tstate + cframe)
            .and_then(|cf| mem.word(cf.wrapping_add(current_frame))),
    }
    .unwrap_or(0);
    walk(py, &mem, frame, out)
}

/// Follows `previous` from `frame`, writing the frames that run code (not the interpreter's
/// own entry frames); stops at the end of the chain, at memory that is not there, or when
/// `out` is full.
fn walk(py: &Python, mem: &Vouched, mut frame: usize, out: &mut [RawFrame]) -> usize {
    let l = &py.layout;
    let fields = [l.fr_code, l.fr_instr, l.fr_previous, l.fr_owner];
    let mut n = 0;
    // Entry frames are skipped, but they alternate with real ones at worst.
    let mut steps = 2 * out.len() + 2;
    while frame != 0 && frame.is_multiple_of(8) && n < out.len() && steps > 0 {
        steps -= 1;
        let Some([code, instr, previous, owner]) = mem.words(frame, l.frame_read, fields) else {
            break;
        };
        let entry = l.skip_owner.is_some_and(|o| o == owner as u8) || code == py.none;
        if !entry
            && code != 0
            && let Some(slot) = out.get_mut(n)
        {
            *slot = RawFrame {
                code,
                at: python_code::raw_offset(
                    instr.wrapping_sub(code.wrapping_add(l.co_code_adaptive)),
                ),
            };
            n += 1;
        }
        frame = previous;
    }
    n
}
