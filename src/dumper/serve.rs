//! Serving report requests: each one becomes a copy of the process (`child`) that gathers,
//! symbolizes, renders and delivers a report, or a bad-close notice, and exits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fdguard_core::config::{Config, Format};
use fdguard_core::report::{BadCloseNotice, Report, is_suppressed, iso8601_utc, text};
use fdguard_core::request::Request;

use super::deliver::{Dest, deliver, render};
use super::frames::FrameCache;
use super::gather::{Gathered, Row, gather};
use super::signal;
use crate::alloc;
use crate::badclose::BadClose;
use crate::child::{self, Once};
use crate::guard::{self, ErrnoGuard};
use crate::inspect;
use crate::os;
use crate::symbolize::Symbolizer;
use crate::tracker::{self, BAD_CLOSES};
use crate::trigger::{self, Reason};

/// Held by the thread serving requests (see `serve`).
static SERVING: AtomicBool = AtomicBool::new(false);

/// Exit status bit of a report child: its report listed at least one fd (the exit path asks).
pub const CHILD_LISTED_FDS: u8 = 2;

/// What a report child is made for.
#[derive(Clone, Copy)]
pub enum Task {
    /// A report; for a request of `fdguard report`, in its format, into its reply file.
    Report {
        reason: Reason,
        reply: Option<Request>,
    },
    Notice {
        event: BadClose,
        not_shown: u64,
    },
}

/// Serves pending requests: each one becomes a report child. Called right where a request is
/// made (a hook, a signal handler), so it only uses atomics and async-signal-safe system calls,
/// and never waits: a request made while another context serves is left to that server, which
/// looks again before it returns (a signal handler interrupting the server on its own thread
/// included).
pub fn serve() {
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
                    match reason {
                        Reason::BadClose => serve_bad_closes(),
                        Reason::Reply => {
                            for request in signal::take_replies() {
                                let reason = Reason::Signal;
                                launch(Task::Report {
                                    reason,
                                    reply: Some(request),
                                });
                            }
                        }
                        reason => launch(Task::Report {
                            reason,
                            reply: None,
                        }),
                    }
                }
            });
        }
        SERVING.store(false, Ordering::Release);
    }
}

/// In a fork child: the thread that was serving requests, if any, does not exist there.
pub fn after_fork() {
    SERVING.store(false, Ordering::Relaxed);
}

/// Makes a detached report child for `task`; says once if none can be made.
fn launch(task: Task) {
    let Some(config) = super::context::config() else {
        return;
    };
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
    Report(Box<Gathered>, Option<Request>),
    Notice(BadClose, u64),
}

/// A report child's whole work; returns its exit status.
pub fn work_in_child(config: &Config, pid: u32, task: Task) -> u8 {
    // First of all, before anything allocates: malloc's locks may be held by threads that
    // were not copied.
    if !alloc::enter_child_arena() {
        return child::FAILED;
    }
    let code = guard::contained(|| {
        // What needs the copies of the program's fds is done before they are dropped, and they
        // are dropped before waiting for this child's turn to write (see `drop_program_fds`).
        let prepared = match task {
            Task::Report { reason, reply } => {
                let facts = gather(reason, pid, super::context::cmdline());
                Prepared::Report(Box::new(facts), reply)
            }
            Task::Notice { event, not_shown } => Prepared::Notice(event, not_shown),
        };
        drop_program_fds();
        child::take_turn();
        match prepared {
            Prepared::Report(facts, reply) => report_in_child(config, pid, *facts, reply),
            Prepared::Notice(event, not_shown) => {
                notice_in_child(config, pid, event, not_shown);
                0
            }
        }
    });
    code.unwrap_or(child::FAILED)
}

/// Symbolizes, writes and (for the exit path) grades one report, in a report child: where
/// reports go, or for a request of `fdguard report`, in its format into its reply file.
fn report_in_child(config: &Config, pid: u32, facts: Gathered, reply: Option<Request>) -> u8 {
    let reason = facts.reason;
    let mut cache = FrameCache::new(Symbolizer::new(true));
    let report = complete(facts, config, &mut cache);
    cache.share();
    let wanted = reason != Reason::Exit || report.open > 0 || config.at_exit;
    if wanted {
        let (format, dest) = match reply {
            Some(r) => (r.format, Dest::Reply(r)),
            None => (config.format, Dest::Configured),
        };
        deliver(pid, dest, render(format, &report).as_bytes());
    }
    if report.open > 0 { CHILD_LISTED_FDS } else { 0 }
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

/// Symbolizes, applies suppressions (exit reports) and groups by stack.
pub fn complete(g: Gathered, config: &Config, cache: &mut FrameCache) -> Report {
    let Gathered {
        reason,
        mut report,
        mut rows,
    } = g;
    if reason == Reason::Exit {
        let before = rows.len();
        rows.retain(|r: &Row| {
            let frames = cache.of(r.stack);
            !is_suppressed(r, &frames, &config.ignore)
        });
        report.suppressed = before - rows.len();
    }
    report.fill(&rows, |s| cache.get(s).to_vec());
    report
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
        event: BadCloseNotice::EVENT.into(),
        time: iso8601_utc(os::clock::realtime_ns() / 1_000_000),
        fd: e.fd,
        call: e.call.name().into(),
        tid: e.tid,
        stack: cache.of(e.stack),
        released_by: config.close_stacks.then(|| cache.of(e.released_by)),
        not_shown,
        ..BadCloseNotice::default()
    };
    cache.share();
    let bytes = match config.format {
        Format::Text => text::bad_close(&notice),
        Format::Json => notice.to_json(),
    };
    deliver(pid, Dest::Configured, bytes.as_bytes());
}
