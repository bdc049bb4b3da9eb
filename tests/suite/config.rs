//! Configuration through `FDGUARD_*` variables, end to end (tests/c/basic.c as the program):
//! each invalid value gives exactly one stderr line and the default behaviour; DISABLE, SIGNAL
//! and REPORT do what the README says, including the report file's safety rules.
use crate::common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn basic() -> PathBuf {
    build_c_once("basic", &["-O1", "-g"])
}

/// basic.c under fdguard with JSON reports to `report` plus `env`, stderr to `dir/stderr.txt`,
/// stopped at its first checkpoint.
fn start(dir: &Path, report: &Path, env: &[(&str, &str)]) -> Stepper {
    start_with_lines(dir, report, env).0
}

/// `start`, also returning what basic.c printed before stopping (its fd numbers).
fn start_with_lines(dir: &Path, report: &Path, env: &[(&str, &str)]) -> (Stepper, Vec<String>) {
    let mut cmd = guarded(&basic(), report);
    cmd.envs(env.iter().copied());
    stderr_to(&mut cmd, &dir.join("stderr.txt"));
    let mut s = Stepper::spawn(cmd, report);
    let (name, lines) = s.next_checkpoint().expect("checkpoint");
    assert_eq!(name, "open");
    (s, lines)
}

/// Lets basic.c run to its end; it must exit 0.
fn finish(mut s: Stepper) -> String {
    s.resume();
    assert_eq!(s.next_checkpoint().expect("checkpoint").0, "closed");
    s.resume();
    let out = s.finish();
    assert!(out.status.success(), "{:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.txt")).unwrap()
}

/// Whether the process has a handler installed for `sig` (SigCgt in /proc/PID/status).
fn catches(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cgt = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    cgt & (1u64 << (sig - 1)) != 0
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// One invalid value: exactly one stderr line naming the variable, the value and the default,
/// and a JSON report on SIGUSR2 that still matches the kernel (default behaviour otherwise).
fn invalid_value_keeps_the_default(var: &str, value: &str, default: &str) -> Value {
    let dir = scratch(&format!("config-{var}"));
    let report = dir.join("report.jsonl");
    let mut s = start(&dir, &report, &[(var, value)]);
    let err = stderr_of(&dir);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line for {var}={value:?}:\n{err}"
    );
    assert!(
        lines[0].starts_with(&format!("fdguard: {var}={value:?} is not valid")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(&format!("using the default {default}")),
        "{}",
        lines[0]
    );
    let kernel = proc_fds(s.pid());
    let r = s.report_now();
    assert_exact(&r, &kernel);
    finish(s);
    assert_eq!(stderr_of(&dir), err, "nothing more on stderr");
    r
}

#[test]
fn invalid_signal_warns_once_and_sigusr2_still_reports() {
    invalid_value_keeps_the_default("FDGUARD_SIGNAL", "KILL", "USR2");
}

#[test]
fn invalid_depth_warns_once_and_stacks_use_the_default_depth() {
    let r = invalid_value_keeps_the_default("FDGUARD_DEPTH", "1000", "32");
    // With the default depth, creation stacks are captured (main, at least).
    let frames = r["stacks"][0]["frames"].as_array().unwrap();
    assert!(frames.iter().any(|f| f["function"] == "main"), "{frames:?}");
}

#[test]
fn invalid_threshold_warns_once_and_keeps_80() {
    invalid_value_keeps_the_default("FDGUARD_THRESHOLD", "-3", "80");
}

#[test]
fn invalid_disable_warns_once_and_fdguard_stays_on() {
    invalid_value_keeps_the_default("FDGUARD_DISABLE", "maybe", "0");
}

/// FORMAT=xml: one line, and the report is text (the default), ending with its last line.
#[test]
fn invalid_format_warns_once_and_reports_in_text() {
    let dir = scratch("config-format");
    let report = dir.join("report.txt");
    let s = start(&dir, &report, &[("FDGUARD_FORMAT", "xml")]);
    let err = stderr_of(&dir);
    assert_eq!(
        err,
        "fdguard: FDGUARD_FORMAT=\"xml\" is not valid (expected text or json); using the \
         default text\n"
    );
    let pid = s.pid();
    kill(pid, libc::SIGUSR2);
    let end = format!("=={pid}== fdguard: end of report\n");
    wait_until("a text report", REPORT_WAIT, || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.ends_with(&end))
    });
    let text = std::fs::read_to_string(&report).unwrap();
    let prefix = format!("=={pid}==");
    assert!(text.lines().all(|l| l.starts_with(&prefix)), "{text}");
    assert!(text.starts_with(&format!("=={pid}== fdguard: ")), "{text}");
    assert!(text.contains("/etc/hosts"), "{text}");
    finish(s);
    assert_eq!(stderr_of(&dir), err);
}

