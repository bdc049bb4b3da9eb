//! The calls that set or ask a signal's disposition (`sigaction` and the older `signal`,
//! `sigset`, ... as glibc exports them). On any signal but fdguard's report signal they are
//! libc's, untouched; on fdguard's, `dumper::program_call` gives the program exactly what it
//! would have had without fdguard, and moves fdguard elsewhere when the program takes the
//! signal (see `dumper::signal`).
#![allow(unsafe_code)]

use libc::{c_int, sighandler_t};

use super::hooks;
use crate::dumper;
use crate::guard::{self, Mode};
use crate::real;

/// glibc's `SIG_HOLD` (`<signal.h>`: `((__sighandler_t) 2)`), which the libc crate lacks.
const SIG_HOLD: sighandler_t = 2;

/// A signal call fdguard has nothing to do with: another signal, or a `vfork` child (which
/// shares the parent's memory, not its dispositions).
fn not_ours(sig: c_int) -> bool {
    !dumper::owns(sig) || guard::mode() == Mode::Pass
}

/// `sigaction` and `__sigaction`: the previous action the program gets is its own view.
fn action_call(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
    call: impl FnOnce() -> c_int,
) -> c_int {
    if not_ours(sig) {
        return call();
    }
    dumper::program_call(sig, !act.is_null(), call, |r, view| {
        // SAFETY: the real call succeeded, so `old`, when not null, is the program's writable
        // sigaction, which it just filled.
        unsafe {
            if *r == 0 && !old.is_null() && (*old).sa_sigaction == dumper::handler() {
                *old = *view;
            }
        }
    })
}

/// The calls that take a handler and return the previous one (`SIG_HOLD` for `sigset` on a
/// blocked signal).
fn handler_call(sig: c_int, sets: bool, call: impl FnOnce() -> sighandler_t) -> sighandler_t {
    if not_ours(sig) {
        return call();
    }
    dumper::program_call(sig, sets, call, |r, view| {
        if *r == dumper::handler() {
            *r = view.sa_sigaction;
        }
    })
}

hooks! {
    fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int =
        |call| action_call(sig, act, old, call);
    fn __sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int =
        |call| action_call(sig, act, old, call);
    fn signal(sig: c_int, handler: sighandler_t) -> sighandler_t =
        |call| handler_call(sig, true, call);
    fn bsd_signal(sig: c_int, handler: sighandler_t) -> sighandler_t =
        |call| handler_call(sig, true, call);
    /// glibc's alias of `signal`.
    fn ssignal(sig: c_int, handler: sighandler_t) -> sighandler_t =
        |call| handler_call(sig, true, call);
    fn sysv_signal(sig: c_int, handler: sighandler_t) -> sighandler_t =
        |call| handler_call(sig, true, call);
    fn __sysv_signal(sig: c_int, handler: sighandler_t) -> sighandler_t =
        |call| handler_call(sig, true, call);
    /// `SIG_HOLD` only blocks the signal; any other disposition sets it.
    fn sigset(sig: c_int, disp: sighandler_t) -> sighandler_t =
        |call| handler_call(sig, disp != SIG_HOLD, call);
    /// Sets `SIG_IGN`.
    fn sigignore(sig: c_int) -> c_int = |call| {
        if not_ours(sig) {
            return call();
        }
        dumper::program_call(sig, true, call, |_, _| {})
    };
}
