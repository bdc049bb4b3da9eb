//! Stopping threads of the process with ptrace, and making a stopped thread call functions.

use std::time::{Duration, Instant};

use crate::fail::Failure;
use crate::ptrace::{Regs, Stop, Tracee};

/// System calls a thread can be stopped in and made to call a function: they wait, and
/// libc's wrappers hold no lock of libc's around them (unlike `mmap` inside `malloc`, or a
/// `futex` inside a mutex).
const WAITING_CALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_select,
    libc::SYS_pselect6,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_pause,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
];

/// System calls libc may be inside while holding a lock that loading a library needs too
/// (malloc's arenas around `mmap`/`brk`, the loader's around `mmap` and `mprotect`). A thread
/// in `futex` waits (for a condition, or for a lock it does not hold): it may stay stopped.
const LOCKED_CALLS: &[libc::c_long] = &[
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_madvise,
    libc::SYS_clone,
    libc::SYS_clone3,
];

/// Scratch space on the thread's stack, below the red zone, for the strings passed.
const SCRATCH: u64 = 12 * 1024;
/// The longest a call in the process may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A thread stopped in a waiting system call, with everything needed to put it back.
pub struct Stopped {
    pub tracee: Tracee,
    saved: Regs,
    fp: (libc::c_int, Vec<u8>),
    /// Next free byte (downwards) of the scratch space.
    free: u64,
    /// A signal that arrived while the thread was stopped, delivered when it is let go.
    pending: i32,
}

pub fn ptrace_failure(pid: i32, e: &std::io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Failure::bad_input(format!(
            "not allowed to ptrace pid {pid}: run as its user with kernel.yama.ptrace_scope \
             at 0 or 1 (sysctl kernel.yama.ptrace_scope), or as root with CAP_SYS_PTRACE \
             (another tracer, such as gdb or strace, must not be attached)"
        )),
        Some(libc::ESRCH) => Failure::bad_input(format!("no process with pid {pid}")),
        _ => Failure::failed(format!("ptrace on pid {pid}: {e}")),
    }
}

/// The threads of the process, those waiting in a system call first.
fn threads(pid: i32) -> Vec<i32> {
    let mut tids: Vec<(bool, i32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .map(|tid: i32| {
                    let sc = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
                        .unwrap_or_default();
                    let nr = sc.split_whitespace().next().and_then(|n| n.parse().ok());
                    (!nr.is_some_and(|n| WAITING_CALLS.contains(&n)), tid)
                })
                .collect()
        })
        .unwrap_or_default();
    tids.sort();
    tids.into_iter().map(|(_, t)| t).collect()
}

