//! Seed 003, measured: servers whose accept loop spins when fds run out, without and with
//! fdguard's accept guard. Each server gets a soft limit just above its usage
//! (`prlimit --pid`), loopback clients exhaust it, and over a fixed window the test measures
//! the server's CPU time (`/proc/PID/stat`), its accept failures (its log lines), the round
//! trip of an already-connected echo client, and how long after a client leaves the server
//! accepts again. The figures are printed (`-- --nocapture`) and quoted in the README.
//!
//! The measurements run one at a time (a spinning server takes a whole core of two).
use crate::common::server::*;
use crate::common::*;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// After exhaustion, time for the backoff to reach its steady state before measuring.
const SETTLE: Duration = Duration::from_millis(500);
const WINDOW: Duration = Duration::from_secs(2);
const WINDOW_UNGUARDED: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, Default)]
struct Rtt {
    median: Duration,
    p99: Duration,
    max: Duration,
    n: usize,
}

impl Rtt {
    fn of(mut v: Vec<Duration>) -> Rtt {
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
        Rtt {
            median: at(0.5),
            p99: at(0.99),
            max: at(1.0),
            n: v.len(),
        }
    }
}

impl std::fmt::Display for Rtt {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "echo RTT median {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} round trips)",
            ms(self.median),
            ms(self.p99),
            ms(self.max),
            self.n
        )
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Figures {
    cpu_percent: f64,
    failures_per_s: f64,
    failures: usize,
    spare: Option<Rtt>,
    exhausted: Option<Rtt>,
    recovery: Option<Duration>,
}

/// Round trips every 2 ms for `window` (or just waits, without an echo client).
fn measure_window(s: &Server, echo: &mut Option<TcpStream>, window: Duration) -> Figures {
    let (cpu0, log0, t0) = (s.cpu(), s.log_len(), Instant::now());
    let mut rtts = Vec::new();
    while t0.elapsed() < window {
        if let Some(c) = echo {
            rtts.push(round_trip(c));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (cpu1, log1, secs) = (s.cpu(), s.log_len(), t0.elapsed().as_secs_f64());
    let failures = s.failures_between(log0, log1);
    Figures {
        cpu_percent: (cpu1 - cpu0).as_secs_f64() * 100.0 / secs,
        failures_per_s: failures as f64 / secs,
        failures,
        exhausted: (!rtts.is_empty()).then(|| Rtt::of(rtts)),
        ..Figures::default()
    }
}

/// The whole scenario against one server: echo client, limit lowered, fds exhausted, the
/// window, then one client leaves and the time until the server accepts again.
fn scenario(s: &mut Server, echoes: bool, window: Duration) -> Figures {
    let mut echo = echoes.then(|| connect(s.port));
    if echo.is_some() {
        s.wait_for("accepted", 0, Duration::from_secs(5));
    }
    let spare = echo.as_mut().map(|c| {
        Rtt::of(
            (0..300)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(1));
                    round_trip(c)
                })
                .collect(),
        )
    });
    s.squeeze();
    let from = s.log_len();
    let mut holders: Vec<TcpStream> = (0..HOLDERS).map(|_| connect(s.port)).collect();
    s.wait_for("accept:", from, Duration::from_secs(5));
    std::thread::sleep(SETTLE);
    let mut f = measure_window(s, &mut echo, window);
    f.spare = spare;
    let before = s.log_len();
    holders.remove(0);
    let t = Instant::now();
    s.wait_for("accepted", before, Duration::from_secs(5));
    f.recovery = Some(t.elapsed());
    f
}

fn print(name: &str, f: &Figures) {
    eprintln!(
        "{name}: CPU {:.1}%, {:.1} accept failures/s ({} in the window)",
        f.cpu_percent, f.failures_per_s, f.failures
    );
    if let Some(r) = f.spare {
        eprintln!("{name}:   with fds to spare: {r}");
    }
    if let Some(r) = f.exhausted {
        eprintln!("{name}:   fds exhausted:     {r}");
    }
    if let Some(r) = f.recovery {
        eprintln!(
            "{name}:   accepting again {:.0} ms after a client left",
            r.as_secs_f64() * 1e3
        );
    }
}

/// The spin is there without fdguard.
fn assert_spins(name: &str, f: &Figures) {
    assert!(
        f.cpu_percent >= 50.0,
        "{name}: expected a spin without fdguard: {f:?}"
    );
    assert!(f.failures_per_s >= 10_000.0, "{name}: {f:?}");
}

