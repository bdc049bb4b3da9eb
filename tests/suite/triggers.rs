//! Every report trigger: threshold crossings, EMFILE, exit (with the leak exit code and
//! suppressions), and bad closes.
use crate::common::pace::slowdown;
use crate::common::*;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// The reports with a given reason.
fn with_reason(reports: &[Value], reason: &str) -> usize {
    reports.iter().filter(|r| r["reason"] == reason).count()
}

/// Waits a moment for reports that must *not* come (a report child starts at once, so a
/// quarter second of an idle machine is plenty, widened by how busy it is now), then returns
/// all reports.
fn settle(report: &Path) -> Vec<Value> {
    std::thread::sleep(Duration::from_millis(250).mul_f64(slowdown()));
    read_reports(report)
}

/// Runs a checkpointing program under `prlimit --nofile=soft:hard`.
fn limited(prog: &Path, report: &Path, soft: u32, hard: u32, args: &[&str]) -> Stepper {
    let mut cmd = command("prlimit");
    cmd.arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(prog)
        .args(args)
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_REPORT", report)
        .env("FDGUARD_FORMAT", "json");
    Stepper::spawn(cmd, report)
}

/// The same, a static program under `fdguard run`'s tracer.
fn limited_traced(prog: &Path, report: &Path, soft: u32, hard: u32, args: &[&str]) -> Stepper {
    let mut cmd = command("prlimit");
    cmd.arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(cli_path())
        .args(["run", "--json", "--report"])
        .arg(report)
        .arg("--")
        .arg(prog)
        .args(args);
    Stepper::spawn(cmd, report)
}

#[test]
fn threshold_reports_once_per_crossing_and_again_after_falling_back() {
    let dir = scratch("threshold");
    let prog = build_c("threshold", &dir, &["-O1", "-g"]);
    crossings(limited, &prog, &report_path(&dir));
}

/// The same for a static program under the tracer.
#[test]
fn a_traced_program_gets_the_same_threshold_reports() {
    let dir = scratch("threshold-traced");
    let prog = build_c("threshold", &dir, &["-O1", "-g", "-static"]);
    crossings(limited_traced, &prog, &report_path(&dir));
}

/// 80% of 256 is 204.8: the 205th open fd crosses; re-armed below 70% (179).
fn crossings(start: fn(&Path, &Path, u32, u32, &[&str]) -> Stepper, prog: &Path, report: &Path) {
    let mut s = start(prog, report, 256, 256, &["220", "150"]);
    assert_eq!(s.next_checkpoint().unwrap().0, "high");
    wait_reports(report, 1, REPORT_WAIT);
    let r = settle(report);
    assert_eq!(with_reason(&r, "threshold"), 1, "one report per crossing");
    let first = &r[0];
    assert_eq!(first["limit"]["soft"], 256);
    assert!(first["open"].as_u64().unwrap() >= 205, "{}", first["open"]);
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "low");
    assert_eq!(with_reason(&settle(report), "threshold"), 1);
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "high-again");
    wait_reports(report, 2, REPORT_WAIT);
    assert_eq!(with_reason(&settle(report), "threshold"), 2);
    s.resume();
    assert!(s.finish().status.success());
}

#[test]
fn threshold_follows_a_limit_the_program_sets_itself() {
    let dir = scratch("threshold-setrlimit");
    let prog = build_c("threshold", &dir, &["-O1"]);
    let report = report_path(&dir);
    // The program lowers its own limit to 100 first: 80 open fds must trigger.
    let mut cmd = guarded(&prog, &report);
    cmd.args(["85", "10", "100"]);
    let mut s = Stepper::spawn(cmd, &report);
    assert_eq!(s.next_checkpoint().unwrap().0, "high");
    let r = wait_reports(&report, 1, REPORT_WAIT);
    assert_eq!(r[0]["reason"], "threshold");
    assert_eq!(r[0]["limit"]["soft"], 100);
    s.resume();
    s.next_checkpoint();
    s.resume();
    s.next_checkpoint();
    s.resume();
    assert!(s.finish().status.success());
}

#[test]
fn threshold_zero_turns_it_off() {
    let dir = scratch("threshold-off");
    let prog = build_c("threshold", &dir, &["-O1"]);
    let report = report_path(&dir);
    let mut cmd = guarded(&prog, &report);
    cmd.args(["90", "10", "100"]).env("FDGUARD_THRESHOLD", "0");
    let mut s = Stepper::spawn(cmd, &report);
    assert_eq!(s.next_checkpoint().unwrap().0, "high");
    assert!(settle(&report).is_empty());
    for _ in 0..2 {
        s.resume();
        s.next_checkpoint();
    }
    s.resume();
    assert!(s.finish().status.success());
}

