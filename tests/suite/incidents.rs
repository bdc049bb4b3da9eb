//! The incidents of ../shared/docs/MISSION.md, reproduced by the programs in examples/c: each
//! report must name the leaking function, with the exact count.
use crate::common::*;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

/// Starts an example under fdguard with reports in `format` going to `report`, and waits
/// until it prints `ready...`.
fn ready(
    prog: &Path,
    args: &[&str],
    report: &Path,
    format: &str,
    before_ready: impl FnOnce(&mut Stepper),
) -> Stepper {
    let mut cmd = guarded(prog, report);
    cmd.args(args).env("FDGUARD_FORMAT", format);
    let mut s = Stepper::spawn(cmd, report);
    before_ready(&mut s);
    s.wait_line("ready");
    s
}

/// Runs an example that prints `ready...` and waits, asks for a report, and kills it.
fn report_of(
    prog: &Path,
    args: &[&str],
    dir: &Path,
    before_ready: impl FnOnce(&mut Stepper),
) -> Value {
    let mut s = ready(prog, args, &report_path(dir), "json", before_ready);
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_matches_kernel(&r, &kernel, &[]);
    s.kill();
    r
}

/// Like `report_of`, for the report in text (the places fds point to are in the text only).
fn text_report_of(
    prog: &Path,
    args: &[&str],
    dir: &Path,
    before_ready: impl FnOnce(&mut Stepper),
) -> String {
    let name = prog.file_name().unwrap().to_string_lossy();
    let report = dir.join(format!("{name}.txt"));
    let s = ready(prog, args, &report, "text", before_ready);
    asked_in_text(s, &report)
}

/// Asks a program that writes text reports to `report` for one, kills it, and returns it.
fn asked_in_text(s: Stepper, report: &Path) -> String {
    kill(s.pid(), libc::SIGUSR2);
    let end = format!("=={}== fdguard: end of report\n", s.pid());
    wait_until("a text report", REPORT_WAIT, || {
        std::fs::read_to_string(report).is_ok_and(|t| t.ends_with(&end))
    });
    s.kill();
    std::fs::read_to_string(report).unwrap()
}

/// Asserts that a text report's first line ends with `first`, and the heading of its first
/// stack holds `heading`.
fn assert_first_and_heading(text: &str, first: &str, heading: &str) {
    let mut lines = text.lines();
    let first_line = lines.next().unwrap_or_default();
    let heading_line = lines.find(|l| l.contains(" fds (")).unwrap_or_default();
    assert!(
        first_line.ends_with(first) && heading_line.contains(heading),
        "{first:?} and {heading:?} in:\n{text}"
    );
}

/// The address of the listener whose stack a text report shows.
fn listening_on(text: &str) -> &str {
    text.lines()
        .find_map(|l| {
            l.split_once("(socket listening on ")?
                .1
                .split_once(',')
                .map(|p| p.0)
        })
        .unwrap_or_else(|| panic!("a listener's stack:\n{text}"))
}

/// Has `n` clients connect to the example's port, say hello and hang up.
fn clients(n: usize) -> impl FnOnce(&mut Stepper) {
    move |s| {
        let port: u16 = s.wait_line("port ")[5..].parse().unwrap();
        for _ in 0..n {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(b"hello\n").unwrap();
        }
    }
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
        first.contains("fds still open at exit")
            && first.ends_with("40 in 1 stack: FILE streams of /etc/hostname"),
        "{text}"
    );
    assert!(text.contains("in load_setting "), "{text}");
    assert!(text.contains("fopen_leak.c:12"), "{text}");
}

/// A limit lowered under a running program (`prlimit --pid`) below fds it has open: more are
/// open than the limit allows, and the first line says why.
#[test]
fn seed000_text_says_why_more_fds_are_open_than_the_limit() {
    let dir = scratch("seed000-lowered");
    let prog = build_example("fopen_leak", "fopen_leak", &dir, &["-O2", "-g"]);
    let report = dir.join("report.txt");
    let s = ready(&prog, &["30", "wait"], &report, "text", |_| {});
    let pid = s.pid();
    let lowered = command("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=20:"])
        .status()
        .unwrap();
    assert!(lowered.success());
    let open = proc_fds(pid);
    let above = open.iter().filter(|fd| **fd >= 20).count();
    let text = asked_in_text(s, &report);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!(
            "fdguard: {} of 20 fds open ({}%; {above} fds at or above the soft limit, \
             inherited or opened before the limit was lowered) in pid {pid} ",
            open.len(),
            open.len() * 100 / 20
        )),
        "{text}"
    );
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
    let r = report_of(&prog, &["20"], &dir, clients(20));
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

/// The text names where the leaked sockets point: the local address the listener accepted
/// them on (the same as the listener's), the peer dialed, or nowhere.
#[test]
fn text_first_lines_name_where_the_leaked_sockets_point() {
    let dir = scratch("places-text");
    let build = |name| build_example(name, name, &dir, &["-O2", "-g"]);

    let text = text_report_of(&build("close_wait_server"), &["20"], &dir, clients(20));
    let listener = listening_on(&text);
    assert_first_and_heading(
        &text,
        &format!("; 20 in 1 stack: sockets accepted on {listener} CLOSE_WAIT (2 stacks in all)"),
        &format!(" 20 fds (sockets accepted on {listener}, 20 CLOSE_WAIT), "),
    );

    let text = text_report_of(&build("per_request_client"), &["25"], &dir, |_| {});
    let server = listening_on(&text);
    assert_first_and_heading(
        &text,
        &format!("; 25 in 1 stack: sockets to {server} CLOSE_WAIT (2 stacks in all)"),
        &format!(" 25 fds (sockets to {server}, 25 CLOSE_WAIT), "),
    );

    let text = text_report_of(&build("connect_fail_leak"), &["30"], &dir, |_| {});
    assert_first_and_heading(
        &text,
        "; 30 in 1 stack: sockets never connected or failed to connect (tcp)",
        " 30 fds (sockets never connected or failed to connect (tcp), 30 CLOSE), ",
    );
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
