//! The report pipeline's moving parts: the signal handler, the report thread, fork handling,
//! and where a finished report is written.
//!
//! # Why a thread
//! Building a report reads `/proc`, symbolizes (opens ELF files, allocates) and writes files:
//! none of that is allowed in a signal handler or inside a hook. The handler and the hooks only
//! set a bit and wake a futex (`trigger`); this thread does the work. It starts with every
//! signal blocked, so the program's signals still reach the program's threads.
//!
//! # Why a snapshot child
//! Any fd the report thread opened in the program's process would take the lowest free number:
//! near the limit the program would hit EMFILE one fd early, a daemon's `closefrom` could close
//! it under the report thread's feet, a `close(0); open(...)` idiom could get another number.
//! So the thread gathers, in the program's process, only what needs no fd (the table, `poll`
//! probes, `readlink`, socket queries), and finishes the report (symbolization, which reads ELF
//! files, and writing the report file) in a short-lived copy of the process made with a raw
//! `clone` (`os::snapshot_process`). The copy drops its copies of the program's fds first, so
//! it has every fd number free, even when the program has none (an EMFILE report).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::alloc;
use crate::config::{Config, Format, ReportDest, expand_report_path};
use crate::emfile::{self, GUARD, LineContext, Lines, NoticeKind};
use crate::guard;
use crate::inspect;
use crate::origin::Call;
use crate::os::{self, Snapshot};
use crate::report::{self, BadCloseNotice, EmfileStats, Frame, Header, Report, Row};
use crate::stack;
use crate::symbolize::Symbolizer;
use crate::symcache;
use crate::table::{FdRecord, StackId};
use crate::tracker::{self, BAD_CLOSES, COUNTERS, OWN, TABLE, THRESHOLD};
use crate::trigger::{self, Reason};

static CONFIG: OnceLock<Config> = OnceLock::new();
/// The command line, read at load: at EMFILE time `/proc/self/cmdline` cannot be opened.
static CMDLINE: OnceLock<Vec<String>> = OnceLock::new();
/// When fdguard loaded (wall clock, seconds): the `%t` of `FDGUARD_REPORT`.
static LOADED_AT_S: AtomicU64 = AtomicU64::new(0);

/// How long a snapshot child may take before it is killed (the report is then lost, and said
/// so): symbolizing a huge program takes well under a second.
const CHILD_TIMEOUT_NS: u64 = 30_000_000_000;

/// Serializes report writing (report thread, exit path). A plain futex word rather than a
/// library mutex because a fork child must be able to reset it: the thread holding it in the
/// parent does not exist in the child.
struct ReportLock(AtomicU32);

impl ReportLock {
    /// Takes the lock, waiting at most `timeout_ns`; false if it could not.
    fn lock_within(&self, timeout_ns: u64) -> bool {
        let deadline = os::monotonic_ns().saturating_add(timeout_ns);
        while self
            .0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if os::monotonic_ns() >= deadline {
                return false;
            }
            os::futex_wait(&self.0, 1, 100_000_000);
        }
        true
    }

    fn lock(&self) {
        self.lock_within(u64::MAX);
    }

    fn unlock(&self) {
        self.0.store(0, Ordering::Release);
        os::futex_wake(&self.0);
    }
}

static REPORT_LOCK: ReportLock = ReportLock(AtomicU32::new(0));
/// Set in a fork child whose parent was in the middle of a report: see `Symbolizer`.
static NO_DEBUG_INFO: AtomicBool = AtomicBool::new(false);
/// "cannot write the report file" is said once.
static DEST_WARNED: AtomicBool = AtomicBool::new(false);
/// "cannot make a report process" is said once.
static SNAPSHOT_WARNED: AtomicBool = AtomicBool::new(false);

/// Exit status bits of a snapshot child.
const CHILD_DEST_FAILED: u8 = 1;
const CHILD_LISTED_FDS: u8 = 2;
const CHILD_FAILED: u8 = 64;

/// Installs the signal handler, starts the report thread and the fork handler.
pub fn start(config: Config) {
    let config = CONFIG.get_or_init(|| config);
    CMDLINE.get_or_init(inspect::cmdline);
    LOADED_AT_S.store(os::realtime_ns() / 1_000_000_000, Ordering::Relaxed);
    if let ReportDest::Path(t) = &config.report {
        // Said at once if the file cannot be written (before `main`, so the fd this takes for
        // a moment is nobody's), rather than at the first report.
        let path = report_path(t);
        match open_report_file(&path) {
            // SAFETY: closing the fd just opened.
            Ok(fd) => unsafe {
                libc::close(fd);
            },
            Err(e) => warn_dest(&path, e),
        }
    }
    if let Some(sig) = config.signal {
        install_handler(sig);
    }
    // The symbolizer's library list, built here once: in a snapshot child, the loader lock it
    // needs might be held by a thread that does not exist there.
    backtrace::resolve(std::ptr::null_mut(), |_| {});
    symcache::init();
    spawn_report_thread();
    // SAFETY: registering a plain extern "C" function with no preconditions.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
}

