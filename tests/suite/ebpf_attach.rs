//! `fdguard attach PID` on a Go program started without fdguard: the kernel records its fds
//! through eBPF (the command's `ebpf`). The program (`tests/go/leak_three_ways`, static) leaks
//! files and dialed loopback sockets in rounds, one before the attach and one after; `fdguard
//! report PID --json` names the function that made each fd of the second round, lists those
//! of the first as `before attach`, and lists exactly the fds `/proc/PID/fd` lists; `fdguard
//! detach PID` unloads the programs and the program goes on as before.
//!
//! These tests need a machine that loads eBPF programs (root, or CAP_BPF and CAP_PERFMON), and
//! an fdguard built with clang (`scripts/test.sh` installs it): they fail saying which is
//! missing.
use crate::common::leaks::{
    assert_files_and_dials_named, assert_host_view_names_leaked_files, holder, listed,
};
use crate::common::server::proc_children;
use crate::common::*;

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

/// Fds each leaking function makes per round.
const LEAKS: usize = 20;

/// The fdguard process that holds the eBPF attach to a process, ended with the test if it
/// still runs (it ends by itself within a second of the process's end, or at `fdguard
/// detach`): SIGTERM, which it ends on at once, removing its run file.
struct Server(u32);

impl Server {
    fn of(pid: u32) -> Server {
        let file = format!("/run/fdguard/ebpf.{pid}");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("the attach wrote no {file}: {e}"));
        Server(text.trim().parse().expect("a pid in the run file"))
    }

    fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.0)).is_ok_and(|s| !s.contains(") Z "))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running() {
            try_kill(self.0, libc::SIGTERM);
        }
    }
}

/// Attaches to `pid` with eBPF; fails the test saying what the machine or the build lacks.
fn attach(pid: u32) -> (String, Server) {
    let out = fdguard(&["attach", &pid.to_string()]).output().unwrap();
    assert!(
        out.status.success(),
        "fdguard attach {pid} (a Go program) failed: this machine or this build cannot load \
         fdguard's eBPF programs, which these tests need: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        Server::of(pid),
    )
}

/// Asks for a report with `fdguard report PID --json` and checks it against `/proc/PID/fd`
/// (and that it says how its fds were recorded).
fn report(pid: u32) -> Value {
    let asked = succeeds(fdguard(&["report", &pid.to_string(), "--json"]));
    let kernel = proc_fds(pid);
    let r: Value = serde_json::from_str(&asked).unwrap_or_else(|e| panic!("{e}: {asked}"));
    assert_matches_kernel(&r, &kernel, &[]);
    assert_eq!(r["recorder"], "ebpf", "recorded by eBPF: {r}");
    r
}

/// The Go leak program, started without fdguard (its scratch directory `name`), at the end of
/// its first round: the lines it printed, and the loopback peer holding its connections (for
/// three rounds).
fn first_round(name: &str) -> (Stepper, Vec<String>, Arc<Mutex<Vec<TcpStream>>>) {
    let dir = scratch(name);
    let prog = build_go("leak_three_ways", &dir, false);
    let (backend, conns) = holder(false, 3 * LEAKS);
    let mut cmd = plain(&prog);
    cmd.args([backend.as_str(), "-", &LEAKS.to_string()]);
    let mut s = Stepper::spawn(cmd, &dir.join("no-reports"));
    let (_, lines) = s.next_checkpoint().expect("the first round");
    (s, lines, conns)
}

#[test]
fn go_program_attached_names_what_it_leaks_and_runs_on_after_detach() {
    let (mut s, before, _conns) = first_round("ebpf-attach-go");
    let pid = s.pid();

    let (said, server) = attach(pid);
    assert!(
        said.contains("with eBPF") && said.contains("before attach"),
        "{said}"
    );
    s.answer("again");
    let (_, after) = s.next_checkpoint().expect("the second round");
    let r = report(pid);
    assert_files_and_dials_named(&r, &after, LEAKS);
    // The first round's files are before the attach: only the second's have a stack.
    assert_host_view_names_leaked_files(pid, "ebpf", LEAKS);
    let earlier = listed(&before, "file");
    for fd in earlier.iter().chain(&listed(&before, "dial")) {
        let row = fd_row(&r, *fd).unwrap_or_else(|| panic!("fd {fd} not in {r}"));
        assert_eq!(row["call"], "before attach", "{row}");
    }

    let detached = succeeds(fdguard(&["detach", &pid.to_string()]));
    assert!(detached.contains("unloaded"), "{detached}");
    assert!(!server.running(), "the server ended at the detach");
    let none = fails_with(fdguard(&["report", &pid.to_string()]), 2);
    assert!(none.contains("not running under fdguard"), "{none}");
    // The program runs on as before: a third round, then its exit.
    s.answer("again");
    let (_, third) = s.next_checkpoint().expect("a round after the detach");
    assert_eq!(listed(&third, "dial").len(), LEAKS, "{third:?}");
    s.resume();
    let out = s.finish();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn static_c_program_attached_lists_the_fds_the_kernel_lists() {
    let dir = scratch("ebpf-attach-static");
    let prog = build_c("holder", &dir, &["-O1", "-g", "-static"]);
    let mut cmd = plain(&prog);
    cmd.arg(&dir).arg("1");
    let mut s = Stepper::spawn(cmd, &dir.join("no-reports"));
    assert_eq!(s.next_checkpoint().unwrap().0, "held");
    let pid = s.pid();
    let (said, _server) = attach(pid);
    assert!(said.contains("statically linked"), "{said}");
    let held = report(pid);
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "leaked");
    let r = report(pid);
    let made: Vec<&Value> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| fd_row(&held, row["fd"].as_i64().unwrap()).is_none())
        .collect();
    assert!(!made.is_empty(), "the round leaked streams: {r}");
    // Recorded by the kernel as the calls the program made (its libc has no frame pointers:
    // their stacks may stop in it; `fdguard run` unwinds them with its unwind tables).
    assert!(made.iter().all(|row| row["call"] == "openat"), "{r}");
    succeeds(fdguard(&["detach", &pid.to_string()]));
    s.resume();
    assert!(s.finish().status.success());
}

