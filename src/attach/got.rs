//! Interposition after the fact: the loaded objects' GOT entries for the functions fdguard
//! hooks are pointed at the hooks, as the dynamic loader would have bound them had fdguard been
//! preloaded, and pointed back on detach.
//!
//! # How
//! For each object the loader lists (`objects`), the `PT_DYNAMIC` entries give the relocation
//! tables: `DT_JMPREL` (the PLT's `JUMP_SLOT`s) and `DT_RELA` (`GLOB_DAT`s, what `-fno-plt`
//! calls and taken addresses use). A relocation whose symbol is a hooked name gets the hook's
//! address, with one aligned pointer store (a thread calling through it meanwhile gets the old
//! function or the hook, both correct). Slots inside `PT_GNU_RELRO` are made writable for the
//! store and read-only again. fdguard's own object, the dynamic loader and the vDSO are left
//! alone. `R_X86_64_64` data pointers are not touched: they are the program's values, not
//! calls.
//!
//! # Objects loaded later
//! The `dlopen` and `dlmopen` hooks (`super::dlopen`) call `patch_new` before they return to
//! the program. It looks only at the objects loaded since the last walk that saw them all: the
//! loader counts the objects it ever loaded (`Object::adds`) and appends each to its list, so
//! those still loaded are the last ones (none at all after a `dlopen` of an object already
//! loaded). A walk stops at an object the loader has not finished relocating, which another
//! thread is `dlopen`ing: writing that object's GOT, and making its RELRO page read-only again,
//! would race the loader's own writes (where `unwind::relocated` cannot tell, glibc < 2.35, that
//! race remains). That thread's own hook patches it when its `dlopen` returns, or the next one
//! does.
//!
//! Everything is done inside `dl_iterate_phdr`'s callback, under the lock the loader holds for
//! it: walks of two threads never overlap, and the record of patched slots is locked only there,
//! so a `fork` child finds that record locked only where it finds the loader's lock held too
//! (glibc does not reset that one in a child: its `dl_iterate_phdr`, and a `dlopen` that loads
//! anything, would wait as well).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use libc::c_void;

use super::objects::{self, Object};
use crate::os::mem::page_size;
use crate::unwind;

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

/// The slots fdguard wrote and how far the walks got (see the module's documentation).
struct Patches {
    slots: Vec<Patched>,
    /// Between `patch_all` and `restore_all`: the hooks may patch what the program loads.
    on: bool,
    /// `Object::adds` when a walk last saw every object loaded.
    adds: u64,
}

static PATCHES: Mutex<Patches> = Mutex::new(Patches {
    slots: Vec::new(),
    on: false,
    adds: 0,
});

/// The record, locked: only inside `objects::each`'s callback, or by `attach`/`detach`.
fn patches() -> MutexGuard<'static, Patches> {
    PATCHES.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// Points `o`'s GOT slots for `hooks` at them, recording each in `slots`; returns how many it
/// wrote, or `None` for an object without a dynamic section.
fn patch_object(o: &Object, hooks: &[Hook], slots: &mut Vec<Patched>) -> Option<usize> {
    let dynamic = o.header(libc::PT_DYNAMIC)?;
    let relro = o.header(PT_GNU_RELRO).map(|p| o.segment(p));
    // SAFETY: PT_DYNAMIC of a loaded object is mapped and ends with DT_NULL.
    let tables = unsafe { read_dynamic(o.bias, o.segment(dynamic).0) };
    let mut written = 0;
    for (start, size) in [tables.jmprel, tables.rela] {
        let place = Place {
            tables: &tables,
            bias: o.bias,
            relro,
        };
        // SAFETY: the relocation tables the dynamic section names are mapped in the object.
        written += unsafe { patch_table(&place, hooks, slots, start, size) };
    }
    Some(written)
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

/// Where an object's relocations point: its tables, its load bias, its RELRO range.
struct Place<'a> {
    tables: &'a Tables,
    bias: usize,
    relro: Option<(usize, usize)>,
}

