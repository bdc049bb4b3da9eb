//! Per-thread state and the decision each hook makes first: track, treat as fdguard's own, or
//! pass straight through.
//!
//! # Why
//! A hook runs in contexts fdguard does not choose: before fdguard is initialized, inside a libc
//! function that fdguard itself hooked (`fopen` calling an `open` another shim exports), on the
//! accept guard's thread (whose own fds must never be reported), in a `vfork` child that shares
//! the parent's memory (where any write would corrupt the parent's table), and after an internal
//! error. All of them reduce to one cheap check at the top of every hook.
//!
//! The thread-locals are `const`-initialized `Cell`s without destructors: usable before `main`,
//! during thread teardown, and without the allocation that registering a destructor costs.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use crate::os;

/// How a hook treats the call it intercepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Record creations and releases in the fd table.
    Track,
    /// The call comes from fdguard's own threads: remember the fd as fdguard's, report nothing.
    Own,
    /// Call the real function and do nothing else.
    Pass,
}

const PHASE_LOADING: u8 = 0;
const PHASE_ACTIVE: u8 = 1;
const PHASE_PASSIVE: u8 = 2;

static PHASE: AtomicU8 = AtomicU8::new(PHASE_LOADING);

/// Reasons a hook cannot take the fast path, counted: one while fdguard is not active (loading,
/// or passive after a failure), one per thread inside a compound call or doing fdguard's own
/// work, one while a vfork child may be running. When it is zero (almost always), `mode` is a
/// single load, with no thread-local lookup.
static SLOW: AtomicU32 = AtomicU32::new(1);

/// Tid of a thread that called `vfork` and may have a child running on its memory; 0 if none.
static VFORK_TID: AtomicU32 = AtomicU32::new(0);

struct ThreadState {
    /// Nesting depth of libc calls that may call hooked functions internally (`fopen`, `popen`).
    inside_compound: Cell<u32>,
    /// Cached kernel tid (0 = not yet known); reset in a fork child.
    tid: Cell<u32>,
    /// Set for fdguard's own threads (the accept guard's) and while fdguard works on any thread.
    internal: Cell<u32>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState { inside_compound: Cell::new(0), tid: Cell::new(0), internal: Cell::new(0) }
    };
}

/// Starts tracking (called once initialization succeeded).
pub fn activate() {
    if PHASE.swap(PHASE_ACTIVE, Ordering::AcqRel) != PHASE_ACTIVE {
        SLOW.fetch_sub(1, Ordering::Release);
    }
}

/// Stops all tracking for the rest of the process: hooks pass calls through.
pub fn deactivate() {
    if PHASE.swap(PHASE_PASSIVE, Ordering::AcqRel) == PHASE_ACTIVE {
        SLOW.fetch_add(1, Ordering::AcqRel);
    }
}

pub fn is_active() -> bool {
    PHASE.load(Ordering::Acquire) == PHASE_ACTIVE
}

/// The mode for the hook being entered on this thread.
#[inline(always)]
pub fn mode() -> Mode {
    if SLOW.load(Ordering::Relaxed) == 0 {
        return Mode::Track;
    }
    slow_mode()
}

#[cold]
fn slow_mode() -> Mode {
    // First: a vfork child must not even touch thread-local state on its parent's behalf.
    if in_vfork_child() {
        return Mode::Pass;
    }
    THREAD.with(|t| {
        if t.internal.get() > 0 {
            Mode::Own
        } else if PHASE.load(Ordering::Acquire) != PHASE_ACTIVE || t.inside_compound.get() > 0 {
            Mode::Pass
        } else {
            Mode::Track
        }
    })
}

/// Runs `f` with one of this thread's counters raised (and `SLOW` with it).
#[inline]
fn with_raised<R>(counter: fn(&ThreadState) -> &Cell<u32>, f: impl FnOnce() -> R) -> R {
    SLOW.fetch_add(1, Ordering::AcqRel);
    THREAD.with(|t| counter(t).set(counter(t).get() + 1));
    let r = f();
    THREAD.with(|t| counter(t).set(counter(t).get().saturating_sub(1)));
    SLOW.fetch_sub(1, Ordering::AcqRel);
    r
}

/// Runs the real call of a libc function that may call other hooked functions internally, so
/// that those nested calls are not recorded twice.
#[inline]
pub fn compound<R>(f: impl FnOnce() -> R) -> R {
    with_raised(|t| &t.inside_compound, f)
}

