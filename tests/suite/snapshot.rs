//! Reports taken while the program's fds change under them are true: a storm of report
//! requests (one every millisecond) on eight threads churning every kind of fd leaves no row
//! whose creating call contradicts what the kernel says the fd is, and no row with another
//! fd's path; a number reused behind fdguard's back (raw system calls) is a missed close; the
//! report processes are few enough that the program's own `fork` never fails for them.
use crate::common::pace::slowdown;
use crate::common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long the storm lasts.
const SECONDS: u64 = 10;

/// The kind a row's creating call makes, when the call alone says (`dup` and `fcntl` copy
/// whatever they are given).
fn kind_made_by(call: &str) -> Option<&'static str> {
    Some(match call {
        "socket" | "socketpair" | "accept" | "accept4" => "socket",
        "pipe" | "pipe2" => "pipe",
        "open" | "fopen" => "file",
        "eventfd" => "eventfd",
        "epoll_create1" => "epoll",
        "timerfd_create" => "timerfd",
        _ => return None,
    })
}

/// The reports in `path` once no report process writes any more (they may finish after the
/// program).
fn settled_reports(path: &std::path::Path) -> Vec<Value> {
    let mut last = usize::MAX;
    let deadline = Instant::now() + REPORT_WAIT;
    loop {
        let n = report_lines(path).len();
        if n == last || Instant::now() > deadline {
            return read_reports(path);
        }
        last = n;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The storm program under fdguard for `SECONDS` (longer on a slower machine, up to three
/// times: its report processes get a share of what the nine busy threads leave) with `extra`
/// after the seconds, JSON reports to a file, asked for a report every millisecond until it is
/// done; returns its lines after READY and the reports.
fn storm(name: &str, wrap: &[&str], extra: &[&str]) -> (Vec<String>, Vec<Value>) {
    // Nine busy threads: never beside the tests that measure time or CPU.
    let _alone = one_at_a_time();
    let seconds = (SECONDS as f64 * slowdown().min(3.0)).ceil() as u64;
    let seconds_arg = seconds.to_string();
    let args: Vec<&str> = std::iter::once(seconds_arg.as_str())
        .chain(extra.iter().copied())
        .collect();
    let dir = scratch(name);
    let prog = build_c_once("storm", &["-O1", "-g"]);
    let report = report_path(&dir);
    let mut cmd = match wrap.split_first() {
        None => command(&prog),
        Some((first, rest)) => {
            // Another user writes the reports here.
            let open = std::os::unix::fs::PermissionsExt::from_mode(0o777);
            std::fs::set_permissions(&dir, open).unwrap();
            let mut c = command(first);
            c.args(rest).arg(&prog);
            c
        }
    };
    cmd.arg(&dir)
        .args(args)
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_REPORT", &report)
        .env("FDGUARD_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    let mut p = Proc::spawn(&mut cmd);
    let mut out = BufReader::new(p.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n");
    let pid = p.id();
    let deadline = Instant::now() + Duration::from_secs(seconds) + WATCHDOG;
    while p.try_wait().unwrap().is_none() && Instant::now() < deadline {
        try_kill(pid, libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(1));
    }
    let lines: Vec<String> = out.lines().map(Result::unwrap).collect();
    assert!(p.wait().unwrap().success(), "{lines:?}");
    let err = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(err.is_empty(), "{err}");
    (lines, settled_reports(&report))
}

#[test]
fn reports_during_a_storm_of_churn_and_requests_are_true() {
    let (lines, reports) = storm("snapshot-storm", &[], &[]);
    assert!(
        lines.last().is_some_and(|l| l.starts_with("done ")),
        "{lines:?}"
    );
    assert!(reports.len() >= 2, "{} reports", reports.len());
    let (mut rows, mut untracked, mut coalesced) = (0, 0, 0);
    let mut problems: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reports {
        coalesced += r["coalesced"].as_u64().unwrap();
        let fds = r["fds"].as_array().unwrap();
        assert_eq!(r["open"].as_u64(), Some(fds.len() as u64));
        let numbers: Vec<i64> = fds.iter().map(|f| f["fd"].as_i64().unwrap()).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "each fd once: {numbers:?}"
        );
        for f in fds {
            rows += 1;
            let (call, kind, desc) = (
                f["call"].as_str().unwrap(),
                f["kind"].as_str().unwrap(),
                f["desc"].as_str().unwrap(),
            );
            if call == "untracked" {
                untracked += 1;
            }
            if kind_made_by(call).is_some_and(|k| k != kind) {
                *problems.entry(format!("{call} on a {kind}")).or_default() += 1;
            }
            // The storm's files are opened by absolute path: a row shows the path given and,
            // were it another fd's, the kernel's beside it.
            if kind == "file" && desc.contains(" (") {
                *problems
                    .entry(format!("another fd's path: {desc}"))
                    .or_default() += 1;
            }
        }
    }
    println!(
        "{} reports, {rows} rows, {untracked} untracked, {coalesced} requests coalesced",
        reports.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        coalesced > 0,
        "requests found the report processes busy and were answered"
    );
    assert!(
        untracked * 2 < rows,
        "most rows keep their creator ({untracked} of {rows} untracked)"
    );
}

/// `socket()` gives a number; a raw close and a raw `openat` reuse it for a file: the report
/// lists the file, without the socket's creator, and counts the close it never saw.
#[test]
fn a_number_reused_behind_fdguards_back_is_a_missed_close() {
    let dir = scratch("snapshot-reuse");
    let prog = build_c_once("storm", &["-O1", "-g"]);
    let report = report_path(&dir);
    let mut cmd = guarded(&prog, &report);
    cmd.arg(&dir).args(["0", "reuse"]);
    let mut s = Stepper::spawn(cmd, &report);
    let (name, lines) = s.next_checkpoint().unwrap();
    assert_eq!(name, "reused");
    let fd: i64 = value_after(&lines, "FD ");
    let r = s.report_now();
    assert_matches_kernel(&r, &proc_fds(s.pid()), &[fd]);
    let row = fd_row(&r, fd).unwrap();
    assert_eq!(
        (
            row["call"].as_str(),
            row["kind"].as_str(),
            row["desc"].as_str()
        ),
        (Some("untracked"), Some("file"), Some("/etc/group"))
    );
    assert_eq!(r["missed_closes"], 1, "{r}");
    s.resume();
    assert!(s.finish().status.success());
}

/// The storm as an unprivileged user under a process limit with room for the program's own
/// threads and children and a few more: every `fork` of the program succeeds, however many
/// reports are asked for (report processes were once made per request, hundreds at a time).
#[test]
fn report_processes_never_take_the_programs_last_processes() {
    require("setpriv");
    let (lines, reports) = storm(
        "snapshot-nproc",
        &[
            "prlimit",
            "--nproc=24:24",
            "setpriv",
            "--reuid=65000",
            "--regid=65000",
            "--clear-groups",
        ],
        &["fork"],
    );
    let forks = lines
        .iter()
        .find(|l| l.starts_with("forks "))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let words: Vec<&str> = forks.split_whitespace().collect();
    let (made, failed): (u64, u64) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    assert!(
        made > 100 && !reports.is_empty(),
        "{forks}, {} reports",
        reports.len()
    );
    assert_eq!(failed, 0, "{forks}");
}
