//! `dlopen` and `dlmopen` while attached: every object's GOT entries for them point here, so
//! that what the program loads is patched (`got::patch_new`) before the call returns to it, and
//! the fds its code opens from then on are tracked. A preloaded library needs none of this (the
//! loader binds new objects to its hooks), so these hooks are not exported: only `attach`
//! points GOT entries at them, and `detach` points them back.
//!
//! # The caller stays the caller
//! glibc's `dlopen` is caller-sensitive: it finds the object holding its return address and
//! uses it
//! - to search for a name without `/`: that object's `DT_RUNPATH`, or else the `DT_RPATH`s of
//!   it and of the objects that loaded it, and its `DF_1_NODEFLIB`;
//! - to expand `$ORIGIN` in the name;
//! - to choose the namespace (for `dlopen`);
//! - as the new object's loader (`l_loader`, private to glibc), which the new object keeps: its
//!   own dependencies and later `dlopen`s search that loader's `DT_RPATH`s, and its symbols are
//!   also bound in the local scope of the loader's first ancestor (the program's global scope,
//!   unless that ancestor was `dlmopen`ed into the program's namespace by path).
//!
//! A hook that called the real `dlopen` would be that object itself: a plugin found only through
//! the program's RUNPATH would not load (heaptrack's inject mode, sanitizers and others have
//! that bug). Whether a call made from here would be equivalent cannot be decided exactly (the
//! last point depends on glibc's private link map), so every call is made as the caller's own:
//!
//! The entry stub (`fdguard_dlopen_entry`, `fdguard_dlmopen_entry`) hands the caller's return
//! address to `enter`, which looks in the caller's object for a `ret` instruction that no unwind
//! table covers (the end of `.init`, in everything linked with the C start files).
//! `fdguard_dl_call_as` enters the real function with that address as its return address and
//! its own continuation below it. The loader finds the caller's object, as when the program
//! calls it directly; the real function returns to that `ret`, which returns to the
//! continuation; the new objects are patched; the stub returns the result. An unwinder walking
//! the stack meanwhile (a constructor's `backtrace()`, fdguard's own capture) stops at that
//! `ret`, where no table says how to go on, instead of misreading the frame.
//!
//! Where no such `ret` is found, or the caller is in no object of the program's namespace, the
//! stub jumps to the real function with the program's return address left in place: exact
//! again, but the new objects are patched only by the next call that reaches a hook here.
//!
//! A shadow stack (x86 CET) would refuse the detour, but none is on in a process fdguard was
//! loaded into: glibc refuses to `dlopen` a library that is not marked for shadow stacks into a
//! process that has them (or, single-threaded and permissive, turns them off), and
//! `libfdguard.so` is not marked (`tests/suite/attach_dlopen.rs` checks).
#![allow(unsafe_code)]

use std::ops::ControlFlow;

use libc::{c_char, c_int, c_long, c_void};

use super::got::Hook;
use super::objects::{self, Object};
use crate::guard::{self, ErrnoGuard, Mode};
use crate::real::Real;
use crate::unwind;

static DLOPEN: Real<unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void> =
    Real::new("dlopen\0");
static DLMOPEN: Real<unsafe extern "C" fn(c_long, *const c_char, c_int) -> *mut c_void> =
    Real::new("dlmopen\0");

/// `x86_64`'s `ret`.
const RET: u8 = 0xc3;
/// `ret` bytes looked at in the caller's code before giving up: the first is usually the one.
const MAX_LOOKS: usize = 256;

// The two entry stubs (`fdguard_dl_entry`) and the call made as the caller's, each a function
// with a frame pointer (`fdguard_dl_begin`, `fdguard_dl_leave`, `fdguard_dl_end`). The stubs keep
// the three argument registers (dlmopen's three, dlopen's two and a spare) for a jump to the
// real function.
core::arch::global_asm!(
    ".macro fdguard_dl_begin name",
    ".pushsection .text.\\name, \"ax\", @progbits",
    ".globl \\name",
    ".hidden \\name",
    ".type \\name, @function",
    ".p2align 4",
    "\\name:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    ".endm",
    ".macro fdguard_dl_leave",
    "leave",
    ".cfi_def_cfa rsp, 8",
    ".cfi_restore rbp",
    ".endm",
    ".macro fdguard_dl_end name",
    ".cfi_endproc",
    ".size \\name, . - \\name",
    ".popsection",
    ".endm",
    ".macro fdguard_dl_entry name, kind",
    "fdguard_dl_begin \\name",
    "push rdi",
    "push rsi",
    "push rdx",
    "sub rsp, 8",
    "mov rcx, [rbp + 8]",
    "mov r8d, \\kind",
    "call {enter}",
    "test rdx, rdx",
    "jnz 2f",
    ".cfi_remember_state",
    "fdguard_dl_leave",
    "ret",
    ".cfi_restore_state",
    "2:",
    "mov r11, rax",
    "mov rdi, [rbp - 8]",
    "mov rsi, [rbp - 16]",
    "mov rdx, [rbp - 24]",
    "fdguard_dl_leave",
    "jmp r11",
    "fdguard_dl_end \\name",
    ".endm",
    "fdguard_dl_entry fdguard_dlopen_entry, 0",
    "fdguard_dl_entry fdguard_dlmopen_entry, 1",
    // fdguard_dl_call_as(a0, a1, a2, function, via): function(a0, a1, a2) entered with `via`
    // as its return address, and this function's continuation as `via`'s. The stack is as
    // after a call (rsp + 8 a multiple of 16) when `function` starts.
    "fdguard_dl_begin fdguard_dl_call_as",
    "sub rsp, 8",
    "lea rax, [rip + 2f]",
    "push rax",
    "push r8",
    "jmp rcx",
    "2:",
    "fdguard_dl_leave",
    "ret",
    "fdguard_dl_end fdguard_dl_call_as",
    enter = sym enter,
);

