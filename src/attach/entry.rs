//! The entry points `fdguard attach` and `fdguard detach` call in the process, and what the
//! command reads back from its memory: the state, the last call's message, the options.
//!
//! The command finds these symbols in the library's dynamic symbol table and reads them with
//! `process_vm_readv`: `fdguard_state` (a `u32`, see `State`), `fdguard_message` (the lines
//! the last call produced, NUL-terminated) and `fdguard_options` (the options of the attach,
//! which `fdguard report` reads instead of the environment of a process that was not started
//! under fdguard).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use libc::{c_char, c_int};

use super::got::Hook;
use crate::guard;

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

/// A fixed byte buffer the command reads from outside.
#[repr(transparent)]
pub struct Buffer<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: written only under `CALLS` (one entry point call at a time), read by this process
// only through `store`'s caller; the command reads it from outside.
unsafe impl<const N: usize> Sync for Buffer<N> {}

impl<const N: usize> Buffer<N> {
    const fn new() -> Self {
        Buffer(UnsafeCell::new([0; N]))
    }

    /// Stores `text`, cut to fit, NUL-terminated. Callers hold `CALLS`.
    fn store(&self, text: &[u8]) {
        let n = text.len().min(N - 1);
        // SAFETY: the only writer holds `CALLS`; nothing in this process reads it.
        let buf = unsafe { &mut *self.0.get() };
        buf[..n].copy_from_slice(&text[..n]);
        buf[n] = 0;
    }
}

#[unsafe(no_mangle)]
pub static fdguard_message: Buffer<4096> = Buffer::new();
#[unsafe(no_mangle)]
pub static fdguard_options: Buffer<8192> = Buffer::new();

/// One entry point call at a time (a second command racing the first waits).
static CALLS: Mutex<()> = Mutex::new(());

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

/// Runs an entry point's work: contained against panics, its lines stored for the command.
/// 0 when it succeeded, 1 when it refused (the message says why), 2 on an internal failure.
fn serve(work: impl FnOnce() -> Result<Vec<String>, String>) -> c_int {
    let _one = CALLS.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = guard::internal(|| guard::contained(work));
    let (code, text) = match outcome {
        Some(Ok(lines)) => (0, lines.join("\n")),
        Some(Err(why)) => (1, format!("fdguard: {why}")),
        None => (2, "fdguard: internal error while attaching".to_string()),
    };
    fdguard_message.store(text.as_bytes());
    code
}

/// Attaches fdguard to this process with `options` (see `super::parse_options`).
///
/// # Safety
/// `options` is a NUL-terminated string (the command writes it into the process).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdguard_attach(options: *const c_char) -> c_int {
    let text = if options.is_null() {
        String::new()
    } else {
        // SAFETY: the caller's promise.
        unsafe { CStr::from_ptr(options) }
            .to_string_lossy()
            .into_owned()
    };
    serve(|| {
        let lines = super::attach(&text)?;
        fdguard_options.store(text.as_bytes());
        Ok(lines)
    })
}

/// Detaches fdguard from this process.
#[unsafe(no_mangle)]
pub extern "C" fn fdguard_detach() -> c_int {
    serve(super::detach)
}

/// An address inside this library.
pub fn own_address() -> usize {
    fdguard_detach as *const () as usize
}

/// The hook of every interposed function this library exports, by name.
pub fn hooks() -> Vec<Hook> {
    // SAFETY: dladdr on an address of this library fills `info` with its file and base.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    if unsafe { libc::dladdr(own_address() as *const libc::c_void, &mut info) } == 0 {
        return Vec::new();
    }
    let base = info.dli_fbase as usize;
    // SAFETY: RTLD_NOLOAD only finds this library, already loaded; the handle is kept.
    let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return Vec::new();
    }
    crate::real::NAMES
        .iter()
        .filter_map(|name| {
            // SAFETY: `name` is NUL-terminated; `handle` is this library's.
            let addr = unsafe { libc::dlsym(handle, name.as_ptr().cast()) } as usize;
            let mut at: libc::Dl_info = unsafe { std::mem::zeroed() };
            // SAFETY: dladdr only reads the loader's tables for `addr`.
            let ours = addr != 0
                && unsafe { libc::dladdr(addr as *const libc::c_void, &mut at) } != 0
                && at.dli_fbase as usize == base;
            ours.then_some(Hook { name, addr })
        })
        .collect()
}

/// How many objects the loader has loaded since the process started (`dlpi_adds`).
pub fn objects_loaded() -> u32 {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid dl_phdr_info; `data` is the u64 below.
        unsafe { *data.cast::<u64>() = (*info).dlpi_adds };
        1
    }
    let mut adds: u64 = 0;
    // SAFETY: `first` matches the callback type and writes only `adds`.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut adds as *mut u64).cast()) };
    adds as u32
}
