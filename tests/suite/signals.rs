//! Signals: a storm of report requests while four threads churn fds (every report arrives, each
//! is valid JSON, the program neither deadlocks nor crashes), and fdguard never takes a signal
//! the program waits for.
use crate::common::*;

use std::time::{Duration, Instant};

const SIGNALS: usize = 300;

/// One SIGUSR2 at a time, each answered by a report before the next, while the fds change as
/// the reports are made.
#[test]
fn a_storm_of_report_signals_during_churn_gets_every_report() {
    let prog = build_c_once("signals", &["-O1", "-g"]);
    let dir = scratch("signal-storm");
    let report = dir.join("report.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut cmd = guarded(&prog, &report);
    cmd.arg("storm").arg(&dir);
    stderr_to(&mut cmd, &stderr);
    let mut s = Stepper::spawn(cmd, &report);
    let (name, _) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "churning");
    let pid = s.pid();
    let start = Instant::now();
    for _ in 0..SIGNALS {
        // One signal, then wait for its report (report_now counts the lines of the file).
        let r = s.report_now();
        // Internally consistent while the fds change: sorted, no fd twice, counts agree.
        let fds: Vec<i64> = r["fds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fd"].as_i64().unwrap())
            .collect();
        assert!(
            fds.windows(2).all(|w| w[0] < w[1]),
            "fds sorted, unique: {fds:?}"
        );
        assert_eq!(r["open"].as_u64(), Some(fds.len() as u64));
    }
    // Every line of the file is one valid report, one per signal, all from the program.
    let all = read_reports(&report);
    assert_eq!(all.len(), SIGNALS);
    assert!(
        all.iter()
            .all(|r| r["pid"] == pid && r["reason"] == "signal")
    );
    eprintln!("{SIGNALS} reports in {:?}", start.elapsed());
    s.resume();
    let (name, lines) = s.next_checkpoint().expect("stopped checkpoint");
    assert_eq!(name, "stopped");
    assert!(
        lines.iter().any(|l| l.starts_with("ITERATIONS")),
        "{lines:?}"
    );
    // Once the churn is over the table is exact again.
    let kernel = proc_fds(pid);
    let r = s.report_now();
    assert_exact(&r, &kernel);
    s.resume();
    let out = s.finish();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert!(err.is_empty(), "stderr:\n{err}");
}

/// SIGUSR1 is blocked in every thread of the program and main waits for it with sigwait. It is
/// sent while main is not yet in sigwait: it must stay pending for the process (had fdguard
/// started a thread that left it unblocked, the kernel would hand it to that thread, and its
/// default action would kill the program), and then reach sigwait.
#[test]
fn fdguard_does_not_steal_a_signal_the_program_waits_for() {
    let prog = build_c_once("signals", &["-O1", "-g"]);
    let dir = scratch("sigwait");
    let report = dir.join("report.jsonl");
    let mut cmd = guarded(&prog, &report);
    cmd.arg("sigwait");
    let mut s = Stepper::spawn(cmd, &report);
    let (name, _) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "blocked");
    let pid = s.pid();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert_eq!(threads, 3, "main and two workers: fdguard starts no thread");
    kill(pid, libc::SIGUSR1);
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    wait_until(
        "SIGUSR1 pending for the process",
        Duration::from_secs(10),
        || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let pending = status
                .lines()
                .find_map(|l| l.strip_prefix("ShdPnd:"))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap());
            assert!(pending.is_some(), "the program died: {status}");
            pending.unwrap() & usr1 != 0
        },
    );
    s.resume();
    let out = s.finish();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "GOT SIGUSR1\n");
    assert!(out.status.success(), "{:?}", out.status);
}

