//! Servers under test (`examples/`): started with a systemd-like limit, squeezed to their
//! current usage with `prlimit --pid`, and measured from outside (CPU time, log lines).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::pace::cpu_time;
use super::{Proc, command, guarded, report_path};

/// fds the servers may still open once their limit is lowered: two clients fit, the others
/// wait in the backlog.
pub const ROOM: u64 = 2;
/// Clients that exhaust the server's fds: `ROOM` accepted, one left pending.
pub const HOLDERS: usize = ROOM as usize + 1;

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A server under test, its stdout (the log) and stderr in files.
pub struct Server {
    pub child: Proc,
    pub log: PathBuf,
    pub err: PathBuf,
    pub port: u16,
    /// Under `fdguard run`'s tracer (`start_traced`): the program's pid, the tracer's child.
    traced: Option<u32>,
}

impl Server {
    /// Starts `prog` with a systemd-like limit (soft 1024, hard as is), optionally under
    /// fdguard with `vars`.
    pub fn start(
        prog: &Path,
        args: &[&str],
        dir: &Path,
        fdguard: Option<&[(&str, &str)]>,
    ) -> Server {
        let mut cmd = match fdguard {
            Some(vars) => {
                let mut c = guarded(prog, &report_path(dir));
                c.envs(vars.iter().copied());
                c
            }
            None => command(prog),
        };
        cmd.args(args);
        Server::spawn(cmd, dir, false)
    }

    /// Starts a static `prog` under `fdguard run`'s tracer, reports as JSON to the directory's
    /// report file.
    pub fn start_traced(prog: &Path, args: &[&str], dir: &Path) -> Server {
        let report = report_path(dir);
        let mut cmd = super::fdguard(&["run", "--json", "--report", report.to_str().unwrap()]);
        cmd.arg("--").arg(prog).args(args);
        Server::spawn(cmd, dir, true)
    }

    fn spawn(mut cmd: Command, dir: &Path, traced: bool) -> Server {
        let log = dir.join("server.log");
        let err = dir.join("server.err");
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        soft_limit(&mut cmd, 1024);
        let child = Proc::spawn(&mut cmd);
        let mut s = Server {
            child,
            log,
            err,
            port: 0,
            traced: None,
        };
        let line = s.wait_for("port ", 0, Duration::from_secs(10));
        s.port = line[5..].trim().parse().unwrap();
        if traced {
            let children = proc_children(s.child.id());
            assert_eq!(
                children.len(),
                1,
                "the tracer runs one program: {children:?}"
            );
            s.traced = Some(children[0]);
        }
        s
    }

    /// The server's pid (under the tracer, the program's).
    pub fn pid(&self) -> u32 {
        self.traced.unwrap_or(self.child.id())
    }

    /// Asks for a report where the server writes them: SIGUSR2 to a server with the library, the
    /// tracer's request signal to the tracer of a traced one.
    pub fn ask_report(&self) {
        match self.traced {
            Some(_) => super::kill(self.child.id(), libc::SIGRTMAX()),
            None => super::kill(self.pid(), libc::SIGUSR2),
        }
    }

    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Waits for a log line starting with `prefix` after byte `from`; returns it.
    pub fn wait_for(&mut self, prefix: &str, mut from: u64, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = read_from(&self.log, from, u64::MAX);
            let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if let Some(l) = text[..complete]
                .split(|b| *b == b'\n')
                .find(|l| l.starts_with(prefix.as_bytes()))
            {
                return String::from_utf8_lossy(l).into_owned();
            }
            from += complete as u64;
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("server exited ({st}) before logging {prefix:?}");
            }
            assert!(
                start.elapsed() < timeout,
                "no {prefix:?} line in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Accept failures logged between two log offsets.
    pub fn failures_between(&self, from: u64, to: u64) -> usize {
        read_from(&self.log, from, to - from)
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"accept:"))
            .count()
    }

    /// User + system CPU time so far (under the tracer, the tracer's too: it is the cost of
    /// tracing).
    pub fn cpu(&self) -> Duration {
        let tracer = self
            .traced
            .map_or(Duration::ZERO, |_| cpu_time(self.child.id()));
        cpu_time(self.pid()) + tracer
    }

    /// Lowers the server's limit so that `ROOM` more fds fit: accept fails with EMFILE once
    /// the lowest free number reaches the soft limit (fds above it, like one inherited from
    /// the test harness or fdguard's report file, do not matter).
    pub fn squeeze(&self) {
        self.squeeze_to(true)
    }

    /// Like `squeeze`, lowering only the soft limit: the hard one stays as it was (systemd's
    /// soft 1024 and hard 524288), so that the process could raise it itself.
    pub fn squeeze_soft(&self) {
        self.squeeze_to(false)
    }

    fn squeeze_to(&self, hard_too: bool) {
        let open: std::collections::BTreeSet<u64> =
            std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
        let lowest_free = (0..).find(|fd| !open.contains(fd)).unwrap();
        let n = lowest_free + ROOM;
        set_fd_limit(self.pid(), n, hard_too.then_some(n));
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

/// Up to `len` bytes of a file from offset `from`.
pub fn read_from(path: &Path, from: u64, len: u64) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from)).unwrap();
    let mut v = Vec::new();
    f.take(len).read_to_end(&mut v).unwrap();
    v
}

