//! `RuleCache`: a fixed-size, statically allocated, lock-free map from an
//! exact lookup pc to its `UnwindRule`.
//!
//! Each slot is a tiny seqlock. Writers never wait: they try to make the
//! sequence odd with one CAS and give up if another writer (possibly the
//! thread they interrupted, if they run in a signal handler) holds it.
//! Readers retry nothing either: a torn or busy slot is just a miss. An
//! exact key match is required, so a colliding or stale slot can only
//! cause a miss, never a wrong rule.
//!
//! Keys embed a generation so the whole cache can be invalidated in O(1)
//! when code is unmapped (dlclose) and a pc may come to mean another rule.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use super::rule::UnwindRule;

const SET_BITS: u32 = 11;
const WAYS: usize = 2;
const SLOTS: usize = WAYS << SET_BITS;
/// User-space code lives below 2^47 (unless a program maps code higher
/// on purpose under 5-level paging: such pcs are just not cached); the
/// bits above 48 hold the generation.
const PC_BITS: u32 = 48;

#[repr(C, align(16))]
struct Slot {
    seq: AtomicU32,
    rule: AtomicU32,
    key: AtomicU64,
}

pub(crate) struct RuleCache {
    generation: AtomicU64,
    slots: [Slot; SLOTS],
}

impl RuleCache {
    pub(crate) const fn new() -> Self {
        RuleCache {
            generation: AtomicU64::new(1),
            slots: [const {
                Slot {
                    seq: AtomicU32::new(0),
                    rule: AtomicU32::new(0),
                    key: AtomicU64::new(0),
                }
            }; SLOTS],
        }
    }

    /// The key for `pc` in the current generation; `None` if `pc` is too
    /// large to be cached (such a pc is never valid user-space code anyway).
    #[inline(always)]
    pub(crate) fn key(&self, pc: usize, generation: u64) -> Option<u64> {
        let pc = pc as u64;
        (pc >> PC_BITS == 0).then_some(pc | (generation << PC_BITS))
    }

    #[inline(always)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Makes every cached rule unreachable. Not async-signal-unsafe, but
    /// captures racing with it may still use (and insert) old-generation
    /// rules for the walk they are in.
    pub(crate) fn invalidate(&self) {
        // 16 bits of generation: wrapping after 65535 dlcloses could
        // revive a stale slot, so skip 0 and accept that remote risk.
        let next = (self.generation() + 1) & 0xffff;
        self.generation.store(next.max(1), Ordering::Relaxed);
    }

    #[inline(always)]
    fn set(&self, key: u64) -> &[Slot] {
        // Folding in higher bits spreads code of different objects; no
        // multiply, as this sits on the walk's chain of dependent loads.
        let set = ((key ^ (key >> SET_BITS)) as usize) & ((1 << SET_BITS) - 1);
        self.slots.get(set * WAYS..set * WAYS + WAYS).unwrap_or(&[])
    }

    #[inline(always)]
    pub(crate) fn get(&self, key: u64) -> Option<UnwindRule> {
        self.set(key).iter().find_map(|slot| {
            let seq = slot.seq.load(Ordering::Acquire);
            let found = slot.key.load(Ordering::Relaxed);
            let rule = slot.rule.load(Ordering::Relaxed);
            // Orders the data loads before the re-check of `seq`.
            fence(Ordering::Acquire);
            let stable = seq & 1 == 0 && slot.seq.load(Ordering::Relaxed) == seq;
            (stable && found == key).then_some(UnwindRule::from_bits(rule))
        })
    }

