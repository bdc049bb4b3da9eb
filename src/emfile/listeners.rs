//! The table of guarded listening sockets (`Guard`; the process's one is `GUARD`): per listener,
//! its episode of failures, backoff state and counters, and the epoll sets that hold it as the
//! program registered them, so that a pause can hide it there and show it again. The hooks tell
//! the table what happens to listeners; it asks `decide` what to do about each failure and
//! carries out the hiding through `Kernel`. Fixed-size and lock-free for the hooks, as the
//! module docs of `emfile` explain.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::*,
};

use super::kernel::Kernel;
use super::policy::{Hold, Seen, decide, period_ns};
use fdguard_core::config::EmfileMode;

/// Listening sockets guarded per process; others get plain pass-through.
pub const LISTENERS: usize = 64;
/// Epoll sets remembered per listener.
pub const REGS: usize = 4;
/// How long the program's own `epoll_ctl` on a listener waits for fdguard's operation on it.
const PATIENCE_NS: u64 = 100_000_000;

pub use fdguard_core::accept_lines::Totals;

struct Counters {
    failures: AtomicU64,
    paused_ns: AtomicU64,
    shed: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            failures: AtomicU64::new(0),
            paused_ns: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        }
    }

    fn get(&self) -> Totals {
        Totals {
            failures: self.failures.load(Relaxed),
            paused_ns: self.paused_ns.load(Relaxed),
            shed: self.shed.load(Relaxed),
        }
    }

    fn set(&self, t: Totals) {
        self.failures.store(t.failures, Relaxed);
        self.paused_ns.store(t.paused_ns, Relaxed);
        self.shed.store(t.shed, Relaxed);
    }

    fn unpause(&self, ns: u64) {
        let _ = self
            .paused_ns
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(ns)));
    }
}

/// One epoll set that holds a listener, as the program registered it.
struct Reg {
    /// epfd + 1; 0 = free.
    epfd: AtomicI32,
    events: AtomicU32,
    data: AtomicU64,
    /// fdguard set its events to 0.
    masked: AtomicBool,
}

impl Reg {
    const fn new() -> Self {
        Self {
            epfd: AtomicI32::new(0),
            events: AtomicU32::new(0),
            data: AtomicU64::new(0),
            masked: AtomicBool::new(false),
        }
    }

    fn clear(&self) {
        self.masked.store(false, Release);
        self.epfd.store(0, Release);
    }

    /// `EPOLL_CTL_MOD` is refused for exclusive registrations: they cannot be hidden.
    fn maskable(&self) -> bool {
        self.events.load(Acquire) & libc::EPOLLEXCLUSIVE as u32 == 0
    }
}

const SLOT_FREE: i32 = 0;
const SLOT_SETTING_UP: i32 = -1;

/// One listening socket.
struct Listener {
    /// fd + 1; `SLOT_FREE`, or `SLOT_SETTING_UP` while being claimed.
    fd: AtomicI32,
    /// Tid of the thread operating on the registrations; 0 = free.
    lock: AtomicU32,
    /// Bumped before and after each of the program's own `epoll_ctl` on the listener (odd while
    /// one runs): an operation of fdguard's that overlapped one redoes its work.
    program_ctls: AtomicU32,
    watched: AtomicBool,
    in_episode: AtomicBool,
    /// Id of the current (or last) episode of failures, unique in the process.
    episode: AtomicU64,
    in_row: AtomicU32,
    /// Hidden from the program's waits until this time (0 = not hidden).
    until_ns: AtomicU64,
    errno: AtomicI32,
    /// The failure that started the episode asked for an `emfile` report.
    reported: AtomicBool,
    start_ns: AtomicU64,
    end_ns: AtomicU64,
    totals: Counters,
    /// `totals` when the episode started.
    base: Counters,
    regs: [Reg; REGS],
}

