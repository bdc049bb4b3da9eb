//! When a traced program gets a report, as under the library: asked for (`fdguard report`),
//! its open fds reaching `FDGUARD_THRESHOLD` percent of its soft limit, a creation failing with
//! EMFILE or ENFILE (at most once per `FDGUARD_EMFILE_INTERVAL`), and its exit; and the accept
//! guard's holds (`guard`). Policy here, pure and unit-tested; the reports themselves are
//! `report`'s.

use std::time::{Duration, Instant};

use fdguard_core::accept_lines::{LineContext, Notice, render};
use fdguard_core::call::Call;
use fdguard_core::config::Config;
use fdguard_core::fdinfo::parse_fdinfo;
use fdguard_core::report::EmfileStats;
use fdguard_core::request::Request;

use super::guard::AcceptGuard;
use super::report::{self, Dest, View, Why};
use super::tracer::Watch;
use crate::target::Target;

/// How often the soft limit is read again (the program, or `prlimit --pid`, may change it).
const LIMIT_EVERY: Duration = Duration::from_secs(1);

/// The threshold report: once per crossing, armed again when usage falls 10 points below.
#[derive(Debug, Default)]
struct Threshold {
    fired: bool,
}

impl Threshold {
    /// Whether `open` fds of a soft limit of `soft` cross `percent` now.
    fn crossed(&mut self, percent: u8, open: usize, soft: u64) -> bool {
        if percent == 0 || soft == 0 {
            return false;
        }
        let used = open as u64 * 100;
        let at = u64::from(percent) * soft;
        if self.fired {
            self.fired = used + 10 * soft >= at;
            return false;
        }
        self.fired = used >= at;
        self.fired
    }
}

/// The EMFILE report: at most one per interval; with an interval of 0, one per burst (a
/// creation that succeeds ends a burst).
#[derive(Debug, Default)]
struct Emfile {
    last: Option<Instant>,
    burst: bool,
}

impl Emfile {
    fn failed(&mut self, interval: Duration, now: Instant) -> bool {
        let due = if interval.is_zero() {
            !self.burst
        } else {
            self.last.is_none_or(|t| now.duration_since(t) >= interval)
        };
        self.burst = true;
        if due {
            self.last = Some(now);
        }
        due
    }

    fn succeeded(&mut self) {
        self.burst = false;
    }
}

/// The triggers of one traced program, and whether its exit report listed fds.
pub struct Triggers<'a> {
    config: &'a Config,
    stamp: &'a str,
    pub leaked: bool,
    threshold: Threshold,
    emfile: Emfile,
    guard: AcceptGuard,
    /// The soft limit and when it was read.
    soft: Option<(u64, Instant)>,
}

impl<'a> Triggers<'a> {
    pub fn new(config: &'a Config, stamp: &'a str) -> Triggers<'a> {
        Triggers {
            config,
            stamp,
            leaked: false,
            threshold: Threshold::default(),
            emfile: Emfile::default(),
            guard: AcceptGuard::new(config.emfile, config.backoff_max_ms),
            soft: None,
        }
    }

    fn soft_limit(&mut self, pid: i32) -> Option<u64> {
        let fresh = self.soft.filter(|(_, at)| at.elapsed() < LIMIT_EVERY);
        if let Some((soft, _)) = fresh {
            return Some(soft);
        }
        let soft = Target::open(pid).ok()?.limit().ok()?.soft?;
        self.soft = Some((soft, Instant::now()));
        Some(soft)
    }

    /// Whether a creation failing with EMFILE or ENFILE now gets a report: at most one per
    /// `FDGUARD_EMFILE_INTERVAL` (0: one per burst of failures).
    pub fn emfile_due(&mut self, now: Instant) -> bool {
        let interval = Duration::from_secs(self.config.emfile_interval_s);
        self.emfile.failed(interval, now)
    }

    /// A creation succeeded: a burst of EMFILE failures is over.
    pub fn creation_succeeded(&mut self) {
        self.emfile.succeeded();
    }

    /// Whether `open` fds of process `pid` cross the threshold now (a report is due).
    pub fn threshold_due(&mut self, open: usize, pid: i32) -> bool {
        self.soft_limit(pid)
            .is_some_and(|soft| self.threshold.crossed(self.config.threshold, open, soft))
    }

    /// The count of open fds of process `pid` at which the threshold is crossed (none: no
    /// threshold, or the limit is unknown).
    pub fn threshold_level(&mut self, pid: i32) -> Option<u64> {
        let percent = u64::from(self.config.threshold);
        let soft = self.soft_limit(pid).filter(|_| percent > 0)?;
        Some((percent * soft).div_ceil(100))
    }

    /// Makes a report of `view` for `why` where the options say.
    pub fn report(&self, view: &View<'_>, why: Why) {
        let config = self.config;
        let emfile = self.emfile_stats();
        report::now(
            config,
            view,
            why,
            config.format,
            &Dest::Configured,
            self.stamp,
            emfile,
        );
    }

    /// The reports' `emfile`: the accept guard's totals.
    fn emfile_stats(&self) -> EmfileStats {
        let t = self.guard.totals();
        EmfileStats {
            accept_failures: t.failures,
            paused_ms: t.paused_ns / 1_000_000,
            shed: t.shed,
        }
    }

    /// The accept guard's line for the operator, on stderr, as the library says it.
    fn say(&mut self, line: &Notice, view: &View<'_>) {
        let addr = listener_address(view.tid, line.fd);
        // Read now: the limit at the failure, not the one cached up to a second ago.
        self.soft = None;
        let open = self
            .soft_limit(view.tid)
            .map(|soft| (view.table.len(), soft));
        let context = LineContext {
            addr: addr.as_deref(),
            open,
            reserve: false,
            mode: self.guard.mode(),
            backoff_max_ms: self.guard.max_ms(),
        };
        eprintln!("{}", render(line, &context));
    }
}

