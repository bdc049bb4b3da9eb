//! `WalkMemo`: the last walk started from a given stack pointer, kept so
//! that repeating it costs independent loads instead of a chain of
//! dependent ones.
//!
//! A walk is a pure function of its start registers, the stack bound, the
//! rules (fixed within a `RuleCache` generation) and the stack words it
//! read. A memo entry stores those inputs and every word read, with its
//! address. If the inputs are equal and every recorded word still holds
//! its recorded value, a fresh walk would take exactly the same steps, so
//! the recorded return addresses are the answer. Checking that is a batch
//! of independent loads the CPU overlaps, whereas a fresh walk must wait
//! for each return address before it can even look up the next rule.
//!
//! Two walks often start from the same registers: a function that opens two files calls the
//! hook from two call sites at the same stack depth, so the hook's own frame looks the same
//! and only the return address into that function differs. The memo is therefore two-way:
//! each start maps to a set of two entries, and a replay tries both, the more recently
//! recorded first (a differing frame near the top ends a try after a few frames). A
//! direct-mapped memo thrashed on exactly this pattern, and every capture walked the whole
//! stack again.
//!
//! Entries are seqlocked like `RuleCache` slots: writers never wait and
//! readers treat a busy or torn entry as a miss. A torn entry may hold
//! garbage addresses, so replay reads only inside `[sp0, limit)`, which is
//! this thread's mapped stack; memos are therefore used only when
//! `stack::limit` knows the bound.

use core::cell::Cell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use super::walk::{RbpFrom, Step, WalkState};

const SETS: usize = 32;
const WAYS: usize = 2;
// `replay` picks between exactly two ways.
const _: () = assert!(WAYS == 2);
const ENTRIES: usize = SETS * WAYS;
/// Frames a replay compares before it may stop early.
const CHECK_TOP: usize = 8;
/// Frames a memo holds; longer captures replay these and walk the rest.
pub(crate) const MEMO_FRAMES: usize = 48;
/// Flag in `MemoEntry::len`: the walk ended by itself after the frames.
const COMPLETE: u32 = 1 << 31;
/// Flag in `MemoEntry::len`: the walk used its starting RBP, so a replay needs the same one.
const RBP_MATTERS: u32 = 1 << 30;
#[repr(C, align(64))]
struct MemoEntry {
    seq: AtomicU32,
    len: AtomicU32,
    lookup_pc: AtomicUsize,
    sp: AtomicUsize,
    rbp: AtomicUsize,
    limit: AtomicUsize,
    generation: AtomicU64,
    /// A caller's value for this walk (fdguard: its interned stack id); 0 = none.
    tag: AtomicU64,
    /// When the walk was recorded (`WalkMemo::records` then): replays try the newer way first.
    recorded: AtomicU64,
    /// Bit `i`: a later frame's CFA used the RBP frame `i` restored, so a replay must find the
    /// same value in that stack slot (rare without frame pointers; checked apart).
    rbp_needed: AtomicU64,
    // Per frame, in separate arrays: the replay's hot loop reads only the first two, a few
    // frames per cache line.
    /// Where the return address was read (the frame's CFA - 8), as an offset from `sp`: the
    /// replay adds it to its own (equal) SP and clamps it in one step.
    ra_off: [AtomicUsize; MEMO_FRAMES],
    ra: [AtomicUsize; MEMO_FRAMES],
    /// Where the frame restored RBP from (0 if it did not), and the value restored.
    rbp_at: [AtomicUsize; MEMO_FRAMES],
    rbp_restored: [AtomicUsize; MEMO_FRAMES],
}

/// One recorded walk: an entry at one version. A tag set through it lands only if the entry
/// still holds that very walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalkId {
    index: usize,
    seq: u32,
}

/// Everything besides stack contents that a walk depends on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemoKey {
    pub(crate) start: WalkState,
    pub(crate) limit: usize,
    pub(crate) generation: u64,
}

pub(crate) enum Replay {
    /// `out[..n]` is the complete answer; the walk and its tag (0 if none).
    Done(usize, WalkId, u64),
    /// The complete answer carries this tag, which the caller said it knows: nothing written.
    Known(u64),
    /// `out[..n]` holds the first frames; walk on from the state.
    Continue(usize, WalkState),
    Miss,
}