/// Marks the current thread as doing fdguard's own work for the duration of `f`: every fd it
/// creates is fdguard's (kept out of reports), nothing is tracked.
pub fn internal<R>(f: impl FnOnce() -> R) -> R {
    with_raised(|t| &t.internal, f)
}

/// This thread's kernel tid: glibc's, where fdguard found it, else fdguard's own cache.
#[inline(always)]
pub fn tid() -> u32 {
    os::thread::descriptor_tid().unwrap_or_else(cached_tid)
}

/// This thread's kernel tid, cached after the first call (the cache is also what tells a vfork
/// child from its parent thread).
fn cached_tid() -> u32 {
    THREAD.with(|t| {
        let cached = t.tid.get();
        if cached != 0 {
            return cached;
        }
        let real = os::thread::gettid();
        t.tid.set(real);
        real
    })
}

/// In a fork child: the surviving thread has a new tid, no vfork is pending, and the counters
/// raised by threads that did not survive `fork` are gone.
pub fn after_fork_in_child() {
    VFORK_TID.store(0, Ordering::SeqCst);
    let inactive = u32::from(PHASE.load(Ordering::Acquire) != PHASE_ACTIVE);
    THREAD.with(|t| {
        t.tid.set(0);
        SLOW.store(
            inactive + t.inside_compound.get() + t.internal.get(),
            Ordering::SeqCst,
        );
    });
}

/// Called by the `vfork` hook just before the real `vfork`.
pub fn vfork_starting() {
    if VFORK_TID.swap(cached_tid(), Ordering::SeqCst) == 0 {
        SLOW.fetch_add(1, Ordering::SeqCst);
    }
}

/// True in the child of a `vfork` (it runs on the parent's memory and thread-locals).
///
/// Only reached on the slow path (a pending vfork raises `SLOW`). While one is, each hook pays a `gettid`:
/// the child shares the parent thread's cached tid but has its own kernel tid. The parent thread
/// clears the flag on its first hook after the child has exec'd or exited.
#[inline]
fn in_vfork_child() -> bool {
    let pending = VFORK_TID.load(Ordering::Relaxed);
    if pending == 0 {
        return false;
    }
    vfork_check(pending)
}

#[cold]
fn vfork_check(pending: u32) -> bool {
    THREAD.with(|t| {
        let cached = t.tid.get();
        if cached == 0 {
            // Never cached: not the vforking thread, so not its child either.
            t.tid.set(os::thread::gettid());
            return false;
        }
        if os::thread::gettid() != cached {
            return true;
        }
        if cached == pending
            && VFORK_TID
                .compare_exchange(pending, 0, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            SLOW.fetch_sub(1, Ordering::SeqCst);
        }
        false
    })
}

static FAILED: AtomicBool = AtomicBool::new(false);

/// Runs fdguard's bookkeeping so that nothing it does can reach the program: a panic turns
/// fdguard off (one line on stderr) and the hook still returns the real call's result.
#[inline]
pub fn contained<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(_) => {
            internal_failure("internal error in a hook");
            None
        }
    }
}

/// Reports an fdguard failure once and falls back to passing every call through.
pub fn internal_failure(what: &str) {
    deactivate();
    if !FAILED.swap(true, Ordering::SeqCst) {
        let _ = os::fd::write_all(2, b"fdguard: ");
        let _ = os::fd::write_all(2, what.as_bytes());
        let _ = os::fd::write_all(2, b"; fdguard is now passing all calls through\n");
    }
}

/// Keeps `errno` as the program will see it across fdguard's own work.
pub struct ErrnoGuard {
    errno: os::errno::ThreadErrno,
    saved: libc::c_int,
}

impl ErrnoGuard {
    #[inline]
    pub fn save() -> Self {
        Self::at(os::errno::ThreadErrno::locate())
    }

    /// Saves the value at an `errno` located earlier on this thread.
    #[inline]
    pub fn at(errno: os::errno::ThreadErrno) -> Self {
        let saved = errno.get();
        Self { errno, saved }
    }

    /// The value that will be restored.
    #[inline]
    pub fn saved(&self) -> libc::c_int {
        self.saved
    }
}

impl Drop for ErrnoGuard {
    #[inline]
    fn drop(&mut self) {
        self.errno.set(self.saved);
    }
}