/// REPORT="": one line, and reports go to stderr (the default).
#[test]
fn empty_report_path_warns_once_and_reports_to_stderr() {
    let dir = scratch("config-report-empty");
    let stderr = dir.join("stderr.txt");
    let mut s = start(&dir, &stderr, &[("FDGUARD_REPORT", "")]);
    let err = stderr_of(&dir);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("fdguard: FDGUARD_REPORT=\"\" is not valid")
            && err.ends_with("using the default stderr\n"),
        "{err}"
    );
    // The stderr file holds that line, then the JSON report.
    let kernel = proc_fds(s.pid());
    kill(s.pid(), libc::SIGUSR2);
    wait_until("a report on stderr", REPORT_WAIT, || {
        stderr_of(&dir).lines().count() >= 2 && stderr_of(&dir).ends_with('\n')
    });
    let all = stderr_of(&dir);
    let report: Value = serde_json::from_str(all.lines().nth(1).unwrap()).unwrap();
    assert_exact(&report, &kernel);
    // Resume without the Stepper's report counting (the warning line is not a report).
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "closed");
    s.resume();
    assert!(s.finish().status.success());
}

/// A misspelt variable is named on stderr (once); fdguard otherwise runs as usual.
#[test]
fn unknown_variable_is_named_once() {
    let dir = scratch("config-unknown");
    let report = dir.join("report.jsonl");
    let mut s = start(&dir, &report, &[("FDGUARD_TRESHOLD", "5")]);
    assert_eq!(
        stderr_of(&dir),
        "fdguard: unknown variable FDGUARD_TRESHOLD ignored (see the README for the list)\n"
    );
    let kernel = proc_fds(s.pid());
    assert_exact(&s.report_now(), &kernel);
    finish(s);
}

/// DISABLE=1: no handler, nothing on stderr, and the program prints what it prints without
/// fdguard. (SIGUSR2 would kill it, so none is sent.)
#[test]
fn disable_installs_nothing_and_changes_nothing() {
    let plain_out = {
        let dir = scratch("config-disable-plain");
        let mut cmd = plain(&basic());
        stderr_to(&mut cmd, &dir.join("stderr.txt"));
        let s = Stepper::spawn(cmd, &dir.join("none"));
        finish_from_start(s)
    };
    for value in ["1", "true", " yes ", "ON"] {
        let dir = scratch("config-disable");
        let report = dir.join("report.jsonl");
        let (s, fds) = start_with_lines(&dir, &report, &[("FDGUARD_DISABLE", value)]);
        assert_eq!(fds.join("\n"), plain_out.0, "DISABLE={value:?}");
        let pid = s.pid();
        assert_eq!(threads(pid), 1, "DISABLE={value:?}: no thread");
        assert!(
            !catches(pid, libc::SIGUSR2),
            "DISABLE={value:?}: no handler"
        );
        let out = finish(s);
        assert_eq!(stderr_of(&dir), "", "DISABLE={value:?}");
        assert!(!report.exists());
        // fd numbers and everything else printed are the same as without fdguard.
        assert_eq!(out, plain_out.1, "DISABLE={value:?}");
    }
    // Sanity: enabled, fdguard has its handler (and still no thread: reports are made by
    // children, see src/child.rs).
    let dir = scratch("config-enabled");
    let s = start(&dir, &dir.join("report.jsonl"), &[]);
    assert_eq!(threads(s.pid()), 1);
    assert!(catches(s.pid(), libc::SIGUSR2));
    finish(s);
}