pub(crate) struct WalkMemo {
    entries: [MemoEntry; ENTRIES],
    /// Per set: the way the next record replaces when neither is empty (round robin; written
    /// only when recording, never on a replay).
    next_victim: [AtomicU32; SETS],
    /// Walks recorded so far.
    records: AtomicU64,
}

/// Exclusive right to rewrite one entry, from `WalkMemo::begin_record`.
pub(crate) struct MemoWriter<'a> {
    entry: &'a MemoEntry,
    index: usize,
    seq: u32,
    /// The walk's starting SP, which slot offsets are taken from.
    sp: usize,
    rbp_matters: Cell<bool>,
}

impl WalkMemo {
    pub(crate) const fn new() -> Self {
        WalkMemo {
            entries: [const {
                MemoEntry {
                    seq: AtomicU32::new(0),
                    len: AtomicU32::new(0),
                    lookup_pc: AtomicUsize::new(0),
                    sp: AtomicUsize::new(0),
                    rbp: AtomicUsize::new(0),
                    limit: AtomicUsize::new(0),
                    generation: AtomicU64::new(0),
                    tag: AtomicU64::new(0),
                    recorded: AtomicU64::new(0),
                    rbp_needed: AtomicU64::new(0),
                    ra_off: [const { AtomicUsize::new(0) }; MEMO_FRAMES],
                    ra: [const { AtomicUsize::new(0) }; MEMO_FRAMES],
                    rbp_at: [const { AtomicUsize::new(0) }; MEMO_FRAMES],
                    rbp_restored: [const { AtomicUsize::new(0) }; MEMO_FRAMES],
                }
            }; ENTRIES],
            next_victim: [const { AtomicU32::new(0) }; SETS],
            records: AtomicU64::new(0),
        }
    }

    /// `key`'s set: its number, the index of its first entry, and its entries.
    #[inline(always)]
    fn set(&self, key: &MemoKey) -> Option<(usize, usize, &[MemoEntry])> {
        if key.limit == usize::MAX {
            return None; // unknown stack bound: replay could not be bounded
        }
        // Not the RBP: without frame pointers it is whatever the program keeps in it.
        let sp = key.start.sp;
        let set = ((sp >> 4) ^ (sp >> 10) ^ (key.start.lookup_pc >> 2)) % SETS;
        let first = set * WAYS;
        Some((set, first, self.entries.get(first..first + WAYS)?))
    }

    /// Attaches `tag` to a walk, unless its entry was rewritten since (then nothing happens).
    /// Never waits: a busy entry is left alone.
    pub(crate) fn set_tag(&self, walk: WalkId, tag: u64) {
        let Some(e) = self.entries.get(walk.index) else {
            return;
        };
        let Some(seen) = super::cache::begin_write(&e.seq) else {
            return;
        };
        if seen != walk.seq {
            // Another walk now: put the version back untouched.
            e.seq.store(seen, Ordering::Release);
            return;
        }
        e.tag.store(tag, Ordering::Relaxed);
        e.seq.store(seen.wrapping_add(2), Ordering::Release);
    }

    /// Writes the memoized answer for `key` to `out` if every word the
    /// memoized walk read still holds the same value; when the answer is
    /// complete and its tag is one `known` accepts, writes nothing.
    #[inline(always)]
    pub(crate) fn replay(
        &self,
        key: &MemoKey,
        out: &mut [MaybeUninit<usize>],
        known: impl Fn(u64) -> bool,
    ) -> Replay {
        let Some((_, base, [a, b])) = self.set(key) else {
            return Replay::Miss;
        };
        let b_newer = b.recorded.load(Ordering::Relaxed) > a.recorded.load(Ordering::Relaxed);
        let (first, second) = if b_newer {
            ((base + 1, b), (base, a))
        } else {
            ((base, a), (base + 1, b))
        };
        match Self::replay_entry(first.0, first.1, key, out, &known) {
            Replay::Miss => Self::replay_entry(second.0, second.1, key, out, &known),
            found => found,
        }
    }

