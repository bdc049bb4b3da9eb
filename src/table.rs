//! `FdTable`: what fdguard knows about each open fd, indexed by fd number.
//!
//! # Why this shape
//! Every hooked `open`/`close` updates the table, possibly from a signal handler, from several
//! threads at once, or in a child right after `fork` (where another thread's half-done update is
//! frozen forever). So the table takes no lock and never waits:
//! - Each slot is eight atomic words guarded by a seqlock. A writer claims the slot with a plain
//!   store, not a locked CAS (a locked instruction costs ~10-20 ns here, and a pair of hooks
//!   needed two): writers of one number need no mutual exclusion between threads, because the
//!   kernel already orders an fd number's life (a close is forgotten before the real call, a
//!   creation recorded after it returns). What the claim bit must catch is a writer that can
//!   never finish, and it does: a signal handler interrupting its own thread's write sees the
//!   bit and skips (counted, never waited for). Two threads racing on one number are a program
//!   bug (a double close racing a reuse); the entry may then mix both writes, as the program's
//!   own view of that fd does.
//! - A claim records the fork generation it was made in, so a claim left behind by a thread that
//!   does not exist in a forked child is recognised as stale and taken over.
//! - Readers (report children) retry a bounded number of times and never block writers.
//! - Storage is a two-level array mapped on first touch: it covers every fd number a kernel can
//!   hand out (up to 2^31), yet a program with ten fds touches one page.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, fence};

use crate::origin::{PATH_TAIL, PathTail};
use crate::os::mem::LazySlice;
use fdguard_core::call::Call;
use fdguard_core::kind::FdKind;

/// Index of an interned call stack (see `stack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

/// Everything recorded about one open fd. 64 bytes in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdRecord {
    pub call: Call,
    pub kind: FdKind,
    /// The fd belongs to a stdio `FILE` (so `fcloseall` may have closed it).
    pub stream: bool,
    pub tid: u32,
    pub stack: Option<StackId>,
    pub born_ns: u64,
    /// Call-specific: a path's length, a socket's domain/type, a source fd (see `Detail`).
    pub detail: u64,
    /// The end of the path as given, when `detail` is a path.
    pub path: PathTail,
    /// The report epoch when the entry was written (`tracker::REPORT_EPOCH`, modulo
    /// `EPOCHS`): a report tells by it the entries written while the process was copied.
    pub epoch: u16,
}

/// Report epochs an entry can tell apart (12 bits of its meta word).
pub const EPOCHS: u16 = 1 << 12;

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Enough chunks for every non-negative `int` fd.
const CHUNKS: usize = 1 << (31 - CHUNK_BITS);

const PATH_WORDS: usize = PATH_TAIL / 8;
type SlotWords = [AtomicU64; 4 + PATH_WORDS];
type Chunk = LazySlice<SlotWords, CHUNK>;

// Word 0: low 32 bits = seqlock word, high 32 bits = meta (call, kind, flags, has path, report
// epoch).
// Word 1: tid | stack << 32. Word 2: birth time. Word 3: detail. Words 4..8: path tail.
// Seqlock word: bit 0 = claimed by a writer, bits 1..8 = fork generation of that writer,
// bits 8..32 = version counter.
const CLAIMED: u64 = 1;
const GEN_MASK: u64 = 0x7f;
const VERSION_UNIT: u64 = 0x100;
const SEQ_MASK: u64 = 0xffff_ffff;

const META_OPEN: u32 = 1 << 16;
const META_STREAM: u32 = 1 << 17;
const META_HAS_RELEASE: u32 = 1 << 18;
const META_HAS_PATH: u32 = 1 << 19;
const META_EPOCH_SHIFT: u32 = 20;

const NO_STACK: u32 = u32::MAX;