extern "C" fn on_signal(_sig: libc::c_int) {
    let _errno = guard::ErrnoGuard::save();
    trigger::request(Reason::Signal);
}

fn install_handler(sig: i32) {
    // SAFETY: sigaction with a zeroed struct, an empty mask and a handler that only does
    // async-signal-safe work (an atomic OR and a futex wake).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            guard::internal_failure("cannot install the report signal handler");
        }
    }
}

fn spawn_report_thread() {
    // SAFETY: sigfillset/pthread_sigmask on locally owned sets; the old mask is restored below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    let spawned = std::thread::Builder::new()
        .name("fdguard".into())
        .spawn(report_thread);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if spawned.is_err() {
        let _ = os::write_all(
            2,
            b"fdguard: cannot start the report thread; signal and threshold reports are off\n",
        );
    }
}

extern "C" fn after_fork_child() {
    tracker::after_fork_in_child();
    guard::after_fork_in_child();
    symcache::unshare_after_fork();
    if REPORT_LOCK.0.swap(0, Ordering::AcqRel) != 0 {
        NO_DEBUG_INFO.store(true, Ordering::Relaxed);
    }
    spawn_report_thread();
}

/// The report thread: every fd call it makes runs inside `guard::internal` (reports, notices),
/// so nothing it does is tracked.
fn report_thread() {
    let mut lines = Lines::default();
    let mut next_look: Option<u64> = None;
    loop {
        // Every second, or sooner when a paused listener must be shown again (the backstop for
        // a wait fdguard could not cut short).
        let timeout = next_look.map_or(1_000_000_000, |at| {
            at.saturating_sub(os::precise_ns())
                .clamp(1_000_000, 1_000_000_000)
        });
        let work = trigger::wait(timeout);
        THRESHOLD.set_limit(os::nofile_limit().0);
        // One unit of work under the lock, from taking the requests to writing them out: the
        // exit path waits for it instead of exiting under a half-printed notice. The accept
        // guard's lines come first: before the report that the same failure asked for.
        REPORT_LOCK.lock();
        next_look =
            guard::internal(|| guard::contained(|| accept_guard_tick(&mut lines))).flatten();
        for reason in Reason::QUEUED {
            if !work.wants(reason) {
                continue;
            }
            if reason == Reason::BadClose {
                print_bad_closes(BAD_CLOSES.drain());
            } else {
                write_report(reason);
            }
        }
        REPORT_LOCK.unlock();
    }
}

/// What a report knows before symbolization: gathered in the program's process, no fd needed.
struct Gathered {
    reason: Reason,
    header: Header,
    rows: Vec<Row>,
}

/// Builds and writes one report; returns whether it listed any fd. The caller holds the lock.
fn write_report(reason: Reason) -> bool {
    let Some(config) = CONFIG.get() else {
        return false;
    };
    guard::internal(|| {
        // Here, only what needs no memory worth keeping: which fds are open, to forget table
        // entries closed behind fdguard's back. The report itself is gathered in the snapshot
        // child, from its copy of the table and of the fd table, taken at one instant.
        let listed_at = os::monotonic_ns();
        let (upto, batch) = probe_bounds();
        forget_stale(&inspect::probe_fds(upto, batch), listed_at);
        publish(
            config,
            |pid| gather(reason, pid),
            |g, cache| {
                let report = complete(g, config, cache);
                let bytes = match config.format {
                    Format::Text => report::render_text(&report),
                    Format::Json => report::render_json(&report),
                };
                let wanted = reason != Reason::Exit || report.open() > 0 || config.at_exit;
                (wanted.then_some(bytes), report.open() > 0)
            },
        )
    })
}

