//! Stopping threads of the process with ptrace, and making a stopped thread call functions.

use std::time::{Duration, Instant};

use super::stack::Memory;
use crate::fail::Failure;
use crate::ptrace::{Regs, Stop, Tracee};

/// System calls a thread can be stopped in and made to call a function: they wait, or are
/// quick file and socket calls, and libc's wrappers hold no lock of libc's around them (unlike
/// `mmap` inside `malloc`, or a `futex` inside a mutex), unless a signal handler interrupted
/// such code and made the call, or the loader made it (see `stack`).
const CALLS_OUTSIDE_LOCKS: &[libc::c_long] = &[
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
    // How a stop leaves `nanosleep`, `poll` or a timed `futex` wait: it goes on with the
    // rest of the wait. libc never waits with a timeout for a lock of its own (`malloc`'s and
    // the loader's waits have none), so this one holds none either.
    libc::SYS_restart_syscall,
    // What a server spinning at EMFILE does between its waits (Redis opens its log file for
    // each line): libc makes these outside `malloc`'s locks, and the loader's own are seen
    // from its code on the stack (`stack`).
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_lseek,
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
    pid: i32,
    pub tracee: Tracee,
    saved: Regs,
    fp: (libc::c_int, Vec<u8>),
    /// Next free byte (downwards) of the scratch space.
    free: u64,
    /// Its blocked signals, put back at `end`.
    mask: u64,
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
                    (!nr.is_some_and(|n| CALLS_OUTSIDE_LOCKS.contains(&n)), tid)
                })
                .collect()
        })
        .unwrap_or_default();
    tids.sort();
    tids.into_iter().map(|(_, t)| t).collect()
}

/// Signals that stay deliverable during a call: the faults a call can raise (the first five:
/// the return to address 0 among them), which the kernel delivers even when blocked, and
/// SIGKILL/SIGSTOP, which cannot be blocked.
const UNBLOCKED: [i32; 7] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGKILL,
    libc::SIGSTOP,
];

/// Every other signal: while a call runs, the program's handlers must not run on top of it
/// (a handler taking `malloc`'s lock while the call holds it would wait forever). Signals that
/// arrive meanwhile stay pending and are delivered when the thread is let go. The faults are
/// unblocked even where the thread blocked them: the kernel resets the handler of a fault it
/// finds blocked to the default, and the return to address 0 is a fault.
fn blocked_during_calls() -> u64 {
    UNBLOCKED
        .iter()
        .fold(!0u64, |set, sig| set & !(1u64 << (sig - 1)))
}

/// A thread `stop_one` looked at.
enum Seen {
    /// Stopped where it may stay: with its registers and the signal it was about to receive.
    Safe(Tracee, Regs, i32),
    /// Let go again, for this reason.
    Unsafe(String),
    Gone,
}

/// Stops thread `tid` and checks that it may stay stopped where it is (`may_stay` judges the
/// system call it is in) and be called in.
fn stop_one(
    pid: i32,
    tid: i32,
    memory: &Memory,
    may_stay: impl Fn(i64) -> bool,
) -> Result<Seen, Failure> {
    let mut t = match Tracee::seize(tid) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Seen::Gone),
        Err(e) => return Err(ptrace_failure(pid, &e)),
    };
    let fail = |e: std::io::Error| ptrace_failure(pid, &e);
    let mut pending = match t.interrupt(Duration::from_millis(200)).map_err(fail)? {
        Some(Stop::Signal(s)) => s,
        Some(Stop::Interrupted | Stop::SyscallEntry) => 0,
        Some(Stop::Gone) => return Ok(Seen::Gone),
        // Not stopping: dropping `t` detaches.
        None => return Ok(Seen::Unsafe("is in uninterruptible sleep".into())),
    };
    let mut regs = t.regs().map_err(fail)?;
    let mut nr = regs.orig_rax as i64;
    if nr == -1 && pending == 0 {
        // Computing (a server spinning at 100%: most of its time in quick system calls):
        // caught at the entry of its next system call instead, if it makes one soon.
        match t.run_to_syscall(SYSCALL_SOON).map_err(fail)? {
            Some(Stop::SyscallEntry) => {
                let entry = t.regs().map_err(fail)?;
                if let Some(put_back) = at_syscall_entry(&t, entry) {
                    (nr, regs) = (entry.orig_rax as i64, put_back);
                }
            }
            Some(Stop::Signal(s)) => pending = s,
            Some(Stop::Gone) => return Ok(Seen::Gone),
            Some(Stop::Interrupted) | None => {}
        }
    }
    let why = if nr < 0 {
        Some("is computing (it may be inside malloc)".to_string())
    } else if !may_stay(nr) {
        Some(format!(
            "is in system call {nr}, not one known to hold no lock"
        ))
    } else {
        memory.why_not_call(regs.rip, regs.rsp)
    };
    match why {
        None => Ok(Seen::Safe(t, regs, pending)),
        Some(why) => {
            let _ = t.detach(pending);
            Ok(Seen::Unsafe(why))
        }
    }
}

