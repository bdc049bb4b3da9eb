//! `vfork`'s hook, the one `hooks!` cannot generate: a naked stub per architecture that records
//! the vfork and jumps to the real function (why it must jump, on the stub).
#![allow(unsafe_code)]

use libc::pid_t;

use crate::guard;
use crate::os;
use crate::real;

/// The address `vfork` continues at: the real one, or a stand-in answering `ENOSYS`.
extern "C" fn vfork_target() -> usize {
    extern "C" fn unavailable() -> pid_t {
        os::errno::set_errno(libc::ENOSYS);
        -1
    }
    guard::vfork_starting();
    match real::vfork.get() {
        Some(f) => f as usize,
        None => unavailable as *const () as usize,
    }
}

/// `vfork` cannot be wrapped by an ordinary function: the child returns through the caller's
/// stack frame, which the parent reuses afterwards. So this stub only records that a vfork is
/// starting (hooks called by the child must not touch the parent's memory; see `guard`), and then
/// *jumps* to the real `vfork` with the caller's return address untouched.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vfork() -> pid_t {
    core::arch::naked_asm!(
        // Entry: rsp is 8 mod 16; one push re-aligns it for the call.
        "push rbp",
        "call {target}",
        "pop rbp",
        "jmp rax",
        target = sym vfork_target,
    )
}

#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vfork() -> pid_t {
    core::arch::naked_asm!(
        "stp x29, x30, [sp, #-16]!",
        "mov x29, sp",
        "bl {target}",
        "ldp x29, x30, [sp], #16",
        "br x0",
        target = sym vfork_target,
    )
}
