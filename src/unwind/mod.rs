//! Fast, async-signal-safe capture of the current call stack's return
//! addresses, for code built without frame pointers.
//!
//! On x86_64 Linux with glibc >= 2.35 the walk uses the DWARF CFI of
//! `.eh_frame`, found through `.eh_frame_hdr` of the object that
//! `_dl_find_object` reports for each pc. Two static lock-free caches make
//! it cheap:
//! - `RuleCache` keeps, per exact pc, the unwind step the CFI prescribes,
//!   so CFI is parsed once per return address;
//! - `WalkMemo` keeps, per starting stack pointer, the last walk and every
//!   stack word it read, so a repeated stack is confirmed with independent
//!   loads instead of re-walked as a chain of dependent ones.
//!
//! Every address is bounds-checked before it is read, and whatever the
//! walk cannot represent (signal frames, expressions) ends it early. Code
//! without CFI (JIT code: V8's, which keeps frame pointers) is stepped
//! through by its frame pointer, a guess taken only under the bound of the
//! stack the walk is on, so that a wrong one ends in wrong frames, never in
//! a fault.
//!
//! Elsewhere, or before `init`, `capture` falls back to libgcc's
//! `_Unwind_Backtrace`: correct but microseconds slower per call.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod fallback;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod cache;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod cfi;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod eh_frame_hdr;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod memo;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod object;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod reader;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod rule;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod stack;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod walk;

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests;

/// Tests hand the walkers plain arrays to fill and read.
#[cfg(test)]
pub(crate) fn slots(out: &mut [usize]) -> &mut [MaybeUninit<usize>] {
    // SAFETY: same layout; the walkers write only initialized words, so `out` stays initialized.
    unsafe { &mut *(out as *mut [usize] as *mut [MaybeUninit<usize>]) }
}

use core::mem::MaybeUninit;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use fast::FAST_PATH;

/// Prepares the fast unwinder: resolves `_dl_find_object` and the main
/// thread's stack end with `dlsym`. Call it once at load time (e.g. from
/// the library constructor), never from a hook or a signal handler: dlsym
/// takes the loader lock. Returns whether the fast path is active; if not,
/// `capture` uses `_Unwind_Backtrace`.
pub fn init() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        fast::init()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Forgets every cached unwind rule. Call it after code was unmapped
/// (`dlclose`): another object loaded at the same address could otherwise
/// be unwound with the old object's rules. Async-signal-safe, O(1).
pub fn invalidate_cache() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fast::CACHE.invalidate();
}

/// The loaded object holding `pc`: its load bias and its name (empty for the main program),
/// without the loader lock (see `object::loaded_object`). `None` before `init`, on platforms
/// without the fast path, or when no object holds `pc`.
pub fn loaded_object(pc: usize) -> Option<(usize, &'static core::ffi::CStr)> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        object::loaded_object(pc)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = pc;
        None
    }
}

/// True where `loaded_object` answers for every pc without the loader lock (glibc >= 2.35):
/// a pc it places in no object is in none, and asking `dladdr` or `dl_iterate_phdr`, which take
/// the lock (held forever in a report process by a thread that was not copied), is not needed.
pub fn finds_objects_lock_free() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        object::finds_objects_lock_free()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// The address the current thread's stack ends below, seen from `sp` (an address in the
/// calling function's frame), as the walk bounds it: everything from `sp` up to it is mapped.
/// `usize::MAX` where that is not known (a stack glibc did not make, or before `init`).
pub fn stack_bound(sp: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        stack::limit(sp)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = sp;
        usize::MAX
    }
}

/// The exported function holding `pc`, from its object's dynamic symbol table, without the
/// loader lock (see `object::exported_function`). `None` where `loaded_object` is.
pub fn exported_function(pc: usize) -> Option<&'static [u8]> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        object::exported_function(pc)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = pc;
        None
    }
}

/// Whether the loader has finished relocating the object holding `pc` (see
/// `object::listed`): `None` where that cannot be told (glibc < 2.35, or before `init`).
pub fn relocated(pc: usize) -> Option<bool> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        object::listed(pc)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = pc;
        None
    }
}

