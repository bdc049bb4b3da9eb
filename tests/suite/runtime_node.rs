//! node under a plain `fdguard run`: creation stacks go through libuv and node's C++, V8's
//! builtins, interpreted and JIT-compiled JavaScript, and name the JavaScript function that
//! leaked (`tests/js/leak_two_functions.js`), its script and line.
use crate::common::*;

use std::path::{Path, PathBuf};

/// Fds each leaking function makes: enough for V8 to compile the loop that calls them
/// (`tests/js/leak_two_functions.js`), and few enough to stay below fdguard's threshold report
/// at a soft limit of 1024.
const LEAKS: usize = 250;

/// The JavaScript frames of a stack, as `function script:line`.
fn javascript_frames(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["module"] == "javascript")
        .map(|f| format!("{} {}:{}", f["function"], f["file"], f["line"]))
        .collect()
}

/// Where the frames named `function` are in a stack (the first frame named so).
fn position(functions: &[String], function: &str) -> Option<usize> {
    functions.iter().position(|f| f.starts_with(function))
}

#[test]
fn leaked_fds_name_the_javascript_function_that_made_them() {
    let node = require("node");
    let dir = scratch("node-leaks");
    let report = report_path(&dir);
    let program = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/leak_two_functions.js");
    let leaks = LEAKS.to_string();
    let mut cmd = fdguard(&[
        "run",
        "--json",
        "--report",
        report.to_str().unwrap(),
        "--",
        node.to_str().unwrap(),
        program.to_str().unwrap(),
        dir.to_str().unwrap(),
        &leaks,
    ]);
    let stderr = dir.join("stderr.log");
    stderr_to(&mut cmd, &stderr);
    let mut s = Stepper::spawn(cmd, &report);
    let pid = s.pid();
    let perf_map = PerfMapFile(PathBuf::from(format!("/tmp/perf-{pid}.map")));
    let (_, lines) = s
        .next_checkpoint()
        .expect("the program reaches its checkpoint");
    let kernel = proc_fds(pid);
    let r = s.report_now();
    assert_matches_kernel(&r, &kernel, &[]);
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        said.contains("NODE_OPTIONS gets --perf-basic-prof-only-functions"),
        "run says what it turns on: {said}"
    );

    let script = program.to_str().unwrap();
    let mut named = 0;
    let mut leaked = 0;
    // Each leak site's stacks: interpreted or compiled, it is one place.
    let mut groups: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
        Default::default();
    for line in &lines {
        let Some(rest) = line.strip_prefix("LEAK ") else {
            continue;
        };
        let (what, fd) = rest.split_once(' ').unwrap();
        let fd: i64 = fd.parse().unwrap();
        let row = fd_row(&r, fd).unwrap_or_else(|| panic!("fd {fd} not in the report"));
        let stack = stack_by_id(&r, &row["stack"]);
        let (leaker, native) = match what {
            "file" => ("leakFile", ["uv__fs_open", "uv_fs_open", "node::fs::Open"]),
            _ => (
                "leakSocket",
                ["uv__socket", "uv_pipe_connect", "node::PipeWrap::Connect"],
            ),
        };
        leaked += 1;
        groups
            .entry(leaker)
            .or_default()
            .insert(row["stack"].to_string());
        let js = javascript_frames(&stack);
        if js
            .iter()
            .any(|f| f.starts_with(&format!("\"{leaker}\" \"{script}\":")))
        {
            named += 1;
        }
        // libuv and node's C++ under the system call, in call order, before any JavaScript:
        // the walk did not stop at the first frame.
        let functions = functions(&stack);
        let at: Vec<Option<usize>> = native.iter().map(|n| position(&functions, n)).collect();
        assert!(
            at.windows(2)
                .all(|w| matches!(w, [Some(a), Some(b)] if a < b)),
            "fd {fd}: {native:?} in order in {functions:?}"
        );
        assert!(
            position(&functions, leaker).is_none_or(|js| at.iter().flatten().all(|n| *n < js)),
            "{functions:?}"
        );
    }
    assert_eq!(leaked, 2 * LEAKS, "{lines:?}");
    assert!(
        named * 10 >= leaked * 9,
        "{named} of {leaked} leaked fds' stacks name the function that leaked them: {r}"
    );
    assert!(
        groups.values().all(|stacks| stacks.len() == 1),
        "one group per leak site: {groups:?}"
    );
    // The script's line of each leaking function, as V8 counts it (1-based).
    let source = std::fs::read_to_string(&program).unwrap();
    let line_of = |needle: &str| source.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let file_stack = stack_by_id(
        &r,
        &fd_row(&r, first_leak(&lines, "file")).unwrap()["stack"],
    );
    assert!(
        javascript_frames(&file_stack).contains(&format!(
            "\"leakFile\" \"{script}\":{}",
            line_of("function leakFile")
        )),
        "{file_stack}"
    );
    s.resume();
    assert!(s.finish().status.success());
    drop(perf_map);
}

fn first_leak(lines: &[String], what: &str) -> i64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("LEAK {what} ")))
        .unwrap()
        .parse()
        .unwrap()
}

/// The perf map node wrote for the test's program, removed when the test ends, pass or fail
/// (V8 leaves it behind, as `perf` expects).
struct PerfMapFile(PathBuf);

impl Drop for PerfMapFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new(&self.0));
    }
}

/// `run` tells node alone, after the user's own options, and says so; other programs get
/// nothing.
#[test]
fn run_turns_the_perf_map_on_for_node_alone() {
    let node = require("node");
    let mut cmd = fdguard(&[
        "run",
        "--",
        node.to_str().unwrap(),
        "-e",
        "console.log(process.pid, process.env.NODE_OPTIONS)",
    ]);
    cmd.env("NODE_OPTIONS", "--max-old-space-size=64");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (pid, options) = stdout.trim_end().split_once(' ').unwrap();
    let _perf_map = PerfMapFile(PathBuf::from(format!("/tmp/perf-{pid}.map")));
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        options,
        "--max-old-space-size=64 --perf-basic-prof-only-functions \
         --interpreted-frames-native-stack --import \"data:text/javascript,import v8 from \
         'node:v8'; v8.setFlagsFromString('--no-turbo-inlining')\""
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        said.lines()
            .filter(|l| l.starts_with("fdguard: node: NODE_OPTIONS gets"))
            .count(),
        1,
        "{said}"
    );

    let mut cmd = fdguard(&["run", "--", "sh", "-c", "echo \"[$NODE_OPTIONS]\""]);
    cmd.env_remove("NODE_OPTIONS");
    let out = cmd.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("NODE_OPTIONS"),
        "{out:?}"
    );
}
