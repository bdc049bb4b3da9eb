//! `Symbolizer`: return addresses to function, file and line, in report children only.
//!
//! Every frame carries module + offset, computed from the loader's list in memory, so a report
//! is useful even when debug info cannot be read (no fd free at EMFILE, stripped binaries):
//! `addr2line -e MODULE OFFSET` finds the line later.
#![allow(unsafe_code)]

use std::cell::OnceCell;
use std::ffi::CStr;

use crate::os::{self, loader::Module};
use crate::perfmap::{self, PerfMap};
use crate::runtime::{self, RawFrame};
use crate::symtab::SymbolTables;
use crate::unwind;
use fdguard_core::report::Frame;

pub struct Symbolizer {
    /// The main program's path (the loader's name for it is empty).
    exe: String,
    /// The loader's list, only where `_dl_find_object` is missing (glibc < 2.35): building it
    /// takes the loader lock, which a thread that was not copied into a report child may hold.
    listed: OnceCell<Vec<Module>>,
    /// False when symbolizing in the program's own process (no report child could be made):
    /// reading debug info would open files there.
    use_debug_info: bool,
    /// Names of JIT code (read only where debug info is).
    jit: PerfMap,
    /// Modules' own symbol tables (read only where debug info is).
    symtabs: SymbolTables,
}

