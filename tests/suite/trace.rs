//! `fdguard run` on programs the library cannot see into: a static C program (`tests/c/traced.c`,
//! built `-static`) and a Go program (`tests/go/leaky`, built with `go build`, static and with
//! cgo) run under the command's tracer. Their exit reports are compared with what the program
//! listed in `/proc/self/fd` just before it exited; exit statuses, signals and stops pass
//! through.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::*;

fn traced_c() -> PathBuf {
    build_c_once("traced", &["-O1", "-static"])
}

/// `fdguard run --at-exit --json OPTIONS --report REPORT -- PROGRAM ARGS`, run to its end.
fn run_to_exit(options: &[&str], report: &Path, program: &Path, args: &[&str]) -> Output {
    fdguard(&["run", "--at-exit", "--json"])
        .args(options)
        .arg("--report")
        .arg(report)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .unwrap()
}

/// What a program printed of its fds: `EXPECT fd call` lines, and the `/proc/self/fd` lists
/// of its `START` and `PROCFD` lines.
struct Printed {
    expected: BTreeMap<i64, String>,
    lists: BTreeMap<String, BTreeSet<i64>>,
}

fn printed(out: &Output) -> Printed {
    let mut p = Printed {
        expected: BTreeMap::new(),
        lists: BTreeMap::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("EXPECT") => {
                let fd = words.next().unwrap().parse().unwrap();
                p.expected.insert(fd, words.next().unwrap().to_string());
            }
            Some(label @ ("START" | "PROCFD")) => {
                let fds = words.map(|w| w.parse().unwrap()).collect();
                p.lists.insert(label.to_string(), fds);
            }
            _ => {}
        }
    }
    p
}

/// The exit report in `path` lists exactly the fds the program listed before exiting, less
/// those it started with (the standard streams, and whatever the test binary was given), each
/// made by the call the program says, none untracked.
fn check_exit_report(path: &Path, p: &Printed) -> Value {
    let reports = read_reports(path);
    assert_eq!(reports.len(), 1, "one exit report");
    let r = reports[0].clone();
    assert_eq!(r["reason"], "exit");
    let held: BTreeSet<i64> = p.lists["PROCFD"]
        .difference(&p.lists["START"])
        .copied()
        .filter(|fd| *fd > 2)
        .collect();
    assert_eq!(report_fds(&r), held, "report {r}");
    assert_eq!(r["untracked"], 0, "{r}");
    assert_eq!(r["missed_closes"], 0, "{r}");
    for (fd, call) in &p.expected {
        let row = fd_row(&r, *fd).unwrap_or_else(|| panic!("fd {fd} not in {r}"));
        assert_eq!(row["call"], call.as_str(), "fd {fd}: {row}");
    }
    r
}

#[test]
fn a_static_programs_leaks_are_its_exit_report() {
    let dir = scratch("trace-static");
    let report = dir.join("exit.json");
    let pattern = dir.join("exit-%p.json");
    let out = run_to_exit(&["--leak-exitcode", "7"], &pattern, &traced_c(), &["leaks"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "leaks exit with 7: {err}");
    let p = printed(&out);
    // The report file is named after the program's pid (%p), which is not fdguard's.
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.to_string_lossy().contains("exit-"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::rename(&files[0], &report).unwrap();
    let r = check_exit_report(&report, &p);
    assert!(
        files[0].ends_with(format!("exit-{}.json", r["pid"])),
        "{files:?}"
    );
    assert_eq!(
        r["cmdline"][1], "after-exec",
        "the program exec'd itself: {r}"
    );
    // The thread's leak names the thread, not the process.
    let tids: BTreeSet<i64> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["tid"].as_i64())
        .collect();
    assert!(tids.len() >= 2, "a thread's fd has its tid: {r}");
}

#[test]
fn ignored_fds_are_left_out_of_the_exit_report() {
    let dir = scratch("trace-ignore");
    let report = dir.join("exit.json");
    let out = run_to_exit(
        &["--ignore", "*/hostname"],
        &report,
        &traced_c(),
        &["leaks"],
    );
    assert_eq!(out.status.code(), Some(0));
    let r = &read_reports(&report)[0];
    let files = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["desc"].as_str().unwrap().ends_with("/hostname"))
        .count();
    assert_eq!(files, 0, "{r}");
    // The fd kept across the exec and its dup2 at 210, the stream, the fd received with
    // SCM_RIGHTS, the thread's.
    assert_eq!(r["suppressed"], 5, "{r}");
}

#[test]
fn exit_status_passes_through() {
    let out = fdguard(&["run", "--at-exit", "--leak-exitcode", "7", "--"])
        .arg(traced_c())
        .args(["exit", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no fd left open at exit"),
        "an empty exit report with --at-exit: {err}"
    );
}

/// The state letter of `/proc/PID/stat` (after the command name).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
}

#[test]
fn signals_and_stops_reach_the_program_and_its_end_is_fdguards() {
    let mut cmd = fdguard(&["run", "--"]);
    cmd.arg(traced_c())
        .arg("signals")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut fdguard = Proc::spawn(&mut cmd);
    let mut input = fdguard.stdin.take().unwrap();
    let mut output = BufReader::new(fdguard.stdout.take().unwrap());
    let mut line = || {
        let mut l = String::new();
        output.read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    let ready = line();
    let pid: u32 = ready.strip_prefix("READY ").unwrap().parse().unwrap();
    assert_ne!(pid, fdguard.id(), "the program is fdguard's child");

    kill(pid, libc::SIGUSR1);
    input.write_all(b"\n").unwrap();
    assert_eq!(line(), "USR1 1", "the handler ran once");

    // A group stop holds (PTRACE_LISTEN) until SIGCONT.
    kill(pid, libc::SIGSTOP);
    wait_until("the program to stop", Duration::from_secs(10), || {
        matches!(state(pid), 'T' | 't')
    });
    input.write_all(b"\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(state(pid), 'T' | 't'), "still stopped");
    kill(pid, libc::SIGCONT);
    assert_eq!(line(), "USR1 1", "SIGSTOP and SIGCONT are no SIGUSR1");

    // SIGTERM to fdguard's pid reaches the program, whose death is fdguard's.
    kill(fdguard.id(), libc::SIGTERM);
    let status = fdguard.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the program is gone"
    );
}

#[test]
fn a_go_programs_leaks_are_its_exit_report() {
    let dir = scratch("trace-go");
    for (cgo, says) in [
        (false, "is a statically linked Go program"),
        (true, "is a Go program"),
    ] {
        let prog = build_go("leaky", &dir, cgo);
        let report = dir.join(format!("exit-{cgo}.json"));
        let out = run_to_exit(&[], &report, &prog, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains(says), "{err}");
        let p = printed(&out);
        let r = check_exit_report(&report, &p);
        let calls = |call: &str| p.expected.values().filter(|c| *c == call).count();
        assert_eq!((calls("openat"), calls("accept4")), (4, 4));
        // The runtime's own fds (its epoll, its wake-up pipe) are the program's too.
        assert!(r["by_kind"]["epoll"].as_u64() >= Some(1), "{r}");
    }
}