impl Stopped {
    /// Stops a thread of `pid` in a waiting system call, trying until `deadline`.
    pub fn begin(pid: i32, deadline: Instant) -> Result<Stopped, Failure> {
        loop {
            for tid in threads(pid) {
                let mut t = match Tracee::seize(tid) {
                    Ok(t) => t,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                    Err(e) => return Err(ptrace_failure(pid, &e)),
                };
                let stop = t
                    .interrupt(Duration::from_millis(200))
                    .map_err(|e| ptrace_failure(pid, &e))?;
                match stop {
                    None => continue, // not stopping (uninterruptible): dropping detaches
                    Some(Stop::Gone) => continue,
                    Some(Stop::Interrupted) | Some(Stop::Signal(_)) => {}
                }
                let pending = match stop {
                    Some(Stop::Signal(s)) => s,
                    _ => 0,
                };
                let saved = t.regs().map_err(|e| ptrace_failure(pid, &e))?;
                if WAITING_CALLS.contains(&(saved.orig_rax as i64)) {
                    let fp = t.fp_state().map_err(|e| ptrace_failure(pid, &e))?;
                    let free = (saved.rsp - 128) & !0xf;
                    return Ok(Stopped {
                        tracee: t,
                        saved,
                        fp,
                        free,
                        pending,
                    });
                }
                // Stopped elsewhere (computing, or in a call that may hold a lock): let go.
                let _ = t.detach(pending);
            }
            if Instant::now() >= deadline {
                return Err(Failure::failed(format!(
                    "no thread of pid {pid} was seen waiting in a system call before the \
                     timeout (all computing, or in uninterruptible sleep); nothing was changed"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Copies `bytes` and a NUL into the scratch space; returns their address.
    pub fn put(&mut self, bytes: &[u8]) -> Result<u64, Failure> {
        let mut b = bytes.to_vec();
        b.push(0);
        let len = (b.len() as u64).next_multiple_of(16);
        if self.saved.rsp - 128 - (self.free - len) > SCRATCH {
            return Err(Failure::bad_input("the options are too long"));
        }
        self.free -= len;
        self.tracee
            .poke(self.free, &b)
            .map_err(|e| Failure::failed(format!("cannot write into the process: {e}")))?;
        Ok(self.free)
    }

    /// Calls `func(args...)` in the stopped thread; returns what it returned.
    pub fn call(&mut self, func: u64, args: &[u64]) -> Result<u64, Failure> {
        let fail = |what: String| Failure::failed(format!("calling into the process: {what}"));
        let mut r = self.saved;
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        (r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9) = (arg(0), arg(1), arg(2), arg(3), arg(4), arg(5));
        // The stack below the scratch space, 16-byte aligned at the call; the return address
        // is 0, so the return faults and stops the thread again.
        let sp = ((self.free - 256) & !0xf) - 8;
        self.tracee
            .poke(sp, &0u64.to_ne_bytes())
            .map_err(|e| fail(e.to_string()))?;
        r.rsp = sp;
        r.rip = func;
        r.rax = 0;
        // Not in a system call any more: no restart of the interrupted one on the way in.
        r.orig_rax = u64::MAX;
        self.tracee.set_regs(&r).map_err(|e| fail(e.to_string()))?;
        self.tracee.cont(0).map_err(|e| fail(e.to_string()))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.tracee.wait(left).map_err(|e| fail(e.to_string()))? {
                Some(Stop::Signal(libc::SIGSEGV)) => {
                    let now = self.tracee.regs().map_err(|e| fail(e.to_string()))?;
                    if now.rip == 0 {
                        return Ok(now.rax);
                    }
                    return Err(fail(format!(
                        "the call crashed at {:#x}; the thread was put back as it was",
                        now.rip
                    )));
                }
                // The program's own signals run their handlers as usual, on top of the call.
                Some(Stop::Signal(sig)) => self.tracee.cont(sig),
                Some(Stop::Interrupted) => self.tracee.cont(0),
                Some(Stop::Gone) => return Err(fail("the process ended".into())),
                None => {
                    return Err(fail(
                        "the call did not return within 30 s; the process was left running it"
                            .into(),
                    ));
                }
            }
            .map_err(|e| fail(e.to_string()))?;
        }
    }

    /// Reads a NUL-terminated string at `addr`.
    pub fn string_at(&self, addr: u64, max: usize) -> String {
        let b = self.tracee.peek(addr, max).unwrap_or_default();
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    /// Puts every register back and lets the thread go.
    pub fn end(self) -> Result<(), Failure> {
        let fail = |e: std::io::Error| Failure::failed(format!("restoring the thread: {e}"));
        self.tracee.set_regs(&self.saved).map_err(fail)?;
        self.tracee.set_fp_state(&self.fp).map_err(fail)?;
        self.tracee.detach(self.pending).map_err(fail)
    }
}

/// The other threads of the process, each stopped in a system call that holds no lock (not
/// computing in user space, where it might be inside `malloc`): while the soft limit is raised
/// for loading, none of them can take the room. Retried until `deadline`.
pub fn stop_others(
    pid: i32,
    chosen: i32,
    deadline: Instant,
) -> Result<Vec<(Tracee, i32)>, Failure> {
    'again: loop {
        let mut held = Vec::new();
        for tid in threads(pid).into_iter().filter(|t| *t != chosen) {
            let Ok(mut t) = Tracee::seize(tid) else {
                continue; // gone
            };
            let pending = match t.interrupt(Duration::from_millis(200)) {
                Ok(Some(Stop::Signal(s))) => s,
                Ok(Some(Stop::Interrupted)) => 0,
                _ => continue,
            };
            let nr = t.regs().map_or(-1, |r| r.orig_rax as i64);
            held.push((t, pending));
            if nr < 0 || LOCKED_CALLS.contains(&nr) {
                release(held);
                if Instant::now() >= deadline {
                    return Err(Failure::failed(format!(
                        "pid {pid} has no fd free, and its threads could not all be stopped \
                         outside a lock for the moment of loading; nothing was changed"
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
                continue 'again;
            }
        }
        return Ok(held);
    }
}

pub fn release(held: Vec<(Tracee, i32)>) {
    for (t, sig) in held {
        let _ = t.detach(sig);
    }
}