#[inline(always)]
fn pack_meta(rec: &FdRecord) -> u32 {
    let flag = |on: bool, bit: u32| if on { bit } else { 0 };
    (rec.call as u32)
        | ((rec.kind as u32) << 8)
        | META_OPEN
        | flag(rec.stream, META_STREAM)
        | flag(!rec.path.is_empty(), META_HAS_PATH)
        | (u32::from(rec.epoch) << META_EPOCH_SHIFT)
}

fn meta_of(word0: u64) -> u32 {
    (word0 >> 32) as u32
}

#[inline(always)]
fn pack_stack(s: Option<StackId>) -> u32 {
    s.map_or(NO_STACK, |s| s.0)
}

fn unpack_stack(v: u32) -> Option<StackId> {
    (v != NO_STACK).then_some(StackId(v))
}

/// Result of recording a new fd.
#[derive(Debug, PartialEq, Eq)]
pub enum Insert {
    Inserted,
    /// The table still had this fd as open: a close fdguard did not see.
    Replaced,
    /// Another writer held the slot; nothing was recorded.
    Busy,
    OutOfRange,
}

/// Result of forgetting an fd.
#[derive(Debug, PartialEq, Eq)]
pub enum Remove {
    WasOpen,
    /// Not open in the table; carries the stack that released this number last, if recorded.
    NotOpen {
        last_release: Option<StackId>,
    },
    Busy,
    OutOfRange,
}

/// A seqlock-protected slot, viewed through its words.
struct Slot<'a>(&'a SlotWords);

impl Slot<'_> {
    /// Claims the slot for writing; returns the word 0 value seen before the claim.
    #[inline(always)]
    fn claim(&self, generation: u32) -> Option<u64> {
        let gen_bits = (generation as u64 & GEN_MASK) << 1;
        let cur = self.0[0].load(Ordering::Relaxed);
        let claimed = cur & CLAIMED != 0;
        // A claim from our own fork generation is a writer this one interrupted: skip. One from
        // an earlier generation belongs to a thread that did not survive fork: take it over.
        if claimed && (cur & (GEN_MASK << 1)) == gen_bits {
            return None;
        }
        let new = (cur & !(GEN_MASK << 1)) | gen_bits | CLAIMED;
        // A store, not a CAS: see the module comment. A handler that runs between the load and
        // this store finishes its whole write first; this writer then overwrites it, as if the
        // handler had run just before.
        self.0[0].store(new, Ordering::Relaxed);
        fence(Ordering::Release);
        Some(cur)
    }

    /// Publishes the slot with `meta` and a new version.
    #[inline(always)]
    fn release(&self, before: u64, meta: u32) {
        let version = (before & SEQ_MASK & !0xff).wrapping_add(VERSION_UNIT) & SEQ_MASK;
        self.0[0].store(version | ((meta as u64) << 32), Ordering::Release);
    }

    #[inline(always)]
    fn write(&self, rec: &FdRecord) {
        self.0[1].store(
            rec.tid as u64 | ((pack_stack(rec.stack) as u64) << 32),
            Ordering::Relaxed,
        );
        self.0[2].store(rec.born_ns, Ordering::Relaxed);
        self.0[3].store(rec.detail, Ordering::Relaxed);
        // All four tail words, path or not (the slot's cache line is written anyway): testing
        // for "no path" first kept the words in memory instead of registers.
        for (w, v) in self.0[4..].iter().zip(rec.path.words()) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn path_words(&self, meta: u32) -> PathTail {
        if meta & META_HAS_PATH == 0 {
            return PathTail::default();
        }
        let mut w = [0u64; PATH_WORDS];
        for (v, a) in w.iter_mut().zip(&self.0[4..]) {
            *v = a.load(Ordering::Relaxed);
        }
        PathTail::from_words(w)
    }

    /// Decodes the record from a word-0 value and the other words (no consistency check).
    fn decode(w0: u64, w1: u64, w2: u64, w3: u64, path: PathTail) -> Option<FdRecord> {
        let meta = (w0 >> 32) as u32;
        if meta & META_OPEN == 0 {
            return None;
        }
        Some(FdRecord {
            call: Call::from_u8(meta as u8)?,
            kind: FdKind::from_u8((meta >> 8) as u8)?,
            stream: meta & META_STREAM != 0,
            tid: w1 as u32,
            stack: unpack_stack((w1 >> 32) as u32),
            born_ns: w2,
            detail: w3,
            path,
            epoch: (meta >> META_EPOCH_SHIFT) as u16,
        })
    }

    /// The current record, read while the slot is held by `claim` (so it cannot change).
    fn read_claimed(&self, before: u64) -> Option<FdRecord> {
        Self::decode(
            before,
            self.0[1].load(Ordering::Relaxed),
            self.0[2].load(Ordering::Relaxed),
            self.0[3].load(Ordering::Relaxed),
            self.path_words(meta_of(before)),
        )
    }

    /// A consistent snapshot: `Ok(None)` means "not open", `Err` means writers kept it busy.
    fn read(&self) -> Result<Option<FdRecord>, ()> {
        for _ in 0..64 {
            let s1 = self.0[0].load(Ordering::Acquire);
            if s1 & CLAIMED != 0 {
                std::hint::spin_loop();
                continue;
            }
            let w1 = self.0[1].load(Ordering::Relaxed);
            let w2 = self.0[2].load(Ordering::Relaxed);
            let w3 = self.0[3].load(Ordering::Relaxed);
            let path = self.path_words(meta_of(s1));
            fence(Ordering::Acquire);
            if self.0[0].load(Ordering::Relaxed) == s1 {
                return Ok(Self::decode(s1, w1, w2, w3, path));
            }
        }
        Err(())
    }
}

