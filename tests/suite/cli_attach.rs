//! `fdguard attach PID` and `fdguard detach PID` on servers started *without* fdguard: driven
//! to EMFILE (`prlimit --pid`, loopback clients), seen spinning, attached, and measured: the
//! spin stops within 2 s, existing clients are served, accepting resumes when an fd frees.
//! Also: a leaky program attached mid-leak, four threads churning fds while attached, detach,
//! and what attach refuses.
//!
//! CPU is judged against what the machine gives right now (`common::pace`): the server spins
//! when it takes at least half of what a busy loop beside it gets (measured again, up to
//! `pace::TRIES` windows, while other work starves it), and it is calm once attached when it
//! takes at most `CALM` of what it took spinning.
use crate::common::pace::{Shares, cpu_shares, slowdown, spinning, until};
use crate::common::server::*;
use crate::common::*;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The CPU a server may keep once attached, as a share of what it took spinning before.
const CALM: f64 = 0.05;

/// A server calm once attached: at most `CALM` of what it took spinning.
fn assert_calm(what: &str, calm: Shares, spin: Shares) {
    assert!(
        calm.process <= CALM * spin.demand(),
        "{what}: {calm}; spinning it had {spin}"
    );
}

fn attach(pid: u32, extra: &[&str]) -> String {
    let mut c = fdguard(&["attach", &pid.to_string()]);
    c.args(extra);
    succeeds(c)
}

fn tracer_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .unwrap()
        .trim()
        .to_string()
}

/// Spins a server at EMFILE, attaches, and checks it calms down and recovers.
fn unspin(prog: &Path, args: &[&str], echoes: bool) {
    let _one = one_at_a_time();
    let dir = scratch(&format!(
        "attach-{}",
        prog.file_name().unwrap().to_string_lossy()
    ));
    let mut s = Server::start(prog, args, &dir, None);
    let mut echo = echoes.then(|| connect(s.port));
    if echo.is_some() {
        s.wait_for("accepted", 0, Duration::from_secs(5));
    }
    // The round trips after attach are paired with a control's (see `paired_round_trips`).
    let control = echoes.then(|| control(prog, args));
    let mut control_echo = control.as_ref().map(|c| connect(c.port));
    s.squeeze_soft();
    let from = s.log_len();
    let mut holders: Vec<TcpStream> = (0..HOLDERS).map(|_| connect(s.port)).collect();
    s.wait_for("accept:", from, Duration::from_secs(5));
    let spin = spinning("before attach", s.pid(), Duration::from_millis(700));

    let report = dir.join("attached.json");
    let t = Instant::now();
    let said = attach(s.pid(), &["--json", "--report", report.to_str().unwrap()]);
    let took = t.elapsed();
    assert!(said.contains("1 listening"), "{said}");
    assert_eq!(tracer_of(s.pid()), "0", "no longer traced");
    // Within 2 s of the attach, the spin is gone.
    std::thread::sleep(Duration::from_secs(1));
    let calm = cpu_shares(s.pid(), Duration::from_secs(1));
    println!(
        "{}: before, {spin}; attach took {took:?}; over the next second but one, {calm}",
        prog.display()
    );
    assert_calm("after attach", calm, spin);
    if let (Some(c), Some(control)) = (echo.as_mut(), control_echo.as_mut()) {
        // A stall shows in every window; a hiccup of the machine's is measured again.
        until(
            "existing client served as the control's",
            || paired_round_trips(c, control, 20),
            |(rtt, control)| rtt.median <= control.median * SERVED,
        );
    }
    // Accepting again within one backoff period (1 s) once an fd is free, and what the machine
    // adds to it.
    let before = s.log_len();
    holders.remove(0);
    let within = Duration::from_secs(1) + Duration::from_millis(500).mul_f64(calm.slowdown());
    s.wait_for("accepted", before, within);
    // The reports are fdguard's: the listener and what was open are listed as before attach.
    let r = succeeds(fdguard(&["report", &s.pid().to_string(), "--json"]));
    let r: Value = serde_json::from_str(&r).unwrap();
    assert!(r["emfile"]["accept_failures"].as_u64().unwrap() >= 1, "{r}");
    assert_matches_kernel(&r, &proc_fds(s.pid()), &[]);

    // Detached: the GOT entries are back, the spin with them; attached again: calm again.
    holders.push(connect(s.port));
    s.wait_for("accept:", s.log_len(), Duration::from_secs(5));
    let said = succeeds(fdguard(&["detach", &s.pid().to_string()]));
    assert!(said.contains("call sites restored"), "{said}");
    // A thread already sleeping in the hook's accept pause (up to 1 s) finishes that pause
    // first; the calls after it reach libc directly.
    std::thread::sleep(Duration::from_millis(1100));
    let again = spinning("once detached", s.pid(), Duration::from_millis(700));
    let err = fails_with(fdguard(&["report", &s.pid().to_string()]), 2);
    assert!(err.contains("detached"), "{err}");
    let state = |pid: u32| -> Value {
        let j: Value =
            serde_json::from_str(&succeeds(fdguard(&["inspect", "--json", &pid.to_string()])))
                .unwrap();
        j["fdguard_state"].clone()
    };
    assert_eq!(state(s.pid()), "detached");
    attach(s.pid(), &[]);
    std::thread::sleep(Duration::from_secs(1));
    let calm = cpu_shares(s.pid(), Duration::from_secs(1));
    assert_calm("after attaching again", calm, again);
    assert_eq!(state(s.pid()), "attached");
}