impl Watch for Triggers<'_> {
    fn exiting(&mut self, view: View<'_>) {
        if self.config.at_exit || self.config.leak_exitcode.is_some() {
            self.leaked = report::at_exit(self.config, &view, self.stamp, self.emfile_stats());
        }
    }

    fn asked(&mut self, request: u64, view: View<'_>) {
        let config = self.config;
        let (format, dest) = match Request::from_value(request) {
            // `fdguard report`: in its format, into its reply file in the program's /tmp.
            Some(r) if r.reply_file => {
                let theirs = r.reply_path(view.tgid as u32);
                let path = std::path::PathBuf::from(format!("/proc/{}/root", view.tgid))
                    .join(theirs.trim_start_matches('/'));
                (r.format, Dest::Reply(path))
            }
            Some(r) => (r.format, Dest::Configured),
            // A plain signal: where and as the options say.
            None => (config.format, Dest::Configured),
        };
        let emfile = self.emfile_stats();
        report::now(
            config,
            &view,
            Why::Signal,
            format,
            &dest,
            self.stamp,
            emfile,
        );
    }

    fn created(&mut self, call: Call, arg0: u64, result: i64, view: View<'_>) -> Option<Duration> {
        let now = Instant::now();
        let accept = matches!(call, Call::Accept | Call::Accept4);
        let listener = arg0 as i32;
        let errno = (-result) as i32;
        if result < 0 && (errno == libc::EMFILE || errno == libc::ENFILE) {
            let reported = self.emfile_due(now);
            let mut hold = None;
            if accept {
                let blocking = !is_nonblocking(view.tid, listener);
                let verdict = self.guard.failed(listener, errno, blocking, reported, now);
                if let Some(line) = verdict.line {
                    self.say(&line, &view);
                }
                hold = verdict.hold;
            }
            if reported {
                self.report(&view, Why::Emfile { call, errno });
            }
            return hold;
        }
        if result < 0 {
            return None;
        }
        self.creation_succeeded();
        if accept && let Some(line) = self.guard.succeeded(listener, now) {
            self.say(&line, &view);
        }
        if self.threshold_due(view.table.len(), view.tid) {
            self.report(&view, Why::Threshold);
        }
        None
    }
}

/// The local address of socket `fd` of thread `tid` (`0.0.0.0:8080`), if it can be read.
fn listener_address(tid: i32, fd: i32) -> Option<String> {
    let process = procfs::process::Process::new(tid).ok()?;
    let dir = crate::os::FdDir::open(tid).ok()?;
    let fds = crate::fds::read_fds(&process, &dir).ok()?;
    fds.into_iter().find(|e| e.fd == fd)?.socket?.desc.local
}

/// Whether fd `fd` of thread `tid` is nonblocking (`/proc/TID/fdinfo`); false if unknown.
fn is_nonblocking(tid: i32, fd: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}"))
        .is_ok_and(|text| parse_fdinfo(&text).flags & libc::O_NONBLOCK as u32 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_fires_once_per_crossing_and_rearms_ten_points_below() {
        let mut t = Threshold::default();
        let fired: Vec<bool> = [79, 80, 85, 75, 71, 70, 69, 80]
            .iter()
            .map(|open| t.crossed(80, *open, 100))
            .collect();
        assert_eq!(
            fired,
            [false, true, false, false, false, false, false, true]
        );
        assert!(!Threshold::default().crossed(0, 100, 100), "0 turns it off");
    }

    #[test]
    fn emfile_once_per_interval_or_per_burst() {
        let start = Instant::now();
        let mut e = Emfile::default();
        let minute = Duration::from_secs(60);
        assert!(e.failed(minute, start));
        assert!(!e.failed(minute, start + Duration::from_secs(59)));
        assert!(e.failed(minute, start + minute));
        let mut b = Emfile::default();
        assert!(b.failed(Duration::ZERO, start));
        assert!(!b.failed(Duration::ZERO, start));
        b.succeeded();
        assert!(b.failed(Duration::ZERO, start));
    }
}
