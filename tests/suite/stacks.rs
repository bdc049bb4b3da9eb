//! Creation stacks: exact against glibc's own backtrace(), bounded by FDGUARD_DEPTH, attributed
//! to the right thread, and captured even inside a signal handler.
use crate::common::*;

use std::collections::BTreeMap;

struct Run {
    report: Value,
    lines: Vec<String>,
}

fn run_deep(flags: &[&str], env: &[(&str, &str)]) -> Run {
    let tag = format!("deep{}{}", flags.join("").replace('-', ""), env.len());
    let dir = scratch(&tag);
    let prog = build_c("deep_stack", &dir, flags);
    let report = report_path(&dir);
    let mut cmd = guarded(&prog, &report);
    cmd.envs(env.iter().copied());
    let mut s = Stepper::spawn(cmd, &report);
    let (_, lines) = s.next_checkpoint().expect("checkpoint");
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_matches_kernel(&r, &kernel, &[]);
    s.resume();
    assert!(s.finish().status.success());
    Run { report: r, lines }
}

fn line<'a>(run: &'a Run, prefix: &str) -> Vec<&'a str> {
    run.lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line"))
        .split(' ')
        .skip(1)
        .collect()
}

fn parse_hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// The frames of the stack that created `fd`.
fn stack_of_fd(r: &Value, fd: i64) -> Value {
    let row = fd_row(r, fd).unwrap_or_else(|| panic!("fd {fd} not in report"));
    stack_by_id(r, &row["stack"])
}

fn assert_same_as_backtrace(run: &Run) {
    let deep = line(run, "DEEP");
    let fd: i64 = deep[0].parse().unwrap();
    let glibc: Vec<u64> = deep[1..].iter().map(|a| parse_hex(a)).collect();
    let stack = stack_of_fd(&run.report, fd);
    let ours: Vec<u64> = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| parse_hex(f["addr"].as_str().unwrap()))
        .collect();
    assert_eq!(functions(&stack)[0], "leaf", "{stack}");
    // glibc's trace[0] is backtrace()'s own return address inside leaf(); from trace[1] on,
    // both list the same return addresses of the callers (ours stops at main).
    assert!(ours.len() >= 31, "only {} frames: {stack}", ours.len());
    assert_eq!(
        ours[1..31],
        glibc[1..31],
        "ours {ours:x?}\nglibc {glibc:x?}"
    );
    assert_eq!(functions(&stack)[29..31], ["level29", "main"]);
}

#[test]
fn stacks_match_glibc_backtrace_without_frame_pointers() {
    assert_same_as_backtrace(&run_deep(&["-O2", "-g", "-fomit-frame-pointer"], &[]));
}

#[test]
fn stacks_match_glibc_backtrace_with_frame_pointers_non_pie() {
    assert_same_as_backtrace(&run_deep(
        &[
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-pie",
            "-no-pie",
        ],
        &[],
    ));
}

/// An executable whose segments are not adjacent, as node's (its large-pages stub is aligned to
/// 2 MiB): glibc reports each segment as a mapping of its own, and the one holding the code
/// does not start with the ELF header.
#[test]
fn stacks_match_glibc_backtrace_in_an_executable_mapped_in_pieces() {
    assert_same_as_backtrace(&run_deep(
        &[
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-pie",
            "-no-pie",
            "-Wl,-z,max-page-size=0x200000",
        ],
        &[],
    ));
}