#[test]
fn attach_unspins_a_level_triggered_epoll_server() {
    let dir = scratch("attach-build-lt");
    let prog = build_example("event_server", "event_server", &dir, &["-O2", "-g"]);
    unspin(&prog, &["lt"], true);
}

#[test]
fn attach_unspins_a_blocking_accept_loop() {
    let dir = scratch("attach-build-blocking");
    let prog = build_example("accept_spin", "accept_spin", &dir, &["-O2", "-g"]);
    unspin(&prog, &[], false);
}

/// How a server is squeezed to its usage.
#[derive(PartialEq)]
enum Squeeze {
    /// Its soft limit lowered, the hard one left above it.
    Soft,
    /// Soft and hard limits (systemd's `LimitNOFILE=N`), and fdguard run as root without
    /// CAP_SYS_RESOURCE (as in a container): the limit could not be raised either way.
    Hard,
}

/// Each fd of `pid` with its link, its `fdinfo` flags, mount and inode, and the fds it shares
/// its open file description with (`kcmp`). Not the position, which the program's writes move
/// (and fdguard's, on its stderr, once attached), nor the events an epoll set waits for (the
/// accept guard hides a listener there).
fn fds_as_the_kernel_says(pid: u32) -> BTreeMap<i64, String> {
    let fds = proc_fds(pid);
    fds.iter()
        .filter_map(|&fd| {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let info: Vec<&str> = info
                .lines()
                .filter(|l| {
                    ["flags:", "mnt_id:", "ino:"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect();
            // SAFETY: kcmp takes only numbers; KCMP_FILE is 0.
            let same =
                |other: i64| unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, 0, fd, other) == 0 };
            let shares: Vec<&i64> = fds.iter().filter(|o| **o != fd && same(**o)).collect();
            let (link, info) = (link.display(), info.join(" "));
            Some((fd, format!("{link} {info} shared with {shares:?}")))
        })
        .collect()
}

/// A real server started without fdguard (`cmd`, listening on `port`): squeezed to its
/// usage (`how`), filled by clients that keep their connections, seen spinning, attached,
/// calm. The first client is asked `ping` before and after, if given, and must get `pong`
/// back.
fn unspin_server(
    name: &str,
    mut cmd: Command,
    port: u16,
    ping: Option<(&[u8], &[u8])>,
    how: Squeeze,
) {
    let _one = one_at_a_time();
    let server = Proc::spawn(cmd.stdin(Stdio::null()));
    let pid = server.id();
    wait_until("the server listening", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // The probe's connection and Redis's log file (opened per line) are open for a moment:
    // counted as used, each would leave one more slot than the two below.
    std::thread::sleep(Duration::from_millis(300).mul_f64(slowdown()));
    let lowest_free = {
        let open = proc_fds(pid);
        (0..).find(|fd| !open.contains(fd)).unwrap()
    };
    let n = lowest_free as u64 + 2;
    set_fd_limit(pid, n, matches!(how, Squeeze::Hard).then_some(n));
    // Two fit under the limit; the other six stay in the backlog, readable forever.
    let mut holders: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut ask = |what: &str| {
        if let Some((q, a)) = ping {
            let c = &mut holders[0];
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            std::io::Write::write_all(c, q).unwrap();
            let mut buf = vec![0u8; a.len()];
            std::io::Read::read_exact(c, &mut buf).unwrap();
            assert_eq!(buf, a, "{name} answers {what}");
        }
    };
    ask("before attach");
    let spin = spinning(
        &format!("{name} at EMFILE"),
        pid,
        Duration::from_millis(700),
    );
    // No fd free: one is borrowed for the moment of loading, and every fd is as it was.
    let before = fds_as_the_kernel_says(pid);
    let said = match how {
        Squeeze::Soft => attach(pid, &[]),
        Squeeze::Hard => {
            let mut c = command("setpriv");
            c.args(["--bounding-set=-sys_resource", "--"])
                .arg(cli_path())
                .args(["attach", &pid.to_string()])
                .env("FDGUARD_LIB", lib_path());
            succeeds(c)
        }
    };
    assert!(said.contains("was borrowed for that moment"), "{said}");
    assert_eq!(fds_as_the_kernel_says(pid), before, "{said}");
    // Calm within 2 s: the window starts 1 s after the attach.
    std::thread::sleep(Duration::from_secs(1));
    let calm = cpu_shares(pid, Duration::from_secs(1));
    ask("after attach");
    println!("{name}: before attach, {spin}; after, {calm}");
    assert_calm(&format!("{name} after attach"), calm, spin);
}

/// `python3 -m http.server`: a selectors loop over poll() in CPython, accept4 from libpython;
/// the clients that never send a request each hold a handler thread and an fd.
#[test]
fn attach_unspins_python_http_server() {
    let dir = scratch("attach-python");
    let port = free_port();
    let mut cmd = command("python3");
    cmd.args([
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port.to_string(),
    ])
    .current_dir(&dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    unspin_server("python3 -m http.server", cmd, port, None, Squeeze::Soft);
}

/// Redis, seed 003's server (`scripts/test.sh` installs it where it can): its level-triggered
/// loop logs and spins at EMFILE; attached, it is calm and still answers PING.
#[test]
fn attach_unspins_redis() {
    let redis = require("redis-server");
    let dir = scratch("attach-redis");
    let port = free_port();
    let mut cmd = command(redis);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .args(["--appendonly", "no", "--logfile"])
    .arg(dir.join("redis.log"));
    // Its stdout and stderr one open file description, as a service manager's log pipe is.
    let out = std::fs::File::create(dir.join("redis.out")).unwrap();
    cmd.stderr(out.try_clone().unwrap()).stdout(out);
    let pong: (&[u8], &[u8]) = (b"PING\r\n", b"+PONG\r\n");
    unspin_server("redis-server", cmd, port, Some(pong), Squeeze::Hard);
}

/// The holder started without fdguard in `dir` for `rounds`, stopped after its first round
/// of 25 streams leaked from `DIR/data`.
fn holder_leaked(dir: &Path, rounds: u32) -> Stepper {
    let prog = build_c("holder", dir, &["-O1", "-g"]);
    let mut cmd = plain(&prog);
    cmd.arg(dir).arg(rounds.to_string());
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "held");
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "leaked");
    s
}

#[test]
fn a_leak_after_attach_is_attributed_and_the_rest_is_before_attach() {
    let dir = scratch("attach-leak");
    let mut s = holder_leaked(&dir, 2); // 25 streams before attach
    let before = proc_fds(s.pid());
    let report = dir.join("r.json");
    attach(s.pid(), &["--json", "--report", report.to_str().unwrap()]);
    s.resume();
    assert_eq!(s.next_checkpoint().unwrap().0, "leaked"); // 25 more, attached
    let r: Value =
        serde_json::from_str(&succeeds(fdguard(&["report", &s.pid().to_string()]))).unwrap();
    let kernel = proc_fds(s.pid());
    assert_matches_kernel(&r, &kernel, &[]);
    let top = &r["stacks"][0];
    assert_eq!(top["count"], 25);
    assert_eq!(functions(top), ["leak_streams", "main"]);
    for fd in &before {
        let row = fd_row(&r, *fd).unwrap();
        assert_eq!(row["call"], "before attach", "fd {fd}");
        assert_eq!(row["stack"], Value::Null);
        assert_eq!(
            row["age_ms"],
            Value::Null,
            "how old it is is not known: {row}"
        );
    }
    let after: Vec<i64> = kernel.difference(&before).copied().collect();
    assert_eq!(after.len(), 25);
    for fd in after {
        assert_eq!(fd_row(&r, fd).unwrap()["call"], "fopen", "fd {fd}");
    }
    s.resume();
    assert!(s.finish().status.success());
}

/// Attached to a process with more fds open than a stack shows rows, the text report says
/// what they are, lists the first ones without an age, and leaves the rest to the JSON.
#[test]
fn an_attached_text_report_caps_the_fds_open_before() {
    let dir = scratch("attach-text");
    let mut s = holder_leaked(&dir, 1);
    let open = proc_fds(s.pid()).len();
    let report = dir.join("r.txt");
    attach(s.pid(), &["--report", report.to_str().unwrap()]);
    let text = succeeds(fdguard(&["report", &s.pid().to_string()]));
    let prefix = format!("=={}== ", s.pid());
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("{open} fds without a creation stack")))
        .unwrap_or_else(|| panic!("{open} fds without a stack:\n{text}"));
    // The 25 streams and the two files opened before them, in the test's directory.
    let what = lines[at + 1];
    assert!(
        what.starts_with(&format!("  {open} before attach: 27 files of "))
            && what.contains("/data, "),
        "{text}"
    );
    let rows = lines
        .iter()
        .filter(|l| l.contains("        -        -  before attach "))
        .count();
    assert_eq!(rows, 20, "{text}");
    let more = format!(
        "  ... and {} more (the JSON report lists every fd)",
        open - 20
    );
    assert!(lines.contains(&more.as_str()), "{text}");
    s.resume();
    assert!(s.finish().status.success());
}