/// A daemon-like loop of closefrom(3) / close_range(3, ~0U, 0) while reports are being written:
/// the range calls must never close an fd of fdguard's (fdguard would then write into, or close,
/// the fd the program opens next on that number). fdguard creates no fd in the program's
/// process while reporting (a report child does the work), so there is nothing for the loop to
/// hit.
#[test]
fn closefrom_during_reports_leaves_the_programs_fds_alone() {
    let prog = build_c_once("signals", &["-O1", "-g"]);
    let dir = scratch("closefrom-race");
    let report = dir.join("report.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut cmd = guarded(&prog, &report);
    cmd.arg("closefrom").arg(dir.join("program.dat"));
    stderr_to(&mut cmd, &stderr);
    let mut child = Proc::spawn(
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "LOOPING\n");
    let pid = child.id();
    // Paced signals (not one report at a time: a lost report must not hang the test).
    for _ in 0..SIGNALS {
        kill(pid, libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(3));
    }
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(rest.contains("CLOSED BY SOMEONE ELSE 0\n"), "{rest}");
    assert!(rest.contains("WRITTEN BY SOMEONE ELSE 0\n"), "{rest}");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(err, "", "fdguard's stderr");
    // Every report written is whole and lists at least stdin, stdout and stderr. Copies of the
    // process write them and may still be at it when the program is gone (on a loaded machine).
    wait_reports(&report, 1, REPORT_WAIT);
    let reports = read_reports(&report);
    for r in &reports {
        assert!(r["open"].as_u64().unwrap() >= 3, "{r}");
    }
}

/// Reports are written by processes fdguard copies from the program: the program must see no
/// SIGCHLD from them and have no child left, live or zombie, for its `waitpid(-1, __WALL)`.
/// A subreaper (or PID 1) would inherit an orphaned copy: there fdguard makes its copies as
/// children without an exit signal, which the program's plain `waitpid(-1)` does not see.
#[test]
fn report_processes_are_no_children_of_the_program() {
    let prog = build_c_once("reaper", &["-O1", "-g"]);
    for mode in ["plain", "subreaper"] {
        let dir = scratch(&format!("reaper-{mode}"));
        let report = dir.join("report.jsonl");
        let stderr = dir.join("stderr.txt");
        let mut cmd = guarded(&prog, &report);
        cmd.arg(mode);
        stderr_to(&mut cmd, &stderr);
        let mut s = Stepper::spawn(cmd, &report);
        let (name, _) = s.next_checkpoint().expect("checkpoint");
        assert_eq!(name, "reporting");
        let kernel = proc_fds(s.pid());
        for _ in 0..3 {
            assert_exact(&s.report_now(), &kernel);
        }
        s.resume();
        let out = s.finish();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("SIGCHLD 0\n"), "{mode}: {stdout}");
        assert!(stdout.contains("WAITPID -1 ECHILD\n"), "{mode}: {stdout}");
        assert!(out.status.success(), "{mode}: {:?}", out.status);
        assert_eq!(std::fs::read_to_string(&stderr).unwrap_or_default(), "");
    }
}

/// Under a sandbox that forbids making processes, no report can be written by a copy: fdguard
/// says so once (however many signals), the program goes on untouched, and the exit report is
/// still written, in the program's process, on stderr, without debug info.
#[test]
fn without_clone_reports_are_said_lost_once_and_the_exit_report_still_comes() {
    let prog = build_c_once("no_clone", &["-O1", "-g"]);
    let dir = scratch("no-clone");
    let report = dir.join("report.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut cmd = guarded(&prog, &report);
    cmd.env("FDGUARD_AT_EXIT", "1")
        .env("FDGUARD_FORMAT", "text");
    stderr_to(&mut cmd, &stderr);
    let mut s = Stepper::spawn(cmd, &report);
    let (name, _) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "sandboxed");
    let pid = s.pid();
    let before = proc_fds(pid);
    for _ in 0..3 {
        kill(pid, libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proc_fds(pid), before, "fdguard took no fd");
    s.resume();
    let out = s.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    let leaked: i64 = value_after(stdout.lines(), "LEAKED ");
    let said = "fdguard: cannot make a report process (EPERM)";
    assert_eq!(err.matches(said).count(), 1, "said once:\n{err}");
    // The file was created at load (to check it can be written), and stays empty.
    assert_eq!(std::fs::read_to_string(&report).unwrap_or_default(), "");
    // The exit report, made here: the leaked fd, with its stack as module + offset.
    let exit = err
        .split(&format!("=={pid}== fdguard: "))
        .find(|r| r.contains("reason: exit"))
        .unwrap_or_else(|| panic!("no exit report:\n{err}"));
    assert!(
        exit.contains(&format!(" {leaked}  file")) && exit.contains("/dev/null"),
        "{exit}"
    );
    assert!(
        exit.contains("no_clone+0x"),
        "module + offset frames:\n{exit}"
    );
}

/// A report asked for while another thread is inside `dlopen` (which holds the loader lock
/// while the plugin's constructor runs) is made all the same, and names the stripped plugin's
/// exported function from its dynamic symbol table: the report process takes no loader lock
/// (a copy of a lock held by a thread that does not exist there would never be released).
#[test]
fn a_report_during_dlopen_in_another_thread_is_made_and_named() {
    let dir = scratch("dlopen-report");
    let plugin = build_c_shared("plugin", "libfdgplugin.so", &dir, &["-O1", "-s"]);
    let prog = build_c_linked("dlopen_main", &dir, &["-O1", "-g"], &["-lpthread"]);
    let report = dir.join("report.jsonl");
    let mut cmd = guarded(&prog, &report);
    cmd.arg(&plugin);
    let mut s = Stepper::spawn(cmd, &report);
    let (name, lines) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "in_dlopen");
    let fd: i64 = value_after(&lines, "PLUGIN_FD ");
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_exact(&r, &kernel);
    let row = fd_row(&r, fd).expect("the plugin's fd");
    let stack = stack_by_id(&r, &row["stack"]);
    assert_eq!(
        functions(&stack).first().map(String::as_str),
        Some("plugin_open"),
        "{stack}"
    );
    s.resume();
    assert_eq!(
        s.next_checkpoint().map(|(n, _)| n).as_deref(),
        Some("loaded")
    );
    s.resume();
    assert!(s.finish().status.success());
}
