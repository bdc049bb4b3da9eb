//! The report pipeline's moving parts: the signal handler, the report thread, fork handling,
//! and where a finished report is written.
//!
//! # Why a thread
//! Building a report reads `/proc`, symbolizes (opens ELF files, allocates) and writes files:
//! none of that is allowed in a signal handler or inside a hook. The handler and the hooks only
//! set a bit and wake a futex (`trigger`); this thread does the work. It starts with every
//! signal blocked, so the program's signals still reach the program's threads.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use crate::config::{Config, Format, ReportDest, expand_report_path};
use crate::guard;
use crate::inspect;
use crate::origin::Call;
use crate::os;
use crate::report::{self, BadCloseNotice, Frame, Header, Report, Row};
use crate::stack;
use crate::symbolize::Symbolizer;
use crate::table::{FdRecord, StackId};
use crate::tracker::{self, BAD_CLOSES, COUNTERS, OWN, TABLE, THRESHOLD};
use crate::trigger::{self, Reason};

static CONFIG: OnceLock<Config> = OnceLock::new();
/// The command line, read at load: at EMFILE time `/proc/self/cmdline` cannot be opened.
static CMDLINE: OnceLock<Vec<String>> = OnceLock::new();
/// When fdguard loaded (wall clock, seconds): the `%t` of `FDGUARD_REPORT`.
static LOADED_AT_S: AtomicU64 = AtomicU64::new(0);

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
/// "could not write to the report file" is said once.
static DEST_WARNED: AtomicBool = AtomicBool::new(false);

/// The report file. When the hard `RLIMIT_NOFILE` leaves room above the soft one, it is opened
/// when fdguard loads and held *above the soft limit*, where the program can never be handed
/// that number, so a report can be written at the moment no fd is free (EMFILE); it is
/// close-on-exec, never reported, and opened again if the program closes it. Otherwise
/// (soft = hard) holding it would take one of the program's fds, so it is opened per report.
struct Destination {
    fd: AtomicI32,
    /// Device and inode of what `fd` was when fdguard opened it: a program that `dup2`s over
    /// the number must not get reports written into its file. (Atomics, not a mutex: a fork
    /// child reopens the file and must never find a lock held by a thread it does not have.)
    dev: AtomicU64,
    ino: AtomicU64,
}

static DEST: Destination = Destination {
    fd: AtomicI32::new(-1),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
};

impl Destination {
    fn path(template: &[u8]) -> Vec<u8> {
        let t = LOADED_AT_S.load(Ordering::Relaxed);
        expand_report_path(template, os::getpid(), &report::compact_utc(t))
    }

    /// (Re)opens and holds the file for this process if it can sit above the soft limit.
    fn hold(&self, template: &[u8]) {
        guard::internal(|| {
            let old = self.fd.swap(-1, Ordering::AcqRel);
            if old >= 0 && OWN.contains(old) {
                // SAFETY: `old` is fdguard's own fd (registered as such), not the program's.
                unsafe { libc::close(old) };
            }
            let path = Self::path(template);
            match open_report_file(&path) {
                Ok(fd) => match os::move_above_limit(fd) {
                    Some(fd) => {
                        let (dev, ino) = os::fd_identity(fd).unwrap_or((0, 0));
                        self.dev.store(dev, Ordering::Relaxed);
                        self.ino.store(ino, Ordering::Relaxed);
                        self.fd.store(fd, Ordering::Release);
                    }
                    // SAFETY: closing the fd fdguard opened just above.
                    None => unsafe {
                        libc::close(fd);
                    },
                },
                Err(e) => warn_dest(&path, e),
            }
        });
    }

    /// The held fd if it is still the file fdguard opened.
    fn valid_fd(&self) -> Option<i32> {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 || !OWN.contains(fd) {
            return None;
        }
        let expected = (
            self.dev.load(Ordering::Relaxed),
            self.ino.load(Ordering::Relaxed),
        );
        (os::fd_identity(fd) == Some(expected)).then_some(fd)
    }

    /// Writes a finished report; reopens the file if needed; falls back to stderr.
    fn write(&self, dest: &ReportDest, bytes: &[u8]) {
        let ReportDest::Path(template) = dest else {
            let _ = os::write_all(2, bytes);
            return;
        };
        if self.valid_fd().is_none() {
            self.hold(template);
        }
        let path = Self::path(template);
        let written = match self.valid_fd() {
            Some(fd) => os::write_all(fd, bytes),
            None => open_report_file(&path).and_then(|fd| {
                let r = os::write_all(fd, bytes);
                // SAFETY: closing the fd opened just above.
                unsafe { libc::close(fd) };
                r
            }),
        };
        if let Err(e) = written {
            warn_dest(&path, e);
            let _ = os::write_all(2, bytes);
        }
    }
}

/// Installs the signal handler, opens the report file, starts the report thread and the fork
/// handler.
pub fn start(config: Config) {
    let config = CONFIG.get_or_init(|| config);
    CMDLINE.get_or_init(inspect::cmdline);
    LOADED_AT_S.store(os::realtime_ns() / 1_000_000_000, Ordering::Relaxed);
    if let ReportDest::Path(t) = &config.report {
        DEST.hold(t);
    }
    if let Some(sig) = config.signal {
        install_handler(sig);
    }
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
    if REPORT_LOCK.0.swap(0, Ordering::AcqRel) != 0 {
        NO_DEBUG_INFO.store(true, Ordering::Relaxed);
    }
    if let Some(ReportDest::Path(t)) = CONFIG.get().map(|c| &c.report) {
        DEST.hold(t);
    }
    spawn_report_thread();
}

