//! Process-level behaviour (`tests/c/process.c`, `ctor_main.c`): vfork children, posix_spawn
//! with file actions, exec into a new image, daemons that close every fd, fds opened by library
//! constructors before main, and fd numbers up to RLIMIT_NOFILE. At every checkpoint the report
//! equals /proc/PID/fd exactly and matches the program's EXPECT/GONE lines.
use crate::common::*;

use std::path::PathBuf;

fn process_program() -> PathBuf {
    build_c_once("process", &["-O1", "-g"])
}

/// Runs one scenario of process.c; returns its non-protocol output lines.
fn scenario(name: &str, expected_checkpoints: &[&str]) -> Vec<String> {
    let dir = scratch(&format!("process-{name}"));
    let report = dir.join("report.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut cmd = guarded(&process_program(), &report);
    cmd.arg(name).arg(&dir);
    stderr_to(&mut cmd, &stderr);
    let p = run_protocol(cmd, &report);
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        p.output.status.success(),
        "{name}: {:?}\n{err}",
        p.output.status
    );
    assert!(err.is_empty(), "{name}: unexpected stderr:\n{err}");
    assert_eq!(p.checkpoints, expected_checkpoints);
    assert!(p.checked >= 4, "{name}: only {} expectations", p.checked);
    p.lines
}

/// The vfork child closes, dup2s and opens fds, then execs /bin/true: the parent's report is
/// unchanged and the parent keeps tracking afterwards.
#[test]
fn vfork_child_that_execs_does_not_touch_the_parents_table() {
    scenario("vfork", &["before", "after-vfork", "released"]);
}

#[test]
fn vfork_child_that_exits_does_not_touch_the_parents_table() {
    scenario("vfork_exit", &["before", "after-vfork", "released"]);
}

/// posix_spawn's file actions run in a child sharing the parent's memory (glibc clones with
/// CLONE_VM): the parent's report must not change. The spawned /bin/cat loads its own fdguard.
#[test]
fn posix_spawn_with_file_actions_leaves_the_parents_report_exact() {
    scenario("posix_spawn", &["spawned", "released"]);
}

/// After exec the new image (same pid) runs its own copy of fdguard: its report works, lists
/// the fds that survived exec as inherited, and no longer the close-on-exec one.
#[test]
fn exec_into_a_new_image_reports_inherited_fds() {
    scenario("exec", &["before-exec", "new-image", "released"]);
}

#[test]
fn daemon_closing_every_fd_in_a_loop_then_opening_new_ones() {
    scenario("daemon_loop", &["before", "closed-all", "released"]);
}

#[test]
fn daemon_calling_closefrom_then_opening_new_ones() {
    scenario("daemon_closefrom", &["before", "closed-all", "released"]);
}

#[test]
fn daemon_calling_close_range_to_the_top_then_opening_new_ones() {
    scenario("daemon_close_range", &["before", "closed-all", "released"]);
}

/// A library constructor opens a file before main; fdguard finds it when it starts and reports
/// it as inherited; closing it later removes it.
#[test]
fn fd_opened_by_a_library_constructor_is_reported_as_inherited() {
    let dir = scratch("ctor");
    build_c_shared("ctor_lib", "libfdgctor.so", &dir, &["-g"]);
    let lib_dir = dir.to_str().unwrap();
    let prog = build_c_linked(
        "ctor_main",
        &dir,
        &["-g"],
        &[
            &format!("-L{lib_dir}"),
            "-lfdgctor",
            &format!("-Wl,-rpath,{lib_dir}"),
        ],
    );
    let opened = dir.join("opened-by-constructor.txt");
    std::fs::write(&opened, "x").unwrap();
    let report = dir.join("report.jsonl");
    let mut cmd = guarded(&prog, &report);
    cmd.env("CTOR_PATH", &opened);
    let p = run_protocol(cmd, &report);
    assert!(p.output.status.success(), "{:?}", p.output.status);
    assert_eq!(p.checkpoints, ["loaded", "released"]);
    assert_eq!(p.checked, 2);
}

/// RLIMIT_NOFILE 256: dup2 onto 255 and open until EMFILE. Reports go to stderr, which is read
/// here. The program prints the same lines with and without fdguard, and the EMFILE report names
/// the call that failed. (Threshold reports are off here to count the EMFILE report alone; the
/// test below runs the same program with them on.)
#[test]
fn fds_up_to_the_limit_are_reported_exactly_and_the_program_is_unaffected() {
    let dir = scratch("process-limit");
    let reports = dir.join("stderr.jsonl");
    let mut cmd = guarded(&process_program(), &reports);
    cmd.env("FDGUARD_REPORT", "stderr")
        .env("FDGUARD_THRESHOLD", "0")
        .arg("limit")
        .arg(&dir);
    stderr_to(&mut cmd, &reports);
    let p = run_protocol(cmd, &reports);
    assert!(p.output.status.success(), "{:?}", p.output.status);
    assert_eq!(p.checkpoints, ["top", "full", "released"]);
    let opened = p.lines.iter().find(|l| l.starts_with("OPENED")).unwrap();
    assert!(opened.ends_with("errno=EMFILE"), "{opened}");
    let emfile: Vec<Value> = read_reports(&reports)
        .into_iter()
        .filter(|r| r["reason"] == "emfile")
        .collect();
    assert_eq!(emfile.len(), 1, "one report for running out of fds");
    assert_eq!(emfile[0]["trigger_call"], "open", "the call that failed");
    assert_eq!(emfile[0]["open"], 256);

    assert_eq!(limit_run_without_fdguard(), std::slice::from_ref(opened));
}

/// The OPENED line of process.c's limit scenario, run without fdguard.
fn limit_run_without_fdguard() -> Vec<String> {
    let dir = scratch("process-limit-plain");
    let mut cmd = plain(&process_program());
    cmd.arg("limit").arg(&dir);
    let mut s = Stepper::spawn(cmd, &dir.join("none"));
    let mut lines = Vec::new();
    while let Some((_, l)) = s.next_checkpoint() {
        lines.extend(l.into_iter().filter(|l| l.starts_with("OPENED")));
        s.resume();
    }
    assert!(s.finish().status.success());
    lines
}

/// With RLIMIT_NOFILE already low when the program starts, the threshold report (80%) fires while
/// the program is still opening fds. fdguard must not take any fd number then (a copy of the
/// process writes reports), or the program would hit EMFILE one fd early, or find a hole.
#[test]
fn threshold_report_near_the_limit_does_not_take_the_programs_fds() {
    use std::os::unix::process::CommandExt;
    let want = limit_run_without_fdguard();
    for i in 0..20 {
        let dir = scratch(&format!("process-limit-threshold-{i}"));
        let mut cmd = guarded(&process_program(), &dir.join("r.jsonl"));
        cmd.env("FDGUARD_REPORT", "stderr").arg("limit").arg(&dir);
        stderr_to(&mut cmd, &dir.join("stderr.jsonl"));
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let rl = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
                Ok(())
            });
        }
        let mut s = Stepper::spawn(cmd, &dir.join("r.jsonl"));
        let mut got = Vec::new();
        while let Some((_, l)) = s.next_checkpoint() {
            got.extend(l.into_iter().filter(|l| l.starts_with("OPENED")));
            s.resume();
        }
        assert!(s.finish().status.success());
        assert_eq!(got, want, "run {i}");
    }
}