/// Runs exhaust.c (open until EMFILE, then 100 more EMFILEs) under a limit; waits for `reports`
/// reports before the program ends (and a moment for more that must not come).
fn exhaust(
    soft: u32,
    hard: u32,
    env: &[(&str, &str)],
    reports: usize,
) -> (Vec<Value>, String, std::collections::BTreeSet<i64>) {
    let dir = scratch(&format!("exhaust-{soft}-{hard}-{}", env.len()));
    let prog = build_c("exhaust", &dir, &["-O1", "-g"]);
    let report = report_path(&dir);
    let mut cmd = command("prlimit");
    cmd.arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(&prog)
        .arg("100")
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_REPORT", &report)
        .env("FDGUARD_FORMAT", "json")
        .env("FDGUARD_THRESHOLD", "0")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped());
    let mut s = Stepper::spawn(cmd, &report);
    assert_eq!(s.next_checkpoint().unwrap().0, "exhausted");
    let kernel = proc_fds(s.pid());
    wait_reports(&report, 1, REPORT_WAIT);
    let mut err = s.child.stderr.take().expect("piped stderr");
    s.resume();
    // More EMFILEs once the first report is out: a second report only without rate limit.
    assert_eq!(s.next_checkpoint().unwrap().0, "again");
    wait_reports(&report, reports, REPORT_WAIT);
    settle(&report);
    s.resume();
    let out = s.finish();
    assert!(out.status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut err, &mut stderr).unwrap();
    (read_reports(&report), stderr, kernel)
}

#[test]
fn emfile_report_names_the_call_and_is_written_with_no_fd_free() {
    // The report is written by a copy of the process, which drops its copies of the program's
    // fds first: it reaches the file although the program has no fd left.
    let (reports, _, kernel) = exhaust(64, 128, &[], 1);
    let emfile: Vec<_> = reports.iter().filter(|r| r["reason"] == "emfile").collect();
    assert_eq!(
        emfile.len(),
        1,
        "one report per interval, over two bursts: {reports:?}"
    );
    let r = emfile[0];
    assert_eq!(r["trigger_call"], "open");
    assert_eq!(r["trigger_errno"], "EMFILE");
    assert_eq!(r["limit"]["soft"], 64);
    assert_eq!(r["open"].as_u64(), Some(kernel.len() as u64), "{r}");
    // Every fd the program opened (the numbers its environment did not already hold) came from
    // open_one: one stack.
    let opened = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["call"] == "open")
        .count();
    assert!(opened >= 50, "{r}");
    let top = &r["stacks"][0];
    assert_eq!(top["count"].as_u64(), Some(opened as u64), "{top}");
    // Symbolization may have had no fd to read debug info with; module + offset always work,
    // and the exported-symbol fallback still names open_one's caller module.
    let frame = &top["frames"][0];
    assert!(
        frame["module"].as_str().unwrap().ends_with("exhaust"),
        "{frame}"
    );
    assert!(frame["offset"].is_string());
}

#[test]
fn emfile_interval_zero_reports_each_new_burst() {
    // A burst after the first report gets its own report when there is no rate limit (and
    // none with the default 60 s).
    let (reports, _, _) = exhaust(40, 128, &[("FDGUARD_EMFILE_INTERVAL", "0")], 2);
    assert!(with_reason(&reports, "emfile") >= 2, "{}", reports.len());
}

#[test]
fn emfile_report_reaches_the_file_even_without_room_above_the_limit() {
    // soft = hard: no fd number is free anywhere in the program's process. The report is
    // written by a copy of the process with its own fd table, so the file is still written,
    // and nothing goes to stderr.
    let (reports, stderr, kernel) = exhaust(48, 48, &[], 1);
    let emfile: Vec<_> = reports.iter().filter(|r| r["reason"] == "emfile").collect();
    assert_eq!(emfile.len(), 1, "{reports:?}");
    assert_eq!(emfile[0]["open"].as_u64(), Some(kernel.len() as u64));
    assert_eq!(
        functions(&emfile[0]["stacks"][0])[..2],
        ["open_one", "main"]
    );
    assert!(!stderr.contains("fdguard"), "{stderr}");
}

fn two_callers(env: &[(&str, &str)], args: &[&str]) -> (Output, Vec<Value>) {
    let dir = scratch(&format!("exit-{}-{}", env.len(), args.join("")));
    let prog = build_example("two_callers", "two_callers", &dir, &["-O2", "-g"]);
    let report = report_path(&dir);
    let out = guarded(&prog, &report)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out, read_reports(&report))
}

#[test]
fn leaks_at_exit_fail_the_process_with_the_requested_status() {
    let (out, reports) = two_callers(&[("FDGUARD_LEAK_EXITCODE", "7")], &["3", "5"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "opened 8\n",
        "stdout flushed first"
    );
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["reason"], "exit");
    assert_eq!(reports[0]["open"], 8);
}

