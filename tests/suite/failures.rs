//! Failing calls return the same value and set the same errno with fdguard as without it:
//! `tests/c/failures.c` prints one line per case (ENOENT, EBADF, EEXIST, EINVAL, ENOTDIR,
//! ENOTSOCK, ..., and every creating call at EMFILE under a lowered RLIMIT_NOFILE), and the two
//! runs must print the same lines.
use crate::common::*;

use std::process::Output;

fn run(mut cmd: std::process::Command) -> Output {
    let out = cmd.output().expect("run failures");
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn failing_calls_return_the_same_values_and_errno_with_and_without_fdguard() {
    let prog = build_c_once("failures", &["-O1", "-g"]);
    let without_dir = scratch("failures-plain");
    let with_dir = scratch("failures-guarded");
    let mut cmd = plain(&prog);
    cmd.arg(&without_dir);
    let without = run(cmd);
    let mut cmd = guarded(&prog, &with_dir.join("report.jsonl"));
    cmd.arg(&with_dir);
    let with = run(cmd);

    let without = String::from_utf8(without.stdout).unwrap();
    // The runs use different directories; the output never names them.
    let with = String::from_utf8(with.stdout).unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (without.lines().collect(), with.lines().collect());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "line {} differs (left: without fdguard)", i + 1);
    }
    assert_eq!(a.len(), b.len(), "different number of lines");
    // The program really reached EMFILE and really got the errors it tests for.
    for needle in [
        "errno=ENOENT",
        "errno=EBADF",
        "errno=EEXIST",
        "errno=EINVAL",
        "errno=ENOTDIR",
        "errno=ENOTSOCK",
        "open EMFILE                  ret=-1 errno=EMFILE",
        "accept EMFILE                ret=-1 errno=EMFILE",
        "filled with",
    ] {
        assert!(without.contains(needle), "no {needle:?} in:\n{without}");
    }
}