/// How long a computing thread is given to make a system call.
const SYSCALL_SOON: Duration = Duration::from_millis(20);

/// A thread stopped at the entry of a system call (number `orig_rax`): its registers as they
/// must be put back after it was called in, so that it makes that call when let go: at the
/// `syscall` instruction again, the number in `rax`, and nothing for the kernel to restart
/// (`orig_rax` -1; the call is skipped while fdguard's calls run). `None` if the instruction is
/// not `syscall` (`int $0x80`).
fn at_syscall_entry(t: &Tracee, regs: Regs) -> Option<Regs> {
    let insn = regs.rip.wrapping_sub(2);
    let code = crate::os::read_memory(t.tid, insn, 2).ok()?;
    (code == [0x0f, 0x05]).then_some(Regs {
        rip: insn,
        rax: regs.orig_rax,
        orig_rax: u64::MAX,
        ..regs
    })
}

/// Why threads were found unsafe, for the refusal.
fn reasons(why: impl ExactSizeIterator<Item = (i32, String)>) -> String {
    let n = why.len();
    let listed: Vec<String> = why
        .take(4)
        .map(|(tid, why)| format!("thread {tid} {why}"))
        .collect();
    let more = n - listed.len();
    let more = if more > 0 {
        format!("; {more} more")
    } else {
        String::new()
    };
    format!("{}{more}", listed.join("; "))
}

fn memory(pid: i32) -> Result<Memory, Failure> {
    let process = procfs::process::Process::new(pid)
        .map_err(|e| Failure::failed(format!("cannot read pid {pid}: {e}")))?;
    Memory::of(&process).map_err(|e| Failure::failed(format!("cannot read pid {pid}'s maps: {e}")))
}

