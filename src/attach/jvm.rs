//! The JVM's own door: `fdguard attach` asks a HotSpot JVM's attach listener to `load` this
//! library as a JVM TI agent, and the listener calls `Agent_OnAttach` in its own thread (a
//! Java thread in native code, holding no lock of libc's), which attaches or detaches exactly
//! as `fdguard_attach` and `fdguard_detach` do, message included.
//!
//! The listener takes arguments of at most 1024 bytes, so the options come in a file the
//! command wrote in the process's `/tmp` (`@/tmp/fdguard-attach...`); `detach` detaches. A
//! refusal returns 1, which the JVM reports as the agent's return code; HotSpot then closes
//! the library, which stays mapped (it is linked `-z nodelete`: see `build.rs`). Once attached,
//! the JVM is set up for Java frames in creation stacks (`runtime::java`), from this thread (a
//! Java thread in native code, where JVM TI may be called); detached, it is told to stop.

use std::ffi::CStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

use libc::{c_char, c_int, c_void};

use super::entry;
use crate::guard;
use crate::runtime::java;

/// The largest options file read: the command writes a few kilobytes at most.
const MOST: u64 = 64 * 1024;

/// The agent entry point HotSpot calls for each `load` of this library.
///
/// # Safety
/// `options` is null or a NUL-terminated string (the JVM's copy of the `load` argument).
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn Agent_OnAttach(
    vm: *mut c_void,
    options: *const c_char,
    _reserved: *mut c_void,
) -> c_int {
    let arg = if options.is_null() {
        Vec::new()
    } else {
        // SAFETY: the caller's promise.
        unsafe { CStr::from_ptr(options) }.to_bytes().to_vec()
    };
    match (arg.as_slice(), arg.strip_prefix(b"@")) {
        (b"detach", _) => {
            java::detached();
            entry::fdguard_detach()
        }
        (_, Some(path)) => {
            let code = entry::attach_with(|| read_options(path));
            if code == 0 {
                guard::contained(|| java::attached(vm));
            }
            code
        }
        _ => entry::serve(|| {
            Err(format!(
                "agent options {:?} are not fdguard's (`@FILE` or `detach`): use `fdguard \
                 attach`",
                String::from_utf8_lossy(&arg)
            ))
        }),
    }
}

/// The options text in the file at `path`.
fn read_options(path: &[u8]) -> Result<String, String> {
    let shown = String::from_utf8_lossy(path);
    let why = |e: std::io::Error| format!("cannot read the options file {shown}: {e}");
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MOST + 1).read_to_end(&mut text))
        .map_err(why)?;
    if text.len() as u64 > MOST {
        return Err(format!(
            "the options file {shown} is larger than {MOST} bytes"
        ));
    }
    String::from_utf8(text).map_err(|_| format!("the options file {shown} is not UTF-8"))
}