#[test]
fn four_threads_churning_fds_while_attached() {
    let _one = one_at_a_time(); // busy threads would skew the CPU measurements
    let dir = scratch("attach-churn");
    let prog = build_c("churn", &dir, &["-O1", "-g"]);
    let mut cmd = plain(&prog);
    cmd.arg(&dir);
    let mut s = Stepper::spawn(cmd, &dir.join("unused"));
    assert_eq!(s.next_checkpoint().unwrap().0, "churning");
    let report = dir.join("r.json");
    attach(s.pid(), &["--json", "--report", report.to_str().unwrap()]);
    s.resume();
    for _ in 0..2 {
        assert_eq!(s.next_checkpoint().unwrap().0, "quiet");
        let r: Value =
            serde_json::from_str(&succeeds(fdguard(&["report", &s.pid().to_string()]))).unwrap();
        assert_matches_kernel(&r, &proc_fds(s.pid()), &[]);
        s.resume();
    }
    let out = s.finish();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "every call gave its result: {text}");
    assert!(text.starts_with("ok "), "{text}");
}

#[test]
fn attach_refuses_what_it_cannot_do_and_leaves_it_untouched() {
    let _one = one_at_a_time(); // busy threads would skew the CPU measurements
    let dir = scratch("attach-refusals");
    // (A static program is attached to through eBPF: tests/suite/ebpf_attach.rs.)

    // Already under fdguard.
    let prog = build_c_once("holder", &["-O1", "-g"]);
    let mut cmd = guarded(&prog, &dir.join("r.json"));
    cmd.arg(&dir).arg("0");
    let mut s = Stepper::spawn(cmd, &dir.join("r.json"));
    assert_eq!(s.next_checkpoint().unwrap().0, "held");
    let err = fails_with(fdguard(&["attach", &s.pid().to_string()]), 2);
    assert!(
        err.contains("already runs under fdguard (preloaded)"),
        "{err}"
    );
    let err = fails_with(fdguard(&["detach", &s.pid().to_string()]), 2);
    assert!(err.contains("cannot be detached"), "{err}");
    s.finish();

    // No ptrace permission: as nobody, on this (root's) test process's child.
    let mut sleeper = Proc::spawn(command("sleep").arg("30"));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = command("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cli_path())
            .args(["attach", &sleeper.id().to_string()])
            .env("FDGUARD_LIB", lib_path());
        let err = fails_with(c, 2);
        assert!(
            err.contains("CAP_SYS_PTRACE") && err.contains("kernel.yama.ptrace_scope"),
            "{err}"
        );
    }
    // Stopped: refused, left stopped.
    kill(sleeper.id(), libc::SIGSTOP);
    wait_until("stopped", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/stat", sleeper.id()))
            .is_ok_and(|s| s.contains(") T "))
    });
    let err = fails_with(fdguard(&["attach", &sleeper.id().to_string()]), 2);
    assert!(err.contains("is stopped"), "{err}");
    sleeper.kill_group();

    // Never in a system call: the timeout passes, nothing was changed.
    let mut spin = Proc::spawn(command("sh").args(["-c", "while :; do :; done"]));
    // Also lets the shell start spinning.
    let slower = cpu_shares(spin.id(), Duration::from_millis(100)).slowdown();
    let t = Instant::now();
    let err = fails_with(
        fdguard(&["attach", &spin.id().to_string(), "--timeout", "1"]),
        1,
    );
    assert!(
        err.contains("no thread of pid") && err.contains("nothing was changed"),
        "{err}"
    );
    // Its 1 s timeout, and what the machine adds to it.
    let within = Duration::from_secs(1) + Duration::from_secs(4).mul_f64(slower);
    assert!(t.elapsed() < within, "{:?}", t.elapsed());
    assert_eq!(tracer_of(spin.id()), "0");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", spin.id())).unwrap();
    assert!(!maps.contains("libfdguard"), "the library was not loaded");
    assert!(matches!(spin.try_wait(), Ok(None)), "still running");
}

