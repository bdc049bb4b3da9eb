//! What the dynamic loader knows: the loaded objects and their code. Takes the loader's lock:
//! never from a hook, and not async-signal-safe.

use std::ffi::CStr;

use libc::c_int;

/// A loaded ELF object: its path, load bias, and the address ranges of its executable segments.
#[derive(Clone, Debug)]
pub struct Module {
    pub path: String,
    pub bias: usize,
    pub text: Vec<(usize, usize)>,
}

/// Every loaded object (the main program has an empty name in the loader's list; it is given
/// the path of `/proc/self/exe`). Takes the loader's lock: never call it from a hook.
pub fn modules() -> Vec<Module> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid dl_phdr_info for the duration of the callback, and
        // `data` is the `Vec<Module>` passed to dl_iterate_phdr below.
        unsafe {
            let info = &*info;
            let out = &mut *data.cast::<Vec<Module>>();
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(info.dlpi_name)
                    .to_string_lossy()
                    .into_owned()
            };
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            let bias = info.dlpi_addr as usize;
            let text = phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
                .map(|p| {
                    let start = bias + p.p_vaddr as usize;
                    (start, start + p.p_memsz as usize)
                })
                .collect();
            out.push(Module {
                path: name,
                bias,
                text,
            });
        }
        0
    }
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: `visit` matches the callback signature and only touches `out` through `data`.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut out as *mut Vec<Module>).cast()) };
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    for m in &mut out {
        if m.path.is_empty() {
            m.path = exe.clone();
        }
    }
    out
}

/// The executable range of the module that contains `addr`.
pub fn module_bounds(addr: usize) -> Option<(usize, usize)> {
    modules()
        .into_iter()
        .flat_map(|m| m.text)
        .find(|(lo, hi)| (*lo..*hi).contains(&addr))
}
