//! Reading a runtime's memory without ever faulting.
//!
//! A runtime's frames are plain memory that fdguard reads without the runtime's help (no
//! lock, no GIL): a pointer read from it could be stale (a frame being pushed when a signal
//! handler opened a file) or, with a layout fdguard misjudged, anything. So memory is read
//! directly only inside regions vouched for as mapped for the time of the read (`Vouched`:
//! the calling thread's own stack and the runtime's per-thread frame stack, which only the
//! thread itself could free, and it is inside the hook); anything else is copied by the
//! kernel (`process_vm_readv` on this process), which fails with `EFAULT` where a load would
//! have faulted. A copy costs ~0.4 µs, a load nothing: captures that stay in vouched regions
//! make no system call.

/// Copies `buf.len()` bytes at `addr` of this process into `buf`, through the kernel: false
/// (and nothing read) where any of it is not mapped readable. `me` is this process's id or the
/// calling thread's (the kernel reads the memory of the task's process either way): the
/// thread's costs no `getpid` in a hook.
pub fn copy(me: u32, addr: usize, buf: &mut [u8]) -> bool {
    if buf.is_empty() {
        return true;
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is writable for its length; the kernel checks
    // `remote` itself and reports a fault as an error instead of raising it. A raw system
    // call: no libc wrapper state, usable in hooks and in report children.
    let n = unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            me as libc::pid_t,
            &local as *const libc::iovec,
            1usize,
            &remote as *const libc::iovec,
            1usize,
            0usize,
        )
    };
    n == buf.len() as libc::c_long
}

/// The native-endian word at `off` in `bytes` (0 past its end).
pub fn word_at(bytes: &[u8], off: usize) -> usize {
    let mut w = [0u8; std::mem::size_of::<usize>()];
    match bytes.get(off..off + w.len()) {
        Some(b) => {
            w.copy_from_slice(b);
            usize::from_ne_bytes(w)
        }
        None => 0,
    }
}

/// The most bytes `Vouched::words` reads at once.
pub const MAX_WORDS_READ: usize = 256;

/// The most regions one capture vouches for.
const REGIONS: usize = 6;

/// Regions known to stay mapped while the current hook runs, read with plain loads; every
/// other address is copied by the kernel.
pub struct Vouched {
    regions: [(usize, usize); REGIONS],
    len: usize,
    /// Every address past the first page is vouched for (`vouch_for_all`).
    all: bool,
    /// Who asks the kernel for copies (see `copy`).
    me: u32,
}

impl Vouched {
    /// Nothing vouched for yet; copies asked for as task `me`.
    pub const fn new(me: u32) -> Self {
        Self {
            regions: [(0, 0); REGIONS],
            len: 0,
            all: false,
            me,
        }
    }

    /// Vouches for every address that will be read (but the first page, never mapped).
    ///
    /// # Safety
    /// Every address `read`, `words` or `word` is given from now on must be mapped readable
    /// for as long as `self` is used: the caller knows the structure it follows to be intact.
    pub unsafe fn vouch_for_all(&mut self) {
        self.all = true;
    }

    /// Adds `[lo, hi)` (ignored when full or empty).
    ///
    /// # Safety
    /// Every byte of `[lo, hi)` must be mapped readable for as long as `self` is used.
    pub unsafe fn vouch(&mut self, lo: usize, hi: usize) {
        if lo < hi
            && let Some(slot) = self.regions.get_mut(self.len)
        {
            *slot = (lo, hi);
            self.len += 1;
        }
    }

    #[inline(always)]
    fn covers(&self, addr: usize, len: usize) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        if self.all {
            return addr >= 4096;
        }
        self.regions
            .iter()
            .take(self.len)
            .any(|&(lo, hi)| lo <= addr && end <= hi)
    }

    /// Reads `buf.len()` bytes at `addr`: false where they are not all mapped.
    #[inline]
    pub fn read(&self, addr: usize, buf: &mut [u8]) -> bool {
        if self.covers(addr, buf.len()) {
            // SAFETY: `vouch`'s contract: the whole range is mapped readable while `self`
            // is used; byte copies have no alignment requirement.
            unsafe {
                std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len());
            }
            return true;
        }
        copy(self.me, addr, buf)
    }

    /// The words at `offsets` from `base` (each within the first `len` bytes, which are read
    /// whole), if mapped: plain loads in a vouched region, else one copy by the kernel.
    #[inline]
    pub fn words<const N: usize>(
        &self,
        base: usize,
        len: usize,
        offsets: [usize; N],
    ) -> Option<[usize; N]> {
        let len = len.min(MAX_WORDS_READ);
        if offsets
            .iter()
            .any(|o| o + std::mem::size_of::<usize>() > len)
        {
            return None;
        }
        if self.covers(base, len) {
            // SAFETY: `vouch`'s contract: `[base, base + len)` is mapped readable while `self`
            // is used, and every offset plus a word lies within it (checked above).
            return Some(offsets.map(|o| unsafe { ((base + o) as *const usize).read_unaligned() }));
        }
        let mut buf = [0u8; MAX_WORDS_READ];
        let buf = buf.get_mut(..len)?;
        copy(self.me, base, buf).then(|| offsets.map(|o| word_at(buf, o)))
    }

    /// The word at `addr`, if mapped.
    #[inline]
    pub fn word(&self, addr: usize) -> Option<usize> {
        let mut w = [0u8; std::mem::size_of::<usize>()];
        self.read(addr, &mut w).then(|| usize::from_ne_bytes(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_what_is_mapped_and_refuses_what_is_not() {
        let data = [7u8, 8, 9, 10];
        let mut buf = [0u8; 4];
        let me = std::process::id();
        assert!(copy(me, data.as_ptr() as usize, &mut buf));
        assert_eq!(buf, data);
        assert!(!copy(me, 8, &mut buf));
        assert!(!copy(me, usize::MAX - 2, &mut buf));
    }

    #[test]
    fn vouched_regions_are_read_directly_others_through_the_kernel() {
        let data: [usize; 2] = [0x1122, 0x3344];
        let at = data.as_ptr() as usize;
        let mut v = Vouched::new(std::process::id());
        assert_eq!(v.word(at + 8), Some(0x3344));
        // SAFETY: `data` outlives `v`.
        unsafe { v.vouch(at, at + 16) };
        assert!(v.covers(at, 16) && !v.covers(at + 8, 16) && !v.covers(usize::MAX, 2));
        assert_eq!(v.word(at), Some(0x1122));
        assert_eq!(v.word(16), None);
        // SAFETY: only `data` and the first page are read below; the first page is refused.
        unsafe { v.vouch_for_all() };
        assert!(v.covers(at + 8, 8) && !v.covers(16, 8));
        assert_eq!(v.word(16), None);
        assert_eq!(word_at(&[1, 0, 0, 0, 0, 0, 0, 0, 9], 0), 1);
        assert_eq!(word_at(&[1, 2], 0), 0);
    }
}
