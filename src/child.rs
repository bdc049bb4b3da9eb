//! Report children: the processes that finish reports, how they are made from any context, and
//! the little memory they share with the program.
//!
//! # Why children, and no report thread
//! A report needs memory, files and the loader, none of which a hook or a signal handler may
//! touch. fdguard once kept a thread for that, but a second thread is not free: glibc then takes
//! its multi-threaded path on every cancellable system call (`open`, `close`, `read`...), which
//! cost ~40 ns per `open`+`close` here (a third of fdguard's whole cost), and it made every
//! program multi-threaded (`unshare(CLONE_NEWUSER)` refuses those). Instead, whoever asks for
//! a report (a signal handler, a hook, the exit path) copies the process at that instant with
//! raw `clone` calls, which are async-signal-safe and need no fd, and the copy does the work.
//!
//! # Detached children
//! A trigger must not wait for a report, and a child left unreaped would be a zombie in the
//! program's process list (and something for its `waitpid(-1, __WALL)` to find). So the caller
//! makes an intermediate process with `CLONE_VM | CLONE_VFORK` on a stack of fdguard's (no copy
//! of memory; the calling thread is held until it exits), the intermediate copies the process
//! with a raw `clone` and exits at once, and the copy, orphaned, is reaped by init or the
//! nearest subreaper. The caller pays one copy of its address space.
//!
//! A process that would inherit that orphan itself (PID 1 in a container, a subreaper) would
//! get a SIGCHLD for it and, if it never reaps, a zombie per report. There the copy is made
//! directly, with no exit signal (invisible to the program's `waitpid(-1, ...)` unless it asks
//! for `__WALL`, and to SIGCHLD handlers), on fdguard's stack, and reaped by fdguard at the next
//! request and at exit. The same when the user has a process limit: an orphan's zombie counts
//! against it until init reaps it, and not every init does so at once.
//!
//! # In a child
//! The child blocks every signal (the program's handlers must not run in the copy; an
//! interrupt of the terminal's process group must not cut a report in half) except `SIGALRM`,
//! its own time limit: a lock held by a thread that was not copied would block it forever.
//!
//! # Shared memory
//! One `MAP_SHARED` page lets children count themselves in and out (the exit path waits for
//! reports in flight before the program's exit status is known), take turns writing (one
//! report at a time on stderr or in a file), and say a warning once across all of them.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use libc::c_int;

use crate::os::mem::page_size;
use crate::os::{self, errno::errno};

/// How long a child may take before its alarm ends it (the report is then lost, and said so).
const TIME_LIMIT_S: u32 = 30;
/// Detached report children at most at a time: a request made while they work is coalesced
/// into the next report (see `dumper::serve`). A copy of the process each: unbounded, a signal
/// storm made hundreds at once, enough to exhaust the user's process limit (`ulimit -u`) and
/// make the program's own `fork` fail.
pub const MAX_IN_FLIGHT: u32 = 2;
/// The intermediate's stack, which the detached child keeps using for all its work.
const STACK_SIZE: usize = 8 << 20;

/// Exit status of a child that failed (a panic caught, or no memory for its arena).
pub const FAILED: u8 = 64;

/// Warnings said once across the program and all its report children.
#[derive(Clone, Copy)]
pub enum Once {
    /// Where reports go cannot take them as configured (the report file refused, or JSON for a
    /// terminal, pipe or socket on stderr).
    Destination = 1,
    /// A report process cannot be made.
    Spawn = 2,
}

/// Why no detached child was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotMade {
    /// `MAX_IN_FLIGHT` children are already at work.
    Busy,
    /// The copy failed with this errno.
    Failed(c_int),
}

#[repr(C)]
struct Shared {
    /// Report children started and not finished.
    in_flight: AtomicU32,
    /// The pid of the child whose turn it is to write, or 0.
    turn: AtomicU32,
    /// `Once` bits already said.
    said: AtomicU32,
    /// The exit report's verdict, told before it is written: 0 not yet, `NOTHING` or `LISTED`.
    verdict: AtomicU32,
    /// The program's pid, which children wake (`leave`).
    program: AtomicI32,
    /// The signal that wakes the program (its report signal now), or 0.
    wake_signal: AtomicI32,
    /// Requests that found `MAX_IN_FLIGHT` children at work: the next report answers them.
    coalesced: AtomicU64,
    /// The reasons (`trigger`'s bits) of requests waiting for a free child: a child that ends
    /// wakes the program for them.
    pending: AtomicU32,
}

