//! The report signal (`FDGUARD_SIGNAL`): a handler that only files a request (`trigger`), and
//! what `fdguard attach`/`detach` need to know of the signal's disposition.
#![allow(unsafe_code)]

use crate::guard;
use crate::trigger::{self, Reason};

extern "C" fn on_signal(_sig: libc::c_int) {
    trigger::request(Reason::Signal);
}

/// What the report signal did before fdguard's handler (`fdguard detach` puts it back).
static PREVIOUS: std::sync::Mutex<Option<(i32, libc::sigaction)>> = std::sync::Mutex::new(None);

pub fn install_handler(sig: i32) {
    // SAFETY: sigaction with a zeroed struct, an empty mask and a handler that only does
    // async-signal-safe work (atomics and the raw system calls that copy the process).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, &mut old) != 0 {
            guard::internal_failure("cannot install the report signal handler");
            return;
        }
        *PREVIOUS.lock().unwrap_or_else(|e| e.into_inner()) = Some((sig, old));
    }
}

/// True if the program has its own handler for `sig` (attaching must not replace it).
pub fn program_handles(sig: i32) -> bool {
    // SAFETY: querying a disposition into a zeroed, locally owned struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction != libc::SIG_DFL
            && old.sa_sigaction != libc::SIG_IGN
            && old.sa_sigaction != on_signal as *const () as usize
    }
}

/// `fdguard detach`: the report signal does what it did before fdguard.
pub fn remove_handler() {
    if let Some((sig, old)) = PREVIOUS.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: restoring a disposition sigaction itself returned.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
}

/// Attaching again after a detach: the handler back, with the first attach's configuration.
pub fn restart() {
    if let Some(sig) = super::context::config().and_then(|c| c.signal) {
        install_handler(sig);
    }
}