#[test]
fn threshold_and_emfile_reports_come_while_attached() {
    let dir = scratch("ebpf-attach-triggers");
    let (mut s, _, _conns) = first_round("ebpf-attach-triggers-program");
    let pid = s.pid();
    // The Go runtime raised its soft limit to the hard one at its start: both come down, to
    // 100 fds, which the second round nears and the third reaches.
    let squeezed = command(require("prlimit"))
        .args(["--pid", &pid.to_string(), "--nofile=100:100"])
        .status()
        .unwrap();
    assert!(squeezed.success());
    let reports = dir.join("r.json");
    let path = reports.to_str().unwrap();
    let out = fdguard(&["attach", &pid.to_string(), "--json", "--threshold", "80"])
        .args(["--report", path])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let _server = Server::of(pid);

    s.answer("again");
    let (_, second) = s.next_checkpoint().expect("the second round");
    assert!(
        !second.iter().any(|l| l.starts_with("FAILED")),
        "{second:?}"
    );
    let threshold = wait_reports(&reports, 1, REPORT_WAIT).remove(0);
    assert_eq!(threshold["reason"], "threshold", "{threshold}");
    assert!(threshold["open"].as_u64().unwrap() >= 80, "{threshold}");

    s.answer("again");
    let (_, third) = s.next_checkpoint().expect("the third round");
    assert!(
        third.iter().any(|l| l.starts_with("FAILED")),
        "the third round reaches the limit: {third:?}"
    );
    let emfile = wait_reports(&reports, 2, REPORT_WAIT).remove(1);
    assert_eq!(emfile["reason"], "emfile", "{emfile}");
    assert_eq!(emfile["trigger_errno"], "EMFILE", "{emfile}");
    assert_eq!(emfile["trigger_call"], "openat", "{emfile}");
    assert_matches_kernel(&emfile, &proc_fds(pid), &[]);
    s.resume();
    assert!(s.finish().status.success());
}

#[test]
fn run_ebpf_records_a_program_from_its_start() {
    let dir = scratch("ebpf-run");
    let prog = build_go("leak_three_ways", &dir, false);
    let (backend, _conns) = holder(false, LEAKS);
    let mut cmd = fdguard(&["run", "--ebpf", "--", prog.to_str().unwrap()]);
    cmd.args([backend.as_str(), "-", &LEAKS.to_string()]);
    let mut s = Stepper::spawn(cmd, &dir.join("no-reports"));
    let (_, lines) = s.next_checkpoint().expect("the first round");
    // Its children: the program, and the server of its recorder.
    let children = proc_children(s.pid());
    let program: Vec<u32> = children
        .iter()
        .copied()
        .filter(|c| std::fs::read_link(format!("/proc/{c}/exe")).is_ok_and(|e| e == prog))
        .collect();
    assert_eq!(program.len(), 1, "fdguard runs one program: {children:?}");
    let pid = program[0];
    let _server = Server::of(pid);
    let r = report(pid);
    assert_files_and_dials_named(&r, &lines, LEAKS);
    for fd in 0..3 {
        let row = fd_row(&r, fd).unwrap_or_else(|| panic!("fd {fd} not in {r}"));
        assert_eq!(row["call"], "inherited", "{row}");
    }
    s.resume();
    assert!(s.finish().status.success());
}

#[test]
fn without_the_capabilities_attach_says_what_is_missing() {
    let dir = scratch("ebpf-attach-unprivileged");
    let prog = build_go("leak_three_ways", &dir, false);
    // The program and the command both as nobody, without capabilities.
    let nobody = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let mut cmd = command(require("setpriv"));
    cmd.args(nobody).arg(&prog).args(["127.0.0.1:1", "-", "0"]);
    let mut s = Stepper::spawn(cmd, &dir.join("no-reports"));
    s.next_checkpoint().expect("the program runs");
    let mut attach = command(require("setpriv"));
    attach
        .args(nobody)
        .arg(cli_path())
        .args(["attach", &s.pid().to_string()]);
    let err = fails_with(attach, 2);
    assert!(
        err.contains("needs CAP_BPF and CAP_PERFMON") && err.contains("fdguard run"),
        "{err}"
    );
    s.resume();
    assert!(s.finish().status.success());
}
