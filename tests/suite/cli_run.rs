//! `fdguard run` (the library's options as arguments) and `fdguard watch` (fd count over time,
//! against real processes: a C program and python3).
use crate::common::pace::slowdown;
use crate::common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn output(mut cmd: Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn run_turns_options_into_the_librarys_variables() {
    let mut cmd = fdguard(&[
        "run",
        "--signal",
        "RTMIN+3",
        "--threshold",
        "50",
        "--depth",
        "8",
        "--emfile",
        "shed",
        "--backoff-max-ms",
        "200",
        "--close-stacks",
        "--report",
        "/tmp/r.%p",
        "--",
        "sh",
        "-c",
        "env | grep -E '^(FDGUARD_|LD_PRELOAD=)' | sort",
    ]);
    cmd.env("LD_PRELOAD", "");
    let (code, out, err) = output(cmd);
    assert_eq!(code, Some(0), "{err}");
    let lib = cli_path().with_file_name("libfdguard.so");
    assert_eq!(
        out,
        format!(
            "FDGUARD_BACKOFF_MAX_MS=200\nFDGUARD_CLOSE_STACKS=1\nFDGUARD_DEPTH=8\n\
             FDGUARD_EMFILE=shed\nFDGUARD_REPORT=/tmp/r.%p\nFDGUARD_SIGNAL=RTMIN+3\n\
             FDGUARD_THRESHOLD=50\nLD_PRELOAD={}\n",
            lib.display()
        )
    );
}

#[test]
fn run_catches_a_leak_at_exit_and_sets_the_exit_status() {
    let dir = scratch("cli-run");
    let prog = build_example("fopen_leak", "fopen_leak", &dir, &["-O2", "-g"]);
    let report = dir.join("exit.json");
    let mut cmd = fdguard(&[
        "run",
        "--at-exit",
        "--leak-exitcode",
        "3",
        "--json",
        "--report",
    ]);
    cmd.arg(&report).arg("--").arg(&prog).arg("5");
    let (code, out, err) = output(cmd);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(out, "ready: served 5 requests\n");
    let r = &read_reports(&report)[0];
    assert_eq!(r["reason"], "exit");
    assert_eq!(r["stacks"][0]["count"], 5);
    assert_eq!(functions(&r["stacks"][0])[0], "load_setting");
}

#[test]
fn run_refuses_bad_options_and_missing_things() {
    let refused = |args: &[&str], code: i32, says: &str| {
        let (c, out, err) = output(fdguard(args));
        assert_eq!(c, Some(code), "{args:?}: {err}");
        assert!(out.is_empty());
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(
        &["run", "--threshold", "200", "--", "true"],
        2,
        "--threshold",
    );
    refused(
        &["run", "--signal", "SEGV", "--", "true"],
        2,
        "expected none, USR1",
    );
    refused(
        &["run", "--emfile", "spin", "--", "true"],
        2,
        "[possible values: pause, sleep, shed, off]",
    );
    refused(
        &["run", "--", "no-such-command-here"],
        127,
        "no-such-command-here: command not found",
    );
    refused(&["run"], 2, "required");
    let (c, _, err) = output({
        let mut c = fdguard(&["run", "--", "true"]);
        c.env("FDGUARD_LIB", "/nonexistent/libfdguard.so");
        c
    });
    assert_eq!(c, Some(2));
    assert_eq!(
        err,
        "fdguard: FDGUARD_LIB=/nonexistent/libfdguard.so is not a file\n"
    );
}

/// `fdguard watch` on a python3 that opens a file every 20 ms: the rate and the time left.
#[test]
fn watch_follows_a_growing_process() {
    // Samples far enough apart for python to open a file between any two of them, however busy
    // the machine; the rate it really opened them at is counted here around the watch. Python
    // opens one every fifth of that: its 600 last 120 samples, the watch takes 6.
    let interval = format!("{:.3}", 0.25 * slowdown());
    let mut py = Proc::spawn(
        command("python3")
            .args([
                "-c",
                "import sys,time\nfs=[]\nprint('go',flush=True)\nfor i in range(600):\n    \
                 fs.append(open('/etc/hosts'))\n    time.sleep(float(sys.argv[1])/5)\n\
                 sys.stdin.read()",
                &interval,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    py.first_line();
    let pid = py.id().to_string();
    let (before, t) = (proc_fds(py.id()).len(), Instant::now());
    let (code, out, err) = output(fdguard(&[
        "watch",
        &pid,
        "--interval",
        &interval,
        "--count",
        "6",
    ]));
    let opened_per_minute =
        (proc_fds(py.id()).len() - before) as f64 * 60.0 / t.elapsed().as_secs_f64();
    py.kill_group();
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "a header and one line per sample: {out}");
    assert!(
        lines[0].starts_with(&format!("watching pid {pid} (")) && lines[0].contains("python3"),
        "{out}"
    );
    let opens: Vec<usize> = lines[1..]
        .iter()
        .map(|l| {
            let counts = l.split_whitespace().nth(1).unwrap();
            counts
                .split('/')
                .next()
                .unwrap()
                .replace(',', "")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(opens.windows(2).all(|w| w[1] > w[0]), "growing: {opens:?}");
    // ~20 fds a second on an idle machine: 1,200 a minute.
    let last = lines[6];
    let rate: f64 = last
        .split("  ")
        .find(|p| p.contains(" fds/min"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("a rate: {last}"));
    assert!(
        (opened_per_minute / 3.0..opened_per_minute * 2.0).contains(&rate),
        "{last}: opened at {opened_per_minute:.0} fds/min"
    );
    assert!(
        last.contains("EMFILE in ~") && last.contains("| file "),
        "{last}"
    );
}

#[test]
fn watch_json_matches_proc_and_ends_with_the_process() {
    let dir = scratch("cli-watch");
    let prog = build_c_once("holder", &["-O1"]);
    let mut cmd = plain(&prog);
    cmd.arg(&dir).arg("0");
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "held");
    let pid = s.pid();
    let (code, out, err) = output(fdguard(&[
        "watch",
        &pid.to_string(),
        "--json",
        "--interval",
        "0.05",
        "--count",
        "3",
    ]));
    assert_eq!(code, Some(0), "{err}");
    let kernel = proc_fds(pid);
    let samples: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 3);
    for j in &samples {
        assert_eq!(j["open"], kernel.len());
        assert_eq!(j["tcp_states"]["CLOSE_WAIT"], 4);
        assert_eq!(j["pid"], pid);
    }
    assert_eq!(samples[2]["per_minute"], 0.0);
    assert_eq!(samples[2]["emfile_in_s"], Value::Null);
    s.finish();

    // A process that ends: watch says so and stops, well before its --count (30 s of samples).
    let mut child = Proc::spawn(command("sleep").arg("0.5"));
    let start = Instant::now();
    let watcher = Proc::spawn(
        fdguard(&[
            "watch",
            &child.id().to_string(),
            "--interval",
            "0.1",
            "--count",
            "300",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null()),
    );
    child.wait().unwrap();
    let out = watcher.wait_with_output();
    assert!(out.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited"));

    for (args, says) in [
        (["--interval", "0"], "--interval must be"),
        (["--count", "0"], "--count must be at least 1"),
    ] {
        let (c, _, err) = output(fdguard(&[
            "watch",
            &std::process::id().to_string(),
            args[0],
            args[1],
        ]));
        assert_eq!(c, Some(2));
        assert!(err.contains(says), "{err}");
    }
}