impl Stopped {
    /// Stops a thread of `pid` that waits in a system call outside any signal handler and
    /// outside the loader, trying until `deadline`; signals are blocked in it until `end`.
    pub fn begin(pid: i32, deadline: Instant) -> Result<Stopped, Failure> {
        let mut why = std::collections::BTreeMap::new();
        loop {
            let memory = memory(pid)?;
            for tid in threads(pid) {
                match stop_one(pid, tid, &memory, |nr| CALLS_OUTSIDE_LOCKS.contains(&nr))? {
                    Seen::Safe(tracee, saved, pending) => {
                        let fail = |e: std::io::Error| ptrace_failure(pid, &e);
                        let fp = tracee.fp_state().map_err(fail)?;
                        let mask = tracee.sigmask().map_err(fail)?;
                        tracee.set_sigmask(blocked_during_calls()).map_err(fail)?;
                        let free = (saved.rsp - 128) & !0xf;
                        return Ok(Stopped {
                            pid,
                            tracee,
                            saved,
                            fp,
                            mask,
                            free,
                            pending,
                        });
                    }
                    // What is inside a handler or the loader stays said.
                    Seen::Unsafe(w) => {
                        let said = why.entry(tid).or_insert_with(String::new);
                        if !said.starts_with("is inside") {
                            *said = w;
                        }
                    }
                    Seen::Gone => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(Failure::failed(format!(
                    "no thread of pid {pid} could be called in safely before the timeout \
                     ({}); nothing was changed",
                    reasons(why.into_iter())
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

    /// Calls `func(args...)` (the function `name`) in the stopped thread; returns what it
    /// returned. A call that does not return within `CALL_TIMEOUT` is waited for without end,
    /// once its state is told: the thread must have its tracer when it returns to address 0.
    pub fn call(&mut self, name: &str, func: u64, args: &[u64]) -> Result<u64, Failure> {
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
        let mut wait = CALL_TIMEOUT;
        loop {
            match self.tracee.wait(wait).map_err(|e| fail(e.to_string()))? {
                // A fault: the return to address 0, or a crash in the call, which is not
                // delivered (the thread is put back as it was).
                Some(Stop::Signal(sig)) if UNBLOCKED[..5].contains(&sig) => {
                    let now = self.tracee.regs().map_err(|e| fail(e.to_string()))?;
                    if sig == libc::SIGSEGV && now.rip == 0 {
                        return Ok(now.rax);
                    }
                    return Err(fail(format!(
                        "the call to {name} crashed at {:#x} (signal {sig}); the thread was put \
                         back as it was",
                        now.rip
                    )));
                }
                // Every other signal is blocked (see `blocked_during_calls`): a stop.
                Some(Stop::Signal(sig)) => self.tracee.cont(sig),
                Some(Stop::Interrupted | Stop::SyscallEntry) => self.tracee.cont(0),
                Some(Stop::Gone) => return Err(fail("the process ended".into())),
                None => {
                    if wait == CALL_TIMEOUT {
                        eprintln!("fdguard: {}", self.stuck(name));
                    }
                    wait = Duration::from_secs(3600);
                    Ok(())
                }
            }
            .map_err(|e| fail(e.to_string()))?;
        }
    }

    /// What a call that does not return is doing, for the user to act on.
    fn stuck(&self, name: &str) -> String {
        let (pid, tid) = (self.pid, self.tracee.tid);
        let syscall =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).unwrap_or_default();
        let fields: Vec<&str> = syscall.split_whitespace().collect();
        let pc = fields
            .last()
            .and_then(|pc| u64::from_str_radix(pc.trim_start_matches("0x"), 16).ok());
        let place = match (pc, memory(pid)) {
            (Some(pc), Ok(m)) => format!(" at {}", m.describe(pc)),
            _ => String::new(),
        };
        let now = match fields.first().copied() {
            Some("202") => format!("waiting on a futex (a lock or a condition){place}"),
            Some("running") | None => format!("running{place}"),
            Some(nr) => format!("in system call {nr}{place}"),
        };
        format!(
            "thread {tid} of pid {pid} has not returned from {name} in {} s: it is {now}. \
             fdguard waits for it (as its tracer it must be there when the call returns: \
             killing fdguard now would leave the thread to fault then)",
            CALL_TIMEOUT.as_secs()
        )
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
        self.tracee.set_sigmask(self.mask).map_err(fail)?;
        self.tracee.detach(self.pending).map_err(fail)
    }
}

/// The other threads of the process, each stopped where it holds no lock the loading needs
/// (see `stop_one`: in a system call that is not `LOCKED_CALLS`, outside any signal handler
/// and the loader; `futex` is fine: waiting for a lock is not holding it): while an fd is
/// borrowed for loading, none of them can take its number. Retried until `deadline`.
pub fn stop_others(
    pid: i32,
    chosen: i32,
    deadline: Instant,
) -> Result<Vec<(Tracee, i32)>, Failure> {
    loop {
        let memory = memory(pid)?;
        let mut held = Vec::new();
        let mut why = None;
        for tid in threads(pid).into_iter().filter(|t| *t != chosen) {
            match stop_one(pid, tid, &memory, |nr| !LOCKED_CALLS.contains(&nr))? {
                Seen::Safe(t, _, pending) => held.push((t, pending)),
                Seen::Gone => {}
                Seen::Unsafe(w) => {
                    why = Some((tid, w));
                    break;
                }
            }
        }
        let Some(why) = why else {
            return Ok(held);
        };
        release(held);
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "pid {pid} has no fd free, and its threads could not all be stopped outside a \
                 lock for the moment of loading ({}); nothing was changed",
                reasons(std::iter::once(why))
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn release(held: Vec<(Tracee, i32)>) {
    for (t, sig) in held {
        let _ = t.detach(sig);
    }
}