/// Runs basic.c (not yet started) to its end; returns (FDS line, output after the first stop).
fn finish_from_start(mut s: Stepper) -> (String, String) {
    let (_, lines) = s.next_checkpoint().unwrap();
    (lines.join("\n"), finish(s))
}

/// SIGNAL=USR1: SIGUSR1 asks for reports, and SIGUSR2 has no handler of fdguard's.
#[test]
fn signal_usr1_triggers_reports() {
    let dir = scratch("config-usr1");
    let report = dir.join("report.jsonl");
    let s = start(&dir, &report, &[("FDGUARD_SIGNAL", "USR1")]);
    let pid = s.pid();
    assert!(catches(pid, libc::SIGUSR1) && !catches(pid, libc::SIGUSR2));
    let kernel = proc_fds(pid);
    kill(pid, libc::SIGUSR1);
    let r = wait_reports(&report, 1, REPORT_WAIT);
    assert_eq!(r[0]["reason"], "signal");
    assert_exact(&r[0], &kernel);
    finish(s);
    assert_eq!(stderr_of(&dir), "");
}

/// SIGNAL=none: no handler at all.
#[test]
fn signal_none_installs_no_handler() {
    let dir = scratch("config-none");
    let s = start(
        &dir,
        &dir.join("report.jsonl"),
        &[("FDGUARD_SIGNAL", "none")],
    );
    let pid = s.pid();
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP, libc::SIGWINCH] {
        assert!(!catches(pid, sig), "signal {sig} caught");
    }
    finish(s);
    assert_eq!(stderr_of(&dir), "");
}

/// `%p` becomes the pid and `%t` a UTC timestamp like 20261122T030405Z.
#[test]
fn report_path_expands_pid_and_time() {
    let dir = scratch("config-template");
    let template = dir.join("r.%p.%t.jsonl");
    let mut cmd = guarded(&basic(), &template);
    stderr_to(&mut cmd, &dir.join("stderr.txt"));
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    s.next_checkpoint().unwrap();
    let pid = s.pid();
    kill(pid, libc::SIGUSR2);
    let prefix = format!("r.{pid}.");
    let mut found = None;
    wait_until("the report file", REPORT_WAIT, || {
        found = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_string().unwrap())
            .find(|n| n.starts_with(&prefix));
        found
            .as_ref()
            .is_some_and(|n| !read_reports(&dir.join(n)).is_empty())
    });
    let name = found.unwrap();
    let stamp = name
        .strip_prefix(&prefix)
        .and_then(|n| n.strip_suffix(".jsonl"))
        .unwrap();
    let b = stamp.as_bytes();
    assert!(
        b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit),
        "timestamp {stamp:?}"
    );
    assert_eq!(read_reports(&dir.join(&name))[0]["pid"], pid);
    finish_plain(s);
    assert_eq!(stderr_of(&dir), "");
}

/// Resumes both checkpoints of basic.c without asking for reports.
fn finish_plain(mut s: Stepper) {
    s.resume();
    s.next_checkpoint().unwrap();
    s.resume();
    assert!(s.finish().status.success());
}

