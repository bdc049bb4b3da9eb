//! Shared test harness: build C programs, run them under `LD_PRELOAD`, trigger and read reports,
//! and compare them with the kernel's truth in `/proc/PID/fd`.

pub mod leaks;
pub mod pace;
pub mod procs;
pub mod server;

pub use procs::{Proc, command};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// `target/<profile>/<file>`, built (once per test binary and artifact) by running
/// `cargo build` with `what` (`--lib`, or `-p fdguard-cli`) for the profile of this test.
///
/// `cargo test` does not build a `cdylib` for integration tests, nor another package's
/// binary: without this, a fresh clone has nothing to preload, and after an edit the tests
/// would run a stale build. Cargo holds no lock while tests run, so building from here is
/// safe and, when nothing changed, takes a fraction of a second.
fn built(what: &[&str], file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .arg("build")
        .args(what)
        .args(["--quiet", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    let out = cargo.output().expect("running cargo build");
    assert!(
        out.status.success(),
        "cargo build {what:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = profile_dir.join(file);
    assert!(path.exists(), "{file} not found at {}", path.display());
    path
}

/// `target/<profile>/libfdguard.so`, freshly built.
pub fn lib_path() -> PathBuf {
    use std::sync::OnceLock;
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| built(&["--lib"], "libfdguard.so"))
        .clone()
}

/// `target/<profile>/fdguard`, the command, freshly built (with the library next to it).
pub fn cli_path() -> PathBuf {
    use std::sync::OnceLock;
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| {
        lib_path();
        built(&["-p", "fdguard-cli", "--bin", "fdguard"], "fdguard")
    })
    .clone()
}

/// Runs `cmd`, which must succeed; returns its stdout.
pub fn succeeds(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cmd`, which must exit with `code`, saying why in one line on stderr and printing
/// nothing on stdout; returns the line.
pub fn fails_with(mut cmd: Command, code: i32) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// The `fdguard` command with `args`, without any `FDGUARD_*` variable of the test's own.
pub fn fdguard(args: &[&str]) -> Command {
    let mut c = plain(&cli_path());
    c.args(args);
    c
}

/// A fresh directory for one test's files (its own, even when two tests pass the same name).
pub fn scratch(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fdguard-tests")
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/c/<name>.c` (with `tests/c` on the include path) into `dir`.
pub fn build_c(name: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    build_from("tests/c", name, name, dir, flags, &[])
}

/// Compiles `examples/c/<name>.c` into `dir/<out>`.
pub fn build_example(name: &str, out: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    build_from("examples/c", name, out, dir, flags, &[])
}

/// Compiles `<folder>/<name>.c` into `dir/<out_name>`; `post` goes after the source file.
fn build_from(
    folder: &str,
    name: &str,
    out_name: &str,
    dir: &Path,
    flags: &[&str],
    post: &[&str],
) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(folder);
    let out = dir.join(out_name);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(src.join(format!("{name}.c")))
        .arg(format!("-I{}", src.display()))
        .arg("-pthread")
        .args(post)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed for {name}.c");
    out
}

/// A command with fdguard preloaded and reports going to `report` as JSON lines.
pub fn guarded(program: &Path, report: &Path) -> Command {
    let mut c = command(program);
    c.env("LD_PRELOAD", lib_path())
        .env("FDGUARD_REPORT", report)
        .env("FDGUARD_FORMAT", "json");
    c
}

/// The complete lines of a report file: a line is complete once its newline is written (a
/// report still being written is not one yet).
pub fn report_lines(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn parse_report(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"))
}

/// Every JSON report in the file (one per line).
pub fn read_reports(path: &Path) -> Vec<Value> {
    report_lines(path).iter().map(|l| parse_report(l)).collect()
}

/// Waits until the file holds at least `n` complete report lines; returns the lines.
pub fn wait_report_lines(path: &Path, n: usize, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let r = report_lines(path);
        if r.len() >= n {
            return r;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for report {n} in {} (have {})",
            path.display(),
            r.len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the file holds at least `n` reports.
pub fn wait_reports(path: &Path, n: usize, timeout: Duration) -> Vec<Value> {
    wait_report_lines(path, n, timeout)
        .iter()
        .map(|l| parse_report(l))
        .collect()
}

/// The fds the kernel says a process has open. fdguard holds no fd of its own in the program's
/// process while reporting (reports are written by a child), so this is compared as is.
pub fn proc_fds(pid: u32) -> BTreeSet<i64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The value on the first line that starts with `prefix` (a program's `NAME value` output);
/// panics if there is none or it does not parse.
pub fn value_after<T: std::str::FromStr>(
    lines: impl IntoIterator<Item = impl AsRef<str>>,
    prefix: &str,
) -> T {
    let line = lines
        .into_iter()
        .find_map(|l| l.as_ref().strip_prefix(prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"));
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{prefix:?} line does not parse: {line:?}"))
}

/// The report file for a test.
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

/// Sends a signal to a process that may have exited already; false if it had.
pub fn try_kill(pid: u32, sig: i32) -> bool {
    // SAFETY: plain kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// How long a test may keep one program alive.
pub const WATCHDOG: Duration = Duration::from_secs(300);

/// How long a test waits for a report before it fails. A report child reads debug info
/// (about a second on an idle machine); with two busy loops and other tests doing the same on
/// two cores, first reports took over 20 s.
pub const REPORT_WAIT: Duration = Duration::from_secs(90);

/// A program that stops at checkpoints (`checkpoint.h`): it prints `CHECKPOINT <name>` and
/// waits for a line on stdin before going on.
pub struct Stepper {
    pub child: Proc,
    /// Set when the test is done with the program; until then a watchdog kills it after
    /// `WATCHDOG` so that a hung program fails the test instead of hanging it.
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `None` once `finish` closed it (the program sees EOF).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub report: PathBuf,
    reports_seen: usize,
}

impl Stepper {
    pub fn spawn(mut cmd: Command, report: &Path) -> Stepper {
        let mut child = Proc::spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (pid, flag) = (child.id(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if start.elapsed() > WATCHDOG {
                    eprintln!("watchdog: killing pid {pid} after {WATCHDOG:?}");
                    // SAFETY: kill(2) on the process group of the child this test started
                    // (`command`), not yet reaped: `done` is set before it is.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Stepper {
            child,
            done,
            stdin: Some(stdin),
            stdout,
            report: report.to_path_buf(),
            reports_seen: report_lines(report).len(),
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
        let pid = self.pid();
        self.report_of(pid)
    }

    /// Asks a process (the program, or a fork child of it writing to the same report file) for
    /// a report with SIGUSR2 and returns it. Reports written meanwhile for another reason
    /// (threshold, EMFILE) are passed over: the answer is the next `signal` report of `pid`.
    pub fn report_of(&mut self, pid: u32) -> Value {
        kill(pid, libc::SIGUSR2);
        let timeout = REPORT_WAIT;
        loop {
            // Only the new lines are parsed: a test may ask for hundreds of reports.
            let lines = wait_report_lines(&self.report, self.reports_seen + 1, timeout);
            for line in &lines[self.reports_seen..] {
                self.reports_seen += 1;
                let r = parse_report(line);
                if r["reason"] == "signal" && r["pid"] == pid {
                    return r;
                }
            }
        }
    }

    /// Lets the program continue past the current checkpoint.
    pub fn resume(&mut self) {
        self.answer("");
    }

    /// Lets the program continue past the current checkpoint with `line` (a program that reads
    /// what to do next).
    pub fn answer(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
            let _ = stdin.flush();
        }
    }

    /// Kills the program and its process group (examples that wait forever).
    pub fn kill(mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.child.kill_group();
    }

    pub fn finish(mut self) -> Output {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.stdin.take());
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

/// A test that panics (a failed assertion) must not leave its program running: it would keep
/// pipes open and the CPU busy long after the test. The watchdog stops first; then the `Proc`
/// kills the program's process group if it still runs.
impl Drop for Stepper {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
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

/// Like `build_c`, with extra arguments after the source file (libraries to link).
pub fn build_c_linked(name: &str, dir: &Path, flags: &[&str], post: &[&str]) -> PathBuf {
    build_from("tests/c", name, name, dir, flags, post)
}

/// Compiles `tests/c/<name>.c` into the shared library `dir/<out_name>`.
pub fn build_c_shared(name: &str, out_name: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    let flags = [&["-shared", "-fPIC"], flags].concat();
    build_from("tests/c", name, out_name, dir, &flags, &[])
}

/// Builds `tests/c/<name>.c` once per test binary (tests run on several threads and share it).
pub fn build_c_once(name: &str, flags: &[&str]) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let key = format!("{name} {}", flags.join(" "));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(&key) {
        return p.clone();
    }
    let dir = scratch(&format!("build-{}-{}", name, map.len()));
    let p = build_c(name, &dir, flags);
    map.insert(key, p.clone());
    p
}

/// The same program without fdguard (and without any `FDGUARD_*` variable).
pub fn plain(program: &Path) -> Command {
    let mut c = command(program);
    c.env_remove("LD_PRELOAD");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FDGUARD_") {
            c.env_remove(k);
        }
    }
    c
}

/// Sends stderr of `cmd` to a file (read it with `std::fs::read_to_string` after the run).
pub fn stderr_to(cmd: &mut Command, path: &Path) {
    cmd.stderr(std::fs::File::create(path).expect("create stderr file"));
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The strictest check of a report taken while the program is stopped: the report lists exactly
/// the kernel's fds, none untracked, and fdguard missed nothing and skipped nothing.
pub fn assert_exact(report: &Value, kernel: &BTreeSet<i64>) {
    assert_matches_kernel(report, kernel, &[]);
    assert_eq!(report["open"].as_u64(), Some(kernel.len() as u64), "open");
    assert_eq!(report["untracked"], 0, "untracked");
    assert_eq!(report["missed_closes"], 0, "missed_closes: {report}");
    assert_eq!(report["skipped"], 0, "skipped: {report}");
}

/// Checks the lines a program printed before a checkpoint against a report taken there:
/// `EXPECT <fd> <kind> <call> <desc substring>` and `GONE <fd>`. Returns how many were checked.
pub fn check_expectations(report: &Value, kernel: &BTreeSet<i64>, lines: &[String]) -> usize {
    let mut n = 0;
    for l in lines {
        if let Some(rest) = l.strip_prefix("EXPECT ") {
            let mut it = rest.splitn(4, ' ');
            let fd: i64 = it.next().unwrap().parse().unwrap();
            let (kind, call) = (it.next().unwrap(), it.next().unwrap());
            let desc = it.next().unwrap_or("");
            assert!(
                kernel.contains(&fd),
                "{l}: fd {fd} is not open in the kernel"
            );
            let row = fd_row(report, fd).unwrap_or_else(|| panic!("{l}: fd {fd} not in report"));
            assert_eq!(row["kind"], kind, "{l}: {row}");
            assert_eq!(row["call"], call, "{l}: {row}");
            let got = row["desc"].as_str().unwrap();
            assert!(got.contains(desc), "{l}: desc {got:?} lacks {desc:?}");
            n += 1;
        } else if let Some(fd) = l.strip_prefix("GONE ") {
            let fd: i64 = fd.parse().unwrap();
            assert!(!kernel.contains(&fd), "{l}: still open in the kernel");
            assert!(fd_row(report, fd).is_none(), "{l}: still in the report");
            n += 1;
        }
    }
    n
}

/// What a program following the EXPECT/GONE protocol did (see `run_protocol`).
pub struct Protocol {
    pub checkpoints: Vec<String>,
    /// Lines other than EXPECT/GONE, in order.
    pub lines: Vec<String>,
    /// EXPECT/GONE lines checked.
    pub checked: usize,
    pub output: Output,
}

/// Runs a program that stops at checkpoints after printing `EXPECT`/`GONE` lines (calls.c,
/// process.c): at every checkpoint the report must equal `/proc/PID/fd` exactly (`assert_exact`)
/// and satisfy every line. Reports are read from `report`.
pub fn run_protocol(cmd: Command, report: &Path) -> Protocol {
    let mut s = Stepper::spawn(cmd, report);
    let mut p = Protocol {
        checkpoints: Vec::new(),
        lines: Vec::new(),
        checked: 0,
        output: Output {
            status: std::process::ExitStatus::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        },
    };
    while let Some((name, lines)) = s.next_checkpoint() {
        let kernel = proc_fds(s.pid());
        let r = s.report_now();
        assert_exact(&r, &kernel);
        p.checked += check_expectations(&r, &kernel, &lines);
        p.lines.extend(
            lines
                .into_iter()
                .filter(|l| !l.starts_with("EXPECT ") && !l.starts_with("GONE ")),
        );
        p.checkpoints.push(name);
        s.resume();
    }
    p.output = s.finish();
    p
}

/// Tests that measure CPU take turns: a spinning server takes a whole core of two, and two
/// spinning at once would leave the measurements nothing to compare with.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The path of `program`, which a test needs: a missing one fails the test, saying so, rather
/// than letting it pass without running (`scripts/test.sh` installs what it can).
pub fn require(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed: this test needs it (scripts/test.sh installs it)")
        })
}

/// Builds `tests/go/<name>` into `dir` with the Go toolchain, offline, with the module
/// cache and build cache in `dir`; statically, or with cgo (a dynamically linked program).
pub fn build_go(name: &str, dir: &Path, cgo: bool) -> PathBuf {
    let go = require("go");
    let out = dir.join(format!("{name}-cgo{}", u8::from(cgo)));
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go")
        .join(name);
    let status = command(go)
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .status()
        .unwrap();
    assert!(status.success(), "go build of tests/go/{name} failed");
    out
}
