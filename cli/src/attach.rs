//! `fdguard attach PID` and `fdguard detach PID`: fdguard into a process that is already
//! running, without restarting it, and out again.
//!
//! One thread of the process is stopped with ptrace (`PTRACE_SEIZE` and `PTRACE_INTERRUPT`:
//! no signal is sent), preferably one inside a system call that waits (`epoll_wait`, `accept`,
//! `read`, ...), where it holds none of libc's locks. Its registers and vector state are saved;
//! it is made to call `dlopen(libfdguard.so)` (found in the process's libc) and then the
//! library's `fdguard_attach(options)`, each call returning to address 0, where the fault
//! stops it again; then every register is put back and the thread let go: the system call it
//! was in starts again as after any ptrace stop. What the library does then is in its
//! `src/attach`.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;

use crate::fail::{Failure, Outcome};
use crate::fds::read_fds;
use crate::os::FdDir;
use crate::ptrace::{Regs, Stop, Tracee};
use crate::run::{GuardOptions, library};
use crate::target::{LibState, Mapped, Target};
use fdguard_core::escape::escaped;
use fdguard_core::kind::FdKind;
use fdguard_core::snapshot::FdEntry;

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The process id
    pub pid: i32,
    #[command(flatten)]
    pub options: GuardOptions,
    /// Seconds to wait for a thread of the process to stop in a system call
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// The process id
    pub pid: i32,
    /// Seconds to wait for a thread of the process to stop in a system call
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

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
struct Stopped {
    tracee: Tracee,
    saved: Regs,
    fp: (libc::c_int, Vec<u8>),
    /// Next free byte (downwards) of the scratch space.
    free: u64,
    /// A signal that arrived while the thread was stopped, delivered when it is let go.
    pending: i32,
}

