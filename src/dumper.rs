//! The report pipeline: the signal handler, serving report requests, fork handling, and where
//! a finished report is written.
//!
//! # Where a report is made
//! Building a report reads `/proc`, symbolizes (opens ELF files, allocates) and writes files:
//! none of that is allowed in a signal handler or inside a hook, and any fd opened in the
//! program's process would take the lowest free number (near the limit the program would hit
//! EMFILE one fd early; a daemon's `closefrom` could close it; a `close(0); open(...)` idiom
//! could get another number). So a request only copies the process (`child`), from wherever it
//! was made, and the copy does everything: it describes its copies of the program's fds, drops
//! them (every number is then free, even at EMFILE, and the program's closes are not delayed),
//! symbolizes, renders and writes.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::alloc;
use crate::badclose::BadClose;
use crate::child::{self, Once, Waited};
use crate::config::{Config, Format, ReportDest, expand_report_path};
use crate::emfile::GUARD;
use crate::guard::{self, ErrnoGuard};
use crate::inspect;
use crate::os;
use crate::own::OWN;
use crate::report::{self, BadCloseNotice, EmfileStats, Frame, Header, Report, Row};
use crate::stack;
use crate::symbolize::Symbolizer;
use crate::symcache;
use crate::table::StackId;
use crate::tracker::{self, BAD_CLOSES, COUNTERS, TABLE};
use crate::trigger::{self, Handlers, Reason};
use crate::upkeep;

static CONFIG: OnceLock<Config> = OnceLock::new();
/// The command line, read at load: at EMFILE time `/proc/self/cmdline` cannot be opened.
static CMDLINE: OnceLock<Vec<String>> = OnceLock::new();
/// When fdguard loaded (wall clock, seconds): the `%t` of `FDGUARD_REPORT`.
static LOADED_AT_S: AtomicU64 = AtomicU64::new(0);

/// Held by the thread serving requests (see `serve`).
static SERVING: AtomicBool = AtomicBool::new(false);

/// Exit status bit of the exit report's child: it listed at least one fd.
const CHILD_LISTED_FDS: u8 = 2;

/// What a report child is made for.
#[derive(Clone, Copy)]
enum Task {
    Report(Reason),
    Notice { event: BadClose, not_shown: u64 },
}

/// Installs the signal handler, the request handlers and the fork handler.
pub fn start(config: Config) {
    let config = CONFIG.get_or_init(|| config);
    CMDLINE.get_or_init(inspect::cmdline);
    LOADED_AT_S.store(os::clock::realtime_ns() / 1_000_000_000, Ordering::Relaxed);
    child::init();
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
    // The symbolizer's library list, built here once: in a report child, the loader lock it
    // needs might be held by a thread that does not exist there.
    backtrace::resolve(std::ptr::null_mut(), |_| {});
    symcache::init();
    upkeep::configure(config.emfile, config.backoff_max_ms);
    trigger::install(Handlers {
        serve,
        wake: upkeep::wake,
    });
    if let Some(sig) = config.signal {
        install_handler(sig);
    }
    // SAFETY: registering a plain extern "C" function with no preconditions.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
}

extern "C" fn on_signal(_sig: libc::c_int) {
    trigger::request(Reason::Signal);
}

/// What the report signal did before fdguard's handler (`fdguard detach` puts it back).
static PREVIOUS: std::sync::Mutex<Option<(i32, libc::sigaction)>> = std::sync::Mutex::new(None);

fn install_handler(sig: i32) {
    // SAFETY: sigaction with a zeroed struct, an empty mask and a handler that only does
    // async-signal-safe work (atomics and the raw system calls that copy the process).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, &mut old) != 0 {
            guard::internal_failure("cannot install the report signal handler");
            return;
        }
        *PREVIOUS.lock().unwrap_or_else(|e| e.into_inner()) = Some((sig, old));
    }
}