/// A report path naming a file of another user is not written to (the README: never into a
/// file that is not a regular file owned by the current user): one line, reports on stderr.
#[test]
fn report_file_of_another_user_is_not_written() {
    let dir = scratch("config-other-user");
    let report = dir.join("report.jsonl");
    std::fs::write(&report, "theirs\n").unwrap();
    if std::os::unix::fs::chown(&report, Some(65534), Some(65534)).is_err() {
        eprintln!("cannot chown here (not root): skipped");
        return;
    }
    let s = start(&dir, &report, &[]);
    kill(s.pid(), libc::SIGUSR2);
    wait_until("a report on stderr", REPORT_WAIT, || {
        stderr_of(&dir).lines().any(|l| l.starts_with('{')) && stderr_of(&dir).ends_with('\n')
    });
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "theirs\n");
    let err = stderr_of(&dir);
    assert!(
        err.starts_with(&format!(
            "fdguard: FDGUARD_REPORT: cannot write {}",
            report.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
    finish_plain(s);
}

/// A report file that cannot be created: one line naming the path (said as soon as fdguard
/// loads, when it first tries the file), the reports on stderr.
#[test]
fn unwritable_report_path_falls_back_to_stderr_with_one_line() {
    let dir = scratch("config-unwritable");
    let path = dir.join("no-such-dir").join("r.jsonl");
    let s = start(&dir, &path, &[]);
    let kernel = proc_fds(s.pid());
    // Two reports: the second must not repeat the line.
    for n in 1..=2 {
        kill(s.pid(), libc::SIGUSR2);
        wait_until("a report on stderr", REPORT_WAIT, || {
            stderr_of(&dir)
                .lines()
                .filter(|l| l.starts_with('{'))
                .count()
                >= n
                && stderr_of(&dir).ends_with('\n')
        });
    }
    let err = stderr_of(&dir);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(
        lines[0],
        format!(
            "fdguard: FDGUARD_REPORT: cannot write {}: No such file or directory (os error 2); \
             writing reports to stderr",
            path.display()
        )
    );
    for line in &lines[1..] {
        assert_exact(&serde_json::from_str(line).unwrap(), &kernel);
    }
    assert!(!path.exists());
    finish_plain(s);
}

/// A symlink at the report path is not followed: its target is untouched, the report goes to
/// stderr with one line naming the path.
#[test]
fn symlink_at_report_path_is_not_followed() {
    let dir = scratch("config-symlink");
    let target = dir.join("target.txt");
    std::fs::write(&target, "precious\n").unwrap();
    let link = dir.join("report.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let s = start(&dir, &link, &[]);
    kill(s.pid(), libc::SIGUSR2);
    wait_until("a report on stderr", REPORT_WAIT, || {
        stderr_of(&dir).lines().any(|l| l.starts_with('{')) && stderr_of(&dir).ends_with('\n')
    });
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    let err = stderr_of(&dir);
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "fdguard: FDGUARD_REPORT: cannot write {}",
            link.display()
        )),
        "{first}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
    finish_plain(s);
}

/// Runs basic.c with reports to `report` and asks for one: it must come on stderr (a file
/// here), after one line that names the path and says `why`. Returns what stderr holds.
fn refused_with_one_line(dir: &Path, report: &Path, why: &str) -> String {
    let s = start(dir, report, &[]);
    // Said at load, before any report.
    let said = stderr_of(dir);
    assert_eq!(
        said,
        format!(
            "fdguard: FDGUARD_REPORT: cannot write {}: {why}; writing reports to stderr\n",
            report.display()
        )
    );
    let kernel = proc_fds(s.pid());
    kill(s.pid(), libc::SIGUSR2);
    wait_until("a report on stderr", REPORT_WAIT, || {
        stderr_of(dir).lines().any(|l| l.starts_with('{')) && stderr_of(dir).ends_with('\n')
    });
    let err = stderr_of(dir);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert_exact(
        &serde_json::from_str(err.lines().nth(1).unwrap()).unwrap(),
        &kernel,
    );
    finish_plain(s);
    err
}

/// A directory of the report path that is a symlink of another user (who could have planted
/// it in a directory they may write) is not followed: one line naming it, reports on stderr,
/// nothing created where it points.
#[test]
fn symlinked_directory_of_another_user_is_not_followed() {
    let dir = scratch("config-foreign-dir-link");
    let real = dir.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.join("theirs");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    if std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).is_err() {
        eprintln!("cannot chown here (not root): skipped");
        return;
    }
    let report = link.join("report.jsonl");
    let why = format!(
        "{} is a symlink owned by uid 65534, who may have planted it (fdguard follows only \
         root's symlinks and this user's)",
        link.display()
    );
    refused_with_one_line(&dir, &report, &why);
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "nothing created"
    );
}