/// With fdguard: no spin, a handful of failures, echo clients served as before, and accepting
/// again within one backoff period once an fd is free.
fn assert_guarded(name: &str, f: &Figures) {
    assert!(f.cpu_percent <= 10.0, "{name}: CPU {f:?}");
    assert!(f.failures_per_s <= 20.0, "{name}: failures {f:?}");
    if let Some(r) = f.exhausted {
        // The backoff period is 320 ms to 1 s during the window: a stall would show it.
        assert!(r.median < Duration::from_millis(1), "{name}: {r}");
        assert!(r.p99 < Duration::from_millis(20), "{name}: {r}");
        assert!(r.max < Duration::from_millis(250), "{name}: {r}");
    }
    let recovery = f.recovery.unwrap();
    assert!(
        recovery < Duration::from_millis(1000 + 500),
        "{name}: recovery {recovery:?}"
    );
}

/// After a guarded run: the operator's lines on stderr, the `emfile` report, and every
/// failure counted in the reports.
fn assert_told(s: &Server, dir: &Path) {
    let start = Instant::now();
    let err = loop {
        let err = s.stderr();
        if err.contains(") succeeds again after ") || start.elapsed() > Duration::from_secs(3) {
            break err;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let first = err
        .lines()
        .find(|l| l.starts_with("fdguard: accept on fd"))
        .unwrap_or_else(|| panic!("no accept guard line: {err}"));
    assert!(
        first.contains(" failed: EMFILE, ")
            && first.contains("fds open; pausing accepts up to 1000 ms; report follows"),
        "{first}"
    );
    assert!(err.contains(") succeeds again after "), "{err}");
    let report = report_path(dir);
    let emfile = report_for(&report, "emfile");
    assert!(
        emfile["trigger_call"]
            .as_str()
            .unwrap()
            .starts_with("accept")
    );
    // Blocking loops keep failing (about once a second) after the last pending client was
    // accepted, and fdguard counts a failure before sleeping on it, while the program logs it
    // after: the report's count lies between the log's before it and one more than after it.
    let before = s.failures_between(0, s.log_len()) as u64;
    kill(s.pid(), libc::SIGUSR2);
    let last = report_for(&report, "signal");
    let after = s.failures_between(0, s.log_len()) as u64;
    let counted = last["emfile"]["accept_failures"].as_u64().unwrap();
    assert!(
        (before..=after + 1).contains(&counted),
        "every failure is counted: {counted} in the report, {before}..{after} logged"
    );
    assert!(last["emfile"]["paused_ms"].as_u64().unwrap() > 0);
}

/// The first report with this `reason` (reports for other reasons, `threshold`, `emfile` or
/// `signal`, may come before or after it).
fn report_for(path: &Path, reason: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(r) = read_reports(path)
            .into_iter()
            .find(|r| r["reason"] == reason)
        {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {reason} report"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `prog` without and with fdguard and checks both.
fn compare(name: &str, prog: &Path, args: &[&str], echoes: bool) {
    let _one = serial();
    let dir = prog.parent().unwrap();
    let mut s = Server::start(prog, args, dir, None);
    let unguarded = scenario(&mut s, echoes, WINDOW_UNGUARDED);
    drop(s);
    print(&format!("{name} without fdguard"), &unguarded);
    let dir = dir.join("guarded");
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = Server::start(prog, args, &dir, Some(&[]));
    let guarded = scenario(&mut s, echoes, WINDOW);
    print(&format!("{name} with fdguard"), &guarded);
    assert_spins(name, &unguarded);
    assert_guarded(name, &guarded);
    assert_told(&s, &dir);
}

fn event_server(mode: &str) -> PathBuf {
    let dir = scratch(&format!("accept-{mode}"));
    build_example("event_server", "event_server", &dir, &["-O2", "-g"])
}

#[test]
fn c_accept_loop_sleeps_instead_of_spinning() {
    let dir = scratch("accept-c");
    let prog = build_example("accept_spin", "accept_spin", &dir, &["-O2", "-g"]);
    compare("C accept loop (blocking)", &prog, &[], false);
}

#[test]
fn rust_std_net_accept_loop_sleeps_instead_of_spinning() {
    let dir = scratch("accept-rust");
    let prog = dir.join("accept_spin");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/accept_spin.rs");
    let ok = Command::new("rustc")
        .args(["--edition", "2024", "-O", "-o"])
        .arg(&prog)
        .arg(src)
        .status()
        .expect("rustc");
    assert!(ok.success());
    compare("Rust std::net accept loop", &prog, &[], false);
}

#[test]
fn level_triggered_epoll_loop_keeps_serving_its_clients() {
    compare(
        "epoll level-triggered (Redis-like)",
        &event_server("lt"),
        &["lt"],
        true,
    );
}

#[test]
fn edge_triggered_acceptor_sleeps_while_its_worker_serves() {
    compare(
        "epoll edge-triggered (acceptor + worker)",
        &event_server("et"),
        &["et"],
        true,
    );
}

#[test]
fn poll_loop_keeps_serving_its_clients() {
    compare("poll loop", &event_server("poll"), &["poll"], true);
}

#[test]
fn select_loop_keeps_serving_its_clients() {
    let prog = event_server("select");
    let _one = serial();
    let dir = prog.parent().unwrap();
    let mut s = Server::start(&prog, &["select"], dir, Some(&[]));
    let f = scenario(&mut s, true, WINDOW);
    print("select loop with fdguard", &f);
    assert_guarded("select", &f);
}

/// How a client that connects while the server's fds are exhausted ends.
fn late_client(port: u16, wait: Duration) -> (String, Duration) {
    let mut c = connect(port);
    c.set_read_timeout(Some(wait)).unwrap();
    let t = Instant::now();
    let what = match c.read(&mut [0u8; 1]) {
        Ok(0) => "EOF".to_string(),
        Ok(_) => "data".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => "nothing (hangs)".to_string(),
        Err(e) => e.to_string(),
    };
    (what, t.elapsed())
}

#[test]
fn shed_mode_closes_late_clients_at_once() {
    let prog = event_server("shed");
    let _one = serial();
    // The server lowers its own limit to fit 3 more clients. In shed mode fdguard keeps one of
    // those numbers as its reserve: the echo client and one holder fit, the other holders are
    // shed. In pause mode the last holder waits in the backlog, like every late client.
    for (mode, expect_eof) in [("pause", false), ("shed", true)] {
        let dir = prog.parent().unwrap().join(mode);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Server::start(&prog, &["lt", "3"], &dir, Some(&[("FDGUARD_EMFILE", mode)]));
        let mut echo = connect(s.port);
        let _holders: Vec<TcpStream> = (0..4).map(|_| connect(s.port)).collect();
        s.wait_for("accept:", 0, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(200));
        let mut late = Vec::new();
        for _ in 0..if expect_eof { 5 } else { 1 } {
            late.push(late_client(s.port, Duration::from_secs(1)));
        }
        let rtt = Rtt::of((0..100).map(|_| round_trip(&mut echo)).collect());
        eprintln!("{mode} mode: late clients {late:?}; {rtt}");
        assert!(rtt.median < Duration::from_millis(1), "{rtt}");
        for (what, took) in &late {
            if expect_eof {
                assert!(
                    (what == "EOF" || what == "reset") && *took < Duration::from_secs(1),
                    "{what} after {took:?}"
                );
            } else {
                assert_eq!(what, "nothing (hangs)");
            }
        }
        if !expect_eof {
            continue;
        }
        // The reserve: fdguard's /dev/null just below the limit, in no report.
        kill(s.pid(), libc::SIGUSR2);
        let r = report_for(&report_path(&dir), "signal");
        let soft = r["limit"]["soft"].as_i64().unwrap();
        let hidden: Vec<i64> = proc_fds(s.pid())
            .difference(&report_fds(&r))
            .copied()
            .collect();
        assert_eq!(hidden, [soft - 1], "only the reserve is left out");
        let link = std::fs::read_link(format!("/proc/{}/fd/{}", s.pid(), soft - 1)).unwrap();
        assert_eq!(link, Path::new("/dev/null"));
        assert!(
            r["emfile"]["shed"].as_u64().unwrap() >= 6,
            "{}",
            r["emfile"]
        );
        let err = s.stderr();
        assert!(
            err.contains("closing pending connections at once (shed)"),
            "{err}"
        );
    }
}

#[test]
fn sleep_mode_stalls_an_event_loop_which_is_why_pause_is_the_default() {
    let prog = event_server("sleepmode");
    let _one = serial();
    let dir = prog.parent().unwrap();
    let mut s = Server::start(&prog, &["lt"], dir, Some(&[("FDGUARD_EMFILE", "sleep")]));
    let f = scenario(&mut s, true, Duration::from_millis(1500));
    print("epoll level-triggered, FDGUARD_EMFILE=sleep", &f);
    assert!(f.cpu_percent <= 10.0 && f.failures_per_s <= 20.0, "{f:?}");
    let r = f.exhausted.unwrap();
    assert!(r.max >= Duration::from_millis(100), "the loop sleeps: {r}");
}

#[test]
fn every_wait_call_is_exact_while_a_listener_is_paused() {
    let dir = scratch("wait-calls");
    let prog = build_c("wait_calls", &dir, &["-O2", "-g"]);
    let out = guarded(&prog, &report_path(&dir))
        .env("FDGUARD_BACKOFF_MAX_MS", "400")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprint!("{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("accepted after the pause"));
}

#[test]
fn raise_nofile_lifts_the_soft_limit_to_the_hard_one() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -Sn; ulimit -Hn"])
        .env("LD_PRELOAD", lib_path())
        .env("FDGUARD_RAISE_NOFILE", "1");
    soft_limit(&mut cmd, 256);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], lines[1], "soft = hard: {text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "FDGUARD_RAISE_NOFILE: raised the soft RLIMIT_NOFILE from 256 to {} (the hard limit)",
            lines[1]
        )),
        "{err}"
    );
}