/// `handler_sleeps` (issue 24's deadlock) for `seconds`, signalled every 0.21 s from a thread
/// until it ends: its main thread is mostly asleep inside a SIGUSR1 handler that interrupted
/// `malloc`. `each` runs against its pid; then the program must finish its run.
fn in_a_signal_storm(dir: &Path, seconds: u32, args: &[&str], each: impl FnOnce(u32)) {
    let prog = build_c("handler_sleeps", dir, &["-O1", "-g"]);
    let mut cmd = plain(&prog);
    cmd.arg(seconds.to_string()).args(args);
    let mut p = Proc::spawn(cmd.stdout(Stdio::piped()));
    let pid = p.id();
    let mut out = std::io::BufReader::new(p.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let done = done.clone();
        std::thread::spawn(move || {
            // Bounded: the program's run, and a margin.
            for _ in 0..(seconds * 5 + 150) {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // SAFETY: kill(2) on the child this test started, which handles SIGUSR1.
                unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_millis(210));
            }
        })
    };
    each(pid);
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 30);
    let status = loop {
        if let Some(s) = p.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            panic!("the program never finished its run (waiting in {wchan})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    storm.join().unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(
        status.success() && line.starts_with("done "),
        "{status}: {line}"
    );
}

/// Issue 24: attach never makes a thread call in while it is inside a signal handler (which
/// may have interrupted `malloc`, holding the lock `dlopen` needs). With a thread waiting in
/// `read` beside it, six attach/detach rounds all succeed through that thread; without one,
/// attach refuses, says why, and the program runs on.
#[test]
fn attach_never_calls_in_a_thread_inside_a_signal_handler() {
    let _one = one_at_a_time(); // its main thread computes: it would skew CPU measurements
    let dir = scratch("attach-handler");
    in_a_signal_storm(&dir, 5, &["reader"], |pid| {
        for _ in 0..6 {
            attach(pid, &[]);
            succeeds(fdguard(&["detach", &pid.to_string()]));
        }
        // The reader blocks SIGSEGV, and each call returns to address 0, a SIGSEGV: had it
        // been blocked then, the kernel would have reset the program's handler.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .unwrap();
        let caught = u64::from_str_radix(caught.trim(), 16).unwrap();
        assert_ne!(caught & (1 << (libc::SIGSEGV - 1)), 0, "{status}");
    });
    in_a_signal_storm(&dir, 4, &[], |pid| {
        let mut said = Vec::new();
        for _ in 0..2 {
            let c = fdguard(&["attach", &pid.to_string(), "--timeout", "1"]);
            said.push(fails_with(c, 1));
        }
        assert!(
            said.iter()
                .all(|e| e.contains("could be called in safely")
                    && e.contains("nothing was changed")),
            "{said:?}"
        );
        assert!(
            said.iter().any(|e| e.contains("inside a signal handler")),
            "{said:?}"
        );
    });
}

