//! Interposition after the fact: the loaded objects' GOT entries for the functions fdguard
//! hooks are pointed at the hooks, as the dynamic loader would have bound them had fdguard been
//! preloaded, and pointed back on detach.
//!
//! # How
//! For each object the loader lists (`dl_iterate_phdr`, which holds the loader's lock for the
//! callback, so no object is unmapped while its GOT is written), the `PT_DYNAMIC` entries give
//! the relocation tables: `DT_JMPREL` (the PLT's `JUMP_SLOT`s) and `DT_RELA` (`GLOB_DAT`s, what
//! `-fno-plt` calls and taken addresses use). A relocation whose symbol is a hooked name gets
//! the hook's address, with one aligned pointer store (a thread calling through it meanwhile
//! gets the old function or the hook, both correct). Slots inside `PT_GNU_RELRO` are made
//! writable for the store and read-only again. fdguard's own object, the dynamic loader and the
//! vDSO are left alone. `R_X86_64_64` data pointers are not touched: they are the program's
//! values, not calls.
//!
//! What the patching needs from the loader is here too: the hooks this library exports
//! (`hooks`), an address inside it, and how many objects were ever loaded (`objects_loaded`,
//! which tells when to look again).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, c_void, dl_phdr_info, size_t};

use crate::os::mem::page_size;

/// A hooked function: its NUL-terminated name and the hook's address.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    pub name: &'static [u8],
    pub addr: usize,
}

/// A GOT slot fdguard wrote, with what it held before.
#[derive(Clone, Copy, Debug)]
struct Patched {
    slot: usize,
    old: usize,
    hook: usize,
    /// The slot's page was read-only (RELRO): restore through mprotect too.
    relro: bool,
}

static PATCHED: Mutex<Vec<Patched>> = Mutex::new(Vec::new());

const DT_NULL: i64 = 0;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_STRSZ: i64 = 10;
const DT_JMPREL: i64 = 23;
const DT_PLTRELSZ: i64 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;
#[cfg(target_arch = "x86_64")]
const R_GLOB_DAT: u32 = 6;
#[cfg(target_arch = "x86_64")]
const R_JUMP_SLOT: u32 = 7;
#[cfg(target_arch = "aarch64")]
const R_GLOB_DAT: u32 = 1025;
#[cfg(target_arch = "aarch64")]
const R_JUMP_SLOT: u32 = 1026;

/// An entry of the dynamic section (`Elf64_Dyn`, which the libc crate does not have).
#[repr(C)]
#[derive(Clone, Copy)]
struct Dyn {
    d_tag: i64,
    d_un: u64,
}

/// What one object's dynamic section says about its relocations.
#[derive(Default)]
struct Tables {
    strtab: usize,
    strsz: usize,
    symtab: usize,
    rela: (usize, usize),
    jmprel: (usize, usize),
}

/// glibc rewrites the in-memory `d_ptr`s with the load bias; other loaders (and the vDSO) do
/// not. A value below the bias is still relative.
fn absolute(bias: usize, v: usize) -> usize {
    if bias != 0 && v < bias { v + bias } else { v }
}

/// What a walk over the objects does to each GOT slot of a hooked function.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    Patch,
    /// Puts back what `Patch` wrote, in the objects still loaded.
    Restore,
    /// Only says whether the object at `target` comes before libc's: see `loaded_at_startup`.
    Order,
}

struct Ctx<'a> {
    hooks: &'a [Hook],
    own: usize,
    walk: Walk,
    written: usize,
    objects: usize,
    patched: &'a mut Vec<Patched>,
    /// For `Walk::Order`: addresses to find, and the index of the object holding each.
    find: [usize; 2],
    found: [Option<usize>; 2],
    index: usize,
}

impl<'a> Ctx<'a> {
    fn new(hooks: &'a [Hook], own: usize, walk: Walk, patched: &'a mut Vec<Patched>) -> Self {
        Ctx {
            hooks,
            own,
            walk,
            written: 0,
            objects: 0,
            patched,
            find: [0; 2],
            found: [None; 2],
            index: 0,
        }
    }
}

/// The range `[start, end)` of segment `p` once loaded.
fn segment(bias: usize, p: &libc::Elf64_Phdr) -> (usize, usize) {
    let start = bias + p.p_vaddr as usize;
    (start, start + p.p_memsz as usize)
}

