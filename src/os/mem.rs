//! Memory: the page size, zeroed mappings that live for the rest of the process (the fd table
//! and the interners size themselves for the worst case with them), and raw views of memory.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The page size, once read (0: not yet).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The system's page size (what `mprotect` works in), read once: from the auxiliary vector the
/// kernel passed at exec, else `sysconf`.
pub fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => {
            let size = read_page_size();
            PAGE_SIZE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

fn read_page_size() -> usize {
    // SAFETY: getauxval has no preconditions; it reads the vector the kernel passed at exec.
    let aux = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
    if aux.is_power_of_two() {
        return aux;
    }
    // SAFETY: sysconf has no preconditions.
    let conf = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(conf)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

/// Memory that starts zeroed and is never freed.
///
/// # Safety
/// Implementors must be valid when all their bytes are zero (atomics, integers, arrays of them).
pub unsafe trait Zeroable: Sync {}

/// Maps `count` zeroed `T`s that live for the rest of the process.
///
/// The pages are reserved with `MAP_NORESERVE`: untouched parts cost no memory, which is what
/// lets the fd table and the interners size themselves for the worst case up front.
pub fn leak_zeroed_slice<T: Zeroable>(count: usize) -> Option<&'static [T]> {
    let bytes = count.checked_mul(std::mem::size_of::<T>())?;
    if bytes == 0 {
        return Some(&[]);
    }
    // SAFETY: anonymous private mapping with no address hint; checked for MAP_FAILED below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the mapping is page-aligned (so aligned for T), `bytes` long, zero-filled (valid
    // for `Zeroable` types), never unmapped, and not aliased by any other reference.
    Some(unsafe { std::slice::from_raw_parts(p.cast::<T>(), count) })
}

/// Views a slice of machine words as bytes (for hashing and interning stacks).
pub fn words_as_bytes(words: &[usize]) -> &[u8] {
    // SAFETY: usize has no padding and any byte pattern is a valid u8; the length is exact and the
    // lifetime is tied to `words`.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// A NUL-terminated C string from a pointer the program passed to a hooked call.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives the returned slice (the
/// duration of the hooked call).
pub unsafe fn c_bytes<'a>(p: *const libc::c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// A fixed-size array of `N` zeroed `T`s, mapped on first use and never freed.
///
/// # Why
/// The fd table covers every possible fd number and the interners size for the worst case, but a
/// program that opens ten files should pay for one page. Mapping on demand with a CAS keeps the
/// first use lock-free: a thread that loses the race unmaps its copy; nobody ever waits.
pub struct LazySlice<T: Zeroable, const N: usize> {
    ptr: std::sync::atomic::AtomicPtr<T>,
}

// SAFETY: a null pointer is the valid "not mapped yet" state.
unsafe impl<T: Zeroable, const N: usize> Zeroable for LazySlice<T, N> {}

impl<T: Zeroable, const N: usize> Default for LazySlice<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Zeroable, const N: usize> LazySlice<T, N> {
    pub const fn new() -> Self {
        Self {
            ptr: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The array if it has been mapped.
    #[inline(always)]
    pub fn get(&self) -> Option<&'static [T; N]> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was published by `get_or_map` below and points to a
        // never-unmapped, zero-initialized array of exactly N `T`s.
        unsafe { p.cast::<[T; N]>().as_ref() }
    }

    /// The array, mapping it first if needed. `None` only if the kernel refuses the mapping.
    pub fn get_or_map(&self) -> Option<&'static [T; N]> {
        if let Some(a) = self.get() {
            return Some(a);
        }
        let fresh = leak_zeroed_slice::<T>(N)?;
        let fresh_ptr = fresh.as_ptr() as *mut T;
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            fresh_ptr,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => self.get(),
            Err(_) => {
                // SAFETY: the losing mapping was never published, so no reference to it exists
                // besides `fresh`, which is not used after this point.
                unsafe { libc::munmap(fresh_ptr.cast(), N * std::mem::size_of::<T>()) };
                self.get()
            }
        }
    }
}

// SAFETY: atomics are valid when zeroed.
unsafe impl Zeroable for std::sync::atomic::AtomicU64 {}
// SAFETY: atomics are valid when zeroed.
unsafe impl Zeroable for std::sync::atomic::AtomicU32 {}
// SAFETY: atomics are valid when zeroed.
unsafe impl Zeroable for std::sync::atomic::AtomicUsize {}
// SAFETY: every byte pattern is a valid u8.
unsafe impl Zeroable for u8 {}
// SAFETY: an array of zero-valid values is zero-valid.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}
