//! The loaded objects, as the loader lists them (`dl_iterate_phdr`), with what `got` and
//! `dlopen` read of each: its segments, where an address falls, which objects are never
//! patched.
//!
//! The loader lists the objects of its caller's namespace only: called from here, the
//! program's, into which fdguard was loaded. Objects `dlmopen`ed into other namespaces (each
//! with its own libc) are never seen, as a preloaded library never reaches them either: a hook
//! that called the program's libc for them would set the wrong `errno`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::ops::ControlFlow;

use libc::{Elf64_Phdr, c_int, c_void, dl_phdr_info, size_t};

const PT_GNU_EH_FRAME: u32 = 0x6474_e550;

/// One object of the loader's list.
pub struct Object<'a> {
    /// Its place in the list: 0 is the program, objects loaded later come after the others.
    pub index: usize,
    pub bias: usize,
    pub name: &'a [u8],
    pub phdrs: &'a [Elf64_Phdr],
    /// How many objects were ever loaded, in every namespace (`dlpi_adds`). The loader appends
    /// each new object to its list: those loaded since it was `n` are among the last `adds - n`.
    pub adds: u64,
}

impl Object<'_> {
    /// The range `[start, end)` of segment `p` once loaded.
    pub fn segment(&self, p: &Elf64_Phdr) -> (usize, usize) {
        let start = self.bias.wrapping_add(p.p_vaddr as usize);
        (start, start.wrapping_add(p.p_memsz as usize))
    }

    /// The object's `PT_LOAD` segments.
    pub fn loads(&self) -> impl Iterator<Item = &Elf64_Phdr> {
        self.phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD)
    }

    /// True if one of its segments holds `addr` (as the loader decides which object a caller
    /// is in).
    pub fn holds(&self, addr: usize) -> bool {
        self.loads().any(|p| {
            let (s, e) = self.segment(p);
            (s..e).contains(&addr)
        })
    }

    /// Its first program header of type `ty`.
    pub fn header(&self, ty: u32) -> Option<&Elf64_Phdr> {
        self.phdrs.iter().find(|p| p.p_type == ty)
    }

    /// The file-backed part of the readable `PT_LOAD` segment holding `addr`.
    pub fn readable_at(&self, addr: usize) -> Option<(usize, usize)> {
        self.loads().find_map(|p| {
            let start = self.bias.wrapping_add(p.p_vaddr as usize);
            let end = start.wrapping_add(p.p_filesz as usize);
            (p.p_flags & libc::PF_R != 0 && (start..end).contains(&addr)).then_some((start, end))
        })
    }

    /// Where its `.eh_frame_hdr` is, if it has one.
    pub fn eh_frame_hdr(&self) -> Option<usize> {
        let p = self.header(PT_GNU_EH_FRAME)?;
        Some(self.bias.wrapping_add(p.p_vaddr as usize))
    }

    /// The dynamic loader, the vDSO and fdguard's own object (the one holding `own`): never
    /// patched.
    pub fn is_exempt(&self, own: usize) -> bool {
        let name = self.name;
        self.holds(own)
            || name.starts_with(b"linux-vdso")
            || name.starts_with(b"linux-gate")
            || name.windows(6).any(|w| w == b"/ld-li")
            || name.starts_with(b"ld-linux")
    }
}

/// Calls `f` with each loaded object in the loader's order until it breaks. The loader holds
/// its list's lock meanwhile: no object is added or unloaded, and no other thread walks.
pub fn each<F: FnMut(&Object<'_>) -> ControlFlow<()>>(f: F) {
    struct Walk<F> {
        f: F,
        index: usize,
    }
    unsafe extern "C" fn visit<F: FnMut(&Object<'_>) -> ControlFlow<()>>(
        info: *mut dl_phdr_info,
        _size: size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid dl_phdr_info for the callback's duration, and
        // `data` is the `Walk<F>` that `each` passed to dl_iterate_phdr.
        let (info, walk) = unsafe { (&*info, &mut *data.cast::<Walk<F>>()) };
        let phdrs = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers of a loaded object.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
        };
        let name = if info.dlpi_name.is_null() {
            &b""[..]
        } else {
            // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
            unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
        };
        let object = Object {
            index: walk.index,
            bias: info.dlpi_addr as usize,
            name,
            phdrs,
            adds: info.dlpi_adds,
        };
        walk.index += 1;
        c_int::from((walk.f)(&object).is_break())
    }
    let mut walk = Walk { f, index: 0 };
    // SAFETY: `visit::<F>` matches the callback type and reads `walk` only through `data`.
    unsafe { libc::dl_iterate_phdr(Some(visit::<F>), (&mut walk as *mut Walk<F>).cast()) };
}

/// How many objects the loader lists (from inside `each`'s callback too: its lock is
/// recursive, so the count is of the list that walk sees).
pub fn count() -> usize {
    let mut n = 0;
    each(|_| {
        n += 1;
        ControlFlow::Continue(())
    });
    n
}
