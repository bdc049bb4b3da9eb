//! python3 (sockets on loopback with a server thread, subprocess with pipes and close_fds,
//! pass_fds, tempfile, open/read/write, listdir, scandir, os.pipe) prints exactly the same
//! under fdguard as without it, exits the same, and fdguard prints nothing on stderr. With all
//! that open, fdguard's report equals /proc/PID/fd exactly.
use crate::common::*;

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/workload.py")
}

fn python() -> Command {
    let mut c = command("python3");
    c.arg(script());
    c
}

#[test]
fn python_program_behaves_the_same_under_fdguard() {
    let dir = scratch("python");
    let without = python().env_remove("LD_PRELOAD").output().expect("python3");
    let with = python()
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_REPORT", dir.join("report.jsonl"))
        .output()
        .expect("python3");
    let (out_without, out_with) = (
        String::from_utf8_lossy(&without.stdout),
        String::from_utf8_lossy(&with.stdout),
    );
    assert!(
        without.status.success(),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    assert!(out_without.ends_with("done\n"), "{out_without}");
    assert_eq!(out_with, out_without);
    assert_eq!(with.status.code(), without.status.code());
    assert_eq!(
        String::from_utf8_lossy(&with.stderr),
        "",
        "stderr under fdguard"
    );
    // Nothing made fdguard write a report on its own.
    assert!(read_reports(&dir.join("report.jsonl")).is_empty());
}

#[test]
fn python_reports_match_proc_exactly() {
    let dir = scratch("python-report");
    let report = dir.join("report.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut cmd = python();
    cmd.env("LD_PRELOAD", lib_path())
        .env("FDGUARD_REPORT", &report)
        .env("FDGUARD_FORMAT", "json")
        .env("PY_CHECKPOINT", "1");
    stderr_to(&mut cmd, &stderr);
    let mut s = Stepper::spawn(cmd, &report);
    let (name, _) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "python");
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_exact(&r, &kernel);
    // The fds the script holds at the checkpoint, each with the call that made it.
    let calls: Vec<&str> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["call"].as_str().unwrap())
        .collect();
    for call in ["socket", "pipe2"] {
        assert!(calls.contains(&call), "no {call} in {calls:?}");
    }
    assert!(
        calls.iter().any(|c| c.starts_with("open")),
        "no open in {calls:?}"
    );
    s.resume();
    let out = s.finish();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("done\n"));
    assert_eq!(std::fs::read_to_string(&stderr).unwrap(), "");
}
