//! Report requests never hurt the program: a program that takes fdguard's report signal gets
//! it (and sees only its own disposition), fdguard moves to a free signal and `fdguard report`
//! follows; with no signal free, the command sends none. Real runtimes and servers that own
//! SIGUSR2 (a JVM, nginx's master and worker) or rewrite their environment (nginx, redis) give
//! a report under a plain `fdguard run`, in both formats, and go on unchanged. No report file
//! exists before there is a report.
use crate::common::server::{free_port, nginx_conf, proc_children};
use crate::common::*;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn report(pid: u32, json: bool) -> Command {
    let mut c = fdguard(&["report", &pid.to_string()]);
    if json {
        c.arg("--json");
    }
    c
}

/// A complete report of `pid`, asked with `fdguard report` in the format the process writes
/// (text for a plain `fdguard run`) and with `--json`; returns the JSON one, parsed.
fn both_reports(pid: u32) -> Value {
    let first = succeeds(report(pid, false));
    if !first.starts_with('{') {
        let prefix = format!("=={pid}==");
        assert!(
            first.lines().all(|l| l.starts_with(&prefix))
                && first.lines().next().unwrap().contains("fds open")
                && first.lines().any(|l| l.contains("reason: signal at"))
                && first.ends_with("fdguard: end of report\n"),
            "{first}"
        );
    }
    let json = succeeds(report(pid, true));
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(
        (r["pid"].as_u64(), r["reason"].as_str()),
        (Some(pid.into()), Some("signal"))
    );
    assert_eq!(
        r["open"].as_u64(),
        Some(r["fds"].as_array().unwrap().len() as u64)
    );
    r
}

fn stderr_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// `tests/c/takes_signal.c` under fdguard with `args`, JSON reports to a file; returns it, the
/// report file and its stderr's file.
fn takes_signal(name: &str, args: &[&str]) -> (Stepper, PathBuf, PathBuf) {
    let dir = scratch(name);
    let prog = build_c_once("takes_signal", &["-O1", "-g"]);
    let report_file = report_path(&dir);
    let err = dir.join("stderr.log");
    let mut cmd = guarded(&prog, &report_file);
    cmd.args(args).stderr(std::fs::File::create(&err).unwrap());
    (Stepper::spawn(cmd, &report_file), report_file, err)
}

#[test]
fn a_program_that_takes_the_report_signal_gets_it_and_sees_only_its_own() {
    let (mut s, report_file, err) = takes_signal("requests-take", &[]);
    let pid = s.pid();

    // Setting the default leaves SIGUSR2 to fdguard, and the program sees the default.
    let (name, lines) = s.next_checkpoint().unwrap();
    assert_eq!(name, "default");
    assert_eq!(
        lines,
        ["BEFORE default", "DFL_PREV default", "AFTER_DFL default"]
    );
    let r = s.report_now();
    assert_matches_kernel(&r, &proc_fds(pid), &[]);
    assert!(stderr_lines(&err).is_empty(), "{:?}", stderr_lines(&err));

    // Its own handler: it sees the default as what it replaced, then its own.
    s.resume();
    let (name, lines) = s.next_checkpoint().unwrap();
    assert_eq!(name, "taken");
    assert_eq!(lines, ["OLD default", "NOW own", "SIGNAL_PREV own"]);
    assert_eq!(
        stderr_lines(&err),
        [format!(
            "fdguard: the program installed its own handler for SIGUSR2: report requests use \
             SIGRTMAX instead (`fdguard report {pid}` follows it)"
        )]
    );
    // `kill -USR2` is the program's now; `fdguard report` follows fdguard to SIGRTMAX.
    kill(pid, libc::SIGUSR2);
    let r = both_reports(pid);
    assert_matches_kernel(&r, &proc_fds(pid), &[]);
    let err_given = fails_with(
        fdguard(&["report", &pid.to_string(), "--signal", "USR2"]),
        2,
    );
    assert!(
        err_given.contains("answers report requests on SIGRTMAX, not SIGUSR2"),
        "{err_given}"
    );
    s.resume();
    let (name, lines) = s.next_checkpoint().unwrap();
    assert_eq!(
        (name.as_str(), lines),
        ("counted", vec!["GOT 1".to_string()])
    );
    // One report of its own (the first kill), none for the program's signal.
    assert_eq!(read_reports(&report_file).len(), 1);
    s.resume();
    assert!(s.finish().status.success());
}