    /// One way of `replay`. The usual case (the memo holds at least the frames asked for)
    /// is straight-line code ending in `Done` or `Known`; a walk to continue is left to
    /// `replay_partial`.
    #[inline(always)]
    fn replay_entry(
        index: usize,
        e: &MemoEntry,
        key: &MemoKey,
        out: &mut [MaybeUninit<usize>],
        known: &impl Fn(u64) -> bool,
    ) -> Replay {
        let seq = e.seq.load(Ordering::Acquire);
        let len_word = e.len.load(Ordering::Relaxed);
        if seq & 1 != 0
            || e.sp.load(Ordering::Relaxed) != key.start.sp
            || e.lookup_pc.load(Ordering::Relaxed) != key.start.lookup_pc
            || e.limit.load(Ordering::Relaxed) != key.limit
            || e.generation.load(Ordering::Relaxed) != key.generation
            || (len_word & RBP_MATTERS != 0 && e.rbp.load(Ordering::Relaxed) != key.start.rbp)
        {
            return Replay::Miss;
        }
        let complete = len_word & COMPLETE != 0;
        let len = ((len_word & !(COMPLETE | RBP_MATTERS)) as usize).min(MEMO_FRAMES);
        if len < out.len() && !complete {
            return Self::replay_partial(e, seq, len, key, out);
        }
        let n = len.min(out.len());
        if !Self::stack_matches(e, key, n) {
            return Replay::Miss; // the stack changed (a different walk), or a torn entry
        }
        let tag = e.tag.load(Ordering::Relaxed);
        let tag_known = tag != 0 && known(tag);
        if !tag_known {
            Self::copy_frames(e, out, n);
        }
        if !Self::unchanged(e, seq) {
            return Replay::Miss;
        }
        if tag_known {
            Replay::Known(tag)
        } else {
            Replay::Done(n, WalkId { index, seq }, tag)
        }
    }

    /// A replay whose memo holds fewer frames than asked for: `Continue` from where the memo
    /// ends if the recorded walk was cut by the memo's size, else a miss (it was recorded for
    /// a shorter buffer: record anew).
    #[cold]
    #[inline(never)]
    fn replay_partial(
        e: &MemoEntry,
        seq: u32,
        len: usize,
        key: &MemoKey,
        out: &mut [MaybeUninit<usize>],
    ) -> Replay {
        if len < MEMO_FRAMES || !Self::stack_matches(e, key, len) {
            return Replay::Miss;
        }
        let (Some(last), Some(ras), Some(offs)) =
            (len.checked_sub(1), e.ra.get(..len), e.ra_off.get(..len))
        else {
            return Replay::Miss;
        };
        let ra = ras.get(last).map_or(0, |a| a.load(Ordering::Relaxed));
        let cfa = offs
            .get(last)
            .map_or(0, |a| a.load(Ordering::Relaxed))
            .wrapping_add(key.start.sp + 8);
        // RBP is the caller's own until a frame restored it from the stack: the latest
        // restore's stack slot holds it now.
        let restored = e
            .rbp_at
            .get(..len)
            .unwrap_or_default()
            .iter()
            .rev()
            .map(|a| a.load(Ordering::Relaxed))
            .find(|at| *at != 0);
        let rbp = match restored {
            Some(at) if readable(key, at) => {
                // SAFETY: checked readable.
                unsafe { read_word(at) }
            }
            Some(_) => return Replay::Miss,
            None => key.start.rbp,
        };
        Self::copy_frames(e, out, len);
        if !Self::unchanged(e, seq) {
            return Replay::Miss;
        }
        Replay::Continue(
            len,
            WalkState {
                lookup_pc: ra.wrapping_sub(1),
                sp: cfa,
                rbp,
            },
        )
    }

