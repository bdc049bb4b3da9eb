//! The variadic mode argument of `open`, `open64`, `openat`, `openat64`, `creat`, `creat64`
//! and `O_TMPFILE` reaches the kernel intact: files get exactly `mode & ~umask`, with and
//! without fdguard, built plain and fortified.
use crate::common::*;

use std::path::Path;

/// Runs `modes DIR UMASK` and returns its output lines.
fn modes(mut cmd: std::process::Command, dir: &Path, umask: u32) -> Vec<String> {
    let out = cmd
        .arg(dir)
        .arg(format!("{umask:o}"))
        .output()
        .expect("run modes");
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// What modes.c must print under `umask`.
fn expected(umask: u32, tmpfile_skipped: bool) -> Vec<String> {
    let m = 0o640 & !umask;
    let mut v: Vec<String> = [
        "open",
        "open64",
        "openat",
        "openat64",
        "creat",
        "creat64",
        "open computed flags",
    ]
    .iter()
    .map(|c| format!("{c} {m:04o}"))
    .collect();
    // Every bit of the mode (setuid, setgid, sticky) is passed through as given; the tests run
    // as root, who may set them all.
    v.push(format!("open 07777 {:04o}", 0o7777 & !umask));
    if !tmpfile_skipped {
        v.push(format!("O_TMPFILE {m:04o}"));
    }
    v
}

fn check(flags: &[&str], name: &str) {
    let prog = build_c_once("modes", flags);
    for umask in [0o000, 0o022, 0o077] {
        let plain_dir = scratch(&format!("modes-{name}-{umask:o}-plain"));
        let guarded_dir = scratch(&format!("modes-{name}-{umask:o}-guarded"));
        let without = modes(plain(&prog), &plain_dir, umask);
        let report = guarded_dir.join("report.jsonl");
        let with = modes(guarded(&prog, &report), &guarded_dir, umask);
        let skipped = without.iter().any(|l| l.starts_with("SKIP"));
        if skipped {
            eprintln!("{}", without.last().unwrap());
        }
        assert_eq!(
            without,
            expected(umask, skipped),
            "without fdguard, umask {umask:o}"
        );
        assert_eq!(with, without, "with fdguard, umask {umask:o}");
    }
}

#[test]
fn created_files_get_the_requested_mode_under_every_umask() {
    check(&["-O0", "-g"], "O0");
}

#[test]
fn created_files_get_the_requested_mode_in_a_fortified_build() {
    check(&["-O2", "-D_FORTIFY_SOURCE=2", "-g"], "fortified");
}
