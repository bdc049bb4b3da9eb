//! `BadCloses`: closes of fds that were not open (EBADF), handed from hooks to the notice children.
//!
//! A close that fails with `EBADF` is usually a double close, and a double close is the bug that
//! closes another thread's newly opened file when the number was reused in between. Hooks record
//! the event in a small fixed queue (no allocation, no lock, never waits: when the queue is full
//! the event is only counted); `dumper` turns it into a notice, rate-limited.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::table::StackId;
use fdguard_core::call::Call;

const SLOTS: usize = 16;
const FREE: u32 = 0;
const WRITING: u32 = 1;
const READY: u32 = 2;
const NO_STACK: u64 = u32::MAX as u64;

/// One failed close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadClose {
    pub fd: i32,
    pub call: Call,
    pub tid: u32,
    /// Where the failing close was called.
    pub stack: Option<StackId>,
    /// Where this fd number was last released (with `FDGUARD_CLOSE_STACKS=1`).
    pub released_by: Option<StackId>,
}

struct Slot {
    state: AtomicU32,
    /// fd (32 bits) | call (8 bits) << 32
    head: AtomicU64,
    tid: AtomicU32,
    stacks: AtomicU64,
}

pub struct BadCloses {
    slots: [Slot; SLOTS],
    /// Every bad close, including those the queue had no room for.
    total: AtomicU64,
}

fn pack_stack(s: Option<StackId>) -> u64 {
    s.map_or(NO_STACK, |s| s.0 as u64)
}

fn unpack_stack(v: u64) -> Option<StackId> {
    (v != NO_STACK).then_some(StackId(v as u32))
}

impl Default for BadCloses {
    fn default() -> Self {
        Self::new()
    }
}

impl BadCloses {
    pub const fn new() -> Self {
        Self {
            slots: [const {
                Slot {
                    state: AtomicU32::new(FREE),
                    head: AtomicU64::new(0),
                    tid: AtomicU32::new(0),
                    stacks: AtomicU64::new(0),
                }
            }; SLOTS],
            total: AtomicU64::new(0),
        }
    }

    /// Queues an event; returns false if the queue was full (the event is still counted).
    pub fn push(&self, e: BadClose) -> bool {
        self.total.fetch_add(1, Ordering::Relaxed);
        for s in &self.slots {
            if s.state
                .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                s.head.store(
                    e.fd as u32 as u64 | ((e.call as u64) << 32),
                    Ordering::Relaxed,
                );
                s.tid.store(e.tid, Ordering::Relaxed);
                s.stacks.store(
                    pack_stack(e.stack) | (pack_stack(e.released_by) << 32),
                    Ordering::Relaxed,
                );
                s.state.store(READY, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Takes one queued event.
    pub fn pop(&self) -> Option<BadClose> {
        self.slots.iter().find_map(|s| {
            if s.state
                .compare_exchange(READY, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return None;
            }
            let head = s.head.load(Ordering::Relaxed);
            let stacks = s.stacks.load(Ordering::Relaxed);
            let e = BadClose {
                fd: head as u32 as i32,
                call: Call::from_u8((head >> 32) as u8).unwrap_or(Call::Close),
                tid: s.tid.load(Ordering::Relaxed),
                stack: unpack_stack(stacks & 0xffff_ffff),
                released_by: unpack_stack(stacks >> 32),
            };
            s.state.store(FREE, Ordering::Release);
            Some(e)
        })
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(fd: i32) -> BadClose {
        BadClose {
            fd,
            call: Call::Close,
            tid: 9,
            stack: Some(StackId(4)),
            released_by: None,
        }
    }

    #[test]
    fn queues_drains_and_counts_overflow() {
        let q = BadCloses::new();
        for fd in 0..20 {
            let queued = q.push(ev(fd));
            assert_eq!(queued, fd < SLOTS as i32);
        }
        assert_eq!(q.total(), 20);
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got.len(), SLOTS);
        assert_eq!(got[3], ev(3));
        assert!(q.pop().is_none());
        assert!(q.push(ev(-1)));
        assert_eq!(q.pop().map(|e| e.fd), Some(-1));
    }
}