/// A directory of the report path that is a symlink of this user (the tests run as root: of
/// root's, as `/var/run -> /run` is), relative or absolute, is followed.
#[test]
fn symlinked_directory_of_this_user_is_followed() {
    let dir = scratch("config-own-dir-link");
    let real = dir.join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.join("absolute")).unwrap();
    std::os::unix::fs::symlink("absolute", dir.join("relative")).unwrap();
    let report = dir.join("relative").join("report.jsonl");
    let mut s = start(&dir, &report, &[]);
    let kernel = proc_fds(s.pid());
    assert_exact(&s.report_now(), &kernel);
    assert_eq!(read_reports(&real.join("report.jsonl")).len(), 1);
    finish(s);
    assert_eq!(stderr_of(&dir), "");
}

/// A report file with another name (a hard link: another user's file, with
/// `fs.protected_hardlinks` off, or one they may still write through theirs) is not written
/// to: one line saying how many links it has, reports on stderr, the file untouched.
#[test]
fn hard_linked_report_file_is_not_written() {
    let dir = scratch("config-hard-link");
    let other = dir.join("other.txt");
    std::fs::write(&other, "precious\n").unwrap();
    let report = dir.join("report.jsonl");
    std::fs::hard_link(&other, &report).unwrap();
    let before = std::fs::metadata(&other).unwrap().modified().unwrap();
    refused_with_one_line(
        &dir,
        &report,
        "it has 2 links (a report file must have no other name, which could be another \
         user's file)",
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "precious\n");
    assert_eq!(
        std::fs::metadata(&other).unwrap().modified().unwrap(),
        before
    );
}

/// An existing report file is appended to, never truncated.
#[test]
fn existing_report_file_is_appended_to() {
    let dir = scratch("config-append");
    let report = dir.join("report.jsonl");
    let before = "{\"earlier\":\"report\"}\n";
    std::fs::write(&report, before).unwrap();
    let mut s = start(&dir, &report, &[]);
    s.report_now();
    s.report_now();
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.starts_with(before), "{text}");
    assert_eq!(read_reports(&report).len(), 3);
    finish(s);
}

/// A report file fdguard creates has mode 0600 whatever the umask (here 0).
#[test]
fn created_report_file_has_mode_0600() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("config-mode");
    let report = dir.join("report.jsonl");
    let mut cmd = guarded(&basic(), &report);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut s = Stepper::spawn(cmd, &report);
    s.next_checkpoint().unwrap();
    s.report_now();
    let mode = std::fs::metadata(&report).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
    finish(s);
}

/// Every variable accepts surrounding spaces (the README says so).
#[test]
fn values_with_surrounding_spaces_are_accepted() {
    let dir = scratch("config-spaces");
    let report = dir.join("report.jsonl");
    let s = start(
        &dir,
        &report,
        &[("FDGUARD_SIGNAL", " USR1 "), ("FDGUARD_FORMAT", " json ")],
    );
    assert!(catches(s.pid(), libc::SIGUSR1));
    kill(s.pid(), libc::SIGUSR1);
    wait_reports(&report, 1, REPORT_WAIT);
    finish(s);
    assert_eq!(stderr_of(&dir), "");
}

/// Reports asked for while chatter.c's threads write lines of their own to the same stderr.
const CHATTER_REPORTS: usize = 4;