/// Makes a report in a snapshot child when possible: `prepare` runs while the child still has
/// its copies of the program's fds (to describe them), then the child drops them, and `finish`
/// symbolizes (any fd free) and renders. `prepare` gets the program's pid (in the child,
/// `getpid` is the child's). Without a child, both run here, symbolizing without
/// opening anything (module + offset and exported names), and the output goes to stderr.
/// `finish` returns the bytes to write (if any) and a flag passed back to the caller.
fn publish<T>(
    config: &Config,
    prepare: impl FnOnce(u32) -> T,
    finish: impl FnOnce(T, &mut FrameCache) -> (Option<String>, bool),
) -> bool {
    let symbolizer = Symbolizer::new(!NO_DEBUG_INFO.load(Ordering::Relaxed));
    let pid = os::getpid();
    match os::snapshot_process() {
        Snapshot::Child => {
            // First of all, before anything allocates: malloc's locks may be held by threads
            // that were not copied.
            if !alloc::enter_child_arena() {
                os::exit_now(CHILD_FAILED);
            }
            let code = guard::contained(|| {
                let facts = prepare(pid);
                // The program's fds are copies here; dropping them as soon as they are
                // described keeps this process from delaying anything the program closes (a
                // socket's FIN, a pipe's EOF), and frees every number. Only stderr stays.
                let (upto, batch) = probe_bounds();
                for fd in inspect::probe_fds(upto, batch) {
                    if fd != 2 {
                        os::raw_close(fd);
                    }
                }
                let mut cache = FrameCache::new(symbolizer);
                let (bytes, flag) = finish(facts, &mut cache);
                symcache::append(&cache.fresh);
                let mut code = if flag { CHILD_LISTED_FDS } else { 0 };
                if let Some(b) = bytes
                    && !deliver(config, pid, b.as_bytes())
                {
                    code |= CHILD_DEST_FAILED;
                }
                code
            });
            os::exit_now(code.unwrap_or(CHILD_FAILED));
        }
        Snapshot::Parent(child) => match os::wait_snapshot(child, CHILD_TIMEOUT_NS) {
            Some(code) if code & CHILD_FAILED == 0 => {
                if code & CHILD_DEST_FAILED != 0 {
                    DEST_WARNED.store(true, Ordering::Relaxed);
                }
                code & CHILD_LISTED_FDS != 0
            }
            _ => {
                let _ = os::write_all(2, b"fdguard: the report process failed; report lost\n");
                false
            }
        },
        Snapshot::Failed(e) => {
            if !SNAPSHOT_WARNED.swap(true, Ordering::Relaxed) {
                let msg = format!(
                    "fdguard: cannot make a report process ({}); reports go to stderr without \
                     debug info\n",
                    std::io::Error::from_raw_os_error(e)
                );
                let _ = os::write_all(2, msg.as_bytes());
            }
            let mut cache = FrameCache::new(Symbolizer::new(false));
            let (bytes, flag) = finish(prepare(pid), &mut cache);
            if let Some(b) = bytes {
                let _ = os::write_all(2, b.as_bytes());
            }
            flag
        }
    }
}

/// Writes a finished report where the user asked (in a snapshot child: any fd is free);
/// falls back to stderr, saying why once. Returns false if the file could not be written.
fn deliver(config: &Config, pid: u32, bytes: &[u8]) -> bool {
    let ReportDest::Path(template) = &config.report else {
        let _ = os::write_all(2, bytes);
        return true;
    };
    let path = expand_report_path(
        template,
        pid,
        &report::compact_utc(LOADED_AT_S.load(Ordering::Relaxed)),
    );
    let written = open_report_file(&path).and_then(|fd| {
        let r = os::write_all(fd, bytes);
        // SAFETY: closing the fd opened just above.
        unsafe { libc::close(fd) };
        r
    });
    match written {
        Ok(()) => true,
        Err(e) => {
            warn_dest(&path, e);
            let _ = os::write_all(2, bytes);
            false
        }
    }
}

fn report_path(template: &[u8]) -> Vec<u8> {
    expand_report_path(
        template,
        os::getpid(),
        &report::compact_utc(LOADED_AT_S.load(Ordering::Relaxed)),
    )
}

/// Resolves each distinct stack once: starting from what earlier reports resolved (the shared
/// `symcache`), and remembering what this one adds.
struct FrameCache {
    symbolizer: Symbolizer,
    frames: HashMap<StackId, Vec<Frame>>,
    fresh: Vec<(StackId, Vec<Frame>)>,
}

impl FrameCache {
    fn new(symbolizer: Symbolizer) -> Self {
        Self {
            symbolizer,
            frames: symcache::load(),
            fresh: Vec::new(),
        }
    }

    fn get(&mut self, s: StackId) -> &[Frame] {
        let sym = &self.symbolizer;
        let fresh = &mut self.fresh;
        self.frames.entry(s).or_insert_with(|| {
            let frames = sym.frames(&stack::frames(s));
            fresh.push((s, frames.clone()));
            frames
        })
    }

