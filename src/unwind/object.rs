//! Which loaded object holds a pc, and where its unwind tables may be read.
//!
//! `_dl_find_object` (glibc >= 2.35) is lock-free and async-signal-safe;
//! `dl_iterate_phdr` would take the loader lock, which a signal handler or
//! a post-fork child may find held forever.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::reader::Reader;

/// glibc's `struct dl_find_object` on x86_64 (no `dlfo_eh_dbase`).
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: usize,
    map_end: usize,
    link_map: *mut c_void,
    eh_frame: usize,
    reserved: [u64; 7],
}

type FindObjectFn = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;

/// `_dl_find_object`, or 0 before `init` / on older glibc.
static FIND_OBJECT: AtomicUsize = AtomicUsize::new(0);

const PAGE_SIZE: usize = 4096;
const PT_LOAD: u32 = 1;
const PF_R: u32 = 4;
const PHDR_SIZE: u16 = 56;

pub(crate) enum ObjectCfi {
    /// No loaded object holds the pc (JIT code, garbage): do not cache.
    Unknown,
    /// The object has no usable `.eh_frame_hdr`: no CFI to go by, and that can be cached.
    Absent,
    /// A reader at `.eh_frame_hdr`, windowed to the segment holding it.
    At(Reader<'static>),
}

/// Where the kernel mapped the main program's program headers, and how many there are
/// (`AT_PHDR`, `AT_PHNUM`): 0 before `init`.
static MAIN_PHDR: AtomicUsize = AtomicUsize::new(0);
static MAIN_PHNUM: AtomicUsize = AtomicUsize::new(0);

/// Resolves `_dl_find_object`. Takes the loader lock: call at load time,
/// not from a hook. Returns whether it exists.
pub(crate) fn init() -> bool {
    // SAFETY: getauxval has no preconditions; it reads the vector the kernel passed at exec.
    let (phdr, phnum) = unsafe {
        (
            libc::getauxval(libc::AT_PHDR),
            libc::getauxval(libc::AT_PHNUM),
        )
    };
    MAIN_PHDR.store(phdr as usize, Ordering::Relaxed);
    MAIN_PHNUM.store(phnum as usize, Ordering::Relaxed);
    // SAFETY: dlsym is given RTLD_DEFAULT and a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
    // Release: publishes the headers' address with the function.
    FIND_OBJECT.store(f as usize, Ordering::Release);
    !f.is_null()
}

/// See `unwind::finds_objects_lock_free`.
pub(crate) fn finds_objects_lock_free() -> bool {
    FIND_OBJECT.load(Ordering::Acquire) != 0
}

/// `_dl_find_object` for `pc`, if it exists and some loaded object holds `pc`.
fn find_object(pc: usize) -> Option<DlFindObject> {
    let f = FIND_OBJECT.load(Ordering::Acquire);
    if f == 0 {
        return None;
    }
    // SAFETY: a non-zero value was stored by `init` from dlsym of
    // `_dl_find_object`, whose C signature is exactly `FindObjectFn`.
    let find_object: FindObjectFn = unsafe { core::mem::transmute::<usize, FindObjectFn>(f) };
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut found: DlFindObject = unsafe { core::mem::zeroed() };
    // SAFETY: `found` is a writable dl_find_object; the address is only
    // compared, never dereferenced, by glibc.
    (unsafe { find_object(pc as *mut c_void, &mut found) } == 0).then_some(found)
}

/// Whether `_dl_find_object` knows the object holding `pc`; `None` where it does not exist
/// (glibc < 2.35) or before `init`. glibc adds an object to what it answers from only once the
/// object is relocated (and its RELRO made read-only), before its constructors run.
pub(crate) fn listed(pc: usize) -> Option<bool> {
    if FIND_OBJECT.load(Ordering::Acquire) == 0 {
        return None;
    }
    Some(find_object(pc).is_some())
}

/// The public head of glibc's `struct link_map` (`<link.h>`).
#[repr(C)]
struct LinkMapHead {
    l_addr: usize,
    l_name: *const core::ffi::c_char,
    l_ld: usize,
}

const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_STRSZ: u64 = 10;
const DT_GNU_HASH: u64 = 0x6fff_fef5;
const SYM_SIZE: usize = 24;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;

/// The exported function holding `pc`, from its object's dynamic symbol
/// table in memory: what `dladdr` answers, without the loader lock, which
/// a report child may have been copied with, held by a thread that does
/// not exist there. `None` if the object or the symbol is unknown.
pub(crate) fn exported_function(pc: usize) -> Option<&'static [u8]> {
    let found = find_object(pc)?;
    let map = found.link_map.cast::<LinkMapHead>();
    if map.is_null() {
        return None;
    }
    // SAFETY: as in `loaded_object`; `l_ld` is the object's dynamic section.
    let (bias, dynamic) = unsafe { ((*map).l_addr, (*map).l_ld) };
    // Every table is read through the readable segment holding it.
    let window = |addr: usize| -> Option<Reader<'static>> {
        let (start, end) = segment_holding(&found, addr)?;
        // SAFETY: a readable, file-backed PT_LOAD segment of a loaded
        // object (see `find`).
        unsafe { Reader::new(start, end) }.at(addr)
    };
    // glibc relocates these addresses in place where the dynamic section
    // is writable; an unrelocated one (a read-only section) is an offset
    // from the load bias.
    let absolute = |v: u64| {
        let v = usize::try_from(v).ok()?;
        Some(if v < found.map_start {
            bias.checked_add(v)?
        } else {
            v
        })
    };
    let (mut symtab, mut strtab, mut strsz, mut hash, mut gnu_hash) = (0, 0, 0, 0, 0);
    let mut d = window(dynamic)?;
    loop {
        let (tag, value) = (d.u64()?, d.u64()?);
        match tag {
            DT_NULL => break,
            DT_SYMTAB => symtab = absolute(value)?,
            DT_STRTAB => strtab = absolute(value)?,
            DT_STRSZ => strsz = usize::try_from(value).ok()?,
            DT_HASH => hash = absolute(value)?,
            DT_GNU_HASH => gnu_hash = absolute(value)?,
            _ => {}
        }
    }
    let count = if hash != 0 {
        let mut h = window(hash)?;
        h.skip(4)?;
        h.u32()? as usize
    } else if gnu_hash != 0 {
        gnu_hash_symbols(window(gnu_hash)?)?
    } else {
        return None;
    };
    // The string table follows the symbol table in every linker's layout: a bound on a count
    // read from a hash table.
    let count = match strtab.checked_sub(symtab) {
        Some(gap) if gap > 0 => count.min(gap / SYM_SIZE),
        _ => count,
    };
    let strings = window(strtab)?.split(strsz as u64)?;
    let mut syms = window(symtab)?;
    let mut best: Option<(usize, u32)> = None;
    for _ in 0..count {
        let name = syms.u32()?;
        let info = syms.u8()?;
        syms.skip(1)?;
        let section = syms.u16()?;
        let (value, size) = (syms.u64()?, syms.u64()?);
        let kind = info & 0xf;
        if section == 0 || value == 0 || (kind != STT_FUNC && kind != STT_GNU_IFUNC) {
            continue;
        }
        let start = bias.wrapping_add(usize::try_from(value).ok()?);
        let end = start.wrapping_add(usize::try_from(size).ok()?.max(1));
        if start <= pc && pc < end && best.is_none_or(|(s, _)| start > s) {
            best = Some((start, name));
        }
    }
    strings
        .at(strings.pos().checked_add(best?.1 as usize)?)?
        .cstr()
}

