//! The incidents of ../shared/docs/MISSION.md, reproduced by the programs in examples/c: each
//! report must name the leaking function, with the exact count.
use crate::common::*;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

/// Runs an example that prints `ready...` and waits, asks for a report, and kills it.
fn report_of(
    prog: &Path,
    args: &[&str],
    dir: &Path,
    before_ready: impl FnOnce(&mut Stepper),
) -> Value {
    let report = report_path(dir);
    let mut cmd = guarded(prog, &report);
    cmd.args(args);
    let mut s = Stepper::spawn(cmd, &report);
    before_ready(&mut s);
    s.wait_line("ready");
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_matches_kernel(&r, &kernel, &[]);
    s.kill();
    r
}

/// The largest stack of a report.
fn top_stack(r: &Value) -> Value {
    r["stacks"][0].clone()
}

#[test]
fn seed000_fopen_without_fclose_is_named_with_its_count() {
    let dir = scratch("seed000");
    let prog = build_example("fopen_leak", "fopen_leak", &dir, &["-O2", "-g"]);
    let r = report_of(&prog, &["150", "wait"], &dir, |_| {});
    let top = top_stack(&r);
    assert_eq!(top["count"], 150);
    assert_eq!(top["by_kind"]["file"], 150);
    let f = functions(&top);
    assert_eq!(&f[..3], ["load_setting", "handle_request", "main"], "{top}");
    let rows: Vec<_> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["stack"] == top["id"])
        .collect();
    assert_eq!(rows.len(), 150);
    assert!(
        rows.iter()
            .all(|row| row["call"] == "fopen" && row["desc"] == "/etc/hostname")
    );
}

#[test]
fn seed000_text_summary_names_file_streams() {
    let dir = scratch("seed000-text");
    let prog = build_example("fopen_leak", "fopen_leak", &dir, &["-O2", "-g"]);
    let out = command(&prog)
        .args(["40"])
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_AT_EXIT", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("fds still open at exit") && first.ends_with("40 in 1 stack: FILE streams"),
        "{text}"
    );
    assert!(text.contains("in load_setting "), "{text}");
    assert!(text.contains("fopen_leak.c:12"), "{text}");
}

#[test]
fn seed001_sockets_left_in_close_wait_under_the_accepting_stack() {
    let dir = scratch("seed001");
    let prog = build_example(
        "close_wait_server",
        "close_wait_server",
        &dir,
        &["-O2", "-g"],
    );
    let r = report_of(&prog, &["20"], &dir, |s| {
        let port: u16 = s.wait_line("port ")[5..].parse().unwrap();
        for _ in 0..20 {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(b"hello\n").unwrap();
        }
    });
    let top = top_stack(&r);
    assert_eq!(top["count"], 20, "{top}");
    assert_eq!(top["tcp_states"]["CLOSE_WAIT"], 20, "{top}");
    assert_eq!(functions(&top)[..2], ["accept_connection", "main"], "{top}");
    let listener = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["desc"].as_str().unwrap().ends_with("LISTEN"))
        .count();
    assert_eq!(listener, 1);
}

#[test]
fn seed002_sockets_whose_connect_failed_are_counted_unconnected() {
    let dir = scratch("seed002");
    let prog = build_example(
        "connect_fail_leak",
        "connect_fail_leak",
        &dir,
        &["-O2", "-g"],
    );
    let r = report_of(&prog, &["30"], &dir, |_| {});
    let top = top_stack(&r);
    assert_eq!(top["count"], 30);
    assert_eq!(top["by_kind"]["socket"], 30);
    assert_eq!(functions(&top)[..2], ["ship_logs", "main"], "{top}");
    let unconnected = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["stack"] == top["id"])
        .filter(|f| f["desc"].as_str().unwrap().ends_with("unconnected (CLOSE)"))
        .count();
    assert_eq!(unconnected, 30);
}