    fn of(&mut self, s: Option<StackId>) -> Vec<Frame> {
        s.map(|s| self.get(s).to_vec()).unwrap_or_default()
    }
}

/// The accept guard's part of the report thread: its upkeep, then the operator's lines that are
/// due (before any report the same wake-up writes). Returns when to look again.
fn accept_guard_tick(lines: &mut Lines) -> Option<u64> {
    let next = tracker::accept_guard_upkeep();
    let mut due = Vec::new();
    lines.tick(&GUARD, os::precise_ns(), &mut due);
    let Some(config) = CONFIG.get() else {
        return next;
    };
    for n in due {
        let addr = inspect::local_addr(n.fd);
        // The numbers below the soft limit in use (fds above it, from before a lowered limit,
        // do not count against it).
        let open = (n.kind == NoticeKind::First).then(|| {
            let soft = os::nofile_limit().0;
            let (upto, batch) = probe_bounds();
            let below = upto.min(soft.min(i32::MAX as u64) as i32);
            let open = inspect::probe_fds(below, batch).into_iter();
            (open.filter(|fd| !OWN.contains(*fd)).count(), soft)
        });
        let line = emfile::render(
            &n,
            &LineContext {
                addr: addr.as_deref(),
                open,
                reserve: tracker::reserve_fd().is_some(),
                mode: config.emfile,
                backoff_max_ms: config.backoff_max_ms,
            },
        );
        let _ = os::write_all(2, format!("{line}\n").as_bytes());
    }
    next
}

/// Which fd numbers to probe, and in batches of how many: up to the soft limit (fds the program
/// can have) and the highest number fdguard ever saw (fds from before a lowered limit), in
/// batches no larger than `poll` accepts under that limit.
fn probe_bounds() -> (i32, usize) {
    let soft = os::nofile_limit().0;
    let upto = (soft.min(1 << 24) as i64)
        .max(TABLE.highest_fd() as i64 + 1)
        .max(3);
    (upto as i32, soft.clamp(1, 4096) as usize)
}

/// Gathers the report's facts from the kernel and the table, without creating any fd.
fn gather(reason: Reason, pid: u32) -> Gathered {
    let (soft, hard) = os::nofile_limit();
    let (upto, batch) = probe_bounds();
    let kernel: Vec<_> = inspect::probe_fds(upto, batch)
        .into_iter()
        .filter(|fd| !OWN.contains(*fd))
        .map(inspect::describe)
        .filter(|k| k.link.is_some())
        .collect();
    let mut rows = report::rows(&kernel, |fd| TABLE.get(fd), os::monotonic_ns());
    if reason == Reason::Exit {
        // Leaks at exit: what the program opened itself and did not close.
        rows.retain(|r| r.call != Call::Inherited && r.fd > 2);
    }
    let (trigger_call, trigger_errno) = if reason == Reason::Emfile {
        let (call, errno) = tracker::emfile_trigger();
        let errno = if errno == libc::ENFILE {
            "ENFILE"
        } else {
            "EMFILE"
        };
        (Some(call.name()), Some(errno))
    } else {
        (None, None)
    };
    Gathered {
        reason,
        header: Header {
            pid,
            cmdline: CMDLINE.get().cloned().unwrap_or_default(),
            reason: reason.name(),
            trigger_call,
            trigger_errno,
            unix_ms: os::realtime_ns() / 1_000_000,
            soft,
            hard,
            missed_closes: COUNTERS.missed_closes.load(Ordering::Relaxed),
            skipped: COUNTERS.skipped.load(Ordering::Relaxed),
            emfile: {
                let t = GUARD.totals();
                EmfileStats {
                    accept_failures: t.failures,
                    paused_ms: t.paused_ns / 1_000_000,
                    shed: t.shed,
                }
            },
            suppressed: 0,
            bad_closes: BAD_CLOSES.total(),
        },
        rows,
    }
}

/// Symbolizes, applies suppressions (exit reports) and groups by stack.
fn complete(g: Gathered, config: &Config, cache: &mut FrameCache) -> Report {
    let Gathered {
        reason,
        mut header,
        mut rows,
    } = g;
    if reason == Reason::Exit {
        let before = rows.len();
        rows.retain(|r: &Row| {
            let frames = cache.of(r.stack);
            !report::is_suppressed(r, &frames, &config.ignore)
        });
        header.suppressed = before - rows.len();
    }
    let stacks = report::group(&rows, |s| cache.get(s).to_vec());
    Report {
        header,
        rows,
        stacks,
    }
}

