//! `fdguard top` and `fdguard metrics`: the whole host read at once, checked against processes
//! the test starts with a known number of fds under a known limit (`tests/c/fill.c`), against
//! `/proc/PID/fd` itself, and, for the metrics, against Prometheus's own checker (`promtool`).
use crate::common::server::{free_port, set_fd_limit, soft_limit};
use crate::common::*;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `fill` holding `open` fds under a soft limit of `limit`, stopped at its checkpoint; under
/// fdguard's library when `guarded_by` gives a report file.
fn fill(open: u64, limit: u64, guarded_by: Option<&std::path::Path>) -> Stepper {
    let prog = build_c_once("fill", &[]);
    let dir = scratch("top-fill");
    let report = report_path(&dir);
    let mut cmd = match guarded_by {
        Some(report) => guarded(&prog, report),
        None => plain(&prog),
    };
    cmd.arg(open.to_string());
    soft_limit(&mut cmd, limit);
    let mut s = Stepper::spawn(cmd, guarded_by.unwrap_or(&report));
    let (name, _) = s.next_checkpoint().expect("fill reached its checkpoint");
    assert_eq!(name, "full");
    s
}

fn json_lines(cmd: Command) -> Vec<Value> {
    succeeds(cmd)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The row of `pid` in a sample, and its place in the ranking.
fn row(sample: &Value, pid: u32) -> (usize, &Value) {
    sample["processes"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, r)| r["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in {sample}"))
}

#[test]
fn top_json_counts_each_process_like_proc_and_ranks_by_its_own_limit() {
    let dir = scratch("top-json");
    let high = fill(180, 200, None); // 90% of its limit
    let low = fill(60, 200, Some(&report_path(&dir))); // 30%, under the library
    let samples = json_lines(fdguard(&[
        "top",
        "--json",
        "--interval",
        "0.2",
        "--count",
        "2",
    ]));
    assert_eq!(samples.len(), 2);
    for (i, sample) in samples.iter().enumerate() {
        assert_eq!(sample["fdguard"], 1);
        let (hi_rank, hi) = row(sample, high.pid());
        let (lo_rank, lo) = row(sample, low.pid());
        assert!(hi_rank < lo_rank, "90% ranks above 30%: {hi} {lo}");
        for (s, r, open) in [(&high, hi, 180), (&low, lo, 60)] {
            assert_eq!(r["open"], proc_fds(s.pid()).len(), "{r}");
            assert_eq!(r["open"], open, "{r}");
            assert_eq!(r["limit"]["soft"], 200, "{r}");
            assert_eq!(r["by_kind"]["socket"], 2, "{r}");
            assert_eq!(r["comm"], "fill", "{r}");
            // Nothing changed between the two samples.
            let growth = if i == 0 { Value::Null } else { 0.into() };
            assert_eq!(r["growth"], growth, "{r}");
        }
        assert_eq!(hi["level"], "near", "{hi}");
        assert_eq!(lo["level"], "ok", "{lo}");
        assert_eq!(hi["under_fdguard"], Value::Null, "{hi}");
        assert_eq!(lo["under_fdguard"], "library", "{lo}");
        let host = &sample["host"];
        let handles = &host["file_handles"];
        assert!(handles["allocated"].as_u64().unwrap() >= 240, "{host}");
        assert!(handles["max"].as_u64().unwrap() > 0, "{host}");
        let sockets = &host["sockets"];
        assert!(sockets["held"].as_u64().unwrap() >= 4, "{host}");
        assert_eq!(
            sockets["held_by_no_fd"].as_u64().unwrap(),
            sockets["allocated"]
                .as_u64()
                .unwrap()
                .saturating_sub(sockets["held"].as_u64().unwrap()),
            "{host}"
        );
    }
    assert!(samples[1]["interval_s"].as_f64().unwrap() >= 0.15);
    // By count, the one with more fds is above too; and in text, marked.
    let by_count = json_lines(fdguard(&["top", "--json", "--sort", "count"]));
    assert!(row(&by_count[0], high.pid()).0 < row(&by_count[0], low.pid()).0);
    let text = succeeds(fdguard(&["top", "--top", "100000"]));
    let line = |pid: u32| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("pid {pid} not in\n{text}"))
            .to_string()
    };
    assert!(line(high.pid()).contains(" near "), "{text}");
    assert!(line(low.pid()).contains(" library "), "{text}");
    assert!(
        text.lines().next().unwrap().contains("file handles"),
        "{text}"
    );
}

#[test]
fn top_and_metrics_refuse_bad_input_in_one_line() {
    for args in [
        &["top", "--interval", "0"][..],
        &["top", "--count", "0"],
        &["top", "--top", "0"],
        &["metrics", "--top", "0"],
        &["metrics", "--listen", "not an address"],
        &["metrics", "--stacks-every=-1"],
        // Refused by the argument parser itself: one line too.
        &["metrics", "--stacks-every", "-1"],
        &["top", "--bogus"],
        &["top", "--top"],
        &["metrics", "--stacks-every", "NaN"],
        &[
            "metrics",
            "--textfile",
            "/x.prom",
            "--listen",
            "127.0.0.1:0",
        ],
    ] {
        fails_with(fdguard(args), 2);
    }
}

