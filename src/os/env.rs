//! The process environment, read at load time only (another thread may `setenv` later).

use std::ffi::CStr;

/// True when the process runs in secure-execution mode (setuid, setgid, file capabilities).
pub fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Reads an environment variable without allocating (`getenv` returns a pointer into `environ`).
///
/// Not async-signal-safe in general (another thread may `setenv`); used only at load time.
pub fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string that lives
    // as long as the environment entry, which fdguard reads once at load and copies.
    unsafe {
        let p = libc::getenv(name.as_ptr());
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_bytes())
        }
    }
}

/// Names of all environment variables starting with `prefix` (load time only; allocates).
pub fn env_names_with_prefix(prefix: &[u8]) -> Vec<Vec<u8>> {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut out = Vec::new();
    // SAFETY: `environ` is a null-terminated array of NUL-terminated strings, read at load time.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            if entry.starts_with(prefix) {
                let name = entry.split(|&b| b == b'=').next().unwrap_or(entry);
                out.push(name.to_vec());
            }
            p = p.add(1);
        }
    }
    out
}