/// The report thread: every fd call it makes runs inside `guard::internal` (reports, notices),
/// so what it opens is fdguard's own and never tracked.
fn report_thread() {
    loop {
        let work = trigger::wait(1_000_000_000);
        THRESHOLD.set_limit(os::nofile_limit().0);
        // One unit of work under the lock, from taking the requests to writing them out: the
        // exit path waits for it instead of exiting under a half-printed notice.
        REPORT_LOCK.lock();
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

/// Builds and writes one report; returns how many fds it lists. The caller holds the lock.
fn write_report(reason: Reason) -> usize {
    let Some(config) = CONFIG.get() else { return 0 };
    guard::internal(|| {
        let listed = guard::contained(|| {
            let report = collect(reason, config);
            if reason == Reason::Exit && report.open() == 0 && !config.at_exit {
                return 0;
            }
            let bytes = match config.format {
                Format::Text => report::render_text(&report),
                Format::Json => report::render_json(&report),
            };
            DEST.write(&config.report, bytes.as_bytes());
            report.open()
        });
        listed.unwrap_or_else(|| {
            let _ = os::write_all(2, b"fdguard: could not build a report\n");
            0
        })
    })
}

/// Resolves each distinct stack once per report.
struct FrameCache {
    symbolizer: Symbolizer,
    frames: HashMap<StackId, Vec<Frame>>,
}

impl FrameCache {
    fn new() -> Self {
        Self {
            symbolizer: Symbolizer::new(!NO_DEBUG_INFO.load(Ordering::Relaxed)),
            frames: HashMap::new(),
        }
    }

    fn get(&mut self, s: StackId) -> &[Frame] {
        let sym = &self.symbolizer;
        self.frames
            .entry(s)
            .or_insert_with(|| sym.frames(&stack::frames(s)))
    }

    fn of(&mut self, s: Option<StackId>) -> Vec<Frame> {
        s.map(|s| self.get(s).to_vec()).unwrap_or_default()
    }
}

/// Gathers the report's facts from the kernel and the table.
fn collect(reason: Reason, config: &Config) -> Report {
    let (soft, hard) = os::nofile_limit();
    let listed_at = os::monotonic_ns();
    let listed = inspect::list_fds();
    let listed_ok = listed.is_some();
    let fds = listed.unwrap_or_else(|| {
        let upto = (soft.min(1 << 20) as i64).max(TABLE.highest_fd() as i64 + 1);
        inspect::probe_fds(upto as i32)
    });
    let kernel: Vec<_> = fds
        .into_iter()
        .filter(|fd| !OWN.contains(*fd))
        .map(inspect::describe)
        .filter(|k| k.link.is_some())
        .collect();
    forget_stale(&kernel, listed_at);
    let mut rows = report::rows(&kernel, |fd| TABLE.get(fd), os::monotonic_ns());
    let mut cache = FrameCache::new();
    let mut suppressed = 0;
    if reason == Reason::Exit {
        // Leaks at exit: what the program opened itself and did not close.
        rows.retain(|r| r.call != Call::Inherited && r.fd > 2);
        let before = rows.len();
        rows.retain(|r: &Row| {
            let frames = cache.of(r.stack);
            !report::is_suppressed(r, &frames, &config.ignore)
        });
        suppressed = before - rows.len();
    }
    let stacks = report::group(&rows, |s| cache.get(s).to_vec());
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
    Report {
        header: Header {
            pid: os::getpid(),
            cmdline: CMDLINE.get().cloned().unwrap_or_default(),
            reason: reason.name(),
            trigger_call,
            trigger_errno,
            unix_ms: os::realtime_ns() / 1_000_000,
            soft,
            hard,
            missed_closes: COUNTERS.missed_closes.load(Ordering::Relaxed),
            skipped: COUNTERS.skipped.load(Ordering::Relaxed),
            listed: listed_ok,
            emfile: Default::default(),
            suppressed,
            bad_closes: BAD_CLOSES.total(),
        },
        rows,
        stacks,
    }
}

/// Table entries for fds the kernel no longer has were closed behind fdguard's back (a raw
/// syscall, a libc-internal close): count and forget them, unless they changed meanwhile.
fn forget_stale(kernel: &[inspect::KernelFd], listed_at: u64) {
    let mut stale: Vec<(i32, FdRecord)> = Vec::new();
    let mut k = kernel.iter().map(|k| k.fd).peekable();
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
        guard::internal(|| {
            let mut cache = FrameCache::new();
            let notice = BadCloseNotice {
                pid: os::getpid(),
                unix_ms: os::realtime_ns() / 1_000_000,
                fd: e.fd,
                call: e.call.name(),
                tid: e.tid,
                frames: cache.of(e.stack),
                released_by: config.close_stacks.then(|| cache.of(e.released_by)),
                not_shown: NOTICE_NOT_SHOWN.swap(0, Ordering::Relaxed),
            };
            let bytes = match config.format {
                Format::Text => report::render_bad_close_text(&notice),
                Format::Json => report::render_bad_close_json(&notice),
            };
            DEST.write(&config.report, bytes.as_bytes());
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
    let leaks = if config.at_exit || config.leak_exitcode.is_some() {
        write_report(Reason::Exit)
    } else {
        0
    };
    if locked {
        REPORT_LOCK.unlock();
    }
    if let (Some(code), true) = (config.leak_exitcode, leaks > 0) {
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