/// The number of symbols a `DT_GNU_HASH` table covers: one past the last
/// symbol of the longest chain.
fn gnu_hash_symbols(mut h: Reader<'static>) -> Option<usize> {
    let (buckets, first, bloom) = (h.u32()?, h.u32()?, h.u32()?);
    h.skip(4)?; // bloom shift
    h.skip(u64::from(bloom) * 8)?;
    let mut last = 0;
    for _ in 0..buckets {
        last = last.max(h.u32()?);
    }
    if last < first {
        return Some(first as usize);
    }
    // `h` is now at the chains, indexed from `first`.
    let mut chain = h.at(h.pos().checked_add((last - first) as usize * 4)?)?;
    let mut index = last as usize;
    while chain.u32()? & 1 == 0 {
        index += 1;
    }
    Some(index + 1)
}

/// The loaded object holding `pc`: its load bias and its name as the loader
/// has it (empty for the main program). Lock-free, unlike `dladdr` and
/// `dl_iterate_phdr`, so a report child can use it even if a thread that
/// was not copied held the loader lock.
pub(crate) fn loaded_object(pc: usize) -> Option<(usize, &'static core::ffi::CStr)> {
    let found = find_object(pc)?;
    let map = found.link_map.cast::<LinkMapHead>();
    if map.is_null() {
        return None;
    }
    // SAFETY: `dlfo_link_map` points to the loader's link_map for the
    // object, which stays valid while the object is loaded; its first two
    // fields are the public `l_addr` and `l_name` (a NUL-terminated string,
    // "" for the main program).
    unsafe {
        let head = &*map;
        if head.l_name.is_null() {
            return None;
        }
        Some((head.l_addr, core::ffi::CStr::from_ptr(head.l_name)))
    }
}