/// Issue 24: an nginx worker running as `nobody` (its master as root, as usual), attached by
/// root without CAP_SYS_RESOURCE: its limit is read from `/proc/PID/limits`, the library is
/// loaded from a path `nobody` can read, the worker goes on serving, a report lists exactly
/// its fds, and it detaches. A library its user cannot read is refused first, untouched.
#[test]
fn attach_to_another_users_nginx_worker() {
    let nginx = require("nginx");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test runs as root");
    let dir = scratch("attach-nginx");
    // Where `nobody` can read the library, whatever the checkout's permissions.
    let open_dir = PathBuf::from(format!("/tmp/fdguard-attach-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&open_dir);
    std::fs::create_dir_all(open_dir.join("closed")).unwrap();
    let set_mode = |p: &Path, mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(&open_dir, 0o755);
    set_mode(&open_dir.join("closed"), 0o700);
    let lib = open_dir.join("libfdguard.so");
    std::fs::copy(lib_path(), &lib).unwrap();
    std::fs::copy(lib_path(), open_dir.join("closed/libfdguard.so")).unwrap();
    let port = free_port();
    let conf = nginx_conf(&dir, port, "user nobody nogroup;");
    let mut cmd = command(&nginx);
    cmd.arg("-p").arg(&dir).arg("-c").arg(&conf);
    let mut n = Proc::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::null()));
    let master = n.id();
    let runs_as_nobody = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| s.contains("\nUid:\t65534\t65534"))
    };
    wait_until("nginx's worker, as nobody", Duration::from_secs(20), || {
        proc_children(master).iter().any(|w| runs_as_nobody(*w))
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let worker = proc_children(master)[0];
    let as_root_without_sys_resource = |lib: &Path, verb: &str| {
        let mut c = command("setpriv");
        c.args(["--bounding-set=-sys_resource", "--"])
            .arg(cli_path())
            .args([verb, &worker.to_string()])
            .env("FDGUARD_LIB", lib);
        c
    };
    let err = fails_with(
        as_root_without_sys_resource(&open_dir.join("closed/libfdguard.so"), "attach"),
        2,
    );
    assert!(
        err.contains("runs as uid 65534, which cannot read"),
        "{err}"
    );
    let said = succeeds(as_root_without_sys_resource(&lib, "attach"));
    assert!(
        said.contains(&format!("attached to pid {worker}")),
        "{said}"
    );
    let get = || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::io::Write::write_all(&mut c, b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    };
    get();
    let r: Value = serde_json::from_str(&succeeds(fdguard(&[
        "report",
        &worker.to_string(),
        "--json",
    ])))
    .unwrap();
    assert_matches_kernel(&r, &proc_fds(worker), &[]);
    succeeds(as_root_without_sys_resource(&lib, "detach"));
    get();
    n.kill_group();
    let _ = std::fs::remove_dir_all(&open_dir);
}