/// True if the program has its own handler for `sig` (attaching must not replace it).
pub fn program_handles(sig: i32) -> bool {
    // SAFETY: querying a disposition into a zeroed, locally owned struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction != libc::SIG_DFL
            && old.sa_sigaction != libc::SIG_IGN
            && old.sa_sigaction != on_signal as *const () as usize
    }
}

/// `fdguard detach`: the report signal does what it did before fdguard.
pub fn remove_handler() {
    if let Some((sig, old)) = PREVIOUS.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: restoring a disposition sigaction itself returned.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
}

/// Attaching again after a detach: the handler back, with the first attach's configuration.
pub fn restart() {
    if let Some(sig) = CONFIG.get().and_then(|c| c.signal) {
        install_handler(sig);
    }
}

extern "C" fn after_fork_child() {
    tracker::after_fork_in_child();
    guard::after_fork_in_child();
    symcache::unshare_after_fork();
    child::after_fork();
    upkeep::after_fork();
    // The thread that was serving requests, if any, does not exist here.
    SERVING.store(false, Ordering::Relaxed);
}

/// Serves pending requests: each one becomes a report child. Called right where a request is
/// made (a hook, a signal handler), so it only uses atomics and async-signal-safe system calls,
/// and never waits: a request made while another context serves is left to that server, which
/// looks again before it returns (a signal handler interrupting the server on its own thread
/// included).
fn serve() {
    let _errno = ErrnoGuard::save();
    while trigger::pending() {
        if SERVING.swap(true, Ordering::Acquire) {
            return;
        }
        let work = trigger::take();
        if !work.is_empty() {
            guard::internal(|| {
                for reason in Reason::QUEUED {
                    if !work.wants(reason) {
                        continue;
                    }
                    if reason == Reason::BadClose {
                        serve_bad_closes();
                    } else {
                        launch(Task::Report(reason));
                    }
                }
            });
        }
        SERVING.store(false, Ordering::Release);
    }
}

/// Makes a detached report child for `task`; says once if none can be made.
fn launch(task: Task) {
    let Some(config) = CONFIG.get() else { return };
    let pid = os::process::getpid();
    let made = child::spawn_detached(&|| {
        let code = work_in_child(config, pid, task);
        child::leave(code)
    });
    if let Err(e) = made
        && child::say_once(Once::Spawn)
    {
        let _ = os::fd::write_all(2, b"fdguard: cannot make a report process (");
        let _ = os::fd::write_all(2, os::errno::errno_name(e).as_bytes());
        let _ = os::fd::write_all(2, b"); reports are lost until one can be made\n");
    }
}

/// A task, with what had to be gathered while the program's fds were still there.
enum Prepared {
    Report(Gathered),
    Notice(BadClose, u64),
}

/// A report child's whole work; returns its exit status.
fn work_in_child(config: &Config, pid: u32, task: Task) -> u8 {
    // First of all, before anything allocates: malloc's locks may be held by threads that
    // were not copied.
    if !alloc::enter_child_arena() {
        return child::FAILED;
    }
    let code = guard::contained(|| {
        // What needs the copies of the program's fds is done before they are dropped, and they
        // are dropped before waiting for this child's turn to write (see `drop_program_fds`).
        let prepared = match task {
            Task::Report(reason) => Prepared::Report(gather(reason, pid)),
            Task::Notice { event, not_shown } => Prepared::Notice(event, not_shown),
        };
        drop_program_fds();
        child::take_turn();
        match prepared {
            Prepared::Report(facts) => report_in_child(config, pid, facts),
            Prepared::Notice(event, not_shown) => {
                notice_in_child(config, pid, event, not_shown);
                0
            }
        }
    });
    code.unwrap_or(child::FAILED)
}

/// Symbolizes, writes and (for the exit path) grades one report, in a report child.
fn report_in_child(config: &Config, pid: u32, facts: Gathered) -> u8 {
    let reason = facts.reason;
    let mut cache = FrameCache::new(Symbolizer::new(true));
    let report = complete(facts, config, &mut cache);
    symcache::append(&cache.fresh);
    let wanted = reason != Reason::Exit || report.open() > 0 || config.at_exit;
    if wanted {
        deliver(config, pid, render(config, &report).as_bytes());
    }
    if report.open() > 0 {
        CHILD_LISTED_FDS
    } else {
        0
    }
}

