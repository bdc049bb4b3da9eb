//! `fdguard attach PID` and `fdguard detach PID` on real HotSpot JVMs started *without*
//! fdguard, through the JVM's attach listener (no ptrace): an idle JVM, whose threads all
//! wait, attaches; leaks made afterwards are reported with their stacks; the JVM's fds are
//! untouched and it runs on and exits as it would have; detach and attach again, on every JDK
//! installed; what a JVM that cannot be attached this way gets (the attach mechanism
//! disabled, `-Xrs`); a JVM of another user.
use crate::common::server::fd_soft_limit;
use crate::common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// A Java program that waits, sleeping, until a file `go` appears, then leaks five
/// `FileInputStream`s of `/etc/hosts`, and ends when a file `stop` appears. It only ever
/// sleeps in `Thread.sleep`: no thread of it waits in a system call but futexes.
const IDLE: &str = "import java.io.*; import java.util.*;\n\
public class Idle { public static void main(String[] a) throws Exception {\n\
  File go = new File(a[0]), stop = new File(a[1]);\n\
  List<FileInputStream> held = new ArrayList<>();\n\
  System.out.println(\"ready\");\n\
  while (!stop.exists()) {\n\
    if (held.isEmpty() && go.exists()) {\n\
      for (int i = 0; i < 5; i++) held.add(new FileInputStream(\"/etc/hosts\"));\n\
      System.out.println(\"leaked \" + held.size());\n\
    }\n\
    Thread.sleep(100);\n\
  }\n\
  System.out.println(\"bye \" + held.size());\n\
} }\n";

/// How long a JVM may take to say something (start, leak, end) on a busy machine.
const JVM_WAIT: Duration = Duration::from_secs(90);

/// The directory holding `Idle.class`, compiled once (for Java 11, so that every JDK runs it).
fn idle_classes() -> PathBuf {
    use std::sync::OnceLock;
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            let dir = scratch("jvm-attach-classes");
            std::fs::write(dir.join("Idle.java"), IDLE).unwrap();
            let mut javac = command(require("javac"));
            javac
                .args(["--release", "11", "-d"])
                .arg(&dir)
                .arg(dir.join("Idle.java"));
            succeeds(javac);
            dir
        })
        .clone()
}

/// An `Idle` JVM, its stdout read line by line.
struct Jvm {
    proc: Proc,
    lines: Receiver<String>,
    /// Every line it printed so far.
    said: Vec<String>,
    /// Its working directory, where `go` and `stop` are made.
    dir: PathBuf,
}

impl Jvm {
    /// Starts `java FLAGS -cp ... Idle` (`prefix` before it: `setpriv ...`) in a fresh
    /// directory and waits until it is ready.
    fn start(name: &str, java: &Path, flags: &[&str], prefix: &[&str]) -> Jvm {
        let dir = scratch(name);
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = command(first);
                c.args(rest).arg(java);
                c
            }
            None => command(java),
        };
        cmd.args(flags)
            .arg("-cp")
            .arg(idle_classes())
            .arg("Idle")
            .arg(dir.join("go"))
            .arg(dir.join("stop"))
            .current_dir(&dir)
            .stdout(Stdio::piped());
        stderr_to(&mut cmd, &dir.join("stderr.log"));
        let mut proc = Proc::spawn(&mut cmd);
        let out = BufReader::new(proc.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut jvm = Jvm {
            proc,
            lines,
            said: Vec::new(),
            dir,
        };
        jvm.expect("ready");
        jvm
    }

    fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Waits until it prints `line` (a thread dump may come before).
    fn expect(&mut self, line: &str) {
        let until = Instant::now() + JVM_WAIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let got = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!("the JVM did not print {line:?}: {e:?}; {:?}", self.said)
            });
            self.said.push(got.clone());
            if got == line {
                return;
            }
        }
    }

    /// Makes it leak its five streams.
    fn leak(&mut self) {
        std::fs::write(self.dir.join("go"), "").unwrap();
        self.expect("leaked 5");
    }

    /// Makes it end; it must exit normally after saying how many streams it held, without a
    /// crash report. Returns everything it printed.
    fn finish(mut self, held: usize) -> Vec<String> {
        std::fs::write(self.dir.join("stop"), "").unwrap();
        self.expect(&format!("bye {held}"));
        let status = self.proc.wait().unwrap();
        assert!(status.success(), "{status:?}");
        self.said.extend(self.lines.try_iter());
        assert_no_crash(&self.dir);
        self.said
    }

    /// Its attach trigger files, wherever HotSpot looks for them.
    fn triggers(&self) -> Vec<PathBuf> {
        let name = format!(".attach_pid{}", self.pid());
        [self.dir.join(&name), Path::new("/tmp").join(&name)]
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    /// Asserts it still runs, has no signal pending and left no trigger file behind.
    fn assert_untouched(&self) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_ne!(field("State:").chars().next(), Some('Z'), "{status}");
        assert_eq!(field("ShdPnd:"), "0000000000000000", "{status}");
        assert_eq!(self.triggers(), Vec::<PathBuf>::new());
    }
}