/// What a stderr pipe carried: the lines of chatter.c's threads, fdguard's report lines, and
/// any other line.
struct Carried {
    pid: u32,
    /// The program's path and its long argument: the report's command line.
    command: String,
    lines: Vec<String>,
}

/// chatter.c under fdguard with reports in `format` to `report` (`stderr`, or a path that
/// falls back to it), its stderr a pipe this test reads
/// slowly (512 bytes a millisecond), so that the pipe is full most of the time, as behind a
/// busy log shipper; `CHATTER_REPORTS` reports asked for, one after the other, while the
/// program's threads write their lines. Its long argument makes a report line longer than
/// what a pipe keeps whole.
fn chatter_on_a_pipe(format: &str, report: &str) -> Carried {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let prog = build_c_once("chatter", &["-O1", "-g"]);
    let long_arg: String = (0..1500).map(|i| format!("{i:04}")).collect();
    let mut cmd = command(&prog);
    cmd.arg(&long_arg)
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_FORMAT", format)
        .env("FDGUARD_REPORT", report)
        .stderr(std::process::Stdio::piped());
    let mut s = Stepper::spawn(cmd, Path::new("/nonexistent"));
    let pid = s.pid();
    let mut pipe = s.child.stderr.take().expect("piped stderr");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let ends = Arc::new(AtomicUsize::new(0));
    let end = format!("=={pid}== fdguard: end of report");
    let reader = {
        let (lines, ends) = (lines.clone(), ends.clone());
        std::thread::spawn(move || {
            let mut partial = Vec::new();
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                partial.extend_from_slice(&buf[..n]);
                while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=i).collect();
                    let line = String::from_utf8_lossy(&line[..i]).into_owned();
                    if line == end {
                        ends.fetch_add(1, Ordering::Relaxed);
                    }
                    lines.lock().unwrap().push(line);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(partial.is_empty(), "an unfinished last line: {partial:?}");
        })
    };
    assert_eq!(s.next_checkpoint().unwrap().0, "chatting");
    for n in 1..=CHATTER_REPORTS {
        kill(pid, libc::SIGUSR2);
        wait_until("a report on the pipe", REPORT_WAIT, || {
            ends.load(Ordering::Relaxed) >= n
        });
    }
    s.resume();
    assert!(s.finish().status.success());
    // The pipe ends when the program and its report processes have all closed it.
    reader.join().unwrap();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    Carried {
        pid,
        command: format!("{} {long_arg}", prog.display()),
        lines,
    }
}

impl Carried {
    /// Checks that no line is torn: each of the program's is whole and in its thread's order,
    /// and each of fdguard's report lines starts with `==PID==`; the reports are complete,
    /// with their long line whole once its pieces are joined. Returns the other lines.
    fn others_after_checking(&self) -> Vec<&str> {
        let prefix = format!("=={}==", self.pid);
        let mut next_of_thread = [0u64; 3];
        let mut others = Vec::new();
        let mut report_lines: Vec<String> = Vec::new();
        for line in &self.lines {
            if let Some(rest) = line.strip_prefix("chatter ") {
                let mut words = rest.split(' ');
                let (t, n, filler) = (words.next(), words.next(), words.next());
                let t: usize = t.and_then(|t| t.parse().ok()).expect(line);
                let letter = (b'a' + t as u8) as char;
                assert_eq!(n, Some(next_of_thread[t].to_string().as_str()), "{line}");
                assert_eq!(
                    filler,
                    Some(letter.to_string().repeat(100).as_str()),
                    "{line}"
                );
                assert_eq!(words.next(), None, "{line}");
                next_of_thread[t] += 1;
            } else if let Some(piece) = line.strip_prefix(&format!("{prefix}+")) {
                report_lines
                    .last_mut()
                    .expect("a line to continue")
                    .push_str(piece);
            } else if let Some(rest) = line.strip_prefix(&prefix) {
                assert!(rest.is_empty() || rest.starts_with(' '), "{line}");
                report_lines.push(line.clone());
            } else {
                others.push(line.as_str());
            }
        }
        assert!(
            next_of_thread.iter().all(|n| *n > 0),
            "every thread wrote: {next_of_thread:?}"
        );
        let reports: Vec<&[String]> = report_lines
            .split_inclusive(|l| *l == format!("{prefix} fdguard: end of report"))
            .collect();
        assert_eq!(reports.len(), CHATTER_REPORTS, "{report_lines:#?}");
        let command = format!("{prefix} command: {}", self.command);
        for r in reports {
            assert!(r[0].starts_with(&format!("{prefix} fdguard: ")), "{r:#?}");
            assert!(r.contains(&command), "the command line, whole: {r:#?}");
            assert!(r.iter().any(|l| l.contains(" in hold_cache ")), "{r:#?}");
        }
        others
    }
}

