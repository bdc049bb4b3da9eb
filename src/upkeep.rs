//! The accept guard's thread: prints the operator's lines, shows paused listeners again when no
//! wait of the program's did (a backstop), and takes shed mode's reserve back.
//!
//! Started the first time there is work for it (an `accept` failing for lack of fds), not at
//! load or attach: a thread makes glibc take its slower multi-threaded path on every system
//! call (see `child`), a cost worth paying only once the guard is at work. It starts with every
//! signal blocked, so the program's signals still reach the program's threads.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::emfile::{self, GUARD, LineContext, Lines, NoticeKind};
use crate::guard;
use crate::inspect;
use crate::os;
use crate::own::OWN;
use crate::tracker;
use fdguard_core::config::EmfileMode;

/// The guard's settings the lines mention.
struct Settings {
    mode: EmfileMode,
    backoff_max_ms: u64,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static STARTED: AtomicBool = AtomicBool::new(false);
static WAKE: AtomicU32 = AtomicU32::new(0);

pub fn configure(mode: EmfileMode, backoff_max_ms: u64) {
    let _ = SETTINGS.set(Settings {
        mode,
        backoff_max_ms,
    });
}

/// In a fork child of the program: the thread was not copied; it starts again when needed.
pub fn after_fork() {
    STARTED.store(false, Ordering::Relaxed);
}

/// Starts the thread if needed and wakes it.
pub fn wake() {
    if !STARTED.swap(true, Ordering::AcqRel) {
        guard::internal(start);
    }
    WAKE.fetch_add(1, Ordering::Release);
    os::futex::futex_wake(&WAKE);
}

fn start() {
    let spawned = os::signal::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("fdguard".into())
            .spawn(run)
    });
    if spawned.is_err() {
        let _ = os::fd::write_all(
            2,
            b"fdguard: cannot start the accept guard's thread; its notices are off\n",
        );
    }
}

fn run() {
    let mut lines = Lines::default();
    loop {
        let seen = WAKE.load(Ordering::Acquire);
        let next_look = guard::internal(|| guard::contained(|| tick(&mut lines))).flatten();
        // Every second, or sooner when a paused listener must be shown again.
        let timeout = next_look.map_or(1_000_000_000, |at| {
            at.saturating_sub(os::clock::precise_ns())
                .clamp(1_000_000, 1_000_000_000)
        });
        os::futex::futex_wait(&WAKE, seen, timeout);
    }
}

/// The guard's upkeep, then the operator's lines that are due. Returns when to look again.
fn tick(lines: &mut Lines) -> Option<u64> {
    let next = emfile::upkeep();
    let mut due = Vec::new();
    lines.tick(&GUARD, os::clock::precise_ns(), &mut due);
    let settings = SETTINGS.get()?;
    for n in due {
        let addr = inspect::local_addr(n.fd);
        // The numbers below the soft limit in use (fds above it, from before a lowered limit,
        // do not count against it).
        let open = (n.kind == NoticeKind::First).then(|| {
            let soft = os::process::nofile_limit().0;
            let (upto, batch) = tracker::probe_bounds();
            let below = upto.min(soft.min(i32::MAX as u64) as i32);
            let open = inspect::probe_fds(below, batch).into_iter();
            (open.filter(|fd| !OWN.contains(*fd)).count(), soft)
        });
        let line = emfile::render(
            &n,
            &LineContext {
                addr: addr.as_deref(),
                open,
                reserve: emfile::reserve_fd().is_some(),
                mode: settings.mode,
                backoff_max_ms: settings.backoff_max_ms,
            },
        );
        let _ = os::fd::write_all(2, format!("{line}\n").as_bytes());
    }
    next
}