fn ptrace_failure(pid: i32, e: &std::io::Error) -> Failure {
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
    fn begin(pid: i32, deadline: Instant) -> Result<Stopped, Failure> {
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
    fn put(&mut self, bytes: &[u8]) -> Result<u64, Failure> {
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
    fn call(&mut self, func: u64, args: &[u64]) -> Result<u64, Failure> {
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
    fn string_at(&self, addr: u64, max: usize) -> String {
        let b = self.tracee.peek(addr, max).unwrap_or_default();
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    /// Puts every register back and lets the thread go.
    fn end(self) -> Result<(), Failure> {
        let fail = |e: std::io::Error| Failure::failed(format!("restoring the thread: {e}"));
        self.tracee.set_regs(&self.saved).map_err(fail)?;
        self.tracee.set_fp_state(&self.fp).map_err(fail)?;
        self.tracee.detach(self.pending).map_err(fail)
    }
}

/// The other threads of the process, each stopped in a system call that holds no lock (not
/// computing in user space, where it might be inside `malloc`): while the soft limit is raised
/// for loading, none of them can take the room. Retried until `deadline`.
fn stop_others(pid: i32, chosen: i32, deadline: Instant) -> Result<Vec<(Tracee, i32)>, Failure> {
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

fn release(held: Vec<(Tracee, i32)>) {
    for (t, sig) in held {
        let _ = t.detach(sig);
    }
}

/// Refuses what cannot be attached to, saying why.
fn check_target(target: &Target) -> Result<(), Failure> {
    let pid = target.pid;
    if !cfg!(target_arch = "x86_64") {
        return Err(Failure::bad_input("fdguard attach works on x86-64 only"));
    }
    if target.is_zombie() {
        return Err(Failure::bad_input(format!("pid {pid} has exited")));
    }
    if target
        .process
        .stat()
        .is_ok_and(|s| s.state == 'T' || s.state == 't')
    {
        return Err(Failure::bad_input(format!(
            "pid {pid} is stopped (by a signal or a debugger): continue it first (kill -CONT {pid})"
        )));
    }
    if let Some(p) = target.program().filter(|p| p.is_static || p.is_go()) {
        let what = if p.is_go() {
            "a Go program"
        } else {
            "statically linked"
        };
        return Err(Failure::bad_input(format!(
            "pid {pid} is {what}: it makes its system calls without libc, so fdguard's \
             hooks would never be called; `fdguard inspect {pid}` and `fdguard watch {pid}` \
             see its fds from outside"
        )));
    }
    Ok(())
}

/// The libc function `name` in the process (glibc 2.34+ has `dlopen` there; older ones in
/// libdl, if the program loaded it).
fn libc_function(
    target: &Target,
    names: &[&'static str],
) -> Result<Option<(&'static str, u64)>, Failure> {
    let is_libc =
        |n: &str| n.starts_with("libc.so") || n.starts_with("libc-2.") || n.starts_with("ld-musl");
    let is_libdl = |n: &str| n.starts_with("libdl.so") || n.starts_with("libdl-2.");
    for lib in [target.mapped(is_libc)?, target.mapped(is_libdl)?]
        .into_iter()
        .flatten()
    {
        if let Some(found) = names.iter().find_map(|n| Some((*n, lib.symbol(n)?))) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The lines telling the library about epoll sets watching listening sockets (it cannot read
/// `/proc/self/fdinfo` itself without taking an fd, and the process may have none left).
fn epoll_lines(fds: &[FdEntry]) -> Vec<String> {
    let listeners: Vec<i32> = fds
        .iter()
        .filter(|e| e.tcp_state().map(|s| &**s) == Some("LISTEN"))
        .map(|e| e.fd)
        .collect();
    let mut lines = Vec::new();
    for e in fds.iter().filter(|e| e.kind == FdKind::Epoll) {
        for w in e.watches.iter().filter(|w| listeners.contains(&w.fd)) {
            let data = w.data.trim_start_matches("0x");
            lines.push(format!("epoll {} {} {:x} {data}", e.fd, w.fd, w.mask));
        }
    }
    lines.truncate(256);
    lines
}

/// fds loading the library will open one at a time (the library and its dependencies).
const ROOM: u64 = 8;

fn lowest_free(fds: &[FdEntry]) -> u64 {
    let gap = fds.iter().enumerate().find(|(i, e)| e.fd != *i as i32);
    gap.map_or(fds.len(), |(i, _)| i) as u64
}

fn limits(pid: i32) -> Result<(u64, u64), Failure> {
    crate::os::set_soft_nofile(pid, None)
        .map_err(|e| Failure::failed(format!("cannot read pid {pid}'s fd limit: {e}")))
}

/// True if loading would find no fd free below the soft limit.
fn needs_room(pid: i32, fds: &[FdEntry]) -> Result<bool, Failure> {
    Ok(lowest_free(fds) + ROOM > limits(pid)?.0)
}

/// `dlopen` needs an fd, and a process at its limit has none: its soft limit is raised a
/// little for the moment of loading (while every thread of the process is stopped, so that
/// none takes the room), then put back. Returns the soft limit to put back.
fn make_room(pid: i32, fds: &[FdEntry]) -> Result<Option<u64>, Failure> {
    let (soft, hard) = limits(pid)?;
    let lowest_free = lowest_free(fds);
    let room = (lowest_free + ROOM).min(hard);
    if room <= soft {
        return Err(Failure::bad_input(format!(
            "pid {pid} has no fd free to load the library with, and its soft limit ({soft}) \
             is its hard limit: run fdguard as root with CAP_SYS_RESOURCE, or free an fd"
        )));
    }
    crate::os::set_soft_nofile(pid, Some(room)).map_err(|e| {
        Failure::bad_input(format!(
            "pid {pid} has no fd free to load the library with, and its soft limit cannot be \
             raised for that moment: {e}"
        ))
    })?;
    Ok(Some(soft))
}

/// Where fdguard stands in the process, and its mapping when it is loaded.
fn library_in(target: &Target) -> Result<Option<(Mapped, Option<LibState>)>, Failure> {
    Ok(target.fdguard()?.map(|l| (l.mapped, l.state)))
}

fn show_message(lib: &Mapped, pid: i32, code: u64, stopped: &Stopped) -> Outcome {
    let message = lib
        .symbol("fdguard_message")
        .map(|a| stopped.string_at(a, 4096))
        .unwrap_or_default();
    // Read from the target's memory: shown escaped, like any name it chose.
    if code as u32 == 0 {
        for line in message.lines() {
            println!("{}", escaped(line));
        }
        Ok(())
    } else {
        let why = message.trim_start_matches("fdguard: ").replace('\n', "; ");
        Err(Failure::failed(if why.is_empty() {
            format!("fdguard in pid {pid} refused (code {code})")
        } else {
            why
        }))
    }
}

fn deadline(timeout: f64) -> Result<Instant, Failure> {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(Failure::bad_input(
            "--timeout must be a positive number of seconds",
        ));
    }
    Ok(Instant::now() + Duration::from_secs_f64(timeout))
}

/// Reading the process's memory map needs what ptrace needs: say so in ptrace's terms.
fn check_access(pid: i32) -> Result<(), Failure> {
    match std::fs::read(format!("/proc/{pid}/maps")) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(ptrace_failure(
            pid,
            &std::io::Error::from_raw_os_error(libc::EPERM),
        )),
        _ => Ok(()),
    }
}

pub fn attach(args: AttachArgs) -> Outcome {
    let pid = args.pid;
    let until = deadline(args.timeout)?;
    let target = Target::open(pid)?;
    check_access(pid)?;
    check_target(&target)?;
    let loaded = library_in(&target)?;
    match loaded.as_ref().map(|(_, s)| *s) {
        Some(Some(LibState::Preloaded)) => {
            return Err(Failure::bad_input(format!(
                "pid {pid} already runs under fdguard (preloaded): `fdguard report {pid}`"
            )));
        }
        Some(Some(LibState::Attached)) => {
            return Err(Failure::bad_input(format!(
                "fdguard is already attached to pid {pid}: `fdguard report {pid}`, or \
                 `fdguard detach {pid}` first"
            )));
        }
        _ => {}
    }
    let lib = library()?;
    let seen = target.root().join(lib.strip_prefix("/").unwrap_or(&lib));
    if !same_file(&lib, &seen) {
        return Err(Failure::bad_input(format!(
            "{} is not the same file in pid {pid}'s filesystem (another mount namespace?): \
             put libfdguard.so where the process sees it and set FDGUARD_LIB to that path",
            lib.display()
        )));
    }
    let mut options: Vec<String> = args
        .options
        .variables()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let fds = read_fds(&target.process, &FdDir::open(pid)?)?;
    options.extend(epoll_lines(&fds));
    options.push(format!("fds-below {}", fds.last().map_or(0, |e| e.fd + 1)));
    let options = options.join("\n");
    let dlopen = if loaded.is_some() {
        None
    } else {
        Some(
            libc_function(&target, &["dlopen", "__libc_dlopen_mode"])?.ok_or_else(|| {
                Failure::bad_input(format!(
                    "no dlopen in pid {pid}'s libc (glibc before 2.34 without libdl loaded?)"
                ))
            })?,
        )
    };
    let dlerror = libc_function(&target, &["dlerror"])?;

    let mut stopped = Stopped::begin(pid, until)?;
    let mut others = Vec::new();
    let restore_soft = match needs_room(pid, &fds).and_then(|need| {
        if need {
            others = stop_others(pid, stopped.tracee.tid, until)?;
            make_room(pid, &fds)
        } else {
            Ok(None)
        }
    }) {
        Ok(r) => r,
        Err(e) => {
            release(others);
            stopped.end()?;
            return Err(e);
        }
    };
    let result = (|| {
        let lib_at = stopped.put(lib.as_os_str().as_encoded_bytes())?;
        let opts_at = stopped.put(options.as_bytes())?;
        if let Some((name, dlopen)) = dlopen {
            // RTLD_NOW, and for glibc's internal __libc_dlopen_mode the __RTLD_DLOPEN flag.
            let internal = if name == "__libc_dlopen_mode" {
                0x8000_0000
            } else {
                0
            };
            let handle = stopped.call(dlopen, &[lib_at, libc::RTLD_NOW as u64 | internal])?;
            if handle == 0 {
                let why = match dlerror {
                    Some((_, f)) => {
                        let msg = stopped.call(f, &[])?;
                        if msg == 0 {
                            String::new()
                        } else {
                            stopped.string_at(msg, 512)
                        }
                    }
                    None => String::new(),
                };
                return Err(Failure::failed(format!(
                    "dlopen in pid {pid} failed: {why}"
                )));
            }
        }
        let mapped = library_in(&target)?
            .map(|(m, _)| m)
            .ok_or_else(|| Failure::failed("libfdguard.so is not mapped after dlopen"))?;
        let entry = mapped
            .symbol("fdguard_attach")
            .ok_or_else(|| Failure::failed("libfdguard.so has no fdguard_attach: an old build?"))?;
        let code = stopped.call(entry, &[opts_at])?;
        Ok((mapped, code))
    })();
    if let Some(soft) = restore_soft {
        let _ = crate::os::set_soft_nofile(pid, Some(soft));
    }
    release(others);
    let (mapped, code) = match result {
        Ok(r) => r,
        Err(e) => {
            stopped.end()?;
            return Err(e);
        }
    };
    let shown = show_message(&mapped, pid, code, &stopped);
    stopped.end()?;
    shown
}

pub fn detach(args: DetachArgs) -> Outcome {
    let pid = args.pid;
    let until = deadline(args.timeout)?;
    let target = Target::open(pid)?;
    check_access(pid)?;
    let (mapped, state) = library_in(&target)?.ok_or_else(|| {
        Failure::bad_input(format!(
            "fdguard is not loaded in pid {pid}: nothing to detach"
        ))
    })?;
    match state {
        Some(LibState::Attached) => {}
        Some(LibState::Preloaded) => {
            return Err(Failure::bad_input(format!(
                "pid {pid} was started under fdguard (preloaded): it cannot be detached"
            )));
        }
        _ => {
            return Err(Failure::bad_input(format!(
                "fdguard is not attached to pid {pid} (loaded, inert)"
            )));
        }
    }
    let entry = mapped
        .symbol("fdguard_detach")
        .ok_or_else(|| Failure::failed("libfdguard.so has no fdguard_detach"))?;
    let mut stopped = Stopped::begin(pid, until)?;
    let code = match stopped.call(entry, &[]) {
        Ok(c) => c,
        Err(e) => {
            stopped.end()?;
            return Err(e);
        }
    };
    let shown = show_message(&mapped, pid, code, &stopped);
    stopped.end()?;
    shown
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