unsafe extern "C" fn visit(info: *mut dl_phdr_info, _size: size_t, data: *mut c_void) -> c_int {
    // SAFETY: the loader passes a valid dl_phdr_info for the callback's duration, and `data` is
    // the `Ctx` passed to dl_iterate_phdr by `walk` below.
    let (info, cx) = unsafe { (&*info, &mut *data.cast::<Ctx>()) };
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers of a loaded object.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let bias = info.dlpi_addr as usize;
    let holds = |addr: usize| {
        phdrs.iter().any(|p| {
            let (s, e) = segment(bias, p);
            p.p_type == libc::PT_LOAD && (s..e).contains(&addr)
        })
    };
    let index = cx.index;
    cx.index += 1;
    if cx.walk == Walk::Restore {
        let mine: Vec<usize> = (0..cx.patched.len())
            .filter(|i| holds(cx.patched[*i].slot))
            .collect();
        for i in mine.into_iter().rev() {
            let p = cx.patched.swap_remove(i);
            // SAFETY: the slot is a GOT entry of this object, loaded for the callback's length.
            let current =
                unsafe { AtomicUsize::from_ptr(p.slot as *mut usize) }.load(Ordering::Acquire);
            // SAFETY: as above.
            if current == p.hook && unsafe { store(p.slot, p.old, p.relro) }.is_some() {
                cx.written += 1;
            }
        }
        return 0;
    }
    if cx.walk == Walk::Order {
        for i in 0..2 {
            if cx.found[i].is_none() && holds(cx.find[i]) {
                cx.found[i] = Some(index);
            }
        }
        return 0;
    }
    let name = if info.dlpi_name.is_null() {
        &b""[..]
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    let skip = holds(cx.own)
        || name.starts_with(b"linux-vdso")
        || name.starts_with(b"linux-gate")
        || name.windows(6).any(|w| w == b"/ld-li")
        || name.starts_with(b"ld-linux");
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
        return 0;
    };
    if skip {
        return 0;
    }
    let relro = phdrs
        .iter()
        .find(|p| p.p_type == PT_GNU_RELRO)
        .map(|p| segment(bias, p));
    // SAFETY: PT_DYNAMIC of a loaded object is mapped and ends with DT_NULL.
    let tables = unsafe { read_dynamic(bias, bias + dynamic.p_vaddr as usize) };
    cx.objects += 1;
    for (start, size) in [tables.jmprel, tables.rela] {
        // SAFETY: the relocation tables the dynamic section names are mapped in the object.
        unsafe { patch_table(cx, &tables, bias, relro, start, size) };
    }
    0
}

/// # Safety
/// `dynamic` is the mapped `PT_DYNAMIC` of an object loaded at `bias`.
unsafe fn read_dynamic(bias: usize, dynamic: usize) -> Tables {
    let mut t = Tables::default();
    let mut at = dynamic as *const Dyn;
    let (mut rela, mut relasz, mut jmprel, mut pltrelsz) = (0, 0, 0, 0);
    // Bounded: a dynamic section has a few dozen entries.
    for _ in 0..4096 {
        // SAFETY: inside the dynamic section, which ends with DT_NULL (the caller's promise).
        let d = unsafe { at.read() };
        let v = d.d_un as usize;
        match d.d_tag {
            DT_NULL => break,
            DT_STRTAB => t.strtab = absolute(bias, v),
            DT_STRSZ => t.strsz = v,
            DT_SYMTAB => t.symtab = absolute(bias, v),
            DT_RELA => rela = absolute(bias, v),
            DT_RELASZ => relasz = v,
            DT_JMPREL => jmprel = absolute(bias, v),
            DT_PLTRELSZ => pltrelsz = v,
            _ => {}
        }
        // SAFETY: still within the section: DT_NULL has not been reached.
        at = unsafe { at.add(1) };
    }
    t.rela = (rela, relasz);
    t.jmprel = (jmprel, pltrelsz);
    t
}