#[test]
fn seed004_per_request_connections_group_under_the_dialing_stack() {
    let dir = scratch("seed004");
    let prog = build_example(
        "per_request_client",
        "per_request_client",
        &dir,
        &["-O2", "-g"],
    );
    let r = report_of(&prog, &["25"], &dir, |_| {});
    let top = top_stack(&r);
    assert_eq!(top["count"], 25, "{top}");
    assert_eq!(
        functions(&top)[..3],
        ["new_connection", "do_request", "main"],
        "{top}"
    );
    assert_eq!(top["tcp_states"]["CLOSE_WAIT"], 25, "{top}");
}

#[test]
fn two_call_chains_into_one_helper_are_two_stacks() {
    let dir = scratch("two-callers");
    let prog = build_example("two_callers", "two_callers", &dir, &["-O2", "-g"]);
    let report = report_path(&dir);
    let out = guarded(&prog, &report)
        .args(["3", "5"])
        .env("FDGUARD_AT_EXIT", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = &read_reports(&report)[0];
    assert_eq!(r["reason"], "exit");
    let stacks = r["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 2, "{r}");
    assert_eq!(stacks[0]["count"], 5);
    assert_eq!(
        functions(&stacks[0])[..3],
        ["util_open", "load_cache", "main"]
    );
    assert_eq!(stacks[1]["count"], 3);
    assert_eq!(
        functions(&stacks[1])[..3],
        ["util_open", "load_config", "main"]
    );
    assert_eq!(r["open"], 8, "only the 8 leaks, not inherited fds or 0-2");
}

/// The leak of seed 000 in differently built binaries: the stack must name the same frames
/// (or, stripped, point at them through module + offset).
fn leak_frames(flags: &[&str], strip: bool) -> (Value, std::path::PathBuf) {
    let tag = flags.join("").replace(['-', '='], "");
    let dir = scratch(&format!("variant{tag}{strip}"));
    let prog = build_example("fopen_leak", "fopen_leak", &dir, flags);
    let run = if strip {
        let stripped = dir.join("fopen_leak.stripped");
        let ok = command("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&prog)
            .status()
            .unwrap();
        assert!(ok.success());
        stripped
    } else {
        prog.clone()
    };
    let r = report_of(&run, &["12", "wait"], &dir, |_| {});
    (top_stack(&r), prog)
}

fn assert_names_leak(top: &Value) {
    assert_eq!(top["count"], 12, "{top}");
    assert_eq!(
        functions(top)[..3],
        ["load_setting", "handle_request", "main"],
        "{top}"
    );
}

#[test]
fn frames_without_frame_pointers_pie() {
    assert_names_leak(
        &leak_frames(
            &["-O2", "-g", "-fomit-frame-pointer", "-fPIE", "-pie"],
            false,
        )
        .0,
    );
}

#[test]
fn frames_non_pie() {
    assert_names_leak(
        &leak_frames(
            &["-O2", "-g", "-fomit-frame-pointer", "-fno-pie", "-no-pie"],
            false,
        )
        .0,
    );
}

#[test]
fn frames_with_frame_pointers_unoptimized() {
    assert_names_leak(&leak_frames(&["-O0", "-g", "-fno-omit-frame-pointer"], false).0);
}

#[test]
fn stripped_binary_frames_resolve_later_with_addr2line() {
    let (top, unstripped) = leak_frames(&["-O2", "-g"], true);
    let frame = &top["frames"][0];
    let module = frame["module"].as_str().unwrap();
    assert!(module.ends_with("fopen_leak.stripped"), "{frame}");
    let out = command("addr2line")
        .arg("-f")
        .arg("-e")
        .arg(&unstripped)
        .arg(frame["offset"].as_str().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("load_setting\n"), "{text}");
    assert!(text.contains("fopen_leak.c:12"), "{text}");
}

#[test]
fn examples_serve_their_clients_normally_under_fdguard() {
    // The CLOSE_WAIT server still reads what clients send: fdguard changes nothing it sees.
    let dir = scratch("cws-echo");
    let prog = build_example("close_wait_server", "close_wait_server", &dir, &["-O2"]);
    let report = report_path(&dir);
    let mut cmd = guarded(&prog, &report);
    cmd.arg("1");
    let mut s = Stepper::spawn(cmd, &report);
    let port: u16 = s.wait_line("port ")[5..].parse().unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"x").unwrap();
    drop(c);
    assert!(s.wait_line("ready").contains("served 1"));
    s.kill();
}
