//! Programs fdguard cannot see into say so: statically linked ones (`fdguard run`, wrapped by
//! scripts/fdguard-run, traces them, since LD_PRELOAD never loads anything there) and Go ones
//! (the library says so when it loads: the Go runtime makes its system calls without libc).
use crate::common::*;

use std::process::Command;

fn fdguard_run() -> Command {
    // The script wraps `fdguard run`: the command next to the library must be built.
    cli_path();
    let mut c = command(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fdguard-run"));
    c.env("FDGUARD_LIB", lib_path());
    c
}

#[test]
fn fdguard_run_traces_a_static_binary_and_preloads_a_dynamic_one() {
    let dir = scratch("fdguard-run");
    let stat = build_c("hello", &dir, &["-O1", "-static"]);
    let out = fdguard_run()
        .arg(&stat)
        .env("FDGUARD_AT_EXIT", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("is statically linked: LD_PRELOAD cannot see its fds, so fdguard traces it"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(
        err.contains("fdguard: no fd left open at exit in pid "),
        "the tracer's exit report: {err}"
    );

    let dynamic = dir.join("hello-dyn");
    let ok = command("cc")
        .args(["-O1", "-o"])
        .arg(&dynamic)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/hello.c"))
        .status()
        .unwrap();
    assert!(ok.success());
    let out = fdguard_run()
        .arg(&dynamic)
        .env("FDGUARD_AT_EXIT", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fdguard: no fd left open at exit in pid "),
        "fdguard ran (its exit report): {err}"
    );
}

#[test]
fn a_go_program_is_named_as_such_once() {
    let dir = scratch("go-marker");
    let prog = build_c("go_marker", &dir, &["-O1"]);
    let out = command(&prog)
        .env("LD_PRELOAD", lib_path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("is a Go program").count(), 1, "{err}");
    // An ordinary C program gets no such line.
    let plain = build_c("hello", &dir, &["-O1"]);
    let out = command(&plain)
        .env("LD_PRELOAD", lib_path())
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