/// # Safety
/// `start..start + size` is a mapped `Elf64_Rela` table of the object described by `t`.
unsafe fn patch_table(
    cx: &mut Ctx,
    t: &Tables,
    bias: usize,
    relro: Option<(usize, usize)>,
    start: usize,
    size: usize,
) {
    if start == 0 || t.symtab == 0 || t.strtab == 0 {
        return;
    }
    let n = size / size_of::<libc::Elf64_Rela>();
    for i in 0..n {
        // SAFETY: entry `i` lies within the table (the caller's promise).
        let r = unsafe { (start as *const libc::Elf64_Rela).add(i).read() };
        let ty = (r.r_info & 0xffff_ffff) as u32;
        let sym = (r.r_info >> 32) as usize;
        if (ty != R_JUMP_SLOT && ty != R_GLOB_DAT) || sym == 0 {
            continue;
        }
        // SAFETY: the relocation's symbol index is an entry of the object's symbol table.
        let s = unsafe { (t.symtab as *const libc::Elf64_Sym).add(sym).read() };
        let name_at = s.st_name as usize;
        if name_at >= t.strsz {
            continue;
        }
        // SAFETY: st_name is an offset into the string table, checked against DT_STRSZ; the
        // string is NUL-terminated inside it.
        let name = unsafe { CStr::from_ptr((t.strtab + name_at) as *const libc::c_char) };
        let Some(hook) = cx
            .hooks
            .iter()
            .find(|h| &h.name[..h.name.len() - 1] == name.to_bytes())
        else {
            continue;
        };
        let slot = bias + r.r_offset as usize;
        let relro = relro.is_some_and(|(s, e)| (s..e).contains(&slot));
        // SAFETY: the slot is the object's GOT entry the loader wrote for this relocation.
        match unsafe { store(slot, hook.addr, relro) } {
            Some(old) if old != hook.addr => {
                cx.patched.push(Patched {
                    slot,
                    old,
                    hook: hook.addr,
                    relro,
                });
                cx.written += 1;
            }
            _ => {}
        }
    }
}

/// Writes `value` into the pointer-sized slot at `slot`; returns what it held (`None` if the
/// page could not be made writable).
///
/// # Safety
/// `slot` is an aligned, mapped GOT entry; `relro` says whether its page is read-only.
unsafe fn store(slot: usize, value: usize, relro: bool) -> Option<usize> {
    let len = page_size();
    let page = (slot & !(len - 1)) as *mut c_void;
    // SAFETY: `page..page + len` is the mapped page holding the slot.
    if relro && unsafe { libc::mprotect(page, len, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        return None;
    }
    // SAFETY: the slot is aligned and now writable; an atomic store keeps concurrent callers
    // reading either the old or the new function.
    let old = unsafe { AtomicUsize::from_ptr(slot as *mut usize) }.swap(value, Ordering::AcqRel);
    if relro {
        // SAFETY: as above; RELRO pages are read-only once relocated.
        unsafe { libc::mprotect(page, len, libc::PROT_READ) };
    }
    Some(old)
}

fn walk(cx: &mut Ctx) {
    // SAFETY: `visit` matches the callback type and reads `cx` only through `data`.
    unsafe { libc::dl_iterate_phdr(Some(visit), (cx as *mut Ctx).cast()) };
}

/// Points every loaded object's GOT entries for `hooks` at them (fdguard's own object, at
/// `own`, excepted). Returns (slots written, objects looked at). Slots already pointing at a
/// hook are left as they are, so calling it again after a `dlopen` patches only what is new.
pub fn patch_all(hooks: &[Hook], own: usize) -> (usize, usize) {
    let mut patched = PATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let mut cx = Ctx::new(hooks, own, Walk::Patch, &mut patched);
    walk(&mut cx);
    (cx.written, cx.objects)
}

/// Puts back what `patch_all` replaced, where a slot still holds the hook; slots of objects
/// unloaded since went with them. Returns the slots restored.
pub fn restore_all() -> usize {
    let mut patched = PATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let mut cx = Ctx::new(&[], 0, Walk::Restore, &mut patched);
    walk(&mut cx);
    let restored = cx.written;
    cx.patched.clear();
    restored
}

/// True if fdguard's object (holding `own`) was loaded with the program, before libc (as a
/// preload, or from /etc/ld.so.preload), rather than `dlopen`ed later (by `fdguard attach`).
pub fn loaded_at_startup(own: usize, in_libc: usize) -> bool {
    let mut none = Vec::new();
    let mut cx = Ctx::new(&[], own, Walk::Order, &mut none);
    cx.find = [own, in_libc];
    walk(&mut cx);
    match cx.found {
        [Some(ours), Some(libc)] => ours < libc,
        _ => true,
    }
}

/// An address inside this library.
pub fn own_address() -> usize {
    own_address as *const () as usize
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
