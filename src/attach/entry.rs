//! The entry points `fdguard attach` and `fdguard detach` call in the process (through ptrace,
//! or a JVM's attach listener: `jvm`), and what the command reads back from its memory about
//! the last call: its message, the options.
//!
//! The command finds these symbols in the library's dynamic symbol table and reads them with
//! `process_vm_readv`: `fdguard_message` (the lines the last call produced, NUL-terminated) and
//! `fdguard_options` (the options of the attach, which `fdguard report` reads instead of the
//! environment of a process that was not started under fdguard); `fdguard_state` is in `state`.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::sync::Mutex;

use libc::{c_char, c_int};

use crate::guard;

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

/// Runs an entry point's work: contained against panics, its lines stored for the command.
/// 0 when it succeeded, 1 when it refused (the message says why), 2 on an internal failure.
pub(super) fn serve(work: impl FnOnce() -> Result<Vec<String>, String>) -> c_int {
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
    attach_with(|| Ok(text))
}

/// Attaches with the options text `read` gives (inside `serve`: its failure is a refusal).
pub(super) fn attach_with(read: impl FnOnce() -> Result<String, String>) -> c_int {
    serve(|| {
        let text = read()?;
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