/// Asserts that the JVM run in `dir` left no crash report there (`hs_err_pid*.log`).
pub fn assert_no_crash(dir: &Path) {
    let crashed: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("hs_err"))
        .collect();
    assert!(crashed.is_empty(), "the JVM crashed: {crashed:?}");
}

/// What each open fd of `pid` refers to and how: its link, and its position and flags.
fn fd_identities(pid: u32) -> BTreeMap<i64, String> {
    proc_fds(pid)
        .into_iter()
        .filter_map(|fd| {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let how: Vec<&str> = info
                .lines()
                .filter(|l| l.starts_with("pos:") || l.starts_with("flags:"))
                .collect();
            Some((fd, format!("{} {}", link.display(), how.join(" "))))
        })
        .collect()
}

/// True if every thread of `pid` waits in `futex` (system call 202 on x86-64).
fn all_in_futex(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .all(|t| {
            std::fs::read_to_string(t.path().join("syscall"))
                .is_ok_and(|s| s.split(' ').next() == Some("202"))
        })
}

/// `fdguard attach PID` with `args`, which must succeed; returns what it printed.
fn attach(pid: u32, args: &[&str]) -> String {
    let mut c = fdguard(&["attach", &pid.to_string()]);
    c.args(args);
    succeeds(c)
}

/// `fdguard report PID --json`, parsed.
fn report(pid: u32) -> Value {
    serde_json::from_str(&succeeds(fdguard(&["report", &pid.to_string(), "--json"]))).unwrap()
}

/// Asserts that the report lists the five leaked streams of `/etc/hosts`, each made by an
/// `open` fdguard saw, with a creation stack of Java frames: the JDK's `FileInputStream` and
/// the program's `Idle.main` (the agent set the JVM up for them as it attached).
fn assert_leak_reported(r: &Value) {
    let rows: Vec<&Value> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["desc"] == "/etc/hosts")
        .collect();
    assert_eq!(rows.len(), 5, "{r}");
    for row in rows {
        assert!(
            row["call"].as_str().unwrap().starts_with("open"),
            "made after the attach: {row}"
        );
        let names = functions(&stack_by_id(r, &row["stack"]));
        assert!(
            names.iter().any(|n| n == "java.io.FileInputStream.<init>")
                && names.iter().any(|n| n == "Idle.main"),
            "the Java frames: {names:?}"
        );
    }
}

/// The `java` of every JDK installed under `/usr/lib/jvm` (each once), the one on `PATH` first.
pub fn jdks() -> Vec<PathBuf> {
    let first = require("java");
    let mut all = vec![first.canonicalize().unwrap()];
    for entry in std::fs::read_dir("/usr/lib/jvm")
        .into_iter()
        .flatten()
        .flatten()
    {
        let java = entry.path().join("bin/java");
        if let Ok(real) = java.canonicalize()
            && !all.contains(&real)
        {
            all.push(real);
        }
    }
    all
}