    /// Whether the stack still holds every word the entry's first `n` frames read (a torn
    /// entry may say yes to anything: `unchanged` rejects it after).
    #[inline(always)]
    fn stack_matches(e: &MemoEntry, key: &MemoKey, n: usize) -> bool {
        // Any aligned word in [sp0, limit) is this thread's mapped stack.
        let Some(span) = stack_span(key) else {
            return false;
        };
        let lo = key.start.sp;
        let (Some(ras), Some(offs)) = (e.ra.get(..n), e.ra_off.get(..n)) else {
            return false;
        };
        // The hot loop checks each frame on its own (no state carried from frame to frame, so
        // the loads overlap) and without a branch, in two runs (the top CHECK_TOP frames, then
        // the rest): an address outside the stack (only a torn entry has one) is clamped into
        // it, so the read is always safe, and any difference found makes the whole replay a
        // miss, known at the end of a run (the other way's walk usually differs in the first).
        let differs = |ras: &[AtomicUsize], offs: &[AtomicUsize]| {
            let mut differs = 0;
            for (ra, off) in ras.iter().zip(offs) {
                let (ra, off) = (ra.load(Ordering::Relaxed), off.load(Ordering::Relaxed));
                let inside = lo + off.min(span);
                // SAFETY: [inside, inside + 8) lies in [lo, limit), this thread's stack, see
                // above.
                differs |= unsafe { read_unaligned_word(inside) } ^ ra;
            }
            differs != 0
        };
        let top = n.min(CHECK_TOP);
        let ((ra_top, ra_rest), (off_top, off_rest)) = (ras.split_at(top), offs.split_at(top));
        if differs(ra_top, off_top) || differs(ra_rest, off_rest) {
            return false;
        }
        let mut needed = e.rbp_needed.load(Ordering::Relaxed) & (1u64 << n).wrapping_sub(1);
        while needed != 0 {
            let i = needed.trailing_zeros() as usize;
            needed &= needed - 1;
            let (Some(at), Some(rbp)) = (e.rbp_at.get(i), e.rbp_restored.get(i)) else {
                return false;
            };
            let at = at.load(Ordering::Relaxed);
            if !readable(key, at) {
                return false; // torn entry
            }
            // SAFETY: aligned and inside this thread's stack, see above.
            if unsafe { read_word(at) } != rbp.load(Ordering::Relaxed) {
                return false; // a CFA depended on this value
            }
        }
        true
    }

    /// Copies the first `n` recorded frames to `out`, before the re-check of `seq` (which
    /// therefore also covers the copy).
    #[inline(always)]
    fn copy_frames(e: &MemoEntry, out: &mut [MaybeUninit<usize>], n: usize) {
        for (slot, ra) in out.iter_mut().zip(e.ra.get(..n).unwrap_or_default()) {
            slot.write(ra.load(Ordering::Relaxed));
        }
    }

    /// Whether the entry still holds the version `seq` whose words were read before.
    #[inline(always)]
    fn unchanged(e: &MemoEntry, seq: u32) -> bool {
        // Orders the entry loads before the re-check of `seq`.
        fence(Ordering::Acquire);
        e.seq.load(Ordering::Relaxed) == seq
    }

    /// Claims an entry of `key`'s set to record a walk into: one never written if there is
    /// one, else the ways in turn; none if another walk (maybe the one this signal handler
    /// interrupted) is writing the chosen entry.
    pub(crate) fn begin_record(&self, key: &MemoKey) -> Option<MemoWriter<'_>> {
        let (set, base, ways) = self.set(key)?;
        let way = match ways.iter().position(|e| e.seq.load(Ordering::Relaxed) == 0) {
            Some(empty) => empty,
            None => self.next_victim.get(set)?.fetch_add(1, Ordering::Relaxed) as usize % WAYS,
        };
        let index = base + way;
        let entry = ways.get(way)?;
        let seq = super::cache::begin_write(&entry.seq)?;
        entry.tag.store(0, Ordering::Relaxed);
        let now = self.records.fetch_add(1, Ordering::Relaxed) + 1;
        entry.recorded.store(now, Ordering::Relaxed);
        entry.rbp_needed.store(0, Ordering::Relaxed);
        entry.sp.store(key.start.sp, Ordering::Relaxed);
        entry.rbp.store(key.start.rbp, Ordering::Relaxed);
        entry
            .lookup_pc
            .store(key.start.lookup_pc, Ordering::Relaxed);
        entry.limit.store(key.limit, Ordering::Relaxed);
        entry.generation.store(key.generation, Ordering::Relaxed);
        Some(MemoWriter {
            entry,
            index,
            seq,
            sp: key.start.sp,
            rbp_matters: Cell::new(false),
        })
    }
}