const NOTHING: u32 = 1;
const LISTED: u32 = 2;

static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());
/// Children made directly (see the module comment) and not reaped yet; 0 = free.
static DIRECT: [AtomicI32; 8] = [const { AtomicI32::new(0) }; 8];
/// Top of the intermediate's stack, or 0 if it could not be mapped.
static STACK_TOP: AtomicUsize = AtomicUsize::new(0);

fn map(len: usize, flags: c_int) -> Option<usize> {
    // SAFETY: anonymous mapping with no address hint; checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

fn map_shared() -> *mut Shared {
    map(page_size(), libc::MAP_SHARED).map_or(std::ptr::null_mut(), |p| p as *mut Shared)
}

/// Maps the shared page and the intermediate's stack (at load). Without them, reports are
/// still made, only without the exit path waiting for them, turns or shared warnings (page),
/// or only at exit (stack).
pub fn init() {
    share_page();
    let page = page_size();
    if let Some(base) = map(STACK_SIZE + page, libc::MAP_PRIVATE | libc::MAP_STACK) {
        // SAFETY: the lowest page of the mapping just made becomes the guard page.
        unsafe { libc::mprotect(base as *mut libc::c_void, page, libc::PROT_NONE) };
        STACK_TOP.store(base + page + STACK_SIZE, Ordering::Release);
    }
}

/// Maps this process's shared page, which names it as the program children wake (with the
/// signal of the page it replaces: a fork child keeps its parent's handlers).
fn share_page() {
    let wake_signal = shared().map_or(0, |s| s.wake_signal.load(Ordering::Acquire));
    SHARED.store(map_shared(), Ordering::Release);
    if let Some(s) = shared() {
        s.program
            .store(os::process::getpid() as i32, Ordering::Release);
        s.wake_signal.store(wake_signal, Ordering::Release);
    }
}

/// In a fork child of the program: its own page (its reports are not its parent's).
pub fn after_fork() {
    share_page();
}

fn shared() -> Option<&'static Shared> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: a non-null SHARED is a live, page-aligned, zero-initialized mapping that is
    // never unmapped, accessed only through these atomics.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The program's pid (in a report child: the process it is a copy of), if the shared page
/// exists.
pub fn program_pid() -> Option<u32> {
    shared()
        .map(|s| s.program.load(Ordering::Acquire))
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|pid| *pid > 0)
}

/// True for the first caller (program or any child) to say `what`.
pub fn say_once(what: Once) -> bool {
    let bit = what as u32;
    match shared() {
        Some(s) => s.said.fetch_or(bit, Ordering::AcqRel) & bit == 0,
        None => true,
    }
}

/// Counts a detached child in, unless `MAX_IN_FLIGHT` are at work.
fn reserve_slot(s: &Shared) -> bool {
    s.in_flight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_IN_FLIGHT).then_some(n + 1)
        })
        .is_ok()
}

/// Makes a detached report child that runs `run` (see the module comment): the caller continues
/// once the child exists. Async-signal-safe.
pub fn spawn_detached(run: &dyn Fn()) -> Result<(), NotMade> {
    let top = STACK_TOP.load(Ordering::Acquire);
    if top == 0 {
        return Err(NotMade::Failed(libc::ENOMEM));
    }
    reap_direct();
    if let Some(s) = shared()
        && !reserve_slot(s)
    {
        return Err(NotMade::Busy);
    }
    let mut launch = Launch { run, result: 0 };
    let arg = (&mut launch as *mut Launch).cast();
    let direct_slot = if reaps_its_copies() {
        DIRECT.iter().find(|d| d.load(Ordering::Acquire) == 0)
    } else {
        None
    };
    let result = if let Some(slot) = direct_slot {
        // SAFETY: `direct` starts on fdguard's own stack (16-byte aligned top) in a copy of
        // this process (no CLONE_VM), where `arg` points to its copy of `launch`. No exit
        // signal: the program sees no SIGCHLD, and its `waitpid(-1, ...)` does not see it.
        let pid = unsafe { libc::clone(direct, top as *mut libc::c_void, 0, arg) };
        if pid > 0 {
            slot.store(pid, Ordering::Release);
            pid
        } else {
            -errno()
        }
    } else {
        // SAFETY: `intermediate` runs on fdguard's own stack (16-byte aligned top) in a
        // process sharing this memory and this fd table (so that the copy it makes copies both
        // in one system call, the fds a moment before the memory: see `dumper::gather`);
        // CLONE_VFORK keeps this thread (and `launch`, on its stack) waiting until the
        // intermediate has exited. No exit signal: the program sees no SIGCHLD.
        let pid = unsafe {
            libc::clone(
                intermediate,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_VFORK,
                arg,
            )
        };
        if pid < 0 {
            -errno()
        } else {
            // The intermediate has exited (CLONE_VFORK); only its status is left to collect.
            let _ = wait(pid);
            launch.result
        }
    };
    if result > 0 {
        return Ok(());
    }
    if let Some(s) = shared() {
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
    Err(NotMade::Failed(-result))
}

struct Launch<'a> {
    run: &'a dyn Fn(),
    /// The detached child's pid, or minus the errno of the failed copy.
    result: c_int,
}