/// An idle JVM, started without fdguard, attaches in one command; a leak made after the attach
/// is in `fdguard report`'s JSON with its stack; every fd it had is untouched; report requests
/// reach it on the library's own signal, never SIGUSR2 (HotSpot's, which would kill it); it
/// runs on and exits normally.
#[test]
fn an_idle_jvm_attaches_and_its_later_leaks_are_reported() {
    let mut jvm = Jvm::start("jvm-attach-idle", &require("java"), &[], &[]);
    let pid = jvm.pid();
    // Idle as the issue found it: no thread waits in a system call a ptrace attach could use.
    wait_until("every thread of the JVM in futex", JVM_WAIT, || {
        all_in_futex(pid)
    });
    let before = fd_identities(pid);
    let command = fdguard(&["attach", &pid.to_string()]);
    let t = Instant::now();
    let said = succeeds(command);
    let took = t.elapsed();
    println!("attach of an idle JVM took {took:?}: {said}");
    assert!(said.contains(&format!("attached to pid {pid}")), "{said}");
    assert!(
        said.contains("SIGUSR2 has a handler of the program's"),
        "the report signal moved off HotSpot's: {said}"
    );
    let after = fd_identities(pid);
    for (fd, what) in &before {
        assert_eq!(after.get(fd), Some(what), "fd {fd} changed");
    }
    assert_eq!(jvm.triggers(), Vec::<PathBuf>::new());

    jvm.leak();
    let r = report(pid);
    assert_leak_reported(&r);
    assert_matches_kernel(&r, &proc_fds(pid), &[]);
    let stderr = std::fs::read_to_string(jvm.dir.join("stderr.log")).unwrap();
    assert!(
        !stderr.contains("fdguard"),
        "nothing on the JVM's stderr: {stderr}"
    );
    jvm.finish(5);
}

/// Detached, then attached again, through the JVM's door on every JDK installed (HotSpot
/// calls `Agent_OnAttach` at every `load` of the library): reports stop, then come again with
/// the stacks of what was leaked after the second attach.
#[test]
fn a_jvm_detaches_and_attaches_again() {
    for java in jdks() {
        let mut jvm = Jvm::start("jvm-attach-again", &java, &[], &[]);
        let pid = jvm.pid();
        let what = java.display();
        println!("{what}");
        let said = attach(pid, &[]);
        assert!(said.contains("attached"), "{what}: {said}");
        let said = succeeds(fdguard(&["detach", &pid.to_string()]));
        assert!(
            said.contains(&format!("detached from pid {pid}")),
            "{what}: {said}"
        );
        let err = fails_with(fdguard(&["report", &pid.to_string()]), 2);
        assert!(err.contains("detached"), "{what}: {err}");
        let err = fails_with(fdguard(&["detach", &pid.to_string()]), 2);
        assert!(err.contains("not attached"), "{what}: {err}");
        let said = attach(pid, &["--depth", "48"]);
        assert!(said.contains("attached"), "{what}: {said}");
        jvm.leak();
        assert_leak_reported(&report(pid));
        jvm.finish(5);
    }
}

/// A JVM started with `-XX:+DisableAttachMechanism` has no attach listener: refused at once
/// when its performance data says so (no file made, no signal sent: it prints no thread
/// dump), after the timeout when it keeps none; no trigger file is left.
#[test]
fn a_jvm_without_the_attach_mechanism_is_refused() {
    let java = require("java");
    let flags = ["-XX:+DisableAttachMechanism"];
    let jvm = Jvm::start("jvm-attach-disabled", &java, &flags, &[]);
    let err = fails_with(fdguard(&["attach", &jvm.pid().to_string()]), 2);
    assert!(err.contains("-XX:+DisableAttachMechanism"), "{err}");
    jvm.assert_untouched();
    std::thread::sleep(Duration::from_millis(300));
    let said = jvm.finish(0);
    assert!(
        !said.iter().any(|l| l.contains("Full thread dump")),
        "{said:?}"
    );

    let flags = ["-XX:+DisableAttachMechanism", "-XX:-UsePerfData"];
    let jvm = Jvm::start("jvm-attach-disabled-noperf", &java, &flags, &[]);
    let err = fails_with(
        fdguard(&["attach", &jvm.pid().to_string(), "--timeout", "1"]),
        2,
    );
    assert!(
        err.contains("no attach listener") && err.contains("-XX:+DisableAttachMechanism"),
        "{err}"
    );
    jvm.assert_untouched();
    jvm.finish(0);
}

