//! The report pipeline's moving parts: the signal handler, the report thread, fork handling,
//! and where a finished report is written.
//!
//! # Why a thread
//! Building a report reads `/proc`, symbolizes (opens ELF files, allocates) and writes files:
//! none of that is allowed in a signal handler or inside a hook. The handler and the hooks only
//! set a bit and wake a futex (`trigger`); this thread does the work. It starts with every
//! signal blocked, so the program's signals still reach the program's threads.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::config::{Config, Format, ReportDest, expand_report_path};
use crate::guard;
use crate::inspect;
use crate::os;
use crate::report::{self, Header, Report};
use crate::stack;
use crate::symbolize::Symbolizer;
use crate::table::FdRecord;
use crate::tracker::{COUNTERS, OWN, PATHS, TABLE, THRESHOLD};
use crate::trigger::{self, Reason};

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Serializes report writing (report thread, exit path). A plain futex word rather than a
/// library mutex because a fork child must be able to reset it: the thread holding it in the
/// parent does not exist in the child.
struct ReportLock(AtomicU32);

impl ReportLock {
    fn lock(&self) {
        while self
            .0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            os::futex_wait(&self.0, 1, 100_000_000);
        }
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

/// Installs the signal handler, starts the report thread and the fork handler.
pub fn start(config: Config) {
    let config = CONFIG.get_or_init(|| config);
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
    crate::tracker::after_fork_in_child();
    guard::forget_tid_after_fork();
    if REPORT_LOCK.0.swap(0, Ordering::AcqRel) != 0 {
        NO_DEBUG_INFO.store(true, Ordering::Relaxed);
    }
    spawn_report_thread();
}

fn report_thread() {
    guard::mark_thread_internal();
    loop {
        let work = trigger::wait(1_000_000_000);
        THRESHOLD.set_limit(os::nofile_limit().0);
        for reason in Reason::QUEUED {
            if work.wants(reason) {
                write_report(reason);
            }
        }
    }
}

/// Builds and writes one report. Runs on the report thread (or the exiting thread).
pub fn write_report(reason: Reason) {
    let Some(config) = CONFIG.get() else { return };
    guard::internal(|| {
        REPORT_LOCK.lock();
        let r = guard::contained(|| {
            let report = collect(reason);
            let bytes = match config.format {
                Format::Text => report::render_text(&report),
                Format::Json => report::render_json(&report),
            };
            emit(&config.report, bytes.as_bytes());
        });
        REPORT_LOCK.unlock();
        if r.is_none() {
            let _ = os::write_all(2, b"fdguard: could not build a report\n");
        }
    });
}

/// Gathers the report's facts from the kernel and the table.
pub fn collect(reason: Reason) -> Report {
    let now = os::monotonic_ns();
    let (soft, hard) = os::nofile_limit();
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
    forget_stale(&kernel, now);
    let rows = report::rows(
        &kernel,
        |fd| TABLE.get(fd),
        |id| {
            PATHS
                .get(id)
                .map(|p| String::from_utf8_lossy(p).into_owned())
        },
        os::monotonic_ns(),
    );
    let symbolizer = Symbolizer::new(!NO_DEBUG_INFO.load(Ordering::Relaxed));
    let stacks = report::group(&rows, |s| symbolizer.frames(&stack::frames(s)));
    Report {
        header: Header {
            pid: os::getpid(),
            cmdline: inspect::cmdline(),
            reason: reason.name(),
            trigger_call: match reason {
                Reason::Emfile => crate::tracker::emfile_call().map(|c| c.name()),
                _ => None,
            },
            unix_ms: os::realtime_ns() / 1_000_000,
            soft,
            hard,
            missed_closes: COUNTERS.missed_closes.load(Ordering::Relaxed),
            skipped: COUNTERS.skipped.load(Ordering::Relaxed),
            listed: listed_ok,
            emfile: Default::default(),
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
        if !os::fd_is_open(fd) && TABLE.remove_if_same(fd, crate::tracker::fork_generation(), &rec)
        {
            COUNTERS.missed_closes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes a finished report where the user asked; falls back to stderr (once said why).
fn emit(dest: &ReportDest, bytes: &[u8]) {
    let ReportDest::Path(template) = dest else {
        let _ = os::write_all(2, bytes);
        return;
    };
    let now = os::realtime_ns() / 1_000_000_000;
    let path = expand_report_path(template, os::getpid(), &report::compact_utc(now));
    match open_report_file(&path) {
        Ok(fd) => {
            let written = os::write_all(fd, bytes);
            // SAFETY: closing the fd opened just above.
            unsafe { libc::close(fd) };
            if let Err(e) = written {
                warn_dest(&path, e);
                let _ = os::write_all(2, bytes);
            }
        }
        Err(e) => {
            warn_dest(&path, e);
            let _ = os::write_all(2, bytes);
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