extern "C" fn intermediate(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the `Launch` on the stack of the caller of `spawn_detached`, which waits
    // (CLONE_VFORK) until this process exits; the memory is shared (CLONE_VM).
    let launch = unsafe { &mut *arg.cast::<Launch>() };
    match copy_process() {
        Ok(0) => {
            // The detached child: a copy of the program at this instant, on a copy of this
            // stack; `launch` is its copy of the caller's.
            enter();
            (launch.run)();
            leave(0)
        }
        Ok(pid) => launch.result = pid,
        Err(e) => launch.result = -e,
    }
    0
}

/// The detached child, made directly (see the module comment).
extern "C" fn direct(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` points to this process's copy of the caller's `Launch`.
    let launch = unsafe { &*arg.cast::<Launch>() };
    enter();
    (launch.run)();
    leave(0)
}

/// Whether this process makes its copies its own children and reaps them (see the module
/// comment): when an orphan would be given to it anyway (PID 1 of its namespace, a subreaper),
/// and when its user has a process limit (`RLIMIT_NPROC`): an orphaned copy is a zombie until
/// init reaps it, and some inits reap only every few seconds, while every zombie counts against
/// the limit the program's own `fork` needs.
fn reaps_its_copies() -> bool {
    inherits_orphans() || os::process::nproc_limited()
}

/// Whether an orphan of this process would be given to it: PID 1 of its namespace, or a
/// subreaper.
fn inherits_orphans() -> bool {
    let mut subreaper: c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer given.
    let asked = unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut subreaper as *mut c_int as libc::c_ulong,
        )
    };
    os::process::getpid() == 1 || (asked == 0 && subreaper != 0)
}

/// Reaps the children made directly that have finished (or that the program reaped itself).
fn reap_direct() {
    for slot in &DIRECT {
        let pid = slot.load(Ordering::Acquire);
        if pid <= 0 {
            continue;
        }
        let mut status = 0;
        // SAFETY: a non-blocking wait for one of our own clone children.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WCLONE) };
        if r == pid || (r < 0 && errno() == libc::ECHILD) {
            let _ = slot.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// A copy of this process (like `fork`) made with the raw `clone` system call and no exit
/// signal: glibc's and the program's fork handlers do not run, the program gets no SIGCHLD.
/// `Ok(0)` in the copy, `Ok(pid)` here.
fn copy_process() -> Result<c_int, c_int> {
    // SAFETY: clone with no flags and no new stack duplicates the calling thread into a new
    // process, returning twice like fork; neither side's memory is shared afterwards.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            0 as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<c_int>(),
            std::ptr::null_mut::<c_int>(),
            0 as libc::c_ulong,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(r as c_int) }
}

/// The two sides of `spawn_waited`.
pub enum Waited {
    /// In the child (already set up: signals blocked, time limit set).
    Child,
    Parent(libc::pid_t),
    Failed(c_int),
}

/// Makes a report child that the caller waits for with `wait` (the exit path, which needs its
/// outcome).
pub fn spawn_waited() -> Waited {
    if let Some(s) = shared() {
        s.in_flight.fetch_add(1, Ordering::AcqRel);
    }
    match copy_process() {
        Ok(0) => {
            enter();
            Waited::Child
        }
        Ok(pid) => Waited::Parent(pid),
        Err(e) => {
            if let Some(s) = shared() {
                s.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            Waited::Failed(e)
        }
    }
}

/// Waits for a child made here (no exit signal, hence `__WCLONE`); its exit status, or `None`
/// if it did not exit normally.
pub fn wait(pid: libc::pid_t) -> Option<u8> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: waitpid on our own clone child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WCLONE) };
        if r == pid {
            break;
        }
        if r < 0 && errno() != libc::EINTR {
            return None;
        }
    }
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status) as u8)
}

/// In the exit report's child, before it writes: whether the report lists fds (the exit path
/// waits for this, not for the writing).
pub fn tell_verdict(listed: bool) {
    if let Some(s) = shared() {
        s.verdict
            .store(if listed { LISTED } else { NOTHING }, Ordering::Release);
    }
}

/// The verdict of the exit report's child `pid` (made by `spawn_waited`): `Some(listed)` as
/// soon as it is told or the child has ended with it in its status (`listed_bit`); `None` if
/// the child failed, or after `timeout_ns`. The child finishes writing on its own.
pub fn wait_verdict(pid: libc::pid_t, listed_bit: u8, timeout_ns: u64) -> Option<bool> {
    let deadline = os::clock::precise_ns().saturating_add(timeout_ns);
    loop {
        if let Some(s) = shared() {
            match s.verdict.load(Ordering::Acquire) {
                NOTHING => return Some(false),
                LISTED => return Some(true),
                _ => {}
            }
        }
        let mut status: c_int = 0;
        // SAFETY: a non-blocking wait for our own clone child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WCLONE) };
        if r == pid {
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status) as u8);
            return code
                .filter(|c| c & FAILED == 0)
                .map(|c| c & listed_bit != 0);
        }
        if (r < 0 && errno() != libc::EINTR) || os::clock::precise_ns() >= deadline {
            return None;
        }
        os::clock::sleep_until(os::clock::precise_ns() + 2_000_000);
    }
}

/// Waits up to `timeout_ns` for detached children still writing; false if some still are.
pub fn wait_in_flight(timeout_ns: u64) -> bool {
    let Some(s) = shared() else { return true };
    let deadline = os::clock::precise_ns().saturating_add(timeout_ns);
    let done = loop {
        if s.in_flight.load(Ordering::Acquire) == 0 {
            break true;
        }
        if os::clock::precise_ns() >= deadline {
            break false;
        }
        os::clock::sleep_until(os::clock::precise_ns() + 2_000_000);
    };
    reap_direct();
    done
}

/// In a new child: every signal blocked but its own time limit.
fn enter() {
    // SAFETY: sigaction/sigprocmask on locally built sets in this single-threaded copy; the
    // handler only writes a constant message and exits.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_time_limit as *const () as usize;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut mask);
        libc::sigdelset(&mut mask, libc::SIGALRM);
        libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        libc::alarm(TIME_LIMIT_S);
    }
    open_program_pidfd();
}

/// Opens the pidfd `wake_program` signals the program through; in a copy of a full fd table
/// (a program at its limit) that fails with EMFILE, and `after_drop` tries again.
fn open_program_pidfd() -> Option<c_int> {
    let program = shared()?.program.load(Ordering::Acquire);
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, program, 0) };
    let pidfd = c_int::try_from(pidfd).ok().filter(|fd| *fd >= 0)?;
    PROGRAM_PIDFD.store(pidfd, Ordering::Release);
    Some(pidfd)
}

/// In a child, once the copies of the program's fds are dropped: the pidfd `enter` could not
/// open (the table was full), opened now. Without it, requests that wait for a free child
/// would never be answered (`wake_later`). The program may have ended since this copy was
/// made and its pid been taken by a newer process, which must not be sent the program's
/// signal: a process that started after this copy is not the program.
pub fn after_drop() {
    if own_fd().is_some() {
        return;
    }
    let Some(pidfd) = open_program_pidfd() else {
        return;
    };
    let started = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| fdguard_core::procstat::start_ticks(&stat))
    };
    let program = shared().map_or(0, |s| s.program.load(Ordering::Acquire));
    let same = matches!(
        (started(&program.to_string()), started("self")),
        (Some(program), Some(copy)) if program <= copy
    );
    if !same {
        PROGRAM_PIDFD.store(-1, Ordering::Release);
        os::sys::raw_close(pidfd);
    }
}

extern "C" fn on_time_limit(_sig: c_int) {
    let _ = os::fd::write_all(
        2,
        b"fdguard: a report process was stopped after 30 s; report lost\n",
    );
    leave(FAILED);
}

/// Ends a child: counted out of the reports in flight, turn given back, and the program woken
/// if requests wait for a free child.
pub fn leave(code: u8) -> ! {
    if let Some(s) = shared() {
        let me = os::process::getpid();
        let _ = s
            .turn
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        if s.pending.load(Ordering::SeqCst) != 0 {
            wake_program(s);
        }
    }
    os::process::exit_now(code)
}

/// Sends the program its report signal with `fdguard_core::request::WAKE`, through a pidfd taken when this child
/// started (`enter`): the program's pid may belong to another process once it has exited.
fn wake_program(s: &Shared) {
    let sig = s.wake_signal.load(Ordering::Acquire);
    let pidfd = PROGRAM_PIDFD.load(Ordering::Acquire);
    if sig <= 0 || pidfd < 0 {
        return;
    }
    // SAFETY: a zeroed siginfo filled as sigqueue would (SI_QUEUE, this process, the value);
    // pidfd_send_signal only reads it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let raw = (&mut info as *mut libc::siginfo_t).cast::<c_int>();
        // si_signo, si_errno, si_code; then, for SI_QUEUE, si_pid, si_uid and si_value (the
        // kernel's layout on 64-bit Linux: the value at byte 24).
        *raw = sig;
        *raw.add(2) = libc::SI_QUEUE;
        *raw.add(4) = os::process::getpid() as c_int;
        *raw.add(5) = libc::getuid() as c_int;
        *(raw.add(6).cast::<u64>()) = fdguard_core::request::WAKE;
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd, sig, &info, 0);
    }
}

/// In a child: a pidfd of the program (see `wake_program`), or -1.
static PROGRAM_PIDFD: AtomicI32 = AtomicI32::new(-1);

/// In a child: the fd of its own among the copies of the program's (the pidfd), which a report
/// leaves out and the child keeps when it drops the others.
pub fn own_fd() -> Option<i32> {
    let fd = PROGRAM_PIDFD.load(Ordering::Acquire);
    (fd >= 0).then_some(fd)
}

/// The report signal the program answers now (0: none), for children to wake it with.
pub fn set_wake_signal(sig: i32) {
    if let Some(s) = shared() {
        s.wake_signal.store(sig.max(0), Ordering::Release);
    }
}

/// A request found every child at work: counted for the next report, which answers it.
pub fn coalesce() {
    if let Some(s) = shared() {
        s.coalesced.fetch_add(1, Ordering::AcqRel);
    }
}

/// Requests with these reason bits (`trigger`'s) wait for a free child: the next child that
/// ends wakes the program for them (`take_pending`). False if a child ended meanwhile: the
/// caller serves them again itself (one of the two sides sees the other's write).
pub fn wake_later(reason_bits: u32) -> bool {
    let Some(s) = shared() else { return false };
    s.pending.fetch_or(reason_bits, Ordering::SeqCst);
    s.in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT
}

/// The requests coalesced so far, taken: their count (for the report that answers them).
pub fn take_coalesced() -> u64 {
    shared().map_or(0, |s| s.coalesced.swap(0, Ordering::AcqRel))
}

/// Gives back a count taken by `take_coalesced` whose report could not be made.
pub fn give_back_coalesced(n: u64) {
    if let Some(s) = shared() {
        s.coalesced.fetch_add(n, Ordering::AcqRel);
    }
}

/// The reasons of requests waiting for a free child, taken (the program, woken).
pub fn take_pending() -> u32 {
    shared().map_or(0, |s| s.pending.swap(0, Ordering::AcqRel))
}

/// Waits for this child's turn to write (other children may be writing a report); taken over
/// from a child that no longer exists. Given back by `leave`.
pub fn take_turn() {
    let Some(s) = shared() else { return };
    let me = os::process::getpid();
    loop {
        match s
            .turn
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return,
            Err(holder) => {
                // SAFETY: signal 0 only checks whether the process exists.
                let gone =
                    unsafe { libc::kill(holder as libc::pid_t, 0) } != 0 && errno() == libc::ESRCH;
                if gone
                    && s.turn
                        .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    return;
                }
            }
        }
        os::clock::sleep_until(os::clock::precise_ns() + 2_000_000);
    }
}