/// Whether DWARF unwinders find CFI for `pc` through the `.eh_frame_hdr` at `hdr`: `Some(false)`
/// when no FDE covers it, so that every unwinder (this one, libgcc's) ends a walk there.
/// `None` when the table cannot be read (or off x86_64 Linux). Works without `init`: the
/// caller names the object's segment itself.
///
/// # Safety
/// `[start, end)` is readable and stays mapped during the call; it holds `hdr` and the
/// `.eh_frame` entries the header indexes (the one readable segment of every linker's layout).
pub unsafe fn cfi_covers(start: usize, end: usize, hdr: usize, pc: usize) -> Option<bool> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: the caller's promise.
        let segment = unsafe { reader::Reader::new(start, end) };
        let table = eh_frame_hdr::EhFrameHdr::parse(segment.at(hdr)?)?;
        match table.find_fde(pc) {
            None => Some(false),
            Some(fde) => cfi::covers(segment, fde, pc),
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = (start, end, hdr, pc);
        None
    }
}

/// What `capture_tagged` found.
pub struct Captured {
    /// Addresses written.
    pub frames: usize,
    /// The tag a caller attached to this very walk earlier (`tag_walk`), 0 if none.
    pub tag: u64,
    /// The memoized walk this capture was, to attach a tag to; `None` if not memoized.
    pub walk: Option<WalkHandle>,
}