/// A running process's soft `RLIMIT_NOFILE` (`Max open files` of /proc/PID/limits).
pub fn fd_soft_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Sets a running process's `RLIMIT_NOFILE` with `prlimit --pid`: the soft limit, and the hard
/// one when given (else it stays).
pub fn set_fd_limit(pid: u32, soft: u64, hard: Option<u64>) {
    let hard = hard.map_or_else(String::new, |h| h.to_string());
    let ok = command("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .unwrap();
    assert!(ok.success(), "prlimit --pid {pid} --nofile={soft}:{hard}");
}

/// Gives the command's process a soft `RLIMIT_NOFILE` of `soft` (the hard one stays).
pub fn soft_limit(cmd: &mut Command, soft: u64) {
    // SAFETY: only getrlimit/setrlimit, async-signal-safe, run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = soft.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
}

pub fn connect(port: u16) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// One echo round trip.
pub fn round_trip(c: &mut TcpStream) -> Duration {
    let t = Instant::now();
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).expect("echo");
    t.elapsed()
}

/// Round-trip times of an echo client, summed up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rtt {
    pub median: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub n: usize,
}

impl Rtt {
    pub fn of(mut v: Vec<Duration>) -> Rtt {
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

/// `n` echo round trips, a millisecond apart.
pub fn round_trips(c: &mut TcpStream, n: usize) -> Rtt {
    Rtt::of(
        (0..n)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(1));
                round_trip(c)
            })
            .collect(),
    )
}

/// How much slower than a control's the round trips to a server under test may be, paired
/// with the control's (`paired_round_trips`): a loop stalled by a pause of fdguard's (hundreds
/// of ms) is thousands of times slower.
pub const SERVED: u32 = 10;

/// A control for `prog`: the same server without fdguard, with fds to spare.
pub fn control(prog: &Path, args: &[&str]) -> Server {
    let dir = prog.parent().unwrap().join("control");
    std::fs::create_dir_all(&dir).unwrap();
    Server::start(prog, args, &dir, None)
}

/// `n` round trips to each of two echo servers, paired (each right after the other, so that
/// both see the same machine), a millisecond apart.
pub fn paired_round_trips(server: &mut TcpStream, control: &mut TcpStream, n: usize) -> (Rtt, Rtt) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        a.push(round_trip(server));
        b.push(round_trip(control));
        std::thread::sleep(Duration::from_millis(1));
    }
    (Rtt::of(a), Rtt::of(b))
}

/// An nginx configuration in `dir` (master in the foreground, one worker, files in `dir`)
/// serving `ok` on loopback `port`; `main` is added at its top (`user ...;`).
pub fn nginx_conf(dir: &Path, port: u16, main: &str) -> PathBuf {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "{main}\ndaemon off; master_process on; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    )
    .unwrap();
    conf
}

/// The live children of `pid` (not zombies, which a report request's short-lived helper
/// process is for a moment), from /proc.
pub fn proc_children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let alive = |child: &u32| {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(alive)
        .collect()
}