/// A library loaded after fdguard started (as `libjava.so` in a JVM under `fdguard run`) is
/// named from its `.symtab` as one loaded before (after `fdguard attach`): a static function
/// there is in no dynamic symbol table.
#[test]
fn a_library_loaded_later_is_named_from_its_own_symbol_table() {
    let dir = scratch("late-library");
    let plugin = build_c_shared("plugin_local", "libfdglocal.so", &dir, &["-O1", "-g0"]);
    let prog = build_c_linked("dlopen_main", &dir, &["-O1", "-g"], &["-lpthread"]);
    let report = report_path(&dir);
    let mut cmd = guarded(&prog, &report);
    cmd.arg(&plugin);
    let mut s = Stepper::spawn(cmd, &report);
    let (_, lines) = s.next_checkpoint().expect("checkpoint");
    let fd: i64 = value_after(&lines, "PLUGIN_FD ");
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_matches_kernel(&r, &kernel, &[]);
    let stack = stack_by_id(&r, &fd_row(&r, fd).expect("the plugin's fd")["stack"]);
    assert_eq!(
        functions(&stack).first().map(String::as_str),
        Some("open_privately"),
        "{stack}"
    );
    s.resume();
    assert!(s.finish().status.success());
}

#[test]
fn depth_limits_frames_and_zero_turns_capture_off() {
    let run = run_deep(&["-O2", "-g"], &[("FDGUARD_DEPTH", "5")]);
    let fd: i64 = line(&run, "DEEP")[0].parse().unwrap();
    let frames = functions(&stack_of_fd(&run.report, fd));
    assert_eq!(frames, ["leaf", "level1", "level2", "level3", "level4"]);

    let run = run_deep(&["-O2", "-g"], &[("FDGUARD_DEPTH", "0")]);
    assert_eq!(run.report["stacks"], serde_json::json!([]));
    assert!(
        run.report["fds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["stack"].is_null())
    );
}

#[test]
fn each_fd_carries_the_tid_of_the_thread_that_created_it() {
    let run = run_deep(&["-O2", "-g"], &[]);
    let threads: BTreeMap<i64, u64> = run
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix("THREAD "))
        .map(|l| {
            let (fd, tid) = l.split_once(' ').unwrap();
            (fd.parse().unwrap(), tid.parse().unwrap())
        })
        .collect();
    assert_eq!(threads.len(), 4);
    let pid = run.report["pid"].as_u64().unwrap();
    for (fd, tid) in threads {
        // Each worker's fd may have been closed and reused... they are not: all stay open.
        let row = fd_row(&run.report, fd).unwrap();
        assert_eq!(row["tid"].as_u64(), Some(tid), "{row}");
        assert_ne!(tid, pid);
        assert_eq!(
            functions(&stack_by_id(&run.report, &row["stack"]))[0],
            "worker"
        );
    }
}

#[test]
fn a_creation_inside_a_signal_handler_is_tracked_with_its_stack() {
    let run = run_deep(&["-O2", "-g"], &[]);
    let fd: i64 = line(&run, "HANDLER")[0].parse().unwrap();
    let row = fd_row(&run.report, fd).unwrap();
    assert_eq!(row["call"], "open");
    assert!(row["desc"].as_str().unwrap().contains("/dev/urandom"));
    let f = functions(&stack_by_id(&run.report, &row["stack"]));
    assert_eq!(f[0], "on_alarm", "{f:?}");
}

#[test]
fn symbolizes_cpp_names_demangled() {
    let dir = scratch("cpp");
    let src = dir.join("leak.cpp");
    std::fs::write(
        &src,
        "#include <cstdio>\nnamespace app { struct Loader { __attribute__((noinline)) \
         std::FILE* open(const char* p) { std::FILE* f = std::fopen(p, \"r\"); \
         if (!f) std::perror(p); return f; } }; }\n\
         int main(int argc, char**) { app::Loader l; \
         for (int i = 0; i < argc + 2; i++) l.open(\"/etc/hosts\"); }\n",
    )
    .unwrap();
    let prog = dir.join("leak");
    let ok = command("c++")
        .args(["-O1", "-g", "-o"])
        .arg(&prog)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    let report = report_path(&dir);
    let out = guarded(&prog, &report)
        .env("FDGUARD_AT_EXIT", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = &read_reports(&report)[0];
    assert_eq!(r["stacks"][0]["count"], 3, "{r}");
    assert_eq!(
        functions(&r["stacks"][0])[0],
        "app::Loader::open(char const*)"
    );
}
