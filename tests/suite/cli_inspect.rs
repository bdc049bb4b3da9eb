//! `fdguard inspect PID`: every fd of a live process, read from /proc without preloading
//! anything, checked against /proc/PID/fd itself and against fdguard's own report of the same
//! process at the same moment (one parser reads both).
use crate::common::server::fd_soft_limit;
use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// The holder program's lines before its first checkpoint: `KEY n n ...` by key.
type Facts = BTreeMap<String, Vec<Vec<i64>>>;

fn facts(lines: &[String]) -> Facts {
    let mut f = Facts::new();
    for l in lines {
        let mut words = l.split_whitespace();
        let key = words.next().unwrap().to_string();
        let nums = words.map(|w| w.parse().unwrap()).collect();
        f.entry(key).or_default().push(nums);
    }
    f
}

/// Starts `tests/c/holder.c` (built as `prog`) and waits until it holds everything.
fn start_holder(cmd: Command, report: &Path) -> (Stepper, Facts) {
    let mut s = Stepper::spawn(cmd, report);
    let (name, lines) = s.next_checkpoint().expect("holder reached its checkpoint");
    assert_eq!(name, "held");
    (s, facts(&lines))
}

fn inspect_json(pid: u32) -> Value {
    let out = fdguard(&["inspect", "--json", &pid.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json is one JSON object")
}

fn inspect_text(pid: u32) -> String {
    let out = fdguard(&["inspect", &pid.to_string()]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn row(j: &Value, fd: i64) -> &Value {
    fd_row(j, fd).unwrap_or_else(|| panic!("fd {fd} not in {j}"))
}

/// The test's own reading of what an fd is, from the kernel (not from the command's code).
fn kernel_kind(pid: u32, fd: i64) -> (String, String) {
    let p = format!("/proc/{pid}/fd/{fd}");
    let link = std::fs::read_link(&p)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let kind = if std::fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
        "dir"
    } else if link.starts_with("socket:") {
        "socket"
    } else if link.starts_with("pipe:") {
        "pipe"
    } else if link == "anon_inode:[eventpoll]" {
        "epoll"
    } else if link == "anon_inode:[eventfd]" {
        "eventfd"
    } else if link.starts_with("/dev/pts/") {
        "pty"
    } else if link.starts_with('/') {
        "file"
    } else {
        "other"
    };
    (kind.to_string(), link)
}

/// Everything `inspect --json` says of the holder, against the kernel and the holder's own
/// account of what it opened.
fn check_holder_snapshot(pid: u32, f: &Facts, j: &Value) {
    let kernel = proc_fds(pid);
    let listed: BTreeSet<i64> = j["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fd"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, kernel, "inspect lists exactly /proc/{pid}/fd");
    assert_eq!(j["open"], kernel.len());
    for fd in &kernel {
        let (kind, link) = kernel_kind(pid, *fd);
        assert_eq!(row(j, *fd)["kind"], kind.as_str(), "kind of fd {fd}");
        if kind == "file" || kind == "dir" {
            assert_eq!(row(j, *fd)["desc"], link.as_str());
        }
    }
    assert_eq!(j["limit"]["soft"], fd_soft_limit(pid));
    assert_eq!(j["reason"], "inspect");
    assert_eq!(j["pid"], pid);

    let (listener, port) = (f["LISTEN"][0][0], f["LISTEN"][0][1]);
    assert_eq!(
        row(j, listener)["desc"],
        format!("tcp 127.0.0.1:{port} LISTEN")
    );
    for cw in &f["CLOSE_WAIT"] {
        let r = row(j, cw[0]);
        let desc = r["desc"].as_str().unwrap();
        assert!(
            desc.starts_with(&format!("tcp 127.0.0.1:{port} -> 127.0.0.1:"))
                && desc.ends_with(" CLOSE_WAIT"),
            "{desc}"
        );
        assert_eq!(r["socket"]["tcp_state"], "CLOSE_WAIT");
    }
    for u in f["UNCONNECTED"].iter().chain(&f["FAILED"]) {
        let r = row(j, u[0]);
        let desc = r["desc"].as_str().unwrap();
        assert!(
            desc == "tcp unconnected (CLOSE)" || desc == "tcp6 unconnected (CLOSE)",
            "fd {}: {desc}",
            u[0]
        );
        assert_eq!(r["socket"]["in_tables"], false);
    }
    let (bound, bound_port) = (f["BOUND"][0][0], f["BOUND"][0][1]);
    assert_eq!(
        row(j, bound)["desc"],
        format!("tcp 127.0.0.1:{bound_port} unconnected (CLOSE)")
    );
    let udp = row(j, f["UDP"][0][0])["desc"].as_str().unwrap();
    assert!(
        udp.starts_with("udp 127.0.0.1:") && udp.ends_with(" unconnected"),
        "{udp}"
    );
    for fd in &f["PAIR"][0] {
        assert_eq!(row(j, *fd)["desc"], "unix stream (unnamed) -> (unnamed)");
    }
    let (r, w) = (f["PIPE"][0][0], f["PIPE"][0][1]);
    let read_end = row(j, r)["desc"].as_str().unwrap();
    assert!(
        read_end.starts_with("pipe:[") && read_end.ends_with("] read end"),
        "{read_end}"
    );
    assert!(row(j, w)["desc"].as_str().unwrap().ends_with("] write end"));
    assert_eq!(row(j, r)["other_ends"], serde_json::json!([w]));

    let mut watches: Vec<(i64, Value)> = row(j, f["EPOLL"][0][0])["watches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["fd"].as_i64().unwrap(), w["events"].clone()))
        .collect();
    watches.sort_by_key(|w| w.0);
    let mut expected = vec![
        (listener, serde_json::json!(["in"])),
        (r, serde_json::json!(["in", "et"])),
    ];
    expected.sort_by_key(|w| w.0);
    assert_eq!(watches, expected);
    assert_eq!(row(j, f["EVENTFD"][0][0])["kind"], "eventfd");

    let states = &j["tcp_states"];
    assert_eq!(states["CLOSE_WAIT"], 4);
    assert_eq!(states["LISTEN"], 1);
    assert_eq!(states["CLOSE"], 4);
    assert_eq!(j["by_kind"]["socket"], 4 + 1 + 4 + 1 + 2);
}

#[test]
fn inspect_lists_exactly_what_proc_lists_and_describes_every_kind() {
    let dir = scratch("cli-inspect");
    let prog = build_c("holder", &dir, &["-O1"]);
    let mut cmd = plain(&prog);
    cmd.arg(&dir).arg("0");
    let (s, f) = start_holder(cmd, &dir.join("none"));
    let pid = s.pid();
    let j = inspect_json(pid);
    check_holder_snapshot(pid, &f, &j);
    assert_eq!(j["fdguard_library"], Value::Null);
    assert_eq!(j["program"]["static"], false);

    let text = inspect_text(pid);
    let first = text.lines().next().unwrap();
    let open = j["open"].as_u64().unwrap();
    assert!(
        first.starts_with(&format!("{open} of ")) && first.contains(&format!("in pid {pid}")),
        "{first}"
    );
    assert!(
        first.contains("12 sockets, 4 CLOSE_WAIT accepted on 127.0.0.1:"),
        "{first}"
    );
    assert!(text.contains("can't identify protocol"), "{text}");
    let epoll_line = text
        .lines()
        .find(|l| l.contains("anon_inode:[eventpoll]  watching "))
        .unwrap_or_else(|| panic!("epoll sets say what they watch: {text}"));
    let (listener, read_end) = (f["LISTEN"][0][0], f["PIPE"][0][0]);
    assert!(
        epoll_line.contains(&format!("{listener} (in)"))
            && epoll_line.contains(&format!("{read_end} (in,et)")),
        "{epoll_line}"
    );
    assert!(!text.contains("fdguard is loaded"), "{text}");
    s.finish();
}

#[test]
fn inspect_describes_each_fd_as_fdguards_report_does() {
    let dir = scratch("cli-inspect-report");
    let prog = build_c("holder", &dir, &["-O1", "-g"]);
    let report = report_path(&dir);
    let mut cmd = guarded(&prog, &report);
    cmd.arg(&dir).arg("0");
    let (mut s, f) = start_holder(cmd, &report);
    let pid = s.pid();
    let r = s.report_now();
    let j = inspect_json(pid);
    check_holder_snapshot(pid, &f, &j);
    let fds = r["fds"].as_array().unwrap();
    assert_eq!(fds.len(), j["fds"].as_array().unwrap().len());
    let failed = f["FAILED"][0][0];
    for rr in fds {
        let fd = rr["fd"].as_i64().unwrap();
        assert_eq!(row(&j, fd)["kind"], rr["kind"], "kind of fd {fd}");
        if fd == failed {
            // The one difference: the report asks the socket (getsockname still shows the
            // port its failed connect was given), the kernel's tables have released it.
            let desc = rr["desc"].as_str().unwrap();
            assert!(desc.starts_with("tcp 0.0.0.0:"), "{desc}");
            assert_eq!(row(&j, fd)["desc"], "tcp unconnected (CLOSE)");
            continue;
        }
        assert_eq!(row(&j, fd)["desc"], rr["desc"], "desc of fd {fd}");
    }
    for key in ["by_kind", "tcp_states", "limit"] {
        assert_eq!(j[key], r[key], "{key}: inspect and the report agree");
    }
    let lib = j["fdguard_library"].as_str().unwrap();
    assert!(lib.ends_with("/libfdguard.so"), "{lib}");
    let text = inspect_text(pid);
    assert!(
        text.contains(&format!(
            "fdguard is loaded in it ({lib}): `fdguard report {pid}`"
        )),
        "{text}"
    );
    s.finish();
}

#[test]
fn a_static_binary_is_inspected_and_traced_by_run() {
    let dir = scratch("cli-static");
    let prog = build_c("holder", &dir, &["-O1", "-static"]);
    let mut cmd = plain(&prog);
    cmd.arg(&dir).arg("0");
    let (s, f) = start_holder(cmd, &dir.join("none"));
    let pid = s.pid();
    let j = inspect_json(pid);
    check_holder_snapshot(pid, &f, &j);
    assert_eq!(j["program"]["static"], true);
    assert!(inspect_text(pid).contains("program: statically linked"));
    s.finish();

    // `run` traces it (tests/suite/trace.rs checks what the tracer sees).
    let report = dir.join("exit.json");
    let out = fdguard(&["run", "--at-exit", "--json", "--report"])
        .arg(&report)
        .arg("--")
        .arg(&prog)
        .arg(&dir)
        .arg("0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("is statically linked: LD_PRELOAD cannot see its fds, so fdguard traces it"),
        "{err}"
    );
    assert!(!out.stdout.is_empty(), "the static program ran");
    let reports = read_reports(&report);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["reason"], "exit");
}

#[test]
fn no_such_process_and_permission_denied_are_said_plainly() {
    let err = fails_with(fdguard(&["inspect", "4194305"]), 2);
    assert_eq!(err, "fdguard: no process with pid 4194305\n");
    let err = fails_with(fdguard(&["watch", "4194305", "--count", "1"]), 2);
    assert!(err.contains("no process with pid 4194305"), "{err}");

    // Another user's process: as root, look at ourselves as nobody; else at pid 1 (root's).
    // SAFETY: geteuid has no preconditions.
    let cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = command("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cli_path())
            .args(["inspect", &std::process::id().to_string()]);
        c
    } else {
        fdguard(&["inspect", "1"])
    };
    let err = fails_with(cmd, 2);
    assert!(
        err.contains("permission denied reading /proc/") && err.contains("CAP_SYS_PTRACE"),
        "{err}"
    );
}

/// The runtime a program runs on, as `inspect` names it, for real python3, node and java
/// processes (and the shell, which is native): a report of theirs would show the runtime's own
/// frames, and `inspect` says so.
#[test]
fn the_runtime_of_python_node_and_java_is_named() {
    use std::process::Stdio;

    let dir = scratch("cli-runtimes");
    let java_src = dir.join("Ready.java");
    std::fs::write(
        &java_src,
        "public class Ready { public static void main(String[] a) throws Exception {\n\
         System.out.println(\"ready\"); System.in.read(); } }\n",
    )
    .unwrap();
    let wait_line = "import sys\nprint('ready', flush=True)\nsys.stdin.read()";
    let cases: Vec<(&str, Command)> = vec![
        ("python", {
            let mut c = command(require("python3"));
            c.args(["-c", wait_line]);
            c
        }),
        ("node", {
            let mut c = command(require("node"));
            c.args(["-e", "console.log('ready'); process.stdin.resume()"]);
            c
        }),
        ("jvm", {
            let mut c = command(require("java"));
            c.arg(&java_src);
            c
        }),
    ];
    for (runtime, mut cmd) in cases {
        let mut p = Proc::spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()));
        assert_eq!(p.first_line(), "ready\n", "{runtime} did not start");
        let j = inspect_json(p.id());
        assert_eq!(j["program"]["runtime"], runtime, "{j}");
        assert_eq!(j["program"]["go"], false);
        let text = inspect_text(p.id());
        assert!(
            text.contains("program: runs on") && text.contains("the runtime's own native frames"),
            "{runtime}: {text}"
        );
        p.kill_group();
    }
    let mut sh = Proc::spawn(
        command("sh")
            .args(["-c", "echo ready; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    assert_eq!(sh.first_line(), "ready\n");
    assert_eq!(inspect_json(sh.id())["program"]["runtime"], "native");
    assert!(!inspect_text(sh.id()).contains("program:"));
}

/// A python3 that holds 15,000 fds of /dev/null (fewer if its hard limit is lower; its soft
/// limit raised for them), prints how many fds it has, and waits to be killed.
fn python_holding_15000() -> (Proc, usize) {
    use std::process::Stdio;
    let script = "import os,resource,sys\n\
                  _,hard=resource.getrlimit(resource.RLIMIT_NOFILE)\n\
                  resource.setrlimit(resource.RLIMIT_NOFILE,(hard,hard))\n\
                  fds=[os.open('/dev/null',os.O_RDONLY) for _ in range(min(15000,hard-100))]\n\
                  print(len(os.listdir('/proc/self/fd'))-1,flush=True)\n\
                  sys.stdin.read()";
    let mut p = Proc::spawn(
        command(require("python3"))
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let held = p
        .first_line()
        .trim()
        .parse()
        .expect("python3 says how many fds it has");
    assert!(
        held > 5_000,
        "python3 could open only {held} fds (its hard limit)"
    );
    (p, held)
}

/// `inspect` of a process that exits while it is read, killed at points spread over the time
/// a whole read takes: each answer is the complete snapshot (status 0), or says that the
/// process exited (status 1; status 2 for a zombie it met at its start), never part of the
/// fds with status 0. Before, it printed 0, 5,150 or 13,943 of 15,006 fds with status 0.
#[test]
fn a_process_that_exits_while_it_is_read_is_not_half_reported() {
    use std::process::Stdio;
    use std::time::Instant;

    // How long a whole read takes, on this machine now (the answer complete); the first
    // run of the command is the slowest.
    let (mut p, held) = python_holding_15000();
    let read_time = (0..3)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(inspect_json(p.id())["open"], held);
            started.elapsed()
        })
        .min()
        .unwrap();
    p.kill_group();

    let piped =
        |args: &[&str]| Proc::spawn(fdguard(args).stdout(Stdio::piped()).stderr(Stdio::piped()));
    // Ten rounds at least, with the kill a tenth of a read later each time; more (up to 40)
    // until three kills landed while inspect read.
    let (mut exited, mut complete, mut zombie) = (0, 0, 0);
    for round in 0..40u32 {
        if exited >= 3 && round >= 10 {
            break;
        }
        let (mut p, held) = python_holding_15000();
        let pid = p.id();
        let inspect = piped(&["inspect", "--json", &pid.to_string()]);
        std::thread::sleep(read_time * (round % 10) / 10);
        kill(pid, libc::SIGKILL);
        let out = inspect.wait_with_output();
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                let j: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(j["open"], held, "status 0 with part of the fds: {err}");
                assert_eq!(j["fds"].as_array().unwrap().len(), held);
                complete += 1;
            }
            Some(1) => {
                assert_eq!(
                    err,
                    format!("fdguard: pid {pid} exited while it was being read\n")
                );
                assert!(out.stdout.is_empty());
                exited += 1;
            }
            Some(2) => {
                assert!(err.contains("has exited (a zombie"), "{err}");
                assert!(out.stdout.is_empty());
                zombie += 1;
            }
            other => panic!("inspect exited with {other:?}: {err}"),
        }
        p.kill_group();
    }
    assert!(
        exited > 0,
        "no kill landed while inspect read ({complete} complete, {zombie} zombies; a whole \
         read took {read_time:?})"
    );

    // `watch` ends with the process, and every sample it showed has all the fds (`--count`
    // only bounds a watch that would not end).
    for round in 0..3u32 {
        let (mut p, held) = python_holding_15000();
        let pid = p.id();
        let arg = pid.to_string();
        let watch = piped(&["watch", &arg, "--interval", "0.01", "--count", "200"]);
        std::thread::sleep(read_time * (2 + round) / 2);
        kill(pid, libc::SIGKILL);
        let out = watch.wait_with_output();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("fdguard: pid {pid} exited\n")
        );
        let all = format!("  {},{:03}/", held / 1000, held % 1000);
        for sample in text.lines().skip(1) {
            assert!(sample.contains(&all), "a partial sample: {sample}\n{text}");
        }
        p.kill_group();
    }
}