/// Patches the slots of one relocation table; returns how many it wrote.
///
/// # Safety
/// `start..start + size` is a mapped `Elf64_Rela` table of the object `at` describes.
unsafe fn patch_table(
    at: &Place,
    hooks: &[Hook],
    slots: &mut Vec<Patched>,
    start: usize,
    size: usize,
) -> usize {
    let t = at.tables;
    let mut written = 0;
    if start == 0 || t.symtab == 0 || t.strtab == 0 {
        return written;
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
        let Some(hook) = hooks
            .iter()
            .find(|h| &h.name[..h.name.len() - 1] == name.to_bytes())
        else {
            continue;
        };
        let slot = at.bias + r.r_offset as usize;
        let relro = at.relro.is_some_and(|(s, e)| (s..e).contains(&slot));
        // SAFETY: the slot is the object's GOT entry the loader wrote for this relocation.
        match unsafe { store(slot, hook.addr, relro) } {
            Some(old) if old != hook.addr => {
                slots.push(Patched {
                    slot,
                    old,
                    hook: hook.addr,
                    relro,
                });
                written += 1;
            }
            _ => {}
        }
    }
    written
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

/// Points every loaded object's GOT entries for `hooks` at them (fdguard's own object, at
/// `own`, excepted), and lets `patch_new` do the same for objects loaded from now on. Returns
/// (slots written, objects looked at).
pub fn patch_all(hooks: &[Hook], own: usize) -> (usize, usize) {
    patches().on = true;
    patch_new(hooks, own)
}

/// Patches the objects loaded since the last walk (see the module's documentation), unless
/// `restore_all` came first. Returns (slots written, objects looked at).
pub fn patch_new(hooks: &[Hook], own: usize) -> (usize, usize) {
    let (mut written, mut looked) = (0, 0);
    // The first object to look at, and `Object::adds` when the walk began (`None`: nothing new).
    let (mut from, mut seen) = (usize::MAX, None);
    let mut complete = true;
    objects::each(|o| {
        let mut p = patches();
        if !p.on {
            return ControlFlow::Break(());
        }
        if o.index == 0 {
            let new = o.adds.saturating_sub(p.adds);
            if new == 0 {
                return ControlFlow::Break(());
            }
            from = objects::count().saturating_sub(usize::try_from(new).unwrap_or(usize::MAX));
            seen = Some(o.adds);
        }
        if o.index < from || o.is_exempt(own) {
            return ControlFlow::Continue(());
        }
        let first = o.loads().next().map(|l| o.segment(l).0);
        if first.and_then(unwind::relocated) == Some(false) {
            complete = false;
            return ControlFlow::Break(());
        }
        if let Some(n) = patch_object(o, hooks, &mut p.slots) {
            written += n;
            looked += 1;
        }
        ControlFlow::Continue(())
    });
    if let Some(adds) = seen.filter(|_| complete) {
        // Another walk may have seen more since: it saw everything too.
        let mut p = patches();
        if p.on {
            p.adds = p.adds.max(adds);
        }
    }
    (written, looked)
}

/// Puts back what `patch_all` and `patch_new` replaced, where a slot still holds the hook;
/// slots of objects unloaded since went with them. Nothing is patched after it. Returns the
/// slots restored.
pub fn restore_all() -> usize {
    {
        let mut p = patches();
        (p.on, p.adds) = (false, 0);
    }
    let mut restored = 0;
    objects::each(|o| {
        let mut p = patches();
        let mine: Vec<usize> = (0..p.slots.len())
            .filter(|i| o.holds(p.slots[*i].slot))
            .collect();
        for i in mine.into_iter().rev() {
            let s = p.slots.swap_remove(i);
            // SAFETY: the slot is a GOT entry of this object, loaded for the callback's length.
            let current =
                unsafe { AtomicUsize::from_ptr(s.slot as *mut usize) }.load(Ordering::Acquire);
            // SAFETY: as above.
            if current == s.hook && unsafe { store(s.slot, s.old, s.relro) }.is_some() {
                restored += 1;
            }
        }
        ControlFlow::Continue(())
    });
    patches().slots.clear();
    restored
}

/// True if fdguard's object (holding `own`) was loaded with the program, before libc (as a
/// preload, or from /etc/ld.so.preload), rather than `dlopen`ed later (by `fdguard attach`).
pub fn loaded_at_startup(own: usize, in_libc: usize) -> bool {
    let (mut ours, mut libc) = (None, None);
    objects::each(|o| {
        if ours.is_none() && o.holds(own) {
            ours = Some(o.index);
        }
        if libc.is_none() && o.holds(in_libc) {
            libc = Some(o.index);
        }
        ControlFlow::Continue(())
    });
    match (ours, libc) {
        (Some(ours), Some(libc)) => ours < libc,
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
