//! The tracer's OS layer: starting the program traced under the seccomp filter, the ptrace
//! requests of the wait loop, the signals fdguard passes on to the program, and ending the way
//! the program ended. Every `unsafe` block of the tracer is here (reading the program's memory
//! is `os::read_memory`).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

/// The registers of a stopped thread.
pub type Regs = libc::user_regs_struct;

/// Every option the tracer sets (see `tracer`): seccomp stops, system-call stops told apart
/// from SIGTRAP, every fork, vfork, clone and exec followed, a stop before each thread exits,
/// and the program killed if fdguard dies (else its traced calls would fail with ENOSYS).
const OPTIONS: libc::c_int = libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACEEXIT
    | libc::PTRACE_O_EXITKILL;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The program, started and seized, not yet at its exec.
pub struct Spawned {
    pub pid: i32,
    /// Read end of a close-on-exec pipe: the errno of a failed exec, or nothing once exec
    /// succeeded (`exec_error`).
    errors: OwnedFd,
}

/// Starts `path` with `argv` (and this process's environment) traced: the child stops
/// itself, this process seizes it with the tracer's options and lets it go on with SIGCONT
/// (as strace does), and it installs `filter` (with `no_new_privs`, which seccomp requires of
/// an unprivileged process) just before its exec, so that its first traced call is the
/// program's own.
pub fn spawn(path: &CStr, argv: &[CString], filter: &[libc::sock_filter]) -> io::Result<Spawned> {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: filter.as_ptr().cast_mut(),
    };
    let mut ends = [0; 2];
    // SAFETY: `ends` is writable for two fds.
    check(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: pipe2 succeeded: both fds are new and owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: the command has one thread here; the child calls only async-signal-safe
    // functions on memory prepared before the fork (`prog`, `argv_ptrs`, `path`).
    let pid = check(unsafe { libc::fork() }.into())? as i32;
    if pid == 0 {
        // SAFETY: in the child: prctl, raise, syscall, execv, write and _exit are
        // async-signal-safe; `prog` describes `filter`, `argv_ptrs` ends with a null pointer.
        unsafe {
            let fail = |step: i32| -> ! {
                let errno = *libc::__errno_location();
                let word = [step, errno];
                libc::write(write.as_raw_fd(), word.as_ptr().cast(), 8);
                libc::_exit(127)
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                fail(0);
            }
            libc::raise(libc::SIGSTOP);
            let set_filter = libc::SECCOMP_SET_MODE_FILTER as libc::c_long;
            if libc::syscall(libc::SYS_seccomp, set_filter, 0, &prog) != 0 {
                fail(1);
            }
            libc::execv(path.as_ptr(), argv_ptrs.as_ptr());
            fail(2);
        }
    }
    drop(write);
    let seized = wait_stopped(pid).and_then(|()| {
        // SAFETY: PTRACE_SEIZE with the options as data, no pointer.
        check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, OPTIONS as usize) })
    });
    if let Err(e) = seized {
        // SAFETY: kill and waitpid have no memory preconditions; the child is ours.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    Ok(Spawned { pid, errors: read })
}

/// Waits until the child `pid` has stopped itself (before it is traced).
fn wait_stopped(pid: i32) -> io::Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is writable.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
        if r == pid && libc::WIFSTOPPED(status) {
            return Ok(());
        }
        if r == pid {
            // It ended before it stopped: the prctl failed.
            return Err(io::Error::other(
                "the program ended before it could be traced",
            ));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

impl Spawned {
    /// Why the program never ran, once its process ended before any exec: the failed step
    /// and the error. `None` when nothing was written (the exec succeeded).
    pub fn exec_error(&self) -> Option<(&'static str, io::Error)> {
        let mut word = [0i32; 2];
        // SAFETY: `word` is writable for 8 bytes; the write end is closed in every process
        // (this one dropped it, the child ended), so the read returns at once.
        let n = unsafe { libc::read(self.errors.as_raw_fd(), word.as_mut_ptr().cast(), 8) };
        (n == 8).then(|| {
            let step = match word[0] {
                0 => "prctl(PR_SET_NO_NEW_PRIVS)",
                1 => "seccomp(SECCOMP_SET_MODE_FILTER)",
                _ => "execv",
            };
            (step, io::Error::from_raw_os_error(word[1]))
        })
    }
}

/// The next stop or end of any traced thread: its id and its wait status. EINTR is returned
/// as an error (a report request or the second's tick came: `take_requests_on`).
pub fn wait_any() -> io::Result<(i32, i32)> {
    let mut status = 0;
    let spin_until = std::time::Instant::now() + SPIN;
    loop {
        // SAFETY: `status` is writable.
        let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
        if tid != 0 || std::time::Instant::now() >= spin_until {
            if tid > 0 {
                return Ok((tid, status));
            }
            if tid < 0 {
                return Err(io::Error::last_os_error());
            }
            break;
        }
        std::hint::spin_loop();
    }
    // SAFETY: `status` is writable.
    let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
    if tid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((tid, status))
}

/// How long `wait_any` polls before it sleeps: a traced program that makes fd calls in a row
/// stops again within microseconds, and a tracer woken from an idle CPU took ~40 µs here.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Restarts a stopped thread, delivering `sig` (0: none). A thread killed meanwhile is gone:
/// nothing to restart, and its end comes through `wait_any`.
pub fn cont(tid: i32, sig: i32) {
    // SAFETY: PTRACE_CONT takes the signal as data, no pointer.
    unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0usize, sig as usize) };
}

