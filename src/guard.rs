//! Per-thread state and the decision each hook makes first: track, treat as fdguard's own, or
//! pass straight through.
//!
//! # Why
//! A hook runs in contexts fdguard does not choose: before fdguard is initialized, inside a libc
//! function that fdguard itself hooked (`fopen` calling an `open` another shim exports), on the
//! report thread (whose own fds must never be reported), in a `vfork` child that shares the
//! parent's memory (where any write would corrupt the parent's table), and after an internal
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

/// Tid of a thread that called `vfork` and may have a child running on its memory; 0 if none.
static VFORK_TID: AtomicU32 = AtomicU32::new(0);

struct ThreadState {
    /// Nesting depth of libc calls that may call hooked functions internally (`fopen`, `popen`).
    inside_compound: Cell<u32>,
    /// Cached kernel tid (0 = not yet known); reset in a fork child.
    tid: Cell<u32>,
    /// Set for fdguard's own threads (the report thread) and while fdguard works on any thread.
    internal: Cell<u32>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState { inside_compound: Cell::new(0), tid: Cell::new(0), internal: Cell::new(0) }
    };
}

/// Starts tracking (called once initialization succeeded).
pub fn activate() {
    PHASE.store(PHASE_ACTIVE, Ordering::Release);
}

/// Stops all tracking for the rest of the process: hooks pass calls through.
pub fn deactivate() {
    PHASE.store(PHASE_PASSIVE, Ordering::Release);
}

pub fn is_active() -> bool {
    PHASE.load(Ordering::Acquire) == PHASE_ACTIVE
}

/// The mode for the hook being entered on this thread.
#[inline]
pub fn mode() -> Mode {
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

/// Runs the real call of a libc function that may call other hooked functions internally, so
/// that those nested calls are not recorded twice.
#[inline]
pub fn compound<R>(f: impl FnOnce() -> R) -> R {
    THREAD.with(|t| t.inside_compound.set(t.inside_compound.get() + 1));
    let r = f();
    THREAD.with(|t| {
        t.inside_compound
            .set(t.inside_compound.get().saturating_sub(1))
    });
    r
}

/// Marks the current thread as doing fdguard's own work for the duration of `f`: every fd it
/// creates is fdguard's (kept out of reports), nothing is tracked.
pub fn internal<R>(f: impl FnOnce() -> R) -> R {
    THREAD.with(|t| t.internal.set(t.internal.get() + 1));
    let r = f();
    THREAD.with(|t| t.internal.set(t.internal.get().saturating_sub(1)));
    r
}

/// Marks the current thread (the report thread) as fdguard's for good.
pub fn mark_thread_internal() {
    THREAD.with(|t| t.internal.set(1));
}

/// This thread's kernel tid, cached after the first call.
#[inline]
pub fn tid() -> u32 {
    THREAD.with(|t| {
        let cached = t.tid.get();
        if cached != 0 {
            return cached;
        }
        let real = os::gettid();
        t.tid.set(real);
        real
    })
}

/// In a fork child: the surviving thread has a new tid.
pub fn forget_tid_after_fork() {
    THREAD.with(|t| t.tid.set(0));
}

/// Called by the `vfork` hook just before the real `vfork`.
pub fn vfork_starting() {
    VFORK_TID.store(tid(), Ordering::SeqCst);
}

/// True in the child of a `vfork` (it runs on the parent's memory and thread-locals).
///
/// While no vfork is pending this is one relaxed load. While one is, each hook pays a `gettid`:
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
            t.tid.set(os::gettid());
            return false;
        }
        if os::gettid() != cached {
            return true;
        }
        if cached == pending {
            let _ = VFORK_TID.compare_exchange(pending, 0, Ordering::SeqCst, Ordering::Relaxed);
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
        let _ = os::write_all(2, b"fdguard: ");
        let _ = os::write_all(2, what.as_bytes());
        let _ = os::write_all(2, b"; fdguard is now passing all calls through\n");
    }
}

/// Keeps `errno` as the program will see it across fdguard's own work.
pub struct ErrnoGuard(libc::c_int);

impl ErrnoGuard {
    #[inline]
    pub fn save() -> Self {
        Self(os::errno())
    }

    /// The value that will be restored.
    #[inline]
    pub fn saved(&self) -> libc::c_int {
        self.0
    }
}

impl Drop for ErrnoGuard {
    #[inline]
    fn drop(&mut self) {
        os::set_errno(self.0);
    }
}