/// Table entries for fds the kernel no longer has (`open`, sorted) were closed behind fdguard's
/// back (a raw syscall, a libc-internal close): count and forget them, unless they changed
/// meanwhile.
fn forget_stale(open: &[i32], listed_at: u64) {
    let mut stale: Vec<(i32, FdRecord)> = Vec::new();
    let mut k = open.iter().copied().peekable();
    TABLE.for_each_open(0, i32::MAX, |fd, rec| {
        while k.next_if(|kfd| *kfd < fd).is_some() {}
        if k.peek() != Some(&fd) && rec.born_ns < listed_at && !OWN.contains(fd) {
            stale.push((fd, rec));
        }
    });
    for (fd, rec) in stale {
        if !os::fd_is_open(fd) && TABLE.remove_if_same(fd, tracker::fork_generation(), &rec) {
            COUNTERS.missed_closes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Prints bad closes, at most one per second; the others are counted in the next one.
/// Atomics, not a struct owned by the report thread: the exit path prints the last ones too.
static NOTICE_LAST_NS: AtomicU64 = AtomicU64::new(0);
static NOTICE_NOT_SHOWN: AtomicU64 = AtomicU64::new(0);

/// The caller holds the lock.
fn print_bad_closes(events: Vec<crate::badclose::BadClose>) {
    let Some(config) = CONFIG.get() else { return };
    for e in events {
        let now = os::monotonic_ns();
        let last = NOTICE_LAST_NS.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1_000_000_000 {
            NOTICE_NOT_SHOWN.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        NOTICE_LAST_NS.store(now, Ordering::Relaxed);
        let not_shown = NOTICE_NOT_SHOWN.swap(0, Ordering::Relaxed);
        guard::internal(|| {
            publish(
                config,
                |pid| pid,
                |pid, cache| {
                    let notice = BadCloseNotice {
                        pid,
                        unix_ms: os::realtime_ns() / 1_000_000,
                        fd: e.fd,
                        call: e.call.name(),
                        tid: e.tid,
                        frames: cache.of(e.stack),
                        released_by: config.close_stacks.then(|| cache.of(e.released_by)),
                        not_shown,
                    };
                    let bytes = match config.format {
                        Format::Text => report::render_bad_close_text(&notice),
                        Format::Json => report::render_bad_close_json(&notice),
                    };
                    (Some(bytes), false)
                },
            )
        });
    }
}

/// At normal exit (from the library destructor): the leak report of `FDGUARD_AT_EXIT`, and
/// the exit status of `FDGUARD_LEAK_EXITCODE` when something leaked.
pub fn at_exit() {
    let Some(config) = CONFIG.get() else { return };
    // Let the report thread finish what it is writing (bounded: exit must not hang on a
    // stuck stderr), then print the bad closes it had no time to take.
    let locked = REPORT_LOCK.lock_within(2_000_000_000);
    print_bad_closes(BAD_CLOSES.drain());
    let leaks = (config.at_exit || config.leak_exitcode.is_some()) && write_report(Reason::Exit);
    if locked {
        REPORT_LOCK.unlock();
    }
    if let (Some(code), true) = (config.leak_exitcode, leaks) {
        // SAFETY: flushing stdio as exit() would after this destructor, then ending the process
        // with the requested status.
        unsafe {
            libc::fflush(std::ptr::null_mut());
            libc::_exit(code as i32);
        }
    }
}

fn warn_dest(path: &[u8], errno: i32) {
    if DEST_WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    let msg = format!(
        "fdguard: FDGUARD_REPORT: cannot write {}: {}; writing reports to stderr\n",
        String::from_utf8_lossy(path),
        std::io::Error::from_raw_os_error(errno)
    );
    let _ = os::write_all(2, msg.as_bytes());
}

/// Opens (creating with mode 0600) a report file for appending: never through a symlink, never
/// truncating, and never into a file that is not a regular file owned by this user.
fn open_report_file(path: &[u8]) -> Result<i32, i32> {
    let mut c = path.to_vec();
    c.push(0);
    // SAFETY: `c` is NUL-terminated; the mode argument is passed as the variadic int.
    let fd = unsafe {
        libc::open(
            c.as_ptr().cast(),
            libc::O_WRONLY
                | libc::O_CREAT
                | libc::O_APPEND
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC
                | libc::O_NOCTTY
                | libc::O_NONBLOCK,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(os::errno());
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; it is read only after fstat succeeded.
    let ok = unsafe {
        libc::fstat(fd, st.as_mut_ptr()) == 0 && {
            let st = st.assume_init();
            st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == libc::geteuid()
        }
    };
    if !ok {
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        return Err(libc::EPERM);
    }
    Ok(fd)
}