/// A JVM started with `-Xrs` leaves SIGQUIT to its default action (which would end it) and
/// starts its attach listener at startup: it attaches with no signal. When its socket is gone
/// (a `/tmp` cleaner), fdguard refuses and sends nothing: it runs on.
#[test]
fn a_jvm_with_reduced_signals_attaches_without_a_signal_or_is_refused() {
    let java = require("java");
    let mut jvm = Jvm::start("jvm-attach-xrs", &java, &["-Xrs"], &[]);
    let pid = jvm.pid();
    let said = attach(pid, &[]);
    assert!(said.contains(&format!("attached to pid {pid}")), "{said}");
    jvm.assert_untouched();
    jvm.leak();
    assert_leak_reported(&report(pid));
    jvm.finish(5);

    let jvm = Jvm::start("jvm-attach-xrs-nosocket", &java, &["-Xrs"], &[]);
    let pid = jvm.pid();
    let socket = PathBuf::from(format!("/tmp/.java_pid{pid}"));
    wait_until("the listener's socket", JVM_WAIT, || socket.exists());
    std::fs::remove_file(&socket).unwrap();
    let err = fails_with(fdguard(&["attach", &pid.to_string()]), 2);
    assert!(
        err.contains("does not handle SIGQUIT") && err.contains("sent none"),
        "{err}"
    );
    // SIGQUIT's default action would have ended it by now.
    std::thread::sleep(Duration::from_millis(300));
    jvm.assert_untouched();
    jvm.finish(0);
}

/// A JVM running as another user (nobody): attached by that user (the trigger file goes to its
/// `/tmp`, its working directory being root's), reported on and detached by root (who connects
/// as the JVM's user), attached again by root.
#[test]
fn a_jvm_of_another_user_attaches() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root to run a JVM as nobody");
        return;
    }
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let as_nobody = |args: &[&str]| -> Command {
        let mut c = command(nobody[0]);
        c.args(&nobody[1..]).arg(cli_path()).args(args);
        c
    };
    let mut jvm = Jvm::start("jvm-attach-nobody", &require("java"), &[], &nobody);
    let pid = jvm.pid().to_string();
    let said = succeeds(as_nobody(&["attach", &pid]));
    assert!(said.contains("attached"), "{said}");
    jvm.assert_untouched();
    jvm.leak();
    assert_leak_reported(&report(jvm.pid()));
    let said = succeeds(fdguard(&["detach", &pid]));
    assert!(said.contains("detached"), "{said}");
    let said = attach(jvm.pid(), &[]);
    assert!(said.contains("attached"), "{said}");
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("fdguard-attach.{pid}.")))
        .collect();
    assert!(left.is_empty(), "options files left: {left:?}");
    jvm.finish(5);
}

/// The soft limit that leaves exactly one fd free below it to a process with `fds` open.
fn one_free(fds: &std::collections::BTreeSet<i64>) -> i64 {
    (1..)
        .find(|&s| s - fds.range(..s).count() as i64 == 1)
        .unwrap()
}

/// A JVM with too few fds free is refused before anything is sent: its listener would stop at
/// the first connection, out of fds, leaving a socket nothing answers on. Such a socket (here
/// one the test holds, never accepting) is replaced: the JVM starts a listener of its own.
#[test]
fn a_jvm_without_free_fds_is_refused_and_a_socket_nobody_answers_is_replaced() {
    let mut jvm = Jvm::start("jvm-attach-nofds", &require("java"), &[], &[]);
    let pid = jvm.pid();
    let soft = one_free(&proc_fds(pid));
    let prlimit = |soft: &str| {
        let mut c = command(require("prlimit"));
        c.args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")]);
        succeeds(c);
    };
    let was = fd_soft_limit(pid).to_string();
    prlimit(&soft.to_string());
    let err = fails_with(fdguard(&["attach", &pid.to_string()]), 2);
    assert!(err.contains("prlimit --pid"), "{err}");
    jvm.assert_untouched();
    let socket = PathBuf::from(format!("/tmp/.java_pid{pid}"));
    assert!(!socket.exists(), "no listener started");
    prlimit(&was);

    let nobody_answers = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let t = Instant::now();
    let said = attach(pid, &["--timeout", "30"]);
    assert!(said.contains("attached"), "{said}");
    println!("attach past a socket nobody answers took {:?}", t.elapsed());
    drop(nobody_answers);
    jvm.leak();
    assert_leak_reported(&report(pid));
    jvm.finish(5);
}