/// Text reports to a stderr pipe that the program's threads write to as well: every line
/// whole, the program's and fdguard's (each one write of at most PIPE_BUF bytes), and nothing
/// else said.
#[test]
fn text_reports_on_a_shared_stderr_pipe_are_never_torn() {
    let carried = chatter_on_a_pipe("text", "stderr");
    assert_eq!(carried.others_after_checking(), Vec::<&str>::new());
}

/// Why JSON reports go to a stderr pipe as text, in the line that says so.
const PIPE_TEARS_JSON: &str = "stderr is a pipe, where the program's own output would cut into \
                               JSON reports (a write there is whole only up to 4096 bytes)";

/// JSON reports to a stderr pipe: a JSON report is one line larger than a pipe keeps whole,
/// so fdguard says once (at load) that they go there as text, and they do, line by line.
#[test]
fn json_reports_on_a_shared_stderr_pipe_are_text_said_once() {
    let carried = chatter_on_a_pipe("json", "stderr");
    let said = format!(
        "fdguard: FDGUARD_FORMAT=json: {PIPE_TEARS_JSON}; writing reports there as text, line \
         by line (FDGUARD_REPORT=FILE for JSON)"
    );
    assert_eq!(carried.others_after_checking(), [said.as_str()]);
    assert_eq!(carried.lines[0], said, "said at load");
}

/// A report file that cannot be written sends JSON reports to a stderr pipe as text too, and
/// its one line says both.
#[test]
fn json_reports_falling_back_to_a_stderr_pipe_are_text_said_in_the_same_line() {
    let dir = scratch("config-chatter-fallback");
    let path = dir.join("no-such-dir").join("r.jsonl");
    let carried = chatter_on_a_pipe("json", path.to_str().unwrap());
    let said = format!(
        "fdguard: FDGUARD_REPORT: cannot write {}: No such file or directory (os error 2); \
         writing reports to stderr, as text ({PIPE_TEARS_JSON})",
        path.display()
    );
    assert_eq!(carried.others_after_checking(), [said.as_str()]);
}

/// A bad-close notice in JSON to a stderr pipe is written as text as well.
#[test]
fn json_bad_close_notice_on_a_stderr_pipe_is_text() {
    let dir = scratch("config-notice-pipe");
    let prog = build_c("double_close", &dir, &["-O1", "-g"]);
    let out = command(&prog)
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_FORMAT", "json")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let fd: i64 = value_after(String::from_utf8_lossy(&out.stdout).lines(), "fd ");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("fdguard: FDGUARD_FORMAT=json: stderr is a pipe"),
        "{err}"
    );
    // The notice, every line of it prefixed with the pid: text.
    let (prefix, first) = lines[1].split_once("== ").expect("a text line");
    assert!(
        first.starts_with(&format!(
            "fdguard: close({fd}) failed with EBADF: fd {fd} is not open"
        )),
        "{err}"
    );
    assert!(lines[1..].iter().all(|l| l.starts_with(prefix)), "{err}");
    assert!(err.contains(" in cleanup_twice "), "{err}");
}