fn render(config: &Config, report: &Report) -> String {
    match config.format {
        Format::Text => report::render_text(report),
        Format::Json => report::render_json(report),
    }
}

/// The program's fds are copies here; dropping them as soon as they are described keeps this
/// process from delaying anything the program closes (a socket's FIN, a pipe's EOF), and
/// frees every number. Only stderr stays. One `close_range` pair where the kernel has it:
/// a system call per fd was a third of a large report's time.
fn drop_program_fds() {
    if os::sys::raw_close_range(0, 1) && os::sys::raw_close_range(3, u32::MAX) {
        return;
    }
    let (upto, batch) = tracker::probe_bounds();
    for fd in inspect::probe_fds(upto, batch) {
        if fd != 2 {
            os::sys::raw_close(fd);
        }
    }
}

/// What a report knows before symbolization: gathered while the child still has its copies of
/// the program's fds.
struct Gathered {
    reason: Reason,
    header: Header,
    rows: Vec<Row>,
}

/// Writes a finished report where the user asked (in a report child: any fd is free); falls
/// back to stderr, saying why once.
fn deliver(config: &Config, pid: u32, bytes: &[u8]) {
    let ReportDest::Path(template) = &config.report else {
        let _ = os::fd::write_all(2, bytes);
        return;
    };
    let path = expand_report_path(
        template,
        pid,
        &report::compact_utc(LOADED_AT_S.load(Ordering::Relaxed)),
    );
    let written = open_report_file(&path).and_then(|fd| {
        let r = os::fd::write_all(fd, bytes);
        // SAFETY: closing the fd opened just above.
        unsafe { libc::close(fd) };
        r
    });
    if let Err(e) = written {
        warn_dest(&path, e);
        let _ = os::fd::write_all(2, bytes);
    }
}

