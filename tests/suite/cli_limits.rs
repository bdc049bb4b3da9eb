//! `fdguard limits PID`: a process's limit and where it was set, read from the chain of its
//! ancestors, against processes the test starts with limits of their own.
use crate::common::*;

use std::process::Stdio;

/// A child of `tests/c/lowered_limit.c`, whose parent lowered its own limit to 100:200 before
/// forking it: the chain lists the child, then the parent, then the test, and the parent is
/// where the limit was set.
#[test]
fn the_parent_that_lowered_its_limit_is_the_origin() {
    let dir = scratch("limits-lowered");
    let prog = build_c("lowered_limit", &dir, &["-O1"]);
    let mut parent = Proc::spawn(command(&prog).stdin(Stdio::piped()).stdout(Stdio::piped()));
    let line = parent.first_line();
    let child: u32 = line.trim().strip_prefix("child ").unwrap().parse().unwrap();
    let out = succeeds(fdguard(&["limits", "--json", &child.to_string()]));
    let j: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(j["fdguard"], 1);
    assert_eq!(j["limit"]["soft"], 100, "{j}");
    assert_eq!(j["limit"]["hard"], 200, "{j}");
    let chain = j["chain"].as_array().unwrap();
    let link = |i: usize| (chain[i]["pid"].as_u64().unwrap() as u32, &chain[i]);
    assert_eq!(link(0).0, child, "the process first: {j}");
    assert_eq!(link(1).0, parent.id(), "then its parent: {j}");
    for i in [0, 1] {
        assert_eq!(
            (link(i).1["soft"].as_u64(), link(i).1["hard"].as_u64()),
            (Some(100), Some(200))
        );
        assert_eq!(link(i).1["comm"], "lowered_limit");
    }
    assert_eq!(link(2).0, std::process::id(), "then the test: {j}");
    assert_ne!(link(2).1["soft"], 100);
    assert_eq!(j["origin"]["pid"], parent.id(), "{j}");
    assert_eq!(j["origin"]["comm"], "lowered_limit");
    assert_eq!(j["origin"]["how"], "set");
    assert!(
        j["fix"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("now: prlimit --pid {child} --nofile=200:200")),
        "{j}"
    );

    let text = succeeds(fdguard(&["limits", &child.to_string()]));
    assert!(
        text.contains(&format!(
            "set in pid {} (lowered_limit): the nearest ancestor",
            parent.id()
        )),
        "{text}"
    );
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("<- set here"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(
        marked[0].trim_start().starts_with(&parent.id().to_string()),
        "{text}"
    );
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    let err = fails_with(fdguard(&["limits", "999999999"]), 2);
    assert!(err.contains("no process with pid 999999999"), "{err}");
    let err = fails_with(fdguard(&["limits", "0"]), 2);
    assert!(err.contains("not a process id"), "{err}");
}

/// A Go program (tests/go/leak_three_ways leaking nothing, waiting on stdin) started with
/// 100:200: Go (1.19 and later) raises its soft limit to the hard one at start, so the program
/// itself is where its limit was set, and `limits` says why.
#[test]
fn a_go_program_that_raised_its_own_soft_limit_is_its_own_origin() {
    let dir = scratch("limits-go");
    let prog = build_go("leak_three_ways", &dir, false);
    let mut go = Proc::spawn(
        command(require("prlimit"))
            .arg("--nofile=100:200")
            .arg(&prog)
            .args(["127.0.0.1:1", "http://127.0.0.1:1/", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    assert_eq!(go.first_line(), "CHECKPOINT leaked\n");
    let pid = go.id().to_string();
    let j: Value = serde_json::from_str(&succeeds(fdguard(&["limits", "--json", &pid]))).unwrap();
    assert_eq!(j["limit"]["soft"], 200, "{j}");
    assert_eq!(j["limit"]["hard"], 200, "{j}");
    assert_eq!(j["runtime"], "go");
    assert_eq!(j["raises_soft"], true);
    assert_eq!(j["origin"]["pid"], go.id(), "{j}");
    assert_eq!(j["origin"]["how"], "set");
    assert_eq!(j["chain"][1]["pid"], std::process::id());
    let notes = j["notes"].to_string();
    assert!(notes.contains("Go 1.19 and later"), "{notes}");
}