impl Symbolizer {
    pub fn new(use_debug_info: bool) -> Self {
        Self {
            exe: std::fs::read_link("/proc/self/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            listed: OnceCell::new(),
            use_debug_info,
            jit: PerfMap::default(),
            symtabs: SymbolTables::default(),
        }
    }

    /// The function at `frame` from its module file's `.symtab`: for a library loaded after
    /// `backtrace` listed them (see `symtab`).
    fn own_symbol_table(&self, frame: &Frame) -> Option<String> {
        match (&frame.module, frame.offset) {
            (Some(path), Some(offset)) if self.use_debug_info => {
                self.symtabs.function(path, offset)
            }
            _ => None,
        }
    }

    /// The path and load bias of the object holding `pc`.
    fn module_of(&self, pc: usize) -> Option<(String, usize)> {
        if let Some((bias, name)) = unwind::loaded_object(pc) {
            let path = match name.to_bytes() {
                [] => self.exe.clone(),
                _ => name.to_string_lossy().into_owned(),
            };
            return Some((path, bias));
        }
        if unwind::finds_objects_lock_free() {
            return None; // in no object (JIT code): the loader's list would not hold it either
        }
        self.listed
            .get_or_init(os::loader::modules)
            .iter()
            .find(|m| m.text.iter().any(|(lo, hi)| (*lo..*hi).contains(&pc)))
            .map(|m| (m.path.clone(), m.bias))
    }

    /// Resolves a captured stack; inlined calls become frames of their own. Leading frames
    /// inside libc and Rust's std (the wrappers the program called) are left out. A stack
    /// with a runtime's frames (after `runtime::MARK`: see `stack`) is the native frames above
    /// the first one in the runtime's own modules (a C extension's, say), then the runtime's
    /// frames, and nothing below: the interpreter's machinery, and what started it, are not the
    /// program (`stack` cuts them in the hook already).
    pub fn frames(&self, words: &[usize]) -> Vec<Frame> {
        let (addrs, managed) = match words.iter().position(|w| *w == runtime::MARK) {
            Some(mark) => (&words[..mark], runtime_frames(&words[mark + 1..])),
            None => (words, Vec::new()),
        };
        let mut out = self.native(addrs);
        keep_javascript_machinery_out(&mut out);
        if !managed.is_empty() {
            let above = out
                .iter()
                .position(|f| f.module.as_deref().is_some_and(runtime::is_runtime_module))
                .unwrap_or(out.len());
            out.truncate(above);
            out.extend(managed);
        }
        out
    }

    fn native(&self, addrs: &[usize]) -> Vec<Frame> {
        let mut out = Vec::new();
        for &addr in addrs.iter().take_while(|a| **a != 0) {
            // A return address points after the call; the call itself is one byte earlier.
            let pc = addr.saturating_sub(1);
            let module = self.module_of(pc);
            let base = Frame {
                addr: addr as u64,
                offset: module.as_ref().map(|(_, bias)| (pc - bias) as u64),
                module: module.map(|(path, _)| path),
                ..Frame::default()
            };
            let mut resolved = Vec::new();
            if self.use_debug_info {
                backtrace::resolve(pc as *mut libc::c_void, |sym| {
                    resolved.push(Frame {
                        function: sym.name().map(|n| format!("{n:#}")),
                        file: sym.filename().map(|p| p.display().to_string()),
                        line: sym.lineno(),
                        ..base.clone()
                    });
                });
            }
            if resolved.iter().all(|f| f.function.is_none()) {
                let named = dynamic_symbol(pc).or_else(|| self.own_symbol_table(&base));
                resolved = vec![match named {
                    Some(name) => Frame {
                        function: Some(name),
                        ..base
                    },
                    // In no object: code a JIT made, which the runtime's perf map may name.
                    None if self.use_debug_info && base.module.is_none() => {
                        self.jit.frame(pc, base)
                    }
                    None => base,
                }];
            }
            out.extend(resolved);
        }
        let wrappers = out.iter().take_while(|f| is_wrapper(f)).count();
        if wrappers < out.len() {
            out.drain(..wrappers);
        }
        // Like valgrind, stop at `main`: what runs below it is the C runtime.
        if let Some(main) = out
            .iter()
            .position(|f| f.function.as_deref() == Some("main"))
        {
            out.truncate(main + 1);
        }
        out
    }
}

/// In a stack with JavaScript frames (named from V8's perf map), what a JavaScript programmer
/// calls the stack: V8's own frames (API call helpers, builtins, code stubs the map does not
/// name) are left out, and so is everything below the outermost JavaScript frame (node's
/// startup, the event loop). A function called from interpreted code and from compiled code
/// goes through different V8 machinery; without it, both walks are one place
/// (`Frame::site`), as for Java and Python. node's own C++ (the binding JavaScript called)
/// and libuv stay.
fn keep_javascript_machinery_out(frames: &mut Vec<Frame>) {
    let Some(outermost) = frames
        .iter()
        .rposition(|f| f.module.as_deref() == Some(perfmap::JAVASCRIPT))
    else {
        return;
    };
    frames.truncate(outermost + 1);
    frames.retain(|f| !is_v8_machinery(f));
}

/// V8's internals and builtins, and code in no object that no perf map entry names (V8's
/// stubs: node's map names only JavaScript functions).
fn is_v8_machinery(f: &Frame) -> bool {
    match (&f.function, &f.module) {
        (Some(name), _) => name.starts_with("v8::internal::") || name.starts_with("Builtins_"),
        (None, module) => module.is_none(),
    }
}

/// The frames after `runtime::MARK`: the runtime's kind, then (code, at) pairs.
fn runtime_frames(words: &[usize]) -> Vec<Frame> {
    let Some((kind, pairs)) = words.split_first() else {
        return Vec::new();
    };
    let Some(kind) = runtime::Kind::from_word(*kind) else {
        return Vec::new();
    };
    let raw: Vec<RawFrame> = pairs
        .chunks_exact(2)
        .map(|p| RawFrame {
            code: p[0],
            at: p[1],
        })
        .collect();
    runtime::resolve(kind, &raw)
}

/// The exported function containing `pc`, from the dynamic symbol table already in memory
/// (works without opening any file). Read without the loader lock where `_dl_find_object`
/// knows the object; `dladdr` (which takes the lock) only where it does not (glibc < 2.35).
fn dynamic_symbol(pc: usize) -> Option<String> {
    let demangled = |raw: &[u8]| format!("{:#}", backtrace::SymbolName::new(raw));
    if unwind::loaded_object(pc).is_some() {
        return unwind::exported_function(pc).map(demangled);
    }
    if unwind::finds_objects_lock_free() {
        return None; // in no object: dladdr would only take the loader lock to say so
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: `info` is writable; dladdr fills it and returns non-zero on success; the name
    // pointer, when non-null, points into the loaded object's string table.
    unsafe {
        if libc::dladdr(pc as *const libc::c_void, info.as_mut_ptr()) == 0 {
            return None;
        }
        let info = info.assume_init();
        if info.dli_sname.is_null() {
            return None;
        }
        Some(demangled(CStr::from_ptr(info.dli_sname).to_bytes()))
    }
}

/// Frames of the C library or of Rust's std: the functions the program called, not the program.
fn is_wrapper(f: &Frame) -> bool {
    let module_is_libc = f.module.as_deref().is_some_and(|m| {
        let base = m.rsplit('/').next().unwrap_or(m);
        base.starts_with("libc.so") || base.starts_with("libc-") || base.starts_with("ld-linux")
    });
    let std_fn = f.function.as_deref().is_some_and(|n| {
        [
            "std::", "core::", "alloc::", "<std::", "<core::", "<alloc::",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    });
    module_is_libc || std_fn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn here() -> usize {
        let mut a = 0;
        backtrace::trace(|f| {
            a = f.ip() as usize;
            false
        });
        a
    }

    #[test]
    fn resolves_module_offset_and_name() {
        let s = Symbolizer::new(true);
        let addr = here();
        let frames = s.frames(&[addr + 1]);
        let f = &frames[0];
        assert!(f.module.as_deref().is_some_and(|m| !m.is_empty()));
        assert!(f.offset.is_some());
        assert!(f.function.is_some(), "{frames:?}");
    }

    #[test]
    fn without_debug_info_still_gives_module_and_offset() {
        let s = Symbolizer::new(false);
        let frames = s.frames(&[libc::getpid as *const () as usize + 1]);
        assert!(frames[0].module.as_deref().unwrap().contains("libc"));
        assert!(frames[0].function.as_deref().unwrap().ends_with("getpid"));
    }

    #[test]
    fn javascript_stacks_leave_v8_and_what_started_them_out() {
        let frame = |function: Option<&str>, module: Option<&str>| Frame {
            function: function.map(str::to_string),
            module: module.map(str::to_string),
            ..Frame::default()
        };
        let node = Some("/usr/bin/node");
        let js = Some(perfmap::JAVASCRIPT);
        let mut frames = vec![
            frame(Some("uv__fs_open"), node),
            frame(
                Some("node::fs::Open(v8::FunctionCallbackInfo<v8::Value> const&)"),
                node,
            ),
            frame(Some("v8::internal::Builtin_HandleApiCall(int)"), node),
            frame(
                Some("Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit"),
                node,
            ),
            frame(None, None),
            frame(Some("openSync"), js),
            frame(Some("Builtins_InterpreterEntryTrampoline"), node),
            frame(Some("leakFile"), js),
            frame(Some("Builtins_JSEntry"), node),
            frame(Some("node::Start(int, char**)"), node),
        ];
        keep_javascript_machinery_out(&mut frames);
        let names: Vec<_> = frames.iter().map(|f| f.function.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("uv__fs_open"),
                Some("node::fs::Open(v8::FunctionCallbackInfo<v8::Value> const&)"),
                Some("openSync"),
                Some("leakFile")
            ]
        );
        // Without JavaScript, a native stack is left as it is (a C++ program may well be
        // named v8::internal::...).
        let mut native = vec![frame(Some("v8::internal::Foo"), node), frame(None, None)];
        keep_javascript_machinery_out(&mut native);
        assert_eq!(native.len(), 2);
    }

    #[test]
    fn leading_wrappers_are_dropped_but_never_everything() {
        let libc_frame = Frame {
            module: Some("/lib/x86_64-linux-gnu/libc.so.6".into()),
            ..Frame::default()
        };
        let user = Frame {
            function: Some("main".into()),
            ..Frame::default()
        };
        assert!(is_wrapper(&libc_frame) && !is_wrapper(&user));
    }
}