impl Listener {
    const fn new() -> Self {
        Self {
            fd: AtomicI32::new(SLOT_FREE),
            lock: AtomicU32::new(0),
            program_ctls: AtomicU32::new(0),
            watched: AtomicBool::new(false),
            in_episode: AtomicBool::new(false),
            episode: AtomicU64::new(0),
            in_row: AtomicU32::new(0),
            until_ns: AtomicU64::new(0),
            errno: AtomicI32::new(0),
            reported: AtomicBool::new(false),
            start_ns: AtomicU64::new(0),
            end_ns: AtomicU64::new(0),
            totals: Counters::new(),
            base: Counters::new(),
            regs: [const { Reg::new() }; REGS],
        }
    }

    fn is(&self, fd: i32) -> bool {
        self.fd.load(Acquire) == fd + 1
    }

    fn try_lock(&self, tid: u32) -> bool {
        self.lock.compare_exchange(0, tid, Acquire, Relaxed).is_ok()
    }

    fn unlock(&self) {
        self.lock.store(0, Release);
    }

    fn any_masked(&self) -> bool {
        self.regs.iter().any(|r| r.masked.load(Acquire))
    }

    fn masked_in(&self, epfd: i32) -> bool {
        self.regs
            .iter()
            .any(|r| r.epfd.load(Acquire) == epfd + 1 && r.masked.load(Acquire))
    }

    fn registered(&self) -> bool {
        self.regs.iter().any(|r| r.epfd.load(Acquire) > 0)
    }

    fn reg(&self, epfd: i32) -> Option<&Reg> {
        self.regs.iter().find(|r| r.epfd.load(Acquire) == epfd + 1)
    }

    fn reg_or_new(&self, epfd: i32) -> Option<&Reg> {
        self.reg(epfd).or_else(|| {
            self.regs.iter().find(|r| {
                r.epfd
                    .compare_exchange(0, epfd + 1, AcqRel, Relaxed)
                    .is_ok()
            })
        })
    }

    /// Applies "hidden" (events 0) or "shown" (the program's events) to every registration,
    /// through `k`. Holding the lock. Redoes everything with fresh values if the program's own
    /// `epoll_ctl` on the listener ran meanwhile (a signal handler on this thread, or one that
    /// did not wait for the lock), so the last word in the kernel is never a stale one.
    fn apply(&self, fd: i32, hidden: bool, k: &impl Kernel) {
        let mut all = false;
        for _ in 0..3 {
            let g = self.program_ctls.load(Acquire);
            if g & 1 == 1 {
                return;
            }
            for r in &self.regs {
                let epfd = r.epfd.load(Acquire) - 1;
                let hide = hidden && r.maskable();
                if epfd < 0 || (!all && r.masked.load(Acquire) == hide) {
                    continue;
                }
                let events = if hide { 0 } else { r.events.load(Acquire) };
                match k.epoll_mod(epfd, fd, events, r.data.load(Acquire)) {
                    Ok(()) => r.masked.store(hide, Release),
                    // The set is gone or no longer holds the listener: forget it.
                    Err(_) => r.clear(),
                }
            }
            if self.program_ctls.load(Acquire) == g {
                return;
            }
            all = true;
        }
    }
}

/// What the program's `epoll_ctl` on a listener does, as fdguard records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlOp {
    /// `EPOLL_CTL_ADD` or `EPOLL_CTL_MOD` with these events and data.
    Set {
        events: u32,
        data: u64,
    },
    Del,
    /// Anything else (fdguard records nothing).
    Other,
}

/// A program `epoll_ctl` on a listener in progress.
pub struct Ctl {
    slot: usize,
    locked: bool,
}

/// One failed accept, as the hook saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Failed {
    pub fd: i32,
    pub errno: i32,
    /// The listener is blocking.
    pub blocking: bool,
    /// Shed mode closed every pending connection first.
    pub shed_emptied: bool,
    /// The failure asked for an `emfile` report.
    pub reported: bool,
}

/// The outcome of one failed accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub hold: Hold,
    /// The listener's slot (for `add_paused`/`add_shed`).
    pub slot: usize,
    /// This failure started an episode (the operator is told).
    pub started: bool,
}