unsafe extern "C" {
    fn fdguard_dlopen_entry();
    fn fdguard_dlmopen_entry();
    fn fdguard_dl_call_as(a0: usize, a1: usize, a2: usize, function: usize, via: usize) -> usize;
}

/// The hooks for `dlopen` and `dlmopen`, those this process has.
pub fn hooks() -> Vec<Hook> {
    let mut hooks = Vec::new();
    if DLOPEN.get().is_some() {
        let addr = fdguard_dlopen_entry as *const () as usize;
        hooks.push(Hook {
            name: b"dlopen\0",
            addr,
        });
    }
    if DLMOPEN.get().is_some() {
        let addr = fdguard_dlmopen_entry as *const () as usize;
        hooks.push(Hook {
            name: b"dlmopen\0",
            addr,
        });
    }
    hooks
}

/// What `enter` tells the entry stub: the call's result in `value`; or, when `tail` is not 0,
/// the real function in `value`, for the stub to jump to as the program called it.
#[repr(C)]
struct Outcome {
    value: usize,
    tail: usize,
}

/// The stub's call: `a0..a2` are the program's arguments, `caller` its return address, `kind`
/// 0 for `dlopen` and 1 for `dlmopen`.
extern "C" fn enter(a0: usize, a1: usize, a2: usize, caller: usize, kind: u32) -> Outcome {
    let real = match kind {
        0 => DLOPEN.get().map(|f| f as usize),
        _ => DLMOPEN.get().map(|f| f as usize),
    };
    // `hooks` found both real functions before any GOT entry pointed here.
    let Some(real) = real else {
        return Outcome { value: 0, tail: 0 };
    };
    let via = {
        let _errno = ErrnoGuard::save();
        guard::contained(|| return_through(caller)).flatten()
    };
    let Some(via) = via else {
        return Outcome {
            value: real,
            tail: 1,
        };
    };
    // SAFETY: `real` is libc's dlopen or dlmopen, which take at most three integer or pointer
    // arguments, passed on as the program gave them; `via` is a `ret` instruction in the
    // caller's code, which returns to fdguard_dl_call_as's continuation.
    let value = unsafe { fdguard_dl_call_as(a0, a1, a2, real, via) };
    // Not in a vfork child, not detached, not inside fdguard's own work (a signal handler
    // interrupting a walk of this thread's).
    if guard::mode() == Mode::Track {
        let _errno = ErrnoGuard::save();
        guard::internal(|| guard::contained(patch_loaded));
    }
    Outcome { value, tail: 0 }
}

/// The objects the call loaded (and any loaded meanwhile) get their GOT entries patched, unless
/// detached since.
fn patch_loaded() {
    if let Some(hooks) = super::HOOKS.get() {
        super::got::patch_new(hooks, super::got::own_address());
    }
}

/// A `ret` instruction in the object holding `caller` that no unwind table covers.
fn return_through(caller: usize) -> Option<usize> {
    let mut found = None;
    objects::each(|o| {
        if !o.holds(caller) {
            return ControlFlow::Continue(());
        }
        found = uncovered_ret(o);
        ControlFlow::Break(())
    });
    found
}

/// The first `ret` byte of `o`'s code where neither the byte nor the one before it (a return
/// address's lookup) is covered by an FDE of `o`'s `.eh_frame_hdr`: libgcc, fdguard's unwinder
/// and the others that find FDEs through that table all stop there.
fn uncovered_ret(o: &Object) -> Option<usize> {
    let hdr = o.eh_frame_hdr()?;
    let (start, end) = o.readable_at(hdr)?;
    // SAFETY: [start, end) is the readable segment of a loaded object holding its
    // .eh_frame_hdr and .eh_frame; the loader keeps it mapped while its list is locked.
    let covered = |pc| unsafe { unwind::cfi_covers(start, end, hdr, pc) };
    let mut looks = 0;
    let code = libc::PF_R | libc::PF_X;
    for p in o.loads().filter(|p| p.p_flags & code == code) {
        let from = o.segment(p).0;
        // SAFETY: the file-backed part of a readable, executable segment of a loaded object,
        // mapped while the loader's list is locked.
        let bytes = unsafe { std::slice::from_raw_parts(from as *const u8, p.p_filesz as usize) };
        for at in (1..bytes.len())
            .filter(|&i| bytes[i] == RET)
            .map(|i| from + i)
        {
            match (covered(at - 1)?, covered(at)?) {
                (false, false) => return Some(at),
                _ if looks == MAX_LOOKS => return None,
                _ => looks += 1,
            }
        }
    }
    None
}
