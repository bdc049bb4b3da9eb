//! Reports of programs under `fdguard run`'s tracer, as in the incidents behind fdguard: a Go
//! program (`tests/go/leak_three_ways`, static, built by the test) leaks files, dialed sockets
//! and unclosed HTTP response bodies, a static C program leaks `fopen` streams from two
//! functions; `fdguard report PID --json` names the function that made each (for Go the
//! sockets `http.Get` dialed from a goroutine net/http started too) and lists exactly the fds
//! `/proc/PID/fd` lists; the exit report lists the leaks.
use crate::common::leaks::{
    assert_files_and_dials_named, assert_host_view_names_leaked_files, assert_named, holder, listed,
};
use crate::common::server::proc_children;
use crate::common::*;

use std::path::Path;

/// Fds each leaking function makes.
const LEAKS: usize = 20;

/// The peer port of a socket row (`desc` is `tcp 127.0.0.1:A -> 127.0.0.1:B ...`).
fn peer_port(row: &Value) -> Option<u16> {
    let desc = row["desc"].as_str()?;
    let (_, peer) = desc.split_once("-> ")?;
    peer.split_whitespace()
        .next()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

/// A traced program at its checkpoint: `fdguard run --json --at-exit --report DIR/exit.json
/// -- ARGS`, the lines it printed, and its report asked with `fdguard report PID --json`
/// (the program is the tracer's child), checked against `/proc/PID/fd`.
struct Traced {
    stepper: Stepper,
    lines: Vec<String>,
    report: Value,
}

fn traced_at_checkpoint(dir: &Path, args: &[&str]) -> Traced {
    let exit = dir.join("exit.json");
    let mut cmd = fdguard(&["run", "--json", "--at-exit", "--report"]);
    cmd.arg(&exit).arg("--").args(args);
    let mut stepper = Stepper::spawn(cmd, &exit);
    let (_, lines) = stepper
        .next_checkpoint()
        .expect("the program reaches its checkpoint");
    let children = proc_children(stepper.pid());
    assert_eq!(
        children.len(),
        1,
        "the tracer runs one program: {children:?}"
    );
    let pid = children[0];
    let asked = succeeds(fdguard(&["report", &pid.to_string(), "--json"]));
    let kernel = proc_fds(pid);
    let report: Value = serde_json::from_str(&asked).unwrap_or_else(|e| panic!("{e}: {asked}"));
    assert_matches_kernel(&report, &kernel, &[]);
    Traced {
        stepper,
        lines,
        report,
    }
}

#[test]
fn static_c_streams_name_the_function_that_opened_them() {
    let dir = scratch("trace-c-streams");
    let prog = build_c("fopen_two_ways", &dir, &["-O1", "-g", "-static"]);
    let Traced {
        mut stepper,
        lines,
        report: r,
    } = traced_at_checkpoint(&dir, &[prog.to_str().unwrap(), &LEAKS.to_string()]);
    assert_named(
        &r,
        "settings streams",
        &listed(&lines, "settings"),
        LEAKS,
        "load_settings",
    );
    assert_named(
        &r,
        "log streams",
        &listed(&lines, "logs"),
        LEAKS,
        "open_logs",
    );
    stepper.resume();
    assert!(stepper.finish().status.success());
}

#[test]
fn go_leaks_name_the_main_function_that_made_them() {
    let dir = scratch("trace-go-leaks");
    let prog = build_go("leak_three_ways", &dir, false);
    let (backend, _backend_conns) = holder(false, LEAKS);
    let (web, _web_conns) = holder(true, LEAKS);
    let web_port: u16 = web.rsplit_once(':').unwrap().1.parse().unwrap();
    let url = format!("http://{web}/");
    let Traced {
        stepper: mut s,
        lines,
        report: r,
    } = traced_at_checkpoint(
        &dir,
        &[prog.to_str().unwrap(), &backend, &url, &LEAKS.to_string()],
    );
    let bodies: Vec<i64> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| peer_port(row) == Some(web_port))
        .map(|row| row["fd"].as_i64().unwrap())
        .collect();
    assert_files_and_dials_named(&r, &lines, LEAKS);
    assert_named(
        &r,
        "HTTP response bodies' sockets",
        &bodies,
        LEAKS,
        "main.fetchStatus",
    );
    let pid = proc_children(s.pid())[0];
    assert_host_view_names_leaked_files(pid, "tracer", listed(&lines, "file").len());

    s.resume();
    let out = s.finish();
    assert!(out.status.success(), "{out:?}");
    let exit = read_reports(&dir.join("exit.json"))
        .into_iter()
        .find(|r| r["reason"] == "exit")
        .expect("an exit report");
    let leaked = report_fds(&exit);
    for fd in listed(&lines, "file").iter().chain(&listed(&lines, "dial")) {
        assert!(
            leaked.contains(fd),
            "fd {fd} leaked, not in the exit report: {exit}"
        );
    }
    // The command's other readers take a traced program's reports as any other.
    let exit_path = dir.join("exit.json");
    let folded = succeeds(fdguard(&[
        "flamegraph",
        "--folded",
        exit_path.to_str().unwrap(),
    ]));
    assert!(
        folded
            .lines()
            .any(|l| l.contains(";main.fetchStatus;") && l.ends_with(&format!(" {LEAKS}"))),
        "{folded}"
    );
    let diff = succeeds(fdguard(&[
        "diff",
        exit_path.to_str().unwrap(),
        exit_path.to_str().unwrap(),
    ]));
    assert!(diff.contains("no stack changed"), "{diff}");
}
