//! `Interner`: a lock-free, append-only set of byte strings with small integer ids.
//!
//! # Why
//! Paths and call stacks repeat: a leak is the same `fopen` site a thousand times. Each table
//! entry holds a 4-byte id instead of a copy. Interning happens inside hooks, so it must not
//! allocate, lock or wait:
//! - the bytes are copied into a pre-reserved arena (bump pointer) *before* the index entry that
//!   points at them is published with a CAS, so a reader that sees an entry sees its bytes;
//! - two threads interning the same new key race on the same index slot; the loser finds the
//!   winner's entry equal and uses it (its own arena bytes are wasted, which is rare and small);
//! - when the arena or the index is full, `intern` returns `None` and the caller degrades
//!   (paths fall back to the kernel's view at report time; stacks are reported as unknown).
//!
//! Ids are index slot numbers, so `get` can validate any id: an empty slot is `None`.
//!
//! The index is tiered so that memory follows use: keys go to a small first region
//! (`SLOTS` entries, a few pages) and only spill into regions 8 and 64 times larger when their
//! probe sequence there is full. One flat hash table of the final size would touch a new page
//! for almost every key (4 MB of index for 1000 stacks).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::os::mem::LazySlice;

const MAX_PROBES: usize = 64;
const LEN_BYTES: usize = 4;

/// Fast non-cryptographic hash (word-at-a-time multiply-rotate, as in rustc's FxHasher). Keys
/// are read eight bytes at a time with plain loads; the tail is the last eight bytes
/// (overlapping) when there are that many, so the hot path never calls `memcpy`. Long keys
/// (stacks: 32 frames, 256 bytes) go through four independent lanes, so the multiplications
/// overlap instead of forming one 32-long dependency chain.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    let mut lanes = [(bytes.len() as u64).wrapping_mul(K), 1, 2, 3];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (lane, c) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            *lane = mix(*lane, word(c));
        }
    }
    let mut h = lanes.iter().skip(1).fold(lanes[0], |h, lane| mix(h, *lane));
    let rest = blocks.remainder();
    let mut chunks = rest.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, word(c));
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let last = match bytes.len().checked_sub(8) {
            Some(start) => word(&bytes[start..]),
            None => tail
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, b)| w | (u64::from(*b) << (8 * i))),
        };
        h = mix(h, last);
    }
    // Final avalanche so that both the low bits (slot) and the high bits (tag) are mixed.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Sizes of the index regions, as multiples of `SLOTS`.
const TIERS: [usize; 3] = [1, 8, 64];
const TIER_TOTAL: usize = 1 + 8 + 64;

/// `SLOTS` (the first region's size) must be a power of two; `ARENA` is the byte capacity for
/// all keys. `INDEX` must be `SLOTS * 73` (three regions of 1, 8 and 64 times `SLOTS`).
pub struct Interner<const SLOTS: usize, const INDEX: usize, const ARENA: usize> {
    index: LazySlice<AtomicU64, INDEX>,
    arena: AtomicPtr<u8>,
    used: AtomicUsize,
}