fn report_path(template: &[u8]) -> Vec<u8> {
    expand_report_path(
        template,
        os::process::getpid(),
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

/// Gathers the report's facts from the kernel and the table, without creating any fd.
fn gather(reason: Reason, pid: u32) -> Gathered {
    let (soft, hard) = os::process::nofile_limit();
    let (upto, batch) = tracker::probe_bounds();
    let open = inspect::probe_fds(upto, batch);
    let stale = closed_unseen(&open);
    let kernel: Vec<_> = open
        .into_iter()
        .filter(|fd| !OWN.contains(*fd))
        .map(inspect::describe)
        .filter(|k| k.link.is_some())
        .collect();
    let mut rows = report::rows(&kernel, |fd| TABLE.get(fd), os::clock::coarse_ns());
    if reason == Reason::Exit {
        // Leaks at exit: what the program opened itself and did not close.
        rows.retain(|r| !r.call.predates_fdguard() && r.fd > 2);
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
            unix_ms: os::clock::realtime_ns() / 1_000_000,
            soft,
            hard,
            missed_closes: COUNTERS.missed_closes.load(Ordering::Relaxed) + stale,
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

/// Table entries for fds the kernel no longer has (`open`, sorted): closes fdguard did not see
/// (a raw system call, a close inside libc). The program's table keeps them until the number
/// is reused, which counts them then (`Insert::Replaced`), so each is counted once.
fn closed_unseen(open: &[i32]) -> u64 {
    let mut n = 0;
    TABLE.for_each_open(0, i32::MAX, |fd, _| {
        if open.binary_search(&fd).is_err() && !OWN.contains(fd) {
            n += 1;
        }
    });
    n
}

/// Bad-close notices: at most one per second; the others are counted in the next one.
static NOTICE_LAST_NS: AtomicU64 = AtomicU64::new(0);
static NOTICE_NOT_SHOWN: AtomicU64 = AtomicU64::new(0);

/// Takes the queued bad closes: a notice child for the first one a second, the others counted.
fn serve_bad_closes() {
    while let Some(event) = BAD_CLOSES.pop() {
        let now = os::clock::coarse_ns();
        let last = NOTICE_LAST_NS.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1_000_000_000 {
            NOTICE_NOT_SHOWN.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        NOTICE_LAST_NS.store(now, Ordering::Relaxed);
        let not_shown = NOTICE_NOT_SHOWN.swap(0, Ordering::Relaxed);
        launch(Task::Notice { event, not_shown });
    }
}

fn notice_in_child(config: &Config, pid: u32, e: BadClose, not_shown: u64) {
    let mut cache = FrameCache::new(Symbolizer::new(true));
    let notice = BadCloseNotice {
        pid,
        unix_ms: os::clock::realtime_ns() / 1_000_000,
        fd: e.fd,
        call: e.call.name(),
        tid: e.tid,
        frames: cache.of(e.stack),
        released_by: config.close_stacks.then(|| cache.of(e.released_by)),
        not_shown,
    };
    symcache::append(&cache.fresh);
    let bytes = match config.format {
        Format::Text => report::render_bad_close_text(&notice),
        Format::Json => report::render_bad_close_json(&notice),
    };
    deliver(config, pid, bytes.as_bytes());
}

/// At normal exit (from the library destructor): the leak report of `FDGUARD_AT_EXIT`, and
/// the exit status of `FDGUARD_LEAK_EXITCODE` when something leaked.
pub fn at_exit() {
    let Some(config) = CONFIG.get() else { return };
    // Requests made meanwhile (bad closes just before exit), then the reports still being
    // written (bounded: exit must not hang on a stuck stderr).
    serve();
    child::wait_in_flight(2_000_000_000);
    let leaks = (config.at_exit || config.leak_exitcode.is_some())
        && guard::internal(|| exit_report(config));
    if let (Some(code), true) = (config.leak_exitcode, leaks) {
        // SAFETY: flushing stdio as exit() would after this destructor, then ending the process
        // with the requested status.
        unsafe {
            libc::fflush(std::ptr::null_mut());
            libc::_exit(code as i32);
        }
    }
}

/// The exit report, made in a child this path waits for; returns whether it listed any fd.
/// Without a child, it is made here, symbolizing without opening anything (module + offset
/// and exported names), and written to stderr.
fn exit_report(config: &Config) -> bool {
    let pid = os::process::getpid();
    match child::spawn_waited() {
        Waited::Child => {
            let code = work_in_child(config, pid, Task::Report(Reason::Exit));
            child::leave(code)
        }
        Waited::Parent(c) => match child::wait(c) {
            Some(code) if code & child::FAILED == 0 => code & CHILD_LISTED_FDS != 0,
            _ => {
                let _ = os::fd::write_all(2, b"fdguard: the report process failed; report lost\n");
                false
            }
        },
        Waited::Failed(e) => {
            if child::say_once(Once::Spawn) {
                let msg = format!(
                    "fdguard: cannot make a report process ({}); the exit report goes to \
                     stderr without debug info\n",
                    std::io::Error::from_raw_os_error(e)
                );
                let _ = os::fd::write_all(2, msg.as_bytes());
            }
            let mut cache = FrameCache::new(Symbolizer::new(false));
            let report = complete(gather(Reason::Exit, pid), config, &mut cache);
            let listed = report.open() > 0;
            if listed || config.at_exit {
                let _ = os::fd::write_all(2, render(config, &report).as_bytes());
            }
            listed
        }
    }
}

fn warn_dest(path: &[u8], errno: i32) {
    if !child::say_once(Once::Destination) {
        return;
    }
    let msg = format!(
        "fdguard: FDGUARD_REPORT: cannot write {}: {}; writing reports to stderr\n",
        String::from_utf8_lossy(path),
        std::io::Error::from_raw_os_error(errno)
    );
    let _ = os::fd::write_all(2, msg.as_bytes());
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
        return Err(os::errno::errno());
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