/// One memoized walk (see `tag_walk`).
#[derive(Clone, Copy, Debug)]
pub struct WalkHandle(#[cfg(all(target_arch = "x86_64", target_os = "linux"))] memo::WalkId);

/// Room for up to `N` return addresses, for `FrameBuf::capture_tagged`. Never zeroed: only
/// what the last capture wrote can be read, and zeroing ~600 bytes on every capture cost more
/// (~100 instructions) than replaying a memoized walk's compare loop.
pub struct FrameBuf<const N: usize> {
    slots: [MaybeUninit<usize>; N],
    /// Invariant: `slots[..len]` were all written by the last capture, and `len <= N`.
    len: usize,
}

impl<const N: usize> Default for FrameBuf<N> {
    #[inline(always)]
    fn default() -> Self {
        Self {
            slots: [MaybeUninit::uninit(); N],
            len: 0,
        }
    }
}

impl<const N: usize> FrameBuf<N> {
    /// `capture_tagged` into the first `want` slots (at most `N`), replacing what was there.
    /// Inlined, as `capture_tagged` is: the frames start where the function calling this one
    /// returns to.
    #[inline(always)]
    pub fn capture_tagged(&mut self, want: usize, known: impl Fn(u64) -> bool) -> Captured {
        self.len = 0;
        let out = self.slots.get_mut(..want.min(N)).unwrap_or_default();
        let room = out.len();
        let got = capture_tagged(out, known);
        self.len = got.frames.min(room);
        got
    }

    /// What the last capture wrote, newest first.
    pub fn frames(&self) -> &[usize] {
        let written = self.slots.get(..self.len).unwrap_or_default();
        // SAFETY: every capture writes the prefix of `out` whose length it returns (each walk
        // writes slot i before counting it), so `slots[..len]` is initialized; MaybeUninit<usize>
        // and usize have the same layout.
        unsafe { &*(written as *const [MaybeUninit<usize>] as *const [usize]) }
    }
}

/// Captures the return addresses of the current call stack into `out`, newest first: `out[0]`
/// is where the function that calls `capture_tagged` returns to (always inlined, it walks from
/// inside that function: a frame of its own, one call and its saving of six registers would
/// cost every capture ~30 instructions). Also says which memoized walk this was, with the tag a caller attached to it: a
/// caller that derives a value from the frames (fdguard: the interned stack id) attaches it
/// with `tag_walk`, and gets it back the next time the same walk replays, without looking at
/// the frames again (the memo's checks guarantee they are the same). When that tag is one
/// `known` accepts, the frames are not even written: `frames` is 0 and only `tag` is set.
///
/// After `init` on x86_64 with glibc >= 2.35 this is async-signal-safe, lock-free,
/// allocation-free, and usable in a child right after `fork`. It needs about 200 bytes of
/// stack, about 1 KiB when a pc is seen for the first time and its CFI must be parsed. The walk
/// ends early, without error, at signal frames, at code with CFI it cannot represent, at code
/// without CFI whose frame pointer leads nowhere plausible, and at the outermost frame.
#[inline(always)]
fn capture_tagged(out: &mut [MaybeUninit<usize>], known: impl Fn(u64) -> bool) -> Captured {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if FAST_PATH.load(core::sync::atomic::Ordering::Acquire) {
        return fast::capture_tagged_from(walk::Regs::here(), out, known);
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    let _ = known;
    Captured {
        frames: capture_fallback(out),
        tag: 0,
        walk: None,
    }
}

/// Attaches `tag` to a memoized walk (ignored if the memo entry was reused meanwhile).
pub fn tag_walk(walk: WalkHandle, tag: u64) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fast::MEMO.set_tag(walk.0, tag);
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    let _ = (walk, tag);
}

/// `capture` through `_Unwind_Backtrace` whatever `init` said; also the
/// reference the tests compare the fast path against.
#[inline(always)]
fn capture_fallback(out: &mut [MaybeUninit<usize>]) -> usize {
    let marker = 0u8;
    fallback::capture(out, core::hint::black_box(&marker) as *const u8 as usize)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod fast {
    use core::mem::MaybeUninit;
    use core::sync::atomic::{AtomicBool, Ordering};

    use super::cache::RuleCache;
    use super::eh_frame_hdr::EhFrameHdr;
    use super::memo::{MemoKey, Replay, WalkMemo};
    use super::object::{self, ObjectCfi};
    use super::rule::UnwindRule;
    use super::walk::{self, Regs, WalkState};
    use super::{Captured, WalkHandle};
    use super::{cfi, stack};

    pub(super) static FAST_PATH: AtomicBool = AtomicBool::new(false);
    pub(super) static CACHE: RuleCache = RuleCache::new();
    pub(super) static MEMO: WalkMemo = WalkMemo::new();

    pub(super) fn init() -> bool {
        stack::init();
        let ok = object::init();
        // Publishes what `stack::init` and `object::init` stored.
        FAST_PATH.store(ok, Ordering::Release);
        ok
    }

    /// Replays the memoized walk for this start if the stack still matches
    /// it, else walks (recording a new memo when the entry is free).
    #[inline(always)]
    pub(super) fn capture_tagged_from(
        regs: Regs,
        out: &mut [MaybeUninit<usize>],
        known: impl Fn(u64) -> bool,
    ) -> Captured {
        let untagged = |frames| Captured {
            frames,
            tag: 0,
            walk: None,
        };
        if out.is_empty() {
            return untagged(0); // and keep the memo for real captures
        }
        let generation = CACHE.generation();
        let start = WalkState::from(regs);
        let limit = stack::limit(start.sp);
        let key = MemoKey {
            start,
            limit,
            generation,
        };
        let rules = |pc| cached_rule(pc, generation);
        match MEMO.replay(&key, out, known) {
            Replay::Known(tag) => Captured {
                frames: 0,
                tag,
                walk: None,
            },
            Replay::Done(n, walk, tag) => Captured {
                frames: n,
                tag,
                walk: Some(WalkHandle(walk)),
            },
            Replay::Continue(n, next) => {
                let rest = out.get_mut(n..).unwrap_or_default();
                untagged(n + walk::walk(next, limit, rest, rules, |_, _| {}))
            }
            Replay::Miss => match MEMO.begin_record(&key) {
                Some(writer) => {
                    let n = walk::walk(start, limit, out, rules, |i, step| writer.record(i, step));
                    let complete_walk = writer.finish(n, out.len());
                    Captured {
                        frames: n,
                        tag: 0,
                        // Taggable only if the memo holds the whole answer.
                        walk: (n <= super::memo::MEMO_FRAMES).then_some(WalkHandle(complete_walk)),
                    }
                }
                None => untagged(walk::walk(start, limit, out, rules, |_, _| {})),
            },
        }
    }

    #[inline(always)]
    fn cached_rule(pc: usize, generation: u64) -> UnwindRule {
        match CACHE.key(pc, generation) {
            Some(key) => match CACHE.get(key) {
                Some(rule) => rule,
                None => miss(pc, Some(key)),
            },
            None => miss(pc, None),
        }
    }

    /// Computes the rule from the CFI and caches the verdict, including a
    /// stop verdict. Code no CFI describes gets the frame-pointer guess (JIT
    /// code, and code such as V8's builtins in an object without CFI for it);
    /// only "no object here" is not cached, since code with CFI may be mapped
    /// there later.
    #[cold]
    #[inline(never)]
    fn miss(pc: usize, key: Option<u64>) -> UnwindRule {
        let rule = match object::find(pc) {
            ObjectCfi::Unknown => return UnwindRule::FRAME_POINTER,
            ObjectCfi::Absent => UnwindRule::FRAME_POINTER,
            ObjectCfi::At(hdr) => EhFrameHdr::parse(hdr)
                .and_then(|table| table.find_fde(pc))
                .and_then(|fde| cfi::rule_at(hdr, fde, pc))
                .unwrap_or(UnwindRule::FRAME_POINTER),
        };
        if let Some(key) = key {
            CACHE.insert(key, rule);
        }
        rule
    }

    /// Computes a rule bypassing the cache (tests compare the two).
    #[cfg(test)]
    pub(super) fn uncached_rule(pc: usize) -> UnwindRule {
        miss(pc, None)
    }
}