/// The per-fd table. One global instance lives in `tracker`; tests make their own.
pub struct FdTable {
    chunks: LazySlice<Chunk, CHUNKS>,
    highest: AtomicI64,
}

impl Default for FdTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FdTable {
    pub const fn new() -> Self {
        Self {
            chunks: LazySlice::new(),
            highest: AtomicI64::new(-1),
        }
    }

    #[inline(always)]
    fn slot(&self, fd: i32, map: bool) -> Option<Slot<'static>> {
        let fd = usize::try_from(fd).ok()?;
        let dir = if map {
            self.chunks.get_or_map()?
        } else {
            self.chunks.get()?
        };
        let chunk = dir.get(fd >> CHUNK_BITS)?;
        let slots = if map {
            chunk.get_or_map()?
        } else {
            chunk.get()?
        };
        slots.get(fd & (CHUNK - 1)).map(Slot)
    }

    /// Records `fd` as open with `rec`, replacing whatever the table had for that number.
    #[inline(always)]
    pub fn insert(&self, fd: i32, rec: &FdRecord, generation: u32) -> Insert {
        let Some(slot) = self.slot(fd, true) else {
            return Insert::OutOfRange;
        };
        let Some(before) = slot.claim(generation) else {
            return Insert::Busy;
        };
        let was_open = meta_of(before) & META_OPEN != 0;
        slot.write(rec);
        slot.release(before, pack_meta(rec));
        if fd as i64 > self.highest.load(Ordering::Relaxed) {
            self.highest.fetch_max(fd as i64, Ordering::Relaxed);
        }
        if was_open {
            Insert::Replaced
        } else {
            Insert::Inserted
        }
    }

    /// Forgets `fd`. With `release`, remembers that stack as the one that released the number.
    #[inline(always)]
    pub fn remove(&self, fd: i32, generation: u32, release: Option<StackId>) -> Remove {
        let Some(slot) = self.slot(fd, release.is_some()) else {
            return if fd < 0 {
                Remove::OutOfRange
            } else {
                Remove::NotOpen { last_release: None }
            };
        };
        let Some(before) = slot.claim(generation) else {
            return Remove::Busy;
        };
        let old_meta = meta_of(before);
        // What an entry keeps once released: its call and kind, and the releasing stack if any.
        let released = |meta: u32| {
            if let Some(stack) = release {
                slot.0[1].store((pack_stack(Some(stack)) as u64) << 32, Ordering::Relaxed);
                meta | META_HAS_RELEASE
            } else {
                meta
            }
        };
        if old_meta & META_OPEN != 0 {
            // The usual case first and alone (an open entry has no release stack to keep).
            slot.release(
                before,
                released(old_meta & !(META_OPEN | META_STREAM | META_HAS_PATH)),
            );
            return Remove::WasOpen;
        }
        let last_release = if old_meta & META_HAS_RELEASE != 0 {
            unpack_stack((slot.0[1].load(Ordering::Relaxed) >> 32) as u32)
        } else {
            None
        };
        slot.release(before, released(old_meta & !META_HAS_PATH));
        Remove::NotOpen { last_release }
    }

    /// Applies `change` to an open entry (e.g. `fdopen` marking it as a stream).
    pub fn update(&self, fd: i32, generation: u32, change: impl FnOnce(&mut FdRecord)) -> bool {
        let Some(slot) = self.slot(fd, false) else {
            return false;
        };
        let Some(before) = slot.claim(generation) else {
            return false;
        };
        let old_meta = meta_of(before);
        match slot.read_claimed(before) {
            Some(mut rec) => {
                change(&mut rec);
                slot.write(&rec);
                slot.release(before, pack_meta(&rec));
                true
            }
            None => {
                slot.release(before, old_meta);
                false
            }
        }
    }

    /// A consistent snapshot of one entry; `None` if not open (or kept busy by writers).
    pub fn get(&self, fd: i32) -> Option<FdRecord> {
        self.slot(fd, false)?.read().ok().flatten()
    }

    /// The highest fd number ever recorded (-1 if none): bounds range operations and scans.
    pub fn highest_fd(&self) -> i32 {
        self.highest.load(Ordering::Relaxed) as i32
    }

    /// Number of open entries, counted by a scan (the hot path keeps no count).
    pub fn count_open(&self) -> u64 {
        let mut n = 0;
        self.for_each_open(0, i32::MAX, |_, _| n += 1);
        n
    }

    /// Calls `f` for each open entry with fd in `lo..=hi`, skipping chunks never mapped.
    pub fn for_each_open(&self, lo: i32, hi: i32, mut f: impl FnMut(i32, FdRecord)) {
        let hi = hi.min(self.highest_fd());
        let Some(dir) = self.chunks.get() else {
            return;
        };
        let mut fd = lo.max(0);
        while fd <= hi {
            let ci = (fd as usize) >> CHUNK_BITS;
            let Some(slots) = dir.get(ci).and_then(|c| c.get()) else {
                fd = ((ci + 1) << CHUNK_BITS) as i32;
                continue;
            };
            let end = hi.min((((ci + 1) << CHUNK_BITS) - 1) as i32);
            while fd <= end {
                if let Some(words) = slots.get(fd as usize & (CHUNK - 1))
                    && let Ok(Some(rec)) = Slot(words).read()
                {
                    f(fd, rec);
                }
                fd += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(call: Call, born: u64) -> FdRecord {
        FdRecord {
            call,
            kind: call.default_kind(),
            stream: false,
            tid: 7,
            stack: Some(StackId(3)),
            born_ns: born,
            detail: 42,
            path: PathTail::of(b"/tmp/x").0,
            epoch: 5,
        }
    }

    #[test]
    fn insert_get_remove() {
        let t = FdTable::new();
        assert_eq!(t.get(5), None);
        assert_eq!(t.insert(5, &rec(Call::Open, 1), 0), Insert::Inserted);
        assert_eq!(t.get(5), Some(rec(Call::Open, 1)));
        assert_eq!(t.count_open(), 1);
        assert_eq!(t.remove(5, 0, None), Remove::WasOpen);
        assert_eq!(t.get(5), None);
        assert_eq!(t.count_open(), 0);
        assert_eq!(t.remove(5, 0, None), Remove::NotOpen { last_release: None });
    }

    #[test]
    fn creation_over_open_entry_reports_the_missed_close() {
        let t = FdTable::new();
        t.insert(9, &rec(Call::Socket, 1), 0);
        assert_eq!(t.insert(9, &rec(Call::Pipe, 2), 0), Insert::Replaced);
        assert_eq!(t.count_open(), 1);
        assert_eq!(t.get(9).map(|r| r.call), Some(Call::Pipe));
    }

    #[test]
    fn remembers_the_releasing_stack() {
        let t = FdTable::new();
        t.insert(4, &rec(Call::Open, 1), 0);
        t.remove(4, 0, Some(StackId(77)));
        assert_eq!(
            t.remove(4, 0, None),
            Remove::NotOpen {
                last_release: Some(StackId(77))
            }
        );
        t.insert(4, &rec(Call::Open, 1), 0);
        assert_eq!(t.get(4).and_then(|r| r.stack), Some(StackId(3)));
    }

    #[test]
    fn covers_huge_and_rejects_negative_fds() {
        let t = FdTable::new();
        let big = i32::MAX - 1;
        assert_eq!(t.insert(big, &rec(Call::Dup2, 1), 0), Insert::Inserted);
        assert_eq!(t.get(big).map(|r| r.call), Some(Call::Dup2));
        assert_eq!(t.insert(-1, &rec(Call::Open, 1), 0), Insert::OutOfRange);
        assert_eq!(t.highest_fd(), big);
    }

    #[test]
    fn a_live_claim_makes_writers_skip_but_a_pre_fork_claim_is_taken_over() {
        let t = FdTable::new();
        t.insert(3, &rec(Call::Open, 1), 0);
        let slot = t.slot(3, false).unwrap();
        let before = slot.claim(0).unwrap();
        // Same generation: a signal handler interrupting the writer must not wait.
        assert_eq!(t.insert(3, &rec(Call::Pipe, 2), 0), Insert::Busy);
        assert_eq!(t.remove(3, 0, None), Remove::Busy);
        // Next fork generation: the claiming thread is gone, the claim is stale.
        assert_eq!(t.remove(3, 1, None), Remove::WasOpen);
        let _ = before;
    }

    #[test]
    fn update_changes_only_open_entries() {
        let t = FdTable::new();
        assert!(!t.update(6, 0, |r| r.stream = true));
        t.insert(6, &rec(Call::Open, 1), 0);
        assert!(t.update(6, 0, |r| r.stream = true));
        assert!(t.get(6).unwrap().stream);
    }

    #[test]
    fn iterates_open_entries_across_chunks() {
        let t = FdTable::new();
        for fd in [0, 1, 4095, 4096, 70000] {
            t.insert(fd, &rec(Call::Open, fd as u64), 0);
        }
        t.remove(1, 0, None);
        let mut seen = Vec::new();
        t.for_each_open(0, i32::MAX, |fd, r| seen.push((fd, r.born_ns)));
        assert_eq!(
            seen,
            vec![(0, 0), (4095, 4095), (4096, 4096), (70000, 70000)]
        );
        let mut some = Vec::new();
        t.for_each_open(4000, 5000, |fd, _| some.push(fd));
        assert_eq!(some, vec![4095, 4096]);
    }

    #[test]
    fn concurrent_writers_keep_the_count_exact() {
        let t = std::sync::Arc::new(FdTable::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for round in 0..2000u64 {
                        let fd = i * 1000 + (round % 500) as i32;
                        t.insert(fd, &rec(Call::Open, round), 0);
                        if round % 3 != 0 {
                            t.remove(fd, 0, None);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let mut n = 0;
        t.for_each_open(0, i32::MAX, |_, _| n += 1);
        assert_eq!(n as u64, t.count_open());
    }
}