impl MemoWriter<'_> {
    #[inline(always)]
    pub(crate) fn record(&self, index: usize, step: &Step) {
        if index >= MEMO_FRAMES {
            return;
        }
        match step.rbp_from {
            RbpFrom::NotUsed => {}
            RbpFrom::Start => self.rbp_matters.set(true),
            RbpFrom::Step(j) if j < MEMO_FRAMES => {
                self.entry.rbp_needed.fetch_or(1 << j, Ordering::Relaxed);
            }
            RbpFrom::Step(_) => {}
        }
        let e = self.entry;
        if let (Some(ra_off), Some(ra), Some(rbp_at), Some(rbp)) = (
            e.ra_off.get(index),
            e.ra.get(index),
            e.rbp_at.get(index),
            e.rbp_restored.get(index),
        ) {
            ra_off.store(
                step.cfa.wrapping_sub(8).wrapping_sub(self.sp),
                Ordering::Relaxed,
            );
            ra.store(step.ra, Ordering::Relaxed);
            rbp_at.store(step.rbp_at, Ordering::Relaxed);
            rbp.store(step.rbp, Ordering::Relaxed);
        }
    }

    /// Publishes the entry: the walk wrote `len` addresses into a buffer
    /// of `capacity`; if it stopped short, it ended by itself.
    pub(crate) fn finish(self, len: usize, capacity: usize) -> WalkId {
        let complete = len < capacity && len <= MEMO_FRAMES;
        let kept = len.min(MEMO_FRAMES) as u32;
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        self.entry.len.store(
            kept | flag(complete, COMPLETE) | flag(self.rbp_matters.get(), RBP_MATTERS),
            Ordering::Relaxed,
        );
        self.entry
            .seq
            .store(self.seq.wrapping_add(2), Ordering::Release);
        WalkId {
            index: self.index,
            seq: self.seq.wrapping_add(2),
        }
    }
}

/// How far above `sp0` a word may start and still end below `limit`; `None` for a bound below
/// the start (only a torn or foreign key has one).
#[inline(always)]
fn stack_span(key: &MemoKey) -> Option<usize> {
    let span = key.limit.wrapping_sub(8 + key.start.sp);
    (span <= isize::MAX as usize).then_some(span)
}

/// Whether `addr` is an aligned word in `[sp0, limit)`, this thread's mapped stack.
#[inline(always)]
fn readable(key: &MemoKey, addr: usize) -> bool {
    stack_span(key).is_some_and(|span| addr.wrapping_sub(key.start.sp) <= span)
        && addr.is_multiple_of(8)
}

/// # Safety
/// `addr` must be an aligned, readable word.
#[inline(always)]
unsafe fn read_word(addr: usize) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::read(addr as *const usize) }
}