#[test]
fn no_leaks_means_the_programs_own_status() {
    let (out, reports) = two_callers(&[("FDGUARD_LEAK_EXITCODE", "7")], &["0", "0"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(reports.is_empty(), "LEAK_EXITCODE alone reports only leaks");
    let (out, reports) = two_callers(&[("FDGUARD_AT_EXIT", "1")], &["0", "0"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(reports[0]["open"], 0, "AT_EXIT always reports");
}

/// In text, a report of no leak is one line, which names what `FDGUARD_IGNORE` left out.
#[test]
fn no_leaks_at_exit_is_one_line_of_text() {
    let dir = scratch("exit-text");
    let prog = build_example("two_callers", "two_callers", &dir, &["-O2", "-g"]);
    let out = command(&prog)
        .args(["0", "2"])
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_AT_EXIT", "1")
        .env("FDGUARD_IGNORE", "/dev/*")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let pid: u32 = err
        .strip_prefix("==")
        .and_then(|e| e.split_once("=="))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("a report:\n{err}"));
    assert_eq!(
        err,
        format!(
            "=={pid}== fdguard: no fd left open at exit in pid {pid} ({}); 2 fds left out by \
             FDGUARD_IGNORE\n",
            prog.display()
        )
    );
}

#[test]
fn suppressions_leave_matching_fds_out_of_exit_reports() {
    let env = [
        ("FDGUARD_LEAK_EXITCODE", "7"),
        ("FDGUARD_IGNORE", "load_config, load_cache"),
    ];
    let (out, reports) = two_callers(&env, &["3", "5"]);
    assert_eq!(out.status.code(), Some(0), "everything suppressed");
    assert!(reports.is_empty());

    let env = [("FDGUARD_AT_EXIT", "1"), ("FDGUARD_IGNORE", "/dev/*")];
    let (out, reports) = two_callers(&env, &["3", "5"]);
    assert!(out.status.success());
    let r = &reports[0];
    assert_eq!(
        (r["open"].as_u64(), r["suppressed"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(functions(&r["stacks"][0])[1], "load_config");
}

#[test]
fn double_close_is_reported_with_both_stacks() {
    let dir = scratch("double-close");
    let prog = build_c("double_close", &dir, &["-O1", "-g"]);
    let run = |close_stacks: &str| {
        let mut cmd = command(&prog);
        cmd.env("LD_PRELOAD", lib_path())
            .env("FDGUARD_CLOSE_STACKS", close_stacks)
            .stdin(std::process::Stdio::null());
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let fd: i64 = value_after(stdout.lines(), "fd ");
        (fd, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (fd, text) = run("1");
    assert!(
        text.contains(&format!(
            "fdguard: close({fd}) failed with EBADF: fd {fd} is not open"
        )),
        "{text}"
    );
    let closing = text.find("in cleanup_twice").expect("closing stack");
    let released = text.find("was last released at:").expect("released stack");
    let first = text.find("in first_close").expect("first close");
    assert!(closing < released && released < first, "{text}");

    let (_, text) = run("0");
    assert!(text.contains("in cleanup_twice"), "{text}");
    assert!(text.contains("set FDGUARD_CLOSE_STACKS=1"), "{text}");
}

/// Exit never waits for a report to be written: with the program's stderr a full pipe nobody
/// reads yet, a leaking program still exits, with the status `FDGUARD_LEAK_EXITCODE` asks for
/// (the exit report's verdict comes before its writing), and the report follows in full once the
/// pipe is read. Waiting for the write held such an exit until the report process's 30 s limit.
#[test]
fn exit_does_not_wait_for_a_stalled_stderr() {
    let dir = scratch("exit-stalled");
    let prog = build_example("two_callers", "two_callers", &dir, &["-O2", "-g"]);
    // A pipe holds 64 KiB: the shell fills it before the program starts.
    let mut p = Proc::spawn(
        command("sh")
            .args([
                "-c",
                r#"head -c 65536 /dev/zero >&2; LD_PRELOAD="$1" exec "$2" 3 5"#,
            ])
            .args(["sh".as_ref(), lib_path().as_os_str(), prog.as_os_str()])
            .env("FDGUARD_AT_EXIT", "1")
            .env("FDGUARD_LEAK_EXITCODE", "7")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = p.stderr.take().unwrap();
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(status) = p.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the program did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(7));
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut stderr, &mut all).unwrap();
    let text = String::from_utf8_lossy(&all[65536..]);
    assert!(text.contains("fdguard: 8 "), "{text}");
    assert!(text.ends_with("fdguard: end of report\n"), "{text}");
}