/// The failures of one thread, for `Seen::again` and `Seen::waited`.
struct ThreadWaits {
    /// (listener fd, episode) of this thread's last failure.
    last: Cell<(i32, u64)>,
    waited: Cell<bool>,
}

thread_local! {
    static THREAD: ThreadWaits = const {
        ThreadWaits { last: Cell::new((-1, 0)), waited: Cell::new(false) }
    };
}

static EPISODE_IDS: AtomicU64 = AtomicU64::new(0);

/// All guarded listeners and the process-wide figures.
pub struct Guard {
    mode: AtomicU8,
    max_ns: AtomicU64,
    listeners: [Listener; LISTENERS],
    /// Slots ever used: scans stop here.
    used: AtomicUsize,
    /// Bit `fd % 64` is set for every fd that ever was a listener: one load answers "not a
    /// listener" for nearly every other fd.
    bloom: AtomicU64,
    /// Listeners in an episode of failures: zero makes every wait hook a pass-through.
    episodes: AtomicU32,
    totals: Counters,
}

pub static GUARD: Guard = Guard::new();

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Guard {
    pub const fn new() -> Self {
        Self {
            mode: AtomicU8::new(EmfileMode::Off as u8),
            max_ns: AtomicU64::new(1_000_000_000),
            listeners: [const { Listener::new() }; LISTENERS],
            used: AtomicUsize::new(0),
            bloom: AtomicU64::new(0),
            episodes: AtomicU32::new(0),
            totals: Counters::new(),
        }
    }

    pub fn configure(&self, mode: EmfileMode, backoff_max_ms: u64) {
        self.mode.store(mode as u8, Relaxed);
        self.max_ns
            .store(backoff_max_ms.saturating_mul(1_000_000), Relaxed);
    }

    pub fn mode(&self) -> EmfileMode {
        match self.mode.load(Relaxed) {
            m if m == EmfileMode::Pause as u8 => EmfileMode::Pause,
            m if m == EmfileMode::Sleep as u8 => EmfileMode::Sleep,
            m if m == EmfileMode::Shed as u8 => EmfileMode::Shed,
            _ => EmfileMode::Off,
        }
    }

    /// True while some listener is in an episode of failures: only then do waits need a look.
    #[inline]
    pub fn active(&self) -> bool {
        self.episodes.load(Relaxed) != 0
    }

    /// False for nearly every fd that is not a listener (one load).
    #[inline(always)]
    pub fn maybe_listener(&self, fd: i32) -> bool {
        fd >= 0 && self.bloom.load(Relaxed) & (1 << (fd & 63)) != 0
    }

    fn slots(&self) -> &[Listener] {
        &self.listeners[..self.used.load(Acquire).min(LISTENERS)]
    }

    fn find(&self, fd: i32) -> Option<usize> {
        if !self.maybe_listener(fd) {
            return None;
        }
        self.slots().iter().position(|l| l.is(fd))
    }

    /// `listen` succeeded on `fd` (or `accept` was called on it): guard it. `None` if the
    /// table is full.
    pub fn listening(&self, fd: i32) -> Option<usize> {
        if fd < 0 || fd == i32::MAX {
            return None;
        }
        if let Some(i) = self.find(fd) {
            return Some(i);
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.fd
                .compare_exchange(SLOT_FREE, SLOT_SETTING_UP, AcqRel, Relaxed)
                .is_err()
            {
                continue;
            }
            l.watched.store(false, Relaxed);
            l.in_row.store(0, Relaxed);
            l.until_ns.store(0, Relaxed);
            for r in &l.regs {
                r.clear();
            }
            self.used.fetch_max(i + 1, AcqRel);
            self.bloom.fetch_or(1 << (fd & 63), AcqRel);
            l.fd.store(fd + 1, Release);
            return Some(i);
        }
        None
    }

    /// Waits (briefly, never for this thread) for fdguard's operation on `l` to finish. False
    /// if it did not get the lock: the caller goes on without it (see `Listener::apply`).
    fn lock_patiently(&self, l: &Listener, tid: u32, k: &impl Kernel) -> bool {
        let mut since = 0;
        loop {
            match l.lock.compare_exchange(0, tid, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(owner) if owner == tid => return false,
                Err(_) => {}
            }
            let now = k.now_ns();
            if since == 0 {
                since = now;
            } else if now.saturating_sub(since) > PATIENCE_NS {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// The listener `fd` is being closed (before the real close): forget it (every entry: two
    /// threads registering a new listener at once may have made two).
    pub fn closing(&self, fd: i32, tid: u32, k: &impl Kernel) {
        while let Some(i) = self.find(fd) {
            self.forget(i, tid, k);
        }
    }

    /// Every fd in `lo..=hi` is being closed.
    pub fn closing_range(&self, lo: i32, hi: i32, tid: u32, k: &impl Kernel) {
        for (i, l) in self.slots().iter().enumerate() {
            let fd = l.fd.load(Acquire) - 1;
            if fd >= 0 && (lo..=hi).contains(&fd) {
                self.forget(i, tid, k);
            }
        }
    }

    fn forget(&self, i: usize, tid: u32, k: &impl Kernel) {
        let l = &self.listeners[i];
        let locked = self.lock_patiently(l, tid, k);
        if l.in_episode.swap(false, AcqRel) {
            self.episodes.fetch_sub(1, AcqRel);
        }
        for r in &l.regs {
            r.clear();
        }
        l.until_ns.store(0, Release);
        if locked {
            l.unlock();
        }
        l.fd.store(SLOT_FREE, Release);
    }

    /// Before the program's own `epoll_ctl` on a known listener `fd`.
    pub fn ctl_begin(&self, fd: i32, tid: u32, k: &impl Kernel) -> Option<Ctl> {
        let slot = self.find(fd)?;
        let l = &self.listeners[slot];
        let locked = self.lock_patiently(l, tid, k);
        l.program_ctls.fetch_add(1, AcqRel);
        Some(Ctl { slot, locked })
    }

    /// After it: records what the kernel accepted and hides the listener in a set it was just
    /// added to if it is paused.
    pub fn ctl_end(&self, c: Ctl, epfd: i32, fd: i32, op: CtlOp, ok: bool, k: &impl Kernel) {
        let l = &self.listeners[c.slot];
        if ok && l.is(fd) && (0..i32::MAX).contains(&epfd) {
            match op {
                CtlOp::Set { events, data } => {
                    if let Some(r) = l.reg_or_new(epfd) {
                        r.events.store(events, Release);
                        r.data.store(data, Release);
                        r.masked.store(false, Release);
                        if l.until_ns.load(Acquire) > k.now_ns()
                            && r.maskable()
                            && k.epoll_mod(epfd, fd, 0, data).is_ok()
                        {
                            r.masked.store(true, Release);
                        }
                    }
                }
                CtlOp::Del => {
                    if let Some(r) = l.reg(epfd) {
                        r.clear();
                    }
                }
                CtlOp::Other => {}
            }
        }
        l.program_ctls.fetch_add(1, AcqRel);
        if c.locked {
            l.unlock();
        }
    }

    /// `accept` failed for lack of fds. Records the failure, hides the listener if the policy
    /// says so, and returns what the hook does before returning. `None` when the listener table
    /// is full (the hook then does nothing).
    pub fn accept_failed(&self, f: Failed, tid: u32, k: &impl Kernel) -> Option<Failure> {
        let Failed {
            fd,
            errno,
            blocking,
            shed_emptied,
            reported,
        } = f;
        let slot = self.listening(fd)?;
        let l = &self.listeners[slot];
        let now = k.now_ns();
        let started = !l.in_episode.swap(true, AcqRel);
        if started {
            self.episodes.fetch_add(1, AcqRel);
            l.base.set(l.totals.get());
            l.start_ns.store(now, Relaxed);
            l.reported.store(reported, Relaxed);
            l.errno.store(errno, Relaxed);
            l.episode
                .store(EPISODE_IDS.fetch_add(1, Relaxed) + 1, Release);
        }
        let episode = l.episode.load(Acquire);
        let period = period_ns(l.in_row.fetch_add(1, AcqRel) + 1, self.max_ns.load(Relaxed));
        self.totals.failures.fetch_add(1, Relaxed);
        l.totals.failures.fetch_add(1, Relaxed);
        let (again, waited) = THREAD.with(|t| {
            let again = t.last.replace((fd, episode)) == (fd, episode);
            (again, t.waited.replace(false))
        });
        let seen = Seen {
            blocking,
            watched: l.watched.load(Acquire) || l.registered(),
            again,
            waited,
            within_pause: l.until_ns.load(Acquire) > now,
            shed_emptied,
        };
        let d = decide(self.mode(), period, seen);
        if d.hide {
            self.hide(slot, now, now.saturating_add(period), tid, k);
        }
        Some(Failure {
            hold: d.hold,
            slot,
            started,
        })
    }

    fn hide(&self, slot: usize, now: u64, until: u64, tid: u32, k: &impl Kernel) {
        let l = &self.listeners[slot];
        let prev = l.until_ns.fetch_max(until, AcqRel).max(now);
        self.add_paused(slot, until.saturating_sub(prev));
        if l.try_lock(tid) {
            l.apply(l.fd.load(Acquire) - 1, true, k);
            l.unlock();
        }
    }

    /// Time the failing thread was held in `accept`.
    pub fn add_paused(&self, slot: usize, ns: u64) {
        self.totals.paused_ns.fetch_add(ns, Relaxed);
        self.listeners[slot].totals.paused_ns.fetch_add(ns, Relaxed);
    }

    /// Connections closed at once in shed mode.
    pub fn add_shed(&self, slot: usize, n: u64) {
        self.totals.shed.fetch_add(n, Relaxed);
        self.listeners[slot].totals.shed.fetch_add(n, Relaxed);
    }

    /// `accept` on `fd` succeeded: the backoff starts over and the listener is shown again.
    /// True if this ended an episode (the operator is told).
    pub fn accept_succeeded(&self, fd: i32, tid: u32, k: &impl Kernel) -> bool {
        let Some(slot) = self.find(fd) else {
            return false;
        };
        let l = &self.listeners[slot];
        // The common case, accepting with fds to spare, only reads.
        if l.in_row.load(Relaxed) == 0 && !l.in_episode.load(Acquire) {
            return false;
        }
        l.in_row.store(0, Release);
        if !l.in_episode.swap(false, AcqRel) {
            return false;
        }
        let now = k.now_ns();
        self.episodes.fetch_sub(1, AcqRel);
        l.end_ns.store(now, Relaxed);
        let until = l.until_ns.swap(0, AcqRel);
        if until > now {
            self.totals.unpause(until - now);
            l.totals.unpause(until - now);
        }
        // If another thread holds the lock, `restore_due` shows it (until is 0 now).
        if l.any_masked() && l.try_lock(tid) {
            l.apply(fd, false, k);
            l.unlock();
        }
        true
    }

    /// A thread entered epoll_wait, poll or select during an episode.
    pub fn note_wait(&self) {
        THREAD.with(|t| t.waited.set(true));
    }

    /// Shows every hidden listener whose period is over; returns the next end of a period of a
    /// listener still hidden in some epoll set (when the accept guard's thread should look again).
    pub fn restore_due(&self, tid: u32, k: &impl Kernel) -> Option<u64> {
        let now = k.now_ns();
        let mut next: Option<u64> = None;
        for l in self.slots() {
            if !l.any_masked() {
                continue;
            }
            let until = l.until_ns.load(Acquire);
            if until <= now && l.try_lock(tid) {
                l.apply(l.fd.load(Acquire) - 1, false, k);
                l.unlock();
            }
            if l.any_masked() {
                // Not due yet, or busy: look again at the end of the period (or very soon).
                let at = if until > now { until } else { now + 1_000_000 };
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Ends every pause now and shows the hidden listeners again (`fdguard detach`); true once
    /// none is hidden (a listener busy with the program's own `epoll_ctl` may need a retry).
    pub fn end_pauses(&self, tid: u32, k: &impl Kernel) -> bool {
        for l in self.slots() {
            l.until_ns.store(0, Release);
        }
        self.restore_due(tid, k).is_none()
    }

    /// For an epoll wait on `epfd`: shows what is due, and returns when the first listener
    /// still hidden in `epfd` is due (the wait must end then to show it).
    pub fn epoll_due(&self, epfd: i32, tid: u32, k: &impl Kernel) -> Option<u64> {
        self.restore_due(tid, k)?;
        let now = k.now_ns();
        self.slots()
            .iter()
            .filter(|l| l.masked_in(epfd))
            .map(|l| l.until_ns.load(Acquire).max(now + 1_000_000))
            .min()
    }

    /// For poll/select: if `fd` is a listener hidden at `now`, when its period ends. Marks the
    /// listener as watched.
    pub fn hidden_until(&self, fd: i32, now: u64) -> Option<u64> {
        let l = &self.listeners[self.find(fd)?];
        l.watched.store(true, Relaxed);
        let until = l.until_ns.load(Acquire);
        (until > now).then_some(until)
    }

    /// Calls `f` with the fd of every listener below `nfds` (for select, which has no list).
    pub fn each_listener_below(&self, nfds: i32, mut f: impl FnMut(i32)) {
        for l in self.slots() {
            let fd = l.fd.load(Acquire) - 1;
            if fd >= 0 && fd < nfds {
                f(fd);
            }
        }
    }

    /// Process-wide figures for the reports.
    pub fn totals(&self) -> Totals {
        self.totals.get()
    }

    /// In a fork child: threads that held a listener's lock do not exist there.
    pub fn after_fork(&self) {
        for l in &self.listeners {
            l.lock.store(0, Release);
        }
    }

    pub(super) fn snapshot(&self, slot: usize) -> Option<Snapshot> {
        let l = &self.listeners[slot];
        let fd = l.fd.load(Acquire) - 1;
        (fd >= 0).then(|| Snapshot {
            fd,
            in_episode: l.in_episode.load(Acquire),
            episode: l.episode.load(Acquire),
            totals: l.totals.get(),
            base: l.base.get(),
            start_ns: l.start_ns.load(Relaxed),
            end_ns: l.end_ns.load(Relaxed),
            errno: l.errno.load(Relaxed),
            reported: l.reported.load(Relaxed),
        })
    }
}

/// A listener as the accept guard's thread sees it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Snapshot {
    pub(super) fd: i32,
    pub(super) in_episode: bool,
    pub(super) episode: u64,
    pub(super) totals: Totals,
    pub(super) base: Totals,
    pub(super) start_ns: u64,
    pub(super) end_ns: u64,
    pub(super) errno: i32,
    pub(super) reported: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emfile::fixtures::{Fake, MS, failed, guard};
    use crate::emfile::policy::SHORT_SLEEP_NS;

    fn ctl(g: &Guard, k: &Fake, epfd: i32, fd: i32, op: CtlOp) {
        let c = g.ctl_begin(fd, 1, k).expect("a known listener");
        g.ctl_end(c, epfd, fd, op, true, k);
    }

    /// A pause-mode guard at 1 ms with listener `fd` in epoll set `epfd` (events 1, `data`).
    fn registered(epfd: i32, fd: i32, data: u64) -> (Guard, Fake) {
        let g = guard(EmfileMode::Pause);
        let k = Fake::default();
        k.now.set(MS);
        g.listening(fd);
        ctl(&g, &k, epfd, fd, CtlOp::Set { events: 1, data });
        (g, k)
    }

    #[test]
    fn an_event_loop_listener_is_hidden_for_the_period_then_shown() {
        let g = guard(EmfileMode::Pause);
        let k = Fake::default();
        k.now.set(1_000 * MS);
        assert!(!g.active());
        g.listening(7);
        assert!(g.maybe_listener(7) && !g.maybe_listener(8));
        ctl(
            &g,
            &k,
            4,
            7,
            CtlOp::Set {
                events: 1,
                data: 99,
            },
        );
        assert!(k.mods.borrow().is_empty());

        // First failure on a non-blocking, watched listener: error at once, hidden 5 ms.
        let f = g.accept_failed(failed(7, false, true), 1, &k);
        let f = f.unwrap();
        assert_eq!(f.hold, Hold::None);
        assert!(f.started && g.active());
        assert_eq!(k.mods.borrow().as_slice(), [(4, 7, 0, 99)]);
        g.note_wait();
        // The wait is cut at the end of the period, then the listener is shown again.
        assert_eq!(g.epoll_due(4, 1, &k), Some(1_005 * MS));
        assert_eq!(g.epoll_due(5, 1, &k), None);
        k.now.set(1_005 * MS);
        assert_eq!(g.epoll_due(4, 1, &k), None);
        assert_eq!(k.mods.borrow()[1], (4, 7, 1, 99));
        // Second failure after waiting: a 10 ms pause, not a sleep.
        let f = g.accept_failed(failed(7, false, true), 1, &k).unwrap();
        assert!(!f.started && f.hold == Hold::None);
        assert_eq!(g.restore_due(1, &k), Some(1_015 * MS));
        assert_eq!(g.totals().failures, 2);
        assert_eq!(g.totals().paused_ns, 15 * MS);
        // Success: shown at once, episode over, the rest of the pause not counted.
        k.now.set(1_008 * MS);
        assert!(g.accept_succeeded(7, 1, &k));
        assert_eq!(k.mods.borrow().last(), Some(&(4, 7, 1, 99)));
        assert!(!g.active());
        assert_eq!(g.totals().paused_ns, 8 * MS);
        assert!(!g.accept_succeeded(7, 1, &k));
    }

    #[test]
    fn retrying_without_waiting_sleeps() {
        let (g, k) = registered(4, 3, 3);
        let f = |k: &Fake| g.accept_failed(failed(3, false, false), 1, k).unwrap();
        assert_eq!(f(&k).hold, Hold::None);
        // Edge-triggered: accept again at once; the period doubles with each failure.
        assert_eq!(f(&k).hold, Hold::Sleep(10 * MS));
        assert_eq!(f(&k).hold, Hold::Sleep(20 * MS));
        // Another thread's first failure in this episode is not a retry of its own.
        let other = std::thread::scope(|s| s.spawn(|| f(&Fake::default()).hold).join().unwrap());
        assert_eq!(other, Hold::None);
    }

    #[test]
    fn unwatched_non_blocking_listener_gets_short_sleeps() {
        let g = guard(EmfileMode::Pause);
        let k = Fake::default();
        let f = || g.accept_failed(failed(9, false, false), 1, &k).unwrap();
        assert_eq!(f().hold, Hold::None);
        for _ in 0..8 {
            assert_eq!(f().hold, Hold::Sleep(SHORT_SLEEP_NS));
        }
    }

    #[test]
    fn program_epoll_ctl_during_a_pause_is_kept_and_re_hidden() {
        let (g, k) = registered(10, 5, 1);
        g.accept_failed(failed(5, false, false), 1, &k);
        // The program changes the registration while hidden: fdguard hides it again and will
        // restore the *new* events and data.
        ctl(&g, &k, 10, 5, CtlOp::Set { events: 5, data: 2 });
        assert_eq!(k.mods.borrow().last(), Some(&(10, 5, 0, 2)));
        // Added to a second set while paused: hidden there at once.
        ctl(&g, &k, 11, 5, CtlOp::Set { events: 1, data: 3 });
        assert_eq!(k.mods.borrow().last(), Some(&(11, 5, 0, 3)));
        k.now.set(10 * MS);
        g.restore_due(1, &k);
        let mods = k.mods.borrow();
        assert!(
            mods.contains(&(10, 5, 5, 2)) && mods.contains(&(11, 5, 1, 3)),
            "{mods:?}"
        );
        drop(mods);
        // Deleted from a set: never touched there again.
        ctl(&g, &k, 10, 5, CtlOp::Del);
        let before = k.mods.borrow().len();
        g.note_wait();
        g.accept_failed(failed(5, false, false), 1, &k);
        assert_eq!(k.mods.borrow()[before..], [(11, 5, 0, 3)]);
    }

    #[test]
    fn exclusive_registrations_and_vanished_sets_are_left_alone() {
        let g = guard(EmfileMode::Pause);
        let k = Fake::default();
        g.listening(5);
        let exclusive = libc::EPOLLEXCLUSIVE as u32 | 1;
        ctl(
            &g,
            &k,
            10,
            5,
            CtlOp::Set {
                events: exclusive,
                data: 1,
            },
        );
        g.accept_failed(failed(5, false, false), 1, &k);
        assert!(k.mods.borrow().is_empty());
        g.listening(6);
        ctl(&g, &k, 12, 6, CtlOp::Set { events: 1, data: 1 });
        k.fail.set(true);
        g.accept_failed(failed(6, false, false), 1, &k);
        assert!(
            !g.listeners[1].registered(),
            "a set that refuses MOD is forgotten"
        );
    }

    #[test]
    fn a_busy_lock_is_skipped_and_retried() {
        let (g, k) = registered(10, 5, 1);
        g.accept_failed(failed(5, false, false), 1, &k);
        k.now.set(100 * MS);
        g.listeners[0].lock.store(77, Relaxed);
        assert_eq!(g.restore_due(1, &k), Some(101 * MS), "look again soon");
        g.listeners[0].lock.store(0, Relaxed);
        assert_eq!(g.restore_due(1, &k), None);
        assert!(!g.listeners[0].any_masked());
    }

    #[test]
    fn closing_a_listener_ends_its_episode_and_frees_its_slot() {
        let g = guard(EmfileMode::Pause);
        let k = Fake::default();
        g.accept_failed(failed(5, true, false), 1, &k);
        assert!(g.active());
        g.closing(5, 1, &k);
        assert!(!g.active());
        assert_eq!(g.find(5), None);
        g.listening(20);
        g.listening(21);
        g.closing_range(0, 20, 1, &k);
        assert_eq!(g.find(20), None);
        assert!(g.find(21).is_some());
        for fd in 100..100 + LISTENERS as i32 {
            g.listening(fd);
        }
        assert_eq!(g.listening(1000), None, "table full");
        assert_eq!(g.accept_failed(failed(1000, true, false), 1, &k), None);
    }

    #[test]
    fn poll_and_select_see_hidden_listeners_until_the_period_ends() {
        let g = guard(EmfileMode::Pause);
        let k = Fake::default();
        k.now.set(MS);
        g.accept_failed(failed(8, false, false), 1, &k);
        assert_eq!(g.hidden_until(8, 2 * MS), Some(6 * MS));
        assert_eq!(g.hidden_until(8, 6 * MS), None);
        assert_eq!(g.hidden_until(9, 2 * MS), None);
        assert!(g.listeners[0].watched.load(Relaxed));
        let mut seen = vec![];
        g.each_listener_below(9, |fd| seen.push(fd));
        g.each_listener_below(8, |fd| seen.push(fd));
        assert_eq!(seen, [8]);
    }

    #[test]
    fn shed_counts_and_sleep_mode() {
        let g = guard(EmfileMode::Sleep);
        let k = Fake::default();
        let f = g.accept_failed(failed(5, false, false), 1, &k).unwrap();
        assert_eq!(f.hold, Hold::Sleep(5 * MS));
        g.add_shed(f.slot, 3);
        g.add_paused(f.slot, 5 * MS);
        assert_eq!(
            g.totals(),
            Totals {
                failures: 1,
                paused_ns: 5 * MS,
                shed: 3
            }
        );
    }
}