    pub(crate) fn insert(&self, key: u64, rule: UnwindRule) {
        let set = self.set(key);
        let generation = key >> PC_BITS;
        // Prefer a slot that is empty or from an older generation; else
        // let a key bit pick the victim so both ways get used.
        let victim = set
            .iter()
            .find(|s| s.key.load(Ordering::Relaxed) >> PC_BITS != generation)
            .or_else(|| set.get((key as usize >> 4) % WAYS));
        let Some(slot) = victim else { return };
        let Some(seq) = begin_write(&slot.seq) else {
            return; // someone else is writing it: never wait
        };
        slot.key.store(key, Ordering::Relaxed);
        slot.rule.store(rule.bits(), Ordering::Relaxed);
        slot.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

/// Claims a seqlock for writing (odd sequence) unless a writer holds it; never waits. Returns
/// the even sequence seen, so the writer ends with `seq + 2`.
pub(crate) fn begin_write(seq: &AtomicU32) -> Option<u32> {
    let s = seq.load(Ordering::Relaxed);
    if s & 1 != 0 {
        return None;
    }
    seq.compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
        .ok()?;
    // Keeps the data stores after the odd sequence for readers that pair this with their
    // acquire fence.
    fence(Ordering::Release);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::super::rule::CfaBase;
    use super::*;

    #[test]
    fn exact_key_and_generation_required() {
        let cache = Box::new(RuleCache::new());
        let rule = UnwindRule::new(CfaBase::Rsp, 24, None);
        let g = cache.generation();
        let k = cache.key(0x401234, g).unwrap();
        assert_eq!(cache.get(k), None);
        cache.insert(k, rule);
        assert_eq!(cache.get(k), Some(rule));
        assert_eq!(cache.get(cache.key(0x401235, g).unwrap()), None);
        cache.invalidate();
        let g2 = cache.generation();
        assert_ne!(g, g2);
        assert_eq!(cache.get(cache.key(0x401234, g2).unwrap()), None);
        assert_eq!(cache.key(1 << 50, g), None);
    }

    #[test]
    fn stop_verdicts_are_cached_too() {
        let cache = Box::new(RuleCache::new());
        let k = cache.key(0x1000, cache.generation()).unwrap();
        cache.insert(k, UnwindRule::STOP);
        assert_eq!(cache.get(k), Some(UnwindRule::STOP));
    }

    #[test]
    fn busy_slot_is_a_miss_and_is_not_waited_for() {
        let cache = Box::new(RuleCache::new());
        let rule = UnwindRule::new(CfaBase::Rbp, 16, Some(-16));
        let k = cache.key(0x7000, cache.generation()).unwrap();
        cache.insert(k, rule);
        let slot = cache
            .set(k)
            .iter()
            .find(|s| s.key.load(Ordering::Relaxed) == k)
            .unwrap();
        slot.seq.fetch_add(1, Ordering::Relaxed); // a writer is "in progress"
        assert_eq!(cache.get(k), None);
        cache.insert(k, UnwindRule::STOP); // must return, not spin
        slot.seq.fetch_add(1, Ordering::Relaxed);
        assert_eq!(cache.get(k), Some(rule));
    }

    #[test]
    fn many_keys_never_return_wrong_rules() {
        let cache = Box::new(RuleCache::new());
        let g = cache.generation();
        let rule_for = |pc: usize| UnwindRule::new(CfaBase::Rsp, 8 + (pc % 1000) as i64 * 8, None);
        for pc in (0x10_0000..0x10_0000 + 20_000 * 7).step_by(7) {
            cache.insert(cache.key(pc, g).unwrap(), rule_for(pc));
        }
        let mut hits = 0;
        for pc in (0x10_0000..0x10_0000 + 20_000 * 7).step_by(7) {
            if let Some(r) = cache.get(cache.key(pc, g).unwrap()) {
                assert_eq!(r, rule_for(pc));
                hits += 1;
            }
        }
        assert!(hits > SLOTS / 2, "only {hits} hits");
    }

    #[test]
    fn concurrent_writers_and_readers_agree() {
        let cache = RuleCache::new();
        let g = cache.generation();
        let rule_for = |pc: usize| {
            UnwindRule::new(
                CfaBase::Rsp,
                8 + (pc % 4096) as i64 * 8,
                Some(-8 * (pc % 7 + 1) as i64),
            )
        };
        std::thread::scope(|s| {
            for t in 0..4 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..200_000usize {
                        let pc = 0x5000 + (i * 13 + t * 7) % 50_000;
                        let k = cache.key(pc, g).unwrap();
                        match cache.get(k) {
                            Some(r) => assert_eq!(r, rule_for(pc)),
                            None => cache.insert(k, rule_for(pc)),
                        }
                    }
                });
            }
        });
    }
}