impl<const SLOTS: usize, const INDEX: usize, const ARENA: usize> Default
    for Interner<SLOTS, INDEX, ARENA>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize, const INDEX: usize, const ARENA: usize> Interner<SLOTS, INDEX, ARENA> {
    const CHECKED: () = assert!(
        SLOTS.is_power_of_two() && INDEX == SLOTS * TIER_TOTAL && ARENA < u32::MAX as usize
    );

    pub const fn new() -> Self {
        Self {
            index: LazySlice::new(),
            arena: AtomicPtr::new(std::ptr::null_mut()),
            used: AtomicUsize::new(0),
        }
    }

    fn arena_base(&self) -> Option<*mut u8> {
        let p = self.arena.load(Ordering::Acquire);
        if !p.is_null() {
            return Some(p);
        }
        let fresh = crate::os::mem::leak_zeroed_slice::<u8>(ARENA)?.as_ptr() as *mut u8;
        match self.arena.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Some(fresh),
            Err(winner) => {
                // SAFETY: `fresh` was never published; unmapping it invalidates nothing.
                unsafe { libc::munmap(fresh.cast(), ARENA) };
                Some(winner)
            }
        }
    }

    /// Copies `key` into the arena; returns its offset. The bytes are immutable afterwards.
    fn push(&self, key: &[u8]) -> Option<u32> {
        let base = self.arena_base()?;
        let need = (LEN_BYTES + key.len()).next_multiple_of(8);
        let off = self.used.fetch_add(need, Ordering::Relaxed);
        if off.checked_add(need)? > ARENA {
            // Leave `used` past the end: later pushes fail fast the same way.
            return None;
        }
        // SAFETY: [off, off+need) lies inside the arena mapping and was handed out to this call
        // alone by the fetch_add above; no reader can reach it before the index entry that this
        // call publishes afterwards (with Release ordering).
        unsafe {
            let dst = base.add(off);
            std::ptr::copy_nonoverlapping((key.len() as u32).to_ne_bytes().as_ptr(), dst, 4);
            std::ptr::copy_nonoverlapping(key.as_ptr(), dst.add(LEN_BYTES), key.len());
        }
        Some(off as u32)
    }

    /// The bytes stored at `off` by `push`.
    fn bytes_at(&self, off: u32) -> Option<&'static [u8]> {
        let base = self.arena.load(Ordering::Acquire);
        if base.is_null() || off as usize + LEN_BYTES > ARENA {
            return None;
        }
        // SAFETY: `off` comes from an index entry loaded with Acquire ordering, published only
        // after `push` wrote the length and bytes; those bytes are never written again and the
        // arena is never unmapped. The length is bounds-checked against the arena.
        unsafe {
            let p = base.add(off as usize);
            let mut len = [0u8; 4];
            std::ptr::copy_nonoverlapping(p, len.as_mut_ptr(), 4);
            let len = u32::from_ne_bytes(len) as usize;
            if off as usize + LEN_BYTES + len > ARENA {
                return None;
            }
            Some(std::slice::from_raw_parts(p.add(LEN_BYTES), len))
        }
    }

    /// The id of `key`, adding it if new. `None` when the interner is full.
    pub fn intern(&self, key: &[u8]) -> Option<u32> {
        let () = Self::CHECKED;
        let index = self.index.get_or_map()?;
        let h = hash_bytes(key);
        let tag = (h >> 32) | 1;
        let mut pushed: Option<u32> = None;
        let mut start = 0;
        for tier in TIERS {
            let size = SLOTS * tier;
            let mut i = (h as usize) & (size - 1);
            for _ in 0..MAX_PROBES {
                let slot = index.get(start + i)?;
                let mut e = slot.load(Ordering::Acquire);
                if e == 0 {
                    let off = match pushed {
                        Some(off) => off,
                        None => *pushed.insert(self.push(key)?),
                    };
                    let new = (tag << 32) | (off as u64 + 1);
                    match slot.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => return Some((start + i) as u32),
                        Err(winner) => e = winner,
                    }
                }
                if e >> 32 == tag && self.bytes_at(((e & 0xffff_ffff) - 1) as u32) == Some(key) {
                    return Some((start + i) as u32);
                }
                i = (i + 1) & (size - 1);
            }
            // Every slot on this region's probe path is taken for good (entries are never
            // removed), so the key, if present at all, is in a later region.
            start += size;
        }
        None
    }

    /// The bytes of an id returned by `intern`; `None` for any other number.
    pub fn get(&self, id: u32) -> Option<&'static [u8]> {
        let e = self.index.get()?.get(id as usize)?.load(Ordering::Acquire);
        if e == 0 {
            return None;
        }
        self.bytes_at(((e & 0xffff_ffff) - 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_id_and_bytes_round_trip() {
        let t: Interner<1024, { 1024 * 73 }, 65536> = Interner::new();
        let a = t.intern(b"/dev/null").unwrap();
        let b = t.intern(b"/etc/hosts").unwrap();
        assert_ne!(a, b);
        assert_eq!(t.intern(b"/dev/null"), Some(a));
        assert_eq!(t.get(a), Some(&b"/dev/null"[..]));
        assert_eq!(t.get(b), Some(&b"/etc/hosts"[..]));
        let empty = t.intern(b"").unwrap();
        assert_eq!(t.get(empty), Some(&b""[..]));
    }

    #[test]
    fn hash_depends_on_every_byte_and_the_length() {
        let base = b"/var/lib/app/data.db".to_vec();
        let h = hash_bytes(&base);
        for i in 0..base.len() {
            let mut k = base.clone();
            k[i] ^= 1;
            assert_ne!(hash_bytes(&k), h, "byte {i}");
        }
        assert_ne!(hash_bytes(b"ab"), hash_bytes(b"ab\0"));
        let stack: Vec<u8> = (0..256u32).map(|i| i as u8).collect();
        for i in [0, 9, 17, 31, 32, 255] {
            let mut k = stack.clone();
            k[i] ^= 0x80;
            assert_ne!(hash_bytes(&k), hash_bytes(&stack), "byte {i}");
        }
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
    }

    #[test]
    fn unknown_ids_are_none() {
        let t: Interner<64, { 64 * 73 }, 4096> = Interner::new();
        assert_eq!(t.get(3), None);
        t.intern(b"x").unwrap();
        assert_eq!(t.get(1_000_000), None);
    }

    #[test]
    fn full_arena_degrades_to_none() {
        let t: Interner<64, { 64 * 73 }, 64> = Interner::new();
        assert!(t.intern(&[1u8; 40]).is_some());
        assert_eq!(t.intern(&[2u8; 40]), None);
        // Existing keys are still found.
        assert!(t.intern(&[1u8; 40]).is_some());
    }

    #[test]
    fn spills_into_larger_regions_then_degrades_to_none() {
        let t: Interner<1, 73, 65536> = Interner::new();
        let ids: Vec<_> = (0..73u8).map(|i| t.intern(&[i]).unwrap()).collect();
        // The first key fills the 1-slot region, the next 8 the 8-slot one, the rest the last.
        assert_eq!(ids[0], 0);
        assert!(ids[1..9].iter().all(|id| (1..9).contains(id)));
        assert!(ids[9..].iter().all(|id| (9..73).contains(id)));
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.intern(&[i as u8]), Some(*id));
            assert_eq!(t.get(*id), Some(&[i as u8][..]));
        }
        assert_eq!(t.intern(&[200]), None);
    }

    #[test]
    fn concurrent_interning_agrees_on_ids() {
        let t: &'static Interner<64, { 64 * 73 }, { 1 << 20 }> =
            Box::leak(Box::new(Interner::new()));
        let keys: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("/tmp/k{i}").into_bytes())
            .collect();
        let keys: &'static [Vec<u8>] = Box::leak(keys.into_boxed_slice());
        let runs: Vec<Vec<u32>> = (0..4)
            .map(|_| {
                std::thread::spawn(move || keys.iter().map(|k| t.intern(k).unwrap()).collect())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        for r in &runs[1..] {
            assert_eq!(r, &runs[0]);
        }
        for (k, id) in keys.iter().zip(&runs[0]) {
            assert_eq!(t.get(*id), Some(&k[..]));
        }
    }
}
