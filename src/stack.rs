//! Creation stacks: capture raw return addresses at creation, intern identical stacks.
//!
//! Capture happens inside hooks, so it allocates nothing and takes no lock (`unwind`); resolving
//! addresses to names is left to report time (`symbolize`).
//!
//! In a runtime whose frames fdguard reads (`runtime`), a stack is its native return addresses,
//! then `runtime::MARK`, the runtime's kind, and a (code, at) pair per runtime frame, innermost
//! first: `[ret..., MARK, kind, code1, at1, code2, at2, ...]`. The first time such a stack is
//! seen, its runtime frames are settled (named while the runtime can answer) and the settled
//! stack interned too; the captured one leads to it from then on (`SETTLED`): one more load per
//! capture, nothing more for a stack seen before.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::intern::Interner;
use crate::os::{self, mem::LazySlice};
use crate::runtime::{self, Kind, RawFrame};
use crate::table::StackId;
use crate::unwind;
use fdguard_core::config::MAX_DEPTH;

/// Distinct stacks: up to ~290k of them, 64 MiB of frames, mapped as used.
static STACKS: Interner<{ 1 << 12 }, { 73 << 12 }, { 64 << 20 }> = Interner::new();

/// For a stack with runtime frames as captured: 1 + the id of the same stack with them settled
/// (`runtime::settle`), once it is; 0 before. Indexed by stack id (`STACKS`' index slots).
static SETTLED: LazySlice<AtomicU32, { 73 << 12 }> = LazySlice::new();

/// Frames of fdguard itself (hook, tracker, capture) sit on top of every stack; they are dropped
/// at capture time so that they do not use up the requested depth.
const OWN_FRAMES_MAX: usize = 12;

/// The most own frames a capture has met so far (0: none yet). Each hook's path to the capture
/// is fixed, so this settles after the first captures, and a walk allows for exactly that many
/// instead of `OWN_FRAMES_MAX`: every frame walked and dropped costs every capture.
static OWN_SEEN: AtomicUsize = AtomicUsize::new(0);

/// Address range of fdguard's own code, found at load.
static OWN_TEXT: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Remembers where fdguard's own code lives and which runtime the program runs on (called
/// once at load).
pub fn init() {
    runtime::init();
    if let Some((lo, hi)) = os::loader::module_bounds(init as *const () as usize) {
        OWN_TEXT[0].store(lo, Ordering::Relaxed);
        OWN_TEXT[1].store(hi, Ordering::Relaxed);
    }
}

fn is_own(addr: usize) -> bool {
    addr >= OWN_TEXT[0].load(Ordering::Relaxed) && addr < OWN_TEXT[1].load(Ordering::Relaxed)
}

/// Captures the caller's stack (up to `depth` frames past fdguard's own) and interns it.
#[inline]
pub fn capture(depth: usize) -> Option<StackId> {
    if depth == 0 {
        return None;
    }
    capture_interned(depth)
}

/// A walk's tag: the stack id it interned to, with the depth it was cut at (a bad close may
/// capture at another depth than creations).
fn tag_of(depth: usize, id: StackId) -> u64 {
    ((depth as u64) << 32) | (u64::from(id.0) + 1)
}

#[inline(never)]
fn capture_interned(depth: usize) -> Option<StackId> {
    let depth = depth.min(MAX_DEPTH);
    match runtime::reading() {
        None => walk_and_intern(depth, None),
        Some(kind) => capture_with_runtime(depth, kind),
    }
}

/// The runtime's frames, then the native walk (from here: this function's own frame is
/// fdguard's, dropped as the others). Apart, so that programs without a runtime do not make
/// room for runtime frames on every capture.
#[inline(never)]
fn capture_with_runtime(depth: usize, kind: Kind) -> Option<StackId> {
    let mut managed = [RawFrame::default(); MAX_DEPTH];
    let n = runtime::capture(managed.get_mut(..depth).unwrap_or_default());
    let managed = managed.get(..n).unwrap_or_default();
    walk_and_intern(depth, (!managed.is_empty()).then_some((kind, managed)))
}