pub(crate) fn find(pc: usize) -> ObjectCfi {
    let Some(found) = find_object(pc) else {
        return ObjectCfi::Unknown;
    };
    if found.eh_frame == 0 {
        return ObjectCfi::Absent;
    }
    match segment_holding(&found, found.eh_frame) {
        Some((start, end)) => {
            // SAFETY: `[start, end)` is the file-backed part of a readable
            // PT_LOAD segment of an object that stays loaded while we use
            // it: `pc` is inside this module or a return address of a frame
            // live on this thread's stack, and unloading an object with
            // live frames would already break the program. (A garbage pc
            // from a corrupted stack could race with a dlclose of another
            // thread; libgcc's unwinder shares that window.)
            let segment = unsafe { Reader::new(start, end) };
            segment
                .at(found.eh_frame)
                .map_or(ObjectCfi::Absent, ObjectCfi::At)
        }
        None => ObjectCfi::Absent,
    }
}

/// The readable part of the PT_LOAD segment of `object` containing `addr`, from the object's
/// program headers, within the mapping `_dl_find_object` reports around `addr` for that same
/// object. Bounding reads to it (rather than to the whole reservation of the object, which has
/// PROT_NONE holes between segments) keeps corrupt tables from faulting.
fn segment_holding(object: &DlFindObject, addr: usize) -> Option<(usize, usize)> {
    let map = object.link_map.cast::<LinkMapHead>();
    if map.is_null() {
        return None;
    }
    // SAFETY: as in `loaded_object`: the loader's link_map, valid while the object is loaded.
    let bias = unsafe { (*map).l_addr };
    // Per segment when the object is not mapped in one piece (see `program_headers`).
    let around = find_object(addr).filter(|a| a.link_map == object.link_map)?;
    let (headers, count) = program_headers(object)?;
    for i in 0..count {
        let mut ph = headers.at(headers.pos().checked_add(i * usize::from(PHDR_SIZE))?)?;
        let (p_type, p_flags) = (ph.u32()?, ph.u32()?);
        ph.skip(8)?; // p_offset
        let vaddr = usize::try_from(ph.u64()?).ok()?;
        ph.skip(8)?; // p_paddr
        let filesz = usize::try_from(ph.u64()?).ok()?;
        if p_type != PT_LOAD || p_flags & PF_R == 0 {
            continue;
        }
        let start = bias.wrapping_add(vaddr).max(around.map_start);
        let end = bias
            .wrapping_add(vaddr)
            .checked_add(filesz)?
            .min(around.map_end);
        if start <= addr && addr < end {
            return Some((start, end));
        }
    }
    None
}

/// A reader at `object`'s first program header, and how many there are.
///
/// An object the loader mapped in one piece starts with its ELF header, which says where the
/// program headers are. The main program is mapped by the kernel, segment by segment: when
/// its segments are not adjacent (node's, aligned to 2 MiB for its large-pages stub) glibc
/// reports each segment as a mapping of its own, so the one holding a pc may start anywhere.
/// Its program headers are where the kernel said (`AT_PHDR`), inside its first segment.
fn program_headers(object: &DlFindObject) -> Option<(Reader<'static>, usize)> {
    let (map_start, map_end) = (object.map_start, object.map_end);
    // SAFETY: the first page of a mapping glibc reports is mapped and readable: a PT_LOAD
    // segment starts there (every segment is readable in the output of linkers ld.so and the
    // kernel load).
    let first_page =
        unsafe { Reader::new(map_start, map_end.min(map_start.checked_add(PAGE_SIZE)?)) };
    let mut magic = first_page;
    if magic.u32() == Some(u32::from_le_bytes(*b"\x7fELF")) {
        let phoff = usize::try_from(first_page.at(map_start + 32)?.u64()?).ok()?;
        let mut r = first_page.at(map_start + 54)?;
        if r.u16()? != PHDR_SIZE {
            return None;
        }
        let count = usize::from(r.u16()?);
        return Some((first_page.at(map_start.checked_add(phoff)?)?, count));
    }
    let (phdr, count) = (
        MAIN_PHDR.load(Ordering::Relaxed),
        MAIN_PHNUM.load(Ordering::Relaxed),
    );
    let end = phdr.checked_add(count.checked_mul(usize::from(PHDR_SIZE))?)?;
    let holder = find_object(phdr).filter(|h| h.link_map == object.link_map)?;
    if phdr < holder.map_start || end > holder.map_end {
        return None;
    }
    // SAFETY: `[phdr, end)` lies inside a mapping of the main program that glibc reports,
    // which the kernel mapped readable (ld.so read these very headers at start).
    Some((unsafe { Reader::new(phdr, end) }, count))
}
