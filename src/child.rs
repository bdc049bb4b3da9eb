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
//! directly, with no exit signal (invisible to the program's `waitpid(-1, ...)` and to SIGCHLD
//! handlers), on fdguard's stack, and reaped by fdguard at the next request and at exit.
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

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use libc::c_int;

use crate::os::mem::page_size;
use crate::os::{self, errno::errno};

/// How long a child may take before its alarm ends it (the report is then lost, and said so).
const TIME_LIMIT_S: u32 = 30;
/// The intermediate's stack, which the detached child keeps using for all its work.
const STACK_SIZE: usize = 8 << 20;

/// Exit status of a child that failed (a panic caught, or no memory for its arena).
pub const FAILED: u8 = 64;

/// Warnings said once across the program and all its report children.
#[derive(Clone, Copy)]
pub enum Once {
    /// The report file cannot be written.
    Destination = 1,
    /// A report process cannot be made.
    Spawn = 2,
}

#[repr(C)]
struct Shared {
    /// Report children started and not finished.
    in_flight: AtomicU32,
    /// The pid of the child whose turn it is to write, or 0.
    turn: AtomicU32,
    /// `Once` bits already said.
    said: AtomicU32,
}

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
    SHARED.store(map_shared(), Ordering::Release);
    let page = page_size();
    if let Some(base) = map(STACK_SIZE + page, libc::MAP_PRIVATE | libc::MAP_STACK) {
        // SAFETY: the lowest page of the mapping just made becomes the guard page.
        unsafe { libc::mprotect(base as *mut libc::c_void, page, libc::PROT_NONE) };
        STACK_TOP.store(base + page + STACK_SIZE, Ordering::Release);
    }
}

/// In a fork child of the program: its own page (its reports are not its parent's).
pub fn after_fork() {
    SHARED.store(map_shared(), Ordering::Release);
}

fn shared() -> Option<&'static Shared> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: a non-null SHARED is a live, page-aligned, zero-initialized mapping that is
    // never unmapped, accessed only through these atomics.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// True for the first caller (program or any child) to say `what`.
pub fn say_once(what: Once) -> bool {
    let bit = what as u32;
    match shared() {
        Some(s) => s.said.fetch_or(bit, Ordering::AcqRel) & bit == 0,
        None => true,
    }
}

/// Makes a detached report child that runs `run` (see the module comment): the caller continues
/// once the child exists. Async-signal-safe. `Err(errno)` if no child could be made.
pub fn spawn_detached(run: &dyn Fn()) -> Result<(), c_int> {
    let top = STACK_TOP.load(Ordering::Acquire);
    if top == 0 {
        return Err(libc::ENOMEM);
    }
    reap_direct();
    if let Some(s) = shared() {
        s.in_flight.fetch_add(1, Ordering::AcqRel);
    }
    let mut launch = Launch { run, result: 0 };
    let arg = (&mut launch as *mut Launch).cast();
    let direct_slot = if inherits_orphans() {
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
        // process sharing this memory; CLONE_VFORK keeps this thread (and `launch`, on its
        // stack) waiting until the intermediate has exited. No exit signal: the program sees
        // no SIGCHLD.
        let pid = unsafe {
            libc::clone(
                intermediate,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK,
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
    Err(-result)
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
}

extern "C" fn on_time_limit(_sig: c_int) {
    let _ = os::fd::write_all(
        2,
        b"fdguard: a report process was stopped after 30 s; report lost\n",
    );
    leave(FAILED);
}

/// Ends a child: counted out of the reports in flight, turn given back.
pub fn leave(code: u8) -> ! {
    if let Some(s) = shared() {
        let me = os::process::getpid();
        let _ = s
            .turn
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
    os::process::exit_now(code)
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