/// A program with a handler on every signal (as a Go runtime installs): fdguard takes no
/// requests, says so once, and `fdguard report` sends nothing.
#[test]
fn a_program_that_takes_every_signal_gets_no_request() {
    let (mut s, report_file, err) = takes_signal("requests-all", &["all"]);
    assert_eq!(s.next_checkpoint().unwrap().0, "all");
    let said = stderr_lines(&err);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[1].contains(
            "own handler for SIGRTMAX: no signal is left that the program does not \
                          handle"
        ),
        "{said:?}"
    );
    let refused = fails_with(report(s.pid(), false), 2);
    assert!(
        refused.contains("has a handler of its own on every signal fdguard could use"),
        "{refused}"
    );
    s.resume();
    assert!(s.finish().status.success());
    assert!(read_reports(&report_file).is_empty());
}

/// `--report DIR/r.%p.log` for a shell that runs other programs: a file appears only with a
/// report, so none here.
#[test]
fn a_shell_script_leaves_no_empty_report_files() {
    let dir = scratch("requests-no-files");
    let reports = dir.join("reports");
    std::fs::create_dir(&reports).unwrap();
    let template = format!("{}/r.%p.log", reports.display());
    let out = fdguard(&["run", "--report", &template, "--", "sh", "-c"])
        .arg("ls / >/dev/null; date >/dev/null; echo x | cat >/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let left: Vec<_> = std::fs::read_dir(&reports).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A program under a plain `fdguard run`, stdout piped, stdin held, stderr to a file.
fn run_under_fdguard(args: &[&str], dir: &Path) -> Proc {
    let mut cmd = fdguard(&["run", "--"]);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    Proc::spawn(&mut cmd)
}

/// python3, node and a JVM (which owns SIGUSR2 for its thread suspension) answer both kinds of
/// report request under a plain `fdguard run`, and go on.
#[test]
fn runtimes_answer_report_requests_and_go_on() {
    let dir = scratch("requests-runtimes");
    let java_src = dir.join("Ready.java");
    std::fs::write(
        &java_src,
        "public class Ready { public static void main(String[] a) throws Exception {\n\
         java.util.List<java.io.FileInputStream> held = new java.util.ArrayList<>();\n\
         for (int i = 0; i < 5; i++) held.add(new java.io.FileInputStream(\"/etc/hosts\"));\n\
         System.out.println(\"ready\"); System.in.read(); System.out.println(\"bye \" + held.size()); } }\n",
    )
    .unwrap();
    let python = require("python3");
    let node = require("node");
    let java = require("java");
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "python3",
            vec![
                python.to_str().unwrap(),
                "-c",
                "import sys\nheld=[open('/etc/hosts') for _ in range(5)]\nprint('ready', \
                 flush=True)\nsys.stdin.readline()\nprint('bye', len(held))",
            ],
        ),
        (
            "node",
            vec![
                node.to_str().unwrap(),
                "-e",
                "const fs=require('fs'); const held=[0,1,2,3,4].map(()=>fs.openSync('/etc/hosts')); \
                 console.log('ready'); process.stdin.once('data',()=>{console.log('bye', held.length); \
                 process.exit(0)})",
            ],
        ),
        (
            "java",
            vec![java.to_str().unwrap(), java_src.to_str().unwrap()],
        ),
    ];
    for (name, args) in cases {
        let mut p = run_under_fdguard(&args, &dir);
        let mut out = BufReader::new(p.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "{name} did not start");
        let pid = p.id();
        let r = both_reports(pid);
        let hosts = r["fds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["desc"] == "/etc/hosts")
            .count();
        assert!(hosts >= 5, "{name}: the five files held: {r}");
        // Alive and unchanged: it reads its line and says goodbye as it would have.
        std::io::Write::write_all(p.stdin.as_mut().unwrap(), b"go\n").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "bye 5\n", "{name}");
        assert!(p.wait().unwrap().success(), "{name}");
        // The perf map `fdguard run` has node write (see runtime_node), left behind by V8.
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
    let crashed: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("hs_err"))
        .collect();
    assert!(crashed.is_empty(), "the JVM crashed: {crashed:?}");
}

