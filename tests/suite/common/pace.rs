//! What the machine gives a program right now, measured in the same test as the figures it
//! judges: a busy loop's share of a core. Timing and CPU assertions compare with it, or with the
//! same program measured without fdguard, never with an absolute figure, so that they hold
//! while other work competes for the two cores and still fail when fdguard is wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many windows a precondition ("the server spins") gets before the test gives up: a burst
/// of other work (a build, another test) can starve a program for one window, not for all.
pub const TRIES: usize = 5;

/// User + system CPU time of process `pid` so far (`/proc/PID/stat`, every thread).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<u64> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((f[11] + f[12]) * 1000 / hz)
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A loop spinning on a thread of its own until `share` (or drop, if the test panics first).
pub struct BusyLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<f64>>,
}

impl BusyLoop {
    pub fn start() -> BusyLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (cpu0, t0) = (thread_cpu_time(), Instant::now());
            let mut n = 0u64;
            // Bounded by itself too: a window is seconds long.
            while !flag.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
            (thread_cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64()
        });
        BusyLoop {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the loop; the share of one core it got (1.0 when a core was free for it).
    pub fn share(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let share = self.thread.take().unwrap().join().unwrap();
        share.max(1e-3)
    }
}

impl Drop for BusyLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How many times slower than on an idle core a busy loop runs now (1.0 when idle): what a
/// wait for the machine (not for fdguard) is widened by.
pub fn slowdown() -> f64 {
    let busy = BusyLoop::start();
    std::thread::sleep(Duration::from_millis(100));
    1.0 / busy.share().min(1.0)
}

/// CPU shares of a process and of a busy loop beside it over the same window.
#[derive(Clone, Copy, Debug)]
pub struct Shares {
    pub process: f64,
    pub busy_loop: f64,
}

impl Shares {
    /// What the process would take of a core of its own: its share relative to the busy loop's
    /// (about 1.0 for a program that spins, whatever else competes).
    pub fn demand(&self) -> f64 {
        self.process / self.busy_loop
    }

    /// See `slowdown`.
    pub fn slowdown(&self) -> f64 {
        1.0 / self.busy_loop.min(1.0)
    }
}

impl std::fmt::Display for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{:.1}% CPU, a busy loop beside it {:.1}%",
            self.process * 100.0,
            self.busy_loop * 100.0
        )
    }
}

/// The CPU share of process `pid` over `window`, and a busy loop's over the same window.
pub fn cpu_shares(pid: u32, window: Duration) -> Shares {
    let busy = BusyLoop::start();
    let (c0, t0) = (cpu_time(pid), Instant::now());
    std::thread::sleep(window);
    let process = (cpu_time(pid) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    Shares {
        process,
        busy_loop: busy.share(),
    }
}

/// Measures `measure` (one window) up to `TRIES` times until `holds` accepts a window; returns
/// that window, or panics with `what` and every window measured.
pub fn until<T: std::fmt::Debug>(
    what: &str,
    mut measure: impl FnMut() -> T,
    holds: impl Fn(&T) -> bool,
) -> T {
    let mut seen = Vec::new();
    for _ in 0..TRIES {
        let m = measure();
        if holds(&m) {
            return m;
        }
        seen.push(m);
    }
    panic!("{what}: not in {TRIES} windows: {seen:#?}");
}

/// Measures until `pid` spins: a CPU share at least half the busy loop's beside it.
pub fn spinning(what: &str, pid: u32, window: Duration) -> Shares {
    until(
        &format!("{what} spins"),
        || cpu_shares(pid, window),
        |s| s.demand() >= 0.5,
    )
}
