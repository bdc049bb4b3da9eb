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
use crate::child::{self, NotMade, Once};
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
        /// The report epoch of the copy (`tracker::begin_copy`): table entries written since
        /// may describe fds the copy does not have (see `gather`).
        epoch: u16,
        /// Requests coalesced into this report.
        coalesced: u64,
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
        // Sequentially consistent with the release below and `trigger`'s: a request whose
        // maker finds the server busy is seen by the server's next look (the store of the
        // release must not pass that look, as a plain release store may).
        if SERVING.swap(true, Ordering::SeqCst) {
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
                        // Served below, every time.
                        Reason::Reply => {}
                        // With every report child at work, the request is answered by the next
                        // report, made when one ends (`child::wake_later`).
                        reason => {
                            if launch_report(reason, None) == Err(NotMade::Busy) {
                                child::coalesce();
                                wait_for_child(reason);
                            }
                        }
                    }
                }
            });
        }
        // Requests of `fdguard report` wait for a free report child, each for a report of its
        // own, so they are looked at whatever woke this server.
        if signal::replies_waiting() {
            guard::internal(|| {
                for request in signal::take_replies() {
                    if launch_report(Reason::Signal, Some(request)) == Err(NotMade::Busy) {
                        signal::wait_again(request);
                        wait_for_child(Reason::Reply);
                    }
                }
            });
        }
        SERVING.swap(false, Ordering::SeqCst);
    }
}

/// A request of `reason` waits for a report child to end (which wakes the program); if one
/// ended meanwhile, it is served again at once (`serve` loops while requests are pending).
fn wait_for_child(reason: Reason) {
    if !child::wake_later(reason.bit()) {
        trigger::request_bits(child::take_pending());
    }
}

/// In a fork child: the thread that was serving requests, if any, does not exist there.
pub fn after_fork() {
    SERVING.store(false, Ordering::Relaxed);
}

/// Makes a detached report child for a report, with the requests coalesced so far.
fn launch_report(reason: Reason, reply: Option<Request>) -> Result<(), NotMade> {
    let coalesced = child::take_coalesced();
    let made = launch(Task::Report {
        reason,
        reply,
        epoch: tracker::begin_copy(),
        coalesced,
    });
    if made.is_err() {
        child::give_back_coalesced(coalesced);
    }
    made
}

/// Makes a detached report child for `task`; says once if none can be made (beyond being busy).
fn launch(task: Task) -> Result<(), NotMade> {
    let Some(config) = super::context::config() else {
        return Err(NotMade::Failed(libc::EINVAL));
    };
    let pid = os::process::getpid();
    let made = child::spawn_detached(&|| {
        let code = work_in_child(config, pid, task);
        child::leave(code)
    });
    if let Err(NotMade::Failed(e)) = made
        && child::say_once(Once::Spawn)
    {
        let _ = os::fd::write_all(2, b"fdguard: cannot make a report process (");
        let _ = os::fd::write_all(2, os::errno::errno_name(e).as_bytes());
        let _ = os::fd::write_all(2, b"); reports are lost until one can be made\n");
    }
    made
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
            Task::Report {
                reason,
                reply,
                epoch,
                coalesced,
            } => {
                let mut facts = gather(reason, pid, super::context::cmdline(), epoch);
                facts.report.coalesced = coalesced;
                Prepared::Report(Box::new(facts), reply)
            }
            Task::Notice { event, not_shown } => Prepared::Notice(event, not_shown),
        };
        drop_program_fds();
        child::after_drop();
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
    if reason == Reason::Exit {
        child::tell_verdict(report.open > 0);
    }
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
    // The child's own fd (a pidfd of the program, to wake it: `child::leave`) stays too.
    let keep = child::own_fd().map(|fd| fd as u32);
    if closing_ranges(keep)
        .into_iter()
        .all(|(lo, hi)| os::sys::raw_close_range(lo, hi))
    {
        return;
    }
    let (upto, batch) = tracker::probe_bounds();
    for fd in inspect::probe_fds(upto, batch) {
        if fd != 2 && Some(fd) != child::own_fd() {
            os::sys::raw_close(fd);
        }
    }
}

/// The ranges of fd numbers that hold every number but stderr's and `keep`.
fn closing_ranges(keep: Option<u32>) -> Vec<(u32, u32)> {
    let mut kept: Vec<u32> = [2].into_iter().chain(keep).collect();
    kept.sort_unstable();
    kept.dedup();
    let mut ranges = Vec::new();
    let mut lo = 0u32;
    for k in kept {
        if k > lo {
            ranges.push((lo, k - 1));
        }
        lo = k.saturating_add(1);
    }
    ranges.push((lo, u32::MAX));
    ranges
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
        if launch(Task::Notice { event, not_shown }) == Err(NotMade::Busy) {
            NOTICE_NOT_SHOWN.fetch_add(not_shown + 1, Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_closes_all_but_stderr_and_its_own_fd() {
        assert_eq!(closing_ranges(None), [(0, 1), (3, u32::MAX)]);
        assert_eq!(closing_ranges(Some(5)), [(0, 1), (3, 4), (6, u32::MAX)]);
        assert_eq!(closing_ranges(Some(0)), [(1, 1), (3, u32::MAX)]);
        assert_eq!(closing_ranges(Some(3)), [(0, 1), (4, u32::MAX)]);
    }
}