fn ping(port: u16, ask: &[u8], answer: &[u8]) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut c, ask).unwrap();
    let mut buf = vec![0u8; answer.len()];
    std::io::Read::read_exact(&mut c, &mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf),
        String::from_utf8_lossy(answer)
    );
}

/// redis (which rewrites its environment for its process title) and nginx (which does too,
/// and whose master takes SIGUSR2 for a binary upgrade), master and worker: both kinds of
/// report request under a plain `fdguard run`; they go on serving, nginx upgrades nothing.
#[test]
fn servers_that_own_usr2_or_rewrite_their_environment_answer_and_go_on() {
    let dir = scratch("requests-servers");
    let redis = require("redis-server");
    let port = free_port();
    let port_arg = port.to_string();
    let redis_log = dir.join("redis.log");
    let mut r = run_under_fdguard(
        &[
            redis.to_str().unwrap(),
            "--port",
            &port_arg,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            redis_log.to_str().unwrap(),
        ],
        &dir,
    );
    wait_until("redis listening", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    both_reports(r.id());
    ping(port, b"PING\r\n", b"+PONG\r\n");
    r.kill_group();

    let nginx = require("nginx");
    let port = free_port();
    let conf = nginx_conf(&dir, port, "");
    let d = dir.display();
    let mut n = run_under_fdguard(
        &[
            nginx.to_str().unwrap(),
            "-p",
            &d.to_string(),
            "-c",
            conf.to_str().unwrap(),
        ],
        &dir,
    );
    let master = n.id();
    wait_until("nginx listening", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // The master listens before it starts its worker.
    wait_until("nginx's worker", Duration::from_secs(20), || {
        proc_children(master).len() == 1
    });
    let workers = proc_children(master);
    for pid in [master, workers[0]] {
        both_reports(pid);
    }
    ping(port, b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK");
    assert_eq!(proc_children(master), workers, "the same worker goes on");
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    assert!(
        !log.contains("upgrade") && !log.contains("execve") && !log.contains("signal 12"),
        "{log}"
    );
    n.kill_group();
}

/// Attached to a program that already handles SIGUSR2: fdguard takes a free real-time signal,
/// says which, `fdguard report` follows it, and the program's handler keeps SIGUSR2.
#[test]
fn attach_to_a_program_that_owns_usr2_takes_another_signal() {
    let dir = scratch("requests-attach");
    let prog = build_c_once("takes_signal", &["-O1", "-g"]);
    let mut s = Stepper::spawn(plain(&prog), &dir.join("unused"));
    let pid = s.pid();
    assert_eq!(s.next_checkpoint().unwrap().0, "default");
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "taken");
    let said = succeeds(fdguard(&["attach", &pid.to_string()]));
    assert!(
        said.contains(
            "fdguard: SIGUSR2 has a handler of the program's or is ignored: report requests use \
             SIGRTMAX instead"
        ),
        "{said}"
    );
    let r = both_reports(pid);
    assert_matches_kernel(&r, &proc_fds(pid), &[]);
    kill(pid, libc::SIGUSR2);
    s.resume();
    let (name, lines) = s.next_checkpoint().unwrap();
    assert_eq!(
        (name.as_str(), lines),
        ("counted", vec!["GOT 1".to_string()])
    );
    s.resume();
    assert!(s.finish().status.success());
}

/// More `fdguard report`s at once than the library runs report processes: each gets its own
/// complete report (those that find the processes busy are served when asked again).
#[test]
fn concurrent_report_requests_each_get_a_report() {
    let dir = scratch("requests-concurrent");
    let prog = build_c_once("takes_signal", &["-O1", "-g"]);
    let mut s = Stepper::spawn(plain_preloaded(&prog), &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "default");
    let pid = s.pid();
    let mut asks: Vec<Proc> = (0..6)
        .map(|_| Proc::spawn(report(pid, true).stdout(Stdio::piped())))
        .collect();
    for ask in asks.drain(..) {
        let out = ask.wait_with_output();
        assert!(out.status.success(), "{out:?}");
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (r["pid"].as_u64(), r["reason"].as_str()),
            (Some(pid.into()), Some("signal"))
        );
    }
    s.resume();
    s.resume();
    s.resume();
    let out = s.finish();
    assert!(out.status.success(), "{out:?}");
}

/// Requests that find every report process at work are answered once one ends, with nobody
/// asking again: the program's stderr pipe is full, so two report processes wait to write
/// their reports there; a third signal meanwhile makes a third report as soon as the test
/// drains the pipe, and that report counts the request it answered.
#[test]
fn a_request_made_while_report_processes_are_busy_is_answered_when_one_ends() {
    let prog = build_c_once("takes_signal", &["-O1", "-g"]);
    let text = reports_while_busy("requests-busy", &prog, &[], "default", 3, "");
    assert_eq!(text.matches("command: ").count(), 3, "{text}");
    assert!(
        text.contains("report requests answered by this report too: 1 "),
        "{text}"
    );
}

/// The same at the fd limit: a report process, a copy of a full fd table, must still be able to
/// wake the program when it ends (it once could not, and the waiting requests were never
/// answered). The first EMFILE's report and one request take both report processes; the other
/// two requests wait and are answered by one report.
#[test]
fn a_request_waiting_at_the_fd_limit_is_answered_when_a_report_process_ends() {
    let prog = build_c_once("exhaust", &["-O1", "-g"]);
    let text = reports_while_busy(
        "requests-busy-limit",
        &prog,
        &["1"],
        "exhausted",
        2,
        "ulimit -n 64; FDGUARD_THRESHOLD=0",
    );
    assert_eq!(text.matches("command: ").count(), 3, "{text}");
    assert_eq!(text.matches("reason: emfile").count(), 1, "{text}");
    assert!(
        text.contains("report requests answered by this report too: 2 "),
        "{text}"
    );
}

/// Runs `prog` under fdguard (after `setup`, shell words before the preload) with a stderr
/// pipe filled before it starts, so that report processes block writing; at `checkpoint`
/// asks for three reports, then reads stderr and lets the program go through `checkpoints`
/// stops. Returns stderr after the filling.
fn reports_while_busy(
    name: &str,
    prog: &Path,
    args: &[&str],
    checkpoint: &str,
    checkpoints: usize,
    setup: &str,
) -> String {
    let dir = scratch(name);
    // A pipe holds 64 KiB: the shell fills it before the program starts.
    let mut cmd = command("sh");
    cmd.args([
        "-c",
        &format!(
            r#"head -c 65536 /dev/zero >&2; lib=$1; shift; {setup} LD_PRELOAD="$lib" exec "$@""#
        ),
        "sh",
    ])
    .arg(lib_path())
    .arg(prog)
    .args(args)
    .stderr(Stdio::piped());
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, checkpoint);
    for _ in 0..3 {
        try_kill(s.pid(), libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut stderr = s.child.stderr.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = seen.clone();
    let read = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buf) {
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let reports_seen = || {
        let all = seen.lock().unwrap();
        String::from_utf8_lossy(&all).matches("command: ").count()
    };
    let deadline = Instant::now() + REPORT_WAIT;
    while reports_seen() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..checkpoints {
        s.resume();
    }
    let out = s.finish();
    assert!(out.status.success(), "{out:?}");
    read.join().unwrap();
    let all = seen.lock().unwrap().clone();
    assert!(all.len() > 65536 && all[..65536].iter().all(|b| *b == 0));
    String::from_utf8_lossy(&all[65536..]).into_owned()
}

/// The program under fdguard with nothing set but the preload.
fn plain_preloaded(prog: &Path) -> Command {
    let mut c = plain(prog);
    c.env("LD_PRELOAD", lib_path());
    c
}