/// Restarts a thread stopped at a system call's entry, to stop again at its exit.
pub fn to_exit(tid: i32) {
    // SAFETY: PTRACE_SYSCALL with no signal.
    unsafe { libc::ptrace(libc::PTRACE_SYSCALL, tid, 0usize, 0usize) };
}

/// Leaves a thread in its group stop (SIGSTOP, SIGTSTP, ...) until SIGCONT, still traced.
pub fn listen(tid: i32) {
    // SAFETY: PTRACE_LISTEN takes no data.
    unsafe { libc::ptrace(libc::PTRACE_LISTEN, tid, 0usize, 0usize) };
}

pub fn regs(tid: i32) -> Option<Regs> {
    let mut regs = std::mem::MaybeUninit::<Regs>::uninit();
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct; it is read only on success.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, regs.as_mut_ptr()) };
    // SAFETY: the request succeeded and filled `regs`.
    (r != -1).then(|| unsafe { regs.assume_init() })
}

/// The event's message: a new thread's or process's id, the former id of a thread that
/// exec'd, an exit status.
pub fn event_msg(tid: i32) -> Option<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: PTRACE_GETEVENTMSG writes one unsigned long.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0usize, &mut msg) };
    (r != -1).then_some(msg)
}

/// Whether tasks `a` and `b` share one fd table (`kcmp(KCMP_FILES)`); `None` if the kernel
/// cannot say.
pub fn same_files(a: i32, b: i32) -> Option<bool> {
    const KCMP_FILES: libc::c_long = 2;
    // SAFETY: kcmp takes only numbers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_FILES, 0, 0) };
    (r >= 0).then_some(r == 0)
}

/// The program's first process, which the signals `forward` takes are passed on to.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    let to = FORWARD_TO.load(Ordering::Relaxed);
    // Sent by a process (kill, sigqueue, tgkill: codes <= 0), not by the terminal to the
    // whole foreground group (SI_KERNEL), which reached the program already. Passed on here,
    // in the handler (kill is async-signal-safe): noted for the wait loop, a signal coming
    // just before it waits would wait with it until the program's next stop.
    if code <= 0 && to > 0 {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(to, sig) };
    }
}

/// Makes `signals` sent to fdguard (the pid a shell or a supervisor knows) reach the program's
/// first process `to`.
pub fn forward(signals: &[i32], to: i32) {
    FORWARD_TO.store(to, Ordering::Relaxed);
    for &sig in signals {
        handle(sig, pass_on);
    }
}

/// Installs `handler` (SA_SIGINFO, no SA_RESTART: it interrupts `wait_any`) for `sig`.
fn handle(sig: i32, handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)) {
    // SAFETY: a zeroed sigaction is valid; the handlers only touch atomics and call kill.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Report requests received (`fdguard report`: the signal's value), not yet served; 0 = free.
static REQUESTS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

extern "C" fn note_request(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; a value sent with
    // sigqueue is in its si_value (a plain kill leaves it 0, a request for the usual place).
    let value = unsafe { (*info).si_value().sival_ptr as usize as u64 };
    // A kill without a value is a request too: stored as one with no reply file.
    let value = if value == 0 { u64::MAX } else { value };
    // More than the slots at once: the command asks again until its report comes.
    let _ = REQUESTS.iter().find(|slot| {
        slot.compare_exchange(0, value, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
}

extern "C" fn tick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Takes report requests on `sig`. A request noted just before the wait loop waits is seen at
/// the next tick: SIGALRM every second interrupts the wait.
pub fn take_requests_on(sig: i32) {
    handle(sig, note_request);
    handle(libc::SIGALRM, tick);
    wake_within(Duration::from_secs(1));
}

/// Makes the wait loop wake within `d` (at least a microsecond), then every second again.
pub fn wake_within(d: Duration) {
    let d = d.clamp(Duration::from_micros(1), Duration::from_secs(1));
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        },
    };
    // SAFETY: setitimer reads `timer`; no old value is asked for.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
}

/// The report requests received since the last call: each a request's value (`u64::MAX` for
/// one without).
pub fn requests() -> Vec<u64> {
    REQUESTS
        .iter()
        .map(|slot| slot.swap(0, Ordering::AcqRel))
        .filter(|v| *v != 0)
        .collect()
}

/// A signal `end_on` takes came: time to end.
static ENDING: AtomicBool = AtomicBool::new(false);

extern "C" fn note_end(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    ENDING.store(true, Ordering::Relaxed);
}

/// Makes `signals` end the wait loop of a process that serves reports (`ebpf`'s server, which
/// must remove what it left before it ends) rather than kill it.
pub fn end_on(signals: &[i32]) {
    for &sig in signals {
        handle(sig, note_end);
    }
}

/// Whether one of `end_on`'s signals came.
pub fn ending() -> bool {
    ENDING.load(Ordering::Relaxed)
}

/// Sets a variable of fdguard's environment, which the program inherits.
pub fn set_env(name: &str, value: &str) {
    // SAFETY: called before the program starts, while fdguard has one thread: nothing reads
    // the environment concurrently.
    unsafe { std::env::set_var(name, value) };
}

/// Ignores SIGPIPE in fdguard (not in the program, which has its own dispositions since its
/// fork): a report written to a closed stderr pipe must not kill fdguard, which would kill
/// the program with it.
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Ends fdguard the way the program ended, by signal `sig`, so that a shell sees the same
/// status (`128 + sig`) and message. No core file of fdguard's: the program wrote its own.
pub fn die_by(sig: i32) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads `no_core`; signal, sigprocmask and raise have no memory
    // preconditions beyond the set, which is initialized by sigemptyset.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    // A signal whose default is not to end the process (SIGCHLD, ...) cannot kill a process:
    // the status a shell would show for it.
    std::process::exit(128 + sig)
}