/// `promtool check metrics` on `text`: passes, or the test fails with what it said.
fn promtool_accepts(text: &str) {
    let promtool = require("promtool");
    let mut check = command(promtool);
    check
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Proc::spawn(&mut check);
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_name_the_process_nearest_its_limit() {
    let high = fill(190, 200, None);
    // --stacks 0: not asking the reports of other tests' processes under fdguard.
    let text = succeeds(fdguard(&["metrics", "--top", "1000", "--stacks", "0"]));
    promtool_accepts(&text);
    let id = format!("pid=\"{}\",comm=\"fill\"", high.pid());
    let open = proc_fds(high.pid()).len();
    for want in [
        format!("fdguard_process_open_fds{{{id}}} {open}"),
        format!("fdguard_process_max_fds{{{id}}} 200"),
        format!("fdguard_process_open_fds_by_kind{{{id},kind=\"socket\"}} 2"),
    ] {
        assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
    }
    let worst: f64 = value_after(text.lines(), "fdguard_host_worst_fd_ratio ");
    assert!(worst >= 0.95, "{worst}");
}

#[test]
fn metrics_give_the_fds_held_by_the_creation_stacks_of_a_process_under_fdguard() {
    let dir = scratch("top-stacks");
    let report = report_path(&dir);
    let held = fill(300, 301, Some(&report));
    // Its soft limit lowered under what it holds (seed 001's server, started from a shell with
    // more): a ratio of 3 puts it first among the test processes of the host, so that only it
    // is asked for a report.
    set_fd_limit(held.pid(), 100, None);
    let text = succeeds(fdguard(&["metrics", "--top", "1"]));
    promtool_accepts(&text);
    // Every fd fill made, it made in main: all those the kernel lists but the ones it was
    // started with (its stdio, the harness's), which its report calls inherited.
    let report: Value = serde_json::from_str(&succeeds(fdguard(&[
        "report",
        "--json",
        &held.pid().to_string(),
    ])))
    .unwrap();
    let inherited = report["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["call"] == "inherited")
        .count();
    let made = proc_fds(held.pid()).len() - inherited;
    let id = format!("pid=\"{}\",comm=\"fill\"", held.pid());
    let want = format!("fdguard_process_stack_open_fds{{{id},stack=\"main\"}} {made}");
    assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
    let age: f64 = value_after(
        text.lines(),
        &format!("fdguard_process_stack_report_age_seconds{{{id}}} "),
    );
    assert!((0.0..5.0).contains(&age), "{age}");
    // Served, a process is asked once per --stacks-every: the second scrape gives the first
    // one's stacks, older by the time between them.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = fdguard(&["metrics", "--listen", &addr, "--top", "1"]);
    server.args(["--stacks-every", "600"]).stderr(Stdio::null());
    let _server = Proc::spawn(&mut server);
    wait_until("the endpoint listening", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let age_of = |answer: String| -> f64 {
        assert!(answer.contains(&want), "{want} not in\n{answer}");
        let prefix = format!("fdguard_process_stack_report_age_seconds{{{id}}} ");
        value_after(answer.lines(), &prefix)
    };
    let first = age_of(get(port, "/metrics"));
    std::thread::sleep(Duration::from_millis(500));
    let second = age_of(get(port, "/metrics"));
    assert!(second >= first + 0.5, "{first} then {second}");
}

/// One HTTP GET over loopback; the whole answer.
fn get(port: u16, path: &str) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn metrics_endpoint_answers_a_scrape_over_loopback() {
    let high = fill(100, 110, None);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = fdguard(&["metrics", "--listen", &addr, "--stacks", "0"]);
    server.stderr(Stdio::null());
    let _server = Proc::spawn(&mut server);
    wait_until("the endpoint listening", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let answer = get(port, "/metrics");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let id = format!("pid=\"{}\",comm=\"fill\"", high.pid());
    assert!(
        body.contains(&format!("fdguard_process_open_fds{{{id}}} 100\n")),
        "{body}"
    );
    promtool_accepts(body);
    assert!(get(port, "/").starts_with("HTTP/1.1 404 "));
    // A second scrape: the endpoint serves on.
    assert!(get(port, "/metrics").starts_with("HTTP/1.1 200 "));
}

#[test]
fn metrics_textfile_is_whole_whenever_it_is_there() {
    let dir = scratch("top-textfile");
    let path = dir.join("fdguard.prom");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    assert!(
                        text.ends_with('\n')
                            && text.contains("\nfdguard_host_processes_unreadable "),
                        "a partial file was seen:\n{text}"
                    );
                    seen += 1;
                }
            }
            seen
        })
    };
    for _ in 0..10 {
        succeeds(fdguard(&[
            "metrics",
            "--textfile",
            path.to_str().unwrap(),
            "--stacks",
            "0",
        ]));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0, "the reader never saw the file");
    promtool_accepts(&std::fs::read_to_string(&path).unwrap());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        [std::ffi::OsString::from("fdguard.prom")],
        "temporary files left"
    );
}

#[test]
fn the_documented_alert_rule_passes_promtool() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/command.md")).unwrap();
    let metrics = &doc[doc
        .find("\n## metrics")
        .expect("docs/command.md has ## metrics")..];
    let rule = metrics
        .split("```yaml\n")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("a yaml block under ## metrics");
    assert!(rule.contains("fdguard_process_max_fds"), "{rule}");
    let path = scratch("top-rule").join("fdguard.rules.yml");
    std::fs::write(&path, rule).unwrap();
    let out = command(require("promtool"))
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
