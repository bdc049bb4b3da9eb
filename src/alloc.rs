//! `FdguardAlloc`: fdguard's global allocator: the system allocator, except in a report child.
//!
//! # Why
//! Reports are made by a copy of the process created with a raw `clone` (see `child`): glibc's
//! fork handlers do not run there, so a malloc lock that another thread of the program held at
//! that instant stays locked in the child forever. The child therefore allocates from a private
//! bump arena of fresh pages and never calls malloc. In the program's own process this is a
//! pass-through to `System` with one relaxed load.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Arena reserved in a report child (virtual; only what is touched costs memory).
const CHILD_ARENA: usize = 1 << 32;

static IN_CHILD: AtomicBool = AtomicBool::new(false);
static ARENA_BASE: AtomicUsize = AtomicUsize::new(0);
static ARENA_NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct FdguardAlloc;

/// Switches this (single-threaded, just cloned) process to the private arena. Returns false if
/// the arena cannot be mapped; the child must then exit without allocating.
pub fn enter_child_arena() -> bool {
    let Some(arena) = crate::os::mem::leak_zeroed_slice::<u8>(CHILD_ARENA) else {
        return false;
    };
    ARENA_BASE.store(arena.as_ptr() as usize, Ordering::Relaxed);
    ARENA_NEXT.store(0, Ordering::Relaxed);
    IN_CHILD.store(true, Ordering::Release);
    true
}

fn bump(layout: Layout) -> *mut u8 {
    let base = ARENA_BASE.load(Ordering::Relaxed);
    let mut next = ARENA_NEXT.load(Ordering::Relaxed);
    loop {
        let start = (base + next).next_multiple_of(layout.align()) - base;
        let Some(end) = start
            .checked_add(layout.size())
            .filter(|e| *e <= CHILD_ARENA)
        else {
            return std::ptr::null_mut();
        };
        match ARENA_NEXT.compare_exchange(next, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (base + start) as *mut u8,
            Err(seen) => next = seen,
        }
    }
}

// SAFETY: outside a report child every call is forwarded to `System`. In a report child,
// `alloc` returns fresh, suitably aligned, never-reused memory from an arena that stays mapped
// until the child exits (zeroed pages, so `alloc_zeroed` holds too), `dealloc` is a no-op, and
// `realloc` copies into a new block: all within GlobalAlloc's contract.
unsafe impl GlobalAlloc for FdguardAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IN_CHILD.load(Ordering::Relaxed) {
            return bump(layout);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if IN_CHILD.load(Ordering::Relaxed) {
            // Memory from before the clone belongs to the (copied) system heap: leave it.
            return;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if IN_CHILD.load(Ordering::Relaxed) {
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return std::ptr::null_mut();
            };
            let new = bump(new_layout);
            if !new.is_null() {
                // SAFETY: `ptr` is valid for `layout.size()` bytes (caller's guarantee), `new`
                // for `new_size`, and they do not overlap (fresh arena memory).
                unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            }
            return new;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
