//! Where the library stands in this process (`State`), exported for the command as
//! `fdguard_state` (a `u32`), which it reads from outside with `process_vm_readv`.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// Where the library stands in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// `dlopen`ed, waiting for `fdguard_attach` (or never started: disabled, setuid).
    Dormant = 0,
    /// Loaded with the program.
    Preloaded = 1,
    Attached = 2,
    /// Attached, then detached: loaded and inert, ready to attach again.
    Detached = 3,
}

#[unsafe(no_mangle)]
pub static fdguard_state: AtomicU32 = AtomicU32::new(State::Dormant as u32);

pub fn state() -> State {
    match fdguard_state.load(Ordering::Acquire) {
        1 => State::Preloaded,
        2 => State::Attached,
        3 => State::Detached,
        _ => State::Dormant,
    }
}

pub fn set_state(s: State) {
    fdguard_state.store(s as u32, Ordering::Release);
}
