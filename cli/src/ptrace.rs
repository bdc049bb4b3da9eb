//! ptrace, for `fdguard attach` and `detach`: stop one thread of a process, read and write its
//! registers and memory, run a function call in it, and let it go exactly as it was. The OS
//! layer of the command, with `os`; x86-64 only (the register layout and calling convention
//! are in `call`).
#![allow(unsafe_code)]

use std::io;
use std::time::{Duration, Instant};

/// The registers of a stopped thread.
#[cfg(target_arch = "x86_64")]
pub type Regs = libc::user_regs_struct;

const NT_X86_XSTATE: libc::c_int = 0x202;
const NT_PRFPREG: libc::c_int = 2;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// How a thread stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `PTRACE_INTERRUPT` (or a group stop): nothing to deliver.
    Interrupted,
    /// About to receive this signal.
    Signal(i32),
    /// At the entry of a system call (`run_to_syscall`): it has not started.
    SyscallEntry,
    /// The thread or process is gone.
    Gone,
}

/// A thread seized with `PTRACE_SEIZE` (no signal sent, nothing visible to the process).
/// Dropping it detaches.
pub struct Tracee {
    pub tid: i32,
}

impl Tracee {
    pub fn seize(tid: i32) -> io::Result<Tracee> {
        // TRACESYSGOOD: system call stops tell themselves apart from a SIGTRAP.
        let options = libc::PTRACE_O_TRACESYSGOOD as usize;
        // SAFETY: PTRACE_SEIZE with options as data, no pointer.
        check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, options) })?;
        Ok(Tracee { tid })
    }

    /// Lets the thread, stopped outside a system call, run to the entry of its next one, up to
    /// `timeout`. If it made none meanwhile it is stopped again: `None`, or the signal it was
    /// then about to receive.
    pub fn run_to_syscall(&mut self, timeout: Duration) -> io::Result<Option<Stop>> {
        // SAFETY: PTRACE_SYSCALL with no signal.
        check(unsafe { libc::ptrace(libc::PTRACE_SYSCALL, self.tid, 0usize, 0usize) })?;
        match self.wait(timeout)? {
            None => Ok(match self.interrupt(timeout)? {
                stop @ Some(Stop::Signal(_) | Stop::Gone) => stop,
                _ => None,
            }),
            stop => Ok(stop),
        }
    }

    /// Stops the thread and waits up to `timeout` for it to stop.
    pub fn interrupt(&mut self, timeout: Duration) -> io::Result<Option<Stop>> {
        // SAFETY: PTRACE_INTERRUPT on a seized thread; no pointers.
        check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, self.tid, 0usize, 0usize) })?;
        self.wait(timeout)
    }

    /// Waits for the next stop; `None` if it did not come within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Option<Stop>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into the local `status`.
            let r = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if r == self.tid {
                if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                    return Ok(Some(Stop::Gone));
                }
                let sig = libc::WSTOPSIG(status);
                let event = status >> 16;
                return Ok(Some(if sig == libc::SIGTRAP | 0x80 {
                    Stop::SyscallEntry
                } else if event != 0 || sig == 0 {
                    Stop::Interrupted
                } else {
                    Stop::Signal(sig)
                }));
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ECHILD) {
                    return Ok(Some(Stop::Gone));
                }
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Lets the stopped thread run, delivering `sig` (0: none).
    pub fn cont(&mut self, sig: i32) -> io::Result<()> {
        // SAFETY: PTRACE_CONT with a signal number as data.
        check(unsafe { libc::ptrace(libc::PTRACE_CONT, self.tid, 0usize, sig as usize) })?;
        Ok(())
    }

    pub fn regs(&self) -> io::Result<Regs> {
        // SAFETY: PTRACE_GETREGS fills a user_regs_struct.
        let mut r: Regs = unsafe { std::mem::zeroed() };
        check(unsafe {
            libc::ptrace(libc::PTRACE_GETREGS, self.tid, 0usize, &mut r as *mut Regs)
        })?;
        Ok(r)
    }

    pub fn set_regs(&self, r: &Regs) -> io::Result<()> {
        // SAFETY: PTRACE_SETREGS reads a user_regs_struct.
        check(unsafe { libc::ptrace(libc::PTRACE_SETREGS, self.tid, 0usize, r as *const Regs) })?;
        Ok(())
    }

    /// The floating-point and vector state (XSAVE area, or the FXSAVE one without XSAVE).
    pub fn fp_state(&self) -> io::Result<(libc::c_int, Vec<u8>)> {
        for set in [NT_X86_XSTATE, NT_PRFPREG] {
            let mut buf = vec![0u8; 16 * 1024];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: PTRACE_GETREGSET writes at most iov_len bytes into `buf` and the length
            // it wrote into `iov`.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_GETREGSET,
                    self.tid,
                    set as usize,
                    &mut iov as *mut libc::iovec,
                )
            };
            if r == 0 {
                buf.truncate(iov.iov_len);
                return Ok((set, buf));
            }
        }
        Err(io::Error::last_os_error())
    }

    pub fn set_fp_state(&self, (set, bytes): &(libc::c_int, Vec<u8>)) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        // SAFETY: PTRACE_SETREGSET reads iov_len bytes from `bytes`.
        check(unsafe {
            libc::ptrace(
                libc::PTRACE_SETREGSET,
                self.tid,
                *set as usize,
                &mut iov as *mut libc::iovec,
            )
        })?;
        Ok(())
    }

    /// The thread's blocked signals (the kernel's 64-bit set).
    pub fn sigmask(&self) -> io::Result<u64> {
        let mut set = 0u64;
        // SAFETY: PTRACE_GETSIGMASK writes 8 bytes (the size passed) into `set`.
        check(unsafe {
            libc::ptrace(
                libc::PTRACE_GETSIGMASK,
                self.tid,
                std::mem::size_of::<u64>(),
                &mut set as *mut u64,
            )
        })?;
        Ok(set)
    }

    pub fn set_sigmask(&self, set: u64) -> io::Result<()> {
        // SAFETY: PTRACE_SETSIGMASK reads 8 bytes (the size passed) from `set`.
        check(unsafe {
            libc::ptrace(
                libc::PTRACE_SETSIGMASK,
                self.tid,
                std::mem::size_of::<u64>(),
                &set as *const u64,
            )
        })?;
        Ok(())
    }

    /// Writes `bytes` at `addr` (8-byte aligned) in the thread's memory, a word at a time.
    pub fn poke(&self, addr: u64, bytes: &[u8]) -> io::Result<()> {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let at = addr + 8 * i as u64;
            let mut word = [0u8; 8];
            if chunk.len() < 8 {
                word = self.peek_word(at)?.to_ne_bytes();
            }
            word[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: PTRACE_POKEDATA writes one word into the tracee; no pointer of ours.
            check(unsafe {
                libc::ptrace(
                    libc::PTRACE_POKEDATA,
                    self.tid,
                    at as usize,
                    u64::from_ne_bytes(word) as usize,
                )
            })?;
        }
        Ok(())
    }

    fn peek_word(&self, addr: u64) -> io::Result<u64> {
        // PEEKDATA returns the word itself: -1 is a valid word, so errno tells failure.
        // SAFETY: errno of this thread, set to 0 before the call.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: PTRACE_PEEKDATA reads one word of the tracee.
        let w = unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, self.tid, addr as usize, 0usize) };
        let e = io::Error::last_os_error();
        if w == -1 && e.raw_os_error() != Some(0) {
            return Err(e);
        }
        Ok(w as u64)
    }

    /// Reads `len` bytes at `addr` (8-byte aligned).
    pub fn peek(&self, addr: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len + 8);
        let mut at = addr;
        while out.len() < len {
            out.extend_from_slice(&self.peek_word(at)?.to_ne_bytes());
            at += 8;
        }
        out.truncate(len);
        Ok(out)
    }

    /// Lets the thread go, delivering `sig` (0: none).
    pub fn detach(mut self, sig: i32) -> io::Result<()> {
        let done = self.let_go(sig);
        std::mem::forget(self);
        done
    }

    /// `PTRACE_DETACH`, which only a thread in a ptrace stop accepts. One that did not stop
    /// within a wait's timeout (a busy machine) is stopped first and waited for up to `LET_GO`:
    /// left attached, it would stay this process's tracee, and a later seize would fail.
    fn let_go(&mut self, sig: i32) -> io::Result<()> {
        let tid = self.tid;
        // SAFETY: PTRACE_DETACH with a signal number as data.
        let detach = |sig: i32| {
            check(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, sig as usize) })
        };
        match detach(sig) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            done => return done.map(|_| ()),
        }
        let stop = match self.interrupt(LET_GO) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()), // gone
            stop => stop?,
        };
        match stop {
            Some(Stop::Gone) => Ok(()),
            // A signal that came meanwhile is delivered instead: `sig` was already dropped
            // by the stop the thread left.
            Some(Stop::Signal(s)) => detach(s).map(|_| ()),
            Some(_) => detach(sig).map(|_| ()),
            None => Err(io::Error::other(format!(
                "thread {tid} did not stop within {} s to be let go",
                LET_GO.as_secs()
            ))),
        }
    }
}

/// How long a thread that is to be let go is waited for to stop.
const LET_GO: Duration = Duration::from_secs(5);

impl Drop for Tracee {
    fn drop(&mut self) {
        let _ = self.let_go(0);
    }
}
