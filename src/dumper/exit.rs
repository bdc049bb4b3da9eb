//! The exit path (from the library destructor): reports still being written are waited for
//! (bounded), then the leak report of `FDGUARD_AT_EXIT` and the exit status of
//! `FDGUARD_LEAK_EXITCODE`.
#![allow(unsafe_code)]

use fdguard_core::config::Config;

use super::deliver::{Dest, deliver, render};
use super::frames::FrameCache;
use super::gather::gather;
use super::serve::{CHILD_LISTED_FDS, Task, complete, serve, work_in_child};
use crate::child::{self, Once, Waited};
use crate::guard;
use crate::os;
use crate::symbolize::Symbolizer;
use crate::tracker;
use crate::trigger::Reason;

/// How long exit waits for reports still being made before it lets the program go: a report
/// process goes on writing after the program is gone (until its own 30 s limit), so waiting
/// only keeps reports ahead of whatever the program's parent prints next.
const IN_FLIGHT_WAIT_NS: u64 = 1_000_000_000;
/// How long exit waits for the exit report to say whether it lists fds (after gathering and
/// symbolizing, before writing): `FDGUARD_LEAK_EXITCODE` needs the answer.
const VERDICT_WAIT_NS: u64 = 10_000_000_000;

/// At normal exit (from the library destructor): the leak report of `FDGUARD_AT_EXIT`, and
/// the exit status of `FDGUARD_LEAK_EXITCODE` when something leaked. Exit waits at most
/// `IN_FLIGHT_WAIT_NS` for reports in flight and `VERDICT_WAIT_NS` for the exit report's
/// verdict, never for a report to be written (a stalled stderr pipe must not hold the exit).
pub fn at_exit() {
    let Some(config) = super::context::config() else {
        return;
    };
    // Requests made meanwhile (bad closes just before exit), then the reports still being
    // made.
    serve();
    child::wait_in_flight(IN_FLIGHT_WAIT_NS);
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
    let epoch = tracker::begin_copy();
    match child::spawn_waited() {
        Waited::Child => {
            let task = Task::Report {
                reason: Reason::Exit,
                reply: None,
                epoch,
                coalesced: 0,
            };
            let code = work_in_child(config, pid, task);
            child::leave(code)
        }
        Waited::Parent(c) => match child::wait_verdict(c, CHILD_LISTED_FDS, VERDICT_WAIT_NS) {
            Some(listed) => listed,
            None => {
                let _ = os::fd::write_all(
                    2,
                    b"fdguard: the exit report failed or took over 10 s; the exit status is \
                      left as it is\n",
                );
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
            let report = complete(
                gather(Reason::Exit, pid, super::context::cmdline(), epoch),
                config,
                &mut cache,
            );
            let listed = report.open > 0;
            if listed || config.at_exit {
                deliver(pid, Dest::Stderr, render(config.format, &report).as_bytes());
            }
            listed
        }
    }
}
