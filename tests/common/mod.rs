//! Shared test harness: build C programs, run them under `LD_PRELOAD`, trigger and read reports,
//! and compare them with the kernel's truth in `/proc/PID/fd`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// `target/<profile>/libfdguard.so`, built by cargo before integration tests run.
pub fn lib_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let lib = profile_dir.join("libfdguard.so");
    assert!(
        lib.exists(),
        "libfdguard.so not found at {} — run `cargo build` first",
        lib.display()
    );
    lib
}

/// A fresh directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fdguard-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/c/<name>.c` (with `tests/c` on the include path) into `dir`.
pub fn build_c(name: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    build_from("tests/c", name, name, dir, flags)
}

/// Compiles `examples/c/<name>.c` into `dir/<out>`.
pub fn build_example(name: &str, out: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    build_from("examples/c", name, out, dir, flags)
}

fn build_from(folder: &str, name: &str, out_name: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(folder);
    let out = dir.join(out_name);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(src.join(format!("{name}.c")))
        .arg(format!("-I{}", src.display()))
        .arg("-pthread")
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed for {name}.c");
    out
}

/// A command with fdguard preloaded and reports going to `report` as JSON lines.
pub fn guarded(program: &Path, report: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("LD_PRELOAD", lib_path())
        .env("FDGUARD_REPORT", report)
        .env("FDGUARD_FORMAT", "json");
    c
}

/// Every JSON report in the file (one per line).
pub fn read_reports(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON ({e}): {l}")))
        .collect()
}

/// Waits until the file holds at least `n` reports.
pub fn wait_reports(path: &Path, n: usize, timeout: Duration) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let r = read_reports(path);
        if r.len() >= n {
            return r;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for report {n} in {} (have {})",
            path.display(),
            r.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fds the kernel says a process has open, except fdguard's own report file (which fdguard
/// holds above the soft limit when the hard limit leaves room, and never reports).
pub fn proc_fds(pid: u32) -> BTreeSet<i64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/PID/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let is_report = link.to_string_lossy().contains("fdguard-report");
            if is_report {
                return None;
            }
            e.file_name().to_str()?.parse().ok()
        })
        .collect()
}

/// The report file for a test: its name marks it as fdguard's (see `proc_fds`).
pub fn report_path(dir: &Path) -> PathBuf {
    dir.join("fdguard-report.jsonl")
}

/// The fds a report lists.
pub fn report_fds(report: &Value) -> BTreeSet<i64> {
    report["fds"]
        .as_array()
        .expect("fds array")
        .iter()
        .map(|f| f["fd"].as_i64().expect("fd"))
        .collect()
}

/// The row for `fd` in a report.
pub fn fd_row(report: &Value, fd: i64) -> Option<&Value> {
    report["fds"].as_array()?.iter().find(|f| f["fd"] == fd)
}

/// Sends a signal to a process.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a child we started.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {pid} {sig}"
    );
}

/// How long a test may keep one program alive.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// A program that stops at checkpoints (`checkpoint.h`): it prints `CHECKPOINT <name>` and
/// waits for a line on stdin before going on.
pub struct Stepper {
    pub child: Child,
    /// Set when the test is done with the program; until then a watchdog kills it after
    /// `WATCHDOG` so that a hung program fails the test instead of hanging it.
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub report: PathBuf,
    reports_seen: usize,
}

impl Stepper {
    pub fn spawn(mut cmd: Command, report: &Path) -> Stepper {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (pid, flag) = (child.id(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if start.elapsed() > WATCHDOG {
                    eprintln!("watchdog: killing pid {pid} after {WATCHDOG:?}");
                    // SAFETY: kill(2) on the child this test started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Stepper {
            child,
            done,
            stdin,
            stdout,
            report: report.to_path_buf(),
            reports_seen: read_reports(report).len(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until the next checkpoint; returns its name and the lines printed before it
    /// (None at end of output).
    pub fn next_checkpoint(&mut self) -> Option<(String, Vec<String>)> {
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let l = line.trim_end();
            if let Some(name) = l.strip_prefix("CHECKPOINT ") {
                return Some((name.to_string(), lines));
            }
            lines.push(l.to_string());
        }
    }

    /// Reads stdout until a line starts with `prefix`; returns that line.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "program ended before printing {prefix:?}"
            );
            if line.starts_with(prefix) {
                return line.trim_end().to_string();
            }
        }
    }

    /// Asks for a report with SIGUSR2 and returns it.
    pub fn report_now(&mut self) -> Value {
        kill(self.pid(), libc::SIGUSR2);
        let all = wait_reports(&self.report, self.reports_seen + 1, Duration::from_secs(20));
        self.reports_seen = all.len();
        all.last().unwrap().clone()
    }

    /// Lets the program continue past the current checkpoint.
    pub fn resume(&mut self) {
        let _ = self.stdin.write_all(b"\n");
        let _ = self.stdin.flush();
    }

    /// Kills the program (examples that wait forever).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn finish(mut self) -> Output {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.stdin);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let status = self.child.wait().unwrap();
        Output {
            status,
            stdout: rest.into_bytes(),
            stderr: Vec::new(),
        }
    }
}

/// The names of a stack's functions, innermost first.
pub fn functions(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter_map(|f| f["function"].as_str().map(String::from))
        .collect()
}

/// The stack a report's `fds[].stack` points to.
pub fn stack_by_id(report: &Value, id: &Value) -> Value {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| &s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no stack {id}"))
}

/// Asserts that a report lists exactly the kernel's open fds, and that none is `untracked`
/// except those in `allowed_untracked`.
pub fn assert_matches_kernel(report: &Value, kernel: &BTreeSet<i64>, allowed_untracked: &[i64]) {
    assert_eq!(&report_fds(report), kernel, "report fds vs /proc/PID/fd");
    for row in report["fds"].as_array().unwrap() {
        if row["call"] == "untracked" {
            let fd = row["fd"].as_i64().unwrap();
            assert!(
                allowed_untracked.contains(&fd),
                "fd {fd} is untracked: {row}"
            );
        }
    }
}