/// Walks the native stack from where the function this is inlined into returns, drops
/// fdguard's own frames, and interns the rest (up to `depth`), followed by `managed`, the
/// runtime's frames, if any.
#[inline(always)]
fn walk_and_intern(depth: usize, managed: Option<(Kind, &[RawFrame])>) -> Option<StackId> {
    let mut buf = unwind::FrameBuf::<{ MAX_DEPTH + OWN_FRAMES_MAX }>::default();
    let allowance = match OWN_SEEN.load(Ordering::Relaxed) {
        0 => OWN_FRAMES_MAX,
        seen => seen,
    };
    let room = MAX_DEPTH + OWN_FRAMES_MAX;
    let mut want = (depth + allowance).min(room);
    // The same walk as one already interned: its id, without hashing or comparing frames (the
    // memo does not even copy them out). Not with runtime frames: the memo knows only the
    // native walk, and one native walk runs many lines of a program in a runtime.
    let interned_at_this_depth = |tag: u64| managed.is_none() && tag >> 32 == depth as u64;
    let mut got = buf.capture_tagged(want, interned_at_this_depth);
    if got.tag != 0 && interned_at_this_depth(got.tag) {
        return Some(StackId((got.tag as u32).wrapping_sub(1)));
    }
    let mut skip = buf.frames().iter().take_while(|a| is_own(**a)).count();
    if skip > OWN_SEEN.load(Ordering::Relaxed) {
        OWN_SEEN.fetch_max(skip.min(OWN_FRAMES_MAX), Ordering::Relaxed);
    }
    if skip > allowance && got.frames == want && want < room {
        // A deeper path than any before: this walk was cut short; once more, allowing for it.
        want = (depth + skip).min(room);
        got = buf.capture_tagged(want, |_| false);
        skip = buf.frames().iter().take_while(|a| is_own(**a)).count();
    }
    let frames = buf.frames().get(skip..)?;
    let frames = frames.get(..frames.len().min(depth))?;
    if let Some((kind, managed)) = managed {
        // The runtime's own frames and what is below them are not shown (`symbolize`): not
        // kept either, so that walks through its different paths intern alike, and smaller.
        let above = frames
            .iter()
            .take_while(|ret| !runtime::is_runtime_code(kind, **ret));
        let frames = frames.get(..above.count())?;
        return intern_with_runtime(frames, kind, managed);
    }
    let id = STACKS
        .intern(os::mem::words_as_bytes(frames))
        .map(StackId)?;
    if let Some(walk) = got.walk {
        unwind::tag_walk(walk, tag_of(depth, id));
    }
    Some(id)
}

/// Interns native frames followed by runtime frames (see the module's documentation): the
/// stack with its runtime frames settled (`runtime::settle`), settling them the first time.
fn intern_with_runtime(native: &[usize], kind: Kind, managed: &[RawFrame]) -> Option<StackId> {
    let captured = intern_words(native, kind, managed)?;
    let slot = SETTLED
        .get_or_map()
        .and_then(|settled| settled.get(captured.0 as usize));
    match slot.map(|s| s.load(Ordering::Relaxed)) {
        Some(0) | None => settle(native, kind, managed, captured, slot),
        Some(settled) => Some(StackId(settled - 1)),
    }
}

/// A stack seen for the first time: its runtime frames settled and interned in that form,
/// remembered for the captured form (`slot`); the captured form itself if they cannot be
/// settled now.
#[cold]
#[inline(never)]
fn settle(
    native: &[usize],
    kind: Kind,
    managed: &[RawFrame],
    captured: StackId,
    slot: Option<&AtomicU32>,
) -> Option<StackId> {
    let mut settled = [RawFrame::default(); MAX_DEPTH];
    let settled = settled.get_mut(..managed.len())?;
    settled.copy_from_slice(managed);
    if !runtime::settle(kind, settled) {
        return Some(captured);
    }
    let id = intern_words(native, kind, settled)?;
    if let Some(slot) = slot {
        slot.store(id.0 + 1, Ordering::Relaxed);
    }
    Some(id)
}

/// `[native..., MARK, kind, code1, at1, ...]`, interned.
fn intern_words(native: &[usize], kind: Kind, managed: &[RawFrame]) -> Option<StackId> {
    let mut words = [0usize; MAX_DEPTH + 2 + 2 * MAX_DEPTH];
    let (head, rest) = words.split_at_mut(native.len().min(MAX_DEPTH));
    head.copy_from_slice(native.get(..head.len())?);
    let (tail, rest) = rest.split_at_mut(2);
    tail.copy_from_slice(&[runtime::MARK, kind.word()]);
    let pairs = managed.len().min(MAX_DEPTH);
    for (pair, f) in rest.chunks_exact_mut(2).zip(managed) {
        pair.copy_from_slice(&[f.code, f.at]);
    }
    let used = head.len() + 2 + 2 * pairs;
    STACKS
        .intern(os::mem::words_as_bytes(words.get(..used)?))
        .map(StackId)
}

/// Forgets unwind rules cached for code that may be gone (after `dlclose`).
pub fn code_unmapped() {
    unwind::invalidate_cache();
}

/// The frames of an interned stack (report time).
pub fn frames(id: StackId) -> Vec<usize> {
    STACKS.get(id.0).map_or_else(Vec::new, |bytes| {
        bytes
            .chunks_exact(std::mem::size_of::<usize>())
            .map(|c| {
                let mut w = [0u8; std::mem::size_of::<usize>()];
                w.copy_from_slice(c);
                usize::from_ne_bytes(w)
            })
            .collect()
    })
}