/// # Safety
/// `addr..addr + 8` must be readable.
#[inline(always)]
unsafe fn read_unaligned_word(addr: usize) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::read_unaligned(addr as *const usize) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::slots;

    struct FakeStack(Box<[usize; 64]>);
    impl FakeStack {
        fn addr(&self, i: usize) -> usize {
            &self.0[i] as *const usize as usize
        }
    }

    fn setup() -> (Box<WalkMemo>, FakeStack, MemoKey, [Step; 3]) {
        let memo = Box::new(WalkMemo::new());
        let mut s = FakeStack(Box::new([0; 64]));
        s.0[1] = 0x2001;
        s.0[3] = 0x3001;
        s.0[6] = 0xbbbb; // a restored RBP
        s.0[7] = 0x4001;
        std::hint::black_box(&mut s.0);
        let key = MemoKey {
            start: WalkState {
                lookup_pc: 0x1000,
                sp: s.addr(0),
                rbp: 7,
            },
            limit: s.addr(63),
            generation: 5,
        };
        let steps = [
            // The first CFA came from the starting RBP: replays need the same RBP.
            Step {
                cfa: s.addr(2),
                ra: 0x2001,
                rbp_at: 0,
                rbp: 7,
                rbp_from: RbpFrom::Start,
            },
            Step {
                cfa: s.addr(4),
                ra: 0x3001,
                rbp_at: 0,
                rbp: 7,
                rbp_from: RbpFrom::NotUsed,
            },
            Step {
                cfa: s.addr(8),
                ra: 0x4001,
                rbp_at: s.addr(6),
                rbp: 0xbbbb,
                rbp_from: RbpFrom::NotUsed,
            },
        ];
        (memo, s, key, steps)
    }

    fn record(memo: &WalkMemo, key: &MemoKey, steps: &[Step], capacity: usize) {
        let w = memo.begin_record(key).expect("entry free");
        for (i, step) in steps.iter().enumerate() {
            w.record(i, step);
        }
        w.finish(steps.len(), capacity);
    }

    #[test]
    fn tags_follow_their_walk_and_vanish_with_it() {
        let (memo, mut s, key, steps) = setup();
        let w = memo.begin_record(&key).expect("entry free");
        for (i, step) in steps.iter().enumerate() {
            w.record(i, step);
        }
        let walk = w.finish(steps.len(), 8);
        let mut out = [0; 8];
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Done(3, _, 0)
        ));
        memo.set_tag(walk, 77);
        let Replay::Done(3, again, 77) = memo.replay(&key, slots(&mut out), |_| false) else {
            panic!("tag not replayed");
        };
        let frames = out;
        // A tag the caller knows: nothing written; one it does not: the frames, as before.
        let mut untouched = [9; 8];
        assert!(matches!(
            memo.replay(&key, slots(&mut untouched), |t| t == 77),
            Replay::Known(77)
        ));
        assert_eq!(untouched, [9; 8]);
        assert!(matches!(
            memo.replay(&key, slots(&mut untouched), |t| t == 78),
            Replay::Done(3, _, 77)
        ));
        assert_eq!(untouched[..3], frames[..3]);
        // A rewritten entry drops the tag, and a stale WalkId cannot set one.
        record(&memo, &key, &steps, 8);
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Done(3, _, 0)
        ));
        memo.set_tag(again, 78);
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Done(3, _, 0)
        ));
        // A different stack at the same place misses: no tag can leak to it.
        s.0[3] = 0x3002;
        std::hint::black_box(&mut s.0);
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
    }

    #[test]
    fn rbp_values_no_cfa_used_do_not_matter() {
        let (memo, mut s, key, mut steps) = setup();
        steps[0].rbp_from = RbpFrom::NotUsed;
        record(&memo, &key, &steps, 8);
        // Another starting RBP, and another value in the restored slot (word 6): the walk used
        // neither, so the memo still answers.
        s.0[6] = 0xcccc;
        std::hint::black_box(&mut s.0);
        let other_rbp = MemoKey {
            start: WalkState {
                rbp: 12345,
                ..key.start
            },
            ..key
        };
        let mut out = [0; 8];
        assert!(matches!(
            memo.replay(&other_rbp, slots(&mut out), |_| false),
            Replay::Done(3, _, _)
        ));
        assert_eq!(out[..3], [0x2001, 0x3001, 0x4001]);
    }

    #[test]
    fn a_restored_rbp_a_later_cfa_used_must_match() {
        let (memo, mut s, key, steps) = setup();
        let mut steps = steps.to_vec();
        steps[0].rbp_from = RbpFrom::NotUsed;
        // A fourth frame whose CFA came from the RBP the third frame restored.
        s.0[9] = 0x5001;
        std::hint::black_box(&mut s.0);
        steps.push(Step {
            cfa: s.addr(10),
            ra: 0x5001,
            rbp_at: 0,
            rbp: 0xbbbb,
            rbp_from: RbpFrom::Step(2),
        });
        record(&memo, &key, &steps, 8);
        let mut out = [0; 8];
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Done(4, _, _)
        ));
        s.0[6] = 0xcccc;
        std::hint::black_box(&mut s.0);
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
    }

    #[test]
    fn replays_only_when_inputs_and_stack_are_unchanged() {
        let (memo, mut s, key, steps) = setup();
        let mut out = [0; 8];
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
        record(&memo, &key, &steps, 8);
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Done(3, _, _)
        ));
        assert_eq!(out[..3], [0x2001, 0x3001, 0x4001]);
        // A prefix is valid for a shorter buffer.
        let mut short = [0; 2];
        assert!(matches!(
            memo.replay(&key, slots(&mut short), |_| false),
            Replay::Done(2, _, _)
        ));
        // Any other input misses.
        for changed in [
            MemoKey {
                generation: 6,
                ..key
            },
            MemoKey {
                limit: s.addr(62),
                ..key
            },
            MemoKey {
                start: WalkState {
                    rbp: 8,
                    ..key.start
                },
                ..key
            },
            MemoKey {
                start: WalkState {
                    lookup_pc: 0x1001,
                    ..key.start
                },
                ..key
            },
        ] {
            assert!(matches!(
                memo.replay(&changed, slots(&mut out), |_| false),
                Replay::Miss
            ));
        }
        // So does a changed return address (a saved RBP only when a CFA used it: see
        // `a_restored_rbp_a_later_cfa_used_must_match`).
        s.0[3] = 0x3002;
        std::hint::black_box(&mut s.0);
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
        // An unknown stack bound disables the memo.
        assert!(
            memo.begin_record(&MemoKey {
                limit: usize::MAX,
                ..key
            })
            .is_none()
        );
    }

    #[test]
    fn incomplete_walks_continue_or_rerecord() {
        let (memo, _s, key, steps) = setup();
        // Recorded with a 3-slot buffer that it filled: not complete, so
        // a longer buffer must not take it as the whole answer.
        record(&memo, &key, &steps, 3);
        let mut out = [0; 8];
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
        let mut exact = [0; 3];
        assert!(matches!(
            memo.replay(&key, slots(&mut exact), |_| false),
            Replay::Done(3, _, _)
        ));

        // A walk longer than the memo: replay its frames, then continue.
        let mut deep = Box::new([0usize; 2 * MEMO_FRAMES + 2]);
        for i in 0..MEMO_FRAMES {
            deep[2 * i + 1] = 0x5000 + i;
        }
        std::hint::black_box(&mut deep);
        let addr = |i: usize| &deep[i] as *const usize as usize;
        let key = MemoKey {
            start: WalkState {
                lookup_pc: 0x1000,
                sp: addr(0),
                rbp: 1,
            },
            limit: addr(2 * MEMO_FRAMES + 1),
            generation: 1,
        };
        let steps: Vec<Step> = (0..MEMO_FRAMES)
            .map(|i| Step {
                cfa: addr(2 * i + 2),
                ra: 0x5000 + i,
                rbp_at: 0,
                rbp: 1,
                rbp_from: RbpFrom::NotUsed,
            })
            .collect();
        let w = memo.begin_record(&key).expect("free");
        for (i, step) in steps.iter().enumerate() {
            w.record(i, step);
        }
        w.record(MEMO_FRAMES, &steps[0]); // beyond capacity: ignored
        w.finish(MEMO_FRAMES + 8, MEMO_FRAMES + 8);
        let mut out = [0; MEMO_FRAMES + 8];
        match memo.replay(&key, slots(&mut out), |_| false) {
            Replay::Continue(n, next) => {
                assert_eq!(n, MEMO_FRAMES);
                let last = 0x5000 + MEMO_FRAMES - 1;
                assert_eq!(
                    next,
                    WalkState {
                        lookup_pc: last - 1,
                        sp: addr(2 * MEMO_FRAMES),
                        rbp: 1
                    }
                );
                assert_eq!(out[MEMO_FRAMES - 1], last);
            }
            _ => panic!("expected a continuation"),
        }
        let mut out = [0; MEMO_FRAMES];
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Done(MEMO_FRAMES, _, _)
        ));
    }

    #[test]
    fn two_walks_from_one_start_both_replay() {
        let (memo, mut s, key, steps) = setup();
        record(&memo, &key, &steps, 8);
        // Another caller at the same depth: the same start, another second return address.
        s.0[3] = 0x3002;
        std::hint::black_box(&mut s.0);
        let mut out = [0; 8];
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
        let mut other = steps;
        other[1].ra = 0x3002;
        record(&memo, &key, &other, 8);
        for (word, want) in [
            (0x3002, [0x2001, 0x3002, 0x4001]),
            (0x3001, [0x2001, 0x3001, 0x4001]),
        ] {
            s.0[3] = word;
            std::hint::black_box(&mut s.0);
            out = [0; 8];
            assert!(matches!(
                memo.replay(&key, slots(&mut out), |_| false),
                Replay::Done(3, _, _)
            ));
            assert_eq!(out[..3], want, "each walk kept its own way");
        }
    }

    #[test]
    fn busy_or_torn_entries_miss() {
        let (memo, _s, key, steps) = setup();
        record(&memo, &key, &steps, 8);
        // A second walk from this start gets the set's free way, a third one the other way; a
        // fourth finds the entry whose turn it is busy, and does not wait.
        let w1 = memo.begin_record(&key).expect("the free way");
        let w2 = memo.begin_record(&key).expect("the other way");
        assert!(memo.begin_record(&key).is_none(), "a writer must not wait");
        let mut out = [0; 8];
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
        // Garbage addresses outside [sp0, limit) are never read.
        for w in [w1, w2] {
            w.record(
                0,
                &Step {
                    cfa: 16,
                    ra: 1,
                    rbp_at: 0,
                    rbp: 0,
                    rbp_from: RbpFrom::NotUsed,
                },
            );
            w.finish(3, 8);
        }
        assert!(matches!(
            memo.replay(&key, slots(&mut out), |_| false),
            Replay::Miss
        ));
    }
}
